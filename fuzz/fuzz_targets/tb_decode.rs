//! token-budget's gzip/deflate inflater on any bytes, cut into chunks any way: it never hands
//! out more than its limit, and a stream that inflates gives the same bytes whatever the cutting.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_filters_fuzz::chunkings;
use token_budget::decode::{Encoding, Inflater};

const LIMIT: u64 = 64 * 1024;

fn inflate(encoding: Encoding, chunks: &[&[u8]]) -> (Vec<u8>, bool, bool) {
    let Some(mut inflater) = Inflater::new(encoding, LIMIT) else { return (Vec::new(), false, false) };
    let mut out = Vec::new();
    let mut ok = true;
    for c in chunks {
        if inflater.feed(c, |piece| out.extend_from_slice(piece)).is_err() {
            ok = false;
            break;
        }
    }
    assert!(out.len() as u64 <= LIMIT, "inflated past the limit: {}", out.len());
    (out, ok, inflater.finished())
}

fuzz_target!(|data: &[u8]| {
    let cuts = chunkings(data);
    for encoding in [Encoding::Gzip, Encoding::Deflate] {
        let results: Vec<_> = cuts.iter().map(|c| inflate(encoding, c)).collect();
        if results.iter().all(|(_, ok, finished)| *ok && *finished) {
            assert!(results.windows(2).all(|w| w[0].0 == w[1].0), "inflated bytes depend on the cutting");
        }
    }
});
