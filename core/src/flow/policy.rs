//! Who may enter which path: the route a request falls under (the first
//! `[[route]]` that matches, else the default route of `public_paths` and
//! `userinfo_paths`), CORS preflights, the domain verification files, and
//! the `403` for a logged-in user a policy keeps out (README
//! "Routes and policies").

use super::*;
use crate::config::{Policy, Preflight};

/// The route a request falls under.
pub(super) struct Chosen<'a> {
    /// The index of its `[[route]]`; `None`: the default route.
    pub(super) index: Option<usize>,
    pub(super) policy: &'a Policy,
    pub(super) preflight: Preflight,
}

const PUBLIC: Policy = Policy::Public;
const LOGIN: Policy = Policy::Login;
const USERINFO: Policy = Policy::Userinfo;
const FOLLOWERS: Policy = Policy::Followers;

/// A policy picked by name instead of by the request's path: one of
/// `public`, `login`, `userinfo`, `followers`, or the `name` of a
/// `[[route]]` (its policy and preflight; an `allow` list is a named
/// route). Made by [`Gate::named_policy`], for requests to that gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamedPolicy(Named);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Named {
    Public,
    Login,
    Userinfo,
    Followers,
    Route(usize),
}

impl Gate {
    /// The policy called `name`: `public`, `login`, `userinfo`,
    /// `followers`, or a `[[route]]`'s `name`.
    ///
    /// Errors: the text for an operator when there is none, listing the
    /// names there are (`allow` needs a list: a named route holds it).
    pub fn named_policy(&self, name: &str) -> Result<NamedPolicy, String> {
        let named = match name {
            "public" => Named::Public,
            "login" => Named::Login,
            "userinfo" => Named::Userinfo,
            "followers" => {
                self.followers_in_use
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Named::Followers
            }
            _ => match self
                .config
                .routes
                .iter()
                .position(|r| r.name.as_deref() == Some(name))
            {
                Some(index) => Named::Route(index),
                None => {
                    let routes: Vec<&str> = self
                        .config
                        .routes
                        .iter()
                        .filter_map(|r| r.name.as_deref())
                        .collect();
                    let hint = if name == "allow" {
                        ": an allow list is a [[route]] with a name, policy = \"allow\" and its ids"
                    } else {
                        ""
                    };
                    return Err(format!(
                        "no policy {name:?}{hint}; use public, login, userinfo, followers{}{}",
                        if routes.is_empty() {
                            ""
                        } else {
                            " or a [[route]] name: "
                        },
                        routes.join(", ")
                    ));
                }
            },
        };
        Ok(NamedPolicy(named))
    }

    /// The route of a request with this canonical path and method, or the
    /// one its host picked.
    pub(super) fn route_for(
        &self,
        path: &str,
        method: &str,
        named: Option<NamedPolicy>,
    ) -> Chosen<'_> {
        let builtin = |policy| Chosen {
            index: None,
            policy,
            preflight: Preflight::Pass,
        };
        match named.map(|n| n.0) {
            None => {}
            Some(Named::Public) => return builtin(&PUBLIC),
            Some(Named::Login) => return builtin(&LOGIN),
            Some(Named::Userinfo) => return builtin(&USERINFO),
            Some(Named::Followers) => return builtin(&FOLLOWERS),
            Some(Named::Route(index)) => {
                return match self.config.routes.get(index) {
                    Some(route) => Chosen {
                        index: Some(index),
                        policy: &route.policy,
                        preflight: route.preflight,
                    },
                    // Made for another gate: no route of this one is assumed.
                    None => builtin(&LOGIN),
                };
            }
        }
        if let Some((index, route)) = self
            .config
            .routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(path, method))
        {
            return Chosen {
                index: Some(index),
                policy: &route.policy,
                preflight: route.preflight,
            };
        }
        let policy = if self.needs_userinfo(path) {
            &USERINFO
        } else if self.is_public(path) {
            &PUBLIC
        } else {
            &LOGIN
        };
        Chosen {
            index: None,
            policy,
            preflight: Preflight::Pass,
        }
    }

    /// Whether a login returning to `return_to` (a path, maybe with a
    /// query) asks for `forcePopup=true`: its route's `force_popup`, else
    /// `[wechat] force_popup`.
    pub(super) fn force_popup_for(&self, return_to: &str) -> bool {
        let path = return_to.split(['?', '#']).next().unwrap_or("/");
        let Ok(path) = crate::path::canonical_path(path) else {
            return self.config.wechat.force_popup;
        };
        self.route_for(&path, "GET", None)
            .index
            .and_then(|i| self.config.routes[i].force_popup)
            .unwrap_or(self.config.wechat.force_popup)
    }

    /// The answer for one of `[gateway] verify_files`: `GET` or `HEAD` of
    /// `/<name>` exactly, `200 text/plain` with the file's content.
    pub(super) fn verify_file(&self, req: &RequestParts<'_>) -> Option<Reply> {
        if !matches!(req.method, "GET" | "HEAD") {
            return None;
        }
        let name = req.path.strip_prefix('/')?;
        let content = self.config.gateway.verify_files.get(name)?;
        Some(
            Reply::new(200, "text/plain; charset=utf-8", content.clone())
                .with_header("Cache-Control", "no-cache".into()),
        )
    }

    /// The `403` for a logged-in user the route's policy keeps out: a page
    /// naming who is logged in with a logout link, or `403` JSON
    /// (`access_denied`) for a script.
    pub(super) fn not_allowed(
        &self,
        req: &RequestParts<'_>,
        identity: &Identity,
        lang: Lang,
    ) -> Reply {
        tracing::info!(openid = %self.log_id(&identity.openid), path = req.path, "refused by the route's policy");
        if wants_json(req) {
            return not_allowed_json();
        }
        let who = match &identity.nickname {
            Some(name) => format!("{name} · openid {}", identity.openid),
            None => format!("openid {}", identity.openid),
        };
        let logout = format!("{}?rd=%2F", Route::Logout.path(&self.config.gateway.prefix));
        Notice::NotAllowed {
            who: &who,
            logout: &logout,
        }
        .reply(lang, &self.branding)
    }
}

/// `403` JSON (`access_denied`): logged in, but not allowed here.
pub(super) fn not_allowed_json() -> Reply {
    ApiError::new(403, ErrorName::AccessDenied)
        .with_description("this account may not use this page")
        .reply()
}

/// Whether the request is a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method` (the Fetch standard's "CORS-preflight
/// request"). A browser sends no cookies on one.
pub(super) fn is_preflight(req: &RequestParts<'_>) -> bool {
    req.method == "OPTIONS"
        && req.origin.is_some_and(|o| !o.is_empty())
        && req
            .access_control_request_method
            .is_some_and(|m| !m.is_empty())
}

/// The most users whose follow state one instance keeps in memory.
pub(super) const MAX_KNOWN_FOLLOWERS: usize = 100_000;

/// How long a user found not to follow the Official Account is kept so
/// (seconds): short, so following and trying again works at once, long
/// enough that reloading the page is not a call to WeChat each time.
pub(super) const FOLLOW_RECHECK_SECS: u64 = 10;

impl Gate {
    /// Until when (unix seconds) what WeChat said at `now` of a user's
    /// following holds: `followers_cache_secs` for a follower,
    /// [`FOLLOW_RECHECK_SECS`] for anyone else.
    fn follow_known_until(&self, follows: bool, now: u64) -> u64 {
        now + if follows {
            self.config.gateway.followers_cache.as_secs()
        } else {
            FOLLOW_RECHECK_SECS
        }
    }

    /// Keeps what WeChat said of `openid`'s following in the store for
    /// every instance, until `followers_cache_secs` (a follower) or
    /// [`FOLLOW_RECHECK_SECS`] (not one) from `now`; that end.
    async fn keep_follow_status(&self, openid: &str, follows: bool, now: u64) -> u64 {
        let until = self.follow_known_until(follows, now);
        if let Err(e) = self
            .coordination
            .keep_follow_status(openid, follows, until)
            .await
        {
            tracing::warn!(error = %e, "could not share a follow state");
        }
        until
    }

    /// Whether a `followers` policy can decide a request here: a
    /// `[[route]]` has it, or a host named it ([`Gate::named_policy`]).
    pub(super) fn followers_in_use(&self) -> bool {
        self.followers_in_use
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What WeChat said of a scanner's following, in this instance's
    /// memory, and (via [`Gate::keep_follow_status`]) in the store for the
    /// other instances when a `followers` policy is in use; else that
    /// write would be read by nobody.
    pub(super) async fn remember_follower(&self, openid: &str, follows: bool, now: u64) {
        let until = if self.followers_in_use() {
            self.keep_follow_status(openid, follows, now).await
        } else {
            self.follow_known_until(follows, now)
        };
        self.followers.insert(openid.to_owned(), follows, until);
    }

    /// A `followers` route for a logged-in user: pass, `403`, or (follow
    /// state unknown here) a [`CallKind::FollowCheck`]. `again` is where
    /// the browser goes once it is known.
    pub(super) fn followers_decision(
        &self,
        req: &RequestParts<'_>,
        identity: &Arc<Identity>,
        again: String,
        auth: bool,
        now: u64,
        lang: Lang,
    ) -> Option<Decision> {
        match self.followers.get(identity.openid.as_str(), now) {
            Some(true) => None,
            Some(false) if auth => Some(Decision::Reply(not_allowed_json())),
            Some(false) => Some(Decision::Reply(self.not_following(
                identity,
                &again,
                wants_json(req),
                lang,
            ))),
            None => Some(Decision::Call(Call {
                kind: CallKind::FollowCheck {
                    identity: identity.clone(),
                    again,
                    json: wants_json(req),
                    auth,
                },
                lang,
            })),
        }
    }

    /// Finds out whether the user follows the Official Account (the store,
    /// else `cgi-bin/user/info`), keeps it here and in the store, and
    /// answers: a `307` back to the page (or, for the `auth` route, `202`
    /// with the identity headers) when they do, else `403`. WeChat or the
    /// store out of reach: `503`.
    pub(super) async fn follow_check(
        &self,
        identity: &Identity,
        again: &str,
        json: bool,
        auth: bool,
        lang: Lang,
    ) -> Reply {
        let now = now_unix();
        let openid = identity.openid.as_str();
        let known = self.coordination.follow_status(openid).await.ok().flatten();
        let (follows, until) = match known.filter(|(_, until)| *until > now) {
            Some(known) => known,
            None => match self.basic_token.follower(openid, now).await {
                Ok(follower) => (
                    follower.subscribed,
                    self.keep_follow_status(openid, follower.subscribed, now)
                        .await,
                ),
                Err(e) => {
                    tracing::warn!(error = %e, openid = %self.log_id(openid), "could not ask WeChat whether the user follows the account");
                    return if json || auth {
                        super::decide::service_unavailable_json()
                    } else {
                        Notice::WeChatUnreachable { retry: again }.reply(lang, &self.branding)
                    };
                }
            },
        };
        // Until the same moment as in the store: no instance keeps it longer.
        self.followers.insert(openid.to_owned(), follows, until);
        match (follows, auth) {
            (true, true) => {
                let mut reply = api::accepted();
                for (name, value) in identity.upstream_headers() {
                    reply = reply.with_header(name, value.into_owned());
                }
                reply
            }
            // The same request again, method and body kept: it passes now.
            (true, false) => Reply::new(307, "text/plain; charset=utf-8", String::new())
                .with_header("Location", again.to_owned())
                .with_header("Cache-Control", "no-store".into()),
            (false, true) => not_allowed_json(),
            (false, false) => self.not_following(identity, again, json, lang),
        }
    }

    /// The `403` for a user who does not follow the Official Account: a
    /// page naming them with "try again", or `403` JSON.
    fn not_following(&self, identity: &Identity, again: &str, json: bool, lang: Lang) -> Reply {
        if json {
            return ApiError::new(403, ErrorName::AccessDenied)
                .with_description("follow the Official Account to use this page")
                .reply();
        }
        let who = format!("openid {}", identity.openid);
        Notice::NotFollowing { who: &who, again }.reply(lang, &self.branding)
    }
}
