//! The HTTP face: WeChat's component API paths and the simulator's `/sim/*` control paths.
//!
//! Owns routing, query parsing and response encoding only; every decision is made in `api`
//! or `state`. WeChat answers its own errors as HTTP 200 with `{"errcode", "errmsg"}`; the
//! control paths answer real HTTP statuses with `{"error", "message"}`.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use super::wire::WxError;
use super::{SimError, SimStats, Simulator};

pub(super) fn router(sim: Simulator) -> Router {
    Router::new()
        .route(
            "/cgi-bin/component/api_component_token",
            post(component_token),
        )
        .route(
            "/cgi-bin/component/api_create_preauthcode",
            post(create_preauthcode),
        )
        .route(
            "/cgi-bin/component/api_start_push_ticket",
            post(start_push_ticket),
        )
        .route("/sim/stats", get(stats))
        .route("/sim/validate", get(validate))
        .route("/sim/push", post(push))
        .route("/sim/revoke", post(revoke))
        .with_state(sim)
}

async fn component_token(State(sim): State<Simulator>, body: Bytes) -> Json<serde_json::Value> {
    wechat_answer("api_component_token", sim.component_token(&body).await)
}

async fn create_preauthcode(
    State(sim): State<Simulator>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Json<serde_json::Value> {
    let token = param(&query, "component_access_token");
    let answer = sim.create_preauthcode(token.as_deref(), &body).await;
    wechat_answer("api_create_preauthcode", answer)
}

async fn start_push_ticket(State(sim): State<Simulator>, body: Bytes) -> Json<serde_json::Value> {
    let answer = sim
        .start_push_ticket(&body)
        .await
        .map(|()| json!({ "errcode": 0, "errmsg": "ok" }));
    wechat_answer("api_start_push_ticket", answer)
}

/// Encodes a WeChat answer; logs the errcode, never the credential.
fn wechat_answer<T: Serialize>(
    endpoint: &'static str,
    answer: Result<T, WxError>,
) -> Json<serde_json::Value> {
    match answer {
        Ok(body) => {
            tracing::debug!(endpoint, errcode = 0, "sim answered");
            Json(serde_json::to_value(body).expect("response bodies serialize"))
        }
        Err(e) => {
            tracing::debug!(endpoint, errcode = e.errcode(), "sim answered");
            Json(e.body())
        }
    }
}

async fn stats(State(sim): State<Simulator>) -> Json<SimStats> {
    Json(sim.stats())
}

/// `?component_access_token=T` or `?pre_auth_code=C`, exactly one. Validating a code uses it.
async fn validate(State(sim): State<Simulator>, RawQuery(query): RawQuery) -> Response {
    let token = param(&query, "component_access_token");
    let code = param(&query, "pre_auth_code");
    let valid = match (token, code) {
        (Some(token), None) => sim.token_is_valid(&token),
        (None, Some(code)) => sim.use_pre_auth_code(&code),
        _ => {
            return control_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "give exactly one of component_access_token and pre_auth_code",
            )
        }
    };
    Json(json!({ "valid": valid })).into_response()
}

/// Pushes one new ticket now; `?component_appid=` picks the platform (default: the first).
async fn push(State(sim): State<Simulator>, RawQuery(query): RawQuery) -> Response {
    let appid = param(&query, "component_appid");
    match sim.push_now(appid.as_deref()).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => {
            let (status, code) = match e {
                SimError::NoPlatform | SimError::UnknownPlatform(_) => {
                    (StatusCode::NOT_FOUND, "unknown_platform")
                }
                SimError::NoPushTarget => (StatusCode::CONFLICT, "no_push_target"),
            };
            control_error(status, code, &e.to_string())
        }
    }
}

/// `?component_appid=`: ends every token of that platform now.
async fn revoke(State(sim): State<Simulator>, RawQuery(query): RawQuery) -> Response {
    let Some(appid) = param(&query, "component_appid") else {
        return control_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "component_appid is required",
        );
    };
    if !sim.has_platform(&appid) {
        return control_error(
            StatusCode::NOT_FOUND,
            "unknown_platform",
            "component_appid is not configured",
        );
    }
    sim.revoke_tokens(&appid);
    Json(json!({ "revoked": true })).into_response()
}

fn control_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": code, "message": message }))).into_response()
}

/// The first value of `name` in a raw query string. Parsing never fails: WeChat ignores what
/// it cannot read, and a missing token then gets its own errcode.
fn param(query: &Option<String>, name: &str) -> Option<String> {
    let query = query.as_deref()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
