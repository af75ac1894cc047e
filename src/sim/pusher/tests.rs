use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::json;
use tokio::sync::mpsc;

use super::*;
use crate::sim::tests::{platforms, token_body, APP, OTHER, SECRET};
use crate::sim::SimOptions;

/// Vector S of PROTOCOL.md (synthetic, cross-checked with an independent implementation).
#[test]
fn build_push_matches_the_known_answer_vector() {
    let key = AesKey::from_encoding_aes_key(&"A".repeat(43)).unwrap();
    let push = build_push(
        "wx134c8103faa5a59e",
        "AAAAA",
        &key,
        "ticket@@@TTT",
        1413192605,
        "1234567890",
        *b"0123456789abcdef",
    );
    let encrypt = "uMMzGtqcnpOzXOYBwDQNrUZ4cmyP3mE/iqAPnDpUVEMo6hSuFboigoQEfDMpJHusyN89pAktPMYhs10pb2/O+ixhbCneaHA2TsRuMIqqwRz7lIstLGzvM9kyJFaDkEyW9u/0tmYFT3RM8JRHV1XTH9DowDcFb032uoOou8QCI8g9xUQWCvsgTvg8ZA5fUaz3NHoVbzt8HiapL/ezcTLlCYKxIs4y+/ysaoCXJ180rqGs57mR7s4nhQSkoIv/a9cOxRQ2hfbPRxEgdSpWon4/xPzwZ+OkqdxhpyCad/iV6kIpQqbFJg8ghWouViOXyM6bP5Du6o3xSOx3JfFKyhp6z3OeU53MPmG5VVa1CVcRI1H8pURa6COkbt321Enj6Db8";
    assert_eq!(
        push.body,
        format!("<xml><AppId><![CDATA[wx134c8103faa5a59e]]></AppId><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>")
    );
    let query: HashMap<_, _> = push.query.into_iter().collect();
    assert_eq!(
        query["signature"],
        "7877aebc870b279d7554a45a15b4b5ac5f68e271"
    );
    assert_eq!(query["timestamp"], "1413192605");
    assert_eq!(query["nonce"], "1234567890");
    assert_eq!(query["encrypt_type"], "aes");
    assert_eq!(
        query["msg_signature"],
        "256930b86e7635dc92f5ff95f852c7b422f64ead"
    );
}

/// What a replica received.
#[derive(Debug)]
struct Received {
    appid: String,
    query: HashMap<String, String>,
    content_type: Option<String>,
    body: String,
}

/// A stand-in replica on a free port that records each push and answers `status` + `reply`.
async fn replica(
    status: StatusCode,
    reply: &'static str,
) -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route(
            "/callback/{appid}",
            post(
                move |State(tx): State<mpsc::UnboundedSender<Received>>,
                      Path(appid): Path<String>,
                      RawQuery(query): RawQuery,
                      headers: HeaderMap,
                      body: String| async move {
                    let query = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                        .into_owned()
                        .collect();
                    let content_type = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let _ = tx.send(Received {
                        appid,
                        query,
                        content_type,
                        body,
                    });
                    (status, reply)
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, rx)
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text.find(start).expect(start) + start.len();
    let to = from + text[from..].find(end).expect(end);
    &text[from..to]
}

/// Checks a push the way a replica must, and returns its ticket and CreateTime.
fn open(push: &Received, appid: &str, token: &str, aes_key: &str) -> (String, u64) {
    assert_eq!(push.appid, appid);
    assert_eq!(push.content_type.as_deref(), Some("text/xml"));
    assert_eq!(push.query["encrypt_type"], "aes");
    assert!(push.query["nonce"].bytes().all(|b| b.is_ascii_digit()));
    let encrypt = between(&push.body, "<Encrypt><![CDATA[", "]]></Encrypt>");
    assert_eq!(between(&push.body, "<AppId><![CDATA[", "]]>"), appid);
    let (timestamp, nonce) = (&push.query["timestamp"], &push.query["nonce"]);
    assert!(crypto::verify_msg_signature(
        token,
        timestamp,
        nonce,
        encrypt,
        &push.query["msg_signature"]
    ));
    assert_eq!(
        push.query["signature"],
        plain_signature(token, timestamp, nonce)
    );

    let key = AesKey::from_encoding_aes_key(aes_key).unwrap();
    let inner = String::from_utf8(crypto::decrypt(&key, encrypt, appid).unwrap()).unwrap();
    let ticket = between(&inner, "<ComponentVerifyTicket><![CDATA[", "]]>").to_owned();
    let create_time: u64 = between(&inner, "<CreateTime>", "</CreateTime>")
        .parse()
        .unwrap();
    assert_eq!(
        inner,
        format!(
            "<xml><AppId><![CDATA[{appid}]]></AppId><CreateTime>{create_time}</CreateTime>\
             <InfoType><![CDATA[component_verify_ticket]]></InfoType>\
             <ComponentVerifyTicket><![CDATA[{ticket}]]></ComponentVerifyTicket></xml>"
        )
    );
    assert_eq!(timestamp, &create_time.to_string());
    (ticket, create_time)
}

fn open_app_push(push: &Received) -> (String, u64) {
    open(push, APP, "AAAAA", &"A".repeat(43))
}

#[tokio::test]
async fn a_push_reaches_the_replica_signed_and_encrypted() {
    let (base, mut received) = replica(StatusCode::OK, "success").await;
    let sim = Simulator::new(
        platforms(),
        SimOptions {
            push_to: vec![base.clone()],
            ..SimOptions::default()
        },
    );
    let report = sim.push_now(None).await.unwrap();
    assert!(report.accepted, "{report:?}");
    assert_eq!((report.status, report.error.as_deref()), (Some(200), None));
    assert_eq!(
        (report.component_appid.as_str(), report.target.as_str()),
        (APP, base.as_str())
    );

    let (ticket, create_time) = open_app_push(&received.recv().await.unwrap());
    assert_eq!(
        (ticket.as_str(), create_time),
        (report.ticket.as_str(), report.create_time)
    );
    assert!(ticket.starts_with("ticket@@@"));

    let stats = sim.stats();
    assert_eq!(
        (stats.totals.pushes_sent, stats.totals.pushes_failed),
        (1, 0)
    );
    let latest = stats.platforms[APP].latest_ticket.clone().unwrap();
    assert_eq!(
        (latest.ticket, latest.create_time),
        (ticket.clone(), create_time)
    );
    // The pushed ticket is what api_component_token wants.
    sim.component_token(&token_body(APP, SECRET, &ticket))
        .await
        .unwrap();

    // The second platform's key has non-zero trailing bits; its pushes decrypt all the same.
    let report = sim.push_now(Some(OTHER)).await.unwrap();
    let (ticket, _) = open(
        &received.recv().await.unwrap(),
        OTHER,
        "othertoken",
        "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
    );
    assert_eq!(ticket, report.ticket);
}

#[tokio::test]
async fn a_push_not_answered_success_counts_as_failed() {
    let (refusing, _received) = replica(StatusCode::FORBIDDEN, "").await;
    let (wrong_body, _received2) = replica(StatusCode::OK, "ok").await;
    let sim = Simulator::new(platforms(), SimOptions::default());
    assert_eq!(
        sim.push_now(None).await.unwrap_err(),
        SimError::NoPushTarget
    );

    sim.set_push_targets(vec![refusing]);
    let report = sim.push_now(Some(APP)).await.unwrap();
    assert_eq!((report.status, report.accepted), (Some(403), false));
    sim.set_push_targets(vec![wrong_body]);
    let report = sim.push_now(Some(APP)).await.unwrap();
    assert_eq!((report.status, report.accepted), (Some(200), false));

    // Nobody listening: no status, and the error names no URL (it carries the signatures).
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    sim.set_push_targets(vec![gone]);
    let report = sim.push_now(Some(APP)).await.unwrap();
    assert_eq!((report.status, report.accepted), (None, false));
    let error = report.error.unwrap();
    assert!(!error.contains("signature"), "{error}");
    assert!(error.starts_with("no answer: "), "{error}");

    let stats = sim.stats();
    assert_eq!(
        (stats.totals.pushes_sent, stats.totals.pushes_failed),
        (3, 3)
    );
    assert_eq!(
        sim.push_now(Some("wxunknown")).await.unwrap_err(),
        SimError::UnknownPlatform("wxunknown".into())
    );
}

#[tokio::test]
async fn the_pusher_pushes_every_platform_as_soon_as_it_has_a_target() {
    let (base, mut received) = replica(StatusCode::OK, "success").await;
    let sim = Simulator::new(
        platforms(),
        SimOptions {
            push_every: Duration::from_millis(20),
            ..SimOptions::default()
        },
    );
    let shutdown = CancellationToken::new();
    let pusher = sim.spawn_pusher(shutdown.clone());

    // No target yet: the pusher waits for one instead of losing its first push.
    sim.set_push_targets(vec![format!("{base}/")]);
    let mut appids = vec![
        received.recv().await.unwrap().appid,
        received.recv().await.unwrap().appid,
    ];
    appids.sort();
    assert_eq!(appids, [OTHER, APP]);
    // Then again every --push-every, each time with a new ticket.
    let first = sim.stats().platforms[APP].latest_ticket.clone();
    received.recv().await.unwrap();
    received.recv().await.unwrap();
    assert_ne!(sim.stats().platforms[APP].latest_ticket, first);

    // The replica has the pushes before the pusher has read their answers.
    sim.wait_until(|s| s.totals.pushes_sent >= 4).await;
    shutdown.cancel();
    pusher.await.unwrap();
    assert_eq!(sim.stats().totals.pushes_failed, 0);
}

#[tokio::test]
async fn api_start_push_ticket_pushes_at_once() {
    let (base, mut received) = replica(StatusCode::OK, "success").await;
    let sim = Simulator::new(
        platforms(),
        SimOptions {
            push_to: vec![base],
            ..SimOptions::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let served = tokio::spawn({
        let (sim, shutdown) = (sim.clone(), shutdown.clone());
        async move { sim.serve(listener, shutdown).await }
    });
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    let answer: serde_json::Value = http
        .post(format!(
            "{sim_base}/cgi-bin/component/api_start_push_ticket"
        ))
        .json(&json!({ "component_appid": APP, "component_secret": SECRET }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer, json!({ "errcode": 0, "errmsg": "ok" }));
    let (ticket, _) = open_app_push(&received.recv().await.unwrap());

    // And POST /sim/push answers with a report of its own push.
    let report: PushReport = http
        .post(format!("{sim_base}/sim/push?component_appid={APP}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(report.accepted);
    assert_ne!(report.ticket, ticket);
    assert_eq!(
        open_app_push(&received.recv().await.unwrap()).0,
        report.ticket
    );
    let unknown = http
        .post(format!("{sim_base}/sim/push?component_appid=wxunknown"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    shutdown.cancel();
    served.await.unwrap().unwrap();
}
