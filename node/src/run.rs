//! `ballast run`: one node from a validated config until a shutdown signal.
//!
//! ```text
//!   config ──▶ Replica (openraft + redb in data_dir, Raft port) ──▶ PlaneMirror ──▶ DataPlane
//!                 ▲                                                              │
//!                 └──────────── Journal (stick decisions, health flips) ◀────────┘
//!   API (axum) ── reads status / stick tables, proposes writes through the Replica
//! ```
//!
//! Without `[cluster]` the node is a one-member cluster in its `data_dir`; a witness
//! runs the replica and the API only.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context};
use ballast_api::types::{
    BackendStats, DrillList, DrillReport, DrillStarted, DrillState, ServerHealth, ServerStats,
    Status, StickEntry, StickPage, UpgradeReport,
};
use ballast_api::{ApiError, BoxFuture, NodeHandle, StickQuery, MAX_STICK_PAGE};
use ballast_raft_store::model::Role;
use ballast_raft_store::network::ProposeError;
use ballast_raft_store::replica::{Options, Replica, Timing};
use ballast_raft_store::state::{self, Command};
use ballast_raft_store::store::{NoObserver, Observer};
use ballast_raft_store::types::Member;
use tracing::info;

use crate::cluster::{self, Journal, PlaneMirror, JOURNAL_CAPACITY};
use crate::config::Config;
use crate::upgrade::protocol::{VrrpCarry, SOCKET_ENV};
use crate::upgrade::{UpgradeError, Upgrader};
use ballast_dataplane::metrics::{set_counter, Metrics};
use ballast_dataplane::proxy::{now_ms, DataPlane, ReplicationSink};

/// How long VRRP waits for the data plane to listen before it starts anyway.
const VRRP_START_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the API sees of a running node.
struct NodeApi {
    config: Config,
    ha: Arc<crate::ha::Ha>,
    vrrp: Option<ballast_vrrp::driver::VrrpObserver>,
    plane: Option<Arc<DataPlane>>,
    replica: Arc<Replica>,
    journal: Option<Arc<Journal>>,
    metrics: Arc<Metrics>,
    token: Option<Arc<[u8]>>,
    upgrader: Arc<Upgrader>,
}

impl NodeHandle for NodeApi {
    fn render_metrics(&self) -> String {
        let c = &self.metrics.cluster;
        let m = self.replica.metrics();
        c.revision
            .set(self.replica.read(|a| a.state.revision) as i64);
        c.term.set(m.current_term as i64);
        c.is_leader
            .set(i64::from(m.current_leader == Some(self.replica.id())));
        c.leader_id.set(m.current_leader.unwrap_or(0) as i64);
        c.last_log_index.set(m.last_log_index.unwrap_or(0) as i64);
        c.applied_index
            .set(m.last_applied.map_or(0, |l| l.index) as i64);
        c.members
            .set(m.membership_config.membership().nodes().count() as i64);
        let stats = self.replica.stats();
        set_counter(
            &c.raft_auth_failures,
            stats.auth_failures.load(Ordering::Relaxed),
        );
        set_counter(&c.raft_bad_frames, stats.bad_frames.load(Ordering::Relaxed));
        if let Some(j) = &self.journal {
            c.journal_pending.set(j.len() as i64);
            set_counter(&c.journal_dropped, j.dropped.load(Ordering::Relaxed));
            set_counter(&c.journal_proposed, j.proposed.load(Ordering::Relaxed));
            set_counter(
                &c.journal_failed_proposals,
                j.failed_proposals.load(Ordering::Relaxed),
            );
        }
        if let Some(vrrp) = &self.vrrp {
            let v = &self.metrics.vrrp;
            let status = vrrp.status();
            let counts = vrrp.metrics();
            v.master
                .set(i64::from(status.state == ballast_vrrp::VrrpState::Master));
            v.effective_priority
                .set(i64::from(status.effective_priority));
            set_counter(&v.transitions, status.transitions);
            set_counter(&v.adverts_sent, counts.adverts_sent);
            set_counter(&v.adverts_received, counts.adverts_received);
            for (reason, n) in &counts.drops {
                let labels = ballast_dataplane::metrics::ReasonLabels {
                    reason: reason.as_str(),
                };
                set_counter(&v.dropped.get_or_create(&labels), *n);
            }
        }
        match &self.plane {
            Some(plane) => plane.render_metrics(),
            None => self.metrics.render(),
        }
    }

    fn readiness(&self) -> Result<(), String> {
        let bootstrapped = self.replica.read(|a| a.state.bootstrapped);
        if !bootstrapped {
            return Err("the cluster model has not been seeded yet (no quorum so far?)".into());
        }
        // Catching up with a reachable leader: not ready. Without a reachable leader
        // the node serves from its own disk (DESIGN principle 4) and stays ready;
        // /v1/status says `caught_up: false` then.
        if let Some(lag) = self.ha.lag().filter(|l| *l > crate::ha::CAUGHT_UP_ENTRIES) {
            return Err(format!(
                "raft: catching up, {lag} entries behind the leader"
            ));
        }
        match &self.plane {
            Some(plane) => plane.not_ready_reason().map_or(Ok(()), Err),
            None => Ok(()),
        }
    }

    fn status(&self) -> Status {
        let raft = self.replica.status();
        let ha = self.ha.report();
        let journal = self.journal.as_ref().map(|j| j.len());
        // Replicated health: what every lb node's probes concluded, and the verdict
        // every node agrees on.
        let health = self.replica.read(|a| {
            let state = &a.state;
            let server_health = |backend: &str, server: &ballast_raft_store::model::Server| {
                let reports = state
                    .health
                    .get(backend)
                    .and_then(|b| b.get(&server.name))
                    .cloned()
                    .unwrap_or_default();
                ServerHealth {
                    effective_up: state.effective_up(backend, &server.name),
                    admin: server.admin,
                    reports,
                }
            };
            state
                .model
                .backends
                .iter()
                .map(|(name, backend)| {
                    let servers = backend
                        .servers
                        .iter()
                        .map(|s| (s.name.clone(), server_health(name, s)))
                        .collect();
                    (name.clone(), servers)
                })
                .collect()
        });
        Status {
            node_id: self.config.node.id,
            role: self.config.node.role,
            revision: raft.revision,
            caught_up: self.ha.caught_up(),
            lag_entries: self.ha.lag(),
            raft,
            journal_pending: journal,
            health,
            vrrp: self.vrrp.as_ref().map(crate::vip::status),
            tracked_conditions_failing: self.plane.as_ref().map(|_| ha.failing),
            yielded: ha.yielded,
            process: self.upgrader.process(),
        }
    }

    fn stick_page(&self, backend: &str, query: &StickQuery) -> Result<StickPage, ApiError> {
        let limit = query.limit.unwrap_or(1_000).min(MAX_STICK_PAGE);
        let now = now_ms();
        self.replica.read(|a| {
            let spec = a.state.model.backends.get(backend).ok_or_else(|| {
                ApiError::not_found(format!("backend {backend:?} does not exist"))
            })?;
            let expire_ms = spec
                .stick
                .as_ref()
                .map_or(0, |s| s.expire.as_millis() as u64);
            let empty = state::StickTableState::default();
            let table = a.state.sticks.get(backend).unwrap_or(&empty);
            let open_here = |key| {
                self.plane.as_ref().and_then(|p| {
                    p.view()
                        .backends
                        .get(backend)
                        .and_then(|b| b.stick_page(Some(key), None, 1, now).pop())
                        .map(|v| v.open)
                })
            };
            let entry = |(key, server, last_seen_ms): (std::net::IpAddr, &Arc<str>, u64)| {
                let open = open_here(key).unwrap_or(0);
                StickEntry {
                    key,
                    server: server.to_string(),
                    last_seen_ms,
                    open_here: open,
                    expires_in_ms: (open == 0)
                        .then(|| expire_ms.saturating_sub(now.saturating_sub(last_seen_ms))),
                }
            };
            let entries: Vec<StickEntry> = match query.key {
                Some(key) => table
                    .get(&key)
                    .map(|(server, seen)| entry((key, server, seen)))
                    .into_iter()
                    .collect(),
                None => table
                    .iter_from(query.after)
                    .take(limit)
                    .map(entry)
                    .collect(),
            };
            Ok(StickPage {
                backend: backend.to_string(),
                total: table.len(),
                revision: a.state.revision,
                entries,
            })
        })
    }

    fn write_token(&self) -> Option<Arc<[u8]>> {
        self.token.clone()
    }

    fn node_id(&self) -> u64 {
        self.config.node.id
    }

    fn propose(&self, command: Command) -> BoxFuture<'_, Result<state::Response, ProposeError>> {
        Box::pin(async move {
            let changes_model = command.changes_model();
            let response = self.replica.propose(command).await?;
            // The answer means "in effect on this node": wait for the local data plane
            // to apply the model this node has (a no-op write waits for nothing).
            if let (true, None, Some(plane)) = (changes_model, &response.error, &self.plane) {
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
                // A forwarded write is committed on the leader first; this replica
                // applies it moments later.
                self.replica
                    .wait_applied(std::time::Duration::from_secs(3), |a| {
                        (a.state.revision >= response.revision).then_some(())
                    })
                    .await;
                let model_revision = self.replica.read(|a| a.state.model_revision);
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if !plane.wait_applied(model_revision, left).await {
                    tracing::warn!(
                        revision = response.revision,
                        "committed, but not yet applied by this node's data plane"
                    );
                }
            }
            Ok(response)
        })
    }

    fn model(&self) -> (ballast_raft_store::model::ClusterModel, u64) {
        self.replica
            .read(|a| (a.state.model.clone(), a.state.revision))
    }

    fn backend_stats(&self, backend: &str) -> Option<BackendStats> {
        let plane = self.plane.as_ref()?;
        let view = plane.view();
        let rt = view.backends.get(backend)?;
        let servers = rt
            .servers
            .iter()
            .map(|s| ServerStats {
                name: s.name.to_string(),
                up: s.is_up(),
                admin: s.admin(),
                connections: s.assigned(),
            })
            .collect();
        Some(BackendStats {
            node_id: self.config.node.id,
            servers,
        })
    }

    fn change_membership(
        &self,
        change: ballast_raft_store::network::MembershipChange,
    ) -> BoxFuture<'_, Result<(), ProposeError>> {
        Box::pin(self.replica.change_membership(change))
    }

    fn start_drill(&self, to: Option<u64>) -> BoxFuture<'_, Result<DrillStarted, ApiError>> {
        Box::pin(async move {
            let (id, from, to) = self.ha.start_drill(to).await.map_err(|e| match e {
                crate::ha::DrillRefused::NotCommitted(m) => ApiError::unavailable(m),
                refused => ApiError::conflict(refused.to_string()),
            })?;
            Ok(DrillStarted {
                id,
                from,
                to,
                state: DrillState::Running,
            })
        })
    }

    fn drills(&self) -> DrillList {
        let now = now_ms();
        let drills = self.replica.read(|a| {
            a.state
                .drills
                .values()
                .rev()
                .map(|r| r.report(now).into())
                .collect()
        });
        DrillList { drills }
    }

    fn drill(&self, id: u64) -> Option<DrillReport> {
        let now = now_ms();
        self.replica
            .read(|a| a.state.drills.get(&id).map(|r| r.report(now)))
    }

    fn upgrade(&self) -> BoxFuture<'_, Result<UpgradeReport, ApiError>> {
        Box::pin(async move {
            self.upgrader.upgrade().await.map_err(|e| match e {
                UpgradeError::Busy => ApiError::conflict(e.to_string()),
                e => ApiError::unavailable(format!("upgrade failed: {e}")),
            })
        })
    }
}

/// A node that is up.
pub struct Running {
    pub plane: Option<Arc<DataPlane>>,
    pub replica: Arc<Replica>,
    pub api_addr: SocketAddr,
    vip: Arc<parking_lot::Mutex<Option<crate::vip::Vip>>>,
    pub upgrader: Arc<Upgrader>,
}

impl Running {
    /// Hands the VIP over first (priority 0), then stops serving.
    pub async fn stop(&self) {
        let vip = self.vip.lock().take();
        if let Some(vip) = vip {
            vip.stop().await;
        }
        if let Some(plane) = &self.plane {
            plane.stop();
        }
        self.replica.shutdown().await;
    }
}

fn read_token(config: &Config) -> anyhow::Result<Option<Arc<[u8]>>> {
    let Some(path) = &config.node.token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("node.token_file: cannot read {}", path.display()))?;
    let token = text.trim();
    if token.len() < 16 {
        bail!(
            "node.token_file {}: the token must be at least 16 characters",
            path.display()
        );
    }
    Ok(Some(Arc::from(token.as_bytes())))
}

/// Starts the replica, the data plane (lb nodes) and the API, then returns.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    let token = read_token(config)?;
    let node = &config.node;
    let members: BTreeMap<u64, Member> = match &config.cluster {
        Some(cluster) => cluster
            .members
            .iter()
            .map(|m| {
                (
                    m.id,
                    Member {
                        raft: m.raft.to_string(),
                        api: m.api.to_string(),
                        role: m.role,
                    },
                )
            })
            .collect(),
        None => {
            if node.role == Role::Witness {
                bail!("{}: a witness node needs [cluster]", config.path.display());
            }
            BTreeMap::from([(
                node.id,
                Member {
                    raft: String::new(),
                    api: node.api_listen.to_string(),
                    role: node.role,
                },
            )])
        }
    };
    let metrics = Arc::new(Metrics::new());
    let journal = (node.role == Role::Lb).then(|| Arc::new(Journal::new(JOURNAL_CAPACITY)));
    // Started by a live upgrade: the old process hands over its plane and sockets.
    // Started by a live upgrade: the old process hands over its plane and sockets.
    let mut taken = match std::env::var_os(SOCKET_ENV) {
        Some(path) => Some(
            crate::upgrade::take_over(
                config,
                std::path::Path::new(&path),
                metrics.clone(),
                journal.clone(),
            )
            .await
            .context("live upgrade: cannot take over from the old process")?,
        ),
        None => None,
    };
    let api_listener = match taken.as_mut().and_then(|t| t.api_listener.take()) {
        Some(inherited) => {
            inherited.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(inherited)?
        }
        None => tokio::net::TcpListener::bind(node.api_listen)
            .await
            .with_context(|| format!("node.api_listen: cannot listen on {}", node.api_listen))?,
    };
    let api_addr = api_listener.local_addr()?;

    let (plane, mirror) = match &journal {
        Some(journal) => {
            let plane = match taken.as_ref().and_then(|t| t.plane.clone()) {
                Some(plane) => plane,
                None => {
                    let sink: Arc<dyn ReplicationSink> = journal.clone();
                    DataPlane::new(metrics.clone(), Some(sink), node.bind_ip)
                }
            };
            let mirror = PlaneMirror::new(node.id, plane.clone());
            (Some(plane), Some(mirror))
        }
        None => (None, None),
    };
    // Resuming a master's VRRP comes before Raft: the peers must hear the next advert
    // within an interval, and opening Raft waits for the old process to close it.
    let resumed_vip = match (&config.vrrp, &plane, &taken) {
        (Some(section), Some(plane), Some(taken)) => Some(crate::vip::Vip::start_with(
            section,
            plane.clone(),
            taken
                .vrrp
                .as_ref()
                .map(VrrpCarry::resume)
                .unwrap_or_default(),
        )?),
        _ => None,
    };
    // Raft's store is free once the old process says so.
    if let Some(taken) = taken.as_mut() {
        taken.released(journal.as_deref()).await;
    }
    let observer: Arc<dyn Observer> = match &mirror {
        Some(m) => m.clone(),
        None => Arc::new(NoObserver),
    };
    let replica = Replica::start(
        Options {
            node_id: node.id,
            data_dir: node.data_dir.clone(),
            raft_listen: config.cluster.as_ref().and(node.raft_listen),
            token: token.as_deref().map(<[u8]>::to_vec).unwrap_or_default(),
            members,
            join: config.cluster.as_ref().is_some_and(|c| c.join),
            seed: config.model.clone(),
            timing: Timing {
                snapshot_every: config
                    .cluster
                    .as_ref()
                    .map_or(Timing::default().snapshot_every, |c| c.snapshot_logs),
                // Taking over from a live upgrade's old process, which is closing it.
                store_open_wait: if taken.is_some() {
                    std::time::Duration::from_secs(5)
                } else {
                    std::time::Duration::ZERO
                },
                ..Timing::default()
            },
        },
        observer,
    )
    .await?;
    let mut loops = Vec::new();
    if let Some(mirror) = mirror {
        loops.push(tokio::spawn(cluster::apply_loop(mirror, replica.clone())));
    }
    if let Some(journal) = &journal {
        loops.push(tokio::spawn(cluster::flush_loop(
            journal.clone(),
            replica.clone(),
        )));
    }
    if let (Some(_), Some(plane), None) = (&config.vrrp, &plane, &taken) {
        // A node that cannot serve yet runs VRRP at priority 1; started that way it
        // would win the first election where it is alone, then hand over again. Give
        // the model a moment to arrive first (bounded: VRRP must not wait for Raft).
        plane.wait_ready(VRRP_START_WAIT).await;
    }
    let vip = match (resumed_vip, &config.vrrp, &plane) {
        (Some(resumed), _, _) => Some(resumed),
        (None, Some(section), Some(plane)) => Some(crate::vip::Vip::start(section, plane.clone())?),
        _ => None,
    };
    let ha = crate::ha::Ha::start(
        node.id,
        node.role,
        replica.clone(),
        plane.clone().zip(journal.clone()),
        vip.as_ref().map(|v| (v.observer(), v.control())),
    );
    let upgrader = Upgrader::new(
        config.clone(),
        taken.as_ref().map_or(0, |t| t.upgrades),
        match taken.as_mut() {
            Some(taken) => Some(taken.finish().await),
            None => None,
        },
    );
    let vrrp = vip.as_ref().map(crate::vip::Vip::observer);
    let vip = Arc::new(parking_lot::Mutex::new(vip));
    let handle = Arc::new(NodeApi {
        config: config.clone(),
        ha,
        vrrp,
        plane: plane.clone(),
        replica: replica.clone(),
        journal: journal.clone(),
        metrics,
        token,
        upgrader: upgrader.clone(),
    });
    let api_duplicate = socket2::SockRef::from(&api_listener)
        .try_clone()
        .map(std::net::TcpListener::from)
        .map_err(|e| tracing::warn!(error = %e, "cannot keep a duplicate of the API socket: a live upgrade will bind it anew"))
        .ok();
    let api_task = tokio::spawn(async move {
        if let Err(e) = ballast_api::serve(api_listener, handle, std::future::pending()).await {
            tracing::error!(error = %e, "API server stopped");
        }
    });
    upgrader.set_parts(crate::upgrade::Parts {
        plane: plane.clone(),
        replica: replica.clone(),
        journal,
        vip: vip.clone(),
        api_listener: api_duplicate,
        api_task: parking_lot::Mutex::new(Some(api_task)),
        loops: parking_lot::Mutex::new(loops),
    });
    if let Some(taken) = taken {
        upgrader.record_upgrade(taken.confirm());
    }
    info!(
        node = node.id,
        role = node.role.as_str(),
        api = %api_addr,
        pid = std::process::id(),
        cluster = config.cluster.as_ref().map_or(1, |c| c.members.len()),
        "ballast node running"
    );
    Ok(Running {
        plane,
        replica,
        api_addr,
        vip,
        upgrader,
    })
}

/// Waits until the data plane serves the replicated model (or `timeout`).
pub async fn wait_ready(running: &Running, timeout: std::time::Duration) -> anyhow::Result<()> {
    let Some(plane) = &running.plane else {
        return Ok(());
    };
    if !plane.wait_ready(timeout).await {
        let reason = plane.not_ready_reason().unwrap_or_default();
        bail!("the data plane did not become ready within {timeout:?}: {reason}");
    }
    Ok(())
}

/// Runs a node until `shutdown`; `pid_file`: kept naming the serving process (see
/// [`crate::service`]).
pub async fn run(
    config: Config,
    pid_file: Option<std::path::PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Watched before anything serves: the default action of SIGUSR2 ends the process,
    // and a new process of an upgrade answers its API before `start` returns.
    let usr2 = usr2_signal();
    let running = start(&config).await?;
    crate::service::serving(pid_file.as_deref());
    let upgrades = tokio::spawn(upgrade_on_signal(usr2, running.upgrader.clone()));
    shutdown.await;
    upgrades.abort();
    crate::service::stopping(pid_file.as_deref());
    info!("shutting down");
    running.stop().await;
    Ok(())
}

/// `SIGUSR2`: a live upgrade to the binary installed at the node's path (what nginx's
/// and HAProxy's operators send). The outcome is logged: on success this process exits.
async fn upgrade_on_signal(usr2: Option<tokio::signal::unix::Signal>, upgrader: Arc<Upgrader>) {
    let Some(mut usr2) = usr2 else { return };
    while usr2.recv().await.is_some() {
        info!("SIGUSR2: live upgrade");
        let upgrader = upgrader.clone();
        // Its own task, so a second SIGUSR2 is read (and refused) while it runs.
        tokio::spawn(async move {
            let _ = upgrader.upgrade().await;
        });
    }
}

fn usr2_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::user_defined2())
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot watch SIGUSR2: live upgrades only through the API")
        })
        .ok()
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
