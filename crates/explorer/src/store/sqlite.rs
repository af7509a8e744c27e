//! The SQLite store: one file, WAL mode, one writer thread and a pool of readers.
//!
//! SQLite allows one writer at a time, so every write (batches from every sender and follower,
//! the purge) goes through one thread (`writer`). Readers each get their own connection and
//! see committed snapshots without waiting for it.

mod denylist;
mod endpoints;
mod list;
mod query;
mod schema;
mod search;
mod signals;
mod tally;
mod values;
mod write;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use api_sessions_core::time::Millis;
use rusqlite::Connection;

use super::denylist::{AuditEntry, Change, Changed, Denylist};
use super::endpoints::{EndpointKey, Measured, Rank};
use super::signals::Detection;
use super::values::ValueKind;
use super::EndpointRange;
use super::{
    Cursor, Filter, FollowPosition, IngestCounts, ListQuery, PurgeCounts, RequestPage, Result,
    SessionDetail, SessionPage, Store, StoreError,
};
use crate::batch::Batch;
use crate::endpoints::Endpoints;

/// Page cache of the writer, in KiB: the unique and filter indexes of a few million requests
/// stay in memory, so an insert does not wait for reads.
const WRITER_CACHE_KIB: i64 = 256 * 1024;
const READER_CACHE_KIB: i64 = 32 * 1024;
/// Idle reader connections kept open.
const IDLE_READERS: usize = 8;

pub struct SqliteStore {
    path: PathBuf,
    writer: writer::Writer,
    readers: Mutex<Vec<Connection>>,
    retention_ms: i64,
    /// Assigns the endpoints of the records, before they reach the writer.
    endpoints: Arc<Endpoints>,
    detection: Detection,
    /// What the readers keep of the endpoints' statistics between lists.
    endpoint_cache: endpoints::Cache,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`; sessions are scored
    /// with the default thresholds.
    pub fn open(path: &Path, retention_ms: i64) -> Result<Self> {
        Self::open_with(path, retention_ms, Arc::default(), Detection::default())
    }

    /// Opens the database; records get their endpoints from `endpoints`, and sessions are
    /// scored as `detection` says.
    pub fn open_with(
        path: &Path,
        retention_ms: i64,
        endpoints: Arc<Endpoints>,
        detection: Detection,
    ) -> Result<Self> {
        let fail = |err: StoreError| {
            StoreError::new(format!("cannot open database \"{}\": {err}", path.display()))
        };
        let mut conn = Connection::open(path).map_err(|err| fail(err.into()))?;
        schema::configure_writer(&conn, WRITER_CACHE_KIB).map_err(fail)?;
        schema::migrate(&mut conn).map_err(fail)?;
        let registry = endpoints::Writer::load(&conn).map_err(fail)?;
        let checkpointer = Connection::open(path).map_err(|err| fail(err.into()))?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        Ok(SqliteStore {
            path: path.to_owned(),
            writer: writer::Writer::start(
                conn,
                checkpointer,
                wal.into(),
                registry,
                detection.clone(),
            ),
            readers: Mutex::new(Vec::new()),
            retention_ms,
            endpoints,
            detection,
            endpoint_cache: endpoints::Cache::default(),
        })
    }

    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = Connection::open(&self.path)?;
                schema::configure_reader(&conn, READER_CACHE_KIB)?;
                conn
            }
        };
        let result = f(&conn);
        let mut idle = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        result
    }

    /// The oldest timestamp still served.
    fn floor(&self) -> i64 {
        Millis::now().0 - self.retention_ms
    }
}

impl Store for SqliteStore {
    fn ingest(&self, batch: Batch, position: Option<FollowPosition>) -> Result<IngestCounts> {
        self.writer.ingest(write::IngestJob::new(batch, position, &self.endpoints, &self.detection))
    }

    fn follow_position(&self, path: &str) -> Result<Option<FollowPosition>> {
        self.with_reader(|conn| write::follow_position(conn, path))
    }

    fn retention_ms(&self) -> i64 {
        self.retention_ms
    }

    fn list_sessions(&self, query: &ListQuery) -> Result<SessionPage> {
        let floor = self.floor();
        self.with_reader(|conn| list::list(conn, query, floor))
    }

    fn session(
        &self,
        session_id: &str,
        filter: &Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Option<SessionDetail>> {
        let floor = self.floor();
        let window = self.detection.window_hours();
        self.with_reader(|conn| {
            query::session(conn, session_id, filter, after, limit, floor, window)
        })
    }

    fn session_requests(
        &self,
        session_id: &str,
        filter: &Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Option<RequestPage>> {
        let floor = self.floor();
        self.with_reader(|conn| {
            query::session_requests(conn, session_id, filter, after, limit, floor)
        })
    }

    fn session_ids_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        let floor = self.floor();
        self.with_reader(|conn| query::session_ids_with_prefix(conn, prefix, limit, floor))
    }

    fn suggest(&self, kind: ValueKind, text: &str, limit: usize) -> Result<Vec<String>> {
        let floor = self.floor();
        self.with_reader(|conn| values::suggest(conn, kind, text, limit, floor))
    }

    fn purge(&self) -> Result<PurgeCounts> {
        self.writer.purge(self.floor())
    }

    fn endpoints(&self, range: &EndpointRange) -> Result<Vec<Measured>> {
        let floor = self.floor();
        self.with_reader(|conn| endpoints::measure(conn, &self.endpoint_cache, range, floor))
    }

    fn endpoint_ranking(
        &self,
        range: &EndpointRange,
        rank: &mut dyn Rank,
    ) -> Result<Vec<Measured>> {
        let floor = self.floor();
        self.with_reader(|conn| endpoints::ranking(conn, &self.endpoint_cache, range, floor, rank))
    }

    fn request_endpoints(
        &self,
        _session_id: &str,
        requests: &[Cursor],
    ) -> Result<Vec<Option<EndpointKey>>> {
        self.with_reader(|conn| endpoints::of_requests(conn, requests))
    }

    fn change_denylist(&self, change: &Change) -> Result<Changed> {
        let change = change.clone();
        self.writer.run(move |conn| denylist::change(conn, &change))
    }

    fn denylist(&self) -> Result<Denylist> {
        self.with_reader(denylist::list)
    }

    fn denylist_audit(&self, key_hash: Option<&str>, limit: usize) -> Result<Vec<AuditEntry>> {
        let floor = self.floor();
        self.with_reader(|conn| denylist::audit(conn, key_hash, limit, floor))
    }

    fn session_risks(&self, session_ids: &[String]) -> Result<Vec<(String, String, u8)>> {
        self.with_reader(|conn| denylist::risks(conn, session_ids))
    }
}
