//! jwt-claims takes the token out of a request before forwarding it: for any path and any
//! Cookie header, what is left has no `access_token` parameter / `session` cookie any more.
#![no_main]

use filter_common::http;
use jwt_claims::extract;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(path) = extract::without_param(data, "access_token") {
        // The query ends at the fragment (a `?` inside the fragment starts nothing).
        let before_fragment = &path[..path.iter().position(|&b| b == b'#').unwrap_or(path.len())];
        assert!(http::query_param(before_fragment, "access_token").is_none(), "{:?} -> {:?}", String::from_utf8_lossy(data), String::from_utf8_lossy(&path));
        assert!(path.len() <= data.len());
    }
    if let Some(header) = extract::without_cookie(data, "session") {
        assert!(http::cookie(&header, "session").is_none(), "{:?} -> {:?}", String::from_utf8_lossy(data), String::from_utf8_lossy(&header));
    }
});
