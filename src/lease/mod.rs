//! Leader election on the store's lease, with fencing: exactly one replica acts.
//!
//! [`decide`] is the pure core; [`elector`] is the task that performs its decisions and
//! publishes a [`Leadership`] on a watch channel. Consumers act only while
//! [`Leadership::acting_term`] returns a term, checked immediately before each action, and stop
//! when the term's token is cancelled. Every write they make is also fenced in the store, so a
//! paused former leader cannot overwrite its successor even in the residual window.

pub mod decide;
pub mod elector;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::LeaseId;

/// One leadership term of this replica.
#[derive(Debug, Clone)]
pub struct Term {
    pub id: LeaseId,
    /// Monotonic deadline past which this replica must not act (updated on each renew).
    pub valid_until: Instant,
    /// End of the lock-delay: no WeChat call before this.
    pub act_after: Instant,
    /// Cancelled when the term ends (lost, self-fenced, shutting down).
    pub token: CancellationToken,
}

#[derive(Debug, Clone, Default)]
pub enum Leadership {
    #[default]
    Follower,
    Leader(Term),
}

impl Leadership {
    /// The term, if this replica may act at `now`.
    pub fn acting_term(&self, now: Instant) -> Option<&Term> {
        match self {
            Leadership::Leader(t) if now < t.valid_until && !t.token.is_cancelled() => Some(t),
            _ => None,
        }
    }

    pub fn is_leader(&self, now: Instant) -> bool {
        self.acting_term(now).is_some()
    }
}
