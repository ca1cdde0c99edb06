//! The mission workload (DESIGN "The users and their workload"), generated inside the
//! client namespace by the helper (`helper.rs`, mode `load`), and the figures the tests
//! derive from what it recorded.
//!
//! Each client has its own source address ([`client_ip`]) and opens one socket per
//! frontend port to the VIP. A socket reads the backend's greeting (its name), then writes
//! `chunk` pseudo-random bytes every `period_ms` — 1.5 KiB every 100 ms is ~15 KB/s per
//! socket, the users' rate — whatever the reads do, and reads the echo as it comes,
//! checked byte for byte. When a socket breaks (reset, close, a chunk not echoed within
//! [`ECHO_TIMEOUT`] of its writing — what is readable is taken first, so a generator that
//! was not scheduled in time does not count as a break) it reconnects after [`BACKOFF`],
//! retrying every [`BACKOFF`] (at most `max_attempts` times, and never past `limit_ms`),
//! reads the greeting again and goes on. Every connection is one [`Session`]: which
//! backend greeted, when, when the echo first came back, when and why it ended. The
//! sessions of every socket are written to `out_file` at the end ([`Summary`]), so the
//! test can put them next to the instants it caused (a kill, a drill, a partition).
//!
//! While it runs it rewrites `status_file` every 200 ms ([`Status`]: which backend each
//! socket is on now) so the test can wait for "every client streaming" without a
//! process per look. It stops when `stop_file` appears or `limit_ms` passes.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;

/// Connect timeout of one attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The greeting must arrive within this after the connect.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(2);
/// A chunk not echoed within this breaks the socket (a stalled path counts as a break).
pub const ECHO_TIMEOUT: Duration = Duration::from_secs(2);
/// Wait before each reconnect attempt.
pub const BACKOFF: Duration = Duration::from_millis(50);

/// Client `i`'s source address: 198.18.1.1-200, 198.18.2.1-200, ... (200 per /24, so
/// no address ends in .0 or .255). The lb nodes route 198.18.1.0/24 and 198.18.2.0/24
/// to the client host.
pub fn client_ip(i: usize) -> Ipv4Addr {
    assert!(i < 400, "client {i}: the lab routes 400 client addresses");
    Ipv4Addr::new(198, 18, 1 + (i / 200) as u8, 1 + (i % 200) as u8)
}

pub use ballast_model::time::now as now_ms;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadConfig {
    pub vip: Ipv4Addr,
    pub ports: Vec<u16>,
    /// Clients `first_client..first_client + clients` (see [`client_ip`]).
    pub first_client: usize,
    pub clients: usize,
    pub chunk: usize,
    pub period_ms: u64,
    /// Hard bound on the whole run.
    pub limit_ms: u64,
    /// Reconnect attempts per break.
    pub max_attempts: u32,
    pub status_file: PathBuf,
    pub stop_file: PathBuf,
    pub out_file: PathBuf,
}

/// One connection of one socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// The greeting: the backend's name.
    pub backend: String,
    /// Connect attempts this session took (1: the first one worked).
    pub attempts: u32,
    /// When the first of those attempts started (unix ms).
    pub start_ms: u64,
    /// When the greeting was read.
    pub greeted_ms: u64,
    /// When the first echo came back intact: data flows again.
    pub flowing_ms: Option<u64>,
    /// When the session ended (the break was noticed), and why.
    pub end_ms: Option<u64>,
    pub end: Option<String>,
    /// Echo round trips completed.
    pub rounds: u64,
    /// For an echo timeout: what was owed and since when.
    #[serde(default)]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SocketLog {
    pub port: u16,
    pub sessions: Vec<Session>,
    /// Set when the socket gave up (`max_attempts` or the time limit while reconnecting).
    pub gave_up: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientLog {
    pub ip: Ipv4Addr,
    pub sockets: Vec<SocketLog>,
    /// Distinct backends each socket saw, in order.
    pub backends_seen: Vec<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub started_ms: u64,
    pub ended_ms: u64,
    pub clients: Vec<ClientLog>,
    /// Sessions after the first of each socket.
    pub reconnects: u64,
    /// Failed connect attempts (refused, timed out, closed before the greeting).
    pub failed_attempts: u64,
    pub echo_mismatches: u64,
    pub bytes_echoed: u64,
    /// Times a socket's echo was overdue when its task ran but already waiting in the
    /// socket (this generator was not scheduled in time, not a break).
    #[serde(default)]
    pub late_echoes: u64,
    /// Over every break that was followed by a new session: from the break to data
    /// flowing again (ms).
    pub outage_max_ms: Option<u64>,
    pub outage_median_ms: Option<u64>,
    /// Latest instant (unix ms) a client had all its sockets flowing again after a break.
    pub all_back_ms: Option<u64>,
}

/// What `status_file` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub t_ms: u64,
    /// Per client, per socket: the backend while data flows on it, else `None`.
    pub sockets: Vec<Vec<Option<String>>>,
    pub reconnects: u64,
    pub echo_mismatches: u64,
    pub done: bool,
}

impl Status {
    /// Clients whose sockets all flow, on one backend.
    pub fn clients_streaming(&self) -> usize {
        self.sockets
            .iter()
            .filter(|s| s.iter().all(Option::is_some) && s.iter().all(|b| *b == s[0]))
            .count()
    }

    /// Sockets currently on `backend`.
    pub fn on_backend(&self, backend: &str) -> usize {
        self.sockets
            .iter()
            .flatten()
            .filter(|b| b.as_deref() == Some(backend))
            .count()
    }

    /// Every client's backend when all its sockets agree.
    pub fn placement(&self) -> BTreeMap<usize, String> {
        self.sockets
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s.first() {
                Some(Some(b)) if s.iter().all(|x| x.as_deref() == Some(b)) => Some((i, b.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn read(path: &Path) -> Option<Status> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }
}

struct Shared {
    cfg: LoadConfig,
    stopping: AtomicBool,
    view: Mutex<Vec<Vec<Option<String>>>>,
    reconnects: AtomicU64,
    failed_attempts: AtomicU64,
    mismatches: AtomicU64,
    bytes: AtomicU64,
    late_echoes: AtomicU64,
}

impl Shared {
    fn set(&self, client: usize, socket: usize, backend: Option<&str>) {
        if let Ok(mut v) = self.view.lock() {
            v[client][socket] = backend.map(str::to_string);
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    fn status(&self, done: bool) -> Status {
        Status {
            t_ms: now_ms(),
            sockets: self.view.lock().map(|v| v.clone()).unwrap_or_default(),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            echo_mismatches: self.mismatches.load(Ordering::Relaxed),
            done,
        }
    }
}

fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

type Conn = (
    BufReader<tokio::net::tcp::OwnedReadHalf>,
    tokio::net::tcp::OwnedWriteHalf,
    String,
);

async fn connect(src: Ipv4Addr, dst: SocketAddr) -> Result<Conn, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(IpAddr::V4(src), 0))
        .map_err(|e| format!("bind {src}: {e}"))?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(dst))
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    match tokio::time::timeout(GREETING_TIMEOUT, r.read_line(&mut line)).await {
        Err(_) => Err("greeting timeout".into()),
        Ok(Err(e)) => Err(format!("greeting: {e}")),
        Ok(Ok(0)) => Err("closed before the greeting".into()),
        Ok(Ok(_)) => Ok((r, w, line.trim().to_string())),
    }
}

async fn run_socket(shared: Arc<Shared>, client: usize, socket: usize) -> SocketLog {
    let cfg = &shared.cfg;
    let src = client_ip(cfg.first_client + client);
    let port = cfg.ports[socket];
    let dst = SocketAddr::new(IpAddr::V4(cfg.vip), port);
    let deadline = shared_deadline(cfg);
    let mut log = SocketLog {
        port,
        ..SocketLog::default()
    };
    let seed = ((cfg.first_client + client) as u64) << 40 | (port as u64) << 24;
    let mut seq = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    // Spread the first connects over one period, as real clients arrive.
    let spread = (client as u64 * 7 + socket as u64 * 13) % cfg.period_ms.max(1);
    tokio::time::sleep(Duration::from_millis(spread)).await;
    'outer: loop {
        let start_ms = now_ms();
        let mut attempts = 0u32;
        let (mut r, mut w, backend) = loop {
            if shared.stopping() {
                break 'outer;
            }
            if attempts >= cfg.max_attempts || tokio::time::Instant::now() >= deadline {
                log.gave_up = Some(format!(
                    "after {attempts} attempts: {}",
                    log.last_error.clone().unwrap_or_default()
                ));
                break 'outer;
            }
            attempts += 1;
            match connect(src, dst).await {
                Ok(c) => break c,
                Err(e) => {
                    shared.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    log.last_error = Some(e);
                    tokio::time::sleep(BACKOFF).await;
                }
            }
        };
        if !log.sessions.is_empty() {
            shared.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let mut s = Session {
            backend,
            attempts,
            start_ms,
            greeted_ms: now_ms(),
            flowing_ms: None,
            end_ms: None,
            end: None,
            rounds: 0,
            detail: None,
        };
        // Stream: a chunk every period whatever the reads do (a real stream does not
        // wait for its echo), and read the echo as it comes, checked byte for byte. A
        // chunk not fully echoed within ECHO_TIMEOUT breaks the socket.
        let mut ticker = tokio::time::interval(Duration::from_millis(cfg.period_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut owed = Owed::default();
        let end = loop {
            if shared.stopping() {
                break "stopped".to_string();
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break "time limit".to_string();
            }
            if owed.overdue(now) {
                // On a busy machine this task may not have run for a while, with the
                // echo waiting in the socket: take what is readable now before calling
                // the socket broken.
                if let Err(end) =
                    drain_ready(&shared, client, socket, &mut s, &mut owed, &mut r, &mut buf)
                {
                    break end;
                }
                if owed.overdue(tokio::time::Instant::now()) {
                    s.detail = Some(owed.describe(tokio::time::Instant::now()));
                    break "echo timeout".to_string();
                }
                shared.late_echoes.fetch_add(1, Ordering::Relaxed);
            }
            if owed.expected.len() > 64 * cfg.chunk {
                break "echo backlog".to_string();
            }
            tokio::select! {
                _ = ticker.tick() => {
                    seq += 1;
                    let data = crate::harness::pseudo_random_bytes(cfg.chunk, seed ^ seq);
                    match tokio::time::timeout(ECHO_TIMEOUT, w.write_all(&data)).await {
                        Err(_) => break "write timeout".to_string(),
                        Ok(Err(e)) => break format!("write {:?}", e.kind()),
                        Ok(Ok(())) => {}
                    }
                    owed.wrote(&data);
                }
                got = r.read(&mut buf) => match got {
                    Ok(0) => break "closed".to_string(),
                    Err(e) => break format!("read {:?}", e.kind()),
                    Ok(n) => {
                        if let Err(end) = absorb(&shared, client, socket, &mut s, &mut owed, &buf[..n]) {
                            break end;
                        }
                    }
                },
            }
        };
        s.end_ms = Some(now_ms());
        s.end = Some(end);
        shared.set(client, socket, None);
        log.sessions.push(s);
        if shared.stopping() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(BACKOFF).await;
    }
    log
}

/// What a socket wrote and has not seen echoed yet.
#[derive(Default)]
struct Owed {
    expected: VecDeque<u8>,
    /// (stream offset where a chunk ends, when it was written)
    chunks: VecDeque<(u64, tokio::time::Instant)>,
    written: u64,
    echoed: u64,
    /// When echoed bytes last came.
    progress: Option<tokio::time::Instant>,
}

impl Owed {
    fn wrote(&mut self, data: &[u8]) {
        self.expected.extend(data);
        self.written += data.len() as u64;
        self.chunks
            .push_back((self.written, tokio::time::Instant::now()));
    }

    /// A chunk not fully echoed within [`ECHO_TIMEOUT`].
    fn overdue(&self, now: tokio::time::Instant) -> bool {
        self.chunks
            .front()
            .is_some_and(|(_, at)| now - *at > ECHO_TIMEOUT)
    }

    fn describe(&self, now: tokio::time::Instant) -> String {
        let age = |t: Option<tokio::time::Instant>| t.map(|t| (now - t).as_millis());
        format!(
            "{} bytes owed in {} chunks, the oldest written {:?} ms ago; last echo {:?} ms ago",
            self.expected.len(),
            self.chunks.len(),
            age(self.chunks.front().map(|c| c.1)),
            age(self.progress)
        )
    }
}

/// Checks echoed `data` against what is owed and counts the rounds it completes.
fn absorb(
    shared: &Shared,
    client: usize,
    socket: usize,
    s: &mut Session,
    owed: &mut Owed,
    data: &[u8],
) -> Result<(), String> {
    let n = data.len();
    let same = n <= owed.expected.len() && owed.expected.drain(..n).zip(data).all(|(a, b)| a == *b);
    if !same {
        shared.mismatches.fetch_add(1, Ordering::Relaxed);
        return Err("echo mismatch".to_string());
    }
    owed.echoed += n as u64;
    owed.progress = Some(tokio::time::Instant::now());
    shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
    while owed
        .chunks
        .front()
        .is_some_and(|(end, _)| *end <= owed.echoed)
    {
        owed.chunks.pop_front();
        s.rounds += 1;
        if s.flowing_ms.is_none() {
            s.flowing_ms = Some(now_ms());
            shared.set(client, socket, Some(&s.backend));
        }
    }
    Ok(())
}

/// Takes every echoed byte readable now, without waiting: the reader's buffer, then the
/// socket until it would block (bounded).
fn drain_ready(
    shared: &Shared,
    client: usize,
    socket: usize,
    s: &mut Session,
    owed: &mut Owed,
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    buf: &mut [u8],
) -> Result<(), String> {
    let buffered = r.buffer().to_vec();
    r.consume(buffered.len());
    absorb(shared, client, socket, s, owed, &buffered)?;
    for _ in 0..1_000 {
        match r.get_ref().try_read(buf) {
            Ok(0) => return Err("closed".to_string()),
            Ok(n) => absorb(shared, client, socket, s, owed, &buf[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(format!("read {:?}", e.kind())),
        }
    }
    Ok(())
}

fn shared_deadline(cfg: &LoadConfig) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_millis(cfg.limit_ms)
}

/// Runs the workload to the end (stop file or time limit) and writes the summary.
pub fn run(cfg: LoadConfig) -> String {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return format!("err runtime: {e}"),
    };
    rt.block_on(async move {
        let started_ms = now_ms();
        let shared = Arc::new(Shared {
            view: Mutex::new(vec![vec![None; cfg.ports.len()]; cfg.clients]),
            cfg,
            stopping: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            mismatches: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            late_echoes: AtomicU64::new(0),
        });
        let cfg = shared.cfg.clone();
        let deadline = shared_deadline(&cfg);
        // Status writer and stop watcher.
        let watcher = {
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    let status = shared.status(false);
                    write_atomic(
                        &shared.cfg.status_file,
                        &serde_json::to_string(&status).unwrap_or_default(),
                    );
                    if shared.cfg.stop_file.exists() || tokio::time::Instant::now() >= deadline {
                        shared.stopping.store(true, Ordering::Relaxed);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        let mut tasks = Vec::new();
        for client in 0..cfg.clients {
            for socket in 0..cfg.ports.len() {
                tasks.push((
                    client,
                    tokio::spawn(run_socket(shared.clone(), client, socket)),
                ));
            }
        }
        let mut clients: Vec<ClientLog> = (0..cfg.clients)
            .map(|c| ClientLog {
                ip: client_ip(cfg.first_client + c),
                sockets: Vec::new(),
                backends_seen: Vec::new(),
            })
            .collect();
        for (client, task) in tasks {
            let log = task.await.unwrap_or_else(|e| SocketLog {
                gave_up: Some(format!("task failed: {e}")),
                ..SocketLog::default()
            });
            let mut seen: Vec<String> = Vec::new();
            for s in &log.sessions {
                if seen.last() != Some(&s.backend) {
                    seen.push(s.backend.clone());
                }
            }
            clients[client].backends_seen.push(seen);
            clients[client].sockets.push(log);
        }
        shared.stopping.store(true, Ordering::Relaxed);
        let _ = watcher.await;
        let mut outages: Vec<u64> = Vec::new();
        let mut all_back: Option<u64> = None;
        for c in &clients {
            for s in &c.sockets {
                for pair in s.sessions.windows(2) {
                    if let (Some(end), Some(back)) = (pair[0].end_ms, pair[1].flowing_ms) {
                        outages.push(back.saturating_sub(end));
                        all_back = all_back.max(Some(back));
                    }
                }
            }
        }
        outages.sort_unstable();
        let summary = Summary {
            started_ms,
            ended_ms: now_ms(),
            clients,
            reconnects: shared.reconnects.load(Ordering::Relaxed),
            failed_attempts: shared.failed_attempts.load(Ordering::Relaxed),
            echo_mismatches: shared.mismatches.load(Ordering::Relaxed),
            bytes_echoed: shared.bytes.load(Ordering::Relaxed),
            late_echoes: shared.late_echoes.load(Ordering::Relaxed),
            outage_max_ms: outages.last().copied(),
            outage_median_ms: outages.get(outages.len() / 2).copied(),
            all_back_ms: all_back,
        };
        let final_status = shared.status(true);
        write_atomic(
            &shared.cfg.status_file,
            &serde_json::to_string(&final_status).unwrap_or_default(),
        );
        match serde_json::to_string(&summary) {
            Ok(text) => {
                write_atomic(&shared.cfg.out_file, &text);
                "ok".to_string()
            }
            Err(e) => format!("err summary: {e}"),
        }
    })
}

/// What happened to one client around an instant `t` (unix ms) that broke its
/// connections: the backend it had just before, the one it reconnected to, and when.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub client: usize,
    pub ip: Ipv4Addr,
    /// Per socket: the backend of the session that was open at `t`.
    pub before: Vec<Option<String>>,
    /// Per socket: the backend of the first session that flowed after the break.
    pub after: Vec<Option<String>>,
    /// Per socket: when the break was noticed (the session open at `t` ended).
    pub broke_ms: Vec<Option<u64>>,
    /// Per socket: when data flowed again.
    pub back_ms: Vec<Option<u64>>,
    /// Per socket: when the reconnected session was greeted.
    pub regreeted_ms: Vec<Option<u64>>,
}

impl Recovery {
    /// The backend all sockets had before `t`, if they agreed.
    pub fn before_one(&self) -> Option<&str> {
        one(&self.before)
    }

    pub fn after_one(&self) -> Option<&str> {
        one(&self.after)
    }

    /// Whether every socket broke and came back.
    pub fn recovered(&self) -> bool {
        self.back_ms.iter().all(Option::is_some)
    }

    /// When the last socket of the client flowed again.
    pub fn back(&self) -> Option<u64> {
        self.back_ms
            .iter()
            .copied()
            .collect::<Option<Vec<u64>>>()
            .and_then(|v| v.into_iter().max())
    }
}

fn one(v: &[Option<String>]) -> Option<&str> {
    let first = v.first()?.as_deref()?;
    v.iter()
        .all(|b| b.as_deref() == Some(first))
        .then_some(first)
}

impl Summary {
    /// Each client's recovery from a break at or after `t`: the session open at `t`
    /// (greeted before `t`, not ended before `t`) and the first session after it that
    /// flowed. Only sockets whose open session ended after `t` are counted as broken.
    pub fn recovery_after(&self, t: u64) -> Vec<Recovery> {
        self.clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut r = Recovery {
                    client: i,
                    ip: c.ip,
                    before: Vec::new(),
                    after: Vec::new(),
                    broke_ms: Vec::new(),
                    back_ms: Vec::new(),
                    regreeted_ms: Vec::new(),
                };
                for s in &c.sockets {
                    let open = s
                        .sessions
                        .iter()
                        .position(|x| x.greeted_ms <= t && x.end_ms.is_none_or(|e| e >= t));
                    let before = open.map(|k| &s.sessions[k]);
                    // Not connected at `t` (between two sessions): the first session
                    // greeted after `t` is the one it came back with.
                    let next = match open {
                        Some(k) => s.sessions[k + 1..].iter().find(|x| x.flowing_ms.is_some()),
                        None => s
                            .sessions
                            .iter()
                            .find(|x| x.greeted_ms >= t && x.flowing_ms.is_some()),
                    };
                    r.before.push(before.map(|x| x.backend.clone()));
                    r.broke_ms.push(match before {
                        Some(x) => x.end_ms,
                        None => s
                            .sessions
                            .iter()
                            .filter_map(|x| x.end_ms)
                            .filter(|&e| e < t)
                            .max(),
                    });
                    r.after.push(next.map(|x| x.backend.clone()));
                    r.back_ms.push(next.and_then(|x| x.flowing_ms));
                    r.regreeted_ms.push(next.map(|x| x.greeted_ms));
                }
                r
            })
            .collect()
    }

    /// Every session greeted by `backend` at or after `t`: (client, port, greeted_ms).
    pub fn greeted_by_after(&self, backend: &str, t: u64) -> Vec<(Ipv4Addr, u16, u64)> {
        let mut out = Vec::new();
        for c in &self.clients {
            for s in &c.sockets {
                for x in &s.sessions {
                    if x.backend == backend && x.greeted_ms >= t {
                        out.push((c.ip, s.port, x.greeted_ms));
                    }
                }
            }
        }
        out
    }

    /// Sockets that gave up reconnecting.
    pub fn gave_up(&self) -> Vec<String> {
        self.clients
            .iter()
            .flat_map(|c| {
                c.sockets.iter().filter_map(move |s| {
                    s.gave_up
                        .as_ref()
                        .map(|g| format!("{}:{} {g}", c.ip, s.port))
                })
            })
            .collect()
    }

    /// The backend each client's sockets are on at the end (when they agree).
    pub fn final_placement(&self) -> BTreeMap<Ipv4Addr, Option<String>> {
        self.clients
            .iter()
            .map(|c| {
                let last: Vec<Option<String>> = c
                    .sockets
                    .iter()
                    .map(|s| s.sessions.last().map(|x| x.backend.clone()))
                    .collect();
                (c.ip, one(&last).map(str::to_string))
            })
            .collect()
    }

    /// The backends that greeted client `client`'s sockets, in the order of the
    /// greetings over all its sockets, repeats folded: `[s1]` for a client that never
    /// moved, `[s1, s2]` for one moved once. A client whose sockets split (one to s2,
    /// another to s3) or went back shows more changes than it was moved.
    pub fn greeting_sequence(&self, client: usize) -> Vec<String> {
        let mut all: Vec<&Session> = self.clients[client]
            .sockets
            .iter()
            .flat_map(|s| &s.sessions)
            .collect();
        all.sort_by_key(|s| s.greeted_ms);
        let mut seq: Vec<String> = Vec::new();
        for s in all {
            if seq.last() != Some(&s.backend) {
                seq.push(s.backend.clone());
            }
        }
        seq
    }
}

/// Sorted figures of a set of durations (ms): (count, median, p99, max).
pub fn spread(mut v: Vec<u64>) -> (usize, u64, u64, u64) {
    if v.is_empty() {
        return (0, 0, 0, 0);
    }
    v.sort_unstable();
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (v.len(), p(0.5), p(0.99), v[v.len() - 1])
}
