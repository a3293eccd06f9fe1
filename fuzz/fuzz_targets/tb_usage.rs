//! token-budget's usage reading on any response body, SSE or JSON, cut into chunks any way:
//! what it finds (the usage, or why it is unreadable; content events; whether the usage was
//! final) does not depend on the cutting, and no count it accepts is absurd. The reader that
//! skips the middle of long bodies agrees with the full reader on bodies it reads whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_filters_fuzz::chunkings;
use token_budget::scan::{BodyReader, Findings, ResponseReader, HEAD};
use token_budget::usage::ABSURD;

type Seen = (Result<token_budget::usage::Usage, token_budget::usage::Unreadable>, u64, bool, Option<(u64, u64)>, Option<u64>);

fn seen(f: &Findings) -> Seen {
    (f.usage.usage(), f.content_events, f.final_usage, f.usage.input_so_far(), f.usage.output_so_far())
}

fn full(content_type: &[u8], chunks: &[&[u8]]) -> Seen {
    let mut reader = BodyReader::for_content_type(content_type);
    let mut out = Findings::default();
    for c in chunks {
        reader.feed(c, &mut out);
    }
    reader.finish(&mut out);
    seen(&out)
}

fn windowed(content_type: &[u8], chunks: &[&[u8]]) -> Seen {
    let mut reader = ResponseReader::for_content_type(content_type);
    let mut out = Findings::default();
    for c in chunks {
        let (start, len) = reader.wanted(c.len());
        reader.feed(&c[start..start + len], c.len(), &mut out);
    }
    reader.finish(&mut out);
    seen(&out)
}

fuzz_target!(|data: &[u8]| {
    let cuts = chunkings(data);
    for content_type in [&b"text/event-stream"[..], b"application/json"] {
        let first = full(content_type, &cuts[0]);
        if let Ok(u) = &first.0 {
            assert!(u.input <= ABSURD && u.cached <= ABSURD && u.output <= ABSURD, "{u:?}");
        }
        for c in &cuts[1..] {
            assert_eq!(full(content_type, c), first, "usage depends on how the body was cut");
        }
        for c in &cuts {
            let w = windowed(content_type, c);
            if data.len() <= HEAD {
                assert_eq!(w, first, "the windowed reader disagrees on a body it reads whole");
            }
        }
    }
});
