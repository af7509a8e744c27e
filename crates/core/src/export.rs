//! Where a batch leaves the process: the per-worker exporter thread.
//!
//! The request path hands each [`Capture`] to [`Exporter::submit`], which only tries to
//! push it onto a bounded lock-free queue: when the queue is full (in records or in bytes)
//! the record is dropped and counted, and the caller logs a rate-limited notice. The push
//! never wakes the thread — a wake-up per record would cost a context switch per request on
//! the worker's core — the thread looks at the queue every few milliseconds instead. It
//! builds records, collects them into batches of `batch=` records or `flush=` time, and
//! delivers them to a file or over HTTP, with retries and, for HTTP, a disk spool.
//!
//! The thread never calls nginx: it reports through [`Exporter::drain_log`], which the event
//! loop polls, and counts everything in the shared [`WorkerCounters`].

mod backoff;
mod file;
mod http;
mod spool;

use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};
use crossbeam_queue::ArrayQueue;

use self::backoff::Backoff;
use self::file::FileSink;
use self::http::HttpSink;
pub use self::spool::{Replay, Spool};
use crate::assemble::Assembler;
use crate::capture::Capture;
use crate::counters::WorkerCounters;
use crate::profile::Profile;

/// Where records go.
pub enum Destination {
    /// NDJSON appended to a file opened by nginx.
    File(File),
    /// NDJSON POSTed to a URL with extra headers.
    Http { url: String, headers: Vec<(String, String)> },
}

/// `api_sessions_export` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSettings {
    pub batch: usize,
    pub flush: Duration,
    pub queue: usize,
    /// In-flight capture bytes allowed in the queue.
    pub queue_memory: usize,
    pub timeout: Duration,
    pub spool: Option<PathBuf>,
    pub spool_max: u64,
}

impl Default for ExportSettings {
    fn default() -> Self {
        ExportSettings {
            batch: 512,
            flush: Duration::from_secs(1),
            queue: 65_536,
            queue_memory: 256 << 20,
            timeout: Duration::from_secs(5),
            spool: None,
            spool_max: 1 << 30,
        }
    }
}

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

/// Checks an `api_sessions_export url=`; the error is worded like nginx's URL errors
/// (`no host`, `invalid port`, `invalid URL prefix`).
pub fn validate_url(url: &str) -> Result<(), &'static str> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    if rest.is_some_and(|r| r.is_empty() || r.starts_with(['/', '?', '#'])) {
        return Err("no host");
    }
    let uri: ureq::http::Uri = url.parse().map_err(|_| "invalid URL")?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("invalid URL prefix");
    }
    let authority = uri.authority().ok_or("no host")?;
    if authority.host().is_empty() {
        return Err("no host");
    }
    // The text after the host, if any, must be a port number.
    let after_host = &authority.as_str()
        [authority.as_str().rfind(authority.host()).unwrap_or(0) + authority.host().len()..];
    if let Some(port) = after_host.strip_prefix(':') {
        if port.parse::<u16>().is_err() {
            return Err("invalid port");
        }
    }
    Ok(())
}

/// Marks the calling thread as batch work for the scheduler: it keeps its fair share of the
/// CPU (so it keeps up under full load) but does not preempt the worker's event loop when it
/// wakes, so sharing the worker's core adds no latency to requests.
fn batch_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; SCHED_BATCH takes priority 0.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    }
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

/// A capture did not fit in the queue (it is handed back); it has been counted as dropped.
#[derive(Debug)]
pub struct QueueFull(pub Box<Capture>);

enum Control {
    ReplaceFile(File),
    Shutdown,
}

/// How often the thread looks at the queue while requests come in. Short, because what
/// accumulates between two looks is what the thread then works through in one go on a
/// core it may share with the event loop, and what stays in flight: the captures and body
/// buffers the request path recycles stay in its caches only while they are few (at 5 ms and
/// 100,000 requests/s, reusing a capture cost a cache miss, a quarter of the module's time on
/// the event loop).
const POLL_BUSY: Duration = Duration::from_millis(1);
/// How often the thread looks at an empty queue: an idle nginx is not woken a thousand
/// times a second.
const POLL_IDLE: Duration = Duration::from_millis(5);
/// Captures kept for reuse.
const RECYCLED: usize = 1024;
/// Body buffers kept for reuse: as many as the captures of a poll interval at a high rate
/// hold, within a budget of bytes, each up to `RECYCLED_BODY_BYTES`.
const RECYCLED_BODIES: usize = 1024;
const RECYCLED_BODIES_BUDGET: usize = 16 << 20;
const RECYCLED_BODY_BYTES: usize = 1 << 20;

/// Body buffers the exporter thread is done with, for the request path to fill again.
///
/// Sized for the bodies of one poll interval: with a pool smaller than that (it was 64
/// buffers), most buffers were freed on one thread and allocated anew on the other, and
/// `malloc` showed in the request path's profile of a proxied JSON API.
struct BodyPool {
    buffers: ArrayQueue<Vec<u8>>,
    /// Capacity of the pooled buffers, kept within `RECYCLED_BODIES_BUDGET`.
    bytes: AtomicUsize,
}

impl BodyPool {
    fn new() -> BodyPool {
        BodyPool { buffers: ArrayQueue::new(RECYCLED_BODIES), bytes: AtomicUsize::new(0) }
    }

    /// A pooled buffer with room for `capacity` bytes, or a new one.
    fn take(&self, capacity: usize) -> Vec<u8> {
        match self.buffers.pop() {
            Some(mut buffer) => {
                self.bytes.fetch_sub(buffer.capacity(), Ordering::Relaxed);
                buffer.reserve(capacity);
                buffer
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// Keeps `buffer` for reuse when it fits the budget; frees it otherwise.
    fn give(&self, mut buffer: Vec<u8>) {
        let size = buffer.capacity();
        if size > RECYCLED_BODY_BYTES
            || self.bytes.fetch_add(size, Ordering::Relaxed) + size > RECYCLED_BODIES_BUDGET
        {
            if size <= RECYCLED_BODY_BYTES {
                self.bytes.fetch_sub(size, Ordering::Relaxed);
            }
            return;
        }
        buffer.clear();
        if self.buffers.push(buffer).is_err() {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
        }
    }
}
/// Captures the exporter thread is done with, for the request path to fill again.
///
/// Most recently used first: a capture comes back warm in the caches of the core the two
/// threads share. A queue handed out the oldest, and with a thousand captures in the pool a
/// recycled one was a cache miss on first touch, the largest single cost of the module on
/// the event loop in a profile of small requests.
struct CapturePool {
    // Boxed: a capture moves between the queue, the pool and the request path by pointer.
    #[allow(clippy::vec_box)]
    stack: parking_lot::Mutex<Vec<Box<Capture>>>,
}

/// Captures the exporter thread hands back at a time while it drains.
const RECYCLE_EVERY: usize = 64;

impl CapturePool {
    fn new() -> CapturePool {
        CapturePool { stack: parking_lot::Mutex::new(Vec::with_capacity(RECYCLED)) }
    }

    /// The request path's side: never waits. When the exporter thread holds the lock (a few
    /// nanoseconds), a new capture is made instead.
    ///
    /// Prefetches for the requests to come, two deep (see [`Capture::prefetch`]): the buffers
    /// of the capture the next request takes, whose struct this call's predecessor
    /// prefetched, and the struct of the one after.
    fn take(&self) -> Option<Box<Capture>> {
        let mut stack = self.stack.try_lock()?;
        let capture = stack.pop()?;
        if let [.., after, next] = &stack[..] {
            after.prefetch(false);
            next.prefetch(true);
        }
        Some(capture)
    }

    /// The exporter thread's side: `done` goes back, last one on top; what exceeds
    /// `RECYCLED` is freed.
    #[allow(clippy::vec_box)]
    fn give(&self, done: &mut Vec<Box<Capture>>) {
        if done.is_empty() {
            return;
        }
        let mut stack = self.stack.lock();
        let room = RECYCLED.saturating_sub(stack.len());
        let keep = done.len().min(room);
        let extra = done.len() - keep;
        stack.extend(done.drain(extra..));
        drop(stack);
        done.clear();
    }
}

/// Initial arena of a new capture; most requests fit without growing it.
const ARENA: usize = 512;

/// The request path's handle on its worker's exporter thread.
pub struct Exporter {
    queue: Arc<ArrayQueue<Box<Capture>>>,
    /// Captures the thread is done with, for the request path to fill again: in steady state
    /// no capture is allocated on one thread and freed on the other.
    recycled: Arc<CapturePool>,
    /// Body buffers likewise: a fresh 64 KB buffer per response would cost page faults.
    bodies: Arc<BodyPool>,
    /// Set by shutdown: the thread is draining, nothing more is accepted.
    closed: bool,
    control: Sender<Control>,
    log: Receiver<LogLine>,
    counters: WorkerCounters<'static>,
    in_flight: Arc<AtomicUsize>,
    queue_memory: usize,
    thread: Option<JoinHandle<()>>,
}

impl Exporter {
    /// Starts the exporter thread of this worker.
    pub fn start(
        settings: ExportSettings,
        destination: Destination,
        assembler: Assembler,
        counters: WorkerCounters<'static>,
    ) -> std::io::Result<Exporter> {
        let queue = Arc::new(ArrayQueue::new(settings.queue.max(1)));
        let recycled = Arc::new(CapturePool::new());
        let bodies = Arc::new(BodyPool::new());
        let (control_tx, control) = bounded(16);
        let (log_tx, log) = bounded(256);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let sink = match destination {
            Destination::File(file) => Sink::File(FileSink::new(file)),
            Destination::Http { url, headers } => Sink::Http(HttpSink::new(url, headers)),
        };
        let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let seed = u64::from(assembler.pid) ^ clock.unwrap_or_default().as_nanos() as u64;
        let queue_memory = settings.queue_memory;
        let worker = Worker {
            queue: queue.clone(),
            recycled: recycled.clone(),
            done: Vec::with_capacity(RECYCLE_EVERY),
            bodies: bodies.clone(),
            control,
            log: log_tx,
            counters,
            in_flight: in_flight.clone(),
            assembler,
            sink,
            spool: None,
            batch: Batch::default(),
            backoff: Backoff::new(seed),
            next_replay: None,
            next_adoption: Instant::now(),
            last_logged: Vec::new(),
            shutdown: None,
            settings,
        };
        let thread = std::thread::Builder::new()
            .name("api_sessions exporter".into())
            .spawn(move || worker.run())?;
        Ok(Exporter {
            queue,
            recycled,
            bodies,
            closed: false,
            control: control_tx,
            log,
            counters,
            in_flight,
            queue_memory,
            thread: Some(thread),
        })
    }

    /// An empty capture for a request of a location with `profile`, recycled when possible.
    pub fn capture(&self, profile: &Arc<Profile>) -> Box<Capture> {
        match self.recycled.take() {
            Some(mut capture) => {
                capture.recycle(profile);
                capture
            }
            None => Box::new(Capture::new(Arc::clone(profile), ARENA)),
        }
    }

    /// An empty buffer for a body of up to `capacity` bytes, recycled when possible.
    pub fn body_buffer(&self, capacity: usize) -> Vec<u8> {
        self.bodies.take(capacity)
    }

    /// Hands a capture to the exporter without waiting.
    pub fn submit(&self, capture: Box<Capture>) -> Result<(), QueueFull> {
        let size = capture.heap_size();
        if self.closed || self.in_flight.load(Ordering::Relaxed) + size > self.queue_memory {
            self.counters.captured_but_dropped();
            return Err(QueueFull(capture));
        }
        self.in_flight.fetch_add(size, Ordering::Relaxed);
        // Count before pushing: once pushed, the exporter may count it as taken at once.
        self.counters.captured();
        self.queue.push(capture).map_err(|capture| {
            self.in_flight.fetch_sub(capture.heap_size(), Ordering::Relaxed);
            self.counters.queue_rejected();
            QueueFull(capture)
        })
    }

    /// Switches the file sink to a reopened file (`nginx -s reopen`).
    pub fn replace_file(&self, file: File) {
        let _ = self.control.try_send(Control::ReplaceFile(file));
        self.wake();
    }

    /// Messages the thread left for nginx's error log.
    pub fn drain_log(&self, mut f: impl FnMut(LogLine)) {
        while let Ok(line) = self.log.try_recv() {
            f(line);
        }
    }

    /// Records waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Makes the thread look at its messages now rather than at its next poll.
    fn wake(&self) {
        if let Some(thread) = &self.thread {
            thread.thread().unpark();
        }
    }

    /// Stops taking captures, lets the thread deliver what it holds within `deadline`
    /// (spooling or dropping and counting what it cannot), and waits for it.
    pub fn shutdown(&mut self, deadline: Duration) {
        self.closed = true;
        let _ = self.control.send_timeout(Control::Shutdown, deadline);
        self.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
    }
}

enum Sink {
    File(FileSink),
    Http(HttpSink),
}

impl Sink {
    fn send(&mut self, batch: &[u8], timeout: Duration) -> Result<(), SendError> {
        match self {
            Sink::File(f) => f.send(batch),
            Sink::Http(h) => h.send(batch, timeout),
        }
    }
}

/// Records being collected for the next delivery.
#[derive(Default)]
struct Batch {
    payload: Vec<u8>,
    records: u64,
    started: Option<Instant>,
}

impl Batch {
    fn take(&mut self) -> (Vec<u8>, u64) {
        self.started = None;
        let records = std::mem::take(&mut self.records);
        let capacity = self.payload.len();
        let payload = std::mem::replace(&mut self.payload, Vec::with_capacity(capacity));
        (payload, records)
    }
}

/// Kinds of repeated messages, each logged at most once per interval.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeat {
    DeliveryFailed,
    Refused,
    Spool,
    Internal,
}

const REPEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Spooled batches replayed before the queue is looked at again.
const REPLAY_BURST: usize = 8;
/// How often a running worker looks for spools left by exited workers.
const ADOPTION_INTERVAL: Duration = Duration::from_secs(5);

struct Worker {
    queue: Arc<ArrayQueue<Box<Capture>>>,
    recycled: Arc<CapturePool>,
    /// Captures turned into records since they were last handed back.
    #[allow(clippy::vec_box)]
    done: Vec<Box<Capture>>,
    bodies: Arc<BodyPool>,
    control: Receiver<Control>,
    log: Sender<LogLine>,
    counters: WorkerCounters<'static>,
    in_flight: Arc<AtomicUsize>,
    assembler: Assembler,
    sink: Sink,
    spool: Option<Spool>,
    batch: Batch,
    backoff: Backoff,
    /// While the spool holds batches: when to try the oldest one again.
    next_replay: Option<Instant>,
    next_adoption: Instant,
    last_logged: Vec<(Repeat, Instant)>,
    /// Set once shutdown has begun: nothing may wait past it.
    shutdown: Option<Instant>,
    settings: ExportSettings,
}

impl Worker {
    fn log(&self, level: Level, message: String) {
        let _ = self.log.try_send(LogLine { level, message });
    }

    /// Logs unless the same kind of message was logged within the last second.
    fn log_repeated(&mut self, kind: Repeat, level: Level, message: String) {
        let now = Instant::now();
        match self.last_logged.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, at)) if now.duration_since(*at) < REPEAT_INTERVAL => return,
            Some((_, at)) => *at = now,
            None => self.last_logged.push((kind, now)),
        }
        self.log(level, message);
    }

    fn run(mut self) {
        batch_priority();
        if let Some(dir) = self.settings.spool.clone() {
            match Spool::open(&dir, self.settings.spool_max, self.assembler.pid) {
                Ok(spool) => {
                    let own = spool.records();
                    if own > 0 {
                        self.counters.adopt_spooled(own);
                        self.next_replay = Some(Instant::now());
                    }
                    self.spool = Some(spool);
                }
                Err(e) => self.log(
                    Level::Error,
                    format!(
                        "cannot open spool \"{}\" ({}), spooling disabled",
                        dir.display(),
                        os_error(&e)
                    ),
                ),
            }
        }

        while self.shutdown.is_none() {
            self.adopt_orphans();
            let poll = if self.drain() > 0 { POLL_BUSY } else { POLL_IDLE };
            if self.batch_due() {
                self.deliver();
            }
            if self.next_replay.is_some_and(|at| Instant::now() >= at) {
                self.replay();
            }
            let wait = self.next_wake().saturating_duration_since(Instant::now());
            self.wait(wait.min(poll));
        }

        // Shutdown: everything still queued is turned into records and delivered.
        self.drain();
        self.deliver();
    }

    /// Next moment something is due: the batch's flush time or a spool replay.
    fn next_wake(&self) -> Instant {
        let mut wake = Instant::now() + ADOPTION_INTERVAL;
        if let Some(started) = self.batch.started {
            wake = wake.min(started + self.settings.flush);
        }
        if let Some(at) = self.next_replay {
            wake = wake.min(at);
        }
        wake
    }

    fn batch_due(&self) -> bool {
        self.batch.records as usize >= self.settings.batch
            || self.batch.started.is_some_and(|s| s.elapsed() >= self.settings.flush)
    }

    /// Turns everything waiting in the queue into records, delivering full batches; returns
    /// how many there were.
    fn drain(&mut self) -> usize {
        let mut taken = 0;
        // Two captures ahead, as on the request path (see CapturePool::take): the event loop
        // filled them up to a poll interval ago, and they have left this core's caches since.
        // None is held past the record that fills a batch (see Lookahead).
        let mut ahead = Lookahead::new();
        loop {
            let room = self.settings.batch.saturating_sub(self.batch.records as usize + 1);
            let Some(capture) = ahead.advance(&self.queue, room) else { break };
            if let Some(next) = &ahead.next {
                next.prefetch(false);
            }
            if let Some(current) = &ahead.current {
                current.prefetch(true);
            }
            self.take(capture);
            taken += 1;
            if self.batch.records as usize >= self.settings.batch {
                // Delivery may wait on a slow receiver: the request path gets its captures first.
                self.recycled.give(&mut self.done);
                self.deliver();
            }
        }
        self.recycled.give(&mut self.done);
        taken
    }

    /// Turns a capture into a record of the current batch.
    fn take(&mut self, capture: Box<Capture>) {
        self.counters.taken(1);
        self.in_flight.fetch_sub(capture.heap_size(), Ordering::Relaxed);
        let payload = &mut self.batch.payload;
        let mark = payload.len();
        let assembler = &mut self.assembler;
        let built = catch_unwind(AssertUnwindSafe(|| assembler.write_record(&capture, payload)));
        if built.is_ok() {
            self.batch.records += 1;
            self.batch.started.get_or_insert_with(Instant::now);
        } else {
            self.batch.payload.truncate(mark);
            self.counters.dropped(1);
            self.log_repeated(
                Repeat::Internal,
                Level::Error,
                format!("record {} could not be built and was dropped", capture.seq),
            );
        }
        // Everything goes back to the request path for reuse, within bounds.
        let mut capture = capture;
        for body in
            [capture.request_body.take(), capture.response_body.take()].into_iter().flatten()
        {
            self.bodies.give(body.bytes);
        }
        capture.attack = None;
        if capture.heap_size() <= Capture::RECYCLE_LIMIT {
            self.done.push(capture);
            if self.done.len() >= RECYCLE_EVERY {
                self.recycled.give(&mut self.done);
            }
        }
    }

    fn adopt_orphans(&mut self) {
        let now = Instant::now();
        if now < self.next_adoption {
            return;
        }
        self.next_adoption = now + ADOPTION_INTERVAL;
        let Some(spool) = &mut self.spool else { return };
        match spool.adopt_orphans() {
            Ok(0) => {}
            Ok(records) => {
                self.counters.adopt_spooled(records);
                self.next_replay.get_or_insert(now);
                self.log(
                    Level::Notice,
                    format!("adopted {records} spooled records of an exited worker"),
                );
            }
            Err(e) => self.log_repeated(
                Repeat::Spool,
                Level::Error,
                format!(
                    "spool scan failed ({}) while looking for exited workers' spools",
                    os_error(&e)
                ),
            ),
        }
    }

    /// Time left for one delivery attempt.
    fn attempt_timeout(&self) -> Duration {
        match self.shutdown {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => self.settings.timeout,
        }
    }

    /// Delivers the current batch, or spools it while the receiver is unreachable.
    fn deliver(&mut self) {
        let (payload, records) = self.batch.take();
        if records == 0 {
            return;
        }
        // Spooled batches go first: new ones queue behind them to keep the order.
        if self.spool.as_ref().is_some_and(|s| !s.is_empty()) {
            self.spool_batch(&payload, records);
            return;
        }
        loop {
            let timeout = self.attempt_timeout();
            let result = if timeout.is_zero() {
                Err(SendError::Retryable("shutdown deadline reached".into()))
            } else {
                self.sink.send(&payload, timeout)
            };
            match result {
                Ok(()) => {
                    self.counters.exported(records);
                    self.backoff.reset();
                    return;
                }
                Err(SendError::Permanent(reason)) => {
                    self.counters.export_error();
                    self.counters.dropped(records);
                    self.log_repeated(
                        Repeat::Refused,
                        Level::Error,
                        format!("{reason}, {records} records dropped while exporting"),
                    );
                    return;
                }
                Err(SendError::Retryable(reason)) => {
                    self.counters.export_error();
                    if self.spool.is_some() {
                        self.log_repeated(
                            Repeat::DeliveryFailed,
                            Level::Warn,
                            format!("{reason} while exporting, spooling"),
                        );
                        self.spool_batch(&payload, records);
                        return;
                    }
                    if self.shutdown.is_some_and(|d| Instant::now() >= d) {
                        self.counters.dropped(records);
                        self.log(
                            Level::Error,
                            format!("{reason}, {records} records dropped while exporting at exit"),
                        );
                        return;
                    }
                    self.log_repeated(
                        Repeat::DeliveryFailed,
                        Level::Warn,
                        format!("{reason} while exporting, retrying"),
                    );
                    self.wait_before_retry();
                }
            }
        }
    }

    /// Sleeps for the next backoff step, waking early for shutdown or a file reopen.
    fn wait_before_retry(&mut self) {
        let mut delay = self.backoff.next_delay();
        if let Some(deadline) = self.shutdown {
            delay = delay.min(deadline.saturating_duration_since(Instant::now()));
        }
        self.wait(delay);
    }

    /// Sleeps up to `timeout`, or until nginx sends a message (which is then acted on).
    ///
    /// The thread parks rather than block in the channel's receive: that one spins and
    /// yields a few times before it sleeps, and on a core shared with the event loop each of
    /// the thousand wakes a second then cost several more context switches (the exporter's
    /// CPU per record tripled when requests came at a few per poll). The sending side
    /// unparks the thread after each message.
    fn wait(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.control.try_recv() {
                Ok(Control::ReplaceFile(file)) => {
                    if let Sink::File(sink) = &mut self.sink {
                        sink.replace(file);
                    }
                    return;
                }
                Ok(Control::Shutdown) | Err(TryRecvError::Disconnected) => {
                    self.shutdown.get_or_insert(Instant::now() + self.settings.timeout);
                    return;
                }
                Err(TryRecvError::Empty) => {}
            }
            // Parking may end early (an unpark, or spuriously): look again.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::park_timeout(left);
        }
    }

    fn spool_batch(&mut self, payload: &[u8], records: u64) {
        let Some(spool) = &mut self.spool else {
            self.counters.dropped(records);
            return;
        };
        match spool.push(payload, records) {
            Ok(evicted) => {
                self.counters.spooled(records);
                for n in &evicted {
                    self.counters.spool_evicted(*n);
                }
                if !evicted.is_empty() {
                    let n: u64 = evicted.iter().sum();
                    self.log_repeated(
                        Repeat::Spool,
                        Level::Warn,
                        format!("spool is full, {n} oldest spooled records dropped"),
                    );
                }
                self.next_replay.get_or_insert_with(|| Instant::now() + self.backoff.next_delay());
            }
            Err(e) => {
                self.counters.dropped(records);
                self.log_repeated(
                    Repeat::Spool,
                    Level::Error,
                    format!(
                        "spool write failed ({}), {records} records dropped while spooling",
                        os_error(&e)
                    ),
                );
            }
        }
    }

    /// Sends spooled batches, oldest first, until one fails, the spool is empty, or a few
    /// were sent (then the main loop takes new captures before replaying more).
    fn replay(&mut self) {
        self.next_replay = None;
        for _ in 0..REPLAY_BURST {
            if self.shutdown.is_some() {
                // Leave the spool for the next worker rather than hold up the exit.
                return;
            }
            let Some(spool) = &mut self.spool else { return };
            let Some(front) = spool.front() else {
                self.backoff.reset();
                return;
            };
            match front {
                Ok(Replay::Batch { payload, records }) => {
                    match self.sink.send(&payload, self.settings.timeout) {
                        Ok(()) => {
                            self.remove_front();
                            self.counters.replayed(records);
                            self.backoff.reset();
                        }
                        Err(SendError::Permanent(reason)) => {
                            self.counters.export_error();
                            self.remove_front();
                            self.counters.spool_evicted(records);
                            self.log_repeated(
                                Repeat::Refused,
                                Level::Error,
                                format!("{reason}, {records} spooled records dropped"),
                            );
                        }
                        Err(SendError::Retryable(reason)) => {
                            self.counters.export_error();
                            self.log_repeated(
                                Repeat::DeliveryFailed,
                                Level::Warn,
                                format!("{reason} while replaying the spool"),
                            );
                            self.next_replay = Some(Instant::now() + self.backoff.next_delay());
                            return;
                        }
                    }
                }
                Ok(Replay::Corrupt { records, reason }) => {
                    self.remove_front();
                    self.counters.spool_evicted(records);
                    self.log(
                        Level::Error,
                        format!("spooled batch {reason}, {records} records lost"),
                    );
                }
                Err(e) => {
                    self.log_repeated(
                        Repeat::Spool,
                        Level::Error,
                        format!("spool read failed ({}) while replaying", os_error(&e)),
                    );
                    self.next_replay = Some(Instant::now() + self.backoff.next_delay());
                    return;
                }
            }
        }
        // Burst used up with batches left: continue right after the queue had its turn.
        if self.spool.as_ref().is_some_and(|s| !s.is_empty()) {
            self.next_replay = Some(Instant::now());
        }
    }

    fn remove_front(&mut self) {
        if let Some(spool) = &mut self.spool {
            if let Err(e) = spool.pop_front() {
                self.log(Level::Error, format!("spool cleanup failed ({})", os_error(&e)));
            }
        }
    }
}

/// What a drain has popped ahead of the capture it works on, so that it can be prefetched.
///
/// Nothing is popped once the queue was found empty: a capture pushed in between would be
/// held here when the drain ends, and lost (neither exported nor counted as dropped). And
/// nothing is held across a delivery (the caller says how much room the batch has left): a
/// delivery may wait on a slow receiver, and what it holds is neither in the queue nor in a
/// batch.
struct Lookahead<T> {
    /// Worked on after the one `advance` returned.
    current: Option<T>,
    /// Worked on after `current`.
    next: Option<T>,
    /// The queue was found empty.
    dry: bool,
}

impl<T> Lookahead<T> {
    fn new() -> Lookahead<T> {
        Lookahead { current: None, next: None, dry: false }
    }

    /// The next item to work on, after which up to `room` items (at most two) stay popped
    /// ahead of it.
    fn advance(&mut self, queue: &ArrayQueue<T>, room: usize) -> Option<T> {
        let item = match self.current.take() {
            Some(item) => {
                self.current = self.next.take();
                item
            }
            None => self.pop(queue)?,
        };
        if self.current.is_none() && room >= 1 {
            self.current = self.pop(queue);
        }
        if self.current.is_some() && self.next.is_none() && room >= 2 {
            self.next = self.pop(queue);
        }
        Some(item)
    }

    fn pop(&mut self, queue: &ArrayQueue<T>) -> Option<T> {
        if self.dry {
            return None;
        }
        let item = queue.pop();
        self.dry = item.is_none();
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookahead_never_holds_what_came_after_the_queue_ran_dry() {
        let queue = ArrayQueue::new(8);
        // Empty at the start, then an item arrives: it stays in the queue.
        let mut ahead = Lookahead::new();
        assert_eq!(ahead.advance(&queue, 2), None);
        queue.push(1).unwrap();
        assert_eq!(ahead.advance(&queue, 2), None);
        assert_eq!(queue.len(), 1, "left for the next drain");

        // One item, then another arrives while the first is worked on.
        let mut ahead = Lookahead::new();
        assert_eq!(ahead.advance(&queue, 2), Some(1));
        queue.push(2).unwrap();
        assert_eq!(ahead.advance(&queue, 2), None);
        assert_eq!(queue.pop(), Some(2), "not popped after the queue was seen empty");

        // A run of items comes out whole and in order, two ahead.
        for i in 10..15 {
            queue.push(i).unwrap();
        }
        let mut ahead = Lookahead::new();
        let mut seen = vec![ahead.advance(&queue, 2).unwrap()];
        assert_eq!((ahead.current, ahead.next), (Some(11), Some(12)));
        while let Some(i) = ahead.advance(&queue, 2) {
            seen.push(i);
            if i == 12 {
                queue.push(15).unwrap();
            }
        }
        assert_eq!(seen, [10, 11, 12, 13, 14, 15]);
        assert!(queue.is_empty());
    }

    #[test]
    fn lookahead_holds_no_more_than_the_room_it_is_given() {
        let queue = ArrayQueue::new(8);
        for i in 0..6 {
            queue.push(i).unwrap();
        }
        let mut ahead = Lookahead::new();
        // A batch of three: two may be ahead of its first record, one of its second, none
        // of its last (the batch is delivered with nothing held).
        assert_eq!(ahead.advance(&queue, 2), Some(0));
        assert_eq!(ahead.advance(&queue, 1), Some(1));
        assert_eq!(ahead.advance(&queue, 0), Some(2));
        assert_eq!((ahead.current, ahead.next, queue.len()), (None, None, 3));
        // The next batch starts from the queue, in order.
        assert_eq!(ahead.advance(&queue, 2), Some(3));
        assert_eq!((ahead.current, ahead.next), (Some(4), Some(5)));
        assert_eq!(ahead.advance(&queue, 0), Some(4));
        assert_eq!(ahead.advance(&queue, 0), Some(5));
        assert_eq!(ahead.advance(&queue, 2), None);
    }

    #[test]
    fn capture_pool_hands_out_the_most_recent_first_and_stays_bounded() {
        let pool = CapturePool::new();
        let profile = Arc::new(Profile::default());
        let capture = |seq| {
            let mut c = Box::new(Capture::new(profile.clone(), 0));
            c.seq = seq;
            c
        };
        let mut done: Vec<_> = (0..RECYCLED as u64 + 10).map(capture).collect();
        pool.give(&mut done);
        assert!(done.is_empty());
        assert_eq!(pool.stack.lock().len(), RECYCLED, "bounded");
        assert_eq!(pool.take().map(|c| c.seq), Some(RECYCLED as u64 + 9), "last given first");

        let mut done = vec![capture(7)];
        pool.give(&mut done);
        assert_eq!(pool.take().map(|c| c.seq), Some(7));
        // While the exporter thread holds the lock, the request path does not wait.
        let held = pool.stack.lock();
        assert!(pool.take().is_none());
        drop(held);
        assert!(pool.take().is_some());
    }

    #[test]
    fn body_pool_keeps_buffers_within_its_budget() {
        let pool = BodyPool::new();
        let size = 1 << 20;
        let kept = RECYCLED_BODIES_BUDGET / size;
        for _ in 0..kept + 3 {
            pool.give(Vec::with_capacity(size));
        }
        pool.give(Vec::with_capacity(RECYCLED_BODY_BYTES + 1));
        assert_eq!(pool.buffers.len(), kept, "the budget bounds what is kept");
        assert_eq!(pool.bytes.load(Ordering::Relaxed), kept * size);

        let buffer = pool.take(10);
        assert!(buffer.is_empty() && buffer.capacity() >= size, "a pooled buffer, emptied");
        assert_eq!(pool.bytes.load(Ordering::Relaxed), (kept - 1) * size);
        pool.give(buffer);
        assert_eq!(pool.buffers.len(), kept);
    }

    #[test]
    fn urls_are_checked_like_the_client_would() {
        for good in [
            "http://127.0.0.1:8707/v1/records",
            "https://collector.example.com/v1/records?x=1",
            "http://[::1]:8123/?query=INSERT%20INTO%20t%20FORMAT%20JSONEachRow",
            "http://localhost",
        ] {
            assert_eq!(validate_url(good), Ok(()), "{good}");
        }
        for bad in [
            "http://",
            "http://127.0.0.1:port/v1",
            "http://[::1",
            "https://a b",
            "ftp://example.com/",
            "http://host:/x",
            "http://host:99999/x",
            "/v1/records",
        ] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
    }
}
