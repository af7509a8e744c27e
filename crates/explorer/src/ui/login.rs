//! `/login` and `/logout`: the form that proves the UI token once and keeps a login cookie, and
//! the button that ends it (see [`crate::auth`] for what the cookie holds).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::html::Html;
use super::layout::{error_box, page as render};
use crate::app::AppState;
use crate::auth::{self, csrf};

#[derive(Debug, Default, Deserialize)]
pub struct Next {
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct Submitted {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

pub async fn page(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(Next { next }): Query<Next>,
) -> Response {
    let target = auth::local_target(next.as_deref());
    if !app.access.required() || app.access.has_login(&headers) {
        return Redirect::to(target).into_response();
    }
    form(StatusCode::OK, target, None)
}

pub async fn submit(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(submitted): Form<Submitted>,
) -> Response {
    let target = auth::local_target(submitted.next.as_deref());
    if !app.access.required() {
        return Redirect::to(target).into_response();
    }
    if !app.access.is_ui_token(&submitted.token) {
        tracing::warn!("failed login at /login");
        return form(StatusCode::UNAUTHORIZED, target, Some("Wrong token."));
    }
    let cookie = app.access.log_in(&headers);
    ([(header::SET_COOKIE, cookie)], Redirect::to(target)).into_response()
}

pub async fn log_out(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let cookie = app.access.log_out(&headers);
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

fn form(status: StatusCode, target: &str, error: Option<&str>) -> Response {
    let csrf_token = auth::viewer().map(|viewer| viewer.csrf_token).unwrap_or_default();
    render(status, "Log in", |html: &mut Html| {
        html.element("h1", &[], "Log in");
        if let Some(error) = error {
            error_box(html, error);
        }
        html.open("form", &[("class", "login"), ("method", "post"), ("action", "/login")])
            .open("input", &[("type", "hidden"), ("name", csrf::FIELD), ("value", &csrf_token)])
            .open("input", &[("type", "hidden"), ("name", "next"), ("value", target)])
            .open("div", &[("class", "field")])
            .element("label", &[("for", "token")], "UI token")
            .open(
                "input",
                &[
                    ("id", "token"),
                    ("name", "token"),
                    ("type", "password"),
                    ("autocomplete", "current-password"),
                    ("required", "required"),
                    ("autofocus", "autofocus"),
                ],
            )
            .close("div")
            .open("div", &[("class", "buttons")])
            .element("button", &[("type", "submit")], "Log in")
            .close("div")
            .close("form");
        html.element(
            "p",
            &[("class", "muted small")],
            "The token the explorer was started with (--ui-token or API_SESSIONS_UI_TOKEN). \
             The login lasts 12 hours.",
        );
    })
}
