//! Quantiles of request durations and response sizes: a histogram over fixed log-scale
//! buckets.
//!
//! The bucket of a value is computed here, at ingest, and the stores keep only bucket indexes
//! and counts. Merging two histograms adds counts bucket by bucket, which SQLite and ClickHouse
//! both do exactly, so a histogram over any set of hours is the same whichever store summed it
//! and in whatever order, and the quantiles read from it here are the same too.
//!
//! Bucket `i ≥ 1` holds the values in `(MIN_VALUE·γ^(i−1), MIN_VALUE·γ^i]`, with
//! `γ = (1+α)/(1−α)`, and stands for `MIN_VALUE·2γ^i/(1+γ)`: within a relative error `α`
//! ([`RELATIVE_ERROR`], 1%) of every value in it. Bucket 0 holds zero and everything up to
//! [`MIN_VALUE`] and stands for 0. A quantile is the nearest-rank one (the `⌈q·n⌉`-th smallest
//! value), so the one read from a histogram is within 1% of the exact one.

use std::cmp::Ordering;

use integer_encoding::VarInt;

/// The relative error of a value read back from its bucket.
pub const RELATIVE_ERROR: f64 = 0.01;

/// Values at or below this are counted as zero: a microsecond, or an empty response.
pub const MIN_VALUE: f64 = 0.001;

/// `(1+α)/(1−α)`: the ratio of a bucket's upper bound to its lower one.
const GAMMA: f64 = (1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR);

/// The last bucket; larger values are counted in it. It starts near 10^32, far past any
/// duration or size.
pub const MAX_BUCKET: u16 = 4000;

/// The bucket a value falls in. Negative values and NaN count as zero, values too large for the
/// last bucket in the last bucket.
pub fn bucket(value: f64) -> u16 {
    if value.is_nan() || value <= MIN_VALUE {
        return 0;
    }
    let index = ((value / MIN_VALUE).ln() / GAMMA.ln()).ceil();
    // `ceil` of a positive finite number, so the cast only truncates an infinite one.
    (index as u64).clamp(1, u64::from(MAX_BUCKET)) as u16
}

/// The value a bucket stands for.
pub fn value(bucket: u16) -> f64 {
    if bucket == 0 {
        return 0.0;
    }
    MIN_VALUE * 2.0 * GAMMA.powi(i32::from(bucket)) / (1.0 + GAMMA)
}

/// The nearest rank of quantile `per_mille`/1000 among `n` values: `⌈n·q⌉`, at least 1.
/// Integer arithmetic, so that a store computing it in SQL finds the same rank.
pub fn rank(n: u64, per_mille: u16) -> u64 {
    (n.saturating_mul(u64::from(per_mille)).div_ceil(1000)).max(1)
}

/// Counts per bucket, kept sorted by bucket, without empty buckets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    buckets: Vec<(u16, u64)>,
}

impl Histogram {
    pub fn new() -> Self {
        Histogram::default()
    }

    /// Counts one value.
    pub fn record(&mut self, value: f64) {
        self.add(bucket(value), 1);
    }

    /// Adds `count` to a bucket.
    pub fn add(&mut self, bucket: u16, count: u64) {
        if count == 0 {
            return;
        }
        let bucket = bucket.min(MAX_BUCKET);
        match self.buckets.binary_search_by_key(&bucket, |&(b, _)| b) {
            Ok(at) => self.buckets[at].1 = self.buckets[at].1.saturating_add(count),
            Err(at) => self.buckets.insert(at, (bucket, count)),
        }
    }

    /// A histogram from (bucket, count) pairs in any order, as a store returns them; pairs for
    /// the same bucket are added.
    pub fn from_buckets(pairs: impl IntoIterator<Item = (u16, u64)>) -> Self {
        let mut histogram = Histogram::new();
        for (bucket, count) in pairs {
            histogram.add(bucket, count);
        }
        histogram
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        if other.buckets.is_empty() {
            return;
        }
        let (a, b) = (&self.buckets, &other.buckets);
        let mut merged = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            match a[i].0.cmp(&b[j].0) {
                Ordering::Less => {
                    merged.push(a[i]);
                    i += 1;
                }
                Ordering::Greater => {
                    merged.push(b[j]);
                    j += 1;
                }
                Ordering::Equal => {
                    merged.push((a[i].0, a[i].1.saturating_add(b[j].1)));
                    i += 1;
                    j += 1;
                }
            }
        }
        merged.extend_from_slice(&a[i..]);
        merged.extend_from_slice(&b[j..]);
        self.buckets = merged;
    }

    /// The (bucket, count) pairs, by bucket.
    pub fn buckets(&self) -> &[(u16, u64)] {
        &self.buckets
    }

    /// How many values were counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0u64, |sum, &(_, count)| sum.saturating_add(count))
    }

    /// The quantile `per_mille`/1000 (500 for the median, 950 for p95), or `None` when nothing
    /// was counted.
    pub fn quantile(&self, per_mille: u16) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = rank(n, per_mille.min(1000));
        let mut seen = 0u64;
        for &(bucket, count) in &self.buckets {
            seen = seen.saturating_add(count);
            if seen >= rank {
                return Some(value(bucket));
            }
        }
        self.buckets.last().map(|&(bucket, _)| value(bucket))
    }

    /// A compact form for a store that keeps a histogram in one column: the number of buckets,
    /// then for each the distance from the previous bucket and its count, all as unsigned
    /// varints. A few bytes per bucket.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.buckets.len() * 3);
        push_varint(&mut out, self.buckets.len() as u64);
        let mut previous = 0u16;
        for &(bucket, count) in &self.buckets {
            push_varint(&mut out, u64::from(bucket - previous));
            push_varint(&mut out, count);
            previous = bucket;
        }
        out
    }

    /// Reads what [`Histogram::encode`] wrote.
    pub fn decode(mut bytes: &[u8]) -> Result<Histogram, DecodeError> {
        let len = take_varint(&mut bytes)?;
        // Each bucket takes two bytes at least: a length beyond that is a corrupt value, and
        // must not size an allocation.
        if len > bytes.len() as u64 / 2 {
            return Err(DecodeError);
        }
        let mut buckets = Vec::with_capacity(len as usize);
        let mut previous = 0u64;
        for index in 0..len {
            let delta = take_varint(&mut bytes)?;
            let count = take_varint(&mut bytes)?;
            let bucket = previous.checked_add(delta).ok_or(DecodeError)?;
            if (index > 0 && delta == 0) || bucket > u64::from(MAX_BUCKET) || count == 0 {
                return Err(DecodeError);
            }
            buckets.push((bucket as u16, count));
            previous = bucket;
        }
        if !bytes.is_empty() {
            return Err(DecodeError);
        }
        Ok(Histogram { buckets })
    }
}

/// A stored histogram or sketch that does not decode: the column holds something this
/// version did not write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError;

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("corrupt endpoint statistics")
    }
}

impl std::error::Error for DecodeError {}

pub(crate) fn push_varint(out: &mut Vec<u8>, value: u64) {
    let mut buf = [0u8; 10];
    let len = value.encode_var(&mut buf);
    out.extend_from_slice(&buf[..len]);
}

pub(crate) fn take_varint(bytes: &mut &[u8]) -> Result<u64, DecodeError> {
    let (value, len) = u64::decode_var(bytes).ok_or(DecodeError)?;
    *bytes = &bytes[len..];
    Ok(value)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn exact(sorted: &[f64], per_mille: u16) -> f64 {
        sorted[rank(sorted.len() as u64, per_mille) as usize - 1]
    }

    fn within_error(estimate: f64, exact: f64) -> bool {
        if exact <= MIN_VALUE {
            return estimate == 0.0;
        }
        (estimate - exact).abs() <= RELATIVE_ERROR * exact * (1.0 + 1e-9)
    }

    #[test]
    fn buckets_hold_their_values() {
        assert_eq!(bucket(0.0), 0);
        assert_eq!(bucket(-5.0), 0);
        assert_eq!(bucket(f64::NAN), 0);
        assert_eq!(bucket(MIN_VALUE), 0);
        assert_eq!(bucket(f64::INFINITY), MAX_BUCKET);
        assert_eq!(bucket(1e300), MAX_BUCKET);
        assert_eq!(value(0), 0.0);
        for v in [0.0011, 0.5, 1.0, 12.345, 999.0, 1234.0, 65536.0, 3.6e6, 1e12] {
            assert!(within_error(value(bucket(v)), v), "{v}: {}", value(bucket(v)));
        }
        // Neighbouring buckets are ordered and a value's bucket is the first to reach it.
        for b in 1..MAX_BUCKET {
            assert!(value(b) < value(b + 1));
        }
    }

    #[test]
    fn quantiles_of_known_values() {
        let mut h = Histogram::new();
        assert_eq!(h.quantile(500), None);
        for v in 1..=100 {
            h.record(f64::from(v));
        }
        assert_eq!(h.count(), 100);
        for (q, expected) in [(500, 50.0), (950, 95.0), (990, 99.0), (1000, 100.0), (0, 1.0)] {
            let got = h.quantile(q).unwrap();
            assert!(within_error(got, expected), "p{q}: {got}");
        }
        assert_eq!(rank(1, 500), 1);
        assert_eq!(rank(3, 500), 2);
        assert_eq!(rank(20, 950), 19);
        assert_eq!(rank(21, 950), 20);
    }

    #[test]
    fn encoding_round_trips_and_rejects_junk() {
        let h = Histogram::from_buckets([(0, 3), (MAX_BUCKET, 1), (346, u64::MAX), (12, 7)]);
        assert_eq!(Histogram::decode(&h.encode()), Ok(h.clone()));
        assert_eq!(Histogram::decode(&Histogram::new().encode()), Ok(Histogram::new()));
        let bytes = h.encode();
        assert_eq!(Histogram::decode(&bytes[..bytes.len() - 1]), Err(DecodeError));
        assert_eq!(Histogram::decode(&[bytes.as_slice(), &[0]].concat()), Err(DecodeError));
        assert_eq!(Histogram::decode(&[]), Err(DecodeError));
        assert_eq!(Histogram::decode(&[0xff, 0xff, 0xff, 0xff, 0x0f]), Err(DecodeError));
        // A repeated bucket, a zero count, a bucket past the last.
        assert_eq!(Histogram::decode(&[2, 5, 1, 0, 1]), Err(DecodeError));
        assert_eq!(Histogram::decode(&[1, 5, 0]), Err(DecodeError));
        assert_eq!(Histogram::decode(&[1, 0xa1, 0x1f, 1]), Err(DecodeError));
    }

    /// Durations as they come: mostly fast, a long tail, some zeros.
    fn values() -> impl Strategy<Value = Vec<f64>> {
        let value = prop_oneof![
            4 => 0.0f64..50.0,
            2 => 50.0f64..5_000.0,
            1 => 5_000.0f64..1e7,
            1 => Just(0.0),
            1 => (0u64..1_000_000).prop_map(|v| v as f64),
        ];
        prop::collection::vec(value, 1..2000)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn quantiles_are_within_the_relative_error(values in values()) {
            let mut h = Histogram::new();
            for &v in &values {
                h.record(v);
            }
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            for q in [0, 10, 500, 900, 950, 990, 999, 1000] {
                let (got, want) = (h.quantile(q).unwrap(), exact(&sorted, q));
                prop_assert!(within_error(got, want), "p{}: {} against {}", q, got, want);
            }
        }

        #[test]
        fn merging_is_exact_and_order_free(values in values(), cut in 0usize..2000) {
            let cut = cut.min(values.len());
            let (mut whole, mut left, mut right) =
                (Histogram::new(), Histogram::new(), Histogram::new());
            for &v in &values {
                whole.record(v);
            }
            for &v in &values[..cut] {
                left.record(v);
            }
            for &v in values[cut..].iter().rev() {
                right.record(v);
            }
            let mut merged = right.clone();
            merged.merge(&left);
            left.merge(&right);
            prop_assert_eq!(&merged, &whole);
            prop_assert_eq!(&left, &whole);
            let pairs = whole.buckets().iter().rev().flat_map(|&(b, c)| [(b, c / 2), (b, c - c / 2)]);
            prop_assert_eq!(Histogram::from_buckets(pairs), whole.clone());
            prop_assert_eq!(Histogram::decode(&whole.encode()), Ok(whole));
        }
    }
}
