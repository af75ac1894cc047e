//! The elector's pure core: given what it knows and the monotonic time, what to do next, and
//! how each outcome changes what it knows. No I/O, no clock reads: the task passes `now` in.
//!
//! Timing rules (TTL = lease time-to-live):
//! - renew every TTL/3; every store call times out at TTL/10;
//! - a renew that failed or whose outcome is unknown is retried at once, then every TTL/10;
//! - a leader is valid until `send time of the last acknowledged renew + TTL × 0.99 − timeout`
//!   (the 1 % covers monotonic clock drift between machines; the timeout covers a reply that
//!   was delayed in flight), and past that it steps down, whatever Redis says;
//! - a follower retries after exactly the remaining TTL the store reported (capped at TTL);
//! - a new leader acts only one TTL after acquiring, unless the previous term was released.

use std::time::Duration;

use tokio::time::Instant;

use crate::store::{AcquireOutcome, LeaseId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub ttl: Duration,
}

impl Timing {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl }
    }
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }
    pub fn op_timeout(&self) -> Duration {
        self.ttl / 10
    }
    pub fn retry_every(&self) -> Duration {
        self.ttl / 10
    }
    /// How long after a renew was *sent* the lease is surely still ours.
    pub fn validity(&self) -> Duration {
        self.ttl.mul_f64(0.99).saturating_sub(self.op_timeout())
    }
    pub fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Follower {
        next_attempt: Instant,
    },
    Leader {
        id: LeaseId,
        valid_until: Instant,
        next_renew: Instant,
        /// End of the lock-delay: no WeChat call before this.
        act_after: Instant,
        /// Consecutive renews that failed or whose outcome is unknown.
        failures: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Acquire,
    Renew,
    /// Lease validity ran out (Redis unreachable, or this process was paused): stop acting.
    StepDown,
    Wait(Instant),
}

/// What to do now.
pub fn decide(role: &Role, now: Instant) -> Action {
    match role {
        Role::Follower { next_attempt } if now >= *next_attempt => Action::Acquire,
        Role::Follower { next_attempt } => Action::Wait(*next_attempt),
        Role::Leader { valid_until, .. } if now >= *valid_until => Action::StepDown,
        Role::Leader { next_renew, .. } if now >= *next_renew => Action::Renew,
        Role::Leader {
            next_renew,
            valid_until,
            ..
        } => Action::Wait((*next_renew).min(*valid_until)),
    }
}

/// The store connection was re-made: Redis may have restarted (perhaps empty) or failed over,
/// and a lease may not have survived. A follower tries to acquire at once; a leader renews at
/// once, so it learns now, not at its next renew, whether it still leads.
pub fn after_reconnect(role: Role, now: Instant) -> Role {
    match role {
        Role::Follower { .. } => Role::Follower { next_attempt: now },
        Role::Leader {
            id,
            valid_until,
            next_renew,
            act_after,
            failures,
        } => Role::Leader {
            id,
            valid_until,
            next_renew: next_renew.min(now),
            act_after,
            failures,
        },
    }
}

/// After an acquire sent at `sent`, answered (or not) at `now`.
pub fn after_acquire(
    t: Timing,
    holder: &str,
    sent: Instant,
    now: Instant,
    result: Option<&AcquireOutcome>,
) -> Role {
    match result {
        Some(AcquireOutcome::Acquired {
            epoch,
            clean_handoff,
        }) => Role::Leader {
            id: LeaseId {
                holder: holder.to_owned(),
                epoch: *epoch,
            },
            valid_until: sent + t.validity(),
            next_renew: sent + t.renew_every(),
            act_after: if *clean_handoff { now } else { sent + t.ttl },
            failures: 0,
        },
        Some(AcquireOutcome::Held { remaining_ms }) => {
            let wait = Duration::from_millis((*remaining_ms).max(0) as u64).min(t.ttl);
            Role::Follower {
                next_attempt: now + wait,
            }
        }
        None => Role::Follower {
            next_attempt: now + t.retry_every(),
        },
    }
}

/// How a renew ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewResult {
    Renewed,
    /// The store says the lease no longer names us.
    Lost,
    /// Error or timeout: the lease may or may not have been extended.
    Unknown,
}

/// After a renew sent at `sent`, answered (or not) at `now`. `None` means the leadership is
/// lost (the caller cancels the term).
pub fn after_renew(
    t: Timing,
    role: &Role,
    sent: Instant,
    now: Instant,
    result: RenewResult,
) -> Role {
    let Role::Leader {
        id,
        valid_until,
        act_after,
        failures,
        ..
    } = role
    else {
        return role.clone();
    };
    match result {
        RenewResult::Renewed => Role::Leader {
            id: id.clone(),
            // Only ever extended: a slow reply to an older renew cannot shorten validity.
            valid_until: (*valid_until).max(sent + t.validity()),
            next_renew: sent + t.renew_every(),
            act_after: *act_after,
            failures: 0,
        },
        RenewResult::Lost => Role::Follower { next_attempt: now },
        RenewResult::Unknown => Role::Leader {
            id: id.clone(),
            valid_until: *valid_until,
            next_renew: if *failures == 0 {
                now
            } else {
                now + t.retry_every()
            },
            act_after: *act_after,
            failures: failures + 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);
    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn leader(t0: Instant, clean: bool) -> Role {
        after_acquire(
            Timing::new(TTL),
            "me",
            t0,
            t0 + ms(5),
            Some(&AcquireOutcome::Acquired {
                epoch: 7,
                clean_handoff: clean,
            }),
        )
    }

    #[test]
    fn timing_derivations() {
        let t = Timing::new(TTL);
        assert_eq!(t.renew_every(), ms(3333) + Duration::from_nanos(333_333));
        assert_eq!(t.op_timeout(), ms(1000));
        assert_eq!(t.validity(), ms(8900));
    }

    #[test]
    fn follower_acquires_when_due_and_waits_otherwise() {
        let t0 = Instant::now();
        let f = Role::Follower {
            next_attempt: t0 + ms(10),
        };
        assert_eq!(decide(&f, t0), Action::Wait(t0 + ms(10)));
        assert_eq!(decide(&f, t0 + ms(10)), Action::Acquire);
    }

    #[test]
    fn acquired_lease_counts_from_send_time_with_lock_delay() {
        let t0 = Instant::now();
        let Role::Leader {
            valid_until,
            next_renew,
            act_after,
            id,
            ..
        } = leader(t0, false)
        else {
            panic!("leader")
        };
        assert_eq!(
            id,
            LeaseId {
                holder: "me".into(),
                epoch: 7
            }
        );
        assert_eq!(valid_until, t0 + ms(8900));
        assert_eq!(next_renew, t0 + Timing::new(TTL).renew_every());
        assert_eq!(act_after, t0 + TTL, "not clean: one TTL of lock-delay");
        let Role::Leader { act_after, .. } = leader(t0, true) else {
            panic!()
        };
        assert_eq!(act_after, t0 + ms(5), "clean handoff: act at once");
    }

    #[test]
    fn held_lease_waits_exactly_the_remaining_ttl_capped() {
        let t = Timing::new(TTL);
        let t0 = Instant::now();
        let r = after_acquire(
            t,
            "me",
            t0,
            t0 + ms(2),
            Some(&AcquireOutcome::Held { remaining_ms: 4321 }),
        );
        assert_eq!(
            r,
            Role::Follower {
                next_attempt: t0 + ms(2) + ms(4321)
            }
        );
        let r = after_acquire(
            t,
            "me",
            t0,
            t0,
            Some(&AcquireOutcome::Held {
                remaining_ms: 999_999,
            }),
        );
        assert_eq!(
            r,
            Role::Follower {
                next_attempt: t0 + TTL
            }
        );
        let r = after_acquire(t, "me", t0, t0 + ms(1000), None);
        assert_eq!(
            r,
            Role::Follower {
                next_attempt: t0 + ms(2000)
            },
            "error: retry after TTL/10"
        );
    }

    #[test]
    fn leader_renews_on_schedule_and_steps_down_past_validity() {
        let t0 = Instant::now();
        let l = leader(t0, false);
        assert!(matches!(decide(&l, t0 + ms(100)), Action::Wait(_)));
        assert_eq!(decide(&l, t0 + ms(3334)), Action::Renew);
        assert_eq!(decide(&l, t0 + ms(8899)), Action::Renew);
        assert_eq!(decide(&l, t0 + ms(8900)), Action::StepDown);
        // A paused process wakes long past validity: it steps down before anything else.
        assert_eq!(decide(&l, t0 + ms(60_000)), Action::StepDown);
    }

    #[test]
    fn renew_extends_from_send_time_never_backwards() {
        let t = Timing::new(TTL);
        let t0 = Instant::now();
        let l = leader(t0, false);
        let sent = t0 + ms(3400);
        let r = after_renew(t, &l, sent, sent + ms(900), RenewResult::Renewed);
        let Role::Leader {
            valid_until,
            next_renew,
            failures,
            ..
        } = &r
        else {
            panic!()
        };
        assert_eq!(*valid_until, sent + ms(8900));
        assert_eq!(*next_renew, sent + t.renew_every());
        assert_eq!(*failures, 0);
        // A late acknowledgement of an older renew does not shorten validity.
        let older = after_renew(t, &r, t0 + ms(100), sent + ms(950), RenewResult::Renewed);
        let Role::Leader {
            valid_until: v2, ..
        } = older
        else {
            panic!()
        };
        assert_eq!(v2, sent + ms(8900));
    }

    #[test]
    fn unknown_renew_retries_at_once_then_every_tenth_of_ttl() {
        let t = Timing::new(TTL);
        let t0 = Instant::now();
        let l = leader(t0, false);
        let now = t0 + ms(4400);
        let r1 = after_renew(t, &l, t0 + ms(3400), now, RenewResult::Unknown);
        let Role::Leader {
            next_renew,
            valid_until,
            failures,
            ..
        } = &r1
        else {
            panic!()
        };
        assert_eq!(
            (*next_renew, *failures),
            (now, 1),
            "first unknown outcome: retry at once"
        );
        assert_eq!(
            *valid_until,
            t0 + ms(8900),
            "validity is not extended by an unknown renew"
        );
        let r2 = after_renew(t, &r1, now, now + ms(1000), RenewResult::Unknown);
        let Role::Leader {
            next_renew,
            failures,
            ..
        } = &r2
        else {
            panic!()
        };
        assert_eq!((*next_renew, *failures), (now + ms(2000), 2));
        // One success restores the rhythm.
        let r3 = after_renew(t, &r2, now + ms(2000), now + ms(2001), RenewResult::Renewed);
        assert!(matches!(r3, Role::Leader { failures: 0, .. }));
        // Validity still runs out while renews keep failing.
        assert_eq!(decide(&r2, t0 + ms(8900)), Action::StepDown);
    }

    #[test]
    fn lost_renew_makes_a_follower_that_tries_at_once() {
        let t = Timing::new(TTL);
        let t0 = Instant::now();
        let r = after_renew(
            t,
            &leader(t0, false),
            t0 + ms(3400),
            t0 + ms(3401),
            RenewResult::Lost,
        );
        assert_eq!(
            r,
            Role::Follower {
                next_attempt: t0 + ms(3401)
            }
        );
    }

    #[test]
    fn a_reconnect_checks_the_lease_at_once() {
        let t0 = Instant::now();
        let now = t0 + ms(1000);
        let l = after_reconnect(leader(t0, false), now);
        assert_eq!(decide(&l, now), Action::Renew, "a leader renews at once");
        let Role::Leader { valid_until, .. } = l else {
            panic!()
        };
        assert_eq!(valid_until, t0 + ms(8900), "validity is not touched");
        let f = after_reconnect(
            Role::Follower {
                next_attempt: t0 + ms(9000),
            },
            now,
        );
        assert_eq!(
            decide(&f, now),
            Action::Acquire,
            "a follower acquires at once"
        );
    }

    #[test]
    fn drift_budget_keeps_validity_inside_the_ttl() {
        // Even if this machine's monotonic clock runs 1 % slow, validity ends before the store
        // expires the lease: validity × 1.01 + timeout < TTL.
        for ttl_ms in [1_000u64, 2_000, 10_000, 60_000] {
            let t = Timing::new(ms(ttl_ms));
            let worst = t.validity().mul_f64(1.01) + t.op_timeout();
            assert!(worst < ms(ttl_ms) + t.op_timeout(), "{ttl_ms}");
            assert!(t.validity().mul_f64(1.01) < ms(ttl_ms), "{ttl_ms}");
        }
    }
}
