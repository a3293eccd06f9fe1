//! A proxy-wasm host on wasmtime, for behavioural tests of the built `.wasm` filters.
//!
//! It runs the real artifact (WASI imports included) and implements the proxy-wasm ABI 0.2.1
//! host functions the way Envoy does. A [`Shared`] stands for one Envoy process (shared data,
//! metrics, clock, log); each [`Vm`] stands for one worker thread's VM, so several VMs over
//! one `Shared` behave like Envoy's workers. Tests feed headers, body chunks and time in, and
//! read modified headers, bodies, local replies, metrics, shared data and callouts out.
//!
//! A filter that traps (a Rust panic aborts the VM) fails the test with the trap, the filter's
//! last log lines and anything it wrote to stderr.

mod abi;
mod state;

pub use abi::{deserialize_pairs, serialize_pairs};
pub use state::{GrpcCall, HttpCall, LocalReply, LogLine, MetricKind, Pairs, Shared, Stream, DEFAULT_START_NS};

use anyhow::{Context as _, Result};
use state::{CalloutResponse, VmState};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use wasmtime::{Config, Engine, Instance, Linker, Module, Store, WasmParams, WasmResults};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::WasiCtxBuilder;

/// What a filter callback answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

impl Action {
    fn from_raw(raw: i32) -> Action {
        if raw == 0 {
            Action::Continue
        } else {
            Action::Pause
        }
    }
}

/// A filter trapped, or the host could not run it.
#[derive(Debug, Clone)]
pub struct Trap(pub String);

impl fmt::Display for Trap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Trap {}

/// Why a VM did not start.
#[derive(Debug)]
pub enum StartError {
    /// `proxy_on_configure` (or `proxy_on_vm_start`) returned false; the filter's log says why.
    Rejected { errors: Vec<String> },
    Trap(Trap),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Rejected { errors } => write!(f, "configuration rejected: {errors:?}"),
            StartError::Trap(t) => write!(f, "trap while starting: {t}"),
        }
    }
}

/// A compiled filter module.
pub struct Plugin {
    engine: Engine,
    module: Module,
    pub path: PathBuf,
    pub size: u64,
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        // Fuel gives a deterministic cost per request for the performance baseline.
        config.consume_fuel(true);
        Engine::new(&config).unwrap_or_else(|e| panic!("cannot create wasmtime engine: {e:?}"))
    })
}

impl Plugin {
    /// Loads and compiles a module; compiled modules are cached for the process.
    pub fn load(path: impl AsRef<Path>) -> Result<Arc<Plugin>> {
        static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Plugin>>>> = OnceLock::new();
        let path = path.as_ref().to_path_buf();
        let mut cache = CACHE.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.get(&path) {
            return Ok(p.clone());
        }
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let module = Module::new(engine(), &bytes)
            .map_err(|e| anyhow::anyhow!("compiling {}: {e:?}", path.display()))?;
        let plugin = Arc::new(Plugin { engine: engine().clone(), module, path: path.clone(), size: bytes.len() as u64 });
        cache.insert(path, plugin.clone());
        Ok(plugin)
    }

    /// One of the suite's built filters by artifact name (`ab_variant`), or a panic that says
    /// how to build it.
    pub fn filter(artifact: &str) -> Arc<Plugin> {
        let path = crate::paths::wasm(artifact);
        Plugin::load(&path).unwrap_or_else(|e| panic!("cannot load {}: {e:#}", path.display()))
    }
}

/// How to start a VM.
pub struct VmBuilder {
    plugin: Arc<Plugin>,
    shared: Arc<Shared>,
    config: Vec<u8>,
    vm_config: Vec<u8>,
    env: Vec<(String, String)>,
    vm_id: String,
    properties: HashMap<String, Vec<u8>>,
    foreign: HashMap<String, Vec<u8>>,
    log_level: u32,
    allow_on_headers_stop_iteration: bool,
}

impl VmBuilder {
    /// Envoy's `PluginConfig.allow_on_headers_stop_iteration` (Envoy >= 1.35). Off by default,
    /// as in Envoy: a `Pause` on headers then stops the body too (StopAllIterationAndWatermark),
    /// so a body sent after it is an error here, as the request would hang in Envoy.
    pub fn allow_on_headers_stop_iteration(mut self, allow: bool) -> Self {
        self.allow_on_headers_stop_iteration = allow;
        self
    }

    /// The log level the host reports (0 trace ... 5 critical); info by default, as in Envoy.
    pub fn log_level(mut self, level: u32) -> Self {
        self.log_level = level;
        self
    }

    pub fn config(mut self, config: impl AsRef<[u8]>) -> Self {
        self.config = config.as_ref().to_vec();
        self
    }

    pub fn vm_config(mut self, config: impl AsRef<[u8]>) -> Self {
        self.vm_config = config.as_ref().to_vec();
        self
    }

    /// An environment variable inside the VM (Envoy's `vm_config.environment_variables`,
    /// Envoy Gateway's `env.hostKeys`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn vm_id(mut self, id: &str) -> Self {
        self.vm_id = id.to_string();
        self
    }

    /// A property every context of this VM sees, e.g. `&["xds", "cluster_name"]`.
    pub fn property(mut self, path: &[&str], value: impl AsRef<[u8]>) -> Self {
        self.properties.insert(path.join("\0"), value.as_ref().to_vec());
        self
    }

    pub fn foreign_function(mut self, name: &str, result: impl AsRef<[u8]>) -> Self {
        self.foreign.insert(name.to_string(), result.as_ref().to_vec());
        self
    }

    /// Instantiates the module and runs `_initialize`, `proxy_on_vm_start` and
    /// `proxy_on_configure`, as Envoy does when it loads a plugin on a worker.
    pub fn try_start(self) -> Result<Vm, StartError> {
        let trap = |e: wasmtime::Error| StartError::Trap(Trap(format!("{e:?}")));
        let stderr = MemoryOutputPipe::new(1 << 20);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stderr.clone()).stderr(stderr.clone());
        for (k, v) in &self.env {
            wasi.env(k, v);
        }
        let vm_index = self.shared.vm_index();
        let state = VmState {
            wasi: wasi.build_p1(),
            shared: self.shared.clone(),
            vm_index,
            vm_id: self.vm_id,
            vm_config: self.vm_config,
            plugin_config: self.config,
            root_id: 1,
            active: 1,
            streams: HashMap::new(),
            properties: self.properties,
            metric_names: Vec::new(),
            tick_period_ms: 0,
            next_token: 0,
            http_calls: Vec::new(),
            grpc_calls: Vec::new(),
            callout: None,
            grpc_receive: Vec::new(),
            grpc_status: (0, Vec::new()),
            done_called: false,
            foreign: self.foreign,
            log_level: self.log_level,
        };
        let mut store = Store::new(&self.plugin.engine, state);
        store.set_fuel(u64::MAX).map_err(trap)?;
        let mut linker: Linker<VmState> = Linker::new(&self.plugin.engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut VmState| &mut s.wasi).map_err(trap)?;
        abi::add_to_linker(&mut linker).map_err(trap)?;
        // Imports this host does not provide trap when called, so the test sees which one.
        linker.define_unknown_imports_as_traps(&self.plugin.module).map_err(trap)?;
        let instance = linker.instantiate(&mut store, &self.plugin.module).map_err(trap)?;
        let mut vm = Vm {
            store,
            instance,
            next_context: 2,
            failed: None,
            stderr,
            shared: self.shared,
            allow_on_headers_stop_iteration: self.allow_on_headers_stop_iteration,
        };

        let init = ["_initialize", "_start"].into_iter().find(|n| vm.instance.get_func(&mut vm.store, n).is_some());
        if let Some(init) = init {
            vm.call::<(), ()>(init, ()).map_err(StartError::Trap)?;
        }
        vm.call::<(i32, i32), ()>("proxy_on_context_create", (1, 0)).map_err(StartError::Trap)?;
        let vm_config_len = vm.store.data().vm_config.len() as i32;
        let started = vm.call::<(i32, i32), i32>("proxy_on_vm_start", (1, vm_config_len)).map_err(StartError::Trap)?;
        if started == 0 {
            return Err(StartError::Rejected { errors: vm.error_logs() });
        }
        let config_len = vm.store.data().plugin_config.len() as i32;
        let configured = vm.call::<(i32, i32), i32>("proxy_on_configure", (1, config_len)).map_err(StartError::Trap)?;
        if configured == 0 {
            return Err(StartError::Rejected { errors: vm.error_logs() });
        }
        Ok(vm)
    }

    /// Like [`VmBuilder::try_start`], failing the test if the VM does not start.
    pub fn start(self) -> Vm {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }
}

/// One VM: a root context and its HTTP streams, as on one Envoy worker thread.
pub struct Vm {
    store: Store<VmState>,
    instance: Instance,
    next_context: u32,
    failed: Option<Trap>,
    stderr: MemoryOutputPipe,
    shared: Arc<Shared>,
    allow_on_headers_stop_iteration: bool,
}

impl Vm {
    pub fn builder(plugin: &Arc<Plugin>, shared: &Arc<Shared>) -> VmBuilder {
        VmBuilder {
            plugin: plugin.clone(),
            shared: shared.clone(),
            config: Vec::new(),
            vm_config: Vec::new(),
            env: Vec::new(),
            vm_id: String::new(),
            properties: HashMap::new(),
            foreign: HashMap::new(),
            log_level: std::env::var("HOST_LOG_LEVEL").ok().and_then(|l| l.parse().ok()).unwrap_or(2),
            allow_on_headers_stop_iteration: false,
        }
    }

    /// Starts a VM with `config`, failing the test if it is rejected.
    pub fn start(plugin: &Arc<Plugin>, shared: &Arc<Shared>, config: &str) -> Vm {
        Vm::builder(plugin, shared).config(config).start()
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Starts a VM with a configuration it must reject; returns the error lines it logged.
    /// Fails the test if the VM starts or traps instead.
    pub fn rejected(plugin: &Arc<Plugin>, config: &str) -> Vec<String> {
        match Vm::builder(plugin, &Shared::new()).config(config).try_start() {
            Err(StartError::Rejected { errors }) => errors,
            Err(other) => panic!("{config:?}: {other}"),
            Ok(_) => panic!("{config:?} was accepted"),
        }
    }

    /// Error and critical lines this VM logged.
    fn error_logs(&self) -> Vec<String> {
        let vm = self.store.data().vm_index;
        self.shared.logs().into_iter().filter(|l| l.vm == vm && l.level >= 4).map(|l| l.message).collect()
    }

    /// Calls an export; a trap marks the VM dead and comes back with context.
    fn call<P: WasmParams, R: WasmResults>(&mut self, name: &str, params: P) -> Result<R, Trap> {
        if let Some(t) = &self.failed {
            return Err(Trap(format!("VM already failed: {t}")));
        }
        let func = self
            .instance
            .get_typed_func::<P, R>(&mut self.store, name)
            .map_err(|e| Trap(format!("export {name}: {e:#}")))?;
        func.call(&mut self.store, params).map_err(|e| {
            let vm = self.store.data().vm_index;
            let logs: Vec<String> = self
                .shared
                .logs()
                .into_iter()
                .filter(|l| l.vm == vm)
                .rev()
                .take(5)
                .map(|l| format!("  [{}] {}", l.level_name(), l.message))
                .collect();
            let stderr = String::from_utf8_lossy(&self.stderr.contents()).into_owned();
            let trap = Trap(format!(
                "filter trapped in {name}: {e:?}\nlast log lines (newest first):\n{}\nstderr: {stderr}",
                logs.join("\n")
            ));
            self.failed = Some(trap.clone());
            trap
        })
    }

    fn must<T>(&self, r: Result<T, Trap>) -> T {
        r.unwrap_or_else(|t| panic!("{t}"))
    }

    /// Total wasm fuel (roughly, instructions) this VM has burnt.
    pub fn fuel_used(&self) -> u64 {
        u64::MAX - self.store.get_fuel().unwrap_or(u64::MAX)
    }

    pub fn failed(&self) -> Option<&Trap> {
        self.failed.as_ref()
    }

    /// The size of the VM's linear memory in bytes (it only grows; the soak watches it).
    pub fn memory_bytes(&mut self) -> u64 {
        match self.instance.get_export(&mut self.store, "memory") {
            Some(wasmtime::Extern::Memory(m)) => m.data_size(&self.store) as u64,
            _ => 0,
        }
    }

    // --- root context

    pub fn tick_period_ms(&self) -> u32 {
        self.store.data().tick_period_ms
    }

    pub fn try_tick(&mut self) -> Result<(), Trap> {
        self.store.data_mut().active = 1;
        self.call::<i32, ()>("proxy_on_tick", 1)
    }

    pub fn tick(&mut self) {
        let r = self.try_tick();
        self.must(r)
    }

    /// Delivers `proxy_on_queue_ready` for a queue this VM's root registered.
    pub fn queue_ready(&mut self, token: u32) {
        self.store.data_mut().active = 1;
        let r = self.call::<(i32, i32), ()>("proxy_on_queue_ready", (1, token as i32));
        self.must(r)
    }

    /// Delivers `proxy_on_queue_ready` for every non-empty shared queue this VM's root
    /// registered, as Envoy does on the worker's next event-loop turn after an enqueue; returns
    /// how many queues it delivered.
    pub fn deliver_queues(&mut self) -> usize {
        let vm = self.store.data().vm_index;
        let ready: Vec<u32> = {
            let q = self.shared.queues();
            let mut tokens: Vec<u32> = q
                .owners
                .iter()
                .filter(|(token, (owner, _))| *owner == vm && q.items.get(*token).is_some_and(|items| !items.is_empty()))
                .map(|(token, _)| *token)
                .collect();
            tokens.sort_unstable();
            tokens
        };
        for token in &ready {
            self.queue_ready(*token);
        }
        ready.len()
    }

    /// A property every context of this VM sees from now on.
    pub fn set_property(&mut self, path: &[&str], value: impl AsRef<[u8]>) {
        self.store.data_mut().properties.insert(path.join("\0"), value.as_ref().to_vec());
    }

    // --- streams

    /// Creates an HTTP context, as Envoy does for each new request.
    pub fn try_new_stream(&mut self) -> Result<u32, Trap> {
        let id = self.next_context;
        self.next_context += 1;
        self.store.data_mut().streams.insert(id, Stream::default());
        self.store.data_mut().active = id;
        self.call::<(i32, i32), ()>("proxy_on_context_create", (id as i32, 1))?;
        Ok(id)
    }

    pub fn new_stream(&mut self) -> u32 {
        let r = self.try_new_stream();
        self.must(r)
    }

    pub fn stream(&self, id: u32) -> &Stream {
        self.store.data().streams.get(&id).unwrap_or_else(|| panic!("no stream {id}"))
    }

    pub fn stream_mut(&mut self, id: u32) -> &mut Stream {
        self.store.data_mut().streams.get_mut(&id).unwrap_or_else(|| panic!("no stream {id}"))
    }

    /// A property this stream sees (for example the upstream host's metadata).
    pub fn set_stream_property(&mut self, id: u32, path: &[&str], value: impl AsRef<[u8]>) {
        self.stream_mut(id).properties.insert(path.join("\0"), value.as_ref().to_vec());
    }

    fn activate(&mut self, id: u32) {
        assert!(self.store.data().streams.contains_key(&id), "no stream {id}");
        self.store.data_mut().active = id;
    }

    pub fn try_request_headers(&mut self, id: u32, headers: Pairs, end_of_stream: bool) -> Result<Action, Trap> {
        self.activate(id);
        let n = headers.len() as i32;
        self.stream_mut(id).request_headers = lowercase(headers);
        let raw = self.call::<(i32, i32, i32), i32>("proxy_on_request_headers", (id as i32, n, end_of_stream as i32))?;
        let action = Action::from_raw(raw);
        let s = self.stream_mut(id);
        s.request_headers_paused = action == Action::Pause && s.local_reply.is_none();
        Ok(action)
    }

    pub fn request_headers(&mut self, id: u32, headers: &[(&str, &str)], end_of_stream: bool) -> Action {
        let r = self.try_request_headers(id, pairs(headers), end_of_stream);
        self.must(r)
    }

    /// Delivers a request body chunk. Data the filter lets through (`Continue`) moves to
    /// `request_body_out`; on `Pause` it stays buffered and the next call sees it all, as with
    /// Envoy's `StopIterationAndBuffer`.
    pub fn try_request_body(&mut self, id: u32, chunk: &[u8], end_of_stream: bool) -> Result<Action, Trap> {
        self.activate(id);
        if self.stream(id).request_headers_paused && !self.allow_on_headers_stop_iteration {
            return Err(headers_paused("request"));
        }
        let s = self.stream_mut(id);
        s.request_buffer.extend_from_slice(chunk);
        let size = s.request_buffer.len() as i32;
        let action =
            Action::from_raw(self.call::<(i32, i32, i32), i32>("proxy_on_request_body", (id as i32, size, end_of_stream as i32))?);
        let s = self.stream_mut(id);
        if action == Action::Continue && s.local_reply.is_none() {
            let data = std::mem::take(&mut s.request_buffer);
            s.request_body_out.extend_from_slice(&data);
        }
        Ok(action)
    }

    pub fn request_body(&mut self, id: u32, chunk: &[u8], end_of_stream: bool) -> Action {
        let r = self.try_request_body(id, chunk, end_of_stream);
        self.must(r)
    }

    pub fn request_trailers(&mut self, id: u32, trailers: &[(&str, &str)]) -> Action {
        self.activate(id);
        self.stream_mut(id).request_trailers = pairs(trailers);
        let r = self.call::<(i32, i32), i32>("proxy_on_request_trailers", (id as i32, trailers.len() as i32));
        Action::from_raw(self.must(r))
    }

    pub fn try_response_headers(&mut self, id: u32, headers: Pairs, end_of_stream: bool) -> Result<Action, Trap> {
        self.activate(id);
        let n = headers.len() as i32;
        self.stream_mut(id).response_headers = lowercase(headers);
        let raw = self.call::<(i32, i32, i32), i32>("proxy_on_response_headers", (id as i32, n, end_of_stream as i32))?;
        let action = Action::from_raw(raw);
        let s = self.stream_mut(id);
        s.response_headers_paused = action == Action::Pause && s.local_reply.is_none();
        Ok(action)
    }

    pub fn response_headers(&mut self, id: u32, headers: &[(&str, &str)], end_of_stream: bool) -> Action {
        let r = self.try_response_headers(id, pairs(headers), end_of_stream);
        self.must(r)
    }

    /// Delivers a response body chunk; see [`Vm::try_request_body`] for buffering.
    pub fn try_response_body(&mut self, id: u32, chunk: &[u8], end_of_stream: bool) -> Result<Action, Trap> {
        self.activate(id);
        if self.stream(id).response_headers_paused && !self.allow_on_headers_stop_iteration {
            return Err(headers_paused("response"));
        }
        let s = self.stream_mut(id);
        s.response_buffer.extend_from_slice(chunk);
        let size = s.response_buffer.len() as i32;
        let action =
            Action::from_raw(self.call::<(i32, i32, i32), i32>("proxy_on_response_body", (id as i32, size, end_of_stream as i32))?);
        let s = self.stream_mut(id);
        if action == Action::Continue {
            let data = std::mem::take(&mut s.response_buffer);
            s.response_body_out.extend_from_slice(&data);
        }
        Ok(action)
    }

    pub fn response_body(&mut self, id: u32, chunk: &[u8], end_of_stream: bool) -> Action {
        let r = self.try_response_body(id, chunk, end_of_stream);
        self.must(r)
    }

    pub fn response_trailers(&mut self, id: u32, trailers: &[(&str, &str)]) -> Action {
        self.activate(id);
        self.stream_mut(id).response_trailers = pairs(trailers);
        let r = self.call::<(i32, i32), i32>("proxy_on_response_trailers", (id as i32, trailers.len() as i32));
        Action::from_raw(self.must(r))
    }

    /// Ends a stream as Envoy does: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.
    /// Call it for completed streams and for streams reset by either side.
    pub fn try_end_stream(&mut self, id: u32) -> Result<(), Trap> {
        self.activate(id);
        self.call::<i32, i32>("proxy_on_done", id as i32)?;
        self.call::<i32, ()>("proxy_on_log", id as i32)?;
        self.call::<i32, ()>("proxy_on_delete", id as i32)?;
        self.stream_mut(id).done = true;
        Ok(())
    }

    pub fn end_stream(&mut self, id: u32) {
        let r = self.try_end_stream(id);
        self.must(r)
    }

    /// Drops an ended stream's record, as Envoy frees a finished stream (long runs such as the
    /// soak would otherwise keep every stream in the host).
    pub fn forget_stream(&mut self, id: u32) -> Option<Stream> {
        self.store.data_mut().streams.remove(&id)
    }

    /// Runs a whole exchange: request headers (and body), then, unless the filter replied
    /// locally, response headers (and body), then the end of the stream.
    pub fn exchange(&mut self, request: &[(&str, &str)], request_body: Option<&[u8]>, response: &[(&str, &str)], response_body: Option<&[u8]>) -> Stream {
        let id = self.new_stream();
        self.request_headers(id, request, request_body.is_none());
        if let Some(body) = request_body {
            if self.stream(id).local_reply.is_none() {
                self.request_body(id, body, true);
            }
        }
        if self.stream(id).local_reply.is_none() {
            self.response_headers(id, response, response_body.is_none());
            if let Some(body) = response_body {
                self.response_body(id, body, true);
            }
        }
        self.end_stream(id);
        self.stream(id).clone()
    }

    // --- callouts

    /// HTTP calls the filter dispatched that nobody has answered yet.
    pub fn http_calls(&self) -> Vec<HttpCall> {
        self.store.data().http_calls.clone()
    }

    pub fn grpc_calls(&self) -> Vec<GrpcCall> {
        self.store.data().grpc_calls.clone()
    }

    fn take_http_call(&mut self, token: u32) -> HttpCall {
        let calls = &mut self.store.data_mut().http_calls;
        let at = calls.iter().position(|c| c.token == token).unwrap_or_else(|| panic!("no pending http call {token}"));
        calls.remove(at)
    }

    /// Answers a dispatched HTTP call (`proxy_on_http_call_response`).
    pub fn try_respond_http_call(&mut self, token: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), Trap> {
        let call = self.take_http_call(token);
        let response = CalloutResponse { headers: pairs(headers), body: body.to_vec(), trailers: Vec::new() };
        self.deliver_http_call(call, response)
    }

    pub fn respond_http_call(&mut self, token: u32, headers: &[(&str, &str)], body: &[u8]) {
        let r = self.try_respond_http_call(token, headers, body);
        self.must(r)
    }

    /// Fails a dispatched HTTP call (timeout, reset, no healthy upstream): Envoy calls back
    /// with no headers and no body.
    pub fn fail_http_call(&mut self, token: u32) {
        let call = self.take_http_call(token);
        let r = self.deliver_http_call(call, CalloutResponse::default());
        self.must(r)
    }

    fn deliver_http_call(&mut self, call: HttpCall, response: CalloutResponse) -> Result<(), Trap> {
        let (n_headers, body_len, n_trailers) =
            (response.headers.len() as i32, response.body.len() as i32, response.trailers.len() as i32);
        let state = self.store.data_mut();
        state.callout = Some(response);
        state.active = call.context_id;
        let r = self.call::<(i32, i32, i32, i32, i32), ()>(
            "proxy_on_http_call_response",
            (call.context_id as i32, call.token as i32, n_headers, body_len, n_trailers),
        );
        self.store.data_mut().callout = None;
        r
    }

    fn take_grpc_call(&mut self, token: u32) -> GrpcCall {
        let calls = &mut self.store.data_mut().grpc_calls;
        let at = calls.iter().position(|c| c.token == token).unwrap_or_else(|| panic!("no pending grpc call {token}"));
        calls.remove(at)
    }

    /// Answers a unary gRPC call successfully with a serialized response message.
    pub fn try_respond_grpc(&mut self, token: u32, message: &[u8]) -> Result<(), Trap> {
        let call = self.take_grpc_call(token);
        let state = self.store.data_mut();
        state.grpc_receive = message.to_vec();
        state.active = call.context_id;
        self.call::<(i32, i32, i32), ()>("proxy_on_grpc_receive", (call.context_id as i32, token as i32, message.len() as i32))
    }

    pub fn respond_grpc(&mut self, token: u32, message: &[u8]) {
        let r = self.try_respond_grpc(token, message);
        self.must(r)
    }

    /// Fails a unary gRPC call with a gRPC status (14 UNAVAILABLE, 4 DEADLINE_EXCEEDED...) and
    /// its message, as Envoy does: a call it could not deliver gets 14 and its router's local
    /// reply text ([`GRPC_CONNECT_REFUSED`], [`GRPC_CONNECTION_TERMINATED`]).
    pub fn fail_grpc(&mut self, token: u32, status: u32, message: &str) {
        let call = self.take_grpc_call(token);
        let state = self.store.data_mut();
        state.active = call.context_id;
        state.grpc_status = (status, message.as_bytes().to_vec());
        let r = self.call::<(i32, i32, i32), ()>("proxy_on_grpc_close", (call.context_id as i32, token as i32, status as i32));
        self.must(r)
    }
}

/// Envoy's message for a gRPC call to a cluster whose endpoint refuses the connection.
pub const GRPC_CONNECT_REFUSED: &str = "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused";
/// Envoy's message for a gRPC call whose connection closed after the call went out.
pub const GRPC_CONNECTION_TERMINATED: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
/// Envoy's message for a gRPC call that ran past its timeout.
pub const GRPC_TIMEOUT: &str = "upstream request timeout";

/// What Envoy does with a body after the filter paused on headers without
/// `allow_on_headers_stop_iteration`: it never delivers it (proxy-wasm-cpp-host turns the pause
/// into StopAllIterationAndWatermark), and the stream hangs.
fn headers_paused(direction: &str) -> Trap {
    Trap(format!(
        "the filter paused on {direction} headers and did not resume: Envoy would not deliver this {direction} body \
         (it turns the pause into StopAllIterationAndWatermark) and the stream would hang, unless the wasm \
         PluginConfig sets allow_on_headers_stop_iteration: true (Envoy >= 1.35); say so with \
         VmBuilder::allow_on_headers_stop_iteration(true)"
    ))
}

/// `[("name", "value")]` to header pairs. Names are lower-cased, as Envoy's codecs do.
pub fn pairs(headers: &[(&str, &str)]) -> Pairs {
    headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec())).collect()
}

fn lowercase(pairs: Pairs) -> Pairs {
    pairs.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect()
}

impl Stream {
    pub fn request_header(&self, name: &str) -> Option<String> {
        state::find(&self.request_headers, name)
    }

    pub fn response_header(&self, name: &str) -> Option<String> {
        state::find(&self.response_headers, name)
    }

    /// Every value of a response header (`set-cookie` may repeat).
    pub fn response_header_all(&self, name: &str) -> Vec<String> {
        self.response_headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// A property the filter set (filter state), as text.
    pub fn filter_state(&self, path: &[&str]) -> Option<String> {
        self.set_properties.get(&path.join("\0")).map(|v| String::from_utf8_lossy(v).into_owned())
    }
}
