//! Ballast's replicated cluster model.
//!
//! - [`model`], [`state`], [`drill`]: the cluster model, re-exported from
//!   `ballast-model` (pure data; the replicated state and its commands);
//! - [`types`], [`store`], [`network`], [`replica`]: openraft around it — a redb-backed
//!   log and snapshot store, a TCP transport with bincode frames and token
//!   authentication, and the handle a node uses to propose and observe.
//!
//! It knows nothing of the proxy or of VRRP (DESIGN: dependency direction); the node
//! mirrors committed changes into its data plane through [`store::Observer`].

pub mod network;
pub mod replica;
pub mod store;
pub mod types;

// The model lives in its own crate so the data plane can depend on it without openraft;
// these paths stay for the crates that reach it through Raft.
pub use ballast_model::{drill, ha, model, state, NodeId, IMPORTED};
