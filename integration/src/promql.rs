//! Just enough PromQL and Prometheus text to check that dashboards, alerts and autoscalers
//! only name metrics and labels Envoy really exports: the metric selectors and grouping labels
//! of an expression, and the series of a `/stats/prometheus` scrape.

use std::collections::{BTreeMap, BTreeSet};

/// `label op "value"` inside a selector's braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub label: String,
    pub op: String,
    pub value: String,
}

/// A metric named in an expression, with its label matchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub metric: String,
    pub matchers: Vec<Matcher>,
}

/// What an expression reads: its selectors, and the labels named in `by`, `without`, `on`,
/// `ignoring`, `group_left` and `group_right` clauses (and `label_values` / `label_replace`
/// source labels are not followed: they are strings).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Query {
    pub selectors: Vec<Selector>,
    pub grouping: Vec<String>,
}

const GROUPING: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
const OPERATORS: [&str; 7] = ["and", "or", "unless", "bool", "offset", "inf", "nan"];
/// Aggregations, which may take their `by (...)` before the parenthesis.
const AGGREGATIONS: [&str; 14] =
    ["sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group", "limitk", "limit_ratio"];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

struct Lexer<'a> {
    chars: Vec<char>,
    at: usize,
    text: &'a str,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn ident(&mut self) -> String {
        let start = self.at;
        while self.peek().is_some_and(is_ident) {
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect()
    }

    /// A quoted string (", ' or `), unescaped; the lexer stands on the opening quote.
    fn string(&mut self) -> Result<String, String> {
        let quote = self.peek().ok_or("expected a string")?;
        self.at += 1;
        let mut out = String::new();
        while let Some(c) = self.peek() {
            self.at += 1;
            if c == quote {
                return Ok(out);
            }
            if c == '\\' && quote != '`' {
                if let Some(next) = self.peek() {
                    self.at += 1;
                    out.push(next);
                }
                continue;
            }
            out.push(c);
        }
        Err(format!("unterminated string in {}", self.text))
    }

    fn matchers(&mut self) -> Result<Vec<Matcher>, String> {
        self.at += 1; // {
        let mut out = Vec::new();
        loop {
            self.skip_space();
            match self.peek() {
                Some('}') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(',') => self.at += 1,
                Some(c) if is_ident_start(c) => {
                    let label = self.ident();
                    self.skip_space();
                    let op: String = ["=~", "!~", "!=", "="]
                        .into_iter()
                        .find(|op| self.chars[self.at..].iter().take(op.len()).copied().eq(op.chars()))
                        .ok_or_else(|| format!("no matcher operator after `{label}` in {}", self.text))?
                        .to_string();
                    self.at += op.len();
                    self.skip_space();
                    let value = self.string()?;
                    out.push(Matcher { label, op, value });
                }
                other => return Err(format!("unexpected {other:?} in a selector of {}", self.text)),
            }
        }
    }

    fn label_list(&mut self) -> Result<Vec<String>, String> {
        self.at += 1; // (
        let mut out = Vec::new();
        loop {
            self.skip_space();
            match self.peek() {
                Some(')') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(',') => self.at += 1,
                Some(c) if is_ident_start(c) => out.push(self.ident()),
                other => return Err(format!("unexpected {other:?} in a label list of {}", self.text)),
            }
        }
    }
}

/// The selectors and grouping labels of a PromQL expression.
pub fn parse(expr: &str) -> Result<Query, String> {
    let mut lx = Lexer { chars: expr.chars().collect(), at: 0, text: expr };
    let mut q = Query::default();
    while let Some(c) = lx.peek() {
        match c {
            c if c.is_whitespace() => lx.at += 1,
            '"' | '\'' | '`' => {
                lx.string()?;
            }
            '[' => {
                while lx.peek().is_some_and(|c| c != ']') {
                    lx.at += 1;
                }
                lx.at += 1;
            }
            '{' => {
                // A selector without a metric name.
                lx.matchers()?;
            }
            c if c.is_ascii_digit() || c == '.' => {
                // Numbers and durations (`5m` after `offset`).
                while lx.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '.') {
                    lx.at += 1;
                }
            }
            c if is_ident_start(c) => {
                let word = lx.ident();
                lx.skip_space();
                let next = lx.peek();
                if GROUPING.contains(&word.as_str()) {
                    if next == Some('(') {
                        q.grouping.extend(lx.label_list()?);
                    }
                } else if next == Some('(') || OPERATORS.contains(&word.as_str()) || AGGREGATIONS.contains(&word.as_str()) {
                    // A function or aggregation, or an operator keyword.
                } else {
                    let matchers = if next == Some('{') { lx.matchers()? } else { Vec::new() };
                    q.selectors.push(Selector { metric: word, matchers });
                }
            }
            _ => lx.at += 1,
        }
    }
    Ok(q)
}

/// The series of a Prometheus text scrape: metric name to the label sets it has.
#[derive(Debug, Default)]
pub struct Scrape {
    pub series: BTreeMap<String, Vec<BTreeMap<String, String>>>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut series: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = line[..name_end].to_string();
            let mut labels = BTreeMap::new();
            if line[name_end..].starts_with('{') {
                let mut lx = Lexer { chars: line[name_end..].chars().collect(), at: 0, text: line };
                if let Ok(ms) = lx.matchers() {
                    labels = ms.into_iter().map(|m| (m.label, m.value)).collect();
                }
            }
            series.entry(name).or_default().push(labels);
        }
        Scrape { series }
    }

    pub fn has_metric(&self, name: &str) -> bool {
        self.series.contains_key(name)
    }

    /// The label names any series of `name` carries.
    pub fn labels_of(&self, name: &str) -> BTreeSet<String> {
        self.series.get(name).into_iter().flatten().flat_map(|l| l.keys().cloned()).collect()
    }

    /// Whether some series of `name` has `label` equal to `value` (`""`: without the label).
    pub fn has_value(&self, name: &str, label: &str, value: &str) -> bool {
        self.series.get(name).into_iter().flatten().any(|l| l.get(label).map(String::as_str).unwrap_or("") == value)
    }

    /// What is wrong with `q` against this scrape: metrics that do not exist, `=` matchers no
    /// series satisfies, other matchers on labels the metric never has, and grouping labels
    /// none of the expression's metrics has.
    pub fn problems(&self, q: &Query) -> Vec<String> {
        let mut out = Vec::new();
        let mut all_labels = BTreeSet::new();
        for s in &q.selectors {
            if !self.has_metric(&s.metric) {
                out.push(format!("metric {} does not exist", s.metric));
                continue;
            }
            let labels = self.labels_of(&s.metric);
            for m in &s.matchers {
                // A dashboard variable (`$budget`) stands for values of the label.
                if m.op == "=" && !m.value.contains('$') {
                    if !self.has_value(&s.metric, &m.label, &m.value) {
                        out.push(format!("no series {}{{{}=\"{}\"}}", s.metric, m.label, m.value));
                    }
                } else if !labels.contains(&m.label) {
                    out.push(format!("{} has no label {} (has {labels:?})", s.metric, m.label));
                }
            }
            all_labels.extend(labels);
        }
        for g in &q.grouping {
            if g != "le" && !all_labels.contains(g) {
                out.push(format!("no metric of the expression has the label {g} (they have {all_labels:?})"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(metric: &str, matchers: &[(&str, &str, &str)]) -> Selector {
        Selector {
            metric: metric.into(),
            matchers: matchers.iter().map(|(l, o, v)| Matcher { label: (*l).into(), op: (*o).into(), value: (*v).into() }).collect(),
        }
    }

    #[test]
    fn selectors_and_grouping() {
        let q = parse(r#"sum by (variant) (rate(ab_variant_responses_5xx{experiment=~"$experiment"}[$__rate_interval])) / ignoring(x) sum(rate(ab_variant_assigned[5m])) by (variant)"#).unwrap();
        assert_eq!(q.selectors, vec![sel("ab_variant_responses_5xx", &[("experiment", "=~", "$experiment")]), sel("ab_variant_assigned", &[])]);
        assert_eq!(q.grouping, vec!["variant", "x", "variant"]);
        let q = parse(r#"sum without (a) (x) + count by (b) (y{c="$var"})"#).unwrap();
        assert_eq!(q.selectors, vec![sel("x", &[]), sel("y", &[("c", "=", "$var")])]);
        assert_eq!(q.grouping, vec!["a", "b"]);
        let q = parse(r#"histogram_quantile(0.99, sum by (le) (rate(envoy_http_downstream_rq_time_bucket{a="b, c}"}[5m]))) > 2.5e3 and on() vector(1) offset 5m"#).unwrap();
        assert_eq!(q.selectors, vec![sel("envoy_http_downstream_rq_time_bucket", &[("a", "=", "b, c}")])]);
        assert_eq!(q.grouping, vec!["le"]);
        assert!(parse(r#"x{a="unterminated}"#).is_err());
    }

    #[test]
    fn scrape_checks() {
        let s = Scrape::parse("# TYPE a counter\na{x=\"1\",y=\"q\\\"z\"} 3\na 1\nb 0\n");
        assert!(s.has_value("a", "x", "1") && s.has_value("a", "x", "") && s.has_value("a", "y", "q\"z"));
        assert!(s.problems(&parse(r#"sum by (y) (a{x="1"}) + b"#).unwrap()).is_empty());
        let p = s.problems(&parse(r#"sum by (z) (a{x="2", w=~".*"}) + c"#).unwrap());
        assert_eq!(p.len(), 4, "{p:?}");
    }
}
