//! One subscription to the store's notice channel per process, fanned out in-process.
//!
//! Pub/sub drops messages while disconnected, so after every (re)subscription the hub
//! broadcasts [`HubEvent::Resubscribed`]: listeners then reload what they cache. A listener
//! that lags behind gets `Lagged` from the broadcast channel and must treat it the same way.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::store::{Notice, SharedStore};

/// Resubscribe quickly: the reload that follows is what re-seeds a Redis that restarted
/// empty, and it must happen well inside a new leader's lock-delay (one lease TTL).
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubEvent {
    Notice(Notice),
    /// A new subscription started: anything may have been missed before it.
    Resubscribed,
}

#[derive(Clone)]
pub struct NoticeHub {
    tx: broadcast::Sender<HubEvent>,
}

impl NoticeHub {
    /// Starts the subscriber task; it retries with backoff until `shutdown`.
    pub fn spawn(
        store: SharedStore,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, _) = broadcast::channel(1024);
        let hub = Self { tx: tx.clone() };
        let task = tokio::spawn(async move {
            let mut backoff = RETRY_FIRST;
            loop {
                let stream = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    s = store.subscribe() => s,
                };
                match stream {
                    Ok(mut stream) => {
                        backoff = RETRY_FIRST;
                        let _ = tx.send(HubEvent::Resubscribed);
                        debug!("subscribed to store notices");
                        loop {
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                n = stream.next() => match n {
                                    Some(n) => { let _ = tx.send(HubEvent::Notice(n)); }
                                    None => break,
                                },
                            }
                        }
                        warn!("store notice subscription ended; resubscribing");
                    }
                    Err(e) => {
                        debug!(error = %e, "cannot subscribe to store notices yet");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(RETRY_MAX);
                    }
                }
            }
        });
        (hub, task)
    }

    pub fn listen(&self) -> broadcast::Receiver<HubEvent> {
        self.tx.subscribe()
    }
}
