//! The one polling wait of the node, for conditions that no event announces: a query
//! to the Raft leader (lag), a value behind a mutex set by another task. Everything
//! with an event waits on it instead: openraft's metrics watch
//! (`Replica::wait_applied`, `Replica::wait_metrics`), the data plane's readiness watch
//! (`DataPlane::wait_ready`) and model notification (`DataPlane::wait_applied`).

use std::future::Future;
use std::time::Duration;

/// Checks `check` every `every` until it returns something, at most `timeout` (one last
/// check at the deadline).
pub async fn wait_until<T, F, Fut>(timeout: Duration, every: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(found) = check().await {
            return Some(found);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep_until((tokio::time::Instant::now() + every).min(deadline)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn returns_what_it_found_or_none_at_the_deadline() {
        let calls = AtomicU32::new(0);
        let found = wait_until(
            Duration::from_secs(1),
            Duration::from_millis(100),
            || async { (calls.fetch_add(1, Ordering::Relaxed) == 3).then_some("third retry") },
        )
        .await;
        assert_eq!(found, Some("third retry"));
        let start = tokio::time::Instant::now();
        let never = wait_until(
            Duration::from_millis(250),
            Duration::from_millis(100),
            || async { None::<()> },
        )
        .await;
        assert_eq!(never, None);
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(250),
            "one last check at the deadline"
        );
    }
}
