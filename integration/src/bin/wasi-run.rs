//! Runs a wasm32-wasip1 command module under wasmtime: the `cargo test` runner for the filters'
//! logic tests compiled to wasm (`CARGO_TARGET_WASM32_WASIP1_RUNNER`), so the same tests that
//! run natively also run as wasm. Imports other than WASI (the proxy-wasm host functions the
//! filter glue references) trap if called; logic tests never call them.
//!
//! Usage: wasi-run MODULE.wasm [ARGS...]

use anyhow::{anyhow, Result};
use wasmtime::{Config, Engine, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

fn run() -> Result<i32> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let module_path = args.first().ok_or_else(|| anyhow!("usage: wasi-run MODULE.wasm [ARGS...]"))?;
    let engine = Engine::new(&Config::new()).map_err(|e| anyhow!("{e:?}"))?;
    let module = Module::from_file(&engine, module_path).map_err(|e| anyhow!("{module_path}: {e:?}"))?;
    let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |ctx| ctx).map_err(|e| anyhow!("{e:?}"))?;
    linker.define_unknown_imports_as_traps(&module).map_err(|e| anyhow!("{e:?}"))?;
    let mut wasi = WasiCtxBuilder::new();
    wasi.inherit_stdio().args(&args);
    for (k, v) in std::env::vars() {
        if k.starts_with("RUST_") {
            wasi.env(&k, &v);
        }
    }
    let mut store = Store::new(&engine, wasi.build_p1());
    let instance = linker.instantiate(&mut store, &module).map_err(|e| anyhow!("{e:?}"))?;
    let start = instance.get_typed_func::<(), ()>(&mut store, "_start").map_err(|e| anyhow!("{e:?}"))?;
    match start.call(&mut store, ()) {
        Ok(()) => Ok(0),
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(exit) => Ok(exit.0),
            None => Err(anyhow!("{e:?}")),
        },
    }
}

fn main() {
    match run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("wasi-run: {e:#}");
            std::process::exit(101);
        }
    }
}
