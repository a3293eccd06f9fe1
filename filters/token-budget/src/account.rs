//! What a finished request is charged: the settlement rules, apart from the ABI.
//!
//! | how the request ended | charged |
//! |---|---|
//! | no response from upstream (reset before headers, client gone, local reply) | nothing: the reservation is released |
//! | non-2xx response | nothing: providers do not bill errors |
//! | 2xx, body complete, final usage read | the usage |
//! | 2xx, body complete, usage missing, malformed, absurd, or in an encoding the filter cannot read | the reservation |
//! | 2xx, stream cut (upstream reset, client disconnect) before the final usage | what streamed: the input tokens the provider reported (else the prompt estimate) and one output token per content event seen (or the output reported, if more) |
//! | 2xx, stream cut after the final usage | the usage |

use crate::scan::Findings;
use crate::usage::{Unreadable, Usage};

/// Why a 2xx body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyProblem {
    /// A `content-encoding` other than identity, gzip or deflate.
    UnsupportedEncoding,
    /// Corrupt or oversized compressed data.
    Undecodable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The response finished (end of body, or of headers/trailers).
    Complete,
    /// The stream ended first: an upstream reset or the client went away.
    Interrupted,
}

/// Why the reservation was charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    Usage(Unreadable),
    Body(BodyProblem),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    Usage(Usage),
    Streamed(Usage),
    Reservation(Fallback),
    Nothing,
}

/// `status_ok`: `None` when no response headers arrived, else whether the status was 2xx.
pub fn decide(status_ok: Option<bool>, ending: Ending, problem: Option<BodyProblem>, findings: &Findings, prompt_estimate: u64) -> Charge {
    match status_ok {
        None | Some(false) => return Charge::Nothing,
        Some(true) => {}
    }
    if let Some(p) = problem {
        return Charge::Reservation(Fallback::Body(p));
    }
    let usage = findings.usage.usage();
    match (usage, findings.final_usage) {
        (Ok(u), true) => return Charge::Usage(u),
        (Err(e @ (Unreadable::Malformed | Unreadable::Absurd)), _) => return Charge::Reservation(Fallback::Usage(e)),
        _ => {}
    }
    match ending {
        Ending::Complete => Charge::Reservation(Fallback::Usage(Unreadable::Missing)),
        Ending::Interrupted => {
            let (input, cached) = findings.usage.input_so_far().unwrap_or((prompt_estimate, 0));
            let output = findings.usage.output_so_far().unwrap_or(0).max(findings.content_events);
            Charge::Streamed(Usage { input, cached, output })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(usage: &[&str], final_usage: bool, content_events: u64) -> Findings {
        let mut f = Findings { final_usage, content_events, ..Findings::default() };
        for u in usage {
            f.usage.merge_json(u.as_bytes());
        }
        f
    }

    /// name, status_ok, ending, body problem, findings, expected charge
    type Case<'a> = (&'a str, Option<bool>, Ending, Option<BodyProblem>, &'a Findings, Charge);

    #[test]
    fn settlement_table() {
        use Charge::*;
        let full = findings(&[r#"{"prompt_tokens": 10, "completion_tokens": 5}"#], true, 5);
        let provisional = findings(&[r#"{"input_tokens": 20, "cache_read_input_tokens": 4, "output_tokens": 1}"#], false, 3);
        let nothing = findings(&[], false, 7);
        let bad = findings(&[r#"{"prompt_tokens": -1}"#], true, 0);
        let absurd = findings(&[r#"{"prompt_tokens": 1000000000}"#], true, 0);
        let u = |input, cached, output| crate::usage::Usage { input, cached, output };
        let cases: Vec<Case> = vec![
            ("no response", None, Ending::Interrupted, None, &nothing, Nothing),
            ("error status", Some(false), Ending::Complete, None, &full, Nothing),
            ("error status cut", Some(false), Ending::Interrupted, None, &nothing, Nothing),
            ("complete", Some(true), Ending::Complete, None, &full, Usage(u(10, 0, 5))),
            ("cut after final usage", Some(true), Ending::Interrupted, None, &full, Usage(u(10, 0, 5))),
            ("complete, no usage", Some(true), Ending::Complete, None, &nothing, Reservation(Fallback::Usage(Unreadable::Missing))),
            ("complete, only message_start", Some(true), Ending::Complete, None, &provisional, Reservation(Fallback::Usage(Unreadable::Missing))),
            ("malformed", Some(true), Ending::Complete, None, &bad, Reservation(Fallback::Usage(Unreadable::Malformed))),
            ("malformed, cut", Some(true), Ending::Interrupted, None, &bad, Reservation(Fallback::Usage(Unreadable::Malformed))),
            ("absurd", Some(true), Ending::Complete, None, &absurd, Reservation(Fallback::Usage(Unreadable::Absurd))),
            ("brotli", Some(true), Ending::Complete, Some(BodyProblem::UnsupportedEncoding), &full, Reservation(Fallback::Body(BodyProblem::UnsupportedEncoding))),
            ("corrupt gzip", Some(true), Ending::Interrupted, Some(BodyProblem::Undecodable), &nothing, Reservation(Fallback::Body(BodyProblem::Undecodable))),
            ("openai stream cut: prompt estimate + content events", Some(true), Ending::Interrupted, None, &nothing, Streamed(u(40, 0, 7))),
            ("anthropic stream cut after message_start", Some(true), Ending::Interrupted, None, &provisional, Streamed(u(20, 4, 3))),
        ];
        for (name, status, ending, problem, f, want) in cases {
            assert_eq!(decide(status, ending, problem, f, 40), want, "{name}");
        }
    }
}
