//! Where budgets are counted, behind one interface the glue admits and settles through:
//! this Envoy's shared-data table ([`LocalLedger`], local mode) or an `envoyproxy/ratelimit`
//! service that every replica shares ([`GlobalLedger`], global mode).
//!
//! Both modes reserve in-flight requests in the same table ([`reserve`]); they differ in where
//! the room to admit against comes from and where a settled charge goes:
//!
//! | | room at admission | a settled charge |
//! |---|---|---|
//! | local | the configured budget, minus what the table holds (charged + reserved) | added to the table |
//! | global | what the service says remains (a `ShouldRateLimit` with `hits_addend` 0: check only), minus this replica's reservations and unconfirmed charges in the table | sent to the service (`hits_addend` = the charge), held in the table until the service has it |
//!
//! Why global admission only checks: the service cannot refund. Reserving `max_tokens` there
//! would charge every request its whole reservation for good, though most use a fraction of
//! it. Instead the service's counter holds what was really used, and each replica keeps its
//! own requests in flight (and charges not yet confirmed) in its table, so a replica never
//! admits more than the room the service reported. What global mode cannot see are requests in
//! flight on *other* replicas: a burst that starts on N replicas at once with room G left can
//! admit up to about N × (G + one reservation) in total. Once requests complete, their charges
//! reach every replica through the service (one round trip after the response ends).

use crate::budget::{Admission, Contended, Hold, Limits, Place, Standing, Table};
use crate::config::{Budget, Global};
use crate::rls;
use filter_common::shared::{update, SharedStore, Update};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

/// One budget a request counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Index into the configuration's budgets.
    pub budget: usize,
    /// The (budget, key) hash the table files it under.
    pub hash: u64,
    /// The reservation, in the budget's cost units.
    pub amount: u64,
    /// The rate limit descriptor's encoded entries (global mode; empty in local mode).
    pub entries: Vec<u8>,
}

/// What a claim may be admitted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// The table admits while what it holds for the key stays below this.
    pub tokens: u64,
    /// The budget's size, for `x-ratelimit-limit-tokens`.
    pub limit: u64,
    /// When the window ends, when the ledger knows it (the service says).
    pub reset_at: Option<u64>,
    /// The window's length the service uses, when it says.
    pub window_s: Option<u64>,
}

impl Room {
    /// The configured budget: local mode, and global mode when the service cannot answer
    /// and `failureMode` is `allow`.
    pub fn of(budget: &Budget) -> Room {
        Room { tokens: budget.tokens, limit: budget.tokens, reset_at: None, window_s: None }
    }
}

/// How admission starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// The rooms are known now, one per claim.
    Ready(Vec<Room>),
    /// A check went out; its answer comes to [`Ledger::answer`] (the call's token).
    Asked(u32),
    Failed(Failure),
}

/// Why the rate limit service did not give a usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Envoy did not send the call (no such cluster).
    NotSent,
    /// The call ended with this gRPC status: 14 (unavailable: connection refused, reset,
    /// timeout), 2 (the service's own errors, such as Redis being down), ...
    Status(u32),
    /// Not a `RateLimitResponse`, or not one status per descriptor.
    BadAnswer,
    /// The service has no limit for this budget (index): its configuration lacks it.
    Unconfigured(usize),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NotSent => f.write_str("the call could not be sent (is the cluster defined?)"),
            Failure::Status(s) => write!(f, "the call failed with gRPC status {s} ({})", grpc_status_name(*s)),
            Failure::BadAnswer => f.write_str("the answer is not a RateLimitResponse with one status per descriptor"),
            Failure::Unconfigured(_) => f.write_str("the service has no limit for the budget (regenerate its config with scripts/ratelimit-config.py)"),
        }
    }
}

fn grpc_status_name(status: u32) -> &'static str {
    match status {
        1 => "cancelled",
        2 => "unknown",
        4 => "deadline exceeded",
        8 => "resource exhausted",
        13 => "internal",
        14 => "unavailable",
        16 => "unauthenticated",
        _ => "other",
    }
}

/// How a settlement call failed: its gRPC status, and whether it certainly never reached the
/// service ([`unreached`]), so that sending it again cannot charge twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallError {
    pub status: u32,
    pub unreached: bool,
}

impl CallError {
    /// Classifies a failed call by its gRPC status and message.
    pub fn new(status: u32, message: &[u8]) -> CallError {
        CallError { status, unreached: unreached(status, message) }
    }
}

/// Whether a call that failed with `status` and `message` can be known never to have reached
/// the rate limit service. Envoy answers a call it could not deliver the way its router answers
/// any request: gRPC status 14 with the local reply's text, e.g. `upstream connect error or
/// disconnect/reset before headers. reset reason: remote connection failure, transport failure
/// reason: delayed connect error: Connection refused`; a connection that broke after the call
/// went out says `reset reason: connection termination` instead, and then the service may have
/// counted the charge before it went away. So only a connection that was never made (connect
/// failure or timeout), a call a circuit breaker held back (`overflow`), no host at all, or an
/// error the service itself answered (status 2, such as Redis being down: it counted nothing)
/// is unreached. Anything else, deadlines and cancellations included, may have been counted.
pub fn unreached(status: u32, message: &[u8]) -> bool {
    let has = |needle: &[u8]| message.windows(needle.len()).any(|w| w == needle);
    match status {
        2 => true,
        14 if message == b"no healthy upstream" => true,
        14 if has(b"before headers") && !has(b"retried") => {
            const NEVER_SENT: [&[u8]; 4] =
                [b"reset reason: remote connection failure", b"reset reason: local connection failure", b"reset reason: connection timeout", b"reset reason: overflow"];
            NEVER_SENT.iter().any(|n| has(n))
        }
        _ => false,
    }
}

/// Where a request's budgets are counted.
pub trait Ledger {
    /// Starts admission of `claims`.
    fn open(&self, budgets: &[Budget], claims: &[Claim], now: u64) -> Opening;
    /// The rooms from the answer to an [`Opening::Asked`] check: the response message, or
    /// the gRPC status the call failed with.
    fn answer(&self, claims: &[Claim], answer: Result<&[u8], u32>, now: u64) -> Result<Vec<Room>, Failure>;
    /// Books what one settled claim is charged and gives back its reservation.
    fn charge(&self, budgets: &[Budget], claim: &Claim, hold: &Hold, units: u64, now: u64) -> Result<(), Contended>;
}

pub fn limits(budget: &Budget) -> Limits<'_> {
    Limits { name: &budget.name, tokens: budget.tokens, window_s: budget.window_s }
}

/// What [`reserve`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    Admitted {
        /// (claim index, its reservation).
        holds: Vec<(usize, Hold)>,
        /// The claim with the least room left, as of admission.
        tightest: Option<Standing>,
        /// Which claim that is.
        tightest_claim: Option<usize>,
        /// Claims left with less than a fifth of their budget (this reservation counted).
        near_limit: Vec<usize>,
        /// Claims that fell into a budget's shared overflow record (the table is full).
        overflowed: u32,
        /// Claims not counted: their record could not be won (pathological contention).
        contended: Vec<usize>,
    },
    /// Claim `claim` had no room; nothing is held.
    Denied { claim: usize, standing: Standing, contended: u32 },
}

/// Reserves every claim against its room in the table, or reserves nothing and names the
/// first claim without room. The same in both modes.
pub fn reserve<S: SharedStore + ?Sized>(table: &Table, store: &S, budgets: &[Budget], claims: &[Claim], rooms: &[Room], now: u64) -> Reservation {
    let mut holds: Vec<(usize, Hold)> = Vec::with_capacity(claims.len());
    let mut tightest: Option<Standing> = None;
    let mut tightest_claim = None;
    let mut near_limit = Vec::new();
    let mut overflowed = 0;
    let mut contended = Vec::new();
    for (i, (claim, room)) in claims.iter().zip(rooms).enumerate() {
        let Some(budget) = budgets.get(claim.budget) else { continue };
        let against = Limits { tokens: room.tokens, ..limits(budget) };
        let shown = |s: Standing| Standing { limit: room.limit, remaining: s.remaining, reset_at: room.reset_at.unwrap_or(s.reset_at) };
        match table.admit(store, against, claim.hash, claim.amount, now) {
            Ok(Admission::Admitted(hold, standing)) => {
                overflowed += u32::from(hold.place == Place::Overflow);
                holds.push((i, hold));
                let standing = shown(standing);
                if tightest.is_none_or(|t| standing.remaining < t.remaining) {
                    tightest = Some(standing);
                    tightest_claim = Some(i);
                }
                if standing.remaining.saturating_mul(5) < standing.limit {
                    near_limit.push(i);
                }
            }
            Ok(Admission::Denied(standing)) => {
                let mut stuck = contended.len() as u32;
                for (j, hold) in holds {
                    if let Some(b) = claims.get(j).and_then(|c| budgets.get(c.budget)) {
                        stuck += u32::from(table.settle(store, limits(b), &hold, 0, now).is_err());
                    }
                }
                return Reservation::Denied { claim: i, standing: shown(standing), contended: stuck };
            }
            Err(Contended) => contended.push(i),
        }
    }
    Reservation::Admitted { holds, tightest, tightest_claim, near_limit, overflowed, contended }
}

/// Local mode: everything in this Envoy's shared data.
pub struct LocalLedger<S> {
    pub table: Table,
    pub store: S,
}

impl<S: SharedStore> Ledger for LocalLedger<S> {
    fn open(&self, budgets: &[Budget], claims: &[Claim], _now: u64) -> Opening {
        Opening::Ready(claims.iter().filter_map(|c| budgets.get(c.budget)).map(Room::of).collect())
    }

    fn answer(&self, _claims: &[Claim], _answer: Result<&[u8], u32>, _now: u64) -> Result<Vec<Room>, Failure> {
        // Local mode never asks.
        Err(Failure::BadAnswer)
    }

    fn charge(&self, budgets: &[Budget], claim: &Claim, hold: &Hold, units: u64, now: u64) -> Result<(), Contended> {
        let Some(budget) = budgets.get(claim.budget) else { return Ok(()) };
        self.table.settle(&self.store, limits(budget), hold, units, now).map(|_| ())
    }
}

/// How global mode reaches the rate limit service (Envoy's gRPC calls in the filter, a
/// recording double in tests).
pub trait Transport {
    /// Sends a `ShouldRateLimit` request; the call's token, or `None` when Envoy refused it.
    fn call(&self, message: &[u8], timeout_ms: u32) -> Option<u32>;
    /// Asks for [`GlobalLedger::flush`] to run soon, from the root context (whose calls
    /// outlive the request that settled).
    fn wake(&self);
}

/// The gRPC method the filter calls.
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";

/// Settlement calls in flight at once, per VM.
pub const MAX_IN_FLIGHT: usize = 4;
/// Descriptors per settlement call (charges of one key are merged first).
pub const MAX_BATCH: usize = 64;
/// Charges waiting to be sent, per VM; beyond it the oldest is dropped (and counted).
pub const MAX_BACKLOG: usize = 4096;
/// Settlement is off the request path: its calls may take longer than admission's.
pub const MIN_SETTLE_TIMEOUT_MS: u32 = 1000;
/// After a failed settlement call, the next attempt waits at least this long.
pub const RETRY_BACKOFF_MS: u64 = 250;

/// A charge on its way to the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCharge {
    pub budget: usize,
    pub entries: Vec<u8>,
    pub units: u64,
    /// What the table holds for it until the service has it.
    pub hold: Option<Hold>,
}

struct Batch {
    token: u32,
    charges: Vec<PendingCharge>,
}

/// What became of settlement charges, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Calls sent.
    pub sent: u64,
    /// Charges the service acknowledged.
    pub confirmed: u64,
    /// Charges put back for another attempt: the call never reached the service
    /// ([`unreached`]), so it did not count them.
    pub retried: u64,
    /// Charges whose call failed after it may have reached the service (a deadline, a broken
    /// connection): it may have counted them, so they are not sent again (a second attempt
    /// could charge twice).
    pub unconfirmed: u64,
    /// Charges dropped because the backlog was full.
    pub dropped: u64,
    /// Charges for descriptors the service has no limit for.
    pub unconfigured: u64,
    /// What went wrong, when something did.
    pub failure: Option<Failure>,
}

/// Global mode: the `envoyproxy/ratelimit` service counts, the table holds this replica's
/// requests in flight and unconfirmed charges.
pub struct GlobalLedger<S, T> {
    pub table: Table,
    pub store: S,
    pub transport: T,
    pub global: Global,
    backlog: RefCell<VecDeque<PendingCharge>>,
    in_flight: RefCell<Vec<Batch>>,
    woken: Cell<bool>,
    retry_at_ms: Cell<u64>,
    /// Charges dropped from a full backlog since the last [`GlobalLedger::flush`].
    dropped: Cell<u64>,
}

impl<S: SharedStore, T: Transport> GlobalLedger<S, T> {
    pub fn new(table: Table, store: S, transport: T, global: Global) -> Self {
        GlobalLedger {
            table,
            store,
            transport,
            global,
            backlog: RefCell::new(VecDeque::new()),
            in_flight: RefCell::new(Vec::new()),
            woken: Cell::new(false),
            retry_at_ms: Cell::new(0),
            dropped: Cell::new(0),
        }
    }

    pub fn settle_timeout_ms(&self) -> u32 {
        self.global.timeout_ms.max(MIN_SETTLE_TIMEOUT_MS)
    }

    /// Charges waiting to be sent.
    pub fn backlog(&self) -> usize {
        self.backlog.borrow().len()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.borrow().len()
    }

    fn release(&self, budgets: &[Budget], charge: &PendingCharge, now: u64) {
        if let (Some(hold), Some(budget)) = (&charge.hold, budgets.get(charge.budget)) {
            let _ = self.table.settle(&self.store, limits(budget), hold, 0, now);
        }
    }

    /// Sends waiting charges, merged per descriptor, while fewer than [`MAX_IN_FLIGHT`] calls
    /// are out. Run from the root context (its calls outlive the requests), when woken and on
    /// every tick.
    pub fn flush(&self, now_ms: u64) -> Settled {
        self.woken.set(false);
        let mut out = Settled { dropped: self.dropped.replace(0), ..Settled::default() };
        if now_ms < self.retry_at_ms.get() {
            return out;
        }
        loop {
            if self.in_flight.borrow().len() >= MAX_IN_FLIGHT {
                break;
            }
            let charges = {
                let mut backlog = self.backlog.borrow_mut();
                let mut charges: Vec<PendingCharge> = Vec::new();
                let mut descriptors = 0;
                while let Some(next) = backlog.front() {
                    let merges = charges.iter().any(|c| c.entries == next.entries);
                    if !merges && descriptors == MAX_BATCH {
                        break;
                    }
                    descriptors += usize::from(!merges);
                    if let Some(c) = backlog.pop_front() {
                        charges.push(c);
                    }
                }
                charges
            };
            if charges.is_empty() {
                break;
            }
            let message = settle_request(&self.global.domain, &charges);
            match self.transport.call(&message, self.settle_timeout_ms()) {
                Some(token) => {
                    out.sent += 1;
                    self.in_flight.borrow_mut().push(Batch { token, charges });
                }
                None => {
                    // Envoy refused to send it: try again later, in order.
                    out.retried += charges.len() as u64;
                    out.failure = Some(Failure::NotSent);
                    let mut backlog = self.backlog.borrow_mut();
                    for c in charges.into_iter().rev() {
                        backlog.push_front(c);
                    }
                    self.retry_at_ms.set(now_ms.saturating_add(RETRY_BACKOFF_MS));
                    break;
                }
            }
        }
        out
    }

    /// Whether `token` is one of this ledger's settlement calls.
    pub fn is_settlement(&self, token: u32) -> bool {
        self.in_flight.borrow().iter().any(|b| b.token == token)
    }

    /// The outcome of a settlement call: the response, or how it failed.
    pub fn settled(&self, budgets: &[Budget], token: u32, answer: Result<&[u8], CallError>, now_ms: u64) -> Settled {
        let now = now_ms / 1000;
        let mut out = Settled::default();
        let batch = {
            let mut in_flight = self.in_flight.borrow_mut();
            let Some(at) = in_flight.iter().position(|b| b.token == token) else { return out };
            in_flight.remove(at)
        };
        match answer {
            Ok(bytes) => {
                let statuses = rls::response(bytes).map(|r| r.statuses).unwrap_or_default();
                let merged = merged_entries(&batch.charges);
                for charge in &batch.charges {
                    let at = merged.iter().position(|e| *e == &charge.entries[..]);
                    let configured = at.and_then(|i| statuses.get(i)).is_none_or(|s| s.current_limit.is_some());
                    if configured {
                        out.confirmed += 1;
                    } else {
                        out.unconfigured += 1;
                        out.failure = Some(Failure::Unconfigured(charge.budget));
                    }
                    self.release(budgets, charge, now);
                }
            }
            Err(e) if e.unreached => {
                // The service cannot have counted it (connection refused, the service's own
                // error reply): back to the front of the queue.
                out.retried += batch.charges.len() as u64;
                out.failure = Some(Failure::Status(e.status));
                self.retry_at_ms.set(now_ms.saturating_add(RETRY_BACKOFF_MS));
                let mut backlog = self.backlog.borrow_mut();
                for c in batch.charges.into_iter().rev() {
                    backlog.push_front(c);
                }
            }
            Err(e) => {
                // It may have been counted (a deadline, a connection that broke after the
                // call went out): released, never sent twice.
                out.unconfirmed += batch.charges.len() as u64;
                out.failure = Some(Failure::Status(e.status));
                for charge in &batch.charges {
                    self.release(budgets, charge, now);
                }
            }
        }
        out
    }
}

/// The distinct descriptors of a batch, in first-seen order.
fn merged_entries(charges: &[PendingCharge]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in charges {
        if !out.contains(&&c.entries[..]) {
            out.push(&c.entries);
        }
    }
    out
}

/// A settlement request: one descriptor per distinct key, `hits_addend` the sum of its charges.
pub fn settle_request(domain: &str, charges: &[PendingCharge]) -> Vec<u8> {
    let merged = merged_entries(charges);
    let sums: Vec<u64> = merged
        .iter()
        .map(|e| charges.iter().filter(|c| c.entries == *e).fold(0u64, |a, c| a.saturating_add(c.units)))
        .collect();
    rls::request(domain, merged.iter().copied().zip(sums))
}

impl<S: SharedStore, T: Transport> Ledger for GlobalLedger<S, T> {
    fn open(&self, _budgets: &[Budget], claims: &[Claim], _now: u64) -> Opening {
        if claims.is_empty() {
            return Opening::Ready(Vec::new());
        }
        let message = rls::request(&self.global.domain, claims.iter().map(|c| (&c.entries[..], 0)));
        match self.transport.call(&message, self.global.timeout_ms) {
            Some(token) => Opening::Asked(token),
            None => Opening::Failed(Failure::NotSent),
        }
    }

    fn answer(&self, claims: &[Claim], answer: Result<&[u8], u32>, now: u64) -> Result<Vec<Room>, Failure> {
        let bytes = answer.map_err(Failure::Status)?;
        let response = rls::response(bytes).map_err(|_| Failure::BadAnswer)?;
        if response.statuses.len() != claims.len() {
            return Err(Failure::BadAnswer);
        }
        claims
            .iter()
            .zip(&response.statuses)
            .map(|(claim, status)| {
                let limit = status.current_limit.ok_or(Failure::Unconfigured(claim.budget))?;
                let tokens = if status.code == rls::Code::OverLimit { 0 } else { u64::from(status.limit_remaining) };
                Ok(Room {
                    tokens,
                    limit: u64::from(limit.requests_per_unit),
                    reset_at: status.reset_in_s.map(|s| now.saturating_add(s)),
                    window_s: limit.unit_seconds(),
                })
            })
            .collect()
    }

    fn charge(&self, budgets: &[Budget], claim: &Claim, hold: &Hold, units: u64, now: u64) -> Result<(), Contended> {
        let Some(budget) = budgets.get(claim.budget) else { return Ok(()) };
        let pending = self.table.settle_pending(&self.store, limits(budget), hold, units, now);
        if units == 0 {
            return pending.map(|_| ());
        }
        // A charge is sent even when its hold could not be written: the service must have it.
        let hold = pending.as_ref().ok().copied().flatten();
        let dropped = {
            let mut backlog = self.backlog.borrow_mut();
            backlog.push_back(PendingCharge { budget: claim.budget, entries: claim.entries.clone(), units, hold });
            if backlog.len() > MAX_BACKLOG {
                backlog.pop_front()
            } else {
                None
            }
        };
        if let Some(old) = dropped {
            self.release(budgets, &old, now);
            self.dropped.set(self.dropped.get() + 1);
        }
        if !self.woken.replace(true) {
            self.transport.wake();
        }
        pending.map(|_| ())
    }
}

/// Logs failures at most once per interval for the whole Envoy (the workers agree through a
/// shared-data key), with how many happened in this VM since its last line.
pub struct FailureLog {
    pub key: &'static str,
    pub interval_s: u64,
    /// Failures in this VM since it last logged.
    count: Cell<u64>,
    /// Before this second, this VM does not even look at the shared key.
    quiet_until: Cell<u64>,
}

impl FailureLog {
    pub fn new(key: &'static str, interval_s: u64) -> Self {
        FailureLog { key, interval_s, count: Cell::new(0), quiet_until: Cell::new(0) }
    }

    /// Counts a failure; `Some(failures since this VM's last line)` when this one should be
    /// logged.
    pub fn note<S: SharedStore + ?Sized>(&self, store: &S, now: u64) -> Option<u64> {
        self.count.set(self.count.get() + 1);
        if now < self.quiet_until.get() {
            return None;
        }
        let interval = self.interval_s;
        let won = update(store, self.key, 8, |value| {
            let next = value.and_then(|v| <[u8; 8]>::try_from(v).ok()).map(u64::from_le_bytes).unwrap_or(0);
            if now < next {
                Update::Keep(Err(next))
            } else {
                Update::Write(now.saturating_add(interval).to_le_bytes().to_vec(), Ok(()))
            }
        });
        match won {
            Ok(Ok(())) => {
                self.quiet_until.set(now.saturating_add(interval));
                Some(self.count.replace(0))
            }
            Ok(Err(next)) => {
                self.quiet_until.set(next);
                None
            }
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cost, FailureMode};
    use filter_common::shared::MemoryStore;

    const T0: u64 = 1_795_737_600;

    fn budget(name: &str, tokens: u64) -> Budget {
        Budget { name: name.into(), key: vec![], models: None, tokens, window_s: 60, window_label: "1m".into(), cost: Cost::TOTAL }
    }

    fn claim(budget: usize, key: &str, amount: u64) -> Claim {
        let value = rls::descriptor_value(key.as_bytes());
        Claim { budget, hash: filter_common::hash::stable_hash(&[&[budget as u8], key.as_bytes()]), amount, entries: rls::entries(&[("budget", "b"), ("subject", &value)]) }
    }

    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<(Vec<u8>, u32)>>,
        wakes: Cell<u32>,
        refuse: Cell<bool>,
    }

    impl Transport for &Recorder {
        fn call(&self, message: &[u8], timeout_ms: u32) -> Option<u32> {
            if self.refuse.get() {
                return None;
            }
            let mut calls = self.calls.borrow_mut();
            calls.push((message.to_vec(), timeout_ms));
            Some(calls.len() as u32)
        }
        fn wake(&self) {
            self.wakes.set(self.wakes.get() + 1);
        }
    }

    fn global(timeout_ms: u32) -> Global {
        Global { cluster: "ratelimit".into(), domain: "llm".into(), timeout_ms, failure_mode: FailureMode::Deny }
    }

    /// A response with one status per (remaining, over limit) pair, limits of 1000 a minute.
    fn answer(statuses: &[(u32, bool)]) -> Vec<u8> {
        let mut out = vec![0x08, 1];
        for (remaining, over) in statuses {
            let mut s = vec![0x08, if *over { 2 } else { 1 }, 0x12, 0x05, 0x08, 0xe8, 0x07, 0x10, 0x02, 0x18];
            let mut r = *remaining;
            while r >= 0x80 {
                s.push((r as u8 & 0x7f) | 0x80);
                r >>= 7;
            }
            s.push(r as u8);
            s.extend_from_slice(&[0x22, 0x02, 0x08, 30]);
            out.push(0x12);
            out.push(s.len() as u8);
            out.extend_from_slice(&s);
        }
        out
    }

    #[test]
    fn local_admission_and_settlement_go_through_the_table() {
        let budgets = [budget("b", 1000)];
        let ledger = LocalLedger { table: Table { max_keys: 64 }, store: MemoryStore::new() };
        let claims = [claim(0, "alice", 600)];
        let Opening::Ready(rooms) = ledger.open(&budgets, &claims, T0) else { panic!() };
        assert_eq!(rooms, vec![Room { tokens: 1000, limit: 1000, reset_at: None, window_s: None }]);
        let Reservation::Admitted { holds, tightest, .. } = reserve(&ledger.table, &ledger.store, &budgets, &claims, &rooms, T0) else { panic!() };
        assert_eq!(tightest, Some(Standing { limit: 1000, remaining: 400, reset_at: T0 + 60 }));
        ledger.charge(&budgets, &claims[0], &holds[0].1, 250, T0 + 1).unwrap();
        let r = ledger.table.peek(&ledger.store, limits(&budgets[0]), claims[0].hash, T0 + 1).unwrap();
        assert_eq!((r.used, r.reserved), (250, 0));
    }

    #[test]
    fn admission_names_the_tightest_claim_and_the_ones_near_their_limit() {
        // After these reservations: a has 150 of 1000 left (under a fifth), b 90 of 100, c 500
        // of 1000. The tightest by room left is b; only a is near its limit.
        let budgets = [budget("a", 1000), budget("b", 100), budget("c", 1000)];
        let (table, store) = (Table { max_keys: 64 }, MemoryStore::new());
        let claims = [claim(0, "alice", 850), claim(1, "alice", 10), claim(2, "alice", 500)];
        let rooms: Vec<Room> = budgets.iter().map(Room::of).collect();
        let Reservation::Admitted { tightest, tightest_claim, near_limit, .. } = reserve(&table, &store, &budgets, &claims, &rooms, T0) else { panic!() };
        assert_eq!(tightest.map(|t| t.remaining), Some(90));
        assert_eq!(tightest_claim, Some(1));
        assert_eq!(near_limit, vec![0]);
    }

    #[test]
    fn a_denied_claim_gives_back_the_earlier_ones() {
        let budgets = [budget("a", 1000), budget("b", 100)];
        let (table, store) = (Table { max_keys: 64 }, MemoryStore::new());
        let claims = [claim(0, "alice", 50), claim(1, "alice", 50)];
        let rooms = [Room::of(&budgets[0]), Room { tokens: 0, limit: 100, reset_at: Some(T0 + 9), window_s: Some(60) }];
        let got = reserve(&table, &store, &budgets, &claims, &rooms, T0);
        assert_eq!(got, Reservation::Denied { claim: 1, standing: Standing { limit: 100, remaining: 0, reset_at: T0 + 9 }, contended: 0 });
        assert_eq!(table.peek(&store, limits(&budgets[0]), claims[0].hash, T0).unwrap().committed(), 0);
    }

    #[test]
    fn global_admission_checks_without_counting_and_holds_in_flight_requests_locally() {
        let budgets = [budget("b", 1000)];
        let rec = Recorder::default();
        let ledger = GlobalLedger::new(Table { max_keys: 64 }, MemoryStore::new(), &rec, global(50));
        let claims = [claim(0, "alice", 300)];
        assert_eq!(ledger.open(&budgets, &claims, T0), Opening::Asked(1));
        let (message, timeout) = rec.calls.borrow()[0].clone();
        assert_eq!(timeout, 50);
        assert_eq!(message, rls::request("llm", [(&claims[0].entries[..], 0)]), "hits_addend 0: check only");
        // The service says 500 remain: admitted against 500 minus what this replica holds.
        let rooms = ledger.answer(&claims, Ok(&answer(&[(500, false)])), T0).unwrap();
        assert_eq!(rooms, vec![Room { tokens: 500, limit: 1000, reset_at: Some(T0 + 30), window_s: Some(60) }]);
        let first = reserve(&ledger.table, &ledger.store, &budgets, &claims, &rooms, T0);
        let Reservation::Admitted { holds, tightest, .. } = first else { panic!("{first:?}") };
        assert_eq!(tightest, Some(Standing { limit: 1000, remaining: 200, reset_at: T0 + 30 }));
        // A second request with the same stale answer still fits (200 left), a third does not.
        assert!(matches!(reserve(&ledger.table, &ledger.store, &budgets, &claims, &rooms, T0), Reservation::Admitted { .. }));
        assert!(matches!(reserve(&ledger.table, &ledger.store, &budgets, &claims, &rooms, T0), Reservation::Denied { .. }));
        // Over the limit at the service: denied whatever this replica holds.
        let rooms = ledger.answer(&claims, Ok(&answer(&[(0, true)])), T0).unwrap();
        assert_eq!(rooms[0].tokens, 0);
        // Settling: the 300 reservation becomes a held charge of 120 and the charge is queued.
        ledger.charge(&budgets, &claims[0], &holds[0].1, 120, T0 + 1).unwrap();
        assert_eq!(rec.wakes.get(), 1);
        let r = ledger.table.peek(&ledger.store, limits(&budgets[0]), claims[0].hash, T0 + 1).unwrap();
        assert_eq!((r.used, r.reserved), (0, 300 + 120), "the other request's 300 and the unconfirmed 120");
        let sent = ledger.flush(T0 * 1000 + 1000);
        assert_eq!(sent.sent, 1);
        let (message, timeout) = rec.calls.borrow()[1].clone();
        assert_eq!(timeout, MIN_SETTLE_TIMEOUT_MS);
        assert_eq!(message, rls::request("llm", [(&claims[0].entries[..], 120)]));
        // Confirmed: the held 120 is released.
        let done = ledger.settled(&budgets, 2, Ok(&answer(&[(380, false)])), T0 * 1000 + 1002);
        assert_eq!(done.confirmed, 1);
        let r = ledger.table.peek(&ledger.store, limits(&budgets[0]), claims[0].hash, T0 + 1).unwrap();
        assert_eq!(r.reserved, 300);
    }

    #[test]
    fn answers_that_cannot_be_used_are_failures() {
        let rec = Recorder::default();
        let ledger = GlobalLedger::new(Table { max_keys: 64 }, MemoryStore::new(), &rec, global(50));
        let claims = [claim(0, "alice", 1), claim(0, "bob", 1)];
        assert_eq!(ledger.answer(&claims, Err(14), T0), Err(Failure::Status(14)));
        assert_eq!(ledger.answer(&claims, Ok(b"\x0f"), T0), Err(Failure::BadAnswer));
        assert_eq!(ledger.answer(&claims, Ok(&answer(&[(5, false)])), T0), Err(Failure::BadAnswer), "one status for two descriptors");
        assert_eq!(ledger.answer(&claims, Ok(b"\x08\x01\x12\x02\x08\x01\x12\x02\x08\x01"), T0), Err(Failure::Unconfigured(0)));
        rec.refuse.set(true);
        assert_eq!(ledger.open(&[budget("b", 1)], &claims, T0), Opening::Failed(Failure::NotSent));
    }

    const REFUSED: &[u8] = b"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused";
    const TERMINATED: &[u8] = b"upstream connect error or disconnect/reset before headers. reset reason: connection termination";

    #[test]
    fn only_a_call_that_never_reached_the_service_counts_as_unreached() {
        let cases: [(u32, &[u8], bool); 12] = [
            (14, REFUSED, true),
            (14, b"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: 111", true),
            (14, b"upstream connect error or disconnect/reset before headers. reset reason: connection timeout", true),
            (14, b"upstream connect error or disconnect/reset before headers. reset reason: overflow", true),
            (14, b"no healthy upstream", true),
            (2, b"redis error: dial tcp 127.0.0.1:6379: connect: connection refused", true),
            (14, TERMINATED, false),
            (14, b"upstream connect error or disconnect/reset before headers. reset reason: remote reset", false),
            (14, b"upstream connect error or disconnect/reset before headers. retried and the latest reset reason: remote connection failure", false),
            (14, b"upstream request timeout", false),
            (4, b"", false),
            (13, b"", false),
        ];
        for (status, message, want) in cases {
            assert_eq!(unreached(status, message), want, "{status} {}", String::from_utf8_lossy(message));
        }
    }

    #[test]
    fn settlement_batches_merge_keys_and_retry_only_what_the_service_cannot_have_counted() {
        let budgets = [budget("b", 1_000_000)];
        let rec = Recorder::default();
        let ledger = GlobalLedger::new(Table { max_keys: 64 }, MemoryStore::new(), &rec, global(50));
        let (alice, bob) = (claim(0, "alice", 100), claim(0, "bob", 100));
        let hold = |c: &Claim| match reserve(&ledger.table, &ledger.store, &budgets, std::slice::from_ref(c), &[Room::of(&budgets[0])], T0) {
            Reservation::Admitted { holds, .. } => holds[0].1,
            other => panic!("{other:?}"),
        };
        for (c, units) in [(&alice, 10), (&bob, 20), (&alice, 30)] {
            let h = hold(c);
            ledger.charge(&budgets, c, &h, units, T0).unwrap();
        }
        assert_eq!(rec.wakes.get(), 1, "woken once until the root flushes");
        let ms = T0 * 1000;
        assert_eq!(ledger.flush(ms).sent, 1);
        let want = rls::request("llm", [(&alice.entries[..], 40), (&bob.entries[..], 20)]);
        assert_eq!(rec.calls.borrow()[0].0, want, "one descriptor per key, charges summed");
        // Never reached the service (connection refused): back in the queue, not sent again
        // before the backoff.
        let r = ledger.settled(&budgets, 1, Err(CallError::new(14, REFUSED)), ms + 5);
        assert_eq!(r.retried, 3);
        assert_eq!(ledger.backlog(), 3);
        assert_eq!(ledger.flush(ms + 10).sent, 0, "backing off");
        assert_eq!(ledger.flush(ms + 5 + RETRY_BACKOFF_MS).sent, 1);
        assert_eq!(rec.calls.borrow()[1].0, want, "the same charges, in the same order");
        // The connection broke after the call went out: the service may have counted it;
        // released, not resent.
        let r = ledger.settled(&budgets, 2, Err(CallError::new(14, TERMINATED)), ms + 5 + RETRY_BACKOFF_MS + 10);
        assert_eq!((r.retried, r.unconfirmed), (0, 3));
        assert_eq!(ledger.backlog(), 0);
        let held = |c: &Claim| ledger.table.peek(&ledger.store, limits(&budgets[0]), c.hash, T0).unwrap().reserved;
        assert_eq!((held(&alice), held(&bob)), (0, 0), "nothing left held");
        // An unknown token changes nothing.
        assert_eq!(ledger.settled(&budgets, 99, Ok(b""), ms), Settled::default());
    }

    #[test]
    fn in_flight_calls_and_the_backlog_are_bounded() {
        let budgets = [budget("b", u64::MAX / 4)];
        let rec = Recorder::default();
        let ledger = GlobalLedger::new(Table { max_keys: 16_384 }, MemoryStore::new(), &rec, global(50));
        for i in 0..(MAX_BACKLOG + 10) {
            let c = claim(0, &format!("user-{i}"), 1);
            let h = match reserve(&ledger.table, &ledger.store, &budgets, std::slice::from_ref(&c), &[Room::of(&budgets[0])], T0) {
                Reservation::Admitted { holds, .. } => holds[0].1,
                other => panic!("{other:?}"),
            };
            ledger.charge(&budgets, &c, &h, 1, T0).unwrap();
        }
        assert_eq!(ledger.backlog(), MAX_BACKLOG);
        let r = ledger.flush(T0 * 1000);
        assert_eq!((r.sent, r.dropped), (MAX_IN_FLIGHT as u64, 10));
        assert_eq!(ledger.in_flight(), MAX_IN_FLIGHT);
        assert_eq!(ledger.backlog(), MAX_BACKLOG - MAX_IN_FLIGHT * MAX_BATCH);
        // Envoy refusing the call keeps the charges for later.
        let _ = ledger.settled(&budgets, 1, Ok(b""), T0 * 1000 + 1);
        rec.refuse.set(true);
        let before = ledger.backlog();
        assert_eq!(ledger.flush(T0 * 1000 + 2).sent, 0);
        assert_eq!(ledger.backlog(), before);
    }

    #[test]
    fn failures_are_logged_once_per_interval_across_workers() {
        let store = MemoryStore::new();
        let (a, b) = (FailureLog::new("tb.g.log", 10), FailureLog::new("tb.g.log", 10));
        assert_eq!(a.note(&store, T0), Some(1));
        assert_eq!(a.note(&store, T0 + 1), None);
        assert_eq!(b.note(&store, T0 + 2), None, "the other worker logged this interval");
        assert_eq!(b.note(&store, T0 + 5), None);
        assert_eq!(a.note(&store, T0 + 9), None);
        assert_eq!(b.note(&store, T0 + 10), Some(3), "its own three failures since it last logged");
        assert_eq!(a.note(&store, T0 + 11), None);
        assert_eq!(a.note(&store, T0 + 20), Some(4), "every failure counted, logged or not");
    }
}
