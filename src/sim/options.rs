//! `wxkeeper simulate` flags: what the simulated WeChat does and how fast.
//!
//! Owns the flag names, their defaults (CONTRACT.md) and their parsers. `SimOptions::default()`
//! is built by parsing an empty command line, so code and CLI can never disagree on a default.

use std::net::SocketAddr;
use std::time::Duration;

/// Every knob of the simulator. Durations are written `500ms`, `10s`, `15m`, `2h`.
#[derive(clap::Args, Clone, Debug)]
pub struct SimOptions {
    /// Address the simulated WeChat API listens on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    /// Base URL of a replica (e.g. http://127.0.0.1:8080); pushes go to
    /// {base}/callback/{component_appid}. Repeatable: each push goes to one, chosen at random.
    #[arg(long = "push-to", value_name = "URL", value_parser = parse_base_url)]
    pub push_to: Vec<String>,

    /// Interval between component_verify_ticket pushes (the first is sent at start).
    #[arg(long, default_value = "10m", value_parser = parse_positive_duration)]
    pub push_every: Duration,

    /// Lifetime of a component_access_token (its expires_in).
    #[arg(long, default_value = "7200s", value_parser = parse_lifetime)]
    pub token_ttl: Duration,

    /// Lifetime of a pre_auth_code (its expires_in).
    #[arg(long, default_value = "600s", value_parser = parse_lifetime)]
    pub preauth_ttl: Duration,

    /// How long a token stays valid after a newer one was issued for the same platform.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub grace: Duration,

    /// Delay before each WeChat API answer (makes overlapping token calls observable).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub latency: Duration,

    /// Fraction (0.0 to 1.0) of WeChat API calls answered with an injected error.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub error_rate: f64,

    /// errcode of an injected error (-1 is WeChat's "system busy").
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    pub error_code: i64,

    /// How long a pushed component_verify_ticket is accepted by api_component_token.
    #[arg(long, default_value = "12h", value_parser = parse_positive_duration)]
    pub ticket_ttl: Duration,

    /// api_component_token calls allowed per platform per day; then errcode 45009.
    #[arg(long, default_value_t = 10_000)]
    pub token_quota: u32,
}

impl Default for SimOptions {
    fn default() -> Self {
        /// A throwaway command so the clap defaults are the only defaults.
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            options: SimOptions,
        }
        <Defaults as clap::Parser>::parse_from(["simulate"]).options
    }
}

fn parse_base_url(s: &str) -> Result<String, String> {
    let url = url::Url::parse(s).map_err(|e| format!("not an absolute URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    Ok(s.trim_end_matches('/').to_owned())
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// WeChat states lifetimes in whole seconds (`expires_in`), so a lifetime under 1 s could not
/// be told to the client.
fn parse_lifetime(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s (expires_in is whole seconds)".into());
    }
    Ok(d)
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if !(0.0..=1.0).contains(&f) {
        return Err("must be between 0.0 and 1.0".into());
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        options: SimOptions,
    }

    #[test]
    fn defaults_match_the_contract() {
        let o = SimOptions::default();
        assert_eq!(o.listen, "127.0.0.1:8081".parse().unwrap());
        assert!(o.push_to.is_empty());
        assert_eq!(o.push_every, Duration::from_secs(600));
        assert_eq!(o.token_ttl, Duration::from_secs(7200));
        assert_eq!(o.preauth_ttl, Duration::from_secs(600));
        assert_eq!(o.grace, Duration::from_secs(300));
        assert_eq!(o.latency, Duration::ZERO);
        assert_eq!(o.error_rate, 0.0);
        assert_eq!(o.error_code, -1);
        assert_eq!(o.ticket_ttl, Duration::from_secs(12 * 3600));
        assert_eq!(o.token_quota, 10_000);
    }

    #[test]
    fn flags_parse() {
        let o = Cli::try_parse_from([
            "simulate",
            "--push-to",
            "http://127.0.0.1:8080/",
            "--push-to=http://127.0.0.1:8082",
            "--token-ttl",
            "72s",
            "--latency",
            "250ms",
            "--error-rate",
            "0.5",
            "--error-code",
            "-1",
        ])
        .unwrap()
        .options;
        assert_eq!(
            o.push_to,
            ["http://127.0.0.1:8080", "http://127.0.0.1:8082"]
        );
        assert_eq!(o.token_ttl, Duration::from_secs(72));
        assert_eq!(o.latency, Duration::from_millis(250));
        assert_eq!(o.error_rate, 0.5);
        assert_eq!(o.error_code, -1);
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            ["simulate", "--error-rate", "1.5"],
            ["simulate", "--push-every", "0s"],
            ["simulate", "--token-ttl", "500ms"],
            ["simulate", "--push-to", "ftp://x"],
            ["simulate", "--push-to", "localhost:8080/x"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
