//! `POST /v1/records`: NDJSON batches from the module's exporter (or any sender).
//!
//! 200 when the good lines are stored, even if some were rejected (the report lists them):
//! the module retries 5xx and 429 and drops a batch on any other 4xx, and resending the same
//! bad lines would not make them good. 400 only when no line at all was a record.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::error::{Error, ErrorBody};
use crate::ingest::{self, Parsed, Rejected, MAX_BODY_BYTES};

/// What became of a batch.
#[derive(Serialize, ToSchema)]
pub struct IngestReport {
    /// Records stored.
    accepted: u64,
    /// Records already stored before (same `node`, `pid` and `seq`, or same `request_id`).
    duplicates: u64,
    /// Lines that are not records, by their 1-based number.
    rejected: Vec<Rejected>,
    /// All rejected lines; `rejected` lists the first [`ingest::MAX_LISTED_REJECTIONS`].
    rejected_total: u64,
}

/// A record as the module writes it, one line of a batch.
const EXAMPLE_RECORD: &str = concat!(
    r#"{"v":2,"ts":"2026-11-22T10:00:00.123Z","request_id":"a1b2c3d4e5f60718293a4b5c6d7e8f90","#,
    r#""node":"web-1","pid":4242,"seq":17,"session_id":"3f9a0c1d2e3f405162738495a6b7c8d9","#,
    r#""session_key":"cookie:PHPSESSID","session_key_builtin":true,"#,
    r#""key_hash":"9c1e2d3f4a5b6c7d8e9f0a1b2c3d4e5f","session_start":"2026-11-22T09:41:07.000Z","#,
    r#""server":"api.example.com","method":"POST","path":"/login","status":200,"#,
    r#""duration_ms":12.345,"request_bytes":345,"response_bytes":1234,"ip":"203.0.113.7","#,
    r#""user_agent":"curl/8.0","user":"alice","role":"admin","flows":["auth"],"#,
    r#""params":[["account","$http_x_account","context","7731",false]]}"#,
    "\n"
);

/// Either answer of a 400: a batch without a single record, or a body that cannot be read.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Describes answers; never built.
enum BadBatch {
    Report(IngestReport),
    Error(ErrorBody),
}

/// Stores a batch of records (NDJSON, one record per line, gzip accepted).
#[utoipa::path(
    post,
    path = "/v1/records",
    operation_id = "post_records",
    tag = "ingest",
    request_body(
        content = String,
        content_type = "application/x-ndjson",
        description = "Records of schema version 2 (or 1), one JSON object per line.",
        example = json!(EXAMPLE_RECORD)
    ),
    params(
        ("Content-Encoding" = Option<String>, Header, description = "`gzip`, or none."),
    ),
    responses(
        (status = 200, description = "The good lines are stored; bad lines are listed.",
         body = IngestReport),
        (status = 400, description = "No line was a record, or the body cannot be decoded.",
         body = BadBatch),
        (status = 401, description = "A --token is set and the request does not carry it.",
         body = ErrorBody),
        (status = 403, description = "A browser's request from another site.", body = ErrorBody),
        (status = 413, description = "More than 64 MiB, as sent or decompressed.",
         body = ErrorBody),
        (status = 415, description = "A Content-Encoding other than gzip.", body = ErrorBody),
        (status = 503, description = "The store failed; send the batch again later.",
         body = ErrorBody),
    ),
    security(("ingest_token" = []), ())
)]
pub async fn post(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<IngestReport>), Error> {
    let body = read_body(body).await?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|value| value.to_str().unwrap_or("(not text)").to_owned());
    let (counts, parsed, nothing_good) = app
        .with_store(move |store| -> Result<_, Error> {
            let body = ingest::decode_body(body, encoding.as_deref())?;
            let mut parsed = Parsed::default();
            ingest::parse(&body, 1, &mut parsed);
            let records = std::mem::take(&mut parsed.records);
            let nothing_good = records.is_empty();
            Ok((store.ingest(records, None)?, parsed, nothing_good))
        })
        .await?;
    let status = if nothing_good && parsed.rejected_total > 0 {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let report = IngestReport {
        accepted: counts.accepted,
        duplicates: counts.duplicates,
        rejected: parsed.rejected,
        rejected_total: parsed.rejected_total,
    };
    Ok((status, Json(report)))
}

/// The body as sent, within [`MAX_BODY_BYTES`].
async fn read_body(body: Body) -> Result<Vec<u8>, Error> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(Error::TooLarge),
        Err(err) => Err(Error::BadRequest(format!("cannot read body: {err}"))),
    }
}
