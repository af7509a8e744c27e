//! The values a session is filtered by and that the filter inputs suggest: every user, role,
//! flow, attack type and User-Agent seen in the session.
//!
//! Both stores keep, at ingest, one entry per session, kind and value with the times it was
//! first and last seen, and its folded (lowercased) form, by which the filters match and the
//! suggestions are found without reading any request. The entry's last time keeps a value seen
//! only in requests older than the retention from matching.

use std::collections::HashSet;

use crate::batch::RecordRef;

/// What a value is of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValueKind {
    User,
    Role,
    Flow,
    /// The type of a malicious request.
    Attack,
    UserAgent,
}

impl ValueKind {
    pub const ALL: [ValueKind; 5] = [
        ValueKind::User,
        ValueKind::Role,
        ValueKind::Flow,
        ValueKind::Attack,
        ValueKind::UserAgent,
    ];

    /// The number both stores keep the kind as.
    pub fn code(self) -> u8 {
        match self {
            ValueKind::User => 0,
            ValueKind::Role => 1,
            ValueKind::Flow => 2,
            ValueKind::Attack => 3,
            ValueKind::UserAgent => 4,
        }
    }

    /// The filter parameter the kind is matched by.
    pub fn name(self) -> &'static str {
        match self {
            ValueKind::User => "user",
            ValueKind::Role => "role",
            ValueKind::Flow => "flow",
            ValueKind::Attack => "attack",
            ValueKind::UserAgent => "ua",
        }
    }

    pub fn parse(name: &str) -> Option<ValueKind> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Whether a filter value matches as a part of the value (`ua`) rather than all of it.
    pub fn matches_part(self) -> bool {
        self == ValueKind::UserAgent
    }
}

/// The form values are compared in: lowercased, over all of Unicode.
pub fn fold(value: &str) -> String {
    value.to_lowercase()
}

/// Calls `visit` with each value a record adds to its session.
pub fn of_record<'b>(record: &RecordRef<'b>, mut visit: impl FnMut(ValueKind, &'b str)) {
    if let Some(user) = record.user() {
        visit(ValueKind::User, user);
    }
    if let Some(role) = record.role() {
        visit(ValueKind::Role, role);
    }
    for flow in record.flows() {
        visit(ValueKind::Flow, flow);
    }
    if let Some(attack) = record.attack() {
        visit(ValueKind::Attack, attack);
    }
    if let Some(agent) = record.user_agent().filter(|agent| !agent.is_empty()) {
        visit(ValueKind::UserAgent, agent);
    }
}

/// The values of one session, in the order they were first seen (by request time, then value).
pub fn in_order_of_first_use(mut seen: Vec<(i64, String)>) -> Vec<String> {
    seen.sort();
    let mut listed = HashSet::new();
    seen.into_iter().map(|(_, value)| value).filter(|value| listed.insert(value.clone())).collect()
}

/// How many suggestions a filter input gets at most.
pub const SUGGESTIONS_MAX: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_have_distinct_codes() {
        for kind in ValueKind::ALL {
            assert_eq!(ValueKind::parse(kind.name()), Some(kind));
        }
        let mut codes: Vec<u8> = ValueKind::ALL.iter().map(|kind| kind.code()).collect();
        codes.dedup();
        assert_eq!(codes.len(), ValueKind::ALL.len());
        assert_eq!(ValueKind::parse("users"), None);
    }

    #[test]
    fn folding_covers_unicode_and_order_is_by_first_use() {
        assert_eq!(fold("DaNA Ärger"), "dana ärger");
        let seen = vec![
            (5, "alice".to_owned()),
            (1, "dana".to_owned()),
            (1, "Bob".to_owned()),
            (7, "dana".to_owned()),
        ];
        assert_eq!(in_order_of_first_use(seen), ["Bob", "dana", "alice"]);
    }
}
