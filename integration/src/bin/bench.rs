//! The benchmark suite (scripts/bench.sh): every scenario measured in one run, interleaved.
//!
//! Usage: bench [--seconds N] [--rounds N] [--connections N] [--only a,b,...]
//! Writes target/bench/results.{md,json}. Timing is reported, never asserted.

use integration::bench::{self, Outcome, Request, Scenario, Settings};
use integration::paths;

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new("bare", &[], Request::get("/api/tasks").header("x-user-id", "alice")),
        Scenario::new("empty-wasm", &["noop"], Request::get("/api/tasks").header("x-user-id", "alice")),
        Scenario::new("ab-variant", &["ab-variant"], Request::get("/api/tasks").header("x-user-id", "alice")),
    ]
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn find<'a>(outcomes: &'a [Outcome], name: &str) -> Option<&'a Outcome> {
    outcomes.iter().find(|o| o.scenario == name)
}

/// Targets from the issues, checked against this run's numbers and reported.
fn targets(outcomes: &[Outcome]) -> Vec<String> {
    let mut lines = Vec::new();
    if let (Some(bare), Some(empty)) = (find(outcomes, "bare"), find(outcomes, "empty-wasm")) {
        let empty_cost = bench::cost_us(empty, bare);
        if let Some(ab) = find(outcomes, "ab-variant") {
            let over = bench::cost_us(ab, empty);
            let share = over / empty_cost * 100.0;
            lines.push(format!(
                "ab-variant costs {over:.1} µs/request over the empty filter = {share:.0}% of the empty filter's own {empty_cost:.1} µs over bare (target ≤ 25%): {}",
                if share <= 25.0 { "met" } else { "MISSED" }
            ));
        }
    }
    lines
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = Settings {
        seconds: arg(&args, "--seconds", 8),
        rounds: arg(&args, "--rounds", 3),
        connections: arg(&args, "--connections", 16),
        concurrency: 1,
    };
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').map(str::to_string).collect());
    let scenarios: Vec<Scenario> =
        scenarios().into_iter().filter(|s| only.as_ref().is_none_or(|o| o.contains(&s.name) || s.name == "bare")).collect();

    let outcomes = match bench::run_all(&scenarios, &settings) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e:#}");
            std::process::exit(1);
        }
    };
    let mut report = format!(
        "Envoy {} with --concurrency {}, wrk -t1 -c{} -d{}s, {} interleaved rounds (medians).\n\n",
        envoy_version(),
        settings.concurrency,
        settings.connections,
        settings.seconds,
        settings.rounds
    );
    report.push_str(&bench::table(&outcomes));
    let checks = targets(&outcomes);
    if !checks.is_empty() {
        report.push('\n');
        for c in &checks {
            report.push_str(&format!("- {c}\n"));
        }
    }
    println!("{report}");
    let dir = paths::target_dir().join("bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("results.md"), &report);
    let _ = std::fs::write(dir.join("results.json"), bench::to_json(&outcomes, &settings).to_string());
    eprintln!("wrote {}", dir.join("results.md").display());
}

fn envoy_version() -> String {
    std::process::Command::new(paths::envoy_bin())
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).split('/').nth(1).map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
