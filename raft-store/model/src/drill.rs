//! Failover records: planned drills and unplanned takeovers.
//!
//! They live in the replicated state, so any node answers `GET /v1/drills/{id}`, and a
//! report outlives the node that ran the drill (a takeover report is written by the new
//! master precisely because the old one is gone). Each node involved commits what it
//! saw as [`DrillEvent`]s and one [`NodeSnapshot`]; [`DrillRecord::report`] turns them
//! into the timeline and the figures. Timestamps are wall-clock milliseconds of the
//! node that saw the event (in a lab on one host they share a clock; across hosts they
//! are as good as NTP).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::NodeId;

/// Records kept; older ones are dropped first.
pub const MAX_RECORDS: usize = 64;
/// A drill that has not produced every expected event by then is reported incomplete.
pub const DRILL_DEADLINE_MS: u64 = 60_000;

/// Serde names are the JSON names (`as_str`); bincode encodes variants by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DrillKind {
    /// `POST /v1/drills/failover`: the master hands the VIP over.
    Planned,
    /// A backup took the VIP because the master went silent.
    Unplanned,
}

impl DrillKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DrillKind::Planned => "planned",
            DrillKind::Unplanned => "unplanned",
        }
    }
}

/// A point on a failover's timeline.
/// Serde names are the JSON names (`as_str`); bincode encodes variants by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DrillStep {
    /// The drill was committed (planned) or the takeover noticed (unplanned).
    #[serde(rename = "drill_started")]
    Started,
    /// The old master sent priority 0 and removed the VIP.
    VipReleased,
    /// The new master's VRRP state became master.
    BecameMaster,
    /// The new master's gratuitous ARP for the VIP went out.
    GarpSent,
    /// The first client connection accepted by the new master after it became master.
    FirstConnection,
    /// Raft leadership moved to the new master (stick writes are local again).
    LeaderMoved,
    /// The old master took the VIP back: nobody took over within Master_Down_Interval.
    VipReclaimed,
}

impl DrillStep {
    pub fn as_str(self) -> &'static str {
        match self {
            DrillStep::Started => "drill_started",
            DrillStep::VipReleased => "vip_released",
            DrillStep::BecameMaster => "became_master",
            DrillStep::GarpSent => "garp_sent",
            DrillStep::FirstConnection => "first_connection",
            DrillStep::LeaderMoved => "leader_moved",
            DrillStep::VipReclaimed => "vip_reclaimed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillEvent {
    pub node: NodeId,
    pub step: DrillStep,
    pub at_ms: u64,
}

/// What one node saw of the stick tables once its part was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct NodeSnapshot {
    pub at_ms: u64,
    /// The replicated state's revision on that node.
    pub revision: u64,
    /// Entries in the replicated stick tables (all backends).
    pub replicated_entries: u64,
    /// Entries in the node's own data-plane stick tables.
    pub dataplane_entries: u64,
    /// Data-plane entries whose server the replicated table does not have (old master:
    /// decisions the cluster did not commit, i.e. lost; new master: entries it could
    /// not serve yet).
    pub not_replicated: u64,
    /// Replicated entries missing from the data plane (new master: not mirrored yet).
    pub not_mirrored: u64,
    /// Decisions still waiting in the node's journal.
    pub journal_pending: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillRecord {
    pub id: u64,
    pub kind: DrillKind,
    /// The master handing over (planned), or the one that went silent if known.
    pub from: Option<NodeId>,
    pub to: NodeId,
    pub started_ms: u64,
    pub events: Vec<DrillEvent>,
    pub snapshots: BTreeMap<NodeId, NodeSnapshot>,
}

/// The outcome as `GET /v1/drills/{id}` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DrillState {
    Running,
    Done,
    /// The old master took the VIP back.
    Failed,
    /// The deadline passed with events missing.
    Incomplete,
}

/// Milliseconds after the start; `None` until the event is recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Figures {
    pub vip_released_ms: Option<u64>,
    pub became_master_ms: Option<u64>,
    pub garp_ms: Option<u64>,
    pub first_connection_ms: Option<u64>,
    pub leader_moved_ms: Option<u64>,
    /// Stick decisions the old master made that the cluster never committed. `None`
    /// when the old master could not report (an unplanned takeover): then at most the
    /// decisions of its last replication batch interval can be missing.
    pub stick_entries_lost: Option<u64>,
    /// Replicated entries the new master had not mirrored into its data plane.
    pub stick_entries_not_mirrored: Option<u64>,
    /// New master's revision minus the old master's, at their snapshots.
    pub revision_gap: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TimelineEntry {
    pub event: DrillStep,
    pub node: NodeId,
    pub at_ms: u64,
    /// Milliseconds after the start.
    pub after_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DrillReport {
    pub id: u64,
    pub kind: DrillKind,
    pub from: Option<NodeId>,
    pub to: NodeId,
    pub state: DrillState,
    pub started_ms: u64,
    pub timeline: Vec<TimelineEntry>,
    pub figures: Figures,
    /// Events not recorded (yet). `first_connection` alone does not keep a drill from
    /// being done: it comes with the first client, if any.
    /// Steps (`drill_started`, `vip_released`, ...) and `old_master_snapshot` /
    /// `new_master_snapshot`.
    pub missing: Vec<String>,
    pub nodes: BTreeMap<NodeId, NodeSnapshot>,
}

impl DrillRecord {
    fn at(&self, node: Option<NodeId>, step: DrillStep) -> Option<u64> {
        self.events
            .iter()
            .filter(|e| e.step == step && node.is_none_or(|n| n == e.node))
            .map(|e| e.at_ms)
            .min()
    }

    /// Records an event once per (node, step): the first report wins.
    pub fn add_event(&mut self, event: DrillEvent) -> bool {
        if self
            .events
            .iter()
            .any(|e| e.node == event.node && e.step == event.step)
        {
            return false;
        }
        self.events.push(event);
        true
    }

    /// The steps a complete record has, and who reports them. The first connection
    /// is not among them: without clients it never comes, and the drill still worked.
    fn expected(&self) -> Vec<(Option<NodeId>, DrillStep)> {
        let mut steps = Vec::new();
        if self.kind == DrillKind::Planned {
            steps.push((self.from, DrillStep::VipReleased));
        }
        steps.push((Some(self.to), DrillStep::BecameMaster));
        steps.push((Some(self.to), DrillStep::GarpSent));
        steps
    }

    fn snapshots_expected(&self) -> Vec<NodeId> {
        match (self.kind, self.from) {
            (DrillKind::Planned, Some(from)) => vec![from, self.to],
            _ => vec![self.to],
        }
    }

    pub fn report(&self, now_ms: u64) -> DrillReport {
        let rel = |at: Option<u64>| at.map(|a| a.saturating_sub(self.started_ms));
        let mut events = self.events.clone();
        events.sort_by_key(|e| (e.at_ms, e.step));
        let timeline = events
            .iter()
            .map(|e| TimelineEntry {
                event: e.step,
                node: e.node,
                at_ms: e.at_ms,
                after_ms: e.at_ms as i64 - self.started_ms as i64,
            })
            .collect();
        let mut missing: Vec<String> = self
            .expected()
            .into_iter()
            .filter(|(node, step)| self.at(*node, *step).is_none())
            .map(|(_, step)| step.as_str().to_string())
            .collect();
        let mut awaited = Vec::new();
        if self.at(Some(self.to), DrillStep::FirstConnection).is_none() {
            awaited.push(DrillStep::FirstConnection.as_str().to_string());
        }
        for node in self.snapshots_expected() {
            if !self.snapshots.contains_key(&node) {
                missing.push(
                    if Some(node) == self.from {
                        "old_master_snapshot"
                    } else {
                        "new_master_snapshot"
                    }
                    .to_string(),
                );
            }
        }
        let old = self.from.and_then(|f| self.snapshots.get(&f));
        let new = self.snapshots.get(&self.to);
        let reclaimed = self.at(self.from, DrillStep::VipReclaimed).is_some()
            && self.at(Some(self.to), DrillStep::BecameMaster).is_none();
        let awaited_only = missing.is_empty();
        missing.extend(awaited);
        let state = if reclaimed {
            DrillState::Failed
        } else if awaited_only {
            DrillState::Done
        } else if now_ms.saturating_sub(self.started_ms) > DRILL_DEADLINE_MS {
            DrillState::Incomplete
        } else {
            DrillState::Running
        };
        let figures = Figures {
            vip_released_ms: rel(self.at(self.from, DrillStep::VipReleased)),
            became_master_ms: rel(self.at(Some(self.to), DrillStep::BecameMaster)),
            garp_ms: rel(self.at(Some(self.to), DrillStep::GarpSent)),
            first_connection_ms: rel(self.at(Some(self.to), DrillStep::FirstConnection)),
            leader_moved_ms: rel(self.at(Some(self.to), DrillStep::LeaderMoved)),
            stick_entries_lost: old.map(|o| o.not_replicated + o.journal_pending),
            stick_entries_not_mirrored: new.map(|n| n.not_mirrored),
            revision_gap: old
                .zip(new)
                .map(|(o, n)| n.revision as i64 - o.revision as i64),
        };
        DrillReport {
            id: self.id,
            kind: self.kind,
            from: self.from,
            to: self.to,
            state,
            started_ms: self.started_ms,
            timeline,
            figures,
            missing,
            nodes: self.snapshots.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned() -> DrillRecord {
        DrillRecord {
            id: 7,
            kind: DrillKind::Planned,
            from: Some(1),
            to: 2,
            started_ms: 1_000,
            events: vec![DrillEvent {
                node: 3,
                step: DrillStep::Started,
                at_ms: 1_000,
            }],
            snapshots: BTreeMap::new(),
        }
    }

    fn ev(node: NodeId, step: DrillStep, at_ms: u64) -> DrillEvent {
        DrillEvent { node, step, at_ms }
    }

    #[test]
    fn a_planned_drill_is_done_with_every_event_and_both_snapshots() {
        let mut r = planned();
        assert_eq!(r.report(1_500).state, DrillState::Running);
        assert!(r.add_event(ev(1, DrillStep::VipReleased, 1_020)));
        assert!(r.add_event(ev(2, DrillStep::BecameMaster, 1_060)));
        assert!(r.add_event(ev(2, DrillStep::GarpSent, 1_061)));
        assert!(r.add_event(ev(2, DrillStep::FirstConnection, 1_090)));
        // A repeated report of the same step keeps the first.
        assert!(!r.add_event(ev(2, DrillStep::FirstConnection, 1_500)));
        let report = r.report(2_000);
        assert_eq!(report.state, DrillState::Running);
        assert_eq!(
            report.missing,
            vec!["old_master_snapshot", "new_master_snapshot"]
        );
        r.snapshots.insert(
            1,
            NodeSnapshot {
                revision: 40,
                not_replicated: 0,
                journal_pending: 0,
                ..Default::default()
            },
        );
        r.snapshots.insert(
            2,
            NodeSnapshot {
                revision: 43,
                ..Default::default()
            },
        );
        let report = r.report(2_000);
        assert_eq!(report.state, DrillState::Done);
        assert_eq!(report.figures.vip_released_ms, Some(20));
        assert_eq!(report.figures.garp_ms, Some(61));
        assert_eq!(report.figures.first_connection_ms, Some(90));
        assert_eq!(report.figures.stick_entries_lost, Some(0));
        assert_eq!(report.figures.revision_gap, Some(3));
        let order: Vec<&str> = report.timeline.iter().map(|t| t.event.as_str()).collect();
        assert_eq!(
            order,
            [
                "drill_started",
                "vip_released",
                "became_master",
                "garp_sent",
                "first_connection"
            ]
        );
    }

    #[test]
    fn lost_entries_count_uncommitted_and_pending_decisions() {
        let mut r = planned();
        r.snapshots.insert(
            1,
            NodeSnapshot {
                not_replicated: 2,
                journal_pending: 3,
                ..Default::default()
            },
        );
        assert_eq!(r.report(1_000).figures.stick_entries_lost, Some(5));
    }

    #[test]
    fn a_drill_without_clients_is_done_and_still_shows_the_missing_first_connection() {
        let mut r = planned();
        r.add_event(ev(1, DrillStep::VipReleased, 1_020));
        r.add_event(ev(2, DrillStep::BecameMaster, 1_060));
        r.add_event(ev(2, DrillStep::GarpSent, 1_061));
        r.snapshots.insert(1, NodeSnapshot::default());
        r.snapshots.insert(2, NodeSnapshot::default());
        let report = r.report(1_100);
        assert_eq!(report.state, DrillState::Done);
        assert_eq!(report.missing, vec!["first_connection"]);
        assert_eq!(report.figures.first_connection_ms, None);
    }

    #[test]
    fn a_drill_past_its_deadline_is_incomplete_and_says_what_is_missing() {
        let mut r = planned();
        r.add_event(ev(1, DrillStep::VipReleased, 1_020));
        let report = r.report(1_000 + DRILL_DEADLINE_MS + 1);
        assert_eq!(report.state, DrillState::Incomplete);
        assert!(report.missing.iter().any(|m| m == "first_connection"));
    }

    #[test]
    fn a_reclaimed_vip_fails_the_drill() {
        let mut r = planned();
        r.add_event(ev(1, DrillStep::VipReleased, 1_020));
        r.add_event(ev(1, DrillStep::VipReclaimed, 4_700));
        assert_eq!(r.report(5_000).state, DrillState::Failed);
    }

    #[test]
    fn an_unplanned_takeover_needs_only_the_new_master() {
        let mut r = planned();
        r.kind = DrillKind::Unplanned;
        r.add_event(ev(2, DrillStep::BecameMaster, 1_000));
        r.add_event(ev(2, DrillStep::GarpSent, 1_001));
        r.add_event(ev(2, DrillStep::FirstConnection, 1_030));
        r.snapshots.insert(2, NodeSnapshot::default());
        let report = r.report(1_100);
        assert_eq!(report.state, DrillState::Done);
        assert_eq!(report.figures.stick_entries_lost, None);
        assert_eq!(report.figures.vip_released_ms, None);
    }
}
