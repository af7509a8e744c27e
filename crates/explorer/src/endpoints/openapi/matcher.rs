//! Finding the OpenAPI path template a request path matches.
//!
//! Templates are kept in a tree of segments. A request walks it depth first, trying at each
//! level the literal segment first, then segments that mix literal text and parameters
//! (`{name}.{ext}`, longest literal text first), then plain parameters: the first template
//! reached is the most specific one, segment by segment from the left, as OpenAPI wants
//! (`/orders/mine` before `/orders/{id}`). Each node is visited at most once, so a lookup
//! costs at most the size of the tree, whatever the request.

use std::borrow::Cow;
use std::collections::HashMap;

use memchr::memmem;

/// One segment of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Literal text, percent-decoded.
    Literal(Vec<u8>),
    Pattern(Pattern),
}

/// A segment with parameters: `prefix`, then for each run of parameters the least number of
/// bytes they take (one per parameter) and the literal text after it. Parameter names do not
/// matter for matching, so `{id}` and `{orderId}` are the same pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    prefix: Vec<u8>,
    gaps: Vec<(usize, Vec<u8>)>,
}

impl Pattern {
    /// From the parts of a segment, literal text (`Some`) and parameters (`None`), with at
    /// least one parameter.
    pub fn new(parts: Vec<Option<Vec<u8>>>) -> Pattern {
        let mut prefix = Vec::new();
        let mut gaps: Vec<(usize, Vec<u8>)> = Vec::new();
        for part in parts {
            match (part, gaps.last_mut()) {
                (None, Some((min, text))) if text.is_empty() => *min += 1,
                (None, _) => gaps.push((1, Vec::new())),
                (Some(text), Some((_, after))) => after.extend_from_slice(&text),
                (Some(text), None) => prefix.extend_from_slice(&text),
            }
        }
        Pattern { prefix, gaps }
    }

    fn literal_len(&self) -> usize {
        self.prefix.len() + self.gaps.iter().map(|(_, text)| text.len()).sum::<usize>()
    }

    /// Whether the segment matches, each parameter taking one byte or more. Taking each
    /// literal at its leftmost place leaves the most room to what follows, so one pass
    /// decides.
    pub fn matches(&self, segment: &[u8]) -> bool {
        let Some(rest) = segment.strip_prefix(self.prefix.as_slice()) else {
            return false;
        };
        let Some(((last_min, suffix), inner)) = self.gaps.split_last() else {
            return rest.is_empty();
        };
        let Some(mut body) = rest.strip_suffix(suffix.as_slice()) else {
            return false;
        };
        for (min, text) in inner {
            if body.len() < *min {
                return false;
            }
            match memmem::find(&body[*min..], text) {
                Some(at) => body = &body[min + at + text.len()..],
                None => return false,
            }
        }
        body.len() >= *last_min
    }
}

#[derive(Debug, Default)]
struct Node {
    literals: HashMap<Vec<u8>, Node>,
    /// Most literal text first; plain parameters last.
    patterns: Vec<(Pattern, Node)>,
    /// The entry of the template that ends here.
    end: Option<usize>,
}

impl Node {
    fn child(&mut self, segment: &Segment) -> &mut Node {
        match segment {
            Segment::Literal(text) => self.literals.entry(text.clone()).or_default(),
            Segment::Pattern(pattern) => {
                let at = match self.patterns.iter().position(|(p, _)| p == pattern) {
                    Some(at) => at,
                    None => {
                        self.patterns.push((pattern.clone(), Node::default()));
                        // Stable: equally specific patterns keep the order of the documents.
                        self.patterns.sort_by_key(|(p, _)| std::cmp::Reverse(p.literal_len()));
                        self.patterns.iter().position(|(p, _)| p == pattern).unwrap_or(0)
                    }
                };
                &mut self.patterns[at].1
            }
        }
    }
}

/// A template and the operations defined on it.
#[derive(Debug)]
pub struct Entry {
    pub template: String,
    /// Method and the index of its operation.
    pub methods: Vec<(String, usize)>,
}

impl Entry {
    /// The operation for a method; `HEAD` falls back to `GET`, as servers answer it.
    fn operation(&self, method: &str) -> Option<usize> {
        let find = |m: &str| self.methods.iter().find(|(name, _)| name == m).map(|&(_, op)| op);
        find(method).or_else(|| if method == "HEAD" { find("GET") } else { None })
    }
}

/// What a request path matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub entry: usize,
    /// The operation for the request's method, if the template has one.
    pub operation: Option<usize>,
}

/// The templates of all documents: one tree with all of them, and one per host named in the
/// documents' `servers`, holding that host's templates and those of servers without a host.
#[derive(Debug, Default)]
pub struct Matcher {
    entries: Vec<Entry>,
    all: Node,
    by_host: HashMap<String, Node>,
    /// (host, segments, entry) of every template, to build the per-host trees.
    placed: Vec<(Option<String>, Vec<Segment>, usize)>,
    depth: usize,
}

impl Matcher {
    /// Adds an operation. Returns the template's entry and whether the method was new on it;
    /// when it was not, the first document's operation stays.
    pub fn insert(
        &mut self,
        host: Option<&str>,
        segments: Vec<Segment>,
        template: &str,
        method: &str,
        operation: usize,
    ) -> (usize, bool) {
        let mut node = &mut self.all;
        for segment in &segments {
            node = node.child(segment);
        }
        let entry = *node.end.get_or_insert_with(|| {
            self.entries.push(Entry { template: template.to_owned(), methods: Vec::new() });
            self.entries.len() - 1
        });
        let methods = &mut self.entries[entry].methods;
        let new = !methods.iter().any(|(m, _)| m == method);
        if new {
            methods.push((method.to_owned(), operation));
        }
        self.depth = self.depth.max(segments.len());
        let host = host.map(str::to_owned);
        if !self.placed.iter().any(|(h, s, _)| *h == host && *s == segments) {
            self.placed.push((host, segments, entry));
        }
        (entry, new)
    }

    /// Builds the per-host trees, once every operation is in.
    pub fn finish(&mut self) {
        let hosts: Vec<String> = self.placed.iter().filter_map(|(h, _, _)| h.clone()).collect();
        for host in hosts {
            if self.by_host.contains_key(&host) {
                continue;
            }
            let mut root = Node::default();
            for (h, segments, entry) in &self.placed {
                if h.as_ref().is_none_or(|h| *h == host) {
                    let mut node = &mut root;
                    for segment in segments {
                        node = node.child(segment);
                    }
                    node.end.get_or_insert(*entry);
                }
            }
            self.by_host.insert(host, root);
        }
        self.placed.clear();
    }

    pub fn entry(&self, entry: usize) -> &Entry {
        &self.entries[entry]
    }

    /// The most specific template that a request path's segments match, preferring one that
    /// defines the method. `host` is the request's host: documents that name it in their
    /// `servers` are the only ones asked; when none names it, all are.
    pub fn find(&self, host: &str, method: &str, segments: &[Cow<'_, [u8]>]) -> Option<Found> {
        if segments.len() > self.depth {
            return None;
        }
        let root = self.by_host.get(host).unwrap_or(&self.all);
        let mut first = None;
        self.walk(root, segments, method, &mut first)
            .or_else(|| first.map(|entry| Found { entry, operation: None }))
    }

    fn walk(
        &self,
        node: &Node,
        segments: &[Cow<'_, [u8]>],
        method: &str,
        first: &mut Option<usize>,
    ) -> Option<Found> {
        let Some((segment, rest)) = segments.split_first() else {
            let entry = node.end?;
            if let Some(operation) = self.entries[entry].operation(method) {
                return Some(Found { entry, operation: Some(operation) });
            }
            first.get_or_insert(entry);
            return None;
        };
        if let Some(child) = node.literals.get(segment.as_ref()) {
            if let Some(found) = self.walk(child, rest, method, first) {
                return Some(found);
            }
        }
        for (pattern, child) in &node.patterns {
            if pattern.matches(segment) {
                if let Some(found) = self.walk(child, rest, method, first) {
                    return Some(found);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(text: &str) -> Option<Vec<u8>> {
        Some(text.as_bytes().to_vec())
    }

    #[test]
    fn patterns() {
        let ext = Pattern::new(vec![None, lit("."), None]);
        assert!(ext.matches(b"a.b"));
        assert!(ext.matches(b"report.2024.pdf"));
        assert!(!ext.matches(b".pdf"));
        assert!(!ext.matches(b"report."));
        assert!(!ext.matches(b"report"));

        let report = Pattern::new(vec![lit("report-"), None, lit(".csv")]);
        assert!(report.matches(b"report-7.csv"));
        assert!(!report.matches(b"report-.csv"));
        assert!(!report.matches(b"report-7.json"));

        let two = Pattern::new(vec![None, None]);
        assert!(!two.matches(b"a"));
        assert!(two.matches(b"ab"));

        let overlap = Pattern::new(vec![lit("a"), None, lit("a")]);
        assert!(!overlap.matches(b"aa"));
        assert!(overlap.matches(b"aba"));

        let middle = Pattern::new(vec![None, lit("-"), None, lit("-"), None]);
        assert!(middle.matches(b"a-b-c"));
        assert!(middle.matches(b"a--b-c"));
        assert!(!middle.matches(b"a-b-"));
        assert!(!middle.matches(b"a--"));

        assert_eq!(Pattern::new(vec![None]), Pattern::new(vec![None]));
        assert!(Pattern::new(vec![None]).matches(b"x"));
        assert!(!Pattern::new(vec![None]).matches(b""));
    }
}
