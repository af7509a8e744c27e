//! `--follow FILE`: tails the NDJSON file the module's `api_sessions_export file=` writes.
//!
//! The file is polled rather than watched, which works the same on every filesystem. Only whole
//! lines are stored; the byte offset after the last one is committed in the same transaction
//! as its records, so a restart resumes exactly there. Rotation is survived both ways:
//!
//! - rename + new file (logrotate, then `nginx -s reopen`): the old file stays open and is read
//!   until it has been quiet for a grace period, since workers keep appending to it until they
//!   reopen; the new file is read from its start;
//! - truncation in place (`copytruncate`): noticed when the file is shorter than the offset or
//!   the last line read is no longer where it was (the file was refilled past the offset
//!   between two polls), and read again from the start.
//!
//! After a restart, a file renamed meanwhile is found again by its inode in the same directory
//! and read to its end before the new one.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ingest::{self, Parsed};
use crate::store::{FollowPosition, LineMark, Store};

/// Bytes of a line's start covered by its [`LineMark`] checksum.
const MARK_BYTES: usize = 256;
/// Bytes read and stored per transaction.
const CHUNK_BYTES: usize = 4 << 20;
/// Longest line waited for; the same bound as a `POST /v1/records` body.
const MAX_LINE_BYTES: usize = ingest::MAX_BODY_BYTES;

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// How often the file is checked for new lines and rotation.
    pub poll: Duration,
    /// How long a rotated file is still read after its last new line.
    pub drain_grace: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { poll: Duration::from_millis(250), drain_grace: Duration::from_secs(60) }
    }
}

/// An open file being read.
struct Tail {
    file: File,
    inode: u64,
    offset: u64,
    /// The line that ends at `offset`.
    last_line: LineMark,
    /// Last time new bytes appeared (for draining rotated files).
    active: Instant,
}

pub struct Follower {
    path: PathBuf,
    /// The path as stored with the position.
    key: String,
    store: Arc<dyn Store>,
    options: Options,
    current: Option<Tail>,
    /// Rotated files still being read.
    draining: Vec<Tail>,
    /// The last problem logged, so a persistent one is logged once.
    last_problem: Option<String>,
    /// Whether the current round ran into a problem.
    troubled: bool,
}

impl Follower {
    pub fn new(store: Arc<dyn Store>, path: &Path, options: Options) -> Self {
        Follower {
            path: path.to_owned(),
            key: path.to_string_lossy().into_owned(),
            store,
            options,
            current: None,
            draining: Vec::new(),
            last_problem: None,
            troubled: false,
        }
    }

    /// Polls until `stop` is signalled or its sender is dropped.
    pub fn run(mut self, stop: Receiver<()>) {
        loop {
            self.poll();
            match stop.recv_timeout(self.options.poll) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// One round: notice rotation and truncation, then store what is new.
    pub fn poll(&mut self) {
        self.troubled = false;
        if let Err(err) = self.check_file() {
            self.problem(format!("cannot open: {err}"));
        }

        // A failed read is retried next round; a rotated file is let go once it has been quiet
        // (or failing) for the grace period.
        let mut draining = std::mem::take(&mut self.draining);
        draining.retain_mut(|tail| {
            if let Err(err) = self.read(tail, false) {
                self.problem(err);
            }
            tail.active.elapsed() < self.options.drain_grace
        });
        self.draining = draining;

        if let Some(mut tail) = self.current.take() {
            if let Err(err) = self.read(&mut tail, true) {
                self.problem(err);
            }
            self.current = Some(tail);
        }
        if !self.troubled {
            self.last_problem = None;
        }
    }

    /// Opens the file on first use and after a rotation.
    fn check_file(&mut self) -> io::Result<()> {
        let meta = match fs::metadata(&self.path) {
            Ok(meta) => meta,
            // Renamed away and not yet recreated: keep reading the open file.
            Err(err) if err.kind() == io::ErrorKind::NotFound && self.current.is_some() => {
                return Ok(());
            }
            Err(err) => return Err(err),
        };
        match &mut self.current {
            Some(tail) if tail.inode == meta.ino() => {
                if truncated(tail, meta.len())? {
                    tail.rewind();
                    self.note(format_args!("truncated, reading again from the start"));
                }
                Ok(())
            }
            Some(_) => {
                let old = self.current.take().expect("checked above");
                self.note(format_args!("rotated, reading the new file"));
                self.draining.push(old);
                self.current = Some(open(&self.path, 0)?);
                Ok(())
            }
            None => self.resume(),
        }
    }

    /// Opens the file where the last run stopped.
    fn resume(&mut self) -> io::Result<()> {
        let saved = self.store.follow_position(&self.key).map_err(io::Error::other)?;
        let mut tail = open(&self.path, 0)?;
        let Some(saved) = saved else {
            self.current = Some(tail);
            return Ok(());
        };
        if saved.inode == tail.inode {
            tail.offset = saved.offset;
            tail.last_line = saved.last_line;
            if truncated(&tail, tail.file.metadata()?.len())? {
                tail.rewind();
            }
        } else if let Some(old) = find_by_inode(&self.path, saved.inode) {
            self.note(format_args!("rotated while stopped, finishing {}", old.display()));
            let mut rotated = open(&old, saved.offset)?;
            rotated.last_line = saved.last_line;
            if rotated.inode == saved.inode {
                if truncated(&rotated, rotated.file.metadata()?.len())? {
                    rotated.rewind();
                }
                self.draining.push(rotated);
            }
        }
        self.current = Some(tail);
        Ok(())
    }

    /// Stores the whole lines added since the last read. Only the current file's position is
    /// saved: a rotated one is never reopened by path.
    fn read(&self, tail: &mut Tail, save_position: bool) -> Result<(), String> {
        let mut want = CHUNK_BYTES;
        loop {
            let requested = want;
            let mut buf = vec![0; requested];
            let read = read_at_most(&tail.file, &mut buf, tail.offset)
                .map_err(|err| format!("read failed: {err}"))?;
            buf.truncate(read);
            let end = match buf.iter().rposition(|&b| b == b'\n') {
                Some(last_newline) => last_newline + 1,
                // The rest of a line still being written.
                None if read < requested => return Ok(()),
                None if want < MAX_LINE_BYTES => {
                    want *= 2;
                    continue;
                }
                None => {
                    // No record is this long; step over it rather than stall on it. The rest
                    // of the line is then rejected as a bad line.
                    self.warn(format_args!(
                        "skipped {read} bytes at offset {} without a line end",
                        tail.offset
                    ));
                    tail.offset += read as u64;
                    continue;
                }
            };
            let mut parsed = Parsed::default();
            ingest::parse(&buf[..end], 1, &mut parsed);
            let next = tail.offset + end as u64;
            // Reads start at line starts, so the last line starts in this chunk.
            let start = buf[..end - 1].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let last_line = LineMark {
                len: (end - start) as u64,
                crc: crc32fast::hash(&buf[start..end.min(start + MARK_BYTES)]),
            };
            let position = save_position.then(|| FollowPosition {
                path: self.key.clone(),
                inode: tail.inode,
                offset: next,
                last_line,
            });
            let records = std::mem::take(&mut parsed.records);
            self.store.ingest(records, position).map_err(|err| err.to_string())?;
            if let Some(first) = parsed.rejected.first() {
                self.warn(format_args!(
                    "{} bad line(s) skipped in bytes {}..{next}, the first (line {} there): {}",
                    parsed.rejected_total, tail.offset, first.line, first.error
                ));
            }
            tail.offset = next;
            tail.last_line = last_line;
            tail.active = Instant::now();
            want = CHUNK_BYTES;
            if read < requested {
                return Ok(());
            }
        }
    }

    fn problem(&mut self, problem: String) {
        self.troubled = true;
        if self.last_problem.as_ref() != Some(&problem) {
            self.warn(format_args!("{problem}"));
            self.last_problem = Some(problem);
        }
    }

    /// Something worth knowing that needs no action: rotation, truncation.
    fn note(&self, message: std::fmt::Arguments<'_>) {
        tracing::info!("follow \"{}\": {message}", self.path.display());
    }

    /// Something lost or failing: lines skipped, the file unreadable, the store failing.
    fn warn(&self, message: std::fmt::Arguments<'_>) {
        tracing::warn!("follow \"{}\": {message}", self.path.display());
    }
}

fn open(path: &Path, offset: u64) -> io::Result<Tail> {
    let file = File::open(path)?;
    let inode = file.metadata()?.ino();
    Ok(Tail { file, inode, offset, last_line: LineMark::default(), active: Instant::now() })
}

impl Tail {
    fn rewind(&mut self) {
        self.offset = 0;
        self.last_line = LineMark::default();
    }
}

/// Whether the file was truncated under us: it is shorter than what was read, or the last line
/// read is not where it was.
fn truncated(tail: &Tail, len: u64) -> io::Result<bool> {
    if len < tail.offset {
        return Ok(true);
    }
    let mark = tail.last_line;
    if tail.offset == 0 || mark.len == 0 || mark.len > tail.offset {
        return Ok(false);
    }
    let start = tail.offset - mark.len;
    let mut head = vec![0; (mark.len as usize).min(MARK_BYTES)];
    tail.file.read_exact_at(&mut head, start)?;
    let mut end = [0u8];
    tail.file.read_exact_at(&mut end, tail.offset - 1)?;
    Ok(end[0] != b'\n' || crc32fast::hash(&head) != mark.crc)
}

fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// A file in `path`'s directory with the given inode: where a rotation moved the file.
fn find_by_inode(path: &Path, inode: u64) -> Option<PathBuf> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let meta = entry.metadata().ok()?;
        (meta.is_file() && meta.ino() == inode).then(|| entry.path())
    })
}
