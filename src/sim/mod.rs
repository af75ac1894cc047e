//! The WeChat simulator: a stand-in for `api.weixin.qq.com` and for WeChat's ticket pushes,
//! used by the tests, `wxkeeper demo` and staging (`wxkeeper simulate`).
//!
//! It speaks only the wire format and shares no code with wxkeeper's client or refresher, so
//! it cannot agree with their bugs; it uses [`crate::crypto`] only to *produce* pushes.
//!
//! | module | owns |
//! |---|---|
//! | `options` | the `simulate` flags and their defaults |
//! | `wire` | WeChat's JSON bodies and errcode table |
//! | `state` | tokens, tickets, pre-auth codes, validity rules, counters (no HTTP, time passed in) |
//! | `stats` | the counters' JSON (`GET /sim/stats`) |
//! | `api` | the three WeChat endpoints: latency, error injection, the token-call window |
//! | `http` | the axum router: WeChat's paths and the `/sim/*` control paths |
//! | `pusher` | building, signing, encrypting and sending `component_verify_ticket` pushes |
//!
//! Data flow: a request → `http` (parse query and body) → `api` (count, wait `--latency`,
//! maybe inject an error) → `state` (decide) → `wire` (answer). The pusher asks `state` for a
//! new ticket, encrypts it with the platform's EncodingAESKey and POSTs it to one replica.
//!
//! Time: every lifetime uses `tokio::time::Instant`, so `tokio::time::pause()` drives it; only
//! a push's `CreateTime` reads the wall clock ([`WallClock`]), as WeChat's does. Pushes go over
//! real HTTP with a 5 s timeout, so tests that push should not pause time (the paused clock
//! would jump to the timeout while the socket is busy).
//!
//! Errcodes: a token unknown, revoked, or superseded past the grace period is 40001 ("invalid
//! or not latest", what users of several refreshers report); a token past its own lifetime is
//! 42001 ("expired"). The rest are listed in `wire::WxError`.

mod api;
mod http;
mod options;
mod pusher;
mod state;
mod stats;
mod wire;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::WallClock;
use crate::config::PlatformConfig;
use crate::crypto::{AesKey, CryptoError};

pub use options::SimOptions;
pub use pusher::PushReport;
pub use stats::{CallCounts, Counters, PlatformStats, SimStats, TicketInfo};

/// One third-party platform as WeChat knows it. `Debug` shows the appid only.
#[derive(Clone)]
pub struct SimPlatform {
    pub appid: String,
    pub appsecret: String,
    /// Message verification Token, signs pushes.
    pub token: String,
    /// Decoded EncodingAESKey, encrypts pushes. Held decoded (as `PlatformConfig` holds it) so a
    /// bad key is refused before the simulator exists, never at the first push.
    pub aes_key: AesKey,
}

impl SimPlatform {
    /// From the four console values; fails only on an EncodingAESKey that does not decode.
    pub fn new(
        appid: impl Into<String>,
        appsecret: impl Into<String>,
        token: impl Into<String>,
        encoding_aes_key: &str,
    ) -> Result<Self, CryptoError> {
        Ok(Self {
            appid: appid.into(),
            appsecret: appsecret.into(),
            token: token.into(),
            aes_key: AesKey::from_encoding_aes_key(encoding_aes_key)?,
        })
    }
}

/// `wxkeeper simulate` reads its platforms from the same configuration as `serve`.
impl From<&PlatformConfig> for SimPlatform {
    fn from(p: &PlatformConfig) -> Self {
        Self {
            appid: p.appid.clone(),
            appsecret: p.appsecret.expose_secret().to_owned(),
            token: p.token.expose_secret().to_owned(),
            aes_key: p.aes_key.clone(),
        }
    }
}

impl std::fmt::Debug for SimPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimPlatform")
            .field("appid", &self.appid)
            .finish_non_exhaustive()
    }
}

/// Why a push could not even be attempted. A push the replica refused is not an error: it is
/// a [`PushReport`] with `accepted: false`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("no platform is configured")]
    NoPlatform,
    #[error("platform {0} is not configured")]
    UnknownPlatform(String),
    #[error("no push target: give --push-to or call set_push_targets")]
    NoPushTarget,
}

/// The simulated WeChat. Cheap to clone: every clone shares one state.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    options: SimOptions,
    /// Only for a push's `CreateTime`, the one wall-clock value WeChat sends.
    wall_clock: WallClock,
    /// Signing and encryption material per platform, in configuration order.
    push_keys: Vec<PushKeys>,
    /// A std `Mutex`: it is never held across an `.await`, and every critical section is a few
    /// map operations.
    state: Mutex<state::State>,
    /// Bumped after every state change, so waiters need no polling.
    changed: watch::Sender<u64>,
    /// Replica base URLs; a watch so the pusher can wait for the first one.
    targets: watch::Sender<Vec<String>>,
    http: reqwest::Client,
    /// Pushes requested through `api_start_push_ticket`, awaited by `serve` on shutdown.
    tasks: TaskTracker,
}

struct PushKeys {
    appid: String,
    token: String,
    aes_key: AesKey,
}

impl Simulator {
    /// A simulator for `platforms`, stamping pushes with the system's wall clock.
    pub fn new(platforms: Vec<SimPlatform>, opts: SimOptions) -> Self {
        Self::with_wall_clock(platforms, opts, WallClock::system())
    }

    /// As [`Simulator::new`], with the wall clock that stamps each push's `CreateTime` (give
    /// it the replicas' clock when they run on a compressed or fixed one).
    pub fn with_wall_clock(
        platforms: Vec<SimPlatform>,
        opts: SimOptions,
        wall_clock: WallClock,
    ) -> Self {
        let settings = state::Settings {
            token_ttl: opts.token_ttl,
            preauth_ttl: opts.preauth_ttl,
            grace: opts.grace,
            ticket_ttl: opts.ticket_ttl,
            token_quota: opts.token_quota,
        };
        let state = state::State::new(
            settings,
            platforms
                .iter()
                .map(|p| (p.appid.clone(), p.appsecret.clone())),
            Instant::now(),
        );
        let push_keys = platforms
            .into_iter()
            .map(|p| PushKeys {
                aes_key: p.aes_key,
                appid: p.appid,
                token: p.token,
            })
            .collect();
        let http = reqwest::Client::builder()
            .timeout(pusher::PUSH_TIMEOUT)
            // WeChat reaches the replica directly: no proxy from the environment, no redirects.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client with default TLS settings builds");
        Self {
            inner: Arc::new(Inner {
                targets: watch::Sender::new(base_urls(opts.push_to.clone())),
                options: opts,
                wall_clock,
                push_keys,
                state: Mutex::new(state),
                changed: watch::Sender::new(0),
                http,
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// Every endpoint: WeChat's `/cgi-bin/component/*` and the `/sim/*` control paths.
    pub fn router(&self) -> axum::Router {
        http::router(self.clone())
    }

    /// Serves [`Simulator::router`] on `listener` until `shutdown`, then waits for pushes
    /// requested through `api_start_push_ticket` (each bounded by the 5 s push timeout).
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        served
    }

    /// Pushes a new ticket for every platform at once (waiting first for a push target if
    /// there is none yet), then again every `--push-every`, until `shutdown`.
    pub fn spawn_pusher(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(pusher::run(self.clone(), shutdown))
    }

    /// Pushes one new ticket for `appid` (None: the first configured platform) to one push
    /// target chosen at random.
    pub async fn push_now(&self, appid: Option<&str>) -> Result<PushReport, SimError> {
        pusher::push_once(self, appid).await
    }

    /// The counters, as `GET /sim/stats` answers them.
    pub fn stats(&self) -> SimStats {
        self.lock().stats(Instant::now())
    }

    /// Replaces the push targets (replica base URLs such as `http://127.0.0.1:8080`).
    pub fn set_push_targets(&self, urls: Vec<String>) {
        self.inner.targets.send_replace(base_urls(urls));
    }

    /// Every token of the platform becomes invalid now, as when a staging system using the
    /// production appid fetched one. Unknown appids are ignored.
    pub fn revoke_tokens(&self, appid: &str) {
        self.update(|s, now| s.revoke(appid, now));
    }

    /// Whether WeChat would accept this `component_access_token` now (`GET /sim/validate`).
    pub fn token_is_valid(&self, token: &str) -> bool {
        self.lock().token_is_valid(token, Instant::now())
    }

    /// Uses a pre-auth code as the authorization page would: true only the first time, and
    /// only while unexpired (`GET /sim/validate?pre_auth_code=`).
    pub fn use_pre_auth_code(&self, code: &str) -> bool {
        self.update(|s, now| s.use_pre_auth_code(code, now))
    }

    /// Resolves once `done` holds for the stats; re-checked after every change, never polled.
    /// Lets tests and the demo wait for "a token was issued" or "a push was sent".
    pub async fn wait_until(&self, done: impl Fn(&SimStats) -> bool) {
        let mut changed = self.inner.changed.subscribe();
        while !done(&self.stats()) {
            // The sender lives in `self`, so it cannot be dropped while we wait.
            let _ = changed.changed().await;
        }
    }

    fn has_platform(&self, appid: &str) -> bool {
        self.inner.push_keys.iter().any(|k| k.appid == appid)
    }

    fn options(&self) -> &SimOptions {
        &self.inner.options
    }

    fn lock(&self) -> MutexGuard<'_, state::State> {
        // A panic elsewhere must not take the simulator down with it: the state is plain data
        // and every update leaves it consistent before it could panic.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the state at `now`, then wakes [`Simulator::wait_until`].
    fn update<R>(&self, f: impl FnOnce(&mut state::State, Instant) -> R) -> R {
        let result = f(&mut self.lock(), Instant::now());
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
        result
    }

    fn latency(&self) -> Duration {
        self.options().latency
    }
}

/// `http://host:port/` and `http://host:port` name the same replica.
fn base_urls(urls: Vec<String>) -> Vec<String> {
    urls.into_iter()
        .map(|u| u.trim_end_matches('/').to_owned())
        .collect()
}

#[cfg(test)]
mod tests;
