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

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, error, info, warn};

use super::accept::Acceptor;
use super::pump::{self, End, Flow, Idle};
use super::serving::{ListenerSlot, Serving};
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
                let mut loads = [0; super::MAX_PLANE_THREADS];
                for (load, worker) in loads.iter_mut().zip(workers) {
                    *load = worker.connections();
                }
                let to = workers::place(&loads[..workers.len()], here);
                let carried = workers[to].carry();
                // The connection's task is `handle` itself: a wrapper future stores its
                // captures beside `handle`'s, 0.12 KiB more per idle connection when
                // measured.
                workers[to]
                    .handle
                    .spawn(handle(plane.clone(), frontend, stream, peer, carried));
            }
            Err(e) => {
                // Out of file descriptors or memory: back off instead of spinning.
                warn!(frontend = %slot.frontend.load(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One client connection on the plane thread that serves it, counted there (`_carried`)
/// until it ends.
async fn handle(
    plane: Arc<Serving>,
    frontend_name: Arc<String>,
    client: std::net::TcpStream,
    peer: SocketAddr,
    _carried: workers::Carried,
) {
    let first = pump::read_first(&client);
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
    frontend.m_total.inc();
    frontend.m_active.inc();
    let started = std::time::Instant::now();
    if !super::ACCEPTED_HAVE_NODELAY {
        let _ = client.set_nodelay(true);
    }
    // Only with VIPs configured is it worth a getsockname per connection.
    let vip = if plane.has_vips() {
        client
            .local_addr()
            .ok()
            .and_then(|l| plane.vip_watch(canonical_client(l.ip())))
    } else {
        None
    };
    let closed = match first {
        Ok(first) => {
            serve(
                &frontend,
                &backend,
                client,
                first,
                canonical_client(peer.ip()),
                vip,
            )
            .await
        }
        Err(error) => {
            debug!(client = %peer, error = %error, "client failed before its first read");
            pump::reset(&client);
            Closed::early(None, "client_reset")
        }
    };
    frontend.m_active.dec();
    let duration = started.elapsed();
    frontend.m_duration.observe(duration);
    info!(
        client = %peer,
        frontend = %frontend.spec.name,
        backend = %backend.spec.name,
        server = closed.server.as_deref().unwrap_or("-"),
        duration_ms = duration.as_millis() as u64,
        bytes_in = closed.bytes_in,
        bytes_out = closed.bytes_out,
        reason = closed.reason,
        "connection closed"
    );
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

async fn serve(
    frontend: &FrontendRt,
    backend: &BackendRt,
    client: TcpStream,
    first: Vec<u8>,
    client_ip: IpAddr,
    vip: Option<tokio::sync::watch::Receiver<u64>>,
) -> Closed {
    let Some(mut server) = backend.decide(client_ip, now_ms()) else {
        frontend.m_no_server.inc();
        return Closed::early(None, "no_server");
    };
    let mut tried: Vec<ServerName> = Vec::new();
    let (up, down) = (Flow::default(), Flow::default());
    // Read before any server was chosen, so every attempt sends them.
    up.bytes.store(first.len() as u64, Ordering::Relaxed);
    frontend.m_bytes_in.inc_by(first.len() as u64);
    let (upstream, _permit) = loop {
        let Some(permit) = wait_for_slot(&server, backend.spec.timeout_queue).await else {
            server.m_queue_timeouts.inc();
            backend.release(client_ip, &server, now_ms());
            return Closed::early(Some(&server), "queue_timeout");
        };
        match connect(server.addr, backend.spec.timeout_connect, &first).await {
            Ok(stream) => break (stream, permit),
            Err(error) => {
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
                        return Closed::early(Some(&server), "connect_failed");
                    }
                }
            }
        }
    };
    // Freed before the relay: the connection may now idle for hours.
    drop(first);
    drop(tried);
    server.m_total.inc();
    server.m_active.inc();
    debug!(client = %client_ip, frontend = %frontend.spec.name, server = %server.name, "connected");

    let idle = Idle {
        client: frontend.spec.timeout_client,
        server: backend.spec.timeout_server,
    };
    let relay = pump::relay(
        &client,
        &upstream,
        &idle,
        (&up, &frontend.m_bytes_in),
        (&down, &frontend.m_bytes_out),
    );
    let reason = tokio::select! {
        end = relay => {
            if let End::Reset { .. } = end {
                pump::reset(&client);
                pump::reset(&upstream);
            }
            end.as_str()
        }
        () = server.removed() => "server_removed",
        () = vip_released(vip) => {
            pump::reset(&client);
            "vip_released"
        }
    };
    drop(upstream);
    drop(client);
    server.m_active.dec();
    backend.release(client_ip, &server, now_ms());
    Closed {
        server: Some(server.name.clone()),
        reason,
        bytes_in: up.bytes.load(Ordering::Relaxed),
        bytes_out: down.bytes.load(Ordering::Relaxed),
    }
}

/// Resolves when the node lets the VIP this connection came in on go; never for a
/// connection on another address.
async fn vip_released(watch: Option<tokio::sync::watch::Receiver<u64>>) {
    match watch {
        Some(mut rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// A maxconn slot, waiting in FIFO order for at most `wait`. `Some(None)` when the
/// server has no limit; `None` when the wait timed out.
async fn wait_for_slot(server: &ServerRt, wait: Duration) -> Option<Option<OwnedSemaphorePermit>> {
    let Some(slots) = &server.slots else {
        return Some(None);
    };
    if let Ok(permit) = slots.clone().try_acquire_owned() {
        return Some(Some(permit));
    }
    server.m_queue.inc();
    let result = tokio::time::timeout(wait, slots.clone().acquire_owned()).await;
    server.m_queue.dec();
    match result {
        Ok(Ok(permit)) => Some(Some(permit)),
        _ => None,
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
async fn connect(addr: SocketAddr, timeout: Duration, first: &[u8]) -> std::io::Result<TcpStream> {
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
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    let sent = pump::send_early(&stream, first)?;
    if sent.is_none() {
        let ready =
            tokio::time::timeout(timeout, stream.ready(Interest::WRITABLE | Interest::ERROR))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {timeout:?}"),
                    )
                })??;
        if ready.is_error() || ready.is_write_closed() {
            return Err(stream
                .take_error()?
                .unwrap_or_else(|| std::io::ErrorKind::ConnectionRefused.into()));
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
        connect(server.local_addr().unwrap(), Duration::from_secs(5), first)
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
        let failed = connect(full_addr, Duration::from_millis(300), b"first request").await;
        assert!(
            matches!(&failed, Err(e) if e.kind() == std::io::ErrorKind::TimedOut),
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
        let stream = connect(open, Duration::from_secs(5), b"").await.unwrap();
        assert!(stream.nodelay().unwrap());
        assert_eq!(stream.peer_addr().unwrap(), open);

        // A port nobody listens on: refused with the kernel's own error, not a timeout,
        // whether or not there are bytes to send.
        drop(listener);
        for bytes in [&b""[..], b"hello"] {
            match connect(open, Duration::from_secs(5), bytes).await {
                Err(error) => assert_eq!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionRefused,
                    "{error}"
                ),
                other => panic!("{other:?}"),
            }
        }
    }
}
