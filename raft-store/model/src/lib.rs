//! Ballast's cluster model: the plain data that Raft replicates and the data plane serves.
//!
//! - [`model`]: frontends, backends, servers and their validation (shared with the API
//!   and the config loader);
//! - [`state`]: the replicated state and the commands that change it, a pure function;
//! - [`drill`]: failover records (planned drills, unplanned takeovers) and their reports;
//! - [`ha`]: a node's VRRP state and failing conditions, as it reports them;
//! - [`time`]: the one wall clock (Unix milliseconds) every other crate reads;
//! - [`intern`]: server names stored once per table, as `u16` indexes.
//!
//! Nothing here does I/O or knows openraft: `ballast-raft-store` wraps [`state`] in
//! openraft's traits, and `ballast-dataplane` depends on this crate alone, so the data
//! plane can read the model without being able to wait on consensus (DESIGN principle 2).

pub mod drill;
pub mod ha;
pub mod intern;
pub mod model;
pub mod state;
pub mod time;

/// A cluster member's stable Raft id (`[node] id` in the config).
pub type NodeId = u64;

/// The origin of stick entries no node's data plane holds yet (an API import). Member
/// ids start at 1, so every node's mirror takes these in, the importing node's too: a
/// node skips only the entries its own journal proposed.
pub const IMPORTED: NodeId = 0;
