//! jwt-claims' JWKS parsing on any document (what a JWKS server, or a broken one, sends): a
//! key set within its limits or an error; every key it keeps can be used to verify (a
//! malformed RSA modulus or curve point must have been refused, not panic later).
#![no_main]

use jwt_claims::jwks::{self, Alg, KeySet, MAX_KEYS};
use libfuzzer_sys::fuzz_target;

const ALGS: [&str; 10] = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256"];

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = KeySet::parse(data) else { return };
    assert!(!parsed.set.is_empty() && parsed.set.len() <= MAX_KEYS);
    for key in &parsed.set.keys {
        for alg in ALGS.iter().filter_map(|a| Alg::parse(a)) {
            if key.accepts(alg) {
                let _ = jwks::verify(alg, key, b"header.payload", &[0x5a; 64]);
                let _ = jwks::verify(alg, key, b"header.payload", data);
            }
        }
    }
});
