//! Properties of the shared counter table under interleaved compare-and-swap, as two Envoy
//! workers produce it: between one worker's read of a record and its write, another worker's
//! whole admission or settlement lands (the store below runs it there). Over generated
//! sequences of admissions and settlements:
//! - no update is lost and no counter goes below zero: the reservations held in all records
//!   (slots and overflow) always sum to the outstanding holds, and the charges to what was
//!   settled (a lost write or a clamped underflow would break the sums);
//! - admission decides on the state it wrote over: a request is admitted exactly when the
//!   budget, as the writes before it left it, still had room.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use filter_common::shared::{CasMismatch, MemoryStore, SharedStore};
use proptest::prelude::*;
use std::cell::{Cell, RefCell};
use token_budget::budget::{overflow_key, slot_key, Admission, Hold, Limits, Record, Table};

const NOW: u64 = 1_795_737_600 + 17;

#[derive(Debug, Clone)]
enum Op {
    /// Reserve `amount` for subject `key`.
    Admit { key: u64, amount: u64 },
    /// Settle the `pick`-th outstanding hold (modulo their number), charging `charge`.
    Settle { pick: usize, charge: u64 },
}

fn op(keys: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..keys, 1u64..500).prop_map(|(key, amount)| Op::Admit { key, amount }),
        (any::<usize>(), 0u64..800).prop_map(|(pick, charge)| Op::Settle { pick, charge }),
    ]
}

/// Shared data whose writes can let another worker's operation land first: before the write
/// of an operation that is flagged, the queued competitor runs to completion on the store.
struct Interleaved<'a> {
    store: &'a MemoryStore,
    competitor: RefCell<Option<Box<dyn FnOnce() + 'a>>>,
    interleavings: Cell<u32>,
}

impl SharedStore for Interleaved<'_> {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.store.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
        if let Some(run) = self.competitor.borrow_mut().take() {
            run();
            self.interleavings.set(self.interleavings.get() + 1);
        }
        self.store.set(key, value, cas)
    }
}

/// What the operations did, in the order their writes landed.
#[derive(Default)]
struct World {
    outstanding: Vec<Hold>,
    settled: u64,
    log: Vec<Event>,
}

#[derive(Debug)]
enum Event {
    Admit { hash: u64, amount: u64, admitted: bool },
    Settle { hash: u64, amount: u64, charge: u64 },
}

fn subject_hash(key: u64) -> u64 {
    filter_common::hash::stable_hash(&[b"subject", &key.to_le_bytes()])
}

fn run(table: Table, limits: Limits, store: &dyn SharedStore, world: &RefCell<World>, op: &Op) {
    match op {
        Op::Admit { key, amount } => match table.admit(store, limits, subject_hash(*key), *amount, NOW).expect("one competitor cannot exhaust the CAS attempts") {
            Admission::Admitted(hold, _) => {
                let mut w = world.borrow_mut();
                w.outstanding.push(hold);
                w.log.push(Event::Admit { hash: subject_hash(*key), amount: *amount, admitted: true });
            }
            Admission::Denied(_) => world.borrow_mut().log.push(Event::Admit { hash: subject_hash(*key), amount: *amount, admitted: false }),
        },
        Op::Settle { pick, charge } => {
            let hold = {
                let mut w = world.borrow_mut();
                if w.outstanding.is_empty() {
                    return;
                }
                let i = pick % w.outstanding.len();
                w.outstanding.swap_remove(i)
            };
            table.settle(store, limits, &hold, *charge, NOW).expect("one competitor cannot exhaust the CAS attempts");
            let mut w = world.borrow_mut();
            w.settled += charge;
            w.log.push(Event::Settle { hash: hold.hash, amount: hold.amount, charge: *charge });
        }
    }
}

/// Every record in the store: the slots and the budget's overflow record.
fn records(store: &MemoryStore, table: Table, limits: Limits) -> Vec<Record> {
    let mut keys: Vec<String> = (0..table.max_keys).map(slot_key).collect();
    keys.push(overflow_key(limits.name));
    keys.iter().filter_map(|k| store.get(k)).filter_map(|(v, _)| Record::decode(&v)).collect()
}

/// Runs `ops`; each op whose flag is set is instead slipped into the CAS window of the next
/// unflagged op (landing before it).
fn play(table: Table, limits: Limits, ops: &[(Op, bool)]) -> (MemoryStore, World, u32) {
    let store = MemoryStore::new();
    let world = RefCell::new(World::default());
    let interleaved = Interleaved { store: &store, competitor: RefCell::new(None), interleavings: Cell::new(0) };
    let mut waiting: Vec<&Op> = Vec::new();
    for (op, slip) in ops {
        if *slip {
            waiting.push(op);
            continue;
        }
        // Earlier slipped ops beyond one run plainly first; the last one competes.
        let competitor = waiting.pop();
        for earlier in waiting.drain(..) {
            run(table, limits, &store, &world, earlier);
        }
        if let Some(c) = competitor {
            let (store, world) = (&store, &world);
            *interleaved.competitor.borrow_mut() = Some(Box::new(move || run(table, limits, store, world, c)));
        }
        run(table, limits, &interleaved, &world, op);
        // A competitor whose op never wrote (a settle with nothing to settle) runs now.
        if let Some(c) = interleaved.competitor.borrow_mut().take() {
            c();
        }
    }
    for op in waiting {
        run(table, limits, &store, &world, op);
    }
    let interleavings = interleaved.interleavings.get();
    drop(interleaved);
    (store, world.into_inner(), interleavings)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn interleaved_updates_are_never_lost_and_never_go_negative(
        max_keys in 1u32..12,
        ops in prop::collection::vec((op(16), any::<bool>()), 1..80),
    ) {
        // Room for everything: every admission succeeds, so holds and charges are exact.
        let limits = Limits { name: "user", tokens: u64::MAX / 4, window_s: 60 };
        let table = Table { max_keys };
        let (store, world, _) = play(table, limits, &ops);
        let all = records(&store, table, limits);
        let reserved: u64 = all.iter().map(|r| r.reserved + r.reserved_prev).sum();
        let used: u64 = all.iter().map(|r| r.used).sum();
        prop_assert_eq!(reserved, world.outstanding.iter().map(|h| h.amount).sum::<u64>(), "reservations lost or double-counted");
        prop_assert_eq!(used, world.settled, "charges lost or double-counted");
        let denied = world.log.iter().filter(|e| matches!(e, Event::Admit { admitted: false, .. })).count();
        prop_assert_eq!(denied, 0, "room for everything, yet admissions were denied");
    }

    #[test]
    fn admission_decides_on_the_state_it_overwrites(
        ops in prop::collection::vec((op(3), any::<bool>()), 1..80),
        tokens in 100u64..2000,
    ) {
        // Three subjects with slots enough: replay what landed, in landing order, against a
        // plain model of each subject's budget (admitted while charged + reserved < tokens).
        let limits = Limits { name: "user", tokens, window_s: 60 };
        let table = Table { max_keys: 64 };
        let (store, world, _) = play(table, limits, &ops);
        let mut model: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
        for (i, e) in world.log.iter().enumerate() {
            match e {
                Event::Admit { hash, amount, admitted } => {
                    let committed = model.entry(*hash).or_default();
                    prop_assert_eq!(*admitted, *committed < tokens, "event {}: {:?} with {} committed", i, e, committed);
                    if *admitted {
                        *committed += amount;
                    }
                }
                Event::Settle { hash, amount, charge } => {
                    let committed = model.entry(*hash).or_default();
                    prop_assert!(*committed >= *amount, "settling more than was reserved");
                    *committed = *committed - amount + charge;
                }
            }
        }
        for r in records(&store, table, limits) {
            prop_assert_eq!(r.committed(), model.get(&r.hash).copied().unwrap_or(0), "the store and the model disagree");
        }
    }
}

#[test]
fn the_interleaving_store_really_interleaves() {
    // Without competitors landing inside CAS windows the properties above would test nothing.
    let limits = Limits { name: "user", tokens: 1_000_000, window_s: 60 };
    let ops: Vec<(Op, bool)> = (0..20).map(|i| (Op::Admit { key: i % 2, amount: 10 }, i % 2 == 0)).collect();
    let (store, world, interleavings) = play(Table { max_keys: 4 }, limits, &ops);
    assert_eq!(interleavings, 10);
    assert_eq!(world.outstanding.len(), 20);
    let reserved: u64 = records(&store, Table { max_keys: 4 }, limits).iter().map(|r| r.reserved).sum();
    assert_eq!(reserved, 200);
}
