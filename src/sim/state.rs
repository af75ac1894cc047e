//! WeChat's bookkeeping, without HTTP: which tokens, tickets and pre-auth codes exist, when
//! each stops being valid, and the counters about the callers.
//!
//! Every method takes `now` (a `tokio::time::Instant`), so tests drive time by hand. The one
//! impurity is the random generator behind token, code and ticket values.
//!
//! Validity rules, as WeChat applies them (PROTOCOL.md):
//! - a token lives `token_ttl`; issuing a newer one for the same platform cuts every older one
//!   to `min(its end, now + grace)`; a revoke ends every token of the platform at once;
//! - a ticket is accepted while younger than `ticket_ttl`, older tickets included;
//! - a pre-auth code lives `preauth_ttl` and can be used once.
//!
//! Records whose validity ended more than [`RETENTION`] ago are dropped, so a long staging run
//! stays small; a token that old is then answered as unknown (40001) rather than expired.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::stats::{CallCounts, Counters, PlatformStats, SimStats, TicketInfo};
use super::wire::{StartPushRequest, TokenRequest, WxError};

/// How long a dead record is kept to answer "expired" instead of "unknown".
pub(super) const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// The token quota resets every 24 h counted from the simulator's start (WeChat resets at
/// midnight Beijing time; a rolling day keeps paused-time tests free of the wall clock).
const QUOTA_DAY: Duration = Duration::from_secs(24 * 3600);

/// Lifetimes and limits, from `SimOptions`.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub token_ttl: Duration,
    pub preauth_ttl: Duration,
    pub grace: Duration,
    pub ticket_ttl: Duration,
    pub token_quota: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    ComponentToken,
    CreatePreauthcode,
    StartPushTicket,
}

/// Why a token stopped (or will stop) being valid; decides 42001 versus 40001.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Expiry,
    Superseded,
    Revoked,
}

#[derive(Debug)]
struct TokenRecord {
    valid_until: Instant,
    end: End,
}

impl TokenRecord {
    fn is_valid(&self, now: Instant) -> bool {
        now < self.valid_until
    }

    fn check(&self, now: Instant) -> Result<(), WxError> {
        match self.end {
            _ if self.is_valid(now) => Ok(()),
            End::Expiry => Err(WxError::TokenExpired),
            End::Superseded | End::Revoked => Err(WxError::InvalidToken),
        }
    }

    fn cut(&mut self, at: Instant, why: End) {
        if at < self.valid_until {
            self.valid_until = at;
            self.end = why;
        }
    }
}

#[derive(Debug)]
struct Ticket {
    value: String,
    create_time: u64,
    issued_at: Instant,
}

#[derive(Debug)]
struct CodeRecord {
    appid: String,
    expires_at: Instant,
    used: bool,
}

#[derive(Debug)]
struct Platform {
    secret: String,
    counters: Counters,
    tokens: HashMap<String, TokenRecord>,
    newest_token: Option<String>,
    last_issue: Option<Instant>,
    issue_intervals_ms: Vec<u64>,
    /// Oldest first.
    tickets: Vec<Ticket>,
    token_calls_in_flight: u64,
    quota_day: u64,
    quota_used: u32,
}

impl Platform {
    fn new(secret: String) -> Self {
        Self {
            secret,
            counters: Counters::default(),
            tokens: HashMap::new(),
            newest_token: None,
            last_issue: None,
            issue_intervals_ms: Vec::new(),
            tickets: Vec::new(),
            token_calls_in_flight: 0,
            quota_day: 0,
            quota_used: 0,
        }
    }
}

#[derive(Debug)]
pub(super) struct State {
    settings: Settings,
    started: Instant,
    platforms: BTreeMap<String, Platform>,
    totals: Counters,
    codes: HashMap<String, CodeRecord>,
}

impl State {
    /// `platforms`: (component appid, appsecret) pairs.
    pub fn new(
        settings: Settings,
        platforms: impl IntoIterator<Item = (String, String)>,
        now: Instant,
    ) -> Self {
        Self {
            settings,
            started: now,
            platforms: platforms
                .into_iter()
                .map(|(appid, secret)| (appid, Platform::new(secret)))
                .collect(),
            totals: Counters::default(),
            codes: HashMap::new(),
        }
    }

    /// The platform's name as configured, if `appid` is one (so nothing unchecked becomes a key).
    pub fn known<'a>(&self, appid: Option<&'a str>) -> Option<&'a str> {
        appid.filter(|a| self.platforms.contains_key(*a))
    }

    /// Applies `f` to the totals and, when the appid is configured, to that platform.
    fn count(&mut self, appid: Option<&str>, f: impl Fn(&mut Counters)) {
        f(&mut self.totals);
        if let Some(p) = appid.and_then(|a| self.platforms.get_mut(a)) {
            f(&mut p.counters);
        }
    }

    pub fn count_call(&mut self, endpoint: Endpoint, appid: Option<&str>) {
        self.count(appid, |c| {
            let calls: &mut CallCounts = &mut c.calls;
            match endpoint {
                Endpoint::ComponentToken => calls.api_component_token += 1,
                Endpoint::CreatePreauthcode => calls.api_create_preauthcode += 1,
                Endpoint::StartPushTicket => calls.api_start_push_ticket += 1,
            }
        });
    }

    pub fn count_injected(&mut self, appid: Option<&str>) {
        self.count(appid, |c| c.errors_injected += 1);
    }

    /// A token call for `appid` arrived: opens its in-flight window and judges whether it
    /// overlaps another or comes early. Returns false (and opens nothing) for an unknown appid.
    /// Every `true` must be paired with [`State::end_token_call`].
    pub fn begin_token_call(&mut self, appid: &str, now: Instant) -> bool {
        let Some(p) = self.platforms.get_mut(appid) else {
            return false;
        };
        let overlapping = p.token_calls_in_flight > 0;
        p.token_calls_in_flight += 1;
        let half_life = self.settings.token_ttl / 2;
        let early = p
            .newest_token
            .as_ref()
            .and_then(|t| p.tokens.get(t))
            .is_some_and(|t| t.valid_until.saturating_duration_since(now) > half_life);
        self.count(Some(appid), |c| {
            c.overlapping_token_calls += u64::from(overlapping);
            c.early_token_calls += u64::from(early);
        });
        true
    }

    pub fn end_token_call(&mut self, appid: &str) {
        if let Some(p) = self.platforms.get_mut(appid) {
            p.token_calls_in_flight = p.token_calls_in_flight.saturating_sub(1);
        }
    }

    /// `api_component_token`: checks appid, secret, ticket and quota, in that order, then
    /// issues a token and cuts the older ones to the grace period.
    pub fn issue_token(
        &mut self,
        req: &TokenRequest,
        now: Instant,
    ) -> Result<(String, Duration), WxError> {
        let appid = self
            .known(non_empty(&req.component_appid))
            .ok_or(WxError::InvalidAppid)?
            .to_owned();
        let settings = self.settings.clone();
        let p = self.platforms.get_mut(&appid).expect("known platform");
        match non_empty(&req.component_appsecret) {
            None => return Err(WxError::AppsecretMissing),
            Some(secret) if secret != p.secret => return Err(WxError::InvalidAppsecret),
            Some(_) => {}
        }
        let ticket_ok = non_empty(&req.component_verify_ticket).is_some_and(|given| {
            p.tickets
                .iter()
                .any(|t| t.value == given && now < t.issued_at + settings.ticket_ttl)
        });
        if !ticket_ok {
            self.count(Some(&appid), |c| c.invalid_ticket_calls += 1);
            return Err(WxError::InvalidTicket);
        }
        let day = now.saturating_duration_since(self.started).as_secs() / QUOTA_DAY.as_secs();
        if day != p.quota_day {
            p.quota_day = day;
            p.quota_used = 0;
        }
        if p.quota_used >= settings.token_quota {
            return Err(WxError::QuotaReached);
        }
        p.quota_used += 1;

        for older in p.tokens.values_mut() {
            older.cut(now + settings.grace, End::Superseded);
        }
        let token = format!("89_{}", random_chars(130));
        p.tokens.insert(
            token.clone(),
            TokenRecord {
                valid_until: now + settings.token_ttl,
                end: End::Expiry,
            },
        );
        p.newest_token = Some(token.clone());
        if let Some(last) = p.last_issue.replace(now) {
            p.issue_intervals_ms
                .push(saturating_ms(now.saturating_duration_since(last)));
        }
        self.count(Some(&appid), |c| c.tokens_issued += 1);
        self.prune(now);
        Ok((token, settings.token_ttl))
    }

    /// Finds a token in any platform: (its platform, its validity).
    fn lookup_token(&self, token: &str, now: Instant) -> Option<(&str, Result<(), WxError>)> {
        self.platforms.iter().find_map(|(appid, p)| {
            p.tokens
                .get(token)
                .map(|record| (appid.as_str(), record.check(now)))
        })
    }

    /// Checks the `component_access_token` of an API call; returns the platform it belongs to.
    /// A rejected token counts as an invalid-token call (of its platform, else of `appid`).
    pub fn check_token(
        &mut self,
        token: Option<&str>,
        appid: Option<&str>,
        now: Instant,
    ) -> Result<String, WxError> {
        let verdict = match token.filter(|t| !t.is_empty()) {
            None => Err((None, WxError::TokenMissing)),
            Some(t) => match self.lookup_token(t, now) {
                None => Err((None, WxError::InvalidToken)),
                Some((owner, Ok(()))) => Ok(owner.to_owned()),
                Some((owner, Err(e))) => Err((Some(owner.to_owned()), e)),
            },
        };
        verdict.map_err(|(owner, e)| {
            let who = owner.or_else(|| self.known(appid).map(str::to_owned));
            self.count(who.as_deref(), |c| c.invalid_token_calls += 1);
            e
        })
    }

    /// `api_create_preauthcode`, after its token was checked and found to belong to `owner`.
    pub fn issue_pre_auth_code(
        &mut self,
        owner: &str,
        appid: Option<&str>,
        now: Instant,
    ) -> Result<(String, Duration), WxError> {
        if appid != Some(owner) {
            return Err(WxError::InvalidAppid);
        }
        let code = format!("preauthcode@@@{}", random_chars(70));
        let ttl = self.settings.preauth_ttl;
        self.codes.insert(
            code.clone(),
            CodeRecord {
                appid: owner.to_owned(),
                expires_at: now + ttl,
                used: false,
            },
        );
        self.count(Some(owner), |c| c.pre_auth_codes_issued += 1);
        Ok((code, ttl))
    }

    /// `api_start_push_ticket`: checks appid and secret; returns the platform to push to.
    pub fn check_start_push(&self, req: &StartPushRequest) -> Result<String, WxError> {
        let appid = self
            .known(non_empty(&req.component_appid))
            .ok_or(WxError::InvalidAppid)?;
        match non_empty(&req.component_secret) {
            None => Err(WxError::AppsecretMissing),
            Some(s) if s != self.platforms[appid].secret => Err(WxError::InvalidAppsecret),
            Some(_) => Ok(appid.to_owned()),
        }
    }

    /// Creates a new ticket for a push. `create_time` is the push's wall-clock `CreateTime`.
    pub fn new_ticket(&mut self, appid: &str, create_time: u64, now: Instant) -> Option<String> {
        let p = self.platforms.get_mut(appid)?;
        let value = format!("ticket@@@{}", random_chars(86));
        p.tickets.push(Ticket {
            value: value.clone(),
            create_time,
            issued_at: now,
        });
        self.prune(now);
        Some(value)
    }

    pub fn count_push(&mut self, appid: &str, delivered: bool) {
        self.count(Some(appid), |c| {
            c.pushes_sent += 1;
            c.pushes_failed += u64::from(!delivered);
        });
    }

    /// Ends every token of the platform now. Returns how many were still valid, or None for an
    /// unknown platform.
    pub fn revoke(&mut self, appid: &str, now: Instant) -> Option<usize> {
        let p = self.platforms.get_mut(appid)?;
        let mut ended = 0;
        for t in p.tokens.values_mut().filter(|t| t.is_valid(now)) {
            t.cut(now, End::Revoked);
            ended += 1;
        }
        Some(ended)
    }

    pub fn token_is_valid(&self, token: &str, now: Instant) -> bool {
        matches!(self.lookup_token(token, now), Some((_, Ok(()))))
    }

    /// Uses a pre-auth code, as the authorization page does: true if it was issued, unexpired
    /// and never used. Any later use of the same code is false and counts as a code used twice.
    pub fn use_pre_auth_code(&mut self, code: &str, now: Instant) -> bool {
        let Some(record) = self.codes.get_mut(code) else {
            return false;
        };
        let first_use = !std::mem::replace(&mut record.used, true);
        let valid = first_use && now < record.expires_at;
        if !first_use {
            let appid = record.appid.clone();
            self.count(Some(&appid), |c| c.codes_used_twice += 1);
        }
        valid
    }

    pub fn stats(&self, now: Instant) -> SimStats {
        let platforms = self
            .platforms
            .iter()
            .map(|(appid, p)| {
                let latest_ticket = p.tickets.last().map(|t| TicketInfo {
                    ticket: t.value.clone(),
                    create_time: t.create_time,
                });
                let stats = PlatformStats {
                    counters: p.counters.clone(),
                    token_issue_intervals_ms: p.issue_intervals_ms.clone(),
                    token_calls_in_flight: p.token_calls_in_flight,
                    valid_tokens: p.tokens.values().filter(|t| t.is_valid(now)).count() as u64,
                    latest_ticket,
                };
                (appid.clone(), stats)
            })
            .collect();
        SimStats {
            totals: self.totals.clone(),
            platforms,
        }
    }

    /// Drops records dead for longer than [`RETENTION`], and tickets past their lifetime (a
    /// ticket gets the same 61006 whether unknown or too old). The newest ticket is kept for
    /// the stats.
    fn prune(&mut self, now: Instant) {
        let ticket_ttl = self.settings.ticket_ttl;
        for p in self.platforms.values_mut() {
            p.tokens.retain(|_, t| now < t.valid_until + RETENTION);
            let keep_from = p.tickets.len().saturating_sub(1);
            let mut i = 0;
            p.tickets.retain(|t| {
                i += 1;
                i > keep_from || now < t.issued_at + ticket_ttl
            });
        }
        self.codes.retain(|_, c| now < c.expires_at + RETENTION);
    }
}

fn non_empty(field: &Option<String>) -> Option<&str> {
    field.as_deref().filter(|s| !s.is_empty())
}

fn saturating_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Characters WeChat uses in tokens and codes: URL-safe, so they survive any query string.
const URL_SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn random_chars(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| URL_SAFE[rng.gen_range(0..URL_SAFE.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests;
