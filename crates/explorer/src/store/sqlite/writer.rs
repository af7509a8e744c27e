//! The writer thread: every write goes through it, with group commit.
//!
//! Senders (HTTP handlers, followers, `ingest`) hand over a batch and wait for its commit, so a
//! 200 from `POST /v1/records` means stored. Batches that queue up while a commit is under way
//! are written together in the next transaction: each commit writes the pages it touched once,
//! however many batches changed them, so many small batches from many nginx workers cost about
//! what one large batch does.
//!
//! Checkpoints (copying the WAL back into the database file) run on a second thread with its
//! own connection, so the writer does not stop for them; the writer only steps in when the WAL
//! grows past [`WAL_LIMIT`] because ingest never pauses.

use std::fs;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rusqlite::Connection;

use super::endpoints;
use super::write::{self, IngestJob};
use crate::store::signals::Detection;
use crate::store::{IngestCounts, PurgeCounts, Result, StoreError};

/// Records written per transaction at most, however many batches wait.
const GROUP_RECORDS: usize = 200_000;
/// WAL growth that wakes the checkpointer.
const CHECKPOINT_STEP: u64 = 64 << 20;
/// WAL size at which the writer checkpoints and truncates it itself.
const WAL_LIMIT: u64 = 1 << 30;
/// How often the checkpointer runs without being woken.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// A finished ingest job goes back to its sender with the result, so the batch is freed on the
/// sender's thread rather than on the writer's.
type IngestReply = mpsc::SyncSender<(Result<IngestCounts>, IngestJob)>;

enum Job {
    /// Boxed, so that the small jobs do not each take its size in the queue.
    Ingest(Box<IngestJob>, IngestReply),
    Purge(i64, mpsc::SyncSender<Result<PurgeCounts>>),
    /// Any other write (the denylist's); it sends its own reply.
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
}

pub struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer on `conn` and a checkpointer on `checkpointer`.
    pub fn start(
        conn: Connection,
        checkpointer: Connection,
        wal: PathBuf,
        endpoints: endpoints::Writer,
        detection: Detection,
    ) -> Writer {
        let (jobs, queue) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("api-sessions-writer".into())
            .spawn(move || run(conn, checkpointer, wal, endpoints, &queue, &detection))
            .expect("spawn the writer thread");
        Writer { jobs: Some(jobs), thread: Some(thread) }
    }

    pub fn ingest(&self, job: IngestJob) -> Result<IngestCounts> {
        let (reply, result) = mpsc::sync_channel(1);
        self.send(Job::Ingest(Box::new(job), reply))?;
        let (counts, _job) = result.recv().map_err(|_| stopped())?;
        counts
    }

    pub fn purge(&self, cutoff: i64) -> Result<PurgeCounts> {
        let (reply, result) = mpsc::sync_channel(1);
        self.send(Job::Purge(cutoff, reply))?;
        result.recv().map_err(|_| stopped())?
    }

    /// Runs `work` on the writer's connection, between batches.
    pub fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, result) = mpsc::sync_channel(1);
        self.send(Job::Run(Box::new(move |conn| {
            let _ = reply.send(work(conn));
        })))?;
        result.recv().map_err(|_| stopped())?
    }

    fn send(&self, job: Job) -> Result<()> {
        self.jobs.as_ref().ok_or_else(stopped)?.send(job).map_err(|_| stopped())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread after the jobs already queued.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn stopped() -> StoreError {
    StoreError::new("the database writer has stopped")
}

fn run(
    mut conn: Connection,
    checkpointer: Connection,
    wal: PathBuf,
    mut endpoints: endpoints::Writer,
    queue: &mpsc::Receiver<Job>,
    detection: &Detection,
) {
    let (wake, woken) = mpsc::sync_channel::<()>(1);
    let checkpoints = thread::Builder::new()
        .name("api-sessions-checkpoint".into())
        .spawn(move || checkpoint_periodically(&checkpointer, &woken))
        .expect("spawn the checkpoint thread");
    let mut signalled_at = 0u64;
    let mut ids = write::Ids::default();

    let mut next = queue.recv().ok();
    while let Some(job) = next.take() {
        match job {
            Job::Purge(cutoff, reply) => {
                let purged = write::purge(&mut conn, &mut endpoints, cutoff);
                // Endpoints no longer called free their places under the cap.
                reload(&mut endpoints, &conn);
                let _ = reply.send(purged);
            }
            Job::Run(work) => work(&mut conn),
            Job::Ingest(job, reply) => {
                let mut records = job.batch.len();
                let mut group = vec![(*job, reply)];
                while records < GROUP_RECORDS {
                    match queue.try_recv() {
                        Ok(Job::Ingest(job, reply)) => {
                            records += job.batch.len();
                            group.push((*job, reply));
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let (mut jobs, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
                let mut ingest = |conn: &mut Connection, jobs: &mut [IngestJob]| {
                    let result = write::ingest(conn, &mut ids, &mut endpoints, jobs, detection);
                    if result.is_err() {
                        // The endpoints the transaction added were rolled back with it.
                        reload(&mut endpoints, conn);
                    }
                    result
                };
                let results: Vec<_> = match ingest(&mut conn, &mut jobs) {
                    Ok(counts) => counts.into_iter().map(Ok).collect(),
                    // A batch the database refuses fails its whole transaction: store the
                    // others on their own, so that only it fails.
                    Err(_) if jobs.len() > 1 => jobs
                        .iter_mut()
                        .map(|job| {
                            let job = std::slice::from_mut(job);
                            ingest(&mut conn, job).map(|counts| counts[0])
                        })
                        .collect(),
                    Err(err) => vec![Err(err)],
                };
                for ((reply, result), job) in replies.into_iter().zip(results).zip(jobs) {
                    let _ = reply.send((result, job));
                }
            }
        }

        let size = fs::metadata(&wal).map_or(0, |meta| meta.len());
        if size > WAL_LIMIT {
            // Ingest never paused long enough for passive checkpoints to finish; catch up and
            // start the WAL over, waiting for readers if need be.
            if let Err(err) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
                tracing::warn!("SQLite checkpoint failed: {err}");
            }
            signalled_at = 0;
        } else if size >= signalled_at + CHECKPOINT_STEP {
            let _ = wake.try_send(());
            signalled_at = size;
        } else if size < signalled_at {
            // The WAL was restarted from its beginning.
            signalled_at = size;
        }
        if endpoints.flush_due() {
            flush(&mut endpoints, &mut conn);
        }
        if next.is_none() {
            next = next_job(queue, &mut endpoints, &mut conn);
        }
    }
    flush(&mut endpoints, &mut conn);
    drop(wake);
    let _ = checkpoints.join();
}

/// The next job; the endpoint statistics waiting are written out if none comes for a moment,
/// so that they are not held back by a pause in ingest.
fn next_job(
    queue: &mpsc::Receiver<Job>,
    endpoints: &mut endpoints::Writer,
    conn: &mut Connection,
) -> Option<Job> {
    if endpoints.has_pending() {
        match queue.recv_timeout(endpoints::FLUSH_IDLE) {
            Ok(job) => return Some(job),
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            Err(mpsc::RecvTimeoutError::Timeout) => flush(endpoints, conn),
        }
    }
    queue.recv().ok()
}

fn flush(endpoints: &mut endpoints::Writer, conn: &mut Connection) {
    if let Err(err) = endpoints.flush(conn) {
        tracing::warn!("cannot write the endpoint statistics: {err}");
    }
}

fn reload(endpoints: &mut endpoints::Writer, conn: &Connection) {
    if let Err(err) = endpoints.reload(conn) {
        tracing::warn!("cannot read the endpoints back: {err}");
    }
}

fn checkpoint_periodically(conn: &Connection, woken: &mpsc::Receiver<()>) {
    loop {
        match woken.recv_timeout(CHECKPOINT_INTERVAL) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        // PASSIVE copies what it can without blocking the writer or readers.
        if let Err(err) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
            tracing::warn!("SQLite checkpoint failed: {err}");
        }
    }
}
