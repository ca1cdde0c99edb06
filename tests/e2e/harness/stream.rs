//! Long-lived streaming sockets, checked byte for byte, and a connection-rate client.
//!
//! [`Streams`] takes greeted connections ([`Conn`]) and gives each its own task: every
//! [`PERIOD`] it writes [`CHUNK`] deterministic pseudo-random bytes (the users' rate of
//! DESIGN, ~15 KB/s per socket) and reads the echo back within [`ECHO_TIMEOUT`], compared
//! byte for byte. Counters per socket: bytes sent, bytes echoed intact; the first error,
//! EOF, timeout or mismatch breaks the socket for good (no reconnect: a test that
//! expects no break wants to see every one).
//!
//! [`RateClient`] is one task that connects, reads the greeting, sends 16 bytes, reads
//! their echo and closes, in a loop, counting the attempts that fail (refused, reset,
//! timed out, cut short).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{timeout, MissedTickBehavior};

use super::client::{connect_from, read_line, Conn};
use super::pseudo_random_bytes;

/// Bytes written per round.
pub const CHUNK: usize = 1536;
/// One round every `PERIOD`.
pub const PERIOD: Duration = Duration::from_millis(100);
/// A round whose echo is not complete within this breaks the socket.
pub const ECHO_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a streaming socket stands.
#[derive(Debug, Clone)]
pub struct SocketReport {
    pub client: usize,
    pub socket: usize,
    /// The backend that greeted it.
    pub server: String,
    pub sent: u64,
    /// Bytes that came back equal to what was sent.
    pub echoed: u64,
    /// Why it broke, if it did.
    pub broken: Option<String>,
}

impl SocketReport {
    fn label(&self) -> String {
        format!(
            "client {} socket {} ({})",
            self.client, self.socket, self.server
        )
    }
}

struct Socket {
    client: usize,
    socket: usize,
    server: String,
    sent: AtomicU64,
    echoed: AtomicU64,
    broken: Mutex<Option<String>>,
}

impl Socket {
    fn report(&self) -> SocketReport {
        SocketReport {
            client: self.client,
            socket: self.socket,
            server: self.server.clone(),
            sent: self.sent.load(Ordering::SeqCst),
            echoed: self.echoed.load(Ordering::SeqCst),
            broken: self.broken.lock().unwrap().clone(),
        }
    }
}

/// Sockets streaming until [`Streams::stop`].
pub struct Streams {
    sockets: Vec<Arc<Socket>>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Streams {
    /// Starts one task per connection: `(client index, socket index, greeted connection)`.
    /// Rounds are spread over the period so the sockets do not all write at once.
    pub fn start(conns: Vec<(usize, usize, Conn)>) -> Streams {
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut sockets = Vec::new();
        let n = conns.len().max(1) as u64;
        for (k, (client, socket, conn)) in conns.into_iter().enumerate() {
            let s = Arc::new(Socket {
                client,
                socket,
                server: conn.server.clone(),
                sent: AtomicU64::new(0),
                echoed: AtomicU64::new(0),
                broken: Mutex::new(None),
            });
            sockets.push(s.clone());
            let offset = PERIOD.mul_f64(k as f64 / n as f64);
            let seed = ((client as u64) << 20) ^ ((socket as u64) << 8) ^ 0x5eed;
            tasks.spawn(stream(conn, s, seed, offset, stop_rx.clone()));
        }
        Streams {
            sockets,
            stop,
            tasks,
        }
    }

    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Every socket's counters now.
    pub fn reports(&self) -> Vec<SocketReport> {
        self.sockets.iter().map(|s| s.report()).collect()
    }

    /// Bytes echoed intact per socket now (in the order given to `start`).
    pub fn echoed(&self) -> Vec<u64> {
        self.sockets
            .iter()
            .map(|s| s.echoed.load(Ordering::SeqCst))
            .collect()
    }

    /// "client i socket k (server): reason" of every broken socket.
    pub fn broken(&self) -> Vec<String> {
        broken(&self.reports())
    }

    /// Panics if a socket broke.
    pub fn assert_none_broken(&self, when: &str) {
        let broken = self.broken();
        assert!(
            broken.is_empty(),
            "{when}: {} of {} sockets broke, first: {:?}",
            broken.len(),
            self.len(),
            &broken[..broken.len().min(5)]
        );
    }

    /// Waits (at most `within`) until every socket has echoed more than it had in `base`
    /// (a snapshot from [`Streams::echoed`]): each one carried data since then. Panics
    /// early if a socket breaks.
    pub async fn wait_all_progressed(&self, base: &[u64], within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            self.assert_none_broken("while waiting for every socket to stream");
            let now = self.echoed();
            let stalled: Vec<String> = self
                .sockets
                .iter()
                .zip(now.iter().zip(base))
                .filter(|(_, (n, b))| n <= b)
                .map(|(s, _)| s.report().label())
                .collect();
            if stalled.is_empty() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{} of {} sockets echoed nothing in {within:?}, first: {:?}",
                    stalled.len(),
                    self.len(),
                    &stalled[..stalled.len().min(5)]
                );
            }
            tokio::time::sleep(PERIOD).await;
        }
    }

    /// Stops every socket after its current round (whose echo it still waits for) and
    /// returns the final counters; the connections are closed.
    pub async fn stop(mut self) -> Vec<SocketReport> {
        let _ = self.stop.send(true);
        let bound = ECHO_TIMEOUT + Duration::from_secs(5);
        let joined = timeout(bound, async {
            while let Some(r) = self.tasks.join_next().await {
                r.expect("streaming task panicked");
            }
        })
        .await;
        assert!(
            joined.is_ok(),
            "streaming sockets did not stop within {bound:?}"
        );
        self.reports()
    }
}

/// "client i socket k (server): reason" of every broken socket in `reports`.
pub fn broken(reports: &[SocketReport]) -> Vec<String> {
    reports
        .iter()
        .filter_map(|r| r.broken.as_ref().map(|why| format!("{}: {why}", r.label())))
        .collect()
}

/// Panics unless every socket is unbroken and got back every byte it sent.
pub fn assert_all_intact(reports: &[SocketReport]) {
    let broken = broken(reports);
    assert!(
        broken.is_empty(),
        "{} of {} sockets broke, first: {:?}",
        broken.len(),
        reports.len(),
        &broken[..broken.len().min(5)]
    );
    let short: Vec<String> = reports
        .iter()
        .filter(|r| r.echoed != r.sent || r.sent == 0)
        .map(|r| format!("{}: sent {} echoed {}", r.label(), r.sent, r.echoed))
        .collect();
    assert!(
        short.is_empty(),
        "{} sockets did not get every byte back, first: {:?}",
        short.len(),
        &short[..short.len().min(5)]
    );
}

async fn stream(
    mut conn: Conn,
    s: Arc<Socket>,
    seed: u64,
    offset: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut back = vec![0u8; CHUNK];
    let mut round: u64 = 0;
    tokio::time::sleep(offset).await;
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let chunk = pseudo_random_bytes(CHUNK, seed.wrapping_add(round.wrapping_mul(0x9e37)));
        round += 1;
        let wrote = match timeout(ECHO_TIMEOUT, conn.stream.write_all(&chunk)).await {
            Err(_) => Err(format!("round {round}: write blocked for {ECHO_TIMEOUT:?}")),
            Ok(Err(e)) => Err(format!("round {round}: write: {e}")),
            Ok(Ok(())) => Ok(()),
        };
        if let Err(why) = wrote {
            *s.broken.lock().unwrap() = Some(why);
            return;
        }
        s.sent.fetch_add(CHUNK as u64, Ordering::SeqCst);
        let why = match timeout(ECHO_TIMEOUT, conn.stream.read_exact(&mut back)).await {
            Err(_) => Some(format!("round {round}: no echo within {ECHO_TIMEOUT:?}")),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Some(format!("round {round}: EOF"))
            }
            Ok(Err(e)) => Some(format!("round {round}: read: {e}")),
            Ok(Ok(_)) if back != chunk => {
                let at = back.iter().zip(&chunk).position(|(a, b)| a != b);
                Some(format!("round {round}: echo differs at byte {at:?}"))
            }
            Ok(Ok(_)) => None,
        };
        if let Some(why) = why {
            *s.broken.lock().unwrap() = Some(why);
            return;
        }
        s.echoed.fetch_add(CHUNK as u64, Ordering::SeqCst);
    }
}

/// What the connection-rate client saw.
#[derive(Debug, Clone, Default)]
pub struct RateReport {
    /// Attempts that connected, were greeted and got their 16 bytes back.
    pub ok: u64,
    pub failed: u64,
    /// The first few failures, with the attempt number.
    pub errors: Vec<String>,
    /// Successful attempts per greeting server.
    pub per_server: BTreeMap<String, u64>,
}

/// One task opening short connections in a loop until stopped.
pub struct RateClient {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<RateReport>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl RateClient {
    /// Connects from `src` to `addrs` in turn; at most `max_attempts`, pausing `pause`
    /// between attempts. Each attempt is bounded by [`ECHO_TIMEOUT`].
    pub fn start(
        src: Ipv4Addr,
        addrs: Vec<SocketAddr>,
        pause: Duration,
        max_attempts: u64,
    ) -> RateClient {
        let (stop, mut stop_rx) = watch::channel(false);
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (ok_count, failed_count) = (ok.clone(), failed.clone());
        let task = tokio::spawn(async move {
            let mut report = RateReport::default();
            for n in 0..max_attempts {
                if *stop_rx.borrow() {
                    break;
                }
                let dst = addrs[n as usize % addrs.len()];
                let payload = pseudo_random_bytes(16, 0xa11ce ^ n);
                match timeout(ECHO_TIMEOUT, one_attempt(src, dst, &payload)).await {
                    Ok(Ok(server)) => {
                        report.ok += 1;
                        ok_count.fetch_add(1, Ordering::SeqCst);
                        *report.per_server.entry(server).or_default() += 1;
                    }
                    Ok(Err(e)) => report.fail(format!("attempt {n} to {dst}: {e}")),
                    Err(_) => report.fail(format!("attempt {n} to {dst}: timed out")),
                }
                failed_count.store(report.failed, Ordering::SeqCst);
                tokio::select! {
                    _ = stop_rx.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            report
        });
        RateClient {
            stop,
            task,
            ok,
            failed,
        }
    }

    /// Successful attempts so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    /// Failed attempts so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    /// Waits (at most `within`) until more than `at` attempts have succeeded.
    pub async fn wait_ok_beyond(&self, at: u64, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.ok() <= at {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the rate client had no successful connection in {within:?} \
                 ({} so far, {} failed)",
                self.ok(),
                self.failed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops after the attempt under way; the report.
    pub async fn stop(self) -> RateReport {
        let _ = self.stop.send(true);
        timeout(ECHO_TIMEOUT + Duration::from_secs(5), self.task)
            .await
            .expect("the rate client did not stop")
            .expect("the rate client panicked")
    }
}

impl RateReport {
    fn fail(&mut self, why: String) {
        self.failed += 1;
        if self.errors.len() < 10 {
            self.errors.push(why);
        }
    }
}

async fn one_attempt(src: Ipv4Addr, dst: SocketAddr, payload: &[u8]) -> std::io::Result<String> {
    let mut s = connect_from(src, dst).await?;
    let server = read_line(&mut s, ECHO_TIMEOUT).await?;
    s.write_all(payload).await?;
    let mut back = vec![0u8; payload.len()];
    s.read_exact(&mut back).await?;
    if back != payload {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "echo differs",
        ));
    }
    Ok(server)
}
