//! What an endpoint's requests add up to, and which requests stand out from it.
//!
//! A store keeps one [`Stats`] per endpoint and hour, adding each request as it is ingested.
//! Every field merges exactly: counts add, first and last times take the minimum and maximum,
//! the histograms add bucket by bucket, the session sketches merge by set union. So the
//! statistics of any set of hours are the merge of their rows, the same in both stores and in
//! any order. For a range that starts or ends inside an hour, a store merges the whole hours
//! inside it with a [`Stats`] built from the requests of the partial hours at its ends, and the
//! result covers exactly the range.
//!
//! Precision: counts, times, status classes and flows are exact; the sessions count is exact up to
//! 64 sessions and within about 1.6% past that; duration and size quantiles are within 1% of
//! the exact nearest-rank quantile (see [`histogram`](super::histogram)).

use std::collections::BTreeMap;

use serde::Serialize;

use integer_encoding::VarInt;

use super::distinct::Distinct;
use super::histogram::{push_varint, take_varint, DecodeError, Histogram};

/// Milliseconds in an hour: statistics are kept per endpoint and hour.
pub const HOUR_MS: i64 = 3_600_000;

/// The hour a request time falls in, as a number of hours since the epoch.
pub fn hour(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(HOUR_MS)
}

/// Distinct flow names kept per endpoint-hour; more are counted under [`OTHER_FLOW`].
/// Flows are words from the nginx configuration, a handful per endpoint: the cap is only for
/// records posted with made-up ones, and only then does the merge depend on its order (which
/// names were kept first).
pub const MAX_FLOWS: usize = 32;
pub const OTHER_FLOW: &str = "{other}";

/// What one request tells about its endpoint.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    pub ts: i64,
    pub status: u16,
    pub duration_ms: f64,
    pub response_bytes: u64,
    pub session_id: &'a str,
    /// The request was flagged by `api_sessions_attack`.
    pub attack: bool,
}

/// Requests by status class: 1xx to 5xx, and anything else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusClasses([u64; 6]);

impl StatusClasses {
    const NAMES: [&'static str; 6] = ["other", "1xx", "2xx", "3xx", "4xx", "5xx"];

    fn slot(status: u16) -> usize {
        match status {
            100..=599 => usize::from(status / 100),
            _ => 0,
        }
    }

    pub fn add(&mut self, status: u16, count: u64) {
        let slot = &mut self.0[Self::slot(status)];
        *slot = slot.saturating_add(count);
    }

    /// The count of a class by its name (`"2xx"`, `"other"`).
    pub fn get(&self, class: &str) -> u64 {
        Self::NAMES.iter().position(|name| *name == class).map_or(0, |at| self.0[at])
    }

    /// Adds a count under a class name, as a store reads them back; unknown names are
    /// `"other"`.
    pub fn add_class(&mut self, class: &str, count: u64) {
        let at = Self::NAMES.iter().position(|name| *name == class).unwrap_or(0);
        self.0[at] = self.0[at].saturating_add(count);
    }

    fn merge(&mut self, other: &StatusClasses) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine = mine.saturating_add(theirs);
        }
    }

    /// The non-zero classes by name, as the API shows them.
    pub fn to_map(&self) -> BTreeMap<&'static str, u64> {
        Self::NAMES
            .iter()
            .zip(self.0)
            .filter(|(_, count)| *count > 0)
            .map(|(n, c)| (*n, c))
            .collect()
    }
}

/// What a reader of many [`Stats`] needs of each: everything, or the counters and times with
/// one sketch. Ranking thousands of endpoints by one sketch decodes and merges only that one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Part {
    #[default]
    All,
    /// The sessions sketch; no flows.
    Sessions,
    /// The duration histogram; no flows.
    Duration,
    /// The response size histogram; no flows.
    Size,
}

/// The statistics of an endpoint over some time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub statuses: StatusClasses,
    pub attacks: u64,
    /// Times of the first and last request; meaningless while `requests` is 0.
    pub first_ts: i64,
    pub last_ts: i64,
    /// Configured flows of the requests, with counts.
    pub flows: BTreeMap<String, u64>,
    pub duration_ms: Histogram,
    pub response_bytes: Histogram,
    pub sessions: Distinct,
}

impl Stats {
    pub fn new() -> Self {
        Stats::default()
    }

    /// Adds one request, with its configured flows.
    pub fn add<'f>(&mut self, request: &Observation<'_>, flows: impl IntoIterator<Item = &'f str>) {
        self.span(request.ts, request.ts);
        self.requests = self.requests.saturating_add(1);
        self.statuses.add(request.status, 1);
        self.attacks = self.attacks.saturating_add(u64::from(request.attack));
        for flow in flows {
            self.add_flow(flow, 1);
        }
        self.duration_ms.record(request.duration_ms);
        // Sizes are whole bytes; above 2^53 the conversion rounds, far below the 1% error.
        self.response_bytes.record(request.response_bytes as f64);
        self.sessions.insert(request.session_id);
    }

    fn span(&mut self, first: i64, last: i64) {
        if self.requests == 0 {
            (self.first_ts, self.last_ts) = (first, last);
        } else {
            self.first_ts = self.first_ts.min(first);
            self.last_ts = self.last_ts.max(last);
        }
    }

    /// Adds `count` requests of a flow, as a store reads them back.
    pub fn add_flow(&mut self, flow: &str, count: u64) {
        let key = if self.flows.contains_key(flow) || self.flows.len() < MAX_FLOWS {
            flow
        } else {
            OTHER_FLOW
        };
        match self.flows.get_mut(key) {
            Some(n) => *n = n.saturating_add(count),
            None => {
                self.flows.insert(key.to_owned(), count);
            }
        }
    }

    /// Adds the statistics of other requests: other hours, or the same hour from another
    /// batch.
    pub fn merge(&mut self, other: &Stats) {
        if other.requests == 0 {
            return;
        }
        self.span(other.first_ts, other.last_ts);
        self.requests = self.requests.saturating_add(other.requests);
        self.statuses.merge(&other.statuses);
        self.attacks = self.attacks.saturating_add(other.attacks);
        for (flow, &count) in &other.flows {
            self.add_flow(flow, count);
        }
        self.duration_ms.merge(&other.duration_ms);
        self.response_bytes.merge(&other.response_bytes);
        self.sessions.merge(&other.sessions);
    }

    /// A compact form for a store that keeps an endpoint-hour in one column: a version byte,
    /// the counters and times as varints, the flows as (length, name, count), then the two
    /// histograms and the session sketch, each prefixed by its length.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ENCODING_VERSION];
        push_varint(&mut out, self.requests);
        for count in self.statuses.0 {
            push_varint(&mut out, count);
        }
        push_varint(&mut out, self.attacks);
        push_signed(&mut out, self.first_ts);
        push_signed(&mut out, self.last_ts);
        push_varint(&mut out, self.flows.len() as u64);
        for (flow, count) in &self.flows {
            push_bytes(&mut out, flow.as_bytes());
            push_varint(&mut out, *count);
        }
        push_bytes(&mut out, &self.duration_ms.encode());
        push_bytes(&mut out, &self.response_bytes.encode());
        push_bytes(&mut out, &self.sessions.encode());
        out
    }

    /// Reads what [`Stats::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Stats, DecodeError> {
        Stats::decode_part(bytes, Part::All)
    }

    /// Reads what [`Stats::encode`] wrote, leaving out what `part` does not need: the
    /// sections are length-prefixed, so the others are skipped without being decoded.
    pub fn decode_part(bytes: &[u8], part: Part) -> Result<Stats, DecodeError> {
        let (&version, mut bytes) = bytes.split_first().ok_or(DecodeError)?;
        if version != ENCODING_VERSION {
            return Err(DecodeError);
        }
        let bytes = &mut bytes;
        let mut stats = Stats { requests: take_varint(bytes)?, ..Stats::default() };
        for slot in &mut stats.statuses.0 {
            *slot = take_varint(bytes)?;
        }
        stats.attacks = take_varint(bytes)?;
        stats.first_ts = take_signed(bytes)?;
        stats.last_ts = take_signed(bytes)?;
        let flows = take_varint(bytes)?;
        if flows > MAX_FLOWS as u64 + 1 {
            return Err(DecodeError);
        }
        for _ in 0..flows {
            let name = std::str::from_utf8(take_bytes(bytes)?).map_err(|_| DecodeError)?;
            let count = take_varint(bytes)?;
            if part == Part::All {
                stats.flows.insert(name.to_owned(), count);
            }
        }
        let (duration_ms, response_bytes, sessions) =
            (take_bytes(bytes)?, take_bytes(bytes)?, take_bytes(bytes)?);
        if matches!(part, Part::All | Part::Duration) {
            stats.duration_ms = Histogram::decode(duration_ms)?;
        }
        if matches!(part, Part::All | Part::Size) {
            stats.response_bytes = Histogram::decode(response_bytes)?;
        }
        if matches!(part, Part::All | Part::Sessions) {
            stats.sessions = Distinct::decode(sessions)?;
        }
        if !bytes.is_empty() {
            return Err(DecodeError);
        }
        Ok(stats)
    }

    /// Median, p95 and p99 of the durations, in milliseconds to the microsecond.
    pub fn duration_quantiles(&self) -> Option<Quantiles> {
        Quantiles::of(&self.duration_ms, 1000.0)
    }

    /// Median, p95 and p99 of the response sizes, in whole bytes.
    pub fn response_bytes_quantiles(&self) -> Option<Quantiles> {
        Quantiles::of(&self.response_bytes, 1.0)
    }

    /// What a request of this endpoint is compared with.
    pub fn baseline(&self) -> Baseline {
        Baseline {
            requests: self.requests,
            duration_p95: self.duration_ms.quantile(950),
            response_bytes_p95: self.response_bytes.quantile(950),
        }
    }
}

/// The first byte of [`Stats::encode`]'s form, changed if the form ever changes.
const ENCODING_VERSION: u8 = 1;

fn push_signed(out: &mut Vec<u8>, value: i64) {
    let mut buf = [0u8; 10];
    let len = value.encode_var(&mut buf);
    out.extend_from_slice(&buf[..len]);
}

fn take_signed(bytes: &mut &[u8]) -> Result<i64, DecodeError> {
    let (value, len) = i64::decode_var(bytes).ok_or(DecodeError)?;
    *bytes = &bytes[len..];
    Ok(value)
}

fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    push_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn take_bytes<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let len = take_varint(bytes)?;
    if len > bytes.len() as u64 {
        return Err(DecodeError);
    }
    let (taken, rest) = bytes.split_at(len as usize);
    *bytes = rest;
    Ok(taken)
}

/// Three quantiles of a histogram, rounded for display.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Quantiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

impl Quantiles {
    /// `None` when nothing was counted; `scale` is how many steps per unit to round to.
    fn of(histogram: &Histogram, scale: f64) -> Option<Quantiles> {
        let round = |per_mille| histogram.quantile(per_mille).map(|v| (v * scale).round() / scale);
        Some(Quantiles { p50: round(500)?, p95: round(950)?, p99: round(990)? })
    }
}

/// An endpoint's usual values, against which one request is judged.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Baseline {
    pub requests: u64,
    pub duration_p95: Option<f64>,
    pub response_bytes_p95: Option<f64>,
}

/// When a request is "far above" its endpoint's p95: it exceeds both `factor` times the p95
/// and the p95 plus a floor, and the endpoint has had enough requests for its p95 to mean
/// something. The floor keeps a 3 ms request to a 1 ms endpoint from being news.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutlierRule {
    pub min_requests: u64,
    pub factor: f64,
    pub duration_floor_ms: f64,
    pub response_bytes_floor: f64,
}

impl Default for OutlierRule {
    /// Twice the p95 and at least 50 ms or 8 KiB more, among 20 requests or more (below 20
    /// requests the p95 is the largest value or next to it).
    fn default() -> Self {
        OutlierRule {
            min_requests: 20,
            factor: 2.0,
            duration_floor_ms: 50.0,
            response_bytes_floor: 8192.0,
        }
    }
}

/// Which of a request's values are far above its endpoint's usual ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outliers {
    pub duration_ms: bool,
    pub response_bytes: bool,
}

impl Outliers {
    /// The names of the outlying fields, as the API lists them.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        [("duration_ms", self.duration_ms), ("response_bytes", self.response_bytes)]
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(name, _)| name)
    }
}

impl OutlierRule {
    /// The value above which a request is an outlier, or `None` when the endpoint has too few
    /// requests to tell.
    pub fn threshold(&self, baseline: &Baseline, p95: Option<f64>, floor: f64) -> Option<f64> {
        if baseline.requests < self.min_requests {
            return None;
        }
        p95.map(|p95| (p95 * self.factor).max(p95 + floor))
    }

    pub fn judge(&self, baseline: &Baseline, duration_ms: f64, response_bytes: u64) -> Outliers {
        let above = |value: f64, p95, floor| {
            self.threshold(baseline, p95, floor).is_some_and(|limit| value > limit)
        };
        Outliers {
            duration_ms: above(duration_ms, baseline.duration_p95, self.duration_floor_ms),
            response_bytes: above(
                response_bytes as f64,
                baseline.response_bytes_p95,
                self.response_bytes_floor,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn observation(i: u64) -> Observation<'static> {
        const SESSIONS: [&str; 3] = ["s1", "s2", "s3"];
        Observation {
            ts: 1_700_000_000_000 + (i as i64 * 7919) % 10_000_000,
            status: [200, 201, 404, 500, 302, 0][(i % 6) as usize],
            duration_ms: (i % 97) as f64 * 1.5,
            response_bytes: (i * 37) % 5000,
            session_id: SESSIONS[(i % 3) as usize],
            attack: i % 11 == 0,
        }
    }

    fn flows(i: u64) -> Vec<&'static str> {
        ["auth", "billing"][..(i % 3) as usize].to_vec()
    }

    #[test]
    fn adds_requests() {
        let mut s = Stats::new();
        for i in 0..100 {
            s.add(&observation(i), flows(i));
        }
        assert_eq!(s.requests, 100);
        assert_eq!(s.statuses.get("2xx"), 34);
        assert_eq!(s.statuses.get("4xx"), 17);
        assert_eq!(s.statuses.get("other"), 16);
        assert_eq!(s.statuses.to_map().values().sum::<u64>(), 100);
        assert_eq!(s.attacks, 10);
        assert_eq!(s.sessions.count(), 3);
        assert_eq!(s.flows.get("auth"), Some(&66));
        assert_eq!(s.flows.get("billing"), Some(&33));
        let ts: Vec<i64> = (0..100).map(|i| observation(i).ts).collect();
        assert_eq!(s.first_ts, *ts.iter().min().unwrap());
        assert_eq!(s.last_ts, *ts.iter().max().unwrap());
        let d = s.duration_quantiles().unwrap();
        assert!(d.p50 <= d.p95 && d.p95 <= d.p99);
        assert_eq!(Stats::new().duration_quantiles(), None);
    }

    #[test]
    fn flows_are_capped() {
        let mut s = Stats::new();
        let names: Vec<String> = (0..MAX_FLOWS + 5).map(|i| format!("f{i}")).collect();
        s.add(&observation(1), names.iter().map(String::as_str));
        assert_eq!(s.flows.len(), MAX_FLOWS + 1);
        assert_eq!(s.flows[OTHER_FLOW], 5);
    }

    #[test]
    fn encoding_rejects_junk() {
        let mut s = Stats::new();
        s.add(&observation(3), ["auth"]);
        let bytes = s.encode();
        assert_eq!(Stats::decode(&bytes), Ok(s.clone()));
        assert_eq!(Stats::decode(&Stats::new().encode()), Ok(Stats::new()));
        assert_eq!(Stats::decode(&[]), Err(DecodeError));
        assert_eq!(Stats::decode(&[2]), Err(DecodeError));
        assert_eq!(Stats::decode(&bytes[..bytes.len() - 1]), Err(DecodeError));
        assert_eq!(Stats::decode(&[bytes.as_slice(), &[0]].concat()), Err(DecodeError));
    }

    #[test]
    fn a_part_is_the_whole_without_the_rest() {
        let mut s = Stats::new();
        for i in 0..200 {
            s.add(&observation(i), flows(i));
        }
        let bytes = s.encode();
        let without = |part| {
            let mut s = s.clone();
            s.flows.clear();
            if part != Part::Duration {
                s.duration_ms = Histogram::new();
            }
            if part != Part::Size {
                s.response_bytes = Histogram::new();
            }
            if part != Part::Sessions {
                s.sessions = Distinct::new();
            }
            s
        };
        for part in [Part::Sessions, Part::Duration, Part::Size] {
            assert_eq!(Stats::decode_part(&bytes, part), Ok(without(part)), "{part:?}");
        }
        assert_eq!(Stats::decode_part(&bytes, Part::All), Ok(s.clone()));
        assert_eq!(Stats::decode_part(&bytes[..bytes.len() - 1], Part::Duration), Err(DecodeError));
    }

    #[test]
    fn hours() {
        assert_eq!(hour(0), 0);
        assert_eq!(hour(HOUR_MS - 1), 0);
        assert_eq!(hour(HOUR_MS), 1);
        assert_eq!(hour(-1), -1);
    }

    #[test]
    fn outliers_need_enough_requests_and_a_real_gap() {
        let rule = OutlierRule::default();
        let mut s = Stats::new();
        for i in 0..19 {
            s.add(&Observation { duration_ms: 10.0, response_bytes: 1000, ..observation(i) }, []);
        }
        assert_eq!(rule.judge(&s.baseline(), 10_000.0, 10_000_000), Outliers::default());
        s.add(&Observation { duration_ms: 10.0, response_bytes: 1000, ..observation(19) }, []);
        let baseline = s.baseline();
        // p95 10 ms: the floor makes the line 60 ms, not 20.
        assert!(!rule.judge(&baseline, 59.0, 1000).duration_ms);
        assert!(rule.judge(&baseline, 61.0, 1000).duration_ms);
        // p95 1000 bytes: 1000 + 8192.
        assert!(!rule.judge(&baseline, 1.0, 9000).response_bytes);
        let both = rule.judge(&baseline, 500.0, 20_000);
        assert_eq!(both.names().collect::<Vec<_>>(), ["duration_ms", "response_bytes"]);
        // A slow endpoint: twice its p95 is the line.
        let slow = Baseline { requests: 100, duration_p95: Some(2000.0), response_bytes_p95: None };
        assert!(!rule.judge(&slow, 3999.0, 0).duration_ms);
        assert!(rule.judge(&slow, 4001.0, 0).duration_ms);
        assert!(!rule.judge(&slow, 4001.0, u64::MAX).response_bytes);
    }

    /// What the documentation says an endpoint-hour costs: 300 requests from 40 sessions,
    /// durations spread over two decades and four response sizes take under 800 bytes; 100,000
    /// requests from as many sessions, durations over four decades and sizes from 0 to 70 KB,
    /// under 8 KB.
    #[test]
    fn an_endpoint_hour_is_a_few_hundred_bytes() {
        let mut s = Stats::new();
        let sessions: Vec<String> = (0..40).map(|i| format!("{:032x}", i * 7919)).collect();
        for i in 0..300u64 {
            let spread = ((i * 2_654_435_761) % 1000) as f64 / 1000.0;
            s.add(
                &Observation {
                    ts: i as i64,
                    status: 200,
                    duration_ms: 3.0 * 10f64.powf(2.0 * spread),
                    response_bytes: [512, 2048, 2100, 40_000][(i % 4) as usize],
                    session_id: &sessions[(i % 40) as usize],
                    attack: false,
                },
                [],
            );
        }
        let sketches = s.duration_ms.encode().len()
            + s.response_bytes.encode().len()
            + s.sessions.encode().len();
        assert!(sketches < 800, "{sketches} bytes");

        let mut busy = Stats::new();
        for i in 0..100_000u64 {
            let spread = ((i * 2_654_435_761) % 100_000) as f64 / 100_000.0;
            busy.add(
                &Observation {
                    ts: i as i64,
                    status: 200,
                    duration_ms: 0.5 * 10f64.powf(4.0 * spread),
                    response_bytes: i % 70_000,
                    session_id: &format!("{i:x}"),
                    attack: false,
                },
                [],
            );
        }
        let (d, b, x) = (
            busy.duration_ms.encode().len(),
            busy.response_bytes.encode().len(),
            busy.sessions.encode().len(),
        );
        assert!(d + b + x < 8000, "{d} + {b} + {x} bytes");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Hours merged in any grouping give the statistics of all their requests.
        #[test]
        fn merging_is_exact(n in 1u64..600, cut_a in 0u64..600, cut_b in 0u64..600) {
            let (cut_a, cut_b) = (cut_a.min(n).min(cut_b), cut_b.min(n).max(cut_a.min(n)));
            let mut whole = Stats::new();
            let mut parts = [Stats::new(), Stats::new(), Stats::new()];
            for i in 0..n {
                whole.add(&observation(i), flows(i));
                let part = if i < cut_a { 0 } else if i < cut_b { 1 } else { 2 };
                parts[part].add(&observation(i), flows(i));
            }
            let mut merged = parts[2].clone();
            merged.merge(&parts[0]);
            merged.merge(&parts[1]);
            prop_assert_eq!(&merged, &whole);
            prop_assert_eq!(merged.duration_quantiles(), whole.duration_quantiles());
            prop_assert_eq!(Stats::decode(&whole.encode()), Ok(whole.clone()));
        }
    }
}
