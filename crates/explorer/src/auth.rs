//! Who may do what, as layers in front of the handlers they guard (see [`crate::api::routes`]).
//!
//! `POST /v1/records` requires the bearer token given with `--token`, checked before the body
//! is read.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::Error;

/// Lets the request through when it carries the ingest token, or when none is set.
pub async fn require_ingest_token(
    State(app): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, Error> {
    match &app.ingest_token {
        Some(token) if !bearer_matches(request.headers(), token) => Err(Error::Unauthorized),
        _ => Ok(next.run(request).await),
    }
}

/// Compares in constant time, so response timing does not reveal how much of a guess was right.
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|given| given.trim().as_bytes().ct_eq(token.as_bytes()).into())
}
