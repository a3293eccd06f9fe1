//! Behavioural tests of the built `provider_fallback.wasm` in the wasmtime host, in both roles.
//!
//! Envoy gives the upstream role the chosen endpoint's metadata as a property; its string
//! values come as the raw bytes of the string (seen in Envoy 1.40, where the e2e tests read
//! `openai` / `anthropic` this way), which is what these tests set.

use integration::host::{Action, Plugin, Shared, StartError, Stream, Vm};
use integration::mock::llm::sse_data;
use serde_json::{json, Value};
use std::sync::Arc;

const OPENAI_KEY: &str = "sk-proj-wasm-openai-SECRET-111";
const ANTHROPIC_KEY: &str = "sk-ant-wasm-anthropic-SECRET-222";

const ROUTER: &str = r#"{"role": "router", "maxRequestBytes": 1000}"#;
const UPSTREAM: &str = r#"{"role": "upstream", "maxResponseBytes": 4000, "providerHeader": "x-ai-provider", "providers": [
  {"name": "openai", "schema": "openai", "host": "api.openai.com", "apiKey": {"env": "OPENAI_API_KEY"}},
  {"name": "anthropic", "schema": "anthropic", "host": "api.anthropic.com", "apiKey": {"env": "ANTHROPIC_API_KEY"},
   "modelNameOverride": "claude-sonnet-4-5"}
]}"#;
const METADATA: [&str; 5] = ["xds", "upstream_host_metadata", "filter_metadata", "llm", "provider"];

fn plugin() -> Arc<Plugin> {
    Plugin::filter("provider_fallback")
}

// Both roles pause on headers and wait for the body, which Envoy only allows with the
// plugin config's `allow_on_headers_stop_iteration: true`, as every config in the repository has.
fn router(shared: &Arc<Shared>) -> Vm {
    Vm::builder(&plugin(), shared).config(ROUTER).allow_on_headers_stop_iteration(true).start()
}

fn upstream(shared: &Arc<Shared>) -> Vm {
    Vm::builder(&plugin(), shared)
        .config(UPSTREAM)
        .env("OPENAI_API_KEY", OPENAI_KEY)
        .env("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
        .allow_on_headers_stop_iteration(true)
        .start()
}

fn post(path: &str, length: usize) -> Vec<(String, String)> {
    vec![
        (":method".into(), "POST".into()),
        (":path".into(), path.into()),
        (":authority".into(), "gateway.local".into()),
        (":scheme".into(), "http".into()),
        ("content-type".into(), "application/json".into()),
        ("content-length".into(), length.to_string()),
        ("authorization".into(), "Bearer client-token".into()),
        ("accept-encoding".into(), "gzip".into()),
    ]
}

fn refs(h: &[(String, String)]) -> Vec<(&str, &str)> {
    h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn chat(stream: bool) -> Vec<u8> {
    let mut body = json!({"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}]});
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body.to_string().into_bytes()
}

fn reply_json(s: &Stream) -> (u32, Value) {
    let r = s.local_reply.as_ref().expect("a local reply");
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    (r.status, r.json())
}

// --- router role

#[test]
fn the_router_holds_the_headers_until_the_body_names_the_model() {
    let shared = Shared::new();
    let mut vm = router(&shared);
    let body = chat(false);
    let mut headers = post("/v1/chat/completions", body.len());
    headers.push(("x-ai-model".into(), "client-picked".into()));
    let id = vm.new_stream();
    assert_eq!(vm.request_headers(id, &refs(&headers), false), Action::Pause, "routing waits for the body");
    assert_eq!(vm.stream(id).request_header("x-ai-model"), None, "the client's own copy is gone");
    let (first, rest) = body.split_at(10);
    assert_eq!(vm.request_body(id, first, false), Action::Pause);
    assert_eq!(vm.request_body(id, rest, true), Action::Continue);
    let s = vm.stream(id);
    assert_eq!(s.request_header("x-ai-model").as_deref(), Some("gpt-4o"));
    assert_eq!(s.request_body_out, body, "the body goes on untouched");
    assert!(s.local_reply.is_none());
    vm.response_headers(id, &[(":status", "200"), ("content-type", "application/json")], false);
    assert_eq!(vm.response_body(id, b"{}", true), Action::Continue);
    vm.end_stream(id);
    vm.tick();
    assert_eq!(shared.metric("provider_fallback.router.requests"), Some(1));
    assert_eq!(shared.metric("provider_fallback.router.rejected"), Some(0));
}

#[test]
fn without_allow_on_headers_stop_iteration_the_body_never_comes() {
    // Envoy's default: a pause on headers stops the body too, so the router role would wait
    // forever. The host refuses to deliver the body, as Envoy does.
    let shared = Shared::new();
    let mut vm = Vm::start(&plugin(), &shared, ROUTER);
    let body = chat(false);
    let id = vm.new_stream();
    assert_eq!(vm.request_headers(id, &refs(&post("/v1/chat/completions", body.len())), false), Action::Pause);
    let err = vm.try_request_body(id, &body, true).unwrap_err();
    assert!(err.0.contains("allow_on_headers_stop_iteration"), "{err}");
}

#[test]
fn the_router_leaves_other_requests_alone_but_drops_a_spoofed_model_header() {
    let shared = Shared::new();
    let mut vm = router(&shared);
    for (method, path) in [("GET", "/v1/chat/completions"), ("POST", "/v1/embeddings"), ("GET", "/health")] {
        let id = vm.new_stream();
        let headers = [(":method", method), (":path", path), (":authority", "gw"), ("x-ai-model", "gpt-4o")];
        assert_eq!(vm.request_headers(id, &headers, true), Action::Continue, "{method} {path}");
        assert_eq!(vm.stream(id).request_header("x-ai-model"), None);
        vm.end_stream(id);
    }
}

#[test]
fn the_router_rejects_bad_bodies_with_openai_errors() {
    let shared = Shared::new();
    let mut vm = router(&shared);
    let cases: [(&[u8], &str); 5] = [
        (b"not json", "invalid_json"),
        (b"{\"model\": \"gpt-4o\"", "invalid_json"),
        (br#"{"messages": []}"#, "missing_model"),
        (br#"{"model": ["x"]}"#, "invalid_type"),
        (b"\"gpt-4o\"", "invalid_request_body"),
    ];
    for (body, code) in cases {
        let s = vm.exchange(&refs(&post("/v1/chat/completions", body.len())), Some(body), &[(":status", "200")], None);
        let (status, v) = reply_json(&s);
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(body));
        assert_eq!(v["error"]["code"], code);
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(s.request_body_out.is_empty(), "nothing went upstream");
    }
    // No body at all.
    let id = vm.new_stream();
    vm.request_headers(id, &refs(&post("/v1/chat/completions", 0)), true);
    assert_eq!(reply_json(vm.stream(id)).1["error"]["code"], "missing_model");
    // Declared over the limit: refused at the headers.
    let id = vm.new_stream();
    vm.request_headers(id, &refs(&post("/v1/chat/completions", 1001)), false);
    assert_eq!(reply_json(vm.stream(id)).1["error"]["code"], "request_too_large");
    // Chunked (no length) and over the limit: refused as soon as the limit is passed.
    let id = vm.new_stream();
    let mut headers = post("/v1/chat/completions", 0);
    headers.retain(|(k, _)| k != "content-length");
    assert_eq!(vm.request_headers(id, &refs(&headers), false), Action::Pause);
    let chunk = vec![b' '; 600];
    assert_eq!(vm.request_body(id, &chunk, false), Action::Pause);
    vm.request_body(id, &chunk, false);
    assert_eq!(reply_json(vm.stream(id)).1["error"]["code"], "request_too_large");
    // A body that ends in trailers instead of end_of_stream: refused, not waited for.
    let id = vm.new_stream();
    vm.request_headers(id, &refs(&headers), false);
    vm.request_body(id, b"{\"model\": \"gpt-4o\"}", false);
    vm.request_trailers(id, &[("x-checksum", "1")]);
    assert_eq!(reply_json(vm.stream(id)).1["error"]["code"], "unsupported_trailers");
    vm.tick();
    assert_eq!(shared.metric("provider_fallback.router.rejected"), Some(9));
}

#[test]
fn envoy_plain_text_errors_reach_the_client_as_openai_errors() {
    let shared = Shared::new();
    let mut vm = router(&shared);
    let body = chat(false);
    let text = b"upstream connect error or disconnect/reset before headers. reset reason: connection termination";
    let s = vm.exchange(&refs(&post("/v1/chat/completions", body.len())), Some(&body), &[(":status", "503"), ("content-type", "text/plain"), ("content-length", "95")], Some(text));
    let v: Value = serde_json::from_slice(&s.response_body_out).unwrap();
    assert_eq!(v["error"]["code"], "upstream_unavailable");
    assert!(v["error"]["message"].as_str().unwrap().contains("reset reason: connection termination"));
    assert_eq!(s.response_header("content-type").as_deref(), Some("application/json"));
    assert_eq!(s.response_header("content-length"), Some(s.response_body_out.len().to_string()));
    // JSON errors and answers pass untouched.
    let error = br#"{"error": {"message": "slow down", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}"#;
    let s = vm.exchange(&refs(&post("/v1/chat/completions", body.len())), Some(&body), &[(":status", "429"), ("content-type", "application/json")], Some(error));
    assert_eq!(s.response_body_out, error.to_vec());
    // A huge non-JSON error is not held whole.
    let id = vm.new_stream();
    vm.request_headers(id, &refs(&post("/v1/chat/completions", body.len())), false);
    vm.request_body(id, &body, true);
    assert_eq!(vm.response_headers(id, &[(":status", "502"), ("content-type", "text/html")], false), Action::Pause);
    let page = vec![b'x'; 40 * 1024];
    for _ in 0..10 {
        vm.response_body(id, &page, false);
        assert!(vm.stream(id).response_buffer.len() <= 64 * 1024 + page.len(), "the held error stays bounded");
    }
    vm.response_body(id, b"</html>", true);
    let v: Value = serde_json::from_slice(&vm.stream(id).response_body_out).unwrap();
    assert_eq!(v["error"]["code"], "upstream_error");
    assert!(v["error"]["message"].as_str().unwrap().len() < 400);
}

#[test]
fn bad_configs_are_rejected_with_one_line_naming_the_field() {
    let shared = Shared::new();
    let cases = [
        ("", "provider-fallback: configuration: is empty"),
        (r#"{"role": "router", "providers": []}"#, "provider-fallback: providers: is only used by the upstream role"),
        (r#"{"role": "upstream", "providers": [{"name": "o", "schema": "openai", "host": "h", "apiKey": {"env": "NOT_SET_ANYWHERE"}}]}"#,
         "provider-fallback: providers[0].apiKey.env: `NOT_SET_ANYWHERE` is not set in the VM's environment"),
        (r#"{"role": "upstream", "providers": [{"name": "o", "schema": "openai", "host": "h", "apiKey": "sk-pasted-SECRET-here"}]}"#,
         "provider-fallback: providers[0].apiKey: must be an object"),
    ];
    for (config, want) in cases {
        shared.clear_logs();
        match Vm::builder(&plugin(), &shared).config(config).try_start() {
            Err(StartError::Rejected { errors }) => {
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert!(errors[0].starts_with(want), "{}\nwant: {want}", errors[0]);
                assert!(!errors[0].contains("SECRET"));
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("accepted: {config}"),
        }
    }
}

// --- upstream role

/// An attempt: a stream whose endpoint metadata names `provider`.
fn attempt(vm: &mut Vm, provider: Option<&str>) -> u32 {
    let id = vm.new_stream();
    if let Some(p) = provider {
        vm.set_stream_property(id, &METADATA, p);
    }
    vm.set_stream_property(id, &["xds", "cluster_name"], "llm");
    id
}

fn no_key_in(text: &str) {
    for key in [OPENAI_KEY, ANTHROPIC_KEY, "SECRET"] {
        assert!(!text.contains(key), "a key leaked: {text}");
    }
}

fn assert_no_key_in_logs_or_metrics(shared: &Shared) {
    for line in shared.log_messages(0) {
        no_key_in(&line);
    }
    for (name, _, _) in shared.metrics() {
        no_key_in(&name);
    }
}

#[test]
fn an_openai_attempt_gets_its_host_key_and_path_and_passes_the_body() {
    let shared = Shared::new();
    let mut vm = Vm::builder(&plugin(), &shared)
        .config(UPSTREAM)
        .env("OPENAI_API_KEY", OPENAI_KEY)
        .env("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
        .allow_on_headers_stop_iteration(true)
        .log_level(0)
        .start();
    let body = chat(false);
    let id = attempt(&mut vm, Some("openai"));
    assert_eq!(vm.request_headers(id, &refs(&post("/v1/chat/completions", body.len())), false), Action::Continue);
    assert_eq!(vm.request_body(id, &body, true), Action::Continue);
    let s = vm.stream(id);
    assert_eq!(s.request_header(":authority").as_deref(), Some("api.openai.com"));
    assert_eq!(s.request_header(":path").as_deref(), Some("/v1/chat/completions"));
    assert_eq!(s.request_header("authorization"), Some(format!("Bearer {OPENAI_KEY}")));
    assert_eq!(s.request_header("accept-encoding").as_deref(), Some("gzip"), "an OpenAI answer passes as it comes");
    assert_eq!(s.request_body_out, body);
    let answer = br#"{"id": "chatcmpl-1", "object": "chat.completion", "choices": []}"#;
    vm.response_headers(id, &[(":status", "200"), ("content-type", "application/json")], false);
    assert_eq!(vm.response_body(id, answer, true), Action::Continue);
    assert_eq!(vm.stream(id).response_body_out, answer.to_vec());
    assert_eq!(vm.stream(id).response_header("x-ai-provider").as_deref(), Some("openai"));
    vm.end_stream(id);
    vm.tick();
    assert_eq!(shared.metric("provider_fallback.openai.attempts"), Some(1));
    assert_eq!(shared.metric("provider_fallback.openai.responses_2xx"), Some(1));
    // Even at trace level, no log line carries a key.
    assert_no_key_in_logs_or_metrics(&shared);
}

#[test]
fn an_anthropic_attempt_translates_the_request_and_the_json_answer() {
    let shared = Shared::new();
    let mut vm = upstream(&shared);
    let body = chat(false);
    let id = attempt(&mut vm, Some("anthropic"));
    assert_eq!(vm.request_headers(id, &refs(&post("/v1/chat/completions", body.len())), false), Action::Pause);
    assert_eq!(vm.request_body(id, &body[..7], false), Action::Pause);
    assert_eq!(vm.request_body(id, &body[7..], true), Action::Continue);
    let s = vm.stream(id).clone();
    assert_eq!(s.request_header(":path").as_deref(), Some("/v1/messages"));
    assert_eq!(s.request_header(":authority").as_deref(), Some("api.anthropic.com"));
    assert_eq!(s.request_header("x-api-key").as_deref(), Some(ANTHROPIC_KEY));
    assert_eq!(s.request_header("anthropic-version").as_deref(), Some("2023-06-01"));
    assert_eq!(s.request_header("authorization"), None);
    assert_eq!(s.request_header("accept-encoding"), None, "a translated answer must come uncompressed");
    assert_eq!(s.request_header("content-length"), Some(s.request_body_out.len().to_string()));
    let sent: Value = serde_json::from_slice(&s.request_body_out).unwrap();
    assert_eq!(sent, json!({"model": "claude-sonnet-4-5", "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 4096}));
    // Anthropic's answer, as its Messages reference shows it.
    let answer = br#"{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","content":[{"type":"text","text":"Hello!"}],"model":"claude-sonnet-4-5-20250929","stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":4,"output_tokens":6}}"#;
    assert_eq!(vm.response_headers(id, &[(":status", "200"), ("content-type", "application/json"), ("content-length", &answer.len().to_string())], false), Action::Pause);
    assert_eq!(vm.response_body(id, &answer[..50], false), Action::Pause);
    assert_eq!(vm.response_body(id, &answer[50..], true), Action::Continue);
    let s = vm.stream(id);
    let v: Value = serde_json::from_slice(&s.response_body_out).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["id"], "msg_01XFDUDYJgAACzvnptvVoYEL");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello!");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"], json!({"prompt_tokens": 16, "completion_tokens": 6, "total_tokens": 22, "prompt_tokens_details": {"cached_tokens": 4}}));
    assert_eq!(v["created"].as_u64(), Some(shared.now_ns() / 1_000_000_000), "created is the gateway's clock");
    assert_eq!(s.response_header("content-length"), Some(s.response_body_out.len().to_string()));
    assert_eq!(s.response_header("x-ai-provider").as_deref(), Some("anthropic"));
}

/// Anthropic's basic streaming example, as the provider would send it.
const ANTHROPIC_STREAM: &str = concat!(
    "event: message_start\ndata: {\"type\": \"message_start\", \"message\": {\"id\": \"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\", \"type\": \"message\", \"role\": \"assistant\", \"content\": [], \"model\": \"claude-sonnet-4-5\", \"stop_reason\": null, \"stop_sequence\": null, \"usage\": {\"input_tokens\": 25, \"output_tokens\": 1}}}\n\n",
    "event: content_block_start\ndata: {\"type\": \"content_block_start\", \"index\": 0, \"content_block\": {\"type\": \"text\", \"text\": \"\"}}\n\n",
    "event: ping\ndata: {\"type\": \"ping\"}\n\n",
    "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"Hello\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"!\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\": \"content_block_stop\", \"index\": 0}\n\n",
    "event: message_delta\ndata: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": \"end_turn\", \"stop_sequence\":null}, \"usage\": {\"output_tokens\": 15}}\n\n",
    "event: message_stop\ndata: {\"type\": \"message_stop\"}\n\n",
);

fn stream_through(vm: &mut Vm, chunk_size: usize) -> Vec<u8> {
    let body = chat(true);
    let id = attempt(vm, Some("anthropic"));
    vm.request_headers(id, &refs(&post("/v1/chat/completions", body.len())), false);
    vm.request_body(id, &body, true);
    assert_eq!(vm.response_headers(id, &[(":status", "200"), ("content-type", "text/event-stream"), ("content-length", "1000")], false), Action::Continue);
    assert_eq!(vm.stream(id).response_header("content-length"), None);
    let chunks: Vec<&[u8]> = ANTHROPIC_STREAM.as_bytes().chunks(chunk_size).collect();
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(vm.response_body(id, c, i + 1 == chunks.len()), Action::Continue, "chunks flow as they come");
    }
    let out = vm.stream(id).response_body_out.clone();
    vm.end_stream(id);
    out
}

#[test]
fn an_anthropic_stream_becomes_openai_chunks_whatever_the_chunking() {
    let shared = Shared::new();
    let mut vm = upstream(&shared);
    let whole = stream_through(&mut vm, usize::MAX);
    for size in [1, 2, 7, 64, 333] {
        assert_eq!(stream_through(&mut vm, size), whole, "chunks of {size}");
    }
    let data = sse_data(&whole);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Hello!");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks.last().unwrap()["usage"], json!({"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40, "prompt_tokens_details": {"cached_tokens": 0}}));
}

#[test]
fn a_retry_starts_from_the_clients_request_not_the_previous_attempt() {
    let shared = Shared::new();
    let mut vm = upstream(&shared);
    let body = chat(false);
    let first = attempt(&mut vm, Some("anthropic"));
    vm.request_headers(first, &refs(&post("/v1/chat/completions", body.len())), false);
    vm.request_body(first, &body, true);
    let after = vm.stream(first).clone();
    vm.response_headers(first, &[(":status", "529"), ("content-type", "application/json")], false);
    vm.response_body(first, br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#, true);
    let v: Value = serde_json::from_slice(&vm.stream(first).response_body_out).unwrap();
    assert_eq!(v["error"], json!({"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded"}));
    vm.end_stream(first);

    // Envoy gives the retry the header map the first attempt changed, a fresh copy of the
    // client's body, and the filter state the first attempt recorded.
    let second = attempt(&mut vm, Some("openai"));
    for (path, value) in after.set_properties.clone() {
        let segments: Vec<&str> = path.split('\0').collect();
        vm.set_stream_property(second, &segments, value);
    }
    let headers: Vec<(String, String)> = after.request_headers.iter().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())).collect();
    assert_eq!(vm.request_headers(second, &refs(&headers), false), Action::Continue);
    vm.request_body(second, &body, true);
    let s = vm.stream(second);
    assert_eq!(s.request_header(":path").as_deref(), Some("/v1/chat/completions"));
    assert_eq!(s.request_header("content-length"), Some(body.len().to_string()));
    assert_eq!(s.request_header("authorization"), Some(format!("Bearer {OPENAI_KEY}")));
    assert_eq!(s.request_header("x-api-key"), None);
    assert_eq!(s.request_header("anthropic-version"), None);
    assert_eq!(s.request_body_out, body);
}

#[test]
fn the_cluster_name_names_the_provider_when_the_endpoint_has_no_metadata() {
    let shared = Shared::new();
    let mut vm = upstream(&shared);
    let id = vm.new_stream();
    vm.set_stream_property(id, &["xds", "cluster_name"], "openai");
    assert_eq!(vm.request_headers(id, &refs(&post("/v1/chat/completions", 2)), false), Action::Continue);
    assert_eq!(vm.stream(id).request_header(":authority").as_deref(), Some("api.openai.com"));
    // Neither names a configured provider: a 500 and a warning, never a guess.
    shared.clear_logs();
    let id = attempt(&mut vm, None);
    vm.request_headers(id, &refs(&post("/v1/chat/completions", 2)), false);
    let (status, v) = reply_json(vm.stream(id));
    assert_eq!(status, 500);
    assert_eq!(v["error"]["code"], "provider_not_configured");
    assert!(shared.log_messages(3).iter().any(|l| l.contains("no provider is configured for upstream `llm`")));
}

#[test]
fn provider_errors_reach_the_client_in_openai_form_without_keys() {
    let shared = Shared::new();
    let mut vm = upstream(&shared);
    let body = chat(false);
    let cases: [(&str, &str, &[u8], u32, &str); 4] = [
        ("anthropic", "429", br#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of requests has exceeded your rate limit"}}"#, 429, "rate_limit_exceeded"),
        ("anthropic", "401", br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#, 502, "provider_auth_failed"),
        ("openai", "401", b"{\"error\": {\"message\": \"Incorrect API key provided: sk-proj-wasm-openai-SECRET-111.\", \"type\": \"invalid_request_error\", \"param\": null, \"code\": \"invalid_api_key\"}}", 502, "provider_auth_failed"),
        ("openai", "500", b"{\"error\": {\"message\": \"key sk-proj-wasm-openai-SECRET-111 broke\", \"type\": \"server_error\", \"param\": null, \"code\": null}}", 500, ""),
    ];
    for (provider, status, error, want_status, code) in cases {
        let id = attempt(&mut vm, Some(provider));
        vm.request_headers(id, &refs(&post("/v1/chat/completions", body.len())), false);
        vm.request_body(id, &body, true);
        // An error's headers go on at once (status decided; pausing them crashes Envoy 1.36 when
        // the route retries the status), without a length; the body is held and replaced.
        let headers = [(":status", status), ("content-type", "application/json"), ("content-length", "500")];
        assert_eq!(vm.response_headers(id, &headers, false), Action::Continue);
        assert_eq!(vm.response_body(id, &error[..10], false), Action::Pause);
        vm.response_body(id, &error[10..], true);
        let s = vm.stream(id);
        assert_eq!(s.response_header(":status"), Some(want_status.to_string()), "{provider} {status}");
        assert_eq!(s.response_header("content-length"), None, "the body's length changes");
        let text = String::from_utf8_lossy(&s.response_body_out).into_owned();
        no_key_in(&text);
        let v: Value = serde_json::from_str(&text).unwrap();
        if !code.is_empty() {
            assert_eq!(v["error"]["code"], code, "{text}");
        }
        assert!(v["error"]["message"].is_string());
    }
    assert_no_key_in_logs_or_metrics(&shared);
}

#[test]
fn what_cannot_be_translated_is_a_400_and_unusable_answers_a_502() {
    let shared = Shared::new();
    let mut vm = upstream(&shared);
    let body = br#"{"model": "gpt-4o", "n": 3, "messages": [{"role": "user", "content": "hi"}]}"#;
    let id = attempt(&mut vm, Some("anthropic"));
    vm.request_headers(id, &refs(&post("/v1/chat/completions", body.len())), false);
    vm.request_body(id, body, true);
    let (status, v) = reply_json(vm.stream(id));
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "n");
    assert!(vm.stream(id).request_body_out.is_empty());
    // Only chat completions exist at Anthropic.
    let id = attempt(&mut vm, Some("anthropic"));
    vm.request_headers(id, &refs(&post("/v1/embeddings", 2)), false);
    assert_eq!(reply_json(vm.stream(id)).1["error"]["code"], "unsupported_endpoint");

    let chat = chat(false);
    type Answer<'a> = (&'a [(&'a str, &'a str)], &'a [u8]);
    let unusable: [Answer; 3] = [
        (&[(":status", "200"), ("content-type", "application/json"), ("content-encoding", "gzip")], b"\x1f\x8b\x08\x00"),
        (&[(":status", "200"), ("content-type", "text/html")], b"<html></html>"),
        (&[(":status", "200"), ("content-type", "application/json")], b"{\"type\": \"message\", \"content\": [{\"type\": \"web_search_tool_result\"}]}"),
    ];
    for (headers, answer) in unusable {
        let id = attempt(&mut vm, Some("anthropic"));
        vm.request_headers(id, &refs(&post("/v1/chat/completions", chat.len())), false);
        vm.request_body(id, &chat, true);
        vm.response_headers(id, headers, false);
        vm.response_body(id, answer, true);
        let s = vm.stream(id);
        assert_eq!(s.response_header(":status").as_deref(), Some("502"), "{headers:?}");
        let v: Value = serde_json::from_slice(&s.response_body_out).unwrap();
        assert_eq!(v["error"]["code"], "provider_response_unusable");
    }
    // An answer over maxResponseBytes (4000 here) is dropped as it comes, not held.
    let id = attempt(&mut vm, Some("anthropic"));
    vm.request_headers(id, &refs(&post("/v1/chat/completions", chat.len())), false);
    vm.request_body(id, &chat, true);
    vm.response_headers(id, &[(":status", "200"), ("content-type", "application/json")], false);
    for _ in 0..20 {
        vm.response_body(id, &[b' '; 1000], false);
        assert!(vm.stream(id).response_buffer.len() <= 5000);
    }
    vm.response_body(id, b"{}", true);
    let v: Value = serde_json::from_slice(&vm.stream(id).response_body_out).unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("maxResponseBytes"));
    vm.tick();
    assert_eq!(shared.metric("provider_fallback.anthropic.translation_failures"), Some(4));
}

#[test]
fn garbage_from_either_side_never_traps_the_filter() {
    let shared = Shared::new();
    let mut vm = upstream(&shared);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let pieces: [&[u8]; 8] = [b"data: ", b"event: ", b"\n", b"\r\n", b"{\"type\":\"message_start\"", b"\"\\u00", b"\xff\xfe", b"}\n\n"];
    for round in 0..200 {
        let mut garbage = Vec::new();
        for _ in 0..(next() % 40) {
            garbage.extend_from_slice(pieces[(next() % 8) as usize]);
        }
        let id = attempt(&mut vm, Some(if round % 2 == 0 { "anthropic" } else { "openai" }));
        vm.request_headers(id, &refs(&post("/v1/chat/completions", garbage.len())), false);
        vm.request_body(id, &garbage, true);
        if vm.stream(id).local_reply.is_none() {
            let content_type = if round % 3 == 0 { "application/json" } else { "text/event-stream" };
            vm.response_headers(id, &[(":status", "200"), ("content-type", content_type)], false);
            vm.response_body(id, &garbage, false);
            vm.response_body(id, &garbage, true);
        }
        vm.end_stream(id);
    }
    assert!(vm.failed().is_none());
}
