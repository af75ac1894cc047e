//! The Redis adapter: key layout, connection handling, and calls to the scripts in
//! `super::scripts`.
//!
//! One `ConnectionManager` (multiplexed, reconnecting) serves all commands; notices use a
//! dedicated pub/sub connection per subscription. Every call runs under `op_timeout`, so a
//! stopped or unreachable Redis costs a bounded wait and an `Err(Timeout)`, never a hang.
//! The first connection is made lazily, so a replica starts (and stays live) without Redis.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncCommands, FromRedisValue, RedisError, Script, ScriptInvocation, Value};
use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;

use super::scripts;
use super::*;

/// Every key this store writes, under the configured prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }
    pub fn lease(&self) -> String {
        format!("{}lease", self.prefix)
    }
    pub fn lease_epoch(&self) -> String {
        format!("{}lease:epoch", self.prefix)
    }
    pub fn lease_last(&self) -> String {
        format!("{}lease:last", self.prefix)
    }
    pub fn lease_released(&self) -> String {
        format!("{}lease:released", self.prefix)
    }
    pub fn events(&self) -> String {
        format!("{}events", self.prefix)
    }
    pub fn history(&self) -> String {
        format!("{}history", self.prefix)
    }
    fn platform(&self, appid: &str, what: &str) -> String {
        format!("{}platform:{appid}:{what}", self.prefix)
    }
    pub fn ticket(&self, appid: &str) -> String {
        self.platform(appid, "ticket")
    }
    pub fn token(&self, appid: &str) -> String {
        self.platform(appid, "token")
    }
    pub fn token_claim(&self, appid: &str) -> String {
        self.platform(appid, "token:claim")
    }
    pub fn token_invalid(&self, appid: &str) -> String {
        self.platform(appid, "token:invalid")
    }
    pub fn token_forced_at(&self, appid: &str) -> String {
        self.platform(appid, "token:forced_at")
    }
    pub fn pre_auth_pool(&self, appid: &str) -> String {
        self.platform(appid, "pre_auth:pool")
    }
    pub fn pre_auth_meta(&self, appid: &str) -> String {
        self.platform(appid, "pre_auth:meta")
    }
    pub fn start_push_at(&self, appid: &str) -> String {
        self.platform(appid, "start_push_at")
    }
}

pub struct RedisStore {
    client: ::redis::Client,
    /// The connection in use and its generation (see [`RedisStore::conn`]).
    conn: tokio::sync::Mutex<Option<(u64, ConnectionManager)>>,
    generation: std::sync::atomic::AtomicU64,
    keys: Keys,
    op_timeout: Duration,
    /// Redis `TIME` minus the local clock, from the last `now_ms` (None before the first).
    offset_ms: std::sync::Mutex<Option<i64>>,
    clock: crate::clock::WallClock,
}

impl RedisStore {
    /// Parses the URL (no connection is made yet).
    pub fn new(url: &str, key_prefix: &str, op_timeout: Duration) -> StoreResult<Self> {
        let client = ::redis::Client::open(url).map_err(|e| {
            StoreError::Unavailable(format!(
                "invalid Redis URL: {}",
                format!("{:?}", e.kind()).to_lowercase()
            ))
        })?;
        Ok(Self {
            client,
            conn: tokio::sync::Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
            keys: Keys::new(key_prefix),
            op_timeout,
            offset_ms: std::sync::Mutex::new(None),
            clock: crate::clock::WallClock::system(),
        })
    }

    /// The Redis time after which a script sent now must refuse to act: half the timeout
    /// from now, so a reply to a script that did act still arrives before the caller gives
    /// up. `"0"` (no deadline) until the clock offset is known.
    fn deadline(&self) -> String {
        match *self.offset_ms.lock().expect("offset lock") {
            Some(offset) => {
                let half = self.op_timeout.as_millis() as i64 / 2;
                (self.clock.now_ms() + offset + half).to_string()
            }
            None => "0".to_owned(),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The current connection, or a new one. The manager's own reconnect backs off for
    /// about a second after an outage (measured), far longer than a lease TTL allows, so a
    /// manager whose call failed is replaced instead: the next call connects afresh.
    async fn conn(&self) -> StoreResult<(u64, ConnectionManager)> {
        let connect = async {
            let mut slot = self.conn.lock().await;
            if let Some((generation, c)) = slot.as_ref() {
                return Ok((*generation, c.clone()));
            }
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(self.op_timeout)
                .set_response_timeout(self.op_timeout)
                .set_number_of_retries(1);
            let c = ConnectionManager::new_with_config(self.client.clone(), config).await?;
            let generation = self
                .generation
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            *slot = Some((generation, c.clone()));
            Ok((generation, c))
        };
        match tokio::time::timeout(self.op_timeout, connect).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(map_err(e)),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// Forgets connection `generation` after it failed (unless it was already replaced).
    async fn discard(&self, generation: u64) {
        let mut slot = self.conn.lock().await;
        if matches!(slot.as_ref(), Some((g, _)) if *g == generation) {
            *slot = None;
        }
    }

    /// Maps a call's result, discarding the connection when the failure may be the
    /// connection's (an I/O error or no answer in time).
    async fn settle<T>(
        &self,
        generation: u64,
        result: Result<Result<T, RedisError>, tokio::time::error::Elapsed>,
    ) -> StoreResult<T> {
        let outcome = match result {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => map_err(e),
            Err(_) => StoreError::Timeout,
        };
        if matches!(outcome, StoreError::Timeout | StoreError::Unavailable(_)) {
            self.discard(generation).await;
        }
        Err(outcome)
    }

    /// Runs one call under the store's deadline.
    async fn call<T, F, Fut>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let (generation, conn) = self.conn().await?;
        let result = tokio::time::timeout(self.op_timeout, f(conn)).await;
        self.settle(generation, result).await
    }

    async fn run<T: FromRedisValue>(&self, invocation: ScriptInvocation<'_>) -> StoreResult<T> {
        let (generation, mut conn) = self.conn().await?;
        let result =
            tokio::time::timeout(self.op_timeout, invocation.invoke_async(&mut conn)).await;
        self.settle(generation, result).await
    }

    /// Deletes every key under the prefix (tests and `demo` only).
    pub async fn delete_all_keys(&self) -> StoreResult<()> {
        let pattern = format!("{}*", self.keys.prefix);
        self.call(|mut c| async move {
            let keys: Vec<String> = ::redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut c)
                .await?;
            if !keys.is_empty() {
                let _: () = c.del(keys).await?;
            }
            Ok(())
        })
        .await
    }
}

fn map_err(e: RedisError) -> StoreError {
    if e.code() == Some("WXKEEPER_LATE") {
        // The script refused because the caller had already given up: a timeout.
        StoreError::Timeout
    } else if e.is_timeout() {
        StoreError::Timeout
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::Unavailable(format!("{:?}", e.kind()).to_lowercase())
    } else {
        // Redis errors name the command and script, never our arguments' values.
        StoreError::Protocol(format!("{:?}: {}", e.kind(), e.detail().unwrap_or("")))
    }
}

fn invoke<'a>(script: &'a Script, keys: &[String], args: &[String]) -> ScriptInvocation<'a> {
    let mut inv = script.prepare_invoke();
    for k in keys {
        inv.key(k);
    }
    for a in args {
        inv.arg(a);
    }
    inv
}

fn as_i64(v: &Value) -> StoreResult<i64> {
    match v {
        Value::Int(n) => Ok(*n),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StoreError::Protocol("expected a number".into())),
        Value::SimpleString(s) => s
            .parse()
            .map_err(|_| StoreError::Protocol("expected a number".into())),
        _ => Err(StoreError::Protocol("expected a number".into())),
    }
}

fn as_string(v: &Value) -> StoreResult<String> {
    String::from_redis_value(v).map_err(|_| StoreError::Protocol("expected a string".into()))
}

fn field<T: std::str::FromStr>(map: &HashMap<String, String>, name: &str) -> StoreResult<T> {
    map.get(name)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| StoreError::Protocol(format!("record lacks field {name}")))
}

fn credential_from(map: HashMap<String, String>) -> StoreResult<Option<CredentialRecord>> {
    if map.is_empty() {
        return Ok(None);
    }
    Ok(Some(CredentialRecord {
        value: field(&map, "value")?,
        obtained_at_ms: field(&map, "obtained_at_ms")?,
        expires_at_ms: field(&map, "expires_at_ms")?,
        epoch: field(&map, "epoch")?,
        holder: field(&map, "holder")?,
    }))
}

fn write_outcome(
    reply: Vec<Value>,
    lease: &LeaseId,
    obtained_at_ms: UnixMillis,
    value: &str,
) -> StoreResult<WriteOutcome> {
    if reply.first().map(as_i64).transpose()? != Some(1) || reply.len() < 3 {
        return Ok(WriteOutcome::Fenced);
    }
    let expires_at_ms = as_i64(&reply[1])?;
    let prev = as_string(&reply[2])?;
    Ok(WriteOutcome::Written {
        record: CredentialRecord {
            value: value.to_owned(),
            obtained_at_ms,
            expires_at_ms,
            epoch: lease.epoch,
            holder: lease.holder.clone(),
        },
        previous_obtained_ms: prev.parse().ok(),
    })
}

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn is_shared_between_processes(&self) -> bool {
        true
    }

    async fn now_ms(&self) -> StoreResult<UnixMillis> {
        let before = self.clock.now_ms();
        let (secs, micros): (i64, i64) = self
            .call(|mut c| async move { ::redis::cmd("TIME").query_async(&mut c).await })
            .await?;
        let redis_ms = secs * 1000 + micros / 1000;
        let local = (before + self.clock.now_ms()) / 2;
        *self.offset_ms.lock().expect("offset lock") = Some(redis_ms - local);
        Ok(redis_ms)
    }

    async fn put_ticket(
        &self,
        platform: &str,
        ticket: &str,
        create_time: i64,
    ) -> StoreResult<TicketWrite> {
        let notice = Notice::Ticket(platform.to_owned()).encode();
        let outcome: String = self
            .run(invoke(
                &scripts::PUT_TICKET,
                &[self.keys.ticket(platform)],
                &[
                    ticket.to_owned(),
                    create_time.to_string(),
                    self.keys.events(),
                    notice,
                    self.deadline(),
                ],
            ))
            .await?;
        match outcome.as_str() {
            "stored" => Ok(TicketWrite::Stored),
            "duplicate" => Ok(TicketWrite::Duplicate),
            "stale" => Ok(TicketWrite::Stale),
            _ => Err(StoreError::Protocol("unexpected ticket outcome".into())),
        }
    }

    async fn get_ticket(&self, platform: &str) -> StoreResult<Option<TicketRecord>> {
        let key = self.keys.ticket(platform);
        let map: HashMap<String, String> = self
            .call(|mut c| async move { c.hgetall(key).await })
            .await?;
        if map.is_empty() {
            return Ok(None);
        }
        Ok(Some(TicketRecord {
            ticket: field(&map, "ticket")?,
            create_time: field(&map, "create_time")?,
            received_at_ms: field(&map, "received_at_ms")?,
            previous: map.get("previous").cloned(),
        }))
    }

    async fn get_token(&self, platform: &str) -> StoreResult<Option<CredentialRecord>> {
        let key = self.keys.token(platform);
        let map: HashMap<String, String> = self
            .call(|mut c| async move { c.hgetall(key).await })
            .await?;
        credential_from(map)
    }

    async fn get_pre_auth_meta(&self, platform: &str) -> StoreResult<Option<PreAuthMeta>> {
        let key = self.keys.pre_auth_meta(platform);
        let map: HashMap<String, String> = self
            .call(|mut c| async move { c.hgetall(key).await })
            .await?;
        if map.is_empty() {
            return Ok(None);
        }
        Ok(Some(PreAuthMeta {
            obtained_at_ms: field(&map, "obtained_at_ms")?,
            expires_at_ms: field(&map, "expires_at_ms")?,
            epoch: field(&map, "epoch")?,
            holder: field(&map, "holder")?,
        }))
    }

    async fn pre_auth_ready(
        &self,
        platform: &str,
        min_remaining_ms: i64,
    ) -> StoreResult<PoolState> {
        let reply: Vec<Value> = self
            .run(invoke(
                &scripts::PRE_AUTH_READY,
                &[self.keys.pre_auth_pool(platform)],
                &[min_remaining_ms.to_string()],
            ))
            .await?;
        if reply.len() != 2 {
            return Err(StoreError::Protocol("unexpected pool reply".into()));
        }
        let earliest = as_i64(&reply[1])?;
        Ok(PoolState {
            ready: as_i64(&reply[0])? as u32,
            earliest_expiry_ms: (earliest > 0).then_some(earliest),
        })
    }

    async fn pop_pre_auth(
        &self,
        platform: &str,
        min_remaining_ms: i64,
    ) -> StoreResult<Option<PreAuthCode>> {
        let reply: Vec<Value> = self
            .run(invoke(
                &scripts::POP_PRE_AUTH,
                &[self.keys.pre_auth_pool(platform)],
                &[
                    min_remaining_ms.to_string(),
                    self.keys.events(),
                    Notice::PreAuthTaken(platform.to_owned()).encode(),
                    self.deadline(),
                ],
            ))
            .await?;
        if reply.len() != 3 {
            return Err(StoreError::Protocol("unexpected pop reply".into()));
        }
        let code = as_string(&reply[0])?;
        if code.is_empty() {
            return Ok(None);
        }
        Ok(Some(PreAuthCode {
            code,
            expires_at_ms: as_i64(&reply[1])?,
            discarded: as_i64(&reply[2])? as u32,
        }))
    }

    async fn report_invalid(&self, platform: &str, token: &str) -> StoreResult<bool> {
        let n: i64 = self
            .run(invoke(
                &scripts::REPORT_INVALID,
                &[
                    self.keys.token(platform),
                    self.keys.token_invalid(platform),
                    self.keys.token_forced_at(platform),
                ],
                &[
                    token.to_owned(),
                    FORCED_REFRESH_GAP_MS.to_string(),
                    self.keys.events(),
                    Notice::Invalidated(platform.to_owned()).encode(),
                ],
            ))
            .await?;
        Ok(n == 1)
    }

    async fn acquire(&self, holder: &str, ttl_ms: u64) -> StoreResult<AcquireOutcome> {
        let reply: Vec<i64> = self
            .run(invoke(
                &scripts::ACQUIRE,
                &[
                    self.keys.lease(),
                    self.keys.lease_epoch(),
                    self.keys.lease_last(),
                    self.keys.lease_released(),
                ],
                &[holder.to_owned(), ttl_ms.to_string()],
            ))
            .await?;
        match reply.as_slice() {
            [1, epoch, clean] => Ok(AcquireOutcome::Acquired {
                epoch: *epoch as u64,
                clean_handoff: *clean == 1,
            }),
            [0, pttl, _] => Ok(AcquireOutcome::Held {
                remaining_ms: (*pttl).max(0),
            }),
            _ => Err(StoreError::Protocol("unexpected acquire reply".into())),
        }
    }

    async fn renew(&self, lease: &LeaseId, ttl_ms: u64) -> StoreResult<bool> {
        let n: i64 = self
            .run(invoke(
                &scripts::RENEW,
                &[self.keys.lease()],
                &[lease.to_string(), ttl_ms.to_string()],
            ))
            .await?;
        Ok(n == 1)
    }

    async fn release(&self, lease: &LeaseId) -> StoreResult<bool> {
        let n: i64 = self
            .run(invoke(
                &scripts::RELEASE,
                &[self.keys.lease(), self.keys.lease_released()],
                &[
                    lease.to_string(),
                    self.keys.events(),
                    Notice::LeaseReleased.encode(),
                ],
            ))
            .await?;
        Ok(n == 1)
    }

    async fn read_lease(&self) -> StoreResult<Option<LeaseView>> {
        let reply: Vec<Value> = self
            .run(invoke(&scripts::READ_LEASE, &[self.keys.lease()], &[]))
            .await?;
        if reply.len() != 2 {
            return Ok(None);
        }
        let raw = as_string(&reply[0])?;
        let (holder, epoch) = raw
            .rsplit_once(':')
            .ok_or_else(|| StoreError::Protocol("lease value is not holder:epoch".into()))?;
        Ok(Some(LeaseView {
            id: LeaseId {
                holder: holder.to_owned(),
                epoch: epoch
                    .parse()
                    .map_err(|_| StoreError::Protocol("lease epoch".into()))?,
            },
            remaining_ms: as_i64(&reply[1])?.max(0),
        }))
    }

    async fn claim_token(
        &self,
        lease: &LeaseId,
        platform: &str,
        margin_ms: i64,
        remembered: Option<&CredentialRecord>,
    ) -> StoreResult<ClaimOutcome> {
        let mut args = vec![
            lease.to_string(),
            margin_ms.to_string(),
            CLAIM_TTL_MS.to_string(),
            self.keys.events(),
            Notice::Credential(platform.to_owned(), CredentialKind::ComponentAccessToken).encode(),
        ];
        match remembered {
            Some(r) => args.extend([
                r.value.clone(),
                r.obtained_at_ms.to_string(),
                r.expires_at_ms.to_string(),
                r.epoch.to_string(),
                r.holder.clone(),
            ]),
            None => args.extend(std::iter::repeat_n(String::new(), 5)),
        }
        let reply: Vec<Value> = self
            .run(invoke(
                &scripts::CLAIM_TOKEN,
                &[
                    self.keys.lease(),
                    self.keys.token(platform),
                    self.keys.token_claim(platform),
                    self.keys.token_invalid(platform),
                    self.keys.token_forced_at(platform),
                ],
                &args,
            ))
            .await?;
        let verdict = reply.first().map(as_string).transpose()?;
        match (verdict.as_deref(), reply.len()) {
            (Some("not_leader"), _) => Ok(ClaimOutcome::NotLeader),
            (Some("not_due"), 2) => Ok(ClaimOutcome::NotDue {
                due_at_ms: as_i64(&reply[1])?,
            }),
            (Some("granted"), 3) => Ok(ClaimOutcome::Granted {
                claim_ms: as_i64(&reply[1])?,
                forced: as_i64(&reply[2])? == 1,
            }),
            _ => Err(StoreError::Protocol("unexpected claim reply".into())),
        }
    }

    async fn write_token(
        &self,
        lease: &LeaseId,
        platform: &str,
        claim_ms: UnixMillis,
        token: &str,
        expires_in_s: i64,
    ) -> StoreResult<WriteOutcome> {
        let reply: Vec<Value> = self
            .run(invoke(
                &scripts::WRITE_TOKEN,
                &[
                    self.keys.lease(),
                    self.keys.token(platform),
                    self.keys.token_claim(platform),
                    self.keys.token_invalid(platform),
                    self.keys.history(),
                ],
                &[
                    lease.to_string(),
                    claim_ms.to_string(),
                    token.to_owned(),
                    expires_in_s.to_string(),
                    self.keys.events(),
                    Notice::Credential(platform.to_owned(), CredentialKind::ComponentAccessToken)
                        .encode(),
                    HISTORY_LEN.to_string(),
                    platform.to_owned(),
                    lease.epoch.to_string(),
                    lease.holder.clone(),
                ],
            ))
            .await?;
        write_outcome(reply, lease, claim_ms, token)
    }

    async fn push_pre_auth(
        &self,
        lease: &LeaseId,
        platform: &str,
        requested_at_ms: UnixMillis,
        code: &str,
        expires_in_s: i64,
    ) -> StoreResult<WriteOutcome> {
        let reply: Vec<Value> = self
            .run(invoke(
                &scripts::PUSH_PRE_AUTH,
                &[
                    self.keys.lease(),
                    self.keys.pre_auth_pool(platform),
                    self.keys.pre_auth_meta(platform),
                    self.keys.history(),
                ],
                &[
                    lease.to_string(),
                    requested_at_ms.to_string(),
                    code.to_owned(),
                    expires_in_s.to_string(),
                    self.keys.events(),
                    Notice::Credential(platform.to_owned(), CredentialKind::PreAuthCode).encode(),
                    HISTORY_LEN.to_string(),
                    platform.to_owned(),
                    lease.epoch.to_string(),
                    lease.holder.clone(),
                ],
            ))
            .await?;
        write_outcome(reply, lease, requested_at_ms, code)
    }

    async fn restore_token(&self, platform: &str, token: &CredentialRecord) -> StoreResult<bool> {
        let n: i64 = self
            .run(invoke(
                &scripts::RESTORE_TOKEN,
                &[self.keys.token(platform)],
                &[
                    token.value.clone(),
                    token.obtained_at_ms.to_string(),
                    token.expires_at_ms.to_string(),
                    token.epoch.to_string(),
                    token.holder.clone(),
                    self.keys.events(),
                    Notice::Credential(platform.to_owned(), CredentialKind::ComponentAccessToken)
                        .encode(),
                ],
            ))
            .await?;
        Ok(n == 1)
    }

    async fn restore_ticket(&self, platform: &str, ticket: &TicketRecord) -> StoreResult<bool> {
        let n: i64 = self
            .run(invoke(
                &scripts::RESTORE_TICKET,
                &[self.keys.ticket(platform)],
                &[
                    ticket.ticket.clone(),
                    ticket.create_time.to_string(),
                    ticket.received_at_ms.to_string(),
                    ticket.previous.clone().unwrap_or_default(),
                    self.keys.events(),
                    Notice::Ticket(platform.to_owned()).encode(),
                ],
            ))
            .await?;
        Ok(n == 1)
    }

    async fn start_push_due(
        &self,
        lease: &LeaseId,
        platform: &str,
        min_gap_ms: i64,
    ) -> StoreResult<StartPush> {
        let n: i64 = self
            .run(invoke(
                &scripts::START_PUSH_DUE,
                &[self.keys.lease(), self.keys.start_push_at(platform)],
                &[lease.to_string(), min_gap_ms.to_string()],
            ))
            .await?;
        Ok(match n {
            0 => StartPush::Recorded,
            n if n > 0 => StartPush::WaitMs(n),
            _ => StartPush::NotLeader,
        })
    }

    async fn history(&self, limit: usize) -> StoreResult<Vec<HistoryEvent>> {
        let key = self.keys.history();
        let reply: ::redis::streams::StreamRangeReply = self
            .call(|mut c| async move { c.xrevrange_count(key, "+", "-", limit).await })
            .await?;
        let mut events = Vec::with_capacity(reply.ids.len());
        for entry in reply.ids.into_iter().rev() {
            let map: HashMap<String, String> = entry
                .map
                .iter()
                .filter_map(|(k, v)| String::from_redis_value(v).ok().map(|v| (k.clone(), v)))
                .collect();
            let credential = map
                .get("credential")
                .and_then(|c| CredentialKind::parse(c))
                .ok_or_else(|| StoreError::Protocol("history entry lacks credential".into()))?;
            events.push(HistoryEvent {
                platform: field(&map, "platform")?,
                credential,
                obtained_at_ms: field(&map, "obtained_at_ms")?,
                expires_at_ms: field(&map, "expires_at_ms")?,
                epoch: field(&map, "epoch")?,
                holder: field(&map, "holder")?,
                interval_ms: map.get("interval_ms").and_then(|v| v.parse().ok()),
            });
        }
        Ok(events)
    }

    async fn subscribe(&self) -> StoreResult<BoxStream<'static, Notice>> {
        let channel = self.keys.events();
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, RedisError>(pubsub)
        };
        let pubsub = match tokio::time::timeout(self.op_timeout, connect).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Err(map_err(e)),
            Err(_) => return Err(StoreError::Timeout),
        };
        Ok(Box::pin(pubsub.into_on_message().filter_map(
            |msg| async move {
                msg.get_payload::<String>()
                    .ok()
                    .and_then(|p| Notice::decode(&p))
            },
        )))
    }
}
