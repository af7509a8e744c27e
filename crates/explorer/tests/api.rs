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
    wrong_version["v"] = json!(2);
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
    assert!(rejected[2]["error"].as_str().unwrap().contains("unsupported record version 2"));
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

on_every_store!(async
    post_records_stores_good_lines_and_reports_bad_ones_by_number,
    post_records_accepts_gzip_and_rejects_what_it_cannot_decode,
    oversized_bodies_get_a_clear_413,
    the_token_guards_ingest,
    sessions_api_lists_filters_and_shows_one_session,
    csv_export_is_rfc_4180_with_formulas_neutralised,
    pages_render_captured_data_as_text_with_a_strict_policy,
);
