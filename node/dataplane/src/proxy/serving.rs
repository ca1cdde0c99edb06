//! What every accepted connection reads from the data plane: the current [`View`] and
//! the node's VIPs. The accept loops and connections hold an `Arc<Serving>`, never the
//! [`DataPlane`](super::DataPlane) that opens listeners and applies models, so the
//! connection path cannot reach the plane's management (and `conn` does not import
//! `plane`, which spawns it).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::handover::Parked;
use super::{now_ms, View};

/// A bound port. The frontend it serves can change without closing the socket.
pub(super) struct ListenerSlot {
    pub(super) frontend: ArcSwap<String>,
}

pub(super) struct Serving {
    view: ArcSwap<View>,
    /// The node's VIPs, and a generation bumped each time it lets them go: connections
    /// accepted on a VIP end then (see [`Serving::release_vip_connections`]).
    /// Read by every accepted connection: swapped whole, never locked.
    vips: ArcSwap<Vec<IpAddr>>,
    /// Wall-clock ms of the first connection accepted since [`Serving::arm_first_accept`];
    /// 0 while armed and waiting, `u64::MAX` when not armed.
    first_accept_ms: AtomicU64,
    /// What interrupts every connection: the plane freezing for a hand-over (each
    /// parks itself at its next await, [`Serving::park`]) and the node letting its VIPs
    /// go (those on a VIP end). One watch for both: a connection waits on one future,
    /// which keeps every idle connection's task a watch smaller.
    control: watch::Sender<Control>,
    /// Connection tasks alive, from accept (or adoption) to their end or parking: the
    /// freeze is complete when it is 0.
    live: AtomicUsize,
    parked: Mutex<Vec<Parked>>,
    /// Adopted connections not yet relaying again, and when the last one did (Unix ms,
    /// 0 before): the true end of a hand-over's pause.
    resuming: AtomicUsize,
    resumed_all_ms: AtomicU64,
    resumed_all: tokio::sync::Notify,
}

/// One connection task counted in [`Serving::live`] until it drops.
pub(super) struct Live(Arc<Serving>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Release);
    }
}

impl Serving {
    pub(super) fn new() -> Self {
        Serving {
            view: ArcSwap::from_pointee(View::empty()),
            vips: ArcSwap::from_pointee(Vec::new()),

            first_accept_ms: AtomicU64::new(u64::MAX),
            control: watch::channel(Control::default()).0,
            live: AtomicUsize::new(0),
            parked: Mutex::new(Vec::new()),
            resuming: AtomicUsize::new(0),
            resumed_all_ms: AtomicU64::new(0),
            resumed_all: tokio::sync::Notify::new(),
        }
    }

    /// `n` more adopted connections will resume.
    pub(super) fn expect_resumed(&self, n: usize) {
        self.resumed_all_ms.store(0, Ordering::Relaxed);
        self.resuming.fetch_add(n, Ordering::AcqRel);
    }

    /// One adopted connection relays again (or will not: it is gone).
    pub(super) fn note_resumed(&self) {
        if self.resuming.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.resumed_all_ms.store(now_ms(), Ordering::Release);
            self.resumed_all.notify_waiters();
        }
    }

    /// Unix ms when the last adopted connection relayed again, waiting at most
    /// `timeout`; `None` if some have not by then.
    pub(super) async fn wait_resumed(&self, timeout: std::time::Duration) -> Option<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.resumed_all.notified();
            if self.resuming.load(Ordering::Acquire) == 0 {
                return Some(self.resumed_all_ms.load(Ordering::Acquire)).filter(|ms| *ms > 0);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Counts a connection task until the guard drops.
    pub(super) fn track(self: &Arc<Self>) -> Live {
        self.live.fetch_add(1, Ordering::Relaxed);
        Live(self.clone())
    }

    pub(super) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// The plane's control: frozen, VIP releases.
    pub(super) fn control(&self) -> watch::Receiver<Control> {
        self.control.subscribe()
    }

    pub(super) fn set_frozen(&self, frozen: bool) {
        self.control.send_modify(|c| c.frozen = frozen);
    }

    /// A server was shut down (its flag is set): its connections look at it.
    pub(super) fn note_server_removed(&self) {
        self.control.send_modify(|c| c.removals += 1);
    }

    /// A connection's state and sockets, left for the hand-over.
    pub(super) fn park(&self, parked: Parked) {
        self.parked.lock().push(parked);
    }

    pub(super) fn take_parked(&self) -> Vec<Parked> {
        std::mem::take(&mut *self.parked.lock())
    }

    pub(super) fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    pub(super) fn store_view(&self, view: Arc<View>) {
        self.view.store(view);
    }

    pub(super) fn set_vips(&self, vips: Vec<IpAddr>) {
        self.vips.store(Arc::new(vips));
    }

    pub(super) fn release_vip_connections(&self) {
        self.control.send_modify(|c| c.vip_releases += 1);
    }

    /// For a connection accepted on `local`: the VIP releases so far (a later one ends
    /// it), `None` when `local` is not a VIP.
    pub(super) fn vip_mark(&self, local: IpAddr) -> Option<u64> {
        self.vips
            .load()
            .contains(&local)
            .then(|| self.control.borrow().vip_releases)
    }

    pub(super) fn has_vips(&self) -> bool {
        !self.vips.load().is_empty()
    }

    pub(super) fn arm_first_accept(&self) {
        self.first_accept_ms.store(0, Ordering::Relaxed);
    }

    pub(super) fn first_accept_ms(&self) -> Option<u64> {
        match self.first_accept_ms.load(Ordering::Relaxed) {
            0 | u64::MAX => None,
            at => Some(at),
        }
    }

    /// On every accept: one relaxed load unless armed.
    pub(super) fn note_accept(&self) {
        if self.first_accept_ms.load(Ordering::Relaxed) == 0 {
            let _ = self.first_accept_ms.compare_exchange(
                0,
                now_ms(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}

/// What every connection watches (see [`Serving::control`]).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Control {
    pub(super) frozen: bool,
    /// How many times the node let its VIPs go.
    pub(super) vip_releases: u64,
    /// How many servers were shut down (each connection then checks its own).
    pub(super) removals: u64,
}

/// Why a connection was interrupted.
pub(super) enum Interrupt {
    Frozen,
    VipReleased,
    ServerRemoved,
}

/// Resolves once the plane is frozen, the node lets its VIPs go after `vip` (the
/// releases counted when the connection came in on a VIP; `None`: not on one), or
/// `removed` says the connection's server was shut down. Never if the sender is gone.
pub(super) async fn interrupted(
    control: &mut watch::Receiver<Control>,
    vip: Option<u64>,
    removed: impl Fn() -> bool,
) -> Interrupt {
    let why = |c: &Control| {
        if c.frozen {
            Some(Interrupt::Frozen)
        } else if vip.is_some_and(|mark| c.vip_releases != mark) {
            Some(Interrupt::VipReleased)
        } else if removed() {
            Some(Interrupt::ServerRemoved)
        } else {
            None
        }
    };
    let result = control
        .wait_for(|c| why(c).is_some())
        .await
        .map(|c| why(&c));
    match result {
        Ok(Some(why)) => why,
        _ => std::future::pending().await,
    }
}

/// Resolves once the plane is frozen; never if the sender is gone.
pub(super) async fn frozen(control: &mut watch::Receiver<Control>) {
    interrupted(control, None, || false).await;
}
