//! token-budget's config loader: any bytes compile to a config or give one error naming a field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_budget::config::{Config, RawConfig};

fuzz_target!(|data: &[u8]| {
    let _ = llm_filters_fuzz::load_config::<RawConfig, Config>(data);
});
