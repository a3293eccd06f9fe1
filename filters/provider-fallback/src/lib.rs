//! provider-fallback: LLM provider failover with model override, credentials and
//! OpenAI/Anthropic translation, in two roles of one module (`role` in the config).
//!
//! - **router** (a normal HTTP filter): reads the OpenAI request body, validates it, sets the
//!   model header so routes can match on it, and turns Envoy's own non-JSON error replies into
//!   OpenAI errors.
//! - **upstream** (an upstream HTTP filter on the provider cluster): once per attempt, finds
//!   the provider from the chosen endpoint's metadata (`llm.provider`, else the cluster name),
//!   applies its host, path, credentials and model, translates to and from Anthropic, and
//!   shapes every error as an OpenAI error. Envoy's retry policy does the failing over.
//!
//! The decisions live in [`router`], [`upstream`], [`to_anthropic`], [`from_anthropic`],
//! [`errors`] and [`sse`]; this file only moves data between Envoy and them.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod config;
pub mod errors;
pub mod from_anthropic;
pub mod router;
pub mod sse;
pub mod to_anthropic;
pub mod upstream;

use config::{Config, RawConfig, RouterConfig, Schema, UpstreamConfig};
use filter_common::host::{self, Body, Map, StatusTallies, Tag, Tally};
use filter_common::Reply;
use from_anthropic::ChunkStream;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::rc::Rc;
use upstream::{BodyWork, Original, ORIGINAL_PROPERTY};

const FILTER: &str = "provider-fallback";

/// Where the upstream role finds the provider of the endpoint an attempt goes to.
const PROVIDER_METADATA: [&str; 5] = ["xds", "upstream_host_metadata", "filter_metadata", "llm", "provider"];
const CLUSTER_NAME: [&str; 2] = ["xds", "cluster_name"];
/// Largest error body held (provider errors and Envoy's replies are a few hundred bytes).
const MAX_ERROR_BYTES: usize = 64 * 1024;
/// How much of a non-JSON error's text goes into the OpenAI error message.
const MAX_SNIPPET: usize = 256;
/// Access-log fields (filter state `wasm.<field>`, shared by both roles and every attempt of a
/// request): the model the client asked for (router role), and per attempt the provider it
/// went to and the model that provider was asked for (its `modelNameOverride`, else the
/// requested model). The last attempt's values stand: the provider that answered.
const MODEL_REQUESTED_FIELD: &str = "provider_fallback.model_requested";
const PROVIDER_FIELD: &str = "provider_fallback.provider";
const MODEL_FIELD: &str = "provider_fallback.model";

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { state: None }) });
}}

struct RouterMetrics {
    requests: Tally,
    rejected: Tally,
    errors_rewritten: Tally,
}

struct ProviderMetrics {
    attempts: Tally,
    /// Responses as the client sees them after translation.
    responses: StatusTallies,
    translation_failures: Tally,
}

enum Metrics {
    Router(RouterMetrics),
    Upstream(Vec<ProviderMetrics>),
}

struct State {
    config: Config,
    metrics: Metrics,
}

impl State {
    fn tallies(&self) -> Vec<&Tally> {
        match &self.metrics {
            Metrics::Router(m) => vec![&m.requests, &m.rejected, &m.errors_rewritten],
            Metrics::Upstream(providers) => providers
                .iter()
                .flat_map(|p| std::iter::once(&p.attempts).chain(p.responses.tallies()).chain(std::iter::once(&p.translation_failures)))
                .collect(),
        }
    }
}

struct Root {
    state: Option<Rc<State>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _: usize) -> bool {
        host::start_vm(FILTER, env!("CARGO_PKG_VERSION"));
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        let Some(config) = host::load_config::<RawConfig, Config>(FILTER) else {
            return false;
        };
        let metrics = match &config {
            Config::Router(_) => Metrics::Router(RouterMetrics {
                requests: Tally::define("provider_fallback.router.requests"),
                rejected: Tally::define("provider_fallback.router.rejected"),
                errors_rewritten: Tally::define("provider_fallback.router.errors_rewritten"),
            }),
            Config::Upstream(c) => Metrics::Upstream(
                c.providers
                    .iter()
                    .map(|p| ProviderMetrics {
                        attempts: Tally::define(&format!("provider_fallback.{}.attempts", p.name)),
                        responses: StatusTallies::define(&format!("provider_fallback.{}", p.name)),
                        translation_failures: Tally::define(&format!("provider_fallback.{}.translation_failures", p.name)),
                    })
                    .collect(),
            ),
        };
        let role = match config {
            Config::Router(_) => "router",
            Config::Upstream(_) => "upstream",
        };
        log::info!("{FILTER}: configured as the {role} role");
        self.state = Some(Rc::new(State { config, metrics }));
        self.set_tick_period(host::TALLY_FLUSH_PERIOD);
        true
    }

    fn on_tick(&mut self) {
        if let Some(state) = &self.state {
            state.tallies().into_iter().for_each(Tally::flush);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let tag = Tag { filter: FILTER, context_id };
        let state = self.state.clone()?;
        Some(match &state.config {
            Config::Router(_) => Box::new(RouterStream { tag, state, reading: false, rewrite_error: None }),
            Config::Upstream(_) => Box::new(UpstreamStream { tag, state, provider: None, body: BodyWork::Pass, include_usage: false, response: Response::Pass }),
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

fn router_parts(state: &State) -> Option<(&RouterConfig, &RouterMetrics)> {
    match (&state.config, &state.metrics) {
        (Config::Router(c), Metrics::Router(m)) => Some((c, m)),
        _ => None,
    }
}

fn upstream_parts(state: &State) -> Option<(&UpstreamConfig, &[ProviderMetrics])> {
    match (&state.config, &state.metrics) {
        (Config::Upstream(c), Metrics::Upstream(m)) => Some((c, m)),
        _ => None,
    }
}

// --- the router role

struct RouterStream {
    tag: Tag,
    state: Rc<State>,
    /// The headers are held until the body is read.
    reading: bool,
    /// A non-JSON error response whose body becomes an OpenAI error: its status, and the
    /// start of its text once the body outgrew what is kept.
    rewrite_error: Option<(u16, Vec<u8>)>,
}

impl RouterStream {
    fn reject(&mut self, reply: Reply) -> Action {
        if let Some((_, m)) = router_parts(&self.state) {
            m.rejected.inc();
        }
        self.reading = false;
        host::finish(self.tag, Err(reply))
    }
}

impl Context for RouterStream {}

impl HttpContext for RouterStream {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        let state = self.state.clone();
        let Some((config, metrics)) = router_parts(&state) else { return Action::Continue };
        let headers = host::snapshot(Map::Request);
        // Only this filter names the model: a client's own copy of the header goes.
        if headers.get(&config.model_header).is_some() {
            host::remove_header(Map::Request, &config.model_header);
        }
        let method = headers.get(":method").unwrap_or_default();
        let path = headers.get(":path").unwrap_or_default();
        if !router::applies(config, method, path) {
            return Action::Continue;
        }
        metrics.requests.inc();
        if let Err(reply) = router::check_declared_length(headers.get("content-length"), config.max_request_bytes) {
            return self.reject(reply);
        }
        if end_of_stream {
            return self.reject(router::missing_body());
        }
        // Routing waits for the model header, which waits for the body.
        self.reading = true;
        Action::Pause
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if !self.reading {
            return Action::Continue;
        }
        let state = self.state.clone();
        let Some((config, _)) = router_parts(&state) else { return Action::Continue };
        if size > config.max_request_bytes {
            return self.reject(router::too_large(config.max_request_bytes));
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = host::body(Body::Request, 0, size).unwrap_or_default();
        match router::model(&body) {
            Ok(model) => {
                log::debug!("{}: model {model}", self.tag);
                host::set_header(Map::Request, &config.model_header, model.as_bytes());
                host::record(MODEL_REQUESTED_FIELD, model.as_bytes());
                self.reading = false;
                Action::Continue
            }
            Err(reply) => self.reject(reply),
        }
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        // The body never ended with end_of_stream; no LLM API sends request trailers.
        if self.reading {
            return self.reject(errors::invalid_request("unsupported_trailers", None, "Request trailers are not supported."));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        if end_of_stream {
            return Action::Continue;
        }
        let headers = host::snapshot(Map::Response);
        let status = status_of(headers.get(":status"));
        if status < 400 || errors::is_json(headers.get("content-type")) {
            return Action::Continue;
        }
        // Envoy's own replies (reset, timeout, no healthy upstream) are plain text.
        self.rewrite_error = Some((status, Vec::new()));
        Action::Pause
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        let Some((status, snippet)) = &mut self.rewrite_error else { return Action::Continue };
        let status = *status;
        if size > MAX_ERROR_BYTES {
            // Keep the start for the message and stop holding the rest (Envoy can only drop a
            // body buffer from its start).
            if snippet.is_empty() {
                *snippet = host::body(Body::Response, 0, MAX_SNIPPET).unwrap_or_default();
            }
            host::set_body(Body::Response, 0, size, b"");
        }
        if !end_of_stream {
            return Action::Pause;
        }
        // Whole when it was small enough to hold, else its start.
        let text = if snippet.is_empty() { host::body(Body::Response, 0, size).unwrap_or_default() } else { std::mem::take(snippet) };
        let body = errors::from_plain(status, &text);
        let held = if size > MAX_ERROR_BYTES { 0 } else { size };
        host::set_body(Body::Response, 0, held, &body);
        host::set_header(Map::Response, "content-type", b"application/json");
        host::set_header(Map::Response, "content-length", body.len().to_string().as_bytes());
        if let Some((_, m)) = router_parts(&self.state) {
            m.errors_rewritten.inc();
        }
        self.rewrite_error = None;
        Action::Continue
    }
}

fn status_of(value: Option<&[u8]>) -> u16 {
    value.and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

// --- the upstream role

/// What happens to the response of an attempt.
enum Response {
    /// Passed as the provider sent it.
    Pass,
    /// Anthropic SSE, translated chunk by chunk.
    Stream(Box<ChunkStream>),
    /// Held whole, then replaced: an Anthropic JSON answer or an error. `headers_sent`: the
    /// headers went on (errors; see `on_http_response_headers`), so only the body is replaced.
    Hold { kind: Held, status: u16, limit: usize, overflow: bool, headers_sent: bool },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Held {
    Completion,
    Error,
    /// Cannot be translated whatever the body says (compressed, unexpected type).
    Unusable(&'static str),
}

struct UpstreamStream {
    tag: Tag,
    state: Rc<State>,
    /// The provider of this attempt (index into the config's providers).
    provider: Option<usize>,
    body: BodyWork,
    include_usage: bool,
    response: Response,
}

impl UpstreamStream {
    /// The client's request line: recorded by the first attempt, read back by the others.
    fn original(&self, path: &[u8], content_length: Option<&[u8]>) -> Original {
        if let Some(o) = host::property(&[ORIGINAL_PROPERTY]).as_deref().and_then(Original::decode) {
            return o;
        }
        let o = Original { path: path.to_vec(), content_length: content_length.map(<[u8]>::to_vec) };
        host::set_property(&[ORIGINAL_PROPERTY], &o.encode());
        o
    }

    fn request_headers(&mut self, end_of_stream: bool) -> Result<Action, Reply> {
        let state = self.state.clone();
        let Some((config, metrics)) = upstream_parts(&state) else { return Ok(Action::Continue) };
        let name = host::property(&PROVIDER_METADATA).filter(|n| !n.is_empty());
        let name = match name {
            Some(n) => n,
            None => host::property(&CLUSTER_NAME).unwrap_or_default(),
        };
        let Some((index, provider)) = config.provider(&name) else {
            let shown = String::from_utf8_lossy(&name[..name.len().min(64)]).into_owned();
            let message = format!("no provider is configured for upstream `{shown}` (endpoint metadata llm.provider, or the cluster name)");
            return Err(Reply::json(500, &errors::body("server_error", Some("provider_not_configured"), None, &message)).with_warning(message));
        };
        self.provider = Some(index);
        if let Some(m) = metrics.get(index) {
            m.attempts.inc();
        }
        host::record(PROVIDER_FIELD, provider.name.as_bytes());
        match &provider.model_override {
            Some(model) => host::record(MODEL_FIELD, model.as_bytes()),
            // A previous attempt may have recorded another provider's override.
            None => {
                if let Some(model) = host::property(&[MODEL_REQUESTED_FIELD]) {
                    host::record(MODEL_FIELD, &model);
                }
            }
        }
        let headers = host::snapshot(Map::Request);
        let original = self.original(headers.get(":path").unwrap_or(b"/"), headers.get("content-length"));
        let plan = upstream::plan(provider, |name| headers.get(name), &original)?;
        for name in &plan.remove {
            host::remove_header(Map::Request, name);
        }
        for (name, value) in &plan.set {
            host::set_header(Map::Request, name, value);
        }
        log::debug!("{}: attempt to provider {}", self.tag, provider.name);
        self.body = plan.body.unwrap_or(BodyWork::Pass);
        match (&self.body, end_of_stream) {
            (BodyWork::Pass, _) => Ok(Action::Continue),
            (BodyWork::Translate, true) => Err(router::missing_body()),
            (BodyWork::OverrideModel, true) => Ok(Action::Continue),
            // The length is set once the new body is known.
            _ => Ok(Action::Pause),
        }
    }

    fn request_body(&mut self, size: usize, end_of_stream: bool) -> Result<Action, Reply> {
        if self.body == BodyWork::Pass {
            return Ok(Action::Continue);
        }
        let state = self.state.clone();
        let Some((config, _)) = upstream_parts(&state) else { return Ok(Action::Continue) };
        let Some(provider) = self.provider.and_then(|i| config.providers.get(i)) else { return Ok(Action::Continue) };
        if size > config.max_request_bytes {
            return Err(router::too_large(config.max_request_bytes));
        }
        if !end_of_stream {
            return Ok(Action::Pause);
        }
        let body = host::body(Body::Request, 0, size).unwrap_or_default();
        let new = match self.body {
            BodyWork::Translate => {
                let t = to_anthropic::request(&body, provider)?;
                self.include_usage = t.include_usage;
                t.body
            }
            BodyWork::OverrideModel => to_anthropic::override_model(&body, provider.model_override.as_deref().unwrap_or_default())?,
            BodyWork::Pass => return Ok(Action::Continue),
        };
        host::set_body(Body::Request, 0, size, &new);
        host::set_header(Map::Request, "content-length", new.len().to_string().as_bytes());
        self.body = BodyWork::Pass;
        Ok(Action::Continue)
    }

    fn provider(&self) -> Option<(&UpstreamConfig, &config::Provider, Option<&ProviderMetrics>)> {
        let (config, metrics) = upstream_parts(&self.state)?;
        let i = self.provider?;
        Some((config, config.providers.get(i)?, metrics.get(i)))
    }

    fn count_response(&self, status: u16) {
        if let Some((_, _, Some(m))) = self.provider() {
            m.responses.count(status.to_string().as_bytes());
        }
    }

    fn translation_failed(&self) {
        if let Some((_, _, Some(m))) = self.provider() {
            m.translation_failures.inc();
        }
    }
}

fn now_s() -> u64 {
    use filter_common::shared::Clock;
    host::Envoy.now_ns() / 1_000_000_000
}

impl Context for UpstreamStream {}

impl HttpContext for UpstreamStream {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        let result = self.request_headers(end_of_stream);
        host::finish(self.tag, result)
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        let result = self.request_body(size, end_of_stream);
        host::finish(self.tag, result)
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        if self.body == BodyWork::Pass {
            return Action::Continue;
        }
        host::finish(self.tag, Err(errors::invalid_request("unsupported_trailers", None, "Request trailers are not supported.")))
    }

    fn on_http_response_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        let state = self.state.clone();
        let Some((config, _)) = upstream_parts(&state) else { return Action::Continue };
        let Some(provider) = self.provider.and_then(|i| config.providers.get(i)) else { return Action::Continue };
        let headers = host::snapshot(Map::Response);
        let status = status_of(headers.get(":status"));
        if let Some(name) = &config.provider_header {
            host::set_header(Map::Response, name, provider.name.as_bytes());
        }
        let translate = provider.schema == Schema::Anthropic;
        let kind = if status >= 400 {
            Some(Held::Error)
        } else if translate && (200..300).contains(&status) {
            let encoding = headers.get("content-encoding").map(<[u8]>::trim_ascii).unwrap_or_default();
            let content_type = headers.get("content-type").unwrap_or_default();
            if !encoding.is_empty() && !encoding.eq_ignore_ascii_case(b"identity") {
                Some(Held::Unusable("the provider compressed its response although the gateway asked for none"))
            } else if content_type.starts_with(b"text/event-stream") {
                host::remove_header(Map::Response, "content-length");
                self.response = Response::Stream(Box::new(ChunkStream::new(now_s(), self.include_usage)));
                None
            } else if errors::is_json(Some(content_type)) {
                Some(Held::Completion)
            } else {
                Some(Held::Unusable("the provider answered with a content type that is neither JSON nor SSE"))
            }
        } else {
            None
        };
        let Some(kind) = kind else {
            self.count_response(status);
            return Action::Continue;
        };
        if end_of_stream {
            // No body will come to replace; the status still tells the client.
            if status == 401 || status == 403 {
                host::set_header(Map::Response, ":status", b"502");
            }
            self.count_response(status);
            return Action::Continue;
        }
        let limit = if kind == Held::Completion { config.max_response_bytes } else { MAX_ERROR_BYTES };
        if kind == Held::Error {
            // An error's status is known now, so its headers go on and only the body is held.
            // Pausing them instead crashes Envoy 1.36.x (segfault) when the status
            // is one the route retries on; and the router learns to retry sooner.
            if status == 401 || status == 403 {
                host::set_header(Map::Response, ":status", b"502");
            }
            host::set_header(Map::Response, "content-type", b"application/json");
            host::remove_header(Map::Response, "content-length");
            self.response = Response::Hold { kind, status, limit, overflow: false, headers_sent: true };
            return Action::Continue;
        }
        self.response = Response::Hold { kind, status, limit, overflow: false, headers_sent: false };
        Action::Pause
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        match &mut self.response {
            Response::Pass => Action::Continue,
            Response::Stream(translator) => {
                let chunk = host::body(Body::Response, 0, size).unwrap_or_default();
                let mut out = Vec::with_capacity(chunk.len() + chunk.len() / 2);
                translator.push(&chunk, &mut out);
                if end_of_stream {
                    translator.finish(&mut out);
                }
                host::set_body(Body::Response, 0, size, &out);
                if end_of_stream {
                    self.count_response(200);
                }
                Action::Continue
            }
            Response::Hold { kind, status, limit, overflow, headers_sent } => {
                if size > *limit {
                    // Over the limit: stop keeping the body; the answer becomes an error.
                    *overflow = true;
                    host::set_body(Body::Response, 0, size, b"");
                }
                if !end_of_stream {
                    return Action::Pause;
                }
                let (kind, status, limit, overflow, headers_sent) = (*kind, *status, *limit, *overflow, *headers_sent);
                let body = if overflow { Vec::new() } else { host::body(Body::Response, 0, size).unwrap_or_default() };
                let (status_out, out) = self.held_response(kind, status, limit, overflow, &body);
                host::set_body(Body::Response, 0, size, &out);
                if !headers_sent {
                    if status_out != status {
                        host::set_header(Map::Response, ":status", status_out.to_string().as_bytes());
                    }
                    host::set_header(Map::Response, "content-type", b"application/json");
                    host::set_header(Map::Response, "content-length", out.len().to_string().as_bytes());
                }
                self.count_response(status_out);
                self.response = Response::Pass;
                Action::Continue
            }
        }
    }
}

impl UpstreamStream {
    /// The status and body the client gets for a held response.
    fn held_response(&self, kind: Held, status: u16, limit: usize, overflow: bool, body: &[u8]) -> (u16, Vec<u8>) {
        let Some((_, provider, _)) = self.provider() else { return (status, body.to_vec()) };
        let unusable = |why: &str| {
            log::warn!("{}: provider {}: {why}", self.tag, provider.name);
            let body = errors::body("server_error", Some("provider_response_unusable"), None, &format!("provider `{}`: {why}", provider.name));
            (502, body.to_string().into_bytes())
        };
        match kind {
            Held::Error if overflow => {
                let e = errors::from_provider(provider.schema, &provider.name, &provider.key, status, b"");
                (e.status, e.body)
            }
            Held::Error => {
                let e = errors::from_provider(provider.schema, &provider.name, &provider.key, status, body);
                (e.status, e.body)
            }
            Held::Completion if overflow => {
                self.translation_failed();
                unusable(&format!("the response is larger than maxResponseBytes ({limit})"))
            }
            Held::Completion => match from_anthropic::completion(body, now_s()) {
                Ok(out) => (status, out),
                Err(why) => {
                    self.translation_failed();
                    unusable(&why)
                }
            },
            Held::Unusable(why) => {
                self.translation_failed();
                unusable(why)
            }
        }
    }
}
