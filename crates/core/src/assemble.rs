//! Where a record is built: a [`Capture`] becomes an NDJSON line on the exporter thread.
//!
//! This is where body values are extracted, the session key is resolved across custom keys
//! and the built-in chain, key values are hashed, the session is split by time and the
//! parameters are filled in. The line is written straight into the batch buffer in the
//! field order of [`Record`](crate::record::Record): serialising a `Record` would cost some
//! thirty allocations per record, and this writer none. A property test holds its lines equal
//! to serde's serialisation of the `Record` they stand for.

mod cache;

use self::cache::HashCache;
use crate::body::{self, BodyFormat, Extent, Pointer, RequestDocument};
use crate::capture::{Body, Capture};
use crate::hash::{hex_into, KeyHash, Secret, ZoneKey, PARAM_PREFIX};
use crate::keys::{Builtin, CUSTOM_SPACE};
use crate::mask;
use crate::profile::{Profile, Source};
use crate::record::{json, ParamKind, Truncated, SCHEMA_VERSION};
use crate::session_table::{SessionTable, SplitPolicy};
use crate::time::{DateCache, Millis};

/// Label of records for which no key yielded a value (only possible with
/// `api_sessions_builtin_keys off`): each such request is a session of its own.
pub const NO_KEY_LABEL: &str = "none";

/// How sessions of one key value are split in time.
pub enum SessionSplit {
    /// No `api_sessions_zone`: one session per key value and UTC day.
    Daily,
    /// `api_sessions_zone`: idle gap and maximum duration, shared by all workers.
    Zone { table: SessionTable, policy: SplitPolicy },
}

impl SessionSplit {
    /// Start of the session a request at `ts` belongs to, recording the request. A request
    /// without a key (`zone` is `None`) is a session of its own.
    pub fn start(&self, zone: Option<&ZoneKey>, ts: Millis) -> Millis {
        match (self, zone) {
            (_, None) => ts,
            (SessionSplit::Daily, Some(_)) => ts.day_start(),
            (SessionSplit::Zone { table, policy }, Some(key)) => table.touch(key, ts, *policy),
        }
    }

    /// Start of the session a request at `ts` would belong to, without recording it.
    pub fn peek(&self, zone: Option<&ZoneKey>, ts: Millis) -> Millis {
        match (self, zone) {
            (_, None) => ts,
            (SessionSplit::Daily, Some(_)) => ts.day_start(),
            (SessionSplit::Zone { table, policy }, Some(key)) => table.peek(key, ts, *policy),
        }
    }
}

/// The session table key of a request when the request path can tell the key on its own at
/// the log phase: no body source comes before the first variable key with a value (`hit`),
/// or, without one, no body key could still yield a value ahead of the built-in key.
///
/// Updating the table right there, in the order requests finish, keeps a session's start at
/// its first request even when another worker's exporter would have got there first.
pub fn early_zone_key(
    profile: &Profile,
    secret: &Secret,
    hit: Option<(usize, &[u8])>,
    builtin: Option<(Builtin, &[u8])>,
) -> Option<ZoneKey> {
    let is_variable = |k: &crate::profile::KeySpec| matches!(k.source, Source::Variable(_));
    match hit {
        Some((i, value)) => profile.keys[..i]
            .iter()
            .all(is_variable)
            .then(|| secret.zone_key(CUSTOM_SPACE.as_bytes(), value)),
        None if profile.keys.iter().all(is_variable) => {
            builtin.map(|(entry, value)| secret.zone_key(entry.label().as_bytes(), value))
        }
        None => None,
    }
}

/// Per-worker context for building records.
pub struct Assembler {
    pub secret: Secret,
    pub node: String,
    pub pid: u32,
    pub split: SessionSplit,
    cache: HashCache,
    dates: DateCache,
}

/// A request or response body offered for value extraction.
pub struct BodyDocument<'a> {
    pub format: BodyFormat,
    pub content_type_empty: bool,
    pub bytes: &'a [u8],
    pub extent: Extent,
}

impl<'a> BodyDocument<'a> {
    pub fn new(content_type: &[u8], bytes: &'a [u8], extent: Extent) -> Self {
        BodyDocument {
            format: BodyFormat::from_content_type(content_type),
            content_type_empty: content_type.is_empty(),
            bytes,
            extent,
        }
    }
}

/// Values of a profile's body sources, in key-then-parameter order (`None` for variables).
/// Each body is parsed once for all its sources.
pub fn body_values(
    profile: &Profile,
    request: Option<&BodyDocument<'_>>,
    args: &[u8],
    response: Option<&BodyDocument<'_>>,
) -> Vec<Option<String>> {
    let sources = profile.keys.iter().map(|k| &k.source);
    let sources = sources.chain(profile.params.iter().map(|p| &p.source));
    let mut values = vec![None; profile.keys.len() + profile.params.len()];

    let mut from_request = Vec::new();
    let mut from_response = Vec::new();
    for (slot, source) in sources.enumerate() {
        match source {
            Source::RequestBody(p) => from_request.push((slot, p)),
            Source::ResponseBody(p) => from_response.push((slot, p)),
            Source::Variable(_) => {}
        }
    }

    if !from_request.is_empty() {
        let doc = match request {
            Some(b) => RequestDocument { format: b.format, body: b.bytes, extent: b.extent, args },
            // GraphQL over GET has no body but arguments.
            None => RequestDocument {
                format: BodyFormat::Other,
                body: &[],
                extent: Extent::Whole,
                args,
            },
        };
        let pointers: Vec<&Pointer> = from_request.iter().map(|(_, p)| *p).collect();
        for ((slot, _), value) in from_request.iter().zip(body::extract_request(&doc, &pointers)) {
            values[*slot] = value;
        }
    }
    if let (false, Some(b)) = (from_response.is_empty(), response) {
        let pointers: Vec<&Pointer> = from_response.iter().map(|(_, p)| *p).collect();
        let found =
            body::extract_response(b.format, b.content_type_empty, b.bytes, b.extent, &pointers);
        for ((slot, _), value) in from_response.iter().zip(found) {
            values[*slot] = value;
        }
    }
    values
}

/// The key that identified a request, before hashing.
pub struct KeyChoice<'a> {
    pub label: &'a str,
    pub builtin: bool,
    /// Value space: [`CUSTOM_SPACE`] or the built-in entry's label.
    pub space: &'a str,
    pub value: &'a [u8],
}

/// Chooses the session key: custom keys in order (variables from `variable`, body sources
/// from `body`, by slot of [`body_values`]), then the built-in key. `None` when no key
/// has a value: the request is then a session of its own.
pub fn choose_key<'a>(
    profile: &'a Profile,
    variable: impl Fn(usize) -> Option<&'a [u8]>,
    body: impl Fn(usize) -> Option<&'a str>,
    builtin: Option<(Builtin, &'a [u8])>,
) -> Option<KeyChoice<'a>> {
    for (i, key) in profile.keys.iter().enumerate() {
        let value = match key.source {
            Source::Variable(_) => variable(i),
            _ => body(i).map(str::as_bytes),
        };
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            return Some(KeyChoice {
                label: &key.label,
                builtin: false,
                space: CUSTOM_SPACE,
                value,
            });
        }
    }
    builtin.map(|(entry, value)| KeyChoice {
        label: entry.label(),
        builtin: true,
        space: entry.label(),
        value,
    })
}

/// The key hash of a request without a key: its own, from its request id.
pub fn no_key_hash(secret: &Secret, request_id: &[u8]) -> KeyHash {
    secret.key_hash(NO_KEY_LABEL.as_bytes(), request_id)
}

fn document<'c>(capture: &'c Capture, body: &'c Option<Body>) -> Option<BodyDocument<'c>> {
    body.as_ref().map(|b| BodyDocument::new(capture.get(b.content_type), &b.bytes, b.extent))
}

impl Assembler {
    pub fn new(secret: Secret, node: String, pid: u32, split: SessionSplit) -> Assembler {
        Assembler {
            secret,
            node,
            pid,
            split,
            cache: HashCache::default(),
            dates: DateCache::default(),
        }
    }

    /// Appends the record of a capture as one NDJSON line.
    pub fn write_record(&mut self, capture: &Capture, out: &mut Vec<u8>) {
        let profile = &capture.profile;
        let request = document(capture, &capture.request_body);
        let response = document(capture, &capture.response_body);
        // Profiles without body sources skip the extraction and its allocation.
        let bodies = if profile.has_body_sources() {
            body_values(profile, request.as_ref(), capture.get(capture.args), response.as_ref())
        } else {
            Vec::new()
        };
        let body_value = |slot: usize| bodies.get(slot).and_then(|v| v.as_deref());
        let builtin = capture.builtin.map(|(entry, span)| (entry, capture.get(span)));
        let choice = choose_key(profile, |i| capture.key_value(i), body_value, builtin);

        let (label, builtin, key_hash, session_start, session_id);
        match &choice {
            Some(k) => {
                let zone = self.secret.zone_key(k.space.as_bytes(), k.value);
                let hash = self.cache.key_hash(&self.secret, &zone, k.space.as_bytes(), k.value);
                let start = match capture.session_start {
                    Some(start) => start,
                    None => self.split.start(Some(&zone), capture.ts),
                };
                (label, builtin, key_hash, session_start) = (k.label, k.builtin, hash, start);
                session_id = self.cache.session_id(&self.secret, &zone, &hash, start);
            }
            None => {
                let hash = no_key_hash(&self.secret, capture.get(capture.request_id));
                (label, builtin, key_hash, session_start) = (NO_KEY_LABEL, false, hash, capture.ts);
                session_id = self.secret.session_id(&hash, capture.ts);
            }
        }

        // Most lines are well under a kilobyte: one reservation instead of a check per push.
        out.reserve(1024);
        out.extend_from_slice(b"{\"v\":");
        json::uint(out, u64::from(SCHEMA_VERSION));
        out.extend_from_slice(b",\"ts\":\"");
        capture.ts.write_rfc3339_cached(&mut self.dates, out);
        out.extend_from_slice(b"\",\"request_id\":");
        json::string(out, capture.get(capture.request_id));
        out.extend_from_slice(b",\"node\":");
        json::string(out, self.node.as_bytes());
        out.extend_from_slice(b",\"pid\":");
        json::uint(out, u64::from(self.pid));
        out.extend_from_slice(b",\"seq\":");
        json::uint(out, capture.seq);
        out.extend_from_slice(b",\"session_id\":\"");
        hex_into(&session_id.0, out);
        out.extend_from_slice(b"\",\"session_key\":");
        json::string(out, label.as_bytes());
        out.extend_from_slice(b",\"session_key_builtin\":");
        json::boolean(out, builtin);
        out.extend_from_slice(b",\"key_hash\":\"");
        hex_into(&key_hash.0, out);
        out.extend_from_slice(b"\",\"session_start\":\"");
        session_start.write_rfc3339_cached(&mut self.dates, out);
        out.extend_from_slice(b"\",\"server\":");
        json::string(out, capture.get(capture.server));
        out.extend_from_slice(b",\"method\":");
        json::string(out, capture.get(capture.method));
        out.extend_from_slice(b",\"path\":");
        json::string(out, capture.get(capture.path));
        out.extend_from_slice(b",\"status\":");
        json::uint(out, u64::from(capture.status));
        out.extend_from_slice(b",\"duration_ms\":");
        json::micros_as_ms(out, capture.duration_us);
        out.extend_from_slice(b",\"request_bytes\":");
        json::uint(out, capture.request_bytes);
        out.extend_from_slice(b",\"response_bytes\":");
        json::uint(out, capture.response_bytes);
        out.extend_from_slice(b",\"ip\":");
        json::string(out, capture.get(capture.ip));
        out.extend_from_slice(b",\"user_agent\":");
        json::optional(out, capture.user_agent.map(|s| capture.get(s)));

        let param = |i: usize| -> Option<&[u8]> {
            let raw = match profile.params[i].source {
                Source::Variable(_) => capture.param_value(i),
                _ => body_value(profile.keys.len() + i).map(str::as_bytes),
            };
            raw.filter(|v| !v.is_empty())
        };

        // user and role come first in the line but are decided by the parameters.
        let mut user: Option<(&[u8], bool)> = None;
        let mut role: Option<(&[u8], bool)> = None;
        for (i, spec) in profile.params.iter().enumerate() {
            if let Some(raw) = param(i) {
                match spec.kind {
                    ParamKind::User => user = Some((raw, spec.hashed)),
                    ParamKind::Role => role = Some((raw, spec.hashed)),
                    ParamKind::Context => {}
                }
            }
        }
        for (name, found) in [("user", user), ("role", role)] {
            out.extend_from_slice(b",");
            json::key(out, name);
            match found {
                Some((raw, true)) => self.hashed_value(raw, out),
                Some((raw, false)) => json::string(out, raw),
                None => out.extend_from_slice(b"null"),
            }
        }

        out.extend_from_slice(b",\"flows\":");
        out.extend_from_slice(profile.flows_json());
        out.extend_from_slice(b",\"params\":[");
        let mut first = true;
        for (i, spec) in profile.params.iter().enumerate() {
            let Some(raw) = param(i) else { continue };
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(profile.param_head(i));
            if spec.hashed {
                self.hashed_value(raw, out);
                out.extend_from_slice(b",true]");
            } else {
                json::string(out, raw);
                out.extend_from_slice(b",false]");
            }
        }
        out.push(b']');
        if let Some(a) = &capture.attack {
            // Credentials in the content are replaced by their keyed hashes.
            let content = mask::attack_content(&self.secret, capture, a, &bodies);
            out.extend_from_slice(b",\"attack\":{\"type\":");
            json::string(out, capture.get(a.kind));
            out.extend_from_slice(b",\"request\":{\"line\":");
            json::string(out, &content.line);
            out.extend_from_slice(b",\"headers\":[");
            for (i, (name, value)) in content.headers.iter().enumerate() {
                out.extend_from_slice(if i > 0 { b",[" } else { b"[" });
                json::string(out, name);
                out.push(b',');
                json::string(out, value);
                out.push(b']');
            }
            out.extend_from_slice(b"],\"body\":");
            json::string(out, &content.body);
            let body = capture.request_body.as_ref();
            out.extend_from_slice(b",\"body_truncated\":");
            json::boolean(out, body.is_some_and(|b| b.truncated));
            out.extend_from_slice(b"}}");
        }
        let cut = [
            (capture.request_body.as_ref(), Truncated::RequestBody),
            (capture.response_body.as_ref(), Truncated::ResponseBody),
        ];
        let mut first = true;
        for (body, which) in cut {
            if body.is_some_and(|b| b.truncated) {
                out.extend_from_slice(if first { b",\"truncated\":[" } else { b"," });
                first = false;
                json::string(out, which.as_str().as_bytes());
            }
        }
        if !first {
            out.push(b']');
        }
        if let Some(blocked) = capture.blocked {
            out.extend_from_slice(b",\"blocked\":");
            json::string(out, blocked.as_str().as_bytes());
        }
        out.extend_from_slice(b"}\n");
    }

    fn hashed_value(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        let digest = self.cache.param(&self.secret, raw);
        out.push(b'"');
        out.extend_from_slice(PARAM_PREFIX.as_bytes());
        hex_into(&digest, out);
        out.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::keys::BuiltinScanner;
    use crate::profile::{KeySpec, ParamSpec, Profile, Settings};

    use crate::record::{Blocked, Record};
    use crate::testing;
    use proptest::prelude::*;

    fn assembler() -> Assembler {
        let secret = Secret::from_file_contents(&[b's'; 32]).unwrap();
        Assembler::new(secret, "web-1".into(), 42, SessionSplit::Daily)
    }

    impl Assembler {
        /// The record as a receiver reads it.
        fn assemble(&mut self, capture: &Capture) -> Record {
            let mut line = Vec::new();
            self.write_record(capture, &mut line);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            serde_json::from_slice(&line).expect("a record line parses")
        }
    }

    fn key(source: &str) -> KeySpec {
        KeySpec { source: Source::parse(source).unwrap(), label: source.into() }
    }

    fn param(source: &str, name: &str, kind: ParamKind, hashed: bool) -> ParamSpec {
        ParamSpec {
            source: Source::parse(source).unwrap(),
            name: name.into(),
            source_text: source.into(),
            kind,
            hashed,
        }
    }

    fn json_body(c: &mut Capture, text: &str) -> Body {
        Body {
            bytes: text.as_bytes().to_vec(),
            truncated: false,
            extent: Extent::Whole,
            content_type: c.push(b"application/json"),
        }
    }

    /// The worked example of seeds/001: a token returned by the login response, later sent
    /// in an argument or in the request body, groups all three requests into one session.
    #[test]
    fn the_login_token_example_groups_into_one_session() {
        let profile = Arc::new(Profile::new(Settings {
            keys: vec![
                key("response_body:/hash/token"),
                key("$arg_token"),
                key("request_body:/hash/token"),
            ],
            ..Settings::default()
        }));
        let mut a = assembler();
        let ts = Millis(1_795_341_600_000);

        // 1. login: the response carries the token.
        let mut login = Capture::new(profile.clone(), 256);
        login.ts = ts;
        let req = json_body(&mut login, r#"{"in":"bbb"}"#);
        login.request_body = Some(req);
        let resp = json_body(&mut login, r#"{"hash":{"token":"aaa"}}"#);
        login.response_body = Some(resp);

        // 2. the token as a query argument.
        let mut by_arg = Capture::new(profile.clone(), 256);
        by_arg.ts = Millis(ts.0 + 1000);
        by_arg.set_key_value(1, b"aaa");

        // 3. the token in the request body, the response without one.
        let mut by_body = Capture::new(profile.clone(), 256);
        by_body.ts = Millis(ts.0 + 2000);
        let req = json_body(&mut by_body, r#"{"in":"ccc","hash":{"token":"aaa"}}"#);
        by_body.request_body = Some(req);
        let resp = json_body(&mut by_body, r#"{"ok":true}"#);
        by_body.response_body = Some(resp);

        let records: Vec<Record> = [login, by_arg, by_body].iter().map(|c| a.assemble(c)).collect();
        let labels: Vec<&str> = records.iter().map(|r| r.session_key.as_str()).collect();
        assert_eq!(labels, ["response_body:/hash/token", "$arg_token", "request_body:/hash/token"]);
        assert!(records.iter().all(|r| !r.session_key_builtin));
        assert!(records.iter().all(|r| r.session_id == records[0].session_id));
        assert!(records.iter().all(|r| r.key_hash == records[0].key_hash));
        assert_eq!(records[0].session_start, ts.day_start());
    }

    #[test]
    fn builtin_chain_follows_custom_keys_in_its_own_space() {
        let profile = Arc::new(Profile::new(Settings {
            keys: vec![key("$arg_token")],
            ..Settings::default()
        }));
        let mut a = assembler();

        let mut custom = Capture::new(profile.clone(), 64);
        custom.set_key_value(0, b"abc");
        let mut builtin = Capture::new(profile, 64);
        let mut scanner = BuiltinScanner::new();
        scanner.header(b"Cookie", b"sid=abc");
        let found = scanner.finish(b"10.0.0.1", None).unwrap();
        let span = builtin.push(&found.value);
        builtin.builtin = Some((found.entry, span));

        let (c, b) = (a.assemble(&custom), a.assemble(&builtin));
        assert_eq!((b.session_key.as_str(), b.session_key_builtin), ("cookie:sid", true));
        assert_ne!(c.key_hash, b.key_hash, "the same value in another space is another key");
    }

    #[test]
    fn request_path_knows_the_zone_key_only_without_bodies_ahead() {
        let secret = assembler().secret;
        let profile = Profile::new(Settings {
            keys: vec![key("$arg_a"), key("request_body:/t"), key("$arg_b")],
            ..Settings::default()
        });
        let cookie = Some((Builtin::Cookie(0), &b"php"[..]));
        let custom = secret.zone_key(CUSTOM_SPACE.as_bytes(), b"v");
        assert_eq!(early_zone_key(&profile, &secret, Some((0, b"v")), None), Some(custom));
        assert_eq!(early_zone_key(&profile, &secret, Some((2, b"v")), None), None);
        assert_eq!(early_zone_key(&profile, &secret, None, cookie), None);

        let variables = Profile::new(Settings { keys: vec![key("$arg_a")], ..Settings::default() });
        let builtin = secret.zone_key(b"cookie:PHPSESSID", b"php");
        assert_eq!(early_zone_key(&variables, &secret, None, cookie), Some(builtin));
        assert_eq!(early_zone_key(&variables, &secret, None, None), None);
    }

    #[test]
    fn a_start_from_the_request_path_is_kept() {
        let profile =
            Arc::new(Profile::new(Settings { keys: vec![key("$arg_t")], ..Settings::default() }));
        let mut c = Capture::new(profile, 64);
        c.ts = Millis(1_795_341_600_500);
        c.set_key_value(0, b"t1");
        c.session_start = Some(Millis(1_795_341_600_100));
        let r = assembler().assemble(&c);
        assert_eq!(r.session_start, Millis(1_795_341_600_100));
        let a = assembler();
        let key = a.secret.key_hash(CUSTOM_SPACE.as_bytes(), b"t1");
        assert_eq!(r.session_id, a.secret.session_id(&key, Millis(1_795_341_600_100)).to_hex());
    }

    #[test]
    fn no_key_makes_a_session_of_one_request() {
        let profile =
            Arc::new(Profile::new(Settings { builtin_keys: false, ..Settings::default() }));
        let mut a = assembler();
        let mut one = Capture::new(profile.clone(), 64);
        one.request_id = one.push(b"r1");
        let mut two = Capture::new(profile, 64);
        two.request_id = two.push(b"r2");
        one.ts = Millis(1_795_341_600_123);
        let (one, two) = (a.assemble(&one), a.assemble(&two));
        assert_eq!(one.session_key, NO_KEY_LABEL);
        assert_eq!(one.session_start, one.ts, "a session of one request starts with it");
        assert_ne!(one.session_id, two.session_id);
    }

    #[test]
    fn params_user_role_hashing_and_truncation() {
        let profile = Arc::new(Profile::new(Settings {
            params: vec![
                param("$http_x_user", "user", ParamKind::User, false),
                param("request_body:/role", "role", ParamKind::Role, false),
                param("request_body:/password", "password", ParamKind::Context, true),
                param("$arg_missing", "missing", ParamKind::Context, false),
                param("response_body:/user/name", "login", ParamKind::User, false),
            ],
            flows: vec!["auth".into()],
            ..Settings::default()
        }));
        let mut a = assembler();
        let mut c = Capture::new(profile, 256);
        c.set_param_value(0, b"alice");
        let mut req = json_body(&mut c, r#"{"role":"admin","password":"hunter2"}"#);
        (req.truncated, req.extent) = (true, Extent::Cut);
        c.request_body = Some(req);
        let resp = json_body(&mut c, r#"{"user":{"name":"alice@example.com"}}"#);
        c.response_body = Some(resp);

        let r = a.assemble(&c);
        let names: Vec<&str> = r.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["user", "role", "password", "login"], "absent values are left out");
        assert_eq!(r.user.as_deref(), Some("alice@example.com"), "the last user value wins");
        assert_eq!(r.role.as_deref(), Some("admin"));
        let password = &r.params[2];
        assert!(password.hashed);
        let mut expected = String::new();
        a.secret.param(b"hunter2", &mut expected);
        assert_eq!(password.value, expected);
        assert!(!serde_json::to_string(&r).unwrap().contains("hunter2"));
        assert_eq!(r.truncated, [Truncated::RequestBody]);
        assert_eq!(r.flows, ["auth"]);
    }

    #[test]
    fn attack_carries_the_full_request() {
        let profile = Arc::new(Profile::new(Settings { attack: true, ..Settings::default() }));
        let mut a = assembler();
        let mut c = Capture::new(profile, 256);
        let kind = c.push(b"sqli");
        let line = c.push(b"POST /search?q=1'-- HTTP/1.1");
        let h = (c.push(b"Host"), c.push(b"api.example.com"));
        c.attack = Some(crate::capture::CapturedAttack { kind, line, headers: vec![h] });
        c.request_body =
            Some(Body { bytes: b"q=\xff<script>".to_vec(), truncated: true, ..Body::default() });
        let r = a.assemble(&c);
        let attack = r.attack.unwrap();
        assert_eq!(attack.kind, "sqli");
        assert_eq!(attack.request.line, "POST /search?q=1'-- HTTP/1.1");
        assert_eq!(attack.request.headers, [("Host".into(), "api.example.com".into())]);
        assert_eq!(attack.request.body, "q=\u{fffd}<script>");
        assert!(attack.request.body_truncated);
    }

    #[test]
    fn blocked_is_written_when_set() {
        let profile = Arc::new(Profile::default());
        let mut c = Capture::new(profile, 64);
        assert_eq!(assembler().assemble(&c).blocked, None);
        c.blocked = Some(Blocked::DryRun);
        let mut line = Vec::new();
        assembler().write_record(&c, &mut line);
        assert!(line.ends_with(b",\"params\":[],\"blocked\":\"dry_run\"}\n"));
    }

    proptest! {
        /// Every line the writer makes is, as JSON, the serialisation of the record it stands
        /// for, and reads back as that record.
        #[test]
        fn every_line_is_the_record_it_stands_for(written in testing::written()) {
            let lines: Vec<&[u8]> = written.lines.split_inclusive(|&b| b == b'\n').collect();
            prop_assert_eq!(lines.len(), written.records.len());
            for (line, record) in lines.into_iter().zip(&written.records) {
                prop_assert_eq!(line.last(), Some(&b'\n'));
                let value: serde_json::Value = serde_json::from_slice(line)?;
                prop_assert_eq!(&value, &serde_json::to_value(record)?);
                let back: Record = serde_json::from_slice(line)?;
                prop_assert_eq!(&back, record);
            }
        }
    }

    #[test]
    fn attack_content_hides_key_values_and_credentials() {
        let profile = Arc::new(Profile::new(Settings {
            keys: vec![key("$arg_token"), key("request_body:/session")],
            params: vec![param("request_body:/password", "password", ParamKind::Context, true)],
            attack: true,
            mask: vec![crate::mask::Target::parse("header:X-Api-Key").unwrap()],
            ..Settings::default()
        }));
        let mut a = assembler();
        let mut c = Capture::new(profile, 256);
        c.set_key_value(0, b"tok-secret-1");
        let kind = c.push(b"sqli");
        let line = c.push(b"POST /login?token=tok-secret-1&q=1'-- HTTP/1.1");
        let headers = [
            ("Host", "api.example.com"),
            ("Authorization", "Bearer bearer-secret"),
            ("Cookie", "sid=cookie-secret; theme=dark"),
            ("X-Api-Key", "api-key-secret"),
        ]
        .map(|(n, v)| (c.push(n.as_bytes()), c.push(v.as_bytes())));
        c.attack = Some(crate::capture::CapturedAttack { kind, line, headers: headers.to_vec() });
        let body = json_body(&mut c, r#"{"session":"body-secret-2","password":"hunter2"}"#);
        c.request_body = Some(body);

        let mut line = Vec::new();
        a.write_record(&c, &mut line);
        let text = String::from_utf8(line.clone()).unwrap();
        for raw in [
            "tok-secret-1",
            "bearer-secret",
            "cookie-secret",
            "api-key-secret",
            "body-secret-2",
            "hunter2",
            "dark",
        ] {
            assert!(!text.contains(raw), "{raw} in {text}");
        }
        let r: Record = serde_json::from_slice(&line).unwrap();
        let request = r.attack.unwrap().request;
        // The key's value is replaced by the key hash the record has.
        assert_eq!(
            request.line,
            format!("POST /login?token=hmac-sha256:{}&q=1'-- HTTP/1.1", r.key_hash)
        );
        assert_eq!(request.headers[0], ("Host".into(), "api.example.com".into()));
        assert!(request.headers[1].1.starts_with("Bearer hmac-sha256:"));
        assert!(request.headers[2].1.starts_with("sid=hmac-sha256:"));
        // The hashed parameter's value is replaced by the value the record exports.
        let password = &r.params.iter().find(|p| p.name == "password").unwrap().value;
        assert!(request.body.contains(&format!(r#""password":"{password}""#)), "{}", request.body);
    }
}
