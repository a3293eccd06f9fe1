//! provider-fallback's answers from providers that are not streams: an Anthropic Messages
//! body (or anything a provider sends with a 2xx), an error body from either API, and the
//! plain-text errors Envoy produces. Each becomes JSON an OpenAI client parses, and the
//! gateway's key never reaches the client.
#![no_main]

use filter_common::config::parse_json;
use libfuzzer_sys::fuzz_target;
use llm_filters_fuzz::{any_string_contains, assert_openai_error, json};
use provider_fallback::config::{Config, Provider, RawConfig, Schema};
use provider_fallback::{errors, from_anthropic};
use std::sync::OnceLock;

const KEY: &str = "sk-fuzz-key";

fn providers() -> &'static [Provider] {
    static P: OnceLock<Vec<Provider>> = OnceLock::new();
    P.get_or_init(|| {
        let text = br#"{"role": "upstream", "providers": [
          {"name": "openai", "schema": "openai", "host": "api.openai.com", "apiKey": {"inline": "sk-fuzz-key"}},
          {"name": "anthropic", "schema": "anthropic", "host": "api.anthropic.com", "apiKey": {"inline": "sk-fuzz-key"}}]}"#;
        let raw: RawConfig = parse_json(text).expect("fuzz config");
        match Config::compile(raw, &|_| None).expect("fuzz config") {
            Config::Upstream(u) => u.providers,
            Config::Router(_) => unreachable!(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(out) = from_anthropic::completion(data, 1_700_000_000) {
        let v = json(&out);
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        let usage = &v["usage"];
        let (p, c, t) = (usage["prompt_tokens"].as_u64(), usage["completion_tokens"].as_u64(), usage["total_tokens"].as_u64());
        assert!(p.is_some() && c.is_some() && t.is_some(), "usage: {usage}");
        assert_eq!(t, Some(p.unwrap_or(0).saturating_add(c.unwrap_or(0))));
    }
    for provider in providers() {
        assert_eq!(provider.key.expose(), KEY);
        for status in [400u16, 401, 403, 404, 429, 500, 529] {
            let e = errors::from_provider(provider.schema, &provider.name, &provider.key, status, data);
            assert_openai_error(&e.body);
            let v = json(&e.body);
            assert!(!any_string_contains(&v, KEY), "the key reached the client ({:?}, {status}): {v}", provider.schema);
            if status == 401 || status == 403 {
                assert_eq!(e.status, 502);
            } else {
                assert_eq!(e.status, status);
            }
            let _ = provider.schema == Schema::OpenAi;
        }
    }
    for status in [502u16, 503, 504] {
        // A body that already has an OpenAI `error.message` is passed on as it is.
        let body = errors::from_plain(status, data);
        assert!(json(&body)["error"]["message"].is_string(), "no error.message");
    }
});
