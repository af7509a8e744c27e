//! The one error type of the web application.
//!
//! Handlers return `Result<_, Error>` and use `?` on the store's and the ingest's errors. An
//! error becomes a response in one place, [`Error::into_status_and_message`]: the API answers
//! `{"error": "..."}`, the UI a page, and a failure on the server's side is logged there, once,
//! with what the client is not told.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::ingest::{BodyError, MAX_BODY_BYTES};
use crate::store::StoreError;

#[derive(Debug)]
pub enum Error {
    /// A request the client has to change; the message says how.
    BadRequest(String),
    /// `POST /v1/records` without the right bearer token.
    Unauthorized,
    /// The API without the UI token or a login, when a UI token is set.
    LoginRequired,
    /// A request that would change something, refused as cross-site; the message says why.
    Forbidden(&'static str),
    /// What was asked for does not exist; the message names it.
    NotFound(&'static str),
    /// A session id prefix that several sessions start with; some of them, in id order.
    AmbiguousSession { prefix: String, candidates: Vec<String>, more: bool },
    /// A request body over [`MAX_BODY_BYTES`], as sent or once decompressed.
    TooLarge,
    /// A `Content-Encoding` other than gzip.
    UnsupportedEncoding(String),
    /// The store failed. 503, so that the module's exporter retries the batch later.
    Store(StoreError),
    /// A handler's work panicked.
    Internal(String),
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized | Error::LoginRequired => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::AmbiguousSession { .. } => StatusCode::CONFLICT,
            Error::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The status and what to tell the client. Failures on the server's side are logged here
    /// with their cause, which the message leaves out.
    pub fn into_status_and_message(self) -> (StatusCode, String) {
        let status = self.status();
        let message = match self {
            Error::BadRequest(message) => message,
            Error::Unauthorized => "missing or wrong bearer token".to_owned(),
            Error::LoginRequired => {
                "log in at /login, or send the UI token as Authorization: Bearer".to_owned()
            }
            Error::Forbidden(reason) => reason.to_owned(),
            Error::NotFound(what) => what.to_owned(),
            Error::AmbiguousSession { prefix, candidates, more } => format!(
                "session id prefix \"{prefix}\" matches several sessions: {}{}",
                candidates.join(", "),
                if more { ", …" } else { "" }
            ),
            Error::TooLarge => {
                format!("body larger than {} MiB; send smaller batches", MAX_BODY_BYTES >> 20)
            }
            Error::UnsupportedEncoding(encoding) => {
                format!("unsupported Content-Encoding \"{encoding}\"; send gzip or none")
            }
            Error::Store(err) => {
                tracing::error!("store: {err}");
                "store unavailable, retry later".to_owned()
            }
            Error::Internal(cause) => {
                tracing::error!("request handler failed: {cause}");
                "internal error".to_owned()
            }
        };
        (status, message)
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        Error::Store(err)
    }
}

impl From<BodyError> for Error {
    fn from(err: BodyError) -> Self {
        match err {
            BodyError::TooLarge => Error::TooLarge,
            BodyError::UnsupportedEncoding(encoding) => Error::UnsupportedEncoding(encoding),
            BodyError::Corrupt(message) => Error::BadRequest(message),
        }
    }
}

/// The API's answer to a request that failed: what went wrong, for a person to read.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
    /// For an ambiguous session id prefix: some of the sessions it matches, in id order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidates: Option<Vec<String>>,
}

/// The API's form: `{"error": "..."}`, and the matching ids of an ambiguous session id prefix
/// in `"candidates"`.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let challenge = matches!(self, Error::Unauthorized | Error::LoginRequired);
        let candidates = match &self {
            Error::AmbiguousSession { candidates, .. } => Some(candidates.clone()),
            _ => None,
        };
        let (status, error) = self.into_status_and_message();
        let mut response = (status, Json(ErrorBody { error, candidates })).into_response();
        if challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"api-sessions\""),
            );
        }
        response
    }
}
