//! provider-fallback through a real Envoy: the router role in the listener chain, the upstream
//! role on a cluster whose priorities are OpenAI (0) and Anthropic (1), Envoy's retry policy
//! failing over between them, and mock providers speaking the real wire formats.

use integration::client::{self, Resp};
use integration::envoy::{Bootstrap, Envoy};
use integration::mock::llm::{self, sse_data, Fault, LlmMock};
use serde_json::{json, Value};
use std::time::Duration;

const OPENAI_KEY: &str = "sk-proj-e2e-openai-KEY-0123456789";
const ANTHROPIC_KEY: &str = "sk-ant-api03-e2e-anthropic-KEY-9876543210";
/// What the client sends as its own credential to the gateway; never forwarded.
const CLIENT_KEY: &str = "Bearer gateway-client-token";

struct Setup {
    envoy: Envoy,
    openai: LlmMock,
    anthropic: LlmMock,
}

fn start(edit: impl FnOnce(Bootstrap, &LlmMock, &LlmMock) -> anyhow::Result<Bootstrap>) -> Setup {
    let openai = llm::openai(OPENAI_KEY);
    let anthropic = llm::anthropic(ANTHROPIC_KEY);
    let envoy = Bootstrap::load("integration/envoy/provider-fallback.yaml")
        .map(|b| b.env("OPENAI_API_KEY", OPENAI_KEY).env("ANTHROPIC_API_KEY", ANTHROPIC_KEY))
        .and_then(|b| edit(b.log_level(&std::env::var("PF_ENVOY_LOG").unwrap_or_else(|_| "info".into())), &openai, &anthropic))
        .and_then(|b| b.start())
        .unwrap_or_else(|e| panic!("{e:#}"));
    Setup { envoy, openai, anthropic }
}

/// OpenAI primary, Anthropic fallback, as the fixture says.
fn setup() -> Setup {
    start(|b, openai, anthropic| b.cluster_endpoint("llm", 0, openai.port())?.cluster_endpoint("llm", 1, anthropic.port()))
}

fn chat(stream: bool) -> Value {
    let mut body = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say eight words please"}
    ], "temperature": 0.2});
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

impl Setup {
    fn post(&self, body: &Value) -> Resp {
        client::post_json(&self.envoy.url("gateway", "/v1/chat/completions"), &[("authorization", CLIENT_KEY)], body).unwrap()
    }

    fn post_raw(&self, body: &[u8], headers: &[(&str, &str)]) -> Resp {
        client::post(&self.envoy.url("gateway", "/v1/chat/completions"), headers, body).unwrap()
    }

    /// Every key and the client's token are absent from Envoy's log and stats.
    fn assert_no_key_leaked(&self) {
        let log = self.envoy.log();
        let (_, stats) = self.envoy.admin("/stats").unwrap();
        for secret in [OPENAI_KEY, ANTHROPIC_KEY, "e2e-openai-KEY", "e2e-anthropic-KEY"] {
            assert!(!log.contains(secret), "a key is in Envoy's log");
            assert!(!stats.contains(secret), "a key is in Envoy's stats");
        }
    }
}

/// Writes `request` on a fresh connection and reads one response (status, body), without
/// sending the rest of a declared body.
fn raw_exchange(port: u16, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)));
            if length.is_some_and(|n| body.len() >= n) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

fn assert_no_key_in(r: &Resp) {
    let mut all = r.text();
    for (k, v) in &r.headers {
        all.push_str(&format!("\n{k}: {v}"));
    }
    for secret in [OPENAI_KEY, ANTHROPIC_KEY, "e2e-openai-KEY", "e2e-anthropic-KEY"] {
        assert!(!all.contains(secret), "a key reached the client:\n{all}");
    }
}

/// The chunks of an OpenAI stream, checked for `[DONE]` at the end.
fn openai_chunks(r: &Resp) -> Vec<Value> {
    assert_eq!(r.header("content-type"), Some("text/event-stream"), "{}", r.text());
    let data = sse_data(&r.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{}", r.text());
    data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}"))).collect()
}

fn stream_text(chunks: &[Value]) -> String {
    chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect()
}

#[test]
fn the_primary_answers_and_nothing_falls_back() {
    let s = setup();
    let r = s.post(&chat(false));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-ai-provider"), Some("openai"));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o");
    assert_eq!(v["choices"][0]["message"]["content"], "word1 word2 word3 word4 word5 word6 word7 word8");
    assert_eq!(s.anthropic.request_count(), 0);
    let seen = s.openai.server.last_request().unwrap();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.header("authorization"), Some(format!("Bearer {OPENAI_KEY}").as_str()), "the gateway's key, not the client's");
    assert_eq!(seen.header("host"), Some("api.openai.com"));
    assert_eq!(seen.header("x-ai-model"), Some("gpt-4o"), "the router role's header");
    assert_eq!(seen.json(), chat(false), "the body passes untouched");
    assert_no_key_in(&r);
    s.assert_no_key_leaked();
}

fn check_anthropic_request(s: &Setup, stream: bool) {
    let seen = s.anthropic.server.last_request().unwrap();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(seen.header("authorization"), None, "no OpenAI or client credential reaches Anthropic");
    assert_eq!(seen.header("host"), Some("api.anthropic.com"));
    assert_eq!(seen.header("content-length").map(|l| l.parse::<usize>().unwrap()), Some(seen.body.len()));
    let body = seen.json();
    assert_eq!(body["model"], "claude-sonnet-4-5", "modelNameOverride");
    assert_eq!(body["system"], json!([{"type": "text", "text": "You are terse."}]));
    assert_eq!(body["messages"], json!([{"role": "user", "content": "Say eight words please"}]));
    assert_eq!(body["max_tokens"], 4096);
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(body["stream"].as_bool().unwrap_or(false), stream);
}

#[test]
fn primary_failures_fall_back_to_anthropic_for_json_answers() {
    let s = setup();
    let faults = [Fault::Status(429), Fault::Status(500), Fault::Status(503), Fault::ResetBeforeResponse, Fault::Delay(Duration::from_secs(10))];
    for fault in faults {
        s.openai.set_fault(Some(fault.clone()));
        let before = s.anthropic.request_count();
        let r = s.post(&chat(false));
        assert_eq!(r.status, 200, "{fault:?}: {}", r.text());
        assert_eq!(r.header("x-ai-provider"), Some("anthropic"), "{fault:?}");
        assert_eq!(s.anthropic.request_count(), before + 1, "{fault:?}");
        let v = r.json();
        assert_eq!(v["object"], "chat.completion", "{fault:?}");
        assert_eq!(v["model"], "claude-sonnet-4-5");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(v["choices"][0]["message"]["content"], "word1 word2 word3 word4 word5 word6 word7 word8");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        // Prompt words: "You are terse." (3) + "Say eight words please" (4).
        assert_eq!(v["usage"], json!({"prompt_tokens": 7, "completion_tokens": 8, "total_tokens": 15, "prompt_tokens_details": {"cached_tokens": 0}}));
        check_anthropic_request(&s, false);
        assert_no_key_in(&r);
    }
    s.assert_no_key_leaked();
}

#[test]
fn primary_failures_fall_back_to_anthropic_for_streams() {
    let s = setup();
    for fault in [Fault::Status(429), Fault::Status(500), Fault::ResetBeforeResponse, Fault::Delay(Duration::from_secs(10))] {
        s.openai.set_fault(Some(fault.clone()));
        let r = s.post(&chat(true));
        assert_eq!(r.status, 200, "{fault:?}: {}", r.text());
        assert_eq!(r.header("x-ai-provider"), Some("anthropic"));
        let chunks = openai_chunks(&r);
        assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"), "{}", r.text());
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[0]["model"], "claude-sonnet-4-5");
        assert_eq!(stream_text(&chunks), "word1 word2 word3 word4 word5 word6 word7 word8");
        let finish: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["finish_reason"]).filter(|f| !f.is_null()).collect();
        assert_eq!(finish, vec!["stop"]);
        let usage = chunks.last().unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["prompt_tokens"], 7);
        assert_eq!(usage["usage"]["completion_tokens"], 8);
        check_anthropic_request(&s, true);
        assert_no_key_in(&r);
    }
    s.assert_no_key_leaked();
}

#[test]
fn streamed_tool_calls_and_cached_tokens_come_back_in_openai_form() {
    let s = setup();
    s.openai.set_fault(Some(Fault::Status(429)));
    let mut body = chat(true);
    body["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]);
    let r = client::post_json(&s.envoy.url("gateway", "/v1/chat/completions"), &[("x-mock-cached-tokens", "2")], &body).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let chunks = openai_chunks(&r);
    let calls: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"].get("tool_calls")).collect();
    assert_eq!(calls[0][0]["id"], "toolu_mock");
    assert_eq!(calls[0][0]["function"]["name"], "get_weather");
    let arguments: String = calls.iter().filter_map(|c| c[0]["function"]["arguments"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), json!({"location": "Paris"}));
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], 7, "input + cache reads");
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 2);
    let sent = s.anthropic.server.last_request().unwrap().json();
    assert_eq!(sent["tools"][0]["input_schema"]["required"], json!(["location"]));
    assert_eq!(sent["tool_choice"], json!({"type": "auto"}));
}

#[test]
fn when_both_providers_fail_the_client_gets_an_openai_error() {
    let s = setup();
    let cases = [
        (Fault::Status(500), Fault::Status(529), 529, "overloaded"),
        (Fault::Status(429), Fault::Status(429), 429, "rate_limit_exceeded"),
        (Fault::ResetBeforeResponse, Fault::ResetBeforeResponse, 503, "upstream_unavailable"),
    ];
    for (primary, fallback, status, code) in cases {
        s.openai.set_fault(Some(primary.clone()));
        s.anthropic.set_fault(Some(fallback.clone()));
        for stream in [false, true] {
            let r = s.post(&chat(stream));
            assert_eq!(r.status, status, "{primary:?}/{fallback:?}: {}", r.text());
            assert!(r.header("content-type").unwrap_or_default().starts_with("application/json"), "{:?}", r.headers);
            let v = r.json();
            assert_eq!(v["error"]["code"], code, "{}", r.text());
            for field in ["message", "type"] {
                assert!(v["error"][field].is_string(), "{}", r.text());
            }
            assert!(v["error"].get("param").is_some());
            assert_no_key_in(&r);
        }
    }
    s.assert_no_key_leaked();
}

#[test]
fn a_retry_to_openai_undoes_what_the_anthropic_attempt_changed() {
    // Anthropic first, OpenAI second: the second attempt gets the header map the first one
    // rewrote (path, credentials, length) and must send OpenAI the client's request.
    let s = start(|mut b, openai, anthropic| {
        let endpoints = b.json_mut().pointer_mut("/static_resources/clusters/0/load_assignment/endpoints").unwrap();
        endpoints[0]["lb_endpoints"][0]["metadata"]["filter_metadata"]["llm"]["provider"] = json!("anthropic");
        endpoints[1]["lb_endpoints"][0]["metadata"]["filter_metadata"]["llm"]["provider"] = json!("openai");
        b.cluster_endpoint("llm", 0, anthropic.port())?.cluster_endpoint("llm", 1, openai.port())
    });
    s.anthropic.set_fault(Some(Fault::Status(529)));
    let r = s.post(&chat(false));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-ai-provider"), Some("openai"));
    assert_eq!(s.anthropic.request_count(), 1);
    let seen = s.openai.server.last_request().unwrap();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.header("authorization"), Some(format!("Bearer {OPENAI_KEY}").as_str()));
    assert_eq!(seen.header("x-api-key"), None);
    assert_eq!(seen.header("anthropic-version"), None);
    assert_eq!(seen.header("host"), Some("api.openai.com"));
    assert_eq!(seen.json(), chat(false), "the client's body, not the translated one");
    assert_eq!(seen.header("content-length").map(|l| l.parse::<usize>().unwrap()), Some(seen.body.len()));
    assert_eq!(r.json()["model"], "gpt-4o");
}

#[test]
fn the_router_role_rejects_bad_requests_with_openai_errors() {
    let s = setup();
    let json = [("content-type", "application/json")];
    let cases: [(&[u8], &str); 4] = [
        (b"this is not json", "invalid_json"),
        (br#"{"messages": [{"role": "user", "content": "hi"}]}"#, "missing_model"),
        (br#"{"model": 5}"#, "invalid_type"),
        (b"[1, 2]", "invalid_request_body"),
    ];
    for (body, code) in cases {
        let r = s.post_raw(body, &json);
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v = r.json();
        assert_eq!(v["error"]["code"], code);
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    // A body declared over maxRequestBytes (4 MiB) is refused before any of it is read; the
    // client reads the answer while it would still be sending (as curl does).
    let (status, body) = raw_exchange(s.envoy.port("gateway"), "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: 5000000\r\n\r\n{\"model\"");
    assert_eq!(status, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "request_too_large");
    assert_eq!(s.openai.request_count() + s.anthropic.request_count(), 0, "nothing reached a provider");
    // A client cannot route by sending the model header itself: without a body that names a
    // model the route does not match.
    let r = client::post(&s.envoy.url("gateway", "/v1/embeddings"), &[("x-ai-model", "gpt-4o")], b"{}").unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "no_route");
}

#[test]
fn what_the_fallback_cannot_take_is_a_clear_400() {
    let s = setup();
    s.openai.set_fault(Some(Fault::Status(429)));
    let mut body = chat(false);
    body["seed"] = json!(42);
    let r = s.post(&body);
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["param"], "seed");
    assert_eq!(v["error"]["code"], "unsupported_parameter");
    assert!(v["error"]["message"].as_str().unwrap().contains("provider `anthropic`"));
    assert_eq!(s.anthropic.request_count(), 0, "nothing half-translated was sent");
}

#[test]
fn unusable_fallback_answers_become_502_openai_errors() {
    let s = setup();
    s.openai.set_fault(Some(Fault::Status(500)));
    for fault in [Fault::Malformed, Fault::Gzip] {
        s.anthropic.set_fault(Some(fault.clone()));
        let r = s.post(&chat(false));
        assert_eq!(r.status, 502, "{fault:?}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "provider_response_unusable", "{}", r.text());
    }
    // A stream cut in the middle of an event ends with an error chunk, not [DONE].
    s.anthropic.set_fault(Some(Fault::Malformed));
    let r = s.post(&chat(true));
    assert_eq!(r.status, 200);
    let data = sse_data(&r.body);
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "provider_stream_incomplete", "{}", r.text());
}

#[test]
fn a_provider_refusing_the_gateway_key_is_a_502_without_its_message() {
    let s = start(|b, openai, anthropic| {
        b.env("OPENAI_API_KEY", "sk-wrong-key-for-openai").cluster_endpoint("llm", 0, openai.port())?.cluster_endpoint("llm", 1, anthropic.port())
    });
    let r = s.post(&chat(false));
    // OpenAI answers 401; the client gets a 502, which the retry policy sent to Anthropic.
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-ai-provider"), Some("anthropic"));
    assert_eq!(s.openai.request_count(), 1);
    s.anthropic.set_fault(Some(Fault::Status(503)));
    let r = s.post(&chat(false));
    assert_eq!(r.status, 503);
    assert!(!r.text().contains("sk-wrong"));
}

#[test]
fn a_dead_primary_is_skipped_without_a_retry() {
    // The primary's port has nothing listening: the TCP health check marks it unhealthy, so
    // requests go to the fallback priority directly.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let s = start(|b, _, anthropic| b.cluster_endpoint("llm", 0, dead_port)?.cluster_endpoint("llm", 1, anthropic.port()));
    // Envoy is ready once the first health check round is done.
    for _ in 0..3 {
        let r = s.post(&chat(false));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-ai-provider"), Some("anthropic"));
    }
    assert_eq!(s.envoy.stat("cluster.llm.upstream_rq_retry"), Some(0), "no retry was needed");
    assert_eq!(s.anthropic.request_count(), 3);
}

#[test]
fn a_stream_longer_than_the_per_try_timeout_is_not_cut() {
    // per_try_timeout (3 s in the fixture) bounds the wait for an attempt's response to
    // start; a stream that has started runs under the route timeout (120 s).
    let s = setup();
    s.openai.set_fault(Some(Fault::Status(429)));
    let started = std::time::Instant::now();
    let r = client::post_json(&s.envoy.url("gateway", "/v1/chat/completions"), &[("x-mock-chunk-delay-ms", "350")], &chat(true)).unwrap();
    assert!(started.elapsed() > Duration::from_secs(3), "the mock paces 13 events 350 ms apart");
    let chunks = openai_chunks(&r);
    assert_eq!(stream_text(&chunks), "word1 word2 word3 word4 word5 word6 word7 word8");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 8);
}

#[test]
fn the_openai_python_client_parses_answers_that_came_through_a_fallback() {
    let s = setup();
    s.openai.set_fault(Some(Fault::Status(429)));
    let python = integration::paths::python();
    assert!(python.exists(), "{} is missing: run scripts/setup.sh (installs the pinned openai package)", python.display());
    let script = integration::paths::root().join("integration/tools/openai_client_check.py");
    let output = std::process::Command::new(&python)
        .arg(&script)
        .arg(s.envoy.url("gateway", "/v1"))
        .arg("gpt-4o")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the openai client failed:\n{}{stdout}", String::from_utf8_lossy(&output.stderr));
    let got: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(got["version"], "3.57.0", "the pinned client");
    assert_eq!(got["json"]["object"], "chat.completion");
    assert_eq!(got["json"]["model"], "claude-sonnet-4-5", "Anthropic answered");
    assert_eq!(got["json"]["content"], "word1 word2 word3 word4 word5 word6 word7 word8");
    assert_eq!(got["json"]["finish_reason"], "stop");
    assert_eq!(got["json"]["usage"]["prompt_tokens"], 7);
    assert_eq!(got["json"]["usage"]["completion_tokens"], 8);
    assert_eq!(got["stream"]["content"], "word1 word2 word3 word4 word5 word6 word7 word8");
    assert_eq!(got["stream"]["finish_reason"], "stop");
    assert_eq!(got["stream"]["usage"]["total_tokens"], 15);
    assert_eq!(s.openai.request_count(), 2, "both requests tried the primary first");
    assert_eq!(s.anthropic.request_count(), 2);
}

/// token-budget (in the listener chain, after the router role) charges what the provider that
/// answered reported, after provider-fallback translated it, whichever provider that was.
#[test]
fn with_token_budget_in_the_chain_the_answering_providers_usage_is_charged() {
    let s = start(|mut b, openai, anthropic| {
        let budget = json!({
            "name": "token-budget",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "token-budget",
                    "allow_on_headers_stop_iteration": true,
                    "vm_config": {"vm_id": "token-budget", "runtime": "envoy.wasm.runtime.v8",
                                  "code": {"local": {"filename": "target/wasm32-wasip1/release/token_budget.wasm"}}},
                    "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": json!({"subject": {"header": "x-user-id"}, "model": {"fromBody": true, "header": "x-ai-model"},
                            "budgets": [{"name": "chain", "key": ["subject"], "tokens": 1_000_000, "window": "1d"}]}).to_string()}
                }
            }
        });
        let chain = b
            .json_mut()
            .pointer_mut("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| anyhow::anyhow!("no http_filters"))?;
        chain.insert(1, budget);
        b.cluster_endpoint("llm", 0, openai.port())?.cluster_endpoint("llm", 1, anthropic.port())
    });
    let url = s.envoy.url("gateway", "/v1/chat/completions");
    let user = [("x-user-id", "alice"), ("x-mock-cached-tokens", "2")];
    // The primary answers: OpenAI's usage (7 prompt + 8 completion).
    let r = client::post_json(&url, &user, &chat(false)).unwrap();
    assert_eq!(r.header("x-ai-provider"), Some("openai"), "{}", r.text());
    let mut want = r.json()["usage"]["total_tokens"].as_u64().unwrap();
    // The primary fails: Anthropic answers, JSON and streamed; its usage, translated.
    s.openai.set_fault(Some(Fault::Status(429)));
    let r = client::post_json(&url, &user, &chat(false)).unwrap();
    assert_eq!(r.header("x-ai-provider"), Some("anthropic"), "{}", r.text());
    want += r.json()["usage"]["total_tokens"].as_u64().unwrap();
    let r = client::post_json(&url, &user, &chat(true)).unwrap();
    let chunks = openai_chunks(&r);
    want += chunks.last().unwrap()["usage"]["total_tokens"].as_u64().unwrap();
    assert_eq!(want, 45, "three answers of 15 tokens each");
    let [charged] = s.envoy.wait_for_prometheus(&["token_budget_chain_tokens_charged"], |[v]| v == Some(want));
    assert_eq!(charged, Some(want));
}
