//! Session summaries kept at insert time: per session and hour of `ts`, the aggregates the
//! sessions list ranks and counts by, in `session_hours`.
//!
//! A materialized view aggregates each block inserted into `requests` by session and hour into
//! `session_hours`, an `AggregatingMergeTree`: ClickHouse merges the partial states of a key in
//! the background, and readers merge what is left (`minMerge`, `countMerge`, ...), which is exact
//! whether or not the parts were merged yet. Records of a session that arrive late, out of
//! order or from several nodes only add states; the purge drops the same days here as in
//! `requests` (partitioned alike). Only stored records reach `requests`, so duplicates never
//! count.
//!
//! A list whose filter selects requests by time only (the retention, `from`, `to`, `attack=any`)
//! and sessions by what was seen in them (user, role, flow, User-Agent, risk, signal) reads the
//! hours that lie wholly in its range from here, and the requests of the partial hours at its
//! ends from `requests`: a week of requests becomes some rows per session. Other request
//! filters (method, status, attack type, ip, request id, endpoint, free text) select single
//! requests, which the hours do not tell apart, and are aggregated from `requests` as before.

use std::fmt::Write as _;

use crate::store::{AttackFilter, Filter};

/// Milliseconds in an hour, the grain of `session_hours`.
pub const HOUR_MS: i64 = 3_600_000;

/// The aggregates of one session and hour, as the view and the backfill compute them from
/// `requests` (`attack IS NOT NULL` marks the requests that carried an attack).
macro_rules! hour_aggregates {
    () => {
        "SELECT session_id, intDiv(ts, 3600000) AS hour, key_hash,
                minState(ts) AS first_ts, maxState(ts) AS last_ts, countState() AS request_count,
                countIfState(attack IS NOT NULL) AS attack_count,
                minIfState(ts, attack IS NOT NULL) AS attack_first_ts,
                maxIfState(ts, attack IS NOT NULL) AS attack_last_ts
         FROM requests GROUP BY session_id, hour, key_hash"
    };
}

/// Migration 6: the table, filled from the requests stored before it, then the view that keeps
/// it up to date. The view comes last and the table is emptied before it is filled, so a
/// migration interrupted anywhere runs again to the same rows (migrations run before the store
/// takes records, so nothing is inserted meanwhile).
pub const SCHEMA: &[&str] = &[
    // `key_hash` is part of the key rather than a value merged arbitrarily: a session has one,
    // and keyed it can find the sessions of a key (related sessions) without reading requests.
    "CREATE TABLE IF NOT EXISTS session_hours (
        session_id String,
        hour       Int64,
        key_hash   String,
        first_ts        AggregateFunction(min, Int64),
        last_ts         AggregateFunction(max, Int64),
        request_count   AggregateFunction(count),
        attack_count    AggregateFunction(countIf, UInt8),
        attack_first_ts AggregateFunction(minIf, Int64, UInt8),
        attack_last_ts  AggregateFunction(maxIf, Int64, UInt8)
    ) ENGINE = AggregatingMergeTree
    PARTITION BY intDiv(hour, 24)
    ORDER BY (session_id, hour, key_hash)",
    "TRUNCATE TABLE session_hours",
    concat!("INSERT INTO session_hours ", hour_aggregates!()),
    concat!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS session_hours_feed TO session_hours AS ",
        hour_aggregates!()
    ),
];

/// The hours wholly inside `[from, to]` (`to` inclusive, `None` unbounded): `first..end`, end
/// `None` for unbounded. Only hours after the epoch's first: `intDiv` rounds toward zero, so
/// hour 0 also holds the hour before the epoch.
fn whole_hours(from: i64, to: Option<i64>) -> (i64, Option<i64>) {
    let first = from.div_euclid(HOUR_MS) + i64::from(from.rem_euclid(HOUR_MS) != 0);
    let first = first.max(1);
    (first, to.map(|to| (to + 1).div_euclid(HOUR_MS)))
}

/// Whether the list can be read from the summaries: its request-level predicates are time and
/// `attack=any` only.
fn answerable(filter: &Filter) -> bool {
    filter.method.is_none()
        && filter.q.is_none()
        && filter.status.is_none()
        && matches!(filter.attack, None | Some(AttackFilter::Any))
        && filter.ip.is_none()
        && filter.request_id.is_none()
        && filter.endpoint.is_none()
}

/// One row per listed session with its aggregates over the selected requests (`lo`, `hi`, `n`,
/// `attacks`), from the summaries and the requests of the partial hours at the range's ends;
/// `sessions` are the session-level predicates (` AND session_id IN ...`). `None` when the
/// filter selects requests the summaries cannot tell apart, or its range holds no whole hour.
pub fn aggregated(filter: &Filter, floor: i64, sessions: &str) -> Option<String> {
    if !answerable(filter) {
        return None;
    }
    let from = filter.from.map_or(floor, |from| from.0.max(floor));
    let to = filter.to.map(|to| to.0);
    let (first, end) = whole_hours(from, to);
    if end.is_some_and(|end| end <= first) {
        return None;
    }
    let attacks_only = filter.attack.is_some();
    // With `attack=any` only the requests with an attack are selected: the session's span and
    // count are those of its attacks.
    let (lo, hi, n) = if attacks_only {
        ("minIfMerge(attack_first_ts)", "maxIfMerge(attack_last_ts)", "countIfMerge(attack_count)")
    } else {
        ("minMerge(first_ts)", "maxMerge(last_ts)", "countMerge(request_count)")
    };
    let mut hours = format!(
        "SELECT session_id, {lo} AS lo, {hi} AS hi, {n} AS n, countIfMerge(attack_count) AS attacks
         FROM session_hours WHERE hour >= {first}"
    );
    let mut edges = format!(
        "SELECT session_id, min(ts) AS lo, max(ts) AS hi, count() AS n,
                countIf(attack IS NOT NULL) AS attacks
         FROM requests WHERE ts >= {from}"
    );
    let first_ms = first * HOUR_MS;
    match (to, end) {
        (Some(to), Some(end)) => {
            let _ = write!(hours, " AND hour < {end}");
            let _ =
                write!(edges, " AND ts <= {to} AND (ts < {first_ms} OR ts >= {})", end * HOUR_MS);
        }
        _ => {
            let _ = write!(edges, " AND ts < {first_ms}");
        }
    }
    if attacks_only {
        edges.push_str(" AND attack IS NOT NULL");
    }
    let _ = write!(hours, "{sessions} GROUP BY session_id");
    if attacks_only {
        hours.push_str(" HAVING n > 0");
    }
    let _ = write!(edges, "{sessions} GROUP BY session_id");
    Some(format!(
        "SELECT session_id, min(lo) AS lo, max(hi) AS hi, sum(n) AS n, sum(attacks) AS attacks
         FROM ({hours} UNION ALL {edges}) GROUP BY session_id"
    ))
}

/// The sessions of the key `key_hash` (a literal) other than `id` (a literal), each with its
/// last retained request (`hi`), from the summaries and the requests of the partial hour at the
/// retention's end.
pub fn of_key(key_hash: &str, id: &str, floor: i64) -> String {
    let (first, _) = whole_hours(floor, None);
    let first_ms = first * HOUR_MS;
    format!(
        "SELECT session_id, max(hi) AS hi FROM (
             SELECT session_id, maxMerge(last_ts) AS hi FROM session_hours
             WHERE key_hash = {key_hash} AND session_id != {id} AND hour >= {first}
             GROUP BY session_id
             UNION ALL
             SELECT session_id, max(ts) AS hi FROM requests
             WHERE key_hash = {key_hash} AND session_id != {id} AND ts >= {floor}
                   AND ts < {first_ms}
             GROUP BY session_id)
         GROUP BY session_id"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_hours_lie_inside_the_range() {
        // Aligned ends: the hour holding `to` is whole when `to` is its last millisecond.
        assert_eq!(whole_hours(2 * HOUR_MS, Some(4 * HOUR_MS - 1)), (2, Some(4)));
        assert_eq!(whole_hours(2 * HOUR_MS, Some(4 * HOUR_MS)), (2, Some(4)));
        assert_eq!(whole_hours(2 * HOUR_MS + 1, Some(4 * HOUR_MS - 2)), (3, Some(3)));
        assert_eq!(whole_hours(2 * HOUR_MS - 1, None), (2, None));
        // Never hour 0 or before, which `intDiv` mixes with the hour before the epoch.
        assert_eq!(whole_hours(-5 * HOUR_MS, Some(HOUR_MS * 3)), (1, Some(3)));
        assert_eq!(whole_hours(0, None), (1, None));
    }

    #[test]
    fn filters_on_single_requests_read_the_requests() {
        let time = Filter { from: Some(api_sessions_core::time::Millis(0)), ..Default::default() };
        assert!(aggregated(&time, 0, "").is_some());
        let any = Filter { attack: Some(AttackFilter::Any), ..Default::default() };
        assert!(aggregated(&any, 0, "").unwrap().contains("attack IS NOT NULL"));
        let kind = Filter { attack: Some(AttackFilter::Kind("sqli".into())), ..Default::default() };
        assert!(aggregated(&kind, 0, "").is_none());
        let method = Filter { method: Some("GET".into()), ..Default::default() };
        assert!(aggregated(&method, 0, "").is_none());
        // A range shorter than an hour holds no whole hour.
        let short = Filter {
            from: Some(api_sessions_core::time::Millis(HOUR_MS + 5)),
            to: Some(api_sessions_core::time::Millis(2 * HOUR_MS + 5)),
            ..Default::default()
        };
        assert!(aggregated(&short, 0, "").is_none());
    }
}
