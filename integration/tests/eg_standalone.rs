//! The filters attached through a real Envoy Gateway control plane in standalone mode (File
//! resource provider, Host infrastructure, no Kubernetes): envoy-config/standalone/ is rendered
//! and served to `envoy-gateway server`, which translates the EnvoyExtensionPolicies and the
//! EnvoyPatchPolicies, fetches the wasm modules over HTTP (checking their sha256), starts Envoy
//! through func-e and serves the modules to it from its own wasm cache. Requests then go through
//! that Envoy: jwt-claims and ab-variant on the task-api route; jwt-claims, token-budget and
//! provider-fallback (router role by policy, upstream role by patch) on the LLM route, with mock
//! OpenAI and Anthropic providers behind it.
//!
//! Needs Envoy Gateway (scripts/setup.sh installs it) and the filters (scripts/build.sh). Each
//! end-to-end test runs inside its own network and PID namespaces (see `integration::eg`).

use integration::client::{self, Resp};
use integration::eg::{self, EnvoyGateway, Standalone, ANTHROPIC_KEY};
use integration::mock::{jwks, MockServer};
use integration::paths;
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

const LLM_CLUSTER: &str = "httproute/task-manager/llm-completions/rule/0";
const LISTENERS: [&str; 2] = ["llm-gateway/llm-gateway/http", "llm-gateway/llm-gateway/https"];

/// A running Envoy Gateway with the suite's upstreams behind it.
struct Suite {
    gateway: EnvoyGateway,
    u: eg::Upstreams,
}

impl std::ops::Deref for Suite {
    type Target = eg::Upstreams;
    fn deref(&self) -> &eg::Upstreams {
        &self.u
    }
}

/// Starts Envoy Gateway on envoy-config/standalone after `render` (which may change resources).
fn start(render: impl FnOnce(Standalone) -> anyhow::Result<Standalone>) -> Suite {
    let (gateway, u) = eg::start_suite(render).unwrap_or_else(|e| panic!("{e:#}"));
    Suite { gateway, u }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Requests an upstream served, without Envoy's active health checks (task-api-resilience).
fn served(upstream: &MockServer) -> usize {
    upstream.requests().iter().filter(|r| r.header("user-agent") != Some("Envoy/HC")).count()
}

fn upstream_counts(s: &Suite) -> [usize; 5] {
    [served(&s.control), served(&s.beta), served(&s.canary), s.openai.request_count(), s.anthropic.request_count()]
}

/// Every JSON object in `value` (depth first) for which `matches` holds.
fn find_all<'a>(value: &'a Value, matches: &dyn Fn(&Value) -> bool, out: &mut Vec<&'a Value>) {
    if matches(value) {
        out.push(value);
    }
    match value {
        Value::Object(map) => map.values().for_each(|v| find_all(v, matches, out)),
        Value::Array(items) => items.iter().for_each(|v| find_all(v, matches, out)),
        _ => {}
    }
}

/// The active configuration of a dynamic listener or cluster in a config dump.
fn dumped<'a>(dump: &'a Value, section: &str, field: &str, name: &str) -> &'a Value {
    let mut found = Vec::new();
    find_all(dump, &|v| v[section].is_array(), &mut found);
    found
        .iter()
        .flat_map(|d| d[section].as_array().into_iter().flatten())
        .map(|entry| if field.is_empty() { entry } else { &entry[field] })
        .map(|entry| if entry["active_state"].is_object() { &entry["active_state"]["listener"] } else { entry })
        .find(|config| config["name"] == name)
        .unwrap_or_else(|| panic!("no {section} {name} in Envoy's config dump"))
}

/// provider-fallback's router role in a listener, found by its wasm plugin name.
fn router_role<'a>(dump: &'a Value, listener: &str) -> &'a Value {
    let mut filters = Vec::new();
    find_all(dumped(dump, "dynamic_listeners", "", listener), &|v| v["typed_config"]["config"]["name"] == "provider-fallback", &mut filters);
    assert_eq!(filters.len(), 1, "{listener}: one provider-fallback filter");
    &filters[0]["typed_config"]["config"]
}

fn llm_cluster(dump: &Value) -> &Value {
    dumped(dump, "dynamic_active_clusters", "cluster", LLM_CLUSTER)
}

fn unix_minute() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 60).unwrap_or(0)
}

fn chat(model: &str, content: &str, max_tokens: u64) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens})
}

fn show(r: &Resp) -> String {
    format!("{} {:?} {}", r.status, r.headers, r.text())
}

#[test]
fn filters_through_envoy_gateway() {
    if !eg::inside_private_network("filters_through_envoy_gateway") {
        return;
    }
    let s = start(Ok);
    let g = &s.gateway;
    let alice = bearer(s.minted.valid("rs256"));
    let user43 = bearer(s.minted.valid("second_user"));

    // Where the code came from: Envoy Gateway fetched every policy's module from its URL (and
    // served it to Envoy from its wasm cache over wasm_cluster); Envoy fetched the upstream role
    // over the patch's wasm_server cluster and the JWKS over its jwks cluster.
    let fetched = g.wasm_downloads();
    for module in ["jwt_claims", "ab_variant", "token_budget", "provider_fallback"] {
        assert!(fetched.contains(&format!("/wasm/{module}.wasm")), "{module} not fetched: {fetched:?}");
    }
    assert!(fetched.iter().all(|p| p.starts_with("/wasm/") || p == jwks::JWKS_PATH), "{fetched:?}");
    let stat = |name: &str| g.stat(name).unwrap_or(0);
    assert!(stat("cluster.wasm_cluster.upstream_rq_200") >= 1, "modules from Envoy Gateway's wasm cache");
    assert!(stat("cluster.wasm_server.upstream_rq_200") >= 1, "the upstream role's module over the patch's wasm_server cluster");
    assert!(stat("cluster.jwks.upstream_rq_200") >= 1, "the JWKS over the patch's jwks cluster");

    // The EnvoyPatchPolicy reached both listeners and the LLM cluster.
    let dump = g.config_dump().unwrap();
    for listener in LISTENERS {
        assert_eq!(router_role(&dump, listener)["allow_on_headers_stop_iteration"], true, "{listener}");
    }
    let upstream_filters: Vec<&Value> = llm_cluster(&dump)["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"]
        .as_array()
        .map(|f| f.iter().map(|f| &f["name"]).collect())
        .unwrap_or_default();
    assert_eq!(upstream_filters, ["provider-fallback-upstream", "envoy.filters.http.upstream_codec"]);

    // jwt-claims: no token, a forged one or an expired one never reaches the task-api...
    let url = g.url("http", "/api/v1/tasks");
    let before = upstream_counts(&s);
    let r = client::get(&url, &[("x-user-id", "alice")]).unwrap();
    assert_eq!((r.status, r.text().as_str()), (401, "Jwt is missing"), "{}", show(&r));
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"http://127.0.0.1:10080/api/v1/tasks\""));
    for (attack, message) in [("bad_signature", "Jwt verification fails"), ("expired", "Jwt is expired"), ("alg_none", "Jwt header [alg] is not supported")] {
        let r = client::get(&url, &[("authorization", &bearer(s.minted.attack(attack)))]).unwrap();
        assert_eq!((r.status, r.text().as_str()), (401, message), "{attack}: {}", show(&r));
        assert!(r.header("www-authenticate").is_some_and(|h| h.contains("error=\"invalid_token\"")), "{attack}");
    }
    assert_eq!(upstream_counts(&s), before, "a refused request reached an upstream");
    // ...a valid one does, with the verified claims as headers in place of the client's own,
    // and without the token itself.
    let r = client::get(&url, &[("authorization", &alice), ("x-user-id", "mallory"), ("x-org-id", "evil")]).unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-user-id"], "alice");
    assert_eq!(seen["x-org-id"], "org-7");
    assert_eq!(seen["x-user-permissions"], "read:tasks,write:tasks");
    assert!(seen.get("authorization").is_none(), "{seen}");
    // /health needs no token, and a claim header a client sends is removed there too.
    let r = client::get(&g.url("http", "/health"), &[("x-user-id", "mallory"), ("x-variant", "beta")]).unwrap();
    assert_eq!((r.status, r.header("x-upstream")), (200, Some("control")), "{}", show(&r));
    assert!(r.json()["headers"].get("x-user-id").is_none(), "{}", r.text());
    assert!(r.json()["headers"].get("x-variant").is_none(), "{}", r.text());

    // ab-variant, behind jwt-claims: the subject is the verified x-user-id. alice is in beta and
    // user-43 in control (the bucketing's pinned vectors); the header the filter sets reaches
    // the upstream, and the HTTPRoute's header match routes on it.
    for (token, user, want) in [(&alice, "alice", "beta"), (&user43, "user-43", "control")] {
        let r = client::get(&url, &[("authorization", token)]).unwrap();
        assert_eq!(r.status, 200, "{user}: {}", show(&r));
        assert_eq!(r.header("x-upstream"), Some(want), "{user}");
        assert_eq!(r.json()["headers"]["x-user-id"], user);
        assert_eq!(r.json()["headers"]["x-variant"], want, "{user}: the upstream sees the assigned variant");
        assert_eq!(r.header("x-variant"), Some(want), "{user}: responseHeader");
    }
    // A client's own copy of the header is replaced; the configured override still picks one.
    let r = client::get(&url, &[("authorization", &user43), ("x-variant", "beta")]).unwrap();
    assert_eq!((r.header("x-upstream"), r.json()["headers"]["x-variant"].as_str()), (Some("control"), Some("control")));
    let r = client::get(&url, &[("authorization", &user43), ("x-force-variant", "beta")]).unwrap();
    assert_eq!(r.header("x-upstream"), Some("beta"));
    assert_eq!(served(&s.canary), 0);
    assert!(s.canary.requests().iter().any(|r| r.path == "/health"), "task-api-resilience's health checks reach every task-api Backend");

    // The LLM route needs a token too.
    let llm_url = g.url("http", "/v1/chat/completions");
    let body = chat("gpt-4o", "Plan my week", 64);
    let before = upstream_counts(&s);
    let r = client::post_json(&llm_url, &[], &body).unwrap();
    assert_eq!(r.status, 401, "{}", show(&r));
    assert_eq!(upstream_counts(&s), before);

    // The primary provider answers: the upstream role gave the attempt OpenAI's authority and
    // the key from Envoy's environment (the mock refuses any other); token-budget saw it.
    let r = client::post_json(&llm_url, &[("authorization", &alice)], &body).unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.header("x-ai-provider"), Some("openai"));
    assert_eq!((r.json()["object"].as_str(), r.json()["model"].as_str()), (Some("chat.completion"), Some("gpt-4o")));
    assert_eq!(r.header("x-ratelimit-limit-tokens"), Some("10000"), "token-budget's tightest budget, user-minute");
    let sent = s.openai.requests().pop().unwrap();
    assert_eq!(sent.header("host"), Some("api.openai.com"));
    assert_eq!(sent.header("x-ai-model"), Some("gpt-4o"), "the router role's model header");
    assert_eq!(s.anthropic.request_count(), 0);

    // Provider fallback: OpenAI answers 429, the route's retry goes to the next priority, and
    // the upstream role turns that attempt into an Anthropic Messages request and the answer
    // back into a Chat Completion.
    let openai_before = s.openai.request_count();
    let r = client::post_json(&llm_url, &[("authorization", &alice), ("x-mock-fault-openai", "429")], &body).unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.header("x-ai-provider"), Some("anthropic"));
    let answer = r.json();
    assert_eq!(answer["object"], "chat.completion", "{answer}");
    assert_eq!(answer["model"], "claude-sonnet-4-5", "{answer}");
    assert_eq!(answer["choices"][0]["message"]["content"], "word1 word2 word3 word4 word5 word6 word7 word8");
    assert_eq!(answer["usage"]["completion_tokens"], 8);
    assert_eq!(s.openai.request_count(), openai_before + 1, "one attempt at the primary");
    let sent = s.anthropic.requests().pop().expect("the fallback attempt");
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("host"), Some("api.anthropic.com"));
    assert_eq!(sent.header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert!(sent.header("authorization").is_none(), "OpenAI's credential went to Anthropic");
    let translated = sent.json();
    assert_eq!(translated["model"], "claude-sonnet-4-5");
    assert_eq!(translated["max_tokens"], 64);
    assert_eq!(translated["messages"], json!([{"role": "user", "content": "Plan my week"}]));

    // token-budget: one answer that uses alice's user-minute budget (10000 tokens; the mock
    // reports as many completion tokens as asked), then the next request is refused before
    // any provider is contacted. The window is a wall-clock minute: if one ended between the
    // two requests, the budget was rightly fresh again, so spend it once more.
    let mut limited = None;
    for _ in 0..2 {
        let minute = unix_minute();
        let spend = client::post_json(&llm_url, &[("authorization", &alice), ("x-mock-output-tokens", "10000")], &chat("gpt-4o", "Write a novel", 10000)).unwrap();
        assert_eq!(spend.status, 200, "{}", show(&spend));
        assert_eq!(spend.json()["usage"]["completion_tokens"], 10000);
        let before = upstream_counts(&s);
        let r = client::post_json(&llm_url, &[("authorization", &alice)], &body).unwrap();
        if r.status == 429 {
            assert_eq!(upstream_counts(&s), before, "a limited request reached a provider");
            limited = Some(r);
            break;
        }
        assert_ne!(unix_minute(), minute, "not limited after the budget was spent: {}", show(&r));
    }
    let r = limited.expect("limited within two windows");
    let error = &r.json()["error"];
    assert_eq!((error["code"].as_str(), error["type"].as_str()), (Some("token_budget_exceeded"), Some("rate_limit_exceeded")), "{}", show(&r));
    assert!(error["message"].as_str().is_some_and(|m| m.contains("user-minute")), "{error}");
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some("0"));
    assert!(r.header("retry-after").is_some_and(|v| v.parse::<u64>().is_ok_and(|s| (1..=60).contains(&s))), "{}", show(&r));
    // The budget is per subject: user-43 still has theirs.
    let r = client::post_json(&llm_url, &[("authorization", &user43)], &body).unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
}

/// In Kubernetes the provider Backends use TLS, and Envoy Gateway builds the LLM cluster
/// differently: it generates HttpProtocolOptions (auto_config, for ALPN) and marks each endpoint
/// with `envoy.transport_socket_match` metadata. Rendered with the Kubernetes set's TLS settings
/// (and without the standalone stand-in for those options), the Kubernetes patches must extend
/// what Envoy Gateway generated, not replace it. Nothing is sent: the mocks do not speak TLS.
#[test]
fn kubernetes_patches_keep_what_envoy_gateway_generates_for_tls_backends() {
    if !eg::inside_private_network("kubernetes_patches_keep_what_envoy_gateway_generates_for_tls_backends") {
        return;
    }
    let kubernetes = kubernetes_docs();
    let tls_of = |name: &str| {
        let backend = kubernetes.iter().find(|d| d["kind"] == "Backend" && d["metadata"]["name"] == name);
        let tls = backend.map(|b| b["spec"]["tls"].clone()).unwrap_or(Value::Null);
        assert!(tls.is_object(), "the Kubernetes Backend {name} has no tls");
        tls
    };
    let (openai_tls, anthropic_tls) = (tls_of("openai"), tls_of("anthropic"));
    let s = start(|s| {
        s.edit("Backend", "openai", |b| b["spec"]["tls"] = openai_tls)?
            .edit("Backend", "anthropic", |b| b["spec"]["tls"] = anthropic_tls)?
            .without("EnvoyPatchPolicy", "llm-cluster-http-options-on-host")
    });
    let dump = s.gateway.config_dump().unwrap();
    let cluster = llm_cluster(&dump);
    let options = &cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert!(options["auto_config"].is_object(), "Envoy Gateway's auto_config is gone: {options}");
    let names: Vec<&Value> = options["http_filters"].as_array().into_iter().flatten().map(|f| &f["name"]).collect();
    assert_eq!(names, ["provider-fallback-upstream", "envoy.filters.http.upstream_codec"], "{options}");
    let matches: Vec<&Value> = cluster["transport_socket_matches"].as_array().into_iter().flatten().map(|m| &m["name"]).collect();
    for (priority, provider) in ["openai", "anthropic"].into_iter().enumerate() {
        let locality = &cluster["load_assignment"]["endpoints"][priority];
        assert_eq!(locality["priority"].as_u64().unwrap_or(0), priority as u64, "{locality}");
        let metadata = &locality["lb_endpoints"][0]["metadata"]["filter_metadata"];
        assert_eq!(metadata["llm"]["provider"], provider, "{metadata}");
        let tls_match = format!("{LLM_CLUSTER}/tls/{priority}");
        assert_eq!(metadata["envoy.transport_socket_match"]["name"], tls_match.as_str(), "{metadata}");
        assert!(matches.contains(&&json!(tls_match)), "{matches:?}");
    }
    for listener in LISTENERS {
        assert_eq!(router_role(&dump, listener)["allow_on_headers_stop_iteration"], true, "{listener}");
    }
}

fn kubernetes_docs() -> Vec<Value> {
    eg::yaml_files(&paths::root().join("envoy-config/kubernetes/suite")).unwrap().into_iter().flat_map(|(_, docs)| docs).collect()
}

/// The standalone set says the same thing as envoy-config/kubernetes/suite where it can:
/// - the Gateway has the same listeners (names, protocols, hostnames, certificates; ports and
///   allowed namespaces differ, see gateway.yaml), which the patches name;
/// - each standalone HTTPRoute has the Kubernetes route's rules (Backends standing in for
///   Services);
/// - every EnvoyExtensionPolicy, BackendTrafficPolicy, ClientTrafficPolicy and EnvoyPatchPolicy
///   that targets those routes or the Gateway in the Kubernetes set is in the standalone set with
///   the same spec (only where code is served from, and the pinned sha256, differ);
/// - Backends in both sets agree on `fallback` (the provider priorities), and ReferenceGrants
///   are the same;
/// - what only the standalone set has is in standalone-patches.yaml.
///
/// Needs no Envoy Gateway.
#[test]
fn standalone_resources_match_the_kubernetes_set() {
    let kubernetes = kubernetes_docs();
    let standalone_files = eg::yaml_files(&paths::root().join("envoy-config/standalone/resources")).unwrap();
    let standalone: Vec<Value> = standalone_files.iter().flat_map(|(_, docs)| docs.iter().cloned()).collect();
    let find = |docs: &[Value], kind: &str, name: &Value, namespace: &Value| -> Option<Value> {
        docs.iter().find(|d| d["kind"] == kind && &d["metadata"]["name"] == name && &d["metadata"]["namespace"] == namespace).cloned()
    };

    // Each standalone resource of `kind` has its Kubernetes counterpart, equal in `view`; their names.
    let counterparts = |kind: &str, view: fn(&Value) -> Value| -> Vec<Value> {
        let mut names = Vec::new();
        for ours in standalone.iter().filter(|d| d["kind"] == kind) {
            let (name, namespace) = (&ours["metadata"]["name"], &ours["metadata"]["namespace"]);
            let theirs = find(&kubernetes, kind, name, namespace).unwrap_or_else(|| panic!("{kind} {namespace}/{name} is not in the Kubernetes set"));
            assert_eq!(view(ours), view(&theirs), "{kind} {namespace}/{name}");
            names.push(name.clone());
        }
        names
    };
    let gateways = counterparts("Gateway", listeners_view);
    assert!(!gateways.is_empty());
    let routes = counterparts("HTTPRoute", route_view);
    assert!(routes.len() >= 2, "{routes:?}");

    let attached = |policy: &Value| {
        let refs = policy["spec"]["targetRefs"].as_array().cloned().unwrap_or_else(|| vec![policy["spec"]["targetRef"].clone()]);
        refs.iter().any(|t| (t["kind"] == "Gateway" && gateways.contains(&t["name"])) || (t["kind"] == "HTTPRoute" && routes.contains(&t["name"])))
    };
    let standalone_only: Vec<&Value> = standalone_files
        .iter()
        .filter(|(path, _)| path.file_name().is_some_and(|f| f == "standalone-patches.yaml"))
        .flat_map(|(_, docs)| docs.iter())
        .collect();
    let mut filters = 0;
    for kind in ["EnvoyExtensionPolicy", "BackendTrafficPolicy", "ClientTrafficPolicy", "EnvoyPatchPolicy"] {
        let mut compared = 0;
        for policy in kubernetes.iter().filter(|d| d["kind"] == kind && attached(d)) {
            let (name, namespace) = (&policy["metadata"]["name"], &policy["metadata"]["namespace"]);
            let ours = find(&standalone, kind, name, namespace)
                .unwrap_or_else(|| panic!("{kind} {namespace}/{name} is missing from envoy-config/standalone/resources"));
            assert_eq!(policy_view(&ours), policy_view(policy), "{kind} {namespace}/{name}");
            filters += policy["spec"]["wasm"].as_array().map_or(0, Vec::len);
            compared += 1;
        }
        assert!(compared >= 1, "no {kind} attached to {routes:?} or {gateways:?} in the Kubernetes set");
        for policy in standalone.iter().filter(|d| d["kind"] == kind) {
            let (name, namespace) = (&policy["metadata"]["name"], &policy["metadata"]["namespace"]);
            let in_kubernetes = find(&kubernetes, kind, name, namespace).is_some();
            assert!(in_kubernetes != standalone_only.contains(&policy), "{kind} {namespace}/{name}: only standalone-patches.yaml holds what the Kubernetes set lacks");
        }
    }
    assert!(filters >= 5, "{filters} wasm entries attached to {routes:?}");

    for backend in standalone.iter().filter(|d| d["kind"] == "Backend") {
        let (name, namespace) = (&backend["metadata"]["name"], &backend["metadata"]["namespace"]);
        if let Some(theirs) = find(&kubernetes, "Backend", name, namespace) {
            assert_eq!(backend["spec"]["fallback"], theirs["spec"]["fallback"], "Backend {namespace}/{name}: fallback");
        }
    }
    for grant in kubernetes.iter().filter(|d| d["kind"] == "ReferenceGrant") {
        let (name, namespace) = (&grant["metadata"]["name"], &grant["metadata"]["namespace"]);
        let ours = find(&standalone, "ReferenceGrant", name, namespace).unwrap_or_else(|| panic!("ReferenceGrant {namespace}/{name} is missing"));
        assert_eq!(ours["spec"], grant["spec"], "ReferenceGrant {namespace}/{name}");
    }
}

/// A Gateway's listeners without what a host changes (ports, allowed route namespaces).
fn listeners_view(gateway: &Value) -> Value {
    let listeners = gateway["spec"]["listeners"].as_array().cloned().unwrap_or_default();
    Value::Array(listeners.into_iter().map(|l| json!({"name": l["name"], "protocol": l["protocol"], "hostname": l["hostname"], "tls": l["tls"]})).collect())
}

/// A route with its backends named without how they are provided (Service and port, or Backend).
fn route_view(route: &Value) -> Value {
    let mut view = json!({"parentRefs": route["spec"]["parentRefs"], "rules": []});
    for rule in route["spec"]["rules"].as_array().into_iter().flatten() {
        let mut rule = rule.clone();
        if let Some(Value::Array(refs)) = rule.get_mut("backendRefs") {
            for r in refs.iter_mut() {
                *r = json!({"name": r["name"], "namespace": r["namespace"], "weight": r["weight"]});
            }
        }
        view["rules"].as_array_mut().unwrap().push(rule);
    }
    view
}

/// A policy's spec with each wasm code source reduced to the module's file name (the URL's
/// host and the sha256 are where and what was built; the standalone harness fills them in),
/// and the sha256 of remote code in patches left out for the same reason.
fn policy_view(policy: &Value) -> Value {
    let mut spec = policy["spec"].clone();
    for entry in spec["wasm"].as_array_mut().into_iter().flatten() {
        if let Some(url) = entry["code"]["http"]["url"].as_str() {
            let file = url.rsplit('/').next().unwrap_or_default().to_string();
            entry["code"]["http"] = json!({"file": file});
        }
    }
    unpin_remote_code(&mut spec);
    spec
}

fn unpin_remote_code(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(remote) = map.get_mut("remote").and_then(Value::as_object_mut).filter(|r| r.contains_key("http_uri")) {
                remote.remove("sha256");
            }
            map.values_mut().for_each(unpin_remote_code);
        }
        Value::Array(items) => items.iter_mut().for_each(unpin_remote_code),
        _ => {}
    }
}
