//! The threads client connections live on: one single-threaded tokio runtime per core,
//! each with its own socket of the listening port's SO_REUSEPORT group.
//!
//! A connection is decided, connected and relayed on one thread, and stays there: no
//! work stealing, no waking another thread for its I/O, timers in that thread's own
//! wheel. Measured against the node's shared
//! multi-threaded runtime (connect, 16-byte echo, close; 2 cores): proxy CPU per
//! connection 48.6 → 44.3 µs, futex calls 0.23 → 0.03 per connection. It also keeps
//! the control plane (API, Raft, VRRP, health checks — still on the shared runtime)
//! from delaying connections while it works, say on a snapshot.
//!
//! Which thread is decided at accept. The kernel's SO_REUSEPORT hash picks the accepting
//! thread without knowing how busy it is, and long-lived connections never move, so the
//! accepting thread hands a new connection to another thread when that one serves
//! [`HANDOFF_MARGIN`] fewer connections ([`place`]): the least-loaded placement HAProxy's
//! multi-queue accept makes too (docs/design-notes.md).
//!
//! The threads are started once per process (several nodes in one process — the demo —
//! share them) and run until it exits; the plane stops its tasks on them by aborting
//! their handles.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::{Builder, Handle};
use tracing::error;

/// One plane thread: its runtime and how many connections it serves.
pub(super) struct Worker {
    pub(super) handle: Handle,
    load: Load,
}

/// Its own cache line: the threads bump their counters at every accept and close, and
/// neighbours on one line would make each bump a cross-core miss for the other thread.
#[repr(align(64))]
#[derive(Default)]
struct Load(AtomicUsize);

impl Worker {
    fn new(handle: Handle) -> Self {
        Self {
            handle,
            load: Load::default(),
        }
    }

    /// Connections this thread serves now.
    pub(super) fn connections(&self) -> usize {
        self.load.0.load(Ordering::Relaxed)
    }

    /// Counts one more connection on this thread until the returned guard drops.
    pub(super) fn carry(&'static self) -> Carried {
        self.load.0.fetch_add(1, Ordering::Relaxed);
        Carried(self)
    }
}

/// One connection counted on a plane thread; dropping it (the connection's task ends,
/// however it ends) uncounts it.
pub(super) struct Carried(&'static Worker);

impl Drop for Carried {
    fn drop(&mut self) {
        self.0.load.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many fewer connections another thread must serve before the accepting thread
/// hands it a new one. A hand-off goes through tokio's cross-thread queue and writes the
/// other thread's wake-up eventfd, asleep or not; with a margin of 2 the threads stay
/// within two connections of each other without paying that for every other connection
/// of a short-lived burst (margins 1, 2 and 4 measured: docs/design-notes.md).
const HANDOFF_MARGIN: usize = 2;

/// The thread a connection accepted on thread `here` should live on: the least loaded
/// one if it serves at least [`HANDOFF_MARGIN`] fewer connections than `here`, else
/// `here` (ties keep the connection where it is, with no hand-off).
pub(super) fn place(loads: &[usize], here: usize) -> usize {
    let Some(&mine) = loads.get(here) else {
        return here;
    };
    let (least, &fewest) = loads
        .iter()
        .enumerate()
        .min_by_key(|&(_, load)| *load)
        .unwrap_or((here, &mine));
    if fewest + HANDOFF_MARGIN <= mine {
        least
    } else {
        here
    }
}

static WORKERS: OnceLock<Vec<Worker>> = OnceLock::new();

/// The plane threads, one per accept loop ([`super::accept_loops`]), started at the
/// first call.
pub(super) fn workers() -> &'static [Worker] {
    WORKERS.get_or_init(|| start(super::accept_loops()))
}

/// The plane threads if they have started, without starting them.
pub(super) fn running() -> &'static [Worker] {
    WORKERS.get().map_or(&[], Vec::as_slice)
}

fn start(count: usize) -> Vec<Worker> {
    let mut workers = Vec::with_capacity(count);
    for index in 0..count {
        match start_one(index) {
            Ok(handle) => workers.push(Worker::new(handle)),
            Err(e) => error!(worker = index, error = %e, "cannot start a data-plane thread"),
        }
    }
    if workers.is_empty() {
        // Not one thread could start (no memory, thread limit): serve from the caller's
        // runtime rather than not at all.
        workers.push(Worker::new(Handle::current()));
    }
    workers
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
    fn a_connection_stays_where_it_was_accepted_unless_another_thread_is_clearly_lighter() {
        // Balanced, or lighter by less than the margin: no hand-off.
        assert_eq!(place(&[3, 3], 0), 0);
        assert_eq!(place(&[4, 3], 0), 0);
        assert_eq!(place(&[0], 0), 0);
        // The accepting thread is the lightest already.
        assert_eq!(place(&[1, 5, 9], 0), 0);
        // Lighter by the margin or more: to the least loaded thread.
        assert_eq!(place(&[5, 3], 0), 1);
        assert_eq!(place(&[9, 7, 2, 4], 1), 2);
        assert_eq!(place(&[2, 10], 1), 0);
        // Several equally light: the first of them.
        assert_eq!(place(&[9, 1, 1], 0), 1);
        // An index past the threads (a caller's bug) keeps the connection where it is.
        assert_eq!(place(&[5, 0], 7), 7);
    }

    #[test]
    fn placing_every_connection_keeps_the_threads_within_the_margin() {
        // Connections arriving on the thread a hash picks, many on one: with each placed
        // by `place`, the loads never drift apart by more than the margin, where the
        // hash alone leaves them as far apart as the hash falls (here 40 to 0).
        let mut loads = [0usize; 2];
        for _ in 0..40 {
            let to = place(&loads, 0);
            loads[to] += 1;
            assert!(loads[0].abs_diff(loads[1]) <= HANDOFF_MARGIN, "{loads:?}");
        }
        assert_eq!(loads[0] + loads[1], 40);
    }

    #[test]
    fn a_carried_connection_is_counted_until_its_guard_drops() {
        let worker: &'static Worker = Box::leak(Box::new(Worker::new(
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime")
                .handle()
                .clone(),
        )));
        let first = worker.carry();
        let second = worker.carry();
        assert_eq!(worker.connections(), 2);
        drop(first);
        assert_eq!(worker.connections(), 1);
        drop(second);
        assert_eq!(worker.connections(), 0);
    }

    #[test]
    fn plane_tasks_run_on_the_plane_threads_with_a_timer() {
        let workers = workers();
        assert!(!workers.is_empty());
        for worker in workers {
            let (tx, rx) = std::sync::mpsc::channel();
            worker.handle.spawn(async move {
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
