//! Values the explorer hands to browsers and later trusts: the login cookie and the CSRF
//! tokens. Each is bound to a key by HMAC-SHA-256, so a browser can hold it but not forge or
//! alter it; the UI token itself never leaves the server.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Random bytes that name one login, or one browser before it logs in.
pub type Nonce = [u8; 16];

/// The key the signed values are made with.
pub struct Key([u8; 32]);

impl Key {
    /// A key derived from the UI token: logins outlive a restart and hold on every explorer
    /// given the same token, and changing the token ends them all.
    pub fn from_token(token: &str) -> Key {
        let mut mac = HmacSha256::new_from_slice(token.as_bytes()).expect("HMAC takes any key");
        mac.update(b"api-sessions signing key v1");
        Key(mac.finalize().into_bytes().into())
    }

    /// A key of this process alone, for the CSRF tokens of an explorer without a UI token.
    pub fn random() -> Key {
        let mut key = [0; 32];
        getrandom::fill(&mut key).expect("the system's random source");
        Key(key)
    }

    fn mac(&self, purpose: &[u8], parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key");
        mac.update(purpose);
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// `EXPIRES.NONCE.MAC`: when the login ends (Unix seconds), which login it is (hex), and
    /// the MAC of both.
    pub fn login_value(&self, nonce: &Nonce, expires: i64) -> String {
        let expires = expires.to_string();
        let nonce = hex(nonce);
        let mac = self.mac(b"login", &[expires.as_bytes(), nonce.as_bytes()]).finalize();
        format!("{expires}.{nonce}.{}", URL_SAFE_NO_PAD.encode(mac.into_bytes()))
    }

    /// The login a cookie value names, if this key made it and it has not expired at `now`.
    pub fn open_login(&self, value: &str, now: i64) -> Option<Login> {
        let mut parts = value.splitn(3, '.');
        let (expires_text, nonce_text, mac) = (parts.next()?, parts.next()?, parts.next()?);
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        self.mac(b"login", &[expires_text.as_bytes(), nonce_text.as_bytes()])
            .verify_slice(&mac)
            .ok()?;
        let expires: i64 = expires_text.parse().ok()?;
        let nonce = unhex(nonce_text)?;
        (now < expires).then_some(Login { nonce, expires })
    }

    /// The CSRF token of forms shown to the holder of `nonce`.
    pub fn csrf_token(&self, nonce: &Nonce) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(b"csrf", &[nonce]).finalize().into_bytes())
    }

    /// Whether `given` is the CSRF token of `nonce`, compared in constant time.
    pub fn csrf_matches(&self, nonce: &Nonce, given: &str) -> bool {
        match URL_SAFE_NO_PAD.decode(given) {
            Ok(mac) => self.mac(b"csrf", &[nonce]).verify_slice(&mac).is_ok(),
            Err(_) => false,
        }
    }
}

/// A login a valid cookie names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Login {
    pub nonce: Nonce,
    /// Unix seconds.
    pub expires: i64,
}

pub fn new_nonce() -> Nonce {
    let mut nonce = [0; 16];
    getrandom::fill(&mut nonce).expect("the system's random source");
    nonce
}

/// Whether `given` is `secret`, in time that depends on neither: both are hashed first, so
/// not even the length of the secret shows.
pub fn same_secret(given: &str, secret: &str) -> bool {
    Sha256::digest(given.as_bytes()).ct_eq(&Sha256::digest(secret.as_bytes())).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

pub fn unhex(text: &str) -> Option<Nonce> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut nonce = [0; 16];
    for (i, byte) in nonce.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_value_opens_with_its_key_until_it_expires() {
        let key = Key::from_token("a long enough token for the tests");
        let nonce = new_nonce();
        let value = key.login_value(&nonce, 1000);
        assert_eq!(key.open_login(&value, 999), Some(Login { nonce, expires: 1000 }));
        assert_eq!(key.open_login(&value, 1000), None, "expired");
        assert_eq!(Key::from_token("another token").open_login(&value, 0), None);
        assert_eq!(Key::random().open_login(&value, 0), None);
    }

    #[test]
    fn an_altered_login_value_does_not_open() {
        let key = Key::from_token("t");
        let nonce = [7; 16];
        let value = key.login_value(&nonce, 5000);
        let (expires, rest) = value.split_once('.').unwrap();
        assert_eq!(expires, "5000");
        assert_eq!(key.open_login(&format!("9999.{rest}"), 0), None, "a later expiry");
        let mut other = value.clone().into_bytes();
        other[6] = if other[6] == b'0' { b'1' } else { b'0' };
        assert_eq!(key.open_login(std::str::from_utf8(&other).unwrap(), 0), None, "another login");
        for bad in ["", ".", "..", "5000..", "x.y.z", &value[..value.len() - 2]] {
            assert_eq!(key.open_login(bad, 0), None, "{bad:?}");
        }
    }

    #[test]
    fn csrf_tokens_belong_to_their_nonce_and_key() {
        let key = Key::random();
        let (a, b) = (new_nonce(), new_nonce());
        let token = key.csrf_token(&a);
        assert!(key.csrf_matches(&a, &token));
        assert!(!key.csrf_matches(&b, &token));
        assert!(!Key::random().csrf_matches(&a, &token));
        assert!(!key.csrf_matches(&a, ""));
        assert!(!key.csrf_matches(&a, "not base64!"));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("s3cret", "s3cret"));
        assert!(!same_secret("s3cre", "s3cret"));
        assert!(!same_secret("s3cret ", "s3cret"));
        assert!(!same_secret("", "s3cret"));
        assert_eq!(unhex(&hex(&[0xab; 16])), Some([0xab; 16]));
        assert_eq!(unhex("zz"), None);
    }
}
