//! The gate's cookies: reading them from a request, writing them, and
//! keeping them from the application.

use super::*;

/// The gate's cookies in a request's `Cookie` header.
pub(super) struct GateCookies<'a> {
    pub(super) session: Option<&'a str>,
    pub(super) scene: Option<&'a str>,
    pub(super) states: Vec<(&'a str, &'a str)>,
}

impl<'a> GateCookies<'a> {
    pub(super) fn parse(header: Option<&'a str>, session_name: &str) -> Self {
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
pub(super) fn is_gate_cookie(name: &str, session_name: &str) -> bool {
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
/// cookie named `session_name`): [`UpstreamCookie::Unchanged`] when it
/// holds none (no allocation), `Remove` when it holds nothing else, and
/// otherwise the other cookies, kept byte for byte and `; `-joined.
pub fn strip_gate_cookies(header: Option<&str>, session_name: &str) -> UpstreamCookie {
    let Some(header) = header else {
        return UpstreamCookie::Unchanged;
    };
    let pairs = || {
        header
            .split(';')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
    };
    let is_gate =
        |pair: &str| is_gate_cookie(pair.split('=').next().unwrap_or("").trim(), session_name);
    if !pairs().any(is_gate) {
        return UpstreamCookie::Unchanged;
    }
    let mut kept = String::new();
    for pair in pairs().filter(|pair| !is_gate(pair)) {
        if !kept.is_empty() {
            kept.push_str("; ");
        }
        kept.push_str(pair);
    }
    if kept.is_empty() {
        UpstreamCookie::Remove
    } else {
        UpstreamCookie::Rewritten(kept)
    }
}

impl Gate {
    pub(super) fn set_cookie(&self, name: &str, value: String, max_age_secs: u64) -> String {
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

    pub(super) fn remove_cookie(&self, name: &str) -> String {
        self.set_cookie(name, String::new(), 0)
    }
}
