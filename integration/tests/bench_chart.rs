//! scripts/bench_chart.py, which scripts/bench.sh runs after the benchmark driver: it turns
//! results.json into a PNG beside it, and refuses results without scenarios.

use integration::{envoy, paths};
use serde_json::json;
use std::process::Command;

fn chart(results: &serde_json::Value) -> (std::process::Output, std::path::PathBuf) {
    let dir = envoy::tempdir("bench-chart").unwrap();
    let input = dir.join("results.json");
    std::fs::write(&input, results.to_string()).unwrap();
    let out = Command::new(paths::python())
        .arg(paths::root().join("scripts/bench_chart.py"))
        .arg(&input)
        .output()
        .expect("run scripts/bench_chart.py (scripts/setup.sh installs matplotlib into .venv)");
    (out, dir.join("results.png"))
}

#[test]
fn bench_results_become_a_png_beside_them() {
    let results = json!({
        "settings": {"seconds": 8, "rounds": 3, "connections": 16, "concurrency": 1},
        "scenarios": [
            {"name": "bare", "rps": 18600.0, "p50_ms": 0.76, "p99_ms": 2.1, "runs": []},
            {"name": "ab-variant", "rps": 13400.0, "p50_ms": 1.05, "p99_ms": 3.4, "runs": []},
            {"name": "chain-4", "rps": 4100.0, "p50_ms": 3.5, "p99_ms": 9.8, "runs": []},
        ],
    });
    let (out, png) = chart(&results);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(bytes.len() > 10_000, "a {} byte image has no chart in it", bytes.len());

    let _ = std::fs::remove_dir_all(png.parent().unwrap());

    let (out, png) = chart(&json!({"settings": {}, "scenarios": []}));
    assert!(!out.status.success() && !png.exists());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no scenarios"));
    let _ = std::fs::remove_dir_all(png.parent().unwrap());
}
