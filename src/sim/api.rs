//! The three WeChat component endpoints, transport-agnostic: raw body in, WeChat answer out.
//!
//! Owns what happens around the decision in `state`: counting the call, the in-flight window
//! of a token call, the `--latency` delay (spent inside that window, so two refreshers calling
//! at once are seen to overlap) and `--error-rate` injection.

use rand::Rng;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::state::Endpoint;
use super::wire::{
    PreAuthRequest, PreAuthResponse, StartPushRequest, TokenRequest, TokenResponse, WxError,
};
use super::Simulator;

impl Simulator {
    /// `POST /cgi-bin/component/api_component_token`.
    pub(super) async fn component_token(&self, body: &[u8]) -> Result<TokenResponse, WxError> {
        let req = parse::<TokenRequest>(body);
        let appid = req.as_ref().ok().and_then(|r| r.component_appid.clone());
        let _window = self.update(|s, now| {
            s.count_call(Endpoint::ComponentToken, appid.as_deref());
            let appid = s.known(appid.as_deref())?;
            s.begin_token_call(appid, now).then(|| TokenCallWindow {
                sim: self.clone(),
                appid: appid.to_owned(),
            })
        });
        self.before_answer(appid.as_deref()).await?;
        let req = req?;
        let (token, ttl) = self.update(|s, now| s.issue_token(&req, now))?;
        Ok(TokenResponse {
            component_access_token: token,
            expires_in: ttl.as_secs(),
        })
    }

    /// `POST /cgi-bin/component/api_create_preauthcode?component_access_token=T`.
    pub(super) async fn create_preauthcode(
        &self,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<PreAuthResponse, WxError> {
        let req = parse::<PreAuthRequest>(body);
        let appid = req.as_ref().ok().and_then(|r| r.component_appid.clone());
        self.update(|s, _| s.count_call(Endpoint::CreatePreauthcode, appid.as_deref()));
        self.before_answer(appid.as_deref()).await?;
        // WeChat checks the token before it looks at the body.
        let owner = self.update(|s, now| s.check_token(token, appid.as_deref(), now))?;
        let req = req?;
        let (code, ttl) = self
            .update(|s, now| s.issue_pre_auth_code(&owner, req.component_appid.as_deref(), now))?;
        Ok(PreAuthResponse {
            pre_auth_code: code,
            expires_in: ttl.as_secs(),
        })
    }

    /// `POST /cgi-bin/component/api_start_push_ticket`: answers at once and pushes a new ticket
    /// right after, as WeChat resumes pushing.
    pub(super) async fn start_push_ticket(&self, body: &[u8]) -> Result<(), WxError> {
        let req = parse::<StartPushRequest>(body);
        let appid = req.as_ref().ok().and_then(|r| r.component_appid.clone());
        self.update(|s, _| s.count_call(Endpoint::StartPushTicket, appid.as_deref()));
        self.before_answer(appid.as_deref()).await?;
        let req = req?;
        let appid = self.lock().check_start_push(&req)?;
        let sim = self.clone();
        self.inner.tasks.spawn(async move {
            // push_once logs the outcome of a push it attempted.
            if let Err(e) = sim.push_now(Some(&appid)).await {
                tracing::warn!(platform = %appid, error = %e, "requested push not sent");
            }
        });
        Ok(())
    }

    /// Waits `--latency`, then maybe injects an error, as every API answer does.
    async fn before_answer(&self, appid: Option<&str>) -> Result<(), WxError> {
        let latency = self.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let rate = self.options().error_rate;
        // A rate built in code rather than parsed from a flag may lie outside 0..=1 (or be NaN).
        let inject = rate > 0.0 && (rate >= 1.0 || rand::thread_rng().gen_bool(rate));
        if inject {
            self.update(|s, _| s.count_injected(appid));
            return Err(WxError::Injected(self.options().error_code));
        }
        Ok(())
    }
}

/// A token call being answered. Dropping it closes the window, also when the caller hangs up
/// and the handler future is dropped mid-`--latency`.
struct TokenCallWindow {
    sim: Simulator,
    appid: String,
}

impl Drop for TokenCallWindow {
    fn drop(&mut self) {
        self.sim
            .update(|s, _: Instant| s.end_token_call(&self.appid));
    }
}

/// WeChat reads the body as JSON whatever the `Content-Type`; anything but an object of the
/// expected fields is 47001.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, WxError> {
    serde_json::from_slice(body).map_err(|_| WxError::DataFormat)
}
