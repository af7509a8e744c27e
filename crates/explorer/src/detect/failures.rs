//! Failures: `auth_failures` (refused logins: brute force, credential stuffing) and `errors`
//! (the share of 4xx and 5xx answers).

use super::config::{AuthFailures, Errors, Ramp};
use super::sketch::Counts;
use super::state::{ActorState, SessionState};
use super::{Signal, SignalName};

/// The counts of the statuses that say "refused" among these.
fn refused_by_status<'s>(
    statuses: &'s Counts<u16>,
    config: &'s AuthFailures,
) -> impl Iterator<Item = (u16, u32)> + 's {
    statuses.iter().filter(|(status, _)| config.statuses.contains(status))
}

fn refused(statuses: &Counts<u16>, config: &AuthFailures) -> u64 {
    refused_by_status(statuses, config).map(|(_, count)| u64::from(count)).sum()
}

/// "401 ×3, 429 ×1".
fn describe_refused(statuses: &Counts<u16>, config: &AuthFailures) -> String {
    let parts: Vec<String> = refused_by_status(statuses, config)
        .map(|(status, count)| format!("{status} ×{count}"))
        .collect();
    parts.join(", ")
}

/// Refused `auth` requests in the session, or, for a short session, in every session of its
/// actor around it: the one login that worked after a thousand that did not.
pub(super) fn auth_failures(
    state: &SessionState,
    actor: Option<&ActorState>,
    config: &AuthFailures,
) -> Option<Signal> {
    if !config.enabled {
        return None;
    }
    let ramp = Ramp::new(config.start, config.full);
    let count = refused(&state.auth_statuses, config);
    let mine = Signal::new(
        SignalName::AuthFailures,
        ramp.score(count as f64),
        || {
            let statuses = describe_refused(&state.auth_statuses, config);
            format!("{count} refused logins ({statuses})")
        },
        || state.auth_refused_first.ids(),
    );
    let theirs = actor.and_then(|actor| {
        let count = refused(&actor.auth_statuses, config);
        Signal::new(
            SignalName::AuthFailures,
            ramp.score(count as f64),
            || {
                let statuses = describe_refused(&actor.auth_statuses, config);
                format!("{count} refused logins ({statuses}) from this IP address and User-Agent around this session")
            },
            || actor.auth_refused_first.ids(),
        )
    });
    match (mine, theirs) {
        (Some(mine), Some(theirs)) if theirs.score > mine.score => Some(theirs),
        (None, theirs) => theirs,
        (mine, _) => mine,
    }
}

pub(super) fn errors(state: &SessionState, config: &Errors) -> Option<Signal> {
    if !config.enabled || state.requests < config.min_requests {
        return None;
    }
    let failed = state.client_errors + state.server_errors;
    let share = failed as f64 / state.requests as f64;
    Signal::new(
        SignalName::Errors,
        Ramp::new(config.start, config.full).score(share),
        || {
            format!(
                "{:.0}% of {} requests failed ({} 4xx, {} 5xx)",
                share * 100.0,
                state.requests,
                state.client_errors,
                state.server_errors
            )
        },
        || state.errors_first.ids(),
    )
}
