//! The handles a running instance gives out: to stop it, to make it resign, to watch it.

use super::config::*;
use super::status::*;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// A running instance. Dropping it stops the instance gracefully in the
/// background; prefer [`VrrpHandle::shutdown`] to wait for it.
pub struct VrrpHandle {
    pub(super) status: watch::Receiver<VrrpStatus>,
    pub(super) counters: Arc<Counters>,
    pub(super) control: mpsc::UnboundedSender<Control>,
    pub(super) stop: Option<oneshot::Sender<()>>,
    pub(super) task: Option<JoinHandle<()>>,
}

impl VrrpHandle {
    /// The current status.
    pub fn status(&self) -> VrrpStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn subscribe(&self) -> watch::Receiver<VrrpStatus> {
        self.status.clone()
    }

    /// The counters.
    pub fn metrics(&self) -> VrrpMetrics {
        self.counters.snapshot()
    }

    /// A cheap, clonable read-only view for the API and metrics tasks,
    /// while the owner of the handle keeps the right to stop it.
    pub fn observer(&self) -> VrrpObserver {
        VrrpObserver {
            status: self.status.clone(),
            counters: self.counters.clone(),
        }
    }

    /// Planned handover: a master sends priority 0, removes its VIPs and
    /// waits as backup (see [`crate::state::Event::Resign`]). Lower the
    /// priority first (the penalty channel) so the new master keeps the role.
    /// Does nothing unless master.
    pub fn resign(&self) {
        let _ = self.control.send(Control::Resign);
    }

    /// A clonable handle that can only ask for [`VrrpHandle::resign`].
    pub fn resigner(&self) -> Resigner {
        Resigner(self.control.clone())
    }

    /// Graceful stop: a master sends priority 0 (backups take over after
    /// Skew_Time) and removes its VIPs. Returns when done.
    pub async fn shutdown(mut self) -> Result<(), DriverError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.task.take() {
            Some(t) => t.await.map_err(|e| DriverError::Task(e.to_string())),
            None => Ok(()),
        }
    }
}

/// Requests for a planned handover, sent to the instance task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Control {
    Resign,
    ExpectHandover,
}

/// See [`VrrpHandle::resigner`].
#[derive(Clone)]
pub struct Resigner(mpsc::UnboundedSender<Control>);

impl Resigner {
    /// See [`VrrpHandle::resign`].
    pub fn resign(&self) {
        let _ = self.0.send(Control::Resign);
    }

    /// On the drill's target: take over the moment the master resigns (see
    /// [`crate::state::Event::ExpectHandover`]).
    pub fn expect_handover(&self) {
        let _ = self.0.send(Control::ExpectHandover);
    }
}

/// Read-only view of a running instance (see [`VrrpHandle::observer`]).
#[derive(Clone)]
pub struct VrrpObserver {
    pub(super) status: watch::Receiver<VrrpStatus>,
    pub(super) counters: Arc<Counters>,
}

impl VrrpObserver {
    /// The current status.
    pub fn status(&self) -> VrrpStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn subscribe(&self) -> watch::Receiver<VrrpStatus> {
        self.status.clone()
    }

    /// The counters.
    pub fn metrics(&self) -> VrrpMetrics {
        self.counters.snapshot()
    }
}
