//! Desktop login by the Official Account's scene QR code (docs/protocol.md §3):
//! the basic-support token, the scenes waiting for a scan, and the
//! de-duplication of WeChat's push retries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use serde::{Deserialize, Serialize};

use crate::errcode::ErrCode;
use crate::secret::AccessToken;
use crate::shared::SharedStore;
use crate::sns::{QrTicket, SnsClient, SnsError};
use crate::store::StoreError;

/// A basic-support token this close to expiry (seconds) is refreshed first.
pub const BASIC_TOKEN_MARGIN_SECS: u64 = 300;
/// Lifetime asked for a login QR code, in seconds.
pub const SCENE_LIFETIME_SECS: u64 = 300;
/// How long a push's de-duplication key is kept, in seconds (WeChat retries within ~15 s).
pub const PUSH_DEDUP_SECS: u64 = 60;

/// The basic-support token for `cgi-bin` APIs: one cached token per
/// process, refreshed before expiry by one caller at a time (lock, then
/// re-check), so concurrent callers never fetch it twice.
#[derive(Debug)]
pub struct BasicToken {
    sns: SnsClient,
    cached: Mutex<Option<(AccessToken, u64)>>,
    refresh: tokio::sync::Mutex<()>,
    /// Redis, when several instances share one token.
    shared: Option<Arc<dyn SharedStore>>,
}

/// Redis keys of the shared basic-support token and its refresh lock.
const SHARED_TOKEN_KEY: &str = "basic-token";
const SHARED_TOKEN_LOCK: &str = "basic-token-lock";
/// The longest one instance's refresh may hold the lock, and the others wait.
const SHARED_REFRESH_SECS: u64 = 15;

#[derive(Serialize, Deserialize)]
struct SharedToken {
    t: String,
    exp: u64,
}

impl BasicToken {
    /// A manager fetching with `sns` (the Official Account's credentials).
    pub fn new(sns: SnsClient) -> Self {
        BasicToken {
            sns,
            cached: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            shared: None,
        }
    }

    /// The same, sharing the token with every instance through `shared`:
    /// one `cgi-bin/token` call per refresh window across all of them.
    pub fn shared(sns: SnsClient, shared: Arc<dyn SharedStore>) -> Self {
        BasicToken {
            shared: Some(shared),
            ..BasicToken::new(sns)
        }
    }

    fn fresh(&self, now: u64) -> Option<AccessToken> {
        let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        cached
            .as_ref()
            .filter(|(_, expires_at)| *expires_at > now + BASIC_TOKEN_MARGIN_SECS)
            .map(|(t, _)| t.clone())
    }

    /// A valid token at `now` (unix seconds), fetching one if needed.
    ///
    /// Errors: the `cgi-bin/token` failure.
    pub async fn get(&self, now: u64) -> Result<AccessToken, SnsError> {
        if let Some(t) = self.fresh(now) {
            return Ok(t);
        }
        let _only_one = self.refresh.lock().await;
        if let Some(t) = self.fresh(now) {
            return Ok(t);
        }
        let (token, expires_at) = match &self.shared {
            Some(shared) => self.shared_fetch(shared, now).await?,
            None => {
                let (token, expires_in) = self.sns.basic_token().await?;
                tracing::info!(expires_in, "fetched a basic-support access token");
                (token, now + expires_in)
            }
        };
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some((token.clone(), expires_at));
        Ok(token)
    }

    /// The shared token, fetched by whichever instance takes the lock
    /// (after checking again that no other did meanwhile); the others wait
    /// for it.
    async fn shared_fetch(
        &self,
        shared: &Arc<dyn SharedStore>,
        now: u64,
    ) -> Result<(AccessToken, u64), SnsError> {
        let store = |e: StoreError| SnsError::Store(e.0);
        let fresh = |value: Option<String>| {
            value
                .and_then(|v| serde_json::from_str::<SharedToken>(&v).ok())
                .filter(|t| t.exp > now + BASIC_TOKEN_MARGIN_SECS)
                .map(|t| (AccessToken::new(t.t), t.exp))
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(SHARED_REFRESH_SECS);
        loop {
            if let Some(found) = fresh(shared.value(SHARED_TOKEN_KEY).await.map_err(store)?) {
                return Ok(found);
            }
            let lock_ttl = Duration::from_secs(SHARED_REFRESH_SECS);
            if shared
                .set_if_absent(SHARED_TOKEN_LOCK, "1", lock_ttl)
                .await
                .map_err(store)?
            {
                let result = match fresh(shared.value(SHARED_TOKEN_KEY).await.map_err(store)?) {
                    Some(found) => Ok(found),
                    None => self.sns.basic_token().await.map(|(token, expires_in)| {
                        tracing::info!(
                            expires_in,
                            "fetched a basic-support access token for every instance"
                        );
                        (token, now + expires_in)
                    }),
                };
                if let Ok((token, expires_at)) = &result {
                    let value = serde_json::to_string(&SharedToken {
                        t: token.expose().to_owned(),
                        exp: *expires_at,
                    })
                    .expect("serializes");
                    let ttl = Duration::from_secs(expires_at.saturating_sub(now).max(1));
                    shared
                        .set(SHARED_TOKEN_KEY, &value, ttl)
                        .await
                        .map_err(store)?;
                }
                let _ = shared.delete(SHARED_TOKEN_LOCK).await;
                return result;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SnsError::Store(
                    "another instance's basic token fetch did not finish".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Forgets `token` if it is the cached one (WeChat said it is no longer valid).
    pub async fn invalidate(&self, token: &AccessToken) {
        {
            let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
            if cached.as_ref().is_some_and(|(t, _)| t == token) {
                *cached = None;
            }
        }
        if let Some(shared) = &self.shared {
            let held = shared.value(SHARED_TOKEN_KEY).await.ok().flatten();
            if held
                .and_then(|v| serde_json::from_str::<SharedToken>(&v).ok())
                .is_some_and(|t| t.t == token.expose())
            {
                let _ = shared.delete(SHARED_TOKEN_KEY).await;
            }
        }
    }

    /// Creates a scene QR code; a 40001/42001 answer refreshes the token and retries once.
    ///
    /// Errors: [`SnsError`].
    pub async fn create_qr_scene(&self, scene: &str, now: u64) -> Result<QrTicket, SnsError> {
        let token = self.get(now).await?;
        match self
            .sns
            .create_qr_scene(&token, scene, SCENE_LIFETIME_SECS)
            .await
        {
            Err(e)
                if matches!(
                    e.errcode(),
                    Some(ErrCode::InvalidCredential | ErrCode::AccessTokenExpired)
                ) =>
            {
                self.invalidate(&token).await;
                let token = self.get(now).await?;
                self.sns
                    .create_qr_scene(&token, scene, SCENE_LIFETIME_SECS)
                    .await
            }
            other => other,
        }
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
            Some(crate::shared::SCENE_PENDING) => SceneStatus::Pending,
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
            SceneStatus::Pending => crate::shared::SCENE_PENDING.to_owned(),
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
    /// Its `User-Agent`, at most [`MAX_REQUESTER_BROWSER_BYTES`] bytes.
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

struct Scene {
    expires_at: u64,
    status: SceneStatus,
    requester: Option<SceneRequester>,
    notify: Arc<Notify>,
}

/// The scenes waiting for a scan, and the pushes already seen.
#[derive(Default)]
pub struct Scenes {
    scenes: Mutex<HashMap<String, Scene>>,
    seen_pushes: Mutex<HashMap<String, u64>>,
    inserts: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Scenes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scenes")
    }
}

/// Most scenes and push keys kept; past it the expired ones are dropped first.
const CAPACITY: usize = 100_000;

impl Scenes {
    /// Every [`crate::single_flight::SWEEP_EVERY`] insertions, expired
    /// entries are swept, so memory follows the recent rate.
    fn sweep_due(&self) -> bool {
        let n = self
            .inserts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        n % crate::single_flight::SWEEP_EVERY == crate::single_flight::SWEEP_EVERY - 1
    }

    /// Registers a new scene living until `expires_at` (unix seconds),
    /// asked for by `requester`; `false` (nothing stored) when the table
    /// is full of live scenes.
    pub fn create(
        &self,
        scene: &str,
        expires_at: u64,
        now: u64,
        requester: Option<SceneRequester>,
    ) -> bool {
        let mut scenes = self.scenes.lock().unwrap_or_else(|e| e.into_inner());
        if self.sweep_due() || scenes.len() >= CAPACITY {
            scenes.retain(|_, s| s.expires_at > now);
        }
        if scenes.len() < CAPACITY {
            scenes.insert(
                scene.to_owned(),
                Scene {
                    expires_at,
                    status: SceneStatus::Pending,
                    requester,
                    notify: Arc::new(Notify::new()),
                },
            );
            return true;
        }
        false
    }

    /// Moves a live `scene` from `from` to `to` (a scan, a confirmation, a
    /// refusal) and wakes its long polls; `false`, changing nothing, when
    /// it is unknown, expired, or not at `from`.
    pub fn replace(&self, scene: &str, from: &SceneStatus, to: SceneStatus, now: u64) -> bool {
        let mut scenes = self.scenes.lock().unwrap_or_else(|e| e.into_inner());
        match scenes.get_mut(scene) {
            Some(s) if s.expires_at > now && s.status == *from => {
                s.status = to;
                s.notify.notify_waiters();
                true
            }
            _ => false,
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
        let scenes = self.scenes.lock().unwrap_or_else(|e| e.into_inner());
        match scenes.get(scene) {
            Some(s) if s.expires_at > now => s.status.clone(),
            _ => SceneStatus::Expired,
        }
    }

    /// Who asked for a live `scene`, when it was recorded.
    pub fn requester(&self, scene: &str, now: u64) -> Option<SceneRequester> {
        let scenes = self.scenes.lock().unwrap_or_else(|e| e.into_inner());
        scenes
            .get(scene)
            .filter(|s| s.expires_at > now)
            .and_then(|s| s.requester.clone())
    }

    /// Claims a scanned scene, once: its openid.
    pub fn claim(&self, scene: &str, now: u64) -> Option<String> {
        let mut scenes = self.scenes.lock().unwrap_or_else(|e| e.into_inner());
        let s = scenes.get_mut(scene).filter(|s| s.expires_at > now)?;
        match std::mem::replace(&mut s.status, SceneStatus::Expired) {
            SceneStatus::Scanned(openid) => Some(openid),
            other => {
                s.status = other;
                None
            }
        }
    }

    /// Waits at most `limit` for a change of `scene` from the status it has
    /// now (a scan, a confirmation, a refusal). Returns at once for an
    /// unknown or used scene.
    pub async fn wait(&self, scene: &str, limit: Duration) {
        let (notify, seen) = {
            let scenes = self.scenes.lock().unwrap_or_else(|e| e.into_inner());
            match scenes.get(scene) {
                Some(s) if matches!(s.status, SceneStatus::Pending | SceneStatus::Awaiting(_)) => {
                    (s.notify.clone(), s.status.clone())
                }
                _ => return,
            }
        };
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Re-check: the change may have landed between the lookup and `enable`.
        if self.status(scene, 0) != seen {
            return;
        }
        let _ = tokio::time::timeout(limit, notified).await;
    }

    /// Whether a push with this de-duplication key is new (and remembers it).
    pub fn first_push(&self, key: &str, now: u64) -> bool {
        let mut seen = self.seen_pushes.lock().unwrap_or_else(|e| e.into_inner());
        if self.sweep_due() || seen.len() >= CAPACITY {
            seen.retain(|_, until| *until > now);
        }
        match seen.get(key) {
            Some(until) if *until > now => false,
            _ => {
                seen.insert(key.to_owned(), now + PUSH_DEDUP_SECS);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scenes_are_scanned_once_claimed_once_and_expire() {
        let s = Scenes::default();
        s.create("a", 1_000, 0, None);
        assert_eq!(s.status("a", 10), SceneStatus::Pending);
        assert!(!s.scanned("nope", "o1", 10));
        assert!(s.scanned("a", "o1", 10));
        assert!(!s.scanned("a", "o2", 11), "a second scan changes nothing");
        assert_eq!(s.status("a", 12), SceneStatus::Scanned("o1".into()));
        assert_eq!(s.claim("a", 13), Some("o1".into()));
        assert_eq!(s.claim("a", 14), None);
        assert_eq!(s.status("a", 15), SceneStatus::Expired);
        s.create("b", 100, 0, None);
        assert_eq!(s.status("b", 100), SceneStatus::Expired);
        assert!(!s.scanned("b", "o1", 100));
    }

    #[tokio::test]
    async fn waiting_ends_with_the_scan() {
        let s = Arc::new(Scenes::default());
        s.create("w", u64::MAX, 0, None);
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
    fn a_full_scene_table_stores_nothing_and_says_so() {
        let scenes = Scenes::default();
        for i in 0..CAPACITY {
            assert!(scenes.create(&i.to_string(), 2_000, 1_000, None));
        }
        assert!(!scenes.create("one-too-many", 2_000, 1_000, None));
        assert!(matches!(
            scenes.status("one-too-many", 1_000),
            SceneStatus::Expired
        ));
        assert!(
            scenes.create("after-they-expired", 3_000, 2_000, None),
            "expired scenes make room"
        );
    }

    #[tokio::test]
    async fn a_confirmed_scan_goes_through_awaiting_and_a_refusal_ends_it() {
        let s = Arc::new(Scenes::default());
        let asked = SceneRequester::new(None, Some("Mozilla"), 5);
        s.create("c", u64::MAX, 0, Some(asked.clone()));
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

        s.create("r", u64::MAX, 0, None);
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
        assert!(s.first_push("k", 0));
        assert!(!s.first_push("k", 10));
        assert!(s.first_push("k", PUSH_DEDUP_SECS + 1));
    }
}
