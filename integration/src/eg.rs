//! Envoy Gateway in standalone mode for end-to-end tests: the real control plane, without
//! Kubernetes, reading Gateway API resources from files and running Envoy as a host process.
//!
//! [`Standalone::load`] reads `envoy-config/standalone/` (Envoy Gateway's config file and the
//! resources under `resources/`), and [`Standalone::start`] renders them into a run directory:
//!
//! - a local HTTP server stands in for the in-cluster wasm-server
//!   (envoy-config/kubernetes/suite/wasm-server.yaml): at the paths the manifests name, it serves
//!   the built artifact named by the file name (`.../ab_variant.wasm` ->
//!   `target/wasm32-wasip1/release/ab_variant.wasm`) and the JWKS the test gives
//!   ([`Standalone::jwks`]) at `/.well-known/jwks.json`;
//! - every `EnvoyExtensionPolicy` wasm entry with an HTTP code source gets that server's URL and
//!   the built file's sha256, so adding a filter is adding a policy file;
//! - in `EnvoyPatchPolicy` patches, a cluster whose endpoint is the in-cluster wasm-server
//!   ([`IN_CLUSTER_WASM_SERVER`]) is pointed at that server, and remote wasm code gets the
//!   built file's sha256;
//! - `Backend` endpoints are pointed at the test's upstreams ([`Standalone::backend`]): IP
//!   endpoints at 127.0.0.1, FQDN endpoints at `localhost`;
//! - a TLS Secret a Gateway listener names that the resources lack (cert-manager issues it in
//!   Kubernetes) is rendered from a fresh self-signed certificate for the listener's hostname;
//! - `${EG_CONFIG_HOME}` in any string becomes the host infrastructure's configHome;
//! - [`Standalone::env`] sets environment variables of Envoy Gateway, which func-e passes on to
//!   Envoy (a host-mode EnvoyProxy has no env field): the provider keys the upstream role reads;
//! - the `envoy` Secret (Envoy's client certificate for the control plane's wasm cache) is
//!   written from `envoy-gateway certgen --local` output. v1.9.1's file provider seeds its own
//!   `envoy` Secret from a CA made in memory at start, which the wasm cache (serving with the
//!   certgen CA from `<configHome>/certs/envoy-gateway`) rejects: "x509: certificate signed by
//!   unknown authority". The Secret in the watched directory replaces the seeded one;
//! - the PyPI Envoy is linked where func-e looks for the `envoyVersion` of each `EnvoyProxy`
//!   (`<dataHome>/envoy-versions/<version>/bin/envoy`), so nothing is downloaded.
//!
//! The release is pinned in scripts/setup.sh (v1.9.1). Envoy Gateway binds fixed ports on every
//! interface (xDS 18000, wasm cache 18002, health 8081, metrics 19001; hard-coded in v1.9.1;
//! admin 19000 on 127.0.0.1), and Envoy binds the Gateway's listener ports and a readiness
//! listener (19003) on 0.0.0.0. So the tests run it inside private network and PID namespaces
//! ([`inside_private_network`]): nothing is reachable from outside the namespace, runs never
//! collide on ports, and every process left in it dies with the namespace.

use crate::mock::{self, MockResponse, MockServer};
use crate::{client, envoy, paths};
use anyhow::{anyhow, bail, Context as _, Result};
use serde::Deserialize as _;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The namespace Envoy Gateway runs in (`ENVOY_GATEWAY_NAMESPACE`, default); resources without a
/// namespace land here, and the `envoy` Secret must be here.
pub const CONTROLLER_NAMESPACE: &str = "envoy-gateway-system";
/// How long the control plane may take to start Envoy with the translated configuration.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// The in-cluster wasm-server's Service (envoy-config/kubernetes/suite/wasm-server.yaml), which the
/// harness's local server replaces.
pub const IN_CLUSTER_WASM_SERVER: &str = "wasm-server.llm-gateway.svc.cluster.local";
/// How long a test run inside the namespaces may take in all.
const ISOLATED_TIMEOUT: Duration = Duration::from_secs(300);
const INSIDE_MARKER: &str = "LLM_FILTERS_PRIVATE_NETWORK";

/// The `envoy-gateway` binary: `EG_BIN`, else `.tools/bin/envoy-gateway`.
pub fn bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("EG_BIN") {
        return PathBuf::from(bin);
    }
    let bin = paths::root().join(".tools/bin/envoy-gateway");
    if !bin.exists() {
        panic!(
            "{} is missing: run scripts/setup.sh (go install of the pinned Envoy Gateway; minutes on a cold Go cache) or set EG_BIN",
            bin.display()
        );
    }
    bin
}

/// Runs the test named `test` (its libtest name) again, inside fresh network and PID namespaces
/// whose only interface is loopback. In the test process this returns `false` after the run
/// inside passed, and panics with its output if it failed, did not run the test, or took longer
/// than five minutes (it is then killed, by PID, and the namespace with it). Inside, it returns
/// `true`: the caller runs the test body.
pub fn inside_private_network(test: &str) -> bool {
    if std::env::var_os(INSIDE_MARKER).is_some() {
        return true;
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    // --kill-child: the namespace's first process dies with unshare; when it dies, the kernel
    // kills everything else in the PID namespace (Envoy Gateway, Envoy).
    let mut child = Command::new("unshare")
        .args(["--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--", "sh", "-c"])
        .arg(r#"PATH="$PATH:/usr/sbin:/sbin" ip link set lo up && exec "$0" "$@""#)
        .arg(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE_MARKER, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting unshare (util-linux) for a private network: {e}"));
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + ISOLATED_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    // `--exact` selects at most this one test; "1 passed" says it ran and passed.
    let ran = stdout.contains("test result: ok. 1 passed;");
    match status {
        Some(s) if s.success() && ran => {
            eprintln!("{stdout}{stderr}");
            false
        }
        Some(s) => panic!("{test} inside a private network: {s}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"),
        None => panic!(
            "{test} inside a private network: killed after {ISOLATED_TIMEOUT:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        ),
    }
}

fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    })
}

/// One resource file: its name and its YAML documents.
struct ResourceFile {
    name: String,
    docs: Vec<Value>,
}

/// Envoy Gateway's configuration and resources, being prepared for a run.
pub struct Standalone {
    config: Value,
    files: Vec<ResourceFile>,
    env: Vec<(String, String)>,
    jwks: Option<String>,
}

impl Standalone {
    /// Loads `<dir>/envoy-gateway.yaml` and every `<dir>/resources/*.yaml` (relative paths are
    /// taken from the repository root).
    pub fn load(dir: impl AsRef<Path>) -> Result<Standalone> {
        let dir = paths::root().join(dir.as_ref());
        let config_path = dir.join("envoy-gateway.yaml");
        let text = std::fs::read_to_string(&config_path).with_context(|| format!("reading {}", config_path.display()))?;
        let config: Value = serde_yaml::from_str(&text).with_context(|| format!("parsing {}", config_path.display()))?;
        let files = yaml_files(&dir.join("resources"))?
            .into_iter()
            .map(|(path, docs)| ResourceFile {
                name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                docs,
            })
            .collect();
        Ok(Standalone { config, files, env: Vec::new(), jwks: None })
    }

    /// Every resource document, as rendered so far.
    pub fn resources(&self) -> Vec<Value> {
        self.docs().cloned().collect()
    }

    fn docs(&self) -> impl Iterator<Item = &Value> {
        self.files.iter().flat_map(|f| f.docs.iter())
    }

    fn docs_mut(&mut self) -> impl Iterator<Item = &mut Value> {
        self.files.iter_mut().flat_map(|f| f.docs.iter_mut())
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.docs().filter(move |d| d["kind"] == kind)
    }

    /// Points every endpoint of the `Backend` named `name` at this host's `port`: IP endpoints
    /// at 127.0.0.1, FQDN endpoints at `localhost`.
    pub fn backend(mut self, name: &str, port: u16) -> Result<Standalone> {
        let mut found = false;
        for doc in self.docs_mut().filter(|d| d["kind"] == "Backend" && d["metadata"]["name"] == name) {
            for e in doc.pointer_mut("/spec/endpoints").and_then(Value::as_array_mut).into_iter().flatten() {
                if e.get("ip").is_some() {
                    e["ip"] = json!({"address": "127.0.0.1", "port": port});
                    found = true;
                } else if e.get("fqdn").is_some() {
                    e["fqdn"] = json!({"hostname": "localhost", "port": port});
                    found = true;
                }
            }
        }
        if !found {
            bail!("no Backend {name} with an ip or fqdn endpoint in envoy-config/standalone/resources");
        }
        Ok(self)
    }

    /// Changes the resource of this kind and name (say, to render it as in Kubernetes).
    pub fn edit(mut self, kind: &str, name: &str, change: impl FnOnce(&mut Value)) -> Result<Standalone> {
        let doc = self
            .docs_mut()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .ok_or_else(|| anyhow!("no {kind} {name} in envoy-config/standalone/resources"))?;
        change(doc);
        Ok(self)
    }

    /// Leaves out the resource of this kind and name.
    pub fn without(mut self, kind: &str, name: &str) -> Result<Standalone> {
        let before = self.docs().count();
        for file in &mut self.files {
            file.docs.retain(|d| !(d["kind"] == kind && d["metadata"]["name"] == name));
        }
        if self.docs().count() == before {
            bail!("no {kind} {name} in envoy-config/standalone/resources");
        }
        Ok(self)
    }

    /// Sets an environment variable of Envoy Gateway and so of the Envoy it starts.
    pub fn env(mut self, name: &str, value: &str) -> Standalone {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Points the clusters that EnvoyPatchPolicies add for an in-cluster Service (its
    /// `<name>.<namespace>.svc.cluster.local` address) at 127.0.0.1:`port`, e.g. the rate limit
    /// service token-budget's global mode calls.
    pub fn patched_cluster(mut self, cluster: &str, port: u16) -> Result<Standalone> {
        let mut found = false;
        for policy in self.docs_mut().filter(|d| d["kind"] == "EnvoyPatchPolicy") {
            for patch in policy["spec"]["jsonPatches"].as_array_mut().into_iter().flatten() {
                let value = &mut patch["operation"]["value"];
                if value["name"] != cluster {
                    continue;
                }
                for locality in value["load_assignment"]["endpoints"].as_array_mut().into_iter().flatten() {
                    for endpoint in locality["lb_endpoints"].as_array_mut().into_iter().flatten() {
                        endpoint["endpoint"]["address"]["socket_address"] = json!({"address": "127.0.0.1", "port_value": port});
                        found = true;
                    }
                }
            }
        }
        if !found {
            bail!("no EnvoyPatchPolicy adds a cluster {cluster}");
        }
        Ok(self)
    }

    /// A wasm `config` of an EnvoyExtensionPolicy entry, as JSON text.
    pub fn wasm_config(&self, policy: &str, entry: &str) -> Option<String> {
        self.of_kind("EnvoyExtensionPolicy")
            .filter(|p| p["metadata"]["name"] == policy)
            .flat_map(|p| p["spec"]["wasm"].as_array().cloned().unwrap_or_default())
            .find(|w| w["name"] == entry)
            .map(|w| w["config"].to_string())
    }

    /// The JWKS document the local wasm-server serves at `/.well-known/jwks.json`, as the
    /// in-cluster one serves the demo issuer's.
    pub fn jwks(mut self, document: &str) -> Standalone {
        self.jwks = Some(document.to_string());
        self
    }

    /// The wasm modules the resources fetch by URL (EnvoyExtensionPolicy HTTP code, remote code in
    /// EnvoyPatchPolicy patches): each URL's path, with the artifact its file name names.
    fn wasm_urls(&self) -> Result<Vec<(String, String)>> {
        let mut urls = Vec::new();
        for policy in self.of_kind("EnvoyExtensionPolicy") {
            for entry in policy["spec"]["wasm"].as_array().into_iter().flatten() {
                if entry["code"]["type"] == "HTTP" {
                    urls.push(entry["code"]["http"]["url"].clone());
                }
            }
        }
        for policy in self.of_kind("EnvoyPatchPolicy") {
            for_each_remote_code(&mut policy["spec"]["jsonPatches"].clone(), &mut |remote| urls.push(remote["http_uri"]["uri"].clone()));
        }
        let mut out = Vec::new();
        for url in urls {
            let entry = (url_path(&url)?, artifact_of(&url)?);
            if !out.contains(&entry) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// The ports of the Gateways' listeners, by listener name.
    fn listener_ports(&self) -> HashMap<String, u16> {
        let mut ports = HashMap::new();
        for gateway in self.of_kind("Gateway") {
            for l in gateway["spec"]["listeners"].as_array().into_iter().flatten() {
                if let (Some(name), Some(port)) = (l["name"].as_str(), l["port"].as_u64()) {
                    ports.insert(name.to_string(), port as u16);
                }
            }
        }
        ports
    }

    /// Renders everything into a run directory, starts `envoy-gateway server` and waits until
    /// the Envoy it starts serves every Gateway listener.
    pub fn start(mut self) -> Result<EnvoyGateway> {
        let dir = run_dir()?;
        let config_home = dir.join("config");
        let data_home = dir.join("data");
        let state_home = dir.join("state");
        let runtime_dir = dir.join("runtime");
        let resources_dir = dir.join("resources");
        let home = dir.join("home");
        for d in [&config_home, &data_home, &state_home, &runtime_dir, &resources_dir, &home] {
            std::fs::create_dir_all(d)?;
        }

        run(Command::new(bin()).arg("certgen").arg("--local").arg("--config-home").arg(&config_home))?;
        let certs = config_home.join("certs/envoy");

        self.link_envoy(&data_home)?;

        // The local wasm-server: the modules (Envoy Gateway fetches the policies' ones, checks
        // their sha256 and serves them to Envoy from its own wasm cache; Envoy fetches the
        // patches' remote code itself) and the JWKS.
        let mut files: HashMap<String, (&'static str, Vec<u8>)> = HashMap::new();
        let mut digests: HashMap<String, String> = HashMap::new();
        for (url_path, artifact) in self.wasm_urls()? {
            let path = paths::wasm(&artifact);
            files.insert(url_path, ("application/wasm", std::fs::read(&path)?));
            digests.insert(artifact, sha256(&path)?);
        }
        if let Some(jwks) = &self.jwks {
            files.insert(mock::jwks::JWKS_PATH.to_string(), ("application/json", jwks.clone().into_bytes()));
        }
        let wasm_server = mock::serve("wasm-server", move |r| match files.get(r.path.split('?').next().unwrap_or_default()) {
            Some((content_type, bytes)) => MockResponse::Full {
                status: 200,
                headers: vec![("content-type".into(), content_type.to_string())],
                body: bytes.clone(),
            },
            None => MockResponse::text(404, "not found"),
        });
        let base = format!("http://127.0.0.1:{}", wasm_server.port());
        for policy in self.docs_mut().filter(|d| d["kind"] == "EnvoyExtensionPolicy") {
            if let Some(Value::Array(entries)) = policy.pointer_mut("/spec/wasm") {
                for entry in entries.iter_mut().filter(|e| e["code"]["type"] == "HTTP") {
                    let url = &entry["code"]["http"]["url"];
                    let (path, artifact) = (url_path(url)?, artifact_of(url)?);
                    entry["code"]["http"]["url"] = json!(format!("{base}{path}"));
                    entry["code"]["http"]["sha256"] = json!(digests[&artifact]);
                }
            }
        }
        let wasm_port = wasm_server.port();
        for policy in self.docs_mut().filter(|d| d["kind"] == "EnvoyPatchPolicy") {
            let patches = &mut policy["spec"]["jsonPatches"];
            let mut failed = None;
            for_each_remote_code(patches, &mut |remote| match artifact_of(&remote["http_uri"]["uri"]) {
                Ok(artifact) => remote["sha256"] = json!(digests[&artifact]),
                Err(e) => failed = Some(e),
            });
            if let Some(e) = failed {
                return Err(e);
            }
            for patch in patches.as_array_mut().into_iter().flatten() {
                point_at_local_wasm_server(&mut patch["operation"]["value"], wasm_port);
            }
        }

        let home_text = config_home.to_string_lossy().into_owned();
        for doc in self.docs_mut() {
            substitute(doc, "${EG_CONFIG_HOME}", &home_text);
        }
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "envoy", "namespace": CONTROLLER_NAMESPACE},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": base64_file(&certs.join("tls.crt"))?, "tls.key": base64_file(&certs.join("tls.key"))?},
        });
        self.files.push(ResourceFile { name: "envoy-secret.yaml".into(), docs: vec![secret] });
        let listener_secrets = self.listener_tls_secrets(&dir)?;
        if !listener_secrets.is_empty() {
            self.files.push(ResourceFile { name: "listener-certificates.yaml".into(), docs: listener_secrets });
        }
        for file in &self.files {
            let mut text = String::new();
            for doc in &file.docs {
                text.push_str("---\n");
                text.push_str(&serde_yaml::to_string(doc)?);
            }
            std::fs::write(resources_dir.join(&file.name), text)?;
        }

        self.config["provider"]["custom"]["resource"]["file"]["paths"] = json!([resources_dir]);
        self.config["provider"]["custom"]["infrastructure"]["host"] = json!({
            "configHome": config_home, "dataHome": data_home, "stateHome": state_home, "runtimeDir": runtime_dir,
        });
        let config_path = dir.join("envoy-gateway.yaml");
        std::fs::write(&config_path, serde_yaml::to_string(&self.config)?)?;

        let log_path = dir.join("envoy-gateway.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(bin())
            .arg("server")
            .arg("--config-path")
            .arg(&config_path)
            .current_dir(&dir)
            // The wasm cache lives in $HOME/.eg/wasm.
            .env("HOME", &home)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin().display()))?;
        let mut eg = EnvoyGateway {
            child: Some(child),
            envoy_pids: Vec::new(),
            admin: String::new(),
            listeners: self.listener_ports(),
            wasm_server,
            dir,
            runtime_dir,
            state_home,
            log_path,
        };
        if let Err(e) = eg.wait_ready() {
            bail!("{e:#}\n{}", eg.logs(80));
        }
        Ok(eg)
    }

    /// A self-signed certificate, as a `kubernetes.io/tls` Secret, for each TLS Secret that a
    /// Gateway listener names and the resources lack (cert-manager issues them in Kubernetes).
    fn listener_tls_secrets(&self, dir: &Path) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for gateway in self.of_kind("Gateway") {
            let namespace = gateway["metadata"]["namespace"].as_str().unwrap_or(CONTROLLER_NAMESPACE);
            for listener in gateway["spec"]["listeners"].as_array().into_iter().flatten() {
                for r in listener["tls"]["certificateRefs"].as_array().into_iter().flatten() {
                    let name = r["name"].as_str().unwrap_or_default();
                    let ns = r["namespace"].as_str().unwrap_or(namespace);
                    let exists = |d: &Value| d["kind"] == "Secret" && d["metadata"]["name"] == name && d["metadata"]["namespace"] == ns;
                    if self.docs().any(exists) || out.iter().any(exists) {
                        continue;
                    }
                    let hostname = listener["hostname"].as_str().unwrap_or("localhost");
                    let (crt, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
                    run(Command::new("openssl")
                        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
                        .args(["-subj", &format!("/CN={}", hostname.trim_start_matches("*."))])
                        .args(["-addext", &format!("subjectAltName=DNS:{hostname}")])
                        .arg("-keyout")
                        .arg(&key)
                        .arg("-out")
                        .arg(&crt))?;
                    out.push(json!({
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": name, "namespace": ns},
                        "type": "kubernetes.io/tls",
                        "data": {"tls.crt": base64_file(&crt)?, "tls.key": base64_file(&key)?},
                    }));
                }
            }
        }
        Ok(out)
    }

    /// Links the Envoy binary where func-e looks for each `EnvoyProxy`'s `envoyVersion`, after
    /// checking that the binary is that version.
    fn link_envoy(&self, data_home: &Path) -> Result<()> {
        let envoy_bin = paths::envoy_bin();
        let output = Command::new(&envoy_bin).arg("--version").output()?;
        let reported = String::from_utf8_lossy(&output.stdout).into_owned();
        for proxy in self.of_kind("EnvoyProxy") {
            let Some(version) = proxy["spec"]["provider"]["host"]["envoyVersion"].as_str() else {
                bail!("EnvoyProxy {}: set spec.provider.host.envoyVersion, or func-e downloads the default Envoy", proxy["metadata"]["name"]);
            };
            if !reported.contains(&format!("/{version}/")) {
                bail!("EnvoyProxy asks for Envoy {version}, but {} is {}", envoy_bin.display(), reported.trim());
            }
            let bin_dir = data_home.join("envoy-versions").join(version).join("bin");
            std::fs::create_dir_all(&bin_dir)?;
            let link = bin_dir.join("envoy");
            if !link.exists() {
                std::os::unix::fs::symlink(&envoy_bin, &link)?;
            }
        }
        Ok(())
    }
}

/// A fresh directory for one run. Not `envoy::tempdir`: inside a PID namespace every test
/// process is PID 1, and /tmp is shared with the other namespaces.
fn run_dir() -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("llm-filters-eg-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The YAML documents of every `*.yaml` in `dir` (not recursive), by file, in name order.
pub fn yaml_files(dir: &Path) -> Result<Vec<(PathBuf, Vec<Value>)>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for path in names {
        let text = std::fs::read_to_string(&path)?;
        let mut docs = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).with_context(|| format!("parsing {}", path.display()))?;
            if !value.is_null() {
                docs.push(value);
            }
        }
        out.push((path, docs));
    }
    Ok(out)
}

fn run(cmd: &mut Command) -> Result<()> {
    let output = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !output.status.success() {
        bail!("{cmd:?}: {}\n{}{}", output.status, String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

fn sha256(path: &Path) -> Result<String> {
    let output = Command::new("sha256sum").arg(path).output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let digest = text.split_whitespace().next().unwrap_or_default();
    if !output.status.success() || digest.len() != 64 {
        bail!("sha256sum {}: {}", path.display(), output.status);
    }
    Ok(digest.to_string())
}

fn base64_file(path: &Path) -> Result<String> {
    let output = Command::new("base64").arg("-w0").arg(path).output()?;
    if !output.status.success() {
        bail!("base64 {}: {}", path.display(), output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The artifact a wasm code URL names by its file name (`.../ab_variant.wasm` -> `ab_variant`).
fn artifact_of(url: &Value) -> Result<String> {
    let url = url.as_str().ok_or_else(|| anyhow!("a wasm entry of code type HTTP without code.http.url"))?;
    let file = url.rsplit('/').next().unwrap_or_default();
    match file.strip_suffix(".wasm") {
        Some(artifact) if !artifact.is_empty() => Ok(artifact.to_string()),
        _ => bail!("{url}: the file name must be <artifact>.wasm"),
    }
}

/// The path of a URL (`http://host/wasm/x.wasm` -> `/wasm/x.wasm`).
fn url_path(url: &Value) -> Result<String> {
    let url = url.as_str().ok_or_else(|| anyhow!("a wasm code source without a URL"))?;
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    Ok(rest.find('/').map_or("/", |i| &rest[i..]).to_string())
}

/// Calls `f` with every remote wasm code source (`{"http_uri": {...}, "sha256": ...}`) in `value`.
fn for_each_remote_code(value: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    match value {
        Value::Object(map) => {
            if let Some(remote) = map.get_mut("remote").filter(|r| r.get("http_uri").is_some()) {
                f(remote);
            }
            map.values_mut().for_each(|v| for_each_remote_code(v, f));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| for_each_remote_code(v, f)),
        _ => {}
    }
}

/// Points every socket address in `value` that names the in-cluster wasm-server at
/// 127.0.0.1:`port`.
fn point_at_local_wasm_server(value: &mut Value, port: u16) {
    match value {
        Value::Object(map) => {
            if let Some(address) = map.get_mut("socket_address").filter(|a| a["address"] == IN_CLUSTER_WASM_SERVER) {
                *address = json!({"address": "127.0.0.1", "port_value": port});
            }
            map.values_mut().for_each(|v| point_at_local_wasm_server(v, port));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| point_at_local_wasm_server(v, port)),
        _ => {}
    }
}

/// Replaces `from` with `to` in every string in `value`.
fn substitute(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::String(s) if s.contains(from) => *s = s.replace(from, to),
        Value::Array(items) => items.iter_mut().for_each(|v| substitute(v, from, to)),
        Value::Object(map) => map.values_mut().for_each(|v| substitute(v, from, to)),
        _ => {}
    }
}

/// A running Envoy Gateway and the Envoy it started. Dropping it stops both; if the test is
/// failing, both logs are printed first.
pub struct EnvoyGateway {
    child: Option<Child>,
    envoy_pids: Vec<u32>,
    admin: String,
    listeners: HashMap<String, u16>,
    wasm_server: MockServer,
    dir: PathBuf,
    runtime_dir: PathBuf,
    state_home: PathBuf,
    log_path: PathBuf,
}

impl EnvoyGateway {
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let wanted: Vec<u16> = self.listeners.values().copied().collect();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("envoy-gateway exited: {status}");
            }
            if Instant::now() > deadline {
                bail!("Envoy did not serve listener ports {wanted:?} within {READY_TIMEOUT:?}");
            }
            if self.admin.is_empty() {
                // func-e asks Envoy to write its admin address to <runtimeDir>/<runID>/admin-address.txt.
                self.admin = find_admin_address(&self.runtime_dir).unwrap_or_default();
            }
            if !self.admin.is_empty() && self.serves(&wanted) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.envoy_pids = children(self.child.as_ref().map(Child::id).unwrap_or(0));
        Ok(())
    }

    /// Whether Envoy is live and has an active listener on each port.
    fn serves(&self, ports: &[u16]) -> bool {
        match self.envoy_admin("/ready") {
            Ok((200, body)) if body.trim() == "LIVE" => {}
            _ => return false,
        }
        let Ok((200, body)) = self.envoy_admin("/listeners?format=json") else { return false };
        let listeners: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let active: Vec<u64> = listeners["listener_statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["local_address"]["socket_address"]["port_value"].as_u64())
            .collect();
        ports.iter().all(|p| active.contains(&u64::from(*p)))
    }

    /// `http://127.0.0.1:<port><path>` on the Gateway listener named `listener`.
    pub fn url(&self, listener: &str, path: &str) -> String {
        let port = self.listeners.get(listener).unwrap_or_else(|| panic!("no Gateway listener {listener}: {:?}", self.listeners));
        format!("http://127.0.0.1:{port}{path}")
    }

    /// GET on Envoy's admin interface; returns status and body.
    pub fn envoy_admin(&self, path: &str) -> Result<(u16, String)> {
        let r = client::get(&format!("http://{}{path}", self.admin), &[])?;
        Ok((r.status, r.text()))
    }

    /// Envoy's whole configuration as its admin interface reports it (`/config_dump`, with EDS).
    pub fn config_dump(&self) -> Result<Value> {
        let (status, body) = self.envoy_admin("/config_dump?include_eds")?;
        if status != 200 {
            bail!("/config_dump: {status}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// The value of one Envoy stat by its name, if it exists.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let (_, body) = self.envoy_admin(&format!("/stats?format=json&filter=^{}$", name.replace('.', "\\."))).ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        v["stats"].as_array()?.iter().find(|s| s["name"] == name).and_then(|s| s["value"].as_u64())
    }

    /// The paths requested from the local wasm-server (by Envoy Gateway: the policies' modules;
    /// by Envoy: remote code in patches, the JWKS).
    pub fn wasm_downloads(&self) -> Vec<String> {
        self.wasm_server.requests().into_iter().map(|r| r.path).collect()
    }

    /// Envoy Gateway's log (its own lines; func-e forwards Envoy's output to it too).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Envoy's stderr, as func-e records it in `<stateHome>/envoy-runs/<runID>/stderr.log`.
    pub fn envoy_log(&self) -> String {
        let runs = self.state_home.join("envoy-runs");
        let mut out = String::new();
        for run in std::fs::read_dir(runs).into_iter().flatten().flatten() {
            out.push_str(&std::fs::read_to_string(run.path().join("stderr.log")).unwrap_or_default());
        }
        out
    }

    fn logs(&self, lines: usize) -> String {
        format!(
            "--- envoy-gateway log ({}) ---\n{}\n--- envoy log ---\n{}",
            self.log_path.display(),
            tail(&self.log(), lines),
            tail(&self.envoy_log(), lines)
        )
    }

    /// Stops Envoy Gateway (SIGTERM, which stops its Envoy; SIGKILL after 15 seconds), then
    /// kills, by PID, an Envoy it started that outlived it.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            envoy::terminate(child, Duration::from_secs(15));
        }
        for pid in self.envoy_pids.drain(..) {
            if Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            }
        }
    }
}

impl Drop for EnvoyGateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs(120));
        }
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn find_admin_address(runtime_dir: &Path) -> Option<String> {
    for run in std::fs::read_dir(runtime_dir).ok()?.flatten() {
        if let Ok(address) = std::fs::read_to_string(run.path().join("admin-address.txt")) {
            if !address.trim().is_empty() {
                return Some(address.trim().to_string());
            }
        }
    }
    None
}

/// The child processes of `pid` (`/proc/<pid>/task/*/children`).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    out
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The keys Envoy gets in its environment (as the Kubernetes EnvoyProxy gives it from a Secret)
/// and the mock providers accept.
pub const OPENAI_KEY: &str = "sk-openai-standalone";
pub const ANTHROPIC_KEY: &str = "sk-ant-standalone";

/// What envoy-config/standalone routes to: the task-api Backends (echo), the LLM providers
/// (mocks), the demo issuer's tokens, and token-budget's rate limit service with Redis.
pub struct Upstreams {
    pub control: MockServer,
    pub beta: MockServer,
    pub canary: MockServer,
    pub openai: crate::mock::llm::LlmMock,
    pub anthropic: crate::mock::llm::LlmMock,
    /// Tokens of the demo issuer; the valid ones are alice's (`second_user` is user-43's).
    pub minted: crate::mock::jwks::Minted,
    pub ratelimit: crate::ratelimit::RateLimit,
}

/// Starts the upstreams and Envoy Gateway on envoy-config/standalone, after `render` (which
/// may change resources).
pub fn start_suite(render: impl FnOnce(Standalone) -> Result<Standalone>) -> Result<(EnvoyGateway, Upstreams)> {
    let standalone = Standalone::load("envoy-config/standalone")?;
    let budget = standalone.wasm_config("llm-filters", "token-budget").ok_or_else(|| anyhow!("llm-filters has no token-budget"))?;
    let upstreams = Upstreams {
        control: crate::mock::echo::start("control"),
        beta: crate::mock::echo::start("beta"),
        canary: crate::mock::echo::start("canary"),
        openai: crate::mock::llm::openai(OPENAI_KEY),
        anthropic: crate::mock::llm::anthropic(ANTHROPIC_KEY),
        minted: crate::mock::jwks::mint_for(Some("alice"), None, 1)?,
        ratelimit: crate::ratelimit::RateLimit::start(&budget)?,
    };
    let u = &upstreams;
    let gateway = standalone
        .patched_cluster("ratelimit", u.ratelimit.grpc_port())?
        .backend("task-api", u.control.port())?
        .backend("task-api-beta", u.beta.port())?
        .backend("task-api-canary", u.canary.port())?
        .backend("openai", u.openai.port())?
        .backend("anthropic", u.anthropic.port())?
        .env("OPENAI_API_KEY", OPENAI_KEY)
        .env("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
        .jwks(&u.minted.jwks);
    let gateway = render(gateway)?.start()?;
    Ok((gateway, upstreams))
}
