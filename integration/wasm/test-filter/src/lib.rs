//! The test suite's own filter. With an empty configuration it does nothing: the benchmark's
//! "empty proxy-wasm filter". With configuration `trap:request_headers` (or
//! `trap:response_headers`) it traps in that callback, standing for a filter bug, so tests can
//! check Envoy's `failure_policy`.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { trap: None }) });
}}

#[derive(Clone, Copy, PartialEq)]
enum Trap {
    RequestHeaders,
    ResponseHeaders,
}

struct Root {
    trap: Option<Trap>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        self.trap = match config.as_slice() {
            b"trap:request_headers" => Some(Trap::RequestHeaders),
            b"trap:response_headers" => Some(Trap::ResponseHeaders),
            _ => None,
        };
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream { trap: self.trap }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    trap: Option<Trap>,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if self.trap == Some(Trap::RequestHeaders) {
            std::process::abort();
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if self.trap == Some(Trap::ResponseHeaders) {
            std::process::abort();
        }
        Action::Continue
    }
}
