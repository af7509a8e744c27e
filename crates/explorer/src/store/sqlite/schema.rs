//! The SQLite schema and its migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied. A migration is appended, never
//! edited, so a database written by any earlier release upgrades in place.

use rusqlite::Connection;

use crate::store::{Result, StoreError};

const HOUR_MS: i64 = 3_600_000;

/// The `hour` bucket of a timestamp.
pub fn hour(ts: i64) -> i64 {
    ts.div_euclid(HOUR_MS)
}

/// Applied in order; `user_version` is the count applied.
const MIGRATIONS: &[&str] = &[
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
];

/// Settings of the writer connection. WAL lets the readers of the UI run while a batch is
/// written; `synchronous=NORMAL` survives a crash of the process, which is what a receiver
/// needs (a power loss may lose the last batches, which the module's spool resends).
pub fn configure_writer(conn: &Connection, cache_kib: i64) -> Result<()> {
    // Takes effect when the file is created. Commits write every page they touched to the WAL
    // one system call each; 8 KiB pages halve the calls for the appends ingest mostly does.
    conn.execute_batch("PRAGMA page_size = 8192;")?;
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
    let applied: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if applied > known {
        return Err(StoreError::new(format!(
            "database schema version {applied} is newer than this api-sessions supports \
             ({known}); upgrade api-sessions"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
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
}
