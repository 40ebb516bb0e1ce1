//! `wechat-oauth`: WeChat web authorization (公众号网页授权) done right, for
//! gateways and hosts alike.
//!
//! - [`config`]: the TOML configuration shared by every host.
//! - [`authorize`]: the authorize URL, in WeChat's exact parameter order.
//! - [`session`]: the sealed session cookie and the identity headers.
//! - [`sns`]: typed `sns/oauth2/access_token` and `sns/userinfo` client.
//! - [`flow`]: the state machine every host drives ([`Gate`]).
//! - [`store`]: server-side tokens.
//! - [`wecom`]: WeCom (企业微信) member login: URLs and the API client.
//! - [`coordination`]: what several instances agree on (memory, the state
//!   file, Redis).
//!
//! The protocol is described in docs/protocol.md; secrets, codes and tokens are
//! newtypes ([`secret`]) that never print.

#![deny(missing_docs)]

pub mod api;
pub mod authorize;
pub mod config;
pub mod coordination;
pub mod errcode;
pub mod flow;
pub mod forwarded;
pub mod jssdk;
pub mod metrics;
pub mod pages;
pub mod secret;
pub mod session;
pub mod sns;
pub mod store;
pub mod wecom;

/// Modules the gate uses inside; fuzzing, benches and the end-to-end
/// tests reach them with the `internals` feature. They are not a stable
/// interface.
macro_rules! internal_modules {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        #[allow(dead_code, unreachable_pub)]
        mod $name;
    )*};
}

/// The counting allocator of the hosts' allocation tests.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod counting_allocator;

internal_modules!(
    expiring,
    path,
    push,
    qr,
    revocation,
    seal,
    single_flight,
    state
);

pub use authorize::Scope;
pub use config::{Config, ConfigError, SiteConfig};
pub use errcode::ErrCode;
pub use flow::{Call, CallError, Decision, Gate, GateError, Pass, RequestParts, UpstreamCookie};
pub use pages::Reply;
pub use session::{Identity, Session};
pub use sns::SnsError;
pub use store::{MemoryTokenStore, StoredTokens, TokenStore};
