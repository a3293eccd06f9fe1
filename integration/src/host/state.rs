//! What the host keeps: per process ([`Shared`], standing for one Envoy), per VM ([`VmState`],
//! standing for one worker thread's VM) and per HTTP stream ([`Stream`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use wasmtime_wasi::p1::WasiP1Ctx;

/// Header or trailer pairs, in order, values as bytes (Envoy allows non-UTF-8 values).
pub type Pairs = Vec<(String, Vec<u8>)>;

/// A log line from a filter.
#[derive(Clone, Debug)]
pub struct LogLine {
    pub vm: usize,
    pub level: u32,
    pub message: String,
}

impl LogLine {
    pub fn level_name(&self) -> &'static str {
        match self.level {
            0 => "trace",
            1 => "debug",
            2 => "info",
            3 => "warn",
            4 => "error",
            _ => "critical",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// What one Envoy process shares between its worker VMs: shared data with CAS, shared queues,
/// metrics (Envoy merges stats of the same name), the clock, and the log.
pub struct Shared {
    data: Mutex<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: AtomicU32,
    queues: Mutex<Queues>,
    metrics: Mutex<BTreeMap<String, (MetricKind, u64)>>,
    clock_ns: AtomicU64,
    logs: Mutex<Vec<LogLine>>,
    next_vm: AtomicU32,
}

#[derive(Default)]
pub(crate) struct Queues {
    pub by_name: HashMap<(String, String), u32>,
    pub items: HashMap<u32, VecDeque<Vec<u8>>>,
    /// token -> (vm index, root context id) of the registering root context.
    pub owners: HashMap<u32, (usize, u32)>,
    pub next: u32,
}

/// 2026-11-27T00:00:00Z: the default start of test time.
pub const DEFAULT_START_NS: u64 = 1_795_737_600 * 1_000_000_000;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            data: Mutex::new(HashMap::new()),
            next_cas: AtomicU32::new(1),
            queues: Mutex::new(Queues::default()),
            metrics: Mutex::new(BTreeMap::new()),
            clock_ns: AtomicU64::new(DEFAULT_START_NS),
            logs: Mutex::new(Vec::new()),
            next_vm: AtomicU32::new(0),
        })
    }

    pub(crate) fn vm_index(&self) -> usize {
        self.next_vm.fetch_add(1, Ordering::SeqCst) as usize
    }

    // --- time

    pub fn now_ns(&self) -> u64 {
        self.clock_ns.load(Ordering::SeqCst)
    }

    pub fn set_time_ns(&self, ns: u64) {
        self.clock_ns.store(ns, Ordering::SeqCst);
    }

    pub fn set_time_s(&self, s: u64) {
        self.set_time_ns(s * 1_000_000_000);
    }

    pub fn advance_ms(&self, ms: u64) {
        self.clock_ns.fetch_add(ms * 1_000_000, Ordering::SeqCst);
    }

    pub fn advance_s(&self, s: u64) {
        self.advance_ms(s * 1000);
    }

    // --- shared data, with Envoy's semantics (proxy-wasm-cpp-host `SharedData`)

    pub fn shared_get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        lock(&self.data).get(key).cloned()
    }

    /// `cas` 0 writes unconditionally; a missing key is written whatever `cas` says.
    pub fn shared_set(&self, key: &str, value: &[u8], cas: u32) -> bool {
        let mut data = lock(&self.data);
        if let Some((_, current)) = data.get(key) {
            if cas != 0 && cas != *current {
                return false;
            }
        }
        let next = self.next_cas.fetch_add(1, Ordering::SeqCst).max(1);
        data.insert(key.to_string(), (value.to_vec(), next));
        true
    }

    /// The value of a shared-data key, for assertions.
    pub fn shared_value(&self, key: &str) -> Option<Vec<u8>> {
        self.shared_get(key).map(|(v, _)| v)
    }

    pub fn shared_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = lock(&self.data).keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Total bytes of keys and values in shared data, to check memory stays bounded.
    pub fn shared_bytes(&self) -> usize {
        lock(&self.data).iter().map(|(k, (v, _))| k.len() + v.len()).sum()
    }

    pub(crate) fn queues(&self) -> MutexGuard<'_, Queues> {
        lock(&self.queues)
    }

    // --- metrics

    pub(crate) fn define_metric(&self, kind: MetricKind, name: &str) {
        lock(&self.metrics).entry(name.to_string()).or_insert((kind, 0));
    }

    pub(crate) fn update_metric(&self, name: &str, f: impl FnOnce(u64) -> u64) {
        if let Some((_, value)) = lock(&self.metrics).get_mut(name) {
            *value = f(*value);
        }
    }

    /// A metric's value by the name the filter defined it with.
    pub fn metric(&self, name: &str) -> Option<u64> {
        lock(&self.metrics).get(name).map(|(_, v)| *v)
    }

    /// Every metric, sorted by name.
    pub fn metrics(&self) -> Vec<(String, MetricKind, u64)> {
        lock(&self.metrics).iter().map(|(n, (k, v))| (n.clone(), *k, *v)).collect()
    }

    // --- logs

    pub(crate) fn log(&self, line: LogLine) {
        if std::env::var_os("HOST_LOG").is_some() {
            eprintln!("[vm{} {}] {}", line.vm, line.level_name(), line.message);
        }
        lock(&self.logs).push(line);
    }

    pub fn logs(&self) -> Vec<LogLine> {
        lock(&self.logs).clone()
    }

    /// Log messages at `level` or above (0 trace .. 5 critical).
    pub fn log_messages(&self, min_level: u32) -> Vec<String> {
        lock(&self.logs).iter().filter(|l| l.level >= min_level).map(|l| l.message.clone()).collect()
    }

    pub fn clear_logs(&self) {
        lock(&self.logs).clear();
    }
}

/// A local reply the filter sent with `proxy_send_local_response`.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalReply {
    pub status: u32,
    pub details: String,
    pub body: Vec<u8>,
    pub headers: Pairs,
    pub grpc_status: i32,
}

impl LocalReply {
    pub fn header(&self, name: &str) -> Option<String> {
        find(&self.headers, name)
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

pub(crate) fn find(pairs: &Pairs, name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// One HTTP stream as the host sees it.
#[derive(Default, Debug, Clone)]
pub struct Stream {
    pub request_headers: Pairs,
    pub request_trailers: Pairs,
    pub response_headers: Pairs,
    pub response_trailers: Pairs,
    /// Body data the filter is holding (it returned `Pause` on a body callback).
    pub request_buffer: Vec<u8>,
    pub response_buffer: Vec<u8>,
    /// Body data the filter let through, in order: what the upstream (request) or the client
    /// (response) receives.
    pub request_body_out: Vec<u8>,
    pub response_body_out: Vec<u8>,
    pub local_reply: Option<LocalReply>,
    /// Properties visible to this stream (`["xds", "cluster_name"]` joined by NUL).
    pub properties: HashMap<String, Vec<u8>>,
    /// Properties the filter set (filter state).
    pub set_properties: HashMap<String, Vec<u8>>,
    pub request_resumed: u32,
    pub response_resumed: u32,
    /// The filter answered `Pause` to these headers and has not resumed the stream since.
    pub request_headers_paused: bool,
    pub response_headers_paused: bool,
    pub request_closed: bool,
    pub response_closed: bool,
    pub done: bool,
}

/// An outgoing `dispatch_http_call` waiting for the test to answer it.
#[derive(Clone, Debug)]
pub struct HttpCall {
    pub token: u32,
    pub context_id: u32,
    pub upstream: String,
    pub headers: Pairs,
    pub body: Vec<u8>,
    pub trailers: Pairs,
    pub timeout_ms: u32,
}

impl HttpCall {
    pub fn header(&self, name: &str) -> Option<String> {
        find(&self.headers, name)
    }
}

/// An outgoing `dispatch_grpc_call` waiting for the test to answer it.
#[derive(Clone, Debug)]
pub struct GrpcCall {
    pub token: u32,
    pub context_id: u32,
    /// The serialized `GrpcService` (or plain cluster name) the filter passed.
    pub upstream: Vec<u8>,
    pub service: String,
    pub method: String,
    pub metadata: Pairs,
    pub message: Vec<u8>,
    pub timeout_ms: u32,
}

/// The response an HTTP or gRPC callout is being answered with, while the filter reads it.
#[derive(Default, Clone, Debug)]
pub(crate) struct CalloutResponse {
    pub headers: Pairs,
    pub body: Vec<u8>,
    pub trailers: Pairs,
}

/// Everything the host functions of one VM can reach.
pub struct VmState {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) shared: Arc<Shared>,
    pub(crate) vm_index: usize,
    pub(crate) vm_id: String,
    pub(crate) vm_config: Vec<u8>,
    pub(crate) plugin_config: Vec<u8>,
    pub(crate) root_id: u32,
    /// The context whose callback is running; header maps and buffers refer to it.
    pub(crate) active: u32,
    pub(crate) streams: HashMap<u32, Stream>,
    /// Properties every context sees unless its stream overrides them.
    pub(crate) properties: HashMap<String, Vec<u8>>,
    pub(crate) metric_names: Vec<(String, MetricKind)>,
    pub(crate) tick_period_ms: u32,
    pub(crate) next_token: u32,
    pub(crate) http_calls: Vec<HttpCall>,
    pub(crate) grpc_calls: Vec<GrpcCall>,
    pub(crate) callout: Option<CalloutResponse>,
    /// The body of the current `proxy_on_grpc_receive`.
    pub(crate) grpc_receive: Vec<u8>,
    /// The status code and message of the current `proxy_on_grpc_close` (`proxy_get_status`).
    pub(crate) grpc_status: (u32, Vec<u8>),
    pub(crate) done_called: bool,
    /// Results of `proxy_call_foreign_function` by name, for filters that use them.
    pub(crate) foreign: HashMap<String, Vec<u8>>,
    /// What `proxy_get_log_level` answers: 2 (info) like Envoy's default, or `HOST_LOG_LEVEL`.
    pub(crate) log_level: u32,
}
