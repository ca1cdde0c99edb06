//! `Node`: the real `ballast` binary as a child process.
//!
//! `Node::new().frontend(..).backend(..).spawn()` writes a config in DESIGN.md's format into
//! a tempdir, runs `ballast run --config FILE` with `RUST_LOG=info` and stdout/stderr going
//! to `ballast.log` in that tempdir, and waits (at most 20 s) for `GET /readyz` to answer
//! 200. On drop the child is killed by its PID; if the test is panicking, the log's tail is
//! printed first so the failure explains itself.

use std::fmt::Write as _;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use super::http;

/// How long `spawn` waits for `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Path of the binary under test, built by Cargo for this integration test.
pub fn ballast_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ballast")
}

/// Allocates `n` consecutive ports that are free on 127.0.0.1 right now.
///
/// Ports come from 20000..32000, below Linux's ephemeral range (32768..60999), so that
/// kernel-chosen source ports of our own connections never take them. A per-process
/// counter keeps the tests of one run apart; a trial bind skips ports used by others.
pub fn alloc_ports(n: u16) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = 20000 + (std::process::id() % 200) as u16 * 50;
    for _ in 0..2000 {
        let off = NEXT.fetch_add(n, Ordering::SeqCst);
        let base = 20000 + (start - 20000 + off) % 12000;
        if u32::from(base) + u32::from(n) >= 32000 {
            continue;
        }
        let all_free = (base..base + n).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no {n} consecutive free ports found in 20000..32000");
}

/// One `[[frontend]]`: its binds are `127.0.0.1:P` or the range `127.0.0.1:P-Q`.
pub struct FrontendCfg {
    name: String,
    backend: String,
    ports: u16,
    extra_binds: Vec<String>,
    keys: Vec<(String, String)>,
}

impl FrontendCfg {
    pub fn new(name: &str, backend: &str) -> Self {
        FrontendCfg {
            name: name.into(),
            backend: backend.into(),
            ports: 1,
            extra_binds: Vec::new(),
            keys: Vec::new(),
        }
    }

    /// Sets `key = value` where `value` is raw TOML (strings need their quotes).
    pub fn set(mut self, key: &str, raw_value: &str) -> Self {
        self.keys.push((key.into(), raw_value.into()));
        self
    }

    /// Bind `n` consecutive ports, written as one range `"127.0.0.1:P-P+n-1"`.
    pub fn ports(mut self, n: u16) -> Self {
        self.ports = n;
        self
    }

    /// One more entry in `bind`, verbatim (e.g. `"198.18.0.100:20001"`); not listed by
    /// [`Node::addr`].
    pub fn also_bind(mut self, bind: &str) -> Self {
        self.extra_binds.push(bind.into());
        self
    }
}

/// One `[[backend]]`, built from raw TOML values.
pub struct BackendCfg {
    name: String,
    keys: Vec<(String, String)>,
    servers: Vec<String>,
}

impl BackendCfg {
    pub fn new(name: &str) -> Self {
        BackendCfg {
            name: name.into(),
            keys: Vec::new(),
            servers: Vec::new(),
        }
    }

    /// Sets `key = value` where `value` is raw TOML (strings need their quotes).
    pub fn set(mut self, key: &str, raw_value: &str) -> Self {
        self.keys.push((key.into(), raw_value.into()));
        self
    }

    pub fn balance(self, algo: &str) -> Self {
        self.set("balance", &format!("{algo:?}"))
    }

    pub fn stick_src(self) -> Self {
        self.stick(200_000, "16h")
    }

    pub fn stick(self, size: usize, expire: &str) -> Self {
        self.set(
            "stick",
            &format!("{{ on = \"src\", size = {size}, expire = {expire:?} }}"),
        )
    }

    pub fn timeout_queue(self, d: &str) -> Self {
        self.set("timeout_queue", &format!("{d:?}"))
    }

    pub fn health(self, interval: &str, timeout: &str, rise: u32, fall: u32) -> Self {
        self.set(
            "health",
            &format!(
                "{{ kind = \"tcp\", interval = {interval:?}, timeout = {timeout:?}, \
                 rise = {rise}, fall = {fall} }}"
            ),
        )
    }

    pub fn server(self, name: &str, addr: SocketAddr) -> Self {
        self.server_with(name, addr, "")
    }

    /// A server with extra inline-table keys, e.g. `"maxconn = 2"` or `"weight = 3"`.
    pub fn server_with(mut self, name: &str, addr: SocketAddr, extra: &str) -> Self {
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(", {extra}")
        };
        self.servers.push(format!(
            "  {{ name = {name:?}, addr = \"{addr}\"{extra} }},"
        ));
        self
    }
}

#[derive(Default)]
pub struct NodeBuilder {
    frontends: Vec<FrontendCfg>,
    backends: Vec<BackendCfg>,
}

pub struct Node {
    child: Child,
    _dir: tempfile::TempDir,
    log: PathBuf,
    api: SocketAddr,
    frontends: Vec<(String, Vec<SocketAddr>)>,
}

impl Node {
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// The `i`-th port of frontend `name` (0-based, in bind order).
    pub fn addr(&self, frontend: &str, i: usize) -> SocketAddr {
        let (_, addrs) = self
            .frontends
            .iter()
            .find(|(n, _)| n == frontend)
            .unwrap_or_else(|| panic!("no frontend {frontend:?}"));
        addrs[i]
    }

    /// GET /metrics (panics if the API does not answer 200).
    pub fn metrics(&self) -> String {
        match http::get(self.api, "/metrics") {
            Ok((200, body)) => body,
            Ok((status, body)) => panic!("GET /metrics answered {status}: {body}"),
            Err(e) => panic!("GET /metrics failed: {e}"),
        }
    }

    /// One sample of `name` with (at least) these labels, from a fresh /metrics.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        http::metric_value(&self.metrics(), name, labels)
    }

    /// Polls /metrics every 50 ms until the sample satisfies `pred`, for at most `within`.
    /// Returns the satisfying value; panics with the last value seen otherwise.
    pub async fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        within: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let v = self.metric(name, labels);
            if let Some(v) = v.filter(|v| pred(*v)) {
                return v;
            }
            if Instant::now() >= deadline {
                panic!("metric {name}{labels:?}: last value {v:?} did not meet the condition within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The node's whole log (stdout + stderr) with ANSI colour codes removed.
    pub fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// GET `path` on the node's API: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http::get(self.api, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// The last `lines` lines of the node's log (stdout + stderr).
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- ballast log tail ({}) ----\n{}\n---- end of log ----",
                self.log.display(),
                self.log_tail(60)
            );
        }
        // Child::kill sends SIGKILL to this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes `ESC [ ... <letter>` sequences.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl NodeBuilder {
    pub fn frontend(mut self, f: FrontendCfg) -> Self {
        self.frontends.push(f);
        self
    }

    pub fn backend(mut self, b: BackendCfg) -> Self {
        self.backends.push(b);
        self
    }

    /// Writes the config, starts `ballast run`, waits for /readyz (at most 20 s).
    pub fn spawn(self) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("ballast-e2e-")
            .tempdir()
            .expect("tempdir");
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let api: SocketAddr = ([127, 0, 0, 1], alloc_ports(1)).into();

        let mut cfg = String::new();
        writeln!(
            cfg,
            "[node]\nid = 1\ndata_dir = {:?}",
            data_dir.display().to_string()
        )
        .unwrap();
        writeln!(cfg, "api_listen = \"{api}\"\n").unwrap();
        let mut frontends = Vec::new();
        for f in &self.frontends {
            let base = alloc_ports(f.ports);
            let mut binds = vec![if f.ports == 1 {
                format!("127.0.0.1:{base}")
            } else {
                format!("127.0.0.1:{base}-{}", base + f.ports - 1)
            }];
            binds.extend(f.extra_binds.iter().cloned());
            writeln!(
                cfg,
                "[[frontend]]\nname = {:?}\nbind = {binds:?}\nbackend = {:?}",
                f.name, f.backend
            )
            .unwrap();
            for (k, v) in &f.keys {
                writeln!(cfg, "{k} = {v}").unwrap();
            }
            cfg.push('\n');
            let addrs = (base..base + f.ports)
                .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
                .collect();
            frontends.push((f.name.clone(), addrs));
        }
        for b in &self.backends {
            writeln!(cfg, "[[backend]]\nname = {:?}", b.name).unwrap();
            for (k, v) in &b.keys {
                writeln!(cfg, "{k} = {v}").unwrap();
            }
            writeln!(cfg, "servers = [\n{}\n]\n", b.servers.join("\n")).unwrap();
        }
        let config = dir.path().join("ballast.toml");
        std::fs::write(&config, &cfg).expect("write config");

        let log = dir.path().join("ballast.log");
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file clone");
        let child = Command::new(ballast_bin())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start ballast");
        let mut node = Node {
            child,
            _dir: dir,
            log,
            api,
            frontends,
        };

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!(
                    "ballast exited early with {status}\nconfig:\n{cfg}\nlog:\n{}",
                    node.log_tail(60)
                );
            }
            if let Ok((200, _)) = http::get(api, "/readyz") {
                return node;
            }
            if Instant::now() >= deadline {
                panic!("ballast not ready within {READY_TIMEOUT:?}\nconfig:\n{cfg}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
