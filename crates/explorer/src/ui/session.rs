//! `/sessions/{id}`: one session, its statistics, timeline, requests and related sessions.
//!
//! Two sets of filters meet here. The page's own query holds the in-session filters: their
//! request-level predicates select the requests shown, and each is a removable chip. `list`
//! holds the query of the sessions list the page was opened from (its global filters, sort
//! and page): a session opened from a filtered list starts with the list's filters applied,
//! "Show all requests" drops them, "Apply filters" applies the list's again, and "← Sessions"
//! goes back to the list as it was, whatever was filtered inside the session.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use api_sessions_core::record::Record;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::chart::{self, status_class};
use super::form::{self, filter_form, FilterForm};
use super::format::{count, decoded, duration, time_tag};
use super::html::Html;
use super::layout::{error_box, error_page, not_found, page as render};
use super::list::risk_class;
use crate::app::AppState;
use crate::endpoints::annotate::{annotate, Annotation};
use crate::params::{pairs, path_segment, query_string, sort_pairs, PageSize, QueryParams};
use crate::session_ref;
use crate::store::{
    AttackFilter, Cursor, Filter, ListQuery, SessionDetail, StatusFilter, StoreError,
};

/// Requests per page on screen.
const REQUESTS_ON_SCREEN: usize = 200;

/// The session page's own parameter: the query string of the list the session was opened
/// from. The JSON API does not take it.
const LIST: &str = "list";

/// The query string (with `?`) of a session's page opened from the list `query` shows: the
/// list's filters applied inside it, and the list to go back to.
pub fn opened_from(query: &ListQuery) -> String {
    let list = list_query_string(query);
    if list.is_empty() {
        String::new()
    } else {
        query_string(&query.filter, &[(LIST, &list)])
    }
}

/// The list's own query string, without `?`: filters, sort, page size and page.
fn list_query_string(query: &ListQuery) -> String {
    let limit = query.limit.to_string();
    let cursor = query.cursor.as_ref().map(ToString::to_string);
    let mut extra = sort_pairs(query.sort);
    if query.limit != PageSize::SESSIONS.default {
        extra.push(("limit", &limit));
    }
    if let Some(cursor) = &cursor {
        extra.push(("cursor", cursor));
    }
    query_string(&query.filter, &extra).trim_start_matches('?').to_owned()
}

/// The page's query without `list`, and the list it names, checked as the list checks it.
fn split_list(raw: Option<&str>) -> Result<(String, Option<ListQuery>), String> {
    let mut rest = form_urlencoded::Serializer::new(String::new());
    let mut list = None;
    for (name, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if name != LIST {
            rest.append_pair(&name, &value);
        } else if list.replace(value).is_some() {
            return Err(format!("invalid query: repeated parameter `{LIST}`"));
        }
    }
    let list = list
        .filter(|list| !list.trim().is_empty())
        .map(|list| {
            QueryParams::from_query(Some(&list))
                .and_then(|params| params.list_query())
                .map_err(|message| format!("invalid \"{LIST}\" (the sessions list): {message}"))
        })
        .transpose()?;
    Ok((rest.finish(), list))
}

pub async fn page(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    // A unique prefix of the id moves to the session's full address.
    match session_ref::resolve(&app, &id).await {
        Ok(full) if full != id => {
            let query = raw.as_deref().map(|query| format!("?{query}")).unwrap_or_default();
            let to = format!("/sessions/{}{query}", path_segment(&full));
            return Redirect::to(&to).into_response();
        }
        Ok(_) => {}
        Err(error) => return ambiguous_page(error),
    }
    let title = format!("Session {id}");
    let path = format!("/sessions/{}", path_segment(&id));
    let retention_ms = app.store.retention_ms();
    let split = split_list(raw.as_deref());
    let (own, list) = match &split {
        Ok((own, list)) => (Some(own.as_str()), list.clone()),
        Err(_) => (raw.as_deref(), None),
    };
    let decoded = split.clone().and_then(|_| QueryParams::from_query(own));
    let params = decoded.clone().unwrap_or_default();
    let request = decoded.and_then(|params| Ok((params.filter()?, params.cursor()?)));
    let (filter, cursor) = match request {
        Ok(request) => request,
        Err(message) => {
            return render(StatusCode::BAD_REQUEST, &title, |html| {
                let filter = Filter::default();
                let view = View::new(&id, path.clone(), &filter, list.as_ref());
                html.open("nav", &[("class", "crumbs")])
                    .element("a", &[("href", &view.back())], "← Sessions")
                    .close("nav");
                html.element("h1", &[], &title);
                error_box(html, &message);
                view.form(html, &params);
                super::layout::retention(html, retention_ms);
            })
        }
    };
    let loaded = {
        let (id, filter) = (id.clone(), filter.clone());
        let endpoints = app.endpoints.clone();
        app.with_store(move |store| {
            let Some(detail) = store.session(&id, &filter, cursor, REQUESTS_ON_SCREEN)? else {
                return Ok(None);
            };
            // "N of M requests": M counts the session without its request-level filters.
            let all = if filter.selects_requests() {
                let all = store.session(&id, &filter.session_level(), None, 1)?;
                all.map_or(detail.session.requests, |all| all.session.requests)
            } else {
                detail.session.requests
            };
            let annotations = annotate(store, &endpoints, &id, &detail.requests.requests)?;
            Ok::<_, StoreError>(Some((detail, all, annotations)))
        })
        .await
    };
    let (detail, all, annotations) = match loaded {
        Ok(Some(loaded)) => loaded,
        Ok(None) => return not_found("No such session, or it is older than the retention."),
        Err(error) => return error_page(error),
    };
    let blocked = super::blocks::state(&app, &detail.session.key_hash).await;
    render(StatusCode::OK, &title, |html| {
        let view = View::new(&id, path.clone(), &filter, list.as_ref());
        view.header(html, &detail, all);
        view.form(html, &params);
        super::blocks::panel(html, &id, &detail.session.key_hash, blocked.as_ref());
        view.signals(html, &detail);
        view.charts(html, &detail);
        view.requests(html, &detail, &annotations, cursor);
        view.actor(html, &detail);
        view.related(html, &detail);
        super::layout::retention(html, retention_ms);
    })
}

/// An id prefix several sessions share: links to them, or the store's failure.
fn ambiguous_page(error: crate::error::Error) -> Response {
    let crate::error::Error::AmbiguousSession { candidates, .. } = &error else {
        return error_page(error);
    };
    let candidates = candidates.clone();
    let (status, message) = error.into_status_and_message();
    render(status, "Several sessions", |html| {
        html.element("h1", &[], "Several sessions");
        error_box(html, &message);
        html.open("ul", &[]);
        for id in &candidates {
            let href = format!("/sessions/{}", path_segment(id));
            html.open("li", &[])
                .open("a", &[("href", &href)])
                .element("code", &[], id)
                .close("a")
                .close("li");
        }
        html.close("ul");
    })
}

struct View<'a> {
    id: &'a str,
    /// `/sessions/{id}`.
    path: String,
    /// The in-session filters.
    filter: &'a Filter,
    /// The list the session was opened from.
    list: Option<&'a ListQuery>,
    /// Its query string, without `?`; empty when there is none.
    list_query: String,
}

impl<'a> View<'a> {
    fn new(id: &'a str, path: String, filter: &'a Filter, list: Option<&'a ListQuery>) -> Self {
        let list_query = list.map(list_query_string).unwrap_or_default();
        View { id, path, filter, list, list_query }
    }

    /// `?…` for `filter` and `extra`, keeping the list the session was opened from.
    fn query(&self, filter: &Filter, extra: &[(&str, &str)]) -> String {
        let mut extra = extra.to_vec();
        if !self.list_query.is_empty() {
            extra.push((LIST, &self.list_query));
        }
        query_string(filter, &extra)
    }

    /// This page with `filter` applied inside the session.
    fn href(&self, filter: &Filter, extra: &[(&str, &str)]) -> String {
        format!("{}{}", self.path, self.query(filter, extra))
    }

    /// This page without the in-session filters.
    fn all_requests(&self) -> String {
        self.href(&self.filter.session_level(), &[])
    }

    /// The list as it was: its own filters, sort and page, none of the session's.
    fn back(&self) -> String {
        if self.list_query.is_empty() {
            "/".to_owned()
        } else {
            format!("/?{}", self.list_query)
        }
    }

    /// The in-session filter form.
    fn form(&self, html: &mut Html, params: &QueryParams) {
        let all_requests = self.all_requests();
        let carry = [(LIST, self.list_query.as_str())];
        let form = FilterForm {
            action: &self.path,
            fields: form::IN_SESSION,
            hidden: form::SESSION_LEVEL,
            carry: if self.list_query.is_empty() { &[] } else { &carry },
            reset: &all_requests,
            submit: "Filter requests",
        };
        filter_form(html, params, &form);
    }

    /// "Showing N of M requests" with the in-session filters as removable chips, "Show all
    /// requests", and "Apply filters" when the list's filters are not those applied.
    fn scope(&self, html: &mut Html, shown: u64, all: u64) {
        html.open("div", &[("class", "scope"), ("id", "scope")]);
        let applied = request_level_pairs(self.filter);
        if applied.is_empty() {
            html.element("span", &[("class", "count")], &format!("All {} requests", count(all)));
        } else {
            html.element(
                "span",
                &[("class", "count")],
                &format!("Showing {} of {} requests", count(shown), count(all)),
            );
            for (name, value) in &applied {
                self.chip(html, name, value);
            }
            html.element(
                "a",
                &[
                    ("class", "button secondary"),
                    ("id", "show-all"),
                    ("href", &self.all_requests()),
                ],
                "Show all requests",
            );
        }
        if let Some(list) = self.list {
            let global = request_level_pairs(&list.filter);
            if !global.is_empty() && global != applied {
                let names: Vec<String> =
                    global.iter().map(|(name, value)| format!("{name}: {value}")).collect();
                html.element(
                    "a",
                    &[
                        ("class", "button"),
                        ("id", "apply-filters"),
                        ("href", &self.href(&list.filter, &[])),
                        ("title", &format!("Apply the list's filters here: {}", names.join(", "))),
                    ],
                    "Apply filters",
                );
            }
        }
        html.close("div");
    }

    /// One applied filter, with a link to this page without it.
    fn chip(&self, html: &mut Html, name: &str, value: &str) {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (other, value) in pairs(self.filter) {
            if other != name {
                query.append_pair(other, &value);
            }
        }
        if !self.list_query.is_empty() {
            query.append_pair(LIST, &self.list_query);
        }
        let query = query.finish();
        let href =
            if query.is_empty() { self.path.clone() } else { format!("{}?{query}", self.path) };
        html.open("span", &[("class", "filter-chip"), ("data-name", name)])
            .element("span", &[("class", "name")], name)
            .text(" ");
        match name {
            "from" | "to" => match api_sessions_core::time::Millis::parse(value) {
                Some(ts) => time_tag(html, ts),
                None => {
                    html.text(value);
                }
            },
            _ => {
                html.text(value);
            }
        }
        html.element(
            "a",
            &[
                ("class", "remove"),
                ("href", &href),
                ("title", &format!("Remove the filter {name}")),
                ("aria-label", &format!("Remove the filter {name}")),
            ],
            "×",
        )
        .close("span");
    }

    fn header(&self, html: &mut Html, detail: &SessionDetail, all: u64) {
        let session = &detail.session;
        html.open("nav", &[("class", "crumbs")])
            .element("a", &[("href", &self.back()), ("id", "back")], "← Sessions")
            .close("nav");
        html.open("h1", &[]).text("Session ").element("code", &[], self.id).close("h1");

        let link = self.href(self.filter, &[]);
        let csv = format!(
            "/api/sessions/{}.csv{}",
            path_segment(self.id),
            query_string(self.filter, &[])
        );
        let json =
            format!("/api/sessions/{}{}", path_segment(self.id), query_string(self.filter, &[]));
        html.open("div", &[("class", "actions")]);
        html.open(
            "input",
            &[
                ("id", "share-link"),
                ("class", "share"),
                ("readonly", "readonly"),
                ("value", &link),
                ("aria-label", "Link to this view"),
            ],
        );
        html.element(
            "button",
            &[
                ("type", "button"),
                ("id", "copy-link"),
                ("data-copy", "share-link"),
                ("hidden", "hidden"),
            ],
            "Copy link",
        );
        html.element(
            "a",
            &[("class", "button"), ("id", "download-csv"), ("href", &csv), ("download", "")],
            "Download CSV",
        );
        html.element("a", &[("class", "button secondary"), ("href", &json)], "JSON");
        html.close("div");

        self.scope(html, session.requests, all);
        html.open("dl", &[("class", "facts")]);
        fact(html, "Risk", &session.risk.to_string());
        fact(html, "Requests", &session.requests.to_string());
        time_fact(html, "First request", session.first_ts);
        time_fact(html, "Last request", session.last_ts);
        fact(html, "Duration", &duration(session.last_ts.0 - session.first_ts.0));
        // Every user in order of first use: "dana → alice".
        let users = if session.users.is_empty() {
            session.user.clone().unwrap_or_else(|| "—".to_owned())
        } else {
            session.users.join(" → ")
        };
        fact(html, if session.users.len() > 1 { "Users" } else { "User" }, &users);
        fact(html, "Role", session.role.as_deref().unwrap_or("—"));
        fact(html, "Attacks", &session.attacks.to_string());
        fact(html, "Nodes", &session.nodes.join(", "));
        match session.user_agents.as_slice() {
            [] => {}
            [agent] => fact(html, "User agent", agent),
            agents => fact(html, "User agents", &agents.join(" | ")),
        }
        fact(html, "Grouped by", &session.session_key);
        time_fact(html, "Session start", session.session_start);
        fact(html, "Key hash", &session.key_hash);
        html.close("dl");
    }

    /// Every signal with its detail, its score and the requests that show it.
    fn signals(&self, html: &mut Html, detail: &SessionDetail) {
        let detection = &detail.detection;
        html.open("section", &[("class", "signals"), ("id", "signals")]);
        html.open("h2", &[])
            .text("Risk ")
            .element("span", &[("class", risk_class(detection.risk))], &detection.risk.to_string())
            .close("h2");
        if detection.signals.is_empty() {
            html.element(
                "p",
                &[("class", "muted")],
                "No signal: nothing about this session looks automated or abusive.",
            );
            html.close("section");
            return;
        }
        let shown = shown_ids(detail);
        html.markup(
            "<table class=\"signals\"><thead><tr><th>Signal</th><th class=\"num\">Score</th>\
             <th>Detail</th><th>Evidence</th></tr></thead><tbody>",
        );
        for signal in &detection.signals {
            let finding = signal.score >= 0.5;
            html.open("tr", &[("class", if finding { "finding" } else { "" })])
                .open("td", &[])
                .element(
                    "span",
                    &[("class", if finding { "chip" } else { "chip weak" })],
                    signal.name.as_str(),
                )
                .close("td")
                .element("td", &[("class", "num")], &format!("{:.2}", signal.score))
                .element("td", &[], &signal.detail)
                .open("td", &[("class", "evidence")]);
            for request_id in &signal.evidence {
                let href = if shown.contains(request_id.as_str()) {
                    format!("#{}", request_anchor(request_id))
                } else {
                    self.request_link(request_id)
                };
                html.open("a", &[("href", &href), ("title", request_id)])
                    .element("code", &[], &short(request_id))
                    .close("a")
                    .text(" ");
            }
            html.close("td").close("tr");
        }
        html.markup("</tbody></table>");
        html.close("section");
    }

    /// The other sessions of the same IP address and User-Agent around this one.
    fn actor(&self, html: &mut Html, detail: &SessionDetail) {
        let Some(actor) = &detail.detection.actor else { return };
        html.open("section", &[("class", "actor"), ("id", "actor")]);
        html.element("h2", &[], "Same actor");
        html.open("p", &[("class", "muted")])
            .text("IP address ")
            .element("code", &[], &actor.ip)
            .text(", User-Agent ")
            .element("code", &[], actor.user_agent.as_deref().unwrap_or("(none)"))
            .text(&format!(": {} other sessions around this one.", actor.sessions))
            .close("p");
        if !actor.session_ids.is_empty() {
            html.open("ul", &[("class", "related actor-sessions")]);
            for id in &actor.session_ids {
                let href = format!("/sessions/{}", path_segment(id));
                html.open("li", &[])
                    .open("a", &[("href", &href)])
                    .element("code", &[], id)
                    .close("a")
                    .close("li");
            }
            html.close("ul");
        }
        html.close("section");
    }

    fn charts(&self, html: &mut Html, detail: &SessionDetail) {
        let stats = &detail.stats;
        // A bar filters the requests by what it counts.
        let by = |set: &dyn Fn(&mut Filter)| {
            let mut filter = self.filter.clone();
            set(&mut filter);
            self.href(&filter, &[])
        };
        html.open("section", &[("class", "charts")]);
        chart::bars(
            html,
            "Methods",
            &stats.methods,
            |_| "method",
            |method| Some(by(&|f| f.method = Some(method.to_owned()))),
        );
        chart::bars(html, "Statuses", &stats.statuses, status_class, |status| {
            let status = StatusFilter::parse(status)?;
            Some(by(&|f| f.status = Some(status)))
        });
        chart::bars(
            html,
            "IPs",
            &stats.ips,
            |_| "ip",
            |ip| Some(by(&|f| f.ip = Some(ip.to_owned()))),
        );
        chart::bars(
            html,
            "Attacks",
            &stats.attacks,
            |_| "attack",
            |kind| Some(by(&|f| f.attack = Some(AttackFilter::parse(kind)))),
        );
        html.close("section");

        html.open("section", &[("class", "flows")]).element("h2", &[], "Business flows");
        if stats.flows.is_empty() {
            html.element("p", &[("class", "muted")], "This session touched no tagged flow.");
        } else {
            let total = detail.session.requests.max(1);
            let mut flows: Vec<_> = stats.flows.iter().collect();
            flows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            html.markup(
                "<table class=\"flows\"><thead><tr><th>Flow</th><th class=\"num\">Requests</th>\
                 <th class=\"num\">Share</th><th></th></tr></thead><tbody>",
            );
            // A flow describes whole sessions: its link lists the sessions that touched it.
            let list_filter = self.list.map(|list| list.filter.clone()).unwrap_or_default();
            for (flow, count) in flows {
                let share = 100.0 * *count as f64 / total as f64;
                let sessions = Filter { flow: Some(flow.clone()), ..list_filter.clone() };
                let href = format!("/{}", query_string(&sessions, &[]));
                html.open("tr", &[])
                    .open("td", &[])
                    .element(
                        "a",
                        &[
                            ("href", &href),
                            ("class", "flow"),
                            ("title", "Sessions that touched this flow"),
                        ],
                        flow,
                    )
                    .close("td")
                    .element("td", &[("class", "num")], &count.to_string())
                    .element("td", &[("class", "num")], &format!("{share:.1}%"))
                    .open("td", &[])
                    .open(
                        "meter",
                        &[("min", "0"), ("max", "100"), ("value", &format!("{share:.1}"))],
                    )
                    .close("meter")
                    .close("td")
                    .close("tr");
            }
            html.markup("</tbody></table>");
        }
        html.close("section");

        html.open("section", &[]);
        let unranged = Filter { from: None, to: None, ..self.filter.clone() };
        chart::timeline(html, &detail.timeline, &self.href(&unranged, &[]), |from, to| {
            self.href(&Filter { from: Some(from), to: Some(to), ..unranged.clone() }, &[])
        });
        html.close("section");
    }

    fn requests(
        &self,
        html: &mut Html,
        detail: &SessionDetail,
        annotations: &[Option<Annotation>],
        cursor: Option<Cursor>,
    ) {
        let (records, annotations): (Vec<Record>, Vec<Option<&Annotation>>) = detail
            .requests
            .requests
            .iter()
            .zip(annotations.iter().map(Option::as_ref).chain(std::iter::repeat(None)))
            .filter_map(|(request, annotation)| {
                Some((serde_json::from_str(&request.json).ok()?, annotation))
            })
            .unzip();
        let offset = detail.requests.offset as usize;
        let total = detail.session.requests;
        if records.is_empty() {
            html.element("h2", &[], "Requests");
            html.open("p", &[("class", "empty")])
                .text("No request of this session matches the filters. ")
                .element("a", &[("href", &self.all_requests())], "Show all requests")
                .close("p");
            return;
        }
        html.element(
            "h2",
            &[("id", "requests")],
            &format!(
                "Requests {}–{} of {}",
                count(offset as u64 + 1),
                count((offset + records.len()) as u64),
                count(total)
            ),
        );
        html.markup(
            "<label class=\"raw-toggle\"><input type=\"checkbox\" id=\"raw-values\"> \
             Show parameters raw (as captured, percent-encoded)</label>",
        );
        html.open("div", &[("class", "scroll")]).open("table", &[("class", "requests")]);
        html.markup(
            "<thead><tr><th>#</th><th>Time</th><th>Method</th><th>Path</th><th>Endpoint</th>\
             <th>Status</th><th class=\"num\">Time, ms</th><th class=\"num\">Size, bytes</th><th>IP</th>\
             <th>User</th><th>Role</th><th>Params</th><th>Attack</th></tr></thead><tbody>",
        );
        let evidence = evidence(detail);
        for (i, (record, annotation)) in records.iter().zip(&annotations).enumerate() {
            let n = offset + i + 1;
            let anchor = format!("#{}", request_anchor(&record.request_id));
            let mut class = String::new();
            if record.attack.is_some() {
                class.push_str("malicious");
            }
            let shows = evidence.get(record.request_id.as_str());
            if shows.is_some() {
                class.push_str(" evidence");
            }
            let names = shows.map(|names| names.iter().copied().collect::<Vec<_>>().join(" "));
            let mut attributes = vec![("class", class.trim())];
            if let Some(names) = &names {
                attributes.push(("title", names.as_str()));
                attributes.push(("data-signals", names.as_str()));
            }
            html.open("tr", &attributes);
            html.open("td", &[])
                .element("a", &[("href", &anchor)], &count(n as u64))
                .close("td")
                .open("td", &[("class", "nowrap")]);
            time_tag(html, record.ts);
            html.close("td").element("td", &[], &record.method);
            html.open("td", &[("class", "path")])
                .open("div", &[("class", "clamp")])
                .path(&record.path)
                .close("div")
                .close("td");
            endpoint_cell(html, *annotation);
            let status = record.status.to_string();
            html.open("td", &[])
                .element(
                    "span",
                    &[("class", &format!("status {}", status_class(&status)))],
                    &status,
                )
                .close("td");
            let outlier = |name: &str| annotation.is_some_and(|a| a.outliers.contains(&name));
            let usual = |p95: Option<f64>| {
                p95.map_or(String::new(), |p95| format!("; usual (p95) for the endpoint: {p95:.1}"))
            };
            let facts = annotation.map(|a| &a.endpoint_stats);
            let slow = outlier("duration_ms");
            html.element(
                "td",
                &[
                    ("class", if slow { "num outlier duration" } else { "num" }),
                    (
                        "title",
                        &format!(
                            "{}{}",
                            if slow { "far above the endpoint's usual time" } else { "time" },
                            usual(facts.and_then(|f| f.duration_ms_p95))
                        ),
                    ),
                ],
                &format!("{:.1}", record.duration_ms),
            );
            let large = outlier("response_bytes");
            html.element(
                "td",
                &[
                    ("class", if large { "num outlier size" } else { "num" }),
                    (
                        "title",
                        &format!(
                            "{}request {} bytes{}",
                            if large { "far above the endpoint's usual size; " } else { "" },
                            record.request_bytes,
                            usual(facts.and_then(|f| f.response_bytes_p95))
                        ),
                    ),
                ],
                &record.response_bytes.to_string(),
            );
            html.element("td", &[], &record.ip)
                .element("td", &[], record.user.as_deref().unwrap_or(""))
                .element("td", &[], record.role.as_deref().unwrap_or(""));
            html.open("td", &[("class", "params")]).open("div", &[("class", "clamp")]);
            for param in &record.params {
                html.open("div", &[("title", &param.source)]);
                let name = decoded(&param.name, &param.source, false);
                let value = decoded(&param.value, &param.source, param.hashed);
                let readable = format!("{name}={value}");
                let raw = format!("{}={}", param.name, param.value);
                value_text(html, &readable, &raw);
                html.close("div");
            }
            html.close("div").close("td").open("td", &[]);
            if let Some(attack) = &record.attack {
                html.element("span", &[("class", "badge attack")], &attack.kind);
            }
            html.close("td").close("tr");
        }
        html.markup("</tbody>").close("table").close("div");

        if cursor.is_some() || detail.requests.next.is_some() {
            html.open("nav", &[("class", "paging")]);
            if cursor.is_some() {
                let first = self.href(self.filter, &[]);
                html.element(
                    "a",
                    &[("class", "button secondary"), ("href", &first)],
                    "← First requests",
                );
            }
            if let Some(next) = detail.requests.next {
                let next = next.to_string();
                let href = self.href(self.filter, &[("cursor", &next)]);
                html.element("a", &[("class", "button"), ("href", &href)], "Next requests →");
            }
            html.close("nav");
        }

        html.element("h2", &[], "Request details");
        for (i, record) in records.iter().enumerate() {
            details(html, offset + i + 1, record, &self.request_link(&record.request_id));
        }
    }

    /// The request on its own, whatever page or filter it was seen on.
    fn request_link(&self, request_id: &str) -> String {
        let filter =
            Filter { request_id: Some(request_id.to_owned()), ..self.filter.session_level() };
        self.href(&filter, &[])
    }

    fn related(&self, html: &mut Html, detail: &SessionDetail) {
        html.element("h2", &[], "Related sessions");
        if detail.related.is_empty() {
            html.element("p", &[("class", "muted")], "No other session has the same key.");
            return;
        }
        html.element(
            "p",
            &[("class", "muted")],
            "Sessions with the same key value, split by idle time or maximum duration.",
        );
        html.open("ul", &[("class", "related")]);
        let query = self.query(self.filter, &[]);
        for id in &detail.related {
            let href = format!("/sessions/{}{query}", path_segment(id));
            html.open("li", &[])
                .open("a", &[("href", &href)])
                .element("code", &[], id)
                .close("a")
                .close("li");
        }
        html.close("ul");
    }
}

/// The request's endpoint, with its spec status and the malicious requests it has had.
fn endpoint_cell(html: &mut Html, annotation: Option<&Annotation>) {
    html.open("td", &[("class", "endpoint")]);
    if let Some(annotation) = annotation {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("endpoint", &annotation.endpoint);
        let href = format!("/?{}", query.finish());
        let facts = &annotation.endpoint_stats;
        let title = format!("on {}: {} requests", facts.server, facts.requests);
        html.open("div", &[("class", "clamp")])
            .open("a", &[("href", &href), ("title", &title)])
            .open("code", &[])
            .path(&annotation.endpoint)
            .close("code")
            .close("a")
            .close("div");
        if let Some(spec) = facts.spec {
            html.text(" ").element(
                "span",
                &[("class", &format!("badge spec {}", spec.as_str()))],
                spec.as_str(),
            );
        }
        if facts.attacks > 0 {
            html.text(" ").element(
                "span",
                &[("class", "badge attack"), ("title", "malicious requests to this endpoint")],
                &facts.attacks.to_string(),
            );
        }
    }
    html.close("td");
}

/// The request ids that are evidence of a signal, with the signals they show.
fn evidence(detail: &SessionDetail) -> BTreeMap<&str, BTreeSet<&'static str>> {
    let mut evidence: BTreeMap<&str, BTreeSet<&'static str>> = BTreeMap::new();
    for signal in &detail.detection.signals {
        for request_id in &signal.evidence {
            evidence.entry(request_id.as_str()).or_default().insert(signal.name.as_str());
        }
    }
    evidence
}

/// The request-level predicates of a filter (those that select requests inside a session), as
/// `name=value` pairs.
fn request_level_pairs(filter: &Filter) -> Vec<(&'static str, String)> {
    let session_level: Vec<&str> =
        pairs(&filter.session_level()).into_iter().map(|(name, _)| name).collect();
    pairs(filter).into_iter().filter(|(name, _)| !session_level.contains(name)).collect()
}

/// The ids of the requests on the page.
fn shown_ids(detail: &SessionDetail) -> BTreeSet<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        request_id: String,
    }
    let requests = detail.requests.requests.iter();
    requests
        .filter_map(|request| serde_json::from_str::<Id>(&request.json).ok())
        .map(|id| id.request_id)
        .collect()
}

/// The `id` of a request's details on the page: by request id, so that it names the same
/// request on every page and under every filter.
fn request_anchor(request_id: &str) -> String {
    format!("request-{request_id}")
}

fn fact(html: &mut Html, name: &str, value: &str) {
    html.element("dt", &[], name).element("dd", &[], value);
}

fn time_fact(html: &mut Html, name: &str, ts: api_sessions_core::time::Millis) {
    html.element("dt", &[], name).open("dd", &[]);
    time_tag(html, ts);
    html.close("dd");
}

/// A captured value as decoded for reading and, when that differs, as captured, for the
/// "raw" switch to show instead.
fn value_text(html: &mut Html, readable: &str, raw: &str) {
    if readable == raw {
        html.text(raw);
    } else {
        html.element("span", &[("class", "value-decoded")], readable).element(
            "span",
            &[("class", "value-raw")],
            raw,
        );
    }
}

/// Request ids are long; the start tells them apart on screen.
fn short(id: &str) -> String {
    if id.chars().count() > 12 {
        let mut short: String = id.chars().take(12).collect();
        short.push('…');
        short
    } else {
        id.to_owned()
    }
}

/// Everything a record holds, malicious requests in full.
fn details(html: &mut Html, n: usize, record: &Record, link: &str) {
    let id = request_anchor(&record.request_id);
    let mut attributes = vec![("id", id.as_str()), ("class", "request")];
    if record.attack.is_some() {
        attributes.push(("open", "open"));
    }
    html.open("details", &attributes);
    html.open("summary", &[]).open("span", &[("class", "clamp")]).text(&format!("#{n} "));
    time_tag(html, record.ts);
    html.text(&format!(" {} ", record.method))
        .open("span", &[("class", "path")])
        .path(&record.path)
        .close("span")
        .text(&format!(" → {}", record.status));
    html.close("span");
    if let Some(attack) = &record.attack {
        html.text(" ").element("span", &[("class", "badge attack")], &attack.kind);
    }
    html.close("summary");
    html.open("p", &[])
        .element("a", &[("href", link), ("class", "permalink")], "Link to this request")
        .close("p");

    html.open("dl", &[("class", "facts")]);
    let mut fact = |name: &str, value: &str| {
        html.element("dt", &[], name).element("dd", &[], value);
    };
    fact("Request ID", &record.request_id);
    fact("Server", &record.server);
    fact("Node, pid, seq", &format!("{}, {}, {}", record.node, record.pid, record.seq));
    fact("Time, ms", &format!("{:.3}", record.duration_ms));
    fact("Request bytes", &record.request_bytes.to_string());
    fact("Response bytes", &record.response_bytes.to_string());
    fact("IP", &record.ip);
    fact("User agent", record.user_agent.as_deref().unwrap_or("—"));
    fact("Flows", &record.flows.join(", "));
    let key = if record.session_key_builtin { "built-in" } else { "custom" };
    fact("Grouped by", &format!("{} ({key})", record.session_key));
    if !record.truncated.is_empty() {
        let cut: Vec<_> = record.truncated.iter().map(|t| t.as_str()).collect();
        fact("Truncated at the body limit", &cut.join(", "));
    }
    html.close("dl");

    if !record.params.is_empty() {
        html.markup(
            "<table class=\"params\"><thead><tr><th>Parameter</th><th>Source</th><th>Type</th>\
             <th>Value</th></tr></thead><tbody>",
        );
        for param in &record.params {
            let hashed = if param.hashed { " (hashed)" } else { "" };
            let name = decoded(&param.name, &param.source, false);
            let value = decoded(&param.value, &param.source, param.hashed);
            html.open("tr", &[]).open("td", &[]);
            value_text(html, &name, &param.name);
            html.close("td")
                .element("td", &[], &param.source)
                .element("td", &[], param.kind.as_str())
                .open("td", &[("class", "value")])
                .open("div", &[("class", "clamp")]);
            value_text(html, &format!("{value}{hashed}"), &format!("{}{hashed}", param.value));
            html.close("div").close("td").close("tr");
        }
        html.markup("</tbody></table>");
    }

    if let Some(attack) = &record.attack {
        html.open("div", &[("class", "attack-content")]).element(
            "h3",
            &[],
            &format!("Malicious request: {}", attack.kind),
        );
        let mut raw = attack.request.line.clone();
        raw.push('\n');
        for (name, value) in &attack.request.headers {
            raw.push_str(name);
            raw.push_str(": ");
            raw.push_str(value);
            raw.push('\n');
        }
        raw.push('\n');
        raw.push_str(&attack.request.body);
        html.element("pre", &[("class", "raw")], &raw);
        if attack.request.body_truncated {
            html.element("p", &[("class", "muted")], "The body was cut at the body limit.");
        }
        html.close("div");
    }
    html.close("details");
}
