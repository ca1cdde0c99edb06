//! The thin Linux driver: one tokio task per virtual router that owns the
//! raw socket, the timers, the VIPs and the notify command, and executes
//! the [`Action`]s of the pure [`Router`].
//!
//! ```text
//!            priority penalty (watch<u8>)      stop (oneshot: graceful | abandon)
//!                       │                            │
//!   rx thread ─mpsc─▶  instance task: select! { packet | timer | penalty | shutdown | GARP repeat }
//!                       │        │ Router::handle(now, Event) -> Vec<Action>
//!                       ▼        ▼
//!        raw socket send   rtnetlink (VIPs)   pnet datalink (GARP)   notify command
//!                       │
//!                       └──▶ watch<VrrpStatus> + atomic counters (read by /v1/status, /metrics)
//! ```
//!
//! Time: the task takes `tokio::time::Instant::now()` at spawn as its epoch
//! and feeds the router `now - epoch`. Nothing in here decides protocol
//! behaviour; that is all in `crate::state`.
//!
//! Live upgrade: [`VrrpHandle::abandon`] stops the task without the Shutdown
//! event (nothing sent, VIPs left), and [`InstanceConfig::resume`] =
//! [`Resume::Master`] starts the successor with `Event::ResumeMaster` instead
//! of `Event::Startup`: its first act is an advert, so to the backups the
//! same master (same address, same priority) just advertised a little late.
//!
//! Transports ([`Transport`]): `Raw` (above; production) or `Udp` (`udp.rs`):
//! the same IPv4+VRRP packets carried in UDP datagrams between known peers,
//! for demos and labs without CAP_NET_RAW. With `Udp` only the packet source
//! and the send differ; VIP add/remove and GARP are skipped (no address can
//! move without root), everything else is the same task.

mod config;
mod fd;
mod garp;
mod handle;
mod instance;
mod netlink;
mod notify;
mod raw;
mod status;
mod udp;

pub use raw::send_raw_ipv4;

pub use config::{
    DriverError, GarpConfig, InstanceConfig, NotifyCommand, Resume, Transport, VirtualIp,
};
pub use handle::{Abandoned, Resigner, VrrpHandle, VrrpObserver};
pub use instance::VrrpInstance;
pub use status::{LastTransition, VrrpMetrics, VrrpStatus};
