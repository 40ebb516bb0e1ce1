//! CSRF `state` and the return path (docs/protocol.md §1 step 1, "state").
//!
//! Each login attempt gets a random state and its own short-lived sealed
//! cookie, named after the state, holding the state and the path to return
//! to. The callback is accepted only when that cookie is present and matches,
//! so state survives any number of gateway instances and parallel tabs.

use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};

use crate::seal::Sealer;

/// Prefix of the per-attempt state cookie names (`wechat_state_<state>`).
pub const STATE_COOKIE_PREFIX: &str = "wechat_state_";
/// Length of the states this library generates, in characters.
pub const STATE_LEN: usize = 32;
/// Longest state WeChat accepts, in bytes.
pub const MAX_STATE_LEN: usize = 128;
/// How long a login attempt may take, in seconds (the code itself lives 300 s).
pub const STATE_LIFETIME_SECS: u64 = 600;
/// Most state cookies a browser keeps at once; older ones are expired.
pub const MAX_STATE_COOKIES: usize = 5;
/// Longest return path kept, in bytes.
pub const MAX_RETURN_PATH: usize = 2048;

/// A fresh random state: [`STATE_LEN`] characters of `[A-Za-z0-9]`.
pub fn new_state() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), STATE_LEN)
}

/// Whether `state` has WeChat's form: 1 to 128 bytes of `[A-Za-z0-9]`.
pub fn is_valid_state(state: &str) -> bool {
    !state.is_empty()
        && state.len() <= MAX_STATE_LEN
        && state.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The cookie name for a state.
pub fn state_cookie_name(state: &str) -> String {
    format!("{STATE_COOKIE_PREFIX}{state}")
}

#[derive(Serialize, Deserialize)]
struct StatePayload {
    /// The state itself.
    s: String,
    /// Return path.
    rd: String,
    /// Expires at, unix seconds.
    exp: u64,
    /// The login goes through the Open Platform website app (qrconnect).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    open: bool,
    /// The login goes through WeCom (`[wecom]`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    wecom: bool,
}

/// Which app a login goes through; its state cookie says which, so the
/// callback exchanges the code with the app that issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginApp {
    /// The Official Account's web authorization (docs/protocol.md §1).
    OfficialAccount,
    /// The Open Platform website app's QR login, `qrconnect` (§2).
    Website,
    /// WeCom (`[wecom]`): the in-app browser's authorization
    /// (docs/wecom.md §1). A state cookie opens as this for either WeCom
    /// login: both exchange the same way.
    WeCom,
    /// WeCom's web QR login, for other browsers (docs/wecom.md §2).
    WecomWeb,
}

/// A state cookie's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCookie {
    /// Where the browser returns after the login.
    pub return_to: String,
    /// Expires at, unix seconds.
    pub expires_at: u64,
    /// The app the login went through.
    pub app: LoginApp,
}

/// Seals the state cookie value for `state`, returning to `return_to`
/// after a login through `app`.
pub fn seal_state(
    sealer: &Sealer,
    state: &str,
    return_to: &str,
    app: LoginApp,
    now: u64,
) -> String {
    let payload = StatePayload {
        s: state.to_owned(),
        rd: return_to.to_owned(),
        exp: now + STATE_LIFETIME_SECS,
        open: app == LoginApp::Website,
        wecom: matches!(app, LoginApp::WeCom | LoginApp::WecomWeb),
    };
    let json = serde_json::to_string(&payload).expect("state serializes");
    sealer.seal(&state_cookie_name(state), &json)
}

/// Opens the state cookie of `state`, or `None` when forged, for another
/// state, or expired at `now`.
pub fn open_state(sealer: &Sealer, state: &str, value: &str, now: u64) -> Option<StateCookie> {
    let json = sealer.open(&state_cookie_name(state), value)?;
    let payload: StatePayload = serde_json::from_str(&json).ok()?;
    (payload.s == state && payload.exp > now).then_some(StateCookie {
        return_to: payload.rd,
        expires_at: payload.exp,
        app: match (payload.open, payload.wecom) {
            (_, true) => LoginApp::WeCom,
            (true, false) => LoginApp::Website,
            (false, false) => LoginApp::OfficialAccount,
        },
    })
}

/// Validates a return path (`rd`) so that a login can never send the browser
/// to another site: a path on this origin (`/…`, not `//…` nor `/\…`), or an
/// absolute URL on `origin` (reduced to its path), of visible ASCII only, at
/// most [`MAX_RETURN_PATH`] bytes, not under the gate's own `prefix`.
/// Returns the path to use, or `None` when `rd` is refused.
pub fn safe_return_path(rd: &str, origin: &str, prefix: &str) -> Option<String> {
    let path = match rd.strip_prefix(origin) {
        Some(rest) if rest.starts_with('/') => rest,
        Some("") => "/",
        _ => rd,
    };
    let ok = path.len() <= MAX_RETURN_PATH
        && path.starts_with('/')
        && !path.starts_with("//")
        && path
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && b != b'\\');
    let under_prefix = path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with(['/', '?', '#']));
    (ok && !under_prefix).then(|| path.to_owned())
}

/// Most states a [`UsedStates`] remembers; past it the least used go
/// (memory stays bounded under a flood of logins).
pub const USED_STATES_CAPACITY: usize = 200_000;

/// One-to-one bindings that expire: each key goes with the first value it
/// was claimed with until its end. A gate in one process keeps three: each
/// state with its code (a state is good for one code, so a state cookie
/// that leaked can't carry someone else's code into a login), each code
/// with its state (a code is good for the browser it came back to, so a
/// code that leaked can't log a second browser in), and each signed push's
/// (timestamp, nonce) with its body. A repeat of the same pair shares the
/// one outcome. Entries are keyed by keyed hashes (16 bytes each), never
/// the values.
#[derive(Debug)]
pub struct UsedStates {
    hasher: std::hash::RandomState,
    map: crate::expiring::ExpiringMap<u64, u64>,
}

impl Default for UsedStates {
    fn default() -> Self {
        UsedStates {
            hasher: std::hash::RandomState::new(),
            map: crate::expiring::ExpiringMap::new(USED_STATES_CAPACITY),
        }
    }
}

impl UsedStates {
    /// Claims `state` for `code` until `expires_at` (unix seconds); `false`
    /// when the state already went with another code before `now`. (For
    /// the code binding: `state` is the code, `code` its state.)
    pub fn claim(&self, state: &str, code: &str, now: u64, expires_at: u64) -> bool {
        use std::hash::BuildHasher;
        let (state, code) = (self.hasher.hash_one(state), self.hasher.hash_one(code));
        self.map
            .get_or_insert(&state, code, now, expires_at)
            .is_none_or(|used_with| used_with == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_goes_with_one_code_until_it_expires() {
        let used = UsedStates::default();
        assert!(used.claim("s1", "c1", 100, 700));
        assert!(used.claim("s1", "c1", 101, 700), "the same callback again");
        assert!(!used.claim("s1", "c2", 102, 700), "another code");
        assert!(used.claim("s2", "c2", 102, 700));
        assert!(used.claim("s1", "c3", 700, 1300), "after the state's end");
    }
    use crate::secret::Secret;

    const ORIGIN: &str = "https://app.example.com";

    #[test]
    fn states_are_random_and_valid() {
        let a = new_state();
        assert_eq!(a.len(), STATE_LEN);
        assert!(is_valid_state(&a));
        assert_ne!(a, new_state());
        assert!(!is_valid_state(""));
        assert!(!is_valid_state(&"a".repeat(129)));
        assert!(is_valid_state(&"a".repeat(128)));
        assert!(!is_valid_state("abc-def"));
    }

    #[test]
    fn state_cookie_is_bound_to_its_state_and_expires() {
        let s = Sealer::new(&Secret::new("0123456789abcdef0123456789abcdef")).unwrap();
        let v = seal_state(&s, "abc", "/orders?id=1", LoginApp::OfficialAccount, 100);
        let opened = open_state(&s, "abc", &v, 100).unwrap();
        assert_eq!(
            (opened.return_to.as_str(), opened.expires_at, opened.app),
            ("/orders?id=1", 700, LoginApp::OfficialAccount)
        );
        for (app, opens_as) in [
            (LoginApp::Website, LoginApp::Website),
            (LoginApp::WeCom, LoginApp::WeCom),
            (LoginApp::WecomWeb, LoginApp::WeCom),
        ] {
            let sealed = seal_state(&s, "abc", "/", app, 100);
            assert_eq!(open_state(&s, "abc", &sealed, 100).unwrap().app, opens_as);
        }
        assert_eq!(open_state(&s, "abd", &v, 100), None);
        assert_eq!(open_state(&s, "abc", &v, 700), None);
    }

    #[test]
    fn return_paths_never_leave_the_origin() {
        let ok = |rd: &str| safe_return_path(rd, ORIGIN, "/_wechat");
        assert_eq!(ok("/orders?id=1").as_deref(), Some("/orders?id=1"));
        assert_eq!(ok("https://app.example.com/a").as_deref(), Some("/a"));
        assert_eq!(ok("https://app.example.com").as_deref(), Some("/"));
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "https://app.example.com.evil.example/",
            "https://app.example.com@evil.example/",
            "evil.example",
            "/a\r\nSet-Cookie: x=1",
            "/a b",
            "/_wechat/logout",
            "/_wechat",
            "",
            "javascript:alert(1)",
        ] {
            assert_eq!(ok(bad), None, "{bad:?}");
        }
        assert_eq!(ok("/_wechatty").as_deref(), Some("/_wechatty"));
        assert_eq!(ok(&format!("/{}", "a".repeat(MAX_RETURN_PATH))), None);
    }
}
