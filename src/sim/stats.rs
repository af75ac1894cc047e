//! The counters the simulator keeps about its callers, and their JSON (`GET /sim/stats`).
//!
//! Shape: the totals at the top level, then the same counters per configured platform together
//! with what only makes sense per platform (issue intervals, the latest ticket). A call naming
//! an unknown appid counts in the totals only.
//!
//! ```json
//! {
//!   "calls": {"api_component_token": 3, "api_create_preauthcode": 5, "api_start_push_ticket": 0},
//!   "tokens_issued": 2, "overlapping_token_calls": 0, "early_token_calls": 0,
//!   "invalid_token_calls": 0, "invalid_ticket_calls": 1, "pre_auth_codes_issued": 5,
//!   "codes_used_twice": 0, "pushes_sent": 4, "pushes_failed": 0, "errors_injected": 0,
//!   "platforms": {
//!     "wx0123456789abcdef": {
//!       "calls": {...}, "tokens_issued": 2, ...same counters...,
//!       "token_issue_intervals_ms": [6600000],
//!       "token_calls_in_flight": 0,
//!       "valid_tokens": 2,
//!       "latest_ticket": {"ticket": "ticket@@@...", "create_time": 1718000000}
//!     }
//!   }
//! }
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Calls per WeChat endpoint, named as the `endpoint` metric label names them. Every call
/// counts, whatever its answer (injected errors and malformed bodies included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCounts {
    pub api_component_token: u64,
    pub api_create_preauthcode: u64,
    pub api_start_push_ticket: u64,
}

/// What a correct wxkeeper deployment keeps at zero, and what it cannot avoid doing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub calls: CallCounts,
    /// Successful `api_component_token` answers.
    pub tokens_issued: u64,
    /// Token calls that arrived while another token call of the same platform was still being
    /// answered (`--latency` is spent inside that window). A correct deployment: 0.
    pub overlapping_token_calls: u64,
    /// Token calls made while the newest valid token still had more than half its lifetime
    /// left. An effective refresh margin is at most lifetime / 2, so such a call is always
    /// early. A correct deployment: 0, except forced refreshes after a token was rejected.
    pub early_token_calls: u64,
    /// API calls whose `component_access_token` was missing, unknown, expired, superseded past
    /// the grace period, or revoked.
    pub invalid_token_calls: u64,
    /// `api_component_token` calls answered 61006 (ticket empty, never pushed, or too old).
    pub invalid_ticket_calls: u64,
    pub pre_auth_codes_issued: u64,
    /// `GET /sim/validate?pre_auth_code=` on a code that had already been used once.
    pub codes_used_twice: u64,
    /// Pushes attempted, delivered or not.
    pub pushes_sent: u64,
    /// Pushes not answered HTTP 200 with body `success` (a subset of `pushes_sent`).
    pub pushes_failed: u64,
    /// Calls answered with the `--error-code` because of `--error-rate`.
    pub errors_injected: u64,
}

/// The newest ticket pushed for a platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketInfo {
    pub ticket: String,
    /// The push's `CreateTime` (unix seconds).
    pub create_time: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformStats {
    #[serde(flatten)]
    pub counters: Counters,
    /// Milliseconds between consecutive token issues of this platform, oldest first.
    pub token_issue_intervals_ms: Vec<u64>,
    /// Token calls being answered right now.
    pub token_calls_in_flight: u64,
    /// Tokens valid right now: the newest and any older one still inside its grace period.
    pub valid_tokens: u64,
    pub latest_ticket: Option<TicketInfo>,
}

/// Everything `GET /sim/stats` answers; see the module doc for the JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    #[serde(flatten)]
    pub totals: Counters,
    /// Keyed by component appid; every configured platform appears, even before any call.
    pub platforms: BTreeMap<String, PlatformStats>,
}
