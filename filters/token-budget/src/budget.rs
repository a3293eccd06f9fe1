//! Budget counters in proxy-wasm shared data: a fixed table of at most `maxKeys` slots, shared
//! by every worker of one Envoy and updated with compare-and-swap.
//!
//! - **Slots.** A (budget, key) pair hashes to a home slot `h % maxKeys`; its record lives in
//!   the first of [`PROBES`] consecutive slots that holds it, or is created in the first free
//!   one. Slot `n` is the shared-data key `tb.s.<n>`, so the table never has more than
//!   `maxKeys` keys, whatever clients send.
//! - **Free slots.** A never-written slot, an empty value, or a record whose window has ended
//!   with nothing reserved (or that is two windows old). The root's tick sweeps a slice of the
//!   table each second and empties reclaimable records, and any probe reuses them.
//! - **At the cap.** A new key that finds no free slot among its [`PROBES`] slots is counted in
//!   its budget's overflow record (`tb.o.<budget>`): every such key shares that one budget, so a
//!   flood of distinct subjects is limited collectively instead of being untracked or
//!   denying everyone else.
//! - **First writes.** Shared data has no create-if-absent, but a write to a missing key with a
//!   CAS it cannot have fails if another worker created the key in between
//!   ([`filter_common::shared::CREATE_CAS`]); the loser re-reads and retries.
//! - **Windows.** Fixed windows aligned to the Unix epoch: `[floor(now / w) * w, + w)`. At a
//!   boundary, `used` restarts at 0 while reservations of requests still in flight move to
//!   `reserved_prev`; those older than one window are dropped. A request that ends in a later
//!   window than it was admitted in releases its reservation from the window that holds it (if
//!   any still does) and is charged in the window where it ends.

use filter_common::shared::{update, SharedStore, Update, CREATE_CAS};

/// Slots a key may occupy, starting at its home slot.
pub const PROBES: u32 = 8;
/// CAS attempts before giving up on a contended record.
pub const ATTEMPTS: u32 = 16;
pub const SWEEP_KEY: &str = "tb.sweep";

pub fn slot_key(slot: u32) -> String {
    format!("tb.s.{slot}")
}

pub fn overflow_key(budget: &str) -> String {
    format!("tb.o.{budget}")
}

/// The hash of a budget's overflow record.
pub fn overflow_hash(budget: &str) -> u64 {
    filter_common::hash::stable_hash(&[budget.as_bytes(), b"\x00overflow"])
}

const RECORD_LEN: usize = 48;

/// One (budget, key)'s counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Record {
    pub hash: u64,
    pub window_start: u64,
    pub window_s: u64,
    /// Charged in the current window.
    pub used: u64,
    /// Reservations made in the current window and not yet settled.
    pub reserved: u64,
    /// Reservations made in the previous window and not yet settled.
    pub reserved_prev: u64,
}

pub fn window_start(now: u64, window_s: u64) -> u64 {
    now - now % window_s.max(1)
}

impl Record {
    pub fn fresh(hash: u64, window_s: u64, now: u64) -> Record {
        Record { hash, window_start: window_start(now, window_s), window_s, ..Record::default() }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_LEN);
        for v in [self.hash, self.window_start, self.window_s, self.used, self.reserved, self.reserved_prev] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// `None` for a free slot (empty) or anything that is not a record.
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        if bytes.len() != RECORD_LEN {
            return None;
        }
        let mut v = [0u64; 6];
        for (i, chunk) in bytes.chunks_exact(8).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            v[i] = u64::from_le_bytes(b);
        }
        if v[2] == 0 {
            return None;
        }
        Some(Record { hash: v[0], window_start: v[1], window_s: v[2], used: v[3], reserved: v[4], reserved_prev: v[5] })
    }

    /// Moves the record to the window that contains `now`.
    pub fn roll(&mut self, window_s: u64, now: u64) {
        if window_s != self.window_s {
            *self = Record::fresh(self.hash, window_s, now);
            return;
        }
        let current = window_start(now, window_s);
        if current <= self.window_start {
            return;
        }
        let one_window = current == self.window_start.saturating_add(window_s);
        self.reserved_prev = if one_window { self.reserved } else { 0 };
        self.reserved = 0;
        self.used = 0;
        self.window_start = current;
    }

    pub fn committed(&self) -> u64 {
        self.used.saturating_add(self.reserved).saturating_add(self.reserved_prev)
    }

    pub fn reset_at(&self) -> u64 {
        self.window_start.saturating_add(self.window_s)
    }

    /// Nothing in it can matter any more: its window is over and nothing it reserved is
    /// outstanding, or it is two windows old.
    pub fn reclaimable(&self, now: u64) -> bool {
        let end = self.reset_at();
        (now >= end && self.reserved == 0 && self.reserved_prev == 0) || now >= end.saturating_add(self.window_s)
    }
}

/// Where a record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Slot(u32),
    Overflow,
}

/// A budget as the table needs it.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    pub name: &'a str,
    pub tokens: u64,
    pub window_s: u64,
}

/// Where [`Table::settle_into`] puts a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charged {
    /// Counted here (local mode).
    Used,
    /// Held as a reservation until the rate limit service has it (global mode).
    Pending,
}

/// A reservation held by a request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub place: Place,
    pub hash: u64,
    pub window_start: u64,
    pub amount: u64,
}

/// How a budget stands, for the rate-limit headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub limit: u64,
    pub remaining: u64,
    /// When the current window ends (seconds since the epoch).
    pub reset_at: u64,
}

impl Standing {
    fn of(record: &Record, tokens: u64) -> Standing {
        Standing { limit: tokens, remaining: tokens.saturating_sub(record.committed()), reset_at: record.reset_at() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted(Hold, Standing),
    Denied(Standing),
}

/// The record's CAS could not be won in [`ATTEMPTS`] tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contended;

/// The slot table of one filter configuration.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub max_keys: u32,
}

enum Step<T> {
    Write(Record, T),
    Keep(T),
}

impl Table {
    fn home(&self, hash: u64) -> u32 {
        (hash % u64::from(self.max_keys.max(1))) as u32
    }

    /// Runs `op` on the record of `hash` (rolled to `now`), wherever it lives; `op` learns
    /// whether the record existed. Creates the record in a free slot, or falls back to the
    /// budget's overflow record when there is none.
    fn apply<S, T>(&self, store: &S, limits: Limits, hash: u64, now: u64, mut op: impl FnMut(&mut Record, bool) -> Step<T>) -> Result<(Place, T), Contended>
    where
        S: SharedStore + ?Sized,
    {
        let probes = PROBES.min(self.max_keys.max(1));
        for _ in 0..ATTEMPTS {
            let mut free: Option<(u32, u32)> = None;
            let mut found: Option<(u32, Record, u32)> = None;
            for i in 0..probes {
                let slot = (self.home(hash) + i) % self.max_keys.max(1);
                match store.get(&slot_key(slot)) {
                    None => {
                        // Never written: no key was ever placed past it.
                        if free.is_none() {
                            free = Some((slot, CREATE_CAS));
                        }
                        break;
                    }
                    Some((value, cas)) => match Record::decode(&value) {
                        Some(r) if r.hash == hash => {
                            found = Some((slot, r, cas));
                            break;
                        }
                        Some(r) if !r.reclaimable(now) => {}
                        _ => {
                            if free.is_none() {
                                free = Some((slot, cas));
                            }
                        }
                    },
                }
            }
            let (slot, mut record, cas, existed) = match (found, free) {
                (Some((slot, record, cas)), _) => (slot, record, cas, true),
                (None, Some((slot, cas))) => (slot, Record::fresh(hash, limits.window_s, now), cas, false),
                (None, None) => return self.apply_overflow(store, limits, now, &mut op).map(|t| (Place::Overflow, t)),
            };
            record.roll(limits.window_s, now);
            match op(&mut record, existed) {
                Step::Keep(t) => return Ok((Place::Slot(slot), t)),
                Step::Write(new, t) => {
                    if store.set(&slot_key(slot), &new.encode(), cas).is_ok() {
                        return Ok((Place::Slot(slot), t));
                    }
                }
            }
        }
        Err(Contended)
    }

    fn apply_overflow<S, T>(&self, store: &S, limits: Limits, now: u64, mut op: impl FnMut(&mut Record, bool) -> Step<T>) -> Result<T, Contended>
    where
        S: SharedStore + ?Sized,
    {
        let hash = overflow_hash(limits.name);
        update(store, &overflow_key(limits.name), ATTEMPTS, |value| {
            let existing = value.and_then(Record::decode).filter(|r| r.hash == hash);
            let mut record = existing.unwrap_or_else(|| Record::fresh(hash, limits.window_s, now));
            record.roll(limits.window_s, now);
            match op(&mut record, existing.is_some()) {
                Step::Write(new, t) => Update::Write(new.encode(), t),
                Step::Keep(t) => Update::Keep(t),
            }
        })
        .map_err(|_| Contended)
    }

    /// Admission: while the budget has room (charged plus reserved below its tokens), reserve
    /// `amount` in it; otherwise deny. Concurrent admissions therefore overshoot by at most
    /// the last one's reservation.
    pub fn admit<S: SharedStore + ?Sized>(&self, store: &S, limits: Limits, hash: u64, amount: u64, now: u64) -> Result<Admission, Contended> {
        let (place, outcome) = self.apply(store, limits, hash, now, |record, _| {
            if record.committed() >= limits.tokens {
                return Step::Keep(Err(Standing::of(record, limits.tokens)));
            }
            let mut new = *record;
            new.reserved = new.reserved.saturating_add(amount);
            Step::Write(new, Ok((new.hash, new.window_start, Standing::of(&new, limits.tokens))))
        })?;
        Ok(match outcome {
            Ok((hash, window_start, standing)) => Admission::Admitted(Hold { place, hash, window_start, amount }, standing),
            Err(standing) => Admission::Denied(standing),
        })
    }

    /// Settlement: the hold's reservation is released from the window that holds it and
    /// `charge` is added to the current window. Call it once per hold.
    pub fn settle<S: SharedStore + ?Sized>(&self, store: &S, limits: Limits, hold: &Hold, charge: u64, now: u64) -> Result<Standing, Contended> {
        self.settle_into(store, limits, hold, charge, now, Charged::Used).map(|(standing, _)| standing)
    }

    /// Settlement whose charge is not counted here but sent elsewhere (global mode): the hold's
    /// reservation is replaced by a reservation of `charge` in the current window, held until
    /// [`Table::settle`] releases it (with a charge of 0) once the charge is known to have
    /// landed. Returns that new hold (`None` when `charge` is 0).
    pub fn settle_pending<S: SharedStore + ?Sized>(&self, store: &S, limits: Limits, hold: &Hold, charge: u64, now: u64) -> Result<Option<Hold>, Contended> {
        self.settle_into(store, limits, hold, charge, now, Charged::Pending).map(|(_, pending)| pending)
    }

    fn settle_into<S: SharedStore + ?Sized>(
        &self,
        store: &S,
        limits: Limits,
        hold: &Hold,
        charge: u64,
        now: u64,
        into: Charged,
    ) -> Result<(Standing, Option<Hold>), Contended> {
        let op = |record: &mut Record, existed: bool| {
            if !existed && charge == 0 {
                return Step::Keep((Standing::of(record, limits.tokens), record.window_start));
            }
            let mut new = *record;
            if new.window_start == hold.window_start {
                new.reserved = new.reserved.saturating_sub(hold.amount);
            } else if new.window_start == hold.window_start.saturating_add(limits.window_s) {
                new.reserved_prev = new.reserved_prev.saturating_sub(hold.amount);
            }
            match into {
                Charged::Used => new.used = new.used.saturating_add(charge),
                Charged::Pending => new.reserved = new.reserved.saturating_add(charge),
            }
            Step::Write(new, (Standing::of(&new, limits.tokens), new.window_start))
        };
        let (place, (standing, window_start)) = match hold.place {
            Place::Overflow => (Place::Overflow, self.apply_overflow(store, limits, now, op)?),
            Place::Slot(slot) => 'slot: {
                // Straight to the slot it was admitted in, while the record is still there.
                let key = slot_key(slot);
                for _ in 0..ATTEMPTS {
                    let Some((value, cas)) = store.get(&key) else { break };
                    let Some(mut record) = Record::decode(&value).filter(|r| r.hash == hold.hash) else { break };
                    record.roll(limits.window_s, now);
                    match op(&mut record, true) {
                        Step::Keep(t) => break 'slot (hold.place, t),
                        Step::Write(new, t) => {
                            if store.set(&key, &new.encode(), cas).is_ok() {
                                break 'slot (hold.place, t);
                            }
                        }
                    }
                }
                self.apply(store, limits, hold.hash, now, op)?
            }
        };
        let pending = (into == Charged::Pending && charge > 0).then_some(Hold { place, hash: hold.hash, window_start, amount: charge });
        Ok((standing, pending))
    }

    /// How a key stands without changing anything (`None` if it has no record).
    pub fn peek<S: SharedStore + ?Sized>(&self, store: &S, limits: Limits, hash: u64, now: u64) -> Option<Record> {
        let probes = PROBES.min(self.max_keys.max(1));
        for i in 0..probes {
            let slot = (self.home(hash) + i) % self.max_keys.max(1);
            let (value, _) = store.get(&slot_key(slot))?;
            if let Some(mut r) = Record::decode(&value).filter(|r| r.hash == hash) {
                r.roll(limits.window_s, now);
                return Some(r);
            }
        }
        None
    }

    /// Empties reclaimable records in the next `count` slots (the workers share one cursor, so
    /// together they walk the table once per `maxKeys / count` ticks). Returns how many were
    /// emptied.
    pub fn sweep<S: SharedStore + ?Sized>(&self, store: &S, count: u32, now: u64) -> u32 {
        let max = self.max_keys.max(1);
        let count = count.min(max);
        let start = update(store, SWEEP_KEY, ATTEMPTS, |value| {
            let current = value
                .and_then(|v| <[u8; 4]>::try_from(v).ok())
                .map(u32::from_le_bytes)
                .filter(|c| *c < max)
                .unwrap_or(0);
            let next = ((u64::from(current) + u64::from(count)) % u64::from(max)) as u32;
            Update::Write(next.to_le_bytes().to_vec(), current)
        });
        let Ok(start) = start else { return 0 };
        let mut emptied = 0;
        for i in 0..count {
            let slot = ((u64::from(start) + u64::from(i)) % u64::from(max)) as u32;
            let key = slot_key(slot);
            if let Some((value, cas)) = store.get(&key) {
                if Record::decode(&value).is_some_and(|r| r.reclaimable(now)) && store.set(&key, b"", cas).is_ok() {
                    emptied += 1;
                }
            }
        }
        emptied
    }
}

/// `6m0s`-style durations, as OpenAI writes `x-ratelimit-reset-tokens`.
pub fn duration_text(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use filter_common::shared::{CasMismatch, MemoryStore};

    const T0: u64 = 1_795_737_600; // a multiple of 86400 (and of 60)
    const B: Limits = Limits { name: "user-minute", tokens: 1000, window_s: 60 };

    fn h(key: &str) -> u64 {
        filter_common::hash::stable_hash(&[b"user-minute", key.as_bytes()])
    }

    fn admit(t: &Table, s: &MemoryStore, key: &str, amount: u64, now: u64) -> Admission {
        t.admit(s, B, h(key), amount, now).unwrap()
    }

    fn hold(a: Admission) -> (Hold, Standing) {
        match a {
            Admission::Admitted(h, s) => (h, s),
            Admission::Denied(s) => panic!("denied: {s:?}"),
        }
    }

    #[test]
    fn records_round_trip_and_garbage_is_free() {
        let r = Record { hash: 1, window_start: 2, window_s: 3, used: 4, reserved: 5, reserved_prev: 6 };
        assert_eq!(Record::decode(&r.encode()), Some(r));
        assert_eq!(Record::decode(b""), None);
        assert_eq!(Record::decode(&[0xff; 47]), None);
        assert_eq!(Record::decode(&Record::default().encode()), None, "a zero window is not a record");
    }

    #[test]
    fn windows_roll_at_epoch_aligned_boundaries() {
        assert_eq!(window_start(T0 + 59, 60), T0);
        assert_eq!(window_start(T0 + 60, 60), T0 + 60);
        assert_eq!(window_start(T0 + 86_399, 86_400), T0);
        assert_eq!(window_start(T0, 2_592_000) % 2_592_000, 0);
        let mut r = Record { hash: 9, window_start: T0, window_s: 60, used: 500, reserved: 100, reserved_prev: 7 };
        r.roll(60, T0 + 59);
        assert_eq!((r.used, r.reserved, r.reserved_prev), (500, 100, 7), "same window");
        r.roll(60, T0 + 60);
        assert_eq!((r.window_start, r.used, r.reserved, r.reserved_prev), (T0 + 60, 0, 0, 100), "in-flight reservations move to prev");
        r.roll(60, T0 + 200);
        assert_eq!((r.window_start, r.used, r.reserved, r.reserved_prev), (T0 + 180, 0, 0, 0), "older ones are dropped");
        r.used = 5;
        r.roll(30, T0 + 200);
        assert_eq!((r.window_s, r.window_start, r.used), (30, T0 + 180, 0), "a changed window starts afresh");
    }

    #[test]
    fn admission_reserves_until_the_budget_is_committed() {
        let (t, s) = (Table { max_keys: 64 }, MemoryStore::new());
        let (h1, st) = hold(admit(&t, &s, "alice", 600, T0 + 5));
        assert_eq!(st, Standing { limit: 1000, remaining: 400, reset_at: T0 + 60 });
        // Room left (400 > 0): admitted, overshooting by this one reservation at most.
        let (h2, st) = hold(admit(&t, &s, "alice", 600, T0 + 6));
        assert_eq!(st.remaining, 0);
        assert_eq!(admit(&t, &s, "alice", 1, T0 + 7), Admission::Denied(Standing { limit: 1000, remaining: 0, reset_at: T0 + 60 }));
        // Other keys are independent.
        hold(admit(&t, &s, "bob", 1, T0 + 7));
        // Settling replaces reservations with real usage.
        assert_eq!(t.settle(&s, B, &h1, 100, T0 + 8).unwrap().remaining, 300);
        assert_eq!(t.settle(&s, B, &h2, 50, T0 + 9).unwrap().remaining, 850);
        let r = t.peek(&s, B, h("alice"), T0 + 9).unwrap();
        assert_eq!((r.used, r.reserved, r.reserved_prev), (150, 0, 0));
    }

    #[test]
    fn settlement_across_a_window_boundary() {
        let (t, s) = (Table { max_keys: 64 }, MemoryStore::new());
        let (a, _) = hold(admit(&t, &s, "alice", 300, T0 + 50));
        let (b, _) = hold(admit(&t, &s, "alice", 200, T0 + 55));
        // The next window: in-flight reservations still count against admission.
        let r = t.peek(&s, B, h("alice"), T0 + 61).unwrap();
        assert_eq!((r.used, r.reserved, r.reserved_prev), (0, 0, 500));
        let (c, st) = hold(admit(&t, &s, "alice", 100, T0 + 61));
        assert_eq!(st.remaining, 400);
        assert_eq!(st.reset_at, T0 + 120);
        // a ends in the next window: released from prev, charged in the window where it ended.
        t.settle(&s, B, &a, 250, T0 + 62).unwrap();
        let r = t.peek(&s, B, h("alice"), T0 + 62).unwrap();
        assert_eq!((r.used, r.reserved, r.reserved_prev), (250, 100, 200));
        // b ends two windows later: its reservation was dropped with its window; only the charge.
        t.settle(&s, B, &b, 40, T0 + 125).unwrap();
        let r = t.peek(&s, B, h("alice"), T0 + 125).unwrap();
        assert_eq!((r.window_start, r.used, r.reserved, r.reserved_prev), (T0 + 120, 40, 0, 100), "only c's reservation is left, in prev");
        // c (admitted at T0+61, window T0+60) settles in window T0+120: prev holds it.
        t.settle(&s, B, &c, 10, T0 + 126).unwrap();
        let r = t.peek(&s, B, h("alice"), T0 + 126).unwrap();
        assert_eq!((r.used, r.reserved, r.reserved_prev), (50, 0, 0));
    }

    #[test]
    fn a_pending_charge_is_held_until_released() {
        let (t, s) = (Table { max_keys: 64 }, MemoryStore::new());
        let (a, _) = hold(admit(&t, &s, "alice", 300, T0 + 50));
        // The request used 120: its 300 are released and 120 held in its place, not charged.
        let pending = t.settle_pending(&s, B, &a, 120, T0 + 51).unwrap().unwrap();
        assert_eq!(pending, Hold { place: a.place, hash: a.hash, window_start: T0, amount: 120 });
        let r = t.peek(&s, B, h("alice"), T0 + 51).unwrap();
        assert_eq!((r.used, r.reserved, r.reserved_prev), (0, 120, 0));
        // Confirmed in the next window: released from where the window roll put it.
        t.settle(&s, B, &pending, 0, T0 + 61).unwrap();
        let r = t.peek(&s, B, h("alice"), T0 + 61).unwrap();
        assert_eq!((r.used, r.reserved, r.reserved_prev), (0, 0, 0));
        // Nothing to charge: nothing held.
        let (b, _) = hold(admit(&t, &s, "alice", 10, T0 + 62));
        assert_eq!(t.settle_pending(&s, B, &b, 0, T0 + 62).unwrap(), None);
        assert_eq!(t.peek(&s, B, h("alice"), T0 + 62).unwrap().committed(), 0);
        // A pending charge that ends a window later lands in the window where it was made.
        let (c, _) = hold(admit(&t, &s, "alice", 50, T0 + 119));
        let pending = t.settle_pending(&s, B, &c, 40, T0 + 121).unwrap().unwrap();
        assert_eq!(pending.window_start, T0 + 120);
        let r = t.peek(&s, B, h("alice"), T0 + 121).unwrap();
        assert_eq!((r.used, r.reserved, r.reserved_prev), (0, 40, 0), "c's 50 released from prev");
    }

    #[test]
    fn a_release_of_a_vanished_record_writes_nothing() {
        let (t, s) = (Table { max_keys: 64 }, MemoryStore::new());
        let (a, _) = hold(admit(&t, &s, "alice", 300, T0));
        // Two windows later a sweep empties it; releasing must not recreate it.
        assert_eq!(t.sweep(&s, 64, T0 + 120), 1);
        t.settle(&s, B, &a, 0, T0 + 121).unwrap();
        assert!(t.peek(&s, B, h("alice"), T0 + 121).is_none());
        // A charge does recreate it, in the window where the request ended.
        t.settle(&s, B, &a, 70, T0 + 122).unwrap();
        assert_eq!(t.peek(&s, B, h("alice"), T0 + 122).unwrap().used, 70);
    }

    #[test]
    fn the_table_is_bounded_and_full_tables_overflow_into_one_shared_budget() {
        let (t, s) = (Table { max_keys: 8 }, MemoryStore::new());
        let mut overflowed = 0;
        for i in 0..200 {
            match admit(&t, &s, &format!("user-{i}"), 10, T0) {
                Admission::Admitted(h, _) if h.place == Place::Overflow => overflowed += 1,
                Admission::Admitted(..) => {}
                Admission::Denied(_) => {}
            }
        }
        let slots = s.keys().iter().filter(|k| k.starts_with("tb.s.")).count();
        assert_eq!(slots, 8, "{:?}", s.keys());
        assert_eq!(s.keys().len(), 9, "8 slots and one overflow record: {:?}", s.keys());
        // 192 keys shared one 1000-token budget: 100 reservations of 10 fit, the rest are denied.
        assert_eq!(overflowed, 100);
        let o = Record::decode(&s.get(&overflow_key("user-minute")).unwrap().0).unwrap();
        assert_eq!(o.reserved, 1000);
        // When the window is over and nothing is in flight, the slots are free again.
        let mut slots_reused = 0;
        for i in 0..8 {
            if let Admission::Admitted(h, _) = admit(&t, &s, &format!("later-{i}"), 10, T0 + 60) {
                slots_reused += (h.place != Place::Overflow) as u32;
            }
        }
        assert_eq!(slots_reused, 0, "reservations in flight keep slots busy for one more window");
        for i in 0..8 {
            if let Admission::Admitted(h, _) = admit(&t, &s, &format!("later2-{i}"), 10, T0 + 180) {
                slots_reused += (h.place != Place::Overflow) as u32;
            }
        }
        assert_eq!(slots_reused, 8);
        assert_eq!(s.keys().len(), 9);
    }

    #[test]
    fn keys_keep_their_records_in_a_full_table() {
        let (t, s) = (Table { max_keys: 4 }, MemoryStore::new());
        // Fill the table, then settle everything so all records become reclaimable later.
        let holds: Vec<Hold> = (0..4).map(|i| hold(admit(&t, &s, &format!("k{i}"), 1, T0)).0).collect();
        for (i, hd) in holds.iter().enumerate() {
            t.settle(&s, B, hd, 1, T0 + 1).unwrap();
            assert_eq!(t.peek(&s, B, h(&format!("k{i}")), T0 + 1).unwrap().used, 1);
        }
        // Same window: every key still finds its own record, none is duplicated.
        for i in 0..4 {
            hold(admit(&t, &s, &format!("k{i}"), 1, T0 + 2));
        }
        let live: Vec<Record> = (0..4).filter_map(|i| Record::decode(&s.get(&slot_key(i)).unwrap().0)).collect();
        assert_eq!(live.len(), 4);
        assert!(live.iter().all(|r| r.used == 1 && r.reserved == 1));
    }

    /// A store whose next `set` of a missing key loses to a write that sneaks in first, as when
    /// two workers both see the key missing.
    struct Racing {
        inner: MemoryStore,
        sneak: std::cell::RefCell<Option<(String, Vec<u8>)>>,
    }

    impl SharedStore for Racing {
        fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
            if let Some((k, v)) = self.sneak.borrow_mut().take() {
                self.inner.set(&k, &v, 0).unwrap();
            }
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn two_workers_creating_the_same_record_lose_nothing() {
        let t = Table { max_keys: 64 };
        let store = Racing { inner: MemoryStore::new(), sneak: Default::default() };
        // Another worker creates alice's record (reserving 300) between our read and write.
        let other = Record { reserved: 300, ..Record::fresh(h("alice"), 60, T0) };
        let home = (h("alice") % 64) as u32;
        *store.sneak.borrow_mut() = Some((slot_key(home), other.encode()));
        let (_, st) = hold(t.admit(&store, B, h("alice"), 200, T0).unwrap());
        assert_eq!(st.remaining, 500, "both reservations are in the record");
        let r = Record::decode(&store.inner.get(&slot_key(home)).unwrap().0).unwrap();
        assert_eq!(r.reserved, 500);
    }

    #[test]
    fn sweeping_empties_only_reclaimable_records_and_walks_the_table() {
        let (t, s) = (Table { max_keys: 16 }, MemoryStore::new());
        let (a, _) = hold(admit(&t, &s, "in-flight", 5, T0));
        let (b, _) = hold(admit(&t, &s, "done", 5, T0));
        t.settle(&s, B, &b, 5, T0 + 1).unwrap();
        assert_eq!(t.sweep(&s, 16, T0 + 30), 0, "the window is not over");
        assert_eq!(t.sweep(&s, 16, T0 + 61), 1, "done is reclaimable, in-flight is not");
        assert!(t.peek(&s, B, h("done"), T0 + 61).is_none());
        assert!(t.peek(&s, B, h("in-flight"), T0 + 61).is_some());
        assert_eq!(t.sweep(&s, 16, T0 + 121), 1, "two windows old");
        t.settle(&s, B, &a, 0, T0 + 122).unwrap();
        // The cursor advances and wraps.
        assert_eq!(s.get(SWEEP_KEY).unwrap().0, 0u32.to_le_bytes());
        t.sweep(&s, 5, T0);
        assert_eq!(s.get(SWEEP_KEY).unwrap().0, 5u32.to_le_bytes());
        t.sweep(&s, 15, T0);
        assert_eq!(s.get(SWEEP_KEY).unwrap().0, 4u32.to_le_bytes());
    }

    #[test]
    fn durations() {
        for (s, want) in [(0, "0s"), (59, "59s"), (60, "1m0s"), (360, "6m0s"), (3661, "1h1m1s"), (2_592_000, "720h0m0s")] {
            assert_eq!(duration_text(s), want);
        }
    }
}
