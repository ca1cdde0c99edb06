//! The Ansible lab as a test of `cargo test --workspace`: builds `ballast`, runs
//! `tests/ansible/lab.sh` (the real `ansible-playbook` over SSH against three hosts in
//! network namespaces) and checks its figures.
//!
//! Needs root, iproute2, openssh-server, ansible-core, ansible-lint and yamllint
//! (`.ci/run` installs them). A machine that cannot run the lab fails the test with
//! the reason, unless the reader skips it explicitly with `BALLAST_ALLOW_SKIP=1`
//! outside CI (tests/skip_policy.rs, shared with the other labs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[path = "../skip_policy.rs"]
mod skip_policy;

/// The script's "cannot run here" exit status.
const CANNOT_RUN: i32 = 77;

/// Fails with the reason, or skips (returns false) when the reader opted out.
fn cannot_run(why: &str) -> bool {
    skip_policy::cannot_run("the Ansible lab", why);
    false
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `cargo build -p ballast` (a no-op after `cargo test --workspace` built it) and the
/// path of the binary, as cargo reports it.
fn build_ballast(repo: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo)
        .args(["build", "-p", "ballast", "--bin", "ballast"])
        .arg("--message-format=json-render-diagnostics")
        .stderr(Stdio::inherit());
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("run cargo build -p ballast");
    assert!(out.status.success(), "cargo build -p ballast failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"executable\"") && l.contains("\"ballast\""))
        .filter_map(|l| {
            let start = l.find("\"executable\":\"")? + "\"executable\":\"".len();
            let end = start + l[start..].find('"')?;
            Some(PathBuf::from(&l[start..end]))
        })
        .next_back()
        .expect("cargo reported no ballast executable")
}

#[test]
fn ansible_deploys_changes_live_and_upgrades_live_without_breaking_a_connection() {
    if !is_root() && !cannot_run("not running as root (network namespaces, mounts)") {
        return;
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = here.join("../..");
    let ballast = build_ballast(&repo);
    let out = Command::new("bash")
        .arg(here.join("lab.sh"))
        .arg(&ballast)
        .stdin(Stdio::null())
        .output()
        .expect("run tests/ansible/lab.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    println!("{stdout}");
    match out.status.code() {
        Some(0) => {}
        Some(CANNOT_RUN) => {
            // lab.sh's last line: "[lab hh:mm:ss] cannot run the lab: <why>".
            let last = stderr.lines().last().unwrap_or("see above");
            cannot_run(
                last.split_once("cannot run the lab: ")
                    .map_or(last, |(_, why)| why),
            );
            return;
        }
        other => panic!("the Ansible lab failed (exit {other:?}): see its output above"),
    }

    let figures: BTreeMap<&str, &str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |key: &str| -> &str {
        figures
            .get(key)
            .unwrap_or_else(|| panic!("the lab reported no {key}: {figures:?}"))
    };
    let number = |key: &str| -> u64 {
        get(key)
            .parse()
            .unwrap_or_else(|_| panic!("{key} is not a number: {}", get(key)))
    };
    assert_eq!(get("lint"), "clean");
    assert!(
        number("deploy_changed") > 0,
        "the first run changed nothing"
    );
    assert_eq!(
        number("second_run_changed"),
        0,
        "a second run must change nothing"
    );
    assert!(
        number("change_run_changed") > 0,
        "the server change was not applied"
    );
    assert!(!get("held_connection_survived").is_empty());
    assert!(get("change_new_connections").contains("be3:"));
    assert_eq!(
        number("final_run_changed"),
        0,
        "the run after the upgrade must change nothing"
    );
    // The rolling upgrade: lb nodes upgraded live, held connections unbroken with
    // every byte echoed, no new connection refused, the VIP never off lb1.
    assert_eq!(number("stream_broken"), 0, "held connections broke");
    assert_eq!(
        number("stream_stale"),
        0,
        "held connections stopped echoing"
    );
    assert!(number("stream_connections") >= 30);
    assert_eq!(
        number("stream_bytes_echoed"),
        number("stream_bytes_sent"),
        "not every byte sent was echoed"
    );
    assert_eq!(number("probe_failures"), 0, "new connections failed");
    assert_eq!(number("vip_samples_off_lb1"), 0, "the VIP moved");
    assert!(number("vip_samples") > 0);
    assert_eq!(
        get("live_upgrades").split(',').count(),
        3,
        "every node upgrades live (both lb nodes and the witness): {}",
        get("live_upgrades")
    );
    println!(
        "Ansible lab: deploy {}s, second run changed={}, live change kept pids {}, upgrade {}s \
         (live: {}), {} held connections: {} broken, {} of {} bytes echoed, longest echo {} ms; \
         {} probes, {} failed, longest gap {} ms; VIP on lb1 in {} of {} samples",
        get("deploy_seconds"),
        get("second_run_changed"),
        get("change_pids"),
        get("upgrade_seconds"),
        get("live_upgrades"),
        get("stream_connections"),
        get("stream_broken"),
        get("stream_bytes_echoed"),
        get("stream_bytes_sent"),
        get("stream_max_round_ms"),
        get("probe_attempts"),
        get("probe_failures"),
        get("max_probe_gap_ms"),
        number("vip_samples") - number("vip_samples_off_lb1"),
        get("vip_samples"),
    );
}
