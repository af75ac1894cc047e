//! The one place that reads the wall clock.
//!
//! [`WallClock`] captures the system time once and then advances with tokio's clock, so every
//! timer, deadline and "now" in the crate moves together under `tokio::time::pause()` in tests.
//! Decisions that compare instants use tokio's monotonic `Instant`; unix milliseconds are only
//! used where WeChat or the store speak them. The Redis store ignores this clock entirely and
//! asks Redis for `TIME`, so that all replicas share one clock.

use tokio::time::Instant;

/// Unix time in milliseconds.
pub type UnixMillis = i64;

#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    base_unix_ms: UnixMillis,
    base: Instant,
}

impl WallClock {
    /// A clock that starts at the system's current time.
    #[allow(clippy::disallowed_methods)] // the one sanctioned read of the system clock
    pub fn system() -> Self {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as UnixMillis)
            .unwrap_or(0);
        Self::starting_at(unix_ms)
    }

    /// A clock that reads `unix_ms` now (tests, the demo's compressed time).
    pub fn starting_at(unix_ms: UnixMillis) -> Self {
        Self {
            base_unix_ms: unix_ms,
            base: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> UnixMillis {
        self.base_unix_ms + self.base.elapsed().as_millis() as UnixMillis
    }

    pub fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::system()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_tokio_time() {
        let clock = WallClock::starting_at(1_000_000);
        assert_eq!(clock.now_ms(), 1_000_000);
        tokio::time::advance(Duration::from_millis(2_500)).await;
        assert_eq!(clock.now_ms(), 1_002_500);
        assert_eq!(clock.now_secs(), 1_002);
    }
}
