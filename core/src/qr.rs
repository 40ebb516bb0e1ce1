//! Desktop login by the Official Account's scene QR code (docs/protocol.md §3):
//! the basic-support token, the scenes waiting for a scan, and the
//! de-duplication of WeChat's push retries.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use serde::{Deserialize, Serialize};

use crate::coordination::{Coordination, SharedToken, Turn};
use crate::errcode::ErrCode;
use crate::expiring::ExpiringMap;
use crate::flow::CallError;
use crate::secret::AccessToken;
use crate::config::TokenSource;
use crate::sns::{QrTicket, SnsClient};

/// A basic-support token this close to expiry (seconds) is refreshed first.
pub const BASIC_TOKEN_MARGIN_SECS: u64 = 300;
/// Lifetime asked for a login QR code, in seconds.
pub const SCENE_LIFETIME_SECS: u64 = 300;
/// How long a push's de-duplication key is kept, in seconds (WeChat retries within ~15 s).
pub const PUSH_DEDUP_SECS: u64 = 60;

/// One account-wide secret (`which`): one cached copy per process,
/// refreshed before expiry by one caller at a time (lock, then re-check),
/// so concurrent callers never fetch it twice; with a shared store, one
/// fetch per refresh window across every instance
/// ([`Coordination::begin_shared_token`]).
#[derive(Debug)]
pub(crate) struct SharedSecret {
    which: SharedToken,
    cached: Mutex<Option<(AccessToken, u64)>>,
    refresh: tokio::sync::Mutex<()>,
    coordination: Arc<dyn Coordination>,
}

/// The longest one instance's fetch may hold the turn, and the others wait.
const FETCH_TURN_SECS: u64 = 15;

impl SharedSecret {
    pub(crate) fn new(which: SharedToken, coordination: Arc<dyn Coordination>) -> Self {
        SharedSecret {
            which,
            cached: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            coordination,
        }
    }

    fn fresh(&self, now: u64) -> Option<AccessToken> {
        let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        cached
            .as_ref()
            .filter(|(_, expires_at)| *expires_at > now + BASIC_TOKEN_MARGIN_SECS)
            .map(|(t, _)| t.clone())
    }

    /// A valid one at `now` (unix seconds); `fetch` gets a new one and its
    /// lifetime in seconds when neither this process nor the store has one.
    ///
    /// Errors: `fetch`'s, or the coordination's.
    pub(crate) async fn get<F, Fut>(&self, now: u64, fetch: F) -> Result<AccessToken, CallError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(AccessToken, u64), CallError>>,
    {
        if let Some(t) = self.fresh(now) {
            return Ok(t);
        }
        let _only_one = self.refresh.lock().await;
        if let Some(t) = self.fresh(now) {
            return Ok(t);
        }
        let turn = self
            .coordination
            .begin_shared_token(
                self.which,
                now + BASIC_TOKEN_MARGIN_SECS,
                Duration::from_secs(FETCH_TURN_SECS),
            )
            .await?;
        let (token, expires_at) = match turn {
            Turn::Done(kept) => kept,
            Turn::Mine => match fetch().await {
                Ok((token, expires_in)) => {
                    tracing::info!(expires_in, which = ?self.which, "fetched an account-wide token");
                    let expires_at = now + expires_in;
                    self.coordination
                        .finish_shared_token(self.which, Some((&token, expires_at)))
                        .await?;
                    (token, expires_at)
                }
                Err(e) => {
                    let _ = self.coordination.finish_shared_token(self.which, None).await;
                    return Err(e);
                }
            },
        };
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some((token.clone(), expires_at));
        Ok(token)
    }

    /// Forgets `token` if it is the cached one (WeChat said it is no longer valid).
    pub(crate) async fn invalidate(&self, token: &AccessToken) {
        {
            let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
            if cached.as_ref().is_some_and(|(t, _)| t == token) {
                *cached = None;
            }
        }
        self.coordination.forget_shared_token(self.which, token).await;
    }
}

/// The basic-support token for `cgi-bin` APIs, from `[wechat]
/// token_source`, and the JS-SDK's `jsapi_ticket` fetched with it: each a
/// [`SharedSecret`].
#[derive(Debug)]
pub struct BasicToken {
    sns: SnsClient,
    source: TokenSource,
    token: SharedSecret,
    ticket: SharedSecret,
    /// When this process last asked `stable_token` to force a new token
    /// (unix seconds; 0: never).
    last_forced: std::sync::atomic::AtomicU64,
}

/// A forced `stable_token` refresh comes at most this often from one
/// process, in seconds: WeChat allows few per day, and an account-wide
/// token that one refresh did not mend is not mended by another.
pub const FORCE_REFRESH_EVERY_SECS: u64 = 3600;

/// The lifetime given to a token whose Redis key has no TTL, in seconds.
const UNTIMED_TOKEN_SECS: u64 = 7200;

impl BasicToken {
    /// A manager fetching from `source` (with `sns`, the Official
    /// Account's credentials, for `cgi-bin`) and sharing the token and
    /// ticket through `coordination`.
    pub fn new(sns: SnsClient, source: TokenSource, coordination: Arc<dyn Coordination>) -> Self {
        BasicToken {
            sns,
            source,
            token: SharedSecret::new(SharedToken::BasicToken, coordination.clone()),
            ticket: SharedSecret::new(SharedToken::JsapiTicket, coordination),
            last_forced: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A valid token at `now` (unix seconds), fetching one if needed.
    ///
    /// Errors: the source's failure (`cgi-bin/stable_token`, the token
    /// URL or Redis), or the coordination's.
    pub async fn get(&self, now: u64) -> Result<AccessToken, CallError> {
        self.token.get(now, || self.fetch(false)).await
    }

    /// A token from the source; `force`: `stable_token` with
    /// `force_refresh` (other sources are read as they are).
    async fn fetch(&self, force: bool) -> Result<(AccessToken, u64), CallError> {
        match &self.source {
            TokenSource::Wechat => Ok(self.sns.stable_token(force).await?),
            TokenSource::Url(url) => Ok(self.sns.token_from_url(url).await?),
            TokenSource::Redis { url, key } => token_from_redis(url, key).await,
        }
    }

    /// Whether a refresh after WeChat refused the token may force one: at
    /// most once per [`FORCE_REFRESH_EVERY_SECS`].
    fn may_force(&self, now: u64) -> bool {
        use std::sync::atomic::Ordering;
        let last = self.last_forced.load(Ordering::Relaxed);
        (last == 0 || now >= last + FORCE_REFRESH_EVERY_SECS)
            && self
                .last_forced
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Forgets `token` if it is the cached one (WeChat said it is no longer valid).
    pub async fn invalidate(&self, token: &AccessToken) {
        self.token.invalidate(token).await
    }

    /// A valid `jsapi_ticket` at `now` (unix seconds), fetched with the
    /// basic token (`cgi-bin/ticket/getticket?type=jsapi`) when neither this
    /// process nor the store has one: one fetch per window everywhere.
    ///
    /// Errors: [`CallError`].
    pub async fn jsapi_ticket(&self, now: u64) -> Result<AccessToken, CallError> {
        self.ticket
            .get(now, || async {
                self.with_token(now, |token| async move { self.sns.jsapi_ticket(&token).await })
                    .await
            })
            .await
    }

    /// Runs `call` with a valid token; a 40001/42001 answer (the token is
    /// no longer valid) forgets it and runs `call` once more with a new one.
    ///
    /// Errors: [`CallError`].
    async fn with_token<T, F, Fut>(&self, now: u64, call: F) -> Result<T, CallError>
    where
        F: Fn(AccessToken) -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::sns::SnsError>>,
    {
        let token = self.get(now).await?;
        match call(token.clone()).await {
            Err(e)
                if matches!(
                    e.errcode(),
                    Some(ErrCode::InvalidCredential | ErrCode::AccessTokenExpired)
                ) =>
            {
                self.invalidate(&token).await;
                // Normal mode first: another backend's forced refresh is
                // mended by reading the account's current token. Only the
                // same refused token again is worth a forced one.
                let fresh = self
                    .token
                    .get(now, || async {
                        let read = self.fetch(false).await?;
                        let forcible = matches!(self.source, TokenSource::Wechat);
                        if read.0 == token && forcible && self.may_force(now) {
                            return self.fetch(true).await;
                        }
                        Ok(read)
                    })
                    .await?;
                Ok(call(fresh).await?)
            }
            other => Ok(other?),
        }
    }

    /// Creates a scene QR code (`cgi-bin/qrcode/create`).
    ///
    /// Errors: [`CallError`].
    pub async fn create_qr_scene(&self, scene: &str, now: u64) -> Result<QrTicket, CallError> {
        self.with_token(now, |token| async move {
            self.sns
                .create_qr_scene(&token, scene, SCENE_LIFETIME_SECS)
                .await
        })
        .await
    }

    /// Whether `openid` follows the Official Account (`cgi-bin/user/info`).
    ///
    /// Errors: [`CallError`].
    pub async fn follower(&self, openid: &str, now: u64) -> Result<crate::sns::Follower, CallError> {
        self.with_token(now, |token| async move { self.sns.follower(&token, openid).await })
            .await
    }
}

/// The token kept under `key` in the Redis at `url` (`token_source =
/// "redis"`), and its remaining lifetime: the key's TTL in seconds.
///
/// Errors: [`SnsError::Transport`] (as a source out of reach) when Redis
/// does not answer within 2 s, or the key holds no token.
async fn token_from_redis(url: &crate::secret::Secret, key: &str) -> Result<(AccessToken, u64), CallError> {
    let unreachable = |what: String| CallError::WeChat(crate::sns::SnsError::Transport(what));
    let read = async {
        let client = redis::Client::open(url.expose()).map_err(|e| e.to_string())?;
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let (token, ttl): (Option<String>, i64) = redis::pipe()
            .get(key)
            .ttl(key)
            .query_async(&mut connection)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((token, ttl))
    };
    match tokio::time::timeout(Duration::from_secs(2), read).await {
        Err(_) => Err(unreachable("token redis: no answer within 2 s".into())),
        Ok(Err(e)) => Err(unreachable(format!("token redis: {e}"))),
        Ok(Ok((Some(token), ttl))) if !token.is_empty() => {
            let left = if ttl < 0 { UNTIMED_TOKEN_SECS } else { ttl as u64 };
            Ok((AccessToken::new(token), left))
        }
        Ok(Ok(_)) => Err(unreachable(format!("token redis: no token under {key:?}"))),
    }
}

/// Where a scene is. In a shared store a scene's value is
/// [`SceneStatus::value`]: `p`, `w:OPENID`, `s:OPENID`, `r`, or `c` once
/// claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SceneStatus {
    /// Waiting for a scan.
    Pending,
    /// Scanned by `openid`, waiting for the phone to confirm the login
    /// (`[gateway] scene_confirm`).
    Awaiting(String),
    /// Scanned (and confirmed, where asked) by `openid`; not yet claimed
    /// by its browser.
    Scanned(String),
    /// Refused on the phone: the scene logs nobody in.
    Refused,
    /// Unknown, expired, or already used.
    Expired,
}

impl SceneStatus {
    /// The status a shared store's value stands for (`None`: no value).
    pub fn from_value(value: Option<&str>) -> SceneStatus {
        match value {
            Some("p") => SceneStatus::Pending,
            Some("r") => SceneStatus::Refused,
            Some(v) => match (v.strip_prefix("w:"), v.strip_prefix("s:")) {
                (Some(openid), _) => SceneStatus::Awaiting(openid.to_owned()),
                (_, Some(openid)) => SceneStatus::Scanned(openid.to_owned()),
                _ => SceneStatus::Expired,
            },
            None => SceneStatus::Expired,
        }
    }

    /// The value a shared store keeps for this status (`c`: claimed).
    pub fn value(&self) -> String {
        match self {
            SceneStatus::Pending => "p".to_owned(),
            SceneStatus::Awaiting(openid) => format!("w:{openid}"),
            SceneStatus::Scanned(openid) => format!("s:{openid}"),
            SceneStatus::Refused => "r".to_owned(),
            SceneStatus::Expired => "c".to_owned(),
        }
    }
}

/// Where a scene QR login was asked for, shown on the phone's
/// confirmation page (`scene_confirm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneRequester {
    /// The desktop browser's client address, if known.
    #[serde(rename = "ip", default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Its `User-Agent`, at most 200 bytes.
    #[serde(rename = "ua")]
    pub browser: String,
    /// When the QR code was made, unix seconds.
    #[serde(rename = "at")]
    pub at: u64,
}

/// Longest `User-Agent` kept for a [`SceneRequester`], in bytes.
pub const MAX_REQUESTER_BROWSER_BYTES: usize = 200;

impl SceneRequester {
    /// The requester of a scene made now (unix seconds) by a browser with
    /// this `User-Agent` (cut at a character boundary) from `client`.
    pub fn new(client: Option<std::net::IpAddr>, user_agent: Option<&str>, at: u64) -> Self {
        let ua = user_agent.unwrap_or("");
        let mut end = ua.len().min(MAX_REQUESTER_BROWSER_BYTES);
        while !ua.is_char_boundary(end) {
            end -= 1;
        }
        SceneRequester {
            client: client.map(|c| c.to_string()),
            browser: ua[..end].to_owned(),
            at,
        }
    }
}

#[derive(Clone)]
struct Scene {
    status: SceneStatus,
    requester: Option<SceneRequester>,
    notify: Arc<Notify>,
}

/// The scenes waiting for a scan, and the pushes already seen, in one
/// process's memory.
pub struct Scenes {
    scenes: ExpiringMap<String, Scene>,
    seen_pushes: ExpiringMap<String, ()>,
}

impl Default for Scenes {
    fn default() -> Self {
        Scenes {
            scenes: ExpiringMap::new(CAPACITY),
            seen_pushes: ExpiringMap::new(CAPACITY),
        }
    }
}

impl std::fmt::Debug for Scenes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scenes")
    }
}

/// Most scenes and push keys kept; past it the least used go.
const CAPACITY: usize = 100_000;

impl Scenes {
    /// Registers a new scene living until `expires_at` (unix seconds),
    /// asked for by `requester`.
    pub fn create(&self, scene: &str, expires_at: u64, requester: Option<SceneRequester>) {
        let fresh = Scene {
            status: SceneStatus::Pending,
            requester,
            notify: Arc::new(Notify::new()),
        };
        self.scenes.insert(scene.to_owned(), fresh, expires_at);
    }

    /// Moves a live `scene` from `from` to `to` (a scan, a confirmation, a
    /// refusal) and wakes its long polls; `false`, changing nothing, when
    /// it is unknown, expired, or not at `from`.
    pub fn replace(&self, scene: &str, from: &SceneStatus, to: SceneStatus, now: u64) -> bool {
        let changed = self.scenes.update(scene, now, |s| {
            if s.status != *from {
                return None;
            }
            s.status = to;
            Some(s.notify.clone())
        });
        match changed.flatten() {
            Some(notify) => {
                notify.notify_waiters();
                true
            }
            None => false,
        }
    }

    /// Records a scan of a pending `scene` by `openid`; false for an
    /// unknown, expired, already scanned or used scene (the push changes nothing).
    pub fn scanned(&self, scene: &str, openid: &str, now: u64) -> bool {
        self.replace(
            scene,
            &SceneStatus::Pending,
            SceneStatus::Scanned(openid.to_owned()),
            now,
        )
    }

    /// The status of `scene` at `now`.
    pub fn status(&self, scene: &str, now: u64) -> SceneStatus {
        self.scenes
            .get(scene, now)
            .map_or(SceneStatus::Expired, |s| s.status)
    }

    /// Who asked for a live `scene`, when it was recorded.
    pub fn requester(&self, scene: &str, now: u64) -> Option<SceneRequester> {
        self.scenes.get(scene, now).and_then(|s| s.requester)
    }

    /// Claims a scanned scene, once: its openid.
    pub fn claim(&self, scene: &str, now: u64) -> Option<String> {
        self.scenes
            .update(scene, now, |s| {
                match std::mem::replace(&mut s.status, SceneStatus::Expired) {
                    SceneStatus::Scanned(openid) => Some(openid),
                    other => {
                        s.status = other;
                        None
                    }
                }
            })
            .flatten()
    }

    /// Waits at most `limit` for a change of `scene` from the status it has
    /// now (a scan, a confirmation, a refusal). Returns at once for an
    /// unknown or used scene.
    pub async fn wait(&self, scene: &str, limit: Duration) {
        let Some(s) = self.scenes.get(scene, 0) else {
            return;
        };
        if !matches!(s.status, SceneStatus::Pending | SceneStatus::Awaiting(_)) {
            return;
        }
        let notified = s.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Re-check: the change may have landed between the lookup and `enable`.
        if self.status(scene, 0) != s.status {
            return;
        }
        let _ = tokio::time::timeout(limit, notified).await;
    }

    /// Whether a push with this de-duplication key is new (and remembers
    /// it until `until`, unix seconds).
    pub fn first_push(&self, key: &str, now: u64, until: u64) -> bool {
        self.seen_pushes
            .get_or_insert(key, (), now, until)
            .is_none()
    }

    /// Forgets a push's de-duplication key.
    pub fn forget_push(&self, key: &str) {
        self.seen_pushes.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scenes_are_scanned_once_claimed_once_and_expire() {
        let s = Scenes::default();
        s.create("a", 1_000, None);
        assert_eq!(s.status("a", 10), SceneStatus::Pending);
        assert!(!s.scanned("nope", "o1", 10));
        assert!(s.scanned("a", "o1", 10));
        assert!(!s.scanned("a", "o2", 11), "a second scan changes nothing");
        assert_eq!(s.status("a", 12), SceneStatus::Scanned("o1".into()));
        assert_eq!(s.claim("a", 13), Some("o1".into()));
        assert_eq!(s.claim("a", 14), None);
        assert_eq!(s.status("a", 15), SceneStatus::Expired);
        s.create("b", 100, None);
        assert_eq!(s.status("b", 100), SceneStatus::Expired);
        assert!(!s.scanned("b", "o1", 100));
    }

    #[tokio::test]
    async fn waiting_ends_with_the_scan() {
        let s = Arc::new(Scenes::default());
        s.create("w", u64::MAX, None);
        let s2 = s.clone();
        let waiter = tokio::spawn(async move {
            let t = std::time::Instant::now();
            s2.wait("w", Duration::from_secs(10)).await;
            t.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(s.scanned("w", "o", 1));
        assert!(waiter.await.unwrap() < Duration::from_secs(2));
    }

    #[test]
    fn a_flood_of_scenes_stays_bounded_and_keeps_the_newest() {
        let scenes = Scenes::default();
        for i in 0..CAPACITY + 10_000 {
            scenes.create(&i.to_string(), 2_000, None);
        }
        assert!(scenes.scenes.len() <= CAPACITY + CAPACITY / 10);
        scenes.create("newest", 2_000, None);
        assert_eq!(scenes.status("newest", 1_000), SceneStatus::Pending);
    }

    #[tokio::test]
    async fn a_confirmed_scan_goes_through_awaiting_and_a_refusal_ends_it() {
        let s = Arc::new(Scenes::default());
        let asked = SceneRequester::new(None, Some("Mozilla"), 5);
        s.create("c", u64::MAX, Some(asked.clone()));
        let awaiting = SceneStatus::Awaiting("o1".into());
        assert!(s.replace("c", &SceneStatus::Pending, awaiting.clone(), 1));
        assert!(!s.replace(
            "c",
            &SceneStatus::Pending,
            SceneStatus::Awaiting("o2".into()),
            1
        ));
        assert_eq!(s.claim("c", 2), None, "not before the phone confirms");
        assert_eq!(s.requester("c", 2), Some(asked));
        let s2 = s.clone();
        let waiter = tokio::spawn(async move {
            s2.wait("c", Duration::from_secs(10)).await;
            s2.status("c", 3)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(s.replace("c", &awaiting, SceneStatus::Scanned("o1".into()), 3));
        assert_eq!(waiter.await.unwrap(), SceneStatus::Scanned("o1".into()));
        assert_eq!(s.claim("c", 4), Some("o1".into()));

        s.create("r", u64::MAX, None);
        assert!(s.replace("r", &SceneStatus::Pending, awaiting.clone(), 1));
        assert!(s.replace("r", &awaiting, SceneStatus::Refused, 2));
        assert_eq!(s.claim("r", 3), None);
        assert_eq!(s.status("r", 3), SceneStatus::Refused);
        assert!(!s.replace("r", &awaiting, SceneStatus::Scanned("o1".into()), 4));
    }

    #[test]
    fn statuses_round_trip_through_store_values() {
        for status in [
            SceneStatus::Pending,
            SceneStatus::Awaiting("oA".into()),
            SceneStatus::Scanned("oS".into()),
            SceneStatus::Refused,
            SceneStatus::Expired,
        ] {
            assert_eq!(SceneStatus::from_value(Some(&status.value())), status);
        }
        assert_eq!(SceneStatus::from_value(None), SceneStatus::Expired);
        let long = "界".repeat(100);
        let r = SceneRequester::new(Some([127, 0, 0, 1].into()), Some(&long), 9);
        assert!(r.browser.len() <= MAX_REQUESTER_BROWSER_BYTES && long.starts_with(&r.browser));
        assert_eq!(r.client.as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn pushes_are_deduplicated_for_a_while() {
        let s = Scenes::default();
        assert!(s.first_push("k", 0, PUSH_DEDUP_SECS));
        assert!(!s.first_push("k", 10, 10 + PUSH_DEDUP_SECS));
        assert!(s.first_push("k", PUSH_DEDUP_SECS + 1, 2 * PUSH_DEDUP_SECS + 1));
        s.forget_push("k");
        assert!(s.first_push("k", PUSH_DEDUP_SECS + 2, 2 * PUSH_DEDUP_SECS + 2));
    }
}
