//! Round trips of the OpenAI <-> Anthropic translation over generated requests and answers,
//! for the fields the README's translation table claims:
//! - a Chat Completions request made only of supported fields translates (never a 400), and
//!   every field can be read back from the Anthropic request as the table says;
//! - an Anthropic Messages answer becomes a `chat.completion` with the same text, tool calls
//!   (arguments parse back to the tool input), finish reason and usage;
//! - the same answer sent as an SSE stream, cut into arbitrary chunks, gives the same text,
//!   tool calls, finish reason and usage as the JSON answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use filter_common::config::parse_json;
use proptest::prelude::*;
use provider_fallback::config::{Config, Provider, RawConfig};
use provider_fallback::from_anthropic::{self, ChunkStream};
use provider_fallback::to_anthropic;
use serde_json::{json, Map, Value};

fn provider(extra: &str) -> Provider {
    let text = format!(r#"{{"role": "upstream", "providers": [{{"name": "anthropic", "schema": "anthropic", "host": "api.anthropic.com", "apiKey": {{"inline": "k"}}{extra}}}]}}"#);
    let raw: RawConfig = parse_json(text.as_bytes()).unwrap();
    let Config::Upstream(mut c) = Config::compile(raw, &|_| None).unwrap() else { panic!("upstream config") };
    c.providers.remove(0)
}

// ---- generators ----------------------------------------------------------------------------

fn text() -> BoxedStrategy<String> {
    prop_oneof![".{0,12}", "[a-z ]{1,8}", Just(String::new()), Just("\"quoted\\\n\u{1F600}".to_string())].boxed()
}

fn nonempty_text() -> BoxedStrategy<String> {
    ".{1,12}".boxed()
}

/// A message `content`: a string or text parts.
fn content(t: BoxedStrategy<String>) -> impl Strategy<Value = Value> {
    prop_oneof![
        t.clone().prop_map(Value::String),
        prop::collection::vec(t, 1..3).prop_map(|parts| Value::Array(parts.into_iter().map(|p| json!({"type": "text", "text": p})).collect())),
    ]
}

fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-z]{1,5}", prop_oneof![any::<i32>().prop_map(Value::from), text().prop_map(Value::from), any::<bool>().prop_map(Value::from)], 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn tool_call() -> impl Strategy<Value = Value> {
    ("call_[a-z0-9]{1,8}", "[a-z_]{1,10}", json_object())
        .prop_map(|(id, name, input)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}}))
}

/// A turn after the system prompt: user, assistant (text and/or tool calls), or tool result.
fn turn() -> impl Strategy<Value = Value> {
    prop_oneof![
        content(text()).prop_map(|c| json!({"role": "user", "content": c})),
        content(nonempty_text()).prop_map(|c| json!({"role": "assistant", "content": c})),
        (prop::option::of(content(nonempty_text())), prop::collection::vec(tool_call(), 1..3))
            .prop_map(|(c, calls)| json!({"role": "assistant", "content": c, "tool_calls": calls})),
        ("call_[a-z0-9]{1,8}", content(text())).prop_map(|(id, c)| json!({"role": "tool", "tool_call_id": id, "content": c})),
    ]
}

fn tool() -> impl Strategy<Value = Value> {
    ("[a-z_]{1,10}", prop::option::of(text()), prop::option::of(json_object()), prop::option::of(Just(false))).prop_map(|(name, description, parameters, strict)| {
        let mut f = json!({"name": name});
        if let Some(d) = description {
            f["description"] = json!(d);
        }
        if let Some(p) = parameters {
            f["parameters"] = json!({"type": "object", "properties": p});
        }
        if let Some(s) = strict {
            f["strict"] = json!(s);
        }
        json!({"type": "function", "function": f})
    })
}

fn unit_float() -> impl Strategy<Value = Value> {
    prop_oneof![Just(json!(0)), Just(json!(1)), (0.0f64..=1.0).prop_map(|f| json!(f))]
}

/// A Chat Completions request made only of fields the translation table supports.
fn request() -> impl Strategy<Value = Value> {
    let messages = (
        prop::collection::vec((prop_oneof![Just("system"), Just("developer")], content(text())), 0..3),
        prop::collection::vec(turn(), 1..6),
    );
    let sampling = (
        prop::option::of(unit_float()),
        prop::option::of(unit_float()),
        prop::option::of(prop_oneof![text().prop_map(Value::from), prop::collection::vec(text(), 0..3).prop_map(Value::from)]),
        prop::option::of(1u64..1_000_000),
        prop::option::of(1u64..1_000_000),
    );
    let options = (
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
        prop::collection::vec(tool(), 0..3),
        prop::option::of(prop_oneof![Just(json!("none")), Just(json!("auto")), Just(json!("required")), "[a-z_]{1,10}".prop_map(|n| json!({"type": "function", "function": {"name": n}}))]),
        prop::option::of(any::<bool>()),
        prop::option::of("[a-z0-9-]{1,12}"),
        prop::sample::subsequence(vec!["n", "presence_penalty", "frequency_penalty", "logprobs", "store", "response_format"], 0..3),
    );
    ("[a-z0-9.-]{1,20}", messages, sampling, options).prop_map(|(model, (system, turns), sampling, options)| {
        let (temperature, top_p, stop, max_tokens, max_completion_tokens) = sampling;
        let (stream, include_usage, tools, tool_choice, parallel, user, defaults) = options;
        let mut r = json!({"model": model});
        let mut messages: Vec<Value> = system.into_iter().map(|(role, c)| json!({"role": role, "content": c})).collect();
        messages.extend(turns);
        r["messages"] = Value::Array(messages);
        let mut set = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                r[k] = v;
            }
        };
        set("temperature", temperature);
        set("top_p", top_p);
        set("stop", stop);
        set("max_tokens", max_tokens.map(Value::from));
        set("max_completion_tokens", max_completion_tokens.map(Value::from));
        set("stream", stream.map(Value::from));
        set("stream_options", include_usage.map(|u| json!({"include_usage": u})));
        set("tools", (!tools.is_empty()).then_some(Value::Array(tools)));
        set("tool_choice", tool_choice);
        set("parallel_tool_calls", parallel.map(Value::from));
        set("user", user.map(Value::from));
        for d in defaults {
            let v = match d {
                "n" => json!(1),
                "presence_penalty" | "frequency_penalty" => json!(0),
                "response_format" => json!({"type": "text"}),
                _ => json!(false),
            };
            r[d] = v;
        }
        r
    })
}

// ---- reading the translation back ----------------------------------------------------------

/// What a conversation says, in order, whichever API shape carries it.
#[derive(Debug, PartialEq)]
enum Said {
    User(String),
    Assistant(String),
    ToolUse(String, String, Value),
    ToolResult(String, String),
}

fn parts(content: &Value) -> Vec<String> {
    match content {
        Value::String(s) => vec![s.clone()],
        Value::Array(parts) => parts.iter().map(|p| p["text"].as_str().unwrap().to_string()).collect(),
        _ => Vec::new(),
    }
}

fn openai_said(messages: &[Value]) -> (Vec<String>, Vec<Said>) {
    let mut system = Vec::new();
    let mut said = Vec::new();
    for m in messages {
        match m["role"].as_str().unwrap() {
            "system" | "developer" => system.extend(parts(&m["content"])),
            "user" => said.extend(parts(&m["content"]).into_iter().map(Said::User)),
            "assistant" => {
                said.extend(parts(&m["content"]).into_iter().filter(|t| !t.is_empty()).map(Said::Assistant));
                for c in m["tool_calls"].as_array().into_iter().flatten() {
                    let input: Value = serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap();
                    said.push(Said::ToolUse(c["id"].as_str().unwrap().into(), c["function"]["name"].as_str().unwrap().into(), input));
                }
            }
            "tool" => said.push(Said::ToolResult(m["tool_call_id"].as_str().unwrap().into(), parts(&m["content"]).concat())),
            other => panic!("generated role {other}"),
        }
    }
    (system, said)
}

fn anthropic_said(messages: &[Value]) -> Vec<Said> {
    let mut said = Vec::new();
    for m in messages {
        let role = m["role"].as_str().unwrap();
        let blocks = match &m["content"] {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(b) => b.clone(),
            other => panic!("content {other}"),
        };
        for b in blocks {
            said.push(match (role, b["type"].as_str().unwrap()) {
                ("user", "text") => Said::User(b["text"].as_str().unwrap().into()),
                ("user", "tool_result") => Said::ToolResult(b["tool_use_id"].as_str().unwrap().into(), b["content"].as_str().unwrap().into()),
                ("assistant", "text") => Said::Assistant(b["text"].as_str().unwrap().into()),
                ("assistant", "tool_use") => Said::ToolUse(b["id"].as_str().unwrap().into(), b["name"].as_str().unwrap().into(), b["input"].clone()),
                other => panic!("unexpected block {other:?}"),
            });
        }
    }
    said
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn supported_request_fields_round_trip(r in request(), override_model in prop::option::of("claude-[a-z0-9-]{1,10}")) {
        let extra = override_model.as_ref().map(|m| format!(r#", "modelNameOverride": "{m}""#)).unwrap_or_default();
        let p = provider(&format!(r#"{extra}, "defaultMaxTokens": 777"#));
        // Compared as serde_json reads the request text: without its `float_roundtrip` feature
        // it may read a float 1 ULP away from the generated one (0.38015326222780277 comes
        // back as 0.3801532622278028), which the filter then passes on as read.
        let r: Value = serde_json::from_str(&r.to_string()).unwrap();
        let t = to_anthropic::request(r.to_string().as_bytes(), &p)
            .unwrap_or_else(|reply| panic!("a supported request was refused: {}\n{r}", String::from_utf8_lossy(&reply.body)));
        let a: Value = serde_json::from_slice(&t.body).unwrap();
        let allowed = ["model", "system", "messages", "max_tokens", "temperature", "top_p", "stop_sequences", "stream", "tools", "tool_choice", "metadata"];
        for k in a.as_object().unwrap().keys() {
            prop_assert!(allowed.contains(&k.as_str()), "unexpected field {} in {}", k, a);
        }

        prop_assert_eq!(&a["model"], &json!(override_model.unwrap_or_else(|| r["model"].as_str().unwrap().to_string())));
        let (system, said) = openai_said(r["messages"].as_array().unwrap());
        let a_system: Vec<String> = a["system"].as_array().into_iter().flatten().map(|b| b["text"].as_str().unwrap().to_string()).collect();
        prop_assert_eq!(a_system, system);
        prop_assert_eq!(anthropic_said(a["messages"].as_array().unwrap()), said);
        // Consecutive tool results share one user turn.
        let turns = a["messages"].as_array().unwrap();
        prop_assert!(turns.windows(2).all(|w| !(w[0]["role"] == "user" && w[1]["role"] == "user"
            && w[0]["content"].as_array().is_some_and(|c| c.iter().all(|b| b["type"] == "tool_result"))
            && w[1]["content"].as_array().is_some_and(|c| c.iter().all(|b| b["type"] == "tool_result")))));

        let max = r["max_completion_tokens"].as_u64().or(r["max_tokens"].as_u64()).unwrap_or(777);
        prop_assert_eq!(&a["max_tokens"], &json!(max));
        for (openai, anthropic) in [("temperature", "temperature"), ("top_p", "top_p")] {
            prop_assert_eq!(&a[anthropic], &r[openai]);
        }
        let stops = match &r["stop"] {
            Value::String(s) => vec![json!(s)],
            Value::Array(items) => items.clone(),
            _ => Vec::new(),
        };
        prop_assert_eq!(a.get("stop_sequences").cloned().unwrap_or(json!([])), Value::Array(stops));
        prop_assert_eq!(t.stream, r["stream"].as_bool().unwrap_or(false));
        prop_assert_eq!(a.get("stream").cloned(), r.get("stream").cloned());
        prop_assert_eq!(t.include_usage, r["stream_options"]["include_usage"].as_bool().unwrap_or(false));
        prop_assert_eq!(&a["metadata"]["user_id"], &r["user"]);

        let tools = r["tools"].as_array().cloned().unwrap_or_default();
        let a_tools = a["tools"].as_array().cloned().unwrap_or_default();
        prop_assert_eq!(a_tools.len(), tools.len());
        for (o, t) in tools.iter().zip(&a_tools) {
            let f = &o["function"];
            prop_assert_eq!(&t["name"], &f["name"]);
            prop_assert_eq!(&t["description"], &f["description"]);
            let schema = if f["parameters"].is_null() { json!({"type": "object", "properties": {}}) } else { f["parameters"].clone() };
            prop_assert_eq!(&t["input_schema"], &schema);
        }
        let mut choice = match &r["tool_choice"] {
            Value::Null if !tools.is_empty() => Some(json!({"type": "auto"})),
            Value::Null => None,
            Value::String(s) => Some(json!({"type": match s.as_str() { "required" => "any", other => other }})),
            v => Some(json!({"type": "tool", "name": v["function"]["name"]})),
        };
        if let Some(c) = choice.as_mut() {
            if !tools.is_empty() && r["parallel_tool_calls"] == json!(false) && c["type"] != "none" {
                c["disable_parallel_tool_use"] = json!(true);
            }
        }
        prop_assert_eq!(a.get("tool_choice").cloned(), choice);
    }
}

// ---- answers: JSON and SSE ----------------------------------------------------------------

#[derive(Debug, Clone)]
enum Block {
    Text(String),
    Tool(String, String, Value),
    Thinking(String),
}

fn block() -> impl Strategy<Value = Block> {
    prop_oneof![
        3 => text().prop_map(Block::Text),
        2 => ("toolu_[a-z0-9]{1,8}", "[a-z_]{1,10}", json_object()).prop_map(|(id, n, input)| Block::Tool(id, n, input)),
        1 => text().prop_map(Block::Thinking),
    ]
}

#[derive(Debug, Clone)]
struct Answer {
    id: String,
    model: String,
    blocks: Vec<Block>,
    stop_reason: &'static str,
    /// input, cache creation, cache read, output.
    usage: [u64; 4],
}

fn answer() -> impl Strategy<Value = Answer> {
    let reasons = ["end_turn", "stop_sequence", "pause_turn", "max_tokens", "model_context_window_exceeded", "tool_use", "refusal", "a_new_reason"];
    ("msg_[A-Za-z0-9]{1,12}", "claude-[a-z0-9-]{1,12}", prop::collection::vec(block(), 0..5), prop::sample::select(reasons.to_vec()), [0u64..1_000_000, 0u64..1000, 0u64..1000, 0u64..100_000])
        .prop_map(|(id, model, blocks, stop_reason, usage)| Answer { id, model, blocks, stop_reason, usage })
}

impl Answer {
    fn json(&self) -> Value {
        let content: Vec<Value> = self
            .blocks
            .iter()
            .map(|b| match b {
                Block::Text(t) => json!({"type": "text", "text": t}),
                Block::Tool(id, name, input) => json!({"type": "tool_use", "id": id, "name": name, "input": input}),
                Block::Thinking(t) => json!({"type": "thinking", "thinking": t, "signature": "sig"}),
            })
            .collect();
        let [input, creation, read, output] = self.usage;
        json!({"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": content,
               "stop_reason": self.stop_reason, "stop_sequence": null,
               "usage": {"input_tokens": input, "cache_creation_input_tokens": creation, "cache_read_input_tokens": read, "output_tokens": output}})
    }

    /// The same answer as Anthropic streams it; text and tool input cut into `pieces`-sized
    /// deltas.
    fn sse(&self, pieces: usize) -> Vec<u8> {
        let mut out = String::new();
        let mut event = |name: &str, data: Value| out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
        let [input, creation, read, output] = self.usage;
        event("message_start", json!({"type": "message_start", "message": {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": input, "cache_creation_input_tokens": creation, "cache_read_input_tokens": read, "output_tokens": 1}}}));
        event("ping", json!({"type": "ping"}));
        let split = |s: &str| -> Vec<String> {
            let chars: Vec<char> = s.chars().collect();
            chars.chunks(pieces.max(1)).map(|c| c.iter().collect()).collect()
        };
        for (i, b) in self.blocks.iter().enumerate() {
            match b {
                Block::Text(t) => {
                    event("content_block_start", json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}));
                    for piece in split(t) {
                        event("content_block_delta", json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": piece}}));
                    }
                }
                Block::Tool(id, name, input) => {
                    event("content_block_start", json!({"type": "content_block_start", "index": i, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}));
                    event("content_block_delta", json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": ""}}));
                    for piece in split(&input.to_string()) {
                        event("content_block_delta", json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": piece}}));
                    }
                }
                Block::Thinking(t) => {
                    event("content_block_start", json!({"type": "content_block_start", "index": i, "content_block": {"type": "thinking", "thinking": ""}}));
                    event("content_block_delta", json!({"type": "content_block_delta", "index": i, "delta": {"type": "thinking_delta", "thinking": t}}));
                    event("content_block_delta", json!({"type": "content_block_delta", "index": i, "delta": {"type": "signature_delta", "signature": "sig"}}));
                }
            }
            event("content_block_stop", json!({"type": "content_block_stop", "index": i}));
        }
        event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": self.stop_reason, "stop_sequence": null}, "usage": {"output_tokens": output}}));
        event("message_stop", json!({"type": "message_stop"}));
        out.into_bytes()
    }

    fn text(&self) -> String {
        self.blocks.iter().filter_map(|b| if let Block::Text(t) = b { Some(t.as_str()) } else { None }).collect()
    }

    fn tools(&self) -> Vec<(String, String, Value)> {
        self.blocks.iter().filter_map(|b| if let Block::Tool(id, n, i) = b { Some((id.clone(), n.clone(), i.clone())) } else { None }).collect()
    }
}

fn finish(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

fn openai_usage(usage: [u64; 4]) -> Value {
    let [input, creation, read, output] = usage;
    let prompt = input + creation + read;
    json!({"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output, "prompt_tokens_details": {"cached_tokens": read}})
}

/// Cuts `bytes` at the given points (any byte, inside UTF-8 characters and CRLFs too).
fn cut(bytes: &[u8], mut points: Vec<usize>) -> Vec<&[u8]> {
    points.iter_mut().for_each(|p| *p %= bytes.len() + 1);
    points.sort_unstable();
    points.dedup();
    let mut chunks = Vec::new();
    let mut start = 0;
    for p in points.into_iter().chain([bytes.len()]) {
        chunks.push(&bytes[start..p]);
        start = p;
    }
    chunks
}

/// A streamed answer as a client reads it: text, tool calls (id, name, arguments) by index,
/// the finish reason, and the usage chunk.
type ReadBack = (String, Vec<(String, String, String)>, Option<String>, Option<Value>);

/// The OpenAI stream read back like a client does.
fn read_stream(out: &[u8]) -> ReadBack {
    let text = std::str::from_utf8(out).unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).map(|e| e.strip_prefix("data: ").unwrap()).collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let (mut content, mut calls, mut finish, mut usage) = (String::new(), Vec::<(String, String, String)>::new(), None, None);
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        if v["choices"].as_array().unwrap().is_empty() {
            usage = Some(v["usage"].clone());
            continue;
        }
        let choice = &v["choices"][0];
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
        let delta = &choice["delta"];
        content.push_str(delta["content"].as_str().unwrap_or_default());
        for c in delta["tool_calls"].as_array().into_iter().flatten() {
            let i = c["index"].as_u64().unwrap() as usize;
            if i == calls.len() {
                calls.push((c["id"].as_str().unwrap().into(), c["function"]["name"].as_str().unwrap().into(), String::new()));
            }
            calls[i].2.push_str(c["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    (content, calls, finish, usage)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn an_answer_as_json_keeps_text_tool_calls_finish_and_usage(a in answer()) {
        let out = from_anthropic::completion(a.json().to_string().as_bytes(), 7).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(&v["id"], &json!(a.id));
        prop_assert_eq!(&v["model"], &json!(a.model));
        let message = &v["choices"][0]["message"];
        let tools = a.tools();
        let want_content = if a.text().is_empty() && !tools.is_empty() { Value::Null } else { json!(a.text()) };
        prop_assert_eq!(&message["content"], &want_content);
        let calls: Vec<(String, String, Value)> = message["tool_calls"].as_array().into_iter().flatten().map(|c| {
            assert_eq!(c["type"], "function");
            (c["id"].as_str().unwrap().into(), c["function"]["name"].as_str().unwrap().into(), serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap())
        }).collect();
        prop_assert_eq!(calls, tools);
        prop_assert_eq!(&v["choices"][0]["finish_reason"], &json!(finish(a.stop_reason)));
        prop_assert_eq!(&v["usage"], &openai_usage(a.usage));
    }

    #[test]
    fn an_answer_streamed_in_any_chunks_says_what_the_json_answer_says(
        a in answer(),
        pieces in 1usize..8,
        points in prop::collection::vec(any::<usize>(), 0..40),
        include_usage in any::<bool>(),
    ) {
        let sse = a.sse(pieces);
        let mut t = ChunkStream::new(7, include_usage);
        let mut out = Vec::new();
        for chunk in cut(&sse, points) {
            t.push(chunk, &mut out);
        }
        prop_assert!(t.is_done(), "message_stop ends the stream");
        let (content, calls, finish_reason, usage) = read_stream(&out);
        prop_assert_eq!(content, a.text());
        let calls: Vec<(String, String, Value)> = calls.into_iter().map(|(id, n, args)| (id, n, serde_json::from_str(&args).unwrap())).collect();
        prop_assert_eq!(calls, a.tools());
        prop_assert_eq!(finish_reason.as_deref(), Some(finish(a.stop_reason)));
        prop_assert_eq!(usage, include_usage.then(|| openai_usage(a.usage)));
        let expected = from_anthropic::Usage { input_tokens: a.usage[0], cache_creation_input_tokens: a.usage[1], cache_read_input_tokens: a.usage[2], output_tokens: a.usage[3] };
        prop_assert_eq!(t.usage(), expected);
    }
}

#[test]
fn the_generators_reach_every_supported_field() {
    // A property over a generator that never produces a field proves nothing about it.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen: Map<String, Value> = Map::new();
    for _ in 0..400 {
        let r = request().new_tree(&mut runner).unwrap().current();
        for (k, _) in r.as_object().unwrap() {
            seen.insert(k.clone(), Value::Null);
        }
        for m in r["messages"].as_array().unwrap() {
            seen.insert(format!("role:{}", m["role"].as_str().unwrap()), Value::Null);
            if m.get("tool_calls").is_some() {
                seen.insert("tool_calls".into(), Value::Null);
            }
        }
    }
    for field in ["model", "messages", "temperature", "top_p", "stop", "max_tokens", "max_completion_tokens", "stream", "stream_options", "tools", "tool_choice",
                  "parallel_tool_calls", "user", "n", "presence_penalty", "frequency_penalty", "logprobs", "store", "response_format",
                  "role:system", "role:developer", "role:user", "role:assistant", "role:tool", "tool_calls"] {
        assert!(seen.contains_key(field), "the request generator never produced {field}");
    }
}
