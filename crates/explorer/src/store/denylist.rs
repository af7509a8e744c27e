//! The denylist: the key hashes the module refuses, with their expiry, and the audit log of
//! every change to it. Both stores keep the same things behind [`super::Store`]; the shapes
//! and the rules they share are here.

use api_sessions_core::time::Millis;
use serde::Serialize;
use utoipa::ToSchema;

/// Length of a key hash: 128 bits written as lowercase hex, as the module exports them.
pub const KEY_HASH_LEN: usize = 32;

/// Whether `text` is a key hash as records carry it.
pub fn is_key_hash(text: &str) -> bool {
    text.len() == KEY_HASH_LEN
        && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The longest block with an end: a year. Longer is what `null` (never) is for.
pub const MAX_TTL_MS: i64 = 366 * 86_400_000;

/// A block's duration: one number and one unit, s, m, h, d or w (`30m`, `1h`, `7d`).
pub fn parse_ttl(text: &str) -> Result<i64, String> {
    let invalid = || {
        format!(
            "invalid ttl \"{text}\": use a number and s, m, h, d or w (e.g. 1h), at most 366d, \
             or null for a block without end"
        )
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().map_err(|_| invalid())?;
    let unit_ms: i64 = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => return Err(invalid()),
    };
    match number.checked_mul(unit_ms) {
        Some(ms) if ms > 0 && ms <= MAX_TTL_MS => Ok(ms),
        _ => Err(invalid()),
    }
}

/// One blocked key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Entry {
    pub key_hash: String,
    /// When the block ends; `null` for never.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires: Option<Millis>,
    pub reason: String,
    /// Who blocked it: `auto-block` for `--auto-block`, else how the request was authenticated.
    pub created_by: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Millis,
    /// The session the block was made from, when it was made from one.
    pub session_id: Option<String>,
}

impl Entry {
    /// Whether the block is over at `now`.
    pub fn expired(&self, now: Millis) -> bool {
        self.expires.is_some_and(|expires| expires <= now)
    }
}

/// The current entries, expired ones included (callers decide what to show), and the version
/// the last change gave the list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Denylist {
    pub version: u64,
    pub entries: Vec<Entry>,
}

/// What a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Added, or replaced an entry for the same key (new expiry or reason).
    Block,
    Unblock,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Unblock => "unblock",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        match text {
            "block" => Some(Action::Block),
            "unblock" => Some(Action::Unblock),
            _ => None,
        }
    }
}

/// A change to the denylist, as the store applies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Block(Entry),
    Unblock { key_hash: String, by: String, at: Millis },
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct AuditEntry {
    /// The list's version after the change.
    pub version: u64,
    #[schema(value_type = String, format = DateTime)]
    pub at: Millis,
    pub action: Action,
    pub key_hash: String,
    /// For a block, when it ends.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires: Option<Millis>,
    /// For a block, why; empty for an unblock.
    pub reason: String,
    pub by: String,
    pub session_id: Option<String>,
}

impl Change {
    pub fn key_hash(&self) -> &str {
        match self {
            Change::Block(entry) => &entry.key_hash,
            Change::Unblock { key_hash, .. } => key_hash,
        }
    }

    /// The audit line of this change, once it has made the list `version`.
    pub fn audit(&self, version: u64) -> AuditEntry {
        match self {
            Change::Block(entry) => AuditEntry {
                version,
                at: entry.created_at,
                action: Action::Block,
                key_hash: entry.key_hash.clone(),
                expires: entry.expires,
                reason: entry.reason.clone(),
                by: entry.created_by.clone(),
                session_id: entry.session_id.clone(),
            },
            Change::Unblock { key_hash, by, at } => AuditEntry {
                version,
                at: *at,
                action: Action::Unblock,
                key_hash: key_hash.clone(),
                expires: None,
                reason: String::new(),
                by: by.clone(),
                session_id: None,
            },
        }
    }
}

/// What [`super::Store::change_denylist`] did: the new version, or `None` when an unblock
/// found no entry (nothing changed, nothing audited).
pub type Changed = Option<u64>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hashes_are_32_lowercase_hex_digits() {
        assert!(is_key_hash("9c1e2d3f4a5b6c7d8e9f0a1b2c3d4e5f"));
        assert!(!is_key_hash("9C1E2D3F4A5B6C7D8E9F0A1B2C3D4E5F"));
        assert!(!is_key_hash("9c1e2d3f4a5b6c7d8e9f0a1b2c3d4e5"));
        assert!(!is_key_hash("9c1e2d3f4a5b6c7d8e9f0a1b2c3d4e5fa"));
        assert!(!is_key_hash("key-session-1"));
    }

    #[test]
    fn ttls_are_a_number_and_a_unit() {
        assert_eq!(parse_ttl("90s"), Ok(90_000));
        assert_eq!(parse_ttl("1h"), Ok(3_600_000));
        assert_eq!(parse_ttl("2w"), Ok(14 * 86_400_000));
        for bad in ["", "h", "1", "0h", "1.5h", "1 h", "-1h", "1y", "367d", "99999999999999999w"] {
            let err = parse_ttl(bad).unwrap_err();
            assert!(err.starts_with(&format!("invalid ttl \"{bad}\"")), "{err}");
        }
    }
}
