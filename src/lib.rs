#![forbid(unsafe_code)]
pub mod callback;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod metrics;
pub mod redact;
pub mod sim;
pub mod store;
