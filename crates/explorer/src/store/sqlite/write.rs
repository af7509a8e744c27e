//! The writer side: storing batches and purging what is older than the retention.
//!
//! Sessions are aggregated here, once per batch and session, so listing sessions never has to
//! count requests unless a request-level filter asks for it.
//!
//! This runs on the one writer thread every ingest path waits for, so it only does what has to
//! be serial: everything that can be computed from a record alone was computed before (the
//! fields when the line was parsed; the search filters, the endpoints and the detector's
//! partial states by [`IngestJob::new`]), and nothing is allocated per record.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::{params, Connection, OptionalExtension, ToSql, Transaction, TransactionBehavior};

use super::search::{self, BatchFilters};
use super::signals;
use super::tally::{self, Tally};
use super::values::{self, Seen};
use super::{endpoints, schema};
use crate::batch::{Batch, RecordRef};
use crate::endpoints::Endpoints;
use crate::store::endpoints::{Assignment, HourStats};
use crate::store::signals::{Detection, Observed};
use crate::store::{FollowPosition, IngestCounts, LineMark, PurgeCounts, Result, StoreError};

/// Rows deleted per purge transaction, so the writer lock is never held for long.
const PURGE_CHUNK: usize = 5000;

/// A session's aggregate while a batch is applied to it. Strings are borrowed from the batches
/// of the transaction, or owned when loaded from the database.
struct SessionAcc<'b> {
    id: i64,
    created: bool,
    first_ts: i64,
    last_ts: i64,
    stored_first_ts: i64,
    requests: i64,
    attacks: i64,
    user: Option<(i64, Cow<'b, str>)>,
    role: Option<(i64, Cow<'b, str>)>,
    nodes: Vec<Cow<'b, str>>,
    /// Requests per flow added by this batch.
    flows: BTreeMap<&'b str, i64>,
    /// IPs seen in this batch.
    ips: HashSet<&'b str>,
    /// Users, roles, flows, attack types and User-Agents seen in this batch.
    values: Seen<'b>,
    added: i64,
}

impl<'b> SessionAcc<'b> {
    fn load(tx: &Transaction<'_>, record: &RecordRef<'b>) -> Result<SessionAcc<'b>> {
        let mut select = tx.prepare_cached(
            "SELECT id, first_ts, last_ts, requests, attacks, user, user_ts, role, role_ts, nodes
             FROM sessions WHERE session_id = ?",
        )?;
        let existing = select
            .query_row([record.session_id()], |row| {
                let pair = |value: Option<String>, ts: Option<i64>| {
                    value.zip(ts).map(|(v, t)| (t, Cow::Owned(v)))
                };
                Ok(SessionAcc {
                    id: row.get(0)?,
                    created: false,
                    first_ts: row.get(1)?,
                    last_ts: row.get(2)?,
                    stored_first_ts: row.get(1)?,
                    requests: row.get(3)?,
                    attacks: row.get(4)?,
                    user: pair(row.get(5)?, row.get(6)?),
                    role: pair(row.get(7)?, row.get(8)?),
                    nodes: tally::split_list(row.get_ref(9)?.as_str()?)
                        .map(|node| Cow::Owned(node.to_owned()))
                        .collect(),
                    flows: BTreeMap::new(),
                    ips: HashSet::new(),
                    values: Seen::default(),
                    added: 0,
                })
            })
            .optional()?;
        if let Some(acc) = existing {
            return Ok(acc);
        }

        let mut insert = tx.prepare_cached(
            "INSERT INTO sessions (session_id, key_hash, session_key, session_start, first_ts,
                                   last_ts, requests, attacks, nodes)
             VALUES (?, ?, ?, ?, ?, ?, 0, 0, '')",
        )?;
        insert.execute(params![
            record.session_id(),
            record.key_hash(),
            record.session_key(),
            record.session_start(),
            record.ts(),
            record.ts(),
        ])?;
        Ok(SessionAcc {
            id: tx.last_insert_rowid(),
            created: true,
            first_ts: record.ts(),
            last_ts: record.ts(),
            stored_first_ts: record.ts(),
            requests: 0,
            attacks: 0,
            user: None,
            role: None,
            nodes: Vec::new(),
            flows: BTreeMap::new(),
            ips: HashSet::new(),
            values: Seen::default(),
            added: 0,
        })
    }

    fn add(&mut self, record: &RecordRef<'b>) {
        let ts = record.ts();
        if self.requests == 0 {
            self.first_ts = ts;
            self.last_ts = ts;
        } else {
            self.first_ts = self.first_ts.min(ts);
            self.last_ts = self.last_ts.max(ts);
        }
        self.requests += 1;
        self.added += 1;
        if record.attack().is_some() {
            self.attacks += 1;
        }
        // Records of one session can arrive out of order (several nodes, a replayed spool):
        // "last" means latest request time, not latest arrival.
        for (value, slot) in [(record.user(), &mut self.user), (record.role(), &mut self.role)] {
            if let Some(value) = value {
                if slot.as_ref().is_none_or(|(seen, _)| ts >= *seen) {
                    *slot = Some((ts, Cow::Borrowed(value)));
                }
            }
        }
        let node = record.node();
        if !self.nodes.iter().any(|known| known == node) {
            self.nodes.push(Cow::Borrowed(node));
        }
        for flow in record.flows() {
            *self.flows.entry(flow).or_default() += 1;
        }
        self.ips.insert(record.ip());
        self.values.add(record);
    }

    fn save(&self, tx: &Transaction<'_>) -> Result<()> {
        if self.added == 0 {
            if self.created {
                // Every record of this new session duplicated a request stored under another
                // session id; do not leave an empty session behind.
                tx.prepare_cached("DELETE FROM sessions WHERE id = ?")?.execute([self.id])?;
            }
            return Ok(());
        }
        update_session(
            tx,
            self.id,
            &Aggregates {
                first_ts: self.first_ts,
                last_ts: self.last_ts,
                requests: self.requests,
                attacks: self.attacks,
                user: self.user.as_ref().map(|(ts, user)| (*ts, user.as_ref())),
                role: self.role.as_ref().map(|(ts, role)| (*ts, role.as_ref())),
                nodes: tally::join_list(self.nodes.iter().map(|node| node.as_ref())),
            },
            self.first_ts != self.stored_first_ts,
        )?;

        let mut upsert_flow = tx.prepare_cached(
            "INSERT INTO session_flows (session, flow, requests, last_ts) VALUES (?, ?, ?, ?)
             ON CONFLICT (session, flow) DO UPDATE SET requests = requests + excluded.requests",
        )?;
        for (flow, count) in &self.flows {
            upsert_flow.execute(params![self.id, flow, count, self.last_ts])?;
        }
        let mut insert_ip =
            tx.prepare_cached("INSERT OR IGNORE INTO session_ips (session, ip) VALUES (?, ?)")?;
        for ip in &self.ips {
            insert_ip.execute(params![self.id, ip])?;
        }
        self.values.save(tx, self.id)
    }
}

/// The aggregate columns of a `sessions` row.
struct Aggregates<'a> {
    first_ts: i64,
    last_ts: i64,
    requests: i64,
    attacks: i64,
    user: Option<(i64, &'a str)>,
    role: Option<(i64, &'a str)>,
    nodes: String,
}

/// Writes a session's aggregates. SQLite rewrites the entries of every index on a column the
/// statement sets, changed or not, and a session's first request rarely changes: it is only
/// set when it did (`first_changed`).
fn update_session(
    tx: &Transaction<'_>,
    id: i64,
    row: &Aggregates<'_>,
    first_changed: bool,
) -> Result<()> {
    let set_first = if first_changed { ", first_ts = ?10" } else { "" };
    let mut update = tx.prepare_cached(&format!(
        "UPDATE sessions SET last_ts = ?2, requests = ?3, attacks = ?4, user = ?5, user_ts = ?6,
                             role = ?7, role_ts = ?8, nodes = ?9{set_first}
         WHERE id = ?1"
    ))?;
    let (user, user_ts) = (row.user.map(|(_, user)| user), row.user.map(|(ts, _)| ts));
    let (role, role_ts) = (row.role.map(|(_, role)| role), row.role.map(|(ts, _)| ts));
    let mut values: Vec<&dyn ToSql> = vec![
        &id,
        &row.last_ts,
        &row.requests,
        &row.attacks,
        &user,
        &user_ts,
        &role,
        &role_ts,
        &row.nodes,
    ];
    if first_changed {
        values.push(&row.first_ts);
    }
    update.execute(&*values)?;
    Ok(())
}

/// One batch to store, and where its follower stands after it.
pub struct IngestJob {
    pub batch: Batch,
    filters: BatchFilters,
    /// The endpoint of each record, before the cap.
    endpoints: Vec<Assignment>,
    /// The detector's partial states of the records, when sessions are scored, until the
    /// transaction that merges them takes them.
    observed: Option<Observed<String>>,
    pub position: Option<FollowPosition>,
}

impl IngestJob {
    /// Prepares a batch for the writer; runs on the caller's thread.
    pub fn new(
        batch: Batch,
        position: Option<FollowPosition>,
        endpoints: &Endpoints,
        detection: &Detection,
    ) -> Self {
        let filters = BatchFilters::of(
            batch.iter().map(|record| (schema::hour(record.ts()), record.search())),
        );
        let endpoints = crate::store::endpoints::assign(endpoints, &batch);
        let observed = detection.config().map(|_| Observed::of_batch(&batch));
        IngestJob { batch, filters, endpoints, observed, position }
    }
}

/// Numbers the requests of one millisecond (see [`schema::ID_SHIFT`]) with a counter over all
/// requests: two requests of one millisecond only draw the same number when a multiple of
/// 16,384 others arrived between them, and then the next free one is taken.
#[derive(Default)]
pub struct Ids {
    next: i64,
}

impl Ids {
    fn draw(&mut self) -> i64 {
        let number = self.next;
        self.next = (self.next + 1) % schema::IDS_PER_MS;
        number
    }
}

/// Stores several batches in one transaction (group commit); their counts in the same order.
pub fn ingest(
    conn: &mut Connection,
    ids: &mut Ids,
    endpoints: &mut endpoints::Writer,
    jobs: &mut [IngestJob],
    detection: &Detection,
) -> Result<Vec<IngestCounts>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut all_counts = Vec::with_capacity(jobs.len());
    let mut endpoint_hours = HourStats::default();
    let marked = {
        let mut sessions: HashMap<&str, SessionAcc<'_>> = HashMap::new();
        let mut insert_request = tx.prepare_cached(
            "INSERT OR IGNORE INTO requests (id, session, ts, hour, request_id, node, pid, seq,
                                             method, status, ip, user, role, attack, flows,
                                             search, json, endpoint, duration_ms,
                                             response_bytes)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?;
        let mut id_taken = tx.prepare_cached("SELECT 1 FROM requests WHERE id = ?")?;
        let mut search_index = search::Pending::default();
        let mut detected = signals::Pending::default();
        let mut flows = String::new();
        // Which records of the job were stored, should some be duplicates.
        let mut stored = Vec::new();

        for job in jobs.iter_mut() {
            let mut counts = IngestCounts::default();
            stored.clear();
            search_index.merge(&tx, &job.filters)?;
            for (record, assignment) in job.batch.iter().zip(&job.endpoints) {
                let endpoint = endpoints.id(&tx, record.server(), assignment)?;
                let acc = match sessions.entry(record.session_id()) {
                    Entry::Occupied(entry) => entry.into_mut(),
                    Entry::Vacant(entry) => entry.insert(SessionAcc::load(&tx, &record)?),
                };
                let hour = schema::hour(record.ts());
                flows.clear();
                tally::join_into(&mut flows, record.flows());
                let first_id = schema::first_id(record.ts());
                let mut number = ids.draw();
                let mut tries = 0;
                let id = loop {
                    let id = first_id + number;
                    let inserted = insert_request.execute(params![
                        id,
                        acc.id,
                        record.ts(),
                        hour,
                        record.request_id(),
                        record.node(),
                        record.pid(),
                        record.seq(),
                        record.method(),
                        record.status(),
                        record.ip(),
                        record.user(),
                        record.role(),
                        record.attack(),
                        flows,
                        record.search(),
                        record.json(),
                        endpoint,
                        record.duration_ms(),
                        record.response_bytes() as i64,
                    ])?;
                    if inserted == 1 {
                        break Some(id);
                    }
                    // Ignored: a duplicate, unless the id was taken.
                    if !id_taken.exists([id])? {
                        break None;
                    }
                    tries += 1;
                    if tries == schema::IDS_PER_MS {
                        return Err(StoreError::new(format!(
                            "cannot store more than {} requests at {} ms",
                            schema::IDS_PER_MS,
                            record.ts()
                        )));
                    }
                    number = (number + 1) % schema::IDS_PER_MS;
                };
                stored.push(id.is_some());
                let Some(id) = id else {
                    counts.duplicates += 1;
                    continue;
                };
                let hit = search::Hit { ts: record.ts(), id, session: acc.id };
                search_index.add(&tx, hour, hit, record.search(), job.filters.covers(hour))?;
                acc.add(&record);
                endpoint_hours.add(&endpoint, &record);
                counts.accepted += 1;
            }
            if detection.config().is_some() {
                let key = |session_id: &str| sessions.get(session_id).map(|acc| acc.id);
                match job.observed.take().filter(|_| counts.duplicates == 0) {
                    Some(observed) => detected.merge_keyed(observed, |session_id| key(session_id)),
                    // Records stored before are not observed twice: only this job's new ones.
                    // A job whose group failed, retried alone, has given its states already.
                    None => {
                        let records = job.batch.iter().zip(&stored);
                        for (record, _) in records.filter(|(_, stored)| **stored) {
                            if let Some(id) = key(record.session_id()) {
                                detected.observe(&id, &record);
                            }
                        }
                    }
                }
            }
            if let Some(position) = &job.position {
                tx.prepare_cached(
                    "INSERT INTO follow_positions (path, inode, offset, line_len, line_crc)
                     VALUES (?, ?, ?, ?, ?)
                     ON CONFLICT (path) DO UPDATE SET inode = excluded.inode,
                         offset = excluded.offset, line_len = excluded.line_len,
                         line_crc = excluded.line_crc",
                )?
                .execute(params![
                    position.path,
                    position.inode as i64,
                    position.offset as i64,
                    position.last_line.len as i64,
                    position.last_line.crc,
                ])?;
            }
            all_counts.push(counts);
        }
        for acc in sessions.values() {
            acc.save(&tx)?;
        }
        search_index.save(&tx)?;
        signals::apply(&tx, detected, detection)?;
        // The statistics are written later (see `endpoints`); the marks say so to readers.
        endpoints.mark(&tx, &endpoint_hours)?
    };
    tx.commit()?;
    endpoints.keep(endpoint_hours, marked);
    Ok(all_counts)
}

pub fn follow_position(conn: &Connection, path: &str) -> Result<Option<FollowPosition>> {
    let position = conn
        .prepare_cached(
            "SELECT inode, offset, line_len, line_crc FROM follow_positions WHERE path = ?",
        )?
        .query_row([path], |row| {
            Ok(FollowPosition {
                path: path.to_owned(),
                inode: row.get::<_, i64>(0)? as u64,
                offset: row.get::<_, i64>(1)? as u64,
                last_line: LineMark { len: row.get::<_, i64>(2)? as u64, crc: row.get(3)? },
            })
        })
        .optional()?;
    Ok(position)
}

/// Deletes requests older than `cutoff`, the sessions left without requests, and recounts the
/// sessions that had requests on both sides of it.
pub fn purge(
    conn: &mut Connection,
    endpoints: &mut endpoints::Writer,
    cutoff: i64,
) -> Result<PurgeCounts> {
    // The endpoint statistics waiting are written first, so that the purge sees every
    // endpoint's hours.
    endpoints.flush(conn)?;
    let mut counts = PurgeCounts::default();

    // Ids are in time order: the expired requests are the first ones.
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let deleted = tx
            .prepare_cached(
                "DELETE FROM requests WHERE id IN
                   (SELECT id FROM requests WHERE id < ? ORDER BY id LIMIT ?)",
            )?
            .execute(params![schema::first_id(cutoff), PURGE_CHUNK])?;
        tx.commit()?;
        counts.requests += deleted as u64;
        if deleted < PURGE_CHUNK {
            break;
        }
    }

    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<i64> = tx
            .prepare_cached("SELECT id FROM sessions WHERE last_ts < ? LIMIT ?")?
            .query_map(params![cutoff, PURGE_CHUNK], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for id in &ids {
            delete_session(&tx, *id)?;
        }
        tx.commit()?;
        counts.sessions += ids.len() as u64;
        if ids.len() < PURGE_CHUNK {
            break;
        }
    }

    // The hour holding the cutoff keeps its search index: newer requests share it, and queries
    // check every hit against `requests`.
    conn.execute("DELETE FROM search_filters WHERE hour < ?", [schema::hour(cutoff)])?;
    conn.execute("DELETE FROM search_blocks WHERE hour < ?", [schema::hour(cutoff)])?;
    endpoints::purge(conn, cutoff)?;
    signals::purge(conn, cutoff)?;
    super::denylist::purge(conn, cutoff)?;

    // Sessions that straddle the cutoff keep their newer requests; their aggregates must stop
    // counting the deleted ones. After a recount `first_ts >= cutoff`, so each is done once.
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<i64> = tx
            .prepare_cached("SELECT id FROM sessions WHERE first_ts < ? LIMIT ?")?
            .query_map(params![cutoff, PURGE_CHUNK], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for id in &ids {
            recount_session(&tx, *id)?;
        }
        tx.commit()?;
        if ids.len() < PURGE_CHUNK {
            break;
        }
    }
    Ok(counts)
}

fn delete_session(tx: &Transaction<'_>, id: i64) -> Result<()> {
    tx.prepare_cached("DELETE FROM sessions WHERE id = ?")?.execute([id])?;
    signals::forget(tx, id)?;
    delete_session_parts(tx, id)
}

/// Rebuilds a session's aggregate from the requests it still has.
fn recount_session(tx: &Transaction<'_>, id: i64) -> Result<()> {
    let mut tally = Tally::default();
    {
        let mut select = tx.prepare_cached(&format!(
            "SELECT {} FROM requests r WHERE r.session = ?",
            tally::COLUMNS
        ))?;
        let mut rows = select.query([id])?;
        while let Some(row) = rows.next()? {
            tally.add(row)?;
        }
    }
    if tally.requests == 0 {
        return delete_session(tx, id);
    }
    delete_session_parts(tx, id)?;
    update_session(
        tx,
        id,
        &Aggregates {
            first_ts: tally.first_ts,
            last_ts: tally.last_ts,
            requests: tally.requests as i64,
            attacks: tally.attacks() as i64,
            user: tally.user.as_ref().map(|(ts, user)| (*ts, user.as_str())),
            role: tally.role.as_ref().map(|(ts, role)| (*ts, role.as_str())),
            nodes: tally::join_list(tally.nodes.iter().map(String::as_str)),
        },
        true,
    )?;
    let mut insert_flow = tx.prepare_cached(
        "INSERT INTO session_flows (session, flow, requests, last_ts) VALUES (?, ?, ?, ?)",
    )?;
    for (flow, count) in &tally.stats.flows {
        insert_flow.execute(params![id, flow, *count as i64, tally.last_ts])?;
    }
    let mut insert_ip = tx.prepare_cached("INSERT INTO session_ips (session, ip) VALUES (?, ?)")?;
    for ip in tally.stats.ips.keys() {
        insert_ip.execute(params![id, ip])?;
    }
    values::rebuild(tx, id)
}

fn delete_session_parts(tx: &Transaction<'_>, id: i64) -> Result<()> {
    tx.prepare_cached("DELETE FROM session_flows WHERE session = ?")?.execute([id])?;
    tx.prepare_cached("DELETE FROM session_ips WHERE session = ?")?.execute([id])?;
    tx.prepare_cached("DELETE FROM session_values WHERE session = ?")?.execute([id])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use api_sessions_core::record::Record;

    use super::*;
    use api_sessions_core::testing::plain_record;

    /// A login attempt every two seconds, mostly refused, then one the test database refuses.
    fn records() -> Vec<Record> {
        (0..40u64)
            .map(|n| Record {
                request_id: if n == 39 { "refused".into() } else { format!("{n:032x}") },
                session_id: format!("s{}", n % 3),
                key_hash: format!("key-{}", n % 3),
                method: "POST".into(),
                path: "/login".into(),
                status: if n % 7 == 0 { 200 } else { 401 },
                user_agent: Some("python-requests/2.31".into()),
                user: Some(format!("user{n}")),
                flows: vec!["auth".into()],
                ..plain_record("s0", n, 1_700_000_000_000 + n as i64 * 2_000)
            })
            .collect()
    }

    fn job(records: &[Record], detection: &Detection) -> IngestJob {
        let mut batch = Batch::default();
        for record in records {
            batch.push_record(record).unwrap();
        }
        IngestJob::new(batch, None, &Endpoints::default(), detection)
    }

    /// The detection rows of every session, in session order.
    fn detection_rows(conn: &Connection) -> Vec<(String, i64, String, Vec<u8>, String)> {
        conn.prepare(
            "SELECT s.session_id, s.risk, s.signals, d.state, d.signals FROM sessions s
             JOIN session_detect d ON d.session = s.id ORDER BY s.session_id",
        )
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
    }

    /// A job whose group the database refused is stored on its own, and scored as if it had
    /// been alone from the start: its partial states were given to the failed transaction,
    /// so its records are observed again.
    #[test]
    fn a_job_retried_after_its_group_failed_is_scored_whole() {
        let detection = Detection::default();
        let records = records();
        let (good, bad) = records.split_at(30);
        let dir = tempfile::tempdir().unwrap();

        let mut alone = Connection::open(dir.path().join("alone.db")).unwrap();
        schema::migrate(&mut alone).unwrap();
        let mut writer = endpoints::Writer::load(&alone).unwrap();
        let mut jobs = [job(good, &detection)];
        ingest(&mut alone, &mut Ids::default(), &mut writer, &mut jobs, &detection).unwrap();

        let mut retried = Connection::open(dir.path().join("retried.db")).unwrap();
        schema::migrate(&mut retried).unwrap();
        retried
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON requests WHEN NEW.request_id = 'refused'
                 BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
            .unwrap();
        let mut writer = endpoints::Writer::load(&retried).unwrap();
        let mut ids = Ids::default();
        let mut group = [job(good, &detection), job(bad, &detection)];
        let refused = ingest(&mut retried, &mut ids, &mut writer, &mut group, &detection);
        assert!(refused.unwrap_err().to_string().contains("refused"));
        assert!(group[0].observed.is_none(), "the failed transaction took the states");
        let counts =
            ingest(&mut retried, &mut ids, &mut writer, &mut group[..1], &detection).unwrap();
        assert_eq!(counts[0].accepted, 30);

        let rows = detection_rows(&alone);
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|row| row.1 > 0), "{rows:?}");
        assert_eq!(detection_rows(&retried), rows);
    }
}
