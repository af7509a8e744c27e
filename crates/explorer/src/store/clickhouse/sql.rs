//! Statements with captured values in them, safely.
//!
//! Captured values are attacker-controlled. The ClickHouse releases still in distributions
//! (Debian ships 18.16) have no query parameters, so values go into the statement as string
//! literals in which every byte but letters, digits and `-_.:/` is written as a `\xHH` escape:
//! whatever the value, the literal holds nothing else, so no value can end it or change the
//! statement. Numbers are formatted from integers. Nothing else is ever put into a statement.

use std::fmt::Write;

use super::values;
use crate::store::{AttackFilter, Filter, StatusFilter};

/// A ClickHouse string literal holding `value`.
pub fn literal(value: &str) -> String {
    let mut out = String::with_capacity(2 + 4 * value.len());
    out.push('\'');
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.:/".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out.push('\'');
    out
}

/// A list of literals for `IN (...)`.
pub fn literals<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let list: Vec<String> = values.into_iter().map(literal).collect();
    list.join(", ")
}

/// The request-level predicates of `filter` on `requests`, each `AND ...`, the retention
/// (`floor`) included.
pub fn request_predicates(filter: &Filter, floor: i64) -> String {
    let mut sql = String::new();
    let from = filter.from.map_or(floor, |from| from.0.max(floor));
    let _ = write!(sql, " AND ts >= {from}");
    if let Some(to) = filter.to {
        let _ = write!(sql, " AND ts <= {}", to.0);
    }
    if let Some(method) = &filter.method {
        let _ = write!(sql, " AND method = {}", literal(method));
    }
    if let Some(q) = &filter.q {
        let _ = write!(sql, " AND position(search, {}) > 0", literal(&q.to_ascii_lowercase()));
    }
    match filter.status {
        None => {}
        Some(StatusFilter::Code(code)) => {
            let _ = write!(sql, " AND status = {code}");
        }
        Some(class @ StatusFilter::Class(_)) => {
            let (low, high) = class.range();
            let _ = write!(sql, " AND status BETWEEN {low} AND {high}");
        }
    }
    match &filter.attack {
        None => {}
        Some(AttackFilter::Any) => sql.push_str(" AND attack IS NOT NULL"),
        Some(AttackFilter::Kind(kind)) => sql.push_str(&values::attack_predicate(kind)),
    }
    if let Some(ip) = &filter.ip {
        let _ = write!(sql, " AND ip = {}", literal(ip));
    }
    if let Some(request_id) = &filter.request_id {
        let _ = write!(sql, " AND request_id = {}", literal(request_id));
    }
    if let Some(endpoint) = &filter.endpoint {
        let _ = write!(sql, " AND endpoint = {}", literal(endpoint));
    }
    sql
}

/// ` AND session_id IN (...)` for each value the filter asks the session to have seen (user,
/// role, flow, User-Agent) in its retained requests; empty when none is set.
pub fn session_predicate(filter: &Filter, floor: i64) -> String {
    filter
        .session_values()
        .into_iter()
        .map(|(kind, wanted)| values::predicate(kind, wanted, floor))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_hold_only_plain_characters_and_escapes() {
        assert_eq!(literal(""), "''");
        assert_eq!(literal("a-Z_0.9:/"), "'a-Z_0.9:/'");
        assert_eq!(literal("a'\\ b"), "'a\\x27\\x5c\\x20b'");
        assert_eq!(literal("é"), "'\\xc3\\xa9'");
        let hostile = "x' OR 1=1 -- \u{0}\n';DROP TABLE requests\\'";
        let quoted = literal(hostile);
        let inner = &quoted[1..quoted.len() - 1];
        let mut rest = inner.as_bytes();
        while let Some((&first, tail)) = rest.split_first() {
            if first == b'\\' {
                assert!(tail[0] == b'x' && tail[1..3].iter().all(u8::is_ascii_hexdigit), "{inner}");
                rest = &tail[3..];
            } else {
                assert!(first.is_ascii_alphanumeric() || b"-_.:/".contains(&first), "{inner}");
                rest = tail;
            }
        }
        assert_eq!(literals(["a", "b'"]), "'a', 'b\\x27'");
    }
}
