//! The README's ACL line is enough: a replica connected as that user goes through a whole
//! cycle (push, lease, token, pre-auth pool, history, release) on a real `redis-server`.

use std::time::Duration;

use serde_json::Value;

use crate::support::app::*;
use crate::support::RedisServer;

fn readme_acl_words() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let line = readme
        .lines()
        .find(|l| l.starts_with("ACL SETUSER wxkeeper"))
        .expect("README documents the ACL");
    line.split_whitespace()
        .map(|w| {
            if w == ">password" {
                ">test-password".to_owned()
            } else {
                w.to_owned()
            }
        })
        .collect()
}

#[tokio::test]
async fn the_documented_acl_covers_a_whole_cycle() {
    let redis = RedisServer::start();
    let mut admin = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let words = readme_acl_words();
    let mut cmd = redis::cmd(&words[0]);
    for w in &words[1..] {
        cmd.arg(w);
    }
    let _: () = cmd
        .query_async(&mut admin)
        .await
        .expect("the README's ACL line is valid");
    let url = format!("redis://wxkeeper:test-password@127.0.0.1:{}/0", redis.port);

    let sim = Sim::start(Sim::short()).await;
    let mut app = TestApp::spawn(config(&url, &sim.base), None).await;
    app.wait_ready().await;
    sim.sim
        .set_push_targets(vec![format!("http://{}", app.http)]);
    assert!(sim.sim.push_now(None).await.unwrap().accepted);
    let mut token = None;
    for _ in 0..200 {
        let r = app.get_token().await;
        if r.status() == 200 {
            token = Some(r.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(token.is_some(), "no token through the ACL user");
    let mut code = 0;
    for _ in 0..100 {
        code = app.take_pre_auth().await.status().as_u16();
        if code == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(code, 200);
    assert!(!app.store.history(10).await.unwrap().is_empty());
    app.stop().await;
    assert_eq!(
        app.store.read_lease().await.unwrap(),
        None,
        "released through the ACL user"
    );
    // Nothing outside the prefix was written.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(keys.iter().all(|k| k.starts_with("wxkeeper:")), "{keys:?}");
}
