//! Volume: `rate` (the busiest minute) and `flow_abuse` (requests on costly or sensitive
//! flows).

use super::config::{FlowAbuse, Ramp, Rate};
use super::state::SessionState;
use super::{Signal, SignalName, ABUSE_FLOWS};

/// The busiest minute of the session. Evidence comes from the session's first requests that
/// fell in that minute: a flood starts at its peak; a session that peaked later names the
/// minute in its detail, its evidence may be empty.
pub(super) fn rate(state: &SessionState, config: &Rate) -> Option<Signal> {
    if !config.enabled {
        return None;
    }
    // The first of the busiest minutes (by minute of the day) when several tie.
    let (minute, peak) = state.minutes.iter().fold((0u16, 0u32), |best, (minute, count)| {
        if count > best.1 {
            (minute, count)
        } else {
            best
        }
    });
    let score = Ramp::new(config.start, config.full).score(f64::from(peak));
    let evidence = || {
        let stamps = state.first.stamps().iter();
        let in_minute = stamps.filter(|stamp| super::state::minute_of(stamp.ts) == minute);
        in_minute.map(|stamp| stamp.request_id.to_string()).collect()
    };
    Signal::new(
        SignalName::Rate,
        score,
        || format!("{peak} requests in one minute ({:02}:{:02} UTC)", minute / 60, minute % 60),
        evidence,
    )
}

/// The flow with the highest score.
pub(super) fn flow_abuse(state: &SessionState, config: &FlowAbuse) -> Option<Signal> {
    if !config.enabled {
        return None;
    }
    let ramps =
        [config.sms_gateway, config.account_creation, config.auth, config.billing, config.ai_llm];
    let (i, score) = (0..ABUSE_FLOWS.len())
        .map(|i| (i, ramps[i].score(state.flows[i] as f64)))
        .fold((0, 0.0), |best, (i, score)| if score > best.1 { (i, score) } else { best });
    Signal::new(
        SignalName::FlowAbuse,
        score,
        || format!("{} requests on the {} flow", state.flows[i], ABUSE_FLOWS[i].as_str()),
        || state.flows_first[i].ids(),
    )
}
