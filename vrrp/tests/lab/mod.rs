//! Shared network-namespace lab (DESIGN "Test labs"), used by the VRRP
//! driver's labs (vrrp/tests/netns.rs, with the `vrrp-lab` example) and by
//! the `ballast` end-to-end VIP tests (tests/e2e/vip/, with real
//! `ballast run` processes), which include this file with `#[path]`.
//!
//! ```text
//!                      <prefix>br: bridge br0
//!          ┌──────────────┬─────┴────────┬──────────────┐
//!        b<host>        b<host>        b<host>   ...  (veth, bridge side)
//!          │              │              │
//!   <prefix><host>:eth0  ...            ...          198.18.0.0/24, no route out
//! ```
//!
//! A [`Lab`] builds a bridge namespace and one namespace per host, joined by
//! veth pairs, addressed from 198.18.0.0/15 only, with no default route.
//! Names carry a unique prefix per run; the lab's `Drop` stops every
//! process the test started (by PID, SIGTERM then SIGKILL) and deletes
//! every namespace, also when the test panics. Every wait is bounded in
//! count and time.
//!
//! Needs root (namespaces, raw sockets) and iproute2: see [`lab_allowed`]; a lab
//! that cannot run fails unless skipped explicitly ([`skip_policy`]).

// Each including test crate uses a different part of the harness.
#![allow(dead_code)]

/// Fail or skip a lab that cannot run: the one policy of every test crate's labs.
#[path = "../../../tests/skip_policy.rs"]
pub mod skip_policy;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Labs run one at a time: takeover timings mean something only when the
/// two cores are not shared with another lab.
static SERIAL: Mutex<()> = Mutex::new(());
static COUNTER: AtomicU32 = AtomicU32::new(0);

pub const VIP: &str = "198.18.0.100";
pub const VIP_CIDR: &str = "198.18.0.100/24";

/// A host on the lab bridge: (name, address, MAC). The name is at most 4
/// characters (it ends up in interface and namespace names).
pub type Host = (&'static str, &'static str, &'static str);

/// The default hosts: two VRRP nodes and a client.
pub const HOSTS: [Host; 3] = [
    ("n1", "198.18.0.11", "02:00:c6:12:00:0b"),
    ("n2", "198.18.0.12", "02:00:c6:12:00:0c"),
    ("cl", "198.18.0.50", "02:00:c6:12:00:32"),
];

/// Address of one of the default [`HOSTS`].
pub fn addr_of(node: &str) -> &'static str {
    HOSTS
        .iter()
        .find(|h| h.0 == node)
        .map(|h| h.1)
        .expect("known node")
}

/// MAC of one of the default [`HOSTS`].
pub fn mac_of(node: &str) -> &'static str {
    HOSTS
        .iter()
        .find(|h| h.0 == node)
        .map(|h| h.2)
        .expect("known node")
}

/// Whether the labs can run here (root and iproute2). A lab that cannot run
/// fails with the reason (this panics) unless the reader opted out with
/// `BALLAST_ALLOW_SKIP=1` outside CI: then it prints the `SKIPPED-LAB:` line
/// and returns false ([`skip_policy`]).
pub fn lab_allowed() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let has_ip = Command::new("ip")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if root && has_ip {
        return true;
    }
    let why = if root {
        "iproute2 (ip) is missing"
    } else {
        "not running as root"
    };
    skip_policy::cannot_run("network-namespace lab", why);
    false
}

/// One lab at a time in this process.
pub fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Poll `f` every 20 ms until it is true or `limit` passes; returns the
/// time it took. Bounded in both count and time.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    let max_polls = limit.as_millis() / 20 + 2;
    for _ in 0..max_polls {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Nanoseconds since the Unix epoch (comparable across processes).
pub fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A process the lab started.
pub struct Proc {
    pub node: String,
    pub child: Child,
    /// keepalived's VRRP child pid file (keepalived forks its worker).
    pub vrrp_pidfile: Option<PathBuf>,
    /// stdout and stderr of the process.
    pub log: PathBuf,
    /// Print the log when the test fails (off for short-lived helpers).
    pub dump: bool,
}

pub struct Lab {
    pub prefix: String,
    /// Scratch directory (configs, logs, data dirs), removed on drop.
    pub dir: PathBuf,
    pub namespaces: Vec<String>,
    pub procs: Vec<Proc>,
    pub hosts: Vec<Host>,
}

impl Lab {
    /// A lab with the default [`HOSTS`].
    pub fn new() -> Lab {
        Lab::with_hosts("bv", &HOSTS)
    }

    /// A lab with these hosts; `tag` (2 letters) starts every name.
    pub fn with_hosts(tag: &str, hosts: &[Host]) -> Lab {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{tag}{:05x}{n}", (std::process::id() ^ nanos) & 0xfffff);
        let dir = std::env::temp_dir().join(format!("{prefix}-lab"));
        let mut lab = Lab {
            prefix,
            dir,
            namespaces: Vec::new(),
            procs: Vec::new(),
            hosts: hosts.to_vec(),
        };
        // From here on, Drop cleans whatever was created.
        std::fs::create_dir_all(&lab.dir).expect("lab dir");
        let br = lab.ns("br");
        lab.add_ns(&br);
        run_ok(Command::new("ip").args(["-n", &br, "link", "add", "br0", "type", "bridge"]));
        run_ok(Command::new("ip").args(["-n", &br, "link", "set", "br0", "up"]));
        for &(node, addr, mac) in hosts {
            let ns = lab.ns(node);
            lab.add_ns(&ns);
            let port = format!("b{node}");
            run_ok(Command::new("ip").args([
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]));
            run_ok(Command::new("ip").args(["-n", &br, "link", "set", &port, "master", "br0"]));
            run_ok(Command::new("ip").args(["-n", &br, "link", "set", &port, "up"]));
            run_ok(Command::new("ip").args(["-n", &ns, "link", "set", "eth0", "address", mac]));
            run_ok(Command::new("ip").args(["-n", &ns, "link", "set", "eth0", "up"]));
            run_ok(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]));
            let cidr = format!("{addr}/24");
            run_ok(Command::new("ip").args(["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]));
        }
        lab
    }

    pub fn ns(&self, node: &str) -> String {
        format!("{}{node}", self.prefix)
    }

    fn add_ns(&mut self, ns: &str) {
        run_ok(Command::new("ip").args(["netns", "add", ns]));
        self.namespaces.push(ns.to_string());
    }

    /// The address of one of this lab's hosts.
    pub fn addr(&self, node: &str) -> &'static str {
        self.hosts
            .iter()
            .find(|h| h.0 == node)
            .map(|h| h.1)
            .unwrap_or_else(|| panic!("no host {node} in this lab"))
    }

    /// The MAC of one of this lab's hosts.
    pub fn mac(&self, node: &str) -> &'static str {
        self.hosts
            .iter()
            .find(|h| h.0 == node)
            .map(|h| h.2)
            .unwrap_or_else(|| panic!("no host {node} in this lab"))
    }

    /// One more address (CIDR, 198.18.0.0/15) on `node`'s eth0.
    pub fn add_addr(&self, node: &str, cidr: &str) {
        run_ok(Command::new("ip").args(["-n", &self.ns(node), "addr", "add", cidr, "dev", "eth0"]));
    }

    /// Start `program` inside `node`'s namespace (`ip netns exec`, which
    /// execs the program: the child's PID is the program's). `build` adds
    /// arguments and environment; stdout and stderr go to a log file in the
    /// lab directory. Returns the process index.
    pub fn spawn(
        &mut self,
        node: &str,
        tag: &str,
        program: impl AsRef<OsStr>,
        build: impl FnOnce(&mut Command),
    ) -> usize {
        let i = self.procs.len();
        let log = self.dir.join(format!("{node}-{tag}-{i}.log"));
        let logf = std::fs::File::create(&log).expect("log file");
        let errf = logf.try_clone().expect("log file");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(node)]).arg(program);
        build(&mut cmd);
        cmd.stdin(Stdio::null()).stdout(logf).stderr(errf);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        self.procs.push(Proc {
            node: node.to_string(),
            child,
            vrrp_pidfile: None,
            log,
            dump: true,
        });
        i
    }

    pub fn signal(pid: u32, sig: &str) {
        let _ = run(Command::new("kill").args([sig, &pid.to_string()]));
    }

    pub fn vrrp_child_pid(p: &Proc) -> Option<u32> {
        let f = p.vrrp_pidfile.as_ref()?;
        std::fs::read_to_string(f).ok()?.trim().parse().ok()
    }

    pub fn pid(&self, i: usize) -> u32 {
        self.procs[i].child.id()
    }

    /// Whether process `i` is still running.
    pub fn running(&mut self, i: usize) -> bool {
        matches!(self.procs[i].child.try_wait(), Ok(None))
    }

    /// `kill -9` of process `i` (for keepalived: its VRRP worker too; the
    /// parent is stopped first so it cannot respawn the worker or let it
    /// shut down gracefully).
    pub fn kill9(&mut self, i: usize) {
        let p = &mut self.procs[i];
        let parent = p.child.id();
        if let Some(worker) = Self::vrrp_child_pid(p) {
            Self::signal(parent, "-STOP");
            Self::signal(worker, "-KILL");
        }
        let _ = p.child.kill();
        let _ = p.child.wait();
    }

    /// Wait (bounded) for process `i` to exit; its exit status if it did.
    pub fn wait_exit(&mut self, i: usize, limit: Duration) -> Option<ExitStatus> {
        let p = &mut self.procs[i];
        let mut status = None;
        wait_until(limit, || {
            status = p.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    /// SIGTERM process `i` and wait (bounded, 10 s) for it to exit; killed
    /// if it does not. Returns its exit status when it exited by itself.
    pub fn stop(&mut self, i: usize) -> Option<ExitStatus> {
        Self::signal(self.procs[i].child.id(), "-TERM");
        let status = self.wait_exit(i, Duration::from_secs(10));
        if status.is_none() {
            let p = &mut self.procs[i];
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        status
    }

    /// Whether `addr` (no prefix length) is on `node`'s eth0.
    pub fn has_addr(&self, node: &str, addr: &str) -> bool {
        let out = run(Command::new("ip").args([
            "-n",
            &self.ns(node),
            "-4",
            "addr",
            "show",
            "dev",
            "eth0",
        ]));
        String::from_utf8_lossy(&out.stdout).contains(&format!("inet {addr}/"))
    }

    pub fn has_vip(&self, node: &str) -> bool {
        self.has_addr(node, VIP)
    }

    /// The client's neighbour entry (MAC) for the VIP, if any.
    pub fn client_neigh(&self) -> String {
        let out = run(Command::new("ip").args(["-n", &self.ns("cl"), "neigh", "show", VIP]));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Whether some host answers TCP on the VIP for the client (a RST
    /// "connection refused" counts: the VIP holder's kernel answered).
    pub fn client_reaches_vip(&self) -> bool {
        let out = run(Command::new("ip").args([
            "netns",
            "exec",
            &self.ns("cl"),
            "timeout",
            "2",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{VIP}/9"),
        ]));
        out.status.success() || String::from_utf8_lossy(&out.stderr).contains("refused")
    }

    pub fn log_of(&self, i: usize) -> String {
        std::fs::read_to_string(&self.procs[i].log).unwrap_or_default()
    }

    pub fn dump_logs(&self) {
        for (i, p) in self.procs.iter().enumerate().filter(|(_, p)| p.dump) {
            eprintln!("----- {} process {i} log -----\n{}", p.node, self.log_of(i));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        // Our processes first (namespaces live on while a process is in
        // them): graceful, then by force, each by its PID.
        for p in &mut self.procs {
            if matches!(p.child.try_wait(), Ok(None)) {
                Lab::signal(p.child.id(), "-TERM");
            }
        }
        for p in &mut self.procs {
            let exited = wait_until(Duration::from_secs(5), || {
                !matches!(p.child.try_wait(), Ok(None))
            });
            if exited.is_none() {
                if let Some(w) = Lab::vrrp_child_pid(p) {
                    Lab::signal(w, "-KILL");
                }
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
        for ns in self.namespaces.iter().rev() {
            let _ = run(Command::new("ip").args(["netns", "del", ns]));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
