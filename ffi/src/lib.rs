//! The C ABI of `wechat-oauth` (`libwechat_oauth.so` / `libwechat_oauth.a`,
//! header `include/wechat_oauth.h`): the same login state machine as the
//! Pingora gateway, for nginx, PHP, Java and C hosts.
//!
//! Conventions (after rustls-ffi):
//! - Opaque handles made by `_new` functions and released by `_free`;
//!   `_free(NULL)` does nothing.
//! - Every function that can fail returns a [`wechat_oauth_result`] (0 = OK);
//!   outputs go through out-pointers and are written only on success.
//!   [`wechat_oauth_last_error`] gives the detail of the last failure on the
//!   calling thread (e.g. the config key to fix).
//! - Strings go in as pointer + length of UTF-8 (no NUL needed) and come out
//!   as [`wechat_oauth_str`]: pointer + length, not NUL-terminated, borrowed
//!   from the handle they came from and valid until it is freed.
//! - No panic crosses the boundary; NULL and invalid UTF-8 give an error.
//! - A client is thread-safe. [`wechat_oauth_client_decide`] does no IO and
//!   can run on every request; [`wechat_oauth_client_complete`] blocks on a
//!   shared runtime created on first use and shut down with the last client.

#![allow(non_camel_case_types)]
#![deny(unsafe_op_in_unsafe_fn)]

#[macro_use]
mod macros;

mod client;
mod decision;
mod identity;
mod panic;
mod result;
mod runtime;
mod strings;

pub use client::*;
pub use decision::*;
pub use identity::*;
pub use result::*;
pub use strings::*;

/// The library version, e.g. `0.1.0` (static; never freed).
#[no_mangle]
pub extern "C" fn wechat_oauth_version() -> wechat_oauth_str {
    wechat_oauth_str::of(env!("CARGO_PKG_VERSION"))
}
