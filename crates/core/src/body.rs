//! Values inside request and response bodies, for `request_body:POINTER` and
//! `response_body:POINTER` sources.
//!
//! Bodies come from clients and upstreams alike and may be cut at `api_sessions_body_limit`.
//! Every parser here is iterative and linear in its input, never panics, and gives no value
//! rather than a guessed one. Each is told whether its bytes are the whole body
//! ([`Extent`]): of a cut body, a value (or a field name) that reaches the cut is absent,
//! never its prefix, while values that were complete before the cut are kept.

pub mod form;
pub mod graphql;
pub mod json;
pub mod pointer;

use memchr::memchr;

pub use pointer::{Pointer, PointerError};

/// Whether the bytes handed to a parser are the whole body or only its start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Extent {
    /// The body ended where the bytes end: a value that reaches the end is complete.
    #[default]
    Whole,
    /// The bytes stop before the body does (at the limit, where the client stopped, or where
    /// the response filter stopped reading): whatever reaches the end may continue.
    Cut,
}

impl Extent {
    pub fn cut_if(cut: bool) -> Extent {
        if cut {
            Extent::Cut
        } else {
            Extent::Whole
        }
    }
}

/// How a body is parsed, from its Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Form,
    GraphQl,
    Other,
}

impl BodyFormat {
    /// From a Content-Type header value; parameters (`; charset=...`) and case are ignored.
    /// `application/json` and any `*/*+json` are JSON.
    pub fn from_content_type(value: &[u8]) -> BodyFormat {
        let media_type = match memchr(b';', value) {
            Some(at) => &value[..at],
            None => value,
        }
        .trim_ascii();
        let Some(slash) = memchr(b'/', media_type) else {
            return BodyFormat::Other;
        };
        let (kind, subtype) = (&media_type[..slash], &media_type[slash + 1..]);
        if !is_token(kind) || !is_token(subtype) {
            return BodyFormat::Other;
        }

        if kind.eq_ignore_ascii_case(b"application") {
            if subtype.eq_ignore_ascii_case(b"json") {
                return BodyFormat::Json;
            }
            if subtype.eq_ignore_ascii_case(b"x-www-form-urlencoded") {
                return BodyFormat::Form;
            }
            if subtype.eq_ignore_ascii_case(b"graphql") {
                return BodyFormat::GraphQl;
            }
        }
        match subtype.len().checked_sub(b"+json".len()) {
            Some(suffix) if suffix > 0 && subtype[suffix..].eq_ignore_ascii_case(b"+json") => {
                BodyFormat::Json
            }
            _ => BodyFormat::Other,
        }
    }
}

/// An HTTP token (RFC 9110), as media type names are.
fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|&byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

/// What the request side offers: the captured body (possibly cut at the body limit) and the raw
/// query string (without '?'), which GraphQL over GET uses.
#[derive(Clone, Copy, Debug)]
pub struct RequestDocument<'a> {
    pub format: BodyFormat,
    pub body: &'a [u8],
    /// Whether `body` is the whole body; the query string always is whole.
    pub extent: Extent,
    pub args: &'a [u8],
}

/// Values for `request_body:POINTER` sources, in one pass over the body.
/// `out[i]` is the value of `pointers[i]`: `None` when absent, JSON null, or not parseable.
pub fn extract_request(doc: &RequestDocument<'_>, pointers: &[&Pointer]) -> Vec<Option<String>> {
    // No body at all, not a body cut before its first byte.
    if doc.body.is_empty() && doc.extent == Extent::Whole {
        if let Some(values) = graphql::extract_args(doc.args, pointers) {
            return values;
        }
    }
    match doc.format {
        BodyFormat::Json => graphql::extract_json(doc.body, doc.extent, pointers),
        BodyFormat::Form => form::extract(doc.body, doc.extent, pointers),
        BodyFormat::GraphQl => graphql::extract_text(doc.body, doc.extent, doc.args, pointers),
        BodyFormat::Other => vec![None; pointers.len()],
    }
}

/// Values for `response_body:POINTER` sources. JSON bodies only: format Json, or format Other
/// with an empty Content-Type when the first non-whitespace byte is '{' or '['. Otherwise all
/// None.
pub fn extract_response(
    format: BodyFormat,
    content_type_empty: bool,
    body: &[u8],
    extent: Extent,
    pointers: &[&Pointer],
) -> Vec<Option<String>> {
    if response_is_json(format, content_type_empty, body) {
        json::extract(body, extent, pointers)
    } else {
        vec![None; pointers.len()]
    }
}

/// Whether `prefix`, the start of a response body, already decides everything
/// [`extract_response`] finds for `pointers` in the whole body; lets the response filter
/// stop reading a large body early. When it does, extracting from `prefix` as
/// [`Extent::Cut`] gives exactly the values of the whole body, whatever follows the prefix.
/// A body that is not JSON decides at once: nothing is extracted from it. Without a
/// Content-Type, a prefix of only whitespace does not tell yet.
pub fn response_decided(
    format: BodyFormat,
    content_type_empty: bool,
    prefix: &[u8],
    pointers: &[&Pointer],
) -> bool {
    let sniffed = format == BodyFormat::Other && content_type_empty;
    if sniffed && prefix.trim_ascii_start().is_empty() {
        return false;
    }
    !response_is_json(format, content_type_empty, prefix) || json::decides_all(prefix, pointers)
}

/// JSON by its Content-Type, or, with none, by its first byte.
fn response_is_json(format: BodyFormat, content_type_empty: bool, body: &[u8]) -> bool {
    let looks_like_json = || matches!(body.trim_ascii_start().first(), Some(b'{' | b'['));
    format == BodyFormat::Json
        || (format == BodyFormat::Other && content_type_empty && looks_like_json())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse_all(pointers: &[&str]) -> Vec<Pointer> {
        pointers.iter().map(|p| Pointer::parse(p).unwrap()).collect()
    }

    fn request(
        format: BodyFormat,
        body: &str,
        args: &str,
        pointers: &[&str],
    ) -> Vec<Option<String>> {
        let pointers = parse_all(pointers);
        let doc = RequestDocument {
            format,
            body: body.as_bytes(),
            extent: Extent::Whole,
            args: args.as_bytes(),
        };
        extract_request(&doc, &pointers.iter().collect::<Vec<_>>())
    }

    fn response(
        format: BodyFormat,
        content_type_empty: bool,
        body: &str,
        pointer: &str,
    ) -> Option<String> {
        let pointer = Pointer::parse(pointer).unwrap();
        extract_response(format, content_type_empty, body.as_bytes(), Extent::Whole, &[&pointer])
            .remove(0)
    }

    #[test]
    fn a_response_prefix_decides_only_what_the_whole_body_would() {
        let id = Pointer::parse("/id").unwrap();
        let decided = |format, empty, prefix: &str| {
            response_decided(format, empty, prefix.as_bytes(), &[&id])
        };
        assert!(decided(BodyFormat::Json, false, r#"{"id":1,"pad":"#));
        assert!(!decided(BodyFormat::Json, false, r#"{"pad":"x","i"#));
        // Not JSON by its Content-Type: nothing is extracted, whatever follows.
        assert!(decided(BodyFormat::Other, false, "<html>"));
        // No Content-Type: sniffed from the first byte, which blank space does not show yet.
        assert!(!decided(BodyFormat::Other, true, "   \n  "));
        assert!(!decided(BodyFormat::Other, true, ""));
        assert!(decided(BodyFormat::Other, true, "  <html>"));
        assert!(decided(BodyFormat::Other, true, r#"  {"id":"a"}"#));
    }

    fn some(values: &[&str]) -> Vec<Option<String>> {
        values.iter().map(|v| Some((*v).to_owned())).collect()
    }

    #[test]
    fn content_types_choose_the_parser() {
        let cases: &[(&[u8], BodyFormat)] = &[
            (b"application/json", BodyFormat::Json),
            (b"Application/JSON; charset=utf-8", BodyFormat::Json),
            (b" application/json ;", BodyFormat::Json),
            (b"application/vnd.api+json", BodyFormat::Json),
            (b"application/problem+JSON; charset=utf-8", BodyFormat::Json),
            (b"application/graphql-response+json", BodyFormat::Json),
            (b"text/x.custom+json", BodyFormat::Json),
            (b"application/x-www-form-urlencoded", BodyFormat::Form),
            (b"APPLICATION/X-WWW-FORM-URLENCODED;charset=UTF-8", BodyFormat::Form),
            (b"application/graphql", BodyFormat::GraphQl),
            (b"application/graphql; charset=utf-8", BodyFormat::GraphQl),
            (b"", BodyFormat::Other),
            (b"text/json", BodyFormat::Other),
            (b"multipart/form-data; boundary=x", BodyFormat::Other),
            (b"application/jsonx", BodyFormat::Other),
            (b"application/+json", BodyFormat::Other),
            (b"/json", BodyFormat::Other),
            (b"application/", BodyFormat::Other),
            (b"json", BodyFormat::Other),
            (b"application/json x", BodyFormat::Other),
            (b"application/a/b+json", BodyFormat::Other),
            (b"appli cation/json", BodyFormat::Other),
            (b"\xff\x00application/json", BodyFormat::Other),
            (b";application/json", BodyFormat::Other),
        ];
        for &(value, format) in cases {
            assert_eq!(
                BodyFormat::from_content_type(value),
                format,
                "{:?}",
                value.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn request_bodies_are_parsed_by_format() {
        let pointers = ["/token", "/user/name"];
        assert_eq!(
            request(BodyFormat::Json, r#"{"user": {"name": "al"}, "token": "t1"}"#, "", &pointers),
            some(&["t1", "al"])
        );
        assert_eq!(
            request(BodyFormat::Form, "token=t%31&user=x", "", &pointers),
            [Some("t1".to_owned()), None]
        );
        assert_eq!(request(BodyFormat::Other, r#"{"token": "t1"}"#, "", &pointers), [None, None]);
        assert_eq!(request(BodyFormat::Json, "", "token=t1", &pointers), [None, None]);
    }

    #[test]
    fn graphql_json_body_derives_operation_from_query() {
        let body = r##"{"query": "# login\nmutation Login($u: String) { login(u: $u) { token } }",
                        "operationName": "Login", "variables": {"u": "alice", "n": [1, 2]}}"##;
        let values = request(
            BodyFormat::Json,
            body,
            "",
            &["/operation", "/operationName", "/variables/u", "/variables", "/variables/n/1"],
        );
        assert_eq!(
            values,
            some(&["mutation Login", "Login", "alice", r#"{"u":"alice","n":[1,2]}"#, "2"])
        );
        let query = request(BodyFormat::Json, body, "", &["/query"]).remove(0).unwrap();
        assert!(query.starts_with("# login\nmutation Login("));
    }

    #[test]
    fn graphql_operation_ignores_a_member_named_operation() {
        let body = r#"{"operation": "ordinary", "query": "{ me { id } }"}"#;
        assert_eq!(request(BodyFormat::Json, body, "", &["/operation"]), some(&["query"]));
        let body = r#"{"query": "subscription S { a }", "operation": "ordinary"}"#;
        assert_eq!(request(BodyFormat::Json, body, "", &["/operation"]), some(&["subscription S"]));
    }

    #[test]
    fn operation_is_an_ordinary_pointer_without_a_query_string() {
        for body in [
            r#"{"operation": "transfer", "amount": 5}"#,
            r#"{"operation": "transfer", "query": 5}"#,
            r#"{"operation": "transfer", "query": null}"#,
            r#"{"operation": "transfer", "query": {"q": "query Q { a }"}}"#,
        ] {
            assert_eq!(
                request(BodyFormat::Json, body, "", &["/operation"]),
                some(&["transfer"]),
                "{body}"
            );
        }
        // Only a top-level `query` makes a GraphQL request.
        let body = r#"{"operation": "transfer", "nested": {"query": "query Q { a }"}}"#;
        assert_eq!(request(BodyFormat::Json, body, "", &["/operation"]), some(&["transfer"]));
        assert_eq!(request(BodyFormat::Json, r#"["query"]"#, "", &["/operation"]), [None]);
    }

    #[test]
    fn graphql_operation_is_absent_when_cut_before_query_is_known() {
        let body = r#"{"operation": "transfer", "query": "mutation M { a }"#;
        assert_eq!(request(BodyFormat::Json, body, "", &["/operation"]), [None]);
        let body = r#"{"query": "mutation M { a }", "operation": "x", "variables": {"#;
        assert_eq!(request(BodyFormat::Json, body, "", &["/operation"]), some(&["mutation M"]));
    }

    #[test]
    fn graphql_text_body_takes_the_rest_from_args() {
        let body = "mutation Login { login { token } }";
        let args = "operationName=Login&variables=%7B%22u%22%3A%20%22al%22%7D&query=ignored";
        let values = request(
            BodyFormat::GraphQl,
            body,
            args,
            &[
                "/query",
                "/operation",
                "/operationName",
                "/variables/u",
                "/variables",
                "/other",
                "/query/x",
            ],
        );
        assert_eq!(
            values,
            [
                Some(body.to_owned()),
                Some("mutation Login".to_owned()),
                Some("Login".to_owned()),
                Some("al".to_owned()),
                Some(r#"{"u":"al"}"#.to_owned()),
                None,
                None,
            ]
        );
        assert_eq!(
            request(BodyFormat::GraphQl, body, args, &[""]),
            some(&[
                r#"{"query":"mutation Login { login { token } }","operationName":"Login","variables":{"u":"al"}}"#
            ])
        );
        assert_eq!(
            request(BodyFormat::GraphQl, "{ a }", "", &["/operationName", "/variables/u"]),
            [None, None]
        );
    }

    #[test]
    fn graphql_get_builds_the_document_from_args() {
        let args = "query=query+Q(%24id%3A+ID)+%7B+user(id%3A+%24id)+%7B+name+%7D+%7D\
                    &operationName=Q&variables=%7B%22id%22%3A%2242%22%2C%22f%22%3A%7B%22a%22%3A1%7D%7D";
        let pointers =
            ["/operation", "/query", "/operationName", "/variables/id", "/variables/f", "/nope"];
        let expected = [
            Some("query Q".to_owned()),
            Some("query Q($id: ID) { user(id: $id) { name } }".to_owned()),
            Some("Q".to_owned()),
            Some("42".to_owned()),
            Some(r#"{"a":1}"#.to_owned()),
            None,
        ];
        // A GET usually has no Content-Type; the format does not matter without a body.
        for format in [BodyFormat::Other, BodyFormat::Json, BodyFormat::Form, BodyFormat::GraphQl] {
            assert_eq!(request(format, "", args, &pointers), expected, "{format:?}");
        }
        assert_eq!(
            request(BodyFormat::Other, "", "query=%7Ba%7D", &["", "/operationName"]),
            [Some(r#"{"query":"{a}"}"#.to_owned()), None]
        );
    }

    #[test]
    fn graphql_get_with_bad_variables_keeps_the_rest() {
        let args = "query=%7Ba%7D&variables=%7Bnot+json";
        assert_eq!(
            request(BodyFormat::Other, "", args, &["/variables", "/variables/a", "/operation", ""]),
            [None, None, Some("query".to_owned()), Some(r#"{"query":"{a}"}"#.to_owned())]
        );
    }

    #[test]
    fn a_body_wins_over_query_args() {
        let values = request(
            BodyFormat::Json,
            r#"{"query": "mutation M { a }"}"#,
            "query=%7Ba%7D",
            &["/operation"],
        );
        assert_eq!(values, some(&["mutation M"]));
        assert_eq!(request(BodyFormat::Form, "query=b", "query=a", &["/query"]), some(&["b"]));
    }

    #[test]
    fn responses_are_json_only() {
        let body = r#"{"token": "t1"}"#;
        assert_eq!(response(BodyFormat::Json, false, body, "/token").as_deref(), Some("t1"));
        assert_eq!(response(BodyFormat::Other, true, body, "/token").as_deref(), Some("t1"));
        assert_eq!(response(BodyFormat::Other, true, " \r\n[\"t1\"]", "/0").as_deref(), Some("t1"));
        // A declared type that is not JSON is believed.
        assert_eq!(response(BodyFormat::Other, false, body, "/token"), None);
        assert_eq!(response(BodyFormat::Form, false, "token=t1", "/token"), None);
        assert_eq!(response(BodyFormat::GraphQl, false, body, "/token"), None);
        // Without a type, only what starts like a JSON container is read.
        assert_eq!(response(BodyFormat::Other, true, "\"t1\"", ""), None);
        assert_eq!(response(BodyFormat::Other, true, "token=t1", "/token"), None);
        assert_eq!(response(BodyFormat::Other, true, "", ""), None);
    }

    fn format() -> impl Strategy<Value = BodyFormat> {
        prop::sample::select(vec![
            BodyFormat::Json,
            BodyFormat::Form,
            BodyFormat::GraphQl,
            BodyFormat::Other,
        ])
    }

    fn pointer() -> impl Strategy<Value = Pointer> {
        prop_oneof![
            Just(String::new()),
            Just("/operation".to_owned()),
            Just("/query".to_owned()),
            Just("/operationName".to_owned()),
            "/variables(/[a0-1]){0,2}",
            "(/[a-c0-1]{1,2}){1,3}",
        ]
        .prop_map(|text| Pointer::parse(&text).unwrap())
    }

    /// Bytes that look like a body of `format`, often enough valid: random bytes alone would
    /// seldom hold a value for a pointer to find.
    fn body_of(format: BodyFormat) -> BoxedStrategy<Vec<u8>> {
        let bytes = |alphabet: &[u8]| {
            prop::collection::vec(prop::sample::select(alphabet.to_vec()), 0..48).boxed()
        };
        match format {
            BodyFormat::Json | BodyFormat::Other => prop_oneof![
                json::tests::document().prop_map(|(_, text)| text.into_bytes()),
                // Scalars, at the top and in an object, with what may follow them.
                "(\\{\"[a-c]\": ?)?(-?[0-9]{1,3}(\\.[0-9])?|true|false|null|\"[a-c]{0,3}\")[ a-c,\\]}]{0,2}"
                    .prop_map(String::into_bytes),
                bytes(b"{}[]\",:\\ abtrufl0123-.eE\xff"),
            ]
            .boxed(),
            BodyFormat::Form => prop_oneof![
                "(([a-c]|password|passwordx|token)(=[a-c0-9%+]{0,6})?&?){0,5}"
                    .prop_map(String::into_bytes),
                bytes(b"abc=&%+2041"),
            ]
            .boxed(),
            BodyFormat::GraphQl => prop_oneof![
                "(#[a-z ]{0,4}\n)?(query|mutation|fragment F on T \\{ a \\}) ?[A-Za-z]{0,6} ?\\{ [a-z]{1,3} \\}"
                    .prop_map(String::into_bytes),
                bytes(b"{}()\"#\n qmuery"),
            ]
            .boxed(),
        }
    }

    fn request_case() -> impl Strategy<Value = (BodyFormat, Vec<u8>, Vec<u8>, Vec<Pointer>)> {
        format().prop_flat_map(|format| {
            let args = prop_oneof![
                Just(String::new()),
                "operationName=[A-Z][a-z]{0,3}&variables=%7B%22a%22%3A[0-9]{1,3}%7D",
                "query=query%20Q%20%7Ba%7D&variables=%7B%22a%22%3A1%7D",
            ];
            let pointers = prop::collection::vec(
                prop_oneof![
                    pointer(),
                    Just(Pointer::parse("/password").unwrap()),
                    Just(Pointer::parse("/token").unwrap()),
                ],
                1..5,
            );
            (Just(format), body_of(format), args.prop_map(String::into_bytes), pointers)
        })
    }

    fn response_case() -> impl Strategy<Value = (BodyFormat, bool, Vec<u8>, Vec<Pointer>)> {
        (format(), any::<bool>()).prop_flat_map(|(format, content_type_empty)| {
            let pointers = prop::collection::vec(pointer(), 1..4);
            (Just(format), Just(content_type_empty), body_of(BodyFormat::Json), pointers)
        })
    }

    proptest! {
        #[test]
        fn requests_never_panic_and_stay_bounded(
            format in format(),
            body in any::<Vec<u8>>(),
            args in any::<Vec<u8>>(),
            pointers in prop::collection::vec(pointer(), 0..5),
        ) {
            let extent = if body.len() % 2 == 0 { Extent::Whole } else { Extent::Cut };
            let doc = RequestDocument { format, body: &body, extent, args: &args };
            let refs: Vec<&Pointer> = pointers.iter().collect();
            let values = extract_request(&doc, &refs);
            prop_assert_eq!(values.len(), pointers.len());
            // The assembled GraphQL document escapes control bytes as six-byte `\uXXXX`.
            let bound = 6 * (body.len() + args.len()) + 64;
            prop_assert!(values.iter().flatten().all(|value| value.len() <= bound));
        }

        #[test]
        fn structured_requests_never_panic(
            format in format(),
            body in prop::collection::vec(prop::sample::select(b"{}[]\":,\\ a0-query=&%+#".to_vec()), 0..64),
            args in "((query|variables|operationName|a)=[%7BbDa0+]{0,6}&?){0,3}",
            pointers in prop::collection::vec(pointer(), 1..5),
        ) {
            let doc =
                RequestDocument { format, body: &body, extent: Extent::Cut, args: args.as_bytes() };
            let refs: Vec<&Pointer> = pointers.iter().collect();
            prop_assert_eq!(extract_request(&doc, &refs).len(), pointers.len());
        }

        #[test]
        fn responses_never_panic(
            format in format(),
            content_type_empty in any::<bool>(),
            body in any::<Vec<u8>>(),
            pointers in prop::collection::vec(pointer(), 0..5),
        ) {
            let refs: Vec<&Pointer> = pointers.iter().collect();
            let values = extract_response(format, content_type_empty, &body, Extent::Whole, &refs);
            prop_assert_eq!(values.len(), pointers.len());
            prop_assert!(values.iter().flatten().all(|value| value.len() <= 3 * body.len()));
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn no_prefix_of_a_request_body_has_a_value_the_whole_lacks(
            (format, body, args, pointers) in request_case(),
        ) {
            let refs: Vec<&Pointer> = pointers.iter().collect();
            let whole = RequestDocument { format, body: &body, extent: Extent::Whole, args: &args };
            let whole = extract_request(&whole, &refs);
            for cut in 0..body.len() {
                let doc =
                    RequestDocument { format, body: &body[..cut], extent: Extent::Cut, args: &args };
                for ((pointer, part), value) in refs.iter().zip(extract_request(&doc, &refs)).zip(&whole) {
                    prop_assert!(part.is_none() || part == *value,
                        "{:?} {:?} cut at {}: {:?}, whole {:?}",
                        format, pointer.as_str(), cut, part, value);
                }
            }
        }

        #[test]
        fn no_prefix_of_a_response_has_a_value_the_whole_lacks(
            (format, content_type_empty, body, pointers) in response_case(),
        ) {
            let refs: Vec<&Pointer> = pointers.iter().collect();
            let whole = extract_response(format, content_type_empty, &body, Extent::Whole, &refs);
            for cut in 0..=body.len() {
                let prefix = &body[..cut];
                let part = extract_response(format, content_type_empty, prefix, Extent::Cut, &refs);
                for (p, w) in part.iter().zip(&whole) {
                    prop_assert!(p.is_none() || p == w, "cut at {}: {:?}, whole {:?}", cut, p, w);
                }
                // A deciding prefix gives the whole's values, all of them.
                if response_decided(format, content_type_empty, prefix, &refs) {
                    prop_assert_eq!(&part, &whole, "decided at {}", cut);
                }
            }
        }

        #[test]
        fn content_types_never_panic(value in any::<Vec<u8>>()) {
            let _ = BodyFormat::from_content_type(&value);
        }

        #[test]
        fn pointers_parse_or_explain(text in any::<String>()) {
            match Pointer::parse(&text) {
                Ok(pointer) => prop_assert_eq!(pointer.as_str(), text),
                Err(err) => prop_assert!(err.to_string().starts_with("invalid JSON pointer \"")),
            }
        }
    }
}
