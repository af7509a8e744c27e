//! What the detector keeps: one [`SessionState`] per session and one [`ActorState`] per
//! actor (IP address and User-Agent) and hour.
//!
//! Both are built only of the mergeable pieces of [`super::sketch`], so a state is a
//! commutative monoid: `observe(request)` is `merge(State::of(request))`, and any two partial
//! states (two explorer instances, two parts of a column store, a spool replayed late) merge
//! into the state of all their requests together. Both are bounded whatever the number of
//! requests, and hold facts only: thresholds are applied when scoring.

use serde::{Deserialize, Serialize};

use super::endpoint::endpoint_of;
use super::sketch::{
    clip, hash, Capped, Counts, Distinct, Earliest, Entry, RequestId, Smallest, Stamp,
};
use super::{Flow, Request, ABUSE_FLOWS};

/// Timestamps kept for timing: the session's first ones.
pub const TIMES: usize = 64;
/// Distinct values counted exactly before a count saturates; at most 100, the most ClickHouse's
/// `uniqUpTo` counts.
pub const DISTINCT_PATHS: usize = 100;
pub const DISTINCT_IDS: usize = 100;
pub const DISTINCT_USERS: usize = 32;
pub const DISTINCT_ENDPOINTS: usize = 64;
pub const DISTINCT_AGENTS: usize = 16;
pub const DISTINCT_SESSIONS: usize = 100;
/// Evidence kept per category.
pub const EVIDENCE: usize = 5;

/// Keys of the keyed tables kept per session.
const ENDPOINTS: usize = 24;
const OBJECT_TEMPLATES: usize = 8;
const AGENTS: usize = 4;
const ATTACK_KINDS: usize = 8;
const ROLES: usize = 4;

/// Bytes kept of texts from the records.
const MAX_AGENT: usize = 256;
const MAX_KEY_TEXT: usize = 64;
/// Minutes in the per-minute counts: a day. Sessions are split daily or at the zone's `max`
/// (24 hours by default); a longer session folds its minutes a day apart onto each other.
pub const MINUTES: i64 = 1440;

/// The status as counted: anything outside 100-599 counts as 0, which bounds the counts by
/// status to 501 keys whatever a hostile record says.
fn status_key(status: u16) -> u16 {
    if (100..=599).contains(&status) {
        status
    } else {
        0
    }
}

/// Minute of the UTC day.
pub fn minute_of(ts: i64) -> u16 {
    ts.div_euclid(60_000).rem_euclid(MINUTES) as u16
}

/// The session's first request and whose it was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub stamp: Stamp,
    pub ip: Box<str>,
    pub user_agent: Option<Box<str>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointEntry {
    pub template: Box<str>,
    pub requests: u64,
    pub first: Earliest<3>,
}

impl Entry for EndpointEntry {
    fn merge(&mut self, other: &Self) {
        self.requests += other.requests;
        self.first.merge(&other.first);
    }

    fn heap_bytes(&self) -> usize {
        self.template.len() + self.first.heap_bytes()
    }
}

/// An endpoint template with object ids in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    pub template: Box<str>,
    pub requests: u64,
    pub ids: Distinct<DISTINCT_IDS>,
    pub first: Earliest<EVIDENCE>,
}

impl Entry for ObjectEntry {
    fn merge(&mut self, other: &Self) {
        self.requests += other.requests;
        self.ids.merge(&other.ids);
        self.first.merge(&other.first);
    }

    fn heap_bytes(&self) -> usize {
        self.template.len() + self.ids.heap_bytes() + self.first.heap_bytes()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentEntry {
    /// `None`: requests without a User-Agent.
    pub user_agent: Option<Box<str>>,
    pub requests: u64,
    pub first: Earliest<EVIDENCE>,
}

impl Entry for AgentEntry {
    fn merge(&mut self, other: &Self) {
        self.requests += other.requests;
        self.first.merge(&other.first);
    }

    fn heap_bytes(&self) -> usize {
        self.user_agent.as_ref().map_or(0, |ua| ua.len()) + self.first.heap_bytes()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named {
    pub name: Box<str>,
    pub requests: u64,
}

impl Entry for Named {
    fn merge(&mut self, other: &Self) {
        self.requests += other.requests;
    }

    fn heap_bytes(&self) -> usize {
        self.name.len()
    }
}

/// Everything the detector knows of one session. It serializes for a store to keep while the
/// session is open (encoded: under 2 KB on average, see `store::signals::encode_state`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    pub(super) requests: u64,
    pub(super) first_ts: i64,
    pub(super) last_ts: i64,
    pub(super) origin: Option<Origin>,
    pub(super) first: Earliest<8>,
    pub(super) times: Smallest<TIMES>,
    pub(super) minutes: Counts<u16>,
    pub(super) client_errors: u64,
    pub(super) server_errors: u64,
    pub(super) errors_first: Earliest<EVIDENCE>,
    /// Endpoints answered 404 or 410.
    pub(super) not_found: Distinct<DISTINCT_PATHS>,
    pub(super) not_found_first: Earliest<EVIDENCE>,
    /// Requests on the `auth` flow by status.
    pub(super) auth_statuses: Counts<u16>,
    /// `auth` requests answered 4xx.
    pub(super) auth_refused_first: Earliest<EVIDENCE>,
    pub(super) flows: [u64; ABUSE_FLOWS.len()],
    pub(super) flows_first: [Earliest<EVIDENCE>; ABUSE_FLOWS.len()],
    pub(super) attacks: u64,
    pub(super) attack_kinds: Capped<Named, ATTACK_KINDS>,
    pub(super) attacks_first: Earliest<EVIDENCE>,
    pub(super) endpoints: Capped<EndpointEntry, ENDPOINTS>,
    pub(super) endpoint_count: Distinct<DISTINCT_ENDPOINTS>,
    pub(super) objects: Capped<ObjectEntry, OBJECT_TEMPLATES>,
    pub(super) agents: Capped<AgentEntry, AGENTS>,
    pub(super) agent_count: Distinct<DISTINCT_AGENTS>,
    pub(super) users: Distinct<DISTINCT_USERS>,
    pub(super) users_first: Earliest<EVIDENCE>,
    pub(super) roles: Capped<Named, ROLES>,
}

impl Default for SessionState {
    fn default() -> Self {
        SessionState {
            requests: 0,
            first_ts: i64::MAX,
            last_ts: i64::MIN,
            origin: None,
            first: Earliest::default(),
            times: Smallest::default(),
            minutes: Counts::default(),
            client_errors: 0,
            server_errors: 0,
            errors_first: Earliest::default(),
            not_found: Distinct::default(),
            not_found_first: Earliest::default(),
            auth_statuses: Counts::default(),
            auth_refused_first: Earliest::default(),
            flows: [0; ABUSE_FLOWS.len()],
            flows_first: Default::default(),
            attacks: 0,
            attack_kinds: Capped::default(),
            attacks_first: Earliest::default(),
            endpoints: Capped::default(),
            endpoint_count: Distinct::default(),
            objects: Capped::default(),
            agents: Capped::default(),
            agent_count: Distinct::default(),
            users: Distinct::default(),
            users_first: Earliest::default(),
            roles: Capped::default(),
        }
    }
}

fn agent_key(user_agent: Option<&str>) -> u64 {
    // A missing User-Agent is told apart from an empty one.
    user_agent.map_or(0, |ua| hash(clip(ua, MAX_AGENT)) | 1)
}

impl SessionState {
    /// The state of one request.
    pub fn of(request: &Request<'_>) -> SessionState {
        let mut state = SessionState::default();
        state.observe(request);
        state
    }

    pub fn observe(&mut self, request: &Request<'_>) {
        let stamp = Stamp { ts: request.ts, request_id: RequestId::new(request.request_id) };
        self.requests += 1;
        self.first_ts = self.first_ts.min(request.ts);
        self.last_ts = self.last_ts.max(request.ts);
        if self.origin.as_ref().is_none_or(|origin| stamp < origin.stamp) {
            self.origin = Some(Origin {
                stamp: stamp.clone(),
                ip: clip(request.ip, MAX_KEY_TEXT).into(),
                user_agent: request.user_agent.map(|ua| clip(ua, MAX_AGENT).into()),
            });
        }
        self.first.observe(&stamp);
        self.times.observe(request.ts);
        self.minutes.add(minute_of(request.ts), 1);

        let endpoint = endpoint_of(request.method, request.path);
        let endpoint_key = hash(&endpoint.template);
        self.endpoint_count.observe(endpoint_key);
        self.endpoints.merge_with(
            endpoint_key,
            || EndpointEntry {
                template: endpoint.template.as_str().into(),
                requests: 0,
                first: Earliest::default(),
            },
            |entry| {
                entry.requests += 1;
                entry.first.observe(&stamp);
            },
        );
        if let Some(object) = &endpoint.object {
            self.objects.merge_with(
                endpoint_key,
                || ObjectEntry {
                    template: endpoint.template.as_str().into(),
                    requests: 0,
                    ids: Distinct::default(),
                    first: Earliest::default(),
                },
                |entry| {
                    entry.requests += 1;
                    entry.ids.observe(hash(object));
                    entry.first.observe(&stamp);
                },
            );
        }

        match request.status {
            400..=499 => {
                self.client_errors += 1;
                self.errors_first.observe(&stamp);
            }
            500..=599 => {
                self.server_errors += 1;
                self.errors_first.observe(&stamp);
            }
            _ => {}
        }
        if matches!(request.status, 404 | 410) {
            self.not_found.observe(endpoint_key);
            self.not_found_first.observe(&stamp);
        }
        if request.flows.contains(Flow::Auth) {
            self.auth_statuses.add(status_key(request.status), 1);
            if (400..=499).contains(&request.status) {
                self.auth_refused_first.observe(&stamp);
            }
        }
        for (i, flow) in ABUSE_FLOWS.iter().enumerate() {
            if request.flows.contains(*flow) {
                self.flows[i] += 1;
                self.flows_first[i].observe(&stamp);
            }
        }
        if let Some(kind) = request.attack {
            let kind = clip(kind, MAX_KEY_TEXT);
            self.attacks += 1;
            self.attacks_first.observe(&stamp);
            self.attack_kinds.merge_with(
                hash(kind),
                || Named { name: kind.into(), requests: 0 },
                |entry| entry.requests += 1,
            );
        }

        let agent = agent_key(request.user_agent);
        self.agent_count.observe(agent);
        self.agents.merge_with(
            agent,
            || AgentEntry {
                user_agent: request.user_agent.map(|ua| clip(ua, MAX_AGENT).into()),
                requests: 0,
                first: Earliest::default(),
            },
            |entry| {
                entry.requests += 1;
                entry.first.observe(&stamp);
            },
        );
        if let Some(user) = request.user.filter(|user| !user.is_empty()) {
            self.users.observe(hash(user));
            self.users_first.observe(&stamp);
        }
        if let Some(role) = request.role.filter(|role| !role.is_empty()) {
            let role = clip(role, MAX_KEY_TEXT);
            self.roles.merge_with(
                hash(role),
                || Named { name: role.into(), requests: 0 },
                |entry| entry.requests += 1,
            );
        }
    }

    pub fn merge(&mut self, other: &SessionState) {
        self.requests += other.requests;
        self.first_ts = self.first_ts.min(other.first_ts);
        self.last_ts = self.last_ts.max(other.last_ts);
        if let Some(theirs) = &other.origin {
            if self.origin.as_ref().is_none_or(|mine| theirs.stamp < mine.stamp) {
                self.origin = Some(theirs.clone());
            }
        }
        self.first.merge(&other.first);
        self.times.merge(&other.times);
        self.minutes.merge(&other.minutes);
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
        self.errors_first.merge(&other.errors_first);
        self.not_found.merge(&other.not_found);
        self.not_found_first.merge(&other.not_found_first);
        self.auth_statuses.merge(&other.auth_statuses);
        self.auth_refused_first.merge(&other.auth_refused_first);
        for i in 0..ABUSE_FLOWS.len() {
            self.flows[i] += other.flows[i];
            self.flows_first[i].merge(&other.flows_first[i]);
        }
        self.attacks += other.attacks;
        self.attack_kinds.merge(&other.attack_kinds);
        self.attacks_first.merge(&other.attacks_first);
        self.endpoints.merge(&other.endpoints);
        self.endpoint_count.merge(&other.endpoint_count);
        self.objects.merge(&other.objects);
        self.agents.merge(&other.agents);
        self.agent_count.merge(&other.agent_count);
        self.users.merge(&other.users);
        self.users_first.merge(&other.users_first);
        self.roles.merge(&other.roles);
    }

    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// The times of the first and last request, when there is one.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        (self.requests > 0).then_some((self.first_ts, self.last_ts))
    }

    /// The IP address and User-Agent of the session's first request: its actor.
    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    /// The actor keys whose states feed this session's score: its actor in every hour from
    /// `window_hours` before its first request to `window_hours` after its last.
    pub fn actor_keys(&self, window_hours: u32) -> Vec<ActorKey> {
        let Some(origin) = &self.origin else { return Vec::new() };
        let window = i64::from(window_hours);
        let first = hour_of(self.first_ts).saturating_sub(window);
        // A session longer than a day is bounded to its first day's neighbourhood.
        let last = hour_of(self.last_ts).saturating_add(window).min(first + 24 + 2 * window);
        (first..=last)
            .map(|hour| ActorKey {
                ip: origin.ip.to_string(),
                user_agent: origin.user_agent.as_ref().map(|ua| ua.to_string()),
                hour,
            })
            .collect()
    }

    /// Bytes held: the struct and what it owns on the heap (allocator overhead aside).
    pub fn bytes(&self) -> usize {
        let flows_first: usize = self.flows_first.iter().map(Earliest::heap_bytes).sum();
        size_of::<SessionState>()
            + self.origin.as_ref().map_or(0, |origin| {
                origin.ip.len() + origin.user_agent.as_ref().map_or(0, |ua| ua.len())
            })
            + self.first.heap_bytes()
            + self.times.heap_bytes()
            + self.minutes.heap_bytes()
            + self.errors_first.heap_bytes()
            + self.not_found.heap_bytes()
            + self.not_found_first.heap_bytes()
            + self.auth_statuses.heap_bytes()
            + self.auth_refused_first.heap_bytes()
            + flows_first
            + self.attack_kinds.heap_bytes()
            + self.attacks_first.heap_bytes()
            + self.endpoints.heap_bytes()
            + self.endpoint_count.heap_bytes()
            + self.objects.heap_bytes()
            + self.agents.heap_bytes()
            + self.agent_count.heap_bytes()
            + self.users.heap_bytes()
            + self.users_first.heap_bytes()
            + self.roles.heap_bytes()
    }
}

/// Hours since the epoch.
pub fn hour_of(ts: i64) -> i64 {
    ts.div_euclid(3_600_000)
}

/// One actor in one hour: the IP address and User-Agent of a request (clipped as the session's
/// origin is) and the hour it started in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ActorKey {
    pub ip: String,
    pub user_agent: Option<String>,
    pub hour: i64,
}

impl ActorKey {
    pub fn of(request: &Request<'_>) -> ActorKey {
        ActorRef::of(request).to_key()
    }
}

/// An [`ActorKey`] borrowed from a request: what records of the same actor and hour are
/// grouped by before their key is built once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ActorRef<'r> {
    pub ip: &'r str,
    pub user_agent: Option<&'r str>,
    pub hour: i64,
}

impl<'r> ActorRef<'r> {
    pub fn of(request: &Request<'r>) -> ActorRef<'r> {
        ActorRef {
            ip: clip(request.ip, MAX_KEY_TEXT),
            user_agent: request.user_agent.map(|ua| clip(ua, MAX_AGENT)),
            hour: hour_of(request.ts),
        }
    }

    pub fn to_key(self) -> ActorKey {
        ActorKey {
            ip: self.ip.to_owned(),
            user_agent: self.user_agent.map(str::to_owned),
            hour: self.hour,
        }
    }
}

/// Whether a session key is the client's address (`ip+ua`, `ip`) or nothing: such a session
/// is the actor itself, not one of the sessions it opens.
pub fn keyed_by_address(request: &Request<'_>) -> bool {
    request.session_key_builtin && matches!(request.session_key, "ip+ua" | "ip" | "none")
}

/// What the detector knows of one actor in one hour, over all its sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorState {
    /// Sessions keyed by something the client presented (a token, a cookie).
    pub(super) sessions: Distinct<DISTINCT_SESSIONS>,
    /// Requests in those sessions.
    pub(super) session_requests: u64,
    pub(super) sessions_first: Earliest<EVIDENCE>,
    /// `auth` requests by status, in every session of the actor.
    pub(super) auth_statuses: Counts<u16>,
    pub(super) auth_refused_first: Earliest<EVIDENCE>,
}

impl ActorState {
    pub fn of(request: &Request<'_>) -> ActorState {
        let mut state = ActorState::default();
        state.observe(request);
        state
    }

    /// Adds a request of this actor (see [`ActorKey::of`]).
    pub fn observe(&mut self, request: &Request<'_>) {
        let stamp = Stamp { ts: request.ts, request_id: RequestId::new(request.request_id) };
        if !keyed_by_address(request) {
            self.sessions.observe(hash(request.session_id));
            self.session_requests += 1;
            self.sessions_first.observe(&stamp);
        }
        if request.flows.contains(Flow::Auth) {
            self.auth_statuses.add(status_key(request.status), 1);
            if (400..=499).contains(&request.status) {
                self.auth_refused_first.observe(&stamp);
            }
        }
    }

    pub fn merge(&mut self, other: &ActorState) {
        self.sessions.merge(&other.sessions);
        self.session_requests += other.session_requests;
        self.sessions_first.merge(&other.sessions_first);
        self.auth_statuses.merge(&other.auth_statuses);
        self.auth_refused_first.merge(&other.auth_refused_first);
    }

    pub fn bytes(&self) -> usize {
        size_of::<ActorState>()
            + self.sessions.heap_bytes()
            + self.sessions_first.heap_bytes()
            + self.auth_statuses.heap_bytes()
            + self.auth_refused_first.heap_bytes()
    }
}
