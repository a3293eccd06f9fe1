//! A deterministic cost figure for CI: wasmtime fuel (about one unit per wasm instruction)
//! burnt per request by each filter on its typical request, measured in the wasmtime host.
//! The figures are written to target/fuel/results.json; the test fails when a filter costs more
//! than 20% over the committed baseline (integration/fuel-baseline.json). Update the baseline
//! on purpose only: `UPDATE_FUEL_BASELINE=1 cargo test -p integration --test fuel`.

use integration::host::{Plugin, Shared, Vm};
use integration::paths;
use serde_json::{json, Map, Value};

/// Requests measured after warm-up; the figure is the mean per request.
const REQUESTS: u64 = 200;
const ALLOWED_GROWTH: f64 = 1.20;

struct Case {
    name: &'static str,
    artifact: &'static str,
    config: String,
    /// Requests measured after warm-up; the figure is the mean per request.
    requests: u64,
    /// VM-wide properties (the upstream role's cluster name).
    properties: Vec<(&'static [&'static str], &'static str)>,
    /// The filter pauses request headers until it has read the body (Envoy's
    /// `allow_on_headers_stop_iteration`, as the configs set it).
    pauses_headers: bool,
    request: Vec<(&'static str, String)>,
    request_body: Option<Vec<u8>>,
    response: Vec<(&'static str, String)>,
    response_body: Option<Vec<u8>>,
}

/// A filter's configuration from the benchmark snippets, with `vars` substituted.
fn bench_config(filter: &str, vars: &[(&str, &str)]) -> String {
    let text = std::fs::read_to_string(paths::root().join("integration/envoy/bench/filters.yaml")).unwrap();
    let v: Value = serde_yaml::from_str(&text).unwrap();
    let mut config = v[filter]["typed_config"]["config"]["configuration"]["value"].as_str().unwrap_or_default().to_string();
    for (from, to) in vars {
        config = config.replace(from, to);
    }
    config
}

fn headers(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

fn case(name: &'static str, artifact: &'static str, config: String, request: Vec<(&'static str, String)>) -> Case {
    Case {
        name,
        artifact,
        config,
        requests: REQUESTS,
        properties: Vec::new(),
        pauses_headers: false,
        request,
        request_body: None,
        response: headers(&[(":status", "200")]),
        response_body: None,
    }
}

fn cases() -> Vec<Case> {
    let get = headers(&[(":method", "GET"), (":path", "/api/tasks"), (":authority", "api.example.com"), (":scheme", "http"), ("x-user-id", "alice")]);
    let post = |path: &str| headers(&[(":method", "POST"), (":path", path), (":authority", "api.example.com"), (":scheme", "http"), ("content-type", "application/json"), ("x-user-id", "alice")]);
    let chat = br#"{"model":"gpt-4o","max_tokens":64,"messages":[{"role":"user","content":"Say hello in five words."}]}"#.to_vec();
    let completion = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how are you?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":7,"total_tokens":21}}"#.to_vec();
    let anthropic_answer = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hello there, how are you?"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":14,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":7}}"#.to_vec();
    let json_response = headers(&[(":status", "200"), ("content-type", "application/json")]);

    // jwt-claims: the same RS256 token every request (a cache hit after the first), and the
    // same with the cache off (a signature verification per request).
    let now = integration::host::DEFAULT_START_NS / 1_000_000_000;
    let minted = integration::mock::jwks::mint(Some(now), 1).unwrap_or_else(|e| panic!("minting tokens: {e:#}"));
    let jwks = serde_json::json!(minted.jwks).to_string();
    let token = format!("Bearer {}", minted.tokens["valid"]["rs256"].as_str().unwrap());
    let mut with_token = get.clone();
    with_token.push(("authorization", token));

    vec![
        case("empty-wasm", "test_filter", String::new(), get.clone()),
        case("ab-variant", "ab_variant", bench_config("ab-variant", &[]), get.clone()),
        case("jwt-claims", "jwt_claims", bench_config("jwt-claims", &[("@JWKS_STRING@", &jwks)]), with_token.clone()),
        Case { requests: 20, ..case("jwt-claims-cold-rs256", "jwt_claims", bench_config("jwt-claims-cold", &[("@JWKS_STRING@", &jwks)]), with_token) },
        Case {
            request_body: Some(chat.clone()),
            response: json_response.clone(),
            response_body: Some(completion),
            ..case("token-budget", "token_budget", bench_config("token-budget", &[]), post("/v1/chat/completions"))
        },
        Case {
            pauses_headers: true,
            request_body: Some(chat.clone()),
            response: json_response.clone(),
            response_body: Some(br#"{"id":"chatcmpl-1","object":"chat.completion","choices":[]}"#.to_vec()),
            ..case("provider-fallback-router", "provider_fallback", bench_config("pf-router", &[]), post("/v1/chat/completions"))
        },
        Case {
            pauses_headers: true,
            properties: vec![(&["xds", "cluster_name"], "upstream")],
            request_body: Some(chat),
            response: json_response,
            response_body: Some(anthropic_answer),
            ..case("provider-fallback-anthropic", "provider_fallback", bench_config("pf-upstream-anthropic", &[]), post("/v1/chat/completions"))
        },
    ]
}

fn measure(case: &Case) -> u64 {
    let shared = Shared::new();
    let mut builder = Vm::builder(&Plugin::filter(case.artifact), &shared).config(&case.config).allow_on_headers_stop_iteration(case.pauses_headers);
    for (path, value) in &case.properties {
        builder = builder.property(path, value);
    }
    let mut vm = builder.start();
    let request: Vec<(&str, &str)> = case.request.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response: Vec<(&str, &str)> = case.response.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = |vm: &mut Vm| {
        let s = vm.exchange(&request, case.request_body.as_deref(), &response, case.response_body.as_deref());
        assert!(s.local_reply.is_none(), "{}: the typical request was refused: {:?}", case.name, s.local_reply);
    };
    for _ in 0..5 {
        run(&mut vm);
    }
    let before = vm.fuel_used();
    for _ in 0..case.requests {
        run(&mut vm);
    }
    (vm.fuel_used() - before) / case.requests
}

#[test]
fn fuel_per_request_stays_within_the_baseline() {
    let results: Map<String, Value> = cases().iter().map(|c| (c.name.to_string(), json!(measure(c)))).collect();
    eprintln!("{}", serde_json::to_string_pretty(&results).unwrap());
    let dir = paths::target_dir().join("fuel");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(&results).unwrap()).unwrap();

    let baseline_path = paths::root().join("integration/fuel-baseline.json");
    if std::env::var_os("UPDATE_FUEL_BASELINE").is_some() {
        std::fs::write(&baseline_path, serde_json::to_string_pretty(&results).unwrap() + "\n").unwrap();
        return;
    }
    let baseline: Map<String, Value> = serde_json::from_str(&std::fs::read_to_string(&baseline_path).unwrap()).unwrap();
    let mut failures = Vec::new();
    for (name, value) in &results {
        let now = value.as_u64().unwrap();
        match baseline.get(name).and_then(Value::as_u64) {
            None => failures.push(format!("{name}: {now} fuel/request has no baseline (UPDATE_FUEL_BASELINE=1 adds it)")),
            Some(base) if now as f64 > base as f64 * ALLOWED_GROWTH => {
                failures.push(format!("{name}: {now} fuel/request is {:.0}% over the baseline {base}", (now as f64 / base as f64 - 1.0) * 100.0))
            }
            Some(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
