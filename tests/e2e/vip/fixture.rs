//! `VipLab`: the shared namespace [`Lab`] with two `ballast run` nodes, a backend host
//! running `ballast demo-backend` processes, and a client host.
//!
//! ```text
//!   cl 198.18.0.50 ──┐
//!   lb1 198.18.0.11 ─┤  bridge    VIP 198.18.0.100/24 (VRID 51) on lb1 or lb2
//!   lb2 198.18.0.12 ─┤
//!   be 198.18.0.60 ──┘  + 198.18.0.61: demo backends a1, a2 (lb1's pool, on .60)
//!                                          and b1, b2 (lb2's pool, on .61)
//! ```
//!
//! Each node has its own pool, so a greeting tells which node carried a connection
//! ("a…": lb1, "b…": lb2) and a tracked condition can fail on one node only.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::helper;
use super::lab::{wait_until, Host, Lab, VIP, VIP_CIDR};

pub const HOSTS: [Host; 4] = [
    ("lb1", "198.18.0.11", "02:00:c6:12:00:0b"),
    ("lb2", "198.18.0.12", "02:00:c6:12:00:0c"),
    ("cl", "198.18.0.50", "02:00:c6:12:00:32"),
    ("be", "198.18.0.60", "02:00:c6:12:00:3c"),
];

/// lb2's pool lives on this second address of the backend host.
const BE_B: &str = "198.18.0.61";
/// Where each node's API listens, on the node's own loopback.
const API: &str = "127.0.0.1:9090";
/// The frontend port on the VIP.
pub const PORT: u16 = 8001;
pub const VRID: u8 = 51;

/// How a node is configured.
pub struct LbOpts {
    pub priority: u8,
    pub preempt_delay: &'static str,
}

pub struct VipLab {
    pub lab: Lab,
    /// The `ballast` binary under test, pinned for the lab's lifetime.
    bin: PathBuf,
}

impl VipLab {
    /// The target directory may be shared with other builds, which replace binaries
    /// while a test runs: the nodes run a hard link (or copy) of `ballast` taken now, so
    /// every start in one lab runs the same file.
    pub fn new() -> VipLab {
        let lab = Lab::with_hosts("bx", &HOSTS);
        lab.add_addr("be", &format!("{BE_B}/24"));
        let src = env!("CARGO_BIN_EXE_ballast");
        let bin = lab.dir.join("ballast");
        if std::fs::hard_link(src, &bin).is_err() {
            std::fs::copy(src, &bin).expect("copy the ballast binary");
        }
        VipLab { lab, bin }
    }

    /// The backend servers of `node`'s pool: (name, address).
    fn pool(node: &str) -> [(String, String); 2] {
        let (letter, ip) = match node {
            "lb1" => ("a", HOSTS[3].1),
            _ => ("b", BE_B),
        };
        [1, 2].map(|i| (format!("{letter}{i}"), format!("{ip}:{}", 9000 + i)))
    }

    /// Start `node`'s pool (two `ballast demo-backend` processes) and wait until both
    /// listen; returns their process indexes.
    pub fn start_pool(&mut self, node: &str) -> Vec<usize> {
        let mut procs = Vec::new();
        for (name, addr) in Self::pool(node) {
            let i = self.lab.spawn("be", &name, &self.bin, |c| {
                c.args(["demo-backend", "--listen", &addr, "--name", &name]);
            });
            procs.push(i);
        }
        for &i in &procs {
            let up = wait_until(Duration::from_secs(10), || {
                self.lab.log_of(i).contains("listening on")
            });
            assert!(
                up.is_some(),
                "demo backend did not start: {}",
                self.lab.log_of(i)
            );
        }
        procs
    }

    fn config(&self, node: &str, id: u64, o: &LbOpts) -> PathBuf {
        let data = self.lab.dir.join(format!("{node}-data"));
        let servers = Self::pool(node)
            .iter()
            .map(|(name, addr)| format!("  {{ name = \"{name}\", addr = \"{addr}\" }},\n"))
            .collect::<String>();
        let text = format!(
            r#"[node]
id = {id}
data_dir = "{data}"
api_listen = "{API}"

[vrrp]
interface = "eth0"
vrid = {VRID}
priority = {prio}
advert_interval = "1s"
virtual_ips = ["{VIP_CIDR}"]
preempt = true
preempt_delay = "{delay}"

[[frontend]]
name = "vip"
bind = ["{VIP}:{PORT}"]
backend = "pool"

[[backend]]
name = "pool"
balance = "roundrobin"
timeout_connect = "1s"
health = {{ kind = "tcp", interval = "200ms", timeout = "200ms", rise = 2, fall = 2 }}
servers = [
{servers}]
"#,
            data = data.display(),
            prio = o.priority,
            delay = o.preempt_delay,
        );
        let path = self
            .lab
            .dir
            .join(format!("{node}-{}.toml", self.lab.procs.len()));
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// `ballast run` on `node` (same data dir on every start of a node); waits until its
    /// API shows the VRRP instance. Returns the process index.
    pub fn start_lb(&mut self, node: &str, o: LbOpts) -> usize {
        let id = if node == "lb1" { 1 } else { 2 };
        let config = self.config(node, id, &o);
        let i = self.lab.spawn(node, "ballast", &self.bin, |c| {
            c.arg("run")
                .arg("--config")
                .arg(&config)
                .env("RUST_LOG", "info");
        });
        let up = wait_until(Duration::from_secs(15), || {
            !self.lab.running(i) || self.vrrp(node).is_some()
        });
        assert!(
            up.is_some() && self.lab.running(i),
            "{node} did not start:\n{}",
            self.lab.log_of(i)
        );
        i
    }

    /// Run the in-namespace helper on `node` and return its result (bounded by `limit`).
    pub fn helper(&mut self, node: &str, env: &[(&str, &str)], limit: Duration) -> String {
        let i = self.spawn_helper(node, env);
        self.helper_result(i, limit)
    }

    /// Start the helper in the background; [`VipLab::helper_result`] collects it.
    pub fn spawn_helper(&mut self, node: &str, env: &[(&str, &str)]) -> usize {
        // This very process's executable: still there when a concurrent build has
        // replaced (deleted) the test binary's file since this run started.
        let exe = format!("/proc/{}/exe", std::process::id());
        let i = self.lab.spawn(node, "helper", exe, |c| {
            c.args([
                helper::TEST_NAME,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ]);
            for (k, v) in env {
                c.env(k, v);
            }
        });
        // Hundreds of these per test: their logs would bury the nodes' on failure.
        self.lab.procs[i].dump = false;
        i
    }

    /// The helper's result once it exited (killed after `limit`).
    pub fn helper_result(&mut self, i: usize, limit: Duration) -> String {
        if self.lab.wait_exit(i, limit).is_none() {
            self.lab.kill9(i);
            panic!("helper did not finish within {limit:?}");
        }
        let log = self.lab.log_of(i);
        let start = log
            .find(helper::BEGIN)
            .unwrap_or_else(|| panic!("no helper result in:\n{log}"));
        let rest = &log[start + helper::BEGIN.len()..];
        let end = rest.find(helper::END).unwrap_or(rest.len());
        rest[..end].to_string()
    }

    /// GET `path` from `node`'s API: (status, body); status 0 when it did not answer.
    pub fn get(&mut self, node: &str, path: &str) -> (u16, String) {
        let out = self.helper(
            node,
            &[
                (helper::MODE, "get"),
                ("BALLAST_VIP_ADDR", API),
                ("BALLAST_VIP_PATH", path),
            ],
            Duration::from_secs(10),
        );
        let (status, body) = out.split_once('\n').unwrap_or((&out, ""));
        (status.parse().unwrap_or(0), body.to_string())
    }

    /// The "vrrp" object of `node`'s /v1/status, if it answers.
    pub fn vrrp(&mut self, node: &str) -> Option<Value> {
        let (status, body) = self.get(node, "/v1/status");
        if status != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        v.get("vrrp").filter(|v| v.is_object()).cloned()
    }

    /// `vrrp.state` of `node` ("" when it does not answer).
    pub fn state(&mut self, node: &str) -> String {
        self.vrrp(node)
            .and_then(|v| v["state"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    pub fn metrics(&mut self, node: &str) -> String {
        let (status, body) = self.get(node, "/metrics");
        assert_eq!(status, 200, "GET /metrics on {node}: {body}");
        body
    }

    /// One client connection to VIP:PORT: the backend's greeting or the error.
    pub fn client_greeting(&mut self) -> Result<String, String> {
        let addr = format!("{VIP}:{PORT}");
        let out = self.helper(
            "cl",
            &[(helper::MODE, "greet"), ("BALLAST_VIP_ADDR", &addr)],
            Duration::from_secs(10),
        );
        match out.split_once(' ') {
            Some(("ok", line)) => Ok(line.to_string()),
            _ => Err(out),
        }
    }

    /// Start a client probe that connects to VIP:PORT every 10 ms until a greeting starts
    /// with `prefix` (at most `limit`). Collect it with [`VipLab::probe_result`].
    pub fn start_probe(&mut self, prefix: &str, limit: Duration) -> usize {
        let addr = format!("{VIP}:{PORT}");
        let ms = limit.as_millis().to_string();
        self.spawn_helper(
            "cl",
            &[
                (helper::MODE, "until"),
                ("BALLAST_VIP_ADDR", &addr),
                ("BALLAST_VIP_PREFIX", prefix),
                ("BALLAST_VIP_LIMIT_MS", &ms),
            ],
        )
    }

    /// When (unix ns) the probe got its greeting, and the greeting.
    pub fn probe_result(&mut self, i: usize, limit: Duration) -> (u128, String) {
        let out = self.helper_result(i, limit + Duration::from_secs(5));
        let mut parts = out.split_whitespace();
        assert_eq!(parts.next(), Some("ok"), "probe failed: {out}");
        let at = parts
            .next()
            .and_then(|t| t.parse().ok())
            .expect("probe time");
        (at, parts.next().unwrap_or_default().to_string())
    }

    /// Send one crafted bad VRRP packet from the client to `node`.
    pub fn send_bad(&mut self, kind: &str, node: &str) {
        let src = self.lab.addr("cl");
        let dst = self.lab.addr(node);
        let vrid = VRID.to_string();
        let out = self.helper(
            "cl",
            &[
                (helper::MODE, "send-bad"),
                ("BALLAST_VIP_KIND", kind),
                ("BALLAST_VIP_SRC", src),
                ("BALLAST_VIP_DST", dst),
                ("BALLAST_VIP_VRID", &vrid),
                ("BALLAST_VIP_VIP", VIP),
            ],
            Duration::from_secs(10),
        );
        assert_eq!(out, "ok", "send-bad {kind} to {node}");
    }
}
