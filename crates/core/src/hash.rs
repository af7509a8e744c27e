//! Keyed hashes: key hashes, session ids and `hash` parameters.
//!
//! Raw key values and secret parameters never leave the process; what is exported is an
//! HMAC-SHA-256 under the `api_sessions_secret` key. Key hashes and session ids are
//! domain-separated so that neither can be computed from the other's inputs.

use core::fmt;

use core::hash::Hasher;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::time::Millis;

type HmacSha256 = Hmac<Sha256>;

/// Shortest secret accepted from `api_sessions_secret`.
pub const MIN_SECRET_LEN: usize = 32;

/// The key used when `api_sessions_secret` is not configured. Hashes made with it are
/// stable across nodes and restarts but, the key being public, they can be reversed by anyone
/// able to guess the values (an IP address, a short cookie).
const UNKEYED: &[u8] = b"nginx-api-sessions unkeyed; set api_sessions_secret";

const KEY_HASH_DOMAIN: &[u8] = b"key\0";
const SESSION_ID_DOMAIN: &[u8] = b"session\0";
const ZONE_KEY_DOMAIN: &[u8] = b"zone\0";

/// An HMAC key, pre-processed once so each hash only clones the keyed state.
#[derive(Clone)]
pub struct Secret {
    mac: HmacSha256,
    /// SipHash key for the session table, derived from the secret.
    zone: [u8; 16],
    keyed: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SecretError {
    TooShort(usize),
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::TooShort(len) => {
                write!(f, "secret is {len} bytes long, it must be at least {MIN_SECRET_LEN}")
            }
        }
    }
}

impl std::error::Error for SecretError {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret").field("keyed", &self.keyed).finish_non_exhaustive()
    }
}

impl Default for Secret {
    fn default() -> Self {
        Secret::unkeyed()
    }
}

impl Secret {
    /// A secret from the contents of an `api_sessions_secret` file. One trailing newline
    /// (`\n` or `\r\n`) is not part of the key, so `openssl rand -hex 32 > file` works.
    pub fn from_file_contents(contents: &[u8]) -> Result<Secret, SecretError> {
        let key = contents
            .strip_suffix(b"\r\n")
            .or_else(|| contents.strip_suffix(b"\n"))
            .unwrap_or(contents);
        if key.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort(key.len()));
        }
        Ok(Secret::new(key, true))
    }

    /// The public fallback key, used when no secret is configured.
    pub fn unkeyed() -> Secret {
        Secret::new(UNKEYED, false)
    }

    fn new(key: &[u8], keyed: bool) -> Secret {
        let mac = new_mac(key);
        let mut zone_mac = mac.clone();
        zone_mac.update(ZONE_KEY_DOMAIN);
        Secret { zone: truncate(zone_mac), mac, keyed }
    }

    /// Whether this is a configured secret rather than the public fallback.
    pub fn is_keyed(&self) -> bool {
        self.keyed
    }

    /// Hash of a key value within its value space (custom keys share one space, each
    /// built-in entry has its own).
    pub fn key_hash(&self, space: &[u8], value: &[u8]) -> KeyHash {
        let mut mac = self.mac.clone();
        mac.update(KEY_HASH_DOMAIN);
        // Length-prefix the space so ("ab", "c") and ("a", "bc") cannot collide.
        mac.update(&(space.len() as u32).to_be_bytes());
        mac.update(space);
        mac.update(value);
        KeyHash(truncate(mac))
    }

    /// The session table's key for a key value: a keyed SipHash, cheap enough for the request
    /// path, which updates the table when it can tell the key on its own.
    pub fn zone_key(&self, space: &[u8], value: &[u8]) -> ZoneKey {
        let mut sip = SipHasher13::new_with_key(&self.zone);
        sip.write_usize(space.len());
        sip.write(space);
        sip.write(value);
        ZoneKey(sip.finish128().as_bytes())
    }

    /// The session id for a key hash and a session start: the same on every worker, node and
    /// restart that shares the secret and sees the same start.
    pub fn session_id(&self, key: &KeyHash, start: Millis) -> SessionId {
        let mut mac = self.mac.clone();
        mac.update(SESSION_ID_DOMAIN);
        mac.update(&key.0);
        mac.update(&start.0.to_be_bytes());
        SessionId(truncate(mac))
    }

    /// A `hash` parameter: plain HMAC-SHA-256 of the value, so an analyst holding the secret
    /// can compute the hash of a known value and search for it.
    pub fn param_digest(&self, value: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(value);
        mac.finalize().into_bytes().into()
    }

    /// [`Self::param_digest`] as exported: `hmac-sha256:<hex>`.
    pub fn param(&self, value: &[u8], out: &mut String) {
        let digest = self.param_digest(value);
        out.reserve(PARAM_PREFIX.len() + 64);
        out.push_str(PARAM_PREFIX);
        push_hex(&digest, out);
    }
}

/// Prefix of exported `hash` parameter values.
pub const PARAM_PREFIX: &str = "hmac-sha256:";

fn new_mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length.
    HmacSha256::new_from_slice(key).expect("HMAC key of any length")
}

fn truncate(mac: HmacSha256) -> [u8; 16] {
    let digest = mac.finalize().into_bytes();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(bytes: &[u8], out: &mut String) {
    let mut hex = [0u8; 64];
    for chunk in bytes.chunks(hex.len() / 2) {
        let hex = &mut hex[..2 * chunk.len()];
        hex_to(chunk, hex);
        out.push_str(std::str::from_utf8(hex).expect("hex digits are ASCII"));
    }
}

/// Writes lowercase hex into `out`, which holds two bytes per byte of `bytes`.
pub fn hex_to(bytes: &[u8], out: &mut [u8]) {
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

/// Appends lowercase hex.
pub fn hex_into(bytes: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + 2 * bytes.len(), 0);
    hex_to(bytes, &mut out[start..]);
}

/// 128 bits of a key hash; equal hashes mean the same key value in the same value space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct KeyHash(pub [u8; 16]);

/// Key of the session table: 128 bits of keyed SipHash, never exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ZoneKey(pub [u8; 16]);

/// 128-bit session id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SessionId(pub [u8; 16]);

macro_rules! hex_display {
    ($t:ty) => {
        impl $t {
            /// Lowercase hex, 32 characters.
            pub fn to_hex(&self) -> String {
                let mut out = String::with_capacity(32);
                push_hex(&self.0, &mut out);
                out
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

hex_display!(KeyHash);
hex_display!(SessionId);

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::from_file_contents(b"0123456789abcdef0123456789abcdef\n").unwrap()
    }

    #[test]
    fn hex_in_place_and_appended_agree() {
        let bytes = [0x00, 0x0f, 0xa5, 0xff];
        let mut appended = b"x".to_vec();
        hex_into(&bytes, &mut appended);
        let mut in_place = [0u8; 8];
        hex_to(&bytes, &mut in_place);
        assert_eq!((&appended[..], &in_place), (&b"x000fa5ff"[..], b"000fa5ff"));
        // Longer than push_hex's chunk, to cross it.
        let long: Vec<u8> = (0..=40).collect();
        let mut text = String::from("y");
        push_hex(&long, &mut text);
        let mut bytes_hex = b"y".to_vec();
        hex_into(&long, &mut bytes_hex);
        assert_eq!(text.as_bytes(), &bytes_hex[..]);
        assert!(text.ends_with("2728"));
    }

    #[test]
    fn param_is_plain_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?". The key is
        // shorter than the minimum, so build the Secret directly.
        let jefe = Secret::new(b"Jefe", true);
        let mut out = String::new();
        jefe.param(b"what do ya want for nothing?", &mut out);
        assert_eq!(
            out,
            "hmac-sha256:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn secret_file_rules() {
        assert_eq!(Secret::from_file_contents(b"short\n").unwrap_err(), SecretError::TooShort(5));
        let with_newline = Secret::from_file_contents(&[b'k'; 33]).unwrap();
        let mut bytes = vec![b'k'; 33];
        bytes.extend_from_slice(b"\r\n");
        let with_crlf = Secret::from_file_contents(&bytes).unwrap();
        assert_eq!(with_newline.key_hash(b"s", b"v"), with_crlf.key_hash(b"s", b"v"));
        assert!(with_crlf.is_keyed());
        assert!(!Secret::unkeyed().is_keyed());
    }

    #[test]
    fn key_hash_separates_spaces_values_and_secrets() {
        let s = secret();
        let base = s.key_hash(b"custom", b"aaa");
        assert_eq!(base, s.key_hash(b"custom", b"aaa"));
        assert_ne!(base, s.key_hash(b"cookie:sid", b"aaa"));
        assert_ne!(base, s.key_hash(b"custom", b"aab"));
        assert_ne!(s.key_hash(b"ab", b"c"), s.key_hash(b"a", b"bc"));
        assert_ne!(base, Secret::unkeyed().key_hash(b"custom", b"aaa"));
    }

    #[test]
    fn zone_key_separates_spaces_values_and_secrets() {
        let s = secret();
        let base = s.zone_key(b"custom", b"aaa");
        assert_eq!(base, s.zone_key(b"custom", b"aaa"));
        assert_ne!(base, s.zone_key(b"cookie:sid", b"aaa"));
        assert_ne!(base, s.zone_key(b"custom", b"aab"));
        assert_ne!(s.zone_key(b"ab", b"c"), s.zone_key(b"a", b"bc"));
        assert_ne!(base, Secret::unkeyed().zone_key(b"custom", b"aaa"));
        assert_ne!(base.0, s.key_hash(b"custom", b"aaa").0);
    }

    #[test]
    fn session_id_depends_on_key_and_start() {
        let s = secret();
        let key = s.key_hash(b"custom", b"aaa");
        let id = s.session_id(&key, Millis(1000));
        assert_eq!(id, s.session_id(&key, Millis(1000)));
        assert_ne!(id, s.session_id(&key, Millis(1001)));
        assert_ne!(id, s.session_id(&s.key_hash(b"custom", b"bbb"), Millis(1000)));
        assert_eq!(id.to_hex().len(), 32);
        assert!(id.to_hex().bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }
}
