//! The API's transport: the accept loop on `api_listen`, one hyper HTTP/1 connection
//! per task, and the bounds that keep the API from taking what the data plane needs
//! (issue 24). Routing, the token and bodies are lib.rs's and guard.rs's.
//!
//! ```text
//!   listen backlog ──▶ permit (max_connections) ──▶ accept ──▶ task: hyper http1
//!                      none free: wait, the               header_read_timeout
//!                      connection stays in the            ConnectInfo(peer) ──▶ router
//!                      kernel's backlog                   permit returned at the end
//! ```
//!
//! axum::serve accepts without bound and gives hyper no timer, so a half-sent head kept
//! its connection (and a descriptor) for ever; hence our own loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::NodeHandle;

/// How much the API lets one client hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From a connection's start, or the end of its previous answer, to the end of a
    /// request's head. An idle keep-alive connection is closed after it too.
    pub header_timeout: Duration,
    /// From the end of a head to the end of its body (a deadline, not an idle timer);
    /// past it the answer is 408 and the connection is closed.
    pub body_timeout: Duration,
    /// Connections served at once. Beyond it new connections wait in the listen backlog
    /// until one ends (the header timeout bounds how long that takes) rather than being
    /// accepted and closed: waiting costs this process no descriptor, and a client
    /// retrying in a loop would turn accept-and-close into a busy loop of its own.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 512,
        }
    }
}

/// Serves with the default [`Limits`] until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    node: Arc<dyn NodeHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, node, Limits::default(), shutdown).await
}

/// Serves until `shutdown` resolves, then lets each open connection finish its request
/// and returns once they all have.
pub async fn serve_with(
    listener: TcpListener,
    node: Arc<dyn NodeHandle>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = crate::router(node, limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    tokio::pin!(shutdown);
    let mut saturated = false;
    loop {
        if permits.available_permits() == 0 {
            if !saturated {
                tracing::warn!(
                    limit = limits.max_connections,
                    "API connection limit reached: new connections wait in the listen backlog"
                );
            }
            saturated = true;
        } else {
            saturated = false;
        }
        // The permit comes before accept, so a connection over the limit is never
        // accepted and takes no descriptor of ours.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit,
            () = &mut shutdown => break,
        };
        let Ok(permit) = permit else { break };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            // Handlers and the guard log who asked.
            request.extensions_mut().insert(ConnectInfo(peer));
            // A Router is always ready (its poll_ready answers Ready at once), so it is
            // called without asking first.
            tower_service::Service::call(&mut router.clone(), request)
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let mut stop = stop_rx.clone();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                // Also when serve_with itself is dropped (the sender with it).
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            match result {
                Ok(()) => {}
                Err(e) if e.is_timeout() => tracing::info!(
                    %peer,
                    timeout = ?header_timeout,
                    "API connection closed: request head incomplete"
                ),
                Err(e) => tracing::debug!(%peer, error = %e, "API connection ended"),
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it ends: having them all back means none is
    // left.
    let _ = permits
        .acquire_many_owned(limits.max_connections as u32)
        .await;
    Ok(())
}

/// Logs a failed accept and, when the cause lasts (no descriptor left: EMFILE, ENFILE),
/// waits a little so that the loop does not spin while the process is out of them.
async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionAborted
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionRefused => {
            tracing::debug!(error = %error, "API accept: the client left first");
        }
        _ => {
            tracing::warn!(error = %error, "API accept failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{exchange, start_with};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Slow-loris: half a head, then nothing. The connection is closed once the header
    /// timeout has passed (bounded generously here; the timeout is 200 ms).
    #[tokio::test]
    async fn a_half_sent_head_is_closed_after_the_header_timeout() {
        let limits = Limits {
            header_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let (addr, _) = start_with(limits).await;
        let answer = exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow",
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(answer, "", "closed without an answer");
        // A connection that sends nothing at all is closed too.
        let answer = exchange(addr, b"", Duration::from_secs(10)).await;
        assert_eq!(answer, "");
    }

    /// Beyond `max_connections`, a connection waits until another one ends.
    #[tokio::test]
    async fn connections_beyond_the_limit_wait_for_a_free_slot() {
        let limits = Limits {
            max_connections: 2,
            ..Limits::default()
        };
        let (addr, _) = start_with(limits).await;
        let first = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _second = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        third
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        let waited = tokio::time::timeout(
            Duration::from_millis(300),
            third.read_to_string(&mut answer),
        )
        .await;
        assert!(waited.is_err(), "answered over the limit: {answer}");
        drop(first);
        tokio::time::timeout(Duration::from_secs(10), third.read_to_string(&mut answer))
            .await
            .expect("answered once a slot was free")
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_waits_for_open_requests() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let node = crate::tests::fake();
        let server = tokio::spawn(serve_with(listener, node, Limits::default(), async {
            let _ = rx.await;
        }));
        let answer = exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("serve returned")
            .unwrap()
            .unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
