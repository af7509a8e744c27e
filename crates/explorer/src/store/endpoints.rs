//! What both stores share about endpoints: the endpoint of each record (assigned before the
//! write, capped by the [`Registry`] during it), the per endpoint-hour statistics a batch adds,
//! and which hours of a time range are read from those statistics and which are counted from
//! the requests themselves.

use std::collections::{BTreeSet, HashMap};

use crate::batch::{Batch, RecordRef};
use crate::endpoints::registry::{Admission, Registry};
use crate::endpoints::stats::{hour, Observation, Part, Stats, HOUR_MS};
use crate::endpoints::Endpoints;

/// An endpoint as stored: the server it was called on, its method and template.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointKey {
    pub server: String,
    pub method: String,
    pub template: String,
}

impl EndpointKey {
    /// `METHOD TEMPLATE`.
    pub fn key(&self) -> String {
        crate::endpoints::key(&self.method, &self.template)
    }
}

/// An endpoint and its statistics over a time range.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    pub endpoint: EndpointKey,
    pub stats: Stats,
}

/// What the endpoints list sorts and filters on without the sketches: the plain figures of an
/// endpoint over a time range, which a store can add up from columns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    /// Requests answered 4xx or 5xx.
    pub errors: u64,
    pub attacks: u64,
    /// Times of the first and last request; meaningless while `requests` is 0.
    pub first_ts: i64,
    pub last_ts: i64,
    /// The names of the configured flows (the keys of [`Stats::flows`]).
    pub flows: BTreeSet<String>,
}

impl Totals {
    pub fn of(stats: &Stats) -> Totals {
        Totals {
            requests: stats.requests,
            errors: stats.statuses.get("4xx") + stats.statuses.get("5xx"),
            attacks: stats.attacks,
            first_ts: stats.first_ts,
            last_ts: stats.last_ts,
            flows: stats.flows.keys().cloned().collect(),
        }
    }

    /// Adds the figures of other requests of the same endpoint.
    pub fn merge(&mut self, other: &Totals) {
        if other.requests == 0 {
            return;
        }
        if self.requests == 0 {
            (self.first_ts, self.last_ts) = (other.first_ts, other.last_ts);
        } else {
            self.first_ts = self.first_ts.min(other.first_ts);
            self.last_ts = self.last_ts.max(other.last_ts);
        }
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.attacks = self.attacks.saturating_add(other.attacks);
        for flow in &other.flows {
            if !self.flows.contains(flow) {
                self.flows.insert(flow.clone());
            }
        }
    }
}

/// An endpoint and its [`Totals`] over a time range.
#[derive(Clone, Debug, PartialEq)]
pub struct Counted {
    pub endpoint: EndpointKey,
    pub totals: Totals,
    /// The part of its statistics that [`Rank::part`] asked for (at least); empty when that
    /// was [`Part::All`], as the totals are then enough.
    pub part: Stats,
}

/// How a list chooses, from what a store counts, the few endpoints it measures in full (see
/// [`Store::endpoint_ranking`](crate::store::Store::endpoint_ranking)).
pub trait Rank {
    /// What the choice needs besides the totals: one sketch, or [`Part::All`] for nothing.
    fn part(&self) -> Part;

    /// Whether an endpoint may be picked, judged from its key alone: a store may give those
    /// that may not with nothing but their number of requests.
    fn considers(&self, endpoint: &EndpointKey) -> bool;

    /// The endpoints to measure in full, from every endpoint called within the range, in the
    /// order of their keys.
    fn pick(&mut self, counted: &[Counted]) -> Vec<EndpointKey>;
}

/// The endpoint a record's method and path give, before the cap: computed on the sender's
/// thread, so the one writer only looks the template up.
#[derive(Clone, Debug)]
pub struct Assignment {
    pub method: String,
    pub template: String,
    pub from_document: bool,
}

/// The endpoints of a batch's records, in order.
pub fn assign(endpoints: &Endpoints, batch: &Batch) -> Vec<Assignment> {
    batch
        .iter()
        .map(|record| {
            let assigned = endpoints.assign(record.server(), record.method(), record.path());
            Assignment {
                method: assigned.method.to_owned(),
                template: assigned.template.into_owned(),
                from_document: assigned.from_document,
            }
        })
        .collect()
}

/// What the registry made of an assignment: the endpoint the record counts under, and
/// whether the store holds it yet.
pub struct Admitted {
    pub endpoint: EndpointKey,
    pub new: bool,
    /// Counts against the cap of its server (not from a document, not the fold).
    pub counted: bool,
}

/// Applies the cap on endpoints per server.
pub fn admit(registry: &mut Registry, server: &str, assignment: &Assignment) -> Admitted {
    let admitted =
        registry.admit(server, &assignment.method, &assignment.template, assignment.from_document);
    let (new, counted) = match admitted.admission {
        Admission::Known => (false, !assignment.from_document),
        Admission::New => (true, !assignment.from_document),
        Admission::Folded { new } => (new, false),
    };
    Admitted {
        endpoint: EndpointKey {
            server: admitted.server.into_owned(),
            method: admitted.method.into_owned(),
            template: admitted.template.into_owned(),
        },
        new,
        counted,
    }
}

/// The statistics one write adds, per endpoint (as the store names it, `E`) and hour.
pub struct HourStats<E> {
    pub hours: HashMap<(E, i64), Stats>,
}

impl<E: Eq + std::hash::Hash + Clone> Default for HourStats<E> {
    fn default() -> Self {
        HourStats { hours: HashMap::new() }
    }
}

impl<E: Eq + std::hash::Hash + Clone> HourStats<E> {
    pub fn add(&mut self, endpoint: &E, record: &RecordRef<'_>) {
        let stats = self.hours.entry((endpoint.clone(), hour(record.ts()))).or_default();
        stats.add(&observation(record), record.flows());
    }
}

/// What the statistics take of a record.
pub fn observation<'r>(record: &RecordRef<'r>) -> Observation<'r> {
    Observation {
        ts: record.ts(),
        status: record.status(),
        duration_ms: record.duration_ms(),
        response_bytes: record.response_bytes(),
        session_id: record.session_id(),
        attack: record.attack().is_some(),
    }
}

/// How a time range is read: whole hours from the stored statistics, and the hours the range
/// cuts (at most two, each given as an inclusive millisecond range) from their requests, so
/// that the figures cover exactly the range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HourPlan {
    /// Whole hours, inclusive; `None` at the end for "up to the newest".
    pub hours: Option<(i64, Option<i64>)>,
    pub edges: Vec<(i64, i64)>,
}

impl HourPlan {
    /// `from` and `to` are inclusive milliseconds; `from` is already raised to the retention.
    pub fn new(from: i64, to: Option<i64>) -> HourPlan {
        if to.is_some_and(|to| to < from) {
            return HourPlan { hours: None, edges: Vec::new() };
        }
        let first = hour(from);
        let mut edges = Vec::new();
        let mut full_first = first;
        if from != first * HOUR_MS {
            let end = (first + 1) * HOUR_MS - 1;
            edges.push((from, to.map_or(end, |to| to.min(end))));
            full_first = first + 1;
        }
        let Some(to) = to else {
            return HourPlan { hours: Some((full_first, None)), edges };
        };
        let last = hour(to);
        let mut full_last = last;
        if to != (last + 1) * HOUR_MS - 1 {
            full_last = last - 1;
            if last >= full_first {
                edges.push((last * HOUR_MS, to));
            }
        }
        let hours = (full_first <= full_last).then_some((full_first, Some(full_last)));
        HourPlan { hours, edges }
    }

    /// Whether an hour is among the whole hours read.
    pub fn covers(&self, h: i64) -> bool {
        self.hours.is_some_and(|(first, last)| h >= first && last.is_none_or(|last| h <= last))
    }
}

/// Merges statistics per endpoint.
#[derive(Default)]
pub struct Merged {
    by_endpoint: HashMap<EndpointKey, Stats>,
}

impl Merged {
    pub fn add(&mut self, endpoint: EndpointKey, stats: &Stats) {
        self.by_endpoint.entry(endpoint).or_default().merge(stats);
    }

    pub fn add_request(
        &mut self,
        endpoint: EndpointKey,
        request: &Observation<'_>,
        flows: &[&str],
    ) {
        self.by_endpoint.entry(endpoint).or_default().add(request, flows.iter().copied());
    }

    pub fn finish(self) -> Vec<Measured> {
        let mut all: Vec<Measured> = self
            .by_endpoint
            .into_iter()
            .filter(|(_, stats)| stats.requests > 0)
            .map(|(endpoint, stats)| Measured { endpoint, stats })
            .collect();
        all.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = HOUR_MS;

    #[test]
    fn plans_cut_hours_at_the_edges() {
        // Whole hours only.
        assert_eq!(
            HourPlan::new(10 * H, Some(12 * H - 1)),
            HourPlan { hours: Some((10, Some(11))), edges: vec![] }
        );
        // Both ends cut.
        assert_eq!(
            HourPlan::new(10 * H + 5, Some(12 * H + 7)),
            HourPlan {
                hours: Some((11, Some(11))),
                edges: vec![(10 * H + 5, 11 * H - 1), (12 * H, 12 * H + 7)]
            }
        );
        // Within one hour.
        assert_eq!(
            HourPlan::new(10 * H + 5, Some(10 * H + 9)),
            HourPlan { hours: None, edges: vec![(10 * H + 5, 10 * H + 9)] }
        );
        // Open end.
        let open = HourPlan::new(10 * H + 5, None);
        assert_eq!(
            open,
            HourPlan { hours: Some((11, None)), edges: vec![(10 * H + 5, 11 * H - 1)] }
        );
        assert!(open.covers(11) && open.covers(500) && !open.covers(10));
        // Neighbouring hours, both cut.
        assert_eq!(
            HourPlan::new(10 * H + 5, Some(11 * H + 5)),
            HourPlan { hours: None, edges: vec![(10 * H + 5, 11 * H - 1), (11 * H, 11 * H + 5)] }
        );
        assert_eq!(HourPlan::new(10 * H, Some(5)), HourPlan { hours: None, edges: vec![] });
    }
}
