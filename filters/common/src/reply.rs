//! Local replies: the one shape every rejection takes before the glue sends it.

use serde_json::json;

/// A response the filter sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// A line for the log at warn level, for rejections an operator should see (upstream or
    /// configuration trouble). Client mistakes are logged at debug level only.
    pub warn: Option<String>,
}

impl Reply {
    /// A JSON body with `content-type: application/json`.
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            warn: None,
        }
    }

    /// A plain-text body, as Envoy's own filters send (`Jwt is missing`).
    pub fn text(status: u16, message: &str) -> Self {
        Reply {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: message.as_bytes().to_vec(),
            warn: None,
        }
    }

    /// The error shape OpenAI clients parse:
    /// `{"error": {"message", "type", "param", "code"}}`.
    pub fn openai_error(status: u16, error_type: &str, code: &str, message: &str) -> Self {
        Reply::json(
            status,
            &json!({"error": {"message": message, "type": error_type, "param": null, "code": code}}),
        )
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn with_warning(mut self, line: impl Into<String>) -> Self {
        self.warn = Some(line.into());
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_error_shape() {
        let r = Reply::openai_error(429, "rate_limit_exceeded", "token_budget_exceeded", "over")
            .with_header("retry-after", "3");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_exceeded");
        assert_eq!(v["error"]["code"], "token_budget_exceeded");
        assert_eq!(v["error"]["message"], "over");
        assert!(v["error"]["param"].is_null());
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(r.header("retry-after"), Some("3"));
    }
}
