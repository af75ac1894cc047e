//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/status`.
//!
//! `/healthz` answers 200 while the process runs and never touches Redis. `/readyz` is 200
//! once configuration is loaded, both listeners are bound and the store has been contacted once
//! (the stored credentials are then in memory), and 503 while shutting down; it never depends
//! on the lease or on a token, so a fresh deployment becomes ready and can receive its first
//! push. (A replica that is ready without a token holds token reads for a moment after start
//! instead: see [`crate::app::RESTORE_WAIT`].) `/status` is this replica's view, without
//! secrets.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::lease::Leadership;
use crate::metrics::Metrics;
use crate::status::platform_report;
use crate::view::CredentialView;

const STARTING: u8 = 0;
const READY: u8 = 1;
const STOPPING: u8 = 2;

/// Where the replica is in its life: starting, ready, or shutting down.
#[derive(Debug, Default)]
pub struct Lifecycle(AtomicU8);

impl Lifecycle {
    pub fn set_ready(&self) {
        let _ = self
            .0
            .compare_exchange(STARTING, READY, Ordering::SeqCst, Ordering::SeqCst);
    }
    pub fn set_stopping(&self) {
        self.0.store(STOPPING, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst) == READY
    }
    pub fn is_stopping(&self) -> bool {
        self.0.load(Ordering::SeqCst) == STOPPING
    }
}

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub lifecycle: Arc<Lifecycle>,
    pub view: Arc<CredentialView>,
    pub leadership: watch::Receiver<Leadership>,
    pub holder: String,
    pub store_kind: &'static str,
    pub store_url: String,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(state)
}

async fn metrics(State(st): State<AdminState>) -> Response {
    // Judge leadership at scrape time: a process resumed after a pause must not report the
    // leadership it held before, even for the moment before its elector runs.
    let leading = st.leadership.borrow().is_leader(Instant::now());
    st.metrics.leader.set(leading as i64);
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        st.metrics.encode(),
    )
        .into_response()
}

async fn readyz(State(st): State<AdminState>) -> Response {
    if st.lifecycle.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else if st.lifecycle.is_stopping() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: store not contacted yet\n",
        )
            .into_response()
    }
}

async fn status(State(st): State<AdminState>) -> Json<serde_json::Value> {
    let now = Instant::now();
    let leadership = st.leadership.borrow().clone();
    let lease = match leadership.acting_term(now) {
        Some(t) => json!({
            "leader": true,
            "epoch": t.id.epoch,
            "valid_for_ms": t.valid_until.saturating_duration_since(now).as_millis() as u64,
            "lock_delay_ms": t.act_after.saturating_duration_since(now).as_millis() as u64,
        }),
        None => json!({ "leader": false }),
    };
    let now_ms = st.view.store_now_ms();
    let platforms: serde_json::Map<String, serde_json::Value> = st
        .view
        .platforms()
        .iter()
        .filter_map(|p| {
            let v = st.view.get(p)?;
            Some((
                p.clone(),
                serde_json::to_value(platform_report(&v, now_ms)).ok()?,
            ))
        })
        .collect();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "replica": st.holder,
        "ready": st.lifecycle.is_ready(),
        "store": { "kind": st.store_kind, "url": st.store_url },
        "lease": lease,
        "platforms": platforms,
    }))
}
