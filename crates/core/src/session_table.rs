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

const MAGIC: u64 = u64::from_be_bytes(*b"APISESS2");
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

/// The start of the region. `magic`, `capacity` and `buckets` are written once, before any
/// view of the table exists; `lock` is the only word touched without holding the lock; the
/// rest is [`State`], touched only with it held.
#[repr(C)]
struct Header {
    magic: u64,
    lock: AtomicU32,
    capacity: u32,
    buckets: u32,
    _reserved: u32,
    state: State,
}

#[repr(C)]
struct State {
    /// Set while a mutation is in progress: if the lock is recovered from a dead owner with
    /// this set, the lists may be broken and the table is cleared.
    dirty: u32,
    len: u32,
    /// Most recently used entry.
    lru_head: u32,
    /// Least recently used entry, the next to evict.
    lru_tail: u32,
    free_head: u32,
    _reserved: u32,
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
    capacity: u32,
    bucket_count: u32,
}

// SAFETY: the region is only read or written through `Locked`, which holds the process-shared
// lock in the header, or through atomics.
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
        let capacity = capacity as u32;
        // SAFETY: the region is valid, aligned and ours alone for this call; the header comes
        // first in it.
        unsafe {
            region.cast::<Header>().write(Header {
                magic: MAGIC,
                lock: AtomicU32::new(0),
                capacity,
                buckets: capacity,
                _reserved: 0,
                state: State {
                    dirty: 0,
                    len: 0,
                    lru_head: NIL,
                    lru_tail: NIL,
                    free_head: NIL,
                    _reserved: 0,
                    evictions: 0,
                },
            });
        }
        // SAFETY: the header was just written; the rest fits by capacity_for().
        let table = unsafe { Self::layout(region) };
        // The buckets and entries are still raw bytes: give every one a value first.
        // SAFETY: within the region, which nothing else accesses yet.
        unsafe {
            for b in 0..table.bucket_count as usize {
                table.buckets.add(b).write(NIL);
            }
            for i in 0..table.capacity as usize {
                table.entries.add(i).write(Entry {
                    key: [0; 16],
                    start: 0,
                    last: 0,
                    bucket_next: NIL,
                    lru_prev: NIL,
                    lru_next: NIL,
                    _reserved: 0,
                });
            }
        }
        // SAFETY: nothing else can see the table yet, so this view is the only one.
        unsafe { Locked::new(&table, None) }.clear();
        Some(table)
    }

    /// Attaches to a table formatted by [`Self::init`] (e.g. the previous cycle's, on reload).
    ///
    /// # Safety
    ///
    /// `region` must be the start of a region on which `init` succeeded, still mapped.
    pub unsafe fn attach(region: *mut u8) -> Option<SessionTable> {
        // SAFETY: per the contract the header was written by init; magic is never written
        // again.
        let magic = unsafe { (*region.cast::<Header>()).magic };
        if magic != MAGIC {
            return None;
        }
        // SAFETY: a table init formatted.
        Some(unsafe { Self::layout(region) })
    }

    /// Where the parts of the table formatted in `region` are.
    ///
    /// # Safety
    ///
    /// `region` must start with a written header, and be valid for the size
    /// [`Self::capacity_for`] gives for its capacity.
    unsafe fn layout(region: *mut u8) -> SessionTable {
        let header = region.cast::<Header>();
        // SAFETY: capacity and buckets are written once, before any view exists.
        let (capacity, bucket_count) = unsafe { ((*header).capacity, (*header).buckets) };
        debug_assert!(capacity <= bucket_count);
        // SAFETY: all within the region per capacity_for().
        let (buckets, entries) = unsafe {
            let buckets = region.add(size_of::<Header>()).cast::<u32>();
            let after_buckets = buckets.add(bucket_count as usize).cast::<u8>();
            let pad = after_buckets.align_offset(align_of::<Entry>());
            (buckets, after_buckets.add(pad).cast::<Entry>())
        };
        SessionTable { header, buckets, entries, capacity, bucket_count }
    }

    /// Records a request of `key` at `ts` and returns the start of the session it belongs to.
    pub fn touch(&self, key: &ZoneKey, ts: Millis, policy: SplitPolicy) -> Millis {
        let mut table = self.lock();
        table.state.dirty = 1;
        let start = match table.find(key) {
            Some(i) => {
                let entry = &mut table.entries[i as usize];
                if !policy.continues(entry, ts) {
                    entry.start = ts.0;
                    entry.last = ts.0;
                } else if ts.0 > entry.last {
                    // Records from several workers arrive slightly out of order; the session
                    // only ever extends.
                    entry.last = ts.0;
                }
                let start = entry.start;
                table.promote(i);
                start
            }
            None => {
                table.insert(key, ts.0);
                ts.0
            }
        };
        table.state.dirty = 0;
        Millis(start)
    }

    /// The start of the session a request of `key` at `ts` would belong to, without recording
    /// it (for `$api_session_id`, evaluated before the request is logged).
    pub fn peek(&self, key: &ZoneKey, ts: Millis, policy: SplitPolicy) -> Millis {
        let table = self.lock();
        match table.find(key).map(|i| &table.entries[i as usize]) {
            Some(entry) if policy.continues(entry, ts) => Millis(entry.start),
            _ => ts,
        }
    }

    pub fn stats(&self) -> TableStats {
        let table = self.lock();
        TableStats {
            entries: u64::from(table.state.len),
            evictions: table.state.evictions,
            capacity: u64::from(self.capacity),
        }
    }

    fn lock(&self) -> Locked<'_> {
        // SAFETY: the header was written by init() and outlives the view; the lock word is
        // an atomic, the one field shared without the lock.
        let word = unsafe { &*core::ptr::addr_of!((*self.header).lock) };
        let guard = shm_lock::lock(word);
        let recovered = guard.recovered;
        // SAFETY: the guard, kept inside the view, holds the table's lock.
        let mut table = unsafe { Locked::new(self, Some(guard)) };
        if recovered && table.state.dirty != 0 {
            table.clear();
        }
        table
    }
}

/// Exclusive access to a table's state, buckets and entries: made once the lock is held (or,
/// in `init`, before anything else can see the table), and holding the lock until dropped.
/// Every change goes through `&mut self`, so the borrow checker keeps one reference at a time
/// to each part.
struct Locked<'a> {
    state: &'a mut State,
    buckets: &'a mut [u32],
    entries: &'a mut [Entry],
    _guard: Option<shm_lock::ShmGuard<'a>>,
}

impl<'a> Locked<'a> {
    /// # Safety
    ///
    /// While the view lives nothing else reads or writes the table's state, buckets or
    /// entries: `guard` holds the table's lock, or the table is not visible to anyone else.
    unsafe fn new(table: &'a SessionTable, guard: Option<shm_lock::ShmGuard<'a>>) -> Locked<'a> {
        // SAFETY: exclusive per the contract; the parts are disjoint and initialised, and
        // sized by the header.
        unsafe {
            Locked {
                state: &mut *core::ptr::addr_of_mut!((*table.header).state),
                buckets: core::slice::from_raw_parts_mut(
                    table.buckets,
                    table.bucket_count as usize,
                ),
                entries: core::slice::from_raw_parts_mut(table.entries, table.capacity as usize),
                _guard: guard,
            }
        }
    }

    /// Empties the table.
    fn clear(&mut self) {
        self.buckets.fill(NIL);
        let capacity = self.entries.len() as u32;
        for (i, e) in (0..).zip(self.entries.iter_mut()) {
            e.bucket_next = if i + 1 < capacity { i + 1 } else { NIL };
            e.lru_prev = NIL;
            e.lru_next = NIL;
        }
        let s = &mut *self.state;
        s.free_head = 0;
        s.lru_head = NIL;
        s.lru_tail = NIL;
        s.len = 0;
        s.dirty = 0;
    }

    fn bucket_of(&self, key: &ZoneKey) -> usize {
        // Key hashes are HMAC output, uniformly distributed.
        let h = u64::from_le_bytes(key.0[..8].try_into().expect("8 bytes"));
        (h % self.buckets.len() as u64) as usize
    }

    fn find(&self, key: &ZoneKey) -> Option<u32> {
        let mut i = self.buckets[self.bucket_of(key)];
        // Bounded walk: even a corrupted chain cannot loop forever.
        for _ in 0..self.entries.len() {
            let e = self.entries.get(i as usize)?;
            if e.key == key.0 {
                return Some(i);
            }
            i = e.bucket_next;
        }
        None
    }

    fn insert(&mut self, key: &ZoneKey, ts: i64) {
        let i = if self.state.free_head != NIL {
            let i = self.state.free_head;
            self.state.free_head = self.entries[i as usize].bucket_next;
            self.state.len += 1;
            i
        } else {
            let victim = self.state.lru_tail;
            self.unlink_bucket(victim);
            self.unlink_lru(victim);
            self.state.evictions += 1;
            victim
        };

        let b = self.bucket_of(key);
        let e = &mut self.entries[i as usize];
        e.key = key.0;
        e.start = ts;
        e.last = ts;
        e.bucket_next = self.buckets[b];
        self.buckets[b] = i;
        self.push_front(i);
    }

    fn promote(&mut self, i: u32) {
        if self.state.lru_head != i {
            self.unlink_lru(i);
            self.push_front(i);
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.state.lru_head;
        let e = &mut self.entries[i as usize];
        e.lru_prev = NIL;
        e.lru_next = old;
        if old != NIL {
            self.entries[old as usize].lru_prev = i;
        } else {
            self.state.lru_tail = i;
        }
        self.state.lru_head = i;
    }

    fn unlink_lru(&mut self, i: u32) {
        let Entry { lru_prev: prev, lru_next: next, .. } = self.entries[i as usize];
        if prev != NIL {
            self.entries[prev as usize].lru_next = next;
        } else {
            self.state.lru_head = next;
        }
        if next != NIL {
            self.entries[next as usize].lru_prev = prev;
        } else {
            self.state.lru_tail = prev;
        }
    }

    fn unlink_bucket(&mut self, i: u32) {
        let b = self.bucket_of(&ZoneKey(self.entries[i as usize].key));
        let next = self.entries[i as usize].bucket_next;
        let mut cur = self.buckets[b];
        if cur == i {
            self.buckets[b] = next;
            return;
        }
        for _ in 0..self.entries.len() {
            let Some(e) = self.entries.get(cur as usize) else { return };
            if e.bucket_next == i {
                self.entries[cur as usize].bucket_next = next;
                return;
            }
            cur = e.bucket_next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm_testing::{in_children, Region, SharedMapping};

    const MIN: i64 = 60_000;

    fn table(region: &mut Region) -> SessionTable {
        // SAFETY: the region outlives the table in each test.
        unsafe { SessionTable::init(region.ptr(), region.len()) }.unwrap()
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
        let t = table(&mut region);
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
        let t = table(&mut region);
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
        let t = table(&mut region);
        let k = key(3);
        t.touch(&k, Millis(10 * MIN), policy());
        assert_eq!(t.touch(&k, Millis(9 * MIN), policy()), Millis(10 * MIN));
        assert_eq!(t.touch(&k, Millis(39 * MIN), policy()), Millis(10 * MIN));
    }

    #[test]
    fn peek_does_not_record() {
        let mut region = Region::new(64 * 1024);
        let t = table(&mut region);
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
        let t = table(&mut region);
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
        let t = table(&mut region);
        let cap = t.stats().capacity as u32;
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        // Fewer under Miri, which runs a thousand times slower: still several evictions per
        // slot.
        let steps = if cfg!(miri) { 3_000 } else { 50_000 };
        for step in 0..steps {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let n = (rng % u64::from(cap * 3)) as u32;
            t.touch(&key(n), Millis(step), policy());
        }
        let table = t.lock();
        assert_eq!(table.state.len, cap);
        // Walk the LRU list both ways and every bucket chain.
        let mut seen = 0;
        let mut i = table.state.lru_head;
        let mut prev = NIL;
        while i != NIL {
            assert_eq!(table.entries[i as usize].lru_prev, prev);
            prev = i;
            i = table.entries[i as usize].lru_next;
            seen += 1;
            assert!(seen <= cap);
        }
        assert_eq!(prev, table.state.lru_tail);
        assert_eq!(seen, cap);
        let mut chained = 0;
        for &head in table.buckets.iter() {
            let mut i = head;
            while i != NIL {
                let e = &table.entries[i as usize];
                assert_eq!(table.find(&ZoneKey(e.key)), Some(i));
                chained += 1;
                i = e.bucket_next;
            }
        }
        assert_eq!(chained, cap);
    }

    #[test]
    fn attach_sees_the_same_table_and_rejects_garbage() {
        let mut region = Region::new(64 * 1024);
        let t = table(&mut region);
        t.touch(&key(9), Millis(5), policy());
        let ptr = region.ptr();
        // SAFETY: the region was formatted above.
        let again = unsafe { SessionTable::attach(ptr) }.unwrap();
        assert_eq!(again.peek(&key(9), Millis(6), policy()), Millis(5));

        let mut junk = Region::new(4096);
        // SAFETY: valid memory, just not a table.
        assert!(unsafe { SessionTable::attach(junk.ptr()) }.is_none());
        // SAFETY: as above.
        assert!(unsafe { SessionTable::init(junk.ptr(), 64) }.is_none());
    }

    #[test]
    fn dirty_table_is_cleared_after_recovering_the_lock() {
        let mut region = Region::new(64 * 1024);
        let t = table(&mut region);
        t.touch(&key(1), Millis(5), policy());
        // Simulate a worker killed mid-update: lock held by a dead pid, dirty flag set.
        // SAFETY: exclusive access in this test.
        unsafe {
            (*t.header).state.dirty = 1;
            (*t.header).lock.store(4_194_305, core::sync::atomic::Ordering::Relaxed);
        }
        assert_eq!(t.stats().entries, 0);
        assert_eq!(t.touch(&key(1), Millis(10), policy()), Millis(10));
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri does not emulate fork")]
    fn shared_between_processes() {
        // The real deployment: an anonymous shared mapping and forked workers.
        let shm = SharedMapping::new(256 * 1024);
        // SAFETY: a fresh mapping, which outlives the table.
        let t = unsafe { SessionTable::init(shm.ptr(), shm.len()) }.unwrap();
        in_children(3, |c| {
            for n in 0..2000u32 {
                t.touch(&key(n), Millis(c as i64), policy());
            }
        });
        assert_eq!(t.stats().entries, 2000);
        for n in 0..2000u32 {
            let start = t.peek(&key(n), Millis(3), policy());
            assert!((0..3).contains(&start.0), "one start per key, from whichever came first");
        }
    }
}
