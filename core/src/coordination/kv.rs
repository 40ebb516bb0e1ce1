//! The coordination seam over a key-value store with expiring keys and
//! sorted sets: the state file ([`super::FileStore`], one process) and
//! Redis ([`super::RedisStore`], every instance). One key layout
//! ([`keys`]) and one implementation of [`Coordination`]; a lock is taken
//! only where other processes share the store.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{now_unix, Coordination, CoordinationError, LoginClaim, Logout, SharedToken, Turn};
use crate::flow::CODE_OUTCOME_SECS;
use crate::qr::{SceneRequester, SceneStatus};
use crate::secret::AccessToken;
use crate::state::STATE_LIFETIME_SECS;
use crate::store::{StoredTokens, TokenStore};

/// The primitives both stores offer. Values are strings; every key expires
/// after its `ttl`; each call is atomic. Errors: [`CoordinationError`]
/// when the store can't be reached in time.
#[async_trait]
pub trait KeyValue: Send + Sync + std::fmt::Debug + 'static {
    /// The live value at `key`.
    async fn kv_get(&self, key: &str) -> Result<Option<String>, CoordinationError>;
    /// Sets `key` to `value` for `ttl` (whole milliseconds).
    async fn kv_set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), CoordinationError>;
    /// Sets `key` only when absent; `true` when this call set it.
    async fn kv_set_nx(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, CoordinationError>;
    /// Sets `key` to `new` (expiry kept) only while it holds `expected`;
    /// `true` when this call did.
    async fn kv_cas(&self, key: &str, expected: &str, new: &str)
        -> Result<bool, CoordinationError>;
    /// A scene's value; a scanned one (`s:…`) is set to `c` (claimed,
    /// expiry kept) in the same step.
    async fn kv_claim_scanned(&self, key: &str) -> Result<Option<String>, CoordinationError>;
    /// Adds `member` to the sorted set `key` with `score`.
    async fn kv_zadd(&self, key: &str, score: u64, member: &str) -> Result<(), CoordinationError>;
    /// The members of sorted set `key` scored above `after`, lowest
    /// first, at most 10,000.
    async fn kv_zrange_after(
        &self,
        key: &str,
        after: u64,
    ) -> Result<Vec<(String, u64)>, CoordinationError>;
    /// Removes the members of sorted set `key` scored below `before`.
    async fn kv_zremove_before(&self, key: &str, before: u64) -> Result<(), CoordinationError>;
    /// Deletes `key`.
    async fn kv_delete(&self, key: &str) -> Result<(), CoordinationError>;
    /// Checks that the store answers.
    async fn kv_ping(&self) -> Result<(), CoordinationError>;
    /// Whether other processes use the store at the same time.
    fn is_multi_process(&self) -> bool;
}

/// How often a caller waiting for another instance's turn looks again.
const TURN_POLL: Duration = Duration::from_millis(20);

/// Takes `lock` for `hold` where other processes share the store; `true`
/// when taken. In one process the caller's own single-flight is the lock.
async fn take_lock<S: KeyValue>(
    store: &S,
    lock: &str,
    hold: Duration,
) -> Result<bool, CoordinationError> {
    if !store.is_multi_process() {
        return Ok(true);
    }
    store.kv_set_nx(lock, "1", hold).await
}

async fn release_lock<S: KeyValue>(store: &S, lock: &str) {
    if store.is_multi_process() {
        let _ = store.kv_delete(lock).await;
    }
}

/// Binds `key` to `value` for `ttl` unless bound already: `true` when it is
/// now bound to `value` (first or same), `false` when bound to another.
async fn bind_once<S: KeyValue>(
    store: &S,
    key: &str,
    value: &str,
    ttl: Duration,
) -> Result<bool, CoordinationError> {
    if store.kv_set_nx(key, value, ttl).await? {
        return Ok(true);
    }
    Ok(store.kv_get(key).await?.is_none_or(|bound| bound == value))
}

#[async_trait]
impl<S: KeyValue> TokenStore for S {
    async fn put(&self, sid: &str, tokens: StoredTokens) -> Result<(), CoordinationError> {
        let (json, ttl) = encode_tokens(&tokens);
        self.kv_set(&keys::tokens(sid), &json, ttl).await
    }

    async fn get(&self, sid: &str, now: u64) -> Result<Option<StoredTokens>, CoordinationError> {
        let json = self.kv_get(&keys::tokens(sid)).await?;
        Ok(json.and_then(|json| decode_tokens(&json, now)))
    }

    async fn remove(&self, sid: &str) -> Result<(), CoordinationError> {
        self.kv_delete(&keys::tokens(sid)).await
    }
}

#[async_trait]
impl<S: KeyValue> Coordination for S {
    async fn claim_login(&self, state: &str, code: &str) -> Result<LoginClaim, CoordinationError> {
        let (state_hash, code_hash) = (super::key_hash(state), super::key_hash(code));
        let state_life = Duration::from_secs(STATE_LIFETIME_SECS);
        if !bind_once(self, &keys::state(state), &code_hash, state_life).await? {
            return Ok(LoginClaim::StateUsed);
        }
        let code_life = Duration::from_secs(CODE_OUTCOME_SECS);
        if !bind_once(self, &keys::code_state(code), &state_hash, code_life).await? {
            return Ok(LoginClaim::CodeBound);
        }
        Ok(LoginClaim::Claimed)
    }

    async fn begin_exchange(
        &self,
        code: &str,
        hold: Duration,
    ) -> Result<Turn<String>, CoordinationError> {
        let (outcome, lock) = (keys::outcome(code), keys::exchange_lock(code));
        let deadline = Instant::now() + hold + Duration::from_secs(1);
        loop {
            if let Some(kept) = self.kv_get(&outcome).await? {
                return Ok(Turn::Done(kept));
            }
            if take_lock(self, &lock, hold).await? {
                // Again under the lock: the last holder may have finished
                // between the first look and the lock.
                if self.is_multi_process() {
                    if let Some(kept) = self.kv_get(&outcome).await? {
                        release_lock(self, &lock).await;
                        return Ok(Turn::Done(kept));
                    }
                }
                return Ok(Turn::Mine);
            }
            if Instant::now() >= deadline {
                return Err(CoordinationError::Stalled("code exchange"));
            }
            tokio::time::sleep(TURN_POLL).await;
        }
    }

    async fn finish_exchange(&self, code: &str, outcome: Option<&str>) {
        if let Some(outcome) = outcome {
            let life = Duration::from_secs(CODE_OUTCOME_SECS);
            if let Err(e) = self.kv_set(&keys::outcome(code), outcome, life).await {
                tracing::debug!(error = %e, "could not keep a code's outcome");
            }
        }
        release_lock(self, &keys::exchange_lock(code)).await;
    }

    async fn begin_refresh(
        &self,
        sid: &str,
        stale: &AccessToken,
        hold: Duration,
    ) -> Result<Turn<StoredTokens>, CoordinationError> {
        let lock = keys::refresh_lock(sid);
        let deadline = Instant::now() + hold + Duration::from_secs(1);
        let renewed = |t: Option<StoredTokens>| t.filter(|t| t.access_token != *stale);
        loop {
            if take_lock(self, &lock, hold).await? {
                if self.is_multi_process() {
                    if let Some(t) = renewed(self.get(sid, now_unix()).await?) {
                        release_lock(self, &lock).await;
                        return Ok(Turn::Done(t));
                    }
                }
                return Ok(Turn::Mine);
            }
            tokio::time::sleep(TURN_POLL).await;
            if let Some(t) = renewed(self.get(sid, now_unix()).await?) {
                return Ok(Turn::Done(t));
            }
            if Instant::now() >= deadline {
                return Err(CoordinationError::Stalled("token refresh"));
            }
        }
    }

    async fn finish_refresh(&self, sid: &str) {
        release_lock(self, &keys::refresh_lock(sid)).await;
    }

    async fn begin_shared_token(
        &self,
        which: SharedToken,
        fresh_until: u64,
        hold: Duration,
    ) -> Result<Turn<(AccessToken, u64)>, CoordinationError> {
        let (key, lock) = keys::shared_token(which);
        let deadline = Instant::now() + hold;
        loop {
            let kept = self.kv_get(key).await?;
            if let Some(found) = fresh_shared_token(kept, fresh_until) {
                return Ok(Turn::Done(found));
            }
            if take_lock(self, lock, hold).await? {
                if self.is_multi_process() {
                    let kept = self.kv_get(key).await?;
                    if let Some(found) = fresh_shared_token(kept, fresh_until) {
                        release_lock(self, lock).await;
                        return Ok(Turn::Done(found));
                    }
                }
                return Ok(Turn::Mine);
            }
            if Instant::now() >= deadline {
                return Err(CoordinationError::Stalled(match which {
                    SharedToken::BasicToken => "basic-support token fetch",
                    SharedToken::JsapiTicket => "jsapi_ticket fetch",
                    SharedToken::CorpToken => "WeCom corp token fetch",
                }));
            }
            tokio::time::sleep(TURN_POLL).await;
        }
    }

    async fn finish_shared_token(
        &self,
        which: SharedToken,
        fetched: Option<(&AccessToken, u64)>,
    ) -> Result<(), CoordinationError> {
        let (key, lock) = keys::shared_token(which);
        let kept = match fetched {
            Some((token, expires_at)) => {
                let ttl = Duration::from_secs(expires_at.saturating_sub(now_unix()).max(1));
                let value = encode_shared_token(token, expires_at);
                self.kv_set(key, &value, ttl).await
            }
            None => Ok(()),
        };
        release_lock(self, lock).await;
        kept
    }

    async fn forget_shared_token(&self, which: SharedToken, token: &AccessToken) {
        let (key, _) = keys::shared_token(which);
        if is_shared_token(self.kv_get(key).await.ok().flatten(), token) {
            let _ = self.kv_delete(key).await;
        }
    }

    async fn create_scene(
        &self,
        scene: &str,
        expires_at: u64,
        requester: Option<&SceneRequester>,
    ) -> Result<(), CoordinationError> {
        let ttl = Duration::from_secs(expires_at.saturating_sub(now_unix()).max(1));
        if let Some(by) = requester {
            let by = serde_json::to_string(by).expect("serializes");
            self.kv_set(&keys::scene_requester(scene), &by, ttl).await?;
        }
        self.kv_set(&keys::scene(scene), &SceneStatus::Pending.value(), ttl)
            .await
    }

    async fn scene_status(&self, scene: &str) -> Result<SceneStatus, CoordinationError> {
        let value = self.kv_get(&keys::scene(scene)).await?;
        Ok(SceneStatus::from_value(value.as_deref()))
    }

    async fn scene_step(
        &self,
        scene: &str,
        from: &SceneStatus,
        to: &SceneStatus,
    ) -> Result<bool, CoordinationError> {
        self.kv_cas(&keys::scene(scene), &from.value(), &to.value())
            .await
    }

    async fn scene_requester(
        &self,
        scene: &str,
    ) -> Result<Option<SceneRequester>, CoordinationError> {
        let json = self.kv_get(&keys::scene_requester(scene)).await?;
        Ok(json.and_then(|json| serde_json::from_str(&json).ok()))
    }

    async fn watch_scene(
        &self,
        scene: &str,
        wait: Duration,
    ) -> Result<SceneStatus, CoordinationError> {
        let key = keys::scene(scene);
        poll_scene(wait, || async {
            let value = self.kv_claim_scanned(&key).await?;
            Ok(SceneStatus::from_value(value.as_deref()))
        })
        .await
    }

    async fn bind_push_nonce(
        &self,
        pair: &str,
        body: &str,
        ttl: Duration,
    ) -> Result<bool, CoordinationError> {
        bind_once(self, &keys::push_nonce(pair), body, ttl).await
    }

    async fn first_push(&self, key: &str, ttl: Duration) -> Result<bool, CoordinationError> {
        self.kv_set_nx(&keys::push(key), "1", ttl).await
    }

    async fn forget_push(&self, key: &str) {
        let _ = self.kv_delete(&keys::push(key)).await;
    }

    async fn follow_status(&self, openid: &str) -> Result<Option<(bool, u64)>, CoordinationError> {
        // `1:UNTIL` or `0:UNTIL`: each instance keeps it as long as the store.
        let value = self.kv_get(&keys::follower(openid)).await?;
        Ok(value.as_deref().and_then(|v| {
            let (follows, until) = v.split_once(':')?;
            Some((follows == "1", until.parse().ok()?))
        }))
    }

    async fn keep_follow_status(
        &self,
        openid: &str,
        follows: bool,
        until: u64,
    ) -> Result<(), CoordinationError> {
        let ttl = Duration::from_secs(until.saturating_sub(now_unix()).max(1));
        let value = format!("{}:{until}", u8::from(follows));
        self.kv_set(&keys::follower(openid), &value, ttl).await
    }

    async fn publish_logout(&self, logout: &Logout) -> Result<(), CoordinationError> {
        self.kv_zadd(keys::LOGOUTS, logout.at_ms, &logout_member(logout))
            .await
    }

    async fn logouts_after(&self, after_ms: u64) -> Result<Vec<Logout>, CoordinationError> {
        let members = self.kv_zrange_after(keys::LOGOUTS, after_ms).await?;
        Ok(logouts_from(members))
    }

    async fn forget_logouts_before(&self, before_ms: u64) -> Result<(), CoordinationError> {
        self.kv_zremove_before(keys::LOGOUTS, before_ms).await
    }

    async fn ping(&self) -> Result<(), CoordinationError> {
        self.kv_ping().await
    }

    fn is_shared(&self) -> bool {
        self.is_multi_process()
    }
}

/// Sorted-set members and their scores as logouts (malformed ones skipped).
pub(super) fn logouts_from(members: Vec<(String, u64)>) -> Vec<Logout> {
    members
        .into_iter()
        .filter_map(|(member, at_ms)| logout_from_member(&member, at_ms))
        .collect()
}

/// A scene's status by `read` (which claims a scanned one), read again
/// every 100 ms for at most `wait` while it waits for a scan or a
/// confirmation and has not changed: a push handled by another instance
/// (or another request) is seen within 100 ms.
async fn poll_scene<F, Fut>(wait: Duration, mut read: F) -> Result<SceneStatus, CoordinationError>
where
    F: FnMut() -> Fut + Send,
    Fut: std::future::Future<Output = Result<SceneStatus, CoordinationError>> + Send,
{
    let deadline = Instant::now() + wait;
    let mut first = None;
    loop {
        let status = read().await?;
        let waiting = matches!(status, SceneStatus::Pending | SceneStatus::Awaiting(_));
        if !waiting || Instant::now() >= deadline || *first.get_or_insert(status.clone()) != status
        {
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A logout as a sorted-set member: `"<sid> <until>"`.
fn logout_member(logout: &Logout) -> String {
    format!("{} {}", logout.sid, logout.until)
}

/// A sorted-set member and its score as a logout; `None` if malformed.
fn logout_from_member(member: &str, at_ms: u64) -> Option<Logout> {
    let (sid, until) = member.split_once(' ')?;
    Some(Logout {
        sid: sid.to_owned(),
        until: until.parse().ok()?,
        at_ms,
    })
}

/// A shared token ([`SharedToken`]: the basic-support token, the
/// `jsapi_ticket`, WeCom's corp token) as either store keeps it: compact JSON.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeptToken {
    t: String,
    exp: u64,
}

fn encode_shared_token(token: &AccessToken, expires_at: u64) -> String {
    serde_json::to_string(&KeptToken {
        t: token.expose().to_owned(),
        exp: expires_at,
    })
    .expect("serializes")
}

/// A kept shared token that lasts past `fresh_until` (unix seconds), with its end.
fn fresh_shared_token(kept: Option<String>, fresh_until: u64) -> Option<(AccessToken, u64)> {
    kept.and_then(|v| serde_json::from_str::<KeptToken>(&v).ok())
        .filter(|t| t.exp > fresh_until)
        .map(|t| (AccessToken::new(t.t), t.exp))
}

/// Whether the kept shared token is `token`.
fn is_shared_token(kept: Option<String>, token: &AccessToken) -> bool {
    kept.and_then(|v| serde_json::from_str::<KeptToken>(&v).ok())
        .is_some_and(|t| t.t == token.expose())
}

/// A session's tokens as the file and Redis keep them: compact JSON.
#[derive(serde::Serialize, serde::Deserialize)]
struct TokensRecord {
    a: String,
    ae: u64,
    r: String,
    re: u64,
}

/// `tokens` as the stored JSON, and its time to live (seconds, at least 1).
pub(super) fn encode_tokens(tokens: &StoredTokens) -> (String, Duration) {
    let ttl = tokens.refresh_expires_at.saturating_sub(now_unix()).max(1);
    let record = TokensRecord {
        a: tokens.access_token.expose().to_owned(),
        ae: tokens.access_expires_at,
        r: tokens.refresh_token.expose().to_owned(),
        re: tokens.refresh_expires_at,
    };
    let json = serde_json::to_string(&record).expect("tokens serialize");
    (json, Duration::from_secs(ttl))
}

/// Stored JSON as tokens, if well-formed and not past their refresh
/// token's end at `now` (unix seconds).
pub(super) fn decode_tokens(json: &str, now: u64) -> Option<StoredTokens> {
    let r = serde_json::from_str::<TokensRecord>(json).ok()?;
    (r.re > now).then(|| StoredTokens {
        access_token: AccessToken::new(r.a),
        access_expires_at: r.ae,
        refresh_token: crate::secret::RefreshToken::new(r.r),
        refresh_expires_at: r.re,
    })
}

/// The key layout of both stores (with Redis's `[store] key_prefix` before
/// each): codes, states, nonces and push
/// keys appear only as SHA-1 hashes, tokens only in values.
pub(in crate::coordination) mod keys {
    use super::super::key_hash;

    pub(super) fn state(state: &str) -> String {
        format!("state:{}", key_hash(state))
    }
    pub(super) fn code_state(code: &str) -> String {
        format!("code-state:{}", key_hash(code))
    }
    pub(super) fn outcome(code: &str) -> String {
        format!("login:{}", key_hash(code))
    }
    pub(super) fn exchange_lock(code: &str) -> String {
        format!("login-lock:{}", key_hash(code))
    }
    pub(super) fn refresh_lock(sid: &str) -> String {
        format!("refresh-lock:{sid}")
    }
    pub(super) fn tokens(sid: &str) -> String {
        format!("tokens:{sid}")
    }
    pub(super) fn scene(scene: &str) -> String {
        format!("scene:{scene}")
    }
    pub(super) fn scene_requester(scene: &str) -> String {
        format!("scene-by:{scene}")
    }
    pub(super) fn push_nonce(pair: &str) -> String {
        format!("push-nonce:{}", key_hash(pair))
    }
    pub(super) fn push(key: &str) -> String {
        format!("push:{}", key_hash(key))
    }
    pub(super) fn follower(openid: &str) -> String {
        format!("follower:{openid}")
    }
    pub(super) const BASIC_TOKEN: &str = "basic-token";
    pub(super) const BASIC_TOKEN_LOCK: &str = "basic-token-lock";
    pub(super) const JSAPI_TICKET: &str = "jsapi-ticket";
    pub(super) const JSAPI_TICKET_LOCK: &str = "jsapi-ticket-lock";
    pub(super) const CORP_TOKEN: &str = "wecom-corp-token";
    pub(super) const CORP_TOKEN_LOCK: &str = "wecom-corp-token-lock";

    /// The key of a shared token and of its fetch lock.
    pub(super) fn shared_token(which: super::SharedToken) -> (&'static str, &'static str) {
        match which {
            super::SharedToken::BasicToken => (BASIC_TOKEN, BASIC_TOKEN_LOCK),
            super::SharedToken::JsapiTicket => (JSAPI_TICKET, JSAPI_TICKET_LOCK),
            super::SharedToken::CorpToken => (CORP_TOKEN, CORP_TOKEN_LOCK),
        }
    }
    /// The sorted set of logouts, scored by the logout time in ms.
    pub(in crate::coordination) const LOGOUTS: &str = "revoked";
}
