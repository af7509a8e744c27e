//! How many sessions called an endpoint: a distinct count that can be merged across hours.
//!
//! Distinct counts do not add up (a session active for three hours is one session, not three),
//! so each endpoint-hour keeps a sketch of its sessions and a range merges the sketches. Up to
//! [`EXACT_LIMIT`] sessions the sketch is the set of their hashes and the count is exact; past
//! it, a HyperLogLog of 2^12 registers, within about 1.6% (one standard error) of the count.
//!
//! The state of a sketch depends only on the set of sessions added, never on the order they
//! came in or how partial sketches were grouped before merging: the set while it is small,
//! otherwise the register-wise maximum. So both stores, merging the same hours in any order,
//! hold the same sketch and read the same count. The crates at hand do not give that: they
//! keep running floating-point sums that depend on the order of insertion, or store tagged
//! pointers as their serialized form; this one is small and its estimate is computed from the
//! registers alone, with Ertl's estimator ("New cardinality estimation algorithms for
//! HyperLogLog sketches", 2017), which needs no empirical bias tables.

use std::hash::Hasher;

use siphasher::sip::SipHasher13;

use super::histogram::{push_varint, take_varint, DecodeError};

/// Sessions counted exactly, one 8-byte hash each.
pub const EXACT_LIMIT: usize = 64;

/// Index bits: 2^12 registers.
const P: u32 = 12;
const REGISTERS: usize = 1 << P;
/// The largest register value: all 52 remaining bits zero.
const MAX_RANK: u8 = (64 - P + 1) as u8;

/// The hash of a session id. SipHash-1-3 with fixed keys: stable across releases and
/// platforms, which the stored sketches rely on. Session ids are keyed hashes already; the
/// fixed keys only spread ids an ingest client made up.
pub fn session_hash(session_id: &str) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(0, 0);
    hasher.write(session_id.as_bytes());
    hasher.finish()
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Sorted, without duplicates, at most `EXACT_LIMIT`.
    Exact(Vec<u64>),
    Registers(Box<[u8; REGISTERS]>),
}

/// A distinct-count sketch of session hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Distinct {
    state: State,
}

impl Default for Distinct {
    fn default() -> Self {
        Distinct { state: State::Exact(Vec::new()) }
    }
}

fn register(hash: u64) -> (usize, u8) {
    let index = (hash >> (64 - P)) as usize;
    let rest = hash << P;
    // Leading zeros of the remaining 52 bits, plus one.
    let rank = (rest.leading_zeros().min(64 - P) + 1) as u8;
    (index, rank)
}

impl Distinct {
    pub fn new() -> Self {
        Distinct::default()
    }

    /// Counts a session.
    pub fn insert(&mut self, session_id: &str) {
        self.insert_hash(session_hash(session_id));
    }

    pub fn insert_hash(&mut self, hash: u64) {
        match &mut self.state {
            State::Exact(hashes) => {
                if let Err(at) = hashes.binary_search(&hash) {
                    if hashes.len() < EXACT_LIMIT {
                        hashes.insert(at, hash);
                    } else {
                        let mut registers = to_registers(hashes);
                        raise(&mut registers, hash);
                        self.state = State::Registers(registers);
                    }
                }
            }
            State::Registers(registers) => raise(registers, hash),
        }
    }

    /// Adds another sketch's sessions.
    pub fn merge(&mut self, other: &Distinct) {
        match &other.state {
            State::Exact(theirs) => {
                if let State::Exact(mine) = &mut self.state {
                    // Both sorted: one pass rather than a search and a shift per hash.
                    let union = sorted_union(mine, theirs);
                    self.state = if union.len() <= EXACT_LIMIT {
                        State::Exact(union)
                    } else {
                        State::Registers(to_registers(&union))
                    };
                    return;
                }
                for &hash in theirs {
                    self.insert_hash(hash);
                }
            }
            State::Registers(theirs) => {
                if let State::Exact(hashes) = &self.state {
                    let registers = to_registers(hashes);
                    self.state = State::Registers(registers);
                }
                if let State::Registers(mine) = &mut self.state {
                    for (m, t) in mine.iter_mut().zip(theirs.iter()) {
                        *m = (*m).max(*t);
                    }
                }
            }
        }
    }

    /// Whether the count is exact.
    pub fn is_exact(&self) -> bool {
        matches!(self.state, State::Exact(_))
    }

    /// The number of distinct sessions: exact up to [`EXACT_LIMIT`], estimated past it.
    pub fn count(&self) -> u64 {
        match &self.state {
            State::Exact(hashes) => hashes.len() as u64,
            // Past the exact set there are more than `EXACT_LIMIT` sessions, whatever the
            // estimate says.
            State::Registers(registers) => estimate(registers).max(EXACT_LIMIT as u64 + 1),
        }
    }

    /// A compact form for a store that keeps the sketch in one column. A tag byte, then: for
    /// the exact set, its hashes as 8 bytes each; for the registers, either the non-zero ones
    /// as (distance from the previous index, value) varint pairs, or all of them as one byte
    /// each, whichever is shorter.
    pub fn encode(&self) -> Vec<u8> {
        match &self.state {
            State::Exact(hashes) => {
                let mut out = Vec::with_capacity(1 + hashes.len() * 8);
                out.push(TAG_EXACT);
                for hash in hashes {
                    out.extend_from_slice(&hash.to_le_bytes());
                }
                out
            }
            State::Registers(registers) => {
                let mut sparse = vec![TAG_SPARSE];
                let mut previous = 0;
                for (index, &rank) in registers.iter().enumerate() {
                    if rank != 0 {
                        push_varint(&mut sparse, (index - previous) as u64);
                        sparse.push(rank);
                        previous = index;
                    }
                }
                if sparse.len() <= REGISTERS {
                    return sparse;
                }
                let mut dense = Vec::with_capacity(1 + REGISTERS);
                dense.push(TAG_DENSE);
                dense.extend_from_slice(&registers[..]);
                dense
            }
        }
    }

    /// Reads what [`Distinct::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Distinct, DecodeError> {
        let (&tag, mut body) = bytes.split_first().ok_or(DecodeError)?;
        let state = match tag {
            TAG_EXACT => {
                if body.len() % 8 != 0 || body.len() / 8 > EXACT_LIMIT {
                    return Err(DecodeError);
                }
                let hashes: Vec<u64> = body
                    .chunks_exact(8)
                    .map(|chunk| u64::from_le_bytes(chunk.try_into().unwrap_or_default()))
                    .collect();
                if hashes.windows(2).any(|pair| pair[0] >= pair[1]) {
                    return Err(DecodeError);
                }
                State::Exact(hashes)
            }
            TAG_SPARSE => {
                let mut registers = Box::new([0u8; REGISTERS]);
                let mut index = 0u64;
                let mut first = true;
                while !body.is_empty() {
                    let delta = take_varint(&mut body)?;
                    let (&rank, rest) = body.split_first().ok_or(DecodeError)?;
                    body = rest;
                    index = index.checked_add(delta).ok_or(DecodeError)?;
                    if (!first && delta == 0) || index >= REGISTERS as u64 || !valid_rank(rank) {
                        return Err(DecodeError);
                    }
                    registers[index as usize] = rank;
                    first = false;
                }
                State::Registers(registers)
            }
            TAG_DENSE => {
                let registers: [u8; REGISTERS] = body.try_into().map_err(|_| DecodeError)?;
                if registers.iter().any(|&rank| rank != 0 && !valid_rank(rank)) {
                    return Err(DecodeError);
                }
                State::Registers(Box::new(registers))
            }
            _ => return Err(DecodeError),
        };
        Ok(Distinct { state })
    }
}

const TAG_EXACT: u8 = 0;
const TAG_SPARSE: u8 = 1;
const TAG_DENSE: u8 = 2;

fn valid_rank(rank: u8) -> bool {
    (1..=MAX_RANK).contains(&rank)
}

/// The hashes of two sorted sets, sorted, each once.
fn sorted_union(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut union = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let next = a[i].min(b[j]);
        i += usize::from(a[i] == next);
        j += usize::from(b[j] == next);
        union.push(next);
    }
    union.extend_from_slice(&a[i..]);
    union.extend_from_slice(&b[j..]);
    union
}

fn to_registers(hashes: &[u64]) -> Box<[u8; REGISTERS]> {
    let mut registers = Box::new([0u8; REGISTERS]);
    for &hash in hashes {
        raise(&mut registers, hash);
    }
    registers
}

fn raise(registers: &mut [u8; REGISTERS], hash: u64) {
    let (index, rank) = register(hash);
    registers[index] = registers[index].max(rank);
}

/// Ertl's improved raw estimator, from the histogram of register values.
fn estimate(registers: &[u8; REGISTERS]) -> u64 {
    let q = usize::from(MAX_RANK) - 1;
    let mut histogram = [0u32; 64];
    for &rank in registers.iter() {
        histogram[usize::from(rank)] += 1;
    }
    let m = REGISTERS as f64;
    let mut z = m * tau(1.0 - f64::from(histogram[q + 1]) / m);
    for k in (1..=q).rev() {
        z = 0.5 * (z + f64::from(histogram[k]));
    }
    z += m * sigma(f64::from(histogram[0]) / m);
    let alpha = 0.5 / std::f64::consts::LN_2;
    (alpha * m * m / z).round() as u64
}

/// σ(x) = x + Σ_{k≥1} x^(2^k)·2^(k−1), for the share of empty registers.
fn sigma(mut x: f64) -> f64 {
    if x >= 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let previous = z;
        z += x * y;
        y += y;
        if z == previous {
            return z;
        }
    }
}

/// τ(x) = (1 − x − Σ_{k≥1} (1 − x^(2^−k))²·2^−k) / 3, for the share of saturated registers.
fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let previous = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if z == previous {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Hashes of distinct ids, as the explorer would see them.
    fn ids(from: u64, to: u64) -> impl Iterator<Item = String> {
        (from..to).map(|i| format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
    }

    #[test]
    fn small_counts_are_exact() {
        let mut d = Distinct::new();
        assert_eq!(d.count(), 0);
        for id in ids(0, EXACT_LIMIT as u64) {
            d.insert(&id);
            d.insert(&id);
        }
        assert!(d.is_exact());
        assert_eq!(d.count(), EXACT_LIMIT as u64);
        d.insert("one more");
        assert!(!d.is_exact());
        assert!(d.count().abs_diff(EXACT_LIMIT as u64 + 1) <= 2, "{}", d.count());
    }

    #[test]
    fn large_counts_are_within_a_few_percent() {
        for n in [100u64, 1_000, 5_000, 20_000, 100_000, 1_000_000] {
            let mut d = Distinct::new();
            for id in ids(0, n) {
                d.insert(&id);
            }
            let error = (d.count() as f64 - n as f64).abs() / n as f64;
            // Three standard errors of 1.04/√4096.
            assert!(error < 0.05, "{n}: {} ({:.2}%)", d.count(), error * 100.0);
        }
    }

    #[test]
    fn encoding_round_trips_and_rejects_junk() {
        let mut sketches = vec![Distinct::new()];
        for n in [3u64, EXACT_LIMIT as u64, 200, 50_000] {
            let mut d = Distinct::new();
            for id in ids(0, n) {
                d.insert(&id);
            }
            sketches.push(d);
        }
        for d in &sketches {
            assert_eq!(Distinct::decode(&d.encode()).as_ref(), Ok(d));
        }
        assert!(sketches[3].encode().len() < 1000, "{}", sketches[3].encode().len());
        assert_eq!(sketches[4].encode().len(), 1 + REGISTERS);
        assert_eq!(Distinct::decode(&[]), Err(DecodeError));
        assert_eq!(Distinct::decode(&[9]), Err(DecodeError));
        assert_eq!(Distinct::decode(&[TAG_EXACT, 1, 2, 3]), Err(DecodeError));
        let unsorted = [&[TAG_EXACT][..], &2u64.to_le_bytes(), &1u64.to_le_bytes()].concat();
        assert_eq!(Distinct::decode(&unsorted), Err(DecodeError));
        assert_eq!(Distinct::decode(&[TAG_SPARSE, 0, MAX_RANK + 1]), Err(DecodeError));
        assert_eq!(Distinct::decode(&[TAG_SPARSE, 0, 1, 0, 2]), Err(DecodeError));
        assert_eq!(Distinct::decode(&[TAG_SPARSE, 0x80, 0x20, 1]), Err(DecodeError));
        assert_eq!(Distinct::decode(&[TAG_DENSE, 1]), Err(DecodeError));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// However the sessions are split into partial sketches and merged, the result is the
        /// sketch of all of them: what makes the two stores agree.
        #[test]
        fn merging_depends_only_on_the_set(
            // Values drawn from a hundred as often as not, so the parts share sessions.
            hashes in prop::collection::vec(
                prop_oneof![any::<u64>(), (0u64..100).prop_map(|x| x.wrapping_mul(0x9e37_79b9_7f4a_7c15))],
                0..400,
            ),
            cuts in prop::collection::vec(0usize..400, 0..6),
        ) {
            let mut whole = Distinct::new();
            for &hash in &hashes {
                whole.insert_hash(hash);
            }
            let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(hashes.len())).collect();
            bounds.push(0);
            bounds.push(hashes.len());
            bounds.sort_unstable();
            let parts: Vec<Distinct> = bounds
                .windows(2)
                .map(|w| {
                    let mut part = Distinct::new();
                    for &hash in hashes[w[0]..w[1]].iter().rev() {
                        part.insert_hash(hash);
                    }
                    part
                })
                .collect();
            let mut forward = Distinct::new();
            for part in &parts {
                forward.merge(part);
            }
            let mut backward = Distinct::new();
            for part in parts.iter().rev() {
                backward.merge(part);
            }
            prop_assert_eq!(&forward, &whole);
            prop_assert_eq!(&backward, &whole);
            prop_assert_eq!(forward.count(), whole.count());
        }
    }
}
