//! Behavioural tests of the built `token_budget.wasm` in the wasmtime host, with the clock under
//! the test's control.

use integration::token_budget::records;
use integration::host::{Action, Plugin, Shared, Stream, Vm, DEFAULT_START_NS};
use serde_json::{json, Value};
use std::io::Write as _;
use std::sync::Arc;

/// The host's default start: 2026-11-27T00:00:00Z, a multiple of every window used here.
const T0: u64 = DEFAULT_START_NS / 1_000_000_000;

fn plugin() -> Arc<Plugin> {
    Plugin::filter("token_budget")
}

fn config(tokens: u64, extra: &str) -> String {
    format!(
        r#"{{"subject": {{"header": "x-user-id"}}, "model": {{"fromBody": true, "header": "x-ai-model"}},
            "budgets": [{{"name": "user-minute", "key": ["subject"], "tokens": {tokens}, "window": "1m"}}],
            "reserve": {{"fromMaxTokens": true, "default": 50}}{extra}}}"#
    )
}

fn start(shared: &Arc<Shared>, config: &str) -> Vm {
    Vm::start(&plugin(), shared, config)
}

fn post<'a>(path: &'a str, user: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![(":method", "POST"), (":path", path), (":authority", "api.example.com"), (":scheme", "http"), ("content-type", "application/json"), ("x-user-id", user)]
}

/// A chat request body whose reservation is `ceil(len / 4) + max_tokens`.
fn chat(max_tokens: u64, stream: bool) -> Vec<u8> {
    json!({"model": "gpt-4o", "max_tokens": max_tokens, "stream": stream, "messages": [{"role": "user", "content": "hello there"}]})
        .to_string()
        .into_bytes()
}

fn reservation(body: &[u8], max_tokens: u64) -> u64 {
    (body.len() as u64).div_ceil(4) + max_tokens
}

fn openai_json(prompt: u64, completion: u64, cached: u64) -> Vec<u8> {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": cached}}})
    .to_string()
    .into_bytes()
}

const JSON_OK: &[(&str, &str)] = &[(":status", "200"), ("content-type", "application/json")];
const SSE_OK: &[(&str, &str)] = &[(":status", "200"), ("content-type", "text/event-stream")];

/// Sends a request up to admission; returns the stream id and whether it was admitted.
fn send(vm: &mut Vm, headers: &[(&str, &str)], body: &[u8]) -> (u32, bool) {
    let id = vm.new_stream();
    let first = vm.request_headers(id, headers, body.is_empty());
    if !body.is_empty() && vm.stream(id).local_reply.is_none() {
        // Envoy stops body callbacks too when request headers pause: the body is held instead.
        assert_eq!(first, Action::Continue);
        assert_eq!(vm.request_body(id, &body[..body.len() / 2], false), Action::Pause, "the body waits for admission");
        assert!(vm.stream(id).request_body_out.is_empty());
        vm.request_body(id, &body[body.len() / 2..], true);
    }
    (id, vm.stream(id).local_reply.is_none())
}

/// Answers an admitted request with a full response and ends the stream.
fn respond(vm: &mut Vm, id: u32, headers: &[(&str, &str)], chunks: &[&[u8]]) -> Stream {
    vm.response_headers(id, headers, chunks.is_empty());
    for (i, c) in chunks.iter().enumerate() {
        vm.response_body(id, c, i + 1 == chunks.len());
    }
    vm.end_stream(id);
    vm.stream(id).clone()
}

/// One whole exchange.
fn exchange(vm: &mut Vm, user: &str, body: &[u8], headers: &[(&str, &str)], chunks: &[&[u8]]) -> Stream {
    let (id, admitted) = send(vm, &post("/v1/chat/completions", user), body);
    if !admitted {
        vm.end_stream(id);
        return vm.stream(id).clone();
    }
    respond(vm, id, headers, chunks)
}

fn remaining(s: &Stream) -> u64 {
    let v = s.response_header("x-ratelimit-remaining-tokens").or_else(|| s.local_reply.as_ref().and_then(|r| r.header("x-ratelimit-remaining-tokens")));
    v.unwrap_or_else(|| panic!("no remaining header: {s:?}")).parse().unwrap()
}

fn metric(vm: &mut Vm, shared: &Shared, name: &str) -> u64 {
    vm.tick();
    shared.metric(name).unwrap_or_else(|| panic!("no metric {name}: {:?}", shared.metrics()))
}

#[test]
fn a_request_reserves_then_is_charged_its_real_usage() {
    let shared = Shared::new();
    let mut vm = start(&shared, &config(10_000, ""));
    let body = chat(100, false);
    let (id, admitted) = send(&mut vm, &post("/v1/chat/completions", "alice"), &body);
    assert!(admitted);
    // While in flight, the reservation is held.
    assert_eq!(records(&shared), vec![(0, reservation(&body, 100), 0)]);
    let s = respond(&mut vm, id, JSON_OK, &[&openai_json(19, 10, 4)]);
    assert_eq!(s.response_header("x-ratelimit-limit-tokens").as_deref(), Some("10000"));
    assert_eq!(remaining(&s), 10_000 - reservation(&body, 100), "remaining as of admission");
    assert_eq!(s.response_header("x-ratelimit-reset-tokens").as_deref(), Some("1m0s"));
    assert_eq!(records(&shared), vec![(29, 0, 0)], "the reservation is replaced by 19 + 10 tokens");
    assert_eq!(metric(&mut vm, &shared, "token_budget.user-minute.tokens_charged"), 29);
    assert_eq!(shared.metric("token_budget.user-minute.input_tokens"), Some(15));
    assert_eq!(shared.metric("token_budget.user-minute.cached_tokens"), Some(4));
    assert_eq!(shared.metric("token_budget.user-minute.output_tokens"), Some(10));
    assert_eq!(shared.metric("token_budget.requests_admitted"), Some(1));
    // The next request sees the charge.
    let s = exchange(&mut vm, "alice", &body, JSON_OK, &[&openai_json(1, 1, 0)]);
    assert_eq!(remaining(&s), 10_000 - 29 - reservation(&body, 100));
}

#[test]
fn a_burst_cannot_overshoot_by_more_than_one_reservation_and_429_says_why() {
    let shared = Shared::new();
    let mut vm = start(&shared, &config(1000, ""));
    let body = chat(200, true);
    let r = reservation(&body, 200);
    // Many requests in flight at once, none finished.
    let mut admitted = Vec::new();
    let mut limited = None;
    for _ in 0..20 {
        let (id, ok) = send(&mut vm, &post("/v1/chat/completions", "alice"), &body);
        if ok {
            admitted.push(id);
        } else {
            limited = Some(id);
        }
    }
    assert_eq!(admitted.len() as u64, 1000u64.div_ceil(r), "admitted while room was left");
    let committed = admitted.len() as u64 * r;
    assert!(committed < 1000 + r, "overshoot {committed} is below one reservation ({r})");
    let id = limited.unwrap();
    let reply = vm.stream(id).local_reply.clone().unwrap();
    assert_eq!(reply.status, 429);
    let v = reply.json();
    assert_eq!(v["error"]["type"], "rate_limit_exceeded");
    assert_eq!(v["error"]["code"], "token_budget_exceeded");
    assert!(v["error"]["message"].as_str().unwrap().contains("user-minute"), "{v}");
    assert_eq!(reply.header("retry-after").as_deref(), Some("60"));
    assert_eq!(reply.header("x-ratelimit-limit-tokens").as_deref(), Some("1000"));
    assert_eq!(reply.header("x-ratelimit-remaining-tokens").as_deref(), Some("0"));
    assert_eq!(reply.header("x-ratelimit-reset-tokens").as_deref(), Some("1m0s"));
    assert!(vm.stream(id).request_body_out.is_empty(), "a limited request's body never goes upstream");
    // Once the budget is used up, requests are answered before their body is read.
    let id = vm.new_stream();
    assert_eq!(vm.request_headers(id, &post("/v1/chat/completions", "alice"), false), Action::Pause);
    assert_eq!(vm.stream(id).local_reply.as_ref().map(|r| r.status), Some(429));
    vm.end_stream(id);
    // Another user is unaffected.
    assert!(send(&mut vm, &post("/v1/chat/completions", "bob"), &body).1);
    // When the streams finish (each used 30 tokens), the budget has room again.
    let sse = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":20}}\n\ndata: [DONE]\n\n";
    for id in admitted {
        respond(&mut vm, id, SSE_OK, &[sse]);
    }
    assert!(send(&mut vm, &post("/v1/chat/completions", "alice"), &body).1);
    assert_eq!(metric(&mut vm, &shared, "token_budget.requests_limited"), 20 - 1000u64.div_ceil(r) + 1);
}

#[test]
fn windows_roll_over_and_the_reset_header_follows_the_clock() {
    let shared = Shared::new();
    let mut vm = start(&shared, &config(100, ""));
    shared.set_time_s(T0 + 35);
    let s = exchange(&mut vm, "alice", b"", JSON_OK, &[&openai_json(60, 60, 0)]);
    assert_eq!(s.response_header("x-ratelimit-reset-tokens").as_deref(), Some("25s"));
    assert_eq!(remaining(&s), 50, "a body-less request reserves the default (50)");
    let s = exchange(&mut vm, "alice", b"", JSON_OK, &[]);
    assert_eq!(s.local_reply.as_ref().map(|r| r.status), Some(429), "120 charged of 100");
    shared.set_time_s(T0 + 50);
    let s = exchange(&mut vm, "alice", b"", JSON_OK, &[]);
    let reply = s.local_reply.unwrap();
    assert_eq!(reply.header("retry-after").as_deref(), Some("10"));
    assert_eq!(reply.header("x-ratelimit-reset-tokens").as_deref(), Some("10s"));
    // The next window starts empty.
    shared.set_time_s(T0 + 60);
    let s = exchange(&mut vm, "alice", b"", JSON_OK, &[&openai_json(1, 1, 0)]);
    assert!(s.local_reply.is_none());
    assert_eq!(remaining(&s), 50);
    assert_eq!(s.response_header("x-ratelimit-reset-tokens").as_deref(), Some("1m0s"));
}

#[test]
fn a_request_that_ends_in_the_next_window_is_charged_there() {
    let shared = Shared::new();
    // A table the sweep (1024 slots a tick) covers in one tick.
    let mut vm = start(&shared, &config(1000, r#", "maxKeys": 1000"#));
    shared.set_time_s(T0 + 55);
    let (id, ok) = send(&mut vm, &post("/v1/chat/completions", "alice"), b"");
    assert!(ok);
    assert_eq!(records(&shared), vec![(0, 50, 0)]);
    shared.set_time_s(T0 + 65);
    // The reservation still counts in the new window (in flight), then is released from it.
    let (other, _) = send(&mut vm, &post("/v1/chat/completions", "alice"), b"");
    assert_eq!(records(&shared), vec![(0, 50, 50)]);
    respond(&mut vm, id, JSON_OK, &[&openai_json(30, 10, 0)]);
    assert_eq!(records(&shared), vec![(40, 50, 0)], "charged 40 in the window where it ended");
    respond(&mut vm, other, JSON_OK, &[&openai_json(1, 1, 0)]);
    assert_eq!(records(&shared), vec![(42, 0, 0)]);
    // Two windows later nothing is left, and the sweep frees the slot.
    shared.set_time_s(T0 + 200);
    vm.tick();
    assert_eq!(records(&shared), vec![]);
    assert_eq!(shared.metric("token_budget.slots_reclaimed"), Some(1));
}

#[test]
fn two_workers_share_one_budget_exactly() {
    let shared = Shared::new();
    let mut workers = [start(&shared, &config(1_000_000, "")), start(&shared, &config(1_000_000, ""))];
    let body = chat(10, false);
    let mut in_flight = Vec::new();
    let mut expected = 0;
    for i in 0..40u64 {
        let w = (i % 2) as usize;
        let (id, ok) = send(&mut workers[w], &post("/v1/chat/completions", "alice"), &body);
        assert!(ok);
        in_flight.push((w, id, i));
        // Finish them out of order, interleaved with new admissions on the other worker.
        if i % 3 == 2 {
            for (w, id, n) in in_flight.drain(..).rev() {
                respond(&mut workers[w], id, JSON_OK, &[&openai_json(n, 1, 0)]);
                expected += n + 1;
            }
        }
    }
    for (w, id, n) in in_flight.drain(..) {
        respond(&mut workers[w], id, JSON_OK, &[&openai_json(n, 1, 0)]);
        expected += n + 1;
    }
    assert_eq!(records(&shared), vec![(expected, 0, 0)]);
    workers.iter_mut().for_each(Vm::tick);
    assert_eq!(shared.metric("token_budget.user-minute.tokens_charged"), Some(expected));
    assert_eq!(shared.metric("token_budget.requests_admitted"), Some(40));
}

#[test]
fn at_the_key_cap_new_subjects_share_one_overflow_budget() {
    let shared = Shared::new();
    let mut vm = start(&shared, &config(500, r#", "maxKeys": 4"#));
    let mut admitted = 0;
    for i in 0..200 {
        let s = exchange(&mut vm, &format!("anon-{i}"), b"", JSON_OK, &[]);
        admitted += s.local_reply.is_none() as u32;
    }
    // 4 subjects got their own slots (500 tokens each, 50 per reservation: each admitted
    // once here); the other 196 shared one 500-token overflow budget: 10 reservations.
    assert_eq!(admitted, 4 + 10);
    let keys: Vec<String> = shared.shared_keys();
    assert!(keys.len() <= 4 + 1 + 1, "slots, one overflow record and the sweep cursor: {keys:?}");
    assert!(shared.shared_bytes() < 1000, "{} bytes", shared.shared_bytes());
    assert_eq!(metric(&mut vm, &shared, "token_budget.overflow_admissions"), 10);
    // Reservations were charged (no usage in the responses): those keys stay busy this window.
    // In a later window the slots are reused.
    shared.set_time_s(T0 + 180);
    vm.tick();
    let s = exchange(&mut vm, "newcomer", b"", JSON_OK, &[&openai_json(1, 1, 0)]);
    assert!(s.local_reply.is_none());
    assert!(shared.shared_keys().len() <= 6);
}

fn sse(events: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        write!(out, "data: {e}\n\n").unwrap();
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

#[test]
fn streamed_usage_is_read_across_awkward_chunks() {
    let shared = Shared::new();
    let mut vm = start(&shared, &config(1_000_000, ""));
    let mut events: Vec<Value> = (0..50).map(|i| json!({"choices": [{"index": 0, "delta": {"content": format!(" wörd{i}")}}], "usage": null})).collect();
    events.push(json!({"choices": [], "usage": {"prompt_tokens": 123, "completion_tokens": 50, "total_tokens": 173}}));
    let body = sse(&events);
    // Chunks of 7 bytes cut inside UTF-8 characters, `data:` and the usage object.
    let chunks: Vec<&[u8]> = body.chunks(7).collect();
    respond_and_check(&mut vm, &shared, &chunks, 173);
    let anthropic = concat!(
        "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":5,\"cache_read_input_tokens\":10,\"output_tokens\":1}}}\r\n\r\n",
        "event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hé\"}}\r\n\r\n",
        "event: message_delta\r\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\r\n\r\n",
        "event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n",
    );
    let chunks: Vec<&[u8]> = anthropic.as_bytes().chunks(5).collect();
    respond_and_check(&mut vm, &shared, &chunks, 173 + 25 + 5 + 10 + 15);
}

#[test]
fn long_streams_are_read_from_their_head_and_tail() {
    let shared = Shared::new();
    let mut vm = start(&shared, &config(1_000_000_000, ""));
    let mut events: Vec<Value> = (0..3000).map(|i| json!({"choices": [{"index": 0, "delta": {"content": format!(" w{i}")}}], "usage": null})).collect();
    events.push(json!({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3000}}));
    let body = sse(&events);
    assert!(body.len() > 200_000);
    let chunks: Vec<&[u8]> = body.chunks(16 * 1024).collect();
    respond_and_check(&mut vm, &shared, &chunks, 3011);
    // Cut before the usage chunk: charged the prompt estimate and about one token per event.
    let (id, _) = send(&mut vm, &post("/v1/chat/completions", "alice"), &chat(10, true));
    vm.response_headers(id, SSE_OK, false);
    for c in body[..body.len() - 300].chunks(16 * 1024) {
        vm.response_body(id, c, false);
    }
    vm.end_stream(id);
    let used = records(&shared)[0].0 - 3011;
    let estimate = (chat(10, true).len() as u64).div_ceil(4);
    assert!(used > estimate + 2950 && used < estimate + 3050, "{used}");
}

fn respond_and_check(vm: &mut Vm, shared: &Shared, chunks: &[&[u8]], want_used: u64) {
    let (id, ok) = send(vm, &post("/v1/chat/completions", "alice"), &chat(10, true));
    assert!(ok);
    let s = respond(vm, id, SSE_OK, chunks);
    assert_eq!(s.response_body_out, chunks.concat(), "the stream passes through unchanged");
    assert_eq!(records(shared), vec![(want_used, 0, 0)]);
}

#[test]
fn streaming_chat_requests_get_include_usage_and_no_stale_content_length() {
    let shared = Shared::new();
    let mut vm = start(&shared, &config(1_000_000, r#", "injectStreamUsage": true"#));
    let body = chat(10, true);
    let len = body.len().to_string();
    let mut headers = post("/v1/chat/completions", "alice");
    headers.push(("content-length", &len));
    let (id, ok) = send(&mut vm, &headers, &body);
    assert!(ok);
    let s = vm.stream(id).clone();
    let sent: Value = serde_json::from_slice(&s.request_body_out).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert_eq!(sent["messages"][0]["content"], "hello there");
    // The headers went on before the body was read: content-length is dropped, not stale.
    assert_eq!(s.request_header("content-length"), None);
    assert_eq!(metric(&mut vm, &shared, "token_budget.stream_usage_injected"), 1);
    // Not for the Responses API, nor for requests that already ask for usage.
    for (path, body) in [
        ("/v1/responses", json!({"model": "gpt-4o", "input": "x", "stream": true})),
        ("/v1/chat/completions", json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true}})),
        ("/v1/chat/completions", json!({"model": "gpt-4o", "stream": false})),
    ] {
        let bytes = body.to_string().into_bytes();
        let (id, _) = send(&mut vm, &post(path, "alice"), &bytes);
        assert_eq!(vm.stream(id).request_body_out, bytes, "{path} {body}");
    }
}

#[test]
fn failures_release_or_charge_as_documented() {
    let shared = Shared::new();
    let mut vm = start(&shared, &config(1_000_000, ""));
    let body = chat(100, true);
    let r = reservation(&body, 100);
    let prompt_estimate = (body.len() as u64).div_ceil(4);

    // Upstream error: released.
    exchange(&mut vm, "a", &body, &[(":status", "503"), ("content-type", "application/json")], &[br#"{"error":{"message":"x"}}"#]);
    assert_eq!(records(&shared), vec![(0, 0, 0)]);
    // Reset before any response (or client gone): released.
    let (id, _) = send(&mut vm, &post("/v1/chat/completions", "a"), &body);
    vm.end_stream(id);
    assert_eq!(records(&shared), vec![(0, 0, 0)]);
    // Stream cut after two content events: the prompt estimate and two output tokens.
    let (id, _) = send(&mut vm, &post("/v1/chat/completions", "a"), &body);
    vm.response_headers(id, SSE_OK, false);
    let two = sse(&[json!({"choices": [{"delta": {"role": "assistant", "content": ""}}]}), json!({"choices": [{"delta": {"content": "a"}}]}), json!({"choices": [{"delta": {"content": "b"}}]})]);
    vm.response_body(id, &two, false);
    vm.end_stream(id);
    assert_eq!(records(&shared), vec![(prompt_estimate + 2, 0, 0)]);
    // A finished 2xx whose usage is missing, malformed or absurd: the reservation.
    let mut used = prompt_estimate + 2;
    for bad in [&b"not json at all"[..], br#"{"usage": {"prompt_tokens": -4}}"#, br#"{"usage": {"prompt_tokens": 999999999999, "completion_tokens": 1}}"#, br#"{"usage": {"prompt_tokens": 5"#] {
        exchange(&mut vm, "a", &body, JSON_OK, &[bad]);
        used += r;
        assert_eq!(records(&shared), vec![(used, 0, 0)], "{}", String::from_utf8_lossy(bad));
    }
    // An encoding the filter cannot read: the reservation.
    exchange(&mut vm, "a", &body, &[(":status", "200"), ("content-type", "application/json"), ("content-encoding", "br")], &[b"\x0b\x02\x80"]);
    used += r;
    assert_eq!(records(&shared), vec![(used, 0, 0)]);
    vm.tick();
    assert_eq!(shared.metric("token_budget.reservations_released"), Some(2));
    assert_eq!(shared.metric("token_budget.streams_interrupted"), Some(1));
    assert_eq!(shared.metric("token_budget.parse_failures"), Some(4));
    assert_eq!(shared.metric("token_budget.unsupported_encoding"), Some(1));
}

#[test]
fn gzip_responses_are_counted() {
    let shared = Shared::new();
    let mut vm = start(&shared, &config(1_000_000, ""));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&openai_json(70, 30, 0)).unwrap();
    let compressed = gz.finish().unwrap();
    let (id, _) = send(&mut vm, &post("/v1/chat/completions", "a"), &chat(10, false));
    // The filter asked the upstream for identity...
    assert_eq!(vm.stream(id).request_header("accept-encoding"), None);
    let mut headers = post("/v1/chat/completions", "b");
    headers.push(("accept-encoding", "gzip, br"));
    let (id2, _) = send(&mut vm, &headers, &chat(10, false));
    assert_eq!(vm.stream(id2).request_header("accept-encoding").as_deref(), Some("identity"));
    respond(&mut vm, id2, JSON_OK, &[&openai_json(1, 1, 0)]);
    // ...and reads gzip anyway when it comes.
    let chunks: Vec<&[u8]> = compressed.chunks(9).collect();
    let s = respond(&mut vm, id, &[(":status", "200"), ("content-type", "application/json"), ("content-encoding", "gzip")], &chunks);
    assert_eq!(s.response_body_out, compressed, "the client gets the body as the upstream sent it");
    let used: Vec<u64> = records(&shared).iter().map(|r| r.0).collect();
    assert!(used.contains(&100), "{used:?}");
    // A gzip body cut short is not silently uncounted: the reservation is charged.
    let (id, _) = send(&mut vm, &post("/v1/chat/completions", "c"), &chat(10, false));
    respond(&mut vm, id, &[(":status", "200"), ("content-encoding", "gzip")], &[&compressed[..compressed.len() / 2]]);
    vm.tick();
    assert_eq!(shared.metric("token_budget.parse_failures"), Some(1));
}

#[test]
fn requests_the_filter_cannot_read_still_count() {
    let shared = Shared::new();
    let cfg = r#"{"subject": {"header": "x-user-id"}, "model": {"fromBody": true, "header": "x-ai-model"},
        "budgets": [{"name": "gpt4", "key": ["subject", "model"], "models": ["gpt-4*"], "tokens": 1000, "window": "1h"}],
        "reserve": {"default": 50}, "maxRequestBytes": 1024}"#;
    let mut vm = start(&shared, cfg);
    // Not JSON: default reservation; the model is unknown, so model-scoped budgets still apply.
    let s = exchange(&mut vm, "a", b"\xff\xfe not json", JSON_OK, &[&openai_json(5, 5, 0)]);
    assert!(s.local_reply.is_none());
    assert_eq!(s.response_header("x-ratelimit-limit-tokens").as_deref(), Some("1000"));
    assert_eq!(records(&shared), vec![(10, 0, 0)]);
    // A model from the header when the body does not say.
    let mut h = post("/v1/chat/completions", "a");
    h.push(("x-ai-model", "gpt-4o"));
    let (id, _) = send(&mut vm, &h, b"{}");
    respond(&mut vm, id, JSON_OK, &[&openai_json(5, 5, 0)]);
    let total = |shared: &Shared| records(shared).iter().map(|r| r.0).sum::<u64>();
    assert_eq!(total(&shared), 20);
    // Too large to hold: admitted on the headers, the body passes through untouched.
    let big = format!("{{\"model\": \"gpt-4o\", \"pad\": \"{}\"}}", "x".repeat(3000));
    let id = vm.new_stream();
    assert_eq!(vm.request_headers(id, &h, false), Action::Continue);
    assert_eq!(vm.request_body(id, &big.as_bytes()[..2000], false), Action::Continue);
    vm.request_body(id, &big.as_bytes()[2000..], true);
    assert_eq!(vm.stream(id).request_body_out, big.as_bytes());
    respond(&mut vm, id, JSON_OK, &[&openai_json(5, 5, 0)]);
    assert_eq!(total(&shared), 30);
    // A gzipped request body is inflated to read the model.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(br#"{"model": "gpt-4-turbo", "max_tokens": 7}"#).unwrap();
    let compressed = gz.finish().unwrap();
    let mut h = post("/v1/chat/completions", "a");
    h.push(("content-encoding", "gzip"));
    let (id, _) = send(&mut vm, &h, &compressed);
    assert_eq!(vm.stream(id).request_body_out, compressed);
    respond(&mut vm, id, JSON_OK, &[&openai_json(2, 1, 0)]);
    assert_eq!(total(&shared), 33);
    assert_eq!(records(&shared).len(), 3, "keys a/unknown, a/gpt-4o, a/gpt-4-turbo");
    vm.tick();
    assert_eq!(shared.metric("token_budget.request_body_unreadable"), Some(2));
    assert_eq!(shared.metric("token_budget.gpt4.model.unknown.tokens_charged"), Some(10));
    assert_eq!(shared.metric("token_budget.gpt4.model.gpt-4o.tokens_charged"), Some(20));
    assert_eq!(shared.metric("token_budget.gpt4.model.gpt-4-turbo.tokens_charged"), Some(3));
    // Other models are outside this budget.
    let s = exchange(&mut vm, "a", br#"{"model": "claude-3"}"#, JSON_OK, &[&openai_json(500, 500, 0)]);
    assert!(s.response_header("x-ratelimit-limit-tokens").is_none());
    assert_eq!(total(&shared), 33);
}

#[test]
fn model_metric_names_are_bounded() {
    let shared = Shared::new();
    let cfg = r#"{"subject": {"header": "x-user-id"}, "budgets": [{"name": "m", "key": ["model"], "tokens": 1000000, "window": "1d"}]}"#;
    let mut vm = start(&shared, cfg);
    for i in 0..40 {
        let body = format!(r#"{{"model": "model.{i}/x"}}"#);
        exchange(&mut vm, "a", body.as_bytes(), JSON_OK, &[&openai_json(1, 0, 0)]);
    }
    vm.tick();
    let names: Vec<String> = shared.metrics().into_iter().map(|m| m.0).filter(|n| n.starts_with("token_budget.m.model.") && n.ends_with(".tokens_charged")).collect();
    assert_eq!(names.len(), 17, "16 models and `other`: {names:?}");
    assert_eq!(shared.metric("token_budget.m.model.model_0_x.tokens_charged"), Some(1));
    assert_eq!(shared.metric("token_budget.m.model.other.tokens_charged"), Some(24));
}

#[test]
fn other_methods_pass_untouched() {
    let shared = Shared::new();
    let mut vm = start(&shared, &config(1, ""));
    for _ in 0..3 {
        let s = vm.exchange(&[(":method", "GET"), (":path", "/v1/models"), ("x-user-id", "a")], None, JSON_OK, None);
        assert!(s.local_reply.is_none());
        assert!(s.response_header("x-ratelimit-limit-tokens").is_none());
    }
    assert!(shared.shared_keys().is_empty());
}

#[test]
fn hostile_input_never_traps() {
    let shared = Shared::new();
    let mut vm = start(&shared, &config(1_000_000, r#", "injectStreamUsage": true"#));
    let bodies: [&[u8]; 6] = [b"", b"{", b"[]", b"{\"model\": {\"a\": 1}, \"stream\": true, \"stream_options\": 7}", b"\x00\xff", &[b'{'; 5000]];
    let responses: [&[u8]; 5] = [b"data: {\"usage\": {", b"\xff\xfe\xfd", b"{\"usage\":{\"prompt_tokens\":1e999}}", &[b'['; 100_000], b"data:\rdata:\n\n\r\n"];
    for body in bodies {
        for response in responses {
            for headers in [SSE_OK, JSON_OK, &[(":status", "2"), ("content-encoding", "gzip")][..]] {
                let id = vm.new_stream();
                let mut h = integration::host::pairs(&post("/v1/chat/completions", "a"));
                h.push(("x-user-id".into(), vec![0xff, 0x00, 0x80]));
                vm.try_request_headers(id, h, false).unwrap();
                vm.try_request_body(id, body, true).unwrap();
                vm.try_response_headers(id, integration::host::pairs(headers), false).unwrap();
                vm.try_response_body(id, response, true).unwrap();
                vm.try_end_stream(id).unwrap();
            }
        }
    }
    vm.tick();
    assert!(vm.failed().is_none());
}

#[test]
fn bad_configs_are_rejected_naming_the_field() {
    let cases = [
        ("", "token-budget: configuration: is empty"),
        ("{}", "token-budget: missing field `budgets`"),
        (r#"{"budgets": [{"name": "a", "tokens": 10, "window": "2w"}]}"#, "token-budget: budgets[0].window: `2w`: the unit must be s, m, h or d"),
        (r#"{"budgets": [{"name": "a", "tokens": 10, "window": "1m", "key": ["subject"]}]}"#, "token-budget: budgets[0].key[0]: `subject` needs the top-level `subject` setting"),
        (r#"{"budgets": [{"name": "a", "tokens": 10, "window": "1m", "cost": {"output": -4}}]}"#, "token-budget: budgets[0].cost.output: must be a number from 0 to 1000"),
        (r#"{"budgets": [{"name": "a", "tokens": 10, "window": "1m"}], "maxKeys": 0}"#, "token-budget: maxKeys: must be from 1"),
        (r#"{"budgets": [{"name": "a", "tokens": 10, "window": "1m"}], "reserve": {"dflt": 1}}"#, "token-budget: reserve.dflt: unknown field `dflt`"),
    ];
    for (config, want) in cases {
        let errors = Vm::rejected(&plugin(), config);
        assert_eq!(errors.len(), 1, "one log line for {config:?}: {errors:?}");
        assert!(errors[0].starts_with(want), "config {config:?}\n want {want}\n got  {}", errors[0]);
    }
}

#[test]
fn logs_its_version_on_start() {
    let shared = Shared::new();
    let _vm = start(&shared, &config(1, ""));
    assert!(shared.log_messages(2).iter().any(|l| l.starts_with("token-budget ") && l.ends_with(" starting")));
}
