//! A small blocking HTTP client for tests (ureq), which never treats a status as an error.

use anyhow::Result;
use std::io::Read;
use std::sync::OnceLock;
use std::time::Duration;

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .max_idle_connections_per_host(16)
            .build()
            .new_agent()
    })
}

/// A complete response.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; `Null` when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

fn collect(mut response: ureq::http::Response<ureq::Body>) -> Result<Resp> {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let mut body = Vec::new();
    response.body_mut().as_reader().read_to_end(&mut body)?;
    Ok(Resp { status, headers, body })
}

/// GET with extra headers.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Result<Resp> {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    collect(req.call()?)
}

/// POST a body with extra headers.
pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Resp> {
    let mut req = agent().post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    collect(req.send(body)?)
}

/// POST JSON.
pub fn post_json(url: &str, headers: &[(&str, &str)], body: &serde_json::Value) -> Result<Resp> {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    post(url, &all, body.to_string().as_bytes())
}

/// A response whose body is read as it arrives.
pub struct Streaming {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Box<dyn Read + Send>,
}

impl Streaming {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// POST and hand back the status, headers and a reader over the body as it arrives.
pub fn post_streaming(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Streaming> {
    let mut req = agent().post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = req.send(body)?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    Ok(Streaming { status, headers, body: Box::new(response.into_body().into_reader()) })
}
