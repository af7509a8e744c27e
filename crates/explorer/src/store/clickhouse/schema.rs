//! The ClickHouse schema and its migrations.
//!
//! `schema_version` holds one row per migration applied. A migration is appended, never edited;
//! its statements are `IF NOT EXISTS`, so one interrupted half-way runs again cleanly.

use super::http::Client;
use crate::store::{Result, StoreError};

/// Milliseconds in a day: `requests` is partitioned by day of `ts`.
pub const DAY_MS: i64 = 86_400_000;

/// The tables partitioned by day of `ts`, whose partitions the purge drops.
pub const PARTITIONED: &[&str] = &[
    "requests",
    "request_ids",
    "request_origins",
    "endpoint_hours",
    "session_values",
    "session_hours",
];

/// Applied in order; each is the statements of one version.
const MIGRATIONS: &[&[&str]] = &[
    // 1: the initial schema.
    //
    // `requests` is the only table records go to; sessions were aggregated at query time with
    // `GROUP BY session_id` (since migration 6 the lists read summaries kept at insert time,
    // see `summaries`). The sort key puts each session's
    // requests together in time order, which is what the session page and its request pages
    // read; `rid` orders the requests of one millisecond (see `write`). Partitions are days, so
    // the retention purge drops whole days without rewriting anything.
    //
    // `search` is what `q` looks in (path, user, parameters, attack line), ASCII-lowercased.
    // `json` is the record as received, returned as is.
    &[
        "CREATE TABLE IF NOT EXISTS requests (
            ts            Int64,
            rid           Int64,
            session_id    String,
            key_hash      String,
            session_key   String,
            session_start Int64,
            node          String,
            pid           UInt32,
            seq           UInt64,
            request_id    String,
            method        String,
            status        UInt16,
            ip            String,
            user          Nullable(String),
            role          Nullable(String),
            attack        Nullable(String),
            flows         Array(String),
            search        String,
            json          String
        ) ENGINE = MergeTree
        PARTITION BY intDiv(ts, 86400000)
        ORDER BY (session_id, ts, rid)",
        // The keys duplicates are found by, each sorted so that looking up a batch's keys reads
        // a few granules instead of the whole table. Materialized views: the insert into
        // `requests` fills them, so they hold exactly its keys; partitioned alike for the purge.
        "CREATE MATERIALIZED VIEW IF NOT EXISTS request_ids
        ENGINE = MergeTree PARTITION BY intDiv(ts, 86400000) ORDER BY request_id
        AS SELECT request_id, ts FROM requests",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS request_origins
        ENGINE = MergeTree PARTITION BY intDiv(ts, 86400000) ORDER BY (node, pid, seq)
        AS SELECT node, pid, seq, ts FROM requests",
        // Where each followed file stands; the row with the highest version wins.
        "CREATE TABLE IF NOT EXISTS follow_positions (
            path     String,
            inode    UInt64,
            offset   UInt64,
            line_len UInt64,
            line_crc UInt32,
            version  Int64
        ) ENGINE = ReplacingMergeTree(version)
        ORDER BY path",
    ],
    // 2: the endpoint of each request and the statistics of each endpoint and hour.
    super::endpoints::SCHEMA,
    // 3: risk and signals, kept at ingest (see `signals`): per session the detector's state,
    // its scoring and its actor (`["ip","user agent"]` as JSON) with its times; per actor and
    // hour the actor's state. A batch writes new rows for what it changed; the row of the
    // highest version of a key is the current one.
    &[
        "CREATE TABLE IF NOT EXISTS session_detect (
            session_id String,
            risk       UInt8,
            findings   Array(String),
            signals    String,
            state      String,
            actor      String,
            first_ts   Int64,
            last_ts    Int64,
            requests   UInt64,
            version    Int64
        ) ENGINE = ReplacingMergeTree(version)
        ORDER BY session_id",
        "CREATE TABLE IF NOT EXISTS detect_actors (
            actor   String,
            hour    Int64,
            state   String,
            version Int64
        ) ENGINE = ReplacingMergeTree(version)
        ORDER BY (actor, hour)",
    ],
    // 4: the denylist, its versions and the audit log of its changes (see `denylist`).
    super::denylist::SCHEMA,
    // 5: every user, role, flow, attack type and User-Agent seen in each session, for the
    // filters and suggestions (see `values`), filled from the stored requests.
    super::values::SCHEMA,
    // 6: per session and hour, the aggregates the sessions list ranks and counts by, kept by a
    // materialized view as requests are inserted (see `summaries`), filled from the stored
    // requests.
    super::summaries::SCHEMA,
    // 7: `session_detect` again, with granules of 256 rows instead of 8,192. The writer reads
    // the state of each session a batch touches, and a lookup reads whole granules of the
    // `state` column (a few kilobytes a row): three times faster at 1M records. Scans are not
    // slower. The new table is filled from the old one, then takes its name. Interrupted
    // anywhere but inside the RENAME, it runs again to the same rows: a copy made twice adds
    // rows of the same version, which `argMax` and the merges treat as one.
    &[
        "DROP TABLE IF EXISTS session_detect_coarse",
        "CREATE TABLE IF NOT EXISTS session_detect_fine AS session_detect
        ENGINE = ReplacingMergeTree(version)
        ORDER BY session_id
        SETTINGS index_granularity = 256",
        "INSERT INTO session_detect_fine SELECT * FROM session_detect",
        "RENAME TABLE session_detect TO session_detect_coarse, \
                      session_detect_fine TO session_detect",
        "DROP TABLE session_detect_coarse",
    ],
];

/// Creates the database if needed and brings the schema up to date.
pub fn migrate(client: &Client) -> Result<()> {
    let database = &client.config().database;
    // `Config::parse` only takes plain identifiers as database names.
    client.execute_on_server(&format!("CREATE DATABASE IF NOT EXISTS {database}"))?;
    client
        .execute("CREATE TABLE IF NOT EXISTS schema_version (version UInt32) ENGINE = TinyLog")?;
    #[derive(serde::Deserialize)]
    struct Applied {
        version: u32,
    }
    let applied = client
        .rows::<Applied>("SELECT max(version) AS version FROM schema_version")?
        .first()
        .map_or(0, |row| row.version) as usize;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::new(format!(
            "database schema version {applied} is newer than this api-sessions supports ({}); \
             upgrade api-sessions",
            MIGRATIONS.len()
        )));
    }
    for (index, statements) in MIGRATIONS.iter().enumerate().skip(applied) {
        for statement in *statements {
            client.execute(statement)?;
        }
        client.execute(&format!("INSERT INTO schema_version VALUES ({})", index + 1))?;
    }
    Ok(())
}
