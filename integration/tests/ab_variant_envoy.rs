//! ab-variant through a real Envoy: the header it sets drives routing between two clusters.

use integration::client;
use integration::envoy::{Bootstrap, Envoy};
use integration::mock::{echo, MockServer};

struct Setup {
    envoy: Envoy,
    control: MockServer,
    beta: MockServer,
}

fn setup() -> Setup {
    let control = echo::start("control");
    let beta = echo::start("beta");
    let envoy = Bootstrap::load("integration/envoy/ab-variant.yaml")
        .and_then(|b| b.concurrency(2).cluster("control", control.port()))
        .and_then(|b| b.cluster("beta", beta.port()))
        .and_then(|b| b.start())
        .unwrap_or_else(|e| panic!("{e:#}"));
    Setup { envoy, control, beta }
}

#[test]
fn the_variant_header_routes_between_clusters() {
    let s = setup();
    let url = s.envoy.url("gateway", "/api/tasks");
    // alice is in beta and bob in control (README vectors).
    for (user, want) in [("alice", "beta"), ("bob", "control")] {
        let r = client::get(&url, &[("x-user-id", user)]).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-upstream"), Some(want), "{user}");
        assert_eq!(r.header("x-variant"), Some(want));
        assert_eq!(r.json()["headers"]["x-variant"], want, "the upstream sees the assigned variant");
    }
    assert_eq!(s.beta.request_count(), 1);
    assert_eq!(s.control.request_count(), 1);
}

#[test]
fn a_spoofed_header_cannot_pick_the_variant() {
    let s = setup();
    let r = client::get(&s.envoy.url("gateway", "/api/tasks"), &[("x-user-id", "bob"), ("x-variant", "beta")]).unwrap();
    assert_eq!(r.header("x-upstream"), Some("control"));
    assert_eq!(r.json()["headers"]["x-variant"], "control");
    // Off the experiment's paths the client's copy is stripped, not forwarded.
    let r = client::get(&s.envoy.url("gateway", "/other"), &[("x-variant", "beta")]).unwrap();
    assert_eq!(r.header("x-upstream"), Some("control"));
    assert!(r.json()["headers"].get("x-variant").is_none(), "{}", r.text());
    assert_eq!(s.beta.request_count(), 0);
}

#[test]
fn the_override_picks_a_configured_variant_only() {
    let s = setup();
    let url = s.envoy.url("gateway", "/api/tasks");
    let r = client::get(&url, &[("x-user-id", "bob"), ("x-force-variant", "beta")]).unwrap();
    assert_eq!(r.header("x-upstream"), Some("beta"));
    let r = client::get(&format!("{url}?variant=beta"), &[("x-user-id", "bob")]).unwrap();
    assert_eq!(r.header("x-upstream"), Some("beta"));
    let r = client::get(&url, &[("x-user-id", "bob"), ("x-force-variant", "gamma")]).unwrap();
    assert_eq!(r.header("x-upstream"), Some("control"));
}

#[test]
fn anonymous_clients_stay_in_their_variant_across_workers() {
    let s = setup();
    let url = s.envoy.url("gateway", "/api/tasks");
    let mut seen_beta = false;
    // Enough anonymous clients that both variants appear (beta is 10%).
    for _ in 0..60 {
        let first = client::get(&url, &[]).unwrap();
        let cookie = first.header("set-cookie").expect("a sticky cookie for a new subject").to_string();
        assert!(cookie.contains("; Max-Age=2592000; Path=/; Secure; HttpOnly; SameSite=Lax"), "{cookie}");
        let pair = cookie.split(';').next().unwrap().to_string();
        let upstream = first.header("x-upstream").unwrap().to_string();
        seen_beta |= upstream == "beta";
        for _ in 0..3 {
            let again = client::get(&url, &[("cookie", &pair)]).unwrap();
            assert_eq!(again.header("x-upstream"), Some(upstream.as_str()), "{pair}");
            assert!(again.header("set-cookie").is_none());
        }
    }
    assert!(seen_beta, "60 anonymous clients and none in beta");
}

#[test]
fn assignments_and_response_classes_show_in_prometheus_stats() {
    let s = setup();
    let url = s.envoy.url("gateway", "/api/tasks");
    for user in ["alice", "bob", "bob"] {
        client::get(&url, &[("x-user-id", user)]).unwrap();
    }
    // The filter adds its counts to Envoy's stats once a second.
    let want = [
        ("ab_variant_checkout_beta_assigned", 1),
        ("ab_variant_checkout_control_assigned", 2),
        ("ab_variant_checkout_control_responses_2xx", 2),
        ("ab_variant_checkout_beta_responses_2xx", 1),
        ("ab_variant_checkout_beta_responses_5xx", 0),
    ];
    let got = s.envoy.wait_for_prometheus(&want.map(|(n, _)| n), |values| values == want.map(|(_, v)| Some(v)));
    assert_eq!(got, want.map(|(_, v)| Some(v)));
}

