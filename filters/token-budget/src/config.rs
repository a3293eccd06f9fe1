//! token-budget configuration: the JSON users write, and the compiled form requests use.

use filter_common::config::check;
use filter_common::ConfigError;
use serde::Deserialize;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawConfig {
    pub subject: Option<RawSubject>,
    pub model: Option<RawModel>,
    pub budgets: Vec<RawBudget>,
    pub reserve: Option<RawReserve>,
    #[serde(default)]
    pub inject_stream_usage: bool,
    pub max_keys: Option<u64>,
    pub max_request_bytes: Option<u64>,
    /// `local` (default) or `global`. Strings rather than serde enums: the same messages for
    /// a few hundred bytes less of module.
    pub mode: Option<String>,
    pub global: Option<RawGlobal>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawGlobal {
    pub cluster: String,
    pub domain: String,
    pub timeout_ms: Option<u64>,
    pub failure_mode: String,
}

/// What global mode does when the rate limit service cannot answer (down, slower than
/// `timeoutMs`, Redis down, or a budget missing from its configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Answer 503: nothing goes upstream unchecked.
    Deny,
    /// Admit, holding the request against this Envoy's own table with the configured budget
    /// (local mode's guard, per replica), and charge the service once it answers again.
    Allow,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSubject {
    pub header: String,
    pub anonymous: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawModel {
    #[serde(default = "yes")]
    pub from_body: bool,
    pub header: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawBudget {
    pub name: String,
    #[serde(default)]
    pub key: Vec<String>,
    pub models: Option<Vec<String>>,
    pub tokens: u64,
    pub window: String,
    pub cost: Option<RawCost>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawCost {
    pub input: Option<f64>,
    pub output: Option<f64>,
    pub cached_input: Option<f64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawReserve {
    #[serde(default = "yes")]
    pub from_max_tokens: bool,
    pub default: Option<u64>,
}

/// Largest budget and reservation: far beyond any real budget, small enough that sums of a
/// few of them never overflow a u64.
pub const MAX_TOKENS: u64 = 1_000_000_000_000_000;
/// Longest window: 30 days.
pub const MAX_WINDOW_S: u64 = 30 * 86_400;
pub const DEFAULT_MAX_KEYS: u32 = 10_000;
pub const MAX_MAX_KEYS: u64 = 10_000_000;
pub const DEFAULT_RESERVE: u64 = 512;
/// Envoy's default per-connection buffer limit: a larger buffered body gets a 413 from Envoy.
pub const DEFAULT_MAX_REQUEST_BYTES: u32 = 1 << 20;
pub const MAX_BUDGETS: usize = 32;
pub const DEFAULT_TIMEOUT_MS: u32 = 50;
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// The rate limit service keeps limits as uint32.
pub const MAX_GLOBAL_TOKENS: u64 = u32::MAX as u64;

/// The compiled configuration, shared by every request through `Rc`.
#[derive(Debug)]
pub struct Config {
    pub subject: Option<Subject>,
    pub model: ModelSource,
    pub budgets: Vec<Budget>,
    pub reserve_from_max_tokens: bool,
    pub reserve_default: u64,
    pub inject_stream_usage: bool,
    pub max_keys: u32,
    pub max_request_bytes: u32,
    /// Every request header a budget key reads (besides the subject), lower-cased.
    pub key_headers: Vec<String>,
    /// `None`: local mode (this Envoy's shared data only).
    pub global: Option<Global>,
}

/// Global mode: budgets counted by an `envoyproxy/ratelimit` service shared by every replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    pub cluster: String,
    pub domain: String,
    pub timeout_ms: u32,
    pub failure_mode: FailureMode,
}

#[derive(Debug)]
pub struct Subject {
    pub header: String,
    pub anonymous: String,
}

#[derive(Debug, Default)]
pub struct ModelSource {
    pub from_body: bool,
    pub header: Option<String>,
}

/// One part of a budget key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    Subject,
    Model,
    /// Index into [`Config::key_headers`].
    Header(usize),
}

#[derive(Debug)]
pub struct Budget {
    pub name: String,
    pub key: Vec<KeyPart>,
    /// `None`: every model.
    pub models: Option<Vec<Glob>>,
    pub tokens: u64,
    pub window_s: u64,
    /// The window as configured (`1m`), for messages.
    pub window_label: String,
    pub cost: Cost,
}

impl Budget {
    pub fn applies_to(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|globs| globs.iter().any(|g| g.matches(model)))
    }

    pub fn keyed_by_model(&self) -> bool {
        self.key.contains(&KeyPart::Model)
    }
}

/// Token weights in thousandths, so cost arithmetic is exact integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub input_milli: u64,
    pub output_milli: u64,
    pub cached_milli: u64,
}

impl Cost {
    /// Plain total tokens.
    pub const TOTAL: Cost = Cost { input_milli: 1000, output_milli: 1000, cached_milli: 1000 };

    /// The cost of `input` uncached input, `cached` cached input and `output` tokens, rounded
    /// up to a whole unit.
    pub fn of(&self, input: u64, cached: u64, output: u64) -> u64 {
        let milli = (input as u128) * (self.input_milli as u128)
            + (cached as u128) * (self.cached_milli as u128)
            + (output as u128) * (self.output_milli as u128);
        u64::try_from(milli.div_ceil(1000)).unwrap_or(u64::MAX)
    }
}

/// A model name pattern where `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    /// The pattern split at `*`: the first part is a prefix, the last a suffix.
    parts: Vec<String>,
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        Glob { parts: pattern.split('*').map(str::to_string).collect() }
    }

    pub fn matches(&self, text: &str) -> bool {
        let parts = &self.parts;
        let Some((first, rest)) = parts.split_first() else { return text.is_empty() };
        let Some(mut remaining) = text.strip_prefix(first.as_str()) else { return false };
        let Some((last, middle)) = rest.split_last() else { return remaining.is_empty() };
        for part in middle {
            match remaining.find(part.as_str()) {
                Some(at) => remaining = &remaining[at + part.len()..],
                None => return false,
            }
        }
        remaining.len() >= last.len() && remaining.ends_with(last.as_str())
    }
}

/// `30s`, `1m`, `1h`, `1d`, `30d` to seconds.
pub fn parse_window(text: &str) -> Result<u64, String> {
    let unit_at = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(unit_at);
    let n: u64 = digits.parse().map_err(|_| format!("`{text}` is not a number followed by s, m, h or d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit must be s, m, h or d")),
    };
    let seconds = n.saturating_mul(scale);
    if seconds == 0 {
        return Err("must be at least 1s".into());
    }
    if seconds > MAX_WINDOW_S {
        return Err(format!("`{text}` is longer than 30d"));
    }
    Ok(seconds)
}

fn weight(field: &str, value: Option<f64>, default: u64) -> Result<u64, ConfigError> {
    let Some(w) = value else { return Ok(default) };
    if !w.is_finite() || !(0.0..=1000.0).contains(&w) {
        return Err(ConfigError::new(field, "must be a number from 0 to 1000"));
    }
    Ok((w * 1000.0).round() as u64)
}

impl TryFrom<RawCost> for Cost {
    type Error = ConfigError;

    fn try_from(raw: RawCost) -> Result<Self, ConfigError> {
        let input_milli = weight("input", raw.input, 1000)?;
        let output_milli = weight("output", raw.output, 1000)?;
        // Cached input is input unless priced apart.
        let cached_milli = weight("cachedInput", raw.cached_input, input_milli)?;
        if input_milli == 0 && output_milli == 0 && cached_milli == 0 {
            return Err(ConfigError::new("", "weights are all 0: nothing would ever be charged"));
        }
        Ok(Cost { input_milli, output_milli, cached_milli })
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        let subject = raw
            .subject
            .map(|s| -> Result<Subject, ConfigError> {
                let header = check::header_name("subject.header", &s.header)?;
                let anonymous = s.anonymous.unwrap_or_else(|| "anonymous".to_string());
                if anonymous.len() > 256 {
                    return Err(ConfigError::new("subject.anonymous", "must be at most 256 bytes"));
                }
                Ok(Subject { header, anonymous })
            })
            .transpose()?;
        let model = match raw.model {
            None => ModelSource { from_body: true, header: None },
            Some(m) => ModelSource {
                from_body: m.from_body,
                header: m.header.map(|h| check::header_name("model.header", &h)).transpose()?,
            },
        };

        if raw.budgets.is_empty() {
            return Err(ConfigError::new("budgets", "must list at least one budget"));
        }
        if raw.budgets.len() > MAX_BUDGETS {
            return Err(ConfigError::new("budgets", format!("at most {MAX_BUDGETS} budgets")));
        }
        let mut key_headers: Vec<String> = Vec::new();
        let mut budgets = Vec::with_capacity(raw.budgets.len());
        for (i, b) in raw.budgets.into_iter().enumerate() {
            let budget = compile_budget(b, subject.is_some(), &model, &mut key_headers)
                .map_err(|e| e.within(format!("budgets[{i}]")))?;
            budgets.push(budget);
        }
        check::unique("budgets", budgets.iter().map(|b| b.name.as_str()))?;

        let (reserve_from_max_tokens, reserve_default) = match raw.reserve {
            None => (true, DEFAULT_RESERVE),
            Some(r) => (r.from_max_tokens, r.default.unwrap_or(DEFAULT_RESERVE)),
        };
        if reserve_default > MAX_TOKENS {
            return Err(ConfigError::new("reserve.default", format!("must be at most {MAX_TOKENS}")));
        }
        let max_keys = match raw.max_keys {
            None => DEFAULT_MAX_KEYS,
            Some(n) if (1..=MAX_MAX_KEYS).contains(&n) => n as u32,
            Some(_) => return Err(ConfigError::new("maxKeys", format!("must be from 1 to {MAX_MAX_KEYS}"))),
        };
        let max_request_bytes = match raw.max_request_bytes {
            None => DEFAULT_MAX_REQUEST_BYTES,
            Some(n) if (1024..=(64 << 20)).contains(&n) => n as u32,
            Some(_) => return Err(ConfigError::new("maxRequestBytes", "must be from 1024 to 67108864")),
        };
        let global_mode = match raw.mode.as_deref() {
            None | Some("local") => false,
            Some("global") => true,
            Some(other) => return Err(ConfigError::new("mode", format!("`{other}` is not `local` or `global`"))),
        };
        let global = match (global_mode, raw.global) {
            (false, None) => None,
            (false, Some(_)) => return Err(ConfigError::new("global", "only used with \"mode\": \"global\"")),
            (true, None) => return Err(ConfigError::new("global", "required with \"mode\": \"global\"")),
            (true, Some(g)) => Some(compile_global(g, &budgets)?),
        };
        Ok(Config {
            subject,
            model,
            budgets,
            reserve_from_max_tokens,
            reserve_default,
            inject_stream_usage: raw.inject_stream_usage,
            max_keys,
            max_request_bytes,
            key_headers,
            global,
        })
    }
}

fn compile_global(raw: RawGlobal, budgets: &[Budget]) -> Result<Global, ConfigError> {
    let cluster = raw.cluster;
    if cluster.is_empty() || cluster.len() > 255 || cluster.bytes().any(|b| b.is_ascii_control()) {
        return Err(ConfigError::new("global.cluster", "must be an Envoy cluster name (1 to 255 characters)"));
    }
    if crate::rls::parses_as_message(cluster.as_bytes()) {
        return Err(ConfigError::new(
            "global.cluster",
            format!("`{cluster}` would be read by Envoy as a serialized GrpcService, not as a cluster name; rename the cluster"),
        ));
    }
    let domain = raw.domain;
    if domain.is_empty() || domain.len() > 128 || !domain.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err(ConfigError::new("global.domain", format!("`{domain}` must be 1 to 128 of A-Z a-z 0-9 - _ .")));
    }
    let timeout_ms = match raw.timeout_ms {
        None => DEFAULT_TIMEOUT_MS,
        Some(t) if (1..=MAX_TIMEOUT_MS).contains(&t) => t as u32,
        Some(_) => return Err(ConfigError::new("global.timeoutMs", format!("must be from 1 to {MAX_TIMEOUT_MS}"))),
    };
    for (i, b) in budgets.iter().enumerate() {
        if crate::rls::unit_of_window(b.window_s).is_none() {
            return Err(ConfigError::new(
                format!("budgets[{i}].window"),
                format!("`{}`: global mode needs a window the rate limit service has: 1s, 1m, 1h, 1d, 7d or 30d", b.window_label),
            ));
        }
        if b.tokens > MAX_GLOBAL_TOKENS {
            return Err(ConfigError::new(
                format!("budgets[{i}].tokens"),
                format!("global mode allows at most {MAX_GLOBAL_TOKENS} (the rate limit service's limits are uint32)"),
            ));
        }
    }
    let failure_mode = match raw.failure_mode.as_str() {
        "deny" => FailureMode::Deny,
        "allow" => FailureMode::Allow,
        other => return Err(ConfigError::new("global.failureMode", format!("`{other}` is not `deny` or `allow`"))),
    };
    Ok(Global { cluster, domain, timeout_ms, failure_mode })
}

fn compile_budget(
    raw: RawBudget,
    has_subject: bool,
    model: &ModelSource,
    key_headers: &mut Vec<String>,
) -> Result<Budget, ConfigError> {
    check::identifier("name", &raw.name)?;
    let mut key = Vec::with_capacity(raw.key.len());
    for (j, part) in raw.key.iter().enumerate() {
        let field = format!("key[{j}]");
        let compiled = match part.as_str() {
            "subject" if has_subject => KeyPart::Subject,
            "subject" => return Err(ConfigError::new(field, "`subject` needs the top-level `subject` setting")),
            "model" if model.from_body || model.header.is_some() => KeyPart::Model,
            "model" => return Err(ConfigError::new(field, "`model` needs `model.fromBody` or `model.header`")),
            other => match other.strip_prefix("header:") {
                Some(name) => {
                    let name = check::header_name(&field, name)?;
                    let at = match key_headers.iter().position(|h| *h == name) {
                        Some(at) => at,
                        None => {
                            key_headers.push(name);
                            key_headers.len() - 1
                        }
                    };
                    KeyPart::Header(at)
                }
                None => {
                    return Err(ConfigError::new(field, format!("`{other}` is not `subject`, `model` or `header:<name>`")))
                }
            },
        };
        if key.contains(&compiled) {
            return Err(ConfigError::new(field, format!("duplicate `{part}`")));
        }
        key.push(compiled);
    }
    let models = match raw.models {
        None => None,
        Some(list) if list.is_empty() => return Err(ConfigError::new("models", "must not be empty (leave it out for every model)")),
        Some(list) => {
            if let Some(j) = list.iter().position(String::is_empty) {
                return Err(ConfigError::new(format!("models[{j}]"), "must not be empty"));
            }
            Some(list.iter().map(|p| Glob::new(p)).collect())
        }
    };
    if raw.tokens == 0 || raw.tokens > MAX_TOKENS {
        return Err(ConfigError::new("tokens", format!("must be from 1 to {MAX_TOKENS}")));
    }
    let window_s = parse_window(&raw.window).map_err(|p| ConfigError::new("window", p))?;
    let cost = raw.cost.map(Cost::try_from).transpose().map_err(|e| e.within("cost"))?.unwrap_or(Cost::TOTAL);
    Ok(Budget { name: raw.name, key, models, tokens: raw.tokens, window_s, window_label: raw.window, cost })
}

#[cfg(test)]
mod tests {
    use super::*;
    use filter_common::config::load;

    const EXAMPLE: &str = r#"{
      "subject": {"header": "x-user-id", "anonymous": "anonymous"},
      "model": {"fromBody": true, "header": "x-ai-model"},
      "budgets": [
        {"name": "user-minute", "key": ["subject"], "tokens": 10000, "window": "1m"},
        {"name": "user-model-day", "key": ["subject", "model"], "models": ["gpt-4*"], "tokens": 200000, "window": "1d"},
        {"name": "team-month", "key": ["header:x-team"], "tokens": 5000000, "window": "30d",
         "cost": {"input": 1, "output": 4, "cachedInput": 0.25}}
      ],
      "reserve": {"fromMaxTokens": true, "default": 512},
      "injectStreamUsage": true,
      "maxKeys": 100000
    }"#;

    fn compile(text: &str) -> Result<Config, String> {
        load::<RawConfig, Config>(Some(text.as_bytes())).map_err(|e| e.to_string())
    }

    #[test]
    fn the_issue_example_compiles() {
        let c = compile(EXAMPLE).unwrap();
        assert_eq!(c.budgets.len(), 3);
        assert_eq!(c.budgets[0].window_s, 60);
        assert_eq!(c.budgets[1].window_s, 86_400);
        assert_eq!(c.budgets[2].window_s, 30 * 86_400);
        assert_eq!(c.budgets[1].key, vec![KeyPart::Subject, KeyPart::Model]);
        assert_eq!(c.budgets[2].key, vec![KeyPart::Header(0)]);
        assert_eq!(c.key_headers, vec!["x-team".to_string()]);
        assert_eq!(c.budgets[2].cost, Cost { input_milli: 1000, output_milli: 4000, cached_milli: 250 });
        assert_eq!(c.budgets[0].cost, Cost::TOTAL);
        assert!(c.budgets[1].applies_to("gpt-4o") && !c.budgets[1].applies_to("gpt-3.5-turbo"));
        assert!(c.budgets[0].applies_to("anything"));
        assert_eq!(c.max_keys, 100_000);
        assert!(c.inject_stream_usage);
        assert_eq!(c.subject.as_ref().unwrap().anonymous, "anonymous");
        assert_eq!(c.model.header.as_deref(), Some("x-ai-model"));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let b = |budget: &str| format!(r#"{{"subject": {{"header": "x-user-id"}}, "budgets": [{budget}]}}"#);
        let cases: Vec<(String, &str)> = vec![
            (r#"{"budgets": []}"#.into(), "budgets: must list at least one budget"),
            (b(r#"{"name": "a b", "tokens": 1, "window": "1m"}"#), "budgets[0].name: `a b` may only contain"),
            (b(r#"{"name": "a", "tokens": 0, "window": "1m"}"#), "budgets[0].tokens: must be from 1"),
            (b(r#"{"name": "a", "tokens": -5, "window": "1m"}"#), "budgets[0].tokens: invalid value: integer `-5`"),
            (b(r#"{"name": "a", "tokens": 1, "window": "1w"}"#), "budgets[0].window: `1w`: the unit must be s, m, h or d"),
            (b(r#"{"name": "a", "tokens": 1, "window": "31d"}"#), "budgets[0].window: `31d` is longer than 30d"),
            (b(r#"{"name": "a", "tokens": 1, "window": "0s"}"#), "budgets[0].window: must be at least 1s"),
            (b(r#"{"name": "a", "tokens": 1, "window": "m"}"#), "budgets[0].window: `m` is not a number"),
            (b(r#"{"name": "a", "tokens": 1, "window": "1m", "key": ["user"]}"#), "budgets[0].key[0]: `user` is not `subject`"),
            (b(r#"{"name": "a", "tokens": 1, "window": "1m", "key": ["subject", "subject"]}"#), "budgets[0].key[1]: duplicate `subject`"),
            (b(r#"{"name": "a", "tokens": 1, "window": "1m", "key": ["header:bad header"]}"#), "budgets[0].key[0]: `bad header` is not a valid header name"),
            (b(r#"{"name": "a", "tokens": 1, "window": "1m", "models": []}"#), "budgets[0].models: must not be empty"),
            (b(r#"{"name": "a", "tokens": 1, "window": "1m", "models": ["gpt*", ""]}"#), "budgets[0].models[1]: must not be empty"),
            (b(r#"{"name": "a", "tokens": 1, "window": "1m", "cost": {"input": -1}}"#), "budgets[0].cost.input: must be a number from 0 to 1000"),
            (b(r#"{"name": "a", "tokens": 1, "window": "1m", "cost": {"input": 0, "output": 0}}"#), "budgets[0].cost: weights are all 0"),
            (b(r#"{"name": "a", "tokens": 1, "window": "1m", "cost": {"inputs": 1}}"#), "budgets[0].cost.inputs: unknown field `inputs`"),
            (b(r#"{"name": "a", "tokens": 1, "window": "1m"}, {"name": "a", "tokens": 1, "window": "1m"}"#), "budgets: duplicate `a`"),
            (r#"{"budgets": [{"name": "a", "key": ["subject"], "tokens": 1, "window": "1m"}]}"#.into(), "budgets[0].key[0]: `subject` needs the top-level `subject` setting"),
            (r#"{"model": {"fromBody": false}, "budgets": [{"name": "a", "key": ["model"], "tokens": 1, "window": "1m"}]}"#.into(), "budgets[0].key[0]: `model` needs"),
            (r#"{"budgets": [{"name": "a", "tokens": 1, "window": "1m"}], "maxKeys": 0}"#.into(), "maxKeys: must be from 1"),
            (r#"{"budgets": [{"name": "a", "tokens": 1, "window": "1m"}], "maxRequestBytes": 10}"#.into(), "maxRequestBytes: must be from 1024"),
            (r#"{"subject": {"header": ""}, "budgets": [{"name": "a", "tokens": 1, "window": "1m"}]}"#.into(), "subject.header: must not be empty"),
            (r#"{"budgets": [{"name": "a", "tokens": 1, "window": "1m"}], "reserve": {"default": -1}}"#.into(), "reserve.default: invalid value"),
            (r#"{"budgets": [{"name": "a", "tokens": 1, "window": "1m"}], "injectStreamUsage": "yes"}"#.into(), "injectStreamUsage: invalid type"),
            (r#"{"budgets": [{"name": "a", "tokens": 1, "window": "1m"}], "extra": 1}"#.into(), "extra: unknown field `extra`"),
        ];
        for (text, want) in cases {
            let got = compile(&text).err().unwrap_or_else(|| panic!("accepted: {text}"));
            assert!(got.starts_with(want), "config {text}\n want {want}\n got  {got}");
        }
    }

    #[test]
    fn global_mode() {
        let g = |global: &str, budget: &str| {
            format!(r#"{{"subject": {{"header": "x-user-id"}}, "mode": "global", "global": {global}, "budgets": [{budget}]}}"#)
        };
        let ok_global = r#"{"cluster": "ratelimit", "domain": "llm-tokens", "timeoutMs": 40, "failureMode": "allow"}"#;
        let ok_budget = r#"{"name": "a", "key": ["subject"], "tokens": 100, "window": "60s"}"#;
        let c = compile(&g(ok_global, ok_budget)).unwrap();
        assert_eq!(
            c.global,
            Some(Global { cluster: "ratelimit".into(), domain: "llm-tokens".into(), timeout_ms: 40, failure_mode: FailureMode::Allow })
        );
        let c = compile(&g(r#"{"cluster": "rl", "domain": "d", "failureMode": "deny"}"#, ok_budget)).unwrap();
        assert_eq!(c.global.unwrap().timeout_ms, DEFAULT_TIMEOUT_MS);
        assert!(compile(EXAMPLE).unwrap().global.is_none(), "local by default");
        for window in ["1s", "1m", "1h", "1d", "7d", "30d", "24h"] {
            let budget = format!(r#"{{"name": "a", "tokens": 100, "window": "{window}"}}"#);
            assert!(compile(&g(ok_global, &budget)).is_ok(), "{window}");
        }
        let cases: Vec<(String, &str)> = vec![
            (r#"{"mode": "global", "budgets": [{"name": "a", "tokens": 1, "window": "1m"}]}"#.into(), "global: required with \"mode\": \"global\""),
            (format!(r#"{{"global": {ok_global}, "budgets": [{{"name": "a", "tokens": 1, "window": "1m"}}]}}"#), "global: only used with \"mode\": \"global\""),
            (r#"{"mode": "cluster", "budgets": [{"name": "a", "tokens": 1, "window": "1m"}]}"#.into(), "mode: `cluster` is not `local` or `global`"),
            (g(r#"{"cluster": "", "domain": "d", "failureMode": "deny"}"#, ok_budget), "global.cluster: must be an Envoy cluster name"),
            (g(r#"{"cluster": "a12345678", "domain": "d", "failureMode": "deny"}"#, ok_budget), "global.cluster: `a12345678` would be read by Envoy as a serialized GrpcService"),
            (g(r#"{"cluster": "rl", "domain": "d d", "failureMode": "deny"}"#, ok_budget), "global.domain: `d d` must be"),
            (g(r#"{"cluster": "rl", "domain": "d", "timeoutMs": 0, "failureMode": "deny"}"#, ok_budget), "global.timeoutMs: must be from 1 to 60000"),
            (g(r#"{"cluster": "rl", "domain": "d", "failureMode": "open"}"#, ok_budget), "global.failureMode: `open` is not `deny` or `allow`"),
            (g(r#"{"cluster": "rl", "domain": "d"}"#, ok_budget), "global: missing field `failureMode`"),
            (g(r#"{"cluster": "rl", "domain": "d", "failureMode": "deny", "port": 1}"#, ok_budget), "global.port: unknown field `port`"),
            (g(ok_global, r#"{"name": "a", "tokens": 100, "window": "2m"}"#), "budgets[0].window: `2m`: global mode needs a window the rate limit service has"),
            (g(ok_global, r#"{"name": "a", "tokens": 4294967296, "window": "1m"}"#), "budgets[0].tokens: global mode allows at most 4294967295"),
        ];
        for (text, want) in cases {
            let got = compile(&text).err().unwrap_or_else(|| panic!("accepted: {text}"));
            assert!(got.starts_with(want), "config {text}\n want {want}\n got  {got}");
        }
    }

    #[test]
    fn windows() {
        for (text, want) in [("30s", Ok(30)), ("1m", Ok(60)), ("1h", Ok(3600)), ("1d", Ok(86_400)), ("30d", Ok(2_592_000)), ("720h", Ok(2_592_000))] {
            assert_eq!(parse_window(text), want, "{text}");
        }
        for bad in ["", "1", "s", "-1s", "1.5m", "1 m", "99999999999999999999d", "721h"] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn globs() {
        let cases = [
            ("gpt-4*", "gpt-4o", true),
            ("gpt-4*", "gpt-4", true),
            ("gpt-4*", "gpt-3.5", false),
            ("*-mini", "gpt-4o-mini", true),
            ("*-mini", "gpt-4o", false),
            ("claude-*-4*", "claude-sonnet-4-5", true),
            ("claude-*-4*", "claude-3-haiku", false),
            ("exact", "exact", true),
            ("exact", "exact2", false),
            ("*", "", true),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("**", "x", true),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(Glob::new(pattern).matches(text), want, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn cost_rounds_up_to_whole_units() {
        let c = Cost { input_milli: 1000, output_milli: 4000, cached_milli: 250 };
        assert_eq!(c.of(10, 4, 3), 10 + 1 + 12);
        assert_eq!(c.of(0, 1, 0), 1, "a quarter token still costs one unit");
        assert_eq!(c.of(0, 0, 0), 0);
        assert_eq!(Cost::TOTAL.of(5, 2, 3), 10);
        assert_eq!(Cost::TOTAL.of(u64::MAX, u64::MAX, u64::MAX), u64::MAX);
    }
}
