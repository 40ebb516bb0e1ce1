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

impl Gate {
    /// The route of a request with this canonical path and method.
    pub(super) fn route_for(&self, path: &str, method: &str) -> Chosen<'_> {
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
