//! The HTTP API and the pages, through the router: ingest (gzip, token, bad lines, limits),
//! the JSON API, the CSV export, escaping and security headers.

mod fixtures;

use std::io::Write;
use std::sync::Arc;

use api_sessions::app::{router, AppState};
use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use fixtures::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct App {
    router: Router,
    _store: TempStore,
}

fn app(kind: Kind, token: Option<&str>) -> App {
    let store = kind.store();
    let state = AppState {
        store: store.store.clone(),
        ingest_token: token.map(str::to_owned),
        access: Default::default(),
        endpoints: Default::default(),
    };
    App { router: router(Arc::new(state)), _store: store }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

async fn send(app: &App, request: Request<Body>) -> Reply {
    let response = app.router.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    Reply { status: parts.status, headers: parts.headers, body }
}

async fn get(app: &App, uri: &str) -> Reply {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn post(app: &App, body: Vec<u8>, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::builder().method(Method::POST).uri("/v1/records");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(app, request.body(Body::from(body)).unwrap()).await
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

async fn post_records_stores_good_lines_and_reports_bad_ones_by_number(kind: Kind) {
    let app = app(kind, None);
    let b = base();
    let mut body = ndjson(&[record("s1", 1, b)]);
    body.extend_from_slice(b"not json at all\n");
    body.extend_from_slice(&ndjson(&[record("s1", 2, b + 1)]));
    body.extend_from_slice(b"\n{\"v\":1,\"ts\":\"yesterday\"}\r\n");
    let mut wrong_version = serde_json::to_value(record("s1", 3, b + 2)).unwrap();
    wrong_version["v"] = json!(3);
    body.extend_from_slice(format!("{wrong_version}\n").as_bytes());
    body.extend_from_slice(b"\xff\xfe{}\n");
    body.extend_from_slice(&ndjson(&[record("s1", 1, b)])); // a duplicate

    let reply = post(&app, body, &[("content-type", "application/x-ndjson")]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let report = reply.json();
    assert_eq!(report["accepted"], 2);
    assert_eq!(report["duplicates"], 1);
    let rejected = report["rejected"].as_array().unwrap();
    let lines: Vec<_> = rejected.iter().map(|r| r["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [2, 5, 6, 7]);
    assert!(rejected[0]["error"].as_str().unwrap().contains("expected"), "{report}");
    assert!(rejected[1]["error"].as_str().unwrap().contains("timestamp"), "{report}");
    assert!(rejected[2]["error"].as_str().unwrap().contains("unsupported record version 3"));
    assert_eq!(rejected[3]["error"], "line is not valid UTF-8");
    assert_eq!(report["rejected_total"], 4);

    let sessions = get(&app, "/api/sessions").await.json();
    assert_eq!(sessions["sessions"][0]["requests"], 2);

    // Nothing good at all: 400, so the module does not retry what cannot succeed.
    let reply = post(&app, b"{}\n[1]\n".to_vec(), &[]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["rejected_total"], 2);
    // An empty batch is fine.
    let reply = post(&app, Vec::new(), &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({"accepted":0,"duplicates":0,"rejected":[],"rejected_total":0}));
}

async fn post_records_accepts_gzip_and_rejects_what_it_cannot_decode(kind: Kind) {
    let app = app(kind, None);
    let b = base();
    let body = gzip(&ndjson(&[record("g", 1, b), record("g", 2, b + 1)]));
    let reply = post(&app, body, &[("content-encoding", "gzip")]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["accepted"], 2);

    let reply = post(&app, b"plainly not gzip".to_vec(), &[("content-encoding", "gzip")]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.json()["error"].as_str().unwrap().starts_with("invalid gzip body"));

    let reply = post(&app, b"x".to_vec(), &[("content-encoding", "br")]).await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(reply.json()["error"].as_str().unwrap().contains("\"br\""));
}

async fn oversized_bodies_get_a_clear_413(kind: Kind) {
    let app = app(kind, None);
    let limit = api_sessions::ingest::MAX_BODY_BYTES;
    let reply = post(&app, vec![b'\n'; limit + 1], &[]).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(reply.json()["error"].as_str().unwrap().contains("64 MiB"));

    // A small gzip body that inflates past the limit is refused as well.
    let bomb = gzip(&vec![b'\n'; limit + 1]);
    assert!(bomb.len() < 1 << 20);
    let reply = post(&app, bomb, &[("content-encoding", "gzip")]).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);

    // Exactly at the limit is accepted.
    let reply = post(&app, vec![b'\n'; limit], &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
}

async fn the_token_guards_ingest(kind: Kind) {
    let app = app(kind, Some("s3cret"));
    let body = ndjson(&[record("t", 1, base())]);
    for headers in
        [vec![], vec![("authorization", "Bearer wrong!")], vec![("authorization", "s3cret")]]
    {
        let reply = post(&app, body.clone(), &headers).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer realm=\"api-sessions\"");
    }
    let reply = post(&app, body, &[("authorization", "Bearer s3cret")]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["accepted"], 1);
}

/// Records whose every field an attacker chose.
fn hostile(b: i64) -> Vec<api_sessions_core::record::Record> {
    let payload = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'&";
    let mut r = record("evil", 1, b);
    r.path = format!("/search/{payload}");
    r.user = Some(payload.into());
    r.role = Some("=cmd|' /C calc'!A0".into());
    r.user_agent = Some(payload.into());
    r.params = vec![param("q", payload), param("formula", "@SUM(1+1)*cmd|' /C calc'!A0")];
    r.attack = attack(
        "xss",
        &format!("GET /search?q={payload} HTTP/1.1"),
        &[("Host", "x"), ("X-Evil", payload)],
        payload,
    );
    r.flows = vec!["<b>flow</b>".into()];
    let mut r2 = record("evil", 2, b + 1000);
    r2.path = "-2+3".into();
    r2.user = Some("+1".into());
    r2.method = "POST".into();
    r2.params = vec![param("note", "tab\there, \"quoted\", line\nbreak")];
    vec![r, r2]
}

async fn sessions_api_lists_filters_and_shows_one_session(kind: Kind) {
    let app = app(kind, None);
    let b = base();
    let mut records = hostile(b);
    let mut other = record("quiet", 3, b + 5000);
    other.key_hash = "key-evil".into();
    records.push(other);
    post(&app, ndjson(&records), &[]).await;

    let list = get(&app, "/api/sessions").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.headers[header::CONTENT_TYPE], "application/json");
    let list = list.json();
    assert_eq!(list["next_cursor"], Value::Null);
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let evil = &sessions[1];
    for field in [
        "session_id",
        "first_ts",
        "last_ts",
        "requests",
        "user",
        "role",
        "flows",
        "ips",
        "attacks",
        "nodes",
    ] {
        assert!(evil.get(field).is_some(), "missing {field}");
    }
    assert_eq!(evil["requests"], 2);
    assert_eq!(evil["flows"], json!({"<b>flow</b>": 1}));
    assert_eq!(evil["first_ts"], Value::String(api_sessions_core::time::Millis(b).to_rfc3339()));

    let page = get(&app, "/api/sessions?limit=1").await.json();
    assert_eq!(page["sessions"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = get(&app, &format!("/api/sessions?limit=1&cursor={cursor}")).await.json();
    assert_eq!(next["sessions"][0]["session_id"], "evil");

    let filtered = get(&app, "/api/sessions?method=post&from=&q=%2B1").await.json();
    assert_eq!(filtered["sessions"][0]["session_id"], "evil");
    assert_eq!(filtered["sessions"][0]["requests"], 1);

    for bad in ["from=soon", "status=abc", "limit=0", "limit=501", "cursor=x"] {
        let reply = get(&app, &format!("/api/sessions?{bad}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(reply.json()["error"].as_str().unwrap().starts_with("invalid"), "{bad}");
    }

    let one = get(&app, "/api/sessions/evil").await;
    assert_eq!(one.status, StatusCode::OK);
    let one = one.json();
    assert_eq!(one["session"]["requests"], 2);
    assert_eq!(one["stats"]["methods"], json!({"GET": 1, "POST": 1}));
    assert_eq!(one["stats"]["attacks"], json!({"xss": 1}));
    assert_eq!(one["related"], json!(["quiet"]));
    assert_eq!(
        one["requests"][0]["attack"]["request"]["headers"][1][1],
        hostile(b)[0].user.clone().unwrap()
    );
    // Records come back as stored, extras included.
    assert_eq!(one["requests"][1]["path"], "-2+3");

    let filtered = get(&app, "/api/sessions/evil?method=POST").await.json();
    assert_eq!(filtered["session"]["requests"], 1);
    assert_eq!(filtered["requests"].as_array().unwrap().len(), 1);

    let missing = get(&app, "/api/sessions/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["error"], "no such session");
}

async fn sessions_api_sorts_pages_back_and_forth_and_counts(kind: Kind) {
    let app = app(kind, None);
    let b = base();
    // Three sessions: "few" is the newest, "many" the longest and busiest, "bad" has attacks.
    let mut records = Vec::new();
    for n in 0..5 {
        records.push(record("many", n + 1, b + n as i64 * MINUTE));
    }
    for n in 0..2 {
        let mut r = record("bad", n + 10, b + MINUTE + n as i64 * 1000);
        r.attack = attack("sqli", "GET /?id=1' HTTP/1.1", &[], "");
        records.push(r);
    }
    records.push(record("few", 20, b + 10 * MINUTE));
    post(&app, ndjson(&records), &[]).await;

    let order = |query: &str| {
        let query = query.to_owned();
        let app = &app;
        async move {
            let reply = get(app, &format!("/api/sessions?{query}")).await;
            assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text());
            let body = reply.json();
            assert_eq!(body["total"], 3, "{query}");
            body["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["session_id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(order("").await, ["few", "many", "bad"]);
    assert_eq!(order("sort=last&order=asc").await, ["bad", "many", "few"]);
    assert_eq!(order("sort=first").await, ["few", "bad", "many"]);
    assert_eq!(order("sort=requests").await, ["many", "bad", "few"]);
    assert_eq!(order("sort=requests&order=asc").await, ["few", "bad", "many"]);
    assert_eq!(order("sort=duration").await, ["many", "bad", "few"]);
    assert_eq!(order("sort=attacks").await[0], "bad");
    // Request-level filters: only the selected requests are counted and ranked.
    let filtered = get(
        &app,
        &format!(
            "/api/sessions?sort=requests&to={}",
            api_sessions_core::time::Millis(b + MINUTE + 500).to_rfc3339()
        ),
    )
    .await
    .json();
    assert_eq!(filtered["total"], 2);
    assert_eq!(filtered["sessions"][0]["session_id"], "many");
    assert_eq!(filtered["sessions"][0]["requests"], 2);

    // Page by one, forward then back.
    let first = get(&app, "/api/sessions?sort=requests&limit=1").await.json();
    assert_eq!(first["prev_cursor"], Value::Null);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second =
        get(&app, &format!("/api/sessions?sort=requests&limit=1&cursor={cursor}")).await.json();
    assert_eq!(second["sessions"][0]["session_id"], "bad");
    assert_eq!(second["total"], 3);
    let back = second["prev_cursor"].as_str().unwrap();
    let again =
        get(&app, &format!("/api/sessions?sort=requests&limit=1&cursor={back}")).await.json();
    assert_eq!(again["sessions"], first["sessions"]);
    assert_eq!(again["prev_cursor"], Value::Null);
    assert_eq!(again["next_cursor"], first["next_cursor"]);

    for (bad, name) in [("sort=risky", "sort"), ("order=up", "order"), ("cursor=p1", "cursor")] {
        let reply = get(&app, &format!("/api/sessions?{bad}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        let error = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(&format!("\"{name}\"")), "{bad}: {error}");
    }

    // The list page shows the total and keeps the sort in its paging links.
    let html = get(&app, "/?sort=requests&order=asc&limit=1").await.text();
    assert!(html.contains("3 sessions"), "{html}");
    assert!(html.contains("sort=requests&amp;order=asc&amp;limit=1&amp;cursor="), "{html}");
    assert!(html.contains("<option value=\"requests\" selected=\"selected\">"), "{html}");
}

async fn bad_parameters_are_named_and_id_prefixes_resolve(kind: Kind) {
    let app = app(kind, None);
    let b = base();
    let records = [
        record("abcdef123456-one", 1, b),
        record("abcdef123456-two", 2, b + 1000),
        record("zyxwvu987654-solo", 3, b + 2000),
    ];
    post(&app, ndjson(&records), &[]).await;

    for (query, named) in [
        ("usr=alice", "`usr`"),
        ("user=a&user=b", "`user`"),
        ("from=2026-11-22T10:00&to=2026-11-22T09:00", "\"from\""),
        ("sort=risky", "\"sort\""),
        ("order=sideways", "\"order\""),
        ("limit=many", "\"limit\""),
    ] {
        for path in ["/api/sessions", "/api/sessions/zyxwvu987654-solo"] {
            let reply = get(&app, &format!("{path}?{query}")).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}?{query}");
            let error = reply.json()["error"].as_str().unwrap().to_owned();
            assert!(error.contains(named), "{path}?{query}: {error}");
        }
        let page = get(&app, &format!("/?{query}")).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "/?{query}");
        // Said on the page, where the list would be, with the form to correct it.
        let html = page.text();
        let shown = html.find("<p class=\"error\" role=\"alert\">").expect("an alert");
        assert!(html[shown..].contains(&named.replace('"', "&quot;")), "/?{query}: {html}");
        assert!(html.contains("<form class=\"filters\""), "/?{query}");
    }

    // A unique prefix of 12 characters or more stands for the session.
    let one = get(&app, "/api/sessions/zyxwvu987654").await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["session"]["session_id"], "zyxwvu987654-solo");
    let csv = get(&app, "/api/sessions/zyxwvu987654-s.csv").await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.text().contains("zyxwvu987654-solo"));
    // Shorter prefixes are not looked up.
    assert_eq!(get(&app, "/api/sessions/zyxwvu98765").await.status, StatusCode::NOT_FOUND);
    // Several matches: 409 with the candidates.
    let both = get(&app, "/api/sessions/abcdef123456").await;
    assert_eq!(both.status, StatusCode::CONFLICT);
    let body = both.json();
    assert_eq!(body["candidates"], json!(["abcdef123456-one", "abcdef123456-two"]));
    assert!(body["error"].as_str().unwrap().contains("\"abcdef123456\""), "{body}");
    // A whole id wins over the longer ids it is a prefix of.
    let mut exact = record("abcdef123456", 4, b + 3000);
    exact.key_hash = "another".into();
    post(&app, ndjson(&[exact]), &[]).await;
    let reply = get(&app, "/api/sessions/abcdef123456").await;
    assert_eq!(reply.json()["session"]["session_id"], "abcdef123456");

    // The page moves to the full address, keeping the query; an ambiguous one lists them.
    let moved = get(&app, "/sessions/zyxwvu987654?method=GET").await;
    assert_eq!(moved.status, StatusCode::SEE_OTHER);
    assert_eq!(moved.headers[header::LOCATION], "/sessions/zyxwvu987654-solo?method=GET");
    let listed = get(&app, "/sessions/abcdef123456-").await;
    assert_eq!(listed.status, StatusCode::CONFLICT);
    assert!(listed.text().contains("href=\"/sessions/abcdef123456-two\""));
}

async fn session_requests_are_numbered_across_pages(kind: Kind) {
    let app = app(kind, None);
    let b = base();
    let records: Vec<_> = (0..7).map(|n| record("long", n + 1, b + n as i64 * 1000)).collect();
    post(&app, ndjson(&records), &[]).await;

    let mut offsets = Vec::new();
    let mut seen = Vec::new();
    let mut uri = "/api/sessions/long?limit=3".to_owned();
    loop {
        let page = get(&app, &uri).await.json();
        assert_eq!(page["requests_total"], 7);
        offsets.push(page["requests_offset"].as_u64().unwrap());
        for request in page["requests"].as_array().unwrap() {
            seen.push(request["request_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/api/sessions/long?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(offsets, [0, 3, 6]);
    let expected: Vec<String> = records.iter().map(|r| r.request_id.clone()).collect();
    assert_eq!(seen, expected);

    // Filtered: the numbering counts the selected requests only.
    let to = api_sessions_core::time::Millis(b + 4000).to_rfc3339();
    let first = get(&app, &format!("/api/sessions/long?limit=2&to={to}")).await.json();
    assert_eq!(first["requests_offset"], 0);
    assert_eq!(first["requests_total"], 5);
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let uri = format!("/api/sessions/long?limit=2&to={to}&cursor={cursor}");
    let second = get(&app, &uri).await.json();
    assert_eq!(second["requests_offset"], 2);

    // The page says where it is, numbers its rows on, and links each request on its own.
    let html = get(&app, &format!("/sessions/long?cursor={cursor}")).await.text();
    assert!(html.contains("Requests 3–7 of 7"), "{html}");
    // Anchors name the request, so they keep their meaning across pages and filters.
    let anchor = format!("<a href=\"#request-{}\">3</a>", records[2].request_id);
    assert!(html.contains(&anchor), "{html}");
    assert!(html.contains(&format!("id=\"request-{}\"", records[6].request_id)), "{html}");
    let link = format!("href=\"/sessions/long?request_id={}\"", records[2].request_id);
    assert!(html.contains(&link), "{html}");
}

async fn csv_export_is_rfc_4180_with_formulas_neutralised(kind: Kind) {
    let app = app(kind, None);
    let b = base();
    post(&app, ndjson(&hostile(b)), &[]).await;

    let reply = get(&app, "/api/sessions/evil.csv").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(
        reply.headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"session-evil.csv\""
    );
    let csv = reply.text();
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(
        lines[0],
        "time,session_id,request_id,node,method,path,status,duration_ms,request_bytes,\
         response_bytes,ip,user,role,flows,params,attack,user_agent"
    );
    // Formula cells get a leading quote; cells with quotes, commas or line breaks are quoted.
    assert!(csv.contains(",'=cmd|' /C calc'!A0,"), "{csv}");
    assert!(csv.contains(",'-2+3,"), "{csv}");
    assert!(csv.contains(",'+1,"), "{csv}");
    assert!(
        csv.contains("\"q=<script>alert(1)</script><img src=x onerror=alert(2)>\"\"'&; formula=@SUM(1+1)*cmd|' /C calc'!A0\""),
        "{csv}"
    );
    assert!(csv.contains(",\"note=tab\there, \"\"quoted\"\", line\nbreak\","), "{csv}");
    assert!(csv.ends_with("\r\n"));

    // The in-session filters apply.
    let post_only = get(&app, "/api/sessions/evil.csv?method=POST").await.text();
    assert_eq!(post_only.matches("\r\n").count(), 2, "{post_only}");

    assert_eq!(get(&app, "/api/sessions/nope.csv").await.status, StatusCode::NOT_FOUND);
}

async fn pages_render_captured_data_as_text_with_a_strict_policy(kind: Kind) {
    let app = app(kind, None);
    let b = base();
    post(&app, ndjson(&hostile(b)), &[]).await;

    let list = get(&app, "/?user=%3Cscript%3E").await;
    assert_eq!(list.status, StatusCode::OK);
    let page = get(&app, "/sessions/evil").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    for html in [list.text(), page.text()] {
        assert!(!html.contains("<script>alert"), "raw script in page");
        assert!(!html.contains("<img src=x"), "raw img in page");
        assert!(!html.contains("<b>flow"), "raw markup in page");
        assert!(!html.contains(" style="), "inline style would be blocked by the CSP");
    }
    let html = page.text();
    assert!(html.contains(
        "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;&quot;&#39;&amp;"
    ));
    // Request line, headers and body of the malicious request are all there.
    assert!(html.contains("GET /search?q=&lt;script&gt;"));
    assert!(html.contains("X-Evil: &lt;script&gt;"));
    assert!(html.contains("<svg"), "charts are SVG");
    assert!(html.contains("/api/sessions/evil.csv"));

    // Filters travel in links, encoded.
    let filtered = get(&app, "/sessions/evil?method=POST&user=a%22b").await.text();
    assert!(
        filtered.contains("href=\"/sessions/evil?user=a%22b\""),
        "show all requests keeps session-level filters"
    );
    assert!(filtered.contains("href=\"/api/sessions/evil.csv?user=a%22b&amp;method=POST\""));

    for uri in [
        "/",
        "/sessions/evil",
        "/sessions/nope",
        "/api/sessions",
        "/static/app.css",
        "/static/app.js",
        "/nowhere",
    ] {
        let reply = get(&app, uri).await;
        assert_eq!(reply.headers[header::CONTENT_SECURITY_POLICY], CSP, "{uri}");
        assert_eq!(reply.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{uri}");
    }
    assert_eq!(get(&app, "/sessions/nope").await.status, StatusCode::NOT_FOUND);
    assert_eq!(get(&app, "/nowhere").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&app, "/static/app.js").await.headers[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    let bad = get(&app, "/?from=whenever").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text().contains("invalid &quot;from&quot; &quot;whenever&quot;"));
}

/// `user`, `role`, `flow`, `attack` and `ua` match any value seen in a session, whatever the
/// case; the list carries the users in order and the User-Agents; the inputs get suggestions.
async fn filters_match_any_value_seen_and_inputs_get_suggestions(kind: Kind) {
    let app = app(kind, None);
    let b = base();
    let mut records = Vec::new();
    for n in 1..=6u64 {
        let mut r = record("shared", n, b + n as i64 * MINUTE);
        r.user = Some(if n <= 4 { "dana" } else { "alice" }.into());
        r.flows = if n == 2 { vec!["billing".into()] } else { vec![] };
        r.user_agent = Some(if n <= 4 { "Mozilla/5.0 Firefox/133.0" } else { "curl/8.5.0" }.into());
        if n == 6 {
            r.attack = attack("sqli", "GET /?id=1' HTTP/1.1", &[], "");
        }
        records.push(r);
    }
    // Out of order, and one of them twice.
    records.reverse();
    records.push(records[0].clone());
    let reply = post(&app, ndjson(&records), &[]).await;
    assert_eq!(reply.json()["duplicates"], 1);
    post(&app, ndjson(&[record("other", 10, b)]), &[]).await;

    for query in [
        "user=dana",
        "user=DANA",
        "user=Alice",
        "flow=Billing",
        "ua=FIREFOX",
        "ua=curl%2F8",
        "attack=SQLI",
    ] {
        let listed = get(&app, &format!("/api/sessions?{query}")).await.json();
        assert_eq!(listed["total"], 1, "{query}: {listed}");
        let session = &listed["sessions"][0];
        assert_eq!(session["session_id"], "shared", "{query}");
        assert_eq!(session["user"], "alice", "{query}");
        assert_eq!(session["users"], json!(["dana", "alice"]), "{query}");
        assert_eq!(
            session["user_agents"],
            json!(["Mozilla/5.0 Firefox/133.0", "curl/8.5.0"]),
            "{query}"
        );
    }
    for query in ["user=dan", "ua=wget", "flow=auth", "attack=xss", "user=dana&attack=%C2%9A&ua=x"]
    {
        let listed = get(&app, &format!("/api/sessions?{query}")).await.json();
        assert_eq!(listed["total"], 0, "{query}: {listed}");
    }
    let one = get(&app, "/api/sessions/shared?user=DANA").await.json();
    assert_eq!(one["session"]["users"], json!(["dana", "alice"]));

    let suggested = get(&app, "/api/suggest?field=user&prefix=DA").await;
    assert_eq!(suggested.status, StatusCode::OK);
    assert_eq!(suggested.json(), json!({"field": "user", "values": ["dana"]}));
    let agents = get(&app, "/api/suggest?field=ua&prefix=8.5").await.json();
    assert_eq!(agents["values"], json!(["curl/8.5.0"]));
    let users = get(&app, "/api/suggest?field=user&limit=1").await.json();
    assert_eq!(users["values"], json!(["alice"]));
    for (query, named) in [
        ("prefix=a", "\"field\""),
        ("field=name", "\"field\" \"name\""),
        ("field=user&limit=0", "\"limit\""),
        ("field=user&q=a", "`q`"),
    ] {
        let reply = get(&app, &format!("/api/suggest?{query}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        let error = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(named), "{query}: {error}");
    }

    // The list: the `ua` input, the User-Agent column, suggestions from the data.
    let html = get(&app, "/?ua=firefox").await.text();
    assert!(html.contains("name=\"ua\" value=\"firefox\""), "{html}");
    assert!(html.contains("<th>User agent</th>"));
    assert!(html.contains("title=\"Mozilla/5.0 Firefox/133.0\ncurl/8.5.0\""), "{html}");
    assert!(html.contains("+1 more"));
    assert!(html
        .contains("<datalist id=\"values-user\"><option value=\"alice\"><option value=\"dana\">"));
    assert!(html.contains("<option value=\"curl/8.5.0\">"));
    // The session: its users in order.
    let html = get(&app, "/sessions/shared?user=dana").await.text();
    assert!(html.contains("<dt>Users</dt><dd>dana → alice</dd>"), "{html}");
}

on_every_store!(async
    post_records_stores_good_lines_and_reports_bad_ones_by_number,
    post_records_accepts_gzip_and_rejects_what_it_cannot_decode,
    oversized_bodies_get_a_clear_413,
    the_token_guards_ingest,
    sessions_api_lists_filters_and_shows_one_session,
    sessions_api_sorts_pages_back_and_forth_and_counts,
    bad_parameters_are_named_and_id_prefixes_resolve,
    session_requests_are_numbered_across_pages,
    csv_export_is_rfc_4180_with_formulas_neutralised,
    pages_render_captured_data_as_text_with_a_strict_policy,
    filters_match_any_value_seen_and_inputs_get_suggestions,
);
