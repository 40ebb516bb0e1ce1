//! The answers to a login that can't finish: a state used already, a code
//! from another browser, a broken callback, and each way WeChat can refuse
//! (docs/protocol.md §1, "Errors of the JSON APIs"). A failure is named
//! once ([`LoginFailure`]) and rendered as a page ([`Notice`]) or as JSON
//! ([`ApiError`]).

use super::*;

/// Why a login did not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LoginFailure {
    /// The state already went with another code.
    StateUsed,
    /// The code came back with another browser's state (a leaked code).
    CodeOtherBrowser,
    /// WeChat says the code was used (40163) by an exchange this gate
    /// does not know of: start over.
    CodeUsed,
    /// WeChat says the code is invalid or expired (40029, 42003).
    CodeInvalid(ErrCode),
    /// WeChat refuses the site's credentials (40013, 40125, 40164, 40002).
    Misconfigured(ErrCode),
    /// WeChat's quota or frequency limit (45009, 45011).
    WeChatBusy(ErrCode),
    /// The store the instances share is out of reach.
    StoreDown,
    /// WeChat is out of reach, or answers HTTP 5xx.
    WeChatUnreachable,
    /// Any other WeChat refusal, or an unreadable answer.
    WeChatFailed(Option<ErrCode>),
    /// A snapshot-page user, refused by configuration.
    SnapshotUser,
    /// A login without a `unionid` on a site with `require_unionid`.
    NoUnionid,
    /// A WeCom user outside the company (no `allow_non_members`).
    NotMember,
    /// WeCom says the member is outside the app's visible range (60011).
    NotVisible,
}

impl LoginFailure {
    /// The failure behind an exchange's error.
    pub(super) fn of(e: &CallError) -> LoginFailure {
        match (e, e.errcode()) {
            (_, Some(ErrCode::CodeBeenUsed)) => LoginFailure::CodeUsed,
            (_, Some(code @ (ErrCode::InvalidCode | ErrCode::CodeExpired))) => {
                LoginFailure::CodeInvalid(code)
            }
            (
                _,
                Some(
                    code @ (ErrCode::InvalidAppid
                    | ErrCode::InvalidAppSecret
                    | ErrCode::IpNotWhitelisted
                    | ErrCode::InvalidGrantType
                    | ErrCode::InvalidCredential
                    | ErrCode::WecomInvalidAgentid
                    | ErrCode::WecomIpNotAllowed),
                ),
            ) => LoginFailure::Misconfigured(code),
            (
                _,
                Some(
                    code @ (ErrCode::DailyQuotaReached
                    | ErrCode::TooFrequent
                    | ErrCode::WecomConcurrencyLimit),
                ),
            ) => LoginFailure::WeChatBusy(code),
            (_, Some(ErrCode::WecomNoPrivilege)) => LoginFailure::NotVisible,
            (CallError::Coordination(_), _) => LoginFailure::StoreDown,
            (CallError::WeChat(e), _) if e.is_unavailable() => LoginFailure::WeChatUnreachable,
            (_, errcode) => LoginFailure::WeChatFailed(errcode),
        }
    }

    fn errcode(self) -> Option<i64> {
        match self {
            LoginFailure::CodeUsed => Some(ErrCode::CodeBeenUsed.code()),
            LoginFailure::CodeInvalid(code)
            | LoginFailure::Misconfigured(code)
            | LoginFailure::WeChatBusy(code) => Some(code.code()),
            LoginFailure::WeChatFailed(code) => code.map(ErrCode::code),
            LoginFailure::NotVisible => Some(ErrCode::WecomNoPrivilege.code()),
            _ => None,
        }
    }

    /// The JSON answer: OAuth 2.0's name, WeChat's errcode beside it.
    fn api_error(self, login_url: String) -> ApiError {
        use ErrorName::*;
        let (status, name, description) = match self {
            LoginFailure::StateUsed => (400, InvalidRequest, CallbackProblem::StateUsed.en()),
            LoginFailure::CodeOtherBrowser => {
                (400, InvalidGrant, "the code came back to another browser")
            }
            LoginFailure::CodeUsed => (409, InvalidGrant, "the code was used; log in again"),
            LoginFailure::CodeInvalid(_) => (400, InvalidGrant, "the code is invalid or expired"),
            LoginFailure::Misconfigured(_) => {
                (500, ServerError, "WeChat refuses the site's credentials")
            }
            LoginFailure::WeChatBusy(_) => (
                503,
                TemporarilyUnavailable,
                "WeChat's login limit is reached",
            ),
            LoginFailure::StoreDown => (
                503,
                TemporarilyUnavailable,
                "the login store is unreachable",
            ),
            LoginFailure::WeChatUnreachable => {
                (503, TemporarilyUnavailable, "WeChat is unreachable")
            }
            LoginFailure::WeChatFailed(_) => (502, ServerError, "WeChat refused the login"),
            LoginFailure::SnapshotUser => (403, AccessDenied, "a snapshot-page user can't log in"),
            LoginFailure::NoUnionid => (
                403,
                AccessDenied,
                "this site needs a unionid: bind the Official Account (and website app) to one Open Platform account",
            ),
            LoginFailure::NotMember => (
                403,
                AccessDenied,
                "this site is for the company's WeCom members",
            ),
            LoginFailure::NotVisible => (
                403,
                AccessDenied,
                "the WeCom app's visible range does not include this member",
            ),
        };
        let error = ApiError::new(status, name)
            .with_description(description)
            .with_errcode(self.errcode())
            .with_login_url(login_url);
        match self.retry_after() {
            Some(seconds) => error.with_retry_after(seconds),
            None => error,
        }
    }

    /// When to try again (seconds), where waiting helps.
    fn retry_after(self) -> Option<u64> {
        match self {
            LoginFailure::WeChatBusy(_) => Some(60),
            LoginFailure::StoreDown | LoginFailure::WeChatUnreachable => Some(5),
            _ => None,
        }
    }
}

impl Gate {
    /// A failed login's answer: a page whose button starts a fresh login
    /// back to `return_to` (a `302` to one for [`LoginFailure::CodeUsed`]),
    /// or JSON for a front end's hand-off.
    pub(super) fn login_failure(
        &self,
        failure: LoginFailure,
        return_to: &str,
        answer: AnswerAs,
        lang: Lang,
    ) -> Reply {
        let scope = self.config.wechat.scope;
        if failure == LoginFailure::CodeOtherBrowser {
            tracing::warn!("refused a code that came back with another browser's state");
            crate::metrics::count_refused("code_other_state");
        }
        if answer == AnswerAs::Json {
            let login_url = self.login_url(return_to, scope, LinkForm::Absolute);
            return failure.api_error(login_url).reply();
        }
        let retry = &self.login_url(return_to, scope, LinkForm::Path);
        let page = match failure {
            LoginFailure::StateUsed => return self.bad_callback(CallbackProblem::StateUsed, lang),
            LoginFailure::CodeOtherBrowser => Notice::LinkExpired { retry },
            LoginFailure::CodeUsed => return Reply::redirect(retry.clone()),
            LoginFailure::CodeInvalid(_) => Notice::LoginExpired { retry },
            LoginFailure::Misconfigured(code) => Notice::Misconfigured {
                errcode: code.code(),
            },
            LoginFailure::WeChatBusy(_) => Notice::WeChatBusy { retry },
            LoginFailure::StoreDown => Notice::StoreDown { retry },
            LoginFailure::WeChatUnreachable => Notice::WeChatUnreachable { retry },
            LoginFailure::WeChatFailed(code) => Notice::WeChatFailed {
                errcode: code.map(ErrCode::code),
                retry,
            },
            LoginFailure::SnapshotUser => Notice::SnapshotUser { retry },
            LoginFailure::NoUnionid => Notice::NoUnionid,
            LoginFailure::NotMember => Notice::WecomNotMember { retry },
            LoginFailure::NotVisible => Notice::WecomNotVisible {
                errcode: ErrCode::WecomNoPrivilege.code(),
            },
        };
        let reply = page
            .reply(lang, &self.branding)
            .with_errcode(failure.errcode());
        match failure.retry_after() {
            Some(seconds) => reply.with_header("Retry-After", seconds.to_string()),
            None => reply,
        }
    }

    /// `400`: a callback whose state or code can't be used.
    pub(super) fn bad_callback(&self, why: CallbackProblem, lang: Lang) -> Reply {
        tracing::info!(reason = why.en(), "refused a login callback");
        Notice::BadCallback {
            why,
            retry: &self.login_url("/", self.config.wechat.scope, LinkForm::Path),
        }
        .reply(lang, &self.branding)
    }
}
