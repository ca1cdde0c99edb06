//! Model changes and the journal at scale (issue 22). Prints, and appends to a results
//! file when given `--out FILE`:
//!
//! 1. journal: the node's own [`Journal`] at `JOURNAL_CAPACITY` (1,000,000), filled with
//!    1,000,000 pending decisions of distinct clients and no flusher (= no quorum), then
//!    2,000 more new clients: the time of each `stick()` call, p50/p99/max (the call a
//!    connection makes for a new client). The same at 10,000 and 100,000 pending entries,
//!    to show whether the cost grows with the journal.
//! 2. model changes at 200,000 stick entries, on a real single-node `ballast run` (the
//!    binary next to this example, or `--ballast PATH`) with one backend
//!    (`stick = { on = "src", size = 250000 }`) of four echo servers run by this program:
//!    - the replicated table is filled with 200,000 entries through the API
//!      (`POST /v1/backends/b/stick`, committed through Raft in chunks of 1,024), then the
//!      node is restarted on the same data dir: its data plane imports the replicated
//!      table at start, so both the state machine and the data plane's table hold
//!      200,000 entries (checked on `ballast_stick_entries`) — the state a node reaches
//!      when its clients made those decisions, without 200,000 connections;
//!    - new-connection time (connect → first echo byte; every connection from a source
//!      address of its own in 127.0.0.0/8, so a new client and a stick decision) p50/p99,
//!      once with no admin change and once while 100 admin changes run through the API
//!      (`POST /v1/backends/b/servers/s1/state`, drain and ready in turn);
//!    - the time each admin change takes to answer (the API answers once the node's data
//!      plane has applied it).
//!
//! Build and run (the example starts the `ballast` binary of the same build):
//! `cargo build --release -p ballast --bin ballast --example model-change-bench &&
//!  target/release/examples/model-change-bench [--part journal|model] [--out FILE]`.
//! Every loop is bounded in count and time; only loopback is used.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_dataplane::proxy::ReplicationSink;
use ballast_node::cluster::{Journal, JOURNAL_CAPACITY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STICK_ENTRIES: u32 = 200_000;
const STICK_SIZE: u32 = 250_000;
const ADMIN_CHANGES: usize = 100;
const NEW_CLIENTS: u32 = 2_000;
const TOKEN: &str = "bench-token-0123456789";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A new client's `stick()` on a journal holding `pending` decisions at capacity.
fn journal_row(pending: u32) -> String {
    let journal = Journal::new(pending as usize);
    let backend: Arc<str> = Arc::from("b");
    let servers: Vec<Arc<str>> = ["s1", "s2", "s3"].iter().map(|s| Arc::from(*s)).collect();
    let key = |n: u32| IpAddr::V4(Ipv4Addr::from(0x7f00_0000 + n));
    let fill = Instant::now();
    for n in 0..pending {
        journal.stick(
            &backend,
            key(n),
            &servers[(n % 3) as usize],
            1_000 + u64::from(n),
        );
    }
    let fill = fill.elapsed();
    assert_eq!(journal.len(), pending as usize, "journal filled");
    let mut times = Vec::with_capacity(NEW_CLIENTS as usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    for n in 0..NEW_CLIENTS {
        let k = key(pending + n);
        let server = &servers[(n % 3) as usize];
        let at = 1_000 + u64::from(pending + n);
        let t0 = Instant::now();
        journal.stick(&backend, k, server, at);
        times.push(t0.elapsed());
        if Instant::now() > deadline {
            break;
        }
    }
    assert_eq!(
        journal.len(),
        pending as usize,
        "the journal stays at capacity"
    );
    times.sort();
    format!(
        "| journal at capacity, {pending} pending (no quorum): a new client's stick() ({} calls; fill {:.1} s) | p50 {:.1} µs | p99 {:.1} µs | max {:.1} µs |",
        times.len(),
        fill.as_secs_f64(),
        us(percentile(&times, 0.50)),
        us(percentile(&times, 0.99)),
        us(times.last().copied().unwrap_or_default()),
    )
}

// ---------------------------------------------------------------------------------------
// The real node.

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn ballast_bin() -> PathBuf {
    if let Some(p) = std::env::args().skip_while(|a| a != "--ballast").nth(1) {
        return PathBuf::from(p);
    }
    // target/<profile>/examples/model-change-bench → target/<profile>/ballast
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("ballast")
}

/// The node as a child process, killed by its PID on drop.
struct NodeProc {
    child: Child,
    log: PathBuf,
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    api: SocketAddr,
    frontend: SocketAddr,
}

impl Setup {
    fn new(servers: &[SocketAddr]) -> anyhow::Result<Setup> {
        let dir = tempfile::Builder::new()
            .prefix("ballast-model-bench-")
            .tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        let token = dir.path().join("token");
        std::fs::write(&token, TOKEN)?;
        let api: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let frontend: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let servers: Vec<String> = servers
            .iter()
            .enumerate()
            .map(|(i, a)| format!("  {{ name = \"s{}\", addr = \"{a}\" }},", i + 1))
            .collect();
        let cfg = format!(
            "[node]\nid = 1\ndata_dir = {data:?}\napi_listen = \"{api}\"\ntoken_file = {token:?}\n\n\
             [[frontend]]\nname = \"f\"\nbind = [\"{frontend}\"]\nbackend = \"b\"\n\n\
             [[backend]]\nname = \"b\"\nbalance = \"roundrobin\"\n\
             stick = {{ on = \"src\", size = {STICK_SIZE}, expire = \"16h\" }}\n\
             servers = [\n{}\n]\n",
            servers.join("\n"),
            data = data.display().to_string(),
            token = token.display().to_string(),
        );
        let config = dir.path().join("ballast.toml");
        std::fs::write(&config, cfg)?;
        Ok(Setup {
            dir,
            config,
            api,
            frontend,
        })
    }

    fn spawn(&self, run: u32) -> anyhow::Result<NodeProc> {
        let log = self.dir.path().join(format!("ballast-{run}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(ballast_bin())
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        let mut node = NodeProc { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = node.child.try_wait()? {
                anyhow::bail!(
                    "ballast exited with {status}: {}",
                    std::fs::read_to_string(&node.log).unwrap_or_default()
                );
            }
            if http(self.api, "GET", "/readyz", "").is_ok_and(|(s, _)| s == 200) {
                return Ok(node);
            }
            anyhow::ensure!(Instant::now() < deadline, "node not ready within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ballast_stick_entries{backend="b"}`: the data plane's table.
    fn plane_entries(&self) -> Option<u64> {
        let (_, body) = http(self.api, "GET", "/metrics", "").ok()?;
        body.lines()
            .find(|l| l.starts_with("ballast_stick_entries{") && l.contains("backend=\"b\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
    }
}

/// A minimal blocking HTTP/1.1 request (Connection: close): (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Echo servers: every byte read is written back.
async fn echo_servers(n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let mut addrs = Vec::new();
    for _ in 0..n {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(l.local_addr()?);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 512];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }
    Ok(addrs)
}

/// Measurement clients: 127.16.0.0 onwards, one address per connection.
fn client_ip(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x7f10_0000 + n)
}

/// One new client: connect from `src`, send a byte, wait for it back.
async fn connect_once(frontend: SocketAddr, src: Ipv4Addr) -> anyhow::Result<Duration> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
    let t0 = Instant::now();
    let mut s = tokio::time::timeout(Duration::from_secs(5), sock.connect(frontend)).await??;
    s.write_all(b"x").await?;
    let mut b = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b)).await??;
    Ok(t0.elapsed())
}

/// Connections one after another until `stop` (or `max`, or `within`); their times.
async fn client_loop(
    frontend: SocketAddr,
    first: u32,
    max: u32,
    within: Duration,
    stop: Arc<AtomicBool>,
) -> (Vec<Duration>, u32) {
    let deadline = Instant::now() + within;
    let mut times = Vec::new();
    let mut failed = 0;
    for n in first..first + max {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            break;
        }
        match connect_once(frontend, client_ip(n)).await {
            Ok(t) => times.push(t),
            Err(_) => failed += 1,
        }
    }
    (times, failed)
}

fn conn_row(label: &str, mut times: Vec<Duration>, failed: u32) -> String {
    times.sort();
    format!(
        "| new-connection time, connect → first echo byte, {label} ({} connections, {failed} failed) | p50 {:.2} ms | p99 {:.2} ms | max {:.2} ms |",
        times.len(),
        ms(percentile(&times, 0.50)),
        ms(percentile(&times, 0.99)),
        ms(times.last().copied().unwrap_or_default()),
    )
}

async fn model_rows(line: &mut impl FnMut(String)) -> anyhow::Result<()> {
    let servers = echo_servers(4).await?;
    let setup = Setup::new(&servers)?;
    let api = setup.api;

    // Fill the replicated table through the API, then restart: the plane imports it.
    let node = setup.spawn(1)?;
    let started = Instant::now();
    let chunk = 50_000u32;
    for c in 0..STICK_ENTRIES / chunk {
        let entries: Vec<String> = (c * chunk..(c + 1) * chunk)
            .map(|i| {
                let ip = Ipv4Addr::from(0x7f01_0000 + i);
                format!("{{\"key\":\"{ip}\",\"server\":\"s{}\"}}", i % 4 + 1)
            })
            .collect();
        let body = format!("{{\"entries\":[{}]}}", entries.join(","));
        let (status, answer) =
            tokio::task::spawn_blocking(move || http(api, "POST", "/v1/backends/b/stick", &body))
                .await??;
        anyhow::ensure!(status == 200, "stick import answered {status}: {answer}");
    }
    let imported = started.elapsed();
    drop(node);
    let node = setup.spawn(2)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = setup.plane_entries().unwrap_or(0);
        if n >= u64::from(STICK_ENTRIES) {
            line(format!(
                "\nstick table: {STICK_ENTRIES} entries imported through the API in {:.1} s; after the restart the data plane holds {n} (size {STICK_SIZE})\n",
                imported.as_secs_f64()
            ));
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the data plane holds {n} entries, not {STICK_ENTRIES}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    line("| measure | p50 | p99 | max |\n|---|---|---|---|".to_string());

    // Warm-up, then no admin change.
    let never = Arc::new(AtomicBool::new(false));
    let _ = client_loop(
        setup.frontend,
        0,
        200,
        Duration::from_secs(30),
        never.clone(),
    )
    .await;
    let (times, failed) =
        client_loop(setup.frontend, 1_000, 2_000, Duration::from_secs(60), never).await;
    line(conn_row("no admin change", times, failed));

    // 100 admin changes, one after another, while the client loop runs.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = tokio::spawn(client_loop(
        setup.frontend,
        10_000,
        40_000,
        Duration::from_secs(300),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let admin = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(240);
        let mut times = Vec::new();
        for i in 0..ADMIN_CHANGES {
            let state = if i % 2 == 0 { "drain" } else { "ready" };
            let t0 = Instant::now();
            let (status, body) = http(
                api,
                "POST",
                "/v1/backends/b/servers/s1/state",
                &format!("{{\"admin\":\"{state}\"}}"),
            )?;
            anyhow::ensure!(status == 200, "admin change answered {status}: {body}");
            times.push(t0.elapsed());
            if Instant::now() > deadline {
                break;
            }
        }
        Ok(times)
    })
    .await??;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let (times, failed) = clients.await?;
    line(conn_row(
        &format!("during {} admin changes", admin.len()),
        times,
        failed,
    ));
    let mut admin = admin;
    admin.sort();
    line(format!(
        "| admin change (POST …/servers/s1/state, answered once applied), {} changes | p50 {:.1} ms | p99 {:.1} ms | max {:.1} ms |",
        admin.len(),
        ms(percentile(&admin, 0.50)),
        ms(percentile(&admin, 0.99)),
        ms(admin.last().copied().unwrap_or_default()),
    ));
    line(format!(
        "\ndata plane stick entries at the end: {}",
        setup.plane_entries().unwrap_or(0)
    ));
    drop(node);
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = args.iter().skip_while(|a| *a != "--out").nth(1).cloned();
    let part = args
        .iter()
        .skip_while(|a| *a != "--part")
        .nth(1)
        .cloned()
        .unwrap_or_else(|| "all".into());
    let mut report = String::new();
    let mut line = |text: String| {
        println!("{text}");
        report.push_str(&text);
        report.push('\n');
    };
    line(format!(
        "# Ballast model changes and the journal at scale\n\nmachine: {} cores; release build: {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        !cfg!(debug_assertions)
    ));
    if part == "all" || part == "journal" {
        line("| measure | p50 | p99 | max |\n|---|---|---|---|".to_string());
        for pending in [10_000, 100_000, JOURNAL_CAPACITY as u32] {
            let row = tokio::task::spawn_blocking(move || journal_row(pending)).await?;
            line(row);
        }
    }
    if part == "all" || part == "model" {
        model_rows(&mut line).await?;
    }
    if let Some(path) = out {
        std::fs::write(&path, &report)?;
        println!("\nwritten to {path}");
    }
    Ok(())
}
