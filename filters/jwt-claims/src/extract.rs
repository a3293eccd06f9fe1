//! Finding a token in a request (headers, query parameters, cookies), and taking it out of
//! the request before it is forwarded.

use crate::config::TokenSource;
use filter_common::http;
use std::borrow::Cow;

/// The request, as the logic reads it. The glue implements it over one header snapshot.
pub trait RequestView {
    /// Every value of header `name` (lower case).
    fn header_values(&self, name: &str) -> Vec<&[u8]>;
    /// `:path`, with its query.
    fn path(&self) -> &[u8];
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

/// The tokens `source` holds in `request` (empty values do not count), borrowed from the
/// request where they need no decoding.
pub fn find<'a>(request: &'a dyn RequestView, source: &TokenSource) -> Vec<Cow<'a, [u8]>> {
    let mut out = Vec::new();
    match source {
        TokenSource::Header { name, prefix } => {
            for value in request.header_values(name) {
                let value = trim(value);
                let p = prefix.as_bytes();
                if value.len() >= p.len() && value[..p.len()].eq_ignore_ascii_case(p) {
                    let token = trim(&value[p.len()..]);
                    if !token.is_empty() {
                        out.push(Cow::Borrowed(token));
                    }
                }
            }
        }
        TokenSource::Param(name) => {
            if let Some(token) = http::query_param(request.path(), name) {
                if !token.is_empty() {
                    out.push(token);
                }
            }
        }
        TokenSource::Cookie(name) => {
            for value in request.header_values("cookie") {
                if let Some(token) = http::cookie(value, name) {
                    if !token.is_empty() {
                        out.push(Cow::Borrowed(token));
                    }
                }
            }
        }
    }
    out
}

/// `path` without every `name=...` query parameter, or `None` when it has none.
pub fn without_param(path: &[u8], name: &str) -> Option<Vec<u8>> {
    let q = path.iter().position(|&b| b == b'?')?;
    let (base, query) = (&path[..q], &path[q + 1..]);
    let fragment_at = query.iter().position(|&b| b == b'#').unwrap_or(query.len());
    let (query, fragment) = query.split_at(fragment_at);
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut removed = false;
    for pair in query.split(|&b| b == b'&') {
        let key = &pair[..pair.iter().position(|&b| b == b'=').unwrap_or(pair.len())];
        if http::percent_decode(key).as_ref() == name.as_bytes() {
            removed = true;
        } else {
            kept.push(pair);
        }
    }
    if !removed {
        return None;
    }
    let mut out = base.to_vec();
    let kept: Vec<&[u8]> = kept.into_iter().filter(|p| !p.is_empty()).collect();
    if !kept.is_empty() {
        out.push(b'?');
        out.extend_from_slice(&kept.join(&b'&'));
    }
    out.extend_from_slice(fragment);
    Some(out)
}

/// A `Cookie` header without cookie `name`: `None` when it has no such cookie, `Some(empty)`
/// when nothing else is left.
pub fn without_cookie(header: &[u8], name: &str) -> Option<Vec<u8>> {
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut removed = false;
    for pair in header.split(|&b| b == b';') {
        let pair = trim(pair);
        let key = trim(&pair[..pair.iter().position(|&b| b == b'=').unwrap_or(pair.len())]);
        if key == name.as_bytes() {
            removed = true;
        } else if !pair.is_empty() {
            kept.push(pair);
        }
    }
    removed.then(|| kept.join(&b"; "[..]))
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A request for tests: headers as pairs and a path.
    pub struct FakeRequest {
        pub headers: Vec<(String, Vec<u8>)>,
    }

    impl FakeRequest {
        pub fn new(path: &str, headers: &[(&str, &str)]) -> FakeRequest {
            let mut all = vec![(":path".to_string(), path.as_bytes().to_vec())];
            all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())));
            FakeRequest { headers: all }
        }
    }

    impl RequestView for FakeRequest {
        fn header_values(&self, name: &str) -> Vec<&[u8]> {
            self.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_slice()).collect()
        }
        fn path(&self) -> &[u8] {
            self.header_values(":path").first().copied().unwrap_or_default()
        }
    }

    fn bearer() -> TokenSource {
        TokenSource::Header { name: "authorization".into(), prefix: "Bearer ".into() }
    }

    fn find(r: &FakeRequest, source: &TokenSource) -> Vec<Vec<u8>> {
        super::find(r, source).into_iter().map(|t| t.into_owned()).collect()
    }

    #[test]
    fn finds_tokens_where_configured() {
        let r = FakeRequest::new("/x?access_token=a%2Eb.c&y=1", &[("authorization", "bearer  t1 "), ("cookie", "a=1; session=t3"), ("x-token", "t4")]);
        assert_eq!(find(&r, &bearer()), vec![b"t1".to_vec()]);
        assert_eq!(find(&r, &TokenSource::Param("access_token".into())), vec![b"a.b.c".to_vec()]);
        assert_eq!(find(&r, &TokenSource::Cookie("session".into())), vec![b"t3".to_vec()]);
        assert_eq!(find(&r, &TokenSource::Header { name: "x-token".into(), prefix: String::new() }), vec![b"t4".to_vec()]);
        let r = FakeRequest::new("/x", &[("authorization", "Basic dTpw"), ("authorization", "Bearer "), ("authorization", "Bearer t2")]);
        assert_eq!(find(&r, &bearer()), vec![b"t2".to_vec()], "other schemes and empty tokens do not count");
        assert!(find(&FakeRequest::new("/x", &[]), &bearer()).is_empty());
    }

    #[test]
    fn strips_the_token_from_the_path_and_cookies() {
        let cases: [(&str, &str, Option<&str>); 6] = [
            ("/a?access_token=t&b=1", "access_token", Some("/a?b=1")),
            ("/a?b=1&access_token=t", "access_token", Some("/a?b=1")),
            ("/a?access_token=t", "access_token", Some("/a")),
            ("/a?access%5Ftoken=t&access_token=u#f", "access_token", Some("/a#f")),
            ("/a?b=1", "access_token", None),
            ("/a", "access_token", None),
        ];
        for (path, name, want) in cases {
            assert_eq!(without_param(path.as_bytes(), name).as_deref(), want.map(str::as_bytes), "{path}");
        }
        assert_eq!(without_cookie(b"a=1; session=t; b=2", "session").as_deref(), Some(&b"a=1; b=2"[..]));
        assert_eq!(without_cookie(b"session=t", "session").as_deref(), Some(&b""[..]));
        assert_eq!(without_cookie(b"a=1", "session"), None);
        assert_eq!(without_cookie(b"xsession=1", "session"), None);
    }
}
