//! What the content of a malicious request hides, and how.
//!
//! A record flagged by `api_sessions_attack` carries the request line, headers and body as
//! sent. Credentials in them would make the record, and whatever stores it, a store of live
//! secrets, of attackers and of users hit by a false positive alike. So before the content is
//! written, the values of credentials are replaced in place by a keyed hash,
//! `hmac-sha256:<hex>`, and everything else stays byte for byte:
//!
//! - the values of grouping keys (custom keys and the built-in chain's cookies and headers)
//!   and of `hash` parameters, where their source puts them: a query argument (`$arg_`), a
//!   cookie (`$cookie_`), a header (`$http_`) or a body field (`request_body:`);
//! - the values of the `Authorization`, `Proxy-Authorization`, `Cookie` and `Set-Cookie`
//!   headers, always: each cookie's value (names kept), an authorization's credentials (its
//!   scheme kept);
//! - what `api_sessions_mask` names: more headers, query arguments and body fields;
//! - and the value of a key or `hash` parameter, when it is [`SWEPT_LEN`] bytes or longer,
//!   wherever else it appears in the content (a token also in a `Referer`, say).
//!
//! A key's value is replaced by its key hash (the `key_hash` a record keyed by it has), any
//! other value by the HMAC a `hash` parameter of it has, so an analyst can match either.
//! A value that the body limit cuts off is hidden up to the cut.

use std::borrow::Cow;

use core::fmt;
use core::ops::Range;

use memchr::{memchr, memmem};

use crate::body::{form, json, BodyFormat, Extent, Pointer, PointerError};
use crate::capture::{Capture, CapturedAttack};
use crate::hash::{hex_into, Secret, PARAM_PREFIX};
use crate::keys::{Builtin, BUILTIN_COOKIES, BUILTIN_HEADERS, CUSTOM_SPACE};
use crate::profile::Source;

/// Headers whose values are masked whatever the configuration.
pub const DEFAULT_HEADERS: [&str; 4] =
    ["Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie"];

/// Shortest key or `hash` parameter value that is also replaced where no rule points: shorter
/// values are too likely to be ordinary text (`admin`, `1`), whose replacement would garble the
/// content for little secrecy.
pub const SWEPT_LEN: usize = 6;

/// One argument of `api_sessions_mask`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `header:NAME`: a request header, by name in any case, `-` and `_` alike (as `$http_`).
    Header(String),
    /// `arg:NAME`: a query argument, by name in any case (as `$arg_`).
    Arg(String),
    /// `body:POINTER`: a JSON body value, a form field, or GraphQL variables.
    Body(Pointer),
}

/// Why an `api_sessions_mask` argument was refused, in the words of an `[emerg]` line.
#[derive(Debug, PartialEq, Eq)]
pub enum TargetError {
    Invalid(String),
    Pointer(PointerError),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::Invalid(text) => write!(f, "invalid parameter \"{text}\""),
            TargetError::Pointer(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for TargetError {}

impl Target {
    pub fn parse(text: &str) -> Result<Target, TargetError> {
        let invalid = || TargetError::Invalid(text.to_owned());
        if let Some(name) = text.strip_prefix("header:") {
            let token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
            if name.is_empty() || !name.bytes().all(token) {
                return Err(invalid());
            }
            return Ok(Target::Header(name.to_owned()));
        }
        if let Some(name) = text.strip_prefix("arg:") {
            let plain = |c: u8| c.is_ascii_graphic() && !b"&=#?".contains(&c);
            if name.is_empty() || !name.bytes().all(plain) {
                return Err(invalid());
            }
            return Ok(Target::Arg(name.to_owned()));
        }
        if let Some(pointer) = text.strip_prefix("body:") {
            return Pointer::parse(pointer).map(Target::Body).map_err(TargetError::Pointer);
        }
        Err(invalid())
    }
}

/// Which keyed hash stands for a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hashing<'a> {
    /// A key's value: its key hash in this value space.
    Key(&'a str),
    /// Any other value: the HMAC of a `hash` parameter.
    Param,
}

impl Hashing<'_> {
    /// `hmac-sha256:<hex>` for `value`.
    fn token(self, secret: &Secret, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(PARAM_PREFIX.len() + 64);
        out.extend_from_slice(PARAM_PREFIX.as_bytes());
        match self {
            Hashing::Key(space) => hex_into(&secret.key_hash(space.as_bytes(), value).0, &mut out),
            Hashing::Param => hex_into(&secret.param_digest(value), &mut out),
        }
        out
    }
}

/// How a header's value is masked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HeaderKind {
    Whole,
    /// `Scheme credentials`: the credentials, hashed as the whole value.
    Authorization,
    /// Each cookie's value.
    Cookie,
    /// The value of the cookie being set; its attributes are kept.
    SetCookie,
}

/// Where credentials are in the content of one request, and which hash stands for each.
/// Earlier rules for the same place win: keys come before `hash` parameters and those before
/// plain masks, so a key's value is always replaced by its key hash.
#[derive(Debug, Default)]
pub struct Rules<'a> {
    /// Header names in `$http_` form: lowercase, `_` for `-`.
    headers: Vec<(String, HeaderKind, Hashing<'a>)>,
    cookies: Vec<(&'a str, Hashing<'a>)>,
    args: Vec<(&'a str, Hashing<'a>)>,
    body: Vec<(&'a Pointer, Hashing<'a>)>,
    /// Values to replace wherever they appear.
    values: Vec<(&'a [u8], Hashing<'a>)>,
}

impl<'a> Rules<'a> {
    /// The built-in chain's cookies and headers (`Authorization` among them), hashed in their
    /// value spaces. After the custom keys, which a request tries first.
    pub fn builtin(&mut self) {
        for (i, name) in BUILTIN_COOKIES.iter().enumerate() {
            self.cookies.push((name, Hashing::Key(Builtin::Cookie(i as u8).label())));
        }
        for (i, name) in BUILTIN_HEADERS.iter().enumerate() {
            let label = Builtin::Header(i as u8).label();
            self.header(name, HeaderKind::Whole, Hashing::Key(label));
        }
        let label = Builtin::Authorization.label();
        self.header("Authorization", HeaderKind::Authorization, Hashing::Key(label));
    }

    fn header(&mut self, name: &str, kind: HeaderKind, hashing: Hashing<'a>) {
        self.headers.push((variable_form(name.as_bytes()), kind, hashing));
    }

    /// A key's or parameter's source, with the value it had in this request.
    pub fn source(&mut self, source: &'a Source, value: Option<&'a [u8]>, hashing: Hashing<'a>) {
        match source {
            Source::Variable(_) => {
                let name = source.single_variable().unwrap_or_default();
                if let Some(arg) = name.strip_prefix("arg_") {
                    self.args.push((arg, hashing));
                } else if let Some(cookie) = name.strip_prefix("cookie_") {
                    self.cookies.push((cookie, hashing));
                } else if let Some(header) = name.strip_prefix("http_") {
                    self.header(header, kind_of(header.as_bytes()), hashing);
                }
            }
            Source::RequestBody(pointer) => self.body.push((pointer, hashing)),
            Source::ResponseBody(_) => {}
        }
        if let Some(value) = value.filter(|value| value.len() >= SWEPT_LEN) {
            self.values.push((value, hashing));
        }
    }

    /// A value known to be a credential, wherever it appears.
    pub fn value(&mut self, value: &'a [u8], hashing: Hashing<'a>) {
        if value.len() >= SWEPT_LEN {
            self.values.push((value, hashing));
        }
    }

    /// The `api_sessions_mask` targets and the default headers, after every key and `hash`
    /// parameter.
    pub fn targets(&mut self, targets: &'a [Target]) {
        for name in DEFAULT_HEADERS {
            self.header(name, kind_of(name.as_bytes()), Hashing::Param);
        }
        for target in targets {
            match target {
                Target::Header(name) => self.header(name, kind_of(name.as_bytes()), Hashing::Param),
                Target::Arg(name) => self.args.push((name, Hashing::Param)),
                Target::Body(pointer) => self.body.push((pointer, Hashing::Param)),
            }
        }
    }
}

/// `$http_` form of a header name.
fn variable_form(name: &[u8]) -> String {
    name.iter().map(|&c| if c == b'-' { '_' } else { char::from(c.to_ascii_lowercase()) }).collect()
}

fn kind_of(name: &[u8]) -> HeaderKind {
    match variable_form(name).as_str() {
        "authorization" | "proxy_authorization" => HeaderKind::Authorization,
        "cookie" => HeaderKind::Cookie,
        "set_cookie" => HeaderKind::SetCookie,
        _ => HeaderKind::Whole,
    }
}

/// The request body of an attack, as captured.
#[derive(Clone, Copy, Debug)]
pub struct BodyContent<'a> {
    pub bytes: &'a [u8],
    pub format: BodyFormat,
    pub extent: Extent,
}

/// The content of an attack with its credentials replaced.
#[derive(Debug)]
pub struct Masked<'a> {
    pub line: Cow<'a, [u8]>,
    pub headers: Vec<(&'a [u8], Cow<'a, [u8]>)>,
    pub body: Cow<'a, [u8]>,
}

/// Replaces the credentials in the content of a request.
pub fn mask<'a>(
    rules: &Rules<'_>,
    secret: &Secret,
    line: &'a [u8],
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    body: BodyContent<'a>,
) -> Masked<'a> {
    let mut edits = Vec::new();

    // GraphQL over GET, or the arguments beside an `application/graphql` body: a body pointer
    // into the request document masks the whole argument it lives in.
    let graphql_args = body.format == BodyFormat::GraphQl || body.bytes.is_empty();
    let mut args: Vec<(&str, Hashing<'_>)> = rules.args.clone();
    if graphql_args {
        for &(pointer, hashing) in &rules.body {
            if let Some(name) = pointer.tokens().first() {
                if ["variables", "operationName", "query"].contains(&name.as_str()) {
                    args.push((name, hashing));
                }
            }
        }
    }
    query_edits(line, &args, secret, &mut edits);
    sweep(line, rules, secret, &mut edits);
    let line = apply(line, &mut edits);

    let headers = headers
        .into_iter()
        .map(|(name, value)| {
            header_edits(name, value, rules, secret, &mut edits);
            sweep(value, rules, secret, &mut edits);
            (name, apply(value, &mut edits))
        })
        .collect();

    body_edits(body, rules, secret, &mut edits);
    sweep(body.bytes, rules, secret, &mut edits);
    let body = apply(body.bytes, &mut edits);

    Masked { line, headers, body }
}

/// The content of a captured attack, masked by the rules of its location: the hook of the
/// record writer.
pub fn attack_content<'c>(
    secret: &Secret,
    capture: &'c Capture,
    attack: &CapturedAttack,
    bodies: &'c [Option<String>],
) -> Masked<'c> {
    let profile = &*capture.profile;
    let mut rules = Rules::default();
    let body_value = |slot: usize| bodies.get(slot).and_then(|v| v.as_deref()).map(str::as_bytes);
    for (i, key) in profile.keys.iter().enumerate() {
        let value = match key.source {
            Source::Variable(_) => capture.key_value(i),
            _ => body_value(i),
        };
        rules.source(&key.source, value, Hashing::Key(CUSTOM_SPACE));
    }
    if profile.builtin_keys {
        rules.builtin();
    }
    if let Some((entry, span)) = capture.builtin {
        if !matches!(entry, Builtin::Ip | Builtin::IpUa) {
            rules.value(capture.get(span), Hashing::Key(entry.label()));
        }
    }
    for (i, param) in profile.params.iter().enumerate().filter(|(_, p)| p.hashed) {
        let value = match param.source {
            Source::Variable(_) => capture.param_value(i),
            _ => body_value(profile.keys.len() + i),
        };
        rules.source(&param.source, value, Hashing::Param);
    }
    rules.targets(&profile.mask);

    let headers =
        attack.headers.iter().map(|&(name, value)| (capture.get(name), capture.get(value)));
    let body = match &capture.request_body {
        Some(b) => BodyContent {
            bytes: &b.bytes,
            format: BodyFormat::from_content_type(capture.get(b.content_type)),
            extent: b.extent,
        },
        None => BodyContent { bytes: &[], format: BodyFormat::Other, extent: Extent::Whole },
    };
    mask(&rules, secret, capture.get(attack.line), headers, body)
}

/// A replacement of `span` by `text`.
struct Edit {
    span: Range<usize>,
    text: Vec<u8>,
}

/// Applies `edits` (in any order, possibly overlapping) to `text` and clears them. Where edits
/// overlap, the earlier one stretches over both: nothing either hides shows.
fn apply<'a>(text: &'a [u8], edits: &mut Vec<Edit>) -> Cow<'a, [u8]> {
    if edits.is_empty() {
        return Cow::Borrowed(text);
    }
    edits.sort_by_key(|edit| (edit.span.start, core::cmp::Reverse(edit.span.end)));
    let mut out = Vec::with_capacity(text.len() + 80 * edits.len());
    let mut at = 0;
    for edit in edits.drain(..) {
        if edit.span.start < at {
            // Inside the previous edit: hidden already, the rest of it too.
            at = at.max(edit.span.end);
            continue;
        }
        out.extend_from_slice(&text[at..edit.span.start]);
        out.extend_from_slice(&edit.text);
        at = edit.span.end;
    }
    out.extend_from_slice(&text[at.min(text.len())..]);
    Cow::Owned(out)
}

/// The query arguments of a request line whose names match, case-insensitively.
fn query_edits(line: &[u8], args: &[(&str, Hashing<'_>)], secret: &Secret, edits: &mut Vec<Edit>) {
    if args.is_empty() {
        return;
    }
    let Some(query) = query_span(line) else { return };
    let mut start = query.start;
    while start <= query.end {
        let end = memchr(b'&', &line[start..query.end]).map_or(query.end, |at| start + at);
        let field = &line[start..end];
        if let Some(eq) = memchr(b'=', field) {
            let name = &field[..eq];
            // As sent (how `$arg_` finds it) or decoded (how an application may).
            let decoded = form_urlencoded::parse(field).next().map(|(name, _)| name);
            let wanted = |&&(arg, _): &&(&str, Hashing<'_>)| {
                name.eq_ignore_ascii_case(arg.as_bytes())
                    || decoded.as_ref().is_some_and(|d| d.eq_ignore_ascii_case(arg))
            };
            if let Some(&(_, hashing)) = args.iter().find(wanted) {
                let value = &field[eq + 1..];
                if !value.is_empty() {
                    let text = hashing.token(secret, value);
                    edits.push(Edit { span: start + eq + 1..end, text });
                }
            }
        }
        start = end + 1;
    }
}

/// Where the query string is in `METHOD URI [VERSION]`: after the URI's first `?`, up to the
/// space before the version (a URI has no spaces, but a hostile line may) or a fragment.
fn query_span(line: &[u8]) -> Option<Range<usize>> {
    let method_end = memchr(b' ', line)?;
    let question = method_end + memchr(b'?', &line[method_end..])?;
    let mut end = line.len();
    if let Some(space) = line.iter().rposition(|&c| c == b' ') {
        if space > question && line[space + 1..].starts_with(b"HTTP/") {
            end = space;
        }
    }
    if let Some(hash) = memchr(b'#', &line[question..end]) {
        end = question + hash;
    }
    Some(question + 1..end)
}

fn header_edits(
    name: &[u8],
    value: &[u8],
    rules: &Rules<'_>,
    secret: &Secret,
    edits: &mut Vec<Edit>,
) {
    let name = variable_form(name);
    let Some(&(_, kind, hashing)) = rules.headers.iter().find(|(wanted, ..)| *wanted == name)
    else {
        return;
    };
    match kind {
        HeaderKind::Whole => {
            if !value.is_empty() {
                edits.push(Edit { span: 0..value.len(), text: hashing.token(secret, value) });
            }
        }
        HeaderKind::Authorization => {
            let credentials = credentials_start(value);
            if credentials < value.len() {
                let text = hashing.token(secret, value);
                edits.push(Edit { span: credentials..value.len(), text });
            }
        }
        HeaderKind::Cookie | HeaderKind::SetCookie => {
            for (i, cookie) in cookies(value).enumerate() {
                if kind == HeaderKind::SetCookie && i > 0 {
                    break;
                }
                let raw = &value[cookie.value.clone()];
                if raw.is_empty() {
                    continue;
                }
                let name = &value[cookie.name.clone()];
                let hashing = rules
                    .cookies
                    .iter()
                    .find(|(wanted, _)| wanted.as_bytes() == name)
                    .map_or(Hashing::Param, |&(_, hashing)| hashing);
                edits.push(Edit { span: cookie.value, text: hashing.token(secret, raw) });
            }
        }
    }
}

/// Where the credentials of `Scheme credentials` start; 0 when the value has no scheme.
fn credentials_start(value: &[u8]) -> usize {
    let scheme = value
        .iter()
        .take_while(|&&c| c.is_ascii_alphanumeric() || b"-._~+!#$%&'*^`|".contains(&c))
        .count();
    let spaces = value[scheme..].iter().take_while(|&&c| c == b' ' || c == b'\t').count();
    if scheme == 0 || spaces == 0 {
        0
    } else {
        scheme + spaces
    }
}

/// One `name=value` pair of a cookie header, trimmed; a pair without `=` is all value.
struct CookieSpan {
    name: Range<usize>,
    value: Range<usize>,
}

fn cookies(header: &[u8]) -> impl Iterator<Item = CookieSpan> + '_ {
    let mut start = 0;
    core::iter::from_fn(move || {
        while start <= header.len() {
            let end = memchr(b';', &header[start..]).map_or(header.len(), |at| start + at);
            let pair = trim(header, start..end);
            start = end + 1;
            if pair.is_empty() {
                continue;
            }
            return Some(match memchr(b'=', &header[pair.clone()]) {
                Some(eq) => CookieSpan {
                    name: trim(header, pair.start..pair.start + eq),
                    value: trim(header, pair.start + eq + 1..pair.end),
                },
                None => CookieSpan { name: pair.start..pair.start, value: pair },
            });
        }
        None
    })
}

fn trim(text: &[u8], span: Range<usize>) -> Range<usize> {
    let blank = |c: &u8| *c == b' ' || *c == b'\t';
    let part = &text[span.clone()];
    let start = part.iter().position(|c| !blank(c)).unwrap_or(part.len());
    let end = part.iter().rposition(|c| !blank(c)).map_or(start, |at| at + 1);
    span.start + start..span.start + end
}

fn body_edits(body: BodyContent<'_>, rules: &Rules<'_>, secret: &Secret, edits: &mut Vec<Edit>) {
    if rules.body.is_empty() || body.bytes.is_empty() {
        return;
    }
    match body.format {
        BodyFormat::Json => {
            let paths: Vec<&[String]> = rules.body.iter().map(|(p, _)| p.tokens()).collect();
            for found in json::locate(body.bytes, body.extent, &paths) {
                let hashing = rules.body[found.path].1;
                let value = json::located_value(body.bytes, &found);
                let hashed =
                    value.as_deref().map_or(&body.bytes[found.span.clone()], str::as_bytes);
                let token = hashing.token(secret, hashed);
                let text = if found.string {
                    token
                } else {
                    // A number, literal or container becomes a string, so the JSON stays JSON.
                    [&b"\""[..], &token, b"\""].concat()
                };
                edits.push(Edit { span: found.span, text });
            }
        }
        BodyFormat::Form => {
            let names: Vec<&str> = rules
                .body
                .iter()
                .map(|(pointer, _)| match pointer.tokens() {
                    [name] => name.as_str(),
                    // No form field has this name: `&` ends every name.
                    _ => "&",
                })
                .collect();
            for found in form::locate(body.bytes, body.extent, &names) {
                let raw = &body.bytes[found.span.clone()];
                if raw.is_empty() {
                    continue;
                }
                let hashing = rules.body[found.name].1;
                let hashed = found.value.as_deref().map_or(raw, str::as_bytes);
                edits.push(Edit { span: found.span, text: hashing.token(secret, hashed) });
            }
        }
        BodyFormat::GraphQl => {
            // The body is the query text: `/query` is all of it.
            let query = rules.body.iter().find(|(p, _)| matches!(p.tokens(), [q] if q == "query"));
            if let Some(&(_, hashing)) = query {
                let text = hashing.token(secret, body.bytes);
                edits.push(Edit { span: 0..body.bytes.len(), text });
            }
        }
        BodyFormat::Other => {}
    }
}

/// Every occurrence of a known credential in `text`.
fn sweep(text: &[u8], rules: &Rules<'_>, secret: &Secret, edits: &mut Vec<Edit>) {
    for &(value, hashing) in &rules.values {
        let mut token = None;
        for at in memmem::find_iter(text, value) {
            let text = token.get_or_insert_with(|| hashing.token(secret, value)).clone();
            edits.push(Edit { span: at..at + value.len(), text });
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn secret() -> Secret {
        Secret::from_file_contents(&[b'k'; 32]).unwrap()
    }

    fn param(value: &str) -> String {
        let mut out = String::new();
        secret().param(value.as_bytes(), &mut out);
        out
    }

    fn key(space: &str, value: &str) -> String {
        format!("{PARAM_PREFIX}{}", secret().key_hash(space.as_bytes(), value.as_bytes()))
    }

    fn source(text: &str) -> Source {
        Source::parse(text).unwrap()
    }

    struct Case {
        rules: Rules<'static>,
        line: &'static str,
        headers: Vec<(&'static str, &'static str)>,
        body: &'static str,
        format: BodyFormat,
        extent: Extent,
    }

    impl Case {
        fn new(rules: Rules<'static>) -> Case {
            Case {
                rules,
                line: "GET / HTTP/1.1",
                headers: Vec::new(),
                body: "",
                format: BodyFormat::Other,
                extent: Extent::Whole,
            }
        }

        fn run(&self) -> (String, Vec<(String, String)>, String) {
            let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
            let headers = self.headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
            let body = BodyContent {
                bytes: self.body.as_bytes(),
                format: self.format,
                extent: self.extent,
            };
            let m = mask(&self.rules, &secret(), self.line.as_bytes(), headers, body);
            (
                text(&m.line),
                m.headers.iter().map(|(n, v)| (text(n), text(v))).collect(),
                text(&m.body),
            )
        }
    }

    fn leak<T>(value: T) -> &'static T {
        Box::leak(Box::new(value))
    }

    fn rules_with(targets: &[&str]) -> Rules<'static> {
        let mut rules = Rules::default();
        let targets: Vec<Target> = targets.iter().map(|t| Target::parse(t).unwrap()).collect();
        rules.targets(leak(targets));
        rules
    }

    #[test]
    fn targets_parse_or_explain() {
        assert_eq!(Target::parse("header:X-Api-Key"), Ok(Target::Header("X-Api-Key".into())));
        assert_eq!(Target::parse("arg:token"), Ok(Target::Arg("token".into())));
        assert_eq!(
            Target::parse("body:/a/0").unwrap(),
            Target::Body(Pointer::parse("/a/0").unwrap())
        );
        for bad in
            ["header:", "header:a b", "header:a:b", "arg:", "arg:a=b", "arg:a&b", "cookie:x", "x"]
        {
            assert_eq!(
                Target::parse(bad).unwrap_err().to_string(),
                format!("invalid parameter \"{bad}\"")
            );
        }
        assert_eq!(
            Target::parse("body:token").unwrap_err().to_string(),
            r#"invalid JSON pointer "token", it must start with "/""#
        );
    }

    #[test]
    fn default_headers_are_masked_and_the_rest_kept() {
        let mut case = Case::new(rules_with(&[]));
        case.headers = vec![
            ("Host", "api.example.com"),
            ("authorization", "Bearer abc.def"),
            ("Proxy-Authorization", "Basic dXNlcjpwdw=="),
            ("Cookie", "sid=s1; theme=dark ;flag; =x"),
            ("Set-Cookie", "id=v1; Path=/; HttpOnly"),
            ("X-Other", "Bearer keep"),
        ];
        let (line, headers, _) = case.run();
        assert_eq!(line, "GET / HTTP/1.1");
        let expected = [
            ("Host", "api.example.com".to_owned()),
            ("authorization", format!("Bearer {}", param("Bearer abc.def"))),
            ("Proxy-Authorization", format!("Basic {}", param("Basic dXNlcjpwdw=="))),
            (
                "Cookie",
                format!(
                    "sid={}; theme={} ;{}; ={}",
                    param("s1"),
                    param("dark"),
                    param("flag"),
                    param("x")
                ),
            ),
            ("Set-Cookie", format!("id={}; Path=/; HttpOnly", param("v1"))),
            ("X-Other", "Bearer keep".to_owned()),
        ];
        let expected: Vec<(String, String)> =
            expected.iter().map(|(n, v)| ((*n).to_owned(), v.clone())).collect();
        assert_eq!(headers, expected);
    }

    #[test]
    fn an_authorization_without_a_scheme_is_masked_whole() {
        let mut case = Case::new(rules_with(&[]));
        case.headers = vec![("Authorization", "token-only"), ("Authorization", "")];
        let (_, headers, _) = case.run();
        assert_eq!(headers[0].1, param("token-only"));
        assert_eq!(headers[1].1, "");
    }

    #[test]
    fn builtin_keys_are_masked_by_their_key_hash() {
        let mut case = Case::new(Rules::default());
        case.rules.builtin();
        case.rules.targets(&[]);
        case.headers = vec![
            ("Cookie", "PHPSESSID=php1; other=o"),
            ("X-SESSION-TOKEN", "hdr-tok"),
            ("Authorization", "Bearer t"),
        ];
        let (_, headers, _) = case.run();
        assert_eq!(
            headers[0].1,
            format!("PHPSESSID={}; other={}", key("cookie:PHPSESSID", "php1"), param("o"))
        );
        assert_eq!(headers[1].1, key("header:X-Session-Token", "hdr-tok"));
        assert_eq!(headers[2].1, format!("Bearer {}", key("header:Authorization", "Bearer t")));
    }

    #[test]
    fn key_and_hash_sources_are_masked_where_they_come_from() {
        let mut rules = Rules::default();
        let (arg, cookie, header, body) = (
            leak(source("$arg_token")),
            leak(source("$cookie_acct")),
            leak(source("$http_x_api_key")),
            leak(source("request_body:/password")),
        );
        rules.source(arg, Some(b"tok-1234"), Hashing::Key(CUSTOM_SPACE));
        rules.source(cookie, Some(b"ac"), Hashing::Param);
        rules.source(header, Some(b"k1"), Hashing::Param);
        rules.source(body, Some(b"hunter2"), Hashing::Param);
        rules.targets(&[]);
        let mut case = Case::new(rules);
        case.line = "POST /login?a=1&TOKEN=tok-1234&b=2&token=other#frag HTTP/1.1";
        case.headers = vec![
            ("Cookie", "acct=ac; x=y"),
            ("X-Api-Key", "k1"),
            ("Referer", "https://x/?token=tok-1234"),
        ];
        case.body = r#"{"user":"al","password":"hunter2","n":1}"#;
        case.format = BodyFormat::Json;
        let (line, headers, body) = case.run();
        assert_eq!(
            line,
            format!(
                "POST /login?a=1&TOKEN={}&b=2&token={}#frag HTTP/1.1",
                key(CUSTOM_SPACE, "tok-1234"),
                key(CUSTOM_SPACE, "other")
            )
        );
        assert_eq!(headers[0].1, format!("acct={}; x={}", param("ac"), param("y")));
        assert_eq!(headers[1].1, param("k1"));
        // Swept: the key's value elsewhere, by the same hash.
        assert_eq!(headers[2].1, format!("https://x/?token={}", key(CUSTOM_SPACE, "tok-1234")));
        assert_eq!(body, format!(r#"{{"user":"al","password":"{}","n":1}}"#, param("hunter2")));
    }

    #[test]
    fn a_custom_key_wins_over_the_builtin_chain_for_the_same_place() {
        let mut rules = Rules::default();
        rules.source(leak(source("$cookie_sid")), Some(b"c1"), Hashing::Key(CUSTOM_SPACE));
        rules.source(leak(source("$http_authorization")), None, Hashing::Key(CUSTOM_SPACE));
        rules.builtin();
        rules.targets(&[]);
        let mut case = Case::new(rules);
        case.headers = vec![("Cookie", "sid=c1; PHPSESSID=p"), ("Authorization", "Basic x")];
        let (_, headers, _) = case.run();
        let cookie =
            format!("sid={}; PHPSESSID={}", key(CUSTOM_SPACE, "c1"), key("cookie:PHPSESSID", "p"));
        assert_eq!(headers[0].1, cookie);
        assert_eq!(headers[1].1, format!("Basic {}", key(CUSTOM_SPACE, "Basic x")));
    }

    #[test]
    fn json_values_of_any_kind_and_every_duplicate() {
        let mut case = Case::new(rules_with(&["body:/a", "body:/o/k", "body:/s"]));
        case.format = BodyFormat::Json;
        case.body = r#"{"a": 12, "o": {"k": [1, {"x": "y"}]}, "s": "q\"z", "a": true}"#;
        let (_, _, body) = case.run();
        assert_eq!(
            body,
            format!(
                r#"{{"a": "{}", "o": {{"k": "{}"}}, "s": "{}", "a": "{}"}}"#,
                param("12"),
                param(r#"[1,{"x":"y"}]"#),
                param("q\"z"),
                param("true")
            )
        );
    }

    #[test]
    fn a_value_cut_by_the_limit_is_hidden_up_to_the_cut() {
        let head = r#"{"a": 1, "password": "#;
        for (cut, hidden) in [
            (r#""hunt"#, format!(r#""{}"#, param("hunt"))),
            ("12", format!(r#""{}""#, param("12"))),
            (r#"{"x": [1, "#, format!(r#""{}""#, param(r#"{"x": [1, "#))),
        ] {
            let mut case = Case::new(rules_with(&["body:/password"]));
            case.format = BodyFormat::Json;
            case.extent = Extent::Cut;
            case.body = leak(format!("{head}{cut}"));
            assert_eq!(case.run().2, format!("{head}{hidden}"));
        }
        let mut case = Case::new(rules_with(&["body:/password"]));
        case.format = BodyFormat::Form;
        case.extent = Extent::Cut;
        case.body = "user=al&password=hunt";
        assert_eq!(case.run().2, format!("user=al&password={}", param("hunt")));
    }

    #[test]
    fn form_fields_and_graphql_arguments() {
        let mut case = Case::new(rules_with(&["body:/password", "body:/variables/pin"]));
        case.format = BodyFormat::Form;
        case.body = "user=al&pass%77ord=a+b%21&password=&x=1";
        assert_eq!(case.run().2, format!("user=al&pass%77ord={}&password=&x=1", param("a b!")));

        case.format = BodyFormat::Other;
        case.body = "";
        case.line = "GET /graphql?query=%7Ba%7D&variables=%7B%22pin%22%3A1%7D HTTP/1.1";
        assert_eq!(
            case.run().0,
            format!(
                "GET /graphql?query=%7Ba%7D&variables={} HTTP/1.1",
                param("%7B%22pin%22%3A1%7D")
            )
        );
    }

    #[test]
    fn custom_headers_and_args_from_the_directive() {
        let mut case = Case::new(rules_with(&["header:X-Secret", "arg:code"]));
        case.line = "GET /cb?code=c0de&state=s HTTP/1.1";
        case.headers = vec![("x_secret", "v"), ("X-Secret-2", "kept")];
        let (line, headers, _) = case.run();
        assert_eq!(line, format!("GET /cb?code={}&state=s HTTP/1.1", param("c0de")));
        assert_eq!(headers[0].1, param("v"));
        assert_eq!(headers[1].1, "kept");
    }

    #[test]
    fn overlapping_replacements_hide_both() {
        let mut rules = rules_with(&["arg:a"]);
        rules.value(b"xyz123456", Hashing::Param);
        let mut case = Case::new(rules);
        case.line = "GET /?a=123456789&b=xyz123456789 HTTP/1.1";
        let (line, ..) = case.run();
        assert!(!line.contains("123456"), "{line}");
        assert!(line.starts_with("GET /?a=hmac-sha256:") && line.ends_with(" HTTP/1.1"), "{line}");
    }

    /// A credential-shaped value: long enough to be swept, unlikely to occur by chance.
    fn credential() -> impl Strategy<Value = String> {
        "[A-Za-z0-9]{6}[A-Za-z0-9._~-]{0,14}"
    }

    proptest! {
        #[test]
        fn masked_content_never_shows_a_credential_and_keeps_the_rest(
            token in credential(),
            password in credential(),
            cookie in credential(),
            filler in "[a-z /=&]{0,12}",
            cut in any::<prop::sample::Index>(),
        ) {
            let (arg, pass) = (leak(source("$arg_token")), leak(source("request_body:/password")));
            let mut rules = Rules::default();
            rules.builtin();
            let token: &'static str = leak(token);
            let password: &'static str = leak(password);
            rules.source(arg, Some(token.as_bytes()), Hashing::Key(CUSTOM_SPACE));
            rules.source(pass, Some(password.as_bytes()), Hashing::Param);
            rules.targets(&[]);
            let line = format!("POST /p?{filler}&token={token}&x=1 HTTP/1.1");
            let referer = format!("https://app/{filler}?token={token}");
            let cookie_header = format!("a=1; sid={cookie}");
            let json = format!(r#"{{"note": "{filler}", "password": "{password}", "z": 1}}"#);
            for (body, format) in [(json.clone(), BodyFormat::Json), (format!("a={filler}&password={password}&b=2"), BodyFormat::Form)] {
                let end = cut.index(body.len() + 1);
                for (bytes, extent) in [(body.as_bytes(), Extent::Whole), (&body.as_bytes()[..end], Extent::Cut)] {
                    let headers = [(&b"Referer"[..], referer.as_bytes()), (b"Cookie", cookie_header.as_bytes()), (b"Accept", b"*/*")];
                    let m = mask(&rules, &secret(), line.as_bytes(), headers, BodyContent { bytes, format, extent });
                    let mut all = m.line.to_vec();
                    for (name, value) in &m.headers {
                        all.extend_from_slice(name);
                        all.extend_from_slice(value);
                    }
                    all.extend_from_slice(&m.body);
                    for secret in [token, password, &cookie] {
                        prop_assert!(memmem::find(&all, secret.as_bytes()).is_none(), "{} in {}", secret, String::from_utf8_lossy(&all));
                    }
                    // What is not a credential is unchanged.
                    let start = format!("POST /p?{filler}&token=hmac-sha256:");
                    prop_assert!(m.line.starts_with(start.as_bytes()));
                    prop_assert!(m.line.ends_with(b"&x=1 HTTP/1.1"));
                    prop_assert_eq!(&m.headers[2].1[..], b"*/*");
                    prop_assert!(m.headers[1].1.starts_with(b"a=hmac-sha256:"));
                    let kept = match format {
                        BodyFormat::Json => format!(r#"{{"note": "{filler}", "password": "#),
                        _ => format!("a={filler}&password="),
                    };
                    let kept = &kept.as_bytes()[..kept.len().min(bytes.len())];
                    prop_assert!(m.body.starts_with(kept), "{}", String::from_utf8_lossy(&m.body));
                }
            }
        }

        #[test]
        fn masking_never_panics(
            line in any::<Vec<u8>>(),
            header in any::<Vec<u8>>(),
            body in any::<Vec<u8>>(),
            format in prop::sample::select(vec![BodyFormat::Json, BodyFormat::Form, BodyFormat::GraphQl, BodyFormat::Other]),
            cut in any::<bool>(),
        ) {
            let rules = leak(rules_with(&["arg:a", "body:/a", "body:/variables/x", "body:/query", "header:x"]));
            let extent = Extent::cut_if(cut);
            for name in [&b"Cookie"[..], b"Authorization", b"Set-Cookie", b"x", b"Other"] {
                let m = mask(rules, &secret(), &line, [(name, &header[..])], BodyContent { bytes: &body, format, extent });
                prop_assert_eq!(m.headers.len(), 1);
            }
        }
    }
}
