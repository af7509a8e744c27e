//! From NDJSON bytes to stored records: the body of `POST /v1/records`, the files given to
//! `api-sessions ingest`, and the lines `--follow` reads.
//!
//! A bad line is reported with its number and never stops the good ones.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::{mpsc, Mutex};
use std::thread;

use flate2::read::MultiGzDecoder;
use serde::Serialize;

use crate::batch::Batch;
use crate::store::{IngestCounts, Store, StoreError};

/// Largest body `POST /v1/records` accepts, compressed and again after decompression. The
/// module sends batches of hundreds of records (well under a MiB); this leaves room for a
/// replayed spool while bounding the memory one request can take.
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// How many rejected lines a report lists one by one; the rest are only counted.
pub const MAX_LISTED_REJECTIONS: usize = 1000;

/// Bytes of a file parsed and stored at once by `api-sessions ingest`.
const FILE_CHUNK_BYTES: usize = 16 << 20;

/// A line that could not be stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Rejected {
    /// 1-based, counted over the whole body or file.
    pub line: u64,
    pub error: String,
}

/// The records of some lines, and the lines that were not records.
#[derive(Debug, Default)]
pub struct Parsed {
    pub records: Batch,
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
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', data).chain(std::iter::once(data.len()));
    for (number, end) in (first_line..).zip(ends) {
        let line = &data[start..end];
        start = end + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.iter().all(u8::is_ascii_whitespace) {
            if let Err(error) = parsed.records.push_line(line) {
                parsed.reject(number, error);
            }
        }
    }
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
/// One thread reads chunks of whole lines; several parse them and hand them to the store at
/// once, so parsing runs beside the database writer on every core, and the writer commits the
/// chunks that wait together. Chunks may thus be stored out of file order: when two different
/// records of a file share a request id (or node, pid and seq), which one is kept can vary.
pub fn ingest_file(store: &dyn Store, path: &Path) -> Result<FileReport, FileError> {
    let file = File::open(path).map_err(FileError::Read)?;
    let reader: Box<dyn Read + Send> = if path.extension().is_some_and(|ext| ext == "gz") {
        Box::new(MultiGzDecoder::new(io::BufReader::new(file)))
    } else {
        Box::new(file)
    };
    let workers = thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, MAX_PARSERS);

    let (chunks, queue) = mpsc::sync_channel::<Chunk>(workers);
    let queue = Mutex::new(queue);
    let outcome = Mutex::new(Outcome::default());
    thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| ingest_chunks(store, &queue, &outcome));
        }
        if let Err(err) = read_chunks(reader, &chunks, &outcome) {
            outcome.lock().unwrap_or_else(|p| p.into_inner()).fail(FileError::Read(err));
        }
        // Closing the queue lets the workers finish.
        drop(chunks);
    });
    let outcome = outcome.into_inner().unwrap_or_else(|p| p.into_inner());
    match outcome.failure {
        Some(err) => Err(err),
        None => Ok(outcome.report),
    }
}

/// Threads parsing file chunks at most.
const MAX_PARSERS: usize = 4;

/// Whole lines of a file, and the number of the first.
struct Chunk {
    data: Vec<u8>,
    first_line: u64,
}

/// What the workers of one file did together.
#[derive(Default)]
struct Outcome {
    report: FileReport,
    failure: Option<FileError>,
}

impl Outcome {
    fn fail(&mut self, err: FileError) {
        self.failure.get_or_insert(err);
    }

    fn add(&mut self, counts: IngestCounts, parsed: Parsed) {
        let report = &mut self.report;
        report.counts += counts;
        report.rejected_total += parsed.rejected_total;
        // Chunks finish in any order: keep the first lines of the file.
        report.rejected.extend(parsed.rejected);
        report.rejected.sort_unstable_by_key(|rejected| rejected.line);
        report.rejected.truncate(MAX_LISTED_REJECTIONS);
    }
}

fn ingest_chunks(
    store: &dyn Store,
    queue: &Mutex<mpsc::Receiver<Chunk>>,
    outcome: &Mutex<Outcome>,
) {
    let lock = || outcome.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(chunk) = next else { return };
        if lock().failure.is_some() {
            continue;
        }
        let mut parsed = Parsed::default();
        parse(&chunk.data, chunk.first_line, &mut parsed);
        drop(chunk);
        let records = std::mem::take(&mut parsed.records);
        match store.ingest(records, None) {
            Ok(counts) => lock().add(counts, parsed),
            Err(err) => lock().fail(FileError::Store(err)),
        }
    }
}

fn read_chunks(
    mut reader: Box<dyn Read + Send>,
    chunks: &mpsc::SyncSender<Chunk>,
    outcome: &Mutex<Outcome>,
) -> io::Result<()> {
    let mut line = 1u64;
    let mut tail = Vec::new();
    loop {
        let mut buf = Vec::with_capacity(tail.len() + FILE_CHUNK_BYTES);
        buf.append(&mut tail);
        let start = buf.len();
        buf.resize(start + FILE_CHUNK_BYTES, 0);
        let read = read_full(&mut reader, &mut buf[start..])?;
        buf.truncate(start + read);
        let eof = read == 0;
        // Hand over whole lines only; the rest waits for the next read (or EOF).
        let end = if eof { buf.len() } else { memchr::memrchr(b'\n', &buf).map_or(0, |i| i + 1) };
        tail = buf.split_off(end);
        if !buf.is_empty() {
            let first_line = line;
            line += memchr::memchr_iter(b'\n', &buf).count() as u64;
            let failed = outcome.lock().unwrap_or_else(|p| p.into_inner()).failure.is_some();
            if failed || chunks.send(Chunk { data: buf, first_line }).is_err() {
                return Ok(());
            }
        }
        if eof {
            return Ok(());
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
