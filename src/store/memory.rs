//! The embedded store (`memory://`): the same semantics as Redis for one process.
//!
//! Used by `wxkeeper demo` and single-replica setups. Every operation takes one short
//! `std::sync::Mutex` section (never held across an `.await`), which gives the atomicity the
//! Redis adapter gets from Lua. Time comes from a [`WallClock`], so tests can pause it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use futures::stream::BoxStream;
use tokio::sync::broadcast;

use super::*;
use crate::clock::WallClock;

#[derive(Default)]
struct State {
    tickets: HashMap<String, TicketRecord>,
    tokens: HashMap<String, CredentialRecord>,
    /// platform -> (term, claim time, claim expiry)
    claims: HashMap<String, (LeaseId, UnixMillis, UnixMillis)>,
    /// platform -> the token a consumer reported invalid
    invalid: HashMap<String, String>,
    forced_at: HashMap<String, UnixMillis>,
    pre_auth: HashMap<String, VecDeque<(String, UnixMillis)>>,
    pre_auth_meta: HashMap<String, PreAuthMeta>,
    lease: Option<(LeaseId, UnixMillis)>,
    epoch_counter: u64,
    last_lease: Option<LeaseId>,
    released: Option<LeaseId>,
    start_push_at: HashMap<String, UnixMillis>,
    history: VecDeque<HistoryEvent>,
}

impl State {
    fn live_lease(&mut self, now: UnixMillis) -> Option<&(LeaseId, UnixMillis)> {
        if matches!(&self.lease, Some((_, exp)) if *exp <= now) {
            self.lease = None;
        }
        self.lease.as_ref()
    }

    fn holds(&mut self, lease: &LeaseId, now: UnixMillis) -> bool {
        matches!(self.live_lease(now), Some((id, _)) if id == lease)
    }

    fn drop_stale_codes(&mut self, platform: &str, now: UnixMillis, min_remaining_ms: i64) -> u32 {
        let mut discarded = 0;
        if let Some(pool) = self.pre_auth.get_mut(platform) {
            while matches!(pool.front(), Some((_, exp)) if exp - now < min_remaining_ms) {
                pool.pop_front();
                discarded += 1;
            }
        }
        discarded
    }

    /// Records a successful credential write in the history and says so.
    fn written(
        &mut self,
        platform: &str,
        kind: CredentialKind,
        record: CredentialRecord,
        previous_obtained_ms: Option<UnixMillis>,
    ) -> WriteOutcome {
        self.record_history(history_event(platform, kind, &record, previous_obtained_ms));
        WriteOutcome::Written {
            record,
            previous_obtained_ms,
        }
    }

    fn record_history(&mut self, event: HistoryEvent) {
        self.history.push_back(event);
        while self.history.len() > HISTORY_LEN {
            self.history.pop_front();
        }
    }
}

/// The embedded store. Cheap to share behind an `Arc`.
pub struct MemoryStore {
    clock: WallClock,
    state: Mutex<State>,
    notices: broadcast::Sender<Notice>,
}

impl MemoryStore {
    pub fn new(clock: WallClock) -> Self {
        Self {
            clock,
            state: Mutex::new(State::default()),
            notices: broadcast::channel(1024).0,
        }
    }

    /// Forgets everything, as a Redis restarted without persistence would (tests of
    /// re-seeding), except the epoch counter: the embedded store lives and dies with its
    /// process, so nothing it hands out may ever repeat within it.
    pub fn flush_all(&self) {
        let mut state = self.state.lock().expect("store lock");
        let epoch_counter = state.epoch_counter;
        *state = State {
            epoch_counter,
            ..State::default()
        };
    }

    fn notify(&self, notice: Notice) {
        // No subscriber is fine: notices are hints, the timers are the fallback.
        let _ = self.notices.send(notice);
    }

    /// Announces `notice` if something happened; returns whether it did.
    fn notify_if(&self, happened: bool, notice: Notice) -> bool {
        if happened {
            self.notify(notice);
        }
        happened
    }

    fn notify_written(
        &self,
        outcome: WriteOutcome,
        platform: &str,
        kind: CredentialKind,
    ) -> WriteOutcome {
        if matches!(outcome, WriteOutcome::Written { .. }) {
            self.notify(Notice::Credential(platform.to_owned(), kind));
        }
        outcome
    }

    fn with<T>(&self, f: impl FnOnce(&mut State, UnixMillis) -> T) -> T {
        let now = self.clock.now_ms();
        let mut state = self.state.lock().expect("store lock");
        f(&mut state, now)
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn is_shared_between_processes(&self) -> bool {
        false
    }

    async fn now_ms(&self) -> StoreResult<UnixMillis> {
        Ok(self.clock.now_ms())
    }

    async fn put_ticket(
        &self,
        platform: &str,
        ticket: &str,
        create_time: i64,
    ) -> StoreResult<TicketWrite> {
        let outcome = self.with(|s, now| {
            let previous = match s.tickets.get(platform) {
                Some(cur) if cur.ticket == ticket && cur.create_time == create_time => {
                    return TicketWrite::Duplicate
                }
                Some(cur) if create_time < cur.create_time => return TicketWrite::Stale,
                Some(cur) => Some(cur.ticket.clone()),
                None => None,
            };
            s.tickets.insert(
                platform.to_owned(),
                TicketRecord {
                    ticket: ticket.to_owned(),
                    create_time,
                    received_at_ms: now,
                    previous,
                },
            );
            TicketWrite::Stored
        });
        if outcome == TicketWrite::Stored {
            self.notify(Notice::Ticket(platform.to_owned()));
        }
        Ok(outcome)
    }

    async fn get_ticket(&self, platform: &str) -> StoreResult<Option<TicketRecord>> {
        Ok(self.with(|s, _| s.tickets.get(platform).cloned()))
    }

    async fn get_token(&self, platform: &str) -> StoreResult<Option<CredentialRecord>> {
        Ok(self.with(|s, _| s.tokens.get(platform).cloned()))
    }

    async fn get_pre_auth_meta(&self, platform: &str) -> StoreResult<Option<PreAuthMeta>> {
        Ok(self.with(|s, _| s.pre_auth_meta.get(platform).cloned()))
    }

    async fn pre_auth_ready(
        &self,
        platform: &str,
        min_remaining_ms: i64,
    ) -> StoreResult<PoolState> {
        Ok(self.with(|s, now| {
            s.drop_stale_codes(platform, now, min_remaining_ms);
            let usable: Vec<UnixMillis> = s
                .pre_auth
                .get(platform)
                .map(|pool| {
                    pool.iter()
                        .map(|(_, exp)| *exp)
                        .filter(|exp| exp - now >= min_remaining_ms)
                        .collect()
                })
                .unwrap_or_default();
            PoolState {
                ready: usable.len() as u32,
                earliest_expiry_ms: usable.iter().copied().min(),
            }
        }))
    }

    async fn pop_pre_auth(
        &self,
        platform: &str,
        min_remaining_ms: i64,
    ) -> StoreResult<Option<PreAuthCode>> {
        let taken = self.with(|s, now| {
            let mut discarded = 0;
            let pool = s.pre_auth.get_mut(platform)?;
            while let Some((code, expires_at_ms)) = pool.pop_front() {
                if expires_at_ms - now >= min_remaining_ms {
                    return Some(PreAuthCode {
                        code,
                        expires_at_ms,
                        discarded,
                    });
                }
                discarded += 1;
            }
            None
        });
        if taken.is_some() {
            self.notify(Notice::PreAuthTaken(platform.to_owned()));
        }
        Ok(taken)
    }

    async fn report_invalid(&self, platform: &str, token: &str) -> StoreResult<bool> {
        let marked = self.with(|s, now| {
            let current = s.tokens.get(platform).map(|t| t.value.as_str());
            let recently = s
                .forced_at
                .get(platform)
                .is_some_and(|at| now - at < FORCED_REFRESH_GAP_MS);
            if current != Some(token) || recently {
                return false;
            }
            s.invalid.insert(platform.to_owned(), token.to_owned());
            true
        });
        Ok(self.notify_if(marked, Notice::Invalidated(platform.to_owned())))
    }

    async fn acquire(&self, holder: &str, ttl_ms: u64) -> StoreResult<AcquireOutcome> {
        Ok(self.with(|s, now| {
            if let Some((id, exp)) = s.live_lease(now).cloned() {
                if id.holder == holder {
                    s.lease = Some((id.clone(), now + ttl_ms as i64));
                    return AcquireOutcome::Acquired {
                        epoch: id.epoch,
                        clean_handoff: false,
                    };
                }
                return AcquireOutcome::Held {
                    remaining_ms: exp - now,
                };
            }
            let epoch = (s.epoch_counter + 1).max(now as u64 * 1000);
            s.epoch_counter = epoch;
            let clean_handoff = s.last_lease.is_some() && s.last_lease == s.released;
            let id = LeaseId {
                holder: holder.to_owned(),
                epoch,
            };
            s.lease = Some((id.clone(), now + ttl_ms as i64));
            s.last_lease = Some(id);
            AcquireOutcome::Acquired {
                epoch,
                clean_handoff,
            }
        }))
    }

    async fn renew(&self, lease: &LeaseId, ttl_ms: u64) -> StoreResult<bool> {
        Ok(self.with(|s, now| {
            if !s.holds(lease, now) {
                return false;
            }
            s.lease = Some((lease.clone(), now + ttl_ms as i64));
            true
        }))
    }

    async fn release(&self, lease: &LeaseId) -> StoreResult<bool> {
        let released = self.with(|s, now| {
            if !s.holds(lease, now) {
                return false;
            }
            s.lease = None;
            s.released = Some(lease.clone());
            true
        });
        Ok(self.notify_if(released, Notice::LeaseReleased))
    }

    async fn read_lease(&self) -> StoreResult<Option<LeaseView>> {
        Ok(self.with(|s, now| {
            s.live_lease(now).map(|(id, exp)| LeaseView {
                id: id.clone(),
                remaining_ms: exp - now,
            })
        }))
    }

    async fn claim_token(
        &self,
        lease: &LeaseId,
        platform: &str,
        margin_ms: i64,
        remembered: Option<&CredentialRecord>,
    ) -> StoreResult<ClaimOutcome> {
        let (outcome, reseeded) = self.with(|s, now| {
            if !s.holds(lease, now) {
                return (ClaimOutcome::NotLeader, false);
            }
            let mut reseeded = false;
            if !s.tokens.contains_key(platform) {
                if let Some(mem) = remembered.filter(|m| m.expires_at_ms > now) {
                    s.tokens.insert(platform.to_owned(), mem.clone());
                    reseeded = true;
                }
            }
            let verdict = match s.tokens.get(platform) {
                None => Ok(false),
                Some(tok) if s.invalid.get(platform) == Some(&tok.value) => Ok(true),
                Some(tok) => {
                    let due_at = tok.expires_at_ms - margin_ms.min(tok.lifetime_ms() / 2);
                    if now >= due_at {
                        Ok(false)
                    } else {
                        Err(due_at)
                    }
                }
            };
            match verdict {
                Err(due_at_ms) => (ClaimOutcome::NotDue { due_at_ms }, reseeded),
                Ok(forced) => {
                    if forced {
                        s.forced_at.insert(platform.to_owned(), now);
                    }
                    s.claims.insert(
                        platform.to_owned(),
                        (lease.clone(), now, now + CLAIM_TTL_MS),
                    );
                    (
                        ClaimOutcome::Granted {
                            claim_ms: now,
                            forced,
                        },
                        reseeded,
                    )
                }
            }
        });
        if reseeded {
            self.notify(Notice::Credential(
                platform.to_owned(),
                CredentialKind::ComponentAccessToken,
            ));
        }
        Ok(outcome)
    }

    async fn write_token(
        &self,
        lease: &LeaseId,
        platform: &str,
        claim_ms: UnixMillis,
        token: &str,
        expires_in_s: i64,
    ) -> StoreResult<WriteOutcome> {
        let outcome = self.with(|s, now| {
            let claim_matches = matches!(
                s.claims.get(platform),
                Some((id, at, exp)) if id == lease && *at == claim_ms && *exp > now
            );
            if !s.holds(lease, now) || !claim_matches {
                return WriteOutcome::Fenced;
            }
            s.claims.remove(platform);
            s.invalid.remove(platform);
            let record = CredentialRecord {
                value: token.to_owned(),
                obtained_at_ms: claim_ms,
                expires_at_ms: claim_ms + expires_in_s * 1000,
                epoch: lease.epoch,
                holder: lease.holder.clone(),
            };
            let previous_obtained_ms = s.tokens.get(platform).map(|t| t.obtained_at_ms);
            s.tokens.insert(platform.to_owned(), record.clone());
            s.written(
                platform,
                CredentialKind::ComponentAccessToken,
                record,
                previous_obtained_ms,
            )
        });
        Ok(self.notify_written(outcome, platform, CredentialKind::ComponentAccessToken))
    }

    async fn push_pre_auth(
        &self,
        lease: &LeaseId,
        platform: &str,
        requested_at_ms: UnixMillis,
        code: &str,
        expires_in_s: i64,
    ) -> StoreResult<WriteOutcome> {
        let outcome = self.with(|s, now| {
            if !s.holds(lease, now) {
                return WriteOutcome::Fenced;
            }
            let record = CredentialRecord {
                value: code.to_owned(),
                obtained_at_ms: requested_at_ms,
                expires_at_ms: requested_at_ms + expires_in_s * 1000,
                epoch: lease.epoch,
                holder: lease.holder.clone(),
            };
            let previous_obtained_ms = s.pre_auth_meta.get(platform).map(|m| m.obtained_at_ms);
            s.pre_auth
                .entry(platform.to_owned())
                .or_default()
                .push_back((code.to_owned(), record.expires_at_ms));
            s.pre_auth_meta
                .insert(platform.to_owned(), PreAuthMeta::from(&record));
            s.written(
                platform,
                CredentialKind::PreAuthCode,
                record,
                previous_obtained_ms,
            )
        });
        Ok(self.notify_written(outcome, platform, CredentialKind::PreAuthCode))
    }

    async fn restore_token(&self, platform: &str, token: &CredentialRecord) -> StoreResult<bool> {
        let restored = self.with(|s, now| {
            if s.tokens.contains_key(platform) || token.expires_at_ms <= now {
                return false;
            }
            s.tokens.insert(platform.to_owned(), token.clone());
            true
        });
        Ok(self.notify_if(
            restored,
            Notice::Credential(platform.to_owned(), CredentialKind::ComponentAccessToken),
        ))
    }

    async fn restore_ticket(&self, platform: &str, ticket: &TicketRecord) -> StoreResult<bool> {
        let written = self.with(|s, _| {
            if s.tickets.contains_key(platform) {
                return false;
            }
            s.tickets.insert(platform.to_owned(), ticket.clone());
            true
        });
        Ok(self.notify_if(written, Notice::Ticket(platform.to_owned())))
    }

    async fn start_push_due(
        &self,
        lease: &LeaseId,
        platform: &str,
        min_gap_ms: i64,
    ) -> StoreResult<StartPush> {
        Ok(self.with(|s, now| {
            if !s.holds(lease, now) {
                return StartPush::NotLeader;
            }
            if let Some(at) = s.start_push_at.get(platform) {
                if now - at < min_gap_ms {
                    return StartPush::WaitMs(at + min_gap_ms - now);
                }
            }
            s.start_push_at.insert(platform.to_owned(), now);
            StartPush::Recorded
        }))
    }

    async fn history(&self, limit: usize) -> StoreResult<Vec<HistoryEvent>> {
        Ok(self.with(|s, _| {
            let skip = s.history.len().saturating_sub(limit);
            s.history.iter().skip(skip).cloned().collect()
        }))
    }

    async fn subscribe(&self) -> StoreResult<BoxStream<'static, Notice>> {
        let rx = self.notices.subscribe();
        // A lagging subscriber's stream ends: it resubscribes and reloads, exactly as after a
        // broken Redis subscription.
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.ok().map(|n| (n, rx))
        })))
    }
}

pub(super) fn history_event(
    platform: &str,
    credential: CredentialKind,
    record: &CredentialRecord,
    previous_obtained_ms: Option<UnixMillis>,
) -> HistoryEvent {
    HistoryEvent {
        platform: platform.to_owned(),
        credential,
        obtained_at_ms: record.obtained_at_ms,
        expires_at_ms: record.expires_at_ms,
        epoch: record.epoch,
        holder: record.holder.clone(),
        interval_ms: previous_obtained_ms.map(|p| record.obtained_at_ms - p),
    }
}
