//! Test harness: real TCP backends in this process, the real `ballast` binary as a child
//! process, and client helpers that connect from chosen loopback source addresses.
//!
//! - [`Backend`]: a tokio TCP server on its own thread (greeting + echo, half-close aware,
//!   killable to simulate a dead server).
//! - [`Node`]: writes a DESIGN.md-format config into a tempdir, runs `ballast run`, waits
//!   for `/readyz`, reads `/metrics`; killed by PID on drop, log tail printed on panic.
//! - `client`: connect from `127.A.B.C`, read the greeting line, echo checks.
//! - `stream`: sockets streaming chunks checked byte for byte ([`stream::Streams`]), and a
//!   connection-rate client ([`stream::RateClient`]).
//! - `process`: processes by PID from `/proc` (alive, image, descendants) and signals.

pub mod backend;
pub mod client;
pub mod dead;
pub mod http;
pub mod node;
pub mod process;
mod selftest;
pub mod stream;

pub use backend::Backend;
pub use client::{connect_from, open, read_to_eof, src_ip, Conn};
pub use node::{BackendCfg, FrontendCfg, Node};

use std::future::Future;
use std::time::Duration;

/// Runs `fut` with an overall deadline, so that a hang fails the test instead of the run.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: did not finish within {secs} s"),
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), so failures are reproducible.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// FNV-1a 64-bit: a cheap checksum to compare streams and to print in failure messages.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
