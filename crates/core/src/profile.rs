//! What to capture in a location: the merged `api_sessions_*` settings in plain Rust.
//!
//! The module builds one [`Profile`] per location at configuration time and every capture
//! carries a reference to it, so the exporter thread knows how to turn the raw values into a
//! record without touching nginx's configuration structures.

use core::fmt;
use core::ops::Deref;

use crate::body::{Pointer, PointerError};
use crate::record::{json, ParamKind};

/// Where a key or parameter value comes from: an nginx variable, or a value inside the request
/// or the response body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// An nginx complex value such as `$cookie_sid`; nginx evaluates it at the log phase.
    Variable(String),
    /// A value inside the request body.
    RequestBody(Pointer),
    /// A value inside the JSON response body.
    ResponseBody(Pointer),
}

const REQUEST_BODY: &str = "request_body:";
const RESPONSE_BODY: &str = "response_body:";

#[derive(Debug, PartialEq, Eq)]
pub enum SourceError {
    /// Neither a body pointer nor text containing a variable.
    NotASource(String),
    Pointer(PointerError),
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::NotASource(text) => write!(
                f,
                "invalid source \"{text}\", it must contain a variable or be \
                 \"request_body:POINTER\" or \"response_body:POINTER\""
            ),
            SourceError::Pointer(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for SourceError {}

impl Source {
    /// Parses a `SOURCE` argument. A constant (no `$`) is refused: as a key it would put all
    /// traffic into one session, as a parameter it would carry no information.
    pub fn parse(text: &str) -> Result<Source, SourceError> {
        if let Some(pointer) = text.strip_prefix(REQUEST_BODY) {
            return Pointer::parse(pointer).map(Source::RequestBody).map_err(SourceError::Pointer);
        }
        if let Some(pointer) = text.strip_prefix(RESPONSE_BODY) {
            return Pointer::parse(pointer).map(Source::ResponseBody).map_err(SourceError::Pointer);
        }
        if !text.contains('$') {
            return Err(SourceError::NotASource(text.to_string()));
        }
        Ok(Source::Variable(text.to_string()))
    }

    /// The variable's name when the source is exactly one variable, `$name` or `${name}`
    /// (nginx reads such a source from the variable's slot, without a script); `None` for
    /// anything else, including regex captures (`$1`), which are not variables.
    pub fn single_variable(&self) -> Option<&str> {
        let Source::Variable(text) = self else { return None };
        let name = text.strip_prefix('$')?;
        let name = match name.strip_prefix('{') {
            Some(braced) => braced.strip_suffix('}')?,
            None => name,
        };
        let name_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let first = *name.as_bytes().first()?;
        (!first.is_ascii_digit() && name.bytes().all(name_char)).then_some(name)
    }

    /// The text as configured, used as the default label.
    pub fn text(&self) -> String {
        match self {
            Source::Variable(text) => text.clone(),
            Source::RequestBody(p) => format!("{REQUEST_BODY}{}", p.as_str()),
            Source::ResponseBody(p) => format!("{RESPONSE_BODY}{}", p.as_str()),
        }
    }
}

/// One `api_sessions_key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpec {
    pub source: Source,
    /// `name=`, or the source text.
    pub label: String,
}

/// One `api_sessions_param`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    pub source: Source,
    /// `name=`, or the source text.
    pub name: String,
    /// The source text, exported as `source`.
    pub source_text: String,
    pub kind: ParamKind,
    pub hashed: bool,
}

/// The merged settings of one location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub keys: Vec<KeySpec>,
    pub builtin_keys: bool,
    pub params: Vec<ParamSpec>,
    pub flows: Vec<String>,
    /// Bytes of request and of response body examined.
    pub body_limit: usize,
    /// `api_sessions_attack` is set: bodies are kept for the full content of attacks.
    pub attack: bool,
    /// `api_sessions_mask`: more values hidden in the content of attacks.
    pub mask: Vec<crate::mask::Target>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            keys: Vec::new(),
            builtin_keys: true,
            params: Vec::new(),
            flows: Vec::new(),
            body_limit: 64 * 1024,
            attack: false,
            mask: Vec::new(),
        }
    }
}

impl Settings {
    fn sources(&self) -> impl Iterator<Item = &Source> {
        self.keys.iter().map(|k| &k.source).chain(self.params.iter().map(|p| &p.source))
    }

    /// Some key or parameter reads a body (or the GraphQL arguments of a GET).
    pub fn has_body_sources(&self) -> bool {
        self.sources().any(|s| !matches!(s, Source::Variable(_)))
    }

    /// The request body must be read and kept.
    pub fn needs_request_body(&self) -> bool {
        self.attack || self.sources().any(|s| matches!(s, Source::RequestBody(_)))
    }

    /// The pointers of the `response_body:` sources.
    pub fn response_pointers(&self) -> impl Iterator<Item = &Pointer> {
        self.sources().filter_map(|s| match s {
            Source::ResponseBody(pointer) => Some(pointer),
            _ => None,
        })
    }

    /// The response body must be captured by the body filter.
    pub fn needs_response_body(&self) -> bool {
        self.sources().any(|s| matches!(s, Source::ResponseBody(_)))
    }

    /// Every key is a variable, so the request path knows the final key when one of them
    /// yields a value, and need not look at the built-in chain.
    pub fn keys_are_variables(&self) -> bool {
        self.keys.iter().all(|k| matches!(k.source, Source::Variable(_)))
    }
}

/// A location's settings, with the parts of its records that depend on them alone already
/// encoded: every record of the location repeats them, and escaping them once here saves the
/// exporter thread doing it for each record.
///
/// Built whole by [`Profile::new`] and read-only after, so the encoded parts always match the
/// settings; the settings are read through `Deref`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    settings: Settings,
    /// Per parameter, its array in `params` up to the value: `["name","source","type",`.
    param_heads: Vec<Box<[u8]>>,
    /// The whole `flows` array.
    flows_json: Box<[u8]>,
}

impl Profile {
    pub fn new(settings: Settings) -> Profile {
        let param_heads = settings
            .params
            .iter()
            .map(|spec| {
                let mut head = b"[".to_vec();
                json::string(&mut head, spec.name.as_bytes());
                head.push(b',');
                json::string(&mut head, spec.source_text.as_bytes());
                head.push(b',');
                json::string(&mut head, spec.kind.as_str().as_bytes());
                head.push(b',');
                head.into_boxed_slice()
            })
            .collect();
        let mut flows_json = b"[".to_vec();
        for (i, flow) in settings.flows.iter().enumerate() {
            if i > 0 {
                flows_json.push(b',');
            }
            json::string(&mut flows_json, flow.as_bytes());
        }
        flows_json.push(b']');
        Profile { settings, param_heads, flows_json: flows_json.into_boxed_slice() }
    }

    /// Parameter `index`'s array in a record's `params`, up to its value.
    pub fn param_head(&self, index: usize) -> &[u8] {
        &self.param_heads[index]
    }

    /// A record's `flows` array.
    pub fn flows_json(&self) -> &[u8] {
        &self.flows_json
    }
}

impl Default for Profile {
    fn default() -> Self {
        Profile::new(Settings::default())
    }
}

impl Deref for Profile {
    type Target = Settings;

    fn deref(&self) -> &Settings {
        &self.settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_variables_are_told_from_other_sources() {
        let name = |text: &str| Source::parse(text).unwrap().single_variable().map(str::to_owned);
        assert_eq!(name("$cookie_sid").as_deref(), Some("cookie_sid"));
        assert_eq!(name("${http_x_user}").as_deref(), Some("http_x_user"));
        for other in ["$1", "$", "${}", "${a", "$a$b", "$a:x", "x$a", "$a-b", "${a}b"] {
            assert_eq!(name(other), None, "{other}");
        }
        assert_eq!(Source::parse("request_body:/a").unwrap().single_variable(), None);
    }

    #[test]
    fn parses_the_three_source_forms() {
        assert_eq!(Source::parse("$cookie_sid").unwrap(), Source::Variable("$cookie_sid".into()));
        assert_eq!(
            Source::parse("${arg_a}-$arg_b").unwrap(),
            Source::Variable("${arg_a}-$arg_b".into())
        );
        let body = Source::parse("request_body:/hash/token").unwrap();
        assert!(matches!(&body, Source::RequestBody(p) if p.as_str() == "/hash/token"));
        assert_eq!(body.text(), "request_body:/hash/token");
        let resp = Source::parse("response_body:/a~1b").unwrap();
        assert_eq!(resp.text(), "response_body:/a~1b");
    }

    #[test]
    fn refuses_constants_and_bad_pointers() {
        assert_eq!(
            Source::parse("token").unwrap_err().to_string(),
            "invalid source \"token\", it must contain a variable or be \
             \"request_body:POINTER\" or \"response_body:POINTER\""
        );
        assert!(matches!(Source::parse("request_body:token"), Err(SourceError::Pointer(_))));
        assert!(matches!(Source::parse("response_body:/a~2"), Err(SourceError::Pointer(_))));
    }

    #[test]
    fn body_needs_follow_the_sources() {
        let mut s = Settings::default();
        assert!(!s.needs_request_body() && !s.needs_response_body() && s.keys_are_variables());
        s.keys.push(KeySpec {
            source: Source::parse("response_body:/token").unwrap(),
            label: "t".into(),
        });
        assert!(s.needs_response_body() && !s.needs_request_body() && !s.keys_are_variables());
        s.attack = true;
        assert!(s.needs_request_body());
    }

    #[test]
    fn record_parts_are_encoded_with_the_profile() {
        let profile = Profile::new(Settings {
            params: vec![ParamSpec {
                source: Source::parse("$arg_q").unwrap(),
                name: "q \"1\"".into(),
                source_text: "$arg_q".into(),
                kind: ParamKind::User,
                hashed: false,
            }],
            flows: vec!["auth".into(), "a\\b".into()],
            ..Settings::default()
        });
        assert_eq!(profile.param_head(0), br#"["q \"1\"","$arg_q","user","#);
        assert_eq!(profile.flows_json(), br#"["auth","a\\b"]"#);
        assert_eq!(Profile::default().flows_json(), b"[]");
    }
}
