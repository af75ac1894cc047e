//! PURE: the `authorization_url` request, its validation, and the componentloginpage link.
//!
//! Validation happens before a pre-auth code is taken from the pool, so a bad request costs
//! no code. The link is `https://mp.weixin.qq.com/cgi-bin/componentloginpage?component_appid=…
//! &pre_auth_code=…&redirect_uri=…[&auth_type=…|&biz_appid=…]`, every value form-encoded.

use serde::Deserialize;

/// WeChat's authorization page for third-party platforms.
pub const LOGIN_PAGE: &str = "https://mp.weixin.qq.com/cgi-bin/componentloginpage";
/// Longer redirect URIs are refused (browsers and WeChat truncate long links).
pub const MAX_REDIRECT_URI: usize = 2048;
/// Longest `biz_appid` accepted (real appids are 18 characters).
pub const MAX_BIZ_APPID: usize = 64;

/// The JSON body as sent. Unknown fields are refused: a misspelt `auth_type` silently dropped
/// would produce a working link with the wrong scope.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    redirect_uri: String,
    #[serde(default)]
    auth_type: Option<u8>,
    #[serde(default)]
    biz_appid: Option<String>,
}

/// Which accounts the authorization page offers (`auth_type` and `biz_appid` are exclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Neither parameter: WeChat's default.
    Default,
    /// 1 official accounts, 2 mini programs, 3 both.
    AuthType(u8),
    /// Only this account may authorize.
    BizAppid(String),
}

/// A validated request: everything the link needs except the platform and the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    pub redirect_uri: String,
    pub scope: Scope,
}

/// Parses and validates a request body. The error is a fixed message for a 400 answer; it
/// never echoes the input.
pub fn parse_request(body: &[u8]) -> Result<LinkSpec, &'static str> {
    let req: Request = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            "body must be {\"redirect_uri\": string, \"auth_type\"?: 1|2|3, \"biz_appid\"?: string}"
        } else {
            "body is not JSON"
        }
    })?;
    check_redirect_uri(&req.redirect_uri)?;
    let scope = match (req.auth_type, req.biz_appid) {
        (Some(_), Some(_)) => return Err("auth_type and biz_appid are mutually exclusive"),
        (Some(t @ 1..=3), None) => Scope::AuthType(t),
        (Some(_), None) => return Err("auth_type must be 1, 2 or 3"),
        (None, Some(appid)) => {
            check_biz_appid(&appid)?;
            Scope::BizAppid(appid)
        }
        (None, None) => Scope::Default,
    };
    Ok(LinkSpec {
        redirect_uri: req.redirect_uri,
        scope,
    })
}

/// An absolute `http`/`https` URL with a host. It is used as sent (not normalised), so it
/// must not contain whitespace or control characters, which a URL parser would silently drop.
fn check_redirect_uri(raw: &str) -> Result<(), &'static str> {
    const MSG: &str = "redirect_uri must be an absolute http or https URL";
    if raw.is_empty() || raw.len() > MAX_REDIRECT_URI {
        return Err("redirect_uri must be 1 to 2048 characters");
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(MSG);
    }
    let url = url::Url::parse(raw).map_err(|_| MSG)?;
    let web = matches!(url.scheme(), "http" | "https");
    if !web || url.host_str().is_none_or(str::is_empty) {
        return Err(MSG);
    }
    Ok(())
}

fn check_biz_appid(appid: &str) -> Result<(), &'static str> {
    let well_formed = (1..=MAX_BIZ_APPID).contains(&appid.len())
        && appid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if well_formed {
        Ok(())
    } else {
        Err("biz_appid must be 1 to 64 letters, digits, '_' or '-'")
    }
}

/// The componentloginpage link for one pre-auth code.
pub fn login_url(component_appid: &str, pre_auth_code: &str, spec: &LinkSpec) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("component_appid", component_appid)
        .append_pair("pre_auth_code", pre_auth_code)
        .append_pair("redirect_uri", &spec.redirect_uri);
    match &spec.scope {
        Scope::Default => {}
        Scope::AuthType(t) => {
            query.append_pair("auth_type", &t.to_string());
        }
        Scope::BizAppid(appid) => {
            query.append_pair("biz_appid", appid);
        }
    }
    format!("{LOGIN_PAGE}?{}", query.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<LinkSpec, &'static str> {
        parse_request(json.as_bytes())
    }

    fn spec(redirect_uri: &str, scope: Scope) -> LinkSpec {
        LinkSpec {
            redirect_uri: redirect_uri.to_owned(),
            scope,
        }
    }

    #[test]
    fn accepts_the_three_shapes() {
        let uri = "https://example.com/cb";
        assert_eq!(
            parse(r#"{"redirect_uri":"https://example.com/cb"}"#),
            Ok(spec(uri, Scope::Default))
        );
        assert_eq!(
            parse(r#"{"redirect_uri":"https://example.com/cb","auth_type":2,"biz_appid":null}"#),
            Ok(spec(uri, Scope::AuthType(2)))
        );
        assert_eq!(
            parse(r#"{"redirect_uri":"http://example.com/cb","biz_appid":"wx0123456789abcdef"}"#),
            Ok(spec(
                "http://example.com/cb",
                Scope::BizAppid("wx0123456789abcdef".into())
            ))
        );
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "not json",
            "[]",
            "{}",
            r#"{"redirect_uri":1}"#,
            r#"{"redirect_uri":""}"#,
            r#"{"redirect_uri":"/relative/cb"}"#,
            r#"{"redirect_uri":"example.com/cb"}"#,
            r#"{"redirect_uri":"ftp://example.com/cb"}"#,
            r#"{"redirect_uri":"javascript:alert(1)"}"#,
            r#"{"redirect_uri":"https://"}"#,
            r#"{"redirect_uri":"https://example.com/c b"}"#,
            r#"{"redirect_uri":"https://example.com/cb\n"}"#,
            r#"{"redirect_uri":"https://example.com/cb","auth_type":0}"#,
            r#"{"redirect_uri":"https://example.com/cb","auth_type":4}"#,
            r#"{"redirect_uri":"https://example.com/cb","auth_type":-1}"#,
            r#"{"redirect_uri":"https://example.com/cb","auth_type":1.5}"#,
            r#"{"redirect_uri":"https://example.com/cb","auth_type":"1"}"#,
            r#"{"redirect_uri":"https://example.com/cb","auth_type":1,"biz_appid":"wx1"}"#,
            r#"{"redirect_uri":"https://example.com/cb","biz_appid":""}"#,
            r#"{"redirect_uri":"https://example.com/cb","biz_appid":"wx&x=1"}"#,
            r#"{"redirect_uri":"https://example.com/cb","authtype":1}"#,
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
        let long = format!(r#"{{"redirect_uri":"https://e.com/{}"}}"#, "a".repeat(3000));
        assert!(parse(&long).is_err());
    }

    #[test]
    fn link_carries_every_value_encoded() {
        let s = spec("https://example.com/cb?a=1&b=x y", Scope::AuthType(3));
        let link = login_url("wxcomponent", "preauthcode@@@x+y", &s);
        assert_eq!(
            link,
            "https://mp.weixin.qq.com/cgi-bin/componentloginpage?component_appid=wxcomponent\
             &pre_auth_code=preauthcode%40%40%40x%2By\
             &redirect_uri=https%3A%2F%2Fexample.com%2Fcb%3Fa%3D1%26b%3Dx+y&auth_type=3"
        );
        let parsed = url::Url::parse(&link).unwrap();
        let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
        assert_eq!(
            pairs[1],
            ("pre_auth_code".into(), "preauthcode@@@x+y".into())
        );
        assert_eq!(pairs[2], ("redirect_uri".into(), s.redirect_uri.clone()));
    }

    #[test]
    fn biz_appid_or_nothing() {
        let link = login_url(
            "wxc",
            "code",
            &spec("https://e.com/", Scope::BizAppid("wxb".into())),
        );
        assert!(link.ends_with("&redirect_uri=https%3A%2F%2Fe.com%2F&biz_appid=wxb"));
        assert!(!link.contains("auth_type"));
        let link = login_url("wxc", "code", &spec("https://e.com/", Scope::Default));
        assert!(link.ends_with("&redirect_uri=https%3A%2F%2Fe.com%2F"));
    }
}
