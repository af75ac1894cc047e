//! Bearer-key check for the token API.
//!
//! The presented key is compared with every configured key in constant time, and all of
//! them are compared on every request, so timing reveals neither how much of a key matched
//! nor which key did. Both sides are hashed to 20 bytes first, so the comparison does not
//! even leak a key's length. (SHA-1 is only an equalizer here: finding a collision with an
//! unknown key is no easier than guessing it.)

use axum::http::{header, HeaderMap};
use secrecy::{ExposeSecret, SecretString};
use sha1::{Digest, Sha1};
use subtle::{Choice, ConstantTimeEq};

/// Whether `headers` carry `Authorization: Bearer <key>` with one of `keys`.
/// No keys configured means nobody is authorized.
pub fn authorized(headers: &HeaderMap, keys: &[SecretString]) -> bool {
    let Some(presented) = bearer(headers) else {
        return false;
    };
    let presented = Sha1::digest(presented.as_bytes());
    let mut matched = Choice::from(0);
    for key in keys {
        let configured = Sha1::digest(key.expose_secret().as_bytes());
        matched |= configured.as_slice().ct_eq(presented.as_slice());
    }
    matched.into()
}

/// The credentials of an `Authorization: Bearer …` header (scheme case-insensitive, RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    fn keys(ks: &[&str]) -> Vec<SecretString> {
        ks.iter()
            .map(|k| SecretString::from(k.to_string()))
            .collect()
    }

    #[test]
    fn any_configured_key_is_accepted() {
        let ks = keys(&["first-key", "second-key"]);
        assert!(authorized(&with_auth("Bearer first-key"), &ks));
        assert!(authorized(&with_auth("Bearer second-key"), &ks));
        assert!(authorized(&with_auth("bearer second-key"), &ks));
    }

    #[test]
    fn everything_else_is_refused() {
        let ks = keys(&["first-key"]);
        assert!(!authorized(&HeaderMap::new(), &ks));
        assert!(!authorized(&with_auth("Bearer first-ke"), &ks));
        assert!(!authorized(&with_auth("Bearer first-key2"), &ks));
        assert!(!authorized(&with_auth("Basic first-key"), &ks));
        assert!(!authorized(&with_auth("first-key"), &ks));
        assert!(!authorized(&with_auth("Bearer "), &ks));
    }

    #[test]
    fn no_keys_means_nobody() {
        assert!(!authorized(&with_auth("Bearer anything"), &[]));
        assert!(!authorized(&with_auth("Bearer "), &keys(&[""])));
    }
}
