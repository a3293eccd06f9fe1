//! The attack table against the decision logic, natively, with keys and tokens minted by an
//! independent implementation (PyJWT and cryptography, `integration/tools/mint_tokens.py`)
//! into a fresh temporary directory. Needs the project venv (`scripts/setup.sh`).
//!
//! Processes cannot be spawned under WASI, so this file is native-only; the same table runs
//! against the built `.wasm` in `integration/tests/jwt_claims_wasm.rs`.
#![cfg(not(target_os = "wasi"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use filter_common::config::load;
use jwt_claims::auth::{authenticate, Context, Decision, RemoteKeys};
use jwt_claims::cache::VerifiedCache;
use jwt_claims::config::{Config, RawConfig};
use jwt_claims::extract::RequestView;
use jwt_claims::jwks::KeySet;
use jwt_claims::token::Failure;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::rc::Rc;

const NOW: u64 = 1_795_737_600;
const ISSUER: &str = "https://issuer.example.com/";
const AUDIENCE: &str = "https://api.example.com";

struct Minted {
    tokens: Value,
    jwks: String,
    rotated: String,
}

/// Minted once per test process (RSA key generation takes a moment).
fn mint() -> &'static Minted {
    static MINTED: std::sync::OnceLock<Minted> = std::sync::OnceLock::new();
    MINTED.get_or_init(mint_now)
}

fn mint_now() -> Minted {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh", python.display());
    let dir = std::env::temp_dir().join(format!("jwt-claims-attacks-{}", std::process::id()));
    let out = Command::new(&python)
        .arg(root.join("integration/tools/mint_tokens.py"))
        .arg(&dir)
        .args(["--now", &NOW.to_string(), "--issuer", ISSUER, "--audience", AUDIENCE])
        .output()
        .unwrap();
    assert!(out.status.success(), "mint_tokens.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let minted = Minted { tokens: serde_json::from_str(&read("tokens.json")).unwrap(), jwks: read("jwks.json"), rotated: read("jwks-rotated.json") };
    let _ = std::fs::remove_dir_all(&dir);
    minted
}

fn config(jwks: &str) -> Config {
    let json = serde_json::json!({
        "providers": [{
            "name": "idp",
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "localJwks": jwks,
            "claimToHeaders": [{"claim": "sub", "header": "x-user-id"}, {"claim": "org.id", "header": "x-org-id"},
                               {"claim": "permissions", "header": "x-user-permissions"}],
            "forwardPayloadHeader": "x-jwt-payload",
            "clockSkewS": 60
        }],
        "rules": [{"pathPrefix": "/health", "requires": "none"}, {"pathPrefix": "/", "requires": {"anyOf": ["idp"]}}],
        "maxTokenBytes": 8192
    });
    load::<RawConfig, Config>(Some(json.to_string().as_bytes())).unwrap()
}

struct Req(Vec<(String, Vec<u8>)>);

impl RequestView for Req {
    fn header_values(&self, name: &str) -> Vec<&[u8]> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_slice()).collect()
    }
    fn path(&self) -> &[u8] {
        self.header_values(":path").first().copied().unwrap_or_default()
    }
}

fn bearer(token: &str) -> Req {
    Req(vec![(":path".into(), b"/api/tasks".to_vec()), ("authorization".into(), format!("Bearer {token}").into_bytes())])
}

fn decide(config: &Config, remote: &[RemoteKeys], cache: &mut VerifiedCache, request: &Req) -> Decision {
    let mut cx = Context { config, remote, cache, now_s: NOW, may_wait: true };
    authenticate(request, &[0], &mut cx)
}

/// Every attack token and the failure it must get (the status follows from it: 403 for the
/// audience, 401 for everything else).
const ATTACKS: &[(&str, Failure)] = &[
    ("alg_none", Failure::AlgNotSupported),
    ("alg_none_with_sig", Failure::AlgNotSupported),
    ("alg_none_caps", Failure::AlgNotSupported),
    ("hs256_rsa_public_key", Failure::AlgNotSupported),
    ("hs256_jwk_n", Failure::AlgNotSupported),
    ("alg_family_mismatch", Failure::NoMatchingKey),
    ("rs256_key_as_ps256", Failure::NoMatchingKey),
    ("unknown_kid", Failure::NoMatchingKey),
    ("foreign_key_no_kid", Failure::VerificationFails),
    ("expired", Failure::Expired),
    ("missing_exp", Failure::Expired),
    ("nbf_future", Failure::NotYetValid),
    ("iat_future", Failure::NotYetValid),
    ("exp_not_number", Failure::BadTimeClaim),
    ("wrong_iss", Failure::UnknownIssuer),
    ("missing_iss", Failure::UnknownIssuer),
    ("wrong_aud", Failure::AudienceNotAllowed),
    ("missing_aud", Failure::AudienceNotAllowed),
    ("bad_signature", Failure::VerificationFails),
    ("signature_from_other_token", Failure::VerificationFails),
    ("empty_signature", Failure::SignatureBadBase64),
    ("truncated", Failure::VerificationFails),
    ("bad_base64_header", Failure::HeaderBadBase64),
    ("bad_base64_payload", Failure::PayloadBadBase64),
    ("bad_base64_signature", Failure::SignatureBadBase64),
    ("padded_base64", Failure::HeaderBadBase64),
    ("header_not_json", Failure::HeaderBadJson),
    ("payload_not_json", Failure::PayloadBadJson),
    ("two_segments", Failure::BadFormat),
    ("four_segments", Failure::BadFormat),
    ("jwe_five_segments", Failure::BadFormat),
    ("oversized", Failure::TooLarge),
    ("embedded_jwk", Failure::VerificationFails),
    ("embedded_jwk_no_kid", Failure::VerificationFails),
    ("jku_attacker_key", Failure::NoMatchingKey),
    ("x5u_attacker_key", Failure::VerificationFails),
    ("unknown_crit", Failure::UnknownCritical),
    ("es256_der_signature", Failure::VerificationFails),
    ("empty", Failure::Missing),
    ("dots_only", Failure::BadFormat),
];

#[test]
fn every_attack_token_is_refused_with_jwt_authn_status() {
    let minted = mint();
    let config = config(&minted.jwks);
    let attacks = minted.tokens["attacks"].as_object().unwrap();
    assert_eq!(attacks.len(), ATTACKS.len(), "the table and mint_tokens.py list the same attacks");
    for (name, want) in ATTACKS {
        let token = attacks[*name].as_str().unwrap_or_else(|| panic!("mint_tokens.py has no attack {name}"));
        let mut cache = VerifiedCache::new(16, 1);
        match decide(&config, &[RemoteKeys::NotConfigured], &mut cache, &bearer(token)) {
            Decision::Deny(got) => assert_eq!(got, *want, "{name}: {}", got.message()),
            other => panic!("{name}: expected {want:?}, got {other:?}"),
        }
        assert!(cache.is_empty(), "{name}: nothing refused is cached");
    }
}

#[test]
fn every_algorithm_verifies_and_claims_become_headers() {
    let minted = mint();
    let config = config(&minted.jwks);
    let valid = minted.tokens["valid"].as_object().unwrap();
    for name in ["rs256", "rs384", "rs512", "ps256", "ps384", "ps512", "es256", "es384", "eddsa", "rs256_no_kid", "es256_no_kid", "expired_within_skew", "aud_list", "jku_ignored"] {
        let token = valid[name].as_str().unwrap();
        let mut cache = VerifiedCache::new(16, 1);
        let Decision::Allow { verified, strip, cache_hit } = decide(&config, &[RemoteKeys::NotConfigured], &mut cache, &bearer(token)) else {
            panic!("{name} was refused")
        };
        assert!(!cache_hit);
        let headers: Vec<(&str, &str)> = verified.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(&headers[..3], &[("x-user-id", "user-42"), ("x-org-id", "org-7"), ("x-user-permissions", "read:tasks,write:tasks")], "{name}");
        assert_eq!(headers[3].0, "x-jwt-payload");
        assert_eq!(headers[3].1, token.split('.').nth(1).unwrap());
        assert_eq!(strip.len(), 1, "the Authorization header is not forwarded");
        // The same token again is a cache hit with the same result.
        let Decision::Allow { cache_hit, verified: again, .. } = decide(&config, &[RemoteKeys::NotConfigured], &mut cache, &bearer(token)) else {
            panic!("{name} was refused the second time")
        };
        assert!(cache_hit, "{name}");
        assert_eq!(again, verified);
    }
}

#[test]
fn unsafe_claims_are_dropped_but_the_token_is_accepted() {
    let minted = mint();
    let config = config(&minted.jwks);
    for name in ["crlf_sub", "huge_permissions"] {
        let token = minted.tokens["valid"][name].as_str().unwrap();
        let mut cache = VerifiedCache::new(16, 1);
        let Decision::Allow { verified, .. } = decide(&config, &[RemoteKeys::NotConfigured], &mut cache, &bearer(token)) else {
            panic!("{name} was refused")
        };
        assert_eq!(verified.rejected_claims, 1, "{name}");
        let claims = verified.headers.iter().filter(|(k, _)| k != "x-jwt-payload");
        assert!(claims.clone().all(|(_, v)| !v.contains('\r') && !v.contains('\n') && v.len() <= 4096), "{name}");
        assert_eq!(claims.count(), 2, "{name}: the other claims are still forwarded");
    }
}

#[test]
fn remote_keys_wait_refetch_and_rotation() {
    let minted = mint();
    // Only remote keys: a config whose local set is replaced by what the "fetch" returns.
    let mut config = config(&minted.jwks);
    config.providers[0].local_keys = None;
    let token = minted.tokens["valid"]["rs256"].as_str().unwrap();
    let rotated = minted.tokens["valid"]["rotated"].as_str().unwrap();
    let mut cache = VerifiedCache::new(16, 1);
    assert!(matches!(decide(&config, &[RemoteKeys::NotLoaded], &mut cache, &bearer(token)), Decision::Wait { provider: 0, refetch: false }));
    let mut cx = Context { config: &config, remote: &[RemoteKeys::NotLoaded], cache: &mut cache, now_s: NOW, may_wait: false };
    assert!(matches!(authenticate(&bearer(token), &[0], &mut cx), Decision::Deny(Failure::JwksUnavailable)));

    let old = RemoteKeys::Loaded(Rc::new(KeySet::parse(minted.jwks.as_bytes()).unwrap().set));
    assert!(matches!(decide(&config, std::slice::from_ref(&old), &mut cache, &bearer(token)), Decision::Allow { .. }));
    // A kid the set lacks asks for a refetch; once refetched without it, the answer is final.
    assert!(matches!(decide(&config, std::slice::from_ref(&old), &mut cache, &bearer(rotated)), Decision::Wait { provider: 0, refetch: true }));
    let mut cx = Context { config: &config, remote: &[old], cache: &mut cache, now_s: NOW, may_wait: false };
    assert!(matches!(authenticate(&bearer(rotated), &[0], &mut cx), Decision::Deny(Failure::NoMatchingKey)));
    let new = RemoteKeys::Loaded(Rc::new(KeySet::parse(minted.rotated.as_bytes()).unwrap().set));
    let Decision::Allow { verified, .. } = decide(&config, &[new], &mut cache, &bearer(rotated)) else { panic!("rotated key refused") };
    assert_eq!(verified.headers[0].1, "user-rotated");
}

#[test]
fn missing_and_multiple_tokens() {
    let minted = mint();
    let config = config(&minted.jwks);
    let token = minted.tokens["valid"]["rs256"].as_str().unwrap();
    let other = minted.tokens["valid"]["eddsa"].as_str().unwrap();
    let mut cache = VerifiedCache::new(16, 1);
    let none = Req(vec![(":path".into(), b"/api".to_vec()), ("x-user-id".into(), b"admin".to_vec())]);
    assert!(matches!(decide(&config, &[RemoteKeys::NotConfigured], &mut cache, &none), Decision::Deny(Failure::Missing)));
    // The same token in the header and the query is one token; two different ones are refused.
    let path = format!("/api?access_token={token}");
    let same = Req(vec![(":path".into(), path.clone().into_bytes()), ("authorization".into(), format!("Bearer {token}").into_bytes())]);
    let Decision::Allow { strip, .. } = decide(&config, &[RemoteKeys::NotConfigured], &mut cache, &same) else { panic!("refused") };
    assert_eq!(strip.len(), 2, "both copies are stripped");
    let two = Req(vec![(":path".into(), path.into_bytes()), ("authorization".into(), format!("Bearer {other}").into_bytes())]);
    assert!(matches!(decide(&config, &[RemoteKeys::NotConfigured], &mut cache, &two), Decision::Deny(Failure::MultipleTokens)));
}
