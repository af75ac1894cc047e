#![forbid(unsafe_code)]
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
pub mod refresh;
pub mod status;
pub mod admin;
pub mod app;
pub mod cli;
pub mod demo;
