//! What an instance shows: its status (a watch) and counters (atomics read at scrape).

use super::config::*;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::packet::DecodeError;
use crate::state::{TransitionReason, VrrpState};

/// The last transition, for status and notify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastTransition {
    /// Previous state.
    pub from: VrrpState,
    /// New state.
    pub to: VrrpState,
    /// Why.
    pub reason: TransitionReason,
    /// Wall-clock time of the transition.
    pub at: SystemTime,
}

/// A snapshot of one instance, published on a `watch` channel on every
/// change of state, priority or master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpStatus {
    /// Interface.
    pub interface: String,
    /// VRID.
    pub vrid: u8,
    /// Current state.
    pub state: VrrpState,
    /// Configured priority.
    pub configured_priority: u8,
    /// Effective priority after tracked conditions.
    pub effective_priority: u8,
    /// Current master's address, if known (ours when master).
    pub master_addr: Option<IpAddr>,
    /// Our primary address (source of our adverts).
    pub primary_addr: IpAddr,
    /// The virtual addresses.
    pub virtual_ips: Vec<VirtualIp>,
    /// Our advertisement interval.
    pub advert_interval: Duration,
    /// Master_Adver_Interval learnt from the master, centiseconds.
    pub master_adver_interval_cs: u16,
    /// Accept mode flag.
    pub accept_mode: bool,
    /// Number of transitions since spawn.
    pub transitions: u64,
    /// The last transition.
    pub last_transition: Option<LastTransition>,
    /// When the last gratuitous ARP burst for the VIPs went out.
    pub last_garp: Option<SystemTime>,
}

/// Counters of one instance (monotonic since spawn).
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) adverts_sent: AtomicU64,
    pub(super) adverts_received: AtomicU64,
    pub(super) send_errors: AtomicU64,
    pub(super) garp_sent: AtomicU64,
    pub(super) vip_errors: AtomicU64,
    pub(super) drops: [AtomicU64; DecodeError::ALL.len()],
}

/// A snapshot of the counters, for `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpMetrics {
    /// Advertisements sent (each unicast copy counts).
    pub adverts_sent: u64,
    /// Valid advertisements for our VRID received.
    pub adverts_received: u64,
    /// Failed advertisement sends.
    pub send_errors: u64,
    /// Gratuitous ARP frames sent.
    pub garp_sent: u64,
    /// Failed VIP add/remove operations.
    pub vip_errors: u64,
    /// Dropped packets per reason (every reason listed, zeros included).
    pub drops: Vec<(DecodeError, u64)>,
}

impl VrrpMetrics {
    /// Drops for one reason.
    pub fn dropped(&self, reason: DecodeError) -> u64 {
        self.drops
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }
}

impl Counters {
    pub(super) fn snapshot(&self) -> VrrpMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        VrrpMetrics {
            adverts_sent: get(&self.adverts_sent),
            adverts_received: get(&self.adverts_received),
            send_errors: get(&self.send_errors),
            garp_sent: get(&self.garp_sent),
            vip_errors: get(&self.vip_errors),
            drops: DecodeError::ALL
                .iter()
                .map(|r| (*r, get(&self.drops[r.index()])))
                .collect(),
        }
    }
}

pub(super) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
