//! token-budget through a real Envoy (two workers) in front of the mock OpenAI and Anthropic
//! providers. What the budgets hold is read back the way an operator would: from the
//! `x-ratelimit-remaining-tokens` header of a later request and from Envoy's stats.

use integration::client::{self, Resp};
use integration::envoy::{Bootstrap, Envoy};
use integration::mock::llm::{self, sse_data, Fault, LlmMock};
use serde_json::{json, Value};
use std::io::Read;

struct Setup {
    envoy: Envoy,
    openai: LlmMock,
    anthropic: LlmMock,
}

fn setup(config: &str) -> Setup {
    // The budgets here are per minute: each test's counts fall in one window.
    integration::token_budget::clear_of_window_edge(60, std::time::Duration::from_secs(20));
    let openai = llm::openai("sk-test");
    let anthropic = llm::anthropic("ak-test");
    let envoy = Bootstrap::load("integration/envoy/token-budget.yaml")
        .and_then(|b| b.concurrency(2).cluster("openai", openai.port()))
        .and_then(|b| b.cluster("anthropic", anthropic.port()))
        .and_then(|b| b.wasm_config("token-budget", config))
        .and_then(|b| b.start())
        .unwrap_or_else(|e| panic!("{e:#}"));
    Setup { envoy, openai, anthropic }
}

/// One per-user budget of `tokens` a minute; body-less requests reserve 10.
fn per_user(tokens: u64) -> String {
    format!(
        r#"{{"subject": {{"header": "x-user-id"}}, "budgets": [{{"name": "user_minute", "key": ["subject"], "tokens": {tokens}, "window": "1m"}}],
            "reserve": {{"default": 10}}, "injectStreamUsage": true}}"#
    )
}

const OPENAI_AUTH: (&str, &str) = ("authorization", "Bearer sk-test");

/// A chat request with `words` prompt words (the mock's prompt tokens).
fn chat(words: usize, max_tokens: u64, stream: bool) -> Value {
    let content = vec!["w"; words].join(" ");
    json!({"model": "gpt-4o", "max_tokens": max_tokens, "stream": stream, "messages": [{"role": "user", "content": content}]})
}

/// The reservation the filter makes for a body: `ceil(len / 4) + max_tokens`.
fn reservation(body: &Value, max_tokens: u64) -> u64 {
    (body.to_string().len() as u64).div_ceil(4) + max_tokens
}

fn remaining(r: &Resp) -> u64 {
    r.header("x-ratelimit-remaining-tokens").unwrap_or_else(|| panic!("no remaining header: {} {:?}", r.status, r.headers)).parse().unwrap()
}

/// A body-less POST: it reserves the default (10) and the mock answers 400, which releases it,
/// so its remaining header reads the budget as it stands.
fn probe(s: &Setup, user: &str) -> u64 {
    let r = client::post(&s.envoy.url("gateway", "/v1/chat/completions"), &[OPENAI_AUTH, ("x-user-id", user)], b"").unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    remaining(&r) + 10
}

fn stat(s: &Setup, name: &str, want: u64) -> u64 {
    s.envoy.wait_for_prometheus(&[name], |[v]| v == Some(want))[0].unwrap_or(0)
}

#[test]
fn an_exhausted_budget_answers_429_with_the_rate_limit_headers() {
    let s = setup(&per_user(300));
    let url = s.envoy.url("gateway", "/v1/chat/completions");
    let body = chat(4, 10, false);
    let r_each = reservation(&body, 10);
    let mut admitted = 0;
    let limited = loop {
        let r = client::post_json(&url, &[OPENAI_AUTH, ("x-user-id", "alice"), ("x-mock-output-tokens", "10")], &body).unwrap();
        if r.status == 429 {
            break r;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["usage"]["total_tokens"], 14);
        assert_eq!(r.header("x-ratelimit-limit-tokens"), Some("300"));
        // As of admission: what was charged so far plus this request's own reservation.
        assert_eq!(remaining(&r), 300u64.saturating_sub(14 * admitted + r_each));
        let reset = r.header("x-ratelimit-reset-tokens").unwrap();
        assert!(reset.ends_with('s') && reset.len() <= 5, "{reset}");
        admitted += 1;
        assert!(admitted < 100, "never limited");
    };
    // Charged 14 each (4 prompt + 10 output), admitted while anything was left.
    assert_eq!(admitted, 300u64.div_ceil(14), "reservation {r_each}");
    assert_eq!(limited.header("content-type"), Some("application/json"));
    let v = limited.json();
    assert_eq!(v["error"]["type"], "rate_limit_exceeded");
    assert_eq!(v["error"]["code"], "token_budget_exceeded");
    assert!(v["error"]["message"].as_str().unwrap().contains("user_minute"));
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(limited.header("x-ratelimit-limit-tokens"), Some("300"));
    assert_eq!(limited.header("x-ratelimit-remaining-tokens"), Some("0"));
    assert!(limited.header("x-ratelimit-reset-tokens").is_some());
    assert_eq!(s.openai.request_count(), admitted as usize, "a limited request never reaches the provider");
    // Another user still has a budget.
    let r = client::post_json(&url, &[OPENAI_AUTH, ("x-user-id", "bob")], &body).unwrap();
    assert_eq!(r.status, 200);
    let got = stat(&s, "token_budget_user_minute_requests_limited", 1);
    assert_eq!(got, 1);
}

#[test]
fn streaming_requests_get_usage_injected_and_are_charged_exactly() {
    let s = setup(&per_user(1_000_000));
    let body = chat(6, 50, true);
    let r = client::post_json(&s.envoy.url("gateway", "/v1/chat/completions"), &[OPENAI_AUTH, ("x-user-id", "alice"), ("x-mock-output-tokens", "9")], &body).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // The provider saw include_usage and the whole rewritten body. Envoy forwards the request
    // headers before the filter reads the body and keeps content-length as it was (checked:
    // with it left in place the provider reads a truncated body and answers 400), so the filter
    // drops it and Envoy sends the body chunked.
    let seen = s.openai.requests().pop().unwrap();
    assert_eq!(seen.json()["stream_options"]["include_usage"], true);
    assert_eq!(seen.json()["messages"], body["messages"]);
    assert_eq!(seen.header("content-length"), None);
    assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
    let data = sse_data(&r.body);
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["total_tokens"], 15);
    assert_eq!(stat(&s, "token_budget_user_minute_tokens_charged", 15), 15);
    assert_eq!(probe(&s, "alice"), 1_000_000 - 15);
}

#[derive(Clone, Copy, Debug)]
enum Call {
    Chat,
    Responses,
    Anthropic,
}

/// Sends one streaming request and reads it to the end; returns the tokens the provider
/// reported (what the budget must be charged).
fn stream_one(url_base: &str, call: Call, words: usize, output: u64, cached: u64) -> u64 {
    let content = vec!["w"; words].join(" ");
    let out = output.to_string();
    let cached_s = cached.to_string();
    let mut headers = vec![("x-user-id", "crowd"), ("x-mock-output-tokens", out.as_str()), ("x-mock-chunk-delay-ms", "2"), ("content-type", "application/json")];
    let (path, body) = match call {
        Call::Chat => {
            headers.push(OPENAI_AUTH);
            ("/v1/chat/completions", json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": content}]}))
        }
        Call::Responses => {
            headers.push(OPENAI_AUTH);
            ("/v1/responses", json!({"model": "gpt-4o", "stream": true, "input": content}))
        }
        Call::Anthropic => {
            headers.extend([("x-api-key", "ak-test"), ("anthropic-version", "2023-06-01"), ("x-mock-cached-tokens", cached_s.as_str())]);
            ("/v1/messages", json!({"model": "claude-sonnet-4-5", "max_tokens": 1000, "stream": true, "messages": [{"role": "user", "content": content}]}))
        }
    };
    let mut r = client::post_streaming(&format!("{url_base}{path}"), &headers, body.to_string().as_bytes()).unwrap();
    assert_eq!(r.status, 200, "{call:?}");
    let mut text = Vec::new();
    r.body.read_to_end(&mut text).unwrap();
    assert!(!text.is_empty());
    // Anthropic's input excludes cache reads; the mock reports them apart. The total is the same.
    words as u64 + output
}

#[test]
fn concurrent_streams_on_two_workers_are_charged_exactly_their_usage() {
    let s = setup(&per_user(1_000_000_000));
    let base = s.envoy.url("gateway", "");
    let handles: Vec<_> = (0..36u64)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || {
                let call = [Call::Chat, Call::Responses, Call::Anthropic][(i % 3) as usize];
                stream_one(&base, call, 3 + (i as usize % 7), 1 + i % 11, i % 3)
            })
        })
        .collect();
    let expected: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(stat(&s, "token_budget_user_minute_tokens_charged", expected), expected);
    assert_eq!(probe(&s, "crowd"), 1_000_000_000 - expected);
    assert_eq!(s.openai.request_count() + s.anthropic.request_count(), 36 + 1);
    // Both workers took connections.
    let stats = s.envoy.admin("/stats?filter=worker_..downstream_cx_total").unwrap().1;
    let per_worker: Vec<u64> = stats.lines().filter_map(|l| l.rsplit(": ").next()?.parse().ok()).collect();
    assert!(per_worker.len() >= 2 && per_worker.iter().filter(|n| **n > 0).count() >= 2, "{stats}");
}

#[test]
fn a_burst_of_slow_streams_overshoots_by_at_most_one_reservation() {
    let s = setup(&per_user(2000));
    let url = s.envoy.url("gateway", "/v1/chat/completions");
    let body = chat(5, 400, true);
    let r_each = reservation(&body, 400);
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            std::thread::spawn(move || {
                let h = [OPENAI_AUTH, ("x-user-id", "burst"), ("x-mock-output-tokens", "40"), ("x-mock-chunk-delay-ms", "60"), ("content-type", "application/json")];
                let mut r = client::post_streaming(&url, &h, body.to_string().as_bytes()).unwrap();
                let mut sink = Vec::new();
                let _ = r.body.read_to_end(&mut sink);
                r.status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let admitted = statuses.iter().filter(|s| **s == 200).count() as u64;
    assert_eq!(statuses.iter().filter(|s| **s == 429).count() as u64, 20 - admitted, "{statuses:?}");
    // The streams take over 2 s; all 20 arrive while the first are still running.
    assert_eq!(admitted, 2000u64.div_ceil(r_each), "{statuses:?} (reservation {r_each})");
    let charged = stat(&s, "token_budget_user_minute_tokens_charged", admitted * 45);
    assert_eq!(charged, admitted * 45);
    assert!(charged < 2000 + r_each);
}

#[test]
fn a_reset_stream_releases_its_reservation() {
    let s = setup(&per_user(10_000));
    let url = s.envoy.url("gateway", "/v1/chat/completions");
    let body = chat(5, 3000, true);
    let h = [OPENAI_AUTH, ("x-user-id", "alice"), ("content-type", "application/json")];
    // Reset before any response: released whole.
    s.openai.set_fault(Some(Fault::ResetBeforeResponse));
    let r = client::post(&url, &h, body.to_string().as_bytes()).unwrap();
    assert_eq!(r.status, 503);
    s.openai.set_fault(None);
    assert_eq!(probe(&s, "alice"), 10_000, "nothing charged, nothing held");
    // Reset after the role chunk and two words: charged what streamed (the prompt estimate and
    // two output tokens), the rest of the reservation released.
    s.openai.set_fault(Some(Fault::ResetAfterChunks(3)));
    let mut r = client::post_streaming(&url, &h, body.to_string().as_bytes()).unwrap();
    let mut got = Vec::new();
    assert!(r.body.read_to_end(&mut got).is_err(), "the client sees the reset");
    s.openai.set_fault(None);
    let streamed = (body.to_string().len() as u64).div_ceil(4) + 2;
    assert_eq!(stat(&s, "token_budget_user_minute_tokens_charged", streamed), streamed);
    assert_eq!(probe(&s, "alice"), 10_000 - streamed);
    assert_eq!(stat(&s, "token_budget_streams_interrupted", 1), 1);
    assert_eq!(stat(&s, "token_budget_reservations_released", 3), 3, "the reset and two probes");
}

#[test]
fn a_client_that_goes_away_mid_stream_does_not_keep_its_reservation() {
    let s = setup(&per_user(10_000));
    let url = s.envoy.url("gateway", "/v1/chat/completions");
    let body = chat(5, 3000, true);
    let h = [OPENAI_AUTH, ("x-user-id", "alice"), ("content-type", "application/json"), ("x-mock-output-tokens", "50"), ("x-mock-chunk-delay-ms", "100")];
    let mut r = client::post_streaming(&url, &h, body.to_string().as_bytes()).unwrap();
    let mut first = [0u8; 64];
    r.body.read_exact(&mut first).unwrap();
    drop(r);
    let interrupted = stat(&s, "token_budget_streams_interrupted", 1);
    assert_eq!(interrupted, 1);
    let left = probe(&s, "alice");
    let estimate = (body.to_string().len() as u64).div_ceil(4);
    assert!(left <= 10_000 - estimate && left > 10_000 - reservation(&body, 3000), "{left}");
}

#[test]
fn gzip_and_anthropic_cache_tokens_are_counted() {
    let cfg = r#"{"subject": {"header": "x-user-id"}, "budgets": [
        {"name": "weighted", "key": ["subject"], "tokens": 100000, "window": "1h", "cost": {"input": 1, "output": 4, "cachedInput": 0.25}}],
        "reserve": {"default": 10}}"#;
    let s = setup(cfg);
    // A gzip body the provider sends whatever the client asked for.
    s.openai.set_fault(Some(Fault::Gzip));
    let r = client::post_json(&s.envoy.url("gateway", "/v1/chat/completions"), &[OPENAI_AUTH, ("x-user-id", "gz"), ("x-mock-output-tokens", "6")], &chat(5, 100, false)).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    s.openai.set_fault(None);
    let want = 5 + 4 * 6;
    assert_eq!(stat(&s, "token_budget_weighted_tokens_charged", want), want);
    assert_eq!(stat(&s, "token_budget_weighted_output_tokens", 6), 6);
    // Anthropic streaming: message_start's input and cache reads, message_delta's output.
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true, "system": "be brief",
        "messages": [{"role": "user", "content": "one two three four five six"}]});
    let h = [("x-api-key", "ak-test"), ("anthropic-version", "2023-06-01"), ("x-user-id", "an"), ("x-mock-cached-tokens", "4"), ("x-mock-output-tokens", "7")];
    let r = client::post_json(&s.envoy.url("gateway", "/v1/messages"), &h, &body).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // 8 prompt words: 4 uncached input, 4 cache reads (a quarter each), 7 output (4 each).
    let weighted = 4 + 1 + 28;
    assert_eq!(stat(&s, "token_budget_weighted_tokens_charged", want + weighted), want + weighted);
    assert_eq!(stat(&s, "token_budget_weighted_cached_tokens", 4), 4);
    assert_eq!(stat(&s, "token_budget_weighted_input_tokens", 5 + 4), 5 + 4);
}
