//! Remote JWKS shared by every worker of one Envoy: one fetch for the whole process, the last
//! good key set kept through outages, refreshes before the cache duration runs out, and
//! rate-limited refetches when a token names a key the set lacks.
//!
//! Per provider, shared data holds two keys:
//! - `<prefix>.jwks`: the last good JWKS document;
//! - `<prefix>.meta`: `generation fetched_ns attempt_ns completed_ns lease_until_ns failures`.
//!
//! A worker that wants a fetch takes the lease with a CAS write on `meta` (proxy-wasm has no
//! locks); only the winner dispatches the call. It writes the document before bumping the
//! generation, so a worker that sees a new generation reads at least that document. Workers
//! read `meta` on their ticks and parse the document only when the generation moved.

use crate::config::RemoteJwks;
use crate::jwks::KeySet;
use filter_common::hash::stable_hash;
use filter_common::shared::{update, SharedStore, Update};
use std::rc::Rc;

/// Without any keys, a failed fetch is retried this soon.
pub const RETRY_WITHOUT_KEYS_NS: u64 = 1_000_000_000;
/// With keys, a failed refresh or a refetch for an unknown `kid` waits this long after the
/// previous attempt: a stream of tokens with made-up kids costs the JWKS server at most one
/// request per interval for the whole Envoy.
pub const REFETCH_INTERVAL_NS: u64 = 5_000_000_000;
const CAS_ATTEMPTS: u32 = 8;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    pub generation: u64,
    /// When the current document was fetched (0: never).
    pub fetched_ns: u64,
    /// When the last attempt started, and when the last attempt (success or not) completed.
    pub attempt_ns: u64,
    pub completed_ns: u64,
    /// A fetch is in flight until then (0: none).
    pub lease_until_ns: u64,
    /// Failed attempts since the last success.
    pub failures: u64,
}

impl Meta {
    fn encode(&self) -> Vec<u8> {
        format!(
            "{} {} {} {} {} {}",
            self.generation, self.fetched_ns, self.attempt_ns, self.completed_ns, self.lease_until_ns, self.failures
        )
        .into_bytes()
    }

    fn decode(bytes: &[u8]) -> Meta {
        let text = std::str::from_utf8(bytes).unwrap_or_default();
        let mut v = text.split(' ').map(|s| s.parse::<u64>().unwrap_or(0));
        let mut next = || v.next().unwrap_or(0);
        Meta { generation: next(), fetched_ns: next(), attempt_ns: next(), completed_ns: next(), lease_until_ns: next(), failures: next() }
    }

    pub fn in_flight(&self, now_ns: u64) -> bool {
        self.lease_until_ns > now_ns
    }
}

/// Why a fetch is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The first fetch, or a retry while there are no keys.
    Initial,
    /// The document is getting old.
    Refresh,
    /// A token named a `kid` the set does not have.
    UnknownKid,
}

/// One provider's remote key set, as one VM sees and maintains it.
pub struct RemoteSet {
    pub config: RemoteJwks,
    meta_key: String,
    jwks_key: String,
    /// The generation of `keys`.
    generation: u64,
    pub keys: Option<Rc<KeySet>>,
    /// When this VM last took up a new key set (0: never).
    pub updated_ns: u64,
    /// The token of this VM's call in flight, if it holds the lease.
    pub call: Option<u32>,
}

impl RemoteSet {
    pub fn new(provider: &str, config: RemoteJwks) -> RemoteSet {
        // Two filter instances in one VM id may name providers alike with other endpoints.
        let id = stable_hash(&[config.cluster.as_bytes(), config.authority.as_bytes(), config.path.as_bytes()]);
        let prefix = format!("jwt_claims.{provider}.{id:016x}");
        RemoteSet { meta_key: format!("{prefix}.meta"), jwks_key: format!("{prefix}.jwks"), config, generation: 0, keys: None, updated_ns: 0, call: None }
    }

    pub fn meta(&self, store: &dyn SharedStore) -> Meta {
        store.get(&self.meta_key).map(|(v, _)| Meta::decode(&v)).unwrap_or_default()
    }

    /// Picks up a document another worker fetched. Returns true when the keys changed.
    pub fn poll(&mut self, store: &dyn SharedStore, now_ns: u64) -> bool {
        let meta = self.meta(store);
        if meta.generation == self.generation {
            return false;
        }
        let Some((doc, _)) = store.get(&self.jwks_key) else { return false };
        match KeySet::parse(&doc) {
            Ok(parsed) => {
                self.keys = Some(Rc::new(parsed.set));
                self.generation = meta.generation;
                self.updated_ns = now_ns;
                true
            }
            Err(_) => false,
        }
    }

    /// Whether a fetch for `reason` is due at `now_ns`, given `meta`.
    pub fn due(&self, meta: &Meta, reason: Reason, now_ns: u64) -> bool {
        if meta.in_flight(now_ns) {
            return false;
        }
        let since_attempt = now_ns.saturating_sub(meta.attempt_ns);
        match reason {
            Reason::Initial => meta.fetched_ns == 0 && (meta.attempt_ns == 0 || since_attempt >= RETRY_WITHOUT_KEYS_NS),
            Reason::Refresh => {
                let refresh_at = meta.fetched_ns.saturating_add(self.config.cache_duration_s * 1_000_000_000 / 10 * 8);
                meta.fetched_ns != 0 && now_ns >= refresh_at && (meta.failures == 0 || since_attempt >= REFETCH_INTERVAL_NS)
            }
            Reason::UnknownKid => meta.fetched_ns != 0 && since_attempt >= REFETCH_INTERVAL_NS,
        }
    }

    /// Takes the lease if a fetch for `reason` is due; true when this VM should dispatch it.
    pub fn acquire(&self, store: &dyn SharedStore, reason: Reason, now_ns: u64) -> bool {
        let lease_ns = (self.config.timeout_ms + 1000) * 1_000_000;
        update(store, &self.meta_key, CAS_ATTEMPTS, |current| {
            let meta = current.map(Meta::decode).unwrap_or_default();
            if !self.due(&meta, reason, now_ns) {
                return Update::Keep(false);
            }
            let next = Meta { attempt_ns: now_ns, lease_until_ns: now_ns + lease_ns, ..meta };
            Update::Write(next.encode(), true)
        })
        .unwrap_or(false)
    }

    /// Records a fetched document: parses it, and on success stores it for every worker.
    /// A document that does not parse counts as a failed fetch and changes nothing else.
    pub fn complete(&mut self, store: &dyn SharedStore, body: Option<&[u8]>, now_ns: u64) -> Result<usize, String> {
        self.call = None;
        let parsed = match body.map(KeySet::parse) {
            Some(Ok(parsed)) => parsed,
            Some(Err(e)) => {
                self.record_failure(store, now_ns);
                return Err(format!("JWKS {}", e.0));
            }
            None => {
                self.record_failure(store, now_ns);
                return Err("JWKS fetch failed (no response, a timeout or a non-200 status)".into());
            }
        };
        let count = parsed.set.len();
        let doc = body.unwrap_or_default();
        let _ = store.set(&self.jwks_key, doc, 0);
        let generation = update(store, &self.meta_key, CAS_ATTEMPTS, |current| {
            let meta = current.map(Meta::decode).unwrap_or_default();
            let generation = meta.generation + 1;
            let next = Meta { generation, fetched_ns: now_ns, completed_ns: now_ns, lease_until_ns: 0, failures: 0, ..meta };
            Update::Write(next.encode(), generation)
        })
        .unwrap_or(self.generation);
        self.generation = generation;
        self.keys = Some(Rc::new(parsed.set));
        self.updated_ns = now_ns;
        Ok(count)
    }

    fn record_failure(&self, store: &dyn SharedStore, now_ns: u64) {
        let _ = update(store, &self.meta_key, CAS_ATTEMPTS, |current| {
            let meta = current.map(Meta::decode).unwrap_or_default();
            let next = Meta { completed_ns: now_ns, lease_until_ns: 0, failures: meta.failures + 1, ..meta };
            Update::Write(next.encode(), ())
        });
    }

    /// A call could not even be dispatched (an unknown cluster): release the lease.
    pub fn dispatch_failed(&mut self, store: &dyn SharedStore, now_ns: u64) {
        self.call = None;
        self.record_failure(store, now_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use filter_common::shared::MemoryStore;

    const S: u64 = 1_000_000_000;

    fn remote() -> RemoteJwks {
        RemoteJwks { cluster: "jwks".into(), authority: "idp".into(), path: "/jwks".into(), cache_duration_s: 100, timeout_ms: 2000 }
    }

    /// A JWKS with one Ed25519 key (the RFC 8037 A.2 public key).
    const DOC: &[u8] = br#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

    #[test]
    fn one_fetch_for_all_workers_and_the_document_is_shared() {
        let store = MemoryStore::new();
        let (mut a, mut b) = (RemoteSet::new("idp", remote()), RemoteSet::new("idp", remote()));
        assert!(a.acquire(&store, Reason::Initial, 10 * S));
        assert!(!b.acquire(&store, Reason::Initial, 10 * S), "the lease is taken");
        assert!(b.meta(&store).in_flight(10 * S));
        assert_eq!(a.complete(&store, Some(DOC), 11 * S), Ok(1));
        assert!(b.poll(&store, 11 * S), "b picks up a's document");
        assert!(b.keys.as_ref().unwrap().has_kid("k1"));
        assert!(!b.poll(&store, 12 * S), "nothing new");
        assert_eq!(b.updated_ns, 11 * S);
        assert!(!b.acquire(&store, Reason::Initial, 12 * S), "keys exist: no initial fetch");
    }

    #[test]
    fn refresh_before_the_cache_duration_runs_out() {
        let store = MemoryStore::new();
        let mut a = RemoteSet::new("idp", remote());
        assert!(a.acquire(&store, Reason::Initial, S));
        a.complete(&store, Some(DOC), S).unwrap();
        assert!(!a.acquire(&store, Reason::Refresh, 80 * S), "not yet at 80% of 100 s");
        assert!(a.acquire(&store, Reason::Refresh, 81 * S));
        // The refresh fails: the keys stay, and the next try waits for the interval.
        assert!(a.complete(&store, Some(b"<html>oops</html>"), 82 * S).is_err());
        assert!(a.keys.is_some(), "the last good key set is kept");
        assert_eq!(a.meta(&store).failures, 1);
        assert!(!a.acquire(&store, Reason::Refresh, 85 * S));
        assert!(a.acquire(&store, Reason::Refresh, 86 * S));
    }

    #[test]
    fn unknown_kid_refetches_are_rate_limited() {
        let store = MemoryStore::new();
        let mut a = RemoteSet::new("idp", remote());
        assert!(!a.acquire(&store, Reason::UnknownKid, S), "no keys yet: that is the initial fetch's job");
        assert!(a.acquire(&store, Reason::Initial, S));
        a.complete(&store, Some(DOC), S).unwrap();
        assert!(!a.acquire(&store, Reason::UnknownKid, 3 * S));
        assert!(a.acquire(&store, Reason::UnknownKid, 6 * S));
        assert!(!a.acquire(&store, Reason::UnknownKid, 6 * S), "in flight");
        a.complete(&store, None, 7 * S).unwrap_err();
        assert!(!a.acquire(&store, Reason::UnknownKid, 10 * S));
        assert!(a.acquire(&store, Reason::UnknownKid, 11 * S));
    }

    #[test]
    fn without_keys_failures_retry_every_second_and_stale_leases_expire() {
        let store = MemoryStore::new();
        let mut a = RemoteSet::new("idp", remote());
        assert!(a.acquire(&store, Reason::Initial, 10 * S));
        a.dispatch_failed(&store, 10 * S);
        assert!(!a.acquire(&store, Reason::Initial, 10 * S + S / 2));
        assert!(a.acquire(&store, Reason::Initial, 11 * S));
        // This worker never answers (its VM died): the lease runs out after timeout + 1 s.
        let b = RemoteSet::new("idp", remote());
        assert!(!b.acquire(&store, Reason::Initial, 13 * S));
        assert!(b.acquire(&store, Reason::Initial, 14 * S));
    }

    #[test]
    fn keys_are_per_endpoint() {
        let other = RemoteJwks { path: "/other".into(), ..remote() };
        assert_ne!(RemoteSet::new("idp", remote()).meta_key, RemoteSet::new("idp", other).meta_key);
        assert_eq!(Meta::decode(b"garbage"), Meta::default());
        let m = Meta { generation: 3, fetched_ns: 4, attempt_ns: 5, completed_ns: 6, lease_until_ns: 7, failures: 8 };
        assert_eq!(Meta::decode(&m.encode()), m);
    }
}
