//! The rate limit service's configuration cannot drift from token-budget's: it is generated
//! by scripts/ratelimit-config.py, the committed Kubernetes ConfigMap must be what the script
//! writes today, the real service loads what the script writes for every shipped global-mode
//! configuration with exactly the filter's limits, and the local global-mode bootstrap stays
//! envoy-config/local/envoy.yaml plus global mode.

use integration::envoy::Bootstrap;
use integration::paths;
use integration::ratelimit::{service_config, RateLimit};
use serde_json::Value;
use std::process::Command;

fn script(args: &[&str]) -> std::process::Output {
    Command::new(paths::python())
        .arg(paths::root().join("scripts/ratelimit-config.py"))
        .args(args)
        .current_dir(paths::root())
        .output()
        .expect("run scripts/ratelimit-config.py with .venv/bin/python (scripts/setup.sh)")
}

#[test]
fn the_kubernetes_configmap_is_current() {
    let out = script(&[
        "--from",
        "envoy-config/kubernetes/suite/filters.yaml",
        "--configmap",
        "ratelimit-config",
        "--namespace",
        "llm-gateway",
        "--check",
        "envoy-config/kubernetes/suite/ratelimit-config.yaml",
    ]);
    assert!(
        out.status.success(),
        "{}{}\nRegenerate: .venv/bin/python scripts/ratelimit-config.py --from envoy-config/kubernetes/suite/filters.yaml \
         --configmap ratelimit-config --namespace llm-gateway --out envoy-config/kubernetes/suite/ratelimit-config.yaml",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = std::fs::read_to_string(paths::root().join("envoy-config/kubernetes/suite/kustomization.yaml")).unwrap();
    assert!(manifest.contains("- ratelimit-config.yaml") && manifest.contains("- ratelimit.yaml"), "the suite applies them");
}

/// Every token-budget configuration in global mode that the repository ships.
fn shipped_global_configs() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for file in ["envoy-config/local/envoy-global.yaml", "integration/envoy/token-budget-global.yaml"] {
        for (name, config, _) in Bootstrap::load(file).unwrap().wasm_plugins() {
            let v: Value = serde_json::from_str(&config).unwrap();
            if v["mode"] == "global" {
                out.push((format!("{file} ({name})"), v));
            }
        }
    }
    let text = std::fs::read_to_string(paths::root().join("envoy-config/kubernetes/suite/filters.yaml")).unwrap();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let doc: Value = serde_yaml::with::singleton_map_recursive::deserialize(doc).unwrap_or_default();
        for wasm in doc["spec"]["wasm"].as_array().into_iter().flatten() {
            if wasm["config"]["mode"] == "global" {
                out.push((format!("filters.yaml ({})", wasm["name"]), wasm["config"].clone()));
            }
        }
    }
    out
}

#[test]
fn the_service_loads_the_generated_config_with_the_filters_limits() {
    let configs = shipped_global_configs();
    assert_eq!(configs.len(), 3, "{configs:?}");
    for (from, config) in configs {
        let rl = RateLimit::start(&config.to_string()).unwrap_or_else(|e| panic!("{from}: {e:#}"));
        let dump = rl.service.loaded_config();
        let domain = config["global"]["domain"].as_str().unwrap();
        for b in config["budgets"].as_array().unwrap() {
            let mut key = format!("{domain}.budget_{}", b["name"].as_str().unwrap());
            for part in b["key"].as_array().into_iter().flatten() {
                key.push('.');
                key.push_str(&part.as_str().unwrap().to_ascii_lowercase());
            }
            let unit = match b["window"].as_str().unwrap() {
                "1s" => "SECOND",
                "1m" => "MINUTE",
                "1h" => "HOUR",
                "1d" => "DAY",
                "7d" => "WEEK",
                "30d" => "MONTH",
                other => panic!("{from}: window {other}"),
            };
            let want = format!("{key}: unit={unit} requests_per_unit={},", b["tokens"]);
            assert!(dump.lines().any(|l| l.starts_with(&want)), "{from}: the service has no `{want}`:\n{dump}");
        }
        assert_eq!(dump.lines().count(), config["budgets"].as_array().unwrap().len(), "{from}: nothing else:\n{dump}");
    }
}

#[test]
fn the_script_refuses_what_global_mode_refuses() {
    let base = r#"{"mode": "global", "global": {"cluster": "rl", "domain": "d", "failureMode": "deny"}, "budgets": [BUDGET]}"#;
    for (budget, want) in [
        (r#"{"name": "a", "tokens": 10, "window": "2m"}"#, "budgets[0].window: `2m`: global mode needs a window"),
        (r#"{"name": "a", "tokens": 4294967296, "window": "1m"}"#, "budgets[0].tokens: global mode allows 1 to 4294967295"),
        (r#"{"name": "a b", "tokens": 10, "window": "1m"}"#, "budgets[0].name"),
        (r#"{"name": "a", "tokens": 10, "window": "1m", "key": ["user"]}"#, "budgets[0].key[0]: `user` is not"),
    ] {
        let err = service_config(&base.replace("BUDGET", budget)).unwrap_err().to_string();
        assert!(err.contains(want), "{budget}: {err}");
    }
}

/// A wasm plugin's configuration in a bootstrap, as JSON.
fn token_budget_config(b: &Bootstrap) -> Value {
    let (_, config, _) = b.wasm_plugins().into_iter().find(|(name, _, _)| name == "token-budget").unwrap();
    serde_json::from_str(&config).unwrap()
}

#[test]
fn the_local_global_bootstrap_is_current() {
    let out = Command::new(paths::python()).arg(paths::root().join("scripts/local-global-bootstrap.py")).arg("--check").output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_local_global_bootstrap_is_the_local_gateway_in_global_mode() {
    let local = Bootstrap::load("envoy-config/local/envoy.yaml").unwrap();
    let mut global = Bootstrap::load("envoy-config/local/envoy-global.yaml").unwrap();
    // The differences, one by one: the filter's mode...
    let mut config = token_budget_config(&global);
    assert_eq!(config["global"]["cluster"], "ratelimit");
    let obj = config.as_object_mut().unwrap();
    obj.remove("mode");
    obj.remove("global");
    assert_eq!(config, token_budget_config(&local), "the same budgets as envoy.yaml");
    // ...and the service's cluster.
    let clusters = global.json_mut()["static_resources"]["clusters"].as_array_mut().unwrap();
    let at = clusters.iter().position(|c| c["name"] == "ratelimit").expect("a ratelimit cluster");
    let rl = clusters.remove(at);
    assert!(rl["typed_extension_protocol_options"].to_string().contains("http2_protocol_options"), "gRPC needs HTTP/2");
    // Everything else is envoy.yaml's.
    let strip = |v: &mut Value| {
        let mut plugins = Vec::new();
        let mut stack = vec![v];
        while let Some(node) = stack.pop() {
            match node {
                Value::Object(map) => {
                    if map.get("@type").and_then(Value::as_str) == Some("type.googleapis.com/google.protobuf.StringValue") {
                        if let Some(Value::String(s)) = map.get_mut("value") {
                            plugins.push(std::mem::take(s));
                        }
                    }
                    stack.extend(map.values_mut());
                }
                Value::Array(items) => stack.extend(items.iter_mut()),
                _ => {}
            }
        }
        plugins.sort();
        plugins
    };
    let mut local_json = local.json().clone();
    let mut global_json = global.json().clone();
    let (lp, gp) = (strip(&mut local_json), strip(&mut global_json));
    assert_eq!(lp.len(), gp.len());
    assert_eq!(global_json, local_json, "envoy-global.yaml differs from envoy.yaml beyond global mode");
    let differing = lp.iter().filter(|p| !gp.contains(p)).count();
    assert_eq!(differing, 1, "only token-budget's configuration differs");
}
