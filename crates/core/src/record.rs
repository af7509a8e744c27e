//! The record: one per main request, schema version 2.
//!
//! This is the contract between the module and every receiver (the explorer, ClickHouse, files
//! people grep). Removing or renaming a field is a schema version change; receivers ignore
//! fields they do not know, so optional extras may be added.
//!
//! Version 2 writes each parameter as an array, `[name, source, type, value, hashed]`, where
//! version 1 wrote an object with those five keys: the keys were a sixth of a typical record's
//! bytes. It also leaves out `attack` and `truncated` when they are `null` and empty. Records
//! of both versions read into the same [`Record`], so stored version 1 records still load.
//!
//! [`Record`] is the one definition of a record. The exporter does not build one per request:
//! [`crate::assemble`] writes each line straight into the batch with the encoder in
//! `record/json.rs`, in the field order declared here, and a property test holds every line it
//! writes equal to serde's serialisation of the corresponding `Record`.

pub(crate) mod json;

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::time::Millis;

/// The schema version written into `v`.
pub const SCHEMA_VERSION: u32 = 2;

/// The schema versions a receiver reads.
pub const READABLE_VERSIONS: [u32; 2] = [1, SCHEMA_VERSION];

/// One request as the module saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    /// Request start.
    pub ts: Millis,
    /// nginx `$request_id`.
    pub request_id: String,
    pub node: String,
    pub pid: u32,
    /// Per worker, from 1, without gaps: a gap at the receiver is a lost record.
    pub seq: u64,
    pub session_id: String,
    /// Label of the key that resolved, e.g. `cookie:PHPSESSID` or a custom `name=`.
    pub session_key: String,
    pub session_key_builtin: bool,
    /// Keyed hash of (value space, key value); equal hashes are related sessions.
    pub key_hash: String,
    pub session_start: Millis,
    pub server: String,
    pub method: String,
    /// Request path without the query string.
    pub path: String,
    pub status: u16,
    pub duration_ms: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub ip: String,
    pub user_agent: Option<String>,
    pub user: Option<String>,
    pub role: Option<String>,
    pub flows: Vec<String>,
    pub params: Vec<Param>,
    /// Written only when the request was malicious, so absent reads as `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attack: Option<Attack>,
    /// Written only when a body was cut, so absent reads as empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<Truncated>,
    /// Whether the request's key was on the denylist. Written only when it was, so absent
    /// reads as `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Blocked>,
}

/// A context parameter captured with the request, written as
/// `[name, source, type, value, hashed]`; the object of version 1 records is read too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub source: String,
    pub kind: ParamKind,
    /// The value, or `hmac-sha256:<hex>` when `hashed`.
    pub value: String,
    pub hashed: bool,
}

impl Serialize for Param {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (&self.name, &self.source, self.kind, &self.value, self.hashed).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Param {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let ParamParts { name, source, kind, value, hashed } =
            ParamParts::deserialize(deserializer)?;
        Ok(Param { name, source, kind, value, hashed })
    }
}

/// A parameter's parts as either version writes them, with strings of any type that
/// deserializes from a string (receivers that borrow from the line use their own).
///
/// The form is not tied to the record's `v`: either is read in a record of either version,
/// and a `Record` is always written in the current one's.
pub struct ParamParts<S> {
    pub name: S,
    pub source: S,
    pub kind: ParamKind,
    pub value: S,
    pub hashed: bool,
}

/// Version 1's object.
#[derive(Deserialize)]
#[serde(rename = "Param")]
struct NamedParam<S> {
    name: S,
    source: S,
    #[serde(rename = "type")]
    kind: ParamKind,
    value: S,
    hashed: bool,
}

impl<'de, S: Deserialize<'de>> Deserialize<'de> for ParamParts<S> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PartsVisitor<S>(PhantomData<S>);

        impl<'de, S: Deserialize<'de>> Visitor<'de> for PartsVisitor<S> {
            type Value = ParamParts<S>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a parameter: [name, source, type, value, hashed]")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                let (name, source, kind, value, hashed) =
                    <(S, S, ParamKind, S, bool)>::deserialize(SeqAccessDeserializer::new(seq))?;
                Ok(ParamParts { name, source, kind, value, hashed })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let NamedParam { name, source, kind, value, hashed } =
                    NamedParam::deserialize(MapAccessDeserializer::new(map))?;
                Ok(ParamParts { name, source, kind, value, hashed })
            }
        }

        deserializer.deserialize_any(PartsVisitor(PhantomData))
    }
}

/// What a parameter tells about the session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamKind {
    #[default]
    Context,
    User,
    Role,
}

impl ParamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamKind::Context => "context",
            ParamKind::User => "user",
            ParamKind::Role => "role",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "context" => Some(ParamKind::Context),
            "user" => Some(ParamKind::User),
            "role" => Some(ParamKind::Role),
            _ => None,
        }
    }
}

/// A malicious request: its type and full content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attack {
    #[serde(rename = "type")]
    pub kind: String,
    pub request: AttackRequest,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttackRequest {
    /// The request line as received, e.g. `POST /login?x=1 HTTP/1.1`.
    pub line: String,
    /// Every request header in received order, as `[name, value]` pairs.
    pub headers: Vec<(String, String)>,
    /// The body up to `api_sessions_body_limit`.
    pub body: String,
    pub body_truncated: bool,
}

/// Which body was cut at `api_sessions_body_limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncated {
    RequestBody,
    ResponseBody,
}

impl Truncated {
    pub fn as_str(self) -> &'static str {
        match self {
            Truncated::RequestBody => "request_body",
            Truncated::ResponseBody => "response_body",
        }
    }
}

/// What the module did with a request whose key was on the denylist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Blocked {
    /// Answered by the module with the block status.
    Blocked,
    /// Let through, because blocking is in dry-run mode.
    DryRun,
}

impl Blocked {
    pub fn as_str(self) -> &'static str {
        match self {
            Blocked::Blocked => "blocked",
            Blocked::DryRun => "dry_run",
        }
    }
}

impl Record {
    /// Appends the record as one NDJSON line (with the trailing newline).
    pub fn write_ndjson(&self, out: &mut Vec<u8>) {
        // Serialising plain owned data into a Vec cannot fail: every map key is a string and
        // no Serialize impl here returns an error.
        serde_json::to_writer(&mut *out, self).expect("record serialisation");
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            v: SCHEMA_VERSION,
            ts: Millis(1_795_341_600_123),
            request_id: "a1b2c3".into(),
            node: "web-1".into(),
            pid: 4242,
            seq: 17,
            session_id: "3f9a".into(),
            session_key: "response_body:/token".into(),
            session_key_builtin: false,
            key_hash: "9c1e".into(),
            session_start: Millis(1_795_340_467_000),
            server: "api.example.com".into(),
            method: "POST".into(),
            path: "/login".into(),
            status: 200,
            duration_ms: 12.345,
            request_bytes: 345,
            response_bytes: 1234,
            ip: "203.0.113.7".into(),
            user_agent: Some("curl/8.0".into()),
            user: Some("alice".into()),
            role: Some("admin".into()),
            flows: vec!["auth".into()],
            params: vec![Param {
                name: "token".into(),
                source: "response_body:/token".into(),
                kind: ParamKind::Context,
                value: "hmac-sha256:5be0".into(),
                hashed: true,
            }],
            attack: None,
            truncated: vec![],
            blocked: None,
        }
    }

    /// The sample's fields between `v` and `params`, as both versions write them.
    macro_rules! sample_fields {
        () => {
            concat!(
                r#""ts":"2026-11-22T10:00:00.123Z","request_id":"a1b2c3","node":"web-1","#,
                r#""pid":4242,"seq":17,"session_id":"3f9a","session_key":"response_body:/token","#,
                r#""session_key_builtin":false,"key_hash":"9c1e","#,
                r#""session_start":"2026-11-22T09:41:07.000Z","server":"api.example.com","#,
                r#""method":"POST","path":"/login","status":200,"duration_ms":12.345,"#,
                r#""request_bytes":345,"response_bytes":1234,"ip":"203.0.113.7","#,
                r#""user_agent":"curl/8.0","user":"alice","role":"admin","flows":["auth"],"#,
            )
        };
    }

    #[test]
    fn serialises_the_documented_schema() {
        let mut line = Vec::new();
        sample().write_ndjson(&mut line);
        let text = String::from_utf8(line).unwrap();
        assert!(text.ends_with("}\n"));
        assert_eq!(text.matches('\n').count(), 1);
        assert_eq!(
            text.trim_end(),
            concat!(
                r#"{"v":2,"#,
                sample_fields!(),
                r#""params":[["token","response_body:/token","context","hmac-sha256:5be0",true]]}"#
            )
        );
    }

    #[test]
    fn round_trips_and_tolerates_extras() {
        let mut record = sample();
        record.attack = Some(Attack {
            kind: "sqli".into(),
            request: AttackRequest {
                line: "GET /?id=1'-- HTTP/1.1".into(),
                headers: vec![("Host".into(), "x".into())],
                body: String::new(),
                body_truncated: false,
            },
        });
        record.truncated = vec![Truncated::RequestBody, Truncated::ResponseBody];
        record.blocked = Some(Blocked::DryRun);
        let mut line = Vec::new();
        record.write_ndjson(&mut line);
        let back: Record = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, record);

        let mut value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        value["traceparent"] = "00-abc-def-01".into();
        let back: Record = serde_json::from_value(value).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn version_1_records_read_into_the_same_record() {
        let line = concat!(
            r#"{"v":1,"#,
            sample_fields!(),
            r#""params":[{"name":"token","source":"response_body:/token","type":"context","#,
            r#""value":"hmac-sha256:5be0","hashed":true}],"attack":null,"truncated":[]}"#
        );
        let record: Record = serde_json::from_str(line).unwrap();
        assert_eq!(record, Record { v: 1, ..sample() });
    }

    #[test]
    fn a_parameter_is_five_parts() {
        let read = |params: &str| {
            let mut value = serde_json::to_value(sample()).unwrap();
            value["params"] = serde_json::from_str(params).unwrap();
            serde_json::from_value::<Record>(value).map(|r| r.params)
        };
        let param = read(r#"[["q","$arg_q","user","x",false]]"#).unwrap();
        assert_eq!(
            (param[0].name.as_str(), param[0].kind, param[0].hashed),
            ("q", ParamKind::User, false)
        );
        for bad in [
            r#"[["q","$arg_q","user","x"]]"#,
            r#"[["q","$arg_q","user","x",false,1]]"#,
            r#"[["q","$arg_q","admin","x",false]]"#,
            r#"[["q","$arg_q","user",1,false]]"#,
            r#"[{"name":"q","source":"$arg_q","type":"user","value":"x"}]"#,
            r#"["q"]"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn blocked_is_written_only_when_set_and_absent_reads_as_null() {
        let mut line = Vec::new();
        sample().write_ndjson(&mut line);
        assert!(!String::from_utf8_lossy(&line).contains("blocked"));

        let mut value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        value["blocked"] = serde_json::Value::Null;
        assert_eq!(serde_json::from_value::<Record>(value.clone()).unwrap().blocked, None);
        for (text, blocked) in [("blocked", Blocked::Blocked), ("dry_run", Blocked::DryRun)] {
            assert_eq!(blocked.as_str(), text);
            value["blocked"] = text.into();
            let record: Record = serde_json::from_value(value.clone()).unwrap();
            assert_eq!(record.blocked, Some(blocked));
            let written = serde_json::to_value(&record).unwrap();
            assert_eq!(written["blocked"], text);
        }
        value["blocked"] = "maybe".into();
        assert!(serde_json::from_value::<Record>(value).is_err());
    }
}
