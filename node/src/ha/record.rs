//! Failover records: the old and the new master commit what they saw (VIP released,
//! became master, GARP, first client, Raft leadership) and their tables' comparison;
//! a takeover nobody planned opens its own record.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ballast_raft_store::drill::{DrillEvent, DrillKind, DrillStep, NodeSnapshot};
use ballast_raft_store::state::{Command, NodeId};
use tracing::{info, warn};

use super::Ha;
use crate::wait::wait_until;
use ballast_dataplane::proxy::now_ms;

/// Waits for the parts of a record (a connection, a flush), each bounded.
const FIRST_CONNECTION_WAIT: Duration = Duration::from_secs(60);
const FLUSH_WAIT: Duration = Duration::from_secs(5);
pub(super) const LEADER_WAIT: Duration = Duration::from_secs(20);
const COMMIT_WAIT: Duration = Duration::from_secs(30);
/// Re-checks of conditions that need a question to the leader (lag, journal commits).
const POLL_EVERY: Duration = Duration::from_millis(20);
/// Re-checks of milestone timestamps other tasks record (GARP sent, first client).
const MILESTONE_EVERY: Duration = Duration::from_millis(10);

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

impl Ha {
    /// Commits `command`, retrying while there is no quorum (an election after the
    /// old leader died), for at most [`COMMIT_WAIT`].
    pub(super) async fn commit(&self, command: Command) -> Option<u64> {
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

    pub(super) async fn event(&self, id: u64, step: DrillStep, at_ms: u64) {
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

    pub(super) fn recorded(&self, id: u64, node: NodeId, step: DrillStep) -> bool {
        self.replica.read(|a| {
            a.state
                .drills
                .get(&id)
                .is_some_and(|r| r.events.iter().any(|e| e.node == node && e.step == step))
        })
    }

    pub(super) async fn unplanned(self: Arc<Self>, old_master: IpAddr, at_ms: u64) {
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
        // Committed on the leader; applied here a moment later.
        let id = self
            .replica
            .wait_applied(Duration::from_secs(3), |a| {
                a.state.drill_id(DrillKind::Unplanned, self.me, at_ms)
            })
            .await;
        let Some(id) = id else { return };
        self.new_master_part(id, at_ms, false).await;
    }

    /// The old master's part: when it let go, then proof that its decisions are
    /// committed (journal flushed, applied here) and the comparison of its tables.
    pub(super) async fn old_master_part(&self, id: u64, released_ms: u64) {
        let Some(lb) = &self.lb else { return };
        self.event(id, DrillStep::VipReleased, released_ms).await;
        let deadline = tokio::time::Instant::now() + FLUSH_WAIT;
        lb.journal.flush_now();
        wait_until(FLUSH_WAIT, POLL_EVERY, || async {
            lb.journal.is_idle().then_some(())
        })
        .await;
        // How far behind the leader this replica is takes a question to the leader.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        wait_until(left, POLL_EVERY, || async {
            (self.replica.lag().await == Some(0)).then_some(())
        })
        .await;
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
    pub(super) async fn new_master_part(self: Arc<Self>, id: u64, became_ms: u64, planned: bool) {
        if self.vrrp().is_none() {
            return;
        }
        self.event(id, DrillStep::BecameMaster, became_ms).await;
        // Timestamps of milestones recorded by other tasks: read, not announced.
        let garp = wait_until(FLUSH_WAIT, MILESTONE_EVERY, || async {
            (*self.mastership.lock())
                .filter(|m| m.became_ms == became_ms)
                .and_then(|m| m.first_garp_ms)
        })
        .await;
        if let Some(at) = garp {
            self.event(id, DrillStep::GarpSent, at).await;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let first = wait_until(FIRST_CONNECTION_WAIT, MILESTONE_EVERY, || async {
                me.lb.as_ref().and_then(|lb| lb.plane.first_accept_ms())
            })
            .await;
            if let Some(at) = first {
                me.event(id, DrillStep::FirstConnection, at).await;
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            if me
                .replica
                .wait_metrics(LEADER_WAIT, |m| me.replica.leads(m))
                .await
            {
                me.event(id, DrillStep::LeaderMoved, now_ms()).await;
            }
        });
        if planned {
            // Compare once this node has applied what the old master flushed.
            self.replica
                .wait_applied(FLUSH_WAIT * 2, |a| {
                    let record = a.state.drills.get(&id)?;
                    let old_revision = record.snapshots.get(&record.from?)?.revision;
                    (a.state.revision >= old_revision).then_some(())
                })
                .await;
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

    pub(super) fn snapshot(&self) -> NodeSnapshot {
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
