//! WeChat's JSON on the wire: request bodies, success bodies and the errcode table.
//!
//! Request fields are all optional here because WeChat answers a missing field with an errcode,
//! not with a parse failure; deciding which errcode is the job of `state`.

use serde::{Deserialize, Serialize};

/// Body of `api_component_token`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct TokenRequest {
    pub component_appid: Option<String>,
    pub component_appsecret: Option<String>,
    pub component_verify_ticket: Option<String>,
}

/// Body of `api_create_preauthcode`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct PreAuthRequest {
    pub component_appid: Option<String>,
}

/// Body of `api_start_push_ticket` (WeChat names the secret `component_secret` here).
#[derive(Debug, Default, Deserialize)]
pub(super) struct StartPushRequest {
    pub component_appid: Option<String>,
    pub component_secret: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct TokenResponse {
    pub component_access_token: String,
    pub expires_in: u64,
}

#[derive(Debug, Serialize)]
pub(super) struct PreAuthResponse {
    pub pre_auth_code: String,
    pub expires_in: u64,
}

/// A WeChat API error, answered as HTTP 200 `{"errcode": N, "errmsg": "..."}`.
///
/// Codes follow PROTOCOL.md; where it names none (41001, 47001) the code is the one WeChat's
/// public API answers in that case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum WxError {
    /// 40013: appid missing, unknown, or not the one the token belongs to.
    InvalidAppid,
    /// 40125: appsecret wrong.
    InvalidAppsecret,
    /// 41004: appsecret missing or empty.
    AppsecretMissing,
    /// 41001: no `component_access_token` in the query.
    TokenMissing,
    /// 40001: token never issued, revoked, or superseded and past the grace period.
    InvalidToken,
    /// 42001: token reached its own `expires_in`.
    TokenExpired,
    /// 61006: ticket empty, never pushed, or older than the ticket lifetime.
    InvalidTicket,
    /// 45009: the platform's daily `api_component_token` quota is used up.
    QuotaReached,
    /// 47001: the body is not the JSON object the API expects.
    DataFormat,
    /// `--error-rate` chose this call to fail with `--error-code`.
    Injected(i64),
}

impl WxError {
    pub fn errcode(&self) -> i64 {
        match self {
            Self::InvalidAppid => 40013,
            Self::InvalidAppsecret => 40125,
            Self::AppsecretMissing => 41004,
            Self::TokenMissing => 41001,
            Self::InvalidToken => 40001,
            Self::TokenExpired => 42001,
            Self::InvalidTicket => 61006,
            Self::QuotaReached => 45009,
            Self::DataFormat => 47001,
            Self::Injected(code) => *code,
        }
    }

    /// Messages shaped like WeChat's (which append a `rid` we do not imitate).
    pub fn errmsg(&self) -> &'static str {
        match self {
            Self::InvalidAppid => "invalid appid",
            Self::InvalidAppsecret => "invalid appsecret",
            Self::AppsecretMissing => "appsecret missing",
            Self::TokenMissing => "access_token missing",
            Self::InvalidToken => "invalid credential, access_token is invalid or not latest",
            Self::TokenExpired => "access_token expired",
            Self::InvalidTicket => "component_verify_ticket is invalid",
            Self::QuotaReached => "reach max api daily quota limit",
            Self::DataFormat => "data format error",
            Self::Injected(_) => "system error (injected by wxkeeper simulate)",
        }
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "errcode": self.errcode(), "errmsg": self.errmsg() })
    }
}
