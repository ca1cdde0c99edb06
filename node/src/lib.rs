//! The `ballast` node: config loading, the TCP proxy data plane, health checks, metrics,
//! and the wiring of the API, Raft (`cluster`), VRRP (`vip`) and failover (`ha`).
//!
//! ```text
//!  listeners (one task per bound port) ──accept──▶ connection task
//!        │                                           │ stick decision (per-backend table,
//!        │                                           │   decided before connecting)
//!        ▼                                           ▼ maxconn slot (FIFO queue) → connect
//!  View (ArcSwap, read-only snapshot) ◀── health checkers flip server state
//!        ▲                                           │ copy both ways, half-close, RST
//!        └── built from the ClusterModel             ▼ close: release stick entry, metrics
//! ```

pub mod balance;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod ha;
pub mod health;
pub mod metrics;
pub mod proxy;
pub mod run;
pub mod stick;
pub mod vip;
