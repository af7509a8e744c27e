//! Counting a session's requests: what the list shows for a filtered session, the statistics
//! of the session page, and the session row rebuilt after a retention purge.

use std::collections::{BTreeMap, BTreeSet};

use api_sessions_core::time::Millis;
use rusqlite::Row;

use crate::store::{SessionSummary, Stats, Timeline, TimelineBin};

/// Separates list items (flows, nodes) inside one column. Flow and node names are single
/// words; a hostile one containing a newline only splits into more names.
pub const LIST_SEPARATOR: char = '\n';

/// The `requests` columns a tally reads, in [`Tally::add`]'s order, for table alias `r`.
pub const COLUMNS: &str =
    "r.ts, r.node, r.ip, r.attack, r.flows, r.user, r.role, r.method, r.status";

/// Aggregates over a set of requests of one session.
#[derive(Debug, Default)]
pub struct Tally {
    pub requests: u64,
    pub first_ts: i64,
    pub last_ts: i64,
    pub nodes: BTreeSet<String>,
    /// The last non-null user and role, by request time.
    pub user: Option<(i64, String)>,
    pub role: Option<(i64, String)>,
    pub stats: Stats,
    /// (time, status, malicious) of each request, when a timeline is wanted.
    points: Option<Vec<(i64, u16, bool)>>,
}

impl Tally {
    /// A tally that also keeps what [`Tally::timeline`] needs.
    pub fn with_timeline() -> Self {
        Tally { points: Some(Vec::new()), ..Tally::default() }
    }

    /// Adds one row selected with [`COLUMNS`].
    pub fn add(&mut self, row: &Row<'_>) -> rusqlite::Result<()> {
        let ts: i64 = row.get(0)?;
        if self.requests == 0 {
            self.first_ts = ts;
            self.last_ts = ts;
        } else {
            self.first_ts = self.first_ts.min(ts);
            self.last_ts = self.last_ts.max(ts);
        }
        self.requests += 1;

        let node = row.get_ref(1)?.as_str()?;
        if !self.nodes.contains(node) {
            self.nodes.insert(node.to_owned());
        }
        bump(&mut self.stats.ips, row.get_ref(2)?.as_str()?);
        let attack = row.get_ref(3)?.as_str_or_null()?;
        if let Some(attack) = attack {
            bump(&mut self.stats.attacks, attack);
        }
        for flow in split_list(row.get_ref(4)?.as_str()?) {
            bump(&mut self.stats.flows, flow);
        }
        for (col, slot) in [(5, &mut self.user), (6, &mut self.role)] {
            if let Some(value) = row.get_ref(col)?.as_str_or_null()? {
                if slot.as_ref().is_none_or(|(seen, _)| ts >= *seen) {
                    *slot = Some((ts, value.to_owned()));
                }
            }
        }
        bump(&mut self.stats.methods, row.get_ref(7)?.as_str()?);
        let status: u16 = row.get(8)?;
        *self.stats.statuses.entry(status.to_string()).or_default() += 1;
        if let Some(points) = &mut self.points {
            points.push((ts, status, attack.is_some()));
        }
        Ok(())
    }

    /// The requests counted, in `bins` equal slices of time from the first to the last.
    pub fn timeline(&self, bins: usize) -> Timeline {
        let Some(points) = self.points.as_ref().filter(|points| !points.is_empty()) else {
            return Timeline::default();
        };
        let mut timeline = Timeline {
            start: Millis(self.first_ts),
            end: Millis(self.last_ts),
            bins: vec![TimelineBin::default(); bins],
        };
        // One extra millisecond keeps the last request inside the last bin.
        let span = (self.last_ts - self.first_ts + 1) as i128;
        for &(ts, status, malicious) in points {
            let index = ((ts - self.first_ts) as i128 * bins as i128 / span) as usize;
            let bin = &mut timeline.bins[index.min(bins - 1)];
            match status {
                0..=399 => bin.ok += 1,
                400..=499 => bin.client_errors += 1,
                _ => bin.server_errors += 1,
            }
            if malicious {
                bin.attacks += 1;
            }
        }
        timeline
    }

    pub fn attacks(&self) -> u64 {
        self.stats.attacks.values().sum()
    }

    /// Replaces the counted fields of `summary` with this tally's.
    pub fn apply_to(&self, summary: &mut SessionSummary) {
        summary.requests = self.requests;
        if self.requests > 0 {
            summary.first_ts = Millis(self.first_ts);
            summary.last_ts = Millis(self.last_ts);
        }
        summary.flows = self.stats.flows.clone();
        summary.ips = self.stats.ips.keys().cloned().collect();
        summary.attacks = self.attacks();
        summary.nodes = self.nodes.iter().cloned().collect();
    }
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(count) => *count += 1,
        None => {
            map.insert(key.to_owned(), 1);
        }
    }
}

/// The items of a [`LIST_SEPARATOR`]-joined column.
pub fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(LIST_SEPARATOR).filter(|item| !item.is_empty())
}

/// Joins items for a list column.
pub fn join_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    join_into(&mut out, items);
    out
}

/// Appends items joined for a list column to `out`.
pub fn join_into<'a>(out: &mut String, items: impl IntoIterator<Item = &'a str>) {
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(LIST_SEPARATOR);
        }
        out.push_str(item);
    }
}
