//! The rate limit service behind token-budget's global mode, for tests and benchmarks:
//! `redis-server` (Debian's) on a unix socket and envoyproxy/ratelimit's `service_cmd`
//! (`.tools/bin/service_cmd`, pinned by scripts/setup.sh) on free loopback ports, its
//! descriptor configuration generated from the filter's configuration by
//! `scripts/ratelimit-config.py`. Readiness is polled (Redis: `PING` on its socket; the
//! service: its HTTP `/healthcheck` and its gRPC port accepting connections); processes are
//! stopped by PID; their logs are printed when a test fails.
//!
//! The service's settings (its environment; see envoyproxy/ratelimit `src/settings/settings.go`):
//! `RUNTIME_ROOT`/`RUNTIME_SUBDIRECTORY` with `RUNTIME_WATCH_ROOT=false` read
//! `<root>/<subdirectory>/config/*.yaml`; `USE_STATSD=false`; `REDIS_SOCKET_TYPE=unix` and
//! `REDIS_URL=<socket>`; `GRPC_HOST`/`GRPC_PORT`, `HOST`/`PORT` (HTTP, `/healthcheck`),
//! `DEBUG_HOST`/`DEBUG_PORT`; `LOCAL_CACHE_SIZE_IN_BYTES=0` (its default, stated: with a local
//! cache the service stops counting keys it has seen over the limit, and settlement charges
//! would be lost) and `REDIS_TIMEOUT`.

use crate::envoy::{tempdir, terminate};
use crate::paths;
use anyhow::{anyhow, bail, Context as _, Result};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// `.tools/bin/service_cmd`, or a message that says how to get it.
pub fn service_bin() -> Result<PathBuf> {
    let bin = paths::root().join(".tools/bin/service_cmd");
    if !bin.exists() {
        bail!("{} is missing: run scripts/setup.sh (go install github.com/envoyproxy/ratelimit/src/service_cmd@<pinned>)", bin.display());
    }
    Ok(bin)
}

/// A port no listener holds right now (the service binds it a moment later), and that this
/// process has not handed out before: the service listens with SO_REUSEPORT, so two services
/// given the same port would both bind it and share its connections silently.
pub fn free_port() -> Result<u16> {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..64 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
    bail!("no free port")
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A GET on 127.0.0.1: status and body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    crate::envoy::http_get(&format!("127.0.0.1:{port}"), path).ok()
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

/// `scripts/ratelimit-config.py --config -`: the service's descriptor configuration for a
/// token-budget configuration in global mode.
pub fn service_config(filter_config: &str) -> Result<String> {
    let mut child = Command::new(paths::python())
        .arg(paths::root().join("scripts/ratelimit-config.py"))
        .args(["--config", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running scripts/ratelimit-config.py with .venv/bin/python (scripts/setup.sh makes it)")?;
    child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?.write_all(filter_config.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("ratelimit-config.py: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// A `redis-server` listening only on a unix socket (no TCP port), without persistence.
pub struct Redis {
    child: Option<Child>,
    socket: PathBuf,
    dir: PathBuf,
    log: PathBuf,
}

impl Redis {
    pub fn start(dir: &Path) -> Result<Redis> {
        let mut redis = Redis { child: None, socket: dir.join("redis.sock"), dir: dir.to_path_buf(), log: dir.join("redis.log") };
        redis.spawn()?;
        Ok(redis)
    }

    fn spawn(&mut self) -> Result<()> {
        let _ = std::fs::remove_file(&self.socket);
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&self.socket)
            .args(["--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile"])
            .arg(&self.log)
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (scripts/setup.sh installs Debian's redis-server)")?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("redis-server exited: {status}\n{}", tail(&self.log, 30));
            }
            if self.ping() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("redis-server not ready after {READY_TIMEOUT:?}\n{}", tail(&self.log, 30));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `PING` on the socket answers `+PONG`.
    pub fn ping(&self) -> bool {
        let Ok(mut s) = UnixStream::connect(&self.socket) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops it (SIGTERM, then SIGKILL); its data is gone (no persistence).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child, Duration::from_secs(5));
        }
    }

    /// Starts it again on the same socket, empty.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// envoyproxy/ratelimit's `service_cmd`.
pub struct Service {
    child: Option<Child>,
    pub grpc_port: u16,
    pub http_port: u16,
    pub debug_port: u16,
    config_dir: PathBuf,
    log: PathBuf,
    redis_socket: PathBuf,
}

impl Service {
    /// Starts the service with `config` (the descriptor YAML) against Redis on `redis_socket`.
    pub fn start(dir: &Path, redis_socket: &Path, config: &str) -> Result<Service> {
        // RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/config/*.yaml, read once at start (RUNTIME_WATCH_ROOT=false).
        let config_dir = dir.join("runtime/ratelimit/config");
        std::fs::create_dir_all(&config_dir)?;
        std::fs::write(config_dir.join("token-budget.yaml"), config)?;
        let mut service = Service {
            child: None,
            grpc_port: 0,
            http_port: 0,
            debug_port: 0,
            config_dir,
            log: dir.join("ratelimit.log"),
            redis_socket: redis_socket.to_path_buf(),
        };
        service.spawn()?;
        Ok(service)
    }

    fn spawn(&mut self) -> Result<()> {
        // Free ports are taken a moment after they are found; if another process wins one,
        // the service exits at once and is started again on new ones.
        let mut last = anyhow!("not started");
        for _ in 0..3 {
            (self.grpc_port, self.http_port, self.debug_port) = (free_port()?, free_port()?, free_port()?);
            match self.spawn_once() {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn spawn_once(&mut self) -> Result<()> {
        let runtime_root = self.config_dir.parent().and_then(Path::parent).ok_or_else(|| anyhow!("config dir"))?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(service_bin()?)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUNTIME_ROOT", runtime_root)
            .env("RUNTIME_SUBDIRECTORY", "ratelimit")
            .env("RUNTIME_WATCH_ROOT", "false")
            .env("RUNTIME_IGNOREDOTFILES", "true")
            .env("USE_STATSD", "false")
            .env("LOG_LEVEL", std::env::var("RATELIMIT_LOG_LEVEL").unwrap_or_else(|_| "warn".into()))
            .env("REDIS_SOCKET_TYPE", "unix")
            .env("REDIS_URL", &self.redis_socket)
            .env("REDIS_TIMEOUT", "2s")
            .env("LOCAL_CACHE_SIZE_IN_BYTES", "0")
            .env("GRPC_HOST", "127.0.0.1")
            .env("GRPC_PORT", self.grpc_port.to_string())
            .env("HOST", "127.0.0.1")
            .env("PORT", self.http_port.to_string())
            .env("DEBUG_HOST", "127.0.0.1")
            .env("DEBUG_PORT", self.debug_port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting service_cmd")?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                bail!("service_cmd exited: {status}\n{}", tail(&self.log, 30));
            }
            if self.healthy() && TcpStream::connect(("127.0.0.1", self.grpc_port)).is_ok() {
                // Healthy even when its config did not load: the dump says whether it did.
                if self.loaded_config().is_empty() {
                    self.stop();
                    bail!("the rate limit service did not load its config:\n{}", tail(&self.log, 30));
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                bail!("the rate limit service is not ready after {READY_TIMEOUT:?}\n{}", tail(&self.log, 30));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its `/healthcheck` answers 200 (Redis reachable at start, no SIGTERM).
    pub fn healthy(&self) -> bool {
        http_get(self.http_port, "/healthcheck").is_some_and(|(status, _)| status == 200)
    }

    /// The descriptor configuration it loaded, as its debug endpoint `/rlconfig` dumps it
    /// (`<domain>.<key>_<value>.<key>: unit=MINUTE requests_per_unit=10000, ...` per limit);
    /// empty when none loaded.
    pub fn loaded_config(&self) -> String {
        http_get(self.debug_port, "/rlconfig").map(|(_, body)| body).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops it (SIGTERM, then SIGKILL).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child, Duration::from_secs(5));
        }
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn_once()
    }

    /// Freezes it (SIGSTOP): connections stay open, nothing is answered; calls time out.
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "STOP");
        }
    }

    /// Thaws a paused service (SIGCONT).
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "CONT");
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // A frozen process would ignore SIGTERM until thawed.
        self.resume();
        self.stop();
    }
}

/// Redis and the service together.
pub struct RateLimit {
    pub service: Service,
    pub redis: Redis,
    dir: PathBuf,
}

impl RateLimit {
    /// Starts Redis and the service, configured for `filter_config` (a token-budget
    /// configuration in global mode) by scripts/ratelimit-config.py.
    pub fn start(filter_config: &str) -> Result<RateLimit> {
        let yaml = service_config(filter_config)?;
        RateLimit::start_with(&yaml)
    }

    /// Starts Redis and the service with a descriptor configuration as given.
    pub fn start_with(service_yaml: &str) -> Result<RateLimit> {
        // A short directory: unix socket paths are limited to 107 bytes.
        let dir = tempdir("rl")?;
        let redis = Redis::start(&dir)?;
        let service = Service::start(&dir, redis.socket(), service_yaml)?;
        Ok(RateLimit { service, redis, dir })
    }

    /// The gRPC address Envoy's `ratelimit` cluster points at.
    pub fn grpc_port(&self) -> u16 {
        self.service.grpc_port
    }
}

impl Drop for RateLimit {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- ratelimit service log ---\n{}\n--- redis log ---\n{}", self.service.log_tail(40), self.redis.log_tail(20));
        }
        self.service.resume();
        self.service.stop();
        self.redis.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
