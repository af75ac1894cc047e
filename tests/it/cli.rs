//! The binary itself: exit 64 naming the key on bad configuration (before binding anything),
//! `wxkeeper status` against a real Redis, and SIGTERM ending `serve` with status 0.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::app::{AES_KEY, APPID, SECRET, TOKEN};
use crate::support::redis_server::free_port;
use crate::support::RedisServer;

fn wxkeeper() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wxkeeper"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("WXKEEPER_COMPONENT_APPID", APPID)
        .env("WXKEEPER_COMPONENT_APPSECRET", SECRET)
        .env("WXKEEPER_COMPONENT_TOKEN", TOKEN)
        .env("WXKEEPER_COMPONENT_AES_KEY", AES_KEY);
    c
}

#[test]
fn bad_configuration_exits_64_naming_the_key_before_binding() {
    let port = free_port();
    let held = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    for (key, value) in [
        ("WXKEEPER_LEASE_TTL", "soon"),
        ("WXKEEPER_COMPONENT_AES_KEY", "short"),
        ("WXKEEPER_REDIS_URL", "mysql://x"),
    ] {
        let out = wxkeeper()
            .args(["serve"])
            .env("WXKEEPER_LISTEN", format!("127.0.0.1:{port}"))
            .env(key, value)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{key}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(key), "{err}");
        assert!(!err.contains(SECRET) && !err.contains(AES_KEY));
        // It did not try to bind: the held port would have made it fail otherwise.
        assert!(!err.contains("binding"), "{err}");
    }
    drop(held);
    let out = wxkeeper()
        .args(["serve"])
        .env_remove("WXKEEPER_COMPONENT_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("WXKEEPER_COMPONENT_TOKEN"));
}

#[test]
fn help_lists_the_four_commands() {
    let out = wxkeeper().arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for cmd in ["serve", "demo", "simulate", "status"] {
        assert!(text.contains(cmd), "{cmd} missing from --help");
    }
}

#[tokio::test]
async fn status_reports_the_store_and_sigterm_exits_zero() {
    let redis = RedisServer::start();
    let (http, admin) = (free_port(), free_port());
    let mut serve = wxkeeper()
        .args(["serve"])
        .env("WXKEEPER_REDIS_URL", redis.url())
        .env("WXKEEPER_LISTEN", format!("127.0.0.1:{http}"))
        .env("WXKEEPER_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("WXKEEPER_LEASE_TTL", "1s")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let mut led = false;
    for _ in 0..250 {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{admin}/metrics"))
            .send()
            .await
        {
            if r.text().await.unwrap().contains("\nwxkeeper_leader 1\n") {
                led = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(led, "the only replica leads");

    let status = wxkeeper()
        .args(["status", "--json"])
        .env("WXKEEPER_REDIS_URL", redis.url())
        .output()
        .unwrap();
    assert!(status.status.success());
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(v["lease"]["epoch"].as_u64().unwrap() > 0);
    assert!(v["platforms"][APPID]["component_access_token"].is_null());
    let text = wxkeeper()
        .args(["status"])
        .env("WXKEEPER_REDIS_URL", redis.url())
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("leader") && text.contains(APPID), "{text}");

    let pid = serve.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let code = tokio::task::spawn_blocking(move || serve.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(code.code(), Some(0));
    // It released the lease on the way out.
    let after = wxkeeper()
        .args(["status", "--json"])
        .env("WXKEEPER_REDIS_URL", redis.url())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&after.stdout).unwrap();
    assert!(v["lease"].is_null(), "{v}");
}
