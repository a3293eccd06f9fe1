//! What the filter reads from a request body, and the one change it makes to it.

use serde::Deserialize;
use serde_json::Value;

/// Which provider API a request calls, from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    ChatCompletions,
    Responses,
    Messages,
    Other,
}

impl Api {
    pub fn of_path(path: &[u8]) -> Api {
        let path = filter_common::http::path_only(path);
        let path = path.strip_suffix(b"/").unwrap_or(path);
        if path.ends_with(b"/chat/completions") {
            Api::ChatCompletions
        } else if path.ends_with(b"/responses") {
            Api::Responses
        } else if path.ends_with(b"/messages") {
            Api::Messages
        } else {
            Api::Other
        }
    }
}

#[derive(Deserialize, Debug, Default)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// The fields of an OpenAI or Anthropic request body that budgets need. Types are loose on
/// purpose: a field of the wrong type is treated as absent rather than failing the read.
#[derive(Deserialize, Debug, Default)]
struct Fields {
    model: Option<Value>,
    max_tokens: Option<Value>,
    max_completion_tokens: Option<Value>,
    max_output_tokens: Option<Value>,
    stream: Option<Value>,
    /// `Some(Null)` for `"stream_options": null`, which must not get a second member.
    #[serde(default, deserialize_with = "present")]
    stream_options: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A request body as the filter understood it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestInfo {
    pub model: Option<String>,
    /// `max_tokens`, `max_completion_tokens` or `max_output_tokens`.
    pub max_output: Option<u64>,
    pub stream: bool,
    /// `stream_options.include_usage` is already true.
    pub includes_usage: bool,
    /// `stream_options` is present (an object or not).
    pub has_stream_options: bool,
}

/// Longest model name kept; longer names are not real and are cut.
pub const MAX_MODEL: usize = 128;

/// Reads a JSON request body; `None` when it is not a JSON object.
pub fn read(body: &[u8]) -> Option<RequestInfo> {
    let fields: Fields = serde_json::from_slice(body).ok()?;
    let model = match fields.model {
        Some(Value::String(m)) if !m.is_empty() => Some(truncate(m)),
        _ => None,
    };
    let max_output = [fields.max_tokens, fields.max_completion_tokens, fields.max_output_tokens]
        .into_iter()
        .flatten()
        .find_map(|v| v.as_u64());
    let stream = matches!(fields.stream, Some(Value::Bool(true)));
    let has_stream_options = fields.stream_options.is_some();
    let includes_usage = fields
        .stream_options
        .and_then(|v| serde_json::from_value::<StreamOptions>(v).ok())
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    Some(RequestInfo { model, max_output, stream, includes_usage, has_stream_options })
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MODEL {
        let mut end = MAX_MODEL;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Whether a streaming Chat Completions request needs `stream_options.include_usage` added.
pub fn needs_usage_injection(api: Api, info: &RequestInfo) -> bool {
    api == Api::ChatCompletions && info.stream && !info.includes_usage
}

/// The body with `stream_options.include_usage: true`, or `None` if it cannot be rewritten.
/// Without `stream_options` the member is spliced in after the opening brace (the rest of the
/// body is left byte for byte); with one, the body is re-serialized.
pub fn inject_usage(body: &[u8], info: &RequestInfo) -> Option<Vec<u8>> {
    const MEMBER: &[u8] = br#""stream_options":{"include_usage":true}"#;
    if !info.has_stream_options {
        let open = body.iter().position(|b| !b.is_ascii_whitespace())?;
        if body[open] != b'{' {
            return None;
        }
        let rest = &body[open + 1..];
        let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
        let mut out = Vec::with_capacity(body.len() + MEMBER.len() + 1);
        out.extend_from_slice(&body[..=open]);
        out.extend_from_slice(MEMBER);
        if !empty {
            out.push(b',');
        }
        out.extend_from_slice(rest);
        return Some(out);
    }
    let mut value: Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object_mut()?;
    match object.get_mut("stream_options") {
        Some(Value::Object(options)) => {
            options.insert("include_usage".into(), Value::Bool(true));
        }
        _ => {
            object.insert("stream_options".into(), serde_json::json!({"include_usage": true}));
        }
    }
    serde_json::to_vec(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_of_each_api() {
        let info = |model: Option<&str>, max_output: Option<u64>, stream: bool, includes_usage: bool, has: bool| {
            Some(RequestInfo { model: model.map(str::to_string), max_output, stream, includes_usage, has_stream_options: has })
        };
        let cases: Vec<(&str, Option<RequestInfo>)> = vec![
            (r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}"#, info(Some("gpt-4o"), Some(100), false, false, false)),
            (r#"{"model": "o3", "max_completion_tokens": 5, "stream": true, "stream_options": {"include_usage": true}}"#, info(Some("o3"), Some(5), true, true, true)),
            (r#"{"model": "gpt-4o", "input": "x", "max_output_tokens": 7, "stream": true}"#, info(Some("gpt-4o"), Some(7), true, false, false)),
            (r#"{"model": "claude-sonnet-4-5", "max_tokens": 1024, "system": "s", "messages": []}"#, info(Some("claude-sonnet-4-5"), Some(1024), false, false, false)),
            (r#"{"model": 5, "max_tokens": "100", "stream": "true", "stream_options": null}"#, info(None, None, false, false, true)),
            (r#"{"model": "", "max_tokens": -3, "stream_options": {"include_usage": false}}"#, info(None, None, false, false, true)),
            (r#"{}"#, info(None, None, false, false, false)),
            ("[1, 2]", None),
            ("not json", None),
            ("", None),
            ("{\"model\": \"\u{e9}\"", None),
        ];
        for (body, want) in cases {
            assert_eq!(read(body.as_bytes()), want, "{body}");
        }
        let long = format!(r#"{{"model": "{}"}}"#, "é".repeat(100));
        let m = read(long.as_bytes()).unwrap().model.unwrap();
        assert!(m.len() <= MAX_MODEL && m.chars().all(|c| c == 'é'));
    }

    #[test]
    fn api_from_path() {
        for (path, want) in [
            (&b"/v1/chat/completions"[..], Api::ChatCompletions),
            (b"/openai/v1/chat/completions?api-version=1", Api::ChatCompletions),
            (b"/v1/responses", Api::Responses),
            (b"/v1/messages/", Api::Messages),
            (b"/v1/embeddings", Api::Other),
            (b"", Api::Other),
        ] {
            assert_eq!(Api::of_path(path), want, "{path:?}");
        }
    }

    fn injected(body: &str) -> serde_json::Value {
        let info = read(body.as_bytes()).unwrap();
        assert!(needs_usage_injection(Api::ChatCompletions, &info), "{body}");
        let out = inject_usage(body.as_bytes(), &info).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
        assert_eq!(v["stream_options"]["include_usage"], true, "{body}");
        let again = read(&out).unwrap();
        assert!(!needs_usage_injection(Api::ChatCompletions, &again));
        v
    }

    #[test]
    fn injects_include_usage_keeping_the_rest() {
        let v = injected(r#"  {"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "h\u00e9 \"q\""}]}"#);
        assert_eq!(v["messages"][0]["content"], "hé \"q\"");
        assert_eq!(v["model"], "gpt-4o");
        let v = injected(r#"{"stream": true, "stream_options": {"include_usage": false, "other": 1}}"#);
        assert_eq!(v["stream_options"]["other"], 1);
        injected(r#"{"stream": true, "stream_options": null}"#);
        injected(r#"{"stream": true, "stream_options": "x"}"#);
        // The splice keeps the original bytes after the brace.
        let body = br#"{"stream":true,"messages":[]}"#;
        let out = inject_usage(body, &read(body).unwrap()).unwrap();
        assert_eq!(out, br#"{"stream_options":{"include_usage":true},"stream":true,"messages":[]}"#);
    }

    #[test]
    fn injection_applies_only_to_streaming_chat_completions() {
        let streaming = read(br#"{"stream": true}"#).unwrap();
        let plain = read(br#"{"stream": false}"#).unwrap();
        let has = read(br#"{"stream": true, "stream_options": {"include_usage": true}}"#).unwrap();
        assert!(needs_usage_injection(Api::ChatCompletions, &streaming));
        assert!(!needs_usage_injection(Api::Responses, &streaming));
        assert!(!needs_usage_injection(Api::Messages, &streaming));
        assert!(!needs_usage_injection(Api::ChatCompletions, &plain));
        assert!(!needs_usage_injection(Api::ChatCompletions, &has));
        assert_eq!(inject_usage(b"[1]", &RequestInfo::default()), None);
        assert_eq!(inject_usage(b"{}", &RequestInfo::default()).unwrap(), br#"{"stream_options":{"include_usage":true}}"#);
    }
}
