//! token-budget in global mode, as the built `.wasm` in the wasmtime host: admission asks the
//! rate limit service (`ShouldRateLimit` over `dispatch_grpc_call`, answered here by the test),
//! settlement charges it, and `failureMode` decides when it cannot answer. The messages the
//! filter sends are read with Google's protobuf runtime (integration/tools/rls_proto.py), not
//! with the filter's own codec.

use integration::token_budget::records;
use integration::host::{Action, GrpcCall, Plugin, Shared, Vm, DEFAULT_START_NS, GRPC_CONNECTION_TERMINATED, GRPC_CONNECT_REFUSED, GRPC_TIMEOUT};
use integration::paths;
use serde_json::{json, Value};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;

const T0: u64 = DEFAULT_START_NS / 1_000_000_000;

fn plugin() -> Arc<Plugin> {
    Plugin::filter("token_budget")
}

fn config(tokens: u64, failure_mode: &str) -> String {
    format!(
        r#"{{"subject": {{"header": "x-user-id"}}, "model": {{"fromBody": true, "header": "x-ai-model"}},
            "budgets": [{{"name": "user-minute", "key": ["subject"], "tokens": {tokens}, "window": "1m"}}],
            "reserve": {{"fromMaxTokens": true, "default": 50}},
            "mode": "global", "global": {{"cluster": "ratelimit", "domain": "llm-tokens", "timeoutMs": 50, "failureMode": "{failure_mode}"}}}}"#
    )
}

fn start(shared: &Arc<Shared>, config: &str) -> Vm {
    Vm::start(&plugin(), shared, config)
}

fn post<'a>(path: &'a str, user: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![(":method", "POST"), (":path", path), (":authority", "api.example.com"), ("content-type", "application/json"), ("x-user-id", user)]
}

fn chat(model: &str, max_tokens: u64) -> Vec<u8> {
    json!({"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hello there"}]}).to_string().into_bytes()
}

fn reservation(body: &[u8], max_tokens: u64) -> u64 {
    (body.len() as u64).div_ceil(4) + max_tokens
}

const JSON_OK: &[(&str, &str)] = &[(":status", "200"), ("content-type", "application/json")];

fn openai_json(prompt: u64, completion: u64) -> Vec<u8> {
    json!({"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
           "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}})
    .to_string()
    .into_bytes()
}

// --- the rate limit service's side, written here independently of the filter's codec

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    varint(out, number << 3 | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A `DescriptorStatus`: code (1 OK, 2 OVER_LIMIT), a limit per minute (or none: a descriptor
/// the service has no limit for), the remaining count and the seconds to the reset.
fn status(code: u64, limit: Option<u64>, remaining: u64, reset_s: u64) -> Vec<u8> {
    let mut s = vec![0x08, code as u8];
    if let Some(limit) = limit {
        let mut l = vec![0x08];
        varint(&mut l, limit);
        l.extend_from_slice(&[0x10, 2]);
        field(&mut s, 2, &l);
    }
    s.push(0x18);
    varint(&mut s, remaining);
    let mut d = vec![0x08];
    varint(&mut d, reset_s);
    field(&mut s, 4, &d);
    s
}

fn response(overall: u64, statuses: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![0x08, overall as u8];
    for s in statuses {
        field(&mut out, 2, s);
    }
    out
}

/// Google's protobuf runtime reading a request the filter sent.
fn decode(message: &[u8]) -> Value {
    rls_tool("decode-request", &json!({"hex": hex(message)}))
}

fn rls_tool(command: &str, input: &Value) -> Value {
    let mut child = Command::new(paths::python())
        .arg(paths::root().join("integration/tools/rls_proto.py"))
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running rls_proto.py (scripts/setup.sh installs protobuf into .venv): {e}"));
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "rls_proto.py {command}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// The one gRPC call the filter has made that nobody answered yet.
fn only_call(vm: &Vm) -> GrpcCall {
    let calls = vm.grpc_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    calls[0].clone()
}

/// Sends a request up to its check: headers, the body in two chunks (held), and the check call.
fn send(vm: &mut Vm, headers: &[(&str, &str)], body: &[u8]) -> (u32, GrpcCall) {
    let id = vm.new_stream();
    assert_eq!(vm.request_headers(id, headers, false), Action::Continue, "the headers go on; the body is held");
    assert_eq!(vm.request_body(id, &body[..body.len() / 2], false), Action::Pause);
    assert_eq!(vm.request_body(id, &body[body.len() / 2..], true), Action::Pause, "held until the service answers");
    assert!(vm.stream(id).request_body_out.is_empty());
    let call = vm.grpc_calls().into_iter().find(|c| c.context_id == id).expect("a check call");
    (id, call)
}

fn metric(vm: &mut Vm, shared: &Shared, name: &str) -> u64 {
    vm.tick();
    shared.metric(name).unwrap_or(0)
}

#[test]
fn admission_checks_the_service_without_counting_and_settlement_charges_the_usage() {
    let shared = Shared::new();
    let mut vm = start(&shared, &config(10_000, "deny"));
    shared.set_time_s(T0 + 15);
    let body = chat("gpt-4o", 100);
    let (id, call) = send(&mut vm, &post("/v1/chat/completions", "alice"), &body);
    assert_eq!(String::from_utf8_lossy(&call.upstream), "ratelimit");
    assert_eq!(call.service, "envoy.service.ratelimit.v3.RateLimitService");
    assert_eq!(call.method, "ShouldRateLimit");
    assert_eq!(call.timeout_ms, 50);
    assert_eq!(
        decode(&call.message),
        json!({"domain": "llm-tokens", "hits_addend": 0, "descriptors": [
            {"entries": [["budget", "user-minute"], ["subject", "alice"]], "hits_addend": 0}]}),
        "one descriptor per budget, hits_addend 0: a check that counts nothing"
    );
    // 7,000 of 10,000 left at the service: admitted, the reservation held in this Envoy.
    vm.respond_grpc(call.token, &response(1, &[status(1, Some(10_000), 7_000, 45)]));
    let s = vm.stream(id).clone();
    assert!(s.local_reply.is_none());
    assert_eq!(s.request_resumed, 1);
    assert_eq!(s.request_body_out, body, "the body goes upstream whole once admitted");
    let r = reservation(&body, 100);
    assert_eq!(records(&shared), vec![(0, r, 0)]);
    vm.response_headers(id, JSON_OK, false);
    let s = vm.stream(id).clone();
    assert_eq!(s.response_header("x-ratelimit-limit-tokens").as_deref(), Some("10000"), "the service's limit");
    assert_eq!(s.response_header("x-ratelimit-remaining-tokens").as_deref(), Some((7_000 - r).to_string().as_str()));
    assert_eq!(s.response_header("x-ratelimit-reset-tokens").as_deref(), Some("45s"), "the service's reset");
    vm.response_body(id, &openai_json(19, 10), true);
    vm.end_stream(id);
    // Settled: the reservation is replaced by the 29 tokens used, held until the service has
    // them; the root is woken through its queue and sends the charge.
    assert_eq!(records(&shared), vec![(0, 29, 0)]);
    assert!(vm.grpc_calls().is_empty(), "sent from the root, not from the finished request");
    assert_eq!(vm.deliver_queues(), 1);
    let settle = only_call(&vm);
    assert_eq!(settle.context_id, 1, "the root context's call");
    assert_eq!(settle.timeout_ms, 1000);
    assert_eq!(
        decode(&settle.message),
        json!({"domain": "llm-tokens", "hits_addend": 0, "descriptors": [
            {"entries": [["budget", "user-minute"], ["subject", "alice"]], "hits_addend": 29}]})
    );
    vm.respond_grpc(settle.token, &response(1, &[status(1, Some(10_000), 6_971, 44)]));
    assert_eq!(records(&shared), vec![(0, 0, 0)], "confirmed: nothing held any more");
    assert!(vm.grpc_calls().is_empty(), "charged once");
    assert_eq!(metric(&mut vm, &shared, "token_budget.global.charges_confirmed"), 1);
    assert_eq!(shared.metric("token_budget.global.checks"), Some(1));
    assert_eq!(shared.metric("token_budget.global.settlements_sent"), Some(1));
    assert_eq!(shared.metric("token_budget.user-minute.tokens_charged"), Some(29));
}

#[test]
fn an_over_limit_answer_is_the_same_429_with_the_services_numbers() {
    let shared = Shared::new();
    let mut vm = start(&shared, &config(10_000, "deny"));
    let body = chat("gpt-4o", 100);
    let (id, call) = send(&mut vm, &post("/v1/chat/completions", "alice"), &body);
    vm.respond_grpc(call.token, &response(2, &[status(2, Some(10_000), 0, 23)]));
    let s = vm.stream(id).clone();
    let reply = s.local_reply.expect("a 429");
    assert_eq!(reply.status, 429);
    let v = reply.json();
    assert_eq!(v["error"]["type"], "rate_limit_exceeded");
    assert_eq!(v["error"]["code"], "token_budget_exceeded");
    assert_eq!(v["error"]["message"], "Token budget `user-minute` (10000 tokens per 1m) is used up; it resets in 23s.");
    assert_eq!(reply.header("retry-after").as_deref(), Some("23"));
    assert_eq!(reply.header("x-ratelimit-limit-tokens").as_deref(), Some("10000"));
    assert_eq!(reply.header("x-ratelimit-remaining-tokens").as_deref(), Some("0"));
    assert_eq!(reply.header("x-ratelimit-reset-tokens").as_deref(), Some("23s"));
    assert!(s.request_body_out.is_empty(), "a limited request's body never goes upstream");
    assert_eq!(s.request_resumed, 0);
    vm.end_stream(id);
    assert_eq!(records(&shared), vec![], "nothing reserved, nothing to settle");
    assert_eq!(vm.deliver_queues(), 0);
    assert!(vm.grpc_calls().is_empty());
    // "OK" with nothing remaining is no room either.
    let (id, call) = send(&mut vm, &post("/v1/chat/completions", "alice"), &body);
    vm.respond_grpc(call.token, &response(1, &[status(1, Some(10_000), 0, 20)]));
    assert_eq!(vm.stream(id).local_reply.as_ref().map(|r| r.status), Some(429));
    assert_eq!(metric(&mut vm, &shared, "token_budget.user-minute.requests_limited"), 2);
}

#[test]
fn requests_in_flight_on_one_replica_share_the_room_the_service_reported() {
    let shared = Shared::new();
    // Two workers of one Envoy: one table in shared data.
    let mut workers = [start(&shared, &config(1_000, "deny")), start(&shared, &config(1_000, "deny"))];
    let body = chat("gpt-4o", 200);
    let r = reservation(&body, 200);
    // The service has 1,000 left for every check: it cannot see requests in flight.
    let mut outcomes = Vec::new();
    for i in 0..6 {
        let vm = &mut workers[i % 2];
        let (id, call) = send(vm, &post("/v1/chat/completions", "alice"), &body);
        vm.respond_grpc(call.token, &response(1, &[status(1, Some(1_000), 1_000, 40)]));
        outcomes.push(vm.stream(id).local_reply.is_none());
    }
    let admitted = outcomes.iter().filter(|a| **a).count() as u64;
    assert_eq!(admitted, 1_000u64.div_ceil(r), "{outcomes:?}: admitted while this replica's reservations left room");
    assert!(admitted * r < 1_000 + r, "overshoot below one reservation within a replica");
}

#[test]
fn a_request_with_several_budgets_sends_one_descriptor_per_applicable_budget() {
    let shared = Shared::new();
    let cfg = r#"{"subject": {"header": "x-user-id"}, "model": {"fromBody": true},
        "budgets": [
          {"name": "user-minute", "key": ["subject"], "tokens": 10000, "window": "1m"},
          {"name": "user-model-day", "key": ["subject", "model"], "models": ["gpt-4*"], "tokens": 200000, "window": "1d"},
          {"name": "team-month", "key": ["header:x-team"], "tokens": 5000000, "window": "30d", "cost": {"input": 1, "output": 4}},
          {"name": "everyone", "key": [], "tokens": 9000000, "window": "1h"}],
        "mode": "global", "global": {"cluster": "ratelimit", "domain": "llm-tokens", "failureMode": "deny"}}"#;
    let mut vm = start(&shared, cfg);
    let mut headers = post("/v1/chat/completions", "bob_smith");
    headers.push(("x-team", "a team/é"));
    let body = chat("gpt-4o-mini", 10);
    let (id, call) = send(&mut vm, &headers, &body);
    let sent = decode(&call.message);
    assert_eq!(
        sent["descriptors"],
        json!([
            {"entries": [["budget", "user-minute"], ["subject", "bob%5Fsmith"]], "hits_addend": 0},
            {"entries": [["budget", "user-model-day"], ["subject", "bob%5Fsmith"], ["model", "gpt-4o-mini"]], "hits_addend": 0},
            {"entries": [["budget", "team-month"], ["header:x-team", "a%20team/%C3%A9"]], "hits_addend": 0},
            {"entries": [["budget", "everyone"]], "hits_addend": 0}
        ]),
        "values escaped so no client byte can make two keys collide in Redis"
    );
    let ok = |limit, window_unit: u8| {
        let mut s = status(1, Some(limit), limit - 1, 10);
        // status() writes a per-minute unit; these budgets have their own.
        let at = s.windows(2).position(|w| w == [0x10, 2]).unwrap();
        s[at + 1] = window_unit;
        s
    };
    vm.respond_grpc(call.token, &response(1, &[ok(10_000, 2), ok(200_000, 4), ok(5_000_000, 5), ok(9_000_000, 3)]));
    assert!(vm.stream(id).local_reply.is_none());
    vm.response_headers(id, JSON_OK, false);
    vm.response_body(id, &openai_json(5, 3), true);
    vm.end_stream(id);
    vm.deliver_queues();
    let settle = only_call(&vm);
    let charged: Vec<Value> = decode(&settle.message)["descriptors"].as_array().unwrap().iter().map(|d| d["hits_addend"].clone()).collect();
    assert_eq!(charged, vec![json!(8), json!(8), json!(5 + 4 * 3), json!(8)], "each budget charged in its own cost units");
    // A model outside user-model-day's globs: that budget is not asked about.
    let (_, call) = send(&mut vm, &headers, &chat("claude-sonnet-4-5", 10));
    let names: Vec<Value> = decode(&call.message)["descriptors"].as_array().unwrap().iter().map(|d| d["entries"][0][1].clone()).collect();
    assert_eq!(names, vec![json!("user-minute"), json!("team-month"), json!("everyone")]);
    // No limit drift was seen: the service's limits equal the config's.
    assert_eq!(metric(&mut vm, &shared, "token_budget.global.limit_mismatch"), 0);
}

#[test]
fn a_body_less_request_is_checked_at_its_headers() {
    let shared = Shared::new();
    let mut vm = start(&shared, &config(10_000, "deny"));
    let id = vm.new_stream();
    assert_eq!(vm.request_headers(id, &post("/v1/chat/completions", "alice"), true), Action::Pause);
    let call = only_call(&vm);
    vm.respond_grpc(call.token, &response(1, &[status(1, Some(10_000), 10_000, 5)]));
    assert_eq!(vm.stream(id).request_resumed, 1);
    assert_eq!(records(&shared), vec![(0, 50, 0)], "the default reservation");
}

#[test]
fn when_the_service_cannot_answer_failure_mode_deny_answers_503_and_logs_once() {
    let shared = Shared::new();
    let mut vm = start(&shared, &config(10_000, "deny"));
    let body = chat("gpt-4o", 10);
    let mut statuses = Vec::new();
    for (i, how) in ["unavailable", "timeout", "garbage", "unconfigured", "wrong count"].iter().enumerate() {
        shared.advance_ms(100);
        let (id, call) = send(&mut vm, &post("/v1/chat/completions", &format!("u{i}")), &body);
        match *how {
            "unavailable" => vm.fail_grpc(call.token, 14, GRPC_CONNECT_REFUSED),
            "timeout" => vm.fail_grpc(call.token, 14, GRPC_TIMEOUT),
            "garbage" => vm.respond_grpc(call.token, b"\x0f\xff"),
            "unconfigured" => vm.respond_grpc(call.token, &response(1, &[status(1, None, 0, 0)])),
            _ => vm.respond_grpc(call.token, &response(1, &[])),
        }
        let s = vm.stream(id).clone();
        let reply = s.local_reply.unwrap_or_else(|| panic!("{how}: no reply"));
        assert_eq!(reply.status, 503, "{how}");
        assert_eq!(reply.json()["error"]["code"], "token_budget_unavailable");
        assert_eq!(reply.header("retry-after").as_deref(), Some("1"));
        assert!(s.request_body_out.is_empty(), "{how}: nothing goes upstream unchecked");
        statuses.push(reply.status);
        vm.end_stream(id);
    }
    assert_eq!(records(&shared), vec![]);
    let lines: Vec<String> = shared.log_messages(3).into_iter().filter(|l| l.contains("rate limit service")).collect();
    assert_eq!(lines.len(), 1, "logged once per interval, not per request: {lines:?}");
    assert!(lines[0].contains("gRPC status 14 (unavailable)") && lines[0].contains("failureMode deny"), "{lines:?}");
    assert_eq!(metric(&mut vm, &shared, "token_budget.global.check_failures"), 5);
    assert_eq!(shared.metric("token_budget.global.failure_denied"), Some(5));
    // Ten seconds later the next failure is logged again, with the count since the last line.
    shared.advance_s(10);
    let (_, call) = send(&mut vm, &post("/v1/chat/completions", "late"), &body);
    vm.fail_grpc(call.token, 14, GRPC_CONNECT_REFUSED);
    let lines: Vec<String> = shared.log_messages(3).into_iter().filter(|l| l.contains("rate limit service")).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[1].contains("5 failure(s) in this worker"), "{lines:?}");
}

#[test]
fn failure_mode_allow_admits_against_this_replicas_own_guard_and_charges_later() {
    let shared = Shared::new();
    let mut vm = start(&shared, &config(1_000, "allow"));
    let body = chat("gpt-4o", 200);
    let r = reservation(&body, 200);
    let mut admitted = Vec::new();
    for _ in 0..6 {
        let (id, call) = send(&mut vm, &post("/v1/chat/completions", "alice"), &body);
        vm.fail_grpc(call.token, 14, GRPC_CONNECT_REFUSED);
        if vm.stream(id).local_reply.is_none() {
            assert_eq!(vm.stream(id).request_body_out, body);
            admitted.push(id);
        } else {
            assert_eq!(vm.stream(id).local_reply.as_ref().unwrap().status, 429, "the configured budget, held locally");
        }
    }
    assert_eq!(admitted.len() as u64, 1_000u64.div_ceil(r));
    assert_eq!(metric(&mut vm, &shared, "token_budget.global.failure_allowed"), 6);
    // They finish while the service is still down: the charges are kept and retried.
    for id in &admitted {
        vm.response_headers(*id, JSON_OK, false);
        vm.response_body(*id, &openai_json(10, 20), true);
        vm.end_stream(*id);
    }
    let held: u64 = records(&shared).iter().map(|r| r.1).sum();
    assert_eq!(held, 30 * admitted.len() as u64, "unconfirmed charges stay held here");
    vm.deliver_queues();
    let call = only_call(&vm);
    assert_eq!(decode(&call.message)["descriptors"][0]["hits_addend"], json!(30 * admitted.len() as u64), "merged into one descriptor");
    vm.fail_grpc(call.token, 14, GRPC_CONNECT_REFUSED);
    assert!(vm.grpc_calls().is_empty(), "backing off");
    shared.advance_ms(300);
    vm.tick();
    let call = only_call(&vm);
    vm.respond_grpc(call.token, &response(1, &[status(1, Some(1_000), 880, 30)]));
    assert_eq!(records(&shared).iter().map(|r| r.1).sum::<u64>(), 0, "confirmed");
    assert_eq!(metric(&mut vm, &shared, "token_budget.global.charges_retried"), admitted.len() as u64);
    assert_eq!(shared.metric("token_budget.global.charges_confirmed"), Some(admitted.len() as u64));
}

#[test]
fn a_settlement_that_may_have_reached_the_service_is_not_sent_twice() {
    // The service answered nothing before the deadline, or was killed while it handled the
    // call: either way it may have counted the charge.
    for (failure, after_ms, mode) in [(GRPC_TIMEOUT, 1000, "deny"), (GRPC_CONNECTION_TERMINATED, 5, "allow")] {
        let shared = Shared::new();
        let mut vm = start(&shared, &config(10_000, mode));
        let (id, call) = send(&mut vm, &post("/v1/chat/completions", "alice"), &chat("gpt-4o", 10));
        vm.respond_grpc(call.token, &response(1, &[status(1, Some(10_000), 10_000, 30)]));
        vm.response_headers(id, JSON_OK, false);
        vm.response_body(id, &openai_json(3, 4), true);
        vm.end_stream(id);
        vm.deliver_queues();
        let call = only_call(&vm);
        shared.advance_ms(after_ms);
        vm.fail_grpc(call.token, 14, failure);
        shared.advance_ms(1000);
        vm.tick();
        assert!(vm.grpc_calls().is_empty(), "{failure}: a second attempt could charge twice");
        assert_eq!(records(&shared), vec![(0, 0, 0)], "{failure}: and nothing stays held");
        assert_eq!(metric(&mut vm, &shared, "token_budget.global.charges_unconfirmed"), 1, "{failure}");
        assert_eq!(shared.metric("token_budget.global.charges_retried"), Some(0), "{failure}");
        let lines: Vec<String> = shared.log_messages(3).into_iter().filter(|l| l.contains("rate limit service")).collect();
        assert!(lines.iter().any(|l| l.contains("not resent: it may have been counted")), "{failure}: {lines:?}");
    }
}

#[test]
fn a_client_that_leaves_while_the_check_is_out_leaves_nothing_behind() {
    let shared = Shared::new();
    let mut vm = start(&shared, &config(10_000, "deny"));
    let (id, call) = send(&mut vm, &post("/v1/chat/completions", "alice"), &chat("gpt-4o", 10));
    vm.end_stream(id);
    // Envoy's call belongs to the root context and still completes.
    vm.respond_grpc(call.token, &response(1, &[status(1, Some(10_000), 10_000, 30)]));
    assert!(vm.failed().is_none());
    assert_eq!(records(&shared), vec![]);
    assert_eq!(vm.deliver_queues(), 0);
}

#[test]
fn a_body_too_large_to_hold_flows_while_the_check_is_out() {
    let shared = Shared::new();
    let cfg = config(10_000, "deny").replace(r#""mode": "global""#, r#""maxRequestBytes": 1024, "mode": "global""#);
    let mut vm = start(&shared, &cfg);
    let big = format!("{{\"model\": \"gpt-4o\", \"pad\": \"{}\"}}", "x".repeat(3000));
    let id = vm.new_stream();
    vm.request_headers(id, &post("/v1/chat/completions", "alice"), false);
    assert_eq!(vm.request_body(id, &big.as_bytes()[..2000], false), Action::Continue);
    vm.request_body(id, &big.as_bytes()[2000..], true);
    assert_eq!(vm.stream(id).request_body_out, big.as_bytes());
    // The service says no: the request is answered 429 (Envoy resets the upstream request).
    let call = only_call(&vm);
    vm.respond_grpc(call.token, &response(2, &[status(2, Some(10_000), 0, 12)]));
    assert_eq!(vm.stream(id).local_reply.as_ref().map(|r| r.status), Some(429));
    assert_eq!(vm.stream(id).request_resumed, 0, "it was never paused");
}

#[test]
fn hostile_subjects_and_answers_never_trap() {
    let shared = Shared::new();
    let mut vm = start(&shared, &config(10_000, "allow"));
    let long = "é_".repeat(300);
    let answers: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0xff; 64],
        response(1, &vec![status(1, Some(u32::MAX as u64), u32::MAX as u64, u64::MAX); 3]),
        response(7, &[vec![0x08, 0x09]]),
        vec![0x12, 0x80, 0x80, 0x80, 0x80, 0x10],
    ];
    for (i, answer) in answers.iter().enumerate() {
        let id = vm.new_stream();
        let mut h = integration::host::pairs(&post("/v1/chat/completions", "x"));
        h.retain(|(k, _)| k != "x-user-id");
        h.push(("x-user-id".into(), if i % 2 == 0 { vec![0xff, b'_', 0x00, b'%'] } else { long.as_bytes().to_vec() }));
        vm.try_request_headers(id, h, false).unwrap();
        vm.try_request_body(id, b"{\"model\": \"m\"}", true).unwrap();
        let call = vm.grpc_calls().into_iter().find(|c| c.context_id == id).unwrap();
        let sent = decode(&call.message);
        let subject = sent["descriptors"][0]["entries"][1][1].as_str().unwrap().to_string();
        assert!(subject == "%FF%5F%00%25" || (subject.starts_with('~') && subject.len() == 17), "{subject}");
        vm.try_respond_grpc(call.token, answer).unwrap();
        vm.try_end_stream(id).unwrap();
    }
    vm.tick();
    assert!(vm.failed().is_none());
}

#[test]
fn the_filters_messages_agree_with_googles_protobuf() {
    // Requests: the filter's bytes equal what protobuf's own encoder writes for the same message.
    let shared = Shared::new();
    let mut vm = start(&shared, &config(10_000, "deny"));
    let (id, call) = send(&mut vm, &post("/v1/chat/completions", "alice"), &chat("gpt-4o", 10));
    let reference = rls_tool(
        "encode-request",
        &json!({"domain": "llm-tokens", "descriptors": [{"entries": [["budget", "user-minute"], ["subject", "alice"]], "hits_addend": 0}]}),
    );
    assert_eq!(hex(&call.message), reference["hex"].as_str().unwrap());
    // Responses written by protobuf's encoder, with every field the service may set (headers,
    // raw body, dynamic metadata, quota): read for what the filter needs.
    let answer = rls_tool(
        "encode-response",
        &json!({"overall_code": 1, "statuses": [{"code": 1, "current_limit": {"requests_per_unit": 10000, "unit": 2, "name": "n"},
                 "limit_remaining": 4321, "duration_until_reset": {"seconds": 17, "nanos": 250000000}, "quota": {"requests": 5, "id": "q"}}],
                "response_headers_to_add": [["ratelimit-limit", "10000"]], "request_headers_to_add": [["x", "y"]],
                "raw_body": "over", "dynamic_metadata": {"k": "v", "n": 1}, "quota": {"requests": 1, "id": "z", "valid_until": 99}}),
    );
    vm.respond_grpc(call.token, &unhex(answer["hex"].as_str().unwrap()));
    vm.response_headers(id, JSON_OK, false);
    let s = vm.stream(id).clone();
    assert_eq!(s.response_header("x-ratelimit-remaining-tokens").as_deref(), Some((4321 - reservation(&chat("gpt-4o", 10), 10)).to_string().as_str()));
    assert_eq!(s.response_header("x-ratelimit-reset-tokens").as_deref(), Some("18s"), "17.25 s rounds up");
    let (id, call) = send(&mut vm, &post("/v1/chat/completions", "alice"), &chat("gpt-4o", 10));
    let over = rls_tool(
        "encode-response",
        &json!({"overall_code": 2, "statuses": [{"code": 2, "current_limit": {"requests_per_unit": 10000, "unit": 2}, "duration_until_reset": {"seconds": 9}}]}),
    );
    vm.respond_grpc(call.token, &unhex(over["hex"].as_str().unwrap()));
    let reply = vm.stream(id).local_reply.clone().unwrap();
    assert_eq!((reply.status, reply.header("retry-after")), (429, Some("9".to_string())));
}

#[test]
fn bad_global_configs_are_rejected_naming_the_field() {
    let base = r#"{"subject": {"header": "x-user-id"}, "budgets": [{"name": "a", "key": ["subject"], "tokens": 10, "window": "WINDOW"}], "mode": "global", "global": GLOBAL}"#;
    let cases = [
        ("1m", r#"{"cluster": "ratelimit", "domain": "llm"}"#, "token-budget: global: missing field `failureMode`"),
        ("1m", r#"{"cluster": "ratelimit", "domain": "llm", "failureMode": "maybe"}"#, "token-budget: global.failureMode: `maybe` is not `deny` or `allow`"),
        ("1m", r#"{"cluster": "ratelimit", "domain": "", "failureMode": "deny"}"#, "token-budget: global.domain: `` must be"),
        ("1m", r#"{"cluster": "ratelimit", "domain": "llm", "timeoutMs": 600000, "failureMode": "deny"}"#, "token-budget: global.timeoutMs: must be from 1 to 60000"),
        ("90s", r#"{"cluster": "ratelimit", "domain": "llm", "failureMode": "deny"}"#, "token-budget: budgets[0].window: `90s`: global mode needs a window"),
    ];
    for (window, global, want) in cases {
        let config = base.replace("WINDOW", window).replace("GLOBAL", global);
        let errors = Vm::rejected(&plugin(), &config);
        assert_eq!(errors.len(), 1, "one log line for {config}: {errors:?}");
        assert!(errors[0].starts_with(want), "config {config}\n want {want}\n got  {}", errors[0]);
    }
}
