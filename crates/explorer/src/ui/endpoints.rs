//! `/endpoints`: what the API's clients called, endpoint by endpoint, with the spec status,
//! the usual times and sizes, configured and suggested flows, and a link to the sessions that
//! called each one.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::format::time;
use super::html::Html;
use super::layout::{error_box, error_page, page as render};
use crate::api::endpoints::page as list_page;
use crate::app::AppState;
use crate::endpoints::auto_flows::Source;
use crate::endpoints::list::{EndpointPage, EndpointParams, ListQuery, Sort, Summary};
use crate::endpoints::stats::Quantiles;
use crate::endpoints::SpecStatus;

const TITLE: &str = "Endpoints";

pub async fn page(
    State(app): State<Arc<AppState>>,
    params: Result<Query<EndpointParams>, QueryRejection>,
) -> Response {
    let params = match params {
        Ok(Query(params)) => params,
        Err(rejection) => return bad_request(&EndpointParams::default(), &rejection.body_text()),
    };
    let query = match params.query() {
        Ok(query) => query,
        Err(message) => return bad_request(&params, &message),
    };
    let listed = match list_page(&app, &query).await {
        Ok(listed) => listed,
        Err(error) => return error_page(error),
    };
    let documents = app.endpoints.openapi().is_some();
    render(StatusCode::OK, TITLE, |html| {
        html.element("h1", &[], TITLE);
        form(html, &params);
        table(html, &params, &query, &listed, documents);
        paging(html, &params, listed.next_cursor.as_deref());
    })
}

fn bad_request(params: &EndpointParams, message: &str) -> Response {
    render(StatusCode::BAD_REQUEST, TITLE, |html| {
        html.element("h1", &[], TITLE);
        error_box(html, message);
        form(html, params);
    })
}

/// The query string of this page with some parameters replaced (empty values drop them).
fn link(params: &EndpointParams, changes: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    let current = [
        ("from", &params.from),
        ("to", &params.to),
        ("server", &params.server),
        ("method", &params.method),
        ("q", &params.q),
        ("spec", &params.spec),
        ("flow", &params.flow),
        ("sort", &params.sort),
        ("order", &params.order),
        ("limit", &params.limit),
        ("cursor", &params.cursor),
    ];
    for (name, value) in current {
        let value = match changes.iter().find(|(changed, _)| *changed == name) {
            Some((_, value)) => *value,
            None => value.as_deref().unwrap_or(""),
        };
        if !value.trim().is_empty() {
            query.append_pair(name, value);
        }
    }
    let query = query.finish();
    if query.is_empty() {
        "/endpoints".to_owned()
    } else {
        format!("/endpoints?{query}")
    }
}

fn form(html: &mut Html, params: &EndpointParams) {
    html.open("form", &[("class", "filters"), ("method", "get"), ("action", "/endpoints")]);
    let text = |html: &mut Html,
                name: &'static str,
                label: &str,
                value: &Option<String>,
                hint: &str| {
        let id = format!("e-{name}");
        html.open("div", &[("class", "field")])
            .open("label", &[("for", &id)])
            .text(label)
            .close("label");
        let value = value.as_deref().unwrap_or("");
        html.open("input", &[("id", &id), ("name", name), ("value", value), ("placeholder", hint)]);
        html.close("div");
    };
    text(html, "from", "From (UTC)", &params.from, "2026-11-22T10:00");
    text(html, "to", "To (UTC)", &params.to, "2026-11-22T11:00");
    text(html, "server", "Server", &params.server, "api.example.com");
    text(html, "method", "Method", &params.method, "GET");
    text(html, "q", "Search", &params.q, "part of the template");
    text(html, "flow", "Business flow", &params.flow, "configured or suggested");
    let spec: Vec<(&str, &str)> = [("", "any")]
        .into_iter()
        .chain(
            [SpecStatus::Documented, SpecStatus::Shadow, SpecStatus::Zombie, SpecStatus::Unused]
                .map(|s| (s.as_str(), s.as_str())),
        )
        .collect();
    select(html, "spec", "Spec", &params.spec, &spec);
    let sorts: Vec<(&str, &str)> = Sort::ALL.iter().map(|(_, name)| (*name, *name)).collect();
    select(html, "sort", "Sort by", &params.sort, &sorts);
    select(html, "order", "Order", &params.order, &[("desc", "descending"), ("asc", "ascending")]);
    html.open("div", &[("class", "buttons")])
        .element("button", &[("type", "submit")], "Apply filters")
        .element("a", &[("class", "button secondary"), ("href", "/endpoints")], "Reset")
        .close("div")
        .close("form");
}

fn select(
    html: &mut Html,
    name: &'static str,
    label: &str,
    value: &Option<String>,
    options: &[(&str, &str)],
) {
    let id = format!("e-{name}");
    let value = value.as_deref().unwrap_or("").trim();
    html.open("div", &[("class", "field")])
        .open("label", &[("for", &id)])
        .text(label)
        .close("label")
        .open("select", &[("id", &id), ("name", name)]);
    for (option, text) in options {
        if *option == value {
            html.element("option", &[("value", option), ("selected", "selected")], text);
        } else {
            html.element("option", &[("value", option)], text);
        }
    }
    html.close("select").close("div");
}

/// A column header; sortable ones link to the list sorted by them, flipping the order when
/// they already sort it.
fn header(
    html: &mut Html,
    params: &EndpointParams,
    query: &ListQuery,
    label: &str,
    sort: Option<Sort>,
    class: &str,
) {
    html.open("th", &[("class", class)]);
    match sort {
        None => {
            html.text(label);
        }
        Some(sort) => {
            let active = query.sort == sort;
            let order = if active && !query.ascending { "asc" } else { "desc" };
            let href = link(params, &[("sort", sort.name()), ("order", order), ("cursor", "")]);
            let arrow = match (active, query.ascending) {
                (false, _) => "",
                (true, false) => " ↓",
                (true, true) => " ↑",
            };
            html.element("a", &[("href", &href), ("class", "sort")], &format!("{label}{arrow}"));
        }
    }
    html.close("th");
}

fn table(
    html: &mut Html,
    params: &EndpointParams,
    query: &ListQuery,
    listed: &EndpointPage,
    documents: bool,
) {
    let total = listed.total;
    html.element(
        "p",
        &[("class", "muted")],
        &format!(
            "{} endpoint{}. {}",
            super::format::count(total),
            if total == 1 { "" } else { "s" },
            if documents {
                "Spec status against the OpenAPI documents given with --openapi."
            } else {
                "No OpenAPI document was given (--openapi): spec status is not known."
            }
        ),
    );
    if listed.endpoints.is_empty() {
        html.element("p", &[("class", "empty")], "No endpoints match these filters.");
        return;
    }
    html.open("div", &[("class", "scroll")]).open("table", &[("class", "endpoints")]);
    html.markup("<thead><tr>");
    header(html, params, query, "Endpoint", Some(Sort::Endpoint), "");
    header(html, params, query, "Server", None, "");
    header(html, params, query, "Spec", None, "");
    header(html, params, query, "Requests", Some(Sort::Requests), "num");
    header(html, params, query, "Sessions", Some(Sort::Sessions), "num");
    header(html, params, query, "Statuses", Some(Sort::Errors), "");
    header(html, params, query, "Time, ms p50 / p95 / p99", Some(Sort::Duration), "num");
    header(html, params, query, "Size, bytes p50 / p95", Some(Sort::Size), "num");
    header(html, params, query, "Flows", None, "");
    header(html, params, query, "Suggested flows", None, "");
    header(html, params, query, "Attacks", Some(Sort::Attacks), "num");
    header(html, params, query, "Last request", Some(Sort::Last), "");
    html.markup("</tr></thead><tbody>");
    for endpoint in &listed.endpoints {
        row(html, endpoint);
    }
    html.markup("</tbody>").close("table").close("div");
}

fn figures(quantiles: Option<Quantiles>, p99: bool) -> String {
    match quantiles {
        None => "—".to_owned(),
        Some(q) if p99 => format!("{} / {} / {}", q.p50, q.p95, q.p99),
        Some(q) => format!("{} / {}", q.p50, q.p95),
    }
}

fn row(html: &mut Html, endpoint: &Summary) {
    let class = if endpoint.attacks > 0 { "malicious" } else { "" };
    html.open("tr", &[("class", class)]);
    html.open("td", &[("class", "endpoint")]);
    if endpoint.requests > 0 {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("endpoint", &endpoint.endpoint);
        let href = format!("/?{}", query.finish());
        html.open(
            "a",
            &[("href", &href), ("class", "endpoint-link"), ("title", "Sessions that called it")],
        )
        .open("code", &[])
        .path(&endpoint.endpoint)
        .close("code")
        .close("a");
    } else {
        html.open("code", &[]).path(&endpoint.endpoint).close("code");
    }
    html.close("td");
    html.element("td", &[("class", "small")], endpoint.server.as_deref().unwrap_or("—"));
    html.open("td", &[]);
    if let Some(spec) = endpoint.spec {
        html.element("span", &[("class", &format!("badge spec {}", spec.as_str()))], spec.as_str());
    }
    html.close("td");
    html.element("td", &[("class", "num")], &endpoint.requests.to_string()).element(
        "td",
        &[("class", "num")],
        &endpoint.sessions.to_string(),
    );
    html.open("td", &[("class", "nowrap")]);
    for (class, count) in &endpoint.statuses {
        let kind = match *class {
            "2xx" | "1xx" => "ok",
            "3xx" => "redirect",
            "4xx" => "client-error",
            "5xx" => "server-error",
            _ => "",
        };
        html.element("span", &[("class", &format!("status {kind}"))], &format!("{class} {count}"));
        html.text(" ");
    }
    html.close("td");
    html.element("td", &[("class", "num nowrap")], &figures(endpoint.duration_ms, true)).element(
        "td",
        &[("class", "num nowrap")],
        &figures(endpoint.response_bytes, false),
    );
    html.open("td", &[("class", "flows")]);
    for (flow, count) in &endpoint.flows {
        html.element("span", &[("class", "tag")], &format!("{flow} {count}"));
    }
    html.close("td");
    html.open("td", &[("class", "auto-flows")]);
    for suggested in &endpoint.auto_flows {
        let source = match suggested.source {
            Source::Path => "path",
            Source::Parameter => "parameter names",
        };
        let why = format!("suggested by the word \"{}\" in the {source}", suggested.word);
        html.element("span", &[("class", "tag suggested"), ("title", &why)], suggested.flow)
            .element("span", &[("class", "muted small")], &format!(" ({})", suggested.word));
    }
    html.close("td");
    if endpoint.attacks > 0 {
        html.open("td", &[("class", "num")])
            .element("span", &[("class", "badge attack")], &endpoint.attacks.to_string())
            .close("td");
    } else {
        html.element("td", &[("class", "num muted")], "0");
    }
    let last = endpoint.last_ts.map_or("never".to_owned(), time);
    html.element("td", &[("class", "nowrap")], &last);
    html.close("tr");
}

fn paging(html: &mut Html, params: &EndpointParams, next: Option<&str>) {
    let paged = params.cursor.as_deref().is_some_and(|c| !c.trim().is_empty());
    if !paged && next.is_none() {
        return;
    }
    html.open("nav", &[("class", "paging")]);
    if paged {
        let first = link(params, &[("cursor", "")]);
        html.element("a", &[("class", "button secondary"), ("href", &first)], "← First page");
    }
    if let Some(cursor) = next {
        let href = link(params, &[("cursor", cursor)]);
        html.element("a", &[("class", "button"), ("href", &href), ("rel", "next")], "Next page →");
    }
    html.close("nav");
}
