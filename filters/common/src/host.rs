//! The proxy-wasm glue every filter shares: logging, configuration, headers as bytes, local
//! replies, metrics, shared data and the clock.
//!
//! The SDK's string accessors (`get_http_request_header`, `get_http_request_headers`) unwrap
//! UTF-8 and panic on the first non-UTF-8 byte a client sends, so header access here is
//! byte-based. Nothing in this module panics on input from a client or an upstream.

use crate::config::{self, ConfigError};
use crate::http::HeaderSnapshot;
use crate::reply::Reply;
use crate::shared::{CasMismatch, Clock, SharedStore};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, BufferType, MapType, MetricType, Status};
use serde::de::DeserializeOwned;
use std::fmt;
use std::time::UNIX_EPOCH;

/// Who is speaking in a log line: the filter and the context id (`ab-variant[12]`).
#[derive(Clone, Copy)]
pub struct Tag {
    pub filter: &'static str,
    pub context_id: u32,
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.filter, self.context_id)
    }
}

/// Installs the logger at the host's log level and prints the filter's name and version once
/// per VM. Messages below Envoy's level are then never formatted, which matters on the request
/// path (a `trace!` that Envoy would drop still costs a host call if it is formatted).
pub fn start_vm(filter: &'static str, version: &str) {
    let level = hostcalls::get_log_level().unwrap_or(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_log_level(level);
    log::info!("{filter} {version} starting");
}

/// Reads and compiles the plugin configuration. On failure logs one line naming the field,
/// e.g. `ab-variant: experiments[1].variants: weights sum to 0`, and returns `None` so that
/// `on_configure` returns false and Envoy rejects the config.
pub fn load_config<Raw, T>(filter: &'static str) -> Option<T>
where
    Raw: DeserializeOwned,
    T: TryFrom<Raw, Error = ConfigError>,
{
    let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten();
    match config::load::<Raw, T>(bytes.as_deref()) {
        Ok(config) => Some(config),
        Err(err) => {
            log::error!("{filter}: {err}");
            None
        }
    }
}

/// The header maps a filter reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Map {
    Request,
    Response,
    ResponseTrailers,
    CallResponse,
}

impl Map {
    fn map_type(self) -> MapType {
        match self {
            Map::Request => MapType::HttpRequestHeaders,
            Map::Response => MapType::HttpResponseHeaders,
            Map::ResponseTrailers => MapType::HttpResponseTrailers,
            Map::CallResponse => MapType::HttpCallResponseHeaders,
        }
    }
}

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(map_type: MapType, return_data: *mut *mut u8, return_size: *mut usize) -> Status;
}

/// A whole header map copied into the VM in one host call, parsed in place. The SDK's
/// `get_http_request_headers_bytes` allocates a `String` and a `Vec` per header; a filter that
/// needs several headers pays less for one crossing and one buffer.
pub fn snapshot(map: Map) -> HeaderSnapshot {
    #[cfg(target_arch = "wasm32")]
    {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: on Ok the host returns a buffer it allocated through
        // `proxy_on_memory_allocate` (a boxed slice of `size` bytes), which we now own.
        let raw = unsafe {
            match proxy_get_header_map_pairs(map.map_type(), &mut data, &mut size) {
                Status::Ok if !data.is_null() => Vec::from_raw_parts(data, size, size),
                _ => Vec::new(),
            }
        };
        HeaderSnapshot::from_serialized(raw)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = map;
        HeaderSnapshot::from_serialized(Vec::new())
    }
}

/// One header's value as bytes; `None` when absent.
pub fn header(map: Map, name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(map.map_type(), name).ok().flatten()
}

/// All headers of a map as (name, bytes) pairs.
pub fn headers(map: Map) -> Vec<(String, Vec<u8>)> {
    hostcalls::get_map_bytes(map.map_type()).unwrap_or_default()
}

/// Replaces every value of `name` with `value`.
pub fn set_header(map: Map, name: &str, value: &[u8]) {
    let _ = hostcalls::set_map_value_bytes(map.map_type(), name, Some(value));
}

/// Adds a value, keeping existing ones (for `set-cookie`).
pub fn add_header(map: Map, name: &str, value: &[u8]) {
    let _ = hostcalls::add_map_value_bytes(map.map_type(), name, value);
}

pub fn remove_header(map: Map, name: &str) {
    let _ = hostcalls::remove_map_value(map.map_type(), name);
}

/// The body buffers of an HTTP stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    Request,
    Response,
}

impl Body {
    fn buffer_type(self) -> BufferType {
        match self {
            Body::Request => BufferType::HttpRequestBody,
            Body::Response => BufferType::HttpResponseBody,
        }
    }
}

/// Up to `max` bytes of the body buffer from `start` (what Envoy holds for this callback);
/// `None` when it is empty. The SDK's `get_http_request_body` unwraps the host's status.
pub fn body(which: Body, start: usize, max: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(which.buffer_type(), start, max).ok().flatten()
}

/// Replaces `size` bytes of the body buffer at `start` with `value` (0 and the buffer's length
/// replace it all); false when the host refuses.
pub fn set_body(which: Body, start: usize, size: usize, value: &[u8]) -> bool {
    hostcalls::set_buffer(which.buffer_type(), start, size, value).is_ok()
}

/// Up to `max` bytes of the body of the HTTP call response being delivered (`None` when it is
/// empty). The SDK's `get_http_call_response_body` unwraps the host's status.
pub fn call_response_body(max: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, max).ok().flatten()
}

/// Sends a unary gRPC call to the Envoy cluster `cluster`; the call's token, or `None` when
/// Envoy refused it (no such cluster). Envoy runs every call from the VM's root context, so a
/// call outlives the request that made it; its answer comes to the context that made it while
/// that context exists. `cluster` must not parse as a serialized `GrpcService` (Envoy tries
/// that first, and the failure that follows is a status the SDK panics on).
pub fn grpc_call(cluster: &str, service: &str, method: &str, message: &[u8], timeout_ms: u32) -> Option<u32> {
    let timeout = std::time::Duration::from_millis(u64::from(timeout_ms));
    hostcalls::dispatch_grpc_call(cluster, service, method, Vec::new(), Some(message), timeout).ok()
}

/// Up to `max` bytes of the gRPC response message being delivered.
pub fn grpc_response(max: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, max).ok().flatten()
}

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_status(code: *mut u32, return_data: *mut *mut u8, return_size: *mut usize) -> Status;
}

/// The message of the gRPC status a call just failed with (in `on_grpc_call_response`), at
/// most `max` bytes, as bytes: the SDK's `get_grpc_status` panics on a message that is not
/// UTF-8, and the message comes from the upstream.
pub fn grpc_status_message(max: usize) -> Vec<u8> {
    #[cfg(target_arch = "wasm32")]
    {
        let (mut code, mut data, mut size) = (0u32, std::ptr::null_mut(), 0usize);
        // SAFETY: on Ok the host returns a buffer it allocated through
        // `proxy_on_memory_allocate` (a boxed slice of `size` bytes), which we now own.
        let mut message = unsafe {
            match proxy_get_status(&mut code, &mut data, &mut size) {
                Status::Ok if !data.is_null() => Vec::from_raw_parts(data, size, size),
                _ => Vec::new(),
            }
        };
        message.truncate(max);
        message
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = max;
        Vec::new()
    }
}

/// Registers a shared queue whose `on_queue_ready` comes to this root context (Envoy runs it
/// on this worker's thread).
pub fn register_queue(name: &str) -> Option<u32> {
    hostcalls::register_shared_queue(name).ok()
}

/// Adds an item to a shared queue; false when the queue is gone.
pub fn enqueue(queue: u32, item: &[u8]) -> bool {
    hostcalls::enqueue_shared_queue(queue, Some(item)).is_ok()
}

/// The next item of a shared queue; `None` when it is empty or gone.
pub fn dequeue(queue: u32) -> Option<Vec<u8>> {
    hostcalls::dequeue_shared_queue(queue).ok().flatten()
}

/// Makes `context_id` the context the following calls act on (`proxy_set_effective_context`):
/// a root context that held requests back finishes them with header calls, `resume_request`
/// and `send_reply` after entering each stream, then enters itself again before it dispatches
/// calls of its own. False when the context no longer exists (the client went away).
pub fn enter_context(context_id: u32) -> bool {
    hostcalls::set_effective_context(context_id).is_ok()
}

/// Lets a request that a callback paused continue to the next filter.
pub fn resume_request() {
    let _ = hostcalls::resume_http_request();
}

/// A property such as `["xds", "cluster_name"]`; `None` when Envoy has none.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

/// Records a value in Envoy filter state, where access logs read it as `%FILTER_STATE(...)%`.
pub fn set_property(path: &[&str], value: &[u8]) {
    let _ = hostcalls::set_property(path.to_vec(), Some(value));
}

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> Status;
}

/// Records a per-request field for the access log: Envoy keeps `value` in the request's filter
/// state under `wasm.<name>` (a mutable bytes value, filter-chain life span; the last write
/// wins), and `%FILTER_STATE(wasm.<name>:PLAIN)%` prints it. From an upstream filter it lands
/// in the downstream request's filter state too (the upstream filter chain shares the
/// request's stream info). One host call and no allocation: a one-segment property path is
/// the name itself, where [`set_property`] builds a path vector first.
pub fn record(name: &str, value: &[u8]) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: both pointers are valid for the given lengths for the duration of the call; the
    // host copies what it keeps.
    unsafe {
        let _ = proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len());
    }
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (name, value);
}

/// [`record`] of a number, as decimal text.
pub fn record_u64(name: &str, value: u64) {
    let mut digits = [0u8; 20];
    record(name, crate::http::decimal(value, &mut digits));
}

/// Sends `reply` to the client in place of the upstream response.
pub fn send_reply(reply: &Reply) {
    let headers: Vec<(&str, &str)> =
        reply.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let _ = hostcalls::send_http_response(u32::from(reply.status), headers, Some(&reply.body));
}

/// The one error policy: a callback's `Err(reply)` is logged and sent as a local reply, and
/// the stream stops there.
pub fn finish(tag: Tag, result: Result<Action, Reply>) -> Action {
    match result {
        Ok(action) => action,
        Err(reply) => {
            match &reply.warn {
                Some(line) => log::warn!("{tag}: {line}"),
                None => log::debug!("{tag}: local reply {}", reply.status),
            }
            send_reply(&reply);
            Action::Pause
        }
    }
}

/// A counter in Envoy's stats. Envoy shows it at `/stats/prometheus` under the name given to
/// [`Counter::define`].
#[derive(Clone, Copy, Debug)]
pub struct Counter(Option<u32>);

impl Counter {
    /// Defines the counter (Envoy returns the existing one when the name is taken). A host
    /// that refuses leaves a counter that counts nothing rather than failing the request.
    pub fn define(name: &str) -> Counter {
        Counter(hostcalls::define_metric(MetricType::Counter, name).ok())
    }

    pub fn inc(self) {
        self.add(1);
    }

    pub fn add(self, n: u64) {
        if let Some(id) = self.0 {
            let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// A counter counted inside the VM and added to Envoy's stat by [`Tally::flush`], which the
/// filter calls from its root context's tick. Each host call costs about a microsecond; a
/// request that bumps three counters would otherwise pay for three.
pub struct Tally {
    counter: Counter,
    pending: std::cell::Cell<u64>,
}

impl Tally {
    pub fn define(name: &str) -> Tally {
        Tally { counter: Counter::define(name), pending: std::cell::Cell::new(0) }
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.pending.set(self.pending.get().saturating_add(n));
    }

    /// Adds what was counted since the last flush to Envoy's stat.
    pub fn flush(&self) {
        let n = self.pending.replace(0);
        if n > 0 {
            self.counter.add(n);
        }
    }
}

/// Responses counted by HTTP status class: `<prefix>.responses_1xx` ... `responses_5xx` and
/// `responses_other`, so error rates can be compared side by side (variants, providers).
pub struct StatusTallies(Vec<Tally>);

impl StatusTallies {
    pub fn define(prefix: &str) -> StatusTallies {
        StatusTallies(crate::http::STATUS_CLASSES.iter().map(|class| Tally::define(&format!("{prefix}.responses_{class}"))).collect())
    }

    /// Counts one response with this `:status` value.
    pub fn count(&self, status: &[u8]) {
        let class = crate::http::status_class(status);
        if let Some(t) = crate::http::STATUS_CLASSES.iter().position(|c| *c == class).and_then(|i| self.0.get(i)) {
            t.inc();
        }
    }

    pub fn tallies(&self) -> impl Iterator<Item = &Tally> {
        self.0.iter()
    }
}

/// How often filters flush their [`Tally`] counters.
pub const TALLY_FLUSH_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// A gauge in Envoy's stats.
#[derive(Clone, Copy, Debug)]
pub struct Gauge(Option<u32>);

impl Gauge {
    pub fn define(name: &str) -> Gauge {
        Gauge(hostcalls::define_metric(MetricType::Gauge, name).ok())
    }

    pub fn set(self, value: u64) {
        if let Some(id) = self.0 {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}

/// Envoy's shared data and clock, for logic written against [`SharedStore`] and [`Clock`].
#[derive(Clone, Copy, Default)]
pub struct Envoy;

impl SharedStore for Envoy {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), Some(cas))) => Some((value, cas)),
            Ok((None, Some(cas))) => Some((Vec::new(), cas)),
            _ => None,
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
        match hostcalls::set_shared_data(key, Some(value), if cas == 0 { None } else { Some(cas) }) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(CasMismatch),
            Err(_) => Err(CasMismatch),
        }
    }
}

impl Clock for Envoy {
    fn now_ns(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

#[cfg(target_os = "wasi")]
#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn random_get(buf: *mut u8, len: usize) -> u16;
}

/// 64 random bits from WASI `random_get`, which Envoy implements with its own random source.
/// If the host refuses, the clock mixed through `fmix64` still gives distinct values.
pub fn random_u64() -> u64 {
    #[cfg(target_os = "wasi")]
    {
        let mut bytes = [0u8; 8];
        // SAFETY: `bytes` is a valid, writable buffer of the length passed.
        if unsafe { random_get(bytes.as_mut_ptr(), bytes.len()) } == 0 {
            return u64::from_le_bytes(bytes);
        }
    }
    crate::hash::fmix64(Envoy.now_ns())
}
