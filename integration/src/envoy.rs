//! A real Envoy for end-to-end tests.
//!
//! A bootstrap (one of `envoy-config/` or a test fixture) is loaded as YAML and rewritten by
//! structure, not by text: the admin interface and every listener move to 127.0.0.1 port 0
//! (Envoy picks free ports, read back from the admin API), named clusters are pointed at the
//! test's upstreams, and wasm plugin configurations can be replaced. Envoy runs from the
//! repository root, so the bootstraps' relative `.wasm` paths resolve. Readiness is the admin
//! `/ready` endpoint; a test that fails prints the tail of Envoy's log.

use crate::paths;
use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Envoy may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A bootstrap being prepared for a test run.
pub struct Bootstrap {
    config: Value,
    concurrency: u32,
    log_level: String,
    env: Vec<(String, String)>,
    name: String,
}

impl Bootstrap {
    /// Loads a YAML (or JSON) bootstrap; relative paths are taken from the repository root.
    pub fn load(path: impl AsRef<Path>) -> Result<Bootstrap> {
        let path = paths::root().join(path.as_ref());
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Bootstrap::from_yaml(&text).map(|b| b.named(&name))
    }

    pub fn from_yaml(text: &str) -> Result<Bootstrap> {
        let config: Value = serde_yaml::from_str(text).context("parsing bootstrap YAML")?;
        Ok(Bootstrap { config, concurrency: 2, log_level: "info".into(), env: Vec::new(), name: "envoy".into() })
    }

    fn named(mut self, name: &str) -> Bootstrap {
        self.name = name.to_string();
        self
    }

    /// Worker threads (`--concurrency`); 2 by default, so shared data is really shared.
    pub fn concurrency(mut self, n: u32) -> Bootstrap {
        self.concurrency = n;
        self
    }

    pub fn log_level(mut self, level: &str) -> Bootstrap {
        self.log_level = level.to_string();
        self
    }

    /// An environment variable for the Envoy process (wasm `environment_variables.host_env_keys`
    /// read from it).
    pub fn env(mut self, key: &str, value: &str) -> Bootstrap {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The bootstrap as it stands, for assertions on shipped configs.
    pub fn json(&self) -> &Value {
        &self.config
    }

    pub fn json_mut(&mut self) -> &mut Value {
        &mut self.config
    }

    fn clusters_mut(&mut self) -> Vec<&mut Value> {
        match self.config.pointer_mut("/static_resources/clusters") {
            Some(Value::Array(clusters)) => clusters.iter_mut().collect(),
            _ => Vec::new(),
        }
    }

    /// Points every endpoint of cluster `name` at 127.0.0.1:`port`.
    pub fn cluster(mut self, name: &str, port: u16) -> Result<Bootstrap> {
        let mut found = false;
        for cluster in self.clusters_mut() {
            if cluster["name"] == name {
                found = true;
                for address in endpoint_addresses(cluster) {
                    *address = json!({"socket_address": {"address": "127.0.0.1", "port_value": port}});
                }
            }
        }
        if !found {
            bail!("bootstrap has no cluster named {name}");
        }
        Ok(self)
    }

    /// Points the `index`-th endpoint of cluster `name` (counting across priorities, in file
    /// order) at 127.0.0.1:`port`.
    pub fn cluster_endpoint(mut self, name: &str, index: usize, port: u16) -> Result<Bootstrap> {
        for cluster in self.clusters_mut() {
            if cluster["name"] == name {
                let mut addresses = endpoint_addresses(cluster);
                let address = addresses.get_mut(index).ok_or_else(|| anyhow!("cluster {name} has no endpoint {index}"))?;
                **address = json!({"socket_address": {"address": "127.0.0.1", "port_value": port}});
                return Ok(self);
            }
        }
        bail!("bootstrap has no cluster named {name}")
    }

    /// Replaces the plugin configuration (the JSON string Envoy passes to `on_configure`) of
    /// every wasm filter whose plugin `name` is `plugin`, downstream or upstream.
    pub fn wasm_config(mut self, plugin: &str, config: &str) -> Result<Bootstrap> {
        let mut found = 0;
        visit_wasm_plugins(&mut self.config, &mut |p| {
            if p["name"] == plugin {
                p["configuration"] = json!({"@type": "type.googleapis.com/google.protobuf.StringValue", "value": config});
                found += 1;
            }
        });
        if found == 0 {
            bail!("bootstrap has no wasm plugin named {plugin}");
        }
        Ok(self)
    }

    /// Every wasm plugin configuration in the bootstrap: (plugin name, JSON string, `.wasm`
    /// filename). Used to check that shipped configs load in their filters.
    pub fn wasm_plugins(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        let mut config = self.config.clone();
        visit_wasm_plugins(&mut config, &mut |p| {
            let name = p["name"].as_str().unwrap_or_default().to_string();
            let value = p["configuration"]["value"].as_str().unwrap_or_default().to_string();
            let file = p["vm_config"]["code"]["local"]["filename"].as_str().unwrap_or_default().to_string();
            out.push((name, value, file));
        });
        out
    }

    /// The environment a wasm plugin's VM gets (`vm_config.environment_variables`): the names
    /// Envoy copies from its own environment (`host_env_keys`) and fixed pairs (`key_values`).
    pub fn wasm_plugin_env(&self, plugin: &str) -> (Vec<String>, Vec<(String, String)>) {
        let mut out = (Vec::new(), Vec::new());
        let mut config = self.config.clone();
        visit_wasm_plugins(&mut config, &mut |p| {
            if p["name"] != plugin {
                return;
            }
            let vars = &p["vm_config"]["environment_variables"];
            for key in vars["host_env_keys"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                out.0.push(key.to_string());
            }
            for (k, v) in vars["key_values"].as_object().into_iter().flatten() {
                out.1.push((k.clone(), v.as_str().unwrap_or_default().to_string()));
            }
        });
        out
    }

    /// Moves admin and listeners to 127.0.0.1 port 0 and writes the bootstrap into `dir`.
    fn write(&mut self, dir: &Path) -> Result<PathBuf> {
        self.config["admin"]["address"] = json!({"socket_address": {"address": "127.0.0.1", "port_value": 0}});
        if let Some(Value::Array(listeners)) = self.config.pointer_mut("/static_resources/listeners") {
            for l in listeners {
                l["address"] = json!({"socket_address": {"address": "127.0.0.1", "port_value": 0}});
            }
        }
        // Built filters are looked up in CARGO_TARGET_DIR when it is set.
        visit_wasm_plugins(&mut self.config, &mut |p| {
            if let Some(file) = p.pointer_mut("/vm_config/code/local/filename") {
                if let Some(name) = file.as_str().filter(|f| f.starts_with("target/")) {
                    *file = json!(paths::artifact_path(name).display().to_string());
                }
            }
        });
        let path = dir.join(format!("{}.json", self.name));
        std::fs::write(&path, serde_json::to_vec_pretty(&self.config)?)?;
        Ok(path)
    }

    /// Starts Envoy and waits until it is ready.
    pub fn start(mut self) -> Result<Envoy> {
        let dir = tempdir(&self.name)?;
        let config_path = self.write(&dir)?;
        let admin_path = dir.join("admin-address");
        let log_path = dir.join("envoy.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(paths::envoy_bin());
        cmd.current_dir(paths::root())
            .arg("-c")
            .arg(&config_path)
            .arg("--concurrency")
            .arg(self.concurrency.to_string())
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--disable-hot-restart")
            .arg("-l")
            .arg(&self.log_level)
            .arg("--log-format")
            .arg("[%Y-%m-%d %T.%e][%t][%l][%n] %v")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().with_context(|| format!("starting {}", paths::envoy_bin().display()))?;
        let mut envoy = Envoy { child: Some(child), admin: String::new(), listeners: HashMap::new(), dir, log_path };
        envoy.wait_ready(&admin_path).map_err(|e| anyhow!("{e:#}\n--- envoy log ---\n{}", envoy.log_tail(60)))?;
        Ok(envoy)
    }
}

fn endpoint_addresses(cluster: &mut Value) -> Vec<&mut Value> {
    let mut out = Vec::new();
    if let Some(Value::Array(localities)) = cluster.pointer_mut("/load_assignment/endpoints") {
        for locality in localities {
            if let Some(Value::Array(endpoints)) = locality.get_mut("lb_endpoints") {
                for e in endpoints {
                    if let Some(address) = e.pointer_mut("/endpoint/address") {
                        out.push(address);
                    }
                }
            }
        }
    }
    out
}

/// Calls `f` on every wasm `PluginConfig` (the `config` of an `envoy.filters.http.wasm`).
fn visit_wasm_plugins(value: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    match value {
        Value::Object(map) => {
            let is_wasm = map
                .get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("envoy.extensions.filters.http.wasm.v3.Wasm"));
            if is_wasm {
                if let Some(config) = map.get_mut("config") {
                    f(config);
                }
            }
            for v in map.values_mut() {
                visit_wasm_plugins(v, f);
            }
        }
        Value::Array(items) => {
            for v in items {
                visit_wasm_plugins(v, f);
            }
        }
        _ => {}
    }
}

/// A fresh directory under the system temp dir.
pub fn tempdir(prefix: &str) -> Result<PathBuf> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    // The time too: inside a PID namespace (integration::eg) every test process has the same
    // small PID, and /tmp is shared.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "llm-filters-{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A running Envoy. Dropping it stops the process; if the test is failing, Envoy's log tail is
/// printed first.
pub struct Envoy {
    child: Option<Child>,
    admin: String,
    listeners: HashMap<String, u16>,
    dir: PathBuf,
    log_path: PathBuf,
}

impl Envoy {
    fn wait_ready(&mut self, admin_path: &Path) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("envoy exited during startup: {status}");
            }
            if Instant::now() > deadline {
                bail!("envoy not ready after {READY_TIMEOUT:?}");
            }
            if self.admin.is_empty() {
                if let Ok(address) = std::fs::read_to_string(admin_path) {
                    if !address.trim().is_empty() {
                        self.admin = address.trim().to_string();
                    }
                }
            }
            if !self.admin.is_empty() {
                if let Ok((200, body)) = http_get(&self.admin, "/ready") {
                    if body.trim() == "LIVE" {
                        break;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (_, body) = http_get(&self.admin, "/listeners?format=json")?;
        let listeners: Value = serde_json::from_str(&body).context("parsing /listeners")?;
        for l in listeners["listener_statuses"].as_array().cloned().unwrap_or_default() {
            let name = l["name"].as_str().unwrap_or_default().to_string();
            if let Some(port) = l["local_address"]["socket_address"]["port_value"].as_u64() {
                self.listeners.insert(name, port as u16);
            }
        }
        Ok(())
    }

    /// The port of a listener, by its name in the bootstrap.
    pub fn port(&self, listener: &str) -> u16 {
        *self.listeners.get(listener).unwrap_or_else(|| panic!("no listener {listener}: {:?}", self.listeners))
    }

    /// `http://127.0.0.1:<port><path>` on a listener.
    pub fn url(&self, listener: &str, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port(listener))
    }

    pub fn admin_address(&self) -> &str {
        &self.admin
    }

    /// GET on the admin interface; returns status and body.
    pub fn admin(&self, path: &str) -> Result<(u16, String)> {
        http_get(&self.admin, path)
    }

    /// POST on the admin interface (for example `/runtime_modify`).
    pub fn admin_post(&self, path: &str) -> Result<(u16, String)> {
        http_request(&self.admin, "POST", path)
    }

    /// Envoy's stats in Prometheus text format.
    pub fn prometheus(&self) -> String {
        self.admin("/stats/prometheus").map(|(_, b)| b).unwrap_or_default()
    }

    /// Polls `/stats/prometheus` until `done` accepts the values of `names` (filters that batch
    /// their counters flush them on a timer), or 10 seconds pass; returns the last values.
    pub fn wait_for_prometheus<const N: usize>(&self, names: &[&str; N], done: impl Fn([Option<u64>; N]) -> bool) -> [Option<u64>; N] {
        crate::poll(
            Duration::from_secs(10),
            Duration::from_millis(100),
            || {
                let text = self.prometheus();
                names.map(|n| prometheus_value(&text, n))
            },
            |values| done(*values),
        )
    }

    /// The value of one stat by its Envoy name (`/stats?filter=^name$`), if it exists.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let (_, body) = self.admin(&format!("/stats?format=json&filter=^{}$", regex_escape(name))).ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        v["stats"].as_array()?.iter().find(|s| s["name"] == name).and_then(|s| s["value"].as_u64())
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The process id, for tests that measure memory.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Stops Envoy: SIGTERM, then SIGKILL after five seconds.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child, Duration::from_secs(5));
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- envoy log ({}) ---\n{}", self.log_path.display(), self.log_tail(80));
        }
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Stops a process the test started: SIGTERM, then SIGKILL after `grace`.
pub fn terminate(mut child: Child, grace: Duration) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The value of an unlabelled sample in Prometheus text (`name{} 3` or `name 3`).
pub fn prometheus_value(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

fn regex_escape(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_ascii_alphanumeric() || c == '_' { vec![c] } else { vec!['\\', c] }).collect()
}

/// A minimal HTTP/1.1 GET (`address` is `host:port`) for admin and health endpoints: status
/// and body (no client dependency needed).
pub fn http_get(address: &str, path: &str) -> Result<(u16, String)> {
    http_request(address, "GET", path)
}

fn http_request(address: &str, method: &str, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow!("bad admin response"))?;
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| anyhow!("bad status line"))?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    Ok((status, if chunked { dechunk(body) } else { body.to_string() }))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The Envoy version (`1.40.0`) from `envoy --version`.
pub fn version() -> String {
    let out = Command::new(paths::envoy_bin()).arg("--version").output().map(|o| o.stdout).unwrap_or_default();
    let text = String::from_utf8_lossy(&out);
    text.split("version: ").nth(1).and_then(|v| v.split('/').nth(1)).unwrap_or("unknown").to_string()
}

/// Runs `envoy --mode validate` on a bootstrap file; returns Envoy's output on failure.
pub fn validate(path: impl AsRef<Path>) -> Result<()> {
    let path = paths::root().join(path.as_ref());
    // Validated as the harness runs it: with built filters taken from CARGO_TARGET_DIR.
    let original = path;
    let dir = tempdir("validate")?;
    let mut bootstrap = Bootstrap::load(&original)?;
    // Validation starts the wasm VMs: variables they read from Envoy's environment get a
    // stand-in value (a filter may refuse a configuration whose key variable is unset).
    let host_keys: Vec<String> =
        bootstrap.wasm_plugins().iter().flat_map(|(name, _, _)| bootstrap.wasm_plugin_env(name).0).collect();
    let path = bootstrap.write(&dir)?;
    let mut command = Command::new(paths::envoy_bin());
    for key in &host_keys {
        command.env(key, format!("stand-in-for-{key}"));
    }
    let output = command
        .current_dir(paths::root())
        .arg("--mode")
        .arg("validate")
        .arg("-c")
        .arg(&path)
        .arg("--disable-hot-restart")
        .arg("-l")
        .arg("error")
        .output()?;
    let _ = std::fs::remove_dir_all(&dir);
    if !output.status.success() {
        bail!(
            "{} does not validate:\n{}{}",
            original.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
