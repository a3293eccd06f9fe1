//! What Envoy does when a filter traps, under each wasm failure policy: a deliberately trapping
//! build of the test filter (never shipped) in front of an echo upstream.

use integration::client;
use integration::envoy::Bootstrap;
use integration::mock::echo;

#[test]
fn a_trapping_filter_under_each_failure_policy() {
    let upstream = echo::start("upstream");
    let envoy = Bootstrap::load("integration/envoy/fail-policy.yaml")
        .and_then(|b| b.concurrency(1).cluster("upstream", upstream.port()))
        .and_then(|b| b.start())
        .unwrap_or_else(|e| panic!("{e:#}"));

    // FAIL_CLOSED: the request that hits the trap and every later one are refused.
    for _ in 0..3 {
        let r = client::get(&envoy.url("fail_closed", "/x"), &[]).unwrap();
        assert_eq!(r.status, 503, "{}", r.text());
    }
    // FAIL_OPEN: the request that hits the trap fails; later ones go on without the filter.
    let statuses: Vec<u16> = (0..3).map(|_| client::get(&envoy.url("fail_open", "/x"), &[]).unwrap().status).collect();
    assert_eq!(statuses, [503, 200, 200]);
    assert_eq!(upstream.requests().iter().filter(|r| r.path == "/x").count(), statuses.iter().filter(|&&s| s == 200).count());
    // FAIL_RELOAD: the VM is reloaded, so a filter that traps on every request keeps failing
    // those requests (it does not fail open).
    for _ in 0..3 {
        let r = client::get(&envoy.url("fail_reload", "/x"), &[]).unwrap();
        assert_ne!(r.status, 200, "{}", r.text());
    }
    assert!(envoy.log().contains("Function: proxy_on_request_headers failed"), "the trap is logged");
}
