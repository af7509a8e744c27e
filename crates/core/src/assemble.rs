//! Where a record is built: a [`Capture`] becomes a [`Record`] on the exporter thread.
//!
//! This is where body values are extracted, the session key is resolved across custom keys
//! and the built-in chain, key values are hashed, the session is split by time and the
//! parameters are filled in.

use std::borrow::Cow;

use crate::body::{self, BodyFormat, Pointer, RequestDocument};
use crate::capture::{Body, Capture};
use crate::hash::{KeyHash, Secret, ZoneKey};
use crate::keys::{Builtin, CUSTOM_SPACE};
use crate::profile::{Profile, Source};
use crate::record::{Attack, AttackRequest, Param, ParamKind, Record, Truncated, SCHEMA_VERSION};
use crate::session_table::{SessionTable, SplitPolicy};
use crate::time::Millis;

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
}

/// A request or response body offered for value extraction.
pub struct BodyDocument<'a> {
    pub format: BodyFormat,
    pub content_type_empty: bool,
    pub bytes: &'a [u8],
}

impl<'a> BodyDocument<'a> {
    pub fn new(content_type: &[u8], bytes: &'a [u8]) -> Self {
        BodyDocument {
            format: BodyFormat::from_content_type(content_type),
            content_type_empty: content_type.is_empty(),
            bytes,
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
            Some(b) => RequestDocument { format: b.format, body: b.bytes, args },
            // GraphQL over GET has no body but arguments.
            None => RequestDocument { format: BodyFormat::Other, body: &[], args },
        };
        let pointers: Vec<&Pointer> = from_request.iter().map(|(_, p)| *p).collect();
        for ((slot, _), value) in from_request.iter().zip(body::extract_request(&doc, &pointers)) {
            values[*slot] = value;
        }
    }
    if let (false, Some(b)) = (from_response.is_empty(), response) {
        let pointers: Vec<&Pointer> = from_response.iter().map(|(_, p)| *p).collect();
        let found = body::extract_response(b.format, b.content_type_empty, b.bytes, &pointers);
        for ((slot, _), value) in from_response.iter().zip(found) {
            values[*slot] = value;
        }
    }
    values
}

/// The key that identified a request.
pub struct ResolvedKey<'a> {
    pub label: &'a str,
    pub builtin: bool,
    pub hash: KeyHash,
    /// The session table key; `None` for a request without a key.
    pub zone: Option<ZoneKey>,
}

/// Resolves the session key: custom keys in order (variables from `variable`, body sources
/// from `bodies` as returned by [`body_values`]), then the built-in key, then, with neither,
/// a key of the request alone.
pub fn resolve_key<'a>(
    profile: &'a Profile,
    secret: &Secret,
    variable: impl Fn(usize) -> Option<&'a [u8]>,
    bodies: &[Option<String>],
    builtin: Option<(Builtin, &[u8])>,
    request_id: &[u8],
) -> ResolvedKey<'a> {
    for (i, key) in profile.keys.iter().enumerate() {
        let value = match key.source {
            Source::Variable(_) => variable(i),
            _ => bodies[i].as_deref().map(str::as_bytes),
        };
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            let space = CUSTOM_SPACE.as_bytes();
            return ResolvedKey {
                label: &key.label,
                builtin: false,
                hash: secret.key_hash(space, value),
                zone: Some(secret.zone_key(space, value)),
            };
        }
    }
    if let Some((entry, value)) = builtin {
        let space = entry.label().as_bytes();
        return ResolvedKey {
            label: entry.label(),
            builtin: true,
            hash: secret.key_hash(space, value),
            zone: Some(secret.zone_key(space, value)),
        };
    }
    ResolvedKey {
        label: NO_KEY_LABEL,
        builtin: false,
        hash: secret.key_hash(NO_KEY_LABEL.as_bytes(), request_id),
        zone: None,
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn document<'c>(capture: &'c Capture, body: &'c Option<Body>) -> Option<BodyDocument<'c>> {
    body.as_ref().map(|b| BodyDocument::new(capture.get(b.content_type), &b.bytes))
}

impl Assembler {
    /// Builds the record of a capture.
    pub fn assemble(&self, capture: &Capture) -> Record {
        let profile = &capture.profile;
        let request = document(capture, &capture.request_body);
        let response = document(capture, &capture.response_body);
        let args = capture.get(capture.args);
        let bodies = body_values(profile, request.as_ref(), args, response.as_ref());
        let key = resolve_key(
            profile,
            &self.secret,
            |i| capture.key_value(i),
            &bodies,
            capture.builtin.map(|(entry, span)| (entry, capture.get(span))),
            capture.get(capture.request_id),
        );
        let session_start = capture
            .session_start
            .unwrap_or_else(|| self.split.start(key.zone.as_ref(), capture.ts));
        let session_id = self.secret.session_id(&key.hash, session_start);

        let mut params = Vec::with_capacity(profile.params.len());
        let mut user = None;
        let mut role = None;
        for (i, spec) in profile.params.iter().enumerate() {
            let raw: Option<Cow<'_, [u8]>> = match spec.source {
                Source::Variable(_) => capture.param_value(i).map(Cow::Borrowed),
                _ => bodies[profile.keys.len() + i].as_deref().map(|v| Cow::Borrowed(v.as_bytes())),
            };
            let Some(raw) = raw.filter(|v| !v.is_empty()) else {
                continue;
            };
            let value = if spec.hashed {
                let mut out = String::new();
                self.secret.param(&raw, &mut out);
                out
            } else {
                lossy(&raw)
            };
            match spec.kind {
                ParamKind::User => user = Some(value.clone()),
                ParamKind::Role => role = Some(value.clone()),
                ParamKind::Context => {}
            }
            params.push(Param {
                name: spec.name.clone(),
                source: spec.source_text.clone(),
                kind: spec.kind,
                value,
                hashed: spec.hashed,
            });
        }

        let mut truncated = Vec::new();
        if capture.request_body.as_ref().is_some_and(|b| b.truncated) {
            truncated.push(Truncated::RequestBody);
        }
        if capture.response_body.as_ref().is_some_and(|b| b.truncated) {
            truncated.push(Truncated::ResponseBody);
        }

        let attack = capture.attack.as_ref().map(|a| Attack {
            kind: lossy(capture.get(a.kind)),
            request: AttackRequest {
                line: lossy(capture.get(a.line)),
                headers: a
                    .headers
                    .iter()
                    .map(|(n, v)| (lossy(capture.get(*n)), lossy(capture.get(*v))))
                    .collect(),
                body: capture.request_body.as_ref().map(|b| lossy(&b.bytes)).unwrap_or_default(),
                body_truncated: capture.request_body.as_ref().is_some_and(|b| b.truncated),
            },
        });

        Record {
            v: SCHEMA_VERSION,
            ts: capture.ts,
            request_id: lossy(capture.get(capture.request_id)),
            node: self.node.clone(),
            pid: self.pid,
            seq: capture.seq,
            session_id: session_id.to_hex(),
            session_key: key.label.to_string(),
            session_key_builtin: key.builtin,
            key_hash: key.hash.to_hex(),
            session_start,
            server: lossy(capture.get(capture.server)),
            method: lossy(capture.get(capture.method)),
            path: lossy(capture.get(capture.path)),
            status: capture.status,
            duration_ms: capture.duration_us as f64 / 1000.0,
            request_bytes: capture.request_bytes,
            response_bytes: capture.response_bytes,
            ip: lossy(capture.get(capture.ip)),
            user_agent: capture.user_agent.map(|s| lossy(capture.get(s))),
            user,
            role,
            flows: profile.flows.clone(),
            params,
            attack,
            truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::keys::BuiltinScanner;
    use crate::profile::{KeySpec, ParamSpec, Profile};

    fn assembler() -> Assembler {
        Assembler {
            secret: Secret::from_file_contents(&[b's'; 32]).unwrap(),
            node: "web-1".into(),
            pid: 42,
            split: SessionSplit::Daily,
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
            content_type: c.push(b"application/json"),
        }
    }

    /// The worked example of seeds/001: a token returned by the login response, later sent
    /// in an argument or in the request body, groups all three requests into one session.
    #[test]
    fn the_login_token_example_groups_into_one_session() {
        let profile = Arc::new(Profile {
            keys: vec![
                key("response_body:/hash/token"),
                key("$arg_token"),
                key("request_body:/hash/token"),
            ],
            ..Profile::default()
        });
        let a = assembler();
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
        let profile = Arc::new(Profile { keys: vec![key("$arg_token")], ..Profile::default() });
        let a = assembler();

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
        let profile = Profile {
            keys: vec![key("$arg_a"), key("request_body:/t"), key("$arg_b")],
            ..Profile::default()
        };
        let cookie = Some((Builtin::Cookie(0), &b"php"[..]));
        let custom = secret.zone_key(CUSTOM_SPACE.as_bytes(), b"v");
        assert_eq!(early_zone_key(&profile, &secret, Some((0, b"v")), None), Some(custom));
        assert_eq!(early_zone_key(&profile, &secret, Some((2, b"v")), None), None);
        assert_eq!(early_zone_key(&profile, &secret, None, cookie), None);

        let variables = Profile { keys: vec![key("$arg_a")], ..Profile::default() };
        let builtin = secret.zone_key(b"cookie:PHPSESSID", b"php");
        assert_eq!(early_zone_key(&variables, &secret, None, cookie), Some(builtin));
        assert_eq!(early_zone_key(&variables, &secret, None, None), None);
    }

    #[test]
    fn a_start_from_the_request_path_is_kept() {
        let profile = Arc::new(Profile { keys: vec![key("$arg_t")], ..Profile::default() });
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
        let profile = Arc::new(Profile { builtin_keys: false, ..Profile::default() });
        let a = assembler();
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
        let profile = Arc::new(Profile {
            params: vec![
                param("$http_x_user", "user", ParamKind::User, false),
                param("request_body:/role", "role", ParamKind::Role, false),
                param("request_body:/password", "password", ParamKind::Context, true),
                param("$arg_missing", "missing", ParamKind::Context, false),
                param("response_body:/user/name", "login", ParamKind::User, false),
            ],
            flows: vec!["auth".into()],
            ..Profile::default()
        });
        let a = assembler();
        let mut c = Capture::new(profile, 256);
        c.set_param_value(0, b"alice");
        let mut req = json_body(&mut c, r#"{"role":"admin","password":"hunter2"}"#);
        req.truncated = true;
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
        let profile = Arc::new(Profile { attack: true, ..Profile::default() });
        let a = assembler();
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
}
