//! The one integration-test binary: real Redis servers, real HTTP, the real app.

mod acl;
mod app;
mod chaos;
mod cli;
mod lease;
mod refresh;
mod store_contract;
mod support;
