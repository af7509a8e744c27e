//! `GET /api/endpoints`: the endpoints called in a time range, with their statistics, spec
//! status and suggested flows, plus the documented operations nobody called.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;

use crate::app::AppState;
use crate::endpoints::list::{self, EndpointPage, EndpointParams, ListQuery};
use crate::error::{Error, ErrorBody};

/// The endpoints called in the time range (the retention when none is given), with their
/// statistics, and the documented operations nobody called in it.
#[utoipa::path(
    get,
    path = "/api/endpoints",
    operation_id = "list_endpoints",
    tag = "endpoints",
    params(EndpointParams),
    responses(
        (status = 200, description = "A page of endpoints.", body = EndpointPage),
        (status = 400, description = "A parameter is invalid; the message names it.",
         body = ErrorBody),
        (status = 401, description = "A UI token is set and the request has neither it nor a login.",
         body = ErrorBody),
        (status = 503, description = "The store failed.", body = ErrorBody),
    ),
    security(("ui_token" = []), ("login_cookie" = []), ())
)]
pub async fn list(
    State(app): State<Arc<AppState>>,
    params: Result<Query<EndpointParams>, QueryRejection>,
) -> Result<Json<EndpointPage>, Error> {
    let Query(params) = params.map_err(|rejection| Error::BadRequest(rejection.body_text()))?;
    let query = params.query().map_err(Error::BadRequest)?;
    Ok(Json(page(&app, &query).await?))
}

/// The page `query` asks for; the `/endpoints` page shows the same.
pub async fn page(app: &AppState, query: &ListQuery) -> Result<EndpointPage, Error> {
    let (endpoints, query) = (app.endpoints.clone(), query.clone());
    app.with_store(move |store| list::page_of(store, &endpoints, &query)).await
}
