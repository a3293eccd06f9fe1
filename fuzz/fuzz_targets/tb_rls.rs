//! token-budget's hand-written protobuf for the rate limit service (global mode): any bytes
//! the service (or something pretending to be it) answers are read or refused; a descriptor
//! value made from any client bytes is printable, free of the service's key separators, and
//! decodes back to those bytes; requests the filter encodes parse as protobuf.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_budget::rls;

fn unescape(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = rls::response(data) {
        assert!(response.statuses.len() <= data.len());
    }
    let _ = rls::parses_as_message(data);

    let value = rls::descriptor_value(data);
    assert!(value.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{value:?}");
    assert!(!value.contains('_'), "`_` separates the service's key parts: {value:?}");
    if let Some(hashed) = value.strip_prefix('~') {
        assert_eq!(hashed.len(), 16, "{value:?}");
    } else {
        assert_eq!(unescape(&value).as_deref(), Some(data), "two subjects could share a key");
    }

    let entries = rls::entries(&[("subject", value.as_str()), ("model", "gpt-4o")]);
    let request = rls::request("llm-tokens", [(&entries[..], 7u64), (&entries[..], 0)]);
    assert!(rls::parses_as_message(&request));
});
