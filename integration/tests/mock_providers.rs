//! The provider mocks speak the documented wire formats: checked directly, without Envoy.

use integration::client;
use integration::mock::llm::{self, sse_data, Fault};
use serde_json::{json, Value};
use std::io::Read;

fn chat(stream: bool) -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say three words"}],
           "stream": stream, "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null }})
}

#[test]
fn openai_chat_completion_json() {
    let m = llm::openai("sk-test");
    let r = client::post_json(&m.server.url("/v1/chat/completions"), &[("authorization", "Bearer sk-test"), ("x-mock-output-tokens", "3")], &chat(false)).unwrap();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "word1 word2 word3");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"], json!({"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}));
}

#[test]
fn openai_chat_completion_stream_ends_with_usage_and_done() {
    let m = llm::openai("sk-test");
    let r = client::post_json(&m.server.url("/v1/chat/completions"), &[("authorization", "Bearer sk-test"), ("x-mock-output-tokens", "4")], &chat(true)).unwrap();
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let data = sse_data(&r.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "word1 word2 word3 word4");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 4);
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["usage"].is_null()));
    // Without include_usage there is no usage chunk at all.
    let mut body = chat(true);
    body.as_object_mut().unwrap().remove("stream_options");
    let r = client::post_json(&m.server.url("/v1/chat/completions"), &[("authorization", "Bearer sk-test")], &body).unwrap();
    assert!(!String::from_utf8_lossy(&r.body).contains("\"usage\""));
}

#[test]
fn openai_responses_api_json_and_stream() {
    let m = llm::openai("k");
    let body = json!({"model": "gpt-4o", "input": "two words here", "max_output_tokens": 2});
    let r = client::post_json(&m.server.url("/v1/responses"), &[("authorization", "Bearer k")], &body).unwrap();
    let v = r.json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["usage"]["input_tokens"], 3);
    assert_eq!(v["usage"]["output_tokens"], 2);
    let mut body = body;
    body["stream"] = json!(true);
    let r = client::post_json(&m.server.url("/v1/responses"), &[("authorization", "Bearer k")], &body).unwrap();
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert!(text.starts_with("event: response.created\ndata: "), "{text}");
    let completed: Value = serde_json::from_str(sse_data(&r.body).last().unwrap()).unwrap();
    assert_eq!(completed["type"], "response.completed");
    assert_eq!(completed["response"]["usage"]["total_tokens"], 5);
}

#[test]
fn anthropic_messages_json_and_stream() {
    let m = llm::anthropic("ak");
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}]});
    let h = [("x-api-key", "ak"), ("anthropic-version", "2023-06-01"), ("x-mock-cached-tokens", "1")];
    let v = client::post_json(&m.server.url("/v1/messages"), &h, &body).unwrap().json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], "word1 word2 word3 word4 word5");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], 3, "input excludes cache reads");
    assert_eq!(v["usage"]["cache_read_input_tokens"], 1);
    assert_eq!(v["usage"]["output_tokens"], 5);

    let mut body = body;
    body["stream"] = json!(true);
    let r = client::post_json(&m.server.url("/v1/messages"), &h, &body).unwrap();
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    let events: Vec<Value> = sse_data(&r.body).iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(events[0]["message"]["usage"]["input_tokens"], 3);
    let delta = events.iter().find(|e| e["type"] == "message_delta").unwrap();
    assert_eq!(delta["usage"]["output_tokens"], 5);
}

#[test]
fn providers_check_credentials_and_required_fields() {
    let o = llm::openai("right");
    let r = client::post_json(&o.server.url("/v1/chat/completions"), &[("authorization", "Bearer wrong")], &chat(false)).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    let a = llm::anthropic("right");
    let body = json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]});
    let r = client::post_json(&a.server.url("/v1/messages"), &[("x-api-key", "right"), ("anthropic-version", "2023-06-01")], &body).unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}}));
    let r = client::post_json(&a.server.url("/v1/messages"), &[("x-api-key", "wrong"), ("anthropic-version", "2023-06-01")], &body).unwrap();
    assert_eq!(r.json()["error"]["type"], "authentication_error");
}

#[test]
fn faults() {
    let a = llm::anthropic("k");
    let h = [("x-api-key", "k"), ("anthropic-version", "2023-06-01")];
    let body = json!({"model": "claude", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}], "stream": true});
    a.set_fault(Some(Fault::Status(529)));
    let r = client::post_json(&a.server.url("/v1/messages"), &h, &body).unwrap();
    assert_eq!(r.status, 529);
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
    a.set_fault(Some(Fault::ResetBeforeResponse));
    assert!(client::post_json(&a.server.url("/v1/messages"), &h, &body).is_err());
    a.set_fault(Some(Fault::ResetAfterChunks(2)));
    let mut s = client::post_streaming(&a.server.url("/v1/messages"), &[h[0], h[1], ("content-type", "application/json")], body.to_string().as_bytes()).unwrap();
    let mut got = Vec::new();
    assert!(s.body.read_to_end(&mut got).is_err(), "a reset mid-stream is an error for the client");
    assert!(String::from_utf8_lossy(&got).contains("message_start"));
    a.set_fault(Some(Fault::Gzip));
    let mut body = body;
    body["stream"] = json!(false);
    let r = client::post_json(&a.server.url("/v1/messages"), &h, &body).unwrap();
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(&r.body[..2], &[0x1f, 0x8b]);
    a.set_fault(None);
    assert_eq!(client::post_json(&a.server.url("/v1/messages"), &h, &body).unwrap().status, 200);
}

#[test]
fn a_request_header_can_fail_one_api_only() {
    let o = llm::openai("k");
    let a = llm::anthropic("k");
    let h = [("authorization", "Bearer k"), ("x-mock-fault-openai", "429"), ("x-mock-fault-anthropic", "reset")];
    let r = client::post_json(&o.server.url("/v1/chat/completions"), &h, &chat(false)).unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    let body = json!({"model": "claude", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]});
    let h = [("x-api-key", "k"), ("anthropic-version", "2023-06-01"), ("x-mock-fault-openai", "429")];
    assert_eq!(client::post_json(&a.server.url("/v1/messages"), &h, &body).unwrap().status, 200, "the other API's fault header is ignored");
    let h = [("x-api-key", "k"), ("anthropic-version", "2023-06-01"), ("x-mock-fault-anthropic", "reset")];
    assert!(client::post_json(&a.server.url("/v1/messages"), &h, &body).is_err());
}
