//! One client connection from accept to close:
//!
//! ```text
//! accept → decide server (stick table, balancer) → maxconn slot (FIFO, timeout_queue)
//!        → connect (timeout_connect; on failure re-stick and retry elsewhere, 3 tries)
//!        → relay (half-close, resets, idle timeouts) → release entry, metrics, log
//! ```
//!
//! Everything the connection holds is explicit in [`serve`]'s locals — two sockets, the
//! server it reached and its permit — so it can later be handed to a new process.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tracing::{debug, error, info, warn};

use super::accept::Acceptor;
use super::handover::{ConnMeta, Parked, WaitingMeta};
use super::pump::{self, End, Flow, Idle, InFlight, RelayState};
use super::serving::{frozen, interrupted, Interrupt, ListenerSlot, Live, Serving};
use super::{canonical_client, now_ms, workers, BackendRt, FrontendRt, ServerRt};
use crate::stick::ServerName;

/// Connection attempts per client connection, each on a different server when one is
/// available.
const MAX_ATTEMPTS: usize = 3;

/// Accepts on one socket of a listening port's group, on plane thread `here`, and
/// starts each connection on the thread [`workers::place`] picks.
pub(super) async fn accept_loop(
    plane: Arc<Serving>,
    slot: Arc<ListenerSlot>,
    listener: std::net::TcpListener,
    here: usize,
) {
    let workers = workers::workers();
    // Watched here, with the runtime of the plane thread this task runs on.
    let acceptor = match Acceptor::new(listener) {
        Ok(acceptor) => acceptor,
        Err(e) => {
            error!(frontend = %slot.frontend.load(), error = %e, "cannot watch a listening socket");
            return;
        }
    };
    loop {
        match acceptor.accept().await {
            Ok((stream, peer)) => {
                plane.note_accept();
                let frontend = slot.frontend.load_full();
                let to = least_loaded(workers, here);
                let guards = (workers[to].carry(), plane.track());
                // The connection's task is `handle` itself: a wrapper future stores its
                // captures beside `handle`'s, 0.12 KiB more per idle connection when
                // measured.
                workers[to].handle.spawn(handle(
                    plane.clone(),
                    frontend,
                    stream,
                    peer,
                    Arrival::Accepted,
                    guards,
                ));
            }
            Err(e) => {
                // Out of file descriptors or memory: back off instead of spinning.
                warn!(frontend = %slot.frontend.load(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The plane thread a new connection (or an adopted one) should live on.
pub(super) fn least_loaded(workers: &[workers::Worker], here: usize) -> usize {
    let mut loads = [0; super::MAX_PLANE_THREADS];
    for (load, worker) in loads.iter_mut().zip(workers) {
        *load = worker.connections();
    }
    workers::place(&loads[..workers.len()], here)
}

/// How a client connection came to this process.
pub(super) enum Arrival {
    /// Accepted here: its first bytes are read now.
    Accepted,
    /// Handed over by the previous process before it reached a server; starts when
    /// `go` says so.
    Waiting {
        first: Vec<u8>,
        started_ms: u64,
        go: watch::Receiver<bool>,
    },
}

/// One client connection on the plane thread that serves it, counted there (`_guards`)
/// until it ends or parks for a hand-over.
pub(super) async fn handle(
    plane: Arc<Serving>,
    frontend_name: Arc<String>,
    client: std::net::TcpStream,
    peer: SocketAddr,
    arrival: Arrival,
    _guards: (workers::Carried, Live),
) {
    // Counted in `m_total` by the process that accepted it.
    let counted = matches!(arrival, Arrival::Waiting { .. });
    let (first, started_ms) = match arrival {
        Arrival::Accepted => (pump::read_first(&client), now_ms()),
        Arrival::Waiting {
            first,
            started_ms,
            mut go,
        } => {
            if go.wait_for(|go| *go).await.is_err() {
                return;
            }
            (Ok(first), started_ms)
        }
    };
    // Registered once, with the poller of this thread.
    let client = match TcpStream::from_std(client) {
        Ok(client) => client,
        Err(e) => {
            warn!(client = %peer, error = %e, "cannot watch a connection");
            return;
        }
    };
    let (frontend, backend) = {
        let view = plane.view();
        let Some(frontend) = view.frontends.get(frontend_name.as_str()).cloned() else {
            return;
        };
        let Some(backend) = view.backends.get(&frontend.spec.backend).cloned() else {
            return;
        };
        (frontend, backend)
    };
    if !counted {
        frontend.m_total.inc();
    }
    frontend.m_active.inc();
    if !super::ACCEPTED_HAVE_NODELAY {
        let _ = client.set_nodelay(true);
    }
    let vip = vip_of(&plane, &client);
    // Placing and relaying are two awaits of this task, not one nested in the other:
    // nested, the relay's future sat beside the placing's locals and grew every idle
    // connection's task by a kilobyte.
    let placed = match first {
        Ok(first) => {
            let start = Start {
                peer,
                first,
                started_ms,
                vip,
            };
            serve(&plane, &frontend, &backend, client, start).await
        }
        Err(error) => {
            debug!(client = %peer, error = %error, "client failed before its first read");
            pump::reset(&client);
            Err(Ended::Closed(Closed::early(None, "client_reset")))
        }
    };
    let ended = match placed {
        Ok(placed) => relay(&plane, &frontend, &backend, placed).await,
        Err(ended) => ended,
    };
    frontend.m_active.dec();
    if let Ended::Closed(closed) = ended {
        log_closed(&frontend, &backend, peer, started_ms, &closed);
    }
}

/// Resumes an established connection handed over by the previous process (or parked
/// by this one, `counted`: its accounting here was kept), once `go` says so: the same
/// server, the bytes in flight first, the same half-close state.
pub(super) async fn resume(
    plane: Arc<Serving>,
    meta: ConnMeta,
    client: std::net::TcpStream,
    upstream: std::net::TcpStream,
    resumed: Resumed,
    _guards: (workers::Carried, Live),
) {
    let Resumed { mut go, counted } = resumed;
    let found = {
        let view = plane.view();
        view.frontends.get(&meta.frontend).cloned().and_then(|f| {
            let backend = view.backends.get(&meta.backend)?.clone();
            let server = backend.server(&meta.server)?.clone();
            Some((f, backend, server))
        })
    };
    // Counted as resumed however this ends (a connection that cannot resume does not
    // hold the hand-over's figures back).
    let _resumed = NoteResumed(&plane);
    let Some((frontend, backend, server)) = found else {
        warn!(client = %meta.peer, frontend = %meta.frontend, backend = %meta.backend,
              server = %meta.server, "cannot resume a handed-over connection: its frontend, backend or server is gone; resetting it");
        for socket in [&client, &upstream] {
            let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
        }
        return;
    };
    let client_ip = canonical_client(meta.peer.ip());
    if !counted {
        backend.adopt(client_ip, &server, now_ms());
        server.m_active.inc();
    }
    // The old process held a slot; this one has them all free, so there is one unless
    // maxconn was lowered meanwhile (then the connection goes on past the limit, as an
    // established connection does when maxconn is lowered).
    let permit = server
        .slots
        .as_ref()
        .and_then(|slots| slots.clone().try_acquire_owned().ok());
    frontend.m_active.inc();
    // Registered with this thread's poller before `go`, so that resuming is only
    // waking the task: the relay pause does not grow with two system calls per
    // connection. Readiness that arrives meanwhile is kept for the relay.
    let sockets = (TcpStream::from_std(client), TcpStream::from_std(upstream));
    let paused = go.wait_for(|go| *go).await.is_ok();
    let (client, upstream) = match sockets {
        (Ok(c), Ok(u)) if paused => (c, u),
        (client, upstream) => {
            if paused {
                let e = client.as_ref().err().or(upstream.as_ref().err());
                warn!(client = %meta.peer, error = ?e, "cannot watch a handed-over connection");
            }
            // Not paused: the hand-over was called off and this process is going away.
            frontend.m_active.dec();
            server.m_active.dec();
            backend.release(client_ip, &server, now_ms());
            return;
        }
    };
    let vip = vip_of(&plane, &client);
    let (up, down) = (Flow::default(), Flow::default());
    up.bytes.store(meta.bytes_in, Ordering::Relaxed);
    down.bytes.store(meta.bytes_out, Ordering::Relaxed);
    let state = RelayState {
        up: InFlight::from_bytes(meta.up_in_flight),
        down: InFlight::from_bytes(meta.down_in_flight),
        client_fin: meta.client_fin.into(),
        server_fin: meta.server_fin.into(),
    };
    let connected = Connected {
        server,
        permit,
        client,
        upstream,
        up,
        down,
        state,
    };
    let start = Start {
        peer: meta.peer,
        first: Vec::new(),
        started_ms: meta.started_ms,
        vip,
    };
    drop(_resumed);
    let ended = relay(
        &plane,
        &frontend,
        &backend,
        Box::new(Placed { connected, start }),
    )
    .await;
    frontend.m_active.dec();
    if let Ended::Closed(closed) = ended {
        log_closed(&frontend, &backend, meta.peer, meta.started_ms, &closed);
    }
}

/// Notes one adopted connection as resumed when dropped.
struct NoteResumed<'a>(&'a Serving);

impl Drop for NoteResumed<'_> {
    fn drop(&mut self) {
        self.0.note_resumed();
    }
}

/// How a connection handed to [`resume`] resumes.
pub(super) struct Resumed {
    /// Relays once true.
    pub(super) go: watch::Receiver<bool>,
    /// Parked by this process, whose accounting of it was kept (a thaw).
    pub(super) counted: bool,
}

fn vip_of(plane: &Serving, client: &TcpStream) -> Option<u64> {
    // Only with VIPs configured is it worth a getsockname per connection.
    if !plane.has_vips() {
        return None;
    }
    client
        .local_addr()
        .ok()
        .and_then(|l| plane.vip_mark(canonical_client(l.ip())))
}

fn log_closed(
    frontend: &FrontendRt,
    backend: &BackendRt,
    peer: SocketAddr,
    started_ms: u64,
    closed: &Closed,
) {
    let duration_ms = now_ms().saturating_sub(started_ms);
    frontend
        .m_duration
        .observe(Duration::from_millis(duration_ms));
    info!(
        client = %peer,
        frontend = %frontend.spec.name,
        backend = %backend.spec.name,
        server = closed.server.as_deref().unwrap_or("-"),
        duration_ms,
        bytes_in = closed.bytes_in,
        bytes_out = closed.bytes_out,
        reason = closed.reason,
        "connection closed"
    );
}

/// How a connection's task ended in this process.
enum Ended {
    Closed(Closed),
    /// Parked for a hand-over: its sockets and state wait in [`Serving::park`].
    Parked,
}

struct Closed {
    server: Option<ServerName>,
    reason: &'static str,
    bytes_in: u64,
    bytes_out: u64,
}

impl Closed {
    fn early(server: Option<&ServerRt>, reason: &'static str) -> Self {
        Closed {
            server: server.map(|s| s.name.clone()),
            reason,
            bytes_in: 0,
            bytes_out: 0,
        }
    }
}

/// A connection on its server, ready to relay.
struct Placed {
    connected: Connected,
    start: Start,
}

/// What a connection brings to [`serve`].
struct Start {
    peer: SocketAddr,
    /// Bytes the client sent before any server took it.
    first: Vec<u8>,
    started_ms: u64,
    /// The VIP releases counted when the client came in on a VIP (`None`: not on one).
    vip: Option<u64>,
}

/// A connection on its server: everything it holds while it relays.
struct Connected {
    server: Arc<ServerRt>,
    permit: Option<OwnedSemaphorePermit>,
    client: TcpStream,
    upstream: TcpStream,
    up: Flow,
    down: Flow,
    state: RelayState,
}

async fn serve(
    plane: &Serving,
    frontend: &FrontendRt,
    backend: &BackendRt,
    client: TcpStream,
    start: Start,
) -> Result<Box<Placed>, Ended> {
    let mut freeze = plane.control();
    if freeze.borrow().frozen {
        return Err(park_waiting(plane, frontend, client, start));
    }
    let client_ip = canonical_client(start.peer.ip());
    let Some(mut server) = backend.decide(client_ip, now_ms()) else {
        frontend.m_no_server.inc();
        return Err(Ended::Closed(Closed::early(None, "no_server")));
    };
    let mut tried: Vec<ServerName> = Vec::new();
    frontend.m_bytes_in.inc_by(start.first.len() as u64);
    let (upstream, permit) = loop {
        let permit = match wait_for_slot(&server, backend.spec.timeout_queue, &mut freeze).await {
            Slot::Got(permit) => permit,
            Slot::TimedOut => {
                server.m_queue_timeouts.inc();
                backend.release(client_ip, &server, now_ms());
                return Err(Ended::Closed(Closed::early(Some(&server), "queue_timeout")));
            }
            Slot::Frozen => {
                backend.release(client_ip, &server, now_ms());
                return Err(park_waiting(plane, frontend, client, start));
            }
        };
        match connect(
            server.addr,
            backend.spec.timeout_connect,
            &start.first,
            frozen(&mut freeze),
        )
        .await
        {
            Ok(stream) => break (stream, permit),
            Err(ConnectFailed::Frozen) => {
                drop(permit);
                backend.release(client_ip, &server, now_ms());
                return Err(park_waiting(plane, frontend, client, start));
            }
            Err(ConnectFailed::Io(error)) => {
                server.m_connect_failures.inc();
                warn!(client = %client_ip, backend = %backend.spec.name, server = %server.name,
                      addr = %server.addr, error = %error, "connect failed");
                drop(permit);
                tried.push(server.name.clone());
                if tried.len() < MAX_ATTEMPTS
                    && backend.retry_same_server(client_ip, &server, &tried)
                {
                    info!(client = %client_ip, server = %server.name,
                          "retrying the same server: the client's other connections are there");
                    continue;
                }
                let next = (tried.len() < MAX_ATTEMPTS)
                    .then(|| backend.redispatch(client_ip, &server, &tried))
                    .flatten();
                match next {
                    Some(next) => server = next,
                    None => {
                        backend.release(client_ip, &server, now_ms());
                        return Err(Ended::Closed(Closed::early(
                            Some(&server),
                            "connect_failed",
                        )));
                    }
                }
            }
        }
    };
    let (up, down) = (Flow::default(), Flow::default());
    // Read before any server was chosen, so every attempt sent them.
    up.bytes.store(start.first.len() as u64, Ordering::Relaxed);
    // Freed before the relay: the connection may now idle for hours.
    let start = Start {
        first: Vec::new(),
        ..start
    };
    drop(tried);
    server.m_total.inc();
    server.m_active.inc();
    debug!(client = %client_ip, frontend = %frontend.spec.name, server = %server.name, "connected");
    let connected = Connected {
        server,
        permit,
        client,
        upstream,
        up,
        down,
        state: RelayState::default(),
    };
    // Boxed: it moves through two futures (placing, relaying), and inline each would
    // keep a slot for it for as long as the connection lasts.
    Ok(Box::new(Placed { connected, start }))
}

/// Relays until the connection ends, or parks it when the plane freezes.
async fn relay(
    plane: &Serving,
    frontend: &FrontendRt,
    backend: &BackendRt,
    mut placed: Box<Placed>,
) -> Ended {
    // Used where it is, not moved into locals: a parameter's storage lasts as long as
    // the future, and a copy beside it would cost every idle connection its size.
    let conn = &mut placed.connected;
    let start = &mut placed.start;
    let mut freeze = plane.control();
    let idle = Idle {
        client: frontend.spec.timeout_client,
        server: backend.spec.timeout_server,
    };
    let outcome = {
        let relay = pump::relay(
            &conn.client,
            &conn.upstream,
            &idle,
            (&conn.up, &frontend.m_bytes_in),
            (&conn.down, &frontend.m_bytes_out),
            &mut conn.state,
        );
        tokio::select! {
            end = relay => Outcome::Ended(end),
            why = interrupted(&mut freeze, start.vip, || conn.server.is_removed()) => match why {
                Interrupt::Frozen => Outcome::Frozen,
                Interrupt::VipReleased => Outcome::VipReleased,
                Interrupt::ServerRemoved => Outcome::ServerRemoved,
            },
        }
    };
    let reason = match outcome {
        Outcome::Ended(end) => {
            if let End::Reset { .. } = end {
                pump::reset(&conn.client);
                pump::reset(&conn.upstream);
            }
            end.as_str()
        }
        Outcome::ServerRemoved => "server_removed",
        Outcome::VipReleased => {
            pump::reset(&conn.client);
            "vip_released"
        }
        Outcome::Frozen => match take_in_flight(conn) {
            Ok(in_flight) => {
                let at = (start.peer, start.started_ms);
                return park_established(plane, frontend, backend, placed.connected, at, in_flight);
            }
            Err(error) => {
                // Never continue a stream with a hole: reset instead.
                error!(client = %start.peer, server = %conn.server.name, error = %error,
                       "cannot read back a connection's bytes in flight for the hand-over; resetting it");
                pump::reset(&conn.client);
                pump::reset(&conn.upstream);
                "handover_lost"
            }
        },
    };
    let Connected {
        server,
        permit,
        client,
        upstream,
        up,
        down,
        ..
    } = placed.connected;
    drop(upstream);
    drop(client);
    drop(permit);
    release(backend, &server, placed.start.peer);
    Ended::Closed(Closed {
        server: Some(server.name.clone()),
        reason,
        bytes_in: up.bytes.load(Ordering::Relaxed),
        bytes_out: down.bytes.load(Ordering::Relaxed),
    })
}

enum Outcome {
    Ended(End),
    ServerRemoved,
    VipReleased,
    Frozen,
}

fn release(backend: &BackendRt, server: &ServerRt, peer: SocketAddr) {
    server.m_active.dec();
    backend.release(canonical_client(peer.ip()), server, now_ms());
}

/// Each direction's bytes read and not yet written.
fn take_in_flight(conn: &mut Connected) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    Ok((conn.state.up.take_bytes()?, conn.state.down.take_bytes()?))
}

/// Leaves the connection's state and sockets for the hand-over. Its accounting here
/// (the server's count, the client's stick entry) stays as it is: if the hand-over is
/// called off, the connection resumes in this process as it was ([`resume`] with
/// `counted`); if not, this process exits. Nothing is released or replicated, which
/// keeps the freeze short.
fn park_established(
    plane: &Serving,
    frontend: &FrontendRt,
    backend: &BackendRt,
    conn: Connected,
    (peer, started_ms): (SocketAddr, u64),
    (up_in_flight, down_in_flight): (Vec<u8>, Vec<u8>),
) -> Ended {
    let meta = ConnMeta {
        frontend: frontend.spec.name.clone(),
        backend: backend.spec.name.clone(),
        server: conn.server.name.to_string(),
        peer,
        started_ms,
        bytes_in: conn.up.bytes.load(Ordering::Relaxed),
        bytes_out: conn.down.bytes.load(Ordering::Relaxed),
        up_in_flight,
        down_in_flight,
        client_fin: conn.state.client_fin.load(Ordering::Relaxed),
        server_fin: conn.state.server_fin.load(Ordering::Relaxed),
    };
    let Connected {
        server,
        client,
        upstream,
        up,
        down,
        ..
    } = conn;
    // Out of this thread's poller, without a duplicate: no descriptor is opened or
    // closed. Taking a socket out only fails if the poller refuses to forget it, and
    // then the socket is closed: reset the other side rather than leave it hanging.
    match (client.into_std(), upstream.into_std()) {
        (Ok(client), Ok(upstream)) => {
            plane.park(Parked::Established(meta, client, upstream));
            Ended::Parked
        }
        (client, upstream) => {
            error!(client = %peer, server = %server.name,
                   "cannot take a connection's sockets out of the poller for the hand-over; resetting it");
            for socket in [client, upstream].into_iter().flatten() {
                let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
            }
            release(backend, &server, peer);
            Ended::Closed(Closed {
                server: Some(server.name.clone()),
                reason: "handover_lost",
                bytes_in: up.bytes.load(Ordering::Relaxed),
                bytes_out: down.bytes.load(Ordering::Relaxed),
            })
        }
    }
}

/// A std socket sharing `stream`'s connection, registered with no poller. The
/// original is closed by its owner afterwards (dropping it deregisters it here).
fn duplicate(stream: &TcpStream) -> std::io::Result<std::net::TcpStream> {
    socket2::SockRef::from(stream)
        .try_clone()
        .map(std::net::TcpStream::from)
}

fn park_waiting(plane: &Serving, frontend: &FrontendRt, client: TcpStream, start: Start) -> Ended {
    match duplicate(&client) {
        Ok(socket) => {
            plane.park(Parked::Waiting(
                WaitingMeta {
                    frontend: frontend.spec.name.clone(),
                    peer: start.peer,
                    first: start.first,
                    started_ms: start.started_ms,
                },
                socket,
            ));
            Ended::Parked
        }
        Err(error) => {
            error!(client = %start.peer, error = %error, "cannot park a waiting connection for the hand-over; resetting it");
            pump::reset(&client);
            Ended::Closed(Closed::early(None, "handover_lost"))
        }
    }
}

enum Slot {
    /// `None` when the server has no limit.
    Got(Option<OwnedSemaphorePermit>),
    TimedOut,
    Frozen,
}

/// A maxconn slot, waiting in FIFO order for at most `wait`, or until the plane
/// freezes (the place in the queue is then carried by the connection's start time).
async fn wait_for_slot(
    server: &ServerRt,
    wait: Duration,
    freeze: &mut watch::Receiver<super::serving::Control>,
) -> Slot {
    let Some(slots) = &server.slots else {
        return Slot::Got(None);
    };
    if let Ok(permit) = slots.clone().try_acquire_owned() {
        return Slot::Got(Some(permit));
    }
    server.m_queue.inc();
    // Frozen first: a connection that parks frees its slot, and a queued client that
    // got it then must park too rather than connect while its plane is frozen.
    let result = tokio::select! {
        biased;
        () = frozen(freeze) => Slot::Frozen,
        result = tokio::time::timeout(wait, slots.clone().acquire_owned()) => match result {
            Ok(Ok(permit)) => Slot::Got(Some(permit)),
            _ => Slot::TimedOut,
        },
    };
    server.m_queue.dec();
    result
}

#[derive(Debug)]
enum ConnectFailed {
    Io(std::io::Error),
    /// The plane froze before any byte reached the server: the client can be placed
    /// again by the next process with nothing sent twice.
    Frozen,
}

impl From<std::io::Error> for ConnectFailed {
    fn from(error: std::io::Error) -> Self {
        ConnectFailed::Io(error)
    }
}

/// A connection to `addr` with TCP_NODELAY that has taken `first` (the client's bytes
/// so far), or why not within `timeout`. A server that fails will never answer the
/// bytes it took, so the caller sends all of them to the next one.
///
/// Built by hand rather than with `TcpStream::connect`: that one waits until the
/// socket is reported writable and then asks it for SO_ERROR. Here the client's first
/// bytes are sent at once ([`pump::send_early`]), and a send that succeeds proves the
/// connect did, so the usual case costs neither the wait nor the system call. Otherwise
/// the readiness event says whether the connect failed (error or hang-up), so SO_ERROR
/// is read only then.
async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    first: &[u8],
    freeze: impl std::future::Future<Output = ()>,
) -> Result<TcpStream, ConnectFailed> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    let sent = pump::send_early(&stream, first)?;
    if sent.is_none() {
        // Nothing has reached the server yet: a freeze may call the attempt off.
        let ready = tokio::select! {
            ready = tokio::time::timeout(timeout, stream.ready(Interest::WRITABLE | Interest::ERROR)) => ready,
            () = freeze => return Err(ConnectFailed::Frozen),
        };
        let ready = ready.map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            )
        })??;
        if ready.is_error() || ready.is_write_closed() {
            return Err(ConnectFailed::Io(
                stream
                    .take_error()?
                    .unwrap_or_else(|| std::io::ErrorKind::ConnectionRefused.into()),
            ));
        }
    }
    let rest = &first[sent.unwrap_or(0)..];
    if !rest.is_empty() {
        pump::write_all(&stream, rest).await?;
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_exactly(server: &std::net::TcpListener, len: usize) -> Vec<u8> {
        use std::io::Read;
        let (mut conn, _) = server.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = vec![0; len];
        conn.read_exact(&mut got).unwrap();
        got
    }

    #[tokio::test]
    async fn the_clients_first_bytes_go_out_with_the_connect() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(connect_and_receive(&server, b"hello").await, b"hello");
    }

    /// Connects to `server` with `first` as the client's first bytes; what `server` got.
    async fn connect_and_receive(server: &std::net::TcpListener, first: &[u8]) -> Vec<u8> {
        connect(
            server.local_addr().unwrap(),
            Duration::from_secs(5),
            first,
            std::future::pending(),
        )
        .await
        .unwrap();
        read_exactly(server, first.len())
    }

    #[tokio::test]
    async fn bytes_sent_during_a_failed_connect_go_to_the_next_server() {
        // A listener whose accept queue is full drops further SYNs: the connect stays
        // in progress, so the client's bytes cannot leave yet.
        let full =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        full.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        full.listen(0).unwrap();
        let full_addr = full.local_addr().unwrap().as_socket().unwrap();
        let _filler = std::net::TcpStream::connect(full_addr).unwrap();

        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let failed = connect(
            full_addr,
            Duration::from_millis(300),
            b"first request",
            std::future::pending(),
        )
        .await;
        assert!(
            matches!(&failed, Err(ConnectFailed::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut),
            "{failed:?}"
        );
        assert_eq!(
            connect_and_receive(&server, b"first request").await,
            b"first request"
        );
    }

    #[tokio::test]
    async fn connect_gives_a_nodelay_stream_or_the_reason() {
        // Nothing to send yet: the connect is confirmed by readiness.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let stream = connect(open, Duration::from_secs(5), b"", std::future::pending())
            .await
            .unwrap();
        assert!(stream.nodelay().unwrap());
        assert_eq!(stream.peer_addr().unwrap(), open);

        // A port nobody listens on: refused with the kernel's own error, not a timeout,
        // whether or not there are bytes to send.
        drop(listener);
        for bytes in [&b""[..], b"hello"] {
            match connect(open, Duration::from_secs(5), bytes, std::future::pending()).await {
                Err(ConnectFailed::Io(error)) => assert_eq!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionRefused,
                    "{error}"
                ),
                other => panic!("{other:?}"),
            }
        }
    }
}
