//! ab-variant configuration: the JSON users write, and the compiled form requests use.

use filter_common::config::check;
use filter_common::http::CookieAttributes;
use filter_common::ConfigError;
use serde::Deserialize;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawConfig {
    pub experiments: Vec<RawExperiment>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawExperiment {
    pub name: String,
    #[serde(default)]
    pub subject: Vec<RawSubject>,
    pub variants: Vec<RawVariant>,
    pub header: String,
    #[serde(default)]
    pub salt: String,
    #[serde(rename = "override")]
    pub override_: Option<RawOverride>,
    pub sticky_cookie: Option<RawStickyCookie>,
    #[serde(rename = "match")]
    pub match_: Option<RawMatch>,
    #[serde(default)]
    pub response_header: bool,
}

/// Where a subject id comes from: exactly one of the fields.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSubject {
    pub header: Option<String>,
    pub cookie: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawVariant {
    pub name: String,
    pub weight: i64,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawOverride {
    pub header: Option<String>,
    pub query: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawStickyCookie {
    pub name: String,
    pub max_age_s: Option<u64>,
    #[serde(default = "default_cookie_path")]
    pub path: String,
    #[serde(default)]
    pub secure: bool,
    #[serde(default)]
    pub http_only: bool,
    pub same_site: Option<String>,
}

fn default_cookie_path() -> String {
    "/".to_string()
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawMatch {
    pub path_prefix: Option<String>,
}

/// The compiled configuration, shared by every request through `Rc`.
#[derive(Debug)]
pub struct Config {
    pub experiments: Vec<Experiment>,
}

#[derive(Debug)]
pub struct Experiment {
    pub name: String,
    pub header: String,
    pub salt: String,
    pub subject: Vec<SubjectSource>,
    pub variants: Vec<String>,
    /// `bounds[i]` is the sum of the weights of variants `0..=i`; the last one is the total.
    pub bounds: Vec<u64>,
    pub override_header: Option<String>,
    pub override_query: Option<String>,
    pub sticky: Option<StickyCookie>,
    pub path_prefix: Option<String>,
    pub response_header: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectSource {
    Header(String),
    Cookie(String),
}

#[derive(Debug)]
pub struct StickyCookie {
    pub name: String,
    /// `; Max-Age=...; Path=/...`, rendered once.
    pub attributes: String,
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        if raw.experiments.is_empty() {
            return Err(ConfigError::new("experiments", "must list at least one experiment"));
        }
        let experiments = raw
            .experiments
            .into_iter()
            .enumerate()
            .map(|(i, e)| Experiment::try_from(e).map_err(|err| err.within(format!("experiments[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        check::unique("experiments", experiments.iter().map(|e| e.name.as_str()))?;
        check::unique("experiments", experiments.iter().map(|e| e.header.as_str()))
            .map_err(|e| ConfigError::new("experiments", format!("two experiments set the same header: {}", e.problem)))?;
        let cookies = experiments.iter().filter_map(|e| e.sticky.as_ref()).map(|s| s.name.as_str());
        check::unique("experiments", cookies)
            .map_err(|e| ConfigError::new("experiments", format!("two experiments use the same sticky cookie: {}", e.problem)))?;
        Ok(Config { experiments })
    }
}

impl TryFrom<RawExperiment> for Experiment {
    type Error = ConfigError;

    fn try_from(raw: RawExperiment) -> Result<Self, ConfigError> {
        check::identifier("name", &raw.name)?;
        let header = check::header_name("header", &raw.header)?;
        if header == "host" {
            return Err(ConfigError::new("header", "must not be `host`"));
        }

        if raw.variants.is_empty() {
            return Err(ConfigError::new("variants", "must list at least one variant"));
        }
        let mut bounds = Vec::with_capacity(raw.variants.len());
        let mut total: u64 = 0;
        for (i, v) in raw.variants.iter().enumerate() {
            check::identifier(&format!("variants[{i}].name"), &v.name)?;
            let weight = u64::try_from(v.weight)
                .map_err(|_| ConfigError::new(format!("variants[{i}].weight"), "must not be negative"))?;
            if weight > 1_000_000 {
                return Err(ConfigError::new(format!("variants[{i}].weight"), "must be at most 1000000"));
            }
            total += weight;
            bounds.push(total);
        }
        if total == 0 {
            return Err(ConfigError::new("variants", "weights sum to 0"));
        }
        check::unique("variants", raw.variants.iter().map(|v| v.name.as_str()))?;

        let subject = raw
            .subject
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let field = format!("subject[{i}]");
                match (&s.header, &s.cookie) {
                    (Some(h), None) => Ok(SubjectSource::Header(check::header_name(&format!("{field}.header"), h)?)),
                    (None, Some(c)) if !c.is_empty() => Ok(SubjectSource::Cookie(c.clone())),
                    (None, Some(_)) => Err(ConfigError::new(format!("{field}.cookie"), "must not be empty")),
                    _ => Err(ConfigError::new(field, "needs exactly one of `header` or `cookie`")),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;

        let (override_header, override_query) = match raw.override_ {
            None => (None, None),
            Some(o) => {
                if o.header.is_none() && o.query.is_none() {
                    return Err(ConfigError::new("override", "needs `header`, `query` or both"));
                }
                let by_header = o.header.map(|h| check::header_name("override.header", &h)).transpose()?;
                if by_header.as_ref() == Some(&header) {
                    return Err(ConfigError::new("override.header", "must differ from `header`"));
                }
                if o.query.as_deref() == Some("") {
                    return Err(ConfigError::new("override.query", "must not be empty"));
                }
                (by_header, o.query)
            }
        };

        let sticky = raw.sticky_cookie.map(StickyCookie::try_from).transpose().map_err(|e| e.within("stickyCookie"))?;

        let path_prefix = match raw.match_ {
            None => None,
            Some(m) => match m.path_prefix {
                Some(p) if p.starts_with('/') => Some(p),
                Some(_) => return Err(ConfigError::new("match.pathPrefix", "must start with `/`")),
                None => None,
            },
        };

        Ok(Experiment {
            name: raw.name,
            header,
            salt: raw.salt,
            subject,
            variants: raw.variants.into_iter().map(|v| v.name).collect(),
            bounds,
            override_header,
            override_query,
            sticky,
            path_prefix,
            response_header: raw.response_header,
        })
    }
}

impl TryFrom<RawStickyCookie> for StickyCookie {
    type Error = ConfigError;

    fn try_from(raw: RawStickyCookie) -> Result<Self, ConfigError> {
        let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if raw.name.is_empty() || !raw.name.bytes().all(token_char) {
            return Err(ConfigError::new("name", "must be a non-empty cookie name token"));
        }
        if !raw.path.starts_with('/') || raw.path.bytes().any(|b| b == b';' || b.is_ascii_control()) {
            return Err(ConfigError::new("path", "must start with `/` and contain no `;`"));
        }
        let same_site = match raw.same_site.as_deref() {
            None => None,
            Some(s @ ("Strict" | "Lax" | "None")) => Some(s.to_string()),
            Some(other) => return Err(ConfigError::new("sameSite", format!("`{other}` is not Strict, Lax or None"))),
        };
        if same_site.as_deref() == Some("None") && !raw.secure {
            return Err(ConfigError::new("sameSite", "None requires `secure: true` (browsers drop it otherwise)"));
        }
        let attributes = CookieAttributes {
            max_age_s: raw.max_age_s,
            path: raw.path,
            secure: raw.secure,
            http_only: raw.http_only,
            same_site,
        }
        .render();
        Ok(StickyCookie { name: raw.name, attributes })
    }
}
