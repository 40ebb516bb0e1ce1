//! Server-side token storage: the web-authorization access and refresh
//! tokens never leave the server (docs/protocol.md §1 step 2); the session cookie
//! holds only a random session id that keys them.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

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

/// A store failure (a shared store out of reach); the message has no token.
#[derive(Debug, Clone, thiserror::Error)]
#[error("token store: {0}")]
pub struct StoreError(pub String);

/// Where the tokens of each session live, keyed by session id. The default
/// is [`MemoryTokenStore`]; several gateway instances need a shared one.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Stores (or replaces) the tokens of `sid`.
    async fn put(&self, sid: &str, tokens: StoredTokens) -> Result<(), StoreError>;
    /// The tokens of `sid`, if any and not past `refresh_expires_at` at `now` (unix seconds).
    async fn get(&self, sid: &str, now: u64) -> Result<Option<StoredTokens>, StoreError>;
    /// Forgets the tokens of `sid`.
    async fn remove(&self, sid: &str) -> Result<(), StoreError>;
}

/// Most sessions a [`MemoryTokenStore`] keeps; past it the ones nearest
/// their end are dropped first.
pub const MEMORY_STORE_CAPACITY: usize = 100_000;

/// An in-process [`TokenStore`] for a single gateway.
#[derive(Debug, Default)]
pub struct MemoryTokenStore {
    map: Mutex<HashMap<String, StoredTokens>>,
}

#[async_trait]
impl TokenStore for MemoryTokenStore {
    async fn put(&self, sid: &str, tokens: StoredTokens) -> Result<(), StoreError> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MEMORY_STORE_CAPACITY && !map.contains_key(sid) {
            let now = tokens.access_expires_at.saturating_sub(7200);
            map.retain(|_, t| t.refresh_expires_at > now);
            while map.len() >= MEMORY_STORE_CAPACITY {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, t)| t.refresh_expires_at)
                    .map(|(k, _)| k.clone())
                    .expect("non-empty");
                map.remove(&oldest);
            }
        }
        map.insert(sid.to_owned(), tokens);
        Ok(())
    }

    async fn get(&self, sid: &str, now: u64) -> Result<Option<StoredTokens>, StoreError> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map.get(sid).filter(|t| t.refresh_expires_at > now).cloned())
    }

    async fn remove(&self, sid: &str) -> Result<(), StoreError> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(sid);
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
