//! The reader side: the sessions list, one session, its requests.
//!
//! Each call runs in one read transaction, so a page is a consistent snapshot while a batch or a
//! purge commits next to it.

use std::collections::HashSet;

use api_sessions_core::time::Millis;
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, OptionalExtension};

use super::tally::{self, Tally};
use super::{schema, search, signals};
use crate::store::{
    risk_key, risk_of_key, AttackFilter, Cursor, Filter, RequestPage, Result, SessionDetail,
    SessionPage, SessionSummary, Sort, StatusFilter, StoredRequest, RELATED_LIMIT, TIMELINE_BINS,
};

/// Above this many sessions of one user or role, walking the requests in time order is
/// cheaper than ranking every candidate session.
const CANDIDATE_LIMIT: usize = 2000;

/// How to walk the selected requests newest first.
#[derive(Clone, Copy)]
enum Driver {
    /// Along the table (in time order, see `schema::ID_SHIFT`), skipping what the other
    /// predicates reject.
    Time,
    /// Hour by hour along an index that leads with `hour` and a selective value.
    Hourly(&'static str),
}

/// The request-level predicates of a filter as SQL over `requests r`, each `AND ...`.
struct Predicates {
    sql: String,
    params: Vec<Value>,
    driver: Driver,
    /// The time range, retention included.
    from: i64,
    to: Option<i64>,
}

impl Predicates {
    /// The walk uses the most selective index a predicate offers: request id, then IP, then
    /// attack, then status code.
    fn new(filter: &Filter, floor: i64) -> Self {
        let mut sql = String::new();
        let mut params = Vec::new();
        let mut add = |clause: &str, values: &[Value]| {
            sql.push_str(" AND ");
            sql.push_str(clause);
            params.extend_from_slice(values);
        };
        let text = |value: &str| Value::Text(value.to_owned());

        // The time range on `ts`, and on the id, which lets every index (each ends with the
        // id) and the table itself range over it.
        let from = filter.from.map_or(floor, |from| from.0.max(floor));
        add(
            "r.id >= ? AND r.ts >= ?",
            &[Value::Integer(schema::first_id(from)), Value::Integer(from)],
        );
        if let Some(to) = filter.to {
            add(
                "r.id <= ? AND r.ts <= ?",
                &[Value::Integer(schema::last_id(to.0)), Value::Integer(to.0)],
            );
        }
        if let Some(method) = &filter.method {
            add("r.method = ?", &[text(method)]);
        }
        if let Some(q) = &filter.q {
            add("instr(r.search, ?) > 0", &[text(&q.to_ascii_lowercase())]);
        }
        let mut driver = Driver::Time;
        if let Some(status) = filter.status {
            let (low, high) = status.range();
            if let StatusFilter::Code(_) = status {
                add("r.status = ?", &[Value::Integer(low.into())]);
                driver = Driver::Hourly("requests_status");
            } else {
                add(
                    "r.status BETWEEN ? AND ?",
                    &[Value::Integer(low.into()), Value::Integer(high.into())],
                );
            }
        }
        match &filter.attack {
            None => {}
            Some(AttackFilter::Any) => add("r.attack IS NOT NULL", &[]),
            Some(AttackFilter::Kind(kind)) => add("r.attack = ?", &[text(kind)]),
        }
        if filter.attack.is_some() {
            driver = Driver::Hourly("requests_attack");
        }
        if let Some(ip) = &filter.ip {
            add("r.ip = ?", &[text(ip)]);
            driver = Driver::Hourly("requests_ip");
        }
        if let Some(request_id) = &filter.request_id {
            add("r.request_id = ?", &[text(request_id)]);
            driver = Driver::Hourly("requests_request_id");
        }
        Predicates { sql, params, driver, from, to: filter.to.map(|to| to.0) }
    }

    /// The predicate parameters after `leading` ones.
    fn bind(&self, leading: impl IntoIterator<Item = Value>) -> Vec<Value> {
        leading.into_iter().chain(self.params.iter().cloned()).collect()
    }
}

/// A `sessions` row, with its counts as aggregated at ingest.
struct SessionRow {
    id: i64,
    summary: SessionSummary,
}

const SESSION_COLUMNS: &str = "id, session_id, key_hash, session_key, session_start, first_ts, \
                               last_ts, requests, attacks, user, role, nodes, risk, signals";

fn session_row(conn: &Connection, condition: &str, key: Value) -> Result<Option<SessionRow>> {
    let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE {condition}");
    let row = conn
        .prepare_cached(&sql)?
        .query_row([key], |row| {
            Ok(SessionRow {
                id: row.get(0)?,
                summary: SessionSummary {
                    session_id: row.get(1)?,
                    key_hash: row.get(2)?,
                    session_key: row.get(3)?,
                    session_start: Millis(row.get(4)?),
                    first_ts: Millis(row.get(5)?),
                    last_ts: Millis(row.get(6)?),
                    requests: row.get::<_, i64>(7)? as u64,
                    attacks: row.get::<_, i64>(8)? as u64,
                    user: row.get(9)?,
                    role: row.get(10)?,
                    nodes: tally::split_list(row.get_ref(11)?.as_str()?)
                        .map(str::to_owned)
                        .collect(),
                    flows: Default::default(),
                    ips: Vec::new(),
                    risk: row.get::<_, i64>(12)?.clamp(0, 100) as u8,
                    signals: tally::split_list(row.get_ref(13)?.as_str()?)
                        .map(str::to_owned)
                        .collect(),
                },
            })
        })
        .optional()?;
    Ok(row)
}

/// Fills the flows and IPs aggregated at ingest.
fn load_session_parts(conn: &Connection, row: &mut SessionRow) -> Result<()> {
    let mut flows =
        conn.prepare_cached("SELECT flow, requests FROM session_flows WHERE session = ?")?;
    let mut rows = flows.query([row.id])?;
    while let Some(flow) = rows.next()? {
        row.summary.flows.insert(flow.get(0)?, flow.get::<_, i64>(1)? as u64);
    }
    let mut ips = conn.prepare_cached("SELECT ip FROM session_ips WHERE session = ?")?;
    row.summary.ips = ips.query_map([row.id], |ip| ip.get(0))?.collect::<rusqlite::Result<_>>()?;
    Ok(())
}

/// Counts the requests of one session that `predicates` select.
fn tally(conn: &Connection, session: i64, predicates: &Predicates) -> Result<Tally> {
    tally_into(conn, session, predicates, Tally::default())
}

fn tally_into(
    conn: &Connection,
    session: i64,
    predicates: &Predicates,
    mut tally: Tally,
) -> Result<Tally> {
    let sql = format!(
        "SELECT {} FROM requests r INDEXED BY requests_session WHERE r.session = ?{}",
        tally::COLUMNS,
        predicates.sql
    );
    let mut select = conn.prepare_cached(&sql)?;
    let mut rows = select.query(params_from_iter(predicates.bind([Value::Integer(session)])))?;
    while let Some(row) = rows.next()? {
        tally.add(row)?;
    }
    Ok(tally)
}

/// Counts what is left of a session that has requests older than the retention, which the
/// next purge deletes: its counts, and its user and role, cover only the retained requests.
fn forget_expired(conn: &Connection, row: &mut SessionRow, floor: i64) -> Result<()> {
    let retained = tally(conn, row.id, &Predicates::new(&Filter::default(), floor))?;
    retained.apply_to(&mut row.summary);
    row.summary.user = retained.user.map(|(_, user)| user);
    row.summary.role = retained.role.map(|(_, role)| role);
    Ok(())
}

/// What selects requests in a list: the predicates, and for `q` the scan of the search index
/// shared by the walk and the tallies.
struct Selection {
    predicates: Predicates,
    scan: Option<search::Scan>,
}

impl Selection {
    /// `None` when the filter selects no requests.
    fn new(conn: &Connection, filter: &Filter, floor: i64) -> Result<Option<Self>> {
        if !filter.selects_requests() {
            return Ok(None);
        }
        let predicates = Predicates::new(filter, floor);
        let scan = match &filter.q {
            Some(q) => Some(search::Scan::new(
                conn,
                &q.to_ascii_lowercase(),
                predicates.from,
                predicates.to.unwrap_or(i64::MAX),
            )?),
            None => None,
        };
        Ok(Some(Selection { predicates, scan }))
    }

    /// Counts the selected requests of a session whose requests lie within `first..=last`.
    fn tally(&mut self, conn: &Connection, session: i64, first: i64, last: i64) -> Result<Tally> {
        let Some(scan) = &mut self.scan else {
            return tally(conn, session, &self.predicates);
        };
        // Only the requests the search index found can match; each is checked against every
        // predicate, as the session walk would.
        let sql = format!(
            "SELECT {} FROM requests r WHERE r.id = ? AND r.session = ?{}",
            tally::COLUMNS,
            self.predicates.sql
        );
        let mut select = conn.prepare_cached(&sql)?;
        let mut tally = Tally::default();
        for id in scan.session_hits(conn, session, first, last)? {
            let params = self.predicates.bind([Value::Integer(id), Value::Integer(session)]);
            let mut rows = select.query(params_from_iter(params))?;
            if let Some(row) = rows.next()? {
                tally.add(row)?;
            }
        }
        Ok(tally)
    }
}

/// The list entry of one session: counted over the selected requests, or straight from the
/// session row when nothing selects requests and none of them has expired.
fn summary(
    conn: &Connection,
    id: i64,
    selection: Option<&mut Selection>,
    floor: i64,
) -> Result<Option<SessionSummary>> {
    let Some(mut row) = session_row(conn, "id = ?", Value::Integer(id))? else {
        return Ok(None);
    };
    // Every request of the session lies within these, expired ones included.
    let (first, last) = (row.summary.first_ts.0, row.summary.last_ts.0);
    if first < floor {
        forget_expired(conn, &mut row, floor)?;
    } else if selection.is_none() {
        load_session_parts(conn, &mut row)?;
    }
    if let Some(selection) = selection {
        selection.tally(conn, id, first, last)?.apply_to(&mut row.summary);
    }
    Ok(Some(row.summary))
}

pub fn list(
    conn: &Connection,
    filter: &Filter,
    after: Option<Cursor>,
    limit: usize,
    floor: i64,
) -> Result<SessionPage> {
    let tx = conn.unchecked_transaction()?;
    let want = limit + 1;
    let mut selection = Selection::new(&tx, filter, floor)?;
    let mut keys = if filter.sort == Sort::Risk {
        let predicates = selection.as_ref().map(|selection| &selection.predicates);
        walk_by_risk(&tx, filter, predicates, after, want, floor)?
    } else {
        match &mut selection {
            Some(selection) => match candidate_sessions(&tx, filter, floor)? {
                Some(candidates) => {
                    rank_sessions(&tx, &candidates, &selection.predicates, after, want)?
                }
                None => walk_requests(&tx, filter, selection, after, want)?,
            },
            None => walk_sessions(&tx, filter, after, want, floor)?,
        }
    };
    let more = keys.len() > limit;
    keys.truncate(limit);

    let mut page = SessionPage { sessions: Vec::with_capacity(keys.len()), next_cursor: None };
    for key in &keys {
        page.sessions.extend(summary(&tx, key.id, selection.as_mut(), floor)?);
    }
    if more {
        page.next_cursor = keys.last().map(Cursor::to_string);
    }
    Ok(page)
}

/// Without request-level predicates: walk the sessions in list order.
fn walk_sessions(
    conn: &Connection,
    filter: &Filter,
    after: Option<Cursor>,
    want: usize,
    floor: i64,
) -> Result<Vec<Cursor>> {
    let mut params = Vec::new();
    let (mut sql, ts, id) = match &filter.flow {
        // `session_flows` carries the session's last_ts, so the flow index is in list order.
        Some(flow) => {
            params.push(Value::Text(flow.clone()));
            (
                "SELECT f.session, f.last_ts FROM session_flows f JOIN sessions s ON s.id = f.session \
                 WHERE f.flow = ? AND f.last_ts >= ?"
                    .to_owned(),
                "f.last_ts",
                "f.session",
            )
        }
        None => (
            "SELECT s.id, s.last_ts FROM sessions s WHERE s.last_ts >= ?".to_owned(),
            "s.last_ts",
            "s.id",
        ),
    };
    params.push(Value::Integer(floor));
    push_session_conditions(&mut sql, &mut params, filter);
    if let Some(cursor) = after {
        sql.push_str(&format!(" AND ({ts}, {id}) < (?, ?)"));
        params.extend([Value::Integer(cursor.ts), Value::Integer(cursor.id)]);
    }
    sql.push_str(&format!(" ORDER BY {ts} DESC, {id} DESC LIMIT ?"));
    params.push(Value::Integer(want as i64));

    let mut select = conn.prepare_cached(&sql)?;
    let keys = select
        .query_map(params_from_iter(params), |row| Ok(Cursor { id: row.get(0)?, ts: row.get(1)? }))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(keys)
}

/// Sessions in risk order, highest first (then most recently active), that have a request
/// `predicates` select, when there are predicates.
fn walk_by_risk(
    conn: &Connection,
    filter: &Filter,
    predicates: Option<&Predicates>,
    after: Option<Cursor>,
    want: usize,
    floor: i64,
) -> Result<Vec<Cursor>> {
    let mut sql = "SELECT s.id, s.risk, s.last_ts FROM sessions s WHERE s.last_ts >= ?".to_owned();
    let mut params = vec![Value::Integer(floor)];
    push_session_conditions(&mut sql, &mut params, filter);
    push_flow_condition(&mut sql, &mut params, filter);
    if let Some(cursor) = after {
        let (risk, ts) = risk_of_key(cursor.ts);
        sql.push_str(" AND (s.risk, s.last_ts, s.id) < (?, ?, ?)");
        params.extend([Value::Integer(risk.into()), Value::Integer(ts), Value::Integer(cursor.id)]);
    }
    sql.push_str(" ORDER BY s.risk DESC, s.last_ts DESC, s.id DESC");
    let mut any = match predicates {
        Some(predicates) => Some(conn.prepare_cached(&format!(
            "SELECT 1 FROM requests r INDEXED BY requests_session WHERE r.session = ?{} LIMIT 1",
            predicates.sql
        ))?),
        None => None,
    };
    let mut select = conn.prepare_cached(&sql)?;
    let mut rows = select.query(params_from_iter(params))?;
    let mut keys = Vec::new();
    while let Some(row) = rows.next()? {
        let (id, risk, last_ts): (i64, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        if let (Some(any), Some(predicates)) = (any.as_mut(), predicates) {
            if !any.exists(params_from_iter(predicates.bind([Value::Integer(id)])))? {
                continue;
            }
        }
        keys.push(Cursor { ts: risk_key(risk.clamp(0, 100) as u8, last_ts), id });
        if keys.len() == want {
            break;
        }
    }
    Ok(keys)
}

/// Appends the user, role, risk and signal conditions on `sessions s`.
fn push_session_conditions(sql: &mut String, params: &mut Vec<Value>, filter: &Filter) {
    if let Some(risk) = filter.risk_min {
        sql.push_str(" AND s.risk >= ?");
        params.push(Value::Integer(risk.into()));
    }
    if let Some(signal) = &filter.signal {
        // `signals` holds the names one per line.
        sql.push_str(
            " AND instr(char(10) || s.signals || char(10), char(10) || ? || char(10)) > 0",
        );
        params.push(Value::Text(signal.clone()));
    }
    if let Some(user) = &filter.user {
        sql.push_str(" AND s.user = ?");
        params.push(Value::Text(user.clone()));
    }
    if let Some(role) = &filter.role {
        sql.push_str(" AND s.role = ?");
        params.push(Value::Text(role.clone()));
    }
}

/// Appends the flow condition on `sessions s`.
fn push_flow_condition(sql: &mut String, params: &mut Vec<Value>, filter: &Filter) {
    if let Some(flow) = &filter.flow {
        sql.push_str(
            " AND EXISTS (SELECT 1 FROM session_flows f WHERE f.session = s.id AND f.flow = ?)",
        );
        params.push(Value::Text(flow.clone()));
    }
}

/// The sessions a user or role filter leaves, when they are few enough to rank one by one.
fn candidate_sessions(conn: &Connection, filter: &Filter, floor: i64) -> Result<Option<Vec<i64>>> {
    if filter.user.is_none() && filter.role.is_none() {
        return Ok(None);
    }
    let from = filter.from.map_or(floor, |from| from.0.max(floor));
    let mut sql = "SELECT s.id FROM sessions s WHERE s.last_ts >= ?".to_owned();
    let mut params = vec![Value::Integer(from)];
    if let Some(to) = filter.to {
        sql.push_str(" AND s.first_ts <= ?");
        params.push(Value::Integer(to.0));
    }
    push_session_conditions(&mut sql, &mut params, filter);
    push_flow_condition(&mut sql, &mut params, filter);
    sql.push_str(" LIMIT ?");
    params.push(Value::Integer(CANDIDATE_LIMIT as i64 + 1));
    let ids: Vec<i64> = conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(params), |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok((ids.len() <= CANDIDATE_LIMIT).then_some(ids))
}

/// Orders candidate sessions by their last selected request.
fn rank_sessions(
    conn: &Connection,
    candidates: &[i64],
    predicates: &Predicates,
    after: Option<Cursor>,
    want: usize,
) -> Result<Vec<Cursor>> {
    let sql = format!(
        "SELECT r.ts FROM requests r INDEXED BY requests_session WHERE r.session = ?{} \
         ORDER BY r.id DESC LIMIT 1",
        predicates.sql
    );
    let mut last = conn.prepare_cached(&sql)?;
    let mut keys = Vec::new();
    for &id in candidates {
        let ts: Option<i64> = last
            .query_row(params_from_iter(predicates.bind([Value::Integer(id)])), |row| row.get(0))
            .optional()?;
        if let Some(ts) = ts {
            let key = Cursor { ts, id };
            if after.is_none_or(|cursor| key < cursor) {
                keys.push(key);
            }
        }
    }
    keys.sort_unstable_by(|a, b| b.cmp(a));
    keys.truncate(want);
    Ok(keys)
}

/// Walks the selected requests newest first and collects their sessions in order of first
/// sight, which is the list order (newest selected request first).
fn walk_requests(
    conn: &Connection,
    filter: &Filter,
    selection: &mut Selection,
    after: Option<Cursor>,
    want: usize,
) -> Result<Vec<Cursor>> {
    let Selection { predicates, scan } = selection;
    let predicates = &*predicates;
    let mut collector = Collector {
        session_check: SessionCheck::new(conn, filter)?,
        later: conn.prepare_cached(&format!(
            "SELECT 1 FROM requests r INDEXED BY requests_session \
             WHERE r.session = ? AND r.id >= ? AND r.ts > ?{} LIMIT 1",
            predicates.sql
        ))?,
        predicates,
        after,
        want,
        seen: HashSet::new(),
        keys: Vec::new(),
    };
    let Some(newest) = newest(conn, predicates, after)? else {
        return Ok(Vec::new());
    };
    let below_cursor = if after.is_some() { " AND r.id <= ? AND r.ts <= ?" } else { "" };
    let cursor_bound =
        after.map(|cursor| [Value::Integer(schema::last_id(cursor.ts)), Value::Integer(cursor.ts)]);
    // The hours a walk by the hour or through the search index visits, newest first: those of
    // the time range up to `newest`, less those the search index rules out for `q`.
    let hours = |scan: Option<&search::Scan>| -> Vec<i64> {
        let (first, last) = (schema::hour(predicates.from), schema::hour(newest));
        match scan {
            Some(scan) => scan.candidates().iter().copied().filter(|&hour| hour <= last).collect(),
            None => (first..=last).rev().collect(),
        }
    };
    match (predicates.driver, scan) {
        // Newest first along the time index, until the page is full.
        (Driver::Time, None) => {
            let sql = format!(
                "SELECT r.session, r.ts FROM requests r \
                 WHERE 1{}{below_cursor} ORDER BY r.id DESC",
                predicates.sql
            );
            let mut select = conn.prepare_cached(&sql)?;
            let mut params = predicates.bind([]);
            params.extend(cursor_bound.into_iter().flatten());
            let mut rows = select.query(params_from_iter(params))?;
            while let Some(row) = rows.next()? {
                if collector.visit(row.get(0)?, row.get(1)?)? {
                    break;
                }
            }
        }
        // The search index finds the texts; each hit is checked against all the predicates
        // (method, status class, and that it was not purged meanwhile).
        (Driver::Time, Some(scan)) => {
            let mut check = conn.prepare_cached(&format!(
                "SELECT 1 FROM requests r WHERE r.id = ?{}",
                predicates.sql
            ))?;
            'search: for hour in hours(Some(scan)) {
                for hit in scan.hits(conn, hour)? {
                    if hit.ts > newest {
                        continue;
                    }
                    let selected = predicates.bind([Value::Integer(hit.id)]);
                    if check.exists(params_from_iter(selected))?
                        && collector.visit(hit.session, hit.ts)?
                    {
                        break 'search;
                    }
                }
            }
        }
        (Driver::Hourly(index), scan) => {
            let sql = format!(
                "SELECT r.session, r.ts FROM requests r INDEXED BY {index} \
                 WHERE r.hour = ?{}{below_cursor} ORDER BY r.id DESC",
                predicates.sql
            );
            let mut select = conn.prepare_cached(&sql)?;
            'hours: for hour in hours(scan.as_ref()) {
                let mut params = predicates.bind([Value::Integer(hour)]);
                params.extend(cursor_bound.clone().into_iter().flatten());
                let mut rows = select.query(params_from_iter(params))?;
                while let Some(row) = rows.next()? {
                    if collector.visit(row.get(0)?, row.get(1)?)? {
                        break 'hours;
                    }
                }
            }
        }
    }
    Ok(collector.into_keys())
}

/// The newest time a walk may see: that of the newest request, within the time range and
/// up to the cursor; `None` when there are no requests.
fn newest(
    conn: &Connection,
    predicates: &Predicates,
    after: Option<Cursor>,
) -> Result<Option<i64>> {
    let newest: Option<i64> = conn
        .prepare_cached("SELECT ts FROM requests ORDER BY id DESC LIMIT 1")?
        .query_row([], |row| row.get(0))
        .optional()?;
    Ok(newest.map(|newest| {
        [predicates.to, after.map(|cursor| cursor.ts)].into_iter().flatten().fold(newest, i64::min)
    }))
}

/// Collects sessions from selected requests seen newest first.
struct Collector<'c, 'p> {
    session_check: Option<SessionCheck<'c>>,
    /// Whether a session has a selected request after a time: a session first seen below the
    /// cursor may still have one above it, which put it on an earlier page.
    later: rusqlite::CachedStatement<'c>,
    predicates: &'p Predicates,
    after: Option<Cursor>,
    want: usize,
    seen: HashSet<i64>,
    keys: Vec<Cursor>,
}

impl Collector<'_, '_> {
    /// The page's keys in list order.
    fn into_keys(self) -> Vec<Cursor> {
        let mut keys = self.keys;
        keys.sort_unstable_by(|a, b| b.cmp(a));
        keys.truncate(self.want);
        keys
    }

    /// Takes the request at `ts` of session `id`; true once nothing further can change the
    /// page.
    fn visit(&mut self, id: i64, ts: i64) -> Result<bool> {
        // Once enough sessions are collected, only ties of the last one can still sort
        // before it.
        if self.keys.len() >= self.want && self.keys.last().is_some_and(|last| ts < last.ts) {
            return Ok(true);
        }
        if !self.seen.insert(id) {
            return Ok(false);
        }
        if let Some(check) = self.session_check.as_mut() {
            if !check.matches(id)? {
                return Ok(false);
            }
        }
        if let Some(cursor) = self.after {
            if ts == cursor.ts && id >= cursor.id {
                return Ok(false);
            }
            let bound = [
                Value::Integer(id),
                Value::Integer(schema::first_id(cursor.ts + 1)),
                Value::Integer(cursor.ts),
            ];
            if self.later.exists(params_from_iter(self.predicates.bind(bound)))? {
                return Ok(false);
            }
        }
        self.keys.push(Cursor { ts, id });
        Ok(false)
    }
}

/// Tells whether a session passes the session-level filters (user, role, flow).
struct SessionCheck<'c> {
    select: rusqlite::CachedStatement<'c>,
    values: Vec<Value>,
}

impl<'c> SessionCheck<'c> {
    /// `None` when no session-level filter is set.
    fn new(conn: &'c Connection, filter: &Filter) -> Result<Option<Self>> {
        if filter.user.is_none()
            && filter.role.is_none()
            && filter.flow.is_none()
            && !filter.selects_detection()
        {
            return Ok(None);
        }
        let mut sql = "SELECT 1 FROM sessions s WHERE s.id = ?".to_owned();
        let mut values = Vec::new();
        push_session_conditions(&mut sql, &mut values, filter);
        push_flow_condition(&mut sql, &mut values, filter);
        Ok(Some(SessionCheck { select: conn.prepare_cached(&sql)?, values }))
    }

    fn matches(&mut self, session: i64) -> Result<bool> {
        let params = std::iter::once(Value::Integer(session)).chain(self.values.iter().cloned());
        Ok(self.select.exists(params_from_iter(params))?)
    }
}

pub fn session(
    conn: &Connection,
    session_id: &str,
    filter: &Filter,
    after: Option<Cursor>,
    limit: usize,
    floor: i64,
    window_hours: u32,
) -> Result<Option<SessionDetail>> {
    let tx = conn.unchecked_transaction()?;
    let Some(mut row) = session_row(&tx, "session_id = ?", Value::Text(session_id.to_owned()))?
    else {
        return Ok(None);
    };
    if row.summary.last_ts.0 < floor {
        return Ok(None);
    }
    if row.summary.first_ts.0 < floor {
        forget_expired(&tx, &mut row, floor)?;
    }
    let predicates = Predicates::new(filter, floor);
    let tally = tally_into(&tx, row.id, &predicates, Tally::with_timeline())?;
    tally.apply_to(&mut row.summary);
    let timeline = tally.timeline(TIMELINE_BINS);

    let related = tx
        .prepare_cached(
            "SELECT session_id FROM sessions WHERE key_hash = ? AND id != ? AND last_ts >= ?
             ORDER BY last_ts DESC LIMIT ?",
        )?
        .query_map((&row.summary.key_hash, row.id, floor, RELATED_LIMIT as i64), |related| {
            related.get(0)
        })?
        .collect::<rusqlite::Result<_>>()?;
    let requests = request_page(&tx, row.id, &predicates, after, limit)?;
    let detection = signals::session(&tx, row.id, row.summary.risk, window_hours, floor)?;
    Ok(Some(SessionDetail {
        session: row.summary,
        stats: tally.stats,
        timeline,
        related,
        requests,
        detection,
    }))
}

pub fn session_requests(
    conn: &Connection,
    session_id: &str,
    filter: &Filter,
    after: Option<Cursor>,
    limit: usize,
    floor: i64,
) -> Result<Option<RequestPage>> {
    let tx = conn.unchecked_transaction()?;
    let Some(row) = session_row(&tx, "session_id = ?", Value::Text(session_id.to_owned()))? else {
        return Ok(None);
    };
    if row.summary.last_ts.0 < floor {
        return Ok(None);
    }
    request_page(&tx, row.id, &Predicates::new(filter, floor), after, limit).map(Some)
}

fn request_page(
    conn: &Connection,
    session: i64,
    predicates: &Predicates,
    after: Option<Cursor>,
    limit: usize,
) -> Result<RequestPage> {
    let mut sql = format!(
        "SELECT r.id, r.ts, r.json FROM requests r INDEXED BY requests_session \
         WHERE r.session = ?{}",
        predicates.sql
    );
    let mut params = predicates.bind([Value::Integer(session)]);
    // Ids are in time order: the next page starts after the last id shown.
    if let Some(cursor) = after {
        sql.push_str(" AND r.id > ?");
        params.push(Value::Integer(cursor.id));
    }
    sql.push_str(" ORDER BY r.id LIMIT ?");
    params.push(Value::Integer(limit as i64 + 1));

    let mut select = conn.prepare_cached(&sql)?;
    let requests: Vec<StoredRequest> = select
        .query_map(params_from_iter(params), |row| {
            Ok(StoredRequest {
                position: Cursor { id: row.get(0)?, ts: row.get(1)? },
                json: row.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(RequestPage::from_fetched(requests, limit))
}
