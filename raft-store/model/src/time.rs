//! The wall clock, read in one place.
//!
//! Cores take time as an argument (STYLE item 2); only drivers call [`now`]. Times that
//! cross nodes (stick entries, drill events, health reports) are Unix milliseconds, so
//! replicas on different hosts compare them as well as NTP allows.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds.
pub type UnixMs = u64;

/// The current wall-clock time. A clock set before 1970 reads as 0 rather than failing:
/// every user of this value compares or subtracts with saturation.
pub fn now() -> UnixMs {
    unix_ms(SystemTime::now())
}

/// A `SystemTime` as Unix milliseconds (0 before the epoch).
pub fn unix_ms(t: SystemTime) -> UnixMs {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn converts_and_clamps() {
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1_234)), 1_234);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert!(now() > 1_700_000_000_000);
    }
}
