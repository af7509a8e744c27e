//! The values seen in each session (see `store::values`): kept at ingest in `session_values`,
//! matched by the session-level filters, listed in the summaries, suggested to the filter
//! inputs.
//!
//! A row per session, kind and value holds the value's folded form and the times it was first
//! and last seen. The index on `(kind, folded)` (which carries the primary key, so the session)
//! finds the sessions of a value without reading the table; only sessions that also have
//! requests older than the retention look at the last time, which keeps a value seen only in
//! expired requests from matching until the purge removes it.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use rusqlite::types::Value;
use rusqlite::{params, Connection, Transaction};

use super::tally;
use crate::batch::RecordRef;
use crate::store::prefix_end;
use crate::store::values::{self, fold, ValueKind};
use crate::store::{Result, SessionSummary};

/// Migration 6. The indexes of the last user and role, and of the flows in list order, served
/// the filters this table now answers; dropped, they no longer cost every batch an update.
/// `session_flows.last_ts` is no longer kept up to date.
pub const SCHEMA: &str = "
    CREATE TABLE session_values (
        session  INTEGER NOT NULL,
        kind     INTEGER NOT NULL,
        value    TEXT    NOT NULL,
        folded   TEXT    NOT NULL,
        first_ts INTEGER NOT NULL,
        last_ts  INTEGER NOT NULL,
        PRIMARY KEY (session, kind, value)
    ) WITHOUT ROWID;
    CREATE INDEX session_values_folded ON session_values (kind, folded);
    DROP INDEX sessions_user;
    DROP INDEX sessions_role;
    DROP INDEX session_flows_flow;
";

/// Migration 6 in full: the table, and the values of every stored session.
pub fn migrate(tx: &Transaction<'_>) -> Result<()> {
    tx.execute_batch(SCHEMA)?;
    let sessions: Vec<i64> = tx
        .prepare("SELECT id FROM sessions")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for session in sessions {
        rebuild(tx, session)?;
    }
    Ok(())
}

/// The values a batch adds to one session: first and last time of each.
#[derive(Default)]
pub struct Seen<'b> {
    values: HashMap<(ValueKind, &'b str), (i64, i64)>,
}

impl<'b> Seen<'b> {
    pub fn add(&mut self, record: &RecordRef<'b>) {
        let ts = record.ts();
        values::of_record(record, |kind, value| match self.values.entry((kind, value)) {
            Entry::Occupied(mut entry) => {
                let (first, last) = entry.get_mut();
                *first = (*first).min(ts);
                *last = (*last).max(ts);
            }
            Entry::Vacant(entry) => {
                entry.insert((ts, ts));
            }
        });
    }

    pub fn save(&self, tx: &Transaction<'_>, session: i64) -> Result<()> {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO session_values (session, kind, value, folded, first_ts, last_ts)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (session, kind, value) DO UPDATE SET
                 first_ts = min(first_ts, excluded.first_ts),
                 last_ts = max(last_ts, excluded.last_ts)",
        )?;
        for ((kind, value), (first, last)) in &self.values {
            upsert.execute(params![session, kind.code(), value, fold(value), first, last])?;
        }
        Ok(())
    }
}

/// Rebuilds a session's values from the requests it has.
pub fn rebuild(tx: &Transaction<'_>, session: i64) -> Result<()> {
    tx.prepare_cached("DELETE FROM session_values WHERE session = ?")?.execute([session])?;
    let mut seen: HashMap<(ValueKind, String), (i64, i64)> = HashMap::new();
    {
        let mut select = tx.prepare_cached(
            "SELECT ts, user, role, flows, attack, json_extract(json, '$.user_agent')
             FROM requests WHERE session = ?",
        )?;
        let mut rows = select.query([session])?;
        while let Some(row) = rows.next()? {
            let ts: i64 = row.get(0)?;
            let mut add = |kind, value: &str| {
                let times = seen.entry((kind, value.to_owned())).or_insert((ts, ts));
                *times = (times.0.min(ts), times.1.max(ts));
            };
            for (column, kind) in
                [(1, ValueKind::User), (2, ValueKind::Role), (4, ValueKind::Attack)]
            {
                if let Some(value) = row.get::<_, Option<String>>(column)? {
                    add(kind, &value);
                }
            }
            for flow in tally::split_list(&row.get::<_, String>(3)?) {
                add(ValueKind::Flow, flow);
            }
            // A record's `user_agent` is a string or null; anything else is not one.
            if let Ok(Some(agent)) = row.get::<_, Option<String>>(5) {
                if !agent.is_empty() {
                    add(ValueKind::UserAgent, &agent);
                }
            }
        }
    }
    let mut insert = tx.prepare_cached(
        "INSERT INTO session_values (session, kind, value, folded, first_ts, last_ts)
         VALUES (?, ?, ?, ?, ?, ?)",
    )?;
    for ((kind, value), (first, last)) in &seen {
        insert.execute(params![session, kind.code(), value, fold(value), first, last])?;
    }
    Ok(())
}

/// How a condition on the values reaches `sessions s`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// `s.id IN (...)`: the set is built once, for a statement that runs once.
    Set,
    /// A correlated `EXISTS` probing the session's rows, for a statement run once per session
    /// (rebuilding the set each time would cost the whole set per session).
    Probe,
}

/// `folded = ?` or, for a part of the value, `instr(folded, ?) > 0`, on table alias `v`.
fn matching(kind: ValueKind) -> &'static str {
    if kind.matches_part() {
        "instr(v.folded, ?) > 0"
    } else {
        "v.folded = ?"
    }
}

/// Appends ` AND ...` conditions on `sessions s` selecting the sessions where a retained
/// request had a value of `kind` that matches `wanted`.
pub fn push_condition(
    sql: &mut String,
    params: &mut Vec<Value>,
    kind: ValueKind,
    wanted: &str,
    floor: i64,
    reach: Reach,
) {
    let (code, folded) = (Value::Integer(kind.code().into()), Value::Text(fold(wanted)));
    let matching = matching(kind);
    let probe = format!(
        "EXISTS (SELECT 1 FROM session_values v WHERE v.session = s.id AND v.kind = ? \
         AND {matching} AND v.last_ts >= ?)"
    );
    match reach {
        Reach::Set => {
            // The index alone says which sessions have the value; a session with expired
            // requests is probed for the value among its retained ones.
            sql.push_str(&format!(
                " AND s.id IN (SELECT v.session FROM session_values v \
                 INDEXED BY session_values_folded WHERE v.kind = ? AND {matching}) \
                 AND (s.first_ts >= ? OR {probe})"
            ));
            params.extend([
                code.clone(),
                folded.clone(),
                Value::Integer(floor),
                code,
                folded,
                Value::Integer(floor),
            ]);
        }
        Reach::Probe => {
            sql.push_str(" AND ");
            sql.push_str(&probe);
            params.extend([code, folded, Value::Integer(floor)]);
        }
    }
}

/// The stored spellings of the values of `kind` that fold as `wanted` does.
pub fn spellings(conn: &Connection, kind: ValueKind, wanted: &str) -> Result<Vec<String>> {
    let spellings = conn
        .prepare_cached(
            "SELECT DISTINCT value FROM session_values INDEXED BY session_values_folded
             WHERE kind = ? AND folded = ?",
        )?
        .query_map(params![kind.code(), fold(wanted)], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(spellings)
}

/// Fills the users and User-Agents of a summary, in order of first use, over the retained
/// requests.
pub fn load(
    conn: &Connection,
    session: i64,
    floor: i64,
    summary: &mut SessionSummary,
) -> Result<()> {
    let mut select = conn.prepare_cached(
        "SELECT kind, first_ts, value FROM session_values
         WHERE session = ? AND kind IN (?, ?) AND last_ts >= ?",
    )?;
    let mut rows = select.query(params![
        session,
        ValueKind::User.code(),
        ValueKind::UserAgent.code(),
        floor
    ])?;
    let (mut users, mut agents) = (Vec::new(), Vec::new());
    while let Some(row) = rows.next()? {
        let seen = (row.get::<_, i64>(1)?, row.get::<_, String>(2)?);
        if row.get::<_, u8>(0)? == ValueKind::User.code() {
            users.push(seen);
        } else {
            agents.push(seen);
        }
    }
    summary.users = values::in_order_of_first_use(users);
    summary.user_agents = values::in_order_of_first_use(agents);
    Ok(())
}

/// Up to `limit` values of `kind` that start with (for User-Agents: contain) `text`, one per
/// folded form, in folded order. Each is one seek along the index from the previous one, so
/// a value seen in many sessions costs no more than a rare one.
pub fn suggest(
    conn: &Connection,
    kind: ValueKind,
    text: &str,
    limit: usize,
    floor: i64,
) -> Result<Vec<String>> {
    let folded = fold(text);
    let mut sql = "SELECT v.folded, v.value FROM session_values v \
                   INDEXED BY session_values_folded \
                   WHERE v.kind = ? AND v.folded >= ? AND v.last_ts >= ?"
        .to_owned();
    let mut params = vec![Value::Integer(kind.code().into()), Value::Null, Value::Integer(floor)];
    let mut from = String::new();
    if kind.matches_part() {
        sql.push_str(" AND instr(v.folded, ?) > 0");
        params.push(Value::Text(folded));
    } else {
        if let Some(end) = prefix_end(&folded) {
            sql.push_str(" AND v.folded < ?");
            params.push(Value::Text(end));
        }
        from = folded;
    }
    sql.push_str(" ORDER BY v.folded LIMIT 1");
    let mut select = conn.prepare_cached(&sql)?;
    let mut found = Vec::new();
    while found.len() < limit {
        params[1] = Value::Text(from);
        let row: Option<(String, String)> = {
            let mut rows = select.query(rusqlite::params_from_iter(params.iter()))?;
            match rows.next()? {
                Some(row) => Some((row.get(0)?, row.get(1)?)),
                None => None,
            }
        };
        let Some((folded, value)) = row else { break };
        found.push(value);
        // The smallest text above `folded`.
        from = folded + "\0";
    }
    Ok(found)
}
