//! Sealed (encrypted and authenticated) cookie values: AES-256-GCM from the
//! `cookie` crate's private jar, with the cookie name bound as associated
//! data, so a value sealed for one cookie can't be replayed as another.

use cookie::{Cookie, CookieJar, Key};

use crate::secret::Secret;

/// Largest sealed value accepted for opening, in bytes; anything longer is
/// refused unread (browsers cap a cookie at 4096 bytes).
pub const MAX_SEALED_BYTES: usize = 4096;

/// Seals and opens cookie values with keys derived (HKDF) from the cookie
/// secrets: the first seals, any opens, so keys rotate without logging anyone out.
#[derive(Clone)]
pub struct Sealer {
    keys: Vec<Key>,
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
            keys: secrets
                .iter()
                .map(|s| Key::derive_from(s.expose().as_bytes()))
                .collect(),
        })
    }

    /// Encrypts `plaintext` for the cookie `name`; the result is cookie-safe base64.
    pub fn seal(&self, name: &str, plaintext: &str) -> String {
        let mut jar = CookieJar::new();
        jar.private_mut(&self.keys[0])
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
        let jar = CookieJar::new();
        self.keys.iter().find_map(|key| {
            jar.private(key)
                .decrypt(Cookie::new(name.to_owned(), value.to_owned()))
                .map(|c| c.value().to_owned())
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
    fn short_secrets_are_refused() {
        assert!(Sealer::new(&Secret::new("short")).is_none());
    }
}
