//! The writer side: batches with their duplicates left out, follow positions, the purge.
//!
//! ClickHouse has no unique keys, so duplicates are found by asking which of a batch's origins
//! (`node`, `pid`, `seq`) and request ids are stored already (in `request_origins` and
//! `request_ids`, sorted by them). That is only sound with one writer:
//! the store serialises its writes, and one explorer writes to a database.
//!
//! Batches that arrive while a write is under way are written together by the next one
//! ([`Group`]): each write is an insert per table and day, so many small batches from many
//! nginx workers make a few large parts rather than one small part each, which ClickHouse
//! would have to merge again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Condvar, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::endpoints;
use super::http::Client;
use super::schema::{DAY_MS, PARTITIONED};
use super::signals;
use super::sql::literal;
use super::values::Seen;
use crate::batch::{Batch, RecordRef};
use crate::store::endpoints::{admit, Assignment, HourStats};
use crate::store::signals::Detection;
use crate::store::{FollowPosition, IngestCounts, LineMark, PurgeCounts, Result, StoreError};

/// Records written together at most, however many batches wait: bounds the memory of one
/// write's rows and the size of its inserts.
const GROUP_RECORDS: usize = 200_000;

/// Records whose keys are looked up in one statement, and the most bytes of keys: each lookup
/// costs a round trip and an index walk, so fewer and larger ones are cheaper, within
/// ClickHouse's default `max_ast_elements` (50,000; a key tuple counts 5). Long keys raise
/// `max_query_size` for their statement (see `Client::execute`).
const LOOKUP_RECORDS: usize = 4000;
const LOOKUP_BYTES: usize = 1024 * 1024;

/// Ranges of origins looked up in one statement: each counts about ten elements.
const LOOKUP_RANGES: usize = 2000;

/// The widest gap between two sequence numbers of a worker within one range of origins.
const ORIGIN_GAP: u64 = 8;

/// Hands out increasing numbers: request `rid`s (the order of requests of one millisecond) and
/// follow position versions. Starts above everything stored and follows the clock in
/// microseconds, so numbers stay increasing across restarts.
pub struct Clock {
    last: i64,
}

impl Clock {
    pub fn load(client: &Client) -> Result<Clock> {
        #[derive(Deserialize)]
        struct Max {
            last: i64,
        }
        let rows: Vec<Max> = client.rows(
            "SELECT greatest(greatest((SELECT max(rid) FROM requests), \
                                      (SELECT max(version) FROM follow_positions)), \
                             (SELECT max(version) FROM endpoint_hours)) AS last",
        )?;
        Ok(Clock { last: rows.first().map_or(0, |row| row.last) })
    }

    pub fn draw(&mut self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_micros() as i64);
        self.last = (self.last + 1).max(now);
        self.last
    }
}

/// One `requests` row, as `JSONEachRow` wants it.
#[derive(Serialize)]
struct Row<'b> {
    ts: i64,
    rid: i64,
    session_id: &'b str,
    key_hash: &'b str,
    session_key: &'b str,
    session_start: i64,
    node: &'b str,
    pid: u32,
    seq: u64,
    request_id: &'b str,
    method: &'b str,
    status: u16,
    ip: &'b str,
    user: Option<&'b str>,
    role: Option<&'b str>,
    attack: Option<&'b str>,
    flows: Vec<&'b str>,
    search: &'b str,
    json: &'b str,
    endpoint_server: String,
    endpoint: String,
    duration_ms: f64,
    response_bytes: u64,
}

/// The conditions of a lookup, joined by a separator and handed out in statements of at most
/// `most` of them or [`LOOKUP_BYTES`] of text.
struct Conditions {
    text: String,
    count: usize,
    most: usize,
    separator: &'static str,
}

impl Conditions {
    fn new(separator: &'static str, most: usize) -> Conditions {
        Conditions { text: String::new(), count: 0, most, separator }
    }

    /// Adds the condition `write` writes; returns the conditions so far when they fill a
    /// statement.
    fn push(&mut self, write: impl FnOnce(&mut String)) -> Option<String> {
        if self.count > 0 {
            self.text.push_str(self.separator);
        }
        write(&mut self.text);
        self.count += 1;
        if self.count == self.most || self.text.len() >= LOOKUP_BYTES {
            self.count = 0;
            return Some(std::mem::take(&mut self.text));
        }
        None
    }

    /// The conditions not handed out yet, if any.
    fn finish(self) -> Option<String> {
        (self.count > 0).then_some(self.text)
    }
}

/// What is stored already of a batch.
#[derive(Default)]
struct Stored {
    origins: HashSet<(String, u32, u64)>,
    request_ids: HashSet<String>,
}

fn stored<'b>(client: &Client, records: impl Iterator<Item = RecordRef<'b>>) -> Result<Stored> {
    let mut stored = Stored::default();
    let mut workers: BTreeMap<(&str, u32), Vec<u64>> = BTreeMap::new();
    let mut ids = Conditions::new(", ", LOOKUP_RECORDS);
    for record in records {
        workers.entry((record.node(), record.pid())).or_default().push(record.seq());
        if let Some(full) = ids.push(|text| text.push_str(&literal(record.request_id()))) {
            lookup_request_ids(client, &full, &mut stored)?;
        }
    }
    if let Some(rest) = ids.finish() {
        lookup_request_ids(client, &rest, &mut stored)?;
    }
    // A worker's records come with consecutive sequence numbers, so origins are asked for as
    // ranges of the sort key: a few per batch, where a list of tuples had one each and took
    // ClickHouse most of the lookup's time to parse. A range spans gaps of at most `ORIGIN_GAP`,
    // so the rows it brings that the batch does not name stay few.
    let mut ranges = Conditions::new(" OR ", LOOKUP_RANGES);
    for ((node, pid), seqs) in &mut workers {
        seqs.sort_unstable();
        let node = literal(node);
        let mut seqs = seqs.iter().copied().peekable();
        while let Some(first) = seqs.next() {
            let mut last = first;
            while let Some(&next) = seqs.peek() {
                if next - last > ORIGIN_GAP {
                    break;
                }
                last = next;
                seqs.next();
            }
            let range = |text: &mut String| {
                let _ = write!(
                    text,
                    "(node = {node} AND pid = {pid} AND seq >= {first} AND seq <= {last})"
                );
            };
            if let Some(full) = ranges.push(range) {
                lookup_origins(client, &full, &mut stored)?;
            }
        }
    }
    if let Some(rest) = ranges.finish() {
        lookup_origins(client, &rest, &mut stored)?;
    }
    Ok(stored)
}

/// Adds those of `ids` (a list of literals) that are stored to `stored`.
fn lookup_request_ids(client: &Client, ids: &str, stored: &mut Stored) -> Result<()> {
    #[derive(Deserialize)]
    struct RequestId {
        request_id: String,
    }
    let keys: Vec<RequestId> =
        client.rows(&format!("SELECT request_id FROM request_ids WHERE request_id IN ({ids})"))?;
    stored.request_ids.extend(keys.into_iter().map(|key| key.request_id));
    Ok(())
}

/// Adds the stored origins within `ranges` (a disjunction) to `stored`.
fn lookup_origins(client: &Client, ranges: &str, stored: &mut Stored) -> Result<()> {
    #[derive(Deserialize)]
    struct Origin {
        node: String,
        pid: u32,
        seq: u64,
    }
    let keys: Vec<Origin> =
        client.rows(&format!("SELECT node, pid, seq FROM request_origins WHERE {ranges}"))?;
    stored.origins.extend(keys.into_iter().map(|key| (key.node, key.pid, key.seq)));
    Ok(())
}

/// A batch on its way to the store, with the endpoints of its records and the follow position
/// it brings the file to.
pub struct Job {
    pub batch: Batch,
    pub assignments: Vec<Assignment>,
    pub position: Option<FollowPosition>,
}

/// Stores the records of `jobs` not stored yet, then their follow positions; gives each job's
/// counts, in order.
pub fn ingest(
    client: &Client,
    clock: &mut Clock,
    endpoint_writer: &mut endpoints::Writer,
    known: &mut signals::Known,
    jobs: &[Job],
    detection: &Detection,
) -> Result<Vec<IngestCounts>> {
    let mut counts = vec![IngestCounts::default(); jobs.len()];
    if jobs.iter().any(|job| !job.batch.is_empty()) {
        let mut detected = signals::Pending::default();
        let stored = stored(client, jobs.iter().flat_map(|job| job.batch.iter()))?;
        let mut origins = HashSet::new();
        let mut request_ids = HashSet::new();
        // One insert per day of `ts` (a partition): usually one or two, and records spread over
        // many days (a replayed spool, a broken clock) stay within the partitions ClickHouse
        // takes in one insert.
        let mut days: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
        let mut endpoint_hours = HourStats::default();
        let mut counted = HashSet::new();
        let mut values = Seen::default();
        for (job, counts) in jobs.iter().zip(&mut counts) {
            for (record, assignment) in job.batch.iter().zip(&job.assignments) {
                let origin = (record.node(), record.pid(), record.seq());
                let known = stored.origins.contains(&(origin.0.to_owned(), origin.1, origin.2))
                    || stored.request_ids.contains(record.request_id())
                    || origins.contains(&origin)
                    || request_ids.contains(record.request_id());
                if known {
                    counts.duplicates += 1;
                    continue;
                }
                origins.insert(origin);
                request_ids.insert(record.request_id());
                values.add(&record);
                let admitted = admit(&mut endpoint_writer.registry, record.server(), assignment);
                if admitted.counted {
                    counted.insert(admitted.endpoint.clone());
                }
                endpoint_hours.add(&admitted.endpoint, &record);
                let row = Row {
                    ts: record.ts(),
                    rid: clock.draw(),
                    session_id: record.session_id(),
                    key_hash: record.key_hash(),
                    session_key: record.session_key(),
                    session_start: record.session_start(),
                    node: record.node(),
                    pid: record.pid(),
                    seq: record.seq(),
                    request_id: record.request_id(),
                    method: record.method(),
                    status: record.status(),
                    ip: record.ip(),
                    user: record.user(),
                    role: record.role(),
                    attack: record.attack(),
                    flows: record.flows().collect(),
                    search: record.search(),
                    json: record.json(),
                    endpoint: admitted.endpoint.key(),
                    endpoint_server: admitted.endpoint.server,
                    duration_ms: record.duration_ms(),
                    response_bytes: record.response_bytes(),
                };
                // Rounded toward zero, like the partition key.
                let body = days.entry(record.ts() / DAY_MS).or_default();
                serde_json::to_writer(&mut *body, &row)
                    .map_err(|err| StoreError::new(err.to_string()))?;
                body.push(b'\n');
                if detection.config().is_some() {
                    detected.observe(record.session_id(), &record);
                }
                counts.accepted += 1;
            }
        }
        // The values first: a crash in between leaves values of records not stored, which
        // match nothing but these records once they are sent again, rather than records whose
        // values are never written (sent again, they are duplicates).
        values.save(client)?;
        for body in days.values() {
            client.insert("requests", body)?;
        }
        endpoint_writer.save_hours(client, clock.draw(), endpoint_hours, &counted)?;
        // After the records, as the follow position: a crash in between leaves these records
        // unscored rather than scored twice when they are sent again.
        signals::apply(client, detected, detection, clock.draw(), known)?;
    }
    // After the records: a crash in between makes the follower read the lines again, and they
    // are then duplicates.
    #[derive(Serialize)]
    struct PositionRow<'p> {
        path: &'p str,
        inode: u64,
        offset: u64,
        line_len: u64,
        line_crc: u32,
        version: i64,
    }
    let mut positions = Vec::new();
    for position in jobs.iter().filter_map(|job| job.position.as_ref()) {
        let row = PositionRow {
            path: &position.path,
            inode: position.inode,
            offset: position.offset,
            line_len: position.last_line.len,
            line_crc: position.last_line.crc,
            // Increasing in the jobs' order, so a file's last job gives its position.
            version: clock.draw(),
        };
        serde_json::to_writer(&mut positions, &row)
            .map_err(|err| StoreError::new(err.to_string()))?;
        positions.push(b'\n');
    }
    if !positions.is_empty() {
        client.insert("follow_positions", &positions)?;
    }
    Ok(counts)
}

/// Batches waiting to be written, and the outcomes of those written: whoever finds no write
/// under way writes every batch waiting, its own and others', while their senders wait.
#[derive(Default)]
pub struct Group {
    state: Mutex<GroupState>,
    changed: Condvar,
}

#[derive(Default)]
struct GroupState {
    next_ticket: u64,
    waiting: Vec<(u64, Job)>,
    written: HashMap<u64, Result<IngestCounts>>,
    writing: bool,
}

impl Group {
    /// Writes `job`, with the jobs waiting beside it, by `write`; `write` gives each job's
    /// outcome, in order.
    pub fn write(
        &self,
        job: Job,
        write: impl Fn(&[Job]) -> Vec<Result<IngestCounts>>,
    ) -> Result<IngestCounts> {
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push((ticket, job));
        loop {
            if let Some(outcome) = state.written.remove(&ticket) {
                return outcome;
            }
            if state.writing {
                state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // The oldest first, as many as one write takes (at least one).
            let mut records = 0;
            let take = state
                .waiting
                .iter()
                .position(|(_, job)| {
                    records += job.batch.len();
                    records > GROUP_RECORDS
                })
                .unwrap_or(state.waiting.len())
                .max(1);
            let (tickets, jobs): (Vec<u64>, Vec<Job>) = state.waiting.drain(..take).unzip();
            state.writing = true;
            drop(state);
            let mut writing = Writing { group: self, own: ticket, tickets, outcomes: Vec::new() };
            writing.outcomes = write(&jobs);
            // The batches are freed here, outside the lock.
            drop(jobs);
            drop(writing);
            state = self.lock();
        }
    }

    fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A write under way: hands out its outcomes when it ends, or an error to each of its jobs if
/// it panicked, so that no sender waits for ever.
struct Writing<'g> {
    group: &'g Group,
    /// The writer's own job, whose sender is the one unwinding after a panic.
    own: u64,
    tickets: Vec<u64>,
    outcomes: Vec<Result<IngestCounts>>,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let mut outcomes = std::mem::take(&mut self.outcomes).into_iter();
        let mut state = self.group.lock();
        for &ticket in &self.tickets {
            let outcome = outcomes
                .next()
                .unwrap_or_else(|| Err(StoreError::new("the write of this batch did not end")));
            if !(ticket == self.own && std::thread::panicking()) {
                state.written.insert(ticket, outcome);
            }
        }
        state.writing = false;
        self.group.changed.notify_all();
    }
}

pub fn follow_position(client: &Client, path: &str) -> Result<Option<FollowPosition>> {
    #[derive(Deserialize)]
    struct Position {
        inode: u64,
        offset: u64,
        line_len: u64,
        line_crc: u32,
    }
    let rows: Vec<Position> = client.rows(&format!(
        "SELECT inode, offset, line_len, line_crc FROM follow_positions \
         WHERE path = {} ORDER BY version DESC LIMIT 1",
        literal(path)
    ))?;
    Ok(rows.into_iter().next().map(|row| FollowPosition {
        path: path.to_owned(),
        inode: row.inode,
        offset: row.offset,
        last_line: LineMark { len: row.line_len, crc: row.line_crc },
    }))
}

/// Drops the days that ended before `cutoff`. Requests of the day holding the cutoff stay on
/// disk until that day goes, up to a day longer than the retention, but no query returns them.
pub fn purge(client: &Client, cutoff: i64) -> Result<PurgeCounts> {
    // Partition `d` holds `ts` in `[d, d + 1)` days (rounded toward zero, so partition 0 also
    // holds the day before the epoch): every partition up to `last` ended before the cutoff.
    let last = cutoff.div_euclid(DAY_MS) - 1;
    #[derive(Deserialize)]
    struct Partition {
        partition: String,
    }
    let partitions: Vec<Partition> = client.rows(&format!(
        "SELECT DISTINCT partition FROM system.parts \
         WHERE database = {} AND table = 'requests' AND active",
        literal(&client.config().database)
    ))?;
    let expired: Vec<i64> = partitions
        .iter()
        .filter_map(|p| p.partition.parse::<i64>().ok())
        .filter(|&day| day <= last)
        .collect();
    if expired.is_empty() {
        return Ok(PurgeCounts::default());
    }
    signals::purge(client, cutoff)?;
    #[derive(Deserialize)]
    struct Counts {
        requests: u64,
        sessions: u64,
    }
    let counts: Vec<Counts> = client.rows(&format!(
        "SELECT sum(n) AS requests, countIf(newest <= {last}) AS sessions FROM (
             SELECT session_id, countIf(intDiv(ts, {DAY_MS}) <= {last}) AS n,
                    max(intDiv(ts, {DAY_MS})) AS newest
             FROM requests GROUP BY session_id HAVING n > 0)"
    ))?;
    for day in &expired {
        for table in PARTITIONED {
            client.execute(&format!("ALTER TABLE {table} DROP PARTITION {day}"))?;
        }
    }
    let counts = counts.first().map_or(PurgeCounts::default(), |c| PurgeCounts {
        requests: c.requests,
        sessions: c.sessions,
    });
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    use api_sessions_core::testing::plain_record;

    use super::*;

    /// A job of `records` records, none of them assigned an endpoint.
    fn job(records: u64) -> Job {
        let mut batch = Batch::default();
        for n in 0..records {
            batch.push_record(&plain_record("s", n, 1_700_000_000_000)).unwrap();
        }
        Job { batch, assignments: Vec::new(), position: None }
    }

    /// Counts each job's records as accepted.
    fn accept(jobs: &[Job]) -> Vec<Result<IngestCounts>> {
        let accepted = |job: &Job| IngestCounts { accepted: job.batch.len() as u64, duplicates: 0 };
        jobs.iter().map(|job| Ok(accepted(job))).collect()
    }

    /// Starts writing a job of one record whose write, once `seen`, waits for the sender
    /// returned; returns when that write is under way, so that the next jobs wait behind it.
    fn held_write<'scope>(
        scope: &'scope thread::Scope<'scope, '_>,
        group: &'scope Group,
        seen: impl Fn(&[Job]) + Send + 'scope,
    ) -> (thread::ScopedJoinHandle<'scope, Result<IngestCounts>>, mpsc::Sender<()>) {
        let (go, wait) = mpsc::channel::<()>();
        let first = scope.spawn(move || {
            group.write(job(1), move |jobs| {
                seen(jobs);
                wait.recv().unwrap();
                accept(jobs)
            })
        });
        while !group.lock().writing {
            thread::sleep(Duration::from_millis(1));
        }
        (first, go)
    }

    /// Waits until `count` jobs wait in `group`.
    fn until_waiting(group: &Group, count: usize) {
        while group.lock().waiting.len() < count {
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn batches_waiting_are_written_together() {
        let group = Group::default();
        let sizes = Mutex::new(Vec::new());
        thread::scope(|scope| {
            let (group, sizes) = (&group, &sizes);
            let (first, go) =
                held_write(scope, group, |jobs| sizes.lock().unwrap().push(jobs.len()));
            let others: Vec<_> = (2..5)
                .map(|records| {
                    scope.spawn(move || {
                        group.write(job(records), |jobs| {
                            sizes.lock().unwrap().push(jobs.len());
                            accept(jobs)
                        })
                    })
                })
                .collect();
            until_waiting(group, 3);
            go.send(()).unwrap();
            assert_eq!(first.join().unwrap().unwrap().accepted, 1);
            for (records, other) in (2..5).zip(others) {
                // Each sender has the counts of its own batch.
                assert_eq!(other.join().unwrap().unwrap().accepted, records);
            }
        });
        assert_eq!(*sizes.lock().unwrap(), [1, 3]);
        assert!(group.lock().written.is_empty());
    }

    #[test]
    fn a_write_that_panics_fails_its_batches_and_no_other() {
        let group = Group::default();
        thread::scope(|scope| {
            let group = &group;
            let (first, go) = held_write(scope, group, |_| {});
            // These two wait together, and whichever writes them panics.
            let failing: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(move || {
                        group.write(job(2), |_| panic!("the write of a test that panics"))
                    })
                })
                .collect();
            until_waiting(group, 2);
            go.send(()).unwrap();
            assert_eq!(first.join().unwrap().unwrap().accepted, 1);
            let outcomes: Vec<_> = failing.into_iter().map(|sender| sender.join()).collect();
            // One sender panicked with its write; the other was told its batch was not written.
            assert_eq!(outcomes.iter().filter(|outcome| outcome.is_err()).count(), 1);
            let told = outcomes.into_iter().find_map(Result::ok).unwrap();
            assert!(told.unwrap_err().to_string().contains("did not end"));
        });
        assert!(group.lock().written.is_empty());
        // And the group still writes.
        assert_eq!(group.write(job(3), accept).unwrap().accepted, 3);
    }
}
