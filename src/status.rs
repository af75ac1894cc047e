//! What `wxkeeper status` and the admin `/status` endpoint report: the lease, each platform's
//! ticket and credentials (expiry, age, who fetched them, a fingerprint at most), and the
//! refresh history rendered like the `ls -lrt` of the article's one-log-file-per-refresh.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::clock::UnixMillis;
use crate::redact::fingerprint;
use crate::store::{
    CredentialKind, CredentialRecord, HistoryEvent, LeaseView, PreAuthMeta, SharedStore,
    StoreResult, TicketRecord,
};
use crate::view::PlatformView;

#[derive(Debug, Clone, Serialize)]
pub struct LeaseReport {
    pub holder: String,
    pub epoch: u64,
    pub remaining_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TicketReport {
    pub create_time: i64,
    pub received_at: i64,
    pub age_s: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CredentialReport {
    pub fingerprint: Option<String>,
    pub obtained_at: i64,
    pub expires_at: i64,
    pub expires_in: i64,
    pub epoch: u64,
    pub holder: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolReport {
    pub ready: u32,
    pub latest: Option<CredentialReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlatformReport {
    pub ticket: Option<TicketReport>,
    pub component_access_token: Option<CredentialReport>,
    pub pre_auth_code: PoolReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoreReport {
    pub now: i64,
    pub lease: Option<LeaseReport>,
    pub platforms: BTreeMap<String, PlatformReport>,
}

fn secs(ms: UnixMillis) -> i64 {
    ms.div_euclid(1000)
}

fn credential(r: &CredentialRecord, now_ms: UnixMillis) -> CredentialReport {
    CredentialReport {
        fingerprint: Some(fingerprint(&r.value)),
        ..meta(&PreAuthMeta::from(r), now_ms)
    }
}

fn meta(m: &PreAuthMeta, now_ms: UnixMillis) -> CredentialReport {
    CredentialReport {
        fingerprint: None,
        obtained_at: secs(m.obtained_at_ms),
        expires_at: secs(m.expires_at_ms),
        expires_in: secs(m.expires_at_ms - now_ms).max(0),
        epoch: m.epoch,
        holder: m.holder.clone(),
    }
}

fn ticket(t: &TicketRecord, now_ms: UnixMillis) -> TicketReport {
    TicketReport {
        create_time: t.create_time,
        received_at: secs(t.received_at_ms),
        age_s: secs(now_ms - t.received_at_ms).max(0),
    }
}

pub fn lease_report(view: Option<&LeaseView>) -> Option<LeaseReport> {
    view.map(|l| LeaseReport {
        holder: l.id.holder.clone(),
        epoch: l.id.epoch,
        remaining_ms: l.remaining_ms,
    })
}

/// One platform from a replica's in-memory copy (the admin `/status`).
pub fn platform_report(v: &PlatformView, now_ms: UnixMillis) -> PlatformReport {
    PlatformReport {
        ticket: v.ticket.as_ref().map(|t| ticket(t, now_ms)),
        component_access_token: v.token.as_ref().map(|t| credential(t, now_ms)),
        pre_auth_code: PoolReport {
            ready: v.pre_auth_ready,
            latest: v.pre_auth.as_ref().map(|m| meta(m, now_ms)),
        },
    }
}

/// What the store holds now (`wxkeeper status`).
pub async fn from_store(
    store: &SharedStore,
    platforms: &[String],
    pre_auth_margin_ms: i64,
) -> StoreResult<StoreReport> {
    let now_ms = store.now_ms().await?;
    let lease = lease_report(store.read_lease().await?.as_ref());
    let mut out = BTreeMap::new();
    for p in platforms {
        let view = PlatformView {
            token: store.get_token(p).await?,
            ticket: store.get_ticket(p).await?,
            pre_auth: store.get_pre_auth_meta(p).await?,
            pre_auth_ready: store.pre_auth_ready(p, pre_auth_margin_ms).await?.ready,
        };
        out.insert(p.clone(), platform_report(&view, now_ms));
    }
    Ok(StoreReport {
        now: secs(now_ms),
        lease,
        platforms: out,
    })
}

fn ago(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

/// The report for people.
pub fn render_text(r: &StoreReport) -> String {
    let mut out = String::new();
    match &r.lease {
        Some(l) => {
            let _ = writeln!(
                out,
                "leader      {} (epoch {}, lease {} ms left)",
                l.holder, l.epoch, l.remaining_ms
            );
        }
        None => {
            let _ = writeln!(out, "leader      none");
        }
    }
    for (appid, p) in &r.platforms {
        let _ = writeln!(out, "\nplatform    {appid}");
        match &p.ticket {
            Some(t) => {
                let _ = writeln!(
                    out,
                    "  ticket                  CreateTime {}, received {} ago",
                    t.create_time,
                    ago(t.age_s)
                );
            }
            None => {
                let _ = writeln!(out, "  ticket                  none yet");
            }
        }
        match &p.component_access_token {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "  component_access_token  {} expires in {} (epoch {}, by {})",
                    c.fingerprint.as_deref().unwrap_or("-"),
                    ago(c.expires_in),
                    c.epoch,
                    c.holder
                );
            }
            None => {
                let _ = writeln!(out, "  component_access_token  none yet");
            }
        }
        let _ = write!(
            out,
            "  pre_auth_code           {} ready",
            p.pre_auth_code.ready
        );
        if let Some(l) = &p.pre_auth_code.latest {
            let _ = write!(out, ", newest expires in {}", ago(l.expires_in));
        }
        let _ = writeln!(out);
    }
    out
}

/// The refresh history, oldest first, then the average and maximum interval per credential.
pub fn render_history(events: &[HistoryEvent]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<18} {:<24} {:>10} {:>20}  holder",
        "obtained (UTC)", "platform", "credential", "interval", "epoch"
    );
    let mut stats: BTreeMap<(String, CredentialKind), (i64, i64, i64)> = BTreeMap::new();
    for e in events {
        let when = format_utc(e.obtained_at_ms);
        let interval = e.interval_ms.map_or("-".to_owned(), |i| ago(i / 1000));
        let _ = writeln!(
            out,
            "{when:<24} {:<18} {:<24} {interval:>10} {:>20}  {}",
            e.platform,
            e.credential.as_str(),
            e.epoch,
            e.holder
        );
        if let Some(i) = e.interval_ms {
            let s = stats
                .entry((e.platform.clone(), e.credential))
                .or_insert((0, 0, 0));
            s.0 += 1;
            s.1 += i;
            s.2 = s.2.max(i);
        }
    }
    for ((platform, kind), (n, sum, max)) in stats {
        let _ = writeln!(
            out,
            "\n{platform} {}: {n} intervals, average {}, maximum {}",
            kind.as_str(),
            ago(sum / n / 1000),
            ago(max / 1000)
        );
    }
    out
}

fn format_utc(ms: UnixMillis) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_shows_intervals_average_and_maximum() {
        let ev = |obtained: i64, interval: Option<i64>| HistoryEvent {
            platform: "wxaaaa".into(),
            credential: CredentialKind::ComponentAccessToken,
            obtained_at_ms: obtained,
            expires_at_ms: obtained + 7_200_000,
            epoch: 3,
            holder: "h".into(),
            interval_ms: interval,
        };
        let text = render_history(&[
            ev(1_700_000_000_000, None),
            ev(1_700_006_300_000, Some(6_300_000)),
            ev(1_700_012_900_000, Some(6_600_000)),
        ]);
        assert!(text.contains("2023-11-14T22:13:20Z"), "{text}");
        assert!(text.contains("105m0s"), "{text}");
        assert!(
            text.contains("2 intervals, average 107m30s, maximum 110m0s"),
            "{text}"
        );
    }

    #[test]
    fn reports_never_contain_credential_values() {
        let v = PlatformView {
            token: Some(CredentialRecord {
                value: "SECRET-TOKEN".into(),
                obtained_at_ms: 1_000,
                expires_at_ms: 7_201_000,
                epoch: 1,
                holder: "h".into(),
            }),
            ticket: Some(TicketRecord {
                ticket: "ticket@@@SECRET".into(),
                create_time: 1,
                received_at_ms: 1_000,
                previous: None,
            }),
            pre_auth: None,
            pre_auth_ready: 2,
        };
        let r = StoreReport {
            now: 10,
            lease: None,
            platforms: [("wxaaaa".to_owned(), platform_report(&v, 10_000))].into(),
        };
        let json = serde_json::to_string(&r).unwrap();
        let text = render_text(&r);
        for out in [json, text] {
            assert!(!out.contains("SECRET"), "{out}");
        }
    }
}
