//! An OpenAPI file read into one tree, whether it was JSON or YAML, with the line of each node
//! where the parser gives it, so that a mistake in the document can be pointed at.
//!
//! JSON goes through `serde_json`: YAML parsers reject some valid JSON (escaped surrogate
//! pairs, which JSON writers emit for any character outside the BMP), and JSON errors read
//! better in JSON's terms. `serde_json` keeps no positions in its values, so nodes read from
//! JSON have no line; its syntax errors have one. YAML goes through `saphyr`, which keeps the
//! position of every node.

use std::collections::HashSet;
use std::fmt;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A node of the document.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// 1-based line of the node, when the parser gives it.
    pub line: Option<usize>,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// A number, as text: nothing here computes with numbers.
    Number(String),
    String(String),
    Seq(Vec<Node>),
    /// Keys in document order.
    Map(Vec<(String, Node)>),
}

impl Node {
    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// What the value is, for messages.
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Why a document could not be read, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub reason: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Which syntax a file is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    /// By extension, or else by content: a JSON document starts with `{`.
    pub fn of(name: &str, text: &str) -> Format {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".json") {
            Format::Json
        } else if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            Format::Yaml
        } else if text.trim_start_matches('\u{feff}').trim_start().starts_with('{') {
            Format::Json
        } else {
            Format::Yaml
        }
    }
}

/// Reads a document.
pub fn parse(format: Format, text: &str) -> Result<Node, SyntaxError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match format {
        Format::Json => parse_json(text),
        Format::Yaml => parse_yaml(text),
    }
}

fn parse_json(text: &str) -> Result<Node, SyntaxError> {
    serde_json::from_str(text).map_err(|e| SyntaxError {
        line: Some(e.line()).filter(|&line| line > 0),
        column: Some(e.column()).filter(|&column| column > 0),
        reason: json_reason(&e),
    })
}

/// serde_json's message without the " at line L column C" it appends: the position is given
/// apart.
fn json_reason(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// Read straight from JSON rather than through `serde_json::Value`, whose objects do not keep
/// the document's order of keys: "the first document's operation wins" and the order
/// operations are listed in depend on it.
impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl NodeVisitor {
    fn node(value: Value) -> Node {
        Node { line: None, value }
    }
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Self::node(Value::Null))
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Node, E> {
        Ok(Self::node(Value::Bool(b)))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Node, E> {
        Ok(Self::node(Value::Number(n.to_string())))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Node, E> {
        Ok(Self::node(Value::Number(n.to_string())))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Node, E> {
        Ok(Self::node(Value::Number(n.to_string())))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Node, E> {
        Ok(Self::node(Value::String(s.to_owned())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Node, E> {
        Ok(Self::node(Value::String(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Self::node(Value::Seq(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        // Duplicate keys are refused, as the YAML parser does: which one a reader would take
        // is anyone's guess.
        let mut entries: Vec<(String, Node)> = Vec::new();
        let mut seen = HashSet::new();
        while let Some((key, value)) = map.next_entry::<String, Node>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!("duplicate key \"{key}\"")));
            }
            entries.push((key, value));
        }
        Ok(Self::node(Value::Map(entries)))
    }
}

fn parse_yaml(text: &str) -> Result<Node, SyntaxError> {
    let mut documents = MarkedYaml::load_from_str(text).map_err(|e| SyntaxError {
        line: Some(e.marker().line()),
        column: Some(e.marker().col() + 1),
        reason: e.info().to_owned(),
    })?;
    match documents.len() {
        0 => Err(SyntaxError { line: None, column: None, reason: "the file is empty".into() }),
        1 => from_yaml(&documents.remove(0)),
        _ => Err(SyntaxError {
            line: Some(documents[1].span.start.line()),
            column: None,
            reason: "the file holds more than one YAML document".into(),
        }),
    }
}

/// Recursive: the parser refuses documents nested deeper than a few hundred levels, so this
/// stays as shallow.
fn from_yaml(node: &MarkedYaml<'_>) -> Result<Node, SyntaxError> {
    let line = Some(node.span.start.line());
    let value = match &node.data {
        YamlData::Value(scalar) => scalar_value(scalar),
        YamlData::Representation(text, _, _) => Value::String(text.to_string()),
        YamlData::Sequence(items) => {
            Value::Seq(items.iter().map(from_yaml).collect::<Result<_, _>>()?)
        }
        YamlData::Mapping(entries) => {
            let mut out = Vec::with_capacity(entries.len());
            for (key, value) in entries {
                out.push((key_text(key), from_yaml(value)?));
            }
            Value::Map(out)
        }
        YamlData::Tagged(_, inner) => return from_yaml(inner),
        // The loader resolves aliases to copies of their anchors; none is left unresolved.
        YamlData::Alias(_) => Value::Null,
        YamlData::BadValue => {
            return Err(SyntaxError { line, column: None, reason: "invalid value".into() })
        }
    };
    Ok(Node { line, value })
}

fn scalar_value(scalar: &Scalar<'_>) -> Value {
    match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Number(i.to_string()),
        Scalar::FloatingPoint(f) => Value::Number(f.to_string()),
        Scalar::String(s) => Value::String(s.to_string()),
    }
}

/// Mapping keys as text: `200:` is the key "200". Keys that are lists or mappings never name
/// anything OpenAPI reads.
fn key_text(key: &MarkedYaml<'_>) -> String {
    match &key.data {
        YamlData::Value(Scalar::Null) => "null".to_owned(),
        YamlData::Value(Scalar::Boolean(b)) => b.to_string(),
        YamlData::Value(Scalar::Integer(i)) => i.to_string(),
        YamlData::Value(Scalar::FloatingPoint(f)) => f.to_string(),
        YamlData::Value(Scalar::String(s)) => s.to_string(),
        YamlData::Representation(text, _, _) => text.to_string(),
        YamlData::Tagged(_, inner) => key_text(inner),
        _ => "<complex key>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_give_the_same_tree_but_for_lines() {
        let json = r#"{"openapi": "3.1.0", "paths": {"/a": {"get": {"deprecated": true}}},
                       "n": 200, "list": [null, "x"]}"#;
        let yaml = "openapi: 3.1.0\npaths:\n  /a:\n    get:\n      deprecated: true\n\
                    n: 200\nlist: [~, x]\n";
        let strip = |node: &Node| -> Node {
            fn go(node: &Node) -> Node {
                let value = match &node.value {
                    Value::Seq(items) => Value::Seq(items.iter().map(go).collect()),
                    Value::Map(entries) => {
                        Value::Map(entries.iter().map(|(k, v)| (k.clone(), go(v))).collect())
                    }
                    other => other.clone(),
                };
                Node { line: None, value }
            }
            go(node)
        };
        let from_json = parse(Format::Json, json).unwrap();
        let from_yaml = parse(Format::Yaml, yaml).unwrap();
        assert_eq!(strip(&from_yaml), from_json);
        let deprecated =
            from_yaml.get("paths").and_then(|p| p.get("/a")).and_then(|a| a.get("get"));
        assert_eq!(deprecated.and_then(|d| d.get("deprecated")).and_then(|d| d.line), Some(5));
    }

    #[test]
    fn errors_have_lines() {
        let e = parse(Format::Json, "{\n  \"a\": 1,\n  \"b\": \n}").unwrap_err();
        assert_eq!((e.line, e.column), (Some(4), Some(1)));
        assert!(e.reason.starts_with("expected value"), "{}", e.reason);

        let e = parse(Format::Yaml, "a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert_eq!(e.line, Some(3));

        let e = parse(Format::Yaml, "a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.reason.contains("duplicated key"), "{}", e.reason);

        let e = parse(Format::Json, "{\"a\": 1,\n \"a\": 2}").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert_eq!(e.reason, "duplicate key \"a\"");

        let e = parse(Format::Yaml, "a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(parse(Format::Yaml, "").is_err());
        assert!(parse(Format::Yaml, &"[".repeat(300)).is_err());
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        assert!(parse(Format::Yaml, &deep).unwrap_err().reason.contains("recursion limit"));
        let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
        assert!(parse(Format::Json, &deep).unwrap_err().reason.contains("recursion limit"));
    }

    #[test]
    fn json_that_yaml_parsers_refuse() {
        let node = parse(Format::Json, r#"{"a": "\ud83d\ude00", "b": "\/"}"#).unwrap();
        assert_eq!(node.get("a").unwrap().value, Value::String("😀".into()));
        let tabs = parse(Format::Json, "{\n\t\"a\": 1\n}").unwrap();
        assert_eq!(tabs.get("a").unwrap().value, Value::Number("1".into()));
    }

    #[test]
    fn formats() {
        assert_eq!(Format::of("api.JSON", "a: 1"), Format::Json);
        assert_eq!(Format::of("api.yml", "{}"), Format::Yaml);
        assert_eq!(Format::of("api", "\u{feff}  {\"a\": 1}"), Format::Json);
        assert_eq!(Format::of("api", "openapi: 3.0.0"), Format::Yaml);
    }
}
