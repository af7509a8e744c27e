//! `GET /api/sessions/{id}.csv`: a session's selected requests as RFC 4180 CSV.
//!
//! Every cell is attacker-controlled text that ends up in a spreadsheet, so cells that a
//! spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or CR) are
//! prefixed with `'`. The export is streamed page by page: a bot's session can hold millions
//! of requests.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use api_sessions_core::record::Record;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body::Frame;
use tokio::sync::mpsc;

use super::{Failure, REQUEST_LIMIT};
use crate::params::QueryParams;
use crate::server::AppState;
use crate::store::{Cursor, Filter, Store};

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

pub async fn export(
    app: Arc<AppState>,
    id: String,
    params: QueryParams,
) -> Result<Response, Failure> {
    let filter = params.filter().map_err(Failure::bad_request)?;
    // The first page answers "does the session exist" before the 200 goes out.
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let store = app.store.clone();
    let session_id = id.clone();
    tokio::task::spawn_blocking(move || stream(&*store, &session_id, &filter, first_tx, &tx));
    match first_rx.await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return Err(Failure::not_found()),
        Ok(Err(err)) => return Err(Failure::store(err)),
        Err(_) => return Err(Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")),
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
    first: tokio::sync::oneshot::Sender<Result<bool, String>>,
    tx: &mpsc::Sender<Bytes>,
) {
    let mut first = Some(first);
    let mut after: Option<Cursor> = None;
    let mut chunk = String::new();
    write_row(&mut chunk, COLUMNS.iter().map(|column| column.to_string()));
    loop {
        let page = store.session_requests(session_id, filter, after, REQUEST_LIMIT.1);
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
                let _ = first.send(Err(err.to_string()));
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
                write_row(&mut chunk, cells(&record));
            }
        }
        if tx.blocking_send(Bytes::from(std::mem::take(&mut chunk))).is_err() {
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

/// Appends one CRLF-terminated row.
fn write_row(out: &mut String, cells: impl Iterator<Item = String>) {
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_cell(out, &cell);
    }
    out.push_str("\r\n");
}

fn write_cell(out: &mut String, value: &str) {
    let formula = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = value.contains(['"', ',', '\r', '\n']);
    if quote {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    for c in value.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

/// A response body fed by a channel.
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
        let mut out = String::new();
        write_row(&mut out, cells.iter().map(|cell| cell.to_string()));
        out
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
