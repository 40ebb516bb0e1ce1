//! Sealed (encrypted and authenticated) cookie values: AES-256-GCM from the
//! `cookie` crate's private jar, with the cookie name bound as associated
//! data, so a value sealed for one cookie can't be replayed as another.

use cookie::{Cookie, CookieJar, Key};

use crate::secret::Secret;

/// Largest sealed value accepted for opening, in bytes; anything longer is
/// refused unread (browsers cap a cookie at 4096 bytes).
pub const MAX_SEALED_BYTES: usize = 4096;

/// Seals and opens cookie values with keys derived (HKDF) from the cookie secret.
#[derive(Clone)]
pub struct Sealer {
    key: Key,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    /// A sealer for `secret`; `None` when it is shorter than 32 bytes.
    pub fn new(secret: &Secret) -> Option<Sealer> {
        let bytes = secret.expose().as_bytes();
        (bytes.len() >= crate::config::MIN_COOKIE_SECRET_BYTES).then(|| Sealer {
            key: Key::derive_from(bytes),
        })
    }

    /// Encrypts `plaintext` for the cookie `name`; the result is cookie-safe base64.
    pub fn seal(&self, name: &str, plaintext: &str) -> String {
        let mut jar = CookieJar::new();
        jar.private_mut(&self.key)
            .add(Cookie::new(name.to_owned(), plaintext.to_owned()));
        jar.get(name)
            .map(|c| c.value().to_owned())
            .unwrap_or_default()
    }

    /// Decrypts a value sealed for `name`; `None` when it is too long, forged,
    /// tampered with, sealed under another key or for another cookie name.
    pub fn open(&self, name: &str, value: &str) -> Option<String> {
        if value.len() > MAX_SEALED_BYTES {
            return None;
        }
        CookieJar::new()
            .private(&self.key)
            .decrypt(Cookie::new(name.to_owned(), value.to_owned()))
            .map(|c| c.value().to_owned())
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
    fn short_secrets_are_refused() {
        assert!(Sealer::new(&Secret::new("short")).is_none());
    }
}
