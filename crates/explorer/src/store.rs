//! Where records live: the storage interface the API, the UI and the ingest paths share.
//!
//! Everything above this module talks to `dyn Store`: the default backend is SQLite
//! ([`sqlite::SqliteStore`]), one file on the explorer's machine; `--store clickhouse=URL`
//! ([`clickhouse::ClickHouseStore`]) keeps the records of many nodes in a ClickHouse server
//! with the same answers.

pub mod clickhouse;
pub mod denylist;
pub mod endpoints;
mod list;
pub mod signals;
pub mod sqlite;
pub mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use api_sessions_core::time::Millis;
use serde::Serialize;
use utoipa::ToSchema;

pub use self::list::{
    Aggregates, Direction, ListCursor, ListQuery, Order, SessionKey, Sort, SortKey, Window,
};
use self::signals::{Detection, SessionSignals};
use self::values::ValueKind;
use crate::batch::Batch;
use crate::endpoints::stats::Part;
use crate::endpoints::Endpoints;
use endpoints::{Counted, EndpointKey, Measured, Rank, Totals};

/// Slices of a session's timeline.
pub const TIMELINE_BINS: usize = 60;

/// How many related sessions a session page lists.
pub const RELATED_LIMIT: usize = 100;

/// Which store `--store` selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The SQLite file named by `--db`.
    Sqlite,
    ClickHouse(clickhouse::Config),
}

impl Backend {
    /// `sqlite` or `clickhouse=URL`.
    pub fn parse(text: &str) -> std::result::Result<Backend, String> {
        if text == "sqlite" {
            return Ok(Backend::Sqlite);
        }
        if let Some(url) = text.strip_prefix("clickhouse=") {
            return clickhouse::Config::parse(url).map(Backend::ClickHouse);
        }
        // The text may be a mistyped URL with a password in it: quoted only when it has none.
        let quoted = if text.contains('@') { "…" } else { text };
        Err(format!("invalid store \"{quoted}\": use sqlite or clickhouse=URL"))
    }

    /// Opens the store with the defaults: no OpenAPI documents, default detection.
    pub fn open(&self, db: &Path, retention_ms: i64) -> Result<Arc<dyn Store>> {
        self.open_with(db, retention_ms, Arc::default(), Detection::default())
    }

    /// Opens the store; `db` is the SQLite file. Records get their endpoints from `endpoints`
    /// (the OpenAPI documents given, if any), and sessions are scored as `detection` says.
    pub fn open_with(
        &self,
        db: &Path,
        retention_ms: i64,
        endpoints: Arc<Endpoints>,
        detection: Detection,
    ) -> Result<Arc<dyn Store>> {
        Ok(match self {
            Backend::Sqlite => {
                Arc::new(sqlite::SqliteStore::open_with(db, retention_ms, endpoints, detection)?)
            }
            Backend::ClickHouse(config) => Arc::new(clickhouse::ClickHouseStore::open_with(
                config.clone(),
                retention_ms,
                endpoints,
                detection,
            )?),
        })
    }

    /// Where records are kept, for messages.
    pub fn describe(&self, db: &Path) -> String {
        match self {
            Backend::Sqlite => format!("database {}", db.display()),
            Backend::ClickHouse(config) => config.describe(),
        }
    }
}

/// What one ingest call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IngestCounts {
    pub accepted: u64,
    pub duplicates: u64,
}

impl std::ops::AddAssign for IngestCounts {
    fn add_assign(&mut self, other: Self) {
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
    }
}

/// How far a followed file has been read; committed together with the records it produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowPosition {
    pub path: String,
    pub inode: u64,
    pub offset: u64,
    /// The last line read, to notice the file being rewritten under the offset.
    pub last_line: LineMark,
}

/// Identifies a line by its length and a checksum of its start (where a record keeps its
/// time and request id).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineMark {
    pub len: u64,
    pub crc: u32,
}

/// Which statuses a filter selects: one code (`404`) or a class (`4xx`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFilter {
    Code(u16),
    Class(u16),
}

impl StatusFilter {
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if let Some(class) = text.strip_suffix("xx").or_else(|| text.strip_suffix("XX")) {
            let class: u16 = class.parse().ok()?;
            return (1..=5).contains(&class).then_some(StatusFilter::Class(class));
        }
        let code: u16 = text.parse().ok()?;
        (100..=999).contains(&code).then_some(StatusFilter::Code(code))
    }

    /// The inclusive range of codes selected.
    pub fn range(self) -> (u16, u16) {
        match self {
            StatusFilter::Code(code) => (code, code),
            StatusFilter::Class(class) => (class * 100, class * 100 + 99),
        }
    }
}

impl fmt::Display for StatusFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusFilter::Code(code) => write!(f, "{code}"),
            StatusFilter::Class(class) => write!(f, "{class}xx"),
        }
    }
}

/// Which malicious requests a filter selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttackFilter {
    /// Any malicious request (`attack=any`).
    Any,
    Kind(String),
}

impl AttackFilter {
    pub const ANY: &'static str = "any";

    pub fn parse(text: &str) -> Self {
        if text == Self::ANY {
            AttackFilter::Any
        } else {
            AttackFilter::Kind(text.to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            AttackFilter::Any => Self::ANY,
            AttackFilter::Kind(kind) => kind,
        }
    }
}

/// The filters of `GET /api/sessions` and of the session page.
///
/// `user`, `role`, `flow` and `ua` describe the session as a whole: each matches any value seen
/// in the session (`ua` any User-Agent containing it), case-insensitively, so they select
/// sessions and leave their requests alone. Every other field is a predicate on requests: a
/// session is listed when at least one of its requests matches, and only the matching requests
/// are counted and shown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub from: Option<Millis>,
    /// Inclusive.
    pub to: Option<Millis>,
    pub user: Option<String>,
    pub role: Option<String>,
    pub flow: Option<String>,
    /// A part of a User-Agent seen in the session.
    pub ua: Option<String>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub method: Option<String>,
    pub status: Option<StatusFilter>,
    /// Case-insensitive.
    pub attack: Option<AttackFilter>,
    /// Free text over path, parameters, user and the attack request line; ASCII case-insensitive.
    pub q: Option<String>,
    /// Requests to one endpoint, `METHOD TEMPLATE`, on any server.
    pub endpoint: Option<String>,
    /// Sessions whose risk is at least this.
    pub risk_min: Option<u8>,
    /// Sessions with this finding (a signal name, see `detect::SignalName`).
    pub signal: Option<String>,
}

impl Filter {
    /// Whether any request-level predicate is set.
    pub fn selects_requests(&self) -> bool {
        self.from.is_some()
            || self.to.is_some()
            || self.request_id.is_some()
            || self.ip.is_some()
            || self.method.is_some()
            || self.status.is_some()
            || self.attack.is_some()
            || self.q.is_some()
            || self.endpoint.is_some()
    }

    /// The same filter without its request-level predicates ("Show all requests").
    pub fn session_level(&self) -> Filter {
        Filter {
            user: self.user.clone(),
            role: self.role.clone(),
            flow: self.flow.clone(),
            ua: self.ua.clone(),
            risk_min: self.risk_min,
            signal: self.signal.clone(),
            ..Filter::default()
        }
    }

    /// The filters on the values seen in the session, with what each asks for.
    pub fn session_values(&self) -> Vec<(ValueKind, &str)> {
        [
            (ValueKind::User, &self.user),
            (ValueKind::Role, &self.role),
            (ValueKind::Flow, &self.flow),
            (ValueKind::UserAgent, &self.ua),
        ]
        .into_iter()
        .filter_map(|(kind, value)| Some((kind, value.as_deref()?)))
        .collect()
    }

    /// Whether a filter on the session's detection is set.
    pub fn selects_detection(&self) -> bool {
        self.risk_min.is_some() || self.signal.is_some()
    }
}

/// A position in a session's requests: the time and id of the last request on a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub ts: i64,
    pub id: i64,
}

impl Cursor {
    pub fn parse(text: &str) -> Option<Self> {
        let (ts, id) = text.split_once('.')?;
        Some(Cursor { ts: ts.parse().ok()?, id: id.parse().ok()? })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.ts, self.id)
    }
}

/// One session as listed, counted over the requests the filter selects.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct SessionSummary {
    pub session_id: String,
    #[schema(value_type = String, format = DateTime)]
    pub first_ts: Millis,
    #[schema(value_type = String, format = DateTime)]
    pub last_ts: Millis,
    pub requests: u64,
    /// The user of the latest request that had one.
    pub user: Option<String>,
    /// Every user seen in the session, in order of first use.
    pub users: Vec<String>,
    pub role: Option<String>,
    pub flows: BTreeMap<String, u64>,
    pub ips: Vec<String>,
    pub attacks: u64,
    pub nodes: Vec<String>,
    /// Every User-Agent seen in the session, in order of first use.
    pub user_agents: Vec<String>,
    pub key_hash: String,
    /// Label of the key that resolved the session, e.g. `cookie:PHPSESSID`.
    pub session_key: String,
    #[schema(value_type = String, format = DateTime)]
    pub session_start: Millis,
    /// 0 to 100, over the whole session (see `detect`).
    pub risk: u8,
    /// The names of the signals scoring 0.5 or more, highest first.
    pub signals: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct SessionPage {
    pub sessions: Vec<SessionSummary>,
    /// Every session the filter selects, on any page.
    pub total: u64,
    pub next_cursor: Option<String>,
    pub prev_cursor: Option<String>,
}

impl SessionPage {
    pub fn new(
        sessions: Vec<SessionSummary>,
        total: u64,
        window: (Option<ListCursor>, Option<ListCursor>),
    ) -> Self {
        let (next, prev) = window;
        SessionPage {
            sessions,
            total,
            next_cursor: next.map(|cursor| cursor.to_string()),
            prev_cursor: prev.map(|cursor| cursor.to_string()),
        }
    }
}

/// Distributions over the selected requests of one session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Stats {
    pub methods: BTreeMap<String, u64>,
    pub statuses: BTreeMap<String, u64>,
    pub ips: BTreeMap<String, u64>,
    pub attacks: BTreeMap<String, u64>,
    pub flows: BTreeMap<String, u64>,
}

/// A stored request: its position in the session and the record as received.
#[derive(Clone, Debug)]
pub struct StoredRequest {
    pub position: Cursor,
    pub json: String,
}

/// A page of one session's selected requests, oldest first.
#[derive(Clone, Debug, Default)]
pub struct RequestPage {
    pub requests: Vec<StoredRequest>,
    /// How many selected requests come before the page.
    pub offset: u64,
    /// Where the next page starts, when there is one.
    pub next: Option<Cursor>,
}

impl RequestPage {
    /// A page of `limit` requests from up to `limit + 1` fetched in order: one more than the
    /// page says there is a next page, starting after the page's last request.
    pub fn from_fetched(mut requests: Vec<StoredRequest>, limit: usize) -> Self {
        let next = if requests.len() > limit {
            requests.truncate(limit);
            requests.last().map(|last| last.position)
        } else {
            None
        };
        RequestPage { requests, offset: 0, next }
    }
}

/// When a session's selected requests happened: equal slices of time from the first to the
/// last, each counting its requests by outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Timeline {
    #[schema(value_type = String, format = DateTime)]
    pub start: Millis,
    #[schema(value_type = String, format = DateTime)]
    pub end: Millis,
    pub bins: Vec<TimelineBin>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct TimelineBin {
    /// Status below 400.
    pub ok: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    /// Malicious requests, whatever their status.
    pub attacks: u64,
}

/// One session with its statistics, related sessions and a page of its requests.
#[derive(Clone, Debug)]
pub struct SessionDetail {
    pub session: SessionSummary,
    pub stats: Stats,
    pub timeline: Timeline,
    /// Other sessions with the same key hash, most recent first.
    pub related: Vec<String>,
    pub requests: RequestPage,
    /// Every signal with its detail and evidence, and the session's actor.
    pub detection: SessionSignals,
}

/// What a retention purge removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeCounts {
    pub requests: u64,
    pub sessions: u64,
}

#[derive(Debug)]
pub struct StoreError(String);

impl StoreError {
    pub fn new(message: impl Into<String>) -> Self {
        StoreError(message.into())
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError(err.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The smallest string above every string that starts with `prefix` (strings compare by code
/// point, as UTF-8 bytes do), for a range scan over ids; `None` when there is none.
pub fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// A session store. Calls block (disk, network): async callers go through `spawn_blocking`.
///
/// Nothing older than the store's retention is ever returned, purged yet or not.
pub trait Store: Send + Sync + 'static {
    /// Stores a batch atomically. Records already stored (same `node`,`pid`,`seq` or same
    /// `request_id`) are counted as duplicates. A `position` is committed with the batch, so a
    /// follower that restarts neither skips nor repeats lines.
    ///
    /// Each record is stored as the text it arrived as, so optional extras the explorer does
    /// not know about (`traceparent`, fields of later minor versions) survive into the API.
    fn ingest(&self, batch: Batch, position: Option<FollowPosition>) -> Result<IngestCounts>;

    /// The last committed position of a followed file.
    fn follow_position(&self, path: &str) -> Result<Option<FollowPosition>>;

    /// How long records are kept (`--retention`), in milliseconds, for the pages to state it.
    fn retention_ms(&self) -> i64;

    /// A page of the sessions matching the query's filter, in its order, with the number of
    /// all of them.
    fn list_sessions(&self, query: &ListQuery) -> Result<SessionPage>;

    /// One session with its requests selected by the request-level predicates of `filter`;
    /// `None` when the session does not exist (or is older than the retention).
    fn session(
        &self,
        session_id: &str,
        filter: &Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Option<SessionDetail>>;

    /// A page of a session's selected requests, for exports that walk all of them; `None`
    /// when the session does not exist (or is older than the retention).
    fn session_requests(
        &self,
        session_id: &str,
        filter: &Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Option<RequestPage>>;

    /// Up to `limit` ids of retained sessions that start with `prefix`, in id order.
    fn session_ids_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>>;

    /// Up to `limit` of the values of `kind` seen in retained sessions that start with `text`
    /// (for User-Agents: that contain it), compared case-insensitively, one per folded form, in
    /// the order of their folded forms.
    fn suggest(&self, kind: ValueKind, text: &str, limit: usize) -> Result<Vec<String>>;

    /// Deletes everything older than the retention.
    fn purge(&self) -> Result<PurgeCounts>;

    /// The endpoints called within `range`, with their statistics over exactly that range,
    /// in the order of their keys.
    fn endpoints(&self, range: &EndpointRange) -> Result<Vec<Measured>>;

    /// The full statistics of the endpoints `rank` chooses among those called within `range`
    /// (`range.only` is ignored), from the [`Totals`] of all of them and the part of their
    /// statistics it asks for, all read from the same state of the store: so a page ordered by
    /// the totals or by that part shows figures that agree with its order. This default
    /// measures everything in full; a store that keeps the totals apart reads them without
    /// touching the sketches, or only the one asked for.
    fn endpoint_ranking(
        &self,
        range: &EndpointRange,
        rank: &mut dyn Rank,
    ) -> Result<Vec<Measured>> {
        let all_range = EndpointRange { only: None, ..range.clone() };
        let all = self.endpoints(&all_range)?;
        let part = rank.part();
        let counted: Vec<Counted> = all
            .iter()
            .map(|m| Counted {
                endpoint: m.endpoint.clone(),
                totals: Totals::of(&m.stats),
                part: if part == Part::All { Default::default() } else { m.stats.clone() },
            })
            .collect();
        let wanted: std::collections::HashSet<EndpointKey> =
            rank.pick(&counted).into_iter().collect();
        Ok(all.into_iter().filter(|m| wanted.contains(&m.endpoint)).collect())
    }

    /// The endpoints of some requests of a session, given by their positions, in the same
    /// order; `None` for a request stored without one (or not found).
    fn request_endpoints(
        &self,
        session_id: &str,
        requests: &[Cursor],
    ) -> Result<Vec<Option<EndpointKey>>>;

    /// Applies a change to the denylist and writes it to the audit log, as one step: the
    /// list's new version, or `None` for an unblock of a key that is not on the list.
    fn change_denylist(&self, change: &denylist::Change) -> Result<denylist::Changed>;

    /// The denylist's entries (expired ones too, until the purge) and version.
    fn denylist(&self) -> Result<denylist::Denylist>;

    /// The audit log within the retention, newest first: every change, or those of one key.
    fn denylist_audit(
        &self,
        key_hash: Option<&str>,
        limit: usize,
    ) -> Result<Vec<denylist::AuditEntry>>;

    /// The key hash and risk of those of `session_ids` that are stored, as
    /// `(session_id, key_hash, risk)`.
    fn session_risks(&self, session_ids: &[String]) -> Result<Vec<(String, String, u8)>>;
}

/// Which requests endpoint statistics count: a time range (inclusive, within the retention),
/// and only some endpoints when `only` says so.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointRange {
    pub from: Option<Millis>,
    pub to: Option<Millis>,
    pub only: Option<Vec<EndpointKey>>,
}
