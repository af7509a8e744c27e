//! Received records on their way to the store: each record's text as received and the fields
//! the store needs, packed into one buffer.
//!
//! Records arrive a hundred thousand a second. Parsed into owned `Record`s they cost some
//! thirty allocations each, and freeing them took a tenth of the database writer's time. Here a
//! line is parsed with borrowed strings, and the fields are kept as spans of one text buffer
//! holding the lines (escaped strings are unescaped into it too), so a batch costs a handful of
//! allocations whatever its size.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use api_sessions_core::record::{Blocked, Record, READABLE_VERSIONS};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A string field, borrowed from the line unless it had escapes.
struct Text<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;

            // The same words as `String`'s, so errors read as they do for `Record`.
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(value)))
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(value.to_owned())))
            }

            fn visit_string<E: de::Error>(self, value: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(value)))
            }
        }

        deserializer.deserialize_str(TextVisitor(PhantomData))
    }
}

/// Borrowed mirrors of `api_sessions_core::record`: field for field, type for type, and with the
/// same names (serde puts them in its messages), so a line is accepted or rejected, with the
/// same message, exactly as deserializing a `Record` would; a test holds them to it. Fields that
/// are only validated are never read.
mod view {
    use api_sessions_core::record::{Blocked, ParamParts, Truncated};
    use api_sessions_core::time::Millis;
    use serde::{Deserialize, Deserializer};

    use super::Text;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    pub struct Record<'a> {
        pub v: u32,
        pub ts: Millis,
        #[serde(borrow)]
        pub request_id: Text<'a>,
        #[serde(borrow)]
        pub node: Text<'a>,
        pub pid: u32,
        pub seq: u64,
        #[serde(borrow)]
        pub session_id: Text<'a>,
        #[serde(borrow)]
        pub session_key: Text<'a>,
        pub session_key_builtin: bool,
        #[serde(borrow)]
        pub key_hash: Text<'a>,
        pub session_start: Millis,
        #[serde(borrow)]
        pub server: Text<'a>,
        #[serde(borrow)]
        pub method: Text<'a>,
        #[serde(borrow)]
        pub path: Text<'a>,
        pub status: u16,
        pub duration_ms: f64,
        pub request_bytes: u64,
        pub response_bytes: u64,
        #[serde(borrow)]
        pub ip: Text<'a>,
        #[serde(borrow)]
        pub user_agent: Option<Text<'a>>,
        #[serde(borrow)]
        pub user: Option<Text<'a>>,
        #[serde(borrow)]
        pub role: Option<Text<'a>>,
        #[serde(borrow)]
        pub flows: Vec<Text<'a>>,
        #[serde(borrow)]
        pub params: Vec<Param<'a>>,
        #[serde(default, borrow)]
        pub attack: Option<Attack<'a>>,
        #[serde(default)]
        pub truncated: Vec<Truncated>,
        #[serde(default)]
        pub blocked: Option<Blocked>,
    }

    /// Read in either version's form, as `Record`'s parameters are.
    pub struct Param<'a> {
        pub name: Text<'a>,
        pub value: Text<'a>,
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Param<'a> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let parts = ParamParts::<Text<'a>>::deserialize(deserializer)?;
            Ok(Param { name: parts.name, value: parts.value })
        }
    }

    #[derive(Deserialize)]
    pub struct Attack<'a> {
        #[serde(rename = "type", borrow)]
        pub kind: Text<'a>,
        #[serde(borrow)]
        pub request: AttackRequest<'a>,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    pub struct AttackRequest<'a> {
        #[serde(borrow)]
        pub line: Text<'a>,
        #[serde(borrow)]
        pub headers: Vec<(Text<'a>, Text<'a>)>,
        #[serde(borrow)]
        pub body: Text<'a>,
        pub body_truncated: bool,
    }
}

/// A byte range of [`Batch::text`].
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    start: u32,
    end: u32,
}

/// What the store needs of one record.
#[derive(Clone, Copy, Debug)]
struct Fields {
    json: Span,
    ts: i64,
    session_start: i64,
    request_id: Span,
    node: Span,
    pid: u32,
    seq: u64,
    session_id: Span,
    session_key: Span,
    key_hash: Span,
    session_key_builtin: bool,
    method: Span,
    path: Span,
    status: u16,
    ip: Span,
    /// What endpoints are made of.
    server: Span,
    duration_ms: f64,
    response_bytes: u64,
    user_agent: Option<Span>,
    user: Option<Span>,
    role: Option<Span>,
    attack: Option<Span>,
    /// Range of [`Batch::flows`].
    flows: (u32, u32),
    search: Span,
    blocked: Option<Blocked>,
}

/// Valid records, in the order they were pushed.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// The records' lines and the strings derived from them, back to back.
    text: String,
    records: Vec<Fields>,
    /// The flows of every record.
    flows: Vec<Span>,
}

/// The most text one batch holds; spans are 32-bit. Far above what one body, file chunk or
/// followed read produces (each at most 64 MiB of lines, at most three times that here).
const MAX_TEXT: usize = u32::MAX as usize;

impl Batch {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = RecordRef<'_>> + '_ {
        self.records.iter().map(move |fields| RecordRef { batch: self, fields })
    }

    /// Adds a record as the module writes it: what tests and benchmarks build batches of.
    pub fn push_record(&mut self, record: &Record) -> Result<(), String> {
        let mut line = Vec::new();
        record.write_ndjson(&mut line);
        self.push_line(&line)
    }

    /// Validates one NDJSON line (without its line end) and adds it; the error says why it is
    /// not a record.
    pub fn push_line(&mut self, line: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(line).map_err(|_| "line is not valid UTF-8".to_owned())?;
        let text = text.trim();
        let view: view::Record<'_> = serde_json::from_str(text).map_err(describe_json_error)?;
        if !READABLE_VERSIONS.contains(&view.v) {
            return Err(unsupported_version(view.v));
        }
        for (name, value) in [
            ("request_id", &view.request_id),
            ("session_id", &view.session_id),
            ("node", &view.node),
        ] {
            if value.0.is_empty() {
                return Err(format!("empty \"{name}\""));
            }
        }
        // Unescaped strings and the search text at most double the line.
        if self.text.len() + 3 * text.len() + 2 > MAX_TEXT {
            return Err("batch too large; send smaller batches".to_owned());
        }
        let base = self.text.len();
        self.text.push_str(text);
        let json = self.span(base, self.text.len());

        let flows_start = self.flows.len() as u32;
        for flow in &view.flows {
            let span = self.place(base, text, &flow.0);
            self.flows.push(span);
        }
        let fields = Fields {
            json,
            ts: view.ts.0,
            session_start: view.session_start.0,
            request_id: self.place(base, text, &view.request_id.0),
            node: self.place(base, text, &view.node.0),
            pid: view.pid,
            seq: view.seq,
            session_id: self.place(base, text, &view.session_id.0),
            session_key: self.place(base, text, &view.session_key.0),
            key_hash: self.place(base, text, &view.key_hash.0),
            session_key_builtin: view.session_key_builtin,
            method: self.place(base, text, &view.method.0),
            path: self.place(base, text, &view.path.0),
            status: view.status,
            ip: self.place(base, text, &view.ip.0),
            server: self.place(base, text, &view.server.0),
            duration_ms: view.duration_ms,
            response_bytes: view.response_bytes,
            user_agent: view.user_agent.as_ref().map(|ua| self.place(base, text, &ua.0)),
            user: view.user.as_ref().map(|user| self.place(base, text, &user.0)),
            role: view.role.as_ref().map(|role| self.place(base, text, &role.0)),
            attack: view.attack.as_ref().map(|attack| self.place(base, text, &attack.kind.0)),
            flows: (flows_start, self.flows.len() as u32),
            search: self.push_search_text(&view),
            blocked: view.blocked,
        };
        self.records.push(fields);
        Ok(())
    }

    fn span(&self, start: usize, end: usize) -> Span {
        Span { start: start as u32, end: end as u32 }
    }

    /// The span of `value`: where it lies in the line (pushed at `base`) when it was borrowed
    /// from it, else a copy appended to the text.
    fn place(&mut self, base: usize, line: &str, value: &str) -> Span {
        let offset = (value.as_ptr() as usize).wrapping_sub(line.as_ptr() as usize);
        if offset <= line.len() && value.len() <= line.len() - offset {
            return self.span(base + offset, base + offset + value.len());
        }
        let start = self.text.len();
        self.text.push_str(value);
        self.span(start, self.text.len())
    }

    /// Appends what the `q` filter searches: path, user, parameters (`name=value`) and the
    /// attack's request line, one per line, lowercased (ASCII) so a query can use a plain
    /// substring test.
    fn push_search_text(&mut self, view: &view::Record<'_>) -> Span {
        let start = self.text.len();
        self.text.push_str(&view.path.0);
        if let Some(user) = &view.user {
            self.text.push('\n');
            self.text.push_str(&user.0);
        }
        for param in &view.params {
            self.text.push('\n');
            self.text.push_str(&param.name.0);
            self.text.push('=');
            self.text.push_str(&param.value.0);
        }
        if let Some(attack) = &view.attack {
            self.text.push('\n');
            self.text.push_str(&attack.request.line.0);
        }
        self.text[start..].make_ascii_lowercase();
        self.span(start, self.text.len())
    }
}

fn unsupported_version(v: u32) -> String {
    let [older, current] = READABLE_VERSIONS;
    format!("unsupported record version {v} (expected {older} or {current})")
}

/// serde_json's message without its "at line 1 column N" (there is one line), with the column.
fn describe_json_error(err: serde_json::Error) -> String {
    let message = err.to_string();
    let message = message.rfind(" at line ").map_or(message.as_str(), |at| &message[..at]);
    format!("{message} (column {})", err.column())
}

/// One record of a [`Batch`].
#[derive(Clone, Copy)]
pub struct RecordRef<'b> {
    batch: &'b Batch,
    fields: &'b Fields,
}

impl<'b> RecordRef<'b> {
    fn text(&self, span: Span) -> &'b str {
        &self.batch.text[span.start as usize..span.end as usize]
    }

    /// The record as received (without surrounding whitespace).
    pub fn json(&self) -> &'b str {
        self.text(self.fields.json)
    }

    pub fn ts(&self) -> i64 {
        self.fields.ts
    }

    pub fn session_start(&self) -> i64 {
        self.fields.session_start
    }

    pub fn request_id(&self) -> &'b str {
        self.text(self.fields.request_id)
    }

    pub fn node(&self) -> &'b str {
        self.text(self.fields.node)
    }

    pub fn pid(&self) -> u32 {
        self.fields.pid
    }

    pub fn seq(&self) -> u64 {
        self.fields.seq
    }

    pub fn session_id(&self) -> &'b str {
        self.text(self.fields.session_id)
    }

    pub fn session_key(&self) -> &'b str {
        self.text(self.fields.session_key)
    }

    pub fn key_hash(&self) -> &'b str {
        self.text(self.fields.key_hash)
    }

    pub fn session_key_builtin(&self) -> bool {
        self.fields.session_key_builtin
    }

    pub fn method(&self) -> &'b str {
        self.text(self.fields.method)
    }

    /// The request path, without the query string.
    pub fn path(&self) -> &'b str {
        self.text(self.fields.path)
    }

    pub fn user_agent(&self) -> Option<&'b str> {
        self.fields.user_agent.map(|span| self.text(span))
    }

    pub fn status(&self) -> u16 {
        self.fields.status
    }

    pub fn ip(&self) -> &'b str {
        self.text(self.fields.ip)
    }

    pub fn server(&self) -> &'b str {
        self.text(self.fields.server)
    }

    pub fn duration_ms(&self) -> f64 {
        self.fields.duration_ms
    }

    pub fn response_bytes(&self) -> u64 {
        self.fields.response_bytes
    }

    pub fn user(&self) -> Option<&'b str> {
        self.fields.user.map(|span| self.text(span))
    }

    pub fn role(&self) -> Option<&'b str> {
        self.fields.role.map(|span| self.text(span))
    }

    /// The attack type of a malicious request.
    pub fn attack(&self) -> Option<&'b str> {
        self.fields.attack.map(|span| self.text(span))
    }

    pub fn flows(&self) -> impl ExactSizeIterator<Item = &'b str> + 'b {
        let (start, end) = self.fields.flows;
        let batch = self.batch;
        batch.flows[start as usize..end as usize]
            .iter()
            .map(move |span| &batch.text[span.start as usize..span.end as usize])
    }

    /// What `q` searches, lowercased (ASCII): path, user, `name=value` of each parameter and
    /// the attack's request line, one per line.
    pub fn search(&self) -> &'b str {
        self.text(self.fields.search)
    }

    /// Whether the module blocked the request (or would have, in dry-run mode).
    pub fn blocked(&self) -> Option<Blocked> {
        self.fields.blocked
    }
}

#[cfg(test)]
mod tests {
    use api_sessions_core::record::{
        Attack, AttackRequest, Param, ParamKind, Record, Truncated, SCHEMA_VERSION,
    };
    use api_sessions_core::time::Millis;

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
            session_key: "cookie:sid".into(),
            session_key_builtin: true,
            key_hash: "9c1e".into(),
            session_start: Millis(1_795_340_467_000),
            server: "api.example.com".into(),
            method: "POST".into(),
            path: "/Orders/1001".into(),
            status: 403,
            duration_ms: 12.5,
            request_bytes: 345,
            response_bytes: 1234,
            ip: "203.0.113.7".into(),
            user_agent: None,
            user: Some("Alice".into()),
            role: Some("admin".into()),
            flows: vec!["billing".into(), "auth".into()],
            params: vec![Param {
                name: "Order".into(),
                source: "$arg_order".into(),
                kind: ParamKind::Context,
                value: "ORD-1".into(),
                hashed: false,
            }],
            attack: Some(Attack {
                kind: "sqli".into(),
                request: AttackRequest {
                    line: "POST /Orders?id=1' HTTP/1.1".into(),
                    headers: vec![("Host".into(), "x".into())],
                    body: "{}".into(),
                    body_truncated: false,
                },
            }),
            truncated: vec![Truncated::RequestBody],
            blocked: Some(Blocked::Blocked),
        }
    }

    fn line(record: &Record) -> Vec<u8> {
        let mut line = Vec::new();
        record.write_ndjson(&mut line);
        line.pop();
        line
    }

    #[test]
    fn keeps_the_text_and_the_fields() {
        let record = sample();
        let mut batch = Batch::default();
        batch.push_record(&record).unwrap();
        let mut plain = record.clone();
        plain.user = None;
        plain.role = None;
        plain.attack = None;
        plain.flows.clear();
        plain.params.clear();
        plain.blocked = None;
        plain.user_agent = Some("curl/8.0".into());
        batch.push_line(&line(&plain)).unwrap();
        assert_eq!(batch.len(), 2);

        let got: Vec<_> = batch.iter().collect();
        let r = got[0];
        assert_eq!(r.json(), String::from_utf8(line(&record)).unwrap());
        assert_eq!((r.ts(), r.session_start()), (record.ts.0, record.session_start.0));
        assert_eq!((r.request_id(), r.node(), r.pid(), r.seq()), ("a1b2c3", "web-1", 4242, 17));
        assert_eq!((r.session_id(), r.session_key(), r.key_hash()), ("3f9a", "cookie:sid", "9c1e"));
        assert_eq!((r.method(), r.status(), r.ip()), ("POST", 403, "203.0.113.7"));
        assert_eq!((r.server(), r.path()), ("api.example.com", "/Orders/1001"));
        assert_eq!((r.duration_ms(), r.response_bytes()), (12.5, 1234));
        assert_eq!((r.user_agent(), r.session_key_builtin()), (None, true));
        assert_eq!((r.user(), r.role(), r.attack()), (Some("Alice"), Some("admin"), Some("sqli")));
        assert_eq!(r.flows().collect::<Vec<_>>(), ["billing", "auth"]);
        assert_eq!(r.search(), "/orders/1001\nalice\norder=ord-1\npost /orders?id=1' http/1.1");
        assert_eq!(r.blocked(), Some(Blocked::Blocked));

        let p = got[1];
        assert_eq!((p.user(), p.role(), p.attack(), p.blocked()), (None, None, None, None));
        assert_eq!(p.flows().count(), 0);
        assert_eq!(p.user_agent(), Some("curl/8.0"));
        assert_eq!(p.search(), "/orders/1001");
        assert_eq!(p.json(), String::from_utf8(line(&plain)).unwrap());
    }

    #[test]
    fn unescapes_strings_and_trims_the_line() {
        let mut record = sample();
        record.session_id = "tab\there \"quoted\" \u{e9}".into();
        record.flows = vec!["a\\b".into()];
        let mut text = b"  ".to_vec();
        text.extend(line(&record));
        text.extend(b" \t");
        let mut batch = Batch::default();
        batch.push_line(&text).unwrap();
        let r = batch.iter().next().unwrap();
        assert_eq!(r.session_id(), "tab\there \"quoted\" \u{e9}");
        assert_eq!(r.flows().collect::<Vec<_>>(), ["a\\b"]);
        assert_eq!(r.json(), String::from_utf8(line(&record)).unwrap());
    }

    /// Every line is accepted or rejected, with the same message, as a `Record` would be.
    #[test]
    fn validates_exactly_like_record() {
        let good = String::from_utf8(line(&sample())).unwrap();
        let value: serde_json::Value = serde_json::from_str(&good).unwrap();
        let version_1 = good.replace("\"v\":2", "\"v\":1").replace(
            r#"[["Order","$arg_order","context","ORD-1",false]]"#,
            r#"[{"name":"Order","source":"$arg_order","type":"context","value":"ORD-1","hashed":false}]"#,
        );
        assert_ne!(version_1, good.replace("\"v\":2", "\"v\":1"));
        let mut lines = vec![
            good.clone(),
            "not json".to_owned(),
            "[1]".to_owned(),
            "5".to_owned(),
            "{}".to_owned(),
            r#"{"v":1,"ts":"yesterday"}"#.to_owned(),
            good.replace(",\"context\",", ",\"other\","),
            good.replace(",\"ORD-1\",false]", ",\"ORD-1\"]"),
            good.replace(",\"ORD-1\",false]", ",\"ORD-1\",false,1]"),
            good.replace("\"v\":2", "\"v\":3"),
            version_1.clone(),
            version_1.replace("\"type\":\"context\"", "\"type\":\"other\""),
            version_1.replace(",\"hashed\":false", ""),
            version_1.replace("\"attack\":{", "\"attack\":null,\"x\":{"),
            good.replace("[\"request_body\"]", "[\"both\"]"),
            good.replace("\"pid\":4242", "\"pid\":-1"),
            good.replace("\"status\":403", "\"status\":70000"),
            good.replace("[\"Host\",\"x\"]", "[\"Host\"]"),
            good.replace("\"seq\":17", "\"seq\":17,\"seq\":18"),
            good.replace("\"blocked\":\"blocked\"", "\"blocked\":null"),
            good.replace("\"blocked\":\"blocked\"", "\"blocked\":\"maybe\""),
            format!("{},\"traceparent\":\"00-1\"}}", &good[..good.len() - 1]),
        ];
        let object = value.as_object().unwrap();
        for (key, _) in object {
            let mut without = object.clone();
            without.remove(key);
            lines.push(serde_json::Value::Object(without).to_string());
            let mut wrong = object.clone();
            wrong.insert(key.clone(), serde_json::json!({"x": [1]}));
            lines.push(serde_json::Value::Object(wrong).to_string());
            let mut number = object.clone();
            number.insert(key.clone(), serde_json::json!(7));
            lines.push(serde_json::Value::Object(number).to_string());
        }
        for text in &lines {
            let expected = serde_json::from_str::<Record>(text)
                .map_err(describe_json_error)
                .and_then(|record| match record.v {
                    1 | 2 => Ok(()),
                    v => Err(format!("unsupported record version {v} (expected 1 or 2)")),
                });
            let got = Batch::default().push_line(text.as_bytes());
            assert_eq!(got, expected, "{text}");
        }
    }

    #[test]
    fn checks_version_ids_and_encoding() {
        let mut record = sample();
        record.v = 3;
        let err = Batch::default().push_line(&line(&record)).unwrap_err();
        assert_eq!(err, "unsupported record version 3 (expected 1 or 2)");
        let mut record = sample();
        record.node.clear();
        assert_eq!(Batch::default().push_line(&line(&record)).unwrap_err(), "empty \"node\"");
        let err = Batch::default().push_line(b"\xff{}").unwrap_err();
        assert_eq!(err, "line is not valid UTF-8");
    }
}
