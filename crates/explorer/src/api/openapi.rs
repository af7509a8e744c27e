//! `GET /api/openapi.json`: the OpenAPI 3.1 document of this API.
//!
//! Made from the code: each handler's `#[utoipa::path]` says its parameters and answers, the
//! types it returns derive their schemas, and [`super::routes`] mounts the handlers and
//! collects their descriptions in one step, so a route cannot be served undocumented by
//! mistake. [`Document`] adds what no route carries: the title, the security schemes, and
//! the CSV export that shares its route with the session.

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::csv;
use crate::auth::LOGIN_COOKIE;
use crate::error::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "api-sessions",
        description = "The records of ngx_http_api_sessions_module as user sessions: \
                       ingest for the module's exporter, sessions for people and scripts."
    ),
    paths(csv::export),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "ingest", description = "The module's exporter sends its records here."),
        (name = "sessions", description = "Sessions and their requests."),
        (name = "denylist", description = "Blocked keys: the module's document, and blocking \
                                            and unblocking with an audit log."),
        (name = "meta", description = "This document.")
    )
)]
pub struct Document;

/// The credentials the operations name in their `security`.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme(
            "ingest_token",
            bearer("The --token value (API_SESSIONS_TOKEN), when the explorer has one."),
        );
        components.add_security_scheme(
            "ui_token",
            bearer("The --ui-token value (API_SESSIONS_UI_TOKEN), when the explorer has one."),
        );
        components.add_security_scheme(
            "login_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                LOGIN_COOKIE,
                "Set by the login form at /login, when the explorer has a UI token.",
            ))),
        );
    }
}

/// The document as served: made once when the routes are.
#[derive(Clone)]
pub struct Served(Arc<str>);

impl Served {
    pub fn new(document: &utoipa::openapi::OpenApi) -> Served {
        Served(document.to_json().expect("the OpenAPI document serializes").into())
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "get_openapi",
    tag = "meta",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API.",
         content_type = "application/json", body = Object),
        (status = 401, description = "A UI token is set and the request has neither it nor a login.",
         body = ErrorBody),
    ),
    security(("ui_token" = []), ("login_cookie" = []), ())
)]
pub async fn document(Extension(served): Extension<Served>) -> Response {
    let content_type = HeaderValue::from_static("application/json");
    ([(header::CONTENT_TYPE, content_type)], served.0.to_string()).into_response()
}
