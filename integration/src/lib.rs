//! Test infrastructure for the filter suite: a proxy-wasm host on wasmtime ([`host`]), a
//! real-Envoy harness ([`envoy`]), mock upstreams ([`mock`]) and a small HTTP client
//! ([`client`]).

pub mod host;
pub mod paths;
pub mod bench;
pub mod client;
pub mod eg;
pub mod envoy;
pub mod mock;
pub mod promql;
pub mod ratelimit;
pub mod soak;
pub mod token_budget;
