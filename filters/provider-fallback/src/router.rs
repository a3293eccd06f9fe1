//! The router role's decisions: which requests it reads, and the model a body names.
//!
//! Routing happens on request headers, so the glue holds the headers (`Pause`) until the body
//! is complete, sets the model header and resumes; Envoy clears the route cache when a wasm
//! filter sets a request header, so the route is chosen with the header in place.

use crate::config::RouterConfig;
use crate::errors::invalid_request;
use filter_common::http::{is_safe_header_value, path_only};
use filter_common::Reply;
use serde::Deserialize;
use std::borrow::Cow;

/// Longest model name put into a header.
pub const MAX_MODEL_LEN: usize = 256;

/// True when the router role reads this request's body: a POST to one of the paths.
pub fn applies(config: &RouterConfig, method: &[u8], path: &[u8]) -> bool {
    method == b"POST" && config.paths.iter().any(|p| p.as_bytes() == path_only(path))
}

pub fn too_large(max: usize) -> Reply {
    invalid_request("request_too_large", None, &format!("The request body is larger than the gateway's limit of {max} bytes."))
}

/// Rejects a body whose declared length is over the limit before reading any of it.
pub fn check_declared_length(content_length: Option<&[u8]>, max: usize) -> Result<(), Reply> {
    let declared = content_length.and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > max as u64 => Err(too_large(max)),
        _ => Ok(()),
    }
}

pub fn missing_body() -> Reply {
    invalid_request("missing_model", Some("model"), "you must provide a model parameter (the request has no body)")
}

#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
}

/// The model an OpenAI-style request body names, or the 400 an OpenAI client expects.
/// Only `model` is decoded; the rest of the document is checked for syntax and skipped.
pub fn model(body: &[u8]) -> Result<String, Reply> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
            return Err(invalid_request("invalid_request_body", None, "The request body must be a JSON object."));
        }
        return Err(not_json(body));
    }
    let peek: Peek = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) if e.is_data() => {
            return Err(invalid_request("invalid_type", Some("model"), "`model` must be a single string."));
        }
        Err(_) => return Err(not_json(body)),
    };
    let model = peek.model.unwrap_or_default();
    if model.is_empty() {
        return Err(invalid_request("missing_model", Some("model"), "you must provide a model parameter"));
    }
    if !is_safe_header_value(model.as_bytes(), MAX_MODEL_LEN) || model.chars().any(char::is_control) {
        return Err(invalid_request("invalid_model", Some("model"), &format!("`model` must be at most {MAX_MODEL_LEN} bytes without control characters.")));
    }
    Ok(model.into_owned())
}

fn not_json(body: &[u8]) -> Reply {
    let detail = match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Err(e) => format!(" ({e})"),
        Ok(_) => String::new(),
    };
    invalid_request("invalid_json", None, &format!("We could not parse the JSON body of your request{detail}."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn config() -> RouterConfig {
        RouterConfig { model_header: "x-ai-model".into(), paths: vec!["/v1/chat/completions".into()], max_request_bytes: 100 }
    }

    #[test]
    fn which_requests() {
        let c = config();
        assert!(applies(&c, b"POST", b"/v1/chat/completions"));
        assert!(applies(&c, b"POST", b"/v1/chat/completions?x=1"));
        assert!(!applies(&c, b"GET", b"/v1/chat/completions"));
        assert!(!applies(&c, b"POST", b"/v1/chat/completions/x"));
        assert!(!applies(&c, b"POST", b"/v1/models"));
    }

    fn error_of(r: Result<String, Reply>) -> (u16, Value) {
        let reply = r.unwrap_err();
        (reply.status, serde_json::from_slice(&reply.body).unwrap())
    }

    #[test]
    fn models_and_rejections() {
        // A request as in OpenAI's Chat Completions reference.
        let ok = br#"{"model": "gpt-4o", "messages": [{"role": "developer", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello!"}]}"#;
        assert_eq!(model(ok).unwrap(), "gpt-4o");
        assert_eq!(model(br#" {"messages": [], "model": "gpt-4o\u002dmini"}"#).unwrap(), "gpt-4o-mini");
        let cases: [(&[u8], &str, Value); 10] = [
            (b"", "invalid_json", Value::Null),
            (b"not json", "invalid_json", Value::Null),
            (br#"{"model": "gpt-4o""#, "invalid_json", Value::Null),
            (br#"{"model": "gpt-4o"} trailing"#, "invalid_json", Value::Null),
            (br#"["gpt-4o"]"#, "invalid_request_body", Value::Null),
            (br#"{"messages": []}"#, "missing_model", "model".into()),
            (br#"{"model": ""}"#, "missing_model", "model".into()),
            (br#"{"model": 4}"#, "invalid_type", "model".into()),
            (br#"{"model": "a\nb"}"#, "invalid_model", "model".into()),
            (br#"{"model": "a", "model": "b"}"#, "invalid_type", "model".into()),
        ];
        for (body, code, param) in cases {
            let (status, v) = error_of(model(body));
            assert_eq!(status, 400, "{}", String::from_utf8_lossy(body));
            assert_eq!(v["error"]["code"], code, "{}", String::from_utf8_lossy(body));
            assert_eq!(v["error"]["type"], "invalid_request_error");
            assert_eq!(v["error"]["param"], param);
        }
        let long = format!(r#"{{"model": "{}"}}"#, "m".repeat(300));
        assert_eq!(error_of(model(long.as_bytes())).1["error"]["code"], "invalid_model");
        // Bytes that are not UTF-8 are a JSON error, not a panic.
        assert_eq!(error_of(model(b"{\"model\": \"\xff\"}")).1["error"]["code"], "invalid_json");
    }

    #[test]
    fn declared_lengths() {
        assert!(check_declared_length(Some(b"100"), 100).is_ok());
        assert!(check_declared_length(None, 100).is_ok());
        assert!(check_declared_length(Some(b"junk"), 100).is_ok());
        let r = check_declared_length(Some(b"101"), 100).unwrap_err();
        assert_eq!(r.status, 400);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"]["code"], "request_too_large");
    }
}
