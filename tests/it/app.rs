//! The real app on free ports with a real `redis-server`: every callback status of the
//! contract with real signed, encrypted pushes, the ticket stored after each, readiness, and
//! what happens while Redis is down.

use std::time::Duration;

use wxkeeper::store::SharedStore;

use crate::support::app::*;
use crate::support::RedisServer;

async fn app_on_redis(redis: &RedisServer) -> TestApp {
    // WeChat is never called in these tests: no ticket refresh is due without a token... the
    // base URL points at a closed port so an accidental call fails fast.
    let app = TestApp::spawn(config(&redis.url(), "http://127.0.0.1:9/"), None).await;
    app.wait_ready().await;
    app
}

async fn stored_ticket(store: &SharedStore) -> Option<(String, i64)> {
    store
        .get_ticket(APPID)
        .await
        .unwrap()
        .map(|t| (t.ticket, t.create_time))
}

fn count(metrics: &str, outcome: &str) -> u64 {
    let needle =
        format!("wxkeeper_callback_requests_total{{outcome=\"{outcome}\",platform=\"{APPID}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no series for {outcome}"))
}

#[tokio::test]
async fn every_callback_status_with_real_pushes() {
    let redis = RedisServer::start();
    let app = app_on_redis(&redis).await;
    let now = now_secs();

    // 200: stored, then a retry is a duplicate, an older one is stale.
    assert_eq!(
        app.post_push(APPID, &ticket_push("ticket@@@one", now))
            .await,
        (200, "success".into())
    );
    assert_eq!(
        stored_ticket(&app.store).await,
        Some(("ticket@@@one".into(), now))
    );
    let retry = ticket_push("ticket@@@one", now);
    assert_eq!(app.post_push(APPID, &retry).await.0, 200);
    assert_eq!(
        app.post_push(APPID, &ticket_push("ticket@@@older", now - 600))
            .await,
        (200, "success".into())
    );
    assert_eq!(
        stored_ticket(&app.store).await,
        Some(("ticket@@@one".into(), now)),
        "older ticket never wins"
    );
    assert_eq!(
        app.post_push(APPID, &ticket_push("ticket@@@two", now + 1))
            .await
            .0,
        200
    );
    let after_good = stored_ticket(&app.store).await;
    assert_eq!(after_good, Some(("ticket@@@two".into(), now + 1)));

    // 200 ignored: an unknown InfoType is acknowledged and stores nothing.
    let other = format!("<xml><AppId>{APPID}</AppId><CreateTime>{now}</CreateTime><InfoType>notify_third_fasteregister</InfoType></xml>");
    assert_eq!(
        app.post_push(APPID, &signed_push(other.as_bytes(), APPID, now))
            .await,
        (200, "success".into())
    );

    // 400s: malformed query, XML, base64, padding, inner event.
    let good = ticket_push("ticket@@@three", now + 2);
    let no_sig = Push {
        query: good.query.replace("msg_signature", "other"),
        body: good.body.clone(),
    };
    assert_eq!(app.post_push(APPID, &no_sig).await.0, 400);
    let bad_xml = Push {
        query: good.query.clone(),
        body: "<xml><Encrypt>".into(),
    };
    assert_eq!(app.post_push(APPID, &bad_xml).await.0, 400);
    assert_eq!(
        app.post_push(APPID, &signed_envelope("!!not-base64!!", now))
            .await
            .0,
        400
    );
    let wrong_padding = base64_of(&[0u8; 64]);
    assert_eq!(
        app.post_push(APPID, &signed_envelope(&wrong_padding, now))
            .await
            .0,
        400
    );
    assert_eq!(
        app.post_push(APPID, &signed_push(b"not xml", APPID, now))
            .await
            .0,
        400
    );

    // 403s: signature, appid inside the ciphertext, clock skew.
    let tampered = Push {
        query: good.query.replace("nonce=1234567890", "nonce=1234567891"),
        body: good.body.clone(),
    };
    assert_eq!(app.post_push(APPID, &tampered).await.0, 403);
    let inner = format!("<xml><AppId>{APPID}</AppId><CreateTime>{now}</CreateTime><InfoType>component_verify_ticket</InfoType><ComponentVerifyTicket>ticket@@@x</ComponentVerifyTicket></xml>");
    assert_eq!(
        app.post_push(
            APPID,
            &signed_push(inner.as_bytes(), "wx0000000000000000", now)
        )
        .await
        .0,
        403
    );
    assert_eq!(
        app.post_push(APPID, &signed_push(inner.as_bytes(), APPID, now - 7200))
            .await
            .0,
        403
    );

    // 404: an unconfigured platform, counted as "unknown".
    assert_eq!(app.post_push("wxnotconfigured", &good).await.0, 404);

    // 413: a 1 MiB body.
    let huge = Push {
        query: good.query.clone(),
        body: "x".repeat(1 << 20),
    };
    assert_eq!(app.post_push(APPID, &huge).await.0, 413);

    // Nothing was stored by any refusal.
    assert_eq!(stored_ticket(&app.store).await, after_good);

    let m = app.metrics_text().await;
    assert_eq!(count(&m, "accepted"), 2);
    assert_eq!(count(&m, "duplicate"), 1);
    assert_eq!(count(&m, "stale"), 1);
    assert_eq!(count(&m, "ignored"), 1);
    assert_eq!(count(&m, "bad_request"), 5);
    assert_eq!(count(&m, "bad_signature"), 1);
    assert_eq!(count(&m, "appid_mismatch"), 1);
    assert_eq!(count(&m, "clock_skew"), 1);
    assert_eq!(count(&m, "too_large"), 1);
    assert!(m.contains(
        "wxkeeper_callback_requests_total{outcome=\"unknown_platform\",platform=\"unknown\"} 1"
    ));
    assert!(
        !m.contains("wxnotconfigured"),
        "label values never come from the request"
    );
    assert!(m.contains(&format!(
        "wxkeeper_ticket_received_timestamp_seconds{{platform=\"{APPID}\"}} {}",
        now + 1
    )));
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn push_while_redis_is_down_is_503_then_accepted() {
    let mut redis = RedisServer::start();
    let app = app_on_redis(&redis).await;
    let now = now_secs();
    assert_eq!(
        app.post_push(APPID, &ticket_push("ticket@@@before", now))
            .await
            .0,
        200
    );
    redis.kill();
    let push = ticket_push("ticket@@@during", now + 1);
    assert_eq!(
        app.post_push(APPID, &push).await.0,
        503,
        "WeChat retries a 503"
    );
    assert_eq!(
        app.metrics_text()
            .await
            .lines()
            .filter(|l| l.contains("outcome=\"store_error\"") && l.ends_with(" 1"))
            .count(),
        1
    );
    // Health never depends on Redis.
    let health = app
        .client
        .get(format!("http://{}/healthz", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    redis.start_again();
    // WeChat's retry of the same push is accepted once Redis is back (the manager reconnects).
    let mut status = 0;
    for _ in 0..100 {
        status = app.post_push(APPID, &push).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200);
    assert_eq!(
        stored_ticket(&app.store).await,
        Some(("ticket@@@during".into(), now + 1))
    );
}

#[tokio::test]
async fn not_ready_until_the_store_answers_but_always_healthy() {
    let mut redis = RedisServer::start();
    redis.kill();
    let app = TestApp::spawn(config(&redis.url(), "http://127.0.0.1:9/"), None).await;
    let health = app
        .client
        .get(format!("http://{}/healthz", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        !app.ready().await,
        "not ready before the store was contacted"
    );
    redis.start_again();
    app.wait_ready().await;
}

#[tokio::test]
async fn memory_store_accepts_a_push_made_by_our_own_encrypt() {
    let app = TestApp::spawn(config("memory://", "http://127.0.0.1:9/"), None).await;
    app.wait_ready().await;
    assert_eq!(
        app.post_push(APPID, &ticket_push("ticket@@@mem", now_secs()))
            .await,
        (200, "success".into())
    );
    assert_eq!(stored_ticket(&app.store).await.unwrap().0, "ticket@@@mem");
}

#[tokio::test]
async fn shutdown_turns_readyz_503_and_releases_the_lease() {
    let redis = RedisServer::start();
    let mut app = app_on_redis(&redis).await;
    // Wait for leadership (one replica, so it leads within a TTL).
    let mut lease = None;
    for _ in 0..100 {
        lease = app.store.read_lease().await.unwrap();
        if lease.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lease.expect("a leader").id.holder, app.holder);
    app.stop().await;
    assert_eq!(
        app.store.read_lease().await.unwrap(),
        None,
        "released, not left to expire"
    );
}

#[tokio::test]
async fn a_push_refused_while_redis_is_paused_is_never_stored_later() {
    let redis = RedisServer::start();
    let app = app_on_redis(&redis).await;
    let now = now_secs();
    assert_eq!(
        app.post_push(APPID, &ticket_push("ticket@@@kept", now))
            .await
            .0,
        200
    );
    redis.pause();
    let refused = app
        .post_push(APPID, &ticket_push("ticket@@@refused", now + 1))
        .await;
    assert_eq!(refused.0, 503);
    redis.resume();
    // Commands on the connection run in order: once this answers, the refused push's script
    // has run too, and found its deadline passed.
    let mut answered = false;
    for _ in 0..100 {
        if app.store.now_ms().await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered);
    assert_eq!(
        stored_ticket(&app.store).await,
        Some(("ticket@@@kept".into(), now)),
        "a 503 answer stored nothing"
    );
}
