//! provider-fallback's stream translation (Anthropic SSE -> OpenAI chunks) on any bytes, cut
//! into chunks any way: the output is the same for every cutting, is well-formed SSE whose
//! events are JSON (then `[DONE]` last, or an error event last), and ends once finished.
//! The SSE parser underneath is also run with a small event limit, so its bound is reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_filters_fuzz::{chunkings, json, sse_data};
use provider_fallback::from_anthropic::ChunkStream;
use provider_fallback::sse::SseParser;

fn translate(chunks: &[&[u8]], include_usage: bool) -> Vec<u8> {
    let mut t = ChunkStream::new(1_700_000_000, include_usage);
    let mut out = Vec::new();
    for c in chunks {
        t.push(c, &mut out);
    }
    t.finish(&mut out);
    assert!(t.is_done());
    out
}

fn events(chunks: &[&[u8]], limit: usize) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut parser = SseParser::new(limit);
    let mut got = Vec::new();
    for c in chunks {
        parser
            .push(c, &mut |event, data| {
                assert!(data.len() <= limit, "an event over the limit was delivered");
                got.push((event.to_vec(), data.to_vec()));
            })
            .ok()?;
    }
    Some(got)
}

fuzz_target!(|data: &[u8]| {
    let cuts = chunkings(data);
    for include_usage in [false, true] {
        let first = translate(&cuts[0], include_usage);
        for c in &cuts[1..] {
            assert!(translate(c, include_usage) == first, "the output depends on how the stream was cut");
        }
        let payloads = sse_data(&first);
        let (last, rest) = payloads.split_last().expect("finish always writes an event");
        for p in rest {
            let v = json(p);
            assert!(v["error"].is_null(), "an error event before the end: {v}");
            assert_eq!(v["object"], "chat.completion.chunk");
        }
        if *last != b"[DONE]" {
            assert!(json(last)["error"]["message"].is_string(), "the last event is neither [DONE] nor an error");
        }
    }

    let parsed: Vec<_> = cuts.iter().map(|c| events(c, 64)).collect();
    if parsed.iter().all(Option::is_some) {
        assert!(parsed.windows(2).all(|w| w[0] == w[1]), "SSE events depend on how the stream was cut");
    }
});
