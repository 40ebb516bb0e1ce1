//! Newtypes for values that must never be printed: the app secret, the
//! cookie secret, authorization codes and the web-authorization tokens.
//!
//! Their `Debug` and `Display` print `[redacted]`; the value is reached only
//! through [`Secret::expose`], so every place that needs it is greppable.

use std::fmt;

macro_rules! secret_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// Wraps a value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The value itself; call only where it is sent to WeChat or used as key material.
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "([redacted])"))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("[redacted]")
            }
        }
    };
}

secret_newtype!(
    /// A configured secret: the app secret (`[wechat] secret`) or the cookie
    /// secret (`[gateway] cookie_secret`).
    Secret
);
secret_newtype!(
    /// An OAuth 2.0 authorization code from the callback (`code`): single use,
    /// valid 300 s (docs/protocol.md §1 step 1).
    AuthorizationCode
);
secret_newtype!(
    /// A web-authorization access token (`access_token`, 7200 s; docs/protocol.md §1 step 2).
    AccessToken
);
secret_newtype!(
    /// A WeCom `user_ticket` (`cgi-bin/auth/getuserinfo` with
    /// `snsapi_privateinfo`, 1800 s): it reads the member's details once
    /// and is kept server-side only (docs/wecom.md §2).
    UserTicket
);
secret_newtype!(
    /// A web-authorization refresh token (`refresh_token`, 30 days; docs/protocol.md §1 step 3).
    RefreshToken
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        let c = AuthorizationCode::new("CODE123");
        assert!(!format!("{c:?}{c}").contains("CODE123"));
        assert_eq!(c.expose(), "CODE123");
    }
}
