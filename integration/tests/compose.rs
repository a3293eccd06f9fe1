//! envoy-config/docker-compose.yaml cannot be started here (no Docker engine), so it is checked
//! statically: it parses, every mounted path exists, it runs the same bootstrap and Envoy
//! version as the local gateway, and its mock upstreams are exactly the addresses the
//! bootstrap's clusters point at.

use integration::envoy::Bootstrap;
use integration::paths;
use serde_json::Value;
use std::collections::BTreeSet;

fn compose() -> Value {
    let text = std::fs::read_to_string(paths::root().join("envoy-config/docker-compose.yaml")).unwrap();
    serde_yaml::from_str(&text).expect("docker-compose.yaml parses")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// `host:port` of every endpoint of every cluster in the local bootstrap.
fn cluster_addresses() -> BTreeSet<String> {
    let b = Bootstrap::load("envoy-config/local/envoy.yaml").unwrap();
    let mut out = BTreeSet::new();
    for c in b.json()["static_resources"]["clusters"].as_array().unwrap() {
        for locality in c["load_assignment"]["endpoints"].as_array().cloned().unwrap_or_default() {
            for e in locality["lb_endpoints"].as_array().cloned().unwrap_or_default() {
                let a = &e["endpoint"]["address"]["socket_address"];
                out.insert(format!("{}:{}", a["address"].as_str().unwrap(), a["port_value"]));
            }
        }
    }
    out
}

/// The demo issuer's keys the JWKS mock serves (scripts/mint-demo-token.sh), minted if missing.
fn ensure_demo_keys() {
    if !paths::root().join("target/demo-jwt/jwks.json").exists() {
        let status = std::process::Command::new("bash").arg(paths::root().join("scripts/mint-demo-token.sh")).output().unwrap();
        assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    }
}

#[test]
fn compose_mounts_exist_and_run_the_local_bootstrap() {
    ensure_demo_keys();
    let c = compose();
    let dir = paths::root().join("envoy-config");
    let envoy = &c["services"]["envoy"];
    let version = integration::envoy::version();
    assert_eq!(envoy["image"], format!("envoyproxy/envoy:v{version}"), "the image must be the tested Envoy version");
    let workdir = envoy["working_dir"].as_str().unwrap();
    let mut mounted = Vec::new();
    for volume in strings(&envoy["volumes"]) {
        let parts: Vec<&str> = volume.split(':').collect();
        let source = dir.join(parts[0]);
        assert!(source.exists(), "{volume}: {} does not exist (run scripts/build.sh for target/)", source.display());
        mounted.push((source, parts[1].to_string()));
    }
    let cmd = strings(&envoy["command"]);
    let config = cmd.iter().position(|a| a == "-c").map(|i| cmd[i + 1].clone()).expect("envoy -c");
    let in_container = format!("{workdir}/{config}");
    let (source, _) = mounted.iter().find(|(_, dst)| *dst == in_container).unwrap_or_else(|| panic!("{in_container} is not mounted"));
    assert_eq!(source.canonicalize().unwrap(), paths::root().join("envoy-config/local/envoy.yaml").canonicalize().unwrap());
    // The bootstrap's wasm paths are relative to the working directory; the module directory is mounted there.
    for (_, _, file) in Bootstrap::load("envoy-config/local/envoy.yaml").unwrap().wasm_plugins() {
        let dir_in_container = format!("{workdir}/{}", file.rsplit_once('/').unwrap().0);
        assert!(mounted.iter().any(|(_, dst)| *dst == dir_in_container), "{file}: {dir_in_container} not mounted");
    }
    for (name, service) in c["services"].as_object().unwrap() {
        assert_eq!(service["network_mode"], "host", "{name}: the bootstrap's 127.0.0.1 addresses need the host network");
        for volume in strings(&service["volumes"]) {
            let source = dir.join(volume.split(':').next().unwrap());
            assert!(source.exists(), "{name}: {volume}: {} does not exist", source.display());
        }
    }
    // Files the mocks serve are named relative to their working directory, which must be mounted.
    let mocks = &c["services"]["mocks"];
    let mock_workdir = mocks["working_dir"].as_str().unwrap();
    for spec in strings(&mocks["command"]).iter().filter(|s| s.starts_with("jwks:")) {
        let file = spec.trim_start_matches("jwks:").split('@').next().unwrap();
        let dir_in_container = format!("{mock_workdir}/{}", file.rsplit_once('/').unwrap().0);
        assert!(strings(&mocks["volumes"]).iter().any(|v| v.split(':').nth(1) == Some(dir_in_container.as_str())), "{spec}: not mounted");
    }
    let dockerfile = &c["services"]["mocks"]["build"];
    assert!(dir.join(dockerfile["context"].as_str().unwrap()).join(dockerfile["dockerfile"].as_str().unwrap()).exists());
}

#[test]
fn compose_mocks_are_the_bootstraps_upstreams() {
    let c = compose();
    let from_compose = strings(&c["services"]["mocks"]["command"]);
    let args = std::fs::read_to_string(paths::root().join("envoy-config/local/mocks.args")).unwrap();
    let from_run_local: Vec<String> = args.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).map(str::to_string).collect();
    assert_eq!(from_compose, from_run_local, "docker-compose.yaml and local/mocks.args disagree");
    let served: BTreeSet<String> = from_compose.iter().map(|s| s.rsplit_once('@').unwrap().1.to_string()).collect();
    assert_eq!(served, cluster_addresses(), "mock addresses vs bootstrap cluster endpoints");
    let b = Bootstrap::load("envoy-config/local/envoy.yaml").unwrap();
    let admin = &b.json()["admin"]["address"]["socket_address"];
    assert_eq!(admin["address"], "127.0.0.1", "admin must stay on loopback");
    for l in b.json()["static_resources"]["listeners"].as_array().unwrap() {
        assert_eq!(l["address"]["socket_address"]["address"], "127.0.0.1");
        assert!(!served.contains(&format!("127.0.0.1:{}", l["address"]["socket_address"]["port_value"])), "a mock on a listener port");
    }
}
