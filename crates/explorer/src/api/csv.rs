//! `GET /api/sessions/{id}.csv`: a session's selected requests as RFC 4180 CSV.
//!
//! Every cell is attacker-controlled text that ends up in a spreadsheet, so cells that a
//! spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or CR) are
//! prefixed with `'`; the `csv` crate does the quoting. The export is streamed page by page:
//! a bot's session can hold millions of requests.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use api_sessions_core::record::Record;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use http_body::Frame;
use tokio::sync::mpsc;

use crate::app::AppState;
use crate::error::{Error, ErrorBody};
use crate::params::{PageSize, QueryParams};
use crate::store::{Cursor, Filter, Store, StoreError};

const COLUMNS: [&str; 17] = [
    "time",
    "session_id",
    "request_id",
    "node",
    "method",
    "path",
    "status",
    "duration_ms",
    "request_bytes",
    "response_bytes",
    "ip",
    "user",
    "role",
    "flows",
    "params",
    "attack",
    "user_agent",
];

/// A session's selected requests as CSV (RFC 4180); routed with `GET /api/sessions/{id}`.
#[utoipa::path(
    get,
    path = "/api/sessions/{id}.csv",
    operation_id = "export_session_csv",
    tag = "sessions",
    params(("id" = String, Path, description = "The session id."), QueryParams),
    responses(
        (status = 200, description = "The requests, oldest first, one per row after the header.",
         content_type = "text/csv", body = String),
        (status = 400, description = "A parameter is invalid; the message names it.",
         body = ErrorBody),
        (status = 401, description = "A UI token is set and the request has neither it nor a login.",
         body = ErrorBody),
        (status = 404, description = "No such session, or it is older than the retention.",
         body = ErrorBody),
        (status = 503, description = "The store failed.", body = ErrorBody),
    ),
    security(("ui_token" = []), ("login_cookie" = []), ())
)]
pub async fn export(app: &AppState, id: &str, params: &QueryParams) -> Result<Response, Error> {
    let filter = params.filter().map_err(Error::BadRequest)?;
    // The first page answers "does the session exist" before the 200 goes out.
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let store = app.store.clone();
    let session_id = id.to_owned();
    // Streams on its own thread: the response is sent while pages are still being read.
    tokio::task::spawn_blocking(move || stream(&*store, &session_id, &filter, first_tx, &tx));
    match first_rx.await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return Err(Error::NotFound("no such session")),
        Ok(Err(err)) => return Err(Error::Store(err)),
        Err(_) => {
            return Err(Error::Internal("the CSV export stopped before its first page".into()))
        }
    }
    let filename = format!(
        "attachment; filename=\"session-{}.csv\"",
        id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(64).collect::<String>()
    );
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8")),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&filename).expect("filename is ASCII alphanumerics"),
            ),
        ],
        Body::new(ChunkBody(rx)),
    )
        .into_response())
}

/// Sends the CSV in chunks; `first` learns whether the session exists. Stops when the client
/// goes away (the receiver is dropped).
fn stream(
    store: &dyn Store,
    session_id: &str,
    filter: &Filter,
    first: tokio::sync::oneshot::Sender<Result<bool, StoreError>>,
    tx: &mpsc::Sender<Bytes>,
) {
    let mut first = Some(first);
    let mut after: Option<Cursor> = None;
    let mut rows = Rows::new();
    rows.write(COLUMNS.iter().map(|column| column.to_string()));
    loop {
        let page = store.session_requests(session_id, filter, after, PageSize::REQUESTS.max);
        let page = match (page, first.take()) {
            (Ok(Some(page)), Some(first)) => {
                let _ = first.send(Ok(true));
                page
            }
            (Ok(None), Some(first)) => {
                let _ = first.send(Ok(false));
                return;
            }
            (Err(err), Some(first)) => {
                let _ = first.send(Err(err));
                return;
            }
            (Ok(Some(page)), None) => page,
            // Gone or failing mid-export: end the body; the client sees a short file.
            (Ok(None), None) => return,
            (Err(err), None) => {
                tracing::error!("CSV export of session {session_id:?} stopped: {err}");
                return;
            }
        };
        for request in &page.requests {
            if let Ok(record) = serde_json::from_str::<Record>(&request.json) {
                rows.write(cells(&record));
            }
        }
        if tx.blocking_send(rows.take()).is_err() {
            return;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return,
        }
    }
}

fn cells(record: &Record) -> impl Iterator<Item = String> {
    let params = record
        .params
        .iter()
        .map(|param| format!("{}={}", param.name, param.value))
        .collect::<Vec<_>>()
        .join("; ");
    [
        record.ts.to_rfc3339(),
        record.session_id.clone(),
        record.request_id.clone(),
        record.node.clone(),
        record.method.clone(),
        record.path.clone(),
        record.status.to_string(),
        format!("{:.3}", record.duration_ms),
        record.request_bytes.to_string(),
        record.response_bytes.to_string(),
        record.ip.clone(),
        record.user.clone().unwrap_or_default(),
        record.role.clone().unwrap_or_default(),
        record.flows.join(" "),
        params,
        record.attack.as_ref().map(|attack| attack.kind.clone()).unwrap_or_default(),
        record.user_agent.clone().unwrap_or_default(),
    ]
    .into_iter()
}

/// CSV rows written into a buffer that is sent a page at a time.
struct Rows(csv::Writer<Vec<u8>>);

impl Rows {
    fn new() -> Self {
        Rows(Self::writer())
    }

    fn writer() -> csv::Writer<Vec<u8>> {
        csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new())
    }

    fn write(&mut self, cells: impl Iterator<Item = String>) {
        // Writing to memory cannot fail, and every row has the header's number of cells.
        self.0.write_record(cells.map(guard_formula)).expect("CSV row");
    }

    /// The rows written since the last call.
    fn take(&mut self) -> Bytes {
        let written = std::mem::replace(&mut self.0, Self::writer());
        Bytes::from(written.into_inner().expect("CSV into memory"))
    }
}

/// The cell, with `'` in front if a spreadsheet would run it as a formula. Written here: CSV
/// libraries write cells as given, and this is a rule of spreadsheets, not of CSV.
fn guard_formula(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell
    }
}

/// A response body fed by a channel. Written here: axum streams bodies from a `Stream`, and a
/// channel becomes one only through another crate, for these few lines.
struct ChunkBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChunkBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> String {
        let mut rows = Rows::new();
        rows.write(cells.iter().map(|cell| cell.to_string()));
        String::from_utf8(rows.take().to_vec()).unwrap()
    }

    #[test]
    fn quotes_per_rfc_4180() {
        assert_eq!(row(&["a", "b c", ""]), "a,b c,\r\n");
        assert_eq!(row(&["a,b", "say \"hi\"", "x\ny"]), "\"a,b\",\"say \"\"hi\"\"\",\"x\ny\"\r\n");
    }

    #[test]
    fn neutralises_formula_cells() {
        assert_eq!(row(&["=1+1", "+1", "-2", "@SUM(A1)"]), "'=1+1,'+1,'-2,'@SUM(A1)\r\n");
        assert_eq!(row(&["\tx", "\rx"]), "'\tx,\"'\rx\"\r\n");
        assert_eq!(
            row(&["=HYPERLINK(\"http://x\",\"y\")"]),
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"\r\n"
        );
        // Only the first character matters.
        assert_eq!(row(&["a=b", "1-2"]), "a=b,1-2\r\n");
    }
}
