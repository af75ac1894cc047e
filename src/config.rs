//! Typed configuration: every setting's name, default and parser, and the layering
//! flag > environment > `WXKEEPER_CONFIG` file > default.
//!
//! Loading is pure over its inputs ([`Layers`]), so tests feed maps instead of touching the
//! process environment. Any problem is a [`ConfigError`] naming the key, which `main` prints as
//! one line before exiting 64. Secrets are `SecretString`s and the AES key an [`AesKey`]; neither
//! can reach a log through `Debug`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::crypto::AesKey;

pub const ENV_PREFIX: &str = "WXKEEPER_";
pub const ENV_CONFIG: &str = "WXKEEPER_CONFIG";

/// A setting's lower-case name (the TOML key; upper-cased with the prefix for the environment)
/// and its default.
const SETTINGS: &[(&str, Option<&str>)] = &[
    ("redis_url", Some("redis://127.0.0.1:6379/0")),
    ("key_prefix", Some("wxkeeper:")),
    ("listen", Some("0.0.0.0:8080")),
    ("admin_listen", Some("0.0.0.0:9464")),
    ("wechat_api_base", Some("https://api.weixin.qq.com")),
    ("api_keys", None),
    ("lease_ttl", Some("10s")),
    ("refresh_margin", Some("15m")),
    ("pre_auth_margin", Some("2m")),
    ("pre_auth_pool", Some("2")),
    ("callback_max_skew", Some("1h")),
    ("shutdown_grace", Some("10s")),
    ("log_format", Some("text")),
];

/// The four per-platform values, as variables (`WXKEEPER_COMPONENT_*`) or `[[platform]]` keys.
const PLATFORM_KEYS: [&str; 4] = [
    "component_appid",
    "component_appsecret",
    "component_token",
    "component_aes_key",
];

/// One line for the operator: which key, what is wrong. Never contains a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// One third-party platform. `Debug` shows the appid only.
#[derive(Clone)]
pub struct PlatformConfig {
    pub appid: String,
    pub appsecret: SecretString,
    pub token: SecretString,
    pub aes_key: AesKey,
}

impl std::fmt::Debug for PlatformConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformConfig")
            .field("appid", &self.appid)
            .finish_non_exhaustive()
    }
}

/// The whole configuration of a replica.
#[derive(Debug, Clone)]
pub struct Config {
    /// May carry a password, so it is a secret; see [`Config::redis_url_redacted`].
    pub redis_url: SecretString,
    pub key_prefix: String,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub wechat_api_base: url::Url,
    pub api_keys: Vec<SecretString>,
    pub lease_ttl: Duration,
    pub refresh_margin: Duration,
    pub pre_auth_margin: Duration,
    pub pre_auth_pool: usize,
    pub callback_max_skew: Duration,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    pub platforms: Vec<PlatformConfig>,
}

impl Config {
    /// The store URL with any password replaced, for logs and `/status`.
    pub fn redis_url_redacted(&self) -> String {
        redact_url(self.redis_url.expose_secret())
    }

    pub fn platform(&self, appid: &str) -> Option<&PlatformConfig> {
        self.platforms.iter().find(|p| p.appid == appid)
    }
}

/// Replaces the password of a URL (if any) with `***`.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparseable url>".to_owned(),
    }
}

/// Where a value came from, so that an error names the key the operator actually wrote.
#[derive(Debug, Clone)]
enum Origin {
    Flag(String),
    Env(String),
    File(String),
    Default(String),
}

impl Origin {
    fn key(&self) -> String {
        match self {
            Origin::Flag(k) | Origin::Env(k) | Origin::File(k) | Origin::Default(k) => k.clone(),
        }
    }
}

/// The raw inputs: flags (by setting name), the environment (by variable name) and the file.
#[derive(Debug, Default, Clone)]
pub struct Layers {
    pub flags: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
    pub file: Option<(PathBuf, toml::Table)>,
}

impl Layers {
    /// Collects the real process environment (only `WXKEEPER_*` and nothing else) and reads the
    /// file named by `--config` or `WXKEEPER_CONFIG`.
    pub fn from_process(
        flags: BTreeMap<String, String>,
        config_flag: Option<PathBuf>,
    ) -> Result<Self, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        let path = config_flag.or_else(|| env.get(ENV_CONFIG).map(PathBuf::from));
        let file = path.map(|p| read_toml(&p).map(|t| (p, t))).transpose()?;
        Ok(Self { flags, env, file })
    }

    fn lookup(&self, name: &str) -> Option<(String, Origin)> {
        let env_key = env_key(name);
        if let Some(v) = self.flags.get(name) {
            return Some((
                v.clone(),
                Origin::Flag(format!("--{}", name.replace('_', "-"))),
            ));
        }
        if let Some(v) = self.env.get(&env_key) {
            return Some((v.clone(), Origin::Env(env_key)));
        }
        if let Some((path, table)) = &self.file {
            if let Some(v) = table.get(name) {
                let key = format!("{name} in {}", path.display());
                return Some((toml_scalar(v), Origin::File(key)));
            }
        }
        None
    }

    fn setting(&self, name: &str) -> Option<(String, Origin)> {
        self.lookup(name).or_else(|| {
            let default = SETTINGS.iter().find(|(n, _)| *n == name)?.1?;
            Some((default.to_owned(), Origin::Default(env_key(name))))
        })
    }
}

pub fn env_key(name: &str) -> String {
    format!("{ENV_PREFIX}{}", name.to_ascii_uppercase())
}

fn read_toml(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(ENV_CONFIG, format!("cannot read {}: {e}", path.display()))
    })?;
    text.parse::<toml::Table>().map_err(|e| {
        let first_line = e
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_owned();
        ConfigError::new(
            ENV_CONFIG,
            format!("{} is not valid TOML: {first_line}", path.display()),
        )
    })
}

/// TOML values are read as the strings the environment would hold: arrays become
/// comma-separated lists (`api_keys = ["a", "b"]`).
fn toml_scalar(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items.iter().map(toml_scalar).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Parses a duration written `500ms`, `10s`, `15m`, `2h` (or combinations like `1h 30m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("{s:?} is not a duration (write it like 500ms, 10s, 15m or 2h)"))
}

/// Builds the typed configuration from its layers. Pure: no environment, no I/O.
pub fn load(layers: &Layers) -> Result<Config, ConfigError> {
    let get = |name: &str| layers.setting(name);
    let parse = |name: &str| -> (String, Origin) { get(name).expect("setting has a default") };

    let (redis_url, origin) = parse("redis_url");
    check_redis_url(&redis_url).map_err(|p| ConfigError::new(origin.key(), p))?;

    let (key_prefix, origin) = parse("key_prefix");
    if key_prefix.is_empty() || key_prefix.chars().any(|c| c.is_whitespace()) {
        return Err(ConfigError::new(
            origin.key(),
            "must be non-empty and contain no spaces",
        ));
    }

    let listen = socket_addr(parse("listen"))?;
    let admin_listen = socket_addr(parse("admin_listen"))?;

    let (base, origin) = parse("wechat_api_base");
    let wechat_api_base = url::Url::parse(&base)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| ConfigError::new(origin.key(), "must be an http:// or https:// URL"))?;

    let api_keys: Vec<SecretString> = get("api_keys")
        .map(|(v, _)| {
            v.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| SecretString::from(k.to_owned()))
                .collect()
        })
        .unwrap_or_default();

    let lease_ttl = duration(parse("lease_ttl"))?;
    if lease_ttl < Duration::from_secs(1) {
        return Err(ConfigError::new(
            parse("lease_ttl").1.key(),
            "must be at least 1s",
        ));
    }
    let refresh_margin = positive_duration(parse("refresh_margin"))?;
    let pre_auth_margin = duration(parse("pre_auth_margin"))?;
    let (pool, origin) = parse("pre_auth_pool");
    let pre_auth_pool: usize = pool
        .trim()
        .parse()
        .ok()
        .filter(|n| *n <= 100)
        .ok_or_else(|| ConfigError::new(origin.key(), "must be a whole number from 0 to 100"))?;
    let callback_max_skew = positive_duration(parse("callback_max_skew"))?;
    let shutdown_grace = duration(parse("shutdown_grace"))?;
    let (format, origin) = parse("log_format");
    let log_format = match format.trim() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        _ => return Err(ConfigError::new(origin.key(), "must be text or json")),
    };

    let platforms = platforms(layers)?;

    Ok(Config {
        redis_url: SecretString::from(redis_url),
        key_prefix,
        listen,
        admin_listen,
        wechat_api_base,
        api_keys,
        lease_ttl,
        refresh_margin,
        pre_auth_margin,
        pre_auth_pool,
        callback_max_skew,
        shutdown_grace,
        log_format,
        platforms,
    })
}

fn check_redis_url(raw: &str) -> Result<(), String> {
    if raw == "memory://" || raw == "memory:" {
        return Ok(());
    }
    let u = url::Url::parse(raw)
        .map_err(|_| "is not a URL (redis://, rediss:// or memory://)".to_owned())?;
    match u.scheme() {
        "redis" | "rediss" | "redis+unix" | "unix" => Ok(()),
        "memory" => Ok(()),
        other => Err(format!(
            "scheme {other:?} is not one of redis, rediss, memory"
        )),
    }
}

fn socket_addr((v, origin): (String, Origin)) -> Result<SocketAddr, ConfigError> {
    v.trim().parse().map_err(|_| {
        ConfigError::new(
            origin.key(),
            format!("{v:?} is not an address like 0.0.0.0:8080"),
        )
    })
}

fn duration((v, origin): (String, Origin)) -> Result<Duration, ConfigError> {
    parse_duration(&v).map_err(|p| ConfigError::new(origin.key(), p))
}

fn positive_duration(input: (String, Origin)) -> Result<Duration, ConfigError> {
    let origin = input.1.clone();
    let d = duration(input)?;
    if d.is_zero() {
        return Err(ConfigError::new(origin.key(), "must be greater than zero"));
    }
    Ok(d)
}

/// Platforms come from the file's `[[platform]]` tables or from the four variables, never both.
fn platforms(layers: &Layers) -> Result<Vec<PlatformConfig>, ConfigError> {
    let from_vars: Vec<Option<(String, Origin)>> = PLATFORM_KEYS
        .iter()
        .map(|k| layers.lookup_platform_var(k))
        .collect();
    let any_var = from_vars.iter().any(Option::is_some);
    let file_tables = layers
        .file
        .as_ref()
        .and_then(|(path, t)| t.get("platform").map(|v| (path.clone(), v.clone())));

    match (any_var, file_tables) {
        (true, Some(_)) => Err(ConfigError::new(
            env_key("component_appid"),
            format!("platforms come either from {ENV_CONFIG} [[platform]] tables or from the WXKEEPER_COMPONENT_* variables, not both"),
        )),
        (true, None) | (false, None) => {
            let mut values = Vec::with_capacity(4);
            for (name, found) in PLATFORM_KEYS.iter().zip(from_vars) {
                match found {
                    Some(v) => values.push(v),
                    None => {
                        return Err(ConfigError::new(
                            env_key(name),
                            format!("required (or give [[platform]] tables in {ENV_CONFIG})"),
                        ))
                    }
                }
            }
            Ok(vec![platform_from(values)?])
        }
        (false, Some((path, value))) => {
            let tables = value.as_array().ok_or_else(|| {
                ConfigError::new(format!("platform in {}", path.display()), "must be [[platform]] tables")
            })?;
            if tables.is_empty() {
                return Err(ConfigError::new(format!("platform in {}", path.display()), "needs at least one [[platform]]"));
            }
            let mut out: Vec<PlatformConfig> = Vec::new();
            for (i, table) in tables.iter().enumerate() {
                let mut values = Vec::with_capacity(4);
                for name in PLATFORM_KEYS {
                    let key = format!("platform[{i}].{name} in {}", path.display());
                    let v = table
                        .get(name)
                        .and_then(|v| v.as_str())
                        .ok_or_else(|| ConfigError::new(key.clone(), "required (a string)"))?;
                    values.push((v.to_owned(), Origin::File(key)));
                }
                let p = platform_from(values)?;
                if out.iter().any(|o| o.appid == p.appid) {
                    return Err(ConfigError::new(
                        format!("platform[{i}].component_appid in {}", path.display()),
                        format!("{} is configured twice", p.appid),
                    ));
                }
                out.push(p);
            }
            Ok(out)
        }
    }
}

impl Layers {
    /// Platform values are read from flags or the environment only; the file uses tables.
    fn lookup_platform_var(&self, name: &str) -> Option<(String, Origin)> {
        let env_key = env_key(name);
        if let Some(v) = self.flags.get(name) {
            return Some((
                v.clone(),
                Origin::Flag(format!("--{}", name.replace('_', "-"))),
            ));
        }
        self.env
            .get(&env_key)
            .map(|v| (v.clone(), Origin::Env(env_key)))
    }
}

fn platform_from(values: Vec<(String, Origin)>) -> Result<PlatformConfig, ConfigError> {
    let [appid, secret, token, aes]: [(String, Origin); 4] =
        values.try_into().expect("four platform values");
    let appid_value = appid.0.trim().to_owned();
    if appid_value.is_empty()
        || appid_value.len() > 64
        || !appid_value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(ConfigError::new(
            appid.1.key(),
            "must be a WeChat appid (letters and digits)",
        ));
    }
    if secret.0.trim().is_empty() {
        return Err(ConfigError::new(secret.1.key(), "must not be empty"));
    }
    if token.0.trim().is_empty() {
        return Err(ConfigError::new(token.1.key(), "must not be empty"));
    }
    let aes_key = AesKey::from_encoding_aes_key(aes.0.trim())
        .map_err(|_| ConfigError::new(aes.1.key(), "must be the 43-character EncodingAESKey"))?;
    Ok(PlatformConfig {
        appid: appid_value,
        appsecret: SecretString::from(secret.0.trim().to_owned()),
        token: SecretString::from(token.0.trim().to_owned()),
        aes_key,
    })
}

#[cfg(test)]
mod tests;
