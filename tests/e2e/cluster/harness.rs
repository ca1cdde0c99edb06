//! `Cluster`: several real `ballast run` processes forming one Raft cluster on loopback.
//!
//! Each node has its own tempdir (config, token file, data_dir, log) that outlives the
//! process, so a node can be killed (SIGKILL), stopped (SIGTERM), restarted on the same
//! data_dir or wiped. Every process is stopped by its PID on drop, even when a test
//! panics; the panicking test prints each node's log tail first.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::node::{alloc_ports, ballast_bin};

pub const TOKEN: &str = "e2e-cluster-token-0123456789";

pub struct NodeSpec {
    pub id: u64,
    pub witness: bool,
    pub api: SocketAddr,
    pub raft: SocketAddr,
    dir: tempfile::TempDir,
    token: String,
    child: Option<Child>,
}

impl NodeSpec {
    /// Where this node binds the model's wildcard frontend binds.
    pub fn bind_ip(&self) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(127, 0, 0, 10 + self.id as u8)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("ballast.log")
    }
}

pub struct Cluster {
    pub nodes: Vec<NodeSpec>,
    pub servers: Vec<(String, SocketAddr)>,
    health: bool,
    snapshot_logs: u64,
    /// First of the three frontend ports every node serves (on its own bind_ip).
    frontend_port: u16,
}

pub struct ClusterBuilder {
    lb: usize,
    witness: bool,
    servers: Vec<(String, SocketAddr)>,
    snapshot_logs: u64,
    wrong_token_for: Option<u64>,
    health: bool,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            lb: 3,
            witness: false,
            servers: Vec::new(),
            snapshot_logs: 5_000,
            wrong_token_for: None,
            health: false,
        }
    }
}

impl ClusterBuilder {
    pub fn lb(mut self, n: usize) -> Self {
        self.lb = n;
        self
    }

    pub fn witness(mut self) -> Self {
        self.witness = true;
        self
    }

    pub fn server(mut self, name: &str, addr: SocketAddr) -> Self {
        self.servers.push((name.into(), addr));
        self
    }

    pub fn snapshot_logs(mut self, n: u64) -> Self {
        self.snapshot_logs = n;
        self
    }

    /// Fast TCP health checks on the backend (200 ms interval, rise 2, fall 2).
    pub fn health(mut self) -> Self {
        self.health = true;
        self
    }

    /// Node `id` gets a token the others do not share.
    pub fn wrong_token_for(mut self, id: u64) -> Self {
        self.wrong_token_for = Some(id);
        self
    }

    /// Writes every node's files and starts them all; waits until each lb node is ready.
    pub fn spawn(self) -> Cluster {
        let total = self.lb + usize::from(self.witness);
        let nodes = (1..=total as u64)
            .map(|id| {
                let base = alloc_ports(2);
                let witness = self.witness && id == total as u64;
                NodeSpec {
                    id,
                    witness,
                    api: SocketAddr::from(([127, 0, 0, 1], base)),
                    raft: SocketAddr::from(([127, 0, 0, 1], base + 1)),
                    dir: tempfile::Builder::new()
                        .prefix("ballast-cluster-")
                        .tempdir()
                        .expect("tempdir"),
                    token: if self.wrong_token_for == Some(id) {
                        "not-the-cluster-token-9876543210".into()
                    } else {
                        TOKEN.into()
                    },
                    child: None,
                }
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            servers: self.servers,
            health: self.health,
            snapshot_logs: self.snapshot_logs,
            frontend_port: alloc_ports(3),
        };
        for i in 0..cluster.nodes.len() {
            cluster.write_config(i);
        }
        for i in 0..cluster.nodes.len() {
            cluster.start(cluster.nodes[i].id);
        }
        for node in &cluster.nodes {
            if !node.witness && self.wrong_token_for != Some(node.id) {
                cluster.wait_ready(node.id, Duration::from_secs(30));
            }
        }
        cluster
    }
}

impl Cluster {
    fn index(&self, id: u64) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn node(&self, id: u64) -> &NodeSpec {
        &self.nodes[self.index(id)]
    }

    fn write_config(&self, i: usize) {
        let node = &self.nodes[i];
        std::fs::write(node.dir.path().join("token"), &node.token).expect("token");
        let mut cfg = String::new();
        writeln!(
            cfg,
            "[node]\nid = {}\nrole = \"{}\"\ndata_dir = {:?}\napi_listen = \"{}\"\nraft_listen = \"{}\"\ntoken_file = {:?}\nbind_ip = \"{}\"\n",
            node.id,
            if node.witness { "witness" } else { "lb" },
            node.data_dir().display().to_string(),
            node.api,
            node.raft,
            node.dir.path().join("token").display().to_string(),
            node.bind_ip()
        )
        .unwrap();
        writeln!(
            cfg,
            "[cluster]\nsnapshot_logs = {}\nmembers = [",
            self.snapshot_logs
        )
        .unwrap();
        for m in &self.nodes {
            writeln!(
                cfg,
                "  {{ id = {}, raft = \"{}\", api = \"{}\", role = \"{}\" }},",
                m.id,
                m.raft,
                m.api,
                if m.witness { "witness" } else { "lb" }
            )
            .unwrap();
        }
        cfg.push_str("]\n\n");
        // Every node's config carries the same model (only the first leader's seeds it):
        // a wildcard bind that each node turns into its own loopback address.
        writeln!(
            cfg,
            "[[frontend]]\nname = \"f\"\nbind = [\"0.0.0.0:{}-{}\"]\nbackend = \"b\"\n",
            self.frontend_port,
            self.frontend_port + 2
        )
        .unwrap();
        writeln!(
            cfg,
            "[[backend]]\nname = \"b\"\nbalance = \"leastconn\"\ntimeout_connect = \"1s\"\nstick = {{ on = \"src\", size = 300000, expire = \"1h\" }}\nservers = ["
        )
        .unwrap();
        if self.health {
            // TOML 1.0: an inline table may not span lines, so the key goes before the list.
            cfg = cfg.replace(
                "servers = [",
                "health = { kind = \"tcp\", interval = \"200ms\", timeout = \"150ms\", rise = 2, fall = 2 }\nservers = [",
            );
        }
        for (name, addr) in &self.servers {
            writeln!(cfg, "  {{ name = \"{name}\", addr = \"{addr}\" }},").unwrap();
        }
        cfg.push_str("]\n");
        std::fs::write(node.dir.path().join("ballast.toml"), cfg).expect("config");
    }

    pub fn start(&mut self, id: u64) {
        let i = self.index(id);
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {id} already runs");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())
            .expect("log");
        let err: File = log.try_clone().expect("log clone");
        let child = Command::new(ballast_bin())
            .arg("run")
            .arg("--config")
            .arg(node.dir.path().join("ballast.toml"))
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawn ballast");
        node.child = Some(child);
    }

    /// SIGKILL, by PID.
    pub fn kill(&mut self, id: u64) {
        let i = self.index(id);
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, by PID, and wait (bounded) for the process to exit.
    pub fn stop(&mut self, id: u64) {
        let i = self.index(id);
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Removes the node's data_dir (it must not be running).
    pub fn wipe(&mut self, id: u64) {
        let i = self.index(id);
        assert!(self.nodes[i].child.is_none(), "stop node {id} first");
        let _ = std::fs::remove_dir_all(self.nodes[i].data_dir());
    }

    /// The PID of node `id`'s process, while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).child.as_ref().map(Child::id)
    }

    /// Node `id`'s config file (`ballast run --config` reads it).
    pub fn config_path(&self, id: u64) -> PathBuf {
        self.node(id).dir.path().join("ballast.toml")
    }

    /// Node `id`'s token file (the API write token).
    pub fn token_path(&self, id: u64) -> PathBuf {
        self.node(id).dir.path().join("token")
    }

    /// `http://IP:PORT` of node `id`'s API.
    pub fn api_url(&self, id: u64) -> String {
        format!("http://{}", self.node(id).api)
    }

    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.node(id).log_path()).unwrap_or_default()
    }

    pub fn frontend_addr(&self, id: u64, port: u16) -> SocketAddr {
        SocketAddr::from((self.node(id).bind_ip(), self.frontend_port + port))
    }

    pub fn get(&self, id: u64, path: &str) -> Option<(u16, serde_json::Value)> {
        let (status, body) = crate::harness::http::get(self.node(id).api, path).ok()?;
        Some((
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        ))
    }

    pub fn status(&self, id: u64) -> Option<ballast_api::types::Status> {
        crate::harness::http::get_typed(self.node(id).api, "/v1/status")
    }

    pub fn leader(&self, id: u64) -> Option<u64> {
        self.status(id)?.leader()
    }

    pub fn revision(&self, id: u64) -> Option<u64> {
        Some(self.status(id)?.revision)
    }

    fn stick_page(&self, id: u64, path: &str) -> Option<ballast_api::types::StickPage> {
        crate::harness::http::get_typed(self.node(id).api, path)
    }

    /// The replicated stick entries of backend `b` as seen by node `id`: key → server.
    pub fn sticks(&self, id: u64) -> std::collections::BTreeMap<String, String> {
        let mut out = std::collections::BTreeMap::new();
        let mut after: Option<String> = None;
        for _ in 0..1000 {
            let path = match &after {
                Some(a) => format!("/v1/backends/b/stick?limit=10000&after={a}"),
                None => "/v1/backends/b/stick?limit=10000".into(),
            };
            let Some(page) = self.stick_page(id, &path) else {
                return out;
            };
            if page.entries.is_empty() {
                break;
            }
            for e in &page.entries {
                out.insert(e.key.to_string(), e.server.clone());
            }
            after = page.entries.last().map(|e| e.key.to_string());
        }
        out
    }

    pub fn stick_total(&self, id: u64) -> Option<u64> {
        let page = self.stick_page(id, "/v1/backends/b/stick?limit=1")?;
        Some(page.total as u64)
    }

    pub fn metric(&self, id: u64, name: &str) -> Option<f64> {
        let (status, body) = crate::harness::http::get(self.node(id).api, "/metrics").ok()?;
        (status == 200)
            .then(|| crate::harness::http::metric_value(&body, name, &[]))
            .flatten()
    }

    /// POST with the cluster token; returns (status, body).
    pub fn post(&self, id: u64, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        self.request(id, "POST", path, body)
    }

    /// Any method, with the cluster token; returns (status, body).
    pub fn request(
        &self,
        id: u64,
        method: &str,
        path: &str,
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.node(id).api)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
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
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
        Ok((status, body))
    }

    pub fn wait_ready(&self, id: u64, within: Duration) {
        let api = self.node(id).api;
        let ok = wait_until(within, || {
            matches!(crate::harness::http::get(api, "/readyz"), Ok((200, _)))
        });
        if !ok {
            panic!(
                "node {id} not ready within {within:?}\n{}",
                tail(&self.log(id), 40)
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!(
                    "---- node {} log tail ----\n{}",
                    node.id,
                    tail(&self.log(node.id), 40)
                );
            }
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls `check` every 50 ms for at most `within`.
pub fn wait_until(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
