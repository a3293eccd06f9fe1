//! Properties of the bucketing, over generated experiments and subjects:
//! - stable: the variant is the documented function of (salt, experiment, subject, weights),
//!   computed here independently, so every worker, replica and release agrees;
//! - monotone: raising one variant's weight never moves a subject out of that variant, and
//!   lowering it never moves a subject into it;
//! - a variant of weight 0 is never chosen.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ab_variant::config::{Config, Experiment, RawConfig};
use proptest::prelude::*;

fn experiment(salt: &str, name: &str, weights: &[u32]) -> Experiment {
    let variants: Vec<String> = weights.iter().enumerate().map(|(i, w)| format!(r#"{{"name": "v{i}", "weight": {w}}}"#)).collect();
    let json = format!(
        r#"{{"experiments": [{{"name": {}, "salt": {}, "header": "x-variant", "variants": [{}]}}]}}"#,
        serde_json::to_string(name).unwrap(),
        serde_json::to_string(salt).unwrap(),
        variants.join(",")
    );
    filter_common::config::load::<RawConfig, Config>(Some(json.as_bytes())).unwrap().experiments.remove(0)
}

/// The README's definition, written out again: FNV-1a 64 over `salt \0 experiment \0 subject`,
/// MurmurHash3's fmix64, `point = floor(h * total / 2^64)`, first cumulative weight above it.
fn documented_variant(salt: &[u8], name: &[u8], subject: &[u8], weights: &[u32]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in salt.iter().chain(&[0]).chain(name).chain(&[0]).chain(subject) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    let point = (u128::from(h) * total) >> 64;
    let mut cumulative = 0u128;
    for (i, &w) in weights.iter().enumerate() {
        cumulative += u128::from(w);
        if point < cumulative {
            return i;
        }
    }
    unreachable!("point < total")
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,64}"
}

/// 1 to 8 weights, at least one non-zero, each at most the allowed 1,000,000.
fn weights() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(prop_oneof![Just(0u32), 1u32..=100, 1u32..=1_000_000], 1..=8)
        .prop_filter("weights must not all be 0", |w| w.iter().any(|&x| x > 0))
}

fn subjects() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..48), 1..64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn bucketing_is_the_documented_function(salt in ".{0,16}", name in name(), weights in weights(), subjects in subjects()) {
        let e = experiment(&salt, &name, &weights);
        for s in &subjects {
            let got = e.bucket(s);
            prop_assert_eq!(got, documented_variant(salt.as_bytes(), name.as_bytes(), s, &weights));
            prop_assert_eq!(got, e.bucket(s), "the same subject twice");
            prop_assert!(weights[got] > 0, "a zero-weight variant was chosen");
        }
    }

    #[test]
    fn changing_one_weight_moves_subjects_only_into_or_out_of_that_variant(
        name in name(),
        weights in weights(),
        pick in any::<prop::sample::Index>(),
        new_weight in 0u32..=1_000_000,
        subjects in subjects(),
    ) {
        let i = pick.index(weights.len());
        let mut changed = weights.clone();
        changed[i] = new_weight;
        prop_assume!(changed.iter().any(|&w| w > 0));
        let (before, after) = (experiment("s", &name, &weights), experiment("s", &name, &changed));
        for s in &subjects {
            let (b, a) = (before.bucket(s), after.bucket(s));
            if new_weight >= weights[i] {
                prop_assert!(!(b == i && a != i), "raising v{} from {} to {} moved a subject out of it (to v{})", i, weights[i], new_weight, a);
            } else {
                prop_assert!(!(b != i && a == i), "lowering v{} from {} to {} moved a subject into it (from v{})", i, weights[i], new_weight, b);
            }
        }
    }
}
