//! The web UI: server-rendered pages at `/` (sessions), `/sessions/{id}` (one session) and
//! `/endpoints`, `/blocks` (the denylist), and `/login` when a UI token is set.
//!
//! Pages work without JavaScript: filters, chart bars and timeline slices are links. The one
//! script adds "Copy link", times in local time, drag-to-zoom and "Show all" on long cells.
//! Every filter lives in the query string, so any view can be shared by its address. Nothing
//! is loaded from elsewhere: the stylesheet and the script are compiled into the binary.
//!
//! One file per page (`list`, `session`, `endpoints`, `blocks`, `login`), each with its handler and its route in [`routes`];
//! the pieces they share are `layout` (the page around the content, error pages), `form` (the
//! filter form), `chart`, `format` (times, durations and captured values) and `html` (the writer that escapes).

mod blocks;
mod chart;
mod endpoints;
mod form;
mod format;
mod html;
mod layout;
mod list;
mod login;
mod session;

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::app::AppState;

const STYLESHEET: &str = include_str!("ui/app.css");
const SCRIPT: &str = include_str!("ui/app.js");

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(list::page))
        .route("/sessions/{id}", get(session::page))
        .route("/login", get(login::page).post(login::submit))
        .route("/logout", post(login::log_out))
        .route("/endpoints", get(endpoints::page))
        .route("/blocks", get(blocks::page).post(blocks::submit))
        .route("/blocks/{key_hash}/unblock", post(blocks::submit_unblock))
        .route("/static/app.css", get(|| async { asset("text/css; charset=utf-8", STYLESHEET) }))
        .route("/static/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .fallback(|| async { layout::not_found("No such page.") })
}

/// A page that says one thing, for answers that are not one of the pages.
pub fn message_page(status: StatusCode, title: &str, message: &str) -> Response {
    layout::page(status, title, |html| {
        html.element("h1", &[], title);
        layout::error_box(html, message);
        html.open("p", &[]).element("a", &[("href", "/")], "All sessions").close("p");
    })
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
        ],
        body,
    )
        .into_response()
}
