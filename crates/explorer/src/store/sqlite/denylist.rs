//! The denylist in SQLite: `denylist` holds the current entries, `denylist_audit` every change
//! (one row per version), `denylist_version` the list's version, which outlives the purged
//! audit rows so that it only ever grows.

use api_sessions_core::time::Millis;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use crate::store::denylist::{Action, AuditEntry, Change, Changed, Denylist, Entry};
use crate::store::{Result, StoreError};

pub const SCHEMA: &str = "
    CREATE TABLE denylist (
        key_hash   TEXT    PRIMARY KEY,
        expires    INTEGER,
        reason     TEXT    NOT NULL,
        created_by TEXT    NOT NULL,
        created_at INTEGER NOT NULL,
        session_id TEXT
    ) WITHOUT ROWID;
    CREATE TABLE denylist_audit (
        version    INTEGER PRIMARY KEY,
        at         INTEGER NOT NULL,
        action     TEXT    NOT NULL,
        key_hash   TEXT    NOT NULL,
        expires    INTEGER,
        reason     TEXT    NOT NULL,
        changed_by TEXT    NOT NULL,
        session_id TEXT
    );
    CREATE INDEX denylist_audit_key ON denylist_audit (key_hash, version);
    CREATE INDEX denylist_audit_at ON denylist_audit (at);
    CREATE TABLE denylist_version (version INTEGER NOT NULL);
    INSERT INTO denylist_version VALUES (0);
";

/// Applies `change` and audits it in one transaction.
pub fn change(conn: &mut Connection, change: &Change) -> Result<Changed> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    match change {
        Change::Block(entry) => {
            tx.execute(
                "INSERT OR REPLACE INTO denylist
                 (key_hash, expires, reason, created_by, created_at, session_id)
                 VALUES (?, ?, ?, ?, ?, ?)",
                params![
                    entry.key_hash,
                    entry.expires.map(|e| e.0),
                    entry.reason,
                    entry.created_by,
                    entry.created_at.0,
                    entry.session_id
                ],
            )?;
        }
        Change::Unblock { key_hash, .. } => {
            if tx.execute("DELETE FROM denylist WHERE key_hash = ?", [key_hash])? == 0 {
                return Ok(None);
            }
        }
    }
    let version: i64 = tx.query_row(
        "UPDATE denylist_version SET version = version + 1 RETURNING version",
        [],
        |row| row.get(0),
    )?;
    let audit = change.audit(version as u64);
    tx.execute(
        "INSERT INTO denylist_audit (version, at, action, key_hash, expires, reason, changed_by, session_id)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            version,
            audit.at.0,
            audit.action.as_str(),
            audit.key_hash,
            audit.expires.map(|e| e.0),
            audit.reason,
            audit.by,
            audit.session_id
        ],
    )?;
    tx.commit()?;
    Ok(Some(version as u64))
}

pub fn list(conn: &Connection) -> Result<Denylist> {
    let version: i64 = conn.query_row("SELECT version FROM denylist_version", [], |r| r.get(0))?;
    let entries = conn
        .prepare_cached(
            "SELECT key_hash, expires, reason, created_by, created_at, session_id
             FROM denylist ORDER BY created_at DESC, key_hash",
        )?
        .query_map([], |row| {
            Ok(Entry {
                key_hash: row.get(0)?,
                expires: row.get::<_, Option<i64>>(1)?.map(Millis),
                reason: row.get(2)?,
                created_by: row.get(3)?,
                created_at: Millis(row.get(4)?),
                session_id: row.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Denylist { version: version as u64, entries })
}

pub fn audit(
    conn: &Connection,
    key_hash: Option<&str>,
    limit: usize,
    floor: i64,
) -> Result<Vec<AuditEntry>> {
    let limit = limit.min(i64::MAX as usize) as i64;
    let mut select = conn.prepare_cached(
        "SELECT version, at, action, key_hash, expires, reason, changed_by, session_id
         FROM denylist_audit WHERE at >= ?1 AND (?2 IS NULL OR key_hash = ?2)
         ORDER BY version DESC LIMIT ?3",
    )?;
    let rows = select.query_map(params![floor, key_hash, limit], audit_row)?;
    let mut entries = Vec::new();
    for row in rows {
        entries.push(row??);
    }
    Ok(entries)
}

fn audit_row(row: &Row<'_>) -> rusqlite::Result<Result<AuditEntry>> {
    let action: String = row.get(2)?;
    let Some(action) = Action::parse(&action) else {
        return Ok(Err(StoreError::new(format!("unknown denylist action \"{action}\""))));
    };
    Ok(Ok(AuditEntry {
        version: row.get::<_, i64>(0)? as u64,
        at: Millis(row.get(1)?),
        action,
        key_hash: row.get(3)?,
        expires: row.get::<_, Option<i64>>(4)?.map(Millis),
        reason: row.get(5)?,
        by: row.get(6)?,
        session_id: row.get(7)?,
    }))
}

/// Audit rows older than the retention go; so do entries that expired before it, which the
/// document has long left out (the version stays: what is served does not change).
pub fn purge(conn: &Connection, cutoff: i64) -> Result<()> {
    conn.execute("DELETE FROM denylist_audit WHERE at < ?", [cutoff])?;
    conn.execute("DELETE FROM denylist WHERE expires < ?", [cutoff])?;
    Ok(())
}

/// The session id, key hash and risk of those of `ids` that are stored.
pub fn risks(conn: &Connection, ids: &[String]) -> Result<Vec<(String, String, u8)>> {
    let mut select = conn
        .prepare_cached("SELECT session_id, key_hash, risk FROM sessions WHERE session_id = ?")?;
    let mut found = Vec::new();
    for id in ids {
        let row = select
            .query_row([id], |row| Ok((row.get(0)?, row.get(1)?, row.get::<_, i64>(2)? as u8)))
            .optional()?;
        found.extend(row);
    }
    Ok(found)
}
