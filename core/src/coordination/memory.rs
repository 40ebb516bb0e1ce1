//! The coordination seam in this process's memory (`[store] url =
//! "memory"`): one process is every instance, so the gate's single-flight
//! already runs each exchange, refresh and token fetch once, logouts are
//! this process's own, and a scene's long poll wakes the moment its push
//! lands. Nothing outlives the process.

use std::time::Duration;

use async_trait::async_trait;

use super::{now_unix, Coordination, CoordinationError, LoginClaim, Logout, SharedToken, Turn};
use crate::flow::CODE_OUTCOME_SECS;
use crate::qr::{SceneRequester, SceneStatus, Scenes};
use crate::secret::AccessToken;
use crate::state::{UsedStates, STATE_LIFETIME_SECS};
use crate::store::StoredTokens;

/// Everything one process must agree with itself on, in bounded expiring
/// maps (`expiring.rs`).
#[derive(Debug, Default)]
pub struct MemoryCoordination {
    /// Each state with the code it first came with.
    states: UsedStates,
    /// Each code with the state it first came with.
    codes: UsedStates,
    /// Each signed push's (timestamp, nonce) with its body.
    push_nonces: UsedStates,
    scenes: Scenes,
}

#[async_trait]
impl Coordination for MemoryCoordination {
    async fn claim_login(&self, state: &str, code: &str) -> Result<LoginClaim, CoordinationError> {
        let now = now_unix();
        if !self
            .states
            .claim(state, code, now, now + STATE_LIFETIME_SECS)
        {
            return Ok(LoginClaim::StateUsed);
        }
        if !self.codes.claim(code, state, now, now + CODE_OUTCOME_SECS) {
            return Ok(LoginClaim::CodeBound);
        }
        Ok(LoginClaim::Claimed)
    }

    async fn begin_exchange(
        &self,
        _: &str,
        _: Duration,
    ) -> Result<Turn<String>, CoordinationError> {
        Ok(Turn::Mine)
    }

    async fn finish_exchange(&self, _: &str, _: Option<&str>) {}

    async fn begin_refresh(
        &self,
        _: &str,
        _: &AccessToken,
        _: Duration,
    ) -> Result<Turn<StoredTokens>, CoordinationError> {
        Ok(Turn::Mine)
    }

    async fn finish_refresh(&self, _: &str) {}

    async fn begin_shared_token(
        &self,
        _: SharedToken,
        _: u64,
        _: Duration,
    ) -> Result<Turn<(AccessToken, u64)>, CoordinationError> {
        // The process's own cache ([`crate::qr::SharedSecret`]) is the only one.
        Ok(Turn::Mine)
    }

    async fn finish_shared_token(
        &self,
        _: SharedToken,
        _: Option<(&AccessToken, u64)>,
    ) -> Result<(), CoordinationError> {
        Ok(())
    }

    async fn forget_shared_token(&self, _: SharedToken, _: &AccessToken) {}

    async fn create_scene(
        &self,
        scene: &str,
        expires_at: u64,
        requester: Option<&SceneRequester>,
    ) -> Result<(), CoordinationError> {
        self.scenes.create(scene, expires_at, requester.cloned());
        Ok(())
    }

    async fn scene_status(&self, scene: &str) -> Result<SceneStatus, CoordinationError> {
        Ok(self.scenes.status(scene, now_unix()))
    }

    async fn scene_step(
        &self,
        scene: &str,
        from: &SceneStatus,
        to: &SceneStatus,
    ) -> Result<bool, CoordinationError> {
        Ok(self.scenes.replace(scene, from, to.clone(), now_unix()))
    }

    async fn scene_requester(
        &self,
        scene: &str,
    ) -> Result<Option<SceneRequester>, CoordinationError> {
        Ok(self.scenes.requester(scene, now_unix()))
    }

    async fn watch_scene(
        &self,
        scene: &str,
        wait: Duration,
    ) -> Result<SceneStatus, CoordinationError> {
        let waiting = matches!(
            self.scenes.status(scene, now_unix()),
            SceneStatus::Pending | SceneStatus::Awaiting(_)
        );
        if waiting && !wait.is_zero() {
            self.scenes.wait(scene, wait).await;
        }
        let now = now_unix();
        Ok(match self.scenes.status(scene, now) {
            SceneStatus::Scanned(_) => self
                .scenes
                .claim(scene, now)
                .map_or(SceneStatus::Expired, SceneStatus::Scanned),
            other => other,
        })
    }

    async fn bind_push_nonce(
        &self,
        pair: &str,
        body: &str,
        ttl: Duration,
    ) -> Result<bool, CoordinationError> {
        let now = now_unix();
        Ok(self
            .push_nonces
            .claim(pair, body, now, now + ttl.as_secs().max(1)))
    }

    async fn first_push(&self, key: &str, ttl: Duration) -> Result<bool, CoordinationError> {
        let now = now_unix();
        Ok(self.scenes.first_push(key, now, now + ttl.as_secs().max(1)))
    }

    async fn forget_push(&self, key: &str) {
        self.scenes.forget_push(key);
    }

    async fn follow_status(&self, _: &str) -> Result<Option<(bool, u64)>, CoordinationError> {
        // The gate keeps what it found out itself; no other process asks.
        Ok(None)
    }

    async fn keep_follow_status(&self, _: &str, _: bool, _: u64) -> Result<(), CoordinationError> {
        Ok(())
    }

    async fn publish_logout(&self, _: &Logout) -> Result<(), CoordinationError> {
        // The gate has refused the session already; no other process asks.
        Ok(())
    }

    async fn logouts_after(&self, _: u64) -> Result<Vec<Logout>, CoordinationError> {
        Ok(Vec::new())
    }

    async fn forget_logouts_before(&self, _: u64) -> Result<(), CoordinationError> {
        Ok(())
    }

    async fn ping(&self) -> Result<(), CoordinationError> {
        Ok(())
    }

    fn is_shared(&self) -> bool {
        false
    }
}
