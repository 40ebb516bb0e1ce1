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

use crate::authorize::{authorize_url, qrconnect_url, Scope};
use crate::config::{Config, DesktopLogin};
use crate::errcode::ErrCode;
use crate::pages::{page, Lang, Reply, Text};
use crate::push;
use crate::qr::{BasicToken, Scenes};
use crate::revocation::Revocations;
use crate::seal::Sealer;
use crate::secret::AuthorizationCode;
use crate::session::{
    is_valid_scope, is_valid_wechat_id, seal_session, Identity, Session, VerifiedSessions,
    SESSION_COOKIE,
};
use crate::shared::{key_hash, RedisStore, SharedStore};
use crate::single_flight::SingleFlight;
use crate::sns::{SnsClient, SnsError, TokenResponse};
use crate::state::{
    is_valid_state, new_state, open_state, safe_return_path, seal_state, state_cookie_name,
    UsedStates, MAX_STATE_COOKIES, STATE_COOKIE_PREFIX, STATE_LIFETIME_SECS,
};
use crate::store::{MemoryTokenStore, StoredTokens, TokenStore, REFRESH_TOKEN_LIFETIME_SECS};

mod route;
mod scene;
pub use route::Route;
use scene::SCENE_SID_PREFIX;
pub use scene::{QR_LONG_POLL_SECS, SCENE_COOKIE};

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
    /// its canonical form ([`crate::path`]) and answers `400` when it has
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

/// A request that goes on to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// The verified identity; `None` on a public path without a session.
    pub identity: Option<Identity>,
    /// The `Cookie` header the application gets: the request's, without the
    /// gate's own cookies; `None` means remove the header.
    pub upstream_cookie: Option<String>,
    /// A `Set-Cookie` value to add to the application's response (the
    /// session re-sealed to keep an idle timeout from ending it).
    pub set_cookie: Option<String>,
    /// The path the application must get instead of the request's: its
    /// canonical form ([`crate::path`]), when that differs; `None`: the
    /// request's path is canonical already.
    pub upstream_path: Option<String>,
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
        check: bool,
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
        /// `None`: show the page; `Some(true)`: confirm; `Some(false)`: refuse.
        answer: Option<bool>,
    },
    QrStatus {
        scene: String,
        return_to: String,
        wait: Duration,
    },
}

#[derive(Debug)]
struct PendingLogin {
    code: AuthorizationCode,
    return_to: String,
    state_cookie: String,
    /// Exchange with the Open Platform website app (a qrconnect login).
    open_app: bool,
    /// Answer in JSON (`POST <prefix>/exchange`, a front end's own
    /// redirect_uri) instead of redirecting.
    json: bool,
}

/// What a code exchange produced; shared by every duplicate of its callback.
#[derive(Debug)]
enum LoginOutcome {
    /// A user, packed: kept for the code's 300 s, once per login.
    User(PackedLogin),
    /// A snapshot-page virtual user, refused by configuration.
    SnapshotRefused,
}

/// A completed login: the identity, the session id its tokens are under,
/// when, and where the user goes back to.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct LoginRecord {
    identity: Identity,
    sid: String,
    issued_at: u64,
    return_to: String,
}

/// A [`LoginRecord`] as one JSON allocation instead of eight strings: the
/// duplicate-callback cache holds one per login for 300 s. `Debug` shows
/// nothing of it (it holds the session id).
struct PackedLogin(Box<str>);

impl std::fmt::Debug for PackedLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PackedLogin(..)")
    }
}

impl PackedLogin {
    fn pack(record: &LoginRecord) -> PackedLogin {
        PackedLogin(
            serde_json::to_string(record)
                .expect("a login record serializes")
                .into_boxed_str(),
        )
    }

    fn unpack(&self) -> LoginRecord {
        serde_json::from_str(&self.0).expect("a record this process packed")
    }
}

type LoginResult = Arc<Result<LoginOutcome, SnsError>>;

/// The gate: configuration, cookie keys, the WeChat API client, the token
/// store and the in-flight exchanges.
pub struct Gate {
    config: Config,
    sealer: Sealer,
    /// Session cookies this gate's keys already opened.
    verified: VerifiedSessions,
    sns: SnsClient,
    /// The Open Platform website app's client (`[wechat.open]`), for qrconnect.
    open_sns: Option<SnsClient>,
    basic_token: BasicToken,
    // The state below is kept across a reload ([`Gate::reload`]).
    scenes: Arc<Scenes>,
    store: Arc<dyn TokenStore>,
    logins: Arc<SingleFlight<LoginResult>>,
    used_states: Arc<UsedStates>,
    /// Each code with the state it first came with.
    bound_codes: Arc<UsedStates>,
    /// Each signed push's (timestamp, nonce) with its body.
    push_nonces: Arc<UsedStates>,
    refreshes: Arc<SingleFlight<Result<StoredTokens, SnsError>>>,
    /// Redis, when `[store] url` names one: shared by every instance.
    shared: Option<Arc<dyn SharedStore>>,
    revocations: Arc<Revocations>,
    /// `[limits]`: logins per client address; `None` when off.
    login_limiter: Option<Arc<LoginLimiter>>,
    /// The longest a `qr/status` long poll waits ([`Gate::with_long_poll_limit`]).
    long_poll_limit: Duration,
    /// The highest logout time (ms) read from the shared store.
    revocations_seen_ms: std::sync::atomic::AtomicU64,
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
    /// `[store] url` can't be used.
    #[error("config [store] url: {0}")]
    Store(String),
}

fn now_unix() -> u64 {
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
        let store_error = |e: crate::store::StoreError| GateError::Store(e.0);
        // The state file's logouts are read before the first request; Redis's
        // come with the first sync.
        let mut restored = Vec::new();
        let shared: Option<Arc<dyn SharedStore>> = match &config.store.file {
            Some(path) => {
                let file = crate::file_store::FileStore::open(path).map_err(store_error)?;
                let since = revocation_horizon_ms(&config, now_unix());
                restored = file
                    .sorted_after(REVOCATIONS_KEY, since)
                    .map_err(store_error)?;
                Some(Arc::new(file))
            }
            None => RedisStore::from_config(&config.store)
                .map_err(store_error)?
                .map(|redis| Arc::new(redis) as Arc<dyn SharedStore>),
        };
        let Some(shared) = shared else {
            return Self::with_store(config, Arc::new(MemoryTokenStore::default()));
        };
        let mut gate = Self::with_store(config, shared.clone())?;
        gate.basic_token = BasicToken::shared(gate.sns.clone(), shared.clone());
        gate.shared = Some(shared);
        gate.revoke_all(restored, now_unix());
        Ok(gate)
    }

    /// A gate keeping tokens in `store`.
    ///
    /// Errors: as [`Gate::new`].
    pub fn with_store(config: Config, store: Arc<dyn TokenStore>) -> Result<Gate, GateError> {
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
        let login_limiter = LoginLimiter::new(&config.limits).map(Arc::new);
        Ok(Gate {
            config,
            sealer,
            verified: VerifiedSessions::default(),
            basic_token: BasicToken::new(sns.clone()),
            sns,
            open_sns,
            scenes: Arc::default(),
            store,
            logins: Arc::new(SingleFlight::new(
                Duration::from_secs(CODE_OUTCOME_SECS),
                100_000,
            )),
            used_states: Arc::default(),
            bound_codes: Arc::default(),
            push_nonces: Arc::default(),
            refreshes: Arc::new(SingleFlight::new(Duration::from_secs(5), 100_000)),
            shared: None,
            revocations: Arc::default(),
            login_limiter,
            long_poll_limit: Duration::from_secs(QR_LONG_POLL_SECS),
            revocations_seen_ms: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The same gate with `qr/status` long polls cut at `limit` (default
    /// [`QR_LONG_POLL_SECS`]): a host that serves one request at a time
    /// (the C, PHP and Java examples) keeps it short, so a push is not held
    /// up behind a waiting poll; the QR page polls again at once.
    pub fn with_long_poll_limit(mut self, limit: Duration) -> Gate {
        self.long_poll_limit = limit;
        self
    }

    /// The decision for a request whose body the host read after
    /// [`Decision::NeedsBody`]: `body` is what came, at most `max_bytes`
    /// plus one (a longer body is refused with `413`). The push endpoint
    /// becomes a [`Decision::Call`] that verifies and records the push;
    /// `POST exchange` is [`Gate::decide_exchange`]. Any other request is
    /// decided as by [`Gate::decide`]. No IO.
    pub fn decide_with_body(&self, req: &RequestParts<'_>, body: &[u8]) -> Decision {
        let lang = Lang::choose(self.config.gateway.language, req.accept_language);
        let route = crate::path::canonical_path(req.path)
            .ok()
            .and_then(|path| self.route_of(&path));
        let decision = match (route, req.method) {
            (Some(Route::Push), "POST") if body.len() > push::MAX_PUSH_BYTES => {
                Decision::Reply(Reply::text(413, "push body too large\n"))
            }
            (Some(Route::Push), "POST") => Decision::Call(Call {
                kind: CallKind::Push {
                    query: req.query.map(str::to_owned),
                    body: body.to_vec(),
                },
                lang,
            }),
            (Some(Route::Exchange), "POST") if body.len() > MAX_EXCHANGE_BODY_BYTES => {
                Decision::Reply(Reply::json(
                    413,
                    &serde_json::json!({"error": "body_too_large", "hint": "at most 4096 bytes of JSON"}),
                ))
            }
            (Some(Route::Exchange), "POST") => self.decide_exchange(req, body),
            _ => return self.decide(req),
        };
        if let Decision::Reply(reply) = &decision {
            crate::metrics::count_reply(reply.status);
        }
        decision
    }

    /// The configuration this gate runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The answer of the `auth` route (nginx `auth_request`): `req` is the
    /// *original* request (its method and URI from `X-Original-Method` and
    /// `X-Original-URI`, its headers). `202` when it may pass, with the
    /// identity headers (`X-WeChat-OpenID`, …) and any `Set-Cookie` to
    /// forward; `401` with the login JSON when it needs a login (nginx then
    /// asks the gateway itself for the right answer: a 302, the 401 JSON or
    /// a page). No IO.
    pub fn decide_auth(&self, req: &RequestParts<'_>) -> Reply {
        let login_url = |path: &str| self.login_url(path, self.config.wechat.scope, true);
        let canonical = match crate::path::canonical_path(req.path) {
            Ok(path) => path,
            // nginx reads any status but 2xx, 401 and 403 as an error (500).
            Err(e) => {
                let mut reply = bad_path(e, Lang::En);
                reply.status = 403;
                return reply;
            }
        };
        let req = &RequestParts {
            path: &canonical,
            ..*req
        };
        if self.route_of(req.path).is_some() {
            // The gate's own routes are proxied to it, never auth-requested.
            return login_required_json(&login_url("/"));
        }
        match self.decide(req) {
            Decision::Pass(pass) => {
                let mut reply = Reply::text(202, "");
                if let Some(identity) = pass.identity {
                    for (name, value) in identity.upstream_headers() {
                        reply = reply.with_header(name, value.into_owned());
                    }
                }
                if let Some(cookie) = pass.set_cookie {
                    reply = reply.with_header("Set-Cookie", cookie);
                }
                reply
            }
            Decision::Reply(_) | Decision::Call(_) | Decision::NeedsBody { .. } => {
                login_required_json(&login_url(req.path))
            }
        }
    }

    /// The session in the request's cookies, if it opens and has neither
    /// idled out nor been logged out at `now`.
    fn live_session(&self, cookies: &GateCookies<'_>, now: u64) -> Option<Session> {
        cookies
            .session
            .and_then(|v| self.verified.open(&self.sealer, v, now))
            .filter(|s| !self.idle_expired(s, now) && !self.revocations.is_revoked(&s.sid, now))
    }

    /// The identity of the session in a `Cookie` header, if it holds a valid one now.
    pub fn session_identity(&self, cookie_header: &str) -> Option<Identity> {
        let now = now_unix();
        self.live_session(
            &GateCookies::parse(
                Some(cookie_header),
                &self.config.gateway.session_cookie_name,
            ),
            now,
        )
        .map(|s| s.identity)
    }

    /// Decides what to do with a request, now. No IO.
    pub fn decide(&self, req: &RequestParts<'_>) -> Decision {
        let decision = self.decide_at(req, now_unix());
        match &decision {
            Decision::Pass(_) => crate::metrics::REQUESTS_PASSED.inc(),
            Decision::Reply(reply) => crate::metrics::count_reply(reply.status),
            Decision::Call(_) | Decision::NeedsBody { .. } => {}
        }
        decision
    }

    /// [`Gate::decide`] at a given time (unix seconds).
    pub fn decide_at(&self, req: &RequestParts<'_>, now: u64) -> Decision {
        // Only pages need the language: not computed for requests that pass.
        let lang = || Lang::choose(self.config.gateway.language, req.accept_language);
        // Every rule below sees the canonical path only.
        let canonical = match crate::path::canonical_path(req.path) {
            Ok(path) => path,
            Err(e) => return Decision::Reply(bad_path(e, lang())),
        };
        let upstream_path = match &canonical {
            std::borrow::Cow::Owned(path) => Some(path.clone()),
            std::borrow::Cow::Borrowed(_) => None,
        };
        let req = &RequestParts {
            path: &canonical,
            ..*req
        };
        let cookies = GateCookies::parse(req.cookie, &self.config.gateway.session_cookie_name);
        let session = self.live_session(&cookies, now);
        let prefix = &self.config.gateway.prefix;
        if let Some(route) = self.route_of(req.path) {
            return self.route(route, req, &cookies, session, now, lang());
        }
        let needs_userinfo = self.needs_userinfo(req.path);
        match session {
            Some(s) if !needs_userinfo || Scope::granted_includes_userinfo(&s.identity.scope) => {
                return Decision::Pass(Pass {
                    set_cookie: self.touch(&s, now),
                    identity: Some(s.identity),
                    upstream_cookie: strip_gate_cookies(
                        req.cookie,
                        &self.config.gateway.session_cookie_name,
                    ),
                    upstream_path,
                });
            }
            None if self.is_public(req.path) => {
                return Decision::Pass(Pass {
                    identity: None,
                    upstream_cookie: strip_gate_cookies(
                        req.cookie,
                        &self.config.gateway.session_cookie_name,
                    ),
                    set_cookie: None,
                    upstream_path,
                });
            }
            _ => {}
        }
        let return_to = if matches!(req.method, "GET" | "HEAD") {
            match req.query {
                Some(q) if !q.is_empty() => format!("{}?{q}", req.path),
                _ => req.path.to_owned(),
            }
        } else {
            req.path.to_owned()
        };
        let return_to = safe_return_path(&return_to, "", prefix).unwrap_or_else(|| "/".into());
        let scope = if needs_userinfo {
            Scope::Userinfo
        } else {
            self.config.wechat.scope
        };
        Decision::Reply(self.login_required(req, &return_to, scope, &cookies, now, lang()))
    }

    fn is_public(&self, path: &str) -> bool {
        self.config
            .gateway
            .public_paths
            .iter()
            .any(|p| path.starts_with(p.as_str()))
    }

    fn needs_userinfo(&self, path: &str) -> bool {
        self.config
            .gateway
            .userinfo_paths
            .iter()
            .any(|p| path.starts_with(p.as_str()))
    }

    fn idle_expired(&self, session: &Session, now: u64) -> bool {
        self.config
            .gateway
            .session_idle
            .is_some_and(|idle| now.saturating_sub(session.seen_at) >= idle.as_secs())
    }

    /// With an idle timeout, re-seals a session seen more than a quarter of
    /// that timeout ago.
    fn touch(&self, session: &Session, now: u64) -> Option<String> {
        let idle = self.config.gateway.session_idle?.as_secs();
        (now.saturating_sub(session.seen_at) >= idle / 4).then(|| {
            let mut fresh = session.clone();
            fresh.seen_at = now;
            self.session_cookie(&fresh, now)
        })
    }

    fn session_cookie(&self, session: &Session, now: u64) -> String {
        let max_age = session.expires_at.saturating_sub(now);
        self.set_cookie(
            &self.config.gateway.session_cookie_name,
            seal_session(&self.sealer, session),
            max_age,
        )
    }

    /// The answer to a request that needs a login.
    fn login_required(
        &self,
        req: &RequestParts<'_>,
        return_to: &str,
        scope: Scope,
        cookies: &GateCookies<'_>,
        now: u64,
        lang: Lang,
    ) -> Reply {
        if wants_json(req) {
            return login_required_json(&self.login_url(return_to, scope, true));
        }
        if req
            .user_agent
            .is_some_and(|ua| ua.contains("MicroMessenger"))
        {
            return self.start_login(return_to, scope, cookies, now);
        }
        match self.config.gateway.desktop_login {
            DesktopLogin::SceneQr => {
                return crate::pages::scene_qr_page(lang, &self.config.gateway.prefix, return_to)
            }
            DesktopLogin::Qrconnect => {
                let rd: String = form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
                let login = Route::Login.path(&self.config.gateway.prefix);
                let href = format!("{login}?rd={rd}&app=open");
                return page(
                    lang,
                    401,
                    Text {
                        zh: "微信扫码登录",
                        en: "Log in with WeChat",
                    },
                    Text {
                        zh: "请使用微信扫描二维码登录。",
                        en: "Scan a QR code with WeChat to log in.",
                    },
                    None,
                    Some((
                        &href,
                        Text {
                            zh: "微信扫码登录",
                            en: "Log in with WeChat",
                        },
                    )),
                );
            }
            DesktopLogin::Notice => {}
        }
        page(
            lang,
            401,
            Text {
                zh: "请在微信中打开",
                en: "Open this page in WeChat",
            },
            Text {
                zh: "此页面需要微信登录。请复制链接，在微信中打开。",
                en: "This page needs a WeChat login. Copy the link and open it in WeChat.",
            },
            Some(&format!("{}{}", self.config.gateway.origin(), return_to)),
            Some((
                &self.login_url(return_to, scope, false),
                Text {
                    zh: "已在微信中？继续登录",
                    en: "In WeChat already? Continue",
                },
            )),
        )
    }

    /// `prefix/login?rd=…[&scope=snsapi_userinfo]`, absolute or relative.
    fn login_url(&self, return_to: &str, scope: Scope, absolute: bool) -> String {
        let rd: String = form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
        let origin = if absolute {
            self.config.gateway.origin()
        } else {
            String::new()
        };
        let scope = if scope == self.config.wechat.scope {
            String::new()
        } else {
            format!("&scope={}", scope.as_str())
        };
        let login = Route::Login.path(&self.config.gateway.prefix);
        format!("{origin}{login}?rd={rd}{scope}")
    }

    /// 302 to WeChat's authorize page with a new state cookie; expires the
    /// oldest state cookies so that at most [`MAX_STATE_COOKIES`] remain.
    fn start_login(
        &self,
        return_to: &str,
        scope: Scope,
        cookies: &GateCookies<'_>,
        now: u64,
    ) -> Reply {
        self.start_login_with(return_to, scope, false, cookies, now)
    }

    /// [`Gate::start_login`]; `open_app`: through the Open Platform website
    /// app's QR login (`connect/qrconnect`) instead of web authorization.
    fn start_login_with(
        &self,
        return_to: &str,
        scope: Scope,
        open_app: bool,
        cookies: &GateCookies<'_>,
        now: u64,
    ) -> Reply {
        let callback = self.config.gateway.callback_url();
        self.start_login_to(return_to, scope, open_app, &callback, cookies, now)
    }

    /// [`Gate::start_login_with`] with WeChat sending the browser back to
    /// `callback` (the gate's own, or a front end's page).
    fn start_login_to(
        &self,
        return_to: &str,
        scope: Scope,
        open_app: bool,
        callback: &str,
        cookies: &GateCookies<'_>,
        now: u64,
    ) -> Reply {
        let wechat = &self.config.wechat;
        let state = new_state();
        crate::metrics::LOGINS_STARTED.inc();
        let location = match (&wechat.open, open_app) {
            (Some(open), true) => {
                qrconnect_url(wechat.open_base.as_str(), &open.appid, callback, &state)
            }
            _ => authorize_url(
                wechat.open_base.as_str(),
                &wechat.appid,
                callback,
                scope,
                &state,
                false,
            ),
        };
        let mut reply = Reply::redirect(location).with_header(
            "Set-Cookie",
            self.set_cookie(
                &state_cookie_name(&state),
                seal_state(
                    &self.sealer,
                    &state,
                    return_to,
                    open_app && wechat.open.is_some(),
                    now,
                ),
                STATE_LIFETIME_SECS,
            ),
        );
        let mut live: Vec<(&str, u64)> = Vec::new();
        for (name, value) in &cookies.states {
            let state = &name[STATE_COOKIE_PREFIX.len()..];
            match open_state(&self.sealer, state, value, now) {
                Some(opened) if is_valid_state(state) => live.push((name, opened.expires_at)),
                _ => reply = reply.with_header("Set-Cookie", self.remove_cookie(name)),
            }
        }
        live.sort_by(|a, b| b.1.cmp(&a.1));
        for (name, _) in live.iter().skip(MAX_STATE_COOKIES - 1) {
            reply = reply.with_header("Set-Cookie", self.remove_cookie(name));
        }
        reply
    }

    /// The gate's route at a canonical path, if any.
    fn route_of(&self, path: &str) -> Option<Route> {
        let push_path = self
            .config
            .wechat
            .push_token
            .is_some()
            .then_some(self.config.gateway.push_path.as_str());
        Route::parse(path, &self.config.gateway.prefix, push_path)
    }

    /// The decision for one of the gate's own routes.
    fn route(
        &self,
        route: Route,
        req: &RequestParts<'_>,
        cookies: &GateCookies<'_>,
        session: Option<Session>,
        now: u64,
        lang: Lang,
    ) -> Decision {
        let allowed = route.allowed_methods();
        if !allowed.is_empty() && !allowed.contains(&req.method) {
            let reply = if route == Route::Exchange {
                Reply::json(
                    405,
                    &serde_json::json!({"error": "method_not_allowed", "hint": "POST {\"code\", \"state\"} as JSON"}),
                )
            } else {
                Reply::text(405, "method not allowed\n")
            };
            return Decision::Reply(reply.with_header("Allow", allowed.join(", ")));
        }
        let reply = match route {
            Route::QrNew | Route::QrStatus | Route::QrConfirm => {
                return self.scene_route(route, req, cookies, session, now, lang)
            }
            Route::Push => match req.method {
                "POST" => {
                    return Decision::NeedsBody {
                        max_bytes: push::MAX_PUSH_BYTES,
                    }
                }
                _ => self.push_check(req.query, now),
            },
            Route::Exchange => {
                return Decision::NeedsBody {
                    max_bytes: MAX_EXCHANGE_BODY_BYTES,
                }
            }
            Route::Ready => {
                return Decision::Call(Call {
                    kind: CallKind::Ready,
                    lang,
                })
            }
            Route::Auth => {
                let uri = req.original_uri.unwrap_or("/");
                let (path, query) = match uri.split_once('?') {
                    Some((p, q)) => (p, Some(q)),
                    None => (uri, None),
                };
                let original = RequestParts {
                    method: req.original_method.unwrap_or("GET"),
                    path,
                    query,
                    ..*req
                };
                self.decide_auth(&original)
            }
            Route::AuthorizeUrl => {
                let rd = self.return_param(req.query).unwrap_or_else(|| "/".into());
                let scope = query_param(req.query, "scope")
                    .and_then(|s| Scope::parse(&s))
                    .unwrap_or(self.config.wechat.scope);
                // The front end's own page is the redirect_uri.
                let redirect_uri = format!("{}{rd}", self.config.gateway.origin());
                let started = self.start_login_to(&rd, scope, false, &redirect_uri, cookies, now);
                let url = started.header("location").unwrap_or_default().to_owned();
                let mut reply = Reply::json(200, &serde_json::json!({"url": url}))
                    .with_header("Cache-Control", "no-store".into());
                for cookie in started.header_values("set-cookie") {
                    reply = reply.with_header("Set-Cookie", cookie);
                }
                reply
            }
            Route::Healthz => Reply::text(200, "ok\n"),
            Route::Callback => {
                if let Some(limited) = self.login_limited(req, false, lang) {
                    return Decision::Reply(limited);
                }
                return match self.check_callback(req.query, cookies, session, now, lang, false) {
                    Ok(pending) => Decision::Call(Call {
                        kind: CallKind::Login(pending),
                        lang,
                    }),
                    Err(reply) => Decision::Reply(reply),
                };
            }
            Route::Login => {
                let rd = self.return_param(req.query).unwrap_or_else(|| "/".into());
                let scope = query_param(req.query, "scope")
                    .and_then(|s| Scope::parse(&s))
                    .unwrap_or(self.config.wechat.scope);
                let open_app = query_param(req.query, "app").as_deref() == Some("open");
                self.start_login_with(&rd, scope, open_app, cookies, now)
            }
            Route::Logout => {
                let to = self
                    .return_param(req.query)
                    .unwrap_or_else(|| self.config.gateway.logout_redirect.clone());
                return self.logout_to(session, to, now, lang);
            }
            Route::Userinfo => match session {
                Some(session) => {
                    let refresh = query_param(req.query, "refresh").as_deref() == Some("1");
                    let check = query_param(req.query, "check").as_deref() == Some("1");
                    if refresh || check {
                        let kind = CallKind::Profile { session, check };
                        return Decision::Call(Call { kind, lang });
                    }
                    identity_json(&session.identity, None)
                }
                None => login_required_json(&self.login_url("/", self.config.wechat.scope, true)),
            },
            Route::Unknown => page(
                lang,
                404,
                Text {
                    zh: "页面不存在",
                    en: "Not found",
                },
                Text {
                    zh: "没有这个登录地址。",
                    en: "There is no such login address.",
                },
                None,
                None,
            ),
        };
        Decision::Reply(reply)
    }

    /// Ends `session` (if any) and sends the browser to `to`: a
    /// [`Decision::Call`] that deletes its tokens and tells the other
    /// instances, or the redirect at once without a session.
    fn logout_to(&self, session: Option<Session>, to: String, now: u64, lang: Lang) -> Decision {
        match session {
            Some(s) => {
                tracing::info!(openid = %self.log_id(&s.identity.openid), "logout");
                self.revocations.revoke(&s.sid, s.expires_at, now);
                let kind = CallKind::Logout {
                    sid: s.sid,
                    until: s.expires_at,
                    to,
                };
                Decision::Call(Call { kind, lang })
            }
            None => Decision::Reply(self.logged_out(to)),
        }
    }

    /// A login returning to `return_to` (a path on this site; anything else
    /// returns to `/`): a `302` to WeChat's authorize page with the
    /// configured scope and a new state cookie. `cookie` is the request's
    /// `Cookie` header, whose oldest state cookies are expired. No IO.
    pub fn start_login_for(&self, return_to: &str, cookie: Option<&str>) -> Reply {
        let now = now_unix();
        let cookies = GateCookies::parse(cookie, &self.config.gateway.session_cookie_name);
        let rd = safe_return_path(
            return_to,
            &self.config.gateway.origin(),
            &self.config.gateway.prefix,
        )
        .unwrap_or_else(|| "/".into());
        self.start_login(&rd, self.config.wechat.scope, &cookies, now)
    }

    /// Logs out the session in `cookie` (a `Cookie` header) and sends the
    /// browser to `logout_redirect`: a [`Decision::Call`] (run
    /// [`Gate::complete`]: it deletes the session's tokens) or, without a
    /// live session, the redirect that removes the cookie.
    pub fn logout(&self, cookie: Option<&str>) -> Decision {
        let now = now_unix();
        let cookies = GateCookies::parse(cookie, &self.config.gateway.session_cookie_name);
        let session = self.live_session(&cookies, now);
        let to = self.config.gateway.logout_redirect.clone();
        self.logout_to(
            session,
            to,
            now,
            Lang::choose(self.config.gateway.language, None),
        )
    }

    fn logged_out(&self, to: String) -> Reply {
        Reply::redirect(to).with_header(
            "Set-Cookie",
            self.remove_cookie(&self.config.gateway.session_cookie_name),
        )
    }

    /// The `rd` query parameter as a safe return path; `None` when absent or refused.
    fn return_param(&self, query: Option<&str>) -> Option<String> {
        let rd = query_param(query, "rd")?;
        let safe = safe_return_path(
            &rd,
            &self.config.gateway.origin(),
            &self.config.gateway.prefix,
        );
        if safe.is_none() {
            tracing::debug!("refused a return path that leaves the site");
        }
        safe
    }

    /// Validates a callback's query against its state cookie.
    fn check_callback(
        &self,
        query: Option<&str>,
        cookies: &GateCookies<'_>,
        session: Option<Session>,
        now: u64,
        lang: Lang,
        json: bool,
    ) -> Result<PendingLogin, Reply> {
        let mut code = None;
        let mut state = None;
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match key.as_ref() {
                "code" => &mut code,
                "state" => &mut state,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(self.bad_callback("duplicate parameter", lang));
            }
        }
        let state = state
            .filter(|s| is_valid_state(s))
            .ok_or_else(|| self.bad_callback("missing or malformed state", lang))?;
        let name = state_cookie_name(&state);
        let opened = cookies
            .states
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| open_state(&self.sealer, &state, v, now));
        let open_app = opened.as_ref().is_some_and(|o| o.open_app);
        let return_to = opened.map(|o| o.return_to);
        let Some(return_to) = return_to else {
            // A repeat of a callback that already logged this browser in
            // (refresh, back button, WeChat's double hit): its state cookie is
            // gone but its session is here. Send it on; change nothing.
            if let Some(session) = session {
                let to = code
                    .and_then(|c| self.logins.peek(&c))
                    .and_then(|r| match r.as_ref() {
                        Ok(LoginOutcome::User(packed)) => Some(packed.unpack())
                            .filter(|r| r.identity.openid == session.identity.openid)
                            .map(|r| r.return_to),
                        _ => None,
                    })
                    .unwrap_or_else(|| "/".to_owned());
                return Err(Reply::redirect(to));
            }
            return Err(self.bad_callback("state does not match this browser's login", lang));
        };
        let Some(code) = code else {
            tracing::info!("login declined by the user");
            return Err(page(
                lang,
                403,
                Text {
                    zh: "您拒绝了授权",
                    en: "You declined the login",
                },
                Text {
                    zh: "没有微信授权，无法登录。",
                    en: "Without WeChat's authorization you can't log in.",
                },
                None,
                Some((
                    &self.login_url(&return_to, self.config.wechat.scope, false),
                    Text {
                        zh: "重新登录",
                        en: "Try again",
                    },
                )),
            )
            .with_header("Set-Cookie", self.remove_cookie(&name)));
        };
        if code.is_empty()
            || code.len() > MAX_CODE_LEN
            || !code.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(self.bad_callback("malformed code", lang));
        }
        if !self
            .used_states
            .claim(&state, &code, now, now + STATE_LIFETIME_SECS)
        {
            return Err(self.bad_callback("this login's state was already used", lang));
        }
        if !self
            .bound_codes
            .claim(&code, &state, now, now + CODE_OUTCOME_SECS)
        {
            return Err(self
                .code_replayed(&return_to, json, lang)
                .with_header("Set-Cookie", self.remove_cookie(&name)));
        }
        Ok(PendingLogin {
            code: AuthorizationCode::new(code.into_owned()),
            return_to,
            state_cookie: name,
            open_app,
            json,
        })
    }

    /// `429` when the request's client is over `[limits]`; `None` when it
    /// may go on (or its address is unknown).
    fn login_limited(&self, req: &RequestParts<'_>, json: bool, lang: Lang) -> Option<Reply> {
        let wait = self.login_limiter.as_ref()?.wait(req.client_addr?)?;
        Some(too_many_logins(wait, json, lang))
    }

    /// The answer to a code presented with a state other than the one it
    /// first came with (a leaked code tried in another browser): nothing of
    /// that login, a "link expired" page whose button starts a fresh login.
    fn code_replayed(&self, return_to: &str, json: bool, lang: Lang) -> Reply {
        tracing::warn!("refused a code that came back with another browser's state");
        crate::metrics::count_refused("code_other_state");
        if json {
            return Reply::json(
                400,
                &serde_json::json!({"error": "code_expired", "login_url": self.login_url(return_to, self.config.wechat.scope, true)}),
            );
        }
        page(
            lang,
            400,
            Text {
                zh: "登录链接已过期",
                en: "This login link has expired",
            },
            Text {
                zh: "请重新登录。",
                en: "Please log in again.",
            },
            None,
            Some((
                &self.login_url(return_to, self.config.wechat.scope, false),
                Text {
                    zh: "重新登录",
                    en: "Log in again",
                },
            )),
        )
    }

    fn bad_callback(&self, why: &str, lang: Lang) -> Reply {
        tracing::info!(reason = why, "refused a login callback");
        page(
            lang,
            400,
            Text {
                zh: "登录链接无效或已过期",
                en: "This login link is invalid or has expired",
            },
            Text {
                zh: "请重新登录。如果问题持续，请清除 Cookie 后再试。",
                en: "Please log in again. If this keeps happening, clear your cookies and retry.",
            },
            Some(why),
            Some((
                &self.login_url("/", self.config.wechat.scope, false),
                Text {
                    zh: "重新登录",
                    en: "Log in again",
                },
            )),
        )
    }

    fn log_login(&self, result: &Result<LoginOutcome, SnsError>, elapsed: Duration) {
        log_login(result, elapsed, self.config.gateway.log_openid_hashed);
    }

    /// An openid as log lines show it (hashed with `log_openid = "hash"`).
    fn log_id<'a>(&self, openid: &'a str) -> std::borrow::Cow<'a, str> {
        log_id(openid, self.config.gateway.log_openid_hashed)
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
            let mut gate = Self::with_store(config, self.store.clone())?;
            if let Some(shared) = &self.shared {
                gate.basic_token = BasicToken::shared(gate.sns.clone(), shared.clone());
                gate.shared = Some(shared.clone());
            }
            gate
        } else {
            Gate::new(config)?
        };
        gate.scenes = self.scenes.clone();
        gate.long_poll_limit = self.long_poll_limit;
        gate.logins = self.logins.clone();
        gate.used_states = self.used_states.clone();
        gate.bound_codes = self.bound_codes.clone();
        gate.push_nonces = self.push_nonces.clone();
        gate.refreshes = self.refreshes.clone();
        gate.revocations = self.revocations.clone();
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
    /// Errors: [`crate::store::StoreError`] when Redis can't be reached.
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
        let status = if store && upstream { 200 } else { 503 };
        let word = |ok: bool| if ok { "ok" } else { "unreachable" };
        Reply::json(
            status,
            &serde_json::json!({"ready": status == 200, "config": "ok", "store": word(store), "upstream": word(upstream)}),
        )
    }

    /// Whether the shared store answers (always, without one).
    ///
    /// Errors: [`crate::store::StoreError`] when it does not.
    pub async fn store_ready(&self) -> Result<(), crate::store::StoreError> {
        match &self.shared {
            Some(shared) => shared.ping().await,
            None => Ok(()),
        }
    }

    /// Whether this gate shares its state with other instances (`[store]
    /// url` names Redis); then the host runs [`Gate::sync_revocations`]
    /// about every 500 ms.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Reads the logouts other instances recorded since the last call
    /// (every instance refuses a logged-out session within one period of
    /// this), and forgets those past every cookie's end. No-op without a
    /// shared store. Never called on the request path.
    ///
    /// Errors: [`crate::store::StoreError`] while Redis is unreachable (the
    /// outage is logged once by the store).
    pub async fn sync_revocations(&self) -> Result<(), crate::store::StoreError> {
        use std::sync::atomic::Ordering;
        let Some(shared) = &self.shared else {
            return Ok(());
        };
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
        let entries = shared
            .zrange_after(REVOCATIONS_KEY, since.saturating_sub(1000))
            .await?;
        let highest = self.revoke_all(entries, now).max(since);
        self.revocations_seen_ms.store(highest, Ordering::Relaxed);
        shared
            .zremove_before(REVOCATIONS_KEY, revocation_horizon_ms(&self.config, now))
            .await
    }

    /// Refuses the sessions of logout records (`"<sid> <until>"`, logout
    /// time in ms) from the shared store; the latest logout time seen.
    fn revoke_all(&self, entries: Vec<(String, u64)>, now: u64) -> u64 {
        let mut highest = 0;
        for (member, at_ms) in entries {
            if let Some((sid, until)) = member.split_once(' ') {
                if let Ok(until) = until.parse() {
                    self.revocations.revoke(sid, until, now);
                }
            }
            highest = highest.max(at_ms);
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
            CallKind::Profile { session, check } => self.complete_profile(session, check).await,
            CallKind::Logout { sid, until, to } => {
                if let Err(e) = self.store.remove(&sid).await {
                    tracing::warn!(error = %e, "logout: could not delete the session's tokens");
                }
                if let Some(shared) = &self.shared {
                    let now_ms = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    if let Err(e) = shared
                        .zadd(REVOCATIONS_KEY, now_ms, &format!("{sid} {until}"))
                        .await
                    {
                        tracing::warn!(error = %e, "logout: the other instances were not told");
                    }
                }
                self.logged_out(to)
            }
            CallKind::QrNew {
                return_to,
                requester,
            } => self.qr_new(return_to, requester).await,
            CallKind::Push { query, body } => self.handle_push(query.as_deref(), &body).await,
            CallKind::Ready => self.ready().await,
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
        }
    }

    /// The front end's code hand-off (`POST <prefix>/exchange`, docs/protocol.md
    /// seed 003): a page that is itself the redirect_uri (from
    /// `GET <prefix>/authorize-url?rd=`) posts `{"code": …, "state": …}`
    /// (JSON, at most 4 KiB). The state is checked against this browser's
    /// state cookie and the code exchanged once (the same single-flight as
    /// the callback); the answer is a [`Decision::Call`] whose reply is the
    /// identity JSON with the session cookie, or `{"error", "errcode",
    /// "login_url"}`. A bad body, state or code is a 4xx JSON answer.
    pub fn decide_exchange(&self, req: &RequestParts<'_>, body: &[u8]) -> Decision {
        #[derive(serde::Deserialize)]
        struct Handoff {
            code: String,
            state: String,
        }
        let now = now_unix();
        let lang = Lang::choose(self.config.gateway.language, req.accept_language);
        let cookies = GateCookies::parse(req.cookie, &self.config.gateway.session_cookie_name);
        let session = self.live_session(&cookies, now);
        let login_url = self.login_url("/", self.config.wechat.scope, true);
        let handoff = (body.len() <= MAX_EXCHANGE_BODY_BYTES)
            .then(|| serde_json::from_slice::<Handoff>(body).ok())
            .flatten();
        let Some(handoff) = handoff else {
            return Decision::Reply(Reply::json(
                400,
                &serde_json::json!({"error": "bad_request", "hint": "POST {\"code\": …, \"state\": …} as JSON", "login_url": login_url}),
            ));
        };
        if let Some(limited) = self.login_limited(req, true, lang) {
            return Decision::Reply(limited);
        }
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("code", &handoff.code)
            .append_pair("state", &handoff.state)
            .finish();
        let known = session.as_ref().map(|s| s.identity.clone());
        match self.check_callback(Some(&query), &cookies, session, now, lang, true) {
            Ok(pending) => Decision::Call(Call {
                kind: CallKind::Login(pending),
                lang,
            }),
            // A repeat of a hand-off that already logged this browser in.
            Err(page) if page.status == 302 && known.is_some() => {
                Decision::Reply(identity_json(&known.expect("checked"), None))
            }
            Err(reply)
                if reply
                    .header("content-type")
                    .is_some_and(|t| t.starts_with("application/json")) =>
            {
                Decision::Reply(reply)
            }
            Err(page) => {
                let mut reply = Reply::json(
                    page.status.max(400),
                    &serde_json::json!({"error": "invalid_state", "login_url": login_url}),
                );
                for cookie in page.header_values("set-cookie") {
                    reply = reply.with_header("Set-Cookie", cookie);
                }
                Decision::Reply(reply)
            }
        }
    }

    async fn complete_login(&self, pending: PendingLogin, lang: Lang) -> Reply {
        let started = Instant::now();
        if let Some(shared) = &self.shared {
            match claim_shared_state(shared, &pending).await {
                Ok(SharedClaim::Claimed) => {}
                Ok(SharedClaim::StateUsed) => {
                    return self
                        .bad_callback("this login's state was already used", lang)
                        .with_header("Set-Cookie", self.remove_cookie(&pending.state_cookie))
                }
                Ok(SharedClaim::CodeBound) => {
                    return self
                        .code_replayed(&pending.return_to, pending.json, lang)
                        .with_header("Set-Cookie", self.remove_cookie(&pending.state_cookie));
                }
                Err(e) => {
                    let failed = Err(SnsError::Store(e.0));
                    self.log_login(&failed, started.elapsed());
                    return self.login_reply(&pending, &failed, now_unix(), lang);
                }
            }
        }
        let (result, ran) = self
            .logins
            .run(pending.code.expose(), || async {
                let result = match &self.shared {
                    Some(shared) => {
                        let result = self.shared_exchange(shared, &pending, started).await;
                        if matches!(result, Err(SnsError::Store(_))) {
                            self.log_login(&result, started.elapsed());
                        }
                        result
                    }
                    None => {
                        let result = self.exchange(&pending).await;
                        self.log_login(&result, started.elapsed());
                        result
                    }
                };
                Arc::new(result)
            })
            .await;
        if !ran {
            crate::metrics::EXCHANGE_JOINS.inc();
            tracing::debug!("duplicate callback answered from its code's first exchange");
        }
        self.login_reply(&pending, &result, now_unix(), lang)
    }

    /// The code's exchange across instances: the first to take the code's
    /// lock exchanges it and keeps the outcome in Redis for the code's 300 s;
    /// the others wait for that outcome (at most timeout × attempts + 2 s).
    async fn shared_exchange(
        &self,
        shared: &Arc<dyn SharedStore>,
        pending: &PendingLogin,
        started: Instant,
    ) -> Result<LoginOutcome, SnsError> {
        let id = key_hash(pending.code.expose());
        let (result_key, lock_key) = (format!("login:{id}"), format!("login-lock:{id}"));
        let attempts = self.config.wechat.retries + 1;
        let lock_ttl = self.config.wechat.timeout * attempts + Duration::from_secs(1);
        let deadline = Instant::now() + lock_ttl + Duration::from_secs(1);
        let store_error = |e: crate::store::StoreError| SnsError::Store(e.0);
        // A state file has no other process: this one's single-flight is the lock.
        let locking = shared.is_multi_process();
        loop {
            if let Some(shared_outcome) = shared.value(&result_key).await.map_err(store_error)? {
                tracing::debug!("code exchanged by another instance: its outcome is shared");
                return decode_outcome(&shared_outcome);
            }
            if !locking
                || shared
                    .set_if_absent(&lock_key, "1", lock_ttl)
                    .await
                    .map_err(store_error)?
            {
                // Checked again under the lock: the last holder may have
                // finished between the first look and the lock.
                if locking {
                    if let Some(shared_outcome) =
                        shared.value(&result_key).await.map_err(store_error)?
                    {
                        let _ = shared.delete(&lock_key).await;
                        return decode_outcome(&shared_outcome);
                    }
                }
                let result = self.exchange(pending).await;
                self.log_login(&result, started.elapsed());
                if let Some(encoded) = encode_outcome(&result) {
                    if let Err(e) = shared
                        .set(
                            &result_key,
                            &encoded,
                            Duration::from_secs(CODE_OUTCOME_SECS),
                        )
                        .await
                    {
                        tracing::debug!(error = %e, "could not share a code's outcome");
                    }
                }
                if locking {
                    let _ = shared.delete(&lock_key).await;
                }
                return result;
            }
            if Instant::now() >= deadline {
                return Err(SnsError::Store(
                    "another instance's exchange of this code did not finish".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Exchanges the code (and fetches the profile when `snsapi_userinfo` was
    /// granted), then stores the tokens under a new session id.
    async fn exchange(&self, pending: &PendingLogin) -> Result<LoginOutcome, SnsError> {
        let sns = match (&self.open_sns, pending.open_app) {
            (Some(open), true) => open,
            _ => &self.sns,
        };
        let token = sns.exchange_code(&pending.code).await?;
        if token.is_snapshot_user && !self.config.gateway.allow_snapshot_users {
            return Ok(LoginOutcome::SnapshotRefused);
        }
        let scope = if token.scope.is_empty() {
            self.config.wechat.scope.as_str().to_owned()
        } else {
            token.scope.clone()
        };
        let mut identity = Identity {
            openid: token.openid.clone(),
            unionid: token.unionid.clone(),
            scope,
            nickname: None,
            headimgurl: None,
            snapshot: token.is_snapshot_user,
        };
        if Scope::granted_includes_userinfo(&identity.scope) {
            match sns.userinfo(&token.access_token, &token.openid).await {
                Ok(info) => {
                    identity.nickname = Some(info.nickname).filter(|n| !n.is_empty());
                    identity.headimgurl = info.headimgurl;
                    identity.unionid = identity.unionid.or(info.unionid);
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "sns/userinfo failed; the session carries the openid only"
                ),
            }
        }
        if !is_valid_wechat_id(&identity.openid)
            || identity
                .unionid
                .as_deref()
                .is_some_and(|u| !is_valid_wechat_id(u))
            || !is_valid_scope(&identity.scope)
        {
            return Err(SnsError::Malformed(
                "openid, unionid or scope has unexpected characters".into(),
            ));
        }
        let now = now_unix();
        let sid = new_sid();
        if let Err(e) = self.store.put(&sid, stored_tokens(&token, now)).await {
            tracing::warn!(error = %e, "could not store the session's tokens; profile refresh will need a new login");
        }
        Ok(LoginOutcome::User(PackedLogin::pack(&LoginRecord {
            identity: identity.bounded(),
            sid,
            issued_at: now,
            return_to: pending.return_to.clone(),
        })))
    }

    fn login_reply(
        &self,
        pending: &PendingLogin,
        result: &Result<LoginOutcome, SnsError>,
        now: u64,
        lang: Lang,
    ) -> Reply {
        let reply = self.login_reply_page(pending, result, now, lang);
        if !pending.json {
            return reply;
        }
        // The front end's exchange: the same outcome as JSON.
        let cookies: Vec<String> = reply.header_values("set-cookie");
        let mut answer = match result {
            Ok(LoginOutcome::User(packed)) => identity_json(&packed.unpack().identity, None),
            _ => {
                let errcode = result
                    .as_ref()
                    .err()
                    .and_then(SnsError::errcode)
                    .map(ErrCode::code);
                let status = if reply.status == 302 {
                    409
                } else {
                    reply.status
                };
                let error = match result {
                    Ok(_) => "snapshot_user",
                    Err(SnsError::Transport(_) | SnsError::Store(_)) => "wechat_unavailable",
                    Err(_) => "login_failed",
                };
                Reply::json(
                    status,
                    &serde_json::json!({
                        "error": error,
                        "errcode": errcode,
                        "login_url": self.login_url(&pending.return_to, self.config.wechat.scope, true),
                    }),
                )
                .with_errcode(errcode)
            }
        };
        for cookie in cookies {
            answer = answer.with_header("Set-Cookie", cookie);
        }
        answer
    }

    fn login_reply_page(
        &self,
        pending: &PendingLogin,
        result: &Result<LoginOutcome, SnsError>,
        now: u64,
        lang: Lang,
    ) -> Reply {
        let reply = match result {
            Ok(LoginOutcome::User(packed)) => {
                let LoginRecord {
                    identity,
                    sid,
                    issued_at,
                    ..
                } = packed.unpack();
                let session = Session {
                    identity,
                    sid,
                    issued_at,
                    expires_at: issued_at + self.config.gateway.session_lifetime.as_secs(),
                    seen_at: now,
                };
                Reply::redirect(pending.return_to.clone())
                    .with_header("Set-Cookie", self.session_cookie(&session, now))
            }
            Ok(LoginOutcome::SnapshotRefused) => page(
                lang,
                403,
                Text { zh: "请打开完整页面", en: "Open the full page" },
                Text {
                    zh: "您正在浏览快照页，无法登录。请点击“使用完整服务”后再试。",
                    en: "This is a snapshot preview, which can't log in. Open the full page and try again.",
                },
                None,
                Some((
                    &self.login_url(&pending.return_to, self.config.wechat.scope, false),
                    Text { zh: "重新登录", en: "Try again" },
                )),
            ),
            Err(e) => self
                .login_failed(e, &pending.return_to, lang)
                .with_errcode(e.errcode().map(ErrCode::code)),
        };
        // The state is used up whatever happened.
        reply.with_header("Set-Cookie", self.remove_cookie(&pending.state_cookie))
    }

    fn login_failed(&self, e: &SnsError, return_to: &str, lang: Lang) -> Reply {
        let retry = self.login_url(return_to, self.config.wechat.scope, false);
        let again = Text {
            zh: "重新登录",
            en: "Log in again",
        };
        match e.errcode() {
            // Used by another exchange this gateway does not know of: start over.
            Some(ErrCode::CodeBeenUsed) => Reply::redirect(retry),
            Some(ErrCode::InvalidCode | ErrCode::CodeExpired) => page(
                lang,
                400,
                Text {
                    zh: "登录已过期",
                    en: "The login has expired",
                },
                Text {
                    zh: "请重新登录。",
                    en: "Please log in again.",
                },
                None,
                Some((&retry, again)),
            ),
            Some(
                code @ (ErrCode::InvalidAppid
                | ErrCode::InvalidAppSecret
                | ErrCode::IpNotWhitelisted
                | ErrCode::InvalidGrantType),
            ) => page(
                lang,
                500,
                Text {
                    zh: "网站配置错误",
                    en: "The site is misconfigured",
                },
                Text {
                    zh: "微信登录暂时不可用，网站管理员已收到通知。",
                    en: "WeChat login is unavailable; the site's operator has been told.",
                },
                Some(&format!("errcode {}", code.code())),
                None,
            ),
            Some(ErrCode::DailyQuotaReached | ErrCode::TooFrequent) => page(
                lang,
                503,
                Text {
                    zh: "请稍后再试",
                    en: "Please try again later",
                },
                Text {
                    zh: "登录请求过多。",
                    en: "Too many logins right now.",
                },
                None,
                Some((&retry, again)),
            )
            .with_header("Retry-After", "60".into()),
            _ if matches!(e, SnsError::Store(_)) => page(
                lang,
                503,
                Text {
                    zh: "登录暂时不可用",
                    en: "Login is unavailable for a moment",
                },
                Text {
                    zh: "请稍后重试。已登录的用户不受影响。",
                    en: "Please try again in a moment. Signed-in users are not affected.",
                },
                None,
                Some((&retry, again)),
            )
            .with_header("Retry-After", "5".into()),
            _ if matches!(e, SnsError::Transport(_)) => page(
                lang,
                503,
                Text {
                    zh: "微信暂时无法访问",
                    en: "WeChat is not reachable",
                },
                Text {
                    zh: "请稍后重试。",
                    en: "Please try again in a moment.",
                },
                None,
                Some((&retry, again)),
            )
            .with_header("Retry-After", "5".into()),
            errcode => page(
                lang,
                502,
                Text {
                    zh: "微信登录失败",
                    en: "WeChat login failed",
                },
                Text {
                    zh: "请重试。",
                    en: "Please try again.",
                },
                errcode.map(|c| format!("errcode {}", c.code())).as_deref(),
                Some((&retry, again)),
            ),
        }
    }

    /// `userinfo?refresh=1` (profile from `sns/userinfo`) and `userinfo?check=1`
    /// (`sns/auth`), with the access token refreshed first when near expiry.
    async fn complete_profile(&self, mut session: Session, check: bool) -> Reply {
        if session.sid.starts_with(SCENE_SID_PREFIX) {
            // A scene QR login has no web-authorization tokens: nothing to
            // refresh or check with WeChat; the session stays as it is.
            return identity_json(&session.identity, check.then_some(false));
        }
        let now = now_unix();
        let tokens = match self.usable_tokens(&session, now).await {
            Ok(t) => t,
            Err(reply) => return reply,
        };
        if check {
            return match self
                .sns
                .auth(&tokens.access_token, &session.identity.openid)
                .await
            {
                Ok(()) => identity_json(&session.identity, Some(true)),
                Err(e) => self.token_failure(&session, &e).await,
            };
        }
        match self
            .sns
            .userinfo(&tokens.access_token, &session.identity.openid)
            .await
        {
            Ok(info) => {
                let identity = &mut session.identity;
                identity.nickname = Some(info.nickname).filter(|n| !n.is_empty());
                identity.headimgurl = info.headimgurl;
                identity.unionid = identity.unionid.take().or(info.unionid);
                session.identity = session.identity.clone().bounded();
                session.seen_at = now;
                identity_json(&session.identity, None)
                    .with_header("Set-Cookie", self.session_cookie(&session, now))
            }
            Err(e) => self.token_failure(&session, &e).await,
        }
    }

    /// The session's tokens, refreshed (once per session at a time) when the
    /// access token is within [`REFRESH_MARGIN_SECS`] of expiry. A missing,
    /// invalid or expired refresh token ends the session.
    async fn usable_tokens(&self, session: &Session, now: u64) -> Result<StoredTokens, Reply> {
        let stored = match self.store.get(&session.sid, now).await {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Err(self
                    .end_session(session, "no tokens for this session")
                    .await)
            }
            Err(e) => {
                tracing::warn!(error = %e, "token store unavailable");
                return Err(service_unavailable_json());
            }
        };
        if stored.access_expires_at > now + REFRESH_MARGIN_SECS {
            return Ok(stored);
        }
        let (refreshed, _) = self
            .refreshes
            .run(&session.sid, || async {
                match &self.shared {
                    Some(shared) => {
                        self.shared_refresh(shared, &session.sid, &stored, now)
                            .await
                    }
                    None => self.refresh(&session.sid, &stored, now).await,
                }
            })
            .await;
        match refreshed {
            Ok(t) => Ok(t),
            Err(e) => Err(self.token_failure(session, &e).await),
        }
    }

    async fn refresh(
        &self,
        sid: &str,
        stored: &StoredTokens,
        now: u64,
    ) -> Result<StoredTokens, SnsError> {
        let answer = self.sns.refresh(&stored.refresh_token).await?;
        let mut fresh = stored_tokens(&answer, now);
        // WeChat's refresh keeps the refresh token's 30 days from the login.
        fresh.refresh_expires_at = stored.refresh_expires_at;
        if let Err(e) = self.store.put(sid, fresh.clone()).await {
            tracing::warn!(error = %e, "could not store refreshed tokens");
        }
        Ok(fresh)
    }

    /// A refresh under the session's lock in Redis, so two instances never
    /// send the same refresh token: the one that takes the lock refreshes
    /// (after reading the tokens again), the others wait and read its result.
    async fn shared_refresh(
        &self,
        shared: &Arc<dyn SharedStore>,
        sid: &str,
        stored: &StoredTokens,
        now: u64,
    ) -> Result<StoredTokens, SnsError> {
        let store_error = |e: crate::store::StoreError| SnsError::Store(e.0);
        let lock = format!("refresh-lock:{sid}");
        let attempts = self.config.wechat.retries + 1;
        let lock_ttl = self.config.wechat.timeout * attempts + Duration::from_secs(1);
        let deadline = Instant::now() + lock_ttl + Duration::from_secs(1);
        let renewed = |t: &StoredTokens| t.access_token != stored.access_token;
        loop {
            if shared
                .set_if_absent(&lock, "1", lock_ttl)
                .await
                .map_err(store_error)?
            {
                let current = self.store.get(sid, now).await.map_err(store_error)?;
                let result = match current {
                    Some(t) if renewed(&t) => Ok(t),
                    Some(t) => self.refresh(sid, &t, now).await,
                    None => self.refresh(sid, stored, now).await,
                };
                let _ = shared.delete(&lock).await;
                return result;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Some(t) = self.store.get(sid, now).await.map_err(store_error)? {
                if renewed(&t) {
                    return Ok(t);
                }
            }
            if Instant::now() >= deadline {
                return Err(SnsError::Store(
                    "another instance's token refresh did not finish".into(),
                ));
            }
        }
    }

    /// Maps a failed token call: WeChat no longer honours the tokens → the
    /// session ends (cookie and tokens removed, 401 with a login URL); WeChat
    /// unreachable or failing → 503/502 JSON, session kept.
    async fn token_failure(&self, session: &Session, e: &SnsError) -> Reply {
        let reply = self.token_failure_reply(session, e).await;
        reply.with_errcode(e.errcode().map(ErrCode::code))
    }

    async fn token_failure_reply(&self, session: &Session, e: &SnsError) -> Reply {
        match e.errcode() {
            Some(
                ErrCode::InvalidRefreshToken
                | ErrCode::RefreshTokenExpired
                | ErrCode::InvalidCredential
                | ErrCode::InvalidAccessToken
                | ErrCode::AccessTokenExpired
                | ErrCode::InvalidOpenid
                | ErrCode::PasswordChanged
                | ErrCode::UserNotAuthorized,
            ) => self.end_session(session, &e.to_string()).await,
            Some(ErrCode::ApiUnauthorized) => Reply::json(
                403,
                &serde_json::json!({"error": "scope_required", "login_url": self.login_url("/", Scope::Userinfo, true)}),
            ),
            _ => {
                tracing::warn!(error = %e, "WeChat token call failed");
                match e {
                    SnsError::Transport(_) => service_unavailable_json(),
                    _ => Reply::json(
                        502,
                        &serde_json::json!({"error": "wechat_error", "errcode": e.errcode().map(ErrCode::code)}),
                    ),
                }
            }
        }
    }

    async fn end_session(&self, session: &Session, why: &str) -> Reply {
        tracing::info!(openid = %self.log_id(&session.identity.openid), reason = why, "session ended; a new login is needed");
        if let Err(e) = self.store.remove(&session.sid).await {
            tracing::warn!(error = %e, "could not delete the session's tokens");
        }
        login_required_json(&self.login_url("/", self.config.wechat.scope, true)).with_header(
            "Set-Cookie",
            self.remove_cookie(&self.config.gateway.session_cookie_name),
        )
    }

    fn set_cookie(&self, name: &str, value: String, max_age_secs: u64) -> String {
        Cookie::build((name.to_owned(), value))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.config.gateway.secure_cookies())
            .max_age(cookie::time::Duration::seconds(
                i64::try_from(max_age_secs).unwrap_or(i64::MAX),
            ))
            .build()
            .to_string()
    }

    fn remove_cookie(&self, name: &str) -> String {
        self.set_cookie(name, String::new(), 0)
    }
}

fn stored_tokens(token: &TokenResponse, now: u64) -> StoredTokens {
    StoredTokens {
        access_token: token.access_token.clone(),
        access_expires_at: now + token.expires_in,
        refresh_token: token.refresh_token.clone(),
        refresh_expires_at: now + REFRESH_TOKEN_LIFETIME_SECS,
    }
}

/// The shared sorted set of logouts: `"<sid> <until>"` scored by the
/// logout time in ms.
const REVOCATIONS_KEY: &str = "revoked";

/// Logouts older than this (unix ms) concern no live cookie: one session
/// lifetime back from `now` (unix seconds).
fn revocation_horizon_ms(config: &Config, now: u64) -> u64 {
    now.saturating_sub(config.gateway.session_lifetime.as_secs()) * 1000
}

/// What claiming a login's (state, code) pair in the shared store found.
enum SharedClaim {
    /// The pair is this login's (first arrival or a repeat of it).
    Claimed,
    /// The state already went with another code.
    StateUsed,
    /// The code already came back with another state.
    CodeBound,
}

/// Claims the login's state for its code and the code for its state in the
/// shared store (one pair across instances).
async fn claim_shared_state(
    shared: &Arc<dyn SharedStore>,
    pending: &PendingLogin,
) -> Result<SharedClaim, crate::store::StoreError> {
    let state = key_hash(&pending.state_cookie);
    let code = key_hash(pending.code.expose());
    if !bind_once(
        shared,
        format!("state:{state}"),
        code.clone(),
        STATE_LIFETIME_SECS,
    )
    .await?
    {
        return Ok(SharedClaim::StateUsed);
    }
    if !bind_once(
        shared,
        format!("code-state:{code}"),
        state,
        CODE_OUTCOME_SECS,
    )
    .await?
    {
        return Ok(SharedClaim::CodeBound);
    }
    Ok(SharedClaim::Claimed)
}

/// Binds `key` to `value` for `ttl_secs` in the shared store unless it is
/// bound already: `true` when it is now bound to `value` (first or same),
/// `false` when bound to another value.
async fn bind_once(
    shared: &Arc<dyn SharedStore>,
    key: String,
    value: String,
    ttl_secs: u64,
) -> Result<bool, crate::store::StoreError> {
    if shared
        .set_if_absent(&key, &value, Duration::from_secs(ttl_secs))
        .await?
    {
        return Ok(true);
    }
    Ok(shared.value(&key).await?.is_none_or(|bound| bound == value))
}

/// A code's outcome as kept in Redis: `u` + the packed login, `s` (a
/// refused snapshot user) or `e` + WeChat's errcode. Transport failures are
/// not shared: another instance may still succeed.
fn encode_outcome(result: &Result<LoginOutcome, SnsError>) -> Option<String> {
    match result {
        Ok(LoginOutcome::User(packed)) => Some(format!("u{}", packed.0)),
        Ok(LoginOutcome::SnapshotRefused) => Some("s".into()),
        Err(SnsError::WeChat { code, .. }) => Some(format!("e{}", code.code())),
        Err(_) => None,
    }
}

fn decode_outcome(encoded: &str) -> Result<LoginOutcome, SnsError> {
    let unreadable = || SnsError::Store("an unreadable shared login outcome".into());
    match encoded.split_at_checked(1).ok_or_else(unreadable)? {
        ("u", packed) => {
            serde_json::from_str::<LoginRecord>(packed).map_err(|_| unreadable())?;
            Ok(LoginOutcome::User(PackedLogin(packed.into())))
        }
        ("s", _) => Ok(LoginOutcome::SnapshotRefused),
        ("e", code) => Err(SnsError::WeChat {
            code: ErrCode::from_code(code.parse().map_err(|_| unreadable())?),
            errmsg: "answered to another instance".into(),
        }),
        _ => Err(unreadable()),
    }
}

/// One log line per exchange: the outcome, who logged in (the openid, or
/// its hash with `[gateway] log_openid = "hash"`), WeChat's errcode and the
/// latency; never the code or a token. A store outage is logged once by the
/// store, so its failed logins log at debug.
fn log_login(result: &Result<LoginOutcome, SnsError>, elapsed: Duration, hash_openid: bool) {
    let elapsed_ms = elapsed.as_millis() as u64;
    match result {
        Ok(LoginOutcome::User(_)) => crate::metrics::LOGINS_COMPLETED.inc(),
        Ok(LoginOutcome::SnapshotRefused) => crate::metrics::LOGINS_FAILED
            .with_label_values(&["snapshot"])
            .inc(),
        Err(e) => {
            let errcode = match e {
                SnsError::WeChat { code, .. } => code.code().to_string(),
                SnsError::Transport(_) => "transport".into(),
                SnsError::Store(_) => "store".into(),
                SnsError::Malformed(_) => "malformed".into(),
            };
            crate::metrics::LOGINS_FAILED
                .with_label_values(&[errcode.as_str()])
                .inc();
        }
    }
    match result {
        Ok(LoginOutcome::User(packed)) => {
            let identity = packed.unpack().identity;
            tracing::info!(
                outcome = "completed",
                openid = %log_id(&identity.openid, hash_openid),
                scope = %identity.scope,
                elapsed_ms,
                "login completed"
            )
        }
        Ok(LoginOutcome::SnapshotRefused) => {
            tracing::info!(
                outcome = "refused",
                elapsed_ms,
                "login refused: snapshot user"
            )
        }
        Err(e @ SnsError::Store(_)) => {
            tracing::debug!(outcome = "failed", error = %e, elapsed_ms, "login failed")
        }
        Err(e) => {
            let errmsg = match e {
                SnsError::WeChat { errmsg, .. } => errmsg.as_str(),
                _ => "",
            };
            tracing::warn!(outcome = "failed", errcode = e.errcode().map(ErrCode::code), errmsg, error = %e, elapsed_ms, "login failed");
            let fix = match e.errcode() {
                Some(ErrCode::InvalidAppid) => Some("check [wechat] appid"),
                Some(ErrCode::InvalidAppSecret) => {
                    Some("check [wechat] secret (env WECHAT_APP_SECRET)")
                }
                Some(ErrCode::IpNotWhitelisted) => Some(
                    "add this server's IP address to the account's IP whitelist in the WeChat console",
                ),
                Some(ErrCode::InvalidGrantType) => Some("check [wechat] api_base"),
                _ => None,
            };
            if let Some(fix) = fix {
                tracing::error!(
                    errcode = e.errcode().map(ErrCode::code),
                    "WeChat refused this gateway's credentials: {fix}"
                );
            }
        }
    }
}

/// `openid`, or with `hash` the first 16 hex digits of its SHA-1 (the same
/// user gives the same value in every line, the openid itself appears in none).
fn log_id(openid: &str, hash: bool) -> std::borrow::Cow<'_, str> {
    if hash {
        std::borrow::Cow::Owned(format!("sha1:{}", &key_hash(openid)[..16]))
    } else {
        std::borrow::Cow::Borrowed(openid)
    }
}

fn identity_json(identity: &Identity, checked: Option<bool>) -> Reply {
    let mut body = serde_json::json!({
        "openid": identity.openid,
        "unionid": identity.unionid,
        "scope": identity.scope,
        "nickname": identity.nickname,
        "headimgurl": identity.headimgurl,
    });
    if identity.snapshot {
        body["snapshot"] = true.into();
    }
    if let Some(checked) = checked {
        body["checked"] = checked.into();
    }
    Reply::json(200, &body)
}

/// Logins (requests that make WeChat API calls without a session) per
/// client address: a GCRA limiter from `governor`, its idle keys dropped
/// every 1024 checks so memory follows the recent clients.
struct LoginLimiter {
    limiter: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
    checks: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for LoginLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginLimiter(..)")
    }
}

impl LoginLimiter {
    fn new(limits: &crate::config::LimitsConfig) -> Option<LoginLimiter> {
        let rate = std::num::NonZeroU32::new(limits.logins_per_minute)?;
        let burst = std::num::NonZeroU32::new(limits.login_burst)?;
        let quota = governor::Quota::per_minute(rate).allow_burst(burst);
        Some(LoginLimiter {
            limiter: governor::RateLimiter::keyed(quota),
            checks: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// `None` when `client` may go on; else how long it must wait, whole
    /// seconds (at least 1).
    fn wait(&self, client: std::net::IpAddr) -> Option<u64> {
        use governor::clock::Clock;
        let n = self
            .checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % 1024 == 1023 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&client)
            .err()
            .map(|not_until| {
                let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
            })
            .map(|secs| secs.max(1))
    }
}

/// `429` with `Retry-After` (seconds): a page, or JSON for scripts.
fn too_many_logins(retry_after: u64, json: bool, lang: Lang) -> Reply {
    tracing::info!(retry_after, "a client is over its login limit");
    crate::metrics::count_refused("rate_limited");
    let reply = if json {
        Reply::json(
            429,
            &serde_json::json!({"error": "too_many_requests", "retry_after": retry_after}),
        )
    } else {
        page(
            lang,
            429,
            Text {
                zh: "请求过于频繁",
                en: "Too many login attempts",
            },
            Text {
                zh: "请稍后再试。",
                en: "Please wait a moment and try again.",
            },
            None,
            None,
        )
    };
    reply.with_header("Retry-After", retry_after.to_string())
}

/// `400` for a path with no safe canonical form ([`crate::path`]).
fn bad_path(e: crate::path::PathError, lang: Lang) -> Reply {
    tracing::info!(reason = %e, "refused a request path");
    crate::metrics::count_refused("bad_path");
    page(
        lang,
        400,
        Text {
            zh: "无效的地址",
            en: "Invalid address",
        },
        Text {
            zh: "这个地址的路径无法识别。",
            en: "The path of this address can't be used.",
        },
        Some(&e.to_string()),
        None,
    )
}

fn service_unavailable_json() -> Reply {
    Reply::json(503, &serde_json::json!({"error": "wechat_unavailable"}))
        .with_header("Retry-After", "5".into())
}

fn login_required_json(login_url: &str) -> Reply {
    Reply::json(
        401,
        &serde_json::json!({"error": "login_required", "login_url": login_url}),
    )
}

/// The single value of a query parameter; `None` when absent or repeated.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let mut found = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k == name && found.replace(v).is_some() {
            return None;
        }
    }
    found.map(|v| v.into_owned())
}

/// Whether the client is a script (XHR/fetch) that can't follow a redirect to WeChat.
fn wants_json(req: &RequestParts<'_>) -> bool {
    req.x_requested_with
        .is_some_and(|v| v.eq_ignore_ascii_case("XMLHttpRequest"))
        || req
            .accept
            .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"))
}

/// The gate's cookies in a request's `Cookie` header.
struct GateCookies<'a> {
    session: Option<&'a str>,
    scene: Option<&'a str>,
    states: Vec<(&'a str, &'a str)>,
}

impl<'a> GateCookies<'a> {
    fn parse(header: Option<&'a str>, session_name: &str) -> Self {
        let mut found = GateCookies {
            session: None,
            scene: None,
            states: Vec::new(),
        };
        for c in Cookie::split_parse(header.unwrap_or("")).flatten() {
            let (Some(name), Some(value)) = (c.name_raw(), c.value_raw()) else {
                continue;
            };
            if name == session_name {
                found.session.get_or_insert(value);
            } else if name == SCENE_COOKIE {
                found.scene.get_or_insert(value);
            } else if name
                .strip_prefix(STATE_COOKIE_PREFIX)
                .is_some_and(is_valid_state)
                && found.states.len() < 32
            {
                // Only names the gate could have set: others are never echoed back.
                found.states.push((name, value));
            }
        }
        found
    }
}

/// Whether a cookie is one of the gate's, in any spelling an application
/// might read as one (case, `__Host-`/`__Secure-` prefixes): it never
/// reaches the application.
fn is_gate_cookie(name: &str, session_name: &str) -> bool {
    let strip = |prefix: &str| {
        name.get(..prefix.len())
            .filter(|p| p.eq_ignore_ascii_case(prefix))
            .map(|_| &name[prefix.len()..])
    };
    let bare = strip("__Host-")
        .or_else(|| strip("__Secure-"))
        .unwrap_or(name);
    bare.eq_ignore_ascii_case(SESSION_COOKIE)
        || bare.eq_ignore_ascii_case(SCENE_COOKIE)
        || bare
            .get(..STATE_COOKIE_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(STATE_COOKIE_PREFIX))
        || name.eq_ignore_ascii_case(session_name)
}

/// The `Cookie` header without the gate's own cookies (session, scene and
/// state, in any case or `__Host-`/`__Secure-` spelling, and the session
/// cookie named `session_name`), other cookies kept byte for byte; `None`
/// when nothing is left.
pub fn strip_gate_cookies(header: Option<&str>, session_name: &str) -> Option<String> {
    let kept: Vec<&str> = header?
        .split(';')
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("").trim();
            !pair.is_empty() && !is_gate_cookie(name, session_name)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::HEADER_OPENID;

    const NOW: u64 = 1_800_000_000;
    /// The session cookie's name on the tests' https public_url.
    const HTTPS_SESSION_COOKIE: &str = "__Host-wechat_session";
    const WECHAT: &str = "Mozilla/5.0 MicroMessenger/8.0.47";

    fn gate() -> Gate {
        let toml = r#"
[wechat]
appid = "wx1234567890abcdef"
secret = "app-secret"
scope = "snsapi_userinfo"
open_base = "https://open.example"
[gateway]
upstream = "127.0.0.1:3000"
public_url = "https://app.example.com"
cookie_secret = "0123456789abcdef0123456789abcdef"
public_paths = ["/static/"]
session_lifetime_secs = 3600
"#;
        Gate::new(Config::from_toml(toml, |_| None).unwrap()).unwrap()
    }

    fn req<'a>(path: &'a str, query: Option<&'a str>, cookie: Option<&'a str>) -> RequestParts<'a> {
        RequestParts {
            method: "GET",
            path,
            query,
            cookie,
            user_agent: Some(WECHAT),
            accept: Some("text/html"),
            x_requested_with: None,
            accept_language: None,
            client_addr: None,
            original_uri: None,
            original_method: None,
        }
    }

    fn gate_with(extra: &str) -> Gate {
        let toml = format!(
            "[wechat]\nappid = \"wx1234567890abcdef\"\nsecret = \"app-secret\"\nopen_base = \"https://open.example\"\n\
             [gateway]\npublic_url = \"https://app.example.com\"\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\n{extra}"
        );
        Gate::new(Config::from_toml(&toml, |_| None).unwrap()).unwrap()
    }

    fn pending(d: Decision) -> PendingLogin {
        match d {
            Decision::Call(Call {
                kind: CallKind::Login(p),
                ..
            }) => p,
            other => panic!("expected a login call, got {other:?}"),
        }
    }

    fn user(identity: Identity, return_to: &str) -> Result<LoginOutcome, SnsError> {
        Ok(LoginOutcome::User(PackedLogin::pack(&LoginRecord {
            identity,
            sid: "sid".into(),
            issued_at: NOW,
            return_to: return_to.into(),
        })))
    }

    fn reply(d: Decision) -> Reply {
        match d {
            Decision::Reply(r) => r,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn identity() -> Identity {
        Identity {
            openid: "oOpenid123".into(),
            unionid: None,
            scope: "snsapi_userinfo".into(),
            nickname: Some("昵称".into()),
            headimgurl: None,
            snapshot: false,
        }
    }

    /// `name=value` of the first Set-Cookie starting with `prefix`.
    fn cookie_from(reply: &Reply, prefix: &str) -> String {
        reply
            .headers
            .iter()
            .filter(|(n, _)| *n == "Set-Cookie")
            .map(|(_, v)| v.split(';').next().unwrap().to_owned())
            .find(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} cookie in {:?}", reply.headers))
    }

    /// Starts a login at `path` and returns (state, state cookie).
    fn start(g: &Gate, path: &str) -> (String, String) {
        let r = reply(g.decide_at(&req(path, None, None), NOW));
        assert_eq!(r.status, 302);
        let loc = url::Url::parse(r.header("Location").unwrap()).unwrap();
        let state = loc
            .query_pairs()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1
            .into_owned();
        (state, cookie_from(&r, STATE_COOKIE_PREFIX))
    }

    fn login_as(g: &Gate, identity: Identity) -> String {
        let (state, cookie) = start(g, "/x");
        // A code of its own: a code is good for one state.
        let q = format!("code=CODE{}&state={state}", new_sid());
        let p = pending(g.decide_at(&req("/_wechat/callback", Some(&q), Some(&cookie)), NOW));
        let r = g.login_reply(&p, &user(identity, "/x"), NOW, Lang::Zh);
        cookie_from(&r, HTTPS_SESSION_COOKIE)
    }

    fn logged_in_cookie(g: &Gate) -> String {
        login_as(g, identity())
    }

    #[test]
    fn unauthenticated_requests_get_redirect_401_json_or_page_by_client() {
        let g = gate();
        let r = reply(g.decide_at(&req("/orders", Some("id=1"), None), NOW));
        assert_eq!(r.status, 302);
        let location = r.header("Location").unwrap();
        assert!(location.starts_with("https://open.example/connect/oauth2/authorize?appid=wx1234567890abcdef&redirect_uri=https%3A%2F%2Fapp.example.com%2F_wechat%2Fcallback&response_type=code&scope=snsapi_userinfo&state="));
        assert!(cookie_from(&r, STATE_COOKIE_PREFIX).len() > 40);
        assert!(r.header("Set-Cookie").unwrap().contains("Secure"));

        let mut xhr = req("/api", None, None);
        xhr.x_requested_with = Some("XMLHttpRequest");
        let r = reply(g.decide_at(&xhr, NOW));
        assert_eq!(r.status, 401);
        assert_eq!(
            r.body,
            r#"{"error":"login_required","login_url":"https://app.example.com/_wechat/login?rd=%2Fapi"}"#
        );
        let mut json = req("/api", None, None);
        json.user_agent = None;
        json.accept = Some("application/json");
        assert_eq!(reply(g.decide_at(&json, NOW)).status, 401);

        let mut desktop = req("/orders", None, None);
        desktop.user_agent = Some("Mozilla/5.0 Chrome/126");
        let r = reply(g.decide_at(&desktop, NOW));
        assert_eq!(r.status, 401);
        assert!(r.body.contains("/_wechat/login?rd=%2Forders"));
        assert!(r.header("Set-Cookie").is_none());
    }

    #[test]
    fn public_paths_pass_without_identity_and_without_gate_cookies() {
        let g = gate();
        let d = g.decide_at(
            &req(
                "/static/a.css",
                None,
                Some("theme=dark; wechat_state_abc=x; wechat_session=y"),
            ),
            NOW,
        );
        let Decision::Pass(pass) = d else {
            panic!("{d:?}")
        };
        assert_eq!(pass.identity, None);
        assert_eq!(pass.upstream_cookie.as_deref(), Some("theme=dark"));
    }

    #[test]
    fn a_full_login_passes_with_identity_until_the_session_expires() {
        let g = gate();
        let session = logged_in_cookie(&g);
        let header = format!("a=1; {session}");
        let Decision::Pass(pass) = g.decide_at(&req("/orders", None, Some(&header)), NOW + 10)
        else {
            panic!()
        };
        assert_eq!(pass.identity, Some(identity()));
        assert_eq!(pass.upstream_cookie.as_deref(), Some("a=1"));
        assert!(identity()
            .upstream_headers()
            .any(|(n, v)| n == HEADER_OPENID && v == "oOpenid123"));
        assert_eq!(
            reply(g.decide_at(&req("/orders", None, Some(&header)), NOW + 3600)).status,
            302
        );
    }

    #[test]
    fn callback_transitions() {
        let g = gate();
        let (state, cookie) = start(&g, "/orders?id=1");
        let cb =
            |q: &str, c: Option<&str>| g.decide_at(&req("/_wechat/callback", Some(q), c), NOW + 5);

        let p = pending(cb(&format!("code=C0DE&state={state}"), Some(&cookie)));
        assert_eq!(p.return_to, "/orders?id=1");
        assert_eq!(p.code.expose(), "C0DE");
        assert!(!format!("{p:?}").contains("C0DE"));

        let status = |d: Decision| reply(d).status;
        assert_eq!(
            status(cb(&format!("state={state}"), Some(&cookie))),
            403,
            "declined"
        );
        assert_eq!(status(cb("code=C", Some(&cookie))), 400, "no state");
        assert_eq!(
            status(cb(&format!("code=C&state={state}"), None)),
            400,
            "no cookie"
        );
        assert_eq!(
            status(cb(&format!("code=C&state={state}x"), Some(&cookie))),
            400,
            "other state"
        );
        assert_eq!(
            status(cb(&format!("code=C&code=D&state={state}"), Some(&cookie))),
            400,
            "duplicate"
        );
        let long = "c".repeat(MAX_CODE_LEN + 1);
        assert_eq!(
            status(cb(&format!("code={long}&state={state}"), Some(&cookie))),
            400,
            "long code"
        );
        assert_eq!(
            status(cb(&format!("code=%0A&state={state}"), Some(&cookie))),
            400,
            "control char"
        );
        let late = g.decide_at(
            &req(
                "/_wechat/callback",
                Some(&format!("code=C&state={state}")),
                Some(&cookie),
            ),
            NOW + STATE_LIFETIME_SECS,
        );
        assert_eq!(reply(late).status, 400, "state cookie expired");
        let mut post = req("/_wechat/callback", Some("code=C"), Some(&cookie));
        post.method = "POST";
        assert_eq!(reply(g.decide_at(&post, NOW)).status, 405);
    }

    #[test]
    fn exchange_outcomes_map_to_pages() {
        let g = gate();
        let (state, cookie) = start(&g, "/p");
        let q = format!("code=C&state={state}");
        let pending =
            || pending(g.decide_at(&req("/_wechat/callback", Some(&q), Some(&cookie)), NOW));
        let wechat = |n: i64| {
            Err(SnsError::WeChat {
                code: ErrCode::from_code(n),
                errmsg: "m".into(),
            })
        };
        let cases: Vec<(Result<LoginOutcome, SnsError>, u16)> = vec![
            (user(identity(), "/p"), 302),
            (Ok(LoginOutcome::SnapshotRefused), 403),
            (wechat(40029), 400),
            (wechat(42003), 400),
            (wechat(40163), 302),
            (wechat(40125), 500),
            (wechat(40013), 500),
            (wechat(40164), 500),
            (wechat(45009), 503),
            (wechat(45011), 503),
            (wechat(-1), 502),
            (wechat(12345), 502),
            (Err(SnsError::Transport("refused".into())), 503),
            (Err(SnsError::Malformed("html".into())), 502),
        ];
        for (outcome, status) in cases {
            let label = format!("{outcome:?}");
            let r = g.login_reply(&pending(), &outcome, NOW, Lang::Zh);
            assert_eq!(r.status, status, "{label}");
            let removed = r.headers.iter().any(|(n, v)| {
                *n == "Set-Cookie"
                    && v.starts_with(&format!("wechat_state_{state}=;"))
                    && v.contains("Max-Age=0")
            });
            assert!(removed, "{label}: state cookie removed");
            if status == 302 && label.contains("CodeBeenUsed") {
                assert_eq!(
                    r.header("Location"),
                    Some("/_wechat/login?rd=%2Fp"),
                    "restarts the login"
                );
            } else if status == 302 {
                assert_eq!(r.header("Location"), Some("/p"));
            }
            if status == 503 {
                assert!(r.header("Retry-After").is_some());
            }
            if (400..500).contains(&status) || status == 502 || status == 503 {
                assert!(
                    r.body.contains("/_wechat/login?rd=%2Fp"),
                    "{label}: offers a fresh login"
                );
            }
        }
    }

    #[test]
    fn state_cookies_are_capped() {
        let g = gate();
        let mut cookies = Vec::new();
        for i in 0..(MAX_STATE_COOKIES + 2) {
            let (_, c) = start(&g, &format!("/tab{i}"));
            cookies.push(c);
        }
        cookies.push("wechat_state_forged=garbage".into());
        let header = cookies.join("; ");
        let r = reply(g.decide_at(&req("/again", None, Some(&header)), NOW));
        let removals = r
            .headers
            .iter()
            .filter(|(n, v)| *n == "Set-Cookie" && v.contains("Max-Age=0"))
            .count();
        // 7 live + 1 new must drop to 5: remove 3 live ones, and the forged one.
        assert_eq!(
            removals,
            (MAX_STATE_COOKIES + 2) - (MAX_STATE_COOKIES - 1) + 1
        );
    }

    #[test]
    fn gate_routes() {
        let g = gate();
        assert_eq!(
            reply(g.decide_at(&req("/_wechat/healthz", None, None), NOW)).status,
            200
        );
        assert_eq!(
            reply(g.decide_at(&req("/_wechat/nope", None, None), NOW)).status,
            404
        );
        assert_eq!(
            reply(g.decide_at(&req("/_wechat/userinfo", None, None), NOW)).status,
            401
        );
        let session = logged_in_cookie(&g);
        let r = reply(g.decide_at(&req("/_wechat/userinfo", None, Some(&session)), NOW));
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["openid"], "oOpenid123");
        assert_eq!(v["nickname"], "昵称");
        let r = reply(g.decide_at(&req("/_wechat/logout", Some("rd=%2Fbye"), None), NOW));
        assert_eq!(r.header("Location"), Some("/bye"));
        assert!(r
            .header("Set-Cookie")
            .unwrap()
            .starts_with("__Host-wechat_session=;"));
        let r = reply(g.decide_at(
            &req(
                "/_wechat/login",
                Some("rd=https%3A%2F%2Fevil.example%2F"),
                None,
            ),
            NOW,
        ));
        assert_eq!(r.status, 302);
        // The start path is sealed in the state cookie: open it to check it is "/".
        let state_cookie = cookie_from(&r, STATE_COOKIE_PREFIX);
        let (name, value) = state_cookie.split_once('=').unwrap();
        let state = &name[STATE_COOKIE_PREFIX.len()..];
        assert_eq!(
            open_state(&g.sealer, state, value, NOW).unwrap().return_to,
            "/"
        );
        // A path that merely starts like the prefix is an application path.
        assert_eq!(
            reply(g.decide_at(&req("/_wechatx", None, None), NOW)).status,
            302
        );
    }

    #[test]
    fn a_repeated_callback_with_a_session_goes_on_without_an_error() {
        let g = gate();
        let (state, cookie) = start(&g, "/orders");
        let q = format!("code=C&state={state}");
        let p = pending(g.decide_at(&req("/_wechat/callback", Some(&q), Some(&cookie)), NOW));
        let r = g.login_reply(&p, &user(identity(), "/orders"), NOW, Lang::Zh);
        let session = cookie_from(&r, HTTPS_SESSION_COOKIE);
        // The browser lost the state cookie (the first answer removed it) but has its session.
        let again =
            reply(g.decide_at(&req("/_wechat/callback", Some(&q), Some(&session)), NOW + 1));
        assert_eq!((again.status, again.header("Location")), (302, Some("/")));
        assert!(
            again.header("Set-Cookie").is_none(),
            "the session is not changed"
        );
        // Without a session it stays a 400.
        assert_eq!(
            reply(g.decide_at(&req("/_wechat/callback", Some(&q), None), NOW + 1)).status,
            400
        );
    }

    #[test]
    fn idle_sessions_end_and_active_ones_are_resealed() {
        let g = gate_with("session_idle_secs = 600\n");
        let session = logged_in_cookie(&g);
        let at = |t: u64| g.decide_at(&req("/a", None, Some(&session)), t);
        let Decision::Pass(p) = at(NOW + 10) else {
            panic!()
        };
        assert_eq!(p.set_cookie, None, "fresh: no re-seal");
        let Decision::Pass(p) = at(NOW + 200) else {
            panic!()
        };
        let resealed = p
            .set_cookie
            .expect("re-sealed after a quarter of the idle time");
        let resealed = resealed.split(';').next().unwrap().to_owned();
        assert_eq!(
            reply(at(NOW + 600)).status,
            302,
            "idle too long: a new login"
        );
        let later = g.decide_at(&req("/a", None, Some(&resealed)), NOW + 700);
        assert!(
            matches!(later, Decision::Pass(_)),
            "the re-sealed session lives on"
        );
    }

    #[test]
    fn userinfo_paths_send_base_sessions_to_authorize_with_userinfo() {
        let g = gate_with("userinfo_paths = [\"/profile/\"]\n");
        let mut base = identity();
        base.scope = "snsapi_base".into();
        base.nickname = None;
        let session = login_as(&g, base);
        assert!(matches!(
            g.decide_at(&req("/orders", None, Some(&session)), NOW),
            Decision::Pass(_)
        ));
        let r = reply(g.decide_at(&req("/profile/me", None, Some(&session)), NOW));
        assert_eq!(r.status, 302);
        assert!(r
            .header("Location")
            .unwrap()
            .contains("&scope=snsapi_userinfo&state="));
        let mut xhr = req("/profile/me", None, Some(&session));
        xhr.accept = Some("application/json");
        let r = reply(g.decide_at(&xhr, NOW));
        assert!(
            r.body
                .contains("login?rd=%2Fprofile%2Fme&scope=snsapi_userinfo"),
            "{}",
            r.body
        );
        let full = login_as(&g, identity());
        assert!(matches!(
            g.decide_at(&req("/profile/me", None, Some(&full)), NOW),
            Decision::Pass(_)
        ));
        let r = reply(g.decide_at(
            &req(
                "/_wechat/login",
                Some("rd=%2Fp&scope=snsapi_userinfo"),
                None,
            ),
            NOW,
        ));
        assert!(r
            .header("Location")
            .unwrap()
            .contains("scope=snsapi_userinfo"));
    }

    #[test]
    fn pages_follow_the_language() {
        let g = gate();
        let mut r = req("/_wechat/nope", None, None);
        assert!(reply(g.decide_at(&r, NOW)).body.contains("页面不存在"));
        r.accept_language = Some("en-GB,en;q=0.9");
        let body = reply(g.decide_at(&r, NOW)).body;
        assert!(body.contains("Not found") && !body.contains("页面不存在"));
        let g = gate_with("language = \"en\"\n");
        assert!(reply(g.decide_at(&req("/_wechat/nope", None, None), NOW))
            .body
            .contains("Not found"));
    }

    #[test]
    fn logout_and_profile_refresh_are_calls_needing_io() {
        let g = gate();
        let session = logged_in_cookie(&g);
        let d = g.decide_at(&req("/_wechat/logout", None, Some(&session)), NOW);
        assert!(
            matches!(
                d,
                Decision::Call(Call {
                    kind: CallKind::Logout { .. },
                    ..
                })
            ),
            "{d:?}"
        );
        // The logout ended that session at once, on this gate.
        assert!(matches!(
            g.decide_at(
                &req("/_wechat/userinfo", Some("refresh=1"), Some(&session)),
                NOW
            ),
            Decision::Reply(_)
        ));
        let g = gate();
        let d = g.decide_at(
            &req("/_wechat/userinfo", Some("refresh=1"), Some(&session)),
            NOW,
        );
        assert!(matches!(
            d,
            Decision::Call(Call {
                kind: CallKind::Profile { check: false, .. },
                ..
            })
        ));
        let d = g.decide_at(
            &req("/_wechat/userinfo", Some("check=1"), Some(&session)),
            NOW,
        );
        assert!(matches!(
            d,
            Decision::Call(Call {
                kind: CallKind::Profile { check: true, .. },
                ..
            })
        ));
        let r = reply(g.decide_at(&req("/_wechat/logout", None, None), NOW));
        assert_eq!(r.header("Location"), Some("/"));
        let g = gate_with("logout_redirect = \"/goodbye\"\n");
        assert_eq!(
            reply(g.decide_at(&req("/_wechat/logout", None, None), NOW)).header("Location"),
            Some("/goodbye")
        );
    }

    #[test]
    fn the_auth_route_answers_202_with_identity_or_401() {
        let g = gate();
        let session = logged_in_cookie(&g);
        let r = g.decide_auth(&req("/orders", Some("id=1"), Some(&session)));
        assert_eq!(r.status, 202);
        assert_eq!(r.header("X-WeChat-OpenID"), Some("oOpenid123"));
        assert_eq!(r.header("X-WeChat-Nickname"), Some("%E6%98%B5%E7%A7%B0"));
        let r = g.decide_auth(&req("/orders", None, None));
        assert_eq!(r.status, 401);
        assert!(
            r.header("Set-Cookie").is_none(),
            "no state cookie from a subrequest"
        );
        let r = g.decide_auth(&req("/static/a.css", None, None));
        assert_eq!((r.status, r.header("X-WeChat-OpenID")), (202, None));
        assert_eq!(
            g.decide_auth(&req("/_wechat/userinfo", None, Some(&session)))
                .status,
            401
        );
    }

    #[test]
    fn strip_gate_cookies_keeps_others_byte_for_byte() {
        assert_eq!(strip_gate_cookies(None, SESSION_COOKIE), None);
        assert_eq!(
            strip_gate_cookies(Some("wechat_session=a"), SESSION_COOKIE),
            None
        );
        for spelling in [
            "__Host-wechat_session=a",
            "WeChat_Session=a",
            "__secure-wechat_scene=b",
            "Wechat_State_x=c",
            "my_sid=d",
        ] {
            assert_eq!(
                strip_gate_cookies(Some(spelling), "my_sid"),
                None,
                "{spelling}"
            );
        }
        assert_eq!(
            strip_gate_cookies(Some("a=1;b=\"x y\"; wechat_state_q=z;c="), SESSION_COOKIE)
                .as_deref(),
            Some("a=1; b=\"x y\"; c=")
        );
    }
}
