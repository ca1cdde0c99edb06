//! `ballast demo`, the README's first command, run as a user would: the real binary.
//!
//! - `loopback_demo_check_only`: `ballast demo --check-only` on free ports starts 2 lb
//!   nodes and a witness in one process, prints a VRRP master among the lb nodes and a
//!   Raft leader, passes the self-check through the master, exits 0 and leaves its
//!   scratch directory removed.
//! - `loopback_demo_stops_cleanly_on_sigint`: a serving demo gets SIGINT, exits 0 within
//!   a bound, removes its directory and frees its ports.
//! - `netns_demo_check_only_leaves_nothing_behind` (root): `ballast demo --netns
//!   --check-only` builds the namespace lab, passes the self-check through the VIP from
//!   the client namespace, and leaves no namespace, link or directory with its prefix.
//!   Skipped without root or iproute2, a failure under `CI=true`.
//!
//! Each demo runs with `TMPDIR` pointing at a fresh directory of the test's, so "nothing
//! left behind" is checked on a directory no one else writes to. Every wait is bounded;
//! a demo still running at its deadline is killed by PID.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::harness::node::{alloc_ports, ballast_bin};
use crate::vip::lab::{lab_allowed, lock};

/// A `ballast demo` child with its output in files.
struct Demo {
    child: Child,
    /// The demo's TMPDIR.
    tmp: tempfile::TempDir,
    /// Holds `out` and `err`, apart from `tmp` so they are not "left behind".
    _logs: tempfile::TempDir,
    out: PathBuf,
    err: PathBuf,
}

impl Demo {
    fn spawn(args: &[String]) -> Demo {
        let tmp = tempfile::Builder::new()
            .prefix("ballast-demo-test-")
            .tempdir()
            .expect("tempdir");
        let logs = tempfile::Builder::new()
            .prefix("ballast-demo-out-")
            .tempdir()
            .expect("tempdir");
        let out = logs.path().join("stdout");
        let err = logs.path().join("stderr");
        let child = Command::new(ballast_bin())
            .arg("demo")
            .args(args)
            .env("TMPDIR", tmp.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .spawn()
            .expect("spawn ballast demo");
        Demo {
            child,
            tmp,
            _logs: logs,
            out,
            err,
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout(),
            std::fs::read_to_string(&self.err).unwrap_or_default()
        )
    }

    /// Waits (bounded) for the exit; kills the demo by PID and fails at the deadline.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("demo still running after {limit:?}\n{}", self.output());
    }

    /// Waits (bounded) until stdout contains `text`.
    fn wait_for_output(&mut self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.stdout().contains(text) {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "demo exited ({status}) before printing {text:?}\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "demo did not print {text:?} within {limit:?}\n{}",
            self.output()
        );
    }

    /// Whatever the demo left in its TMPDIR.
    fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.tmp.path())
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Flags for a loopback demo on ports no other test uses.
fn loopback_args() -> Vec<String> {
    let frontend = alloc_ports(3);
    let api = alloc_ports(3);
    let raft = alloc_ports(3);
    let vrrp = alloc_ports(1);
    vec![
        "--port".into(),
        frontend.to_string(),
        "--api".into(),
        format!("127.0.0.1:{api}"),
        "--raft-port".into(),
        raft.to_string(),
        "--vrrp-port".into(),
        vrrp.to_string(),
    ]
}

/// The number after `label` on its line, e.g. `VRRP master: node 1 (…)` → 1.
fn node_after(text: &str, label: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(label))?;
    line[label.len()..]
        .trim_start()
        .strip_prefix("node ")?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The facts every passing demo prints.
fn assert_facts(out: &str) {
    let master = node_after(out, "VRRP master:").unwrap_or_else(|| panic!("no master:\n{out}"));
    assert!([1, 2].contains(&master), "the master is an lb node:\n{out}");
    let leader = node_after(out, "Raft leader:").unwrap_or_else(|| panic!("no leader:\n{out}"));
    assert!((1..=3).contains(&leader), "{out}");
    assert_eq!(
        out.matches("(same server on every port)").count(),
        3,
        "three clients, each on one server:\n{out}"
    );
    assert!(out.contains("Self-check passed."), "{out}");
}

#[test]
fn loopback_demo_check_only() {
    let args = loopback_args();
    let mut demo = Demo::spawn(&[args.clone(), vec!["--check-only".into()]].concat());
    let status = demo.wait(Duration::from_secs(120));
    let out = demo.stdout();
    assert!(status.success(), "exit {status}\n{}", demo.output());
    assert_facts(&out);
    assert!(out.contains("No VIP is installed without root"), "{out}");
    assert!(
        out.contains("witness"),
        "the table lists the witness:\n{out}"
    );
    assert!(
        demo.leftovers().is_empty(),
        "left behind: {:?}",
        demo.leftovers()
    );
}

#[test]
fn loopback_demo_stops_cleanly_on_sigint() {
    let args = loopback_args();
    let api_port: u16 = args[3]
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("api port");
    let mut demo = Demo::spawn(&args);
    demo.wait_for_output("Ctrl-C stops the demo", Duration::from_secs(120));
    let out = demo.stdout();
    assert_facts(&out);
    assert!(out.contains("drill failover --to"), "{out}");
    assert!(out.contains("ctl --api http://127.0.0.1:"), "{out}");
    let started = Instant::now();
    let kill = Command::new("kill")
        .args(["-INT", &demo.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let status = demo.wait(Duration::from_secs(30));
    assert!(status.success(), "exit {status}\n{}", demo.output());
    eprintln!("demo stopped {:?} after SIGINT", started.elapsed());
    assert!(demo.stdout().contains("demo stopped"), "{}", demo.output());
    assert!(
        demo.leftovers().is_empty(),
        "left behind: {:?}",
        demo.leftovers()
    );
    for port in api_port..api_port + 3 {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "API port {port} still taken after the demo stopped"
        );
    }
}

#[test]
fn netns_demo_check_only_leaves_nothing_behind() {
    if !lab_allowed() {
        return;
    }
    // One lab at a time: other labs' takeover timings and this demo's settling share
    // the two cores.
    let _serial = lock();
    let mut demo = Demo::spawn(&["--netns".into(), "--check-only".into()]);
    let status = demo.wait(Duration::from_secs(180));
    let out = demo.stdout();
    let prefix = out
        .split("namespaces ")
        .nth(1)
        .and_then(|rest| rest.split('-').next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no namespace prefix printed\n{}", demo.output()));
    assert!(prefix.starts_with("bdemo"), "{prefix}");
    // Nothing left, whatever the outcome: checked before the outcome is asserted.
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let left: Vec<String> = String::from_utf8_lossy(&netns.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("{prefix}-")))
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let link = Command::new("ip")
        .args(["link", "show", "dev", &prefix])
        .stderr(Stdio::null())
        .output()
        .expect("ip link show");
    assert!(!link.status.success(), "link {prefix} left behind");
    assert!(
        demo.leftovers().is_empty(),
        "left behind: {:?}",
        demo.leftovers()
    );
    assert!(status.success(), "exit {status}\n{}", demo.output());
    assert_facts(&out);
    assert!(
        out.contains("one socket on each port of 198.18.60.100:"),
        "the self-check went through the VIP:\n{out}"
    );
}
