#![forbid(unsafe_code)]
pub mod clock;
pub mod config;
pub mod crypto;
pub mod redact;
pub mod store;
