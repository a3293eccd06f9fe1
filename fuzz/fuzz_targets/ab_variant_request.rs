//! ab-variant's request side: whatever path, cookies and headers a client sends, assignment
//! picks a configured variant, deterministically, and only an override names one directly.
//!
//! Input: lines `path`, `cookie header`, `x-user-id`, `x-force-variant` (missing lines are
//! absent headers).
#![no_main]

use ab_variant::assign::{Origin, RequestSource};
use ab_variant::config::{Config, RawConfig};
use filter_common::http;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const CONFIG: &str = r#"{"experiments": [
  {"name": "checkout", "salt": "2026-11", "header": "x-variant",
   "subject": [{"header": "x-user-id"}, {"cookie": "uid"}],
   "variants": [{"name": "control", "weight": 90}, {"name": "beta", "weight": 10}],
   "override": {"header": "x-force-variant", "query": "variant"},
   "stickyCookie": {"name": "ab_checkout", "maxAgeS": 2592000, "secure": true, "httpOnly": true, "sameSite": "Lax"},
   "match": {"pathPrefix": "/api/"}},
  {"name": "ramp", "header": "x-ramp",
   "variants": [{"name": "a", "weight": 0}, {"name": "b", "weight": 1}, {"name": "c", "weight": 1000000}],
   "stickyCookie": {"name": "ab_ramp"}}
]}"#;

fn config() -> &'static Config {
    static CONFIG_ONCE: OnceLock<Config> = OnceLock::new();
    CONFIG_ONCE.get_or_init(|| filter_common::config::load::<RawConfig, Config>(Some(CONFIG.as_bytes())).expect("fuzz config"))
}

struct Request<'a> {
    path: &'a [u8],
    cookie: Option<&'a [u8]>,
    user: Option<&'a [u8]>,
    force: Option<&'a [u8]>,
}

impl RequestSource for Request<'_> {
    fn header(&mut self, name: &str) -> Option<&[u8]> {
        match name {
            "x-user-id" => self.user,
            "x-force-variant" => self.force,
            "cookie" => self.cookie,
            _ => None,
        }
    }
    fn path(&mut self) -> &[u8] {
        self.path
    }
    fn cookie(&mut self, name: &str) -> Option<&[u8]> {
        http::cookie(self.cookie?, name)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let path = lines.next().unwrap_or_default();
    let mut request = Request { path, cookie: lines.next(), user: lines.next(), force: lines.next() };
    for e in &config().experiments {
        let _ = e.applies_to(path);
        let a = e.assign(&mut request, || 0x1234_5678_9abc_def0);
        assert!(a.variant < e.variants.len());
        let again = e.assign(&mut request, || 0x1234_5678_9abc_def0);
        assert_eq!(a, again, "assignment is a function of the request");
        match &a.origin {
            Origin::Override => {
                let by_header = request.force.is_some_and(|f| f == e.variants[a.variant].as_bytes());
                let by_query = http::query_param(path, "variant").is_some_and(|q| q.as_ref() == e.variants[a.variant].as_bytes());
                assert!(by_header || by_query, "an override must name the variant it got");
            }
            Origin::Subject => {
                let id = request.user.filter(|u| !u.is_empty()).or_else(|| request.cookie("uid")).unwrap_or_default();
                assert_eq!(a.variant, e.bucket(id));
            }
            Origin::Sticky | Origin::Minted(_) => {}
        }
        if let Origin::Minted(id) = &a.origin {
            let cookie = e.sticky_set_cookie(id).unwrap_or_default();
            assert!(http::is_safe_header_value(cookie.as_bytes(), 4096), "Set-Cookie must be a safe header value");
        }
        // Never a zero-weight variant, whatever the subject.
        let low = if a.variant == 0 { 0 } else { e.bounds[a.variant - 1] };
        assert!(a.origin == Origin::Override || e.bounds[a.variant] > low);
    }
});
