//! The soak run (integration/src/soak.rs); `scripts/soak.sh` runs it in the long mode.
//!
//!   soak [--seconds 600] [--rate 100] [--sample 10] [--host-requests 300000] [--no-assert]
//!
//! Prints the curve (Envoy RSS and token-budget counters over time; shared-data keys and VM
//! memory in the wasmtime host), writes it to <target>/soak/report.json, and exits non-zero if
//! a request failed, a key count passed its bound, or (unless --no-assert) memory or key counts
//! grew after warm-up.

use integration::soak::{self, Options};

fn main() {
    let mut o = Options { envoy_seconds: 600, rate: 100, sample_seconds: 10, host_requests: 300_000, assert_flat: true };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> u64 {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("{name} needs a number");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--seconds" => o.envoy_seconds = value("--seconds"),
            "--rate" => o.rate = u32::try_from(value("--rate")).unwrap_or(u32::MAX),
            "--sample" => o.sample_seconds = value("--sample"),
            "--host-requests" => o.host_requests = value("--host-requests"),
            "--no-assert" => o.assert_flat = false,
            other => {
                eprintln!("unknown argument {other}; see the comment at the top of integration/src/bin/soak.rs");
                std::process::exit(2);
            }
        }
    }
    let report = match soak::run(&o) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("soak: {e:#}");
            std::process::exit(1);
        }
    };
    match soak::write_report(&report) {
        Ok(path) => println!("report: {}", path.display()),
        Err(e) => eprintln!("soak: writing the report: {e:#}"),
    }
    println!("statuses: {:?}, transport errors: {}, key bound: {}", report.statuses, report.transport_errors, report.key_bound);
    if report.problems.is_empty() {
        println!("soak: ok");
    } else {
        for p in &report.problems {
            eprintln!("soak: {p}");
        }
        std::process::exit(1);
    }
}
