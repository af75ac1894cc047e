#![forbid(unsafe_code)]
pub mod crypto;
