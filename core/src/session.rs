//! The session: the verified identity a browser carries in a sealed cookie.
//! It holds identity only, never a token (docs/protocol.md §1 step 2).

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use http::HeaderValue;
use serde::{Deserialize, Serialize};

use crate::seal::Sealer;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "wechat_session";

/// Header carrying the `openid` to the application.
pub const HEADER_OPENID: &str = "X-WeChat-OpenID";
/// Header carrying the user's stable key: the `unionid` where WeChat gave
/// one, else the `openid` (README "One user across apps").
pub const HEADER_USER: &str = "X-WeChat-User";
/// Header carrying the `unionid` (only when WeChat gave one).
pub const HEADER_UNIONID: &str = "X-WeChat-UnionID";
/// Header carrying the granted scope (comma-separated, as WeChat sends it).
pub const HEADER_SCOPE: &str = "X-WeChat-Scope";
/// Header carrying the nickname, percent-encoded UTF-8 (RFC 3986 unreserved characters kept).
pub const HEADER_NICKNAME: &str = "X-WeChat-Nickname";
/// Header set to `1` for a snapshot-page user, when those are allowed.
pub const HEADER_SNAPSHOT: &str = "X-WeChat-Snapshot";
/// Longest nickname kept, in bytes (far beyond WeChat's own limit); longer ones are cut at a character boundary.
pub const MAX_NICKNAME_BYTES: usize = 256;
/// Longest avatar URL kept, in bytes; a longer one is dropped.
pub const MAX_HEADIMGURL_BYTES: usize = 512;
/// Every request header whose name starts with this (case-insensitive) is
/// removed before a request reaches the application, so only the gate sets them.
pub const IDENTITY_HEADER_PREFIX: &str = "x-wechat-";
/// As [`IDENTITY_HEADER_PREFIX`], for the WeCom member's headers.
pub const WECOM_HEADER_PREFIX: &str = "x-wecom-";
/// Header carrying a WeCom member's `userid` (docs/wecom.md §3).
pub const HEADER_WECOM_USERID: &str = "X-WeCom-UserID";
/// Header carrying the `openid` WeCom gives a non-member (with
/// `allow_non_members`), instead of [`HEADER_WECOM_USERID`].
pub const HEADER_WECOM_OPENID: &str = "X-WeCom-OpenID";
/// Header carrying the company's `corpid`.
pub const HEADER_WECOM_CORPID: &str = "X-WeCom-CorpID";
/// Header carrying the member's name, percent-encoded UTF-8 as the nickname.
pub const HEADER_WECOM_NAME: &str = "X-WeCom-Name";
/// Header carrying the member's department ids, comma-separated.
pub const HEADER_WECOM_DEPARTMENT: &str = "X-WeCom-Department";
/// Most department ids kept for one member.
pub const MAX_WECOM_DEPARTMENTS: usize = 32;
/// Longest member name kept, in bytes.
pub const MAX_WECOM_NAME_BYTES: usize = 128;

/// Whether a request header named `name` is one the gate owns and must
/// remove: its name, lower-cased with `_` read as `-`, starts with
/// [`IDENTITY_HEADER_PREFIX`]. CGI, PHP and several Ruby and Python servers
/// turn both `-` and `_` into `_` (`HTTP_X_WECHAT_OPENID`), so
/// `X_WeChat_OpenID` would otherwise pose as the gate's header.
pub fn is_identity_header(name: &[u8]) -> bool {
    let starts_with = |prefix: &str| {
        name.len() >= prefix.len()
            && name.iter().zip(prefix.bytes()).all(|(&b, want)| {
                let b = if b == b'_' {
                    b'-'
                } else {
                    b.to_ascii_lowercase()
                };
                b == want
            })
    };
    starts_with(IDENTITY_HEADER_PREFIX) || starts_with(WECOM_HEADER_PREFIX)
}

/// A WeCom login's company side (docs/wecom.md §3): the identity's
/// `openid` is then the member's `userid` (or, for a non-member let in by
/// `allow_non_members`, the `openid` WeCom gave them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WecomMember {
    /// The company's `corpid`.
    pub corpid: String,
    /// A member of the company; `false` for a non-member.
    pub member: bool,
    /// The member's name (`cgi-bin/user/get`), when the app may read it.
    pub name: Option<String>,
    /// The member's department ids (`cgi-bin/user/get`).
    pub departments: Vec<u64>,
}

/// A verified WeChat identity (docs/protocol.md §1 steps 2 and 4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// A snapshot-page virtual user (`is_snapshotuser: 1`), let through by
    /// `allow_snapshot_users`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snapshot: bool,
    /// A WeCom login: the member's company side; `None` for WeChat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wecom: Option<WecomMember>,
    /// [`Identity::upstream_header_values`], built at its first call.
    /// Build identities with `..Default::default()`; the cache is never
    /// compared, printed, serialized or cloned.
    #[serde(skip)]
    pub header_values: HeaderValueCache,
}

/// The upstream header values of one [`Identity`], built once: a cached
/// session's every request then writes them by reference count, with no
/// allocation. Empty again in a clone, so a changed copy builds its own.
#[derive(Default)]
pub struct HeaderValueCache(OnceLock<Box<[(&'static str, HeaderValue)]>>);

impl Clone for HeaderValueCache {
    fn clone(&self) -> Self {
        HeaderValueCache::default()
    }
}

impl PartialEq for HeaderValueCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for HeaderValueCache {}

impl std::fmt::Debug for HeaderValueCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

const NICKNAME_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl Identity {
    /// The key an application can keep its accounts on: the `unionid` (the
    /// same person across the apps of one Open Platform account), else the
    /// `openid` (one app's).
    pub fn user_key(&self) -> &str {
        self.unionid.as_deref().unwrap_or(&self.openid)
    }

    /// The headers the application receives: `(name, value)` pairs, values
    /// header-safe (the nickname percent-encoded UTF-8).
    /// Borrowed from the identity (no allocation) except an encoded nickname.
    pub fn upstream_headers(&self) -> impl Iterator<Item = (&'static str, Cow<'_, str>)> {
        let wechat = self.wecom.is_none();
        let wecom = self.wecom.as_ref();
        let wechat_headers = [
            Some((HEADER_OPENID, Cow::Borrowed(self.openid.as_str()))),
            Some((HEADER_USER, Cow::Borrowed(self.user_key()))),
            Some((HEADER_SCOPE, Cow::Borrowed(self.scope.as_str()))),
            self.unionid
                .as_deref()
                .map(|u| (HEADER_UNIONID, Cow::Borrowed(u))),
            self.nickname.as_deref().map(|n| {
                let encoded = percent_encoding::utf8_percent_encode(n, NICKNAME_ENCODE);
                (HEADER_NICKNAME, Cow::from(encoded))
            }),
            self.snapshot
                .then_some((HEADER_SNAPSHOT, Cow::Borrowed("1"))),
        ];
        let wecom_headers = wecom.map(|w| {
            let id = if w.member {
                HEADER_WECOM_USERID
            } else {
                HEADER_WECOM_OPENID
            };
            [
                Some((id, Cow::Borrowed(self.openid.as_str()))),
                Some((HEADER_WECOM_CORPID, Cow::Borrowed(w.corpid.as_str()))),
                w.name.as_deref().map(|n| {
                    let encoded = percent_encoding::utf8_percent_encode(n, NICKNAME_ENCODE);
                    (HEADER_WECOM_NAME, Cow::from(encoded))
                }),
                (!w.departments.is_empty()).then(|| {
                    let ids: Vec<String> = w.departments.iter().map(u64::to_string).collect();
                    (HEADER_WECOM_DEPARTMENT, Cow::Owned(ids.join(",")))
                }),
            ]
        });
        wechat_headers
            .into_iter()
            .filter(move |_| wechat)
            .chain(wecom_headers.into_iter().flatten())
            .flatten()
    }

    /// [`Identity::upstream_headers`] as `http` header values, built at the
    /// first call and shared afterwards (cloning a `HeaderValue` counts a
    /// reference, it copies nothing). The identity must not change after
    /// this call; its fields are checked header-safe when it is made
    /// ([`open_session`]), so no value is ever refused.
    pub fn upstream_header_values(&self) -> &[(&'static str, HeaderValue)] {
        self.header_values.0.get_or_init(|| {
            self.upstream_headers()
                .filter_map(|(name, value)| {
                    let value = HeaderValue::from_str(&value).ok()?;
                    // Cloned once here: `Bytes` then shares instead of copying.
                    drop(value.clone());
                    Some((name, value))
                })
                .collect()
        })
    }

    /// Applies the size bounds that keep the session cookie under 4 KiB:
    /// nickname cut to [`MAX_NICKNAME_BYTES`], avatar URL dropped past
    /// [`MAX_HEADIMGURL_BYTES`].
    pub fn bounded(mut self) -> Identity {
        if let Some(n) = &mut self.nickname {
            if n.len() > MAX_NICKNAME_BYTES {
                let mut cut = MAX_NICKNAME_BYTES;
                while !n.is_char_boundary(cut) {
                    cut -= 1;
                }
                n.truncate(cut);
            }
        }
        self.headimgurl = self.headimgurl.filter(|h| h.len() <= MAX_HEADIMGURL_BYTES);
        if let Some(w) = &mut self.wecom {
            w.departments.truncate(MAX_WECOM_DEPARTMENTS);
            if let Some(n) = &mut w.name {
                if n.len() > MAX_WECOM_NAME_BYTES {
                    let mut cut = MAX_WECOM_NAME_BYTES;
                    while !n.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    n.truncate(cut);
                }
            }
        }
        self
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

/// Whether `scope` is a granted-scope list as WeChat sends it: 1 to 128
/// bytes of `[a-z_,]` (e.g. `snsapi_base,snsapi_userinfo`). It becomes the
/// `X-WeChat-Scope` header, so nothing else may pass.
pub fn is_valid_scope(scope: &str) -> bool {
    !scope.is_empty()
        && scope.len() <= 128
        && scope
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b',')
}

/// A login: the identity plus the session id its tokens are stored under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Who logged in; shared by every request of a cached session cookie.
    pub identity: Arc<Identity>,
    /// Random id keying the server-side tokens ([`crate::store::TokenStore`]).
    pub sid: String,
    /// Logged in at, unix seconds.
    pub issued_at: u64,
    /// Ends at, unix seconds (absolute lifetime).
    pub expires_at: u64,
    /// Last seen at, unix seconds (for the idle timeout).
    pub seen_at: u64,
}

impl Session {
    /// A login that starts at `now` (unix seconds), seen at `now`, and ends
    /// `lifetime` later (`[gateway] session_lifetime_secs`).
    pub fn starting_at(
        identity: Arc<Identity>,
        sid: String,
        now: u64,
        lifetime: std::time::Duration,
    ) -> Session {
        Session {
            identity,
            sid,
            issued_at: now,
            expires_at: now + lifetime.as_secs(),
            seen_at: now,
        }
    }

    /// [`Session::starting_at`] the current time.
    pub fn starting_now(
        identity: Arc<Identity>,
        sid: String,
        lifetime: std::time::Duration,
    ) -> Session {
        Session::starting_at(identity, sid, crate::flow::now_unix(), lifetime)
    }
}

// Short field names keep the cookie small; no `flatten`, which would make
// serde buffer every field on the per-request path.
#[derive(Serialize, Deserialize)]
struct SessionPayload {
    v: u8,
    /// openid
    o: String,
    /// unionid
    #[serde(default, skip_serializing_if = "Option::is_none")]
    u: Option<String>,
    /// scope
    s: String,
    /// nickname
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    /// headimgurl
    #[serde(default, skip_serializing_if = "Option::is_none")]
    h: Option<String>,
    /// snapshot user
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    snap: bool,
    /// WeCom: corpid, member, name, departments
    #[serde(default, skip_serializing_if = "Option::is_none")]
    w: Option<WecomPayload>,
    sid: String,
    iat: u64,
    exp: u64,
    seen: u64,
}

#[derive(Serialize, Deserialize)]
struct WecomPayload {
    c: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    m: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    d: Vec<u64>,
}

const SESSION_VERSION: u8 = 3;

/// Seals a session into a cookie value.
pub fn seal_session(sealer: &Sealer, session: &Session) -> String {
    let id = &session.identity;
    let payload = SessionPayload {
        v: SESSION_VERSION,
        o: id.openid.clone(),
        u: id.unionid.clone(),
        s: id.scope.clone(),
        n: id.nickname.clone(),
        h: id.headimgurl.clone(),
        snap: id.snapshot,
        w: id.wecom.as_ref().map(|w| WecomPayload {
            c: w.corpid.clone(),
            m: w.member,
            n: w.name.clone(),
            d: w.departments.clone(),
        }),
        sid: session.sid.clone(),
        iat: session.issued_at,
        exp: session.expires_at,
        seen: session.seen_at,
    };
    let json = serde_json::to_string(&payload).expect("session serializes");
    sealer.seal(SESSION_COOKIE, &json)
}

/// Opens a session cookie value; `None` when it is forged, tampered, from an
/// unknown key, or past its absolute expiry at `now` (unix seconds).
pub fn open_session(sealer: &Sealer, value: &str, now: u64) -> Option<Session> {
    let json = sealer.open(SESSION_COOKIE, value)?;
    let p: SessionPayload = serde_json::from_str(&json).ok()?;
    // Checked again here: each field becomes an upstream header.
    let id_ok = match &p.w {
        None => is_valid_wechat_id(&p.o),
        Some(w) => {
            crate::wecom::is_valid_userid(&p.o)
                && is_valid_wechat_id(&w.c)
                && w.d.len() <= MAX_WECOM_DEPARTMENTS
        }
    };
    let valid = p.v == SESSION_VERSION
        && p.exp > now
        && id_ok
        && p.u.as_deref().is_none_or(is_valid_wechat_id)
        && is_valid_scope(&p.s);
    valid.then_some(Session {
        identity: Arc::new(Identity {
            openid: p.o,
            unionid: p.u,
            scope: p.s,
            nickname: p.n,
            headimgurl: p.h,
            snapshot: p.snap,
            wecom: p.w.map(|w| WecomMember {
                corpid: w.c,
                member: w.m,
                name: w.n,
                departments: w.d,
            }),
            header_values: HeaderValueCache::default(),
        }),
        sid: p.sid,
        issued_at: p.iat,
        expires_at: p.exp,
        seen_at: p.seen,
    })
}

/// How many opened session cookies [`VerifiedSessions`] keeps: about
/// 1 KiB each (the cookie and its session), so at most about 2 MiB.
pub const VERIFIED_SESSIONS: usize = 2048;

/// Session cookies already opened and verified, by their exact value, so
/// that a browser's next requests skip the AES-GCM open and the JSON parse
/// (about 1 µs, most of an authenticated decision).
///
/// Only values that opened are kept, so a forged or flipped cookie is never
/// a hit: it misses and fails [`open_session`] as before. The time checks
/// are made again on every hit. Bounded to [`VERIFIED_SESSIONS`] entries
/// (quick_cache's S3-FIFO-like eviction); a new [`crate::Gate`] (a reload,
/// new keys) starts empty. A hit shares the cached session: no allocation.
pub struct VerifiedSessions {
    cache: quick_cache::sync::Cache<Box<str>, Arc<Session>>,
}

impl Default for VerifiedSessions {
    fn default() -> Self {
        // Resolved now, not on the first request, which would allocate.
        std::sync::LazyLock::force(&crate::metrics::SESSION_CACHE_HITS);
        std::sync::LazyLock::force(&crate::metrics::SESSION_CACHE_MISSES);
        VerifiedSessions {
            cache: quick_cache::sync::Cache::new(VERIFIED_SESSIONS),
        }
    }
}

impl VerifiedSessions {
    /// [`open_session`], answered from the cache when `value` opened before.
    pub fn open(&self, sealer: &Sealer, value: &str, now: u64) -> Option<Arc<Session>> {
        if let Some(session) = self.cache.get(value) {
            crate::metrics::SESSION_CACHE_HITS.inc();
            return (session.expires_at > now).then_some(session);
        }
        crate::metrics::SESSION_CACHE_MISSES.inc();
        let session = Arc::new(open_session(sealer, value, now)?);
        self.cache.insert(value.into(), session.clone());
        Some(session)
    }
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
            snapshot: false,
            ..Default::default()
        }
    }

    fn session(identity: Identity) -> Session {
        Session {
            identity: Arc::new(identity),
            sid: "sid123".into(),
            issued_at: 1000,
            expires_at: 1060,
            seen_at: 1000,
        }
    }

    #[test]
    fn identity_headers_are_known_in_every_spelling() {
        for name in [
            "X-WeChat-OpenID",
            "x_wechat_openid",
            "X-WECHAT-Anything",
            "X-WeCom-UserID",
            "x_wecom_department",
            "X-WECOM_NAME",
        ] {
            assert!(is_identity_header(name.as_bytes()), "{name}");
        }
        for name in ["X-WeCo", "X-Wechat", "X-Forwarded-For", "WeCom-UserID", ""] {
            assert!(!is_identity_header(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn a_wecom_member_round_trips_and_gets_only_wecom_headers() {
        let s = Sealer::new(&Secret::new("0123456789abcdef0123456789abcdef")).unwrap();
        let member = Identity {
            openid: "li.si@corp".into(),
            scope: "snsapi_privateinfo".into(),
            headimgurl: Some("https://wework.qpic.cn/a/0".into()),
            wecom: Some(WecomMember {
                corpid: "ww0123456789abcdef".into(),
                member: true,
                name: Some("李四".into()),
                departments: vec![2, 5],
            }),
            ..Default::default()
        };
        let v = seal_session(&s, &session(member.clone()));
        assert_eq!(open_session(&s, &v, 1000), Some(session(member.clone())));
        let headers: Vec<(&str, String)> = member
            .upstream_headers()
            .map(|(n, v)| (n, v.into_owned()))
            .collect();
        assert_eq!(
            headers,
            vec![
                (HEADER_WECOM_USERID, "li.si@corp".to_owned()),
                (HEADER_WECOM_CORPID, "ww0123456789abcdef".to_owned()),
                (HEADER_WECOM_NAME, "%E6%9D%8E%E5%9B%9B".to_owned()),
                (HEADER_WECOM_DEPARTMENT, "2,5".to_owned()),
            ]
        );
        // A WeChat id rule does not hold a userid's `@`: a WeChat session
        // with one never opens.
        let forged = Identity {
            wecom: None,
            ..member
        };
        assert_eq!(
            open_session(&s, &seal_session(&s, &session(forged)), 1000),
            None
        );
    }

    #[test]
    fn sessions_round_trip_and_expire() {
        let s = Sealer::new(&Secret::new("0123456789abcdef0123456789abcdef")).unwrap();
        let v = seal_session(&s, &session(identity()));
        assert_eq!(open_session(&s, &v, 1059), Some(session(identity())));
        assert_eq!(open_session(&s, &v, 1060), None);
    }

    #[test]
    fn verified_sessions_answer_as_open_session_does() {
        let s = Sealer::new(&Secret::new("0123456789abcdef0123456789abcdef")).unwrap();
        let verified = VerifiedSessions::default();
        let v = seal_session(&s, &session(identity()));
        assert_eq!(
            verified.open(&s, &v, 1000).as_deref(),
            Some(&session(identity()))
        );
        assert_eq!(verified.cache.len(), 1);
        // A hit: same session, and the expiry is checked again.
        assert_eq!(
            verified.open(&s, &v, 1059).as_deref(),
            Some(&session(identity()))
        );
        assert_eq!(verified.open(&s, &v, 1060), None);
        // A copy with one character changed is not the cached value: refused.
        let mut forged = v.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(verified.open(&s, &forged, 1000), None);
        // Sealed under other keys (a reload): not opened by these.
        let other = Sealer::new(&Secret::new("fedcba9876543210fedcba9876543210")).unwrap();
        let theirs = seal_session(&other, &session(identity()));
        assert_eq!(verified.open(&s, &theirs, 1000), None);
        assert_eq!(verified.cache.len(), 1);
    }

    #[test]
    fn verified_sessions_stay_bounded() {
        let s = Sealer::new(&Secret::new("0123456789abcdef0123456789abcdef")).unwrap();
        let verified = VerifiedSessions::default();
        for i in 0..VERIFIED_SESSIONS * 3 {
            let mut one = session(identity());
            one.sid = format!("sid{i}");
            let v = seal_session(&s, &one);
            assert_eq!(verified.open(&s, &v, 1000).as_deref(), Some(&one));
        }
        assert!(verified.cache.len() <= VERIFIED_SESSIONS);
    }

    #[test]
    fn the_longest_identity_keeps_the_cookie_under_4_kib() {
        let s = Sealer::new(&Secret::new("0123456789abcdef0123456789abcdef")).unwrap();
        let mut id = identity();
        id.nickname = Some("🐼".repeat(500));
        id.headimgurl = Some(format!("https://thirdwx.qlogo.cn/{}", "a".repeat(480)));
        id.unionid = Some("u".repeat(128));
        id.openid = "o".repeat(128);
        let id = id.bounded();
        assert_eq!(id.nickname.as_ref().unwrap().len(), MAX_NICKNAME_BYTES);
        assert!(id.headimgurl.is_some());
        let mut session = session(id);
        session.sid = "s".repeat(32);
        session.expires_at = u64::MAX / 2;
        let cookie = format!(
            "{SESSION_COOKIE}={}; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=31622400",
            seal_session(&s, &session)
        );
        assert!(cookie.len() < 4096, "{}", cookie.len());
        let mut header_id = Identity::clone(&session.identity);
        header_id.snapshot = true;
        assert!(header_id
            .upstream_headers()
            .any(|h| h == (HEADER_SNAPSHOT, "1".into())));
    }

    #[test]
    fn nickname_header_is_percent_encoded_utf8() {
        let id = identity();
        let h: Vec<_> = id.upstream_headers().collect();
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
