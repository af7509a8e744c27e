//! The denylist of `api_sessions_denylist`: key hashes whose requests are blocked, with their
//! expiry, in shared memory for every worker.
//!
//! The request path looks a key hash up without ever waiting: the region holds two halves of
//! the table, and a new list is written into the half nobody is reading before an index flips
//! to it. Each half is guarded by a sequence counter, odd while it is being written, so a
//! reader that raced with a rewrite (it read the index, then the list changed twice) sees the
//! counter move and looks again. Every word of the region is an atomic: a racing read can be
//! stale, never undefined. A list that does not fit is refused whole, never cut short, so a
//! blocked key is never dropped silently.
//!
//! One worker at a time fetches the list ([`fetch`]): the region also holds the fetch lock,
//! when the next fetch is due, and the validator (`ETag`, or a file's modification time and
//! size) of the list it holds, so whichever worker fetches next can ask for changes only.

pub mod fetch;

use core::fmt;
use core::mem::{align_of, size_of};
use core::sync::atomic::{fence, AtomicI64, AtomicU32, AtomicU64, Ordering};

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::hash::{KeyHash, Secret, ZoneKey};
use crate::shm_lock::process_alive;
use crate::time::Millis;

const MAGIC: u64 = u64::from_be_bytes(*b"APIDENY1");
/// `expires` of an entry without expiry.
const NEVER: i64 = i64::MAX;
/// Longest validator (`ETag`) kept; a longer one is not kept, and the next fetch is a full one.
pub const VALIDATOR_MAX: usize = 256;
/// A reader that keeps racing with rewrites gives up after this many tries and lets the
/// request through: the list would have to be replaced this often during one lookup.
const READ_TRIES: usize = 8;

/// Figures for `api_sessions_status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenylistStats {
    /// Entries of the list in use.
    pub entries: u64,
    /// `version` of the list in use, 0 before the first one.
    pub version: u64,
    /// Fetches that failed or brought a list that was refused.
    pub errors: u64,
    /// Entries a list may have.
    pub capacity: u64,
    /// Requests answered with the block status.
    pub blocked: u64,
    /// Requests that would have been blocked, under `api_sessions_block dry_run`.
    pub dry_run: u64,
}

#[repr(C)]
struct Half {
    /// Odd while the half is written.
    seq: AtomicU64,
    version: AtomicU64,
    len: AtomicU64,
}

/// The start of the region. `magic` and `slots` are written once, before any view exists.
#[repr(C)]
struct Header {
    magic: u64,
    /// Slots of each half, a power of two.
    slots: u64,
    /// Pid of the process fetching, 0 when nobody is.
    fetch_lock: AtomicU32,
    /// The half readers use.
    active: AtomicU32,
    next_fetch: AtomicI64,
    /// The configuration whose workers fetch: on reload the old workers, which may run for
    /// a while yet, stop fetching (their source may no longer be the configured one).
    generation: AtomicU64,
    /// Identifies the source the validator belongs to (the configuration may change on
    /// reload while the zone stays).
    source: AtomicU64,
    validator_len: AtomicU64,
    validator: [AtomicU64; VALIDATOR_MAX / 8],
    errors: AtomicU64,
    blocked: AtomicU64,
    dry_run: AtomicU64,
    halves: [Half; 2],
}

/// One slot: the key hash in two words (both zero: empty) and the expiry in ms.
#[repr(C)]
struct Slot {
    k0: AtomicU64,
    k1: AtomicU64,
    expires: AtomicI64,
}

/// A view of a denylist in a shared memory region; clones are further views of it.
#[derive(Clone)]
pub struct Denylist {
    header: *const Header,
    /// Both halves' slots, the first half's first.
    slots: *const Slot,
    mask: u64,
}

// SAFETY: the region holds only atomics and words written once before any view exists.
unsafe impl Send for Denylist {}
// SAFETY: as above.
unsafe impl Sync for Denylist {}

fn words(key: &KeyHash) -> (u64, u64) {
    let (a, b) = key.0.split_at(8);
    (
        u64::from_le_bytes(a.try_into().expect("8 bytes")),
        u64::from_le_bytes(b.try_into().expect("8 bytes")),
    )
}

impl Denylist {
    /// Alignment the region must have.
    pub const ALIGN: usize = align_of::<Header>();

    /// Zone bytes per entry a full list costs: two halves of slots kept at most three
    /// quarters full.
    pub const BYTES_PER_ENTRY: usize = 2 * size_of::<Slot>() * 4 / 3;

    /// Slots per half in a region of `len` bytes: the largest power of two that fits.
    fn slots_for(len: usize) -> u64 {
        let usable = len.saturating_sub(size_of::<Header>()) / (2 * size_of::<Slot>());
        if usable < 8 {
            return 0;
        }
        1u64 << (usize::BITS - 1 - usable.leading_zeros())
    }

    /// How many entries a list may have in a region of `len` bytes.
    pub fn capacity_for(len: usize) -> usize {
        (Self::slots_for(len) / 4 * 3) as usize
    }

    /// Formats a fresh, empty denylist in `region`; `None` when it is too small or misaligned.
    ///
    /// # Safety
    ///
    /// `region` must be valid for reads and writes of `len` bytes, not accessed by anything
    /// else during this call, and outlive every view of the denylist.
    pub unsafe fn init(region: *mut u8, len: usize) -> Option<Denylist> {
        let slots = Self::slots_for(len);
        if slots == 0 || region.align_offset(Self::ALIGN) != 0 {
            return None;
        }
        let half =
            || Half { seq: AtomicU64::new(0), version: AtomicU64::new(0), len: AtomicU64::new(0) };
        // SAFETY: the region is valid, aligned and ours alone for this call; the header
        // comes first and the slots after it fit by slots_for().
        unsafe {
            region.cast::<Header>().write(Header {
                magic: MAGIC,
                slots,
                fetch_lock: AtomicU32::new(0),
                active: AtomicU32::new(0),
                next_fetch: AtomicI64::new(0),
                generation: AtomicU64::new(0),
                source: AtomicU64::new(0),
                validator_len: AtomicU64::new(0),
                validator: core::array::from_fn(|_| AtomicU64::new(0)),
                errors: AtomicU64::new(0),
                blocked: AtomicU64::new(0),
                dry_run: AtomicU64::new(0),
                halves: [half(), half()],
            });
            let first = region.add(size_of::<Header>()).cast::<Slot>();
            for i in 0..(2 * slots) as usize {
                first.add(i).write(Slot {
                    k0: AtomicU64::new(0),
                    k1: AtomicU64::new(0),
                    expires: AtomicI64::new(0),
                });
            }
            Some(Self::layout(region))
        }
    }

    /// Attaches to a denylist formatted by [`Self::init`] (the previous cycle's, on reload).
    ///
    /// # Safety
    ///
    /// `region` must be the start of a region on which `init` succeeded, still mapped.
    pub unsafe fn attach(region: *mut u8) -> Option<Denylist> {
        // SAFETY: per the contract the header was written by init; magic never changes.
        let magic = unsafe { (*region.cast::<Header>()).magic };
        // SAFETY: as above.
        (magic == MAGIC).then(|| unsafe { Self::layout(region) })
    }

    /// # Safety
    ///
    /// `region` starts with a header written by init, followed by its slots.
    unsafe fn layout(region: *mut u8) -> Denylist {
        let header = region.cast::<Header>().cast_const();
        // SAFETY: slots is written once by init, before any view exists.
        let slots = unsafe { (*header).slots };
        // SAFETY: the slots follow the header, per init.
        let first = unsafe { region.add(size_of::<Header>()) }.cast::<Slot>().cast_const();
        Denylist { header, slots: first, mask: slots - 1 }
    }

    fn header(&self) -> &Header {
        // SAFETY: valid for the view's life per init/attach; all shared words are atomics.
        unsafe { &*self.header }
    }

    fn half_slots(&self, half: usize) -> &[Slot] {
        let slots = (self.mask + 1) as usize;
        // SAFETY: 2 * slots slots follow the header, all written by init; atomics only.
        unsafe { core::slice::from_raw_parts(self.slots.add(half * slots), slots) }
    }

    /// Entries a list may have.
    pub fn capacity(&self) -> usize {
        ((self.mask + 1) / 4 * 3) as usize
    }

    /// Whether `key` is on the list and has not expired at `now`. Never waits: a lookup
    /// that keeps racing with rewrites lets the request through.
    pub fn contains(&self, key: &KeyHash, now: Millis) -> bool {
        let (k0, k1) = words(key);
        let header = self.header();
        for _ in 0..READ_TRIES {
            let active = (header.active.load(Ordering::Acquire) & 1) as usize;
            let half = &header.halves[active];
            let before = half.seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                // Being rewritten, so no longer the active half: read the index again.
                core::hint::spin_loop();
                continue;
            }
            let expires = self.probe(active, k0, k1);
            fence(Ordering::Acquire);
            if half.seq.load(Ordering::Relaxed) == before {
                return expires.is_some_and(|e| e > now.0);
            }
        }
        false
    }

    /// The expiry of `(k0, k1)` in a half, if it is there.
    fn probe(&self, half: usize, k0: u64, k1: u64) -> Option<i64> {
        let slots = self.half_slots(half);
        let mut i = k0 & self.mask;
        // Bounded even if a racing rewrite made the half look full.
        for _ in 0..slots.len() {
            let slot = &slots[i as usize];
            let (s0, s1) = (slot.k0.load(Ordering::Relaxed), slot.k1.load(Ordering::Relaxed));
            if s0 == k0 && s1 == k1 {
                return Some(slot.expires.load(Ordering::Relaxed));
            }
            if s0 == 0 && s1 == 0 {
                return None;
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    pub fn stats(&self) -> DenylistStats {
        let header = self.header();
        let active = (header.active.load(Ordering::Acquire) & 1) as usize;
        let half = &header.halves[active];
        DenylistStats {
            entries: half.len.load(Ordering::Relaxed),
            version: half.version.load(Ordering::Relaxed),
            errors: header.errors.load(Ordering::Relaxed),
            capacity: self.capacity() as u64,
            blocked: header.blocked.load(Ordering::Relaxed),
            dry_run: header.dry_run.load(Ordering::Relaxed),
        }
    }

    /// A request was answered with the block status.
    pub fn count_blocked(&self) {
        self.header().blocked.fetch_add(1, Ordering::Relaxed);
    }

    /// A request would have been blocked (`dry_run`).
    pub fn count_dry_run(&self) {
        self.header().dry_run.fetch_add(1, Ordering::Relaxed);
    }

    /// A fetch failed or its list was refused.
    pub fn count_error(&self) {
        self.header().errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Makes the configuration being loaded the one whose workers fetch, and returns its
    /// generation for [`Self::try_fetch`].
    pub fn new_generation(&self) -> u64 {
        self.header().generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Takes the fetch lock if nobody holds it (or its holder died), if a fetch is due at
    /// `now`, and if `generation` is the current configuration's. Never waits.
    pub fn try_fetch(&self, now: Millis, generation: u64) -> Option<FetchGuard<'_>> {
        let header = self.header();
        if header.next_fetch.load(Ordering::Relaxed) > now.0
            || header.generation.load(Ordering::Relaxed) != generation
        {
            return None;
        }
        let me = std::process::id();
        let lock = &header.fetch_lock;
        let taken = match lock.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => true,
            Err(owner) => {
                owner != me
                    && !process_alive(owner)
                    && lock
                        .compare_exchange(owner, me, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
            }
        };
        if !taken {
            return None;
        }
        // Another worker may have fetched between the check and the lock.
        if header.next_fetch.load(Ordering::Relaxed) > now.0 {
            lock.store(0, Ordering::Release);
            return None;
        }
        Some(FetchGuard { list: self })
    }
}

/// The fetch lock, held until dropped; the only way to replace the list.
pub struct FetchGuard<'a> {
    list: &'a Denylist,
}

impl Drop for FetchGuard<'_> {
    fn drop(&mut self) {
        self.list.header().fetch_lock.store(0, Ordering::Release);
    }
}

/// A list that does not fit in the zone; it was refused whole.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge {
    pub entries: usize,
    pub capacity: usize,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} entries do not fit in the zone, which holds {}", self.entries, self.capacity)
    }
}

impl FetchGuard<'_> {
    /// The validator of the list in use, if it came from `source`.
    pub fn validator(&self, source: u64) -> Option<Vec<u8>> {
        let header = self.list.header();
        if header.source.load(Ordering::Relaxed) != source {
            return None;
        }
        let len = header.validator_len.load(Ordering::Relaxed) as usize;
        if len == 0 || len > VALIDATOR_MAX {
            return None;
        }
        let mut out = Vec::with_capacity(VALIDATOR_MAX);
        for word in &header.validator {
            out.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        out.truncate(len);
        Some(out)
    }

    /// Remembers the validator of the list in use and where it came from (`None`: the next
    /// fetch is a full one).
    pub fn set_validator(&self, source: u64, validator: Option<&[u8]>) {
        let header = self.list.header();
        let validator = validator.filter(|v| v.len() <= VALIDATOR_MAX).unwrap_or_default();
        for (word, chunk) in header.validator.iter().zip(validator.chunks(8)) {
            let mut bytes = [0u8; 8];
            bytes[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        }
        header.validator_len.store(validator.len() as u64, Ordering::Relaxed);
        header.source.store(source, Ordering::Relaxed);
    }

    /// The next fetch is due at `at`, whichever worker does it.
    pub fn schedule(&self, at: Millis) {
        self.list.header().next_fetch.store(at.0, Ordering::Relaxed);
    }

    /// Replaces the list: writes the half nobody reads, then makes it the one in use.
    pub fn replace(&self, list: &List) -> Result<(), TooLarge> {
        let capacity = self.list.capacity();
        if list.entries.len() > capacity {
            return Err(TooLarge { entries: list.entries.len(), capacity });
        }
        let header = self.list.header();
        let target = 1 - (header.active.load(Ordering::Relaxed) & 1) as usize;
        let half = &header.halves[target];
        // A writer that died mid-way left the counter odd: it stays odd until this rewrite
        // is complete.
        let odd = half.seq.load(Ordering::Relaxed) | 1;
        half.seq.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);

        let slots = self.list.half_slots(target);
        for slot in slots {
            slot.k0.store(0, Ordering::Relaxed);
            slot.k1.store(0, Ordering::Relaxed);
        }
        for &(key, expires) in &list.entries {
            let (k0, k1) = words(&key);
            let mut i = k0 & self.list.mask;
            loop {
                let slot = &slots[i as usize];
                let (s0, s1) = (slot.k0.load(Ordering::Relaxed), slot.k1.load(Ordering::Relaxed));
                if s0 == 0 && s1 == 0 {
                    slot.k0.store(k0, Ordering::Relaxed);
                    slot.k1.store(k1, Ordering::Relaxed);
                    slot.expires.store(expires.map_or(NEVER, |m| m.0), Ordering::Relaxed);
                    break;
                }
                // Lists are deduplicated; and at most three quarters full, so this ends.
                debug_assert!(s0 != k0 || s1 != k1);
                i = (i + 1) & self.list.mask;
            }
        }
        half.version.store(list.version, Ordering::Relaxed);
        half.len.store(list.entries.len() as u64, Ordering::Relaxed);
        half.seq.store(odd.wrapping_add(1), Ordering::Release);
        header.active.store(target as u32, Ordering::Release);
        Ok(())
    }
}

/// The request path's cache of key hashes, one per worker: a session's requests share their
/// key, and a hit costs a keyed SipHash and a compare instead of an HMAC-SHA-256 (two SHA-256
/// compressions). Direct-mapped, fixed size; only hashes are kept, never key values.
pub struct KeyHashCache {
    slots: Box<[(ZoneKey, KeyHash)]>,
}

const CACHE_SLOTS: usize = 1024;

impl Default for KeyHashCache {
    fn default() -> Self {
        KeyHashCache { slots: vec![(ZoneKey::default(), KeyHash::default()); CACHE_SLOTS].into() }
    }
}

impl KeyHashCache {
    /// `secret.key_hash(space, value)`.
    pub fn key_hash(&mut self, secret: &Secret, space: &[u8], value: &[u8]) -> KeyHash {
        // 128 bits of keyed hash: equal tags are the same (space, value).
        let tag = secret.zone_key(space, value);
        let index = usize::from(u16::from_le_bytes([tag.0[0], tag.0[1]])) % CACHE_SLOTS;
        let slot = &mut self.slots[index];
        // An all-zero tag stands for an empty slot, and is never taken from it.
        if slot.0 != tag || tag == ZoneKey::default() {
            *slot = (tag, secret.key_hash(space, value));
        }
        slot.1
    }
}

/// A parsed denylist document: its version and each key hash once, with the latest expiry
/// given for it (`None`: never expires).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct List {
    pub version: u64,
    pub entries: Vec<(KeyHash, Option<Millis>)>,
}

/// Why a document was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct DocumentError(pub String);

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Deserialize)]
struct Document {
    version: u64,
    entries: Vec<EntryIn>,
}

#[derive(Deserialize)]
struct EntryIn {
    key_hash: String,
    expires: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    reason: Option<IgnoredAny>,
}

/// Parses a key hash in the form records carry it: 32 lowercase hex digits.
pub fn parse_key_hash(text: &str) -> Option<KeyHash> {
    let b = text.as_bytes();
    if b.len() != 32 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 16];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(KeyHash(out))
}

/// Text of a bad value quoted in an error, cut short.
fn quote(text: &str) -> String {
    let cut: String = text.chars().take(40).collect();
    if cut.len() < text.len() {
        format!("{cut}...")
    } else {
        cut
    }
}

impl List {
    /// Parses a document `{"version":N,"entries":[{"key_hash":"..","expires":"RFC 3339"|null,
    /// "reason":".."}]}`; any bad part refuses it whole.
    pub fn parse(document: &[u8]) -> Result<List, DocumentError> {
        let doc: Document = serde_json::from_slice(document)
            .map_err(|e| DocumentError(format!("invalid document: {e}")))?;
        let mut entries = Vec::with_capacity(doc.entries.len());
        for (n, entry) in doc.entries.iter().enumerate() {
            let key =
                parse_key_hash(&entry.key_hash).filter(|k| k.0 != [0; 16]).ok_or_else(|| {
                    DocumentError(format!(
                        "invalid key_hash \"{}\" in entry {n}",
                        quote(&entry.key_hash)
                    ))
                })?;
            let expires = match &entry.expires {
                None => None,
                Some(text) => Some(Millis::parse_rfc3339(text).ok_or_else(|| {
                    DocumentError(format!("invalid expires \"{}\" in entry {n}", quote(text)))
                })?),
            };
            entries.push((key, expires));
        }
        // One entry per key: the one that lasts longest.
        entries.sort_unstable_by(|a, b| {
            a.0 .0
                .cmp(&b.0 .0)
                .then_with(|| b.1.map_or(NEVER, |m| m.0).cmp(&a.1.map_or(NEVER, |m| m.0)))
        });
        entries.dedup_by(|later, first| later.0 == first.0);
        Ok(List { version: doc.version, entries })
    }
}

#[cfg(test)]
mod tests;
