//! Endpoints in SQLite: each request row names its endpoint by a small integer id;
//! `endpoint_hours` keeps the encoded [`Stats`] of each endpoint and hour and `endpoint_days`
//! those of each endpoint and day, each row with its [`Totals`] in plain columns beside the
//! blob.
//!
//! The list of endpoints sorts and filters on the totals: a range reads the columns of whole
//! days, of the whole hours around them and counts the hours it cuts from the requests, and
//! decodes the blobs only of the endpoints it shows (or of all of them when it sorts by a
//! sketch: sessions or a quantile). Days keep that to about seven rows per endpoint over the
//! retention, where hours would be 168.
//!
//! Writing behind: the writer does not rewrite an endpoint-hour at every batch. It adds what
//! the batches count to statistics in memory and writes them out (hours and days, read, merged
//! and written back) when ingest pauses, every few seconds while it does not, when they grow
//! large, before a purge and when the store closes. Every batch's transaction marks its hours
//! in `endpoint_dirty`, and the flush clears the marks in the transaction that writes the
//! statistics: so a reader counts a marked hour from its requests, like the hours a range
//! cuts, and a writer that starts on marked hours (the last one was killed) rebuilds them from
//! their requests. Either way the figures are those of the stored requests, exactly.
//!
//! The writer keeps the cap's [`Registry`] and the ids of the endpoints in memory; both are
//! rebuilt from the tables when the writer starts, after a purge (which frees the places of
//! endpoints no longer called) and after a failed transaction (whose new endpoints were rolled
//! back). The statistics waiting to be written are of committed transactions only, so they
//! survive a reload.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, Transaction};
use rustc_hash::{FxHashMap, FxHashSet};

use super::schema;
use super::tally;
use crate::endpoints::registry::{Limits, Registry};
use crate::endpoints::stats::{hour, Observation, Part, Stats, HOUR_MS};
use crate::store::endpoints::{
    admit, Assignment, Counted, EndpointKey, HourPlan, HourStats, Measured, Rank, Totals,
};
use crate::store::{Cursor, EndpointRange, Result, StoreError};

/// The schema's migration for endpoints (see `schema`): the endpoint of each request, with the two values
/// its statistics need that no other column holds, and the endpoints with their hours.
/// `requests_endpoint` leads with `hour` like the other request indexes, so an insert touches
/// the current hour's end of it; the `endpoint=` filter and the edges of a range walk it hour
/// by hour.
pub const SCHEMA: &str = "
    ALTER TABLE requests ADD COLUMN endpoint INTEGER;
    ALTER TABLE requests ADD COLUMN duration_ms REAL;
    ALTER TABLE requests ADD COLUMN response_bytes INTEGER;
    CREATE INDEX requests_endpoint ON requests (hour, endpoint);
    CREATE TABLE endpoints (
        id       INTEGER PRIMARY KEY,
        server   TEXT    NOT NULL,
        method   TEXT    NOT NULL,
        template TEXT    NOT NULL,
        counted  INTEGER NOT NULL,
        UNIQUE (server, method, template)
    );
    CREATE TABLE endpoint_hours (
        endpoint INTEGER NOT NULL,
        hour     INTEGER NOT NULL,
        stats    BLOB    NOT NULL,
        PRIMARY KEY (endpoint, hour)
    ) WITHOUT ROWID;
    CREATE INDEX endpoint_hours_hour ON endpoint_hours (hour);
";

/// The schema's migration for the rollups (see `schema`): the totals of each endpoint-hour in
/// columns, the same per endpoint and day, and the hours whose statistics lag behind their
/// requests. The columns and days of an existing database are filled from its hours.
pub fn migrate_rollups(tx: &Transaction<'_>) -> Result<()> {
    tx.execute_batch(
        "ALTER TABLE endpoint_hours ADD COLUMN requests INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE endpoint_hours ADD COLUMN errors INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE endpoint_hours ADD COLUMN attacks INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE endpoint_hours ADD COLUMN first_ts INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE endpoint_hours ADD COLUMN last_ts INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE endpoint_hours ADD COLUMN flows TEXT NOT NULL DEFAULT '';
         CREATE TABLE endpoint_days (
             endpoint INTEGER NOT NULL,
             day      INTEGER NOT NULL,
             requests INTEGER NOT NULL,
             errors   INTEGER NOT NULL,
             attacks  INTEGER NOT NULL,
             first_ts INTEGER NOT NULL,
             last_ts  INTEGER NOT NULL,
             flows    TEXT    NOT NULL,
             stats    BLOB    NOT NULL,
             PRIMARY KEY (endpoint, day)
         ) WITHOUT ROWID;
         CREATE TABLE endpoint_dirty (hour INTEGER PRIMARY KEY);",
    )?;
    let mut days = BTreeSet::new();
    {
        let mut select = tx.prepare("SELECT endpoint, hour, stats FROM endpoint_hours")?;
        let mut rows = select.query([])?;
        while let Some(row) = rows.next()? {
            let (endpoint, h): (i64, i64) = (row.get(0)?, row.get(1)?);
            write_row(
                tx,
                Table::Hours,
                endpoint,
                h,
                &decode(&row.get::<_, Vec<u8>>(2)?, Part::All)?,
            )?;
            days.insert(day_of(h));
        }
    }
    // The indexes by time hold the totals, so that the list reads them without visiting the
    // rows and their blobs.
    tx.execute_batch(
        "DROP INDEX endpoint_hours_hour;
         CREATE INDEX endpoint_hours_hour ON endpoint_hours
             (hour, endpoint, requests, errors, attacks, first_ts, last_ts, flows);
         CREATE INDEX endpoint_days_day ON endpoint_days
             (day, endpoint, requests, errors, attacks, first_ts, last_ts, flows);",
    )?;
    for day in days {
        rebuild_day(tx, day)?;
    }
    Ok(())
}

/// The schema's migration that adds the statistics to the indexes by time (see `schema`).
/// They are small (tens of bytes for most endpoint-hours), so the indexes grow little.
pub const COVERING_INDEXES: &str = "
    DROP INDEX endpoint_hours_hour;
    CREATE INDEX endpoint_hours_hour ON endpoint_hours
        (hour, endpoint, requests, errors, attacks, first_ts, last_ts, flows, stats);
    DROP INDEX endpoint_days_day;
    CREATE INDEX endpoint_days_day ON endpoint_days
        (day, endpoint, requests, errors, attacks, first_ts, last_ts, flows, stats);
";

/// The schema's migration for the readers' [`Cache`] (see `schema`): a tag for each day of
/// rollups and one for the list of endpoints, each set to a new random number in the
/// transaction that changes what it tags. A reader that kept a day or the list with its tag
/// knows, by reading the tag alone, whether what it kept is still what is stored.
pub const TAGS: &str = "
    CREATE TABLE endpoint_day_tags (day INTEGER PRIMARY KEY, tag INTEGER NOT NULL);
    INSERT INTO endpoint_day_tags (day, tag)
        SELECT day, random() FROM (SELECT DISTINCT day FROM endpoint_days);
    CREATE TABLE endpoint_catalog_tag (tag INTEGER NOT NULL);
    INSERT INTO endpoint_catalog_tag (tag) VALUES (random());
";

/// Gives a day of rollups a new tag: its rows changed.
fn retag_day(tx: &Connection, day: i64) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO endpoint_day_tags (day, tag) VALUES (?, random())
         ON CONFLICT (day) DO UPDATE SET tag = excluded.tag",
    )?
    .execute([day])?;
    Ok(())
}

/// Gives the list of endpoints a new tag: endpoints were added or removed.
fn retag_catalog(tx: &Connection) -> Result<()> {
    tx.prepare_cached("UPDATE endpoint_catalog_tag SET tag = random()")?.execute([])?;
    Ok(())
}

/// Hours in a day: days are UTC days, as the hours are UTC hours.
const DAY_HOURS: i64 = 24;

fn day_of(h: i64) -> i64 {
    h.div_euclid(DAY_HOURS)
}

/// How long statistics wait in memory at most, while ingest goes on.
const FLUSH_AFTER: Duration = Duration::from_secs(5);
/// Endpoint-hours in memory at most; past them the writer writes them out.
const MAX_PENDING: usize = 50_000;
/// A pause in ingest this long writes the statistics out.
pub const FLUSH_IDLE: Duration = Duration::from_millis(200);

/// The writer's view of the endpoints.
pub struct Writer {
    registry: Registry,
    ids: HashMap<EndpointKey, i64>,
    /// Statistics of committed batches not yet written, by endpoint id and hour.
    pending: HashMap<(i64, i64), Stats>,
    /// The hours marked in `endpoint_dirty` by committed transactions.
    marked: HashSet<i64>,
    /// When the oldest of `pending` was added.
    since: Option<Instant>,
}

impl Writer {
    /// Reads the endpoints and rebuilds the hours a writer left marked.
    pub fn load(conn: &Connection) -> Result<Writer> {
        let mut writer = Writer {
            registry: Registry::default(),
            ids: HashMap::new(),
            pending: HashMap::new(),
            marked: HashSet::new(),
            since: None,
        };
        recover(conn)?;
        writer.reload(conn)?;
        Ok(writer)
    }

    /// Rebuilds the registry and the ids from the tables.
    pub fn reload(&mut self, conn: &Connection) -> Result<()> {
        self.registry = Registry::new(Limits::default());
        self.ids.clear();
        let mut select =
            conn.prepare("SELECT id, server, method, template, counted FROM endpoints")?;
        let mut rows = select.query([])?;
        while let Some(row) = rows.next()? {
            let key =
                EndpointKey { server: row.get(1)?, method: row.get(2)?, template: row.get(3)? };
            self.registry.restore(&key.server, &key.method, &key.template, row.get(4)?);
            self.ids.insert(key, row.get(0)?);
        }
        Ok(())
    }

    /// The id of the endpoint a record counts under, stored if new.
    pub fn id(
        &mut self,
        tx: &Transaction<'_>,
        server: &str,
        assignment: &Assignment,
    ) -> Result<i64> {
        let admitted = admit(&mut self.registry, server, assignment);
        if let Some(&id) = self.ids.get(&admitted.endpoint) {
            return Ok(id);
        }
        let key = admitted.endpoint;
        tx.prepare_cached(
            "INSERT INTO endpoints (server, method, template, counted) VALUES (?, ?, ?, ?)",
        )?
        .execute(params![key.server, key.method, key.template, admitted.counted])?;
        let id = tx.last_insert_rowid();
        retag_catalog(tx)?;
        self.ids.insert(key, id);
        Ok(id)
    }

    /// Marks, within a batch's transaction, the hours it adds to; returns the newly marked
    /// ones, for [`Writer::keep`] once the transaction is committed.
    pub fn mark(&self, tx: &Transaction<'_>, added: &HourStats<i64>) -> Result<Vec<i64>> {
        let hours: BTreeSet<i64> =
            added.hours.keys().map(|(_, h)| *h).filter(|h| !self.marked.contains(h)).collect();
        let mut insert =
            tx.prepare_cached("INSERT OR IGNORE INTO endpoint_dirty (hour) VALUES (?)")?;
        for h in &hours {
            insert.execute([h])?;
        }
        Ok(hours.into_iter().collect())
    }

    /// Takes the statistics of a committed transaction, to be written later.
    pub fn keep(&mut self, added: HourStats<i64>, marked: Vec<i64>) {
        self.marked.extend(marked);
        if added.hours.is_empty() {
            return;
        }
        self.since.get_or_insert_with(Instant::now);
        for (key, stats) in added.hours {
            match self.pending.get_mut(&key) {
                Some(kept) => kept.merge(&stats),
                None => {
                    self.pending.insert(key, stats);
                }
            }
        }
    }

    /// Whether statistics wait to be written.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether the statistics waiting should be written now although ingest goes on.
    pub fn flush_due(&self) -> bool {
        self.pending.len() >= MAX_PENDING
            || self.since.is_some_and(|since| since.elapsed() >= FLUSH_AFTER)
    }

    /// Writes the statistics waiting, hours and days, and clears the marks, in one
    /// transaction; on failure they stay waiting (and marked), to be written with the next.
    pub fn flush(&mut self, conn: &mut Connection) -> Result<()> {
        if self.pending.is_empty() && self.marked.is_empty() {
            return Ok(());
        }
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut days: HashMap<(i64, i64), Stats> = HashMap::new();
        for (&(endpoint, h), stats) in &self.pending {
            add_to_row(&tx, Table::Hours, endpoint, h, stats)?;
            days.entry((endpoint, day_of(h))).or_default().merge(stats);
        }
        for ((endpoint, day), stats) in &days {
            add_to_row(&tx, Table::Days, *endpoint, *day, stats)?;
        }
        let written: BTreeSet<i64> = days.keys().map(|&(_, day)| day).collect();
        for day in written {
            retag_day(&tx, day)?;
        }
        tx.execute("DELETE FROM endpoint_dirty", [])?;
        tx.commit()?;
        self.pending.clear();
        self.marked.clear();
        self.since = None;
        Ok(())
    }
}

/// The two tables of statistics, which have the same columns but the name of their time.
#[derive(Clone, Copy)]
enum Table {
    Hours,
    Days,
}

impl Table {
    fn select(self) -> &'static str {
        match self {
            Table::Hours => "SELECT stats FROM endpoint_hours WHERE endpoint = ? AND hour = ?",
            Table::Days => "SELECT stats FROM endpoint_days WHERE endpoint = ? AND day = ?",
        }
    }

    fn upsert(self) -> &'static str {
        match self {
            Table::Hours => {
                "INSERT INTO endpoint_hours
                   (endpoint, hour, requests, errors, attacks, first_ts, last_ts, flows, stats)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (endpoint, hour) DO UPDATE SET requests = excluded.requests,
                   errors = excluded.errors, attacks = excluded.attacks,
                   first_ts = excluded.first_ts, last_ts = excluded.last_ts,
                   flows = excluded.flows, stats = excluded.stats"
            }
            Table::Days => {
                "INSERT INTO endpoint_days
                   (endpoint, day, requests, errors, attacks, first_ts, last_ts, flows, stats)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (endpoint, day) DO UPDATE SET requests = excluded.requests,
                   errors = excluded.errors, attacks = excluded.attacks,
                   first_ts = excluded.first_ts, last_ts = excluded.last_ts,
                   flows = excluded.flows, stats = excluded.stats"
            }
        }
    }
}

/// Writes the statistics of an endpoint-hour or day, with their totals.
fn write_row(
    tx: &Transaction<'_>,
    table: Table,
    endpoint: i64,
    at: i64,
    stats: &Stats,
) -> Result<()> {
    let totals = Totals::of(stats);
    let flows = tally::join_list(totals.flows.iter().map(String::as_str));
    tx.prepare_cached(table.upsert())?.execute(params![
        endpoint,
        at,
        totals.requests as i64,
        totals.errors as i64,
        totals.attacks as i64,
        totals.first_ts,
        totals.last_ts,
        flows,
        stats.encode(),
    ])?;
    Ok(())
}

/// Adds statistics to those stored for an endpoint-hour or day.
fn add_to_row(
    tx: &Transaction<'_>,
    table: Table,
    endpoint: i64,
    at: i64,
    stats: &Stats,
) -> Result<()> {
    let stored: Option<Vec<u8>> = {
        let mut select = tx.prepare_cached(table.select())?;
        let mut rows = select.query(params![endpoint, at])?;
        match rows.next()? {
            Some(row) => Some(row.get(0)?),
            None => None,
        }
    };
    match stored {
        Some(bytes) => {
            let mut merged = decode(&bytes, Part::All)?;
            merged.merge(stats);
            write_row(tx, table, endpoint, at, &merged)
        }
        None => write_row(tx, table, endpoint, at, stats),
    }
}

/// Rebuilds the hours a writer left marked from their requests, and their days from their
/// hours.
fn recover(conn: &Connection) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    let marked: Vec<i64> = tx
        .prepare("SELECT hour FROM endpoint_dirty")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if marked.is_empty() {
        return Ok(());
    }
    let mut days = BTreeSet::new();
    for h in marked {
        tx.execute("DELETE FROM endpoint_hours WHERE hour = ?", [h])?;
        let mut counted: HashMap<i64, Stats> = HashMap::new();
        each_request(&tx, (h * HOUR_MS, (h + 1) * HOUR_MS - 1), |endpoint, request, flows| {
            counted.entry(endpoint).or_default().add(request, flows.iter().copied());
        })?;
        for (endpoint, stats) in &counted {
            write_row(&tx, Table::Hours, *endpoint, h, stats)?;
        }
        days.insert(day_of(h));
    }
    for day in days {
        rebuild_day(&tx, day)?;
        retag_day(&tx, day)?;
    }
    tx.execute("DELETE FROM endpoint_dirty", [])?;
    tx.commit()?;
    Ok(())
}

/// Replaces the rows of a day by the merge of its hours.
fn rebuild_day(tx: &Transaction<'_>, day: i64) -> Result<()> {
    tx.execute("DELETE FROM endpoint_days WHERE day = ?", [day])?;
    let mut merged: HashMap<i64, Stats> = HashMap::new();
    {
        let mut select = tx.prepare_cached(
            "SELECT endpoint, stats FROM endpoint_hours INDEXED BY endpoint_hours_hour
             WHERE hour BETWEEN ? AND ?",
        )?;
        let mut rows = select.query([day * DAY_HOURS, day * DAY_HOURS + DAY_HOURS - 1])?;
        while let Some(row) = rows.next()? {
            let stats = decode(&row.get::<_, Vec<u8>>(1)?, Part::All)?;
            merged.entry(row.get(0)?).or_default().merge(&stats);
        }
    }
    for (endpoint, stats) in &merged {
        write_row(tx, Table::Days, *endpoint, day, stats)?;
    }
    Ok(())
}

/// Calls `f` with every request of a millisecond range that has an endpoint.
fn each_request(
    tx: &Connection,
    (start, end): (i64, i64),
    mut f: impl FnMut(i64, &Observation<'_>, &[&str]),
) -> Result<()> {
    let mut select = tx.prepare_cached(
        "SELECT r.endpoint, r.ts, r.status, r.duration_ms, r.response_bytes,
                r.attack IS NOT NULL, r.flows, s.session_id
         FROM requests r JOIN sessions s ON s.id = r.session
         WHERE r.id BETWEEN ? AND ? AND r.ts BETWEEN ? AND ? AND r.endpoint IS NOT NULL",
    )?;
    let bounds = [schema::first_id(start), schema::last_id(end), start, end];
    let mut rows = select.query(params_from_iter(bounds.iter().map(|v| Value::Integer(*v))))?;
    while let Some(row) = rows.next()? {
        let session_id = text(row, 7)?;
        let request = Observation {
            ts: row.get(1)?,
            status: row.get(2)?,
            duration_ms: row.get::<_, Option<f64>>(3)?.unwrap_or(0.0),
            response_bytes: row.get::<_, Option<i64>>(4)?.unwrap_or(0).max(0) as u64,
            attack: row.get(5)?,
            session_id,
        };
        let flows: Vec<&str> = tally::split_list(text(row, 6)?).collect();
        f(row.get(0)?, &request, &flows);
    }
    Ok(())
}

/// A text column, borrowed from the row.
fn text<'r>(row: &'r rusqlite::Row<'_>, column: usize) -> Result<&'r str> {
    Ok(row.get_ref(column)?.as_str().map_err(rusqlite::Error::from)?)
}

fn decode(bytes: &[u8], part: Part) -> Result<Stats> {
    Stats::decode_part(bytes, part).map_err(|_| StoreError::new("unreadable endpoint statistics"))
}

/// After the requests older than `cutoff` are gone (and the statistics waiting were written):
/// the hours and days before the cutoff's, and the endpoints left without any hour. The day of
/// the cutoff keeps the hours before it in its rollup; no range reads it whole again, as
/// ranges start at or after the cutoff.
pub fn purge(conn: &Connection, cutoff: i64) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    let cutoff_day = day_of(hour(cutoff));
    tx.execute("DELETE FROM endpoint_hours WHERE hour < ?", [hour(cutoff)])?;
    tx.execute("DELETE FROM endpoint_days WHERE day < ?", [cutoff_day])?;
    tx.execute("DELETE FROM endpoint_day_tags WHERE day < ?", [cutoff_day])?;
    let removed = tx.execute(
        "DELETE FROM endpoints WHERE NOT EXISTS
           (SELECT 1 FROM endpoint_hours h WHERE h.endpoint = endpoints.id)",
        [],
    )?;
    if removed > 0 {
        retag_catalog(&tx)?;
    }
    tx.commit()?;
    Ok(())
}

/// Every stored endpoint, in the order of their keys.
struct Catalog {
    endpoints: Vec<(i64, EndpointKey)>,
}

impl Catalog {
    fn read(conn: &Connection) -> Result<Catalog> {
        let mut select =
            conn.prepare_cached("SELECT id, server, method, template FROM endpoints")?;
        let rows = select.query_map([], |row| {
            Ok((
                row.get(0)?,
                EndpointKey { server: row.get(1)?, method: row.get(2)?, template: row.get(3)? },
            ))
        })?;
        let mut endpoints: Vec<(i64, EndpointKey)> = rows.collect::<rusqlite::Result<_>>()?;
        endpoints.sort_unstable_by(|a, b| a.1.cmp(&b.1));
        Ok(Catalog { endpoints })
    }

    fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// The ids of some endpoints.
    fn ids<'k>(&self, keys: impl IntoIterator<Item = &'k EndpointKey>) -> HashSet<i64> {
        keys.into_iter()
            .filter_map(|key| {
                let place = self.endpoints.binary_search_by(|(_, stored)| stored.cmp(key)).ok()?;
                Some(self.endpoints[place].0)
            })
            .collect()
    }

    /// The endpoints with requests among `by_id`, in the order of their keys.
    fn measured(&self, mut by_id: FxHashMap<i64, Stats>) -> Vec<Measured> {
        // An endpoint has one id: its statistics move into the answer as they are.
        self.endpoints
            .iter()
            .filter_map(|(id, endpoint)| {
                let stats = by_id.remove(id).filter(|stats| stats.requests > 0)?;
                Some(Measured { endpoint: endpoint.clone(), stats })
            })
            .collect()
    }
}

/// The totals of each endpoint called in a day, as its rollup rows hold them.
type DayTotals = Vec<(i64, Totals)>;
/// One part of the statistics (a sketch) of each endpoint called in a day.
type DaySketches = Vec<(i64, Stats)>;

/// What the readers keep between queries of the endpoints list, so that a list reads from the
/// database only what changed since the last: the list of endpoints, and the totals and
/// sketches of whole days, decoded.
///
/// Each is kept with the tag it was read with (see [`TAGS`]) and read again when the stored
/// tag differs, within the transaction of the query: so a list is exactly what it would be
/// without the cache. Days with writes in flight are counted from their hours and requests
/// (see [`Parts`]) and leave the cache alone; in a day of ingest only the current day's tag
/// changes, at each flush of the writer.
///
/// Bounded: about [`MAX_KEPT_BYTES`] of decoded statistics, the oldest days dropped first;
/// the list of endpoints is on top (about 100 bytes an endpoint, capped by the registry).
#[derive(Default)]
pub struct Cache {
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    catalog: Option<(i64, Arc<Catalog>)>,
    days: BTreeMap<i64, KeptDay>,
    /// The estimated size of `days`.
    bytes: usize,
}

struct KeptDay {
    tag: i64,
    totals: Arc<DayTotals>,
    /// The sketches of [`Part::Sessions`], [`Part::Duration`] and [`Part::Size`], once read.
    sketches: [Option<Arc<DaySketches>>; 3],
    bytes: usize,
}

/// A day as a query reads it: its totals, and the sketch it asked for.
struct Day {
    totals: Arc<DayTotals>,
    sketches: Option<Arc<DaySketches>>,
}

/// Decoded statistics kept at most, estimated: some 70,000 endpoint-days (the retention of
/// 10,000 endpoints) with a totals entry and a sketch or two each.
pub const MAX_KEPT_BYTES: usize = 128 << 20;

/// Where a sketch is kept in [`KeptDay::sketches`].
fn sketch_slot(part: Part) -> Option<usize> {
    match part {
        Part::All => None,
        Part::Sessions => Some(0),
        Part::Duration => Some(1),
        Part::Size => Some(2),
    }
}

/// About the memory a totals entry takes.
fn totals_bytes(totals: &Totals) -> usize {
    // A flow is a string in a B-tree node: its bytes and some 40 of overhead.
    std::mem::size_of::<(i64, Totals)>() + totals.flows.iter().map(|f| f.len() + 40).sum::<usize>()
}

/// About the memory a decoded sketch takes.
fn sketch_bytes(stats: &Stats) -> usize {
    let sessions =
        if stats.sessions.is_exact() { stats.sessions.count() as usize * 8 } else { 4096 };
    let buckets = stats.duration_ms.buckets().len() + stats.response_bytes.buckets().len();
    std::mem::size_of::<(i64, Stats)>() + sessions + buckets * 16
}

impl Cache {
    fn lock(&self) -> MutexGuard<'_, Kept> {
        // What is kept is replaced whole under the lock: a panic elsewhere leaves it usable.
        self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The list of endpoints, as the transaction sees it.
    fn catalog(&self, tx: &Connection) -> Result<Arc<Catalog>> {
        let tag: i64 = tx
            .prepare_cached("SELECT tag FROM endpoint_catalog_tag")?
            .query_row([], |row| row.get(0))?;
        if let Some((kept, catalog)) = &self.lock().catalog {
            if *kept == tag {
                return Ok(Arc::clone(catalog));
            }
        }
        let catalog = Arc::new(Catalog::read(tx)?);
        self.lock().catalog = Some((tag, Arc::clone(&catalog)));
        Ok(catalog)
    }

    /// The whole days of `ranges` (inclusive) that have rows, as the transaction sees them,
    /// each with the sketch of `part`. Days before `floor_day` are no longer kept.
    fn days(
        &self,
        tx: &Connection,
        ranges: &[(i64, i64)],
        part: Part,
        floor_day: i64,
    ) -> Result<Vec<Day>> {
        let slot = sketch_slot(part);
        let mut tags: Vec<(i64, i64)> = Vec::new();
        {
            let mut select = tx.prepare_cached(
                "SELECT day, tag FROM endpoint_day_tags WHERE day BETWEEN ? AND ? ORDER BY day",
            )?;
            for (first, last) in ranges {
                let rows = select.query_map([first, last], |row| Ok((row.get(0)?, row.get(1)?)))?;
                for row in rows {
                    tags.push(row?);
                }
            }
        }
        // Taken from the cache where the tags match; read outside the lock otherwise.
        let mut days: Vec<Option<Day>> = {
            let kept = self.lock();
            tags.iter()
                .map(|(day, tag)| {
                    let found = kept.days.get(day).filter(|found| found.tag == *tag)?;
                    let sketches = match slot {
                        None => None,
                        Some(slot) => Some(Arc::clone(found.sketches[slot].as_ref()?)),
                    };
                    Some(Day { totals: Arc::clone(&found.totals), sketches })
                })
                .collect()
        };
        let mut read = Vec::new();
        for (place, &(day, tag)) in tags.iter().enumerate() {
            if days[place].is_none() {
                let (totals, sketches) = read_day(tx, day, part)?;
                let (totals, sketches) = (Arc::new(totals), sketches.map(Arc::new));
                days[place] = Some(Day { totals: Arc::clone(&totals), sketches: sketches.clone() });
                read.push((day, tag, totals, sketches));
            }
        }
        let mut kept = self.lock();
        for (day, tag, totals, sketches) in read {
            kept.keep(day, tag, totals, slot.zip(sketches));
        }
        kept.forget_before(floor_day);
        Ok(days.into_iter().flatten().collect())
    }
}

impl Kept {
    fn keep(
        &mut self,
        day: i64,
        tag: i64,
        totals: Arc<DayTotals>,
        sketch: Option<(usize, Arc<DaySketches>)>,
    ) {
        let entry = match self.days.get_mut(&day) {
            // Another sketch of the same rows.
            Some(entry) if entry.tag == tag => entry,
            _ => {
                let bytes = totals.iter().map(|(_, totals)| totals_bytes(totals)).sum();
                let replaced = self
                    .days
                    .insert(day, KeptDay { tag, totals, sketches: [None, None, None], bytes });
                self.bytes = self.bytes + bytes - replaced.map_or(0, |old| old.bytes);
                self.days.get_mut(&day).expect("just kept")
            }
        };
        if let Some((slot, sketches)) = sketch {
            if entry.sketches[slot].is_none() {
                let bytes: usize = sketches.iter().map(|(_, stats)| sketch_bytes(stats)).sum();
                entry.sketches[slot] = Some(sketches);
                entry.bytes += bytes;
                self.bytes += bytes;
            }
        }
        while self.bytes > MAX_KEPT_BYTES {
            let Some((_, oldest)) = self.days.pop_first() else { break };
            self.bytes -= oldest.bytes;
        }
    }

    fn forget_before(&mut self, day: i64) {
        let kept = self.days.split_off(&day);
        for gone in std::mem::replace(&mut self.days, kept).into_values() {
            self.bytes -= gone.bytes;
        }
    }
}

/// The totals of a day's rows, and the sketch of `part` unless that is [`Part::All`].
fn read_day(conn: &Connection, day: i64, part: Part) -> Result<(DayTotals, Option<DaySketches>)> {
    let mut totals = Vec::new();
    let mut sketches = (part != Part::All).then(Vec::new);
    let mut select = conn.prepare_cached(
        "SELECT endpoint, requests, errors, attacks, first_ts, last_ts, flows, stats
         FROM endpoint_days INDEXED BY endpoint_days_day WHERE day = ?",
    )?;
    let mut rows = select.query([day])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        totals.push((
            id,
            Totals {
                requests: row.get::<_, i64>(1)? as u64,
                errors: row.get::<_, i64>(2)? as u64,
                attacks: row.get::<_, i64>(3)? as u64,
                first_ts: row.get(4)?,
                last_ts: row.get(5)?,
                flows: tally::split_list(text(row, 6)?).map(str::to_owned).collect(),
            },
        ));
        if let Some(sketches) = &mut sketches {
            let bytes = row.get_ref(7)?.as_blob().map_err(rusqlite::Error::from)?;
            sketches.push((id, decode(bytes, part)?));
        }
    }
    Ok((totals, sketches))
}

/// Where each part of a range is read from: rollups of whole days, rows of whole hours, and the
/// requests of the hours the range cuts or that are marked.
#[derive(Debug, Default, PartialEq, Eq)]
struct Parts {
    /// Inclusive ranges of days.
    days: Vec<(i64, i64)>,
    /// Inclusive ranges of hours; the marked ones among them are skipped.
    hours: Vec<(i64, i64)>,
    /// Inclusive millisecond ranges.
    requests: Vec<(i64, i64)>,
    marked: HashSet<i64>,
}

/// The last hour of a range open at its end: far beyond any request, and far from overflows.
const OPEN_END: i64 = 1 << 40;

impl Parts {
    fn new(plan: &HourPlan, marked: HashSet<i64>) -> Parts {
        let mut parts = Parts { requests: plan.edges.clone(), ..Parts::default() };
        if let Some((first, last)) = plan.hours {
            let last = last.unwrap_or(OPEN_END);
            let first_day = (first + DAY_HOURS - 1).div_euclid(DAY_HOURS);
            let last_day = (last + 1).div_euclid(DAY_HOURS) - 1;
            if first_day > last_day {
                parts.hours.push((first, last));
            } else {
                if first < first_day * DAY_HOURS {
                    parts.hours.push((first, first_day * DAY_HOURS - 1));
                }
                if last > last_day * DAY_HOURS + DAY_HOURS - 1 {
                    parts.hours.push(((last_day + 1) * DAY_HOURS, last));
                }
                // A day with a marked hour is read hour by hour.
                let marked_days: BTreeSet<i64> = marked
                    .iter()
                    .map(|h| day_of(*h))
                    .filter(|d| (first_day..=last_day).contains(d))
                    .collect();
                let mut next = first_day;
                for day in marked_days {
                    if next < day {
                        parts.days.push((next, day - 1));
                    }
                    parts.hours.push((day * DAY_HOURS, day * DAY_HOURS + DAY_HOURS - 1));
                    next = day + 1;
                }
                if next <= last_day {
                    parts.days.push((next, last_day));
                }
            }
            for &h in &marked {
                if h >= first && h <= last {
                    parts.requests.push((h * HOUR_MS, (h + 1) * HOUR_MS - 1));
                }
            }
        }
        parts.marked = marked;
        parts
    }

    fn read(conn: &Connection, range: &EndpointRange, floor: i64) -> Result<Parts> {
        let from = range.from.map_or(floor, |from| from.0.max(floor));
        let plan = HourPlan::new(from, range.to.map(|to| to.0));
        let marked: HashSet<i64> = conn
            .prepare_cached("SELECT hour FROM endpoint_dirty")?
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Parts::new(&plan, marked))
    }

    /// The rows of the days (unless `hours_only`) and hours; `only` limits them to some
    /// endpoints, read by the primary key.
    fn each_row(
        &self,
        conn: &Connection,
        columns: &str,
        only: Option<&[i64]>,
        hours_only: bool,
        mut f: impl FnMut(i64, &rusqlite::Row<'_>) -> Result<()>,
    ) -> Result<()> {
        let tables =
            [("endpoint_days", "day", &self.days), ("endpoint_hours", "hour", &self.hours)];
        for (table, time, ranges) in tables.into_iter().skip(usize::from(hours_only)) {
            let is_hours = time == "hour";
            let mut visit = |rows: &mut rusqlite::Rows<'_>| -> Result<()> {
                while let Some(row) = rows.next()? {
                    if is_hours && self.marked.contains(&row.get::<_, i64>(1)?) {
                        continue;
                    }
                    f(row.get(0)?, row)?;
                }
                Ok(())
            };
            for (first, last) in ranges {
                match only {
                    None => {
                        let mut select = conn.prepare_cached(&format!(
                            "SELECT endpoint, {time}, {columns} FROM {table}
                             INDEXED BY {table}_{time} WHERE {time} BETWEEN ? AND ?"
                        ))?;
                        visit(&mut select.query(params![first, last])?)?;
                    }
                    Some(ids) => {
                        let mut select = conn.prepare_cached(&format!(
                            "SELECT endpoint, {time}, {columns} FROM {table}
                             WHERE endpoint = ? AND {time} BETWEEN ? AND ?"
                        ))?;
                        for id in ids {
                            visit(&mut select.query(params![id, first, last])?)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The totals of every endpoint, by id; `days` are those of [`Parts::days`].
    fn totals(
        &self,
        conn: &Connection,
        days: &[Day],
        endpoints: usize,
    ) -> Result<FxHashMap<i64, Totals>> {
        let mut by_id: FxHashMap<i64, Totals> =
            FxHashMap::with_capacity_and_hasher(endpoints, Default::default());
        for day in days {
            for (id, totals) in day.totals.iter() {
                by_id.entry(*id).or_default().merge(totals);
            }
        }
        self.each_row(
            conn,
            "requests, errors, attacks, first_ts, last_ts, flows",
            None,
            true,
            |id, row| {
                let totals = by_id.entry(id).or_default();
                let flows = text(row, 7)?;
                totals.merge(&Totals {
                    requests: row.get::<_, i64>(2)? as u64,
                    errors: row.get::<_, i64>(3)? as u64,
                    attacks: row.get::<_, i64>(4)? as u64,
                    first_ts: row.get(5)?,
                    last_ts: row.get(6)?,
                    flows: BTreeSet::new(),
                });
                for flow in tally::split_list(flows) {
                    if !totals.flows.contains(flow) {
                        totals.flows.insert(flow.to_owned());
                    }
                }
                Ok(())
            },
        )?;
        for range in &self.requests {
            each_request(conn, *range, |id, request, flows| {
                let totals = by_id.entry(id).or_default();
                totals.merge(&Totals {
                    requests: 1,
                    errors: u64::from((400..600).contains(&request.status)),
                    attacks: u64::from(request.attack),
                    first_ts: request.ts,
                    last_ts: request.ts,
                    flows: BTreeSet::new(),
                });
                for flow in flows {
                    if !totals.flows.contains(*flow) {
                        totals.flows.insert((*flow).to_owned());
                    }
                }
            })?;
        }
        Ok(by_id)
    }

    /// The statistics of every endpoint, by id, as much as `part` needs of them, with the
    /// names of their flows; of those not `considered`, only the number of requests. `days`
    /// are those of [`Parts::days`], with the sketch of `part`.
    fn counted(
        &self,
        conn: &Connection,
        days: &[Day],
        part: Part,
        endpoints: usize,
        considered: &FxHashSet<i64>,
    ) -> Result<FxHashMap<i64, (Stats, BTreeSet<String>)>> {
        let mut by_id: FxHashMap<i64, (Stats, BTreeSet<String>)> =
            FxHashMap::with_capacity_and_hasher(endpoints, Default::default());
        for day in days {
            let sketches = day.sketches.as_deref().map_or(&[][..], Vec::as_slice);
            for (id, sketch) in sketches {
                let (stats, _) = by_id.entry(*id).or_default();
                if considered.contains(id) {
                    stats.merge(sketch);
                } else {
                    stats.requests += sketch.requests;
                }
            }
            for (id, totals) in day.totals.iter().filter(|(id, _)| considered.contains(id)) {
                let (_, flows) = by_id.entry(*id).or_default();
                for flow in &totals.flows {
                    if !flows.contains(flow) {
                        flows.insert(flow.clone());
                    }
                }
            }
        }
        self.each_row(conn, "requests, flows, stats", None, true, |id, row| {
            let (stats, flows) = by_id.entry(id).or_default();
            if !considered.contains(&id) {
                stats.requests += row.get::<_, i64>(2)? as u64;
                return Ok(());
            }
            stats.merge(&decode(row.get_ref(4)?.as_blob().map_err(rusqlite::Error::from)?, part)?);
            for flow in tally::split_list(text(row, 3)?) {
                if !flows.contains(flow) {
                    flows.insert(flow.to_owned());
                }
            }
            Ok(())
        })?;
        for range in &self.requests {
            each_request(conn, *range, |id, request, flows| {
                by_id.entry(id).or_default().0.add(request, flows.iter().copied());
            })?;
        }
        Ok(by_id)
    }

    /// The statistics of every endpoint, or of `only`, by id.
    fn stats(
        &self,
        conn: &Connection,
        only: Option<&HashSet<i64>>,
    ) -> Result<FxHashMap<i64, Stats>> {
        let mut by_id: FxHashMap<i64, Stats> = FxHashMap::default();
        // A few endpoints are read by the primary key, many by scanning the range.
        let few: Option<Vec<i64>> =
            only.filter(|ids| ids.len() <= FEW_ENDPOINTS).map(|ids| ids.iter().copied().collect());
        self.each_row(conn, "stats", few.as_deref(), false, |id, row| {
            if only.is_none_or(|ids| ids.contains(&id)) {
                let stats =
                    decode(row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?, Part::All)?;
                by_id.entry(id).or_default().merge(&stats);
            }
            Ok(())
        })?;
        for range in &self.requests {
            each_request(conn, *range, |id, request, flows| {
                if only.is_none_or(|ids| ids.contains(&id)) {
                    by_id.entry(id).or_default().add(request, flows.iter().copied());
                }
            })?;
        }
        Ok(by_id)
    }
}

/// Endpoints up to which their statistics are read one by one rather than by a scan.
const FEW_ENDPOINTS: usize = 2000;

pub fn measure(
    conn: &Connection,
    cache: &Cache,
    range: &EndpointRange,
    floor: i64,
) -> Result<Vec<Measured>> {
    let tx = conn.unchecked_transaction()?;
    let parts = Parts::read(&tx, range, floor)?;
    let catalog = cache.catalog(&tx)?;
    let by_id = match &range.only {
        None => parts.stats(&tx, None)?,
        Some(keys) => parts.stats(&tx, Some(&catalog.ids(keys.iter())))?,
    };
    Ok(catalog.measured(by_id))
}

pub fn ranking(
    conn: &Connection,
    cache: &Cache,
    range: &EndpointRange,
    floor: i64,
    rank: &mut dyn Rank,
) -> Result<Vec<Measured>> {
    let tx = conn.unchecked_transaction()?;
    let parts = Parts::read(&tx, range, floor)?;
    let catalog = cache.catalog(&tx)?;
    let part = rank.part();
    let days = cache.days(&tx, &parts.days, part, day_of(hour(floor)))?;
    let counted: Vec<Counted> = if part == Part::All {
        let mut totals = parts.totals(&tx, &days, catalog.len())?;
        catalog
            .endpoints
            .iter()
            .filter_map(|(id, endpoint)| {
                let totals = totals.remove(id).filter(|totals| totals.requests > 0)?;
                Some(Counted { endpoint: endpoint.clone(), totals, part: Stats::new() })
            })
            .collect()
    } else {
        let considered: FxHashSet<i64> = catalog
            .endpoints
            .iter()
            .filter(|(_, key)| rank.considers(key))
            .map(|(id, _)| *id)
            .collect();
        let mut counted = parts.counted(&tx, &days, part, catalog.len(), &considered)?;
        catalog
            .endpoints
            .iter()
            .filter_map(|(id, endpoint)| {
                let (stats, flows) = counted.remove(id).filter(|(s, _)| s.requests > 0)?;
                let mut totals = Totals::of(&stats);
                totals.flows.extend(flows);
                Some(Counted { endpoint: endpoint.clone(), totals, part: stats })
            })
            .collect()
    };
    let ids = catalog.ids(rank.pick(&counted).iter());
    // When all of them are wanted, the range is scanned without looking each one up.
    let some = ids.len() < counted.len();
    Ok(catalog.measured(parts.stats(&tx, some.then_some(&ids))?))
}

pub fn of_requests(conn: &Connection, requests: &[Cursor]) -> Result<Vec<Option<EndpointKey>>> {
    let mut select = conn.prepare_cached(
        "SELECT e.server, e.method, e.template FROM requests r JOIN endpoints e ON e.id = r.endpoint
         WHERE r.id = ?",
    )?;
    requests
        .iter()
        .map(|request| {
            let mut rows = select.query([request.id])?;
            Ok(match rows.next()? {
                Some(row) => Some(EndpointKey {
                    server: row.get(0)?,
                    method: row.get(1)?,
                    template: row.get(2)?,
                }),
                None => None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use api_sessions_core::record::{Record, SCHEMA_VERSION};
    use api_sessions_core::time::Millis;

    use super::*;
    use crate::batch::Batch;
    use crate::endpoints::Endpoints;
    use crate::store::signals::Detection;
    use crate::store::sqlite::write::{self, IngestJob};

    const DAY_MS: i64 = DAY_HOURS * HOUR_MS;

    /// Requests of a few endpoints and sessions over three days from `start`.
    fn records(start: i64) -> Vec<Record> {
        (0..900u64)
            .map(|n| {
                let ts = start + (n as i64 * 7_919_113) % (3 * DAY_MS);
                let session = format!("s{}", n % 41);
                Record {
                    v: SCHEMA_VERSION,
                    ts: Millis(ts),
                    request_id: format!("r{n}"),
                    node: "web-1".into(),
                    pid: 1,
                    seq: n,
                    session_id: session.clone(),
                    session_key: "cookie:sid".into(),
                    session_key_builtin: true,
                    key_hash: format!("key-{session}"),
                    session_start: Millis(start),
                    server: "api.example.com".into(),
                    method: ["GET", "POST"][(n % 2) as usize].into(),
                    path: format!("/x{}/{}", n % 3, n),
                    status: [200, 404, 500, 302][(n % 4) as usize],
                    duration_ms: (n % 101) as f64 * 1.7,
                    request_bytes: 10,
                    response_bytes: n * 31 % 9000,
                    ip: "192.0.2.1".into(),
                    user_agent: None,
                    user: None,
                    role: None,
                    flows: if n % 13 == 0 { vec!["billing".into()] } else { vec![] },
                    params: vec![],
                    attack: None,
                    truncated: vec![],
                    blocked: None,
                }
            })
            .collect()
    }

    /// A write of these records, as the module's writer would send them.
    fn job_of(records: &[Record]) -> IngestJob {
        let mut batch = Batch::default();
        for record in records {
            batch.push_record(record).unwrap();
        }
        IngestJob::new(batch, None, &Endpoints::default(), &Detection::Off)
    }

    fn expected(records: &[Record], from: i64, to: i64) -> Vec<(String, Stats)> {
        let mut all: BTreeMap<String, Stats> = BTreeMap::new();
        for r in records.iter().filter(|r| r.ts.0 >= from && r.ts.0 <= to) {
            let observation = Observation {
                ts: r.ts.0,
                status: r.status,
                duration_ms: r.duration_ms,
                response_bytes: r.response_bytes,
                session_id: &r.session_id,
                attack: false,
            };
            let key = format!("{} {}/{{id}}", r.method, r.path.rsplit_once('/').unwrap().0);
            all.entry(key).or_default().add(&observation, r.flows.iter().map(String::as_str));
        }
        all.into_iter().collect()
    }

    fn got(conn: &Connection, from: i64, to: i64) -> Vec<(String, Stats)> {
        let range = EndpointRange { from: Some(Millis(from)), to: Some(Millis(to)), only: None };
        let mut all: Vec<(String, Stats)> = measure(conn, &Cache::default(), &range, 0)
            .unwrap()
            .into_iter()
            .map(|m| (format!("{} {}", m.endpoint.method, m.endpoint.template), m.stats))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn marked(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM endpoint_dirty", [], |row| row.get(0)).unwrap()
    }

    /// Ranges across days, cut inside hours and days, and whole ones.
    fn ranges(start: i64) -> Vec<(i64, i64)> {
        let day = start - start.rem_euclid(DAY_MS) + DAY_MS;
        vec![
            (start, start + 3 * DAY_MS),
            (day, day + DAY_MS - 1),
            (day - 5 * HOUR_MS - 17, day + DAY_MS + 2 * HOUR_MS + 5),
            (day + 3 * HOUR_MS + 1, day + 3 * HOUR_MS + 7 * 60_000),
        ]
    }

    /// Statistics held back by the writer are counted from the requests while their hours are
    /// marked; a writer that died before writing them rebuilds them from the requests; both
    /// give exactly the statistics of the requests, and so do the written rows.
    #[test]
    fn held_back_statistics_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("e.db")).unwrap();
        schema::migrate(&mut conn).unwrap();
        let start = 1_700_000_000_000;
        let records = records(start);
        let mut writer = Writer::load(&conn).unwrap();
        let mut ids = write::Ids::default();
        for chunk in records.chunks(128) {
            let job = job_of(chunk);
            write::ingest(&mut conn, &mut ids, &mut writer, &mut [job], &Detection::Off).unwrap();
        }
        // Nothing written yet: every hour with requests is marked and read from them.
        assert!(writer.has_pending());
        let hours: i64 = conn
            .query_row("SELECT count(DISTINCT hour) FROM requests", [], |row| row.get(0))
            .unwrap();
        assert_eq!(marked(&conn), hours);
        let rows: i64 =
            conn.query_row("SELECT count(*) FROM endpoint_hours", [], |row| row.get(0)).unwrap();
        assert_eq!(rows, 0);
        for (from, to) in ranges(start) {
            assert_eq!(got(&conn, from, to), expected(&records, from, to), "{from}..{to}");
        }

        // The process dies: what the writer held is lost; the next one rebuilds it.
        drop(writer);
        let writer = Writer::load(&conn).unwrap();
        assert!(!writer.has_pending());
        assert_eq!(marked(&conn), 0);
        let days: i64 =
            conn.query_row("SELECT count(*) FROM endpoint_days", [], |row| row.get(0)).unwrap();
        assert!(days > 0);
        for (from, to) in ranges(start) {
            assert_eq!(got(&conn, from, to), expected(&records, from, to), "{from}..{to}");
        }
    }

    /// A flush writes hours and days that add up to the requests, and clears the marks.
    #[test]
    fn flushed_statistics_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("e.db")).unwrap();
        schema::migrate(&mut conn).unwrap();
        let start = 1_700_000_000_000 + 5 * HOUR_MS + 123;
        let records = records(start);
        let mut writer = Writer::load(&conn).unwrap();
        let mut ids = write::Ids::default();
        for (i, chunk) in records.chunks(100).enumerate() {
            let job = job_of(chunk);
            write::ingest(&mut conn, &mut ids, &mut writer, &mut [job], &Detection::Off).unwrap();
            // Flushes between some batches: the rows are read, added to and written back.
            if i % 3 == 1 {
                writer.flush(&mut conn).unwrap();
                assert_eq!(marked(&conn), 0);
            }
        }
        writer.flush(&mut conn).unwrap();
        assert!(!writer.has_pending());
        assert_eq!(marked(&conn), 0);
        for (from, to) in ranges(start) {
            assert_eq!(got(&conn, from, to), expected(&records, from, to), "{from}..{to}");
        }
        // The totals in the columns are those of the blobs.
        for table in ["endpoint_hours", "endpoint_days"] {
            let mut select = conn
                .prepare(&format!(
                    "SELECT requests, errors, attacks, first_ts, last_ts, flows, stats FROM {table}"
                ))
                .unwrap();
            let mut rows = select.query([]).unwrap();
            while let Some(row) = rows.next().unwrap() {
                let stats = decode(&row.get::<_, Vec<u8>>(6).unwrap(), Part::All).unwrap();
                let totals = Totals::of(&stats);
                assert_eq!(row.get::<_, i64>(0).unwrap() as u64, totals.requests);
                assert_eq!(row.get::<_, i64>(1).unwrap() as u64, totals.errors);
                assert_eq!(row.get::<_, i64>(2).unwrap() as u64, totals.attacks);
                assert_eq!(row.get::<_, i64>(3).unwrap(), totals.first_ts);
                assert_eq!(row.get::<_, i64>(4).unwrap(), totals.last_ts);
                let flows: String = row.get(5).unwrap();
                assert_eq!(flows, tally::join_list(totals.flows.iter().map(String::as_str)));
            }
        }
    }

    /// Takes every endpoint, and keeps what the store counted of them.
    struct TakeAll {
        part: Part,
        seen: Vec<Counted>,
    }

    impl Rank for TakeAll {
        fn part(&self) -> Part {
            self.part
        }

        fn considers(&self, endpoint: &EndpointKey) -> bool {
            endpoint.method == "GET"
        }

        fn pick(&mut self, counted: &[Counted]) -> Vec<EndpointKey> {
            self.seen = counted.to_vec();
            counted.iter().map(|c| c.endpoint.clone()).collect()
        }
    }

    /// What a list of the range sees and measures, through `cache`.
    fn ranked(
        conn: &Connection,
        cache: &Cache,
        range: &EndpointRange,
        part: Part,
    ) -> (Vec<Counted>, Vec<Measured>) {
        let mut rank = TakeAll { part, seen: Vec::new() };
        let measured = ranking(conn, cache, range, 0, &mut rank).unwrap();
        (rank.seen, measured)
    }

    /// A cache kept across batches, flushes, a crash and a purge answers as a new one does,
    /// which reads everything from the tables; and both as the requests say.
    #[test]
    fn kept_days_follow_the_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("e.db")).unwrap();
        schema::migrate(&mut conn).unwrap();
        let start = 1_700_000_000_000 + 7 * HOUR_MS;
        let records = records(start);
        let cache = Cache::default();
        let mut writer = Writer::load(&conn).unwrap();
        let mut ids = write::Ids::default();
        let mut ranges: Vec<EndpointRange> = ranges(start)
            .into_iter()
            .map(|(from, to)| EndpointRange {
                from: Some(Millis(from)),
                to: Some(Millis(to)),
                only: None,
            })
            .collect();
        ranges.push(EndpointRange { from: Some(Millis(start)), to: None, only: None });
        let parts = [Part::All, Part::Sessions, Part::Duration, Part::Size];
        let check = |conn: &Connection, cache: &Cache, what: &str, upto: usize| {
            for range in &ranges {
                for part in parts {
                    let kept = ranked(conn, cache, range, part);
                    let fresh = ranked(conn, &Cache::default(), range, part);
                    assert_eq!(kept, fresh, "{what}, {range:?}, {part:?}");
                    let (from, to) = (range.from.unwrap().0, range.to.map_or(i64::MAX, |to| to.0));
                    let want = expected(&records[..upto], from, to);
                    let measured: Vec<(String, Stats)> = kept
                        .1
                        .into_iter()
                        .map(|m| {
                            (format!("{} {}", m.endpoint.method, m.endpoint.template), m.stats)
                        })
                        .collect();
                    let mut measured = measured;
                    measured.sort_by(|a, b| a.0.cmp(&b.0));
                    assert_eq!(measured, want, "{what}, {range:?}, {part:?}");
                }
            }
        };
        // Every batch adds to every day; the cache is read between the batch and the flush
        // (the days are counted from their hours then) and after it.
        let chunks: Vec<&[Record]> = records.chunks(150).collect();
        let mut upto = 0;
        for (n, chunk) in chunks.iter().enumerate() {
            let job = job_of(chunk);
            write::ingest(&mut conn, &mut ids, &mut writer, &mut [job], &Detection::Off).unwrap();
            upto += chunk.len();
            check(&conn, &cache, &format!("batch {n}, held back"), upto);
            if n == 3 {
                // The writer dies with statistics held back; the next rebuilds them.
                drop(writer);
                writer = Writer::load(&conn).unwrap();
            } else {
                writer.flush(&mut conn).unwrap();
            }
            check(&conn, &cache, &format!("batch {n}, written"), upto);
        }
        assert_eq!(upto, records.len());
        assert!(!cache.lock().days.is_empty(), "days were kept");

        // A purge of the first day drops its endpoints' hours; the ranges start after it.
        let cutoff = start - start.rem_euclid(DAY_MS) + DAY_MS;
        conn.execute("DELETE FROM requests WHERE ts < ?", [cutoff]).unwrap();
        purge(&conn, cutoff).unwrap();
        let later = EndpointRange { from: Some(Millis(cutoff)), to: None, only: None };
        for part in parts {
            let kept = ranked(&conn, &cache, &later, part);
            assert_eq!(kept, ranked(&conn, &Cache::default(), &later, part), "{part:?}");
            assert!(!kept.0.is_empty());
        }
    }
}
