//! `/`: the sessions list with every filter.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use api_sessions_core::time::Millis;

use super::form::{self, filter_form, FilterForm};
use super::format::{duration, time, time_tag};
use super::html::Html;
use super::layout::{error_box, error_page, page as render};
use crate::app::AppState;
use crate::params::{path_segment, query_string, sort_pairs, PageSize, QueryParams};
use crate::store::values::{ValueKind, SUGGESTIONS_MAX};
use crate::store::{Filter, ListQuery, SessionPage, SessionSummary};

/// IPs listed per session before "+N".
const IPS_SHOWN: usize = 2;

/// Characters of a User-Agent shown in the list; all of it is in the cell's title.
const USER_AGENT_SHOWN: usize = 40;

pub async fn page(State(app): State<Arc<AppState>>, RawQuery(raw): RawQuery) -> Response {
    let decoded = QueryParams::from_query(raw.as_deref());
    let params = decoded.clone().unwrap_or_default();
    let query = match decoded.and_then(|params| params.list_query()) {
        Ok(query) => query,
        Err(message) => {
            return render(StatusCode::BAD_REQUEST, "Sessions", |html| {
                heading(html, &params);
                error_box(html, &message);
                super::layout::retention(html, app.store.retention_ms());
            })
        }
    };
    let listed = {
        let query = query.clone();
        app.with_store(move |store| {
            let sessions = store.list_sessions(&query)?;
            let mut seen = Vec::new();
            for kind in ValueKind::ALL {
                seen.push((kind, store.suggest(kind, "", SUGGESTIONS_MAX)?));
            }
            Ok::<_, crate::store::StoreError>((sessions, seen))
        })
        .await
    };
    let (sessions, seen) = match listed {
        Ok(listed) => listed,
        Err(error) => return error_page(error),
    };
    render(StatusCode::OK, "Sessions", |html| {
        heading(html, &params);
        presets(html, &query);
        form::value_lists(html, &seen);
        count(html, &sessions);
        table(html, &query, &sessions);
        paging(html, &query, &sessions);
        super::layout::retention(html, app.store.retention_ms());
    })
}

fn heading(html: &mut Html, params: &QueryParams) {
    html.element("h1", &[], "Sessions");
    let form = FilterForm {
        action: "/",
        fields: form::GLOBAL,
        hidden: &[],
        carry: &[],
        reset: "/",
        submit: "Apply filters",
    };
    filter_form(html, params, &form);
}

/// The last 15 minutes, hour, day or week, with the other filters and the sort kept.
fn presets(html: &mut Html, query: &ListQuery) {
    form::presets(html, Millis::now(), |from| {
        let filter = Filter { from: Some(from), to: None, ..query.filter.clone() };
        format!("/{}", query_string(&filter, &sort_pairs(query.sort)))
    });
}

fn count(html: &mut Html, page: &SessionPage) {
    if page.total > 0 {
        let noun = if page.total == 1 { "session" } else { "sessions" };
        html.element(
            "p",
            &[("class", "total")],
            &format!("{} {noun}", super::format::count(page.total)),
        );
    }
}

fn table(html: &mut Html, query: &ListQuery, page: &SessionPage) {
    let filter = &query.filter;
    if page.sessions.is_empty() {
        let message = if *filter == Filter::default() {
            "No sessions yet. Send the module's records to POST /v1/records, or start the \
             explorer with --follow FILE."
        } else {
            "No sessions match these filters."
        };
        html.element("p", &[("class", "empty")], message);
        return;
    }
    if filter.selects_requests() {
        html.element(
            "p",
            &[("class", "muted")],
            "Counts, times, flows and IPs cover only the requests that match the filters.",
        );
    }
    html.open("div", &[("class", "scroll")]).open("table", &[("class", "sessions")]);
    html.markup(
        "<thead><tr><th>Session</th><th class=\"num\">Risk</th><th>Signals</th>\
         <th>Last request</th><th>Duration</th><th class=\"num\">Requests</th><th>User</th><th>Role</th><th>Flows</th><th>IPs</th><th>User agent</th>\
         <th class=\"num\">Attacks</th><th>Nodes</th></tr></thead><tbody>",
    );
    let query = super::session::opened_from(query);
    for session in &page.sessions {
        row(html, session, &query);
    }
    html.markup("</tbody>").close("table").close("div");
}

fn row(html: &mut Html, session: &SessionSummary, query: &str) {
    let href = format!("/sessions/{}{query}", path_segment(&session.session_id));
    html.open("tr", &[("class", if session.attacks > 0 { "malicious" } else { "" })]);
    html.open("td", &[])
        .open("a", &[("class", "session-link"), ("href", &href), ("title", &session.session_id)])
        .element("code", &[], &short_id(&session.session_id))
        .close("a")
        .element("div", &[("class", "muted small")], &session.session_key)
        .close("td");
    html.open("td", &[("class", "num")])
        .element("span", &[("class", risk_class(session.risk))], &session.risk.to_string())
        .close("td");
    html.open("td", &[("class", "signals")]);
    for signal in &session.signals {
        let href = format!("/?signal={}", path_segment(signal));
        html.element("a", &[("class", "chip"), ("href", &href)], signal);
    }
    html.close("td");
    html.open("td", &[("class", "nowrap")]);
    time_tag(html, session.last_ts);
    html.close("td")
        .element(
            "td",
            &[("class", "nowrap"), ("title", &format!("from {}", time(session.first_ts)))],
            &duration(session.last_ts.0 - session.first_ts.0),
        )
        .element("td", &[("class", "num")], &session.requests.to_string())
        .element("td", &[], session.user.as_deref().unwrap_or("—"))
        .element("td", &[], session.role.as_deref().unwrap_or("—"));
    html.open("td", &[]);
    let mut flows: Vec<_> = session.flows.iter().collect();
    flows.sort_by(|a, b| b.1.cmp(a.1));
    for (flow, count) in flows {
        html.element("span", &[("class", "tag")], &format!("{flow} {count}"));
    }
    html.close("td");
    html.open("td", &[("class", "ips")]);
    for ip in session.ips.iter().take(IPS_SHOWN) {
        html.element("div", &[], ip);
    }
    if session.ips.len() > IPS_SHOWN {
        let rest = session.ips[IPS_SHOWN..].join(", ");
        html.element(
            "div",
            &[("class", "muted small"), ("title", &rest)],
            &format!("+{} more", session.ips.len() - IPS_SHOWN),
        );
    }
    html.close("td");
    user_agent_cell(html, &session.user_agents);
    if session.attacks > 0 {
        html.open("td", &[("class", "num")])
            .element("span", &[("class", "badge attack")], &session.attacks.to_string())
            .close("td");
    } else {
        html.element("td", &[("class", "num muted")], "0");
    }
    html.element("td", &[("class", "small")], &session.nodes.join(", "));
    html.close("tr");
}

/// The session's first User-Agent, shortened, and how many others it had; each in full in the
/// title.
fn user_agent_cell(html: &mut Html, agents: &[String]) {
    let Some(first) = agents.first() else {
        html.element("td", &[("class", "muted")], "—");
        return;
    };
    let mut shown: String = first.chars().take(USER_AGENT_SHOWN).collect();
    if shown.len() < first.len() {
        shown.push('…');
    }
    html.open("td", &[("class", "small"), ("title", &agents.join("\n"))]);
    html.element("div", &[], &shown);
    if agents.len() > 1 {
        html.element("div", &[("class", "muted")], &format!("+{} more", agents.len() - 1));
    }
    html.close("td");
}

/// The class of a risk badge: findings (50 and above) stand out.
pub fn risk_class(risk: u8) -> &'static str {
    match risk {
        75.. => "risk high",
        50.. => "risk medium",
        1.. => "risk low",
        0 => "risk none",
    }
}

/// Session ids are long hashes; the start is enough to tell them apart on screen.
fn short_id(id: &str) -> String {
    if id.chars().count() > 16 {
        let mut short: String = id.chars().take(16).collect();
        short.push('…');
        short
    } else {
        id.to_owned()
    }
}

/// First, previous and next page, keeping the filter, the sort and the page size.
fn paging(html: &mut Html, query: &ListQuery, page: &SessionPage) {
    let limit_text = query.limit.to_string();
    let mut extra = sort_pairs(query.sort);
    if query.limit != PageSize::SESSIONS.default {
        extra.push(("limit", limit_text.as_str()));
    }
    let link = |cursor: Option<&str>| {
        let mut pairs = extra.clone();
        pairs.extend(cursor.map(|cursor| ("cursor", cursor)));
        format!("/{}", query_string(&query.filter, &pairs))
    };
    html.open("nav", &[("class", "paging")]);
    if query.cursor.is_some() {
        html.element("a", &[("class", "button secondary"), ("href", &link(None))], "« First page");
    }
    if let Some(cursor) = &page.prev_cursor {
        html.element(
            "a",
            &[("class", "button secondary"), ("href", &link(Some(cursor))), ("rel", "prev")],
            "← Previous page",
        );
    }
    if let Some(cursor) = &page.next_cursor {
        html.element(
            "a",
            &[("class", "button"), ("href", &link(Some(cursor))), ("rel", "next")],
            "Next page →",
        );
    }
    html.close("nav");
}
