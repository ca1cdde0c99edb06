//! `HaLab`: the shared namespace [`Lab`] with the reference HA layout of DESIGN — two lb
//! nodes and a witness in one Raft cluster, a VRRP VIP on the lb nodes — a backend host
//! with three `ballast demo-backend` processes, and a client host with one source
//! address per mission client. See the module docs of `ha` for the picture.
//!
//! Live upgrades (`ha::upgrade::live_upgrade_of_the_master`): [`HaLab::own_binaries`] runs each lb
//! node from its own copy of the binary, which [`HaLab::install_binary`] replaces the
//! way a package upgrade does. The process serving a node after an upgrade is not the
//! one the lab spawned; every `ballast run` carries [`MARK_ENV`] in its environment
//! (inherited by what it starts), and on drop every process carrying this lab's mark is
//! killed by PID, with every PID the test recorded ([`HaLab::track_pid`]) and their
//! descendants, before the lab stops its own children and deletes the namespaces.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::helper::{self, Req, Resp};
use super::load::{self, client_ip, LoadConfig, Status, Summary};
use crate::harness::process;
use crate::vip::lab::{run, run_ok, wait_until, Host, Lab, VIP, VIP_CIDR};

pub const HOSTS: [Host; 5] = [
    ("lb1", "198.18.0.11", "02:00:c6:12:00:0b"),
    ("lb2", "198.18.0.12", "02:00:c6:12:00:0c"),
    ("wit", "198.18.0.13", "02:00:c6:12:00:0d"),
    ("cl", "198.18.0.50", "02:00:c6:12:00:32"),
    ("be", "198.18.0.60", "02:00:c6:12:00:3c"),
];

/// The frontend's ports on the VIP.
pub const PORTS: [u16; 3] = [8001, 8002, 8003];
pub const VRID: u8 = 51;
/// The backend (pool) every port uses.
pub const BACKEND: &str = "pool";
pub const SERVERS: [&str; 3] = ["s1", "s2", "s3"];
/// Node ids: lb1 = 1, lb2 = 2, witness = 3.
pub const LB1: u64 = 1;
pub const LB2: u64 = 2;
pub const WITNESS: u64 = 3;
/// Mission clients of the reference load.
pub const CLIENTS: usize = 300;
/// VRRP advert interval. 100 ms: Master_Down_Interval is 0.36 s at priority 100
/// (3.6 s at 1 s), so a kill -9 failover fits in a short test and shows what the
/// product can do; the VRRP driver stamps adverts on arrival, so a starved CPU does
/// not cause spurious takeovers at this interval (docs/vrrp.md).
pub const ADVERT: &str = "100ms";
/// Stick decisions are proposed to Raft in batches this often.
pub const BATCH_MS: u64 = 50;
const TOKEN: &str = "ha-lab-token-0123456789abcdef";
/// In the environment of every `ballast run` of the lab (and so of whatever it starts:
/// the process a live upgrade starts, its `check`): `<lab dir>`, the mark the drop looks
/// for before killing a process it did not spawn itself.
pub const MARK_ENV: &str = "BALLAST_HA_LAB";

pub fn host_of(id: u64) -> &'static str {
    match id {
        LB1 => "lb1",
        LB2 => "lb2",
        _ => "wit",
    }
}

fn addr_of(id: u64) -> &'static str {
    HOSTS[(id - 1) as usize].1
}

pub fn api_of(id: u64) -> SocketAddr {
    format!("{}:9090", addr_of(id)).parse().expect("api addr")
}

/// How an lb node runs VRRP.
#[derive(Clone, Copy)]
pub struct Vrrp {
    pub priority: u8,
}

/// A running workload generator.
pub struct LoadRun {
    pub proc: usize,
    pub status_file: PathBuf,
    stop_file: PathBuf,
    out_file: PathBuf,
    pub clients: usize,
}

/// A running advertisement recorder ([`HaLab::start_adverts`]).
pub struct AdvertWatch {
    proc: usize,
    stop: PathBuf,
}

pub struct HaLab {
    pub lab: Lab,
    /// The `ballast` binary under test, pinned for the lab's lifetime.
    bin: PathBuf,
    /// Process index of each node's `ballast run`, while it runs.
    pub nodes: BTreeMap<u64, usize>,
    /// Process index of each backend server.
    pub servers: BTreeMap<&'static str, usize>,
    vrrp: BTreeMap<u64, Vrrp>,
    loads: usize,
    /// The binary each node runs from when it has its own copy ([`HaLab::own_binaries`]).
    node_bins: BTreeMap<u64, PathBuf>,
    /// PIDs the test learnt (the processes serving after live upgrades): killed on drop
    /// while they carry the lab's mark.
    tracked: Vec<u32>,
}

impl HaLab {
    /// Builds the namespaces, the client addresses and the routes to them; writes the
    /// token. Nothing runs yet.
    pub fn new(lb1: Vrrp, lb2: Vrrp) -> HaLab {
        let lab = Lab::with_hosts("ha", &HOSTS);
        let src = env!("CARGO_BIN_EXE_ballast");
        let bin = lab.dir.join("ballast");
        if std::fs::hard_link(src, &bin).is_err() {
            std::fs::copy(src, &bin).expect("copy the ballast binary");
        }
        std::fs::write(lab.dir.join("token"), TOKEN).expect("token");
        // 400 client addresses (/32) on the client host, in one `ip -batch`.
        let batch: String = (0..400)
            .map(|i| format!("address add {}/32 dev eth0\n", client_ip(i)))
            .collect();
        let file = lab.dir.join("client-addrs.batch");
        std::fs::write(&file, batch).expect("batch file");
        run_ok(
            Command::new("ip")
                .args(["-n", &lab.ns("cl"), "-batch"])
                .arg(&file),
        );
        // The lb nodes reach the clients through the client host.
        for node in ["lb1", "lb2"] {
            for net in ["198.18.1.0/24", "198.18.2.0/24"] {
                run_ok(Command::new("ip").args([
                    "-n",
                    &lab.ns(node),
                    "route",
                    "add",
                    net,
                    "via",
                    HOSTS[3].1,
                    "dev",
                    "eth0",
                ]));
            }
        }
        HaLab {
            lab,
            bin,
            nodes: BTreeMap::new(),
            servers: BTreeMap::new(),
            vrrp: BTreeMap::from([(LB1, lb1), (LB2, lb2)]),
            loads: 0,
            node_bins: BTreeMap::new(),
            tracked: Vec::new(),
        }
    }

    /// Each lb node runs from its own copy of the binary, `<lab dir>/<host>-bin/ballast`,
    /// which the test may replace ([`HaLab::install_binary`]). Call before starting the
    /// nodes.
    pub fn own_binaries(&mut self) {
        for id in [LB1, LB2] {
            let dir = self.lab.dir.join(format!("{}-bin", host_of(id)));
            std::fs::create_dir_all(&dir).expect("binary dir");
            let path = dir.join("ballast");
            std::fs::copy(&self.bin, &path).expect("copy the ballast binary");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("chmod the binary copy");
            self.node_bins.insert(id, path);
        }
    }

    /// The file node `id` runs from: its own copy, or the lab's binary.
    pub fn binary_of(&self, id: u64) -> &std::path::Path {
        self.node_bins.get(&id).unwrap_or(&self.bin)
    }

    /// Installs the binary under test at node `id`'s own path the way a package upgrade
    /// does: copied to `PATH.new`, then renamed over `PATH` (the running image keeps its
    /// inode, `/proc/PID/exe` then ends in ` (deleted)`).
    pub fn install_binary(&self, id: u64) {
        let path = self
            .node_bins
            .get(&id)
            .expect("the node runs from its own binary (HaLab::own_binaries)");
        let tmp = path.with_extension("new");
        let _ = std::fs::remove_file(&tmp);
        let shown = tmp.display();
        std::fs::copy(&self.bin, &tmp).unwrap_or_else(|e| panic!("copy to {shown}: {e}"));
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {shown}: {e}"));
        std::fs::rename(&tmp, path)
            .unwrap_or_else(|e| panic!("rename {shown} over {}: {e}", path.display()));
    }

    /// Records a PID that serves a node (or was started by one): killed on drop while it
    /// still carries the lab's mark.
    pub fn track_pid(&mut self, pid: u32) {
        if !self.tracked.contains(&pid) {
            self.tracked.push(pid);
        }
    }

    /// Whether the process `pid` no longer runs. The process the lab spawned for a node
    /// is reaped here (its parent is this process); any other is gone once it is no
    /// longer in `/proc` or a zombie (its parent exited: it was handed to init).
    pub fn is_gone(&mut self, pid: u32) -> bool {
        let spawned = (0..self.lab.procs.len()).find(|&i| self.lab.pid(i) == pid);
        match spawned {
            Some(i) => !self.lab.running(i),
            None => !process::is_running(pid),
        }
    }

    /// This lab's mark, as [`process::carries`] looks for it.
    fn mark(&self) -> String {
        format!("{MARK_ENV}={}", self.lab.dir.display())
    }

    /// SIGKILL, by PID, to every process of this lab that the lab did not spawn itself:
    /// the recorded PIDs and their descendants, and every process in `/proc` carrying
    /// the lab's mark (a process an upgrade started that the test never saw). Waits
    /// (bounded) until they are gone.
    fn kill_unspawned(&mut self) {
        let mark = self.mark();
        let me = std::process::id();
        let spawned: Vec<u32> = (0..self.lab.procs.len()).map(|i| self.lab.pid(i)).collect();
        let mut doomed: Vec<u32> = Vec::new();
        for &pid in &self.tracked {
            doomed.push(pid);
            doomed.extend(process::descendants(pid));
        }
        if let Ok(dir) = std::fs::read_dir("/proc") {
            doomed.extend(
                dir.flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())),
            );
        }
        doomed.sort_unstable();
        doomed.dedup();
        doomed.retain(|&pid| {
            pid != me
                && !spawned.contains(&pid)
                && process::is_running(pid)
                && process::carries(pid, &mark)
        });
        for &pid in &doomed {
            eprintln!("ha lab cleanup: SIGKILL to {pid} (started by a node of the lab)");
            let _ = process::send_signal(pid, process::SIGKILL);
        }
        wait_until(Duration::from_secs(5), || {
            doomed.iter().all(|&pid| !process::is_running(pid))
        });
    }

    pub fn token(&self) -> &'static str {
        TOKEN
    }

    /// The three backends s1-s3 on the backend host (198.18.0.60:9001-9003); waits
    /// until each listens.
    pub fn start_servers(&mut self) {
        for (i, name) in SERVERS.iter().enumerate() {
            let addr = format!("{}:{}", HOSTS[4].1, 9001 + i);
            let p = self.lab.spawn("be", name, &self.bin, |c| {
                c.args(["demo-backend", "--listen", &addr, "--name", name]);
            });
            let up = wait_until(Duration::from_secs(10), || {
                self.lab.log_of(p).contains("listening on")
            });
            assert!(up.is_some(), "{name} did not start: {}", self.lab.log_of(p));
            self.servers.insert(name, p);
        }
    }

    /// kill -9 of one backend server's process.
    pub fn kill_server(&mut self, name: &str) {
        let p = self.servers.remove(name).expect("running server");
        self.lab.kill9(p);
    }

    fn config(&self, id: u64) -> PathBuf {
        let host = host_of(id);
        let members: String = [LB1, LB2, WITNESS]
            .iter()
            .map(|&m| {
                format!(
                    "  {{ id = {m}, raft = \"{a}:9091\", api = \"{a}:9090\", role = \"{r}\" }},\n",
                    a = addr_of(m),
                    r = if m == WITNESS { "witness" } else { "lb" }
                )
            })
            .collect();
        let vrrp = match self.vrrp.get(&id) {
            Some(v) => format!(
                r#"
[vrrp]
interface = "eth0"
vrid = {VRID}
priority = {prio}
advert_interval = "{ADVERT}"
virtual_ips = ["{VIP_CIDR}"]
preempt = true
vip_lifetime = "3s"
"#,
                prio = v.priority
            ),
            None => String::new(),
        };
        let servers: String = SERVERS
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "  {{ name = \"{s}\", addr = \"{}:{}\" }},\n",
                    HOSTS[4].1,
                    9001 + i
                )
            })
            .collect();
        let text = format!(
            r#"[node]
id = {id}
role = "{role}"
data_dir = "{data}"
api_listen = "{addr}:9090"
raft_listen = "{addr}:9091"
token_file = "{token}"

[cluster]
members = [
{members}]
{vrrp}
[[frontend]]
name = "mission"
bind = ["{VIP}:{p0}-{p2}"]
backend = "{BACKEND}"
timeout_client = "15h"

[[backend]]
name = "{BACKEND}"
balance = "leastconn"
timeout_server = "15h"
timeout_connect = "1s"
stick = {{ on = "src", size = 200000, expire = "16h" }}
health = {{ kind = "tcp", interval = "200ms", timeout = "200ms", rise = 2, fall = 2 }}
servers = [
{servers}]
"#,
            role = if id == WITNESS { "witness" } else { "lb" },
            data = self.lab.dir.join(format!("{host}-data")).display(),
            addr = addr_of(id),
            token = self.lab.dir.join("token").display(),
            p0 = PORTS[0],
            p2 = PORTS[2],
        );
        let path = self.lab.dir.join(format!("{host}.toml"));
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// `ballast run` on node `id` (same data_dir on every start).
    pub fn start_node(&mut self, id: u64) {
        let config = self.config(id);
        let bin = self.binary_of(id).to_path_buf();
        let mark = self.lab.dir.clone();
        let p = self.lab.spawn(host_of(id), "ballast", &bin, |c| {
            c.arg("run")
                .arg("--config")
                .arg(&config)
                .env("RUST_LOG", "info,openraft=warn")
                .env(MARK_ENV, &mark);
        });
        self.nodes.insert(id, p);
    }

    /// kill -9 of node `id`'s process.
    pub fn kill_node(&mut self, id: u64) {
        let p = self.nodes.remove(&id).expect("running node");
        self.lab.kill9(p);
    }

    /// Starts the three nodes and waits (bounded) until the cluster has one leader
    /// every node agrees on, both lb nodes are ready, and lb1 is the VRRP master.
    pub fn start_cluster(&mut self) {
        for id in [LB1, LB2, WITNESS] {
            self.start_node(id);
        }
        let mut last = String::new();
        let ok = wait_until(Duration::from_secs(40), || {
            for (&id, &p) in &self.nodes {
                assert!(
                    self.lab.running(p),
                    "node {id} exited:\n{}",
                    self.lab.log_of(p)
                );
            }
            let answers = self.api(&[
                get(LB1, "/v1/status"),
                get(LB2, "/v1/status"),
                get(WITNESS, "/v1/status"),
                get(LB1, "/readyz"),
                get(LB2, "/readyz"),
            ]);
            let status: Vec<Value> = answers[..3].iter().map(json).collect();
            let leaders: Vec<Option<u64>> = status
                .iter()
                .map(|s| s["raft"]["leader"].as_u64())
                .collect();
            let vrrp: Vec<String> = status[..2]
                .iter()
                .map(|s| s["vrrp"]["state"].as_str().unwrap_or("").to_string())
                .collect();
            last = format!(
                "leaders {leaders:?}, vrrp {vrrp:?}, readyz {} {}",
                answers[3].status, answers[4].status
            );
            leaders[0].is_some()
                && leaders.iter().all(|l| *l == leaders[0])
                && answers[3].status == 200
                && answers[4].status == 200
                && vrrp == ["master", "backup"]
        });
        assert!(ok.is_some(), "the cluster did not come up: {last}");
    }

    /// Run the helper in the client namespace; its result (killed after `limit`).
    fn helper(&mut self, env: &[(&str, &str)], limit: Duration) -> String {
        let i = self.spawn_helper(env);
        self.helper_result(i, limit)
    }

    fn spawn_helper(&mut self, env: &[(&str, &str)]) -> usize {
        // This very process's executable: still there when a concurrent build has
        // replaced the test binary's file since this run started.
        let exe = format!("/proc/{}/exe", std::process::id());
        let i = self.lab.spawn("cl", "helper", exe, |c| {
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
        self.lab.procs[i].dump = false;
        i
    }

    fn helper_result(&mut self, i: usize, limit: Duration) -> String {
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
        let _ = std::fs::remove_file(&self.lab.procs[i].log);
        rest[..end].to_string()
    }

    /// Sends `reqs` from the client host, in order, in one helper process.
    pub fn api(&mut self, reqs: &[Req]) -> Vec<Resp> {
        let text = serde_json::to_string(reqs).expect("requests");
        let out = self.helper(
            &[(helper::MODE, "http"), (helper::REQS, &text)],
            Duration::from_secs(30),
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("helper answer {out:?}: {e}"))
    }

    /// GET /v1/status of each node in `ids` (Null when it does not answer).
    pub fn statuses(&mut self, ids: &[u64]) -> Vec<Value> {
        let reqs: Vec<Req> = ids.iter().map(|&id| get(id, "/v1/status")).collect();
        self.api(&reqs).iter().map(json).collect()
    }

    pub fn status(&mut self, id: u64) -> Value {
        self.statuses(&[id]).remove(0)
    }

    pub fn metrics(&mut self, id: u64) -> String {
        let r = self.api(&[get(id, "/metrics")]).remove(0);
        assert_eq!(r.status, 200, "GET /metrics on node {id}: {}", r.body);
        r.body
    }

    /// Node `id`'s replicated stick table of the backend, every page (key → server),
    /// and the revision of the last page.
    pub fn stick_table(&mut self, id: u64) -> (BTreeMap<String, String>, u64) {
        let mut table = BTreeMap::new();
        let mut after: Option<String> = None;
        let mut revision = 0;
        for _ in 0..100 {
            let path = match &after {
                Some(k) => format!("/v1/backends/{BACKEND}/stick?after={k}&limit=200"),
                None => format!("/v1/backends/{BACKEND}/stick?limit=200"),
            };
            let r = self.api(&[get(id, &path)]).remove(0);
            assert_eq!(r.status, 200, "GET {path} on node {id}: {}", r.body);
            let page: Value = serde_json::from_str(&r.body).expect("stick page");
            revision = page["revision"].as_u64().unwrap_or(0);
            let entries = page["entries"].as_array().cloned().unwrap_or_default();
            for e in &entries {
                table.insert(
                    e["key"].as_str().unwrap_or_default().to_string(),
                    e["server"].as_str().unwrap_or_default().to_string(),
                );
            }
            match entries.last() {
                Some(e) if entries.len() == 200 => {
                    after = e["key"].as_str().map(str::to_string);
                }
                _ => break,
            }
        }
        (table, revision)
    }

    /// The VRRP state of each lb node ("" when it does not answer).
    pub fn vrrp_states(&mut self) -> (String, String) {
        let s = self.statuses(&[LB1, LB2]);
        let st = |v: &Value| v["vrrp"]["state"].as_str().unwrap_or("").to_string();
        (st(&s[0]), st(&s[1]))
    }

    /// Starts the workload generator for clients `first..first + n`, bounded by
    /// `limit`.
    pub fn start_load(&mut self, first: usize, n: usize, limit: Duration) -> LoadRun {
        self.loads += 1;
        let tag = format!("load{}", self.loads);
        let cfg = LoadConfig {
            vip: VIP.parse().expect("vip"),
            ports: PORTS.to_vec(),
            first_client: first,
            clients: n,
            chunk: 1536,
            period_ms: 100,
            limit_ms: limit.as_millis() as u64,
            max_attempts: 2_000,
            status_file: self.lab.dir.join(format!("{tag}-status.json")),
            stop_file: self.lab.dir.join(format!("{tag}-stop")),
            out_file: self.lab.dir.join(format!("{tag}-summary.json")),
        };
        let text = serde_json::to_string(&cfg).expect("load config");
        let proc = self.spawn_helper(&[(helper::MODE, "load"), (helper::LOAD, &text)]);
        LoadRun {
            proc,
            status_file: cfg.status_file,
            stop_file: cfg.stop_file,
            out_file: cfg.out_file,
            clients: n,
        }
    }

    pub fn load_status(&self, run: &LoadRun) -> Option<Status> {
        Status::read(&run.status_file)
    }

    /// Waits (bounded) until every client of `run` streams on all its sockets, on one
    /// backend per client, and `extra` holds; the last status.
    pub fn wait_streaming(
        &mut self,
        run: &LoadRun,
        limit: Duration,
        what: &str,
        mut extra: impl FnMut(&Status) -> bool,
    ) -> Status {
        let mut last = None;
        let ok = wait_until(limit, || {
            assert!(
                self.lab.running(run.proc),
                "the load generator exited:\n{}",
                self.lab.log_of(run.proc)
            );
            last = self.load_status(run);
            last.as_ref()
                .is_some_and(|s| s.clients_streaming() == run.clients && extra(s))
        });
        let s = last.unwrap_or_else(|| panic!("{what}: no status from the load generator"));
        assert!(
            ok.is_some(),
            "{what}: not reached within {limit:?}: {} of {} clients streaming on one backend, \
             {} reconnects",
            s.clients_streaming(),
            run.clients,
            s.reconnects
        );
        s
    }

    /// Stops the generator and returns what it recorded.
    pub fn stop_load(&mut self, run: LoadRun) -> Summary {
        std::fs::write(&run.stop_file, "stop").expect("stop file");
        let out = self.helper_result(run.proc, Duration::from_secs(30));
        assert_eq!(out, "ok", "load generator: {out}");
        let text = std::fs::read_to_string(&run.out_file).expect("load summary");
        serde_json::from_str(&text).expect("load summary json")
    }

    /// Starts a probe that, once `trigger` exists, connects to VIP:8001 from the client
    /// host's own address every 10 ms: until a backend greets (at most `limit`), or with
    /// `window` for that long (see `helper::probe`).
    pub fn start_probe(
        &mut self,
        trigger: &std::path::Path,
        limit: Duration,
        window: Option<Duration>,
    ) -> usize {
        let addr = format!("{VIP}:{}", PORTS[0]);
        let ms = limit.as_millis().to_string();
        let window = window.map(|w| w.as_millis().to_string());
        let mut env = vec![
            (helper::MODE, "probe"),
            ("BALLAST_HA_ADDR", addr.as_str()),
            ("BALLAST_HA_LIMIT_MS", ms.as_str()),
        ];
        let trigger = trigger.display().to_string();
        env.push(("BALLAST_HA_TRIGGER", &trigger));
        if let Some(w) = &window {
            env.push(("BALLAST_HA_WINDOW_MS", w));
        }
        self.spawn_helper(&env)
    }

    /// When (unix ms) the probe was greeted, and by whom.
    pub fn probe_result(&mut self, i: usize, limit: Duration) -> (u64, String) {
        let out = self.helper_result(i, limit + Duration::from_secs(5));
        let mut parts = out.split_whitespace();
        assert_eq!(parts.next(), Some("ok"), "probe failed: {out}");
        let at = parts
            .next()
            .and_then(|t| t.parse().ok())
            .expect("probe time");
        (at, parts.next().unwrap_or_default().to_string())
    }

    /// A windowed probe's result: (attempts, greeted, failed, longest gap ms, gap start,
    /// gap end).
    pub fn probe_window(&mut self, i: usize, limit: Duration) -> [u64; 6] {
        let out = self.helper_result(i, limit + Duration::from_secs(5));
        let mut parts = out.split_whitespace();
        assert_eq!(parts.next(), Some("window"), "probe failed: {out}");
        let v: Vec<u64> = parts.filter_map(|p| p.parse().ok()).collect();
        v.try_into()
            .unwrap_or_else(|_| panic!("probe answer {out:?}"))
    }

    /// Cuts lb1 from lb2 and back: the bridge drops every frame between their ports
    /// (nftables, bridge family), both ways; both still reach the witness, the client
    /// and the backends.
    pub fn partition(&self) {
        let rules = "table bridge ha_partition {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n    iifname \"blb1\" oifname \"blb2\" drop\n    iifname \"blb2\" oifname \"blb1\" drop\n  }\n}\n";
        let file = self.lab.dir.join("partition.nft");
        std::fs::write(&file, rules).expect("nft rules");
        run_ok(
            Command::new("ip")
                .args(["netns", "exec", &self.lab.ns("br"), "nft", "-f"])
                .arg(&file),
        );
    }

    pub fn heal(&self) {
        run_ok(Command::new("ip").args([
            "netns",
            "exec",
            &self.lab.ns("br"),
            "nft",
            "delete",
            "table",
            "bridge",
            "ha_partition",
        ]));
    }

    /// Starts recording every VRRP advertisement on the LAN from the client host
    /// (`helper::adverts`), at most `limit`; returns once it listens.
    pub fn start_adverts(&mut self, limit: Duration) -> AdvertWatch {
        let stop = self.lab.dir.join("adverts-stop");
        let ready = stop.with_extension("ready");
        let ms = limit.as_millis().to_string();
        let stop_text = stop.display().to_string();
        let proc = self.spawn_helper(&[
            (helper::MODE, "adverts"),
            ("BALLAST_HA_LOCAL", HOSTS[3].1),
            ("BALLAST_HA_STOP", stop_text.as_str()),
            ("BALLAST_HA_LIMIT_MS", ms.as_str()),
        ]);
        let up = wait_until(Duration::from_secs(10), || ready.exists());
        assert!(
            up.is_some() && self.lab.running(proc),
            "the advert recorder did not start:\n{}",
            self.lab.log_of(proc)
        );
        AdvertWatch { proc, stop }
    }

    /// Stops the recorder and returns what it saw.
    pub fn stop_adverts(&mut self, w: AdvertWatch) -> helper::Adverts {
        std::fs::write(&w.stop, "stop").expect("stop file");
        let out = self.helper_result(w.proc, Duration::from_secs(10));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("advert recorder: {out:?}: {e}"))
    }

    /// The client host's neighbour entry for the VIP (which MAC it sends to).
    pub fn client_vip_mac(&self) -> String {
        let out = run(Command::new("ip").args(["-n", &self.lab.ns("cl"), "neigh", "show", VIP]));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for HaLab {
    /// Before the lab's own drop (which stops the processes it spawned and deletes the
    /// namespaces): the processes serving after live upgrades are not the lab's children.
    fn drop(&mut self) {
        self.kill_unspawned();
    }
}

pub fn get(id: u64, path: &str) -> Req {
    Req {
        method: "GET".into(),
        addr: api_of(id),
        path: path.into(),
        body: None,
        token: None,
    }
}

pub fn post(id: u64, path: &str, body: &str, token: &str) -> Req {
    Req {
        method: "POST".into(),
        addr: api_of(id),
        path: path.into(),
        body: Some(body.into()),
        token: Some(token.into()),
    }
}

/// The body as JSON (Null when it is not).
pub fn json(r: &Resp) -> Value {
    serde_json::from_str(&r.body).unwrap_or(Value::Null)
}

/// Whether nftables (`nft`) is there; its absence fails the partition lab unless
/// skipped explicitly (`lab::skip_policy`).
pub fn nft_available() -> bool {
    let ok = Command::new("nft")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        crate::vip::lab::skip_policy::cannot_run(
            "the partition lab",
            "nftables (nft) is missing (.ci/run installs it)",
        );
    }
    ok
}

/// Milliseconds from `a` to `b` (0 when `b` is earlier).
pub fn ms_between(a: u64, b: u64) -> u64 {
    b.saturating_sub(a)
}

pub fn now_ms() -> u64 {
    load::now_ms()
}
