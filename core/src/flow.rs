//! The login flow state machine (DESIGN.md "flow"). Every host drives this
//! one machine; none re-implements a decision.
//!
//! A request goes in as [`RequestParts`]; [`Gate::decide`] answers without
//! IO with a [`Decision`]:
//!
//! ```text
//! no session ──▶ Reply 302 authorize (+ state cookie)   WeChat browser
//!            ├─▶ Reply 401 JSON {error, login_url}      XHR / API client
//!            └─▶ Reply 401 page "open in WeChat"        other browsers
//! callback ────▶ Reply 400 (bad/missing state)  ·  Reply 403 (denied: no code)
//!            └─▶ Exchange(PendingLogin) ──IO──▶ Gate::finish_login ──▶ 302 back + session
//! session ─────▶ Pass(identity)
//! ```
//!
//! The one IO transition, exchanging the code (and fetching the profile), is
//! [`Gate::complete_login`]; a host that does its own IO calls
//! [`Gate::finish_login`] with the result instead.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cookie::{Cookie, SameSite};
use url::form_urlencoded;

use crate::authorize::{authorize_url, Scope};
use crate::config::Config;
use crate::errcode::ErrCode;
use crate::pages::{page, Reply, Text};
use crate::seal::Sealer;
use crate::secret::AuthorizationCode;
use crate::session::{is_valid_wechat_id, open_session, seal_session, Identity, SESSION_COOKIE};
use crate::sns::{SnsClient, SnsError};
use crate::state::{
    is_valid_state, new_state, open_state, safe_return_path, seal_state, state_cookie_name,
    MAX_STATE_COOKIES, STATE_COOKIE_PREFIX, STATE_LIFETIME_SECS,
};

/// Longest authorization code accepted from a callback, in bytes.
pub const MAX_CODE_LEN: usize = 512;

/// The parts of an HTTP request the gate looks at. Header values that are
/// not valid UTF-8 are passed as `None` (treated as absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestParts<'a> {
    /// Method, e.g. `GET`.
    pub method: &'a str,
    /// Path, without the query.
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
}

/// What to do with a request.
#[derive(Debug)]
pub enum Decision {
    /// Forward it to the application.
    Pass(Pass),
    /// Answer it with this reply; nothing reaches the application.
    Reply(Reply),
    /// A callback with a valid state: exchange the code ([`Gate::complete_login`]).
    Exchange(PendingLogin),
}

/// A request that goes on to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// The verified identity; `None` on a public path without a session.
    pub identity: Option<Identity>,
    /// The `Cookie` header the application gets: the request's, without the
    /// gate's own cookies; `None` means remove the header.
    pub upstream_cookie: Option<String>,
}

/// A callback waiting for its code exchange. Its `Debug` hides the code.
#[derive(Debug)]
pub struct PendingLogin {
    /// The authorization code from the callback.
    pub code: AuthorizationCode,
    /// Path to send the browser back to.
    pub return_to: String,
    state_cookie: String,
}

/// What the code exchange found out.
#[derive(Debug, Clone)]
pub enum LoginOutcome {
    /// A real user.
    User(Identity),
    /// A snapshot-page virtual user (`is_snapshotuser: 1`): not logged in.
    SnapshotUser,
}

/// The gate: configuration, cookie keys and the WeChat API client.
#[derive(Debug)]
pub struct Gate {
    config: Config,
    sealer: Sealer,
    sns: SnsClient,
}

/// Why a [`Gate`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The cookie secret is too short (see [`crate::config::MIN_COOKIE_SECRET_BYTES`]).
    #[error("config [gateway] cookie_secret: must be at least 32 bytes")]
    CookieSecret,
    /// The HTTP client for WeChat could not be set up.
    #[error("cannot set up the WeChat API client: {0}")]
    Client(#[from] SnsError),
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Gate {
    /// A gate for a validated configuration.
    ///
    /// Errors: [`GateError`] when the cookie key or the HTTP client can't be made.
    pub fn new(config: Config) -> Result<Gate, GateError> {
        let sealer = Sealer::new(&config.gateway.cookie_secret).ok_or(GateError::CookieSecret)?;
        let sns = SnsClient::new(&config.wechat)?;
        Ok(Gate { config, sealer, sns })
    }

    /// The configuration this gate runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Decides what to do with a request, now. Pure: no IO.
    pub fn decide(&self, req: &RequestParts<'_>) -> Decision {
        self.decide_at(req, now_unix())
    }

    /// [`Gate::decide`] at a given time (unix seconds).
    pub fn decide_at(&self, req: &RequestParts<'_>, now: u64) -> Decision {
        let cookies = GateCookies::parse(req.cookie);
        let session = cookies
            .session
            .and_then(|v| open_session(&self.sealer, v, now))
            .map(|(identity, _)| identity);
        let prefix = &self.config.gateway.prefix;
        if let Some(route) = route_under(req.path, prefix) {
            if route == "/callback" && matches!(req.method, "GET" | "HEAD") {
                return match self.check_callback(req.query, &cookies, now) {
                    Ok(pending) => Decision::Exchange(pending),
                    Err(reply) => Decision::Reply(reply),
                };
            }
            return Decision::Reply(self.route(route, req, &cookies, session, now));
        }
        if session.is_some() || self.is_public(req.path) {
            return Decision::Pass(Pass {
                identity: session,
                upstream_cookie: strip_gate_cookies(req.cookie),
            });
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
        Decision::Reply(self.login_required(req, &return_to, &cookies, now))
    }

    fn is_public(&self, path: &str) -> bool {
        self.config
            .gateway
            .public_paths
            .iter()
            .any(|p| path.starts_with(p.as_str()))
    }

    /// The answer to a request that needs a login.
    fn login_required(
        &self,
        req: &RequestParts<'_>,
        return_to: &str,
        cookies: &GateCookies<'_>,
        now: u64,
    ) -> Reply {
        if wants_json(req) {
            return login_required_json(&self.login_url(return_to, true));
        }
        if req.user_agent.is_some_and(|ua| ua.contains("MicroMessenger")) {
            return self.start_login(return_to, cookies, now);
        }
        page(
            401,
            Text { zh: "请在微信中打开", en: "Open this page in WeChat" },
            Text {
                zh: "此页面需要微信登录。请复制链接，在微信中打开。",
                en: "This page needs a WeChat login. Copy the link and open it in WeChat.",
            },
            Some(&format!("{}{}", self.config.gateway.origin(), return_to)),
            Some((
                &self.login_url(return_to, false),
                Text { zh: "已在微信中？继续登录", en: "In WeChat already? Continue" },
            )),
        )
    }

    /// `prefix/login?rd=…`, absolute or relative.
    fn login_url(&self, return_to: &str, absolute: bool) -> String {
        let rd: String = form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
        let origin = if absolute { self.config.gateway.origin() } else { String::new() };
        format!("{origin}{}/login?rd={rd}", self.config.gateway.prefix)
    }

    /// 302 to WeChat's authorize page with a new state cookie; expires the
    /// oldest state cookies so that at most [`MAX_STATE_COOKIES`] remain.
    fn start_login(&self, return_to: &str, cookies: &GateCookies<'_>, now: u64) -> Reply {
        let wechat = &self.config.wechat;
        let state = new_state();
        let location = authorize_url(
            wechat.open_base.as_str(),
            &wechat.appid,
            &self.config.gateway.callback_url(),
            wechat.scope,
            &state,
            false,
        );
        let mut reply = Reply::redirect(location).with_header(
            "Set-Cookie",
            self.set_cookie(
                &state_cookie_name(&state),
                seal_state(&self.sealer, &state, return_to, now),
                STATE_LIFETIME_SECS,
            ),
        );
        let mut live: Vec<(&str, u64)> = Vec::new();
        for (name, value) in &cookies.states {
            let state = &name[STATE_COOKIE_PREFIX.len()..];
            match open_state(&self.sealer, state, value, now) {
                Some((_, exp)) if is_valid_state(state) => live.push((name, exp)),
                _ => reply = reply.with_header("Set-Cookie", self.remove_cookie(name)),
            }
        }
        live.sort_by(|a, b| b.1.cmp(&a.1));
        for (name, _) in live.iter().skip(MAX_STATE_COOKIES - 1) {
            reply = reply.with_header("Set-Cookie", self.remove_cookie(name));
        }
        reply
    }

    fn route(
        &self,
        route: &str,
        req: &RequestParts<'_>,
        cookies: &GateCookies<'_>,
        session: Option<Identity>,
        now: u64,
    ) -> Reply {
        let read_only = matches!(req.method, "GET" | "HEAD");
        match route {
            "/callback" | "/login" | "/userinfo" | "/healthz" if !read_only => {
                Reply::text(405, "method not allowed\n").with_header("Allow", "GET, HEAD".into())
            }
            "/logout" if !matches!(req.method, "GET" | "HEAD" | "POST") => {
                Reply::text(405, "method not allowed\n")
                    .with_header("Allow", "GET, HEAD, POST".into())
            }
            "/healthz" => Reply::text(200, "ok\n"),
            "/login" => {
                let rd = self.return_param(req.query);
                self.start_login(&rd, cookies, now)
            }
            "/logout" => {
                let rd = self.return_param(req.query);
                if let Some(id) = &session {
                    tracing::info!(openid = %id.openid, "logout");
                }
                Reply::redirect(rd).with_header("Set-Cookie", self.remove_cookie(SESSION_COOKIE))
            }
            "/userinfo" => match session {
                Some(id) => Reply::json(
                    200,
                    &serde_json::json!({
                        "openid": id.openid,
                        "unionid": id.unionid,
                        "scope": id.scope,
                        "nickname": id.nickname,
                        "headimgurl": id.headimgurl,
                    }),
                ),
                None => login_required_json(&self.login_url("/", true)),
            },
            _ => page(
                404,
                Text { zh: "页面不存在", en: "Not found" },
                Text { zh: "没有这个登录地址。", en: "There is no such login address." },
                None,
                None,
            ),
        }
    }

    /// The `rd` query parameter as a safe return path, `/` when absent or refused.
    fn return_param(&self, query: Option<&str>) -> String {
        let rd = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .find(|(k, _)| k == "rd")
            .map(|(_, v)| v.into_owned());
        rd.and_then(|rd| {
            let safe = safe_return_path(&rd, &self.config.gateway.origin(), &self.config.gateway.prefix);
            if safe.is_none() {
                tracing::debug!("refused a return path that leaves the site");
            }
            safe
        })
        .unwrap_or_else(|| "/".to_owned())
    }

    /// Validates a callback's query against its state cookie.
    fn check_callback(
        &self,
        query: Option<&str>,
        cookies: &GateCookies<'_>,
        now: u64,
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
                return Err(self.bad_callback("duplicate parameter"));
            }
        }
        let state = state
            .filter(|s| is_valid_state(s))
            .ok_or_else(|| self.bad_callback("missing or malformed state"))?;
        let name = state_cookie_name(&state);
        let return_to = cookies
            .states
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| open_state(&self.sealer, &state, v, now))
            .map(|(rd, _)| rd)
            .ok_or_else(|| self.bad_callback("state does not match this browser's login"))?;
        let Some(code) = code else {
            return Err(page(
                403,
                Text { zh: "您拒绝了授权", en: "You declined the login" },
                Text {
                    zh: "没有微信授权，无法登录。",
                    en: "Without WeChat's authorization you can't log in.",
                },
                None,
                Some((&self.login_url(&return_to, false), Text { zh: "重新登录", en: "Try again" })),
            )
            .with_header("Set-Cookie", self.remove_cookie(&name)));
        };
        if code.is_empty()
            || code.len() > MAX_CODE_LEN
            || !code.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(self.bad_callback("malformed code"));
        }
        Ok(PendingLogin {
            code: AuthorizationCode::new(code.into_owned()),
            return_to,
            state_cookie: name,
        })
    }

    fn bad_callback(&self, why: &str) -> Reply {
        tracing::info!(reason = why, "refused a login callback");
        page(
            400,
            Text { zh: "登录链接无效或已过期", en: "This login link is invalid or has expired" },
            Text {
                zh: "请重新登录。如果问题持续，请清除 Cookie 后再试。",
                en: "Please log in again. If this keeps happening, clear your cookies and retry.",
            },
            Some(why),
            Some((&self.login_url("/", false), Text { zh: "重新登录", en: "Log in again" })),
        )
    }

    /// Exchanges the code of a pending login with WeChat (and fetches the
    /// profile with `snsapi_userinfo`), then answers as [`Gate::finish_login`].
    pub async fn complete_login(&self, pending: PendingLogin) -> Reply {
        let started = Instant::now();
        let outcome = self.fetch_identity(&pending.code).await;
        self.finish_login(&pending, outcome, now_unix(), started.elapsed())
    }

    async fn fetch_identity(&self, code: &AuthorizationCode) -> Result<LoginOutcome, SnsError> {
        let token = self.sns.exchange_code(code).await?;
        if token.is_snapshot_user {
            return Ok(LoginOutcome::SnapshotUser);
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
        };
        if self.config.wechat.scope == Scope::Userinfo
            && Scope::granted_includes_userinfo(&identity.scope)
        {
            match self.sns.userinfo(&token.access_token, &token.openid).await {
                Ok(info) => {
                    identity.nickname = Some(info.nickname).filter(|n| !n.is_empty());
                    identity.headimgurl = info.headimgurl;
                    identity.unionid = identity.unionid.or(info.unionid);
                }
                Err(e) => tracing::warn!(error = %e, "sns/userinfo failed; the session carries the openid only"),
            }
        }
        if !is_valid_wechat_id(&identity.openid)
            || identity.unionid.as_deref().is_some_and(|u| !is_valid_wechat_id(u))
        {
            return Err(SnsError::Malformed("openid or unionid has unexpected characters".into()));
        }
        Ok(LoginOutcome::User(identity))
    }

    /// The answer to a callback once its exchange is done: a 302 back to the
    /// first page with the session cookie, or an error page. The state cookie
    /// is removed either way (its code is spent).
    pub fn finish_login(
        &self,
        pending: &PendingLogin,
        outcome: Result<LoginOutcome, SnsError>,
        now: u64,
        elapsed: Duration,
    ) -> Reply {
        let elapsed_ms = elapsed.as_millis() as u64;
        let reply = match outcome {
            Ok(LoginOutcome::User(identity)) => {
                tracing::info!(openid = %identity.openid, scope = %identity.scope, elapsed_ms, "login completed");
                let lifetime = self.config.gateway.session_lifetime.as_secs();
                Reply::redirect(pending.return_to.clone()).with_header(
                    "Set-Cookie",
                    self.set_cookie(
                        SESSION_COOKIE,
                        seal_session(&self.sealer, &identity, now, lifetime),
                        lifetime,
                    ),
                )
            }
            Ok(LoginOutcome::SnapshotUser) => {
                tracing::info!(elapsed_ms, "login refused: snapshot user");
                page(
                    403,
                    Text { zh: "请打开完整页面", en: "Open the full page" },
                    Text {
                        zh: "您正在浏览快照页，无法登录。请点击“使用完整服务”后再试。",
                        en: "This is a snapshot preview, which can't log in. Open the full page and try again.",
                    },
                    None,
                    Some((&self.login_url(&pending.return_to, false), Text { zh: "重新登录", en: "Try again" })),
                )
            }
            Err(e) => self.login_failed(&e, &pending.return_to, elapsed_ms),
        };
        reply.with_header("Set-Cookie", self.remove_cookie(&pending.state_cookie))
    }

    fn login_failed(&self, e: &SnsError, return_to: &str, elapsed_ms: u64) -> Reply {
        let retry = self.login_url(return_to, false);
        let errcode = e.errcode().map(ErrCode::code);
        let errmsg = match e {
            SnsError::WeChat { errmsg, .. } => errmsg.as_str(),
            _ => "",
        };
        tracing::warn!(errcode, errmsg, error = %e, elapsed_ms, "login failed");
        let again = Text { zh: "重新登录", en: "Log in again" };
        match e.errcode() {
            Some(ErrCode::InvalidCode | ErrCode::CodeExpired | ErrCode::CodeBeenUsed) => page(
                400,
                Text { zh: "登录已过期", en: "The login has expired" },
                Text { zh: "请重新登录。", en: "Please log in again." },
                None,
                Some((&retry, again)),
            ),
            Some(
                code @ (ErrCode::InvalidAppid
                | ErrCode::InvalidAppSecret
                | ErrCode::IpNotWhitelisted
                | ErrCode::InvalidGrantType),
            ) => {
                let fix = match code {
                    ErrCode::InvalidAppid => "check [wechat] appid",
                    ErrCode::InvalidAppSecret => "check [wechat] secret (env WECHAT_APP_SECRET)",
                    ErrCode::IpNotWhitelisted => {
                        "add this server's IP address to the account's IP whitelist in the WeChat console"
                    }
                    _ => "check [wechat] api_base",
                };
                tracing::error!(errcode = code.code(), "WeChat refused this gateway's credentials: {fix}");
                page(
                    500,
                    Text { zh: "网站配置错误", en: "The site is misconfigured" },
                    Text {
                        zh: "微信登录暂时不可用，网站管理员已收到通知。",
                        en: "WeChat login is unavailable; the site's operator has been told.",
                    },
                    Some(&format!("errcode {}", code.code())),
                    None,
                )
            }
            Some(ErrCode::DailyQuotaReached | ErrCode::TooFrequent) => page(
                503,
                Text { zh: "请稍后再试", en: "Please try again later" },
                Text { zh: "登录请求过多。", en: "Too many logins right now." },
                None,
                Some((&retry, again)),
            )
            .with_header("Retry-After", "60".into()),
            _ if matches!(e, SnsError::Transport(_)) => page(
                503,
                Text { zh: "微信暂时无法访问", en: "WeChat is not reachable" },
                Text { zh: "请稍后重试。", en: "Please try again in a moment." },
                None,
                Some((&retry, again)),
            )
            .with_header("Retry-After", "5".into()),
            _ => page(
                502,
                Text { zh: "微信登录失败", en: "WeChat login failed" },
                Text { zh: "请重试。", en: "Please try again." },
                errcode.map(|c| format!("errcode {c}")).as_deref(),
                Some((&retry, again)),
            ),
        }
    }

    fn set_cookie(&self, name: &str, value: String, max_age_secs: u64) -> String {
        Cookie::build((name.to_owned(), value))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.config.gateway.secure_cookies())
            .max_age(cookie::time::Duration::seconds(max_age_secs as i64))
            .build()
            .to_string()
    }

    fn remove_cookie(&self, name: &str) -> String {
        self.set_cookie(name, String::new(), 0)
    }
}

fn login_required_json(login_url: &str) -> Reply {
    Reply::json(
        401,
        &serde_json::json!({"error": "login_required", "login_url": login_url}),
    )
}

/// Whether the client is a script (XHR/fetch) that can't follow a redirect to WeChat.
fn wants_json(req: &RequestParts<'_>) -> bool {
    req.x_requested_with
        .is_some_and(|v| v.eq_ignore_ascii_case("XMLHttpRequest"))
        || req
            .accept
            .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"))
}

/// The route below `prefix` (`/callback`, …), when `path` is under it.
fn route_under<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    match path.strip_prefix(prefix)? {
        "" => Some("/"),
        rest if rest.starts_with('/') => Some(rest),
        _ => None,
    }
}

/// The gate's cookies in a request's `Cookie` header.
struct GateCookies<'a> {
    session: Option<&'a str>,
    states: Vec<(&'a str, &'a str)>,
}

impl<'a> GateCookies<'a> {
    fn parse(header: Option<&'a str>) -> Self {
        let mut found = GateCookies { session: None, states: Vec::new() };
        for (name, value) in cookie_pairs(header) {
            if name == SESSION_COOKIE {
                found.session.get_or_insert(value);
            } else if name.starts_with(STATE_COOKIE_PREFIX) && found.states.len() < 32 {
                found.states.push((name, value));
            }
        }
        found
    }
}

fn cookie_pairs(header: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    Cookie::split_parse(header.unwrap_or("")).filter_map(|c| {
        let c = c.ok()?;
        Some((c.name_raw()?, c.value_raw()?))
    })
}

fn is_gate_cookie(name: &str) -> bool {
    name == SESSION_COOKIE || name.starts_with(STATE_COOKIE_PREFIX)
}

/// The `Cookie` header without the gate's own cookies (session and state),
/// other cookies kept byte for byte; `None` when nothing is left.
pub fn strip_gate_cookies(header: Option<&str>) -> Option<String> {
    let kept: Vec<&str> = header?
        .split(';')
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("").trim();
            !pair.is_empty() && !is_gate_cookie(name)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}
