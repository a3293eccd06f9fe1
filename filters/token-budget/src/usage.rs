//! Token usage as the providers report it, and the one normalized form budgets are charged in.
//!
//! - OpenAI Chat Completions: `prompt_tokens` (cached included), `completion_tokens`,
//!   `prompt_tokens_details.cached_tokens`.
//! - OpenAI Responses: `input_tokens` (cached included), `output_tokens`,
//!   `input_tokens_details.cached_tokens`.
//! - Anthropic Messages: `input_tokens` (cache reads and writes excluded),
//!   `cache_creation_input_tokens`, `cache_read_input_tokens`, `output_tokens`. In a stream,
//!   `message_start` carries the input and cache counts and `message_delta` the cumulative
//!   output count, so the latest value of each field wins.

use serde::Deserialize;

/// More tokens than any model takes or produces in one request: a count above it is absurd and
/// the usage is treated as unreadable.
pub const ABSURD: u64 = 100_000_000;

#[derive(Deserialize, Debug, Default, Clone, Copy)]
struct Details {
    cached_tokens: Option<u64>,
}

/// One `usage` object; every field optional, unknown fields ignored.
#[derive(Deserialize, Debug, Default, Clone, Copy)]
struct RawUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    prompt_tokens_details: Option<Details>,
    input_tokens_details: Option<Details>,
}

/// Tokens of one request, normalized: `input` excludes cached input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input: u64,
    pub cached: u64,
    pub output: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.cached).saturating_add(self.output)
    }
}

/// Why usage could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// No usage object at all.
    Missing,
    /// Not JSON, a negative or fractional count, or counts that contradict each other.
    Malformed,
    /// A count above [`ABSURD`].
    Absurd,
}

/// The usage objects of one response, merged field by field (latest wins).
#[derive(Debug, Default, Clone, Copy)]
pub struct UsageAcc {
    raw: RawUsage,
    seen: bool,
    malformed: bool,
}

impl UsageAcc {
    /// Merges one `usage` object's JSON text.
    pub fn merge_json(&mut self, text: &[u8]) {
        match serde_json::from_slice::<RawUsage>(text) {
            Ok(u) => {
                self.seen = true;
                let r = &mut self.raw;
                fn take<T>(slot: &mut Option<T>, new: Option<T>) {
                    if new.is_some() {
                        *slot = new;
                    }
                }
                take(&mut r.prompt_tokens, u.prompt_tokens);
                take(&mut r.completion_tokens, u.completion_tokens);
                take(&mut r.input_tokens, u.input_tokens);
                take(&mut r.output_tokens, u.output_tokens);
                take(&mut r.cache_read_input_tokens, u.cache_read_input_tokens);
                take(&mut r.cache_creation_input_tokens, u.cache_creation_input_tokens);
                take(&mut r.prompt_tokens_details, u.prompt_tokens_details);
                take(&mut r.input_tokens_details, u.input_tokens_details);
            }
            Err(_) => self.malformed = true,
        }
    }

    /// Records a usage object that could not be captured (too large to be real).
    pub fn mark_malformed(&mut self) {
        self.malformed = true;
    }

    pub fn seen(&self) -> bool {
        self.seen
    }

    /// Input tokens reported so far (uncached, cached), if any were.
    pub fn input_so_far(&self) -> Option<(u64, u64)> {
        self.usage().ok().filter(|_| self.raw.prompt_tokens.or(self.raw.input_tokens).is_some()).map(|u| (u.input, u.cached))
    }

    /// Output tokens reported so far.
    pub fn output_so_far(&self) -> Option<u64> {
        self.raw.completion_tokens.or(self.raw.output_tokens).filter(|n| *n <= ABSURD)
    }

    /// The normalized usage.
    pub fn usage(&self) -> Result<Usage, Unreadable> {
        if self.malformed {
            return Err(Unreadable::Malformed);
        }
        if !self.seen {
            return Err(Unreadable::Missing);
        }
        let r = &self.raw;
        let input_total = r.prompt_tokens.or(r.input_tokens);
        let output = r.completion_tokens.or(r.output_tokens);
        if input_total.is_none() && output.is_none() {
            return Err(Unreadable::Missing);
        }
        let counts = [
            input_total,
            output,
            r.cache_read_input_tokens,
            r.cache_creation_input_tokens,
            r.prompt_tokens_details.and_then(|d| d.cached_tokens),
            r.input_tokens_details.and_then(|d| d.cached_tokens),
        ];
        if counts.iter().flatten().any(|n| *n > ABSURD) {
            return Err(Unreadable::Absurd);
        }
        let (input_total, output) = (input_total.unwrap_or(0), output.unwrap_or(0));
        if r.cache_read_input_tokens.is_some() || r.cache_creation_input_tokens.is_some() {
            // Anthropic: input_tokens excludes both; cache writes are priced as input.
            let cached = r.cache_read_input_tokens.unwrap_or(0);
            let input = input_total + r.cache_creation_input_tokens.unwrap_or(0);
            return Ok(Usage { input, cached, output });
        }
        let cached = r
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .or(r.input_tokens_details.and_then(|d| d.cached_tokens))
            .unwrap_or(0);
        if cached > input_total {
            return Err(Unreadable::Malformed);
        }
        Ok(Usage { input: input_total - cached, cached, output })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(objects: &[&str]) -> Result<Usage, Unreadable> {
        let mut acc = UsageAcc::default();
        for o in objects {
            acc.merge_json(o.as_bytes());
        }
        acc.usage()
    }

    #[test]
    fn provider_shapes() {
        let u = |input, cached, output| Ok(Usage { input, cached, output });
        let cases: Vec<(&str, Vec<&str>, Result<Usage, Unreadable>)> = vec![
            ("openai chat", vec![r#"{"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29, "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}"#], u(15, 4, 10)),
            ("openai chat, no details", vec![r#"{"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}"#], u(5, 0, 3)),
            ("openai embeddings", vec![r#"{"prompt_tokens": 8, "total_tokens": 8}"#], u(8, 0, 0)),
            ("openai responses", vec![r#"{"input_tokens": 36, "input_tokens_details": {"cached_tokens": 6}, "output_tokens": 87, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 123}"#], u(30, 6, 87)),
            ("anthropic json", vec![r#"{"input_tokens": 3, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 1, "output_tokens": 5, "service_tier": "standard"}"#], u(5, 1, 5)),
            ("anthropic stream: message_start then message_delta", vec![
                r#"{"input_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 10, "output_tokens": 1}"#,
                r#"{"output_tokens": 15}"#,
            ], u(25, 10, 15)),
            ("anthropic delta repeating cumulative input", vec![
                r#"{"input_tokens": 25, "cache_read_input_tokens": 0, "output_tokens": 1}"#,
                r#"{"input_tokens": 25, "cache_read_input_tokens": 0, "output_tokens": 40}"#,
            ], u(25, 0, 40)),
            ("nulls are absent", vec![r#"{"prompt_tokens": 2, "completion_tokens": null, "prompt_tokens_details": null}"#], u(2, 0, 0)),
            ("nothing", vec![], Err(Unreadable::Missing)),
            ("empty object", vec!["{}"], Err(Unreadable::Missing)),
            ("negative", vec![r#"{"prompt_tokens": -5, "completion_tokens": 3}"#], Err(Unreadable::Malformed)),
            ("fraction", vec![r#"{"prompt_tokens": 1.5, "completion_tokens": 3}"#], Err(Unreadable::Malformed)),
            ("string", vec![r#"{"prompt_tokens": "5", "completion_tokens": 3}"#], Err(Unreadable::Malformed)),
            ("not json", vec![r#"{"prompt_tokens": 5,"#], Err(Unreadable::Malformed)),
            ("absurd", vec![r#"{"prompt_tokens": 5, "completion_tokens": 100000001}"#], Err(Unreadable::Absurd)),
            ("beyond u64", vec![r#"{"prompt_tokens": 5, "completion_tokens": 99999999999999999999999}"#], Err(Unreadable::Malformed)),
            ("cached above prompt", vec![r#"{"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 6}}"#], Err(Unreadable::Malformed)),
            ("absurd cache", vec![r#"{"input_tokens": 5, "cache_read_input_tokens": 100000001, "output_tokens": 1}"#], Err(Unreadable::Absurd)),
        ];
        for (name, objects, want) in cases {
            assert_eq!(read(&objects), want, "{name}");
        }
    }

    #[test]
    fn partial_reports() {
        let mut acc = UsageAcc::default();
        assert_eq!(acc.input_so_far(), None);
        acc.merge_json(br#"{"input_tokens": 25, "cache_read_input_tokens": 10, "output_tokens": 1}"#);
        assert_eq!(acc.input_so_far(), Some((25, 10)));
        assert_eq!(acc.output_so_far(), Some(1));
        let mut acc = UsageAcc::default();
        acc.merge_json(br#"{"output_tokens": 7}"#);
        assert_eq!(acc.input_so_far(), None);
        assert_eq!(acc.output_so_far(), Some(7));
    }
}
