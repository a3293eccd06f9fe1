//! OpenAI Chat Completions request -> Anthropic Messages request.
//!
//! Every field of the OpenAI request is either translated, accepted because it asks for the
//! default (`n: 1`, `presence_penalty: 0`, `null`), or rejected with a 400 that names it:
//! nothing is dropped silently. See the README's translation table.

use crate::config::Provider;
use crate::errors::invalid_request;
use filter_common::Reply;
use serde_json::{json, Map, Value};

/// The translated request and what the response side needs to know about it.
#[derive(Debug)]
pub struct Translated {
    pub body: Vec<u8>,
    pub stream: bool,
    /// `stream_options.include_usage`: the client wants a final usage chunk.
    pub include_usage: bool,
}

struct Ctx<'a> {
    provider: &'a str,
}

impl Ctx<'_> {
    fn reject(&self, param: &str, problem: &str) -> Reply {
        invalid_request(
            "unsupported_parameter",
            Some(param),
            &format!("`{param}` {problem}; the request went to provider `{}` (Anthropic Messages API), which cannot take it", self.provider),
        )
    }
}

/// Translates a Chat Completions body for `provider` (its `modelNameOverride` and
/// `defaultMaxTokens` apply).
pub fn request(body: &[u8], provider: &Provider) -> Result<Translated, Reply> {
    let cx = Ctx { provider: &provider.name };
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid_request("invalid_json", None, &format!("We could not parse the JSON body of your request ({e}).")))?;
    let Value::Object(fields) = value else {
        return Err(invalid_request("invalid_request_body", None, "The request body must be a JSON object."));
    };

    let mut out = Map::new();
    let mut stream = false;
    let mut include_usage = false;
    let mut max_tokens: Option<u64> = None;
    let mut max_completion_tokens: Option<u64> = None;
    let mut tool_choice: Option<Value> = None;
    let mut parallel_tool_calls = true;
    let mut has_tools = false;

    for (key, value) in &fields {
        if value.is_null() {
            // `null` asks for the default, which is also Anthropic's.
            continue;
        }
        match key.as_str() {
            "model" => {
                let model = value.as_str().filter(|m| !m.is_empty()).ok_or_else(|| invalid_request("invalid_type", Some("model"), "`model` must be a string."))?;
                out.insert("model".into(), json!(provider.model_override.as_deref().unwrap_or(model)));
            }
            "messages" => {
                let (system, messages) = messages(&cx, value)?;
                if !system.is_empty() {
                    out.insert("system".into(), Value::Array(system));
                }
                out.insert("messages".into(), Value::Array(messages));
            }
            "max_tokens" => max_tokens = Some(positive(&cx, key, value)?),
            "max_completion_tokens" => max_completion_tokens = Some(positive(&cx, key, value)?),
            "temperature" => {
                let t = value.as_f64().ok_or_else(|| cx.reject(key, "must be a number"))?;
                if !(0.0..=1.0).contains(&t) {
                    return Err(cx.reject(key, &format!("is {t}; Anthropic accepts 0 to 1")));
                }
                out.insert("temperature".into(), value.clone());
            }
            "top_p" => {
                let p = value.as_f64().ok_or_else(|| cx.reject(key, "must be a number"))?;
                if !(0.0..=1.0).contains(&p) {
                    return Err(cx.reject(key, "must be between 0 and 1"));
                }
                out.insert("top_p".into(), value.clone());
            }
            "stop" => {
                let stops = match value {
                    Value::String(s) => vec![json!(s)],
                    Value::Array(items) if items.iter().all(Value::is_string) => items.clone(),
                    _ => return Err(cx.reject(key, "must be a string or an array of strings")),
                };
                if !stops.is_empty() {
                    out.insert("stop_sequences".into(), Value::Array(stops));
                }
            }
            "stream" => {
                stream = value.as_bool().ok_or_else(|| cx.reject(key, "must be a boolean"))?;
                out.insert("stream".into(), json!(stream));
            }
            "stream_options" => {
                let options = value.as_object().ok_or_else(|| cx.reject(key, "must be an object"))?;
                for (option, setting) in options {
                    match option.as_str() {
                        "include_usage" => include_usage = setting.as_bool().unwrap_or(false),
                        // Padding OpenAI adds to its own stream events; nothing to translate.
                        "include_obfuscation" => {}
                        other => return Err(cx.reject(&format!("stream_options.{other}"), "is not translated")),
                    }
                }
            }
            "tools" => {
                let tools = tools(&cx, value)?;
                has_tools = !tools.is_empty();
                out.insert("tools".into(), Value::Array(tools));
            }
            "tool_choice" => tool_choice = Some(choice(&cx, value)?),
            "parallel_tool_calls" => parallel_tool_calls = value.as_bool().ok_or_else(|| cx.reject(key, "must be a boolean"))?,
            "user" => {
                let user = value.as_str().ok_or_else(|| cx.reject(key, "must be a string"))?;
                out.insert("metadata".into(), json!({"user_id": user}));
            }
            // Accepted when they ask for what Anthropic does anyway.
            "n" if value.as_u64() == Some(1) => {}
            "presence_penalty" | "frequency_penalty" if value.as_f64() == Some(0.0) => {}
            "logprobs" | "store" if value.as_bool() == Some(false) => {}
            "response_format" if value["type"] == "text" => {}
            "n" => return Err(cx.reject(key, "must be 1 (one choice per request)")),
            "presence_penalty" | "frequency_penalty" => return Err(cx.reject(key, "has no Anthropic equivalent (only 0 is accepted)")),
            "response_format" => return Err(cx.reject(key, "is only translated as {\"type\": \"text\"}")),
            other => return Err(cx.reject(other, "is not translated")),
        }
    }

    if !out.contains_key("model") {
        return Err(invalid_request("missing_model", Some("model"), "you must provide a model parameter"));
    }
    if !out.contains_key("messages") {
        return Err(invalid_request("missing_messages", Some("messages"), "`messages` is required"));
    }
    let max = max_completion_tokens.or(max_tokens).unwrap_or(provider.default_max_tokens);
    out.insert("max_tokens".into(), json!(max));
    if has_tools {
        let mut choice = tool_choice.take().unwrap_or_else(|| json!({"type": "auto"}));
        if !parallel_tool_calls && choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = json!(true);
        }
        out.insert("tool_choice".into(), choice);
    } else if let Some(choice) = tool_choice {
        // OpenAI also refuses a tool_choice without tools; let the provider say so.
        out.insert("tool_choice".into(), choice);
    }
    let body = serde_json::to_vec(&Value::Object(out)).map_err(|e| invalid_request("invalid_request_body", None, &e.to_string()))?;
    Ok(Translated { body, stream, include_usage })
}

fn positive(cx: &Ctx, key: &str, value: &Value) -> Result<u64, Reply> {
    match value.as_u64() {
        Some(n) if n > 0 => Ok(n),
        _ => Err(cx.reject(key, "must be a positive integer")),
    }
}

/// A message `content`: a string, or text parts. Other parts (images, audio, files) are not
/// translated.
fn text_parts(cx: &Ctx, at: &str, content: &Value) -> Result<Vec<String>, Reply> {
    match content {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| match (part["type"].as_str(), part["text"].as_str()) {
                (Some("text"), Some(text)) => {
                    if let Some(extra) = part.as_object().and_then(|o| o.keys().find(|k| *k != "type" && *k != "text")) {
                        return Err(cx.reject(&format!("{at}.content[{j}].{extra}"), "is not translated"));
                    }
                    Ok(text.to_string())
                }
                (Some(kind), _) => Err(cx.reject(&format!("{at}.content[{j}]"), &format!("is a `{kind}` part; only text parts are translated"))),
                _ => Err(cx.reject(&format!("{at}.content[{j}]"), "must be a content part with a `type`")),
            })
            .collect(),
        _ => Err(cx.reject(&format!("{at}.content"), "must be a string or an array of content parts")),
    }
}

fn text_blocks(texts: Vec<String>) -> Vec<Value> {
    texts.into_iter().map(|t| json!({"type": "text", "text": t})).collect()
}

/// Fields of a message other than those its role may carry.
fn check_keys(cx: &Ctx, at: &str, message: &Map<String, Value>, allowed: &[&str]) -> Result<(), Reply> {
    for (key, value) in message {
        if !value.is_null() && !allowed.contains(&key.as_str()) {
            return Err(cx.reject(&format!("{at}.{key}"), "is not translated"));
        }
    }
    Ok(())
}

/// OpenAI's messages: leading system/developer messages become Anthropic's `system` blocks;
/// tool results become `tool_result` blocks in a user turn; assistant tool calls become
/// `tool_use` blocks.
fn messages(cx: &Ctx, value: &Value) -> Result<(Vec<Value>, Vec<Value>), Reply> {
    let list = value.as_array().ok_or_else(|| cx.reject("messages", "must be an array"))?;
    let mut system = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    // True while the last output message is a user turn made of tool results.
    let mut in_tool_results = false;
    for (i, message) in list.iter().enumerate() {
        let at = format!("messages[{i}]");
        let Some(m) = message.as_object() else {
            return Err(cx.reject(&at, "must be an object"));
        };
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        match role {
            "system" | "developer" => {
                check_keys(cx, &at, m, &["role", "content"])?;
                if !out.is_empty() {
                    return Err(cx.reject(&at, "is a system message after the conversation started; Anthropic takes one system prompt before all messages"));
                }
                system.extend(text_blocks(text_parts(cx, &at, m.get("content").unwrap_or(&Value::Null))?));
            }
            "user" => {
                check_keys(cx, &at, m, &["role", "content"])?;
                let content = match m.get("content") {
                    Some(Value::String(s)) => json!(s),
                    Some(c) => Value::Array(text_blocks(text_parts(cx, &at, c)?)),
                    None => return Err(cx.reject(&format!("{at}.content"), "is required")),
                };
                out.push(json!({"role": "user", "content": content}));
                in_tool_results = false;
            }
            "assistant" => {
                check_keys(cx, &at, m, &["role", "content", "tool_calls", "refusal"])?;
                let mut blocks = match m.get("content") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(c) => text_blocks(text_parts(cx, &at, c)?.into_iter().filter(|t| !t.is_empty()).collect()),
                };
                if let Some(calls) = m.get("tool_calls").filter(|c| !c.is_null()) {
                    let calls = calls.as_array().ok_or_else(|| cx.reject(&format!("{at}.tool_calls"), "must be an array"))?;
                    for (j, call) in calls.iter().enumerate() {
                        blocks.push(tool_use(cx, &format!("{at}.tool_calls[{j}]"), call)?);
                    }
                }
                if blocks.is_empty() {
                    return Err(cx.reject(&at, "has neither content nor tool_calls"));
                }
                let content = match blocks.as_slice() {
                    [only] if only["type"] == "text" => only["text"].clone(),
                    _ => Value::Array(blocks),
                };
                out.push(json!({"role": "assistant", "content": content}));
                in_tool_results = false;
            }
            "tool" => {
                check_keys(cx, &at, m, &["role", "content", "tool_call_id"])?;
                let id = m.get("tool_call_id").and_then(Value::as_str).ok_or_else(|| cx.reject(&format!("{at}.tool_call_id"), "is required"))?;
                let text = text_parts(cx, &at, m.get("content").unwrap_or(&Value::Null))?.concat();
                let block = json!({"type": "tool_result", "tool_use_id": id, "content": text});
                // Anthropic wants all results of one assistant turn in the next user turn.
                match out.last_mut() {
                    Some(Value::Object(last)) if in_tool_results => {
                        if let Some(Value::Array(content)) = last.get_mut("content") {
                            content.push(block);
                        }
                    }
                    _ => out.push(json!({"role": "user", "content": [block]})),
                }
                in_tool_results = true;
            }
            "function" => return Err(cx.reject(&format!("{at}.role"), "`function` (deprecated) is not translated; use tool messages")),
            _ => return Err(cx.reject(&format!("{at}.role"), "must be system, developer, user, assistant or tool")),
        }
    }
    if out.is_empty() {
        return Err(cx.reject("messages", "needs at least one user or assistant message"));
    }
    Ok((system, out))
}

/// `{"id", "type": "function", "function": {"name", "arguments": "<JSON>"}}` -> `tool_use`.
fn tool_use(cx: &Ctx, at: &str, call: &Value) -> Result<Value, Reply> {
    if call["type"] != "function" {
        return Err(cx.reject(&format!("{at}.type"), "only `function` tool calls are translated"));
    }
    let id = call["id"].as_str().ok_or_else(|| cx.reject(&format!("{at}.id"), "is required"))?;
    let name = call["function"]["name"].as_str().ok_or_else(|| cx.reject(&format!("{at}.function.name"), "is required"))?;
    let arguments = call["function"]["arguments"].as_str().unwrap_or("");
    let input: Value = if arguments.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(arguments).map_err(|_| cx.reject(&format!("{at}.function.arguments"), "must be a JSON object"))?
    };
    if !input.is_object() {
        return Err(cx.reject(&format!("{at}.function.arguments"), "must be a JSON object"));
    }
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

/// OpenAI function tools -> Anthropic tools (`parameters` -> `input_schema`).
fn tools(cx: &Ctx, value: &Value) -> Result<Vec<Value>, Reply> {
    let list = value.as_array().ok_or_else(|| cx.reject("tools", "must be an array"))?;
    list.iter()
        .enumerate()
        .map(|(i, tool)| {
            let at = format!("tools[{i}]");
            if tool["type"] != "function" {
                return Err(cx.reject(&format!("{at}.type"), "only `function` tools are translated"));
            }
            let f = tool["function"].as_object().ok_or_else(|| cx.reject(&format!("{at}.function"), "is required"))?;
            let name = f.get("name").and_then(Value::as_str).ok_or_else(|| cx.reject(&format!("{at}.function.name"), "is required"))?;
            let mut out = json!({"name": name});
            for (key, v) in f {
                match key.as_str() {
                    "name" => {}
                    _ if v.is_null() => {}
                    "description" => out["description"] = v.clone(),
                    "parameters" => out["input_schema"] = v.clone(),
                    "strict" if v.as_bool() == Some(false) => {}
                    "strict" => return Err(cx.reject(&format!("{at}.function.strict"), "is not translated (only false)")),
                    other => return Err(cx.reject(&format!("{at}.function.{other}"), "is not translated")),
                }
            }
            if out.get("input_schema").is_none() {
                // OpenAI allows a function without parameters; Anthropic requires a schema.
                out["input_schema"] = json!({"type": "object", "properties": {}});
            }
            Ok(out)
        })
        .collect()
}

/// `tool_choice`: "none" | "auto" | "required" | {"type": "function", "function": {"name"}}.
fn choice(cx: &Ctx, value: &Value) -> Result<Value, Reply> {
    match value {
        Value::String(s) => match s.as_str() {
            "none" => Ok(json!({"type": "none"})),
            "auto" => Ok(json!({"type": "auto"})),
            "required" => Ok(json!({"type": "any"})),
            other => Err(cx.reject("tool_choice", &format!("`{other}` is not none, auto or required"))),
        },
        Value::Object(_) if value["type"] == "function" => {
            let name = value["function"]["name"].as_str().ok_or_else(|| cx.reject("tool_choice.function.name", "is required"))?;
            Ok(json!({"type": "tool", "name": name}))
        }
        _ => Err(cx.reject("tool_choice", "is only translated as none, auto, required or a named function")),
    }
}

/// For OpenAI-schema providers with `modelNameOverride`: the same body with `model` replaced.
pub fn override_model(body: &[u8], model: &str) -> Result<Vec<u8>, Reply> {
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid_request("invalid_json", None, &format!("We could not parse the JSON body of your request ({e}).")))?;
    let Some(fields) = value.as_object_mut() else {
        return Err(invalid_request("invalid_request_body", None, "The request body must be a JSON object."));
    };
    fields.insert("model".into(), json!(model));
    serde_json::to_vec(&value).map_err(|e| invalid_request("invalid_request_body", None, &e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RawConfig};
    use filter_common::config::parse_json;

    fn provider(extra: &str) -> Provider {
        let text = format!(r#"{{"role": "upstream", "providers": [{{"name": "anthropic", "schema": "anthropic", "host": "api.anthropic.com", "apiKey": {{"inline": "k"}}{extra}}}]}}"#);
        let raw: RawConfig = parse_json(text.as_bytes()).unwrap();
        let Config::Upstream(mut c) = Config::compile(raw, &|_| None).unwrap() else { panic!() };
        c.providers.remove(0)
    }

    fn translate(body: Value) -> Value {
        let t = request(body.to_string().as_bytes(), &provider(r#", "modelNameOverride": "claude-sonnet-4-5""#)).unwrap_or_else(|r| panic!("{}", String::from_utf8_lossy(&r.body)));
        serde_json::from_slice(&t.body).unwrap()
    }

    fn rejection(body: Value) -> (String, Value) {
        let r = request(body.to_string().as_bytes(), &provider("")).unwrap_err();
        assert_eq!(r.status, 400);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        (v["error"]["message"].as_str().unwrap().to_string(), v["error"]["param"].clone())
    }

    #[test]
    fn a_documented_chat_request_translates() {
        // OpenAI's Chat Completions reference example, with a system prompt and parameters.
        let got = translate(json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "developer", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Hello!"}
            ],
            "temperature": 0.7, "top_p": 0.9, "stop": "\n\n", "max_completion_tokens": 300,
            "user": "user-1234", "n": 1, "presence_penalty": 0, "stream": true,
            "stream_options": {"include_usage": true}, "logprobs": null
        }));
        assert_eq!(got, json!({
            "model": "claude-sonnet-4-5",
            "system": [{"type": "text", "text": "You are a helpful assistant."}],
            "messages": [{"role": "user", "content": "Hello!"}],
            "temperature": 0.7, "top_p": 0.9, "stop_sequences": ["\n\n"], "max_tokens": 300,
            "metadata": {"user_id": "user-1234"}, "stream": true
        }));
        let t = request(br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true, "stream_options": {"include_usage": true}}"#, &provider("")).unwrap();
        assert!(t.stream && t.include_usage);
        let t = request(br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}]}"#, &provider("")).unwrap();
        assert!(!t.stream && !t.include_usage);
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        assert_eq!(v["model"], "m", "no override: the client's model");
        assert_eq!(v["max_tokens"], 4096, "the documented default");
        let t = request(br#"{"model": "m", "max_tokens": 12, "messages": [{"role": "user", "content": "hi"}]}"#, &provider(r#", "defaultMaxTokens": 99"#)).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&t.body).unwrap()["max_tokens"], 12);
        let t = request(br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}]}"#, &provider(r#", "defaultMaxTokens": 99"#)).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&t.body).unwrap()["max_tokens"], 99);
    }

    #[test]
    fn multi_part_text_and_several_system_messages() {
        let got = translate(json!({"model": "m", "stop": ["END", "STOP"], "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": [{"type": "text", "text": "What is in"}, {"type": "text", "text": "this sentence?"}]},
            {"role": "assistant", "content": "Des mots."},
            {"role": "user", "content": "Merci"}
        ]}));
        assert_eq!(got["system"], json!([{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Answer in French."}]));
        assert_eq!(got["messages"], json!([
            {"role": "user", "content": [{"type": "text", "text": "What is in"}, {"type": "text", "text": "this sentence?"}]},
            {"role": "assistant", "content": "Des mots."},
            {"role": "user", "content": "Merci"}
        ]));
        assert_eq!(got["stop_sequences"], json!(["END", "STOP"]));
    }

    #[test]
    fn tools_and_tool_calls_translate_both_ways_of_the_conversation() {
        // The function-calling flow of OpenAI's guide: tools, an assistant tool call, its result.
        let got = translate(json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "user", "content": "What is the weather like in Boston and Paris today?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_abc123", "type": "function", "function": {"name": "get_current_weather", "arguments": "{\"location\": \"Boston, MA\"}"}},
                    {"id": "call_def456", "type": "function", "function": {"name": "get_current_weather", "arguments": "{\"location\": \"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_abc123", "content": "{\"temperature\": 22}"},
                {"role": "tool", "tool_call_id": "call_def456", "content": [{"type": "text", "text": "18C"}]},
                {"role": "user", "content": "Thanks"}
            ],
            "tools": [{"type": "function", "function": {
                "name": "get_current_weather", "description": "Get the current weather in a given location",
                "parameters": {"type": "object", "properties": {"location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]},
                "strict": false
            }}, {"type": "function", "function": {"name": "now"}}],
            "tool_choice": "required",
            "parallel_tool_calls": false
        }));
        assert_eq!(got["tools"], json!([
            {"name": "get_current_weather", "description": "Get the current weather in a given location",
             "input_schema": {"type": "object", "properties": {"location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]}},
            {"name": "now", "input_schema": {"type": "object", "properties": {}}}
        ]));
        assert_eq!(got["tool_choice"], json!({"type": "any", "disable_parallel_tool_use": true}));
        assert_eq!(got["messages"], json!([
            {"role": "user", "content": "What is the weather like in Boston and Paris today?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_abc123", "name": "get_current_weather", "input": {"location": "Boston, MA"}},
                {"type": "tool_use", "id": "call_def456", "name": "get_current_weather", "input": {"location": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_abc123", "content": "{\"temperature\": 22}"},
                {"type": "tool_result", "tool_use_id": "call_def456", "content": "18C"}
            ]},
            {"role": "user", "content": "Thanks"}
        ]));
    }

    #[test]
    fn tool_choices() {
        let base = |choice: Value| json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": choice});
        assert_eq!(translate(base(json!("auto")))["tool_choice"], json!({"type": "auto"}));
        assert_eq!(translate(base(json!("none")))["tool_choice"], json!({"type": "none"}));
        assert_eq!(translate(base(json!({"type": "function", "function": {"name": "f"}})))["tool_choice"], json!({"type": "tool", "name": "f"}));
        let mut no_choice = base(Value::Null);
        no_choice.as_object_mut().unwrap().remove("tool_choice");
        assert_eq!(translate(no_choice)["tool_choice"], json!({"type": "auto"}));
        let mut assistant_text_and_call = base(json!("auto"));
        assistant_text_and_call["messages"] = json!([
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "done"}
        ]);
        assert_eq!(translate(assistant_text_and_call)["messages"][1]["content"], json!([
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "c1", "name": "f", "input": {}}
        ]));
    }

    #[test]
    fn what_is_not_translated_is_rejected_by_name() {
        let user = json!([{"role": "user", "content": "hi"}]);
        let with = |key: &str, value: Value| {
            let mut body = json!({"model": "m", "messages": user.clone()});
            body[key] = value;
            body
        };
        let cases: Vec<(Value, &str, &str)> = vec![
            (with("seed", json!(7)), "seed", "is not translated"),
            (with("n", json!(2)), "n", "must be 1"),
            (with("temperature", json!(1.5)), "temperature", "Anthropic accepts 0 to 1"),
            (with("presence_penalty", json!(0.5)), "presence_penalty", "no Anthropic equivalent"),
            (with("logprobs", json!(true)), "logprobs", "is not translated"),
            (with("response_format", json!({"type": "json_object"})), "response_format", "only translated as"),
            (with("stream_options", json!({"chunk": 1})), "stream_options.chunk", "is not translated"),
            (with("max_tokens", json!(0)), "max_tokens", "positive integer"),
            (with("stop", json!(5)), "stop", "string or an array"),
            (with("tool_choice", json!({"type": "allowed_tools"})), "tool_choice", "only translated as"),
            (with("tools", json!([{"type": "custom", "custom": {"name": "x"}}])), "tools[0].type", "only `function` tools"),
            (with("tools", json!([{"type": "function", "function": {"name": "x", "strict": true}}])), "tools[0].function.strict", "only false"),
            (with("messages", json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}])), "messages[0].content[0]", "`image_url` part"),
            (with("messages", json!([{"role": "user", "name": "bob", "content": "hi"}])), "messages[0].name", "is not translated"),
            (with("messages", json!([{"role": "user", "content": "hi"}, {"role": "system", "content": "late"}])), "messages[1]", "after the conversation started"),
            (with("messages", json!([{"role": "function", "name": "f", "content": "x"}])), "messages[0].role", "deprecated"),
            (with("messages", json!([{"role": "wizard", "content": "x"}])), "messages[0].role", "must be system"),
            (with("messages", json!([{"role": "system", "content": "only system"}])), "messages", "at least one user"),
            (with("messages", json!([{"role": "assistant", "content": null}])), "messages[0]", "neither content nor tool_calls"),
            (with("messages", json!([{"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}])), "messages[0].content[0]", "`refusal` part"),
            (with("messages", json!([{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}])), "messages[0].tool_calls[0].function.arguments", "JSON object"),
            (with("messages", json!([{"role": "tool", "content": "x"}])), "messages[0].tool_call_id", "is required"),
            (with("messages", json!("hi")), "messages", "must be an array"),
        ];
        for (body, param, problem) in cases {
            let (message, got_param) = rejection(body.clone());
            assert_eq!(got_param, json!(param), "{body}");
            assert!(message.contains(problem), "{body}: {message}");
            assert!(message.contains("provider `anthropic`"), "{message}");
        }
        let r = request(b"[]", &provider("")).unwrap_err();
        assert_eq!(r.status, 400);
        let r = request(b"{\"model\": \"m\"", &provider("")).unwrap_err();
        assert!(String::from_utf8_lossy(&r.body).contains("invalid_json"));
        let r = request(br#"{"model": "m"}"#, &provider("")).unwrap_err();
        assert!(String::from_utf8_lossy(&r.body).contains("missing_messages"));
    }

    #[test]
    fn model_override_for_openai_schema_keeps_the_rest() {
        let out = override_model(br#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "seed": 3}"#, "gpt-4o-mini").unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "seed": 3}));
        assert_eq!(override_model(b"[1]", "m").unwrap_err().status, 400);
        assert_eq!(override_model(b"{", "m").unwrap_err().status, 400);
    }
}
