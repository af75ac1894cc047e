//! How secrets and credentials may appear in logs: as a short fingerprint at most.

use sha1::{Digest, Sha1};

/// The first 8 hex digits of the SHA-1 of `value`: enough to tell two tokens apart in logs,
/// useless for calling WeChat.
pub fn fingerprint(value: &str) -> String {
    let digest = Sha1::digest(value.as_bytes());
    format!("sha1:{}", &hex::encode(digest)[..8])
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprint_is_short_and_stable() {
        let f = super::fingerprint("secret-token");
        assert_eq!(f.len(), 13);
        assert_eq!(f, super::fingerprint("secret-token"));
        assert_ne!(f, super::fingerprint("secret-tokeN"));
        assert!(!f.contains("secret"));
    }
}
