//! Risk and signals kept up to date at ingest, the part both stores share.
//!
//! Each store keeps, per session, the detector's [`SessionState`] and its latest scoring, and
//! per actor (IP address and User-Agent) and hour an [`ActorState`]. A transaction of records
//! is first observed into partial states ([`Observed`]), in memory; [`apply`] then merges them
//! into the stored states through the store's [`Keep`], and rescores the sessions the
//! transaction touched together with the short sessions of the actors it touched (their
//! `identity_churn` and `auth_failures` read the actor). States merge exactly whatever the
//! order records come in, so the scores do not depend on it; and nothing is ever re-read from
//! the records.

use std::borrow::Borrow;
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use serde::Serialize;

use super::{Result, StoreError};
use crate::batch::{Batch, RecordRef};
use crate::detect::sketch::Stamp;
use crate::detect::{
    self, ActorKey, ActorRef, ActorState, Config, Flows, Request, SessionState, Signal,
};

const HOUR_MS: i64 = 3_600_000;

/// A signal at this score or above is a finding: listed with the session, and what the
/// `signal=` filter matches.
pub const FINDING: f64 = 0.5;

/// How many short sessions of one actor a transaction rescores at most: beyond a hundred, the
/// actor's figures are saturated ("more than 100 sessions"), and the newest sessions are the
/// ones looked at.
pub const ACTOR_RESCORE_LIMIT: usize = 1000;

/// Whether sessions are scored at ingest, and under which thresholds (`--detect`).
#[derive(Clone, Debug)]
pub enum Detection {
    /// `--detect off`: nothing is scored; every session's risk stays 0.
    Off,
    On(Arc<Config>),
}

impl Default for Detection {
    fn default() -> Self {
        Detection::On(Arc::new(Config::default()))
    }
}

impl Detection {
    /// The value of `--detect`: `off`, or a detection file (defaults without one).
    pub fn from_option(value: Option<&std::path::Path>) -> std::result::Result<Self, String> {
        match value {
            None => Ok(Detection::default()),
            Some(path) if path.as_os_str() == "off" => Ok(Detection::Off),
            Some(path) => Config::load(path)
                .map(|config| Detection::On(Arc::new(config)))
                .map_err(|err| format!("invalid detection file: {err}")),
        }
    }

    pub fn config(&self) -> Option<&Config> {
        match self {
            Detection::Off => None,
            Detection::On(config) => Some(config),
        }
    }

    /// Hours on each side of a session in which its actor's sessions count.
    pub fn window_hours(&self) -> u32 {
        self.config().map_or(Config::default().identity_churn.window_hours, |config| {
            config.identity_churn.window_hours
        })
    }
}

/// What the detector reads of a stored record.
pub fn request_of<'b>(record: &RecordRef<'b>) -> Request<'b> {
    Request {
        ts: record.ts(),
        request_id: record.request_id(),
        session_id: record.session_id(),
        session_key: record.session_key(),
        session_key_builtin: record.session_key_builtin(),
        method: record.method(),
        path: record.path(),
        status: record.status(),
        ip: record.ip(),
        user_agent: record.user_agent(),
        user: record.user(),
        role: record.role(),
        flows: Flows::from_names(record.flows()),
        attack: record.attack(),
    }
}

/// An actor as the stores key it: `["ip","user agent"]` (or `null` for none) as JSON, one
/// text that tells a missing User-Agent from an empty one.
pub fn actor_text(ip: &str, user_agent: Option<&str>) -> String {
    serde_json::to_string(&(ip, user_agent)).expect("strings serialize")
}

/// The IP address and User-Agent of an actor text.
pub fn actor_parts(text: &str) -> (String, Option<String>) {
    serde_json::from_str(text).unwrap_or_else(|_| (text.to_owned(), None))
}

/// One actor in one hour, as stored.
pub type ActorHour = (String, i64);

fn actor_hour(key: &ActorKey) -> ActorHour {
    (actor_text(&key.ip, key.user_agent.as_deref()), key.hour)
}

/// The partial states of the records of one transaction, by session key (the store's own)
/// and by actor and hour.
pub struct Observed<K> {
    sessions: HashMap<K, SessionState>,
    actors: HashMap<ActorHour, ActorState>,
}

impl<K: Clone + Eq + Hash> Default for Observed<K> {
    fn default() -> Self {
        Observed { sessions: HashMap::new(), actors: HashMap::new() }
    }
}

impl<K: Clone + Eq + Hash> Observed<K> {
    /// Adds a record stored under session `key`.
    pub fn observe<Q>(&mut self, key: &Q, record: &RecordRef<'_>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let request = request_of(record);
        self.observe_session(key, &request);
        let actor = actor_hour(&ActorKey::of(&request));
        self.actors.entry(actor).or_default().observe(&request);
    }

    fn observe_session<Q>(&mut self, key: &Q, request: &Request<'_>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        match self.sessions.get_mut(key) {
            Some(state) => state.observe(request),
            None => {
                self.sessions.insert(key.to_owned(), SessionState::of(request));
            }
        }
    }

    /// Adds what `other` observed, taking its states rather than copying them; its sessions
    /// are stored under the keys `key` gives (those it gives none are left out).
    pub fn merge_keyed<J>(&mut self, other: Observed<J>, mut key: impl FnMut(&J) -> Option<K>) {
        for (theirs, state) in other.sessions {
            let Some(mine) = key(&theirs) else { continue };
            match self.sessions.entry(mine) {
                Entry::Occupied(entry) => entry.into_mut().merge(&state),
                Entry::Vacant(entry) => {
                    entry.insert(state);
                }
            }
        }
        for (actor, state) in other.actors {
            match self.actors.entry(actor) {
                Entry::Occupied(entry) => entry.into_mut().merge(&state),
                Entry::Vacant(entry) => {
                    entry.insert(state);
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

impl Observed<String> {
    /// The partial states of a batch's records by session id. A store computes them where the
    /// batch is handed over, on the sender's thread, so that its writer only merges them
    /// (see [`Observed::merge_keyed`]).
    pub fn of_batch(batch: &Batch) -> Self {
        let mut observed = Observed::default();
        // Grouped by the borrowed actor first: each actor-hour's key is built once, not once
        // per record.
        let mut actors: HashMap<ActorRef<'_>, ActorState> = HashMap::new();
        for record in batch.iter() {
            let request = request_of(&record);
            observed.observe_session(record.session_id(), &request);
            actors.entry(ActorRef::of(&request)).or_default().observe(&request);
        }
        observed.actors = actors
            .into_iter()
            .map(|(actor, state)| ((actor_text(actor.ip, actor.user_agent), actor.hour), state))
            .collect();
        observed
    }
}

/// A session's latest scoring.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Scored {
    pub risk: u8,
    /// Every signal scoring above 0, highest first.
    pub signals: Vec<Signal>,
}

impl Scored {
    /// The names of the findings, highest score first.
    pub fn findings(&self) -> Vec<String> {
        findings(&self.signals)
    }
}

/// The names of the signals scoring [`FINDING`] or more, highest score first.
pub fn findings(signals: &[Signal]) -> Vec<String> {
    signals
        .iter()
        .filter(|signal| signal.score >= FINDING)
        .map(|signal| signal.name.as_str().to_owned())
        .collect()
}

/// A session as kept for detection: its state and what the store indexes of it.
pub struct Kept<'s> {
    pub state: &'s SessionState,
    /// Whether the state changed (else only the scoring is written).
    pub changed: bool,
    /// Whether what the store finds the session by changed too: its actor or its first
    /// request (always so for a session without a stored state).
    pub moved: bool,
    /// The actor of its first request ([`actor_text`]).
    pub actor: String,
    pub first_ts: i64,
    pub last_ts: i64,
    pub requests: u64,
    pub scored: Scored,
}

/// An actor whose short sessions are rescored, and the time around the hours it was seen in:
/// `from..to`, in milliseconds.
pub struct ActorSpan<'a> {
    pub actor: &'a str,
    pub from: i64,
    pub to: i64,
}

/// Where a store keeps detector states.
pub trait Keep {
    /// The store's key of a session.
    type Key: Clone + Eq + Hash + Ord;

    /// The stored states of these sessions (those that have one).
    fn sessions(&mut self, keys: &[Self::Key]) -> Result<HashMap<Self::Key, SessionState>>;

    /// The stored states of these actor-hours (those that have one).
    fn actors(&mut self, keys: &[ActorHour]) -> Result<HashMap<ActorHour, ActorState>>;

    /// The sessions of each span's actor with at most `max_requests` requests that have a
    /// request in the span, newest first, at most `limit` of each actor, with their states.
    fn short_sessions(
        &mut self,
        spans: &[ActorSpan<'_>],
        max_requests: u64,
        limit: usize,
    ) -> Result<Vec<(Self::Key, SessionState)>>;

    fn save_actors(&mut self, actors: &[(ActorHour, ActorState)]) -> Result<()>;

    fn save_sessions(&mut self, sessions: &[(Self::Key, Kept<'_>)]) -> Result<()>;
}

/// A session a transaction rescores: its state, and what of its row changes (see [`Kept`]).
struct Rescore {
    state: SessionState,
    changed: bool,
    moved: bool,
}

/// Merges what a transaction observed into the stored states and rescores every session whose
/// score it may have changed.
pub fn apply<S: Keep>(keep: &mut S, observed: Observed<S::Key>, config: &Config) -> Result<()> {
    if observed.is_empty() {
        return Ok(());
    }
    let window = config.identity_churn.window_hours;
    let short = config.identity_churn.short_session;

    let keys: Vec<S::Key> = observed.sessions.keys().cloned().collect();
    let mut stored = keep.sessions(&keys)?;
    let mut sessions: HashMap<S::Key, Rescore> = HashMap::new();
    for (key, partial) in observed.sessions {
        // A new session's state is its partial one (the empty state merges into nothing).
        let (state, moved) = match stored.remove(&key) {
            Some(mut state) => {
                let before = found_by(&state);
                state.merge(&partial);
                let moved = before.is_none() || before != found_by(&state);
                (state, moved)
            }
            None => (partial, true),
        };
        sessions.insert(key, Rescore { state, changed: true, moved });
    }

    let actor_keys: Vec<ActorHour> = observed.actors.keys().cloned().collect();
    let mut actors = keep.actors(&actor_keys)?;
    let mut changed_actors = Vec::with_capacity(observed.actors.len());
    for (key, partial) in observed.actors {
        let state = actors.entry(key.clone()).or_default();
        state.merge(&partial);
        changed_actors.push((key, state.clone()));
    }
    keep.save_actors(&changed_actors)?;

    // The short sessions of the touched actors around the touched hours read those actors.
    let mut touched: HashMap<&str, (i64, i64)> = HashMap::new();
    for ((actor, hour), _) in &changed_actors {
        let span = touched.entry(actor.as_str()).or_insert((*hour, *hour));
        span.0 = span.0.min(*hour);
        span.1 = span.1.max(*hour);
    }
    let window_ms = i64::from(window) * HOUR_MS;
    let spans: Vec<ActorSpan<'_>> = touched
        .into_iter()
        .map(|(actor, (first, last))| ActorSpan {
            actor,
            from: first * HOUR_MS - window_ms,
            to: (last + 1) * HOUR_MS + window_ms,
        })
        .collect();
    for (key, state) in keep.short_sessions(&spans, short, ACTOR_RESCORE_LIMIT)? {
        sessions.entry(key).or_insert(Rescore { state, changed: false, moved: false });
    }

    // Every actor-hour the rescored sessions read, loaded once.
    let mut needed: BTreeSet<ActorHour> = BTreeSet::new();
    for Rescore { state, .. } in sessions.values() {
        if state.requests() <= short {
            needed.extend(state.actor_keys(window).iter().map(actor_hour));
        }
    }
    let missing: Vec<ActorHour> =
        needed.iter().filter(|key| !actors.contains_key(*key)).cloned().collect();
    actors.extend(keep.actors(&missing)?);

    let mut ordered: Vec<(&S::Key, &Rescore)> = sessions.iter().collect();
    ordered.sort_by(|a, b| a.0.cmp(b.0));
    let mut kept = Vec::with_capacity(ordered.len());
    for (key, Rescore { state, changed, moved }) in ordered {
        let Some(origin) = state.origin() else { continue };
        let mut actor = ActorState::default();
        let mut seen = HashSet::new();
        if state.requests() <= short {
            for part in state.actor_keys(window) {
                let part = actor_hour(&part);
                if let Some(found) = actors.get(&part).filter(|_| seen.insert(part.clone())) {
                    actor.merge(found);
                }
            }
        }
        let signals = detect::score(state, Some(&actor), config);
        let scored = Scored { risk: detect::risk(&signals), signals };
        let Some((first_ts, last_ts)) = state.time_range() else { continue };
        kept.push((
            key.clone(),
            Kept {
                state,
                changed: *changed,
                moved: *moved,
                actor: actor_text(&origin.ip, origin.user_agent.as_deref()),
                first_ts,
                last_ts,
                requests: state.requests(),
                scored,
            },
        ));
    }
    keep.save_sessions(&kept)
}

/// What a store finds a session's state by, the actor of its first request and its time, as
/// a key that changes whenever they do: a merge replaces the origin only by an earlier one.
fn found_by(state: &SessionState) -> Option<(i64, Stamp)> {
    let (first, _) = state.time_range()?;
    Some((first, state.origin()?.stamp.clone()))
}

/// The signals of a stored scoring, as the store keeps them (JSON).
pub fn signals_json(signals: &[Signal]) -> Result<String> {
    serde_json::to_string(signals).map_err(|err| StoreError::new(err.to_string()))
}

/// Reads the signals a store kept; a text that does not parse (written by another version)
/// reads as none.
pub fn parse_signals(text: &str) -> Vec<Signal> {
    serde_json::from_str(text).unwrap_or_default()
}

/// The first byte of a state in its stored encoding: [`STATE_ENCODING`], then the state in
/// `postcard` (varints, no field names, request ids as 16 bytes).
///
/// Every batch rewrites the state of each session and actor-hour it touched, so what a state
/// weighs is what detection costs at ingest: as JSON a session's state is about 5 KB (numbers
/// in decimal, hashes of 20 digits, request ids as 32 hex digits, every field named); encoded
/// it is about a third of that, and faster to write and to read. Databases written before
/// kept JSON, which starts with `{`: [`decode_state`] reads both, and a state is rewritten
/// encoded the next time its session or actor-hour is touched.
pub const STATE_ENCODING: u8 = 1;

/// A state as a store keeps it (see [`STATE_ENCODING`]).
pub fn encode_state<T: Serialize>(state: &T) -> Result<Vec<u8>> {
    postcard::to_extend(state, vec![STATE_ENCODING]).map_err(|err| StoreError::new(err.to_string()))
}

/// Reads a kept state, encoded or JSON (see [`STATE_ENCODING`]); one that does not parse
/// (written by another version) starts over.
pub fn decode_state<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> T {
    match bytes.split_first() {
        Some((&STATE_ENCODING, encoded)) => postcard::from_bytes(encoded).unwrap_or_default(),
        Some((b'{', _)) => serde_json::from_slice(bytes).unwrap_or_default(),
        _ => T::default(),
    }
}

/// The actor of a session as the session page shows it: the other sessions of the same IP
/// address and User-Agent within the detection window around it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Actor {
    pub ip: String,
    pub user_agent: Option<String>,
    /// How many other sessions it has in the window.
    pub sessions: u64,
    /// Up to [`ACTOR_SESSIONS_LISTED`] of them, most recent first.
    pub session_ids: Vec<String>,
}

/// Sessions of an actor a session page lists.
pub const ACTOR_SESSIONS_LISTED: usize = 50;

/// A session's detection as the session page shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SessionSignals {
    pub risk: u8,
    pub signals: Vec<Signal>,
    pub actor: Option<Actor>,
}

/// The window of the actor's sessions around a session: `window_hours` before its first
/// request and after its last.
pub fn actor_window(first_ts: i64, last_ts: i64, window_hours: u32) -> (i64, i64) {
    let window = i64::from(window_hours) * HOUR_MS;
    (first_ts - window, last_ts + window)
}

#[cfg(test)]
mod tests {
    use api_sessions_core::record::Record;

    use super::*;
    use api_sessions_core::testing::plain_record;

    /// Requests of three sessions from two addresses, two User-Agents (one of them none)
    /// and three hours.
    fn batch() -> Batch {
        let mut batch = Batch::default();
        for n in 0..60u64 {
            let record = Record {
                session_id: format!("s{}", n % 3),
                key_hash: format!("k{}", n % 3),
                method: "POST".into(),
                path: format!("/orders/{n}"),
                status: [200, 401, 404][(n % 3) as usize],
                ip: ["192.0.2.1", "192.0.2.2"][(n % 2) as usize].into(),
                user_agent: (n % 5 != 0).then(|| "curl/8.5.0".into()),
                user: Some(format!("u{}", n % 4)),
                flows: vec!["auth".into()],
                ..plain_record("s0", n, 1_795_341_600_000 + n as i64 * 170_000)
            };
            batch.push_record(&record).unwrap();
        }
        batch
    }

    /// A batch observed where it is handed over holds the states of its records observed one
    /// by one, as the writer does for a batch with duplicates.
    #[test]
    fn a_batch_is_observed_as_its_records_are() {
        let batch = batch();
        let whole = Observed::of_batch(&batch);
        let mut one_by_one = Observed::<String>::default();
        for record in batch.iter() {
            one_by_one.observe(record.session_id(), &record);
        }
        assert_eq!(whole.sessions.len(), 3);
        assert_eq!(whole.actors.len(), 12, "{:?}", whole.actors.keys());
        assert_eq!(whole.sessions, one_by_one.sessions);
        assert_eq!(whole.actors, one_by_one.actors);
    }
}
