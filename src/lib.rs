#![forbid(unsafe_code)]
pub mod crypto;
pub mod config;
