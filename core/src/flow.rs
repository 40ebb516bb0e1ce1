//! The login flow state machine (docs/architecture.md). Every host drives this
//! one machine; none re-implements a decision.
//!
//! A request goes in as [`RequestParts`]; [`Gate::decide`] answers without
//! IO with a [`Decision`]:
//!
//! ```text
//! no session ──▶ Reply 302 authorize (+ state cookie)   WeChat browser
//!            ├─▶ Reply 401 JSON {error, login_url}      XHR / API client
//!            └─▶ Reply 401 page "open in WeChat"        other browsers
//! callback ────▶ Reply 400 (bad/missing state)  ·  Reply 403 (declined: no code)
//!            └─▶ Call(login) ──IO: exchange once per code──▶ 302 back + session
//! session ─────▶ Pass(identity)   (a base-scope session on a userinfo path: authorize again)
//! userinfo?refresh=1 | ?check=1, logout ──▶ Call(…) ──IO: tokens, WeChat──▶ Reply
//! ```
//!
//! The IO transitions run in [`Gate::complete`]. Each authorization code is
//! exchanged once: concurrent and later duplicates of a callback (within the
//! code's 300 s) get the same outcome. Tokens stay in the [`TokenStore`];
//! the session cookie holds the identity and a session id only.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cookie::{Cookie, SameSite};
use rand::distr::{Alphanumeric, SampleString};
use url::form_urlencoded;

use crate::api::{self, ApiError, ErrorName, Health, PushAnswer};
use crate::authorize::{authorize_url, qrconnect_url, AuthorizeOptions, Scope};
use crate::config::{Config, DesktopLogin, Policy, WecomScope};
use crate::coordination::key_hash;
use crate::coordination::{
    Coordination, CoordinationError, FileStore, LoginClaim, Logout, MemoryCoordination, RedisStore,
    Turn,
};
use crate::errcode::ErrCode;
use crate::pages::{Branding, CallbackProblem, Lang, Notice, Reply};
use crate::push;
use crate::qr::BasicToken;
use crate::revocation::Revocations;
use crate::seal::Sealer;
use crate::secret::AuthorizationCode;
use crate::session::{
    is_valid_scope, is_valid_wechat_id, seal_session, Identity, Session, VerifiedSessions,
    SESSION_COOKIE,
};
use crate::single_flight::SingleFlight;
use crate::sns::{SnsClient, SnsError, TokenResponse};
use crate::state::{
    is_valid_state, new_state, open_state, safe_return_path, seal_state, state_cookie_name,
    LoginApp, MAX_STATE_COOKIES, STATE_COOKIE_PREFIX, STATE_LIFETIME_SECS,
};
use crate::store::{MemoryTokenStore, StoredTokens, TokenStore, REFRESH_TOKEN_LIFETIME_SECS};

mod confirm;
mod cookies;
mod decide;
mod failure;
mod forward;
mod limits;
mod login;
mod policy;
mod route;
mod scene;
#[cfg(test)]
mod tests;
mod tokens;

pub use cookies::strip_gate_cookies;
use cookies::*;
use decide::*;
use failure::*;
use limits::*;
use login::*;
pub use policy::NamedPolicy;
pub use route::Route;
use scene::SCENE_SID_PREFIX;
pub use scene::{QR_LONG_POLL_SECS, SCENE_COOKIE};
use tokens::*;

/// Largest `POST <prefix>/exchange` body, in bytes.
pub const MAX_EXCHANGE_BODY_BYTES: usize = 4096;
/// Longest authorization code accepted from a callback, in bytes.
pub const MAX_CODE_LEN: usize = 512;
/// How long an exchange's outcome is kept for duplicate callbacks, in seconds
/// (a code lives 300 s).
pub const CODE_OUTCOME_SECS: u64 = 300;
/// An access token this close to expiry (seconds) is refreshed before use.
pub const REFRESH_MARGIN_SECS: u64 = 300;

/// The parts of an HTTP request the gate looks at. Header values that are
/// not valid UTF-8 are passed as `None` (treated as absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestParts<'a> {
    /// Method, e.g. `GET`.
    pub method: &'a str,
    /// Path, without the query, as the client sent it: the gate decides on
    /// its canonical form (`path.rs`) and answers `400` when it has
    /// none.
    pub path: &'a str,
    /// Raw query string, without `?`.
    pub query: Option<&'a str>,
    /// The `Cookie` header (several joined with `; `).
    pub cookie: Option<&'a str>,
    /// The `User-Agent` header.
    pub user_agent: Option<&'a str>,
    /// The `Accept` header.
    pub accept: Option<&'a str>,
    /// The `X-Requested-With` header.
    pub x_requested_with: Option<&'a str>,
    /// The `Accept-Language` header (page language).
    pub accept_language: Option<&'a str>,
    /// The client's address, for `[limits]` (from the connection and
    /// `[gateway] trusted_proxies`: [`crate::forwarded::client_address`]);
    /// `None`: not known, no per-client limit.
    pub client_addr: Option<std::net::IpAddr>,
    /// The `X-Original-URI` header: for the `auth` route (nginx
    /// `auth_request`), the original request's path and query.
    pub original_uri: Option<&'a str>,
    /// The `X-Original-Method` header: for the `auth` route, the original
    /// request's method (default `GET`).
    pub original_method: Option<&'a str>,
    /// The `Origin` header (a CORS preflight has one).
    pub origin: Option<&'a str>,
    /// The `Access-Control-Request-Method` header (a CORS preflight has one).
    pub access_control_request_method: Option<&'a str>,
    /// The policy a host's own routing chose for this request (an nginx
    /// `location`'s `wechat_oauth_policy`), from [`Gate::named_policy`] of
    /// the same gate; `None`: the route its path falls under.
    pub policy: Option<NamedPolicy>,
}

/// What to do with a request.
#[derive(Debug)]
pub enum Decision {
    /// Forward it to the application.
    Pass(Pass),
    /// Answer it with this reply; nothing reaches the application.
    Reply(Reply),
    /// Answer it after IO (WeChat, the token store): run [`Gate::complete`].
    Call(Call),
    /// Read the request's body, at most `max_bytes` (read one more to show
    /// that it is larger), and decide again with it:
    /// [`Gate::decide_with_body`]. The push endpoint and `POST exchange`.
    NeedsBody {
        /// The largest body the route takes, in bytes; a larger one gets `413`.
        max_bytes: usize,
    },
}

/// A request that goes on to the application. Deciding it allocates
/// nothing for a cached session cookie on a canonical path (no idle
/// re-seal due, no other cookie beside the gate's): the identity is shared
/// with the session cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// The verified identity; `None` on a public path without a session.
    /// Its header values are built once per session cookie
    /// ([`Identity::upstream_header_values`]).
    pub identity: Option<std::sync::Arc<Identity>>,
    /// The `Cookie` header the application gets.
    pub upstream_cookie: UpstreamCookie,
    /// A `Set-Cookie` value to add to the application's response (the
    /// session re-sealed to keep an idle timeout from ending it).
    pub set_cookie: Option<String>,
    /// The path the application must get instead of the request's: its
    /// canonical form (`path.rs`), when that differs; `None`: the
    /// request's path is canonical already.
    pub upstream_path: Option<String>,
    /// The index in [`Config::routes`] of the `[[route]]` that let it
    /// pass (its `upstream`); `None`: the default route.
    pub route: Option<usize>,
}

/// The `Cookie` header the application gets: the gate's own cookies
/// (session, scene, state, in any spelling: [`strip_gate_cookies`]) never
/// reach it, every other cookie does, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamCookie {
    /// The request's `Cookie` header(s) as they are: none of the gate's
    /// cookies is in them (or there is none).
    Unchanged,
    /// Remove the header: it held the gate's cookies only.
    Remove,
    /// Replace the header with this value: the other cookies, `; `-joined.
    Rewritten(String),
}

impl UpstreamCookie {
    /// The value the application gets, given the request's joined `Cookie`
    /// header; `None`: no `Cookie` header.
    pub fn value<'a>(&'a self, request_cookie: Option<&'a str>) -> Option<&'a str> {
        match self {
            UpstreamCookie::Unchanged => request_cookie,
            UpstreamCookie::Remove => None,
            UpstreamCookie::Rewritten(value) => Some(value),
        }
    }
}

/// How an answer is shaped: a page or redirect for a browser, JSON for a
/// front end's script (`POST exchange`, `qr/new`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AnswerAs {
    Page,
    Json,
}

/// What `userinfo` asks of WeChat: a fresh profile, or whether the
/// session's token still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProfileCall {
    Refresh,
    Check,
}

/// The phone's answer to a scan (`scene_confirm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PhoneAnswer {
    Confirm,
    Refuse,
}

/// A login link: absolute (for JSON answers a script follows elsewhere) or
/// a path on this site (for pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkForm {
    Absolute,
    Path,
}

/// Work that needs IO before the answer; run it with [`Gate::complete`].
/// Its `Debug` shows no code or token.
#[derive(Debug)]
pub struct Call {
    kind: CallKind,
    lang: Lang,
}

#[derive(Debug)]
enum CallKind {
    Login(PendingLogin),
    Profile {
        session: Session,
        call: ProfileCall,
    },
    Logout {
        sid: String,
        /// The session cookie's end, unix seconds.
        until: u64,
        to: String,
    },
    QrNew {
        return_to: String,
        requester: Option<crate::qr::SceneRequester>,
    },
    /// `jssdk-config`: sign `url` (checked: a page of the site) with the
    /// `jsapi_ticket`.
    JssdkConfig {
        url: String,
    },
    /// A signed push from WeChat with its body.
    Push {
        query: Option<String>,
        body: Vec<u8>,
    },
    /// `ready`: the store and the upstream answer.
    Ready,
    QrConfirm {
        scene: String,
        openid: String,
        /// The confirmation link's token, for the page's forms.
        token: crate::secret::Secret,
        /// `None`: show the page.
        answer: Option<PhoneAnswer>,
    },
    QrStatus {
        scene: String,
        return_to: String,
        wait: Duration,
    },
    /// A `followers` route for a user whose follow state this instance
    /// does not know: ask the store, else WeChat (`cgi-bin/user/info`).
    FollowCheck {
        identity: Arc<Identity>,
        /// Where the browser goes again (`307`) once the user follows.
        again: String,
        /// The request wants JSON (a script).
        json: bool,
        /// For the `auth` route: `202` with the identity or `403`.
        auth: bool,
    },
}

/// The gate: configuration, cookie keys, the WeChat API client, the token
/// store and the in-flight exchanges.
pub struct Gate {
    config: Config,
    sealer: Sealer,
    /// The site's look for the gate's pages.
    branding: Branding,
    /// Session cookies this gate's keys already opened.
    verified: VerifiedSessions,
    /// Forwarding headers of untrusted peers, by (peer, `Host`).
    forwarding: crate::forwarded::ForwardingCache,
    sns: SnsClient,
    /// The Open Platform website app's client (`[wechat.open]`), for qrconnect.
    open_sns: Option<SnsClient>,
    /// The WeCom app's client (`[wecom]`), with its corp token.
    wecom: Option<crate::wecom::WecomClient>,
    basic_token: BasicToken,
    // The state below is kept across a reload ([`Gate::reload`]).
    store: Arc<dyn TokenStore>,
    /// What the instances agree on: memory, the state file or Redis.
    coordination: Arc<dyn Coordination>,
    logins: Arc<SingleFlight<LoginResult>>,
    refreshes: Arc<SingleFlight<Result<StoredTokens, CallError>>>,
    revocations: Arc<Revocations>,
    /// Whether users follow the Official Account, by openid, until when
    /// (unix seconds): what `followers` routes decide on without IO.
    followers: Arc<crate::expiring::ExpiringMap<String, bool>>,
    /// Whether a `followers` policy can decide a request here (a route
    /// has it, or a host named it): only then is a scanner's follow state
    /// worth a write to the shared store.
    followers_in_use: std::sync::atomic::AtomicBool,
    /// `[wechat] push_forward`: the application's push handler.
    push_forwarder: Option<Arc<forward::PushForwarder>>,
    /// `[limits]`: logins per client address; `None` when off.
    login_limiter: Option<Arc<LoginLimiter>>,
    /// The longest a `qr/status` long poll waits ([`Gate::with_long_poll_limit`]).
    long_poll_limit: Duration,
    /// The highest logout time (ms) read from the shared store.
    revocations_seen_ms: std::sync::atomic::AtomicU64,
    /// Set when the host stops ([`Gate::begin_shutdown`]).
    stopping: Arc<Stopping>,
}

/// The host is stopping: long polls end now, with "poll again".
#[derive(Debug, Default)]
struct Stopping {
    set: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Stopping {
    fn is_set(&self) -> bool {
        self.set.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Returns once the host stops.
    async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_set() {
            return;
        }
        notified.await;
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why a [`Gate`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// A cookie secret is too short (see [`crate::config::MIN_COOKIE_SECRET_BYTES`]).
    #[error("config [gateway] cookie_secret: must be at least 32 bytes")]
    CookieSecret,
    /// The HTTP client for WeChat could not be set up.
    #[error("cannot set up the WeChat API client: {0}")]
    Client(#[from] SnsError),
    /// `[store]` can't be used.
    #[error("config [store]: {0}")]
    Store(#[from] CoordinationError),
    /// `[gateway] templates_dir` has no readable page template.
    #[error("config [gateway] templates_dir: {0}")]
    Templates(String),
}

/// Why a call to WeChat on a user's behalf (a login's exchange, a token
/// refresh, a QR code) failed: WeChat's answer, or the instances'
/// coordination (the store out of reach, another instance stalled).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// WeChat answered with an errcode, unreadably, or not at all.
    #[error(transparent)]
    WeChat(#[from] SnsError),
    /// The store the instances share could not be used.
    #[error("login store: {0}")]
    Coordination(#[from] CoordinationError),
}

impl CallError {
    /// WeChat's errcode, when it sent one.
    pub fn errcode(&self) -> Option<ErrCode> {
        match self {
            CallError::WeChat(e) => e.errcode(),
            CallError::Coordination(_) => None,
        }
    }
}

/// Now, in unix seconds.
pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn new_sid() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

impl Gate {
    /// A gate with the store `[store]` names: this process's memory, or
    /// Redis shared with other instances (tokens, code exchanges, states).
    ///
    /// Errors: [`GateError`] when a cookie key, the HTTP client or the store
    /// can't be made.
    pub fn new(config: Config) -> Result<Gate, GateError> {
        // The state file's logouts are read before the first request; Redis's
        // come with the first sync.
        if let Some(path) = &config.store.file {
            let file = Arc::new(FileStore::open(path)?);
            let restored = file.logouts_after_now(revocation_horizon_ms(&config, now_unix()))?;
            let gate = Self::coordinated(config, file.clone(), file)?;
            gate.revoke_all(restored, now_unix());
            return Ok(gate);
        }
        match RedisStore::from_config(&config.store)? {
            Some(redis) => {
                let redis = Arc::new(redis);
                Self::coordinated(config, redis.clone(), redis)
            }
            None => Self::with_store(config, Arc::new(MemoryTokenStore::default())),
        }
    }

    /// The gates of the sites of one process (`[[site]]`, in order): sites
    /// on one state file share it, each under its own `[store] key_prefix`
    /// ([`crate::coordination::Prefixed`]); Redis and memory stores as
    /// [`Gate::new`] (Redis keys start with the site's prefix).
    ///
    /// Errors: as [`Gate::new`].
    pub fn for_sites(configs: Vec<Config>) -> Result<Vec<Gate>, GateError> {
        let mut files: Vec<Arc<FileStore>> = Vec::new();
        let mut gates = Vec::with_capacity(configs.len());
        for config in configs {
            let Some(path) = config.store.file.clone() else {
                gates.push(Gate::new(config)?);
                continue;
            };
            let file = match files.iter().find(|f| f.path() == path) {
                Some(file) => file.clone(),
                None => {
                    let file = Arc::new(FileStore::open(&path)?);
                    files.push(file.clone());
                    file
                }
            };
            let site = Arc::new(crate::coordination::Prefixed::new(
                file,
                &config.store.key_prefix,
            ));
            let restored = site.logouts_after_now(revocation_horizon_ms(&config, now_unix()))?;
            let gate = Self::coordinated(config, site.clone(), site)?;
            gate.revoke_all(restored, now_unix());
            gates.push(gate);
        }
        Ok(gates)
    }

    /// A gate keeping tokens in `store`, coordinated in this process's memory.
    ///
    /// Errors: as [`Gate::new`].
    pub fn with_store(config: Config, store: Arc<dyn TokenStore>) -> Result<Gate, GateError> {
        Self::coordinated(config, store, Arc::new(MemoryCoordination::default()))
    }

    /// A gate keeping tokens in `store` and agreeing with other instances
    /// through `coordination`.
    fn coordinated(
        config: Config,
        store: Arc<dyn TokenStore>,
        coordination: Arc<dyn Coordination>,
    ) -> Result<Gate, GateError> {
        let sealer =
            Sealer::with_rotation(&config.gateway.cookie_secrets).ok_or(GateError::CookieSecret)?;
        let sns = SnsClient::new(&config.wechat)?;
        let open_sns = match &config.wechat.open {
            Some(open) => Some(SnsClient::for_app(
                &config.wechat,
                &open.appid,
                &open.secret,
            )?),
            None => None,
        };
        let wecom = config
            .wecom
            .as_ref()
            .map(|w| crate::wecom::WecomClient::new(w, &sns, coordination.clone()));
        let login_limiter = LoginLimiter::new(&config.limits).map(Arc::new);
        let g = &config.gateway;
        let branding = Branding::new(
            g.site_name.clone(),
            g.logo_url.clone(),
            g.templates_dir.as_deref(),
        )
        .map_err(GateError::Templates)?;
        let forwarding = crate::forwarded::ForwardingCache::new(if config.gateway.tls.is_some() {
            "https"
        } else {
            "http"
        });
        let token_source = config.wechat.token_source.clone();
        let push_forwarder = match &config.wechat.push_forward {
            None => None,
            Some(url) => Some(Arc::new(
                forward::PushForwarder::new(url.clone(), config.wechat.push_forward_timeout)
                    .ok_or_else(|| {
                        GateError::Client(SnsError::Transport(
                            "the push_forward client can't be built".into(),
                        ))
                    })?,
            )),
        };
        let followers_in_use = config.routes.iter().any(|r| r.policy == Policy::Followers);
        Ok(Gate {
            config,
            sealer,
            branding,
            verified: VerifiedSessions::default(),
            forwarding,
            basic_token: BasicToken::new(sns.clone(), token_source, coordination.clone()),
            sns,
            open_sns,
            wecom,
            store,
            coordination,
            logins: Arc::new(SingleFlight::new(
                Duration::from_secs(CODE_OUTCOME_SECS),
                100_000,
            )),
            refreshes: Arc::new(SingleFlight::new(Duration::from_secs(5), 100_000)),
            revocations: Arc::default(),
            followers: Arc::new(crate::expiring::ExpiringMap::new(
                policy::MAX_KNOWN_FOLLOWERS,
            )),
            followers_in_use: followers_in_use.into(),
            login_limiter,
            push_forwarder,
            long_poll_limit: Duration::from_secs(QR_LONG_POLL_SECS),
            revocations_seen_ms: std::sync::atomic::AtomicU64::new(0),
            stopping: Arc::default(),
        })
    }

    /// The host is stopping (SIGTERM): every `qr/status` long poll waiting
    /// now, and every later one, answers at once with the scene's status
    /// (`pending` while unscanned), so the page polls again, reaching an
    /// instance that stays. Kept across [`Gate::reload`].
    pub fn begin_shutdown(&self) {
        self.stopping
            .set
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.stopping.notify.notify_waiters();
    }

    /// The same gate with `qr/status` long polls cut at `limit` (default
    /// [`QR_LONG_POLL_SECS`]): a host that serves one request at a time
    /// (the C, PHP and Java examples) keeps it short, so a push is not held
    /// up behind a waiting poll; the QR page polls again at once.
    pub fn with_long_poll_limit(mut self, limit: Duration) -> Gate {
        self.long_poll_limit = limit;
        self
    }

    /// The configuration this gate runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The forwarding headers for a request from `peer` with `Host` header
    /// `host`, when `peer` is not one of `[gateway] trusted_proxies`: built
    /// once per (peer, `Host`) and shared ([`crate::forwarded::ForwardingCache`]).
    /// `None` for a trusted proxy, whose own forwarding headers count: then
    /// call [`crate::forwarded::upstream_headers`] with them.
    pub fn untrusted_forwarding(
        &self,
        peer: std::net::IpAddr,
        host: Option<&str>,
    ) -> Option<crate::forwarded::ForwardingValues> {
        let trusted = &self.config.gateway.trusted_proxies;
        (!crate::forwarded::is_trusted(peer, trusted))
            .then(|| self.forwarding.untrusted(peer, host))
    }

    /// A gate for a changed configuration (e.g. new cookie keys) that keeps
    /// this one's state: sessions' tokens (when `[store]` is unchanged),
    /// logouts, codes in flight and their outcomes, states used, QR scenes.
    /// Sessions sealed under a key the new configuration still lists stay
    /// valid.
    ///
    /// Errors: as [`Gate::new`].
    pub fn reload(&self, config: Config) -> Result<Gate, GateError> {
        let same_store = config.store.url.as_ref().map(|s| s.expose())
            == self.config.store.url.as_ref().map(|s| s.expose())
            && config
                .store
                .cluster_nodes
                .iter()
                .map(|s| s.expose())
                .eq(self.config.store.cluster_nodes.iter().map(|s| s.expose()))
            && config.store.key_prefix == self.config.store.key_prefix
            && config.store.file == self.config.store.file;
        let mut gate = if same_store {
            Self::coordinated(config, self.store.clone(), self.coordination.clone())?
        } else {
            Gate::new(config)?
        };
        gate.long_poll_limit = self.long_poll_limit;
        gate.stopping = self.stopping.clone();
        gate.logins = self.logins.clone();
        gate.refreshes = self.refreshes.clone();
        gate.revocations = self.revocations.clone();
        gate.followers = self.followers.clone();
        if self.followers_in_use() {
            gate.followers_in_use = true.into();
        }
        if gate.config.limits == self.config.limits {
            gate.login_limiter = self.login_limiter.clone();
        }
        gate.revocations_seen_ms = std::sync::atomic::AtomicU64::new(
            self.revocations_seen_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        Ok(gate)
    }

    /// Whether the shared store answers (`PING`); `Ok` without one.
    ///
    /// Errors: [`CoordinationError`] when the store can't be reached.
    /// `ready`: `200 {"ready": true, "config": "ok", "store": "ok",
    /// "upstream": "ok"}` when the shared store answers and `[gateway]
    /// upstream` (if set) accepts a TCP connection, 1 s each; else `503`
    /// with `"unreachable"` for what is not ready. (`healthz`: alive.)
    async fn ready(&self) -> Reply {
        let limit = Duration::from_secs(1);
        let store = matches!(
            tokio::time::timeout(limit, self.store_ready()).await,
            Ok(Ok(()))
        );
        let upstream = match &self.config.gateway.upstream {
            Some(addr) => matches!(
                tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr.as_str())).await,
                Ok(Ok(_))
            ),
            None => true,
        };
        let health = |ok: bool| if ok { Health::Ok } else { Health::Unreachable };
        api::ready(health(store), health(upstream))
    }

    /// Whether the store answers (always, in memory).
    ///
    /// Errors: [`CoordinationError`] when it does not.
    pub async fn store_ready(&self) -> Result<(), CoordinationError> {
        self.coordination.ping().await
    }

    /// Whether this gate shares its state with other instances (`[store]
    /// url` names Redis); then the host runs [`Gate::sync_revocations`]
    /// about every 500 ms.
    pub fn is_shared(&self) -> bool {
        self.coordination.is_shared()
    }

    /// Reads the logouts other instances recorded since the last call
    /// (every instance refuses a logged-out session within one period of
    /// this), and forgets those past every cookie's end. No-op without a
    /// shared store. Never called on the request path.
    ///
    /// Errors: [`CoordinationError`] while Redis is unreachable (the
    /// outage is logged once by the store).
    pub async fn sync_revocations(&self) -> Result<(), CoordinationError> {
        use std::sync::atomic::Ordering;
        if !self.is_shared() {
            return Ok(());
        }
        let now = now_unix();
        let seen = self.revocations_seen_ms.load(Ordering::Relaxed);
        let since = if seen == 0 {
            // On start: every logout of the longest session lifetime back.
            revocation_horizon_ms(&self.config, now)
        } else {
            seen
        };
        // A second of overlap: a logout stamped with the same millisecond as
        // the last one read may have landed after that read.
        let logouts = self
            .coordination
            .logouts_after(since.saturating_sub(1000))
            .await?;
        let highest = self.revoke_all(logouts, now).max(since);
        self.revocations_seen_ms.store(highest, Ordering::Relaxed);
        self.coordination
            .forget_logouts_before(revocation_horizon_ms(&self.config, now))
            .await
    }

    /// Refuses the sessions of other instances' logouts; the latest
    /// logout time seen (unix ms).
    fn revoke_all(&self, logouts: Vec<Logout>, now: u64) -> u64 {
        let mut highest = 0;
        for logout in logouts {
            self.revocations.revoke(&logout.sid, logout.until, now);
            highest = highest.max(logout.at_ms);
        }
        highest
    }

    /// Performs a [`Call`]'s IO (WeChat, the token store) and answers.
    pub async fn complete(&self, call: Call) -> Reply {
        let reply = self.complete_uncounted(call).await;
        crate::metrics::count_reply(reply.status);
        reply
    }

    async fn complete_uncounted(&self, call: Call) -> Reply {
        let lang = call.lang;
        match call.kind {
            CallKind::Login(pending) => self.complete_login(pending, lang).await,
            CallKind::Profile { session, call } => self.complete_profile(session, call).await,
            CallKind::Logout { sid, until, to } => {
                if let Err(e) = self.store.remove(&sid).await {
                    tracing::warn!(error = %e, "logout: could not delete the session's tokens");
                }
                let at_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let logout = Logout { sid, until, at_ms };
                if let Err(e) = self.coordination.publish_logout(&logout).await {
                    tracing::warn!(error = %e, "logout: the other instances were not told");
                }
                self.logged_out(to)
            }
            CallKind::QrNew {
                return_to,
                requester,
            } => self.qr_new(return_to, requester).await,
            CallKind::Push { query, body } => self.handle_push(query.as_deref(), &body).await,
            CallKind::Ready => self.ready().await,
            CallKind::JssdkConfig { url } => self.jssdk_config(&url).await,
            CallKind::QrConfirm {
                scene,
                openid,
                token,
                answer,
            } => {
                self.qr_confirm(&scene, &openid, token.expose(), answer, lang)
                    .await
            }
            CallKind::QrStatus {
                scene,
                return_to,
                wait,
            } => self.qr_status(&scene, &return_to, wait).await,
            CallKind::FollowCheck {
                identity,
                again,
                json,
                auth,
            } => self.follow_check(&identity, &again, json, auth, lang).await,
        }
    }
}

/// Logouts older than this (unix ms) concern no live cookie: one session
/// lifetime back from `now` (unix seconds).
fn revocation_horizon_ms(config: &Config, now: u64) -> u64 {
    now.saturating_sub(config.gateway.session_lifetime.as_secs()) * 1000
}
