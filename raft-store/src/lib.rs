//! Ballast's replicated cluster model.
//!
//! Today this crate holds the model types and their validation ([`model`]); the openraft
//! type config, durable log store, state machine and Raft network join it with the
//! replication work. It knows nothing of the proxy or of VRRP (DESIGN: dependency
//! direction), so the API crate can share these types without pulling in the data plane.

pub mod model;
