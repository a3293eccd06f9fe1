//! provider-fallback's config loader: any bytes compile or give one error naming a field, and
//! no error message or debug print ever contains a key read from the environment.
#![no_main]

use filter_common::config::parse_json;
use libfuzzer_sys::fuzz_target;
use provider_fallback::config::{Config, RawConfig};

const SECRET: &str = "sk-fuzz-env-secret-0123456789";

fuzz_target!(|data: &[u8]| {
    if data.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()) {
        // The config itself holds the text (an inline key, a field name): errors may quote it.
        return;
    }
    let raw: RawConfig = match parse_json(data) {
        Ok(raw) => raw,
        Err(e) => {
            assert!(!e.to_string().contains(SECRET));
            return;
        }
    };
    let env = |name: &str| (name.starts_with("OPENAI") || name.starts_with("ANTHROPIC")).then(|| SECRET.to_string());
    match Config::compile(raw, &env) {
        Ok(config) => {
            assert!(!format!("{config:?}").contains(SECRET), "a key in a debug print");
            if let Config::Upstream(u) = &config {
                assert!(!u.providers.is_empty());
                for p in &u.providers {
                    assert!(!p.key.expose().is_empty());
                    assert!(p.path_prefix.starts_with('/') && !p.path_prefix.ends_with('/') || p.path_prefix.is_empty());
                }
            }
        }
        Err(e) => assert!(!e.to_string().contains(SECRET), "a key in a config error: {e}"),
    }
});
