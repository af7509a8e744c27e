//! The reader side: the sessions list, one session, its requests.
//!
//! Each call runs in one read transaction, so a page is a consistent snapshot while a batch or a
//! purge commits next to it.

use api_sessions_core::time::Millis;
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, OptionalExtension};

use super::tally::{self, Tally};
use super::{schema, search, signals, values};
use crate::store::values::ValueKind;
use crate::store::{
    prefix_end, AttackFilter, Cursor, Filter, RequestPage, Result, SessionDetail, SessionSummary,
    StatusFilter, StoredRequest, RELATED_LIMIT, TIMELINE_BINS,
};

/// How to walk the selected requests newest first.
#[derive(Clone, Copy)]
pub(super) enum Driver {
    /// Along the table (in time order, see `schema::ID_SHIFT`), skipping what the other
    /// predicates reject.
    Time,
    /// Hour by hour along an index that leads with `hour` and a selective value.
    Hourly(&'static str),
    /// Along the index of the malicious requests, which holds the session and time of each:
    /// they are few, and read without the table when nothing else is asked of them.
    Attacks,
}

/// The request-level predicates of a filter as SQL over `requests r`, each `AND ...`.
pub(super) struct Predicates {
    pub(super) sql: String,
    params: Vec<Value>,
    pub(super) driver: Driver,
    /// The index that walks the selected requests of one session.
    pub(super) session_index: &'static str,
    /// Whether the time range is the only predicate: a session that lies wholly inside it then
    /// has every request selected.
    pub(super) only_time: bool,
    /// Whether the time range and `q` are the only predicates, which the search index tests
    /// itself.
    pub(super) only_time_and_text: bool,
    /// The time range, retention included.
    pub(super) from: i64,
    pub(super) to: Option<i64>,
}

impl Predicates {
    /// The walk uses the most selective index a predicate offers: request id, then IP, then
    /// attack, then status code, then endpoint.
    fn new(conn: &Connection, filter: &Filter, floor: i64) -> Result<Self> {
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
        // Stated for every attack filter, so that the partial indexes of the malicious
        // requests serve them.
        match &filter.attack {
            None => {}
            Some(AttackFilter::Any) => add("r.attack IS NOT NULL", &[]),
            Some(AttackFilter::Kind(kind)) => {
                // Each stored spelling of the type, so that the attack index is walked for each.
                // None stored: the type as given, which no request has (a condition that is
                // false as written would leave the index walk no plan).
                let mut spellings = values::spellings(conn, ValueKind::Attack, kind)?;
                if spellings.is_empty() {
                    spellings.push(kind.clone());
                }
                let marks = vec!["?"; spellings.len()].join(", ");
                let spellings: Vec<Value> = spellings.into_iter().map(Value::Text).collect();
                add(&format!("r.attack IS NOT NULL AND r.attack IN ({marks})"), &spellings);
            }
        }
        if filter.attack.is_some() {
            driver = Driver::Attacks;
        }
        if let Some(ip) = &filter.ip {
            add("r.ip = ?", &[text(ip)]);
            driver = Driver::Hourly("requests_ip");
        }
        if let Some(endpoint) = filter.endpoint.as_deref().and_then(crate::endpoints::parse_key) {
            add(
                "r.endpoint IN (SELECT id FROM endpoints WHERE method = ? AND template = ?)",
                &[text(endpoint.0), text(endpoint.1)],
            );
            if matches!(driver, Driver::Time) {
                driver = Driver::Hourly("requests_endpoint");
            }
        }
        if let Some(request_id) = &filter.request_id {
            add("r.request_id = ?", &[text(request_id)]);
            driver = Driver::Hourly("requests_request_id");
        }
        let only_time_and_text = filter.method.is_none()
            && filter.status.is_none()
            && filter.attack.is_none()
            && filter.ip.is_none()
            && filter.endpoint.is_none()
            && filter.request_id.is_none();
        // A session's malicious requests are few: their own index reads only them.
        let session_index = match filter.attack {
            Some(_) => "requests_session_attack",
            None => "requests_session",
        };
        Ok(Predicates {
            sql,
            params,
            driver,
            session_index,
            only_time: only_time_and_text && filter.q.is_none(),
            only_time_and_text,
            from,
            to: filter.to.map(|to| to.0),
        })
    }

    /// The predicate parameters after `leading` ones.
    pub(super) fn bind(&self, leading: impl IntoIterator<Item = Value>) -> Vec<Value> {
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
                    users: Vec::new(),
                    role: row.get(10)?,
                    nodes: tally::split_list(row.get_ref(11)?.as_str()?)
                        .map(str::to_owned)
                        .collect(),
                    flows: Default::default(),
                    ips: Vec::new(),
                    user_agents: Vec::new(),
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
        "SELECT {} FROM requests r INDEXED BY {} WHERE r.session = ?{}",
        tally::COLUMNS,
        predicates.session_index,
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
    let retained = tally(conn, row.id, &Predicates::new(conn, &Filter::default(), floor)?)?;
    retained.apply_to(&mut row.summary);
    row.summary.user = retained.user.map(|(_, user)| user);
    row.summary.role = retained.role.map(|(_, role)| role);
    Ok(())
}

/// What selects requests in a list: the predicates, and for `q` the scan of the search index
/// shared by the walk and the tallies.
pub(super) struct Selection {
    pub(super) predicates: Predicates,
    pub(super) scan: Option<search::Scan>,
}

impl Selection {
    /// `None` when the filter selects no requests.
    pub(super) fn new(conn: &Connection, filter: &Filter, floor: i64) -> Result<Option<Self>> {
        if !filter.selects_requests() {
            return Ok(None);
        }
        let predicates = Predicates::new(conn, filter, floor)?;
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

    /// Whether every request of a session whose requests lie within `first..=last` is selected.
    pub(super) fn covers(&self, first: i64, last: i64) -> bool {
        let predicates = &self.predicates;
        predicates.only_time
            && predicates.from <= first
            && predicates.to.is_none_or(|to| last <= to)
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
/// session row when all its requests are selected (or nothing selects requests) and none of
/// them has expired.
pub(super) fn summary(
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
    // A selection that takes every request of the session counts what ingest aggregated.
    let selecting = selection.is_some();
    let selection = selection.filter(|selection| !selection.covers(first, last));
    if first < floor {
        forget_expired(conn, &mut row, floor)?;
    } else if selection.is_none() {
        load_session_parts(conn, &mut row)?;
    }
    values::load(conn, id, floor, &mut row.summary)?;
    match selection {
        Some(selection) => selection.tally(conn, id, first, last)?.apply_to(&mut row.summary),
        // In the order a tally lists them, rather than the order of arrival.
        None if selecting => row.summary.nodes.sort_unstable(),
        None => {}
    }
    Ok(Some(row.summary))
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
    values::load(&tx, row.id, floor, &mut row.summary)?;
    let predicates = Predicates::new(&tx, filter, floor)?;
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
    let mut requests = request_page(&tx, row.id, &predicates, after, limit)?;
    if let Some(cursor) = after {
        let sql = format!(
            "SELECT count(*) FROM requests r INDEXED BY {} WHERE r.session = ?{} AND r.id <= ?",
            predicates.session_index, predicates.sql
        );
        let mut params = predicates.bind([Value::Integer(row.id)]);
        params.push(Value::Integer(cursor.id));
        let before: i64 =
            tx.prepare_cached(&sql)?.query_row(params_from_iter(params), |row| row.get(0))?;
        requests.offset = before as u64;
    }
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

pub fn session_ids_with_prefix(
    conn: &Connection,
    prefix: &str,
    limit: usize,
    floor: i64,
) -> Result<Vec<String>> {
    let mut sql =
        "SELECT session_id FROM sessions WHERE session_id >= ? AND last_ts >= ?".to_owned();
    let mut params = vec![Value::Text(prefix.to_owned()), Value::Integer(floor)];
    if let Some(end) = prefix_end(prefix) {
        sql.push_str(" AND session_id < ?");
        params.push(Value::Text(end));
    }
    sql.push_str(" ORDER BY session_id LIMIT ?");
    params.push(Value::Integer(limit as i64));
    let ids = conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(params), |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
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
    request_page(&tx, row.id, &Predicates::new(&tx, filter, floor)?, after, limit).map(Some)
}

fn request_page(
    conn: &Connection,
    session: i64,
    predicates: &Predicates,
    after: Option<Cursor>,
    limit: usize,
) -> Result<RequestPage> {
    let mut sql = format!(
        "SELECT r.id, r.ts, r.json FROM requests r INDEXED BY {} WHERE r.session = ?{}",
        predicates.session_index, predicates.sql
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
