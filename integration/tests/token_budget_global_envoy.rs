//! token-budget in global mode through real Envoys: two Envoy processes (two replicas) share one
//! envoyproxy/ratelimit service and one Redis (integration/src/ratelimit.rs starts both), with
//! clients spread across the replicas. The same load in local mode shows the N-fold overshoot
//! global mode replaces; faults (the service killed, Redis restarted, the service frozen) show
//! `failureMode` at work while Envoy keeps serving.

use integration::client::{self, Resp};
use integration::envoy::{Bootstrap, Envoy};
use integration::mock::llm::{self, Fault, LlmMock};
use integration::ratelimit::RateLimit;
use serde_json::{json, Value};
use std::io::Read;
use std::time::Duration;

const OPENAI_AUTH: (&str, &str) = ("authorization", "Bearer sk-test");

/// One per-user budget of `tokens` an hour, in `mode` (`local`, or `global` with `failure`).
/// The check's timeout is generous: these tests share a small machine with others, and a
/// check that misses its deadline is a failure (the frozen-service test sets its own).
fn config(tokens: u64, mode: &str, failure: &str) -> String {
    config_with_timeout(tokens, mode, failure, 1000)
}

fn config_with_timeout(tokens: u64, mode: &str, failure: &str, timeout_ms: u64) -> String {
    let global = if mode == "global" {
        format!(r#", "mode": "global", "global": {{"cluster": "ratelimit", "domain": "llm-tokens", "timeoutMs": {timeout_ms}, "failureMode": "{failure}"}}"#)
    } else {
        String::new()
    };
    format!(
        r#"{{"subject": {{"header": "x-user-id"}}, "budgets": [{{"name": "user_hour", "key": ["subject"], "tokens": {tokens}, "window": "1h"}}],
            "reserve": {{"default": 10}}{global}}}"#
    )
}

struct Replicas {
    envoys: Vec<Envoy>,
    openai: LlmMock,
    // Declared last: dropped after the Envoys, so its logs print after theirs on failure.
    rl: Option<RateLimit>,
}

impl Replicas {
    fn start(n: usize, filter_config: &str) -> Replicas {
        // Every count a test asserts falls in one hour window.
        integration::token_budget::clear_of_window_edge(3600, Duration::from_secs(120));
        let global = filter_config.contains(r#""mode": "global""#);
        let rl = global.then(|| RateLimit::start(filter_config).unwrap_or_else(|e| panic!("{e:#}")));
        let openai = llm::openai("sk-test");
        let envoys = (0..n)
            .map(|_| {
                let mut b = Bootstrap::load("integration/envoy/token-budget-global.yaml")
                    .and_then(|b| b.concurrency(2).cluster("openai", openai.port()))
                    .and_then(|b| b.wasm_config("token-budget", filter_config))
                    .unwrap_or_else(|e| panic!("{e:#}"));
                // Local mode never calls it; it still needs an address.
                b = b.cluster("ratelimit", rl.as_ref().map_or(1, RateLimit::grpc_port)).unwrap();
                b.start().unwrap_or_else(|e| panic!("{e:#}"))
            })
            .collect();
        Replicas { envoys, openai, rl }
    }

    fn rl(&mut self) -> &mut RateLimit {
        self.rl.as_mut().unwrap()
    }

    fn url(&self, replica: usize) -> String {
        self.envoys[replica].url("gateway", "/v1/chat/completions")
    }

    /// A stat summed over the replicas, once every replica's value satisfies `done` together.
    fn stat_sum(&self, name: &str, done: impl Fn(u64) -> bool) -> u64 {
        integration::poll(
            Duration::from_secs(10),
            Duration::from_millis(100),
            || self.envoys.iter().map(|e| integration::envoy::prometheus_value(&e.prometheus(), name).unwrap_or(0)).sum::<u64>(),
            |sum| done(*sum),
        )
    }

    /// No filter panicked or trapped in any replica.
    fn assert_no_traps(&self) {
        for e in &self.envoys {
            let log = e.log();
            for bad in ["panicked", "Uncaught", "wasm trap", "Function: proxy_on"] {
                assert!(!log.contains(bad), "{bad} in Envoy's log:\n{}", e.log_tail(40));
            }
        }
    }
}

/// A chat request: 10 prompt words; the mock answers with `output` completion tokens.
fn chat(max_tokens: u64) -> Value {
    json!({"model": "gpt-4o", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "one two three four five six seven eight nine ten"}]})
}

fn ask(url: &str, user: &str, output: u64) -> Resp {
    let out = output.to_string();
    client::post_json(url, &[OPENAI_AUTH, ("x-user-id", user), ("x-mock-output-tokens", &out)], &chat(output)).unwrap()
}

/// What a load run saw: tokens the admitted requests used, and the statuses.
#[derive(Debug, Default)]
struct Load {
    admitted_tokens: u64,
    admitted: u64,
    limited: u64,
    other: Vec<u16>,
}

/// `clients` threads per replica, each sending requests one after another for `user` until it
/// is answered 429 twice in a row (or `max_each` requests).
fn sequential_load(r: &Replicas, user: &str, clients: usize, max_each: usize) -> Load {
    let handles: Vec<_> = (0..r.envoys.len() * clients)
        .map(|i| {
            let (url, user) = (r.url(i % r.envoys.len()), user.to_string());
            std::thread::spawn(move || {
                let mut load = Load::default();
                let mut limited_in_a_row = 0;
                for _ in 0..max_each {
                    let resp = ask(&url, &user, 40);
                    match resp.status {
                        200 => {
                            load.admitted += 1;
                            load.admitted_tokens += resp.json()["usage"]["total_tokens"].as_u64().unwrap();
                            limited_in_a_row = 0;
                        }
                        429 => {
                            load.limited += 1;
                            limited_in_a_row += 1;
                            if limited_in_a_row == 2 {
                                break;
                            }
                        }
                        s => load.other.push(s),
                    }
                }
                load
            })
        })
        .collect();
    let mut total = Load::default();
    for h in handles {
        let l = h.join().unwrap();
        total.admitted_tokens += l.admitted_tokens;
        total.admitted += l.admitted;
        total.limited += l.limited;
        total.other.extend(l.other);
    }
    total
}

/// Each request: 10 prompt tokens and 40 completion tokens.
const PER_REQUEST: u64 = 50;

#[test]
fn two_replicas_sharing_the_service_keep_a_subject_within_its_budget() {
    let budget = 3000;
    let r = Replicas::start(2, &config(budget, "global", "deny"));
    // Each answer takes 20 ms: 8 clients keep 8 requests in flight across the replicas.
    r.openai.set_fault(Some(Fault::Delay(Duration::from_millis(20))));
    let clients_per_replica = 4;
    let load = sequential_load(&r, "alice", clients_per_replica, 200);
    eprintln!("global mode, 2 replicas, {} clients: {load:?}", 2 * clients_per_replica);
    assert!(load.other.is_empty(), "{load:?}");
    // The documented bound for clients that each wait for their answer: at most one request
    // per concurrent client is admitted on a count that its charge has not reached yet.
    let bound = budget + 2 * clients_per_replica as u64 * PER_REQUEST;
    assert!(load.admitted_tokens <= bound, "{} admitted tokens > budget {budget} + bound: {load:?}", load.admitted_tokens);
    assert!(load.admitted_tokens >= budget - 2 * clients_per_replica as u64 * PER_REQUEST, "the budget is usable: {load:?}");
    assert!(load.limited >= 2 * clients_per_replica as u64, "every client ends limited: {load:?}");
    // Every admitted request was charged at the service, once.
    assert_eq!(r.stat_sum("token_budget_global_charges_confirmed", |n| n >= load.admitted), load.admitted);
    assert_eq!(r.stat_sum("token_budget_user_hour_tokens_charged", |n| n >= load.admitted_tokens), load.admitted_tokens);
    assert_eq!(r.stat_sum("token_budget_global_check_failures", |_| true), 0);
    // Both replicas took part.
    for e in &r.envoys {
        assert!(integration::envoy::prometheus_value(&e.prometheus(), "token_budget_requests_admitted").unwrap_or(0) > 0);
    }
    r.assert_no_traps();
}

#[test]
fn the_same_load_in_local_mode_overshoots_n_fold() {
    let budget = 3000;
    let r = Replicas::start(2, &config(budget, "local", ""));
    r.openai.set_fault(Some(Fault::Delay(Duration::from_millis(20))));
    let load = sequential_load(&r, "alice", 4, 200);
    eprintln!("local mode, 2 replicas, 8 clients: {load:?}");
    // Each replica counts alone: together they admit about twice the budget.
    assert!(load.admitted_tokens > budget * 3 / 2, "{load:?}");
    assert!(load.admitted_tokens <= 2 * (budget + 4 * PER_REQUEST), "{load:?}");
}

/// A body-less POST reserves the default (10) and the mock answers 400, which charges nothing:
/// its `x-ratelimit-remaining-tokens` plus 10 is the room the service reports.
fn probe(url: &str, user: &str) -> Resp {
    client::post(url, &[OPENAI_AUTH, ("x-user-id", user)], b"").unwrap()
}

fn room(url: &str, user: &str) -> u64 {
    try_room(url, user).unwrap_or_else(|| panic!("the probe was not admitted"))
}

/// The room, or `None` when the probe was not admitted (the check failed).
fn try_room(url: &str, user: &str) -> Option<u64> {
    let r = probe(url, user);
    (r.status == 400).then(|| r.header("x-ratelimit-remaining-tokens").unwrap().parse::<u64>().unwrap() + 10)
}

/// Polls `f` until it is true (or 20 seconds pass).
fn eventually(what: &str, f: impl FnMut() -> bool) {
    if !integration::poll(Duration::from_secs(20), Duration::from_millis(100), f, |ok| *ok) {
        eprintln!("never: {what}");
    }
}

/// Lines Envoy logged about the rate limit service failing.
fn failure_lines(e: &Envoy) -> usize {
    e.log().lines().filter(|l| l.contains("rate limit service")).count()
}

/// Envoy itself still answers: its readiness and a request the filter does not account.
fn assert_serving(r: &Replicas) {
    for (i, e) in r.envoys.iter().enumerate() {
        assert_eq!(e.admin("/ready").unwrap(), (200, "LIVE\n".to_string()));
        let resp = client::get(&e.url("gateway", "/v1/models"), &[OPENAI_AUTH]).unwrap();
        assert!(resp.status < 500 && resp.json()["error"]["message"].is_string(), "replica {i}: not the mock's own answer: {} {}", resp.status, resp.text());
    }
}

#[test]
fn a_killed_service_fails_closed_with_503_and_recovers_when_it_returns() {
    let mut r = Replicas::start(2, &config(100_000, "global", "deny"));
    for i in 0..2 {
        assert_eq!(ask(&r.url(i), "alice", 5).status, 200);
    }
    r.rl().service.kill();
    let mut denied = 0;
    for i in 0..20 {
        let resp = ask(&r.url(i % 2), "alice", 5);
        assert_eq!(resp.status, 503, "{}", resp.text());
        assert_eq!(resp.json()["error"]["code"], "token_budget_unavailable");
        assert_eq!(resp.header("retry-after"), Some("1"));
        denied += 1;
    }
    assert_serving(&r);
    assert_eq!(r.stat_sum("token_budget_global_failure_denied", |n| n >= denied), denied);
    // Logged once per interval per Envoy, not per request.
    for e in &r.envoys {
        let lines = failure_lines(e);
        assert!((1..=2).contains(&lines), "{lines} failure lines:\n{}", e.log_tail(30));
    }
    // Envoy opened the upstream request with the headers, but no denied body went up.
    let bodies = r.openai.requests().iter().filter(|q| !q.body.is_empty()).count();
    assert_eq!(bodies, 2, "nothing unchecked went upstream");
    r.rl().service.restart().unwrap();
    for i in 0..2 {
        let url = r.url(i);
        eventually("admitted again once the service is back", || ask(&url, "alice", 5).status == 200);
    }
    r.assert_no_traps();
}

#[test]
fn a_killed_service_with_failure_mode_allow_admits_and_charges_it_on_return() {
    let budget = 10_000;
    let mut r = Replicas::start(2, &config(budget, "global", "allow"));
    let mut used = 0;
    for i in 0..4 {
        let resp = ask(&r.url(i % 2), "alice", 40);
        assert_eq!(resp.status, 200);
        used += resp.json()["usage"]["total_tokens"].as_u64().unwrap();
    }
    // Their charges have landed: none is in flight when the service dies. (One that is gets
    // Envoy's "connection termination" and is not sent again, since the service may have
    // counted it: token_budget_global_wasm.rs tests that case.)
    assert_eq!(r.stat_sum("token_budget_global_charges_confirmed", |n| n >= 4), 4);
    r.rl().service.kill();
    // Down: admitted on each replica's own guard; the charges wait in the settlement backlog.
    for i in 0..10 {
        let resp = ask(&r.url(i % 2), "alice", 40);
        assert_eq!(resp.status, 200, "{}", resp.text());
        used += resp.json()["usage"]["total_tokens"].as_u64().unwrap();
    }
    assert_serving(&r);
    assert!(r.stat_sum("token_budget_global_failure_allowed", |n| n >= 10) >= 10);
    assert!(r.stat_sum("token_budget_global_charges_retried", |n| n > 0) > 0, "settlements failed fast and were kept");
    r.rl().service.restart().unwrap();
    // Back: the kept charges are sent on the next ticks; the service has every token used.
    assert_eq!(r.stat_sum("token_budget_global_charges_confirmed", |n| n >= 14), 14);
    let url = r.url(0);
    let mut seen = 0;
    eventually("the service counts every admitted token", || {
        seen = room(&url, "alice");
        seen == budget - used
    });
    let report = || {
        let stats: Vec<String> = ["checks", "check_failures", "failure_allowed", "settlements_sent", "charges_confirmed", "charges_retried", "charges_unconfirmed"]
            .iter()
            .map(|n| format!("{n}={}", r.stat_sum(&format!("token_budget_global_{n}"), |_| true)))
            .collect();
        let lines: Vec<String> = r.envoys.iter().flat_map(|e| e.log().lines().filter(|l| l.contains("rate limit service")).map(str::to_string).collect::<Vec<_>>()).collect();
        format!("{}\n{}", stats.join(" "), lines.join("\n"))
    };
    assert_eq!(seen, budget - used, "{}", report());
    assert_eq!(r.stat_sum("token_budget_global_charges_unconfirmed", |_| true), 0, "every failed settlement was known not to have reached the service: {}", report());
    r.assert_no_traps();
}

#[test]
fn a_redis_restart_fails_requests_per_failure_mode_and_the_count_starts_over() {
    let budget = 10_000;
    let mut r = Replicas::start(2, &config(budget, "global", "deny"));
    assert_eq!(ask(&r.url(0), "alice", 40).status, 200);
    let url = r.url(1);
    eventually("the first charge landed", || room(&url, "alice") == budget - 50);
    r.rl().redis.stop();
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(ask(&r.url(i % 2), "alice", 40).status);
    }
    assert!(statuses.iter().all(|s| *s == 503), "Redis down, failureMode deny: {statuses:?}");
    assert_serving(&r);
    r.rl().redis.restart().unwrap();
    eventually("admitted again once Redis is back", || ask(&url, "alice", 40).status == 200);
    // Redis kept nothing (no persistence): the window's count restarted from what came after
    // (the requests admitted since; their charges land a round trip after they end).
    // The service's pooled Redis connections broke with the restart: a few more checks fail
    // until each has been replaced.
    let url0 = r.url(0);
    let mut left = budget;
    eventually("the new count holds the requests since the restart", || {
        left = try_room(&url0, "alice").unwrap_or(budget);
        left < budget
    });
    assert!(left >= budget - 2 * 50 && left < budget, "{left}");
    assert!(r.stat_sum("token_budget_global_check_failures", |n| n >= 6) >= 6);
    r.assert_no_traps();
}

#[test]
fn a_frozen_service_times_out_after_timeout_ms_per_failure_mode() {
    for (mode, want) in [("deny", 503), ("allow", 200)] {
        let r = Replicas::start(1, &config_with_timeout(100_000, "global", mode, 200));
        assert_eq!(ask(&r.url(0), "alice", 5).status, 200);
        r.rl.as_ref().unwrap().service.pause();
        for _ in 0..3 {
            let resp = ask(&r.url(0), "alice", 5);
            assert_eq!(resp.status, want, "{mode}: {}", resp.text());
        }
        assert_serving(&r);
        r.rl.as_ref().unwrap().service.resume();
        let url = r.url(0);
        eventually("checked normally once it answers again", || ask(&url, "bob", 5).status == 200 && {
            let before = r.stat_sum("token_budget_global_check_failures", |_| true);
            ask(&url, "bob", 5).status == 200 && r.stat_sum("token_budget_global_check_failures", |_| true) == before
        });
        assert!(r.stat_sum("token_budget_global_check_failures", |n| n >= 3) >= 3);
        r.assert_no_traps();
    }
}

/// A burst: `per_replica` slow streams for one subject start at once on every replica. Global
/// admission checks without counting, so the service cannot see requests in flight; each
/// replica holds its own in its table against the room the service reports. The measured
/// overshoot is printed; the bound is N × (room + one reservation) of reservations, and
/// usage never exceeds a reservation that had `max_tokens`.
fn burst(mode: &str, budget: u64, per_replica: usize) -> (u64, u64, u64) {
    let r = Replicas::start(2, &config(budget, mode, "deny"));
    let body = json!({"model": "gpt-4o", "max_tokens": 100, "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "one two three four five six seven eight nine ten"}]});
    let reservation = (body.to_string().len() as u64).div_ceil(4) + 100;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2 * per_replica));
    let handles: Vec<_> = (0..2 * per_replica)
        .map(|i| {
            let (url, body, barrier) = (r.url(i % 2), body.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let h = [OPENAI_AUTH, ("x-user-id", "burst"), ("x-mock-output-tokens", "100"), ("x-mock-chunk-delay-ms", "20"), ("content-type", "application/json")];
                let mut resp = client::post_streaming(&url, &h, body.to_string().as_bytes()).unwrap();
                let mut sink = Vec::new();
                let _ = resp.body.read_to_end(&mut sink);
                resp.status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let admitted = statuses.iter().filter(|s| **s == 200).count() as u64;
    assert_eq!(admitted + statuses.iter().filter(|s| **s == 429).count() as u64, statuses.len() as u64, "{statuses:?}");
    let charged = r.stat_sum("token_budget_user_hour_tokens_charged", |n| n >= admitted * 110);
    eprintln!("{mode} burst of {} streams on 2 replicas, budget {budget}, reservation {reservation}: {admitted} admitted, {charged} tokens charged ({:+} over the budget)", statuses.len(), charged as i64 - budget as i64);
    (admitted, charged, reservation)
}

#[test]
fn a_burst_across_replicas_stays_within_the_documented_bound() {
    let budget = 2000;
    let (admitted, charged, reservation) = burst("global", budget, 24);
    // Each replica admits while its own reservations leave room: ceil(budget / reservation).
    assert_eq!(admitted, 2 * budget.div_ceil(reservation));
    assert_eq!(charged, admitted * 110);
    assert!(charged <= 2 * (budget + reservation), "N x (room + one reservation)");
    // Requests that start at once on every replica are where global mode does no better than
    // local mode: each replica holds its own in flight against the room the service reports.
    let (local_admitted, local_charged, _) = burst("local", budget, 24);
    assert_eq!((local_admitted, local_charged), (admitted, charged));
}
