//! Error bodies in the shape OpenAI clients parse, whoever produced the error: this filter, a
//! provider (OpenAI-compatible or Anthropic), or Envoy itself (a reset, a timeout, no healthy
//! upstream). A provider's credentials never reach the client through an error.

use crate::config::{Schema, Secret};
use filter_common::Reply;
use serde_json::{json, Value};

/// `{"error": {"message", "type", "param", "code"}}`.
pub fn body(error_type: &str, code: Option<&str>, param: Option<&str>, message: &str) -> Value {
    json!({"error": {"message": message, "type": error_type, "param": param, "code": code}})
}

/// A 400 the client can act on: what in its request could not be taken.
pub fn invalid_request(code: &str, param: Option<&str>, message: &str) -> Reply {
    Reply::json(400, &body("invalid_request_error", Some(code), param, message))
}

/// The OpenAI error type for a status, for errors that came without one.
pub fn type_for_status(status: u16) -> &'static str {
    match status {
        400 | 404 | 409 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "requests",
        _ => "server_error",
    }
}

/// What a provider's error becomes for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderError {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Status and body the client gets for a provider's error answer (`status` >= 400).
///
/// - 401/403 mean the gateway's key for that provider was refused: the client can do nothing
///   about it, and the provider's message may echo part of the key. The client gets 502
///   `provider_auth_failed` (a 5xx, so the route's retry policy may try the fallback).
/// - Anthropic error bodies are mapped onto OpenAI's shape; OpenAI-shaped bodies are kept.
/// - Any occurrence of the key in a message is replaced by `[redacted]`.
pub fn from_provider(schema: Schema, provider: &str, key: &Secret, status: u16, raw: &[u8]) -> ProviderError {
    if status == 401 || status == 403 {
        let message = format!("provider `{provider}` refused the gateway's credentials (status {status}); the gateway's configuration must be fixed");
        return ProviderError { status: 502, body: body("server_error", Some("provider_auth_failed"), None, &message).to_string().into_bytes() };
    }
    let parsed: Option<Value> = serde_json::from_slice(raw).ok();
    let error = match (schema, parsed) {
        (Schema::Anthropic, Some(v)) if v["error"]["type"].is_string() => {
            let kind = v["error"]["type"].as_str().unwrap_or_default();
            let message = v["error"]["message"].as_str().unwrap_or_default();
            let (error_type, code) = anthropic_type(kind, status);
            body(error_type, code, None, &scrub(message, key))
        }
        (Schema::OpenAi, Some(v)) if v["error"].is_object() => {
            let mut v = v;
            // Every string, not only the message: a provider may echo the key in any field
            // (found by fuzzing: `param`, or a misspelt `message`).
            scrub_all(&mut v, key);
            if !v["error"]["message"].is_string() {
                v["error"]["message"] = json!(format!("provider `{provider}` answered status {status}"));
            }
            for field in ["type", "param", "code"] {
                if v["error"].get(field).is_none() {
                    v["error"][field] = Value::Null;
                }
            }
            if v["error"]["type"].is_null() {
                v["error"]["type"] = json!(type_for_status(status));
            }
            v
        }
        _ => body(
            type_for_status(status),
            Some("provider_error"),
            None,
            &format!("provider `{provider}` answered status {status} without an error body the gateway understands"),
        ),
    };
    ProviderError { status, body: error.to_string().into_bytes() }
}

/// Anthropic's error types (docs: API errors) onto OpenAI's type and code.
pub fn anthropic_type(kind: &str, status: u16) -> (&'static str, Option<&'static str>) {
    match kind {
        "invalid_request_error" => ("invalid_request_error", None),
        "authentication_error" => ("authentication_error", Some("invalid_api_key")),
        "permission_error" => ("permission_error", None),
        "not_found_error" => ("invalid_request_error", Some("not_found")),
        "request_too_large" => ("invalid_request_error", Some("request_too_large")),
        "rate_limit_error" => ("requests", Some("rate_limit_exceeded")),
        "billing_error" => ("insufficient_quota", Some("insufficient_quota")),
        "api_error" => ("server_error", None),
        "overloaded_error" => ("server_error", Some("overloaded")),
        "timeout_error" => ("server_error", Some("timeout")),
        _ => (type_for_status(status), None),
    }
}

/// The key, if a message contains it, replaced.
pub fn scrub(message: &str, key: &Secret) -> String {
    let key = key.expose();
    if key.is_empty() || !message.contains(key) {
        return message.to_string();
    }
    message.replace(key, "[redacted]")
}

/// [`scrub`] on every string of a JSON value, object keys included.
fn scrub_all(value: &mut Value, key: &Secret) {
    match value {
        Value::String(s) => *s = scrub(s, key),
        Value::Array(items) => items.iter_mut().for_each(|v| scrub_all(v, key)),
        Value::Object(map) => {
            *map = std::mem::take(map)
                .into_iter()
                .map(|(k, mut v)| {
                    scrub_all(&mut v, key);
                    (scrub(&k, key), v)
                })
                .collect();
        }
        _ => {}
    }
}

/// The body for an error response that did not come as JSON (Envoy's own local replies:
/// `upstream connect error or disconnect/reset before headers...`, `upstream request timeout`,
/// `no healthy upstream`; a `direct_response`; a proxy's HTML page). A body that already is
/// an OpenAI error is kept; other text is kept in the message, cut to 256 bytes.
pub fn from_plain(status: u16, text: &[u8]) -> Vec<u8> {
    if let Ok(v) = serde_json::from_slice::<Value>(text) {
        if v["error"]["message"].is_string() {
            return text.to_vec();
        }
    }
    let snippet = String::from_utf8_lossy(&text[..text.len().min(256)]);
    let snippet = snippet.trim();
    let code = match status {
        503 => "upstream_unavailable",
        504 => "upstream_timeout",
        _ => "upstream_error",
    };
    let message = if snippet.is_empty() {
        format!("the gateway could not get an answer from any provider (status {status})")
    } else {
        format!("the gateway could not get an answer from any provider (status {status}): {snippet}")
    };
    body(type_for_status(status), Some(code), None, &message).to_string().into_bytes()
}

/// True for a `content-type` that is JSON (`application/json`, `application/problem+json`).
pub fn is_json(content_type: Option<&[u8]>) -> bool {
    let Some(ct) = content_type else { return false };
    let media = ct.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
    media.eq_ignore_ascii_case(b"application/json") || (media.len() > 5 && media[media.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Secret {
        let crate::config::Config::Upstream(c) = crate::config::Config::compile(
            filter_common::config::parse_json(br#"{"role": "upstream", "providers": [{"name": "o", "schema": "openai", "host": "h", "apiKey": {"inline": "sk-abc123"}}]}"#).unwrap(),
            &|_| None,
        )
        .unwrap() else {
            panic!()
        };
        c.providers[0].key.clone()
    }

    fn json(e: &ProviderError) -> Value {
        serde_json::from_slice(&e.body).unwrap()
    }

    #[test]
    fn anthropic_errors_become_openai_errors() {
        // Bodies as in Anthropic's "Errors" documentation.
        let cases: [(u16, &str, &str, Value); 7] = [
            (400, "invalid_request_error", "max_tokens: Field required", json!(null)),
            (404, "not_found_error", "model: claude-x", json!("not_found")),
            (413, "request_too_large", "Request exceeds the maximum allowed number of bytes.", json!("request_too_large")),
            (429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit", json!("rate_limit_exceeded")),
            (500, "api_error", "Internal server error", json!(null)),
            (529, "overloaded_error", "Overloaded", json!("overloaded")),
            (418, "teapot_error", "new type", json!(null)),
        ];
        for (status, kind, message, code) in cases {
            let raw = json!({"type": "error", "error": {"type": kind, "message": message}}).to_string();
            let e = from_provider(Schema::Anthropic, "anthropic", &key(), status, raw.as_bytes());
            assert_eq!(e.status, status, "{kind}");
            let v = json(&e);
            assert_eq!(v["error"]["message"], message);
            assert_eq!(v["error"]["code"], code, "{kind}");
            assert!(v["error"]["param"].is_null());
            assert!(v["error"]["type"].is_string());
        }
        let v = json(&from_provider(Schema::Anthropic, "a", &key(), 429, br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#));
        assert_eq!(v["error"]["type"], "requests");
    }

    #[test]
    fn credentials_failures_never_echo_the_provider_message() {
        let raw = br#"{"error": {"message": "Incorrect API key provided: sk-abc123. You can find your API key at https://platform.openai.com/account/api-keys.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}"#;
        for status in [401, 403] {
            let e = from_provider(Schema::OpenAi, "openai", &key(), status, raw);
            assert_eq!(e.status, 502);
            let text = String::from_utf8(e.body.clone()).unwrap();
            assert!(!text.contains("sk-abc"), "{text}");
            assert_eq!(json(&e)["error"]["code"], "provider_auth_failed");
        }
        let e = from_provider(Schema::Anthropic, "anthropic", &key(), 401, br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#);
        assert_eq!(e.status, 502);
    }

    #[test]
    fn keys_are_scrubbed_and_openai_errors_kept() {
        let raw = br#"{"error": {"message": "quota for sk-abc123 exceeded", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}"#;
        let e = from_provider(Schema::OpenAi, "openai", &key(), 429, raw);
        assert_eq!(e.status, 429);
        let v = json(&e);
        assert_eq!(v["error"]["message"], "quota for [redacted] exceeded");
        assert_eq!(v["error"]["code"], "insufficient_quota");
        // The key anywhere in the error, not only in its message (found by fuzzing).
        let raw = br#"{"error": {"messalge": "Incorrect API key provided: sk-abc123.", "param": ["sk-abc123"], "sk-abc123": 1, "code": "x"}}"#;
        let e = from_provider(Schema::OpenAi, "openai", &key(), 400, raw);
        let text = String::from_utf8(e.body.clone()).unwrap();
        assert!(!text.contains("sk-abc123"), "{text}");
        let v = json(&e);
        assert_eq!(v["error"]["param"], json!(["[redacted]"]));
        assert_eq!(v["error"]["message"], "provider `openai` answered status 400", "a message is always there");
        // A partial error object gets the missing fields.
        let v = json(&from_provider(Schema::OpenAi, "openai", &key(), 500, br#"{"error": {"message": "boom"}}"#));
        assert_eq!(v, json!({"error": {"message": "boom", "type": "server_error", "param": null, "code": null}}));
    }

    #[test]
    fn unreadable_error_bodies_get_a_generic_error() {
        for (schema, raw) in [(Schema::OpenAi, &b"<html>502 Bad Gateway</html>"[..]), (Schema::Anthropic, b"{\"detail\": 1}"), (Schema::Anthropic, b"")] {
            let e = from_provider(schema, "p", &key(), 502, raw);
            assert_eq!(e.status, 502);
            let v = json(&e);
            assert_eq!(v["error"]["code"], "provider_error");
            assert_eq!(v["error"]["type"], "server_error");
        }
    }

    #[test]
    fn envoy_local_replies_become_openai_errors() {
        let v: Value = serde_json::from_slice(&from_plain(503, b"upstream connect error or disconnect/reset before headers. reset reason: connection termination")).unwrap();
        assert_eq!(v["error"]["code"], "upstream_unavailable");
        assert_eq!(v["error"]["type"], "server_error");
        assert!(v["error"]["message"].as_str().unwrap().ends_with("reset reason: connection termination"));
        let v: Value = serde_json::from_slice(&from_plain(504, b"upstream request timeout")).unwrap();
        assert_eq!(v["error"]["code"], "upstream_timeout");
        let long = vec![b'x'; 10_000];
        assert!(from_plain(502, &long).len() < 600);
        let v: Value = serde_json::from_slice(&from_plain(429, b"\xff\xfe")).unwrap();
        assert_eq!(v["error"]["type"], "requests");
        // An OpenAI error sent with the wrong content type is kept as it is.
        let already = br#"{"error": {"message": "no route", "type": "invalid_request_error", "param": null, "code": "no_route"}}"#;
        assert_eq!(from_plain(404, already), already.to_vec());
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(Some(b"application/json")));
        assert!(is_json(Some(b"Application/JSON; charset=utf-8")));
        assert!(is_json(Some(b"application/problem+json")));
        assert!(!is_json(Some(b"text/plain")));
        assert!(!is_json(Some(b"text/event-stream")));
        assert!(!is_json(None));
    }
}
