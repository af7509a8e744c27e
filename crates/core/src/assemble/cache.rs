//! Per-exporter caches of HMAC results.
//!
//! The records of a session share their key, and parameters such as an account number
//! repeat across a session too, so most HMACs would be computed again and again. Each cache
//! is a direct-mapped table indexed by a keyed SipHash of the input (which the record path
//! computes anyway for the session table): a hit costs a compare instead of two SHA-256
//! compressions. Only hashes are kept, never raw values.

use crate::hash::{KeyHash, Secret, SessionId, ZoneKey};
use crate::time::Millis;

const SLOTS: usize = 4096;

#[derive(Clone, Copy, Default)]
struct KeySlot {
    zone: ZoneKey,
    hash: KeyHash,
    /// The last session id computed for this key, and its start.
    start: Option<Millis>,
    id: SessionId,
    used: bool,
}

#[derive(Clone, Copy, Default)]
struct ParamSlot {
    tag: ZoneKey,
    digest: [u8; 32],
    used: bool,
}

pub struct HashCache {
    keys: Box<[KeySlot]>,
    params: Box<[ParamSlot]>,
}

impl Default for HashCache {
    fn default() -> Self {
        HashCache {
            keys: vec![KeySlot::default(); SLOTS].into_boxed_slice(),
            params: vec![ParamSlot::default(); SLOTS].into_boxed_slice(),
        }
    }
}

fn slot_of(key: &ZoneKey) -> usize {
    usize::from(u16::from_le_bytes([key.0[0], key.0[1]])) % SLOTS
}

/// Domain of the tags of hashed parameters, apart from the session table's keys.
const PARAM_SPACE: &[u8] = b"\0param";

impl HashCache {
    /// The key hash of (space, value), whose session table key is `zone`.
    pub fn key_hash(
        &mut self,
        secret: &Secret,
        zone: &ZoneKey,
        space: &[u8],
        value: &[u8],
    ) -> KeyHash {
        let slot = &mut self.keys[slot_of(zone)];
        if !(slot.used && slot.zone == *zone) {
            *slot = KeySlot {
                zone: *zone,
                hash: secret.key_hash(space, value),
                used: true,
                ..KeySlot::default()
            };
        }
        slot.hash
    }

    /// The session id of the key whose table key is `zone`, starting at `start`.
    pub fn session_id(
        &mut self,
        secret: &Secret,
        zone: &ZoneKey,
        hash: &KeyHash,
        start: Millis,
    ) -> SessionId {
        let slot = &mut self.keys[slot_of(zone)];
        if slot.used && slot.zone == *zone {
            if slot.start != Some(start) {
                slot.id = secret.session_id(hash, start);
                slot.start = Some(start);
            }
            return slot.id;
        }
        secret.session_id(hash, start)
    }

    /// HMAC-SHA-256 of a `hash` parameter's value.
    pub fn param(&mut self, secret: &Secret, value: &[u8]) -> [u8; 32] {
        let tag = secret.zone_key(PARAM_SPACE, value);
        let slot = &mut self.params[slot_of(&tag)];
        if !(slot.used && slot.tag == tag) {
            *slot = ParamSlot { tag, digest: secret.param_digest(value), used: true };
        }
        slot.digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_results_equal_computed_ones() {
        let secret = Secret::from_file_contents(&[b'k'; 32]).unwrap();
        let mut cache = HashCache::default();
        for round in 0..3 {
            for n in 0..10_000u32 {
                let value = n.to_string();
                let zone = secret.zone_key(b"custom", value.as_bytes());
                let hash = cache.key_hash(&secret, &zone, b"custom", value.as_bytes());
                assert_eq!(hash, secret.key_hash(b"custom", value.as_bytes()));
                let start = Millis(i64::from(n % 7 + round));
                assert_eq!(
                    cache.session_id(&secret, &zone, &hash, start),
                    secret.session_id(&hash, start)
                );
                assert_eq!(
                    cache.param(&secret, value.as_bytes()),
                    secret.param_digest(value.as_bytes())
                );
            }
        }
    }
}
