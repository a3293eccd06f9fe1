//! The echo upstream ("task-api"): answers every request with what it received, as JSON.

use super::{serve, serve_on, MockResponse, MockServer, RecordedRequest};
use serde_json::{json, Map, Value};

/// The JSON an echo upstream answers with.
pub fn describe(name: &str, r: &RecordedRequest) -> Value {
    let mut headers = Map::new();
    for (k, v) in &r.headers {
        match headers.get_mut(k) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(v);
            }
            _ => {
                headers.insert(k.clone(), Value::String(v.clone()));
            }
        }
    }
    json!({
        "upstream": name,
        "method": r.method,
        "path": r.path,
        "headers": headers,
        "body": String::from_utf8_lossy(&r.body),
    })
}

fn answer(name: &str, r: &RecordedRequest) -> MockResponse {
    MockResponse::json(200, &describe(name, r)).with_header("x-upstream", name)
}

/// An echo upstream named `name` (the name comes back in `x-upstream` and in the body).
pub fn start(name: &str) -> MockServer {
    let owned = name.to_string();
    serve(name, move |r| answer(&owned, r))
}

pub fn start_on(name: &str, address: &str) -> std::io::Result<MockServer> {
    let owned = name.to_string();
    serve_on(name, address, move |r| answer(&owned, r))
}
