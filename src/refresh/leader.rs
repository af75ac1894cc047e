//! One platform's refresher inside one lease term: the token step, the pre-auth pool step and
//! the push-liveness step, run in a loop that sleeps until the schedule or a notice says so.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use super::schedule::{backoff, next_wake, pre_auth_margin, retry_delay};
use super::wechat::{ErrorClass, WeChatError};
use super::{RefresherDeps, IDLE_WAKE, START_PUSH_GAP, STORE_RETRY, TICKET_STALE_AFTER};
use crate::config::PlatformConfig;
use crate::lease::{Leadership, Term};
use crate::notices::HubEvent;
use crate::store::{
    ClaimOutcome, CredentialKind, CredentialRecord, Notice, PreAuthMeta, StartPush, TicketRecord,
    WriteOutcome,
};

/// Why a step stopped the platform's leader.
struct Stop;

pub(super) struct PlatformLeader {
    d: Arc<RefresherDeps>,
    p: PlatformConfig,
    term: Term,
    leadership: watch::Receiver<Leadership>,
    token_failures: u32,
    token_retry_at: Option<Instant>,
    /// Set after 61005/61006 with the current ticket: the next try uses the previous one.
    try_previous_ticket: bool,
    /// Both tickets failed: wait for a new push.
    waiting_for_ticket: bool,
    pool_failures: u32,
    pool_retry_at: Option<Instant>,
    started_ms: i64,
}

impl PlatformLeader {
    pub(super) fn new(
        d: Arc<RefresherDeps>,
        p: PlatformConfig,
        term: Term,
        leadership: watch::Receiver<Leadership>,
    ) -> Self {
        let started_ms = d.view.store_now_ms();
        Self {
            d,
            p,
            term,
            leadership,
            token_failures: 0,
            token_retry_at: None,
            try_previous_ticket: false,
            waiting_for_ticket: false,
            pool_failures: 0,
            pool_retry_at: None,
            started_ms,
        }
    }

    /// True while this term may act: not cancelled, validity not run out (checked against the
    /// elector's latest renew, not the copy taken at the start of the term).
    fn may_act(&self) -> bool {
        let now = Instant::now();
        match &*self.leadership.borrow() {
            Leadership::Leader(t) if t.id == self.term.id => {
                t.valid_until > now && !t.token.is_cancelled()
            }
            _ => false,
        }
    }

    pub(super) async fn run(mut self, mut events: broadcast::Receiver<HubEvent>) {
        let stop = self.term.token.clone();
        loop {
            if !self.may_act() {
                return;
            }
            let Ok(wait) = self.step().await else { return };
            let deadline = Instant::now() + wait;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = self.d.wake.notified() => { self.token_retry_at = None; self.pool_retry_at = None; break }
                    ev = events.recv() => if self.on_event(ev) { break },
                }
            }
        }
    }

    /// Whether an event concerns this platform (and resets the waits it ends).
    fn on_event(&mut self, ev: Result<HubEvent, broadcast::error::RecvError>) -> bool {
        let mine = |p: &String| *p == self.p.appid;
        match ev {
            Ok(HubEvent::Notice(Notice::Ticket(p))) if mine(&p) => {
                self.waiting_for_ticket = false;
                self.try_previous_ticket = false;
                self.token_retry_at = None;
                true
            }
            Ok(HubEvent::Notice(Notice::Invalidated(p))) if mine(&p) => {
                self.token_retry_at = None;
                true
            }
            Ok(HubEvent::Notice(Notice::PreAuthTaken(p))) if mine(&p) => true,
            Ok(HubEvent::Resubscribed) | Err(broadcast::error::RecvError::Lagged(_)) => true,
            Ok(_) => false,
            Err(broadcast::error::RecvError::Closed) => false,
        }
    }

    /// One pass over everything this platform needs; returns how long to sleep.
    async fn step(&mut self) -> Result<Duration, Stop> {
        let token_wait = self.refresh_token().await?;
        let pool_wait = self.refill_pool().await?;
        let push_wait = self.check_pushes().await?;
        Ok(next_wake(&[token_wait, pool_wait, push_wait], IDLE_WAKE))
    }

    fn now_ms(&self) -> i64 {
        self.d.view.store_now_ms()
    }

    fn until_ms(&self, at_ms: i64) -> Duration {
        Duration::from_millis((at_ms - self.now_ms()).max(0) as u64)
    }

    fn count(&self, kind: CredentialKind, outcome: &str) {
        self.d
            .metrics
            .refresh
            .with_label_values(&[&self.p.appid, kind.as_str(), outcome])
            .inc();
    }

    fn fenced(&self, kind: CredentialKind) -> Stop {
        warn!(
            credential = kind.as_str(),
            "write fenced: this replica no longer holds the lease"
        );
        self.count(kind, "fenced");
        self.d.metrics.fenced_writes_rejected.inc();
        Stop
    }

    /// Counts a stored credential and observes the interval since the previous one.
    fn succeeded(&self, kind: CredentialKind, record: &CredentialRecord, previous_ms: Option<i64>) {
        self.count(kind, "success");
        self.observe_interval(kind, record.obtained_at_ms, previous_ms);
    }

    fn observe_interval(&self, kind: CredentialKind, obtained_ms: i64, previous_ms: Option<i64>) {
        if let Some(prev) = previous_ms {
            let secs = (obtained_ms - prev) as f64 / 1000.0;
            let labels = [self.p.appid.as_str(), kind.as_str()];
            self.d
                .metrics
                .refresh_interval
                .with_label_values(&labels)
                .observe(secs);
            self.d
                .metrics
                .refresh_last_interval
                .with_label_values(&labels)
                .set(secs);
        }
    }

    /// The stored ticket; if the store lost it, the one this replica remembers, written back.
    async fn ticket(&self) -> Result<Option<TicketRecord>, ()> {
        match self.d.store.get_ticket(&self.p.appid).await {
            Ok(Some(t)) => Ok(Some(t)),
            Ok(None) => {
                let remembered = self.d.view.get(&self.p.appid).and_then(|v| v.ticket);
                if let Some(t) = &remembered {
                    if let Ok(true) = self.d.store.restore_ticket(&self.p.appid, t).await {
                        info!("store had lost the ticket; written back from memory");
                    }
                }
                Ok(remembered)
            }
            Err(e) => {
                warn!(error = %e, "cannot read the ticket");
                Err(())
            }
        }
    }

    async fn refresh_token(&mut self) -> Result<Option<Duration>, Stop> {
        if let Some(at) = self.token_retry_at {
            if Instant::now() < at {
                return Ok(Some(at - Instant::now()));
            }
        }
        if self.waiting_for_ticket {
            return Ok(None);
        }
        // Lock-delay: a predecessor that did not release may still have a token call in
        // flight. Pre-auth codes and push nudges supersede nothing, so only this step waits.
        let now = Instant::now();
        if now < self.term.act_after {
            return Ok(Some(self.term.act_after - now));
        }
        let Ok(ticket) = self.ticket().await else {
            return Ok(Some(STORE_RETRY));
        };
        let remembered = self.d.view.get(&self.p.appid).and_then(|v| v.token);
        let margin_ms = self.d.refresh_margin.as_millis() as i64;
        let claim = self
            .d
            .store
            .claim_token(&self.term.id, &self.p.appid, margin_ms, remembered.as_ref())
            .await;
        let (claim_ms, forced) = match claim {
            Ok(ClaimOutcome::Granted { claim_ms, forced }) => (claim_ms, forced),
            Ok(ClaimOutcome::NotDue { due_at_ms }) => return Ok(Some(self.until_ms(due_at_ms))),
            Ok(ClaimOutcome::NotLeader) => {
                warn!("claim refused: the lease no longer names this term");
                return Err(Stop);
            }
            Err(e) => {
                warn!(error = %e, "claim failed");
                return Ok(Some(STORE_RETRY));
            }
        };
        let ticket_value = match (&ticket, self.try_previous_ticket) {
            (Some(t), false) => t.ticket.clone(),
            (
                Some(TicketRecord {
                    previous: Some(prev),
                    ..
                }),
                true,
            ) => prev.clone(),
            _ => {
                info!("token due but no usable ticket yet; waiting for a push");
                self.waiting_for_ticket = true;
                return Ok(None);
            }
        };
        if !self.may_act() {
            return Err(Stop);
        }
        let secret = self.p.appsecret.expose_secret();
        let result = self
            .d
            .client
            .component_token(&self.p.appid, secret, &ticket_value)
            .await;
        let kind = CredentialKind::ComponentAccessToken;
        match result {
            Ok(issued) => {
                let written = self
                    .d
                    .store
                    .write_token(
                        &self.term.id,
                        &self.p.appid,
                        claim_ms,
                        &issued.value,
                        issued.expires_in_s,
                    )
                    .await;
                match written {
                    Ok(WriteOutcome::Written {
                        record,
                        previous_obtained_ms,
                    }) => {
                        self.succeeded(kind, &record, previous_obtained_ms);
                        info!(
                            token = %crate::redact::fingerprint(&record.value),
                            expires_in_s = issued.expires_in_s,
                            interval_s = previous_obtained_ms.map(|p| (record.obtained_at_ms - p) / 1000),
                            forced,
                            "component_access_token refreshed"
                        );
                        self.d
                            .view
                            .merge(&self.p.appid, Some(record), None, None, None);
                        self.token_failures = 0;
                        self.try_previous_ticket = false;
                        // Look again at once: the claim now reports when the next refresh is due.
                        Ok(Some(Duration::ZERO))
                    }
                    Ok(WriteOutcome::Fenced) => Err(self.fenced(kind)),
                    Err(e) => {
                        // The token WeChat issued may be lost; the stored one stays due and the
                        // next claim tries again.
                        warn!(error = %e, "could not store the new token");
                        self.count(kind, "error");
                        Ok(Some(STORE_RETRY))
                    }
                }
            }
            Err(e) => {
                self.count(kind, "error");
                Ok(Some(self.token_failed(
                    &e,
                    remembered.as_ref().map(|r| r.expires_at_ms),
                )))
            }
        }
    }

    fn token_failed(&mut self, e: &WeChatError, expires_at_ms: Option<i64>) -> Duration {
        let class = e.class();
        warn!(error = %e, ?class, "component_access_token refresh failed");
        if class == ErrorClass::TicketInvalid {
            if !self.try_previous_ticket {
                self.try_previous_ticket = true;
                return Duration::ZERO;
            }
            self.try_previous_ticket = false;
            self.waiting_for_ticket = true;
        }
        let time_left = expires_at_ms
            .map(|exp| self.until_ms(exp))
            .filter(|d| !d.is_zero());
        let delay = retry_delay(
            backoff(class, self.token_failures, rand::random()),
            time_left,
        );
        self.token_failures = self.token_failures.saturating_add(1);
        self.token_retry_at = Some(Instant::now() + delay);
        delay
    }

    async fn refill_pool(&mut self) -> Result<Option<Duration>, Stop> {
        if self.d.pre_auth_pool == 0 {
            return Ok(None);
        }
        if let Some(at) = self.pool_retry_at {
            if Instant::now() < at {
                return Ok(Some(at - Instant::now()));
            }
        }
        let Some(token) = self.d.view.valid_token(&self.p.appid) else {
            return Ok(None);
        };
        let latest = self.d.view.get(&self.p.appid).and_then(|v| v.pre_auth);
        let margin = pre_auth_margin(self.d.pre_auth_margin, latest.as_ref());
        let margin_ms = margin.as_millis() as i64;
        let pool = match self.d.store.pre_auth_ready(&self.p.appid, margin_ms).await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "cannot read the pre-auth pool");
                return Ok(Some(STORE_RETRY));
            }
        };
        let mut ready = pool.ready as usize;
        let mut earliest = pool.earliest_expiry_ms;
        let kind = CredentialKind::PreAuthCode;
        while ready < self.d.pre_auth_pool {
            if !self.may_act() {
                return Err(Stop);
            }
            let Ok(requested_at) = self.d.store.now_ms().await else {
                return Ok(Some(STORE_RETRY));
            };
            match self
                .d
                .client
                .create_preauthcode(&self.p.appid, &token.value)
                .await
            {
                Ok(issued) => {
                    let written = self
                        .d
                        .store
                        .push_pre_auth(
                            &self.term.id,
                            &self.p.appid,
                            requested_at,
                            &issued.value,
                            issued.expires_in_s,
                        )
                        .await;
                    match written {
                        Ok(WriteOutcome::Written {
                            record,
                            previous_obtained_ms,
                        }) => {
                            self.succeeded(kind, &record, previous_obtained_ms);
                            let meta = PreAuthMeta::from(&record);
                            ready += 1;
                            earliest = Some(
                                earliest
                                    .map_or(record.expires_at_ms, |e| e.min(record.expires_at_ms)),
                            );
                            self.d.view.merge(
                                &self.p.appid,
                                None,
                                None,
                                Some(meta),
                                Some(ready as u32),
                            );
                            self.pool_failures = 0;
                            info!(
                                expires_in_s = issued.expires_in_s,
                                ready, "pre-auth code added to the pool"
                            );
                        }
                        Ok(WriteOutcome::Fenced) => return Err(self.fenced(kind)),
                        Err(e) => {
                            warn!(error = %e, "could not store a pre-auth code");
                            self.count(kind, "error");
                            return Ok(Some(STORE_RETRY));
                        }
                    }
                }
                Err(e) => {
                    self.count(kind, "error");
                    let class = e.class();
                    warn!(error = %e, ?class, "pre-auth code request failed");
                    if class == ErrorClass::TokenInvalid {
                        // The token was superseded: report it, which makes the claim forced.
                        if let Ok(true) = self
                            .d
                            .store
                            .report_invalid(&self.p.appid, &token.value)
                            .await
                        {
                            self.token_retry_at = None;
                        }
                    }
                    let delay = backoff(class, self.pool_failures, rand::random());
                    self.pool_failures = self.pool_failures.saturating_add(1);
                    self.pool_retry_at = Some(Instant::now() + delay);
                    return Ok(Some(if class == ErrorClass::TokenInvalid {
                        Duration::ZERO
                    } else {
                        delay
                    }));
                }
            }
        }
        self.d
            .metrics
            .pre_auth_ready
            .with_label_values(&[&self.p.appid])
            .set(ready as i64);
        // Refill when the earliest code becomes too old to hand out.
        Ok(earliest.map(|e| self.until_ms(e - margin_ms)))
    }

    async fn check_pushes(&mut self) -> Result<Option<Duration>, Stop> {
        let last_ms = self
            .d
            .view
            .get(&self.p.appid)
            .and_then(|v| v.ticket)
            .map_or(self.started_ms, |t| t.received_at_ms);
        let stale_at = last_ms + TICKET_STALE_AFTER.as_millis() as i64;
        if self.now_ms() < stale_at {
            return Ok(Some(self.until_ms(stale_at)));
        }
        match self
            .d
            .store
            .start_push_due(
                &self.term.id,
                &self.p.appid,
                START_PUSH_GAP.as_millis() as i64,
            )
            .await
        {
            Ok(StartPush::Recorded) => {
                if !self.may_act() {
                    return Err(Stop);
                }
                let secret = self.p.appsecret.expose_secret();
                let outcome = match self.d.client.start_push_ticket(&self.p.appid, secret).await {
                    Ok(()) => {
                        info!("no ticket for 30 minutes: asked WeChat to resume pushes");
                        "success"
                    }
                    Err(e) => {
                        warn!(error = %e, "api_start_push_ticket failed");
                        "error"
                    }
                };
                self.d
                    .metrics
                    .start_push_ticket
                    .with_label_values(&[&self.p.appid, outcome])
                    .inc();
                Ok(Some(START_PUSH_GAP))
            }
            // Woken early (by a refill, say): come back when the next ask is allowed, not a
            // whole gap from now, so asks stay 10 minutes apart.
            Ok(StartPush::WaitMs(ms)) => Ok(Some(Duration::from_millis(ms.max(1) as u64))),
            Ok(StartPush::NotLeader) => Ok(Some(START_PUSH_GAP)),
            Err(_) => Ok(Some(STORE_RETRY)),
        }
    }
}
