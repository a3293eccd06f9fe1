//! The decision for one request: find the token, check it against the required providers
//! (cache first, then claims, then the signature), and say what to forward.

use crate::cache::{Verified, VerifiedCache};
use crate::claims::{self, ClaimRules};
use crate::config::{Config, Provider};
use crate::extract::{self, RequestView};
use crate::jwks::{self, Jwk, KeySet};
use crate::token::{self, Failure, Token};
use std::borrow::Cow;
use std::rc::Rc;

/// The remote key set of a provider, as this VM has it.
#[derive(Debug, Clone, Default)]
pub enum RemoteKeys {
    /// The provider has no `remoteJwks`.
    #[default]
    NotConfigured,
    /// Configured, but no fetch has succeeded yet.
    NotLoaded,
    Loaded(Rc<KeySet>),
}

/// What to do with the request.
#[derive(Debug)]
pub enum Decision {
    /// Forward it: set the verified headers, and take the token out of the places in
    /// `strip` (`(provider, source)` indices into the configuration; empty when the provider
    /// forwards the token).
    Allow { verified: Rc<Verified>, strip: Vec<(usize, usize)>, cache_hit: bool },
    Deny(Failure),
    /// The provider's remote keys may hold the key this token needs, once fetched: `refetch`
    /// when the keys are loaded but lack the token's `kid`.
    Wait { provider: usize, refetch: bool },
}

/// What the decision needs besides the request.
pub struct Context<'a> {
    pub config: &'a Config,
    /// `remote[i]`: provider i's remote keys.
    pub remote: &'a [RemoteKeys],
    pub cache: &'a mut VerifiedCache,
    pub now_s: u64,
    /// False once the fetch a request waited for has completed: a missing key is then final.
    pub may_wait: bool,
}

enum Outcome {
    Verified(Rc<Verified>),
    Failed(Failure),
    Wait { refetch: bool },
}

/// Decides for a request that requires one of `providers`.
pub fn authenticate(request: &dyn RequestView, providers: &[usize], cx: &mut Context<'_>) -> Decision {
    let config = cx.config;
    // Every location of every required provider, with what it holds.
    let mut found: Vec<(usize, usize, Cow<'_, [u8]>)> = Vec::new();
    for &p in providers {
        let Some(provider) = config.providers.get(p) else { continue };
        for (i, source) in provider.sources.iter().enumerate() {
            for token in extract::find(request, source) {
                found.push((p, i, token));
            }
        }
    }
    let Some((_, _, token)) = found.first() else { return Decision::Deny(Failure::Missing) };
    // Two different tokens: which one would the upstream believe? Refuse, as jwt_authn does.
    if found.iter().skip(1).any(|(_, _, t)| t != token) {
        return Decision::Deny(Failure::MultipleTokens);
    }
    let token: &[u8] = token;
    if token.len() > config.max_token_bytes {
        return Decision::Deny(Failure::TooLarge);
    }
    let strip_for = |provider: usize| -> Vec<(usize, usize)> {
        if config.providers.get(provider).is_some_and(|p| p.forward) {
            return Vec::new();
        }
        found.iter().map(|(p, i, _)| (*p, *i)).collect()
    };

    if let Some(verified) = cx.cache.get(token, providers, cx.now_s) {
        let strip = strip_for(verified.provider);
        return Decision::Allow { verified, strip, cache_hit: true };
    }

    let parsed = match token::parse(token) {
        Ok(t) => t,
        Err(f) => return Decision::Deny(f),
    };
    let mut failure: Option<Failure> = None;
    let mut wait: Option<(usize, bool)> = None;
    for &p in providers {
        if !found.iter().any(|(fp, _, _)| *fp == p) {
            continue;
        }
        let Some(provider) = config.providers.get(p) else { continue };
        let remote = cx.remote.get(p).cloned().unwrap_or_default();
        match check_with(provider, p, &parsed, &remote, cx) {
            Outcome::Verified(v) => {
                cx.cache.insert(token, v.clone());
                let strip = strip_for(p);
                return Decision::Allow { verified: v, strip, cache_hit: false };
            }
            Outcome::Wait { refetch } => {
                wait.get_or_insert((p, refetch));
            }
            Outcome::Failed(f) => {
                // A provider whose issuer the token names says more than one that does not.
                if failure.is_none_or(|prev| prev == Failure::UnknownIssuer) {
                    failure = Some(f);
                }
            }
        }
    }
    if let Some((provider, refetch)) = wait {
        return Decision::Wait { provider, refetch };
    }
    Decision::Deny(failure.unwrap_or(Failure::VerificationFails))
}

fn check_with(provider: &Provider, index: usize, token: &Token<'_>, remote: &RemoteKeys, cx: &Context<'_>) -> Outcome {
    let rules = ClaimRules {
        issuer: provider.issuer.as_deref(),
        audiences: &provider.audiences,
        clock_skew_s: provider.clock_skew_s,
        require_exp: provider.require_exp,
    };
    let exp = match claims::check(&token.claims, &rules, cx.now_s) {
        Ok(exp) => exp,
        Err(f) => return Outcome::Failed(f),
    };
    let remote_keys = match remote {
        RemoteKeys::Loaded(set) => Some(set.as_ref()),
        _ => None,
    };
    let sets = provider.local_keys.iter().chain(remote_keys);
    let candidates: Vec<&Jwk> = match &token.kid {
        Some(kid) => sets.flat_map(|s| s.keys.iter()).filter(|k| k.kid.as_deref() == Some(kid.as_str())).collect(),
        None => sets.flat_map(|s| s.keys.iter()).collect(),
    };
    let usable: Vec<&Jwk> = candidates.iter().copied().filter(|k| k.accepts(token.alg)).collect();
    if usable.is_empty() {
        // Keys not fetched yet, or a kid the fetched set does not have: a (re)fetch may help.
        // A kid that names a key of another family never will.
        let may_appear = candidates.is_empty();
        return match remote {
            RemoteKeys::NotLoaded if cx.may_wait => Outcome::Wait { refetch: false },
            RemoteKeys::NotLoaded => Outcome::Failed(Failure::JwksUnavailable),
            RemoteKeys::Loaded(_) if cx.may_wait && may_appear && token.kid.is_some() => Outcome::Wait { refetch: true },
            _ => Outcome::Failed(Failure::NoMatchingKey),
        };
    }
    if !usable.iter().any(|k| jwks::verify(token.alg, k, token.signing_input, &token.signature)) {
        return Outcome::Failed(Failure::VerificationFails);
    }
    Outcome::Verified(Rc::new(verified(provider, index, token, exp, cx.config.max_claim_bytes)))
}

/// The header values a verified token grants.
fn verified(provider: &Provider, index: usize, token: &Token<'_>, exp: Option<u64>, max_claim_bytes: usize) -> Verified {
    let mut headers = Vec::new();
    let mut rejected_claims = 0;
    for c in &provider.claim_to_headers {
        match claims::header_value(&token.claims, &c.claim, max_claim_bytes) {
            Ok(Some(value)) => headers.push((c.header.clone(), value)),
            Ok(None) => {}
            Err(_) => rejected_claims += 1,
        }
    }
    if let Some(h) = &provider.forward_payload_header {
        headers.push((h.clone(), String::from_utf8_lossy(token.payload_b64).into_owned()));
    }
    Verified { provider: index, headers, rejected_claims, valid_until_s: exp.map(|e| e.saturating_add(provider.clock_skew_s)) }
}
