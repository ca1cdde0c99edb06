//! The new process's side of a live upgrade: connect to the hand-over socket the old
//! process named, take what it offers into a paused data plane, and resume it all at
//! the commit.

use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ballast_api::types::UpgradeReport;
use ballast_dataplane::metrics::Metrics;
use ballast_dataplane::proxy::handover::{bytes_in_flight, Adopted, ListenerMeta};
use ballast_dataplane::proxy::{now_ms, DataPlane, ReplicationSink};
use ballast_model::model::ClusterModel;
use tracing::{info, warn};

use super::protocol::{FromNew, FromOld, Offer, VrrpCarry, FORMAT};
use super::{wire, UpgradeError};
use crate::cluster::Journal;
use crate::config::Config;

/// How long the new process waits for each of the old process's steps (the offer after
/// its hello, the commit after its prepared).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `finish` waits for every adopted connection to relay again.
const RESUME_WAIT: Duration = Duration::from_secs(5);
/// After the commit, how long the old process may take to let go of Raft and VRRP.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// A data plane taken over, serving, and what the node needs to finish starting.
pub struct TakenOver {
    /// `None` on a witness (it hands over its API socket and Raft only).
    pub plane: Option<Arc<DataPlane>>,
    /// The API's listening socket, when the old process had one.
    pub api_listener: Option<TcpListener>,
    /// Where the old process's VRRP instance stood: how this one's starts.
    pub vrrp: Option<VrrpCarry>,
    /// Upgrades in the lineage, this one included.
    pub upgrades: u64,
    report: UpgradeReport,
    /// When the old plane froze (Unix ms): the pause runs from here until the last
    /// adopted connection relays again.
    frozen_at_ms: u64,
    /// To tell the old process this one serves (`None` if it went silent).
    socket: Option<UnixStream>,
}

impl TakenOver {
    /// Waits for the old process to have let go of Raft (so `raft.redb` can be
    /// opened) and takes in its journal's unreplicated decisions. Past the commit:
    /// a silent old process is logged, and this one goes on.
    pub async fn released(&mut self, journal: Option<&Journal>) {
        let Some(mut socket) = self.socket.take() else {
            return;
        };
        let received = tokio::task::spawn_blocking(move || {
            let released = match wire::receive::<FromOld>(&mut socket) {
                Ok((FromOld::Released(released), _)) => Ok(released),
                Ok((other, _)) => Err(UpgradeError::Protocol(format!(
                    "expected the old process to let go of Raft, got {other:?}"
                ))),
                Err(e) => Err(e.into()),
            };
            (socket, released)
        })
        .await;
        match received {
            Ok((socket, Ok(released))) => {
                if let Some(journal) = journal {
                    journal.import(released.journal);
                }
                self.socket = Some(socket);
            }
            Ok((_, Err(e))) => {
                warn!(error = %e, "live upgrade: the old process did not let go cleanly; serving on without its unreplicated decisions");
            }
            Err(e) => warn!(error = %e, "live upgrade: waiting for the old process failed"),
        }
    }

    /// Stamps the hand-over's duration (this process is up but for its API) and returns
    /// the final figures. Called before the API serves: the requests that queued on the
    /// API socket during the hand-over are answered first, and must not see a report
    /// without its duration.
    pub async fn finish(&mut self) -> UpgradeReport {
        if let Some(plane) = &self.plane {
            if self.report.connections > 0 {
                match plane.wait_resumed(RESUME_WAIT).await {
                    Some(all_ms) => {
                        self.report.pause_ms = all_ms.saturating_sub(self.frozen_at_ms);
                    }
                    None => {
                        warn!(wait = ?RESUME_WAIT, "live upgrade: some handed-over connections have not resumed yet")
                    }
                }
            }
        }
        self.report.duration_ms = now_ms().saturating_sub(self.report.at);
        self.report.clone()
    }

    /// Tells the old process this one serves (it exits then) and returns the figures
    /// [`TakenOver::finish`] stamped.
    pub fn confirm(mut self) -> UpgradeReport {
        if let Some(socket) = &mut self.socket {
            if let Err(e) = wire::send(socket, &FromNew::Ready(self.report.clone()), &[]) {
                // It is past the commit point and exits on its own bound anyway.
                warn!(error = %e, "could not tell the old process that this one serves");
            }
        }
        info!(
            from_pid = self.report.from_pid,
            connections = self.report.connections,
            waiting = self.report.waiting,
            listeners = self.report.listeners,
            bytes_in_flight = self.report.bytes_in_flight,
            pause_ms = self.report.pause_ms,
            duration_ms = self.report.duration_ms,
            "live upgrade: this process serves"
        );
        self.report
    }
}

/// Takes over from the old process listening on `socket_path`. Errors before the
/// commit leave the old process serving (it sees this one exit).
pub async fn take_over(
    config: &Config,
    socket_path: &Path,
    metrics: Arc<Metrics>,
    journal: Option<Arc<Journal>>,
) -> Result<TakenOver, UpgradeError> {
    let path: PathBuf = socket_path.to_path_buf();
    let (mut socket, offer, fds) = tokio::task::spawn_blocking(move || hello(&path)).await??;
    info!(
        from_pid = offer.from_pid,
        connections = offer.connections.len(),
        waiting = offer.waiting.len(),
        descriptors = fds.len(),
        "live upgrade: offer received"
    );
    let plane = journal.map(|journal| {
        let sink: Arc<dyn ReplicationSink> = journal;
        DataPlane::new(metrics, Some(sink), config.node.bind_ip)
    });
    let (go, paused) = tokio::sync::watch::channel(false);
    let (adopted, api_listener) = match adopt(plane.as_ref(), &offer, fds, paused) {
        Ok(taken) => taken,
        Err(reason) => {
            let _ = wire::send(
                &mut socket,
                &FromNew::Failed {
                    reason: reason.clone(),
                },
                &[],
            );
            return Err(UpgradeError::Prepare(reason));
        }
    };
    let (mut socket, resumed_ms) = tokio::task::spawn_blocking(move || {
        let mut socket = socket;
        wire::send(
            &mut socket,
            &FromNew::Prepared {
                connections: adopted.connections,
                waiting: adopted.waiting,
            },
            &[],
        )?;
        match wire::receive::<FromOld>(&mut socket)?.0 {
            FromOld::Commit => {
                // The commit point: the connections are this process's. They move
                // again from here, not after this thread has woken the task that
                // waits for it (a scheduling round on a busy machine).
                go.send_replace(true);
                Ok((socket, now_ms()))
            }
            FromOld::Abort { reason } => Err(UpgradeError::Aborted(reason)),
            other => Err(UpgradeError::Protocol(format!(
                "expected a commit, got {other:?}"
            ))),
        }
    })
    .await??;
    info!(
        pause_ms = resumed_ms.saturating_sub(offer.frozen_at_ms),
        "live upgrade: committed, connections resumed"
    );
    // Past the commit nothing rolls back: a failure from here on is this process's,
    // and it goes on serving the connections it has whatever Raft and VRRP do. VRRP
    // first (the peers must hear the next advert soon), Raft after.
    let vrrp = tokio::task::spawn_blocking(move || {
        socket.set_read_timeout(Some(RELEASE_TIMEOUT))?;
        match wire::receive::<FromOld>(&mut socket)?.0 {
            FromOld::Vrrp(vrrp) => Ok((socket, vrrp)),
            other => Err(UpgradeError::Protocol(format!(
                "expected the old process's VRRP state, got {other:?}"
            ))),
        }
    })
    .await?;
    let (socket, vrrp) = match vrrp {
        Ok((socket, vrrp)) => (Some(socket), vrrp),
        Err(e) => {
            warn!(error = %e, "live upgrade: the old process did not hand over VRRP; starting it afresh");
            (None, None)
        }
    };
    let report = UpgradeReport {
        from_pid: offer.from_pid,
        to_pid: std::process::id(),
        at: offer.at_ms,
        listeners: offer.listeners.iter().map(|(_, n)| n).sum::<usize>()
            + usize::from(offer.api_listener),
        connections: adopted.connections,
        waiting: adopted.waiting,
        bytes_in_flight: bytes_in_flight(offer.connections.iter(), offer.waiting.iter()),
        // Until the commit; `finish` extends it to the last connection relaying again.
        // A witness has no plane to freeze (no freeze time): nothing stood still.
        pause_ms: match offer.frozen_at_ms {
            0 => 0,
            frozen_at => resumed_ms.saturating_sub(frozen_at),
        },
        duration_ms: 0,
    };
    Ok(TakenOver {
        frozen_at_ms: offer.frozen_at_ms,
        plane,
        api_listener,
        vrrp,
        upgrades: offer.upgrades + 1,
        report,
        socket,
    })
}

/// Connects, says hello, and receives the offer with its descriptors.
fn hello(path: &Path) -> Result<(UnixStream, Offer, Vec<OwnedFd>), UpgradeError> {
    let mut socket = UnixStream::connect(path)?;
    socket.set_read_timeout(Some(STEP_TIMEOUT))?;
    wire::send(
        &mut socket,
        &FromNew::Hello {
            format: FORMAT,
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        &[],
    )?;
    let (message, fds) = wire::receive::<FromOld>(&mut socket)?;
    match message {
        FromOld::Offer(offer) => {
            if fds.len() != offer.descriptors() {
                return Err(UpgradeError::Protocol(format!(
                    "the offer names {} descriptors, {} came",
                    offer.descriptors(),
                    fds.len()
                )));
            }
            Ok((socket, *offer, fds))
        }
        FromOld::Refused { reason } => Err(UpgradeError::Refused(reason)),
        FromOld::Abort { reason } => Err(UpgradeError::Aborted(reason)),
        other => Err(UpgradeError::Protocol(format!(
            "expected an offer, got {other:?}"
        ))),
    }
}

/// Builds the plane from the offer: listeners first (so the model's apply takes them
/// instead of binding), the model, the tables, then the connections, paused on `go`.
/// Returns what was adopted and the API's listening socket.
fn adopt(
    plane: Option<&Arc<DataPlane>>,
    offer: &Offer,
    fds: Vec<OwnedFd>,
    go: tokio::sync::watch::Receiver<bool>,
) -> Result<(Adopted, Option<TcpListener>), String> {
    let Some(plane) = plane else {
        // A witness: only the API's socket comes (and no plane may be offered to it).
        if !offer.listeners.is_empty() || !offer.connections.is_empty() {
            return Err("a data plane was offered to a node without one".into());
        }
        let api = fds.into_iter().next().map(TcpListener::from);
        return Ok((Adopted::default(), api.filter(|_| offer.api_listener)));
    };
    let model: ClusterModel = serde_json::from_str(&offer.model_json)
        .map_err(|e| format!("the offered model cannot be read: {e}"))?;
    let mut fds = fds.into_iter();
    let mut listeners: Vec<(ListenerMeta, Vec<TcpListener>)> = Vec::new();
    for (meta, count) in &offer.listeners {
        let group: Vec<TcpListener> = fds.by_ref().take(*count).map(TcpListener::from).collect();
        listeners.push((meta.clone(), group));
    }
    let mut connections = Vec::with_capacity(offer.connections.len());
    for meta in &offer.connections {
        let (Some(client), Some(server)) = (fds.next(), fds.next()) else {
            return Err("fewer descriptors than connections".into());
        };
        connections.push((
            meta.clone(),
            std::net::TcpStream::from(client),
            std::net::TcpStream::from(server),
        ));
    }
    let mut waiting = Vec::with_capacity(offer.waiting.len());
    for meta in &offer.waiting {
        let Some(client) = fds.next() else {
            return Err("fewer descriptors than waiting connections".into());
        };
        waiting.push((meta.clone(), std::net::TcpStream::from(client)));
    }
    let api_listener = if offer.api_listener {
        fds.next().map(TcpListener::from)
    } else {
        None
    };
    plane.offer_listeners(listeners);
    let applied = plane.apply_model(&model);
    if !applied.errors.is_empty() {
        let errors: Vec<String> = applied.errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "the model cannot be served here: {}",
            errors.join("; ")
        ));
    }
    plane.mark_applied(offer.model_revision);
    plane.import_state(&offer.plane);
    Ok((plane.adopt(connections, waiting, go), api_listener))
}
