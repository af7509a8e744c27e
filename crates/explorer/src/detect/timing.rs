//! Timing: `regular_timing`, intervals too even for a person.
//!
//! Requests less than [`BURST_GAP_MS`] apart are one burst (a page and what it loads, a
//! dashboard refreshing its panels); the intervals between the starts of bursts are compared
//! on a log scale, so that ±5% reads the same at 1 s and at 30 s. The spread is the median
//! absolute deviation of the log-intervals (scaled to a standard deviation), which one long
//! pause or one retry does not move.

use super::config::{Ramp, RegularTiming};
use super::state::SessionState;
use super::{describe_ms, Signal, SignalName};

/// Requests closer than this belong to one burst.
pub const BURST_GAP_MS: i64 = 250;

/// Scales a median absolute deviation to the standard deviation of a normal distribution.
const MAD_TO_SIGMA: f64 = 1.4826;

/// The spread of the log-intervals between bursts and their median, in milliseconds, over the
/// session's first timestamps; `None` with fewer than `min_intervals` intervals.
pub(super) fn spread(times: &[i64], min_intervals: usize) -> Option<(f64, f64, usize)> {
    let mut starts: Vec<i64> = Vec::with_capacity(times.len());
    let mut last = None;
    for &ts in times {
        if last.is_none_or(|last: i64| ts.saturating_sub(last) >= BURST_GAP_MS) {
            starts.push(ts);
        }
        last = Some(ts);
    }
    let mut logs: Vec<f64> = starts.windows(2).map(|w| (w[1].abs_diff(w[0]) as f64).ln()).collect();
    if logs.len() < min_intervals {
        return None;
    }
    let median = median(&mut logs);
    let mut deviations: Vec<f64> = logs.iter().map(|l| (l - median).abs()).collect();
    let spread = MAD_TO_SIGMA * self::median(&mut deviations);
    Some((spread, median.exp(), logs.len()))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

pub(super) fn regular_timing(state: &SessionState, config: &RegularTiming) -> Option<Signal> {
    if !config.enabled {
        return None;
    }
    let (spread, interval, intervals) = spread(state.times.values(), config.min_intervals)?;
    let score = Ramp::new(config.start, config.full).score(spread);
    Signal::new(
        SignalName::RegularTiming,
        score,
        || {
            format!(
                "{intervals} intervals of about {} within ±{:.0}%",
                describe_ms(interval),
                (spread.exp() - 1.0) * 100.0
            )
        },
        || state.first.ids(),
    )
}
