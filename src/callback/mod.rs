//! `POST /callback/{component_appid}`: WeChat's authorization event URL.
//!
//! verify `msg_signature` → check the timestamp → decrypt (checks the appid) → parse → store.
//! Nothing is stored unless every step passed; every answer is counted in
//! `wxkeeper_callback_requests_total` under one of the contract's outcomes. The handler never
//! calls WeChat (WeChat gives up after about 5 s); a stored ticket wakes the leader through the
//! store's notice.

pub mod xml;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use secrecy::ExposeSecret;
use tracing::{info, warn, Instrument};

use crate::clock::WallClock;
use crate::config::PlatformConfig;
use crate::crypto::{self, CryptoError};
use crate::metrics::{Metrics, UNKNOWN_PLATFORM};
use crate::store::{SharedStore, TicketWrite};

/// Bodies above this are refused with 413 (a ticket push is under 1 KiB).
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Clone)]
pub struct CallbackState {
    pub platforms: Arc<BTreeMap<String, PlatformConfig>>,
    pub store: SharedStore,
    pub metrics: Arc<Metrics>,
    pub clock: WallClock,
    pub max_skew: Duration,
}

pub fn router(state: CallbackState) -> Router {
    Router::new()
        .route("/callback/{component_appid}", post(receive))
        .with_state(state)
}

/// Why a push was refused: its status, its metric outcome, and a reason safe to log and return.
struct Refusal {
    status: StatusCode,
    outcome: &'static str,
    reason: &'static str,
}

fn refuse(status: StatusCode, outcome: &'static str, reason: &'static str) -> Refusal {
    Refusal {
        status,
        outcome,
        reason,
    }
}

fn bad_request(reason: &'static str) -> Refusal {
    refuse(StatusCode::BAD_REQUEST, "bad_request", reason)
}

async fn receive(
    State(st): State<CallbackState>,
    Path(appid): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(platform) = st.platforms.get(&appid) else {
        st.metrics
            .callback_requests
            .with_label_values(&[UNKNOWN_PLATFORM, "unknown_platform"])
            .inc();
        return (StatusCode::NOT_FOUND, "unknown platform\n").into_response();
    };
    let span = tracing::info_span!("push", platform = %platform.appid);
    let result = handle(
        &st,
        platform,
        query.as_deref().unwrap_or(""),
        &headers,
        body,
    )
    .instrument(span.clone())
    .await;
    let _enter = span.enter();
    let (status, outcome, text) = match result {
        Ok(outcome) => {
            info!(outcome, "push acknowledged");
            (StatusCode::OK, outcome, "success")
        }
        Err(r) => {
            warn!(
                outcome = r.outcome,
                reason = r.reason,
                status = r.status.as_u16(),
                "push refused"
            );
            (r.status, r.outcome, r.reason)
        }
    };
    st.metrics
        .callback_requests
        .with_label_values(&[&platform.appid, outcome])
        .inc();
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn handle(
    st: &CallbackState,
    platform: &PlatformConfig,
    query: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<&'static str, Refusal> {
    let too_large = refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        "body over 64 KiB",
    );
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(too_large);
    }
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| too_large)?;

    let params: BTreeMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let param = |name: &'static str| {
        params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let timestamp = param("timestamp").ok_or_else(|| bad_request("missing timestamp"))?;
    let nonce = param("nonce").ok_or_else(|| bad_request("missing nonce"))?;
    let signature = param("msg_signature").ok_or_else(|| bad_request("missing msg_signature"))?;
    if param("encrypt_type").is_some_and(|t| t != "aes") {
        return Err(bad_request("encrypt_type must be aes"));
    }
    let sent_at: i64 = timestamp
        .parse()
        .map_err(|_| bad_request("timestamp is not a number"))?;
    let envelope =
        xml::parse_envelope(&body).map_err(|_| bad_request("body is not a push envelope"))?;

    // The signature covers the ciphertext: check it before anything is decrypted.
    let token = platform.token.expose_secret();
    if !crypto::verify_msg_signature(token, timestamp, nonce, &envelope.encrypt, signature) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "bad_signature",
            "msg_signature mismatch",
        ));
    }
    let skew_s = (st.clock.now_secs() - sent_at).unsigned_abs();
    if skew_s > st.max_skew.as_secs() {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "clock_skew",
            "timestamp too far from now",
        ));
    }
    if envelope
        .app_id
        .as_deref()
        .is_some_and(|a| a != platform.appid)
    {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "appid_mismatch",
            "envelope AppId mismatch",
        ));
    }
    let plain = crypto::decrypt(&platform.aes_key, &envelope.encrypt, &platform.appid).map_err(
        |e| match e {
            CryptoError::AppIdMismatch => refuse(
                StatusCode::FORBIDDEN,
                "appid_mismatch",
                "encrypted appid mismatch",
            ),
            _ => bad_request("ciphertext cannot be decrypted"),
        },
    )?;
    let event =
        xml::parse_event(&plain).map_err(|_| bad_request("decrypted event is not valid"))?;
    if event.app_id != platform.appid {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "appid_mismatch",
            "event AppId mismatch",
        ));
    }

    match event.info_type.as_ref() {
        "component_verify_ticket" => {
            let ticket = event
                .field("ComponentVerifyTicket")
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| bad_request("ticket push without ComponentVerifyTicket"))?;
            let written = st
                .store
                .put_ticket(&platform.appid, ticket, event.create_time)
                .await
                .map_err(|e| {
                    warn!(error = %e, "store did not take the ticket");
                    refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "store_error",
                        "store unavailable",
                    )
                })?;
            if written == TicketWrite::Stored {
                st.metrics
                    .ticket_received
                    .with_label_values(&[&platform.appid])
                    .set(event.create_time as f64);
            }
            Ok(match written {
                TicketWrite::Stored => "accepted",
                TicketWrite::Duplicate => "duplicate",
                TicketWrite::Stale => "stale",
            })
        }
        // Authorization events are acknowledged; storing authorizers is a later capability.
        other => {
            info!(info_type = %other.chars().take(40).collect::<String>(), "event acknowledged, not stored");
            Ok("ignored")
        }
    }
}
