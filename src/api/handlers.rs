//! The four endpoints. Each one: admit (bearer key, then platform), do its work, answer,
//! count the answer in `wxkeeper_token_api_requests_total` and log it at debug.
//!
//! The token read is served from the in-memory view only, so it keeps working through a store
//! outage. Right after start, a replica that found no token waits briefly for one to be written
//! back before it answers 503 (see `app::RESTORE_WAIT`). The pre-auth endpoints pop from the
//! store's pool, which hands each code to exactly one caller across all replicas; an empty pool
//! wakes the leader to refill it.

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::authorization_url::{self, login_url};
use super::{auth, ApiError, ApiState, MAX_BODY};
use crate::clock::UnixMillis;
use crate::metrics::UNKNOWN_PLATFORM;
use crate::redact::fingerprint;
use crate::store::{CredentialKind, PreAuthCode};

/// The `{component_appid}` path segment; a rejection (undecodable segment) is an unknown platform.
pub type PlatformPath = Result<Path<String>, PathRejection>;

#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Token,
    PreAuthCode,
    AuthorizationUrl,
    ReportInvalid,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Self::Token => "component_access_token",
            Self::PreAuthCode => "pre_auth_code",
            Self::AuthorizationUrl => "authorization_url",
            Self::ReportInvalid => "component_access_token_invalid",
        }
    }

    /// The `credential` label of the request counter.
    fn credential(self) -> CredentialKind {
        match self {
            Self::Token | Self::ReportInvalid => CredentialKind::ComponentAccessToken,
            Self::PreAuthCode | Self::AuthorizationUrl => CredentialKind::PreAuthCode,
        }
    }
}

/// Runs one request: admit it, let `work` answer for the admitted platform, count and log.
///
/// The key is checked before the platform, so an unauthenticated caller learns nothing about
/// which platforms exist. Only a configured appid (else `unknown`) reaches a log field or a
/// metric label.
async fn answer(
    st: &ApiState,
    endpoint: Endpoint,
    path: PlatformPath,
    headers: &HeaderMap,
    work: impl AsyncFnOnce(&str) -> Result<Response, ApiError>,
) -> Response {
    let platform = path.ok().and_then(|Path(appid)| {
        st.view
            .platforms()
            .iter()
            .find(|p| **p == appid)
            .map(String::as_str)
    });
    let result = if !auth::authorized(headers, &st.api_keys) {
        Err(ApiError::unauthorized())
    } else if let Some(p) = platform {
        work(p).await
    } else {
        Err(ApiError::unknown_platform())
    };
    let response = result.unwrap_or_else(IntoResponse::into_response);
    let status = response.status();
    st.metrics
        .token_api_requests
        .with_label_values(&[endpoint.credential().as_str(), status.as_str()])
        .inc();
    debug!(
        platform = platform.unwrap_or(UNKNOWN_PLATFORM),
        endpoint = endpoint.name(),
        status = status.as_u16(),
        "token api answer"
    );
    response
}

/// `GET /v1/platforms/{component_appid}/component_access_token`
pub async fn token(State(st): State<ApiState>, path: PlatformPath, headers: HeaderMap) -> Response {
    answer(&st, Endpoint::Token, path, &headers, async |p| {
        serve_token(&st, p).await
    })
    .await
}

/// `POST /v1/platforms/{component_appid}/pre_auth_code` (any body is ignored)
pub async fn pre_auth_code(
    State(st): State<ApiState>,
    path: PlatformPath,
    headers: HeaderMap,
) -> Response {
    answer(&st, Endpoint::PreAuthCode, path, &headers, async |p| {
        issue_pre_auth_code(&st, p).await
    })
    .await
}

/// `POST /v1/platforms/{component_appid}/authorization_url`
pub async fn authorization_url(
    State(st): State<ApiState>,
    path: PlatformPath,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(&st, Endpoint::AuthorizationUrl, path, &headers, async |p| {
        issue_authorization_url(&st, p, body).await
    })
    .await
}

/// `POST /v1/platforms/{component_appid}/component_access_token/invalid`
pub async fn report_invalid(
    State(st): State<ApiState>,
    path: PlatformPath,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(&st, Endpoint::ReportInvalid, path, &headers, async |p| {
        take_invalid_report(&st, p, body).await
    })
    .await
}

#[derive(Serialize)]
struct TokenAnswer<'a> {
    component_access_token: &'a str,
    expires_at: i64,
    expires_in: i64,
}

#[derive(Serialize)]
struct PreAuthAnswer<'a> {
    pre_auth_code: &'a str,
    expires_at: i64,
    expires_in: i64,
}

#[derive(Serialize)]
struct AuthorizationUrlAnswer {
    url: String,
    expires_at: i64,
}

/// The invalid-token report. Extra fields are ignored: the one field is required, so a
/// misspelt name is still refused.
#[derive(Deserialize)]
struct InvalidReport {
    component_access_token: String,
}

async fn serve_token(st: &ApiState, platform: &str) -> Result<Response, ApiError> {
    let token = st.view.token_or_restored(platform).await;
    // `now` is read after the view's own expiry check, and the check is repeated against it,
    // so `expires_in` is computed at answer time and can never describe an expired token.
    let now = st.view.store_now_ms();
    let token = token
        .filter(|t| t.expires_at_ms > now)
        .ok_or(ApiError::not_ready("no valid component_access_token yet"))?;
    Ok(credential_answer(
        StatusCode::OK,
        &TokenAnswer {
            component_access_token: &token.value,
            expires_at: unix_secs(token.expires_at_ms),
            expires_in: secs_left(token.expires_at_ms, now),
        },
    ))
}

async fn issue_pre_auth_code(st: &ApiState, platform: &str) -> Result<Response, ApiError> {
    let code = pop_code(st, platform).await?;
    let now = st.view.store_now_ms();
    Ok(credential_answer(
        StatusCode::OK,
        &PreAuthAnswer {
            pre_auth_code: &code.code,
            expires_at: unix_secs(code.expires_at_ms),
            expires_in: secs_left(code.expires_at_ms, now),
        },
    ))
}

async fn issue_authorization_url(
    st: &ApiState,
    platform: &str,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(body).await?;
    // Validated before a code is popped: a bad request must not use one up.
    let spec = authorization_url::parse_request(&body).map_err(ApiError::bad_request)?;
    let code = pop_code(st, platform).await?;
    Ok(credential_answer(
        StatusCode::OK,
        &AuthorizationUrlAnswer {
            url: login_url(platform, &code.code, &spec),
            expires_at: unix_secs(code.expires_at_ms),
        },
    ))
}

async fn take_invalid_report(
    st: &ApiState,
    platform: &str,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(body).await?;
    let report: InvalidReport = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("body must be {\"component_access_token\": string}"))?;
    if report.component_access_token.is_empty() {
        return Err(ApiError::bad_request("component_access_token is empty"));
    }
    let token = fingerprint(&report.component_access_token);
    let forced = st
        .store
        .report_invalid(platform, &report.component_access_token)
        .await
        .map_err(|e| {
            warn!(platform, error = %e, "store did not take an invalid-token report");
            ApiError::store_unavailable()
        })?;
    if forced {
        info!(platform, token, "token reported invalid; forcing a refresh");
        st.wake.notify_one();
    } else {
        debug!(
            platform,
            token,
            "invalid-token report changes nothing (not current, or refreshed within the minute)"
        );
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Takes one code from the pool for this caller alone, and counts it as issued.
async fn pop_code(st: &ApiState, platform: &str) -> Result<PreAuthCode, ApiError> {
    // As the leader does: never more than half the lifetime WeChat reported for the codes.
    let latest = st.view.get(platform).and_then(|v| v.pre_auth);
    let margin = crate::refresh::schedule::pre_auth_margin(st.pre_auth_margin, latest.as_ref());
    let margin_ms = i64::try_from(margin.as_millis()).unwrap_or(i64::MAX);
    let popped = st
        .store
        .pop_pre_auth(platform, margin_ms)
        .await
        .map_err(|e| {
            warn!(platform, error = %e, "store did not hand out a pre-auth code");
            ApiError::store_unavailable()
        })?;
    let Some(code) = popped else {
        st.wake.notify_one();
        return Err(ApiError::not_ready("no pre-auth code is ready"));
    };
    if code.discarded > 0 {
        // The pool held codes too close to expiry: the leader's count is off, let it look.
        debug!(
            platform,
            discarded = code.discarded,
            "stale pre-auth codes discarded"
        );
        st.wake.notify_one();
    }
    st.metrics
        .pre_auth_issued
        .with_label_values(&[platform])
        .inc();
    Ok(code)
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::bad_request("body over 16 KiB or unreadable"))
}

/// A JSON answer carrying a credential: never cached by anything in between.
fn credential_answer(status: StatusCode, body: &impl Serialize) -> Response {
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn unix_secs(ms: UnixMillis) -> i64 {
    ms.div_euclid(1000)
}

/// Whole seconds left, rounded down, so a caller caching for `expires_in` never overshoots.
fn secs_left(expires_at_ms: UnixMillis, now_ms: UnixMillis) -> i64 {
    (expires_at_ms - now_ms).max(0).div_euclid(1000)
}
