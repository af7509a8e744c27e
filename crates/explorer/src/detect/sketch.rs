//! The bounded, mergeable pieces the detector state is made of.
//!
//! Every piece is a commutative monoid: merging two pieces gives the same result in any order
//! and any grouping, and observing a value is merging the piece made of that value alone. Each
//! has the shape of a ClickHouse aggregate function so that a column store can keep the same
//! state: [`Earliest`] and [`Smallest`] are `groupArraySorted(N)`, [`Distinct`] is
//! `uniqUpTo(N)`, [`Counts`] is `sumMap`, and [`Capped`] is a table keyed by
//! (session, key) of which the `N` smallest keys are read.
//!
//! Every piece serializes as the list it holds, written from where it lies rather than from a
//! copy (a store writes the states of the sessions each transaction touched), and is rebuilt
//! through its own `observe` when read back, so that a stored state always keeps its bounds
//! and order.

use std::cmp::Ordering;
use std::fmt;
use std::hash::Hasher;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use siphasher::sip::SipHasher13;

/// Stable 64-bit hash of a text: the same in every process and release, so that states built
/// by different explorer instances merge. The key is fixed and public: the hashes only need
/// to spread values, not to hide them.
pub fn hash(text: &str) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(0x6170_695f_7365_7373, 0x696f_6e73_5f64_6574);
    hasher.write(text.as_bytes());
    hasher.finish()
}

/// A request id as kept in evidence. The module writes 32 lowercase hex digits, kept as a
/// number (16 bytes instead of a 32-byte allocation); any other text is kept as is.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum RequestId {
    Hex(u128),
    Text(Box<str>),
}

/// Ids are clipped to this many bytes: a bound on what a hostile record can make us hold. The
/// module's ids are 32 characters.
pub const MAX_REQUEST_ID: usize = 128;

impl RequestId {
    pub fn new(text: &str) -> RequestId {
        let hex = text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        match hex.then(|| u128::from_str_radix(text, 16).ok()).flatten() {
            Some(value) => RequestId::Hex(value),
            None => RequestId::Text(clip(text, MAX_REQUEST_ID).into()),
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Hex(value) => write!(f, "{value:032x}"),
            RequestId::Text(text) => f.write_str(text),
        }
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Ordered as the texts are, so that every store (and `ORDER BY request_id`) agrees.
impl Ord for RequestId {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            // Fixed-width lowercase hex sorts as its value.
            (RequestId::Hex(a), RequestId::Hex(b)) => a.cmp(b),
            _ => self.to_string().cmp(&other.to_string()),
        }
    }
}

/// A request id in a binary format: the module's 16 bytes, or the text of any other.
#[derive(Serialize, Deserialize)]
enum CompactId<'a> {
    Hex([u8; 16]),
    Text(std::borrow::Cow<'a, str>),
}

/// As text in a human-readable format (JSON); in a binary one (what a store keeps, see
/// `store::signals::encode_state`) a module id takes 17 bytes instead of 33.
impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            return serializer.collect_str(self);
        }
        match self {
            RequestId::Hex(value) => CompactId::Hex(value.to_be_bytes()),
            RequestId::Text(text) => CompactId::Text(std::borrow::Cow::Borrowed(text)),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            return Ok(RequestId::new(&String::deserialize(deserializer)?));
        }
        // Rebuilt through `new`, like a text: a stored id keeps its bounds.
        Ok(match CompactId::deserialize(deserializer)? {
            CompactId::Hex(bytes) => RequestId::Hex(u128::from_be_bytes(bytes)),
            CompactId::Text(text) => RequestId::new(&text),
        })
    }
}

impl PartialOrd for RequestId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Where a request stands in time: its start, then its id to break ties, so that "the
/// earliest" is one answer whatever order the records came in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub ts: i64,
    pub request_id: RequestId,
}

/// The `N` earliest requests of a category, without repeats.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "Vec<Stamp>")]
pub struct Earliest<const N: usize> {
    stamps: Vec<Stamp>,
}

impl<const N: usize> From<Vec<Stamp>> for Earliest<N> {
    fn from(stamps: Vec<Stamp>) -> Self {
        let mut earliest = Earliest::default();
        stamps.iter().for_each(|stamp| earliest.observe(stamp));
        earliest
    }
}

impl<const N: usize> Serialize for Earliest<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.stamps.serialize(serializer)
    }
}

impl<const N: usize> Earliest<N> {
    pub fn observe(&mut self, stamp: &Stamp) {
        if self.stamps.len() == N && self.stamps.last().is_some_and(|last| stamp >= last) {
            return;
        }
        if let Err(at) = self.stamps.binary_search(stamp) {
            // Lists are short and most stay shorter than a default allocation.
            self.stamps.reserve_exact(1);
            self.stamps.insert(at, stamp.clone());
            self.stamps.truncate(N);
        }
    }

    pub fn merge(&mut self, other: &Self) {
        for stamp in &other.stamps {
            self.observe(stamp);
        }
    }

    /// Oldest first.
    pub fn stamps(&self) -> &[Stamp] {
        &self.stamps
    }

    pub fn ids(&self) -> Vec<String> {
        self.stamps.iter().map(|stamp| stamp.request_id.to_string()).collect()
    }

    pub fn heap_bytes(&self) -> usize {
        self.stamps.capacity() * size_of::<Stamp>()
            + self.stamps.iter().map(stamp_heap).sum::<usize>()
    }
}

fn stamp_heap(stamp: &Stamp) -> usize {
    match &stamp.request_id {
        RequestId::Hex(_) => 0,
        RequestId::Text(text) => text.len(),
    }
}

/// The `N` smallest values, repeats included (a multiset: two requests may start in the same
/// millisecond, and the store never hands the same record twice).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "Vec<i64>")]
pub struct Smallest<const N: usize> {
    values: Vec<i64>,
}

impl<const N: usize> From<Vec<i64>> for Smallest<N> {
    fn from(values: Vec<i64>) -> Self {
        let mut smallest = Smallest::default();
        values.into_iter().for_each(|value| smallest.observe(value));
        smallest
    }
}

impl<const N: usize> Serialize for Smallest<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.values.serialize(serializer)
    }
}

impl<const N: usize> Smallest<N> {
    pub fn observe(&mut self, value: i64) {
        if self.values.len() == N && self.values.last().is_some_and(|&last| value >= last) {
            return;
        }
        let at = self.values.partition_point(|&v| v <= value);
        self.values.insert(at, value);
        self.values.truncate(N);
    }

    pub fn merge(&mut self, other: &Self) {
        for &value in &other.values {
            self.observe(value);
        }
    }

    /// Ascending.
    pub fn values(&self) -> &[i64] {
        &self.values
    }

    pub fn heap_bytes(&self) -> usize {
        self.values.capacity() * size_of::<i64>()
    }
}

/// How many distinct values, exact up to `N` and "more than `N`" beyond: the set of hashes is
/// dropped once it outgrows `N`, so the count saturates instead of growing.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(from = "Option<Vec<u64>>")]
pub enum Distinct<const N: usize> {
    /// Sorted hashes, at most `N`.
    Exact(Vec<u64>),
    Saturated,
}

/// `None` once saturated.
impl<const N: usize> From<Option<Vec<u64>>> for Distinct<N> {
    fn from(hashes: Option<Vec<u64>>) -> Self {
        let Some(hashes) = hashes else { return Distinct::Saturated };
        let mut distinct = Distinct::default();
        hashes.into_iter().for_each(|hash| distinct.observe(hash));
        distinct
    }
}

/// `None` once saturated.
impl<const N: usize> Serialize for Distinct<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Distinct::Exact(hashes) => serializer.serialize_some(hashes),
            Distinct::Saturated => serializer.serialize_none(),
        }
    }
}

impl<const N: usize> Default for Distinct<N> {
    fn default() -> Self {
        Distinct::Exact(Vec::new())
    }
}

impl<const N: usize> Distinct<N> {
    pub fn observe(&mut self, value: u64) {
        if let Distinct::Exact(hashes) = self {
            if let Err(at) = hashes.binary_search(&value) {
                if hashes.len() == N {
                    *self = Distinct::Saturated;
                } else {
                    hashes.insert(at, value);
                }
            }
        }
    }

    pub fn merge(&mut self, other: &Self) {
        match other {
            Distinct::Saturated => *self = Distinct::Saturated,
            Distinct::Exact(hashes) => {
                for &value in hashes {
                    self.observe(value);
                }
            }
        }
    }

    /// The number of distinct values, or `N + 1` once saturated.
    pub fn count(&self) -> usize {
        match self {
            Distinct::Exact(hashes) => hashes.len(),
            Distinct::Saturated => N + 1,
        }
    }

    pub fn is_saturated(&self) -> bool {
        matches!(self, Distinct::Saturated)
    }

    /// "12", or "more than 128".
    pub fn describe(&self) -> String {
        match self {
            Distinct::Exact(hashes) => hashes.len().to_string(),
            Distinct::Saturated => format!("more than {N}"),
        }
    }

    pub fn heap_bytes(&self) -> usize {
        match self {
            Distinct::Exact(hashes) => hashes.capacity() * size_of::<u64>(),
            Distinct::Saturated => 0,
        }
    }
}

/// Counts per key (`sumMap`). The keys a caller uses are bounded by construction (minute of
/// the day, HTTP status), which bounds the map.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(from = "Vec<(K, u32)>", bound(deserialize = "K: Deserialize<'de> + Ord + Copy"))]
pub struct Counts<K> {
    entries: Vec<(K, u32)>,
}

impl<K: Ord + Copy> From<Vec<(K, u32)>> for Counts<K> {
    fn from(entries: Vec<(K, u32)>) -> Self {
        let mut counts = Counts::default();
        entries.into_iter().for_each(|(key, count)| counts.add(key, count));
        counts
    }
}

impl<K: Serialize> Serialize for Counts<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.entries.serialize(serializer)
    }
}

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Counts { entries: Vec::new() }
    }
}

impl<K: Ord + Copy> Counts<K> {
    pub fn add(&mut self, key: K, count: u32) {
        match self.entries.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(at) => self.entries[at].1 = self.entries[at].1.saturating_add(count),
            Err(at) => self.entries.insert(at, (key, count)),
        }
    }

    pub fn merge(&mut self, other: &Self) {
        for &(key, count) in &other.entries {
            self.add(key, count);
        }
    }

    pub fn get(&self, key: K) -> u32 {
        self.entries.binary_search_by(|(k, _)| k.cmp(&key)).map_or(0, |at| self.entries[at].1)
    }

    /// In key order.
    pub fn iter(&self) -> impl Iterator<Item = (K, u32)> + '_ {
        self.entries.iter().copied()
    }

    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * size_of::<(K, u32)>()
    }
}

/// What a [`Capped`] table holds per key.
pub trait Entry: Clone {
    fn merge(&mut self, other: &Self);
    fn heap_bytes(&self) -> usize;
}

/// Entries per key for at most `N` keys: the `N` smallest key hashes. A key among the `N`
/// smallest of all the keys a session ever had is among the `N` smallest of every part it was
/// seen in, so its entry is kept whole wherever it was merged: the table is the same
/// whatever the order and grouping of the merges. Keys beyond the cap are left out.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(from = "Vec<(u64, V)>", bound(deserialize = "V: Deserialize<'de> + Entry"))]
pub struct Capped<V, const N: usize> {
    entries: Vec<(u64, V)>,
}

impl<V: Entry, const N: usize> From<Vec<(u64, V)>> for Capped<V, N> {
    fn from(entries: Vec<(u64, V)>) -> Self {
        let mut capped = Capped { entries: Vec::new() };
        capped.merge(&Capped { entries });
        capped
    }
}

impl<V: Serialize, const N: usize> Serialize for Capped<V, N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.entries.serialize(serializer)
    }
}

impl<V, const N: usize> Default for Capped<V, N> {
    fn default() -> Self {
        Capped { entries: Vec::new() }
    }
}

impl<V: Entry, const N: usize> Capped<V, N> {
    /// Merges into the entry of `key`; `make` builds it only when the key is kept.
    pub fn merge_with(&mut self, key: u64, make: impl FnOnce() -> V, merge: impl FnOnce(&mut V)) {
        match self.entries.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(at) => merge(&mut self.entries[at].1),
            Err(at) if at < N => {
                let mut value = make();
                merge(&mut value);
                self.entries.reserve_exact(1);
                self.entries.insert(at, (key, value));
                self.entries.truncate(N);
            }
            Err(_) => {}
        }
    }

    pub fn merge(&mut self, other: &Self) {
        for (key, value) in &other.entries {
            match self.entries.binary_search_by(|(k, _)| k.cmp(key)) {
                Ok(at) => self.entries[at].1.merge(value),
                Err(at) if at < N => {
                    self.entries.insert(at, (*key, value.clone()));
                    self.entries.truncate(N);
                }
                Err(_) => {}
            }
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.entries.iter().map(|(_, value)| value)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * size_of::<(u64, V)>()
            + self.entries.iter().map(|(_, value)| value.heap_bytes()).sum::<usize>()
    }
}
