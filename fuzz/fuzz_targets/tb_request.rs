//! token-budget's request side on any body: what it reads (model, max output, stream), and the
//! one rewrite it makes (adding `stream_options.include_usage`), which must give JSON the
//! filter reads the same way, now asking for usage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_budget::request::{self, Api, MAX_MODEL};

fuzz_target!(|data: &[u8]| {
    let _ = Api::of_path(data);
    let Some(info) = request::read(data) else { return };
    assert!(info.model.as_ref().is_none_or(|m| m.len() <= MAX_MODEL && !m.is_empty()));
    if let Some(rewritten) = request::inject_usage(data, &info) {
        let again = request::read(&rewritten).unwrap_or_else(|| panic!("the rewritten body is not read: {:?}", String::from_utf8_lossy(&rewritten)));
        assert!(again.includes_usage, "the rewrite did not ask for usage: {:?}", String::from_utf8_lossy(&rewritten));
        assert_eq!((&again.model, again.max_output, again.stream), (&info.model, info.max_output, info.stream), "the rewrite changed the request");
    }
});
