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

use std::time::{Duration, Instant};

/// Calls `probe` every `every` until `done` accepts its value or `limit` has passed, and
/// returns the last value: the tests' one way to wait for what Envoy does asynchronously
/// (counters flushed on a timer, a pushed config taking effect, a refetch).
pub fn poll<T>(limit: Duration, every: Duration, mut probe: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let value = probe();
        if done(&value) || Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(every);
    }
}
