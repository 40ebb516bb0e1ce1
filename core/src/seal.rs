//! Sealed (encrypted and authenticated) cookie values: AES-256-GCM with the
//! cookie name bound as associated data, so a value sealed for one cookie
//! can't be replayed as another. The format and key derivation are those of
//! the `cookie` crate's private jar (HKDF keys, base64 of nonce ‖ ciphertext ‖
//! tag), with the ciphers built once instead of per cookie.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::Engine as _;
use cookie::Key;
use rand::RngCore;

use crate::secret::Secret;

/// Largest sealed value accepted for opening, in bytes; anything longer is
/// refused unread (browsers cap a cookie at 4096 bytes).
pub const MAX_SEALED_BYTES: usize = 4096;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Seals and opens cookie values with keys derived (HKDF) from the cookie
/// secrets: the first seals, any opens, so keys rotate without logging anyone out.
#[derive(Clone)]
pub struct Sealer {
    ciphers: Vec<Aes256Gcm>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    /// A sealer for one secret; `None` when it is shorter than 32 bytes.
    pub fn new(secret: &Secret) -> Option<Sealer> {
        Self::with_rotation(std::slice::from_ref(secret))
    }

    /// A sealer that seals with `secrets[0]` and opens with any of them;
    /// `None` when the list is empty or a secret is shorter than 32 bytes.
    pub fn with_rotation(secrets: &[Secret]) -> Option<Sealer> {
        let long_enough = |s: &Secret| s.expose().len() >= crate::config::MIN_COOKIE_SECRET_BYTES;
        (!secrets.is_empty() && secrets.iter().all(long_enough)).then(|| Sealer {
            ciphers: secrets
                .iter()
                .map(|s| {
                    let key = Key::derive_from(s.expose().as_bytes());
                    Aes256Gcm::new_from_slice(key.encryption()).expect("a 32-byte key")
                })
                .collect(),
        })
    }

    /// Encrypts `plaintext` for the cookie `name`; the result is cookie-safe base64.
    pub fn seal(&self, name: &str, plaintext: &str) -> String {
        let mut data = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        data.resize(NONCE_LEN, 0);
        rand::rng().fill_bytes(&mut data);
        data.extend_from_slice(plaintext.as_bytes());
        let (nonce, body) = data.split_at_mut(NONCE_LEN);
        let tag = self.ciphers[0]
            .encrypt_in_place_detached(Nonce::from_slice(nonce), name.as_bytes(), body)
            .expect("AES-GCM seals any cookie-sized value");
        data.extend_from_slice(&tag);
        BASE64.encode(&data)
    }

    /// Decrypts a value sealed for `name`; `None` when it is too long, forged,
    /// tampered with, sealed under another key or for another cookie name.
    pub fn open(&self, name: &str, value: &str) -> Option<String> {
        if value.len() > MAX_SEALED_BYTES {
            return None;
        }
        let data = BASE64.decode(value).ok()?;
        if data.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, rest) = data.split_at(NONCE_LEN);
        let (sealed, tag) = rest.split_at(rest.len() - TAG_LEN);
        // Every key decrypts its own copy: a failed tag check leaves garbage behind.
        self.ciphers.iter().find_map(|cipher| {
            let mut plain = sealed.to_vec();
            cipher
                .decrypt_in_place_detached(
                    Nonce::from_slice(nonce),
                    name.as_bytes(),
                    &mut plain,
                    Tag::from_slice(tag),
                )
                .ok()?;
            String::from_utf8(plain).ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(s: &str) -> Sealer {
        Sealer::new(&Secret::new(s)).unwrap()
    }

    #[test]
    fn round_trips_and_rejects_tampering_other_keys_and_other_names() {
        let a = sealer("a-very-long-cookie-secret-of-32-bytes!!");
        let sealed = a.seal("wechat_session", "{\"o\":\"openid\"}");
        assert!(!sealed.contains("openid"));
        assert_eq!(
            a.open("wechat_session", &sealed).as_deref(),
            Some("{\"o\":\"openid\"}")
        );
        assert_eq!(a.open("wechat_state_x", &sealed), None);
        let b = sealer("another-long-cookie-secret-of-32-bytes!");
        assert_eq!(b.open("wechat_session", &sealed), None);
        let mut bytes = sealed.clone().into_bytes();
        for i in 0..bytes.len() {
            let orig = bytes[i];
            bytes[i] = if orig == b'A' { b'B' } else { b'A' };
            assert_eq!(
                a.open("wechat_session", std::str::from_utf8(&bytes).unwrap()),
                None
            );
            bytes[i] = orig;
        }
        assert_eq!(a.open("wechat_session", "not base64 at all!"), None);
        assert_eq!(
            a.open("wechat_session", &"A".repeat(MAX_SEALED_BYTES + 1)),
            None
        );
    }

    #[test]
    fn rotation_seals_with_the_first_key_and_opens_with_any() {
        let old = Secret::new("the-old-cookie-secret-of-32-bytes-or-more");
        let new = Secret::new("the-new-cookie-secret-of-32-bytes-or-more");
        let before = Sealer::new(&old).unwrap().seal("n", "v");
        let rotated = Sealer::with_rotation(&[new.clone(), old]).unwrap();
        assert_eq!(rotated.open("n", &before).as_deref(), Some("v"));
        let after = rotated.seal("n", "w");
        assert_eq!(
            Sealer::new(&new).unwrap().open("n", &after).as_deref(),
            Some("w")
        );
        assert_eq!(Sealer::new(&new).unwrap().open("n", &before), None);
        assert!(Sealer::with_rotation(&[]).is_none());
    }

    #[test]
    fn reads_and_writes_the_cookie_crate_private_jar_format() {
        use cookie::{Cookie, CookieJar};
        let secret = "a-very-long-cookie-secret-of-32-bytes!!";
        let key = Key::derive_from(secret.as_bytes());
        let mut jar = CookieJar::new();
        jar.private_mut(&key)
            .add(Cookie::new("wechat_session", "v1"));
        let by_jar = jar.get("wechat_session").unwrap().value().to_owned();
        assert_eq!(
            sealer(secret).open("wechat_session", &by_jar).as_deref(),
            Some("v1")
        );
        let ours = sealer(secret).seal("wechat_session", "v2");
        let opened = CookieJar::new()
            .private(&key)
            .decrypt(Cookie::new("wechat_session", ours))
            .unwrap();
        assert_eq!(opened.value(), "v2");
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(Sealer::new(&Secret::new("short")).is_none());
    }
}
