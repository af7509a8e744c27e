//! Records and stores for the tests.

#![allow(dead_code)] // Each test crate uses its own part of this file.

pub mod clickhouse;

use std::sync::Arc;

use api_sessions::batch::Batch;
use api_sessions::store::clickhouse::{ClickHouseStore, Config};
use api_sessions::store::sqlite::SqliteStore;
use api_sessions::store::Store;
use api_sessions_core::record::{Attack, AttackRequest, Param, ParamKind, Record};
use api_sessions_core::time::Millis;

pub const HOUR: i64 = 3_600_000;
pub const MINUTE: i64 = 60_000;
pub const DAY: i64 = 24 * HOUR;
pub const WEEK: i64 = 7 * DAY;

/// A store in a fresh temporary directory (or a fresh ClickHouse database), kept alive with it.
pub struct TempStore {
    pub store: Arc<dyn Store>,
    pub dir: tempfile::TempDir,
}

/// Which store a test runs on; [`on_every_store!`] runs a test on each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    ClickHouse,
}

impl Kind {
    pub fn store(self) -> TempStore {
        self.store_with_retention(WEEK)
    }

    pub fn store_with_retention(self, retention_ms: i64) -> TempStore {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = match self {
            Kind::Sqlite => {
                Arc::new(SqliteStore::open(&dir.path().join("test.db"), retention_ms).unwrap())
            }
            Kind::ClickHouse => {
                let config = Config::parse(&clickhouse::database_url()).unwrap();
                Arc::new(ClickHouseStore::open(config, retention_ms).unwrap())
            }
        };
        TempStore { store, dir }
    }
}

/// Defines, for each named function taking a [`Kind`], a test on SQLite in `mod sqlite` and one
/// on ClickHouse in `mod clickhouse` (see [`clickhouse::skipped`]). With `async`, the functions
/// are async and the tests run on Tokio.
#[macro_export]
macro_rules! on_every_store {
    (async $($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::fixtures::Kind::Sqlite).await
            })*
        }
        mod clickhouse {
            $(#[tokio::test]
            async fn $name() {
                if !super::fixtures::clickhouse::skipped() {
                    super::$name(super::fixtures::Kind::ClickHouse).await
                }
            })*
        }
    };
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name(super::fixtures::Kind::Sqlite)
            })*
        }
        mod clickhouse {
            $(#[test]
            fn $name() {
                if !super::fixtures::clickhouse::skipped() {
                    super::$name(super::fixtures::Kind::ClickHouse)
                }
            })*
        }
    };
}

/// A SQLite store, for tests about one store whatever it is.
pub fn store() -> TempStore {
    Kind::Sqlite.store()
}

/// A moment two hours ago, on a whole minute: tests place records relative to it, inside the
/// retention.
pub fn base() -> i64 {
    let now = Millis::now().0;
    now - now % MINUTE - 2 * HOUR
}

/// A plain GET of session `session`; `n` makes request id and seq unique.
pub fn record(session: &str, n: u64, ts: i64) -> Record {
    api_sessions_core::testing::plain_record(session, n, ts)
}

pub fn param(name: &str, value: &str) -> Param {
    Param {
        name: name.into(),
        source: format!("$arg_{name}"),
        kind: ParamKind::Context,
        value: value.into(),
        hashed: false,
    }
}

pub fn attack(kind: &str, line: &str, headers: &[(&str, &str)], body: &str) -> Option<Attack> {
    Some(Attack {
        kind: kind.into(),
        request: AttackRequest {
            line: line.into(),
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            body: body.into(),
            body_truncated: false,
        },
    })
}

pub fn ndjson(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records {
        record.write_ndjson(&mut out);
    }
    out
}

pub fn batch(records: &[Record]) -> Batch {
    let mut batch = Batch::default();
    for record in records {
        batch.push_record(record).unwrap();
    }
    batch
}

pub fn ingest(store: &dyn Store, records: &[Record]) -> api_sessions::store::IngestCounts {
    store.ingest(batch(records), None).unwrap()
}
