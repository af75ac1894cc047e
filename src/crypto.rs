//! WeChat message crypto (WXBizMsgCrypt), pure: no I/O, no clock, no randomness of its own.
//!
//! Owns the three things a push needs before anything else may look at it:
//! `msg_signature` (SHA-1 over the sorted token, timestamp, nonce and ciphertext), the
//! EncodingAESKey (decoded leniently, as WeChat's own SDKs do), and AES-256-CBC with PKCS#7 over
//! **32-byte** blocks. `encrypt` exists for the simulator and the tests; the caller supplies the
//! 16 random bytes so that known-answer vectors can be reproduced.

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::{alphabet, Engine};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;

/// WeChat pads to a multiple of 32 bytes, not the AES block size: pad bytes are 1..=32.
const PAD_BLOCK: usize = 32;
/// 16 random bytes then a 4-byte big-endian message length.
const HEADER_LEN: usize = 20;

/// Console-generated keys do not always have zero trailing bits in their 43rd character, so the
/// decoder must not insist on them (the `STANDARD` engine does).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// What went wrong with a message. Says nothing about the key or the plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("EncodingAESKey must be 43 base64 characters decoding to 32 bytes")]
    InvalidKey,
    #[error("ciphertext is not valid base64")]
    Base64,
    #[error("ciphertext length {0} is not a multiple of 16 of at least 32 bytes")]
    CiphertextLength(usize),
    #[error("PKCS#7 padding is invalid")]
    Padding,
    #[error("plaintext is shorter than its declared message length")]
    Bounds,
    #[error("message is addressed to another appid")]
    AppIdMismatch,
}

/// The 32-byte AES key decoded from an EncodingAESKey. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct AesKey([u8; 32]);

impl std::fmt::Debug for AesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesKey(<redacted>)")
    }
}

impl AesKey {
    /// Decodes a 43-character EncodingAESKey (base64 without its final `=`).
    pub fn from_encoding_aes_key(encoding_aes_key: &str) -> Result<Self, CryptoError> {
        if encoding_aes_key.len() != 43 {
            return Err(CryptoError::InvalidKey);
        }
        let bytes = LENIENT
            .decode(format!("{encoding_aes_key}="))
            .map_err(|_| CryptoError::InvalidKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::InvalidKey)?;
        Ok(Self(key))
    }

    fn iv(&self) -> &[u8] {
        &self.0[..16]
    }
}

/// `msg_signature`: hex SHA-1 of the four strings sorted bytewise and concatenated.
pub fn msg_signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    hex::encode(signature_digest(token, timestamp, nonce, encrypt))
}

fn signature_digest(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> [u8; 20] {
    let mut parts = [token, timestamp, nonce, encrypt];
    parts.sort_unstable();
    let mut hasher = Sha1::new();
    for part in parts {
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

/// Checks a `msg_signature` in constant time (hex in either case, as SDKs emit either).
pub fn verify_msg_signature(
    token: &str,
    timestamp: &str,
    nonce: &str,
    encrypt: &str,
    msg_signature_hex: &str,
) -> bool {
    let mut given = [0u8; 20];
    if hex::decode_to_slice(msg_signature_hex, &mut given).is_err() {
        return false;
    }
    let expected = signature_digest(token, timestamp, nonce, encrypt);
    expected.ct_eq(&given).into()
}

/// Decrypts an `Encrypt` field and checks that the trailing appid is `expected_appid`.
/// Returns the inner message bytes (normally XML).
pub fn decrypt(
    key: &AesKey,
    encrypt_b64: &str,
    expected_appid: &str,
) -> Result<Vec<u8>, CryptoError> {
    let mut buf = STANDARD
        .decode(encrypt_b64.trim())
        .map_err(|_| CryptoError::Base64)?;
    if buf.len() < PAD_BLOCK || buf.len() % 16 != 0 {
        return Err(CryptoError::CiphertextLength(buf.len()));
    }
    let plain = Aes256CbcDec::new(key.0[..].into(), key.iv().into())
        .decrypt_padded_mut::<NoPadding>(&mut buf)
        .map_err(|_| CryptoError::Padding)?;
    let unpadded = strip_pkcs7_32(plain)?;
    if unpadded.len() < HEADER_LEN {
        return Err(CryptoError::Bounds);
    }
    let len_bytes: [u8; 4] = unpadded[16..HEADER_LEN].try_into().expect("4 bytes");
    let msg_len = u32::from_be_bytes(len_bytes) as usize;
    let msg_end = HEADER_LEN.checked_add(msg_len).ok_or(CryptoError::Bounds)?;
    if msg_end > unpadded.len() {
        return Err(CryptoError::Bounds);
    }
    let appid = &unpadded[msg_end..];
    if appid.ct_eq(expected_appid.as_bytes()).unwrap_u8() != 1 {
        return Err(CryptoError::AppIdMismatch);
    }
    // Reuse the buffer: keep the message, drop the header and the appid.
    buf.truncate(msg_end);
    buf.drain(..HEADER_LEN);
    Ok(buf)
}

/// Encrypts `msg` for `appid` the way WeChat does; `random` is the 16-byte prefix.
pub fn encrypt(key: &AesKey, random: [u8; 16], msg: &[u8], appid: &str) -> String {
    let mut plain = Vec::with_capacity(HEADER_LEN + msg.len() + appid.len() + PAD_BLOCK);
    plain.extend_from_slice(&random);
    plain.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    plain.extend_from_slice(msg);
    plain.extend_from_slice(appid.as_bytes());
    let pad = PAD_BLOCK - plain.len() % PAD_BLOCK;
    plain.extend(std::iter::repeat_n(pad as u8, pad));
    let len = plain.len();
    let cipher = Aes256CbcEnc::new(key.0[..].into(), key.iv().into())
        .encrypt_padded_mut::<NoPadding>(&mut plain, len)
        .expect("plaintext is a whole number of blocks");
    STANDARD.encode(cipher)
}

/// Strips PKCS#7 padding over 32-byte blocks: the last byte n is 1..=32 and so are all n.
fn strip_pkcs7_32(plain: &[u8]) -> Result<&[u8], CryptoError> {
    let n = *plain.last().ok_or(CryptoError::Padding)? as usize;
    if n == 0 || n > PAD_BLOCK || n > plain.len() {
        return Err(CryptoError::Padding);
    }
    let (body, pad) = plain.split_at(plain.len() - n);
    if pad.iter().any(|&b| b as usize != n) {
        return Err(CryptoError::Padding);
    }
    Ok(body)
}

#[cfg(test)]
mod tests;
