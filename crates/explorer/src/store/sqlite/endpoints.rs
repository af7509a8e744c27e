//! Endpoints in SQLite: each request row names its endpoint by a small integer id, and
//! `endpoint_hours` keeps the encoded [`Stats`] of each endpoint and hour, read, merged with what
//! a transaction adds, and written back by the writer.
//!
//! The writer keeps the cap's [`Registry`] and the ids of the endpoints in memory; both are
//! rebuilt from the tables when the writer starts, after a purge (which frees the places of
//! endpoints no longer called) and after a failed transaction (whose new endpoints were rolled
//! back).

use std::collections::HashMap;

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, Transaction};

use super::schema;
use super::tally;
use crate::endpoints::registry::{Limits, Registry};
use crate::endpoints::stats::{hour, Stats};
use crate::store::endpoints::{
    admit, Assignment, EndpointKey, HourPlan, HourStats, Measured, Merged,
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

/// The writer's view of the endpoints.
pub struct Writer {
    registry: Registry,
    ids: HashMap<EndpointKey, i64>,
}

impl Writer {
    pub fn load(conn: &Connection) -> Result<Writer> {
        let mut writer = Writer { registry: Registry::default(), ids: HashMap::new() };
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
        self.ids.insert(key, id);
        Ok(id)
    }
}

/// Adds what a transaction counted to the stored hours.
pub fn save_hours(tx: &Transaction<'_>, added: &HourStats<i64>) -> Result<()> {
    let mut select =
        tx.prepare_cached("SELECT stats FROM endpoint_hours WHERE endpoint = ? AND hour = ?")?;
    let mut upsert = tx.prepare_cached(
        "INSERT INTO endpoint_hours (endpoint, hour, stats) VALUES (?, ?, ?)
         ON CONFLICT (endpoint, hour) DO UPDATE SET stats = excluded.stats",
    )?;
    for ((endpoint, hour), stats) in &added.hours {
        let mut rows = select.query(params![endpoint, hour])?;
        let merged = match rows.next()? {
            Some(row) => {
                let mut stored = decode(&row.get::<_, Vec<u8>>(0)?)?;
                stored.merge(stats);
                stored
            }
            None => stats.clone(),
        };
        drop(rows);
        upsert.execute(params![endpoint, hour, merged.encode()])?;
    }
    Ok(())
}

fn decode(bytes: &[u8]) -> Result<Stats> {
    Stats::decode(bytes).map_err(|_| StoreError::new("unreadable endpoint statistics"))
}

/// After the requests older than `cutoff` are gone: the hours before the cutoff's, and the
/// endpoints left without any hour.
pub fn purge(conn: &Connection, cutoff: i64) -> Result<()> {
    conn.execute("DELETE FROM endpoint_hours WHERE hour < ?", [hour(cutoff)])?;
    conn.execute(
        "DELETE FROM endpoints WHERE NOT EXISTS
           (SELECT 1 FROM endpoint_hours h WHERE h.endpoint = endpoints.id)",
        [],
    )?;
    Ok(())
}

/// Every stored endpoint by id.
fn all(conn: &Connection) -> Result<HashMap<i64, EndpointKey>> {
    let mut select = conn.prepare_cached("SELECT id, server, method, template FROM endpoints")?;
    let rows = select.query_map([], |row| {
        Ok((
            row.get(0)?,
            EndpointKey { server: row.get(1)?, method: row.get(2)?, template: row.get(3)? },
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn measure(conn: &Connection, range: &EndpointRange, floor: i64) -> Result<Vec<Measured>> {
    let tx = conn.unchecked_transaction()?;
    let from = range.from.map_or(floor, |from| from.0.max(floor));
    let plan = HourPlan::new(from, range.to.map(|to| to.0));
    let mut names = all(&tx)?;
    if let Some(only) = &range.only {
        names.retain(|_, key| only.contains(key));
    }
    let mut merged = Merged::default();
    if let Some((first, last)) = plan.hours {
        let last = last.unwrap_or(i64::MAX);
        let mut add = |rows: &mut rusqlite::Rows<'_>| -> Result<()> {
            while let Some(row) = rows.next()? {
                if let Some(key) = names.get(&row.get::<_, i64>(0)?) {
                    merged.add(key.clone(), &decode(&row.get::<_, Vec<u8>>(1)?)?);
                }
            }
            Ok(())
        };
        match &range.only {
            None => {
                let mut select = tx.prepare_cached(
                    "SELECT endpoint, stats FROM endpoint_hours INDEXED BY endpoint_hours_hour
                     WHERE hour BETWEEN ? AND ?",
                )?;
                add(&mut select.query(params![first, last])?)?;
            }
            // A few endpoints: each one's hours, by the primary key.
            Some(_) => {
                let mut select = tx.prepare_cached(
                    "SELECT endpoint, stats FROM endpoint_hours
                     WHERE endpoint = ? AND hour BETWEEN ? AND ?",
                )?;
                for id in names.keys() {
                    add(&mut select.query(params![id, first, last])?)?;
                }
            }
        }
    }
    let mut edge = tx.prepare_cached(
        "SELECT r.endpoint, r.ts, r.status, r.duration_ms, r.response_bytes,
                r.attack IS NOT NULL, r.flows, s.session_id
         FROM requests r JOIN sessions s ON s.id = r.session
         WHERE r.id BETWEEN ? AND ? AND r.ts BETWEEN ? AND ? AND r.endpoint IS NOT NULL",
    )?;
    for (start, end) in &plan.edges {
        let bounds = [schema::first_id(*start), schema::last_id(*end), *start, *end];
        let mut rows = edge.query(params_from_iter(bounds.iter().map(|v| Value::Integer(*v))))?;
        while let Some(row) = rows.next()? {
            let Some(key) = names.get(&row.get::<_, i64>(0)?) else { continue };
            let session_id: String = row.get(7)?;
            let request = crate::endpoints::stats::Observation {
                ts: row.get(1)?,
                status: row.get(2)?,
                duration_ms: row.get::<_, Option<f64>>(3)?.unwrap_or(0.0),
                response_bytes: row.get::<_, Option<i64>>(4)?.unwrap_or(0).max(0) as u64,
                attack: row.get(5)?,
                session_id: &session_id,
            };
            let flows: String = row.get(6)?;
            let flows: Vec<&str> = tally::split_list(&flows).collect();
            merged.add_request(key.clone(), &request, &flows);
        }
    }
    Ok(merged.finish())
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
