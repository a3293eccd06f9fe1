//! jwt-claims on any token: taking it apart (strict base64url, header checks), the claim
//! checks, the claim values it would forward as headers, and signature verification against a
//! fixed key set (RSA, P-256, Ed25519: fuzz/data/jwks.json, with valid tokens among the seeds).
//! Never a panic; forwarded values never carry CR, LF or NUL; base64url decoding is exactly
//! the inverse of canonical encoding.
#![no_main]

use jwt_claims::claims::{self, ClaimRules};
use jwt_claims::jwks::{self, KeySet};
use jwt_claims::{b64, token};
use libfuzzer_sys::fuzz_target;
use llm_filters_fuzz::b64url;
use std::sync::OnceLock;

fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| KeySet::parse(include_bytes!("../data/jwks.json")).expect("fuzz/data/jwks.json").set)
}

fuzz_target!(|data: &[u8]| {
    // Strict base64url: what decodes re-encodes to the same text, and every encoding decodes.
    if let Some(bytes) = b64::decode(data) {
        assert_eq!(b64url(&bytes), data, "a non-canonical encoding was accepted");
    }
    assert_eq!(b64::decode(&b64url(data)).as_deref(), Some(data));

    let Ok(t) = token::parse(data) else { return };
    assert!(data.starts_with(t.signing_input));
    let audiences = vec!["https://api.example.com".to_string()];
    let rules = ClaimRules { issuer: Some("https://issuer.example.com/"), audiences: &audiences, clock_skew_s: 60, require_exp: true };
    let _ = claims::check(&t.claims, &rules, 1_800_000_000);
    for path in ["sub", "org.id", "permissions", "a.b.c", "exp"] {
        if let Ok(Some(value)) = claims::header_value(&t.claims, path, 4096) {
            assert!(!value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) && value.len() <= 4096);
        }
    }
    for key in &keys().keys {
        if key.accepts(t.alg) && key.kid.as_deref().is_none_or(|k| t.kid.as_deref().is_none_or(|want| want == k)) {
            let _ = jwks::verify(t.alg, key, t.signing_input, &t.signature);
        }
    }
});
