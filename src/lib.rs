//! wxkeeper keeps a WeChat Open Platform third-party platform's credentials fresh: any replica
//! accepts ticket pushes, exactly one fenced leader refreshes, every replica serves.
//!
//! # Map
//!
//! | module | role | owns |
//! |---|---|---|
//! | [`crypto`] | pure | `msg_signature`, AES-256-CBC with 32-byte PKCS#7, the appid check |
//! | [`config`] | pure | every setting, its default and parser; flag > env > file > default |
//! | [`clock`] | core | the one wall-clock read; everything else follows tokio time |
//! | [`redact`] | core | how a secret may appear in a log (a short fingerprint) |
//! | [`store`] | port + adapters | what replicas share: tickets, credentials, the lease, claims, fenced writes (Redis and embedded) |
//! | [`lease`] | pure core + task | leader election: `decide` and the elector publishing a `Leadership` |
//! | [`refresh`] | pure core + task | the leader-only refresher: schedule, WeChat client, the loop |
//! | [`view`] | task | every replica's in-memory copy of the credentials |
//! | [`notices`] | task | one store subscription, fanned out in-process |
//! | [`callback`] | edge | `POST /callback/{appid}` |
//! | [`api`] | edge | the token API |
//! | [`admin`], [`metrics`] | edge | `/metrics` `/healthz` `/readyz` `/status`; one registry |
//! | [`app`] | wiring | binds listeners, starts the tasks, stops in the contract's order |
//! | [`sim`] | tool | the WeChat simulator (speaks only the wire format) |
//! | [`demo`], [`status`], [`cli`] | tools | `wxkeeper demo`, `wxkeeper status`, the command line |
//!
//! # Data flow
//!
//! WeChat push → `callback` (verify, decrypt, parse) → `store.put_ticket` → notice →
//! the leader's `refresh` task → `store.claim_token` (atomic: still leader, really due) →
//! WeChat → `store.write_token` (fenced) → notice → every replica's `view` → `api` reads.
//!
//! # Dependency rule
//!
//! The pure modules (`crypto`, `config`, `lease::decide`, `refresh::schedule`) import no axum,
//! redis, reqwest or `tokio::net`. Edges and tasks depend on the `Store` trait, never on an
//! adapter; only `app` (and the tools) pick concrete types. The simulator shares no code with
//! the client it stands in for.

#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod app;
pub mod callback;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod lease;
pub mod metrics;
pub mod notices;
pub mod redact;
pub mod refresh;
pub mod sim;
pub mod status;
pub mod store;
pub mod view;
