//! The denylist on both stores: blocking by session (id or prefix) and by key hash, the module's
//! document with its version and `ETag`/`If-None-Match`, expiry, unblocking, the audit log and
//! its retention, bad input, the tokens and the cross-site checks, and `--auto-block`.

mod fixtures;

use std::sync::Arc;

use api_sessions::app::{router, AppState};
use api_sessions::auth::{Access, SecureCookies, CSRF_COOKIE};
use api_sessions::auto_block::{AutoBlock, AutoBlocking};
use api_sessions::store::denylist::{Action, Change, Entry};
use api_sessions::store::Store;
use api_sessions_core::record::Record;
use api_sessions_core::time::Millis;
use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use fixtures::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const UI_TOKEN: &str = "denylist-test-ui-token-0123456789";
const INGEST_TOKEN: &str = "denylist-test-ingest-token";
const STUFFER: &str = "7c0b9e2a41d35f68b2e4a9c1d0f37e5b";
const SHOPPER: &str = "2f4e6a8c0b1d3f5e7a9c2b4d6f8e0a1c";

struct App {
    router: Router,
    store: TempStore,
}

fn app_on(store: TempStore, ui_token: Option<&str>, ingest_token: Option<&str>) -> App {
    let state = AppState {
        store: store.store.clone(),
        ingest_token: ingest_token.map(str::to_owned),
        access: Access::new(ui_token.map(str::to_owned), SecureCookies::Auto),
        endpoints: Default::default(),
    };
    App { router: router(Arc::new(state)), store }
}

fn app(kind: Kind) -> App {
    app_on(kind.store(), None, None)
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_else(|| panic!("no error: {}", self.body)).into()
    }
}

async fn send(app: &App, request: Request<Body>) -> Reply {
    let response = app.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

async fn get(app: &App, uri: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(app, request.body(Body::empty()).unwrap()).await
}

async fn post_json(app: &App, uri: &str, body: Value, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(app, request.body(Body::from(body.to_string())).unwrap()).await
}

async fn delete(app: &App, uri: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::delete(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(app, request.body(Body::empty()).unwrap()).await
}

async fn post_records(app: &App, records: &[Record], headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::post("/v1/records");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let reply = send(app, request.body(Body::from(ndjson(records))).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply
}

/// A credential stuffer's session, with a key hash as the module writes them, and a customer's.
fn traffic(b: i64) -> Vec<Record> {
    let mut records = Vec::new();
    for i in 0..30u64 {
        let mut r = record("a91f0c3e5d7b2e4f6a8c0d1e3f5a7b9c", i + 1, b + i as i64 * 600);
        r.key_hash = STUFFER.into();
        r.method = "POST".into();
        r.path = "/api/v1/login".into();
        r.status = 401;
        r.flows = vec!["auth".into()];
        r.ip = "203.0.113.99".into();
        r.user_agent = Some("python-requests/2.31".into());
        records.push(r);
    }
    let pages = ["/api/v1/login", "/api/v1/products", "/api/v1/cart", "/api/v1/orders"];
    for (i, page) in pages.iter().enumerate() {
        let mut r =
            record("5e8d1b7f3a2c4e6f8a0b1c2d3e4f5a6b", 100 + i as u64, b + i as i64 * 40_000);
        r.key_hash = SHOPPER.into();
        r.path = page.to_string();
        r.user = Some("alice".into());
        r.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0".into());
        records.push(r);
    }
    records
}

fn keys(document: &Value) -> Vec<String> {
    document["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("not a document: {document}"))
        .iter()
        .map(|entry| entry["key_hash"].as_str().unwrap().to_owned())
        .collect()
}

async fn block_serve_and_unblock(kind: Kind) {
    let app = app(kind);
    post_records(&app, &traffic(base()), &[]).await;

    let empty = get(&app, "/v1/denylist", &[]).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.json(), json!({"version": 0, "entries": []}));
    let first_tag = empty.headers[header::ETAG].to_str().unwrap().to_owned();

    // By a prefix of the session id: the session's key is blocked for an hour.
    let before = Millis::now().0;
    let blocked = post_json(
        &app,
        "/api/denylist",
        json!({"session_id": "a91f0c3e5d7b2e4f", "ttl": "1h", "reason": "credential stuffing"}),
        &[],
    )
    .await;
    assert_eq!(blocked.status, StatusCode::CREATED, "{}", blocked.body);
    let changed = blocked.json();
    assert_eq!(changed["version"], 1);
    assert_eq!(changed["entry"]["key_hash"], STUFFER);
    assert_eq!(changed["entry"]["session_id"], "a91f0c3e5d7b2e4f6a8c0d1e3f5a7b9c");
    assert_eq!(changed["entry"]["created_by"], "api");
    let expires = Millis::parse(changed["entry"]["expires"].as_str().unwrap()).unwrap().0;
    assert!((before + 3_600_000..=Millis::now().0 + 3_600_000).contains(&expires));

    let document = get(&app, "/v1/denylist", &[]).await;
    assert_eq!(document.status, StatusCode::OK);
    assert_eq!(document.headers[header::CONTENT_TYPE], "application/json");
    let value = document.json();
    assert_eq!(value["version"], 1);
    assert_eq!(
        value["entries"],
        json!([{"key_hash": STUFFER, "expires": changed["entry"]["expires"],
                "reason": "credential stuffing"}])
    );
    let tag = document.headers[header::ETAG].to_str().unwrap().to_owned();
    assert_ne!(tag, first_tag);

    // The module's next fetch: nothing new.
    let same = get(&app, "/v1/denylist", &[("If-None-Match", &tag)]).await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);
    assert!(same.body.is_empty());
    assert_eq!(same.headers[header::ETAG], tag.as_str());
    let stale = get(&app, "/v1/denylist", &[("If-None-Match", &first_tag)]).await;
    assert_eq!(stale.status, StatusCode::OK);

    // By key hash, without end; then the stuffer's block renewed with another reason.
    let by_key = post_json(
        &app,
        "/api/denylist",
        json!({"key_hash": SHOPPER.to_uppercase(), "ttl": null, "reason": "test"}),
        &[],
    )
    .await;
    assert_eq!(by_key.status, StatusCode::CREATED, "{}", by_key.body);
    assert_eq!(by_key.json()["version"], 2);
    let renewed = post_json(
        &app,
        "/api/denylist",
        json!({"key_hash": STUFFER, "ttl": "7d", "reason": "credential stuffing, confirmed"}),
        &[],
    )
    .await;
    assert_eq!(renewed.json()["version"], 3);
    let value = get(&app, "/v1/denylist", &[("If-None-Match", &tag)]).await.json();
    assert_eq!(value["version"], 3);
    let mut listed = keys(&value);
    listed.sort();
    assert_eq!(listed, [SHOPPER, STUFFER]);
    let shopper = value["entries"].as_array().unwrap().iter().find(|e| e["key_hash"] == SHOPPER);
    assert_eq!(shopper.unwrap()["expires"], Value::Null);

    let unblocked = delete(&app, &format!("/api/denylist/{SHOPPER}"), &[]).await;
    assert_eq!(unblocked.status, StatusCode::OK, "{}", unblocked.body);
    assert_eq!(unblocked.json()["version"], 4);
    let again = delete(&app, &format!("/api/denylist/{SHOPPER}"), &[]).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.error(), "this key is not on the denylist");
    assert_eq!(keys(&get(&app, "/v1/denylist", &[]).await.json()), [STUFFER]);

    // Who blocked what, when and why.
    let listing = get(&app, "/api/denylist", &[]).await.json();
    assert_eq!(listing["version"], 4);
    assert_eq!(listing["entries"].as_array().unwrap().len(), 1);
    assert_eq!(listing["entries"][0]["reason"], "credential stuffing, confirmed");
    let audit: Vec<(u64, String, String)> = listing["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| {
            (
                line["version"].as_u64().unwrap(),
                line["action"].as_str().unwrap().to_owned(),
                line["key_hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        (4, "unblock", SHOPPER),
        (3, "block", STUFFER),
        (2, "block", SHOPPER),
        (1, "block", STUFFER),
    ];
    let expected: Vec<_> =
        expected.iter().map(|(v, a, k)| (*v, a.to_string(), k.to_string())).collect();
    assert_eq!(audit, expected);
    assert_eq!(listing["audit"][3]["reason"], "credential stuffing");
    assert_eq!(listing["audit"][3]["session_id"], "a91f0c3e5d7b2e4f6a8c0d1e3f5a7b9c");
}

async fn expired_entries_leave_the_document(kind: Kind) {
    let app = app(kind);
    let store = &app.store.store;
    let now = Millis::now().0;
    let entry = |key: &str, expires: Option<i64>| Entry {
        key_hash: key.into(),
        expires: expires.map(Millis),
        reason: "r".into(),
        created_by: "api".into(),
        created_at: Millis(now - 10_000),
        session_id: None,
    };
    store.change_denylist(&Change::Block(entry(STUFFER, Some(now - 1)))).unwrap();
    store.change_denylist(&Change::Block(entry(SHOPPER, Some(now + 1_500)))).unwrap();
    let first = get(&app, "/v1/denylist", &[]).await;
    assert_eq!(first.json()["version"], 2);
    assert_eq!(keys(&first.json()), [SHOPPER]);
    let tag = first.headers[header::ETAG].to_str().unwrap().to_owned();
    let listing = get(&app, "/api/denylist", &[]).await.json();
    assert_eq!(listing["entries"].as_array().unwrap().len(), 1);

    // Once the TTL is over the entry is gone, and the module's copy is out of date.
    std::thread::sleep(std::time::Duration::from_millis(1_600));
    let later = get(&app, "/v1/denylist", &[("If-None-Match", &tag)]).await;
    assert_eq!(later.status, StatusCode::OK);
    assert_eq!(later.json(), json!({"version": 2, "entries": []}));

    // A TTL through the API.
    let short =
        post_json(&app, "/api/denylist", json!({"key_hash": STUFFER, "ttl": "1s"}), &[]).await;
    assert_eq!(short.status, StatusCode::CREATED, "{}", short.body);
    assert_eq!(keys(&get(&app, "/v1/denylist", &[]).await.json()), [STUFFER]);
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    assert!(keys(&get(&app, "/v1/denylist", &[]).await.json()).is_empty());
}

async fn the_audit_log_is_kept_with_the_retention(kind: Kind) {
    let t = kind.store_with_retention(DAY);
    let store = &t.store;
    let now = Millis::now().0;
    let old = Entry {
        key_hash: STUFFER.into(),
        expires: Some(Millis(now - 2 * DAY)),
        reason: "old".into(),
        created_by: "api".into(),
        created_at: Millis(now - 3 * DAY),
        session_id: None,
    };
    store.change_denylist(&Change::Block(old)).unwrap();
    let lasting = Entry {
        key_hash: SHOPPER.into(),
        expires: None,
        reason: "kept".into(),
        created_by: "api".into(),
        created_at: Millis(now - 2 * DAY),
        session_id: None,
    };
    store.change_denylist(&Change::Block(lasting)).unwrap();
    let recent = Change::Unblock { key_hash: STUFFER.into(), by: "api".into(), at: Millis(now) };
    assert_eq!(store.change_denylist(&recent).unwrap(), Some(3));

    // Outside the retention, the old lines are no longer served, and the purge drops them;
    // a block without end outlives the retention.
    let audit = store.denylist_audit(None, 100).unwrap();
    assert_eq!(audit.iter().map(|line| line.version).collect::<Vec<_>>(), [3]);
    assert_eq!(audit[0].action, Action::Unblock);
    store.purge().unwrap();
    let list = store.denylist().unwrap();
    assert_eq!(list.version, 3, "the version never goes back");
    assert_eq!(list.entries.iter().map(|e| e.key_hash.as_str()).collect::<Vec<_>>(), [SHOPPER]);
    assert_eq!(store.denylist_audit(Some(SHOPPER), 100).unwrap(), []);
    let next = Change::Unblock { key_hash: SHOPPER.into(), by: "api".into(), at: Millis(now) };
    assert_eq!(store.change_denylist(&next).unwrap(), Some(4));
    assert_eq!(store.denylist_audit(Some(SHOPPER), 100).unwrap().len(), 1);
}

async fn bad_input_is_a_clear_4xx(kind: Kind) {
    let app = app(kind);
    post_records(&app, &traffic(base()), &[]).await;
    let cases = [
        (json!({"key_hash": STUFFER, "ttl": "1y"}), StatusCode::BAD_REQUEST, "invalid ttl \"1y\""),
        (json!({"key_hash": STUFFER, "ttl": "0h"}), StatusCode::BAD_REQUEST, "invalid ttl \"0h\""),
        (json!({"key_hash": STUFFER, "ttl": "400d"}), StatusCode::BAD_REQUEST, "invalid ttl"),
        (json!({"key_hash": "key-1"}), StatusCode::BAD_REQUEST, "invalid key_hash \"key-1\""),
        (json!({"session_id": "no-such-session"}), StatusCode::NOT_FOUND, "no such session"),
        (json!({"session_id": "ffffffffffffffffffff"}), StatusCode::NOT_FOUND, "no such session"),
        (json!({}), StatusCode::BAD_REQUEST, "give either session_id or key_hash"),
        (
            json!({"key_hash": STUFFER, "session_id": "a91f0c3e5d7b2e4f"}),
            StatusCode::BAD_REQUEST,
            "give either session_id or key_hash",
        ),
        (
            json!({"key_hash": STUFFER, "tll": "1h"}),
            StatusCode::BAD_REQUEST,
            "Failed to deserialize",
        ),
        (
            json!({"key_hash": STUFFER, "ttl": 3600}),
            StatusCode::BAD_REQUEST,
            "Failed to deserialize",
        ),
        (
            json!({"key_hash": STUFFER, "reason": "x".repeat(501)}),
            StatusCode::BAD_REQUEST,
            "reason longer than 500 characters",
        ),
    ];
    for (body, status, message) in cases {
        let reply = post_json(&app, "/api/denylist", body.clone(), &[]).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
        assert!(reply.error().contains(message), "{body}: {}", reply.body);
    }
    let not_json = send(
        &app,
        Request::post("/api/denylist")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{"))
            .unwrap(),
    )
    .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    let reply = delete(&app, "/api/denylist/not-a-hash", &[]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.error().starts_with("invalid key_hash"), "{}", reply.body);
    // Nothing was blocked by any of it.
    assert_eq!(get(&app, "/v1/denylist", &[]).await.json()["version"], 0);
}

async fn tokens_and_cross_site_checks(kind: Kind) {
    let app = app_on(kind.store(), Some(UI_TOKEN), Some(INGEST_TOKEN));
    let ingest = format!("Bearer {INGEST_TOKEN}");
    let ui = format!("Bearer {UI_TOKEN}");
    post_records(&app, &traffic(base()), &[("Authorization", &ingest)]).await;

    // The module's document takes the ingest token, and only it.
    assert_eq!(get(&app, "/v1/denylist", &[]).await.status, StatusCode::UNAUTHORIZED);
    let wrong = get(&app, "/v1/denylist", &[("Authorization", &ui)]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(&app, "/v1/denylist", &[("Authorization", &ingest)]).await.status,
        StatusCode::OK
    );

    // Blocking takes the UI token.
    let body = json!({"key_hash": STUFFER, "ttl": "1h", "reason": "r"});
    let anonymous = post_json(&app, "/api/denylist", body.clone(), &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let as_exporter =
        post_json(&app, "/api/denylist", body.clone(), &[("Authorization", &ingest)]).await;
    assert_eq!(as_exporter.status, StatusCode::UNAUTHORIZED);
    assert_eq!(get(&app, "/api/denylist", &[]).await.status, StatusCode::UNAUTHORIZED);
    let blocked = post_json(&app, "/api/denylist", body.clone(), &[("Authorization", &ui)]).await;
    assert_eq!(blocked.status, StatusCode::CREATED, "{}", blocked.body);
    assert_eq!(blocked.json()["entry"]["created_by"], "api (UI token)");

    // A browser's request from another site is refused, token or not.
    let cross = [("Authorization", ui.as_str()), ("Sec-Fetch-Site", "cross-site")];
    let refused = post_json(&app, "/api/denylist", body.clone(), &cross).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.error(), "request from another site");
    let refused = delete(&app, &format!("/api/denylist/{STUFFER}"), &cross).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let listing = get(&app, "/api/denylist", &[("Authorization", &ui)]).await.json();
    assert_eq!(listing["version"], 1, "nothing changed: {listing}");
    let unblocked =
        delete(&app, &format!("/api/denylist/{STUFFER}"), &[("Authorization", &ui)]).await;
    assert_eq!(unblocked.status, StatusCode::OK);

    // Without a UI token, the cross-site checks still apply: another origin, and a browser
    // that holds the explorer's cookie but not the page's CSRF token.
    let open = app_on(kind.store(), None, None);
    let origin = [("Origin", "https://evil.example"), ("Host", "explorer.example:8707")];
    let refused = post_json(&open, "/api/denylist", body.clone(), &origin).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.error(), "request from another origin");
    let cookie = format!("{CSRF_COOKIE}={}", "ab".repeat(16));
    let refused = post_json(&open, "/api/denylist", body.clone(), &[("Cookie", &cookie)]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.error().contains("CSRF token"), "{}", refused.body);
    // The UI's form too.
    let form = send(
        &open,
        Request::post("/blocks")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("Sec-Fetch-Site", "cross-site")
            .body(Body::from(format!("session_id={STUFFER}&ttl=1h&reason=x")))
            .unwrap(),
    )
    .await;
    assert_eq!(form.status, StatusCode::FORBIDDEN);
    assert_eq!(get(&open, "/v1/denylist", &[]).await.json()["version"], 0);
    // A script (no browser headers, no cookie) passes.
    let scripted = post_json(&open, "/api/denylist", body, &[]).await;
    assert_eq!(scripted.status, StatusCode::CREATED);
}

async fn auto_block_blocks_risky_sessions_once(kind: Kind) {
    let t = kind.store();
    let wrapped: Arc<dyn Store> = Arc::new(AutoBlocking::new(
        t.store.clone(),
        AutoBlock { risk: 50, ttl_ms: Some(3_600_000) },
    ));
    let app = app_on(TempStore { store: wrapped, dir: t.dir }, None, None);
    let records = traffic(base());
    post_records(&app, &records, &[]).await;

    let document = get(&app, "/v1/denylist", &[]).await.json();
    assert_eq!(keys(&document), [STUFFER], "the customer is not blocked: {document}");
    let reason = document["entries"][0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("risk ") && reason.ends_with("reached --auto-block 50"), "{reason}");
    assert!(document["entries"][0]["expires"].is_string());
    let listing = get(&app, "/api/denylist", &[]).await.json();
    assert_eq!(listing["entries"][0]["created_by"], "auto-block");
    assert_eq!(listing["entries"][0]["session_id"], "a91f0c3e5d7b2e4f6a8c0d1e3f5a7b9c");

    // More of the same: already on the list, nothing new.
    let mut more = records[..30].to_vec();
    for (i, r) in more.iter_mut().enumerate() {
        r.seq += 1_000;
        r.request_id = format!("more-{i}");
        r.ts = Millis(r.ts.0 + 20 * 60_000);
    }
    post_records(&app, &more, &[]).await;
    assert_eq!(get(&app, "/v1/denylist", &[]).await.json()["version"], 1);

    // An analyst lifts it: the automatic block does not come back.
    let unblocked = delete(&app, &format!("/api/denylist/{STUFFER}"), &[]).await;
    assert_eq!(unblocked.status, StatusCode::OK);
    for r in more.iter_mut() {
        r.seq += 1_000;
        r.request_id.push_str("-again");
        r.ts = Millis(r.ts.0 + 60_000);
    }
    post_records(&app, &more, &[]).await;
    let document = get(&app, "/v1/denylist", &[]).await.json();
    assert_eq!(document["version"], 2);
    assert!(keys(&document).is_empty());
}

on_every_store!(
    async block_serve_and_unblock,
    expired_entries_leave_the_document,
    the_audit_log_is_kept_with_the_retention,
    bad_input_is_a_clear_4xx,
    tokens_and_cross_site_checks,
    auto_block_blocks_risky_sessions_once,
);
