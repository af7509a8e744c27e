//! `/blocks`: the keys on the denylist, who blocked them, when, why and until when, with
//! "Unblock", and the latest changes; and the session page's block panel, whose form posts to
//! `/blocks`. Plain forms: blocking works without JavaScript, and the forms carry the page's
//! CSRF token like every other state-changing form.

use std::sync::Arc;

use api_sessions_core::time::Millis;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::format::time;
use super::html::Html;
use super::layout::{error_box, error_page, page as render};
use crate::api::denylist::{actor, block, listing, unblock, BlockRequest};
use crate::app::AppState;
use crate::auth::{self, csrf};
use crate::error::Error;
use crate::params::path_segment;
use crate::store::denylist::{Action, Entry};

const TITLE: &str = "Blocks";

/// The durations the Block form offers; the API takes any.
const TTLS: [(&str, &str); 5] = [
    ("15m", "15 minutes"),
    ("1h", "1 hour"),
    ("24h", "24 hours"),
    ("7d", "7 days"),
    ("", "until unblocked"),
];

pub async fn page(State(app): State<Arc<AppState>>) -> Response {
    let listed = match listing(&app).await {
        Ok(listed) => listed,
        Err(error) => return error_page(error),
    };
    render(StatusCode::OK, TITLE, |html| {
        html.element("h1", &[], TITLE);
        html.element(
            "p",
            &[("class", "muted")],
            &format!(
                "Keys on the denylist (version {}), served to the module at /v1/denylist. A \
                 block stops every session with the same key, on every node, once the module \
                 has fetched the list.",
                listed.version
            ),
        );
        entries(html, &listed.entries);
        html.element("h2", &[], "Changes");
        changes(html, &listed.audit);
    })
}

fn csrf_field(html: &mut Html) {
    let token = auth::viewer().map(|viewer| viewer.csrf_token).unwrap_or_default();
    html.open("input", &[("type", "hidden"), ("name", csrf::FIELD), ("value", &token)]);
}

fn expiry(expires: Option<Millis>) -> String {
    expires.map_or("never".to_owned(), time)
}

fn session_link(html: &mut Html, session_id: Option<&str>) {
    match session_id {
        Some(id) => {
            let href = format!("/sessions/{}", path_segment(id));
            html.open("a", &[("href", &href), ("title", id)])
                .element("code", &[], &short(id))
                .close("a");
        }
        None => {
            html.text("—");
        }
    }
}

fn short(id: &str) -> String {
    if id.chars().count() > 16 {
        let mut short: String = id.chars().take(16).collect();
        short.push('…');
        short
    } else {
        id.to_owned()
    }
}

fn entries(html: &mut Html, entries: &[Entry]) {
    if entries.is_empty() {
        html.element(
            "p",
            &[("class", "empty")],
            "Nothing is blocked. Block a session from its page, or with POST /api/denylist.",
        );
        return;
    }
    html.open("div", &[("class", "scroll")]).open("table", &[("class", "blocks")]);
    html.markup(
        "<thead><tr><th>Key hash</th><th>Session</th><th>Reason</th><th>Blocked by</th>\
         <th>Blocked at</th><th>Expires</th><th></th></tr></thead><tbody>",
    );
    for entry in entries {
        html.open("tr", &[("data-key", &entry.key_hash)]);
        html.open("td", &[]).element("code", &[], &entry.key_hash).close("td");
        html.open("td", &[]);
        session_link(html, entry.session_id.as_deref());
        html.close("td");
        html.element("td", &[("class", "reason")], &entry.reason)
            .element("td", &[("class", "by")], &entry.created_by)
            .element("td", &[("class", "nowrap")], &time(entry.created_at))
            .element("td", &[("class", "nowrap")], &expiry(entry.expires));
        let action = format!("/blocks/{}/unblock", path_segment(&entry.key_hash));
        html.open("td", &[])
            .open("form", &[("method", "post"), ("action", &action), ("class", "unblock")]);
        csrf_field(html);
        html.element("button", &[("type", "submit"), ("class", "secondary")], "Unblock")
            .close("form")
            .close("td")
            .close("tr");
    }
    html.markup("</tbody>").close("table").close("div");
}

fn changes(html: &mut Html, audit: &[crate::store::denylist::AuditEntry]) {
    if audit.is_empty() {
        html.element("p", &[("class", "muted")], "No change within the retention.");
        return;
    }
    html.open("div", &[("class", "scroll")]).open("table", &[("class", "audit")]);
    html.markup(
        "<thead><tr><th class=\"num\">Version</th><th>Time</th><th>Change</th><th>Key hash</th>\
         <th>Session</th><th>By</th><th>Reason</th><th>Expires</th></tr></thead><tbody>",
    );
    for line in audit {
        html.open("tr", &[("class", line.action.as_str())])
            .element("td", &[("class", "num")], &line.version.to_string())
            .element("td", &[("class", "nowrap")], &time(line.at))
            .element("td", &[("class", "action")], line.action.as_str())
            .open("td", &[])
            .element("code", &[], &line.key_hash)
            .close("td")
            .open("td", &[]);
        session_link(html, line.session_id.as_deref());
        html.close("td").element("td", &[("class", "by")], &line.by).element(
            "td",
            &[],
            &line.reason,
        );
        let expires = match line.action {
            Action::Block => expiry(line.expires),
            Action::Unblock => String::new(),
        };
        html.element("td", &[("class", "nowrap")], &expires).close("tr");
    }
    html.markup("</tbody>").close("table").close("div");
}

/// The session page's panel: whether the session's key is blocked, and the form that blocks
/// or unblocks it.
pub fn panel(html: &mut Html, session_id: &str, key_hash: &str, blocked: Option<&Entry>) {
    html.open("section", &[("class", "block"), ("id", "block")]);
    html.element("h2", &[], "Block");
    if let Some(entry) = blocked {
        html.open("p", &[("class", "blocked-state")])
            .element("span", &[("class", "badge attack")], "blocked")
            .text(&format!(
                " since {} by {}, until {}{}",
                time(entry.created_at),
                entry.created_by,
                expiry(entry.expires),
                if entry.reason.is_empty() { String::new() } else { format!(": {}", entry.reason) }
            ))
            .close("p");
        let action = format!("/blocks/{}/unblock", path_segment(key_hash));
        html.open("form", &[("method", "post"), ("action", &action), ("class", "unblock")]);
        csrf_field(html);
        html.open("input", &[("type", "hidden"), ("name", "back"), ("value", session_id)]);
        html.element("button", &[("type", "submit"), ("class", "secondary")], "Unblock")
            .close("form");
        html.close("section");
        return;
    }
    html.element(
        "p",
        &[("class", "muted")],
        "Not blocked. Blocking puts this session's key on the denylist: the module refuses every \
         request carrying it (every session of the key), on every node.",
    );
    html.open("form", &[("method", "post"), ("action", "/blocks"), ("class", "block-form")]);
    csrf_field(html);
    html.open("input", &[("type", "hidden"), ("name", "session_id"), ("value", session_id)]);
    html.open("div", &[("class", "field")])
        .open("label", &[("for", "block-ttl")])
        .text("For")
        .close("label")
        .open("select", &[("id", "block-ttl"), ("name", "ttl")]);
    for (value, label) in TTLS {
        if value == "1h" {
            html.element("option", &[("value", value), ("selected", "selected")], label);
        } else {
            html.element("option", &[("value", value)], label);
        }
    }
    html.close("select").close("div");
    html.open("div", &[("class", "field")])
        .open("label", &[("for", "block-reason")])
        .text("Reason")
        .close("label")
        .open(
            "input",
            &[
                ("id", "block-reason"),
                ("name", "reason"),
                ("maxlength", "500"),
                ("placeholder", "credential stuffing"),
            ],
        )
        .close("div");
    html.open("div", &[("class", "buttons")])
        .element("button", &[("type", "submit"), ("id", "block-session")], "Block")
        .close("div")
        .close("form");
    html.close("section");
}

/// The block state of a key, for the session page; `None` when it is not blocked (or the
/// store cannot say: the page shows the session either way).
pub async fn state(app: &AppState, key_hash: &str) -> Option<Entry> {
    let list = app.with_store(|store| store.denylist()).await.ok()?;
    let now = Millis::now();
    list.entries.into_iter().find(|entry| entry.key_hash == key_hash && !entry.expired(now))
}

#[derive(Deserialize)]
pub struct BlockForm {
    session_id: String,
    #[serde(default)]
    ttl: String,
    #[serde(default)]
    reason: String,
}

/// The Block form of a session page: blocks, then back to the session.
pub async fn submit(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    form: Result<Form<BlockForm>, FormRejection>,
) -> Response {
    let Form(form) = match form {
        Ok(form) => form,
        Err(rejection) => return refused(Error::BadRequest(rejection.body_text())),
    };
    let request = BlockRequest {
        session_id: Some(form.session_id.clone()),
        key_hash: None,
        ttl: Some(form.ttl),
        reason: form.reason,
    };
    match block(&app, request, actor(&app, &headers, "ui")).await {
        Ok(changed) => {
            let id = changed.entry.and_then(|entry| entry.session_id).unwrap_or(form.session_id);
            Redirect::to(&format!("/sessions/{}#block", path_segment(&id))).into_response()
        }
        Err(error) => refused(error),
    }
}

#[derive(Deserialize)]
pub struct UnblockForm {
    /// The session page to go back to, when the form was on one.
    back: Option<String>,
}

/// "Unblock", on the Blocks page or a session page: unblocks, then back where it was.
pub async fn submit_unblock(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(key_hash): Path<String>,
    form: Result<Form<UnblockForm>, FormRejection>,
) -> Response {
    let back = form.ok().and_then(|Form(form)| form.back).filter(|id| !id.is_empty());
    match unblock(&app, &key_hash, actor(&app, &headers, "ui")).await {
        Ok(_) => {
            let to = match back {
                Some(id) => format!("/sessions/{}#block", path_segment(&id)),
                None => "/blocks".to_owned(),
            };
            Redirect::to(&to).into_response()
        }
        Err(error) => refused(error),
    }
}

fn refused(error: Error) -> Response {
    let (status, message) = error.into_status_and_message();
    render(status, TITLE, |html| {
        html.element("h1", &[], "Not done");
        error_box(html, &message);
        html.open("p", &[]).element("a", &[("href", "/blocks")], "Blocks").close("p");
    })
}
