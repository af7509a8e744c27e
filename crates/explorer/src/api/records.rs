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

use crate::app::AppState;
use crate::error::Error;
use crate::ingest::{self, Parsed, Rejected, MAX_BODY_BYTES};

#[derive(Serialize)]
pub struct IngestReport {
    accepted: u64,
    duplicates: u64,
    rejected: Vec<Rejected>,
    /// All rejected lines; `rejected` lists the first [`ingest::MAX_LISTED_REJECTIONS`].
    rejected_total: u64,
}

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
