//! The answers to a login that can't finish: a code from another browser,
//! a broken callback, and each way WeChat can refuse (docs/protocol.md §1,
//! "Errors of the JSON APIs"), as pages (zh/en) or JSON.

use super::*;

impl Gate {
    /// The answer to a code presented with a state other than the one it
    /// first came with (a leaked code tried in another browser): nothing of
    /// that login, a "link expired" page whose button starts a fresh login.
    pub(super) fn code_replayed(&self, return_to: &str, answer: AnswerAs, lang: Lang) -> Reply {
        let json = answer == AnswerAs::Json;
        tracing::warn!("refused a code that came back with another browser's state");
        crate::metrics::count_refused("code_other_state");
        if json {
            return Reply::json(
                400,
                &serde_json::json!({"error": "code_expired", "login_url": self.login_url(return_to, self.config.wechat.scope, LinkForm::Absolute)}),
            );
        }
        page(
            lang,
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
            Some((
                &self.login_url(return_to, self.config.wechat.scope, LinkForm::Path),
                Text {
                    zh: "重新登录",
                    en: "Log in again",
                },
            )),
        )
    }

    pub(super) fn bad_callback(&self, why: &str, lang: Lang) -> Reply {
        tracing::info!(reason = why, "refused a login callback");
        page(
            lang,
            400,
            Text {
                zh: "登录链接无效或已过期",
                en: "This login link is invalid or has expired",
            },
            Text {
                zh: "请重新登录。如果问题持续，请清除 Cookie 后再试。",
                en: "Please log in again. If this keeps happening, clear your cookies and retry.",
            },
            Some(why),
            Some((
                &self.login_url("/", self.config.wechat.scope, LinkForm::Path),
                Text {
                    zh: "重新登录",
                    en: "Log in again",
                },
            )),
        )
    }

    pub(super) fn login_failed(&self, e: &CallError, return_to: &str, lang: Lang) -> Reply {
        let retry = self.login_url(return_to, self.config.wechat.scope, LinkForm::Path);
        let again = Text {
            zh: "重新登录",
            en: "Log in again",
        };
        match e.errcode() {
            // Used by another exchange this gateway does not know of: start over.
            Some(ErrCode::CodeBeenUsed) => Reply::redirect(retry),
            Some(ErrCode::InvalidCode | ErrCode::CodeExpired) => page(
                lang,
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
                Some((&retry, again)),
            ),
            Some(
                code @ (ErrCode::InvalidAppid
                | ErrCode::InvalidAppSecret
                | ErrCode::IpNotWhitelisted
                | ErrCode::InvalidGrantType),
            ) => page(
                lang,
                500,
                Text {
                    zh: "网站配置错误",
                    en: "The site is misconfigured",
                },
                Text {
                    zh: "微信登录暂时不可用，网站管理员已收到通知。",
                    en: "WeChat login is unavailable; the site's operator has been told.",
                },
                Some(&format!("errcode {}", code.code())),
                None,
            ),
            Some(ErrCode::DailyQuotaReached | ErrCode::TooFrequent) => page(
                lang,
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
                Some((&retry, again)),
            )
            .with_header("Retry-After", "60".into()),
            _ if matches!(e, CallError::Coordination(_)) => page(
                lang,
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
                Some((&retry, again)),
            )
            .with_header("Retry-After", "5".into()),
            _ if matches!(e, CallError::WeChat(SnsError::Transport(_))) => page(
                lang,
                503,
                Text {
                    zh: "微信暂时无法访问",
                    en: "WeChat is not reachable",
                },
                Text {
                    zh: "请稍后重试。",
                    en: "Please try again in a moment.",
                },
                None,
                Some((&retry, again)),
            )
            .with_header("Retry-After", "5".into()),
            errcode => page(
                lang,
                502,
                Text {
                    zh: "微信登录失败",
                    en: "WeChat login failed",
                },
                Text {
                    zh: "请重试。",
                    en: "Please try again.",
                },
                errcode.map(|c| format!("errcode {}", c.code())).as_deref(),
                Some((&retry, again)),
            ),
        }
    }
}
