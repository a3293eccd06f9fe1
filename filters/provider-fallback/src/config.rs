//! provider-fallback configuration: the JSON users write, and the compiled form requests use.
//!
//! One module plays two roles, chosen by the required `role` field, because Envoy gives a
//! filter no reliable way to tell whether it runs in a listener's chain or in a cluster's
//! upstream chain. Each role accepts only its own fields.

use filter_common::config::check;
use filter_common::http::is_safe_header_value;
use filter_common::ConfigError;
use serde::Deserialize;
use serde_json::Value;
use std::fmt;

pub const DEFAULT_MODEL_HEADER: &str = "x-ai-model";
pub const DEFAULT_PATH: &str = "/v1/chat/completions";
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 4 * 1024 * 1024;
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;
/// The most a body limit may be set to: bodies are held in the VM's memory.
pub const MAX_BODY_LIMIT: u64 = 64 * 1024 * 1024;
pub const DEFAULT_PATH_PREFIX: &str = "/v1";
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";
/// `max_tokens` sent to Anthropic when the client gave none (Anthropic requires it).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawRole {
    Router,
    Upstream,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawConfig {
    pub role: RawRole,
    // Router role.
    pub model_header: Option<String>,
    pub paths: Option<Vec<String>>,
    // Both roles.
    pub max_request_bytes: Option<u64>,
    // Upstream role.
    pub providers: Option<Vec<RawProvider>>,
    pub max_response_bytes: Option<u64>,
    pub provider_header: Option<String>,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Schema {
    OpenAi,
    Anthropic,
}

// serde's lowercase of `OpenAi` is `openai`, which is what users write.

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawProvider {
    pub name: String,
    pub schema: Schema,
    pub host: String,
    pub path_prefix: Option<String>,
    /// Raw JSON, compiled by hand: a serde type error would quote the value, and the value
    /// may be a key written in the wrong place.
    pub api_key: Value,
    pub model_name_override: Option<String>,
    pub anthropic_version: Option<String>,
    pub default_max_tokens: Option<u64>,
}

/// A credential. Its `Debug` never shows the value, so no log line or panic message can.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// The compiled configuration, shared by every request through `Rc`.
#[derive(Debug)]
pub enum Config {
    Router(RouterConfig),
    Upstream(UpstreamConfig),
}

#[derive(Debug)]
pub struct RouterConfig {
    pub model_header: String,
    /// Request paths (without query) the router role reads bodies of; POST only.
    pub paths: Vec<String>,
    pub max_request_bytes: usize,
}

#[derive(Debug)]
pub struct UpstreamConfig {
    pub providers: Vec<Provider>,
    pub max_request_bytes: usize,
    pub max_response_bytes: usize,
    /// A response header naming the provider that answered (absent: none is added).
    pub provider_header: Option<String>,
}

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub schema: Schema,
    pub host: String,
    /// Replaces the `/v1` of the client's OpenAI path (no trailing `/`).
    pub path_prefix: String,
    pub key: Secret,
    /// The credential header's value: `Bearer <key>` for OpenAI, the key for Anthropic.
    pub credential: Secret,
    pub model_override: Option<String>,
    pub anthropic_version: String,
    pub default_max_tokens: u64,
}

impl UpstreamConfig {
    pub fn provider(&self, name: &[u8]) -> Option<(usize, &Provider)> {
        self.providers.iter().enumerate().find(|(_, p)| p.name.as_bytes() == name)
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        Config::compile(raw, &|name| std::env::var(name).ok())
    }
}

fn body_limit(field: &str, value: Option<u64>, default: u64) -> Result<usize, ConfigError> {
    let value = value.unwrap_or(default);
    if value == 0 || value > MAX_BODY_LIMIT {
        return Err(ConfigError::new(field, format!("must be 1 to {MAX_BODY_LIMIT} bytes")));
    }
    usize::try_from(value).map_err(|_| ConfigError::new(field, "is too large for this platform"))
}

fn only_for(role: &str, field: &str, present: bool) -> Result<(), ConfigError> {
    if present {
        return Err(ConfigError::new(field, format!("is only used by the {role} role")));
    }
    Ok(())
}

impl Config {
    /// Compiles a raw config, reading `apiKey.env` variables through `env` (the VM's
    /// environment in Envoy; a table in tests).
    pub fn compile(raw: RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let max_request_bytes = body_limit("maxRequestBytes", raw.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES)?;
        match raw.role {
            RawRole::Router => {
                only_for("upstream", "providers", raw.providers.is_some())?;
                only_for("upstream", "maxResponseBytes", raw.max_response_bytes.is_some())?;
                only_for("upstream", "providerHeader", raw.provider_header.is_some())?;
                let model_header = check::header_name("modelHeader", raw.model_header.as_deref().unwrap_or(DEFAULT_MODEL_HEADER))?;
                if model_header.starts_with(':') || model_header == "host" {
                    return Err(ConfigError::new("modelHeader", "must not be a pseudo-header or `host`"));
                }
                let paths = raw.paths.unwrap_or_else(|| vec![DEFAULT_PATH.to_string()]);
                if paths.is_empty() {
                    return Err(ConfigError::new("paths", "must list at least one path"));
                }
                for (i, p) in paths.iter().enumerate() {
                    if !p.starts_with('/') || p.contains(['?', '#']) {
                        return Err(ConfigError::new(format!("paths[{i}]"), "must start with `/` and have no query"));
                    }
                }
                Ok(Config::Router(RouterConfig { model_header, paths, max_request_bytes }))
            }
            RawRole::Upstream => {
                only_for("router", "modelHeader", raw.model_header.is_some())?;
                only_for("router", "paths", raw.paths.is_some())?;
                let max_response_bytes = body_limit("maxResponseBytes", raw.max_response_bytes, DEFAULT_MAX_RESPONSE_BYTES)?;
                let provider_header = raw.provider_header.map(|h| check::header_name("providerHeader", &h)).transpose()?;
                if provider_header.as_deref().is_some_and(|h| h.starts_with(':')) {
                    return Err(ConfigError::new("providerHeader", "must not be a pseudo-header"));
                }
                let raw_providers = raw.providers.ok_or_else(|| ConfigError::new("providers", "the upstream role needs at least one provider"))?;
                if raw_providers.is_empty() {
                    return Err(ConfigError::new("providers", "the upstream role needs at least one provider"));
                }
                let providers = raw_providers
                    .into_iter()
                    .enumerate()
                    .map(|(i, p)| Provider::compile(p, env).map_err(|e| e.within(format!("providers[{i}]"))))
                    .collect::<Result<Vec<_>, _>>()?;
                check::unique("providers", providers.iter().map(|p| p.name.as_str()))?;
                Ok(Config::Upstream(UpstreamConfig { providers, max_request_bytes, max_response_bytes, provider_header }))
            }
        }
    }
}

/// Printable ASCII without spaces: what hosts, versions and keys look like.
fn token_like(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic())
}

impl Provider {
    fn compile(raw: RawProvider, env: &dyn Fn(&str) -> Option<String>) -> Result<Provider, ConfigError> {
        check::identifier("name", &raw.name)?;
        if !token_like(&raw.host) || raw.host.contains(['/', '@', '?', '#']) {
            return Err(ConfigError::new("host", "must be a host name (with an optional port), like `api.openai.com`"));
        }
        let path_prefix = match raw.path_prefix {
            None => DEFAULT_PATH_PREFIX.to_string(),
            Some(p) => {
                if !p.starts_with('/') || !token_like(&p) || p.contains(['?', '#']) {
                    return Err(ConfigError::new("pathPrefix", "must start with `/` and have no spaces or query"));
                }
                p.trim_end_matches('/').to_string()
            }
        };
        let key = api_key(&raw.api_key, env).map_err(|e| e.within("apiKey"))?;
        let model_override = match raw.model_name_override {
            Some(m) if m.is_empty() || !is_safe_header_value(m.as_bytes(), 256) => {
                return Err(ConfigError::new("modelNameOverride", "must be 1 to 256 bytes without control characters"));
            }
            other => other,
        };
        let (anthropic_version, default_max_tokens) = match raw.schema {
            Schema::OpenAi => {
                only_for_schema("anthropicVersion", raw.anthropic_version.is_some())?;
                only_for_schema("defaultMaxTokens", raw.default_max_tokens.is_some())?;
                (String::new(), 0)
            }
            Schema::Anthropic => {
                let version = raw.anthropic_version.unwrap_or_else(|| DEFAULT_ANTHROPIC_VERSION.to_string());
                if !token_like(&version) {
                    return Err(ConfigError::new("anthropicVersion", "must be a version string like `2023-06-01`"));
                }
                let max = raw.default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
                if max == 0 || max > 1_000_000 {
                    return Err(ConfigError::new("defaultMaxTokens", "must be 1 to 1000000"));
                }
                (version, max)
            }
        };
        let credential = match raw.schema {
            Schema::OpenAi => Secret(format!("Bearer {}", key.0)),
            Schema::Anthropic => key.clone(),
        };
        Ok(Provider {
            name: raw.name,
            schema: raw.schema,
            host: raw.host,
            path_prefix,
            key,
            credential,
            model_override,
            anthropic_version,
            default_max_tokens,
        })
    }
}

fn only_for_schema(field: &str, present: bool) -> Result<(), ConfigError> {
    if present {
        return Err(ConfigError::new(field, "is only used with `schema: anthropic`"));
    }
    Ok(())
}

/// `{"env": "NAME"}` or `{"inline": "key"}`. No message here ever contains the key.
fn api_key(raw: &Value, env: &dyn Fn(&str) -> Option<String>) -> Result<Secret, ConfigError> {
    let Some(object) = raw.as_object() else {
        return Err(ConfigError::new("", "must be an object: {\"env\": \"VARIABLE\"} or {\"inline\": \"...\"}"));
    };
    if object.len() != 1 {
        return Err(ConfigError::new("", "needs exactly one of `env` or `inline`"));
    }
    let (source, value) = object.iter().next().ok_or_else(|| ConfigError::new("", "needs exactly one of `env` or `inline`"))?;
    // The source name is not echoed unless known: a key pasted there must not reach the log.
    let source = match source.as_str() {
        "env" => "env",
        "inline" => "inline",
        _ => return Err(ConfigError::new("", "has an unknown source: use `env` or `inline`")),
    };
    let Some(value) = value.as_str() else {
        return Err(ConfigError::new(source, "must be a string"));
    };
    let key = if source == "env" {
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ConfigError::new("env", "must be an environment variable name ([A-Za-z0-9_])"));
        }
        env(value).ok_or_else(|| {
            ConfigError::new(
                "env",
                format!("`{value}` is not set in the VM's environment (Envoy: vm_config.environment_variables; Envoy Gateway: env.hostKeys)"),
            )
        })?
    } else {
        value.to_string()
    };
    if !token_like(&key) || key.len() > 4096 {
        return Err(ConfigError::new(source, "the key must be 1 to 4096 printable ASCII characters without spaces"));
    }
    Ok(Secret(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use filter_common::config::parse_json;

    fn env(name: &str) -> Option<String> {
        match name {
            "OPENAI_API_KEY" => Some("sk-test-openai".into()),
            "ANTHROPIC_API_KEY" => Some("sk-ant-test".into()),
            "BAD_KEY" => Some("has space".into()),
            _ => None,
        }
    }

    fn compile(text: &str) -> Result<Config, String> {
        let raw: RawConfig = parse_json(text.as_bytes()).map_err(|e| e.to_string())?;
        Config::compile(raw, &env).map_err(|e| e.to_string())
    }

    const ISSUE_EXAMPLE: &str = r#"{
      "role": "upstream",
      "providers": [
        {"name": "openai", "schema": "openai", "host": "api.openai.com", "pathPrefix": "/v1",
         "apiKey": {"env": "OPENAI_API_KEY"}},
        {"name": "anthropic", "schema": "anthropic", "host": "api.anthropic.com",
         "apiKey": {"env": "ANTHROPIC_API_KEY"}, "modelNameOverride": "claude-sonnet-4-5",
         "anthropicVersion": "2023-06-01"}
      ],
      "maxRequestBytes": 4194304
    }"#;

    #[test]
    fn the_issue_example_compiles() {
        let Config::Upstream(c) = compile(ISSUE_EXAMPLE).unwrap() else { panic!("not upstream") };
        assert_eq!(c.providers.len(), 2);
        let (i, openai) = c.provider(b"openai").unwrap();
        assert_eq!(i, 0);
        assert_eq!(openai.credential.expose(), "Bearer sk-test-openai");
        assert_eq!(openai.path_prefix, "/v1");
        let (_, anthropic) = c.provider(b"anthropic").unwrap();
        assert_eq!(anthropic.credential.expose(), "sk-ant-test");
        assert_eq!(anthropic.anthropic_version, "2023-06-01");
        assert_eq!(anthropic.default_max_tokens, DEFAULT_MAX_TOKENS);
        assert_eq!(anthropic.model_override.as_deref(), Some("claude-sonnet-4-5"));
        assert!(c.provider(b"other").is_none());
        assert!(!format!("{c:?}").contains("sk-"), "Debug never shows a key");
    }

    #[test]
    fn router_defaults() {
        let Config::Router(r) = compile(r#"{"role": "router"}"#).unwrap() else { panic!("not router") };
        assert_eq!(r.model_header, "x-ai-model");
        assert_eq!(r.paths, vec!["/v1/chat/completions"]);
        assert_eq!(r.max_request_bytes, 4 * 1024 * 1024);
    }

    #[test]
    fn errors_name_the_field() {
        let p = |extra: &str| {
            format!(r#"{{"role": "upstream", "providers": [{{"name": "a", "schema": "anthropic", "host": "h", "apiKey": {{"inline": "k"}}{extra}}}]}}"#)
        };
        let cases: Vec<(String, &str)> = vec![
            (r#"{}"#.into(), "missing field `role`"),
            (r#"{"role": "sideways"}"#.into(), "role: unknown variant `sideways`, expected `router` or `upstream`"),
            (r#"{"role": "router", "providers": []}"#.into(), "providers: is only used by the upstream role"),
            (r#"{"role": "router", "modelHeader": "bad header"}"#.into(), "modelHeader: `bad header` is not a valid header name"),
            (r#"{"role": "router", "modelHeader": ":path"}"#.into(), "modelHeader: `:path` is not a valid header name"),
            (r#"{"role": "router", "paths": []}"#.into(), "paths: must list at least one path"),
            (r#"{"role": "router", "paths": ["v1"]}"#.into(), "paths[0]: must start with `/` and have no query"),
            (r#"{"role": "router", "maxRequestBytes": 0}"#.into(), "maxRequestBytes: must be 1 to 67108864 bytes"),
            (r#"{"role": "upstream", "modelHeader": "x"}"#.into(), "modelHeader: is only used by the router role"),
            (r#"{"role": "upstream"}"#.into(), "providers: the upstream role needs at least one provider"),
            (r#"{"role": "upstream", "providers": []}"#.into(), "providers: the upstream role needs at least one provider"),
            (p(r#", "extra": 1"#), "providers[0].extra: unknown field `extra`"),
            (p(r#", "host": "a/b""#), "duplicate field `host`"),
            (p(r#", "pathPrefix": "v1""#), "providers[0].pathPrefix: must start with `/` and have no spaces or query"),
            (p(r#", "defaultMaxTokens": 0"#), "providers[0].defaultMaxTokens: must be 1 to 1000000"),
            (p(r#", "modelNameOverride": """#), "providers[0].modelNameOverride: must be 1 to 256 bytes"),
            (
                r#"{"role": "upstream", "providers": [{"name": "o", "schema": "openai", "host": "h", "apiKey": {"inline": "k"}, "anthropicVersion": "x"}]}"#.into(),
                "providers[0].anthropicVersion: is only used with `schema: anthropic`",
            ),
            (
                r#"{"role": "upstream", "providers": [{"name": "o", "schema": "gemini", "host": "h", "apiKey": {"inline": "k"}}]}"#.into(),
                "providers[0].schema: unknown variant `gemini`, expected `openai` or `anthropic`",
            ),
            (
                r#"{"role": "upstream", "providers": [{"name": "o", "schema": "openai", "host": "h", "apiKey": {"inline": "k"}}, {"name": "o", "schema": "openai", "host": "h", "apiKey": {"inline": "k"}}]}"#.into(),
                "providers: duplicate `o`",
            ),
            (
                r#"{"role": "upstream", "providers": [{"name": "o", "schema": "openai", "host": "", "apiKey": {"inline": "k"}}]}"#.into(),
                "providers[0].host: must be a host name",
            ),
            (
                r#"{"role": "upstream", "providers": [{"name": "o", "schema": "openai", "host": "h", "apiKey": {"env": "MISSING_KEY"}}]}"#.into(),
                "providers[0].apiKey.env: `MISSING_KEY` is not set in the VM's environment",
            ),
            (
                r#"{"role": "upstream", "providers": [{"name": "o", "schema": "openai", "host": "h", "apiKey": {"env": "A", "inline": "b"}}]}"#.into(),
                "providers[0].apiKey: needs exactly one of `env` or `inline`",
            ),
            (
                r#"{"role": "upstream", "providers": [{"name": "o", "schema": "openai", "host": "h", "apiKey": {"file": "x"}}]}"#.into(),
                "providers[0].apiKey: has an unknown source: use `env` or `inline`",
            ),
        ];
        for (input, want) in cases {
            let got = compile(&input).map(|_| ()).unwrap_err();
            assert!(got.contains(want), "{input}\n got: {got}\nwant: {want}");
        }
    }

    #[test]
    fn a_key_never_appears_in_a_config_error() {
        let secret = "sk-live-SECRET-VALUE-123";
        let cases = [
            format!(r#"{{"role": "upstream", "providers": [{{"name": "o", "schema": "openai", "host": "h", "apiKey": "{secret}"}}]}}"#),
            format!(r#"{{"role": "upstream", "providers": [{{"name": "o", "schema": "openai", "host": "h", "apiKey": {{"inline": "{secret} x"}}}}]}}"#),
            format!(r#"{{"role": "upstream", "providers": [{{"name": "o", "schema": "openai", "host": "h", "apiKey": {{"inline": ["{secret}"]}}}}]}}"#),
            format!(r#"{{"role": "upstream", "providers": [{{"name": "o", "schema": "openai", "host": "h", "apiKey": {{"env": "{secret}"}}}}]}}"#),
            format!(r#"{{"role": "upstream", "providers": [{{"name": "o", "schema": "openai", "host": "h", "apiKey": {{"{secret}": 1}}}}]}}"#),
        ];
        for input in cases {
            let err = compile(&input).map(|_| ()).unwrap_err();
            assert!(!err.contains("SECRET"), "{err}");
            assert!(err.starts_with("providers[0].apiKey"), "{err}");
        }
        let err = compile(r#"{"role": "upstream", "providers": [{"name": "o", "schema": "openai", "host": "h", "apiKey": {"env": "BAD_KEY"}}]}"#).map(|_| ()).unwrap_err();
        assert_eq!(err, "providers[0].apiKey.env: the key must be 1 to 4096 printable ASCII characters without spaces");
    }

    #[test]
    fn path_prefix_loses_its_trailing_slash() {
        let Config::Upstream(c) = compile(r#"{"role": "upstream", "providers": [{"name": "g", "schema": "openai", "host": "h", "pathPrefix": "/openai/v1/", "apiKey": {"inline": "k"}}]}"#).unwrap() else {
            panic!()
        };
        assert_eq!(c.providers[0].path_prefix, "/openai/v1");
    }
}
