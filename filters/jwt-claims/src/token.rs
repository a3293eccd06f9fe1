//! A compact JWS (RFC 7515 §7.1) taken apart, and the ways a request can fail authentication,
//! with the status and body Envoy's `jwt_authn` sends for each.

use crate::b64;
use crate::jwks::Alg;
use serde_json::{Map, Value};

/// Why a request was refused. Bodies are `jwt_verify_lib`'s status strings, as Envoy's
/// `jwt_authn` sends them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    Missing,
    MultipleTokens,
    TooLarge,
    BadFormat,
    HeaderBadBase64,
    HeaderBadJson,
    HeaderBadAlg,
    AlgNotSupported,
    HeaderBadKid,
    /// A `crit` header parameter this filter does not implement (RFC 7515 §4.1.11).
    UnknownCritical,
    PayloadBadBase64,
    PayloadBadJson,
    SignatureBadBase64,
    UnknownIssuer,
    AudienceNotAllowed,
    Expired,
    NotYetValid,
    /// A time claim that is not a number.
    BadTimeClaim,
    NoMatchingKey,
    VerificationFails,
    JwksUnavailable,
}

impl Failure {
    pub fn status(self) -> u16 {
        if self == Failure::AudienceNotAllowed {
            403
        } else {
            401
        }
    }

    /// The response body, as `jwt_verify_lib::getStatusString` words it.
    pub fn message(self) -> &'static str {
        match self {
            Failure::Missing => "Jwt is missing",
            Failure::MultipleTokens => "Found multiple Jwt tokens",
            Failure::TooLarge | Failure::UnknownCritical | Failure::VerificationFails => "Jwt verification fails",
            Failure::BadFormat => "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
            Failure::HeaderBadBase64 => "Jwt header is an invalid Base64url encoded",
            Failure::HeaderBadJson => "Jwt header is an invalid JSON",
            Failure::HeaderBadAlg => "Jwt header [alg] field is required and must be a string",
            Failure::AlgNotSupported => "Jwt header [alg] is not supported",
            Failure::HeaderBadKid => "Jwt header [kid] field is not a string",
            Failure::PayloadBadBase64 => "Jwt payload is an invalid Base64url encoded",
            Failure::PayloadBadJson => "Jwt payload is an invalid JSON",
            Failure::SignatureBadBase64 => "Jwt signature is an invalid Base64url encoded",
            Failure::UnknownIssuer => "Jwt issuer is not configured",
            Failure::AudienceNotAllowed => "Audiences in Jwt are not allowed",
            Failure::Expired => "Jwt is expired",
            Failure::NotYetValid => "Jwt not yet valid",
            Failure::BadTimeClaim => "Jwt payload [exp], [nbf] or [iat] field is not an integer",
            Failure::NoMatchingKey => "Jwks doesn't have key to match kid or alg from Jwt",
            Failure::JwksUnavailable => "Jwks remote fetch is failed",
        }
    }

    /// The metric suffix: `jwt_claims.denied.<reason>`.
    pub fn reason(self) -> &'static str {
        match self {
            Failure::Missing => "missing",
            Failure::MultipleTokens => "multiple_tokens",
            Failure::TooLarge => "too_large",
            Failure::BadFormat
            | Failure::HeaderBadBase64
            | Failure::HeaderBadJson
            | Failure::HeaderBadAlg
            | Failure::HeaderBadKid
            | Failure::PayloadBadBase64
            | Failure::PayloadBadJson
            | Failure::SignatureBadBase64
            | Failure::BadTimeClaim => "malformed",
            Failure::AlgNotSupported => "unsupported_alg",
            Failure::UnknownCritical => "unknown_crit",
            Failure::UnknownIssuer => "unknown_issuer",
            Failure::AudienceNotAllowed => "audience",
            Failure::Expired => "expired",
            Failure::NotYetValid => "not_yet_valid",
            Failure::NoMatchingKey => "unknown_key",
            Failure::VerificationFails => "signature",
            Failure::JwksUnavailable => "jwks_unavailable",
        }
    }

    pub const REASONS: [&'static str; 14] = [
        "missing",
        "multiple_tokens",
        "too_large",
        "malformed",
        "unsupported_alg",
        "unknown_crit",
        "unknown_issuer",
        "audience",
        "expired",
        "not_yet_valid",
        "unknown_key",
        "signature",
        "jwks_unavailable",
        "other",
    ];
}

/// A token whose parts decoded; its signature is not checked yet.
#[derive(Debug)]
pub struct Token<'a> {
    pub alg: Alg,
    pub kid: Option<String>,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a [u8],
    /// The payload segment as sent (base64url), for `forwardPayloadHeader`.
    pub payload_b64: &'a [u8],
    pub claims: Map<String, Value>,
    pub signature: Vec<u8>,
}

/// Takes a compact JWS apart and checks its header. `jku`, `x5u`, `jwk` and `x5c` are never
/// read: keys come only from the provider's configured key set.
pub fn parse(token: &[u8]) -> Result<Token<'_>, Failure> {
    let mut dots = token.iter().enumerate().filter(|(_, &b)| b == b'.').map(|(i, _)| i);
    let (Some(first), Some(second), None) = (dots.next(), dots.next(), dots.next()) else {
        return Err(Failure::BadFormat);
    };
    let (header_b64, payload_b64, signature_b64) = (&token[..first], &token[first + 1..second], &token[second + 1..]);
    if header_b64.is_empty() || payload_b64.is_empty() {
        return Err(Failure::BadFormat);
    }
    let header = b64::decode(header_b64).ok_or(Failure::HeaderBadBase64)?;
    let header: Value = serde_json::from_slice(&header).map_err(|_| Failure::HeaderBadJson)?;
    let Value::Object(header) = header else { return Err(Failure::HeaderBadJson) };
    let alg = match header.get("alg") {
        Some(Value::String(name)) => Alg::parse(name).ok_or(Failure::AlgNotSupported)?,
        _ => return Err(Failure::HeaderBadAlg),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(Failure::HeaderBadKid),
    };
    // This filter implements no extension, so any `crit` makes the token unacceptable; a
    // `crit` that is not a non-empty array of strings is malformed and refused as well.
    if header.contains_key("crit") {
        return Err(Failure::UnknownCritical);
    }
    let payload = b64::decode(payload_b64).ok_or(Failure::PayloadBadBase64)?;
    let claims = match serde_json::from_slice(&payload) {
        Ok(Value::Object(claims)) => claims,
        _ => return Err(Failure::PayloadBadJson),
    };
    if signature_b64.is_empty() {
        return Err(Failure::SignatureBadBase64);
    }
    let signature = b64::decode(signature_b64).ok_or(Failure::SignatureBadBase64)?;
    Ok(Token { alg, kid, signing_input: &token[..second], payload_b64, claims, signature })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(json: &str) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = json.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", enc(header), enc(payload))
    }

    #[test]
    fn a_well_formed_token_comes_apart() {
        let t = token(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#, r#"{"sub":"a"}"#);
        let parsed = parse(t.as_bytes()).unwrap();
        assert_eq!(parsed.alg, Alg::RS256);
        assert_eq!(parsed.kid.as_deref(), Some("k1"));
        assert_eq!(parsed.claims["sub"], "a");
        assert_eq!(parsed.signature, b"sig");
        assert_eq!(parsed.signing_input, t.rsplit_once('.').unwrap().0.as_bytes());
    }

    /// Header-level attacks: each is refused before any key is looked at.
    #[test]
    fn attack_table() {
        let payload = r#"{"sub":"a","exp":9999999999}"#;
        let good_header = r#"{"alg":"RS256"}"#;
        let cases: Vec<(String, Failure)> = vec![
            (token(r#"{"alg":"none"}"#, payload), Failure::AlgNotSupported),
            (format!("{}.{}.", enc(r#"{"alg":"none"}"#), enc(payload)), Failure::AlgNotSupported),
            (token(r#"{"alg":"NONE"}"#, payload), Failure::AlgNotSupported),
            (token(r#"{"alg":"HS256","kid":"rsa"}"#, payload), Failure::AlgNotSupported),
            (token(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#, payload), Failure::AlgNotSupported),
            (token(r#"{"typ":"JWT"}"#, payload), Failure::HeaderBadAlg),
            (token(r#"{"alg":256}"#, payload), Failure::HeaderBadAlg),
            (token(r#"{"alg":"RS256","kid":7}"#, payload), Failure::HeaderBadKid),
            (token(r#"{"alg":"RS256","crit":["exp"],"exp":1}"#, payload), Failure::UnknownCritical),
            (token(r#"{"alg":"RS256","crit":[]}"#, payload), Failure::UnknownCritical),
            (token(r#"["alg","RS256"]"#, payload), Failure::HeaderBadJson),
            (token("not json", payload), Failure::HeaderBadJson),
            (token(good_header, "[1,2]"), Failure::PayloadBadJson),
            (token(good_header, "{\"sub\":"), Failure::PayloadBadJson),
            (format!("{}.{}.", enc(good_header), enc(payload)), Failure::SignatureBadBase64),
            (format!("{}.{}.a+b", enc(good_header), enc(payload)), Failure::SignatureBadBase64),
            (format!("e*J.{}.c2ln", enc(payload)), Failure::HeaderBadBase64),
            (format!("{}==.{}.c2ln", enc(good_header), enc(payload)), Failure::HeaderBadBase64),
            (format!("{}.{}!.c2ln", enc(good_header), enc(payload)), Failure::PayloadBadBase64),
            (format!("{}.{}", enc(good_header), enc(payload)), Failure::BadFormat),
            (format!("{}.{}.c2ln.c2ln", enc(good_header), enc(payload)), Failure::BadFormat),
            (format!("{}.{}.a.b.c", enc(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#), enc(payload)), Failure::BadFormat),
            ("".to_string(), Failure::BadFormat),
            ("..".to_string(), Failure::BadFormat),
            (format!(".{}.c2ln", enc(payload)), Failure::BadFormat),
        ];
        for (t, want) in cases {
            assert_eq!(parse(t.as_bytes()).unwrap_err(), want, "{t}");
        }
    }

    #[test]
    fn embedded_keys_and_urls_are_never_read() {
        // A token that carries its own key parses like any other: its `jwk` and `jku` are
        // ignored, so only a configured key can ever verify it.
        let t = token(r#"{"alg":"RS256","jwk":{"kty":"RSA","n":"AQAB","e":"AQAB"},"jku":"http://x","x5u":"http://y"}"#, r#"{"sub":"a"}"#);
        let parsed = parse(t.as_bytes()).unwrap();
        assert_eq!(parsed.kid, None);
    }

    #[test]
    fn statuses_follow_jwt_authn() {
        assert_eq!(Failure::AudienceNotAllowed.status(), 403);
        assert_eq!(Failure::Missing.status(), 401);
        assert_eq!(Failure::Expired.message(), "Jwt is expired");
        for f in [Failure::Missing, Failure::Expired, Failure::VerificationFails, Failure::JwksUnavailable] {
            assert!(Failure::REASONS.contains(&f.reason()));
        }
    }
}
