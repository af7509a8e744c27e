//! Risk and signals through the API on both stores: kept at ingest whatever the arrival order,
//! listed with each session, filtered by `risk_min=` and `signal=`, sorted by `sort=risk`, and
//! explained on the session (every signal, its evidence, the actor's other sessions); and the
//! `--detect` file.

mod fixtures;

use std::process::Command;
use std::sync::Arc;

use api_sessions::app::{router, AppState};
use api_sessions::detect::{ActorState, Config, SessionState};
use api_sessions::store::clickhouse::{ClickHouseStore, Config as ClickHouseConfig};
use api_sessions::store::signals::{decode_state, Detection, STATE_ENCODING};
use api_sessions::store::sqlite::SqliteStore;
use api_sessions::store::Store;
use api_sessions_core::record::Record;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use fixtures::*;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const BROWSER: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36";

struct App {
    router: Router,
    _store: TempStore,
}

fn store_with(kind: Kind, detection: Detection) -> TempStore {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = match kind {
        Kind::Sqlite => Arc::new(
            SqliteStore::open_with(&dir.path().join("test.db"), WEEK, Arc::default(), detection)
                .unwrap(),
        ),
        Kind::ClickHouse => {
            let config = ClickHouseConfig::parse(&fixtures::clickhouse::database_url()).unwrap();
            Arc::new(ClickHouseStore::open_with(config, WEEK, Arc::default(), detection).unwrap())
        }
    };
    TempStore { store, dir }
}

fn app_with(kind: Kind, detection: Detection) -> App {
    let store = store_with(kind, detection);
    let state = AppState {
        store: store.store.clone(),
        ingest_token: None,
        access: Default::default(),
        endpoints: Default::default(),
    };
    App { router: router(Arc::new(state)), _store: store }
}

async fn get(app: &App, uri: &str) -> (StatusCode, Value) {
    let request = Request::get(uri).body(Body::empty()).unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&body)));
    (status, value)
}

async fn post(app: &App, records: &[Record]) -> Value {
    let request = Request::post("/v1/records").body(Body::from(ndjson(records))).unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

/// A content scanner, a credential stuffer, a shopper and two short sessions of the shopper's
/// actor (same IP address and User-Agent).
fn traffic(b: i64) -> Vec<Record> {
    let mut records = Vec::new();
    for i in 0..60 {
        let mut r = record("scanner", i, b + i as i64 * 50);
        r.path = format!("/word{i}");
        r.status = 404;
        r.ip = "198.51.100.66".into();
        r.user_agent = Some("gobuster/3.6".into());
        records.push(r);
    }
    for i in 0..20 {
        let mut r = record("stuffer", 100 + i, b + i as i64 * 700);
        r.method = "POST".into();
        r.path = "/login".into();
        r.status = 401;
        r.flows = vec!["auth".into()];
        r.ip = "203.0.113.99".into();
        r.user_agent = Some("python-requests/2.31".into());
        records.push(r);
    }
    let pages = ["/", "/products", "/products/7", "/cart", "/checkout", "/orders", "/account"];
    let thinks = [0, 9_000, 31_000, 44_000, 71_000, 130_000, 160_000, 230_000];
    for (i, think) in thinks.iter().enumerate() {
        let mut r = record("shopper", 200 + i as u64, b + think);
        r.path = pages[i % pages.len()].into();
        r.ip = "192.0.2.10".into();
        r.user_agent = Some(BROWSER.into());
        r.user = Some("alice".into());
        records.push(r);
    }
    for (k, session) in ["shopper-2", "shopper-3"].iter().enumerate() {
        let mut r = record(session, 300 + k as u64, b + 10 * MINUTE + k as i64);
        r.ip = "192.0.2.10".into();
        r.user_agent = Some(BROWSER.into());
        records.push(r);
    }
    records
}

fn by_id<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["session_id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {list}"))
}

fn ids(list: &Value) -> Vec<String> {
    list["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|s| s["session_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn sessions_carry_risk_and_signals(kind: Kind) {
    let app = app_with(kind, Detection::default());
    let records = traffic(base());
    post(&app, &records).await;

    let (status, list) = get(&app, "/api/sessions?limit=50").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let scanner = by_id(&list, "scanner");
    assert_eq!(scanner["risk"], 100, "{scanner}");
    assert!(scanner["signals"].as_array().unwrap().contains(&"path_scan".into()), "{scanner}");
    let stuffer = by_id(&list, "stuffer");
    assert!(stuffer["risk"].as_u64().unwrap() >= 50, "{stuffer}");
    assert_eq!(stuffer["signals"][0], "auth_failures", "{stuffer}");
    let shopper = by_id(&list, "shopper");
    assert!(shopper["risk"].as_u64().unwrap() < 50, "{shopper}");
    assert_eq!(shopper["signals"], Value::Array(vec![]), "{shopper}");

    // The session: every signal with its detail and evidence, and its actor.
    let (status, detail) = get(&app, "/api/sessions/scanner").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["risk"], 100);
    assert_eq!(detail["session"]["risk"], 100);
    let signals = detail["signals"].as_array().unwrap();
    let scan = signals.iter().find(|s| s["name"] == "path_scan").expect("path_scan");
    assert_eq!(scan["score"], 1.0);
    assert_eq!(scan["detail"], "60 distinct endpoints answered 404");
    let evidence: Vec<&str> =
        scan["evidence"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert_eq!(
        evidence,
        ["scanner-req-0", "scanner-req-1", "scanner-req-2", "scanner-req-3", "scanner-req-4"]
    );
    // The automation client is a supporting signal: listed on the session, below a finding
    // or not, with its own evidence.
    assert!(signals.iter().any(|s| s["name"] == "automation_client"), "{detail}");
    assert_eq!(detail["actor"]["ip"], "198.51.100.66");
    assert_eq!(detail["actor"]["user_agent"], "gobuster/3.6");
    assert_eq!(detail["actor"]["sessions"], 0);

    let (_, detail) = get(&app, "/api/sessions/shopper").await;
    assert_eq!(detail["actor"]["sessions"], 2, "{detail}");
    let mut others: Vec<&str> = detail["actor"]["session_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    others.sort_unstable();
    assert_eq!(others, ["shopper-2", "shopper-3"]);
}

async fn risk_min_signal_and_sort_by_risk(kind: Kind) {
    let app = app_with(kind, Detection::default());
    post(&app, &traffic(base())).await;

    let (_, list) = get(&app, "/api/sessions?risk_min=50").await;
    let mut found = ids(&list);
    found.sort();
    assert_eq!(found, ["scanner", "stuffer"]);
    let (_, list) = get(&app, "/api/sessions?signal=auth_failures").await;
    assert_eq!(ids(&list), ["stuffer"]);
    let (_, list) = get(&app, "/api/sessions?signal=path_scan&risk_min=100").await;
    assert_eq!(ids(&list), ["scanner"]);
    // With a request-level filter as well.
    let (_, list) = get(&app, "/api/sessions?risk_min=50&method=POST").await;
    assert_eq!(ids(&list), ["stuffer"]);

    // Highest risk first, and the same order page by page.
    let (_, list) = get(&app, "/api/sessions?sort=risk").await;
    let order = ids(&list);
    assert_eq!(order.len(), 5);
    let risks: Vec<u64> =
        list["sessions"].as_array().unwrap().iter().map(|s| s["risk"].as_u64().unwrap()).collect();
    assert!(risks.windows(2).all(|w| w[0] >= w[1]), "{risks:?}");
    assert!(
        order[..2].contains(&"scanner".to_owned()) && order[..2].contains(&"stuffer".to_owned())
    );
    let mut paged = Vec::new();
    let mut uri = "/api/sessions?sort=risk&limit=2".to_owned();
    loop {
        let (status, page) = get(&app, &uri).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        paged.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/api/sessions?sort=risk&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(paged, order);
    let (_, list) = get(&app, "/api/sessions?sort=risk&ip=192.0.2.10").await;
    assert_eq!(ids(&list).len(), 3);

    for (query, message) in [
        ("risk_min=101", "invalid \"risk_min\" \"101\": expected 0 to 100"),
        ("signal=bots", "invalid \"signal\" \"bots\": expected one of attacks, auth_failures"),
        ("sort=loud", "invalid \"sort\" \"loud\""),
    ] {
        let (status, body) = get(&app, &format!("/api/sessions?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(body["error"].as_str().unwrap().starts_with(message), "{body}");
    }
}

/// The risk and signals of every session, as listed and on the session.
async fn scores(app: &App) -> Vec<(String, Value, Value)> {
    let (_, list) = get(app, "/api/sessions?limit=500").await;
    let mut out = Vec::new();
    for id in ids(&list) {
        let (_, detail) = get(app, &format!("/api/sessions/{id}")).await;
        let risk = by_id(&list, &id)["risk"].clone();
        out.push((id, risk, detail["signals"].clone()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

async fn arrival_order_does_not_change_scores(kind: Kind) {
    let records = traffic(base());
    let in_order = app_with(kind, Detection::default());
    post(&in_order, &records).await;

    // Shuffled, in small batches from two nodes, part of it replayed.
    let shuffled = app_with(kind, Detection::default());
    let mut mixed = records.clone();
    fastrand::Rng::with_seed(11).shuffle(&mut mixed);
    for (i, record) in mixed.iter_mut().enumerate() {
        if i % 2 == 1 {
            record.node = "web-2".into();
        }
    }
    let (first, last) = mixed.split_at(mixed.len() - 20);
    for chunk in first.chunks(7) {
        post(&shuffled, chunk).await;
    }
    // A batch of records stored before and new ones: only the new ones count.
    let replay: Vec<_> = mixed[..30].iter().chain(last).cloned().collect();
    let replay = post(&shuffled, &replay).await;
    assert_eq!((replay["accepted"].as_u64(), replay["duplicates"].as_u64()), (Some(20), Some(30)));

    let expected = scores(&in_order).await;
    assert_eq!(expected.len(), 5);
    assert_eq!(scores(&shuffled).await, expected);
}

/// A session's actor is that of its first request: a request earlier than those stored moves
/// the session to its own actor, on the session and among that actor's sessions.
async fn an_earlier_request_moves_a_session_to_its_actor(kind: Kind) {
    let app = app_with(kind, Detection::default());
    let b = base();
    let of = |session: &str, n: u64, ts: i64, ip: &str, user_agent: &str| {
        let mut r = record(session, n, ts);
        r.ip = ip.into();
        r.user_agent = Some(user_agent.into());
        r
    };
    let phone = |session, n, ts| of(session, n, ts, "192.0.2.50", "phone-app/2.1");
    let laptop = |session, n, ts| of(session, n, ts, "192.0.2.77", BROWSER);
    let stored: Vec<Record> = (0..3)
        .map(|i| phone("stay", i, b + (30 + i as i64) * MINUTE))
        .chain((0..2).map(|i| laptop("mover", 10 + i, b + (50 + i as i64) * MINUTE)))
        .collect();
    post(&app, &stored).await;
    let (_, mover) = get(&app, "/api/sessions/mover").await;
    assert_eq!(mover["actor"]["ip"], "192.0.2.77", "{mover}");

    post(&app, &[phone("mover", 9, b + 20 * MINUTE)]).await;
    let (_, mover) = get(&app, "/api/sessions/mover").await;
    assert_eq!(mover["actor"]["ip"], "192.0.2.50", "{mover}");
    assert_eq!(mover["actor"]["session_ids"], serde_json::json!(["stay"]), "{mover}");
    let (_, stay) = get(&app, "/api/sessions/stay").await;
    assert_eq!(stay["actor"]["session_ids"], serde_json::json!(["mover"]), "{stay}");
}

async fn detection_thresholds_and_off(kind: Kind) {
    let mut config = Config::default();
    config.path_scan.start = 100.0;
    config.path_scan.full = 200.0;
    let lenient = app_with(kind, Detection::On(Arc::new(config)));
    post(&lenient, &traffic(base())).await;
    let (_, list) = get(&lenient, "/api/sessions").await;
    let scanner = by_id(&list, "scanner");
    assert!(!scanner["signals"].as_array().unwrap().contains(&"path_scan".into()), "{scanner}");
    assert!(scanner["risk"].as_u64().unwrap() < 50, "{scanner}");

    let off = app_with(kind, Detection::Off);
    post(&off, &traffic(base())).await;
    let (_, list) = get(&off, "/api/sessions?sort=risk").await;
    assert_eq!(ids(&list).len(), 5);
    assert!(list["sessions"].as_array().unwrap().iter().all(|s| s["risk"] == 0));
    let (_, detail) = get(&off, "/api/sessions/scanner").await;
    assert_eq!(detail["signals"], Value::Array(vec![]));
}

/// The app on a SQLite database in `dir`, opened anew.
fn sqlite_app(dir: tempfile::TempDir) -> App {
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open_with(
            &dir.path().join("test.db"),
            WEEK,
            Arc::default(),
            Detection::default(),
        )
        .unwrap(),
    );
    let state = AppState {
        store: store.clone(),
        ingest_token: None,
        access: Default::default(),
        endpoints: Default::default(),
    };
    App { router: router(Arc::new(state)), _store: TempStore { store, dir } }
}

/// Rewrites every detector state of a SQLite database as JSON, as versions before the encoded
/// states kept them; how many of sessions and of actor-hours.
fn states_to_json(db: &std::path::Path) -> (usize, usize) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let sessions: Vec<(i64, Vec<u8>)> = conn
        .prepare("SELECT session, state FROM session_detect")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    for (session, encoded) in &sessions {
        assert_eq!(encoded[0], STATE_ENCODING);
        let json = serde_json::to_string(&decode_state::<SessionState>(encoded)).unwrap();
        conn.execute("UPDATE session_detect SET state = ? WHERE session = ?", (json, session))
            .unwrap();
    }
    let actors: Vec<(String, i64, Vec<u8>)> = conn
        .prepare("SELECT actor, hour, state FROM detect_actors")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    for (actor, hour, encoded) in &actors {
        assert_eq!(encoded[0], STATE_ENCODING);
        let json = serde_json::to_string(&decode_state::<ActorState>(encoded)).unwrap();
        conn.execute(
            "UPDATE detect_actors SET state = ? WHERE actor = ? AND hour = ?",
            (json, actor, hour),
        )
        .unwrap();
    }
    (sessions.len(), actors.len())
}

/// A database whose detector states were kept as JSON (before they were encoded) goes on
/// from them: the same scores as one that kept its states encoded all along.
#[tokio::test]
async fn json_states_of_an_older_database_still_load() {
    let records = traffic(base());
    let first: Vec<Record> = records.iter().step_by(2).cloned().collect();
    let rest: Vec<Record> = records.iter().skip(1).step_by(2).cloned().collect();
    let straight = app_with(Kind::Sqlite, Detection::default());
    post(&straight, &records).await;

    let app = sqlite_app(tempfile::tempdir().unwrap());
    post(&app, &first).await;
    let App { router, _store: TempStore { store, dir } } = app;
    drop((router, store));
    // Every session so far (all but shopper-3), and their actors.
    let (sessions, actors) = states_to_json(&dir.path().join("test.db"));
    assert_eq!((sessions, actors.min(1)), (4, 1), "{sessions} sessions, {actors} actor-hours");

    let app = sqlite_app(dir);
    post(&app, &rest).await;
    let expected = scores(&straight).await;
    assert_eq!(expected.len(), 5);
    assert_eq!(scores(&app).await, expected);
}

on_every_store!(
    async sessions_carry_risk_and_signals,
    risk_min_signal_and_sort_by_risk,
    arrival_order_does_not_change_scores,
    an_earlier_request_moves_a_session_to_its_actor,
    detection_thresholds_and_off,
);

#[test]
fn a_bad_detection_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("detect.toml");
    std::fs::write(&bad, "[rate]\nstrat = 300\n").unwrap();
    for command in ["serve", "ingest"] {
        let mut run = Command::new(env!("CARGO_BIN_EXE_api-sessions"));
        run.arg(command).arg("--db").arg(dir.path().join("x.db")).arg("--detect").arg(&bad);
        if command == "serve" {
            run.args(["--listen", "127.0.0.1:0"]);
        } else {
            run.arg(dir.path().join("none.ndjson"));
        }
        let output = run.output().unwrap();
        assert!(!output.status.success(), "{command} started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("invalid detection file") && stderr.contains("unknown field `strat`"),
            "{command}: {stderr}"
        );
        assert!(stderr.contains(&bad.display().to_string()), "{stderr}");
    }
    let missing = dir.path().join("missing.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_api-sessions"))
        .args(["serve", "--listen", "127.0.0.1:0", "--detect"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));
}
