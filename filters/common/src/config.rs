//! Config loading: JSON text to a typed, validated config, or one error naming the field.
//!
//! Each filter deserializes a raw serde type (`deny_unknown_fields`, camelCase) and then
//! compiles it with `TryFrom` into the form requests use. Both steps report errors as a
//! [`ConfigError`] whose `field` is a path such as `experiments[1].variants`.

use serde::de::DeserializeOwned;
use std::fmt;

/// A config problem, with the path of the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, problem: impl fmt::Display) -> Self {
        ConfigError { field: field.into(), problem: problem.to_string() }
    }

    /// Prefixes the field path with its parent, e.g. `variants` inside `experiments[1]`.
    pub fn within(self, parent: impl fmt::Display) -> Self {
        let field = if self.field.is_empty() {
            parent.to_string()
        } else if self.field.starts_with('[') {
            format!("{parent}{}", self.field)
        } else {
            format!("{parent}.{}", self.field)
        };
        ConfigError { field, problem: self.problem }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.field, self.problem)
        }
    }
}

/// Parses plugin configuration JSON into `Raw`, then compiles it into `T`.
///
/// An absent or blank configuration is an error: every filter in the suite needs one.
pub fn load<Raw, T>(bytes: Option<&[u8]>) -> Result<T, ConfigError>
where
    Raw: DeserializeOwned,
    T: TryFrom<Raw, Error = ConfigError>,
{
    let bytes = bytes.unwrap_or_default();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError::new("configuration", "is empty; a JSON object is required"));
    }
    let raw: Raw = parse_json(bytes)?;
    T::try_from(raw)
}

/// Deserializes JSON, reporting the path of the offending field.
///
/// serde_json reports where it stopped as a line and column; [`path_at`] turns that position
/// into a path such as `experiments[1].variants[0].weight`. (serde_path_to_error does the
/// same by wrapping every visitor, which costs about 30 KB of wasm per filter.)
pub fn parse_json<Raw: DeserializeOwned>(bytes: &[u8]) -> Result<Raw, ConfigError> {
    serde_json::from_slice(bytes).map_err(|err| {
        let problem = strip_position(&err.to_string());
        let offset = offset_of(bytes, err.line(), err.column());
        // "unknown field `x`" stops right after the key, so the path ends in it; "missing
        // field" stops after the object that lacks it, so the path names that object.
        ConfigError::new(path_at(bytes, offset), problem)
    })
}

/// The byte offset of a 1-based line and column (serde_json counts bytes).
fn offset_of(bytes: &[u8], line: usize, column: usize) -> usize {
    let mut current = 1;
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if current == line {
            break;
        }
        if b == b'\n' {
            current += 1;
            start = i + 1;
        }
    }
    (start + column).min(bytes.len())
}

enum Frame {
    /// Inside an object; the last key seen (if any).
    Object(Option<String>),
    /// Inside an array; the index of the current element.
    Array(usize),
}

/// The JSON path (`a.b[2].c`) of the innermost value open at byte `offset`.
pub fn path_at(bytes: &[u8], offset: usize) -> String {
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    let end = offset.min(bytes.len());
    while i < end {
        match bytes[i] {
            b'{' => stack.push(Frame::Object(None)),
            b'[' => stack.push(Frame::Array(0)),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => {
                if let Some(Frame::Array(n)) = stack.last_mut() {
                    *n += 1;
                } else if let Some(Frame::Object(key)) = stack.last_mut() {
                    *key = None;
                }
            }
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                // A string directly followed by ':' is a key.
                let mut j = i + 1;
                while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                    j += 1;
                }
                if bytes.get(j) == Some(&b':') {
                    if let Some(Frame::Object(key)) = stack.last_mut() {
                        *key = Some(String::from_utf8_lossy(&bytes[start..i.min(bytes.len())]).into_owned());
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    let mut path = String::new();
    for frame in &stack {
        match frame {
            Frame::Object(Some(key)) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Object(None) => {}
            Frame::Array(n) => path.push_str(&format!("[{n}]")),
        }
    }
    path
}

/// serde_json appends "at line 1 column 42"; the field path already says where.
fn strip_position(message: &str) -> String {
    let marker = b" at line ";
    let bytes = message.as_bytes();
    let at = (0..bytes.len().saturating_sub(marker.len() - 1)).rev().find(|&i| bytes[i..].starts_with(marker));
    match at {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

/// Validation helpers shared by the filters' `TryFrom` steps.
pub mod check {
    use super::ConfigError;

    /// A name used in metric names and headers: 1-64 of `[A-Za-z0-9_-]`.
    pub fn identifier(field: &str, value: &str) -> Result<(), ConfigError> {
        if value.is_empty() || value.len() > 64 {
            return Err(ConfigError::new(field, "must be 1 to 64 characters"));
        }
        if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(ConfigError::new(field, format!("`{value}` may only contain A-Z a-z 0-9 _ -")));
        }
        Ok(())
    }

    /// An HTTP header name, returned lower-cased (Envoy keeps header names in lower case).
    pub fn header_name(field: &str, value: &str) -> Result<String, ConfigError> {
        if value.is_empty() {
            return Err(ConfigError::new(field, "must not be empty"));
        }
        let valid = value.bytes().all(|b| {
            b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
        });
        if !valid {
            return Err(ConfigError::new(field, format!("`{value}` is not a valid header name")));
        }
        Ok(value.to_ascii_lowercase())
    }

    /// Fails on the first value seen twice.
    /// Lists in configs are short; a linear scan keeps hashing code out of the module.
    pub fn unique<'a>(field: &str, values: impl IntoIterator<Item = &'a str>) -> Result<(), ConfigError> {
        let mut seen: Vec<&str> = Vec::new();
        for value in values {
            if seen.contains(&value) {
                return Err(ConfigError::new(field, format!("duplicate `{value}`")));
            }
            seen.push(value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Raw {
        items: Vec<Item>,
    }
    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Item {
        max_size: u32,
    }
    #[derive(Debug)]
    struct Compiled(u32);
    impl TryFrom<Raw> for Compiled {
        type Error = ConfigError;
        fn try_from(raw: Raw) -> Result<Self, ConfigError> {
            let total = raw.items.iter().map(|i| i.max_size).sum();
            if total == 0 {
                return Err(ConfigError::new("items", "sizes sum to 0"));
            }
            Ok(Compiled(total))
        }
    }

    fn load_str(text: &str) -> Result<Compiled, String> {
        load::<Raw, Compiled>(Some(text.as_bytes())).map_err(|e| e.to_string())
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("", "configuration: is empty; a JSON object is required"),
            ("  \n", "configuration: is empty; a JSON object is required"),
            ("{\"items\": [{\"maxSize\": 1}, {\"maxSize\": -1}]}", "items[1].maxSize: invalid value: integer `-1`, expected u32"),
            ("{\"items\": [{\"maxSize\": 1, \"extra\": 2}]}", "items[0].extra: unknown field `extra`, expected `maxSize`"),
            ("{\"items\": [{\"maxSize\": 0}]}", "items: sizes sum to 0"),
            ("{\"items\": []} x", "trailing characters"),
            ("{\"items\": [", "items[0]: EOF while parsing a list"),
            ("{\"items\": [{\"maxSize\": 1}, {}]}", "items[1]: missing field `maxSize`"),
            ("{\n  \"items\": [\n    {\"maxSize\": 1},\n    {\"max\\\"Size\": 1}]}", "items[1].max\\\"Size: unknown field `max\"Size`, expected `maxSize`"),
        ];
        for (input, want) in cases {
            assert_eq!(load_str(input).unwrap_err(), want, "input {input:?}");
        }
        assert_eq!(load_str("{\"items\": [{\"maxSize\": 3}]}").unwrap().0, 3);
        assert!(load::<Raw, Compiled>(None).is_err());
    }

    #[test]
    fn within_builds_paths() {
        let e = ConfigError::new("weight", "negative").within("variants[2]").within("experiments[0]");
        assert_eq!(e.to_string(), "experiments[0].variants[2].weight: negative");
        let e = ConfigError::new("[3]", "bad").within("items");
        assert_eq!(e.field, "items[3]");
    }

    #[test]
    fn checks() {
        assert!(check::identifier("name", "beta-1_x").is_ok());
        assert!(check::identifier("name", "").is_err());
        assert!(check::identifier("name", "a b").is_err());
        assert_eq!(check::header_name("h", "X-Variant").unwrap(), "x-variant");
        assert!(check::header_name("h", "").is_err());
        assert!(check::header_name("h", "bad header").is_err());
        assert!(check::unique("names", ["a", "b", "a"]).unwrap_err().problem.contains("`a`"));
    }
}
