//! The ClickHouse store (`--store clickhouse=URL`): many nodes' records in one ClickHouse
//! server or cluster, over its HTTP interface, with the same answers as the SQLite store.
//!
//! Records go to one `requests` table; a materialized view keeps per-session summaries of each
//! hour as they are inserted, which the sessions list reads (`summaries`); the rest is
//! aggregated from `requests` when queried. Writes (batches, follow positions, the purge) take
//! one lock, which duplicate detection needs, and batches that wait for it are written together
//! ([`write`]); reads run side by side.

mod denylist;
mod endpoints;
mod http;
mod query;
mod schema;
mod signals;
mod sql;
mod summaries;
mod values;
mod write;

use std::sync::{Arc, Mutex};

use api_sessions_core::time::Millis;

pub use self::http::Config;
use super::denylist::{AuditEntry, Change, Changed, Denylist};
use super::endpoints::{EndpointKey, Measured};
use super::signals::Detection;
use super::values::ValueKind;
use super::EndpointRange;
use super::{
    Cursor, Filter, FollowPosition, IngestCounts, ListQuery, PurgeCounts, RequestPage, Result,
    SessionDetail, SessionPage, Store, StoreError,
};
use crate::batch::Batch;
use crate::endpoints::Endpoints;

pub struct ClickHouseStore {
    client: http::Client,
    /// Batches waiting for the writer.
    group: write::Group,
    writer: Mutex<write::Clock>,
    /// Taken after `writer`, by the writes only.
    endpoint_writer: Mutex<endpoints::Writer>,
    /// Taken after `endpoint_writer`, by the writes only.
    known_states: Mutex<signals::Known>,
    /// The denylist's version; held while the denylist changes.
    denylist_version: Mutex<u64>,
    retention_ms: i64,
    /// Assigns the endpoints of the records, before the writer lock is taken.
    endpoints: Arc<Endpoints>,
    detection: Detection,
}

impl ClickHouseStore {
    /// Connects, creating the database and its tables if needed; sessions are scored with the
    /// default thresholds.
    pub fn open(config: Config, retention_ms: i64) -> Result<Self> {
        Self::open_with(config, retention_ms, Arc::default(), Detection::default())
    }

    /// Connects; records get their endpoints from `endpoints`, and sessions are scored as
    /// `detection` says.
    pub fn open_with(
        config: Config,
        retention_ms: i64,
        endpoints: Arc<Endpoints>,
        detection: Detection,
    ) -> Result<Self> {
        let describe = config.describe();
        let fail = |err: StoreError| StoreError::new(format!("cannot open {describe}: {err}"));
        let client = http::Client::new(config);
        schema::migrate(&client).map_err(fail)?;
        let clock = write::Clock::load(&client).map_err(fail)?;
        let endpoint_writer = endpoints::Writer::load(&client).map_err(fail)?;
        let denylist_version = denylist::load_version(&client).map_err(fail)?;
        Ok(ClickHouseStore {
            client,
            group: write::Group::default(),
            writer: Mutex::new(clock),
            endpoint_writer: Mutex::new(endpoint_writer),
            known_states: Mutex::default(),
            denylist_version: Mutex::new(denylist_version),
            retention_ms,
            endpoints,
            detection,
        })
    }

    /// The oldest timestamp still served.
    fn floor(&self) -> i64 {
        Millis::now().0 - self.retention_ms
    }
}

impl Store for ClickHouseStore {
    fn ingest(&self, batch: Batch, position: Option<FollowPosition>) -> Result<IngestCounts> {
        let assignments = super::endpoints::assign(&self.endpoints, &batch);
        let job = write::Job { batch, assignments, position };
        self.group.write(job, |jobs| {
            let mut clock = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let mut endpoints = self.endpoint_writer.lock().unwrap_or_else(|p| p.into_inner());
            let mut known = self.known_states.lock().unwrap_or_else(|p| p.into_inner());
            let mut store = |jobs: &[write::Job]| {
                let (client, detection) = (&self.client, &self.detection);
                let stored =
                    write::ingest(client, &mut clock, &mut endpoints, &mut known, jobs, detection);
                if stored.is_err() {
                    // What the registry admitted, and the states, may not have been stored.
                    known.clear();
                    if let Err(err) = endpoints.reload(&self.client) {
                        tracing::warn!("cannot read the endpoints back: {err}");
                    }
                }
                stored
            };
            match store(jobs) {
                Ok(counts) => counts.into_iter().map(Ok).collect(),
                // A batch the server refuses fails the others' write too: write each on its own,
                // so that only it fails. What the failed write stored of the others is found
                // stored, like a batch sent again.
                Err(_) if jobs.len() > 1 => jobs
                    .iter()
                    .map(|job| store(std::slice::from_ref(job)).map(|counts| counts[0]))
                    .collect(),
                Err(err) => vec![Err(err)],
            }
        })
    }

    fn follow_position(&self, path: &str) -> Result<Option<FollowPosition>> {
        write::follow_position(&self.client, path)
    }

    fn retention_ms(&self) -> i64 {
        self.retention_ms
    }

    fn list_sessions(&self, query: &ListQuery) -> Result<SessionPage> {
        query::list(&self.client, query, self.floor())
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

    fn session_ids_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        query::session_ids_with_prefix(&self.client, prefix, limit, self.floor())
    }

    fn suggest(&self, kind: ValueKind, text: &str, limit: usize) -> Result<Vec<String>> {
        values::suggest(&self.client, kind, text, limit, self.floor())
    }

    fn purge(&self) -> Result<PurgeCounts> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        {
            let _denylist = self.denylist_version.lock().unwrap_or_else(|p| p.into_inner());
            denylist::purge(&self.client, self.floor())?;
        }
        // The purge deletes sessions' states.
        self.known_states.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let purged = write::purge(&self.client, self.floor())?;
        // Endpoints no longer called free their places under the cap.
        self.endpoint_writer.lock().unwrap_or_else(|p| p.into_inner()).reload(&self.client)?;
        Ok(purged)
    }

    fn endpoints(&self, range: &EndpointRange) -> Result<Vec<Measured>> {
        endpoints::measure(&self.client, range, self.floor())
    }

    fn request_endpoints(
        &self,
        session_id: &str,
        requests: &[Cursor],
    ) -> Result<Vec<Option<EndpointKey>>> {
        endpoints::of_requests(&self.client, session_id, requests)
    }

    fn change_denylist(&self, change: &Change) -> Result<Changed> {
        let mut version = self.denylist_version.lock().unwrap_or_else(|p| p.into_inner());
        denylist::change(&self.client, &mut version, change)
    }

    fn denylist(&self) -> Result<Denylist> {
        // Under the lock, so that the version is that of the entries read.
        let version = self.denylist_version.lock().unwrap_or_else(|p| p.into_inner());
        denylist::list(&self.client, *version)
    }

    fn denylist_audit(&self, key_hash: Option<&str>, limit: usize) -> Result<Vec<AuditEntry>> {
        denylist::audit(&self.client, key_hash, limit, self.floor())
    }

    fn session_risks(&self, session_ids: &[String]) -> Result<Vec<(String, String, u8)>> {
        denylist::risks(&self.client, session_ids)
    }
}
