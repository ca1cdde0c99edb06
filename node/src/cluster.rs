//! The two directions between the data plane and the replicated cluster:
//!
//! ```text
//!  data plane ──stick decisions, health flips──▶ Journal ──batches (50 ms / 1,024)──▶ Raft
//!  data plane ◀──model, peers' entries, health── PlaneMirror ◀──committed entries─── Raft
//! ```
//!
//! The connection path only ever touches the [`Journal`]'s mutex for one map insert.
//! When there is no quorum the journal keeps the latest decision per client (bounded,
//! counted) and the flusher keeps retrying, so everything is replayed once a majority is
//! back (DESIGN principles 2 and 4).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ballast_raft_store::replica::Replica;
use ballast_raft_store::state::{
    Change, ClusterState, Command, HealthReport, NodeId, StickBatch, StickUpdate,
};
use ballast_raft_store::store::Observer;
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use ballast_dataplane::proxy::{DataPlane, ReplicationSink};
use ballast_dataplane::stick::ServerName;

/// Entries per proposal, and the fill level that wakes the flusher early.
pub const BATCH_ENTRIES: usize = 1024;
/// How long a decision may wait in the journal before it is proposed.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(50);
/// Distinct clients the journal holds while there is no quorum.
pub const JOURNAL_CAPACITY: usize = 1_000_000;

type StickKey = (Arc<str>, IpAddr);

#[derive(Default)]
struct Pending {
    /// The latest decision per (backend, client): replaying an older one is pointless.
    sticks: BTreeMap<StickKey, (ServerName, u64)>,
    /// The same decisions ordered by time, so that a full journal drops its oldest in
    /// O(log n): a scan for the oldest cost every new client a pass over a million
    /// entries, under the mutex the connection path takes.
    by_age: BTreeSet<(u64, StickKey)>,
    health: BTreeMap<(String, String), HealthReport>,
}

impl Pending {
    fn len(&self) -> usize {
        self.sticks.len() + self.health.len()
    }

    /// Records a decision, replacing the client's previous one (`keep_newer`: unless
    /// that one is there already, for decisions put back after a failed proposal).
    fn insert_stick(&mut self, key: StickKey, server: ServerName, at_ms: u64, keep_newer: bool) {
        if let Some((_, old_ms)) = self.sticks.get(&key) {
            if keep_newer {
                return;
            }
            self.by_age.remove(&(*old_ms, key.clone()));
        }
        self.by_age.insert((at_ms, key.clone()));
        self.sticks.insert(key, (server, at_ms));
    }

    fn pop_stick(&mut self) -> Option<(StickKey, (ServerName, u64))> {
        let (key, value) = self.sticks.pop_first()?;
        self.by_age.remove(&(value.1, key.clone()));
        Some((key, value))
    }

    /// Drops the oldest decision: the least likely to matter when quorum returns.
    fn drop_oldest_stick(&mut self) -> bool {
        let Some((_, key)) = self.by_age.pop_first() else {
            return false;
        };
        self.sticks.remove(&key);
        true
    }
}

pub struct Journal {
    pending: Mutex<Pending>,
    /// Something arrived in an empty journal: the flusher starts gathering a batch.
    arrived: Notify,
    /// Propose now, without waiting out the batch interval.
    wake: Notify,
    capacity: usize,
    pub dropped: AtomicU64,
    pub proposed: AtomicU64,
    /// Decisions taken out for a proposal that has not answered yet.
    in_flight: AtomicU64,
    pub failed_proposals: AtomicU64,
}

impl Journal {
    pub fn new(capacity: usize) -> Self {
        Journal {
            pending: Mutex::new(Pending::default()),
            arrived: Notify::new(),
            wake: Notify::new(),
            capacity,
            dropped: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            proposed: AtomicU64::new(0),
            failed_proposals: AtomicU64::new(0),
        }
    }

    /// Nothing pending and no proposal waiting for its commit: every decision made so
    /// far is committed (or, without quorum, still pending).
    pub fn is_idle(&self) -> bool {
        self.is_empty() && self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Proposes what is pending now instead of at the next batch interval.
    pub fn flush_now(&self) {
        self.arrived.notify_one();
        self.wake.notify_one();
    }

    /// Returns when the pending decisions should be proposed: a batch interval after
    /// the first one arrived, or at once when the batch is full or a flush was asked for.
    /// An empty journal waits for a decision instead of waking every interval: polling
    /// woke an idle node 20 times a second, for nothing.
    async fn batch_due(&self) {
        if self.is_empty() {
            self.arrived.notified().await;
        }
        tokio::select! {
            () = self.wake.notified() => {}
            () = tokio::time::sleep(BATCH_INTERVAL) => {}
        }
    }

    pub fn len(&self) -> usize {
        self.pending.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take_sticks(&self, max: usize) -> Vec<StickBatch> {
        let mut p = self.pending.lock();
        let mut by_backend: BTreeMap<Arc<str>, Vec<StickUpdate>> = BTreeMap::new();
        for _ in 0..max {
            let Some(((backend, key), (server, last_seen_ms))) = p.pop_stick() else {
                break;
            };
            by_backend.entry(backend).or_default().push(StickUpdate {
                key,
                server,
                last_seen_ms,
            });
        }
        by_backend
            .into_iter()
            .map(|(backend, updates)| StickBatch {
                backend: backend.to_string(),
                updates,
            })
            .collect()
    }

    /// Puts back what could not be proposed, unless a newer decision came in meanwhile.
    fn restore_sticks(&self, batches: Vec<StickBatch>) {
        let mut p = self.pending.lock();
        for batch in batches {
            let backend: Arc<str> = Arc::from(batch.backend.as_str());
            for u in batch.updates {
                p.insert_stick((backend.clone(), u.key), u.server, u.last_seen_ms, true);
            }
        }
        self.enforce_capacity(&mut p);
    }

    fn enforce_capacity(&self, p: &mut Pending) {
        while p.sticks.len() > self.capacity && p.drop_oldest_stick() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A journal's pending decisions, handed to the next process in a live upgrade.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JournalCarry {
    pub sticks: Vec<StickBatch>,
    pub health: Vec<(String, String, HealthReport)>,
}

impl Journal {
    /// Takes out everything pending (call once nothing proposes any more).
    pub fn export(&self) -> JournalCarry {
        let sticks = self.take_sticks(usize::MAX);
        let health = std::mem::take(&mut self.pending.lock().health)
            .into_iter()
            .map(|((backend, server), report)| (backend, server, report))
            .collect();
        JournalCarry { sticks, health }
    }

    /// Takes in a previous process's pending decisions; newer ones here win.
    pub fn import(&self, carry: JournalCarry) {
        self.restore_sticks(carry.sticks);
        {
            let mut p = self.pending.lock();
            for (backend, server, report) in carry.health {
                p.health.entry((backend, server)).or_insert(report);
            }
        }
        if !self.is_empty() {
            self.flush_now();
        }
    }

    /// Decisions taken out for a proposal that has not answered yet.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }
}

impl ReplicationSink for Journal {
    fn stick(&self, backend: &Arc<str>, key: IpAddr, server: &ServerName, last_seen_ms: u64) {
        let (first, full) = {
            let mut p = self.pending.lock();
            let first = p.len() == 0;
            p.insert_stick((backend.clone(), key), server.clone(), last_seen_ms, false);
            if p.sticks.len() > self.capacity {
                self.enforce_capacity(&mut p);
            }
            (first, p.sticks.len() >= BATCH_ENTRIES)
        };
        if first {
            self.arrived.notify_one();
        }
        if full {
            self.wake.notify_one();
        }
    }

    fn health(&self, backend: &str, server: &str, up: bool, at_ms: u64) {
        self.pending.lock().health.insert(
            (backend.to_string(), server.to_string()),
            HealthReport { up, at_ms },
        );
        self.flush_now();
    }
}

/// Proposes the journal's content in batches until the task is dropped.
pub async fn flush_loop(journal: Arc<Journal>, replica: Arc<Replica>) {
    let me = replica.id();
    let mut failing = false;
    loop {
        journal.batch_due().await;
        let mut ok = true;
        loop {
            let batches = journal.take_sticks(BATCH_ENTRIES);
            if batches.is_empty() {
                break;
            }
            let count: usize = batches.iter().map(|b| b.updates.len()).sum();
            journal.in_flight.fetch_add(count as u64, Ordering::AcqRel);
            let result = replica
                .propose(Command::Stick {
                    origin: me,
                    batches: batches.clone(),
                })
                .await;
            match result {
                Ok(_) => {
                    journal.proposed.fetch_add(count as u64, Ordering::Relaxed);
                    journal.in_flight.fetch_sub(count as u64, Ordering::AcqRel);
                }
                Err(e) => {
                    journal.failed_proposals.fetch_add(1, Ordering::Relaxed);
                    // Back in the journal before it stops counting as in flight.
                    journal.restore_sticks(batches);
                    journal.in_flight.fetch_sub(count as u64, Ordering::AcqRel);
                    if !failing {
                        warn!(error = %e, pending = journal.len(), "stick decisions kept in the local journal until the cluster has a quorum again");
                    }
                    ok = false;
                    break;
                }
            }
        }
        let health: Vec<((String, String), HealthReport)> = {
            let mut p = journal.pending.lock();
            std::mem::take(&mut p.health).into_iter().collect()
        };
        for ((backend, server), report) in health {
            let command = Command::Health {
                observer: me,
                backend: backend.clone(),
                server: server.clone(),
                report,
            };
            if replica.propose(command).await.is_err() {
                ok = false;
                journal
                    .pending
                    .lock()
                    .health
                    .entry((backend, server))
                    .or_insert(report);
            }
        }
        if ok && failing {
            info!("quorum is back: the local journal has been replayed");
        }
        failing = !ok;
        if failing {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Mirrors committed changes into the data plane. Runs inside the state machine: only
/// quick, lock-local work here; model changes are handed to [`apply_loop`].
pub struct PlaneMirror {
    me: NodeId,
    plane: Arc<DataPlane>,
    reset: AtomicBool,
    generation: watch::Sender<u64>,
}

impl PlaneMirror {
    pub fn new(me: NodeId, plane: Arc<DataPlane>) -> Arc<Self> {
        Arc::new(PlaneMirror {
            me,
            plane,
            reset: AtomicBool::new(true),
            generation: watch::channel(0).0,
        })
    }
}

impl Observer for PlaneMirror {
    fn on_change(&self, _state: &ClusterState, change: &Change) {
        match change {
            Change::Model => self.generation.send_modify(|g| *g += 1),
            Change::ModelAndShutdown { backend, server } => {
                // Before the new view drops it: the server's connections are told now.
                self.plane.shutdown_server(backend, server);
                self.generation.send_modify(|g| *g += 1);
            }
            Change::Sticks { origin, batches } if *origin != self.me => {
                for batch in batches {
                    let updates = batch.updates.iter();
                    self.plane.merge_sticks(
                        &batch.backend,
                        updates.map(|u| (u.key, &u.server, u.last_seen_ms)),
                    );
                }
            }
            Change::StickForgotten { backend, key } => self.plane.forget_sticks(backend, *key),
            Change::Health {
                backend,
                server,
                effective_up,
            } => self
                .plane
                .set_replicated_health(backend, server, *effective_up),
            Change::Sticks { .. } | Change::Swept | Change::Drill { .. } | Change::None => {}
        }
    }

    fn on_reset(&self, _state: &ClusterState) {
        self.reset.store(true, Ordering::Relaxed);
        self.generation.send_modify(|g| *g += 1);
    }
}

/// Takes the replicated entries of `tables` into the data plane, and the effective health
/// of every server (a few per backend: cheap, and new servers need it).
fn import_state<'a>(
    plane: &DataPlane,
    state: &ClusterState,
    tables: impl IntoIterator<Item = &'a String>,
) {
    for name in tables {
        if let Some(table) = state.sticks.get(name) {
            plane.merge_sticks(name, table.iter());
        }
    }
    plane.set_all_replicated_health(|backend, server| state.effective_up(backend, server));
}

/// Applies the replicated model to the data plane whenever it changes (and the whole
/// state after a reset), outside the state machine.
pub async fn apply_loop(mirror: Arc<PlaneMirror>, replica: Arc<Replica>) {
    let mut changes = mirror.generation.subscribe();
    let mut applied_revision = None;
    loop {
        let (model, bootstrapped, revision) = replica.read(|a| {
            (
                a.state.model.clone(),
                a.state.bootstrapped,
                a.state.revision,
            )
        });
        let reset = mirror.reset.swap(false, Ordering::Relaxed);
        if bootstrapped {
            let applied = mirror.plane.apply_model(&model);
            let errors = applied.errors;
            // Tables carried over already hold every committed entry (the observer merges
            // them as they commit): only new tables, or all of them after a reset, take
            // the replicated entries in. Re-importing 200,000 entries under the stick
            // mutex on every admin change stalled new connections.
            replica.read(|a| {
                let tables: Vec<&String> = if reset {
                    model.backends.keys().collect()
                } else {
                    applied.new_stick_tables.iter().collect()
                };
                import_state(&mirror.plane, &a.state, tables);
            });
            mirror.plane.mark_applied(revision);
            if applied_revision.is_none() {
                info!(
                    revision,
                    frontends = model.frontends.len(),
                    backends = model.backends.len(),
                    "cluster model applied to the data plane"
                );
            }
            if !errors.is_empty() {
                warn!(failed = errors.len(), "some listeners could not be opened");
            }
            applied_revision = Some(revision);
        } else if reset {
            info!("waiting for the cluster model to be seeded");
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(s: &str) -> ServerName {
        Arc::from(s)
    }

    #[test]
    fn journal_keeps_the_latest_decision_per_client_and_batches_by_backend() {
        let j = Journal::new(100);
        let b: Arc<str> = Arc::from("b");
        let c: Arc<str> = Arc::from("c");
        let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
        j.stick(&b, ip(1), &server("s1"), 1);
        j.stick(&b, ip(1), &server("s2"), 2);
        j.stick(&c, ip(1), &server("s1"), 3);
        assert_eq!(j.len(), 2);
        let batches = j.take_sticks(10);
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].updates[0].server.as_ref(), "s2");
        assert!(j.is_empty());
        // A failed proposal comes back, but never over a newer decision.
        j.stick(&b, ip(1), &server("s3"), 9);
        j.restore_sticks(batches);
        let again = j.take_sticks(10);
        let b_update = &again.iter().find(|x| x.backend == "b").unwrap().updates[0];
        assert_eq!(b_update.server.as_ref(), "s3");
    }

    #[test]
    fn journal_is_bounded_and_counts_what_it_drops() {
        let j = Journal::new(3);
        let b: Arc<str> = Arc::from("b");
        for n in 0..5u8 {
            j.stick(
                &b,
                IpAddr::from([127, 0, 0, n]),
                &server("s1"),
                u64::from(n),
            );
        }
        assert_eq!(j.len(), 3);
        assert_eq!(j.dropped.load(Ordering::Relaxed), 2);
        let kept: Vec<u64> = j.take_sticks(10)[0]
            .updates
            .iter()
            .map(|u| u.last_seen_ms)
            .collect();
        assert_eq!(kept, vec![2, 3, 4], "the oldest decisions were dropped");
    }

    #[test]
    fn a_full_journal_drops_by_decision_time_after_refreshes_and_restores() {
        let j = Journal::new(3);
        let b: Arc<str> = Arc::from("b");
        let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
        j.stick(&b, ip(1), &server("s1"), 10);
        j.stick(&b, ip(2), &server("s1"), 20);
        j.stick(&b, ip(3), &server("s1"), 30);
        // Client 1 refreshed: now the newest, so client 2 is the oldest.
        j.stick(&b, ip(1), &server("s2"), 40);
        j.stick(&b, ip(4), &server("s1"), 50);
        let taken = j.take_sticks(10);
        let mut kept: Vec<(IpAddr, u64)> = taken[0]
            .updates
            .iter()
            .map(|u| (u.key, u.last_seen_ms))
            .collect();
        kept.sort();
        assert_eq!(kept, vec![(ip(1), 40), (ip(3), 30), (ip(4), 50)]);
        assert_eq!(j.dropped.load(Ordering::Relaxed), 1);
        // Put back after a failed proposal, behind a newer decision for client 3: the
        // newer one stays, and the age index follows (the next drop is client 4's 50,
        // then client 1's 40 is gone before client 3's 60).
        j.stick(&b, ip(3), &server("s3"), 60);
        j.restore_sticks(taken);
        assert_eq!(j.len(), 3);
        j.stick(&b, ip(5), &server("s1"), 70);
        let p = j.pending.lock();
        assert_eq!(p.sticks.len(), p.by_age.len(), "index and map agree");
        let left: Vec<u64> = p.by_age.iter().map(|(t, _)| *t).collect();
        assert_eq!(left, vec![50, 60, 70]);
        assert_eq!(p.sticks.get(&(b.clone(), ip(3))).unwrap().1, 60);
    }

    /// Polls `batch_due` for `for_ms` of paused time; true if it returned.
    async fn due_within(j: &Journal, for_ms: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(for_ms), j.batch_due())
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_journal_sleeps_until_a_decision_arrives_then_gathers_a_batch() {
        let j = Journal::new(10_000);
        let b: Arc<str> = Arc::from("b");
        assert!(
            !due_within(&j, 3_600_000).await,
            "nothing pending: no wake-up"
        );
        j.stick(&b, IpAddr::from([127, 0, 0, 1]), &server("s1"), 1);
        let started = tokio::time::Instant::now();
        assert!(due_within(&j, 1_000).await);
        assert_eq!(started.elapsed(), BATCH_INTERVAL, "the batch gathers first");
        // Still pending (a proposal failed): retried after the interval, without a
        // new arrival.
        assert!(due_within(&j, 1_000).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_a_health_report_or_a_flush_goes_out_at_once() {
        let b: Arc<str> = Arc::from("b");
        let full = Journal::new(10_000);
        for n in 0..BATCH_ENTRIES as u32 {
            full.stick(
                &b,
                IpAddr::from(std::net::Ipv4Addr::from(n)),
                &server("s1"),
                1,
            );
        }
        assert!(due_within(&full, 1).await);
        let health = Journal::new(10_000);
        health.health("b", "s1", false, 1);
        assert!(due_within(&health, 1).await);
        let flushed = Journal::new(10_000);
        flushed.stick(&b, IpAddr::from([127, 0, 0, 1]), &server("s1"), 1);
        flushed.flush_now();
        assert!(due_within(&flushed, 1).await);
    }

    #[test]
    fn take_respects_the_batch_size() {
        let j = Journal::new(10_000);
        let b: Arc<str> = Arc::from("b");
        for n in 0..3000u32 {
            j.stick(
                &b,
                IpAddr::from(std::net::Ipv4Addr::from(n)),
                &server("s1"),
                1,
            );
        }
        let first: usize = j
            .take_sticks(BATCH_ENTRIES)
            .iter()
            .map(|b| b.updates.len())
            .sum();
        assert_eq!(first, BATCH_ENTRIES);
        assert_eq!(j.len(), 3000 - BATCH_ENTRIES);
    }
}
