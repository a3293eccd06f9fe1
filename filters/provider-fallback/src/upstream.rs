//! The upstream role's per-attempt request plan: which provider settings go into the headers,
//! and what happens to the body.
//!
//! Envoy hands every retry attempt the same request header map, already changed by the
//! attempts before it (the body, by contrast, is a fresh copy of the client's). So each attempt
//! sets every header it owns, removes every credential header a previous attempt may have set,
//! and starts from the client's original path and length, which the first attempt records in
//! filter state ([`Original`]).

use crate::config::{Provider, Schema};
use crate::errors::invalid_request;
use filter_common::Reply;

/// Where the first attempt records the client's path and length (Envoy filter state, shared
/// by the attempts of one request; access logs read it as `%FILTER_STATE(wasm.provider_fallback.original)%`).
pub const ORIGINAL_PROPERTY: &str = "provider_fallback.original";

/// Headers that carry credentials or pick provider API behaviour: removed on every attempt
/// before the provider's own are set, so neither the client's nor a previous attempt's reach
/// the provider.
pub const CREDENTIAL_HEADERS: [&str; 5] = ["authorization", "x-api-key", "api-key", "anthropic-version", "anthropic-beta"];

/// The client's request line as the first attempt saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    pub path: Vec<u8>,
    pub content_length: Option<Vec<u8>>,
}

impl Original {
    /// `<content-length or ->\n<path>`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.content_length.clone().unwrap_or_else(|| b"-".to_vec());
        out.push(b'\n');
        out.extend_from_slice(&self.path);
        out
    }

    pub fn decode(raw: &[u8]) -> Option<Original> {
        let nl = raw.iter().position(|&b| b == b'\n')?;
        let (length, path) = (&raw[..nl], &raw[nl + 1..]);
        if path.first() != Some(&b'/') {
            return None;
        }
        let content_length = if length == b"-" { None } else { Some(length.to_vec()) };
        Some(Original { path: path.to_vec(), content_length })
    }
}

/// What the body of this attempt needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyWork {
    /// Sent as the client sent it.
    Pass,
    /// OpenAI-schema provider with `modelNameOverride`: `model` replaced.
    OverrideModel,
    /// Anthropic provider: translated to a Messages request.
    Translate,
}

/// The header changes of one attempt.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestPlan {
    pub set: Vec<(&'static str, Vec<u8>)>,
    pub remove: Vec<&'static str>,
    pub body: Option<BodyWork>,
}

/// The provider path for the client's OpenAI path: `/v1/<endpoint>` becomes
/// `<pathPrefix>/<endpoint>`; for Anthropic only `/v1/chat/completions` exists, as
/// `<pathPrefix>/messages`. The query string is kept.
pub fn target_path(provider: &Provider, original: &[u8]) -> Result<Vec<u8>, Reply> {
    let split = original.iter().position(|&b| b == b'?').unwrap_or(original.len());
    let (path, query) = original.split_at(split);
    let endpoint = path.strip_prefix(b"/v1").filter(|rest| rest.is_empty() || rest.starts_with(b"/"));
    let mut out = Vec::with_capacity(original.len() + provider.path_prefix.len());
    match (provider.schema, endpoint) {
        (Schema::OpenAi, Some(rest)) => {
            out.extend_from_slice(provider.path_prefix.as_bytes());
            out.extend_from_slice(rest);
        }
        (Schema::OpenAi, None) => out.extend_from_slice(path),
        (Schema::Anthropic, Some(b"/chat/completions")) => {
            out.extend_from_slice(provider.path_prefix.as_bytes());
            out.extend_from_slice(b"/messages");
        }
        (Schema::Anthropic, _) => {
            let shown = String::from_utf8_lossy(&path[..path.len().min(128)]).into_owned();
            return Err(invalid_request(
                "unsupported_endpoint",
                None,
                &format!("`{shown}` is not translated for provider `{}` (Anthropic Messages API): only /v1/chat/completions is", provider.name),
            ));
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(query);
    Ok(out)
}

/// The header changes and body work for an attempt to `provider`, given the request headers
/// as they are now (`header(name)`) and the client's original request line.
pub fn plan<'h>(provider: &Provider, header: impl Fn(&str) -> Option<&'h [u8]>, original: &Original) -> Result<RequestPlan, Reply> {
    let mut plan = RequestPlan::default();
    plan.set.push((":authority", provider.host.as_bytes().to_vec()));
    let path = target_path(provider, &original.path)?;
    if header(":path") != Some(path.as_slice()) {
        plan.set.push((":path", path));
    }
    // Headers this provider sets are replaced whole; the others are removed.
    let owned: &[&str] = match provider.schema {
        Schema::OpenAi => &["authorization"],
        Schema::Anthropic => &["x-api-key", "anthropic-version"],
    };
    for name in CREDENTIAL_HEADERS {
        if !owned.contains(&name) && header(name).is_some() {
            plan.remove.push(name);
        }
    }
    match provider.schema {
        Schema::OpenAi => plan.set.push(("authorization", provider.credential.expose().as_bytes().to_vec())),
        Schema::Anthropic => {
            plan.set.push(("x-api-key", provider.credential.expose().as_bytes().to_vec()));
            plan.set.push(("anthropic-version", provider.anthropic_version.as_bytes().to_vec()));
            // The response is translated, so it must arrive uncompressed.
            if header("accept-encoding").is_some() {
                plan.remove.push("accept-encoding");
            }
        }
    }
    let work = match (provider.schema, &provider.model_override) {
        (Schema::Anthropic, _) => BodyWork::Translate,
        (Schema::OpenAi, Some(_)) => BodyWork::OverrideModel,
        (Schema::OpenAi, None) => BodyWork::Pass,
    };
    if work == BodyWork::Pass {
        // A previous attempt may have changed the length along with the body it sent.
        match (&original.content_length, header("content-length")) {
            (Some(want), Some(now)) if want.as_slice() == now => {}
            (Some(want), _) => plan.set.push(("content-length", want.clone())),
            (None, Some(_)) => plan.remove.push("content-length"),
            (None, None) => {}
        }
    }
    plan.body = Some(work);
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RawConfig, UpstreamConfig};
    use filter_common::config::parse_json;

    fn config() -> UpstreamConfig {
        let raw: RawConfig = parse_json(
            br#"{"role": "upstream", "providers": [
              {"name": "openai", "schema": "openai", "host": "api.openai.com", "apiKey": {"inline": "sk-o"}},
              {"name": "azure", "schema": "openai", "host": "x.openai.azure.com", "pathPrefix": "/openai/v1", "apiKey": {"inline": "az"}, "modelNameOverride": "gpt-4o-mini"},
              {"name": "anthropic", "schema": "anthropic", "host": "api.anthropic.com", "apiKey": {"inline": "sk-a"}, "modelNameOverride": "claude-sonnet-4-5"}
            ]}"#,
        )
        .unwrap();
        let Config::Upstream(c) = Config::compile(raw, &|_| None).unwrap() else { panic!() };
        c
    }

    #[test]
    fn paths() {
        let c = config();
        let cases: [(usize, &str, Result<&str, ()>); 9] = [
            (0, "/v1/chat/completions", Ok("/v1/chat/completions")),
            (0, "/v1/embeddings?x=1", Ok("/v1/embeddings?x=1")),
            (0, "/other", Ok("/other")),
            (1, "/v1/chat/completions", Ok("/openai/v1/chat/completions")),
            (1, "/v1", Ok("/openai/v1")),
            (2, "/v1/chat/completions", Ok("/v1/messages")),
            (2, "/v1/chat/completions?beta=true", Ok("/v1/messages?beta=true")),
            (2, "/v1/embeddings", Err(())),
            (2, "/v1x/chat/completions", Err(())),
        ];
        for (i, input, want) in cases {
            let got = target_path(&c.providers[i], input.as_bytes()).map(|p| String::from_utf8(p).unwrap()).map_err(|r| assert_eq!(r.status, 400));
            assert_eq!(got, want.map(str::to_string), "{} {input}", c.providers[i].name);
        }
    }

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a [u8]> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_bytes())
    }

    fn set<'a>(plan: &'a RequestPlan, name: &str) -> Option<&'a str> {
        plan.set.iter().find(|(k, _)| *k == name).map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn first_attempt_to_openai() {
        let c = config();
        let client = [(":path", "/v1/chat/completions"), (":authority", "gateway"), ("authorization", "Bearer client-key"), ("content-length", "42"), ("accept-encoding", "gzip")];
        let original = Original { path: b"/v1/chat/completions".to_vec(), content_length: Some(b"42".to_vec()) };
        let plan = plan(&c.providers[0], headers(&client), &original).unwrap();
        assert_eq!(set(&plan, ":authority"), Some("api.openai.com"));
        assert_eq!(set(&plan, "authorization"), Some("Bearer sk-o"));
        assert_eq!(set(&plan, ":path"), None, "already right");
        assert_eq!(set(&plan, "content-length"), None, "already right");
        assert!(plan.remove.is_empty(), "the client's authorization is replaced whole");
        assert_eq!(plan.body, Some(BodyWork::Pass));
    }

    #[test]
    fn a_retry_undoes_what_the_previous_attempt_set() {
        let c = config();
        // Headers after an attempt to Anthropic, which translated (and so re-sized) the body.
        let after_anthropic = [(":path", "/v1/messages"), (":authority", "api.anthropic.com"), ("x-api-key", "sk-a"), ("anthropic-version", "2023-06-01"), ("content-length", "77")];
        let original = Original { path: b"/v1/chat/completions".to_vec(), content_length: Some(b"42".to_vec()) };
        let plan = plan(&c.providers[0], headers(&after_anthropic), &original).unwrap();
        assert_eq!(set(&plan, ":path"), Some("/v1/chat/completions"));
        assert_eq!(set(&plan, "content-length"), Some("42"));
        assert_eq!(set(&plan, "authorization"), Some("Bearer sk-o"));
        assert!(plan.remove.contains(&"x-api-key") && plan.remove.contains(&"anthropic-version"));
        // And the other way round: after an OpenAI attempt, to Anthropic.
        let after_openai = [(":path", "/v1/chat/completions"), ("authorization", "Bearer sk-o"), ("content-length", "42"), ("accept-encoding", "gzip")];
        let plan = super::plan(&c.providers[2], headers(&after_openai), &original).unwrap();
        assert_eq!(set(&plan, ":path"), Some("/v1/messages"));
        assert_eq!(set(&plan, "x-api-key"), Some("sk-a"));
        assert_eq!(set(&plan, "anthropic-version"), Some("2023-06-01"));
        assert_eq!(plan.remove, vec!["authorization", "accept-encoding"]);
        assert_eq!(plan.body, Some(BodyWork::Translate));
        // A chunked original (no length) gets no length back.
        let original = Original { path: b"/v1/chat/completions".to_vec(), content_length: None };
        let plan = super::plan(&c.providers[0], headers(&after_anthropic), &original).unwrap();
        assert!(plan.remove.contains(&"content-length"));
        assert_eq!(super::plan(&c.providers[1], headers(&after_anthropic), &original).unwrap().body, Some(BodyWork::OverrideModel));
    }

    #[test]
    fn originals_round_trip() {
        for o in [
            Original { path: b"/v1/chat/completions?x=1".to_vec(), content_length: Some(b"123".to_vec()) },
            Original { path: b"/".to_vec(), content_length: None },
        ] {
            assert_eq!(Original::decode(&o.encode()), Some(o));
        }
        assert_eq!(Original::decode(b"junk"), None);
        assert_eq!(Original::decode(b"1\nnot-a-path"), None);
    }
}
