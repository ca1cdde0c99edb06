//! `Node`: the real `ballast` binary as a child process.
//!
//! `Node::new().frontend(..).backend(..).spawn()` writes a config in DESIGN.md's format into
//! a tempdir, runs `ballast run --config FILE` with `RUST_LOG=info` and stdout/stderr going
//! to `ballast.log` in that tempdir, and waits (at most 20 s) for `GET /readyz` to answer
//! 200. On drop the child is killed by its PID; if the test is panicking, the log's tail is
//! printed first so the failure explains itself.
//!
//! Live upgrades (issue 19) replace the process serving a node, so for them:
//! - `.binary_copy()` runs the node from a copy of the binary in its tempdir
//!   ([`Node::binary_path`]), which the test may replace ([`Node::install_real_binary`],
//!   atomically, so the running image shows `(deleted)`), swap for a script
//!   ([`Node::install_script`]) or remove ([`Node::remove_binary`]);
//! - `.token()` gives the node a `token_file` (API writes, `ballast ctl upgrade`);
//! - [`Node::pid`] / [`Node::status`] read `GET /v1/status` → `process`: the PID serving
//!   now, which after an upgrade is not the child the harness spawned;
//! - on drop, every process of the node is killed by PID with SIGKILL: the child spawned,
//!   the one serving now (from `/v1/status`, 1 s timeout), the PIDs the test recorded
//!   ([`Node::track_pid`]) and their descendants. Every process the node starts inherits
//!   `BALLAST_E2E_NODE_DIR=<tempdir>`; a recorded PID is killed only while it carries that
//!   mark (in its environment or command line), so a PID reused by a stranger is spared.

use std::fmt::Write as _;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ballast_api::types::Status;

use super::{http, process};

/// How long `spawn` waits for `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The API token of nodes built with [`NodeBuilder::token`] (at least 16 characters).
pub const TOKEN: &str = "e2e-upgrade-token-0123456789";

/// Set in the environment of every node process (inherited by whatever it starts): the
/// node's tempdir, the mark [`Drop for Node`](Node) checks before killing a recorded PID.
const MARK_ENV: &str = "BALLAST_E2E_NODE_DIR";

/// Longest a `ballast ctl` run may take ([`Node::ctl`]).
const CTL_TIMEOUT: Duration = Duration::from_secs(60);

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
    binary_copy: bool,
    token: bool,
}

pub struct Node {
    /// The process the harness spawned: the one serving until the first upgrade.
    child: Mutex<Child>,
    first_pid: u32,
    log: PathBuf,
    api: SocketAddr,
    /// The path the node was started from (canonical).
    binary: PathBuf,
    /// `binary` is the node's own copy, which the test may replace.
    own_binary: bool,
    token_file: Option<PathBuf>,
    /// PIDs the test recorded (e.g. a script's), killed on drop if still the node's.
    tracked: Mutex<Vec<u32>>,
    frontends: Vec<(String, Vec<SocketAddr>)>,
    /// Last: removed after every process is killed.
    dir: tempfile::TempDir,
}

/// What one `ballast ctl` run printed, and how it exited.
#[derive(Debug)]
pub struct CtlOutput {
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CtlOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for CtlOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n-- stdout --\n{}\n-- stderr --\n{}",
            self.code, self.stdout, self.stderr
        )
    }
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

    /// The node's API address (`api_listen`).
    pub fn api(&self) -> SocketAddr {
        self.api
    }

    /// `http://` + the API address, as `ballast ctl --api` takes it.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// The node's tempdir (config, log, data, binary copy); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The path the node was started from (canonical): its own copy with
    /// [`NodeBuilder::binary_copy`], else Cargo's binary.
    pub fn binary_path(&self) -> &Path {
        &self.binary
    }

    /// PID of the process the harness spawned (serving until the first upgrade).
    pub fn first_pid(&self) -> u32 {
        self.first_pid
    }

    /// `GET /v1/status`, typed; `None` if the node does not answer 200 with a status.
    pub fn try_status(&self) -> Option<Status> {
        http::get_typed(self.api, "/v1/status")
    }

    /// `GET /v1/status`, typed (panics with the answer if that fails).
    pub fn status(&self) -> Status {
        self.try_status().unwrap_or_else(|| {
            panic!(
                "GET /v1/status did not answer a status: {:?}",
                http::get(self.api, "/v1/status")
            )
        })
    }

    /// The PID of the process serving the node now (`/v1/status` → `process.pid`).
    pub fn pid(&self) -> u32 {
        self.status().process.pid
    }

    /// Polls `/v1/status` every 100 ms until `pred` holds, for at most `within`; returns
    /// that status. Answers that fail (a node between processes) are retried; panics with
    /// the last status seen otherwise.
    pub async fn wait_status(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&Status) -> bool,
    ) -> Status {
        let deadline = Instant::now() + within;
        let mut last = None;
        loop {
            let api = self.api;
            let st = tokio::task::spawn_blocking(move || {
                http::get_typed_within::<Status>(api, "/v1/status", Duration::from_secs(2))
            })
            .await
            .expect("status poll");
            if let Some(st) = st {
                if pred(&st) {
                    return st;
                }
                last = Some(st);
            }
            if Instant::now() >= deadline {
                panic!(
                    "{what}: not seen within {within:?}; last status: {:?}",
                    last.map(|s| s.process)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Records a PID that belongs to this node (a process it started), so that drop kills
    /// it if it is still there.
    pub fn track_pid(&self, pid: u32) {
        self.tracked.lock().unwrap().push(pid);
    }

    /// The process `pid` no longer runs (no such PID, or a zombie). Reaps the spawned
    /// child when `pid` is its PID (its parent is this process).
    pub fn is_gone(&self, pid: u32) -> bool {
        if pid == self.first_pid {
            return !matches!(self.child.lock().unwrap().try_wait(), Ok(None));
        }
        !process::is_running(pid)
    }

    /// Waits (every 50 ms, at most `within`) until the process `pid` no longer runs.
    pub async fn wait_gone(&self, pid: u32, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.is_gone(pid) {
            if Instant::now() >= deadline {
                panic!(
                    "process {pid} still runs {within:?} later (state {:?}, exe {:?})",
                    process::state(pid),
                    process::exe(pid)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Puts the real binary (Cargo's `ballast`) at [`Node::binary_path`] the way a package
    /// upgrade does: copied to `PATH.new`, then renamed over `PATH`. The running image
    /// keeps the old inode (`/proc/PID/exe` then ends in `(deleted)`). Blocking (a copy of
    /// the whole binary): call it from `tokio::task::block_in_place` in async tests.
    pub fn install_real_binary(&self) {
        self.install_with(|tmp| std::fs::copy(ballast_bin(), tmp).map(drop));
    }

    /// Puts an executable shell script at [`Node::binary_path`] (written to `PATH.new`,
    /// `chmod 755`, renamed over `PATH`).
    pub fn install_script(&self, script: &str) {
        self.install_with(|tmp| std::fs::write(tmp, script));
    }

    /// Removes the file at [`Node::binary_path`] (the running image stays).
    pub fn remove_binary(&self) {
        self.assert_own_binary();
        std::fs::remove_file(&self.binary)
            .unwrap_or_else(|e| panic!("remove {}: {e}", self.binary.display()));
    }

    fn assert_own_binary(&self) {
        assert!(
            self.own_binary,
            "the node runs Cargo's binary: build it with .binary_copy() to replace its binary"
        );
    }

    fn install_with(&self, write: impl FnOnce(&Path) -> std::io::Result<()>) {
        self.assert_own_binary();
        let tmp = self.binary.with_extension("new");
        let _ = std::fs::remove_file(&tmp);
        write(&tmp).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", tmp.display()));
        std::fs::rename(&tmp, &self.binary).unwrap_or_else(|e| {
            panic!(
                "rename {} over {}: {e}",
                tmp.display(),
                self.binary.display()
            )
        });
    }

    /// `POST path` with the node's token (if any) and a JSON body; (status, body).
    /// Blocking, bounded by 60 s per read (an upgrade answers once it is done or failed).
    pub fn post(&self, path: &str, body: &str) -> (u16, String) {
        let token = self.token_file.as_ref().map(|_| TOKEN);
        http::request(self.api, "POST", path, token, body, CTL_TIMEOUT)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// Runs `ballast ctl --api URL [--token-file F] ARGS..` with Cargo's binary (not the
    /// file at [`Node::binary_path`], which a test may have swapped), at most 60 s; killed
    /// if the test gives up on it.
    pub async fn ctl(&self, args: &[&str]) -> CtlOutput {
        let mut cmd = tokio::process::Command::new(ballast_bin());
        cmd.arg("ctl").arg("--api").arg(self.api_url());
        if let Some(t) = &self.token_file {
            cmd.arg("--token-file").arg(t);
        }
        cmd.args(args)
            .env_remove("BALLAST_API")
            .env_remove("BALLAST_TOKEN_FILE")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(CTL_TIMEOUT, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("ballast ctl {args:?}: no exit within {CTL_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("ballast ctl {args:?}: {e}"));
        let out = CtlOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!("$ ballast ctl {}\n{out}", args.join(" "));
        out
    }

    /// SIGKILL to every process of the node: the spawned child (while not reaped), the one
    /// serving now, the recorded PIDs, and the descendants of each.
    fn kill_all(&mut self) {
        let mark = self.dir.path().display().to_string();
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let child_runs = matches!(child.try_wait(), Ok(None));
        let mut roots = Vec::new();
        if let Some(st) =
            http::get_typed_within::<Status>(self.api, "/v1/status", Duration::from_secs(1))
        {
            roots.push(st.process.pid);
        }
        roots.extend(
            self.tracked
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .iter(),
        );
        let mut doomed = Vec::new();
        if child_runs {
            doomed.extend(process::descendants(self.first_pid));
        }
        for pid in roots {
            if pid != self.first_pid && process::carries(pid, &mark) {
                doomed.push(pid);
                doomed.extend(process::descendants(pid));
            }
        }
        doomed.sort_unstable();
        doomed.dedup();
        for pid in doomed {
            if pid != self.first_pid {
                let _ = process::send_signal(pid, process::SIGKILL);
            }
        }
        // Child::kill sends SIGKILL to this child's PID only (a no-op once reaped).
        let _ = child.kill();
        let _ = child.wait();
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
        self.kill_all();
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

    /// Run the node from its own copy of the binary (`<tempdir>/bin/ballast`), which the
    /// test may then replace: see [`Node::install_real_binary`].
    pub fn binary_copy(mut self) -> Self {
        self.binary_copy = true;
        self
    }

    /// Give the node `token_file` (holding [`TOKEN`]): API writes need it.
    pub fn token(mut self) -> Self {
        self.token = true;
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
        writeln!(cfg, "api_listen = \"{api}\"").unwrap();
        let token_file = self.token.then(|| dir.path().join("token"));
        if let Some(path) = &token_file {
            std::fs::write(path, format!("{TOKEN}\n")).expect("token file");
            writeln!(cfg, "token_file = {:?}", path.display().to_string()).unwrap();
        }
        cfg.push('\n');
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

        let (binary, own_binary) = if self.binary_copy {
            let bin_dir = dir.path().join("bin");
            std::fs::create_dir_all(&bin_dir).expect("bin dir");
            let copy = bin_dir.join("ballast");
            std::fs::copy(ballast_bin(), &copy).expect("copy the ballast binary");
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
                .expect("chmod the binary copy");
            (copy, true)
        } else {
            (PathBuf::from(ballast_bin()), false)
        };
        let binary = std::fs::canonicalize(&binary).unwrap_or(binary);

        let log = dir.path().join("ballast.log");
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file clone");
        // A binary copied just now may still be open for writing in a process another
        // test thread forked meanwhile (ETXTBSY until that one execs): retry briefly.
        let mut attempts = 0;
        let child = loop {
            let started = Command::new(&binary)
                .arg("run")
                .arg("--config")
                .arg(&config)
                .env("RUST_LOG", "info")
                .env(MARK_ENV, dir.path())
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("log file clone"))
                .stderr(err.try_clone().expect("log file clone"))
                .spawn();
            match started {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 40 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(25));
                }
                started => break started.expect("start ballast"),
            }
        };
        let node = Node {
            first_pid: child.id(),
            child: Mutex::new(child),
            log,
            api,
            binary,
            own_binary,
            token_file,
            tracked: Mutex::new(Vec::new()),
            frontends,
            dir,
        };

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = node.child.lock().unwrap().try_wait() {
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
