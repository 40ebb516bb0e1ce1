//! Every short page the gate answers people with, by what happened: the
//! login's refusals and failures, the desktop pages, the phone's
//! confirmation steps. The words (Chinese and English) live here only;
//! the flow names a [`Notice`] and renders it.

use super::{page, Branding, Lang, Reply, Text};
use crate::path::PathError;

/// Why a callback's state or code can't be used: the detail line of its
/// page, in the page's language (and in English for logs and JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallbackProblem {
    /// `code` or `state` twice.
    DuplicateParameter,
    /// No `state`, or not one the gate makes.
    MissingState,
    /// No state cookie of this browser matches.
    StateMismatch,
    /// A `code` WeChat would not send.
    MalformedCode,
    /// The state went with another code already.
    StateUsed,
}

impl CallbackProblem {
    fn text(self) -> Text {
        let (zh, en) = match self {
            CallbackProblem::DuplicateParameter => ("参数重复", "duplicate parameter"),
            CallbackProblem::MissingState => ("缺少或无效的 state", "missing or malformed state"),
            CallbackProblem::StateMismatch => (
                "state 与此浏览器的登录不符",
                "state does not match this browser's login",
            ),
            CallbackProblem::MalformedCode => ("无效的 code", "malformed code"),
            CallbackProblem::StateUsed => (
                "这次登录的 state 已用过",
                "this login's state was already used",
            ),
        };
        Text { zh, en }
    }

    /// In English, for logs and JSON.
    pub(crate) fn en(self) -> &'static str {
        self.text().en
    }
}

/// A path's problem in `lang`.
fn path_problem(e: PathError, lang: Lang) -> String {
    let zh = match e {
        PathError::NotAbsolute => "路径必须以 / 开头",
        PathError::EncodedSeparator => "路径含有编码的 /、\\ 或 NUL",
        PathError::BadCharacter => "路径含有反斜杠或控制字符",
        PathError::BadEscape => "路径含有无效的百分号编码",
        PathError::AboveRoot => "路径越过了根目录",
        PathError::DotParameter => "路径含有带参数的点段",
    };
    match lang {
        Lang::Zh => zh.to_owned(),
        Lang::En => e.to_string(),
    }
}

/// `errcode N` in `lang`.
fn errcode_detail(code: i64, lang: Lang) -> String {
    match lang {
        Lang::Zh => format!("错误码 {code}"),
        Lang::En => format!("errcode {code}"),
    }
}

const LOG_IN_AGAIN: Text = Text {
    zh: "重新登录",
    en: "Log in again",
};
const TRY_AGAIN: Text = Text {
    zh: "重新登录",
    en: "Try again",
};

/// A page's content: status, title, message, an optional detail line and
/// an optional button (its link and label). Links are the gate's own
/// paths or the login URL, built by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice<'a> {
    /// `400`: a path with no safe canonical form, and why.
    BadPath { problem: PathError },
    /// `404`: under the prefix, but no route.
    NotFound,
    /// `401`: a desktop browser on a site without a desktop login: open the
    /// `link` in WeChat, or `login` if this is WeChat after all.
    OpenInWeChat { link: &'a str, login: &'a str },
    /// `401`: a phone's own browser on a site that logs in through WeCom
    /// only: open the `link` in WeCom, or use WeCom's web login at `login`.
    OpenInWecom { link: &'a str, login: &'a str },
    /// `401`: a desktop browser on a qrconnect site: log in at `login`.
    QrconnectLogin { login: &'a str },
    /// `400`: a code that came back with another browser's state.
    LinkExpired { retry: &'a str },
    /// `400`: a callback whose state or code can't be used, and why.
    BadCallback {
        why: CallbackProblem,
        retry: &'a str,
    },
    /// `403`: the user declined the authorization.
    Declined { retry: &'a str },
    /// `403`: a snapshot-page user (`allow_snapshot_users = false`).
    SnapshotUser { retry: &'a str },
    /// `403`: WeChat gave no `unionid` and the site needs one
    /// (`require_unionid`): the Open Platform binding is missing.
    NoUnionid,
    /// `403`: a WeCom user who is not a member of the company (and the
    /// site does not `allow_non_members`).
    WecomNotMember { retry: &'a str },
    /// `403`: WeCom says the member is outside the app's visible range
    /// (60011).
    WecomNotVisible { errcode: i64 },
    /// `400`: WeChat says the code is invalid or expired (40029, 42003).
    LoginExpired { retry: &'a str },
    /// `500`: WeChat refuses the site's credentials (`errcode`).
    Misconfigured { errcode: i64 },
    /// `503`: WeChat's quota or frequency limit (45009, 45011).
    WeChatBusy { retry: &'a str },
    /// `503`: the store the instances share is out of reach.
    StoreDown { retry: &'a str },
    /// `503`: WeChat is out of reach, or answers HTTP 5xx.
    WeChatUnreachable { retry: &'a str },
    /// `502`: any other WeChat refusal.
    WeChatFailed {
        errcode: Option<i64>,
        retry: &'a str,
    },
    /// `429`: this client is over `[limits]`.
    TooManyLogins,
    /// `502`: the application behind the gate did not answer.
    UpstreamDown,
    /// `400`: the confirmation link is invalid or expired.
    ConfirmLinkInvalid,
    /// `403`: the confirmation belongs to another WeChat user.
    ConfirmNotYours,
    /// `403`: an answer posted without the confirmation page's session.
    ConfirmOpenFirst,
    /// `200`: the phone confirmed the login.
    Confirmed,
    /// `200`: the phone refused the login.
    Refused,
    /// `409`: refused already.
    RefusedAlready,
    /// `409`: confirmed already.
    ConfirmedAlready,
    /// `410`: the scene is over (logged in or expired).
    ConfirmOver,
    /// `403`: logged in, but the route's policy does not let this user in;
    /// `who` is the user's openid, `logout` the logout link.
    NotAllowed { who: &'a str, logout: &'a str },
    /// `403`: a `followers` route, and this user does not follow the
    /// Official Account; `again` is the page, to try once they do.
    NotFollowing { who: &'a str, again: &'a str },
}

impl Notice<'_> {
    /// The page in `lang`, in the site's branding. The confirmation pages
    /// are never framed.
    pub(crate) fn reply(&self, lang: Lang, brand: &Branding) -> Reply {
        let detail_text;
        let (status, title, message, detail, action): (u16, Text, Text, Option<&str>, _) =
            match self {
                Notice::BadPath { problem } => {
                    detail_text = path_problem(*problem, lang);
                    (
                    400,
                    Text {
                        zh: "无效的地址",
                        en: "Invalid address",
                    },
                    Text {
                        zh: "这个地址的路径无法识别。",
                        en: "The path of this address can't be used.",
                    },
                    Some(detail_text.as_str()),
                    None,
                )
                }
                Notice::NotFound => (
                    404,
                    Text {
                        zh: "页面不存在",
                        en: "Not found",
                    },
                    Text {
                        zh: "没有这个登录地址。",
                        en: "There is no such login address.",
                    },
                    None,
                    None,
                ),
                Notice::OpenInWeChat { link, login } => (
                    401,
                    Text {
                        zh: "请在微信中打开",
                        en: "Open this page in WeChat",
                    },
                    Text {
                        zh: "此页面需要微信登录。请复制链接，在微信中打开。",
                        en: "This page needs a WeChat login. Copy the link and open it in WeChat.",
                    },
                    Some(*link),
                    Some((
                        *login,
                        Text {
                            zh: "已在微信中？继续登录",
                            en: "In WeChat already? Continue",
                        },
                    )),
                ),
                Notice::OpenInWecom { link, login } => (
                    401,
                    Text {
                        zh: "请在企业微信中打开",
                        en: "Open this page in WeCom",
                    },
                    Text {
                        zh: "此页面需要企业微信登录。请复制链接，在企业微信中打开。",
                        en: "This page needs a WeCom login. Copy the link and open it in WeCom.",
                    },
                    Some(*link),
                    Some((
                        *login,
                        Text {
                            zh: "用企业微信扫码登录",
                            en: "Log in with WeCom's QR code",
                        },
                    )),
                ),
                Notice::QrconnectLogin { login } => {
                    let label = Text {
                        zh: "微信扫码登录",
                        en: "Log in with WeChat",
                    };
                    (
                        401,
                        label,
                        Text {
                            zh: "请使用微信扫描二维码登录。",
                            en: "Scan a QR code with WeChat to log in.",
                        },
                        None,
                        Some((*login, label)),
                    )
                }
                Notice::LinkExpired { retry } => (
                    400,
                    Text {
                        zh: "登录链接已过期",
                        en: "This login link has expired",
                    },
                    Text {
                        zh: "请重新登录。",
                        en: "Please log in again.",
                    },
                    None,
                    Some((*retry, LOG_IN_AGAIN)),
                ),
                Notice::BadCallback { why, retry } => {
                    detail_text = why.text().get(lang).to_owned();
                    (
                    400,
                    Text {
                        zh: "登录链接无效或已过期",
                        en: "This login link is invalid or has expired",
                    },
                    Text {
                        zh: "请重新登录。如果问题持续，请清除 Cookie 后再试。",
                        en: "Please log in again. If this keeps happening, clear your cookies and retry.",
                    },
                    Some(detail_text.as_str()),
                    Some((*retry, LOG_IN_AGAIN)),
                )
                }
                Notice::Declined { retry } => (
                    403,
                    Text {
                        zh: "您拒绝了授权",
                        en: "You declined the login",
                    },
                    Text {
                        zh: "没有微信授权，无法登录。",
                        en: "Without WeChat's authorization you can't log in.",
                    },
                    None,
                    Some((*retry, TRY_AGAIN)),
                ),
                Notice::NoUnionid => (
                    403,
                    Text {
                        zh: "此网站暂时无法登录",
                        en: "This site can't log you in yet",
                    },
                    Text {
                        zh: "网站需要微信 UnionID 来识别同一用户，但微信没有提供。网站管理员需要在微信开放平台（open.weixin.qq.com）把公众号和网站应用绑定到同一个开放平台账号。",
                        en: "The site identifies people by their WeChat UnionID, which WeChat did not give. The site's administrator needs to bind the Official Account (and the website app) to one account on the WeChat Open Platform (open.weixin.qq.com).",
                    },
                    None,
                    None,
                ),
                Notice::WecomNotMember { retry } => (
                    403,
                    Text {
                        zh: "此网站仅限企业成员",
                        en: "This site is for the company's members",
                    },
                    Text {
                        zh: "您登录的企业微信账号不是本企业的成员。请用本企业的企业微信账号登录。",
                        en: "The WeCom account you logged in with is not a member of this company. Log in with your company's WeCom account.",
                    },
                    None,
                    Some((*retry, LOG_IN_AGAIN)),
                ),
                Notice::WecomNotVisible { errcode } => {
                    detail_text = errcode_detail(*errcode, lang);
                    (
                        403,
                        Text {
                            zh: "您无权使用此应用",
                            en: "You can't use this app",
                        },
                        Text {
                            zh: "此企业微信应用的可见范围不包括您。请联系企业管理员在管理后台把您加入应用的可见范围。",
                            en: "This WeCom app's visible range does not include you. Ask the company's administrator to add you to the app's visible range in the admin console.",
                        },
                        Some(detail_text.as_str()),
                        None,
                    )
                }
                Notice::SnapshotUser { retry } => (
                    403,
                    Text {
                        zh: "请打开完整页面",
                        en: "Open the full page",
                    },
                    Text {
                        zh: "您正在浏览快照页，无法登录。请点击“使用完整服务”后再试。",
                        en: "This is a snapshot preview, which can't log in. Open the full page and try again.",
                    },
                    None,
                    Some((*retry, TRY_AGAIN)),
                ),
                Notice::LoginExpired { retry } => (
                    400,
                    Text {
                        zh: "登录已过期",
                        en: "The login has expired",
                    },
                    Text {
                        zh: "请重新登录。",
                        en: "Please log in again.",
                    },
                    None,
                    Some((*retry, LOG_IN_AGAIN)),
                ),
                Notice::Misconfigured { errcode } => {
                    detail_text = errcode_detail(*errcode, lang);
                    (
                        500,
                        Text {
                            zh: "网站配置错误",
                            en: "The site is misconfigured",
                        },
                        Text {
                            zh: "微信登录暂时不可用，网站管理员已收到通知。",
                            en: "WeChat login is unavailable; the site's operator has been told.",
                        },
                        Some(detail_text.as_str()),
                        None,
                    )
                }
                Notice::WeChatBusy { retry } => (
                    503,
                    Text {
                        zh: "请稍后再试",
                        en: "Please try again later",
                    },
                    Text {
                        zh: "登录请求过多。",
                        en: "Too many logins right now.",
                    },
                    None,
                    Some((*retry, LOG_IN_AGAIN)),
                ),
                Notice::StoreDown { retry } => (
                    503,
                    Text {
                        zh: "登录暂时不可用",
                        en: "Login is unavailable for a moment",
                    },
                    Text {
                        zh: "请稍后重试。已登录的用户不受影响。",
                        en: "Please try again in a moment. Signed-in users are not affected.",
                    },
                    None,
                    Some((*retry, LOG_IN_AGAIN)),
                ),
                Notice::WeChatUnreachable { retry } => (
                    503,
                    Text {
                        zh: "微信暂时不可用",
                        en: "WeChat is unavailable",
                    },
                    Text {
                        zh: "请稍后重试。",
                        en: "Please try again in a moment.",
                    },
                    None,
                    Some((*retry, LOG_IN_AGAIN)),
                ),
                Notice::WeChatFailed { errcode, retry } => {
                    detail_text = errcode.map(|c| errcode_detail(c, lang)).unwrap_or_default();
                    (
                        502,
                        Text {
                            zh: "微信登录失败",
                            en: "WeChat login failed",
                        },
                        Text {
                            zh: "请重试。",
                            en: "Please try again.",
                        },
                        errcode.map(|_| detail_text.as_str()),
                        Some((*retry, LOG_IN_AGAIN)),
                    )
                }
                Notice::TooManyLogins => (
                    429,
                    Text {
                        zh: "请求过于频繁",
                        en: "Too many login attempts",
                    },
                    Text {
                        zh: "请稍后再试。",
                        en: "Please wait a moment and try again.",
                    },
                    None,
                    None,
                ),
                Notice::UpstreamDown => (
                    502,
                    Text {
                        zh: "网站暂时无法访问",
                        en: "The site is not answering",
                    },
                    Text {
                        zh: "应用暂时没有响应，请稍后重试。你的登录仍然有效。",
                        en: "The application did not answer; please try again in a moment. You are still logged in.",
                    },
                    None,
                    None,
                ),
                Notice::ConfirmLinkInvalid => (
                    400,
                    Text {
                        zh: "链接无效或已过期",
                        en: "This link is invalid or expired",
                    },
                    Text {
                        zh: "请在电脑上刷新二维码，重新扫码。",
                        en: "Refresh the QR code on the computer and scan it again.",
                    },
                    None,
                    None,
                ),
                Notice::ConfirmNotYours => (
                    403,
                    Text {
                        zh: "不是你的登录请求",
                        en: "Not your login request",
                    },
                    Text {
                        zh: "这个确认链接属于扫码的微信用户，只有他本人可以确认。",
                        en: "This confirmation belongs to the WeChat user who scanned; only they can answer it.",
                    },
                    None,
                    None,
                ),
                Notice::ConfirmOpenFirst => (
                    403,
                    Text {
                        zh: "请先打开确认页面",
                        en: "Open the confirmation page first",
                    },
                    Text {
                        zh: "请点击微信消息中的链接。",
                        en: "Tap the link in the WeChat message.",
                    },
                    None,
                    None,
                ),
                Notice::NotAllowed { who, logout } => (
                    403,
                    Text {
                        zh: "没有访问权限",
                        en: "Not allowed",
                    },
                    Text {
                        zh: "你已用微信登录，但这个页面不对你的账号开放。可以退出后换一个账号登录。",
                        en: "You are logged in with WeChat, but this page is not open to your account. You can log out and log in with another one.",
                    },
                    Some(*who),
                    Some((
                        *logout,
                        Text {
                            zh: "退出登录",
                            en: "Log out",
                        },
                    )),
                ),
                Notice::NotFollowing { who, again } => (
                    403,
                    Text {
                        zh: "请先关注公众号",
                        en: "Follow the Official Account first",
                    },
                    Text {
                        zh: "这个页面只对公众号的关注者开放。在微信里关注公众号后，点下面的按钮再试一次。",
                        en: "This page is open to followers of the Official Account. Follow it in WeChat, then tap the button below.",
                    },
                    Some(*who),
                    Some((
                        *again,
                        Text {
                            zh: "我已关注，再试一次",
                            en: "I follow it now: try again",
                        },
                    )),
                ),
                Notice::Confirmed => (
                    200,
                    Text {
                        zh: "已确认登录",
                        en: "Login confirmed",
                    },
                    Text {
                        zh: "电脑上的网页正在登录，你可以关闭此页。",
                        en: "The browser on the computer is logging in; you can close this page.",
                    },
                    None,
                    None,
                ),
                Notice::Refused => (
                    200,
                    Text {
                        zh: "已拒绝登录",
                        en: "Login refused",
                    },
                    Text {
                        zh: "那个浏览器没有登录。如果不是你本人在登录，有人可能在冒用你的二维码。",
                        en: "That browser was not logged in. If it was not you, someone may have shown you their QR code.",
                    },
                    None,
                    None,
                ),
                Notice::RefusedAlready => (
                    409,
                    Text {
                        zh: "已拒绝登录",
                        en: "Login refused",
                    },
                    Text {
                        zh: "这次登录已被拒绝。",
                        en: "This login was refused already.",
                    },
                    None,
                    None,
                ),
                Notice::ConfirmedAlready => (
                    409,
                    Text {
                        zh: "已确认登录",
                        en: "Login confirmed",
                    },
                    Text {
                        zh: "这次登录已经确认过了。",
                        en: "This login was confirmed already.",
                    },
                    None,
                    None,
                ),
                Notice::ConfirmOver => (
                    410,
                    Text {
                        zh: "登录请求已结束",
                        en: "This login request is over",
                    },
                    Text {
                        zh: "它已完成或已过期。请在电脑上刷新二维码。",
                        en: "It was completed or has expired. Refresh the QR code on the computer.",
                    },
                    None,
                    None,
                ),
            };
        // The address to copy, as a code to scan with WeChat too.
        let qr = match self {
            Notice::OpenInWeChat { link, .. } => crate::api::qr_svg(link),
            _ => None,
        };
        let figure = qr.as_deref().map(|svg| {
            (
                svg,
                Text {
                    zh: "或用微信扫一扫，在微信中打开",
                    en: "Or scan it with WeChat to open it there",
                },
            )
        });
        let reply = page(brand, lang, status, title, message, detail, figure, action);
        match self {
            Notice::ConfirmLinkInvalid
            | Notice::ConfirmNotYours
            | Notice::ConfirmOpenFirst
            | Notice::Confirmed
            | Notice::Refused
            | Notice::RefusedAlready
            | Notice::ConfirmedAlready
            | Notice::ConfirmOver => no_frames(reply),
            _ => reply,
        }
    }
}

/// Never framed: no page of another site can put a button of this one
/// under a user's tap.
pub(crate) fn no_frames(reply: Reply) -> Reply {
    reply
        .with_header("X-Frame-Options", "DENY".into())
        .with_header("Content-Security-Policy", "frame-ancestors 'none'".into())
}

/// The passive reply to a scan with `scene_confirm`: a text message linking
/// to the confirmation page (`link`, absolute), in both languages.
pub(crate) fn confirm_message(link: &str) -> String {
    let link = html_escape::encode_double_quoted_attribute(link);
    format!(
        "有浏览器请求以你的微信登录，请确认是你本人：<a href=\"{link}\">查看并确认</a>\n\
         A browser asks to log in as you: <a href=\"{link}\">review and confirm</a>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_have_their_status_words_and_frame_rules() {
        let r = Notice::Misconfigured { errcode: 40125 }.reply(Lang::En, &Branding::default());
        assert_eq!(r.status, 500);
        assert!(r.body.contains("misconfigured") && r.body.contains("errcode 40125"));
        assert!(r.header("x-frame-options").is_none());
        let r = Notice::ConfirmNotYours.reply(Lang::Zh, &Branding::default());
        assert_eq!((r.status, r.header("x-frame-options")), (403, Some("DENY")));
        let r = Notice::BadCallback {
            why: CallbackProblem::StateMismatch,
            retry: "/_wechat/login?rd=%2F",
        }
        .reply(Lang::Zh, &Branding::default());
        assert!(r.body.contains("state 与此浏览器的登录不符"), "{}", r.body);
        assert!(r.body.contains("/_wechat/login?rd=%2F"));
        let r = Notice::Misconfigured { errcode: 40125 }.reply(Lang::Zh, &Branding::default());
        assert!(r.body.contains("错误码 40125"), "{}", r.body);
        let r = Notice::BadPath {
            problem: PathError::AboveRoot,
        }
        .reply(Lang::En, &Branding::default());
        assert!(
            r.body.contains("the path climbs above the root"),
            "{}",
            r.body
        );
        assert!(confirm_message("https://a/?t=\"x").contains("&quot;x"));
        let r = Notice::OpenInWeChat {
            link: "https://app.example.com/orders?id=1",
            login: "/_wechat/login?rd=%2Forders",
        }
        .reply(Lang::En, &Branding::default());
        assert!(
            r.body.contains("<svg") && r.body.contains("scan it with WeChat"),
            "{}",
            r.body
        );
        assert!(!Notice::NotFound
            .reply(Lang::En, &Branding::default())
            .body
            .contains("<svg"));
    }
}
