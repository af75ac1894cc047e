//! The elector task: performs [`decide`](super::decide)'s actions against the store and
//! publishes the resulting [`Leadership`].
//!
//! Followers sleep exactly the lease's remaining TTL and wake early on a release notice (or a
//! resubscription, since notices can be lost). On shutdown the task ends the term first (so
//! nothing new starts) and hands back the lease it still validly holds; the caller releases
//! it once in-flight work has finished, so the successor starts while this replica drains.

use std::sync::Arc;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::decide::{
    after_acquire, after_reconnect, after_renew, decide, Action, RenewResult, Role, Timing,
};
use super::{Leadership, Term};
use crate::metrics::Metrics;
use crate::notices::{HubEvent, NoticeHub};
use crate::store::{LeaseId, Notice, SharedStore};

pub struct ElectorParams {
    /// This process's holder id (uuid v4).
    pub holder: String,
    pub timing: Timing,
}

/// Starts the elector. The handle resolves, after `shutdown`, to the lease still held (if any).
pub fn spawn(
    params: ElectorParams,
    store: SharedStore,
    hub: &NoticeHub,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> (watch::Receiver<Leadership>, JoinHandle<Option<LeaseId>>) {
    let (tx, rx) = watch::channel(Leadership::Follower);
    let events = hub.listen();
    let task = Elector {
        params,
        store,
        metrics,
        tx,
        events,
        term: None,
    };
    (rx, tokio::spawn(task.run(shutdown)))
}

struct Elector {
    params: ElectorParams,
    store: SharedStore,
    metrics: Arc<Metrics>,
    tx: watch::Sender<Leadership>,
    events: broadcast::Receiver<HubEvent>,
    term: Option<CancellationToken>,
}

impl Elector {
    async fn run(mut self, shutdown: CancellationToken) -> Option<LeaseId> {
        let t = self.params.timing;
        let mut role = Role::Follower {
            next_attempt: Instant::now(),
        };
        let mut listening = true;
        loop {
            match decide(&role, Instant::now()) {
                Action::Wait(until) => {
                    let follower = matches!(role, Role::Follower { .. });
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = sleep_until(until) => {}
                        ev = self.events.recv(), if listening => match ev {
                            Ok(HubEvent::Notice(Notice::LeaseReleased)) if follower => {
                                role = Role::Follower { next_attempt: Instant::now() };
                            }
                            // Notices may have been lost, or Redis restarted: look at the
                            // lease now (a leader whose lease is gone stops reporting
                            // leadership at once instead of at its next renew).
                            Ok(HubEvent::Resubscribed)
                            | Err(broadcast::error::RecvError::Lagged(_)) => {
                                role = after_reconnect(role, Instant::now());
                            }
                            Ok(_) => {}
                            Err(broadcast::error::RecvError::Closed) => listening = false,
                        },
                    }
                }
                Action::Acquire => {
                    let sent = Instant::now();
                    let result = self.store.acquire(&self.params.holder, t.ttl_ms()).await;
                    if let Err(e) = &result {
                        debug!(error = %e, "lease acquire failed");
                    }
                    role = after_acquire(
                        t,
                        &self.params.holder,
                        sent,
                        Instant::now(),
                        result.as_ref().ok(),
                    );
                    if let Role::Leader {
                        id,
                        valid_until,
                        act_after,
                        ..
                    } = &role
                    {
                        self.begin_term(id, *valid_until, *act_after);
                    }
                }
                Action::Renew => {
                    let sent = Instant::now();
                    let Role::Leader { id, .. } = &role else {
                        unreachable!("renew only as leader")
                    };
                    let result = self.store.renew(id, t.ttl_ms()).await;
                    self.metrics
                        .lease_renew_duration
                        .observe(sent.elapsed().as_secs_f64());
                    let outcome = match result {
                        Ok(true) => RenewResult::Renewed,
                        Ok(false) => RenewResult::Lost,
                        Err(e) => {
                            warn!(error = %e, "lease renew outcome unknown; retrying");
                            RenewResult::Unknown
                        }
                    };
                    role = after_renew(t, &role, sent, Instant::now(), outcome);
                    match &role {
                        Role::Leader { valid_until, .. } => {
                            let v = *valid_until;
                            self.tx.send_modify(|l| {
                                if let Leadership::Leader(term) = l {
                                    term.valid_until = v;
                                }
                            });
                        }
                        Role::Follower { .. } => {
                            warn!("lease lost: another replica holds it");
                            self.end_term("lost");
                        }
                    }
                }
                Action::StepDown => {
                    warn!("lease validity ran out before a renew was acknowledged; stepping down");
                    self.metrics.lease_self_fence.inc();
                    self.end_term("lost");
                    role = Role::Follower {
                        next_attempt: Instant::now(),
                    };
                }
            }
        }
        // Shutting down: end the term so nothing new starts, and hand back a lease that is
        // still validly ours for the caller to release after in-flight work.
        let held = match role {
            Role::Leader {
                id, valid_until, ..
            } if Instant::now() < valid_until => Some(id),
            _ => None,
        };
        self.end_term_silently();
        held
    }

    fn begin_term(&mut self, id: &LeaseId, valid_until: Instant, act_after: Instant) {
        let token = CancellationToken::new();
        self.term = Some(token.clone());
        self.metrics
            .lease_transitions
            .with_label_values(&["acquired"])
            .inc();
        self.metrics.leader.set(1);
        self.metrics.lease_epoch.set(id.epoch as f64);
        let lock_delay = act_after.saturating_duration_since(Instant::now());
        info!(
            epoch = id.epoch,
            lock_delay_ms = lock_delay.as_millis() as u64,
            "lease acquired: this replica leads"
        );
        self.tx.send_replace(Leadership::Leader(Term {
            id: id.clone(),
            valid_until,
            act_after,
            token,
        }));
    }

    fn end_term(&mut self, event: &'static str) {
        if self.term.is_some() {
            self.metrics
                .lease_transitions
                .with_label_values(&[event])
                .inc();
        }
        self.end_term_silently();
    }

    fn end_term_silently(&mut self) {
        if let Some(token) = self.term.take() {
            token.cancel();
        }
        self.metrics.leader.set(0);
        self.tx.send_replace(Leadership::Follower);
    }
}

/// Releases a lease after shutdown: compare-and-delete, clean-release record, notice.
pub async fn release(store: &SharedStore, id: &LeaseId, metrics: &Metrics) -> bool {
    match store.release(id).await {
        Ok(true) => {
            metrics
                .lease_transitions
                .with_label_values(&["released"])
                .inc();
            info!(epoch = id.epoch, "lease released for an immediate handoff");
            true
        }
        Ok(false) => {
            info!("lease was no longer ours to release");
            false
        }
        Err(e) => {
            warn!(error = %e, "lease release failed; successors wait for its expiry");
            false
        }
    }
}
