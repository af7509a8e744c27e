//! Random requests, the lines the exporter writes for them, and the [`Record`]s those lines
//! stand for.
//!
//! The property tests that hold the record writer to [`Record`] here, and every receiver to
//! the writer in its own crate, draw from this one source. Each [`Record`] is built from the
//! capture field by field, without the writer, as the record documentation describes it.
//! Built for this crate's tests and, with the `testing` feature, for other crates' tests.

use std::sync::Arc;

use proptest::prelude::*;

use crate::assemble::{no_key_hash, Assembler, SessionSplit, NO_KEY_LABEL};
use crate::body::Extent;
use crate::capture::{Body, Capture, CapturedAttack};
use crate::hash::Secret;
use crate::keys::{Builtin, BUILTIN_COOKIES, BUILTIN_HEADERS, CUSTOM_SPACE};
use crate::mask;
use crate::profile::{KeySpec, ParamSpec, Profile, Settings, Source};
use crate::record::{
    Attack, AttackRequest, Blocked, Param, ParamKind, Record, Truncated, SCHEMA_VERSION,
};
use crate::time::Millis;

/// Records written one after the other by one exporter.
#[derive(Debug)]
pub struct Written {
    /// What the writer made of them: one NDJSON line each.
    pub lines: Vec<u8>,
    /// What each line stands for, in the same order.
    pub records: Vec<Record>,
}

/// A plain GET of session `session`, request `n` (which makes its id and `seq` unique) at
/// `ts`, nothing optional but a User-Agent: what tests change the fields they need of.
pub fn plain_record(session: &str, n: u64, ts: i64) -> Record {
    Record {
        v: SCHEMA_VERSION,
        ts: Millis(ts),
        request_id: format!("{session}-req-{n}"),
        node: "web-1".into(),
        pid: 100,
        seq: n,
        session_id: session.into(),
        session_key: "cookie:sid".into(),
        session_key_builtin: true,
        key_hash: format!("key-{session}"),
        session_start: Millis(ts),
        server: "api.example.com".into(),
        method: "GET".into(),
        path: format!("/items/{n}"),
        status: 200,
        duration_ms: 1.5,
        request_bytes: 100,
        response_bytes: 2000,
        ip: "192.0.2.1".into(),
        user_agent: Some("test-agent/1.0".into()),
        user: None,
        role: None,
        flows: vec![],
        params: vec![],
        attack: None,
        truncated: vec![],
        blocked: None,
    }
}

/// Strings that have broken JSON writers and readers: JSON's own special characters, control
/// characters and NUL, the line separators JavaScript treats as line ends, a byte order mark,
/// characters outside the basic plane, text that looks like an escape, and invalid UTF-8 (cut
/// sequences, an encoded surrogate, an overlong form), which the record carries as U+FFFD.
const SPECIAL: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"\\u0000",
    b"\\\"",
    b"\0",
    b"\x01",
    b"\x08\x0c",
    b"\x1f",
    b"\x7f",
    b"\n",
    b"\r\n",
    b"\t",
    "\u{2028}".as_bytes(),
    "\u{2029}".as_bytes(),
    "\u{feff}".as_bytes(),
    "\u{fffd}".as_bytes(),
    "\u{1f600}".as_bytes(),
    "é".as_bytes(),
    b"</script>",
    b"\xe2\x80",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\xff",
];

/// Bytes as a client may send them: plain text mixed with [`SPECIAL`] strings, any bytes,
/// any characters, and now and then a long run.
pub fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => "[a-zA-Z0-9 /=&.:_-]{0,12}".prop_map(String::into_bytes),
        2 => prop::sample::select(SPECIAL).prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 0..16),
        1 => any::<String>().prop_map(String::into_bytes),
        1 => (prop::sample::select(SPECIAL), 100..2000usize).prop_map(|(s, n)| s.repeat(n)),
    ];
    prop::collection::vec(piece, 0..5).prop_map(|pieces| pieces.concat())
}

/// Text from configuration (labels, names, flows): UTF-8, otherwise as hostile as a request.
fn hostile_text() -> impl Strategy<Value = String> {
    hostile_bytes().prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// For what the module never leaves empty: the node name (the configuration refuses an empty
/// one) and the request id (`$request_id`, or one the module makes).
fn non_empty_bytes() -> impl Strategy<Value = Vec<u8>> {
    hostile_bytes().prop_map(|bytes| if bytes.is_empty() { b"-".to_vec() } else { bytes })
}

const POOL: &[&[u8]] = &[b"tok-1", b"tok-2", b"\"\\\x00"];

/// A value from a small pool, so that records share keys and parameters as a session's do
/// (and the exporter's hash caches hit), or any hostile one.
fn value() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Vec::new())),
        2 => prop::sample::select(POOL).prop_map(|v| Some(v.to_vec())),
        2 => hostile_bytes().prop_map(Some),
    ]
}

fn settings() -> impl Strategy<Value = Settings> {
    let key = hostile_text().prop_map(|label| KeySpec { source: variable(), label });
    let kind = prop_oneof![Just(ParamKind::Context), Just(ParamKind::User), Just(ParamKind::Role)];
    let param = (hostile_text(), hostile_text(), kind, any::<bool>()).prop_map(
        |(name, source_text, kind, hashed)| ParamSpec {
            source: variable(),
            name,
            source_text,
            kind,
            hashed,
        },
    );
    (
        prop::collection::vec(key, 0..3),
        any::<bool>(),
        prop::collection::vec(param, 0..5),
        prop::collection::vec(hostile_text(), 0..3),
    )
        .prop_map(|(keys, builtin_keys, params, flows)| Settings {
            keys,
            builtin_keys,
            params,
            flows,
            ..Settings::default()
        })
}

/// The writer reads a variable's value from the capture, whatever the variable.
fn variable() -> Source {
    Source::Variable("$v".into())
}

fn builtin() -> impl Strategy<Value = Builtin> {
    prop_oneof![
        (0..BUILTIN_COOKIES.len() as u8).prop_map(Builtin::Cookie),
        (0..BUILTIN_HEADERS.len() as u8).prop_map(Builtin::Header),
        Just(Builtin::Authorization),
        Just(Builtin::IpUa),
        Just(Builtin::Ip),
    ]
}

/// Milliseconds from 1970 to the end of 9999, the range RFC 3339 can write.
fn millis() -> impl Strategy<Value = Millis> {
    (0..253_402_300_800_000i64).prop_map(Millis)
}

fn body() -> impl Strategy<Value = Option<(Vec<u8>, bool)>> {
    prop::option::of((hostile_bytes(), any::<bool>()))
}

type Header = (Vec<u8>, Vec<u8>);

fn attack() -> impl Strategy<Value = Option<(Vec<u8>, Vec<u8>, Vec<Header>)>> {
    let headers = prop::collection::vec((hostile_bytes(), hostile_bytes()), 0..4);
    prop::option::of((hostile_bytes(), hostile_bytes(), headers))
}

fn blocked() -> impl Strategy<Value = Option<Blocked>> {
    prop::option::of(prop_oneof![Just(Blocked::Blocked), Just(Blocked::DryRun)])
}

/// One request of a location with `profile`, filled in as the request path does.
fn capture(profile: Arc<Profile>) -> impl Strategy<Value = Capture> {
    let numbers = (
        any::<u64>(),
        millis(),
        // Microseconds below 2^53: every duration a record can carry, to the microsecond.
        0..(1u64 << 53),
        any::<u16>(),
        any::<u64>(),
        any::<u64>(),
        prop::option::of(millis()),
    );
    let text = (
        non_empty_bytes(),
        hostile_bytes(),
        hostile_bytes(),
        hostile_bytes(),
        hostile_bytes(),
        prop::option::of(hostile_bytes()),
    );
    let values = (
        prop::collection::vec(value(), profile.keys.len()),
        prop::collection::vec(value(), profile.params.len()),
        prop::option::of((builtin(), hostile_bytes())),
    );
    let content = (body(), body(), attack(), blocked());
    (numbers, text, values, content).prop_map(move |(numbers, text, values, content)| {
        let mut c = Capture::new(Arc::clone(&profile), 64);
        (c.seq, c.ts, c.duration_us, c.status, c.request_bytes, c.response_bytes) =
            (numbers.0, numbers.1, numbers.2, numbers.3, numbers.4, numbers.5);
        c.session_start = numbers.6;
        let (request_id, server, method, path, ip, user_agent) = text;
        c.request_id = c.push(&request_id);
        c.server = c.push(&server);
        c.method = c.push(&method);
        c.path = c.push(&path);
        c.ip = c.push(&ip);
        c.user_agent = user_agent.map(|ua| c.push(&ua));
        let (keys, params, builtin) = values;
        for (i, value) in keys.iter().enumerate() {
            c.set_key_value(i, value.as_deref().unwrap_or_default());
        }
        for (i, value) in params.iter().enumerate() {
            c.set_param_value(i, value.as_deref().unwrap_or_default());
        }
        c.builtin = builtin.map(|(entry, value)| (entry, c.push(&value)));
        let (request_body, response_body, attack, blocked) = content;
        let content_type = c.push(b"application/octet-stream");
        let body = |(bytes, truncated)| Body {
            bytes,
            truncated,
            extent: Extent::cut_if(truncated),
            content_type,
        };
        c.request_body = request_body.map(body);
        c.response_body = response_body.map(body);
        c.attack = attack.map(|(kind, line, headers)| CapturedAttack {
            kind: c.push(&kind),
            line: c.push(&line),
            headers: headers.iter().map(|(n, v)| (c.push(n), c.push(v))).collect(),
        });
        c.blocked = blocked;
        c
    })
}

/// One to four requests of one location, written by one exporter.
pub fn written() -> impl Strategy<Value = Written> {
    let node = non_empty_bytes().prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    (settings(), node, any::<u32>())
        .prop_flat_map(|(settings, node, pid)| {
            let profile = Arc::new(Profile::new(settings));
            (prop::collection::vec(capture(profile), 1..5), Just(node), Just(pid))
        })
        .prop_map(|(captures, node, pid)| {
            let secret = Secret::from_file_contents(&[b's'; 32]).expect("a 32-byte secret");
            let mut writer = Assembler::new(secret.clone(), node.clone(), pid, SessionSplit::Daily);
            let mut lines = Vec::new();
            for capture in &captures {
                writer.write_record(capture, &mut lines);
            }
            let records = captures.iter().map(|c| record_of(c, &secret, &node, pid)).collect();
            Written { lines, records }
        })
}

/// The record of a capture whose keys and parameters are all variables, with sessions split
/// by day.
fn record_of(c: &Capture, secret: &Secret, node: &str, pid: u32) -> Record {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let profile = &c.profile;

    let custom = profile.keys.iter().enumerate().find_map(|(i, key)| {
        let value = c.key_value(i).filter(|v| !v.is_empty())?;
        Some((key.label.as_str(), false, CUSTOM_SPACE, value))
    });
    let builtin = c.builtin.map(|(entry, span)| (entry.label(), true, entry.label(), c.get(span)));
    let (session_key, session_key_builtin, key_hash, session_start) = match custom.or(builtin) {
        Some((label, builtin, space, value)) => {
            let start = c.session_start.unwrap_or(c.ts.day_start());
            (label, builtin, secret.key_hash(space.as_bytes(), value), start)
        }
        None => (NO_KEY_LABEL, false, no_key_hash(secret, c.get(c.request_id)), c.ts),
    };

    let value = |raw: &[u8], hashed: bool| {
        if hashed {
            let mut digest = String::new();
            secret.param(raw, &mut digest);
            digest
        } else {
            text(raw)
        }
    };
    let mut params = Vec::new();
    let (mut user, mut role) = (None, None);
    for (i, spec) in profile.params.iter().enumerate() {
        let Some(raw) = c.param_value(i).filter(|v| !v.is_empty()) else { continue };
        let param = Param {
            name: spec.name.clone(),
            source: spec.source_text.clone(),
            kind: spec.kind,
            value: value(raw, spec.hashed),
            hashed: spec.hashed,
        };
        match spec.kind {
            ParamKind::User => user = Some(param.value.clone()),
            ParamKind::Role => role = Some(param.value.clone()),
            ParamKind::Context => {}
        }
        params.push(param);
    }

    // What masking hides is held to its rules by the mask's own tests; here the writer is held
    // to writing the masked content it is given.
    let attack = c.attack.as_ref().map(|a| {
        let no_bodies = vec![None; profile.keys.len() + profile.params.len()];
        let content = mask::attack_content(secret, c, a, &no_bodies);
        Attack {
            kind: text(c.get(a.kind)),
            request: AttackRequest {
                line: text(&content.line),
                headers: content.headers.iter().map(|(n, v)| (text(n), text(v))).collect(),
                body: text(&content.body),
                body_truncated: c.request_body.as_ref().is_some_and(|b| b.truncated),
            },
        }
    });
    let mut truncated = Vec::new();
    if c.request_body.as_ref().is_some_and(|b| b.truncated) {
        truncated.push(Truncated::RequestBody);
    }
    if c.response_body.as_ref().is_some_and(|b| b.truncated) {
        truncated.push(Truncated::ResponseBody);
    }

    Record {
        v: SCHEMA_VERSION,
        ts: c.ts,
        request_id: text(c.get(c.request_id)),
        node: node.to_owned(),
        pid,
        seq: c.seq,
        session_id: secret.session_id(&key_hash, session_start).to_hex(),
        session_key: session_key.to_owned(),
        session_key_builtin,
        key_hash: key_hash.to_hex(),
        session_start,
        server: text(c.get(c.server)),
        method: text(c.get(c.method)),
        path: text(c.get(c.path)),
        status: c.status,
        duration_ms: c.duration_us as f64 / 1000.0,
        request_bytes: c.request_bytes,
        response_bytes: c.response_bytes,
        ip: text(c.get(c.ip)),
        user_agent: c.user_agent.map(|ua| text(c.get(ua))),
        user,
        role,
        flows: profile.flows.clone(),
        params,
        attack,
        truncated,
        blocked: c.blocked,
    }
}
