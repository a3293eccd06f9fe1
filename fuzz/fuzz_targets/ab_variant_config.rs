//! ab-variant's config loader: any bytes compile to a config whose invariants hold, or give
//! one error naming a field.
#![no_main]

use ab_variant::config::{Config, RawConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(config) = llm_filters_fuzz::load_config::<RawConfig, Config>(data) {
        assert!(!config.experiments.is_empty());
        for e in &config.experiments {
            assert_eq!(e.bounds.len(), e.variants.len());
            assert!(e.bounds.windows(2).all(|w| w[0] <= w[1]), "bounds are cumulative");
            assert!(e.bounds.last().copied().unwrap_or(0) > 0, "weights sum to more than 0");
            // Every hash lands on a variant with a non-zero weight.
            for h in [0, 1, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
                let v = ab_variant::assign::variant_for_hash(&e.bounds, h);
                let low = if v == 0 { 0 } else { e.bounds[v - 1] };
                assert!(e.bounds[v] > low, "hash {h} chose zero-weight variant {v}");
            }
        }
    }
});
