//! What every filter in the suite shares.
//!
//! The modules split in two halves. [`config`], [`reply`], [`hash`], [`http`] and [`shared`]
//! are plain Rust: filter logic uses them and native tests exercise them. [`host`] is the only
//! module that talks to Envoy through the proxy-wasm ABI; filters' glue code goes through it so
//! that the hostcalls which can panic inside the SDK (UTF-8 header decoding, unexpected statuses)
//! are avoided in one place.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod config;
pub mod hash;
pub mod host;
pub mod http;
pub mod reply;
pub mod shared;

pub use config::ConfigError;
pub use reply::Reply;
