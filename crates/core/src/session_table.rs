//! The session table of `api_sessions_zone`: when each key's current session started.
//!
//! It lives in shared memory so every worker (and its exporter thread) splits sessions the
//! same way: a key value starts a new session after an idle gap or once the session reached
//! its maximum duration. The table has a fixed number of slots carved out of the zone when it
//! is created; when all are taken the least recently used key is evicted. Every operation is
//! O(1) under a short lock and never allocates, so it is safe on the request path and in the
//! exporter threads alike. Only key hashes are stored, never key values.

use core::mem::{align_of, size_of};
use core::sync::atomic::AtomicU32;

use crate::hash::ZoneKey;
use crate::shm_lock;
use crate::time::Millis;

const MAGIC: u64 = u64::from_be_bytes(*b"APISESS1");
const NIL: u32 = u32::MAX;

/// Idle gap and maximum duration of a session, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitPolicy {
    pub idle_ms: i64,
    pub max_ms: i64,
}

impl Default for SplitPolicy {
    /// `idle=30m max=24h`.
    fn default() -> Self {
        SplitPolicy { idle_ms: 30 * 60_000, max_ms: 24 * 3_600_000 }
    }
}

impl SplitPolicy {
    fn continues(&self, entry: &Entry, ts: Millis) -> bool {
        ts.0 - entry.last <= self.idle_ms && ts.0 - entry.start < self.max_ms
    }
}

/// Occupancy, for `api_sessions_status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    pub entries: u64,
    pub evictions: u64,
    pub capacity: u64,
}

#[repr(C)]
struct Header {
    magic: u64,
    lock: AtomicU32,
    /// Set while a mutation is in progress: if the lock is recovered from a dead owner with
    /// this set, the lists may be broken and the table is cleared.
    dirty: u32,
    capacity: u32,
    buckets: u32,
    len: u32,
    /// Most recently used entry.
    lru_head: u32,
    /// Least recently used entry, the next to evict.
    lru_tail: u32,
    free_head: u32,
    evictions: u64,
}

#[repr(C)]
struct Entry {
    key: [u8; 16],
    start: i64,
    last: i64,
    bucket_next: u32,
    lru_prev: u32,
    lru_next: u32,
    _reserved: u32,
}

/// A view of a session table in a shared memory region; clones are further views of the
/// same table.
#[derive(Clone)]
pub struct SessionTable {
    header: *mut Header,
    buckets: *mut u32,
    entries: *mut Entry,
}

// SAFETY: all access to the region goes through the process-shared lock in the header.
unsafe impl Send for SessionTable {}
// SAFETY: as above.
unsafe impl Sync for SessionTable {}

impl SessionTable {
    /// Bytes one key costs, table overhead included.
    pub const BYTES_PER_ENTRY: usize = size_of::<Entry>() + size_of::<u32>();

    /// Alignment the region must have.
    pub const ALIGN: usize = align_of::<Entry>();

    /// How many keys a region of `len` bytes holds.
    pub fn capacity_for(len: usize) -> usize {
        let usable = len.saturating_sub(size_of::<Header>() + align_of::<Entry>());
        (usable / Self::BYTES_PER_ENTRY).min(NIL as usize - 1)
    }

    /// Formats a fresh, empty table in `region`.
    ///
    /// Returns `None` when the region is too small for even a few entries.
    ///
    /// # Safety
    ///
    /// `region` must be valid for reads and writes of `len` bytes, aligned to [`Self::ALIGN`],
    /// not accessed by anything else during this call, and outlive every view of the table.
    pub unsafe fn init(region: *mut u8, len: usize) -> Option<SessionTable> {
        let capacity = Self::capacity_for(len);
        if capacity < 8 || region.align_offset(Self::ALIGN) != 0 {
            return None;
        }
        // SAFETY: the caller guarantees the region; the layout fits by capacity_for().
        let table = unsafe { Self::layout(region, capacity as u32, capacity as u32) };
        // SAFETY: exclusive access during init.
        unsafe {
            table.header.write(Header {
                magic: MAGIC,
                lock: AtomicU32::new(0),
                dirty: 0,
                capacity: capacity as u32,
                buckets: capacity as u32,
                len: 0,
                lru_head: NIL,
                lru_tail: NIL,
                free_head: NIL,
                evictions: 0,
            });
            table.clear();
        }
        Some(table)
    }

    /// Attaches to a table formatted by [`Self::init`] (e.g. the previous cycle's, on reload).
    ///
    /// # Safety
    ///
    /// `region` must be the start of a region on which `init` succeeded, still mapped.
    pub unsafe fn attach(region: *mut u8) -> Option<SessionTable> {
        let header = region.cast::<Header>();
        // SAFETY: per the contract the header was written by init.
        let (magic, capacity, buckets) =
            unsafe { ((*header).magic, (*header).capacity, (*header).buckets) };
        if magic != MAGIC {
            return None;
        }
        // SAFETY: same layout as init computed.
        Some(unsafe { Self::layout(region, capacity, buckets) })
    }

    /// Where the parts of a table with `capacity` entries and `buckets` buckets are.
    ///
    /// # Safety
    ///
    /// `region` must be valid for the size [`Self::capacity_for`] gives for `capacity`.
    unsafe fn layout(region: *mut u8, capacity: u32, buckets: u32) -> SessionTable {
        let header = region.cast::<Header>();
        // SAFETY: within the region per capacity_for().
        let buckets_ptr = unsafe { region.add(size_of::<Header>()) }.cast::<u32>();
        let after_buckets = unsafe { buckets_ptr.add(buckets as usize) }.cast::<u8>();
        let pad = after_buckets.align_offset(align_of::<Entry>());
        let entries = unsafe { after_buckets.add(pad) }.cast::<Entry>();
        debug_assert!(capacity <= buckets);
        SessionTable { header, buckets: buckets_ptr, entries }
    }

    /// Records a request of `key` at `ts` and returns the start of the session it belongs to.
    pub fn touch(&self, key: &ZoneKey, ts: Millis, policy: SplitPolicy) -> Millis {
        let inner = self.lock();
        inner.set_dirty(true);
        let start = match inner.find(key) {
            Some(i) => {
                let entry = inner.entry(i);
                if !policy.continues(entry, ts) {
                    entry.start = ts.0;
                    entry.last = ts.0;
                } else if ts.0 > entry.last {
                    // Records from several workers arrive slightly out of order; the session
                    // only ever extends.
                    entry.last = ts.0;
                }
                let start = entry.start;
                inner.promote(i);
                start
            }
            None => {
                inner.insert(key, ts.0);
                ts.0
            }
        };
        inner.set_dirty(false);
        Millis(start)
    }

    /// The start of the session a request of `key` at `ts` would belong to, without recording
    /// it (for `$api_session_id`, evaluated before the request is logged).
    pub fn peek(&self, key: &ZoneKey, ts: Millis, policy: SplitPolicy) -> Millis {
        let inner = self.lock();
        match inner.find(key) {
            Some(i) if policy.continues(inner.entry(i), ts) => Millis(inner.entry(i).start),
            _ => ts,
        }
    }

    pub fn stats(&self) -> TableStats {
        let inner = self.lock();
        let h = inner.header();
        TableStats {
            entries: u64::from(h.len),
            evictions: h.evictions,
            capacity: u64::from(h.capacity),
        }
    }

    fn lock(&self) -> Locked<'_> {
        // SAFETY: the header was initialised by init(); the lock word is atomic.
        let word = unsafe { &(*self.header).lock };
        let guard = shm_lock::lock(word);
        let recovered = guard.recovered;
        let locked = Locked { table: self, _guard: guard };
        if recovered && locked.header_ref().dirty != 0 {
            // SAFETY: the lock is held.
            unsafe { self.clear() };
        }
        locked
    }

    /// Empties the table.
    ///
    /// # Safety
    ///
    /// The caller holds the lock or has exclusive access.
    unsafe fn clear(&self) {
        // SAFETY: exclusive access per the contract; indexes are within the layout.
        unsafe {
            let h = &mut *self.header;
            for b in 0..h.buckets as usize {
                *self.buckets.add(b) = NIL;
            }
            for i in 0..h.capacity {
                let e = &mut *self.entries.add(i as usize);
                e.bucket_next = if i + 1 < h.capacity { i + 1 } else { NIL };
                e.lru_prev = NIL;
                e.lru_next = NIL;
            }
            h.free_head = 0;
            h.lru_head = NIL;
            h.lru_tail = NIL;
            h.len = 0;
            h.dirty = 0;
        }
    }
}

/// The table with its lock held.
struct Locked<'a> {
    table: &'a SessionTable,
    _guard: shm_lock::ShmGuard<'a>,
}

impl Locked<'_> {
    fn header_ref(&self) -> &Header {
        // SAFETY: the lock is held.
        unsafe { &*self.table.header }
    }

    #[allow(clippy::mut_from_ref)]
    fn header(&self) -> &mut Header {
        // SAFETY: the lock is held and no other reference to the header is alive.
        unsafe { &mut *self.table.header }
    }

    #[allow(clippy::mut_from_ref)]
    fn entry(&self, i: u32) -> &mut Entry {
        debug_assert!(i < self.header_ref().capacity);
        // SAFETY: the lock is held; i < capacity.
        unsafe { &mut *self.table.entries.add(i as usize) }
    }

    #[allow(clippy::mut_from_ref)]
    fn bucket(&self, key: &ZoneKey) -> &mut u32 {
        // Key hashes are HMAC output, uniformly distributed.
        let h = u64::from_le_bytes(key.0[..8].try_into().expect("8 bytes"));
        let b = (h % u64::from(self.header_ref().buckets)) as usize;
        // SAFETY: the lock is held; b < buckets.
        unsafe { &mut *self.table.buckets.add(b) }
    }

    fn set_dirty(&self, dirty: bool) {
        self.header().dirty = u32::from(dirty);
    }

    fn find(&self, key: &ZoneKey) -> Option<u32> {
        let mut i = *self.bucket(key);
        // Bounded walk: even a corrupted chain cannot loop forever.
        for _ in 0..self.header_ref().capacity {
            if i == NIL {
                return None;
            }
            let e = self.entry(i);
            if e.key == key.0 {
                return Some(i);
            }
            i = e.bucket_next;
        }
        None
    }

    fn insert(&self, key: &ZoneKey, ts: i64) {
        let h = self.header();
        let i = if h.free_head != NIL {
            let i = h.free_head;
            h.free_head = self.entry(i).bucket_next;
            h.len += 1;
            i
        } else {
            let victim = h.lru_tail;
            self.unlink_bucket(victim);
            self.unlink_lru(victim);
            h.evictions += 1;
            victim
        };

        let head = self.bucket(key);
        let e = self.entry(i);
        e.key = key.0;
        e.start = ts;
        e.last = ts;
        e.bucket_next = *head;
        *head = i;
        self.push_front(i);
    }

    fn promote(&self, i: u32) {
        if self.header_ref().lru_head != i {
            self.unlink_lru(i);
            self.push_front(i);
        }
    }

    fn push_front(&self, i: u32) {
        let h = self.header();
        let old = h.lru_head;
        let e = self.entry(i);
        e.lru_prev = NIL;
        e.lru_next = old;
        if old != NIL {
            self.entry(old).lru_prev = i;
        } else {
            h.lru_tail = i;
        }
        h.lru_head = i;
    }

    fn unlink_lru(&self, i: u32) {
        let h = self.header();
        let (prev, next) = {
            let e = self.entry(i);
            (e.lru_prev, e.lru_next)
        };
        if prev != NIL {
            self.entry(prev).lru_next = next;
        } else {
            h.lru_head = next;
        }
        if next != NIL {
            self.entry(next).lru_prev = prev;
        } else {
            h.lru_tail = prev;
        }
    }

    fn unlink_bucket(&self, i: u32) {
        let key = ZoneKey(self.entry(i).key);
        let mut link: *mut u32 = self.bucket(&key);
        for _ in 0..self.header_ref().capacity {
            // SAFETY: link points at a bucket head or an entry's bucket_next, under the lock.
            let cur = unsafe { *link };
            if cur == NIL {
                return;
            }
            if cur == i {
                // SAFETY: as above.
                unsafe { *link = self.entry(i).bucket_next };
                return;
            }
            link = &mut self.entry(cur).bucket_next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    struct Region(Vec<u64>);

    impl Region {
        fn new(bytes: usize) -> Region {
            Region(vec![0u64; bytes.div_ceil(8)])
        }
        fn table(&mut self) -> SessionTable {
            let len = self.0.len() * 8;
            // SAFETY: the Vec outlives the table in each test and is 8-aligned.
            unsafe { SessionTable::init(self.0.as_mut_ptr().cast(), len) }.unwrap()
        }
    }

    fn key(n: u32) -> ZoneKey {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&n.to_le_bytes());
        k[8..12].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_le_bytes());
        ZoneKey(k)
    }

    fn policy() -> SplitPolicy {
        SplitPolicy { idle_ms: 30 * MIN, max_ms: 24 * 60 * MIN }
    }

    #[test]
    fn idle_gap_starts_a_new_session() {
        let mut region = Region::new(64 * 1024);
        let t = region.table();
        let k = key(1);
        assert_eq!(t.touch(&k, Millis(0), policy()), Millis(0));
        assert_eq!(t.touch(&k, Millis(29 * MIN), policy()), Millis(0));
        // 30 minutes after the last request is still within the gap.
        assert_eq!(t.touch(&k, Millis(59 * MIN), policy()), Millis(0));
        assert_eq!(t.touch(&k, Millis(89 * MIN + 1), policy()), Millis(89 * MIN + 1));
        assert_eq!(t.stats().entries, 1);
    }

    #[test]
    fn maximum_duration_caps_a_busy_session() {
        let mut region = Region::new(64 * 1024);
        let t = region.table();
        let k = key(7);
        let p = SplitPolicy { idle_ms: 10 * MIN, max_ms: 60 * MIN };
        let mut start = Millis(0);
        for minute in 0..=60 {
            start = t.touch(&k, Millis(minute * MIN), p);
        }
        assert_eq!(start, Millis(60 * MIN));
    }

    #[test]
    fn out_of_order_requests_stay_in_the_session() {
        let mut region = Region::new(64 * 1024);
        let t = region.table();
        let k = key(3);
        t.touch(&k, Millis(10 * MIN), policy());
        assert_eq!(t.touch(&k, Millis(9 * MIN), policy()), Millis(10 * MIN));
        assert_eq!(t.touch(&k, Millis(39 * MIN), policy()), Millis(10 * MIN));
    }

    #[test]
    fn peek_does_not_record() {
        let mut region = Region::new(64 * 1024);
        let t = region.table();
        let k = key(5);
        assert_eq!(t.peek(&k, Millis(100), policy()), Millis(100));
        assert_eq!(t.stats().entries, 0);
        t.touch(&k, Millis(100), policy());
        assert_eq!(t.peek(&k, Millis(200), policy()), Millis(100));
        assert_eq!(t.peek(&k, Millis(100 + 31 * MIN), policy()), Millis(100 + 31 * MIN));
        assert_eq!(t.touch(&k, Millis(300), policy()), Millis(100));
    }

    #[test]
    fn full_table_evicts_the_least_recently_used() {
        let mut region = Region::new(4096);
        let t = region.table();
        let cap = t.stats().capacity as u32;
        assert!(cap >= 8);
        for n in 0..cap {
            t.touch(&key(n), Millis(i64::from(n)), policy());
        }
        // Key 0 is the oldest; using it again makes key 1 the eviction victim.
        assert_eq!(t.touch(&key(0), Millis(1000), policy()), Millis(0));
        t.touch(&key(cap), Millis(1001), policy());
        let stats = t.stats();
        assert_eq!(stats.entries, u64::from(cap));
        assert_eq!(stats.evictions, 1);
        assert_eq!(t.peek(&key(0), Millis(1002), policy()), Millis(0));
        assert_eq!(t.peek(&key(1), Millis(1002), policy()), Millis(1002), "key 1 was evicted");
        assert_eq!(t.peek(&key(2), Millis(1002), policy()), Millis(2));
    }

    #[test]
    fn churn_keeps_the_structure_consistent() {
        let mut region = Region::new(8192);
        let t = region.table();
        let cap = t.stats().capacity as u32;
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for step in 0..50_000i64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let n = (rng % u64::from(cap * 3)) as u32;
            t.touch(&key(n), Millis(step), policy());
        }
        let inner = t.lock();
        let h = inner.header_ref();
        assert_eq!(h.len, cap);
        // Walk the LRU list both ways and every bucket chain.
        let mut seen = 0;
        let mut i = h.lru_head;
        let mut prev = NIL;
        while i != NIL {
            assert_eq!(inner.entry(i).lru_prev, prev);
            prev = i;
            i = inner.entry(i).lru_next;
            seen += 1;
            assert!(seen <= cap);
        }
        assert_eq!(prev, h.lru_tail);
        assert_eq!(seen, cap);
        let mut chained = 0;
        for b in 0..h.buckets as usize {
            // SAFETY: the lock is held.
            let mut i = unsafe { *t.buckets.add(b) };
            while i != NIL {
                assert_eq!(inner.find(&ZoneKey(inner.entry(i).key)), Some(i));
                chained += 1;
                i = inner.entry(i).bucket_next;
            }
        }
        assert_eq!(chained, cap);
    }

    #[test]
    fn attach_sees_the_same_table_and_rejects_garbage() {
        let mut region = Region::new(64 * 1024);
        let t = region.table();
        t.touch(&key(9), Millis(5), policy());
        let ptr = region.0.as_mut_ptr().cast::<u8>();
        // SAFETY: the region was formatted above.
        let again = unsafe { SessionTable::attach(ptr) }.unwrap();
        assert_eq!(again.peek(&key(9), Millis(6), policy()), Millis(5));

        let mut junk = Region::new(4096);
        // SAFETY: valid memory, just not a table.
        assert!(unsafe { SessionTable::attach(junk.0.as_mut_ptr().cast()) }.is_none());
        // SAFETY: as above.
        assert!(unsafe { SessionTable::init(junk.0.as_mut_ptr().cast(), 64) }.is_none());
    }

    #[test]
    fn dirty_table_is_cleared_after_recovering_the_lock() {
        let mut region = Region::new(64 * 1024);
        let t = region.table();
        t.touch(&key(1), Millis(5), policy());
        // Simulate a worker killed mid-update: lock held by a dead pid, dirty flag set.
        // SAFETY: exclusive access in this test.
        unsafe {
            (*t.header).dirty = 1;
            (*t.header).lock.store(4_194_305, core::sync::atomic::Ordering::Relaxed);
        }
        assert_eq!(t.stats().entries, 0);
        assert_eq!(t.touch(&key(1), Millis(10), policy()), Millis(10));
    }

    #[test]
    fn shared_between_processes() {
        // The real deployment: an anonymous shared mapping and forked workers.
        let len = 256 * 1024;
        // SAFETY: plain anonymous shared mapping.
        let ptr = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        // SAFETY: fresh mapping of len bytes, page aligned.
        let t = unsafe { SessionTable::init(ptr.cast(), len) }.unwrap();
        let children: Vec<_> = (0..3)
            .map(|c| {
                // SAFETY: the child only touches the table and exits without unwinding.
                match unsafe { libc::fork() } {
                    0 => {
                        for n in 0..2000u32 {
                            t.touch(&key(n), Millis(i64::from(c)), policy());
                        }
                        // SAFETY: leave the child without running the test harness's atexit.
                        unsafe { libc::_exit(0) };
                    }
                    pid => pid,
                }
            })
            .collect();
        for pid in children {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            assert_eq!(status, 0);
        }
        assert_eq!(t.stats().entries, 2000);
        for n in 0..2000u32 {
            let start = t.peek(&key(n), Millis(3), policy());
            assert!((0..3).contains(&start.0), "one start per key, from whichever came first");
        }
        // SAFETY: unmapping what we mapped; t is not used afterwards.
        unsafe { libc::munmap(ptr, len) };
    }
}
