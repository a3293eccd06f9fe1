//! token-budget: token-based rate limiting for LLM traffic, within one Envoy (local mode) or
//! across replicas through an `envoyproxy/ratelimit` service (global mode).
//!
//! Before a request goes upstream, every budget that applies to it must have room; the filter
//! reserves an estimate in each, and when the response ends replaces the reservation with the
//! usage the provider reported. The decisions live in plain modules ([`ledger`] for where
//! budgets are counted, [`budget`] for the shared counters, [`rls`] for the rate limit
//! service's messages, [`account`] for settlement, [`scan`] and [`usage`] for reading
//! responses, [`request`] for request bodies); this file only moves data between Envoy and them.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod account;
pub mod budget;
pub mod config;
pub mod decode;
pub mod ledger;
pub mod request;
pub mod rls;
pub mod scan;
pub mod usage;

use account::{BodyProblem, Charge, Ending, Fallback};
use budget::{Hold, Limits, Standing, Table};
use config::{Budget, Config, FailureMode, KeyPart, RawConfig};
use decode::{Encoding, Inflater};
use filter_common::host::{self, Body, Envoy, Map, Tag, Tally};
use filter_common::http::HeaderSnapshot;
use filter_common::shared::Clock;
use filter_common::Reply;
use ledger::{Claim, Failure, FailureLog, GlobalLedger, Ledger, LocalLedger, Opening, Reservation, Room, Settled, Transport};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use request::{Api, RequestInfo};
use scan::{Findings, ResponseReader};
use std::cell::RefCell;
use std::rc::Rc;

const FILTER: &str = "token-budget";
/// Slots the tick examines per second (shared between workers through one cursor).
const SWEEP_PER_TICK: u32 = 1024;
/// Model metric names per budget and VM; further models are counted under `other`.
const MAX_MODEL_METRICS: usize = 16;
/// Inflated response bytes read before giving up on a compressed body.
const MAX_INFLATED_RESPONSE: u64 = 64 << 20;
/// Failures of the rate limit service are logged at most once per this many seconds.
const FAILURE_LOG_INTERVAL_S: u64 = 10;
/// The largest rate limit service answer read.
const MAX_RLS_RESPONSE: usize = 64 << 10;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { state: None }) });
}}

/// Token counters of one budget, or one model within a budget.
struct TokenMetrics {
    charged: Tally,
    input: Tally,
    output: Tally,
    cached: Tally,
}

impl TokenMetrics {
    fn define(prefix: &str) -> TokenMetrics {
        TokenMetrics {
            charged: Tally::define(&format!("{prefix}.tokens_charged")),
            input: Tally::define(&format!("{prefix}.input_tokens")),
            output: Tally::define(&format!("{prefix}.output_tokens")),
            cached: Tally::define(&format!("{prefix}.cached_tokens")),
        }
    }

    fn tallies(&self) -> [&Tally; 4] {
        [&self.charged, &self.input, &self.output, &self.cached]
    }
}

struct BudgetMetrics {
    admitted: Tally,
    limited: Tally,
    /// Admitted with less than a fifth of the budget left for the key.
    near_limit: Tally,
    released: Tally,
    tokens: TokenMetrics,
    /// Per model, for budgets keyed by model; bounded by [`MAX_MODEL_METRICS`] plus `other`.
    models: RefCell<Vec<(String, TokenMetrics)>>,
}

struct Metrics {
    admitted: Tally,
    limited: Tally,
    released: Tally,
    parse_failures: Tally,
    unsupported_encoding: Tally,
    request_unreadable: Tally,
    usage_injected: Tally,
    overflow: Tally,
    contended: Tally,
    interrupted: Tally,
    slots_reclaimed: Tally,
    budgets: Vec<BudgetMetrics>,
    global: Option<GlobalMetrics>,
}

/// Global mode's dealings with the rate limit service.
struct GlobalMetrics {
    checks: Tally,
    check_failures: Tally,
    failure_allowed: Tally,
    failure_denied: Tally,
    limit_mismatch: Tally,
    settlements_sent: Tally,
    charges_confirmed: Tally,
    charges_retried: Tally,
    charges_unconfirmed: Tally,
    charges_dropped: Tally,
    charges_unconfigured: Tally,
}

impl GlobalMetrics {
    fn define() -> GlobalMetrics {
        let t = |name: &str| Tally::define(&format!("token_budget.global.{name}"));
        GlobalMetrics {
            checks: t("checks"),
            check_failures: t("check_failures"),
            failure_allowed: t("failure_allowed"),
            failure_denied: t("failure_denied"),
            limit_mismatch: t("limit_mismatch"),
            settlements_sent: t("settlements_sent"),
            charges_confirmed: t("charges_confirmed"),
            charges_retried: t("charges_retried"),
            charges_unconfirmed: t("charges_unconfirmed"),
            charges_dropped: t("charges_dropped"),
            charges_unconfigured: t("charges_unconfigured"),
        }
    }

    fn tallies(&self) -> [&Tally; 11] {
        [
            &self.checks,
            &self.check_failures,
            &self.failure_allowed,
            &self.failure_denied,
            &self.limit_mismatch,
            &self.settlements_sent,
            &self.charges_confirmed,
            &self.charges_retried,
            &self.charges_unconfirmed,
            &self.charges_dropped,
            &self.charges_unconfigured,
        ]
    }

    fn count(&self, s: Settled) {
        self.settlements_sent.add(s.sent);
        self.charges_confirmed.add(s.confirmed);
        self.charges_retried.add(s.retried);
        self.charges_unconfirmed.add(s.unconfirmed);
        self.charges_dropped.add(s.dropped);
        self.charges_unconfigured.add(s.unconfigured);
    }
}

impl Metrics {
    fn define(config: &Config) -> Metrics {
        let t = |name: &str| Tally::define(&format!("token_budget.{name}"));
        Metrics {
            admitted: t("requests_admitted"),
            limited: t("requests_limited"),
            released: t("reservations_released"),
            parse_failures: t("parse_failures"),
            unsupported_encoding: t("unsupported_encoding"),
            request_unreadable: t("request_body_unreadable"),
            usage_injected: t("stream_usage_injected"),
            overflow: t("overflow_admissions"),
            contended: t("store_contended"),
            interrupted: t("streams_interrupted"),
            slots_reclaimed: t("slots_reclaimed"),
            budgets: config
                .budgets
                .iter()
                .map(|b| {
                    let prefix = format!("token_budget.{}", b.name);
                    BudgetMetrics {
                        admitted: Tally::define(&format!("{prefix}.requests_admitted")),
                        limited: Tally::define(&format!("{prefix}.requests_limited")),
                        near_limit: Tally::define(&format!("{prefix}.requests_near_limit")),
                        released: Tally::define(&format!("{prefix}.reservations_released")),
                        tokens: TokenMetrics::define(&prefix),
                        models: RefCell::new(Vec::new()),
                    }
                })
                .collect(),
            global: config.global.is_some().then(GlobalMetrics::define),
        }
    }

    fn flush(&self) {
        let singles = [
            &self.admitted,
            &self.limited,
            &self.released,
            &self.parse_failures,
            &self.unsupported_encoding,
            &self.request_unreadable,
            &self.usage_injected,
            &self.overflow,
            &self.contended,
            &self.interrupted,
            &self.slots_reclaimed,
        ];
        singles.into_iter().for_each(Tally::flush);
        for b in &self.budgets {
            [&b.admitted, &b.limited, &b.near_limit, &b.released].into_iter().for_each(Tally::flush);
            b.tokens.tallies().into_iter().for_each(Tally::flush);
            for (_, m) in b.models.borrow().iter() {
                m.tallies().into_iter().for_each(Tally::flush);
            }
        }
        if let Some(g) = &self.global {
            g.tallies().into_iter().for_each(Tally::flush);
        }
    }
}

/// A model name as it may appear in a metric name.
fn metric_model(model: &str) -> String {
    model.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

struct State {
    config: Config,
    table: Table,
    counting: Counting,
    metrics: Metrics,
    failures: FailureLog,
}

/// Where this configuration counts its budgets.
enum Counting {
    Local(LocalLedger<Envoy>),
    Global(GlobalLedger<Envoy, EnvoyTransport>),
}

impl State {
    fn ledger(&self) -> &dyn Ledger {
        match &self.counting {
            Counting::Local(l) => l,
            Counting::Global(g) => g,
        }
    }

    fn global(&self) -> Option<&GlobalLedger<Envoy, EnvoyTransport>> {
        match &self.counting {
            Counting::Global(g) => Some(g),
            Counting::Local(_) => None,
        }
    }

    /// Counts and (at most once per interval) logs a failure of the rate limit service.
    fn note_failure(&self, what: &str, failure: &dyn std::fmt::Display, now: u64) {
        if let Some(n) = self.failures.note(&Envoy, now) {
            let mode = match self.config.global.as_ref().map(|g| g.failure_mode) {
                Some(FailureMode::Allow) => "allow",
                _ => "deny",
            };
            log::warn!("{FILTER}: rate limit service {what}: {failure}; {n} failure(s) in this worker since the last such line (failureMode {mode})");
        }
    }

    fn count_settled(&self, settled: Settled, now: u64) {
        if let Some(g) = &self.metrics.global {
            g.count(settled);
        }
        if settled.dropped > 0 {
            self.note_failure("settlement", &"the backlog of unsent charges is full: the oldest were dropped", now);
        } else if let Some(failure) = settled.failure {
            let what = if settled.unconfirmed > 0 { "settlement (not resent: it may have been counted)" } else { "settlement" };
            self.note_failure(what, &failure, now);
        }
    }
}

/// Envoy's gRPC calls to the rate limit service, and the wake-up of this VM's root context
/// (through a shared queue only it listens on) to send settlements.
struct EnvoyTransport {
    cluster: String,
    queue: Option<u32>,
}

impl Transport for EnvoyTransport {
    fn call(&self, message: &[u8], timeout_ms: u32) -> Option<u32> {
        host::grpc_call(&self.cluster, ledger::SERVICE, ledger::METHOD, message, timeout_ms)
    }

    fn wake(&self) {
        if let Some(queue) = self.queue {
            host::enqueue(queue, b"s");
        }
    }
}

fn limits(budget: &Budget) -> Limits<'_> {
    ledger::limits(budget)
}

fn now_ms() -> u64 {
    Envoy.now_ns() / 1_000_000
}

struct Root {
    state: Option<Rc<State>>,
}

impl Root {
    fn flush_settlements(&self) {
        let Some(state) = &self.state else { return };
        if let Some(global) = state.global() {
            let settled = global.flush(now_ms());
            state.count_settled(settled, Envoy.now_s());
        }
    }
}

impl Context for Root {
    /// The answer to a settlement call (the root sends them).
    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        let Some(state) = &self.state else { return };
        let Some(global) = state.global() else { return };
        let body = if status == 0 { host::grpc_response(size.min(MAX_RLS_RESPONSE)).unwrap_or_default() } else { Vec::new() };
        let answer = if status == 0 { Ok(&body[..]) } else { Err(ledger::CallError::new(status, &host::grpc_status_message(1024))) };
        let settled = global.settled(&state.config.budgets, token, answer, now_ms());
        state.count_settled(settled, Envoy.now_s());
        // What failed fast is due again after the backoff; anything else queued goes now.
        self.flush_settlements();
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
        let table = Table { max_keys: config.max_keys };
        let counting = match &config.global {
            None => Counting::Local(LocalLedger { table, store: Envoy }),
            Some(global) => {
                // A queue only this VM's root listens on: a request that settles wakes it to
                // send the charge (calls the root makes answer to the root).
                let queue = host::register_queue(&format!("token-budget.settle.{:016x}", host::random_u64()));
                if queue.is_none() {
                    log::warn!("{FILTER}: no shared queue; settlements go out on the tick only");
                }
                let transport = EnvoyTransport { cluster: global.cluster.clone(), queue };
                Counting::Global(GlobalLedger::new(table, Envoy, transport, global.clone()))
            }
        };
        let failures = FailureLog::new("tb.g.log", FAILURE_LOG_INTERVAL_S);
        self.state = Some(Rc::new(State { config, table, counting, metrics, failures }));
        self.set_tick_period(host::TALLY_FLUSH_PERIOD);
        true
    }

    fn on_tick(&mut self) {
        if let Some(state) = &self.state {
            let emptied = state.table.sweep(&Envoy, SWEEP_PER_TICK, Envoy.now_s());
            state.metrics.slots_reclaimed.add(u64::from(emptied));
            // Settlements that failed before their deadline are sent again from here.
            self.flush_settlements();
            state.metrics.flush();
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        // The items only wake the root; the charges wait in the ledger.
        for _ in 0..1024 {
            if host::dequeue(queue_id).is_none() {
                break;
            }
        }
        self.flush_settlements();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream::new(Tag { filter: FILTER, context_id }, self.state.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not a request the filter accounts (no config, not a POST).
    Pass,
    /// Waiting for the whole request body before admission.
    ReadingBody,
    /// Global mode: waiting for the rate limit service's answer.
    Checking,
    Admitted,
    /// Answered locally: 429, or 503 when global mode cannot check and fails closed.
    Limited,
}

struct Stream {
    tag: Tag,
    state: Option<Rc<State>>,
    phase: Phase,
    api: Api,
    request_headers: Option<HeaderSnapshot>,
    request_encoding: Encoding,
    /// The budgets this request counts against.
    claims: Vec<Claim>,
    /// Per claim in the order admitted: (claim index, the reservation held).
    holds: Vec<(usize, Hold)>,
    /// Global mode: the token of the check in flight.
    checking: Option<u32>,
    /// The request is held (`Pause` returned) until the check answers.
    paused: bool,
    /// The tightest budget at admission, for the rate-limit response headers.
    standing: Option<Standing>,
    /// Which budget that is (index into the config's budgets), for the access log.
    tightest: Option<usize>,
    /// The subject the budgets are keyed on, for the access log.
    subject: Option<Vec<u8>>,
    model: String,
    prompt_estimate: u64,
    /// The clock as read for admission (seconds), reused for the response's headers: a host
    /// call less per request, and the headers describe the admission.
    admitted_at: Option<u64>,
    // Response side.
    status_ok: Option<bool>,
    reader: Option<ResponseReader>,
    inflater: Option<Inflater>,
    problem: Option<BodyProblem>,
    findings: Findings,
    complete: bool,
    settled: bool,
}

impl Stream {
    fn new(tag: Tag, state: Option<Rc<State>>) -> Stream {
        Stream {
            tag,
            state,
            phase: Phase::Pass,
            api: Api::Other,
            request_headers: None,
            request_encoding: Encoding::Identity,
            claims: Vec::new(),
            holds: Vec::new(),
            checking: None,
            paused: false,
            standing: None,
            tightest: None,
            subject: None,
            model: String::new(),
            prompt_estimate: 0,
            admitted_at: None,
            status_ok: None,
            reader: None,
            inflater: None,
            problem: None,
            findings: Findings::default(),
            complete: false,
            settled: false,
        }
    }

    /// A budget's claim on this request: the key's hash (budget name and key parts joined by
    /// NUL) and, in global mode, the rate limit descriptor
    /// `[("budget", name), ("subject", ...), ("model", ...), ("header:<name>", ...)]` in the
    /// key's order (scripts/ratelimit-config.py writes the service's config in the same shape).
    fn claim(&self, state: &State, index: usize, budget: &Budget, headers: &HeaderSnapshot, amount: u64) -> Claim {
        let config = &state.config;
        let subject = config.subject.as_ref().map(|s| match headers.get(&s.header) {
            Some(v) if !v.is_empty() => v,
            _ => s.anonymous.as_bytes(),
        });
        let mut parts: Vec<&[u8]> = vec![budget.name.as_bytes()];
        for part in &budget.key {
            parts.push(match part {
                KeyPart::Subject => subject.unwrap_or_default(),
                KeyPart::Model => self.model.as_bytes(),
                KeyPart::Header(i) => config.key_headers.get(*i).and_then(|h| headers.get(h)).unwrap_or_default(),
            });
        }
        let hash = filter_common::hash::stable_hash(&parts);
        let entries = if config.global.is_some() {
            let mut pairs: Vec<(String, String)> = vec![("budget".into(), budget.name.clone())];
            for (part, value) in budget.key.iter().zip(&parts[1..]) {
                let key = match part {
                    KeyPart::Subject => "subject".to_string(),
                    KeyPart::Model => "model".to_string(),
                    KeyPart::Header(i) => format!("header:{}", config.key_headers.get(*i).map(String::as_str).unwrap_or_default()),
                };
                pairs.push((key, rls::descriptor_value(value)));
            }
            let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            rls::entries(&borrowed)
        } else {
            Vec::new()
        };
        Claim { budget: index, hash, amount, entries }
    }

    /// Starts admission: reads what the request is, works out its claims, and reserves them
    /// (local mode), or asks the rate limit service first (global mode: `Pause` until it answers).
    fn admit(&mut self, state: &State, info: Option<&RequestInfo>, body_len: u64) -> Result<Action, Reply> {
        let headers = self.request_headers.take().unwrap_or_else(|| HeaderSnapshot::from_serialized(Vec::new()));
        let config = &state.config;
        self.subject = subject_of(config, &headers);
        let header_model = config.model.header.as_ref().and_then(|h| headers.get(h)).filter(|m| !m.is_empty());
        let model = info
            .and_then(|i| i.model.clone())
            .or_else(|| header_model.map(|m| String::from_utf8_lossy(&m[..m.len().min(request::MAX_MODEL)]).into_owned()));
        // A request whose model cannot be read counts against every budget, as model
        // `unknown`: an unreadable body must not be a way around a model's budget.
        let model_known = model.is_some();
        self.model = model.unwrap_or_else(|| "unknown".to_string());
        self.prompt_estimate = body_len.div_ceil(4);
        let output_estimate = match info.and_then(|i| i.max_output) {
            Some(n) if config.reserve_from_max_tokens => n.min(config::MAX_TOKENS),
            _ => config.reserve_default,
        };
        let now = self.admitted_at.unwrap_or_else(|| Envoy.now_s());
        self.admitted_at = Some(now);
        let mut claims = Vec::with_capacity(config.budgets.len());
        for (i, budget) in config.budgets.iter().enumerate() {
            if model_known && !budget.applies_to(&self.model) {
                continue;
            }
            let amount = budget.cost.of(self.prompt_estimate, 0, output_estimate).min(budget.tokens);
            claims.push(self.claim(state, i, budget, &headers, amount));
        }
        self.claims = claims;
        match state.ledger().open(&config.budgets, &self.claims, now) {
            Opening::Ready(rooms) => self.decide(state, &rooms, now),
            Opening::Asked(token) => {
                if let Some(g) = &state.metrics.global {
                    g.checks.inc();
                }
                self.checking = Some(token);
                self.phase = Phase::Checking;
                self.paused = true;
                Ok(Action::Pause)
            }
            Opening::Failed(failure) => self.unanswered(state, failure, now),
        }
    }

    /// Reserves every claim against its room, or answers 429 naming the first that has none.
    fn decide(&mut self, state: &State, rooms: &[Room], now: u64) -> Result<Action, Reply> {
        let budgets = &state.config.budgets;
        let m = &state.metrics;
        match ledger::reserve(&state.table, &Envoy, budgets, &self.claims, rooms, now) {
            Reservation::Admitted { holds, tightest, tightest_claim, near_limit, overflowed, contended } => {
                m.overflow.add(u64::from(overflowed));
                for i in contended {
                    // Pathological contention: this budget is not enforced for this request.
                    m.contended.inc();
                    let name = self.claims.get(i).and_then(|c| budgets.get(c.budget)).map(|b| b.name.as_str()).unwrap_or_default();
                    log::warn!("{}: budget {name} contended; request not counted in it", self.tag);
                }
                m.admitted.inc();
                for (i, _) in &holds {
                    if let Some(bm) = self.claims.get(*i).and_then(|c| m.budgets.get(c.budget)) {
                        bm.admitted.inc();
                    }
                }
                for i in near_limit {
                    if let Some(bm) = self.claims.get(i).and_then(|c| m.budgets.get(c.budget)) {
                        bm.near_limit.inc();
                    }
                }
                self.holds = holds;
                self.standing = tightest;
                self.tightest = tightest_claim.and_then(|i| self.claims.get(i)).map(|c| c.budget);
                self.phase = Phase::Admitted;
                log::debug!("{}: admitted model {} holding {:?}", self.tag, self.model, self.holds);
                Ok(Action::Continue)
            }
            Reservation::Denied { claim, standing, contended } => {
                m.contended.add(u64::from(contended));
                m.limited.inc();
                let index = self.claims.get(claim).map(|c| c.budget).unwrap_or_default();
                if let Some(bm) = m.budgets.get(index) {
                    bm.limited.inc();
                }
                self.phase = Phase::Limited;
                self.record(state, Some(index), Some(standing.remaining), None);
                match budgets.get(index) {
                    Some(budget) => Err(limited_reply(budget, standing, now)),
                    None => Err(unavailable_reply()),
                }
            }
        }
    }

    /// Global mode without an answer: `failureMode` decides.
    fn unanswered(&mut self, state: &State, failure: Failure, now: u64) -> Result<Action, Reply> {
        state.note_failure("check", &failure, now);
        let (Some(global), Some(m)) = (&state.config.global, &state.metrics.global) else { return Err(unavailable_reply()) };
        m.check_failures.inc();
        match global.failure_mode {
            FailureMode::Deny => {
                m.failure_denied.inc();
                self.phase = Phase::Limited;
                Err(unavailable_reply())
            }
            FailureMode::Allow => {
                // This replica's own guard: its in-flight and unconfirmed charges against the
                // configured budget, as in local mode.
                m.failure_allowed.inc();
                let rooms: Vec<Room> = self.claims.iter().filter_map(|c| state.config.budgets.get(c.budget)).map(Room::of).collect();
                self.decide(state, &rooms, now)
            }
        }
    }

    /// The rate limit service's answer to this request's check.
    fn checked(&mut self, state: &State, answer: Result<&[u8], u32>) -> Result<Action, Reply> {
        let now = self.admitted_at.unwrap_or_else(|| Envoy.now_s());
        match state.ledger().answer(&self.claims, answer, now) {
            Ok(rooms) => {
                for (claim, room) in self.claims.iter().zip(&rooms) {
                    let Some(budget) = state.config.budgets.get(claim.budget) else { continue };
                    if room.limit != budget.tokens || room.window_s.is_some_and(|w| w != budget.window_s) {
                        if let Some(m) = &state.metrics.global {
                            m.limit_mismatch.inc();
                        }
                        if state.failures.note(&Envoy, now).is_some() {
                            log::warn!(
                                "{FILTER}: the rate limit service limits budget {} to {} per {}s, the filter's config says {} per {}: regenerate its config with scripts/ratelimit-config.py",
                                budget.name,
                                room.limit,
                                room.window_s.unwrap_or_default(),
                                budget.tokens,
                                budget.window_label
                            );
                        }
                    }
                }
                self.decide(state, &rooms, now)
            }
            Err(failure) => self.unanswered(state, failure, now),
        }
    }

    /// Before the body is read (local mode): denies at once if a budget that does not depend
    /// on the model is already used up for this request's key (read-only; admission proper
    /// reserves later).
    fn precheck(&mut self, state: &State) -> Result<(), Reply> {
        let Some(headers) = self.request_headers.as_ref() else { return Ok(()) };
        // The same instant serves admission when the body comes (milliseconds later).
        let now = Envoy.now_s();
        self.admitted_at = Some(now);
        for (i, budget) in state.config.budgets.iter().enumerate().filter(|(_, b)| b.models.is_none() && !b.keyed_by_model()) {
            let claim = self.claim(state, i, budget, headers, 0);
            if let Some(record) = state.table.peek(&Envoy, limits(budget), claim.hash, now) {
                if record.committed() >= budget.tokens {
                    state.metrics.limited.inc();
                    if let Some(m) = state.metrics.budgets.get(i) {
                        m.limited.inc();
                    }
                    self.phase = Phase::Limited;
                    self.subject = subject_of(&state.config, headers);
                    self.record(state, Some(i), Some(0), None);
                    let standing = Standing { limit: budget.tokens, remaining: 0, reset_at: record.reset_at() };
                    return Err(limited_reply(budget, standing, now));
                }
            }
        }
        Ok(())
    }

    /// Replaces every reservation with what the request is charged. Runs once per request.
    fn settle(&mut self, ending: Ending) {
        if self.settled || self.phase != Phase::Admitted {
            return;
        }
        self.settled = true;
        let Some(state) = self.state.clone() else { return };
        if let Some(reader) = self.reader.as_mut() {
            reader.finish(&mut self.findings);
        }
        if ending == Ending::Complete && self.inflater.as_ref().is_some_and(|i| !i.finished()) && self.problem.is_none() {
            self.problem = Some(BodyProblem::Undecodable);
        }
        let charge = account::decide(self.status_ok, ending, self.problem, &self.findings, self.prompt_estimate);
        let m = &state.metrics;
        match charge {
            Charge::Nothing => m.released.inc(),
            Charge::Reservation(Fallback::Body(BodyProblem::UnsupportedEncoding)) => m.unsupported_encoding.inc(),
            Charge::Reservation(_) => m.parse_failures.inc(),
            Charge::Streamed(_) => m.interrupted.inc(),
            Charge::Usage(_) => {}
        }
        let usage = match charge {
            Charge::Usage(u) | Charge::Streamed(u) => Some(u),
            Charge::Reservation(_) | Charge::Nothing => None,
        };
        self.record(&state, self.tightest, self.standing.map(|s| s.remaining), usage);
        let now = Envoy.now_s();
        let budgets = &state.config.budgets;
        for (c, hold) in std::mem::take(&mut self.holds) {
            let Some(claim) = self.claims.get(c) else { continue };
            let i = claim.budget;
            let Some(budget) = budgets.get(i) else { continue };
            let (units, tokens) = match charge {
                Charge::Usage(u) | Charge::Streamed(u) => (budget.cost.of(u.input, u.cached, u.output), Some(u)),
                Charge::Reservation(_) => (hold.amount, None),
                Charge::Nothing => (0, None),
            };
            if state.ledger().charge(budgets, claim, &hold, units, now).is_err() {
                m.contended.inc();
            }
            let Some(bm) = m.budgets.get(i) else { continue };
            if charge == Charge::Nothing {
                bm.released.inc();
            }
            count_tokens(&bm.tokens, units, tokens);
            if budget.keyed_by_model() {
                let name = metric_model(&self.model);
                let mut models = bm.models.borrow_mut();
                let at = match models.iter().position(|(n, _)| *n == name) {
                    Some(at) => Some(at),
                    None if models.len() < MAX_MODEL_METRICS => {
                        models.push((name.clone(), TokenMetrics::define(&format!("token_budget.{}.model.{name}", budget.name))));
                        Some(models.len() - 1)
                    }
                    None => match models.iter().position(|(n, _)| n == "other") {
                        Some(at) => Some(at),
                        None => {
                            models.push(("other".into(), TokenMetrics::define(&format!("token_budget.{}.model.other", budget.name))));
                            Some(models.len() - 1)
                        }
                    },
                };
                if let Some((_, tm)) = at.and_then(|at| models.get(at)) {
                    count_tokens(tm, units, tokens);
                }
            }
        }
        log::debug!("{}: settled {:?} ({:?})", self.tag, charge, ending);
    }

    /// Reads one response chunk: all of it when compressed (it must be inflated), else only
    /// the part the reader wants (the head, and the tail of every chunk).
    fn feed_response(&mut self, chunk_len: usize) {
        let (Some(reader), findings) = (self.reader.as_mut(), &mut self.findings) else { return };
        match self.inflater.as_mut() {
            Some(inflater) => {
                let chunk = host::body(Body::Response, 0, chunk_len).unwrap_or_default();
                if inflater.feed(&chunk, |out| reader.feed(out, out.len(), findings)).is_err() {
                    self.problem = Some(BodyProblem::Undecodable);
                    self.reader = None;
                }
            }
            None => {
                let (start, len) = reader.wanted(chunk_len);
                // Bytes the host did not give count as skipped.
                let part = host::body(Body::Response, start, len).unwrap_or_default();
                reader.feed(&part, chunk_len, findings);
            }
        }
    }
}

/// The access-log fields (filter state `wasm.token_budget.*`; README, "Per-request fields").
const SUBJECT_FIELD: &str = "token_budget.subject";
const MODEL_FIELD: &str = "token_budget.model";
const BUDGET_FIELD: &str = "token_budget.budget";
const REMAINING_FIELD: &str = "token_budget.remaining";
const INPUT_FIELD: &str = "token_budget.input_tokens";
const OUTPUT_FIELD: &str = "token_budget.output_tokens";
const CACHED_FIELD: &str = "token_budget.cached_tokens";
/// The longest subject recorded in the access log.
const MAX_SUBJECT_FIELD: usize = 256;

/// The subject this request's budgets are keyed on (`None` without `subject` in the config).
fn subject_of(config: &Config, headers: &HeaderSnapshot) -> Option<Vec<u8>> {
    let s = config.subject.as_ref()?;
    let value = match headers.get(&s.header) {
        Some(v) if !v.is_empty() => v,
        _ => s.anonymous.as_bytes(),
    };
    Some(value[..value.len().min(MAX_SUBJECT_FIELD)].to_vec())
}

impl Stream {
    /// Records the request's outcome for the access log, once: when it is refused, or when it
    /// is settled (before Envoy writes the log unless the stream was cut).
    fn record(&self, state: &State, budget: Option<usize>, remaining: Option<u64>, usage: Option<usage::Usage>) {
        if let Some(subject) = &self.subject {
            host::record(SUBJECT_FIELD, subject);
        }
        if !self.model.is_empty() {
            host::record(MODEL_FIELD, self.model.as_bytes());
        }
        if let Some(budget) = budget.and_then(|i| state.config.budgets.get(i)) {
            host::record(BUDGET_FIELD, budget.name.as_bytes());
        }
        if let Some(remaining) = remaining {
            host::record_u64(REMAINING_FIELD, remaining);
        }
        if let Some(u) = usage {
            host::record_u64(INPUT_FIELD, u.input);
            host::record_u64(OUTPUT_FIELD, u.output);
            host::record_u64(CACHED_FIELD, u.cached);
        }
    }
}

fn count_tokens(m: &TokenMetrics, units: u64, tokens: Option<usage::Usage>) {
    m.charged.add(units);
    if let Some(u) = tokens {
        m.input.add(u.input);
        m.output.add(u.output);
        m.cached.add(u.cached);
    }
}

fn rate_headers(standing: &Standing, now: u64) -> [(&'static str, String); 3] {
    [
        ("x-ratelimit-limit-tokens", standing.limit.to_string()),
        ("x-ratelimit-remaining-tokens", standing.remaining.to_string()),
        ("x-ratelimit-reset-tokens", budget::duration_text(standing.reset_at.saturating_sub(now))),
    ]
}

fn limited_reply(budget: &Budget, standing: Standing, now: u64) -> Reply {
    let wait = standing.reset_at.saturating_sub(now).max(1);
    let message = format!(
        "Token budget `{}` ({} tokens per {}) is used up; it resets in {}.",
        budget.name,
        budget.tokens,
        budget.window_label,
        budget::duration_text(wait)
    );
    let mut reply = Reply::openai_error(429, "rate_limit_exceeded", "token_budget_exceeded", &message).with_header("retry-after", wait.to_string());
    for (name, value) in rate_headers(&standing, now) {
        reply = reply.with_header(name, value);
    }
    reply
}

/// Global mode, `failureMode: deny`, when the rate limit service cannot answer.
fn unavailable_reply() -> Reply {
    Reply::openai_error(503, "server_error", "token_budget_unavailable", "Token budgets cannot be checked right now; retry shortly.")
        .with_header("retry-after", "1")
}

impl Context for Stream {
    /// The answer to this request's check (global mode).
    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        if self.checking != Some(token) || self.phase != Phase::Checking {
            return;
        }
        self.checking = None;
        let Some(state) = self.state.clone() else { return };
        let body = if status == 0 { host::grpc_response(size.min(MAX_RLS_RESPONSE)).unwrap_or_default() } else { Vec::new() };
        let answer = if status == 0 { Ok(&body[..]) } else { Err(status) };
        match self.checked(&state, answer) {
            Ok(_) => {
                if std::mem::take(&mut self.paused) {
                    host::resume_request();
                }
            }
            Err(reply) => {
                self.paused = false;
                host::finish(self.tag, Err(reply));
            }
        }
    }

    fn on_done(&mut self) -> bool {
        let ending = if self.complete { Ending::Complete } else { Ending::Interrupted };
        self.settle(ending);
        true
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        let Some(state) = self.state.clone() else { return Action::Continue };
        let headers = host::snapshot(Map::Request);
        if headers.get(":method") != Some(&b"POST"[..]) {
            return Action::Continue;
        }
        self.api = Api::of_path(headers.get(":path").unwrap_or_default());
        self.request_encoding = decode::encoding_of(headers.get("content-encoding"));
        // Ask for a body the filter can read; gzip and deflate are inflated anyway.
        if headers.get("accept-encoding").is_some_and(|v| !v.eq_ignore_ascii_case(b"identity")) {
            host::set_header(Map::Request, "accept-encoding", b"identity");
        }
        self.request_headers = Some(headers);
        let config = &state.config;
        let wants_body = config.model.from_body || config.reserve_from_max_tokens || config.inject_stream_usage;
        if end_of_stream || !wants_body {
            return host::finish(self.tag, self.admit(&state, None, 0));
        }
        // Envoy turns a paused request-headers callback into "stop everything", body callbacks
        // included, so the headers go on and the body is held until admission. A subject whose
        // budget is already used up is answered here, before the provider hears of it (local
        // mode; global mode asks the service once, with the body).
        if config.global.is_none() {
            if let Err(reply) = self.precheck(&state) {
                return host::finish(self.tag, Err(reply));
            }
        }
        // The body may grow (injectStreamUsage), and once the headers have gone on their
        // content-length can no longer be changed: Envoy then sends the body chunked.
        if config.inject_stream_usage && self.api == Api::ChatCompletions && self.request_encoding == Encoding::Identity {
            host::remove_header(Map::Request, "content-length");
        }
        self.phase = Phase::ReadingBody;
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.phase != Phase::ReadingBody {
            return Action::Continue;
        }
        let Some(state) = self.state.clone() else { return Action::Continue };
        let limit = state.config.max_request_bytes as usize;
        if body_size > limit {
            // Too large to hold: admit on what the headers say and let the body through (in
            // global mode while the check is out; a "no" then resets the upstream request).
            state.metrics.request_unreadable.inc();
            let result = self.admit(&state, None, body_size as u64);
            if self.phase == Phase::Checking {
                self.paused = false;
                return Action::Continue;
            }
            return host::finish(self.tag, result);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let raw = host::body(Body::Request, 0, body_size).unwrap_or_default();
        let decoded = match self.request_encoding {
            Encoding::Identity => None,
            encoding => {
                let mut out = Vec::new();
                let ok = Inflater::new(encoding, limit as u64)
                    .map(|mut inf| inf.feed(&raw, |b| out.extend_from_slice(b)).is_ok() && inf.finished())
                    .unwrap_or(false);
                Some(if ok { out } else { Vec::new() })
            }
        };
        let text = decoded.as_deref().unwrap_or(&raw);
        let info = request::read(text);
        if info.is_none() && !raw.is_empty() {
            state.metrics.request_unreadable.inc();
        }
        if let Some(info) = &info {
            if state.config.inject_stream_usage && decoded.is_none() && request::needs_usage_injection(self.api, info) {
                if let Some(new_body) = request::inject_usage(&raw, info) {
                    // content-length was removed with the headers (see there).
                    if host::set_body(Body::Request, 0, raw.len(), &new_body) {
                        state.metrics.usage_injected.inc();
                    }
                }
            }
        }
        host::finish(self.tag, self.admit(&state, info.as_ref(), text.len() as u64))
    }

    fn on_http_response_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        if self.phase != Phase::Admitted || self.settled {
            return Action::Continue;
        }
        let headers = host::snapshot(Map::Response);
        let ok = headers.get(":status").is_some_and(|s| s.len() == 3 && s[0] == b'2');
        self.status_ok = Some(ok);
        if let Some(standing) = self.standing {
            for (name, value) in rate_headers(&standing, self.admitted_at.unwrap_or_else(|| Envoy.now_s())) {
                host::set_header(Map::Response, name, value.as_bytes());
            }
        }
        if !ok {
            self.complete = true;
            self.settle(Ending::Complete);
            return Action::Continue;
        }
        match decode::encoding_of(headers.get("content-encoding")) {
            Encoding::Unsupported => self.problem = Some(BodyProblem::UnsupportedEncoding),
            Encoding::Identity => {}
            encoding => self.inflater = Inflater::new(encoding, MAX_INFLATED_RESPONSE),
        }
        if self.problem.is_none() {
            self.reader = Some(ResponseReader::for_content_type(headers.get("content-type").unwrap_or_default()));
        }
        if end_of_stream {
            self.complete = true;
            self.settle(Ending::Complete);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.phase != Phase::Admitted || self.settled {
            return Action::Continue;
        }
        if self.reader.is_some() && body_size > 0 {
            self.feed_response(body_size);
        }
        if end_of_stream {
            self.complete = true;
            self.settle(Ending::Complete);
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _: usize) -> Action {
        if self.phase == Phase::Admitted && !self.settled {
            self.complete = true;
            self.settle(Ending::Complete);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let ending = if self.complete { Ending::Complete } else { Ending::Interrupted };
        self.settle(ending);
    }
}
