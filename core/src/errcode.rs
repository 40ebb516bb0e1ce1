//! WeChat's `errcode` values (docs/protocol.md §1 "Errors of the JSON APIs" and
//! the authorize page errors), as one enum with each code's meaning.

use std::fmt;

macro_rules! errcodes {
    ($($variant:ident = $code:literal, $meaning:literal;)*) => {
        /// A WeChat `errcode`. Unknown codes are kept as [`ErrCode::Other`].
        ///
        /// Source: docs/protocol.md §1 ("Errors of the JSON APIs", authorize page errors).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrCode {
            $(
                #[doc = $meaning]
                $variant,
            )*
            /// A code this library does not know; the number as WeChat sent it.
            Other(i64),
        }

        impl ErrCode {
            /// The code for a number WeChat sent.
            pub fn from_code(code: i64) -> Self {
                match code {
                    $($code => Self::$variant,)*
                    other => Self::Other(other),
                }
            }

            /// The number WeChat sends for this code.
            pub fn code(self) -> i64 {
                match self {
                    $(Self::$variant => $code,)*
                    Self::Other(n) => n,
                }
            }

            /// What the code means, in English (docs/protocol.md).
            pub fn meaning(self) -> &'static str {
                match self {
                    $(Self::$variant => $meaning,)*
                    Self::Other(_) => "unknown error code",
                }
            }
        }
    };
}

errcodes! {
    SystemBusy = -1, "system busy: retry with backoff";
    RedirectUriDomainMismatch = 10003, "redirect_uri host differs from the authorization callback domain configured in the console";
    AccountBanned = 10004, "the account is banned";
    ScopeNotPermitted = 10005, "the account has no permission for this scope";
    MustFollowTestAccount = 10006, "the user must follow the test account";
    TooFrequentAuthorize = 10009, "authorization requested too frequently";
    ScopeEmpty = 10010, "scope is empty";
    RedirectUriEmpty = 10011, "redirect_uri is empty";
    AppidEmpty = 10012, "appid is empty";
    StateEmpty = 10013, "state is empty";
    ThirdPartyNotAuthorized = 10015, "the account has not authorized the third-party platform";
    OpenPlatformAppidNotSupported = 10016, "an Open Platform appid is not supported here";
    InvalidCredential = 40001, "invalid credential (access_token invalid or not the latest)";
    InvalidGrantType = 40002, "invalid grant_type";
    InvalidOpenid = 40003, "invalid openid";
    InvalidAppid = 40013, "invalid appid: check [wechat] appid";
    InvalidAccessToken = 40014, "invalid access_token";
    InvalidCode = 40029, "invalid code (expired, or issued for another appid)";
    InvalidRefreshToken = 40030, "invalid refresh_token";
    InvalidAppSecret = 40125, "invalid appsecret: check [wechat] secret";
    CodeBeenUsed = 40163, "code been used";
    IpNotWhitelisted = 40164, "this server's IP address is not in the account's IP whitelist";
    MissingAccessToken = 41001, "access_token missing";
    MissingAppid = 41002, "appid missing";
    MissingRefreshToken = 41003, "refresh_token missing";
    MissingSecret = 41004, "secret missing";
    MissingMedia = 41005, "media data missing";
    MissingMediaId = 41006, "media_id missing";
    MissingSubMenu = 41007, "sub-menu data missing";
    MissingCode = 41008, "code missing";
    MissingOpenid = 41009, "openid missing";
    AccessTokenExpired = 42001, "access_token expired";
    RefreshTokenExpired = 42002, "refresh_token expired";
    CodeExpired = 42003, "code expired";
    PasswordChanged = 42007, "the user changed the password: authorize again";
    DailyQuotaReached = 45009, "daily API quota reached";
    TooFrequent = 45011, "API called too frequently";
    ApiUnauthorized = 48001, "api unauthorized (scope does not allow this API)";
    UserNotAuthorized = 50001, "the user has not authorized this API";
    UserRestricted = 50002, "the user is restricted";
    WecomInvalidAgentid = 40056, "WeCom: invalid agentid: check [wecom] agentid";
    WecomConcurrencyLimit = 45033, "WeCom: too many concurrent API calls";
    WecomNoPrivilege = 60011, "WeCom: no privilege (the member is outside the app's visible range)";
    WecomIpNotAllowed = 60020, "WeCom: this server's IP address is not a trusted IP of the app";
    WecomUserNotFound = 60111, "WeCom: userid not found";
}

impl fmt::Display for ErrCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "errcode {} ({})", self.code(), self.meaning())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_round_trip_and_unknown_codes_are_kept() {
        for n in [-1, 10003, 40029, 40163, 42003, 45011, 48001, 50002] {
            let e = ErrCode::from_code(n);
            assert!(!matches!(e, ErrCode::Other(_)), "{n} should be known");
            assert_eq!(e.code(), n);
        }
        assert_eq!(ErrCode::from_code(40163), ErrCode::CodeBeenUsed);
        assert_eq!(ErrCode::from_code(99999), ErrCode::Other(99999));
        assert_eq!(ErrCode::Other(99999).code(), 99999);
        assert!(ErrCode::InvalidAppSecret.to_string().contains("40125"));
    }
}
