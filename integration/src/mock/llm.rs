//! Mock LLM providers: an OpenAI-compatible API (Chat Completions and Responses) and the
//! Anthropic Messages API, speaking their documented wire formats: JSON bodies, SSE streams,
//! usage blocks, error bodies and the headers clients look at.
//!
//! Output is deterministic so tests can assert exact token counts: the reply is a sequence of
//! words (`word1 word2 ...`), one token per word, one word per SSE content chunk. Prompt tokens
//! are the whitespace-separated words of every message (and the system prompt). A request can
//! steer the mock with test-only headers, which pass through Envoy untouched:
//!
//! - `x-mock-output-tokens: N` — reply length (default 8, capped by `max_tokens` /
//!   `max_completion_tokens` / `max_output_tokens` like a real model);
//! - `x-mock-cached-tokens: N` — report N prompt tokens as cached (OpenAI
//!   `prompt_tokens_details.cached_tokens`; Anthropic `cache_read_input_tokens`);
//! - `x-mock-chunk-delay-ms: N` — pause between SSE events (slow streams);
//! - `x-mock-fault-openai: 429` / `x-mock-fault-anthropic: reset` — a fault for this request only,
//!   on the mock of that API: a status (with the provider's error body) or `reset`. With the
//!   API in the name, one header can fail the primary of a gateway and spare its fallback
//!   (the local gateway's failover demo).
//!
//! Faults are set on the mock by the test ([`Fault`]): an error status with the provider's
//! error body, a reset before or during the response, a delay, a malformed body, or gzip.

use super::{serve, serve_on, MockResponse, MockServer, RecordedRequest};
use serde_json::{json, Value};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which API a mock speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Anthropic,
}

/// A fault the mock injects into every following request until cleared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and the provider's error body for it (429, 500, 503, 529...).
    Status(u16),
    /// Close the connection before any response.
    ResetBeforeResponse,
    /// Stream this many content events, then reset the connection.
    ResetAfterChunks(usize),
    /// Wait this long before answering.
    Delay(Duration),
    /// A 200 whose body is not valid JSON (or an SSE stream cut in the middle of an event).
    Malformed,
    /// A 200 with `content-encoding: gzip` and a gzipped body, whatever the client accepts.
    Gzip,
}

/// A running provider mock.
pub struct LlmMock {
    pub api: Api,
    pub server: MockServer,
    fault: Arc<Mutex<Option<Fault>>>,
    pub api_key: String,
}

impl LlmMock {
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.requests()
    }

    pub fn request_count(&self) -> usize {
        self.server.request_count()
    }
}

/// Starts an OpenAI-compatible mock that accepts `Authorization: Bearer <api_key>`.
pub fn openai(api_key: &str) -> LlmMock {
    start(Api::OpenAi, api_key, None).unwrap_or_else(|e| panic!("openai mock: {e}"))
}

/// Starts an Anthropic Messages mock that accepts `x-api-key: <api_key>`.
pub fn anthropic(api_key: &str) -> LlmMock {
    start(Api::Anthropic, api_key, None).unwrap_or_else(|e| panic!("anthropic mock: {e}"))
}

/// Starts a mock on a fixed address (for the local gateway).
pub fn start(api: Api, api_key: &str, address: Option<&str>) -> std::io::Result<LlmMock> {
    let fault: Arc<Mutex<Option<Fault>>> = Arc::new(Mutex::new(None));
    let (f, key) = (fault.clone(), api_key.to_string());
    let handler = move |r: &RecordedRequest| {
        let fault = f.lock().unwrap_or_else(|p| p.into_inner()).clone();
        respond(api, &key, fault, r)
    };
    let name = match api {
        Api::OpenAi => "openai",
        Api::Anthropic => "anthropic",
    };
    let server = match address {
        Some(a) => serve_on(name, a, handler)?,
        None => serve(name, handler),
    };
    Ok(LlmMock { api, server, fault, api_key: api_key.to_string() })
}

/// What a request asks for, as far as the mock cares.
struct Ask {
    model: String,
    stream: bool,
    include_usage: bool,
    prompt_tokens: u64,
    output_tokens: u64,
    cached_tokens: u64,
    chunk_delay: Duration,
    tools: bool,
}

fn header_u64(r: &RecordedRequest, name: &str) -> Option<u64> {
    r.header(name).and_then(|v| v.trim().parse().ok())
}

/// Words in a message `content`, which is a string or a list of parts with `text`.
fn words(content: &Value) -> u64 {
    match content {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(parts) => parts.iter().map(|p| p.get("text").map(words).unwrap_or(0)).sum(),
        _ => 0,
    }
}

fn ask(r: &RecordedRequest, body: &Value) -> Ask {
    let mut prompt_tokens: u64 = body["messages"].as_array().map(|m| m.iter().map(|m| words(&m["content"])).sum()).unwrap_or(0);
    prompt_tokens += words(&body["system"]);
    prompt_tokens += words(&body["input"]);
    if let Some(items) = body["input"].as_array() {
        prompt_tokens += items.iter().map(|i| words(&i["content"])).sum::<u64>();
    }
    let limit = ["max_tokens", "max_completion_tokens", "max_output_tokens"].iter().find_map(|k| body[*k].as_u64());
    let wanted = header_u64(r, "x-mock-output-tokens").unwrap_or(8);
    Ask {
        model: body["model"].as_str().unwrap_or_default().to_string(),
        stream: body["stream"].as_bool().unwrap_or(false),
        include_usage: body["stream_options"]["include_usage"].as_bool().unwrap_or(false),
        prompt_tokens,
        output_tokens: limit.map_or(wanted, |l| wanted.min(l)),
        cached_tokens: header_u64(r, "x-mock-cached-tokens").unwrap_or(0).min(prompt_tokens),
        chunk_delay: Duration::from_millis(header_u64(r, "x-mock-chunk-delay-ms").unwrap_or(0)),
        tools: body["tools"].as_array().is_some_and(|t| !t.is_empty()),
    }
}

fn word(i: u64) -> String {
    format!("word{}", i + 1)
}

fn reply_text(n: u64) -> String {
    (0..n).map(word).collect::<Vec<_>>().join(" ")
}

/// The provider's error body for a status.
pub fn error_body(api: Api, status: u16, message: &str) -> Value {
    match api {
        Api::OpenAi => {
            let (kind, code) = match status {
                400 => ("invalid_request_error", Value::Null),
                401 => ("invalid_request_error", json!("invalid_api_key")),
                404 => ("invalid_request_error", json!("model_not_found")),
                429 => ("requests", json!("rate_limit_exceeded")),
                _ => ("server_error", Value::Null),
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
        Api::Anthropic => {
            let kind = match status {
                400 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
    }
}

fn error(api: Api, status: u16, message: &str) -> MockResponse {
    let mut r = MockResponse::json(status, &error_body(api, status, message));
    match api {
        Api::OpenAi => {
            r = r.with_header("x-request-id", "req_mock");
            if status == 429 {
                r = r.with_header("retry-after", "1").with_header("x-ratelimit-remaining-requests", "0");
            }
        }
        Api::Anthropic => {
            r = r.with_header("request-id", "req_mock");
            if status == 429 {
                r = r.with_header("retry-after", "1");
            }
        }
    }
    r
}

/// The fault a request asks this mock for (`x-mock-fault-<api>`), if any.
fn header_fault(api: Api, r: &RecordedRequest) -> Option<Fault> {
    let name = match api {
        Api::OpenAi => "x-mock-fault-openai",
        Api::Anthropic => "x-mock-fault-anthropic",
    };
    match r.header(name)?.trim() {
        "reset" => Some(Fault::ResetBeforeResponse),
        status => status.parse().ok().filter(|s| (400..600).contains(s)).map(Fault::Status),
    }
}

fn respond(api: Api, key: &str, fault: Option<Fault>, r: &RecordedRequest) -> MockResponse {
    let fault = header_fault(api, r).or(fault);
    match fault {
        Some(Fault::Status(status)) => return error(api, status, &format!("mock fault: status {status}")),
        Some(Fault::ResetBeforeResponse) => return MockResponse::Reset,
        Some(Fault::Delay(d)) => {
            return MockResponse::Delayed(d, Box::new(respond(api, key, None, r)));
        }
        _ => {}
    }
    // Authentication, as the providers check it.
    match api {
        Api::OpenAi => {
            if r.header("authorization") != Some(&format!("Bearer {key}")) {
                return error(api, 401, "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.");
            }
        }
        Api::Anthropic => {
            if r.header("x-api-key") != Some(key) {
                return error(api, 401, "invalid x-api-key");
            }
            if r.header("anthropic-version").is_none() {
                return error(api, 400, "anthropic-version: header is required");
            }
        }
    }
    let Ok(body) = serde_json::from_slice::<Value>(&r.body) else {
        return error(api, 400, "We could not parse the JSON body of your request.");
    };
    if body["model"].as_str().is_none_or(str::is_empty) {
        return error(api, 400, "you must provide a model parameter");
    }
    let path = r.path.split('?').next().unwrap_or_default();
    let ask = ask(r, &body);
    match (api, path) {
        (Api::OpenAi, "/v1/chat/completions") => {
            if body["messages"].as_array().is_none_or(Vec::is_empty) {
                return error(api, 400, "'messages' must contain at least one message");
            }
            openai_chat(&ask, fault)
        }
        (Api::OpenAi, "/v1/responses") => openai_responses(&ask, fault),
        (Api::Anthropic, "/v1/messages") => {
            if body["max_tokens"].as_u64().is_none() {
                return error(api, 400, "max_tokens: Field required");
            }
            if body["messages"].as_array().is_none_or(Vec::is_empty) {
                return error(api, 400, "messages: at least one message is required");
            }
            anthropic_messages(&ask, fault)
        }
        _ => error(api, 404, &format!("Unknown request URL: {} {path}", r.method)),
    }
}

fn sse_event(event: Option<&str>, data: &Value) -> Vec<u8> {
    match event {
        Some(e) => format!("event: {e}\ndata: {data}\n\n").into_bytes(),
        None => format!("data: {data}\n\n").into_bytes(),
    }
}

/// Turns SSE events into a streamed response, applying stream faults.
fn stream(events: Vec<Vec<u8>>, delay: Duration, fault: Option<Fault>, headers: Vec<(String, String)>) -> MockResponse {
    let mut chunks: Vec<(Duration, Vec<u8>)> = events.into_iter().map(|e| (delay, e)).collect();
    let mut reset_after = false;
    match fault {
        Some(Fault::ResetAfterChunks(n)) => {
            chunks.truncate(n);
            reset_after = true;
        }
        Some(Fault::Malformed) => {
            // Cut the stream in the middle of an event, then end it.
            let keep = chunks.len() / 2;
            chunks.truncate(keep + 1);
            if let Some((_, last)) = chunks.last_mut() {
                last.truncate(last.len() / 2);
            }
        }
        _ => {}
    }
    let mut all = vec![("content-type".to_string(), "text/event-stream".to_string()), ("cache-control".into(), "no-cache".into())];
    all.extend(headers);
    MockResponse::Stream { status: 200, headers: all, chunks, reset_after }
}

fn full(body: Value, fault: Option<Fault>, headers: Vec<(String, String)>) -> MockResponse {
    let mut all = vec![("content-type".to_string(), "application/json".to_string())];
    all.extend(headers);
    let bytes = body.to_string().into_bytes();
    match fault {
        Some(Fault::Malformed) => MockResponse::Full { status: 200, headers: all, body: bytes[..bytes.len() / 2].to_vec() },
        Some(Fault::Gzip) => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            let _ = gz.write_all(&bytes);
            all.push(("content-encoding".into(), "gzip".into()));
            MockResponse::Full { status: 200, headers: all, body: gz.finish().unwrap_or_default() }
        }
        Some(Fault::ResetAfterChunks(n)) => {
            MockResponse::Stream { status: 200, headers: all, chunks: vec![(Duration::ZERO, bytes[..n.min(bytes.len())].to_vec())], reset_after: true }
        }
        _ => MockResponse::Full { status: 200, headers: all, body: bytes },
    }
}

const CREATED: u64 = 1_795_737_600;

fn openai_headers() -> Vec<(String, String)> {
    vec![
        ("x-request-id".into(), "req_mock".into()),
        ("openai-processing-ms".into(), "12".into()),
        ("x-ratelimit-limit-tokens".into(), "30000000".into()),
        ("x-ratelimit-remaining-tokens".into(), "29999000".into()),
    ]
}

fn openai_usage(ask: &Ask) -> Value {
    json!({
        "prompt_tokens": ask.prompt_tokens,
        "completion_tokens": ask.output_tokens,
        "total_tokens": ask.prompt_tokens + ask.output_tokens,
        "prompt_tokens_details": {"cached_tokens": ask.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    })
}

fn openai_chat(ask: &Ask, fault: Option<Fault>) -> MockResponse {
    let id = "chatcmpl-mock";
    let finish = if ask.tools { "tool_calls" } else { "stop" };
    if !ask.stream {
        let message = if ask.tools {
            json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": "call_mock", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}]})
        } else {
            json!({"role": "assistant", "content": reply_text(ask.output_tokens), "refusal": null})
        };
        let body = json!({
            "id": id, "object": "chat.completion", "created": CREATED, "model": ask.model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": openai_usage(ask), "service_tier": "default", "system_fingerprint": "fp_mock"
        });
        return full(body, fault, openai_headers());
    }
    let usage_field = if ask.include_usage { Some(Value::Null) } else { None };
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": CREATED, "model": ask.model,
            "system_fingerprint": "fp_mock", "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if let Some(u) = &usage_field {
            c["usage"] = u.clone();
        }
        sse_event(None, &c)
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": "", "refusal": null}), Value::Null)];
    if ask.tools {
        events.push(chunk(json!({"tool_calls": [{"index": 0, "id": "call_mock", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}), Value::Null));
        for part in ["{\"location\"", ":\"Paris\"}"] {
            events.push(chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}), Value::Null));
        }
    } else {
        for i in 0..ask.output_tokens {
            let text = if i == 0 { word(i) } else { format!(" {}", word(i)) };
            events.push(chunk(json!({"content": text}), Value::Null));
        }
    }
    events.push(chunk(json!({}), json!(finish)));
    if ask.include_usage {
        let c = json!({"id": id, "object": "chat.completion.chunk", "created": CREATED, "model": ask.model,
            "system_fingerprint": "fp_mock", "choices": [], "usage": openai_usage(ask)});
        events.push(sse_event(None, &c));
    }
    events.push(b"data: [DONE]\n\n".to_vec());
    stream(events, ask.chunk_delay, fault, openai_headers())
}

fn responses_usage(ask: &Ask) -> Value {
    json!({
        "input_tokens": ask.prompt_tokens,
        "input_tokens_details": {"cached_tokens": ask.cached_tokens},
        "output_tokens": ask.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": ask.prompt_tokens + ask.output_tokens
    })
}

fn openai_responses(ask: &Ask, fault: Option<Fault>) -> MockResponse {
    let text = reply_text(ask.output_tokens);
    let response = |status: &str, output: Value, usage: Value| {
        json!({"id": "resp_mock", "object": "response", "created_at": CREATED, "status": status, "model": ask.model,
            "output": output, "usage": usage, "error": null, "incomplete_details": null})
    };
    let message = json!([{"type": "message", "id": "msg_mock", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]}]);
    if !ask.stream {
        return full(response("completed", message, responses_usage(ask)), fault, openai_headers());
    }
    let mut seq = 0;
    let mut ev = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(seq);
        seq += 1;
        sse_event(Some(kind), &data)
    };
    let mut events = vec![
        ev("response.created", json!({"response": response("in_progress", json!([]), Value::Null)})),
        ev("response.output_item.added", json!({"output_index": 0, "item": {"type": "message", "id": "msg_mock", "status": "in_progress", "role": "assistant", "content": []}})),
    ];
    for i in 0..ask.output_tokens {
        let delta = if i == 0 { word(i) } else { format!(" {}", word(i)) };
        events.push(ev("response.output_text.delta", json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0, "delta": delta})));
    }
    events.push(ev("response.output_text.done", json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0, "text": text})));
    events.push(ev("response.completed", json!({"response": response("completed", message, responses_usage(ask))})));
    stream(events, ask.chunk_delay, fault, openai_headers())
}

fn anthropic_headers() -> Vec<(String, String)> {
    vec![
        ("request-id".into(), "req_mock".into()),
        ("anthropic-ratelimit-tokens-limit".into(), "800000".into()),
        ("anthropic-ratelimit-tokens-remaining".into(), "799000".into()),
    ]
}

fn anthropic_messages(ask: &Ask, fault: Option<Fault>) -> MockResponse {
    // Anthropic reports cache reads apart from input_tokens (which excludes them).
    let input = ask.prompt_tokens - ask.cached_tokens;
    let stop = if ask.tools { "tool_use" } else { "end_turn" };
    if !ask.stream {
        let content = if ask.tools {
            json!([{"type": "tool_use", "id": "toolu_mock", "name": "get_weather", "input": {"location": "Paris"}}])
        } else {
            json!([{"type": "text", "text": reply_text(ask.output_tokens)}])
        };
        let body = json!({
            "id": "msg_mock", "type": "message", "role": "assistant", "model": ask.model, "content": content,
            "stop_reason": stop, "stop_sequence": null,
            "usage": {"input_tokens": input, "cache_creation_input_tokens": 0, "cache_read_input_tokens": ask.cached_tokens,
                      "output_tokens": ask.output_tokens, "service_tier": "standard"}
        });
        return full(body, fault, anthropic_headers());
    }
    let mut events = vec![sse_event(
        Some("message_start"),
        &json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant", "content": [],
            "model": ask.model, "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input, "cache_creation_input_tokens": 0, "cache_read_input_tokens": ask.cached_tokens, "output_tokens": 1}}}),
    )];
    if ask.tools {
        events.push(sse_event(Some("content_block_start"), &json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_mock", "name": "get_weather", "input": {}}})));
        for part in ["{\"location\"", ": \"Paris\"}"] {
            events.push(sse_event(Some("content_block_delta"), &json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": part}})));
        }
    } else {
        events.push(sse_event(Some("content_block_start"), &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
        events.push(sse_event(Some("ping"), &json!({"type": "ping"})));
        for i in 0..ask.output_tokens {
            let text = if i == 0 { word(i) } else { format!(" {}", word(i)) };
            events.push(sse_event(Some("content_block_delta"), &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})));
        }
    }
    events.push(sse_event(Some("content_block_stop"), &json!({"type": "content_block_stop", "index": 0})));
    events.push(sse_event(Some("message_delta"), &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
        "usage": {"output_tokens": ask.output_tokens}})));
    events.push(sse_event(Some("message_stop"), &json!({"type": "message_stop"})));
    stream(events, ask.chunk_delay, fault, anthropic_headers())
}

/// The SSE `data:` payloads of a stream body, in order (for tests reading a mock's output).
pub fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:"))).map(str::to_string))
        .collect()
}
