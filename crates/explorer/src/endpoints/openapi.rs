//! The API as documented: OpenAPI 3.0, 3.1 and 3.2 documents given with `--openapi`, in JSON
//! or YAML, and the matching of request paths against their path templates.
//!
//! Only what endpoints need is read: `servers` (the base paths and hosts the paths sit under,
//! at the document, path and operation levels), `paths` with their operations and
//! `deprecated` flags, and parameter names (for the flows suggested from an endpoint). Local
//! `$ref`s to path items and parameters are followed. The rest, schemas above all, is left
//! alone, so a document is not refused for anything the explorer does not use.
//!
//! No model crate covers both 3.0 and 3.1 (`openapiv3` reads 3.0 only, `oas3` 3.1 only, and
//! each refuses documents of the other), and a model would refuse documents for details of
//! their schemas; so the document is read into a generic tree ([`document`]) and the few
//! fields are taken from it, with the JSON path and, where the parser gives it, the line of
//! whatever is wrong.

mod document;
mod matcher;

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

pub use document::Format;
use document::{Node, Value};
use matcher::{Matcher, Pattern, Segment};

use super::template;

/// Methods of a path item.
const METHODS: [&str; 9] =
    ["get", "put", "post", "delete", "options", "head", "patch", "trace", "query"];

/// Base paths one server URL may stand for once its variables are expanded; past that, the
/// first ones are kept.
const MAX_SERVER_EXPANSIONS: usize = 64;

/// `$ref`s followed in a row before giving up on a loop.
const MAX_REF_HOPS: usize = 16;

/// A document that cannot be used, and where it goes wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// The file could not be read at all; `reason` says why.
    pub unreadable: bool,
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Where in the document, as a JSON path: `paths["/orders"].get.deprecated`.
    pub at: Option<String>,
    pub reason: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.unreadable {
            return write!(f, "cannot read OpenAPI document {}: {}", self.file, self.reason);
        }
        write!(f, "invalid OpenAPI document: {}", self.reason)?;
        if let Some(at) = &self.at {
            write!(f, " at {at}")?;
        }
        write!(f, " in {}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

/// A documented operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub method: String,
    /// The full path template: the server's base path and the document's path.
    pub template: String,
    pub deprecated: bool,
    /// Names of the operation's parameters and of its path item's, in document order.
    pub parameters: Vec<String>,
    /// Index of the document in [`OpenApi::files`].
    pub file: usize,
}

/// What a request matched in the documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// An operation for the request's method.
    Operation(&'a Operation),
    /// A documented path, but not for this method: the template, from the document.
    Path(&'a str),
}

/// The documents given with `--openapi`, ready to match requests.
#[derive(Debug, Default)]
pub struct OpenApi {
    files: Vec<String>,
    operations: Vec<Operation>,
    matcher: Matcher,
}

impl OpenApi {
    /// Reads the documents, in order: where two define the same operation, the first wins.
    pub fn load<P: AsRef<Path>>(files: &[P]) -> Result<OpenApi, SpecError> {
        let mut texts = Vec::with_capacity(files.len());
        for file in files {
            let name = file.as_ref().display().to_string();
            let text = std::fs::read_to_string(file.as_ref()).map_err(|e| SpecError {
                unreadable: true,
                file: name.clone(),
                line: None,
                column: None,
                at: None,
                reason: e.to_string(),
            })?;
            texts.push((name, text));
        }
        OpenApi::from_texts(texts.iter().map(|(name, text)| (name.as_str(), text.as_str())))
    }

    /// Reads documents already in memory, as (name, text); the name gives the format when it
    /// ends in `.json`, `.yaml` or `.yml`, the content otherwise.
    pub fn from_texts<'a>(
        documents: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<OpenApi, SpecError> {
        let mut api = OpenApi::default();
        for (name, text) in documents {
            let root = document::parse(Format::of(name, text), text).map_err(|e| SpecError {
                unreadable: false,
                file: name.to_owned(),
                line: e.line,
                column: e.column,
                at: None,
                reason: e.reason,
            })?;
            let file = api.files.len();
            api.files.push(name.to_owned());
            let reader = Reader { root: &root, file: name };
            for found in reader.operations()? {
                api.add(file, found);
            }
        }
        api.matcher.finish();
        Ok(api)
    }

    fn add(&mut self, file: usize, found: Found) {
        let mut segments: Vec<Segment> =
            found.base.iter().map(|s| Segment::Literal(s.clone())).collect();
        segments.extend(found.path.segments.iter().cloned());
        let mut text: Vec<Cow<'_, str>> =
            found.base.iter().map(|s| Cow::Owned(template::encode(s))).collect();
        text.extend(found.path.text.iter().map(|s| Cow::Borrowed(s.as_str())));
        let template = format!("/{}", text.join("/"));

        let index = self.operations.len();
        let (entry, new) =
            self.matcher.insert(found.host.as_deref(), segments, &template, &found.method, index);
        if new {
            self.operations.push(Operation {
                method: found.method,
                template: self.matcher.entry(entry).template.clone(),
                deprecated: found.deprecated,
                parameters: found.parameters,
                file,
            });
        }
    }

    /// The documents, in the order given.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Every documented operation, once each: what was never called is `unused`.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// What a request matches: `host` is the record's server, `segments` its path as
    /// [`template::segments`] splits it.
    pub fn lookup(
        &self,
        host: &str,
        method: &str,
        segments: &[Cow<'_, [u8]>],
    ) -> Option<Lookup<'_>> {
        let found = self.matcher.find(host, method, segments)?;
        Some(match found.operation {
            Some(operation) => Lookup::Operation(&self.operations[operation]),
            None => Lookup::Path(&self.matcher.entry(found.entry).template),
        })
    }
}

/// An operation as read from a document, for one of its servers.
struct Found {
    method: String,
    host: Option<String>,
    /// Decoded segments of the server's base path.
    base: Vec<Vec<u8>>,
    path: PathTemplate,
    deprecated: bool,
    parameters: Vec<String>,
}

/// A path template of the document: its segments as written, for display, and for matching.
#[derive(Clone, Debug)]
struct PathTemplate {
    text: Vec<String>,
    segments: Vec<Segment>,
}

impl PathTemplate {
    /// Splits `/orders/{orderId}/items.{format}`; empty segments (a trailing slash) are
    /// dropped, as request paths' are.
    fn parse(path: &str) -> Result<PathTemplate, String> {
        let mut text = Vec::new();
        let mut segments = Vec::new();
        for raw in path.split('/').filter(|s| !s.is_empty()) {
            text.push(raw.to_owned());
            let mut parts: Vec<Option<Vec<u8>>> = Vec::new();
            let mut rest = raw;
            while let Some(open) = rest.find(['{', '}']) {
                if rest.as_bytes()[open] == b'}' {
                    return Err(format!("\"}}\" without \"{{\" in path template \"{path}\""));
                }
                if open > 0 {
                    parts.push(Some(decode(&rest[..open])));
                }
                let after = &rest[open + 1..];
                let close = after
                    .find(['{', '}'])
                    .filter(|&at| after.as_bytes()[at] == b'}')
                    .ok_or_else(|| format!("unclosed \"{{\" in path template \"{path}\""))?;
                if close == 0 {
                    return Err(format!("empty parameter name in path template \"{path}\""));
                }
                parts.push(None);
                rest = &after[close + 1..];
            }
            if parts.is_empty() {
                segments.push(Segment::Literal(decode(raw)));
            } else {
                if !rest.is_empty() {
                    parts.push(Some(decode(rest)));
                }
                segments.push(Segment::Pattern(Pattern::new(parts)));
            }
        }
        Ok(PathTemplate { text, segments })
    }
}

fn decode(text: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(text).collect()
}

/// A server: the host it names, if any, and its base path.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Server {
    host: Option<String>,
    base: Vec<Vec<u8>>,
}

/// Walks one document.
struct Reader<'d> {
    root: &'d Node,
    file: &'d str,
}

/// A JSON path for messages: `.name` for plain keys, `["/orders/{id}"]` for others.
fn key(at: &str, key: &str) -> String {
    let plain = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (at.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{at}.{key}"),
        (_, false) => format!("{at}[{}]", serde_json::Value::String(key.to_owned())),
    }
}

fn index(at: &str, index: usize) -> String {
    format!("{at}[{index}]")
}

impl<'d> Reader<'d> {
    fn error(&self, node: Option<&Node>, at: &str, reason: impl Into<String>) -> SpecError {
        SpecError {
            unreadable: false,
            file: self.file.to_owned(),
            line: node.and_then(|n| n.line),
            column: None,
            at: (!at.is_empty()).then(|| at.to_owned()),
            reason: reason.into(),
        }
    }

    fn map(&self, node: &'d Node, at: &str) -> Result<&'d [(String, Node)], SpecError> {
        match &node.value {
            Value::Map(entries) => Ok(entries),
            _ => Err(self.error(
                Some(node),
                at,
                format!("expected a mapping, found {}", node.kind()),
            )),
        }
    }

    fn seq(&self, node: &'d Node, at: &str) -> Result<&'d [Node], SpecError> {
        match &node.value {
            Value::Seq(items) => Ok(items),
            _ => Err(self.error(Some(node), at, format!("expected a list, found {}", node.kind()))),
        }
    }

    fn string(&self, node: &'d Node, at: &str) -> Result<&'d str, SpecError> {
        match &node.value {
            Value::String(text) => Ok(text),
            _ => {
                Err(self.error(Some(node), at, format!("expected a string, found {}", node.kind())))
            }
        }
    }

    /// A scalar as text: server variable values are strings, but YAML reads `8443` as a number.
    fn scalar(&self, node: &'d Node, at: &str) -> Result<&'d str, SpecError> {
        match &node.value {
            Value::String(text) | Value::Number(text) => Ok(text),
            _ => {
                Err(self.error(Some(node), at, format!("expected a string, found {}", node.kind())))
            }
        }
    }

    /// Follows a local `$ref` (`#/components/pathItems/Orders`) to what it names.
    fn resolve(&self, mut node: &'d Node, at: &str) -> Result<&'d Node, SpecError> {
        for _ in 0..MAX_REF_HOPS {
            let Some(reference) = node.get("$ref") else {
                return Ok(node);
            };
            let ref_at = key(at, "$ref");
            let reference = self.string(reference, &ref_at)?;
            let Some(pointer) = reference.strip_prefix('#') else {
                return Err(self.error(
                    Some(node),
                    &ref_at,
                    format!(
                        "\"{reference}\" refers to another document; bundle the documents into \
                         one file"
                    ),
                ));
            };
            node = self.pointer(pointer).ok_or_else(|| {
                self.error(Some(node), &ref_at, format!("\"{reference}\" names nothing"))
            })?;
        }
        Err(self.error(Some(node), at, "$ref loop"))
    }

    /// RFC 6901 JSON pointer into the document.
    fn pointer(&self, pointer: &str) -> Option<&'d Node> {
        let mut node = self.root;
        if pointer.is_empty() {
            return Some(node);
        }
        for token in pointer.strip_prefix('/')?.split('/') {
            let token = percent_encoding::percent_decode_str(token).decode_utf8().ok()?;
            let token = token.replace("~1", "/").replace("~0", "~");
            node = match &node.value {
                Value::Map(entries) => entries.iter().find(|(k, _)| *k == token).map(|(_, v)| v)?,
                Value::Seq(items) => items.get(token.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }

    fn operations(&self) -> Result<Vec<Found>, SpecError> {
        let root = self.root;
        self.map(root, "")?;
        if root.get("swagger").is_some() {
            return Err(self.error(
                root.get("swagger"),
                "swagger",
                "Swagger 2.0 is not supported: convert the document to OpenAPI 3",
            ));
        }
        let version = root
            .get("openapi")
            .ok_or_else(|| self.error(Some(root), "", "no \"openapi\" version"))?;
        let text = self.scalar(version, "openapi")?;
        if !text.starts_with("3.") {
            return Err(self.error(
                Some(version),
                "openapi",
                format!("version \"{text}\" is not supported, only 3.x is"),
            ));
        }
        let servers = self.servers(root.get("servers"), "servers", None)?;
        let mut found = Vec::new();
        let Some(paths) = root.get("paths") else {
            return Ok(found);
        };
        for (path, item) in self.map(paths, "paths")? {
            if path.starts_with("x-") {
                continue;
            }
            let at = key("paths", path);
            if !path.starts_with('/') {
                return Err(self.error(Some(item), &at, "a path must start with \"/\""));
            }
            let template = PathTemplate::parse(path).map_err(|e| self.error(Some(item), &at, e))?;
            let item = self.resolve(item, &at)?;
            self.map(item, &at)?;
            let servers =
                self.servers(item.get("servers"), &key(&at, "servers"), Some(servers.as_slice()))?;
            let parameters = self.parameters(item, &at)?;
            let mut operations: Vec<(String, &Node, String)> = Vec::new();
            for (name, operation) in self.map(item, &at)? {
                if METHODS.contains(&name.as_str()) {
                    operations.push((name.to_ascii_uppercase(), operation, key(&at, name)));
                }
            }
            // 3.2: methods beyond the fixed ones, by their exact name.
            if let Some(more) = item.get("additionalOperations") {
                let more_at = key(&at, "additionalOperations");
                for (name, operation) in self.map(more, &more_at)? {
                    operations.push((name.clone(), operation, key(&more_at, name)));
                }
            }
            for (method, operation, op_at) in operations {
                found.extend(self.operation(
                    &method,
                    operation,
                    &op_at,
                    &template,
                    &servers,
                    &parameters,
                )?);
            }
        }
        Ok(found)
    }

    #[allow(clippy::too_many_arguments)]
    fn operation(
        &self,
        method: &str,
        operation: &'d Node,
        at: &str,
        template: &PathTemplate,
        servers: &[Server],
        path_parameters: &[String],
    ) -> Result<Vec<Found>, SpecError> {
        self.map(operation, at)?;
        let deprecated = match operation.get("deprecated") {
            None => false,
            Some(Node { value: Value::Bool(b), .. }) => *b,
            Some(other) => {
                return Err(self.error(
                    Some(other),
                    &key(at, "deprecated"),
                    format!("expected true or false, found {}", other.kind()),
                ))
            }
        };
        let servers = self.servers(operation.get("servers"), &key(at, "servers"), Some(servers))?;
        let mut parameters = path_parameters.to_vec();
        for name in self.parameters(operation, at)? {
            if !parameters.contains(&name) {
                parameters.push(name);
            }
        }
        Ok(servers
            .into_iter()
            .map(|server| Found {
                method: template::method(method).to_owned(),
                host: server.host,
                base: server.base,
                path: template.clone(),
                deprecated,
                parameters: parameters.clone(),
            })
            .collect())
    }

    /// The names in a path item's or operation's `parameters`.
    fn parameters(&self, owner: &'d Node, at: &str) -> Result<Vec<String>, SpecError> {
        let Some(list) = owner.get("parameters") else {
            return Ok(Vec::new());
        };
        let at = key(at, "parameters");
        let mut names = Vec::new();
        for (i, parameter) in self.seq(list, &at)?.iter().enumerate() {
            let at = index(&at, i);
            let parameter = self.resolve(parameter, &at)?;
            self.map(parameter, &at)?;
            let name = parameter
                .get("name")
                .ok_or_else(|| self.error(Some(parameter), &at, "a parameter without \"name\""))?;
            let name = self.string(name, &key(&at, "name"))?;
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    /// The servers at one level; `inherited` when the level has none (the document level
    /// inherits `/`).
    fn servers(
        &self,
        node: Option<&'d Node>,
        at: &str,
        inherited: Option<&[Server]>,
    ) -> Result<Vec<Server>, SpecError> {
        let items = match node {
            Some(node) => self.seq(node, at)?,
            None => &[],
        };
        if items.is_empty() {
            return Ok(inherited
                .map(<[Server]>::to_vec)
                .unwrap_or_else(|| vec![Server { host: None, base: Vec::new() }]));
        }
        let mut servers: Vec<Server> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = index(at, i);
            self.map(item, &at)?;
            let url_at = key(&at, "url");
            let url = item
                .get("url")
                .ok_or_else(|| self.error(Some(item), &at, "a server without \"url\""))?;
            let url_node = url;
            let url = self.string(url, &url_at)?;
            for expanded in self.expand(url, item, &at)? {
                let server = parse_server(&expanded).map_err(|reason| {
                    self.error(Some(url_node), &url_at, format!("{reason} in \"{url}\""))
                })?;
                if !servers.contains(&server) {
                    servers.push(server);
                }
            }
        }
        Ok(servers)
    }

    /// The URLs a server URL stands for: each `{variable}` takes the values of its `enum`, or
    /// its `default` when it has none.
    fn expand(&self, url: &str, server: &'d Node, at: &str) -> Result<Vec<String>, SpecError> {
        let mut urls = vec![String::new()];
        let mut rest = url;
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').map(|c| open + c).ok_or_else(|| {
                self.error(
                    server.get("url"),
                    &key(at, "url"),
                    format!("unclosed \"{{\" in \"{url}\""),
                )
            })?;
            let name = &rest[open + 1..close];
            let values = self.variable(server, at, name)?;
            let mut next = Vec::new();
            'outer: for prefix in &urls {
                for value in &values {
                    if next.len() == MAX_SERVER_EXPANSIONS {
                        break 'outer;
                    }
                    next.push(format!("{prefix}{}{value}", &rest[..open]));
                }
            }
            urls = next;
            rest = &rest[close + 1..];
        }
        for url in &mut urls {
            url.push_str(rest);
        }
        Ok(urls)
    }

    fn variable(&self, server: &'d Node, at: &str, name: &str) -> Result<Vec<String>, SpecError> {
        let vars_at = key(at, "variables");
        let variable =
            server.get("variables").and_then(|vars| vars.get(name)).ok_or_else(|| {
                self.error(
                    server.get("url"),
                    &key(at, "url"),
                    format!("server variable \"{name}\" is not defined"),
                )
            })?;
        let var_at = key(&vars_at, name);
        self.map(variable, &var_at)?;
        let mut values = Vec::new();
        if let Some(list) = variable.get("enum") {
            let enum_at = key(&var_at, "enum");
            for (i, value) in self.seq(list, &enum_at)?.iter().enumerate() {
                values.push(self.scalar(value, &index(&enum_at, i))?.to_owned());
            }
        }
        if values.is_empty() {
            let default = variable.get("default").ok_or_else(|| {
                self.error(Some(variable), &var_at, "a server variable without \"default\"")
            })?;
            values.push(self.scalar(default, &key(&var_at, "default"))?.to_owned());
        }
        Ok(values)
    }
}

/// The host and base path of a server URL: absolute (`https://api.example.com/v1`),
/// scheme-relative (`//api.example.com/v1`) or a path (`/v1`, `v1`).
fn parse_server(url: &str) -> Result<Server, String> {
    let absolute = if url.contains("://") {
        Some(Cow::Borrowed(url))
    } else if url.starts_with("//") {
        Some(Cow::Owned(format!("http:{url}")))
    } else {
        None
    };
    let Some(absolute) = absolute else {
        let base = template::segments(url).into_iter().map(Cow::into_owned).collect();
        return Ok(Server { host: None, base });
    };
    let parsed = url::Url::parse(&absolute).map_err(|e| format!("invalid URL ({e})"))?;
    let host = parsed.host_str().map(|h| h.trim_end_matches('.').to_ascii_lowercase());
    let base = template::segments(parsed.path()).into_iter().map(Cow::into_owned).collect();
    Ok(Server { host, base })
}

#[cfg(test)]
mod tests;
