//! Sticky, weighted assignment of a subject to a variant.
//!
//! The bucket is a pure function of (salt, experiment name, subject id):
//! `h = stable_hash(salt \0 experiment \0 subject)` (FNV-1a 64 + fmix64, see
//! `filter_common::hash`), `point = floor(h * total_weight / 2^64)`, and the variant is the
//! first whose cumulative weight exceeds `point`. Variants keep their configured order, so
//! raising one variant's weight only widens its own range: every subject that was in it stays.

use crate::config::{Experiment, SubjectSource};
use filter_common::hash::stable_hash;
use filter_common::http;

/// The index of the variant that `hash` falls into, given cumulative weights.
pub fn variant_for_hash(bounds: &[u64], hash: u64) -> usize {
    let total = bounds.last().copied().unwrap_or(0);
    let point = ((u128::from(hash) * u128::from(total)) >> 64) as u64;
    bounds.iter().position(|&bound| point < bound).unwrap_or(0)
}

/// What a request offers the assignment.
pub trait RequestSource {
    fn header(&mut self, name: &str) -> Option<&[u8]>;
    fn path(&mut self) -> &[u8];
    fn cookie(&mut self, name: &str) -> Option<&[u8]>;
}

/// Why a request got its variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A valid override header or query parameter named the variant.
    Override,
    /// Hashed from a configured subject source (`x-user-id`, a cookie).
    Subject,
    /// Hashed from the subject id in the sticky cookie.
    Sticky,
    /// No subject: a fresh random id was hashed; the sticky cookie (if configured) carries it.
    Minted(String),
}

impl Origin {
    pub fn label(&self) -> &'static str {
        match self {
            Origin::Override => "override",
            Origin::Subject => "subject",
            Origin::Sticky => "sticky cookie",
            Origin::Minted(_) => "new subject",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub variant: usize,
    pub origin: Origin,
}

/// Longest subject id accepted from the sticky cookie, which the client controls.
const MAX_STICKY_ID: usize = 64;

impl Experiment {
    pub fn applies_to(&self, path: &[u8]) -> bool {
        match &self.path_prefix {
            None => true,
            Some(prefix) => http::path_only(path).starts_with(prefix.as_bytes()),
        }
    }

    /// The variant for a subject id.
    pub fn bucket(&self, subject: &[u8]) -> usize {
        let hash = stable_hash(&[self.salt.as_bytes(), self.name.as_bytes(), subject]);
        variant_for_hash(&self.bounds, hash)
    }

    fn variant_named(&self, value: &[u8]) -> Option<usize> {
        self.variants.iter().position(|v| v.as_bytes() == value)
    }

    /// Assigns the request. `mint` yields random bits for a subject that has no id.
    pub fn assign(&self, request: &mut impl RequestSource, mint: impl FnOnce() -> u64) -> Assignment {
        if let Some(variant) = self.override_variant(request) {
            return Assignment { variant, origin: Origin::Override };
        }
        for source in &self.subject {
            let id = match source {
                SubjectSource::Header(name) => request.header(name),
                SubjectSource::Cookie(name) => request.cookie(name),
            };
            if let Some(id) = id.filter(|id| !id.is_empty()) {
                return Assignment { variant: self.bucket(id), origin: Origin::Subject };
            }
        }
        if let Some(sticky) = &self.sticky {
            if let Some(id) = request.cookie(&sticky.name).filter(|id| is_sticky_id(id)) {
                return Assignment { variant: self.bucket(id), origin: Origin::Sticky };
            }
        }
        let id = format!("{:016x}", mint());
        Assignment { variant: self.bucket(id.as_bytes()), origin: Origin::Minted(id) }
    }

    fn override_variant(&self, request: &mut impl RequestSource) -> Option<usize> {
        if let Some(name) = &self.override_header {
            if let Some(v) = request.header(name).and_then(|value| self.variant_named(value)) {
                return Some(v);
            }
        }
        if let Some(param) = &self.override_query {
            if let Some(v) = http::query_param(request.path(), param).and_then(|value| self.variant_named(&value)) {
                return Some(v);
            }
        }
        None
    }

    /// The `Set-Cookie` value that keeps a minted subject in its variant.
    pub fn sticky_set_cookie(&self, id: &str) -> Option<String> {
        self.sticky.as_ref().map(|s| format!("{}={id}{}", s.name, s.attributes))
    }
}

/// Sticky ids are ours (16 hex digits) or at least look like an id: `[A-Za-z0-9_-]{1,64}`.
fn is_sticky_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_STICKY_ID
        && id.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RawConfig};
    use std::collections::HashMap;

    fn config(json: &str) -> Config {
        filter_common::config::load::<RawConfig, Config>(Some(json.as_bytes())).unwrap()
    }

    fn experiment(weights: &[(&str, i64)]) -> Experiment {
        let variants: Vec<String> =
            weights.iter().map(|(n, w)| format!("{{\"name\": \"{n}\", \"weight\": {w}}}")).collect();
        let json = format!(
            "{{\"experiments\": [{{\"name\": \"checkout\", \"salt\": \"2026-11\", \"header\": \"x-variant\",
              \"subject\": [{{\"header\": \"x-user-id\"}}], \"variants\": [{}]}}]}}",
            variants.join(",")
        );
        config(&json).experiments.remove(0)
    }

    #[derive(Default)]
    struct FakeRequest {
        headers: HashMap<String, Vec<u8>>,
        path: Vec<u8>,
    }

    impl FakeRequest {
        fn with(mut self, name: &str, value: &str) -> Self {
            self.headers.insert(name.to_string(), value.as_bytes().to_vec());
            self
        }
        fn at(mut self, path: &str) -> Self {
            self.path = path.as_bytes().to_vec();
            self
        }
    }

    impl RequestSource for FakeRequest {
        fn header(&mut self, name: &str) -> Option<&[u8]> {
            self.headers.get(name).map(Vec::as_slice)
        }
        fn path(&mut self) -> &[u8] {
            &self.path
        }
        fn cookie(&mut self, name: &str) -> Option<&[u8]> {
            http::cookie(self.headers.get("cookie")?, name)
        }
    }

    #[test]
    fn hash_to_variant_boundaries() {
        let bounds = [90, 100];
        assert_eq!(variant_for_hash(&bounds, 0), 0);
        assert_eq!(variant_for_hash(&bounds, u64::MAX), 1);
        // point = floor(h * 100 / 2^64): the first hash whose point is 90 starts variant 1.
        let first_beta = ((90u128 << 64) / 100 + 1) as u64;
        assert_eq!(variant_for_hash(&bounds, first_beta), 1);
        assert_eq!(variant_for_hash(&bounds, first_beta - 2), 0);
        // A zero-weight variant is never chosen.
        let bounds = [50, 50, 100];
        assert!((0..1000u64).all(|i| variant_for_hash(&bounds, i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) != 1));
    }

    /// Pinned vectors, computed independently (Python) and listed in the README. Changing the
    /// hash or the bucketing moves users in production, so this test must fail first.
    #[test]
    fn assignment_vectors() {
        let e = experiment(&[("control", 90), ("beta", 10)]);
        let cases = [("user-1", "control"), ("user-2", "control"), ("alice", "beta"), ("bob", "control")];
        for (subject, want) in cases {
            assert_eq!(e.variants[e.bucket(subject.as_bytes())], want, "{subject}");
        }
    }

    #[test]
    fn split_of_100k_subjects_is_within_one_point() {
        for weights in [&[("control", 90), ("beta", 10)][..], &[("a", 1), ("b", 1), ("c", 2)], &[("x", 999), ("y", 1)]] {
            let e = experiment(weights);
            let mut counts = vec![0u32; weights.len()];
            for i in 0..100_000 {
                counts[e.bucket(format!("subject-{i}").as_bytes())] += 1;
            }
            let total: i64 = weights.iter().map(|(_, w)| w).sum();
            for ((name, w), got) in weights.iter().zip(&counts) {
                let want = *w as f64 / total as f64 * 100.0;
                let got = f64::from(*got) / 1000.0;
                assert!((want - got).abs() < 1.0, "{name}: want {want:.2}%, got {got:.2}%");
            }
        }
    }

    #[test]
    fn raising_a_weight_only_moves_users_in() {
        type Weights<'a> = &'a [(&'a str, i64)];
        let ramps: [(Weights, Weights, usize); 3] = [
            (&[("control", 90), ("beta", 10)], &[("control", 90), ("beta", 20)], 1),
            (&[("control", 99), ("canary", 1)], &[("control", 95), ("canary", 5)], 1),
            (&[("a", 50), ("b", 25), ("c", 25)], &[("a", 50), ("b", 50), ("c", 25)], 1),
        ];
        for (before, after, raised) in ramps {
            let (old, new) = (experiment(before), experiment(after));
            let mut moved_in = 0;
            for i in 0..50_000 {
                let s = format!("u{i}");
                let (o, n) = (old.bucket(s.as_bytes()), new.bucket(s.as_bytes()));
                assert!(!(o == raised && n != raised), "{s} left the raised variant");
                if o != raised && n == raised {
                    moved_in += 1;
                }
            }
            assert!(moved_in > 0, "the ramp moved nobody in");
        }
    }

    #[test]
    fn assignment_sources_in_order() {
        let c = config(
            r#"{"experiments": [{"name": "checkout", "header": "x-variant", "salt": "s",
                "subject": [{"header": "x-user-id"}, {"cookie": "uid"}],
                "variants": [{"name": "control", "weight": 50}, {"name": "beta", "weight": 50}],
                "override": {"header": "x-force-variant", "query": "variant"},
                "stickyCookie": {"name": "ab_checkout", "maxAgeS": 60, "secure": true, "httpOnly": true, "sameSite": "Lax"}}]}"#,
        );
        let e = &c.experiments[0];
        let never = || -> u64 { panic!("must not mint") };

        let a = e.assign(&mut FakeRequest::default().with("x-force-variant", "beta").with("x-user-id", "u"), never);
        assert_eq!(a, Assignment { variant: 1, origin: Origin::Override });
        let a = e.assign(&mut FakeRequest::default().at("/x?variant=control").with("x-user-id", "u"), never);
        assert_eq!(a, Assignment { variant: 0, origin: Origin::Override });

        // An override naming no variant is ignored.
        let a = e.assign(&mut FakeRequest::default().with("x-force-variant", "gamma").with("x-user-id", "u1"), never);
        assert_eq!(a, Assignment { variant: e.bucket(b"u1"), origin: Origin::Subject });

        // Header first, then the cookie subject, then the sticky cookie.
        let a = e.assign(&mut FakeRequest::default().with("cookie", "uid=c9; ab_checkout=s1"), never);
        assert_eq!(a, Assignment { variant: e.bucket(b"c9"), origin: Origin::Subject });
        let a = e.assign(&mut FakeRequest::default().with("cookie", "ab_checkout=0123abcd"), never);
        assert_eq!(a, Assignment { variant: e.bucket(b"0123abcd"), origin: Origin::Sticky });

        // No subject: a minted id, which the cookie carries back.
        let a = e.assign(&mut FakeRequest::default(), || 0xabc);
        assert_eq!(a.origin, Origin::Minted("0000000000000abc".into()));
        assert_eq!(a.variant, e.bucket(b"0000000000000abc"));
        assert_eq!(
            e.sticky_set_cookie("0000000000000abc").unwrap(),
            "ab_checkout=0000000000000abc; Max-Age=60; Path=/; Secure; HttpOnly; SameSite=Lax"
        );

        // A malformed sticky cookie is not trusted.
        let a = e.assign(&mut FakeRequest::default().with("cookie", "ab_checkout=a.b"), || 1);
        assert!(matches!(a.origin, Origin::Minted(_)));
        let a = e.assign(&mut FakeRequest::default().with("cookie", "ab_checkout=\u{7f}x"), || 1);
        assert!(matches!(a.origin, Origin::Minted(_)));
        let long = format!("ab_checkout={}", "a".repeat(65));
        assert!(matches!(e.assign(&mut FakeRequest::default().with("cookie", &long), || 1).origin, Origin::Minted(_)));
        // Empty subject values count as absent.
        let a = e.assign(&mut FakeRequest::default().with("x-user-id", ""), || 2);
        assert!(matches!(a.origin, Origin::Minted(_)));
    }

    #[test]
    fn path_match() {
        let c = config(
            r#"{"experiments": [{"name": "e", "header": "x-v", "variants": [{"name": "a", "weight": 1}],
                "match": {"pathPrefix": "/api/"}}]}"#,
        );
        let e = &c.experiments[0];
        assert!(e.applies_to(b"/api/tasks?x=1"));
        assert!(!e.applies_to(b"/apix"));
        assert!(!e.applies_to(b"/health?/api/"));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (r#"{"experiments": []}"#, "experiments: must list at least one experiment"),
            (r#"{"experiments": [{"name": "e", "header": "x-v", "variants": []}]}"#, "experiments[0].variants: must list at least one variant"),
            (r#"{"experiments": [{"name": "e", "header": "x-v", "variants": [{"name": "a", "weight": -1}]}]}"#, "experiments[0].variants[0].weight: must not be negative"),
            (r#"{"experiments": [{"name": "e", "header": "x-v", "variants": [{"name": "a", "weight": 0}, {"name": "b", "weight": 0}]}]}"#, "experiments[0].variants: weights sum to 0"),
            (r#"{"experiments": [{"name": "e", "header": "x-v", "variants": [{"name": "a", "weight": 1}, {"name": "a", "weight": 1}]}]}"#, "experiments[0].variants: duplicate `a`"),
            (r#"{"experiments": [{"name": "e", "header": "", "variants": [{"name": "a", "weight": 1}]}]}"#, "experiments[0].header: must not be empty"),
            (r#"{"experiments": [{"name": "e", "header": "x-v", "variants": [{"name": "a", "weight": 1}], "colour": 1}]}"#, "experiments[0].colour: unknown field `colour`"),
            (r#"{"experiments": [{"name": "e", "header": "x-v", "variants": [{"name": "a", "weight": 1}]}, {"name": "e", "header": "x-w", "variants": [{"name": "a", "weight": 1}]}]}"#, "experiments: duplicate `e`"),
            (r#"{"experiments": [{"name": "e", "header": "x-v", "variants": [{"name": "a", "weight": 1}]}, {"name": "f", "header": "X-V", "variants": [{"name": "a", "weight": 1}]}]}"#, "experiments: two experiments set the same header: duplicate `x-v`"),
            (r#"{"experiments": [{"name": "e e", "header": "x-v", "variants": [{"name": "a", "weight": 1}]}]}"#, "experiments[0].name: `e e` may only contain A-Z a-z 0-9 _ -"),
            (r#"{"experiments": [{"name": "e", "header": "x-v", "subject": [{}], "variants": [{"name": "a", "weight": 1}]}]}"#, "experiments[0].subject[0]: needs exactly one of `header` or `cookie`"),
            (r#"{"experiments": [{"name": "e", "header": "x-v", "variants": [{"name": "a", "weight": 1}], "override": {"header": "X-V"}}]}"#, "experiments[0].override.header: must differ from `header`"),
            (r#"{"experiments": [{"name": "e", "header": "x-v", "variants": [{"name": "a", "weight": 1}], "stickyCookie": {"name": "c", "sameSite": "lax"}}]}"#, "experiments[0].stickyCookie.sameSite: `lax` is not Strict, Lax or None"),
            (r#"{"experiments": [{"name": "e", "header": "x-v", "variants": [{"name": "a", "weight": 1}], "match": {"pathPrefix": "api"}}]}"#, "experiments[0].match.pathPrefix: must start with `/`"),
            (r#"{"experiments": [{"name": "e", "header": "x-v", "variants": [{"name": "a", "weight": "1"}]}]}"#, "experiments[0].variants[0].weight: invalid type: string \"1\", expected i64"),
            (r#"{"experiments": [{"name": "e", "header": ":path", "variants": [{"name": "a", "weight": 1}]}]}"#, "experiments[0].header: `:path` is not a valid header name"),
        ];
        for (json, want) in cases {
            let err = filter_common::config::load::<RawConfig, Config>(Some(json.as_bytes())).unwrap_err().to_string();
            assert!(err.starts_with(want), "config {json}\n want {want}\n got  {err}");
        }
    }
}
