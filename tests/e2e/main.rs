//! End-to-end tests for the `ballast` binary (issue 2: config, data plane, stickiness).
//!
//! Every test starts the real binary (`ballast run` / `ballast check`) as a child process,
//! with real TCP echo servers running in this process and real clients connecting from
//! their own 127.x.y.z source addresses. Everything binds on loopback; every loop is
//! bounded in count and time; every process the harness starts is killed on drop.
//!
//! ```text
//!   clients (127.A.B.C) ──► ballast (child process) ──► Backend threads (this process)
//!            ▲                    │ GET /readyz, /metrics
//!            └──── test asserts ◄─┘
//! ```
//!
//! Modules:
//! - `harness`: `Backend`, `Node`, client helpers, metrics parsing.
//! - `stickiness`: 300 clients × 3 sockets, simultaneous first sockets, reconnects.
//! - `queue`: per-server `maxconn`, FIFO queue and `timeout_queue`.
//! - `health`: a killed backend is marked down and its clients move together.
//! - `streams`: half-close both ways, resets both ways, large and parallel streams intact.
//! - `retry`: refused and unanswered connects are retried elsewhere, the client re-stuck.
//! - `stick_table`: size bound and evictions, expiry after the last close, admin states,
//!   one table shared by the frontends of a backend.
//! - `timeouts`: idle timeouts (`timeout_client` with `timeout_server`).
//! - `balance`: `roundrobin` and `leastconn` (weighted), `source` (consistent hash).
//! - `api`: /healthz, /readyz, /metrics; several binds and an IP_FREEBIND address.
//! - `config_errors`: `ballast check` on good and bad configs.
//! - `cluster`: issue 3, several nodes replicating through Raft.
//! - `demo`: `ballast demo` as a user runs it: the loopback cluster's self-check, a clean
//!   stop on SIGINT, and (root) the namespace lab leaving nothing behind.
//! - `ha`: issue 6, the HA pair (2 lb + witness, VIP) under the mission load in namespaces.
//! - `upgrade`: issue 19, live binary upgrade (SIGUSR2, `ballast ctl upgrade`): 300 clients
//!   × 3 sockets stream through two upgrades in a row; failed upgrades roll back; a second
//!   request during an upgrade is refused.

mod api;
mod balance;
mod cluster;
mod config_errors;
mod demo;
mod ha;
mod harness;
mod health;
mod queue;
mod retry;
mod stick_table;
mod stickiness;
mod streams;
mod timeouts;
mod upgrade;
mod vip;
