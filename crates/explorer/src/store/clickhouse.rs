//! The ClickHouse store (`--store clickhouse=URL`): many nodes' records in one ClickHouse
//! server or cluster, over its HTTP interface, with the same answers as the SQLite store.
//!
//! Records go to one `requests` table; sessions are aggregated when queried (`schema` says
//! why). Writes (batches, follow positions, the purge) take one lock, which duplicate
//! detection needs ([`write`]); reads run side by side.

mod http;
mod query;
mod schema;
mod signals;
mod sql;
mod write;

use std::sync::Mutex;

use api_sessions_core::time::Millis;

pub use self::http::Config;
use super::signals::Detection;
use super::{
    Cursor, Filter, FollowPosition, IngestCounts, PurgeCounts, RequestPage, Result, SessionDetail,
    SessionPage, Store, StoreError,
};
use crate::batch::Batch;

pub struct ClickHouseStore {
    client: http::Client,
    writer: Mutex<write::Clock>,
    retention_ms: i64,
    detection: Detection,
}

impl ClickHouseStore {
    /// Connects, creating the database and its tables if needed; sessions are scored with the
    /// default thresholds.
    pub fn open(config: Config, retention_ms: i64) -> Result<Self> {
        Self::open_with(config, retention_ms, Detection::default())
    }

    /// Connects, scoring sessions as `detection` says.
    pub fn open_with(config: Config, retention_ms: i64, detection: Detection) -> Result<Self> {
        let describe = config.describe();
        let fail = |err: StoreError| StoreError::new(format!("cannot open {describe}: {err}"));
        let client = http::Client::new(config);
        schema::migrate(&client).map_err(fail)?;
        let clock = write::Clock::load(&client).map_err(fail)?;
        Ok(ClickHouseStore { client, writer: Mutex::new(clock), retention_ms, detection })
    }

    /// The oldest timestamp still served.
    fn floor(&self) -> i64 {
        Millis::now().0 - self.retention_ms
    }
}

impl Store for ClickHouseStore {
    fn ingest(&self, batch: Batch, position: Option<FollowPosition>) -> Result<IngestCounts> {
        let mut clock = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        write::ingest(&self.client, &mut clock, &batch, position.as_ref(), &self.detection)
    }

    fn follow_position(&self, path: &str) -> Result<Option<FollowPosition>> {
        write::follow_position(&self.client, path)
    }

    fn list_sessions(
        &self,
        filter: &Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<SessionPage> {
        query::list(&self.client, filter, after, limit, self.floor())
    }

    fn session(
        &self,
        session_id: &str,
        filter: &Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Option<SessionDetail>> {
        let window = self.detection.window_hours();
        query::session(&self.client, session_id, filter, after, limit, self.floor(), window)
    }

    fn session_requests(
        &self,
        session_id: &str,
        filter: &Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Option<RequestPage>> {
        query::session_requests(&self.client, session_id, filter, after, limit, self.floor())
    }

    fn purge(&self) -> Result<PurgeCounts> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        write::purge(&self.client, self.floor())
    }
}
