//! The threads client connections live on: one single-threaded tokio runtime per core,
//! each with its own socket of the listening port's SO_REUSEPORT group.
//!
//! A connection is accepted, decided, connected and relayed on the thread whose socket
//! the kernel picked, and stays there: no work stealing, no waking another thread for
//! its I/O, timers in that thread's own wheel. Measured against the node's shared
//! multi-threaded runtime (connect, 16-byte echo, close; 2 cores): proxy CPU per
//! connection 48.6 → 44.3 µs, futex calls 0.23 → 0.03 per connection. It also keeps
//! the control plane (API, Raft, VRRP, health checks — still on the shared runtime)
//! from delaying connections while it works, say on a snapshot.
//!
//! The threads are started once per process (several nodes in one process — the demo —
//! share them) and run until it exits; the plane stops its tasks on them by aborting
//! their handles.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::{Builder, Handle};
use tracing::error;

static WORKERS: OnceLock<Vec<Handle>> = OnceLock::new();

/// The plane threads' runtimes, one per accept loop ([`super::accept_loops`]), started
/// at the first call.
pub(super) fn workers() -> &'static [Handle] {
    WORKERS.get_or_init(|| start(super::accept_loops()))
}

fn start(count: usize) -> Vec<Handle> {
    let mut handles = Vec::with_capacity(count);
    for index in 0..count {
        match start_one(index) {
            Ok(handle) => handles.push(handle),
            Err(e) => error!(worker = index, error = %e, "cannot start a data-plane thread"),
        }
    }
    if handles.is_empty() {
        // Not one thread could start (no memory, thread limit): serve from the caller's
        // runtime rather than not at all.
        handles.push(Handle::current());
    }
    handles
}

fn start_one(index: usize) -> std::io::Result<Handle> {
    let runtime = Builder::new_current_thread().enable_all().build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(format!("ballast-plane-{index}"))
        .spawn(move || runtime.block_on(keep_timer_armed()))?;
    Ok(handle)
}

/// How often a plane thread's timer wakes it when nothing else does.
const TIMER_HEARTBEAT: Duration = Duration::from_secs(1);

/// Keeps a timer due within [`TIMER_HEARTBEAT`] on the thread, forever.
///
/// tokio wakes its driver (an eventfd write, and one more `epoll_wait`) whenever a new
/// timer is due before every other one. Each connection starts a `timeout_connect`
/// timer (5 s by default); with no earlier timer it was the earliest nearly every
/// time — about one extra wake-up per connection, seen with strace. A heartbeat
/// due sooner makes those inserts silent, for the price of one wake-up per second
/// per thread when idle.
async fn keep_timer_armed() {
    let mut ticker = tokio::time::interval(TIMER_HEARTBEAT);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plane_tasks_run_on_the_plane_threads_with_a_timer() {
        let workers = workers();
        assert!(!workers.is_empty());
        for worker in workers {
            let (tx, rx) = std::sync::mpsc::channel();
            worker.spawn(async move {
                // Timers work there (the connection path needs them).
                tokio::time::sleep(Duration::from_millis(1)).await;
                let _ = tx.send(std::thread::current().name().map(String::from));
            });
            let name = rx
                .recv_timeout(Duration::from_secs(5))
                .expect("the task ran")
                .unwrap_or_default();
            assert!(name.starts_with("ballast-plane-"), "ran on {name:?}");
        }
    }
}
