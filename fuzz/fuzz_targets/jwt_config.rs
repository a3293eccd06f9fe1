//! jwt-claims' config loader (providers, inline JWKS, rules): any bytes compile or give one
//! error naming a field.
#![no_main]

use jwt_claims::config::{Config, RawConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = llm_filters_fuzz::load_config::<RawConfig, Config>(data);
});
