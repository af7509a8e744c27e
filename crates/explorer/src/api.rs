//! The HTTP API: `POST /v1/records` for the module's exporter, `GET /api/sessions[/{id}]`,
//! `GET /api/suggest`, `GET /api/endpoints` and the CSV export for people and scripts, the
//! denylist (`GET /v1/denylist` for the module, `/api/denylist` for people), and `GET
//! /api/openapi.json`, which describes them. One file per resource, each route in
//! [`routes`], which documents what it mounts.

mod csv;
pub mod denylist;
pub mod endpoints;
mod openapi;
mod records;
mod sessions;
mod suggest;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{middleware, Extension, Json, Router};
use http_body_util::BodyExt;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth;
use crate::error::{Error, ErrorBody};
use crate::params::{Params, QueryParams};
use crate::session_ref;

/// The routes, each mounted with its description; the descriptions are served as
/// `/api/openapi.json`.
pub fn routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    let (router, document) = documented(state).split_for_parts();
    router
        .layer(middleware::map_response(json_errors))
        .layer(Extension(openapi::Served::new(&document)))
}

/// axum's extractors refuse what they cannot read (a query string that does not decode, a
/// path segment that is not UTF-8) in plain text; the API answers in its one form,
/// `{"error": "..."}`, whoever refused.
async fn json_errors(response: Response) -> Response {
    let plain_text = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/plain"));
    if !plain_text || !(response.status().is_client_error() || response.status().is_server_error())
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match body.collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    let mut json =
        (parts.status, Json(ErrorBody { error: text, candidates: None })).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().insert(name.clone(), value.clone());
        }
    }
    json
}

/// The OpenAPI document of the routes, as `/api/openapi.json` serves it.
pub fn document(state: &Arc<AppState>) -> utoipa::openapi::OpenApi {
    documented(state).into_openapi()
}

fn documented(state: &Arc<AppState>) -> OpenApiRouter<Arc<AppState>> {
    let ingest_token = middleware::from_fn_with_state(state.clone(), auth::require_ingest_token);
    let ingest = OpenApiRouter::new()
        .routes(routes!(records::post))
        .routes(routes!(denylist::module_document))
        .route_layer(ingest_token);
    OpenApiRouter::with_openapi(openapi::Document::openapi())
        .merge(ingest)
        .routes(routes!(sessions::list))
        .routes(routes!(suggest::suggest))
        .routes(routes!(endpoints::list))
        .routes(routes!(denylist::list, denylist::post))
        .routes(routes!(denylist::delete))
        .routes(routes!(session_or_csv))
        .routes(routes!(openapi::document))
}

/// One session and a page of its selected requests. `id` may be a unique prefix of the
/// session id, of 12 characters or more.
///
/// `GET /api/sessions/{id}.csv` shares this route (a path segment cannot be routed on its
/// suffix) and is described apart, with [`csv::export`].
#[utoipa::path(
    get,
    path = "/api/sessions/{id}",
    operation_id = "get_session",
    tag = "sessions",
    params(("id" = String, Path, description = "The session id."), QueryParams),
    responses(
        (status = 200, description = "The session.", body = sessions::SessionResponse),
        (status = 400, description = "A parameter is invalid; the message names it.",
         body = ErrorBody),
        (status = 401, description = "A UI token is set and the request has neither it nor a login.",
         body = ErrorBody),
        (status = 404, description = "No such session, or it is older than the retention.",
         body = ErrorBody),
        (status = 503, description = "The store failed.", body = ErrorBody),
    ),
    security(("ui_token" = []), ("login_cookie" = []), ())
)]
async fn session_or_csv(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    Params(params): Params,
) -> Result<Response, Error> {
    match id.strip_suffix(".csv") {
        Some(id) => {
            let id = session_ref::resolve(&app, id).await?;
            csv::export(&app, &id, &params).await
        }
        None => {
            let id = session_ref::resolve(&app, &id).await?;
            sessions::show(&app, &id, &params).await.map(IntoResponse::into_response)
        }
    }
}
