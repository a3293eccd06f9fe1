//! Anthropic Messages responses -> OpenAI Chat Completions responses: the JSON body, and the
//! SSE stream translated event by event (`chat.completion.chunk` events, a usage chunk when the
//! client asked for one, `[DONE]`).
//!
//! Usage: `prompt_tokens` = `input_tokens` + `cache_creation_input_tokens` +
//! `cache_read_input_tokens` (Anthropic counts cache reads and writes apart from input), with
//! `prompt_tokens_details.cached_tokens` = `cache_read_input_tokens`; `completion_tokens` =
//! `output_tokens`.

use crate::sse::{Oversized, SseParser, MAX_EVENT_BYTES};
use serde::Deserialize;
use serde_json::{json, Value};
use std::borrow::Cow;

/// Anthropic's token counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub output_tokens: u64,
}

/// Counts as a usage object carries them: a `message_delta` has output always, input and
/// cache counts in newer API versions (cumulative, so they replace what `message_start`
/// said). Any of them may be absent or `null`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UsageUpdate {
    input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

impl Usage {
    fn from_update(u: &UsageUpdate) -> Usage {
        let mut usage = Usage::default();
        usage.update(u);
        usage
    }

    fn update(&mut self, u: &UsageUpdate) {
        let set = |field: &mut u64, v: Option<u64>| {
            if let Some(v) = v {
                *field = v;
            }
        };
        set(&mut self.input_tokens, u.input_tokens);
        set(&mut self.cache_creation_input_tokens, u.cache_creation_input_tokens);
        set(&mut self.cache_read_input_tokens, u.cache_read_input_tokens);
        set(&mut self.output_tokens, u.output_tokens);
    }

    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.cache_creation_input_tokens).saturating_add(self.cache_read_input_tokens)
    }

    pub fn to_openai(self) -> Value {
        let prompt = self.prompt_tokens();
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output_tokens,
            "total_tokens": prompt.saturating_add(self.output_tokens),
            "prompt_tokens_details": {"cached_tokens": self.cache_read_input_tokens}
        })
    }
}

/// Anthropic `stop_reason` -> OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn, and reasons added later.
        _ => "stop",
    }
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    model: Cow<'a, str>,
    #[serde(default)]
    content: Vec<Value>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: UsageUpdate,
}

/// A non-streaming Messages response as a `chat.completion`; `Err` says why it cannot be.
pub fn completion(body: &[u8], created: u64) -> Result<Vec<u8>, String> {
    let m: Message = serde_json::from_slice(body).map_err(|e| format!("the provider's response is not a Messages object ({e})"))?;
    if m.kind != "message" {
        return Err(format!("the provider's response has type `{}`, not `message`", m.kind));
    }
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for (i, block) in m.content.iter().enumerate() {
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
            Some("tool_use") => tool_calls.push(json!({
                "id": block["id"], "type": "function",
                "function": {"name": block["name"], "arguments": block["input"].to_string()}
            })),
            // Only sent when a request enables extended thinking, which translated requests
            // never do.
            Some("thinking" | "redacted_thinking") => {}
            other => return Err(format!("content[{i}] is a `{}` block, which has no Chat Completions form", other.unwrap_or("?"))),
        }
    }
    let content = if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) };
    let mut message = json!({"role": "assistant", "content": content, "refusal": null});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let finish = m.stop_reason.as_deref().map(finish_reason);
    let out = json!({
        "id": m.id, "object": "chat.completion", "created": created, "model": m.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": Usage::from_update(&m.usage).to_openai()
    });
    serde_json::to_vec(&out).map_err(|e| e.to_string())
}

// --- streaming

#[derive(Deserialize, Default)]
#[serde(default)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    index: u64,
    #[serde(borrow)]
    message: Option<StartMessage<'a>>,
    #[serde(borrow)]
    content_block: Option<Block<'a>>,
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
    usage: Option<UsageUpdate>,
    #[serde(borrow)]
    error: Option<ErrorBody<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StartMessage<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    model: Cow<'a, str>,
    usage: UsageUpdate,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Block<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    text: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Delta<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    text: Cow<'a, str>,
    #[serde(borrow)]
    partial_json: Cow<'a, str>,
    #[serde(borrow)]
    stop_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorBody<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    message: Cow<'a, str>,
}

/// What a content block index of the Anthropic stream is on the OpenAI side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    /// The OpenAI `tool_calls[].index` this block's tool call has.
    Tool(u32),
    /// Thinking blocks: not part of a Chat Completions answer.
    Skip,
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Before `message_start`.
    Waiting,
    Streaming,
    /// `message_stop` translated (`[DONE]` sent), or an error chunk sent: nothing more.
    Done,
}

/// Translates one Anthropic SSE stream into OpenAI chunks, incrementally. Memory: the SSE
/// parser's bounded buffer, the chunk prefix, and one small entry per content block.
pub struct ChunkStream {
    parser: SseParser,
    created: u64,
    include_usage: bool,
    phase: Phase,
    /// `data: {"id":...,"object":"chat.completion.chunk","created":...,"model":...,"choices":[{"index":0,"delta":`
    prefix: Vec<u8>,
    id: String,
    model: String,
    blocks: Vec<(u64, BlockKind)>,
    next_tool: u32,
    usage: Usage,
    finish: Option<&'static str>,
}

impl ChunkStream {
    pub fn new(created: u64, include_usage: bool) -> ChunkStream {
        ChunkStream {
            parser: SseParser::new(MAX_EVENT_BYTES),
            created,
            include_usage,
            phase: Phase::Waiting,
            prefix: Vec::new(),
            id: String::new(),
            model: String::new(),
            blocks: Vec::new(),
            next_tool: 0,
            usage: Usage::default(),
            finish: None,
        }
    }

    /// The usage the provider reported so far.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Translates a chunk of the provider's stream; appends OpenAI SSE bytes to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.phase == Phase::Done {
            return;
        }
        // The parser is taken out for the call so each event is translated in place, as it
        // completes, without copying it.
        let mut parser = std::mem::take(&mut self.parser);
        let result = parser.push(input, &mut |_, data| {
            if self.phase != Phase::Done {
                self.event(data, out);
            }
        });
        self.parser = parser;
        if result == Err(Oversized) && self.phase != Phase::Done {
            self.fail(out, "server_error", "provider_stream_error", &format!("the provider sent an SSE event over {MAX_EVENT_BYTES} bytes"));
        }
    }

    /// The provider's stream ended: a stream cut before `message_stop` ends with an error
    /// chunk (and no `[DONE]`), so the client knows the answer is incomplete.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.phase != Phase::Done {
            self.fail(out, "server_error", "provider_stream_incomplete", "the provider's stream ended before the message was complete");
        }
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    fn fail(&mut self, out: &mut Vec<u8>, error_type: &str, code: &str, message: &str) {
        let error = crate::errors::body(error_type, Some(code), None, message);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(error.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
        self.phase = Phase::Done;
    }

    fn event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let event: Event = match serde_json::from_slice(data) {
            Ok(e) => e,
            Err(_) => {
                self.fail(out, "server_error", "provider_stream_error", "the provider sent an SSE event that is not JSON");
                return;
            }
        };
        match event.kind.as_ref() {
            "message_start" => {
                let Some(m) = event.message else { return };
                if self.phase != Phase::Waiting {
                    return;
                }
                self.id = m.id.into_owned();
                self.model = m.model.into_owned();
                self.usage = Usage::from_update(&m.usage);
                self.render_prefix();
                self.phase = Phase::Streaming;
                self.chunk(out, r#"{"role":"assistant","content":""}"#, None);
            }
            _ if self.phase == Phase::Waiting && event.kind != "error" && event.kind != "ping" => {
                self.fail(out, "server_error", "provider_stream_error", "the provider's stream did not start with message_start");
            }
            "content_block_start" => {
                let Some(block) = event.content_block else { return };
                let kind = match block.kind.as_ref() {
                    "text" => BlockKind::Text,
                    "tool_use" => {
                        let index = self.next_tool;
                        self.next_tool += 1;
                        BlockKind::Tool(index)
                    }
                    "thinking" | "redacted_thinking" => BlockKind::Skip,
                    other => {
                        let message = format!("the provider sent a `{other}` content block, which has no Chat Completions form");
                        self.fail(out, "server_error", "provider_stream_error", &message);
                        return;
                    }
                };
                if self.blocks.len() < 1024 {
                    self.blocks.push((event.index, kind));
                }
                match kind {
                    BlockKind::Text if !block.text.is_empty() => self.text(out, &block.text),
                    BlockKind::Tool(index) => {
                        let delta = json!({"tool_calls": [{"index": index, "id": block.id, "type": "function", "function": {"name": block.name, "arguments": ""}}]});
                        self.chunk(out, &delta.to_string(), None);
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let Some(delta) = event.delta else { return };
                let kind = self.blocks.iter().rev().find(|(i, _)| *i == event.index).map(|(_, k)| *k);
                match (delta.kind.as_ref(), kind) {
                    ("text_delta", Some(BlockKind::Text)) => self.text(out, &delta.text),
                    ("input_json_delta", Some(BlockKind::Tool(index))) if !delta.partial_json.is_empty() => {
                        let delta = json!({"tool_calls": [{"index": index, "function": {"arguments": delta.partial_json}}]});
                        self.chunk(out, &delta.to_string(), None);
                    }
                    // Thinking, signatures, citations and empty JSON fragments carry nothing
                    // a Chat Completions client reads.
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = event.delta.and_then(|d| d.stop_reason) {
                    self.finish = Some(finish_reason(&reason));
                }
                if let Some(u) = &event.usage {
                    self.usage.update(u);
                }
            }
            "message_stop" => {
                let finish = self.finish.unwrap_or("stop");
                self.chunk(out, "{}", Some(finish));
                if self.include_usage {
                    let usage = self.usage.to_openai();
                    let chunk = json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [], "usage": usage
                    });
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(chunk.to_string().as_bytes());
                    out.extend_from_slice(b"\n\n");
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.phase = Phase::Done;
            }
            "error" => {
                let (kind, message) = event.error.map(|e| (e.kind.into_owned(), e.message.into_owned())).unwrap_or_default();
                let (error_type, code) = crate::errors::anthropic_type(&kind, 500);
                let error = crate::errors::body(error_type, code, None, &message);
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(error.to_string().as_bytes());
                out.extend_from_slice(b"\n\n");
                self.phase = Phase::Done;
            }
            // ping, content_block_stop, and event types Anthropic may add later.
            _ => {}
        }
    }

    fn render_prefix(&mut self) {
        let mut p = Vec::with_capacity(128 + self.id.len() + self.model.len());
        p.extend_from_slice(b"data: {\"id\":");
        p.extend_from_slice(json_string(&self.id).as_bytes());
        p.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        p.extend_from_slice(self.created.to_string().as_bytes());
        p.extend_from_slice(b",\"model\":");
        p.extend_from_slice(json_string(&self.model).as_bytes());
        p.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":");
        self.prefix = p;
    }

    fn text(&self, out: &mut Vec<u8>, text: &str) {
        let mut delta = String::with_capacity(text.len() + 16);
        delta.push_str("{\"content\":");
        delta.push_str(&json_string(text));
        delta.push('}');
        self.chunk(out, &delta, None);
    }

    /// `data: {<prefix>DELTA,"logprobs":null,"finish_reason":F}]<,"usage":null>}\n\n`.
    fn chunk(&self, out: &mut Vec<u8>, delta: &str, finish: Option<&str>) {
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(delta.as_bytes());
        out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
        match finish {
            Some(f) => {
                out.push(b'"');
                out.extend_from_slice(f.as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]");
        if self.include_usage {
            // OpenAI: with include_usage, every chunk carries `usage: null` but the last.
            out.extend_from_slice(b",\"usage\":null");
        }
        out.extend_from_slice(b"}\n\n");
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_documented_message_becomes_a_chat_completion() {
        // Anthropic's Messages reference example response.
        let body = br#"{
          "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant",
          "model": "claude-sonnet-4-5-20250929",
          "content": [{"type": "text", "text": "Hi! My name is Claude."}],
          "stop_reason": "end_turn", "stop_sequence": null,
          "usage": {"input_tokens": 2095, "output_tokens": 503, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 100, "service_tier": "standard"}
        }"#;
        let v: Value = serde_json::from_slice(&completion(body, 1_700_000_000).unwrap()).unwrap();
        assert_eq!(v, json!({
            "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "object": "chat.completion", "created": 1_700_000_000u64,
            "model": "claude-sonnet-4-5-20250929",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi! My name is Claude.", "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2205, "completion_tokens": 503, "total_tokens": 2708, "prompt_tokens_details": {"cached_tokens": 100}}
        }));
    }

    #[test]
    fn tool_use_becomes_tool_calls() {
        // The tool-use example of Anthropic's tool use guide.
        let body = br#"{"id": "msg_01Aq9w938a90dw8q", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
          "stop_reason": "tool_use",
          "content": [
            {"type": "text", "text": "<thinking>I need to use get_weather</thinking>"},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA", "unit": "celsius"}}
          ],
          "usage": {"input_tokens": 10, "output_tokens": 20}}"#;
        let v: Value = serde_json::from_slice(&completion(body, 1).unwrap()).unwrap();
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "<thinking>I need to use get_weather</thinking>");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["id"], "toolu_01A09q90qw90lq917835lq9");
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"location": "San Francisco, CA", "unit": "celsius"}));
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
        // Only a tool call: content is null, as OpenAI sends it.
        let only = br#"{"id": "m", "type": "message", "model": "c", "stop_reason": "tool_use", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}], "usage": {}}"#;
        let v: Value = serde_json::from_slice(&completion(only, 1).unwrap()).unwrap();
        assert!(v["choices"][0]["message"]["content"].is_null());
    }

    #[test]
    fn null_or_missing_counts_are_zero() {
        let body = br#"{"id": "m", "type": "message", "model": "c", "content": [{"type": "text", "text": "x"}], "stop_reason": "end_turn",
          "usage": {"input_tokens": 3, "cache_creation_input_tokens": null, "output_tokens": 2}}"#;
        let v: Value = serde_json::from_slice(&completion(body, 1).unwrap()).unwrap();
        assert_eq!(v["usage"], json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5, "prompt_tokens_details": {"cached_tokens": 0}}));
    }

    #[test]
    fn stop_reasons() {
        for (anthropic, openai) in [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"), ("refusal", "content_filter"), ("pause_turn", "stop"), ("model_context_window_exceeded", "length")] {
            assert_eq!(finish_reason(anthropic), openai);
        }
    }

    #[test]
    fn bodies_that_are_not_messages_are_refused() {
        assert!(completion(b"{", 1).is_err());
        assert!(completion(br#"{"type": "error", "error": {}}"#, 1).is_err());
        assert!(completion(br#"{"type": "message", "content": [{"type": "server_tool_use"}]}"#, 1).unwrap_err().contains("server_tool_use"));
        let thinking = br#"{"type": "message", "id": "m", "model": "c", "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"}, {"type": "text", "text": "ok"}], "stop_reason": "end_turn", "usage": {}}"#;
        let v: Value = serde_json::from_slice(&completion(thinking, 1).unwrap()).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "ok");
    }

    /// The basic streaming example of Anthropic's "Streaming Messages" page.
    pub const TEXT_STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\": \"message_start\", \"message\": {\"id\": \"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\", \"type\": \"message\", \"role\": \"assistant\", \"content\": [], \"model\": \"claude-opus-4-1-20250805\", \"stop_reason\": null, \"stop_sequence\": null, \"usage\": {\"input_tokens\": 25, \"output_tokens\": 1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\": \"content_block_start\", \"index\": 0, \"content_block\": {\"type\": \"text\", \"text\": \"\"}}\n\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"Hello\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"!\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\": \"content_block_stop\", \"index\": 0}\n\n",
        "event: message_delta\n",
        "data: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": \"end_turn\", \"stop_sequence\":null}, \"usage\": {\"output_tokens\": 15}}\n\n",
        "event: message_stop\n",
        "data: {\"type\": \"message_stop\"}\n\n",
    );

    /// The tool-use streaming example of the same page (a text block, then a tool_use block
    /// whose input arrives as partial JSON), with cache counts in message_start.
    pub const TOOL_STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-opus-4-1-20250805\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":3,\"cache_read_input_tokens\":40,\"output_tokens\":2},\"content\":[],\"stop_reason\":null}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\", let's check the weather for San Francisco, CA:\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"San Francisco, CA\\\"\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\", \\\"unit\\\": \\\"fahrenheit\\\"}\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    pub fn translate_chunks(chunks: &[&[u8]], include_usage: bool) -> Vec<u8> {
        let mut t = ChunkStream::new(1_700_000_000, include_usage);
        let mut out = Vec::new();
        for c in chunks {
            t.push(c, &mut out);
        }
        t.finish(&mut out);
        out
    }

    fn data_of(out: &[u8]) -> Vec<String> {
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.ends_with("\n\n"), "{text}");
        text.split("\n\n").filter(|e| !e.is_empty()).map(|e| e.strip_prefix("data: ").unwrap_or_else(|| panic!("{e}")).to_string()).collect()
    }

    fn chunks_of(out: &[u8]) -> Vec<Value> {
        let data = data_of(out);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect()
    }

    #[test]
    fn the_documented_text_stream_translates() {
        let out = translate_chunks(&[TEXT_STREAM.as_bytes()], true);
        let chunks = chunks_of(&out);
        assert_eq!(chunks.len(), 5);
        assert_eq!(chunks[0], json!({"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
            "model": "claude-opus-4-1-20250805", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}], "usage": null}));
        assert_eq!(chunks[1]["choices"][0]["delta"], json!({"content": "Hello"}));
        assert_eq!(chunks[2]["choices"][0]["delta"], json!({"content": "!"}));
        assert_eq!(chunks[3]["choices"][0], json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}));
        assert_eq!(chunks[4], json!({"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
            "model": "claude-opus-4-1-20250805", "choices": [],
            "usage": {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40, "prompt_tokens_details": {"cached_tokens": 0}}}));
        // Without include_usage: no usage chunk and no `usage` field at all.
        let out = translate_chunks(&[TEXT_STREAM.as_bytes()], false);
        let chunks = chunks_of(&out);
        assert_eq!(chunks.len(), 4);
        assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    }

    #[test]
    fn streamed_tool_calls_become_tool_call_deltas() {
        let out = translate_chunks(&[TOOL_STREAM.as_bytes()], true);
        let chunks = chunks_of(&out);
        let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, "Okay, let's check the weather for San Francisco, CA:");
        let calls: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"].get("tool_calls")).collect();
        assert_eq!(calls[0], &json!([{"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]));
        let arguments: String = calls.iter().filter_map(|c| c[0]["function"]["arguments"].as_str()).collect();
        assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), json!({"location": "San Francisco, CA", "unit": "fahrenheit"}));
        assert!(calls[1..].iter().all(|c| c[0]["index"] == 0 && c[0].get("id").is_none()));
        let finish: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["finish_reason"]).filter(|f| !f.is_null()).collect();
        assert_eq!(finish, vec!["tool_calls"]);
        let usage = &chunks.last().unwrap()["usage"];
        assert_eq!(usage, &json!({"prompt_tokens": 515, "completion_tokens": 89, "total_tokens": 604, "prompt_tokens_details": {"cached_tokens": 40}}));
    }

    #[test]
    fn every_split_point_gives_the_same_translation() {
        for stream in [TEXT_STREAM, TOOL_STREAM] {
            let bytes = stream.as_bytes();
            let whole = translate_chunks(&[bytes], true);
            for cut in 0..bytes.len() {
                assert_eq!(translate_chunks(&[&bytes[..cut], &bytes[cut..]], true), whole, "cut at {cut}");
            }
            let three: Vec<&[u8]> = bytes.chunks(3).collect();
            assert_eq!(translate_chunks(&three, true), whole);
            // Multi-byte characters split between chunks.
            let accented = stream.replace("Hello", "Héllo wörld ✓");
            let ab = accented.as_bytes();
            let want = translate_chunks(&[ab], true);
            for cut in 0..ab.len() {
                assert_eq!(translate_chunks(&[&ab[..cut], &ab[cut..]], true), want);
            }
        }
    }

    #[test]
    fn newer_message_delta_usage_replaces_the_start_counts() {
        // Newer API versions repeat input and cache counts in message_delta.
        let stream = TEXT_STREAM.replace(
            r#""usage": {"output_tokens": 15}"#,
            r#""usage": {"input_tokens": 30, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 5, "output_tokens": 15}"#,
        );
        let chunks = chunks_of(&translate_chunks(&[stream.as_bytes()], true));
        assert_eq!(chunks.last().unwrap()["usage"]["prompt_tokens"], 35);
        assert_eq!(chunks.last().unwrap()["usage"]["prompt_tokens_details"]["cached_tokens"], 5);
    }

    #[test]
    fn errors_and_cut_streams_end_with_an_error_chunk() {
        // An error event mid-stream (Anthropic's docs: overloaded_error).
        let cut = TEXT_STREAM.find("event: content_block_stop").unwrap();
        let stream = format!("{}event: error\ndata: {{\"type\": \"error\", \"error\": {{\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}}}\n\n", &TEXT_STREAM[..cut]);
        let data = data_of(&translate_chunks(&[stream.as_bytes()], false));
        let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
        assert_eq!(last, json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded"}}));
        assert!(!data.iter().any(|d| d == "[DONE]"));
        // The stream just stops in the middle of an event.
        let data = data_of(&translate_chunks(&[&TEXT_STREAM.as_bytes()[..cut + 20]], false));
        let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
        assert_eq!(last["error"]["code"], "provider_stream_incomplete");
        // Garbage instead of events.
        let data = data_of(&translate_chunks(&[b"data: {not json}\n\n"], false));
        let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
        assert_eq!(last["error"]["code"], "provider_stream_error");
        // Nothing at all.
        let data = data_of(&translate_chunks(&[], false));
        assert_eq!(data.len(), 1);
        // One event far over the limit: an error, and the buffer is not kept.
        let mut t = ChunkStream::new(1, false);
        let mut out = Vec::new();
        t.push(b"data: ", &mut out);
        let big = vec![b'a'; MAX_EVENT_BYTES + 10];
        t.push(&big, &mut out);
        assert!(t.is_done());
        t.push(&big, &mut out);
        assert_eq!(data_of(&out).len(), 1);
    }

    #[test]
    fn unknown_events_are_skipped_and_thinking_is_not_sent() {
        let stream = TEXT_STREAM.replace(
            "event: content_block_start\n",
            "event: some_future_event\ndata: {\"type\": \"some_future_event\"}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":9,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":9,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"secret plan\"}}\n\nevent: content_block_start\n",
        );
        let out = translate_chunks(&[stream.as_bytes()], false);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(!text.contains("secret plan"));
        let chunks = chunks_of(&out);
        let content: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(content, "Hello!");
    }
}
