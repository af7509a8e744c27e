//! The page around every page's content, and the pages that say something went wrong.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::html::Html;
use crate::auth::csrf;
use crate::error::Error;

/// A complete page around `body`.
pub fn page(status: StatusCode, title: &str, body: impl FnOnce(&mut Html)) -> Response {
    let mut html = Html::new();
    html.markup(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
    )
    .element("title", &[], title);
    // For scripts that send a state-changing request (as the X-CSRF-Token header).
    if let Some(viewer) = crate::auth::viewer() {
        html.open("meta", &[("name", "csrf-token"), ("content", &viewer.csrf_token)]);
    }
    html.markup(
        "<link rel=\"stylesheet\" href=\"/static/app.css\">\
         <script src=\"/static/app.js\" defer></script></head><body>\
         <header class=\"top\"><a class=\"brand\" href=\"/\">api-sessions</a>\
         <span class=\"tagline\">API traffic as user sessions</span>\
         <nav class=\"sections\"><a href=\"/\">Sessions</a><a href=\"/endpoints\">Endpoints</a><a href=\"/blocks\">Blocks</a></nav>\
         <button type=\"button\" id=\"tz-toggle\" class=\"link tz\" hidden \
         title=\"Show times in UTC or in this browser's time zone\">Times: UTC</button>",
    );
    if let Some(viewer) = crate::auth::viewer().filter(|viewer| viewer.logged_in) {
        html.open("form", &[("class", "logout"), ("method", "post"), ("action", "/logout")])
            .open(
                "input",
                &[("type", "hidden"), ("name", csrf::FIELD), ("value", &viewer.csrf_token)],
            )
            .element("button", &[("type", "submit"), ("class", "link")], "Log out")
            .close("form");
    }
    html.markup("</header><main>");
    body(&mut html);
    html.markup("</main></body></html>\n");
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))],
        html.finish(),
    )
        .into_response()
}

pub fn not_found(message: &str) -> Response {
    page(StatusCode::NOT_FOUND, "Not found", |html| {
        html.element("h1", &[], "Not found").element("p", &[], message);
        html.open("p", &[]).element("a", &[("href", "/")], "All sessions").close("p");
    })
}

/// A request that failed on the server's side (the store), as a page.
pub fn error_page(error: Error) -> Response {
    let (status, message) = error.into_status_and_message();
    page(status, "Unavailable", |html| {
        html.element("h1", &[], "Unavailable");
        error_box(html, &message);
    })
}

/// How long the explorer keeps what it shows, at the foot of the pages that show captured data.
pub fn retention(html: &mut Html, retention_ms: i64) {
    html.open("footer", &[("class", "retention")])
        .text(&format!(
            "This explorer keeps {} of traffic (--retention); older requests are deleted.",
            super::format::period(retention_ms)
        ))
        .close("footer");
}

/// What is wrong, where the page's content would be.
pub fn error_box(html: &mut Html, message: &str) {
    html.element("p", &[("class", "error"), ("role", "alert")], message);
}
