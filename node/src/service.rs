//! What service managers see of a running node, so that a live upgrade — after which
//! another process serves — is followed by them:
//!
//! - systemd (`Type=notify`, `NotifyAccess=all`): every serving process sends
//!   `MAINPID=<its pid>` and `READY=1` to `$NOTIFY_SOCKET` once it serves, and
//!   `STOPPING=1` when it stops. After an upgrade systemd then follows the new
//!   process, and the old one's exit is not the service's.
//! - Anything else (the Ansible role's `direct` manager, init scripts): `--pid-file`,
//!   rewritten by every serving process (the new one of an upgrade gets the same
//!   arguments), removed on a clean stop if it still names this process.

use std::io;
use std::path::Path;

/// Sends `state` to systemd's notification socket; `Ok(false)` without one.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    match path.as_encoded_bytes().strip_prefix(b"@") {
        // An abstract socket (systemd's default for user services).
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(state.as_bytes(), Path::new(&path))?;
        }
    }
    Ok(true)
}

/// This process serves: tells systemd (if it is watching) and rewrites the pid file.
pub fn serving(pid_file: Option<&Path>) {
    let pid = std::process::id();
    match notify(&format!("MAINPID={pid}\nREADY=1")) {
        Ok(true) => tracing::info!(pid, "told systemd this process serves"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "cannot notify systemd"),
    }
    if let Some(path) = pid_file {
        if let Err(e) = write_pid_file(path, pid) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the pid file");
        }
    }
}

/// A clean stop: tells systemd, and removes the pid file if it names this process.
pub fn stopping(pid_file: Option<&Path>) {
    let _ = notify("STOPPING=1");
    if let Some(path) = pid_file {
        let ours = std::fs::read_to_string(path)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Written whole or not at all (a reader never sees half a pid).
fn write_pid_file(path: &Path, pid: u32) -> io::Result<()> {
    let tmp = path.with_extension("pid.tmp");
    std::fs::write(&tmp, format!("{pid}\n"))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_file_names_the_serving_process_and_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ballast.pid");
        serving(Some(&path));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        stopping(Some(&path));
        assert!(!path.exists());
        // A file naming another process (the new one of an upgrade) stays.
        std::fs::write(&path, "1\n").unwrap();
        stopping(Some(&path));
        assert!(path.exists());
    }

    #[test]
    fn systemd_hears_of_the_serving_process() {
        let dir = tempfile::tempdir().unwrap();
        let socket_path = dir.path().join("notify");
        let listener = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
        // The only test in this binary that touches NOTIFY_SOCKET.
        std::env::set_var("NOTIFY_SOCKET", &socket_path);
        let sent = notify("MAINPID=7\nREADY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(sent.unwrap());
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"MAINPID=7\nREADY=1");
    }
}
