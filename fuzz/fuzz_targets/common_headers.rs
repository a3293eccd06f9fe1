//! The header parsing every filter does on what a client sends: the serialized header map
//! Envoy hands over (read in place), cookies, query parameters, percent-decoding, statuses.
#![no_main]

use filter_common::http::{self, HeaderSnapshot};
use libfuzzer_sys::fuzz_target;

/// An independent reading of proxy-wasm's serialized map: count, (name_len, value_len) pairs,
/// then NUL-terminated names and values; stops at the first pair that does not fit.
fn reference(raw: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let u32_at = |at: usize| raw.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let Some(count) = u32_at(0) else { return Vec::new() };
    let mut out = Vec::new();
    let mut data = 4u128 + 8 * count as u128;
    for i in 0..count {
        let (Some(k), Some(v)) = (u32_at(4 + 8 * i), u32_at(8 + 8 * i)) else { break };
        let (ks, vs) = (data, data + k as u128 + 1);
        if vs + v as u128 > raw.len() as u128 || ks + k as u128 > raw.len() as u128 {
            break;
        }
        out.push((raw[ks as usize..ks as usize + k].to_vec(), raw[vs as usize..vs as usize + v].to_vec()));
        data = vs + v as u128 + 1;
        if out.len() > raw.len() {
            break;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let snapshot = HeaderSnapshot::from_serialized(data.to_vec());
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = snapshot.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    assert_eq!(pairs, reference(data));
    if let Some((name, value)) = pairs.first() {
        if let Ok(name) = std::str::from_utf8(name) {
            assert_eq!(snapshot.get(name), pairs.iter().find(|(k, _)| k == name.as_bytes()).map(|(_, v)| v.as_slice()));
            assert_eq!(snapshot.get_all(name).count(), pairs.iter().filter(|(k, _)| k == name.as_bytes()).count());
        }
        let _ = value;
    }

    // The same bytes as a Cookie header, a :path and a :status.
    for name in ["uid", "ab_checkout", "a"] {
        if let Some(value) = http::cookie(data, name) {
            let inside = data.as_ptr_range();
            assert!(inside.contains(&value.as_ptr()) || value.is_empty(), "cookie value borrowed from the header");
        }
        if let Some(value) = http::query_param(data, name) {
            assert!(value.len() <= data.len());
        }
    }
    let decoded = http::percent_decode(data);
    assert!(decoded.len() <= data.len());
    assert!(data.starts_with(http::path_only(data)));
    assert!(http::STATUS_CLASSES.contains(&http::status_class(data)));
    let _ = http::is_safe_header_value(data, 256);
});
