//! Observability through a real Envoy: the four filters on one gateway
//! (integration/envoy/observability.yaml) carrying the suite's stats tags and JSON access log.
//!
//! - Every decision a filter records in filter state reaches the access log with the right
//!   value (JWT outcome, variant, subject, models, provider, attempts, tokens, budget).
//! - Every metric and label that the Grafana dashboard, the PrometheusRule alerts and the KEDA
//!   triggers query exists at `/stats/prometheus` after traffic through every filter, so they
//!   cannot drift from what the filters emit.
//! - The shipped configs (local bootstrap, Kubernetes and standalone EnvoyProxy) carry the same
//!   stats tags and access-log fields as the fixture these tests run.

use integration::client::{self, Resp};
use integration::eg;
use integration::envoy::{self, Bootstrap, Envoy};
use integration::mock::jwks::{mint, JwksServer, Minted, Mode};
use integration::mock::llm::{self, Fault, LlmMock};
use integration::mock::{echo, MockServer};
use integration::paths;
use integration::promql::{self, Scrape};
use serde::Deserialize as _;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

const FIXTURE: &str = "integration/envoy/observability.yaml";
const ACCESS_LOG: &str = "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/access_log/0/typed_config";
const OBSERVABILITY: &str = "envoy-config/kubernetes/observability";

fn minted() -> &'static Minted {
    static MINTED: OnceLock<Minted> = OnceLock::new();
    MINTED.get_or_init(|| mint(None, 1).unwrap_or_else(|e| panic!("{e:#}")))
}

struct Gateway {
    envoy: Envoy,
    log: PathBuf,
    _task: MockServer,
    beta: MockServer,
    openai: LlmMock,
    anthropic: LlmMock,
    _jwks: JwksServer,
}

fn start() -> Gateway {
    // The budgets are per minute: the traffic's counts fall in one window.
    integration::token_budget::clear_of_window_edge(60, std::time::Duration::from_secs(15));
    let task = echo::start("task-api");
    let beta = echo::start("task-api-beta");
    let openai = llm::openai("sk-test-openai");
    let anthropic = llm::anthropic("sk-ant-test");
    let jwks = JwksServer::start(Mode::Serve(minted().jwks.clone()));
    let log = envoy::tempdir("observability-log").unwrap().join("access.log");
    let mut b = Bootstrap::load(FIXTURE)
        .and_then(|b| b.cluster("task_api", task.port()))
        .and_then(|b| b.cluster("task_api_beta", beta.port()))
        .and_then(|b| b.cluster_endpoint("llm", 0, openai.port()))
        .and_then(|b| b.cluster_endpoint("llm", 1, anthropic.port()))
        .and_then(|b| b.cluster("jwks", jwks.port()))
        .unwrap_or_else(|e| panic!("{e:#}"));
    b.json_mut().pointer_mut(ACCESS_LOG).expect("the fixture's access log")["path"] = json!(log.display().to_string());
    // One worker: streams complete, and are logged, in the order the requests were sent.
    let envoy = b.concurrency(1).start().unwrap_or_else(|e| panic!("{e:#}"));
    Gateway { envoy, log, _task: task, beta, openai, anthropic, _jwks: jwks }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // Kept when the test fails, with Envoy's own directory.
        if !std::thread::panicking() {
            if let Some(dir) = self.log.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A request sent, and the access-log fields it must produce (`Null`: the field is empty).
struct Expect {
    what: &'static str,
    fields: Map<String, Value>,
}

fn expect(what: &'static str, fields: Value) -> Expect {
    Expect { what, fields: fields.as_object().cloned().unwrap_or_default() }
}

fn chat(g: &Gateway, token: &str, body: &Value, extra: &[(&str, &str)]) -> Resp {
    let auth = bearer(token);
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    client::post_json(&g.envoy.url("gateway", "/v1/chat/completions"), &headers, body).unwrap()
}

fn usage_fields(r: &Resp) -> Value {
    let u = &r.json()["usage"];
    let prompt = u["prompt_tokens"].as_u64().expect("usage.prompt_tokens");
    let cached = u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0);
    json!({"input_tokens": (prompt - cached).to_string(), "output_tokens": u["completion_tokens"].as_u64().expect("completion_tokens").to_string(), "cached_tokens": cached.to_string()})
}

fn merged(a: Value, b: Value) -> Value {
    let mut a = a.as_object().cloned().unwrap_or_default();
    a.extend(b.as_object().cloned().unwrap_or_default());
    Value::Object(a)
}

/// Traffic through every filter and the outcomes the dashboard and alerts watch: JWT denials,
/// both variants, an LLM answer from the primary and one from the fallback after a 429, a
/// stream, a subject over its budget, and the idle workload's 503.
fn drive(g: &Gateway) -> Vec<Expect> {
    let m = minted();
    let (alice, bob) = (m.valid("rs256"), m.valid("second_user"));
    let url = |path: &str| g.envoy.url("gateway", path);
    let mut out = Vec::new();

    let r = client::get(&url("/health"), &[]).unwrap();
    assert_eq!(r.status, 200);
    out.push(expect("no token needed", json!({"status": 200, "jwt": null, "variant_checkout": null, "subject": null})));

    let r = client::get(&url("/api/v1/tasks"), &[]).unwrap();
    assert_eq!(r.status, 401);
    out.push(expect("no token", json!({"status": 401, "jwt": "missing", "variant_checkout": null})));

    let r = client::get(&url("/api/v1/tasks"), &[("authorization", &bearer(m.attack("expired")))]).unwrap();
    assert_eq!(r.status, 401);
    out.push(expect("expired token", json!({"status": 401, "jwt": "expired"})));

    let r = client::get(&url("/api/v1/tasks"), &[("authorization", &bearer(alice))]).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let variant = r.json()["headers"]["x-variant"].as_str().expect("the upstream saw x-variant").to_string();
    out.push(expect("assigned", json!({"status": 200, "jwt": "allowed", "user": "user-42", "variant_checkout": variant, "subject": null})));

    let before = g.beta.request_count();
    let r = client::get(&url("/api/v1/tasks"), &[("authorization", &bearer(alice)), ("x-force-variant", "beta")]).unwrap();
    assert_eq!((r.status, g.beta.request_count()), (200, before + 1));
    out.push(expect("forced to beta", json!({"status": 200, "variant_checkout": "beta", "upstream_cluster": "task_api_beta"})));

    let ask = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "one two three four five six"}]});
    let r = chat(g, alice, &ask, &[("x-mock-output-tokens", "5"), ("x-mock-cached-tokens", "2")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let remaining = r.header("x-ratelimit-remaining-tokens").expect("x-ratelimit-remaining-tokens").to_string();
    let tokens = usage_fields(&r);
    assert_eq!(tokens, json!({"input_tokens": "4", "output_tokens": "5", "cached_tokens": "2"}), "the mock's usage");
    out.push(expect(
        "answered by the primary",
        merged(
            json!({"status": 200, "jwt": "allowed", "subject": "user-42", "model_requested": "gpt-4o", "model_answered": "gpt-4o",
                   "provider": "openai", "attempts": 1, "budget": "user-minute", "budget_remaining": remaining, "upstream_cluster": "llm"}),
            tokens,
        ),
    ));

    g.openai.set_fault(Some(Fault::Status(429)));
    let r = chat(g, alice, &ask, &[("x-mock-output-tokens", "3")]);
    g.openai.set_fault(None);
    assert_eq!((r.status, r.header("x-ai-provider")), (200, Some("anthropic")), "{}", r.text());
    let remaining = r.header("x-ratelimit-remaining-tokens").expect("x-ratelimit-remaining-tokens").to_string();
    out.push(expect(
        "answered by the fallback",
        merged(
            json!({"status": 200, "subject": "user-42", "model_requested": "gpt-4o", "model_answered": "claude-sonnet-4-5",
                   "provider": "anthropic", "attempts": 2, "budget": "user-minute", "budget_remaining": remaining}),
            usage_fields(&r),
        ),
    ));

    // Both providers refuse: the client gets the fallback's 429, and nothing is charged.
    g.openai.set_fault(Some(Fault::Status(429)));
    g.anthropic.set_fault(Some(Fault::Status(429)));
    let r = chat(g, alice, &ask, &[]);
    g.openai.set_fault(None);
    g.anthropic.set_fault(None);
    assert_eq!(r.status, 429, "{}", r.text());
    out.push(expect(
        "refused by both providers",
        json!({"status": 429, "subject": "user-42", "provider": "anthropic", "attempts": 2, "model_answered": "claude-sonnet-4-5",
               "budget": "user-minute", "input_tokens": null, "output_tokens": null}),
    ));

    let stream = json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true},
                        "messages": [{"role": "user", "content": "one two three"}]});
    let r = chat(g, alice, &stream, &[("x-mock-output-tokens", "4")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("data: [DONE]"), "{}", r.text());
    out.push(expect(
        "streamed",
        json!({"status": 200, "model_requested": "gpt-4o-mini", "model_answered": "gpt-4o-mini", "provider": "openai",
               "input_tokens": "3", "output_tokens": "4", "cached_tokens": "0"}),
    ));

    // A reservation that leaves alice less than a fifth of her per-minute budget.
    let big = merged(ask.clone(), json!({"max_tokens": 850}));
    let r = chat(g, alice, &big, &[("x-mock-output-tokens", "2")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let remaining = r.header("x-ratelimit-remaining-tokens").expect("x-ratelimit-remaining-tokens").to_string();
    assert!(remaining.parse::<u64>().is_ok_and(|n| n < 200), "{remaining}");
    out.push(expect("near the budget", json!({"status": 200, "budget": "user-minute", "budget_remaining": remaining, "output_tokens": "2"})));

    // bob's answer costs more than his per-minute budget: his next request is refused at its
    // headers, before any body is read.
    let r = chat(g, bob, &ask, &[("x-mock-output-tokens", "2000")]);
    assert_eq!(r.status, 200, "{}", r.text());
    out.push(expect("over budget", json!({"status": 200, "subject": "user-43", "output_tokens": "2000"})));
    let r = chat(g, bob, &ask, &[]);
    assert_eq!(r.status, 429, "{}", r.text());
    out.push(expect(
        "limited",
        json!({"status": 429, "jwt": "allowed", "subject": "user-43", "budget": "user-minute", "budget_remaining": "0",
               "model_requested": null, "provider": null, "input_tokens": null}),
    ));

    // The idle workload, scaled to zero: Envoy answers for it.
    let r = client::get(&url("/agents/runs"), &[("authorization", &bearer(alice))]).unwrap();
    assert_eq!((r.status, r.text().as_str()), (503, "no healthy upstream"));
    out.push(expect("scaled to zero", json!({"status": 503, "response_flags": "UH", "upstream_cluster": "agent_worker", "jwt": "allowed"})));
    // The same workload as Envoy Gateway routes it by default: a direct 503 with no body.
    let r = client::get(&url("/agents-eg/runs"), &[("authorization", &bearer(alice))]).unwrap();
    assert_eq!((r.status, r.body.len()), (503, 0), "{}", r.text());
    out.push(expect("scaled to zero, Envoy Gateway", json!({"status": 503, "response_flags": "-", "attempts": 0, "jwt": "allowed"})));
    out
}

/// Envoy writes its access log in the background (every 10 s by default) and on exit.
fn access_log(g: &mut Gateway) -> Vec<Map<String, Value>> {
    g.envoy.stop();
    let text = std::fs::read_to_string(&g.log).unwrap_or_else(|e| panic!("{}: {e}", g.log.display()));
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON: {e}: {l}")).as_object().cloned().unwrap())
        .collect()
}

#[test]
fn access_log_records_each_filters_decisions() {
    let mut g = start();
    let expected = drive(&g);
    let lines = access_log(&mut g);
    // jwt-claims' JWKS fetch is a call of its own, not a logged request.
    assert_eq!(lines.len(), expected.len(), "one line per request:\n{lines:#?}");
    let mut wrong = Vec::new();
    for (e, line) in expected.iter().zip(&lines) {
        for (key, want) in &e.fields {
            assert!(line.contains_key(key), "the access log has no field {key}");
            if &line[key] != want {
                wrong.push(format!("{}: {key} = {} (want {want})", e.what, line[key]));
            }
        }
    }
    assert!(wrong.is_empty(), "{}\n\nlines:\n{lines:#?}", wrong.join("\n"));
}

/// A metric, its exact label set, and the least value the traffic gives it.
type Check<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

fn value(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let parsed = Scrape::parse(l);
        let set = parsed.series.get(metric)?.first()?;
        let all = labels.iter().all(|(k, v)| set.get(*k).map(String::as_str).unwrap_or("") == *v) && set.len() == labels.len();
        all.then(|| l.rsplit(' ').next().and_then(|v| v.parse().ok())).flatten()
    })
}

/// Queries with where they are: (place, expression).
type Located = Vec<(String, String)>;

/// Every query the observability set and the autoscalers run: PromQL, and LogQL (the
/// dashboard's access-log panels).
fn shipped_queries() -> (Located, Located) {
    let (mut promql, mut logql) = (Vec::new(), Vec::new());
    let dir = paths::root().join(OBSERVABILITY);
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("llm-gateway-dashboard.json")).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    let mut seen = 0;
    for panel in panels.iter().chain(panels.iter().flat_map(|p| p["panels"].as_array().cloned().unwrap_or_default()).collect::<Vec<_>>().iter()) {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_else(|| panic!("panel {} has a target without expr", panel["title"])).to_string();
            let ds = t["datasource"]["type"].as_str().or(panel["datasource"]["type"].as_str()).unwrap_or("prometheus");
            let at = format!("dashboard panel {:?}", panel["title"].as_str().unwrap_or_default());
            seen += 1;
            if ds == "loki" {
                logql.push((at, expr));
            } else {
                promql.push((at, expr));
            }
        }
    }
    assert!(seen >= 6, "the dashboard has {seen} queries");
    for var in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = var["query"]["query"].as_str().or(var["query"].as_str()) {
            // label_values(metric, label): the metric must carry the label.
            if let Some(args) = q.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')) {
                let (metric, label) = args.rsplit_once(',').expect("label_values(metric, label)");
                promql.push((format!("dashboard variable {}", var["name"]), format!("count by ({}) ({})", label.trim(), metric.trim())));
            }
        }
    }
    let rules: Value = serde_yaml::from_str(&std::fs::read_to_string(dir.join("alerts.yaml")).unwrap()).unwrap();
    for group in rules["spec"]["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap_or_default();
            promql.push((format!("alert {name}"), rule["expr"].as_str().expect("expr").to_string()));
        }
    }
    let keda = std::fs::read_to_string(paths::root().join("envoy-config/kubernetes/suite/keda.yaml")).unwrap();
    for doc in serde_yaml::Deserializer::from_str(&keda) {
        let doc = Value::deserialize(doc).unwrap();
        for trigger in doc["spec"]["triggers"].as_array().into_iter().flatten().filter(|t| t["type"] == "prometheus") {
            promql.push((format!("ScaledObject {}", doc["metadata"]["name"]), trigger["metadata"]["query"].as_str().expect("query").to_string()));
        }
    }
    (promql, logql)
}

/// The access-log fields a LogQL query reads: `unwrap` targets and grouping labels after `json`.
fn logql_fields(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let words: Vec<&str> = expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).collect();
    for pair in words.windows(2) {
        if pair[0] == "unwrap" {
            out.push(pair[1].to_string());
        }
    }
    for part in expr.split(" by (").skip(1) {
        if let Some((labels, _)) = part.split_once(')') {
            out.extend(labels.split(',').map(|l| l.trim().to_string()));
        }
    }
    out
}

#[test]
fn dashboard_alerts_and_autoscalers_read_only_metrics_envoy_exports() {
    let g = start();
    drive(&g);
    // The tags turn name segments into labels, and the counts are the traffic's (filters flush
    // their counters once a second).
    let checks: [Check; 9] = [
        ("ab_variant_assigned", &[("experiment", "checkout"), ("variant", "beta")], 1.0),
        ("jwt_claims_denied", &[("reason", "missing")], 1.0),
        ("jwt_claims_denied", &[("reason", "expired")], 1.0),
        ("jwt_claims_jwks_fetches", &[("provider", "demo")], 1.0),
        ("provider_fallback_attempts", &[("provider", "anthropic")], 2.0),
        ("token_budget_requests_limited", &[("budget", "user-minute")], 1.0),
        ("token_budget_requests_limited", &[], 1.0),
        ("token_budget_requests_near_limit", &[("budget", "user-minute")], 1.0),
        ("token_budget_model_output_tokens", &[("budget", "user-model-day"), ("model", "gpt-4o")], 2008.0),
    ];
    let short = |text: &str| checks.iter().filter(|(m, l, min)| value(text, m, l).is_none_or(|v| v < *min)).map(|(m, l, _)| format!("{m}{l:?}")).collect::<Vec<_>>();
    let text = integration::poll(Duration::from_secs(10), Duration::from_millis(100), || g.envoy.prometheus(), |text| short(text).is_empty());
    let missing = short(&text);
    assert!(missing.is_empty(), "short of the traffic: {missing:?}\n{text}");
    let scrape = Scrape::parse(&text);
    // No filter metric is left with a name segment the tags should have taken.
    let untagged: Vec<&String> = scrape
        .series
        .keys()
        .filter(|n| ["ab_variant_checkout", "jwt_claims_denied_", "provider_fallback_openai", "provider_fallback_anthropic", "token_budget_user_"].iter().any(|p| n.starts_with(p)))
        .collect();
    assert!(untagged.is_empty(), "untagged: {untagged:?}");

    let (promql_queries, logql_queries) = shipped_queries();
    let mut problems = Vec::new();
    for (at, expr) in &promql_queries {
        match promql::parse(expr) {
            Ok(q) if q.selectors.is_empty() => problems.push(format!("{at}: reads no metric: {expr}")),
            Ok(q) => problems.extend(scrape.problems(&q).into_iter().map(|p| format!("{at}: {p}"))),
            Err(e) => problems.push(format!("{at}: {e}")),
        }
    }
    let fields = access_log_fields(&fixture_access_log_format());
    for (at, expr) in &logql_queries {
        let used = logql_fields(expr);
        assert!(!used.is_empty(), "{at}: reads no access-log field: {expr}");
        problems.extend(used.into_iter().filter(|f| !fields.contains(f)).map(|f| format!("{at}: the access log has no field {f}")));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// --- the shipped configs agree with the fixture

fn fixture() -> Value {
    Bootstrap::load(FIXTURE).unwrap().json().clone()
}

fn fixture_access_log_format() -> Value {
    fixture().pointer(ACCESS_LOG).and_then(|c| c.pointer("/log_format/json_format")).cloned().expect("the fixture's json_format")
}

fn access_log_fields(format: &Value) -> Vec<String> {
    format.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

fn yaml_docs(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(paths::root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::Deserializer::from_str(&text).map(|d| Value::deserialize(d).unwrap()).collect()
}

/// The stats tags and access-log format an EnvoyProxy gives Envoy: its bootstrap JSON patches
/// that append to `/stats_config/stats_tags`, and its JSON access-log format.
fn envoy_proxy_view(path: &str) -> (Value, Value) {
    let docs = yaml_docs(path);
    let proxy = docs.iter().find(|d| d["kind"] == "EnvoyProxy").unwrap_or_else(|| panic!("{path} has no EnvoyProxy"));
    let bootstrap = &proxy["spec"]["bootstrap"];
    assert_eq!(bootstrap["type"], "JSONPatch", "{path}: the bootstrap is patched, not replaced");
    let tags: Vec<Value> = bootstrap["jsonPatches"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["path"] == "/stats_config/stats_tags/-" && p["op"] == "add")
        .map(|p| p["value"].clone())
        .collect();
    let formats: Vec<&Value> = proxy["spec"]["telemetry"]["accessLog"]["settings"].as_array().into_iter().flatten().map(|s| &s["format"]["json"]).collect();
    assert_eq!(formats.len(), 1, "{path}: one JSON access log");
    (Value::Array(tags), formats[0].clone())
}

#[test]
fn shipped_configs_carry_the_fixtures_tags_and_access_log() {
    let f = fixture();
    let tags = f["stats_config"]["stats_tags"].clone();
    assert!(tags.as_array().is_some_and(|t| t.len() == 6), "{tags}");
    assert_eq!(f["stats_config"]["use_all_default_tags"], true);
    let format = fixture_access_log_format();
    for path in ["envoy-config/kubernetes/suite/gateway.yaml", "envoy-config/standalone/resources/gateway.yaml"] {
        let (their_tags, their_format) = envoy_proxy_view(path);
        assert_eq!(their_tags, tags, "{path}: stats tags differ from {FIXTURE}");
        assert_eq!(their_format, format, "{path}: access-log fields differ from {FIXTURE}");
    }
    // The local gateway: the same tags, and every JSON access log in it with the same fields.
    let local = Bootstrap::load("envoy-config/local/envoy.yaml").unwrap().json().clone();
    assert_eq!(local["stats_config"]["stats_tags"], tags, "envoy-config/local/envoy.yaml: stats tags differ from {FIXTURE}");
    assert_eq!(local["stats_config"]["use_all_default_tags"], true);
    let mut local_formats = Vec::new();
    json_formats(&local, &mut local_formats);
    assert!(!local_formats.is_empty(), "envoy-config/local/envoy.yaml has no JSON access log");
    for f in local_formats {
        assert_eq!(f, &format, "envoy-config/local/envoy.yaml: access-log fields differ from {FIXTURE}");
    }
}

// --- the same through Envoy Gateway

/// The standalone set's EnvoyProxy gives Envoy Gateway's Envoy the stats tags (a bootstrap JSON
/// patch) and the JSON access log: the filters' metrics carry their labels at that Envoy's
/// `/stats/prometheus`, and its access log the filters' fields.
#[test]
fn tags_and_access_log_through_envoy_gateway() {
    if !eg::inside_private_network("tags_and_access_log_through_envoy_gateway") {
        return;
    }
    let (mut gateway, upstreams) = eg::start_suite(Ok).unwrap_or_else(|e| panic!("{e:#}"));
    let minted = &upstreams.minted;
    let alice = bearer(minted.valid("rs256"));
    // alice is in beta (the bucketing's pinned vectors).
    let r = client::get(&gateway.url("http", "/api/v1/tasks"), &[("authorization", &alice)]).unwrap();
    assert_eq!((r.status, r.header("x-upstream")), (200, Some("beta")), "{}", r.text());
    let r = client::post_json(
        &gateway.url("http", "/v1/chat/completions"),
        &[("authorization", &alice), ("x-mock-output-tokens", "7")],
        &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "one two three"}]}),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    let scrape = integration::poll(
        Duration::from_secs(10),
        Duration::from_millis(200),
        || Scrape::parse(&gateway.envoy_admin("/stats/prometheus").map(|(_, b)| b).unwrap_or_default()),
        |s| s.has_value("ab_variant_assigned", "variant", "beta") && s.has_value("token_budget_output_tokens", "budget", "user-minute"),
    );
    for (metric, label, value) in [
        ("ab_variant_assigned", "experiment", "checkout"),
        ("ab_variant_assigned", "variant", "beta"),
        ("token_budget_output_tokens", "budget", "user-minute"),
        ("token_budget_requests_admitted", "budget", ""),
        ("provider_fallback_attempts", "provider", "openai"),
        ("jwt_claims_jwks_fetches", "provider", "demo"),
        ("jwt_claims_denied", "reason", "expired"),
    ] {
        assert!(scrape.has_value(metric, label, value), "{metric}{{{label}=\"{value}\"}} missing at Envoy Gateway's Envoy: {:?}", scrape.series.get(metric));
    }
    // Envoy Gateway's own tags still apply (the patch appends to them).
    assert!(scrape.labels_of("envoy_cluster_upstream_rq_total").contains("envoy_cluster_name"));

    // Envoy writes the access log (its stdout, which func-e hands to Envoy Gateway's) every 10 s.
    let lines = integration::poll(
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            let text = gateway.log() + &gateway.envoy_log();
            text.lines().filter_map(|l| l.find('{').and_then(|i| serde_json::from_str::<Value>(&l[i..]).ok())).filter(|v| v.get("start_time").is_some()).collect::<Vec<Value>>()
        },
        |lines| lines.len() >= 2,
    );
    let task = lines.iter().find(|l| l["variant_checkout"] == "beta").unwrap_or_else(|| panic!("no access-log line for the task request: {lines:#?}"));
    assert_eq!((task["jwt"].as_str(), task["status"].as_u64()), (Some("allowed"), Some(200)));
    let chat = lines.iter().find(|l| l["provider"] == "openai").unwrap_or_else(|| panic!("no access-log line for the LLM request: {lines:#?}"));
    assert_eq!(chat["subject"], "alice");
    assert_eq!(chat["model_requested"], "gpt-4o");
    assert_eq!(chat["output_tokens"], "7");
    gateway.stop();
}

/// Every access-log `json_format` in a bootstrap.
fn json_formats<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            if let Some(f) = map.get("json_format") {
                out.push(f);
            }
            map.values().for_each(|v| json_formats(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| json_formats(v, out)),
        _ => {}
    }
}

