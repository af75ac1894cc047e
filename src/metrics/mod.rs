//! Every Prometheus metric of the contract, registered on one `Registry` that is passed down
//! (no globals), plus the standard `process_*` collector.
//!
//! Label values come only from configuration or fixed enums, never from a request: a request
//! naming an unconfigured platform is counted under `platform="unknown"`.
//! [`Metrics::init_series`] creates every labelled series at 0 on start, so rates and alerts
//! work from the first scrape.

pub mod process;

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use crate::store::CredentialKind;

/// The label used for any platform that is not configured.
pub const UNKNOWN_PLATFORM: &str = "unknown";

pub const CALLBACK_OUTCOMES: [&str; 11] = [
    "accepted",
    "duplicate",
    "stale",
    "ignored",
    "bad_request",
    "bad_signature",
    "appid_mismatch",
    "clock_skew",
    "unknown_platform",
    "too_large",
    "store_error",
];
pub const REFRESH_OUTCOMES: [&str; 3] = ["success", "error", "fenced"];
pub const LEASE_EVENTS: [&str; 3] = ["acquired", "lost", "released"];
pub const WECHAT_ENDPOINTS: [&str; 3] = [
    "api_component_token",
    "api_create_preauthcode",
    "api_start_push_ticket",
];
pub const TOKEN_API_CODES: [&str; 7] = ["200", "202", "400", "401", "404", "429", "503"];
pub const START_PUSH_OUTCOMES: [&str; 2] = ["success", "error"];

/// Buckets of the refresh interval histogram (seconds), as the contract fixes them.
pub const INTERVAL_BUCKETS: [f64; 17] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 5400.0,
    6300.0, 7200.0, 10800.0,
];

pub struct Metrics {
    pub registry: Registry,
    pub leader: IntGauge,
    pub lease_epoch: Gauge,
    pub lease_transitions: IntCounterVec,
    pub lease_renew_duration: Histogram,
    pub lease_self_fence: IntCounter,
    pub fenced_writes_rejected: IntCounter,
    pub refresh: IntCounterVec,
    pub refresh_interval: HistogramVec,
    pub refresh_last_interval: GaugeVec,
    pub credential_expiry: GaugeVec,
    pub credential_obtained: GaugeVec,
    pub ticket_received: GaugeVec,
    pub pre_auth_ready: IntGaugeVec,
    pub callback_requests: IntCounterVec,
    pub wechat_api_requests: IntCounterVec,
    pub wechat_api_duration: HistogramVec,
    pub token_api_requests: IntCounterVec,
    pub pre_auth_issued: IntCounterVec,
    pub start_push_ticket: IntCounterVec,
    pub build_info: IntGaugeVec,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("wxkeeper")
}

fn hopts(name: &str, help: &str) -> HistogramOpts {
    HistogramOpts::new(name, help).namespace("wxkeeper")
}

impl Metrics {
    /// Creates the registry with every metric and the process collector.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("metric names are unique");
        };
        macro_rules! make {
            ($e:expr) => {{
                let m = $e.expect("valid metric definition");
                reg(Box::new(m.clone()));
                m
            }};
        }
        let leader = make!(IntGauge::with_opts(opts(
            "leader",
            "1 while this replica holds the lease, else 0"
        )));
        let lease_epoch = make!(Gauge::with_opts(opts(
            "lease_epoch",
            "Fencing epoch of the lease this replica holds or last held"
        )));
        let lease_transitions = make!(IntCounterVec::new(
            opts(
                "lease_transitions_total",
                "Lease transitions of this replica"
            ),
            &["event"]
        ));
        let lease_renew_duration = make!(Histogram::with_opts(
            hopts(
                "lease_renew_duration_seconds",
                "Round trip of each lease renew"
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0
            ])
        ));
        let lease_self_fence = make!(IntCounter::with_opts(opts(
            "lease_self_fence_total",
            "Times this replica stopped acting because its lease might have lapsed"
        )));
        let fenced_writes_rejected = make!(IntCounter::with_opts(opts(
            "fenced_writes_rejected_total",
            "Credential writes refused because the writer no longer held the lease"
        )));
        let refresh = make!(IntCounterVec::new(
            opts("refresh_total", "Credential refreshes by outcome"),
            &["platform", "credential", "outcome"]
        ));
        let refresh_interval = make!(HistogramVec::new(
            hopts(
                "refresh_interval_seconds",
                "Time from the previous credential's issue to this one's, whichever replica fetched either"
            )
            .buckets(INTERVAL_BUCKETS.to_vec()),
            &["platform", "credential"]
        ));
        let refresh_last_interval = make!(GaugeVec::new(
            opts(
                "refresh_last_interval_seconds",
                "The latest refresh interval"
            ),
            &["platform", "credential"]
        ));
        let credential_expiry = make!(GaugeVec::new(
            opts(
                "credential_expiry_timestamp_seconds",
                "Expiry of the credential in the store"
            ),
            &["platform", "credential"]
        ));
        let credential_obtained = make!(GaugeVec::new(
            opts(
                "credential_obtained_timestamp_seconds",
                "When the credential was fetched"
            ),
            &["platform", "credential"]
        ));
        let ticket_received = make!(GaugeVec::new(
            opts(
                "ticket_received_timestamp_seconds",
                "CreateTime of the newest stored component_verify_ticket"
            ),
            &["platform"]
        ));
        let pre_auth_ready = make!(IntGaugeVec::new(
            opts(
                "pre_auth_codes_ready",
                "Unexpired pre-auth codes waiting in the pool"
            ),
            &["platform"]
        ));
        let callback_requests = make!(IntCounterVec::new(
            opts(
                "callback_requests_total",
                "Pushes received on the callback URL by outcome"
            ),
            &["platform", "outcome"]
        ));
        let wechat_api_requests = make!(IntCounterVec::new(
            opts(
                "wechat_api_requests_total",
                "WeChat API calls by endpoint and errcode"
            ),
            &["endpoint", "errcode"]
        ));
        let wechat_api_duration = make!(HistogramVec::new(
            hopts(
                "wechat_api_request_duration_seconds",
                "WeChat API call latency"
            ),
            &["endpoint"]
        ));
        let token_api_requests = make!(IntCounterVec::new(
            opts(
                "token_api_requests_total",
                "Token API answers by HTTP status"
            ),
            &["credential", "code"]
        ));
        let pre_auth_issued = make!(IntCounterVec::new(
            opts(
                "pre_auth_codes_issued_total",
                "Pre-auth codes handed to callers"
            ),
            &["platform"]
        ));
        let start_push_ticket = make!(IntCounterVec::new(
            opts(
                "start_push_ticket_total",
                "Calls asking WeChat to resume ticket pushes"
            ),
            &["platform", "outcome"]
        ));
        let build_info = make!(IntGaugeVec::new(
            opts("build_info", "Always 1"),
            &["version"]
        ));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        reg(Box::<process::ProcessCollector>::default());

        Self {
            registry,
            leader,
            lease_epoch,
            lease_transitions,
            lease_renew_duration,
            lease_self_fence,
            fenced_writes_rejected,
            refresh,
            refresh_interval,
            refresh_last_interval,
            credential_expiry,
            credential_obtained,
            ticket_received,
            pre_auth_ready,
            callback_requests,
            wechat_api_requests,
            wechat_api_duration,
            token_api_requests,
            pre_auth_issued,
            start_push_ticket,
            build_info,
        }
    }

    /// Creates every labelled series for these platforms at 0.
    pub fn init_series<'a>(&self, platforms: impl IntoIterator<Item = &'a str>) {
        for event in LEASE_EVENTS {
            self.lease_transitions.with_label_values(&[event]);
        }
        for endpoint in WECHAT_ENDPOINTS {
            self.wechat_api_requests.with_label_values(&[endpoint, "0"]);
            self.wechat_api_duration.with_label_values(&[endpoint]);
        }
        for kind in CredentialKind::ALL {
            for code in TOKEN_API_CODES {
                self.token_api_requests
                    .with_label_values(&[kind.as_str(), code]);
            }
        }
        self.callback_requests
            .with_label_values(&[UNKNOWN_PLATFORM, "unknown_platform"]);
        for p in platforms {
            for outcome in CALLBACK_OUTCOMES
                .iter()
                .filter(|o| **o != "unknown_platform")
            {
                self.callback_requests.with_label_values(&[p, outcome]);
            }
            for kind in CredentialKind::ALL {
                let k = kind.as_str();
                for outcome in REFRESH_OUTCOMES {
                    self.refresh.with_label_values(&[p, k, outcome]);
                }
                self.refresh_interval.with_label_values(&[p, k]);
                self.refresh_last_interval.with_label_values(&[p, k]);
                self.credential_expiry.with_label_values(&[p, k]);
                self.credential_obtained.with_label_values(&[p, k]);
            }
            self.ticket_received.with_label_values(&[p]);
            self.pre_auth_ready.with_label_values(&[p]);
            self.pre_auth_issued.with_label_values(&[p]);
            for outcome in START_PUSH_OUTCOMES {
                self.start_push_ticket.with_label_values(&[p, outcome]);
            }
        }
    }

    /// The text exposition of everything registered.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_metric_is_exported_from_the_start() {
        let m = Metrics::new();
        m.init_series(["wxaaaa"]);
        let text = m.encode();
        for name in [
            "wxkeeper_leader",
            "wxkeeper_lease_epoch",
            "wxkeeper_lease_transitions_total{event=\"acquired\"} 0",
            "wxkeeper_lease_renew_duration_seconds_bucket",
            "wxkeeper_lease_self_fence_total 0",
            "wxkeeper_fenced_writes_rejected_total 0",
            "wxkeeper_refresh_total{credential=\"component_access_token\",outcome=\"success\",platform=\"wxaaaa\"} 0",
            "wxkeeper_refresh_interval_seconds_bucket{credential=\"pre_auth_code\",platform=\"wxaaaa\",le=\"6300\"} 0",
            "wxkeeper_refresh_last_interval_seconds",
            "wxkeeper_credential_expiry_timestamp_seconds",
            "wxkeeper_credential_obtained_timestamp_seconds",
            "wxkeeper_ticket_received_timestamp_seconds{platform=\"wxaaaa\"} 0",
            "wxkeeper_pre_auth_codes_ready{platform=\"wxaaaa\"} 0",
            "wxkeeper_callback_requests_total{outcome=\"unknown_platform\",platform=\"unknown\"} 0",
            "wxkeeper_callback_requests_total{outcome=\"store_error\",platform=\"wxaaaa\"} 0",
            "wxkeeper_wechat_api_requests_total{endpoint=\"api_component_token\",errcode=\"0\"} 0",
            "wxkeeper_wechat_api_request_duration_seconds_bucket",
            "wxkeeper_token_api_requests_total{code=\"401\",credential=\"component_access_token\"} 0",
            "wxkeeper_pre_auth_codes_issued_total{platform=\"wxaaaa\"} 0",
            "wxkeeper_start_push_ticket_total{outcome=\"error\",platform=\"wxaaaa\"} 0",
            "wxkeeper_build_info{version=",
            "process_resident_memory_bytes",
        ] {
            assert!(text.contains(name), "missing {name}");
        }
    }
}
