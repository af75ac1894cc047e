//! Known-answer vectors from PROTOCOL.md, round trips over every pad length, and fuzzing.

use super::*;
use proptest::prelude::*;

const E_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const E_APPID: &str = "wx134c8103faa5a59e";
const E_ENCRYPT: &str = "D7yzvUNAL930rd28wf21s4hvXhz0L6Uit/p2Di6C5DHyYGpEgdBRnKjBec34JwoQXicwaZC7fOVihW80F4VtsdvE//1vr7oAbqjDv8KenVp+ajKYpJnyQ4zMRhIC+a31fCVOMC03FfzV/QuC94kBP55a+Za3sJgvAn+ZbsNqZI5DkyuzkhQN8OBqCzFhizGmy0xpM0MEA4agpvE+RuNO1rhHTtuJB5yltw1FiYzecSXJ+y/D2r81VkRn2eYjh2ltsoyfbDR7Is6ookXIFxTfyeNyeHxMeT4KN5WpCDmSbTcUYrbBUlkGLJ9n/rU8YOywma6G7aTb7KZKOqCxgfoUlYEZPk4FUL/TK7ShriFDMVCLyjQJ15Ob++agDWtcxhfUfe6HIoIpRW8mKNBQiY/Jd1svvuskA1wLef1RTtzKfMpagSCX/laZINmdnX4zrF6kIaR9P4xQrWXbsTFHTYe0Mg==";
const E_MSG: &str = "<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>\n<FromUserName><![CDATA[o9AgO5Kd5ggOC-bXrbNODIiE3bGY]]></FromUserName>\n<CreateTime>1715943329</CreateTime>\n<MsgType><![CDATA[event]]></MsgType>\n<Event><![CDATA[debug_demo]]></Event>\n<debug_str><![CDATA[hello world]]></debug_str>\n</xml>";
const E_REPLY_ENCRYPT: &str = "hE8R6mGXHkJJjU72KxzKUd1GEkKJaEZq7vRL8XgK3o+00k8JGq6+pZJUIlTSyhsX+bxIBQ72g3GyvDdIZcr6+3HAZbSvPT9t/o11MI7d6WELwqrGd7jMnV0zv3Zc9Nq7";

const F_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
const F_ID: &str = "wx5823bf96d3bd56c7";
const F_ENCRYPT: &str = "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==";
const F_MSG: &str = "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n<FromUserName><![CDATA[mycreate]]></FromUserName>\n<CreateTime>1409659813</CreateTime>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[hello]]></Content>\n<MsgId>4561255354251345929</MsgId>\n<AgentID>218</AgentID>\n</xml>";

const C_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const C_APPID: &str = "wx2c2769f8efd9abc2";
const C_ENCRYPT: &str = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=";

/// Synthetic component_verify_ticket pushes (vector S): pads 32, 17 and 1.
const S_VECTORS: [(usize, &str, &str); 3] = [
    (3, "256930b86e7635dc92f5ff95f852c7b422f64ead", "uMMzGtqcnpOzXOYBwDQNrUZ4cmyP3mE/iqAPnDpUVEMo6hSuFboigoQEfDMpJHusyN89pAktPMYhs10pb2/O+ixhbCneaHA2TsRuMIqqwRz7lIstLGzvM9kyJFaDkEyW9u/0tmYFT3RM8JRHV1XTH9DowDcFb032uoOou8QCI8g9xUQWCvsgTvg8ZA5fUaz3NHoVbzt8HiapL/ezcTLlCYKxIs4y+/ysaoCXJ180rqGs57mR7s4nhQSkoIv/a9cOxRQ2hfbPRxEgdSpWon4/xPzwZ+OkqdxhpyCad/iV6kIpQqbFJg8ghWouViOXyM6bP5Du6o3xSOx3JfFKyhp6z3OeU53MPmG5VVa1CVcRI1H8pURa6COkbt321Enj6Db8"),
    (18, "88aabdad90d5840497c5e5b4d259288786615d82", "uMMzGtqcnpOzXOYBwDQNrXcki/xajAP+k+zfsqOCURHJA7sltObNOtG6EeATLrHshtt52bvhBGXEN76yzRvz2nqqdgJuXlHCf2TN0QzZVT4huvnVZg/E8PkC3fZ9xTtd5YdHZ7nDQzs6jVvgMwQAD4syh311WtlxNPe4YTgqSxjNajfidEwKlok8e6YMAhwJr+lBWorP5BkKCUSV7vIziFBEG/6ijpXAfgN4lJwFFzbhtXVdItahhWQZ0+1OSmBjwdgq/t+FJpL7+uslAX7uwSt1hLaCsuXqW1jJFyNLxjcIbj5KzywCrE8zh+xUHIqnprvBsK6ZNKWYEZbFEgZsu4wlTPN8KjyJzh6Jq2AdC53p2gXUNl0bdhKpn5FkRSqR"),
    (2, "3845351aff901fdaa7ae11d2225fb5c69b907e18", "uMMzGtqcnpOzXOYBwDQNrfMcIeCxQECM4udcNoabfGh3U6zcjwySNYVSjfuA4xHd+hWnV292Ik62T2uAZdJet4B+gf+F5+PNH+mHVEihgTGGpehUfZMHaMTn3Hxw8Dyi7GHucl/JdRoVR5Tpk06wApmh7ApBraEFbpcxq6hLW5CnY6jAPlCykWmV5wqRtdQ/8fQ+HRDJ2uhXtOGrMVLUVsTiCXkRh8X3IBREeFF9TIqn4wjQHiwat07EarYKAN6wdmvId8N+M7KlI+IO2FLY3GbvOoM47rgJ6n5Ccz/ZMX1Ljr3VKB/JrY8rutevD+JmaedfQIGidvnc6t1hQb7Bng=="),
];

fn key(s: &str) -> AesKey {
    AesKey::from_encoding_aes_key(s).expect("valid key")
}

fn random16(s: &str) -> [u8; 16] {
    s.as_bytes().try_into().expect("16 ASCII bytes")
}

#[test]
fn official_component_vector_e_decrypts_with_pad_22() {
    let msg = decrypt(&key(E_KEY), E_ENCRYPT, E_APPID).unwrap();
    assert_eq!(msg.len(), 292);
    assert_eq!(std::str::from_utf8(&msg).unwrap(), E_MSG);
}

#[test]
fn official_component_vector_e_signature_matches() {
    let sig = msg_signature("AAAAA", "1715943329", "1590219412", E_ENCRYPT);
    assert_eq!(sig, "6c12a4205838198b8fa631b3220723bb07f1015c");
    assert!(verify_msg_signature(
        "AAAAA",
        "1715943329",
        "1590219412",
        E_ENCRYPT,
        &sig
    ));
    assert!(verify_msg_signature(
        "AAAAA",
        "1715943329",
        "1590219412",
        E_ENCRYPT,
        &sig.to_uppercase()
    ));
    assert!(!verify_msg_signature(
        "AAAAA",
        "1715943330",
        "1590219412",
        E_ENCRYPT,
        &sig
    ));
}

#[test]
fn official_component_vector_e_encrypts_byte_for_byte() {
    let k = key(E_KEY);
    assert_eq!(
        encrypt(&k, random16("1205899eaf019bbd"), E_MSG.as_bytes(), E_APPID),
        E_ENCRYPT
    );
    let reply = "<xml><demo_resp>[CDATA[good luck]]</demo_resp></xml>";
    let enc = encrypt(&k, random16("999951349e8ee746"), reply.as_bytes(), E_APPID);
    assert_eq!(enc, E_REPLY_ENCRYPT);
    assert_eq!(
        msg_signature("AAAAA", "1713424427", "415670741", &enc),
        "03e0812039325c2712ef5f0f980fd14c70d6e307"
    );
}

#[test]
fn tencent_vector_f_with_pad_30_and_nonzero_trailing_key_bits() {
    // The key ends in 'C': its last two bits are non-zero, which the strict engine rejects.
    let sig = msg_signature("QDG6eK", "1409659813", "1372623149", F_ENCRYPT);
    assert_eq!(sig, "477715d11cdb4164915debcba66cb864d751f3e6");
    let msg = decrypt(&key(F_KEY), F_ENCRYPT, F_ID).unwrap();
    assert_eq!(std::str::from_utf8(&msg).unwrap(), F_MSG);
    let enc = encrypt(
        &key(F_KEY),
        random16("0960688932c47ef1"),
        F_MSG.as_bytes(),
        F_ID,
    );
    assert_eq!(enc, F_ENCRYPT);
}

#[test]
fn url_verify_vector_b_with_pad_7() {
    let echostr =
        "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==";
    assert_eq!(
        msg_signature("QDG6eK", "1409659589", "263014780", echostr),
        "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"
    );
    assert_eq!(
        decrypt(&key(F_KEY), echostr, F_ID).unwrap(),
        b"1616140317555161061"
    );
}

#[test]
fn java_vector_a_encrypts_utf8() {
    let enc = encrypt(
        &key(C_KEY),
        random16("aaaabbbbccccdddd"),
        "我是中文abcd123".as_bytes(),
        "wxb11529c136998cb6",
    );
    assert_eq!(
        enc,
        "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg=="
    );
}

#[test]
fn python_vector_c_with_pad_2() {
    assert_eq!(
        msg_signature("spamtest", "1409735669", "1320562132", C_ENCRYPT),
        "5d197aaffba7e9b25a30732f161a50dee96bd5fa"
    );
    let msg = decrypt(&key(C_KEY), C_ENCRYPT, C_APPID).unwrap();
    assert_eq!(msg.len(), 280);
    assert!(std::str::from_utf8(&msg).unwrap().contains("abcdteT"));
}

#[test]
fn node_signature_only_vector_n() {
    assert_eq!(
        msg_signature("RMNlACHlV5ThzfRlVS4D4", "timestamp", "nonce", "encrypt"),
        "8edac0945683c119ee71c9f6256d76c48aa08a96"
    );
}

#[test]
fn synthetic_ticket_vectors_s_cover_pads_32_17_1() {
    let k = key(E_KEY);
    for (n, sig, enc) in S_VECTORS {
        let pt = format!(
            "<xml><AppId><![CDATA[wx134c8103faa5a59e]]></AppId><CreateTime>1413192605</CreateTime><InfoType><![CDATA[component_verify_ticket]]></InfoType><ComponentVerifyTicket><![CDATA[ticket@@@{}]]></ComponentVerifyTicket></xml>",
            "T".repeat(n)
        );
        assert_eq!(msg_signature("AAAAA", "1413192605", "1234567890", enc), sig);
        assert_eq!(decrypt(&k, enc, E_APPID).unwrap(), pt.as_bytes());
        assert_eq!(
            encrypt(&k, random16("0123456789abcdef"), pt.as_bytes(), E_APPID),
            enc
        );
    }
}

#[test]
fn wrong_appid_is_refused() {
    assert_eq!(
        decrypt(&key(E_KEY), E_ENCRYPT, "wx0000000000000000"),
        Err(CryptoError::AppIdMismatch)
    );
    assert_eq!(
        decrypt(&key(E_KEY), E_ENCRYPT, "wx134c8103faa5a59"),
        Err(CryptoError::AppIdMismatch)
    );
}

#[test]
fn wrong_key_fails_cleanly() {
    let other = key("BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert!(decrypt(&other, E_ENCRYPT, E_APPID).is_err());
}

#[test]
fn malformed_ciphertexts_are_classified() {
    let k = key(E_KEY);
    assert_eq!(
        decrypt(&k, "not base64!", E_APPID),
        Err(CryptoError::Base64)
    );
    assert_eq!(
        decrypt(&k, "AAAA", E_APPID),
        Err(CryptoError::CiphertextLength(3))
    );
    let sixteen = base64::engine::general_purpose::STANDARD.encode([0u8; 16]);
    assert_eq!(
        decrypt(&k, &sixteen, E_APPID),
        Err(CryptoError::CiphertextLength(16))
    );
    let forty_eight = base64::engine::general_purpose::STANDARD.encode([0u8; 40]);
    assert_eq!(
        decrypt(&k, &forty_eight, E_APPID),
        Err(CryptoError::CiphertextLength(40))
    );
}

#[test]
fn pkcs7_accepts_only_1_to_32_equal_bytes() {
    let mut block = vec![7u8; 64];
    assert_eq!(strip_pkcs7_32(&block).unwrap().len(), 57);
    block[60] = 6;
    assert_eq!(strip_pkcs7_32(&block), Err(CryptoError::Padding));
    assert_eq!(strip_pkcs7_32(&[0u8; 32]), Err(CryptoError::Padding));
    assert_eq!(strip_pkcs7_32(&[33u8; 64]), Err(CryptoError::Padding));
    assert_eq!(strip_pkcs7_32(&[32u8; 32]).unwrap().len(), 0);
}

#[test]
fn keys_of_wrong_length_or_alphabet_are_refused() {
    assert_eq!(
        AesKey::from_encoding_aes_key("short"),
        Err(CryptoError::InvalidKey)
    );
    assert_eq!(
        AesKey::from_encoding_aes_key(&"A".repeat(44)),
        Err(CryptoError::InvalidKey)
    );
    assert_eq!(
        AesKey::from_encoding_aes_key(&format!("{}!", "A".repeat(42))),
        Err(CryptoError::InvalidKey)
    );
    // Debug never shows key material.
    assert_eq!(format!("{:?}", key(F_KEY)), "AesKey(<redacted>)");
}

#[test]
fn round_trip_every_length_covers_every_pad() {
    let k = key(F_KEY);
    let mut pads_seen = [false; 33];
    for len in 0..=300usize {
        let msg: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let enc = encrypt(&k, [9u8; 16], &msg, F_ID);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&enc)
            .unwrap();
        let pad = 32 - (20 + len + F_ID.len()) % 32;
        assert_eq!(raw.len(), 20 + len + F_ID.len() + pad);
        pads_seen[pad] = true;
        assert_eq!(decrypt(&k, &enc, F_ID).unwrap(), msg, "length {len}");
    }
    assert!(
        pads_seen[1..].iter().all(|&seen| seen),
        "every pad 1..=32 occurs"
    );
}

proptest! {
    #[test]
    fn arbitrary_ciphertext_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let enc = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let _ = decrypt(&key(E_KEY), &enc, E_APPID);
    }

    #[test]
    fn arbitrary_strings_never_panic(s in ".{0,200}") {
        let _ = decrypt(&key(E_KEY), &s, E_APPID);
        let _ = AesKey::from_encoding_aes_key(&s);
        let _ = verify_msg_signature(&s, &s, &s, &s, &s);
    }

    #[test]
    fn round_trip_arbitrary(msg in proptest::collection::vec(any::<u8>(), 0..400), random in any::<[u8; 16]>()) {
        let k = key(C_KEY);
        let enc = encrypt(&k, random, &msg, C_APPID);
        prop_assert_eq!(decrypt(&k, &enc, C_APPID).unwrap(), msg);
    }
}
