//! The request path's side of the exporter: it takes recycled captures and body buffers, hands
//! filled captures to the queue without waiting, and tells the thread to reopen its file or to
//! stop.

use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};
use crossbeam_queue::ArrayQueue;

use super::pools::{BodyPool, CapturePool};
use super::thread::{ExportThread, Shared};
use super::{Destination, ExportSettings, LogLine};
use crate::assemble::Assembler;
use crate::capture::Capture;
use crate::counters::WorkerCounters;
use crate::profile::Profile;

/// A capture did not fit in the queue (it is handed back); it has been counted as dropped.
#[derive(Debug)]
pub struct QueueFull(pub Box<Capture>);

/// What nginx tells the thread, besides handing it captures.
pub(super) enum Control {
    ReplaceFile(File),
    Shutdown,
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
        let queue_memory = settings.queue_memory;
        let shared = Shared {
            queue: queue.clone(),
            recycled: recycled.clone(),
            bodies: bodies.clone(),
            in_flight: in_flight.clone(),
            control,
            log: log_tx,
        };
        let thread = ExportThread::spawn(shared, settings, destination, assembler, counters)?;
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
