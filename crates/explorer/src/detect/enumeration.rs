//! `enumeration`: many distinct object ids under one endpoint template, the shape of BOLA
//! (walking `/orders/{id}` through other people's orders) and of scraping a catalogue.

use super::config::{Enumeration, Ramp};
use super::state::SessionState;
use super::{Signal, SignalName};

/// The template with the most distinct ids. Sessions carrying a trusted role (bulk
/// administration) are not scored.
pub(super) fn enumeration(state: &SessionState, config: &Enumeration) -> Option<Signal> {
    if !config.enabled
        || state.roles.values().any(|role| config.trusted_roles.iter().any(|r| **r == *role.name))
    {
        return None;
    }
    let top = state.objects.values().max_by(|a, b| {
        a.ids.count().cmp(&b.ids.count()).then_with(|| b.template.cmp(&a.template))
    })?;
    let score = Ramp::new(config.start, config.full).score(top.ids.count() as f64);
    Signal::new(
        SignalName::Enumeration,
        score,
        || format!("{} distinct ids under {}", top.ids.describe(), top.template),
        || top.first.ids(),
    )
}
