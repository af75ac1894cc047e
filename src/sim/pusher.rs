//! WeChat's ticket pushes: a new `component_verify_ticket` per push, wrapped the way WeChat
//! wraps it (inner XML, AES-encrypted, signed), POSTed to one replica's callback URL.
//!
//! Owns the push format (`build_push`, pure), one push (`push_once`) and the periodic loop
//! (`run`). A push that is not answered HTTP 200 `success` within 5 s counts as failed, as at
//! WeChat; the ticket stays valid all the same (WeChat issued it whether or not it arrived).

use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{SimError, Simulator};
use crate::crypto::{self, AesKey};

/// WeChat gives up on a push after about 5 s (PROTOCOL.md).
pub(super) const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// What one push did. `status` is None when no HTTP answer came (refused, timed out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushReport {
    pub component_appid: String,
    /// The replica base URL the push went to.
    pub target: String,
    /// The ticket's `CreateTime` (unix seconds), also the query's `timestamp`.
    pub create_time: u64,
    pub ticket: String,
    pub status: Option<u16>,
    /// HTTP 200 with body exactly `success`.
    pub accepted: bool,
    /// Why the push failed, when it did.
    pub error: Option<String>,
}

/// A push ready to send: the query pairs and the outer XML body.
#[derive(Debug)]
pub(super) struct Push {
    pub query: Vec<(&'static str, String)>,
    pub body: String,
}

/// Builds the push of `ticket` exactly as WeChat does. `random` is the 16-byte cipher prefix.
pub(super) fn build_push(
    appid: &str,
    token: &str,
    key: &AesKey,
    ticket: &str,
    create_time: u64,
    nonce: &str,
    random: [u8; 16],
) -> Push {
    let inner = format!(
        "<xml><AppId><![CDATA[{appid}]]></AppId><CreateTime>{create_time}</CreateTime>\
         <InfoType><![CDATA[component_verify_ticket]]></InfoType>\
         <ComponentVerifyTicket><![CDATA[{ticket}]]></ComponentVerifyTicket></xml>"
    );
    let encrypted = crypto::encrypt(key, random, inner.as_bytes(), appid);
    let timestamp = create_time.to_string();
    let msg_signature = crypto::msg_signature(token, &timestamp, nonce, &encrypted);
    let signature = plain_signature(token, &timestamp, nonce);
    Push {
        query: vec![
            ("signature", signature),
            ("timestamp", timestamp),
            ("nonce", nonce.to_owned()),
            ("encrypt_type", "aes".to_owned()),
            ("msg_signature", msg_signature),
        ],
        body: format!(
            "<xml><AppId><![CDATA[{appid}]]></AppId><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
        ),
    }
}

/// The legacy `signature`: SHA-1 of token, timestamp and nonce sorted (it covers no body).
fn plain_signature(token: &str, timestamp: &str, nonce: &str) -> String {
    let mut parts = [token, timestamp, nonce];
    parts.sort_unstable();
    hex::encode(Sha1::digest(parts.concat().as_bytes()))
}

/// One push of a new ticket for `appid` (None: the first platform) to a random target.
pub(super) async fn push_once(
    sim: &Simulator,
    appid: Option<&str>,
) -> Result<PushReport, SimError> {
    let keys = match appid {
        None => sim.inner.push_keys.first().ok_or(SimError::NoPlatform)?,
        Some(appid) => sim
            .inner
            .push_keys
            .iter()
            .find(|k| k.appid == appid)
            .ok_or_else(|| SimError::UnknownPlatform(appid.to_owned()))?,
    };
    let target = sim
        .inner
        .targets
        .borrow()
        .choose(&mut rand::thread_rng())
        .cloned()
        .ok_or(SimError::NoPushTarget)?;

    // CreateTime is WeChat's wall clock; everything else in the simulator runs on tokio time.
    let create_time = u64::try_from(sim.inner.wall_clock.now_secs()).unwrap_or(0);
    let ticket = sim
        .update(|s, now| s.new_ticket(&keys.appid, create_time, now))
        .expect("push keys and state hold the same platforms");
    let (nonce, random) = {
        let mut rng = rand::thread_rng();
        (
            rng.gen_range(100_000_000..10_000_000_000u64).to_string(),
            rng.gen(),
        )
    };
    let push = build_push(
        &keys.appid,
        &keys.token,
        &keys.aes_key,
        &ticket,
        create_time,
        &nonce,
        random,
    );

    let url = format!("{target}/callback/{}", keys.appid);
    let span = tracing::info_span!("sim_push", platform = %keys.appid, %target, create_time);
    let (status, error) = deliver(&sim.inner.http, &url, push)
        .instrument(span.clone())
        .await;
    let accepted = error.is_none();
    sim.update(|s, _| s.count_push(&keys.appid, accepted));
    span.in_scope(|| match &error {
        None => tracing::info!("sim pushed a ticket"),
        Some(e) => tracing::warn!(error = %e, "sim push failed"),
    });
    Ok(PushReport {
        component_appid: keys.appid.clone(),
        target,
        create_time,
        ticket,
        status,
        accepted,
        error,
    })
}

/// POSTs a push; returns the HTTP status, if any, and why it failed, if it did.
async fn deliver(http: &reqwest::Client, url: &str, push: Push) -> (Option<u16>, Option<String>) {
    let sent = http
        .post(url)
        .query(&push.query)
        .header(reqwest::header::CONTENT_TYPE, "text/xml")
        .body(push.body)
        .send()
        .await;
    let answer = match sent {
        // The URL carries the signatures: keep it out of the message.
        Err(e) if e.is_timeout() => return (None, Some("no answer within 5 s".into())),
        Err(e) => return (None, Some(format!("no answer: {}", chain(e)))),
        Ok(answer) => answer,
    };
    let status = answer.status().as_u16();
    match answer.text().await {
        Ok(body) if status == 200 && body == "success" => (Some(status), None),
        Ok(_) => (
            Some(status),
            Some(format!("answered HTTP {status}, not `success`")),
        ),
        Err(e) => (
            Some(status),
            Some(format!("answer unreadable: {}", chain(e))),
        ),
    }
}

/// The error and its causes on one line ("error sending request" alone says too little).
fn chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut line = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// The periodic pusher: every platform at once, then every `--push-every`, until `shutdown`.
pub(super) async fn run(sim: Simulator, shutdown: CancellationToken) {
    let every = sim.options().push_every.max(Duration::from_millis(1));
    let mut targets = sim.inner.targets.subscribe();
    loop {
        // The demo learns its replicas' ports only after binding: wait for a first target
        // rather than miss the push a fresh system needs at once.
        tokio::select! {
            () = shutdown.cancelled() => return,
            found = targets.wait_for(|t| !t.is_empty()) => {
                if found.is_err() {
                    return;
                }
            }
        }
        let next = Instant::now() + every;
        let pushes = sim.inner.push_keys.iter().map(|k| async {
            if let Err(e) = push_once(&sim, Some(&k.appid)).await {
                tracing::warn!(platform = %k.appid, error = %e, "sim push not sent");
            }
        });
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = futures::future::join_all(pushes) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
    }
}

#[cfg(test)]
mod tests;
