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
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, error, info, warn};

use super::plane::ListenerSlot;
use super::pump::{self, End, Flow, Idle};
use super::{canonical_client, now_ms, BackendRt, DataPlane, FrontendRt, ServerRt};
use crate::stick::ServerName;

/// Connection attempts per client connection, each on a different server when one is
/// available.
const MAX_ATTEMPTS: usize = 3;

pub(super) async fn accept_loop(
    plane: Arc<DataPlane>,
    slot: Arc<ListenerSlot>,
    listener: std::net::TcpListener,
) {
    // Registered here, with the runtime of the plane thread this task runs on.
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            error!(frontend = %slot.frontend.load(), error = %e, "cannot watch a listening socket");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                plane.note_accept();
                let frontend = slot.frontend.load_full();
                tokio::spawn(handle(plane.clone(), frontend, stream, peer));
            }
            Err(e) => {
                // Out of file descriptors or memory: back off instead of spinning.
                warn!(frontend = %slot.frontend.load(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(
    plane: Arc<DataPlane>,
    frontend_name: Arc<String>,
    client: TcpStream,
    peer: SocketAddr,
) {
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
    let closed = serve(
        &frontend,
        &backend,
        client,
        canonical_client(peer.ip()),
        vip,
    )
    .await;
    frontend.m_active.dec();
    let duration = started.elapsed();
    frontend.m_duration.observe(duration.as_secs_f64());
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
    client_ip: IpAddr,
    vip: Option<tokio::sync::watch::Receiver<u64>>,
) -> Closed {
    let Some(mut server) = backend.decide(client_ip, now_ms()) else {
        frontend.m_no_server.inc();
        return Closed::early(None, "no_server");
    };
    let mut tried: Vec<ServerName> = Vec::new();
    let (upstream, _permit) = loop {
        let Some(permit) = wait_for_slot(&server, backend.spec.timeout_queue).await else {
            server.m_queue_timeouts.inc();
            backend.release(client_ip, &server, now_ms());
            return Closed::early(Some(&server), "queue_timeout");
        };
        match connect(server.addr, backend.spec.timeout_connect).await {
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
    server.m_total.inc();
    server.m_active.inc();
    debug!(client = %client_ip, frontend = %frontend.spec.name, server = %server.name, "connected");

    let idle = Idle {
        client: frontend.spec.timeout_client,
        server: backend.spec.timeout_server,
    };
    let (up, down) = (Flow::default(), Flow::default());
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

/// A connection to `addr` with TCP_NODELAY, or why not within `timeout`.
///
/// Built by hand rather than with `TcpStream::connect`: that one asks the socket for
/// SO_ERROR once it is writable, a system call per connection that the readiness event
/// makes unnecessary — a connect that failed reports an error or a hang-up with it, so
/// SO_ERROR is read only then.
async fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
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
    let ready = tokio::time::timeout(timeout, stream.ready(Interest::WRITABLE | Interest::ERROR))
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
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_gives_a_nodelay_stream_or_the_reason() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let stream = connect(open, Duration::from_secs(5)).await.unwrap();
        assert!(stream.nodelay().unwrap());
        assert_eq!(stream.peer_addr().unwrap(), open);

        // A port nobody listens on: refused with the kernel's own error, not a timeout.
        drop(listener);
        let error = connect(open, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{error}"
        );
    }
}
