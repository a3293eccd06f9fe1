//! Load tests against a real Envoy: each scenario is a filter chain in front of a
//! direct-response route (or an upstream), driven by `wrk`. Scenarios run interleaved over
//! several rounds so that drift on the machine hits all of them alike; a scenario's figure is
//! the median over rounds.

use crate::envoy::{tempdir, Bootstrap};
use crate::paths;
use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};
use std::process::Command;

/// One request shape a scenario sends.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

impl Request {
    pub fn get(path: &str) -> Request {
        Request { method: "GET", path: path.to_string(), headers: Vec::new(), body: None }
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn post_json(path: &str, body: &str) -> Request {
        Request {
            method: "POST",
            path: path.to_string(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(body.to_string()),
        }
    }
}

/// A filter chain and the request it is measured with.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    /// Filter names from `integration/envoy/bench/filters.yaml`, in chain order.
    pub filters: Vec<String>,
    pub request: Request,
    /// Upstream cluster port, for scenarios that route to one (`/upstream/...`).
    pub upstream_port: Option<u16>,
    /// Filter names from `filters.yaml` run as upstream HTTP filters of cluster `upstream`
    /// (before the upstream codec), for filters that work per upstream attempt.
    pub upstream_filters: Vec<String>,
    /// Text replaced in every string of the scenario's filter snippets, for material made when
    /// the benchmark starts (`@JWKS@` -> a freshly minted key set).
    pub vars: Vec<(String, String)>,
    /// Other clusters of base.yaml pointed at local ports (`ratelimit` -> the rate limit
    /// service the driver started).
    pub clusters: Vec<(String, u16)>,
}

impl Scenario {
    pub fn new(name: &str, filters: &[&str], request: Request) -> Scenario {
        Scenario {
            name: name.to_string(),
            filters: filters.iter().map(|s| s.to_string()).collect(),
            request,
            upstream_port: None,
            upstream_filters: Vec::new(),
            vars: Vec::new(),
            clusters: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub seconds: u32,
    pub rounds: u32,
    pub connections: u32,
    pub concurrency: u32,
}

/// One wrk run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Run {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub non_2xx: u64,
}

/// A scenario's median over rounds.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub scenario: String,
    pub runs: Vec<Run>,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The bootstrap for a scenario: base.yaml with the scenario's filters before the router.
pub fn bootstrap_for(scenario: &Scenario, concurrency: u32) -> Result<Bootstrap> {
    let filters: Value = serde_yaml::from_str(&std::fs::read_to_string(paths::root().join("integration/envoy/bench/filters.yaml"))?)?;
    let mut b = Bootstrap::load("integration/envoy/bench/base.yaml")?.concurrency(concurrency).log_level("warning");
    let chain = b
        .json_mut()
        .pointer_mut("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| anyhow!("base.yaml has no http_filters"))?;
    for (i, name) in scenario.filters.iter().enumerate() {
        let filter = filters.get(name).ok_or_else(|| anyhow!("filters.yaml has no filter {name}"))?;
        chain.insert(i, substitute(filter.clone(), &scenario.vars));
    }
    if !scenario.upstream_filters.is_empty() {
        let mut chain = Vec::new();
        for name in &scenario.upstream_filters {
            chain.push(filters.get(name).cloned().ok_or_else(|| anyhow!("filters.yaml has no filter {name}"))?);
        }
        chain.push(json!({"name": "envoy.filters.http.upstream_codec",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}}));
        let cluster = b
            .json_mut()
            .pointer_mut("/static_resources/clusters")
            .and_then(Value::as_array_mut)
            .and_then(|clusters| clusters.iter_mut().find(|c| c["name"] == "upstream"))
            .ok_or_else(|| anyhow!("base.yaml has no cluster upstream"))?;
        cluster["typed_extension_protocol_options"] = json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http_protocol_options": {}},
            "http_filters": chain
        }});
    }
    if let Some(port) = scenario.upstream_port {
        b = b.cluster("upstream", port)?;
    }
    for (name, port) in &scenario.clusters {
        b = b.cluster(name, *port)?;
    }
    Ok(b)
}

/// `value` with every `(from, to)` of `vars` replaced inside its strings.
fn substitute(value: Value, vars: &[(String, String)]) -> Value {
    match value {
        Value::String(mut s) => {
            for (from, to) in vars {
                s = s.replace(from.as_str(), to);
            }
            Value::String(s)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(|v| substitute(v, vars)).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, substitute(v, vars))).collect()),
        other => other,
    }
}

fn wrk_script(request: &Request) -> String {
    let mut lua = format!("wrk.method = {:?}\n", request.method);
    for (k, v) in &request.headers {
        lua.push_str(&format!("wrk.headers[{k:?}] = {v:?}\n"));
    }
    if let Some(body) = &request.body {
        lua.push_str(&format!("wrk.body = {body:?}\n"));
    }
    lua
}

fn parse_duration_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

/// Parses `wrk --latency` output.
pub fn parse_wrk(out: &str) -> Result<Run> {
    let mut run = Run::default();
    for line in out.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            run.rps = v.trim().parse().context("Requests/sec")?;
        } else if let Some(v) = t.strip_prefix("50%") {
            run.p50_ms = parse_duration_ms(v).ok_or_else(|| anyhow!("p50 {v}"))?;
        } else if let Some(v) = t.strip_prefix("99%") {
            run.p99_ms = parse_duration_ms(v).ok_or_else(|| anyhow!("p99 {v}"))?;
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            run.non_2xx = v.trim().parse().unwrap_or(0);
        }
    }
    if run.rps == 0.0 {
        bail!("could not parse wrk output:\n{out}");
    }
    Ok(run)
}

/// Runs one scenario once: start Envoy, warm up, measure, stop.
pub fn run_once(scenario: &Scenario, settings: &Settings) -> Result<Run> {
    let envoy = bootstrap_for(scenario, settings.concurrency)?.start()?;
    let dir = tempdir("bench")?;
    let script = dir.join("request.lua");
    std::fs::write(&script, wrk_script(&scenario.request))?;
    let url = envoy.url("bench", &scenario.request.path);
    let wrk = |seconds: u32| -> Result<String> {
        let out = Command::new("wrk")
            .arg("-t1")
            .arg(format!("-c{}", settings.connections))
            .arg(format!("-d{seconds}s"))
            .arg("--latency")
            .arg("-s")
            .arg(&script)
            .arg(&url)
            .output()
            .context("running wrk (apt-get install wrk; scripts/setup.sh does)")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    wrk(1)?;
    let run = parse_wrk(&wrk(settings.seconds)?)?;
    let _ = std::fs::remove_dir_all(dir);
    if run.non_2xx > 0 {
        bail!("{}: {} responses were not 2xx/3xx; the scenario is misconfigured", scenario.name, run.non_2xx);
    }
    Ok(run)
}

/// Runs every scenario `rounds` times, interleaved.
pub fn run_all(scenarios: &[Scenario], settings: &Settings) -> Result<Vec<Outcome>> {
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); scenarios.len()];
    for round in 1..=settings.rounds {
        for (i, s) in scenarios.iter().enumerate() {
            let run = run_once(s, settings).with_context(|| format!("scenario {}", s.name))?;
            eprintln!("round {round}/{} {:<32} {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms", settings.rounds, s.name, run.rps, run.p50_ms, run.p99_ms);
            runs[i].push(run);
        }
    }
    Ok(scenarios
        .iter()
        .zip(runs)
        .map(|(s, runs)| Outcome {
            scenario: s.name.clone(),
            rps: median(runs.iter().map(|r| r.rps).collect()),
            p50_ms: median(runs.iter().map(|r| r.p50_ms).collect()),
            p99_ms: median(runs.iter().map(|r| r.p99_ms).collect()),
            runs,
        })
        .collect())
}

/// Envoy's resident memory, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resident memory of Envoy running a scenario's chain at `workers` workers, after `requests`
/// requests (so every worker's VMs exist and have served traffic).
pub fn memory(scenario: &Scenario, workers: u32, requests: u32) -> Result<(u64, u64)> {
    let envoy = bootstrap_for(scenario, workers)?.start()?;
    let idle = rss_kib(envoy.pid()).ok_or_else(|| anyhow!("no RSS for envoy"))?;
    let dir = tempdir("bench-memory")?;
    let script = dir.join("request.lua");
    std::fs::write(&script, wrk_script(&scenario.request))?;
    let out = Command::new("wrk")
        .args(["-t1", "-c8", "-d3s", "-s"])
        .arg(&script)
        .arg(envoy.url("bench", &scenario.request.path))
        .output()
        .context("running wrk")?;
    let run = parse_wrk(&String::from_utf8_lossy(&out.stdout))?;
    if run.rps * 3.0 < f64::from(requests) {
        bail!("{}: only {:.0} requests/s", scenario.name, run.rps);
    }
    let loaded = rss_kib(envoy.pid()).ok_or_else(|| anyhow!("no RSS for envoy"))?;
    let _ = std::fs::remove_dir_all(dir);
    Ok((idle, loaded))
}

/// Microseconds a request costs in `x` beyond `base` (at one worker, from throughput).
pub fn cost_us(x: &Outcome, base: &Outcome) -> f64 {
    1e6 / x.rps - 1e6 / base.rps
}

/// A markdown table: requests/s, p50, p99, ratio to bare and cost per request over bare.
pub fn table(outcomes: &[Outcome]) -> String {
    let bare = outcomes.iter().find(|o| o.scenario == "bare");
    let mut out = String::from("| scenario | requests/s | ratio to bare | µs/request over bare | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|\n");
    for o in outcomes {
        let (ratio, cost) = match bare {
            Some(b) => (format!("{:.2}", o.rps / b.rps), format!("{:.1}", cost_us(o, b))),
            None => ("-".into(), "-".into()),
        };
        out.push_str(&format!("| {} | {:.0} | {ratio} | {cost} | {:.2} | {:.2} |\n", o.scenario, o.rps, o.p50_ms, o.p99_ms));
    }
    out
}

pub fn to_json(outcomes: &[Outcome], settings: &Settings) -> Value {
    json!({
        "settings": {"seconds": settings.seconds, "rounds": settings.rounds, "connections": settings.connections, "concurrency": settings.concurrency},
        "scenarios": outcomes.iter().map(|o| json!({
            "name": o.scenario, "rps": o.rps, "p50_ms": o.p50_ms, "p99_ms": o.p99_ms,
            "runs": o.runs.iter().map(|r| json!({"rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_latency_output() {
        let out = "Running 8s test @ http://127.0.0.1:1/\n  1 threads and 16 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     1.10ms  201.00us   5.00ms   90.00%\n  Latency Distribution\n     50%    1.05ms\n     75%    1.20ms\n     90%    1.40ms\n     99%  812.00us\n  107000 requests in 8.00s, 10.00MB read\n  Non-2xx or 3xx responses: 3\nRequests/sec:  13375.50\nTransfer/sec:      1.25MB\n";
        let r = parse_wrk(out).unwrap();
        assert_eq!(r.rps, 13375.5);
        assert_eq!(r.p50_ms, 1.05);
        assert_eq!(r.p99_ms, 0.812);
        assert_eq!(r.non_2xx, 3);
        assert!(parse_wrk("garbage").is_err());
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
