//! The sessions list: its order, its pages and its total.
//!
//! Without request-level predicates every sort key is a column (or expression) of `sessions`,
//! aggregated at ingest and indexed, so a page is an index walk from the cursor and the total a
//! count of `sessions` rows. With them, a session's key and its presence depend on which of its
//! requests are selected: the selected requests are walked once, counted per session, and the
//! sessions ranked in memory; the same walk gives the exact total. A time range alone walks
//! the sessions that overlap it instead, and only counts the requests of those that straddle
//! one of its ends.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, OptionalExtension};

use super::query::{summary, Driver, Predicates, Selection};
use super::schema;
use super::values::{self, Reach};
use crate::store::{Aggregates, ListQuery, Result, SessionKey, SessionPage, SortKey};

/// The `sessions s` column or expression a sort key orders by; each has an index whose
/// implicit trailing rowid breaks ties.
fn sort_column(key: SortKey) -> &'static str {
    match key {
        SortKey::Last => "s.last_ts",
        SortKey::First => "s.first_ts",
        SortKey::Requests => "s.requests",
        SortKey::Duration => "(s.last_ts - s.first_ts)",
        SortKey::Attacks => "s.attacks",
        SortKey::Risk => "s.risk",
    }
}

pub fn list(conn: &Connection, query: &ListQuery, floor: i64) -> Result<SessionPage> {
    let tx = conn.unchecked_transaction()?;
    let mut selection = Selection::new(&tx, &query.filter, floor)?;
    let (window, total) = match &mut selection {
        None => {
            let conditions = SessionConditions::new(query, floor);
            (query.window(conditions.page(&tx, query)?), conditions.count(&tx)?)
        }
        Some(selection) => {
            let counted = if selection.predicates.only_time {
                count_in_range(&tx, query, &selection.predicates, floor)?
            } else {
                count_selected(&tx, query, selection, floor)?
            };
            let total = counted.len() as u64;
            let keyed = counted
                .into_iter()
                .map(|(id, counts)| (SessionKey { value: query.sort.key.value(&counts), id }, id))
                .collect();
            (query.window(query.fetch(keyed)), total)
        }
    };
    let mut sessions = Vec::with_capacity(window.items.len());
    for id in window.items {
        // Each was found in this transaction.
        if let Some(session) = summary(&tx, id, selection.as_mut(), floor)? {
            sessions.push(session);
        }
    }
    Ok(SessionPage::new(sessions, total, (window.next, window.prev)))
}

/// The session-level conditions of a list on `sessions s`, retention included.
struct SessionConditions {
    sql: String,
    params: Vec<Value>,
}

impl SessionConditions {
    fn new(query: &ListQuery, floor: i64) -> Self {
        let mut conditions = SessionConditions {
            sql: "s.last_ts >= ?".to_owned(),
            params: vec![Value::Integer(floor)],
        };
        push_session_conditions(
            &mut conditions.sql,
            &mut conditions.params,
            &query.filter,
            floor,
            Reach::Set,
        );
        conditions
    }

    /// Up to one more than a page, in fetch order, from the cursor.
    fn page(&self, conn: &Connection, query: &ListQuery) -> Result<Vec<(SessionKey, i64)>> {
        let column = sort_column(query.sort.key);
        let mut sql = format!("SELECT s.id, {column} FROM sessions s WHERE {}", self.sql);
        let mut params = self.params.clone();
        if let Some(cursor) = query.cursor {
            sql.push_str(&format!(
                " AND ({column}, s.id) {} (?, ?)",
                cursor.sql_comparison(query.sort.order)
            ));
            params.extend([Value::Integer(cursor.key.value), Value::Integer(cursor.key.id)]);
        }
        let order = query.fetch_order().sql();
        sql.push_str(&format!(" ORDER BY {column} {order}, s.id {order} LIMIT ?"));
        params.push(Value::Integer(query.limit as i64 + 1));
        let rows = conn
            .prepare_cached(&sql)?
            .query_map(params_from_iter(params), |row| {
                let id = row.get(0)?;
                Ok((SessionKey { value: row.get(1)?, id }, id))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn count(&self, conn: &Connection) -> Result<u64> {
        let sql = format!("SELECT count(*) FROM sessions s WHERE {}", self.sql);
        let count: i64 = conn
            .prepare_cached(&sql)?
            .query_row(params_from_iter(&self.params), |row| row.get(0))?;
        Ok(count as u64)
    }
}

/// Appends the session-level conditions (risk, signal, and the values seen: user, role, flow,
/// User-Agent) on `sessions s`.
fn push_session_conditions(
    sql: &mut String,
    params: &mut Vec<Value>,
    filter: &crate::store::Filter,
    floor: i64,
    reach: Reach,
) {
    if let Some(risk) = filter.risk_min {
        sql.push_str(" AND s.risk >= ?");
        params.push(Value::Integer(risk.into()));
    }
    if let Some(signal) = &filter.signal {
        // `signals` holds the names of the session's findings, one per line.
        sql.push_str(
            " AND instr(char(10) || s.signals || char(10), char(10) || ? || char(10)) > 0",
        );
        params.push(Value::Text(signal.clone()));
    }
    for (kind, wanted) in filter.session_values() {
        values::push_condition(sql, params, kind, wanted, floor, reach);
    }
}

/// Tells whether a session passes the session-level filters.
struct SessionCheck<'c> {
    select: rusqlite::CachedStatement<'c>,
    values: Vec<Value>,
}

impl<'c> SessionCheck<'c> {
    /// `None` when no session-level filter is set.
    fn new(
        conn: &'c Connection,
        filter: &crate::store::Filter,
        floor: i64,
    ) -> Result<Option<Self>> {
        let mut sql = "SELECT 1 FROM sessions s WHERE s.id = ?".to_owned();
        let mut values = Vec::new();
        push_session_conditions(&mut sql, &mut values, filter, floor, Reach::Probe);
        if values.is_empty() {
            return Ok(None);
        }
        Ok(Some(SessionCheck { select: conn.prepare_cached(&sql)?, values }))
    }

    fn matches(&mut self, session: i64) -> Result<bool> {
        let params = std::iter::once(Value::Integer(session)).chain(self.values.iter().cloned());
        Ok(self.select.exists(params_from_iter(params))?)
    }
}

/// The selected requests of every session that passes the session-level filters, counted; the
/// attacks only when the list is sorted by them.
fn count_selected(
    conn: &Connection,
    query: &ListQuery,
    selection: &mut Selection,
    floor: i64,
) -> Result<Vec<(i64, Aggregates)>> {
    let mut check = SessionCheck::new(conn, &query.filter, floor)?;
    // The risk is the session's, not its selected requests': read once per session.
    let mut risk = match query.sort.key {
        SortKey::Risk => Some(conn.prepare_cached("SELECT risk FROM sessions WHERE id = ?")?),
        _ => None,
    };
    // `None` for a session the session-level filters reject.
    let mut counted: HashMap<i64, Option<Aggregates>> = HashMap::new();
    let attacks = query.sort.key == SortKey::Attacks;
    for_each_selected(conn, selection, attacks, |session, ts, malicious| {
        let counts = match counted.entry(session) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let passes = match &mut check {
                    Some(check) => check.matches(session)?,
                    None => true,
                };
                let risk = match (&mut risk, passes) {
                    (Some(select), true) => {
                        let risk: i64 = select.query_row([session], |row| row.get(0))?;
                        risk.clamp(0, 100) as u8
                    }
                    _ => 0,
                };
                entry.insert(passes.then_some(Aggregates { risk, ..Aggregates::default() }))
            }
        };
        if let Some(counts) = counts {
            counts.add(ts, malicious);
        }
        Ok(())
    })?;
    Ok(counted.into_iter().filter_map(|(id, counts)| Some((id, counts?))).collect())
}

/// The sessions with requests in the time range, counted, when the range is the only
/// request-level predicate. A session that lies wholly inside the range has all its requests
/// selected, so the aggregates of its row are the selected ones; only the sessions that
/// straddle an end of the range count theirs, along the session index within the range's ids.
fn count_in_range(
    conn: &Connection,
    query: &ListQuery,
    predicates: &Predicates,
    floor: i64,
) -> Result<Vec<(i64, Aggregates)>> {
    let (from, to) = (predicates.from, predicates.to.unwrap_or(i64::MAX));
    let mut sql = "SELECT s.id, s.first_ts, s.last_ts, s.requests, s.attacks, s.risk \
                   FROM sessions s WHERE s.last_ts >= ? AND s.first_ts <= ?"
        .to_owned();
    let mut params = vec![Value::Integer(from), Value::Integer(to)];
    push_session_conditions(&mut sql, &mut params, &query.filter, floor, Reach::Set);
    let mut counted = Vec::new();
    let mut straddling = Vec::new();
    {
        let mut select = conn.prepare_cached(&sql)?;
        let mut rows = select.query(params_from_iter(params))?;
        while let Some(row) = rows.next()? {
            let id = row.get(0)?;
            let (first_ts, last_ts) = (row.get(1)?, row.get(2)?);
            let risk = row.get::<_, i64>(5)?.clamp(0, 100) as u8;
            if from <= first_ts && last_ts <= to {
                let (requests, attacks) = (row.get::<_, i64>(3)?, row.get::<_, i64>(4)?);
                counted.push((
                    id,
                    Aggregates {
                        first_ts,
                        last_ts,
                        requests: requests as u64,
                        attacks: attacks as u64,
                        risk,
                    },
                ));
            } else {
                straddling.push((id, risk));
            }
        }
    }
    if straddling.is_empty() {
        return Ok(counted);
    }
    // Ids are in time order (see `schema::ID_SHIFT`): the range's requests are a range of ids.
    let ids = (schema::first_id(from), schema::last_id(to));
    let mut count = conn.prepare_cached(
        "SELECT count(*), min(r.id), max(r.id) FROM requests r INDEXED BY requests_session \
         WHERE r.session = ? AND r.id BETWEEN ? AND ?",
    )?;
    let mut time = conn.prepare_cached("SELECT ts FROM requests WHERE id = ?")?;
    // Attacks are rare: those of the whole range, by session, cost less than reading every
    // request of the straddling sessions.
    let attacks = match query.sort.key {
        SortKey::Attacks => attacks_in_range(conn, from, to)?,
        _ => HashMap::new(),
    };
    for (id, risk) in straddling {
        let (requests, first, last): (i64, Option<i64>, Option<i64>) = count
            .query_row((id, ids.0, ids.1), |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        let (Some(first), Some(last)) = (first, last) else { continue };
        let mut ts = |request: i64| time.query_row([request], |row| row.get::<_, i64>(0));
        counted.push((
            id,
            Aggregates {
                first_ts: ts(first)?,
                last_ts: ts(last)?,
                requests: requests as u64,
                attacks: attacks.get(&id).copied().unwrap_or(0),
                risk,
            },
        ));
    }
    Ok(counted)
}

/// The number of malicious requests of each session within `from..=to`, along the attack
/// index.
fn attacks_in_range(conn: &Connection, from: i64, to: i64) -> Result<HashMap<i64, u64>> {
    let mut select = conn.prepare_cached(
        "SELECT r.session FROM requests r INDEXED BY requests_attack \
         WHERE r.hour BETWEEN ? AND ? AND r.attack IS NOT NULL AND r.id BETWEEN ? AND ?",
    )?;
    let mut rows = select.query((
        schema::hour(from),
        schema::hour(to),
        schema::first_id(from),
        schema::last_id(to),
    ))?;
    let mut attacks = HashMap::new();
    while let Some(row) = rows.next()? {
        *attacks.entry(row.get::<_, i64>(0)?).or_insert(0) += 1;
    }
    Ok(attacks)
}

/// Calls `visit(session, ts, malicious)` for every selected request, along the most selective
/// index the predicates offer; `malicious` may be false for all of them unless `attacks`.
fn for_each_selected(
    conn: &Connection,
    selection: &mut Selection,
    attacks: bool,
    mut visit: impl FnMut(i64, i64, bool) -> Result<()>,
) -> Result<()> {
    let Selection { predicates, scan } = selection;
    let predicates = &*predicates;
    match (predicates.driver, scan) {
        // Along the table, in time order, within the time range.
        (Driver::Time, None) => {
            let sql = format!(
                "SELECT r.session, r.ts, r.attack IS NOT NULL FROM requests r WHERE 1{}",
                predicates.sql
            );
            let mut select = conn.prepare_cached(&sql)?;
            let mut rows = select.query(params_from_iter(predicates.bind([])))?;
            while let Some(row) = rows.next()? {
                visit(row.get(0)?, row.get(1)?, row.get(2)?)?;
            }
        }
        // The search index finds the texts; each hit is checked against all the predicates
        // (method, status class, and that it was not purged meanwhile).
        (Driver::Time, Some(scan)) => {
            let mut check = conn.prepare_cached(&format!(
                "SELECT r.attack IS NOT NULL FROM requests r WHERE r.id = ?{}",
                predicates.sql
            ))?;
            // With no predicate but those the index tests itself, a hit is selected unless
            // it was purged, and purges delete the oldest requests: the hits from the oldest
            // stored request on need no check, unless their attacks are counted.
            let unchecked = if predicates.only_time_and_text && !attacks {
                oldest(conn)?.unwrap_or(i64::MAX)
            } else {
                i64::MAX
            };
            for hour in scan.candidates().to_vec() {
                for hit in scan.hits(conn, hour)? {
                    if hit.id >= unchecked {
                        visit(hit.session, hit.ts, false)?;
                        continue;
                    }
                    let params = predicates.bind([Value::Integer(hit.id)]);
                    let mut rows = check.query(params_from_iter(params))?;
                    if let Some(row) = rows.next()? {
                        visit(hit.session, hit.ts, row.get(0)?)?;
                    }
                }
            }
        }
        (Driver::Attacks, _) => {
            let sql = format!(
                "SELECT r.session, r.ts, r.attack IS NOT NULL FROM requests r \
                 INDEXED BY requests_session_attack WHERE 1{}",
                predicates.sql
            );
            let mut select = conn.prepare_cached(&sql)?;
            let mut rows = select.query(params_from_iter(predicates.bind([])))?;
            while let Some(row) = rows.next()? {
                visit(row.get(0)?, row.get(1)?, row.get(2)?)?;
            }
        }
        // Hour by hour along an index that leads with the hour and a selective value.
        (Driver::Hourly(index), scan) => {
            let hours: Vec<i64> = match scan {
                Some(scan) => scan.candidates().to_vec(),
                None => {
                    let Some((oldest, newest)) = stored_span(conn, predicates.to)? else {
                        return Ok(());
                    };
                    // From the oldest stored request, not the floor: a long retention would
                    // otherwise mean one statement per empty hour.
                    (schema::hour(predicates.from.max(oldest))..=schema::hour(newest)).collect()
                }
            };
            let sql = format!(
                "SELECT r.session, r.ts, r.attack IS NOT NULL FROM requests r INDEXED BY {index} \
                 WHERE r.hour = ?{}",
                predicates.sql
            );
            let mut select = conn.prepare_cached(&sql)?;
            for hour in hours {
                let mut rows =
                    select.query(params_from_iter(predicates.bind([Value::Integer(hour)])))?;
                while let Some(row) = rows.next()? {
                    visit(row.get(0)?, row.get(1)?, row.get(2)?)?;
                }
            }
        }
    }
    Ok(())
}

/// The time of the newest request, at most `to`; `None` when there are no requests.
fn newest(conn: &Connection, to: Option<i64>) -> Result<Option<i64>> {
    let newest: Option<i64> = conn
        .prepare_cached("SELECT max(ts) FROM (SELECT ts FROM requests ORDER BY id DESC LIMIT 1)")?
        .query_row([], |row| row.get(0))?;
    Ok(newest.map(|newest| to.map_or(newest, |to| newest.min(to))))
}

/// The id of the oldest stored request; `None` when there are none.
fn oldest(conn: &Connection) -> Result<Option<i64>> {
    let oldest = conn
        .prepare_cached("SELECT id FROM requests ORDER BY id LIMIT 1")?
        .query_row([], |row| row.get(0))
        .optional()?;
    Ok(oldest)
}

/// The times of the oldest stored request and of the newest one up to `to`; `None` when there
/// are no requests.
fn stored_span(conn: &Connection, to: Option<i64>) -> Result<Option<(i64, i64)>> {
    let oldest: Option<i64> = conn
        .prepare_cached("SELECT min(ts) FROM (SELECT ts FROM requests ORDER BY id LIMIT 1)")?
        .query_row([], |row| row.get(0))?;
    Ok(oldest.zip(newest(conn, to)?))
}
