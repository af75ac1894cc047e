//! The one integration-test binary: real Redis servers, real HTTP, the real app.

mod store_contract;
mod support;
