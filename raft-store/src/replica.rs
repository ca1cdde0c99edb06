//! A node's handle on the replicated cluster: starts openraft over the redb store and
//! the TCP network, forms the cluster on first start, seeds the model, sweeps expired
//! stick entries while leading, and proposes commands (forwarding to the leader).
//!
//! A node without `[cluster]` is a one-member cluster in its own `data_dir`: the same
//! code path, with no Raft port.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::SnapshotPolicy;
use parking_lot::RwLock;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::model::ClusterModel;
use crate::network::{
    self, Local, MembershipChange, NetworkStats, NodeReport, PeerClient, PeerReply, PeerRequest,
    Progress, ProposeError, Reply, Reporter, Request,
};
use crate::state::{Command, Response};
use crate::store::{self, Applied, LogStore, Observer, StateMachine, StoreError};
use crate::types::{Member, NodeId, Raft, RaftMetrics};

/// Raft timing. VRRP, not Raft, moves the VIP (DESIGN principle 4), so elections need not
/// be fast; they must not be spurious. openraft uses the heartbeat interval as the
/// timeout of every AppendEntries RPC too, so it must cover a full batch on a loaded
/// machine, not just an idle round trip.
#[derive(Debug, Clone)]
pub struct Timing {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// How often the leader proposes a stick-table sweep.
    pub sweep_every: Duration,
    /// Log entries between snapshots.
    pub snapshot_every: u64,
    /// How long to wait for `raft.redb` while another process still has it open (the
    /// old process of a live upgrade, closing it); 0 fails at once.
    pub store_open_wait: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_millis(300),
            election_min: Duration::from_millis(1200),
            election_max: Duration::from_millis(2400),
            sweep_every: Duration::from_secs(10),
            snapshot_every: 5_000,
            store_open_wait: Duration::ZERO,
        }
    }
}

pub struct Options {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// `None` for a one-member cluster.
    pub raft_listen: Option<SocketAddr>,
    pub token: Vec<u8>,
    /// The membership to form on first start.
    pub members: BTreeMap<NodeId, Member>,
    /// Never form a cluster: wait to be added to a running one (membership change).
    /// A node that formed its own would hold a different log entry at index 0.
    pub join: bool,
    /// The model to seed on first start.
    pub seed: ClusterModel,
    pub timing: Timing,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("data_dir {path}: {source}")]
    Store {
        path: PathBuf,
        source: store::StoreError,
    },
    #[error("raft configuration: {0}")]
    Config(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("node.raft_listen: cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What `/v1/status` shows of Raft.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RaftStatus {
    pub node_id: NodeId,
    /// openraft's server state: `Leader`, `Follower`, `Candidate`, `Learner`, `Shutdown`.
    pub state: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub members: BTreeMap<NodeId, Member>,
    pub voters: BTreeSet<NodeId>,
    pub revision: u64,
}

pub struct Replica {
    id: NodeId,
    raft: Raft,
    local: Arc<Local>,
    applied: Arc<RwLock<Applied>>,
    network: network::Network,
    forwarders: tokio::sync::Mutex<BTreeMap<NodeId, PeerClient>>,
    stats: Arc<NetworkStats>,
    tasks: parking_lot::Mutex<Vec<JoinHandle<()>>>,
    /// The store, for [`Replica::shutdown`] to see it closed: openraft drops its
    /// clones in its own tasks, a moment after its shutdown returns.
    db: std::sync::Weak<redb::Database>,
}

/// How long [`Replica::shutdown`] waits for the store to be closed.
const STORE_CLOSE_WAIT: Duration = Duration::from_secs(3);

/// Reports and progress queries between nodes: small answers, quickly or not at all.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a follower that cannot hear a leader checks whether its peers can.
const ELECTION_GATE_EVERY: Duration = Duration::from_millis(500);
/// Between election attempts while campaigning for leadership.
const CAMPAIGN_RETRY: Duration = Duration::from_millis(400);

fn unexpected(node: NodeId) -> ProposeError {
    ProposeError::Unavailable(format!("unexpected reply from node {node}"))
}

pub use ballast_model::time::now as now_ms;

impl Replica {
    pub async fn start(
        options: Options,
        observer: Arc<dyn Observer>,
    ) -> Result<Arc<Replica>, ReplicaError> {
        let store_error = |source| ReplicaError::Store {
            path: options.data_dir.clone(),
            source,
        };
        let open_by = tokio::time::Instant::now() + options.timing.store_open_wait;
        let db = loop {
            match store::open(&options.data_dir) {
                Err(StoreError::AlreadyOpen) if tokio::time::Instant::now() < open_by => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                opened => break opened.map_err(store_error)?,
            }
        };
        let db_watch = Arc::downgrade(&db);
        let fresh = store::is_empty(&db).map_err(store_error)?;
        let state_machine = StateMachine::open(db.clone(), observer).map_err(store_error)?;
        let applied = state_machine.applied();
        let config = openraft::Config {
            cluster_name: "ballast".into(),
            heartbeat_interval: options.timing.heartbeat.as_millis() as u64,
            election_timeout_min: options.timing.election_min.as_millis() as u64,
            election_timeout_max: options.timing.election_max.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(options.timing.snapshot_every),
            max_in_snapshot_log_to_keep: options.timing.snapshot_every.min(1_000),
            install_snapshot_timeout: 10_000,
            // Entries are batches of up to 1,024 stick updates: keep one RPC small enough
            // to cross within a heartbeat interval.
            max_payload_entries: 32,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ReplicaError::Config(e.to_string()))?;
        let token: Arc<[u8]> = options.token.clone().into();
        let network = network::Network::new(options.node_id, token.clone());
        let raft = Raft::new(
            options.node_id,
            Arc::new(config),
            network.clone(),
            LogStore::new(db),
            state_machine,
        )
        .await
        .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        let stats = Arc::new(NetworkStats::default());
        let local = Local::new(options.node_id, raft.clone());
        let replica = Arc::new(Replica {
            id: options.node_id,
            raft: raft.clone(),
            local: local.clone(),
            applied,
            network,
            forwarders: tokio::sync::Mutex::new(BTreeMap::new()),
            stats: stats.clone(),
            tasks: parking_lot::Mutex::new(Vec::new()),
            db: db_watch,
        });
        if let Some(addr) = options.raft_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ReplicaError::Listen { addr, source })?;
            info!(%addr, "raft listening");
            replica.tasks.lock().push(tokio::spawn(network::serve(
                listener,
                options.node_id,
                local,
                token,
                stats,
            )));
        }
        if fresh && options.join {
            info!("waiting to be added to a running cluster (join)");
        } else if fresh {
            // Every member may do this: openraft writes the same membership entry at
            // log index 0 on each, so concurrent first starts agree.
            match raft.initialize(options.members.clone()).await {
                Ok(()) => {
                    info!(members = ?options.members.keys().collect::<Vec<_>>(), "cluster formed from config")
                }
                Err(e) => warn!(error = %e, "cluster initialisation skipped"),
            }
        } else {
            let revision = replica.read(|a| a.state.revision);
            info!(
                revision,
                data_dir = %options.data_dir.display(),
                "resuming from data_dir; the config file's [cluster], frontends and backends are ignored (the cluster model is replicated: change it through the API)"
            );
        }
        replica.spawn_seeder(options.seed);
        replica.spawn_sweeper(options.timing.sweep_every);
        if options.raft_listen.is_some() {
            replica.spawn_election_gate();
        }
        Ok(replica)
    }

    /// Proposes the seed model until the cluster has one (whichever leader gets there
    /// first wins; later `Bootstrap`s are no-ops).
    fn spawn_seeder(self: &Arc<Self>, seed: ClusterModel) {
        let me = self.clone();
        let task = tokio::spawn(async move {
            loop {
                if me.read(|a| a.state.bootstrapped) {
                    return;
                }
                if me.is_leader() {
                    match me
                        .local
                        .propose(Command::Bootstrap {
                            model: seed.clone(),
                        })
                        .await
                    {
                        Ok(r) => info!(
                            revision = r.revision,
                            "cluster model seeded from the config file"
                        ),
                        Err(e) => warn!(error = %e, "seeding the cluster model failed; retrying"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        self.tasks.lock().push(task);
    }

    /// openraft 0.9 has no pre-vote: a follower cut off from a leader that is alive
    /// for everyone else stands for election again and again, and its ever higher term
    /// deposes that leader the moment the link heals (an election, writes waiting,
    /// leadership moving away from the VRRP master). So a follower that has not heard
    /// from a leader asks its peers first; while one of them still hears a leader, it
    /// does not stand. When the leader is really gone nobody hears it, and elections
    /// resume within a check or two. A witness also holds back while an lb node that
    /// could win (a log as long as its own) answers: leadership belongs with the VRRP
    /// master, and a witness winning the race would only have to hand it over.
    fn spawn_election_gate(self: &Arc<Self>) {
        let me = self.clone();
        let task = tokio::spawn(async move {
            let mut allowed = true;
            loop {
                tokio::time::sleep(ELECTION_GATE_EVERY).await;
                let leading = me.raft.metrics().borrow().state == openraft::ServerState::Leader;
                if leading || me.local.is_stepping_down() {
                    continue;
                }
                let heard_ms = me.local.leader_contact_ms();
                let cut_off = heard_ms.is_none_or(|ms| ms > me.raft.config().election_timeout_max);
                let members = me.status().members;
                let witness = members
                    .get(&me.id)
                    .is_some_and(|m| m.role == crate::model::Role::Witness);
                let mine = me.local.progress();
                let mut hold: Option<&'static str> = None;
                if cut_off || witness {
                    for (peer, member) in members.iter().filter(|(id, _)| **id != me.id) {
                        let Some(p) = me.peer_progress(*peer).await else {
                            continue;
                        };
                        if cut_off && me.hears_leader(&p) {
                            hold = Some("a peer still hears the leader this node cannot reach");
                            break;
                        }
                        // A witness leaves leading to an lb node that can win (its log
                        // is as long), so leadership can follow the VRRP master.
                        if witness
                            && member.role == crate::model::Role::Lb
                            && p.last_log_index >= mine.last_log_index
                        {
                            hold = Some("a witness leaves leading to a reachable lb node");
                            break;
                        }
                    }
                }
                let allow = hold.is_none();
                if allow != allowed {
                    match hold {
                        None => info!("elections allowed again"),
                        Some(reason) => info!(reason, "elections held back"),
                    }
                    me.raft.runtime_config().elect(allow);
                    allowed = allow;
                }
            }
        });
        self.tasks.lock().push(task);
    }

    fn spawn_sweeper(self: &Arc<Self>, every: Duration) {
        let me = self.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if me.is_leader() {
                    if let Err(e) = me.local.propose(Command::Sweep { now_ms: now_ms() }).await {
                        warn!(error = %e, "stick sweep not committed");
                    }
                }
            }
        });
        self.tasks.lock().push(task);
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn stats(&self) -> &NetworkStats {
        &self.stats
    }

    /// Reads the applied state. Do not call from an [`Observer`].
    pub fn read<R>(&self, f: impl FnOnce(&Applied) -> R) -> R {
        f(&self.applied.read())
    }

    /// Waits until `found` returns something from the applied state, re-reading it each
    /// time openraft reports progress (an entry applied, a leader or term change), at
    /// most `timeout`. No polling: the metrics watch is the event.
    pub async fn wait_applied<R>(
        &self,
        timeout: Duration,
        mut found: impl FnMut(&Applied) -> Option<R>,
    ) -> Option<R> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut progress = self.raft.metrics();
        loop {
            // Marked seen before reading, so a change between the read and the wait
            // wakes the wait instead of being missed.
            progress.borrow_and_update();
            if let Some(r) = self.read(&mut found) {
                return Some(r);
            }
            match tokio::time::timeout_at(deadline, progress.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return self.read(&mut found),
            }
        }
    }

    /// Waits until `holds` is true of openraft's metrics, at most `timeout`; whether it
    /// held.
    pub async fn wait_metrics(
        &self,
        timeout: Duration,
        holds: impl Fn(&RaftMetrics) -> bool,
    ) -> bool {
        let mut metrics = self.raft.metrics();
        let held = tokio::time::timeout(timeout, metrics.wait_for(|m| holds(m))).await;
        matches!(held, Ok(Ok(_)))
    }

    /// Leading with a committed vote, from a metrics snapshot (see [`Replica::is_leader`]).
    pub fn leads(&self, m: &RaftMetrics) -> bool {
        m.state == openraft::ServerState::Leader && m.current_leader == Some(self.id)
    }

    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow().clone()
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Leading with a committed vote: a candidate may already name itself as leader
    /// in its metrics.
    pub fn is_leader(&self) -> bool {
        self.leads(&self.raft.metrics().borrow())
    }

    pub fn status(&self) -> RaftStatus {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        RaftStatus {
            node_id: self.id,
            state: format!("{:?}", m.state),
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            members: membership
                .nodes()
                .map(|(id, node)| (*id, node.clone()))
                .collect(),
            voters: membership.voter_ids().collect(),
            revision: self.read(|a| a.state.revision),
        }
    }

    /// Commits `command` through the leader, wherever it is, within a bounded time.
    pub async fn propose(&self, command: Command) -> Result<Response, ProposeError> {
        let deadline = tokio::time::Instant::now() + network::PROPOSE_TIMEOUT;
        loop {
            let result = match self.leader() {
                Some(leader) if leader == self.id => self.local.propose(command.clone()).await,
                Some(leader) => self.forward_command(leader, command.clone()).await,
                None => Err(ProposeError::NotLeader { leader: None }),
            };
            match result {
                Err(ProposeError::NotLeader { .. }) if tokio::time::Instant::now() < deadline => {
                    // An election is in progress, or our view of the leader is stale.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(ProposeError::NotLeader { .. }) => {
                    return Err(ProposeError::Unavailable(
                        "no leader: a majority of the cluster is unreachable".into(),
                    ))
                }
                other => return other,
            }
        }
    }

    /// Sends `request` to the leader over its Raft connection (kept per leader).
    async fn forward(
        &self,
        leader: NodeId,
        request: Request,
        ttl: Duration,
    ) -> Result<Reply, ProposeError> {
        let Some(addr) = self.member_addr(leader) else {
            return Err(ProposeError::NotLeader { leader: None });
        };
        let mut forwarders = self.forwarders.lock().await;
        let client = forwarders
            .entry(leader)
            .or_insert_with(|| self.network.client(leader, &addr));
        client
            .call(&request, ttl)
            .await
            .map_err(|e| ProposeError::Unavailable(format!("node {leader} unreachable: {e}")))
    }

    async fn forward_command(
        &self,
        leader: NodeId,
        command: Command,
    ) -> Result<Response, ProposeError> {
        match self
            .forward(leader, Request::Propose(command), network::PROPOSE_TIMEOUT)
            .await?
        {
            Reply::Propose(result) => result,
            _ => Err(ProposeError::Unavailable(
                "unexpected reply from the leader".into(),
            )),
        }
    }

    /// Installs what this node answers to [`PeerRequest::Report`].
    pub fn set_reporter(&self, reporter: Reporter) {
        self.local.set_reporter(reporter);
    }

    /// `node`'s report: this node's own, or asked over the Raft connection.
    pub async fn report_of(&self, node: NodeId) -> Result<Option<NodeReport>, ProposeError> {
        if node == self.id {
            return Ok(self.local.report());
        }
        match self
            .forward(node, Request::Peer(PeerRequest::Report), PEER_TIMEOUT)
            .await?
        {
            Reply::Peer(PeerReply::Report(r)) => Ok(r),
            _ => Err(unexpected(node)),
        }
    }

    /// A peer's progress if it answers within one election-gate check.
    async fn peer_progress(&self, peer: NodeId) -> Option<Progress> {
        tokio::time::timeout(ELECTION_GATE_EVERY, self.progress_of(peer))
            .await
            .ok()?
            .ok()
    }

    /// The node that reported `p` heard a leader within the shortest election timeout:
    /// that leader is alive, whatever this node can see of it.
    fn hears_leader(&self, p: &Progress) -> bool {
        p.leader_contact_ms
            .is_some_and(|ms| ms < self.raft.config().election_timeout_min)
    }

    /// `node`'s Raft progress (this node's own without a round trip).
    pub async fn progress_of(&self, node: NodeId) -> Result<Progress, ProposeError> {
        if node == self.id {
            return Ok(self.local.progress());
        }
        match self
            .forward(node, Request::Peer(PeerRequest::Progress), PEER_TIMEOUT)
            .await?
        {
            Reply::Peer(PeerReply::Progress(p)) => Ok(p),
            _ => Err(unexpected(node)),
        }
    }

    /// How many applied entries this node is behind the leader; `None` without a
    /// reachable leader. The leader is never behind.
    pub async fn lag(&self) -> Option<u64> {
        let leader = self.leader()?;
        let mine = self.local.progress();
        if leader == self.id {
            return Some(0);
        }
        let theirs = self.progress_of(leader).await.ok()?;
        Some(theirs.last_log_index.saturating_sub(mine.applied_index))
    }

    /// Makes this node the Raft leader, so that the VRRP master's stick writes stay
    /// local. Asks the current leader to step down, then stands for election until it
    /// wins, `within` passes or `wanted` turns false (this node is no longer the VRRP
    /// master). Never stands against a leader that did not agree. Never blocks anything
    /// but the caller.
    pub async fn campaign(&self, within: Duration, wanted: impl Fn() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        // The leader that agreed to step down for us, and when: its heartbeats stay off
        // for the step-down window from then on.
        let mut agreed: Option<(NodeId, tokio::time::Instant)> = None;
        // The old leader's last log index: standing with less cannot win.
        let mut need_index = 0;
        loop {
            if !wanted() {
                return self.is_leader();
            }
            if self.is_leader() {
                return true;
            }
            match self.leader() {
                Some(l) if l != self.id && agreed.map(|(by, _)| by) != Some(l) => {
                    match self
                        .forward(
                            l,
                            Request::Peer(PeerRequest::StepDown { to: self.id }),
                            // It waits up to 2 s for this node to have its whole log.
                            PEER_TIMEOUT * 3,
                        )
                        .await
                    {
                        Ok(Reply::Peer(PeerReply::StepDown(Ok(last)))) => {
                            agreed = Some((l, tokio::time::Instant::now()));
                            need_index = last;
                        }
                        Ok(Reply::Peer(PeerReply::StepDown(Err(e)))) => {
                            info!(leader = l, reason = %e, "leader did not step down");
                        }
                        other => {
                            if let Err(e) = other {
                                info!(leader = l, error = %e, "leader unreachable for hand-over");
                            }
                        }
                    }
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return self.is_leader();
            }
            // Stand only when the leader agreed to step down, or there is none. A
            // leader we cannot reach may be alive for the others (we are cut off):
            // standing then would only inflate our term and depose it when the link
            // heals. If it is dead, Raft's own election replaces it, and we ask the
            // winner on the next round.
            let leader = self.leader();
            let log_complete = self.local.progress().last_log_index >= need_index;
            // The leader that agreed may have dropped out of view: an election of ours
            // that came while the followers' lease still ran was refused and left us a
            // candidate with no leader. Its agreement still holds for the step-down
            // window. Without this, only `may_stand_unasked` remained, which the
            // stepping-down leader blocks (to its peers it still hears a leader: itself),
            // and the successor waited out the whole window. In CI lb1, the new VRRP
            // master, went 10 s without a leader that way, lowered its priority as "far
            // behind" and lost the VIP.
            let agreement_holds = agreed.is_some_and(|(by, at)| {
                leader == Some(by) || (leader.is_none() && at.elapsed() < network::STEP_DOWN_WINDOW)
            });
            if log_complete
                && (agreement_holds || (leader.is_none() && self.may_stand_unasked().await))
            {
                // Rejected while the followers' leader lease runs; repeated until it ends.
                let _ = self.raft.trigger().elect().await;
            }
            tokio::time::sleep(CAMPAIGN_RETRY).await;
        }
    }

    /// Without a leader's agreement, standing helps only when no reachable peer has a
    /// longer log (it would refuse us) and none still hears a leader. Otherwise our ever
    /// higher term deposes that leader when a cut heals and keeps electing nobody: a
    /// VRRP master that lost its link to the leader, with a stale log, raced the
    /// rightful leader from term 9 to 23 in the partition test.
    async fn may_stand_unasked(&self) -> bool {
        let mine = self.local.progress().last_log_index;
        let peers: Vec<NodeId> = self
            .status()
            .members
            .keys()
            .copied()
            .filter(|id| *id != self.id)
            .collect();
        for peer in peers {
            let Some(p) = self.peer_progress(peer).await else {
                continue;
            };
            if p.last_log_index > mine || self.hears_leader(&p) {
                debug!(
                    peer,
                    "not standing: a peer has a longer log or still hears a leader"
                );
                return false;
            }
        }
        true
    }

    /// Adds or removes a member through the leader, wherever it is.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), ProposeError> {
        match self.leader() {
            Some(leader) if leader == self.id => {
                network::change_membership_local(&self.raft, change).await
            }
            Some(leader) => {
                // Adding waits for the learner to catch up: allow more than a write.
                match self
                    .forward(leader, Request::Membership(change), Duration::from_secs(60))
                    .await?
                {
                    Reply::Membership(result) => result,
                    _ => Err(ProposeError::Unavailable(
                        "unexpected reply from the leader".into(),
                    )),
                }
            }
            None => Err(ProposeError::Unavailable(
                "no leader: a majority of the cluster is unreachable".into(),
            )),
        }
    }

    /// Adds a node as a learner, waits until it has caught up, then makes it a voter.
    pub async fn add_member(&self, id: NodeId, member: Member) -> Result<(), ProposeError> {
        self.change_membership(MembershipChange::Add { id, member })
            .await
    }

    /// Removes a node from the voters and the membership.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), ProposeError> {
        self.change_membership(MembershipChange::Remove { id })
            .await
    }

    fn member_addr(&self, id: NodeId) -> Option<String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|m| m.raft.clone())
            .filter(|a| !a.is_empty())
    }

    /// Stops Raft and returns once `raft.redb` is closed (bounded), so another process
    /// — the new one of a live upgrade — can open it right after.
    pub async fn shutdown(&self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        if let Err(e) = self.raft.shutdown().await {
            warn!(error = %e, "raft shutdown");
        }
        let deadline = tokio::time::Instant::now() + STORE_CLOSE_WAIT;
        while self.db.strong_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if self.db.strong_count() > 0 {
            warn!(wait = ?STORE_CLOSE_WAIT, "raft shutdown: the store is still open");
        }
    }
}
