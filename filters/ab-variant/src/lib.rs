//! ab-variant: sticky, weighted A/B and canary assignment written into a request header that
//! routes match on. The decisions live in [`assign`]; this file only moves data between Envoy
//! and that logic.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod assign;
pub mod config;

use assign::{Origin, RequestSource};
use config::{Config, RawConfig};
use filter_common::host::{self, Map, StatusTallies, Tag, Tally};
use filter_common::http::{self, HeaderSnapshot};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::rc::Rc;

const FILTER: &str = "ab-variant";

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { state: None }) });
}}

/// Counters for one experiment's variants, defined once at configure time.
struct VariantMetrics {
    assigned: Tally,
    responses: StatusTallies,
}

struct State {
    config: Config,
    /// `metrics[experiment][variant]`.
    metrics: Vec<Vec<VariantMetrics>>,
    /// Per experiment: the access-log field its assignment is recorded in,
    /// `ab_variant.<experiment>` (filter state `wasm.ab_variant.<experiment>`).
    fields: Vec<String>,
}

impl State {
    fn tallies(&self) -> impl Iterator<Item = &Tally> {
        self.metrics.iter().flatten().flat_map(|m| std::iter::once(&m.assigned).chain(m.responses.tallies()))
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
        let metrics = config
            .experiments
            .iter()
            .map(|e| {
                e.variants
                    .iter()
                    .map(|v| VariantMetrics {
                        assigned: Tally::define(&format!("ab_variant.{}.{v}.assigned", e.name)),
                        responses: StatusTallies::define(&format!("ab_variant.{}.{v}", e.name)),
                    })
                    .collect()
            })
            .collect();
        let fields = config.experiments.iter().map(|e| format!("ab_variant.{}", e.name)).collect();
        self.state = Some(Rc::new(State { config, metrics, fields }));
        self.set_tick_period(host::TALLY_FLUSH_PERIOD);
        true
    }

    fn on_tick(&mut self) {
        if let Some(state) = &self.state {
            state.tallies().for_each(Tally::flush);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream { tag: Tag { filter: FILTER, context_id }, state: self.state.clone(), assigned: Vec::new() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// What one request was assigned, remembered for its response.
struct Assigned {
    experiment: usize,
    variant: usize,
    set_cookie: Option<String>,
}

struct Stream {
    tag: Tag,
    state: Option<Rc<State>>,
    assigned: Vec<Assigned>,
}

/// The request headers, copied from Envoy in one host call and read in place.
struct Request {
    headers: HeaderSnapshot,
}

impl RequestSource for Request {
    fn header(&mut self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }

    fn path(&mut self) -> &[u8] {
        self.headers.get(":path").unwrap_or_default()
    }

    fn cookie(&mut self, name: &str) -> Option<&[u8]> {
        // HTTP/2 clients may split cookies over several headers.
        self.headers.get_all("cookie").find_map(|value| http::cookie(value, name))
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(state) = self.state.clone() else {
            return Action::Continue;
        };
        let mut request = Request { headers: host::snapshot(Map::Request) };
        for (i, experiment) in state.config.experiments.iter().enumerate() {
            if !experiment.applies_to(request.path()) {
                // A client must never choose its variant by sending the header itself.
                if request.header(&experiment.header).is_some() {
                    host::remove_header(Map::Request, &experiment.header);
                }
                continue;
            }
            let assignment = experiment.assign(&mut request, host::random_u64);
            let Some(variant) = experiment.variants.get(assignment.variant) else {
                continue;
            };
            // Replacing drops every client-sent copy of the header.
            host::set_header(Map::Request, &experiment.header, variant.as_bytes());
            if let Some(m) = state.metrics.get(i).and_then(|m| m.get(assignment.variant)) {
                m.assigned.inc();
            }
            if let Some(field) = state.fields.get(i) {
                host::record(field, variant.as_bytes());
            }
            let set_cookie = match &assignment.origin {
                Origin::Minted(id) => experiment.sticky_set_cookie(id),
                _ => None,
            };
            log::trace!("{}: {} -> {variant} by {}", self.tag, experiment.name, assignment.origin.label());
            self.assigned.push(Assigned { experiment: i, variant: assignment.variant, set_cookie });
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(state) = self.state.as_ref() else {
            return Action::Continue;
        };
        if self.assigned.is_empty() {
            return Action::Continue;
        }
        let status = host::header(Map::Response, ":status").unwrap_or_default();
        for a in &self.assigned {
            let Some(experiment) = state.config.experiments.get(a.experiment) else {
                continue;
            };
            if let Some(m) = state.metrics.get(a.experiment).and_then(|m| m.get(a.variant)) {
                m.responses.count(&status);
            }
            if experiment.response_header {
                if let Some(variant) = experiment.variants.get(a.variant) {
                    host::set_header(Map::Response, &experiment.header, variant.as_bytes());
                }
            }
            if let Some(cookie) = &a.set_cookie {
                host::add_header(Map::Response, "set-cookie", cookie.as_bytes());
            }
        }
        Action::Continue
    }
}
