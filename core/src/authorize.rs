//! The authorize URL that sends a browser to WeChat (docs/protocol.md §1 step 1).

use url::form_urlencoded;

/// The OAuth 2.0 scope of WeChat web authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `snsapi_base`: silent, openid only.
    Base,
    /// `snsapi_userinfo`: consent page; nickname, avatar, unionid.
    Userinfo,
}

impl Scope {
    /// The wire name, `snsapi_base` or `snsapi_userinfo`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Base => "snsapi_base",
            Scope::Userinfo => "snsapi_userinfo",
        }
    }

    /// Parses a wire name; `None` for anything else.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "snsapi_base" => Some(Scope::Base),
            "snsapi_userinfo" => Some(Scope::Userinfo),
            _ => None,
        }
    }

    /// Whether a granted scope list (WeChat sends it comma-separated) allows
    /// `sns/userinfo`: `snsapi_userinfo`, or qrconnect's `snsapi_login`.
    pub fn granted_includes_userinfo(granted: &str) -> bool {
        granted
            .split(',')
            .any(|s| matches!(s.trim(), "snsapi_userinfo" | "snsapi_login"))
    }
}

/// The optional parameters of web authorization, after `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuthorizeOptions {
    /// `forcePopup=true`: the user confirms even where WeChat would
    /// authorize silently.
    pub force_popup: bool,
    /// `connect_redirect=1`: WeChat sends one callback per consent.
    pub connect_redirect: bool,
}

/// Builds `{open_base}/connect/oauth2/authorize?appid=…&redirect_uri=…&response_type=code&scope=…&state=…[&forcePopup=true][&connect_redirect=1]#wechat_redirect`.
///
/// The parameters come in exactly WeChat's order (its page checks it), each
/// value form-urlencoded (so `redirect_uri` is percent-encoded), and the URL
/// always ends with `#wechat_redirect`. `open_base` has no trailing slash.
///
/// Source: docs/protocol.md §1 step 1.
pub fn authorize_url(
    open_base: &str,
    appid: &str,
    redirect_uri: &str,
    scope: Scope,
    state: &str,
    options: AuthorizeOptions,
) -> String {
    let mut query = form_urlencoded::Serializer::new(String::with_capacity(256));
    query
        .append_pair("appid", appid)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("response_type", "code")
        .append_pair("scope", scope.as_str())
        .append_pair("state", state);
    if options.force_popup {
        query.append_pair("forcePopup", "true");
    }
    if options.connect_redirect {
        query.append_pair("connect_redirect", "1");
    }
    format!(
        "{}/connect/oauth2/authorize?{}#wechat_redirect",
        open_base.trim_end_matches('/'),
        query.finish()
    )
}

/// Builds the Open Platform website app's QR login URL,
/// `{open_base}/connect/qrconnect?appid=…&redirect_uri=…&response_type=code&scope=snsapi_login&state=…#wechat_redirect`,
/// in the same parameter order and encoding as [`authorize_url`].
///
/// Source: docs/protocol.md §2.
pub fn qrconnect_url(open_base: &str, appid: &str, redirect_uri: &str, state: &str) -> String {
    let mut query = form_urlencoded::Serializer::new(String::with_capacity(256));
    query
        .append_pair("appid", appid)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("response_type", "code")
        .append_pair("scope", "snsapi_login")
        .append_pair("state", state);
    format!(
        "{}/connect/qrconnect?{}#wechat_redirect",
        open_base.trim_end_matches('/'),
        query.finish()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_wechats_parameter_order_and_encodes_redirect_uri() {
        let url = authorize_url(
            "https://open.weixin.qq.com/",
            "wx520c15f417810387",
            "https://app.example.com/_wechat/callback?x=1&y=2",
            Scope::Userinfo,
            "abc123",
            AuthorizeOptions::default(),
        );
        assert_eq!(
            url,
            "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wx520c15f417810387\
             &redirect_uri=https%3A%2F%2Fapp.example.com%2F_wechat%2Fcallback%3Fx%3D1%26y%3D2\
             &response_type=code&scope=snsapi_userinfo&state=abc123#wechat_redirect"
        );
    }

    #[test]
    fn force_popup_and_connect_redirect_come_after_state_and_before_the_fragment() {
        let url = |force_popup, connect_redirect| {
            let options = AuthorizeOptions {
                force_popup,
                connect_redirect,
            };
            authorize_url(
                "https://o",
                "wx1",
                "https://a/cb",
                Scope::Base,
                "s",
                options,
            )
        };
        assert!(url(true, false)
            .ends_with("&scope=snsapi_base&state=s&forcePopup=true#wechat_redirect"));
        assert!(url(false, true).ends_with("&state=s&connect_redirect=1#wechat_redirect"));
        assert!(url(true, true)
            .ends_with("&state=s&forcePopup=true&connect_redirect=1#wechat_redirect"));
    }

    #[test]
    fn qrconnect_urls_keep_the_order_with_snsapi_login() {
        assert_eq!(
            qrconnect_url("https://open.weixin.qq.com", "wxweb", "https://a.example/cb", "s1"),
            "https://open.weixin.qq.com/connect/qrconnect?appid=wxweb&redirect_uri=https%3A%2F%2Fa.example%2Fcb&response_type=code&scope=snsapi_login&state=s1#wechat_redirect"
        );
    }

    #[test]
    fn scopes_parse_and_granted_lists_are_split() {
        assert_eq!(Scope::parse("snsapi_base"), Some(Scope::Base));
        assert_eq!(Scope::parse("snsapi_login"), None);
        assert!(Scope::granted_includes_userinfo(
            "snsapi_base,snsapi_userinfo"
        ));
        assert!(!Scope::granted_includes_userinfo("snsapi_base"));
    }
}
