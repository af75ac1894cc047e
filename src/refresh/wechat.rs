//! The WeChat component API client: three calls, their timeouts, their metrics, and the
//! classification of every `errcode` into what the refresher should do about it.
//!
//! Tokens travel in query strings, so no error built here ever contains a URL
//! (`reqwest::Error::without_url`), and nothing logs a credential.
//!
//! Requests go over HTTP, or in-process into a router that speaks WeChat's wire format (the
//! simulator's): the same URL, query and JSON either way, but no socket, so tests can run a
//! simulated day on tokio's paused clock, which jumps ahead whenever a task waits on a socket.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// What the refresher does about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// System busy, timeouts, transport errors: retry with backoff, keep serving.
    Retry,
    /// Ticket expired or invalid (61005/61006): try the previous ticket once, then wait for a push.
    TicketInvalid,
    /// The token we used was superseded or expired (40001/40014/42001): refresh now (bounded).
    TokenInvalid,
    /// Daily quota reached (45009): stop calling; alert.
    QuotaExhausted,
    /// Too frequent (45011): back off.
    TooFrequent,
    /// Wrong appid/secret, component not set up, IP not whitelisted: alert, do not hammer.
    Configuration,
    /// Anything else WeChat says: treat as retryable, slowly.
    Unknown,
}

/// The pure table from PROTOCOL.md.
pub fn classify(errcode: i64) -> ErrorClass {
    match errcode {
        -1 => ErrorClass::Retry,
        61005 | 61006 => ErrorClass::TicketInvalid,
        40001 | 40014 | 42001 => ErrorClass::TokenInvalid,
        45009 => ErrorClass::QuotaExhausted,
        45011 => ErrorClass::TooFrequent,
        40013 | 40125 | 41004 | 61011 | 61004 => ErrorClass::Configuration,
        _ => ErrorClass::Unknown,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeChatError {
    #[error("WeChat answered errcode {errcode}")]
    Api { errcode: i64 },
    #[error("WeChat call failed: {0}")]
    Transport(String),
}

impl WeChatError {
    pub fn class(&self) -> ErrorClass {
        match self {
            WeChatError::Api { errcode } => classify(*errcode),
            WeChatError::Transport(_) => ErrorClass::Retry,
        }
    }
}

/// A credential as WeChat issued it.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    pub value: String,
    pub expires_in_s: i64,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("value", &crate::redact::fingerprint(&self.value))
            .field("expires_in_s", &self.expires_in_s)
            .finish()
    }
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    errcode: i64,
    component_access_token: Option<String>,
    pre_auth_code: Option<String>,
    expires_in: Option<i64>,
}

#[derive(Clone)]
pub struct WeChatClient {
    transport: Transport,
    base: url::Url,
    metrics: Arc<Metrics>,
}

#[derive(Clone)]
enum Transport {
    /// The client carries its own timeouts.
    Http(reqwest::Client),
    InProcess {
        router: axum::Router,
        timeout: Duration,
    },
}

/// Largest reply read from an in-process router (WeChat's replies are a few hundred bytes).
const IN_PROCESS_REPLY_LIMIT: usize = 64 * 1024;

impl WeChatClient {
    pub fn new(base: url::Url, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("wxkeeper/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("TLS backend available");
        Self {
            transport: Transport::Http(http),
            base,
            metrics,
        }
    }

    /// A client whose requests are answered by `router` in this process, never over a socket.
    pub fn in_process(router: axum::Router, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            transport: Transport::InProcess { router, timeout },
            base: url::Url::parse("http://wechat.in-process/").expect("a valid URL"),
            metrics,
        }
    }

    /// `api_component_token`: a new component_access_token from a ticket.
    pub async fn component_token(
        &self,
        appid: &str,
        secret: &str,
        ticket: &str,
    ) -> Result<Issued, WeChatError> {
        let body = json!({
            "component_appid": appid,
            "component_appsecret": secret,
            "component_verify_ticket": ticket,
        });
        let reply = self.post("api_component_token", &[], body).await?;
        issued(reply.component_access_token, reply.expires_in)
    }

    /// `api_create_preauthcode`: one single-use pre-auth code.
    pub async fn create_preauthcode(
        &self,
        appid: &str,
        token: &str,
    ) -> Result<Issued, WeChatError> {
        let body = json!({ "component_appid": appid });
        let reply = self
            .post(
                "api_create_preauthcode",
                &[("component_access_token", token)],
                body,
            )
            .await?;
        issued(reply.pre_auth_code, reply.expires_in)
    }

    /// `api_start_push_ticket`: asks WeChat to resume ticket pushes.
    pub async fn start_push_ticket(&self, appid: &str, secret: &str) -> Result<(), WeChatError> {
        let body = json!({ "component_appid": appid, "component_secret": secret });
        self.post("api_start_push_ticket", &[], body)
            .await
            .map(|_| ())
    }

    async fn post(
        &self,
        endpoint: &'static str,
        query: &[(&str, &str)],
        body: serde_json::Value,
    ) -> Result<Reply, WeChatError> {
        let mut url = self
            .base
            .join(&format!("cgi-bin/component/{endpoint}"))
            .map_err(|_| WeChatError::Transport("bad base URL".into()))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let started = Instant::now();
        let result = self.send(url, body).await;
        self.metrics
            .wechat_api_duration
            .with_label_values(&[endpoint])
            .observe(started.elapsed().as_secs_f64());
        let errcode = match &result {
            Ok(_) => "0".to_owned(),
            Err(WeChatError::Api { errcode }) => errcode.to_string(),
            Err(WeChatError::Transport(_)) => "transport".to_owned(),
        };
        self.metrics
            .wechat_api_requests
            .with_label_values(&[endpoint, &errcode])
            .inc();
        result
    }

    async fn send(&self, url: url::Url, body: serde_json::Value) -> Result<Reply, WeChatError> {
        let reply = match &self.transport {
            Transport::Http(http) => send_http(http, url, body).await?,
            Transport::InProcess { router, timeout } => {
                tokio::time::timeout(*timeout, send_in_process(router, url, body))
                    .await
                    .map_err(|_| WeChatError::Transport("timed out".into()))??
            }
        };
        if reply.errcode != 0 {
            return Err(WeChatError::Api {
                errcode: reply.errcode,
            });
        }
        Ok(reply)
    }
}

async fn send_http(
    http: &reqwest::Client,
    url: url::Url,
    body: serde_json::Value,
) -> Result<Reply, WeChatError> {
    let transport = |e: reqwest::Error| WeChatError::Transport(e.without_url().to_string());
    let response = http.post(url).json(&body).send().await.map_err(transport)?;
    if !response.status().is_success() {
        return Err(http_status(response.status()));
    }
    response.json().await.map_err(transport)
}

async fn send_in_process(
    router: &axum::Router,
    url: url::Url,
    body: serde_json::Value,
) -> Result<Reply, WeChatError> {
    use tower::ServiceExt;
    let path_and_query = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let request = axum::http::Request::post(path_and_query)
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .map_err(|e| WeChatError::Transport(format!("request not built: {e}")))?;
    let response = router
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| WeChatError::Transport(e.to_string()))?;
    if !response.status().is_success() {
        return Err(http_status(response.status()));
    }
    let bytes = axum::body::to_bytes(response.into_body(), IN_PROCESS_REPLY_LIMIT)
        .await
        .map_err(|e| WeChatError::Transport(format!("reply not read: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| WeChatError::Transport(format!("reply not JSON: {e}")))
}

fn http_status(status: reqwest::StatusCode) -> WeChatError {
    WeChatError::Transport(format!("HTTP {}", status.as_u16()))
}

fn issued(value: Option<String>, expires_in: Option<i64>) -> Result<Issued, WeChatError> {
    match (value, expires_in) {
        (Some(value), Some(expires_in_s)) if !value.is_empty() && expires_in_s > 0 => Ok(Issued {
            value,
            expires_in_s,
        }),
        _ => Err(WeChatError::Transport(
            "reply lacks the credential or expires_in".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errcodes_are_classified_as_protocol_md_says() {
        assert_eq!(classify(-1), ErrorClass::Retry);
        for c in [40001, 40014, 42001] {
            assert_eq!(classify(c), ErrorClass::TokenInvalid);
        }
        for c in [40013, 40125, 41004, 61011, 61004] {
            assert_eq!(classify(c), ErrorClass::Configuration);
        }
        assert_eq!(classify(45009), ErrorClass::QuotaExhausted);
        assert_eq!(classify(45011), ErrorClass::TooFrequent);
        assert_eq!(classify(61005), ErrorClass::TicketInvalid);
        assert_eq!(classify(61006), ErrorClass::TicketInvalid);
        assert_eq!(classify(12345), ErrorClass::Unknown);
        assert_eq!(
            WeChatError::Transport("x".into()).class(),
            ErrorClass::Retry
        );
    }

    /// A router that answers every path with `status` and `body`, and records what it got.
    fn wechat_answering(
        status: axum::http::StatusCode,
        body: &'static str,
        seen: Arc<std::sync::Mutex<Vec<String>>>,
    ) -> axum::Router {
        axum::Router::new().fallback(move |uri: axum::http::Uri, payload: String| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(format!("{uri} {payload}"));
                (status, body)
            }
        })
    }

    #[tokio::test]
    async fn in_process_requests_carry_the_wire_format_and_errors_are_classified() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let ok = WeChatClient::in_process(
            wechat_answering(
                axum::http::StatusCode::OK,
                r#"{"pre_auth_code":"code-1","expires_in":600}"#,
                seen.clone(),
            ),
            Duration::from_secs(1),
            Arc::new(Metrics::new()),
        );
        let issued = ok.create_preauthcode("wxappid", "tok+en").await.unwrap();
        assert_eq!(
            (issued.value.as_str(), issued.expires_in_s),
            ("code-1", 600)
        );
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            [
                r#"/cgi-bin/component/api_create_preauthcode?component_access_token=tok%2Ben {"component_appid":"wxappid"}"#
            ]
        );

        let revoked = WeChatClient::in_process(
            wechat_answering(
                axum::http::StatusCode::OK,
                r#"{"errcode":40001,"errmsg":"invalid credential"}"#,
                seen.clone(),
            ),
            Duration::from_secs(1),
            Arc::new(Metrics::new()),
        );
        let e = revoked
            .create_preauthcode("wxappid", "t")
            .await
            .unwrap_err();
        assert_eq!(e.class(), ErrorClass::TokenInvalid);

        let broken = WeChatClient::in_process(
            wechat_answering(axum::http::StatusCode::BAD_GATEWAY, "", seen),
            Duration::from_secs(1),
            Arc::new(Metrics::new()),
        );
        let e = broken
            .start_push_ticket("wxappid", "secret")
            .await
            .unwrap_err();
        assert_eq!(e, WeChatError::Transport("HTTP 502".into()));
    }

    #[test]
    fn issued_requires_value_and_lifetime() {
        assert!(issued(Some("t".into()), Some(7200)).is_ok());
        assert!(issued(None, Some(7200)).is_err());
        assert!(issued(Some(String::new()), Some(7200)).is_err());
        assert!(issued(Some("t".into()), Some(0)).is_err());
        let debug = format!(
            "{:?}",
            Issued {
                value: "secret".into(),
                expires_in_s: 1
            }
        );
        assert!(!debug.contains("secret"));
    }
}
