//! `GET /api/sessions` (the list) and `GET /api/sessions/{id}` (one session, a page of its
//! requests as they were received, numbered across pages).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::detect::Signal;
use crate::endpoints::annotate::{annotate, annotated_json};
use crate::error::{Error, ErrorBody};
use crate::params::{PageSize, Params, QueryParams};
use crate::store::signals::Actor;
use crate::store::{SessionPage, SessionSummary, Stats, StoreError, Timeline};

/// Sessions with a request that matches the filters, in the order `sort` and `order` ask for.
#[utoipa::path(
    get,
    path = "/api/sessions",
    operation_id = "list_sessions",
    tag = "sessions",
    params(QueryParams),
    responses(
        (status = 200, description = "A page of sessions.", body = SessionPage),
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
    Params(params): Params,
) -> Result<Json<SessionPage>, Error> {
    let query = params.list_query().map_err(Error::BadRequest)?;
    let sessions = app.with_store(move |store| store.list_sessions(&query)).await?;
    Ok(Json(sessions))
}

/// One session, counted over its selected requests, and a page of those requests.
#[derive(Serialize, ToSchema)]
pub struct SessionResponse {
    session: SessionSummary,
    stats: Stats,
    timeline: Timeline,
    /// Other sessions with the same key hash, most recent first.
    related: Vec<String>,
    /// Each record as the text it arrived as, so fields this version does not know survive,
    /// with its `endpoint`, `outliers` and `endpoint_stats` added.
    #[schema(value_type = Vec<Object>)]
    requests: Vec<Box<RawValue>>,
    /// How many selected requests come before this page: its requests are numbers
    /// `requests_offset + 1` to `requests_offset + requests.len()` of `requests_total`.
    requests_offset: u64,
    /// The selected requests of the session, on every page.
    requests_total: u64,
    /// Where the next page of requests starts, as `cursor`.
    next_cursor: Option<String>,
    /// The session's risk, every signal with its detail and evidence, and its actor.
    risk: u8,
    signals: Vec<Signal>,
    actor: Option<Actor>,
}

pub async fn show(
    app: &AppState,
    id: &str,
    params: &QueryParams,
) -> Result<Json<SessionResponse>, Error> {
    let page = params.page(PageSize::REQUESTS).map_err(Error::BadRequest)?;
    let id = id.to_owned();
    let endpoints = app.endpoints.clone();
    let (detail, annotations) = app
        .with_store(move |store| {
            let Some(detail) = store.session(&id, &page.filter, page.cursor, page.limit)? else {
                return Ok(None);
            };
            let annotations = annotate(store, &endpoints, &id, &detail.requests.requests)?;
            Ok::<_, StoreError>(Some((detail, annotations)))
        })
        .await?
        .ok_or(Error::NotFound("no such session"))?;
    let requests = detail
        .requests
        .requests
        .iter()
        .zip(&annotations)
        .filter_map(|(request, annotation)| annotated_json(&request.json, annotation.as_ref()))
        .collect();
    let requests_total = detail.session.requests;
    Ok(Json(SessionResponse {
        requests_offset: detail.requests.offset,
        requests_total,
        session: detail.session,
        stats: detail.stats,
        timeline: detail.timeline,
        related: detail.related,
        requests,
        next_cursor: detail.requests.next.map(|cursor| cursor.to_string()),
        risk: detail.detection.risk,
        signals: detail.detection.signals,
        actor: detail.detection.actor,
    }))
}
