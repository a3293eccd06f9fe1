//! provider-fallback's request side, on any client body: the router's model check, the
//! model override, and the OpenAI -> Anthropic translation. Each gives a well-formed request
//! or the 400 an OpenAI client parses; never a panic.
#![no_main]

use filter_common::config::parse_json;
use libfuzzer_sys::fuzz_target;
use llm_filters_fuzz::{assert_openai_error, json};
use provider_fallback::config::{Config, Provider, RawConfig};
use provider_fallback::{router, to_anthropic};
use std::sync::OnceLock;

fn providers() -> &'static [Provider] {
    static P: OnceLock<Vec<Provider>> = OnceLock::new();
    P.get_or_init(|| {
        let text = br#"{"role": "upstream", "providers": [
          {"name": "anthropic", "schema": "anthropic", "host": "api.anthropic.com", "apiKey": {"inline": "sk-ant-k"}},
          {"name": "claude", "schema": "anthropic", "host": "api.anthropic.com", "apiKey": {"inline": "sk-ant-k"},
           "modelNameOverride": "claude-sonnet-4-5", "defaultMaxTokens": 99}]}"#;
        let raw: RawConfig = parse_json(text).expect("fuzz config");
        match Config::compile(raw, &|_| None).expect("fuzz config") {
            Config::Upstream(u) => u.providers,
            Config::Router(_) => unreachable!(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    match router::model(data) {
        Ok(model) => assert!(!model.is_empty() && model.len() <= router::MAX_MODEL_LEN),
        Err(reply) => {
            assert_eq!(reply.status, 400);
            assert_openai_error(&reply.body);
        }
    }
    match to_anthropic::override_model(data, "m-override") {
        Ok(body) => assert_eq!(json(&body)["model"], "m-override"),
        Err(reply) => {
            assert_eq!(reply.status, 400);
            assert_openai_error(&reply.body);
        }
    }
    for provider in providers() {
        match to_anthropic::request(data, provider) {
            Ok(t) => {
                let v = json(&t.body);
                assert!(v.is_object());
                assert!(v["messages"].is_array(), "no messages: {v}");
                assert!(v["max_tokens"].as_u64().is_some_and(|n| n > 0), "max_tokens: {v}");
                assert!(v["model"].is_string(), "model: {v}");
                if let Some(m) = &provider.model_override {
                    assert_eq!(v["model"], m.as_str());
                }
                assert_eq!(v["stream"].as_bool().unwrap_or(false), t.stream);
                assert!(!t.include_usage || t.stream, "usage chunk without a stream");
            }
            Err(reply) => {
                assert_eq!(reply.status, 400);
                assert_openai_error(&reply.body);
            }
        }
    }
});
