//! `/sessions/{id}`: one session, its statistics, timeline, requests and related sessions.
//!
//! The page shares the list's filters: request-level ones select the requests shown (the
//! in-session filters), session-level ones (user, role, flow) ride along unchanged so "back to
//! sessions" returns to the same list. "Show all requests" drops the request-level ones.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use api_sessions_core::record::Record;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::chart::{self, status_class};
use super::form::{self, filter_form};
use super::format::{count, duration, time};
use super::html::Html;
use super::layout::{error_box, error_page, not_found, page as render};
use super::list::risk_class;
use crate::app::AppState;
use crate::endpoints::annotate::{annotate, Annotation};
use crate::params::{path_segment, query_string, QueryParams};
use crate::session_ref;
use crate::store::{Cursor, Filter, SessionDetail, StoreError};

/// Requests per page on screen.
const REQUESTS_ON_SCREEN: usize = 200;

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
    let decoded = QueryParams::from_query(raw.as_deref());
    let params = decoded.clone().unwrap_or_default();
    let request = decoded.and_then(|params| Ok((params.filter()?, params.cursor()?)));
    let (filter, cursor) = match request {
        Ok(request) => request,
        Err(message) => {
            return render(StatusCode::BAD_REQUEST, &title, |html| {
                html.element("h1", &[], &title);
                error_box(html, &message);
                let action = format!("/sessions/{}", path_segment(&id));
                filter_form(html, &action, &params, form::IN_SESSION, form::SESSION_LEVEL, &action);
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
            let annotations = annotate(store, &endpoints, &id, &detail.requests.requests)?;
            Ok::<_, StoreError>(Some((detail, annotations)))
        })
        .await
    };
    let (detail, annotations) = match loaded {
        Ok(Some(loaded)) => loaded,
        Ok(None) => return not_found("No such session, or it is older than the retention."),
        Err(error) => return error_page(error),
    };
    render(StatusCode::OK, &title, |html| {
        let view =
            View { id: &id, path: format!("/sessions/{}", path_segment(&id)), filter: &filter };
        view.header(html, &detail);
        filter_form(
            html,
            &view.path,
            &params,
            form::IN_SESSION,
            form::SESSION_LEVEL,
            &view.all_requests(),
        );
        view.signals(html, &detail);
        view.charts(html, &detail);
        view.requests(html, &detail, &annotations, cursor);
        view.actor(html, &detail);
        view.related(html, &detail);
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
    filter: &'a Filter,
}

impl View<'_> {
    /// This page without the in-session filters.
    fn all_requests(&self) -> String {
        format!("{}{}", self.path, query_string(&self.filter.session_level(), &[]))
    }

    fn header(&self, html: &mut Html, detail: &SessionDetail) {
        let session = &detail.session;
        let list = format!("/{}", query_string(self.filter, &[]));
        html.open("nav", &[("class", "crumbs")])
            .element("a", &[("href", &list)], "← Sessions")
            .close("nav");
        html.open("h1", &[]).text("Session ").element("code", &[], self.id).close("h1");

        let link = format!("{}{}", self.path, query_string(self.filter, &[]));
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
        if self.filter.selects_requests() {
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
        html.element("a", &[("class", "button secondary"), ("href", &json)], "JSON");
        html.close("div");

        if self.filter.selects_requests() {
            html.element(
                "p",
                &[("class", "notice")],
                "Only the requests matching the filters are shown and counted.",
            );
        }
        html.open("dl", &[("class", "facts")]);
        let mut fact = |name: &str, value: &str| {
            html.element("dt", &[], name).element("dd", &[], value);
        };
        fact("Risk", &session.risk.to_string());
        fact("Requests", &session.requests.to_string());
        fact("First request", &time(session.first_ts));
        fact("Last request", &time(session.last_ts));
        fact("Duration", &duration(session.last_ts.0 - session.first_ts.0));
        // Every user in order of first use: "dana → alice".
        let users = if session.users.is_empty() {
            session.user.clone().unwrap_or_else(|| "—".to_owned())
        } else {
            session.users.join(" → ")
        };
        fact(if session.users.len() > 1 { "Users" } else { "User" }, &users);
        fact("Role", session.role.as_deref().unwrap_or("—"));
        fact("Attacks", &session.attacks.to_string());
        fact("Nodes", &session.nodes.join(", "));
        match session.user_agents.as_slice() {
            [] => {}
            [agent] => fact("User agent", agent),
            agents => fact("User agents", &agents.join(" | ")),
        }
        fact("Grouped by", &session.session_key);
        fact("Session start", &time(session.session_start));
        fact("Key hash", &session.key_hash);
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
        let positions = positions(detail);
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
                let href = match positions.get(request_id.as_str()) {
                    Some(n) => format!("#req-{n}"),
                    None => format!(
                        "{}{}",
                        self.path,
                        query_string(&self.filter.session_level(), &[("request_id", request_id)])
                    ),
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
        html.open("section", &[("class", "charts")]);
        chart::bars(html, "Methods", &stats.methods, |_| "method");
        chart::bars(html, "Statuses", &stats.statuses, status_class);
        chart::bars(html, "IPs", &stats.ips, |_| "ip");
        chart::bars(html, "Attacks", &stats.attacks, |_| "attack");
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
            for (flow, count) in flows {
                let share = 100.0 * *count as f64 / total as f64;
                html.open("tr", &[])
                    .element("td", &[], flow)
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
        chart::timeline(html, &detail.timeline);
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
            &[],
            &format!(
                "Requests {}–{} of {}",
                count(offset as u64 + 1),
                count((offset + records.len()) as u64),
                count(total)
            ),
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
            let anchor = format!("#req-{n}");
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
                .element("td", &[("class", "nowrap")], &time(record.ts))
                .element("td", &[], &record.method)
                .element("td", &[("class", "path")], &record.path);
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
            html.open("td", &[("class", "params")]);
            for param in &record.params {
                html.element(
                    "div",
                    &[("title", &param.source)],
                    &format!("{}={}", param.name, param.value),
                );
            }
            html.close("td").open("td", &[]);
            if let Some(attack) = &record.attack {
                html.element("span", &[("class", "badge attack")], &attack.kind);
            }
            html.close("td").close("tr");
        }
        html.markup("</tbody>").close("table").close("div");

        if cursor.is_some() || detail.requests.next.is_some() {
            html.open("nav", &[("class", "paging")]);
            if cursor.is_some() {
                let first = format!("{}{}", self.path, query_string(self.filter, &[]));
                html.element(
                    "a",
                    &[("class", "button secondary"), ("href", &first)],
                    "← First requests",
                );
            }
            if let Some(next) = detail.requests.next {
                let next = next.to_string();
                let href =
                    format!("{}{}", self.path, query_string(self.filter, &[("cursor", &next)]));
                html.element("a", &[("class", "button"), ("href", &href)], "Next requests →");
            }
            html.close("nav");
        }

        html.element("h2", &[], "Request details");
        for (i, record) in records.iter().enumerate() {
            // The request on its own, whatever page it falls on.
            let filter = Filter {
                request_id: Some(record.request_id.clone()),
                ..self.filter.session_level()
            };
            let link = format!("{}{}", self.path, query_string(&filter, &[]));
            details(html, offset + i + 1, record, &link);
        }
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
        let query = query_string(self.filter, &[]);
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
        html.open("a", &[("href", &href), ("title", &title)])
            .element("code", &[], &annotation.endpoint)
            .close("a");
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

/// The number (from 1) of each request of the page, by request id.
fn positions(detail: &SessionDetail) -> BTreeMap<String, usize> {
    let mut positions = BTreeMap::new();
    for (n, request) in detail.requests.requests.iter().enumerate() {
        #[derive(serde::Deserialize)]
        struct Id {
            request_id: String,
        }
        if let Ok(id) = serde_json::from_str::<Id>(&request.json) {
            positions.insert(id.request_id, n + 1);
        }
    }
    positions
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
    let id = format!("req-{n}");
    let mut attributes = vec![("id", id.as_str()), ("class", "request")];
    if record.attack.is_some() {
        attributes.push(("open", "open"));
    }
    html.open("details", &attributes);
    html.open("summary", &[]).text(&format!(
        "#{n} {} {} {} → {}",
        time(record.ts),
        record.method,
        record.path,
        record.status
    ));
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
            let value = if param.hashed {
                format!("{} (hashed)", param.value)
            } else {
                param.value.clone()
            };
            html.open("tr", &[])
                .element("td", &[], &param.name)
                .element("td", &[], &param.source)
                .element("td", &[], param.kind.as_str())
                .element("td", &[("class", "value")], &value)
                .close("tr");
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
