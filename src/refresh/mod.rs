//! The leader-only refresher: for each platform, the component_access_token on a precise
//! schedule (independent of pushes), a pool of fresh single-use pre-auth codes, and a nudge to
//! WeChat when ticket pushes stop.
//!
//! Runs only inside a lease term. Before every WeChat call it re-checks the term, and the
//! store's claim (atomically: still leader, token really due) is what allows a token call at
//! all; every result goes through a fenced write, so a term that ended in between changes
//! nothing. A refused write ends this replica's acting. Wake-ups come from the pure
//! [`schedule`], store notices (a new ticket, an invalid-token report, a pre-auth code taken)
//! and the in-process `wake` signal, never from slow polling.

mod leader;
pub mod schedule;
pub mod wechat;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::PlatformConfig;
use crate::lease::Leadership;
use crate::metrics::Metrics;
use crate::notices::NoticeHub;
use crate::store::SharedStore;
use crate::view::CredentialView;
use leader::PlatformLeader;
use wechat::WeChatClient;

/// No ticket for this long: ask WeChat to resume pushes.
pub const TICKET_STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// At most one `api_start_push_ticket` per platform this often.
pub const START_PUSH_GAP: Duration = Duration::from_secs(10 * 60);
/// Even with nothing due, look again this often.
const IDLE_WAKE: Duration = Duration::from_secs(300);
/// A store call failed: try again after this (the lease itself self-fences if it persists).
const STORE_RETRY: Duration = Duration::from_secs(1);

pub struct RefresherDeps {
    pub platforms: Vec<PlatformConfig>,
    pub store: SharedStore,
    pub view: Arc<CredentialView>,
    pub client: WeChatClient,
    pub metrics: Arc<Metrics>,
    pub refresh_margin: Duration,
    pub pre_auth_margin: Duration,
    pub pre_auth_pool: usize,
    /// In-process wake-up (the token API on this replica drained the pool, ...).
    pub wake: Arc<Notify>,
}

/// Runs refreshers for every term this replica holds, until `shutdown`. A call in flight when
/// the term ends finishes (bounded by the client's timeout) and its fenced write is attempted.
pub fn spawn(
    deps: Arc<RefresherDeps>,
    mut leadership: watch::Receiver<Leadership>,
    hub: &NoticeHub,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let hub = hub.clone();
    tokio::spawn(async move {
        loop {
            let term = loop {
                if let Some(t) = leadership.borrow_and_update().acting_term(Instant::now()) {
                    break t.clone();
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = leadership.changed() => if changed.is_err() { return },
                }
            };
            let tasks: Vec<_> = deps
                .platforms
                .iter()
                .map(|p| {
                    let lead = PlatformLeader::new(
                        deps.clone(),
                        p.clone(),
                        term.clone(),
                        leadership.clone(),
                    );
                    let span =
                        tracing::info_span!("refresh", platform = %p.appid, epoch = term.id.epoch);
                    tokio::spawn(lead.run(hub.listen()).instrument(span))
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
            // Wait for this term to be over before looking for the next one.
            term.token.cancelled().await;
            if shutdown.is_cancelled() {
                return;
            }
        }
    })
}
