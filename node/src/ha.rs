//! High availability on a node: how far behind the Raft leader it is, Raft leadership
//! following the VRRP master, planned failover drills and unplanned takeover records.
//!
//! ```text
//!  lag loop (1 s)     ask the leader's progress → lag → caught_up / far behind
//!                                                        └─▶ VipControl (priority 1)
//!  drill watch        a committed DrillStart: the target stops yielding; every other
//!                     lb node yields (priority 1) and the master resigns (priority 0)
//!  VRRP watch         master → backup (resigned): VipReleased, flush, snapshot
//!                     backup → master: BecameMaster, GarpSent, FirstConnection,
//!                     LeaderMoved, snapshot; a takeover nobody planned opens its own
//!                     record; and this node campaigns for Raft leadership
//! ```
//!
//! VRRP never waits for any of this (DESIGN principle 4): the drill only changes the
//! priority and asks the instance to resign; records are committed afterwards, in the
//! background, with the wall-clock times the events happened.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ballast_raft_store::drill::{DrillEvent, DrillKind, DrillStep, NodeSnapshot};
use ballast_raft_store::ha::Condition;
use ballast_raft_store::model::Role;
use ballast_raft_store::network::NodeReport;
use ballast_raft_store::replica::Replica;
use ballast_raft_store::state::{Command, NodeId};
use ballast_vrrp::driver::{VrrpObserver, VrrpStatus};
use ballast_vrrp::{TransitionReason, VrrpState};
use parking_lot::Mutex;
use tracing::{info, warn};

use crate::cluster::Journal;
use crate::vip::VipControl;
use ballast_dataplane::proxy::{now_ms, DataPlane};

/// A drill target must be at most this many log entries behind the leader. An entry
/// is a batch of up to 1,024 stick decisions from one node's 50 ms journal flush.
pub const CAUGHT_UP_ENTRIES: u64 = 32;
/// Further behind than this (or without a reachable leader) for [`FAR_BEHIND_CHECKS`]
/// checks in a row, an lb node lowers its VRRP priority: it may lack current entries.
pub const FAR_BEHIND_ENTRIES: u64 = 1_000;
const FAR_BEHIND_CHECKS: u32 = 3;
const LEADERLESS_CHECKS: u32 = 10;
const LAG_EVERY: Duration = Duration::from_secs(1);
/// A drill is acted on only while this fresh: a restarted node replaying its log must
/// not resign because of an old drill.
const DRILL_FRESH_MS: u64 = 20_000;
/// Waits for the parts of a record (a connection, a flush), each bounded.
const FIRST_CONNECTION_WAIT: Duration = Duration::from_secs(60);
const FLUSH_WAIT: Duration = Duration::from_secs(5);
const LEADER_WAIT: Duration = Duration::from_secs(20);
const COMMIT_WAIT: Duration = Duration::from_secs(30);
/// How long the old master lets the drill's target arm itself before resigning.
const HANDOVER_ARM: Duration = Duration::from_millis(100);

/// Why a drill was refused (409).
#[derive(Debug, thiserror::Error)]
pub enum DrillRefused {
    #[error("node {0} is not a member of the cluster")]
    NotMember(NodeId),
    #[error("node {0} is a witness: it runs no data plane and holds no VIP")]
    NotLb(NodeId),
    #[error("node {node} did not answer: {reason}")]
    Unreachable { node: NodeId, reason: String },
    #[error("node {0} runs without VRRP ([vrrp] is absent)")]
    NoVrrp(NodeId),
    #[error("node {0} is already the VRRP master")]
    AlreadyMaster(NodeId),
    #[error("node {node} is not healthy: {conditions}")]
    Unhealthy { node: NodeId, conditions: String },
    #[error("node {node} is not caught up with the Raft leader ({lag})")]
    NotCaughtUp { node: NodeId, lag: String },
    #[error("no lb node is VRRP master now")]
    NoMaster,
    #[error("several lb nodes are VRRP master ({0:?}): resolve the split first")]
    SeveralMasters(Vec<NodeId>),
    #[error("no lb node other than the master is fit to take over")]
    NoCandidate,
    #[error("the drill was not committed: {0}")]
    NotCommitted(String),
}

/// The lb-only parts.
struct Lb {
    plane: Arc<DataPlane>,
    journal: Arc<Journal>,
    vrrp: Option<(VrrpObserver, Arc<VipControl>)>,
}

pub struct Ha {
    me: NodeId,
    role: Role,
    replica: Arc<Replica>,
    lb: Option<Lb>,
    /// Entries behind the leader; `u64::MAX` while unknown (no leader reachable).
    lag: AtomicU64,
    /// The planned drill this node takes part in, for labelling VRRP transitions.
    active_drill: Mutex<Option<ActiveDrill>>,
    /// This node's current mastership: when it began and its first gratuitous ARP
    /// (later bursts repeat it; the first is the one clients act on).
    mastership: Mutex<Option<Mastership>>,
}

#[derive(Debug, Clone, Copy)]
struct Mastership {
    became_ms: u64,
    first_garp_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct ActiveDrill {
    id: u64,
    from: Option<NodeId>,
    to: NodeId,
}

use ballast_model::time::unix_ms as ms;

/// Data-plane entries the replicated tables lack or assign elsewhere, and replicated
/// entries the data plane lacks or assigns elsewhere.
pub fn compare_tables<'a>(
    dataplane: &[(IpAddr, &'a str)],
    replicated: impl IntoIterator<Item = (IpAddr, &'a str)>,
) -> (u64, u64) {
    let local: HashMap<IpAddr, &str> = dataplane.iter().copied().collect();
    let (mut agreed, mut not_mirrored) = (0u64, 0u64);
    for (key, server) in replicated {
        if local.get(&key) == Some(&server) {
            agreed += 1;
        } else {
            not_mirrored += 1;
        }
    }
    (local.len() as u64 - agreed, not_mirrored)
}

/// Hysteresis over lag readings: far behind after [`FAR_BEHIND_CHECKS`] readings in a
/// row more than [`FAR_BEHIND_ENTRIES`] behind, or [`LEADERLESS_CHECKS`] without a
/// reachable leader; one good reading clears it. An election (a few seconds without a
/// leader, on every node at once) must not lower every lb node's priority together.
#[derive(Debug, Default, Clone, Copy)]
pub struct FarBehind {
    behind: u32,
    leaderless: u32,
}

impl FarBehind {
    pub fn step(&mut self, lag: Option<u64>) -> bool {
        match lag {
            None => {
                self.leaderless = self.leaderless.saturating_add(1);
                self.behind = 0;
            }
            Some(l) if l > FAR_BEHIND_ENTRIES => {
                self.behind = self.behind.saturating_add(1);
                self.leaderless = 0;
            }
            Some(_) => *self = FarBehind::default(),
        }
        self.behind >= FAR_BEHIND_CHECKS || self.leaderless >= LEADERLESS_CHECKS
    }
}

impl Ha {
    pub fn start(
        me: NodeId,
        role: Role,
        replica: Arc<Replica>,
        lb: Option<(Arc<DataPlane>, Arc<Journal>)>,
        vrrp: Option<(VrrpObserver, Arc<VipControl>)>,
    ) -> Arc<Ha> {
        let ha = Arc::new(Ha {
            me,
            role,
            replica: replica.clone(),
            lb: lb.map(|(plane, journal)| Lb {
                plane,
                journal,
                vrrp,
            }),
            lag: AtomicU64::new(u64::MAX),
            active_drill: Mutex::new(None),
            mastership: Mutex::new(None),
        });
        let reporter = ha.clone();
        replica.set_reporter(Arc::new(move || reporter.report()));
        tokio::spawn(ha.clone().lag_loop());
        if ha.lb.as_ref().is_some_and(|lb| lb.vrrp.is_some()) {
            tokio::spawn(ha.clone().drill_watch());
            tokio::spawn(ha.clone().vrrp_watch());
        }
        ha
    }

    pub fn lag(&self) -> Option<u64> {
        match self.lag.load(Ordering::Relaxed) {
            u64::MAX => None,
            l => Some(l),
        }
    }

    pub fn caught_up(&self) -> bool {
        self.lag().is_some_and(|l| l <= CAUGHT_UP_ENTRIES)
    }

    fn vrrp(&self) -> Option<&(VrrpObserver, Arc<VipControl>)> {
        self.lb.as_ref().and_then(|lb| lb.vrrp.as_ref())
    }

    pub fn report(&self) -> NodeReport {
        let status = self.vrrp().map(|(o, _)| o.status());
        let failing = match &self.lb {
            Some(Lb {
                plane,
                vrrp: Some((_, control)),
                ..
            }) => control.failing(plane),
            Some(lb) => crate::vip::failed_conditions(&lb.plane),
            None => Vec::new(),
        };
        NodeReport {
            node_id: self.me,
            role: self.role,
            vrrp_state: status.as_ref().map(|s| crate::vip::wire_state(s.state)),
            configured_priority: status.as_ref().map(|s| s.configured_priority),
            effective_priority: status.as_ref().map(|s| s.effective_priority),
            failing,
            yielded: self.vrrp().is_some_and(|(_, c)| c.yielded()),
            lag_entries: self.lag(),
            caught_up: self.caught_up(),
            revision: self.replica.read(|a| a.state.revision),
        }
    }

    async fn lag_loop(self: Arc<Self>) {
        let mut far = FarBehind::default();
        loop {
            let lag = self.replica.lag().await;
            self.lag.store(lag.unwrap_or(u64::MAX), Ordering::Relaxed);
            let far_behind = far.step(lag);
            if let Some((_, control)) = self.vrrp() {
                control.set_far_behind(far_behind);
            }
            tokio::time::sleep(LAG_EVERY).await;
        }
    }

    /// Commits `command`, retrying while there is no quorum (an election after the
    /// old leader died), for at most [`COMMIT_WAIT`].
    async fn commit(&self, command: Command) -> Option<u64> {
        let deadline = tokio::time::Instant::now() + COMMIT_WAIT;
        loop {
            match self.replica.propose(command.clone()).await {
                Ok(r) if r.error.is_none() => return Some(r.revision),
                Ok(r) => {
                    warn!(error = ?r.error, "failover record refused");
                    return None;
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    warn!(error = %e, "failover record not committed");
                    return None;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    async fn event(&self, id: u64, step: DrillStep, at_ms: u64) {
        info!(drill = id, event = step.as_str(), at_ms, "failover event");
        self.commit(Command::DrillEvent {
            id,
            event: DrillEvent {
                node: self.me,
                step,
                at_ms,
            },
        })
        .await;
    }

    /// Checks the target and opens a planned drill; the nodes involved act on the
    /// committed record.
    pub async fn start_drill(
        &self,
        to: Option<NodeId>,
    ) -> Result<(u64, NodeId, NodeId), DrillRefused> {
        let members = self.replica.status().members;
        let lbs: Vec<NodeId> = members
            .iter()
            .filter(|(_, m)| m.role == Role::Lb)
            .map(|(id, _)| *id)
            .collect();
        if let Some(to) = to {
            let member = members.get(&to).ok_or(DrillRefused::NotMember(to))?;
            if member.role != Role::Lb {
                return Err(DrillRefused::NotLb(to));
            }
        }
        let mut reports = Vec::new();
        for id in &lbs {
            let report = match self.replica.report_of(*id).await {
                Ok(Some(r)) => Ok(r),
                Ok(None) => Err("it is still starting".to_string()),
                Err(e) => Err(e.to_string()),
            };
            reports.push((*id, report));
        }
        let masters: Vec<NodeId> = reports
            .iter()
            .filter(|(_, r)| {
                r.as_ref()
                    .is_ok_and(|r| r.vrrp_state == Some(ballast_raft_store::ha::VrrpState::Master))
            })
            .map(|(id, _)| *id)
            .collect();
        let fitness = |id: NodeId| -> Result<&NodeReport, DrillRefused> {
            let report = reports
                .iter()
                .find(|(n, _)| *n == id)
                .map(|(_, r)| r)
                .ok_or(DrillRefused::NotMember(id))?
                .as_ref()
                .map_err(|reason| DrillRefused::Unreachable {
                    node: id,
                    reason: reason.clone(),
                })?;
            if report.vrrp_state.is_none() {
                return Err(DrillRefused::NoVrrp(id));
            }
            if masters.contains(&id) {
                return Err(DrillRefused::AlreadyMaster(id));
            }
            // A yielded node is fit: the drill lifts its hold.
            let failing: Vec<&str> = report
                .failing
                .iter()
                .filter(|c| **c != Condition::Yielded)
                .map(|c| c.as_str())
                .collect();
            if !failing.is_empty() {
                return Err(DrillRefused::Unhealthy {
                    node: id,
                    conditions: failing.join(", "),
                });
            }
            if !report.caught_up {
                return Err(DrillRefused::NotCaughtUp {
                    node: id,
                    lag: report.lag_entries.map_or_else(
                        || "no leader reachable".to_string(),
                        |l| format!("{l} entries behind, at most {CAUGHT_UP_ENTRIES}"),
                    ),
                });
            }
            Ok(report)
        };
        let to = match to {
            Some(to) => {
                fitness(to)?;
                to
            }
            None => lbs
                .iter()
                .filter_map(|id| fitness(*id).ok().map(|r| (*id, r.configured_priority)))
                .max_by_key(|(id, prio)| (*prio, std::cmp::Reverse(*id)))
                .map(|(id, _)| id)
                .ok_or(DrillRefused::NoCandidate)?,
        };
        let from = match masters.as_slice() {
            [] => return Err(DrillRefused::NoMaster),
            [one] => *one,
            several => return Err(DrillRefused::SeveralMasters(several.to_vec())),
        };
        let response = self
            .replica
            .propose(Command::DrillStart {
                kind: DrillKind::Planned,
                from: Some(from),
                to,
                started_ms: now_ms(),
                reporter: self.me,
            })
            .await
            .map_err(|e| DrillRefused::NotCommitted(e.to_string()))?;
        if let Some((_, message)) = response.error {
            return Err(DrillRefused::NotCommitted(message));
        }
        info!(
            drill = response.revision,
            from, to, "failover drill started"
        );
        Ok((response.revision, from, to))
    }

    /// Acts on planned drills as they are committed.
    async fn drill_watch(self: Arc<Self>) {
        let Some((observer, control)) = self.vrrp().cloned() else {
            return;
        };
        // Only drills committed from now on: a replayed log is history.
        let mut seen = self
            .replica
            .read(|a| a.state.drills.keys().next_back().copied())
            .unwrap_or(0);
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let newest = self.replica.read(|a| {
                a.state
                    .drills
                    .range(seen + 1..)
                    .filter(|(_, r)| r.kind == DrillKind::Planned)
                    .map(|(_, r)| (r.id, r.from, r.to, r.started_ms))
                    .next_back()
            });
            let Some((id, from, to, started_ms)) = newest else {
                continue;
            };
            seen = id;
            if now_ms().saturating_sub(started_ms) > DRILL_FRESH_MS {
                continue;
            }
            *self.active_drill.lock() = Some(ActiveDrill { id, from, to });
            if to == self.me {
                info!(drill = id, "failover drill: taking over");
                control.set_yielded(false);
                control.expect_handover();
                continue;
            }
            control.set_yielded(true);
            if observer.status().state != VrrpState::Master {
                continue;
            }
            // The lowered priority must be in force before the priority-0 advert, or
            // this node would preempt the new master straight back.
            let mut status = observer.subscribe();
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                status.wait_for(|s| s.effective_priority == 1 || s.configured_priority == 255),
            )
            .await;
            // The target reads the same record and arms its instance to take over at
            // once; give it a few of its 20 ms polls. Late, it still takes over, after
            // Skew_Time.
            tokio::time::sleep(HANDOVER_ARM).await;
            info!(drill = id, to, "failover drill: handing the VIP over");
            control.resign();
        }
    }

    async fn vrrp_watch(self: Arc<Self>) {
        let Some((observer, _)) = self.vrrp().cloned() else {
            return;
        };
        let mut rx = observer.subscribe();
        let mut last = rx.borrow_and_update().clone();
        // The master before a takeover, as seen while backup.
        let mut previous_master = last.master_addr;
        loop {
            if rx.changed().await.is_err() {
                return;
            }
            let now = rx.borrow_and_update().clone();
            if now.state == VrrpState::Backup && now.master_addr.is_some() {
                previous_master = now.master_addr;
            }
            if now.transitions != last.transitions {
                if let Some(t) = now.last_transition {
                    *self.mastership.lock() = (t.to == VrrpState::Master).then(|| Mastership {
                        became_ms: ms(t.at),
                        first_garp_ms: None,
                    });
                    self.on_transition(t.from, t.to, t.reason, ms(t.at), previous_master, &now);
                }
            }
            if now.last_garp != last.last_garp {
                if let (Some(m), Some(at)) = (self.mastership.lock().as_mut(), now.last_garp) {
                    m.first_garp_ms.get_or_insert(ms(at));
                }
            }
            last = now;
        }
    }

    fn on_transition(
        self: &Arc<Self>,
        from: VrrpState,
        to: VrrpState,
        reason: TransitionReason,
        at_ms: u64,
        previous_master: Option<IpAddr>,
        status: &VrrpStatus,
    ) {
        let drill = *self.active_drill.lock();
        let fresh = |d: &ActiveDrill| {
            self.replica.read(|a| {
                a.state
                    .drills
                    .get(&d.id)
                    .is_some_and(|r| now_ms().saturating_sub(r.started_ms) < DRILL_FRESH_MS)
            })
        };
        let drill = drill.filter(fresh);
        if from == VrrpState::Master {
            if let Some(lb) = &self.lb {
                lb.plane.release_vip_connections();
            }
        }
        match (from, to) {
            (VrrpState::Master, VrrpState::Backup) if reason == TransitionReason::Resigned => {
                if let Some(d) = drill.filter(|d| d.from == Some(self.me)) {
                    let me = self.clone();
                    tokio::spawn(async move { me.old_master_part(d.id, at_ms).await });
                }
            }
            (_, VrrpState::Master) => {
                if let Some(lb) = &self.lb {
                    lb.plane.arm_first_accept();
                }
                let me = self.clone();
                tokio::spawn(async move { me.follow_with_leadership().await });
                let me = self.clone();
                let primary = status.primary_addr;
                // A drill counts only until its target has taken over; a later
                // takeover is a new, unplanned one.
                let drill = drill.filter(|d| !self.recorded(d.id, d.to, DrillStep::BecameMaster));
                match drill {
                    Some(d) if d.to == self.me => {
                        tokio::spawn(async move { me.new_master_part(d.id, at_ms, true).await });
                    }
                    Some(d) if d.from == Some(self.me) => {
                        // Nobody took over: the drill failed and this node is back.
                        tokio::spawn(async move {
                            me.event(d.id, DrillStep::VipReclaimed, at_ms).await;
                        });
                    }
                    _ if reason == TransitionReason::MasterDown
                        || reason == TransitionReason::MasterResigned =>
                    {
                        // Without a known previous master this is the cluster starting,
                        // not a takeover.
                        if let Some(old) = previous_master.filter(|m| *m != primary) {
                            tokio::spawn(async move { me.unplanned(old, at_ms).await });
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn recorded(&self, id: u64, node: NodeId, step: DrillStep) -> bool {
        self.replica.read(|a| {
            a.state
                .drills
                .get(&id)
                .is_some_and(|r| r.events.iter().any(|e| e.node == node && e.step == step))
        })
    }

    /// Raft leadership follows the VRRP master, so its stick writes stay local.
    async fn follow_with_leadership(&self) {
        if self.replica.is_leader() {
            return;
        }
        info!(leader = ?self.replica.leader(), "VRRP master: standing for raft leadership");
        let still_master = || {
            self.vrrp()
                .is_some_and(|(o, _)| o.status().state == VrrpState::Master)
        };
        if self.replica.campaign(LEADER_WAIT, still_master).await {
            info!("raft leadership follows the VRRP master");
        } else {
            warn!(leader = ?self.replica.leader(), "raft leadership did not follow the VRRP master");
        }
    }

    fn member_by_ip(&self, ip: IpAddr) -> Option<NodeId> {
        self.replica
            .status()
            .members
            .iter()
            .find(|(_, m)| {
                [&m.raft, &m.api].iter().any(|a| {
                    a.parse::<std::net::SocketAddr>()
                        .is_ok_and(|s| s.ip() == ip)
                })
            })
            .map(|(id, _)| *id)
    }

    async fn unplanned(self: Arc<Self>, old_master: IpAddr, at_ms: u64) {
        let from = self.member_by_ip(old_master);
        warn!(old_master = %old_master, ?from, "unplanned takeover: this node is VRRP master now");
        if self
            .commit(Command::DrillStart {
                kind: DrillKind::Unplanned,
                from,
                to: self.me,
                started_ms: at_ms,
                reporter: self.me,
            })
            .await
            .is_none()
        {
            return;
        }
        // The revision answered is the record's id unless a retry found it already
        // open; the committed state says which.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let id = loop {
            let id = self
                .replica
                .read(|a| a.state.drill_id(DrillKind::Unplanned, self.me, at_ms));
            match id {
                Some(id) => break id,
                // Committed on the leader; applied here a moment later.
                None if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                None => return,
            }
        };
        self.new_master_part(id, at_ms, false).await;
    }

    /// The old master's part: when it let go, then proof that its decisions are
    /// committed (journal flushed, applied here) and the comparison of its tables.
    async fn old_master_part(&self, id: u64, released_ms: u64) {
        let Some(lb) = &self.lb else { return };
        self.event(id, DrillStep::VipReleased, released_ms).await;
        let deadline = tokio::time::Instant::now() + FLUSH_WAIT;
        lb.journal.flush_now();
        while !lb.journal.is_idle() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while self.replica.lag().await != Some(0) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let snapshot = self.snapshot();
        info!(drill = id, ?snapshot, "failover drill: old master's tables");
        self.commit(Command::DrillSnapshot {
            id,
            node: self.me,
            snapshot,
        })
        .await;
    }

    /// The new master's part: its VRRP milestones, its first client, Raft leadership,
    /// and its tables once it has everything the old master committed.
    async fn new_master_part(self: Arc<Self>, id: u64, became_ms: u64, planned: bool) {
        if self.vrrp().is_none() {
            return;
        }
        self.event(id, DrillStep::BecameMaster, became_ms).await;
        let deadline = tokio::time::Instant::now() + FLUSH_WAIT;
        loop {
            let garp = (*self.mastership.lock())
                .filter(|m| m.became_ms == became_ms)
                .and_then(|m| m.first_garp_ms);
            if let Some(at) = garp {
                self.event(id, DrillStep::GarpSent, at).await;
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + FIRST_CONNECTION_WAIT;
            while tokio::time::Instant::now() < deadline {
                let first = me.lb.as_ref().and_then(|lb| lb.plane.first_accept_ms());
                if let Some(at) = first {
                    me.event(id, DrillStep::FirstConnection, at).await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + LEADER_WAIT;
            while tokio::time::Instant::now() < deadline {
                if me.replica.is_leader() {
                    me.event(id, DrillStep::LeaderMoved, now_ms()).await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        if planned {
            // Compare once this node has applied what the old master flushed.
            let deadline = tokio::time::Instant::now() + FLUSH_WAIT * 2;
            while tokio::time::Instant::now() < deadline {
                let old_revision = self.replica.read(|a| {
                    let record = a.state.drills.get(&id)?;
                    let from = record.from?;
                    record.snapshots.get(&from).map(|s| s.revision)
                });
                let mine = self.replica.read(|a| a.state.revision);
                if old_revision.is_some_and(|r| mine >= r) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let snapshot = self.snapshot();
        info!(drill = id, ?snapshot, "failover: new master's tables");
        self.commit(Command::DrillSnapshot {
            id,
            node: self.me,
            snapshot,
        })
        .await;
    }

    fn snapshot(&self) -> NodeSnapshot {
        let Some(lb) = &self.lb else {
            return NodeSnapshot::default();
        };
        let view = lb.plane.view();
        let local: Vec<(String, Vec<(IpAddr, ballast_dataplane::stick::ServerName)>)> = view
            .backends
            .iter()
            .map(|(name, b)| (name.clone(), b.stick_entries()))
            .collect();
        let journal_pending = lb.journal.len() as u64;
        self.replica.read(|a| {
            let mut s = NodeSnapshot {
                at_ms: now_ms(),
                revision: a.state.revision,
                journal_pending,
                ..NodeSnapshot::default()
            };
            for (backend, entries) in &local {
                let pairs: Vec<(IpAddr, &str)> =
                    entries.iter().map(|(k, v)| (*k, v.as_ref())).collect();
                let replicated = a.state.sticks.get(backend);
                let (not_replicated, not_mirrored) = compare_tables(
                    &pairs,
                    replicated
                        .into_iter()
                        .flat_map(|t| t.iter().map(|(k, v, _)| (k, v.as_ref()))),
                );
                s.dataplane_entries += pairs.len() as u64;
                s.replicated_entries += replicated.map_or(0, |t| t.len() as u64);
                s.not_replicated += not_replicated;
                s.not_mirrored += not_mirrored;
            }
            s
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([198, 18, 1, n])
    }

    #[test]
    fn far_behind_needs_readings_in_a_row_and_one_good_clears_it() {
        let mut far = FarBehind::default();
        let behind: Vec<bool> = [Some(5_000), Some(5_000), Some(5_000), Some(9), Some(5_000)]
            .into_iter()
            .map(|lag| far.step(lag))
            .collect();
        assert_eq!(behind, [false, false, true, false, false]);
        // Without a leader (an election) it takes ten readings.
        let mut far = FarBehind::default();
        let leaderless: Vec<bool> = (0..10).map(|_| far.step(None)).collect();
        assert_eq!(leaderless.iter().filter(|b| **b).count(), 1);
        assert!(leaderless[9]);
        assert!(!far.step(Some(FAR_BEHIND_ENTRIES)));
    }

    #[test]
    fn identical_tables_have_nothing_lost_or_unmirrored() {
        let local = [(ip(1), "s1"), (ip(2), "s2")];
        assert_eq!(
            compare_tables(&local, [(ip(2), "s2"), (ip(1), "s1")]),
            (0, 0)
        );
    }

    #[test]
    fn local_decisions_missing_or_different_upstream_are_not_replicated() {
        let local = [(ip(1), "s1"), (ip(2), "s2"), (ip(3), "s3")];
        // ip(2) was never committed; ip(3) went elsewhere in the cluster.
        let (not_replicated, not_mirrored) = compare_tables(&local, [(ip(1), "s1"), (ip(3), "s1")]);
        assert_eq!(not_replicated, 2);
        assert_eq!(not_mirrored, 1);
    }

    #[test]
    fn replicated_entries_missing_locally_are_not_mirrored() {
        let (not_replicated, not_mirrored) = compare_tables(&[], [(ip(1), "s1"), (ip(2), "s2")]);
        assert_eq!((not_replicated, not_mirrored), (0, 2));
    }
}
