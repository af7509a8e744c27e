//! Endpoints through the stores and the API, on SQLite and ClickHouse: each record's endpoint,
//! per endpoint-hour statistics that add up exactly over any time range, the cap per server,
//! `GET /api/endpoints` with its filters, the sessions that called an endpoint, and the
//! outliers of a session's requests.

mod fixtures;

use std::path::PathBuf;
use std::sync::Arc;

use api_sessions::app::{router, AppState};
use api_sessions::endpoints::list::{page_of, summaries, EndpointParams};
use api_sessions::endpoints::openapi::OpenApi;
use api_sessions::endpoints::stats::{Observation, Stats};
use api_sessions::endpoints::Endpoints;
use api_sessions::store::clickhouse::{ClickHouseStore, Config};
use api_sessions::store::endpoints::EndpointKey;
use api_sessions::store::sqlite::SqliteStore;
use api_sessions::store::{EndpointRange, Store};
use api_sessions_core::record::Record;
use api_sessions_core::time::Millis;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use fixtures::*;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const SPEC: &str = "openapi: 3.1.0
info: {title: shop, version: '1'}
paths:
  /orders/{orderId}:
    get:
      parameters: [{name: orderId, in: path}]
    delete:
      deprecated: true
  /reports:
    get: {}
";

/// Where a store lives, so that it can be opened again.
enum Place {
    Sqlite(tempfile::TempDir),
    ClickHouse(String),
}

impl Place {
    fn new(kind: Kind) -> Place {
        match kind {
            Kind::Sqlite => Place::Sqlite(tempfile::tempdir().unwrap()),
            Kind::ClickHouse => Place::ClickHouse(fixtures::clickhouse::database_url()),
        }
    }

    fn open(&self, endpoints: &Arc<Endpoints>) -> Arc<dyn Store> {
        match self {
            Place::Sqlite(dir) => Arc::new(
                SqliteStore::open_with(
                    &dir.path().join("e.db"),
                    WEEK,
                    endpoints.clone(),
                    Default::default(),
                )
                .unwrap(),
            ),
            Place::ClickHouse(url) => Arc::new(
                ClickHouseStore::open_with(
                    Config::parse(url).unwrap(),
                    WEEK,
                    endpoints.clone(),
                    Default::default(),
                )
                .unwrap(),
            ),
        }
    }
}

fn documented() -> Arc<Endpoints> {
    Arc::new(Endpoints::new(Some(OpenApi::from_texts([("shop.yaml", SPEC)]).unwrap())))
}

fn request(session: &str, n: u64, ts: i64, method: &str, path: &str) -> Record {
    let mut r = record(session, n, ts);
    r.method = method.into();
    r.path = path.into();
    r.duration_ms = 10.0;
    r.response_bytes = 1000;
    r
}

/// Three sessions on a documented, a deprecated and an undocumented endpoint, with one slow
/// and one large request.
fn shop(b: i64) -> Vec<Record> {
    let mut records = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    for i in 0..30 {
        let session = ["s1", "s2", "s3"][i % 3];
        let k = next();
        records.push(request(
            session,
            k,
            b + k as i64 * 1000,
            "GET",
            &format!("/orders/{}", 100 + i),
        ));
    }
    records[4].duration_ms = 500.0;
    records[7].response_bytes = 100_000;
    for _ in 0..5 {
        let k = next();
        let mut r = request("s2", k, b + k as i64 * 1000, "DELETE", "/orders/7");
        r.status = 403;
        records.push(r);
    }
    records[31].attack = attack("bola", "DELETE /orders/7 HTTP/1.1", &[], "");
    for _ in 0..4 {
        let k = next();
        let mut r = request("s4", k, b + k as i64 * 1000, "POST", "/auth/login");
        r.flows = vec!["auth".into()];
        records.push(r);
    }
    records
}

struct App {
    router: axum::Router,
    store: Arc<dyn Store>,
    _place: Place,
}

fn app(kind: Kind) -> App {
    let endpoints = documented();
    let place = Place::new(kind);
    let store = place.open(&endpoints);
    let state = AppState {
        store: store.clone(),
        ingest_token: None,
        access: Default::default(),
        endpoints,
    };
    App { router: router(Arc::new(state)), store, _place: place }
}

async fn get(app: &App, uri: &str) -> (StatusCode, Value) {
    let request = Request::get(uri).body(Body::empty()).unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, value)
}

fn names(list: &Value) -> Vec<String> {
    list["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["endpoint"].as_str().unwrap().to_owned())
        .collect()
}

async fn endpoints_are_listed_with_statistics_spec_and_flows(kind: Kind) {
    let app = app(kind);
    let b = base();
    let records = shop(b);
    ingest(&*app.store, &records[..20]);
    ingest(&*app.store, &records[20..]);

    let (status, list) = get(&app, "/api/endpoints").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["total"], 4);
    assert_eq!(
        names(&list),
        ["GET /orders/{orderId}", "DELETE /orders/{orderId}", "POST /auth/login", "GET /reports"]
    );
    let orders = &list["endpoints"][0];
    assert_eq!(orders["server"], "api.example.com");
    assert_eq!(orders["method"], "GET");
    assert_eq!(orders["template"], "/orders/{orderId}");
    assert_eq!(orders["requests"], 30);
    assert_eq!(orders["sessions"], 3);
    assert_eq!(orders["statuses"], serde_json::json!({"2xx": 30}));
    assert_eq!(orders["spec"], "documented");
    assert_eq!(orders["attacks"], 0);
    let p50 = orders["duration_ms"]["p50"].as_f64().unwrap();
    assert!((p50 - 10.0).abs() <= 0.1, "{p50}");
    assert!(orders["response_bytes"]["p95"].as_f64().unwrap() < 1011.0);
    assert_eq!(orders["first_ts"], Millis(b + 1000).to_rfc3339());
    assert_eq!(orders["last_ts"], Millis(b + 30_000).to_rfc3339());

    let delete = &list["endpoints"][1];
    assert_eq!((delete["spec"].as_str(), delete["attacks"].as_u64()), (Some("zombie"), Some(1)));
    assert_eq!(delete["statuses"], serde_json::json!({"4xx": 5}));
    let login = &list["endpoints"][2];
    assert_eq!(login["spec"], "shadow");
    assert_eq!(login["flows"], serde_json::json!({"auth": 4}));
    assert_eq!(
        login["auto_flows"],
        serde_json::json!([{"flow": "auth", "word": "auth", "in": "path"}])
    );
    let reports = &list["endpoints"][3];
    assert_eq!((reports["spec"].as_str(), reports["requests"].as_u64()), (Some("unused"), Some(0)));
    assert_eq!(reports["server"], Value::Null);

    for (query, expected) in [
        ("spec=zombie", vec!["DELETE /orders/{orderId}"]),
        ("method=post", vec!["POST /auth/login"]),
        ("q=ORDERS", vec!["GET /orders/{orderId}", "DELETE /orders/{orderId}"]),
        ("flow=auth", vec!["POST /auth/login"]),
        ("server=other.example", vec![]),
        ("sort=attacks&spec=zombie", vec!["DELETE /orders/{orderId}"]),
        ("sort=requests&order=asc&limit=2", vec!["GET /reports", "POST /auth/login"]),
        (
            "sort=requests&order=asc&limit=2&cursor=2",
            vec!["DELETE /orders/{orderId}", "GET /orders/{orderId}"],
        ),
    ] {
        let (status, list) = get(&app, &format!("/api/endpoints?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {list}");
        assert_eq!(names(&list), expected, "{query}");
    }
    let (_, first) = get(&app, "/api/endpoints?limit=3").await;
    assert_eq!((first["total"].as_u64(), first["next_cursor"].as_str()), (Some(4), Some("3")));

    // Only the requests of the range count.
    let to = Millis(b + 10_000).to_rfc3339();
    let (_, early) = get(&app, &format!("/api/endpoints?to={to}&spec=documented")).await;
    assert_eq!(early["endpoints"][0]["requests"], 10);

    for bad in ["nope=1", "spec=maybe", "sort=fastest", "limit=0", "from=yesterday"] {
        let (status, message) = get(&app, &format!("/api/endpoints?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {message}");
    }
}

async fn sessions_that_called_an_endpoint_and_outliers(kind: Kind) {
    let app = app(kind);
    let b = base();
    ingest(&*app.store, &shop(b));

    let (status, list) = get(&app, "/api/sessions?endpoint=GET+%2Forders%2F%7BorderId%7D").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let mut ids: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["s1", "s2", "s3"]);
    // s2 also called DELETE: only the matching requests are counted.
    let s2 = list["sessions"].as_array().unwrap().iter().find(|s| s["session_id"] == "s2").unwrap();
    assert_eq!(s2["requests"], 10);
    let (_, list) = get(&app, "/api/sessions?endpoint=POST+/auth/login").await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(list["sessions"][0]["session_id"], "s4");
    let (status, _) = get(&app, "/api/sessions?endpoint=GET").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, session) = get(&app, "/api/sessions/s2").await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let requests = session["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 15);
    let slow = requests.iter().find(|r| r["duration_ms"] == 500.0).unwrap();
    assert_eq!(slow["endpoint"], "GET /orders/{orderId}");
    assert_eq!(slow["outliers"], serde_json::json!(["duration_ms"]));
    assert_eq!(slow["endpoint_stats"]["spec"], "documented");
    assert_eq!(slow["endpoint_stats"]["requests"], 30);
    let large = requests.iter().find(|r| r["response_bytes"] == 100_000).unwrap();
    assert_eq!(large["outliers"], serde_json::json!(["response_bytes"]));
    let usual = requests.iter().find(|r| r["path"] == "/orders/101").unwrap();
    assert_eq!(usual["outliers"], serde_json::json!([]));
    // Too few requests to tell what is usual.
    let delete = requests.iter().find(|r| r["method"] == "DELETE").unwrap();
    assert_eq!(delete["endpoint"], "DELETE /orders/{orderId}");
    assert_eq!(delete["endpoint_stats"]["spec"], "zombie");
    assert_eq!(delete["endpoint_stats"]["attacks"], 1);
    assert_eq!(delete["outliers"], serde_json::json!([]));
    // The record's own fields are untouched.
    assert_eq!(slow["request_id"].as_str().unwrap(), "s2-req-5");
}

/// The statistics of any range are those of its requests, counted one by one.
fn ranges_are_counted_exactly(kind: Kind) {
    let place = Place::new(kind);
    let store = place.open(&Arc::new(Endpoints::default()));
    let b = base() - base() % HOUR - HOUR;
    let mut records = Vec::new();
    for n in 0..600u64 {
        let ts = b + (n as i64 * 7_919_113) % (3 * HOUR) + 17;
        let session = format!("s{}", n % 37);
        let mut r =
            request(&session, n, ts, ["GET", "POST"][(n % 2) as usize], &format!("/x/{}", n % 3));
        r.duration_ms = (n % 101) as f64 * 1.7;
        r.response_bytes = n * 31 % 9000;
        r.status = [200, 404, 500, 302][(n % 4) as usize];
        if n % 13 == 0 {
            r.flows = vec!["billing".into()];
        }
        if n % 29 == 0 {
            r.attack = attack("sqli", "GET /x HTTP/1.1", &[], "");
        }
        records.push(r);
    }
    for chunk in records.chunks(97) {
        ingest(&*store, chunk);
    }
    let ranges = [
        (None, None),
        (Some(b + HOUR), Some(b + 2 * HOUR - 1)),
        (Some(b + 13 * MINUTE + 5), Some(b + 2 * HOUR + 41 * MINUTE)),
        (Some(b + 61 * MINUTE), Some(b + 62 * MINUTE)),
        (Some(b + 2 * HOUR + 7), None),
    ];
    for (from, to) in ranges {
        let range = EndpointRange { from: from.map(Millis), to: to.map(Millis), only: None };
        let got = store.endpoints(&range).unwrap();
        let mut expected: std::collections::BTreeMap<EndpointKey, Stats> = Default::default();
        for r in &records {
            if from.is_some_and(|f| r.ts.0 < f) || to.is_some_and(|t| r.ts.0 > t) {
                continue;
            }
            let key = EndpointKey {
                server: r.server.clone(),
                method: r.method.clone(),
                template: "/x/{id}".into(),
            };
            let observation = Observation {
                ts: r.ts.0,
                status: r.status,
                duration_ms: r.duration_ms,
                response_bytes: r.response_bytes,
                session_id: &r.session_id,
                attack: r.attack.is_some(),
            };
            expected.entry(key).or_default().add(&observation, r.flows.iter().map(String::as_str));
        }
        let got: Vec<(EndpointKey, Stats)> =
            got.into_iter().map(|m| (m.endpoint, m.stats)).collect();
        let expected: Vec<(EndpointKey, Stats)> = expected.into_iter().collect();
        assert_eq!(got, expected, "{from:?}..{to:?}");
    }
    let only = EndpointRange {
        only: Some(vec![EndpointKey {
            server: "api.example.com".into(),
            method: "POST".into(),
            template: "/x/{id}".into(),
        }]),
        ..EndpointRange::default()
    };
    let got = store.endpoints(&only).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].stats.requests, 300);
}

/// Past 2,000 templates a server's new endpoints fold into `* {other}`; what was kept survives
/// a restart.
fn endpoints_per_server_are_capped(kind: Kind) {
    let place = Place::new(kind);
    let endpoints = Arc::new(Endpoints::default());
    let store = place.open(&endpoints);
    let b = base();
    let records: Vec<Record> = (0..2003u64)
        .map(|n| request("scan", n, b + n as i64, "GET", &format!("/admin-page-{}", n * 7 % 2003)))
        .collect();
    for chunk in records.chunks(500) {
        ingest(&*store, chunk);
    }
    let all = store.endpoints(&EndpointRange::default()).unwrap();
    assert_eq!(all.len(), 2001);
    let other = all.iter().find(|m| m.endpoint.template == "{other}").unwrap();
    assert_eq!((other.endpoint.method.as_str(), other.stats.requests), ("*", 3));
    drop(store);

    let store = place.open(&endpoints);
    let later = request("scan", 5000, b + 5000, "GET", "/admin-page-new");
    let known = request("scan", 5001, b + 5001, "GET", "/admin-page-0");
    ingest(&*store, &[later, known]);
    let all = store.endpoints(&EndpointRange::default()).unwrap();
    assert_eq!(all.len(), 2001);
    let other = all.iter().find(|m| m.endpoint.template == "{other}").unwrap();
    assert_eq!(other.stats.requests, 4);
    let first = all.iter().find(|m| m.endpoint.template == "/admin-page-0").unwrap();
    assert_eq!(first.stats.requests, 2);
}

/// Pages read from the totals, measuring only their endpoints, are the pages of the full
/// sort of every endpoint measured in full: for each sort, order, filter and range, page after
/// page.
fn pages_follow_the_full_sort(kind: Kind) {
    let place = Place::new(kind);
    let endpoints = documented();
    let store = place.open(&endpoints);
    let b = base() - base() % HOUR - 30 * HOUR;
    let mut records = Vec::new();
    for n in 0..1500u64 {
        // Endpoints with different counts, spread unevenly over a day and a half.
        let e = (n * n) % 23;
        let ts = b + (n as i64 * 7_919_113) % (36 * HOUR) + 17;
        let session = format!("s{}", n % (5 + e));
        let (method, path) = match e {
            0 => ("GET", "/orders/12".to_owned()),
            1 => ("DELETE", "/orders/7".to_owned()),
            _ => (["GET", "POST"][(e % 2) as usize], format!("/svc{e}/{n}")),
        };
        let mut r = request(&session, n, ts, method, &path);
        r.duration_ms = ((n * 7 + e * 13) % 97) as f64 * 1.3;
        r.response_bytes = (n * 31 + e * 1000) % 9000;
        r.status = [200, 404, 500, 302, 201][((n + e) % 5) as usize];
        if e % 4 == 0 {
            r.flows = vec!["billing".into()];
        }
        if (n + e) % 17 == 0 {
            r.attack = attack("sqli", "GET /x HTTP/1.1", &[], "");
        }
        records.push(r);
    }
    for chunk in records.chunks(111) {
        ingest(&*store, chunk);
    }
    let ranges = [
        String::new(),
        format!("&from={}&to={}", Millis(b + 3 * HOUR + 5), Millis(b + 29 * HOUR + 7)),
    ];
    let filters = ["", "&flow=billing", "&method=post", "&q=svc1", "&spec=shadow"];
    for sort in
        ["requests", "sessions", "attacks", "errors", "duration", "size", "last", "endpoint"]
    {
        for order in ["desc", "asc"] {
            for range in &ranges {
                for filter in filters {
                    let text = format!("sort={sort}&order={order}{range}{filter}");
                    let params = |extra: &str| {
                        let uri: axum::http::Uri = format!("/?{text}{extra}").parse().unwrap();
                        axum::extract::Query::<EndpointParams>::try_from_uri(&uri)
                            .unwrap()
                            .0
                            .query()
                            .unwrap()
                    };
                    let all = params("&limit=10000");
                    let reference =
                        all.page(summaries(&endpoints, store.endpoints(&all.range()).unwrap()));
                    assert!(reference.total > 0 || !filter.is_empty(), "{text}");
                    let mut paged = Vec::new();
                    let mut cursor = String::new();
                    loop {
                        let query = params(&format!("&limit=4{cursor}"));
                        let page = page_of(&*store, &endpoints, &query).unwrap();
                        assert_eq!(page.total, reference.total, "{text}");
                        paged.extend(page.endpoints);
                        match page.next_cursor {
                            Some(next) => cursor = format!("&cursor={next}"),
                            None => break,
                        }
                    }
                    assert_eq!(paged, reference.endpoints, "{text}");
                }
            }
        }
    }
}

mod sync_tests {
    use super::*;
    on_every_store!(
        ranges_are_counted_exactly,
        endpoints_per_server_are_capped,
        pages_follow_the_full_sort
    );
}

on_every_store!(
    async endpoints_are_listed_with_statistics_spec_and_flows,
    sessions_that_called_an_endpoint_and_outliers,
);

#[test]
fn a_bad_document_stops_serve_with_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let spec: PathBuf = dir.path().join("shop.yaml");
    std::fs::write(
        &spec,
        "openapi: 3.0.0\npaths:\n  /orders:\n    get:\n      deprecated: maybe\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_api-sessions"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("x.db"))
        .arg("--openapi")
        .arg(&spec)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid OpenAPI document: expected true or false")
            && stderr.contains("shop.yaml:5"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");
}
