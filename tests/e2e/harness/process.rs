//! Processes by PID, from `/proc`: alive or gone, the image they run, their descendants,
//! and signals. The live-upgrade tests need these because the process serving a node
//! changes under the test: after an upgrade it is no longer the child the harness spawned.

#![allow(unsafe_code)] // `libc::kill` only; no memory is shared with the callee.

use std::path::PathBuf;

pub use libc::{SIGKILL, SIGUSR2};

/// Sends `sig` to `pid`. `Err` when there is no such process (ESRCH) or it is not ours.
pub fn send_signal(pid: u32, sig: libc::c_int) -> std::io::Result<()> {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    };
    // PIDs 0 and 1 (and negatives, excluded by the type) would signal groups or init.
    if raw <= 1 || pid == std::process::id() {
        return Err(std::io::Error::from_raw_os_error(libc::EPERM));
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(raw, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The one-letter state from `/proc/PID/stat` (`R`, `S`, `Z`, ...); `None` when the PID
/// does not exist.
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (comm) S ...": comm may hold spaces and parentheses, the state follows the
    // last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// Runs: exists and is neither a zombie nor dead.
pub fn is_running(pid: u32) -> bool {
    matches!(state(pid), Some(s) if s != 'Z' && s != 'X' && s != 'x')
}

/// The image the process runs, as `/proc/PID/exe` shows it (ends in ` (deleted)` when
/// the file it was started from has been replaced or removed).
pub fn exe(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// The process's parent PID.
pub fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The process's children now (every thread's `children` list).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Every descendant of `pid` now (children first, then theirs), bounded in depth.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut level = vec![pid];
    for _ in 0..8 {
        let next: Vec<u32> = level.iter().flat_map(|&p| children(p)).collect();
        if next.is_empty() {
            break;
        }
        out.extend(&next);
        level = next;
    }
    out
}

/// The process carries `marker` in its environment (`KEY=VALUE`) or in its command line:
/// how the harness tells its own processes from a stranger that reused a recorded PID.
pub fn carries(pid: u32, marker: &str) -> bool {
    let has = |file: &str| {
        std::fs::read(format!("/proc/{pid}/{file}")).is_ok_and(|raw| {
            raw.split(|&b| b == 0)
                .any(|part| String::from_utf8_lossy(part).contains(marker))
        })
    };
    has("environ") || has("cmdline")
}

/// Unix time in ms (the clock `ProcessInfo` and `UpgradeReport` use).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(is_running(me));
        assert!(exe(me).is_some());
        assert!(parent(me).is_some());
        assert_eq!(state(u32::MAX), None);
        // Never signals itself, init or a group.
        assert!(send_signal(me, 0).is_err());
        assert!(send_signal(1, 0).is_err());
        assert!(send_signal(0, 0).is_err());
    }

    #[test]
    fn sees_a_child_and_its_end() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        assert!(is_running(pid));
        assert!(descendants(std::process::id()).contains(&pid));
        send_signal(pid, SIGKILL).expect("kill");
        let _ = child.wait();
        assert!(!is_running(pid));
    }
}
