//! Ballast's replicated cluster model.
//!
//! - [`model`]: frontends, backends, servers and their validation (shared with the API);
//! - [`state`]: the replicated state and the commands that change it, a pure function;
//! - [`drill`]: failover records (planned drills, unplanned takeovers) and their reports;
//! - [`types`], [`store`], [`network`], [`replica`]: openraft around it — a redb-backed
//!   log and snapshot store, a TCP transport with bincode frames and token
//!   authentication, and the handle a node uses to propose and observe.
//!
//! It knows nothing of the proxy or of VRRP (DESIGN: dependency direction); the node
//! mirrors committed changes into its data plane through [`store::Observer`].

pub mod drill;
pub mod model;
pub mod network;
pub mod replica;
pub mod state;
pub mod store;
pub mod types;
