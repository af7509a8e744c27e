//! The endpoints list of `GET /api/endpoints` and of the `/endpoints` page: the endpoints a
//! store measured over a time range, with their spec status and suggested flows, the
//! documented operations nobody called, filtered, sorted and cut into pages.
//!
//! A store gives the [`Totals`] of every endpoint of the range (at most its cap per server),
//! which are plain sums a store keeps in columns; filtering and sorting happen here, the same
//! way whichever store counted them. Sorted by a total, only the endpoints of the page are
//! measured in full (their sketches merged); sorted by sessions or a quantile, which only the
//! sketches give, every endpoint that passes the filters has that one sketch merged, and then
//! the endpoints of the page are measured in full.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};

use api_sessions_core::time::Millis;
use serde::{Deserialize, Serialize};

use super::auto_flows::{self, AutoFlow};
use super::openapi::Operation;
use super::stats::{Part, Quantiles, Stats};
use super::{Endpoints, SpecStatus};
use crate::store::endpoints::{Counted, EndpointKey, Measured, Rank, Totals};
use crate::store::{EndpointRange, Result as StoreResult, Store};

/// How many endpoints a page holds when `limit` does not say, and at most.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 10_000;

/// The query string of `GET /api/endpoints` and `/endpoints`. Empty values mean "not set", as
/// HTML forms send every field; any other parameter is refused.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EndpointParams {
    /// Requests at or after this time: RFC 3339, `YYYY-MM-DDTHH:MM` or `YYYY-MM-DD` (UTC).
    pub from: Option<String>,
    /// Requests before this time, in the forms of `from`.
    pub to: Option<String>,
    /// Endpoints of this server (the `Host` the module recorded).
    pub server: Option<String>,
    /// Endpoints with this method.
    pub method: Option<String>,
    /// Endpoints whose template contains this text.
    pub q: Option<String>,
    /// `documented`, `shadow`, `zombie` or `unused`.
    pub spec: Option<String>,
    /// Endpoints with this configured or suggested flow.
    pub flow: Option<String>,
    /// `requests` (default), `sessions`, `attacks`, `errors`, `duration`, `size`, `last` or
    /// `endpoint`.
    pub sort: Option<String>,
    /// `desc` or `asc`.
    pub order: Option<String>,
    /// Endpoints per page, 1 to 10000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1)]
    pub limit: Option<String>,
    /// Where the page starts: a `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// What the list is sorted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    #[default]
    Requests,
    Sessions,
    Attacks,
    Errors,
    Duration,
    Size,
    Last,
    Endpoint,
}

impl Sort {
    pub const ALL: [(Sort, &'static str); 8] = [
        (Sort::Requests, "requests"),
        (Sort::Sessions, "sessions"),
        (Sort::Attacks, "attacks"),
        (Sort::Errors, "errors"),
        (Sort::Duration, "duration"),
        (Sort::Size, "size"),
        (Sort::Last, "last"),
        (Sort::Endpoint, "endpoint"),
    ];

    pub fn name(self) -> &'static str {
        Sort::ALL.iter().find(|(sort, _)| *sort == self).map_or("requests", |(_, name)| name)
    }

    /// The sketch the sort key comes from; [`Part::All`] when it is one of the [`Totals`].
    fn sketch(self) -> Part {
        match self {
            Sort::Sessions => Part::Sessions,
            Sort::Duration => Part::Duration,
            Sort::Size => Part::Size,
            _ => Part::All,
        }
    }
}

/// A checked [`EndpointParams`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListQuery {
    pub from: Option<Millis>,
    pub to: Option<Millis>,
    pub server: Option<String>,
    pub method: Option<String>,
    pub q: Option<String>,
    pub spec: Option<SpecStatus>,
    pub flow: Option<String>,
    pub sort: Sort,
    pub ascending: bool,
    pub limit: usize,
    pub offset: usize,
}

fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|value| !value.is_empty())
}

impl EndpointParams {
    pub fn query(&self) -> Result<ListQuery, String> {
        let time = |name: &str, value: &Option<String>| {
            set(value)
                .map(|text| {
                    Millis::parse(text).ok_or_else(|| {
                        format!(
                            "invalid \"{name}\" \"{text}\": expected RFC 3339 \
                             (2026-11-22T10:00:00Z), YYYY-MM-DDTHH:MM or YYYY-MM-DD"
                        )
                    })
                })
                .transpose()
        };
        let (from, to) = (time("from", &self.from)?, time("to", &self.to)?);
        if let (Some(from), Some(to)) = (from, to) {
            if to < from {
                return Err("invalid time range: \"to\" is before \"from\"".to_owned());
            }
        }
        let spec = set(&self.spec)
            .map(|text| {
                SpecStatus::parse(text).ok_or_else(|| {
                    format!(
                        "invalid \"spec\" \"{text}\": expected documented, shadow, zombie or unused"
                    )
                })
            })
            .transpose()?;
        let sort = match set(&self.sort) {
            None => Sort::default(),
            Some(text) => {
                Sort::ALL.iter().find(|(_, name)| *name == text).map(|(s, _)| *s).ok_or_else(
                    || {
                        let names: Vec<&str> = Sort::ALL.iter().map(|(_, name)| *name).collect();
                        format!("invalid \"sort\" \"{text}\": expected one of {}", names.join(", "))
                    },
                )?
            }
        };
        let ascending = match set(&self.order) {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(text) => {
                return Err(format!("invalid \"order\" \"{text}\": expected asc or desc"))
            }
        };
        let limit = match set(&self.limit) {
            None => DEFAULT_LIMIT,
            Some(text) => match text.parse::<usize>() {
                Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
                _ => {
                    return Err(format!("invalid \"limit\" \"{text}\": expected 1 to {MAX_LIMIT}"))
                }
            },
        };
        let offset = match set(&self.cursor) {
            None => 0,
            Some(text) => text.parse().map_err(|_| format!("invalid \"cursor\" \"{text}\""))?,
        };
        Ok(ListQuery {
            from,
            to,
            server: set(&self.server).map(str::to_owned),
            method: set(&self.method).map(str::to_ascii_uppercase),
            q: set(&self.q).map(str::to_lowercase),
            spec,
            flow: set(&self.flow).map(str::to_lowercase),
            sort,
            ascending,
            limit,
            offset,
        })
    }
}

impl ListQuery {
    /// What the store measures for this query.
    pub fn range(&self) -> EndpointRange {
        EndpointRange { from: self.from, to: self.to, only: None }
    }
}

/// One endpoint as listed.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Summary {
    /// `None` for a documented operation nobody called.
    pub server: Option<String>,
    pub method: String,
    pub template: String,
    /// `METHOD TEMPLATE`, as the `endpoint=` filter of the sessions takes it.
    pub endpoint: String,
    pub requests: u64,
    pub sessions: u64,
    pub statuses: BTreeMap<&'static str, u64>,
    pub duration_ms: Option<Quantiles>,
    pub response_bytes: Option<Quantiles>,
    pub flows: BTreeMap<String, u64>,
    pub auto_flows: Vec<AutoFlow>,
    pub attacks: u64,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub first_ts: Option<Millis>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_ts: Option<Millis>,
    pub spec: Option<SpecStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EndpointPage {
    pub endpoints: Vec<Summary>,
    pub total: u64,
    pub next_cursor: Option<String>,
}

/// The documented operations by method and template; the first document's wins.
pub struct SpecIndex<'a> {
    operations: Option<HashMap<(&'a str, &'a str), &'a Operation>>,
}

impl<'a> SpecIndex<'a> {
    pub fn new(endpoints: &'a Endpoints) -> Self {
        let operations = endpoints.openapi().map(|api| {
            let mut index = HashMap::new();
            for op in api.operations() {
                index.entry((op.method.as_str(), op.template.as_str())).or_insert(op);
            }
            index
        });
        SpecIndex { operations }
    }

    fn operation(&self, method: &str, template: &str) -> Option<&'a Operation> {
        let operations = self.operations.as_ref()?;
        operations
            .get(&(method, template))
            .or_else(|| {
                // HEAD is served by GET where only GET is documented.
                (method == "HEAD").then(|| operations.get(&("GET", template))).flatten()
            })
            .copied()
    }

    /// The spec status of a called endpoint; `None` without documents.
    pub fn status(&self, method: &str, template: &str) -> Option<SpecStatus> {
        self.operations.as_ref()?;
        Some(match self.operation(method, template) {
            Some(op) if op.deprecated => SpecStatus::Zombie,
            Some(_) => SpecStatus::Documented,
            None => SpecStatus::Shadow,
        })
    }
}

/// A called endpoint as listed, from its full statistics.
fn summary(index: &SpecIndex<'_>, endpoint: EndpointKey, stats: Stats) -> Summary {
    let mut listed = listed(index, endpoint, true);
    listed.requests = stats.requests;
    listed.sessions = stats.sessions.count();
    listed.statuses = stats.statuses.to_map();
    listed.duration_ms = stats.duration_quantiles();
    listed.response_bytes = stats.response_bytes_quantiles();
    listed.flows = stats.flows;
    listed.attacks = stats.attacks;
    listed.first_ts = Some(Millis(stats.first_ts));
    listed.last_ts = Some(Millis(stats.last_ts));
    listed
}

/// An endpoint with its spec status, its suggested flows unless `with_flows` is false, and no
/// statistics yet.
fn listed(index: &SpecIndex<'_>, endpoint: EndpointKey, with_flows: bool) -> Summary {
    let operation = index.operation(&endpoint.method, &endpoint.template);
    let parameters = operation.map_or(&[][..], |op| op.parameters.as_slice());
    Summary {
        endpoint: endpoint.key(),
        auto_flows: if with_flows {
            auto_flows::suggest(&endpoint.template, parameters)
        } else {
            Vec::new()
        },
        spec: index.status(&endpoint.method, &endpoint.template),
        server: Some(endpoint.server),
        method: endpoint.method,
        template: endpoint.template,
        requests: 0,
        sessions: 0,
        statuses: BTreeMap::new(),
        duration_ms: None,
        response_bytes: None,
        flows: BTreeMap::new(),
        attacks: 0,
        first_ts: None,
        last_ts: None,
    }
}

/// An endpoint as the list filters and sorts it. From the totals alone, `summary` lacks what
/// only the sketches give (sessions, quantiles, counts of flows and status classes) but the
/// one the list sorts by, and the suggested flows unless the list is filtered by flow, until
/// it is measured in full; `errors` is its 4xx and 5xx requests either way.
#[derive(Clone, Debug)]
struct Entry {
    summary: Summary,
    errors: u64,
    measured: bool,
}

impl Entry {
    fn full(summary: Summary) -> Entry {
        let errors = summary.statuses.get("4xx").copied().unwrap_or(0)
            + summary.statuses.get("5xx").copied().unwrap_or(0);
        Entry { summary, errors, measured: true }
    }

    /// From the totals alone; `with_flows` works out the suggested flows.
    fn of_totals(
        index: &SpecIndex<'_>,
        endpoint: EndpointKey,
        totals: &Totals,
        with_flows: bool,
    ) -> Entry {
        let mut summary = listed(index, endpoint, with_flows);
        summary.requests = totals.requests;
        summary.attacks = totals.attacks;
        summary.flows = totals.flows.iter().map(|flow| (flow.clone(), 0)).collect();
        summary.first_ts = Some(Millis(totals.first_ts));
        summary.last_ts = Some(Millis(totals.last_ts));
        Entry { summary, errors: totals.errors, measured: false }
    }

    /// Takes the figure the list sorts by from the `sketch` of `stats`.
    fn rank_by(&mut self, stats: &Stats, sketch: Part) {
        match sketch {
            Part::All => {}
            Part::Sessions => self.summary.sessions = stats.sessions.count(),
            Part::Duration => self.summary.duration_ms = stats.duration_quantiles(),
            Part::Size => self.summary.response_bytes = stats.response_bytes_quantiles(),
        }
    }

    /// A documented operation nobody called.
    fn unused(op: &Operation) -> Entry {
        Entry::full(Summary {
            server: None,
            method: op.method.clone(),
            template: op.template.clone(),
            endpoint: super::key(&op.method, &op.template),
            requests: 0,
            sessions: 0,
            statuses: BTreeMap::new(),
            duration_ms: None,
            response_bytes: None,
            flows: BTreeMap::new(),
            auto_flows: auto_flows::suggest(&op.template, &op.parameters),
            attacks: 0,
            first_ts: None,
            last_ts: None,
            spec: Some(SpecStatus::Unused),
        })
    }

    fn key(&self) -> Option<EndpointKey> {
        Some(EndpointKey {
            server: self.summary.server.clone()?,
            method: self.summary.method.clone(),
            template: self.summary.template.clone(),
        })
    }
}

/// The operations of the documents nobody called, given the endpoints that were.
fn unused<'e>(
    endpoints: &'e Endpoints,
    called: impl IntoIterator<Item = &'e EndpointKey> + 'e,
) -> impl Iterator<Item = Entry> + 'e {
    let called: HashSet<(&str, &str)> =
        called.into_iter().map(|k| (k.method.as_str(), k.template.as_str())).collect();
    endpoints
        .unused(move |method, template| called.contains(&(method, template)))
        .map(Entry::unused)
        .collect::<Vec<_>>()
        .into_iter()
}

/// Every endpoint of `measured`, and the unused operations, as listed.
pub fn summaries(endpoints: &Endpoints, measured: Vec<Measured>) -> Vec<Summary> {
    let index = SpecIndex::new(endpoints);
    let keys: Vec<EndpointKey> = measured.iter().map(|m| m.endpoint.clone()).collect();
    let mut all: Vec<Summary> = measured
        .into_iter()
        .map(|Measured { endpoint, stats }| summary(&index, endpoint, stats))
        .collect();
    all.extend(unused(endpoints, &keys).map(|entry| entry.summary));
    all
}

/// The page `query` asks for, read from `store`: see the module's documentation.
pub fn page_of(
    store: &dyn Store,
    endpoints: &Endpoints,
    query: &ListQuery,
) -> StoreResult<EndpointPage> {
    let mut ranker =
        Ranker { index: SpecIndex::new(endpoints), endpoints, query, selected: Vec::new() };
    let measured = store.endpoint_ranking(&query.range(), &mut ranker)?;
    let Ranker { index, mut selected, .. } = ranker;
    let mut full: HashMap<EndpointKey, Stats> =
        measured.into_iter().map(|m| (m.endpoint, m.stats)).collect();
    for entry in &mut selected {
        if let Some(stats) = entry.key().and_then(|key| full.remove_entry(&key)) {
            *entry = Entry::full(summary(&index, stats.0, stats.1));
        }
    }
    Ok(query.paged(selected))
}

/// Filters and sorts the endpoints for a store's [`Store::endpoint_ranking`], keeping them
/// sorted in `selected`.
struct Ranker<'a> {
    index: SpecIndex<'a>,
    endpoints: &'a Endpoints,
    query: &'a ListQuery,
    selected: Vec<Entry>,
}

impl Rank for Ranker<'_> {
    fn part(&self) -> Part {
        self.query.sort.sketch()
    }

    fn considers(&self, endpoint: &EndpointKey) -> bool {
        self.query.selects_by_key(
            Some(&endpoint.server),
            &endpoint.method,
            &endpoint.template,
            || self.index.status(&endpoint.method, &endpoint.template),
        )
    }

    fn pick(&mut self, counted: &[Counted]) -> Vec<EndpointKey> {
        let (index, query) = (&self.index, self.query);
        // Suggested flows are only worked out here when the list is filtered by flow: the
        // endpoints of the page get theirs when they are measured in full.
        let with_flows = query.flow.is_some();
        self.selected = counted
            .iter()
            .map(|c| {
                let mut entry = Entry::of_totals(index, c.endpoint.clone(), &c.totals, with_flows);
                entry.rank_by(&c.part, query.sort.sketch());
                entry
            })
            .chain(unused(self.endpoints, counted.iter().map(|c| &c.endpoint)))
            .filter(|entry| query.selects(&entry.summary))
            .collect();
        // In place: no buffer the size of thousands of entries (ties are broken by the key).
        self.selected.sort_unstable_by(|a, b| query.compare(a, b));
        query.window(&self.selected).iter().filter_map(Entry::key).collect()
    }
}

impl ListQuery {
    fn selects(&self, summary: &Summary) -> bool {
        let (server, method, template) =
            (summary.server.as_deref(), &summary.method, &summary.template);
        self.selects_by_key(server, method, template, || summary.spec)
            && self.flow.as_ref().is_none_or(|flow| {
                summary.flows.keys().any(|f| f.to_lowercase() == *flow)
                    || summary.auto_flows.iter().any(|f| f.flow == flow)
            })
    }

    /// What [`ListQuery::selects`] judges from the endpoint's key and spec status alone.
    fn selects_by_key(
        &self,
        server: Option<&str>,
        method: &str,
        template: &str,
        spec: impl FnOnce() -> Option<SpecStatus>,
    ) -> bool {
        self.server
            .as_ref()
            .is_none_or(|wanted| server.is_some_and(|s| s.eq_ignore_ascii_case(wanted)))
            && self.method.as_ref().is_none_or(|wanted| method == wanted)
            && self
                .q
                .as_ref()
                .is_none_or(|q| super::key(method, template).to_lowercase().contains(q))
            && self.spec.is_none_or(|wanted| spec() == Some(wanted))
    }

    fn compare(&self, a: &Entry, b: &Entry) -> Ordering {
        let p95 = |q: &Option<Quantiles>| q.map_or(-1.0, |q| q.p95);
        let (errors_a, errors_b) = (a.errors, b.errors);
        let (a, b) = (&a.summary, &b.summary);
        let by = match self.sort {
            Sort::Requests => a.requests.cmp(&b.requests),
            Sort::Sessions => a.sessions.cmp(&b.sessions),
            Sort::Attacks => a.attacks.cmp(&b.attacks),
            Sort::Errors => errors_a.cmp(&errors_b),
            Sort::Duration => p95(&a.duration_ms).total_cmp(&p95(&b.duration_ms)),
            Sort::Size => p95(&a.response_bytes).total_cmp(&p95(&b.response_bytes)),
            Sort::Last => a.last_ts.cmp(&b.last_ts),
            Sort::Endpoint => (&a.template, &a.method).cmp(&(&b.template, &b.method)),
        };
        let by = if self.ascending { by } else { by.reverse() };
        // Ties in a fixed order, so pages do not overlap.
        by.then_with(|| {
            (&a.template, &a.method, &a.server).cmp(&(&b.template, &b.method, &b.server))
        })
    }

    /// The page of `all` this query asks for, all measured in full.
    pub fn page(&self, all: Vec<Summary>) -> EndpointPage {
        let mut selected: Vec<Entry> =
            all.into_iter().filter(|s| self.selects(s)).map(Entry::full).collect();
        selected.sort_unstable_by(|a, b| self.compare(a, b));
        self.paged(selected)
    }

    /// The part of the sorted `selected` the page shows.
    fn window<'a>(&self, selected: &'a [Entry]) -> &'a [Entry] {
        let end = self.offset.saturating_add(self.limit).min(selected.len());
        &selected[self.offset.min(end)..end]
    }

    /// The page of the sorted `selected`.
    fn paged(&self, selected: Vec<Entry>) -> EndpointPage {
        let total = selected.len();
        let end = self.offset.saturating_add(self.limit).min(total);
        let endpoints: Vec<Summary> = self
            .window(&selected)
            .iter()
            .map(|entry| {
                debug_assert!(entry.measured, "a listed endpoint is measured in full");
                entry.summary.clone()
            })
            .collect();
        EndpointPage {
            endpoints,
            total: total as u64,
            next_cursor: (end < total).then(|| end.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::openapi::OpenApi;
    use crate::endpoints::stats::Observation;
    use crate::store::endpoints::EndpointKey;

    fn measured(server: &str, method: &str, template: &str, n: u64, attack: bool) -> Measured {
        let mut stats = Stats::new();
        for i in 0..n {
            let request = Observation {
                ts: 1000 + i as i64,
                status: if i % 2 == 0 { 200 } else { 404 },
                duration_ms: 10.0 + i as f64,
                response_bytes: 100 * i,
                session_id: "s",
                attack,
            };
            stats.add(&request, ["auth"]);
        }
        let endpoint =
            EndpointKey { server: server.into(), method: method.into(), template: template.into() };
        Measured { endpoint, stats }
    }

    fn params(query: &str) -> ListQuery {
        let uri: axum::http::Uri = format!("/?{query}").parse().unwrap();
        axum::extract::Query::<EndpointParams>::try_from_uri(&uri).unwrap().0.query().unwrap()
    }

    #[test]
    fn statuses_filters_sorting_and_pages() {
        let spec = "openapi: 3.1.0\npaths:\n  /orders/{id}:\n    get: {}\n    delete: {deprecated: true}\n  /reports:\n    get: {}\n";
        let endpoints = Endpoints::new(Some(OpenApi::from_texts([("a.yaml", spec)]).unwrap()));
        let all = summaries(
            &endpoints,
            vec![
                measured("shop", "GET", "/orders/{id}", 10, false),
                measured("shop", "DELETE", "/orders/{id}", 3, true),
                measured("shop", "POST", "/login", 5, false),
            ],
        );
        let page = params("").page(all.clone());
        let listed: Vec<(&str, Option<SpecStatus>)> =
            page.endpoints.iter().map(|s| (s.endpoint.as_str(), s.spec)).collect();
        assert_eq!(
            listed,
            [
                ("GET /orders/{id}", Some(SpecStatus::Documented)),
                ("POST /login", Some(SpecStatus::Shadow)),
                ("DELETE /orders/{id}", Some(SpecStatus::Zombie)),
                ("GET /reports", Some(SpecStatus::Unused)),
            ]
        );
        assert_eq!(page.total, 4);
        let login = &page.endpoints[1];
        assert_eq!(login.auto_flows[0].flow, "auth");
        assert_eq!(login.statuses.get("4xx"), Some(&2));

        let one = params("spec=zombie").page(all.clone());
        assert_eq!((one.total, one.endpoints[0].attacks), (1, 3));
        assert_eq!(params("method=post&q=LOG").page(all.clone()).total, 1);
        assert_eq!(params("server=SHOP").page(all.clone()).total, 3);
        assert_eq!(params("flow=auth").page(all.clone()).total, 3);

        let first = params("sort=endpoint&order=asc&limit=2").page(all.clone());
        assert_eq!(first.next_cursor.as_deref(), Some("2"));
        let names: Vec<&str> = first.endpoints.iter().map(|s| s.endpoint.as_str()).collect();
        assert_eq!(names, ["POST /login", "DELETE /orders/{id}"]);
        let second = params("sort=endpoint&order=asc&limit=2&cursor=2").page(all);
        assert_eq!(second.next_cursor, None);
        assert_eq!(second.endpoints.len(), 2);
    }

    #[test]
    fn bad_parameters_are_explained() {
        let parse = |query: &str| {
            let uri: axum::http::Uri = format!("/?{query}").parse().unwrap();
            axum::extract::Query::<EndpointParams>::try_from_uri(&uri).unwrap().0.query()
        };
        assert!(parse("spec=gone").unwrap_err().contains("documented, shadow, zombie or unused"));
        assert!(parse("sort=x").unwrap_err().contains("one of requests"));
        assert!(parse("order=up").unwrap_err().contains("asc or desc"));
        assert!(parse("limit=0").unwrap_err().contains("1 to 10000"));
        assert!(parse("from=2026-01-02&to=2026-01-01").unwrap_err().contains("before"));
        let uri: axum::http::Uri = "/?nope=1".parse().unwrap();
        assert!(axum::extract::Query::<EndpointParams>::try_from_uri(&uri).is_err());
    }
}
