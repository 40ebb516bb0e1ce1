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
        Ok(Gate {
            config,
            sealer,
            sns,
        })
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
        if req
            .user_agent
            .is_some_and(|ua| ua.contains("MicroMessenger"))
        {
            return self.start_login(return_to, cookies, now);
        }
        page(
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
                &self.login_url(return_to, false),
                Text {
                    zh: "已在微信中？继续登录",
                    en: "In WeChat already? Continue",
                },
            )),
        )
    }

    /// `prefix/login?rd=…`, absolute or relative.
    fn login_url(&self, return_to: &str, absolute: bool) -> String {
        let rd: String = form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
        let origin = if absolute {
            self.config.gateway.origin()
        } else {
            String::new()
        };
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
        }
    }

    /// The `rd` query parameter as a safe return path, `/` when absent or refused.
    fn return_param(&self, query: Option<&str>) -> String {
        let rd = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .find(|(k, _)| k == "rd")
            .map(|(_, v)| v.into_owned());
        rd.and_then(|rd| {
            let safe = safe_return_path(
                &rd,
                &self.config.gateway.origin(),
                &self.config.gateway.prefix,
            );
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
                    &self.login_url(&return_to, false),
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
                &self.login_url("/", false),
                Text {
                    zh: "重新登录",
                    en: "Log in again",
                },
            )),
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
                Err(e) => {
                    tracing::warn!(error = %e, "sns/userinfo failed; the session carries the openid only")
                }
            }
        }
        if !is_valid_wechat_id(&identity.openid)
            || identity
                .unionid
                .as_deref()
                .is_some_and(|u| !is_valid_wechat_id(u))
        {
            return Err(SnsError::Malformed(
                "openid or unionid has unexpected characters".into(),
            ));
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
        let again = Text {
            zh: "重新登录",
            en: "Log in again",
        };
        match e.errcode() {
            Some(ErrCode::InvalidCode | ErrCode::CodeExpired | ErrCode::CodeBeenUsed) => page(
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
            ) => {
                let fix = match code {
                    ErrCode::InvalidAppid => "check [wechat] appid",
                    ErrCode::InvalidAppSecret => "check [wechat] secret (env WECHAT_APP_SECRET)",
                    ErrCode::IpNotWhitelisted => {
                        "add this server's IP address to the account's IP whitelist in the WeChat console"
                    }
                    _ => "check [wechat] api_base",
                };
                tracing::error!(
                    errcode = code.code(),
                    "WeChat refused this gateway's credentials: {fix}"
                );
                page(
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
                )
            }
            Some(ErrCode::DailyQuotaReached | ErrCode::TooFrequent) => page(
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
            _ if matches!(e, SnsError::Transport(_)) => page(
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
            _ => page(
                502,
                Text {
                    zh: "微信登录失败",
                    en: "WeChat login failed",
                },
                Text {
                    zh: "请重试。",
                    en: "Please try again.",
                },
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
        let mut found = GateCookies {
            session: None,
            states: Vec::new(),
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::HEADER_OPENID;

    const NOW: u64 = 1_800_000_000;
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
        }
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

    fn logged_in_cookie(g: &Gate) -> String {
        let (state, cookie) = start(g, "/x");
        let q = format!("code=CODE&state={state}");
        let Decision::Exchange(p) =
            g.decide_at(&req("/_wechat/callback", Some(&q), Some(&cookie)), NOW)
        else {
            panic!("expected an exchange")
        };
        let r = g.finish_login(&p, Ok(LoginOutcome::User(identity())), NOW, Duration::ZERO);
        cookie_from(&r, SESSION_COOKIE)
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
            .iter()
            .any(|(n, v)| *n == HEADER_OPENID && v == "oOpenid123"));
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

        let Decision::Exchange(p) = cb(&format!("code=C0DE&state={state}"), Some(&cookie)) else {
            panic!()
        };
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
        let pending = || match g.decide_at(&req("/_wechat/callback", Some(&q), Some(&cookie)), NOW)
        {
            Decision::Exchange(p) => p,
            other => panic!("{other:?}"),
        };
        let wechat = |n: i64| {
            Err(SnsError::WeChat {
                code: ErrCode::from_code(n),
                errmsg: "m".into(),
            })
        };
        let cases: Vec<(Result<LoginOutcome, SnsError>, u16)> = vec![
            (Ok(LoginOutcome::User(identity())), 302),
            (Ok(LoginOutcome::SnapshotUser), 403),
            (wechat(40029), 400),
            (wechat(42003), 400),
            (wechat(40163), 400),
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
            let r = g.finish_login(&pending(), outcome, NOW, Duration::ZERO);
            assert_eq!(r.status, status, "{label}");
            let removed = r.headers.iter().any(|(n, v)| {
                *n == "Set-Cookie"
                    && v.starts_with(&format!("wechat_state_{state}=;"))
                    && v.contains("Max-Age=0")
            });
            assert!(removed, "{label}: state cookie removed");
            if status == 302 {
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
        let r = reply(g.decide_at(
            &req("/_wechat/logout", Some("rd=%2Fbye"), Some(&session)),
            NOW,
        ));
        assert_eq!(r.header("Location"), Some("/bye"));
        assert!(r
            .header("Set-Cookie")
            .unwrap()
            .starts_with("wechat_session=;"));
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
        assert_eq!(open_state(&g.sealer, state, value, NOW).unwrap().0, "/");
        // A path that merely starts like the prefix is an application path.
        assert_eq!(
            reply(g.decide_at(&req("/_wechatx", None, None), NOW)).status,
            302
        );
    }

    #[test]
    fn strip_gate_cookies_keeps_others_byte_for_byte() {
        assert_eq!(strip_gate_cookies(None), None);
        assert_eq!(strip_gate_cookies(Some("wechat_session=a")), None);
        assert_eq!(
            strip_gate_cookies(Some("a=1;b=\"x y\"; wechat_state_q=z;c=")).as_deref(),
            Some("a=1; b=\"x y\"; c=")
        );
    }
}
