//! The baseline of `scripts/bench token`: a bare axum handler answering the token API's path
//! with the same JSON from memory, on the same tokio runtime settings as `wxkeeper serve`
//! (multi-threaded, default worker count), without bearer keys, metrics or the credential view.
//! What wxkeeper's token API costs over this is the price of its checks.
//!
//! ```sh
//! cargo run --release --example bare_token_server -- 127.0.0.1:18090 [TOKEN]
//! curl http://127.0.0.1:18090/v1/platforms/wx…/component_access_token
//! ```

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use wxkeeper::clock::WallClock;

/// The token every request gets: a 2-hour token made at start.
struct Token {
    value: String,
    expires_at_ms: i64,
    clock: WallClock,
}

/// The token API's answer, field for field.
#[derive(Serialize)]
struct TokenAnswer<'a> {
    component_access_token: &'a str,
    expires_at: i64,
    expires_in: i64,
}

async fn token(State(t): State<Arc<Token>>, Path(_appid): Path<String>) -> Response {
    let now = t.clock.now_ms();
    let mut response = (
        StatusCode::OK,
        Json(TokenAnswer {
            component_access_token: &t.value,
            expires_at: t.expires_at_ms.div_euclid(1000),
            expires_in: (t.expires_at_ms - now).max(0).div_euclid(1000),
        }),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18090".to_owned());
    let token_value = args.next().unwrap_or_else(|| "x".repeat(64));
    // As `wxkeeper::cli::main` builds it.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let clock = WallClock::system();
        let state = Arc::new(Token {
            // `scripts/bench` passes the simulator's token, so both answers have the same size.
            value: token_value,
            expires_at_ms: clock.now_ms() + 7_200_000,
            clock,
        });
        let app = Router::new()
            .route(
                "/v1/platforms/{component_appid}/component_access_token",
                get(token),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        eprintln!("bare_token_server listening on {addr}");
        axum::serve(listener, app).await?;
        Ok(())
    })
}
