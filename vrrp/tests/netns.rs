//! Network-namespace labs for the VRRP driver (DESIGN "Test labs").
//!
//! Each test builds its own lab (the shared harness in `lab/mod.rs`, also
//! used by the `ballast` end-to-end VIP tests): a bridge namespace and one
//! namespace per host (two nodes and a client), joined by veth pairs,
//! addressed from 198.18.0.0/15 only, with no default route. Names carry a
//! unique prefix per run; the [`Lab`]'s `Drop` stops every process the test
//! started (by PID) and deletes every namespace, also when the test panics.
//!
//! The nodes run the `vrrp-lab` example (built by `cargo test` alongside
//! this file), which writes its status and drop counters to a file the
//! test polls. Every wait is bounded in count and time.
//!
//! Needs root (namespaces, raw sockets). Without root the tests pass
//! vacuously with a message, except under `CI=true`, where they fail.
//! The keepalived interop test runs when `keepalived` is installed.

mod lab;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab::{
    addr_of, lab_allowed, lock, mac_of, run, run_ok, unix_ns, wait_until, Lab, Proc, VIP, VIP_CIDR,
};

/// The `vrrp-lab` example next to this test binary.
fn lab_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/netns-<hash> -> target/<profile>/examples/vrrp-lab
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("examples").join("vrrp-lab"))
        .expect("target layout");
    assert!(
        bin.exists(),
        "{} not found: run the tests with plain `cargo test -p ballast-vrrp` \
         (which builds examples) or `cargo build -p ballast-vrrp --example vrrp-lab` first",
        bin.display()
    );
    bin
}

/// The `vrrp-lab` and keepalived side of the lab.
impl Lab {
    fn status_path(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.status"))
    }

    /// Start `vrrp-lab` on `node` with extra flags; returns its index.
    fn start_ballast(&mut self, node: &str, priority: u8, extra: &[&str]) -> usize {
        let status = self.status_path(node);
        let _ = std::fs::remove_file(&status);
        let prio = priority.to_string();
        self.spawn(node, "ballast", lab_binary(), |cmd| {
            cmd.args([
                "--iface",
                "eth0",
                "--vrid",
                "51",
                "--priority",
                &prio,
                "--vip",
                VIP_CIDR,
            ])
            .arg("--status-file")
            .arg(&status)
            .args(extra)
            .env("RUST_LOG", "info");
        })
    }

    /// Start keepalived (VRRPv3, same VRID and VIP) on `node`.
    fn start_keepalived(&mut self, node: &str, priority: u8) -> usize {
        self.start_keepalived_with(node, priority, "1")
    }

    /// keepalived with `advert_int` (seconds, e.g. "0.1").
    fn start_keepalived_with(&mut self, node: &str, priority: u8, advert_int: &str) -> usize {
        let i = self.procs.len();
        let conf = self.dir.join(format!("{node}-ka-{i}.conf"));
        let text = format!(
            "global_defs {{\n  router_id {prefix}{node}\n}}\n\
             vrrp_instance VI_51 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  \
             priority {priority}\n  advert_int {advert_int}\n  version 3\n  virtual_ipaddress {{\n    {VIP_CIDR}\n  }}\n}}\n",
            prefix = self.prefix
        );
        std::fs::write(&conf, text).expect("keepalived conf");
        let pid = self.dir.join(format!("{node}-ka-{i}.pid"));
        let vrrp_pid = self.dir.join(format!("{node}-ka-{i}.vrrp.pid"));
        let i = self.spawn(node, "ka", "keepalived", |cmd| {
            cmd.args(["-n", "-l", "-D", "--no-syslog", "-f"])
                .arg(&conf)
                .arg("-p")
                .arg(&pid)
                .arg("-r")
                .arg(&vrrp_pid);
        });
        self.procs[i].vrrp_pidfile = Some(vrrp_pid);
        i
    }

    fn status(&self, node: &str) -> HashMap<String, String> {
        std::fs::read_to_string(self.status_path(node))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn state(&self, node: &str) -> String {
        self.status(node).get("state").cloned().unwrap_or_default()
    }

    fn counter(&self, node: &str, key: &str) -> u64 {
        self.status(node)
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Sum of every drop counter of `node`.
    fn total_drops(&self, node: &str) -> u64 {
        self.status(node)
            .iter()
            .filter(|(k, _)| k.starts_with("drop."))
            .filter_map(|(_, v)| v.parse::<u64>().ok())
            .sum()
    }

    /// Send a crafted bad advert from the client to `node`.
    fn send_bad(&self, kind: &str, node: &str) {
        run_ok(
            Command::new("ip")
                .args(["netns", "exec", &self.ns("cl")])
                .arg(lab_binary())
                .args([
                    "--send-bad",
                    kind,
                    "--vrid",
                    "51",
                    "--vip",
                    VIP,
                    "--src",
                    addr_of("cl"),
                ])
                .args(["--dst", addr_of(node)]),
        );
    }
}

/// Assert that no two nodes are master at once for `d`.
fn assert_single_master(lab: &Lab, nodes: &[&str], d: Duration) {
    let start = Instant::now();
    for _ in 0..(d.as_millis() / 50 + 1) {
        if start.elapsed() > d {
            break;
        }
        let masters = nodes.iter().filter(|n| lab.state(n) == "master").count();
        assert!(masters <= 1, "dual master");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn election_kill9_takeover_stale_vip_and_bad_packets() {
    if !lab_allowed() {
        return;
    }
    let _serial = lock();
    let mut lab = Lab::new();
    let n1 = lab.start_ballast("n1", 150, &[]);
    let _n2 = lab.start_ballast("n2", 100, &[]);

    // The higher priority becomes master (after its Master_Down_Interval,
    // 3.41 s) and holds the VIP; the other stays backup.
    let t = wait_until(Duration::from_secs(8), || {
        lab.state("n1") == "master" && lab.has_vip("n1")
    });
    assert!(t.is_some(), "n1 never became master");
    assert!(wait_until(Duration::from_secs(2), || lab
        .status("n2")
        .get("master")
        .map(String::as_str)
        == Some(addr_of("n1")))
    .is_some());
    assert_eq!(lab.state("n2"), "backup");
    assert!(!lab.has_vip("n2"));
    assert_single_master(&lab, &["n1", "n2"], Duration::from_secs(2));
    assert!(lab.client_reaches_vip());
    assert!(
        lab.client_neigh().contains(mac_of("n1")),
        "{}",
        lab.client_neigh()
    );

    // kill -9 the master: the backup takes over after Master_Down_Interval
    // (3 * 1 s + 0.6 s skew at priority 100) and the client follows the
    // gratuitous ARP to the new MAC.
    lab.kill9(n1);
    let took = wait_until(Duration::from_secs(8), || {
        lab.state("n2") == "master" && lab.has_vip("n2")
    })
    .expect("n2 never took over");
    eprintln!("kill -9 takeover after {took:?}");
    // Expected 2.6-3.6 s (the kill lands anywhere in an advert interval);
    // the bounds leave room for a loaded 2-core machine, where the dead
    // master's last advert may itself have been late.
    assert!(took >= Duration::from_millis(1500), "too early: {took:?}");
    assert!(took <= Duration::from_millis(5000), "too late: {took:?}");
    assert!(
        wait_until(Duration::from_secs(2), || lab
            .client_neigh()
            .contains(mac_of("n2")))
        .is_some(),
        "client still maps the VIP to {}",
        lab.client_neigh()
    );
    assert!(lab.client_reaches_vip());
    // The dead daemon left its VIP behind, like keepalived does.
    assert!(lab.has_vip("n1"));

    // Crafted bad packets are counted and ignored.
    lab.send_bad("ttl64", "n2");
    lab.send_bad("checksum", "n2");
    lab.send_bad("version", "n2");
    assert!(wait_until(Duration::from_secs(2), || {
        lab.counter("n2", "drop.ttl_not_255") >= 1
            && lab.counter("n2", "drop.bad_checksum") >= 1
            && lab.counter("n2", "drop.bad_version") >= 1
    })
    .is_some());
    assert_eq!(lab.state("n2"), "master");
    assert_eq!(lab.counter("n2", "transitions"), 2);

    // n1 comes back (without preemption): as backup it removes the stale
    // VIP at once and follows n2.
    let _n1b = lab.start_ballast("n1", 150, &["--no-preempt"]);
    assert!(
        wait_until(Duration::from_secs(3), || !lab.has_vip("n1")).is_some(),
        "stale VIP not removed"
    );
    assert!(wait_until(Duration::from_secs(3), || lab
        .status("n1")
        .get("master")
        .map(String::as_str)
        == Some(addr_of("n2")))
    .is_some());
    assert_eq!(lab.state("n1"), "backup");
    assert_single_master(&lab, &["n1", "n2"], Duration::from_secs(2));
}

#[test]
fn graceful_stop_hands_over_within_skew_time_and_preempt_delay() {
    if !lab_allowed() {
        return;
    }
    let _serial = lock();
    let mut lab = Lab::new();
    let n2 = lab.start_ballast("n2", 100, &[]);
    assert!(wait_until(Duration::from_secs(8), || lab.state("n2") == "master").is_some());

    // n1 (150) joins with a 2 s preempt delay: it follows n2 for 2 s, then
    // ignores the lower master and takes over one Master_Down_Interval
    // (3.41 s) after the last advert it accepted.
    let start = Instant::now();
    let n1 = lab.start_ballast("n1", 150, &["--preempt-delay-ms", "2000"]);
    assert!(wait_until(Duration::from_secs(2), || lab.state("n1") == "backup").is_some());
    let took = wait_until(Duration::from_secs(10), || {
        lab.state("n1") == "master" && lab.has_vip("n1")
    })
    .map(|_| start.elapsed())
    .expect("n1 never preempted");
    eprintln!("preemption with 2 s delay after {took:?}");
    assert!(
        took >= Duration::from_millis(3500),
        "preempted too early: {took:?}"
    );
    assert!(
        took <= Duration::from_millis(7500),
        "preempted too late: {took:?}"
    );
    assert!(
        wait_until(Duration::from_secs(2), || lab.state("n2") == "backup"
            && !lab.has_vip("n2"))
        .is_some()
    );

    // Graceful stop of the master: priority 0, VIP removed, and n2 takes
    // over after its Skew_Time (0.6 s), not Master_Down_Interval (3.6 s).
    let t0 = Instant::now();
    lab.stop(n1);
    let took = wait_until(Duration::from_secs(5), || {
        lab.state("n2") == "master" && lab.has_vip("n2")
    })
    .map(|_| t0.elapsed())
    .expect("n2 never took over");
    eprintln!("graceful handover after {took:?}");
    assert!(
        took <= Duration::from_millis(2000),
        "handover took {took:?}"
    );
    assert!(!lab.has_vip("n1"), "stopped master kept the VIP");
    assert_eq!(
        lab.status("n2").get("last_reason").map(String::as_str),
        Some("master_resigned")
    );
    assert!(
        wait_until(Duration::from_secs(2), || lab
            .client_neigh()
            .contains(mac_of("n2")))
        .is_some()
            || lab.client_neigh().is_empty()
    );
    assert!(lab.client_reaches_vip());
    let _ = n2;
}

/// A live upgrade on the wire: the master's process abandons its instance (nothing
/// sent, VIP left on eth0) and a new process starts with `--resume-master`. The VIP
/// never leaves n1, re-adding it is no error, and the backup never moves.
#[test]
fn abandoned_master_resumed_by_a_new_process_keeps_the_vip() {
    if !lab_allowed() {
        return;
    }
    let _serial = lock();
    let mut lab = Lab::new();
    // 200 ms adverts: n2's Master_Down_Interval is 720 ms.
    let fast = ["--interval-ms", "200"];
    let n1 = lab.start_ballast("n1", 150, &fast);
    let _n2 = lab.start_ballast("n2", 100, &fast);
    assert!(
        wait_until(Duration::from_secs(8), || lab.state("n1") == "master"
            && lab.has_vip("n1")
            && lab.status("n2").get("master").map(String::as_str)
                == Some(addr_of("n1")))
        .is_some(),
        "n1 never became master"
    );
    let n2_transitions = lab.counter("n2", "transitions");
    assert_eq!(lab.state("n2"), "backup");

    // The old process: abandon, then exit.
    Lab::signal(lab.pid(n1), "-USR1");
    let exit = lab.wait_exit(n1, Duration::from_secs(5));
    assert!(exit.is_some_and(|s| s.success()), "abandon: {exit:?}");
    assert_eq!(
        lab.status("n1").get("abandoned").map(String::as_str),
        Some("master")
    );
    assert!(lab.has_vip("n1"), "an abandon must leave the VIP on eth0");

    // The new process, same flags plus --resume-master.
    let mut resumed = fast.to_vec();
    resumed.push("--resume-master");
    let n1b = lab.start_ballast("n1", 150, &resumed);
    let took = wait_until(Duration::from_secs(5), || lab.state("n1") == "master")
        .expect("n1 did not resume");
    eprintln!("resumed as master {took:?} after the new process started");
    // Past n2's Master_Down_Interval and a few adverts more.
    std::thread::sleep(Duration::from_millis(720 + 600));
    let s1 = lab.status("n1");
    assert_eq!(s1.get("last_reason").map(String::as_str), Some("resumed"));
    assert_eq!(
        lab.counter("n1", "vip_errors"),
        0,
        "re-adding the VIP failed"
    );
    assert_eq!(
        lab.counter("n1", "garp_sent"),
        0,
        "the VIP never moved: no GARP"
    );
    assert!(lab.has_vip("n1") && !lab.has_vip("n2"));
    assert_eq!(lab.state("n2"), "backup");
    assert_eq!(lab.counter("n2", "transitions"), n2_transitions);
    assert_eq!(
        lab.status("n2").get("master").map(String::as_str),
        Some(addr_of("n1"))
    );
    assert!(lab.client_reaches_vip());
    let log = lab.log_of(n1b);
    assert!(log.contains("vrrp resuming as master"), "{log}");
}

fn keepalived_installed() -> bool {
    Command::new("keepalived")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// keepalived's complaints about a peer's packets, if any.
fn keepalived_complaints(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            ["invalid", "checksum", "bad ", "wrong", "mismatch", "error"]
                .iter()
                .any(|w| l.contains(w))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn keepalived_interop_both_ways() {
    if !lab_allowed() {
        return;
    }
    if !keepalived_installed() {
        // .ci/run installs keepalived: a missing one fails unless skipped explicitly.
        lab::skip_policy::cannot_run("keepalived interop", "keepalived is not installed");
        return;
    }
    let _serial = lock();

    // 1. keepalived (150) wins against Ballast (100); kill -9 keepalived and
    //    Ballast takes over after Master_Down_Interval.
    {
        let mut lab = Lab::new();
        let ka = lab.start_keepalived("n1", 150);
        let _b = lab.start_ballast("n2", 100, &[]);
        assert!(
            wait_until(Duration::from_secs(10), || lab.has_vip("n1")).is_some(),
            "keepalived never took the VIP"
        );
        assert!(wait_until(Duration::from_secs(3), || lab
            .status("n2")
            .get("master")
            .map(String::as_str)
            == Some(addr_of("n1")))
        .is_some());
        // Ballast stays backup and accepts every keepalived advert.
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(lab.state("n2"), "backup");
        assert!(!lab.has_vip("n2"));
        assert!(lab.counter("n2", "adverts_received") >= 2);
        assert_eq!(
            lab.total_drops("n2"),
            0,
            "Ballast dropped keepalived packets: {:?}",
            lab.status("n2")
        );

        lab.kill9(ka);
        let took = wait_until(Duration::from_secs(8), || {
            lab.state("n2") == "master" && lab.has_vip("n2")
        })
        .expect("Ballast never took over from keepalived");
        eprintln!("Ballast took over from killed keepalived after {took:?}");
        assert!(took <= Duration::from_millis(5000));
        assert!(
            keepalived_complaints(&lab.log_of(ka)).is_empty(),
            "{}",
            lab.log_of(ka)
        );
    }

    // 2. Ballast (150) wins against keepalived (100); a graceful stop of
    //    Ballast hands over to keepalived within its Skew_Time.
    {
        let mut lab = Lab::new();
        let b = lab.start_ballast("n1", 150, &[]);
        let ka = lab.start_keepalived("n2", 100);
        assert!(
            wait_until(Duration::from_secs(10), || lab.state("n1") == "master"
                && lab.has_vip("n1"))
            .is_some()
        );
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            !lab.has_vip("n2"),
            "keepalived took the VIP from a higher-priority Ballast"
        );
        assert_eq!(lab.state("n1"), "master");
        assert_eq!(
            lab.counter("n1", "transitions"),
            2,
            "{:?}",
            lab.status("n1")
        );
        assert_eq!(
            lab.total_drops("n1"),
            0,
            "Ballast dropped keepalived packets: {:?}",
            lab.status("n1")
        );

        let t0 = Instant::now();
        lab.stop(b);
        let took = wait_until(Duration::from_secs(5), || lab.has_vip("n2"))
            .map(|_| t0.elapsed())
            .expect("keepalived never took over");
        eprintln!("keepalived took over from stopped Ballast after {took:?}");
        assert!(
            took <= Duration::from_millis(2000),
            "handover took {took:?}"
        );
        let log = lab.log_of(ka);
        assert!(
            log.contains("priority 0") || log.contains("MASTER"),
            "{log}"
        );
        assert!(
            keepalived_complaints(&log).is_empty(),
            "keepalived complained:\n{log}"
        );
    }
}

#[test]
fn unicast_peers_tracked_priority_and_expiring_vip() {
    if !lab_allowed() {
        return;
    }
    let _serial = lock();
    let mut lab = Lab::new();
    let pen1 = lab.dir.join("n1.penalty");
    std::fs::write(&pen1, "0").expect("penalty file");
    let pen1s = pen1.display().to_string();
    let common = ["--vip-lifetime-s", "2", "--garp-repeat-ms", "0"];
    let mut a1: Vec<&str> = vec!["--peer", addr_of("n2"), "--penalty-file", &pen1s];
    a1.extend(common);
    let mut a2: Vec<&str> = vec!["--peer", addr_of("n1")];
    a2.extend(common);
    let n1 = lab.start_ballast("n1", 150, &a1);
    let _n2 = lab.start_ballast("n2", 100, &a2);

    // Unicast adverts elect n1 as with multicast.
    assert!(
        wait_until(Duration::from_secs(8), || lab.state("n1") == "master"
            && lab.has_vip("n1"))
        .is_some()
    );
    assert!(wait_until(Duration::from_secs(3), || lab
        .status("n2")
        .get("master")
        .map(String::as_str)
        == Some(addr_of("n1")))
    .is_some());

    // A tracked condition fails on n1 (penalty 100: 150 -> 50): n2 stops
    // accepting the lower master and takes over; n1 steps down.
    std::fs::write(&pen1, "100").expect("penalty file");
    assert!(
        wait_until(Duration::from_secs(8), || lab.state("n2") == "master"
            && lab.has_vip("n2"))
        .is_some(),
        "n2 did not take over from a degraded master"
    );
    assert!(wait_until(Duration::from_secs(2), || lab.state("n1") == "backup").is_some());
    assert_eq!(
        lab.status("n1").get("priority").map(String::as_str),
        Some("50")
    );
    assert!(wait_until(Duration::from_secs(2), || !lab.has_vip("n1")).is_some());

    // The condition clears: n1 preempts back.
    std::fs::write(&pen1, "0").expect("penalty file");
    assert!(
        wait_until(Duration::from_secs(8), || lab.state("n1") == "master"
            && lab.has_vip("n1"))
        .is_some()
    );
    assert!(wait_until(Duration::from_secs(2), || lab.state("n2") == "backup").is_some());

    // kill -9 n1: n2 takes over, and n1's VIP, no longer renewed, expires
    // by itself (2 s lifetime) instead of staying on a dead host.
    lab.kill9(n1);
    assert!(
        wait_until(Duration::from_secs(8), || lab.state("n2") == "master"
            && lab.has_vip("n2"))
        .is_some()
    );
    assert!(
        wait_until(Duration::from_secs(5), || !lab.has_vip("n1")).is_some(),
        "the dead master's VIP did not expire"
    );
    // The live master keeps renewing its own.
    std::thread::sleep(Duration::from_secs(3));
    assert!(lab.has_vip("n2"), "the live master's VIP expired");
    assert_eq!(lab.counter("n2", "vip_errors"), 0);
}

// ---------------------------------------------------------------------------
// Takeover benchmark (issue 5): Ballast vs keepalived in the same lab.
//
//   cargo build --release -p ballast-vrrp --example vrrp-lab
//   cargo test --release -p ballast-vrrp --test netns -- --ignored --nocapture takeover_benchmark
//
// Writes vrrp/bench/takeover-results.md. BALLAST_BENCH_RUNS sets the runs
// per case (default 5). The client probes TCP to the VIP every 10 ms; the
// outage is from the fault until the first probe answered after the first
// failed one (0 when no probe failed).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Daemon {
    Ballast,
    Keepalived,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// `kill -9` of the master and its link down: a dead host.
    DeadMaster,
    /// SIGTERM: priority 0 and VIP removal.
    GracefulStop,
}

/// Parse the probe log: (ok, unix ns) per change.
fn probe_events(path: &Path) -> Vec<(bool, u128)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, t) = l.split_once(' ')?;
            Some((k == "ok", t.trim().parse().ok()?))
        })
        .collect()
}

/// The outage after `fault_ns`, once the probe saw the VIP again.
fn outage_after(events: &[(bool, u128)], fault_ns: u128) -> Option<Duration> {
    let after: Vec<_> = events.iter().filter(|e| e.1 >= fault_ns).collect();
    match after.iter().position(|e| !e.0) {
        None => {
            // No failure yet: either the switch beat the probe, or the fault
            // has not shown yet; the caller waits long enough to tell.
            None
        }
        Some(i) => after[i..]
            .iter()
            .find(|e| e.0)
            .map(|e| Duration::from_nanos((e.1 - fault_ns) as u64)),
    }
}

fn takeover_once(daemon: Daemon, fault: Fault, interval_ms: u64) -> Option<Duration> {
    let mut lab = Lab::new();
    let ims = interval_ms.to_string();
    let ka_int = format!("{}", interval_ms as f64 / 1000.0);
    let master = match daemon {
        Daemon::Ballast => {
            let m = lab.start_ballast("n1", 150, &["--interval-ms", &ims]);
            lab.start_ballast("n2", 100, &["--interval-ms", &ims]);
            m
        }
        Daemon::Keepalived => {
            let m = lab.start_keepalived_with("n1", 150, &ka_int);
            lab.start_keepalived_with("n2", 100, &ka_int);
            m
        }
    };
    wait_until(Duration::from_secs(15), || {
        lab.has_vip("n1") && !lab.has_vip("n2")
    })?;
    // Let the backup settle (and keepalived's second GARP burst pass).
    std::thread::sleep(Duration::from_millis(3 * interval_ms + 500));

    let log = lab.dir.join("probe.log");
    let logs = log.display().to_string();
    let target = format!("{VIP}:9");
    let probe = Command::new("ip")
        .args(["netns", "exec", &lab.ns("cl")])
        .arg(lab_binary())
        .args([
            "--probe",
            &target,
            "--probe-ms",
            "10",
            "--probe-duration-s",
            "30",
        ])
        .args(["--probe-log", &logs])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn probe");
    lab.procs.push(Proc {
        node: "cl".into(),
        child: probe,
        vrrp_pidfile: None,
        log: log.clone(),
        dump: true,
    });
    wait_until(Duration::from_secs(5), || {
        probe_events(&log).last().map(|e| e.0) == Some(true)
    })?;
    std::thread::sleep(Duration::from_millis(300));

    let fault_ns = unix_ns();
    match fault {
        Fault::DeadMaster => {
            lab.kill9(master);
            run(Command::new("ip").args(["-n", &lab.ns("n1"), "link", "set", "eth0", "down"]));
        }
        Fault::GracefulStop => {
            lab.stop(master);
        }
    }
    let limit = Duration::from_millis(3 * interval_ms + 5_000);
    let mut outage = None;
    wait_until(limit, || {
        outage = outage_after(&probe_events(&log), fault_ns);
        outage.is_some()
    });
    if outage.is_none() && lab.has_vip("n2") {
        // The VIP moved without a single failed probe.
        outage = Some(Duration::ZERO);
    }
    outage
}

fn stats(v: &mut [Duration]) -> (Duration, Duration, Duration) {
    v.sort();
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    };
    (v[0], median, v[n - 1])
}

#[test]
#[ignore = "benchmark: run explicitly, takes minutes"]
fn takeover_benchmark() {
    if !lab_allowed() {
        return;
    }
    let _serial = lock();
    let runs: usize = std::env::var("BALLAST_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .clamp(1, 50);
    let mut daemons = vec![Daemon::Ballast];
    if keepalived_installed() {
        daemons.push(Daemon::Keepalived);
    }
    let mut rows = Vec::new();
    for interval in [1000u64, 100] {
        for fault in [Fault::DeadMaster, Fault::GracefulStop] {
            for &daemon in &daemons {
                let mut got = Vec::new();
                let mut failed = 0;
                for _ in 0..runs {
                    match takeover_once(daemon, fault, interval) {
                        Some(d) => got.push(d),
                        None => failed += 1,
                    }
                }
                eprintln!("{daemon:?} {fault:?} {interval} ms: {got:?} ({failed} failed)");
                rows.push((daemon, fault, interval, got, failed));
            }
        }
    }
    let kernel = String::from_utf8_lossy(&run(Command::new("uname").arg("-r")).stdout)
        .trim()
        .to_string();
    let ka = if keepalived_installed() {
        let o = run(Command::new("keepalived").arg("--version"));
        let s = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        s.lines().next().unwrap_or("").trim().to_string()
    } else {
        "not installed".to_string()
    };
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let mut md = String::new();
    md.push_str("# VRRP takeover benchmark: Ballast vs keepalived\n\n");
    md.push_str(
        "Generated by `cargo test --release -p ballast-vrrp --test netns -- --ignored \
         --nocapture takeover_benchmark` (vrrp/tests/netns.rs).\n\n",
    );
    md.push_str(&format!(
        "Lab: network namespaces on a bridge, 198.18.0.0/24, master priority 150, backup \
         priority 100, VRID 51. Client probes TCP to the VIP every 10 ms (a RST counts as \
         reached). Outage = fault until the first answered probe after the first failed one. \
         Dead master = `kill -9` plus link down; graceful = SIGTERM. {runs} runs per case. \
         Ballast build: {profile}. Kernel {kernel}; keepalived: {ka}. Load average at the \
         end (2 cores, shared): {load}.\n\n"
    ));
    md.push_str(
        "| daemon | fault | advert interval | runs ok | min (s) | median (s) | max (s) |\n",
    );
    md.push_str("|---|---|---|---|---|---|---|\n");
    for (daemon, fault, interval, mut got, failed) in rows {
        let (min, med, max) = if got.is_empty() {
            (Duration::ZERO, Duration::ZERO, Duration::ZERO)
        } else {
            stats(&mut got)
        };
        let fault = match fault {
            Fault::DeadMaster => "dead master",
            Fault::GracefulStop => "graceful stop",
        };
        md.push_str(&format!(
            "| {daemon:?} | {fault} | {interval} ms | {}/{} | {:.3} | {:.3} | {:.3} |\n",
            got.len(),
            got.len() + failed,
            min.as_secs_f64(),
            med.as_secs_f64(),
            max.as_secs_f64()
        ));
    }
    eprintln!("{md}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    std::fs::write(dir.join("takeover-results.md"), md).expect("results file");
}
