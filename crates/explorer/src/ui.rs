//! The web UI: server-rendered pages at `/` (sessions) and `/sessions/{id}` (one session).
//!
//! Pages work without JavaScript; the one script only adds "Copy link". Every filter lives in
//! the query string, so any view can be shared by its address. Nothing is loaded from
//! elsewhere: the stylesheet and the script are compiled into the binary.

mod chart;
mod form;
mod html;
mod list;
mod session;

use std::sync::Arc;

use api_sessions_core::time::Millis;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use self::html::Html;
use crate::api::Failure;
use crate::server::AppState;

const STYLESHEET: &str = include_str!("ui/app.css");
const SCRIPT: &str = include_str!("ui/app.js");

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(list::page))
        .route("/sessions/{id}", get(session::page))
        .route("/static/app.css", get(|| async { asset("text/css; charset=utf-8", STYLESHEET) }))
        .route("/static/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .fallback(|| async { not_found("No such page.") })
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

/// A complete page around `body`.
fn page(status: StatusCode, title: &str, body: impl FnOnce(&mut Html)) -> Response {
    let mut html = Html::new();
    html.markup(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
    )
    .element("title", &[], title)
    .markup(
        "<link rel=\"stylesheet\" href=\"/static/app.css\">\
         <script src=\"/static/app.js\" defer></script></head><body>\
         <header class=\"top\"><a class=\"brand\" href=\"/\">api-sessions</a>\
         <span class=\"tagline\">API traffic as user sessions</span></header><main>",
    );
    body(&mut html);
    html.markup("</main></body></html>\n");
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))],
        html.finish(),
    )
        .into_response()
}

fn not_found(message: &str) -> Response {
    page(StatusCode::NOT_FOUND, "Not found", |html| {
        html.element("h1", &[], "Not found").element("p", &[], message);
        html.open("p", &[]).element("a", &[("href", "/")], "All sessions").close("p");
    })
}

/// A store that failed, as a page.
fn failure_page(failure: Failure) -> Response {
    page(failure.status, "Unavailable", |html| {
        html.element("h1", &[], "Unavailable");
        error_box(html, &failure.message);
    })
}

fn error_box(html: &mut Html, message: &str) {
    html.element("p", &[("class", "error"), ("role", "alert")], message);
}

/// `2026-11-22 10:00:00.123` (UTC), as shown in tables.
fn time(ts: Millis) -> String {
    let mut text = ts.to_rfc3339();
    text.replace_range(10..11, " ");
    text.pop();
    text
}

/// `1h 02m`, `3m 07s`, `12.3s`, `45ms`.
fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
    if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else if ms >= 1000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_and_durations() {
        assert_eq!(time(Millis(1_795_341_600_123)), "2026-11-22 10:00:00.123");
        assert_eq!(duration(45), "45ms");
        assert_eq!(duration(12_345), "12.3s");
        assert_eq!(duration(187_000), "3m 07s");
        assert_eq!(duration(3_720_000), "1h 02m");
    }
}
