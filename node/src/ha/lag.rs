//! How far behind the Raft leader this node is, asked once a second, and the hysteresis
//! that lowers an lb node's VRRP priority while it may lack current entries.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::Ha;

/// A drill target must be at most this many log entries behind the leader. An entry
/// is a batch of up to 1,024 stick decisions from one node's 50 ms journal flush.
pub const CAUGHT_UP_ENTRIES: u64 = 32;
/// Further behind than this (or without a reachable leader) for [`FAR_BEHIND_CHECKS`]
/// checks in a row, an lb node lowers its VRRP priority: it may lack current entries.
pub const FAR_BEHIND_ENTRIES: u64 = 1_000;
const FAR_BEHIND_CHECKS: u32 = 3;
const LEADERLESS_CHECKS: u32 = 10;
const LAG_EVERY: Duration = Duration::from_secs(1);

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
    pub(super) async fn lag_loop(self: Arc<Self>) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
