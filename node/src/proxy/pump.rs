//! Moving bytes between the client and the server socket of one connection.
//!
//! Both directions run in the connection's own task over shared `&TcpStream`s
//! (readiness + `try_read`/`try_write`), which lets one loop watch both directions and
//! the idle deadline, and keeps each socket owned by the connection so that closing
//! decisions (FIN or RST) are made in one place.
//!
//! - EOF from one side is passed on as a FIN (`shutdown(Write)`) to the other, and the
//!   other direction keeps flowing: half-close works both ways.
//! - An error on either side (reset, broken pipe) ends the relay; the caller then closes
//!   both sockets with SO_LINGER 0 so the other peer sees a reset too.
//! - A direction's 16 KiB buffer is allocated on its first byte, so a connection that
//!   idles for hours costs its sockets and this task, not buffers.
//!
//! Later (benchmarks): splice(2) through a pipe on Linux fits in [`pump`] unchanged in
//! shape — same readiness loop, same accounting.

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpStream;
use tokio::time::Instant;

const BUFFER_SIZE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both directions finished with a FIN; `first` closed first.
    Closed { first: Side },
    /// `by` reset the connection (or failed hard); the other side must be reset.
    Reset { by: Side },
    /// Neither side sent anything within its idle timeout.
    IdleTimeout,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Closed {
                first: Side::Client,
            } => "client_closed",
            End::Closed {
                first: Side::Server,
            } => "server_closed",
            End::Reset { by: Side::Client } => "client_reset",
            End::Reset { by: Side::Server } => "server_reset",
            End::IdleTimeout => "idle_timeout",
        }
    }
}

/// One direction's accounting, shared with the relay loop.
#[derive(Default)]
pub struct Flow {
    pub bytes: AtomicU64,
    /// Milliseconds since the relay started when this direction last read data.
    last_read_ms: AtomicU64,
}

pub struct Idle {
    /// How long the client may stay silent.
    pub client: Duration,
    /// How long the server may stay silent.
    pub server: Duration,
}

#[derive(Debug)]
enum PumpError {
    Read(io::Error),
    Write(io::Error),
}

/// Relays until both directions are closed, one side fails, or both sides have been
/// silent past their idle timeouts (a connection that streams one way only is not idle).
pub async fn relay(
    client: &TcpStream,
    server: &TcpStream,
    idle: &Idle,
    client_to_server: (&Flow, &Counter),
    server_to_client: (&Flow, &Counter),
) -> End {
    let start = Instant::now();
    let up = pump(
        client,
        server,
        client_to_server.0,
        client_to_server.1,
        start,
    );
    let down = pump(
        server,
        client,
        server_to_client.0,
        server_to_client.1,
        start,
    );
    tokio::pin!(up, down);
    let (mut up_open, mut down_open) = (true, true);
    let mut first_fin = None;
    let deadline = || {
        let last = |flow: &Flow| Duration::from_millis(flow.last_read_ms.load(Ordering::Relaxed));
        start + (last(client_to_server.0) + idle.client).max(last(server_to_client.0) + idle.server)
    };
    loop {
        tokio::select! {
            result = &mut up, if up_open => match result {
                Ok(()) => {
                    up_open = false;
                    first_fin.get_or_insert(Side::Client);
                }
                Err(PumpError::Read(e)) => return failed(Side::Client, &e),
                Err(PumpError::Write(e)) => return failed(Side::Server, &e),
            },
            result = &mut down, if down_open => match result {
                Ok(()) => {
                    down_open = false;
                    first_fin.get_or_insert(Side::Server);
                }
                Err(PumpError::Read(e)) => return failed(Side::Server, &e),
                Err(PumpError::Write(e)) => return failed(Side::Client, &e),
            },
            () = tokio::time::sleep_until(deadline()) => {
                if Instant::now() >= deadline() {
                    return End::IdleTimeout;
                }
            }
        }
        if !up_open && !down_open {
            return End::Closed {
                first: first_fin.unwrap_or(Side::Client),
            };
        }
    }
}

fn failed(by: Side, error: &io::Error) -> End {
    tracing::debug!(side = ?by, error = %error, "relay ended by a socket error");
    End::Reset { by }
}

async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    flow: &Flow,
    counter: &Counter,
    start: Instant,
) -> Result<(), PumpError> {
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        from.readable().await.map_err(PumpError::Read)?;
        if buffer.is_empty() {
            buffer = vec![0; BUFFER_SIZE];
        }
        let n = match from.try_read(&mut buffer) {
            Ok(0) => {
                // Pass the FIN on; the peer may already be gone, which the other
                // direction will report.
                let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(PumpError::Read(e)),
        };
        flow.bytes.fetch_add(n as u64, Ordering::Relaxed);
        flow.last_read_ms
            .store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        counter.inc_by(n as u64);
        write_all(to, &buffer[..n])
            .await
            .map_err(PumpError::Write)?;
    }
}

async fn write_all(to: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        to.writable().await?;
        match to.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Closes with an RST instead of a FIN: the way a reset is passed on.
pub fn reset(stream: &TcpStream) {
    // Linger 0 never blocks on close (it aborts), unlike the positive values tokio
    // warns about.
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A relay between two loopback pairs: returns the test's ends and the relay task.
    async fn harness(
        idle: Idle,
    ) -> (
        TcpStream,
        TcpStream,
        tokio::task::JoinHandle<(End, u64, u64)>,
    ) {
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let back = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let user = TcpStream::connect(front.local_addr().unwrap())
            .await
            .unwrap();
        let (client_side, _) = front.accept().await.unwrap();
        let server_side = TcpStream::connect(back.local_addr().unwrap())
            .await
            .unwrap();
        let (origin, _) = back.accept().await.unwrap();
        let task = tokio::spawn(async move {
            let (up, down) = (Flow::default(), Flow::default());
            let (cu, cd) = (Counter::default(), Counter::default());
            let end = relay(&client_side, &server_side, &idle, (&up, &cu), (&down, &cd)).await;
            if let End::Reset { .. } = end {
                reset(&client_side);
                reset(&server_side);
            }
            (
                end,
                up.bytes.load(Ordering::Relaxed),
                down.bytes.load(Ordering::Relaxed),
            )
        });
        (user, origin, task)
    }

    fn long() -> Idle {
        Idle {
            client: Duration::from_secs(3600),
            server: Duration::from_secs(3600),
        }
    }

    #[tokio::test]
    async fn half_close_from_the_client_lets_the_server_keep_talking() {
        let (mut user, mut origin, task) = harness(long()).await;
        user.write_all(b"request").await.unwrap();
        user.shutdown().await.unwrap();
        let mut got = Vec::new();
        origin.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");
        origin
            .write_all(b"response after the client's FIN")
            .await
            .unwrap();
        origin.shutdown().await.unwrap();
        let mut reply = Vec::new();
        user.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"response after the client's FIN");
        let (end, up, down) = task.await.unwrap();
        assert_eq!(
            end,
            End::Closed {
                first: Side::Client
            }
        );
        assert_eq!((up, down), (7, 31));
    }

    #[tokio::test]
    async fn half_close_from_the_server_lets_the_client_keep_talking() {
        let (mut user, mut origin, task) = harness(long()).await;
        origin.write_all(b"banner").await.unwrap();
        origin.shutdown().await.unwrap();
        let mut banner = Vec::new();
        user.read_to_end(&mut banner).await.unwrap();
        assert_eq!(banner, b"banner");
        user.write_all(b"still sending").await.unwrap();
        user.shutdown().await.unwrap();
        let mut got = Vec::new();
        origin.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"still sending");
        assert_eq!(
            task.await.unwrap().0,
            End::Closed {
                first: Side::Server
            }
        );
    }

    #[tokio::test]
    async fn a_client_reset_is_passed_on_to_the_server() {
        let (user, mut origin, task) = harness(long()).await;
        reset(&user);
        drop(user);
        assert_eq!(task.await.unwrap().0, End::Reset { by: Side::Client });
        let mut buf = [0u8; 8];
        let err = origin.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn a_server_reset_is_passed_on_to_the_client() {
        let (mut user, origin, task) = harness(long()).await;
        reset(&origin);
        drop(origin);
        assert_eq!(task.await.unwrap().0, End::Reset { by: Side::Server });
        let mut buf = [0u8; 8];
        let err = user.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn idle_timeout_needs_both_sides_silent() {
        let idle = Idle {
            client: Duration::from_millis(300),
            server: Duration::from_millis(300),
        };
        let (mut user, mut origin, task) = harness(idle).await;
        // A one-way stream from the server keeps the connection alive although the
        // client never speaks.
        for _ in 0..6 {
            origin.write_all(b"tick").await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut buf = [0u8; 64];
        let n = user.read(&mut buf).await.unwrap();
        assert!(n > 0);
        assert!(!task.is_finished(), "a one-way stream is not idle");
        let started = std::time::Instant::now();
        let (end, _, down) = task.await.unwrap();
        assert_eq!(end, End::IdleTimeout);
        assert_eq!(down, 24);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn large_transfer_arrives_intact() {
        let (mut user, mut origin, task) = harness(long()).await;
        let data: Vec<u8> = (0..4_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            user.write_all(&data).await.unwrap();
            user.shutdown().await.unwrap();
            user
        });
        let mut got = Vec::new();
        origin.read_to_end(&mut got).await.unwrap();
        assert!(got == expected, "corrupted: {} bytes", got.len());
        drop(origin);
        let _user = writer.await.unwrap();
        assert_eq!(task.await.unwrap().1, 4_000_000);
    }
}
