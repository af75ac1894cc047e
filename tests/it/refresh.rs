//! The refresh loop end to end: the real app, a real `redis-server`, and the WeChat
//! simulator (in-process, speaking HTTP). Bounded waits poll what the service exposes; no
//! assertion is about speed except the contract's "within 1 s" of a new ticket or token.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use wxkeeper::app::AppOptions;
use wxkeeper::sim::{SimOptions, SimStats};

use crate::support::app::*;
use crate::support::RedisServer;

/// Polls `check` every 20 ms until it yields, or panics after `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn token_of(app: &TestApp) -> Option<String> {
    let r = app.get_token().await;
    if r.status() != 200 {
        return None;
    }
    let v: Value = r.json().await.unwrap();
    Some(v["component_access_token"].as_str().unwrap().to_owned())
}

/// Waits until this replica leads and its lock-delay is over.
async fn until_acting_leader(app: &TestApp) {
    eventually(Duration::from_secs(5), "acting leader", || async {
        let s: Value = app
            .client
            .get(format!("http://{}/status", app.admin))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (s["lease"]["leader"] == true && s["lease"]["lock_delay_ms"] == 0).then_some(())
    })
    .await
}

fn stats(sim: &Sim) -> SimStats {
    sim.sim.stats()
}

struct Setup {
    redis: RedisServer,
    sim: Sim,
    apps: Vec<TestApp>,
}

async fn setup(replicas: usize, sim_opts: SimOptions, margin: Duration) -> Setup {
    let redis = RedisServer::start();
    let sim = Sim::start(sim_opts).await;
    let mut apps = Vec::new();
    for _ in 0..replicas {
        let mut c = config(&redis.url(), &sim.base);
        c.refresh_margin = margin;
        c.pre_auth_margin = Duration::from_secs(2);
        let app = TestApp::spawn(c, None).await;
        app.wait_ready().await;
        apps.push(app);
    }
    sim.sim
        .set_push_targets(apps.iter().map(|a| format!("http://{}", a.http)).collect());
    Setup { redis, sim, apps }
}

async fn push(s: &Setup) {
    let report = s.sim.sim.push_now(None).await.unwrap();
    assert!(report.accepted, "push refused: {report:?}");
}

#[tokio::test]
async fn cold_start_first_ticket_gives_a_token_within_a_second_then_codes() {
    let s = setup(1, Sim::short(), Duration::from_secs(900)).await;
    let app = &s.apps[0];
    until_acting_leader(app).await;
    assert_eq!(
        app.get_token().await.status(),
        503,
        "no token before the first ticket"
    );
    push(&s).await;
    let pushed = Instant::now();
    let token = eventually(
        Duration::from_secs(1),
        "token within 1 s of the first ticket",
        || token_of(app),
    )
    .await;
    assert!(pushed.elapsed() <= Duration::from_secs(1));
    assert!(s.sim.sim.token_is_valid(&token));
    let code = eventually(Duration::from_secs(2), "a pre-auth code", || async {
        let r = app.take_pre_auth().await;
        if r.status() != 200 {
            return None;
        }
        let v: Value = r.json().await.unwrap();
        Some(v["pre_auth_code"].as_str().unwrap().to_owned())
    })
    .await;
    assert!(
        s.sim.sim.use_pre_auth_code(&code),
        "the code is valid and unused at WeChat"
    );
    assert_eq!(stats(&s.sim).totals.calls.api_component_token, 1);
}

#[tokio::test]
async fn tokens_are_refreshed_on_schedule_never_early_never_late() {
    // Lifetime 6 s, margin 2 s: a new token every ~4 s, independent of pushes.
    let opts = SimOptions {
        token_ttl: Duration::from_secs(6),
        preauth_ttl: Duration::from_secs(6),
        grace: Duration::from_secs(2),
        ..SimOptions::default()
    };
    let s = setup(1, opts, Duration::from_secs(2)).await;
    until_acting_leader(&s.apps[0]).await;
    push(&s).await;
    let sim = s.sim.sim.clone();
    tokio::time::timeout(
        Duration::from_secs(20),
        sim.wait_until(|st| st.totals.tokens_issued >= 4),
    )
    .await
    .expect("four tokens within 20 s");
    let st = stats(&s.sim);
    assert_eq!(st.totals.early_token_calls, 0);
    assert_eq!(st.totals.overlapping_token_calls, 0);
    let intervals = &st.platforms[APPID].token_issue_intervals_ms;
    assert!(intervals.len() >= 3);
    for i in intervals {
        assert!(
            *i >= 3_900,
            "refreshed early: {i} ms after the previous token"
        );
        assert!(*i < 6_000, "refreshed after expiry: {i} ms");
    }
    assert_eq!(st.totals.invalid_token_calls, 0);
}

#[tokio::test]
async fn invalid_token_report_forces_one_refresh() {
    let s = setup(1, Sim::short(), Duration::from_secs(900)).await;
    let app = &s.apps[0];
    until_acting_leader(app).await;
    push(&s).await;
    let first = eventually(Duration::from_secs(2), "first token", || token_of(app)).await;
    assert_eq!(app.report_invalid(&first).await.status(), 202);
    let second = eventually(
        Duration::from_secs(2),
        "a new token after the report",
        || async { token_of(app).await.filter(|t| *t != first) },
    )
    .await;
    assert!(s.sim.sim.token_is_valid(&second));
    assert_eq!(stats(&s.sim).totals.calls.api_component_token, 2);
    // A second report inside the minute changes nothing.
    assert_eq!(app.report_invalid(&second).await.status(), 202);
    assert_eq!(app.report_invalid(&first).await.status(), 202);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stats(&s.sim).totals.calls.api_component_token, 2);
    assert_eq!(token_of(app).await.as_deref(), Some(second.as_str()));
}

#[tokio::test]
async fn token_revoked_at_wechat_is_replaced_when_a_code_call_gets_40001() {
    let s = setup(1, Sim::short(), Duration::from_secs(900)).await;
    let app = &s.apps[0];
    until_acting_leader(app).await;
    push(&s).await;
    let first = eventually(Duration::from_secs(2), "first token", || token_of(app)).await;
    // Wait for the pool to be full, then revoke and drain it: the refill hits 40001.
    eventually(Duration::from_secs(2), "pool full", || async {
        (stats(&s.sim).totals.pre_auth_codes_issued >= 2).then_some(())
    })
    .await;
    s.sim.sim.revoke_tokens(APPID);
    assert_eq!(app.take_pre_auth().await.status(), 200);
    let second = eventually(Duration::from_secs(3), "a replacement token", || async {
        token_of(app).await.filter(|t| *t != first)
    })
    .await;
    assert!(s.sim.sim.token_is_valid(&second));
    assert!(!s.sim.sim.token_is_valid(&first));
}

/// One replica against a WeChat that answers every call with `errcode`; returns once it has
/// made `calls` token calls (bounded by `within`).
async fn against_failing_wechat(errcode: i64, calls: u64, within: Duration) -> Setup {
    let opts = SimOptions {
        error_rate: 1.0,
        error_code: errcode,
        ..Sim::short()
    };
    let s = setup(1, opts, Duration::from_secs(900)).await;
    until_acting_leader(&s.apps[0]).await;
    push(&s).await;
    let sim = s.sim.sim.clone();
    tokio::time::timeout(
        within,
        sim.wait_until(|st| st.totals.calls.api_component_token >= calls),
    )
    .await
    .unwrap_or_else(|_| panic!("{calls} token calls within {within:?}"));
    s
}

#[tokio::test]
async fn configuration_errors_are_not_hammered() {
    let s = against_failing_wechat(40125, 1, Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        stats(&s.sim).totals.calls.api_component_token,
        1,
        "a wrong secret is retried after minutes, not seconds"
    );
    let m = s.apps[0].metrics_text().await;
    assert!(m.contains(
        "wxkeeper_wechat_api_requests_total{endpoint=\"api_component_token\",errcode=\"40125\"} 1"
    ));
    assert!(m.contains(&format!(
        "wxkeeper_refresh_total{{credential=\"component_access_token\",outcome=\"error\",platform=\"{APPID}\"}} 1"
    )));
}

#[tokio::test]
async fn system_busy_is_retried_with_backoff() {
    let s = against_failing_wechat(-1, 3, Duration::from_secs(5)).await;
    // Backoff 1 s, 2 s, 4 s (halved at most by jitter): three calls take at least 1.5 s.
    let n = stats(&s.sim).totals.calls.api_component_token;
    assert!(n <= 4, "{n} calls: not backing off");
}

#[tokio::test]
async fn two_replicas_never_refresh_at_once_and_never_share_a_code() {
    let opts = SimOptions {
        token_ttl: Duration::from_secs(6),
        preauth_ttl: Duration::from_secs(20),
        grace: Duration::from_secs(2),
        latency: Duration::from_millis(50),
        ..SimOptions::default()
    };
    let s = setup(2, opts, Duration::from_secs(2)).await;
    push(&s).await;
    let sim = s.sim.sim.clone();
    tokio::time::timeout(
        Duration::from_secs(20),
        sim.wait_until(|st| st.totals.tokens_issued >= 3),
    )
    .await
    .expect("three tokens");
    let st = stats(&s.sim);
    assert_eq!(st.totals.overlapping_token_calls, 0);
    assert_eq!(st.totals.early_token_calls, 0);
    // Both replicas serve the same, valid token.
    let a = token_of(&s.apps[0]).await.unwrap();
    let b = eventually(Duration::from_secs(1), "same token on both", || async {
        token_of(&s.apps[1]).await.filter(|t| *t == a)
    })
    .await;
    assert!(s.sim.sim.token_is_valid(&b));

    // 40 concurrent takers across both replicas: every code they get is distinct and unused.
    let takers: Vec<_> = (0..40)
        .map(|i| {
            let app_url = s.apps[i % 2].url(&format!("/v1/platforms/{APPID}/pre_auth_code"));
            let client = s.apps[i % 2].client.clone();
            tokio::spawn(async move {
                let r = client
                    .post(app_url)
                    .bearer_auth(API_KEY)
                    .send()
                    .await
                    .unwrap();
                if r.status() == 200 {
                    let v: Value = r.json().await.unwrap();
                    Some(v["pre_auth_code"].as_str().unwrap().to_owned())
                } else {
                    assert_eq!(r.status(), 503);
                    None
                }
            })
        })
        .collect();
    let mut codes = Vec::new();
    for t in takers {
        codes.extend(t.await.unwrap());
    }
    assert!(!codes.is_empty());
    assert_eq!(
        codes.iter().collect::<HashSet<_>>().len(),
        codes.len(),
        "a code went to two callers"
    );
    for c in &codes {
        assert!(s.sim.sim.use_pre_auth_code(c));
    }
    assert_eq!(stats(&s.sim).totals.codes_used_twice, 0);
}

#[tokio::test]
async fn reads_survive_a_stopped_redis_and_an_emptied_one_is_reseeded() {
    let mut s = setup(2, Sim::short(), Duration::from_secs(900)).await;
    push(&s).await;
    let token = eventually(Duration::from_secs(4), "first token", || {
        token_of(&s.apps[0])
    })
    .await;
    eventually(Duration::from_secs(1), "follower has it", || async {
        token_of(&s.apps[1]).await.filter(|t| *t == token)
    })
    .await;
    let issued = stats(&s.sim).totals.tokens_issued;

    // Redis paused: every replica still answers from memory.
    s.redis.pause();
    for app in &s.apps {
        assert_eq!(token_of(app).await.as_deref(), Some(token.as_str()));
    }
    s.redis.resume();

    // Redis restarted empty: reads never fail, the leader writes the state back, no new token.
    s.redis.restart_empty();
    for _ in 0..20 {
        for app in &s.apps {
            assert_eq!(
                token_of(app).await.as_deref(),
                Some(token.as_str()),
                "read failed after the restart"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let store = s.apps[0].store.clone();
    let reseeded = eventually(Duration::from_secs(5), "token written back", || async {
        store.get_token(APPID).await.ok().flatten()
    })
    .await;
    assert_eq!(reseeded.value, token);
    eventually(Duration::from_secs(5), "ticket written back", || async {
        store.get_ticket(APPID).await.ok().flatten()
    })
    .await;
    assert_eq!(
        stats(&s.sim).totals.tokens_issued,
        issued,
        "the restart caused no token call"
    );
    assert_eq!(stats(&s.sim).totals.early_token_calls, 0);
}

/// Redis lost everything and a replica starts before the running ones have written the token
/// back: ready, it must still not answer 503 while a valid token exists (the chaos suite once
/// caught one here). Its read waits for the write-back.
#[tokio::test]
async fn a_replica_started_on_an_emptied_store_serves_the_token_written_back() {
    let redis = RedisServer::start();
    let sim = Sim::start(Sim::short()).await;
    let mut c = config(&redis.url(), &sim.base);
    c.refresh_margin = Duration::from_secs(900);
    // The running replica notices the loss at its next safety poll, one second at most.
    let running = TestApp::spawn_with(
        c.clone(),
        AppOptions {
            view_poll: Duration::from_secs(1),
            ..TestApp::options(None)
        },
    )
    .await;
    running.wait_ready().await;
    sim.sim
        .set_push_targets(vec![format!("http://{}", running.http)]);
    sim.sim.push_now(None).await.unwrap();
    let token = eventually(Duration::from_secs(4), "first token", || token_of(&running)).await;

    // FLUSHALL keeps the running replica's subscription, so nothing tells it at once.
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let fresh = TestApp::spawn_with(
        c,
        AppOptions {
            restore_wait: wxkeeper::app::RESTORE_WAIT,
            ..TestApp::options(None)
        },
    )
    .await;
    fresh.wait_ready().await;
    assert_eq!(
        token_of(&fresh).await.as_deref(),
        Some(token.as_str()),
        "the first read is answered with the token the running replica wrote back"
    );
    assert_eq!(stats(&sim).totals.tokens_issued, 1, "no token call");
}

/// With no token anywhere (a fresh deployment): ready at once, and a read answers 503 once the
/// bounded wait is over.
#[tokio::test]
async fn a_fresh_deployment_is_ready_and_answers_503_without_a_token() {
    let redis = RedisServer::start();
    let sim = Sim::start(Sim::short()).await;
    let app = TestApp::spawn_with(
        config(&redis.url(), &sim.base),
        AppOptions {
            restore_wait: wxkeeper::app::RESTORE_WAIT,
            ..TestApp::options(None)
        },
    )
    .await;
    app.wait_ready().await;
    assert_eq!(app.get_token().await.status(), 503);
}

#[tokio::test]
async fn rolling_restart_hands_over_at_once_and_calls_wechat_for_nothing() {
    let mut s = setup(3, Sim::short(), Duration::from_secs(900)).await;
    push(&s).await;
    let token = eventually(Duration::from_secs(4), "first token", || {
        token_of(&s.apps[0])
    })
    .await;
    let calls_before = stats(&s.sim).totals.calls.api_component_token;
    for round in 0..3 {
        // Stop the current leader gracefully (as SIGTERM does), start a replacement.
        let leader = eventually(Duration::from_secs(3), "a leader", || async {
            let lease = s.apps[0].store.read_lease().await.ok().flatten()?;
            s.apps.iter().position(|a| a.holder == lease.id.holder)
        })
        .await;
        let mut old = s.apps.remove(leader);
        let old_epoch = s.apps[0]
            .store
            .read_lease()
            .await
            .unwrap()
            .unwrap()
            .id
            .epoch;
        old.stop().await;
        let stopped = Instant::now();
        let next = eventually(
            Duration::from_secs(1),
            "handoff after a graceful stop",
            || async {
                let lease = s.apps[0].store.read_lease().await.ok().flatten()?;
                (lease.id.epoch > old_epoch).then_some(lease)
            },
        )
        .await;
        let took = stopped.elapsed();
        assert!(
            s.apps.iter().any(|a| a.holder == next.id.holder),
            "round {round}"
        );
        assert!(
            took < Duration::from_millis(500),
            "round {round}: handoff took {took:?}"
        );
        let mut c = config(&s.redis.url(), &s.sim.base);
        c.pre_auth_margin = Duration::from_secs(2);
        let fresh = TestApp::spawn(c, None).await;
        fresh.wait_ready().await;
        assert_eq!(
            token_of(&fresh).await.as_deref(),
            Some(token.as_str()),
            "a new replica serves at once"
        );
        s.apps.push(fresh);
    }
    assert_eq!(
        stats(&s.sim).totals.calls.api_component_token,
        calls_before,
        "a rolling restart causes no token call"
    );
    for app in &s.apps {
        assert_eq!(token_of(app).await.as_deref(), Some(token.as_str()));
    }
}

/// WeChat's real lifetimes (token 7200 s, pre-auth code 600 s) and the default margins
/// (15 min, 2 min) over one simulated day on tokio's paused clock: the embedded store, and the
/// simulator answering in-process (the same wire format, no socket for the clock to jump over).
#[tokio::test]
async fn schedule_is_honoured_over_a_simulated_day_on_paused_time() {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let sim = Sim::start(SimOptions {
        // The one ticket pushed before the clock is paused must last the day: pushes travel
        // over a socket, so none is delivered on the paused clock.
        ticket_ttl: Duration::from_secs(48 * 3600),
        ..SimOptions::default()
    })
    .await;
    let token_ttl = SimOptions::default().token_ttl;
    let code_ttl = SimOptions::default().preauth_ttl;
    let mut c = config("memory://", &sim.base);
    c.lease_ttl = Duration::from_secs(10);
    let (margin, code_margin, pool) = (c.refresh_margin, c.pre_auth_margin, c.pre_auth_pool);
    let app = TestApp::spawn_with(
        c,
        AppOptions {
            wechat_router: Some(sim.sim.router()),
            ..TestApp::options(None)
        },
    )
    .await;
    app.wait_ready().await;
    sim.sim
        .set_push_targets(vec![format!("http://{}", app.http)]);
    let report = sim.sim.push_now(None).await.unwrap();
    assert!(report.accepted, "push refused: {report:?}");
    // From here on the leader asks WeChat to resume pushes; with no target, each requested
    // push fails at once instead of waiting on a socket.
    sim.sim.set_push_targets(Vec::new());

    tokio::time::pause();
    // The first token comes once the new leader's lock-delay is over.
    let first = eventually(Duration::from_secs(60), "first token", || async {
        app.store.get_token(APPID).await.unwrap()
    })
    .await;
    let start = Instant::now();
    let mut obtained = vec![first.obtained_at_ms];
    let mut samples = 0;
    while start.elapsed() < DAY {
        tokio::time::sleep(Duration::from_secs(60)).await;
        samples += 1;
        let token = app.store.get_token(APPID).await.unwrap().expect("a token");
        assert!(
            sim.sim.token_is_valid(&token.value),
            "stored token rejected by WeChat after {:?}",
            start.elapsed()
        );
        if Some(&token.obtained_at_ms) != obtained.last() {
            obtained.push(token.obtained_at_ms);
        }
        let codes = app.store.pre_auth_ready(APPID, 0).await.unwrap().ready;
        assert!(
            codes >= 1,
            "pre-auth pool empty after {:?}",
            start.elapsed()
        );
    }
    assert_eq!(samples, 24 * 60);

    // Every refresh exactly when due (expiry − margin), measured on the store's clock.
    let due_after = (token_ttl - margin).as_millis() as i64;
    for (i, pair) in obtained.windows(2).enumerate() {
        let interval = pair[1] - pair[0];
        assert!(
            (due_after..due_after + 1_000).contains(&interval),
            "refresh {} came {interval} ms after the previous one; due after {due_after} ms",
            i + 1
        );
    }
    let st = stats(&sim).totals;
    let ideal_tokens = 1 + (DAY.as_millis() as i64 / due_after) as u64;
    assert_eq!(st.tokens_issued, ideal_tokens, "token calls over the day");
    assert_eq!(obtained.len() as u64, ideal_tokens);
    assert_eq!(st.calls.api_component_token, ideal_tokens);
    assert_eq!((st.early_token_calls, st.overlapping_token_calls), (0, 0));
    assert_eq!(st.invalid_token_calls, 0);

    // Each code is replaced once within its margin of expiry: pool × day ÷ (lifetime − margin).
    let code_due_after = (code_ttl - code_margin).as_secs();
    let ideal_codes = pool as u64 * (1 + DAY.as_secs() / code_due_after);
    assert!(
        st.calls.api_create_preauthcode.abs_diff(ideal_codes) <= pool as u64,
        "{} pre-auth calls, ideal {ideal_codes}",
        st.calls.api_create_preauthcode
    );

    // No ticket for 30 minutes: ask WeChat to resume pushes, at most every 10 minutes.
    let asks = st.calls.api_start_push_ticket;
    let most = 1 + (DAY.as_secs() - 30 * 60) / (10 * 60);
    assert!(
        (most - 1..=most).contains(&asks),
        "{asks} api_start_push_ticket calls, expected {most} (± the day's last instant)"
    );
}
