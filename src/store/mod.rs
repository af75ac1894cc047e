//! The store port: everything replicas share, behind one trait with two adapters.
//!
//! - [`redis::RedisStore`] for production (Lua scripts, Redis `TIME` as the only wall clock);
//! - [`memory::MemoryStore`] for `memory://` (one process: the demo, single-replica setups).
//!
//! Both implement [`Store`] with identical semantics; `tests/it/store_contract.rs` runs one suite
//! against each. Every operation that decides something (lease, claim, fenced write, ticket
//! ordering, pre-auth pop) happens atomically inside the store, so no replica can act on a view
//! that another replica has since changed. Keys are documented in the README ("Store layout").

pub mod memory;
pub mod redis;
mod scripts;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::Serialize;

use crate::clock::UnixMillis;

/// The credentials wxkeeper keeps, as named in metrics and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    ComponentAccessToken,
    PreAuthCode,
}

impl CredentialKind {
    pub const ALL: [CredentialKind; 2] = [Self::ComponentAccessToken, Self::PreAuthCode];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ComponentAccessToken => "component_access_token",
            Self::PreAuthCode => "pre_auth_code",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The newest `component_verify_ticket` of a platform.
#[derive(Clone, PartialEq, Eq)]
pub struct TicketRecord {
    pub ticket: String,
    /// WeChat's `CreateTime` (unix seconds).
    pub create_time: i64,
    /// Store time when it was stored.
    pub received_at_ms: UnixMillis,
    /// The ticket it replaced, kept for one retry after errcode 61005/61006.
    pub previous: Option<String>,
}

impl fmt::Debug for TicketRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketRecord")
            .field("ticket", &crate::redact::fingerprint(&self.ticket))
            .field("create_time", &self.create_time)
            .field("received_at_ms", &self.received_at_ms)
            .finish()
    }
}

/// How a ticket write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketWrite {
    /// Newer (or equal `CreateTime`, arrived later, different value): now the stored ticket.
    Stored,
    /// The same ticket and `CreateTime` as stored: a retry; nothing changed.
    Duplicate,
    /// Older than the stored one: acknowledged, not stored.
    Stale,
}

/// A credential with its lifetime, on the store's clock.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialRecord {
    pub value: String,
    pub obtained_at_ms: UnixMillis,
    pub expires_at_ms: UnixMillis,
    /// Fencing epoch and holder of the leader that wrote it.
    pub epoch: u64,
    pub holder: String,
}

impl CredentialRecord {
    pub fn lifetime_ms(&self) -> i64 {
        self.expires_at_ms - self.obtained_at_ms
    }
}

impl fmt::Debug for CredentialRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialRecord")
            .field("value", &crate::redact::fingerprint(&self.value))
            .field("obtained_at_ms", &self.obtained_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("epoch", &self.epoch)
            .field("holder", &self.holder)
            .finish()
    }
}

/// What is known of the latest pre-auth code fetched (never its value: codes are handed out
/// once, from the pool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreAuthMeta {
    pub obtained_at_ms: UnixMillis,
    pub expires_at_ms: UnixMillis,
    pub epoch: u64,
    pub holder: String,
}

impl From<&CredentialRecord> for PreAuthMeta {
    fn from(r: &CredentialRecord) -> Self {
        Self {
            obtained_at_ms: r.obtained_at_ms,
            expires_at_ms: r.expires_at_ms,
            epoch: r.epoch,
            holder: r.holder.clone(),
        }
    }
}

/// The pre-auth pool of a platform as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolState {
    pub ready: u32,
    /// Earliest expiry among the ready codes.
    pub earliest_expiry_ms: Option<UnixMillis>,
}

/// Whether the leader may ask WeChat to resume ticket pushes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPush {
    /// Recorded: call `api_start_push_ticket` now.
    Recorded,
    /// The last ask was too recent; the next one is allowed this many milliseconds from now.
    WaitMs(i64),
    /// The lease does not name the caller.
    NotLeader,
}

/// A pre-auth code taken out of the pool; nobody else can ever get it.
#[derive(Clone, PartialEq, Eq)]
pub struct PreAuthCode {
    pub code: String,
    pub expires_at_ms: UnixMillis,
    /// Codes thrown away on the way because they were too close to expiry.
    pub discarded: u32,
}

impl fmt::Debug for PreAuthCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreAuthCode")
            .field("code", &crate::redact::fingerprint(&self.code))
            .field("expires_at_ms", &self.expires_at_ms)
            .field("discarded", &self.discarded)
            .finish()
    }
}

/// A lease term: who holds it and its fencing epoch. Written `holder:epoch` in the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseId {
    pub holder: String,
    pub epoch: u64,
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.holder, self.epoch)
    }
}

/// The lease as the store sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    pub id: LeaseId,
    pub remaining_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireOutcome {
    /// The lease is ours. `clean_handoff` is true only when the previous term ended with a
    /// release (not an expiry, and not an emptied store), so no lock-delay is needed.
    Acquired { epoch: u64, clean_handoff: bool },
    /// Someone else holds it for `remaining_ms` more.
    Held { remaining_ms: i64 },
}

/// The answer to "may I call WeChat for a new token now?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Yes; the claim is recorded at `claim_ms` (store time), which the fenced write uses as
    /// the token's issue time. `forced` when an invalid-token report made it due.
    Granted { claim_ms: UnixMillis, forced: bool },
    /// No: the stored token is not due until `due_at_ms`.
    NotDue { due_at_ms: UnixMillis },
    /// No: the lease does not name this term.
    NotLeader,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Written; `previous_obtained_ms` is the obtained time of the credential it follows
    /// (any leader's), for the refresh-interval metric.
    Written {
        record: CredentialRecord,
        previous_obtained_ms: Option<UnixMillis>,
    },
    /// Refused: this term no longer holds the lease (or its claim was replaced).
    Fenced,
}

/// One line of the refresh history (`wxkeeper status --history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEvent {
    pub platform: String,
    pub credential: CredentialKind,
    pub obtained_at_ms: UnixMillis,
    pub expires_at_ms: UnixMillis,
    pub epoch: u64,
    pub holder: String,
    pub interval_ms: Option<i64>,
}

/// What the store announces on its notice channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A leader released the lease: followers try at once.
    LeaseReleased,
    /// A new ticket was stored for the platform.
    Ticket(String),
    /// A credential of the platform was written.
    Credential(String, CredentialKind),
    /// A consumer reported the platform's current token invalid.
    Invalidated(String),
    /// A pre-auth code of the platform was handed out: the leader refills the pool.
    PreAuthTaken(String),
}

impl Notice {
    pub fn encode(&self) -> String {
        match self {
            Notice::LeaseReleased => "released".to_owned(),
            Notice::Ticket(p) => format!("ticket:{p}"),
            Notice::Credential(p, k) => format!("cred:{p}:{}", k.as_str()),
            Notice::Invalidated(p) => format!("invalid:{p}"),
            Notice::PreAuthTaken(p) => format!("taken:{p}"),
        }
    }

    pub fn decode(s: &str) -> Option<Self> {
        let mut parts = s.splitn(3, ':');
        match (parts.next()?, parts.next(), parts.next()) {
            ("released", None, None) => Some(Notice::LeaseReleased),
            ("ticket", Some(p), None) => Some(Notice::Ticket(p.to_owned())),
            ("invalid", Some(p), None) => Some(Notice::Invalidated(p.to_owned())),
            ("taken", Some(p), None) => Some(Notice::PreAuthTaken(p.to_owned())),
            ("cred", Some(p), Some(k)) => {
                Some(Notice::Credential(p.to_owned(), CredentialKind::parse(k)?))
            }
            _ => None,
        }
    }
}

/// Why a store call failed. Never carries a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No answer within the deadline: the outcome is unknown.
    #[error("store call timed out")]
    Timeout,
    /// The store could not be reached or refused the call.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered something we cannot read.
    #[error("store protocol error: {0}")]
    Protocol(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything replicas share. Times are the store's clock (Redis `TIME`), unix milliseconds.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and `/status` (`redis`, `memory`).
    fn kind(&self) -> &'static str;
    /// Whether replicas in other processes share this store, so that one of them may write
    /// back what the store lost (a Redis restarted empty).
    fn is_shared_between_processes(&self) -> bool;
    /// The store's clock.
    async fn now_ms(&self) -> StoreResult<UnixMillis>;

    // --- tickets ---
    /// Stores a ticket unless an equal or newer one is stored (see [`TicketWrite`]); notifies.
    async fn put_ticket(
        &self,
        platform: &str,
        ticket: &str,
        create_time: i64,
    ) -> StoreResult<TicketWrite>;
    async fn get_ticket(&self, platform: &str) -> StoreResult<Option<TicketRecord>>;

    // --- credentials (reads) ---
    async fn get_token(&self, platform: &str) -> StoreResult<Option<CredentialRecord>>;
    async fn get_pre_auth_meta(&self, platform: &str) -> StoreResult<Option<PreAuthMeta>>;
    /// Codes in the pool with at least `min_remaining_ms` left (drops staler ones at the
    /// head), and the earliest expiry among them.
    async fn pre_auth_ready(&self, platform: &str, min_remaining_ms: i64)
        -> StoreResult<PoolState>;
    /// Takes one code with at least `min_remaining_ms` left, atomically; discards staler ones.
    async fn pop_pre_auth(
        &self,
        platform: &str,
        min_remaining_ms: i64,
    ) -> StoreResult<Option<PreAuthCode>>;
    /// Marks `token` invalid if it is still the stored one and no forced refresh happened in
    /// the last minute. Returns whether a forced refresh is now due.
    async fn report_invalid(&self, platform: &str, token: &str) -> StoreResult<bool>;

    // --- lease ---
    async fn acquire(&self, holder: &str, ttl_ms: u64) -> StoreResult<AcquireOutcome>;
    /// Extends the lease if it still names `lease`; never re-creates an expired one.
    async fn renew(&self, lease: &LeaseId, ttl_ms: u64) -> StoreResult<bool>;
    /// Deletes the lease if it names `lease`, records the clean release and notifies.
    async fn release(&self, lease: &LeaseId) -> StoreResult<bool>;
    async fn read_lease(&self) -> StoreResult<Option<LeaseView>>;

    // --- leader-only, fenced ---
    /// Atomically: the lease names `lease`, and the token is due (missing, within
    /// `min(margin, lifetime / 2)` of expiry, or reported invalid). Records the claim.
    /// `remembered` (the leader's in-memory copy) is first written back if the store lost its
    /// token, so that an emptied store does not make a valid token look due.
    async fn claim_token(
        &self,
        lease: &LeaseId,
        platform: &str,
        margin_ms: i64,
        remembered: Option<&CredentialRecord>,
    ) -> StoreResult<ClaimOutcome>;
    /// Stores a new token if the lease and the claim still match: `expires_at = claim_ms +
    /// expires_in`. Appends to the history and notifies.
    async fn write_token(
        &self,
        lease: &LeaseId,
        platform: &str,
        claim_ms: UnixMillis,
        token: &str,
        expires_in_s: i64,
    ) -> StoreResult<WriteOutcome>;
    /// Adds a fresh pre-auth code to the pool if the lease still names `lease`.
    /// `requested_at_ms` is store time taken before the WeChat call.
    async fn push_pre_auth(
        &self,
        lease: &LeaseId,
        platform: &str,
        requested_at_ms: UnixMillis,
        code: &str,
        expires_in_s: i64,
    ) -> StoreResult<WriteOutcome>;
    /// Writes back a token the store lost: only if none is stored and it has not expired.
    /// Any replica may do this (it restores, it never replaces), so a store that comes back
    /// empty is healed by whichever replica still holds the credential in memory.
    async fn restore_token(&self, platform: &str, token: &CredentialRecord) -> StoreResult<bool>;
    /// Writes back a ticket the store lost: only if none is stored (any replica, as above).
    async fn restore_ticket(&self, platform: &str, ticket: &TicketRecord) -> StoreResult<bool>;
    /// Records a call to `api_start_push_ticket` if none happened in the last `min_gap_ms`.
    async fn start_push_due(
        &self,
        lease: &LeaseId,
        platform: &str,
        min_gap_ms: i64,
    ) -> StoreResult<StartPush>;

    // --- history and notices ---
    async fn history(&self, limit: usize) -> StoreResult<Vec<HistoryEvent>>;
    /// A stream of notices from now on. It ends when the subscription breaks; notices sent
    /// while unsubscribed are lost, so subscribers reload everything after subscribing.
    async fn subscribe(&self) -> StoreResult<BoxStream<'static, Notice>>;
}

pub type SharedStore = Arc<dyn Store>;

/// Opens the store a URL names: `memory://` or `redis://`/`rediss://`.
pub fn open(
    url: &str,
    key_prefix: &str,
    op_timeout: std::time::Duration,
) -> StoreResult<SharedStore> {
    if url.starts_with("memory:") {
        Ok(Arc::new(memory::MemoryStore::new(
            crate::clock::WallClock::system(),
        )))
    } else {
        Ok(Arc::new(redis::RedisStore::new(
            url, key_prefix, op_timeout,
        )?))
    }
}

/// How long history is kept: the last this many refreshes.
pub const HISTORY_LEN: usize = 1000;
/// A forced refresh after an invalid-token report happens at most this often per platform.
pub const FORCED_REFRESH_GAP_MS: i64 = 60_000;
/// How long a claim stays recorded (longer than any WeChat call may take).
pub const CLAIM_TTL_MS: i64 = 120_000;
