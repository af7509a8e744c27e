//! `GET /api/sessions` (the list) and `GET /api/sessions/{id}` (one session, a page of its
//! requests as they were received).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::app::AppState;
use crate::endpoints::annotate::{annotate, annotated_json};
use crate::error::Error;
use crate::params::{PageSize, QueryParams};
use crate::store::{SessionPage, SessionSummary, Stats, StoreError, Timeline};

pub async fn list(
    State(app): State<Arc<AppState>>,
    Query(params): Query<QueryParams>,
) -> Result<Json<SessionPage>, Error> {
    let page = params.page(PageSize::SESSIONS).map_err(Error::BadRequest)?;
    let sessions = app
        .with_store(move |store| store.list_sessions(&page.filter, page.cursor, page.limit))
        .await?;
    Ok(Json(sessions))
}

#[derive(Serialize)]
pub struct SessionResponse {
    session: SessionSummary,
    stats: Stats,
    timeline: Timeline,
    related: Vec<String>,
    /// Each record as the text it arrived as, so fields this version does not know survive,
    /// with its `endpoint`, `outliers` and `endpoint_stats` added.
    requests: Vec<Box<RawValue>>,
    next_cursor: Option<String>,
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
    Ok(Json(SessionResponse {
        session: detail.session,
        stats: detail.stats,
        timeline: detail.timeline,
        related: detail.related,
        requests,
        next_cursor: detail.requests.next.map(|cursor| cursor.to_string()),
    }))
}
