//! The exporter of one worker process: started in `init_process`, stopped in `exit_process`.
//!
//! Besides owning the exporter thread's handle, the worker keeps the per-process record
//! sequence, rate-limits the "queue is full" notice, relays the thread's messages to the
//! error log and hands it the reopened file after `nginx -s reopen`. For that it runs a
//! one-second timer marked cancelable, so it never holds up a graceful shutdown.

use core::cell::{Cell, RefCell};
use core::ptr::NonNull;
use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use api_sessions_core::assemble::{Assembler, SessionSplit};
use api_sessions_core::capture::Capture;
use api_sessions_core::counters::WorkerCounters;
use api_sessions_core::denylist::fetch::Fetcher;
use api_sessions_core::denylist::KeyHashCache;
use api_sessions_core::export::{os_error, Destination, Exporter, Level};
use nginx_sys::{ngx_cycle_t, ngx_event_t, ngx_log_t, ngx_open_file_t, time_t};

use crate::conf::export::Target;
use crate::conf::MainConf;
use crate::log::{Level as NgxLevel, Log};

/// Set by nginx's reopen of the export file (through its `flush` hook, called right before
/// the reopen); the worker then passes the new descriptor to the exporter.
static FILE_REOPENED: AtomicBool = AtomicBool::new(false);

/// `flush` hook of the export file's `ngx_open_file_t`.
pub unsafe extern "C" fn file_reopened(_file: *mut ngx_open_file_t, _log: *mut ngx_log_t) {
    FILE_REOPENED.store(true, Ordering::Relaxed);
}

const TICK_MS: nginx_sys::ngx_msec_t = 1000;

/// The worker's one-second tick. nginx links the event into its timer tree and changes it
/// while it is armed, so no Rust reference to it is ever held: it is reached through its
/// pointer alone, on the worker's thread.
struct Timer(NonNull<ngx_event_t>);

impl Timer {
    fn new(log: *mut ngx_log_t) -> Timer {
        // SAFETY: zeroed is the initial state of an nginx event.
        let mut ev: Box<ngx_event_t> = Box::new(unsafe { core::mem::zeroed() });
        ev.handler = Some(tick);
        ev.log = log;
        ev.set_cancelable(1);
        Timer(NonNull::from(Box::leak(ev)))
    }

    fn arm(&self) {
        // SAFETY: the event lives until the timer is dropped, which disarms it first.
        unsafe { nginx_sys::ngx_add_timer(self.0.as_ptr(), TICK_MS) };
    }

    fn disarm(&self) {
        // SAFETY: as above; nginx changes the event only on this thread, not during this call.
        if unsafe { self.0.as_ref() }.timer_set() != 0 {
            // SAFETY: an armed timer of this worker.
            unsafe { nginx_sys::ngx_del_timer(self.0.as_ptr()) };
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.disarm();
        // SAFETY: made by Box::leak in new(), and out of nginx's timer tree now.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

pub struct Worker {
    exporter: Exporter,
    counters: WorkerCounters<'static>,
    seq: Cell<u64>,
    dropped_unreported: Cell<u64>,
    last_drop_notice: Cell<time_t>,
    file: Option<NonNull<ngx_open_file_t>>,
    timer: Timer,
    shutdown_deadline: std::time::Duration,
    /// Request ids for requests nothing else asked one for.
    rng: RefCell<fastrand::Rng>,
    /// The denylist's fetch thread, with `api_sessions_denylist`.
    denylist: Option<Fetcher>,
    /// Key hashes of the access phase's lookups.
    key_hashes: RefCell<KeyHashCache>,
}

fn dup_file(fd: i32) -> std::io::Result<File> {
    // SAFETY: duplicating a descriptor nginx keeps open; we own the duplicate.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: dup is a fresh descriptor we own.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(dup) }))
}

fn os_seed() -> u64 {
    let mut seed = [0u8; 8];
    // SAFETY: getrandom fills the buffer it is given.
    let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if n != seed.len() as isize {
        // Without getrandom(2): the clock and the pid still differ between workers.
        let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let nanos = clock.unwrap_or_default().as_nanos() as u64;
        return nanos ^ (u64::from(std::process::id()) << 32);
    }
    u64::from_le_bytes(seed)
}

impl Worker {
    pub fn start(cycle: &mut ngx_cycle_t, amcf: &mut MainConf) -> Result<Worker, String> {
        let board = amcf.counters.board.as_ref().ok_or("counters zone is not available")?;
        // SAFETY: the board lives in the main conf, which lives until the worker exits; the
        // exporter thread is joined in exit_process, before the cycle is destroyed.
        let board: &'static _ = unsafe { &*core::ptr::from_ref(board) };
        let pid = std::process::id();
        let counters = board.attach_worker(pid).ok_or("no free slot in the counters zone")?;

        let split = match &amcf.zone {
            Some(zone) => SessionSplit::Zone {
                table: zone.table.clone().ok_or("session zone is not available")?,
                policy: zone.policy,
            },
            None => SessionSplit::Daily,
        };
        let node = amcf.node.clone().unwrap_or_default();
        let assembler = Assembler::new(amcf.secret().clone(), node, pid, split);

        let export = amcf.export.as_ref().ok_or("export is not configured")?;
        let mut file = None;
        let destination = match &export.target {
            Target::File(f) => {
                let f = NonNull::new(*f).ok_or("export file is not open")?;
                // SAFETY: an entry of cycle->open_files, valid for the cycle.
                let fd = unsafe { f.as_ref().fd };
                file = Some(f);
                Destination::File(
                    dup_file(fd).map_err(|e| format!("dup() failed ({})", os_error(&e)))?,
                )
            }
            Target::Url { url, headers } => {
                Destination::Http { url: url.clone(), headers: headers.clone() }
            }
            Target::FilePath(_) => return Err("export file is not open".into()),
        };
        let settings = export.settings.clone();
        let shutdown_deadline = settings.timeout;
        let exporter = Exporter::start(settings, destination, assembler, counters)
            .map_err(|e| format!("cannot start exporter thread ({})", os_error(&e)))?;

        let denylist = match &amcf.denylist {
            Some(zone) => {
                let list = zone.list.clone().ok_or("denylist zone is not available")?;
                let fetcher =
                    Fetcher::start(list, zone.generation, zone.source.clone(), zone.interval)
                        .map_err(|e| format!("cannot start denylist thread ({})", os_error(&e)))?;
                Some(fetcher)
            }
            None => None,
        };

        let timer = Timer::new(cycle.log);
        let worker = Worker {
            exporter,
            counters,
            seq: Cell::new(0),
            dropped_unreported: Cell::new(0),
            last_drop_notice: Cell::new(0),
            file,
            timer,
            shutdown_deadline,
            // Seeded from the OS, so no two workers or restarts share a sequence.
            rng: RefCell::new(fastrand::Rng::with_seed(os_seed())),
            denylist,
            key_hashes: RefCell::default(),
        };
        worker.timer.arm();
        Ok(worker)
    }

    /// The next record sequence number of this worker: from 1, without gaps, so that a gap
    /// at the receiver is a lost record.
    fn next_seq(&self) -> u64 {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        seq
    }

    /// Hands a capture to the exporter; when the queue is full, logs a notice at most once a
    /// second with the number of records dropped since the last one.
    pub fn submit(&self, log: Log, mut capture: Box<Capture>) {
        self.pick_up_reopen();
        capture.seq = self.next_seq();
        if self.exporter.submit(capture).is_ok() {
            return;
        }
        let dropped = self.dropped_unreported.get() + 1;
        let now = nginx_sys::ngx_time();
        if now == self.last_drop_notice.get() {
            self.dropped_unreported.set(dropped);
            return;
        }
        self.last_drop_notice.set(now);
        self.dropped_unreported.set(0);
        log!(log, Notice, "export queue is full, {dropped} records dropped");
    }

    /// A record that could not be captured: its sequence number is skipped and it is counted
    /// as dropped.
    pub fn lost(&self) {
        self.next_seq();
        self.counters.captured_but_dropped();
    }

    /// After `nginx -s reopen`, nginx has replaced the export file's descriptor.
    fn pick_up_reopen(&self) {
        if !FILE_REOPENED.load(Ordering::Relaxed) {
            return;
        }
        FILE_REOPENED.store(false, Ordering::Relaxed);
        let Some(file) = self.file else { return };
        // SAFETY: an entry of cycle->open_files, valid for the cycle.
        let fd = unsafe { file.as_ref().fd };
        match dup_file(fd) {
            Ok(f) => self.exporter.replace_file(f),
            Err(e) => log!(
                Log::cycle(),
                Error,
                "dup() failed ({}) while reopening the export file",
                os_error(&e)
            ),
        }
    }

    /// Copies the exporter's and the denylist thread's messages into the error log.
    fn relay_log(&self, log: Log) {
        let write = |line: api_sessions_core::export::LogLine| {
            let level = match line.level {
                Level::Error => NgxLevel::Error,
                Level::Warn => NgxLevel::Warn,
                Level::Notice => NgxLevel::Notice,
                Level::Info => NgxLevel::Info,
            };
            log.write(level, format_args!("{}", line.message));
        };
        self.exporter.drain_log(write);
        if let Some(denylist) = &self.denylist {
            denylist.drain_log(write);
        }
    }

    /// An empty capture for a request of a location with `profile`.
    pub fn capture(
        &self,
        profile: &std::sync::Arc<api_sessions_core::profile::Profile>,
    ) -> Box<Capture> {
        self.exporter.capture(profile)
    }

    /// A buffer for a body of up to `capacity` bytes, recycled when possible.
    pub fn body_buffer(&self, capacity: usize) -> Vec<u8> {
        self.exporter.body_buffer(capacity)
    }

    pub fn key_hashes(&self) -> std::cell::RefMut<'_, KeyHashCache> {
        self.key_hashes.borrow_mut()
    }

    pub fn rng(&self) -> std::cell::RefMut<'_, fastrand::Rng> {
        self.rng.borrow_mut()
    }

    /// Worker exit: the exporter delivers what it holds within the export timeout.
    pub fn stop(mut self) {
        let log = Log::cycle();
        self.timer.disarm();
        if let Some(denylist) = self.denylist.take() {
            denylist.stop();
        }
        self.pick_up_reopen();
        self.exporter.shutdown(self.shutdown_deadline);
        self.relay_log(log);
        self.counters.detach();
    }
}

extern "C" fn tick(ev: *mut ngx_event_t) {
    crate::util::guard((), || {
        use ngx::http::HttpModuleMainConf;
        // SAFETY: ngx_cycle is valid in a worker.
        let cycle = unsafe { &*nginx_sys::ngx_cycle };
        let Some(worker) = crate::Module::main_conf(cycle).and_then(|m| m.worker.as_ref()) else {
            return;
        };
        // SAFETY: the event passed is the worker's timer.
        let log = Log::event(unsafe { &*ev });
        worker.pick_up_reopen();
        worker.relay_log(log);
        // SAFETY: reading nginx's process-wide flag.
        if unsafe { nginx_sys::ngx_exiting } == 0 {
            worker.timer.arm();
        }
    })
}
