//! Proxy-wide shared data with compare-and-swap, as the logic sees it.
//!
//! Envoy keeps one shared-data map per VM id for all worker threads. A value carries a CAS
//! number; a write with a non-zero CAS fails with `CasMismatch` if another write came in
//! between. A write with CAS 0 is unconditional, and a key that does not exist yet is always
//! written, whatever the CAS. proxy-wasm has no create-if-absent, but a write with a CAS the
//! key cannot have ([`CREATE_CAS`]) is one: it creates a missing key and fails with a mismatch
//! on a key another worker created in between. [`update`] creates keys that way, so two
//! workers that both see a key missing cannot both create it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// A failed compare-and-swap: someone else wrote the key since it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CasMismatch;

/// Envoy's shared data, or a test double of it.
pub trait SharedStore {
    /// The value and its CAS number, or `None` when the key was never written.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes `value` if the key's CAS is still `cas` (0: unconditionally).
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch>;
}

/// A monotonic clock in nanoseconds since the Unix epoch, as Envoy's
/// `proxy_get_current_time_nanoseconds` reports it.
pub trait Clock {
    fn now_ns(&self) -> u64;
    fn now_s(&self) -> u64 {
        self.now_ns() / 1_000_000_000
    }
}

/// What an [`update`] step decided.
pub enum Update<T> {
    /// Write this value, then return `T`.
    Write(Vec<u8>, T),
    /// Leave the key as it is and return `T`.
    Keep(T),
}

/// The key kept changing under us for every attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contended;

/// The CAS a create-if-absent write carries. Envoy's CAS numbers come from one counter per
/// process that skips 0, so an existing key holds `u32::MAX` only for the one write made when
/// that counter passes it (about once per four billion writes): the only case in which a
/// create would overwrite instead of failing.
pub const CREATE_CAS: u32 = u32::MAX;

/// Read-modify-write with CAS retries. `step` sees the current value (`None` if absent) and
/// may be called several times; it must not have side effects beyond computing the result.
/// A missing key is created with [`CREATE_CAS`], so a concurrent first write is not lost.
pub fn update<S, T, F>(store: &S, key: &str, attempts: u32, mut step: F) -> Result<T, Contended>
where
    S: SharedStore + ?Sized,
    F: FnMut(Option<&[u8]>) -> Update<T>,
{
    for _ in 0..attempts.max(1) {
        let current = store.get(key);
        let (value, cas) = match &current {
            Some((value, cas)) => (Some(value.as_slice()), *cas),
            None => (None, CREATE_CAS),
        };
        match step(value) {
            Update::Keep(out) => return Ok(out),
            Update::Write(new, out) => {
                if store.set(key, &new, cas).is_ok() {
                    return Ok(out);
                }
            }
        }
    }
    Err(Contended)
}

/// An in-memory [`SharedStore`] with Envoy's semantics, for native tests.
#[derive(Default)]
pub struct MemoryStore {
    entries: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: Cell<u32>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.borrow().is_empty()
    }

    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.entries.borrow().keys().cloned().collect();
        keys.sort();
        keys
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.entries.borrow().get(key).cloned()
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
        let mut entries = self.entries.borrow_mut();
        if let Some((_, current)) = entries.get(key) {
            if cas != 0 && cas != *current {
                return Err(CasMismatch);
            }
        }
        let next = self.next_cas.get().wrapping_add(1).max(1);
        self.next_cas.set(next);
        entries.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }
}

/// A clock a test sets by hand.
#[derive(Default)]
pub struct ManualClock(pub Cell<u64>);

impl ManualClock {
    pub fn at_s(seconds: u64) -> Self {
        ManualClock(Cell::new(seconds * 1_000_000_000))
    }
    pub fn advance_s(&self, seconds: u64) {
        self.0.set(self.0.get() + seconds * 1_000_000_000);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.0.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(store: &MemoryStore, key: &str, n: u64) -> Result<u64, Contended> {
        update(store, key, 8, |v| {
            let cur = v.and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok()).unwrap_or(0);
            Update::Write((cur + n).to_string().into_bytes(), cur + n)
        })
    }

    #[test]
    fn cas_semantics_match_envoy() {
        let s = MemoryStore::new();
        assert_eq!(s.get("k"), None);
        // A missing key is written whatever the CAS.
        s.set("k", b"1", 77).unwrap();
        let (_, cas) = s.get("k").unwrap();
        assert_eq!(s.set("k", b"2", cas + 1), Err(CasMismatch));
        s.set("k", b"2", cas).unwrap();
        assert_eq!(s.set("k", b"3", cas), Err(CasMismatch));
        s.set("k", b"4", 0).unwrap();
        assert_eq!(s.get("k").unwrap().0, b"4");
    }

    #[test]
    fn update_retries_after_a_concurrent_write() {
        let s = MemoryStore::new();
        add(&s, "n", 1).unwrap();
        // Interleave: a step that sees one value while another writer sneaks in once.
        let mut sneaked = false;
        let out = update(&s, "n", 4, |v| {
            let cur: u64 = std::str::from_utf8(v.unwrap()).unwrap().parse().unwrap();
            if !sneaked {
                sneaked = true;
                let (_, cas) = s.get("n").unwrap();
                s.set("n", b"10", cas).unwrap();
            }
            Update::Write((cur + 5).to_string().into_bytes(), cur + 5)
        })
        .unwrap();
        assert_eq!(out, 15, "the retry must build on the concurrent write");
        assert_eq!(s.get("n").unwrap().0, b"15");
    }

    #[test]
    fn update_gives_up_when_always_contended() {
        let s = MemoryStore::new();
        s.set("n", b"0", 0).unwrap();
        let r: Result<(), Contended> = update(&s, "n", 3, |_| {
            s.set("n", b"x", 0).unwrap();
            Update::Write(b"mine".to_vec(), ())
        });
        assert_eq!(r, Err(Contended));
        assert_eq!(s.get("n").unwrap().0, b"x");
    }

    #[test]
    fn a_concurrent_first_write_is_not_lost() {
        let s = MemoryStore::new();
        // Another worker creates the key between our read (missing) and our write.
        let mut sneaked = false;
        let out = update(&s, "n", 4, |v| {
            if !sneaked {
                sneaked = true;
                assert!(v.is_none());
                s.set("n", b"10", 0).unwrap();
            }
            let cur: u64 = v.map(|v| std::str::from_utf8(v).unwrap().parse().unwrap()).unwrap_or(0);
            Update::Write((cur + 5).to_string().into_bytes(), cur + 5)
        })
        .unwrap();
        assert_eq!(out, 15, "the create must fail and the retry build on the other worker's value");
        assert_eq!(s.get("n").unwrap().0, b"15");
    }

    #[test]
    fn keep_does_not_write() {
        let s = MemoryStore::new();
        let r = update(&s, "n", 1, |v| {
            assert!(v.is_none());
            Update::Keep(7)
        });
        assert_eq!(r, Ok(7));
        assert!(s.is_empty());
    }
}
