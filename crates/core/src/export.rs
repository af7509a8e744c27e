//! Where a batch leaves the process: the per-worker exporter thread.
//!
//! The request path hands each [`Capture`](crate::capture::Capture) to [`Exporter::submit`],
//! which only tries to push it onto a bounded lock-free queue: when the queue is full (in
//! records or in bytes) the record is dropped and counted, and the caller logs a rate-limited
//! notice. The push never wakes the thread — a wake-up per record would cost a context switch
//! per request on the worker's core — the thread looks at the queue every few milliseconds
//! instead. It builds records, collects them into batches of `batch=` records or `flush=` time,
//! and delivers them to a file or over HTTP, with retries and, for HTTP, a disk spool.
//!
//! The thread never calls nginx: it reports through [`Exporter::drain_log`], which the event
//! loop polls, and counts everything in the shared
//! [`WorkerCounters`](crate::counters::WorkerCounters).
//!
//! `settings` holds what the directive configures, `handle` the request path's side, `thread`
//! the thread's loop, `pools` the captures and buffers handed back for reuse, `lookahead` the
//! drain's prefetching; `file`, `http` and `spool` are where batches go.

mod backoff;
mod file;
mod handle;
mod http;
mod lookahead;
mod pools;
mod settings;
mod spool;
mod thread;

pub use self::handle::{Exporter, QueueFull};
pub use self::settings::{validate_url, CpuList, Destination, ExportSettings};
pub use self::spool::{Replay, Spool};

/// Severity of a message for nginx's error log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warn,
    Notice,
    Info,
}

/// A message from the exporter thread for nginx's error log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub level: Level,
    pub message: String,
}

/// Why a delivery failed.
#[derive(Debug)]
pub enum SendError {
    /// Connection errors, timeouts, 429, 5xx, write errors: try again later.
    Retryable(String),
    /// The receiver refused the batch for good.
    Permanent(String),
}

/// An I/O error the way nginx prints one: `111: Connection refused`.
pub fn os_error(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let text = e.to_string();
            let suffix = format!(" (os error {code})");
            format!("{code}: {}", text.strip_suffix(&suffix).unwrap_or(&text))
        }
        None => e.to_string(),
    }
}
