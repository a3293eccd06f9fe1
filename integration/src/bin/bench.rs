//! The benchmark suite (scripts/bench.sh): every scenario measured in one run, interleaved.
//!
//! Usage: bench [--seconds N] [--rounds N] [--connections N] [--only a,b,...] [--memory]
//! Writes target/bench/results.{md,json}. Timing is reported, never asserted.

use integration::bench::{self, Outcome, Request, Scenario, Settings};
use integration::paths;
use integration::mock::llm;

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new("bare", &[], Request::get("/api/tasks").header("x-user-id", "alice")),
        Scenario::new("empty-wasm", &["noop"], Request::get("/api/tasks").header("x-user-id", "alice")),
        Scenario::new("ab-variant", &["ab-variant"], Request::get("/api/tasks").header("x-user-id", "alice")),
    ]
}

/// token-budget: admission on a non-streaming completion beside an empty wasm filter and
/// Envoy's native local_ratelimit, all with the same request to the same upstream; and a 1 MB
/// SSE completion streamed through the filter and without it. The upstream is a mock provider
/// (a direct response would answer before a filter that reads the request body has decided).
fn token_budget_scenarios(llm_port: u16) -> Vec<Scenario> {
    let chat = r#"{"model":"gpt-4o","max_tokens":64,"messages":[{"role":"user","content":"Say hello in five words."}]}"#;
    let streaming = r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Write a long essay."}]}"#;
    let scenario = |name: &str, filters: &[&str], body: &str| Scenario {
        upstream_port: Some(llm_port),
        ..Scenario::new(name, filters, Request::post_json("/upstream/v1/chat/completions", body).header("x-user-id", "alice"))
    };
    vec![
        scenario("llm-bare", &[], chat),
        scenario("llm-empty-wasm", &["noop"], chat),
        scenario("llm-local-ratelimit", &["local-ratelimit"], chat),
        scenario("llm-token-budget", &["token-budget"], chat),
        scenario("sse-1mb-bare", &[], streaming),
        scenario("sse-1mb-empty-wasm", &["noop"], streaming),
        scenario("sse-1mb-token-budget", &["token-budget"], streaming),
    ]
}

/// token-budget in global mode: the same admission as `llm-token-budget`, checked at and
/// charged into the rate limit service (`ratelimit` cluster) that `main` starts, beside local
/// admission and bare Envoy in the same run.
fn token_budget_global_scenarios(llm_port: u16, ratelimit_port: u16) -> Vec<Scenario> {
    let chat = r#"{"model":"gpt-4o","max_tokens":64,"messages":[{"role":"user","content":"Say hello in five words."}]}"#;
    vec![Scenario {
        upstream_port: Some(llm_port),
        clusters: vec![("ratelimit".into(), ratelimit_port)],
        ..Scenario::new("llm-token-budget-global", &["token-budget-global"], Request::post_json("/upstream/v1/chat/completions", chat).header("x-user-id", "alice"))
    }]
}

/// Redis and the rate limit service, configured from the `token-budget-global` snippet.
fn start_ratelimit() -> integration::ratelimit::RateLimit {
    let snippets: serde_json::Value = std::fs::read_to_string(paths::root().join("integration/envoy/bench/filters.yaml"))
        .ok()
        .and_then(|t| serde_yaml::from_str(&t).ok())
        .unwrap_or_default();
    let config = snippets["token-budget-global"]["typed_config"]["config"]["configuration"]["value"].as_str().unwrap_or_default();
    integration::ratelimit::RateLimit::start(config).unwrap_or_else(|e| {
        eprintln!("bench: starting the rate limit service: {e:#}");
        std::process::exit(1)
    })
}

/// A mock provider: a Chat Completions JSON answer with its usage, or, for `"stream":true`, a
/// 1 MB SSE stream (one word per event, written 16 KB at a time, then the usage chunk).
fn llm_upstream() -> integration::mock::MockServer {
    use integration::mock::MockResponse;
    let mut body = Vec::with_capacity(1 << 20);
    let mut i = 0;
    while body.len() < (1 << 20) {
        let event = format!(
            "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" word{i}\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
        );
        body.extend_from_slice(event.as_bytes());
        i += 1;
    }
    body.extend_from_slice(format!("data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":{i},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n", i + 5).as_bytes());
    let chunks: Vec<Vec<u8>> = body.chunks(16 * 1024).map(<[u8]>::to_vec).collect();
    let completion = serde_json::json!({"id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there, how are you?"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 14, "completion_tokens": 7, "total_tokens": 21, "prompt_tokens_details": {"cached_tokens": 0}}});
    integration::mock::serve("llm", move |r| {
        if r.json()["stream"] == true {
            MockResponse::Stream {
                status: 200,
                headers: vec![("content-type".into(), "text/event-stream".into())],
                chunks: chunks.iter().map(|c| (std::time::Duration::ZERO, c.clone())).collect(),
                reset_after: false,
            }
        } else {
            MockResponse::json(200, &completion)
        }
    })
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn find<'a>(outcomes: &'a [Outcome], name: &str) -> Option<&'a Outcome> {
    outcomes.iter().find(|o| o.scenario == name)
}

/// provider-fallback's mock providers (both accept the key `bench-key` that its upstream-role
/// filter snippets inject).
fn provider_upstreams() -> (llm::LlmMock, llm::LlmMock) {
    (llm::openai("bench-key"), llm::anthropic("bench-key"))
}

/// provider-fallback: the router role, the upstream role (OpenAI provider: headers and key;
/// Anthropic provider: translation both ways) and both roles, each against bare routing to the
/// same mock provider; and a 1000-token stream translated from Anthropic SSE.
fn provider_fallback_scenarios(openai: u16, anthropic: u16) -> Vec<Scenario> {
    let chat = r#"{"model":"gpt-4o","max_tokens":16,"messages":[{"role":"user","content":"Say hello in five words."}]}"#;
    let chat_stream = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Say hello."}]}"#;
    let messages = r#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"Say hello in five words."}]}"#;
    let messages_stream = r#"{"model":"claude-sonnet-4-5","max_tokens":2000,"stream":true,"messages":[{"role":"user","content":"Say hello."}]}"#;
    let to = |port: u16, name: &str, filters: &[&str], upstream_filters: &[&str], request: Request| Scenario {
        upstream_port: Some(port),
        upstream_filters: upstream_filters.iter().map(|f| f.to_string()).collect(),
        ..Scenario::new(name, filters, request)
    };
    let openai_request = |body: &str| Request::post_json("/v1/chat/completions", body);
    let with_key = |body: &str| openai_request(body).header("authorization", "Bearer bench-key");
    let anthropic_request =
        |body: &str| Request::post_json("/v1/messages", body).header("x-api-key", "bench-key").header("anthropic-version", "2023-06-01");
    vec![
        to(openai, "pf-bare", &[], &[], with_key(chat)),
        to(openai, "pf-empty-wasm", &["noop"], &[], with_key(chat)),
        to(openai, "pf-router", &["pf-router"], &[], with_key(chat)),
        to(openai, "pf-upstream", &[], &["pf-upstream-openai"], openai_request(chat)),
        to(openai, "pf-both", &["pf-router"], &["pf-upstream-openai"], openai_request(chat)),
        to(anthropic, "pf-anthropic-bare", &[], &[], anthropic_request(messages)),
        to(anthropic, "pf-anthropic-translated", &[], &["pf-upstream-anthropic"], openai_request(chat)),
        to(anthropic, "pf-sse-bare", &[], &[], anthropic_request(messages_stream).header("x-mock-output-tokens", "1000")),
        to(anthropic, "pf-sse-translated", &[], &["pf-upstream-anthropic"], openai_request(chat_stream).header("x-mock-output-tokens", "1000")),
    ]
}

/// jwt-claims against Envoy's native jwt_authn, with and without their caches, on the same
/// RS256 key and token (minted now by integration/tools/mint_tokens.py); ES256 and EdDSA
/// verification without the cache as well.
fn jwt_scenarios() -> (Vec<Scenario>, Vec<(String, String)>, String) {
    let minted = integration::mock::jwks::mint(None, 1).unwrap_or_else(|e| panic!("minting benchmark tokens: {e:#}"));
    let jwks = minted.bench["jwks"].as_str().unwrap_or_default().to_string();
    let vars = vec![("@JWKS_STRING@".to_string(), serde_json::json!(jwks).to_string()), ("@JWKS@".to_string(), jwks)];
    let token = |alg: &str| minted.bench[alg][0].as_str().unwrap_or_default().to_string();
    let scenario = |name: &str, filter: &str, alg: &str| Scenario {
        vars: vars.clone(),
        ..Scenario::new(name, &[filter], Request::get("/api/tasks").header("authorization", &format!("Bearer {}", token(alg))))
    };
    let scenarios = vec![
        scenario("jwt-claims", "jwt-claims", "rs256"),
        scenario("jwt-claims-cold", "jwt-claims-cold", "rs256"),
        scenario("jwt-claims-cold-es256", "jwt-claims-cold", "es256"),
        scenario("jwt-claims-cold-eddsa", "jwt-claims-cold", "eddsa"),
        scenario("jwt-authn", "jwt-authn", "rs256"),
        scenario("jwt-authn-nocache", "jwt-authn-nocache", "rs256"),
    ];
    (scenarios, vars, token("rs256"))
}

/// The full chain of four on a realistic request — a valid token (cached after the first
/// request), an experiment, a budget and a non-streaming completion from the OpenAI mock — against
/// the same request routed to the same mock with no filter; and a 1 MB Anthropic SSE completion
/// through token-budget and provider-fallback's translation against the same stream untouched.
fn chain_scenarios(openai: u16, anthropic: u16, jwt: &[(String, String)], token: &str) -> Vec<Scenario> {
    let chat = r#"{"model":"gpt-4o","max_tokens":16,"messages":[{"role":"user","content":"Say hello in five words."}]}"#;
    let chat_stream = r#"{"model":"gpt-4o","max_tokens":20000,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Write a long essay."}]}"#;
    let messages_stream = r#"{"model":"claude-sonnet-4-5","max_tokens":20000,"stream":true,"messages":[{"role":"user","content":"Write a long essay."}]}"#;
    let chain = ["jwt-claims", "ab-variant-llm", "token-budget", "pf-router"];
    let bearer = format!("Bearer {token}");
    // About 1 MB of Anthropic SSE: ~110 bytes per text event.
    let words = "9500";
    vec![
        Scenario {
            upstream_port: Some(openai),
            ..Scenario::new("chain-bare", &[], Request::post_json("/v1/chat/completions", chat).header("authorization", "Bearer bench-key"))
        },
        Scenario {
            upstream_port: Some(openai),
            upstream_filters: vec!["pf-upstream-openai".into()],
            vars: jwt.to_vec(),
            ..Scenario::new("chain-4", &chain, Request::post_json("/v1/chat/completions", chat).header("authorization", &bearer))
        },
        Scenario {
            upstream_port: Some(anthropic),
            ..Scenario::new(
                "sse-1mb-anthropic-bare",
                &[],
                Request::post_json("/v1/messages", messages_stream)
                    .header("x-api-key", "bench-key")
                    .header("anthropic-version", "2023-06-01")
                    .header("x-mock-output-tokens", words),
            )
        },
        Scenario {
            upstream_port: Some(anthropic),
            upstream_filters: vec!["pf-upstream-anthropic".into()],
            ..Scenario::new(
                "sse-1mb-anthropic-translated",
                &["token-budget"],
                Request::post_json("/v1/chat/completions", chat_stream).header("x-user-id", "alice").header("x-mock-output-tokens", words),
            )
        },
    ]
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
    if let (Some(bare), Some(empty), Some(tb)) = (find(outcomes, "llm-bare"), find(outcomes, "llm-empty-wasm"), find(outcomes, "llm-token-budget")) {
        let empty_cost = bench::cost_us(empty, bare);
        let tb_cost = bench::cost_us(tb, bare);
        let ratio = tb_cost / empty_cost;
        let native = find(outcomes, "llm-local-ratelimit").map(|n| format!("; native local_ratelimit costs {:.1} µs", bench::cost_us(n, bare))).unwrap_or_default();
        lines.push(format!(
            "token-budget admission costs {tb_cost:.1} µs/request over bare = {ratio:.2}x the empty filter's {empty_cost:.1} µs{native} (target ≤ 1.5x): {}",
            if ratio <= 1.5 { "met" } else { "MISSED" }
        ));
    }
    if let (Some(bare), Some(local), Some(global)) = (find(outcomes, "llm-bare"), find(outcomes, "llm-token-budget"), find(outcomes, "llm-token-budget-global")) {
        // No numeric target in the issue: reported for the lead to judge.
        lines.push(format!(
            "token-budget global admission (a ShouldRateLimit round trip to the rate limit service and Redis, and the settlement call) costs {:.1} µs/request over bare, {:.1} µs over local admission (p50 {:.2} ms vs {:.2} ms local, {:.2} ms bare)",
            bench::cost_us(global, bare),
            bench::cost_us(global, local),
            global.p50_ms,
            local.p50_ms,
            bare.p50_ms
        ));
    }
    if let (Some(bare), Some(empty), Some(tb)) = (find(outcomes, "sse-1mb-bare"), find(outcomes, "sse-1mb-empty-wasm"), find(outcomes, "sse-1mb-token-budget")) {
        let time = |o: &Outcome| 1e6 / o.rps;
        let accounting = (time(tb) - time(empty)) / time(empty) * 100.0;
        let whole = (time(tb) - time(bare)) / time(bare) * 100.0;
        lines.push(format!(
            "streaming accounting adds {accounting:.1}% to the time to stream 1 MB through a wasm filter ({:.0} µs vs {:.0} µs; {whole:.1}% over no filter at all) (target < 5%): {}",
            time(tb),
            time(empty),
            if accounting < 5.0 { "met" } else { "MISSED" }
        ));
    }
    if let (Some(ours), Some(native)) = (find(outcomes, "jwt-claims"), find(outcomes, "jwt-authn")) {
        let share = ours.rps / native.rps * 100.0;
        lines.push(format!(
            "jwt-claims with its cache reaches {share:.0}% of native jwt_authn-with-cache throughput ({:.0} vs {:.0} req/s) (target ≥ 90%): {}",
            ours.rps,
            native.rps,
            if share >= 90.0 { "met" } else { "MISSED" }
        ));
    }
    if let (Some(ours), Some(native)) = (find(outcomes, "jwt-claims-cold"), find(outcomes, "jwt-authn-nocache")) {
        let ratio = native.rps / ours.rps;
        let costs = find(outcomes, "bare")
            .map(|bare| format!("; {:.0} vs {:.0} µs/request over bare", bench::cost_us(ours, bare), bench::cost_us(native, bare)))
            .unwrap_or_default();
        lines.push(format!(
            "jwt-claims cold RS256 (every request verified) is {ratio:.2}x slower than native jwt_authn without cache ({:.0} vs {:.0} req/s{costs}) (target ≤ 4x): {}",
            ours.rps,
            native.rps,
            if ratio <= 4.0 { "met" } else { "MISSED" }
        ));
    }
    if let Some(bare) = find(outcomes, "bare") {
        for alg in ["es256", "eddsa"] {
            if let Some(o) = find(outcomes, &format!("jwt-claims-cold-{alg}")) {
                lines.push(format!("jwt-claims cold {} costs {:.0} µs/request over bare ({:.0} req/s)", alg.to_uppercase(), bench::cost_us(o, bare), o.rps));
            }
        }
    }
    if let (Some(bare), Some(chain)) = (find(outcomes, "chain-bare"), find(outcomes, "chain-4")) {
        let share = chain.rps / bare.rps * 100.0;
        lines.push(format!(
            "the full chain of four runs at {share:.0}% of bare Envoy's requests/s on the realistic request ({:.0} vs {:.0} req/s; {:.1} µs/request) (target ≥ 50%): {}",
            chain.rps,
            bare.rps,
            bench::cost_us(chain, bare),
            if share >= 50.0 { "met" } else { "MISSED" }
        ));
    }
    if let (Some(bare), Some(ours)) = (find(outcomes, "sse-1mb-anthropic-bare"), find(outcomes, "sse-1mb-anthropic-translated")) {
        let time = |o: &Outcome| 1e6 / o.rps;
        let extra = (time(ours) - time(bare)) / time(bare) * 100.0;
        lines.push(format!(
            "streaming 1 MB through token-budget and provider-fallback's translation takes {extra:.1}% longer than the same stream untouched ({:.0} vs {:.0} µs) (target < 5%): {}",
            time(ours),
            time(bare),
            if extra < 5.0 { "met" } else { "MISSED" }
        ));
    }
    let cost = |a: &str, b: &str| Some(bench::cost_us(find(outcomes, a)?, find(outcomes, b)?));
    // No numeric targets in the issue for these: they are reported for the lead to judge.
    for (what, scenario, base) in [
        ("provider-fallback router role (body read, model header)", "pf-router", "pf-bare"),
        ("provider-fallback upstream role (OpenAI provider: host, path, key)", "pf-upstream", "pf-bare"),
        ("provider-fallback both roles", "pf-both", "pf-bare"),
        ("provider-fallback OpenAI->Anthropic translation both ways (JSON)", "pf-anthropic-translated", "pf-anthropic-bare"),
    ] {
        if let (Some(c), Some(empty)) = (cost(scenario, base), cost("pf-empty-wasm", "pf-bare")) {
            lines.push(format!("{what} adds {c:.1} µs/request over bare routing to the same mock (an empty wasm filter adds {empty:.1} µs)"));
        }
    }
    if let Some(c) = cost("pf-sse-translated", "pf-sse-bare") {
        // 1000 text events plus message_start, content_block_start, ping, stop, delta, stop.
        let events = 1006.0;
        lines.push(format!("provider-fallback streaming translation costs {:.2} µs per SSE event ({c:.0} µs per 1000-token stream over passing it through)", c / events));
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
    let llm = llm_upstream();
    let mut all = scenarios();
    all.extend(token_budget_scenarios(llm.port()));
    // Kept until the end: the global scenarios' Envoys call it.
    let ratelimit = only.as_ref().is_none_or(|o| o.iter().any(|name| name.ends_with("-global"))).then(start_ratelimit);
    if let Some(rl) = &ratelimit {
        all.extend(token_budget_global_scenarios(llm.port(), rl.grpc_port()));
    }
    let (pf_openai, pf_anthropic) = provider_upstreams();
    all.extend(provider_fallback_scenarios(pf_openai.port(), pf_anthropic.port()));
    if only.as_ref().is_none_or(|o| o.iter().any(|name| name.starts_with("jwt-") || name.starts_with("chain") || name.starts_with("sse-1mb-anthropic"))) {
        let (jwt, vars, token) = jwt_scenarios();
        all.extend(jwt);
        all.extend(chain_scenarios(pf_openai.port(), pf_anthropic.port(), &vars, &token));
    }
    let scenarios: Vec<Scenario> =
        all.into_iter().filter(|s| only.as_ref().is_none_or(|o| o.contains(&s.name) || s.name == "bare")).collect();

    let outcomes = match bench::run_all(&scenarios, &settings) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e:#}");
            std::process::exit(1);
        }
    };
    let mut memory_report = String::new();
    if args.iter().any(|a| a == "--memory") {
        // Envoy's resident memory at 2 workers: bare, and with the whole suite on its path.
        let pairs = [("chain-bare", "no filter"), ("chain-4", "the four filters (and the upstream role)")];
        memory_report.push_str("\n| Envoy at 2 workers | RSS idle | RSS after 3 s of load |\n|---|---:|---:|\n");
        for (name, label) in pairs {
            let Some(s) = scenarios.iter().find(|s| s.name == name) else { continue };
            match bench::memory(s, 2, 1000) {
                Ok((idle, loaded)) => memory_report.push_str(&format!("| {label} | {:.1} MiB | {:.1} MiB |\n", idle as f64 / 1024.0, loaded as f64 / 1024.0)),
                Err(e) => memory_report.push_str(&format!("| {label} | error: {e:#} | |\n")),
            }
        }
        memory_report.push_str("\nEnvoy reports no per-VM memory; each worker runs one VM per filter, so the difference above is the suite's cost for two workers.\n\n| module | bytes |\n|---|---:|\n");
        for artifact in ["ab_variant", "jwt_claims", "token_budget", "provider_fallback"] {
            let size = std::fs::metadata(paths::target_dir().join("wasm32-wasip1/release").join(format!("{artifact}.wasm"))).map(|m| m.len()).unwrap_or(0);
            memory_report.push_str(&format!("| {artifact}.wasm | {size} |\n"));
        }
    }
    let mut report = format!(
        "Envoy {} with --concurrency {}, wrk -t1 -c{} -d{}s, {} interleaved rounds (medians).\n\n",
        integration::envoy::version(),
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
    report.push_str(&memory_report);
    println!("{report}");
    let dir = paths::target_dir().join("bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("results.md"), &report);
    let _ = std::fs::write(dir.join("results.json"), bench::to_json(&outcomes, &settings).to_string());
    eprintln!("wrote {}", dir.join("results.md").display());
}
