//! A bad configuration pushed to a running Envoy: Envoy keeps serving with the old one.
//!
//! The listener comes from LDS on a file (`dynamic_resources.lds_config.path_config_source`
//! with `watched_directory`), the mechanism a file-based control plane uses; a new version is
//! written next to it and moved into place, which Envoy sees as an update. A filter that
//! refuses its configuration (`on_configure` returns false) makes Envoy reject the whole
//! listener update (`listener_manager.lds.update_rejected`), so the listener keeps its filters
//! and their config; a good update afterwards is taken.

use integration::client;
use integration::envoy::{Bootstrap, Envoy};
use integration::mock::echo;
use integration::paths;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The bootstrap: admin, one static cluster, listeners from a watched file.
fn bootstrap(lds: &Path, upstream_port: u16) -> Bootstrap {
    let dir = lds.parent().unwrap().display().to_string();
    let yaml = format!(
        r#"
node: {{id: config-push, cluster: tests}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
dynamic_resources:
  lds_config:
    resource_api_version: V3
    path_config_source:
      path: {lds}
      watched_directory: {{path: {dir}}}
static_resources:
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream_port}}}}}}}}}]}}]
"#,
        lds = lds.display()
    );
    Bootstrap::from_yaml(&yaml).unwrap().concurrency(2)
}

/// A listener on 127.0.0.1:`port` with one wasm filter (`artifact`, plugin config `config`)
/// in front of the router.
fn listener(port: u16, artifact: &str, config: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": "gateway",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "gateway",
                "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}]},
                "http_filters": [
                    {"name": artifact, "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                        "config": {
                            "name": artifact,
                            "failure_policy": "FAIL_CLOSED",
                            // provider-fallback's router role holds headers for the body.
                            "allow_on_headers_stop_iteration": true,
                            "vm_config": {"vm_id": artifact, "runtime": "envoy.wasm.runtime.v8",
                                          "code": {"local": {"filename": paths::wasm(artifact).display().to_string()}}},
                            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": config}
                        }
                    }},
                    {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
                ]
            }
        }]}]
    })
}

/// Writes an LDS response next to `path` and moves it into place (what Envoy watches for).
fn push(path: &Path, version: u32, listener: Value) {
    let response = json!({"version_info": version.to_string(), "resources": [listener]});
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&response).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Polls `f` until it returns Some or `limit` passes.
fn eventually<T>(limit: Duration, f: impl FnMut() -> Option<T>) -> Option<T> {
    integration::poll(limit, Duration::from_millis(100), f, Option::is_some)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Pushed {
    envoy: Envoy,
    lds: PathBuf,
    port: u16,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(artifact: &str, config: &str, upstream_port: u16) -> Pushed {
    let dir = integration::envoy::tempdir("lds").unwrap();
    let lds = dir.join("lds.json");
    // Listener updates keep the address, so the port is chosen here, not by Envoy.
    let port = free_port();
    push(&lds, 1, listener(port, artifact, config));
    let envoy = bootstrap(&lds, upstream_port).start().unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(envoy.port("gateway"), port);
    Pushed { envoy, lds, port, _dir: TempDir(dir) }
}

impl Pushed {
    fn stat(&self, name: &str) -> u64 {
        self.envoy.stat(name).unwrap_or(0)
    }

    /// Pushes `config` and waits until Envoy has accepted or rejected it.
    fn push(&self, version: u32, artifact: &str, config: &str) -> bool {
        let (ok, rejected) = (self.stat("listener_manager.lds.update_success"), self.stat("listener_manager.lds.update_rejected"));
        push(&self.lds, version, listener(self.port, artifact, config));
        eventually(Duration::from_secs(20), || {
            let (ok2, rejected2) = (self.stat("listener_manager.lds.update_success"), self.stat("listener_manager.lds.update_rejected"));
            (ok2 > ok).then_some(true).or((rejected2 > rejected).then_some(false))
        })
        .unwrap_or_else(|| panic!("Envoy took no decision on LDS version {version}\n{}", self.envoy.log_tail(40)))
    }

    fn variant(&self) -> String {
        let r = client::get(&format!("http://127.0.0.1:{}/api/x", self.port), &[("x-user-id", "alice")]).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let seen = r.json()["headers"]["x-variant"].as_str().unwrap_or_default().to_string();
        assert_eq!(r.header("x-variant"), Some(seen.as_str()), "the response header says what the upstream saw");
        seen
    }
}

fn ab_config(variant: &str, weight: u32) -> String {
    json!({"experiments": [{"name": "push", "header": "x-variant", "subject": [{"header": "x-user-id"}],
        "variants": [{"name": variant, "weight": weight}], "responseHeader": true}]})
    .to_string()
}

#[test]
fn a_config_the_filter_refuses_leaves_the_running_one_in_place() {
    let upstream = echo::start("task-api");
    let s = start("ab_variant", &ab_config("stable", 1), upstream.port());
    assert_eq!(s.variant(), "stable");

    // Weights that sum to 0: ab-variant's on_configure refuses it, so Envoy rejects the update.
    assert!(!s.push(2, "ab_variant", &ab_config("broken", 0)), "the bad config was taken");
    assert!(s.envoy.log().contains("ab-variant: experiments[0].variants: weights sum to 0"), "one line names the field\n{}", s.envoy.log_tail(30));
    for _ in 0..5 {
        assert_eq!(s.variant(), "stable", "the running config is kept");
    }
    // Not JSON at all: the same.
    assert!(!s.push(3, "ab_variant", "{\"experiments\": ["));
    assert_eq!(s.variant(), "stable");

    // A good update is taken; new connections get it once the old listener drains.
    assert!(s.push(4, "ab_variant", &ab_config("canary", 1)));
    let got = eventually(Duration::from_secs(20), || (s.variant() == "canary").then_some(()));
    assert!(got.is_some(), "the good update never served\n{}", s.envoy.log_tail(30));
    assert_eq!(s.stat("listener_manager.lds.update_rejected"), 2);
}

#[test]
fn a_provider_fallback_config_with_a_missing_key_is_refused_and_the_old_one_serves() {
    // The upstream role's config names its keys by environment variable; pushing one whose
    // variable is not in the VM's environment must not take the route down.
    let upstream = echo::start("task-api");
    let router = json!({"role": "router"}).to_string();
    let s = start("provider_fallback", &router, upstream.port());
    let model = |s: &Pushed| {
        let r = client::post_json(&format!("http://127.0.0.1:{}/v1/chat/completions", s.port), &[], &json!({"model": "gpt-4o", "messages": []})).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["headers"]["x-ai-model"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(model(&s), "gpt-4o");
    let bad = json!({"role": "upstream", "providers": [{"name": "openai", "schema": "openai", "host": "api.openai.com",
        "apiKey": {"env": "NOT_SET_ANYWHERE_KEY"}}]})
    .to_string();
    assert!(!s.push(2, "provider_fallback", &bad));
    assert!(s.envoy.log().contains("provider-fallback: providers[0].apiKey.env: `NOT_SET_ANYWHERE_KEY` is not set"), "{}", s.envoy.log_tail(30));
    assert_eq!(model(&s), "gpt-4o", "the router role still runs");
}

#[test]
fn a_refused_token_budget_config_keeps_enforcing_and_a_good_one_keeps_the_counters() {
    let openai = integration::mock::llm::openai("sk-push");
    let budget = |tokens: u64, window: &str| {
        json!({"subject": {"header": "x-user-id"}, "budgets": [{"name": "user_day", "key": ["subject"], "tokens": tokens, "window": window}],
               "reserve": {"default": 10}})
        .to_string()
    };
    let s = start("token_budget", &budget(10_000, "1d"), openai.port());
    let url = format!("http://127.0.0.1:{}/v1/chat/completions", s.port);
    let auth = ("authorization", "Bearer sk-push");
    // A body-less request reserves the default (10) and the mock answers 400, which releases
    // it: its remaining header reads the budget as it stands.
    let left = || -> u64 {
        let r = client::post(&url, &[auth, ("x-user-id", "alice")], b"").unwrap();
        assert_eq!(r.status, 400, "{}", r.text());
        r.header("x-ratelimit-remaining-tokens").unwrap().parse::<u64>().unwrap() + 10
    };
    let chat = json!({"model": "gpt-4o", "max_tokens": 50, "messages": [{"role": "user", "content": "four words right here"}]});
    let r = client::post_json(&url, &[auth, ("x-user-id", "alice")], &chat).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let used = r.json()["usage"]["total_tokens"].as_u64().unwrap();
    let after_first = eventually(Duration::from_secs(10), || Some(left()).filter(|l| *l == 10_000 - used));
    assert_eq!(after_first, Some(10_000 - used), "charged the reported usage");

    // A window the filter refuses: the update is rejected and the budget goes on as it was.
    assert!(!s.push(2, "token_budget", &budget(10_000, "2w")));
    assert!(s.envoy.log().contains("token-budget: budgets[0].window"), "{}", s.envoy.log_tail(20));
    assert_eq!(left(), 10_000 - used);

    // A good update with a bigger budget: the counters in shared data carry over.
    assert!(s.push(3, "token_budget", &budget(20_000, "1d")));
    let carried = eventually(Duration::from_secs(20), || Some(left()).filter(|l| *l == 20_000 - used));
    assert_eq!(carried, Some(20_000 - used), "the new config starts from the old counters, not from zero");
}
