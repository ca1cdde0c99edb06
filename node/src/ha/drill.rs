//! Planned failover drills: checking and committing one (`POST /v1/drills/failover`),
//! and every node acting on it as it is committed (the target stops yielding, the
//! master lowers its priority and resigns).

use std::sync::Arc;
use std::time::Duration;

use ballast_raft_store::drill::DrillKind;
use ballast_raft_store::ha::Condition;
use ballast_raft_store::model::Role;
use ballast_raft_store::network::NodeReport;
use ballast_raft_store::state::{Command, NodeId};
use ballast_vrrp::VrrpState;
use tracing::info;

use super::{ActiveDrill, Ha, CAUGHT_UP_ENTRIES};
use ballast_dataplane::proxy::now_ms;

/// A drill is acted on only while this fresh: a restarted node replaying its log must
/// not resign because of an old drill.
pub(super) const DRILL_FRESH_MS: u64 = 20_000;
/// How long the old master lets the drill's target apply the record and arm itself
/// before resigning.
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

impl Ha {
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
    pub(super) async fn drill_watch(self: Arc<Self>) {
        let Some((observer, control)) = self.vrrp().cloned() else {
            return;
        };
        // Only drills committed from now on: a replayed log is history.
        let mut seen = self
            .replica
            .read(|a| a.state.drills.keys().next_back().copied())
            .unwrap_or(0);
        // Woken by every entry this replica applies (openraft's metrics watch).
        let mut progress = self.replica.raft().metrics();
        loop {
            if progress.changed().await.is_err() {
                return;
            }
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
            // The target arms its instance as soon as it applies the same record, which
            // reaches it with the leader's next append; give that a moment. Late, it
            // still takes over, after Skew_Time.
            tokio::time::sleep(HANDOVER_ARM).await;
            info!(drill = id, to, "failover drill: handing the VIP over");
            control.resign();
        }
    }
}
