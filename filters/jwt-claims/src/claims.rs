//! The claims of a token: time, issuer and audience checks, and claim values rendered as
//! header values.

use crate::token::Failure;
use serde_json::{Map, Value};

/// What a provider requires of a token's claims.
#[derive(Debug, Clone)]
pub struct ClaimRules<'a> {
    pub issuer: Option<&'a str>,
    /// Empty: any audience (or none).
    pub audiences: &'a [String],
    pub clock_skew_s: u64,
    pub require_exp: bool,
}

/// A NumericDate claim (RFC 7519 §2): a JSON number of seconds; fractions are truncated.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, Failure> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                Ok(Some(v))
            } else if let Some(f) = n.as_f64().filter(|f| f.is_finite() && *f >= 0.0) {
                Ok(Some(f as u64))
            } else {
                // Negative times are before the epoch: treat them as 0.
                Ok(Some(0))
            }
        }
        Some(_) => Err(Failure::BadTimeClaim),
    }
}

/// Checks time, issuer and audience, in `jwt_authn`'s order (issuer, time, audience). Returns
/// the token's `exp` (if any) for the cache.
pub fn check(claims: &Map<String, Value>, rules: &ClaimRules<'_>, now_s: u64) -> Result<Option<u64>, Failure> {
    if let Some(issuer) = rules.issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
            return Err(Failure::UnknownIssuer);
        }
    }
    let skew = rules.clock_skew_s;
    let exp = numeric_date(claims, "exp")?;
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, "iat")?;
    match exp {
        Some(exp) if now_s > exp.saturating_add(skew) => return Err(Failure::Expired),
        None if rules.require_exp => return Err(Failure::Expired),
        _ => {}
    }
    if nbf.is_some_and(|nbf| nbf > now_s.saturating_add(skew)) || iat.is_some_and(|iat| iat > now_s.saturating_add(skew)) {
        return Err(Failure::NotYetValid);
    }
    if !rules.audiences.is_empty() {
        let allowed = |aud: &str| rules.audiences.iter().any(|a| a == aud);
        let ok = match claims.get("aud") {
            Some(Value::String(aud)) => allowed(aud),
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(allowed),
            _ => false,
        };
        if !ok {
            return Err(Failure::AudienceNotAllowed);
        }
    }
    Ok(exp)
}

/// The claim at a dotted path (`org.id`): `org` must be an object holding `id`. A claim whose
/// own name contains dots is found too, when no nested path matches.
pub fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// A claim as a header value: strings as they are, numbers and booleans as text, arrays
/// joined with `,` (their elements rendered the same way), objects as compact JSON. `None`
/// for `null` and empty values.
pub fn render(value: &Value) -> Option<String> {
    let text = match value {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => items.iter().filter_map(render).collect::<Vec<_>>().join(","),
        Value::Object(_) => value.to_string(),
    };
    (!text.is_empty()).then_some(text)
}

/// Why a claim was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// CR, LF or NUL: it would split or end the header.
    Unsafe,
    TooLong,
}

/// The header value for the claim at `path`: `Ok(None)` when the token has no such claim,
/// `Err` when the value cannot be forwarded safely.
pub fn header_value(claims: &Map<String, Value>, path: &str, max_bytes: usize) -> Result<Option<String>, Rejected> {
    let Some(text) = lookup(claims, path).and_then(render) else { return Ok(None) };
    if text.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(Rejected::Unsafe);
    }
    if text.len() > max_bytes {
        return Err(Rejected::TooLong);
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn time_issuer_and_audience() {
        let audiences = vec!["api".to_string(), "other".to_string()];
        let rules = ClaimRules { issuer: Some("iss-1"), audiences: &audiences, clock_skew_s: 60, require_exp: true };
        let now = 1_000_000;
        let base = json!({"iss": "iss-1", "aud": "api", "exp": now + 10, "nbf": now - 10, "iat": now - 10});
        let with = |k: &str, v: Value| {
            let mut c = claims(base.clone());
            if v.is_null() {
                c.remove(k);
            } else {
                c.insert(k.to_string(), v);
            }
            c
        };
        type Case = (Map<String, Value>, Result<Option<u64>, Failure>);
        let cases: Vec<Case> = vec![
            (claims(base.clone()), Ok(Some(now + 10))),
            (with("exp", json!(now - 59)), Ok(Some(now - 59))),
            (with("exp", json!(now - 61)), Err(Failure::Expired)),
            (with("exp", json!((now + 10) as f64 + 0.5)), Ok(Some(now + 10))),
            (with("exp", Value::Null), Err(Failure::Expired)),
            (with("exp", json!("tomorrow")), Err(Failure::BadTimeClaim)),
            (with("nbf", json!(now + 61)), Err(Failure::NotYetValid)),
            (with("nbf", json!(now + 59)), Ok(Some(now + 10))),
            (with("iat", json!(now + 3600)), Err(Failure::NotYetValid)),
            (with("iss", json!("iss-2")), Err(Failure::UnknownIssuer)),
            (with("iss", Value::Null), Err(Failure::UnknownIssuer)),
            (with("aud", json!("nope")), Err(Failure::AudienceNotAllowed)),
            (with("aud", json!(["nope", "other"])), Ok(Some(now + 10))),
            (with("aud", json!([])), Err(Failure::AudienceNotAllowed)),
            (with("aud", Value::Null), Err(Failure::AudienceNotAllowed)),
            (with("aud", json!(7)), Err(Failure::AudienceNotAllowed)),
        ];
        for (c, want) in cases {
            assert_eq!(check(&c, &rules, now), want, "{c:?}");
        }
        // Issuer before time before audience, as jwt_authn checks them.
        let c = claims(json!({"iss": "x", "aud": "y", "exp": 1}));
        assert_eq!(check(&c, &rules, now), Err(Failure::UnknownIssuer));
        let lax = ClaimRules { issuer: None, audiences: &[], clock_skew_s: 0, require_exp: false };
        assert_eq!(check(&claims(json!({})), &lax, now), Ok(None));
    }

    #[test]
    fn claims_render_as_header_values() {
        let c = claims(json!({
            "sub": "user-42",
            "org": {"id": "org-7", "tier": {"level": 3}},
            "permissions": ["read", "write"],
            "mixed": ["a", 1, true, null, {"k": "v"}],
            "admin": true,
            "level": 3,
            "ratio": 0.5,
            "big": 12345678901234567u64,
            "empty": "",
            "nothing": null,
            "a.b": "dotted-name",
            "obj": {"b": [1, 2], "a": "x"},
        }));
        let cases: [(&str, Option<&str>); 14] = [
            ("sub", Some("user-42")),
            ("org.id", Some("org-7")),
            ("org.tier.level", Some("3")),
            ("permissions", Some("read,write")),
            ("mixed", Some("a,1,true,{\"k\":\"v\"}")),
            ("admin", Some("true")),
            ("level", Some("3")),
            ("ratio", Some("0.5")),
            ("big", Some("12345678901234567")),
            ("empty", None),
            ("nothing", None),
            ("missing.path", None),
            ("a.b", Some("dotted-name")),
            ("obj", Some("{\"a\":\"x\",\"b\":[1,2]}")),
        ];
        for (path, want) in cases {
            assert_eq!(header_value(&c, path, 100).unwrap().as_deref(), want, "{path}");
        }
        assert_eq!(header_value(&c, "sub.x", 100), Ok(None));
    }

    #[test]
    fn unsafe_or_long_values_are_refused() {
        let c = claims(json!({"a": "x\r\nx-admin: 1", "b": "x\ny", "c": ["ok", "bad\r"], "d": "0123456789", "e": "nul\u{0}"}));
        assert_eq!(header_value(&c, "a", 100), Err(Rejected::Unsafe));
        assert_eq!(header_value(&c, "b", 100), Err(Rejected::Unsafe));
        assert_eq!(header_value(&c, "c", 100), Err(Rejected::Unsafe));
        assert_eq!(header_value(&c, "e", 100), Err(Rejected::Unsafe));
        assert_eq!(header_value(&c, "d", 9), Err(Rejected::TooLong));
        assert_eq!(header_value(&c, "d", 10).unwrap().as_deref(), Some("0123456789"));
    }
}
