//! Faults through the whole LLM chain in one real Envoy: provider-fallback's router role, then
//! token-budget, then the route's retries across the providers with provider-fallback's upstream
//! role on the cluster (the fixture `provider-fallback.yaml` with token-budget's filter from
//! `token-budget.yaml` inserted). For each fault: what the client sees, and what the budget
//! holds afterwards (read back like an operator does, from the next request's
//! `x-ratelimit-remaining-tokens` and from Envoy's stats).
//!
//! Covered elsewhere and not repeated here: a primary that fails or is slow falls back
//! (provider_fallback_envoy.rs), token-budget alone with resets and disconnects
//! (token_budget_envoy.rs), a bad config pushed to a running Envoy (config_push_envoy.rs), a
//! trapping filter (fail_policy.rs).

use integration::client::{self, Resp};
use integration::envoy::{Bootstrap, Envoy};
use integration::mock::llm::{self, sse_data, Fault, LlmMock};
use serde_json::{json, Value};
use std::io::Read;
use std::time::{Duration, Instant};

const OPENAI_KEY: &str = "sk-faults-openai";
const ANTHROPIC_KEY: &str = "sk-ant-faults";
const TOKENS: u64 = 1_000_000;

struct Setup {
    envoy: Envoy,
    openai: LlmMock,
    anthropic: LlmMock,
}

fn setup() -> Setup {
    let openai = llm::openai(OPENAI_KEY);
    let anthropic = llm::anthropic(ANTHROPIC_KEY);
    let mut budget = Bootstrap::load("integration/envoy/token-budget.yaml")
        .unwrap()
        .json()
        .pointer("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters/0")
        .cloned()
        .expect("token-budget.yaml's first filter");
    assert_eq!(budget["name"], "token-budget");
    // After the router role, which holds the headers for the body.
    budget["typed_config"]["config"]["allow_on_headers_stop_iteration"] = json!(true);
    let config = json!({"subject": {"header": "x-user-id"}, "model": {"fromBody": true, "header": "x-ai-model"},
        "budgets": [{"name": "chain", "key": ["subject"], "tokens": TOKENS, "window": "1d"}], "reserve": {"default": 10}})
    .to_string();
    let envoy = Bootstrap::load("integration/envoy/provider-fallback.yaml")
        .map(|b| b.env("OPENAI_API_KEY", OPENAI_KEY).env("ANTHROPIC_API_KEY", ANTHROPIC_KEY))
        .map(|mut b| {
            let chain = b
                .json_mut()
                .pointer_mut("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters")
                .and_then(Value::as_array_mut)
                .expect("the fixture's http_filters");
            chain.insert(1, budget);
            b
        })
        .and_then(|b| b.wasm_config("token-budget", &config))
        .and_then(|b| b.cluster_endpoint("llm", 0, openai.port())?.cluster_endpoint("llm", 1, anthropic.port()))
        .and_then(|b| b.start())
        .unwrap_or_else(|e| panic!("{e:#}"));
    Setup { envoy, openai, anthropic }
}

fn chat(stream: bool, max_tokens: u64) -> Value {
    let mut body = json!({"model": "gpt-4o", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "Say some words please"}]});
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// What token-budget reserves for a body: `ceil(len / 4) + max_tokens`.
fn reservation(body: &Value, max_tokens: u64) -> u64 {
    (body.to_string().len() as u64).div_ceil(4) + max_tokens
}

impl Setup {
    fn url(&self) -> String {
        self.envoy.url("gateway", "/v1/chat/completions")
    }

    fn post(&self, user: &str, body: &Value, extra: &[(&str, &str)]) -> Resp {
        let mut h = vec![("x-user-id", user)];
        h.extend_from_slice(extra);
        client::post_json(&self.url(), &h, body).unwrap()
    }

    /// The budget left for `user`: a request that reserves a known amount and is answered with
    /// an error (released), read from its `x-ratelimit-remaining-tokens`.
    fn left(&self, user: &str) -> u64 {
        self.openai.set_fault(Some(Fault::Status(400)));
        let body = chat(false, 1);
        let r = self.post(user, &body, &[]);
        self.openai.set_fault(None);
        assert_eq!(r.status, 400, "{}", r.text());
        let remaining: u64 = r.header("x-ratelimit-remaining-tokens").unwrap_or_else(|| panic!("{:?}", r.headers)).parse().unwrap();
        remaining + reservation(&body, 1)
    }

    /// Waits for a counter (flushed once a second) to reach `want`; returns what it read.
    fn stat(&self, name: &str, want: u64) -> u64 {
        self.envoy.wait_for_prometheus(&[name], |[v]| v == Some(want))[0].unwrap_or(0)
    }
}

fn openai_error(r: &Resp) -> Value {
    assert!(r.header("content-type").unwrap_or_default().starts_with("application/json"), "{:?}", r.headers);
    let v = r.json();
    assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string(), "{}", r.text());
    v
}

#[test]
fn a_fallback_stream_reset_midway_is_cut_for_the_client_and_charged_for_what_streamed() {
    let s = setup();
    s.openai.set_fault(Some(Fault::Status(429)));
    // message_start, content_block_start and four text deltas, then the connection is reset.
    s.anthropic.set_fault(Some(Fault::ResetAfterChunks(6)));
    let body = chat(true, 2000);
    let mut r = client::post_streaming(&s.url(), &[("x-user-id", "reset"), ("content-type", "application/json")], body.to_string().as_bytes()).unwrap();
    assert_eq!(r.status, 200, "the stream had started when the provider went away");
    let mut got = Vec::new();
    let read = r.body.read_to_end(&mut got);
    // The client gets the translated chunks that arrived and never a [DONE]: the stream ends
    // in an error (the connection is cut, or the translation's error event closes it).
    let data = sse_data(&got);
    assert!(!data.iter().any(|d| d == "[DONE]"), "{}", String::from_utf8_lossy(&got));
    let chunks: Vec<Value> = data.iter().filter_map(|d| serde_json::from_str(d).ok()).collect();
    let words: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(words.starts_with("word1"), "what streamed before the reset arrived: {words:?}");
    let ended_with_error = chunks.last().is_some_and(|c| c["error"]["code"].is_string());
    assert!(read.is_err() || ended_with_error, "the client can tell the answer is incomplete: {}", String::from_utf8_lossy(&got));
    s.anthropic.set_fault(None);
    s.openai.set_fault(None);

    // Charged: the prompt estimate and one token per content event that went through; the rest
    // of the 2000-token reservation is given back.
    assert_eq!(s.stat("token_budget_streams_interrupted", 1), 1);
    let estimate = (body.to_string().len() as u64).div_ceil(4);
    let seen = chunks.iter().filter(|c| c["choices"][0]["delta"]["content"].as_str().is_some_and(|t| !t.is_empty())).count() as u64;
    let charged = TOKENS - s.left("reset");
    assert!(charged >= estimate + seen.min(1) && charged <= estimate + seen, "charged {charged}, estimate {estimate}, content events {seen}");
    assert_eq!(s.stat("token_budget_chain_tokens_charged", charged), charged);
}

#[test]
fn providers_slower_than_the_timeouts_give_an_openai_504_and_charge_nothing() {
    let s = setup();
    // per_try_timeout is 3 s: both attempts time out.
    s.openai.set_fault(Some(Fault::Delay(Duration::from_secs(8))));
    s.anthropic.set_fault(Some(Fault::Delay(Duration::from_secs(8))));
    let started = Instant::now();
    let r = s.post("slow", &chat(false, 500), &[]);
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(openai_error(&r)["error"]["code"], "upstream_timeout");
    assert!(took < Duration::from_secs(8), "answered by the timeouts, not by the providers ({took:?})");
    assert_eq!(s.openai.request_count(), 1);
    assert_eq!(s.anthropic.request_count(), 1, "one retry, on the fallback");
    s.openai.set_fault(None);
    s.anthropic.set_fault(None);
    assert_eq!(s.left("slow"), TOKENS, "a request that got no answer is charged nothing");
    assert_eq!(s.stat("token_budget_chain_tokens_charged", 0), 0);
}

#[test]
fn malformed_provider_answers_reach_the_client_as_documented_and_are_charged_as_documented() {
    let s = setup();
    // The primary (OpenAI-compatible, passed through untouched) sends a 200 whose JSON is cut:
    // the client gets it as it came; token-budget cannot read the usage, so it charges the
    // reservation (a parse failure), which is the documented upper bound.
    s.openai.set_fault(Some(Fault::Malformed));
    let body = chat(false, 300);
    let r = s.post("malformed", &body, &[]);
    assert_eq!(r.status, 200);
    assert!(serde_json::from_slice::<Value>(&r.body).is_err(), "the client sees the provider's broken body: {}", r.text());
    assert_eq!(s.stat("token_budget_parse_failures", 1), 1);
    let after_openai = s.left("malformed");
    assert_eq!(after_openai, TOKENS - reservation(&body, 300));

    // The fallback (Anthropic, translated) sends a broken body: the client gets a 502 OpenAI
    // error instead of a translation of half a message, and nothing is charged for it.
    s.openai.set_fault(Some(Fault::Status(503)));
    s.anthropic.set_fault(Some(Fault::Malformed));
    let r = s.post("malformed", &body, &[]);
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(openai_error(&r)["error"]["code"], "provider_response_unusable");
    s.anthropic.set_fault(None);
    assert_eq!(s.left("malformed"), after_openai, "a 502 charges nothing");
    assert_eq!(s.stat("token_budget_parse_failures", 1), 1);
}

#[test]
fn a_client_that_leaves_a_translated_stream_frees_the_provider_and_the_reservation() {
    let s = setup();
    s.openai.set_fault(Some(Fault::Status(429)));
    let body = chat(true, 3000);
    let h = [("x-user-id", "gone"), ("content-type", "application/json"), ("x-mock-output-tokens", "60"), ("x-mock-chunk-delay-ms", "100")];
    let mut r = client::post_streaming(&s.url(), &h, body.to_string().as_bytes()).unwrap();
    assert_eq!(r.status, 200);
    let mut first = [0u8; 32];
    r.body.read_exact(&mut first).unwrap();
    let started = Instant::now();
    drop(r);
    s.openai.set_fault(None);
    // The stream (60 events 100 ms apart) would take 6 s; the interrupted stream is settled long
    // before, charged at most what streamed, and the gateway goes on serving.
    assert_eq!(s.stat("token_budget_streams_interrupted", 1), 1);
    assert!(started.elapsed() < Duration::from_secs(5), "settled when the client left, not when the provider finished");
    let charged = TOKENS - s.left("gone");
    let estimate = (body.to_string().len() as u64).div_ceil(4);
    assert!(charged >= estimate && charged < estimate + 60, "charged {charged}");
    let r = s.post("next", &chat(false, 10), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
}

// --- jwt-claims and its JWKS server (integration/envoy/jwt-claims.yaml: timeoutMs 2000). The
// outage at start, garbage before any good fetch, and a slow server within the timeout are in
// jwt_claims_envoy.rs.

mod jwks_faults {
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

    fn setup(mode: Mode) -> (Envoy, MockServer, JwksServer) {
        jwt_gateway(mode)
    }

    fn get(envoy: &Envoy, token: &str) -> client::Resp {
        client::get(&envoy.url("gateway", "/api/tasks"), &[("authorization", &format!("Bearer {token}"))]).unwrap()
    }

    #[test]
    fn a_jwks_server_slower_than_the_timeout_fails_closed_without_holding_the_request() {
        // The server would answer after 60 s; the client gives up after 30 s. Only a filter that
        // stops waiting at its 2 s timeout answers at all.
        let (envoy, upstream, jwks) = setup(Mode::Slow(Duration::from_secs(60), minted().jwks.clone()));
        let r = get(&envoy, minted().valid("rs256"));
        assert_eq!((r.status, r.text().as_str()), (401, "Jwks remote fetch is failed"));
        assert_eq!(upstream.request_count(), 0, "nothing reaches the upstream unauthenticated");
        assert!(jwks.fetches() >= 1);
    }

    #[test]
    fn a_jwks_server_that_breaks_after_a_good_fetch_leaves_the_last_good_keys_in_use() {
        let m = minted();
        let (envoy, upstream, jwks) = setup(Mode::Serve(m.jwks.clone()));
        assert_eq!(get(&envoy, m.valid("es256")).status, 200);
        let fetched = jwks.fetches();
        for broken in [Mode::Garbage, Mode::Down, Mode::Status(503)] {
            jwks.set(broken.clone());
            // A token signed with a key the set does not have makes the filter refetch (at most
            // every few seconds); the refetch fails ...
            let deadline = Instant::now() + Duration::from_secs(15);
            let before = jwks.fetches();
            while jwks.fetches() == before && Instant::now() < deadline {
                assert_eq!(get(&envoy, m.valid("rotated")).status, 401, "{broken:?}: an unknown key is refused");
                std::thread::sleep(Duration::from_millis(200));
            }
            assert!(jwks.fetches() > before, "{broken:?}: the filter never refetched");
            // ... and the keys it had still verify: a broken identity provider does not log
            // everybody out, and lets nobody in.
            let r = get(&envoy, m.valid("es256"));
            assert_eq!(r.status, 200, "{broken:?}: {}", r.text());
            assert_eq!(r.json()["headers"]["x-user-id"], "user-42");
        }
        assert!(jwks.fetches() > fetched);
        let failures = envoy.wait_for_prometheus(&["jwt_claims_jwks_idp_fetch_failures"], |[v]| v.is_some_and(|v| v >= 3));
        assert!(failures[0].is_some_and(|v| v >= 3), "{failures:?}");
        assert!(upstream.request_count() >= 4);
    }
}
