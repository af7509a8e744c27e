//! The stores, SQLite and ClickHouse, against a temporary database: ingest, dedupe, aggregation, every filter,
//! pagination, the session view and retention.

mod fixtures;

use std::collections::{BTreeMap, BTreeSet};

use api_sessions::store::{
    AttackFilter, Filter, ListCursor, ListQuery, Order, SessionPage, SessionSummary, Sort, SortKey,
    StatusFilter, Store,
};
use api_sessions_core::record::Record;
use api_sessions_core::time::Millis;
use fixtures::*;

fn list(store: &dyn Store, filter: &Filter, limit: usize) -> SessionPage {
    store.list_sessions(&ListQuery::new(filter.clone(), limit)).unwrap()
}

fn list_all(store: &dyn Store, filter: &Filter, page: usize) -> Vec<SessionSummary> {
    list_sorted(store, filter, Sort::default(), page)
}

/// Every page of a sorted list, checking the total and the previous-page cursors on the way.
fn list_sorted(store: &dyn Store, filter: &Filter, sort: Sort, page: usize) -> Vec<SessionSummary> {
    let mut all = Vec::new();
    let mut query = ListQuery { filter: filter.clone(), sort, cursor: None, limit: page };
    let mut totals = BTreeSet::new();
    loop {
        let listed = store.list_sessions(&query).unwrap();
        assert!(listed.sessions.len() <= page);
        assert_eq!(
            listed.prev_cursor.is_some(),
            query.cursor.is_some() && !listed.sessions.is_empty()
        );
        totals.insert(listed.total);
        all.extend(listed.sessions);
        match listed.next_cursor {
            Some(next) => query.cursor = Some(ListCursor::parse(&next).unwrap()),
            None => break,
        }
    }
    assert_eq!(totals.into_iter().collect::<Vec<_>>(), [all.len() as u64], "total on every page");
    all
}

fn duplicates_are_stored_once_by_origin_or_request_id(kind: Kind) {
    let t = kind.store();
    let b = base();
    let first = vec![record("s1", 1, b), record("s1", 2, b + 1000)];
    assert_eq!(ingest(&*t.store, &first).accepted, 2);

    // The same records again, one of them twice in the same batch.
    let counts = ingest(&*t.store, &[first[0].clone(), first[1].clone(), first[1].clone()]);
    assert_eq!((counts.accepted, counts.duplicates), (0, 3));

    // Same node, pid and seq under another request id (a resent record).
    let mut same_origin = record("s1", 3, b + 2000);
    same_origin.seq = 1;
    // Same request id from another worker (the same request exported twice).
    let mut same_request = record("s1", 4, b + 1000);
    same_request.request_id = first[1].request_id.clone();
    same_request.pid = 999;
    let fresh = record("s1", 5, b + 3000);
    let counts = ingest(&*t.store, &[same_origin, same_request, fresh]);
    assert_eq!((counts.accepted, counts.duplicates), (1, 2));

    let sessions = list_all(&*t.store, &Filter::default(), 10);
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].requests, 3);

    // Sequence numbers with gaps, and the same numbers from another worker, which are not
    // duplicates.
    let of = |n: u64, seq: u64, pid: u32| {
        let mut r = record("gaps", n, b + 4000);
        (r.seq, r.pid) = (seq, pid);
        r
    };
    let stored: Vec<Record> = [100, 103, 150, 1_000_000]
        .iter()
        .enumerate()
        .map(|(n, &seq)| of(10 + n as u64, seq, 7))
        .collect();
    assert_eq!(ingest(&*t.store, &stored).accepted, 4);
    let mut again: Vec<Record> = [100, 101, 103, 149, 150, 151, 999_999, 1_000_000]
        .iter()
        .enumerate()
        .map(|(n, &seq)| of(20 + n as u64, seq, 7))
        .collect();
    again.push(of(40, 103, 8));
    let counts = ingest(&*t.store, &again);
    assert_eq!((counts.accepted, counts.duplicates), (5, 4));

    // A duplicate under a session id never seen leaves no empty session behind.
    let mut elsewhere = first[0].clone();
    elsewhere.session_id = "ghost".into();
    assert_eq!(ingest(&*t.store, &[elsewhere]).duplicates, 1);
    assert_eq!(list_all(&*t.store, &Filter::default(), 10).len(), 2);
    assert!(t.store.session("ghost", &Filter::default(), None, 10).unwrap().is_none());
}

fn sessions_are_aggregated_at_ingest(kind: Kind) {
    let t = kind.store();
    let b = base();
    let mut records = Vec::new();
    let mut login = record("s1", 1, b);
    login.method = "POST".into();
    login.path = "/login".into();
    login.flows = vec!["auth".into()];
    records.push(login);
    let mut r2 = record("s1", 2, b + 60_000);
    r2.user = Some("alice".into());
    r2.role = Some("admin".into());
    r2.flows = vec!["admin".into(), "billing".into()];
    r2.ip = "198.51.100.9".into();
    records.push(r2);
    let mut r3 = record("s1", 3, b + 120_000);
    r3.user = Some("alice2".into());
    r3.node = "web-2".into();
    r3.attack = attack("sqli", "GET /?id=1' HTTP/1.1", &[], "");
    r3.status = 403;
    records.push(r3);
    // Arrives last but happened first: it must not become the "last" user.
    let mut early = record("s1", 4, b - 60_000);
    early.user = Some("mallory".into());
    early.flows = vec!["auth".into()];
    ingest(&*t.store, &records);
    ingest(&*t.store, &[early]);

    let sessions = list_all(&*t.store, &Filter::default(), 10);
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(s.session_id, "s1");
    assert_eq!(s.requests, 4);
    assert_eq!(s.first_ts, Millis(b - 60_000));
    assert_eq!(s.last_ts, Millis(b + 120_000));
    assert_eq!(s.user.as_deref(), Some("alice2"));
    // In order of first use, by request time: mallory's request arrived last.
    assert_eq!(s.users, ["mallory", "alice", "alice2"]);
    assert_eq!(s.user_agents, ["test-agent/1.0"]);
    assert_eq!(s.role.as_deref(), Some("admin"));
    assert_eq!(
        s.flows,
        BTreeMap::from([("admin".into(), 1), ("auth".into(), 2), ("billing".into(), 1)])
    );
    assert_eq!(s.ips, vec!["192.0.2.1".to_string(), "198.51.100.9".to_string()]);
    assert_eq!(s.attacks, 1);
    assert_eq!(s.nodes, vec!["web-1".to_string(), "web-2".to_string()]);
    assert_eq!(s.key_hash, "key-s1");
    assert_eq!(s.session_key, "cookie:sid");
}

/// Session `shared`: dana's four requests (one in the billing flow, one an SQL injection, from
/// Firefox), then alice's two (from curl).
fn dana_then_alice(b: i64) -> Vec<Record> {
    let mut records = Vec::new();
    for n in 1..=6u64 {
        let mut r = record("shared", n, b + n as i64 * MINUTE);
        r.user = Some(if n <= 4 { "dana" } else { "alice" }.into());
        r.role = Some(if n <= 4 { "Viewer" } else { "admin" }.into());
        if n == 2 {
            r.flows = vec!["billing".into()];
        }
        if n == 3 {
            r.attack = attack("sqli", "GET /?id=1' HTTP/1.1", &[], "");
        }
        let agent =
            if n <= 4 { "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0" } else { "curl/8.5.0" };
        r.user_agent = Some(agent.into());
        records.push(r);
    }
    records
}

/// What a store upgraded from the schema before the values were kept must answer about
/// [`dana_then_alice`].
fn upgraded_store_knows_the_values(store: &dyn Store) {
    use api_sessions::store::values::ValueKind;
    for filter in [
        Filter { user: Some("DANA".into()), ..Default::default() },
        Filter { flow: Some("Billing".into()), ..Default::default() },
        Filter { ua: Some("firefox".into()), ..Default::default() },
        Filter { attack: Some(AttackFilter::Kind("SQLI".into())), ..Default::default() },
    ] {
        let listed = list_all(store, &filter, 10);
        let ids: Vec<&str> = listed.iter().map(|s| s.session_id.as_str()).collect();
        assert_eq!(ids, ["shared"], "{filter:?}");
        assert_eq!(listed[0].users, ["dana", "alice"]);
        assert_eq!(listed[0].user_agents.len(), 2);
    }
    assert_eq!(store.suggest(ValueKind::Role, "", 10).unwrap(), ["admin", "Viewer"]);
    // And keeps them up to date from then on.
    let mut later = record("shared", 7, base() + 7 * MINUTE);
    later.user = Some("Zoe".into());
    ingest(store, &[later]);
    let listed = list_all(store, &Filter { user: Some("zoe".into()), ..Default::default() }, 10);
    assert_eq!(listed[0].users, ["dana", "alice", "Zoe"]);
}

#[test]
fn sqlite_databases_of_the_previous_schema_are_upgraded() {
    use api_sessions::store::sqlite::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let endpoints = {
        let store = SqliteStore::open(&path, WEEK).unwrap();
        ingest(&store, &dana_then_alice(base()));
        store.endpoints(&Default::default()).unwrap()
    };
    assert!(!endpoints.is_empty());
    // Back to schema version 6, the one before the values were kept (and the index of each
    // session's malicious requests, the endpoint totals and days).
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP INDEX requests_session_attack;
         DROP TABLE endpoint_days;
         DROP TABLE endpoint_dirty;
         DROP INDEX endpoint_hours_hour;
         CREATE INDEX endpoint_hours_hour ON endpoint_hours (hour);
         ALTER TABLE endpoint_hours DROP COLUMN requests;
         ALTER TABLE endpoint_hours DROP COLUMN errors;
         ALTER TABLE endpoint_hours DROP COLUMN attacks;
         ALTER TABLE endpoint_hours DROP COLUMN first_ts;
         ALTER TABLE endpoint_hours DROP COLUMN last_ts;
         ALTER TABLE endpoint_hours DROP COLUMN flows;
         DROP TABLE session_values;
         DROP TABLE endpoint_day_tags;
         DROP TABLE endpoint_catalog_tag;
         CREATE INDEX sessions_user ON sessions (user, last_ts, id) WHERE user IS NOT NULL;
         CREATE INDEX sessions_role ON sessions (role, last_ts, id) WHERE role IS NOT NULL;
         CREATE INDEX session_flows_flow ON session_flows (flow, last_ts, session);
         PRAGMA user_version = 6;",
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(&path, WEEK).unwrap();
    assert_eq!(store.endpoints(&Default::default()).unwrap(), endpoints);
    let page = |store: &SqliteStore| {
        let uri: axum::http::Uri = "/?sort=errors".parse().unwrap();
        let query =
            axum::extract::Query::<api_sessions::endpoints::list::EndpointParams>::try_from_uri(
                &uri,
            )
            .unwrap()
            .0
            .query()
            .unwrap();
        api_sessions::endpoints::list::page_of(store, &Default::default(), &query).unwrap()
    };
    assert_eq!(page(&store).total, endpoints.len() as u64);
    upgraded_store_knows_the_values(&store);
}

#[test]
fn clickhouse_databases_of_the_previous_schema_are_upgraded() {
    use api_sessions::store::clickhouse::{ClickHouseStore, Config};
    if fixtures::clickhouse::skipped() {
        return;
    }
    let url = fixtures::clickhouse::database_url();
    let open = || ClickHouseStore::open(Config::parse(&url).unwrap(), WEEK).unwrap();
    let b = base();
    ingest(&open(), &dana_then_alice(b));
    // Back to schema version 4, the one before the values were kept and before the session
    // summaries (migration 6).
    // The purge drops a day from every partitioned table, also from one without rows that day.
    fixtures::clickhouse::execute(&url, "ALTER TABLE session_values DROP PARTITION 12345");
    fixtures::clickhouse::execute(&url, "ALTER TABLE session_hours DROP PARTITION 12345");
    let back_to = |version: u32, drop: &[&str]| {
        for table in drop {
            fixtures::clickhouse::execute(&url, &format!("DROP TABLE {table}"));
        }
        let versions: Vec<String> = (1..=version).map(|v| format!("({v})")).collect();
        for statement in [
            "DROP TABLE schema_version".to_owned(),
            "CREATE TABLE schema_version (version UInt32) ENGINE = TinyLog".to_owned(),
            format!("INSERT INTO schema_version VALUES {}", versions.join(", ")),
        ] {
            fixtures::clickhouse::execute(&url, &statement);
        }
    };
    let states = "SELECT session_id, argMax(state, version), argMax(risk, version) \
                  FROM session_detect GROUP BY session_id ORDER BY session_id";
    let scored = fixtures::clickhouse::execute(&url, states);
    assert!(!scored.is_empty());
    back_to(4, &["session_values", "session_hours_feed", "session_hours"]);
    let store = open();
    // Migration 7 rebuilt the detector's table with its states.
    assert_eq!(fixtures::clickhouse::execute(&url, states), scored);
    let created = fixtures::clickhouse::execute(&url, "SHOW CREATE TABLE session_detect");
    assert!(created.contains("index_granularity = 256"), "{created}");
    upgraded_store_knows_the_values(&store);
    // The summaries hold the requests stored before the upgrade and those after it (the one
    // record `upgraded_store_knows_the_values` adds), once each.
    let summarized = |store: &ClickHouseStore| {
        let listed = list_all(store, &Filter::default(), 10);
        assert_eq!(listed.len(), 1);
        let attacks = Filter { attack: Some(AttackFilter::Any), ..Default::default() };
        let attacked = list_all(store, &attacks, 10);
        assert_eq!(attacked.len(), 1);
        (
            (listed[0].requests, listed[0].first_ts, listed[0].last_ts),
            (attacked[0].requests, attacked[0].first_ts == attacked[0].last_ts),
        )
    };
    let expected = ((7, Millis(b + MINUTE), Millis(b + 7 * MINUTE)), (1, true));
    assert_eq!(summarized(&store), expected);
    drop(store);
    // Migration 6 interrupted after its view was created runs again to the same summaries, and
    // migration 7 run again on its own result keeps the states.
    let scored = fixtures::clickhouse::execute(&url, states);
    back_to(5, &[]);
    assert_eq!(summarized(&open()), expected);
    assert_eq!(fixtures::clickhouse::execute(&url, states), scored);
    // Migration 7 interrupted after its RENAME, the old table still there.
    for statement in [
        "CREATE TABLE session_detect_coarse AS session_detect",
        "INSERT INTO session_detect_coarse SELECT * FROM session_detect",
    ] {
        fixtures::clickhouse::execute(&url, statement);
    }
    back_to(6, &[]);
    drop(open());
    assert_eq!(fixtures::clickhouse::execute(&url, states), scored);
    let tables = "SELECT name FROM system.tables \
                  WHERE database = currentDatabase() AND name LIKE 'session_detect%'";
    assert_eq!(fixtures::clickhouse::execute(&url, tables), "session_detect\n");
}

/// dana made four requests, then the session went on as alice: every filter on the values seen
/// finds it, whatever the case, whatever order the records arrived in, duplicates included.
fn any_value_seen_in_the_session_matches_case_insensitively(kind: Kind) {
    let t = kind.store();
    let b = base();
    let records = dana_then_alice(b);
    let mut other = record("other", 10, b + 10 * MINUTE);
    other.user = Some("Danae".into());
    other.flows = vec!["auth".into()];
    // Alice's requests first, then dana's: the latest arrival is not the latest request.
    ingest(&*t.store, &records[4..]);
    ingest(&*t.store, &[other.clone()]);
    ingest(&*t.store, &records[..4]);
    // And everything again: duplicates change nothing.
    assert_eq!(ingest(&*t.store, &records).duplicates, 6);

    let found = |filter: Filter| -> Vec<String> {
        list_all(&*t.store, &filter, 10).into_iter().map(|s| s.session_id).collect()
    };
    let only_shared = ["shared".to_owned()];
    for user in ["dana", "DANA", "Alice"] {
        assert_eq!(found(Filter { user: Some(user.into()), ..Default::default() }), only_shared);
    }
    assert_eq!(found(Filter { role: Some("viewer".into()), ..Default::default() }), only_shared);
    assert_eq!(found(Filter { flow: Some("Billing".into()), ..Default::default() }), only_shared);
    assert_eq!(found(Filter { ua: Some("FIREFOX/1".into()), ..Default::default() }), only_shared);
    assert_eq!(found(Filter { ua: Some("Curl".into()), ..Default::default() }), only_shared);
    let attack = Filter { attack: Some(AttackFilter::Kind("SQLi".into())), ..Default::default() };
    assert_eq!(found(attack.clone()), only_shared);
    // Whole values only, but for the User-Agent.
    assert!(found(Filter { user: Some("dan".into()), ..Default::default() }).is_empty());
    assert_eq!(
        found(Filter { ua: Some("test-agent".into()), ..Default::default() }),
        ["other".to_owned()]
    );
    // Several at once: all must hold, not necessarily in the same request.
    let both = Filter {
        user: Some("dana".into()),
        ua: Some("curl".into()),
        flow: Some("BILLING".into()),
        ..Default::default()
    };
    assert_eq!(found(both.clone()), only_shared);
    assert!(found(Filter { user: Some("danae".into()), ..both }).is_empty());

    let listed =
        list_all(&*t.store, &Filter { user: Some("dana".into()), ..Default::default() }, 10);
    let shared = &listed[0];
    assert_eq!(shared.user.as_deref(), Some("alice"), "the last user");
    assert_eq!(shared.users, ["dana", "alice"]);
    assert_eq!(shared.role.as_deref(), Some("admin"));
    assert_eq!(shared.user_agents, ["Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0", "curl/8.5.0"]);
    assert_eq!(shared.requests, 6, "a session-level filter selects no requests");

    // With a time range, only the requests in it count; the session is still found by a user
    // seen outside it, and still has both users.
    let late = Filter {
        user: Some("dana".into()),
        from: Some(Millis(b + 5 * MINUTE)),
        ..Default::default()
    };
    let listed = list_all(&*t.store, &late, 10);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].requests, 2);
    assert_eq!(listed[0].users, ["dana", "alice"]);

    // The attack filter selects requests, case-insensitively.
    let detail = t.store.session("shared", &attack, None, 10).unwrap().unwrap();
    assert_eq!(detail.requests.requests.len(), 1);
    assert_eq!(detail.session.users, ["dana", "alice"]);
    let detail = t.store.session("shared", &Filter::default(), None, 10).unwrap().unwrap();
    assert_eq!(detail.session.users, ["dana", "alice"]);
    assert_eq!(detail.session.user_agents.len(), 2);
}

/// Suggestions come from the values seen: one per spelling up to case, in order, bounded.
fn suggestions_come_from_the_values_seen(kind: Kind) {
    use api_sessions::store::values::ValueKind;
    let t = kind.store();
    let b = base();
    let mut records = Vec::new();
    let users = ["dana", "Dana", "dave", "alice", "Ärger"];
    for (n, user) in users.iter().enumerate() {
        let mut r = record(&format!("s{n}"), n as u64 + 1, b + n as i64);
        r.user = Some(user.to_string());
        r.flows = vec!["auth".into(), "billing".into()];
        r.user_agent = Some(format!("curl/8.{n}"));
        records.push(r);
    }
    let mut many = Vec::new();
    for n in 0..30u64 {
        let mut r = record(&format!("m{n}"), 100 + n, b + 100 + n as i64);
        r.user = Some(format!("user{n:02}"));
        many.push(r);
    }
    ingest(&*t.store, &records);
    ingest(&*t.store, &many);

    let suggest = |kind, text: &str, limit| t.store.suggest(kind, text, limit).unwrap();
    let dana = suggest(ValueKind::User, "DA", 10);
    assert_eq!(dana.len(), 2, "{dana:?}");
    assert!(dana[0].eq_ignore_ascii_case("dana"), "{dana:?}");
    assert_eq!(dana[1], "dave");
    assert_eq!(suggest(ValueKind::User, "är", 10), ["Ärger"]);
    assert_eq!(suggest(ValueKind::User, "", 3).len(), 3);
    assert_eq!(suggest(ValueKind::User, "user", 100).len(), 30);
    assert_eq!(
        suggest(ValueKind::User, "user", 5),
        ["user00", "user01", "user02", "user03", "user04"]
    );
    assert_eq!(suggest(ValueKind::Flow, "", 10), ["auth", "billing"]);
    assert_eq!(suggest(ValueKind::UserAgent, "L/8.3", 10), ["curl/8.3"]);
    assert_eq!(suggest(ValueKind::UserAgent, "test", 10), ["test-agent/1.0"]);
    assert!(suggest(ValueKind::Attack, "", 10).is_empty());
    assert!(suggest(ValueKind::Role, "x", 10).is_empty());
}

/// A small random world of sessions, and the list every filter should produce from it,
/// computed the obvious way.
struct World {
    records: Vec<Record>,
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

impl World {
    fn new(b: i64) -> World {
        let mut rng = Lcg(7);
        let mut records = Vec::new();
        let mut n = 0;
        let users = ["alice", "bob", "carol", "dave"];
        let roles = ["admin", "customer"];
        let flows = ["auth", "billing", "admin", "ai_llm"];
        let methods = ["GET", "POST", "DELETE"];
        let statuses = [200, 201, 404, 403, 500];
        let agents = ["Mozilla/5.0 (X11; Linux x86_64)", "curl/8.5.0", "python-requests/2.31"];
        for s in 0..24 {
            let session = format!("sess-{s:02}");
            // Some sessions change User-Agent on the way.
            let (agent, later_agent) =
                (agents[s as usize % 3], agents[(s as usize + s as usize / 8) % 3]);
            // Spread over five hours so hourly index walks cross hour boundaries.
            let mut ts = b - 5 * HOUR + rng.next(4 * HOUR as u64) as i64;
            let count = 1 + rng.next(9);
            for k in 0..count {
                n += 1;
                ts += 1 + rng.next(10 * MINUTE as u64) as i64;
                let mut r = record(&session, n, ts);
                r.user_agent = Some(if k < 3 { agent } else { later_agent }.into());
                r.method = methods[rng.next(3) as usize].into();
                r.status = statuses[rng.next(5) as usize];
                r.ip = format!("203.0.113.{}", rng.next(6));
                r.path =
                    format!("/api/{}/{}", ["orders", "users", "Reports"][rng.next(3) as usize], n);
                if k > 0 && rng.next(3) > 0 {
                    r.user = Some(users[(s as usize + rng.next(2) as usize) % 4].into());
                    r.role = Some(roles[s as usize % 2].into());
                }
                if rng.next(3) == 0 {
                    r.flows = vec![flows[rng.next(4) as usize].into()];
                }
                if rng.next(2) == 0 {
                    r.params = vec![param("order", &format!("ORD-{}", rng.next(50)))];
                }
                if rng.next(6) == 0 {
                    r.attack = attack(
                        ["sqli", "xss"][rng.next(2) as usize],
                        &format!("GET /search?q=%27{n} HTTP/1.1"),
                        &[],
                        "",
                    );
                }
                records.push(r);
            }
        }
        // Make every timestamp distinct: the order of the list is then fully determined.
        records.sort_by_key(|r| r.ts);
        for i in 1..records.len() {
            if records[i].ts <= records[i - 1].ts {
                records[i].ts = Millis(records[i - 1].ts.0 + 1);
            }
        }
        World { records }
    }

    fn matches(record: &Record, filter: &Filter) -> bool {
        let search = {
            let mut text = record.path.clone();
            if let Some(user) = &record.user {
                text += &format!("\n{user}");
            }
            for p in &record.params {
                text += &format!("\n{}={}", p.name, p.value);
            }
            if let Some(a) = &record.attack {
                text += &format!("\n{}", a.request.line);
            }
            text.to_ascii_lowercase()
        };
        filter.from.is_none_or(|from| record.ts >= from)
            && filter.to.is_none_or(|to| record.ts <= to)
            && filter.request_id.as_ref().is_none_or(|id| &record.request_id == id)
            && filter.ip.as_ref().is_none_or(|ip| &record.ip == ip)
            && filter.method.as_ref().is_none_or(|m| &record.method == m)
            && filter.status.is_none_or(|status| {
                let (low, high) = status.range();
                (low..=high).contains(&record.status)
            })
            && filter.attack.as_ref().is_none_or(|attack| match (attack, &record.attack) {
                (AttackFilter::Any, Some(_)) => true,
                (AttackFilter::Kind(kind), Some(a)) => a.kind.to_lowercase() == kind.to_lowercase(),
                _ => false,
            })
            && filter.q.as_ref().is_none_or(|q| search.contains(&q.to_ascii_lowercase()))
    }

    /// (session id, requests, first, last, flows, ips, attacks, user, role), newest first.
    fn expected(&self, filter: &Filter) -> Vec<Row> {
        let mut by_session: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
        for r in &self.records {
            by_session.entry(&r.session_id).or_default().push(r);
        }
        let mut rows = Vec::new();
        for (id, records) in by_session {
            let last_of = |pick: fn(&Record) -> Option<&String>| {
                records
                    .iter()
                    .filter(|r| pick(r).is_some())
                    .max_by_key(|r| r.ts)
                    .and_then(|r| pick(r).cloned())
            };
            let user = last_of(|r| r.user.as_ref());
            let role = last_of(|r| r.role.as_ref());
            let fold = |text: &str| text.to_lowercase();
            let seen = |wanted: &Option<String>, values: &dyn Fn(&Record) -> Vec<String>| {
                wanted.as_ref().is_none_or(|wanted| {
                    records.iter().any(|r| values(r).iter().any(|v| fold(v) == fold(wanted)))
                })
            };
            let agent_seen = filter.ua.as_ref().is_none_or(|part| {
                records.iter().any(|r| {
                    r.user_agent.as_ref().is_some_and(|agent| fold(agent).contains(&fold(part)))
                })
            });
            if !seen(&filter.user, &|r| r.user.iter().cloned().collect())
                || !seen(&filter.role, &|r| r.role.iter().cloned().collect())
                || !seen(&filter.flow, &|r| r.flows.clone())
                || !agent_seen
            {
                continue;
            }
            let in_order = |values: &dyn Fn(&Record) -> Option<&String>| {
                let mut by_time: Vec<&&Record> = records.iter().collect();
                by_time.sort_by_key(|r| r.ts);
                let mut listed: Vec<String> = Vec::new();
                for r in by_time {
                    if let Some(value) = values(r) {
                        if !listed.contains(value) {
                            listed.push(value.clone());
                        }
                    }
                }
                listed
            };
            let users = in_order(&|r| r.user.as_ref());
            let user_agents = in_order(&|r| r.user_agent.as_ref());
            let selected: Vec<&&Record> =
                records.iter().filter(|r| Self::matches(r, filter)).collect();
            if selected.is_empty() {
                continue;
            }
            let mut flows = BTreeMap::new();
            for r in &selected {
                for f in &r.flows {
                    *flows.entry(f.clone()).or_insert(0) += 1;
                }
            }
            rows.push(Row {
                id: id.to_owned(),
                requests: selected.len() as u64,
                first: selected.iter().map(|r| r.ts).min().unwrap(),
                last: selected.iter().map(|r| r.ts).max().unwrap(),
                flows,
                ips: selected
                    .iter()
                    .map(|r| r.ip.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
                attacks: selected.iter().filter(|r| r.attack.is_some()).count() as u64,
                user,
                role,
                users,
                user_agents,
            });
        }
        rows.sort_by_key(|row| std::cmp::Reverse(row.last));
        rows
    }
}

#[derive(Debug, PartialEq)]
struct Row {
    id: String,
    requests: u64,
    first: Millis,
    last: Millis,
    flows: BTreeMap<String, u64>,
    ips: Vec<String>,
    attacks: u64,
    user: Option<String>,
    role: Option<String>,
    users: Vec<String>,
    user_agents: Vec<String>,
}

fn rows(sessions: &[SessionSummary]) -> Vec<Row> {
    sessions
        .iter()
        .map(|s| Row {
            id: s.session_id.clone(),
            requests: s.requests,
            first: s.first_ts,
            last: s.last_ts,
            flows: s.flows.clone(),
            ips: s.ips.clone(),
            attacks: s.attacks,
            user: s.user.clone(),
            role: s.role.clone(),
            users: s.users.clone(),
            user_agents: s.user_agents.clone(),
        })
        .collect()
}

fn every_filter_selects_sessions_and_counts_only_selected_requests(kind: Kind) {
    let t = kind.store();
    let b = base();
    let world = World::new(b);
    // Ingest in two batches, out of time order, as several nodes would deliver.
    let (late, early) = world.records.split_at(world.records.len() / 2);
    ingest(&*t.store, early);
    ingest(&*t.store, late);

    let pick = |i: usize| &world.records[i * 7 % world.records.len()];
    let mid = world.records[world.records.len() / 2].ts.0;
    let mut filters = vec![
        ("none", Filter::default()),
        ("from", Filter { from: Some(Millis(mid)), ..Default::default() }),
        ("to", Filter { to: Some(Millis(mid)), ..Default::default() }),
        (
            "from+to",
            Filter {
                from: Some(Millis(mid - HOUR)),
                to: Some(Millis(mid + 30 * MINUTE)),
                ..Default::default()
            },
        ),
        (
            "request_id",
            Filter { request_id: Some(pick(3).request_id.clone()), ..Default::default() },
        ),
        ("ip", Filter { ip: Some(pick(1).ip.clone()), ..Default::default() }),
        ("method", Filter { method: Some("DELETE".into()), ..Default::default() }),
        ("status code", Filter { status: Some(StatusFilter::Code(404)), ..Default::default() }),
        ("status class", Filter { status: Some(StatusFilter::Class(5)), ..Default::default() }),
        ("attack any", Filter { attack: Some(AttackFilter::Any), ..Default::default() }),
        (
            "attack kind",
            Filter { attack: Some(AttackFilter::Kind("xss".into())), ..Default::default() },
        ),
        ("q path", Filter { q: Some("reports/".into()), ..Default::default() }),
        ("q case", Filter { q: Some("ORD-1".into()), ..Default::default() }),
        ("q user", Filter { q: Some("caro".into()), ..Default::default() }),
        ("q attack line", Filter { q: Some("search?q=%27".into()), ..Default::default() }),
        ("user", Filter { user: Some("bob".into()), ..Default::default() }),
        ("user case", Filter { user: Some("CaRoL".into()), ..Default::default() }),
        ("role", Filter { role: Some("admin".into()), ..Default::default() }),
        ("role case", Filter { role: Some("Customer".into()), ..Default::default() }),
        ("flow", Filter { flow: Some("billing".into()), ..Default::default() }),
        ("flow case", Filter { flow: Some("Billing".into()), ..Default::default() }),
        ("ua", Filter { ua: Some("CURL/".into()), ..Default::default() }),
        ("ua middle", Filter { ua: Some("linux".into()), ..Default::default() }),
        (
            "attack case",
            Filter { attack: Some(AttackFilter::Kind("XSS".into())), ..Default::default() },
        ),
        (
            "ua+user+time",
            Filter {
                ua: Some("requests".into()),
                user: Some("dave".into()),
                to: Some(Millis(mid)),
                ..Default::default()
            },
        ),
        ("nothing ua", Filter { ua: Some("wget".into()), ..Default::default() }),
        ("nothing user part", Filter { user: Some("ali".into()), ..Default::default() }),
        (
            "user+time",
            Filter {
                user: Some("alice".into()),
                from: Some(Millis(b - 3 * HOUR)),
                ..Default::default()
            },
        ),
        (
            "flow+time",
            Filter { flow: Some("auth".into()), to: Some(Millis(mid)), ..Default::default() },
        ),
        (
            "role+ip",
            Filter {
                role: Some("customer".into()),
                ip: Some(pick(2).ip.clone()),
                ..Default::default()
            },
        ),
        (
            "ip+status+time",
            Filter {
                ip: Some(pick(5).ip.clone()),
                status: Some(StatusFilter::Class(2)),
                from: Some(Millis(b - 4 * HOUR)),
                ..Default::default()
            },
        ),
        ("nothing", Filter { user: Some("nobody".into()), ..Default::default() }),
        ("nothing q", Filter { q: Some("no such text".into()), ..Default::default() }),
    ];
    filters.push((
        "method+q",
        Filter { method: Some("POST".into()), q: Some("users".into()), ..Default::default() },
    ));
    // Sessions that straddle the range and hours: only their requests inside it count.
    filters.push((
        "q+from+to",
        Filter {
            q: Some("orders/".into()),
            from: Some(Millis(mid - HOUR)),
            to: Some(Millis(mid + 30 * MINUTE)),
            ..Default::default()
        },
    ));
    filters.push((
        "q+status",
        Filter {
            q: Some("ord-".into()),
            status: Some(StatusFilter::Code(404)),
            ..Default::default()
        },
    ));

    for (name, filter) in &filters {
        let expected = world.expected(filter);
        if !name.starts_with("nothing") {
            assert!(!expected.is_empty(), "{name}: the world should have matches");
        }
        for page in [1, 3, 100] {
            let got = rows(&list_all(&*t.store, filter, page));
            assert_eq!(got, expected, "filter {name}, pages of {page}");
        }
    }
}

/// The key a sort orders a listed row by; the risk is read from its summary.
fn sort_value(key: SortKey, row: &Row, summary: &SessionSummary) -> i64 {
    match key {
        SortKey::Last => row.last.0,
        SortKey::First => row.first.0,
        SortKey::Requests => row.requests as i64,
        SortKey::Duration => row.last.0 - row.first.0,
        SortKey::Attacks => row.attacks as i64,
        SortKey::Risk => i64::from(summary.risk),
    }
}

fn every_sort_orders_pages_both_ways_with_an_exact_total(kind: Kind) {
    let t = kind.store();
    let b = base();
    let world = World::new(b);
    ingest(&*t.store, &world.records);
    let mid = world.records[world.records.len() / 2].ts.0;
    let (from, to) = (Millis(mid - HOUR), Millis(mid + 30 * MINUTE));
    // Whole hours and a part of one at either end.
    let wide = (Millis(mid - 2 * HOUR - 7 * MINUTE), Millis(mid + HOUR + 13 * MINUTE));
    let filters = [
        ("none", Filter::default()),
        ("from", Filter { from: Some(Millis(mid)), ..Default::default() }),
        ("flow", Filter { flow: Some("billing".into()), ..Default::default() }),
        // A time range alone counts the sessions inside it from their rows and only those
        // across its ends request by request: both kinds are in these lists.
        ("from+to", Filter { from: Some(from), to: Some(to), ..Default::default() }),
        (
            "to+flow",
            Filter { to: Some(Millis(mid)), flow: Some("auth".into()), ..Default::default() },
        ),
        ("status", Filter { status: Some(StatusFilter::Class(4)), ..Default::default() }),
        ("q", Filter { q: Some("orders".into()), ..Default::default() }),
        (
            "q+from",
            Filter { q: Some("ord-1".into()), from: Some(Millis(mid)), ..Default::default() },
        ),
        (
            "q+role",
            Filter { q: Some("orders".into()), role: Some("admin".into()), ..Default::default() },
        ),
        ("nothing", Filter { user: Some("nobody".into()), ..Default::default() }),
        // Lists whose requests are selected by time and attack only: the ClickHouse store counts
        // them from its hourly summaries and the requests of the partial hours at the ends.
        ("attack", Filter { attack: Some(AttackFilter::Any), ..Default::default() }),
        (
            "attack+flow",
            Filter {
                attack: Some(AttackFilter::Any),
                flow: Some("billing".into()),
                ..Default::default()
            },
        ),
        ("wide", Filter { from: Some(wide.0), to: Some(wide.1), ..Default::default() }),
        (
            "wide+attack",
            Filter {
                from: Some(wide.0),
                to: Some(wide.1),
                attack: Some(AttackFilter::Any),
                ..Default::default()
            },
        ),
    ];
    let mut spans: BTreeMap<&str, (Millis, Millis)> = BTreeMap::new();
    for r in &world.records {
        let span = spans.entry(&r.session_id).or_insert((r.ts, r.ts));
        *span = (span.0.min(r.ts), span.1.max(r.ts));
    }
    let inside = spans.values().filter(|(first, last)| from <= *first && *last <= to).count();
    let across = spans
        .values()
        .filter(|(first, last)| *first <= to && from <= *last)
        .filter(|(first, last)| *first < from || to < *last)
        .count();
    assert!(
        inside > 0 && across > 0,
        "sessions inside the range ({inside}) and across it ({across})"
    );
    for (name, filter) in &filters {
        let mut expected = world.expected(filter);
        expected.sort_by(|a, b| a.id.cmp(&b.id));
        for key in SortKey::ALL {
            for order in [Order::Desc, Order::Asc] {
                let sort = Sort { key, order };
                let whole = list_sorted(&*t.store, filter, sort, 500);
                let mut got = rows(&whole);
                let values: Vec<i64> =
                    got.iter().zip(&whole).map(|(row, s)| sort_value(key, row, s)).collect();
                let mut sorted = values.clone();
                sorted.sort();
                if order == Order::Desc {
                    sorted.reverse();
                }
                assert_eq!(values, sorted, "{name}: {key:?} {order:?} is in order");
                // Pages of any size cut the same list.
                for page in [1, 2, 5] {
                    let paged: Vec<String> = list_sorted(&*t.store, filter, sort, page)
                        .into_iter()
                        .map(|s| s.session_id)
                        .collect();
                    let ids: Vec<String> = whole.iter().map(|s| s.session_id.clone()).collect();
                    assert_eq!(paged, ids, "{name}: {key:?} {order:?} in pages of {page}");
                }
                got.sort_by(|a, b| a.id.cmp(&b.id));
                assert_eq!(got, expected, "{name}: {key:?} {order:?} lists every session once");
            }
        }
    }
}

/// Walks from the last page back to the first with `prev_cursor`: the same pages, in reverse.
fn previous_pages_retrace_the_next_ones(kind: Kind) {
    let t = kind.store();
    let world = World::new(base());
    ingest(&*t.store, &world.records);
    for filter in [Filter::default(), Filter { method: Some("GET".into()), ..Default::default() }] {
        for sort in [
            Sort { key: SortKey::Requests, order: Order::Desc },
            Sort { key: SortKey::First, order: Order::Asc },
        ] {
            let mut query = ListQuery { filter: filter.clone(), sort, cursor: None, limit: 4 };
            let mut forward = Vec::new();
            let last = loop {
                let page = t.store.list_sessions(&query).unwrap();
                forward.push(ids(&page));
                match &page.next_cursor {
                    Some(next) => query.cursor = ListCursor::parse(next),
                    None => break page,
                }
            };
            assert!(forward.len() > 2, "the world fills several pages");
            let mut backward = vec![ids(&last)];
            let mut prev = last.prev_cursor;
            while let Some(cursor) = prev {
                query.cursor = ListCursor::parse(&cursor);
                let page = t.store.list_sessions(&query).unwrap();
                backward.push(ids(&page));
                prev = page.prev_cursor;
            }
            backward.reverse();
            assert_eq!(backward, forward, "{sort:?}");
        }
    }
}

fn ids(page: &SessionPage) -> Vec<String> {
    page.sessions.iter().map(|s| s.session_id.clone()).collect()
}

fn pages_stay_stable_while_records_arrive(kind: Kind) {
    let b = base();
    // Both ways of paging: through the session rows, and through the requests.
    for filter in [Filter::default(), Filter { from: Some(Millis(b - HOUR)), ..Default::default() }]
    {
        let t = kind.store();
        let records: Vec<Record> =
            (0..10).map(|i| record(&format!("p{i}"), i + 1, b + i as i64 * MINUTE)).collect();
        ingest(&*t.store, &records);

        let first = list(&*t.store, &filter, 4);
        let ids: Vec<_> = first.sessions.iter().map(|s| s.session_id.clone()).collect();
        assert_eq!(ids, ["p9", "p8", "p7", "p6"]);

        // Meanwhile: a new session, and new activity in one shown already and one not yet.
        ingest(
            &*t.store,
            &[
                record("new", 100, b + HOUR),
                record("p8", 101, b + HOUR),
                record("p2", 102, b + HOUR),
            ],
        );

        let mut rest = Vec::new();
        let mut cursor = first.next_cursor.clone();
        while let Some(next) = cursor {
            let query =
                ListQuery { cursor: ListCursor::parse(&next), ..ListQuery::new(filter.clone(), 4) };
            let page = t.store.list_sessions(&query).unwrap();
            rest.extend(page.sessions.iter().map(|s| s.session_id.clone()));
            cursor = page.next_cursor;
        }
        // Nothing repeats and nothing unchanged is skipped; p2 moved up, before the cursor.
        assert_eq!(rest, ["p5", "p4", "p3", "p1", "p0"]);
    }
}

fn session_view_has_stats_related_sessions_and_filtered_requests(kind: Kind) {
    let t = kind.store();
    let b = base();
    let mut records = Vec::new();
    for n in 1..=6u64 {
        let mut r = record("main", n, b + n as i64 * MINUTE);
        r.method = if n % 2 == 0 { "POST" } else { "GET" }.into();
        r.status = if n == 6 { 403 } else { 200 };
        r.ip = if n <= 4 { "192.0.2.1" } else { "192.0.2.2" }.into();
        if n == 6 {
            r.attack = attack("xss", "POST /c HTTP/1.1", &[("Host", "x")], "<script>");
        }
        if n <= 2 {
            r.flows = vec!["auth".into()];
        }
        records.push(r);
    }
    // Same key value, later session; a session with another key.
    let mut later = record("main-later", 10, b + HOUR);
    later.key_hash = "key-main".into();
    records.push(later);
    records.push(record("other", 11, b + HOUR));
    ingest(&*t.store, &records);

    let detail = t.store.session("main", &Filter::default(), None, 100).unwrap().unwrap();
    assert_eq!(detail.session.requests, 6);
    assert_eq!(detail.stats.methods, BTreeMap::from([("GET".into(), 3), ("POST".into(), 3)]));
    assert_eq!(detail.stats.statuses, BTreeMap::from([("200".into(), 5), ("403".into(), 1)]));
    assert_eq!(
        detail.stats.ips,
        BTreeMap::from([("192.0.2.1".into(), 4), ("192.0.2.2".into(), 2)])
    );
    assert_eq!(detail.stats.attacks, BTreeMap::from([("xss".into(), 1)]));
    assert_eq!(detail.stats.flows, BTreeMap::from([("auth".into(), 2)]));
    assert_eq!(detail.related, ["main-later"]);
    let times: Vec<_> = detail.requests.requests.iter().map(|r| r.position.ts).collect();
    assert_eq!(times, (1..=6).map(|n| b + n * MINUTE).collect::<Vec<_>>());
    assert_eq!(detail.timeline.bins.iter().map(|bin| bin.ok + bin.client_errors).sum::<u64>(), 6);
    assert_eq!(detail.timeline.bins.iter().map(|bin| bin.attacks).sum::<u64>(), 1);

    // In-session filters select the requests and everything counted from them.
    let post =
        Filter { method: Some("POST".into()), ip: Some("192.0.2.1".into()), ..Default::default() };
    let detail = t.store.session("main", &post, None, 100).unwrap().unwrap();
    assert_eq!(detail.session.requests, 2);
    assert_eq!(detail.stats.methods, BTreeMap::from([("POST".into(), 2)]));
    assert_eq!(detail.session.first_ts, Millis(b + 2 * MINUTE));
    assert_eq!(detail.session.last_ts, Millis(b + 4 * MINUTE));
    assert_eq!(detail.requests.requests.len(), 2);

    // The request id filter shows just that request ("Explore in API Sessions").
    let one = Filter { request_id: Some("main-req-6".into()), ..Default::default() };
    let detail = t.store.session("main", &one, None, 100).unwrap().unwrap();
    assert_eq!(detail.requests.requests.len(), 1);
    assert!(detail.requests.requests[0].json.contains("\"request_id\":\"main-req-6\""));

    // Requests come in pages.
    let page = t.store.session("main", &Filter::default(), None, 4).unwrap().unwrap();
    assert_eq!(page.requests.requests.len(), 4);
    let next = t.store.session("main", &Filter::default(), page.requests.next, 4).unwrap().unwrap();
    assert_eq!(next.requests.requests.len(), 2);
    assert!(next.requests.next.is_none());
    assert_eq!(next.requests.requests[0].position.ts, b + 5 * MINUTE);

    assert!(t.store.session("nope", &Filter::default(), None, 10).unwrap().is_none());
}

fn nothing_older_than_the_retention_is_served_and_the_purge_removes_it(kind: Kind) {
    let t = kind.store_with_retention(WEEK);
    let now = Millis::now().0;
    // Expired by more than a day: ClickHouse purges whole days (reads hide the rest).
    let old = now - WEEK - 2 * DAY;
    // Entirely expired; straddling the cutoff; recent.
    let mut records = vec![record("expired", 1, old), record("expired", 2, old + MINUTE)];
    let mut straddle_old = record("straddle", 3, old);
    straddle_old.user = Some("old-user".into());
    straddle_old.flows = vec!["admin".into()];
    straddle_old.ip = "198.51.100.1".into();
    records.push(straddle_old);
    let mut straddle_new = record("straddle", 4, now - HOUR);
    straddle_new.flows = vec!["auth".into()];
    records.push(straddle_new);
    records.push(record("recent", 5, now - MINUTE));
    ingest(&*t.store, &records);

    // Before any purge: hidden, and the straddling session counts only what is recent.
    let check = |when: &str| {
        let sessions = list_all(&*t.store, &Filter::default(), 10);
        let ids: Vec<_> = sessions.iter().map(|s| s.session_id.as_str()).collect();
        assert_eq!(ids, ["recent", "straddle"], "{when}");
        let straddle = &sessions[1];
        assert_eq!(straddle.requests, 1, "{when}");
        assert_eq!(straddle.first_ts, Millis(now - HOUR), "{when}");
        assert_eq!(straddle.flows, BTreeMap::from([("auth".into(), 1)]), "{when}");
        assert_eq!(straddle.ips, ["192.0.2.1"], "{when}");
        // Its user was only seen in the expired request.
        assert_eq!(straddle.user, None, "{when}");
        assert!(straddle.users.is_empty(), "{when}");
        let old_user = Filter { user: Some("old-user".into()), ..Default::default() };
        assert!(list(&*t.store, &old_user, 10).sessions.is_empty(), "{when}");
        let old_flow = Filter { flow: Some("admin".into()), ..Default::default() };
        assert!(list(&*t.store, &old_flow, 10).sessions.is_empty(), "{when}");
        let suggested =
            t.store.suggest(api_sessions::store::values::ValueKind::User, "", 10).unwrap();
        assert!(suggested.is_empty(), "{when}: {suggested:?}");
        assert!(t.store.session("expired", &Filter::default(), None, 10).unwrap().is_none());
        let detail = t.store.session("straddle", &Filter::default(), None, 10).unwrap().unwrap();
        assert_eq!(detail.requests.requests.len(), 1, "{when}");
        let old_hour = Filter { to: Some(Millis(old + HOUR)), ..Default::default() };
        assert!(list(&*t.store, &old_hour, 10).sessions.is_empty(), "{when}");
    };
    check("before the purge");

    let purged = t.store.purge().unwrap();
    assert_eq!((purged.requests, purged.sessions), (3, 1));
    check("after the purge");

    // A second purge finds nothing.
    let again = t.store.purge().unwrap();
    assert_eq!((again.requests, again.sessions), (0, 0));

    // Purged means forgotten: sent again, the expired records are new (and hidden).
    let expired: Vec<Record> = records.iter().filter(|r| r.ts.0 < now - WEEK).cloned().collect();
    assert_eq!(ingest(&*t.store, &expired).accepted, 3);
    check("after the records came back");
}

fn ingest_file_is_idempotent_and_reports_bad_lines(kind: Kind) {
    let t = kind.store();
    let b = base();
    let mut data = ndjson(&[record("f", 1, b), record("f", 2, b + 1)]);
    data.extend_from_slice(b"{not json}\n\n");
    data.extend_from_slice(&ndjson(&[record("f", 3, b + 2)]));
    data.extend_from_slice(b"{\"v\":2}");
    let path = t.dir.path().join("records.ndjson");
    std::fs::write(&path, &data).unwrap();

    let report = api_sessions::ingest::ingest_file(&*t.store, &path).unwrap();
    assert_eq!((report.counts.accepted, report.counts.duplicates), (3, 0));
    let lines: Vec<u64> = report.rejected.iter().map(|r| r.line).collect();
    assert_eq!(lines, [3, 6]);
    assert_eq!(report.rejected_total, 2);

    let again = api_sessions::ingest::ingest_file(&*t.store, &path).unwrap();
    assert_eq!((again.counts.accepted, again.counts.duplicates), (0, 3));

    // gzip-compressed files too.
    let gz = t.dir.path().join("records.ndjson.gz");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &ndjson(&[record("f", 4, b + 3)])).unwrap();
    std::fs::write(&gz, encoder.finish().unwrap()).unwrap();
    let report = api_sessions::ingest::ingest_file(&*t.store, &gz).unwrap();
    assert_eq!(report.counts.accepted, 1);
}

/// Values with quotes, backslashes, NUL, line breaks and non-ASCII text are stored and matched
/// exactly by every filter: they are data, never part of a statement.
fn hostile_values_are_matched_exactly(kind: Kind) {
    let t = kind.store();
    let b = base();
    let evil = "x' OR ''=' \\' \u{0} \n é\\x27 ) --";
    let mut r = record(evil, 1, b);
    r.request_id = format!("{evil}-id");
    r.user = Some(evil.into());
    r.role = Some(format!("{evil}-role"));
    r.flows = vec![format!("{evil}-flow")];
    r.ip = format!("{evil}-ip");
    r.path = format!("/{evil}");
    r.attack = attack(&format!("{evil}-attack"), "GET / HTTP/1.1", &[], "");
    r.key_hash = evil.into();
    // A session whose values are prefixes or neighbours of the hostile ones.
    let mut other = record("x", 2, b + 1);
    other.user = Some("x".into());
    other.key_hash = evil.into();
    ingest(&*t.store, &[r.clone(), other]);

    let filters = [
        Filter { user: r.user.clone(), ..Default::default() },
        Filter { role: r.role.clone(), ..Default::default() },
        Filter { flow: Some(r.flows[0].clone()), ..Default::default() },
        Filter { ip: Some(r.ip.clone()), ..Default::default() },
        Filter { request_id: Some(r.request_id.clone()), ..Default::default() },
        Filter { attack: Some(AttackFilter::Kind(format!("{evil}-attack"))), ..Default::default() },
        Filter { q: Some(evil.to_ascii_uppercase()), ..Default::default() },
    ];
    for filter in &filters {
        let listed = list(&*t.store, filter, 10);
        let ids: Vec<_> = listed.sessions.iter().map(|s| s.session_id.as_str()).collect();
        assert_eq!(ids, [evil], "{filter:?}");
        assert_eq!(listed.sessions[0].user.as_deref(), Some(evil));
    }
    let detail = t.store.session(evil, &Filter::default(), None, 10).unwrap().unwrap();
    assert_eq!(detail.requests.requests.len(), 1);
    assert_eq!(detail.related, ["x"]);
    assert!(t.store.session("x'", &Filter::default(), None, 10).unwrap().is_none());
}

/// A batch as large as a file chunk or a big POST is deduplicated whole, against what is
/// stored and within itself.
fn large_batches_are_deduplicated(kind: Kind) {
    let t = kind.store();
    let b = base();
    let records: Vec<Record> =
        (0..12_000).map(|n| record(&format!("big-{}", n % 300), n + 1, b + n as i64)).collect();
    assert_eq!(ingest(&*t.store, &records).accepted, 12_000);
    let mut again = records.clone();
    again.push(record("big-new", 20_000, b));
    let counts = ingest(&*t.store, &again);
    assert_eq!((counts.accepted, counts.duplicates), (1, 12_000));
    let listed = list(&*t.store, &Filter::default(), 500);
    assert_eq!(listed.sessions.len(), 301);
    assert_eq!(listed.sessions.iter().map(|s| s.requests).sum::<u64>(), 12_001);
}

/// Captured values have no length limit: long ones are stored, deduplicated and found.
fn values_of_any_length_are_stored_and_found(kind: Kind) {
    let t = kind.store();
    let mut r = record("long", 1, base());
    r.request_id = "r".repeat(300_000);
    r.session_id = format!("s{}", "'".repeat(100_000));
    r.path = format!("/{}", "p".repeat(100_000));
    assert_eq!(ingest(&*t.store, std::slice::from_ref(&r)).accepted, 1);
    assert_eq!(ingest(&*t.store, std::slice::from_ref(&r)).duplicates, 1);

    let filter = Filter { request_id: Some(r.request_id.clone()), ..Default::default() };
    let listed = list(&*t.store, &filter, 10);
    let ids: Vec<_> = listed.sessions.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!(ids, [r.session_id.as_str()]);
    let detail = t.store.session(&r.session_id, &filter, None, 10).unwrap().unwrap();
    assert_eq!(detail.requests.requests.len(), 1);
    assert!(detail.requests.requests[0].json.contains(&r.path));
}

#[test]
fn clickhouse_schema_is_created_once_and_a_newer_one_refused() {
    use api_sessions::store::clickhouse::{ClickHouseStore, Config};
    if fixtures::clickhouse::skipped() {
        return;
    }
    let url = fixtures::clickhouse::database_url();
    let open = || ClickHouseStore::open(Config::parse(&url).unwrap(), WEEK);
    let store = open().unwrap();
    assert_eq!(ingest(&store, &[record("kept", 1, base())]).accepted, 1);
    drop(store);

    // Opening again migrates nothing and keeps the data.
    let store = open().unwrap();
    let listed = list(&store, &Filter::default(), 10);
    assert_eq!(listed.sessions.len(), 1);
    let versions =
        fixtures::clickhouse::execute(&url, "SELECT version FROM schema_version ORDER BY version");
    assert_eq!(versions, "1\n2\n3\n4\n5\n6\n7\n");

    fixtures::clickhouse::execute(&url, "INSERT INTO schema_version VALUES (99)");
    let err = open().err().expect("a newer schema is refused").to_string();
    assert!(err.contains("schema version 99 is newer than this api-sessions supports"), "{err}");
}

on_every_store!(
    duplicates_are_stored_once_by_origin_or_request_id,
    any_value_seen_in_the_session_matches_case_insensitively,
    suggestions_come_from_the_values_seen,
    sessions_are_aggregated_at_ingest,
    every_filter_selects_sessions_and_counts_only_selected_requests,
    every_sort_orders_pages_both_ways_with_an_exact_total,
    previous_pages_retrace_the_next_ones,
    pages_stay_stable_while_records_arrive,
    session_view_has_stats_related_sessions_and_filtered_requests,
    nothing_older_than_the_retention_is_served_and_the_purge_removes_it,
    ingest_file_is_idempotent_and_reports_bad_lines,
    values_of_any_length_are_stored_and_found,
    hostile_values_are_matched_exactly,
    large_batches_are_deduplicated,
);
