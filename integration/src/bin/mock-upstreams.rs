//! Runs the suite's mock upstreams on fixed addresses for the local gateway
//! (scripts/run-local.sh) until killed.
//!
//! Usage: mock-upstreams KIND:NAME@ADDRESS...
//!   echo:task-api@127.0.0.1:18080   an echo upstream that answers with the request it got
//!   openai:KEY@127.0.0.1:18082      an OpenAI-compatible provider accepting `Bearer KEY`
//!   anthropic:KEY@127.0.0.1:18083   an Anthropic Messages provider accepting `x-api-key: KEY`
//!   jwks:FILE@127.0.0.1:18090       a JWKS endpoint serving FILE (for example the jwks.json that
//!                                   integration/tools/mint_tokens.py writes), re-read per request

use integration::mock::llm::{self, Api};
use integration::mock::{echo, jwks, MockServer};

fn start(spec: &str) -> Result<MockServer, String> {
    let (kind_name, address) = spec.split_once('@').ok_or_else(|| format!("{spec}: expected KIND:NAME@ADDRESS"))?;
    let (kind, name) = kind_name.split_once(':').ok_or_else(|| format!("{spec}: expected KIND:NAME@ADDRESS"))?;
    let server = match kind {
        "echo" => echo::start_on(name, address),
        "openai" => llm::start(Api::OpenAi, name, Some(address)).map(|m| m.server),
        "anthropic" => llm::start(Api::Anthropic, name, Some(address)).map(|m| m.server),
        "jwks" => jwks::JwksServer::serve_file_on(name, address),
        other => return Err(format!("{spec}: unknown kind {other}")),
    };
    server.map_err(|e| format!("{spec}: {e}"))
}

fn main() {
    let specs: Vec<String> = std::env::args().skip(1).collect();
    if specs.is_empty() {
        eprintln!("usage: mock-upstreams KIND:NAME@ADDRESS...");
        std::process::exit(2);
    }
    let mut servers = Vec::new();
    for spec in &specs {
        match start(spec) {
            Ok(server) => {
                println!("{} listening on {}", server.name, server.addr);
                servers.push(server);
            }
            Err(e) => {
                eprintln!("mock-upstreams: {e}");
                std::process::exit(1);
            }
        }
    }
    println!("ready");
    loop {
        std::thread::park();
    }
}
