//! `ballast demo --netns` (root): the demo cluster as real `ballast run` processes in
//! network namespaces, with a real VIP moved by raw VRRP.
//!
//! ```text
//!   this shell ── <prefix> 198.18.60.254 (host side of a veth) ──┐
//!                                                  <prefix>-br: bridge br0
//!      ┌───────────────┬───────────────┬──────────────┬──────────┴────┐
//!   <prefix>-lb1     <prefix>-lb2    <prefix>-wit    <prefix>-be     <prefix>-cl
//!   198.18.60.11     198.18.60.12    198.18.60.13    198.18.60.20    198.18.60.50-53
//!   node 1 (lb 150)  node 2 (lb 100) node 3 (witness) server1-3      self-check clients
//!   VIP 198.18.60.100/24 on the VRRP master; APIs on <node>:9090, Raft on <node>:9091
//! ```
//!
//! Addresses come from 198.18.60.0/24 only (inside DESIGN's 198.18.0.0/15, apart from
//! the test labs' 198.18.0.0/24), and no namespace has a route out. The bridge lives in
//! a namespace of its own, as in the test labs, so the host's firewall never sees the
//! bridged traffic; one veth gives the host an address on it so this shell reaches the
//! APIs and the VIP. Every name starts with `bdemo<PID>`, so two demos, or a demo and a
//! test lab, never collide.
//!
//! Clean-up is a `Drop` guard ([`Lab`]): on Ctrl-C, on any start-up error and on a
//! panic it stops exactly the children it started (by PID: SIGTERM, then SIGKILL after
//! a bound), deletes the namespaces and the host link, then the scratch directory.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{
    print_nodes, print_servers, self_command, ClusterView, DemoArgs, DemoDir, NodePlan, Plan,
    VrrpWire, SERVERS, SETTLE, VIP_CIDR, VRID,
};

const SUBNET: &str = "198.18.60.0/24";
const HOST_ADDR: &str = "198.18.60.254/24";
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 60, 100);
const BACKENDS: Ipv4Addr = Ipv4Addr::new(198, 18, 60, 20);
/// The client namespace's own address, then one address per self-check client.
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 60, 50);
const CLIENTS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 18, 60, 51),
    Ipv4Addr::new(198, 18, 60, 52),
    Ipv4Addr::new(198, 18, 60, 53),
];
const API_PORT: u16 = 9090;
const RAFT_PORT: u16 = 9091;
/// How long a stopped child may take before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Children print their logs to files in the scratch directory; how much of one to
/// show when a child fails.
const LOG_TAIL: usize = 2_000;

struct Spawned {
    what: String,
    child: Child,
    log: PathBuf,
    /// Already reported as gone (so the serve loop says it once).
    reported: bool,
}

/// Everything the lab made, undone on drop.
struct Lab {
    /// Starts every namespace name and is the host-side link's name.
    prefix: String,
    /// The binary the children run (see [`pin_binary`]).
    exe: PathBuf,
    namespaces: Vec<String>,
    host_link: bool,
    children: Vec<Spawned>,
    /// Dropped after `Drop::drop` below ran: the children are gone by then.
    dir: DemoDir,
}

impl Lab {
    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn add_ns(&mut self, host: &str) -> anyhow::Result<String> {
        let ns = self.ns(host);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        Ok(ns)
    }

    /// The bridge, one namespace per host on it, and the host's own link.
    fn build(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        let br = self.add_ns("br")?;
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        let hosts: [(&str, Ipv4Addr); 5] = [
            ("lb1", Ipv4Addr::new(198, 18, 60, 11)),
            ("lb2", Ipv4Addr::new(198, 18, 60, 12)),
            ("wit", Ipv4Addr::new(198, 18, 60, 13)),
            ("be", BACKENDS),
            ("cl", CLIENT),
        ];
        for (host, addr) in hosts {
            interrupted(stop)?;
            let ns = self.add_ns(host)?;
            let port = format!("v{host}");
            ip(&[
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &br, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &br, "link", "set", &port, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
        }
        let cl = self.ns("cl");
        for addr in CLIENTS {
            ip(&[
                "-n",
                &cl,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
        }
        interrupted(stop)?;
        ip(&[
            "link",
            "add",
            &self.prefix,
            "type",
            "veth",
            "peer",
            "name",
            "vhost",
            "netns",
            &br,
        ])?;
        self.host_link = true;
        ip(&["-n", &br, "link", "set", "vhost", "master", "br0"])?;
        ip(&["-n", &br, "link", "set", "vhost", "up"])?;
        ip(&["addr", "add", HOST_ADDR, "dev", &self.prefix])?;
        ip(&["link", "set", &self.prefix, "up"])?;
        Ok(())
    }

    /// Runs this binary inside `host`'s namespace (`ip netns exec` execs it, so the
    /// child's PID is the program's), its output in `<what>.log`.
    fn spawn(&mut self, host: &str, what: &str, args: &[OsString]) -> anyhow::Result<u32> {
        let exe = &self.exe;
        let log = self.dir.path.join(format!("{what}.log"));
        let out = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .arg(exe)
            .args(args)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // A process group of its own: the terminal's Ctrl-C reaches only the demo,
            // which then stops the children in order.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {what} in {}", self.ns(host)))?;
        let pid = child.id();
        tracing::info!(what, pid, ns = %self.ns(host), "started");
        self.children.push(Spawned {
            what: what.to_string(),
            child,
            log,
            reported: false,
        });
        Ok(pid)
    }

    /// A child that is no longer running and was not reported yet: what happened, and
    /// its log's tail.
    fn exited_child(&mut self) -> Option<(String, String)> {
        for c in &mut self.children {
            if let Ok(Some(status)) = c.child.try_wait() {
                if !c.reported {
                    c.reported = true;
                    let what = format!("{} (pid {}) exited ({status})", c.what, c.child.id());
                    let log = format!("its log {}:\n{}", c.log.display(), tail(&c.log));
                    return Some((what, log));
                }
            }
        }
        None
    }

    fn pid_of(&self, what: &str) -> Option<u32> {
        self.children
            .iter()
            .find(|c| c.what == what)
            .map(|c| c.child.id())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // A child not yet reaped still owns its PID (a zombie at worst), so signalling
        // by PID cannot hit another process.
        for c in &mut self.children {
            if matches!(c.child.try_wait(), Ok(None)) {
                signal(c.child.id(), "-TERM");
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        for c in &mut self.children {
            while matches!(c.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(c.child.try_wait(), Ok(None)) {
                tracing::warn!(what = %c.what, pid = c.child.id(), "did not stop in time: killed");
                let _ = c.child.kill();
                let _ = c.child.wait();
            }
        }
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                tracing::warn!(ns, error = %e, "cannot delete namespace");
            }
        }
        // Deleting the bridge namespace took the host link's peer, and with it the
        // link; this only covers a lab that failed half-way.
        if self.host_link && link_exists(&self.prefix) {
            let _ = ip(&["link", "del", &self.prefix]);
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run `ip`")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(LOG_TAIL);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].to_string()
}

fn interrupted(stop: &AtomicBool) -> anyhow::Result<()> {
    if stop.load(Ordering::Relaxed) {
        bail!(Interrupted);
    }
    Ok(())
}

/// Ctrl-C during start-up: not a failure of the demo.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
struct Interrupted;

/// Effective UID from /proc (no unsafe `geteuid` call needed).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Refuses, with what to do, when the lab cannot be built here.
fn preflight() -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "`ballast demo --netns` builds network namespaces and moves a VIP, which needs root: \
             run it with sudo (`ballast demo` without --netns runs on loopback as any user)"
        );
    }
    let version = Command::new("ip").arg("-V").stdin(Stdio::null()).output();
    if !version.is_ok_and(|o| o.status.success()) {
        bail!("`ballast demo --netns` needs the `ip` command (iproute2), which is missing here: install iproute2");
    }
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "to", SUBNET])
        .stdin(Stdio::null())
        .output()
        .context("cannot run `ip`")?;
    let used = String::from_utf8_lossy(&out.stdout);
    if let Some(line) = used.lines().next() {
        // `N: LINK    inet ADDR/LEN ...`
        let words: Vec<&str> = line.split_whitespace().collect();
        let link = words.get(1).copied().unwrap_or("?");
        let addr = words.get(3).copied().unwrap_or("?");
        bail!(
            "{SUBNET} is already in use on this host (link {link} has {addr}): is another \
             `ballast demo --netns` running? Stop it first. What a killed demo left goes with \
             `ip link del {link}` and `ip netns del` of its namespaces (`ip netns list`)"
        );
    }
    Ok(())
}

pub(super) fn run(args: &DemoArgs, stop: &AtomicBool) -> anyhow::Result<()> {
    preflight()?;
    let first = args.port;
    first
        .checked_add(2)
        .filter(|_| first != 0)
        .context("--port must be 1-65533 (it is the first of three ports)")?;
    let dir = DemoDir::create()?;
    let mut lab = Lab {
        prefix: format!("bdemo{}", std::process::id()),
        exe: pin_binary(&dir)?,
        namespaces: Vec::new(),
        host_link: false,
        children: Vec::new(),
        dir,
    };
    let result = serve(&mut lab, args, stop);
    let (prefix, dir, processes) = (lab.prefix.clone(), lab.dir.path.clone(), lab.children.len());
    // Children stopped, namespaces, link and files removed, whatever happened.
    drop(lab);
    let result = match result {
        Err(e) if e.is::<Interrupted>() => Ok(()),
        other => other,
    };
    if result.is_ok() && !args.check_only {
        println!(
            "demo stopped: {processes} processes stopped, namespaces {prefix}-* and link {prefix} deleted, {} removed",
            dir.display()
        );
    }
    result
}

fn serve(lab: &mut Lab, args: &DemoArgs, stop: &AtomicBool) -> anyhow::Result<()> {
    println!(
        "Building the lab: namespaces {p}-{{br,lb1,lb2,wit,be,cl}}, host link {p} ({HOST_ADDR}) ...",
        p = lab.prefix
    );
    lab.build(stop)?;
    let nodes: Vec<NodePlan> = (1..=3u8)
        .map(|i| {
            let addr = Ipv4Addr::new(198, 18, 60, 10 + i);
            NodePlan {
                id: u64::from(i),
                witness: i == 3,
                addr,
                api: SocketAddr::from((addr, API_PORT)),
                raft: SocketAddr::from((addr, RAFT_PORT)),
            }
        })
        .collect();
    let plan = Plan {
        nodes,
        dir: lab.dir.path.clone(),
        first_port: args.port,
        servers: SERVERS
            .iter()
            .enumerate()
            .map(|(i, name)| (*name, SocketAddr::from((BACKENDS, 7001 + i as u16))))
            .collect(),
        wire: VrrpWire::Raw { interface: "eth0" },
        bind_own_addr: false,
    };
    plan.write_files()?;
    for (name, addr) in &plan.servers {
        lab.spawn(
            "be",
            name,
            &[
                "demo-backend".into(),
                "--listen".into(),
                addr.to_string().into(),
                "--name".into(),
                (*name).into(),
            ],
        )?;
    }
    for node in &plan.nodes {
        let host = match node.id {
            1 => "lb1",
            2 => "lb2",
            _ => "wit",
        };
        lab.spawn(
            host,
            &format!("node{}", node.id),
            &[
                "run".into(),
                "--config".into(),
                plan.config_path(node).into(),
            ],
        )?;
    }
    for (name, addr) in &plan.servers {
        wait_for(lab, stop, &format!("{name} at {addr}"), || {
            TcpStream::connect_timeout(addr, Duration::from_millis(300)).is_ok()
        })?;
    }
    let mut view = None;
    wait_for(lab, stop, "a Raft leader and one VRRP master", || {
        let v = ClusterView::fetch_blocking(&plan);
        let done = v.settled(&plan);
        view = Some(v);
        done
    })
    .map_err(|e| match &view {
        Some(v) => e.context(v.describe()),
        None => e,
    })?;
    let view = view.context("no cluster view")?;

    print_facts(lab, &plan, &view);
    let passed = self_check(lab, &plan)?;
    anyhow::ensure!(
        passed,
        "self-check through the VIP failed (see above; node logs in {})",
        plan.dir.display()
    );
    if args.check_only {
        return Ok(());
    }
    print_try_it(lab, &plan, &view);
    watch(lab, &plan, stop);
    println!("stopping: the processes this demo started, then the namespaces and files");
    Ok(())
}

/// Polls `done` every 200 ms until it holds, `SETTLE` passes, a child dies or the
/// user interrupts.
fn wait_for(
    lab: &mut Lab,
    stop: &AtomicBool,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE;
    loop {
        interrupted(stop)?;
        if done() {
            return Ok(());
        }
        if let Some((gone, log)) = lab.exited_child() {
            bail!("while waiting for {what}: {gone}; {log}");
        }
        if Instant::now() >= deadline {
            bail!("no {what} within {SETTLE:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn print_facts(lab: &Lab, plan: &Plan, view: &ClusterView) {
    println!();
    println!("Ballast demo in network namespaces: 2 lb nodes + 1 witness as `ballast run` processes, a real VIP.");
    println!();
    print_nodes(plan, view, true);
    println!();
    println!(
        "  VIP       {VIP_CIDR} on the VRRP master (vrid {VRID}, raw VRRP on eth0, 1 s adverts)"
    );
    println!(
        "  frontend  0.0.0.0:{}-{} on each lb node → backend \"demo\" (leastconn, stick on source IP)",
        plan.first_port,
        plan.last_port()
    );
    print_servers(plan);
    println!(
        "  lab       namespaces {p}-{{br,lb1,lb2,wit,be,cl}}, this host has {HOST_ADDR} on link {p}",
        p = lab.prefix
    );
    println!(
        "  files     {} (configs, token, Raft data, logs; removed at exit)",
        plan.dir.display()
    );
    for c in &lab.children {
        println!("  process   {:<8} pid {}", c.what, c.child.id());
    }
    println!();
}

/// A copy of the running binary in the demo's directory, for the children: a build
/// (`cargo build`, `cargo run` of another package) may replace the file this process
/// was started from while the demo runs, and every child must run this very build.
/// `/proc/self/exe` still reads the running image after its file was replaced.
fn pin_binary(dir: &DemoDir) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let pinned = dir.path.join("ballast");
    let running = std::fs::metadata("/proc/self/exe").context("cannot read /proc/self/exe")?;
    let same = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| (m.dev(), m.ino()) == (running.dev(), running.ino()))
    };
    // A hard link is instant, but only right if the path still holds the running file.
    if let Ok(exe) = std::env::current_exe() {
        if std::fs::hard_link(&exe, &pinned).is_ok() {
            if same(&pinned) {
                return Ok(pinned);
            }
            std::fs::remove_file(&pinned)?;
        }
    }
    std::fs::copy("/proc/self/exe", &pinned)
        .with_context(|| format!("cannot copy this binary to {}", pinned.display()))?;
    Ok(pinned)
}

/// The self-check through the VIP, from the client namespace (`ballast demo-check`).
fn self_check(lab: &Lab, plan: &Plan) -> anyhow::Result<bool> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.ns("cl")])
        .arg(&lab.exe)
        .args(["demo-check", "--target", &VIP.to_string()])
        .args(["--port", &plan.first_port.to_string()]);
    for c in CLIENTS {
        cmd.args(["--from", &c.to_string()]);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .context("cannot run the self-check in the client namespace")?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.status.success())
}

fn print_try_it(lab: &Lab, plan: &Plan, view: &ClusterView) {
    let me = self_command();
    let master = view.master(plan);
    let other = plan.lbs().find(|n| n.id != master.id).unwrap_or(master);
    let api = master.api;
    let pid = lab
        .pid_of(&format!("node{}", master.id))
        .map_or("<pid>".to_string(), |p| p.to_string());
    println!();
    println!("Try it (this shell reaches the lab through {HOST_ADDR}):");
    println!(
        "  nc {VIP} {}                                   # through the VIP",
        plan.first_port
    );
    println!(
        "  ip netns exec {} nc {VIP} {}       # from the client namespace",
        lab.ns("cl"),
        plan.first_port
    );
    println!("  {me} ctl --api http://{api} status");
    println!(
        "  {me} ctl --api http://{api} --token-file {} drill failover --to {}",
        plan.token_file().display(),
        other.id
    );
    println!(
        "      # planned failover: node {} takes the VIP; clients reconnect to {VIP} and keep their server",
        other.id
    );
    println!(
        "  kill -9 {pid}      # crash the master (node {})",
        master.id
    );
    println!(
        "      # node {} hears no advert for Master_Down_Interval (3 × 1 s + skew ≈ 3.6 s), adds",
        other.id
    );
    println!("      # {VIP} and sends gratuitous ARP; clients reconnect to the VIP and keep their");
    println!(
        "      # server (the stick table is replicated); if it led Raft, the two nodes left elect"
    );
    println!(
        "      # a leader. Node {}'s namespace keeps a stale copy of the VIP (kill -9 leaves it,",
        master.id
    );
    println!(
        "      # as with keepalived; `vip_lifetime` makes it expire). This demo prints the change."
    );
    println!("  logs: {}/node{{1,2,3}}.log", plan.dir.display());
    println!("Ctrl-C stops the demo: its processes, then the namespaces, the link and the files.");
}

/// Until Ctrl-C: reports a new VRRP master and children that die (a `kill -9`).
fn watch(lab: &mut Lab, plan: &Plan, stop: &AtomicBool) {
    let mut last = ClusterView::fetch_blocking(plan).masters();
    let mut next_poll = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some((gone, _)) = lab.exited_child() {
            println!("{gone}");
        }
        if Instant::now() >= next_poll {
            next_poll = Instant::now() + Duration::from_secs(1);
            let now = ClusterView::fetch_blocking(plan).masters();
            if !now.is_empty() && now != last {
                let ids: Vec<String> = now.iter().map(ToString::to_string).collect();
                println!(
                    "VRRP master is now node {} (it holds {VIP})",
                    ids.join(", ")
                );
                last = now;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn lab_addresses_stay_in_the_demo_subnet() {
        let all: Vec<IpAddr> = [VIP, BACKENDS, CLIENT]
            .into_iter()
            .chain(CLIENTS)
            .map(IpAddr::V4)
            .collect();
        for a in all {
            let IpAddr::V4(v4) = a else { unreachable!() };
            assert_eq!(v4.octets()[..3], [198, 18, 60], "{a}");
        }
        assert!(HOST_ADDR.starts_with("198.18.60."));
        assert!(VIP_CIDR.starts_with(&VIP.to_string()));
    }

    #[test]
    fn interface_names_fit_the_kernel_limit() {
        // IFNAMSIZ is 16 including the NUL; PIDs go up to 2^22 (7 digits).
        assert!(format!("bdemo{}", 4_194_304).len() <= 15);
    }
}
