//! jwt-claims through a real Envoy, with its JWKS fetched from a mock identity provider that
//! can be healthy, down, slow or broken: valid tokens reach the echo upstream as claim headers,
//! the attack table gets its statuses, and spoofed claim headers never arrive.

use integration::client;
use integration::envoy::Envoy;
use integration::mock::jwks::{jwt_gateway, mint, JwksServer, Minted, Mode};
use integration::mock::MockServer;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn minted() -> &'static Minted {
    static MINTED: OnceLock<Minted> = OnceLock::new();
    MINTED.get_or_init(|| mint(None, 1).unwrap_or_else(|e| panic!("{e:#}")))
}

struct Setup {
    envoy: Envoy,
    upstream: MockServer,
    jwks: JwksServer,
}

fn setup(mode: Mode) -> Setup {
    let (envoy, upstream, jwks) = jwt_gateway(mode);
    Setup { envoy, upstream, jwks }
}

fn serving() -> Setup {
    setup(Mode::Serve(minted().jwks.clone()))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Polls `f` until it returns true or `limit` passes.
fn eventually(limit: Duration, f: impl FnMut() -> bool) -> bool {
    integration::poll(limit, Duration::from_millis(100), f, |ok| *ok)
}

#[test]
fn valid_tokens_reach_the_upstream_as_claim_headers_and_spoofs_never_do() {
    let s = serving();
    let m = minted();
    let url = s.envoy.url("gateway", "/api/tasks");
    let spoof = [("x-user-id", "admin"), ("x-org-id", "org-1"), ("x-user-permissions", "*"), ("x-jwt-payload", "e30")];
    for name in ["rs256", "ps256", "es256", "es384", "eddsa"] {
        let auth = bearer(m.valid(name));
        let mut headers = spoof.to_vec();
        headers.push(("authorization", &auth));
        let r = client::get(&url, &headers).unwrap();
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let seen = &r.json()["headers"];
        assert_eq!(seen["x-user-id"], "user-42", "{name}");
        assert_eq!(seen["x-org-id"], "org-7");
        assert_eq!(seen["x-user-permissions"], "read:tasks,write:tasks");
        assert_eq!(seen["x-jwt-payload"], m.valid(name).split('.').nth(1).unwrap());
        assert!(seen.get("authorization").is_none(), "{name}: the token was forwarded");
    }
    // A token in the query string is taken out of the forwarded path.
    let r = client::get(&s.envoy.url("gateway", &format!("/api/tasks?access_token={}&page=2", m.valid("eddsa"))), &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/api/tasks?page=2");
    // No token: 401 with jwt_authn's body and challenge, and nothing reaches the upstream.
    let before = s.upstream.request_count();
    let r = client::get(&url, &spoof).unwrap();
    assert_eq!((r.status, r.text().as_str()), (401, "Jwt is missing"));
    let challenge = r.header("www-authenticate").unwrap();
    assert!(challenge.starts_with("Bearer realm=\"http://127.0.0.1:") && challenge.ends_with("/api/tasks\""), "{challenge}");
    assert_eq!(s.upstream.request_count(), before);
    // Paths that need no token still never see the spoofed headers.
    let r = client::get(&s.envoy.url("gateway", "/health"), &spoof).unwrap();
    assert_eq!(r.status, 200);
    for (h, _) in spoof {
        assert!(r.json()["headers"].get(h).is_none(), "{h} reached the upstream: {}", r.text());
    }
    let got = s.envoy.wait_for_prometheus(&["jwt_claims_allowed", "jwt_claims_denied_missing"], |v| v == [Some(6), Some(1)]);
    assert_eq!(got, [Some(6), Some(1)]);
}

/// (attack token, status, body) through Envoy; `www-authenticate` on every 401.
const ATTACKS: &[(&str, u16, &str)] = &[
    ("alg_none", 401, "Jwt header [alg] is not supported"),
    ("alg_none_with_sig", 401, "Jwt header [alg] is not supported"),
    ("hs256_rsa_public_key", 401, "Jwt header [alg] is not supported"),
    ("alg_family_mismatch", 401, "Jwks doesn't have key to match kid or alg from Jwt"),
    ("unknown_kid", 401, "Jwks doesn't have key to match kid or alg from Jwt"),
    ("expired", 401, "Jwt is expired"),
    ("nbf_future", 401, "Jwt not yet valid"),
    ("wrong_iss", 401, "Jwt issuer is not configured"),
    ("wrong_aud", 403, "Audiences in Jwt are not allowed"),
    ("bad_signature", 401, "Jwt verification fails"),
    ("truncated", 401, "Jwt verification fails"),
    ("bad_base64_header", 401, "Jwt header is an invalid Base64url encoded"),
    ("two_segments", 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"),
    ("four_segments", 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"),
    ("jwe_five_segments", 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"),
    ("oversized", 401, "Jwt verification fails"),
    ("embedded_jwk", 401, "Jwt verification fails"),
    ("jku_attacker_key", 401, "Jwks doesn't have key to match kid or alg from Jwt"),
    ("unknown_crit", 401, "Jwt verification fails"),
];

#[test]
fn the_attack_table_gets_its_statuses_and_nothing_reaches_the_upstream() {
    let s = serving();
    let m = minted();
    let url = s.envoy.url("gateway", "/api/tasks");
    for (name, status, body) in ATTACKS {
        let auth = bearer(m.attack(name));
        let r = client::get(&url, &[("authorization", &auth), ("x-user-id", "admin")]).unwrap();
        assert_eq!((r.status, r.text().as_str()), (*status, *body), "{name}");
        if *status == 401 {
            let challenge = r.header("www-authenticate").unwrap_or_default();
            assert!(challenge.ends_with("/api/tasks\", error=\"invalid_token\""), "{name}: {challenge}");
        }
    }
    assert_eq!(s.upstream.request_count(), 0, "an attack reached the upstream");
    // One fetch at start-up; made-up kids did not make the filter hammer the JWKS server
    // (at most one refetch per 5 s for the whole Envoy).
    assert!(s.jwks.fetches() <= 2, "{} JWKS fetches", s.jwks.fetches());
}

#[test]
fn one_jwks_fetch_serves_every_worker() {
    let s = serving();
    let m = minted();
    let url = s.envoy.url("gateway", "/api/tasks");
    for name in ["rs256", "es256", "eddsa", "ps384", "rs512"].iter().cycle().take(40) {
        let auth = bearer(m.valid(name));
        assert_eq!(client::get(&url, &[("authorization", &auth)]).unwrap().status, 200);
    }
    assert_eq!(s.jwks.fetches(), 1, "two workers, one fetch");
    let request = &s.jwks.server.requests()[0];
    assert_eq!(request.path, "/.well-known/jwks.json");
    assert_eq!(request.header("host"), Some("idp.example.com"));
}

#[test]
fn a_jwks_outage_fails_closed_then_recovers() {
    let s = setup(Mode::Down);
    let m = minted();
    let url = s.envoy.url("gateway", "/api/tasks");
    let auth = bearer(m.valid("rs256"));
    let started = Instant::now();
    let r = client::get(&url, &[("authorization", &auth)]).unwrap();
    assert_eq!((r.status, r.text().as_str()), (401, "Jwks remote fetch is failed"));
    assert!(started.elapsed() < Duration::from_secs(5), "waited {:?}", started.elapsed());
    assert_eq!(s.upstream.request_count(), 0);
    // Garbage is no better than silence.
    s.jwks.set(Mode::Garbage);
    assert!(eventually(Duration::from_secs(5), || s.jwks.fetches() >= 3), "the filter retries while it has no keys");
    assert_eq!(client::get(&url, &[("authorization", &auth)]).unwrap().status, 401);
    // The provider comes back: requests succeed again without restarting Envoy.
    s.jwks.set(Mode::Serve(m.jwks.clone()));
    assert!(eventually(Duration::from_secs(10), || client::get(&url, &[("authorization", &auth)]).unwrap().status == 200));
    let failures = s.envoy.wait_for_prometheus(&["jwt_claims_jwks_idp_fetch_failures"], |[v]| v.is_some_and(|v| v >= 2));
    assert!(failures[0].is_some_and(|v| v >= 2), "{failures:?}");
}

#[test]
fn a_slow_jwks_is_waited_for_and_a_rotated_key_is_fetched() {
    let m = minted();
    let s = setup(Mode::Slow(Duration::from_millis(700), m.jwks.clone()));
    let url = s.envoy.url("gateway", "/api/tasks");
    // The first request waits for the fetch in flight (timeoutMs is 2000) and gets through.
    let auth = bearer(m.valid("es256"));
    assert_eq!(client::get(&url, &[("authorization", &auth)]).unwrap().status, 200);
    // The provider rotates: a token signed with the new key makes the filter refetch (once the
    // 5 s refetch interval allows) and then passes.
    s.jwks.set(Mode::Serve(m.rotated.clone()));
    let rotated = bearer(m.valid("rotated"));
    let mut last = None;
    let ok = eventually(Duration::from_secs(12), || {
        let r = client::get(&url, &[("authorization", &rotated)]).unwrap();
        let done = r.status == 200;
        last = Some(r);
        done
    });
    let last = last.unwrap();
    assert!(ok, "rotated key never accepted: {} {}", last.status, last.text());
    assert_eq!(last.json()["headers"]["x-user-id"], "user-rotated");
    assert!(s.jwks.fetches() <= 4, "{} fetches", s.jwks.fetches());
}
