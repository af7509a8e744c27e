//! The HTTP API: `POST /v1/records` for the module's exporter, `GET /api/sessions[/{id}]` and
//! the CSV export for people and scripts.

mod csv;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::ingest::{self, BodyError, Parsed, Rejected, MAX_BODY_BYTES};
use crate::params::QueryParams;
use crate::server::AppState;
use crate::store::{Cursor, Filter, SessionSummary, Stats, Timeline};

/// Sessions per page of `GET /api/sessions`, by default and at most.
pub const LIST_LIMIT: (usize, usize) = (50, 500);
/// Requests per page of `GET /api/sessions/{id}`, by default and at most.
pub const REQUEST_LIMIT: (usize, usize) = (1000, 10_000);

/// A JSON response.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response {
    // Serialising owned data with string keys into a Vec cannot fail.
    let body = serde_json::to_vec(value).expect("JSON response");
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body)
        .into_response()
}

/// A request that failed: its status, and what to tell the client (`{"error": ...}`).
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub message: String,
}

impl Failure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Failure { status, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Failure::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found() -> Self {
        Failure::new(StatusCode::NOT_FOUND, "no such session")
    }

    /// A store failure: logged, and 503 so that the module's exporter retries the batch later.
    pub fn store(err: impl std::fmt::Display) -> Self {
        tracing::error!("store: {err}");
        Failure::new(StatusCode::SERVICE_UNAVAILABLE, "store unavailable, retry later")
    }

    fn too_large() -> Self {
        Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {} MiB; send smaller batches", MAX_BODY_BYTES >> 20),
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct ErrorBody {
            error: String,
        }
        json(self.status, &ErrorBody { error: self.message })
    }
}

/// Runs blocking store work off the async threads.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|err| {
        tracing::error!("request handler failed: {err}");
        Err(Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
    })
}

/// The filter, the cursor and the page size of a request.
pub fn page_request(
    params: &QueryParams,
    limits: (usize, usize),
) -> Result<(Filter, Option<Cursor>, usize), Failure> {
    let filter = params.filter().map_err(Failure::bad_request)?;
    let cursor = params.cursor().map_err(Failure::bad_request)?;
    let limit = params.limit(limits.0, limits.1).map_err(Failure::bad_request)?;
    Ok((filter, cursor, limit))
}

#[derive(Serialize)]
struct IngestReport {
    accepted: u64,
    duplicates: u64,
    rejected: Vec<Rejected>,
    /// All rejected lines; `rejected` lists the first [`ingest::MAX_LISTED_REJECTIONS`].
    rejected_total: u64,
}

/// `POST /v1/records`.
///
/// 200 when the good lines are stored, even if some were rejected (the report lists them):
/// the module retries 5xx and 429 and drops a batch on any other 4xx, and resending the same
/// bad lines would not make them good. 400 only when no line at all was a record.
pub async fn post_records(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    if let Some(token) = &app.token {
        if !authorized(&headers, token) {
            let mut response =
                Failure::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
                    .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"api-sessions\""),
            );
            return Ok(response);
        }
    }
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(Failure::too_large())
        }
        Err(err) => return Err(Failure::bad_request(format!("cannot read body: {err}"))),
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|value| value.to_str().unwrap_or("(not text)").to_owned());

    let store = app.store.clone();
    let (counts, parsed, nothing_good) = blocking(move || {
        let body = ingest::decode_body(body, encoding.as_deref()).map_err(|err| match err {
            BodyError::TooLarge => Failure::too_large(),
            BodyError::UnsupportedEncoding(encoding) => Failure::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Encoding \"{encoding}\"; send gzip or none"),
            ),
            BodyError::Corrupt(message) => Failure::bad_request(message),
        })?;
        let mut parsed = Parsed::default();
        ingest::parse(&body, 1, &mut parsed);
        let records = std::mem::take(&mut parsed.records);
        let nothing_good = records.is_empty();
        let counts = store.ingest(records, None).map_err(Failure::store)?;
        Ok((counts, parsed, nothing_good))
    })
    .await?;
    let status = if nothing_good && parsed.rejected_total > 0 {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(json(
        status,
        &IngestReport {
            accepted: counts.accepted,
            duplicates: counts.duplicates,
            rejected: parsed.rejected,
            rejected_total: parsed.rejected_total,
        },
    ))
}

/// Compares the bearer token in constant time, so response timing does not reveal a prefix.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (given, token) = (given.trim().as_bytes(), token.as_bytes());
    given.len() == token.len() && given.iter().zip(token).fold(0, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// `GET /api/sessions`.
pub async fn list_sessions(
    State(app): State<Arc<AppState>>,
    Query(params): Query<QueryParams>,
) -> Result<Response, Failure> {
    let (filter, cursor, limit) = page_request(&params, LIST_LIMIT)?;
    let store = app.store.clone();
    let page =
        blocking(move || store.list_sessions(&filter, cursor, limit).map_err(Failure::store))
            .await?;
    Ok(json(StatusCode::OK, &page))
}

#[derive(Serialize)]
struct SessionResponse<'a> {
    session: &'a SessionSummary,
    stats: &'a Stats,
    timeline: &'a Timeline,
    related: &'a [String],
    requests: Vec<Box<RawValue>>,
    next_cursor: Option<String>,
}

/// `GET /api/sessions/{id}` and `GET /api/sessions/{id}.csv`.
pub async fn session(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(params): Query<QueryParams>,
) -> Result<Response, Failure> {
    if let Some(id) = id.strip_suffix(".csv") {
        return csv::export(app, id.to_owned(), params).await;
    }
    let (filter, cursor, limit) = page_request(&params, REQUEST_LIMIT)?;
    let store = app.store.clone();
    let detail =
        blocking(move || store.session(&id, &filter, cursor, limit).map_err(Failure::store))
            .await?
            .ok_or_else(Failure::not_found)?;
    let requests = detail
        .requests
        .requests
        .into_iter()
        .filter_map(|request| RawValue::from_string(request.json).ok())
        .collect();
    Ok(json(
        StatusCode::OK,
        &SessionResponse {
            session: &detail.session,
            stats: &detail.stats,
            timeline: &detail.timeline,
            related: &detail.related,
            requests,
            next_cursor: detail.requests.next.map(|cursor| cursor.to_string()),
        },
    ))
}
