//! Simulator-level tests: the API layer under paused time, and the HTTP face over a real socket.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::wire::WxError;
use super::*;

pub(super) const APP: &str = "wx134c8103faa5a59e";
pub(super) const SECRET: &str = "appsecret-0123456789";
pub(super) const OTHER: &str = "wx00000000000000b2";
pub(super) const OTHER_SECRET: &str = "appsecret-other";

/// Two platforms; APP uses the official demo's token and all-`A` key, OTHER a key whose last
/// character has non-zero trailing bits.
pub(super) fn platforms() -> Vec<SimPlatform> {
    vec![
        SimPlatform::new(APP, SECRET, "AAAAA", &"A".repeat(43)).unwrap(),
        SimPlatform::new(
            OTHER,
            OTHER_SECRET,
            "othertoken",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        )
        .unwrap(),
    ]
}

#[test]
fn a_platform_comes_from_the_replica_configuration() {
    let config = crate::config::PlatformConfig {
        appid: APP.into(),
        appsecret: SECRET.into(),
        token: "AAAAA".into(),
        aes_key: crate::crypto::AesKey::from_encoding_aes_key(&"A".repeat(43)).unwrap(),
    };
    let platform = SimPlatform::from(&config);
    assert_eq!(
        (platform.appsecret.as_str(), platform.token.as_str()),
        (SECRET, "AAAAA")
    );
    assert_eq!(platform.aes_key, platforms()[0].aes_key);
    assert!(SimPlatform::new(APP, SECRET, "t", "too-short").is_err());
    assert!(!format!("{platform:?}").contains(SECRET));
}

/// A ticket as if pushed, without any HTTP.
pub(super) fn ticket_for(sim: &Simulator, appid: &str) -> String {
    sim.update(|s, now| s.new_ticket(appid, 1_700_000_000, now))
        .unwrap()
}

pub(super) fn token_body(appid: &str, secret: &str, ticket: &str) -> Vec<u8> {
    json!({
        "component_appid": appid,
        "component_appsecret": secret,
        "component_verify_ticket": ticket,
    })
    .to_string()
    .into_bytes()
}

fn appid_body(appid: &str) -> Vec<u8> {
    json!({ "component_appid": appid }).to_string().into_bytes()
}

fn app_stats(sim: &Simulator) -> PlatformStats {
    sim.stats().platforms[APP].clone()
}

// ---- the API layer, under paused time ----

#[tokio::test(start_paused = true)]
async fn latency_is_spent_inside_the_token_call_window() {
    let sim = Simulator::new(
        platforms(),
        SimOptions {
            latency: Duration::from_secs(2),
            ..SimOptions::default()
        },
    );
    let body = token_body(APP, SECRET, &ticket_for(&sim, APP));
    let started = Instant::now();
    let (a, b) = tokio::join!(sim.component_token(&body), sim.component_token(&body));
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.component_access_token, b.component_access_token);
    assert_eq!(a.expires_in, 7200);

    let stats = app_stats(&sim);
    assert_eq!(stats.counters.overlapping_token_calls, 1);
    assert_eq!(stats.counters.tokens_issued, 2);
    assert_eq!(stats.token_calls_in_flight, 0);
    // Back to back, one after the other: no overlap.
    sim.component_token(&body).await.unwrap();
    assert_eq!(app_stats(&sim).counters.overlapping_token_calls, 1);
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_mid_latency_closes_its_window() {
    let sim = Simulator::new(
        platforms(),
        SimOptions {
            latency: Duration::from_secs(10),
            ..SimOptions::default()
        },
    );
    let body = token_body(APP, SECRET, &ticket_for(&sim, APP));
    let gave_up = tokio::time::timeout(Duration::from_secs(1), sim.component_token(&body)).await;
    assert!(gave_up.is_err());
    let stats = app_stats(&sim);
    assert_eq!(stats.token_calls_in_flight, 0);
    assert_eq!(stats.counters.tokens_issued, 0);
    assert_eq!(stats.counters.calls.api_component_token, 1);
}

#[tokio::test(start_paused = true)]
async fn tokens_and_codes_expire_with_tokio_time() {
    let sim = Simulator::new(platforms(), SimOptions::default());
    let body = token_body(APP, SECRET, &ticket_for(&sim, APP));
    let token = sim
        .component_token(&body)
        .await
        .unwrap()
        .component_access_token;
    let code = sim
        .create_preauthcode(Some(&token), &appid_body(APP))
        .await
        .unwrap();
    assert_eq!(code.expires_in, 600);

    tokio::time::advance(Duration::from_secs(600)).await;
    assert!(!sim.use_pre_auth_code(&code.pre_auth_code), "expired");
    assert!(sim.token_is_valid(&token));

    tokio::time::advance(Duration::from_secs(6600)).await;
    assert!(!sim.token_is_valid(&token));
    let expired = sim.create_preauthcode(Some(&token), &appid_body(APP)).await;
    assert_eq!(expired.unwrap_err(), WxError::TokenExpired);
    assert_eq!(app_stats(&sim).counters.invalid_token_calls, 1);
}

#[tokio::test(start_paused = true)]
async fn a_replaced_token_dies_after_the_grace_period() {
    let sim = Simulator::new(platforms(), SimOptions::default());
    let body = token_body(APP, SECRET, &ticket_for(&sim, APP));
    let old = sim
        .component_token(&body)
        .await
        .unwrap()
        .component_access_token;
    tokio::time::advance(Duration::from_secs(6000)).await;
    let new = sim
        .component_token(&body)
        .await
        .unwrap()
        .component_access_token;

    tokio::time::advance(Duration::from_secs(299)).await;
    assert!(sim.token_is_valid(&old));
    tokio::time::advance(Duration::from_secs(1)).await;
    let rejected = sim.create_preauthcode(Some(&old), &appid_body(APP)).await;
    assert_eq!(rejected.unwrap_err(), WxError::InvalidToken);
    assert!(sim.token_is_valid(&new));
    assert_eq!(app_stats(&sim).token_issue_intervals_ms, [6_000_000]);
}

#[tokio::test(start_paused = true)]
async fn injected_errors_replace_every_api_answer() {
    let sim = Simulator::new(
        platforms(),
        SimOptions {
            error_rate: 1.0,
            error_code: 45011,
            ..SimOptions::default()
        },
    );
    let body = token_body(APP, SECRET, &ticket_for(&sim, APP));
    let start = json!({ "component_appid": APP, "component_secret": SECRET }).to_string();
    assert_eq!(
        sim.component_token(&body).await.unwrap_err(),
        WxError::Injected(45011)
    );
    assert_eq!(
        sim.create_preauthcode(Some("x"), &appid_body(APP))
            .await
            .unwrap_err()
            .errcode(),
        45011
    );
    assert_eq!(
        sim.start_push_ticket(start.as_bytes()).await.unwrap_err(),
        WxError::Injected(45011)
    );
    let stats = sim.stats();
    assert_eq!(stats.totals.errors_injected, 3);
    assert_eq!(stats.platforms[APP].counters.errors_injected, 3);
    assert_eq!(stats.totals.tokens_issued, 0);
}

#[tokio::test(start_paused = true)]
async fn wait_until_wakes_on_a_change() {
    let sim = Simulator::new(platforms(), SimOptions::default());
    let waiter = tokio::spawn({
        let sim = sim.clone();
        async move { sim.wait_until(|s| s.totals.tokens_issued == 1).await }
    });
    let body = token_body(APP, SECRET, &ticket_for(&sim, APP));
    sim.component_token(&body).await.unwrap();
    waiter.await.unwrap();
}

// ---- the HTTP face, over a real socket (no paused time: real I/O) ----

struct Running {
    sim: Simulator,
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn serve(opts: SimOptions) -> Running {
    let sim = Simulator::new(platforms(), opts);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let served = tokio::spawn({
        let (sim, shutdown) = (sim.clone(), shutdown.clone());
        async move { sim.serve(listener, shutdown).await }
    });
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    Running {
        sim,
        base,
        http,
        shutdown,
        served,
    }
}

impl Running {
    /// A token issued over HTTP for `APP` with a pushed ticket.
    async fn fresh_token(&self) -> String {
        let ticket = ticket_for(&self.sim, APP);
        self.post(TOKEN_PATH, token_body(APP, SECRET, &ticket))
            .await["component_access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> Value {
        let answer = self
            .http
            .post(format!("{}{path}", self.base))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "WeChat answers errors as HTTP 200");
        answer.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let answer = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (answer.status().as_u16(), answer.json().await.unwrap())
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.served.await.unwrap().unwrap();
    }
}

const TOKEN_PATH: &str = "/cgi-bin/component/api_component_token";
const PREAUTH_PATH: &str = "/cgi-bin/component/api_create_preauthcode";
const START_PUSH_PATH: &str = "/cgi-bin/component/api_start_push_ticket";

#[tokio::test]
async fn the_component_flow_over_http() {
    let app = serve(SimOptions::default()).await;
    let ticket = ticket_for(&app.sim, APP);
    let answer = app.post(TOKEN_PATH, token_body(APP, SECRET, &ticket)).await;
    assert_eq!(answer["expires_in"], 7200);
    let token = answer["component_access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let answer = app
        .post(
            &format!("{PREAUTH_PATH}?component_access_token={token}"),
            appid_body(APP),
        )
        .await;
    assert_eq!(answer["expires_in"], 600);
    let code = answer["pre_auth_code"].as_str().unwrap().to_owned();
    assert!(code.starts_with("preauthcode@@@"));

    let validate_token = format!("/sim/validate?component_access_token={token}");
    assert_eq!(
        app.get(&validate_token).await,
        (200, json!({"valid": true}))
    );
    let validate_code = format!("/sim/validate?pre_auth_code={code}");
    assert_eq!(app.get(&validate_code).await, (200, json!({"valid": true})));
    assert_eq!(
        app.get(&validate_code).await,
        (200, json!({"valid": false}))
    );
    assert_eq!(app.sim.stats().totals.codes_used_twice, 1);

    for bad in [
        "/sim/validate".to_owned(),
        format!("/sim/validate?component_access_token={token}&pre_auth_code={code}"),
    ] {
        assert_eq!(app.get(&bad).await.0, 400, "{bad}");
    }
    app.stop().await;
}

#[tokio::test]
async fn wechat_errors_over_http() {
    let app = serve(SimOptions::default()).await;
    let ticket = ticket_for(&app.sim, APP);
    let token = app.fresh_token().await;
    let with_token = format!("{PREAUTH_PATH}?component_access_token={token}");
    let cases: Vec<(String, Vec<u8>, i64)> = vec![
        (
            TOKEN_PATH.into(),
            token_body("wxunknown", SECRET, &ticket),
            40013,
        ),
        (TOKEN_PATH.into(), token_body(APP, "wrong", &ticket), 40125),
        (TOKEN_PATH.into(), token_body(APP, "", &ticket), 41004),
        (
            TOKEN_PATH.into(),
            token_body(APP, SECRET, "ticket@@@x"),
            61006,
        ),
        (TOKEN_PATH.into(), b"not json".to_vec(), 47001),
        (PREAUTH_PATH.into(), appid_body(APP), 41001),
        (
            format!("{PREAUTH_PATH}?component_access_token=89_nope"),
            appid_body(APP),
            40001,
        ),
        (with_token.clone(), appid_body(OTHER), 40013),
        (with_token, b"{}".to_vec(), 40013),
        (
            START_PUSH_PATH.into(),
            json!({"component_appid": APP, "component_secret": "wrong"})
                .to_string()
                .into_bytes(),
            40125,
        ),
    ];
    for (path, body, errcode) in cases {
        let answer = app.post(&path, body).await;
        assert_eq!(answer["errcode"], errcode, "{path}: {answer}");
        assert!(answer["errmsg"].is_string());
    }
    let stats = app.sim.stats();
    assert_eq!(stats.totals.invalid_token_calls, 2);
    assert_eq!(stats.totals.invalid_ticket_calls, 1);
    assert_eq!(stats.totals.calls.api_component_token, 6);
    app.stop().await;
}

#[tokio::test]
async fn stats_json_has_the_documented_shape() {
    let app = serve(SimOptions::default()).await;
    let ticket = ticket_for(&app.sim, APP);
    app.post(TOKEN_PATH, token_body(APP, SECRET, &ticket)).await;
    let (status, stats) = app.get("/sim/stats").await;
    assert_eq!(status, 200);
    for key in [
        "calls",
        "tokens_issued",
        "overlapping_token_calls",
        "early_token_calls",
        "invalid_token_calls",
        "invalid_ticket_calls",
        "pre_auth_codes_issued",
        "codes_used_twice",
        "pushes_sent",
        "pushes_failed",
        "errors_injected",
        "platforms",
    ] {
        assert!(stats.get(key).is_some(), "missing {key}: {stats}");
    }
    assert_eq!(stats["calls"]["api_component_token"], 1);
    let platform = &stats["platforms"][APP];
    assert_eq!(platform["tokens_issued"], 1);
    assert_eq!(platform["latest_ticket"]["ticket"], ticket.as_str());
    assert!(platform["token_issue_intervals_ms"].is_array());
    assert_eq!(stats["platforms"][OTHER]["latest_ticket"], Value::Null);
    let parsed: SimStats = serde_json::from_value(stats).unwrap();
    assert_eq!(parsed, app.sim.stats());
    app.stop().await;
}

#[tokio::test]
async fn revoke_over_http() {
    let app = serve(SimOptions::default()).await;
    let token = app.fresh_token().await;
    let post = |path: &str| app.http.post(format!("{}{path}", app.base)).send();
    assert_eq!(post("/sim/revoke").await.unwrap().status(), 400);
    assert_eq!(
        post("/sim/revoke?component_appid=wxunknown")
            .await
            .unwrap()
            .status(),
        404
    );
    assert!(app.sim.token_is_valid(&token));
    let revoked = post(&format!("/sim/revoke?component_appid={APP}"))
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert!(!app.sim.token_is_valid(&token));
    app.stop().await;
}

#[tokio::test]
async fn overlapping_token_calls_are_seen_over_http() {
    // Answers take an hour: both calls are certainly in flight together. The test never waits
    // for them; it ends (and drops the runtime) once the simulator has seen both arrive.
    let app = serve(SimOptions {
        latency: Duration::from_secs(3600),
        ..SimOptions::default()
    })
    .await;
    let body = token_body(APP, SECRET, &ticket_for(&app.sim, APP));
    for _ in 0..2 {
        let call = app
            .http
            .post(format!("{}{TOKEN_PATH}", app.base))
            .body(body.clone());
        tokio::spawn(call.send());
    }
    app.sim
        .wait_until(|s| s.totals.calls.api_component_token == 2)
        .await;
    let stats = app_stats(&app.sim);
    assert_eq!(stats.counters.overlapping_token_calls, 1);
    assert_eq!(stats.token_calls_in_flight, 2);
}
