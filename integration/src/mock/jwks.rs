//! jwt-claims test material: keys and tokens minted by an independent implementation (PyJWT
//! and cryptography, `integration/tools/mint_tokens.py`), and a JWKS server that can be
//! healthy, down, slow or broken, and counts its fetches.

use super::{serve, serve_on, MockResponse, MockServer};
use crate::paths;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The issuer and audience the minted tokens carry.
pub const ISSUER: &str = "https://issuer.example.com/";
pub const AUDIENCE: &str = "https://api.example.com";
/// Where the JWKS is served (the path an identity provider uses).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// What `mint_tokens.py` wrote, read back.
pub struct Minted {
    pub dir: PathBuf,
    pub now: u64,
    /// `tokens.json`: `valid`, `attacks` and `claims`.
    pub tokens: Value,
    /// The trusted public keys.
    pub jwks: String,
    /// `jwks` plus the key `rsa-next` that the `rotated` token is signed with.
    pub rotated: String,
    /// `bench.json`: `jwks` and lists of `rs256`, `es256` and `eddsa` tokens.
    pub bench: Value,
}

impl Minted {
    pub fn valid(&self, name: &str) -> &str {
        self.tokens["valid"][name].as_str().unwrap_or_else(|| panic!("mint_tokens.py made no valid token {name}"))
    }

    pub fn attack(&self, name: &str) -> &str {
        self.tokens["attacks"][name].as_str().unwrap_or_else(|| panic!("mint_tokens.py made no attack token {name}"))
    }

    pub fn attack_names(&self) -> Vec<String> {
        self.tokens["attacks"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }
}

impl Drop for Minted {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Mints fresh keys and tokens into a temporary directory. `now` (Unix seconds) anchors
/// `iat`/`nbf`/`exp`: the wasmtime host's clock for host tests, the real time for Envoy.
pub fn mint(now: Option<u64>, bench_count: usize) -> anyhow::Result<Minted> {
    mint_for(None, now, bench_count)
}

/// As [`mint`], with `subject` as the `sub` of the valid tokens (default `user-42`; the token
/// `second_user` is always `user-43`).
pub fn mint_for(subject: Option<&str>, now: Option<u64>, bench_count: usize) -> anyhow::Result<Minted> {
    let dir = crate::envoy::tempdir("jwt-tokens")?;
    let mut cmd = Command::new(paths::python());
    cmd.arg(paths::root().join("integration/tools/mint_tokens.py"))
        .arg(&dir)
        .args(["--issuer", ISSUER, "--audience", AUDIENCE, "--bench-count", &bench_count.to_string()]);
    if let Some(now) = now {
        cmd.args(["--now", &now.to_string()]);
    }
    if let Some(subject) = subject {
        cmd.args(["--subject", subject]);
    }
    let out = cmd.output().map_err(|e| anyhow::anyhow!("running {} (run scripts/setup.sh): {e}", paths::python().display()))?;
    if !out.status.success() {
        anyhow::bail!("mint_tokens.py failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let read = |name: &str| std::fs::read_to_string(dir.join(name));
    let tokens: Value = serde_json::from_str(&read("tokens.json")?)?;
    Ok(Minted {
        now: tokens["now"].as_u64().unwrap_or_default(),
        tokens,
        jwks: read("jwks.json")?,
        rotated: read("jwks-rotated.json")?,
        bench: serde_json::from_str(&read("bench.json")?)?,
        dir,
    })
}

/// How the JWKS server answers.
#[derive(Clone, Debug)]
pub enum Mode {
    /// 200 with this document.
    Serve(String),
    /// Closes the connection without an answer.
    Down,
    /// Answers with this document after a delay.
    Slow(Duration, String),
    /// 200 with a body that is not a JWKS.
    Garbage,
    /// This status with a short body.
    Status(u16),
}

/// A JWKS endpoint whose behaviour a test switches while it runs.
pub struct JwksServer {
    pub server: MockServer,
    mode: Arc<Mutex<Mode>>,
}

fn respond(mode: &Mode) -> MockResponse {
    let json = |doc: &str| MockResponse::Full {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: doc.as_bytes().to_vec(),
    };
    match mode {
        Mode::Serve(doc) => json(doc),
        Mode::Down => MockResponse::Reset,
        Mode::Slow(delay, doc) => MockResponse::Delayed(*delay, Box::new(json(doc))),
        Mode::Garbage => MockResponse::text(200, "<html>maintenance</html>"),
        Mode::Status(status) => MockResponse::text(*status, "unavailable"),
    }
}

impl JwksServer {
    pub fn start(mode: Mode) -> JwksServer {
        let mode = Arc::new(Mutex::new(mode));
        let shared = mode.clone();
        let server = serve("jwks", move |_| respond(&shared.lock().unwrap_or_else(|p| p.into_inner())));
        JwksServer { server, mode }
    }

    /// Serves the document in file `path` (re-read on every request) on a fixed address,
    /// for the local gateway.
    pub fn serve_file_on(path: &str, address: &str) -> std::io::Result<MockServer> {
        let path = path.to_string();
        serve_on("jwks", address, move |_| match std::fs::read_to_string(&path) {
            Ok(doc) => respond(&Mode::Serve(doc)),
            Err(_) => MockResponse::text(404, "no JWKS file"),
        })
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Requests received so far, whatever was answered.
    pub fn fetches(&self) -> usize {
        self.server.request_count()
    }
}

/// Envoy (2 workers) with `integration/envoy/jwt-claims.yaml`: jwt-claims in front of an echo
/// "task-api", its remote JWKS served by a [`JwksServer`] in `mode`.
pub fn jwt_gateway(mode: Mode) -> (crate::envoy::Envoy, MockServer, JwksServer) {
    let upstream = super::echo::start("task-api");
    let jwks = JwksServer::start(mode);
    let envoy = crate::envoy::Bootstrap::load("integration/envoy/jwt-claims.yaml")
        .and_then(|b| b.concurrency(2).cluster("task-api", upstream.port()))
        .and_then(|b| b.cluster("jwks", jwks.port()))
        .and_then(|b| b.start())
        .unwrap_or_else(|e| panic!("{e:#}"));
    (envoy, upstream, jwks)
}
