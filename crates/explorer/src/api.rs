//! The HTTP API: `POST /v1/records` for the module's exporter, `GET /api/sessions[/{id}]`,
//! `GET /api/endpoints` and the CSV export for people and scripts. One file per resource, each route in [`routes`].

mod csv;
pub mod endpoints;
mod records;
mod sessions;

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Router};

use crate::app::AppState;
use crate::auth;
use crate::error::Error;
use crate::params::QueryParams;

pub fn routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    let ingest_token = middleware::from_fn_with_state(state.clone(), auth::require_ingest_token);
    Router::new()
        .route("/v1/records", post(records::post).route_layer(ingest_token))
        .route("/api/sessions", get(sessions::list))
        .route("/api/endpoints", get(endpoints::list))
        .route("/api/sessions/{id}", get(session_or_csv))
}

/// `GET /api/sessions/{id}` and `GET /api/sessions/{id}.csv` share a route: a path segment
/// cannot be routed on its suffix.
async fn session_or_csv(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(params): Query<QueryParams>,
) -> Result<Response, Error> {
    match id.strip_suffix(".csv") {
        Some(id) => csv::export(&app, id, &params).await,
        None => sessions::show(&app, &id, &params).await.map(IntoResponse::into_response),
    }
}
