//! Server-side token storage: the web-authorization access and refresh
//! tokens never leave the server (docs/protocol.md §1 step 2); the session cookie
//! holds only a random session id that keys them.

use async_trait::async_trait;

use crate::coordination::CoordinationError;
use crate::secret::{AccessToken, RefreshToken};

/// Lifetime of a refresh token, in seconds (30 days; docs/protocol.md §1 step 3).
pub const REFRESH_TOKEN_LIFETIME_SECS: u64 = 30 * 24 * 3600;

/// The tokens of one session (its openid and scope are in the session
/// cookie). `Debug` never shows a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTokens {
    /// The access token.
    pub access_token: AccessToken,
    /// When the access token expires, unix seconds.
    pub access_expires_at: u64,
    /// The refresh token.
    pub refresh_token: RefreshToken,
    /// When the refresh token expires, unix seconds.
    pub refresh_expires_at: u64,
}

/// Where the tokens of each session live, keyed by session id. The default
/// is [`MemoryTokenStore`]; several gateway instances need a shared one.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Stores (or replaces) the tokens of `sid`.
    async fn put(&self, sid: &str, tokens: StoredTokens) -> Result<(), CoordinationError>;
    /// The tokens of `sid`, if any and not past `refresh_expires_at` at `now` (unix seconds).
    async fn get(&self, sid: &str, now: u64) -> Result<Option<StoredTokens>, CoordinationError>;
    /// Forgets the tokens of `sid`.
    async fn remove(&self, sid: &str) -> Result<(), CoordinationError>;
}

/// Most sessions a [`MemoryTokenStore`] keeps; past it the least used go.
pub const MEMORY_STORE_CAPACITY: usize = 100_000;

/// An in-process [`TokenStore`] for a single gateway.
#[derive(Debug)]
pub struct MemoryTokenStore {
    map: crate::expiring::ExpiringMap<String, StoredTokens>,
}

impl Default for MemoryTokenStore {
    fn default() -> Self {
        MemoryTokenStore {
            map: crate::expiring::ExpiringMap::new(MEMORY_STORE_CAPACITY),
        }
    }
}

#[async_trait]
impl TokenStore for MemoryTokenStore {
    async fn put(&self, sid: &str, tokens: StoredTokens) -> Result<(), CoordinationError> {
        let until = tokens.refresh_expires_at;
        self.map.insert(sid.to_owned(), tokens, until);
        Ok(())
    }

    async fn get(&self, sid: &str, now: u64) -> Result<Option<StoredTokens>, CoordinationError> {
        Ok(self.map.get(sid, now))
    }

    async fn remove(&self, sid: &str) -> Result<(), CoordinationError> {
        self.map.remove(sid);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(n: u64) -> StoredTokens {
        StoredTokens {
            access_token: AccessToken::new(format!("AT{n}")),
            access_expires_at: n + 7200,
            refresh_token: RefreshToken::new(format!("RT{n}")),
            refresh_expires_at: n + REFRESH_TOKEN_LIFETIME_SECS,
        }
    }

    #[tokio::test]
    async fn put_get_remove_and_expiry() {
        let store = MemoryTokenStore::default();
        store.put("a", tokens(100)).await.unwrap();
        assert_eq!(store.get("a", 100).await.unwrap(), Some(tokens(100)));
        assert_eq!(
            store
                .get("a", 100 + REFRESH_TOKEN_LIFETIME_SECS)
                .await
                .unwrap(),
            None
        );
        assert_eq!(store.get("b", 100).await.unwrap(), None);
        store.remove("a").await.unwrap();
        assert_eq!(store.get("a", 100).await.unwrap(), None);
        assert!(!format!("{:?}", tokens(1)).contains("AT1"));
    }
}
