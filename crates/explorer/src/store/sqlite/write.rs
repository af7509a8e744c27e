//! The writer side: storing batches and purging what is older than the retention.
//!
//! Sessions are aggregated here, once per batch and session, so listing sessions never has to
//! count requests unless a request-level filter asks for it.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};

use api_sessions_core::record::Record;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::tally::{self, Tally};
use super::{schema, search};
use crate::store::{FollowPosition, IngestCounts, LineMark, PurgeCounts, Received, Result};

/// Rows deleted per purge transaction, so the writer lock is never held for long.
const PURGE_CHUNK: usize = 5000;

/// A session's aggregate while a batch is applied to it.
struct SessionAcc {
    id: i64,
    created: bool,
    first_ts: i64,
    last_ts: i64,
    stored_last_ts: i64,
    requests: i64,
    attacks: i64,
    user: Option<(i64, String)>,
    role: Option<(i64, String)>,
    nodes: Vec<String>,
    /// Requests per flow added by this batch.
    flows: BTreeMap<String, i64>,
    /// IPs seen in this batch.
    ips: HashSet<String>,
    added: i64,
}

impl SessionAcc {
    fn load(tx: &Transaction<'_>, record: &Record) -> Result<SessionAcc> {
        let mut select = tx.prepare_cached(
            "SELECT id, first_ts, last_ts, requests, attacks, user, user_ts, role, role_ts, nodes
             FROM sessions WHERE session_id = ?",
        )?;
        let existing = select
            .query_row([&record.session_id], |row| {
                let pair =
                    |value: Option<String>, ts: Option<i64>| value.zip(ts).map(|(v, t)| (t, v));
                Ok(SessionAcc {
                    id: row.get(0)?,
                    created: false,
                    first_ts: row.get(1)?,
                    last_ts: row.get(2)?,
                    stored_last_ts: row.get(2)?,
                    requests: row.get(3)?,
                    attacks: row.get(4)?,
                    user: pair(row.get(5)?, row.get(6)?),
                    role: pair(row.get(7)?, row.get(8)?),
                    nodes: tally::split_list(row.get_ref(9)?.as_str()?)
                        .map(str::to_owned)
                        .collect(),
                    flows: BTreeMap::new(),
                    ips: HashSet::new(),
                    added: 0,
                })
            })
            .optional()?;
        if let Some(acc) = existing {
            return Ok(acc);
        }

        let mut insert = tx.prepare_cached(
            "INSERT INTO sessions (session_id, key_hash, session_key, session_start, first_ts,
                                   last_ts, requests, attacks, nodes)
             VALUES (?, ?, ?, ?, ?, ?, 0, 0, '')",
        )?;
        insert.execute(params![
            record.session_id,
            record.key_hash,
            record.session_key,
            record.session_start.0,
            record.ts.0,
            record.ts.0,
        ])?;
        Ok(SessionAcc {
            id: tx.last_insert_rowid(),
            created: true,
            first_ts: record.ts.0,
            last_ts: record.ts.0,
            stored_last_ts: record.ts.0,
            requests: 0,
            attacks: 0,
            user: None,
            role: None,
            nodes: Vec::new(),
            flows: BTreeMap::new(),
            ips: HashSet::new(),
            added: 0,
        })
    }

    fn add(&mut self, record: &Record) {
        let ts = record.ts.0;
        if self.requests == 0 {
            self.first_ts = ts;
            self.last_ts = ts;
        } else {
            self.first_ts = self.first_ts.min(ts);
            self.last_ts = self.last_ts.max(ts);
        }
        self.requests += 1;
        self.added += 1;
        if record.attack.is_some() {
            self.attacks += 1;
        }
        // Records of one session can arrive out of order (several nodes, a replayed spool):
        // "last" means latest request time, not latest arrival.
        for (value, slot) in [(&record.user, &mut self.user), (&record.role, &mut self.role)] {
            if let Some(value) = value {
                if slot.as_ref().is_none_or(|(seen, _)| ts >= *seen) {
                    *slot = Some((ts, value.clone()));
                }
            }
        }
        if !self.nodes.contains(&record.node) {
            self.nodes.push(record.node.clone());
        }
        for flow in &record.flows {
            *self.flows.entry(flow.clone()).or_default() += 1;
        }
        if !self.ips.contains(&record.ip) {
            self.ips.insert(record.ip.clone());
        }
    }

    fn save(&self, tx: &Transaction<'_>) -> Result<()> {
        if self.added == 0 {
            if self.created {
                // Every record of this new session duplicated a request stored under another
                // session id; do not leave an empty session behind.
                tx.prepare_cached("DELETE FROM sessions WHERE id = ?")?.execute([self.id])?;
            }
            return Ok(());
        }
        update_session(
            tx,
            self.id,
            &Aggregates {
                first_ts: self.first_ts,
                last_ts: self.last_ts,
                requests: self.requests,
                attacks: self.attacks,
                user: self.user.as_ref(),
                role: self.role.as_ref(),
                nodes: tally::join_list(self.nodes.iter().map(String::as_str)),
            },
        )?;

        let mut upsert_flow = tx.prepare_cached(
            "INSERT INTO session_flows (session, flow, requests, last_ts) VALUES (?, ?, ?, ?)
             ON CONFLICT (session, flow) DO UPDATE SET requests = requests + excluded.requests",
        )?;
        for (flow, count) in &self.flows {
            upsert_flow.execute(params![self.id, flow, count, self.last_ts])?;
        }
        if self.last_ts != self.stored_last_ts && !self.created {
            tx.prepare_cached("UPDATE session_flows SET last_ts = ? WHERE session = ?")?
                .execute([self.last_ts, self.id])?;
        }
        let mut insert_ip =
            tx.prepare_cached("INSERT OR IGNORE INTO session_ips (session, ip) VALUES (?, ?)")?;
        for ip in &self.ips {
            insert_ip.execute(params![self.id, ip])?;
        }
        Ok(())
    }
}

/// The aggregate columns of a `sessions` row.
struct Aggregates<'a> {
    first_ts: i64,
    last_ts: i64,
    requests: i64,
    attacks: i64,
    user: Option<&'a (i64, String)>,
    role: Option<&'a (i64, String)>,
    nodes: String,
}

fn update_session(tx: &Transaction<'_>, id: i64, row: &Aggregates<'_>) -> Result<()> {
    tx.prepare_cached(
        "UPDATE sessions SET first_ts = ?, last_ts = ?, requests = ?, attacks = ?, user = ?,
                             user_ts = ?, role = ?, role_ts = ?, nodes = ?
         WHERE id = ?",
    )?
    .execute(params![
        row.first_ts,
        row.last_ts,
        row.requests,
        row.attacks,
        row.user.map(|(_, value)| value),
        row.user.map(|(ts, _)| ts),
        row.role.map(|(_, value)| value),
        row.role.map(|(ts, _)| ts),
        row.nodes,
        id,
    ])?;
    Ok(())
}

/// Text the `q` filter searches: path, user, parameters and the attack's request line,
/// lowercased (ASCII) so the query can use a plain substring test.
fn search_text(record: &Record) -> String {
    let mut text = String::with_capacity(128);
    text.push_str(&record.path);
    if let Some(user) = &record.user {
        text.push('\n');
        text.push_str(user);
    }
    for param in &record.params {
        text.push('\n');
        text.push_str(&param.name);
        text.push('=');
        text.push_str(&param.value);
    }
    if let Some(attack) = &record.attack {
        text.push('\n');
        text.push_str(&attack.request.line);
    }
    text.make_ascii_lowercase();
    text
}

/// One batch to store, and where its follower stands after it.
pub struct IngestJob {
    pub batch: Vec<Received>,
    pub position: Option<FollowPosition>,
}

/// Stores several batches in one transaction (group commit); their counts in the same order.
pub fn ingest(conn: &mut Connection, jobs: &[IngestJob]) -> Result<Vec<IngestCounts>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut all_counts = Vec::with_capacity(jobs.len());
    {
        let mut sessions: HashMap<&str, SessionAcc> = HashMap::new();
        let mut insert_request = tx.prepare_cached(
            "INSERT OR IGNORE INTO requests (session, ts, hour, request_id, node, pid, seq, method,
                                             status, ip, user, role, attack, flows, search)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?;
        let mut insert_record =
            tx.prepare_cached("INSERT INTO records (id, json) VALUES (?, ?)")?;
        let mut search_index = search::Pending::default();

        for job in jobs {
            let mut counts = IngestCounts::default();
            for received in &job.batch {
                let record = &received.record;
                let acc = match sessions.entry(record.session_id.as_str()) {
                    Entry::Occupied(entry) => entry.into_mut(),
                    Entry::Vacant(entry) => entry.insert(SessionAcc::load(&tx, record)?),
                };
                let hour = schema::hour(record.ts.0);
                let search = search_text(record);
                let inserted = insert_request.execute(params![
                    acc.id,
                    record.ts.0,
                    hour,
                    record.request_id,
                    record.node,
                    record.pid,
                    record.seq,
                    record.method,
                    record.status,
                    record.ip,
                    record.user,
                    record.role,
                    record.attack.as_ref().map(|attack| attack.kind.as_str()),
                    tally::join_list(record.flows.iter().map(String::as_str)),
                    search,
                ])?;
                if inserted == 0 {
                    counts.duplicates += 1;
                    continue;
                }
                let id = tx.last_insert_rowid();
                insert_record.execute(params![id, received.json])?;
                let hit = search::Hit { ts: record.ts.0, id, session: acc.id };
                search_index.add(&tx, hour, hit, &search)?;
                acc.add(record);
                counts.accepted += 1;
            }
            if let Some(position) = &job.position {
                tx.prepare_cached(
                    "INSERT INTO follow_positions (path, inode, offset, line_len, line_crc)
                     VALUES (?, ?, ?, ?, ?)
                     ON CONFLICT (path) DO UPDATE SET inode = excluded.inode,
                         offset = excluded.offset, line_len = excluded.line_len,
                         line_crc = excluded.line_crc",
                )?
                .execute(params![
                    position.path,
                    position.inode as i64,
                    position.offset as i64,
                    position.last_line.len as i64,
                    position.last_line.crc,
                ])?;
            }
            all_counts.push(counts);
        }
        for acc in sessions.values() {
            acc.save(&tx)?;
        }
        search_index.save(&tx)?;
    }
    tx.commit()?;
    Ok(all_counts)
}

pub fn follow_position(conn: &Connection, path: &str) -> Result<Option<FollowPosition>> {
    let position = conn
        .prepare_cached(
            "SELECT inode, offset, line_len, line_crc FROM follow_positions WHERE path = ?",
        )?
        .query_row([path], |row| {
            Ok(FollowPosition {
                path: path.to_owned(),
                inode: row.get::<_, i64>(0)? as u64,
                offset: row.get::<_, i64>(1)? as u64,
                last_line: LineMark { len: row.get::<_, i64>(2)? as u64, crc: row.get(3)? },
            })
        })
        .optional()?;
    Ok(position)
}

/// Deletes requests older than `cutoff`, the sessions left without requests, and recounts the
/// sessions that had requests on both sides of it.
pub fn purge(conn: &mut Connection, cutoff: i64) -> Result<PurgeCounts> {
    let mut counts = PurgeCounts::default();

    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<i64> = tx
            .prepare_cached("SELECT id FROM requests WHERE ts < ? ORDER BY ts LIMIT ?")?
            .query_map(params![cutoff, PURGE_CHUNK], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        {
            let mut delete_request = tx.prepare_cached("DELETE FROM requests WHERE id = ?")?;
            let mut delete_record = tx.prepare_cached("DELETE FROM records WHERE id = ?")?;
            for id in &ids {
                delete_request.execute([id])?;
                delete_record.execute([id])?;
            }
        }
        tx.commit()?;
        counts.requests += ids.len() as u64;
        if ids.len() < PURGE_CHUNK {
            break;
        }
    }

    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<i64> = tx
            .prepare_cached("SELECT id FROM sessions WHERE last_ts < ? LIMIT ?")?
            .query_map(params![cutoff, PURGE_CHUNK], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for id in &ids {
            delete_session(&tx, *id)?;
        }
        tx.commit()?;
        counts.sessions += ids.len() as u64;
        if ids.len() < PURGE_CHUNK {
            break;
        }
    }

    // The hour holding the cutoff keeps its search index: newer requests share it, and queries
    // check every hit against `requests`.
    conn.execute("DELETE FROM search_filters WHERE hour < ?", [schema::hour(cutoff)])?;
    conn.execute("DELETE FROM search_blocks WHERE hour < ?", [schema::hour(cutoff)])?;

    // Sessions that straddle the cutoff keep their newer requests; their aggregates must stop
    // counting the deleted ones. After a recount `first_ts >= cutoff`, so each is done once.
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<i64> = tx
            .prepare_cached("SELECT id FROM sessions WHERE first_ts < ? LIMIT ?")?
            .query_map(params![cutoff, PURGE_CHUNK], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for id in &ids {
            recount_session(&tx, *id)?;
        }
        tx.commit()?;
        if ids.len() < PURGE_CHUNK {
            break;
        }
    }
    Ok(counts)
}

fn delete_session(tx: &Transaction<'_>, id: i64) -> Result<()> {
    tx.prepare_cached("DELETE FROM sessions WHERE id = ?")?.execute([id])?;
    delete_session_parts(tx, id)
}

/// Rebuilds a session's aggregate from the requests it still has.
fn recount_session(tx: &Transaction<'_>, id: i64) -> Result<()> {
    let mut tally = Tally::default();
    {
        let mut select = tx.prepare_cached(&format!(
            "SELECT {} FROM requests r WHERE r.session = ?",
            tally::COLUMNS
        ))?;
        let mut rows = select.query([id])?;
        while let Some(row) = rows.next()? {
            tally.add(row)?;
        }
    }
    if tally.requests == 0 {
        return delete_session(tx, id);
    }
    delete_session_parts(tx, id)?;
    update_session(
        tx,
        id,
        &Aggregates {
            first_ts: tally.first_ts,
            last_ts: tally.last_ts,
            requests: tally.requests as i64,
            attacks: tally.attacks() as i64,
            user: tally.user.as_ref(),
            role: tally.role.as_ref(),
            nodes: tally::join_list(tally.nodes.iter().map(String::as_str)),
        },
    )?;
    let mut insert_flow = tx.prepare_cached(
        "INSERT INTO session_flows (session, flow, requests, last_ts) VALUES (?, ?, ?, ?)",
    )?;
    for (flow, count) in &tally.stats.flows {
        insert_flow.execute(params![id, flow, *count as i64, tally.last_ts])?;
    }
    let mut insert_ip = tx.prepare_cached("INSERT INTO session_ips (session, ip) VALUES (?, ?)")?;
    for ip in tally.stats.ips.keys() {
        insert_ip.execute(params![id, ip])?;
    }
    Ok(())
}

fn delete_session_parts(tx: &Transaction<'_>, id: i64) -> Result<()> {
    tx.prepare_cached("DELETE FROM session_flows WHERE session = ?")?.execute([id])?;
    tx.prepare_cached("DELETE FROM session_ips WHERE session = ?")?.execute([id])?;
    Ok(())
}
