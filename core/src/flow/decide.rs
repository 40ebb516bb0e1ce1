//! The pure decisions: a request in, a [`Decision`] out, no IO. The
//! canonical path, the gate's routes, sessions that pass, and logins to start.

use super::policy;
use super::*;
use crate::config::{Policy, Preflight};

/// `400` for a path with no safe canonical form ([`crate::path`]).
pub(super) fn bad_path(e: crate::path::PathError, lang: Lang, brand: &Branding) -> Reply {
    tracing::info!(reason = %e, "refused a request path");
    crate::metrics::count_refused("bad_path");
    Notice::BadPath { problem: e }.reply(lang, brand)
}

pub(super) fn service_unavailable_json() -> Reply {
    ApiError::unavailable().reply()
}

pub(super) fn login_required_json(login_url: &str) -> Reply {
    ApiError::login_required(login_url.to_owned()).reply()
}

/// A login's start: the authorize (or qrconnect) URL and the `Set-Cookie`
/// values (its state cookie, and the removal of dead or surplus ones).
pub(super) struct LoginStart {
    pub(super) authorize_url: String,
    pub(super) set_cookies: Vec<String>,
}

impl LoginStart {
    /// The browser's answer: `302` to WeChat with the cookies.
    pub(super) fn redirect(self) -> Reply {
        self.with_cookies(Reply::redirect(self.authorize_url.clone()))
    }

    /// `reply` with this start's cookies.
    pub(super) fn with_cookies(&self, mut reply: Reply) -> Reply {
        for cookie in &self.set_cookies {
            reply = reply.with_header("Set-Cookie", cookie.clone());
        }
        reply
    }
}

/// The single value of a query parameter; `None` when absent or repeated.
/// Whether the browser is WeCom's own (its User-Agent says `wxwork`).
pub(super) fn is_wecom_browser(user_agent: Option<&str>) -> bool {
    user_agent.is_some_and(|ua| ua.contains("wxwork"))
}

/// The WeCom login for this browser: the in-app authorization in WeCom's
/// browser, the web QR login elsewhere.
pub(super) fn wecom_login(user_agent: Option<&str>) -> LoginApp {
    if is_wecom_browser(user_agent) {
        LoginApp::WeCom
    } else {
        LoginApp::WecomWeb
    }
}

pub(super) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let mut found = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k == name && found.replace(v).is_some() {
            return None;
        }
    }
    found.map(|v| v.into_owned())
}

/// Whether the client is a script (XHR/fetch) that can't follow a redirect to WeChat.
pub(super) fn wants_json(req: &RequestParts<'_>) -> bool {
    req.x_requested_with
        .is_some_and(|v| v.eq_ignore_ascii_case("XMLHttpRequest"))
        || req
            .accept
            .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"))
}

impl Gate {
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
                Decision::Reply(api::push(PushAnswer::TooLarge))
            }
            (Some(Route::Push), "POST") => Decision::Call(Call {
                kind: CallKind::Push {
                    query: req.query.map(str::to_owned),
                    body: body.to_vec(),
                },
                lang,
            }),
            (Some(Route::Exchange), "POST") if body.len() > MAX_EXCHANGE_BODY_BYTES => {
                Decision::Reply(
                    ApiError::new(413, ErrorName::InvalidRequest)
                        .with_description("at most 4096 bytes of JSON")
                        .reply(),
                )
            }
            (Some(Route::Exchange), "POST") => self.decide_exchange(req, body),
            _ => return self.decide(req),
        };
        if let Decision::Reply(reply) = &decision {
            crate::metrics::count_reply(reply.status);
        }
        decision
    }

    /// The answer of the `auth` route (nginx `auth_request`): `req` is the
    /// *original* request (its method and URI from `X-Original-Method` and
    /// `X-Original-URI`, its headers). `202` when it may pass, with the
    /// identity headers (`X-WeChat-OpenID`, …) and any `Set-Cookie` to
    /// forward; `403` (`access_denied`) when a logged-in user is kept out by
    /// the route's policy; `401` with the login JSON when it needs a login (nginx then
    /// asks the gateway itself for the right answer: a 302, the 401 JSON or
    /// a page). No IO: on a `followers` route whose follow state this gate
    /// does not know yet, `503` (`temporarily_unavailable`); the `auth`
    /// route itself ([`Gate::decide`]) makes that call.
    pub fn decide_auth(&self, req: &RequestParts<'_>) -> Reply {
        match self.auth_decision(req) {
            Decision::Reply(reply) => reply,
            Decision::Call(_) | Decision::Pass(_) | Decision::NeedsBody { .. } => {
                service_unavailable_json()
            }
        }
    }

    /// [`Gate::decide_auth`], with the follow check of a `followers` route
    /// as a [`Decision::Call`] (answered `202` or `403`).
    fn auth_decision(&self, req: &RequestParts<'_>) -> Decision {
        let login_url =
            |path: &str| self.login_url(path, self.config.wechat.scope, LinkForm::Absolute);
        let canonical = match crate::path::canonical_path(req.path) {
            Ok(path) => path,
            // nginx reads any status but 2xx, 401 and 403 as an error (500).
            Err(e) => {
                let mut reply = bad_path(e, Lang::En, &self.branding);
                reply.status = 403;
                return Decision::Reply(reply);
            }
        };
        let req = &RequestParts {
            path: &canonical,
            ..*req
        };
        if self.route_of(req.path).is_some() {
            // The gate's own routes are proxied to it, never auth-requested.
            return Decision::Reply(login_required_json(&login_url("/")));
        }
        let reply = match self.decide(req) {
            Decision::Pass(pass) => {
                let mut reply = api::accepted();
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
            // Logged in, but the route's policy keeps this user out: `403`,
            // which nginx passes on as "not allowed" (not "log in").
            Decision::Reply(reply) if reply.status == 403 => policy::not_allowed_json(),
            Decision::Call(Call {
                kind:
                    CallKind::FollowCheck {
                        identity,
                        again,
                        json,
                        ..
                    },
                lang,
            }) => {
                return Decision::Call(Call {
                    kind: CallKind::FollowCheck {
                        identity,
                        again,
                        json,
                        auth: true,
                    },
                    lang,
                })
            }
            Decision::Reply(_) | Decision::Call(_) | Decision::NeedsBody { .. } => {
                login_required_json(&login_url(req.path))
            }
        };
        Decision::Reply(reply)
    }

    /// The session in the request's cookies, if it opens and has neither
    /// idled out nor been logged out at `now`.
    pub(super) fn live_session(&self, cookies: &GateCookies<'_>, now: u64) -> Option<Arc<Session>> {
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
        .map(|s| Identity::clone(&s.identity))
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
            Err(e) => return Decision::Reply(bad_path(e, lang(), &self.branding)),
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
            return self.route(
                route,
                req,
                &cookies,
                session.map(Arc::unwrap_or_clone),
                now,
                lang(),
            );
        }
        if let Some(reply) = self.verify_file(req) {
            return Decision::Reply(reply);
        }
        let chosen = self.route_for(req.path, req.method, req.policy);
        let pass = |identity: Option<&Arc<Session>>| {
            Decision::Pass(Pass {
                set_cookie: identity.and_then(|s| self.touch(s, now)),
                identity: identity.map(|s| s.identity.clone()),
                upstream_cookie: strip_gate_cookies(
                    req.cookie,
                    &self.config.gateway.session_cookie_name,
                ),
                upstream_path: upstream_path.clone(),
                route: chosen.index,
            })
        };
        if chosen.preflight == Preflight::Pass && policy::is_preflight(req) {
            return pass(None);
        }
        let needs_userinfo = *chosen.policy == Policy::Userinfo;
        match (&session, chosen.policy) {
            (Some(s), Policy::Allow(list)) => {
                if list.allows(&s.identity) {
                    return pass(Some(s));
                }
                return Decision::Reply(self.not_allowed(req, &s.identity, lang()));
            }
            // Following the Official Account says nothing of a WeCom member.
            (Some(s), Policy::Followers) if s.identity.wecom.is_some() => {
                return Decision::Reply(self.not_allowed(req, &s.identity, lang()));
            }
            (Some(s), Policy::Followers) => {
                // The same request again once the follow state is known
                // (a 307 keeps its method and body).
                let again = match req.query {
                    Some(q) if !q.is_empty() => format!("{}?{q}", req.path),
                    _ => req.path.to_owned(),
                };
                let again = safe_return_path(&again, "", prefix).unwrap_or_else(|| "/".into());
                return self
                    .followers_decision(req, &s.identity, again, false, now, lang())
                    .unwrap_or_else(|| pass(Some(s)));
            }
            // A WeCom login has no WeChat profile to ask for.
            (Some(s), _)
                if !needs_userinfo
                    || s.identity.wecom.is_some()
                    || Scope::granted_includes_userinfo(&s.identity.scope) =>
            {
                return pass(Some(s));
            }
            (None, Policy::Public) => return pass(None),
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

    pub(super) fn is_public(&self, path: &str) -> bool {
        self.config
            .gateway
            .public_paths
            .iter()
            .any(|p| path.starts_with(p.as_str()))
    }

    pub(super) fn needs_userinfo(&self, path: &str) -> bool {
        self.config
            .gateway
            .userinfo_paths
            .iter()
            .any(|p| path.starts_with(p.as_str()))
    }

    pub(super) fn idle_expired(&self, session: &Session, now: u64) -> bool {
        self.config
            .gateway
            .session_idle
            .is_some_and(|idle| now.saturating_sub(session.seen_at) >= idle.as_secs())
    }

    /// With an idle timeout, re-seals a session seen more than a quarter of
    /// that timeout ago.
    pub(super) fn touch(&self, session: &Session, now: u64) -> Option<String> {
        let idle = self.config.gateway.session_idle?.as_secs();
        (now.saturating_sub(session.seen_at) >= idle / 4).then(|| {
            let mut fresh = session.clone();
            fresh.seen_at = now;
            self.session_cookie(&fresh, now)
        })
    }

    pub(super) fn session_cookie(&self, session: &Session, now: u64) -> String {
        let max_age = session.expires_at.saturating_sub(now);
        self.set_cookie(
            &self.config.gateway.session_cookie_name,
            seal_session(&self.sealer, session),
            max_age,
        )
    }

    /// The answer to a request that needs a login.
    pub(super) fn login_required(
        &self,
        req: &RequestParts<'_>,
        return_to: &str,
        scope: Scope,
        cookies: &GateCookies<'_>,
        now: u64,
        lang: Lang,
    ) -> Reply {
        if wants_json(req) {
            return login_required_json(&self.login_url(return_to, scope, LinkForm::Absolute));
        }
        // WeCom's browser says both `wxwork` and `MicroMessenger`.
        if self.config.wecom.is_some() && is_wecom_browser(req.user_agent) {
            return self.start_login_with(return_to, scope, LoginApp::WeCom, cookies, now);
        }
        if self.config.has_wechat()
            && req
                .user_agent
                .is_some_and(|ua| ua.contains("MicroMessenger"))
        {
            return self.start_login(return_to, scope, cookies, now);
        }
        // A phone's own browser can't scan a code on its own screen: it
        // gets the page to open in WeChat, whatever the desktop login.
        let phone = req.user_agent.is_some_and(|ua| {
            ["Mobile", "Android", "iPhone", "iPad"]
                .iter()
                .any(|m| ua.contains(m))
        });
        match self.config.gateway.desktop_login {
            // A phone can't scan its own screen: open the page in WeCom
            // (or still go to the web login, scanned with another phone).
            DesktopLogin::WecomQr if phone && !self.config.has_wechat() => {
                return Notice::OpenInWecom {
                    link: &format!("{}{}", self.config.gateway.origin(), return_to),
                    login: &self.login_url(return_to, scope, LinkForm::Path),
                }
                .reply(lang, &self.branding);
            }
            DesktopLogin::WecomQr if !phone => {
                return self.start_login_with(return_to, scope, LoginApp::WecomWeb, cookies, now)
            }
            _ if phone => {}
            DesktopLogin::SceneQr => {
                return crate::pages::scene_qr_page(
                    lang,
                    &self.config.gateway.prefix,
                    return_to,
                    &self.branding,
                )
            }
            DesktopLogin::Qrconnect => {
                let rd: String = form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
                let login = Route::Login.path(&self.config.gateway.prefix);
                let href = format!("{login}?rd={rd}&app=open");
                return Notice::QrconnectLogin { login: &href }.reply(lang, &self.branding);
            }
            // A phone on a site with WeChat too: open the page in WeChat.
            DesktopLogin::Notice | DesktopLogin::WecomQr => {}
        }
        Notice::OpenInWeChat {
            link: &format!("{}{}", self.config.gateway.origin(), return_to),
            login: &self.login_url(return_to, scope, LinkForm::Path),
        }
        .reply(lang, &self.branding)
    }

    /// `prefix/login?rd=…[&scope=snsapi_userinfo]`, absolute or relative.
    pub(super) fn login_url(&self, return_to: &str, scope: Scope, form: LinkForm) -> String {
        let rd: String = form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
        let origin = match form {
            LinkForm::Absolute => self.config.gateway.origin(),
            LinkForm::Path => String::new(),
        };
        let scope = if !self.config.has_wechat() {
            "&app=wecom".to_owned()
        } else if scope == self.config.wechat.scope {
            String::new()
        } else {
            format!("&scope={}", scope.as_str())
        };
        let login = Route::Login.path(&self.config.gateway.prefix);
        format!("{origin}{login}?rd={rd}{scope}")
    }

    /// 302 to WeChat's authorize page with a new state cookie; expires the
    /// oldest state cookies so that at most [`MAX_STATE_COOKIES`] remain.
    pub(super) fn start_login(
        &self,
        return_to: &str,
        scope: Scope,
        cookies: &GateCookies<'_>,
        now: u64,
    ) -> Reply {
        self.start_login_with(return_to, scope, LoginApp::OfficialAccount, cookies, now)
    }

    /// [`Gate::start_login`]; with [`LoginApp::Website`]: through the Open Platform website
    /// app's QR login (`connect/qrconnect`) instead of web authorization.
    pub(super) fn start_login_with(
        &self,
        return_to: &str,
        scope: Scope,
        app: LoginApp,
        cookies: &GateCookies<'_>,
        now: u64,
    ) -> Reply {
        let callback = self.config.gateway.callback_url();
        self.start_login_to(return_to, scope, app, &callback, cookies, now)
            .redirect()
    }

    /// [`Gate::start_login_with`] with WeChat sending the browser back to
    /// `callback` (the gate's own, or a front end's page).
    pub(super) fn start_login_to(
        &self,
        return_to: &str,
        scope: Scope,
        app: LoginApp,
        callback: &str,
        cookies: &GateCookies<'_>,
        now: u64,
    ) -> LoginStart {
        let wechat = &self.config.wechat;
        let state = new_state();
        crate::metrics::LOGINS_STARTED
            .with_label_values(&[self.config.site_label()])
            .inc();
        let authorize_url = match (&wechat.open, &self.config.wecom, app) {
            (Some(open), _, LoginApp::Website) => {
                qrconnect_url(wechat.open_base.as_str(), &open.appid, callback, &state)
            }
            (_, Some(wecom), LoginApp::WeCom) => {
                crate::wecom::authorize_url(wecom, callback, wecom.scope, &state)
            }
            (_, Some(wecom), LoginApp::WecomWeb) => {
                crate::wecom::web_login_url(wecom, callback, &state)
            }
            _ => authorize_url(
                wechat.open_base.as_str(),
                &wechat.appid,
                callback,
                scope,
                &state,
                AuthorizeOptions {
                    force_popup: self.force_popup_for(return_to),
                    connect_redirect: wechat.connect_redirect,
                },
            ),
        };
        let mut set_cookies = vec![self.set_cookie(
            &state_cookie_name(&state),
            seal_state(&self.sealer, &state, return_to, app, now),
            STATE_LIFETIME_SECS,
        )];
        let mut live: Vec<(&str, u64)> = Vec::new();
        for (name, value) in &cookies.states {
            let state = &name[STATE_COOKIE_PREFIX.len()..];
            match open_state(&self.sealer, state, value, now) {
                Some(opened) if is_valid_state(state) => live.push((name, opened.expires_at)),
                _ => set_cookies.push(self.remove_cookie(name)),
            }
        }
        live.sort_by_key(|l| std::cmp::Reverse(l.1));
        for (name, _) in live.iter().skip(MAX_STATE_COOKIES - 1) {
            set_cookies.push(self.remove_cookie(name));
        }
        LoginStart {
            authorize_url,
            set_cookies,
        }
    }

    /// The answer when the application behind the gate fails (refused,
    /// reset, timed out) for a request the gate let through: `502` with
    /// `Retry-After: 5`, a page (zh/en) or JSON (`temporarily_unavailable`)
    /// for scripts, as the login answers are. Counted as
    /// `wechat_gateway_requests_total{outcome="upstream_error"}`.
    pub fn upstream_failed(&self, req: &RequestParts<'_>) -> Reply {
        crate::metrics::REQUESTS
            .with_label_values(&["upstream_error"])
            .inc();
        let reply = if wants_json(req) {
            ApiError::new(502, ErrorName::TemporarilyUnavailable)
                .with_description("the application behind the gate did not answer")
                .reply()
        } else {
            let lang = Lang::choose(self.config.gateway.language, req.accept_language);
            Notice::UpstreamDown.reply(lang, &self.branding)
        };
        reply.with_header("Retry-After", "5".into())
    }

    /// The gate's route at a canonical path, if any.
    pub(super) fn route_of(&self, path: &str) -> Option<Route> {
        let push_path = self
            .config
            .wechat
            .push_token
            .is_some()
            .then_some(self.config.gateway.push_path.as_str());
        Route::parse(path, &self.config.gateway.prefix, push_path)
    }

    /// The decision for one of the gate's own routes.
    pub(super) fn route(
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
            let reply = ApiError::new(405, ErrorName::InvalidRequest)
                .with_description(if route == Route::Exchange {
                    "POST {\"code\", \"state\"} as JSON"
                } else {
                    "method not allowed"
                })
                .reply();
            return Decision::Reply(reply.with_header("Allow", allowed.join(", ")));
        }
        let reply = match route {
            Route::QrNew | Route::QrStatus | Route::QrImage | Route::QrConfirm => {
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
            Route::JssdkConfig => {
                let url = query_param(req.query, "url").unwrap_or_default();
                let origin = self.config.gateway.public_url.origin();
                return match crate::jssdk::page_url(&url, &origin) {
                    Ok(page) => Decision::Call(Call {
                        kind: CallKind::JssdkConfig {
                            url: page.to_owned(),
                        },
                        lang,
                    }),
                    Err(problem) => Decision::Reply(
                        ApiError::new(400, ErrorName::InvalidRequest)
                            .with_description(problem)
                            .reply(),
                    ),
                };
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
                return self.auth_decision(&original);
            }
            Route::AuthorizeUrl => {
                let rd = self.return_param(req.query).unwrap_or_else(|| "/".into());
                let scope = query_param(req.query, "scope")
                    .and_then(|s| Scope::parse(&s))
                    .unwrap_or(self.config.wechat.scope);
                // The front end's own page is the redirect_uri.
                let redirect_uri = format!("{}{rd}", self.config.gateway.origin());
                let started = self.start_login_to(
                    &rd,
                    scope,
                    LoginApp::OfficialAccount,
                    &redirect_uri,
                    cookies,
                    now,
                );
                started.with_cookies(api::authorize_url(&started.authorize_url))
            }
            Route::Healthz => api::healthz(),
            Route::Callback => {
                if let Some(limited) = self.login_limited(req, AnswerAs::Page, lang) {
                    return Decision::Reply(limited);
                }
                return match self.check_callback(req.query, cookies, session, now, AnswerAs::Page) {
                    Ok(pending) => Decision::Call(Call {
                        kind: CallKind::Login(pending),
                        lang,
                    }),
                    Err(refusal) => Decision::Reply(self.callback_refused(refusal, lang)),
                };
            }
            Route::Login => {
                let rd = self.return_param(req.query).unwrap_or_else(|| "/".into());
                let scope = query_param(req.query, "scope")
                    .and_then(|s| Scope::parse(&s))
                    .unwrap_or(self.config.wechat.scope);
                let app = match query_param(req.query, "app").as_deref() {
                    Some("open") if self.config.wechat.open.is_some() => LoginApp::Website,
                    Some("wecom") if self.config.wecom.is_some() => wecom_login(req.user_agent),
                    _ if !self.config.has_wechat() => wecom_login(req.user_agent),
                    _ => LoginApp::OfficialAccount,
                };
                self.start_login_with(&rd, scope, app, cookies, now)
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
                    let call = match (check, refresh) {
                        (true, _) => Some(ProfileCall::Check),
                        (false, true) => Some(ProfileCall::Refresh),
                        (false, false) => None,
                    };
                    if let Some(call) = call {
                        let kind = CallKind::Profile { session, call };
                        return Decision::Call(Call { kind, lang });
                    }
                    api::identity(&session.identity, None)
                }
                None => login_required_json(&self.login_url(
                    "/",
                    self.config.wechat.scope,
                    LinkForm::Absolute,
                )),
            },
            Route::Unknown => Notice::NotFound.reply(lang, &self.branding),
        };
        Decision::Reply(reply)
    }

    /// Ends `session` (if any) and sends the browser to `to`: a
    /// [`Decision::Call`] that deletes its tokens and tells the other
    /// instances, or the redirect at once without a session.
    pub(super) fn logout_to(
        &self,
        session: Option<Session>,
        to: String,
        now: u64,
        lang: Lang,
    ) -> Decision {
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
            session.map(Arc::unwrap_or_clone),
            to,
            now,
            Lang::choose(self.config.gateway.language, None),
        )
    }

    pub(super) fn logged_out(&self, to: String) -> Reply {
        Reply::redirect(to).with_header(
            "Set-Cookie",
            self.remove_cookie(&self.config.gateway.session_cookie_name),
        )
    }

    /// The `rd` query parameter as a safe return path; `None` when absent or refused.
    pub(super) fn return_param(&self, query: Option<&str>) -> Option<String> {
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
}
