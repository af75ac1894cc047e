//! The refresher's pure arithmetic: effective margins, retry backoff with jitter that never
//! lets a credential lapse, and when to wake next. No I/O, no clock reads.

use std::time::Duration;

use super::wechat::ErrorClass;

/// How long before expiry a credential is replaced: the configured margin, but never more
/// than half the lifetime WeChat reported (so short-lived test lifetimes still work).
pub fn effective_margin(margin: Duration, lifetime: Duration) -> Duration {
    margin.min(lifetime / 2)
}

/// The pre-auth margin in force for a platform: clamped to half the lifetime of the codes
/// WeChat issued last (the configured margin until a first code was seen). The leader, the
/// token API and every replica's view must agree on it, since counting and popping the pool
/// discard codes below it.
pub fn pre_auth_margin(
    configured: Duration,
    latest: Option<&crate::store::PreAuthMeta>,
) -> Duration {
    match latest {
        Some(m) => effective_margin(
            configured,
            Duration::from_millis((m.expires_at_ms - m.obtained_at_ms).max(0) as u64),
        ),
        None => configured,
    }
}

/// Backoff after `failures` consecutive failures of one class, before the expiry cap.
/// `jitter` in [0, 1) spreads retries over [d/2, d).
pub fn backoff(class: ErrorClass, failures: u32, jitter: f64) -> Duration {
    let exp = |base_ms: u64, cap: Duration| {
        let d = Duration::from_millis(base_ms.saturating_mul(1u64 << failures.min(16))).min(cap);
        d.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    };
    match class {
        ErrorClass::Retry | ErrorClass::TokenInvalid => exp(1_000, Duration::from_secs(60)),
        ErrorClass::Unknown => exp(5_000, Duration::from_secs(300)),
        ErrorClass::TooFrequent => exp(30_000, Duration::from_secs(300)),
        ErrorClass::TicketInvalid => Duration::from_secs(60),
        ErrorClass::QuotaExhausted => Duration::from_secs(600),
        ErrorClass::Configuration => Duration::from_secs(300),
    }
}

/// The retry delay: the backoff, but while a credential is still valid always early enough
/// to try again before it expires (half the time left, at least 500 ms apart).
pub fn retry_delay(backoff: Duration, time_left: Option<Duration>) -> Duration {
    match time_left {
        Some(left) => backoff.min((left / 2).max(Duration::from_millis(500))),
        None => backoff,
    }
}

/// The earliest of the wake-ups that exist, or `idle` if none does.
pub fn next_wake(candidates: &[Option<Duration>], idle: Duration) -> Duration {
    candidates
        .iter()
        .flatten()
        .copied()
        .min()
        .unwrap_or(idle)
        .min(idle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn margins_are_clamped_to_half_the_lifetime() {
        assert_eq!(effective_margin(S(900), S(7200)), S(900));
        assert_eq!(effective_margin(S(900), S(60)), S(30));
        assert_eq!(effective_margin(S(120), S(600)), S(120));
        assert_eq!(effective_margin(S(120), S(30)), S(15));
    }

    #[test]
    fn backoff_grows_then_caps() {
        assert_eq!(backoff(ErrorClass::Retry, 0, 1.0), S(1));
        assert_eq!(backoff(ErrorClass::Retry, 3, 1.0), S(8));
        assert_eq!(backoff(ErrorClass::Retry, 30, 1.0), S(60));
        assert_eq!(backoff(ErrorClass::Retry, 3, 0.0), S(4));
        assert_eq!(backoff(ErrorClass::QuotaExhausted, 0, 0.3), S(600));
        assert_eq!(backoff(ErrorClass::Configuration, 9, 0.3), S(300));
    }

    #[test]
    fn retries_land_before_expiry() {
        assert_eq!(retry_delay(S(600), Some(S(100))), S(50));
        assert_eq!(retry_delay(S(10), Some(S(100))), S(10));
        assert_eq!(
            retry_delay(S(600), Some(Duration::ZERO)),
            Duration::from_millis(500)
        );
        assert_eq!(retry_delay(S(600), None), S(600));
    }

    #[test]
    fn wake_is_the_earliest_candidate() {
        assert_eq!(next_wake(&[Some(S(5)), None, Some(S(3))], S(60)), S(3));
        assert_eq!(next_wake(&[None, None], S(60)), S(60));
        assert_eq!(next_wake(&[Some(S(90))], S(60)), S(60));
    }

    proptest! {
        #[test]
        fn backoff_is_positive_bounded_and_before_expiry(failures in 0u32..100, jitter in 0.0f64..1.0, left_ms in 0u64..10_000_000) {
            for class in [ErrorClass::Retry, ErrorClass::Unknown, ErrorClass::TooFrequent, ErrorClass::TicketInvalid,
                          ErrorClass::QuotaExhausted, ErrorClass::Configuration, ErrorClass::TokenInvalid] {
                let b = backoff(class, failures, jitter);
                prop_assert!(b > Duration::ZERO && b <= S(600));
                let left = Duration::from_millis(left_ms);
                let d = retry_delay(b, Some(left));
                prop_assert!(d <= b);
                prop_assert!(d <= (left / 2).max(Duration::from_millis(500)));
            }
        }
    }
}
