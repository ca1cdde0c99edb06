//! What a lab does when its prerequisites are missing (root, iproute2, keepalived,
//! nftables, ansible-playbook, ...): the one place that decides it, included with
//! `#[path]` by every test crate that has a lab (vrrp/tests/lab/mod.rs, which the
//! `ballast` e2e tests include in turn, and tests/ansible/lab.rs).
//!
//! A lab that cannot run FAILS with the reason, so that a skipped lab never reads as
//! a pass. The reader may opt out explicitly with `BALLAST_ALLOW_SKIP=1` (README,
//! "Tests"): the lab is then skipped and says so on a line of its own,
//! `SKIPPED-LAB: <lab> (<test>): <why>`, which `.ci/run` counts in its closing line. Under
//! `CI=true` a lab that cannot run is always a failure, opt-out or not.

use std::io::Write;

/// The environment variable that lets a lab be skipped outside CI.
pub const ALLOW_SKIP_VAR: &str = "BALLAST_ALLOW_SKIP";

/// The start of the line a skipped lab prints (counted by `.ci/run`).
pub const SKIP_MARKER: &str = "SKIPPED-LAB:";

/// What to do with a lab that cannot run here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Fail the test with the reason.
    Fail,
    /// Skip it, with the marker line.
    Skip,
}

/// The policy from the values of `CI` and `BALLAST_ALLOW_SKIP`: a skip only when the
/// reader opted out (`BALLAST_ALLOW_SKIP=1`) and not under `CI=true`.
pub fn policy(ci: Option<&str>, allow_skip: Option<&str>) -> Missing {
    if ci == Some("true") {
        return Missing::Fail;
    }
    if allow_skip == Some("1") {
        Missing::Skip
    } else {
        Missing::Fail
    }
}

/// The lab `lab` cannot run here because of `why`: panics with the reason, or, when
/// the reader opted out, prints the marker line and returns (the caller then returns
/// from its test).
pub fn cannot_run(lab: &str, why: &str) {
    let ci = std::env::var("CI").ok();
    let allow = std::env::var(ALLOW_SKIP_VAR).ok();
    match policy(ci.as_deref(), allow.as_deref()) {
        Missing::Fail if ci.as_deref() == Some("true") => {
            panic!("{lab} cannot run under CI=true: {why}")
        }
        Missing::Fail => panic!(
            "{lab} cannot run: {why}. Install what the labs need as root (`bash .ci/run` does), \
             or skip the labs explicitly with {ALLOW_SKIP_VAR}=1"
        ),
        Missing::Skip => {
            // Straight to the process's stderr, past the test harness's capture, so that
            // the line shows in `cargo test`'s output (print macros are captured).
            // libtest names each test's thread after the test.
            let test = match std::thread::current().name() {
                Some(name) if name != "main" => format!(" ({name})"),
                _ => String::new(),
            };
            let line = format!("{SKIP_MARKER} {lab}{test}: {why}\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    #[test]
    fn ci_true_fails_even_with_the_opt_out() {
        assert_eq!(policy(Some("true"), None), Missing::Fail);
        assert_eq!(policy(Some("true"), Some("1")), Missing::Fail);
    }

    #[test]
    fn the_opt_out_skips_outside_ci() {
        assert_eq!(policy(None, Some("1")), Missing::Skip);
        assert_eq!(policy(Some("false"), Some("1")), Missing::Skip);
    }

    #[test]
    fn neither_fails() {
        assert_eq!(policy(None, None), Missing::Fail);
        assert_eq!(policy(Some("false"), None), Missing::Fail);
        // Only "1" opts out: an empty or other value is not an explicit choice.
        assert_eq!(policy(None, Some("")), Missing::Fail);
        assert_eq!(policy(None, Some("0")), Missing::Fail);
        assert_eq!(policy(None, Some("yes")), Missing::Fail);
    }
}
