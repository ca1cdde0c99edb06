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

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ballast_raft_store::drill::DrillStep;
use ballast_raft_store::model::Role;
use ballast_raft_store::network::NodeReport;
use ballast_raft_store::replica::Replica;
use ballast_raft_store::state::NodeId;
use ballast_vrrp::driver::{VrrpObserver, VrrpStatus};
use ballast_vrrp::{TransitionReason, VrrpState};
use parking_lot::Mutex;
use tracing::{info, warn};

use crate::cluster::Journal;
use crate::vip::VipControl;
use ballast_dataplane::proxy::{now_ms, DataPlane};
mod drill;
mod lag;
mod record;

use ballast_model::time::unix_ms as ms;
pub use drill::DrillRefused;
use drill::DRILL_FRESH_MS;
pub use lag::{FarBehind, CAUGHT_UP_ENTRIES, FAR_BEHIND_ENTRIES};
pub use record::compare_tables;
use record::LEADER_WAIT;

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

    async fn vrrp_watch(self: Arc<Self>) {
        let Some((observer, _)) = self.vrrp().cloned() else {
            return;
        };
        let mut rx = observer.subscribe();
        let mut last = rx.borrow_and_update().clone();
        // The master before a takeover, as seen while backup.
        let mut previous_master = last.master_addr;
        // Master already (resumed by a live upgrade before this watch began): the
        // transition was published before anyone listened; act on it now.
        if last.state == VrrpState::Master {
            if let Some(t) = last.last_transition {
                *self.mastership.lock() = Some(Mastership {
                    became_ms: ms(t.at),
                    first_garp_ms: None,
                });
                self.on_transition(t.from, t.to, t.reason, ms(t.at), previous_master, &last);
            }
        }
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
}
