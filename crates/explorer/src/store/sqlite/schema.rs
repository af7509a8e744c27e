//! The SQLite schema and its migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied. A migration is appended, never
//! edited, so a database written by any earlier release upgrades in place.

use rusqlite::{Connection, Transaction};

use super::search;
use crate::store::{Result, StoreError};

const HOUR_MS: i64 = 3_600_000;

/// The `hour` bucket of a timestamp.
pub fn hour(ts: i64) -> i64 {
    ts.div_euclid(HOUR_MS)
}

/// A request's id is its time in milliseconds shifted left by this, plus a number telling
/// apart the requests of one millisecond: the `requests` table, keyed by id, is in time order,
/// and so is every index in the order of its implicit trailing id.
pub const ID_SHIFT: u32 = 14;
/// Requests one millisecond holds: 16,384, sixteen times what a fleet serving a million
/// requests a second starts in one.
pub const IDS_PER_MS: i64 = 1 << ID_SHIFT;
/// ±2^48 ms spans the years -6949 to 10889, every time a record can carry (RFC 3339 has four
/// digits for the year); the clamp only keeps the shift from overflowing.
const ID_TS_LIMIT: i64 = 1 << 48;

/// The smallest id of a request at `ts`.
pub fn first_id(ts: i64) -> i64 {
    ts.clamp(-ID_TS_LIMIT, ID_TS_LIMIT - 1) << ID_SHIFT
}

/// The largest id of a request at `ts`.
pub fn last_id(ts: i64) -> i64 {
    first_id(ts) | (IDS_PER_MS - 1)
}

/// One step of the schema.
enum Migration {
    Sql(&'static str),
    Code(fn(&Transaction<'_>) -> Result<()>),
}

/// Applied in order; `user_version` is the count applied.
const MIGRATIONS: &[Migration] = &[
    // 1: the initial schema.
    //
    // `requests` holds what filters and aggregates read, kept narrow so scans stay in the page
    // cache; the record as received lives in `records` under the same id and is only read for
    // the requests shown. `sessions` is aggregated at ingest so the unfiltered list never
    // touches `requests`; `session_flows` repeats the session's `last_ts` so the flow filter
    // walks an index in list order.
    //
    // Indexes on random-looking values (request ids, IPs) lead with `hour` (ts / 1 h): a batch
    // then only touches the current hour's part of them, instead of pages all over the index
    // that every commit would write out again. Lookups walk the hours of their time range.
    // `(node, pid, seq)` and `(session, ts)` grow at their ends already.
    //
    // `search_filters` and `search_blocks` index `search` for the `q` filter (see `search`).
    Migration::Sql(
        r#"
    CREATE TABLE sessions (
        id            INTEGER PRIMARY KEY,
        session_id    TEXT    NOT NULL UNIQUE,
        key_hash      TEXT    NOT NULL,
        session_key   TEXT    NOT NULL,
        session_start INTEGER NOT NULL,
        first_ts      INTEGER NOT NULL,
        last_ts       INTEGER NOT NULL,
        requests      INTEGER NOT NULL,
        attacks       INTEGER NOT NULL,
        user          TEXT,
        user_ts       INTEGER,
        role          TEXT,
        role_ts       INTEGER,
        nodes         TEXT    NOT NULL
    );
    CREATE INDEX sessions_last ON sessions (last_ts, id);
    CREATE INDEX sessions_first ON sessions (first_ts);
    CREATE INDEX sessions_user ON sessions (user, last_ts, id) WHERE user IS NOT NULL;
    CREATE INDEX sessions_role ON sessions (role, last_ts, id) WHERE role IS NOT NULL;
    CREATE INDEX sessions_key_hash ON sessions (key_hash, last_ts);

    CREATE TABLE session_flows (
        session  INTEGER NOT NULL,
        flow     TEXT    NOT NULL,
        requests INTEGER NOT NULL,
        last_ts  INTEGER NOT NULL,
        PRIMARY KEY (session, flow)
    ) WITHOUT ROWID;
    CREATE INDEX session_flows_flow ON session_flows (flow, last_ts, session);

    CREATE TABLE session_ips (
        session INTEGER NOT NULL,
        ip      TEXT    NOT NULL,
        PRIMARY KEY (session, ip)
    ) WITHOUT ROWID;

    CREATE TABLE requests (
        id         INTEGER PRIMARY KEY,
        session    INTEGER NOT NULL,
        ts         INTEGER NOT NULL,
        hour       INTEGER NOT NULL,
        request_id TEXT    NOT NULL,
        node       TEXT    NOT NULL,
        pid        INTEGER NOT NULL,
        seq        INTEGER NOT NULL,
        method     TEXT    NOT NULL,
        status     INTEGER NOT NULL,
        ip         TEXT    NOT NULL,
        user       TEXT,
        role       TEXT,
        attack     TEXT,
        flows      TEXT    NOT NULL,
        search     TEXT    NOT NULL
    );
    CREATE UNIQUE INDEX requests_request_id ON requests (hour, request_id);
    CREATE UNIQUE INDEX requests_origin ON requests (node, pid, seq);
    CREATE INDEX requests_ts ON requests (ts);
    CREATE INDEX requests_session ON requests (session, ts);
    CREATE INDEX requests_ip ON requests (hour, ip, ts);
    CREATE INDEX requests_status ON requests (hour, status, ts);
    CREATE INDEX requests_attack ON requests (hour, attack, ts) WHERE attack IS NOT NULL;

    CREATE TABLE records (
        id   INTEGER PRIMARY KEY,
        json TEXT NOT NULL
    );

    CREATE TABLE search_filters (
        hour INTEGER PRIMARY KEY,
        bits BLOB    NOT NULL
    );

    CREATE TABLE search_blocks (
        id   INTEGER PRIMARY KEY,
        hour INTEGER NOT NULL,
        data BLOB    NOT NULL
    );
    CREATE INDEX search_blocks_hour ON search_blocks (hour);

    CREATE TABLE follow_positions (
        path     TEXT    PRIMARY KEY,
        inode    INTEGER NOT NULL,
        offset   INTEGER NOT NULL,
        line_len INTEGER NOT NULL,
        line_crc INTEGER NOT NULL
    );
    "#,
    ),
    // 2: time-ordered request ids, and the record text in the request row.
    //
    // Ingest is bound by the one writer thread, and a third of its time went into B-tree
    // inserts, one per table and index: with ids in time order (see `ID_SHIFT`) the `ts` index
    // is the table itself, the session, IP, status and attack indexes are in time order by
    // their implicit id without a `ts` column, and the record text needs no table of its own.
    // The key hash index loses `last_ts`, which moved its entry at every batch of a session;
    // the few sessions of one key are sorted when related sessions are listed.
    Migration::Code(time_ordered_requests),
    // 3: an index per sort key of the sessions list, so that each sort pages along an index
    // (`sessions_last` and `sessions_first` serve the two times). The duration index is on
    // the expression the list orders by.
    Migration::Sql(
        "CREATE INDEX sessions_requests ON sessions (requests);
         CREATE INDEX sessions_attacks ON sessions (attacks);
         CREATE INDEX sessions_duration ON sessions ((last_ts - first_ts));",
    ),
    // 4: the endpoint of each request and the statistics of each endpoint and hour.
    Migration::Sql(super::endpoints::SCHEMA),
    // 5: risk and signals, kept at ingest (see `signals`).
    //
    // `sessions` carries the risk and the names of the findings, so that the list filters and
    // sorts on them like on its other columns; `session_detect` keeps what the detector needs
    // to go on (its state, every signal) and the session's actor with its times, by which the
    // short sessions of an actor are found; `detect_actors` keeps each actor's state per hour.
    // An actor is the JSON text `["ip","user agent"]`.
    Migration::Sql(
        r#"
    ALTER TABLE sessions ADD COLUMN risk INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN signals TEXT NOT NULL DEFAULT '';
    CREATE INDEX sessions_risk ON sessions (risk);

    CREATE TABLE session_detect (
        session  INTEGER PRIMARY KEY,
        state    TEXT    NOT NULL,
        signals  TEXT    NOT NULL,
        actor    TEXT    NOT NULL,
        first_ts INTEGER NOT NULL,
        last_ts  INTEGER NOT NULL,
        requests INTEGER NOT NULL
    );
    CREATE INDEX session_detect_actor ON session_detect (actor, first_ts);

    CREATE TABLE detect_actors (
        actor TEXT    NOT NULL,
        hour  INTEGER NOT NULL,
        state TEXT    NOT NULL,
        PRIMARY KEY (actor, hour)
    ) WITHOUT ROWID;
    CREATE INDEX detect_actors_hour ON detect_actors (hour);
    "#,
    ),
    // 6: the denylist, its version and the audit log of its changes (see `denylist`).
    Migration::Sql(super::denylist::SCHEMA),
    // 7: every user, role, flow, attack type and User-Agent seen in each session, for the
    // filters and suggestions (see `values`), filled from the stored requests.
    Migration::Code(super::values::migrate),
    // 8: the malicious requests of each session, which the attack filters select: the list
    // ranks their sessions from the index alone, and a listed session reads its few attacks
    // rather than all its requests. Ingest adds an entry for a malicious request only.
    Migration::Sql(
        "CREATE INDEX requests_session_attack ON requests (session, attack, ts)
         WHERE attack IS NOT NULL;",
    ),
    // 9: the totals of each endpoint-hour in columns, rollups per endpoint and day, and the
    // hours whose statistics wait in the writer (see `endpoints`).
    Migration::Code(super::endpoints::migrate_rollups),
    // 10: the statistics in the indexes by time too, so that ranking every endpoint by a
    // sketch over a range reads the index alone, without a lookup of each row it finds there.
    Migration::Sql(super::endpoints::COVERING_INDEXES),
    // 11: a tag per day of endpoint rollups and one for the endpoints, which tell the readers
    // what they kept of them between queries is still current (see `endpoints::Cache`).
    Migration::Sql(super::endpoints::TAGS),
    // 12: the actors' states keyed by hour first (see `signals::ACTORS_BY_HOUR`).
    Migration::Sql(super::signals::ACTORS_BY_HOUR),
];

/// Migration 2: copies the requests, in time order, into a table keyed by time-ordered ids,
/// with their record text, indexes them, and rebuilds the search blocks (which name requests by
/// id). Walking the old `ts` index keeps memory flat however large the database.
fn time_ordered_requests(tx: &Transaction<'_>) -> Result<()> {
    tx.execute_batch(
        "CREATE TABLE requests_v2 (
            id         INTEGER PRIMARY KEY,
            session    INTEGER NOT NULL,
            ts         INTEGER NOT NULL,
            hour       INTEGER NOT NULL,
            request_id TEXT    NOT NULL,
            node       TEXT    NOT NULL,
            pid        INTEGER NOT NULL,
            seq        INTEGER NOT NULL,
            method     TEXT    NOT NULL,
            status     INTEGER NOT NULL,
            ip         TEXT    NOT NULL,
            user       TEXT,
            role       TEXT,
            attack     TEXT,
            flows      TEXT    NOT NULL,
            search     TEXT    NOT NULL,
            json       TEXT    NOT NULL
        );",
    )?;
    {
        let mut select =
            tx.prepare("SELECT id, ts FROM requests INDEXED BY requests_ts ORDER BY ts, id")?;
        let mut copy = tx.prepare(
            "INSERT INTO requests_v2
             SELECT ?, r.session, r.ts, r.hour, r.request_id, r.node, r.pid, r.seq, r.method,
                    r.status, r.ip, r.user, r.role, r.attack, r.flows, r.search, rec.json
             FROM requests r JOIN records rec ON rec.id = r.id WHERE r.id = ?",
        )?;
        let mut rows = select.query([])?;
        let mut previous = None;
        while let Some(row) = rows.next()? {
            let (old, ts): (i64, i64) = (row.get(0)?, row.get(1)?);
            let id = match previous {
                Some(previous) if previous >= first_id(ts) => previous + 1,
                _ => first_id(ts),
            };
            if id > last_id(ts) {
                return Err(StoreError::new(format!(
                    "cannot upgrade the database: more than {IDS_PER_MS} requests at {ts} ms"
                )));
            }
            copy.execute([id, old])?;
            previous = Some(id);
        }
    }
    tx.execute_batch(
        "DROP INDEX sessions_key_hash;
         CREATE INDEX sessions_key_hash ON sessions (key_hash);
         DROP TABLE requests;
         DROP TABLE records;
         ALTER TABLE requests_v2 RENAME TO requests;
         CREATE UNIQUE INDEX requests_request_id ON requests (hour, request_id);
         CREATE UNIQUE INDEX requests_origin ON requests (node, pid, seq);
         CREATE INDEX requests_session ON requests (session);
         CREATE INDEX requests_ip ON requests (hour, ip);
         CREATE INDEX requests_status ON requests (hour, status);
         CREATE INDEX requests_attack ON requests (hour, attack) WHERE attack IS NOT NULL;",
    )?;
    search::rebuild_blocks(tx)
}

/// Settings of the writer connection. WAL lets the readers of the UI run while a batch is
/// written; `synchronous=NORMAL` survives a crash of the process, which is what a receiver
/// needs (a power loss may lose the last batches, which the module's spool resends).
pub fn configure_writer(conn: &Connection, cache_kib: i64) -> Result<()> {
    // Takes effect when the file is created. Commits write every page they touched to the WAL
    // one system call each; 32 KiB pages cut the calls fourfold, against 8 KiB, for the appends
    // ingest mostly does.
    conn.execute_batch("PRAGMA page_size = 32768;")?;
    configure(conn, cache_kib)?;
    // Checkpoints run on their own thread (see `writer`), not in the middle of a commit.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;",
    )?;
    Ok(())
}

/// Settings of a reader connection; `query_only` guards against a write slipping in beside
/// the writer.
pub fn configure_reader(conn: &Connection, cache_kib: i64) -> Result<()> {
    configure(conn, cache_kib)?;
    conn.execute_batch("PRAGMA query_only = ON;")?;
    Ok(())
}

fn configure(conn: &Connection, cache_kib: i64) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(&format!(
        "PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -{cache_kib};
         PRAGMA mmap_size = 1073741824;"
    ))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Brings the schema up to date.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    migrate_to(conn, MIGRATIONS.len())
}

/// Applies the migrations up to the `known`th.
fn migrate_to(conn: &mut Connection, known: usize) -> Result<()> {
    let applied: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let known = known as i64;
    if applied > known {
        return Err(StoreError::new(format!(
            "database schema version {applied} is newer than this api-sessions supports \
             ({known}); upgrade api-sessions"
        )));
    }
    for (version, migration) in
        MIGRATIONS.iter().enumerate().take(known as usize).skip(applied as usize)
    {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)?;
        match migration {
            Migration::Sql(sql) => tx.execute_batch(sql)?,
            Migration::Code(migrate) => migrate(&tx)?,
        }
        tx.pragma_update(None, "user_version", version as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer_databases() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        // A second run is a no-op, not a "table already exists" error.
        migrate(&mut conn).unwrap();

        conn.pragma_update(None, "user_version", 99).unwrap();
        let err = migrate(&mut conn).unwrap_err().to_string();
        assert!(err.contains("schema version 99 is newer"), "{err}");
    }

    #[test]
    fn upgrades_a_first_version_database_in_place() {
        let mut conn = Connection::open_in_memory().unwrap();
        let Migration::Sql(first) = &MIGRATIONS[0] else { panic!("migration 1 is SQL") };
        conn.execute_batch(first).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        // Row ids in arrival order, not time order; two requests in one millisecond.
        let rows =
            [(1, 5_000, "late"), (2, 1_000, "early"), (3, 3_000, "same-a"), (4, 3_000, "same-b")];
        for (id, ts, text) in rows {
            conn.execute(
                "INSERT INTO requests VALUES (?1, 7, ?2, ?3, ?4, 'n', 1, ?1, 'GET', 200, '::1',
                 NULL, NULL, NULL, '[]', ?4)",
                rusqlite::params![id, ts, hour(ts), text],
            )
            .unwrap();
            conn.execute("INSERT INTO records VALUES (?, ?)", rusqlite::params![id, text]).unwrap();
        }
        conn.execute("INSERT INTO search_blocks (hour, data) VALUES (0, x'00')", []).unwrap();

        migrate(&mut conn).unwrap();

        let mut select = conn.prepare("SELECT id, ts, json FROM requests ORDER BY id").unwrap();
        let stored: Vec<(i64, i64, String)> = select
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(|row| row.unwrap())
            .collect();
        let expected = [
            (first_id(1_000), 1_000, "early"),
            (first_id(3_000), 3_000, "same-a"),
            (first_id(3_000) + 1, 3_000, "same-b"),
            (first_id(5_000), 5_000, "late"),
        ];
        let expected: Vec<_> =
            expected.iter().map(|&(id, ts, json)| (id, ts, json.to_owned())).collect();
        assert_eq!(stored, expected);

        // The search blocks name the new ids, and the old (malformed) block is gone.
        let blocks: Vec<Vec<u8>> = conn
            .prepare("SELECT data FROM search_blocks ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|row| row.unwrap())
            .collect();
        let hits: Vec<(i64, Vec<u8>)> = blocks
            .iter()
            .flat_map(|block| search::entries(block).map(|(hit, text)| (hit.id, text.to_vec())))
            .collect();
        let ids: Vec<(i64, Vec<u8>)> =
            expected.iter().map(|(id, _, text)| (*id, text.clone().into_bytes())).collect();
        assert_eq!(hits, ids);
    }

    /// Migration 11 tags every day that has rollups, once, and the list of endpoints.
    #[test]
    fn tags_the_days_of_an_earlier_database() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 10).unwrap();
        for (endpoint, day) in [(1, 19_000), (2, 19_000), (1, 19_001), (3, 19_005)] {
            conn.execute(
                "INSERT INTO endpoint_days VALUES (?, ?, 1, 0, 0, 0, 0, '', x'00')",
                [endpoint, day],
            )
            .unwrap();
        }
        migrate(&mut conn).unwrap();
        let days: Vec<i64> = conn
            .prepare("SELECT day FROM endpoint_day_tags ORDER BY day")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|row| row.unwrap())
            .collect();
        assert_eq!(days, [19_000, 19_001, 19_005]);
        let tags: i64 =
            conn.query_row("SELECT count(*) FROM endpoint_catalog_tag", [], |r| r.get(0)).unwrap();
        assert_eq!(tags, 1);
    }

    /// Migration 12 keeps every actor state, which the store then finds by actor and hour.
    #[test]
    fn keys_the_actor_states_of_an_earlier_database_by_hour() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 11).unwrap();
        let rows = [
            ("[\"b\",null]", 7, vec![1u8, 2]),
            ("[\"a\",\"x\"]", 9, vec![3]),
            ("[\"a\",\"x\"]", 7, vec![]),
        ];
        for (actor, hour, state) in &rows {
            conn.execute(
                "INSERT INTO detect_actors (actor, hour, state) VALUES (?, ?, ?)",
                rusqlite::params![actor, hour, state],
            )
            .unwrap();
        }
        migrate(&mut conn).unwrap();
        for (actor, hour, state) in &rows {
            let kept: Vec<u8> = conn
                .query_row(
                    "SELECT state FROM detect_actors WHERE actor = ? AND hour = ?",
                    rusqlite::params![actor, hour],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(&kept, state);
        }
        let order: Vec<(i64, String)> = conn
            .prepare("SELECT hour, actor FROM detect_actors")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|row| row.unwrap())
            .collect();
        let hours: Vec<i64> = order.iter().map(|(hour, _)| *hour).collect();
        assert_eq!(hours, [7, 7, 9], "stored in hour order: {order:?}");
    }
}
