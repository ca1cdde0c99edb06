//! The notify command, run on every state transition (keepalived's
//! `notify` script). It runs detached from the VRRP loop: a slow or hung
//! script never delays an advertisement; it is killed after a timeout.
//!
//! Invocation: `program [args...] <new-state> <old-state> <reason>`, with the
//! same facts in the environment: `BALLAST_VRRP_STATE`, `BALLAST_VRRP_FROM`,
//! `BALLAST_VRRP_REASON`, `BALLAST_VRRP_VRID`, `BALLAST_VRRP_INTERFACE`,
//! `BALLAST_VRRP_PRIORITY`.

use std::process::Stdio;
use std::time::Duration;

use tracing::{debug, warn};

use super::NotifyCommand;
use crate::state::{TransitionReason, VrrpState};

/// A notify command that runs longer is killed.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) struct Transition<'a> {
    pub from: VrrpState,
    pub to: VrrpState,
    pub reason: TransitionReason,
    pub vrid: u8,
    pub interface: &'a str,
    pub priority: u8,
}

pub(super) fn run(cmd: &NotifyCommand, t: Transition<'_>) {
    let mut c = tokio::process::Command::new(&cmd.program);
    c.args(&cmd.args)
        .arg(t.to.as_str())
        .arg(t.from.as_str())
        .arg(t.reason.as_str())
        .env("BALLAST_VRRP_STATE", t.to.as_str())
        .env("BALLAST_VRRP_FROM", t.from.as_str())
        .env("BALLAST_VRRP_REASON", t.reason.as_str())
        .env("BALLAST_VRRP_VRID", t.vrid.to_string())
        .env("BALLAST_VRRP_INTERFACE", t.interface)
        .env("BALLAST_VRRP_PRIORITY", t.priority.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let program = cmd.program.display().to_string();
    match c.spawn() {
        Ok(mut child) => {
            tokio::spawn(async move {
                match tokio::time::timeout(NOTIFY_TIMEOUT, child.wait()).await {
                    Ok(Ok(status)) if status.success() => debug!(%program, "notify done"),
                    Ok(Ok(status)) => warn!(%program, %status, "notify command failed"),
                    Ok(Err(e)) => warn!(%program, error = %e, "notify command wait failed"),
                    // Dropping `child` kills it (kill_on_drop).
                    Err(_) => warn!(%program, "notify command timed out, killed"),
                }
            });
        }
        Err(e) => warn!(%program, error = %e, "notify command could not start"),
    }
}
