//! `ballast check --config FILE` on good and bad configs.
//!
//! Contract: a valid config exits 0 (printing a summary); an invalid one exits 1 with lines
//! like `error: /path/ballast.toml:23: backend "b": duplicate server name "s1"` on stderr:
//! the file, the line, the field or object, the reason.
//!
//! Each bad config below marks its offending line with `# @err`. Where the offending
//! object is a whole table, the table's header line is also accepted and marked `# @alt`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::node::ballast_bin;

const NODE: &str = r#"[node]
id = 1
data_dir = "/tmp/ballast-e2e-check-unused"
api_listen = "127.0.0.1:19090"
"#;

const GOOD_BACKEND: &str = r#"
[[backend]]
name = "b"
balance = "leastconn"
timeout_server = "15h"
timeout_connect = "5s"
timeout_queue = "30s"
stick = { on = "src", size = 200000, expire = "16h" }
health = { kind = "tcp", interval = "2s", timeout = "1s", rise = 2, fall = 3 }
servers = [
  { name = "s1", addr = "127.0.0.1:7001", maxconn = 300 },
  { name = "s2", addr = "127.0.0.1:7002", maxconn = 300, weight = 2, admin = "drain" },
]
"#;

const GOOD_FRONTEND: &str = r#"
[[frontend]]
name = "f"
bind = ["127.0.0.1:8001-8003"]
backend = "b"
timeout_client = "15h"
"#;

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Writes `text` to a fresh `ballast.toml` and runs `ballast check` on it (at most 10 s).
fn check(text: &str) -> (tempfile::TempDir, String, Outcome) {
    let dir = tempfile::Builder::new()
        .prefix("ballast-check-")
        .tempdir()
        .expect("tempdir");
    let path = dir.path().join("ballast.toml");
    std::fs::write(&path, text).expect("write config");
    let out = run_check(dir.path(), &path);
    (dir, path.display().to_string(), out)
}

fn run_check(dir: &Path, config: &Path) -> Outcome {
    let out_path = dir.join("stdout");
    let err_path = dir.join("stderr");
    let mut child = Command::new(ballast_bin())
        .arg("check")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("start ballast check");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ballast check did not exit within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Outcome {
        code: status.code(),
        stdout: std::fs::read_to_string(out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(err_path).unwrap_or_default(),
    }
}

/// 1-based numbers of the lines carrying `marker`.
fn lines_marked(text: &str, marker: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(marker))
        .map(|(i, _)| i + 1)
        .collect()
}

/// Asserts that `ballast check` rejects `text` with exit code 1 and an stderr line
/// `error: <path>:<line>: ...` that points at an `@err` (or `@alt`) line, contains the
/// `reason` phrase and mentions every string in `names`.
fn expect_error(text: &str, reason: &str, names: &[&str]) {
    let mut allowed = lines_marked(text, "# @err");
    assert!(!allowed.is_empty(), "test bug: no # @err marker");
    allowed.extend(lines_marked(text, "# @alt"));
    let (_dir, path, out) = check(text);
    let context = || {
        format!(
            "\n--- config {path}\n{}\n--- exit {:?}\n--- stderr\n{}--- stdout\n{}",
            numbered(text),
            out.code,
            out.stderr,
            out.stdout
        )
    };
    eprint!("ballast check stderr: {}", out.stderr);
    assert_eq!(out.code, Some(1), "exit code for a bad config{}", context());
    let good_line = out.stderr.lines().any(|l| {
        l.trim_start().starts_with("error:")
            && allowed.iter().any(|n| l.contains(&format!("{path}:{n}:")))
            && l.contains(reason)
            && names.iter().all(|n| l.contains(n))
    });
    assert!(
        good_line,
        "expected a stderr line `error: {path}:<one of {allowed:?}>: ...` containing \
         {reason:?} and {names:?}{}",
        context()
    );
}

fn numbered(text: &str) -> String {
    text.lines()
        .enumerate()
        .map(|(i, l)| format!("{:>3} {l}\n", i + 1))
        .collect()
}

#[test]
fn good_configs_pass_check() {
    let minimal = format!("{NODE}{GOOD_FRONTEND}{GOOD_BACKEND}");
    let (_dir, path, out) = check(&minimal);
    assert_eq!(
        out.code,
        Some(0),
        "ballast check {path} on a good config\nstderr:\n{}",
        out.stderr
    );
    assert!(
        !out.stdout.trim().is_empty(),
        "check prints a summary on success"
    );

    // Defaults: role, balance, timeouts, health and stick are all optional.
    let defaults = format!(
        "{NODE}\n[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:8001\", \"127.0.0.1:8005-8006\"]\n\
         backend = \"b\"\n\n[[backend]]\nname = \"b\"\nservers = [{{ name = \"s1\", addr = \"127.0.0.1:7001\" }}]\n"
    );
    let (_dir, path, out) = check(&defaults);
    assert_eq!(
        out.code,
        Some(0),
        "{path}: minimal config with defaults\nstderr:\n{}",
        out.stderr
    );

    // DESIGN.md's example, node-local part included ([cluster], [vrrp]).
    let design = r#"[node]
id = 1
role = "lb"
data_dir = "/var/lib/ballast"
api_listen = "0.0.0.0:9090"
raft_listen = "198.18.0.11:9091"
token_file = "/etc/ballast/token"

[cluster]
members = [
  { id = 1, raft = "198.18.0.11:9091", api = "198.18.0.11:9090" },
  { id = 2, raft = "198.18.0.12:9091", api = "198.18.0.12:9090" },
  { id = 3, raft = "198.18.0.13:9091", api = "198.18.0.13:9090", role = "witness" },
]

[vrrp]
interface = "eth0"
vrid = 51
priority = 150
advert_interval = "1s"
virtual_ips = ["198.18.0.100/24"]
preempt = true

[[frontend]]
name = "tcp_front"
bind = ["0.0.0.0:8001-8003"]
backend = "tcp_back"
timeout_client = "15h"

[[backend]]
name = "tcp_back"
balance = "leastconn"
timeout_server = "15h"
timeout_connect = "5s"
timeout_queue = "30s"
stick = { on = "src", size = 200000, expire = "16h" }
health = { kind = "tcp", interval = "2s", timeout = "1s", rise = 2, fall = 3 }
servers = [
  { name = "server1", addr = "127.0.0.1:7001", maxconn = 300 },
  { name = "server2", addr = "127.0.0.1:7002", maxconn = 300 },
]
"#;
    let (_dir, path, out) = check(design);
    assert_eq!(
        out.code,
        Some(0),
        "{path}: DESIGN.md's example\nstderr:\n{}",
        out.stderr
    );
}

#[test]
fn unknown_key_in_backend() {
    let text = format!(
        "{NODE}{GOOD_FRONTEND}\n[[backend]]\nname = \"b\"\nbogus_key = 1 # @err\n\
         servers = [{{ name = \"s1\", addr = \"127.0.0.1:7001\" }}]\n"
    );
    expect_error(&text, "unknown field", &["bogus_key"]);
}

#[test]
fn unknown_key_in_server() {
    let text = format!(
        "{NODE}{GOOD_FRONTEND}\n[[backend]]\nname = \"b\"\nservers = [\n\
         \x20 {{ name = \"s1\", addr = \"127.0.0.1:7001\" }},\n\
         \x20 {{ name = \"s2\", addr = \"127.0.0.1:7002\", wieght = 2 }}, # @err\n]\n"
    );
    expect_error(&text, "unknown field", &["wieght"]);
}

#[test]
fn unknown_key_in_node() {
    let text = format!("{NODE}colour = \"blue\" # @err\n{GOOD_FRONTEND}{GOOD_BACKEND}");
    expect_error(&text, "unknown field", &["colour"]);
}

#[test]
fn bad_duration() {
    let text = format!(
        "{NODE}{GOOD_FRONTEND}\n[[backend]]\nname = \"b\"\ntimeout_server = \"5x\" # @err\n\
         servers = [{{ name = \"s1\", addr = \"127.0.0.1:7001\" }}]\n"
    );
    expect_error(&text, "invalid duration", &[]);
}

#[test]
fn bad_port_range() {
    let text = format!(
        "{NODE}\n[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:8003-8001\"] # @err\n\
         backend = \"b\"\n{GOOD_BACKEND}"
    );
    expect_error(&text, "invalid port range", &[]);
}

#[test]
fn duplicate_backend_name() {
    let text = format!(
        "{NODE}{GOOD_FRONTEND}{GOOD_BACKEND}\n[[backend]] # @alt\nname = \"b\" # @err\n\
         servers = [{{ name = \"s9\", addr = \"127.0.0.1:7009\" }}]\n"
    );
    expect_error(&text, "duplicate", &["\"b\""]);
}

#[test]
fn duplicate_server_name() {
    let text = format!(
        "{NODE}{GOOD_FRONTEND}\n[[backend]]\nname = \"b\"\nservers = [\n\
         \x20 {{ name = \"s1\", addr = \"127.0.0.1:7001\" }},\n\
         \x20 {{ name = \"s2\", addr = \"127.0.0.1:7002\" }},\n\
         \x20 {{ name = \"s1\", addr = \"127.0.0.1:7003\" }}, # @err\n]\n"
    );
    expect_error(&text, "duplicate", &["\"s1\""]);
}

#[test]
fn frontend_names_missing_backend() {
    let text = format!(
        "{NODE}\n[[frontend]] # @alt\nname = \"f\"\nbind = [\"127.0.0.1:8001\"]\n\
         backend = \"nope\" # @err\n{GOOD_BACKEND}"
    );
    expect_error(&text, "unknown backend", &["nope"]);
}

#[test]
fn overlapping_binds_across_frontends() {
    let text = format!(
        "{NODE}{GOOD_FRONTEND}\n[[frontend]] # @alt\nname = \"g\"\n\
         bind = [\"127.0.0.1:8005\", \"127.0.0.1:8003\"] # @err\nbackend = \"b\"\n{GOOD_BACKEND}"
    );
    expect_error(&text, "overlap", &[]);
}

/// A wildcard bind overlaps every address on the same port: both cannot be bound.
#[test]
fn overlapping_wildcard_bind() {
    let text = format!(
        "{NODE}{GOOD_FRONTEND}\n[[frontend]] # @alt\nname = \"g\"\n\
         bind = [\"0.0.0.0:8002\"] # @err\nbackend = \"b\"\n{GOOD_BACKEND}"
    );
    expect_error(&text, "overlap", &[]);
}
