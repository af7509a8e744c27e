//! From NDJSON bytes to stored records: the body of `POST /v1/records`, the files given to
//! `api-sessions ingest`, and the lines `--follow` reads.
//!
//! A bad line is reported with its number and never stops the good ones.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::mpsc;
use std::thread;

use api_sessions_core::record::{Record, SCHEMA_VERSION};
use flate2::read::MultiGzDecoder;
use serde::Serialize;

use crate::store::{IngestCounts, Received, Store, StoreError};

/// Largest body `POST /v1/records` accepts, compressed and again after decompression. The
/// module sends batches of hundreds of records (well under a MiB); this leaves room for a
/// replayed spool while bounding the memory one request can take.
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// How many rejected lines a report lists one by one; the rest are only counted.
pub const MAX_LISTED_REJECTIONS: usize = 1000;

/// Bytes of a file parsed and stored per transaction by `api-sessions ingest`.
const FILE_CHUNK_BYTES: usize = 32 << 20;

/// A line that could not be stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// 1-based, counted over the whole body or file.
    pub line: u64,
    pub error: String,
}

/// The records of some lines, and the lines that were not records.
#[derive(Debug, Default)]
pub struct Parsed {
    pub records: Vec<Received>,
    pub rejected: Vec<Rejected>,
    pub rejected_total: u64,
}

impl Parsed {
    fn reject(&mut self, line: u64, error: String) {
        self.rejected_total += 1;
        if self.rejected.len() < MAX_LISTED_REJECTIONS {
            self.rejected.push(Rejected { line, error });
        }
    }
}

/// Parses NDJSON; `first_line` is the number of the first line in `data`. Blank lines are
/// skipped; a final line without a newline is parsed like the others.
pub fn parse(data: &[u8], first_line: u64, parsed: &mut Parsed) {
    for (number, line) in (first_line..).zip(data.split(|&b| b == b'\n')) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.iter().all(u8::is_ascii_whitespace) {
            match parse_line(line) {
                Ok(received) => parsed.records.push(received),
                Err(error) => parsed.reject(number, error),
            }
        }
    }
}

fn parse_line(line: &[u8]) -> Result<Received, String> {
    let text = std::str::from_utf8(line).map_err(|_| "line is not valid UTF-8".to_owned())?;
    let record: Record = serde_json::from_str(text).map_err(describe_json_error)?;
    if record.v != SCHEMA_VERSION {
        return Err(format!("unsupported record version {} (expected {SCHEMA_VERSION})", record.v));
    }
    for (name, value) in [
        ("request_id", &record.request_id),
        ("session_id", &record.session_id),
        ("node", &record.node),
    ] {
        if value.is_empty() {
            return Err(format!("empty \"{name}\""));
        }
    }
    Ok(Received { record, json: text.trim().to_owned() })
}

/// serde_json's message without its "at line 1 column N" (there is one line), with the column.
fn describe_json_error(err: serde_json::Error) -> String {
    let message = err.to_string();
    let message = message.rfind(" at line ").map_or(message.as_str(), |at| &message[..at]);
    format!("{message} (column {})", err.column())
}

/// Why a request body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    UnsupportedEncoding(String),
    Corrupt(String),
}

/// Undoes the `Content-Encoding` of a body (`gzip` or none), within [`MAX_BODY_BYTES`].
pub fn decode_body(body: Vec<u8>, encoding: Option<&str>) -> Result<Vec<u8>, BodyError> {
    match encoding.map(str::trim) {
        None | Some("") | Some("identity") => Ok(body),
        Some(gzip) if gzip.eq_ignore_ascii_case("gzip") || gzip.eq_ignore_ascii_case("x-gzip") => {
            let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(MAX_BODY_BYTES));
            // One byte more than allowed tells "exactly at the limit" from "over it" without
            // inflating a bomb any further.
            MultiGzDecoder::new(body.as_slice())
                .take(MAX_BODY_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|err| BodyError::Corrupt(format!("invalid gzip body: {err}")))?;
            if out.len() > MAX_BODY_BYTES {
                return Err(BodyError::TooLarge);
            }
            Ok(out)
        }
        Some(other) => Err(BodyError::UnsupportedEncoding(other.to_owned())),
    }
}

/// What `api-sessions ingest` did with one file.
#[derive(Debug, Default)]
pub struct FileReport {
    pub counts: IngestCounts,
    pub rejected: Vec<Rejected>,
    pub rejected_total: u64,
}

#[derive(Debug)]
pub enum FileError {
    Read(io::Error),
    Store(StoreError),
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::Read(err) => write!(f, "read failed: {err}"),
            FileError::Store(err) => err.fmt(f),
        }
    }
}

/// Loads an NDJSON file (gzip-compressed when its name ends in `.gz`). Loading the same file
/// again stores nothing new.
///
/// Reading and parsing run on their own thread while the previous chunk is written, so both
/// cores are busy on large files.
pub fn ingest_file(store: &dyn Store, path: &Path) -> Result<FileReport, FileError> {
    let file = File::open(path).map_err(FileError::Read)?;
    let reader: Box<dyn Read + Send> = if path.extension().is_some_and(|ext| ext == "gz") {
        Box::new(MultiGzDecoder::new(io::BufReader::new(file)))
    } else {
        Box::new(file)
    };

    let (tx, rx) = mpsc::sync_channel::<io::Result<Parsed>>(2);
    let parser = thread::spawn(move || read_chunks(reader, &tx));
    let mut report = FileReport::default();
    let mut failure = None;
    for parsed in rx {
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(err) => {
                failure = Some(FileError::Read(err));
                break;
            }
        };
        match store.ingest(parsed.records, None) {
            Ok(counts) => report.counts += counts,
            Err(err) => {
                failure = Some(FileError::Store(err));
                break;
            }
        }
        report.rejected_total += parsed.rejected_total;
        let room = MAX_LISTED_REJECTIONS - report.rejected.len();
        report.rejected.extend(parsed.rejected.into_iter().take(room));
    }
    // Dropping the receiver (on failure) makes the parser's next send fail, so it stops.
    let _ = parser.join();
    match failure {
        Some(err) => Err(err),
        None => Ok(report),
    }
}

fn read_chunks(mut reader: Box<dyn Read + Send>, tx: &mpsc::SyncSender<io::Result<Parsed>>) {
    let mut buf = Vec::with_capacity(FILE_CHUNK_BYTES * 2);
    let mut line = 1u64;
    loop {
        let start = buf.len();
        buf.resize(start + FILE_CHUNK_BYTES, 0);
        let read = match read_full(&mut reader, &mut buf[start..]) {
            Ok(read) => read,
            Err(err) => {
                let _ = tx.send(Err(err));
                return;
            }
        };
        buf.truncate(start + read);
        let eof = read == 0;
        // Parse whole lines only; the tail waits for the next read (or EOF).
        let end = if eof {
            buf.len()
        } else {
            buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
        };
        if end > 0 || eof {
            let mut parsed = Parsed::default();
            parse(&buf[..end], line, &mut parsed);
            line += buf[..end].iter().filter(|&&b| b == b'\n').count() as u64;
            buf.drain(..end);
            if tx.send(Ok(parsed)).is_err() {
                return;
            }
        }
        if eof {
            return;
        }
    }
}

/// Reads until `buf` is full or the input ends.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}
