//! jwt-claims: JWT validation that copies verified claims into request headers and strips
//! client-sent copies of those headers from every request.
//!
//! The decisions live in plain modules ([`auth`], [`claims`], [`token`], [`jwks`], [`rsa`],
//! [`cache`], [`remote`], [`extract`]); this file only moves data between Envoy and them:
//! reading the request, setting and removing headers, replying, fetching JWKS documents from
//! the root context, and finishing requests that waited for keys.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod auth;
pub mod b64;
pub mod cache;
pub mod claims;
pub mod config;
pub mod extract;
pub mod jwks;
pub mod remote;
pub mod rsa;
pub mod token;

use auth::{Decision, RemoteKeys};
use cache::VerifiedCache;
use config::{Config, RawConfig, Requires, TokenSource};
use extract::RequestView;
use filter_common::host::{self, Envoy, Map, Tag, Tally};
use filter_common::http::{self, HeaderSnapshot};
use filter_common::shared::Clock;
use filter_common::Reply;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use remote::{Reason, RemoteSet};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use token::Failure;

const FILTER: &str = "jwt-claims";
/// How often the root looks for keys while requests wait for them.
const WAIT_TICK: Duration = Duration::from_millis(20);
/// How often the root looks for keys while a provider has none yet.
const NO_KEYS_TICK: Duration = Duration::from_millis(100);
/// Requests one VM holds back at most; past that a request that would wait is refused.
const MAX_WAITERS: usize = 1024;
/// Envoy's `jwt_authn` cuts the path in the `WWW-Authenticate` realm to 256 bytes.
const MAX_REALM_PATH: usize = 256;
/// The access-log field (filter state `wasm.jwt_claims.outcome`): `allowed`, or the reason a
/// request was refused (`Failure::reason`); absent where no token was required.
const OUTCOME_FIELD: &str = "jwt_claims.outcome";

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> { Box::new(Root { id, state: None }) });
}}

struct Metrics {
    allowed: Tally,
    /// One per `Failure::REASONS` entry.
    denied: Vec<Tally>,
    cache_hits: Tally,
    cache_misses: Tally,
    claims_rejected: Tally,
    waited: Tally,
    /// Per provider (unused for providers without `remoteJwks`).
    jwks_fetches: Vec<Tally>,
    jwks_failures: Vec<Tally>,
}

impl Metrics {
    fn define(config: &Config) -> Metrics {
        let per_provider = |what: &str| -> Vec<Tally> {
            config.providers.iter().map(|p| Tally::define(&format!("jwt_claims.jwks.{}.{what}", p.name))).collect()
        };
        Metrics {
            allowed: Tally::define("jwt_claims.allowed"),
            denied: Failure::REASONS.iter().map(|r| Tally::define(&format!("jwt_claims.denied.{r}"))).collect(),
            cache_hits: Tally::define("jwt_claims.cache.hits"),
            cache_misses: Tally::define("jwt_claims.cache.misses"),
            claims_rejected: Tally::define("jwt_claims.claims_rejected"),
            waited: Tally::define("jwt_claims.waited_for_jwks"),
            jwks_fetches: per_provider("fetches"),
            jwks_failures: per_provider("fetch_failures"),
        }
    }

    fn all(&self) -> impl Iterator<Item = &Tally> {
        [&self.allowed, &self.cache_hits, &self.cache_misses, &self.claims_rejected, &self.waited]
            .into_iter()
            .chain(&self.denied)
            .chain(&self.jwks_fetches)
            .chain(&self.jwks_failures)
    }

    fn deny(&self, failure: Failure) {
        let i = Failure::REASONS.iter().position(|r| *r == failure.reason()).unwrap_or(Failure::REASONS.len() - 1);
        if let Some(t) = self.denied.get(i) {
            t.inc();
        }
    }
}

/// A request held back until its provider's keys arrive.
struct Waiter {
    context_id: u32,
    provider: usize,
    since_ns: u64,
    deadline_ns: u64,
    /// Shared with the stream: cleared when the root finishes the request or it goes away.
    waiting: Rc<Cell<bool>>,
}

/// What one VM keeps beside the configuration.
struct VmState {
    /// Per provider: its remote set (for providers with `remoteJwks`).
    remotes: Vec<Option<RemoteSet>>,
    /// Per provider: the keys requests use, refreshed from `remotes`.
    remote_keys: Vec<RemoteKeys>,
    cache: VerifiedCache,
    waiters: Vec<Waiter>,
    /// Providers whose set lacked a token's `kid`, for the root's next tick.
    refetch: Vec<usize>,
}

struct State {
    config: Config,
    metrics: Metrics,
    vm: RefCell<VmState>,
}

struct Root {
    id: u32,
    state: Option<Rc<State>>,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let Some(state) = self.state.clone() else { return };
        let now = Envoy.now_ns();
        let status = host::header(Map::CallResponse, ":status");
        let body = if status.as_deref() == Some(b"200") && body_size <= jwks::MAX_JWKS_BYTES {
            host::call_response_body(body_size)
        } else {
            None
        };
        let outcome = {
            let mut vm = state.vm.borrow_mut();
            let VmState { remotes, remote_keys, cache, .. } = &mut *vm;
            let found = remotes.iter_mut().enumerate().find_map(|(i, r)| r.as_mut().filter(|r| r.call == Some(token)).map(|r| (i, r)));
            found.map(|(i, remote)| {
                let result = remote.complete(&Envoy, body.as_deref(), now);
                if result.is_ok() {
                    if let (Some(slot), Some(keys)) = (remote_keys.get_mut(i), remote.keys.clone()) {
                        *slot = RemoteKeys::Loaded(keys);
                    }
                    cache.clear();
                }
                (i, result)
            })
        };
        if let Some((i, result)) = outcome {
            let name = state.config.providers.get(i).map_or("?", |p| p.name.as_str());
            match result {
                Ok(n) => log::info!("{FILTER}: provider {name}: loaded {n} keys from its JWKS"),
                Err(e) => {
                    if let Some(t) = state.metrics.jwks_failures.get(i) {
                        t.inc();
                    }
                    let status = status.map(|s| String::from_utf8_lossy(&s).into_owned()).unwrap_or_else(|| "none".into());
                    log::warn!("{FILTER}: provider {name}: {e} (status {status}); keeping the last good key set");
                }
            }
        }
        self.finish_waiters(&state, now);
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _: usize) -> bool {
        host::start_vm(FILTER, env!("CARGO_PKG_VERSION"));
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        let Some(config) = host::load_config::<RawConfig, Config>(FILTER) else {
            return false;
        };
        let metrics = Metrics::define(&config);
        let remotes: Vec<Option<RemoteSet>> =
            config.providers.iter().map(|p| p.remote.clone().map(|r| RemoteSet::new(&p.name, r))).collect();
        let remote_keys = remotes.iter().map(|r| if r.is_some() { RemoteKeys::NotLoaded } else { RemoteKeys::NotConfigured }).collect();
        let cache = VerifiedCache::new(config.cache_size, host::random_u64());
        let vm = VmState { remotes, remote_keys, cache, waiters: Vec::new(), refetch: Vec::new() };
        let state = Rc::new(State { config, metrics, vm: RefCell::new(vm) });
        self.state = Some(state.clone());
        // Pick up keys another worker already fetched. The first fetch waits for the first
        // tick: Envoy also configures throwaway copies of the plugin (to validate it on the
        // main thread), and one of those must not hold the fetch lease and then vanish.
        self.maintain_keys(&state, Envoy.now_ns(), false);
        self.set_tick_period(tick_period(&state));
        true
    }

    fn on_tick(&mut self) {
        let Some(state) = self.state.clone() else { return };
        state.metrics.all().for_each(Tally::flush);
        let now = Envoy.now_ns();
        self.maintain_keys(&state, now, true);
        self.finish_waiters(&state, now);
        self.set_tick_period(tick_period(&state));
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            tag: Tag { filter: FILTER, context_id },
            state: self.state.clone(),
            waiting: Rc::new(Cell::new(false)),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Root {
    /// Picks up key sets other workers fetched and starts the fetches that are due. Runs only
    /// in the root's own callbacks, so that fetch responses come back to the root.
    fn maintain_keys(&self, state: &State, now: u64, may_fetch: bool) {
        let providers = state.config.providers.len();
        for i in 0..providers {
            let dispatch = {
                let mut vm = state.vm.borrow_mut();
                let refetch = vm.refetch.contains(&i);
                let VmState { remotes, remote_keys, cache, .. } = &mut *vm;
                let Some(Some(remote)) = remotes.get_mut(i) else { continue };
                if remote.poll(&Envoy, now) {
                    if let (Some(slot), Some(keys)) = (remote_keys.get_mut(i), remote.keys.clone()) {
                        *slot = RemoteKeys::Loaded(keys);
                    }
                    cache.clear();
                }
                if remote.call.is_some() || !may_fetch {
                    continue;
                }
                let reasons: &[Reason] = if remote.keys.is_none() {
                    &[Reason::Initial]
                } else if refetch {
                    &[Reason::Refresh, Reason::UnknownKid]
                } else {
                    &[Reason::Refresh]
                };
                let acquired = reasons.iter().any(|&reason| remote.acquire(&Envoy, reason, now));
                acquired.then(|| remote.config.clone())
            };
            let Some(target) = dispatch else { continue };
            let headers = vec![(":method", "GET"), (":path", target.path.as_str()), (":authority", target.authority.as_str()), ("accept", "application/json")];
            let result = self.dispatch_http_call(&target.cluster, headers, None, vec![], Duration::from_millis(target.timeout_ms));
            let mut vm = state.vm.borrow_mut();
            let Some(Some(remote)) = vm.remotes.get_mut(i) else { continue };
            if let Some(t) = state.metrics.jwks_fetches.get(i) {
                t.inc();
            }
            match result {
                Ok(token) => remote.call = Some(token),
                Err(status) => {
                    remote.dispatch_failed(&Envoy, now);
                    if let Some(t) = state.metrics.jwks_failures.get(i) {
                        t.inc();
                    }
                    log::warn!("{FILTER}: cannot fetch JWKS from cluster {}: {status:?}", remote.config.cluster);
                }
            }
        }
        state.vm.borrow_mut().refetch.clear();
    }

    /// Finishes the requests whose wait is over: an attempt to fetch their provider's keys
    /// completed after they arrived, or their time ran out. Each is decided again, this time
    /// without waiting, from inside its own stream context.
    fn finish_waiters(&self, state: &Rc<State>, now: u64) {
        let waiters = std::mem::take(&mut state.vm.borrow_mut().waiters);
        if waiters.is_empty() {
            return;
        }
        let mut keep = Vec::new();
        for w in waiters {
            if !w.waiting.get() {
                continue;
            }
            // Over when an attempt to fetch the provider's keys completed after the request
            // arrived (here or on another worker), when this VM took up new keys since, or
            // when its time ran out.
            let over = {
                let vm = state.vm.borrow();
                vm.remotes.get(w.provider).and_then(Option::as_ref).is_none_or(|r| {
                    r.updated_ns >= w.since_ns || r.meta(&Envoy).completed_ns >= w.since_ns
                })
            };
            if !over && now < w.deadline_ns {
                keep.push(w);
                continue;
            }
            w.waiting.set(false);
            // No borrow of `state` is held here: replying or resuming can run this VM's
            // callbacks for that stream before these calls return.
            if !host::enter_context(w.context_id) {
                continue;
            }
            let tag = Tag { filter: FILTER, context_id: w.context_id };
            if let Step::Continue = process(state, tag, &w.waiting, now, false) {
                host::resume_request();
            }
        }
        host::enter_context(self.id);
        let mut vm = state.vm.borrow_mut();
        keep.append(&mut vm.waiters);
        vm.waiters = keep;
    }
}

/// Short while requests wait for keys, fairly short while a provider has none (so the first
/// fetch and its retries start soon), the metrics flush period otherwise.
fn tick_period(state: &State) -> Duration {
    let vm = state.vm.borrow();
    if !vm.waiters.is_empty() {
        WAIT_TICK
    } else if vm.remote_keys.iter().any(|k| matches!(k, RemoteKeys::NotLoaded)) {
        NO_KEYS_TICK
    } else {
        host::TALLY_FLUSH_PERIOD
    }
}

struct Stream {
    tag: Tag,
    state: Option<Rc<State>>,
    /// True while the request waits for keys (shared with the root's waiter entry).
    waiting: Rc<Cell<bool>>,
}

impl Context for Stream {
    fn on_done(&mut self) -> bool {
        if self.waiting.replace(false) {
            if let Some(state) = &self.state {
                let id = self.tag.context_id;
                state.vm.borrow_mut().waiters.retain(|w| w.context_id != id);
            }
        }
        true
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(state) = self.state.clone() else {
            return Action::Continue;
        };
        match process(&state, self.tag, &self.waiting, Envoy.now_ns(), true) {
            Step::Continue => Action::Continue,
            Step::Wait | Step::Replied => Action::Pause,
        }
    }

    // While the request waits, its body and trailers wait too: a `Continue` here would let
    // the request through before it is authenticated.
    fn on_http_request_body(&mut self, _: usize, _: bool) -> Action {
        if self.waiting.get() {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        if self.waiting.get() {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}

/// The request headers, read from one snapshot.
struct Request {
    headers: HeaderSnapshot,
}

impl RequestView for Request {
    fn header_values(&self, name: &str) -> Vec<&[u8]> {
        self.headers.iter().filter(|(k, _)| *k == name.as_bytes()).map(|(_, v)| v).collect()
    }

    fn path(&self) -> &[u8] {
        self.headers.get(":path").unwrap_or_default()
    }
}

enum Step {
    Continue,
    Wait,
    Replied,
}

/// Authenticates the request of the current (effective) stream context and acts on the
/// decision: sets the claim headers and strips the token, replies, or registers a wait.
fn process(state: &Rc<State>, tag: Tag, waiting: &Rc<Cell<bool>>, now_ns: u64, may_wait: bool) -> Step {
    let config = &state.config;
    let request = Request { headers: host::snapshot(Map::Request) };
    // Whatever happens next, a client never chooses these headers.
    for name in &config.protected_headers {
        if request.headers.get(name).is_some() {
            host::remove_header(Map::Request, name);
        }
    }
    let providers = match config.requirement(http::path_only(request.path())) {
        Requires::None => return Step::Continue,
        Requires::AnyOf(providers) => providers,
    };
    let decide = |may_wait: bool| {
        let mut vm = state.vm.borrow_mut();
        let VmState { remote_keys, cache, .. } = &mut *vm;
        let mut cx = auth::Context { config, remote: remote_keys, cache, now_s: now_ns / 1_000_000_000, may_wait };
        auth::authenticate(&request, providers, &mut cx)
    };
    let mut decision = decide(may_wait);
    if let Decision::Wait { provider, refetch } = decision {
        if register_wait(state, tag, waiting, provider, refetch, now_ns) {
            return Step::Wait;
        }
        decision = decide(false);
    }
    let metrics = &state.metrics;
    match decision {
        Decision::Allow { verified, strip, cache_hit } => {
            if cache_hit {
                metrics.cache_hits.inc();
            } else {
                metrics.cache_misses.inc();
            }
            metrics.allowed.inc();
            host::record(OUTCOME_FIELD, b"allowed");
            metrics.claims_rejected.add(u64::from(verified.rejected_claims));
            for (name, value) in &verified.headers {
                host::set_header(Map::Request, name, value.as_bytes());
            }
            strip_token(config, &request, &strip);
            Step::Continue
        }
        Decision::Deny(failure) => {
            metrics.deny(failure);
            host::record(OUTCOME_FIELD, failure.reason().as_bytes());
            host::finish(tag, Err(reply(failure, &request)));
            Step::Replied
        }
        // `decide(false)` never asks to wait.
        Decision::Wait { .. } => {
            metrics.deny(Failure::JwksUnavailable);
            host::record(OUTCOME_FIELD, Failure::JwksUnavailable.reason().as_bytes());
            host::finish(tag, Err(reply(Failure::JwksUnavailable, &request)));
            Step::Replied
        }
    }
}

/// Registers the current stream as waiting for `provider`'s keys, if a fetch is under way or
/// may start (a refetch for an unknown `kid` only when the rate limit allows one).
fn register_wait(state: &Rc<State>, tag: Tag, waiting: &Rc<Cell<bool>>, provider: usize, refetch: bool, now_ns: u64) -> bool {
    let mut vm = state.vm.borrow_mut();
    if vm.waiters.len() >= MAX_WAITERS {
        return false;
    }
    let Some(Some(remote)) = vm.remotes.get(provider) else { return false };
    let timeout_ms = remote.config.timeout_ms;
    if refetch {
        let meta = remote.meta(&Envoy);
        if !meta.in_flight(now_ns) && !remote.due(&meta, Reason::UnknownKid, now_ns) {
            return false;
        }
        if !vm.refetch.contains(&provider) {
            vm.refetch.push(provider);
        }
    }
    waiting.set(true);
    vm.waiters.push(Waiter {
        context_id: tag.context_id,
        provider,
        since_ns: now_ns,
        deadline_ns: now_ns + timeout_ms * 1_000_000,
        waiting: waiting.clone(),
    });
    state.metrics.waited.inc();
    // The root looks for the keys (and starts the fetch) on its next, now short, tick.
    let _ = proxy_wasm::hostcalls::set_tick_period(WAIT_TICK);
    log::debug!("{tag}: waiting up to {timeout_ms} ms for provider {provider}'s keys");
    true
}

/// Takes the token out of the forwarded request: the header that carried it, the query
/// parameter, or the cookie.
fn strip_token(config: &Config, request: &Request, strip: &[(usize, usize)]) {
    let sources = strip.iter().filter_map(|&(p, i)| config.providers.get(p)?.sources.get(i));
    for source in sources {
        match source {
            TokenSource::Header { name, .. } => host::remove_header(Map::Request, name),
            TokenSource::Param(name) => {
                if let Some(path) = extract::without_param(request.path(), name) {
                    host::set_header(Map::Request, ":path", &path);
                }
            }
            TokenSource::Cookie(name) => {
                let joined = request.header_values("cookie").join(&b"; "[..]);
                match extract::without_cookie(&joined, name) {
                    Some(rest) if rest.is_empty() => host::remove_header(Map::Request, "cookie"),
                    Some(rest) => host::set_header(Map::Request, "cookie", &rest),
                    None => {}
                }
            }
        }
    }
}

/// The reply `jwt_authn` sends: its status string as a text body and, on 401s, a
/// `WWW-Authenticate` challenge whose realm is the request's URI.
fn reply(failure: Failure, request: &Request) -> Reply {
    let reply = Reply::text(failure.status(), failure.message());
    if failure.status() != 401 {
        return reply;
    }
    let h = &request.headers;
    let scheme = h.get("x-forwarded-proto").or_else(|| h.get(":scheme")).unwrap_or(b"http");
    let path = request.path();
    let path = &path[..path.len().min(MAX_REALM_PATH)];
    let uri = [scheme, b"://", h.get(":authority").unwrap_or_default(), path].concat();
    let uri = if http::is_safe_header_value(&uri, 1024) { String::from_utf8_lossy(&uri).into_owned() } else { String::new() };
    let error = if failure == Failure::Missing { "" } else { ", error=\"invalid_token\"" };
    reply.with_header("www-authenticate", format!("Bearer realm=\"{uri}\"{error}"))
}
