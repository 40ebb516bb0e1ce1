//! The decision handle: what the host does with one request.

use core_lib::{Decision, Pass, Reply, UpstreamCookie};

use crate::client::*;
use crate::identity::*;
use crate::result::*;
use crate::strings::*;

/// What a decision asks of the host.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum wechat_oauth_decision_kind {
    /// Serve the request (the application's page), with the identity if any;
    /// add the decision's headers (`Set-Cookie`) to the response.
    Pass = 1,
    /// Answer with the decision's status, headers and body (a redirect, a
    /// 401, a page, JSON).
    Respond = 2,
    /// IO is needed first (the code exchange): call
    /// [`wechat_oauth_client_complete`], after which it is `RESPOND`.
    NeedsIo = 3,
    /// The request's body is needed (a signed push, `POST exchange`): read
    /// at most [`wechat_oauth_decision_body_limit`] bytes plus one and call
    /// [`wechat_oauth_client_decide_with_body`] with the same request.
    NeedsBody = 4,
}

/// The answer for one request, from [`wechat_oauth_client_decide`] (and
/// [`wechat_oauth_client_login`], [`wechat_oauth_client_logout`]), or
/// decided again in place by [`wechat_oauth_client_decide_into`]. Release
/// with [`wechat_oauth_decision_free`].
pub struct wechat_oauth_decision {
    pub(crate) state: DecisionState,
    /// A pass's `Cookie` header to forward when the gate leaves it as the
    /// request sent it: a copy, in a buffer kept across
    /// [`wechat_oauth_client_decide_into`] so that it is not allocated again.
    request_cookie: String,
    /// Whether `request_cookie` holds the request's (it had one).
    has_request_cookie: bool,
}

pub(crate) enum DecisionState {
    Pass {
        pass: Pass,
        /// Inline: a pass allocates no handle of its own.
        identity: Option<wechat_oauth_identity>,
    },
    Respond(Reply),
    NeedsIo(Option<core_lib::Call>),
    /// The largest body the route takes, in bytes.
    NeedsBody(usize),
}

/// The handle for `d`; `request_cookie` is the request's `Cookie` header,
/// kept as the one to forward when the decision leaves it unchanged.
pub(crate) fn decision_from(
    d: Decision,
    request_cookie: Option<&str>,
) -> Box<wechat_oauth_decision> {
    let mut decision = Box::new(wechat_oauth_decision {
        state: DecisionState::NeedsIo(None),
        request_cookie: String::new(),
        has_request_cookie: false,
    });
    decision.set(d, request_cookie);
    decision
}

impl wechat_oauth_decision {
    /// Replaces what the handle holds with `d` (see [`decision_from`]),
    /// reusing its cookie buffer.
    pub(crate) fn set(&mut self, d: Decision, request_cookie: Option<&str>) {
        self.request_cookie.clear();
        self.has_request_cookie = false;
        self.state = match d {
            Decision::Pass(mut pass) => {
                if let (UpstreamCookie::Unchanged, Some(cookie)) =
                    (&pass.upstream_cookie, request_cookie)
                {
                    self.request_cookie.push_str(cookie);
                    self.has_request_cookie = true;
                }
                DecisionState::Pass {
                    identity: pass
                        .identity
                        .take()
                        .map(|identity| wechat_oauth_identity { identity }),
                    pass,
                }
            }
            Decision::Reply(reply) => DecisionState::Respond(reply),
            Decision::Call(call) => DecisionState::NeedsIo(Some(call)),
            Decision::NeedsBody { max_bytes } => DecisionState::NeedsBody(max_bytes),
        };
    }

    /// A pass's `Cookie` header for the application; `None`: remove it.
    fn upstream_cookie<'a>(&'a self, pass: &'a Pass) -> Option<&'a str> {
        let request = self
            .has_request_cookie
            .then_some(self.request_cookie.as_str());
        pass.upstream_cookie.value(request)
    }
}

/// The largest body a `NEEDS_BODY` decision's route takes, in bytes.
///
/// Errors: `NULL_PARAMETER`; `WRONG_STATE` for any other decision.
///
/// # Safety
/// `decision` live; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_decision_body_limit(
    decision: *const wechat_oauth_decision,
    out: *mut usize,
) -> wechat_oauth_result {
    ffi_boundary!({
        let decision = try_ref!(decision);
        let out = try_mut!(out);
        match decision.state {
            DecisionState::NeedsBody(max_bytes) => {
                *out = max_bytes;
                wechat_oauth_result::Ok
            }
            _ => fail(
                wechat_oauth_result::WrongState,
                "only a NEEDS_BODY decision has a body limit",
            ),
        }
    })
}

/// The kind of a decision.
///
/// # Safety
/// `decision` live; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_decision_get_kind(
    decision: *const wechat_oauth_decision,
    out: *mut wechat_oauth_decision_kind,
) -> wechat_oauth_result {
    ffi_boundary!({
        let decision = try_ref!(decision);
        let out = try_mut!(out);
        *out = match decision.state {
            DecisionState::Pass { .. } => wechat_oauth_decision_kind::Pass,
            DecisionState::Respond(_) => wechat_oauth_decision_kind::Respond,
            DecisionState::NeedsIo(_) => wechat_oauth_decision_kind::NeedsIo,
            DecisionState::NeedsBody(_) => wechat_oauth_decision_kind::NeedsBody,
        };
        wechat_oauth_result::Ok
    })
}

pub(crate) fn reply_of(decision: &wechat_oauth_decision) -> Result<&Reply, wechat_oauth_result> {
    match &decision.state {
        DecisionState::Respond(r) => Ok(r),
        _ => Err(fail(
            wechat_oauth_result::WrongState,
            "only a RESPOND decision has a status and body",
        )),
    }
}

/// The HTTP status of a `RESPOND` decision.
///
/// Errors: `WRONG_STATE` for other kinds, `NULL_PARAMETER`.
///
/// # Safety
/// `decision` live; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_decision_status(
    decision: *const wechat_oauth_decision,
    out: *mut u16,
) -> wechat_oauth_result {
    ffi_boundary!({
        let decision = try_ref!(decision);
        let out = try_mut!(out);
        match reply_of(decision) {
            Ok(r) => {
                *out = r.status;
                wechat_oauth_result::Ok
            }
            Err(e) => e,
        }
    })
}

/// The body of a `RESPOND` decision (UTF-8; its type is in the
/// `Content-Type` header), borrowed from the decision.
///
/// Errors: `WRONG_STATE` for other kinds, `NULL_PARAMETER`.
///
/// # Safety
/// `decision` live; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_decision_body(
    decision: *const wechat_oauth_decision,
    out: *mut wechat_oauth_str,
) -> wechat_oauth_result {
    ffi_boundary!({
        let decision = try_ref!(decision);
        let out = try_mut!(out);
        match reply_of(decision) {
            Ok(r) => {
                *out = wechat_oauth_str::of(&r.body);
                wechat_oauth_result::Ok
            }
            Err(e) => e,
        }
    })
}

pub(crate) fn headers_of(decision: &wechat_oauth_decision) -> Vec<(&str, &str)> {
    match &decision.state {
        DecisionState::Respond(r) => r.headers.iter().map(|(n, v)| (*n, v.as_str())).collect(),
        DecisionState::Pass { pass, .. } => pass
            .set_cookie
            .iter()
            .map(|v| ("Set-Cookie", v.as_str()))
            .collect(),
        DecisionState::NeedsIo(_) | DecisionState::NeedsBody(_) => Vec::new(),
    }
}

/// How many response headers a decision has: for `RESPOND` all of them
/// (`Content-Type`, `Location`, `Set-Cookie`…), for `PASS` the ones to add
/// to the application's response (a refreshed `Set-Cookie`), else 0.
///
/// # Safety
/// `decision` live; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_decision_header_count(
    decision: *const wechat_oauth_decision,
    out: *mut usize,
) -> wechat_oauth_result {
    ffi_boundary!({
        let decision = try_ref!(decision);
        let out = try_mut!(out);
        *out = headers_of(decision).len();
        wechat_oauth_result::Ok
    })
}

/// Response header number `index` (from 0): name and value, borrowed from
/// the decision. `Set-Cookie` may appear several times: send each.
///
/// Errors: `INVALID_ARGUMENT` past the count, `NULL_PARAMETER`.
///
/// # Safety
/// `decision` live; `name` and `value` writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_decision_header(
    decision: *const wechat_oauth_decision,
    index: usize,
    name: *mut wechat_oauth_str,
    value: *mut wechat_oauth_str,
) -> wechat_oauth_result {
    ffi_boundary!({
        let decision = try_ref!(decision);
        let name = try_mut!(name);
        let value = try_mut!(value);
        let headers = headers_of(decision);
        write_header(headers.get(index).copied(), name, value)
    })
}

/// The WeChat errcode behind a `RESPOND` decision (e.g. 40029 when the
/// code was invalid), or 0 when WeChat refused nothing.
///
/// # Safety
/// `decision` live; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_decision_errcode(
    decision: *const wechat_oauth_decision,
    out: *mut i64,
) -> wechat_oauth_result {
    ffi_boundary!({
        let decision = try_ref!(decision);
        let out = try_mut!(out);
        *out = match &decision.state {
            DecisionState::Respond(r) => r.errcode.unwrap_or(0),
            _ => 0,
        };
        wechat_oauth_result::Ok
    })
}

/// The identity of a `PASS` decision, borrowed from it (do not free it).
///
/// Errors: `NO_SESSION` when the request passes without one (a public
/// path) or the decision is not `PASS`; `NULL_PARAMETER`.
///
/// # Safety
/// `decision` live; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_decision_identity(
    decision: *const wechat_oauth_decision,
    out: *mut *const wechat_oauth_identity,
) -> wechat_oauth_result {
    ffi_boundary!({
        let decision = try_ref!(decision);
        let out = try_mut!(out);
        match &decision.state {
            DecisionState::Pass {
                identity: Some(id), ..
            } => {
                *out = id;
                wechat_oauth_result::Ok
            }
            _ => fail(
                wechat_oauth_result::NoSession,
                "this decision carries no identity",
            ),
        }
    })
}

/// Writes a `PASS` decision's optional string to `out` (NULL `data` when
/// absent); `WRONG_STATE` for other kinds.
pub(crate) fn pass_field(
    decision: &wechat_oauth_decision,
    out: &mut wechat_oauth_str,
    pick: impl FnOnce(&Pass) -> Option<&str>,
    what: &str,
) -> wechat_oauth_result {
    match &decision.state {
        DecisionState::Pass { pass, .. } => {
            *out = pick(pass).map_or(wechat_oauth_str::ABSENT, wechat_oauth_str::of);
            wechat_oauth_result::Ok
        }
        _ => fail(
            wechat_oauth_result::WrongState,
            format!("only a PASS decision has {what}"),
        ),
    }
}

/// For a `PASS` decision, the `Cookie` header to forward to an application
/// behind a proxy: the request's without the gate's own cookies. `data` is
/// NULL when nothing is left (remove the header).
///
/// Errors: `WRONG_STATE` for other kinds, `NULL_PARAMETER`.
///
/// # Safety
/// `decision` live; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_decision_upstream_cookie(
    decision: *const wechat_oauth_decision,
    out: *mut wechat_oauth_str,
) -> wechat_oauth_result {
    ffi_boundary!({
        let decision = try_ref!(decision);
        let out = try_mut!(out);
        pass_field(
            decision,
            out,
            |pass| decision.upstream_cookie(pass),
            "an upstream cookie",
        )
    })
}

/// For a `PASS` decision, the canonical path the application must be given
/// instead of the request's (docs/security.md "Paths": dot segments
/// removed, unreserved escapes decoded). `data` is NULL when the request's
/// path is canonical already (serve it as it is).
///
/// Errors: `WRONG_STATE` for other kinds, `NULL_PARAMETER`.
///
/// # Safety
/// `decision` live; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_decision_upstream_path(
    decision: *const wechat_oauth_decision,
    out: *mut wechat_oauth_str,
) -> wechat_oauth_result {
    ffi_boundary!({
        let decision = try_ref!(decision);
        let out = try_mut!(out);
        pass_field(
            decision,
            out,
            |pass| pass.upstream_path.as_deref(),
            "an upstream path",
        )
    })
}

/// Releases a decision. NULL does nothing.
///
/// # Safety
/// `decision` must come from this library and not be freed twice.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_decision_free(decision: *mut wechat_oauth_decision) {
    // SAFETY: the caller passes a decision from this library, once.
    release(decision.is_null(), || {
        drop(unsafe { Box::from_raw(decision) })
    });
}
