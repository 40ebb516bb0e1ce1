//! The session: the verified identity a browser carries in a sealed cookie.
//! It holds identity only, never a token (PROTOCOL.md §1 step 2).

use serde::{Deserialize, Serialize};

use crate::seal::Sealer;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "wechat_session";

/// Header carrying the `openid` to the application.
pub const HEADER_OPENID: &str = "X-WeChat-OpenID";
/// Header carrying the `unionid` (only when WeChat gave one).
pub const HEADER_UNIONID: &str = "X-WeChat-UnionID";
/// Header carrying the granted scope (comma-separated, as WeChat sends it).
pub const HEADER_SCOPE: &str = "X-WeChat-Scope";
/// Header carrying the nickname, percent-encoded UTF-8 (RFC 3986 unreserved characters kept).
pub const HEADER_NICKNAME: &str = "X-WeChat-Nickname";
/// Every request header whose name starts with this (case-insensitive) is
/// removed before a request reaches the application, so only the gate sets them.
pub const IDENTITY_HEADER_PREFIX: &str = "x-wechat-";

/// A verified WeChat identity (PROTOCOL.md §1 steps 2 and 4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The user's `openid` for this appid.
    pub openid: String,
    /// The `unionid`, when the account is bound to an Open Platform account.
    pub unionid: Option<String>,
    /// The granted scope, e.g. `snsapi_userinfo`.
    pub scope: String,
    /// The nickname (arbitrary UTF-8), with `snsapi_userinfo`.
    pub nickname: Option<String>,
    /// The avatar URL, with `snsapi_userinfo`; `None` when WeChat has none.
    pub headimgurl: Option<String>,
}

const NICKNAME_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl Identity {
    /// The headers the application receives: `(name, value)` pairs, values
    /// header-safe (the nickname percent-encoded UTF-8).
    pub fn upstream_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            (HEADER_OPENID, self.openid.clone()),
            (HEADER_SCOPE, self.scope.clone()),
        ];
        if let Some(u) = &self.unionid {
            headers.push((HEADER_UNIONID, u.clone()));
        }
        if let Some(n) = &self.nickname {
            headers.push((
                HEADER_NICKNAME,
                percent_encoding::utf8_percent_encode(n, NICKNAME_ENCODE).to_string(),
            ));
        }
        headers
    }
}

/// Whether an id from WeChat (`openid`, `unionid`) is safe to carry in a
/// header: 1 to 128 of `[A-Za-z0-9_-]`.
pub fn is_valid_wechat_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Serialize, Deserialize)]
struct SessionPayload {
    v: u8,
    #[serde(flatten)]
    identity: Identity,
    /// Issued at, unix seconds.
    iat: u64,
    /// Expires at, unix seconds.
    exp: u64,
}

/// Seals `identity` into a session cookie value valid from `now` (unix
/// seconds) for `lifetime_secs`.
pub fn seal_session(sealer: &Sealer, identity: &Identity, now: u64, lifetime_secs: u64) -> String {
    let payload = SessionPayload {
        v: 1,
        identity: identity.clone(),
        iat: now,
        exp: now + lifetime_secs,
    };
    let json = serde_json::to_string(&payload).expect("identity serializes");
    sealer.seal(SESSION_COOKIE, &json)
}

/// Opens a session cookie value: the identity and its expiry (unix seconds),
/// or `None` when the value is forged, tampered, from another key, or expired at `now`.
pub fn open_session(sealer: &Sealer, value: &str, now: u64) -> Option<(Identity, u64)> {
    let json = sealer.open(SESSION_COOKIE, value)?;
    let payload: SessionPayload = serde_json::from_str(&json).ok()?;
    (payload.v == 1 && payload.exp > now && is_valid_wechat_id(&payload.identity.openid))
        .then_some((payload.identity, payload.exp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn identity() -> Identity {
        Identity {
            openid: "oLVPpjqs9BhvzwPj5A-vTYAX3GLc".into(),
            unionid: Some("o6_bmasdasdsad6_2sgVt7hMZOPfL".into()),
            scope: "snsapi_userinfo".into(),
            nickname: Some("张三 🐼 Zoë".into()),
            headimgurl: Some("https://thirdwx.qlogo.cn/mmopen/x/132".into()),
        }
    }

    #[test]
    fn sessions_round_trip_and_expire() {
        let s = Sealer::new(&Secret::new("0123456789abcdef0123456789abcdef")).unwrap();
        let v = seal_session(&s, &identity(), 1000, 60);
        assert_eq!(open_session(&s, &v, 1059), Some((identity(), 1060)));
        assert_eq!(open_session(&s, &v, 1060), None);
    }

    #[test]
    fn nickname_header_is_percent_encoded_utf8() {
        let h = identity().upstream_headers();
        let nick = &h.iter().find(|(n, _)| *n == HEADER_NICKNAME).unwrap().1;
        assert_eq!(nick, "%E5%BC%A0%E4%B8%89%20%F0%9F%90%BC%20Zo%C3%AB");
        let decoded = percent_encoding::percent_decode_str(nick)
            .decode_utf8()
            .unwrap();
        assert_eq!(decoded, "张三 🐼 Zoë");
    }

    #[test]
    fn wechat_ids_are_checked() {
        assert!(is_valid_wechat_id("oLVPpjqs9BhvzwPj5A-vTYAX3GLc"));
        assert!(!is_valid_wechat_id(""));
        assert!(!is_valid_wechat_id("a\r\nX-Evil: 1"));
        assert!(!is_valid_wechat_id(&"a".repeat(129)));
    }
}
