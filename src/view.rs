//! Every replica's in-memory copy of the stored credentials, so reads cost no Redis round trip
//! and survive a Redis outage while the copy is unexpired.
//!
//! Kept current by store notices (a write is visible within milliseconds), a full reload after
//! every (re)subscription (notices sent while disconnected are lost), and a slow safety poll.
//! A store that comes back empty never erases what this copy knows: the copy keeps serving
//! until its own expiry, and the leader writes it back. The copy also exports the credential
//! gauges, so every replica reports the same expiries.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::clock::{UnixMillis, WallClock};
use crate::metrics::Metrics;
use crate::notices::{HubEvent, NoticeHub};
use crate::store::{
    CredentialKind, CredentialRecord, Notice, PreAuthMeta, SharedStore, StoreResult, TicketRecord,
};

#[derive(Debug, Clone, Default)]
pub struct PlatformView {
    pub token: Option<CredentialRecord>,
    pub ticket: Option<TicketRecord>,
    pub pre_auth: Option<PreAuthMeta>,
    pub pre_auth_ready: u32,
}

const RELOAD_RETRY_FIRST: Duration = Duration::from_millis(50);
const RELOAD_RETRY_MAX: Duration = Duration::from_secs(2);

pub struct CredentialView {
    platforms: Vec<String>,
    inner: RwLock<HashMap<String, PlatformView>>,
    /// Store clock minus local clock, from the last reload (Redis `TIME` is the reference).
    offset_ms: RwLock<i64>,
    store: SharedStore,
    metrics: Arc<Metrics>,
    clock: WallClock,
    pre_auth_margin: Duration,
    /// Bumped whenever a token enters the copy, for [`CredentialView::token_or_restored`].
    token_changed: watch::Sender<()>,
    /// Until then a token the store lost may still be written back by another replica (see
    /// [`CredentialView::expect_restore_until`]).
    restore_until: RwLock<Option<tokio::time::Instant>>,
}

impl CredentialView {
    pub fn new(
        platforms: Vec<String>,
        store: SharedStore,
        metrics: Arc<Metrics>,
        clock: WallClock,
        pre_auth_margin: Duration,
    ) -> Self {
        let inner = platforms
            .iter()
            .map(|p| (p.clone(), PlatformView::default()))
            .collect();
        Self {
            platforms,
            inner: RwLock::new(inner),
            offset_ms: RwLock::new(0),
            store,
            metrics,
            clock,
            pre_auth_margin,
            token_changed: watch::Sender::new(()),
            restore_until: RwLock::new(None),
        }
    }

    /// Now on the store's clock, estimated locally (no round trip).
    pub fn store_now_ms(&self) -> UnixMillis {
        self.clock.now_ms() + *self.offset_ms.read().expect("offset lock")
    }

    pub fn platforms(&self) -> &[String] {
        &self.platforms
    }

    pub fn get(&self, platform: &str) -> Option<PlatformView> {
        self.inner.read().expect("view lock").get(platform).cloned()
    }

    /// The current token if it has not expired.
    pub fn valid_token(&self, platform: &str) -> Option<CredentialRecord> {
        let now = self.store_now_ms();
        self.get(platform)?.token.filter(|t| t.expires_at_ms > now)
    }

    /// Whether every platform holds an unexpired token.
    pub fn has_every_token(&self) -> bool {
        self.platforms.iter().all(|p| self.valid_token(p).is_some())
    }

    /// Until `until`, a token read that finds nothing waits for a token instead of answering
    /// at once: another replica may still write back a token the store lost.
    pub fn expect_restore_until(&self, until: tokio::time::Instant) {
        *self.restore_until.write().expect("restore lock") = Some(until);
    }

    /// The current token; or, inside the window of [`CredentialView::expect_restore_until`],
    /// the first one that arrives before the window closes.
    pub async fn token_or_restored(&self, platform: &str) -> Option<CredentialRecord> {
        if let Some(t) = self.valid_token(platform) {
            return Some(t);
        }
        let until = (*self.restore_until.read().expect("restore lock"))?;
        let mut changes = self.token_changed.subscribe();
        tokio::time::timeout_at(until, async {
            loop {
                if let Some(t) = self.valid_token(platform) {
                    return t;
                }
                // The sender lives in `self`, so this never fails while we wait.
                let _ = changes.changed().await;
            }
        })
        .await
        .ok()
    }

    /// Reloads every platform and re-estimates the clock offset.
    pub async fn reload_all(&self) -> StoreResult<()> {
        let before = self.clock.now_ms();
        let store_now = self.store.now_ms().await?;
        let after = self.clock.now_ms();
        *self.offset_ms.write().expect("offset lock") = store_now - (before + after) / 2;
        for p in self.platforms.clone() {
            self.reload(&p).await?;
        }
        Ok(())
    }

    /// Reloads one platform from the store, and writes back what the store lost (a Redis
    /// restarted empty) while this copy still holds it.
    pub async fn reload(&self, platform: &str) -> StoreResult<()> {
        let mut token = self.store.get_token(platform).await?;
        let mut ticket = self.store.get_ticket(platform).await?;
        let known = self.get(platform).unwrap_or_default();
        if ticket.is_none() {
            if let Some(t) = known.ticket {
                if self.store.restore_ticket(platform, &t).await? {
                    info!(
                        platform,
                        "store had lost the ticket; written back from memory"
                    );
                }
                ticket = Some(t);
            }
        }
        if token.is_none() {
            if let Some(t) = known
                .token
                .filter(|t| t.expires_at_ms > self.store_now_ms())
            {
                if self.store.restore_token(platform, &t).await? {
                    info!(
                        platform,
                        "store had lost the token; written back from memory"
                    );
                }
                token = Some(t);
            }
        }
        let pre_auth = self.store.get_pre_auth_meta(platform).await?;
        let known = self.get(platform).and_then(|v| v.pre_auth);
        let margin = crate::refresh::schedule::pre_auth_margin(
            self.pre_auth_margin,
            pre_auth.as_ref().or(known.as_ref()),
        );
        let ready = self
            .store
            .pre_auth_ready(platform, margin.as_millis() as i64)
            .await?
            .ready;
        self.merge(platform, token, ticket, pre_auth, Some(ready));
        Ok(())
    }

    /// Takes what the store said, except that nothing older than what we know replaces it
    /// and nothing is forgotten because the store lost it.
    pub fn merge(
        &self,
        platform: &str,
        token: Option<CredentialRecord>,
        ticket: Option<TicketRecord>,
        pre_auth: Option<PreAuthMeta>,
        ready: Option<u32>,
    ) {
        let mut inner = self.inner.write().expect("view lock");
        let Some(view) = inner.get_mut(platform) else {
            return;
        };
        if let Some(t) = token {
            let newer = view
                .token
                .as_ref()
                .is_none_or(|cur| t.obtained_at_ms >= cur.obtained_at_ms);
            if newer {
                if let Some(prev) = view
                    .token
                    .as_ref()
                    .filter(|cur| cur.obtained_at_ms < t.obtained_at_ms)
                {
                    self.metrics
                        .refresh_last_interval
                        .with_label_values(&[
                            platform,
                            CredentialKind::ComponentAccessToken.as_str(),
                        ])
                        .set((t.obtained_at_ms - prev.obtained_at_ms) as f64 / 1000.0);
                }
                view.token = Some(t);
                self.token_changed.send_replace(());
            }
        }
        if let Some(t) = ticket {
            if view
                .ticket
                .as_ref()
                .is_none_or(|cur| t.create_time >= cur.create_time)
            {
                view.ticket = Some(t);
            }
        }
        if let Some(m) = pre_auth {
            if view
                .pre_auth
                .as_ref()
                .is_none_or(|cur| m.obtained_at_ms >= cur.obtained_at_ms)
            {
                if let Some(prev) = view
                    .pre_auth
                    .as_ref()
                    .filter(|cur| cur.obtained_at_ms < m.obtained_at_ms)
                {
                    self.metrics
                        .refresh_last_interval
                        .with_label_values(&[platform, CredentialKind::PreAuthCode.as_str()])
                        .set((m.obtained_at_ms - prev.obtained_at_ms) as f64 / 1000.0);
                }
                view.pre_auth = Some(m);
            }
        }
        if let Some(n) = ready {
            view.pre_auth_ready = n;
        }
        self.export(platform, view);
    }

    fn export(&self, platform: &str, view: &PlatformView) {
        let m = &self.metrics;
        let secs = |ms: UnixMillis| ms as f64 / 1000.0;
        let tok = CredentialKind::ComponentAccessToken.as_str();
        let pac = CredentialKind::PreAuthCode.as_str();
        if let Some(t) = &view.token {
            m.credential_expiry
                .with_label_values(&[platform, tok])
                .set(secs(t.expires_at_ms));
            m.credential_obtained
                .with_label_values(&[platform, tok])
                .set(secs(t.obtained_at_ms));
        }
        if let Some(p) = &view.pre_auth {
            m.credential_expiry
                .with_label_values(&[platform, pac])
                .set(secs(p.expires_at_ms));
            m.credential_obtained
                .with_label_values(&[platform, pac])
                .set(secs(p.obtained_at_ms));
        }
        if let Some(t) = &view.ticket {
            m.ticket_received
                .with_label_values(&[platform])
                .set(t.create_time as f64);
        }
        m.pre_auth_ready
            .with_label_values(&[platform])
            .set(view.pre_auth_ready as i64);
    }

    /// Keeps the copy current until `shutdown`: notices, reload after resubscribing, and a
    /// safety poll every `poll_every`.
    pub fn spawn_sync(
        self: Arc<Self>,
        hub: &NoticeHub,
        poll_every: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let mut events = hub.listen();
        tokio::spawn(async move {
            let mut poll = tokio::time::interval(poll_every);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // A failed reload is retried soon, not at the next poll: right after Redis comes
            // back (empty, perhaps) the first calls can fail while connections are re-made,
            // and this reload is what writes the lost credentials back.
            let mut retry: Option<(tokio::time::Instant, Duration)> = None;
            loop {
                let retry_at = retry.map(|(at, _)| at);
                let result = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = poll.tick() => self.reload_all().await,
                    _ = async { tokio::time::sleep_until(retry_at.expect("guarded")).await }, if retry_at.is_some() => {
                        self.reload_all().await
                    }
                    ev = events.recv() => match ev {
                        Ok(HubEvent::Notice(Notice::Credential(p, _) | Notice::Ticket(p) | Notice::Invalidated(p))) => {
                            if self.platforms.contains(&p) { self.reload(&p).await } else { Ok(()) }
                        }
                        Ok(HubEvent::Notice(Notice::LeaseReleased | Notice::PreAuthTaken(_))) => Ok(()),
                        Ok(HubEvent::Resubscribed) | Err(broadcast::error::RecvError::Lagged(_)) => self.reload_all().await,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                };
                retry = match result {
                    Ok(()) => None,
                    Err(e) => {
                        debug!(error = %e, "credential view reload failed; serving the copy");
                        let delay = retry
                            .map_or(RELOAD_RETRY_FIRST, |(_, d)| (d * 2).min(RELOAD_RETRY_MAX));
                        Some((tokio::time::Instant::now() + delay, delay))
                    }
                };
            }
        })
    }
}
