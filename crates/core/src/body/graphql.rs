//! GraphQL requests.
//!
//! A GraphQL request is the document `{query, operationName, variables}`, sent as a JSON body,
//! as an `application/graphql` body holding the query text, or as query-string arguments.
//! Pointers address that document, and `/operation` names the first operation in the query
//! text (`mutation Login`), which is what an analyst wants to see per request.

use memchr::{memchr2, memmem};

use super::form;
use super::json::{self, Lookup};
use super::pointer::Pointer;
use super::Extent;

/// The type and name of the first operation in a query text: `mutation Login`, `query` for an
/// anonymous query or the `{ ... }` shorthand. Fragment definitions before it are skipped.
/// `None` when the text does not start like an executable document or, when it is cut, is
/// cut off before the operation's name ends.
pub fn operation(query: &[u8], extent: Extent) -> Option<String> {
    let mut lexer = Lexer { text: query, pos: 0, extent };
    loop {
        match lexer.next()? {
            Token::Punct(b'{') => return Some("query".to_owned()),
            Token::Name("fragment") => lexer.skip_fragment()?,
            Token::Name(kind @ ("query" | "mutation" | "subscription")) => {
                return match lexer.next()? {
                    Token::Name(name) => Some(format!("{kind} {name}")),
                    Token::Punct(b'(' | b'@' | b'{') => Some(kind.to_owned()),
                    _ => None,
                };
            }
            _ => return None,
        }
    }
}

/// Values from a JSON body. When its top-level object has a string `query`, `/operation` is
/// derived from it; otherwise `/operation` is an ordinary pointer.
pub(crate) fn extract_json(
    body: &[u8],
    extent: Extent,
    pointers: &[&Pointer],
) -> Vec<Option<String>> {
    if !pointers.iter().any(|pointer| is_operation(pointer)) {
        return json::extract(body, extent, pointers);
    }

    let query_path = [String::from("query")];
    let mut paths: Vec<&[String]> = pointers.iter().map(|pointer| pointer.tokens()).collect();
    paths.push(&query_path);
    let mut found = json::lookup(body, extent, &paths);

    // `Some` when `/operation` is derived from the query text rather than read as a member.
    let derived = match found.pop().unwrap_or(Lookup::Undecided) {
        // The string was read to its closing quote: the text is whole.
        Lookup::String(query) => Some(operation(query.as_bytes(), Extent::Whole)),
        // Cut off before `query` was decided: a member named `operation` may not be read.
        Lookup::Undecided => Some(None),
        Lookup::Missing | Lookup::Other(_) => None,
    };

    found
        .into_iter()
        .zip(pointers)
        .map(|(value, pointer)| match &derived {
            Some(operation) if is_operation(pointer) => operation.clone(),
            _ => value.into_text(),
        })
        .collect()
}

/// Values from an `application/graphql` body: the body is the query text, `operationName` and
/// `variables` come from the query string. A cut text gives no `/query` (nor the document),
/// and `/operation` only when its name ends before the cut.
pub(crate) fn extract_text(
    body: &[u8],
    extent: Extent,
    args: &[u8],
    pointers: &[&Pointer],
) -> Vec<Option<String>> {
    let (_, operation_name, variables) = request_args(args);
    let query = Query { text: &String::from_utf8_lossy(body), extent };
    extract_document(query, operation_name.as_deref(), variables.as_deref(), pointers)
}

/// Values from a GraphQL GET: the query string holds `query`, `operationName` and `variables`.
/// `None` when it has no `query`.
pub(crate) fn extract_args(args: &[u8], pointers: &[&Pointer]) -> Option<Vec<Option<String>>> {
    let (query, operation_name, variables) = request_args(args);
    let query = Query { text: &query?, extent: Extent::Whole };
    Some(extract_document(query, operation_name.as_deref(), variables.as_deref(), pointers))
}

/// The query text of a GraphQL request, and whether it is whole.
#[derive(Clone, Copy)]
struct Query<'a> {
    text: &'a str,
    extent: Extent,
}

impl<'a> Query<'a> {
    fn whole(self) -> Option<&'a str> {
        (self.extent == Extent::Whole).then_some(self.text)
    }
}

/// The `query`, `operationName` and `variables` arguments, decoded.
fn request_args(args: &[u8]) -> (Option<String>, Option<String>, Option<String>) {
    let names = [Some("query"), Some("operationName"), Some("variables")];
    let mut values = form::fields(args, Extent::Whole, &names).into_iter();
    let mut next = || values.next().flatten();
    (next(), next(), next())
}

/// Resolves pointers against the document `{query, operationName, variables}` assembled from
/// its parts; `variables` is JSON text, walked once for all pointers that reach into it.
fn extract_document(
    query: Query<'_>,
    operation_name: Option<&str>,
    variables: Option<&str>,
    pointers: &[&Pointer],
) -> Vec<Option<String>> {
    let paths: Vec<&[String]> =
        pointers.iter().filter_map(|pointer| variables_path(pointer.tokens())).collect();
    let mut in_variables = match variables {
        Some(variables) => json::lookup(variables.as_bytes(), Extent::Whole, &paths),
        None => vec![Lookup::Undecided; paths.len()],
    }
    .into_iter();

    pointers
        .iter()
        .map(|pointer| match pointer.tokens() {
            [] => {
                let variables = in_variables.next().and_then(Lookup::into_text);
                let query = query.whole()?;
                Some(document_json(query, operation_name, variables.as_deref()))
            }
            [name, ..] if name == "variables" => in_variables.next().and_then(Lookup::into_text),
            [name] if name == "query" => query.whole().map(str::to_owned),
            [name] if name == "operationName" => operation_name.map(str::to_owned),
            [name] if name == "operation" => operation(query.text.as_bytes(), query.extent),
            _ => None,
        })
        .collect()
}

/// Where a pointer leads inside `variables`; the whole document includes all of them.
fn variables_path(tokens: &[String]) -> Option<&[String]> {
    match tokens {
        [] => Some(tokens),
        [name, rest @ ..] if name == "variables" => Some(rest),
        _ => None,
    }
}

/// The assembled document as compact JSON, for the `""` pointer.
fn document_json(query: &str, operation_name: Option<&str>, variables: Option<&str>) -> String {
    let quote = |text: &str| serde_json::Value::from(text).to_string();
    let mut out = format!(r#"{{"query":{}"#, quote(query));
    if let Some(name) = operation_name {
        out.push_str(&format!(r#","operationName":{}"#, quote(name)));
    }
    if let Some(variables) = variables {
        out.push_str(&format!(r#","variables":{variables}"#));
    }
    out.push('}');
    out
}

fn is_operation(pointer: &Pointer) -> bool {
    matches!(pointer.tokens(), [name] if name == "operation")
}

enum Token<'a> {
    Name(&'a str),
    /// Any other single byte outside strings and comments.
    Punct(u8),
    String,
}

/// Just enough of the GraphQL lexical grammar to find definitions: names, strings (which may
/// hold braces), and the ignored tokens between them.
struct Lexer<'a> {
    text: &'a [u8],
    pos: usize,
    extent: Extent,
}

impl<'a> Lexer<'a> {
    /// The next token; `None` at the end of the text or where a token is cut off by it.
    fn next(&mut self) -> Option<Token<'a>> {
        self.skip_ignored();
        let rest = self.text.get(self.pos..)?;
        match rest.first()? {
            b'_' | b'A'..=b'Z' | b'a'..=b'z' => {
                let end = rest.iter().position(
                    |byte| !matches!(byte, b'_' | b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z'),
                );
                // A name that reaches the end of a cut text may go on past it.
                let len = match (end, self.extent) {
                    (Some(len), _) => len,
                    (None, Extent::Whole) => rest.len(),
                    (None, Extent::Cut) => return None,
                };
                self.pos += len;
                // Names are ASCII, so this never fails.
                core::str::from_utf8(&rest[..len]).ok().map(Token::Name)
            }
            b'"' => {
                self.skip_string()?;
                Some(Token::String)
            }
            &byte => {
                self.pos += 1;
                Some(Token::Punct(byte))
            }
        }
    }

    /// Whitespace, line terminators, commas, byte order marks and comments.
    fn skip_ignored(&mut self) {
        loop {
            match self.text.get(self.pos..) {
                Some([b' ' | b'\t' | b'\n' | b'\r' | b',', ..]) => self.pos += 1,
                Some([0xef, 0xbb, 0xbf, ..]) => self.pos += 3,
                Some([b'#', comment @ ..]) => {
                    self.pos += 1 + memchr2(b'\n', b'\r', comment).unwrap_or(comment.len());
                }
                _ => return,
            }
        }
    }

    /// Skips a string or block string starting at the cursor.
    fn skip_string(&mut self) -> Option<()> {
        if self.text.get(self.pos..)?.starts_with(b"\"\"\"") {
            self.pos += 3;
            loop {
                let rest = self.text.get(self.pos..)?;
                let at = memmem::find(rest, b"\"\"\"")?;
                self.pos += at + 3;
                // `\"""` is an escaped delimiter inside a block string.
                if at == 0 || rest[at - 1] != b'\\' {
                    return Some(());
                }
            }
        }
        self.pos += 1;
        loop {
            let rest = self.text.get(self.pos..)?;
            let at = memchr2(b'"', b'\\', rest)?;
            if rest[at] == b'"' {
                self.pos += at + 1;
                return Some(());
            }
            self.pos += at + 2;
        }
    }

    /// Skips `fragment Name on Type @directives { ... }`. The selection set is the first brace
    /// outside parentheses, as directive arguments may hold object values.
    fn skip_fragment(&mut self) -> Option<()> {
        let mut parens = 0usize;
        loop {
            match self.next()? {
                Token::Punct(b'(') => parens += 1,
                Token::Punct(b')') => parens = parens.saturating_sub(1),
                Token::Punct(b'{') if parens == 0 => break,
                _ => {}
            }
        }
        let mut braces = 1usize;
        while braces > 0 {
            match self.next()? {
                Token::Punct(b'{') => braces += 1,
                Token::Punct(b'}') => braces -= 1,
                _ => {}
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn op(query: &str) -> Option<String> {
        operation(query.as_bytes(), Extent::Cut)
    }

    #[test]
    fn names_the_operation_type_and_name() {
        assert_eq!(
            op("mutation Login($u: String!) { login(u: $u) { token } }").as_deref(),
            Some("mutation Login")
        );
        assert_eq!(op("query GetUser { user { id } }").as_deref(), Some("query GetUser"));
        assert_eq!(
            op("subscription OnEvent { event { id } }").as_deref(),
            Some("subscription OnEvent")
        );
        assert_eq!(op("query _get_2{a}").as_deref(), Some("query _get_2"));
    }

    #[test]
    fn anonymous_operations_are_their_type() {
        assert_eq!(op("{ user { id } }").as_deref(), Some("query"));
        assert_eq!(op("query { a }").as_deref(), Some("query"));
        assert_eq!(op("query($id: ID) { a }").as_deref(), Some("query"));
        assert_eq!(op("mutation @trace { a }").as_deref(), Some("mutation"));
    }

    #[test]
    fn skips_comments_commas_and_byte_order_marks() {
        let query = "\u{feff}# query Hidden { a }\n,, # { brace in a comment\r\n  mutation\n# c\nLogin { x }";
        assert_eq!(op(query).as_deref(), Some("mutation Login"));
        assert_eq!(op("#only a comment"), None);
    }

    #[test]
    fn skips_fragments_before_the_first_operation() {
        let query = r#"
            fragment UserFields on User @include(if: {a: "{"}) {
                id
                name(format: "}}} { \" }")
                bio(text: """ }} \""" { """)
                # } a comment brace
                friends { ...More }
            }
            fragment More on User { id }
            mutation Rename { rename { ...UserFields } }
            query Later { a }
        "#;
        assert_eq!(op(query).as_deref(), Some("mutation Rename"));
    }

    #[test]
    fn rejects_what_is_not_an_executable_document() {
        for query in
            ["", "   ", "Query X { a }", "type T { a: Int }", "} query Q {", "\"s\" query Q {"]
        {
            assert_eq!(op(query), None, "{query:?}");
        }
        assert_eq!(op("fragment F on T { a }"), None);
        assert_eq!(op("query 1 { a }"), None);
    }

    #[test]
    fn a_whole_text_ends_the_name() {
        assert_eq!(operation(b"mutation Log", Extent::Whole).as_deref(), Some("mutation Log"));
        assert_eq!(operation(b"mutation", Extent::Whole), None);
        assert_eq!(operation(b"fragment F on T { a }", Extent::Whole), None);
    }

    #[test]
    fn cut_off_text_has_no_operation() {
        // The name could continue past the cut.
        assert_eq!(op("mutation Log"), None);
        assert_eq!(op("mutation"), None);
        assert_eq!(op("mutation "), None);
        assert_eq!(op("mutation Login "), Some("mutation Login".to_owned()));
        assert_eq!(op("fragment F on T { a { b }"), None);
        assert_eq!(op("fragment F on T { a(s: \"} query Q {"), None);
        assert_eq!(op("fragment F on T { a(s: \"\"\" } \\\"\"\" query Q {"), None);
    }

    #[test]
    fn deep_nesting_is_neither_recursive_nor_slow() {
        let mut query = String::from("fragment F on T ");
        query.push_str(&"{".repeat(1 << 20));
        assert_eq!(op(&query), None);
        query.push_str(&"}".repeat(1 << 20));
        query.push_str(" query Q { a }");
        assert_eq!(op(&query).as_deref(), Some("query Q"));
    }

    fn ignored() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just(" ".to_owned()),
                Just(",".to_owned()),
                Just("\n".to_owned()),
                Just("\u{feff}".to_owned()),
                "#[^\r\n]{0,8}\n",
                r#"fragment [A-Z][a-z]{0,3} on T \{ a\(s: "[{}a ]{0,4}"\) # \}
 b \{ c \} \}"#,
            ],
            0..5,
        )
        .prop_map(|parts| parts.concat())
    }

    /// An operation is a known type, then a name taken from the text.
    fn check_shape(query: &[u8], found: Option<String>) -> Result<(), TestCaseError> {
        let Some(found) = found else {
            return Ok(());
        };
        let (kind, name) = found.split_once(' ').unwrap_or((&found, ""));
        prop_assert!(["query", "mutation", "subscription"].contains(&kind), "{}", found);
        prop_assert!(memmem::find(query, name.as_bytes()).is_some(), "{}", found);
        Ok(())
    }

    proptest! {
        #[test]
        fn finds_the_operation_after_anything_ignorable(
            prefix in ignored(),
            kind in prop::sample::select(vec!["query", "mutation", "subscription"]),
            name in "[_A-Za-z][_0-9A-Za-z]{0,8}",
            body in r#"\{ [a-z]{1,5}\(x: "[{} ]{0,3}"\) \}"#,
        ) {
            let query = format!("{prefix}{kind} {name} {body}");
            let expected = format!("{kind} {name}");
            prop_assert_eq!(op(&query), Some(expected.clone()));
            for cut in 0..query.len() {
                if let Some(partial) = operation(&query.as_bytes()[..cut], Extent::Cut) {
                    prop_assert_eq!(&partial, &expected, "cut at {}", cut);
                }
            }
        }

        #[test]
        fn never_panics(query in any::<Vec<u8>>()) {
            check_shape(&query, operation(&query, Extent::Cut))?;
            check_shape(&query, operation(&query, Extent::Whole))?;
        }

        #[test]
        fn never_panics_on_graphql_like_bytes(
            query in prop::collection::vec(prop::sample::select(b"{}()\"\\#\n, qm fragment on@$".to_vec()), 0..128),
        ) {
            check_shape(&query, operation(&query, Extent::Cut))?;
        }
    }
}
