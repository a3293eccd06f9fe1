//! The soak's short version (the long one is `scripts/soak.sh`, 10 minutes, which also asserts
//! that memory and key counts are flat after warm-up): a few seconds of new subjects through
//! the filters in Envoy and 20,000 in the wasmtime host. Every request must succeed and the
//! shared-data key count must stay within token-budget's bound.

use integration::soak::{self, Options};

#[test]
fn a_short_soak_keeps_requests_succeeding_and_keys_bounded() {
    let o = Options { envoy_seconds: 12, rate: 60, sample_seconds: 3, host_requests: 20_000, assert_flat: false };
    let report = soak::run(&o).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert!(report.envoy.len() >= 4, "{:?}", report.envoy);
    let sent = report.envoy.last().unwrap().requests;
    assert!(sent >= 300, "only {sent} requests were sent");
    let last = report.host.last().unwrap();
    assert_eq!(last.requests, 20_000);
    // 20,000 subjects in 200 simulated seconds fill the 1024-slot table: the cap was reached.
    assert!(last.shared_keys > 1000 && last.shared_keys <= report.key_bound, "{} keys, bound {}", last.shared_keys, report.key_bound);
}
