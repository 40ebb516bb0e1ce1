//! The identity handle: a verified WeChat user, and the headers an
//! application behind a proxy gets.

use std::sync::Arc;

use core_lib::Identity;

use crate::client::*;
use crate::result::*;
use crate::strings::*;

/// The identity fields.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum wechat_oauth_identity_field {
    /// `openid` (for a WeCom login, the member's `userid`, or a
    /// non-member's WeCom `openid`).
    Openid = 1,
    /// `unionid` (absent unless WeChat gave one).
    Unionid = 2,
    /// The granted scope.
    Scope = 3,
    /// The nickname (UTF-8).
    Nickname = 4,
    /// The avatar URL.
    Headimgurl = 5,
    /// The user's stable key, as in `X-WeChat-User`: the `unionid` where
    /// WeChat gave one, else the `openid`.
    User = 6,
    /// A WeCom member's `userid` (absent for WeChat logins and WeCom
    /// non-members), as in `X-WeCom-UserID`.
    WecomUserid = 7,
    /// The WeCom company's `corpid` (absent for WeChat logins).
    WecomCorpid = 8,
    /// The WeCom member's name, UTF-8 (absent when WeCom gave none).
    WecomName = 9,
    /// The WeCom member's department ids, comma-separated (`1,2`), as in
    /// `X-WeCom-Department`.
    WecomDepartment = 10,
}

/// A verified identity: borrowed from a decision
/// ([`wechat_oauth_decision_identity`]) or owned from
/// [`wechat_oauth_client_session_identity`] (release with
/// [`wechat_oauth_identity_free`]).
pub struct wechat_oauth_identity {
    /// Shared with the gate's session cache; its header values are built
    /// once per session cookie ([`Identity::upstream_header_values`]).
    pub(crate) identity: Arc<Identity>,
}

impl wechat_oauth_identity {
    pub(crate) fn new(identity: Arc<Identity>) -> Box<wechat_oauth_identity> {
        Box::new(wechat_oauth_identity { identity })
    }
}

/// Whether a request header named `name` (any bytes, any case) is one of
/// the gate's identity headers, which a host must remove before the
/// application sees the request: lower-cased with `_` read as `-`, it
/// starts with `x-wechat-` or `x-wecom-` (so `X_WeChat_OpenID`, which CGI
/// and PHP read as `HTTP_X_WECHAT_OPENID`, is one too). `*out` is set to it.
///
/// Errors: `NULL_PARAMETER`.
///
/// # Safety
/// `name.data` points at `name.len` readable bytes (or is NULL); `out` writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_is_identity_header(
    name: wechat_oauth_str,
    out: *mut bool,
) -> wechat_oauth_result {
    ffi_boundary!({
        let out = try_mut!(out);
        *out = !name.data.is_null()
            // SAFETY: the caller promises `name.len` readable bytes at a non-NULL `name.data`.
            && core_lib::session::is_identity_header(unsafe {
                std::slice::from_raw_parts(name.data.cast::<u8>(), name.len)
            });
        wechat_oauth_result::Ok
    })
}

/// An identity field (a `wechat_oauth_identity_field` value), borrowed
/// from the identity; `data` is NULL when the field is absent (no unionid,
/// no nickname with `snsapi_base`).
///
/// Errors: `INVALID_ARGUMENT` for an unknown field, `NULL_PARAMETER`.
///
/// # Safety
/// `identity` live; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_identity_get(
    identity: *const wechat_oauth_identity,
    field: u32,
    out: *mut wechat_oauth_str,
) -> wechat_oauth_result {
    ffi_boundary!({
        let identity = try_ref!(identity);
        let out = try_mut!(out);
        let id = &identity.identity;
        use wechat_oauth_identity_field as F;
        let value = match field {
            f if f == F::Openid as u32 => Some(id.openid.as_str()),
            f if f == F::Unionid as u32 => id.unionid.as_deref(),
            f if f == F::Scope as u32 => Some(id.scope.as_str()),
            f if f == F::Nickname as u32 => id.nickname.as_deref(),
            f if f == F::Headimgurl as u32 => id.headimgurl.as_deref(),
            f if f == F::User as u32 => Some(id.user_key()),
            f if f == F::WecomUserid as u32 => id
                .wecom
                .as_ref()
                .filter(|w| w.member)
                .map(|_| id.openid.as_str()),
            f if f == F::WecomCorpid as u32 => id.wecom.as_ref().map(|w| w.corpid.as_str()),
            f if f == F::WecomName as u32 => id.wecom.as_ref().and_then(|w| w.name.as_deref()),
            f if f == F::WecomDepartment as u32 => id
                .upstream_header_values()
                .iter()
                .find(|(name, _)| *name == core_lib::session::HEADER_WECOM_DEPARTMENT)
                .and_then(|(_, v)| v.to_str().ok()),
            _ => {
                return fail(
                    wechat_oauth_result::InvalidArgument,
                    "unknown identity field",
                )
            }
        };
        *out = value.map_or(wechat_oauth_str::ABSENT, wechat_oauth_str::of);
        wechat_oauth_result::Ok
    })
}

/// How many identity headers an application behind a proxy gets
/// (`X-WeChat-OpenID`, `X-WeChat-User`, `X-WeChat-Scope`, and when known
/// `X-WeChat-UnionID`, `X-WeChat-Nickname`, `X-WeChat-Snapshot`; for a
/// WeCom login `X-WeCom-UserID` or `X-WeCom-OpenID`, `X-WeCom-CorpID`, and
/// when known `X-WeCom-Name`, `X-WeCom-Department`).
///
/// # Safety
/// `identity` live; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_identity_header_count(
    identity: *const wechat_oauth_identity,
    out: *mut usize,
) -> wechat_oauth_result {
    ffi_boundary!({
        let identity = try_ref!(identity);
        let out = try_mut!(out);
        *out = identity.identity.upstream_header_values().len();
        wechat_oauth_result::Ok
    })
}

/// Identity header number `index`: name and value exactly as the gateway
/// sends them (the nickname and name percent-encoded UTF-8). Before adding
/// them, remove every header the client sent that
/// [`wechat_oauth_is_identity_header`] names (`X-WeChat-*`, `X-WeCom-*`).
///
/// Errors: `INVALID_ARGUMENT` past the count, `NULL_PARAMETER`.
///
/// # Safety
/// `identity` live; `name` and `value` writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_identity_header(
    identity: *const wechat_oauth_identity,
    index: usize,
    name: *mut wechat_oauth_str,
    value: *mut wechat_oauth_str,
) -> wechat_oauth_result {
    ffi_boundary!({
        let identity = try_ref!(identity);
        let name = try_mut!(name);
        let value = try_mut!(value);
        let header = identity.identity.upstream_header_values().get(index);
        // Every value is ASCII: ids, scope, the percent-encoded nickname.
        write_header(
            header.map(|(n, v)| (*n, v.to_str().unwrap_or_default())),
            name,
            value,
        )
    })
}

/// Releases an identity from [`wechat_oauth_client_session_identity`]. NULL
/// does nothing. Never pass one borrowed from a decision.
///
/// # Safety
/// `identity` must be owned (from `_session_identity`) and not freed twice.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_identity_free(identity: *mut wechat_oauth_identity) {
    // SAFETY: the caller passes an owned identity from `_session_identity`, once.
    release(identity.is_null(), || {
        drop(unsafe { Box::from_raw(identity) })
    });
}
