//! EDGE: the token API on the main listener, for internal services (CONTRACT.md, "HTTP: main
//! listener").
//!
//! - `GET  /v1/platforms/{component_appid}/component_access_token`: from the in-memory view
//! - `POST /v1/platforms/{component_appid}/pre_auth_code`: one code from the shared pool
//! - `POST /v1/platforms/{component_appid}/authorization_url`: a componentloginpage link
//! - `POST /v1/platforms/{component_appid}/component_access_token/invalid`: 202
//!
//! Every request needs `Authorization: Bearer <key>` ([`auth`]), checked before anything
//! else. Errors are JSON with a stable code ([`ApiError`]); no answer, log line or metric
//! label carries a credential or an unchecked path segment.

pub mod auth;
pub mod authorization_url;
mod errors;
mod handlers;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use secrecy::SecretString;

pub use errors::ApiError;

use crate::metrics::Metrics;
use crate::store::SharedStore;
use crate::view::CredentialView;

/// Request bodies above this are refused with 400 (the largest valid body is a redirect URI).
pub const MAX_BODY: usize = 16 * 1024;

#[derive(Clone)]
pub struct ApiState {
    /// This replica's copy of the credentials; token reads never touch the store.
    pub view: Arc<CredentialView>,
    pub store: SharedStore,
    pub metrics: Arc<Metrics>,
    /// Empty = every request is refused (401).
    pub api_keys: Arc<Vec<SecretString>>,
    /// A pre-auth code with less than this left is never handed out.
    pub pre_auth_margin: Duration,
    /// Wakes the leader's refresher when the pool is drained or a token was reported invalid
    /// (may be a no-op in tests).
    pub wake: Arc<tokio::sync::Notify>,
}

pub fn router(state: ApiState) -> Router {
    const BASE: &str = "/v1/platforms/{component_appid}";
    Router::new()
        .route(
            &format!("{BASE}/component_access_token"),
            get(handlers::token),
        )
        .route(
            &format!("{BASE}/pre_auth_code"),
            post(handlers::pre_auth_code),
        )
        .route(
            &format!("{BASE}/authorization_url"),
            post(handlers::authorization_url),
        )
        .route(
            &format!("{BASE}/component_access_token/invalid"),
            post(handlers::report_invalid),
        )
        .with_state(state)
}
