//! The values seen in each session (see `store::values`), in `session_values`: written with
//! each batch, matched by the session-level filters, listed in the summaries, suggested to the
//! filter inputs.
//!
//! A row holds one value of one session over one day of its requests: its folded form (for
//! matching), and the first and last time it was seen that day. Sorted by kind and folded
//! value, finding the sessions of a value reads a few granules; partitioned by day like
//! `requests`, the purge drops the values of the requests it drops, and a value is retained
//! exactly while one of its days' last times is.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::http::Client;
use super::schema::DAY_MS;
use super::sql::{literal, literals};
use crate::batch::RecordRef;
use crate::store::values::{self, fold, ValueKind};
use crate::store::{prefix_end, Result, StoreError};

/// Migration 4: the table, then the values of the requests stored before it, folded by
/// ClickHouse's `lowerUTF8` (new values are folded as the SQLite store folds them; the two
/// agree but on a few special cases of Unicode). Run again after an interruption, a statement
/// only adds rows that say again what others say.
pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS session_values (
        kind       UInt8,
        folded     String,
        value      String,
        session_id String,
        first_ts   Int64,
        last_ts    Int64
    ) ENGINE = MergeTree
    PARTITION BY intDiv(last_ts, 86400000)
    ORDER BY (kind, folded, session_id)",
    "INSERT INTO session_values
     SELECT 0, lowerUTF8(assumeNotNull(user)), assumeNotNull(user), session_id, min(ts), max(ts)
     FROM requests WHERE user IS NOT NULL
     GROUP BY session_id, user, intDiv(ts, 86400000)",
    "INSERT INTO session_values
     SELECT 1, lowerUTF8(assumeNotNull(role)), assumeNotNull(role), session_id, min(ts), max(ts)
     FROM requests WHERE role IS NOT NULL
     GROUP BY session_id, role, intDiv(ts, 86400000)",
    "INSERT INTO session_values
     SELECT 2, lowerUTF8(flow), flow, session_id, min(ts), max(ts)
     FROM requests ARRAY JOIN flows AS flow
     GROUP BY session_id, flow, intDiv(ts, 86400000)",
    "INSERT INTO session_values
     SELECT 3, lowerUTF8(assumeNotNull(attack)), assumeNotNull(attack), session_id, min(ts),
            max(ts)
     FROM requests WHERE attack IS NOT NULL
     GROUP BY session_id, attack, intDiv(ts, 86400000)",
    // The record's own `user_agent`: the only key of that name in a record.
    "INSERT INTO session_values
     SELECT 4, lowerUTF8(agent), agent, session_id, min(ts), max(ts)
     FROM (SELECT session_id, ts, visitParamExtractString(json, 'user_agent') AS agent
           FROM requests)
     WHERE agent != ''
     GROUP BY session_id, agent, intDiv(ts, 86400000)",
];

/// One `session_values` row, as `JSONEachRow` wants it.
#[derive(Serialize)]
struct Row<'b> {
    kind: u8,
    folded: String,
    value: &'b str,
    session_id: &'b str,
    first_ts: i64,
    last_ts: i64,
}

/// The values of a batch's stored records, per session and day.
#[derive(Default)]
pub struct Seen<'b> {
    values: HashMap<(&'b str, ValueKind, &'b str, i64), (i64, i64)>,
}

impl<'b> Seen<'b> {
    pub fn add(&mut self, record: &RecordRef<'b>) {
        let (session, ts) = (record.session_id(), record.ts());
        // Rounded toward zero, like the partition key.
        let day = ts / DAY_MS;
        values::of_record(record, |kind, value| {
            match self.values.entry((session, kind, value, day)) {
                Entry::Occupied(mut entry) => {
                    let (first, last) = entry.get_mut();
                    *first = (*first).min(ts);
                    *last = (*last).max(ts);
                }
                Entry::Vacant(entry) => {
                    entry.insert((ts, ts));
                }
            }
        });
    }

    /// Inserts the rows, one insert per day (a partition).
    pub fn save(self, client: &Client) -> Result<()> {
        let mut days: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
        for ((session_id, kind, value, day), (first_ts, last_ts)) in self.values {
            let row = Row {
                kind: kind.code(),
                folded: fold(value),
                value,
                session_id,
                first_ts,
                last_ts,
            };
            let body = days.entry(day).or_default();
            serde_json::to_writer(&mut *body, &row)
                .map_err(|err| StoreError::new(err.to_string()))?;
            body.push(b'\n');
        }
        for body in days.values() {
            client.insert("session_values", body)?;
        }
        Ok(())
    }
}

/// `folded = '...'` or, for a part of the value, `position(folded, '...') > 0`.
fn matching(kind: ValueKind, wanted: &str) -> String {
    let folded = literal(&fold(wanted));
    if kind.matches_part() {
        format!("position(folded, {folded}) > 0")
    } else {
        format!("folded = {folded}")
    }
}

/// ` AND session_id IN (...)`: the sessions where a retained request had a value of `kind` that
/// matches `wanted`.
pub fn predicate(kind: ValueKind, wanted: &str, floor: i64) -> String {
    format!(
        " AND session_id IN (SELECT session_id FROM session_values \
         WHERE kind = {} AND {} AND last_ts >= {floor})",
        kind.code(),
        matching(kind, wanted)
    )
}

/// ` AND attack IN (...)`: the attack types stored that fold to `kind`'s folded form.
pub fn attack_predicate(kind: &str) -> String {
    format!(
        " AND attack IN (SELECT value FROM session_values WHERE kind = {} AND folded = {})",
        ValueKind::Attack.code(),
        literal(&fold(kind))
    )
}

/// A session's users and its User-Agents.
type UsersAndAgents<T> = (Vec<T>, Vec<T>);

/// The users and User-Agents of some sessions, each in order of first use, over their
/// retained requests.
pub fn users_and_agents(
    client: &Client,
    ids: &[&str],
    floor: i64,
) -> Result<HashMap<String, UsersAndAgents<String>>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    #[derive(Deserialize)]
    struct Seen {
        session_id: String,
        kind: u8,
        value: String,
        first: i64,
    }
    let rows: Vec<Seen> = client.rows(&format!(
        "SELECT session_id, kind, value, min(first_ts) AS first FROM session_values
         WHERE kind IN ({}, {}) AND session_id IN ({}) AND last_ts >= {floor}
         GROUP BY session_id, kind, value",
        ValueKind::User.code(),
        ValueKind::UserAgent.code(),
        literals(ids.iter().copied())
    ))?;
    // With the time each was first seen.
    let mut seen: HashMap<String, UsersAndAgents<(i64, String)>> = HashMap::new();
    for row in rows {
        let (users, agents) = seen.entry(row.session_id).or_default();
        if row.kind == ValueKind::User.code() {
            users.push((row.first, row.value));
        } else {
            agents.push((row.first, row.value));
        }
    }
    Ok(seen
        .into_iter()
        .map(|(id, (users, agents))| {
            (id, (values::in_order_of_first_use(users), values::in_order_of_first_use(agents)))
        })
        .collect())
}

/// Up to `limit` values of `kind` that start with (for User-Agents: contain) `text`, one per
/// folded form, in folded order.
pub fn suggest(
    client: &Client,
    kind: ValueKind,
    text: &str,
    limit: usize,
    floor: i64,
) -> Result<Vec<String>> {
    let folded = fold(text);
    let mut sql = format!(
        "SELECT folded, any(value) AS value FROM session_values \
         WHERE kind = {} AND last_ts >= {floor}",
        kind.code()
    );
    if kind.matches_part() {
        let _ = write!(sql, " AND position(folded, {}) > 0", literal(&folded));
    } else {
        // A range of the sort key rather than a function of it, which every release reads
        // along the key.
        let _ = write!(sql, " AND folded >= {}", literal(&folded));
        if let Some(end) = prefix_end(&folded) {
            let _ = write!(sql, " AND folded < {}", literal(&end));
        }
    }
    let _ = write!(sql, " GROUP BY folded ORDER BY folded LIMIT {limit}");
    #[derive(Deserialize)]
    struct Suggestion {
        value: String,
    }
    let rows: Vec<Suggestion> = client.rows(&sql)?;
    Ok(rows.into_iter().map(|row| row.value).collect())
}
