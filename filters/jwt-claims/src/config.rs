//! jwt-claims configuration: the JSON users write, and the compiled form requests use.

use crate::jwks::KeySet;
use filter_common::config::check;
use filter_common::ConfigError;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawConfig {
    pub providers: Vec<RawProvider>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    pub max_token_bytes: Option<usize>,
    pub max_claim_bytes: Option<usize>,
    pub cache_size: Option<usize>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawProvider {
    pub name: String,
    pub issuer: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub local_jwks: Option<String>,
    pub remote_jwks: Option<RawRemoteJwks>,
    pub extract_from: Option<RawExtractFrom>,
    #[serde(default)]
    pub claim_to_headers: Vec<RawClaimToHeader>,
    pub forward_payload_header: Option<String>,
    #[serde(default)]
    pub forward: bool,
    pub clock_skew_s: Option<u64>,
    pub require_expiration: Option<bool>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawRemoteJwks {
    pub cluster: String,
    pub authority: Option<String>,
    pub path: String,
    pub cache_duration_s: Option<u64>,
    pub timeout_ms: Option<u64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawExtractFrom {
    #[serde(default)]
    pub headers: Vec<RawHeaderSource>,
    #[serde(default)]
    pub params: Vec<String>,
    #[serde(default)]
    pub cookies: Vec<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawHeaderSource {
    pub name: String,
    #[serde(default)]
    pub value_prefix: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawClaimToHeader {
    pub claim: String,
    pub header: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawRule {
    pub path_prefix: String,
    /// `"none"` or `{"anyOf": [provider, ...]}`; checked in `TryFrom` for a clear message.
    pub requires: Value,
}

/// The compiled configuration, shared by every request through `Rc`.
#[derive(Debug)]
pub struct Config {
    pub providers: Vec<Provider>,
    pub rules: Vec<Rule>,
    pub max_token_bytes: usize,
    pub max_claim_bytes: usize,
    pub cache_size: usize,
    /// Every header the filter may set (claim targets and payload headers of all providers),
    /// removed from every request before anything is set.
    pub protected_headers: Vec<String>,
}

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub local_keys: Option<KeySet>,
    pub remote: Option<RemoteJwks>,
    pub sources: Vec<TokenSource>,
    pub claim_to_headers: Vec<ClaimToHeader>,
    pub forward_payload_header: Option<String>,
    pub forward: bool,
    pub clock_skew_s: u64,
    pub require_exp: bool,
}

#[derive(Debug, Clone)]
pub struct RemoteJwks {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub cache_duration_s: u64,
    pub timeout_ms: u64,
}

/// Where a token is looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A header; the token follows `prefix`, matched without regard to case.
    Header { name: String, prefix: String },
    Param(String),
    Cookie(String),
}

#[derive(Debug, Clone)]
pub struct ClaimToHeader {
    pub claim: String,
    pub header: String,
}

#[derive(Debug)]
pub struct Rule {
    pub path_prefix: String,
    pub requires: Requires,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requires {
    None,
    /// Indices into `Config::providers`.
    AnyOf(Vec<usize>),
}

pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;
pub const DEFAULT_MAX_CLAIM_BYTES: usize = 4096;
pub const DEFAULT_CACHE_SIZE: usize = 1024;
pub const MAX_CACHE_SIZE: usize = 100_000;
pub const DEFAULT_CLOCK_SKEW_S: u64 = 60;
pub const DEFAULT_CACHE_DURATION_S: u64 = 600;
pub const DEFAULT_TIMEOUT_MS: u64 = 2000;

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        if raw.providers.is_empty() {
            return Err(ConfigError::new("providers", "must list at least one provider"));
        }
        let providers = raw
            .providers
            .into_iter()
            .enumerate()
            .map(|(i, p)| Provider::try_from(p).map_err(|e| e.within(format!("providers[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        check::unique("providers", providers.iter().map(|p| p.name.as_str()))?;

        let rules = raw
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| compile_rule(r, &providers).map_err(|e| e.within(format!("rules[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        if rules.is_empty() {
            return Err(ConfigError::new("rules", "must list at least one rule (e.g. {\"pathPrefix\": \"/\", \"requires\": {\"anyOf\": [...]}})"));
        }

        let max_token_bytes = raw.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
        if !(64..=1 << 20).contains(&max_token_bytes) {
            return Err(ConfigError::new("maxTokenBytes", "must be 64 to 1048576"));
        }
        let max_claim_bytes = raw.max_claim_bytes.unwrap_or(DEFAULT_MAX_CLAIM_BYTES);
        if !(1..=1 << 16).contains(&max_claim_bytes) {
            return Err(ConfigError::new("maxClaimBytes", "must be 1 to 65536"));
        }
        let cache_size = raw.cache_size.unwrap_or(DEFAULT_CACHE_SIZE);
        if cache_size > MAX_CACHE_SIZE {
            return Err(ConfigError::new("cacheSize", format!("must be at most {MAX_CACHE_SIZE} (0 turns the cache off)")));
        }

        let mut protected_headers: Vec<String> = Vec::new();
        for p in &providers {
            let targets = p.claim_to_headers.iter().map(|c| &c.header).chain(p.forward_payload_header.as_ref());
            for h in targets {
                if !protected_headers.contains(h) {
                    protected_headers.push(h.clone());
                }
            }
        }
        // A header the filter writes must never be where another provider reads its token.
        for (i, p) in providers.iter().enumerate() {
            for source in &p.sources {
                if let TokenSource::Header { name, .. } = source {
                    if protected_headers.contains(name) {
                        return Err(ConfigError::new(
                            format!("providers[{i}].extractFrom.headers"),
                            format!("`{name}` is also a header the filter sets from claims"),
                        ));
                    }
                }
            }
        }
        Ok(Config { providers, rules, max_token_bytes, max_claim_bytes, cache_size, protected_headers })
    }
}

fn compile_rule(raw: RawRule, providers: &[Provider]) -> Result<Rule, ConfigError> {
    if !raw.path_prefix.starts_with('/') {
        return Err(ConfigError::new("pathPrefix", "must start with `/`"));
    }
    let requires = match &raw.requires {
        Value::String(s) if s == "none" => Requires::None,
        Value::Object(map) => {
            let mut names = None;
            for (key, value) in map {
                if key != "anyOf" {
                    return Err(ConfigError::new(format!("requires.{key}"), "unknown field; expected `anyOf`"));
                }
                names = Some(value);
            }
            let list = names
                .and_then(Value::as_array)
                .filter(|l| !l.is_empty())
                .ok_or_else(|| ConfigError::new("requires.anyOf", "must be a non-empty list of provider names"))?;
            let mut indices = Vec::new();
            for (i, name) in list.iter().enumerate() {
                let name = name.as_str().ok_or_else(|| ConfigError::new(format!("requires.anyOf[{i}]"), "must be a provider name"))?;
                let index = providers
                    .iter()
                    .position(|p| p.name == name)
                    .ok_or_else(|| ConfigError::new(format!("requires.anyOf[{i}]"), format!("unknown provider `{name}`")))?;
                if !indices.contains(&index) {
                    indices.push(index);
                }
            }
            Requires::AnyOf(indices)
        }
        _ => return Err(ConfigError::new("requires", "must be \"none\" or {\"anyOf\": [provider, ...]}")),
    };
    Ok(Rule { path_prefix: raw.path_prefix, requires })
}

impl TryFrom<RawProvider> for Provider {
    type Error = ConfigError;

    fn try_from(raw: RawProvider) -> Result<Self, ConfigError> {
        check::identifier("name", &raw.name)?;
        if raw.issuer.as_deref() == Some("") {
            return Err(ConfigError::new("issuer", "must not be empty (leave it out to accept any issuer)"));
        }
        if raw.audiences.iter().any(String::is_empty) {
            return Err(ConfigError::new("audiences", "must not contain an empty audience"));
        }
        let local_keys = match &raw.local_jwks {
            None => None,
            Some(text) => {
                let parsed = KeySet::parse(text.as_bytes()).map_err(|e| ConfigError::new("localJwks", e.0))?;
                // A configured key the filter cannot use is a mistake worth refusing at load;
                // remote sets only skip such keys, so one odd key there does not stop the set.
                if let Some(first) = parsed.skipped.first() {
                    return Err(ConfigError::new("localJwks", first));
                }
                Some(parsed.set)
            }
        };
        let remote = raw.remote_jwks.map(RemoteJwks::try_from).transpose().map_err(|e| e.within("remoteJwks"))?;
        if local_keys.is_none() && remote.is_none() {
            return Err(ConfigError::new("localJwks", "a provider needs `localJwks`, `remoteJwks` or both"));
        }
        let sources = match raw.extract_from {
            // jwt_authn's default: `Authorization: Bearer <token>` and the `access_token` param.
            None => vec![
                TokenSource::Header { name: "authorization".into(), prefix: "Bearer ".into() },
                TokenSource::Param("access_token".into()),
            ],
            Some(from) => compile_sources(from).map_err(|e| e.within("extractFrom"))?,
        };
        let mut claim_to_headers = Vec::new();
        for (i, c) in raw.claim_to_headers.into_iter().enumerate() {
            let field = format!("claimToHeaders[{i}]");
            if c.claim.is_empty() || c.claim.split('.').any(str::is_empty) {
                return Err(ConfigError::new(format!("{field}.claim"), "must be a claim name or a dotted path such as `org.id`"));
            }
            let header = check::header_name(&format!("{field}.header"), &c.header)?;
            forbid_reserved(&format!("{field}.header"), &header)?;
            claim_to_headers.push(ClaimToHeader { claim: c.claim, header });
        }
        check::unique("claimToHeaders", claim_to_headers.iter().map(|c| c.header.as_str()))?;
        let forward_payload_header = match raw.forward_payload_header {
            None => None,
            Some(h) => {
                let h = check::header_name("forwardPayloadHeader", &h)?;
                forbid_reserved("forwardPayloadHeader", &h)?;
                if claim_to_headers.iter().any(|c| c.header == h) {
                    return Err(ConfigError::new("forwardPayloadHeader", format!("`{h}` is also a claimToHeaders target")));
                }
                Some(h)
            }
        };
        let clock_skew_s = raw.clock_skew_s.unwrap_or(DEFAULT_CLOCK_SKEW_S);
        if clock_skew_s > 3600 {
            return Err(ConfigError::new("clockSkewS", "must be at most 3600"));
        }
        Ok(Provider {
            name: raw.name,
            issuer: raw.issuer,
            audiences: raw.audiences,
            local_keys,
            remote,
            sources,
            claim_to_headers,
            forward_payload_header,
            forward: raw.forward,
            clock_skew_s,
            require_exp: raw.require_expiration.unwrap_or(true),
        })
    }
}

/// Headers the filter must never set from a claim: pseudo-headers, routing and framing.
fn forbid_reserved(field: &str, header: &str) -> Result<(), ConfigError> {
    const RESERVED: [&str; 7] = ["host", "content-length", "transfer-encoding", "connection", "te", "upgrade", "authorization"];
    if RESERVED.contains(&header) {
        return Err(ConfigError::new(field, format!("`{header}` cannot be set from a claim")));
    }
    Ok(())
}

fn compile_sources(raw: RawExtractFrom) -> Result<Vec<TokenSource>, ConfigError> {
    let mut out = Vec::new();
    for (i, h) in raw.headers.into_iter().enumerate() {
        let name = check::header_name(&format!("headers[{i}].name"), &h.name)?;
        if h.value_prefix.bytes().any(|b| b.is_ascii_control()) {
            return Err(ConfigError::new(format!("headers[{i}].valuePrefix"), "must not contain control characters"));
        }
        out.push(TokenSource::Header { name, prefix: h.value_prefix });
    }
    for (i, p) in raw.params.into_iter().enumerate() {
        if p.is_empty() || p.bytes().any(|b| b"&=#?%+ ".contains(&b) || b.is_ascii_control()) {
            return Err(ConfigError::new(format!("params[{i}]"), "must be a plain query parameter name"));
        }
        out.push(TokenSource::Param(p));
    }
    for (i, c) in raw.cookies.into_iter().enumerate() {
        let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if c.is_empty() || !c.bytes().all(token_char) {
            return Err(ConfigError::new(format!("cookies[{i}]"), "must be a cookie name token"));
        }
        out.push(TokenSource::Cookie(c));
    }
    if out.is_empty() {
        return Err(ConfigError::new("", "must name at least one header, param or cookie"));
    }
    Ok(out)
}

impl TryFrom<RawRemoteJwks> for RemoteJwks {
    type Error = ConfigError;

    fn try_from(raw: RawRemoteJwks) -> Result<Self, ConfigError> {
        if raw.cluster.is_empty() {
            return Err(ConfigError::new("cluster", "must name the Envoy cluster that serves the JWKS"));
        }
        if !raw.path.starts_with('/') || raw.path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(ConfigError::new("path", "must be a request path starting with `/`"));
        }
        let authority = raw.authority.unwrap_or_else(|| raw.cluster.clone());
        if authority.is_empty() || authority.bytes().any(|b| b.is_ascii_control() || b == b' ' || b == b'/') {
            return Err(ConfigError::new("authority", "must be a host name (and port)"));
        }
        let cache_duration_s = raw.cache_duration_s.unwrap_or(DEFAULT_CACHE_DURATION_S);
        if !(10..=86_400 * 7).contains(&cache_duration_s) {
            return Err(ConfigError::new("cacheDurationS", "must be 10 to 604800"));
        }
        let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(10..=60_000).contains(&timeout_ms) {
            return Err(ConfigError::new("timeoutMs", "must be 10 to 60000"));
        }
        Ok(RemoteJwks { cluster: raw.cluster, authority, path: raw.path, cache_duration_s, timeout_ms })
    }
}

impl Config {
    /// The requirement for a request path (without its query): the first rule whose prefix
    /// matches; no rule means no requirement.
    pub fn requirement(&self, path: &[u8]) -> &Requires {
        self.rules
            .iter()
            .find(|r| path.starts_with(r.path_prefix.as_bytes()))
            .map_or(&Requires::None, |r| &r.requires)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use filter_common::config::load;

    /// An Ed25519 JWKS (RFC 8037 A.2's public key) for configs that need a valid local set.
    const JWKS: &str = r#"{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"k1\",\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}]}"#;

    fn with_provider(provider: &str, rest: &str) -> String {
        format!(r#"{{"providers": [{{"name": "idp", "localJwks": "{JWKS}"{provider}}}], "rules": [{{"pathPrefix": "/", "requires": {{"anyOf": ["idp"]}}}}]{rest}}}"#)
    }

    fn error(json: &str) -> String {
        load::<RawConfig, Config>(Some(json.as_bytes())).unwrap_err().to_string()
    }

    #[test]
    fn the_issue_example_loads() {
        let json = format!(
            r#"{{
              "providers": [{{
                "name": "auth0",
                "issuer": "https://tenant.example.com/",
                "audiences": ["https://api.example.com"],
                "localJwks": "{JWKS}",
                "remoteJwks": {{"cluster": "jwks", "authority": "tenant.example.com", "path": "/.well-known/jwks.json",
                               "cacheDurationS": 600, "timeoutMs": 2000}},
                "extractFrom": {{"headers": [{{"name": "authorization", "valuePrefix": "Bearer "}}], "params": ["access_token"], "cookies": ["session"]}},
                "claimToHeaders": [{{"claim": "sub", "header": "x-user-id"}}, {{"claim": "org.id", "header": "x-org-id"}},
                                   {{"claim": "permissions", "header": "x-user-permissions"}}],
                "forwardPayloadHeader": "x-jwt-payload",
                "forward": false,
                "clockSkewS": 60
              }}],
              "rules": [{{"pathPrefix": "/health", "requires": "none"}},
                        {{"pathPrefix": "/", "requires": {{"anyOf": ["auth0"]}}}}],
              "maxTokenBytes": 8192
            }}"#
        );
        let c = load::<RawConfig, Config>(Some(json.as_bytes())).unwrap();
        assert_eq!(c.protected_headers, ["x-user-id", "x-org-id", "x-user-permissions", "x-jwt-payload"]);
        assert_eq!(c.requirement(b"/health/live"), &Requires::None);
        assert_eq!(c.requirement(b"/api"), &Requires::AnyOf(vec![0]));
        let p = &c.providers[0];
        assert_eq!(p.sources.len(), 3);
        assert_eq!(p.remote.as_ref().unwrap().authority, "tenant.example.com");
        assert_eq!(p.local_keys.as_ref().unwrap().len(), 1);
        assert_eq!(c.cache_size, DEFAULT_CACHE_SIZE);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases: Vec<(String, &str)> = vec![
            (r#"{"providers": [], "rules": []}"#.into(), "providers: must list at least one provider"),
            (with_provider("", r#", "extra": 1"#), "extra: unknown field `extra`"),
            (r#"{"providers": [{"name": "idp", "localJwks": "{nope"}], "rules": []}"#.into(), "providers[0].localJwks: is not valid JSON"),
            (r#"{"providers": [{"name": "idp", "localJwks": "{\"keys\": [{\"kty\": \"RSA\", \"alg\": \"RS257\", \"n\": \"AQAB\", \"e\": \"AQAB\"}]}"}], "rules": []}"#.into(), "providers[0].localJwks: has no usable signing key (keys[0]: unknown algorithm `RS257`)"),
            (r#"{"providers": [{"name": "idp"}], "rules": []}"#.into(), "providers[0].localJwks: a provider needs `localJwks`, `remoteJwks` or both"),
            (with_provider("", "").replace(r#"["idp"]"#, r#"["other"]"#), "rules[0].requires.anyOf[0]: unknown provider `other`"),
            (with_provider("", "").replace(r#"{"anyOf": ["idp"]}"#, r#""all""#), "rules[0].requires: must be \"none\" or {\"anyOf\": [provider, ...]}"),
            (with_provider("", "").replace(r#"{"anyOf": ["idp"]}"#, r#"{"allOf": ["idp"]}"#), "rules[0].requires.allOf: unknown field; expected `anyOf`"),
            (with_provider("", "").replace(r#"["idp"]"#, "[]"), "rules[0].requires.anyOf: must be a non-empty list of provider names"),
            (with_provider("", "").replace(r#""pathPrefix": "/""#, r#""pathPrefix": "api""#), "rules[0].pathPrefix: must start with `/`"),
            (with_provider(r#", "claimToHeaders": [{"claim": "sub", "header": "bad header"}]"#, ""), "providers[0].claimToHeaders[0].header: `bad header` is not a valid header name"),
            (with_provider(r#", "claimToHeaders": [{"claim": "sub", "header": "host"}]"#, ""), "providers[0].claimToHeaders[0].header: `host` cannot be set from a claim"),
            (with_provider(r#", "claimToHeaders": [{"claim": "org..id", "header": "x-org"}]"#, ""), "providers[0].claimToHeaders[0].claim: must be a claim name or a dotted path"),
            (with_provider(r#", "claimToHeaders": [{"claim": "a", "header": "x-a"}, {"claim": "b", "header": "X-A"}]"#, ""), "providers[0].claimToHeaders: duplicate `x-a`"),
            (with_provider(r#", "forwardPayloadHeader": "x-a", "claimToHeaders": [{"claim": "a", "header": "x-a"}]"#, ""), "providers[0].forwardPayloadHeader: `x-a` is also a claimToHeaders target"),
            (with_provider(r#", "claimToHeaders": [{"claim": "a", "header": "x-token"}], "extractFrom": {"headers": [{"name": "x-token"}]}"#, ""), "providers[0].extractFrom.headers: `x-token` is also a header the filter sets from claims"),
            (with_provider(r#", "extractFrom": {}"#, ""), "providers[0].extractFrom: must name at least one header, param or cookie"),
            (with_provider(r#", "extractFrom": {"cookies": ["a b"]}"#, ""), "providers[0].extractFrom.cookies[0]: must be a cookie name token"),
            (with_provider(r#", "remoteJwks": {"cluster": "jwks", "path": "jwks.json"}"#, ""), "providers[0].remoteJwks.path: must be a request path starting with `/`"),
            (with_provider(r#", "remoteJwks": {"cluster": "jwks", "path": "/j", "timeoutMs": 0}"#, ""), "providers[0].remoteJwks.timeoutMs: must be 10 to 60000"),
            (with_provider(r#", "remoteJwks": {"cluster": "jwks", "path": "/j", "cacheDurationS": 1}"#, ""), "providers[0].remoteJwks.cacheDurationS: must be 10 to 604800"),
            (with_provider(r#", "name": "bad name""#, ""), "providers[0].name: duplicate field `name`"),
            (with_provider("", r#", "maxTokenBytes": 10"#), "maxTokenBytes: must be 64 to 1048576"),
            (with_provider("", r#", "cacheSize": 1000000"#), "cacheSize: must be at most 100000 (0 turns the cache off)"),
            (with_provider(r#", "clockSkewS": 7200"#, ""), "providers[0].clockSkewS: must be at most 3600"),
        ];
        for (json, want) in cases {
            let got = error(&json);
            assert!(got.starts_with(want), "{json}\n got: {got}\nwant: {want}");
        }
        let two = with_provider("", "").replace(r#"}], "rules""#, &format!(r#"}}, {{"name": "idp", "localJwks": "{JWKS}"}}], "rules""#));
        assert_eq!(error(&two), "providers: duplicate `idp`");
    }

    #[test]
    fn defaults_follow_jwt_authn() {
        let c = load::<RawConfig, Config>(Some(with_provider("", "").as_bytes())).unwrap();
        let p = &c.providers[0];
        assert_eq!(
            p.sources,
            [TokenSource::Header { name: "authorization".into(), prefix: "Bearer ".into() }, TokenSource::Param("access_token".into())]
        );
        assert_eq!(p.clock_skew_s, 60);
        assert!(p.require_exp);
        assert!(!p.forward);
        assert_eq!((c.max_token_bytes, c.max_claim_bytes), (8192, 4096));
        // No rule matches: nothing is required.
        let c = load::<RawConfig, Config>(Some(with_provider("", "").replace(r#""pathPrefix": "/""#, r#""pathPrefix": "/api""#).as_bytes())).unwrap();
        assert_eq!(c.requirement(b"/other"), &Requires::None);
    }
}
