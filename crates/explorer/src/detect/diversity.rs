//! Diversity: `low_diversity` (a few endpoints hammered) and `path_scan` (many endpoints that
//! do not exist: content discovery).

use super::config::{LowDiversity, PathScan, Ramp};
use super::state::SessionState;
use super::{Signal, SignalName};

/// The share of the session's requests on its busiest endpoint. Only the endpoints with the
/// smallest template hashes are counted one by one (see `Capped`); a session with more
/// endpoints than that is diverse anyway.
pub(super) fn low_diversity(state: &SessionState, config: &LowDiversity) -> Option<Signal> {
    if !config.enabled || state.requests < config.min_requests {
        return None;
    }
    let top = state
        .endpoints
        .values()
        .max_by(|a, b| a.requests.cmp(&b.requests).then_with(|| b.template.cmp(&a.template)))?;
    let share = top.requests as f64 / state.requests as f64;
    let score = Ramp::new(config.start, config.full).score(share);
    Signal::new(
        SignalName::LowDiversity,
        score,
        || {
            format!(
                "{:.0}% of {} requests on {} ({} endpoints in all)",
                share * 100.0,
                state.requests,
                top.template,
                state.endpoint_count.describe()
            )
        },
        || top.first.ids(),
    )
}

/// Distinct endpoints (templated, so that one missing avatar per user counts once) answered
/// 404 or 410.
pub(super) fn path_scan(state: &SessionState, config: &PathScan) -> Option<Signal> {
    if !config.enabled {
        return None;
    }
    let score = Ramp::new(config.start, config.full).score(state.not_found.count() as f64);
    Signal::new(
        SignalName::PathScan,
        score,
        || format!("{} distinct endpoints answered 404", state.not_found.describe()),
        || state.not_found_first.ids(),
    )
}
