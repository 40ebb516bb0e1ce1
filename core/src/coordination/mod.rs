//! The one seam for everything the instances of a site must agree on
//! (docs/architecture.md, "The coordination seam"): a login's state and
//! code used once, a code exchanged once, a session's tokens refreshed
//! once, a scene created, scanned and claimed once, each push handled once,
//! logouts seen by every instance, and one basic-support token.
//!
//! Three implementations, picked by `[store]`:
//! - [`MemoryCoordination`]: this process's memory (`memory`; tests).
//! - [`FileStore`]: one embedded database file that outlives restarts
//!   (`file:PATH`, the binary's default; one process).
//! - [`RedisStore`]: Redis, single, Sentinel or Cluster, shared by every
//!   instance; its commands and scripts live in `redis.rs` only.
//!
//! The file and Redis are key-value stores with one key layout and one
//! implementation of the seam over them (`kv.rs`); in one process (memory,
//! the file) the gate's own single-flight already makes an exchange, a
//! refresh or a token fetch run once, so only Redis ever takes a lock.

mod file;
mod kv;
mod memory;
mod prefixed;
mod redis;

use std::time::Duration;

use async_trait::async_trait;

pub use crate::qr::{SceneRequester, SceneStatus};
pub use file::FileStore;
pub use memory::MemoryCoordination;
pub use prefixed::Prefixed;
pub use redis::{sentinel_url_parses, RedisStore};

use crate::flow::now_unix;
use crate::secret::AccessToken;
use crate::store::StoredTokens;

/// Why the instances could not agree: the store is out of reach or holds
/// something this version did not write. Never carries a code, a state or
/// a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordinationError {
    /// Redis did not answer in time (the outage is logged once, when it starts).
    #[error("Redis is unreachable")]
    Unreachable,
    /// The state file could not be opened, read or written.
    #[error("the state file: {0}")]
    File(String),
    /// Another instance holds the lock of this work past its time.
    #[error("another instance's {0} did not finish in time")]
    Stalled(&'static str),
    /// A value in the store is not one the gate wrote.
    #[error("an unreadable {0} in the store")]
    Unreadable(&'static str),
    /// `[store]` names something that can't be used.
    #[error("{0} is not usable")]
    Config(&'static str),
}

/// Whose turn a piece of work is that must run once across instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn<T> {
    /// Another instance did it: its result.
    Done(T),
    /// This caller does it, then reports with the matching `finish_…` call.
    Mine,
}

/// What claiming a login's (state, code) pair found
/// (docs/security.md, "A code is bound to its state").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginClaim {
    /// The pair is this login's (first arrival or a repeat of it).
    Claimed,
    /// The state already went with another code.
    StateUsed,
    /// The code already came back with another state.
    CodeBound,
}

/// One logout as the instances share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logout {
    /// The logged-out session's id.
    pub sid: String,
    /// Its cookie's end, unix seconds: refused until then.
    pub until: u64,
    /// When it was logged out, unix ms.
    pub at_ms: u64,
}

/// An account-wide secret every instance shares, fetched by one of them
/// per window ([`Coordination::begin_shared_token`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedToken {
    /// The basic-support `access_token` of `cgi-bin` APIs.
    BasicToken,
    /// The JS-SDK's `jsapi_ticket` (`cgi-bin/ticket/getticket?type=jsapi`).
    JsapiTicket,
    /// WeCom's corp `access_token` (`cgi-bin/gettoken`, docs/wecom.md).
    CorpToken,
}

/// What several instances must agree on. Every call is atomic; keys are
/// codes, states and nonces as given (implementations hash what they
/// keep). Errors: [`CoordinationError`] when the store can't be reached in
/// time; a caller then answers 503 (a login) or keeps going (a signed-in
/// request never waits on it).
#[async_trait]
pub trait Coordination: Send + Sync + std::fmt::Debug + 'static {
    /// Binds a login's state (its state cookie's name) to its code for the
    /// state's 600 s and the code to its state for the code's 300 s
    /// (docs/protocol.md §1).
    async fn claim_login(&self, state: &str, code: &str) -> Result<LoginClaim, CoordinationError>;

    /// Whether `code` still needs its exchange: [`Turn::Done`] with the
    /// outcome another instance kept, or [`Turn::Mine`] (then the caller
    /// exchanges and calls [`Coordination::finish_exchange`]). Another
    /// instance's exchange is waited for at most `hold` + 1 s.
    async fn begin_exchange(
        &self,
        code: &str,
        hold: Duration,
    ) -> Result<Turn<String>, CoordinationError>;

    /// Keeps a code's outcome (when shareable) for the code's 300 s and
    /// ends the caller's turn.
    async fn finish_exchange(&self, code: &str, outcome: Option<&str>);

    /// Whether session `sid`'s tokens, whose access token is `stale`,
    /// still need a refresh: [`Turn::Done`] with the tokens another
    /// instance refreshed, or [`Turn::Mine`] (then the caller refreshes and
    /// calls [`Coordination::finish_refresh`]). Waits at most `hold` + 1 s.
    async fn begin_refresh(
        &self,
        sid: &str,
        stale: &AccessToken,
        hold: Duration,
    ) -> Result<Turn<StoredTokens>, CoordinationError>;

    /// Ends the caller's refresh turn.
    async fn finish_refresh(&self, sid: &str);

    /// Whether the account-wide secret `which` must be fetched:
    /// [`Turn::Done`] with a kept one (and its end, unix seconds) that
    /// lasts past `fresh_until`, or [`Turn::Mine`] (then the caller fetches
    /// and calls [`Coordination::finish_shared_token`]). Waits at most `hold`.
    async fn begin_shared_token(
        &self,
        which: SharedToken,
        fresh_until: u64,
        hold: Duration,
    ) -> Result<Turn<(AccessToken, u64)>, CoordinationError>;

    /// Keeps the fetched `which` until its end (unix seconds), if the
    /// fetch succeeded, and ends the caller's turn.
    ///
    /// Errors: [`CoordinationError`] when it could not be kept.
    async fn finish_shared_token(
        &self,
        which: SharedToken,
        fetched: Option<(&AccessToken, u64)>,
    ) -> Result<(), CoordinationError>;

    /// Forgets the kept `which` if it is `token` (WeChat said it is no
    /// longer valid).
    async fn forget_shared_token(&self, which: SharedToken, token: &AccessToken);

    /// Records a new pending scene until `expires_at` (unix seconds), with
    /// who asked for it (`scene_confirm`).
    async fn create_scene(
        &self,
        scene: &str,
        expires_at: u64,
        requester: Option<&SceneRequester>,
    ) -> Result<(), CoordinationError>;

    /// A scene's status ([`SceneStatus::Expired`] when unknown).
    async fn scene_status(&self, scene: &str) -> Result<SceneStatus, CoordinationError>;

    /// Moves a live scene from `from` to `to`; `true` when this call did.
    async fn scene_step(
        &self,
        scene: &str,
        from: &SceneStatus,
        to: &SceneStatus,
    ) -> Result<bool, CoordinationError>;

    /// Who asked for a live scene, if that was kept.
    async fn scene_requester(
        &self,
        scene: &str,
    ) -> Result<Option<SceneRequester>, CoordinationError>;

    /// A scene's status, waiting at most `wait` for a change from the one
    /// it has now; a scanned scene is claimed in the same step, so only
    /// one poll gets [`SceneStatus::Scanned`] (later ones see `Expired`).
    async fn watch_scene(
        &self,
        scene: &str,
        wait: Duration,
    ) -> Result<SceneStatus, CoordinationError>;

    /// Binds a signed push's `"timestamp nonce"` pair to its body's hash
    /// for `ttl`: `true` when this is the pair's body (first or a retry),
    /// `false` when the pair came with another body.
    async fn bind_push_nonce(
        &self,
        pair: &str,
        body: &str,
        ttl: Duration,
    ) -> Result<bool, CoordinationError>;

    /// Whether a push with this de-duplication key is new (remembered for
    /// `ttl`).
    async fn first_push(&self, key: &str, ttl: Duration) -> Result<bool, CoordinationError>;

    /// Forgets a push's de-duplication key, so WeChat's retry is handled.
    async fn forget_push(&self, key: &str);

    /// Whether `openid` follows the Official Account, as an instance
    /// found out (`cgi-bin/user/info`), and until when that holds (unix
    /// seconds); `None`: nobody knows.
    async fn follow_status(&self, openid: &str) -> Result<Option<(bool, u64)>, CoordinationError>;

    /// Keeps whether `openid` follows the account until `until` (unix
    /// seconds), for the other instances.
    async fn keep_follow_status(
        &self,
        openid: &str,
        follows: bool,
        until: u64,
    ) -> Result<(), CoordinationError>;

    /// Tells the other instances (and a restarted one) about a logout.
    async fn publish_logout(&self, logout: &Logout) -> Result<(), CoordinationError>;

    /// The logouts recorded after `after_ms` (unix ms), oldest first, at
    /// most 10,000.
    async fn logouts_after(&self, after_ms: u64) -> Result<Vec<Logout>, CoordinationError>;

    /// Forgets the logouts recorded before `before_ms` (unix ms).
    async fn forget_logouts_before(&self, before_ms: u64) -> Result<(), CoordinationError>;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), CoordinationError>;

    /// Whether other processes use the store at the same time (Redis):
    /// then the host reads their logouts about every 500 ms
    /// ([`crate::Gate::sync_revocations`]).
    fn is_shared(&self) -> bool;
}

/// A value that must not appear in a key (a code, a state) as a key part:
/// its SHA-1, hex.
pub fn key_hash(value: impl AsRef<[u8]>) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(value.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests;
