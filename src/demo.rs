//! `wxkeeper demo`: the whole system on one machine in one command.
//!
//! The WeChat simulator, three replicas and the embedded store (or `--redis-url`), bound to
//! 127.0.0.1 on ports picked here, with time compressed (token lifetime 60 s, pre-auth codes
//! 30 s, a push every 5 s, lease TTL 2 s). Each replica runs on its own runtime, so "killing"
//! one drops all its tasks at once, as a crash would; kills alternate between a crash (the
//! lease must expire) and a graceful stop (the lease is released). A live line is printed per
//! event, and a summary at the end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use rand::distributions::{Alphanumeric, DistString};
use rand::Rng;
use secrecy::SecretString;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::app::{App, AppOptions};
use crate::cli::Failure;
use crate::clock::WallClock;
use crate::config::{parse_duration, Config, LogFormat, PlatformConfig};
use crate::crypto::AesKey;
use crate::sim::{SimOptions, SimPlatform, Simulator};
use crate::store::{memory::MemoryStore, CredentialKind, Notice, SharedStore};

const TOKEN_TTL: Duration = Duration::from_secs(60);
const PREAUTH_TTL: Duration = Duration::from_secs(30);
const PUSH_EVERY: Duration = Duration::from_secs(5);
const LEASE_TTL: Duration = Duration::from_secs(2);
const REFRESH_MARGIN: Duration = Duration::from_secs(20);

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// End after this long with a summary (default: run until Ctrl-C).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// Stop the current leader's replica this often and start it again (crash and graceful stop alternate).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub kill_leader_every: Option<Duration>,
    /// Use this Redis instead of the embedded store (keys under a fresh demo prefix).
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Number of replicas.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
    pub replicas: u8,
}

/// A replica on its own runtime: dropping the runtime is a crash.
struct Replica {
    runtime: Option<tokio::runtime::Runtime>,
    stop: CancellationToken,
    done: Option<tokio::sync::oneshot::Receiver<()>>,
}

struct Demo {
    args: DemoArgs,
    started: Instant,
    platform: PlatformConfig,
    api_key: String,
    prefix: String,
    shared_store: Option<SharedStore>,
    ports: Vec<(SocketAddr, SocketAddr)>,
    replicas: Vec<Option<Replica>>,
    holders: BTreeMap<String, usize>,
    observer_store: SharedStore,
}

fn random_platform() -> PlatformConfig {
    let mut rng = rand::thread_rng();
    let appid = format!("wxdemo{:010x}", rng.gen::<u64>() & 0xff_ffff_ffff);
    let key: String = (0..43)
        .map(|_| {
            const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            B64[rng.gen_range(0..64)] as char
        })
        .collect();
    PlatformConfig {
        appid,
        appsecret: SecretString::from(Alphanumeric.sample_string(&mut rng, 32)),
        token: SecretString::from(Alphanumeric.sample_string(&mut rng, 16)),
        aes_key: AesKey::from_encoding_aes_key(&key).expect("43 base64 characters"),
    }
}

impl Demo {
    fn elapsed(&self) -> String {
        format!("[{:>6.1}s]", self.started.elapsed().as_secs_f64())
    }

    fn say(&self, line: impl std::fmt::Display) {
        println!("{} {line}", self.elapsed());
    }

    fn config(&self, i: usize, sim_addr: SocketAddr) -> Config {
        let (http, admin) = self.ports[i];
        Config {
            redis_url: SecretString::from(
                self.args
                    .redis_url
                    .clone()
                    .unwrap_or_else(|| "memory://".into()),
            ),
            key_prefix: self.prefix.clone(),
            listen: http,
            admin_listen: admin,
            wechat_api_base: url::Url::parse(&format!("http://{sim_addr}/")).expect("url"),
            api_keys: vec![SecretString::from(self.api_key.clone())],
            lease_ttl: LEASE_TTL,
            refresh_margin: REFRESH_MARGIN,
            pre_auth_margin: Duration::from_secs(120),
            pre_auth_pool: 2,
            callback_max_skew: Duration::from_secs(3600),
            shutdown_grace: Duration::from_secs(2),
            log_format: LogFormat::Text,
            platforms: vec![self.platform.clone()],
        }
    }

    /// Starts replica `i` on its own runtime and waits until it is bound.
    async fn start(&mut self, i: usize, sim_addr: SocketAddr) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("replica-{}", i + 1))
            .enable_all()
            .build()?;
        let config = self.config(i, sim_addr);
        let options = AppOptions {
            store: self.shared_store.clone(),
            wechat_timeout: Duration::from_secs(2),
            ..AppOptions::default()
        };
        let stop = CancellationToken::new();
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let token = stop.clone();
        runtime.spawn(async move {
            match App::build(config, options).await {
                Ok(app) => {
                    let _ = bound_tx.send(Ok(app.holder().to_owned()));
                    let _ = app.run_until_stopped(token).await;
                }
                Err(e) => {
                    let _ = bound_tx.send(Err(e));
                }
            }
            let _ = done_tx.send(());
        });
        let holder = match bound_rx.await {
            Ok(Ok(holder)) => holder,
            failed => {
                // Dropping a runtime blocks: do it where blocking is allowed.
                let _ = tokio::task::spawn_blocking(move || drop(runtime)).await;
                return Err(match failed {
                    Ok(Err(e)) => e,
                    _ => anyhow::anyhow!("replica {} did not start", i + 1),
                });
            }
        };
        self.holders.insert(holder.clone(), i + 1);
        self.replicas[i] = Some(Replica {
            runtime: Some(runtime),
            stop,
            done: Some(done_rx),
        });
        Ok(())
    }

    /// Crash: drop the runtime (no release). Graceful: cancel and wait for the clean stop.
    async fn stop(&mut self, i: usize, crash: bool) {
        let Some(mut r) = self.replicas[i].take() else {
            return;
        };
        if !crash {
            r.stop.cancel();
            if let Some(done) = r.done.take() {
                let _ = tokio::time::timeout(Duration::from_secs(10), done).await;
            }
        }
        // Dropping the runtime drops every task of the replica at once (its sockets close, its
        // lease is left to expire). It blocks until they are gone, so not on this thread.
        if let Some(rt) = r.runtime.take() {
            let _ =
                tokio::task::spawn_blocking(move || rt.shutdown_timeout(Duration::from_secs(5)))
                    .await;
        }
    }
}

/// Runs the demo until `--duration` or Ctrl-C.
pub async fn run(args: DemoArgs) -> Result<(), Failure> {
    if std::env::var_os("RUST_LOG").is_none() {
        crate::cli::init_logging_with("warn", LogFormat::Text);
    } else {
        crate::cli::init_logging(LogFormat::Text);
    }
    let platform = random_platform();
    let prefix = format!("wxkeeper-demo-{}:", uuid::Uuid::new_v4().simple());
    let shared_store: Option<SharedStore> = match &args.redis_url {
        None => Some(Arc::new(MemoryStore::new(WallClock::system()))),
        Some(_) => None,
    };
    let observer_store = match (&shared_store, &args.redis_url) {
        (Some(s), _) => s.clone(),
        (None, Some(url)) => crate::store::open(url, &prefix, Duration::from_millis(500))
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        (None, None) => unreachable!("one of the two is set"),
    };

    // The simulator, on this runtime.
    let sim_opts = SimOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        token_ttl: TOKEN_TTL,
        preauth_ttl: PREAUTH_TTL,
        push_every: PUSH_EVERY,
        grace: Duration::from_secs(30),
        ..SimOptions::default()
    };
    let sim_platform = SimPlatform::from(&platform);
    let sim = Simulator::new(vec![sim_platform], sim_opts);
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(anyhow::Error::from)?;
    let sim_addr = sim_listener.local_addr().map_err(anyhow::Error::from)?;
    let sim_stop = CancellationToken::new();
    tokio::spawn({
        let sim = sim.clone();
        let stop = sim_stop.clone();
        async move { sim.serve(sim_listener, stop).await }
    });

    let n = args.replicas as usize;
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        ports.push((free_local_addr()?, free_local_addr()?));
    }
    let mut demo = Demo {
        args: args.clone(),
        started: Instant::now(),
        api_key: Alphanumeric.sample_string(&mut rand::thread_rng(), 24),
        platform,
        prefix,
        shared_store,
        ports,
        replicas: (0..n).map(|_| None).collect(),
        holders: BTreeMap::new(),
        observer_store,
    };
    for i in 0..n {
        demo.start(i, sim_addr).await?;
    }
    sim.set_push_targets(
        demo.ports
            .iter()
            .map(|(h, _)| format!("http://{h}"))
            .collect(),
    );

    let store_kind = if demo.args.redis_url.is_some() {
        "Redis"
    } else {
        "the embedded store"
    };
    println!("wxkeeper demo: WeChat simulator on http://{sim_addr}, {n} replicas on {store_kind}, lease TTL {LEASE_TTL:?}, token lifetime {TOKEN_TTL:?}, pre-auth {PREAUTH_TTL:?}, a push every {PUSH_EVERY:?}.");
    for (i, (http, admin)) in demo.ports.iter().enumerate() {
        println!("  replica {}: http://{http}  metrics http://{admin}/metrics  status http://{admin}/status", i + 1);
    }
    println!(
        "  token API: curl -s -H 'Authorization: Bearer {}' http://{}/v1/platforms/{}/component_access_token",
        demo.api_key, demo.ports[0].0, demo.platform.appid
    );
    println!(
        "  pre-auth:  curl -s -X POST -H 'Authorization: Bearer {}' http://{}/v1/platforms/{}/pre_auth_code",
        demo.api_key, demo.ports[0].0, demo.platform.appid
    );
    println!("  simulator stats: curl -s http://{sim_addr}/sim/stats\n");

    let mut summary = Summary::default();
    let ctrl_c = crate::cli::signal_shutdown();
    let end = demo.args.duration.map(|d| Instant::now() + d);
    let mut notices = demo
        .observer_store
        .subscribe()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut push_tick = tokio::time::interval(PUSH_EVERY);
    let mut lease_tick = tokio::time::interval(Duration::from_millis(20));
    let mut kill_tick = demo
        .args
        .kill_leader_every
        .map(|d| tokio::time::interval_at(Instant::now() + d, d));
    let mut leader: Option<(String, u64)> = None;
    let mut killed_at: Option<(Instant, bool)> = None;
    let mut last_obtained: BTreeMap<CredentialKind, i64> = BTreeMap::new();
    let mut kills = 0u32;

    loop {
        let until_end = end.map(|e| e.saturating_duration_since(Instant::now()));
        tokio::select! {
            _ = ctrl_c.cancelled() => break,
            _ = tokio::time::sleep(until_end.unwrap_or(Duration::from_secs(3600))), if until_end.is_some() => break,
            _ = push_tick.tick() => {
                match sim.push_now(None).await {
                    Ok(r) => {
                        let who = demo.ports.iter().position(|(h, _)| r.target.ends_with(&h.to_string())).map_or(0, |i| i + 1);
                        if r.accepted {
                            summary.pushes_accepted += 1;
                            demo.say(format!("push accepted by replica {who} (CreateTime {})", r.create_time));
                        } else {
                            demo.say(format!("push to replica {who} not accepted ({})", r.error.as_deref().unwrap_or("refused")));
                        }
                    }
                    Err(e) => demo.say(format!("push failed: {e}")),
                }
            }
            _ = lease_tick.tick() => {
                if let Ok(view) = demo.observer_store.read_lease().await {
                    let now = view.map(|v| (v.id.holder, v.id.epoch));
                    if now != leader {
                        if let Some((holder, epoch)) = &now {
                            let who = demo.holders.get(holder).copied().unwrap_or(0);
                            let note = match killed_at.take() {
                                Some((at, crash)) => {
                                    let took = at.elapsed();
                                    summary.failovers.push((took, crash));
                                    format!(" ({} after {:.0} ms)", if crash { "failover" } else { "handoff" }, took.as_secs_f64() * 1000.0)
                                }
                                None => String::new(),
                            };
                            summary.leader_changes += 1;
                            demo.say(format!("leader is now replica {who} (epoch {epoch}){note}"));
                        }
                        leader = now;
                    }
                }
            }
            n = notices.next() => match n {
                Some(Notice::Credential(p, kind)) if p == demo.platform.appid => {
                    let (obtained, holder) = match kind {
                        CredentialKind::ComponentAccessToken => match demo.observer_store.get_token(&p).await {
                            Ok(Some(t)) => (t.obtained_at_ms, t.holder),
                            _ => continue,
                        },
                        CredentialKind::PreAuthCode => match demo.observer_store.get_pre_auth_meta(&p).await {
                            Ok(Some(m)) => (m.obtained_at_ms, m.holder),
                            _ => continue,
                        },
                    };
                    let who = demo.holders.get(&holder).copied().unwrap_or(0);
                    let interval = last_obtained.insert(kind, obtained).map(|prev| (obtained - prev) as f64 / 1000.0);
                    if kind == CredentialKind::ComponentAccessToken {
                        summary.tokens += 1;
                        if let Some(i) = interval.filter(|i| *i > 0.0) {
                            summary.token_intervals.push(i);
                        }
                    } else {
                        summary.codes += 1;
                    }
                    let after = interval.map_or("first one".to_owned(), |i| format!("after an interval of {i:.1}s"));
                    demo.say(format!("{} refreshed by replica {who}, {after}", kind.as_str()));
                }
                Some(_) => {}
                None => {
                    notices = demo.observer_store.subscribe().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                }
            },
            _ = async { kill_tick.as_mut().expect("guarded").tick().await }, if kill_tick.is_some() => {
                let Some((holder, _)) = &leader else { continue };
                let Some(&who) = demo.holders.get(holder) else { continue };
                kills += 1;
                let crash = kills % 2 == 1;
                demo.say(format!("stopping leader replica {who} ({})", if crash { "crash: no release, the lease must expire" } else { "graceful: lease released" }));
                let stopped_at = Instant::now();
                demo.stop(who - 1, crash).await;
                killed_at = Some((stopped_at, crash));
                demo.start(who - 1, sim_addr).await?;
                demo.say(format!("replica {who} started again"));
            }
        }
    }

    // Summary.
    let stats = sim.stats();
    for i in 0..demo.replicas.len() {
        demo.stop(i, false).await;
    }
    sim_stop.cancel();
    println!(
        "\n{}",
        summary.render(&stats.totals, demo.started.elapsed())
    );
    Ok(())
}

#[derive(Default)]
struct Summary {
    pushes_accepted: u32,
    tokens: u32,
    codes: u32,
    token_intervals: Vec<f64>,
    leader_changes: u32,
    failovers: Vec<(Duration, bool)>,
}

impl Summary {
    fn render(&self, sim: &crate::sim::Counters, ran: Duration) -> String {
        let min = self
            .token_intervals
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let max = self.token_intervals.iter().copied().fold(0.0, f64::max);
        let intervals = if self.token_intervals.is_empty() {
            "no refresh interval yet (run longer than one token lifetime)".to_owned()
        } else {
            format!(
                "token refresh intervals {min:.1}s to {max:.1}s against a {}s lifetime",
                TOKEN_TTL.as_secs()
            )
        };
        let fmt = |crash: bool| {
            let v: Vec<String> = self
                .failovers
                .iter()
                .filter(|(_, c)| *c == crash)
                .map(|(d, _)| format!("{:.0} ms", d.as_secs_f64() * 1000.0))
                .collect();
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        format!(
            "Summary after {:.0}s: {}; {} and {} fetched; {intervals}; {} (the first election included); \
             failovers after a crash: {} (lease TTL {}s); handoffs after a graceful stop: {}. \
             WeChat saw {}, {} overlapping and {} early, and {} with an invalid token.",
            ran.as_secs_f64(),
            count(self.pushes_accepted.into(), "push accepted", "pushes accepted"),
            count(self.tokens.into(), "component_access_token refresh", "component_access_token refreshes"),
            count(self.codes.into(), "pre-auth code", "pre-auth codes"),
            count(self.leader_changes.into(), "leader change", "leader changes"),
            fmt(true),
            LEASE_TTL.as_secs(),
            fmt(false),
            count(sim.calls.api_component_token, "token call", "token calls"),
            sim.overlapping_token_calls,
            sim.early_token_calls,
            count(sim.invalid_token_calls, "call", "calls"),
        )
    }
}

/// "1 thing", "2 things".
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn free_local_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}
