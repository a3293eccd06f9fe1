//! Every Envoy bootstrap in the repository validates with `envoy --mode validate`, and every
//! wasm plugin configuration in it is accepted by its filter in the wasmtime host, so a shipped
//! config can never drift from what the filter parses.

use integration::envoy::{validate, Bootstrap};
use integration::host::{Plugin, Shared, Vm};
use integration::paths;
use std::path::{Path, PathBuf};

/// YAML files under `dir` that are Envoy bootstraps (they have `static_resources`).
fn bootstraps(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(bootstraps(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().any(|l| l.starts_with("static_resources:")) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn all_bootstraps() -> Vec<PathBuf> {
    let root = paths::root();
    let mut all = bootstraps(&root.join("envoy-config"));
    all.extend(bootstraps(&root.join("integration/envoy")));
    assert!(all.iter().any(|p| p.ends_with("envoy-config/local/envoy.yaml")), "{all:?}");
    all
}

#[test]
fn every_bootstrap_validates_in_envoy() {
    let failures: Vec<String> = all_bootstraps().iter().filter_map(|p| validate(p).err().map(|e| format!("{e:#}"))).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_wasm_plugin_config_loads_in_its_filter() {
    let mut checked = 0;
    for path in all_bootstraps() {
        let bootstrap = Bootstrap::load(&path).unwrap();
        for (name, config, file) in bootstrap.wasm_plugins() {
            let plugin = Plugin::load(paths::artifact_path(&file)).unwrap_or_else(|e| panic!("{}: {name}: {e:#}", path.display()));
            let shared = Shared::new();
            // Variables Envoy would copy from its environment get a stand-in value.
            let (host_keys, pairs) = bootstrap.wasm_plugin_env(&name);
            let mut vm = Vm::builder(&plugin, &shared).config(&config);
            for key in &host_keys {
                vm = vm.env(key, &format!("stand-in-for-{key}"));
            }
            for (key, value) in &pairs {
                vm = vm.env(key, value);
            }
            if let Err(e) = vm.try_start() {
                panic!("{}: plugin {name} rejects its configuration: {e}", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 2, "only {checked} plugin configs found");
}
