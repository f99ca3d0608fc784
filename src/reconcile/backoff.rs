//! Delay arithmetic, pure: kubelet's crash-loop backoff for restarting a
//! main process, and the retry backoff (with jitter) for failed reconciles.

use std::time::Duration;

/// Kubelet's crash-loop backoff: the first restart waits `initial`, each
/// following one twice the last, up to `max`; a run that lasted
/// `reset_after` or longer starts the sequence again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashLoopBackoff {
    /// First delay (kubelet: 10 s).
    pub initial: Duration,
    /// Largest delay (kubelet: 5 min).
    pub max: Duration,
    /// A run at least this long resets the delay (kubelet: 10 min).
    pub reset_after: Duration,
}

impl Default for CrashLoopBackoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

impl CrashLoopBackoff {
    /// The delay before the next restart, given the delay used before the
    /// last start (None if it was the first) and how long that run lasted.
    pub fn next_delay(&self, previous: Option<Duration>, ran_for: Duration) -> Duration {
        match previous {
            Some(prev) if ran_for < self.reset_after => {
                prev.saturating_mul(2).min(self.max).max(self.initial)
            }
            _ => self.initial,
        }
    }
}

/// Exponential backoff for a reconcile that failed `failures` times in a
/// row: 500 ms doubling to 60 s, spread by ±20 % so a burst of failures does
/// not retry in lockstep. `jitter` is a number in [0, 1).
pub fn retry_delay(failures: u32, jitter: f64) -> Duration {
    let base_ms = 500u64
        .saturating_mul(1u64 << failures.saturating_sub(1).min(20))
        .min(60_000);
    let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
    Duration::from_millis((base_ms as f64 * factor) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn crash_loop_doubles_to_five_minutes() {
        let b = CrashLoopBackoff::default();
        let mut delay = None;
        let mut seen = Vec::new();
        for _ in 0..8 {
            let d = b.next_delay(delay, S(1));
            seen.push(d.as_secs());
            delay = Some(d);
        }
        assert_eq!(seen, vec![10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn ten_minutes_of_clean_running_resets() {
        let b = CrashLoopBackoff::default();
        assert_eq!(b.next_delay(Some(S(300)), S(599)), S(300));
        assert_eq!(b.next_delay(Some(S(300)), S(600)), S(10));
        assert_eq!(b.next_delay(Some(S(40)), S(601)), S(10));
    }

    #[test]
    fn scaled_down_for_tests() {
        let b = CrashLoopBackoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(2),
            reset_after: Duration::from_secs(4),
        };
        assert_eq!(b.next_delay(None, S(0)), Duration::from_millis(200));
        assert_eq!(b.next_delay(Some(Duration::from_millis(1600)), S(0)), S(2));
    }

    #[test]
    fn retry_grows_with_jitter_bounds() {
        assert_eq!(retry_delay(1, 0.5), Duration::from_millis(500));
        assert_eq!(retry_delay(2, 0.5), Duration::from_millis(1000));
        assert_eq!(retry_delay(1, 0.0), Duration::from_millis(400));
        assert_eq!(retry_delay(1, 1.0), Duration::from_millis(600));
        assert_eq!(retry_delay(30, 0.5), Duration::from_secs(60));
    }
}
