//! Behavioural tests of the built `ab_variant.wasm` in the wasmtime host.

use integration::host::{Action, Plugin, Shared, StartError, Vm};
use std::sync::Arc;

const CONFIG: &str = r#"{"experiments": [{
    "name": "checkout",
    "subject": [{"header": "x-user-id"}, {"cookie": "uid"}],
    "variants": [{"name": "control", "weight": 90}, {"name": "beta", "weight": 10}],
    "header": "x-variant",
    "salt": "2026-11",
    "override": {"header": "x-force-variant", "query": "variant"},
    "stickyCookie": {"name": "ab_checkout", "maxAgeS": 2592000, "secure": true, "httpOnly": true, "sameSite": "Lax"},
    "match": {"pathPrefix": "/api/"},
    "responseHeader": true
}]}"#;

fn plugin() -> Arc<Plugin> {
    Plugin::filter("ab_variant")
}

fn get(path: &str) -> Vec<(&str, &str)> {
    vec![(":method", "GET"), (":path", path), (":authority", "api.example.com"), (":scheme", "http")]
}

fn with<'a>(mut h: Vec<(&'a str, &'a str)>, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    h.extend_from_slice(extra);
    h
}

const OK: &[(&str, &str)] = &[(":status", "200")];

#[test]
fn assigns_from_the_user_header_and_reports_it() {
    let shared = Shared::new();
    let mut vm = Vm::start(&plugin(), &shared, CONFIG);
    // Vectors from the README: alice is in beta, bob in control.
    for (user, want) in [("alice", "beta"), ("bob", "control")] {
        let s = vm.exchange(&with(get("/api/tasks"), &[("x-user-id", user)]), None, OK, None);
        assert_eq!(s.request_header("x-variant").as_deref(), Some(want), "{user}");
        assert_eq!(s.response_header("x-variant").as_deref(), Some(want));
        assert!(s.response_header_all("set-cookie").is_empty(), "a known user needs no sticky cookie");
    }
    // Counts reach Envoy's stats on the next tick, once a second.
    assert_eq!(vm.tick_period_ms(), 1000);
    assert_eq!(shared.metric("ab_variant.checkout.beta.assigned"), Some(0));
    vm.tick();
    assert_eq!(shared.metric("ab_variant.checkout.beta.assigned"), Some(1));
    assert_eq!(shared.metric("ab_variant.checkout.control.assigned"), Some(1));
    assert_eq!(shared.metric("ab_variant.checkout.beta.responses_2xx"), Some(1));
    assert_eq!(shared.metric("ab_variant.checkout.control.responses_2xx"), Some(1));
}

#[test]
fn a_spoofed_variant_header_never_reaches_the_upstream() {
    let shared = Shared::new();
    let mut vm = Vm::start(&plugin(), &shared, CONFIG);
    // On a matching path the filter's own value replaces it (bob is in control).
    let s = vm.exchange(&with(get("/api/x"), &[("x-user-id", "bob"), ("x-variant", "beta"), ("X-Variant", "beta")]), None, OK, None);
    let values: Vec<_> = s.request_headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("x-variant")).collect();
    assert_eq!(values.len(), 1);
    assert_eq!(s.request_header("x-variant").as_deref(), Some("control"));
    // Outside the experiment's paths it is removed and nothing is set.
    let s = vm.exchange(&with(get("/health"), &[("x-variant", "beta")]), None, OK, None);
    assert_eq!(s.request_header("x-variant"), None);
    assert_eq!(s.response_header("x-variant"), None);
}

#[test]
fn overrides_apply_only_for_configured_variants() {
    let shared = Shared::new();
    let mut vm = Vm::start(&plugin(), &shared, CONFIG);
    let s = vm.exchange(&with(get("/api/x"), &[("x-user-id", "bob"), ("x-force-variant", "beta")]), None, OK, None);
    assert_eq!(s.request_header("x-variant").as_deref(), Some("beta"));
    let s = vm.exchange(&with(get("/api/x?variant=beta"), &[("x-user-id", "bob")]), None, OK, None);
    assert_eq!(s.request_header("x-variant").as_deref(), Some("beta"));
    let s = vm.exchange(&with(get("/api/x?variant=gamma"), &[("x-user-id", "bob"), ("x-force-variant", "nope")]), None, OK, None);
    assert_eq!(s.request_header("x-variant").as_deref(), Some("control"));
}

#[test]
fn an_anonymous_client_gets_a_sticky_cookie_that_keeps_its_variant() {
    let shared = Shared::new();
    let mut vm = Vm::start(&plugin(), &shared, CONFIG);
    let first = vm.exchange(&get("/api/x"), None, OK, None);
    let cookies = first.response_header_all("set-cookie");
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let cookie = &cookies[0];
    assert!(cookie.starts_with("ab_checkout="), "{cookie}");
    assert!(cookie.ends_with("; Max-Age=2592000; Path=/; Secure; HttpOnly; SameSite=Lax"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    let variant = first.request_header("x-variant").unwrap();

    // Later requests carry the cookie: same variant, no new cookie, on any worker.
    let mut other_worker = Vm::start(&plugin(), &shared, CONFIG);
    for vm in [&mut vm, &mut other_worker] {
        let s = vm.exchange(&with(get("/api/y"), &[("cookie", &pair)]), None, OK, None);
        assert_eq!(s.request_header("x-variant").as_deref(), Some(variant.as_str()));
        assert!(s.response_header_all("set-cookie").is_empty());
    }
    // Different anonymous clients get different ids.
    let second = vm.exchange(&get("/api/x"), None, OK, None);
    assert_ne!(second.response_header_all("set-cookie")[0].split(';').next().unwrap(), pair);
}

#[test]
fn workers_agree_and_response_classes_are_counted() {
    let shared = Shared::new();
    let mut workers: Vec<Vm> = (0..3).map(|_| Vm::start(&plugin(), &shared, CONFIG)).collect();
    for i in 0..60 {
        let user = format!("user-{i}");
        let assigned: Vec<String> = workers
            .iter_mut()
            .map(|vm| {
                let status = if i % 3 == 0 { "503" } else { "200" };
                let s = vm.exchange(&with(get("/api/x"), &[("x-user-id", &user)]), None, &[(":status", status)], None);
                s.request_header("x-variant").unwrap()
            })
            .collect();
        assert!(assigned.windows(2).all(|w| w[0] == w[1]), "{user}: {assigned:?}");
    }
    workers.iter_mut().for_each(Vm::tick);
    let total: u64 = ["control", "beta"]
        .iter()
        .map(|v| shared.metric(&format!("ab_variant.checkout.{v}.assigned")).unwrap())
        .sum();
    assert_eq!(total, 180);
    let fives: u64 =
        ["control", "beta"].iter().map(|v| shared.metric(&format!("ab_variant.checkout.{v}.responses_5xx")).unwrap()).sum();
    assert_eq!(fives, 60);
}

#[test]
fn hostile_header_bytes_do_not_break_the_filter() {
    let shared = Shared::new();
    let mut vm = Vm::start(&plugin(), &shared, CONFIG);
    let id = vm.new_stream();
    let mut headers = integration::host::pairs(&get("/api/\u{e9}"));
    headers.push(("x-user-id".into(), vec![0xff, 0xfe, 0x00, 0x80]));
    headers.push(("cookie".into(), vec![b'u', b'i', b'd', b'=', 0xc3, 0x28, b';', 0xff]));
    headers.push(("x-force-variant".into(), vec![0xff]));
    assert_eq!(vm.try_request_headers(id, headers, true).unwrap(), Action::Continue);
    assert!(vm.stream(id).request_header("x-variant").is_some());
    vm.response_headers(id, &[(":status", "2")], true);
    vm.end_stream(id);
    vm.tick();
    assert_eq!(shared.metric("ab_variant.checkout.control.responses_other").unwrap()
        + shared.metric("ab_variant.checkout.beta.responses_other").unwrap(), 1);
}

#[test]
fn no_config_and_bad_configs_are_rejected_naming_the_field() {
    let cases = [
        ("", "ab-variant: configuration: is empty"),
        ("{}", "ab-variant: missing field `experiments`"),
        (r#"{"experiments": [{"name": "e", "header": "x-v", "variants": []}]}"#, "ab-variant: experiments[0].variants: must list at least one variant"),
        (r#"{"experiments": [{"name": "e", "header": "x-v", "variants": [{"name": "a", "weight": -5}]}]}"#, "ab-variant: experiments[0].variants[0].weight: must not be negative"),
        (r#"{"experiments": [{"name": "e", "header": "x-v", "variants": [{"name": "a", "weight": 0}]}]}"#, "ab-variant: experiments[0].variants: weights sum to 0"),
        (r#"{"experiments": [{"name": "e", "header": "x-v", "variants": [{"name": "a", "weight": 1}, {"name": "a", "weight": 2}]}]}"#, "ab-variant: experiments[0].variants: duplicate `a`"),
        (r#"{"experiments": [{"name": "e", "header": "", "variants": [{"name": "a", "weight": 1}]}]}"#, "ab-variant: experiments[0].header: must not be empty"),
        (r#"{"experiments": [], "extra": true}"#, "ab-variant: extra: unknown field `extra`"),
        ("not json", "ab-variant: expected ident"),
    ];
    for (config, want) in cases {
        let shared = Shared::new();
        match Vm::builder(&plugin(), &shared).config(config).try_start() {
            Err(StartError::Rejected { errors }) => {
                assert_eq!(errors.len(), 1, "one log line for {config:?}: {errors:?}");
                assert!(errors[0].starts_with(want), "config {config:?}\n want {want}\n got  {}", errors[0]);
            }
            Err(other) => panic!("{config:?}: {other}"),
            Ok(_) => panic!("{config:?} was accepted"),
        }
    }
}

#[test]
fn logs_its_version_on_start() {
    let shared = Shared::new();
    let _vm = Vm::start(&plugin(), &shared, CONFIG);
    let logs = shared.log_messages(2);
    assert!(logs.iter().any(|l| l.starts_with("ab-variant ") && l.ends_with(" starting")), "{logs:?}");
}
