//! The real app in-process on free ports, a WeChat simulator beside it, and typed requests.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wxkeeper::app::{App, AppOptions};
use wxkeeper::config::{Config, LogFormat, PlatformConfig};
use wxkeeper::crypto::{self, AesKey};
use wxkeeper::sim::{SimOptions, SimPlatform, Simulator};
use wxkeeper::store::SharedStore;

pub const APPID: &str = "wx134c8103faa5a59e";
pub const TOKEN: &str = "AAAAA";
/// Ends in 'G': its trailing bits are non-zero, as console-generated keys may be.
pub const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
pub const SECRET: &str = "component-secret";
pub const API_KEY: &str = "test-api-key";

pub fn platform() -> PlatformConfig {
    PlatformConfig {
        appid: APPID.into(),
        appsecret: SecretString::from(SECRET),
        token: SecretString::from(TOKEN),
        aes_key: AesKey::from_encoding_aes_key(AES_KEY).unwrap(),
    }
}

/// A configuration on 127.0.0.1 port 0 with test timings.
pub fn config(redis_url: &str, wechat_base: &str) -> Config {
    Config {
        redis_url: SecretString::from(redis_url.to_owned()),
        key_prefix: "wxkeeper:".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        wechat_api_base: url::Url::parse(wechat_base).unwrap(),
        api_keys: vec![SecretString::from(API_KEY)],
        lease_ttl: Duration::from_secs(1),
        refresh_margin: Duration::from_secs(15 * 60),
        pre_auth_margin: Duration::from_secs(120),
        pre_auth_pool: 2,
        callback_max_skew: Duration::from_secs(3600),
        shutdown_grace: Duration::from_secs(2),
        log_format: LogFormat::Text,
        platforms: vec![platform()],
    }
}

/// The WeChat simulator on a free port.
pub struct Sim {
    pub sim: Simulator,
    pub base: String,
    stop: CancellationToken,
}

impl Sim {
    pub async fn start(opts: SimOptions) -> Self {
        let p = SimPlatform::new(APPID, SECRET, TOKEN, AES_KEY).unwrap();
        let sim = Simulator::new(vec![p], opts);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        tokio::spawn({
            let sim = sim.clone();
            let stop = stop.clone();
            async move { sim.serve(listener, stop).await }
        });
        Self { sim, base, stop }
    }

    /// Lifetimes short enough for tests: token 20 s, pre-auth 10 s.
    pub fn short() -> SimOptions {
        SimOptions {
            token_ttl: Duration::from_secs(20),
            preauth_ttl: Duration::from_secs(10),
            grace: Duration::from_secs(5),
            ..SimOptions::default()
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub struct TestApp {
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub store: SharedStore,
    pub holder: String,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<anyhow::Result<()>>>,
    pub client: reqwest::Client,
}

impl TestApp {
    /// The app with test options: most tests start on an empty store, where waiting for
    /// another replica to write a token back would only slow them (that wait has its own test).
    pub async fn spawn(config: Config, store: Option<SharedStore>) -> Self {
        Self::spawn_with(config, Self::options(store)).await
    }

    pub fn options(store: Option<SharedStore>) -> AppOptions {
        AppOptions {
            store,
            wechat_timeout: Duration::from_secs(2),
            restore_wait: Duration::ZERO,
            ..AppOptions::default()
        }
    }

    pub async fn spawn_with(config: Config, options: AppOptions) -> Self {
        let app = App::build(config, options).await.expect("app builds");
        let (http, admin, store) = (app.http_addr(), app.admin_addr(), app.store());
        let holder = app.holder().to_owned();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self {
            http,
            admin,
            store,
            holder,
            shutdown,
            task: Some(task),
            client: reqwest::Client::new(),
        }
    }

    /// Graceful stop, as on SIGTERM; waits until the app has finished.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }

    pub async fn ready(&self) -> bool {
        self.client
            .get(format!("http://{}/readyz", self.admin))
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    }

    /// Waits (bounded) for `/readyz` 200.
    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if self.ready().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("app not ready within 5 s");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub async fn get_token(&self) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v1/platforms/{APPID}/component_access_token")))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
    }

    pub async fn take_pre_auth(&self) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/platforms/{APPID}/pre_auth_code")))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
    }

    pub async fn report_invalid(&self, token: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!(
                "/v1/platforms/{APPID}/component_access_token/invalid"
            )))
            .bearer_auth(API_KEY)
            .json(&serde_json::json!({ "component_access_token": token }))
            .send()
            .await
            .unwrap()
    }

    pub async fn metrics_text(&self) -> String {
        self.client
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// POSTs a push to `/callback/{appid}`.
    pub async fn post_push(&self, appid: &str, push: &Push) -> (u16, String) {
        let r = self
            .client
            .post(self.url(&format!("/callback/{appid}?{}", push.query)))
            .header("content-type", "text/xml")
            .body(push.body.clone())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A push as WeChat would send it.
#[derive(Clone, Debug)]
pub struct Push {
    pub query: String,
    pub body: String,
}

pub fn now_secs() -> i64 {
    wxkeeper::clock::WallClock::system().now_secs()
}

/// Builds a signed, encrypted `component_verify_ticket` push.
pub fn ticket_push(ticket: &str, create_time: i64) -> Push {
    let inner = format!(
        "<xml><AppId><![CDATA[{APPID}]]></AppId><CreateTime>{create_time}</CreateTime><InfoType><![CDATA[component_verify_ticket]]></InfoType><ComponentVerifyTicket><![CDATA[{ticket}]]></ComponentVerifyTicket></xml>"
    );
    signed_push(inner.as_bytes(), APPID, now_secs())
}

/// Encrypts `inner` for `appid` with the test key and signs it with the test token.
pub fn signed_push(inner: &[u8], appid: &str, timestamp: i64) -> Push {
    let key = AesKey::from_encoding_aes_key(AES_KEY).unwrap();
    let encrypt = crypto::encrypt(&key, rand::random(), inner, appid);
    signed_envelope(&encrypt, timestamp)
}

/// Signs an arbitrary `Encrypt` value (which may be garbage) correctly.
pub fn signed_envelope(encrypt: &str, timestamp: i64) -> Push {
    let ts = timestamp.to_string();
    let nonce = "1234567890";
    let sig = crypto::msg_signature(TOKEN, &ts, nonce, encrypt);
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("signature", "unused")
        .append_pair("timestamp", &ts)
        .append_pair("nonce", nonce)
        .append_pair("encrypt_type", "aes")
        .append_pair("msg_signature", &sig)
        .finish();
    Push {
        query,
        body: format!(
            "<xml><AppId><![CDATA[{APPID}]]></AppId><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        ),
    }
}
