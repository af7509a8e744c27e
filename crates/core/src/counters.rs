//! Exporter accounting, kept in shared memory so any worker can report every worker.
//!
//! Each worker owns a slot. The slot holds two groups of counters, each written by exactly one
//! thread of that worker and published under its own sequence lock, so a reader always gets
//! a consistent picture of each group:
//!
//! * the request path (the worker's event loop) counts what it captured and what it had to
//!   drop because the queue was full;
//! * the exporter thread counts what it took off the queue and where each record went.
//!
//! `queued` is then the records still in the channel plus those the exporter holds, and
//! `captured = exported + dropped + queued + spooled` holds exactly in every snapshot. When a
//! worker exits its counters are folded into the `exited` group, so totals survive reloads.

pub mod status;

use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use serde::Serialize;

use crate::shm_lock;

const MAGIC: u64 = u64::from_be_bytes(*b"APICNT01");

/// Slots for concurrently running workers, old (exiting) generations included.
pub const SLOTS: usize = 1024;

/// The counters `api_sessions_status` reports, per worker and in total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CounterValues {
    pub captured: u64,
    pub exported: u64,
    pub dropped: u64,
    pub queued: u64,
    pub spooled: u64,
    pub export_errors: u64,
}

impl CounterValues {
    /// Each counter with its name, in the order of the JSON document.
    pub fn named(&self) -> [(&'static str, u64); 6] {
        [
            ("captured", self.captured),
            ("exported", self.exported),
            ("dropped", self.dropped),
            ("queued", self.queued),
            ("spooled", self.spooled),
            ("export_errors", self.export_errors),
        ]
    }

    fn add(&mut self, other: &CounterValues) {
        self.captured += other.captured;
        self.exported += other.exported;
        self.dropped += other.dropped;
        self.queued += other.queued;
        self.spooled += other.spooled;
        self.export_errors += other.export_errors;
    }
}

/// A consistent reading of the whole board.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub workers: Vec<(u32, CounterValues)>,
    pub total: CounterValues,
}

/// Fields published together under one sequence lock.
#[repr(C)]
struct Group<const N: usize> {
    seq: AtomicU64,
    fields: [AtomicU64; N],
}

impl<const N: usize> Group<N> {
    /// Single-writer update.
    fn update(&self, f: impl FnOnce(&mut [u64; N])) {
        let mut values = self.fields.each_ref().map(|x| x.load(Ordering::Relaxed));
        f(&mut values);
        self.seq.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::Release);
        for (field, value) in self.fields.iter().zip(values) {
            field.store(value, Ordering::Relaxed);
        }
        self.seq.fetch_add(1, Ordering::Release);
    }

    fn read(&self) -> [u64; N] {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                core::hint::spin_loop();
                continue;
            }
            let values = self.fields.each_ref().map(|x| x.load(Ordering::Relaxed));
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == before {
                return values;
            }
        }
    }

    fn reset(&self) {
        self.update(|v| *v = [0; N]);
    }
}

// Request-path group.
const CAPTURED: usize = 0;
const DROPPED_FULL: usize = 1;

// Exporter group.
const TAKEN: usize = 0;
const HELD: usize = 1;
const EXPORTED: usize = 2;
const DROPPED: usize = 3;
const SPOOLED: usize = 4;
const ADOPTED: usize = 5;
const EXPORT_ERRORS: usize = 6;

#[repr(C)]
struct Slot {
    pid: AtomicU32,
    _reserved: u32,
    request_path: Group<2>,
    exporter: Group<7>,
}

impl Slot {
    fn values(&self) -> CounterValues {
        // Read the exporter first: whatever it took was captured earlier, so the later read
        // of the request path never shows fewer captures than the exporter has seen.
        let e = self.exporter.read();
        let r = self.request_path.read();
        let in_channel = r[CAPTURED].saturating_sub(r[DROPPED_FULL] + e[TAKEN]);
        CounterValues {
            captured: r[CAPTURED] + e[ADOPTED],
            exported: e[EXPORTED],
            dropped: r[DROPPED_FULL] + e[DROPPED],
            queued: in_channel + e[HELD],
            spooled: e[SPOOLED],
            export_errors: e[EXPORT_ERRORS],
        }
    }
}

#[repr(C)]
struct Header {
    magic: u64,
    lock: AtomicU32,
    _reserved: u32,
    /// captured, exported, dropped, queued (always 0), spooled, export_errors.
    exited: Group<6>,
}

/// A view of the counter board in a shared memory region.
pub struct CounterBoard {
    header: *mut Header,
    slots: *mut Slot,
}

// SAFETY: the region holds only atomics; compound changes go through the board lock.
unsafe impl Send for CounterBoard {}
// SAFETY: as above.
unsafe impl Sync for CounterBoard {}

impl CounterBoard {
    /// Bytes the board needs.
    pub const SIZE: usize = core::mem::size_of::<Header>() + SLOTS * core::mem::size_of::<Slot>();

    /// Formats an empty board.
    ///
    /// # Safety
    ///
    /// `region` must be valid for [`Self::SIZE`] bytes, 8-aligned, zeroed or unused, and
    /// outlive every view of the board.
    pub unsafe fn init(region: *mut u8) -> CounterBoard {
        // SAFETY: per the contract; all fields are atomics for which zero is a valid value.
        unsafe {
            core::ptr::write_bytes(region, 0, Self::SIZE);
            (*region.cast::<Header>()).magic = MAGIC;
            Self::layout(region)
        }
    }

    /// Attaches to a board formatted by [`Self::init`].
    ///
    /// # Safety
    ///
    /// `region` must be valid for [`Self::SIZE`] bytes and outlive every view of the board.
    pub unsafe fn attach(region: *mut u8) -> Option<CounterBoard> {
        // SAFETY: per the contract.
        unsafe { ((*region.cast::<Header>()).magic == MAGIC).then(|| Self::layout(region)) }
    }

    /// Where the header and the slots are.
    ///
    /// # Safety
    ///
    /// `region` must be valid for [`Self::SIZE`] bytes.
    unsafe fn layout(region: *mut u8) -> CounterBoard {
        let header = region.cast::<Header>();
        // SAFETY: the slots follow the header within SIZE.
        let slots = unsafe { region.add(core::mem::size_of::<Header>()) }.cast::<Slot>();
        CounterBoard { header, slots }
    }

    fn header(&self) -> &Header {
        // SAFETY: valid for the board's lifetime per init/attach.
        unsafe { &*self.header }
    }

    fn slots(&self) -> &[Slot] {
        // SAFETY: SLOTS slots follow the header.
        unsafe { core::slice::from_raw_parts(self.slots, SLOTS) }
    }

    /// Claims a slot for worker `pid`, first folding the slots of workers that died without
    /// detaching (their queued records are lost and counted as dropped).
    pub fn attach_worker(&self, pid: u32) -> Option<WorkerCounters<'_>> {
        let guard = shm_lock::lock(&self.header().lock);
        for (index, slot) in self.slots().iter().enumerate() {
            let owner = slot.pid.load(Ordering::Acquire);
            if owner != 0 && owner != pid && !shm_lock::process_alive(owner) {
                self.fold(&guard, index);
            }
        }
        let index = self.slots().iter().position(|slot| slot.pid.load(Ordering::Acquire) == 0)?;
        let slot = &self.slots()[index];
        slot.request_path.reset();
        slot.exporter.reset();
        slot.pid.store(pid, Ordering::Release);
        Some(WorkerCounters { board: self, index })
    }

    /// Folds a slot into the exited totals and frees it. `_held` is the board lock: the
    /// exited group has one writer at a time.
    fn fold(&self, _held: &shm_lock::ShmGuard<'_>, index: usize) {
        let slot = &self.slots()[index];
        let v = slot.values();
        self.header().exited.update(|e| {
            e[0] += v.captured;
            e[1] += v.exported;
            // Records still queued in a worker that is gone are lost.
            e[2] += v.dropped + v.queued;
            e[4] += v.spooled;
            e[5] += v.export_errors;
        });
        slot.pid.store(0, Ordering::Release);
    }

    /// Moves up to `n` spooled records left by exited workers out of the exited totals;
    /// returns how many were there to move.
    fn take_exited_spooled(&self, n: u64) -> u64 {
        let _guard = shm_lock::lock(&self.header().lock);
        let available = self.header().exited.read()[4];
        let moved = n.min(available);
        self.header().exited.update(|e| {
            e[0] -= moved;
            e[4] -= moved;
        });
        moved
    }

    /// Every worker and the total, exited workers included.
    pub fn snapshot(&self) -> Snapshot {
        // Under the board lock no slot is folded or claimed half-way through the reading.
        let _guard = shm_lock::lock(&self.header().lock);
        let mut snapshot = Snapshot::default();
        for slot in self.slots() {
            let pid = slot.pid.load(Ordering::Acquire);
            if pid != 0 {
                let values = slot.values();
                snapshot.total.add(&values);
                snapshot.workers.push((pid, values));
            }
        }
        let e = self.header().exited.read();
        snapshot.total.add(&CounterValues {
            captured: e[0],
            exported: e[1],
            dropped: e[2],
            queued: 0,
            spooled: e[4],
            export_errors: e[5],
        });
        snapshot
    }
}

/// One worker's slot. The request path and the exporter thread each call only their own
/// methods; that single-writer split is what keeps the snapshots exact.
#[derive(Clone, Copy)]
pub struct WorkerCounters<'a> {
    board: &'a CounterBoard,
    index: usize,
}

impl<'a> WorkerCounters<'a> {
    fn slot(&self) -> &'a Slot {
        &self.board.slots()[self.index]
    }

    /// Request path: a record was handed to the exporter queue.
    pub fn captured(&self) {
        self.slot().request_path.update(|v| v[CAPTURED] += 1);
    }

    /// Request path: a record was captured but the queue was full.
    pub fn captured_but_dropped(&self) {
        self.slot().request_path.update(|v| {
            v[CAPTURED] += 1;
            v[DROPPED_FULL] += 1;
        });
    }

    /// Request path: a record counted by [`Self::captured`] did not fit in the queue after all.
    pub fn queue_rejected(&self) {
        self.slot().request_path.update(|v| v[DROPPED_FULL] += 1);
    }

    /// Exporter: `n` records taken off the queue, now held by the exporter.
    pub fn taken(&self, n: u64) {
        self.slot().exporter.update(|v| {
            v[TAKEN] += n;
            v[HELD] += n;
        });
    }

    /// Exporter: `n` held records delivered.
    pub fn exported(&self, n: u64) {
        self.slot().exporter.update(|v| {
            v[HELD] -= n;
            v[EXPORTED] += n;
        });
    }

    /// Exporter: `n` held records lost (permanent delivery error, shutdown deadline).
    pub fn dropped(&self, n: u64) {
        self.slot().exporter.update(|v| {
            v[HELD] -= n;
            v[DROPPED] += n;
        });
    }

    /// Exporter: `n` held records written to the spool.
    pub fn spooled(&self, n: u64) {
        self.slot().exporter.update(|v| {
            v[HELD] -= n;
            v[SPOOLED] += n;
        });
    }

    /// Exporter: `n` spooled records delivered by a replay.
    pub fn replayed(&self, n: u64) {
        self.slot().exporter.update(|v| {
            v[SPOOLED] -= n;
            v[EXPORTED] += n;
        });
    }

    /// Exporter: `n` spooled records discarded to keep the spool under `spool_max`.
    pub fn spool_evicted(&self, n: u64) {
        self.slot().exporter.update(|v| {
            v[SPOOLED] -= n;
            v[DROPPED] += n;
        });
    }

    /// Exporter: a delivery attempt failed.
    pub fn export_error(&self) {
        self.slot().exporter.update(|v| v[EXPORT_ERRORS] += 1);
    }

    /// Exporter: this worker took over `n` spooled records left by exited workers (or by a
    /// previous run of nginx). They become this worker's captured and spooled records.
    pub fn adopt_spooled(&self, n: u64) {
        self.board.take_exited_spooled(n);
        self.slot().exporter.update(|v| {
            v[ADOPTED] += n;
            v[SPOOLED] += n;
        });
    }

    /// This worker's counters.
    pub fn values(&self) -> CounterValues {
        self.slot().values()
    }

    /// Worker exit, after the exporter thread has stopped: fold into the exited totals.
    pub fn detach(self) {
        let guard = shm_lock::lock(&self.board.header().lock);
        self.board.fold(&guard, self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm_testing::Region;

    fn board(region: &mut Region) -> CounterBoard {
        // SAFETY: the region, of the board's size, outlives the board within each test.
        unsafe { CounterBoard::init(region.ptr()) }
    }

    fn identity(v: &CounterValues) -> bool {
        v.captured == v.exported + v.dropped + v.queued + v.spooled
    }

    #[test]
    fn every_record_is_somewhere() {
        let mut region = Region::new(CounterBoard::SIZE);
        let board = board(&mut region);
        let w = board.attach_worker(std::process::id()).unwrap();
        for _ in 0..10 {
            w.captured();
        }
        w.captured_but_dropped();
        assert_eq!(w.values().queued, 10);
        w.taken(6);
        w.exported(3);
        w.spooled(2);
        w.dropped(1);
        let v = w.values();
        assert_eq!(
            v,
            CounterValues {
                captured: 11,
                exported: 3,
                dropped: 2,
                queued: 4,
                spooled: 2,
                export_errors: 0
            }
        );
        w.replayed(1);
        w.spool_evicted(1);
        w.export_error();
        let v = w.values();
        assert!(identity(&v));
        assert_eq!((v.exported, v.dropped, v.spooled, v.export_errors), (4, 3, 0, 1));
    }

    #[test]
    fn exited_workers_fold_into_the_total() {
        let mut region = Region::new(CounterBoard::SIZE);
        let board = board(&mut region);
        let a = board.attach_worker(std::process::id()).unwrap();
        for _ in 0..5 {
            a.captured();
        }
        a.taken(5);
        a.exported(3);
        a.spooled(2);
        a.detach();

        let snap = board.snapshot();
        assert!(snap.workers.is_empty());
        assert_eq!(snap.total.captured, 5);
        assert_eq!(snap.total.spooled, 2);
        assert!(identity(&snap.total));

        // A new worker replays the spool the exited one left.
        let b = board.attach_worker(std::process::id()).unwrap();
        b.adopt_spooled(2);
        b.replayed(2);
        let snap = board.snapshot();
        assert_eq!(snap.total.captured, 5, "adoption moves records, it does not add them");
        assert_eq!(snap.total.exported, 5);
        assert_eq!(snap.total.spooled, 0);
        assert!(identity(&snap.total));
        assert!(identity(&snap.workers[0].1));
    }

    #[test]
    fn adopting_a_spool_from_a_previous_run_counts_it_as_captured() {
        let mut region = Region::new(CounterBoard::SIZE);
        let board = board(&mut region);
        let w = board.attach_worker(std::process::id()).unwrap();
        w.adopt_spooled(7);
        let snap = board.snapshot();
        assert_eq!((snap.total.captured, snap.total.spooled), (7, 7));
        assert!(identity(&snap.total));
    }

    #[test]
    fn dead_workers_are_reaped_and_their_queue_counted_as_lost() {
        let mut region = Region::new(CounterBoard::SIZE);
        let board = board(&mut region);
        let dead = 4_194_305; // above PID_MAX_LIMIT: never a live process
        let w = board.attach_worker(dead).unwrap();
        for _ in 0..4 {
            w.captured();
        }
        w.taken(1);
        w.exported(1);
        let _alive = board.attach_worker(std::process::id()).unwrap();
        let snap = board.snapshot();
        assert_eq!(snap.workers.len(), 1);
        assert_eq!(snap.total.exported, 1);
        assert_eq!(snap.total.dropped, 3);
        assert!(identity(&snap.total));
    }

    #[test]
    fn snapshots_stay_exact_under_concurrent_writers() {
        // Fewer under Miri, which runs a thousand times slower.
        const WRITES: u64 = if cfg!(miri) { 200 } else { 100_000 };
        const READS: u64 = if cfg!(miri) { 10 } else { 20_000 };
        let mut region = Region::new(CounterBoard::SIZE);
        let board = board(&mut region);
        let w = board.attach_worker(std::process::id()).unwrap();
        std::thread::scope(|s| {
            let (tx, rx) = crossbeam_channel::bounded::<()>(64);
            s.spawn(move || {
                for i in 0..WRITES {
                    if i % 10 == 0 {
                        w.captured_but_dropped();
                    } else {
                        w.captured();
                        tx.send(()).unwrap();
                    }
                }
            });
            s.spawn(move || {
                let mut n = 0u64;
                while rx.recv().is_ok() {
                    w.taken(1);
                    n += 1;
                    match n % 3 {
                        0 => w.exported(1),
                        1 => w.spooled(1),
                        _ => w.dropped(1),
                    }
                }
            });
            for _ in 0..READS {
                let v = board.snapshot().total;
                assert!(identity(&v), "{v:?}");
            }
        });
        let v = board.snapshot().total;
        assert_eq!((v.captured, v.queued), (WRITES, 0));
        assert!(identity(&v));
    }

    #[test]
    fn names_are_the_serialised_ones() {
        let values = CounterValues {
            captured: 1,
            exported: 2,
            dropped: 3,
            queued: 4,
            spooled: 5,
            export_errors: 6,
        };
        let named: Vec<String> =
            values.named().iter().map(|(n, v)| format!("\"{n}\":{v}")).collect();
        assert_eq!(serde_json::to_string(&values).unwrap(), format!("{{{}}}", named.join(",")));
    }

    #[test]
    #[cfg_attr(miri, ignore = "a million slot reads take hours; other tests walk the slots")]
    fn runs_out_of_slots_cleanly() {
        let mut region = Region::new(CounterBoard::SIZE);
        let board = board(&mut region);
        let me = std::process::id();
        let slots: Vec<_> = (0..SLOTS).map(|_| board.attach_worker(me).unwrap()).collect();
        assert!(board.attach_worker(me).is_none());
        slots[0].detach();
        assert!(board.attach_worker(me).is_some());
    }
}
