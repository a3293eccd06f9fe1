//! Every shipped config runs each filter with the failure policy the README's "Failure policy"
//! table gives it: Envoy bootstraps (`failure_policy`, or the deprecated `fail_open`), Envoy
//! Gateway EnvoyExtensionPolicies (`failOpen`) and wasm filters added by EnvoyPatchPolicies.
//! What Envoy does under each policy is tested in fail_policy.rs.

use integration::paths;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const FILTERS: [&str; 4] = ["ab-variant", "jwt-claims", "token-budget", "provider-fallback"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// A VM failure lets requests through without the filter (FAIL_OPEN, `failOpen: true`).
    Open,
    /// A VM failure refuses requests (FAIL_CLOSED, FAIL_RELOAD; `failOpen: false`).
    Closed,
}

/// The README's table: `| **filter** | open/closed | ... |` rows under "## Failure policy".
fn table() -> BTreeMap<String, Policy> {
    let readme = std::fs::read_to_string(paths::root().join("README.md")).unwrap();
    let section = readme.split("\n## Failure policy").nth(1).expect("README has a `## Failure policy` section");
    let section = section.split("\n## ").next().unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with('|')) {
        // The first word of each cell, without markup (`**provider-fallback** (both roles)`).
        let cells: Vec<String> = line.split('|').map(|c| c.split_whitespace().next().unwrap_or_default().trim_matches(['*', '`']).to_string()).collect();
        if cells.len() < 3 || !FILTERS.contains(&cells[1].as_str()) {
            continue;
        }
        let policy = match cells[2].as_str() {
            "open" => Policy::Open,
            "closed" => Policy::Closed,
            other => panic!("README failure-policy table: `{other}` for {} is neither open nor closed", cells[1]),
        };
        out.insert(cells[1].clone(), policy);
    }
    for f in FILTERS {
        assert!(out.contains_key(f), "the README's failure-policy table has no row for {f}");
    }
    out
}

/// The filter a module reference (file name, URL, image) is.
fn filter_of(reference: &str) -> Option<&'static str> {
    FILTERS.into_iter().find(|f| reference.contains(f) || reference.contains(&f.replace('-', "_")))
}

/// Where a wasm filter sits and what policy its config gives it.
#[derive(Debug)]
struct Found {
    file: PathBuf,
    what: String,
    filter: Option<&'static str>,
    policy: Result<Policy, String>,
}

/// An Envoy `PluginConfig` (the `config` of an `envoy.filters.http.wasm`).
fn plugin_policy(config: &Value) -> Result<Policy, String> {
    match (config.get("failure_policy").and_then(Value::as_str), config.get("fail_open").and_then(Value::as_bool)) {
        (Some("FAIL_OPEN"), _) => Ok(Policy::Open),
        (Some("FAIL_CLOSED" | "FAIL_RELOAD"), _) => Ok(Policy::Closed),
        (Some(other), _) => Err(format!("unknown failure_policy {other}")),
        (None, _) => Err("no failure_policy: say it (Envoy's default is FAIL_CLOSED, but a reader should not have to know)".into()),
    }
}

fn visit(file: &Path, node: &Value, found: &mut Vec<Found>) {
    match node {
        Value::Object(map) => {
            let is_wasm = map.get("@type").and_then(Value::as_str).is_some_and(|t| t.ends_with("envoy.extensions.filters.http.wasm.v3.Wasm"));
            if let (true, Some(config)) = (is_wasm, map.get("config")) {
                let code = config.pointer("/vm_config/code").map(Value::to_string).unwrap_or_default();
                found.push(Found {
                    file: file.to_path_buf(),
                    what: format!("wasm plugin {}", config["name"]),
                    filter: filter_of(&code),
                    policy: plugin_policy(config),
                });
            }
            if map.get("kind").and_then(Value::as_str) == Some("EnvoyExtensionPolicy") {
                for entry in node.pointer("/spec/wasm").and_then(Value::as_array).into_iter().flatten() {
                    let code = entry.get("code").map(Value::to_string).unwrap_or_default();
                    let policy = match entry.get("failOpen").and_then(Value::as_bool) {
                        Some(true) => Ok(Policy::Open),
                        Some(false) => Ok(Policy::Closed),
                        None => Err("no failOpen: say it (Envoy Gateway's default is false)".into()),
                    };
                    found.push(Found {
                        file: file.to_path_buf(),
                        what: format!("EnvoyExtensionPolicy {} wasm {}", node["metadata"]["name"], entry["name"]),
                        filter: filter_of(&code).or_else(|| entry["name"].as_str().and_then(filter_of)),
                        policy,
                    });
                }
            }
            for v in map.values() {
                visit(file, v, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| visit(file, v, found)),
        // Kustomize patches carry YAML inside a string.
        Value::String(s) if s.contains("envoy.extensions.filters.http.wasm.v3.Wasm") || s.contains("failOpen") => {
            if let Ok(inner @ (Value::Object(_) | Value::Array(_))) = serde_yaml::from_str::<Value>(s) {
                visit(file, &inner, found);
            }
        }
        _ => {}
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

fn shipped() -> Vec<Found> {
    let mut files = Vec::new();
    yaml_files(&paths::root().join("envoy-config"), &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            use serde::Deserialize;
            let Ok(value) = Value::deserialize(doc) else { continue };
            visit(&file, &value, &mut found);
        }
    }
    found
}

#[test]
fn every_shipped_config_runs_each_filter_with_its_documented_failure_policy() {
    let table = table();
    let found = shipped();
    let mut problems = Vec::new();
    for f in &found {
        let where_ = format!("{}: {}", f.file.strip_prefix(paths::root()).unwrap_or(&f.file).display(), f.what);
        let Some(filter) = f.filter else {
            problems.push(format!("{where_}: cannot tell which filter its module is"));
            continue;
        };
        match &f.policy {
            Err(e) => problems.push(format!("{where_} ({filter}): {e}")),
            Ok(p) if *p != table[filter] => problems.push(format!("{where_} ({filter}): {p:?}, the README says {:?}", table[filter])),
            Ok(_) => {}
        }
    }
    assert!(problems.is_empty(), "shipped configs that disagree with the README's failure-policy table:\n{}", problems.join("\n"));
    // The check must have seen the shipped configs it is about.
    assert!(found.iter().any(|f| f.file.ends_with("envoy-config/local/envoy.yaml")), "no wasm filter found in the local bootstrap");
    assert!(found.iter().any(|f| f.what.starts_with("EnvoyExtensionPolicy")), "no EnvoyExtensionPolicy found");
}

#[test]
fn the_checker_reads_every_form_a_policy_takes() {
    let doc = |y: &str| -> Vec<Found> {
        let mut found = Vec::new();
        visit(Path::new("x.yaml"), &serde_yaml::from_str(y).unwrap(), &mut found);
        found
    };
    let f = doc("typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm, config: {name: a, failure_policy: FAIL_RELOAD, vm_config: {code: {local: {filename: target/x/token_budget.wasm}}}}}");
    assert_eq!((f[0].filter, f[0].policy.clone()), (Some("token-budget"), Ok(Policy::Closed)));
    let f = doc("typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm, config: {name: a, vm_config: {code: {local: {filename: ab_variant.wasm}}}}}");
    assert!(f[0].policy.is_err(), "an unstated policy is reported");
    let f = doc("{kind: EnvoyExtensionPolicy, metadata: {name: p}, spec: {wasm: [{name: jwt, failOpen: true, code: {type: Image, image: {url: 'ghcr.io/x/jwt-claims:1'}}}]}}");
    assert_eq!((f[0].filter, f[0].policy.clone()), (Some("jwt-claims"), Ok(Policy::Open)));
    let f = doc("patch: \"- op: add\\n  path: /spec/wasm/-\\n  value: {kind: EnvoyExtensionPolicy, metadata: {name: q}, spec: {wasm: [{name: pf, failOpen: false, code: {http: {url: 'http://s/provider_fallback.wasm'}}}]}}\"");
    assert_eq!((f[0].filter, f[0].policy.clone()), (Some("provider-fallback"), Ok(Policy::Closed)));
}
