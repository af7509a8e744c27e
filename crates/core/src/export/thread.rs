//! The exporter thread: it drains the queue, turns captures into records, collects them into
//! batches and delivers them, retrying, spooling and replaying as the receiver allows.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use crossbeam_queue::ArrayQueue;

use super::backoff::Backoff;
use super::file::FileSink;
use super::handle::Control;
use super::http::HttpSink;
use super::lookahead::Lookahead;
use super::pools::{BodyPool, CapturePool, RECYCLE_EVERY};
use super::spool::{Replay, Spool};
use super::{os_error, CpuList, Destination, ExportSettings, Level, LogLine, SendError};
use crate::assemble::Assembler;
use crate::capture::Capture;
use crate::counters::WorkerCounters;

/// What the thread shares with the request path's handle.
pub(super) struct Shared {
    pub queue: Arc<ArrayQueue<Box<Capture>>>,
    pub recycled: Arc<CapturePool>,
    pub bodies: Arc<BodyPool>,
    pub in_flight: Arc<AtomicUsize>,
    pub control: Receiver<Control>,
    pub log: Sender<LogLine>,
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
/// Records turned into a batch before the thread offers its core back (see [`drain`]).
///
/// [`drain`]: ExportThread::drain
const BURST: usize = 64;

/// The longest the thread runs before a task that woke up on its core gets it, for kernels
/// that take a slice per task (Linux 6.12 and later; older ones ignore it).
const SLICE: Duration = Duration::from_micros(100);

/// Marks the calling thread as batch work with a short slice: it keeps its fair share of the
/// CPU, so it keeps up under full load and records are not dropped while the queue could
/// hold them, but it does not preempt the event loop when it wakes, and when the event loop
/// wakes while it runs, it gives the core up within `SLICE` instead of the scheduler's
/// default slice (milliseconds, which showed as milliseconds of added latency at p99).
///
/// `SCHED_IDLE` was measured too: it gave the event loop the core at once, but at full load
/// the thread fell behind, the queue filled and records were dropped, and the captures that
/// were not recycled in time cost the event loop more than the thread had.
fn batch_priority() {
    #[cfg(target_os = "linux")]
    {
        /// `struct sched_attr` of sched_setattr(2), its first version (56 bytes).
        #[repr(C)]
        struct SchedAttr {
            size: u32,
            policy: u32,
            flags: u64,
            nice: i32,
            priority: u32,
            runtime: u64,
            deadline: u64,
            period: u64,
            util_min: u32,
            util_max: u32,
        }
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            policy: libc::SCHED_BATCH as u32,
            flags: 0,
            nice: 0,
            priority: 0,
            runtime: SLICE.as_nanos() as u64,
            deadline: 0,
            period: 0,
            util_min: 0,
            util_max: 0,
        };
        // SAFETY: pid 0 is the calling thread; attr is a valid sched_attr of the size it
        // states, read by the kernel during the call only.
        let set = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) };
        if set != 0 {
            // A kernel without sched_setattr (before 3.14), or a sandbox that filters it.
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: pid 0 is the calling thread; SCHED_BATCH takes priority 0.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        }
    }
}

/// Moves the calling thread to `cpus` (`cpu=`): an exporter on a core the workers do not use
/// takes no time from their event loops.
fn run_on(cpus: &CpuList) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: cpu_set_t is a plain bit mask, valid when zeroed.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &cpu in cpus.cpus() {
            // SAFETY: CpuList keeps every number below CPU_SETSIZE, the mask's size.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        // SAFETY: pid 0 is the calling thread; set is a valid mask of the size passed.
        let set = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
        if set != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cpus;
    Ok(())
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
struct Pending {
    payload: Vec<u8>,
    records: u64,
    started: Option<Instant>,
}

impl Pending {
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

/// The state of the exporter thread.
pub(super) struct ExportThread {
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
    pending: Pending,
    backoff: Backoff,
    /// While the spool holds batches: when to try the oldest one again.
    next_replay: Option<Instant>,
    next_adoption: Instant,
    last_logged: Vec<(Repeat, Instant)>,
    /// Set once shutdown has begun: nothing may wait past it.
    shutdown: Option<Instant>,
    settings: ExportSettings,
}

impl ExportThread {
    /// Starts the thread.
    pub(super) fn spawn(
        shared: Shared,
        settings: ExportSettings,
        destination: Destination,
        assembler: Assembler,
        counters: WorkerCounters<'static>,
    ) -> std::io::Result<JoinHandle<()>> {
        let sink = match destination {
            Destination::File(file) => Sink::File(FileSink::new(file)),
            Destination::Http { url, headers } => Sink::Http(HttpSink::new(url, headers)),
        };
        let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let seed = u64::from(assembler.pid) ^ clock.unwrap_or_default().as_nanos() as u64;
        let Shared { queue, recycled, bodies, in_flight, control, log } = shared;
        let thread = ExportThread {
            queue,
            recycled,
            done: Vec::with_capacity(RECYCLE_EVERY),
            bodies,
            control,
            log,
            counters,
            in_flight,
            assembler,
            sink,
            spool: None,
            pending: Pending::default(),
            backoff: Backoff::new(seed),
            next_replay: None,
            next_adoption: Instant::now(),
            last_logged: Vec::new(),
            shutdown: None,
            settings,
        };
        std::thread::Builder::new().name("api_sessions exporter".into()).spawn(move || thread.run())
    }

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
        if let Some(cpus) = &self.settings.cpus {
            if let Err(e) = run_on(cpus) {
                let message = format!("cannot move the exporter to cpu={cpus} ({})", os_error(&e));
                self.log(Level::Warn, message);
            }
        }
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
        if let Some(started) = self.pending.started {
            wake = wake.min(started + self.settings.flush);
        }
        if let Some(at) = self.next_replay {
            wake = wake.min(at);
        }
        wake
    }

    fn batch_due(&self) -> bool {
        self.pending.records as usize >= self.settings.batch
            || self.pending.started.is_some_and(|s| s.elapsed() >= self.settings.flush)
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
            let room = self.settings.batch.saturating_sub(self.pending.records as usize + 1);
            let Some(capture) = ahead.advance(&self.queue, room) else { break };
            if let Some(next) = &ahead.next {
                next.prefetch(false);
            }
            if let Some(current) = &ahead.current {
                current.prefetch(true);
            }
            self.take(capture);
            taken += 1;
            if taken % BURST == 0 {
                // A backlog is worked through in short turns: when the event loop has
                // requests (it shares the core in the usual one-worker-per-core setup), it
                // runs between two of them rather than after the whole backlog.
                std::thread::yield_now();
            }
            if self.pending.records as usize >= self.settings.batch {
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
        let payload = &mut self.pending.payload;
        let mark = payload.len();
        let assembler = &mut self.assembler;
        let built = catch_unwind(AssertUnwindSafe(|| assembler.write_record(&capture, payload)));
        if built.is_ok() {
            self.pending.records += 1;
            self.pending.started.get_or_insert_with(Instant::now);
        } else {
            self.pending.payload.truncate(mark);
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
        let (payload, records) = self.pending.take();
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The thread's policy and slice as the kernel reports them (sched_getattr(2)).
    fn own_policy_and_slice() -> (u32, u64) {
        let mut attr = [0u8; 56];
        // SAFETY: pid 0 is the calling thread; attr has room for the 56 bytes asked for.
        let got = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, attr.as_mut_ptr(), 56, 0) };
        assert_eq!(got, 0, "sched_getattr: {}", std::io::Error::last_os_error());
        let policy = u32::from_ne_bytes(attr[4..8].try_into().unwrap());
        let slice = u64::from_ne_bytes(attr[24..32].try_into().unwrap());
        (policy, slice)
    }

    #[test]
    fn the_exporter_runs_as_batch_work_with_a_short_slice() {
        std::thread::spawn(|| {
            let (_, default_slice) = own_policy_and_slice();
            batch_priority();
            let (policy, slice) = own_policy_and_slice();
            assert_eq!(policy, libc::SCHED_BATCH as u32);
            // Kernels with per-task slices report the one set; older ones what they had.
            assert!(
                slice == SLICE.as_nanos() as u64 || slice == default_slice,
                "slice {slice} ns, default {default_slice} ns"
            );
        })
        .join()
        .unwrap();
    }

    /// The calling thread's CPUs (sched_getaffinity(2)).
    fn own_cpus() -> Vec<usize> {
        // SAFETY: cpu_set_t is a plain bit mask, valid when zeroed.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 is the calling thread; set has the size passed.
        let got = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
        assert_eq!(got, 0, "sched_getaffinity: {}", std::io::Error::last_os_error());
        // SAFETY: CPU_ISSET reads the mask just filled in, below its size.
        (0..CpuList::LIMIT).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect()
    }

    #[test]
    fn cpu_moves_the_exporter_and_a_cpu_it_cannot_have_is_an_error() {
        std::thread::spawn(|| {
            // The last CPU the tests may use: where they run, it need not be CPU 0.
            let cpu = *own_cpus().last().unwrap();
            run_on(&CpuList::parse(&cpu.to_string()).unwrap()).unwrap();
            assert_eq!(own_cpus(), [cpu]);
            // No machine that runs these tests has a CPU 1023.
            let err = run_on(&CpuList::parse("1023").unwrap()).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        })
        .join()
        .unwrap();
    }
}
