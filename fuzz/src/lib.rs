//! Helpers the fuzz targets share: deterministic chunkings of one input, and output checks.

/// Ways to cut `data` into chunks, all derived from the data itself so a crash reproduces from
/// the input file alone: whole, byte by byte, and a few pseudo-random cuttings.
pub fn chunkings(data: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut out = vec![vec![data], data.chunks(1).collect()];
    let mut seed = filter_common::hash::stable_hash(&[data]) | 1;
    for max in [2usize, 7, 64] {
        let mut cuts = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed as usize % max + 1).min(rest.len());
            let (head, tail) = rest.split_at(n);
            cuts.push(head);
            rest = tail;
        }
        out.push(cuts);
    }
    out
}

/// The `data:` payloads of a complete SSE text (`data: X\n\n` events); panics on anything else.
pub fn sse_data(out: &[u8]) -> Vec<&[u8]> {
    if out.is_empty() {
        return Vec::new();
    }
    assert!(out.ends_with(b"\n\n"), "output does not end an event: {:?}", String::from_utf8_lossy(out));
    let body = &out[..out.len() - 2];
    split(body, b"\n\n")
        .into_iter()
        .map(|event| {
            event
                .strip_prefix(b"data: ")
                .unwrap_or_else(|| panic!("not a data event: {:?}", String::from_utf8_lossy(event)))
        })
        .collect()
}

fn split<'a>(mut text: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    while let Some(at) = text.windows(sep.len()).position(|w| w == sep) {
        parts.push(&text[..at]);
        text = &text[at + sep.len()..];
    }
    parts.push(text);
    parts
}

/// Parses `bytes` as JSON; panics (a fuzz failure) if it is not.
pub fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(bytes)))
}

/// True when any string (key or value) in `v` contains `needle`.
pub fn any_string_contains(v: &serde_json::Value, needle: &str) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains(needle),
        serde_json::Value::Array(items) => items.iter().any(|i| any_string_contains(i, needle)),
        serde_json::Value::Object(map) => map.iter().any(|(k, i)| k.contains(needle) || any_string_contains(i, needle)),
        _ => false,
    }
}

/// An OpenAI error body: `{"error": {"message": string, "type": string, ...}}`.
pub fn assert_openai_error(body: &[u8]) {
    let v = json(body);
    assert!(v["error"]["message"].is_string(), "no error.message: {v}");
    assert!(v["error"]["type"].is_string(), "no error.type: {v}");
}

/// Base64url without padding (RFC 7515), the reference the JWT targets hold the filter's
/// strict decoder to.
pub fn b64url(data: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Vec::with_capacity(data.len() * 4 / 3 + 3);
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]);
        }
    }
    out
}

/// A config loader on any bytes: a compiled config (which must print), or one error that says
/// something.
pub fn load_config<Raw, T>(data: &[u8]) -> Option<T>
where
    Raw: serde::de::DeserializeOwned,
    T: TryFrom<Raw, Error = filter_common::ConfigError> + std::fmt::Debug,
{
    match filter_common::config::load::<Raw, T>(Some(data)) {
        Ok(config) => {
            let _ = format!("{config:?}");
            Some(config)
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            None
        }
    }
}
