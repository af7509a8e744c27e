//! Risk and signals in ClickHouse: the detector's states in `session_detect` and
//! `detect_actors` (see `schema`, migration 2), and what the list and the session page read of
//! them.
//!
//! Both tables are `ReplacingMergeTree(version)`: a batch writes a new row for each session and
//! actor-hour it changed, and readers take each key's row of the highest version with
//! `argMax(..., version)`, which is exact whether or not the parts were merged yet.

use std::collections::HashMap;
use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::http::Client;
use super::sql::{literal, literals};
use crate::detect::{ActorState, SessionState};
use crate::store::signals::{
    self, actor_parts, actor_window, decode_state, encode_state, parse_signals, Actor, ActorHour,
    ActorSpan, Detection, Keep, Kept, Observed, SessionSignals, ACTOR_SESSIONS_LISTED,
};
use crate::store::{Filter, Result, StoreError};

/// Keys looked up in one statement, within ClickHouse's default `max_ast_elements`.
const LOOKUP_KEYS: usize = 4000;

/// Sessions last a day at most: an actor's sessions that reach into a window started at most
/// this long before it.
const LONGEST_SESSION_MS: i64 = 48 * 3_600_000;

/// Actor states kept after the retention cutoff, as long as a session that straddles it may be
/// rescored.
const ACTOR_GRACE_HOURS: i64 = 48;

/// The latest row of each session, as a subquery on `session_detect`.
pub const LATEST: &str = "SELECT session_id, argMax(risk, version) AS risk, \
     argMax(findings, version) AS findings FROM session_detect GROUP BY session_id";

/// What a batch observed, keyed by session id.
pub type Pending = Observed<String>;

/// Scores the sessions a batch touched; `version` orders its rows after every earlier one.
pub fn apply(
    client: &Client,
    observed: Pending,
    detection: &Detection,
    version: i64,
    known: &mut Known,
) -> Result<()> {
    let Some(config) = detection.config() else { return Ok(()) };
    signals::apply(&mut Store { client, version, known }, observed, config)
}

struct Store<'c> {
    client: &'c Client,
    version: i64,
    known: &'c mut Known,
}

/// The most `state` text [`Known`] holds; past it, it starts again empty.
const KNOWN_BYTES: usize = 128 << 20;

/// The latest stored state of the sessions the writer read or wrote, as `state` text. With one
/// writer per database (see `write`) that is what a read would give, so batches that come back
/// to a session do not read it again: ClickHouse reads a whole granule of the column to find
/// one session's rows, and those reads were most of a write's time. Emptied when a write fails
/// (what it stored is then unknown) and by the purge.
#[derive(Default)]
pub struct Known {
    states: HashMap<String, String>,
    bytes: usize,
}

impl Known {
    pub fn clear(&mut self) {
        self.states.clear();
        self.bytes = 0;
    }

    fn put(&mut self, session_id: &str, state: String) {
        if self.bytes + state.len() > KNOWN_BYTES {
            self.clear();
        }
        self.bytes += state.len();
        if let Some(old) = self.states.insert(session_id.to_owned(), state) {
            self.bytes -= old.len();
        }
    }
}

/// A state as the `state` column keeps it: the base64 text of its encoding (see
/// [`encode_state`]), since rows travel as JSON lines.
fn state_text(state: &impl Serialize) -> Result<String> {
    Ok(BASE64.encode(encode_state(state)?))
}

/// Reads a `state` column: base64 of the encoding, or JSON in rows written before (which
/// start with `{`, never a base64 digit).
fn read_state<T: serde::de::DeserializeOwned + Default>(text: &str) -> T {
    if text.starts_with('{') {
        return decode_state(text.as_bytes());
    }
    BASE64.decode(text).map(|bytes| decode_state(&bytes)).unwrap_or_default()
}

impl Keep for Store<'_> {
    type Key = String;

    fn sessions(&mut self, keys: &[String]) -> Result<HashMap<String, SessionState>> {
        #[derive(Deserialize)]
        struct Row {
            session_id: String,
            state: String,
        }
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        for key in keys {
            match self.known.states.get(key) {
                Some(text) => {
                    found.insert(key.clone(), read_state(text));
                }
                None => missing.push(key.as_str()),
            }
        }
        for chunk in missing.chunks(LOOKUP_KEYS) {
            let rows: Vec<Row> = self.client.rows(&format!(
                "SELECT session_id, argMax(state, version) AS state FROM session_detect
                 WHERE session_id IN ({}) GROUP BY session_id",
                literals(chunk.iter().copied())
            ))?;
            for row in rows {
                found.insert(row.session_id.clone(), read_state(&row.state));
                self.known.put(&row.session_id, row.state);
            }
        }
        Ok(found)
    }

    fn actors(&mut self, keys: &[ActorHour]) -> Result<HashMap<ActorHour, ActorState>> {
        #[derive(Deserialize)]
        struct Row {
            actor: String,
            hour: i64,
            state: String,
        }
        let mut found = HashMap::new();
        for chunk in keys.chunks(LOOKUP_KEYS) {
            let mut tuples = String::new();
            for (actor, hour) in chunk {
                if !tuples.is_empty() {
                    tuples.push_str(", ");
                }
                let _ = write!(tuples, "({}, {hour})", literal(actor));
            }
            let rows: Vec<Row> = self.client.rows(&format!(
                "SELECT actor, hour, argMax(state, version) AS state FROM detect_actors
                 WHERE (actor, hour) IN ({tuples}) GROUP BY actor, hour"
            ))?;
            found.extend(
                rows.into_iter().map(|row| ((row.actor, row.hour), read_state(&row.state))),
            );
        }
        Ok(found)
    }

    fn short_sessions(
        &mut self,
        spans: &[ActorSpan<'_>],
        max_requests: u64,
        limit: usize,
    ) -> Result<Vec<(String, SessionState)>> {
        #[derive(Deserialize)]
        struct Row {
            session_id: String,
        }
        let mut found = Vec::new();
        // One statement for many actors: each is a scan of `session_detect`, which is sorted
        // by session (of its small columns only). Each actor's list appears five times in it,
        // hence the smaller chunks.
        for chunk in spans.chunks(LOOKUP_KEYS / 8) {
            let actors = literals(chunk.iter().map(|span| span.actor));
            let bound = |edge: fn(&ActorSpan<'_>) -> i64| {
                let edges = chunk.iter().map(|span| edge(span).to_string());
                format!("transform(a, [{actors}], [{}], 0)", edges.collect::<Vec<_>>().join(", "))
            };
            let earliest =
                chunk.iter().map(|span| span.from).min().unwrap_or(0) - LONGEST_SESSION_MS;
            // A session's first request may arrive late from another address: its latest row
            // names its actor.
            let rows: Vec<Row> = self.client.rows(&format!(
                "SELECT session_id, argMax(actor, version) AS a, argMax(first_ts, version) AS f,
                        argMax(last_ts, version) AS l, argMax(requests, version) AS n
                 FROM session_detect
                 WHERE session_id IN (SELECT session_id FROM session_detect
                                      WHERE actor IN ({actors}) AND first_ts >= {earliest})
                 GROUP BY session_id
                 HAVING a IN ({actors}) AND f >= {} AND f < {} AND l >= {} AND n <= {max_requests}
                 ORDER BY f DESC, session_id LIMIT {limit} BY a",
                bound(|span| span.from - LONGEST_SESSION_MS),
                bound(|span| span.to),
                bound(|span| span.from),
            ))?;
            found.extend(rows.into_iter().map(|row| row.session_id));
        }
        // The states, large, are read only for the sessions found, through the sort key.
        let mut states = self.sessions(&found)?;
        Ok(found.into_iter().filter_map(|id| states.remove(&id).map(|state| (id, state))).collect())
    }

    fn save_actors(&mut self, actors: &[(ActorHour, ActorState)]) -> Result<()> {
        #[derive(Serialize)]
        struct Row<'a> {
            actor: &'a str,
            hour: i64,
            state: String,
            version: i64,
        }
        if actors.is_empty() {
            return Ok(());
        }
        let mut body = Vec::new();
        for ((actor, hour), state) in actors {
            let row = Row { actor, hour: *hour, state: state_text(state)?, version: self.version };
            serde_json::to_writer(&mut body, &row)
                .map_err(|err| StoreError::new(err.to_string()))?;
            body.push(b'\n');
        }
        self.client.insert("detect_actors", &body)
    }

    fn save_sessions(&mut self, sessions: &[(String, Kept<'_>)]) -> Result<()> {
        #[derive(Serialize)]
        struct Row<'a> {
            session_id: &'a str,
            risk: u8,
            findings: Vec<String>,
            signals: String,
            state: String,
            actor: &'a str,
            first_ts: i64,
            last_ts: i64,
            requests: u64,
            version: i64,
        }
        if sessions.is_empty() {
            return Ok(());
        }
        let mut body = Vec::new();
        let mut states = Vec::with_capacity(sessions.len());
        for (session_id, kept) in sessions {
            let row = Row {
                session_id,
                risk: kept.scored.risk,
                findings: kept.scored.findings(),
                signals: signals::signals_json(&kept.scored.signals)?,
                state: state_text(kept.state)?,
                actor: &kept.actor,
                first_ts: kept.first_ts,
                last_ts: kept.last_ts,
                requests: kept.requests,
                version: self.version,
            };
            serde_json::to_writer(&mut body, &row)
                .map_err(|err| StoreError::new(err.to_string()))?;
            body.push(b'\n');
            states.push((session_id, row.state));
        }
        self.client.insert("session_detect", &body)?;
        for (session_id, state) in states {
            self.known.put(session_id, state);
        }
        Ok(())
    }
}

/// ` AND session_id IN (...)` selecting the sessions that pass the risk and signal filters;
/// empty when neither is set.
pub fn predicate(filter: &Filter) -> String {
    let mut having = Vec::new();
    if let Some(risk) = filter.risk_min {
        having.push(format!("argMax(risk, version) >= {risk}"));
    }
    if let Some(signal) = &filter.signal {
        having.push(format!("has(argMax(findings, version), {})", literal(signal)));
    }
    if having.is_empty() {
        return String::new();
    }
    format!(
        " AND session_id IN (SELECT session_id FROM session_detect GROUP BY session_id \
         HAVING {})",
        having.join(" AND ")
    )
}

/// Risk and findings of these sessions.
pub fn summaries(client: &Client, ids: &[&str]) -> Result<HashMap<String, (u8, Vec<String>)>> {
    #[derive(Deserialize)]
    struct Row {
        session_id: String,
        risk: u8,
        findings: Vec<String>,
    }
    let mut found = HashMap::new();
    for chunk in ids.chunks(LOOKUP_KEYS) {
        let rows: Vec<Row> = client.rows(&format!(
            "SELECT session_id, argMax(risk, version) AS risk,
                    argMax(findings, version) AS findings
             FROM session_detect WHERE session_id IN ({}) GROUP BY session_id",
            literals(chunk.iter().copied())
        ))?;
        found.extend(rows.into_iter().map(|row| (row.session_id, (row.risk, row.findings))));
    }
    Ok(found)
}

/// The detection of a session for its page: every signal, and its actor's other sessions
/// within `window_hours` around it.
pub fn session(
    client: &Client,
    session_id: &str,
    window_hours: u32,
    floor: i64,
) -> Result<SessionSignals> {
    #[derive(Deserialize)]
    struct Row {
        risk: u8,
        signals: String,
        actor: String,
        first_ts: i64,
        last_ts: i64,
    }
    let id = literal(session_id);
    let rows: Vec<Row> = client.rows(&format!(
        "SELECT argMax(risk, version) AS risk, argMax(signals, version) AS signals,
                argMax(actor, version) AS actor, argMax(first_ts, version) AS first_ts,
                argMax(last_ts, version) AS last_ts
         FROM session_detect WHERE session_id = {id} GROUP BY session_id"
    ))?;
    let Some(row) = rows.into_iter().next() else { return Ok(SessionSignals::default()) };
    let (from, to) = actor_window(row.first_ts, row.last_ts, window_hours);
    let (earliest, from) = (from - LONGEST_SESSION_MS, from.max(floor));
    let actor = literal(&row.actor);
    #[derive(Deserialize)]
    struct Other {
        session_id: String,
    }
    let others: Vec<Other> = client.rows(&format!(
        "SELECT session_id, argMax(actor, version) AS a, argMax(first_ts, version) AS f,
                argMax(last_ts, version) AS l
         FROM session_detect WHERE actor = {actor} AND first_ts >= {earliest}
               AND session_id != {id}
         GROUP BY session_id HAVING a = {actor} AND f <= {to} AND l >= {from}
         ORDER BY l DESC"
    ))?;
    let (ip, user_agent) = actor_parts(&row.actor);
    Ok(SessionSignals {
        risk: row.risk,
        signals: parse_signals(&row.signals),
        actor: Some(Actor {
            ip,
            user_agent,
            sessions: others.len() as u64,
            session_ids: others
                .into_iter()
                .take(ACTOR_SESSIONS_LISTED)
                .map(|other| other.session_id)
                .collect(),
        }),
    })
}

/// Forgets what belongs to sessions that ended before `cutoff`, and actor states no retained
/// session reads. Mutations: ClickHouse applies them in the background.
pub fn purge(client: &Client, cutoff: i64) -> Result<()> {
    client.execute(&format!("ALTER TABLE session_detect DELETE WHERE last_ts < {cutoff}"))?;
    let hour = cutoff.div_euclid(3_600_000) - ACTOR_GRACE_HOURS;
    client.execute(&format!("ALTER TABLE detect_actors DELETE WHERE hour < {hour}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_states_stay_within_their_bound() {
        let mut known = Known::default();
        let state = "A".repeat(KNOWN_BYTES / 4);
        for id in ["a", "b", "c"] {
            known.put(id, state.clone());
        }
        // Replacing a session's state counts its new size only.
        known.put("a", "AAAA".into());
        assert_eq!(known.bytes, 2 * state.len() + 4);
        known.put("d", state.clone());
        assert_eq!(known.bytes, 3 * state.len() + 4);
        // The next state would pass the bound: the cache starts again from it alone.
        known.put("f", state.clone());
        assert_eq!((known.states.len(), known.bytes), (1, state.len()));
        assert!(known.states.contains_key("f"));
    }
}
