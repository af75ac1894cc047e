//! The push path without HTTP or Redis: what `POST /callback/{appid}` does to every push
//! before it stores anything (parse the envelope, verify `msg_signature`, decrypt, check the
//! appid, parse the event). `scripts/bench push` runs it next to wechatpy doing the same work.
//!
//! The push comes from the file named by `WXKEEPER_BENCH_PUSH` (the first line of
//! `examples/gen_pushes` output, so Python decrypts the very same bytes), or is built here
//! with the same platform values when the variable is unset (`cargo bench --bench push`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use wxkeeper::callback::xml::{parse_envelope, parse_event};
use wxkeeper::crypto::{decrypt, encrypt, msg_signature, verify_msg_signature, AesKey};

/// The benchmark platform; `scripts/bench` uses the same values.
const APPID: &str = "wxb0b1b2b3b4b5b6b7";
const TOKEN: &str = "bench-token";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

struct Push {
    timestamp: String,
    nonce: String,
    msg_signature: String,
    body: Vec<u8>,
}

/// The push `scripts/bench` handed over, or one built like WeChat's.
fn load_push(key: &AesKey) -> Push {
    if let Ok(path) = std::env::var("WXKEEPER_BENCH_PUSH") {
        let text = std::fs::read_to_string(&path).expect("WXKEEPER_BENCH_PUSH is readable");
        let line = text.lines().next().expect("one push per line");
        let (query, body) = line.split_once('\t').expect("<query>\\t<body>");
        let param = |name: &str| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| panic!("push query lacks {name}"))
        };
        return Push {
            timestamp: param("timestamp"),
            nonce: param("nonce"),
            msg_signature: param("msg_signature"),
            body: body.as_bytes().to_vec(),
        };
    }
    let (timestamp, nonce) = ("1718000000".to_owned(), "1234567890".to_owned());
    let inner = format!(
        "<xml><AppId><![CDATA[{APPID}]]></AppId><CreateTime>{timestamp}</CreateTime>\
         <InfoType><![CDATA[component_verify_ticket]]></InfoType>\
         <ComponentVerifyTicket><![CDATA[ticket@@@bench-0]]></ComponentVerifyTicket></xml>"
    );
    let encrypted = encrypt(key, [7; 16], inner.as_bytes(), APPID);
    Push {
        msg_signature: msg_signature(TOKEN, &timestamp, &nonce, &encrypted),
        body: format!(
            "<xml><AppId><![CDATA[{APPID}]]></AppId><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
        )
        .into_bytes(),
        timestamp,
        nonce,
    }
}

/// Everything the handler does to a push between reading its body and storing the ticket.
fn process(key: &AesKey, push: &Push) -> (i64, usize) {
    let envelope = parse_envelope(&push.body).expect("envelope");
    assert!(verify_msg_signature(
        TOKEN,
        &push.timestamp,
        &push.nonce,
        &envelope.encrypt,
        &push.msg_signature
    ));
    let plain = decrypt(key, &envelope.encrypt, APPID).expect("decrypts");
    let event = parse_event(&plain).expect("event");
    let ticket = event.field("ComponentVerifyTicket").expect("ticket");
    (event.create_time, ticket.len())
}

fn bench(c: &mut Criterion) {
    let key = AesKey::from_encoding_aes_key(AES_KEY).expect("bench key");
    let push = load_push(&key);
    let envelope = parse_envelope(&push.body).expect("envelope");
    let plain = decrypt(&key, &envelope.encrypt, APPID).expect("decrypts");

    let mut g = c.benchmark_group("push");
    g.bench_function("verify_decrypt_parse", |b| {
        b.iter(|| process(&key, black_box(&push)))
    });
    // The parts, to show where the time goes.
    g.bench_function("parse_envelope", |b| {
        b.iter(|| parse_envelope(black_box(&push.body)))
    });
    g.bench_function("verify_msg_signature", |b| {
        b.iter(|| {
            verify_msg_signature(
                TOKEN,
                black_box(&push.timestamp),
                &push.nonce,
                &envelope.encrypt,
                &push.msg_signature,
            )
        })
    });
    g.bench_function("decrypt", |b| {
        b.iter(|| decrypt(&key, black_box(&envelope.encrypt), APPID))
    });
    g.bench_function("parse_event", |b| b.iter(|| parse_event(black_box(&plain))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
