//! Ballast's data plane: listeners, the connection path, stick tables, balancers, health
//! checks and their metrics.
//!
//! ```text
//!  listeners (one socket per plane thread) ──accept──▶ connection (plane thread)
//!        │                                           │ stick decision (per-backend table,
//!        │                                           │   decided before connecting)
//!        ▼                                           ▼ maxconn slot (FIFO queue) → connect
//!  View (ArcSwap, read-only snapshot) ◀── health checkers flip server state
//!        ▲                                           │ copy both ways, half-close, RST
//!        └── built from a ClusterModel               ▼ close: release stick entry, metrics
//! ```
//!
//! It depends on `ballast-model` for the model's plain types and on nothing of Raft,
//! storage or HTTP: the node's mirror (`ballast_node::cluster`) feeds it committed
//! changes, and it hands its own decisions out through [`proxy::ReplicationSink`]. That
//! is DESIGN principle 2 ("the data plane never waits on Raft") as a build fact.

pub mod balance;
pub mod health;
pub mod metrics;
pub mod proxy;
pub mod stick;
