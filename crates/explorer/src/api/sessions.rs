//! `GET /api/sessions` (the list) and `GET /api/sessions/{id}` (one session, a page of its
//! requests as they were received).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::app::AppState;
use crate::detect::Signal;
use crate::error::Error;
use crate::params::{PageSize, QueryParams};
use crate::store::signals::Actor;
use crate::store::{SessionPage, SessionSummary, Stats, Timeline};

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
    /// Each record as the text it arrived as, so fields this version does not know survive.
    requests: Vec<Box<RawValue>>,
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
    let detail = app
        .with_store(move |store| store.session(&id, &page.filter, page.cursor, page.limit))
        .await?
        .ok_or(Error::NotFound("no such session"))?;
    let requests = detail
        .requests
        .requests
        .into_iter()
        .filter_map(|request| RawValue::from_string(request.json).ok())
        .collect();
    Ok(Json(SessionResponse {
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
