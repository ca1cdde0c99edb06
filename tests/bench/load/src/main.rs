//! `ballast-load`: the load generator, the backends and the report of Ballast's
//! benchmark (`tests/bench/run.sh`). Loopback only; every loop is bounded in count and
//! time.
//!
//! Backend protocol: the first byte a client sends picks what the backend does with the
//! connection.
//!
//! ```text
//!   'E'  echo every following byte; on EOF shut down our write side
//!   'I'  write this backend's id (one byte, '0' + index), then echo as 'E'
//!   'D'  discard every following byte; on EOF write the count (u64 LE) and close
//! ```
//!
//! Every measuring command prints one JSON object on stdout (`name`, `label`, `rep` and
//! its figures); `report` turns the collected lines into the results tables.

mod report;
mod upgrade;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;

#[derive(Parser)]
#[command(name = "ballast-load", about = "Benchmark load tool for Ballast")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the backends (one per address) until killed or `--lifetime-secs`.
    Backend {
        #[arg(long, value_delimiter = ',', required = true)]
        listen: Vec<SocketAddr>,
        #[arg(long, default_value_t = 3600)]
        lifetime_secs: u64,
    },
    /// Bulk transfer client → proxy → backend ('D'): Gbit/s and proxy CPU s per GB.
    Throughput {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1)]
        streams: usize,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// Request/response over persistent connections: 64-byte messages, p50/p99.
    Latency {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1)]
        conns: usize,
        #[arg(long, default_value_t = 20_000)]
        msgs: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 15.0)]
        max_secs: f64,
    },
    /// New connections per second: connect, 16-byte echo, close.
    Connrate {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        #[arg(long, default_value_t = 500_000)]
        max_conns: u64,
        /// Each loop connects from its own address 127.<src_net>.0.<loop+1>: from one
        /// address, the client's ~28,000 ephemeral ports (each held in TIME_WAIT after
        /// its close) capped every proxy at ~14,000 connections/s over a 2 s round.
        #[arg(long, default_value_t = 9)]
        src_net: u8,
    },
    /// Memory per idle proxied connection: RSS delta of the proxy's processes / N.
    Idle {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 5000)]
        conns: usize,
        /// Client source addresses 127.<src_net>.x.y, spread over this many addresses.
        #[arg(long, default_value_t = 250)]
        sources: u32,
        #[arg(long, default_value_t = 1)]
        src_net: u8,
        #[arg(long, default_value_t = 2.0)]
        settle_secs: f64,
    },
    /// The mission workload: clients × sockets (one per target port, opened together)
    /// from their own 127.x address, each socket echoing `rate` bytes/s for `secs`.
    Mission {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 300)]
        clients: u32,
        #[arg(long, default_value_t = 15_000)]
        rate: usize,
        #[arg(long, default_value_t = 20.0)]
        secs: f64,
        #[arg(long, default_value_t = 2)]
        src_net: u8,
        /// Exit 1 unless every client's sockets all reached one backend.
        #[arg(long)]
        require_sticky: bool,
    },
    /// A live upgrade under `conns` echoing connections: broken connections, the
    /// longest echo wait per connection, the node's pause and hand-over time.
    Upgrade {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        conns: u32,
        #[arg(long, default_value_t = 3)]
        src_net: u8,
        /// Each connection echoes a 32-byte message this often.
        #[arg(long, default_value_t = 500)]
        interval_ms: u64,
        /// The node's API (its /v1/status names the process to signal).
        #[arg(long)]
        api: SocketAddr,
        #[arg(long, default_value_t = 2.0)]
        before_secs: f64,
        #[arg(long, default_value_t = 3.0)]
        after_secs: f64,
    },
    /// Medians and ratios to HAProxy from the collected JSON lines, as Markdown.
    Report {
        /// A run's results.jsonl; given several times, the runs are pooled (medians
        /// over all of them, pairs within each).
        #[arg(long, required = true)]
        input: Vec<std::path::PathBuf>,
        #[arg(long, default_value = "haproxy")]
        baseline: String,
    },
}

#[derive(Args, Clone)]
struct Common {
    /// Where to connect (the proxy's listener or a backend for `direct`); the mission
    /// uses one socket per address.
    #[arg(long, value_delimiter = ',', required = true)]
    target: Vec<SocketAddr>,
    /// Which proxy this run measures (ballast, haproxy, nginx, direct).
    #[arg(long)]
    label: String,
    /// Name of the measurement in the results (defaults to the command).
    #[arg(long)]
    name: Option<String>,
    #[arg(long, default_value_t = 0)]
    rep: u32,
    /// The proxy's processes, for CPU (utime+stime) and RSS.
    #[arg(long, value_delimiter = ',')]
    pids: Vec<u32>,
    /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
}

impl Common {
    fn record(&self, default_name: &str, figures: Value) -> Value {
        let mut record = json!({
            "name": self.name.clone().unwrap_or_else(|| default_name.to_string()),
            "label": self.label,
            "rep": self.rep,
        });
        if let (Value::Object(out), Value::Object(figures)) = (&mut record, figures) {
            out.extend(figures);
        }
        record
    }

    /// CPU seconds (user + system) used so far by the proxy's processes.
    fn cpu_secs(&self) -> Option<f64> {
        if self.pids.is_empty() {
            return None;
        }
        let mut ticks = 0u64;
        for pid in &self.pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of the line, 12 and 13 of `rest`.
            ticks += fields.get(11)?.parse::<u64>().ok()?;
            ticks += fields.get(12)?.parse::<u64>().ok()?;
        }
        Some(ticks as f64 / self.clk_tck as f64)
    }

    /// Resident set size summed over the proxy's processes, in KiB.
    fn rss_kib(&self) -> Option<u64> {
        if self.pids.is_empty() {
            return None;
        }
        let mut total = 0;
        for pid in &self.pids {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            total += line.split_whitespace().nth(1)?.parse::<u64>().ok()?;
        }
        Some(total)
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Cmd::Report { input, baseline } = &cli.cmd {
        print!("{}", report::render(input, baseline)?);
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let record = match cli.cmd {
            Cmd::Backend {
                listen,
                lifetime_secs,
            } => return backend(listen, Duration::from_secs(lifetime_secs)).await,
            Cmd::Throughput {
                common,
                streams,
                secs,
            } => throughput(&common, streams, secs).await?,
            Cmd::Latency {
                common,
                conns,
                msgs,
                size,
                max_secs,
            } => latency(&common, conns, msgs, size, max_secs).await?,
            Cmd::Connrate {
                common,
                concurrency,
                secs,
                max_conns,
                src_net,
            } => connrate(&common, concurrency, secs, max_conns, src_net).await?,
            Cmd::Idle {
                common,
                conns,
                sources,
                src_net,
                settle_secs,
            } => idle(&common, conns, sources, src_net, settle_secs).await?,
            Cmd::Mission {
                common,
                clients,
                rate,
                secs,
                src_net,
                require_sticky,
            } => {
                let record = mission(&common, clients, rate, secs, src_net).await?;
                println!("{record}");
                if require_sticky && record["sticky_clients"] != record["clients"] {
                    bail!(
                        "stickiness broken for {}: {} of {} clients had all their sockets on one backend",
                        common.label,
                        record["sticky_clients"],
                        record["clients"]
                    );
                }
                return Ok(());
            }
            Cmd::Upgrade {
                common,
                conns,
                src_net,
                interval_ms,
                api,
                before_secs,
                after_secs,
            } => {
                let plan = upgrade::Plan {
                    conns,
                    src_net,
                    interval: Duration::from_millis(interval_ms),
                    api,
                    before: Duration::from_secs_f64(before_secs),
                    after: Duration::from_secs_f64(after_secs),
                };
                upgrade::run(&common, plan).await?
            }
            Cmd::Report { .. } => unreachable!("handled above"),
        };
        println!("{record}");
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// Backends

async fn backend(listen: Vec<SocketAddr>, lifetime: Duration) -> Result<()> {
    let mut tasks = JoinSet::new();
    for (index, addr) in listen.into_iter().enumerate() {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("backend cannot listen on {addr}"))?;
        let id = b'0' + index as u8;
        tasks.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                tokio::spawn(async move {
                    let _ = serve_backend(stream, id).await;
                });
            }
        });
    }
    eprintln!("backends ready");
    // Bounded: run.sh kills us by PID when done; this is the backstop.
    tokio::time::sleep(lifetime).await;
    Ok(())
}

async fn serve_backend(mut stream: TcpStream, id: u8) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut mode = [0u8; 1];
    if stream.read(&mut mode).await? == 0 {
        return Ok(()); // a health probe or a closed client
    }
    let mut buffer = vec![0u8; 64 * 1024];
    match mode[0] {
        b'D' => {
            let mut total = 0u64;
            loop {
                let n = stream.read(&mut buffer).await?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            stream.write_all(&total.to_le_bytes()).await?;
            stream.shutdown().await
        }
        m @ (b'E' | b'I') => {
            if m == b'I' {
                stream.write_all(&[id]).await?;
            }
            loop {
                let n = stream.read(&mut buffer).await?;
                if n == 0 {
                    return stream.shutdown().await;
                }
                stream.write_all(&buffer[..n]).await?;
            }
        }
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// Clients

async fn connect_from(src: Option<IpAddr>, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(src) = src {
        // The port is picked at connect(), per (source, destination), where the kernel
        // may reuse a TIME_WAIT port; picked at bind() it must be free of every socket,
        // and after a few rounds of the connection-rate test the search through ~28,000
        // ports in TIME_WAIT slowed the clients down, not the proxy.
        nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::IpBindAddressNoPort,
            &true,
        )
        .map_err(std::io::Error::from)?;
        socket.bind(SocketAddr::new(src, 0))?;
    }
    let stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(target))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// 127.<net>.x.y for client `index` (y in 1..=250, never .0 or .255).
fn source(net: u8, index: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        net,
        (index / 250) as u8,
        (index % 250 + 1) as u8,
    ))
}

async fn throughput(common: &Common, streams: usize, secs: f64) -> Result<Value> {
    let target = common.target[0];
    let cpu0 = common.cpu_secs();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = JoinSet::new();
    for _ in 0..streams {
        tasks.spawn(async move {
            let mut stream = connect_from(None, target).await?;
            stream.write_all(b"D").await?;
            let chunk = vec![0x5au8; 256 * 1024];
            let mut sent = 0u64;
            while Instant::now() < deadline {
                stream.write_all(&chunk).await?;
                sent += chunk.len() as u64;
            }
            stream.shutdown().await?;
            let mut count = [0u8; 8];
            tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut count))
                .await
                .context("backend count timed out")??;
            let received = u64::from_le_bytes(count);
            if received != sent {
                bail!("sent {sent} bytes, backend received {received}");
            }
            anyhow::Ok(received)
        });
    }
    let mut bytes = 0u64;
    while let Some(result) = tasks.join_next().await {
        bytes += result??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = common.cpu_secs().zip(cpu0).map(|(b, a)| b - a);
    let gb = bytes as f64 / 1e9;
    Ok(common.record(
        "throughput",
        json!({
            "streams": streams,
            "bytes": bytes,
            "secs": elapsed,
            "gbps": bytes as f64 * 8.0 / elapsed / 1e9,
            "cpu_s": cpu,
            "cpu_s_per_gb": cpu.map(|c| c / gb),
        }),
    ))
}

async fn latency(
    common: &Common,
    conns: usize,
    msgs: usize,
    size: usize,
    max_secs: f64,
) -> Result<Value> {
    let target = common.target[0];
    let deadline = Instant::now() + Duration::from_secs_f64(max_secs);
    let warmup = (msgs / 20).max(10);
    let mut tasks = JoinSet::new();
    for _ in 0..conns {
        tasks.spawn(async move {
            let mut stream = connect_from(None, target).await?;
            stream.write_all(b"E").await?;
            let message = vec![0x42u8; size];
            let mut reply = vec![0u8; size];
            let mut samples = Vec::with_capacity(msgs);
            for i in 0..warmup + msgs {
                if Instant::now() > deadline {
                    break;
                }
                let t = Instant::now();
                stream.write_all(&message).await?;
                stream.read_exact(&mut reply).await?;
                if i >= warmup {
                    samples.push(t.elapsed().as_nanos() as u64);
                }
            }
            anyhow::Ok(samples)
        });
    }
    let mut samples = Vec::new();
    while let Some(result) = tasks.join_next().await {
        samples.extend(result??);
    }
    if samples.is_empty() {
        bail!("no latency samples");
    }
    samples.sort_unstable();
    let pct = |p: f64| percentile(&samples, p).unwrap_or(0) as f64 / 1000.0;
    Ok(common.record(
        "latency",
        json!({
            "conns": conns,
            "samples": samples.len(),
            "p50_us": pct(0.50),
            "p99_us": pct(0.99),
            "p999_us": pct(0.999),
            "max_us": *samples.last().unwrap() as f64 / 1000.0,
        }),
    ))
}

/// The `p` quantile (0..=1) of `sorted` samples; `None` without samples.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[((sorted.len() as f64 * p) as usize).min(last)])
}

async fn connrate(
    common: &Common,
    concurrency: usize,
    secs: f64,
    max_conns: u64,
    src_net: u8,
) -> Result<Value> {
    let target = common.target[0];
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let cpu0 = common.cpu_secs();
    let mut tasks = JoinSet::new();
    for index in 0..concurrency {
        let (done, errors) = (done.clone(), errors.clone());
        let src = source(src_net, index as u32);
        tasks.spawn(async move {
            let mut first_error = None;
            // Each connection's time from connect to the echo read: where a proxy
            // stalls a connection, not only how many it serves.
            let mut samples_us = Vec::new();
            while Instant::now() < deadline && done.load(Ordering::Relaxed) < max_conns {
                let began = Instant::now();
                let one = async {
                    let mut stream = connect_from(Some(src), target).await?;
                    stream.write_all(b"Eping-0123456789").await?;
                    let mut reply = [0u8; 15];
                    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut reply))
                        .await
                        .map_err(|_| {
                            std::io::Error::new(std::io::ErrorKind::TimedOut, "echo timed out")
                        })??;
                    if &reply != b"ping-0123456789" {
                        return Err(std::io::Error::other("wrong echo"));
                    }
                    std::io::Result::Ok(())
                };
                match one.await {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        samples_us.push(began.elapsed().as_micros() as u64);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert(e.to_string());
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (first_error, samples_us)
        });
    }
    let mut first_error = None;
    let mut samples_us = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let (error, samples) = result?;
        if let Some(e) = error {
            first_error.get_or_insert(e);
        }
        samples_us.extend(samples);
    }
    samples_us.sort_unstable();
    let pct = |p: f64| percentile(&samples_us, p);
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = common.cpu_secs().zip(cpu0).map(|(b, a)| b - a);
    let done = done.load(Ordering::Relaxed);
    Ok(common.record(
        "connrate",
        json!({
            "concurrency": concurrency,
            "conns": done,
            "errors": errors.load(Ordering::Relaxed),
            "first_error": first_error,
            "secs": elapsed,
            "conn_per_s": done as f64 / elapsed,
            "cpu_s": cpu,
            "cpu_us_per_conn": cpu.map(|c| c * 1e6 / done.max(1) as f64),
            "conn_p50_us": pct(0.50),
            "conn_p99_us": pct(0.99),
            "conn_max_us": samples_us.last(),
        }),
    ))
}

async fn idle(
    common: &Common,
    conns: usize,
    sources: u32,
    src_net: u8,
    settle_secs: f64,
) -> Result<Value> {
    let target = common.target[0];
    let settle = Duration::from_secs_f64(settle_secs);
    tokio::time::sleep(settle).await;
    let before = common.rss_kib();
    let started = Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = JoinSet::new();
    for i in 0..conns {
        let limit = limit.clone();
        let src = source(src_net, i as u32 % sources.max(1));
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let mut stream = connect_from(Some(src), target).await?;
            // One byte each way: a connection that has spoken and then went idle.
            stream.write_all(b"Ex").await?;
            let mut reply = [0u8; 1];
            tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut reply))
                .await
                .context("echo timed out")??;
            anyhow::Ok(stream)
        });
    }
    let mut held = Vec::with_capacity(conns);
    let mut errors = 0;
    let mut first_error = None;
    let open = async {
        while let Some(result) = tasks.join_next().await {
            match result? {
                Ok(stream) => held.push(stream),
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(120), open)
        .await
        .context("opening idle connections took over 120 s")??;
    let open_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    let after = common.rss_kib();
    let n = held.len();
    drop(held);
    let delta = after.zip(before).map(|(a, b)| a as f64 - b as f64);
    Ok(common.record(
        "idle",
        json!({
            "conns": n,
            "errors": errors,
            "first_error": first_error,
            "open_secs": open_secs,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_conn": delta.map(|d| d / n.max(1) as f64),
        }),
    ))
}

async fn mission(
    common: &Common,
    clients: u32,
    rate: usize,
    secs: f64,
    src_net: u8,
) -> Result<Value> {
    let targets = common.target.clone();
    // Phase 1: every client opens one socket per port, all at once, and learns which
    // backend each reached.
    let connect_start = Instant::now();
    let mut tasks = JoinSet::new();
    for c in 0..clients {
        let targets = targets.clone();
        let src = source(src_net, c);
        tasks.spawn(async move {
            let mut sockets = JoinSet::new();
            for (k, target) in targets.into_iter().enumerate() {
                sockets.spawn(async move {
                    let mut stream = connect_from(Some(src), target).await?;
                    stream.write_all(b"I").await?;
                    let mut id = [0u8; 1];
                    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut id))
                        .await
                        .context("no backend id")??;
                    anyhow::Ok((k, id[0], stream))
                });
            }
            let mut got = Vec::new();
            while let Some(result) = sockets.join_next().await {
                got.push(result??);
            }
            got.sort_by_key(|g| g.0);
            anyhow::Ok((c, got))
        });
    }
    let mut connected = Vec::new();
    let mut errors = 0u64;
    let mut first_error = None;
    let phase1 = async {
        while let Some(result) = tasks.join_next().await {
            match result? {
                Ok(client) => connected.push(client),
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(60), phase1)
        .await
        .context("connecting the mission clients took over 60 s")??;
    let connect_secs = connect_start.elapsed().as_secs_f64();

    let mut sticky = 0u32;
    let mut per_backend: BTreeMap<String, u32> = BTreeMap::new();
    for (_, sockets) in &connected {
        let first = sockets[0].1;
        if sockets.iter().all(|s| s.1 == first) {
            sticky += 1;
        }
        for s in sockets {
            *per_backend
                .entry(format!("backend{}", s.1 as char))
                .or_default() += 1;
        }
    }

    // Phase 2: every socket sends `rate` bytes/s in 10 chunks a second; the backend
    // echoes them. CPU is measured over this phase only.
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let chunk = rate / 10;
    let cpu0 = common.cpu_secs();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut streams = JoinSet::new();
    for (_, sockets) in connected {
        for (_, _, stream) in sockets {
            let (sent, received) = (sent.clone(), received.clone());
            streams.spawn(async move {
                let (mut rd, mut wr) = stream.into_split();
                let reader = tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut got = 0u64;
                    loop {
                        match rd.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got += n as u64,
                        }
                    }
                    received.fetch_add(got, Ordering::Relaxed);
                    got
                });
                let payload = vec![0x33u8; chunk];
                let mut ticker = tokio::time::interval(Duration::from_millis(100));
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut mine = 0u64;
                while Instant::now() < deadline {
                    ticker.tick().await;
                    if wr.write_all(&payload).await.is_err() {
                        break;
                    }
                    mine += chunk as u64;
                }
                sent.fetch_add(mine, Ordering::Relaxed);
                let _ = wr.shutdown().await;
                let got = tokio::time::timeout(Duration::from_secs(10), reader)
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .unwrap_or(0);
                (mine, got)
            });
        }
    }
    let mut short = 0u64;
    while let Some(result) = streams.join_next().await {
        let (mine, got) = result?;
        if got != mine {
            short += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = common.cpu_secs().zip(cpu0).map(|(b, a)| b - a);
    Ok(common.record(
        "mission",
        json!({
            "clients": clients,
            "connected_clients": clients as u64 - errors,
            "sockets_per_client": targets.len(),
            "errors": errors,
            "first_error": first_error,
            "connect_secs": connect_secs,
            "secs": elapsed,
            "rate_per_socket": rate,
            "bytes_sent": sent.load(Ordering::Relaxed),
            "bytes_received": received.load(Ordering::Relaxed),
            "sockets_short": short,
            "sticky_clients": sticky,
            "sticky_pct": 100.0 * sticky as f64 / clients.max(1) as f64,
            "per_backend_sockets": per_backend,
            "cpu_s": cpu,
            "cpu_pct": cpu.map(|c| 100.0 * c / elapsed),
        }),
    ))
}
