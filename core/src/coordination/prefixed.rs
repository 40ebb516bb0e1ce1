//! One store shared by several sites of one process (`[[site]]`): each
//! site's keys start with its own `[store] key_prefix`, so a state, a code,
//! a session's tokens or a logout of one site is never seen by another.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::kv::KeyValue;
use super::CoordinationError;

/// `inner` with `prefix` before every key.
#[derive(Debug)]
pub struct Prefixed<S> {
    inner: Arc<S>,
    prefix: String,
}

impl<S> Prefixed<S> {
    /// The store `inner` seen under `prefix` (e.g. `wechat:shop:`).
    pub fn new(inner: Arc<S>, prefix: &str) -> Prefixed<S> {
        Prefixed {
            inner,
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

impl Prefixed<super::FileStore> {
    /// This site's logouts recorded after `after_ms` (unix ms), read
    /// without a runtime (at start-up).
    ///
    /// Errors: [`CoordinationError`] when the file can't be read.
    pub fn logouts_after_now(
        &self,
        after_ms: u64,
    ) -> Result<Vec<super::Logout>, CoordinationError> {
        self.inner
            .logouts_under(&self.key(super::kv::keys::LOGOUTS), after_ms)
    }
}

#[async_trait]
impl<S: KeyValue> KeyValue for Prefixed<S> {
    async fn kv_get(&self, key: &str) -> Result<Option<String>, CoordinationError> {
        self.inner.kv_get(&self.key(key)).await
    }
    async fn kv_set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), CoordinationError> {
        self.inner.kv_set(&self.key(key), value, ttl).await
    }
    async fn kv_set_nx(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, CoordinationError> {
        self.inner.kv_set_nx(&self.key(key), value, ttl).await
    }
    async fn kv_cas(
        &self,
        key: &str,
        expected: &str,
        new: &str,
    ) -> Result<bool, CoordinationError> {
        self.inner.kv_cas(&self.key(key), expected, new).await
    }
    async fn kv_claim_scanned(&self, key: &str) -> Result<Option<String>, CoordinationError> {
        self.inner.kv_claim_scanned(&self.key(key)).await
    }
    async fn kv_zadd(&self, key: &str, score: u64, member: &str) -> Result<(), CoordinationError> {
        self.inner.kv_zadd(&self.key(key), score, member).await
    }
    async fn kv_zrange_after(
        &self,
        key: &str,
        after: u64,
    ) -> Result<Vec<(String, u64)>, CoordinationError> {
        self.inner.kv_zrange_after(&self.key(key), after).await
    }
    async fn kv_zremove_before(&self, key: &str, before: u64) -> Result<(), CoordinationError> {
        self.inner.kv_zremove_before(&self.key(key), before).await
    }
    async fn kv_delete(&self, key: &str) -> Result<(), CoordinationError> {
        self.inner.kv_delete(&self.key(key)).await
    }
    async fn kv_ping(&self) -> Result<(), CoordinationError> {
        self.inner.kv_ping().await
    }
    fn is_multi_process(&self) -> bool {
        self.inner.is_multi_process()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Coordination, FileStore, LoginClaim, Logout};
    use super::*;

    #[tokio::test]
    async fn two_sites_on_one_file_never_see_each_others_keys() {
        let dir = std::env::temp_dir().join(format!("wechat-prefixed-{}", std::process::id()));
        let file = Arc::new(FileStore::open(&dir.join("store.redb")).unwrap());
        let shop = Prefixed::new(file.clone(), "wechat:shop:");
        let blog = Prefixed::new(file.clone(), "wechat:blog:");
        assert_eq!(
            shop.claim_login("state-1", "code-1").await.unwrap(),
            LoginClaim::Claimed
        );
        // The same state with another code is refused on its own site only.
        assert_eq!(
            shop.claim_login("state-1", "code-2").await.unwrap(),
            LoginClaim::StateUsed
        );
        assert_eq!(
            blog.claim_login("state-1", "code-2").await.unwrap(),
            LoginClaim::Claimed
        );
        let logout = Logout {
            sid: "sid-shop".into(),
            until: u64::MAX / 2,
            at_ms: 1_000,
        };
        shop.publish_logout(&logout).await.unwrap();
        assert_eq!(shop.logouts_after_now(0).unwrap(), vec![logout]);
        assert!(blog.logouts_after_now(0).unwrap().is_empty());
        assert!(blog.logouts_after(0).await.unwrap().is_empty());
        drop((shop, blog, file));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
