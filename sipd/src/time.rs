//! Time as the core sees it: one reading of both clocks, taken at the edge
//! (the server) and passed in. The monotonic instant drives timers; the
//! wall clock goes into what leaves the process (nonces, binding expiry in
//! the store, CDR times). Tests make their own and move it forward.

use std::ops::Add;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic: timers and lifetimes.
    pub at: Instant,
    /// Wall clock, milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl Now {
    /// Read both clocks: for the server, never for the core.
    pub fn read() -> Now {
        Now {
            at: Instant::now(),
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }

    /// A moment with this monotonic instant and wall-clock time (tests).
    pub fn at(at: Instant, unix_ms: u64) -> Now {
        Now { at, unix_ms }
    }

    /// Seconds since the Unix epoch.
    pub fn unix(self) -> u64 {
        self.unix_ms / 1000
    }

    /// The wall clock as a `SystemTime`.
    pub fn system(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.unix_ms)
    }
}

/// Both clocks moved forward by the same amount.
impl Add<Duration> for Now {
    type Output = Now;
    fn add(self, d: Duration) -> Now {
        Now {
            at: self.at + d,
            unix_ms: self.unix_ms.saturating_add(d.as_millis() as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_clocks_move_together() {
        let t = Now::at(Instant::now(), 1_700_000_000_500);
        let later = t + Duration::from_millis(1_600);
        assert_eq!(later.at - t.at, Duration::from_millis(1_600));
        assert_eq!(later.unix_ms, 1_700_000_002_100);
        assert_eq!(later.unix(), 1_700_000_002);
        assert_eq!(
            later.system().duration_since(UNIX_EPOCH).unwrap(),
            Duration::from_millis(1_700_000_002_100)
        );
    }
}
