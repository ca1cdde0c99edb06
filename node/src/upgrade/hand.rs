//! The old process's side of a live upgrade.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ballast_api::types::{ProcessInfo, UpgradeReport};
use ballast_dataplane::proxy::handover::Handover;
use ballast_dataplane::proxy::{now_ms, DataPlane};
use ballast_raft_store::replica::Replica;
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::protocol::{FromNew, FromOld, Offer, Released, VrrpCarry, FORMAT, SOCKET_ENV};
use super::{wire, UpgradeError};
use crate::cluster::Journal;
use crate::config::Config;

/// Longest `<new binary> check` may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// From starting the new process to its hello, and from the offer to its prepared:
/// what "does not confirm" means.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// From the offer to the new process's prepared: the relays stand still meanwhile, so
/// this bounds the longest pause a failed upgrade can cause (adopting 9,000
/// connections takes well under a second).
const PREPARE_TIMEOUT: Duration = Duration::from_secs(3);
/// From the commit to the new process serving (it opens Raft, VRRP and the API).
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long connections may take to park (they do within microseconds).
const FREEZE_BOUND: Duration = Duration::from_secs(2);
/// After the new process serves: time for the answer to `POST /v1/node/upgrade` to
/// leave before this process exits.
const EXIT_DELAY: Duration = Duration::from_millis(200);

/// What the upgrade needs of the running node, set once it has started.
pub struct Parts {
    pub plane: Option<Arc<DataPlane>>,
    pub replica: Arc<Replica>,
    pub journal: Option<Arc<Journal>>,
    pub vip: Arc<Mutex<Option<crate::vip::Vip>>>,
    /// A duplicate of the API's listening socket (the API server owns the original).
    pub api_listener: Option<std::net::TcpListener>,
    /// The API's accept loop: stopped at the commit so no request lands here after.
    pub api_task: Mutex<Option<JoinHandle<()>>>,
    /// Tasks that feed Raft from the plane and back; stopped with Raft.
    pub loops: Mutex<Vec<JoinHandle<()>>>,
}

pub struct Upgrader {
    config: Config,
    /// The path this process was started from: an upgrade runs the file there now.
    binary: PathBuf,
    /// This process's arguments, given to the new one as they are.
    args: Vec<OsString>,
    process: Mutex<ProcessInfo>,
    busy: AtomicBool,
    parts: OnceLock<Parts>,
}

impl Upgrader {
    /// `last_upgrade`: the hand-over that started this process, if one did.
    pub fn new(config: Config, upgrades: u64, last_upgrade: Option<UpgradeReport>) -> Arc<Self> {
        let binary = current_binary();
        Arc::new(Upgrader {
            config,
            process: Mutex::new(ProcessInfo {
                pid: std::process::id(),
                started_at: now_ms(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                binary: binary.display().to_string(),
                upgrades,
                last_upgrade,
            }),
            binary,
            args: std::env::args_os().skip(1).collect(),
            busy: AtomicBool::new(false),
            parts: OnceLock::new(),
        })
    }

    pub fn set_parts(&self, parts: Parts) {
        if self.parts.set(parts).is_err() {
            warn!("the upgrader's parts were set twice; keeping the first");
        }
    }

    pub fn process(&self) -> ProcessInfo {
        self.process.lock().clone()
    }

    /// The final figures of the hand-over that started this process.
    pub fn record_upgrade(&self, report: UpgradeReport) {
        self.process.lock().last_upgrade = Some(report);
    }

    /// Runs a live upgrade. On success this process exits shortly after returning (the
    /// caller has that long to answer); on failure before the commit point it serves
    /// on, and after it (the new process died while starting) it exits non-zero.
    pub async fn upgrade(self: &Arc<Self>) -> Result<UpgradeReport, UpgradeError> {
        if self.busy.swap(true, Ordering::AcqRel) {
            warn!("live upgrade refused: an upgrade is already in progress");
            return Err(UpgradeError::Busy);
        }
        let result = self.clone().run().await;
        match &result {
            Ok(report) => {
                info!(
                    to_pid = report.to_pid,
                    connections = report.connections,
                    waiting = report.waiting,
                    listeners = report.listeners,
                    bytes_in_flight = report.bytes_in_flight,
                    pause_ms = report.pause_ms,
                    duration_ms = report.duration_ms,
                    "live upgrade done: the new process serves; exiting"
                );
                exit_soon(0);
            }
            Err(UpgradeError::AfterCommit(reason)) => {
                error!(reason = %reason, "live upgrade failed after the commit point: this process let go of everything; exiting");
                exit_soon(1);
            }
            Err(e) => {
                error!(error = %e, "live upgrade failed: this process keeps serving");
                self.busy.store(false, Ordering::Release);
            }
        }
        result
    }

    async fn run(self: Arc<Self>) -> Result<UpgradeReport, UpgradeError> {
        let at_ms = now_ms();
        if self.parts.get().is_none() {
            return Err(UpgradeError::NotStarted);
        }
        info!(binary = %self.binary.display(), "live upgrade: checking the new binary");
        std::fs::metadata(&self.binary).map_err(|source| UpgradeError::Missing {
            path: self.binary.display().to_string(),
            source,
        })?;
        self.check_config().await?;
        let socket_path = self.config.node.data_dir.join("handover.sock");
        let _ = std::fs::remove_file(&socket_path);
        let listener = UnixListener::bind(&socket_path)?;
        // Only this user may connect (the peer's pid is checked too).
        std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        let child = retry_busy(|| {
            std::process::Command::new(&self.binary)
                .args(&self.args)
                .env(SOCKET_ENV, &socket_path)
                .stdin(Stdio::null())
                .spawn()
        })
        .map_err(UpgradeError::Spawn)?;
        info!(pid = child.id(), "live upgrade: new process started");
        let runtime = Handle::current();
        let me = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut child = child;
            let result = me.converse(&runtime, &listener, &mut child, at_ms);
            if matches!(&result, Err(e) if !matches!(e, UpgradeError::AfterCommit(_))) {
                // Before the commit the new process must not live on: it holds
                // duplicates of everything, and would serve beside this one.
                let _ = child.kill();
                let _ = child.wait();
            }
            result
        })
        .await
        .map_err(UpgradeError::from);
        let _ = std::fs::remove_file(&socket_path);
        result?
    }

    /// `<binary> check --config <this node's config>`, bounded.
    async fn check_config(&self) -> Result<(), UpgradeError> {
        let mut attempts = 0;
        let run = loop {
            let started = tokio::process::Command::new(&self.binary)
                .arg("check")
                .arg("--config")
                .arg(&self.config.path)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn();
            match started {
                Err(e) if is_busy(&e) && attempts < BUSY_RETRIES => {
                    attempts += 1;
                    tokio::time::sleep(BUSY_WAIT).await;
                }
                started => break started.map_err(UpgradeError::Spawn)?.wait_with_output(),
            }
        };
        let output = tokio::time::timeout(CHECK_TIMEOUT, run)
            .await
            .map_err(|_| UpgradeError::CheckTimeout(CHECK_TIMEOUT))?
            .map_err(UpgradeError::Spawn)?;
        if output.status.success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&output.stderr).to_string()
            + &String::from_utf8_lossy(&output.stdout);
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(UpgradeError::Check {
            status: output.status.to_string(),
            output: tail.join(" / "),
        })
    }

    /// The conversation, on a blocking thread (the hand-over socket is a blocking one
    /// with timeouts; async work is run through `runtime`).
    fn converse(
        &self,
        runtime: &Handle,
        listener: &UnixListener,
        child: &mut Child,
        at_ms: u64,
    ) -> Result<UpgradeReport, UpgradeError> {
        let parts = self.parts.get().ok_or(UpgradeError::NotStarted)?;
        let mut socket = accept_child(listener, child)?;
        match wire::receive::<FromNew>(&mut socket).map_err(|e| silence(e.into(), child))? {
            (FromNew::Hello { format, .. }, _) if format == FORMAT => {}
            (
                FromNew::Hello {
                    format, version, ..
                },
                _,
            ) => {
                let reason = format!(
                    "version {version} speaks hand-over format {format}, this one {FORMAT}"
                );
                let _ = wire::send(&mut socket, &FromOld::Refused { reason }, &[]);
                return Err(UpgradeError::Format {
                    theirs: format,
                    ours: FORMAT,
                });
            }
            (other, _) => {
                return Err(UpgradeError::Protocol(format!(
                    "expected a hello, got {other:?}"
                )))
            }
        }
        let handover = match &parts.plane {
            Some(plane) => runtime
                .block_on(plane.freeze(FREEZE_BOUND))
                .map_err(|e| UpgradeError::Freeze(e.to_string()))?,
            None => Handover::default(),
        };
        match self.offer(parts, &mut socket, &handover, at_ms, child) {
            Ok(()) => {}
            Err(e) => {
                let _ = wire::send(
                    &mut socket,
                    &FromOld::Abort {
                        reason: e.to_string(),
                    },
                    &[],
                );
                roll_back(parts, runtime, handover);
                return Err(e);
            }
        }
        // The commit point: the connections resume in the new process as soon as it
        // reads this. This process's copies of the sockets close with `handover`.
        if let Err(e) = wire::send(&mut socket, &FromOld::Commit, &[]) {
            roll_back(parts, runtime, handover);
            return Err(e.into());
        }
        drop(handover);
        let released = self.let_go(parts, runtime, &mut socket)?;
        wire::send(&mut socket, &FromOld::Released(Box::new(released)), &[])
            .map_err(|e| UpgradeError::AfterCommit(e.to_string()))?;
        socket.set_read_timeout(Some(READY_TIMEOUT))?;
        match wire::receive::<FromNew>(&mut socket) {
            Ok((FromNew::Ready(report), _)) => Ok(report),
            Ok((other, _)) => Err(UpgradeError::AfterCommit(format!(
                "expected ready, got {other:?}"
            ))),
            Err(e) => Err(UpgradeError::AfterCommit(format!(
                "no ready within {READY_TIMEOUT:?}: {e}"
            ))),
        }
    }

    /// Sends the offer and waits for the new process to have adopted it.
    fn offer(
        &self,
        parts: &Parts,
        socket: &mut UnixStream,
        handover: &Handover,
        at_ms: u64,
        child: &mut Child,
    ) -> Result<(), UpgradeError> {
        if handover.stragglers > 0 {
            return Err(UpgradeError::Freeze(format!(
                "{} connections did not park within {FREEZE_BOUND:?}",
                handover.stragglers
            )));
        }
        let (model_json, model_revision) = parts.replica.read(|a| {
            (
                serde_json::to_string(&a.state.model),
                a.state.model_revision,
            )
        });
        let model_json = model_json.map_err(|e| UpgradeError::Internal(e.to_string()))?;
        let offer = Offer {
            from_pid: std::process::id(),
            at_ms,
            frozen_at_ms: handover.frozen_at_ms,
            upgrades: self.process.lock().upgrades,
            model_json,
            model_revision,
            plane: handover.state.clone(),
            listeners: handover
                .listeners
                .iter()
                .map(|(meta, group)| (meta.clone(), group.len()))
                .collect(),
            connections: handover
                .connections
                .iter()
                .map(|(m, _, _)| m.clone())
                .collect(),
            waiting: handover.waiting.iter().map(|(m, _)| m.clone()).collect(),
            api_listener: parts.api_listener.is_some(),
        };
        let mut fds: Vec<RawFd> = Vec::with_capacity(offer.descriptors());
        for (_, group) in &handover.listeners {
            fds.extend(group.iter().map(AsRawFd::as_raw_fd));
        }
        for (_, client, server) in &handover.connections {
            fds.push(client.as_raw_fd());
            fds.push(server.as_raw_fd());
        }
        fds.extend(handover.waiting.iter().map(|(_, c)| c.as_raw_fd()));
        fds.extend(parts.api_listener.iter().map(AsRawFd::as_raw_fd));
        wire::send(socket, &FromOld::Offer(Box::new(offer)), &fds)
            .map_err(|e| silence(e.into(), child))?;
        socket.set_read_timeout(Some(PREPARE_TIMEOUT))?;
        match wire::receive::<FromNew>(socket).map_err(|e| silence(e.into(), child))? {
            (
                FromNew::Prepared {
                    connections,
                    waiting,
                },
                _,
            ) => {
                info!(
                    connections,
                    waiting, "live upgrade: the new process has adopted everything"
                );
                Ok(())
            }
            (FromNew::Failed { reason }, _) => Err(UpgradeError::Prepare(reason)),
            (other, _) => Err(UpgradeError::Protocol(format!(
                "expected prepared, got {other:?}"
            ))),
        }
    }

    /// Past the commit point: stops the API's accept loop, VRRP (without a word: the
    /// new process goes on as master; told at once) and Raft, and takes the journal's
    /// pending decisions for the new process.
    fn let_go(
        &self,
        parts: &Parts,
        runtime: &Handle,
        socket: &mut UnixStream,
    ) -> Result<Released, UpgradeError> {
        if let Some(task) = parts.api_task.lock().take() {
            task.abort();
        }
        // VRRP first: its successor starts as soon as it hears of it, and every
        // millisecond here is a millisecond without adverts.
        let vip = parts.vip.lock().take();
        let vrrp = vip.and_then(|vip| match runtime.block_on(vip.abandon()) {
            Ok(gone) => Some(VrrpCarry::from_abandoned(&gone)),
            Err(e) => {
                warn!(error = %e, "live upgrade: VRRP did not leave cleanly; the new process starts it afresh");
                None
            }
        });
        let vrrp_master = vrrp.as_ref().is_some_and(|v| v.master);
        wire::send(socket, &FromOld::Vrrp(vrrp), &[])
            .map_err(|e| UpgradeError::AfterCommit(e.to_string()))?;
        runtime.block_on(parts.replica.shutdown());
        let journal = match &parts.journal {
            Some(journal) => {
                // A proposal that was under way fails now and puts its decisions back.
                let deadline = Instant::now() + Duration::from_secs(2);
                while journal.in_flight() > 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                for task in parts.loops.lock().drain(..) {
                    task.abort();
                }
                journal.export()
            }
            None => Default::default(),
        };
        info!(
            vrrp_master,
            journal_sticks = journal
                .sticks
                .iter()
                .map(|b| b.updates.len())
                .sum::<usize>(),
            "live upgrade: let go of Raft and VRRP"
        );
        Ok(Released { journal })
    }
}

/// Takes everything back after a hand-over that did not happen: the plane listens,
/// checks and relays again from the state it offered, and applies the current model
/// (a change committed while it was frozen was not applied).
fn roll_back(parts: &Parts, runtime: &Handle, handover: Handover) {
    let Some(plane) = &parts.plane else { return };
    let _inside = runtime.enter();
    plane.thaw(handover);
    let (model, revision) = parts
        .replica
        .read(|a| (a.state.model.clone(), a.state.model_revision));
    let applied = plane.apply_model(&model);
    if applied.errors.is_empty() {
        plane.mark_applied(revision);
    }
}

/// The hand-over connection from `child` (its pid checked), or why not within
/// [`STEP_TIMEOUT`].
fn accept_child(listener: &UnixListener, child: &mut Child) -> Result<UnixStream, UpgradeError> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        match listener.accept() {
            Ok((socket, _)) => {
                let peer = nix::sys::socket::getsockopt(
                    &socket,
                    nix::sys::socket::sockopt::PeerCredentials,
                )
                .map(|c| c.pid() as u32);
                if peer.ok() != Some(child.id()) {
                    warn!(peer = ?peer, "hand-over socket: a process other than the new one connected; ignored");
                    continue;
                }
                socket.set_nonblocking(false)?;
                socket.set_read_timeout(Some(STEP_TIMEOUT))?;
                return Ok(socket);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(status) = child.try_wait()? {
            return Err(UpgradeError::Exited(status.to_string()));
        }
        if Instant::now() >= deadline {
            return Err(UpgradeError::Timeout(STEP_TIMEOUT));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Names a silent hand-over socket for what it is: the new process exited, or hangs.
fn silence(error: UpgradeError, child: &mut Child) -> UpgradeError {
    if !error.is_silence() {
        return error;
    }
    // A crashing process closes the socket a moment before it can be reaped.
    for _ in 0..50 {
        if let Ok(Some(status)) = child.try_wait() {
            return UpgradeError::Exited(status.to_string());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    UpgradeError::Timeout(STEP_TIMEOUT)
}

/// The path this process runs from, as the file system names it now. Once a package
/// upgrade has replaced the file, the kernel shows the running image as
/// "<path> (deleted)": the path is still where the new binary is.
fn current_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("ballast"));
    let text = exe.to_string_lossy();
    match text.strip_suffix(" (deleted)") {
        Some(path) => Path::new(path).to_path_buf(),
        None => exe,
    }
}

/// A binary that was just written may still be open for writing in a process that
/// forked meanwhile (ETXTBSY until that one execs): retried briefly rather than failed.
const BUSY_RETRIES: u32 = 20;
const BUSY_WAIT: Duration = Duration::from_millis(25);

fn is_busy(error: &std::io::Error) -> bool {
    error.raw_os_error() == Some(libc::ETXTBSY)
}

fn retry_busy<T>(mut start: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let mut attempts = 0;
    loop {
        match start() {
            Err(e) if is_busy(&e) && attempts < BUSY_RETRIES => {
                attempts += 1;
                std::thread::sleep(BUSY_WAIT);
            }
            result => return result,
        }
    }
}

fn exit_soon(code: i32) {
    std::thread::spawn(move || {
        std::thread::sleep(EXIT_DELAY);
        std::process::exit(code);
    });
}
