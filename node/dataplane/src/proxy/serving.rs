//! What every accepted connection reads from the data plane: the current [`View`] and
//! the node's VIPs. The accept loops and connections hold an `Arc<Serving>`, never the
//! [`DataPlane`](super::DataPlane) that opens listeners and applies models, so the
//! connection path cannot reach the plane's management (and `conn` does not import
//! `plane`, which spawns it).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

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
    vips_released: watch::Sender<u64>,
    /// Wall-clock ms of the first connection accepted since [`Serving::arm_first_accept`];
    /// 0 while armed and waiting, `u64::MAX` when not armed.
    first_accept_ms: AtomicU64,
}

impl Serving {
    pub(super) fn new() -> Self {
        Serving {
            view: ArcSwap::from_pointee(View::empty()),
            vips: ArcSwap::from_pointee(Vec::new()),
            vips_released: watch::channel(0).0,
            first_accept_ms: AtomicU64::new(u64::MAX),
        }
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
        self.vips_released.send_modify(|g| *g += 1);
    }

    /// For a connection accepted on `local`: resolves when this node lets its VIPs go,
    /// `None` when `local` is not a VIP.
    pub(super) fn vip_watch(&self, local: IpAddr) -> Option<watch::Receiver<u64>> {
        self.vips
            .load()
            .contains(&local)
            .then(|| self.vips_released.subscribe())
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
