//! The gate's own routes: the URLs under `[gateway] prefix` and the push
//! path, parsed once from a request's canonical path. Every URL the gate
//! writes (redirects, pages' scripts, the confirmation link) comes from
//! [`Route::path`], and no host matches a route string itself.

/// A route of the gate. Paths are the prefix (default `/_wechat`) plus the
/// route's suffix, e.g. `/_wechat/callback`; [`Route::Push`] is at
/// `[gateway] push_path` (default `<prefix>/events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `/callback`: WeChat sends the browser back here with `code` and `state`.
    Callback,
    /// `/login?rd=…[&scope=…][&app=open]`: starts a login.
    Login,
    /// `/logout?rd=…`: ends the session (GET, HEAD or POST).
    Logout,
    /// `/userinfo[?refresh=1|check=1]`: the session's identity as JSON.
    Userinfo,
    /// `/healthz`: the process is alive.
    Healthz,
    /// `/ready`: the configuration is loaded and the store (and, in the
    /// gateway, the upstream) answers.
    Ready,
    /// `/auth`: nginx `auth_request` asks about the original request
    /// (`X-Original-URI`, `X-Original-Method`).
    Auth,
    /// `/exchange` (POST, JSON body): a front end's page hands over its code.
    Exchange,
    /// `/authorize-url?rd=…`: the authorize URL for a front end's own page.
    AuthorizeUrl,
    /// `/qr/new?rd=…`: a scene QR code for this browser.
    QrNew,
    /// `/qr/status?scene=…[&wait=N]`: long-polls a scene.
    QrStatus,
    /// `/qr/image?scene=…`: the scene's QR code as SVG, for the browser
    /// the scene belongs to.
    QrImage,
    /// `/qr/confirm?t=…[&answer=…]`: the phone's confirmation page
    /// (`scene_confirm`).
    QrConfirm,
    /// `/jssdk-config?url=…`: the JS-SDK's `wx.config` for a page of the site.
    JssdkConfig,
    /// `[gateway] push_path`: WeChat's pushes (POST) and its server URL
    /// check (GET).
    Push,
    /// Under the prefix, but no route: `404`.
    Unknown,
}

/// The routes under the prefix with their suffixes.
const UNDER_PREFIX: [(Route, &str); 14] = [
    (Route::Callback, "/callback"),
    (Route::Login, "/login"),
    (Route::Logout, "/logout"),
    (Route::Userinfo, "/userinfo"),
    (Route::Healthz, "/healthz"),
    (Route::Ready, "/ready"),
    (Route::Auth, "/auth"),
    (Route::Exchange, "/exchange"),
    (Route::AuthorizeUrl, "/authorize-url"),
    (Route::QrNew, "/qr/new"),
    (Route::QrStatus, "/qr/status"),
    (Route::QrImage, "/qr/image"),
    (Route::QrConfirm, "/qr/confirm"),
    (Route::JssdkConfig, "/jssdk-config"),
];

impl Route {
    /// The route of a canonical path (`path::canonical_path`), if
    /// it is one of the gate's: the push path first (it may be anywhere),
    /// then anything under `prefix` (an unknown one is [`Route::Unknown`]).
    /// `push_path` is `None` when pushes are off (no `push_token`).
    pub fn parse(path: &str, prefix: &str, push_path: Option<&str>) -> Option<Route> {
        if push_path == Some(path) {
            return Some(Route::Push);
        }
        let rest = match path.strip_prefix(prefix)? {
            "" => "/",
            rest if rest.starts_with('/') => rest,
            _ => return None,
        };
        Some(
            UNDER_PREFIX
                .iter()
                .find(|(_, suffix)| *suffix == rest)
                .map_or(Route::Unknown, |(route, _)| *route),
        )
    }

    /// The route's path under `prefix`, e.g. `/_wechat/qr/status`. For
    /// [`Route::Push`] the default `<prefix>/events` (`push_path` overrides
    /// it: [`crate::config::GatewayConfig::push_path`]); [`Route::Unknown`]
    /// is the prefix itself.
    pub fn path(self, prefix: &str) -> String {
        format!("{prefix}{}", self.suffix())
    }

    fn suffix(self) -> &'static str {
        match self {
            Route::Push => "/events",
            Route::Unknown => "",
            known => UNDER_PREFIX
                .iter()
                .find(|(route, _)| *route == known)
                .map_or("", |(_, suffix)| suffix),
        }
    }

    /// The methods the route answers (`Allow` for a `405`); empty: any
    /// (the `auth` route gets the original request's method from nginx).
    pub(crate) fn allowed_methods(self) -> &'static [&'static str] {
        match self {
            Route::Auth | Route::Unknown => &[],
            Route::Exchange => &["POST"],
            Route::Logout | Route::QrConfirm | Route::Push => &["GET", "HEAD", "POST"],
            _ => &["GET", "HEAD"],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_parses_back_from_its_own_path() {
        for (route, _) in UNDER_PREFIX {
            assert_eq!(
                Route::parse(&route.path("/_wechat"), "/_wechat", None),
                Some(route)
            );
            assert_eq!(
                Route::parse(&route.path("/gate"), "/gate", None),
                Some(route)
            );
        }
        assert_eq!(
            Route::parse("/_wechat/events", "/_wechat", Some("/_wechat/events")),
            Some(Route::Push)
        );
        assert_eq!(
            Route::parse("/wx/push", "/_wechat", Some("/wx/push")),
            Some(Route::Push)
        );
        assert_eq!(
            Route::parse("/_wechat/events", "/_wechat", None),
            Some(Route::Unknown),
            "no push without a push token"
        );
    }

    #[test]
    fn only_paths_under_the_prefix_are_routes() {
        assert_eq!(
            Route::parse("/_wechat", "/_wechat", None),
            Some(Route::Unknown)
        );
        assert_eq!(
            Route::parse("/_wechat/", "/_wechat", None),
            Some(Route::Unknown)
        );
        assert_eq!(Route::parse("/_wechatx/login", "/_wechat", None), None);
        assert_eq!(Route::parse("/orders", "/_wechat", None), None);
        assert_eq!(
            Route::parse("/_wechat/login/", "/_wechat", None),
            Some(Route::Unknown)
        );
        assert_eq!(
            Route::parse("/_wechat/LOGIN", "/_wechat", None),
            Some(Route::Unknown)
        );
        assert_eq!(
            Route::parse("/_wechat/qr", "/_wechat", None),
            Some(Route::Unknown)
        );
    }
}
