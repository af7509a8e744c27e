//! Risk and signals in SQLite: the detector's states kept in `session_detect` and
//! `detect_actors`, the risk and findings in `sessions` (see `schema`, migration 3), and what
//! the session page reads of them.
//!
//! The `state` columns hold each state encoded ([`encode_state`]) as a BLOB, which SQLite keeps
//! as it is whatever the column's declared type; rows of older databases hold JSON text, which
//! [`decode_state`] reads too.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::tally;
use crate::detect::{ActorState, SessionState};
use crate::store::signals::{
    self, actor_parts, actor_window, decode_state, encode_state, parse_signals, Actor, ActorHour,
    ActorSpan, Detection, Keep, Kept, Observed, SessionSignals, ACTOR_SESSIONS_LISTED,
};
use crate::store::Result;

/// Sessions last a day at most (the module splits them daily or at its zone's `max`): an
/// actor's sessions that reach into a window started at most this long before it.
const LONGEST_SESSION_MS: i64 = 48 * 3_600_000;

/// Actor states kept after the retention cutoff: as long as a session that straddles it may be
/// rescored.
const ACTOR_GRACE_HOURS: i64 = 48;

/// Migration 12: `detect_actors` keyed by hour, then actor. A transaction writes the states of
/// the actors of its records' hours, a few hours at a time: in hour order they share a few
/// pages, where in actor order each would dirty a page of its own and a commit would write most
/// of the table to the WAL. The purge deletes a range of the key, without an index by hour.
pub const ACTORS_BY_HOUR: &str = "
    CREATE TABLE detect_actors_by_hour (
        hour  INTEGER NOT NULL,
        actor TEXT    NOT NULL,
        state BLOB    NOT NULL,
        PRIMARY KEY (hour, actor)
    ) WITHOUT ROWID;
    INSERT INTO detect_actors_by_hour (hour, actor, state)
        SELECT hour, actor, state FROM detect_actors;
    DROP TABLE detect_actors;
    ALTER TABLE detect_actors_by_hour RENAME TO detect_actors;
";

/// What an ingest transaction observed, keyed by `sessions.id`.
pub type Pending = Observed<i64>;

/// Scores the sessions a transaction touched, in the transaction.
pub fn apply(tx: &Transaction<'_>, observed: Pending, detection: &Detection) -> Result<()> {
    let Some(config) = detection.config() else { return Ok(()) };
    signals::apply(&mut Store { tx, previous: HashMap::new() }, observed, config)
}

struct Store<'t, 'c> {
    tx: &'t Transaction<'c>,
    /// The risk and findings stored for the sessions read, so that `sessions` (and its risk
    /// index) is only written when they change.
    previous: HashMap<i64, (i64, String)>,
}

impl Keep for Store<'_, '_> {
    type Key = i64;

    fn sessions(&mut self, keys: &[i64]) -> Result<HashMap<i64, SessionState>> {
        let mut select = self.tx.prepare_cached(
            "SELECT d.state, s.risk, s.signals FROM session_detect d
             JOIN sessions s ON s.id = d.session WHERE d.session = ?",
        )?;
        let mut found = HashMap::new();
        for &key in keys {
            let row = select
                .query_row([key], |row| {
                    Ok((
                        decode_state(row.get_ref(0)?.as_bytes()?),
                        row.get::<_, i64>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                })
                .optional()?;
            if let Some((state, risk, names)) = row {
                found.insert(key, state);
                self.previous.insert(key, (risk, names));
            }
        }
        Ok(found)
    }

    fn actors(&mut self, keys: &[ActorHour]) -> Result<HashMap<ActorHour, ActorState>> {
        let mut select = self
            .tx
            .prepare_cached("SELECT state FROM detect_actors WHERE hour = ? AND actor = ?")?;
        let mut found = HashMap::new();
        for (actor, hour) in keys {
            let state: Option<ActorState> = select
                .query_row(params![hour, actor], |row| {
                    Ok(decode_state(row.get_ref(0)?.as_bytes()?))
                })
                .optional()?;
            if let Some(state) = state {
                found.insert((actor.clone(), *hour), state);
            }
        }
        Ok(found)
    }

    fn short_sessions(
        &mut self,
        spans: &[ActorSpan<'_>],
        max_requests: u64,
        limit: usize,
    ) -> Result<Vec<(i64, SessionState)>> {
        // One indexed lookup per actor. The rows come in the index's order, so the limit is
        // applied here: with a bound `LIMIT ?` SQLite prepares the statement again at every
        // run (it plans for the value bound), which took seven times the query.
        let mut select = self.tx.prepare_cached(
            "SELECT d.session, d.state, s.risk, s.signals FROM session_detect d
             JOIN sessions s ON s.id = d.session
             WHERE d.actor = ? AND d.first_ts >= ? AND d.first_ts < ? AND d.last_ts >= ?
                   AND d.requests <= ?
             ORDER BY d.first_ts DESC",
        )?;
        let mut found = Vec::new();
        for span in spans {
            let mut rows = select.query(params![
                span.actor,
                span.from - LONGEST_SESSION_MS,
                span.to,
                span.from,
                max_requests as i64
            ])?;
            for _ in 0..limit {
                let Some(row) = rows.next()? else { break };
                let key: i64 = row.get(0)?;
                let state: SessionState =
                    decode_state(row.get_ref(1)?.as_bytes().map_err(rusqlite::Error::from)?);
                self.previous.insert(key, (row.get(2)?, row.get(3)?));
                found.push((key, state));
            }
        }
        Ok(found)
    }

    fn save_actors(&mut self, actors: &[(ActorHour, ActorState)]) -> Result<()> {
        let mut upsert = self.tx.prepare_cached(
            "INSERT INTO detect_actors (hour, actor, state) VALUES (?, ?, ?)
             ON CONFLICT (hour, actor) DO UPDATE SET state = excluded.state",
        )?;
        for ((actor, hour), state) in actors {
            upsert.execute(params![hour, actor, encode_state(state)?])?;
        }
        Ok(())
    }

    fn save_sessions(&mut self, sessions: &[(i64, Kept<'_>)]) -> Result<()> {
        let mut upsert = self.tx.prepare_cached(
            "INSERT INTO session_detect (session, state, signals, actor, first_ts, last_ts,
                                         requests)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (session) DO UPDATE SET state = excluded.state,
                 signals = excluded.signals, actor = excluded.actor,
                 first_ts = excluded.first_ts, last_ts = excluded.last_ts,
                 requests = excluded.requests",
        )?;
        // A session whose actor and first request stay has its index entry left alone.
        let mut update = self.tx.prepare_cached(
            "UPDATE session_detect SET state = ?, signals = ?, last_ts = ?, requests = ?
             WHERE session = ?",
        )?;
        let mut rescored =
            self.tx.prepare_cached("UPDATE session_detect SET signals = ? WHERE session = ?")?;
        let mut update_session =
            self.tx.prepare_cached("UPDATE sessions SET risk = ?, signals = ? WHERE id = ?")?;
        for (key, kept) in sessions {
            let all = signals::signals_json(&kept.scored.signals)?;
            if kept.changed && !kept.moved {
                update.execute(params![
                    encode_state(kept.state)?,
                    all,
                    kept.last_ts,
                    kept.requests as i64,
                    key
                ])?;
            } else if kept.changed {
                upsert.execute(params![
                    key,
                    encode_state(kept.state)?,
                    all,
                    kept.actor,
                    kept.first_ts,
                    kept.last_ts,
                    kept.requests as i64
                ])?;
            } else {
                rescored.execute(params![all, key])?;
            }
            let risk = i64::from(kept.scored.risk);
            let names = tally::join_list(kept.scored.findings().iter().map(String::as_str));
            if self.previous.get(key).is_none_or(|previous| *previous != (risk, names.clone())) {
                update_session.execute(params![risk, names, key])?;
            }
        }
        Ok(())
    }
}

/// Forgets a deleted session's detection.
pub fn forget(tx: &Transaction<'_>, session: i64) -> Result<()> {
    tx.prepare_cached("DELETE FROM session_detect WHERE session = ?")?.execute([session])?;
    Ok(())
}

/// Deletes actor states no session within the retention reads any more.
pub fn purge(conn: &Connection, cutoff: i64) -> Result<()> {
    let hour = super::schema::hour(cutoff) - ACTOR_GRACE_HOURS;
    conn.execute("DELETE FROM detect_actors WHERE hour < ?", [hour])?;
    Ok(())
}

/// The detection of session `id` for its page: every signal, and the actor's other sessions
/// within `window_hours` around it.
pub fn session(
    conn: &Connection,
    id: i64,
    risk: u8,
    window_hours: u32,
    floor: i64,
) -> Result<SessionSignals> {
    let row = conn
        .prepare_cached(
            "SELECT signals, actor, first_ts, last_ts FROM session_detect WHERE session = ?",
        )?
        .query_row([id], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get(2)?, row.get(3)?))
        })
        .optional()?;
    let Some((all, actor, first_ts, last_ts)) = row else {
        return Ok(SessionSignals { risk, ..SessionSignals::default() });
    };
    let (from, to) = actor_window(first_ts, last_ts, window_hours);
    let others = "FROM session_detect d JOIN sessions s ON s.id = d.session
         WHERE d.actor = ?1 AND d.first_ts >= ?2 AND d.first_ts <= ?3 AND d.last_ts >= ?4
               AND d.session != ?5 AND s.last_ts >= ?6";
    let bounds = params![actor, from - LONGEST_SESSION_MS, to, from.max(floor), id, floor];
    let sessions: i64 = conn
        .prepare_cached(&format!("SELECT count(*) {others}"))?
        .query_row(bounds, |row| row.get(0))?;
    let session_ids = conn
        .prepare_cached(&format!("SELECT s.session_id {others} ORDER BY s.last_ts DESC LIMIT ?7"))?
        .query_map(
            params![
                actor,
                from - LONGEST_SESSION_MS,
                to,
                from.max(floor),
                id,
                floor,
                ACTOR_SESSIONS_LISTED as i64
            ],
            |row| row.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?;
    let (ip, user_agent) = actor_parts(&actor);
    Ok(SessionSignals {
        risk,
        signals: parse_signals(&all),
        actor: Some(Actor { ip, user_agent, sessions: sessions as u64, session_ids }),
    })
}
