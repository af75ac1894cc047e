//! The Lua scripts behind every decision the Redis store makes atomically.
//!
//! Each script reads Redis's own `TIME` (the one wall clock all replicas share) and formats
//! numbers with `%d`, because Lua 5.1 would otherwise print large numbers in exponent form.
//! Redis ≥ 5 replicates script effects, so a write after `TIME` is allowed.

use std::sync::LazyLock;

use redis::Script;

const PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function s(n) return string.format('%d', n) end
-- A caller that gives up waiting answers its client "unavailable"; a script that reaches a
-- paused or overloaded Redis only after that must not act as if it had succeeded.
local function check_deadline(deadline)
  if deadline ~= '0' and now_ms() > tonumber(deadline) then
    return redis.error_reply('WXKEEPER_LATE the caller has given up')
  end
  return nil
end
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

/// KEYS: ticket hash. ARGV: ticket, create_time, channel, notice, deadline_ms ('0' = none).
pub static PUT_TICKET: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local late = check_deadline(ARGV[5])
if late then return late end
local cur = redis.call('HGET', KEYS[1], 'ticket')
local prev = false
if cur then
  local cur_ct = tonumber(redis.call('HGET', KEYS[1], 'create_time'))
  local ct = tonumber(ARGV[2])
  if cur == ARGV[1] and cur_ct == ct then return 'duplicate' end
  if ct < cur_ct then return 'stale' end
  prev = cur
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'ticket', ARGV[1], 'create_time', ARGV[2], 'received_at_ms', s(now_ms()))
if prev then redis.call('HSET', KEYS[1], 'previous', prev) end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 'stored'
"#,
    )
});

/// KEYS: lease, epoch counter, last lease, released record. ARGV: holder, ttl_ms.
/// Returns {acquired, epoch-or-pttl, clean_handoff}.
pub static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, ':', 1, true)
  if sep and string.sub(cur, 1, sep - 1) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, tonumber(string.sub(cur, sep + 1)), 0}
  end
  return {0, redis.call('PTTL', KEYS[1]), 0}
end
-- Epochs are at least Redis's clock in microseconds, so they keep growing when Redis
-- comes back empty (2^53 us is centuries away, so Lua's doubles stay exact).
local now = now_us()
local epoch = redis.call('INCR', KEYS[2])
if now > epoch then
  epoch = now
  redis.call('SET', KEYS[2], s(epoch))
end
local id = ARGV[1] .. ':' .. s(epoch)
local last = redis.call('GET', KEYS[3])
local rel = redis.call('GET', KEYS[4])
local clean = 0
if last and rel and last == rel then clean = 1 end
redis.call('SET', KEYS[1], id, 'PX', ARGV[2])
redis.call('SET', KEYS[3], id)
return {1, epoch, clean}
"#,
    )
});

/// KEYS: lease. ARGV: holder:epoch, ttl_ms.
pub static RENEW: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
    )
});

/// KEYS: lease, released record. ARGV: holder:epoch, channel, notice.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], ARGV[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
"#,
    )
});

/// KEYS: lease. Returns {holder:epoch, pttl} or {}.
pub static READ_LEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local cur = redis.call('GET', KEYS[1])
if not cur then return {} end
return {cur, redis.call('PTTL', KEYS[1])}
"#,
    )
});

/// KEYS: lease, token hash, claim, invalid marker, forced_at.
/// ARGV: holder:epoch, margin_ms, claim_ttl_ms, channel, notice,
///       remembered value, obtained_at_ms, expires_at_ms, epoch, holder ('' value = none).
/// Returns {'not_leader'} | {'not_due', due_at_ms} | {'granted', claim_ms, forced}.
pub static CLAIM_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'not_leader'} end
local now = now_ms()
if redis.call('EXISTS', KEYS[2]) == 0 and ARGV[6] ~= '' and tonumber(ARGV[8]) > now then
  redis.call('HSET', KEYS[2], 'value', ARGV[6], 'obtained_at_ms', ARGV[7], 'expires_at_ms', ARGV[8],
    'epoch', ARGV[9], 'holder', ARGV[10])
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
local value = redis.call('HGET', KEYS[2], 'value')
local forced = 0
if value then
  if redis.call('GET', KEYS[4]) == value then
    forced = 1
  else
    local exp = tonumber(redis.call('HGET', KEYS[2], 'expires_at_ms'))
    local obt = tonumber(redis.call('HGET', KEYS[2], 'obtained_at_ms'))
    local margin = tonumber(ARGV[2])
    local half = math.floor((exp - obt) / 2)
    if half < margin then margin = half end
    local due = exp - margin
    if now < due then return {'not_due', due} end
  end
end
if forced == 1 then redis.call('SET', KEYS[5], s(now)) end
redis.call('SET', KEYS[3], ARGV[1] .. ':' .. s(now), 'PX', ARGV[3])
return {'granted', now, forced}
"#,
    )
});

/// KEYS: lease, token hash, claim, invalid marker, history stream.
/// ARGV: holder:epoch, claim_ms, token, expires_in_s, channel, notice, history_len, platform,
///       epoch, holder. Returns {0} (fenced) | {1, expires_at_ms, previous_obtained_ms or ''}.
pub static WRITE_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end
if redis.call('GET', KEYS[3]) ~= ARGV[1] .. ':' .. ARGV[2] then return {0} end
redis.call('DEL', KEYS[3], KEYS[4])
local exp = tonumber(ARGV[2]) + tonumber(ARGV[4]) * 1000
local prev = redis.call('HGET', KEYS[2], 'obtained_at_ms')
redis.call('HSET', KEYS[2], 'value', ARGV[3], 'obtained_at_ms', ARGV[2], 'expires_at_ms', s(exp),
  'epoch', ARGV[9], 'holder', ARGV[10])
local interval = ''
if prev then interval = s(tonumber(ARGV[2]) - tonumber(prev)) end
redis.call('XADD', KEYS[5], 'MAXLEN', ARGV[7], '*', 'platform', ARGV[8], 'credential', 'component_access_token',
  'obtained_at_ms', ARGV[2], 'expires_at_ms', s(exp), 'epoch', ARGV[9], 'holder', ARGV[10], 'interval_ms', interval)
redis.call('PUBLISH', ARGV[5], ARGV[6])
return {1, s(exp), prev or ''}
"#,
    )
});

/// KEYS: lease, pool list, meta hash, history stream.
/// ARGV: holder:epoch, requested_at_ms, code, expires_in_s, channel, notice, history_len,
///       platform, epoch, holder. Returns like WRITE_TOKEN.
pub static PUSH_PRE_AUTH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end
local exp = tonumber(ARGV[2]) + tonumber(ARGV[4]) * 1000
redis.call('RPUSH', KEYS[2], s(exp) .. '|' .. ARGV[3])
local prev = redis.call('HGET', KEYS[3], 'obtained_at_ms')
redis.call('HSET', KEYS[3], 'obtained_at_ms', ARGV[2], 'expires_at_ms', s(exp), 'epoch', ARGV[9], 'holder', ARGV[10])
local interval = ''
if prev then interval = s(tonumber(ARGV[2]) - tonumber(prev)) end
redis.call('XADD', KEYS[4], 'MAXLEN', ARGV[7], '*', 'platform', ARGV[8], 'credential', 'pre_auth_code',
  'obtained_at_ms', ARGV[2], 'expires_at_ms', s(exp), 'epoch', ARGV[9], 'holder', ARGV[10], 'interval_ms', interval)
redis.call('PUBLISH', ARGV[5], ARGV[6])
return {1, s(exp), prev or ''}
"#,
    )
});

/// KEYS: pool list. ARGV: min_remaining_ms, channel, notice, deadline_ms ('0' = none).
/// Returns {code or '', expires_at_ms, discarded}.
pub static POP_PRE_AUTH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local late = check_deadline(ARGV[4])
if late then return late end
local now = now_ms()
local discarded = 0
while true do
  local item = redis.call('LPOP', KEYS[1])
  if not item then return {'', 0, discarded} end
  local sep = string.find(item, '|', 1, true)
  local exp = tonumber(string.sub(item, 1, sep - 1))
  if exp - now >= tonumber(ARGV[1]) then
    redis.call('PUBLISH', ARGV[2], ARGV[3])
    return {string.sub(item, sep + 1), s(exp), discarded}
  end
  discarded = discarded + 1
end
"#,
    )
});

/// KEYS: pool list. ARGV: min_remaining_ms. Drops stale codes at the head; returns
/// {ready count, earliest expiry among them or 0}.
pub static PRE_AUTH_READY: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now = now_ms()
local min = tonumber(ARGV[1])
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head then break end
  local sep = string.find(head, '|', 1, true)
  if tonumber(string.sub(head, 1, sep - 1)) - now >= min then break end
  redis.call('LPOP', KEYS[1])
end
local ready = 0
local earliest = 0
for _, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local sep = string.find(item, '|', 1, true)
  local exp = tonumber(string.sub(item, 1, sep - 1))
  if exp - now >= min then
    ready = ready + 1
    if earliest == 0 or exp < earliest then earliest = exp end
  end
end
return {ready, s(earliest)}
"#,
    )
});

/// KEYS: token hash, invalid marker, forced_at. ARGV: token, gap_ms, channel, notice.
pub static REPORT_INVALID: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('HGET', KEYS[1], 'value') ~= ARGV[1] then return 0 end
local now = now_ms()
local f = redis.call('GET', KEYS[3])
if f and now - tonumber(f) < tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', 86400000)
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"#,
    )
});

/// KEYS: ticket hash. ARGV: ticket, create_time, received_at_ms, previous ('' = none),
/// channel, notice.
pub static RESTORE_TICKET: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'ticket', ARGV[1], 'create_time', ARGV[2], 'received_at_ms', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'previous', ARGV[4]) end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
"#,
    )
});

/// KEYS: lease, last start-push time. ARGV: holder:epoch, min_gap_ms.
/// Returns 0 (recorded: ask now), ms until the next ask is allowed, or -1 (not the leader).
pub static START_PUSH_DUE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local now = now_ms()
local at = redis.call('GET', KEYS[2])
if at and now - tonumber(at) < tonumber(ARGV[2]) then return tonumber(at) + tonumber(ARGV[2]) - now end
redis.call('SET', KEYS[2], s(now), 'PX', 86400000)
return 0
"#,
    )
});

/// KEYS: token hash. ARGV: value, obtained_at_ms, expires_at_ms, epoch, holder, channel, notice.
pub static RESTORE_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if tonumber(ARGV[3]) <= now_ms() then return 0 end
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'obtained_at_ms', ARGV[2], 'expires_at_ms', ARGV[3],
  'epoch', ARGV[4], 'holder', ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1
"#,
    )
});
