//! Captures and body buffers the exporter thread is done with, handed back to the request path
//! so that in steady state nothing is allocated on one thread and freed on the other.

use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_queue::ArrayQueue;

use crate::capture::Capture;

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
pub(super) struct BodyPool {
    buffers: ArrayQueue<Vec<u8>>,
    /// Capacity of the pooled buffers, kept within `RECYCLED_BODIES_BUDGET`.
    bytes: AtomicUsize,
}

impl BodyPool {
    pub(super) fn new() -> BodyPool {
        BodyPool { buffers: ArrayQueue::new(RECYCLED_BODIES), bytes: AtomicUsize::new(0) }
    }

    /// A pooled buffer with room for `capacity` bytes, or a new one.
    pub(super) fn take(&self, capacity: usize) -> Vec<u8> {
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
    pub(super) fn give(&self, mut buffer: Vec<u8>) {
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
pub(super) struct CapturePool {
    // Boxed: a capture moves between the queue, the pool and the request path by pointer.
    #[allow(clippy::vec_box)]
    stack: parking_lot::Mutex<Vec<Box<Capture>>>,
}

/// Captures the exporter thread hands back at a time while it drains.
pub(super) const RECYCLE_EVERY: usize = 64;

impl CapturePool {
    pub(super) fn new() -> CapturePool {
        CapturePool { stack: parking_lot::Mutex::new(Vec::with_capacity(RECYCLED)) }
    }

    /// The request path's side: never waits. When the exporter thread holds the lock (a few
    /// nanoseconds), a new capture is made instead.
    ///
    /// Prefetches for the requests to come, two deep (see [`Capture::prefetch`]): the buffers
    /// of the capture the next request takes, whose struct this call's predecessor
    /// prefetched, and the struct of the one after.
    pub(super) fn take(&self) -> Option<Box<Capture>> {
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
    pub(super) fn give(&self, done: &mut Vec<Box<Capture>>) {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::profile::Profile;

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
}
