//! Telemetry that could not be delivered is always counted
//! (`polytrace.telemetry.dropped`) but said at most once per [`WARN_EVERY`]:
//! a backend that is down costs a log line every 30 s, not a flood.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Host health metric: telemetry items dropped (attribute `signal`: `spans`,
/// `metric_points` or `log_records`).
pub const DROPPED: &str = "polytrace.telemetry.dropped";

/// Telemetry one component lost, by signal; read by [`DROPPED`].
#[derive(Debug, Default)]
pub struct Dropped {
    pub spans: AtomicU64,
    pub metric_points: AtomicU64,
    pub log_records: AtomicU64,
}

impl Dropped {
    pub fn add_spans(&self, n: u64) {
        self.spans.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_log_records(&self, n: u64) {
        self.log_records.fetch_add(n, Ordering::Relaxed);
    }
}

/// The shortest time between two warnings of one kind.
pub const WARN_EVERY: Duration = Duration::from_secs(30);

/// When a warning of one kind was last said.
#[derive(Debug, Default)]
pub struct Throttle(Option<Instant>);

impl Throttle {
    /// Whether to say it now (never said, or [`WARN_EVERY`] has passed);
    /// when it is, the clock restarts.
    pub fn ready(&mut self) -> bool {
        if self.0.is_some_and(|t| t.elapsed() <= WARN_EVERY) {
            return false;
        }
        self.0 = Some(Instant::now());
        true
    }
}

/// A [`Throttle`] that tasks share (the export stage's, say).
#[derive(Debug, Default)]
pub struct SharedThrottle(std::sync::Mutex<Throttle>);

impl SharedThrottle {
    /// As [`Throttle::ready`].
    pub fn ready(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_once_per_period() {
        let mut t = Throttle::default();
        assert!(t.ready());
        assert!(!t.ready());
        t.0 = Some(Instant::now() - WARN_EVERY - Duration::from_millis(1));
        assert!(t.ready());
        assert!(!t.ready());
    }
}
