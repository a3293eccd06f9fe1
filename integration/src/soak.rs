//! The soak: steady load with a new subject on every request, through ab-variant, token-budget
//! and provider-fallback (both roles), twice:
//!
//! 1. **In one Envoy** (`integration/envoy/soak.yaml`, two workers) for a fixed time at a fixed
//!    rate, sampling Envoy's resident memory (`VmRSS` in `/proc/<pid>/status`) and the filters'
//!    counters (token-budget's overflow admissions and reclaimed slots show its table filling
//!    and being swept).
//! 2. **In the wasmtime host** (the same plugin configs, two token-budget VMs over one shared
//!    store standing for two workers), much faster and with a simulated clock, sampling what
//!    Envoy cannot show: the number of shared-data keys and each VM's linear memory.
//!
//! The curve is printed and written to `<target>/soak/report.json`. In the long mode
//! (`scripts/soak.sh`, 10 minutes) memory and key counts must be flat after warm-up (the first
//! third); every mode checks that requests succeed and that the key count stays within
//! token-budget's documented bound (`maxKeys + budgets + 1`).

use crate::client;
use crate::envoy::{prometheus_value, Bootstrap, Envoy};
use crate::host::{Plugin, Shared, Vm};
use crate::mock::{echo, llm};
use crate::paths;
use anyhow::{anyhow, Context as _, Result};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FIXTURE: &str = "integration/envoy/soak.yaml";
const KEY: &str = "sk-soak-openai-key";

#[derive(Clone, Debug)]
pub struct Options {
    /// How long the Envoy phase runs.
    pub envoy_seconds: u64,
    /// Requests per second sent to Envoy (half task-api GETs, half chat completions).
    pub rate: u32,
    /// Seconds between samples of the Envoy phase.
    pub sample_seconds: u64,
    /// Requests of the wasmtime-host phase (100 per simulated second).
    pub host_requests: u64,
    /// Fail unless memory and key counts are flat after warm-up (the long mode).
    pub assert_flat: bool,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct EnvoySample {
    pub seconds: f64,
    pub requests: u64,
    pub rss_kib: u64,
    pub overflow_admissions: u64,
    pub slots_reclaimed: u64,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct HostSample {
    pub requests: u64,
    pub simulated_seconds: u64,
    pub shared_keys: usize,
    pub shared_bytes: usize,
    /// Linear memory of each VM: token-budget (two workers), ab-variant, provider-fallback router.
    pub vm_memory_kib: Vec<u64>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub envoy: Vec<EnvoySample>,
    pub host: Vec<HostSample>,
    pub statuses: Vec<(u16, u64)>,
    pub transport_errors: u64,
    pub key_bound: usize,
    pub problems: Vec<String>,
}

/// Runs both phases; problems (failed requests, a key count over its bound, and in the long
/// mode growth after warm-up) are listed in the report rather than returned as errors.
pub fn run(options: &Options) -> Result<Report> {
    let mut report = Report::default();
    envoy_phase(options, &mut report)?;
    host_phase(options, &mut report)?;
    if options.assert_flat {
        check_flat(&mut report);
    }
    Ok(report)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0))))
        .unwrap_or(0)
}

fn chat_body(n: u64) -> Vec<u8> {
    json!({"model": "gpt-4o", "max_tokens": 16, "messages": [{"role": "user", "content": format!("hello from soak subject {n}")}]}).to_string().into_bytes()
}

struct Tally {
    statuses: std::sync::Mutex<std::collections::BTreeMap<u16, u64>>,
    transport_errors: AtomicU64,
    sent: AtomicU64,
}

fn one_request(envoy_port: u16, n: u64, tally: &Tally) {
    let user = format!("soak-{n}");
    let result = if n.is_multiple_of(2) {
        client::get(&format!("http://127.0.0.1:{envoy_port}/api/tasks"), &[("x-user-id", &user)])
    } else {
        client::post(
            &format!("http://127.0.0.1:{envoy_port}/v1/chat/completions"),
            &[("x-user-id", &user), ("content-type", "application/json")],
            &chat_body(n),
        )
    };
    match result {
        Ok(r) => *tally.statuses.lock().unwrap_or_else(|p| p.into_inner()).entry(r.status).or_default() += 1,
        Err(_) => {
            tally.transport_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn envoy_sample(envoy: &Envoy, started: Instant, tally: &Tally) -> EnvoySample {
    let stats = envoy.prometheus();
    EnvoySample {
        seconds: started.elapsed().as_secs_f64(),
        requests: tally.sent.load(Ordering::Relaxed),
        rss_kib: rss_kib(envoy.pid()),
        overflow_admissions: prometheus_value(&stats, "token_budget_overflow_admissions").unwrap_or(0),
        slots_reclaimed: prometheus_value(&stats, "token_budget_slots_reclaimed").unwrap_or(0),
    }
}

fn envoy_phase(options: &Options, report: &mut Report) -> Result<()> {
    let task_api = echo::start("task-api");
    let openai = llm::openai(KEY);
    let envoy = Bootstrap::load(FIXTURE)?
        .env("OPENAI_API_KEY", KEY)
        .concurrency(2)
        .log_level("warning")
        .cluster("task_api", task_api.port())?
        .cluster("llm", openai.port())?
        .start()?;
    let port = envoy.port("gateway");
    let tally = Arc::new(Tally { statuses: Default::default(), transport_errors: AtomicU64::new(0), sent: AtomicU64::new(0) });
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(options.envoy_seconds);
    let interval = Duration::from_secs_f64(1.0 / f64::from(options.rate.max(1)));
    let next = Arc::new(AtomicU64::new(0));

    // Workers take request numbers in order and send each at its slot of the steady schedule.
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (tally, stop, next) = (tally.clone(), stop.clone(), next.clone());
            std::thread::spawn(move || loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let due = started + interval * u32::try_from(n).unwrap_or(u32::MAX);
                if due >= deadline || stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait); // pacing the load, not waiting for readiness
                }
                one_request(port, n, &tally);
                tally.sent.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();

    report.envoy.push(envoy_sample(&envoy, started, &tally));
    print_envoy_header();
    print_envoy(report.envoy.last());
    let mut next_sample = started + Duration::from_secs(options.sample_seconds.max(1));
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200).min(deadline.saturating_duration_since(Instant::now())));
        if Instant::now() >= next_sample {
            report.envoy.push(envoy_sample(&envoy, started, &tally));
            print_envoy(report.envoy.last());
            next_sample += Duration::from_secs(options.sample_seconds.max(1));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    report.envoy.push(envoy_sample(&envoy, started, &tally));
    print_envoy(report.envoy.last());

    report.statuses = tally.statuses.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(s, n)| (*s, *n)).collect();
    report.transport_errors = tally.transport_errors.load(Ordering::Relaxed);
    let sent = tally.sent.load(Ordering::Relaxed);
    let bad: u64 = report.statuses.iter().filter(|(s, _)| *s != 200 && *s != 429).map(|(_, n)| n).sum();
    if bad + report.transport_errors > 0 {
        report.problems.push(format!(
            "Envoy phase: {bad} unexpected statuses and {} transport errors in {sent} requests ({:?})",
            report.transport_errors, report.statuses
        ));
    }
    if sent == 0 || report.envoy.iter().any(|s| s.rss_kib == 0) {
        report.problems.push("Envoy phase: no requests sent or no RSS read".into());
    }
    Ok(())
}

fn host_phase(options: &Options, report: &mut Report) -> Result<()> {
    let bootstrap = Bootstrap::load(FIXTURE)?;
    let config = |plugin: &str| -> Result<String> {
        bootstrap.wasm_plugins().into_iter().find(|(n, _, _)| n == plugin).map(|(_, c, _)| c).ok_or_else(|| anyhow!("{FIXTURE} has no plugin {plugin}"))
    };
    let tb_config = config("token-budget")?;
    let parsed: Value = serde_json::from_str(&tb_config).context("token-budget config")?;
    let max_keys = parsed["maxKeys"].as_u64().unwrap_or(10_000) as usize;
    let budgets = parsed["budgets"].as_array().map_or(0, Vec::len);
    report.key_bound = max_keys + budgets + 1;

    let shared = Shared::new();
    let tb = Plugin::filter("token_budget");
    // As the fixture configures them (allow_on_headers_stop_iteration on the ones that hold).
    let start = |plugin: &Arc<Plugin>, config: &str| Vm::builder(plugin, &shared).config(config).allow_on_headers_stop_iteration(true).start();
    let mut vms = vec![
        start(&tb, &tb_config),
        start(&tb, &tb_config),
        start(&Plugin::filter("ab_variant"), &config("ab-variant")?),
        start(&Plugin::filter("provider_fallback"), &config("provider-fallback-router")?),
    ];
    let usage = json!({"id": "chatcmpl-soak", "object": "chat.completion", "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}})
    .to_string();
    let ok_json = [(":status", "200"), ("content-type", "application/json")];
    let every = (options.host_requests / 40).max(1);
    let started = shared.now_ns() / 1_000_000_000;
    let sample = |vms: &mut Vec<Vm>, shared: &Arc<Shared>, requests: u64| HostSample {
        requests,
        simulated_seconds: shared.now_ns() / 1_000_000_000 - started,
        shared_keys: shared.shared_keys().len(),
        shared_bytes: shared.shared_bytes(),
        vm_memory_kib: vms.iter_mut().map(|vm| vm.memory_bytes() / 1024).collect(),
    };
    print_host_header();
    for n in 0..options.host_requests {
        let user = format!("soak-{n}");
        let body = chat_body(n);
        let post = [(":method", "POST"), (":path", "/v1/chat/completions"), (":authority", "gw"), (":scheme", "http"), ("content-type", "application/json"), ("x-user-id", user.as_str())];
        // token-budget on the worker the request landed on, then the other filters.
        let status = exchange(&mut vms[(n % 2) as usize], &post, Some(&body), &ok_json, usage.as_bytes());
        if status != 200 && status != 429 {
            report.problems.push(format!("host phase: token-budget answered {status} to request {n}"));
        }
        let get = [(":method", "GET"), (":path", "/api/tasks"), (":authority", "gw"), (":scheme", "http"), ("x-user-id", user.as_str())];
        exchange(&mut vms[2], &get, None, &[(":status", "200")], b"{}");
        exchange(&mut vms[3], &post, Some(&body), &ok_json, usage.as_bytes());
        // 100 requests per simulated second; each VM's timer fires once a second.
        shared.advance_ms(10);
        if n % 100 == 99 {
            vms.iter_mut().for_each(Vm::tick);
        }
        if n % every == every - 1 || n == 0 {
            report.host.push(sample(&mut vms, &shared, n + 1));
            print_host(report.host.last());
            let keys = report.host.last().map_or(0, |s| s.shared_keys);
            if keys > report.key_bound {
                report.problems.push(format!("host phase: {keys} shared-data keys, over the bound {}", report.key_bound));
            }
        }
    }
    Ok(())
}

/// One whole exchange whose stream is then dropped from the host; the status the client got.
fn exchange(vm: &mut Vm, request: &[(&str, &str)], body: Option<&[u8]>, response: &[(&str, &str)], response_body: &[u8]) -> u32 {
    let id = vm.new_stream();
    vm.request_headers(id, request, body.is_none());
    if let (Some(body), None) = (body, &vm.stream(id).local_reply) {
        vm.request_body(id, body, true);
    }
    let status = match &vm.stream(id).local_reply {
        Some(reply) => reply.status,
        None => {
            vm.response_headers(id, response, false);
            vm.response_body(id, response_body, true);
            200
        }
    };
    vm.end_stream(id);
    vm.forget_stream(id);
    status
}

/// Growth of `values` after the first third (warm-up): last-third median minus the value at the
/// end of warm-up.
fn growth(values: &[u64]) -> Option<(u64, u64)> {
    if values.len() < 6 {
        return None;
    }
    let warm = values[values.len() / 3];
    let mut tail: Vec<u64> = values[values.len() * 2 / 3..].to_vec();
    tail.sort_unstable();
    Some((warm, tail[tail.len() / 2]))
}

fn check_flat(report: &mut Report) {
    let rss: Vec<u64> = report.envoy.iter().map(|s| s.rss_kib).collect();
    match growth(&rss) {
        Some((warm, late)) => {
            let allowed = (warm / 10).max(16 * 1024);
            if late > warm + allowed {
                report.problems.push(format!("Envoy RSS grew after warm-up: {warm} KiB -> {late} KiB (allowed {allowed} KiB)"));
            }
        }
        None => report.problems.push("too few Envoy samples to judge flatness".into()),
    }
    let keys: Vec<u64> = report.host.iter().map(|s| s.shared_keys as u64).collect();
    if let Some((warm, late)) = growth(&keys) {
        if late > warm {
            report.problems.push(format!("shared-data keys grew after warm-up: {warm} -> {late}"));
        }
    }
    let vms = report.host.first().map_or(0, |s| s.vm_memory_kib.len());
    for i in 0..vms {
        let mem: Vec<u64> = report.host.iter().map(|s| s.vm_memory_kib[i]).collect();
        if let Some((warm, late)) = growth(&mem) {
            let allowed = (warm / 10).max(1024);
            if late > warm + allowed {
                report.problems.push(format!("VM {i} linear memory grew after warm-up: {warm} KiB -> {late} KiB"));
            }
        }
    }
}

fn print_envoy_header() {
    println!("envoy:  seconds  requests   rss_MiB  tb_overflow_admissions  tb_slots_reclaimed");
}

fn print_envoy(s: Option<&EnvoySample>) {
    if let Some(s) = s {
        println!("envoy: {:8.1} {:9} {:9.1} {:23} {:19}", s.seconds, s.requests, s.rss_kib as f64 / 1024.0, s.overflow_admissions, s.slots_reclaimed);
    }
}

fn print_host_header() {
    println!("host:  requests  sim_s  shared_keys  shared_KiB  vm_memory_KiB (tb, tb, ab, pf)");
}

fn print_host(s: Option<&HostSample>) {
    if let Some(s) = s {
        println!("host: {:9} {:6} {:12} {:11} {:?}", s.requests, s.simulated_seconds, s.shared_keys, s.shared_bytes / 1024, s.vm_memory_kib);
    }
}

/// Writes the report as JSON under the target directory; returns the path.
pub fn write_report(report: &Report) -> Result<std::path::PathBuf> {
    let dir = paths::target_dir().join("soak");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("report.json");
    std::fs::write(&path, serde_json::to_vec_pretty(report)?)?;
    Ok(path)
}
