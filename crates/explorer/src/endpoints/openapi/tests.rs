use super::*;

fn data(name: &str) -> String {
    format!("{}/tests/data/openapi/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn shop() -> OpenApi {
    OpenApi::load(&[data("shop-3.0.yaml"), data("shop-3.1.json")]).unwrap()
}

/// (status, template) of a request: `documented`/`zombie` for an operation, `path` for a
/// documented path without the method, `none` for no match.
fn lookup(api: &OpenApi, host: &str, method: &str, path: &str) -> (&'static str, String) {
    match api.lookup(host, method, &template::segments(path)) {
        Some(Lookup::Operation(op)) => {
            (if op.deprecated { "zombie" } else { "documented" }, op.template.clone())
        }
        Some(Lookup::Path(template)) => ("path", template.to_owned()),
        None => ("none", String::new()),
    }
}

#[test]
fn path_parameters_and_overlapping_templates() {
    let api = shop();
    let host = "eu.shop.example.com";
    let cases = [
        ("GET", "/v1/orders", "documented", "/v1/orders"),
        ("GET", "/v1/orders/", "documented", "/v1/orders"),
        ("GET", "/v1/orders/1001", "documented", "/v1/orders/{orderId}"),
        ("GET", "/v1/orders/mine", "documented", "/v1/orders/mine"),
        ("DELETE", "/v1/orders/1001", "zombie", "/v1/orders/{orderId}"),
        // `/orders/mine` has no DELETE: the parameter template that has one is taken.
        ("DELETE", "/v1/orders/mine", "zombie", "/v1/orders/{orderId}"),
        ("PUT", "/v1/orders/1001", "path", "/v1/orders/{orderId}"),
        ("HEAD", "/v1/orders/7", "documented", "/v1/orders/{orderId}"),
        ("GET", "/v1/orders/7/invoice.pdf", "documented", "/v1/orders/{orderId}/invoice.{format}"),
        ("GET", "/v1/orders/7/invoice.", "none", ""),
        ("GET", "/v1/orders/7/8", "none", ""),
        ("POST", "/v1/auth/login", "documented", "/v1/auth/login"),
        ("GET", "/v1/orders%2Fmine", "none", ""),
        ("GET", "/v1/ord%65rs/mine", "documented", "/v1/orders/mine"),
    ];
    for (method, path, status, template) in cases {
        assert_eq!(
            lookup(&api, host, method, path),
            (status, template.to_owned()),
            "{method} {path}"
        );
    }
}

#[test]
fn server_base_paths() {
    let api = shop();
    // The base path is required: `/orders` alone is not under any server.
    assert_eq!(lookup(&api, "eu.shop.example.com", "GET", "/orders").0, "none");
    // A path-level server replaces the document's.
    assert_eq!(
        lookup(&api, "eu.shop.example.com", "POST", "/internal/sms/send"),
        ("documented", "/internal/sms/send".into())
    );
    assert_eq!(lookup(&api, "eu.shop.example.com", "POST", "/v1/sms/send").0, "none");
    // The JSON document's relative server, for any host.
    assert_eq!(
        lookup(&api, "admin.local", "GET", "/admin/users"),
        ("documented", "/admin/users".into())
    );
    assert_eq!(lookup(&api, "admin.local", "GET", "/admin/reports/legacy").0, "zombie");
}

#[test]
fn hosts_narrow_the_documents() {
    let api = shop();
    // Hosts named by the shop's servers, from its `region` variable.
    for host in ["eu.shop.example.com", "us.shop.example.com"] {
        assert_eq!(lookup(&api, host, "GET", "/v1/orders").0, "documented", "{host}");
        // Documents whose servers name no host apply to every host.
        assert_eq!(lookup(&api, host, "GET", "/admin/users").0, "documented", "{host}");
    }
    // A host no document names, e.g. nginx reached as localhost: every document applies.
    assert_eq!(lookup(&api, "localhost", "GET", "/v1/orders").0, "documented");

    let two = OpenApi::from_texts([
        (
            "a.yaml",
            "openapi: 3.0.0\nservers: [{url: 'https://a.example.com'}]\npaths: {/x: {get: {}}}",
        ),
        (
            "b.yaml",
            "openapi: 3.0.0\nservers: [{url: 'https://b.example.com'}]\npaths: {/y: {get: {}}}",
        ),
    ])
    .unwrap();
    assert_eq!(lookup(&two, "a.example.com", "GET", "/x").0, "documented");
    assert_eq!(lookup(&two, "a.example.com", "GET", "/y").0, "none");
    assert_eq!(lookup(&two, "b.example.com", "GET", "/y").0, "documented");
    assert_eq!(lookup(&two, "c.example.com", "GET", "/y").0, "documented");
}

#[test]
fn operations_are_listed_once() {
    let api = shop();
    let ops: Vec<String> = api
        .operations()
        .iter()
        .map(|op| {
            format!(
                "{} {}{}",
                op.method,
                op.template,
                if op.deprecated { " (deprecated)" } else { "" }
            )
        })
        .collect();
    assert_eq!(
        ops,
        [
            "GET /v1/orders",
            "POST /v1/orders",
            "GET /v1/orders/mine",
            "GET /v1/orders/{orderId}",
            "DELETE /v1/orders/{orderId} (deprecated)",
            "GET /v1/orders/{orderId}/invoice.{format}",
            "POST /v1/auth/login",
            "POST /internal/sms/send",
            "GET /admin/users",
            "PUT /admin/users/{userId}/password",
            "GET /admin/reports/legacy (deprecated)",
        ]
    );
    assert_eq!(api.files().len(), 2);
    let list = &api.operations()[0];
    assert_eq!(list.parameters, ["page"]);
    let invoice = &api.operations()[5];
    assert_eq!(invoice.parameters, ["orderId", "format"]);
    let sms = &api.operations()[7];
    assert_eq!(sms.parameters, ["otpCode"]);
}

#[test]
fn server_variables() {
    let doc = "openapi: 3.1.0
servers:
  - url: '{scheme}://api.example.com:{port}/{base}/'
    variables:
      scheme: {default: https, enum: [https, http]}
      port: {default: 443, enum: [443, 8443]}
      base: {default: v2}
  - url: //cdn.example.com/static
paths:
  /ping: {get: {}}
";
    let api = OpenApi::from_texts([("v.yaml", doc)]).unwrap();
    assert_eq!(
        lookup(&api, "api.example.com", "GET", "/v2/ping"),
        ("documented", "/v2/ping".into())
    );
    assert_eq!(lookup(&api, "cdn.example.com", "GET", "/static/ping").0, "documented");
    assert_eq!(lookup(&api, "cdn.example.com", "GET", "/v2/ping").0, "none");
    assert_eq!(api.operations().len(), 2);
}

#[test]
fn root_and_trailing_slashes() {
    let doc = r#"{"openapi": "3.0.1", "servers": [{"url": "https://x.example.com/"}],
                  "paths": {"/": {"get": {}}, "/a/": {"get": {}}}}"#;
    let api = OpenApi::from_texts([("r.json", doc)]).unwrap();
    assert_eq!(lookup(&api, "x.example.com", "GET", "/"), ("documented", "/".into()));
    assert_eq!(lookup(&api, "x.example.com", "GET", "/a"), ("documented", "/a".into()));
    assert_eq!(lookup(&api, "x.example.com", "GET", "/b").0, "none");
}

fn refused(name: &str, text: &str) -> SpecError {
    OpenApi::from_texts([(name, text)]).unwrap_err()
}

#[test]
fn bad_files_say_where() {
    let e = OpenApi::load(&[data("bad-deprecated.yaml")]).unwrap_err();
    assert_eq!(e.line, Some(6));
    assert_eq!(e.at.as_deref(), Some(r#"paths["/orders"].get.deprecated"#));
    assert_eq!(
        e.to_string(),
        format!(
            r#"invalid OpenAPI document: expected true or false, found a string at paths["/orders"].get.deprecated in {}:6"#,
            data("bad-deprecated.yaml")
        )
    );

    let e = OpenApi::load(&[data("shop-3.0.yaml"), data("bad-syntax.json")]).unwrap_err();
    assert_eq!(e.file, data("bad-syntax.json"));
    assert_eq!((e.line, e.column), (Some(5), Some(3)));
    assert!(e.reason.contains("trailing comma"), "{}", e.reason);

    let e = OpenApi::load(&[data("missing.yaml")]).unwrap_err();
    assert_eq!(e.file, data("missing.yaml"));
    assert!(e.unreadable);
    assert!(
        e.to_string()
            .starts_with(&format!("cannot read OpenAPI document {}: ", data("missing.yaml"))),
        "{e}"
    );

    let e = refused("s.json", r#"{"swagger": "2.0", "paths": {}}"#);
    assert!(e.reason.contains("Swagger 2.0"), "{}", e.reason);
    let e = refused("v.yaml", "openapi: 2.5.0\n");
    assert_eq!((e.line, e.at.as_deref()), (Some(1), Some("openapi")));
    let e = refused("v.yaml", "info: {}\n");
    assert!(e.reason.contains("no \"openapi\""), "{}", e.reason);
    let e = refused("v.yaml", "- 1\n- 2\n");
    assert!(e.reason.contains("expected a mapping"), "{}", e.reason);

    let e = refused("p.yaml", "openapi: 3.0.0\npaths:\n  orders: {get: {}}\n");
    assert_eq!((e.line, e.at.as_deref()), (Some(3), Some("paths.orders")));
    let e = refused("p.yaml", "openapi: 3.0.0\npaths:\n  /orders/{id: {get: {}}\n");
    assert!(e.reason.contains("unclosed"), "{}", e.reason);
    let e = refused("p.yaml", "openapi: 3.0.0\npaths:\n  /orders/{}: {get: {}}\n");
    assert!(e.reason.contains("empty parameter"), "{}", e.reason);
    let e = refused("p.yaml", "openapi: 3.0.0\npaths:\n  /orders/id}: {get: {}}\n");
    assert!(e.reason.contains("without"), "{}", e.reason);

    let e = refused("r.yaml", "openapi: 3.0.0\npaths:\n  /a:\n    $ref: '#/nowhere'\n");
    assert_eq!((e.line, e.at.as_deref()), (Some(4), Some(r#"paths["/a"]["$ref"]"#)));
    let e = refused("r.yaml", "openapi: 3.0.0\npaths:\n  /a:\n    $ref: 'other.yaml#/x'\n");
    assert!(e.reason.contains("bundle"), "{}", e.reason);
    let e = refused("r.yaml", "openapi: 3.0.0\nx: {$ref: '#/x'}\npaths:\n  /a: {$ref: '#/x'}\n");
    assert!(e.reason.contains("loop"), "{}", e.reason);

    let e = refused("s.yaml", "openapi: 3.0.0\nservers:\n  - url: 'https://{h}.example.com'\n");
    assert_eq!((e.line, e.at.as_deref()), (Some(3), Some("servers[0].url")));
    assert!(e.reason.contains("\"h\" is not defined"), "{}", e.reason);
    let e = refused("s.yaml", "openapi: 3.0.0\nservers:\n  - description: none\n");
    assert!(e.reason.contains("without \"url\""), "{}", e.reason);
    let e = refused("s.yaml", "openapi: 3.0.0\nservers:\n  - url: 'https://exa mple.com'\n");
    assert!(e.reason.contains("invalid URL"), "{}", e.reason);

    let e = refused(
        "q.yaml",
        "openapi: 3.0.0\npaths:\n  /a:\n    get:\n      parameters:\n        - in: query\n",
    );
    assert_eq!(e.at.as_deref(), Some(r#"paths["/a"].get.parameters[0]"#));
    assert_eq!(e.line, Some(6));
}

#[test]
fn json_errors_name_the_path_without_a_line() {
    let e =
        refused("d.json", r#"{"openapi": "3.1.0", "paths": {"/a": {"get": {"deprecated": 1}}}}"#);
    assert_eq!(e.line, None);
    assert_eq!(e.at.as_deref(), Some(r#"paths["/a"].get.deprecated"#));
}

#[test]
fn documents_without_paths_or_with_extensions() {
    let api = OpenApi::from_texts([("w.yaml", "openapi: 3.1.0\nwebhooks: {}\n")]).unwrap();
    assert!(api.operations().is_empty());
    assert_eq!(api.lookup("h", "GET", &template::segments("/a")), None);
    let api = OpenApi::from_texts([(
        "m.yaml",
        "openapi: 3.2.0\npaths:\n  /a:\n    summary: x\n    x-foo: {get: 1}\n    query: {}\n    \
         additionalOperations:\n      COPY: {deprecated: true}\n",
    )])
    .unwrap();
    assert_eq!(lookup(&api, "h", "QUERY", "/a").0, "documented");
    assert_eq!(lookup(&api, "h", "COPY", "/a").0, "zombie");
    assert_eq!(lookup(&api, "h", "GET", "/a").0, "path");
}

#[test]
fn many_templates_match_fast_enough() {
    // A large API: 2,000 paths with parameters at every level. A lookup visits each node of
    // the tree at most once, so even a miss stays cheap.
    let mut doc = String::from("openapi: 3.0.0\npaths:\n");
    for i in 0..2000 {
        doc.push_str(&format!("  /r{}/{{a}}/s{}/{{b}}/t{i}: {{get: {{}}}}\n", i % 50, i % 7));
    }
    let api = OpenApi::from_texts([("big.yaml", doc.as_str())]).unwrap();
    assert_eq!(api.operations().len(), 2000);
    let hit = template::segments("/r10/x/s3/y/t1760");
    let miss = template::segments("/r10/x/s3/y/nothing");
    let start = std::time::Instant::now();
    for _ in 0..10_000 {
        assert!(matches!(api.lookup("h", "GET", &hit), Some(Lookup::Operation(_))));
        assert_eq!(api.lookup("h", "GET", &miss), None);
    }
    // Generous, for a loaded machine: about a microsecond each is expected.
    assert!(start.elapsed() < std::time::Duration::from_secs(2), "{:?}", start.elapsed());
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any value in the parameter's place matches the parameter's template, encoded or
        /// not, except the literal that overlaps it.
        #[test]
        fn parameters_take_any_value(value in "[A-Za-z0-9._~@!$-]{1,24}", method in "GET|DELETE") {
            prop_assume!(value != "." && value != "..");
            let api = shop();
            let expected = if value == "mine" && method == "GET" {
                "/v1/orders/mine"
            } else {
                "/v1/orders/{orderId}"
            };
            let plain = format!("/v1/orders/{value}");
            let encoded: String = value.bytes().map(|b| format!("%{b:02X}")).collect();
            for path in [plain, format!("/v1/orders/{encoded}")] {
                let (_, template) = lookup(&api, "localhost", &method, &path);
                prop_assert_eq!(template.as_str(), expected, "{}", path);
            }
        }

        /// Whatever a lookup returns matches the path: as many segments, the same literal
        /// ones.
        #[test]
        fn what_is_found_matches(path in "(/(v1|orders|mine|admin|users|[a-z%0-9.]{0,6})){0,6}") {
            let api = shop();
            let segments = template::segments(&path);
            let template = match api.lookup("localhost", "GET", &segments) {
                Some(Lookup::Operation(op)) => op.template.clone(),
                Some(Lookup::Path(template)) => template.to_owned(),
                None => return Ok(()),
            };
            let parts: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
            prop_assert_eq!(parts.len(), segments.len(), "{} for {}", template, path);
            for (part, segment) in parts.iter().zip(&segments) {
                if !part.contains('{') {
                    prop_assert_eq!(part.as_bytes(), segment.as_ref(), "{} for {}", template, path);
                }
            }
        }
    }
}
