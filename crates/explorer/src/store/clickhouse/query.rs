//! The reader side: the sessions list, one session, its requests. The list ranks and counts
//! sessions from the summaries kept at insert time where its filter allows (see `summaries`);
//! everything else is aggregated from `requests` at query time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use api_sessions_core::time::Millis;
use serde::Deserialize;

use super::http::Client;
use super::signals;
use super::sql::{literal, literals, request_predicates, session_predicate};
use super::summaries;
use super::values;
use crate::store::{
    prefix_end, Cursor, Filter, ListQuery, RequestPage, Result, SessionDetail, SessionKey,
    SessionPage, SessionSummary, SortKey, Stats, StoredRequest, Timeline, TimelineBin,
    RELATED_LIMIT, TIMELINE_BINS,
};

/// The internal number of a session in list order and cursors: a 63-bit hash of its id, so
/// sessions with equal sort keys have a stable order without a sessions table.
const SESSION_NUMBER: &str = "toInt64(intDiv(cityHash64(session_id), 2))";

/// What describes a session as a whole, over its retained requests.
#[derive(Deserialize)]
struct Info {
    session_id: String,
    last_user: Option<String>,
    last_role: Option<String>,
    #[serde(rename = "kh")]
    key_hash: String,
    #[serde(rename = "sk")]
    session_key: String,
    start: i64,
    lo: i64,
    hi: i64,
}

fn infos(client: &Client, ids: &[&str], floor: i64) -> Result<HashMap<String, Info>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<Info> = client.rows(&format!(
        "SELECT session_id, argMax(user, ts) AS last_user, argMax(role, ts) AS last_role,
                any(key_hash) AS kh, any(session_key) AS sk,
                any(session_start) AS start, min(ts) AS lo, max(ts) AS hi
         FROM requests WHERE session_id IN ({}) AND ts >= {floor} GROUP BY session_id",
        literals(ids.iter().copied())
    ))?;
    Ok(rows.into_iter().map(|info| (info.session_id.clone(), info)).collect())
}

impl Info {
    /// The summary before any requests are counted into it.
    fn summary(self) -> SessionSummary {
        SessionSummary {
            session_id: self.session_id,
            first_ts: Millis(self.lo),
            last_ts: Millis(self.hi),
            requests: 0,
            user: self.last_user,
            users: Vec::new(),
            role: self.last_role,
            flows: BTreeMap::new(),
            ips: Vec::new(),
            attacks: 0,
            nodes: Vec::new(),
            user_agents: Vec::new(),
            key_hash: self.key_hash,
            session_key: self.session_key,
            session_start: Millis(self.start),
            risk: 0,
            signals: Vec::new(),
        }
    }
}

/// The expression over a session's aggregates (`lo`, `hi`, `n`, `attacks`) a sort key orders by.
fn sort_expression(key: SortKey) -> &'static str {
    match key {
        SortKey::Last => "hi",
        SortKey::First => "lo",
        SortKey::Requests => "toInt64(n)",
        SortKey::Duration => "hi - lo",
        SortKey::Attacks => "toInt64(attacks)",
        // Replaced by the joined risk (see `list`).
        SortKey::Risk => "0",
    }
}

/// A session's place in the list.
#[derive(Deserialize)]
struct Ranked {
    session_id: String,
    number: i64,
    sort_key: i64,
}

/// One listed session, counted over its selected requests.
#[derive(Deserialize)]
struct Listed {
    session_id: String,
    lo: i64,
    hi: i64,
    n: u64,
    attacks: u64,
    ips: Vec<String>,
    nodes: Vec<String>,
    all_flows: Vec<String>,
}

pub fn list(client: &Client, query: &ListQuery, floor: i64) -> Result<SessionPage> {
    let filter = &query.filter;
    let sessions = format!("{}{}", session_predicate(filter, floor), signals::predicate(filter));
    // Each selected session with its aggregates over the selected requests: from the summaries
    // kept at insert time when the filter allows, else from the requests.
    let aggregated = summaries::aggregated(filter, floor, &sessions).unwrap_or_else(|| {
        format!(
            "SELECT session_id, min(ts) AS lo, max(ts) AS hi, count() AS n,
                    countIf(attack IS NOT NULL) AS attacks
             FROM requests WHERE 1{}{sessions} GROUP BY session_id",
            request_predicates(filter, floor)
        )
    });
    // The page's sessions first, ranked on cheap aggregates; what is shown of them after.
    let key = sort_expression(query.sort.key);
    let mut sql = format!(
        "SELECT session_id, {SESSION_NUMBER} AS number, {key} AS sort_key FROM ({aggregated})"
    );
    // The risk is the session's, kept apart: joined onto the ranked sessions.
    if query.sort.key == SortKey::Risk {
        sql = format!(
            "SELECT session_id, number, toInt64(risk) AS sort_key
             FROM ({sql}) ANY LEFT JOIN ({}) USING session_id",
            signals::LATEST
        );
    }
    if let Some(cursor) = query.cursor {
        let (value, id) = (cursor.key.value, cursor.key.id);
        let comparison = cursor.sql_comparison(query.sort.order);
        let _ = write!(sql, " WHERE (sort_key, number) {comparison} ({value}, {id})");
    }
    let order = query.fetch_order().sql();
    let _ = write!(sql, " ORDER BY sort_key {order}, number {order} LIMIT {}", query.limit + 1);
    let ranked: Vec<Ranked> = client.rows(&sql)?;
    let window = query.window(
        ranked
            .into_iter()
            .map(|row| (SessionKey { value: row.sort_key, id: row.number }, row.session_id))
            .collect(),
    );

    #[derive(Deserialize)]
    struct Total {
        total: u64,
    }
    let total = client
        .rows::<Total>(&format!("SELECT count() AS total FROM ({aggregated})"))?
        .first()
        .map_or(0, |row| row.total);

    let ids: Vec<&str> = window.items.iter().map(String::as_str).collect();
    let mut infos = infos(client, &ids, floor)?;
    let mut listed: HashMap<String, Listed> = if ids.is_empty() {
        HashMap::new()
    } else {
        let rows: Vec<Listed> = client.rows(&format!(
            "SELECT session_id, min(ts) AS lo, max(ts) AS hi, count() AS n,
                    countIf(attack IS NOT NULL) AS attacks, groupUniqArray(ip) AS ips,
                    groupUniqArray(node) AS nodes, groupArrayArray(flows) AS all_flows
             FROM requests WHERE session_id IN ({}){} GROUP BY session_id",
            literals(ids.iter().copied()),
            request_predicates(filter, floor)
        ))?;
        rows.into_iter().map(|row| (row.session_id.clone(), row)).collect()
    };
    let mut detected = signals::summaries(client, &ids)?;
    let mut seen = values::users_and_agents(client, &ids, floor)?;
    let mut sessions = Vec::with_capacity(ids.len());
    for id in &ids {
        // Gone between the statements only if purged meanwhile.
        let (Some(info), Some(row)) = (infos.remove(*id), listed.remove(*id)) else { continue };
        let mut summary = info.summary();
        summary.requests = row.n;
        summary.first_ts = Millis(row.lo);
        summary.last_ts = Millis(row.hi);
        summary.attacks = row.attacks;
        summary.ips = row.ips.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
        summary.nodes = row.nodes.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
        for flow in &row.all_flows {
            *summary.flows.entry(flow.clone()).or_default() += 1;
        }
        if let Some((users, agents)) = seen.remove(*id) {
            (summary.users, summary.user_agents) = (users, agents);
        }
        if let Some((risk, findings)) = detected.remove(*id) {
            (summary.risk, summary.signals) = (risk, findings);
        }
        sessions.push(summary);
    }
    Ok(SessionPage::new(sessions, total, (window.next, window.prev)))
}

/// Requests of one session that share every field the statistics count.
#[derive(Deserialize)]
struct Group {
    method: String,
    status: u16,
    ip: String,
    attack: Option<String>,
    flows: Vec<String>,
    node: String,
    n: u64,
    lo: i64,
    hi: i64,
}

#[derive(Deserialize)]
struct Bin {
    bin: i64,
    ok: u64,
    client_errors: u64,
    server_errors: u64,
    attacks: u64,
}

fn add(map: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    *map.entry(key.to_owned()).or_default() += n;
}

pub fn session(
    client: &Client,
    session_id: &str,
    filter: &Filter,
    after: Option<Cursor>,
    limit: usize,
    floor: i64,
    window_hours: u32,
) -> Result<Option<SessionDetail>> {
    let Some(info) = infos(client, &[session_id], floor)?.remove(session_id) else {
        return Ok(None);
    };
    let mut summary = info.summary();
    if let Some((users, agents)) =
        values::users_and_agents(client, &[session_id], floor)?.remove(session_id)
    {
        (summary.users, summary.user_agents) = (users, agents);
    }
    let id = literal(session_id);
    let predicates = request_predicates(filter, floor);

    let groups: Vec<Group> = client.rows(&format!(
        "SELECT method, status, ip, attack, flows, node, count() AS n, min(ts) AS lo,
                max(ts) AS hi
         FROM requests WHERE session_id = {id}{predicates}
         GROUP BY method, status, ip, attack, flows, node"
    ))?;
    let mut stats = Stats::default();
    let mut nodes = BTreeSet::new();
    let (mut requests, mut first, mut last) = (0, i64::MAX, i64::MIN);
    for group in &groups {
        requests += group.n;
        first = first.min(group.lo);
        last = last.max(group.hi);
        add(&mut stats.methods, &group.method, group.n);
        add(&mut stats.statuses, &group.status.to_string(), group.n);
        add(&mut stats.ips, &group.ip, group.n);
        if let Some(attack) = &group.attack {
            add(&mut stats.attacks, attack, group.n);
        }
        for flow in &group.flows {
            add(&mut stats.flows, flow, group.n);
        }
        nodes.insert(group.node.clone());
    }
    summary.requests = requests;
    if requests > 0 {
        summary.first_ts = Millis(first);
        summary.last_ts = Millis(last);
    }
    summary.flows = stats.flows.clone();
    summary.ips = stats.ips.keys().cloned().collect();
    summary.attacks = stats.attacks.values().sum();
    summary.nodes = nodes.into_iter().collect();

    let timeline = if requests == 0 {
        Timeline::default()
    } else {
        timeline(client, &id, &predicates, first, last)?
    };

    #[derive(Deserialize)]
    struct Related {
        session_id: String,
    }
    let related: Vec<Related> = client.rows(&format!(
        "{} ORDER BY hi DESC LIMIT {RELATED_LIMIT}",
        summaries::of_key(&literal(&summary.key_hash), &id, floor)
    ))?;
    let mut requests = request_page(client, &id, &predicates, after, limit)?;
    if let Some(cursor) = after {
        #[derive(Deserialize)]
        struct Before {
            n: u64,
        }
        let (ts, rid) = (cursor.ts, cursor.id);
        let before: Vec<Before> = client.rows(&format!(
            "SELECT count() AS n FROM requests WHERE session_id = {id}{predicates}
             AND (ts < {ts} OR (ts = {ts} AND rid <= {rid}))"
        ))?;
        requests.offset = before.first().map_or(0, |row| row.n);
    }
    let detection = signals::session(client, session_id, window_hours, floor)?;
    summary.risk = detection.risk;
    summary.signals = crate::store::signals::findings(&detection.signals);
    Ok(Some(SessionDetail {
        session: summary,
        stats,
        timeline,
        related: related.into_iter().map(|row| row.session_id).collect(),
        requests,
        detection,
    }))
}

/// Equal slices of time from `first` to `last`, as the SQLite store cuts them.
fn timeline(
    client: &Client,
    id: &str,
    predicates: &str,
    first: i64,
    last: i64,
) -> Result<Timeline> {
    // One extra millisecond keeps the last request inside the last bin.
    let span = last - first + 1;
    let bins: Vec<Bin> = client.rows(&format!(
        "SELECT intDiv((ts - {first}) * {TIMELINE_BINS}, {span}) AS bin,
                countIf(status < 400) AS ok,
                countIf(status >= 400 AND status < 500) AS client_errors,
                countIf(status >= 500) AS server_errors,
                countIf(attack IS NOT NULL) AS attacks
         FROM requests WHERE session_id = {id}{predicates} AND ts >= {first} AND ts <= {last}
         GROUP BY bin"
    ))?;
    let mut timeline = Timeline {
        start: Millis(first),
        end: Millis(last),
        bins: vec![TimelineBin::default(); TIMELINE_BINS],
    };
    for bin in bins {
        let slot = &mut timeline.bins[(bin.bin.max(0) as usize).min(TIMELINE_BINS - 1)];
        slot.ok += bin.ok;
        slot.client_errors += bin.client_errors;
        slot.server_errors += bin.server_errors;
        slot.attacks += bin.attacks;
    }
    Ok(timeline)
}

pub fn session_ids_with_prefix(
    client: &Client,
    prefix: &str,
    limit: usize,
    floor: i64,
) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Id {
        session_id: String,
    }
    let mut sql = format!(
        "SELECT session_id FROM requests WHERE session_id >= {} AND ts >= {floor}",
        literal(prefix)
    );
    if let Some(end) = prefix_end(prefix) {
        let _ = write!(sql, " AND session_id < {}", literal(&end));
    }
    let _ = write!(sql, " GROUP BY session_id ORDER BY session_id LIMIT {limit}");
    let ids: Vec<Id> = client.rows(&sql)?;
    Ok(ids.into_iter().map(|row| row.session_id).collect())
}

pub fn session_requests(
    client: &Client,
    session_id: &str,
    filter: &Filter,
    after: Option<Cursor>,
    limit: usize,
    floor: i64,
) -> Result<Option<RequestPage>> {
    #[derive(Deserialize)]
    struct Exists {
        n: u64,
    }
    let id = literal(session_id);
    let exists: Vec<Exists> = client.rows(&format!(
        "SELECT count() AS n FROM requests WHERE session_id = {id} AND ts >= {floor}"
    ))?;
    if exists.first().is_none_or(|row| row.n == 0) {
        return Ok(None);
    }
    request_page(client, &id, &request_predicates(filter, floor), after, limit).map(Some)
}

/// The selected requests of a session after `after`, in time order; `id` is its literal.
fn request_page(
    client: &Client,
    id: &str,
    predicates: &str,
    after: Option<Cursor>,
    limit: usize,
) -> Result<RequestPage> {
    #[derive(Deserialize)]
    struct Request {
        ts: i64,
        rid: i64,
        json: String,
    }
    let mut sql = format!("SELECT ts, rid, json FROM requests WHERE session_id = {id}{predicates}");
    if let Some(cursor) = after {
        let (ts, rid) = (cursor.ts, cursor.id);
        let _ = write!(sql, " AND (ts > {ts} OR (ts = {ts} AND rid > {rid}))");
    }
    let _ = write!(sql, " ORDER BY ts, rid LIMIT {}", limit + 1);
    let rows: Vec<Request> = client.rows(&sql)?;
    let requests: Vec<StoredRequest> = rows
        .into_iter()
        .map(|row| StoredRequest { position: Cursor { ts: row.ts, id: row.rid }, json: row.json })
        .collect();
    Ok(RequestPage::from_fetched(requests, limit))
}
