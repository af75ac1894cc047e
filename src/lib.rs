#![forbid(unsafe_code)]
pub mod api;
pub mod callback;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod lease;
pub mod metrics;
pub mod notices;
pub mod redact;
pub mod sim;
pub mod store;
pub mod view;
