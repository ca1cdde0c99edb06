//! The stick table of one backend: client key → server, shared by every frontend and
//! port that uses the backend (DESIGN principle 1).
//!
//! Pure data: time comes in as `now_ms` (Unix milliseconds, so that entries can later be
//! replicated between nodes) and the caller supplies the server checks and the balancer.
//! The data plane wraps one table in a mutex and makes the whole decision — look up,
//! check, choose, record — under it, *before* connecting: that is what keeps a client's
//! simultaneous first sockets on one server.
//!
//! Lifetimes:
//! - an entry counts its client's open connections and never expires while that count is
//!   above zero; `expire` runs from the last close;
//! - the table holds at most `capacity` entries; inserting beyond it evicts the least
//!   recently used idle entries (or, when every client is connected, the least recently
//!   used ones), and counts the evictions.
//!
//! Memory is the constraint (200,000 entries per backend on every node): one hash map of
//! 16-byte slots, servers as indexes into a short interned list, and no ordered index.
//! Eviction and expiry scan instead: a full table evicts the oldest ~1/128 of its idle
//! entries in one pass (exact LRU order within the batch, amortised O(1) per insert), and
//! [`StickTable::sweep`] is a periodic linear pass. Lookups treat expired entries as
//! absent, so sweeping less often only costs memory, never correctness.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ballast_model::intern::{Interned, Names};

/// Server identity inside a table: the server's name, shared.
pub type ServerName = Arc<str>;

/// One entry as callers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub server: ServerName,
    /// Connections this client has open through this node.
    pub open: u32,
    /// Last connect or close, Unix ms.
    pub last_seen_ms: u64,
}

/// One entry as stored: 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    last_seen_ms: u64,
    open: u32,
    server: u16,
    /// The [`minute`] in which the cluster last heard of this entry from this node (or
    /// from the node whose decision was merged): what lets a close skip its refresh.
    reported: u16,
}

/// Expiries from which a last close is reported at most once a minute per client: the
/// other nodes may then count the expiry from up to a minute earlier, 1/64 of `expire`
/// at most. Shorter expiries report every last close.
pub const QUIET_REFRESH_MIN_EXPIRE_MS: u64 = 64 * 60_000;
/// Beyond this expiry every last close is reported again: a [`minute`] stamp wraps
/// after 45 days, and an entry's last report may be older than its expiry.
pub const QUIET_REFRESH_MAX_EXPIRE_MS: u64 = 30 * 24 * 3_600_000;

/// Unix minute, wrapping: two stamps are equal within the same minute.
fn minute(now_ms: u64) -> u16 {
    (now_ms / 60_000) as u16
}

/// How an existing entry's server may be used for this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stickiness {
    /// Keep sending the client there (up and ready, or up and draining).
    Keep,
    /// Move the client: server down, in maintenance, or gone.
    Move,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The client had a live entry and keeps its server.
    Kept,
    /// No entry (or an expired one): a new decision.
    New,
    /// The entry pointed at a server that can no longer be used.
    Moved { from: ServerName },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub server: ServerName,
    pub outcome: Outcome,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StickCounters {
    pub evictions: u64,
    /// Evictions that had to take an entry whose client was still connected, because
    /// the table was full of connected clients. Non-zero means `size` is too small.
    pub evictions_connected: u64,
    pub expirations: u64,
}

#[derive(Debug)]
pub struct StickTable {
    capacity: usize,
    expire_ms: u64,
    entries: HashMap<IpAddr, Slot>,
    /// Interned server names; slots hold indexes into it.
    servers: Names,
    /// Clients with at least one open connection here, per server index: the load
    /// leastconn balances new clients on in a sticky backend (a client's sockets all go
    /// to one server, so the client is the unit being placed).
    active: Vec<u32>,
    counters: StickCounters,
}

impl StickTable {
    pub fn new(capacity: usize, expire_ms: u64) -> Self {
        StickTable {
            capacity: capacity.max(1),
            expire_ms,
            entries: HashMap::new(),
            servers: Names::default(),
            active: Vec::new(),
            counters: StickCounters::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn counters(&self) -> StickCounters {
        self.counters
    }

    /// Clients connected here that are stuck to `server`.
    pub fn active_clients(&self, server: &str) -> u32 {
        self.servers
            .position(server)
            .map_or(0, |i| self.active[usize::from(i)])
    }

    pub fn get(&self, key: &IpAddr) -> Option<Entry> {
        self.entries.get(key).map(|s| self.entry(s))
    }

    /// Applies new limits; shrinking evicts at once so memory follows the setting.
    pub fn resize(&mut self, capacity: usize, expire_ms: u64) {
        self.capacity = capacity.max(1);
        self.expire_ms = expire_ms;
        if self.entries.len() > self.capacity {
            self.evict(self.entries.len() - self.capacity);
        }
    }

    /// The decision for one new connection of client `key`.
    ///
    /// `check` says whether an existing entry's server may keep the client; `choose`
    /// runs the balancer and is called at most once, only when a new server is needed.
    /// Returns `None` (and changes nothing) when a server is needed and `choose` has
    /// none. On success the entry counts one more open connection: pair every
    /// assignment with one [`StickTable::release`].
    pub fn assign(
        &mut self,
        key: IpAddr,
        now_ms: u64,
        check: impl FnOnce(&ServerName) -> Stickiness,
        choose: impl FnOnce(&StickTable) -> Option<ServerName>,
    ) -> Option<Assignment> {
        if self.is_expired(&key, now_ms) {
            self.entries.remove(&key);
            self.counters.expirations += 1;
        }
        if let Some(slot) = self.entries.get(&key).copied() {
            let current = self.servers.get(slot.server).clone();
            let (server, outcome) = match check(&current) {
                Stickiness::Keep => (current, Outcome::Kept),
                Stickiness::Move => (choose(self)?, Outcome::Moved { from: current }),
            };
            let index = self.intern(&server);
            if slot.open > 0 {
                self.active[usize::from(slot.server)] -= 1;
            }
            self.active[usize::from(index)] += 1;
            let reported = !matches!(outcome, Outcome::Kept);
            if let Some(slot) = self.entries.get_mut(&key) {
                slot.server = index;
                slot.open += 1;
                slot.last_seen_ms = now_ms;
                if reported {
                    slot.reported = minute(now_ms);
                }
            }
            return Some(Assignment { server, outcome });
        }
        let server = choose(self)?;
        self.make_room();
        let index = self.intern(&server);
        self.active[usize::from(index)] += 1;
        self.entries.insert(
            key,
            Slot {
                last_seen_ms: now_ms,
                open: 1,
                server: index,
                reported: minute(now_ms),
            },
        );
        Some(Assignment {
            server,
            outcome: Outcome::New,
        })
    }

    /// A connection to `failed` could not be established: if the client is still
    /// stuck there, move it to what `choose` picks; if another of its sockets already
    /// moved it, follow that decision. Returns the server to try next.
    pub fn reassign(
        &mut self,
        key: IpAddr,
        failed: &ServerName,
        now_ms: u64,
        choose: impl FnOnce(&StickTable) -> Option<ServerName>,
    ) -> Option<ServerName> {
        let slot = *self.entries.get(&key)?;
        let current = self.servers.get(slot.server);
        if current != failed {
            return Some(current.clone());
        }
        let server = choose(self)?;
        let index = self.intern(&server);
        self.move_active(slot, index);
        if let Some(slot) = self.entries.get_mut(&key) {
            slot.server = index;
            slot.reported = minute(now_ms);
        }
        Some(server)
    }

    /// One connection of client `key` closed. Returns the client's server when the
    /// other nodes must hear of it: this was its last open connection (the moment
    /// `expire` starts counting) and, for long expiries, the cluster has not heard of
    /// the client from this node yet this minute ([`QUIET_REFRESH_MIN_EXPIRE_MS`]).
    ///
    /// Without that limit a client that reconnects all the time — a health probe, a
    /// poller — would cost a replicated entry per connection, for an expiry measured
    /// in hours.
    pub fn release(&mut self, key: IpAddr, now_ms: u64) -> Option<ServerName> {
        let quiet =
            (QUIET_REFRESH_MIN_EXPIRE_MS..=QUIET_REFRESH_MAX_EXPIRE_MS).contains(&self.expire_ms);
        // Evicted or forgotten while connected: nothing to account.
        let slot = self.entries.get_mut(&key)?;
        if slot.open == 0 {
            return None;
        }
        slot.open -= 1;
        slot.last_seen_ms = now_ms;
        if slot.open > 0 {
            return None;
        }
        let server = slot.server;
        let this_minute = minute(now_ms);
        let report = !quiet || slot.reported != this_minute;
        if report {
            slot.reported = this_minute;
        }
        self.active[usize::from(server)] -= 1;
        report.then(|| self.servers.get(server).clone())
    }

    /// Takes in a decision another node made (replicated). The newest decision wins; an
    /// older one changes nothing. The local open count is kept: connections this node
    /// holds are still open whatever server new sockets go to.
    ///
    /// Returns this node's entry when it is newer and names another server: the
    /// cluster committed a decision this node has overtaken (two masters during a
    /// partition decided differently). The caller re-proposes it, so the replicated
    /// table converges on the newest decision instead of keeping the stale one until
    /// the client's next close.
    #[must_use]
    pub fn merge(
        &mut self,
        key: IpAddr,
        server: ServerName,
        last_seen_ms: u64,
    ) -> Option<(ServerName, u64)> {
        if let Some(slot) = self.entries.get(&key).copied() {
            if last_seen_ms < slot.last_seen_ms {
                let mine = self.servers.get(slot.server).clone();
                return (mine != server).then_some((mine, slot.last_seen_ms));
            }
            let index = self.intern(&server);
            self.move_active(slot, index);
            if let Some(slot) = self.entries.get_mut(&key) {
                slot.server = index;
                slot.last_seen_ms = last_seen_ms;
                slot.reported = minute(last_seen_ms);
            }
            return None;
        }
        self.make_room();
        let index = self.intern(&server);
        self.entries.insert(
            key,
            Slot {
                last_seen_ms,
                open: 0,
                server: index,
                reported: minute(last_seen_ms),
            },
        );
        None
    }

    /// Clients with open connections here, taken as reported at `now_ms`: the caller
    /// refreshes their replicated entries.
    pub fn report_connected(&mut self, now_ms: u64) -> Vec<(IpAddr, ServerName)> {
        let (servers, this_minute) = (&self.servers, minute(now_ms));
        self.entries
            .iter_mut()
            .filter(|(_, s)| s.open > 0)
            .map(|(k, s)| {
                s.reported = this_minute;
                (*k, servers.get(s.server).clone())
            })
            .collect()
    }

    /// Removes every idle entry whose client closed its last connection at least
    /// `expire` ago. Returns how many went.
    pub fn sweep(&mut self, now_ms: u64) -> usize {
        let before = self.entries.len();
        let expire_ms = self.expire_ms;
        self.entries
            .retain(|_, s| s.open > 0 || now_ms.saturating_sub(s.last_seen_ms) < expire_ms);
        let removed = before - self.entries.len();
        self.counters.expirations += removed as u64;
        removed
    }

    /// Milliseconds until this entry expires; `None` while its client is connected.
    pub fn expires_in_ms(&self, entry: &Entry, now_ms: u64) -> Option<u64> {
        (entry.open == 0).then(|| {
            self.expire_ms
                .saturating_sub(now_ms.saturating_sub(entry.last_seen_ms))
        })
    }

    pub fn forget(&mut self, key: &IpAddr) -> bool {
        match self.entries.remove(key) {
            Some(slot) => {
                self.drop_active(slot);
                true
            }
            None => false,
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.active.iter_mut().for_each(|n| *n = 0);
    }

    /// A connected client's entry changes server.
    fn move_active(&mut self, slot: Slot, to: u16) {
        if slot.open > 0 && slot.server != to {
            self.active[usize::from(slot.server)] -= 1;
            self.active[usize::from(to)] += 1;
        }
    }

    fn drop_active(&mut self, slot: Slot) {
        if slot.open > 0 {
            self.active[usize::from(slot.server)] -= 1;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, Entry)> + '_ {
        self.entries.iter().map(|(k, s)| (*k, self.entry(s)))
    }

    fn entry(&self, slot: &Slot) -> Entry {
        Entry {
            server: self.servers.get(slot.server).clone(),
            open: slot.open,
            last_seen_ms: slot.last_seen_ms,
        }
    }

    fn is_expired(&self, key: &IpAddr, now_ms: u64) -> bool {
        self.entries
            .get(key)
            .is_some_and(|s| s.open == 0 && now_ms.saturating_sub(s.last_seen_ms) >= self.expire_ms)
    }

    fn intern(&mut self, server: &ServerName) -> u16 {
        if self.servers.is_full() {
            self.collect_names();
        }
        let interned = self.servers.intern(server);
        if let Interned::Added(_) = interned {
            self.active.push(0);
        }
        interned.index()
    }

    /// Drops names no entry uses any more (servers removed over a long life).
    fn collect_names(&mut self) {
        let remap = self
            .servers
            .collect(self.entries.values().map(|s| s.server));
        let mut active = vec![0; self.servers.len()];
        for (old, new) in remap.iter().enumerate() {
            if let Some(new) = new {
                active[usize::from(*new)] = self.active[old];
            }
        }
        for slot in self.entries.values_mut() {
            slot.server = Names::remapped(&remap, slot.server);
        }
        self.active = active;
    }

    /// Before an insert: a full table gives up its oldest entries, a batch at a time
    /// so that the scan is paid once per ~1/128 of the table, not once per insert.
    fn make_room(&mut self) {
        if self.entries.len() >= self.capacity {
            let needed = self.entries.len() + 1 - self.capacity;
            self.evict(needed.max(self.capacity / 128));
        }
    }

    /// Evicts `count` entries: the least recently seen idle ones, then (only if there
    /// are not enough) the least recently seen connected ones.
    fn evict(&mut self, count: usize) {
        let mut idle: Vec<(u64, IpAddr)> = Vec::new();
        let mut connected: Vec<(u64, IpAddr)> = Vec::new();
        for (k, s) in &self.entries {
            let pool = if s.open == 0 {
                &mut idle
            } else {
                &mut connected
            };
            pool.push((s.last_seen_ms, *k));
        }
        let from_idle = oldest(&mut idle, count).to_vec();
        let from_connected = oldest(&mut connected, count - from_idle.len()).to_vec();
        for (_, key) in from_idle.iter().chain(&from_connected) {
            if let Some(slot) = self.entries.remove(key) {
                self.drop_active(slot);
            }
        }
        self.counters.evictions += (from_idle.len() + from_connected.len()) as u64;
        self.counters.evictions_connected += from_connected.len() as u64;
    }
}

/// The `n` smallest (oldest) of `pool`, in no particular order.
fn oldest(pool: &mut [(u64, IpAddr)], n: usize) -> &[(u64, IpAddr)] {
    let n = n.min(pool.len());
    if n > 0 && n < pool.len() {
        pool.select_nth_unstable(n - 1);
    }
    &pool[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn name(s: &str) -> ServerName {
        Arc::from(s)
    }

    fn keep(_: &ServerName) -> Stickiness {
        Stickiness::Keep
    }

    fn connect(table: &mut StickTable, key: IpAddr, now: u64, server: &str) -> Assignment {
        table
            .assign(key, now, keep, |_| Some(name(server)))
            .expect("a server")
    }

    #[test]
    fn first_connection_decides_and_later_ones_follow() {
        let mut t = StickTable::new(10, 16 * HOUR);
        let a = connect(&mut t, ip(1), 0, "s1");
        assert_eq!(a.outcome, Outcome::New);
        // The balancer would now say s2; the client stays on s1.
        let b = connect(&mut t, ip(1), 5, "s2");
        assert_eq!((b.server.as_ref(), b.outcome), ("s1", Outcome::Kept));
        assert_eq!(t.get(&ip(1)).unwrap().open, 2);
    }

    #[test]
    fn parallel_first_sockets_get_one_server() {
        // The data plane serialises decisions through the table; whichever socket comes
        // first decides, the others find its entry even though the balancer would
        // answer differently for each.
        let mut t = StickTable::new(10, HOUR);
        let picks: Vec<_> = ["s1", "s2", "s3"]
            .iter()
            .map(|s| connect(&mut t, ip(9), 0, s).server)
            .collect();
        assert!(picks.iter().all(|p| p.as_ref() == "s1"), "{picks:?}");
        assert_eq!(t.get(&ip(9)).unwrap().open, 3);
    }

    #[test]
    fn expiry_counts_from_last_close_never_while_connected() {
        let mut t = StickTable::new(10, HOUR);
        connect(&mut t, ip(1), 0, "s1");
        connect(&mut t, ip(1), 0, "s1");
        // Connected for 20 hours: still there.
        assert_eq!(t.sweep(20 * HOUR), 0);
        t.release(ip(1), 20 * HOUR);
        assert_eq!(t.sweep(30 * HOUR), 0, "one socket is still open");
        t.release(ip(1), 30 * HOUR);
        assert_eq!(
            t.sweep(30 * HOUR + HOUR - 1),
            0,
            "not yet an hour since close"
        );
        assert_eq!(
            t.expires_in_ms(&t.get(&ip(1)).unwrap(), 30 * HOUR + 10),
            Some(HOUR - 10)
        );
        assert_eq!(t.sweep(31 * HOUR), 1);
        assert!(t.get(&ip(1)).is_none());
        assert_eq!(t.counters().expirations, 1);
    }

    #[test]
    fn an_expired_entry_is_a_new_decision_even_before_a_sweep() {
        let mut t = StickTable::new(10, HOUR);
        connect(&mut t, ip(1), 0, "s1");
        t.release(ip(1), 0);
        let again = connect(&mut t, ip(1), HOUR, "s2");
        assert_eq!((again.server.as_ref(), again.outcome), ("s2", Outcome::New));
    }

    #[test]
    fn reconnecting_before_expiry_keeps_the_server() {
        let mut t = StickTable::new(10, HOUR);
        connect(&mut t, ip(1), 0, "s1");
        t.release(ip(1), 10);
        let again = connect(&mut t, ip(1), HOUR - 1, "s2");
        assert_eq!(again.server.as_ref(), "s1");
    }

    #[test]
    fn full_table_evicts_least_recently_used_idle_entry_first() {
        let mut t = StickTable::new(3, HOUR);
        connect(&mut t, ip(1), 0, "s1");
        connect(&mut t, ip(2), 1, "s1");
        connect(&mut t, ip(3), 2, "s1");
        t.release(ip(2), 3);
        t.release(ip(1), 4);
        // ip(2) closed first: it goes, although ip(1) is older.
        connect(&mut t, ip(4), 5, "s2");
        assert!(t.get(&ip(2)).is_none());
        assert!(t.get(&ip(1)).is_some() && t.get(&ip(3)).is_some());
        assert_eq!(t.counters().evictions, 1);
        assert_eq!(t.counters().evictions_connected, 0);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn full_table_of_connected_clients_evicts_the_least_recently_touched() {
        let mut t = StickTable::new(2, HOUR);
        connect(&mut t, ip(1), 0, "s1");
        connect(&mut t, ip(2), 1, "s1");
        connect(&mut t, ip(1), 2, "s1"); // touches ip(1)
        connect(&mut t, ip(3), 3, "s2");
        assert!(t.get(&ip(2)).is_none());
        assert_eq!(t.counters().evictions_connected, 1);
        // The evicted client's close is harmless.
        t.release(ip(2), 4);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn unusable_server_moves_the_client_and_later_sockets_follow() {
        let mut t = StickTable::new(10, HOUR);
        connect(&mut t, ip(1), 0, "s1");
        let moved = t
            .assign(ip(1), 1, |_| Stickiness::Move, |_| Some(name("s2")))
            .unwrap();
        assert_eq!(moved.outcome, Outcome::Moved { from: name("s1") });
        let next = connect(&mut t, ip(1), 2, "s3");
        assert_eq!(next.server.as_ref(), "s2");
    }

    #[test]
    fn no_server_available_changes_nothing() {
        let mut t = StickTable::new(10, HOUR);
        assert!(t.assign(ip(1), 0, keep, |_| None).is_none());
        assert!(t.is_empty());
        connect(&mut t, ip(2), 0, "s1");
        assert!(t.assign(ip(2), 1, |_| Stickiness::Move, |_| None).is_none());
        assert_eq!(t.get(&ip(2)).unwrap().server.as_ref(), "s1");
        assert_eq!(t.get(&ip(2)).unwrap().open, 1);
    }

    #[test]
    fn reassign_after_connect_failure_moves_once_for_all_sockets() {
        let mut t = StickTable::new(10, HOUR);
        for _ in 0..3 {
            connect(&mut t, ip(1), 0, "s1");
        }
        let s1 = name("s1");
        // All three sockets fail on s1; only the first one chooses.
        let first = t.reassign(ip(1), &s1, 0, |_| Some(name("s2"))).unwrap();
        let second = t.reassign(ip(1), &s1, 0, |_| Some(name("s3"))).unwrap();
        let third = t.reassign(ip(1), &s1, 0, |_| Some(name("s3"))).unwrap();
        assert_eq!(
            [first, second, third].map(|s| s.to_string()),
            ["s2", "s2", "s2"]
        );
        assert_eq!(t.get(&ip(1)).unwrap().open, 3);
    }

    #[test]
    fn release_reports_the_last_close_only() {
        let mut t = StickTable::new(10, HOUR);
        connect(&mut t, ip(1), 0, "s1");
        connect(&mut t, ip(1), 0, "s1");
        assert_eq!(t.release(ip(1), 5), None);
        assert_eq!(t.release(ip(1), 6).as_deref(), Some("s1"));
        assert_eq!(t.release(ip(2), 6), None);
    }

    #[test]
    fn long_expiries_report_a_last_close_once_a_minute_per_client() {
        const MINUTE: u64 = 60_000;
        let mut t = StickTable::new(10, 16 * HOUR);
        // A client reconnecting all the time: its decision is news, then one last
        // close per minute is.
        let t0 = 1_000 * MINUTE;
        connect(&mut t, ip(1), t0, "s1");
        assert_eq!(t.release(ip(1), t0 + 10), None, "decided this minute");
        connect(&mut t, ip(1), t0 + 20, "s1");
        assert_eq!(t.release(ip(1), t0 + 30), None);
        connect(&mut t, ip(1), t0 + MINUTE, "s1");
        assert_eq!(t.release(ip(1), t0 + MINUTE).as_deref(), Some("s1"));
        connect(&mut t, ip(1), t0 + MINUTE + 5, "s1");
        assert_eq!(t.release(ip(1), t0 + MINUTE + 9), None);
        // The local expiry still counts from the real last close.
        assert_eq!(t.get(&ip(1)).unwrap().last_seen_ms, t0 + MINUTE + 9);

        // A move is news again: the next close in the same minute stays quiet.
        let s1 = name("s1");
        connect(&mut t, ip(1), t0 + 2 * MINUTE, "s1");
        t.reassign(ip(1), &s1, t0 + 2 * MINUTE, |_| Some(name("s2")));
        assert_eq!(t.release(ip(1), t0 + 2 * MINUTE + 1), None);
        // Refreshing connected clients counts as hearing of them.
        connect(&mut t, ip(1), t0 + 3 * MINUTE, "s2");
        assert_eq!(
            t.report_connected(t0 + 4 * MINUTE),
            vec![(ip(1), name("s2"))]
        );
        assert_eq!(t.release(ip(1), t0 + 4 * MINUTE + 1), None);
        // A peer's decision, merged: the cluster has it.
        let _ = t.merge(ip(2), name("s3"), t0 + 5 * MINUTE);
        connect(&mut t, ip(2), t0 + 5 * MINUTE + 1, "s1");
        assert_eq!(t.release(ip(2), t0 + 5 * MINUTE + 2), None);

        // Short or very long expiries report every last close.
        for expire in [
            QUIET_REFRESH_MIN_EXPIRE_MS - 1,
            QUIET_REFRESH_MAX_EXPIRE_MS + 1,
        ] {
            let mut t = StickTable::new(10, expire);
            connect(&mut t, ip(1), t0, "s1");
            assert_eq!(t.release(ip(1), t0 + 1).as_deref(), Some("s1"));
            connect(&mut t, ip(1), t0 + 2, "s1");
            assert_eq!(t.release(ip(1), t0 + 3).as_deref(), Some("s1"));
        }
        // Still 16 bytes an entry (the stamp lives in what was padding).
        assert_eq!(std::mem::size_of::<Slot>(), 16);
    }

    #[test]
    fn merge_takes_newer_decisions_and_keeps_local_connections() {
        let mut t = StickTable::new(10, HOUR);
        connect(&mut t, ip(1), 100, "s1");
        // Older: ignored, and this node's newer decision comes back to re-propose.
        assert_eq!(t.merge(ip(1), name("s2"), 50), Some((name("s1"), 100)));
        assert_eq!(t.get(&ip(1)).unwrap().server.as_ref(), "s1");
        // Older but the same server: nothing to re-propose.
        assert_eq!(t.merge(ip(1), name("s1"), 60), None);
        assert_eq!(t.merge(ip(1), name("s2"), 200), None);
        let e = t.get(&ip(1)).unwrap();
        assert_eq!((e.server.as_ref(), e.open), ("s2", 1));
        assert_eq!(
            t.report_connected(300)
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>(),
            vec![ip(1)]
        );
        // A peer's client is idle here and expires like any other.
        let _ = t.merge(ip(2), name("s1"), 0);
        assert_eq!(t.sweep(HOUR), 1);
        assert!(t.get(&ip(2)).is_none());
    }

    #[test]
    fn a_full_large_table_evicts_a_batch_of_the_oldest_idle_entries() {
        let mut t = StickTable::new(1_280, HOUR);
        for i in 0..1_280u32 {
            let key = IpAddr::from(std::net::Ipv4Addr::from(i));
            t.assign(key, u64::from(i), keep, |_| Some(name("s1")));
            if i >= 100 {
                t.release(key, u64::from(i)); // 0..100 stay connected
            }
        }
        t.assign(ip(250), 5_000, keep, |_| Some(name("s2")));
        // One pass evicted 1/128 of the table: the 10 oldest idle entries (100..110).
        assert_eq!(t.counters().evictions, 10);
        assert_eq!(t.len(), 1_280 - 10 + 1);
        for i in 0..100u32 {
            assert!(
                t.get(&IpAddr::from(std::net::Ipv4Addr::from(i))).is_some(),
                "connected {i} kept"
            );
        }
        for i in 100..110u32 {
            assert!(
                t.get(&IpAddr::from(std::net::Ipv4Addr::from(i))).is_none(),
                "oldest idle {i} evicted"
            );
        }
    }

    #[test]
    fn active_clients_follow_every_transition() {
        let mut t = StickTable::new(10, HOUR);
        let s1 = name("s1");
        connect(&mut t, ip(1), 0, "s1");
        connect(&mut t, ip(1), 0, "s1"); // same client: still one client
        connect(&mut t, ip(2), 0, "s1");
        assert_eq!(t.active_clients("s1"), 2);
        t.reassign(ip(2), &s1, 0, |_| Some(name("s2")));
        assert_eq!((t.active_clients("s1"), t.active_clients("s2")), (1, 1));
        let _ = t.merge(ip(1), name("s3"), 10);
        assert_eq!((t.active_clients("s1"), t.active_clients("s3")), (0, 1));
        t.release(ip(1), 11);
        assert_eq!(t.active_clients("s3"), 1, "one of two sockets closed");
        t.release(ip(1), 12);
        assert_eq!(t.active_clients("s3"), 0);
        t.release(ip(1), 13); // an extra release never underflows
        let _ = t.merge(ip(9), name("s1"), 5); // a peer's idle client is not active here
        assert_eq!(t.active_clients("s1"), 0);
        connect(&mut t, ip(9), 20, "s2"); // idle entry becomes active on its server
        assert_eq!(t.active_clients("s1"), 1);
        t.forget(&ip(2));
        assert_eq!(t.active_clients("s2"), 0);
        t.clear();
        assert_eq!(t.active_clients("s1"), 0);
    }

    #[test]
    fn shrinking_evicts_immediately() {
        let mut t = StickTable::new(5, HOUR);
        for i in 0..5 {
            connect(&mut t, ip(i), u64::from(i), "s1");
            t.release(ip(i), u64::from(i));
        }
        t.resize(2, HOUR);
        assert_eq!(t.len(), 2);
        assert!(t.get(&ip(3)).is_some() && t.get(&ip(4)).is_some());
    }

    #[test]
    fn bounded_through_many_operations() {
        let mut t = StickTable::new(50, 100);
        let mut now = 0;
        for round in 0..2_000u32 {
            now += 7;
            let key = ip((round * 31 % 97) as u8);
            if round % 3 == 0 {
                t.release(key, now);
            } else {
                t.assign(key, now, keep, |_| Some(name("s")));
            }
            if round % 50 == 0 {
                t.sweep(now);
            }
            assert!(t.len() <= 50);
            let open: u32 = t.iter().map(|(_, e)| e.open).sum();
            assert!(open <= round, "open counts stay bounded by assignments");
        }
    }
}
