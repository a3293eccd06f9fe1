//! The Kubernetes manifests: valid against the real schemas of the pinned versions, every
//! filter `config` in them accepted by its filter, and every wasm pin (sha256, image digest)
//! equal to what this build produces.

use integration::host::{Plugin, Shared, Vm};
use integration::paths;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// Where the CRD schemas come from: the upstream projects' Go modules at the versions the
/// manifests pin (Envoy Gateway v1.9.1 carries Gateway API v1.6.1).
const SCHEMA_SOURCES: &[(&str, &str)] = &[
    ("github.com/envoyproxy/gateway@v1.9.1", "charts/gateway-helm/charts/crds/crds/generated"),
    ("sigs.k8s.io/gateway-api@v1.6.1", "config/crd/experimental"),
    ("github.com/kedacore/keda/v2@v2.21.0", "config/crd/bases"),
    ("github.com/cert-manager/cert-manager@v1.21.2", "deploy/crds"),
    ("github.com/prometheus-operator/prometheus-operator@v0.85.0", "example/prometheus-operator-crd"),
];

/// The Kubernetes version the built-in kinds are checked against.
const KUBERNETES: &str = "1.34.0";

/// `go mod download` (a no-op when cached) and the module's directory.
fn module_dir(module: &str) -> PathBuf {
    let out = Command::new("go")
        .args(["mod", "download", "-json", module])
        .current_dir(std::env::temp_dir())
        .env("GOFLAGS", "-mod=mod")
        .output()
        .unwrap_or_else(|e| panic!("go mod download {module}: {e}"));
    let info: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("go mod download {module}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    PathBuf::from(info["Dir"].as_str().unwrap_or_else(|| panic!("go mod download {module}: {info}")))
}

fn manifest_paths() -> Vec<PathBuf> {
    let root = paths::root();
    let mut out = vec![root.join("envoy-config/kubernetes/suite"), root.join("envoy-config/kubernetes/controllers/envoy-gateway-config.yaml")];
    for optional in ["envoy-config/kubernetes/observability", "envoy-config/standalone"] {
        if root.join(optional).exists() {
            out.push(root.join(optional));
        }
    }
    out
}

/// `kustomize build` of a layout, written to a file for the validator.
fn kustomize_build(layout: &str) -> PathBuf {
    let kustomize = paths::root().join(".tools/bin/kustomize");
    assert!(kustomize.exists(), "{} is missing: run scripts/setup.sh", kustomize.display());
    let out = Command::new(&kustomize).arg("build").arg(paths::root().join(layout)).output().unwrap();
    assert!(out.status.success(), "kustomize build {layout}:\n{}", String::from_utf8_lossy(&out.stderr));
    let dir = integration::envoy::tempdir("kustomize").unwrap();
    let file = dir.join(format!("{}.yaml", layout.replace('/', "_")));
    std::fs::write(&file, out.stdout).unwrap();
    file
}

#[test]
fn manifests_validate_against_the_pinned_schemas() {
    let mut cmd = Command::new(paths::python());
    cmd.arg(paths::root().join("integration/tools/validate_manifests.py")).arg("--k8s-version").arg(KUBERNETES);
    // Envoy Gateway's own configuration file is not a Kubernetes resource and has no schema;
    // the standalone test loads it into envoy-gateway itself.
    cmd.arg("--unschematized").arg("gateway.envoyproxy.io/v1alpha1/EnvoyGateway");
    for (module, dir) in SCHEMA_SOURCES {
        let path = module_dir(module).join(dir);
        assert!(path.is_dir(), "{module} has no {dir}");
        cmd.arg("--crds").arg(path);
    }
    cmd.args(manifest_paths());
    // What a user applies: the kustomize output of the suite, of the OCI-image overlay and of
    // the monitoring set (the controllers' layout pulls release URLs and cannot be built offline).
    cmd.arg(kustomize_build("envoy-config/kubernetes/suite"));
    cmd.arg(kustomize_build("envoy-config/kubernetes/overlays/oci-images"));
    cmd.arg(kustomize_build("envoy-config/kubernetes/observability"));
    let out = cmd.output().expect("run validate_manifests.py");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{report}");
    assert!(report.contains("; 0 problems"), "{report}");
}

/// Every `wasm[].config` of every EnvoyExtensionPolicy, with the filter it configures.
fn extension_policy_configs() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for dir in manifest_paths() {
        let files: Vec<PathBuf> = if dir.is_dir() {
            std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "yaml")).collect()
        } else {
            vec![dir]
        };
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let Ok(v) = Value::deserialize(doc) else { continue };
                if v["kind"] != "EnvoyExtensionPolicy" {
                    continue;
                }
                for w in v["spec"]["wasm"].as_array().cloned().unwrap_or_default() {
                    let name = w["name"].as_str().unwrap_or_default().to_string();
                    let where_ = format!("{} {}/{name}", file.display(), v["metadata"]["name"]);
                    out.push((where_, name.replace('-', "_"), w["config"].to_string()));
                }
            }
        }
    }
    out
}

use serde::Deserialize;

#[test]
fn every_extension_policy_config_loads_in_its_filter() {
    let configs = extension_policy_configs();
    assert!(!configs.is_empty());
    for (where_, artifact, config) in configs {
        let shared = Shared::new();
        if let Err(e) = Vm::builder(&Plugin::filter(&artifact), &shared).config(&config).try_start() {
            panic!("{where_}: {e}");
        }
    }
}

/// Runs scripts/package.py on this build's modules, writing into `dist`.
fn package(dist: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new("python3")
        .arg(paths::root().join("scripts/package.py"))
        .args(extra)
        .arg("--wasm-dir")
        .arg(paths::target_dir().join("wasm32-wasip1/release"))
        .arg("--dist")
        .arg(dist)
        .output()
        .unwrap()
}

#[test]
fn wasm_pins_match_this_build() {
    let dist = integration::envoy::tempdir("package").unwrap();
    let out = package(&dist, &["--check-manifests"]);
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "run `scripts/package.sh --update-manifests` after changing a filter:\n{report}");
    let _ = std::fs::remove_dir_all(dist);
}

#[test]
fn oci_layout_holds_the_module_as_envoy_gateway_expects() {
    // The "compat" Wasm image: index -> one manifest -> one tar+gzip layer with plugin.wasm.
    let dist = integration::envoy::tempdir("oci").unwrap();
    let status = package(&dist, &[]);
    assert!(status.status.success());
    let layout = dist.join("oci/ab-variant");
    let blob = |digest: &str| std::fs::read(layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))).unwrap();
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_desc = &index["manifests"][0];
    let manifest_bytes = blob(manifest_desc["digest"].as_str().unwrap());
    assert_eq!(manifest_desc["size"], manifest_bytes.len());
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    let layer = blob(layers[0]["digest"].as_str().unwrap());
    // Unpack with the system tools, as an independent check of the tar.gz.
    let unpack = dist.join("unpacked");
    std::fs::create_dir_all(&unpack).unwrap();
    std::fs::write(dist.join("layer.tgz"), &layer).unwrap();
    let tar = Command::new("tar").arg("xzf").arg(dist.join("layer.tgz")).arg("-C").arg(&unpack).status().unwrap();
    assert!(tar.success());
    let module = std::fs::read(unpack.join("plugin.wasm")).unwrap();
    assert_eq!(module, std::fs::read(paths::wasm("ab_variant")).unwrap());
    let _ = std::fs::remove_dir_all(dist);
}
