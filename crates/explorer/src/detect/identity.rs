//! `identity_churn`: many users in one session (one client trying accounts), or one actor (an
//! IP address and User-Agent) spread over many short sessions (a new token at every login).

use super::config::{IdentityChurn, Ramp};
use super::state::{ActorState, SessionState};
use super::{Signal, SignalName};

/// The actor's sessions around this one, counted fully while they average at most
/// `short_session` requests and not at all from twice that: fifty colleagues behind one
/// address with the same browser have long sessions, a bot that logs in for every request
/// has sessions of one or two.
fn short_sessions(actor: &ActorState, config: &IdentityChurn) -> (f64, f64) {
    let sessions = actor.sessions.count() as f64;
    if sessions == 0.0 {
        return (0.0, 0.0);
    }
    let mean = actor.session_requests as f64 / sessions;
    let short = config.short_session as f64;
    let shortness = (2.0 - mean / short).clamp(0.0, 1.0);
    (sessions * shortness, mean)
}

pub(super) fn identity_churn(
    state: &SessionState,
    actor: Option<&ActorState>,
    config: &IdentityChurn,
) -> Option<Signal> {
    if !config.enabled {
        return None;
    }
    let users = Ramp::new(config.users_start, config.users_full);
    let mine = Signal::new(
        SignalName::IdentityChurn,
        users.score(state.users.count() as f64),
        || format!("{} users in one session", state.users.describe()),
        || state.users_first.ids(),
    );
    let theirs = actor.and_then(|actor| {
        let (short, mean) = short_sessions(actor, config);
        Signal::new(
            SignalName::IdentityChurn,
            Ramp::new(config.sessions_start, config.sessions_full).score(short),
            || {
                format!(
                    "{} sessions of this IP address and User-Agent around this one, {mean:.1} requests each",
                    actor.sessions.describe()
                )
            },
            || actor.sessions_first.ids(),
        )
    });
    match (mine, theirs) {
        (Some(mine), Some(theirs)) if theirs.score > mine.score => Some(theirs),
        (None, theirs) => theirs,
        (mine, _) => mine,
    }
}
