//! The denylist in ClickHouse. Nothing is updated in place: each change adds a row to
//! `denylist` (the key's new state, `removed` for an unblock; the row of the highest version of
//! a key is the current one), one to `denylist_audit` and one to `denylist_versions`, whose
//! largest value is the list's version (kept apart so that purging the audit log never lowers
//! it). Changes are made under the store's denylist lock, which holds the current version.
//!
//! "Never expires" is kept as `expires = 0` and "no session" as `session_id = ''`: aggregate
//! functions skip NULLs, which would let an older row's value win.

use api_sessions_core::time::Millis;
use serde::{Deserialize, Serialize};

use super::http::Client;
use super::sql::{literal, literals};
use crate::store::denylist::{Action, AuditEntry, Change, Changed, Denylist, Entry};
use crate::store::{Result, StoreError};

pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS denylist (
        key_hash   String,
        expires    Int64,
        reason     String,
        created_by String,
        created_at Int64,
        session_id String,
        removed    UInt8,
        version    UInt64
    ) ENGINE = MergeTree
    ORDER BY (key_hash, version)",
    "CREATE TABLE IF NOT EXISTS denylist_audit (
        version    UInt64,
        at         Int64,
        action     String,
        key_hash   String,
        expires    Int64,
        reason     String,
        changed_by String,
        session_id String
    ) ENGINE = MergeTree
    ORDER BY version",
    "CREATE TABLE IF NOT EXISTS denylist_versions (version UInt64) ENGINE = MergeTree ORDER BY version",
];

#[derive(Serialize)]
struct EntryRow<'a> {
    key_hash: &'a str,
    expires: i64,
    reason: &'a str,
    created_by: &'a str,
    created_at: i64,
    session_id: &'a str,
    removed: u8,
    version: u64,
}

#[derive(Serialize, Deserialize)]
struct AuditRow {
    version: u64,
    at: i64,
    action: String,
    key_hash: String,
    expires: i64,
    reason: String,
    changed_by: String,
    session_id: String,
}

fn json_line(row: &impl Serialize) -> Result<Vec<u8>> {
    let mut line = serde_json::to_vec(row).map_err(|err| StoreError::new(err.to_string()))?;
    line.push(b'\n');
    Ok(line)
}

/// The list's version as stored.
pub fn load_version(client: &Client) -> Result<u64> {
    #[derive(Deserialize)]
    struct Version {
        version: u64,
    }
    let rows: Vec<Version> = client.rows(
        "SELECT greatest((SELECT max(version) FROM denylist_versions),
                         (SELECT max(version) FROM denylist_audit)) AS version",
    )?;
    Ok(rows.first().map_or(0, |row| row.version))
}

/// Applies `change` as version `*version + 1`; `version` is the store's, under its lock.
pub fn change(client: &Client, version: &mut u64, change: &Change) -> Result<Changed> {
    if let Change::Unblock { key_hash, .. } = change {
        if !current(client, Some(key_hash))?.iter().any(|entry| &entry.key_hash == key_hash) {
            return Ok(None);
        }
    }
    let next = *version + 1;
    let audit = change.audit(next);
    // The audit row first: a change is never in effect without its line in the log.
    client.insert(
        "denylist_audit",
        &json_line(&AuditRow {
            version: next,
            at: audit.at.0,
            action: audit.action.as_str().to_owned(),
            key_hash: audit.key_hash.clone(),
            expires: audit.expires.map_or(0, |e| e.0),
            reason: audit.reason.clone(),
            changed_by: audit.by.clone(),
            session_id: audit.session_id.clone().unwrap_or_default(),
        })?,
    )?;
    let row = match change {
        Change::Block(entry) => EntryRow {
            key_hash: &entry.key_hash,
            expires: entry.expires.map_or(0, |e| e.0),
            reason: &entry.reason,
            created_by: &entry.created_by,
            created_at: entry.created_at.0,
            session_id: entry.session_id.as_deref().unwrap_or(""),
            removed: 0,
            version: next,
        },
        Change::Unblock { key_hash, by, at } => EntryRow {
            key_hash,
            expires: 0,
            reason: "",
            created_by: by,
            created_at: at.0,
            session_id: "",
            removed: 1,
            version: next,
        },
    };
    client.insert("denylist", &json_line(&row)?)?;
    client.insert("denylist_versions", format!("{{\"version\":{next}}}\n").as_bytes())?;
    *version = next;
    Ok(Some(next))
}

/// The current entries, of one key or of all.
fn current(client: &Client, key_hash: Option<&str>) -> Result<Vec<Entry>> {
    #[derive(Deserialize)]
    struct Row {
        key_hash: String,
        expires: i64,
        reason: String,
        created_by: String,
        created_at: i64,
        session_id: String,
    }
    let only = key_hash.map_or(String::new(), |key| format!("WHERE key_hash = {}", literal(key)));
    let rows: Vec<Row> = client.rows(&format!(
        "SELECT key_hash, argMax(expires, version) AS expires, argMax(reason, version) AS reason,
                argMax(created_by, version) AS created_by,
                argMax(created_at, version) AS created_at,
                argMax(session_id, version) AS session_id,
                argMax(removed, version) AS gone
         FROM denylist {only} GROUP BY key_hash HAVING gone = 0
         ORDER BY created_at DESC, key_hash"
    ))?;
    Ok(rows
        .into_iter()
        .map(|row| Entry {
            key_hash: row.key_hash,
            expires: (row.expires != 0).then_some(Millis(row.expires)),
            reason: row.reason,
            created_by: row.created_by,
            created_at: Millis(row.created_at),
            session_id: (!row.session_id.is_empty()).then_some(row.session_id),
        })
        .collect())
}

pub fn list(client: &Client, version: u64) -> Result<Denylist> {
    Ok(Denylist { version, entries: current(client, None)? })
}

pub fn audit(
    client: &Client,
    key_hash: Option<&str>,
    limit: usize,
    floor: i64,
) -> Result<Vec<AuditEntry>> {
    let only = key_hash.map_or(String::new(), |key| format!("AND key_hash = {}", literal(key)));
    let rows: Vec<AuditRow> = client.rows(&format!(
        "SELECT version, at, action, key_hash, expires, reason, changed_by, session_id
         FROM denylist_audit WHERE at >= {floor} {only} ORDER BY version DESC LIMIT {limit}"
    ))?;
    rows.into_iter()
        .map(|row| {
            let action = Action::parse(&row.action).ok_or_else(|| {
                StoreError::new(format!("unknown denylist action \"{}\"", row.action))
            })?;
            Ok(AuditEntry {
                version: row.version,
                at: Millis(row.at),
                action,
                key_hash: row.key_hash,
                expires: (row.expires != 0).then_some(Millis(row.expires)),
                reason: row.reason,
                by: row.changed_by,
                session_id: (!row.session_id.is_empty()).then_some(row.session_id),
            })
        })
        .collect()
}

/// Audit rows older than the retention go, and so do keys whose block ended before it (all
/// their rows, so that no older row becomes current).
pub fn purge(client: &Client, cutoff: i64) -> Result<()> {
    client.execute(&format!("ALTER TABLE denylist_audit DELETE WHERE at < {cutoff}"))?;
    client.execute(&format!(
        "ALTER TABLE denylist DELETE WHERE key_hash IN (
             SELECT key_hash FROM denylist GROUP BY key_hash
             HAVING argMax(removed, version) = 0 AND argMax(expires, version) != 0
                AND argMax(expires, version) < {cutoff})"
    ))?;
    Ok(())
}

/// The session id, key hash and risk of those of `ids` that are stored.
pub fn risks(client: &Client, ids: &[String]) -> Result<Vec<(String, String, u8)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    #[derive(Deserialize)]
    struct Row {
        session_id: String,
        key_hash: String,
        risk: u8,
    }
    let list = literals(ids.iter().map(String::as_str));
    let rows: Vec<Row> = client.rows(&format!(
        "SELECT session_id, key_hash, risk
         FROM (SELECT session_id, any(key_hash) AS key_hash FROM requests
               WHERE session_id IN ({list}) GROUP BY session_id)
         INNER JOIN (SELECT session_id, argMax(risk, version) AS risk FROM session_detect
                     WHERE session_id IN ({list}) GROUP BY session_id)
         USING session_id"
    ))?;
    Ok(rows.into_iter().map(|row| (row.session_id, row.key_hash, row.risk)).collect())
}
