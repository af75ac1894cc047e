//! The one place that wires concrete parts together: [`App::build`] binds both listeners
//! (port 0 allowed, so tests and the demo pick free ports) and [`App::run_until_stopped`]
//! serves until the shutdown token fires, then stops in the contract's order:
//!
//! 1. `/readyz` turns 503 and no new leader work starts (the term is cancelled);
//! 2. an in-flight WeChat call finishes (bounded by its timeout) and its fenced write lands;
//! 3. the lease is released, so a successor starts at once;
//! 4. in-flight HTTP requests finish within `WXKEEPER_SHUTDOWN_GRACE`.

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admin::{self, AdminState, Lifecycle};
use crate::callback::{self, CallbackState};
use crate::clock::WallClock;
use crate::config::Config;
use crate::lease::decide::Timing;
use crate::lease::elector::{self, ElectorParams};
use crate::metrics::Metrics;
use crate::notices::NoticeHub;
use crate::refresh::wechat::WeChatClient;
use crate::refresh::{self, RefresherDeps};
use crate::store::{self, SharedStore};
use crate::view::CredentialView;

/// Knobs that are not operator configuration: tests and the demo set them.
#[derive(Clone)]
pub struct AppOptions {
    pub clock: WallClock,
    /// Use this store instead of opening `config.redis_url` (the demo's shared embedded store).
    pub store: Option<SharedStore>,
    /// The safety poll of the in-memory credential copy (notices do the real work).
    pub view_poll: Duration,
    /// Timeout of each WeChat call.
    pub wechat_timeout: Duration,
    /// Answer WeChat calls with this router in-process instead of calling
    /// `config.wechat_api_base` over HTTP (tests on tokio's paused clock).
    pub wechat_router: Option<axum::Router>,
    /// How long after start a replica that found no token in a shared store holds token reads
    /// that would answer 503, waiting for one to be written back (see [`RESTORE_WAIT`]).
    pub restore_wait: Duration,
}

/// A Redis restarted empty loses the token while the running replicas still hold it; they
/// write it back once their notice subscription is re-made (backoff ≤ 0.5 s) and a reload
/// succeeds (retried at most every 2 s). A replica that starts in that window is ready (the
/// store answered) with nothing to serve; rather than answer 503 while a valid token exists,
/// its token reads wait for the write-back, this long after start at most. In a fresh
/// deployment, with no token anywhere yet, reads in that window answer 503 this much later.
pub const RESTORE_WAIT: Duration = Duration::from_secs(3);

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            clock: WallClock::system(),
            store: None,
            view_poll: Duration::from_secs(30),
            wechat_timeout: Duration::from_secs(10),
            wechat_router: None,
            restore_wait: RESTORE_WAIT,
        }
    }
}

pub struct App {
    config: Arc<Config>,
    options: AppOptions,
    http: TcpListener,
    admin: TcpListener,
    store: SharedStore,
    metrics: Arc<Metrics>,
    holder: String,
}

impl App {
    /// Opens the store (lazily: no connection yet) and binds both listeners.
    pub async fn build(config: Config, options: AppOptions) -> anyhow::Result<Self> {
        let timing = Timing::new(config.lease_ttl);
        let store = match &options.store {
            Some(s) => s.clone(),
            None => {
                use secrecy::ExposeSecret;
                store::open(
                    config.redis_url.expose_secret(),
                    &config.key_prefix,
                    timing.op_timeout(),
                )
                .context("opening the store")?
            }
        };
        let http = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let admin = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("binding {}", config.admin_listen))?;
        let metrics = Arc::new(Metrics::new());
        metrics.init_series(config.platforms.iter().map(|p| p.appid.as_str()));
        Ok(Self {
            config: Arc::new(config),
            options,
            http,
            admin,
            store,
            metrics,
            holder: uuid::Uuid::new_v4().to_string(),
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound listener")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().expect("bound listener")
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    pub fn store(&self) -> SharedStore {
        self.store.clone()
    }

    /// Serves until `shutdown` fires, then stops gracefully (see the module docs).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            config,
            options,
            http,
            admin,
            store,
            metrics,
            holder,
        } = self;
        let timing = Timing::new(config.lease_ttl);
        let background = CancellationToken::new();
        let leader_stop = CancellationToken::new();
        let lifecycle = Arc::new(Lifecycle::default());
        let platforms: Vec<String> = config.platforms.iter().map(|p| p.appid.clone()).collect();

        let (hub, hub_task) = NoticeHub::spawn(store.clone(), background.clone());
        let view = Arc::new(CredentialView::new(
            platforms.clone(),
            store.clone(),
            metrics.clone(),
            options.clock,
            config.pre_auth_margin,
        ));
        let (leadership, elector_task) = elector::spawn(
            ElectorParams {
                holder: holder.clone(),
                timing,
            },
            store.clone(),
            &hub,
            metrics.clone(),
            leader_stop.clone(),
        );
        let wake = Arc::new(Notify::new());
        let refresher = refresh::spawn(
            Arc::new(RefresherDeps {
                platforms: config.platforms.clone(),
                store: store.clone(),
                view: view.clone(),
                client: match options.wechat_router.clone() {
                    Some(router) => {
                        WeChatClient::in_process(router, options.wechat_timeout, metrics.clone())
                    }
                    None => WeChatClient::new(
                        config.wechat_api_base.clone(),
                        options.wechat_timeout,
                        metrics.clone(),
                    ),
                },
                metrics: metrics.clone(),
                refresh_margin: config.refresh_margin,
                pre_auth_margin: config.pre_auth_margin,
                pre_auth_pool: config.pre_auth_pool,
                wake: wake.clone(),
            }),
            leadership.clone(),
            &hub,
            leader_stop.clone(),
        );
        let sync_task = view
            .clone()
            .spawn_sync(&hub, options.view_poll, background.clone());

        let callback_state = CallbackState {
            platforms: Arc::new(
                config
                    .platforms
                    .iter()
                    .map(|p| (p.appid.clone(), p.clone()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            store: store.clone(),
            metrics: metrics.clone(),
            clock: options.clock,
            max_skew: config.callback_max_skew,
        };
        let main_router =
            callback::router(callback_state).merge(crate::api::router(crate::api::ApiState {
                view: view.clone(),
                store: store.clone(),
                metrics: metrics.clone(),
                api_keys: Arc::new(config.api_keys.clone()),
                pre_auth_margin: config.pre_auth_margin,
                wake: wake.clone(),
            }));
        let admin_router = admin::router(AdminState {
            metrics: metrics.clone(),
            lifecycle: lifecycle.clone(),
            view: view.clone(),
            leadership: leadership.clone(),
            holder: holder.clone(),
            store_kind: store.kind(),
            store_url: config.redis_url_redacted(),
        });

        let http_stop = CancellationToken::new();
        let admin_stop = CancellationToken::new();
        let http_addr = http.local_addr()?;
        let admin_addr = admin.local_addr()?;
        let http_task = tokio::spawn(
            axum::serve(http, main_router)
                .with_graceful_shutdown(http_stop.clone().cancelled_owned())
                .into_future(),
        );
        let admin_task = tokio::spawn(
            axum::serve(admin, admin_router)
                .with_graceful_shutdown(admin_stop.clone().cancelled_owned())
                .into_future(),
        );
        info!(%http_addr, %admin_addr, replica = %holder, store = store.kind(), "serving");

        // Ready once the store has been contacted and the stored credentials are in memory.
        let ready_task = {
            let view = view.clone();
            let lifecycle = lifecycle.clone();
            let restore_wait = if store.is_shared_between_processes() {
                options.restore_wait
            } else {
                Duration::ZERO
            };
            tokio::spawn(async move {
                let mut backoff = Duration::from_millis(100);
                loop {
                    match view.reload_all().await {
                        Ok(()) => {
                            if !restore_wait.is_zero() && !view.has_every_token() {
                                view.expect_restore_until(
                                    tokio::time::Instant::now() + restore_wait,
                                );
                            }
                            lifecycle.set_ready();
                            info!("store contacted, credentials loaded: ready");
                            return;
                        }
                        Err(e) => {
                            warn!(error = %e, "store not reachable yet; not ready");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                        }
                    }
                }
            })
        };

        shutdown.cancelled().await;
        info!("shutting down: not ready, no new leader work");
        lifecycle.set_stopping();
        ready_task.abort();
        leader_stop.cancel();
        let held = elector_task.await.ok().flatten();
        if tokio::time::timeout(options.wechat_timeout + Duration::from_secs(1), refresher)
            .await
            .is_err()
        {
            warn!("refresher did not stop within the WeChat timeout");
        }
        if let Some(id) = held {
            elector::release(&store, &id, &metrics).await;
        }
        http_stop.cancel();
        let graceful = match tokio::time::timeout(config.shutdown_grace, http_task).await {
            Ok(joined) => joined.is_ok(),
            Err(_) => false,
        };
        admin_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), admin_task).await;
        background.cancel();
        let _ = hub_task.await;
        let _ = sync_task.await;
        if graceful {
            info!("stopped gracefully");
        } else {
            warn!(grace = ?config.shutdown_grace, "in-flight requests did not finish within the grace; stopped");
        }
        Ok(())
    }
}
