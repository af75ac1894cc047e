//! The API over real HTTP: the router served on 127.0.0.1:0, called with reqwest, backed by
//! the embedded store (or a store that is always down).

use std::collections::HashSet;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::FutureExt;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::{router, ApiState};
use crate::clock::{UnixMillis, WallClock};
use crate::metrics::Metrics;
use crate::store::memory::MemoryStore;
use crate::store::*;
use crate::view::CredentialView;

const P: &str = "wxplatform0000001";
const KEY: &str = "key-of-service-b";
const MARGIN: Duration = Duration::from_secs(120);

struct TestApi {
    base: String,
    http: reqwest::Client,
    store: SharedStore,
    view: Arc<CredentialView>,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
}

impl TestApi {
    async fn spawn() -> Self {
        Self::spawn_with(
            Arc::new(MemoryStore::new(WallClock::system())),
            &["key-of-service-a", KEY],
        )
        .await
    }

    async fn spawn_with(store: SharedStore, keys: &[&str]) -> Self {
        let metrics = Arc::new(Metrics::new());
        metrics.init_series([P]);
        let view = Arc::new(CredentialView::new(
            vec![P.to_owned()],
            store.clone(),
            metrics.clone(),
            WallClock::system(),
            MARGIN,
        ));
        let wake = Arc::new(Notify::new());
        let state = ApiState {
            view: view.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            api_keys: Arc::new(keys.iter().map(|k| SecretString::from(*k)).collect()),
            pre_auth_margin: MARGIN,
            wake: wake.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(axum::serve(listener, router(state)).into_future());
        Self {
            base: format!("http://{addr}/v1/platforms"),
            http: reqwest::Client::new(),
            store,
            view,
            metrics,
            wake,
        }
    }

    fn url(&self, platform: &str, rest: &str) -> String {
        format!("{}/{platform}/{rest}", self.base)
    }

    async fn get_token(&self, platform: &str, key: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(self.url(platform, "component_access_token"));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send().await.unwrap()
    }

    async fn post(&self, platform: &str, rest: &str, body: Option<&str>) -> reqwest::Response {
        let mut req = self.http.post(self.url(platform, rest)).bearer_auth(KEY);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        req.send().await.unwrap()
    }

    async fn lease(&self) -> LeaseId {
        lease_on(&*self.store).await
    }

    /// Writes a token the way the leader does, then refreshes the view.
    async fn write_token(&self, lease: &LeaseId, token: &str, expires_in_s: i64) -> UnixMillis {
        let record = write_token_on(&*self.store, lease, token, expires_in_s).await;
        self.view.reload_all().await.unwrap();
        record.expires_at_ms
    }

    async fn push_codes(&self, lease: &LeaseId, n: usize) {
        let now = self.store.now_ms().await.unwrap();
        for i in 0..n {
            let code = format!("preauthcode@@@{i:03}");
            let w = self.store.push_pre_auth(lease, P, now, &code, 600).await;
            assert!(matches!(w, Ok(WriteOutcome::Written { .. })));
        }
    }

    fn count(&self, credential: &str, code: &str) -> u64 {
        self.metrics
            .token_api_requests
            .with_label_values(&[credential, code])
            .get()
    }

    fn issued(&self) -> u64 {
        self.metrics.pre_auth_issued.with_label_values(&[P]).get()
    }

    async fn ready_codes(&self) -> u32 {
        let margin = MARGIN.as_millis() as i64;
        self.store.pre_auth_ready(P, margin).await.unwrap().ready
    }

    fn woken(&self) -> bool {
        self.wake.notified().now_or_never().is_some()
    }
}

async fn lease_on(store: &dyn Store) -> LeaseId {
    match store.acquire("leader", 60_000).await.unwrap() {
        AcquireOutcome::Acquired { epoch, .. } => LeaseId {
            holder: "leader".into(),
            epoch,
        },
        other => panic!("lease not acquired: {other:?}"),
    }
}

/// Claims and writes a token as the leader does (margin 0: granted while none is unexpired).
async fn write_token_on(
    store: &dyn Store,
    lease: &LeaseId,
    token: &str,
    expires_in_s: i64,
) -> CredentialRecord {
    let claim_ms = match store.claim_token(lease, P, 0, None).await.unwrap() {
        ClaimOutcome::Granted { claim_ms, .. } => claim_ms,
        other => panic!("claim refused: {other:?}"),
    };
    match store
        .write_token(lease, P, claim_ms, token, expires_in_s)
        .await
    {
        Ok(WriteOutcome::Written { record, .. }) => record,
        other => panic!("not written: {other:?}"),
    }
}

async fn error_of(resp: reqwest::Response) -> String {
    let body: Value = resp.json().await.unwrap();
    assert!(body["message"].is_string(), "no message in {body}");
    body["error"].as_str().expect("error code").to_owned()
}

#[tokio::test]
async fn the_key_is_checked_before_the_platform() {
    let api = TestApi::spawn().await;
    for (platform, key) in [
        (P, None),
        (P, Some("wrong")),
        ("wxnotconfigured", None),
        ("wxnotconfigured", Some("wrong")),
    ] {
        let resp = api.get_token(platform, key).await;
        assert_eq!(
            resp.status(),
            StatusCode::UNAUTHORIZED,
            "{platform} {key:?}"
        );
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        assert_eq!(error_of(resp).await, "unauthorized");
    }
    let resp = api.get_token("wxnotconfigured", Some(KEY)).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_of(resp).await, "unknown_platform");

    // The POSTs too, before any body is looked at.
    for rest in [
        "pre_auth_code",
        "authorization_url",
        "component_access_token/invalid",
    ] {
        let resp = api
            .http
            .post(api.url("wxnotconfigured", rest))
            .body("not json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{rest}");
        let resp = api.post("wxnotconfigured", rest, Some("not json")).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{rest}");
    }

    assert_eq!(api.count("component_access_token", "401"), 5);
    assert_eq!(api.count("component_access_token", "404"), 2);
    assert_eq!(api.count("pre_auth_code", "401"), 2);
    assert_eq!(api.count("pre_auth_code", "404"), 2);
    // Unknown platforms never become label values.
    assert!(!api.metrics.encode().contains("wxnotconfigured"));
}

#[tokio::test]
async fn without_configured_keys_nobody_gets_in() {
    let store: SharedStore = Arc::new(MemoryStore::new(WallClock::system()));
    let api = TestApi::spawn_with(store, &[]).await;
    for key in [None, Some(""), Some(KEY)] {
        let resp = api.get_token(P, key).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = api.post(P, "pre_auth_code", None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn token_is_served_from_the_view_once_written() {
    let api = TestApi::spawn().await;
    let resp = api.get_token(P, Some(KEY)).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(error_of(resp).await, "not_ready");

    let lease = api.lease().await;
    let expires_at_ms = api.write_token(&lease, "token-one", 7200).await;
    let resp = api.get_token(P, Some(KEY)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["component_access_token"], "token-one");
    assert_eq!(body["expires_at"], expires_at_ms.div_euclid(1000));
    let expires_in = body["expires_in"].as_i64().unwrap();
    assert!(
        (7000..=7200).contains(&expires_in),
        "expires_in {expires_in}"
    );

    assert_eq!(api.count("component_access_token", "503"), 1);
    assert_eq!(api.count("component_access_token", "200"), 1);
}

#[tokio::test]
async fn an_expired_token_is_never_served() {
    let api = TestApi::spawn().await;
    let lease = api.lease().await;
    // Issued already expired: the view holds it, but it must not be handed out.
    api.write_token(&lease, "token-expired", -1).await;
    assert!(api.view.get(P).unwrap().token.is_some());
    let resp = api.get_token(P, Some(KEY)).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let text = resp.text().await.unwrap();
    assert!(text.contains("not_ready") && !text.contains("token-expired"));
}

#[tokio::test]
async fn each_pre_auth_code_goes_to_exactly_one_caller() {
    let api = TestApi::spawn().await;
    let lease = api.lease().await;
    api.push_codes(&lease, 20).await;

    let calls = (0..50).map(|_| api.post(P, "pre_auth_code", None));
    let answers = futures::future::join_all(calls).await;
    let mut codes = HashSet::new();
    let mut refused = 0;
    for resp in answers {
        match resp.status() {
            StatusCode::OK => {
                let body: Value = resp.json().await.unwrap();
                let code = body["pre_auth_code"].as_str().unwrap().to_owned();
                let expires_in = body["expires_in"].as_i64().unwrap();
                assert!((500..=600).contains(&expires_in), "expires_in {expires_in}");
                assert!(body["expires_at"].as_i64().unwrap() > 0);
                assert!(codes.insert(code), "a code was handed out twice");
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(resp.headers().contains_key("retry-after"));
                assert_eq!(error_of(resp).await, "not_ready");
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(codes.len(), 20);
    assert_eq!(refused, 30);
    assert_eq!(api.issued(), 20);
    assert_eq!(api.count("pre_auth_code", "200"), 20);
    assert_eq!(api.count("pre_auth_code", "503"), 30);
    assert!(api.woken(), "an empty pool must wake the leader");
}

#[tokio::test]
async fn a_code_too_close_to_expiry_is_not_handed_out() {
    let api = TestApi::spawn().await;
    let lease = api.lease().await;
    let now = api.store.now_ms().await.unwrap();
    // 60 s left, under the 120 s margin.
    api.store
        .push_pre_auth(&lease, P, now, "preauthcode@@@stale", 60)
        .await
        .unwrap();
    let resp = api.post(P, "pre_auth_code", None).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api.issued(), 0);
}

#[tokio::test]
async fn authorization_url_carries_a_fresh_code_and_the_encoded_redirect() {
    let api = TestApi::spawn().await;
    let lease = api.lease().await;
    api.push_codes(&lease, 2).await;
    let redirect = "https://svc.example.com/wx/done?tenant=a&next=/x=1";

    let body = json!({"redirect_uri": redirect, "auth_type": 3}).to_string();
    let resp = api.post(P, "authorization_url", Some(&body)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let answer: Value = resp.json().await.unwrap();
    assert!(answer["expires_at"].as_i64().unwrap() > 0);
    let link = answer["url"].as_str().unwrap();
    let url = url::Url::parse(link).unwrap();
    assert_eq!(url.scheme(), "https");
    assert_eq!(url.host_str(), Some("mp.weixin.qq.com"));
    assert_eq!(url.path(), "/cgi-bin/componentloginpage");
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let expected = [
        ("component_appid", P),
        ("pre_auth_code", "preauthcode@@@000"),
        ("redirect_uri", redirect),
        ("auth_type", "3"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(pairs, expected);
    // The redirect's own `?`, `&` and `=` are encoded, so they cannot become link parameters.
    assert!(link.contains(
        "&redirect_uri=https%3A%2F%2Fsvc.example.com%2Fwx%2Fdone%3Ftenant%3Da%26next%3D%2Fx%3D1&"
    ));

    let body = json!({"redirect_uri": "http://svc.example.com/", "biz_appid": "wxb1"}).to_string();
    let resp = api.post(P, "authorization_url", Some(&body)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let answer: Value = resp.json().await.unwrap();
    let url = url::Url::parse(answer["url"].as_str().unwrap()).unwrap();
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert_eq!(pairs[1].1, "preauthcode@@@001");
    assert_eq!(pairs[3], ("biz_appid".into(), "wxb1".into()));
    assert_eq!(pairs.len(), 4);

    assert_eq!(api.issued(), 2);
    assert_eq!(api.count("pre_auth_code", "200"), 2);

    // The pool is now empty.
    let body = json!({"redirect_uri": redirect}).to_string();
    let resp = api.post(P, "authorization_url", Some(&body)).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    assert!(api.woken());
}

#[tokio::test]
async fn a_bad_authorization_url_request_costs_no_code() {
    let api = TestApi::spawn().await;
    let lease = api.lease().await;
    api.push_codes(&lease, 1).await;
    let too_large = json!({"redirect_uri": format!("https://e.com/{}", "a".repeat(20_000))});
    let bad = [
        String::new(),
        "not json".into(),
        json!({}).to_string(),
        json!({"redirect_uri": 5}).to_string(),
        json!({"redirect_uri": "/relative"}).to_string(),
        json!({"redirect_uri": "ftp://e.com/x"}).to_string(),
        json!({"redirect_uri": "https://e.com/", "auth_type": 4}).to_string(),
        json!({"redirect_uri": "https://e.com/", "auth_type": "1"}).to_string(),
        json!({"redirect_uri": "https://e.com/", "auth_type": 1, "biz_appid": "wxb"}).to_string(),
        json!({"redirect_uri": "https://e.com/", "scope": "all"}).to_string(),
        too_large.to_string(),
    ];
    for body in &bad {
        let resp = api.post(P, "authorization_url", Some(body)).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body:.60}");
        assert_eq!(error_of(resp).await, "bad_request");
    }
    assert_eq!(api.ready_codes().await, 1, "a 400 used up a code");
    assert_eq!(api.issued(), 0);
    assert_eq!(api.count("pre_auth_code", "400"), bad.len() as u64);
}

#[tokio::test]
async fn an_invalid_report_forces_one_refresh() {
    let api = TestApi::spawn().await;
    let lease = api.lease().await;
    api.write_token(&lease, "token-one", 7200).await;
    let margin_ms = 15 * 60 * 1000;

    // A token that is not the current one changes nothing.
    let body = json!({"component_access_token": "token-older"}).to_string();
    let resp = api
        .post(P, "component_access_token/invalid", Some(&body))
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(!api.woken());
    let claim = api.store.claim_token(&lease, P, margin_ms, None).await;
    assert!(
        matches!(claim, Ok(ClaimOutcome::NotDue { .. })),
        "{claim:?}"
    );

    let body = json!({"component_access_token": "token-one"}).to_string();
    let resp = api
        .post(P, "component_access_token/invalid", Some(&body))
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(api.woken(), "the leader must be woken");
    let claim = api.store.claim_token(&lease, P, margin_ms, None).await;
    assert!(
        matches!(claim, Ok(ClaimOutcome::Granted { forced: true, .. })),
        "{claim:?}"
    );

    for bad in [
        "",
        "{}",
        r#"{"component_access_token": 1}"#,
        r#"{"component_access_token": ""}"#,
    ] {
        let resp = api
            .post(P, "component_access_token/invalid", Some(bad))
            .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(api.count("component_access_token", "202"), 2);
    assert_eq!(api.count("component_access_token", "400"), 4);
}

#[tokio::test]
async fn a_store_outage_is_a_503_but_token_reads_go_on() {
    let api = TestApi::spawn_with(Arc::new(DownStore), &[KEY]).await;
    // Fill the view from a working store, as if Redis had been up at the last reload.
    let memory = MemoryStore::new(WallClock::system());
    let lease = lease_on(&memory).await;
    let record = write_token_on(&memory, &lease, "token-one", 7200).await;
    api.view.merge(P, Some(record), None, None, None);

    let resp = api.get_token(P, Some(KEY)).await;
    assert_eq!(resp.status(), StatusCode::OK);

    let resp = api.post(P, "pre_auth_code", None).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(error_of(resp).await, "store_unavailable");

    let body = json!({"redirect_uri": "https://e.com/"}).to_string();
    let resp = api.post(P, "authorization_url", Some(&body)).await;
    assert_eq!(error_of(resp).await, "store_unavailable");

    let body = json!({"component_access_token": "token-one"}).to_string();
    let resp = api
        .post(P, "component_access_token/invalid", Some(&body))
        .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_of(resp).await, "store_unavailable");
}

/// A store that never answers.
struct DownStore;

fn down<T>() -> StoreResult<T> {
    Err(StoreError::Unavailable("connection refused".into()))
}

#[async_trait]
impl Store for DownStore {
    fn kind(&self) -> &'static str {
        "down"
    }
    fn is_shared_between_processes(&self) -> bool {
        true
    }
    async fn now_ms(&self) -> StoreResult<UnixMillis> {
        down()
    }
    async fn put_ticket(&self, _: &str, _: &str, _: i64) -> StoreResult<TicketWrite> {
        down()
    }
    async fn get_ticket(&self, _: &str) -> StoreResult<Option<TicketRecord>> {
        down()
    }
    async fn get_token(&self, _: &str) -> StoreResult<Option<CredentialRecord>> {
        down()
    }
    async fn get_pre_auth_meta(&self, _: &str) -> StoreResult<Option<PreAuthMeta>> {
        down()
    }
    async fn pre_auth_ready(&self, _: &str, _: i64) -> StoreResult<PoolState> {
        down()
    }
    async fn restore_token(&self, _: &str, _: &CredentialRecord) -> StoreResult<bool> {
        down()
    }
    async fn pop_pre_auth(&self, _: &str, _: i64) -> StoreResult<Option<PreAuthCode>> {
        down()
    }
    async fn report_invalid(&self, _: &str, _: &str) -> StoreResult<bool> {
        down()
    }
    async fn acquire(&self, _: &str, _: u64) -> StoreResult<AcquireOutcome> {
        down()
    }
    async fn renew(&self, _: &LeaseId, _: u64) -> StoreResult<bool> {
        down()
    }
    async fn release(&self, _: &LeaseId) -> StoreResult<bool> {
        down()
    }
    async fn read_lease(&self) -> StoreResult<Option<LeaseView>> {
        down()
    }
    async fn claim_token(
        &self,
        _: &LeaseId,
        _: &str,
        _: i64,
        _: Option<&CredentialRecord>,
    ) -> StoreResult<ClaimOutcome> {
        down()
    }
    async fn write_token(
        &self,
        _: &LeaseId,
        _: &str,
        _: UnixMillis,
        _: &str,
        _: i64,
    ) -> StoreResult<WriteOutcome> {
        down()
    }
    async fn push_pre_auth(
        &self,
        _: &LeaseId,
        _: &str,
        _: UnixMillis,
        _: &str,
        _: i64,
    ) -> StoreResult<WriteOutcome> {
        down()
    }
    async fn restore_ticket(&self, _: &str, _: &TicketRecord) -> StoreResult<bool> {
        down()
    }
    async fn start_push_due(&self, _: &LeaseId, _: &str, _: i64) -> StoreResult<StartPush> {
        down()
    }
    async fn history(&self, _: usize) -> StoreResult<Vec<HistoryEvent>> {
        down()
    }
    async fn subscribe(&self) -> StoreResult<BoxStream<'static, Notice>> {
        down()
    }
}
