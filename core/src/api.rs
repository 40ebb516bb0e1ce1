//! The gate's answers to scripts: JSON bodies, and the plain text WeChat's
//! server reads from the push URL. Sibling of [`crate::pages`], which
//! renders the same outcomes as HTML for people.
//!
//! Errors are `{"error": NAME, "error_description"?, "errcode"?,
//! "login_url"?, "retry_after"?}` with OAuth 2.0's names (docs/protocol.md,
//! "The gate's JSON errors"): RFC 6749 §5.2 (`invalid_request`,
//! `invalid_grant`, `access_denied`, `server_error`,
//! `temporarily_unavailable`), RFC 6750 §3.1 (`insufficient_scope`) and
//! OpenID Connect's `login_required`; WeChat's `errcode` beside them when
//! WeChat refused.

use serde::Serialize;

use crate::pages::Reply;
use crate::session::Identity;

/// An error's name, as OAuth 2.0 spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorName {
    /// No session: log in at `login_url` (OpenID Connect Core §3.1.2.6).
    LoginRequired,
    /// The session's scope lacks `snsapi_userinfo` (RFC 6750 §3.1).
    InsufficientScope,
    /// The request is malformed: method, body, state, route (RFC 6749 §5.2).
    InvalidRequest,
    /// The authorization code is invalid, expired, used, or came back to
    /// another browser (RFC 6749 §5.2).
    InvalidGrant,
    /// Refused: not this browser's scene, a snapshot-page user (RFC 6749 §4.1.2.1).
    AccessDenied,
    /// WeChat or the store is out of reach, or this client is over its
    /// login limit: retry later (RFC 6749 §4.1.2.1).
    TemporarilyUnavailable,
    /// WeChat refused, or the site is misconfigured (RFC 6749 §4.1.2.1).
    ServerError,
}

/// A JSON error answer. Built with [`ApiError::new`] and the `with_…`
/// methods; [`ApiError::reply`] renders it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    status: u16,
    error: ErrorName,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_description: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errcode: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    login_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with its HTTP status.
    pub fn new(status: u16, error: ErrorName) -> ApiError {
        ApiError {
            status,
            error,
            error_description: None,
            errcode: None,
            login_url: None,
            retry_after: None,
        }
    }

    /// `401 login_required` with where to log in.
    pub fn login_required(login_url: String) -> ApiError {
        ApiError::new(401, ErrorName::LoginRequired).with_login_url(login_url)
    }

    /// `503 temporarily_unavailable`, `Retry-After: 5`.
    pub fn unavailable() -> ApiError {
        ApiError::new(503, ErrorName::TemporarilyUnavailable).with_retry_after(5)
    }

    /// What went wrong, for the developer reading it.
    pub fn with_description(mut self, description: &'static str) -> ApiError {
        self.error_description = Some(description);
        self
    }

    /// WeChat's errcode behind it.
    pub fn with_errcode(mut self, errcode: Option<i64>) -> ApiError {
        self.errcode = errcode;
        self
    }

    /// Where a new login starts.
    pub fn with_login_url(mut self, login_url: String) -> ApiError {
        self.login_url = Some(login_url);
        self
    }

    /// When to retry, in seconds (also sent as `Retry-After`).
    pub fn with_retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds);
        self
    }

    /// The error's name.
    pub fn name(&self) -> ErrorName {
        self.error
    }

    /// The answer: the status, the JSON body, `Retry-After` when set.
    pub fn reply(&self) -> Reply {
        let mut reply = json(self.status, self).with_errcode(self.errcode);
        if let Some(seconds) = self.retry_after {
            reply = reply.with_header("Retry-After", seconds.to_string());
        }
        reply
    }
}

/// `value` as a JSON answer.
pub(crate) fn json(status: u16, value: &impl Serialize) -> Reply {
    let body = serde_json::to_string(value).expect("answers serialize");
    Reply::new(status, "application/json; charset=utf-8", body)
}

/// `200` with the session's identity: `{openid, unionid, scope, nickname,
/// headimgurl[, snapshot][, checked][, wecom]}` (`userinfo`, the SPA
/// hand-off); a WeCom login adds `wecom: {corpid, userid | openid, name,
/// department}` (its `openid` is then the member's userid).
pub(crate) fn identity(identity: &Identity, checked: Option<bool>) -> Reply {
    #[derive(Serialize)]
    struct Wecom<'a> {
        corpid: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        userid: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        openid: Option<&'a str>,
        name: Option<&'a str>,
        department: &'a [u64],
    }
    #[derive(Serialize)]
    struct Body<'a> {
        openid: &'a str,
        unionid: Option<&'a str>,
        scope: &'a str,
        nickname: Option<&'a str>,
        headimgurl: Option<&'a str>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        snapshot: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        checked: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        wecom: Option<Wecom<'a>>,
    }
    json(
        200,
        &Body {
            openid: &identity.openid,
            unionid: identity.unionid.as_deref(),
            scope: &identity.scope,
            nickname: identity.nickname.as_deref(),
            headimgurl: identity.headimgurl.as_deref(),
            snapshot: identity.snapshot,
            checked,
            wecom: identity.wecom.as_ref().map(|w| Wecom {
                corpid: &w.corpid,
                userid: w.member.then_some(identity.openid.as_str()),
                openid: (!w.member).then_some(identity.openid.as_str()),
                name: w.name.as_deref(),
                department: &w.departments,
            }),
        },
    )
}

/// Readiness of one dependency, as `ready` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// It answered.
    Ok,
    /// It did not answer in time.
    Unreachable,
}

/// `ready`: `200 {"ready": true, "config": "ok", "store": "ok", "upstream":
/// "ok"}`, or `503` with `"unreachable"` for what is not ready.
pub(crate) fn ready(store: Health, upstream: Health) -> Reply {
    #[derive(Serialize)]
    struct Body {
        ready: bool,
        config: Health,
        store: Health,
        upstream: Health,
    }
    let ready = store == Health::Ok && upstream == Health::Ok;
    let status = if ready { 200 } else { 503 };
    json(
        status,
        &Body {
            ready,
            config: Health::Ok,
            store,
            upstream,
        },
    )
}

/// `healthz`: `200 ok`.
pub(crate) fn healthz() -> Reply {
    Reply::text(200, "ok\n")
}

/// The `auth` route's "may pass": `202`, empty (identity headers added by
/// the caller).
pub(crate) fn accepted() -> Reply {
    Reply::text(202, "")
}

/// `authorize-url`: `{"url": …}`.
pub(crate) fn authorize_url(url: &str) -> Reply {
    #[derive(Serialize)]
    struct Body<'a> {
        url: &'a str,
    }
    json(200, &Body { url })
}

/// `jssdk-config`: what `wx.config` takes, `{"appId", "timestamp" (unix
/// seconds), "nonceStr", "signature"}`, not to be cached.
pub(crate) fn jssdk_config(appid: &str, timestamp: u64, nonce_str: &str, signature: &str) -> Reply {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        app_id: &'a str,
        timestamp: u64,
        nonce_str: &'a str,
        signature: &'a str,
    }
    json(
        200,
        &Body {
            app_id: appid,
            timestamp,
            nonce_str,
            signature,
        },
    )
    .with_header("Cache-Control", "no-store".into())
}

/// `qr/new`: the scene, WeChat's ticket, the image URL and the lifetime
/// (seconds).
pub(crate) fn qr_created(scene: &str, ticket: &str, qr_image_url: &str, expires_in: u64) -> Reply {
    #[derive(Serialize)]
    struct Body<'a> {
        scene: &'a str,
        ticket: &'a str,
        qr_image_url: &'a str,
        expires_in: u64,
    }
    json(
        200,
        &Body {
            scene,
            ticket,
            qr_image_url,
            expires_in,
        },
    )
}

/// `qr/image`: `200` SVG of the QR code encoding `url` (the scene's
/// ticket URL); `404 invalid_request` when there is none (a scene cookie
/// from before this route).
pub(crate) fn qr_image(url: &str) -> Reply {
    match qr_svg(url) {
        Some(svg) => Reply::new(200, "image/svg+xml", svg),
        None => ApiError::new(404, ErrorName::InvalidRequest)
            .with_description("this scene has no QR code to draw; ask qr/new again")
            .reply(),
    }
}

/// A QR code encoding `text` as SVG (240 px at least); `None` for an empty
/// or too long text. The markup is the renderer's own: safe inside HTML.
pub(crate) fn qr_svg(text: &str) -> Option<String> {
    let code = (!text.is_empty())
        .then(|| qrcode::QrCode::new(text.as_bytes()).ok())
        .flatten()?;
    Some(
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(240, 240)
            .build(),
    )
}

/// Where a scene is, as `qr/status` answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SceneAnswer<'a> {
    /// Waiting for a scan.
    Pending,
    /// Scanned; the phone is asked to confirm.
    Scanned,
    /// Logged in: go on to `redirect`.
    Confirmed { redirect: &'a str },
    /// Refused on the phone.
    Refused,
    /// Unknown, expired or used.
    Expired,
}

/// `qr/status`: `200 {"status": "pending" | "scanned" | "confirmed" |
/// "refused" | "expired"[, "redirect"][, "hint"]}`.
pub(crate) fn scene(answer: &SceneAnswer<'_>) -> Reply {
    #[derive(Serialize)]
    struct Body<'a> {
        status: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        redirect: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        hint: Option<&'static str>,
    }
    let (status, redirect, hint) = match answer {
        SceneAnswer::Pending => ("pending", None, None),
        SceneAnswer::Scanned => ("scanned", None, Some("confirm the login on the phone")),
        SceneAnswer::Confirmed { redirect } => ("confirmed", Some(*redirect), None),
        SceneAnswer::Refused => ("refused", None, None),
        SceneAnswer::Expired => ("expired", None, None),
    };
    json(
        200,
        &Body {
            status,
            redirect,
            hint,
        },
    )
}

/// What the push URL answers WeChat's server (plain text, or a passive
/// reply message) and anyone else who posts there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PushAnswer<'a> {
    /// `200 success`: handled (WeChat stops retrying).
    Success,
    /// `200 <echostr>`: the server URL check passed.
    Echo(&'a str),
    /// `200` XML: a passive reply message (plain or sealed for safe mode).
    Message(String),
    /// `404`: pushes are off (no `push_token`).
    Off,
    /// `401`: a signature that does not hold on the server URL check.
    BadSignature,
    /// `401`: a plaintext push where safe mode is configured.
    PlaintextRefused,
    /// `401`: forged, stale or replayed.
    Refused,
    /// `400`: a safe-mode push without a configured key.
    SafeModeOff,
    /// `400`: not a push this gate can read.
    Malformed,
    /// `413`: larger than a push can be.
    TooLarge,
    /// `503`: the store is down; WeChat retries.
    StoreDown,
}

/// The push URL's answer.
pub(crate) fn push(answer: PushAnswer<'_>) -> Reply {
    let (status, text) = match answer {
        PushAnswer::Success => (200, "success"),
        PushAnswer::Echo(echostr) => return Reply::text(200, echostr),
        PushAnswer::Message(xml) => return Reply::new(200, "application/xml; charset=utf-8", xml),
        PushAnswer::Off => (404, "not found\n"),
        PushAnswer::BadSignature => (401, "bad signature\n"),
        PushAnswer::PlaintextRefused => {
            (401, "refused: this server accepts safe-mode pushes only\n")
        }
        PushAnswer::Refused => (401, "refused\n"),
        PushAnswer::SafeModeOff => (400, "safe mode is not configured\n"),
        PushAnswer::Malformed => (400, "malformed\n"),
        PushAnswer::TooLarge => (413, "push body too large\n"),
        PushAnswer::StoreDown => (503, "the login store is unreachable; retry\n"),
    };
    Reply::text(status, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_oauth_names_and_only_what_is_set() {
        let r = ApiError::new(403, ErrorName::InsufficientScope)
            .with_login_url("https://a/_wechat/login".into())
            .with_errcode(Some(48001))
            .reply();
        assert_eq!(r.status, 403);
        assert_eq!(r.errcode, Some(48001));
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "insufficient_scope", "errcode": 48001, "login_url": "https://a/_wechat/login"})
        );
        let r = ApiError::unavailable().reply();
        assert_eq!((r.status, r.header("retry-after")), (503, Some("5")));
        assert!(r.body.contains("\"temporarily_unavailable\""), "{}", r.body);
    }

    #[test]
    fn scene_answers_name_their_status() {
        let r = scene(&SceneAnswer::Confirmed { redirect: "/a" });
        assert_eq!(r.body, r#"{"status":"confirmed","redirect":"/a"}"#);
        assert_eq!(scene(&SceneAnswer::Expired).body, r#"{"status":"expired"}"#);
        assert_eq!(push(PushAnswer::Success).body, "success");
        assert_eq!(push(PushAnswer::TooLarge).status, 413);
    }
}
