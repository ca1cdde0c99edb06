//! The `ballast` node: config loading and the wiring of the data plane
//! (`ballast-dataplane`), the API, Raft (`cluster`), VRRP (`vip`) and failover (`ha`),
//! plus the `ctl` and `demo` commands.

pub mod cluster;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod ha;
pub mod run;
pub mod service;
pub mod upgrade;
pub mod vip;
pub mod wait;
