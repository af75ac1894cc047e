//! Writes N distinct, correctly signed `component_verify_ticket` pushes, one per line, for the
//! callback load test in `scripts/bench` (wrk's LuaJIT has no SHA-1 or AES, so the pushes are
//! made ahead of time and the Lua script cycles through them).
//!
//! Each line is `<query>\t<body>`: the query WeChat sends (`signature`, `timestamp`, `nonce`,
//! `encrypt_type=aes`, `msg_signature`) and the `<xml><AppId/><Encrypt/></xml>` body. Push `i`
//! carries the ticket `ticket@@@bench-<i>` and a `CreateTime` (also its `timestamp`) spread
//! evenly from `--from` to `--to`, so the pushes are all distinct and never go back in time.
//! The 16 random bytes and the nonce come from a generator seeded with `i`: the same arguments
//! give the same file.
//!
//! ```sh
//! cargo run --release --example gen_pushes -- --count 1000 --appid wx… --token … \
//!     --aes-key …43 chars… --from 1718000000 --to 1718001800 > pushes.tsv
//! ```

use std::io::{BufWriter, Write};

use clap::Parser;
use rand::{Rng, SeedableRng};
use sha1::{Digest, Sha1};
use wxkeeper::crypto::{self, AesKey};

#[derive(Parser)]
struct Args {
    /// How many pushes to write.
    #[arg(long)]
    count: u64,
    #[arg(long)]
    appid: String,
    /// The message verification Token.
    #[arg(long)]
    token: String,
    /// The 43-character EncodingAESKey.
    #[arg(long)]
    aes_key: String,
    /// CreateTime of the first push (unix seconds).
    #[arg(long)]
    from: u64,
    /// CreateTime of the last push (unix seconds).
    #[arg(long)]
    to: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.to >= args.from, "--to must not be before --from");
    let key = AesKey::from_encoding_aes_key(&args.aes_key)?;
    let span = args.to - args.from;
    let mut out = BufWriter::new(std::io::stdout().lock());
    for i in 0..args.count {
        let create_time = match args.count {
            0 | 1 => args.from,
            n => args.from + span * i / (n - 1),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(i);
        let nonce = rng.gen_range(100_000_000..10_000_000_000u64).to_string();
        let ticket = format!("ticket@@@bench-{i}");
        let (query, body) = push(&args, &key, &ticket, create_time, &nonce, rng.gen());
        writeln!(out, "{query}\t{body}")?;
    }
    out.flush()?;
    Ok(())
}

/// One push as WeChat builds it: inner XML, encrypted, then signed over the ciphertext.
fn push(
    args: &Args,
    key: &AesKey,
    ticket: &str,
    create_time: u64,
    nonce: &str,
    random: [u8; 16],
) -> (String, String) {
    let appid = &args.appid;
    let inner = format!(
        "<xml><AppId><![CDATA[{appid}]]></AppId><CreateTime>{create_time}</CreateTime>\
         <InfoType><![CDATA[component_verify_ticket]]></InfoType>\
         <ComponentVerifyTicket><![CDATA[{ticket}]]></ComponentVerifyTicket></xml>"
    );
    let encrypted = crypto::encrypt(key, random, inner.as_bytes(), appid);
    let timestamp = create_time.to_string();
    let msg_signature = crypto::msg_signature(&args.token, &timestamp, nonce, &encrypted);
    // The legacy `signature` covers token, timestamp and nonce only.
    let mut parts = [args.token.as_str(), timestamp.as_str(), nonce];
    parts.sort_unstable();
    let signature = hex::encode(Sha1::digest(parts.concat().as_bytes()));
    // Every value is hex, digits or the fixed "aes": nothing needs percent-encoding.
    let query = format!(
        "signature={signature}&timestamp={timestamp}&nonce={nonce}&encrypt_type=aes&msg_signature={msg_signature}"
    );
    let body = format!(
        "<xml><AppId><![CDATA[{appid}]]></AppId><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
    );
    (query, body)
}
