//! HTTP details that several filters parse: cookies, query strings, status classes, and
//! header-value safety. Pure functions over bytes, because anything a client sends may be
//! non-UTF-8.

use std::borrow::Cow;

/// The value of cookie `name` in a `Cookie` request header (`a=1; b=2`).
pub fn cookie<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = trim(pair);
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (key, value) = (&pair[..eq], &pair[eq + 1..]);
        if trim(key) != name.as_bytes() {
            return None;
        }
        let value = trim(value);
        // RFC 6265 allows the value to be wrapped in double quotes.
        Some(match value {
            [b'"', inner @ .., b'"'] => inner,
            _ => value,
        })
    })
}

/// The path without its query string or fragment.
pub fn path_only(path: &[u8]) -> &[u8] {
    let end = path.iter().position(|&b| b == b'?' || b == b'#').unwrap_or(path.len());
    &path[..end]
}

/// The first value of query parameter `name` in a request path, percent-decoded.
pub fn query_param<'a>(path: &'a [u8], name: &str) -> Option<Cow<'a, [u8]>> {
    let start = path.iter().position(|&b| b == b'?')? + 1;
    let query = &path[start..];
    let query = &query[..query.iter().position(|&b| b == b'#').unwrap_or(query.len())];
    query.split(|&b| b == b'&').find_map(|pair| {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        (percent_decode(key).as_ref() == name.as_bytes()).then(|| percent_decode(value))
    })
}

/// Decodes `%XX` escapes and `+` (as a space); malformed escapes are kept as they are.
pub fn percent_decode(input: &[u8]) -> Cow<'_, [u8]> {
    if !input.iter().any(|&b| b == b'%' || b == b'+') {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < input.len() => {
                match (hex(input[i + 1]), hex(input[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `2xx`, `4xx`, ... for a `:status` value; `other` for anything that is not a status.
pub fn status_class(status: &[u8]) -> &'static str {
    match status {
        [b'1', _, _] => "1xx",
        [b'2', _, _] => "2xx",
        [b'3', _, _] => "3xx",
        [b'4', _, _] => "4xx",
        [b'5', _, _] => "5xx",
        _ => "other",
    }
}

/// Status classes in the order metrics are defined for them.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// `value` as decimal text, written into `buf` (20 bytes hold any `u64`) without allocating.
pub fn decimal(mut value: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        if let Some(b) = buf.get_mut(at) {
            *b = b'0' + (value % 10) as u8;
        }
        value /= 10;
        if value == 0 || at == 0 {
            break;
        }
    }
    buf.get(at..).unwrap_or_default()
}

/// True when `value` can be forwarded as a header value: no CR, LF or NUL (header injection),
/// and at most `max_len` bytes.
pub fn is_safe_header_value(value: &[u8], max_len: usize) -> bool {
    value.len() <= max_len && !value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)
}

/// Attributes of a `Set-Cookie` header, rendered once at config load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieAttributes {
    pub max_age_s: Option<u64>,
    pub path: String,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: Option<String>,
}

impl CookieAttributes {
    /// `; Max-Age=...; Path=/; Secure; HttpOnly; SameSite=Lax`, appended after `name=value`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(age) = self.max_age_s {
            out.push_str(&format!("; Max-Age={age}"));
        }
        out.push_str(&format!("; Path={}", self.path));
        if self.secure {
            out.push_str("; Secure");
        }
        if self.http_only {
            out.push_str("; HttpOnly");
        }
        if let Some(same_site) = &self.same_site {
            out.push_str(&format!("; SameSite={same_site}"));
        }
        out
    }
}

/// A header map in proxy-wasm's serialized form (count, length pairs, NUL-terminated names
/// and values), read in place without a copy per header.
pub struct HeaderSnapshot {
    raw: Vec<u8>,
}

impl HeaderSnapshot {
    pub fn from_serialized(raw: Vec<u8>) -> HeaderSnapshot {
        HeaderSnapshot { raw }
    }

    /// Every (name, value) pair, in order. A malformed buffer yields the pairs before the fault.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let raw = &self.raw;
        let count = read_u32(raw, 0).unwrap_or(0);
        let mut data = count.checked_mul(8).and_then(|n| n.checked_add(4)).unwrap_or(usize::MAX);
        (0..count).map_while(move |i| {
            let entry = i.checked_mul(8)?.checked_add(4)?;
            let key_len = read_u32(raw, entry)?;
            let value_len = read_u32(raw, entry.checked_add(4)?)?;
            let key = raw.get(data..data.checked_add(key_len)?)?;
            data = data.checked_add(key_len)?.checked_add(1)?;
            let value = raw.get(data..data.checked_add(value_len)?)?;
            data = data.checked_add(value_len)?.checked_add(1)?;
            Some((key, value))
        })
    }

    /// The first value of header `name` (lower case, as Envoy stores names).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(k, _)| *k == name.as_bytes()).map(|(_, v)| v)
    }

    /// Every value of header `name`.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter().filter(move |(k, _)| *k == name.as_bytes()).map(|(_, v)| v)
    }
}

fn read_u32(raw: &[u8], at: usize) -> Option<usize> {
    let b = raw.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Case<'a> = (&'a [u8], &'a str, Option<&'a [u8]>);

    #[test]
    fn decimals() {
        let mut buf = [0u8; 20];
        for (n, text) in [(0u64, "0"), (7, "7"), (10, "10"), (1_234_567, "1234567"), (u64::MAX, "18446744073709551615")] {
            assert_eq!(decimal(n, &mut buf), text.as_bytes());
        }
    }

    #[test]
    fn cookies() {
        let cases: [Case; 8] = [
            (b"uid=42", "uid", Some(b"42")),
            (b"a=1; uid=42; b=2", "uid", Some(b"42")),
            (b"a=1;uid=42", "uid", Some(b"42")),
            (b"xuid=1; uid=\"q\"", "uid", Some(b"q")),
            (b"uid=", "uid", Some(b"")),
            (b"uid", "uid", None),
            (b"a=1", "uid", None),
            (b"a=\xff\xfe; uid=\xc3\x28", "uid", Some(b"\xc3\x28")),
        ];
        for (header, name, want) in cases {
            assert_eq!(cookie(header, name), want, "{header:?}");
        }
    }

    #[test]
    fn query() {
        let cases: [Case; 9] = [
            (b"/p?variant=beta", "variant", Some(b"beta")),
            (b"/p?a=1&variant=be%74a&x", "variant", Some(b"beta")),
            (b"/p?variant", "variant", Some(b"")),
            (b"/p?v%61riant=x", "variant", Some(b"x")),
            (b"/p?a=b+c", "a", Some(b"b c")),
            (b"/p?a=%zz%4", "a", Some(b"%zz%4")),
            (b"/p?a=1#variant=2", "variant", None),
            (b"/p", "variant", None),
            (b"/p?a=%", "a", Some(b"%")),
        ];
        for (path, name, want) in cases {
            assert_eq!(query_param(path, name).as_deref(), want, "{path:?}");
        }
        assert_eq!(path_only(b"/api/x?y=1"), b"/api/x");
    }

    #[test]
    fn classes_and_safety() {
        assert_eq!(status_class(b"200"), "2xx");
        assert_eq!(status_class(b"503"), "5xx");
        assert_eq!(status_class(b"20"), "other");
        assert!(is_safe_header_value(b"abc", 10));
        assert!(!is_safe_header_value(b"a\r\nb", 10));
        assert!(!is_safe_header_value(b"abcdef", 3));
    }

    fn serialize(pairs: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (k, v) in pairs {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            out.extend_from_slice(k.as_bytes());
            out.push(0);
            out.extend_from_slice(v);
            out.push(0);
        }
        out
    }

    #[test]
    fn header_snapshot_reads_in_place() {
        let raw = serialize(&[(":path", b"/api"), ("cookie", b"a=1"), ("x", b"\xff"), ("cookie", b"b=2")]);
        let h = HeaderSnapshot::from_serialized(raw.clone());
        assert_eq!(h.get(":path"), Some(&b"/api"[..]));
        assert_eq!(h.get("x"), Some(&b"\xff"[..]));
        assert_eq!(h.get("missing"), None);
        assert_eq!(h.get_all("cookie").collect::<Vec<_>>(), vec![&b"a=1"[..], &b"b=2"[..]]);
        // Truncated or lying buffers end the iteration instead of panicking.
        for cut in 0..raw.len() {
            let h = HeaderSnapshot::from_serialized(raw[..cut].to_vec());
            assert!(h.iter().count() <= 4);
        }
        let mut lying = raw.clone();
        lying[0] = 0xff;
        assert!(HeaderSnapshot::from_serialized(lying).iter().count() <= 4);
        assert_eq!(HeaderSnapshot::from_serialized(Vec::new()).iter().count(), 0);
    }

    #[test]
    fn set_cookie_attributes() {
        let a = CookieAttributes {
            max_age_s: Some(60),
            path: "/".into(),
            secure: true,
            http_only: true,
            same_site: Some("Lax".into()),
        };
        assert_eq!(a.render(), "; Max-Age=60; Path=/; Secure; HttpOnly; SameSite=Lax");
    }
}
