//! Layering, defaults and the one-line errors that name the key.

use super::*;

const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

fn env(pairs: &[(&str, &str)]) -> Layers {
    let mut layers = Layers::default();
    for (k, v) in pairs {
        layers.env.insert((*k).to_owned(), (*v).to_owned());
    }
    layers
}

fn platform_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("WXKEEPER_COMPONENT_APPID", "wx5823bf96d3bd56c7"),
        ("WXKEEPER_COMPONENT_APPSECRET", "s3cret-value"),
        ("WXKEEPER_COMPONENT_TOKEN", "QDG6eK"),
        ("WXKEEPER_COMPONENT_AES_KEY", KEY),
    ]
}

fn with(extra: &[(&'static str, &'static str)]) -> Layers {
    let mut pairs = platform_env();
    pairs.extend_from_slice(extra);
    env(&pairs)
}

fn file(text: &str) -> Option<(PathBuf, toml::Table)> {
    Some((PathBuf::from("/etc/wxkeeper.toml"), text.parse().unwrap()))
}

#[test]
fn defaults_match_the_contract() {
    let c = load(&with(&[])).unwrap();
    assert_eq!(c.redis_url.expose_secret(), "redis://127.0.0.1:6379/0");
    assert_eq!(c.key_prefix, "wxkeeper:");
    assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.admin_listen, "0.0.0.0:9464".parse().unwrap());
    assert_eq!(c.wechat_api_base.as_str(), "https://api.weixin.qq.com/");
    assert!(c.api_keys.is_empty());
    assert_eq!(c.lease_ttl, Duration::from_secs(10));
    assert_eq!(c.refresh_margin, Duration::from_secs(15 * 60));
    assert_eq!(c.pre_auth_margin, Duration::from_secs(120));
    assert_eq!(c.pre_auth_pool, 2);
    assert_eq!(c.callback_max_skew, Duration::from_secs(3600));
    assert_eq!(c.shutdown_grace, Duration::from_secs(10));
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.platforms.len(), 1);
    assert_eq!(c.platforms[0].appid, "wx5823bf96d3bd56c7");
}

#[test]
fn flag_beats_env_beats_file() {
    let mut layers = with(&[("WXKEEPER_LEASE_TTL", "20s")]);
    layers.file = file("lease_ttl = \"30s\"\nshutdown_grace = \"3s\"\napi_keys = [\"a\", \"b\"]");
    let c = load(&layers).unwrap();
    assert_eq!(c.lease_ttl, Duration::from_secs(20));
    assert_eq!(c.shutdown_grace, Duration::from_secs(3));
    assert_eq!(c.api_keys.len(), 2);
    layers.flags.insert("lease_ttl".into(), "500ms".into());
    let err = load(&layers).unwrap_err();
    assert_eq!(err.key, "--lease-ttl");
    layers.flags.insert("lease_ttl".into(), "2s".into());
    assert_eq!(load(&layers).unwrap().lease_ttl, Duration::from_secs(2));
}

#[test]
fn durations_in_all_units() {
    for (text, want) in [
        ("500ms", 500),
        ("10s", 10_000),
        ("15m", 900_000),
        ("2h", 7_200_000),
    ] {
        assert_eq!(parse_duration(text).unwrap(), Duration::from_millis(want));
    }
    assert!(parse_duration("ten seconds").is_err());
    assert!(parse_duration("10").is_err());
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        ("WXKEEPER_LEASE_TTL", "fast"),
        ("WXKEEPER_LEASE_TTL", "999ms"),
        ("WXKEEPER_LISTEN", "localhost"),
        ("WXKEEPER_REDIS_URL", "postgres://x"),
        ("WXKEEPER_WECHAT_API_BASE", "ftp://x"),
        ("WXKEEPER_PRE_AUTH_POOL", "-1"),
        ("WXKEEPER_LOG_FORMAT", "xml"),
        ("WXKEEPER_REFRESH_MARGIN", "0s"),
        ("WXKEEPER_KEY_PREFIX", ""),
    ];
    for (key, value) in cases {
        let err = load(&with(&[(key, value)])).unwrap_err();
        assert_eq!(err.key, key, "{value}");
        assert!(!err.to_string().contains('\n'));
    }
}

#[test]
fn missing_platform_value_is_named() {
    let mut layers = with(&[]);
    layers.env.remove("WXKEEPER_COMPONENT_TOKEN");
    assert_eq!(load(&layers).unwrap_err().key, "WXKEEPER_COMPONENT_TOKEN");
    assert_eq!(
        load(&Layers::default()).unwrap_err().key,
        "WXKEEPER_COMPONENT_APPID"
    );
}

#[test]
fn bad_aes_key_is_named_without_echoing_it() {
    let layers = with(&[("WXKEEPER_COMPONENT_AES_KEY", "tooShortSecretKey")]);
    let err = load(&layers).unwrap_err();
    assert_eq!(err.key, "WXKEEPER_COMPONENT_AES_KEY");
    assert!(!err.to_string().contains("tooShortSecretKey"));
}

#[test]
fn platforms_from_file_tables() {
    let layers = Layers {
        file: file(&format!(
            r#"
redis_url = "memory://"
[[platform]]
component_appid = "wxaaaa"
component_appsecret = "one"
component_token = "t1"
component_aes_key = "{KEY}"
[[platform]]
component_appid = "wxbbbb"
component_appsecret = "two"
component_token = "t2"
component_aes_key = "{KEY}"
"#
        )),
        ..Layers::default()
    };
    let c = load(&layers).unwrap();
    assert_eq!(
        c.platforms
            .iter()
            .map(|p| p.appid.as_str())
            .collect::<Vec<_>>(),
        ["wxaaaa", "wxbbbb"]
    );
    assert!(c.platform("wxbbbb").is_some());
    // Debug of the whole config leaks neither secrets nor the AES key.
    let debug = format!("{c:?}");
    for secret in ["one", "two", "t1", KEY] {
        assert!(!debug.contains(&format!("\"{secret}\"")), "{secret} leaked");
    }
}

#[test]
fn platforms_from_both_sources_is_an_error() {
    let mut layers = with(&[]);
    layers.file = file(&format!(
        "[[platform]]\ncomponent_appid = \"wxaaaa\"\ncomponent_appsecret = \"x\"\ncomponent_token = \"t\"\ncomponent_aes_key = \"{KEY}\"\n"
    ));
    assert_eq!(load(&layers).unwrap_err().key, "WXKEEPER_COMPONENT_APPID");
}

#[test]
fn duplicate_appids_in_file_are_refused() {
    let table = format!(
        "[[platform]]\ncomponent_appid = \"wxaaaa\"\ncomponent_appsecret = \"x\"\ncomponent_token = \"t\"\ncomponent_aes_key = \"{KEY}\"\n"
    );
    let layers = Layers {
        file: file(&format!("{table}{table}")),
        ..Layers::default()
    };
    let err = load(&layers).unwrap_err();
    assert!(err.key.starts_with("platform[1].component_appid"), "{err}");
}

#[test]
fn redis_password_is_redacted() {
    assert_eq!(
        redact_url("redis://user:hunter2@redis:6379/0"),
        "redis://user:***@redis:6379/0"
    );
    assert_eq!(redact_url("memory://"), "memory://");
}
