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

mod panic;
mod runtime;

use std::cell::RefCell;
use std::ffi::c_char;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use core_lib::{Config, Decision, Gate, Identity, Pass, Reply, RequestParts};

use crate::panic::boundary;

/// Result of every fallible function: 0 is OK; the other values come in
/// bands: 1xxx a caller error, 2xxx configuration, 3xxx WeChat, 4xxx
/// session, 9xxx internal.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum wechat_oauth_result {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullParameter = 1000,
    /// A string argument was not valid UTF-8.
    InvalidUtf8 = 1001,
    /// The output buffer is too small; `written` holds the size needed.
    InsufficientSize = 1002,
    /// An argument is out of range (an index, a field number).
    InvalidArgument = 1003,
    /// The handle is not in a state that allows this call.
    WrongState = 1004,
    /// The configuration is invalid; [`wechat_oauth_last_error`] names the key.
    ConfigInvalid = 2000,
    /// The configuration file can't be read.
    ConfigUnreadable = 2001,
    /// WeChat answered with an errcode ([`wechat_oauth_decision_errcode`]).
    WechatErrcode = 3000,
    /// WeChat could not be reached.
    WechatUnreachable = 3001,
    /// There is no valid session in the given cookies.
    NoSession = 4000,
    /// A panic was caught at the boundary (a bug: please report it).
    Panic = 9000,
    /// An internal failure (e.g. the runtime could not start).
    Internal = 9001,
}

impl wechat_oauth_result {
    const ALL: [wechat_oauth_result; 13] = [
        Self::Ok,
        Self::NullParameter,
        Self::InvalidUtf8,
        Self::InsufficientSize,
        Self::InvalidArgument,
        Self::WrongState,
        Self::ConfigInvalid,
        Self::ConfigUnreadable,
        Self::WechatErrcode,
        Self::WechatUnreachable,
        Self::NoSession,
        Self::Panic,
        Self::Internal,
    ];

    fn message(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NullParameter => "a required pointer argument was NULL",
            Self::InvalidUtf8 => "a string argument was not valid UTF-8",
            Self::InsufficientSize => "the output buffer is too small",
            Self::InvalidArgument => "an argument is out of range",
            Self::WrongState => "the handle is not in a state that allows this call",
            Self::ConfigInvalid => "the configuration is invalid",
            Self::ConfigUnreadable => "the configuration file can't be read",
            Self::WechatErrcode => "WeChat answered with an errcode",
            Self::WechatUnreachable => "WeChat could not be reached",
            Self::NoSession => "there is no valid session",
            Self::Panic => "internal error: a panic was caught (please report it)",
            Self::Internal => "internal error",
        }
    }
}

/// A borrowed UTF-8 string: `data` points at `len` bytes, not NUL-terminated.
/// `data` is NULL (and `len` 0) for an absent value.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct wechat_oauth_str {
    /// The bytes, or NULL.
    pub data: *const c_char,
    /// Their number.
    pub len: usize,
}

impl wechat_oauth_str {
    const ABSENT: wechat_oauth_str = wechat_oauth_str {
        data: std::ptr::null(),
        len: 0,
    };

    fn of(s: &str) -> wechat_oauth_str {
        wechat_oauth_str {
            data: s.as_ptr().cast(),
            len: s.len(),
        }
    }

    /// The string, `Ok(None)` when absent.
    ///
    /// # Safety
    /// `data` must point at `len` readable bytes, or be NULL.
    unsafe fn read<'a>(self) -> Result<Option<&'a str>, wechat_oauth_result> {
        if self.data.is_null() {
            return Ok(None);
        }
        let bytes = std::slice::from_raw_parts(self.data.cast::<u8>(), self.len);
        std::str::from_utf8(bytes).map(Some).map_err(|_| {
            fail(
                wechat_oauth_result::InvalidUtf8,
                "a string argument was not valid UTF-8",
            )
        })
    }
}

/// An HTTP request as the gate sees it. Each field is a string; NULL `data`
/// means the header is absent. `method` and `path` are required; `path`
/// has no query string (it goes in `query`, without `?`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct wechat_oauth_request {
    /// The method, e.g. `GET`.
    pub method: wechat_oauth_str,
    /// The path, e.g. `/orders`.
    pub path: wechat_oauth_str,
    /// The raw query string, without `?`.
    pub query: wechat_oauth_str,
    /// The `Cookie` header (several joined with `; `).
    pub cookie: wechat_oauth_str,
    /// The `User-Agent` header.
    pub user_agent: wechat_oauth_str,
    /// The `Accept` header.
    pub accept: wechat_oauth_str,
    /// The `X-Requested-With` header.
    pub x_requested_with: wechat_oauth_str,
    /// The `Accept-Language` header.
    pub accept_language: wechat_oauth_str,
    /// The address of the peer that sent the request: the connection's
    /// remote IP as text (`203.0.113.9`, `2001:db8::1`). NULL or not an IP
    /// address: unknown, and no per-client `[limits]` apply. The client
    /// address the gate uses follows `[gateway] trusted_proxies` as in the
    /// gateway (docs/security.md "Trusted proxies").
    pub client_address: wechat_oauth_str,
    /// The `X-Forwarded-For` header; read only when `client_address` is in
    /// `[gateway] trusted_proxies`.
    pub x_forwarded_for: wechat_oauth_str,
    /// The `X-Original-URI` header: for the `auth` route (nginx
    /// `auth_request`), the original request's path and query.
    pub x_original_uri: wechat_oauth_str,
    /// The `X-Original-Method` header: the original request's method.
    pub x_original_method: wechat_oauth_str,
}

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

/// The identity fields.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum wechat_oauth_identity_field {
    /// `openid`.
    Openid = 1,
    /// `unionid` (absent unless WeChat gave one).
    Unionid = 2,
    /// The granted scope.
    Scope = 3,
    /// The nickname (UTF-8).
    Nickname = 4,
    /// The avatar URL.
    Headimgurl = 5,
}

/// A client: the configuration, cookie keys, WeChat API client and token
/// store. Thread-safe. Create with [`wechat_oauth_client_new_from_toml`] or
/// [`wechat_oauth_client_new_from_file`], release with [`wechat_oauth_client_free`].
pub struct wechat_oauth_client {
    /// Shared with the logout sync task of a `[store]`-shared client, which
    /// holds it weakly.
    gate: Arc<Gate>,
    // Declared after `gate` so that it is dropped after it.
    runtime: OnceLock<Arc<tokio::runtime::Runtime>>,
}

/// The answer for one request, from [`wechat_oauth_client_decide`] (and
/// [`wechat_oauth_client_login`], [`wechat_oauth_client_logout`]). Release
/// with [`wechat_oauth_decision_free`].
pub struct wechat_oauth_decision {
    state: DecisionState,
}

enum DecisionState {
    Pass {
        pass: Pass,
        identity: Option<Box<wechat_oauth_identity>>,
    },
    Respond(Reply),
    NeedsIo(Option<core_lib::Call>),
    /// The largest body the route takes, in bytes.
    NeedsBody(usize),
}

/// A verified identity: borrowed from a decision
/// ([`wechat_oauth_decision_identity`]) or owned from
/// [`wechat_oauth_client_session_identity`] (release with
/// [`wechat_oauth_identity_free`]).
pub struct wechat_oauth_identity {
    identity: Identity,
    headers: Vec<(&'static str, String)>,
}

impl wechat_oauth_identity {
    fn new(identity: Identity) -> Box<wechat_oauth_identity> {
        let headers = identity
            .upstream_headers()
            .map(|(name, value)| (name, value.into_owned()))
            .collect();
        Box::new(wechat_oauth_identity { identity, headers })
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records the detail of a failure for [`wechat_oauth_last_error`].
fn fail(result: wechat_oauth_result, detail: impl Into<String>) -> wechat_oauth_result {
    let detail = detail.into();
    LAST_ERROR.with(|e| *e.borrow_mut() = detail);
    result
}

/// Copies `text` into a caller buffer: `written` gets its length (or the
/// size needed); no NUL is added.
unsafe fn copy_out(
    text: &str,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> wechat_oauth_result {
    if written.is_null() || (buf.is_null() && len > 0) {
        return wechat_oauth_result::NullParameter;
    }
    *written = text.len();
    if text.len() > len {
        return wechat_oauth_result::InsufficientSize;
    }
    if !text.is_empty() {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
    }
    wechat_oauth_result::Ok
}

/// Writes a header pair to the out-pointers; `INVALID_ARGUMENT` when absent.
///
/// # Safety
/// `name` and `value` must be writable.
unsafe fn write_header(
    header: Option<(&str, &str)>,
    name: *mut wechat_oauth_str,
    value: *mut wechat_oauth_str,
) -> wechat_oauth_result {
    match header {
        Some((n, v)) => {
            *name = wechat_oauth_str::of(n);
            *value = wechat_oauth_str::of(v);
            wechat_oauth_result::Ok
        }
        None => fail(
            wechat_oauth_result::InvalidArgument,
            "header index out of range",
        ),
    }
}

macro_rules! non_null {
    ($($p:expr),+) => {
        $(if $p.is_null() {
            return fail(wechat_oauth_result::NullParameter, concat!("NULL argument: ", stringify!($p)));
        })+
    };
}

macro_rules! try_str {
    ($ptr:expr, $len:expr) => {{
        if $ptr.is_null() {
            return fail(
                wechat_oauth_result::NullParameter,
                concat!("NULL argument: ", stringify!($ptr)),
            );
        }
        match (wechat_oauth_str {
            data: $ptr,
            len: $len,
        })
        .read()
        {
            Ok(Some(s)) => s,
            Ok(None) => unreachable!(),
            Err(e) => return e,
        }
    }};
}

/// The library version, e.g. `0.1.0` (static; never freed).
#[no_mangle]
pub extern "C" fn wechat_oauth_version() -> wechat_oauth_str {
    wechat_oauth_str::of(env!("CARGO_PKG_VERSION"))
}

/// Writes the message of a result code into `buf` (`len` bytes);
/// `written` gets the message length. An unknown code gives
/// `INVALID_ARGUMENT`; a short buffer `INSUFFICIENT_SIZE` (with the size
/// needed in `written`).
///
/// # Safety
/// `buf` must have `len` writable bytes; `written` must be writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_result_message(
    result: u32,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> wechat_oauth_result {
    boundary(AssertUnwindSafe(|| {
        let Some(r) = wechat_oauth_result::ALL
            .iter()
            .find(|r| **r as u32 == result)
        else {
            return wechat_oauth_result::InvalidArgument;
        };
        copy_out(r.message(), buf, len, written)
    }))
}

/// Writes the detail of the last failure on this thread (e.g. `config
/// [gateway] cookie_secret: must be at least 32 bytes …`) into `buf`;
/// empty when the last call succeeded without one.
///
/// # Safety
/// `buf` must have `len` writable bytes; `written` must be writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_last_error(
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> wechat_oauth_result {
    boundary(AssertUnwindSafe(|| {
        LAST_ERROR.with(|e| copy_out(&e.borrow(), buf, len, written))
    }))
}

/// The longest a `qr/status` long poll waits in a library host, in
/// seconds: the example hosts serve one request at a time, and a push
/// must not wait behind a poll (the QR page polls again at once).
const HOST_LONG_POLL_SECS: u64 = 2;

fn new_client(
    config: Result<Config, core_lib::ConfigError>,
    out: *mut *const wechat_oauth_client,
) -> wechat_oauth_result {
    let config = match config {
        Ok(c) => c,
        Err(e @ core_lib::ConfigError::Read { .. }) => {
            return fail(wechat_oauth_result::ConfigUnreadable, e.to_string())
        }
        Err(e) => return fail(wechat_oauth_result::ConfigInvalid, e.to_string()),
    };
    let gate = match Gate::new(config) {
        // A host's request thread waits out a long poll: keep it short.
        Ok(g) => g.with_long_poll_limit(std::time::Duration::from_secs(HOST_LONG_POLL_SECS)),
        Err(e) => return fail(wechat_oauth_result::ConfigInvalid, e.to_string()),
    };
    let client = Arc::new(wechat_oauth_client {
        gate: Arc::new(gate),
        runtime: OnceLock::new(),
    });
    if client.gate.is_shared() {
        // Other instances' logouts, read every 500 ms off the request path.
        match client.runtime() {
            Ok(rt) => {
                let gate = Arc::downgrade(&client.gate);
                rt.spawn(async move {
                    while let Some(gate) = gate.upgrade() {
                        let _ = gate.sync_revocations().await;
                        drop(gate);
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                });
            }
            Err(e) => return e,
        }
    }
    // SAFETY: the caller checked `out` is non-NULL.
    unsafe { *out = Arc::into_raw(client) };
    fail(wechat_oauth_result::Ok, "")
}

/// Creates a client from TOML text (the gateway's format: `[wechat]` and
/// `[gateway]`; `listen` and `upstream` are ignored), with the same
/// environment overrides (`WECHAT_APP_SECRET`, …). On success `*out` is a
/// client to release with [`wechat_oauth_client_free`].
///
/// Errors: `CONFIG_INVALID` (the detail names the key), `NULL_PARAMETER`,
/// `INVALID_UTF8`.
///
/// # Safety
/// `toml` must point at `toml_len` readable bytes; `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_client_new_from_toml(
    toml: *const c_char,
    toml_len: usize,
    out: *mut *const wechat_oauth_client,
) -> wechat_oauth_result {
    boundary(AssertUnwindSafe(|| {
        non_null!(out);
        let text = try_str!(toml, toml_len);
        new_client(Config::from_toml(text, |k| std::env::var(k).ok()), out)
    }))
}

/// Creates a client from a TOML file at `path` (UTF-8, `path_len` bytes).
///
/// Errors: `CONFIG_UNREADABLE`, `CONFIG_INVALID`, `NULL_PARAMETER`, `INVALID_UTF8`.
///
/// # Safety
/// `path` must point at `path_len` readable bytes; `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_client_new_from_file(
    path: *const c_char,
    path_len: usize,
    out: *mut *const wechat_oauth_client,
) -> wechat_oauth_result {
    boundary(AssertUnwindSafe(|| {
        non_null!(out);
        let path = try_str!(path, path_len);
        new_client(Config::load(Path::new(path)), out)
    }))
}

/// The process-wide client for the config file at `path`, created on the
/// first call and kept until the process exits; later calls with the same
/// path return it again. For hosts that run each request afresh (PHP):
/// the single-flight of code exchanges and the token store then live across
/// requests. Release each handle with [`wechat_oauth_client_free`] as usual.
///
/// Errors: as [`wechat_oauth_client_new_from_file`].
///
/// # Safety
/// `path` must point at `path_len` readable bytes; `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_client_shared_from_file(
    path: *const c_char,
    path_len: usize,
    out: *mut *const wechat_oauth_client,
) -> wechat_oauth_result {
    boundary(AssertUnwindSafe(|| {
        non_null!(out);
        let path = try_str!(path, path_len);
        let mut shared = SHARED_CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, client)) = shared.iter().find(|(p, _)| p == path) {
            *out = Arc::into_raw(client.clone());
            return fail(wechat_oauth_result::Ok, "");
        }
        let mut created: *const wechat_oauth_client = std::ptr::null();
        let result = new_client(Config::load(Path::new(path)), &mut created);
        if result != wechat_oauth_result::Ok {
            return result;
        }
        if shared.is_empty() {
            runtime::keep_library_loaded();
            // SAFETY: registers a plain function that only locks and clears a static.
            libc::atexit(release_shared_clients);
        }
        // One reference stays in the registry for the life of the process.
        Arc::increment_strong_count(created);
        shared.push((path.to_owned(), Arc::from_raw(created)));
        *out = created;
        wechat_oauth_result::Ok
    }))
}

/// The clients of [`wechat_oauth_client_shared_from_file`], by path.
static SHARED_CLIENTS: Mutex<Vec<(String, Arc<wechat_oauth_client>)>> = Mutex::new(Vec::new());

/// At exit, drops the registry's references, so the process ends with
/// nothing allocated by it (memory checkers stay quiet).
extern "C" fn release_shared_clients() {
    let taken = std::mem::take(&mut *SHARED_CLIENTS.lock().unwrap_or_else(|e| e.into_inner()));
    drop(taken);
}

/// Releases a client. NULL does nothing. Decisions made by it must be freed
/// first; no other thread may be using it.
///
/// # Safety
/// `client` must come from a `_new` function and not be freed twice.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_client_free(client: *const wechat_oauth_client) {
    release(client.is_null(), || drop(Arc::from_raw(client)));
}

/// Runs a `_free` function's `drop` unless its pointer is NULL, inside the panic boundary.
fn release(is_null: bool, drop_it: impl FnOnce()) {
    let _ = boundary(AssertUnwindSafe(|| {
        if !is_null {
            drop_it();
        }
        wechat_oauth_result::Ok
    }));
}

/// The configured route prefix, e.g. `/_wechat` (borrowed from the client).
///
/// # Safety
/// `client` must be a live client; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_client_prefix(
    client: *const wechat_oauth_client,
    out: *mut wechat_oauth_str,
) -> wechat_oauth_result {
    boundary(AssertUnwindSafe(|| {
        non_null!(client, out);
        *out = wechat_oauth_str::of(&(*client).gate.config().gateway.prefix);
        wechat_oauth_result::Ok
    }))
}

fn decision_from(d: Decision) -> Box<wechat_oauth_decision> {
    let state = match d {
        Decision::Pass(mut pass) => DecisionState::Pass {
            identity: pass.identity.take().map(wechat_oauth_identity::new),
            pass,
        },
        Decision::Reply(reply) => DecisionState::Respond(reply),
        Decision::Call(call) => DecisionState::NeedsIo(Some(call)),
        Decision::NeedsBody { max_bytes } => DecisionState::NeedsBody(max_bytes),
    };
    Box::new(wechat_oauth_decision { state })
}

/// Decides what to do with a request: pass, respond, or needs IO. Pure: no
/// IO, safe to call on every request from any thread. `*out` gets a
/// decision to release with [`wechat_oauth_decision_free`].
///
/// Errors: `NULL_PARAMETER` (client, request, out, or a NULL method/path),
/// `INVALID_UTF8` (any field).
///
/// # Safety
/// `client` must be live; every non-NULL `data` in `request` must point at
/// `len` readable bytes; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_client_decide(
    client: *const wechat_oauth_client,
    request: *const wechat_oauth_request,
    out: *mut *mut wechat_oauth_decision,
) -> wechat_oauth_result {
    boundary(AssertUnwindSafe(|| {
        non_null!(client, request, out);
        let r = *request;
        let parts = match request_parts(&*client, &r) {
            Ok(p) => p,
            Err(e) => return e,
        };
        *out = Box::into_raw(decision_from((*client).gate.decide(&parts)));
        wechat_oauth_result::Ok
    }))
}

/// Decides again for a request whose decision was `NEEDS_BODY`, with the
/// `body_len` bytes of its body (read at most the decision's
/// [`wechat_oauth_decision_body_limit`] plus one: a longer body gets `413`).
/// `*out` gets a new decision (`RESPOND` or `NEEDS_IO`; for any other
/// request, what [`wechat_oauth_client_decide`] gives). Pure: no IO.
///
/// Errors: as [`wechat_oauth_client_decide`]; `NULL_PARAMETER` for a NULL
/// `body` with a non-zero `body_len`.
///
/// # Safety
/// As [`wechat_oauth_client_decide`]; `body` points at `body_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_client_decide_with_body(
    client: *const wechat_oauth_client,
    request: *const wechat_oauth_request,
    body: *const u8,
    body_len: usize,
    out: *mut *mut wechat_oauth_decision,
) -> wechat_oauth_result {
    boundary(AssertUnwindSafe(|| {
        non_null!(client, request, out);
        if body.is_null() && body_len > 0 {
            return fail(
                wechat_oauth_result::NullParameter,
                "body is NULL but body_len is not 0",
            );
        }
        let r = *request;
        let parts = match request_parts(&*client, &r) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let body: &[u8] = if body_len == 0 {
            &[]
        } else {
            // SAFETY: the caller gives `body_len` readable bytes at `body`.
            std::slice::from_raw_parts(body, body_len)
        };
        let decision = (*client).gate.decide_with_body(&parts, body);
        *out = Box::into_raw(decision_from(decision));
        wechat_oauth_result::Ok
    }))
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
    boundary(AssertUnwindSafe(|| {
        non_null!(decision, out);
        match (*decision).state {
            DecisionState::NeedsBody(max_bytes) => {
                *out = max_bytes;
                wechat_oauth_result::Ok
            }
            _ => fail(
                wechat_oauth_result::WrongState,
                "only a NEEDS_BODY decision has a body limit",
            ),
        }
    }))
}

/// The core's view of a C request (strings borrowed from it).
///
/// # Safety
/// Every non-NULL `data` in `r` points at `len` readable bytes.
unsafe fn request_parts<'a>(
    client: &wechat_oauth_client,
    r: &wechat_oauth_request,
) -> Result<RequestParts<'a>, wechat_oauth_result> {
    let field = |s: wechat_oauth_str| s.read();
    let parts = (|| {
        Ok::<_, wechat_oauth_result>(RequestParts {
            method: field(r.method)?.ok_or(wechat_oauth_result::NullParameter)?,
            path: field(r.path)?.ok_or(wechat_oauth_result::NullParameter)?,
            query: field(r.query)?,
            cookie: field(r.cookie)?,
            user_agent: field(r.user_agent)?,
            accept: field(r.accept)?,
            x_requested_with: field(r.x_requested_with)?,
            accept_language: field(r.accept_language)?,
            client_addr: field(r.client_address)?
                .and_then(|peer| peer.trim().parse::<std::net::IpAddr>().ok())
                .map(|peer| {
                    core_lib::forwarded::client_address(
                        peer,
                        field(r.x_forwarded_for).ok().flatten(),
                        &client.gate.config().gateway.trusted_proxies,
                    )
                }),
            original_uri: field(r.x_original_uri)?,
            original_method: field(r.x_original_method)?,
        })
    })();
    match parts {
        Err(wechat_oauth_result::NullParameter) => Err(fail(
            wechat_oauth_result::NullParameter,
            "request.method and request.path are required",
        )),
        other => other,
    }
}

/// A decision that starts a login returning to `return_path` (a path on
/// this site, e.g. `/orders?id=1`; anything else returns to `/`): a 302 to
/// WeChat's authorize URL with the state cookie.
///
/// Errors: `NULL_PARAMETER`, `INVALID_UTF8`.
///
/// # Safety
/// `client` live; `return_path` points at `return_path_len` bytes; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_client_login(
    client: *const wechat_oauth_client,
    return_path: *const c_char,
    return_path_len: usize,
    out: *mut *mut wechat_oauth_decision,
) -> wechat_oauth_result {
    boundary(AssertUnwindSafe(|| {
        non_null!(client, out);
        let rd = try_str!(return_path, return_path_len);
        let reply = (*client).gate.start_login_for(rd, None);
        *out = Box::into_raw(decision_from(Decision::Reply(reply)));
        wechat_oauth_result::Ok
    }))
}

impl wechat_oauth_client {
    fn runtime(&self) -> Result<&Arc<tokio::runtime::Runtime>, wechat_oauth_result> {
        if let Some(rt) = self.runtime.get() {
            return Ok(rt);
        }
        let rt = runtime::shared().map_err(|e| {
            fail(
                wechat_oauth_result::Internal,
                format!("cannot start the runtime: {e}"),
            )
        })?;
        Ok(self.runtime.get_or_init(|| rt))
    }

    fn complete(&self, decision: &mut wechat_oauth_decision) -> wechat_oauth_result {
        let DecisionState::NeedsIo(call) = &mut decision.state else {
            return wechat_oauth_result::Ok;
        };
        let Some(call) = call.take() else {
            return fail(
                wechat_oauth_result::WrongState,
                "this decision's IO already failed",
            );
        };
        let rt = match self.runtime() {
            Ok(rt) => rt,
            Err(e) => return e,
        };
        let reply = rt.block_on(self.gate.complete(call));
        decision.state = DecisionState::Respond(reply);
        wechat_oauth_result::Ok
    }
}

/// Performs a `NEEDS_IO` decision's IO (the code exchange and profile,
/// single-flight per code; token refresh; logout), blocking the calling
/// thread, and turns it into `RESPOND`. Any other decision is left as is.
/// Call it from a thread that may block (an nginx thread pool, a PHP or
/// Java request thread), never from inside an async runtime.
///
/// Errors: `NULL_PARAMETER`, `INTERNAL` (the runtime could not start),
/// `PANIC` (e.g. called from inside a Tokio runtime).
///
/// # Safety
/// `client` and `decision` live; `decision` not used by another thread meanwhile.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_client_complete(
    client: *const wechat_oauth_client,
    decision: *mut wechat_oauth_decision,
) -> wechat_oauth_result {
    boundary(AssertUnwindSafe(|| {
        non_null!(client, decision);
        (*client).complete(&mut *decision)
    }))
}

/// Logs out the session in `cookie` (a `Cookie` header; may be empty):
/// deletes its tokens (blocking) and gives a `RESPOND` decision that removes
/// the cookie and redirects to `logout_redirect`.
///
/// Errors: `NULL_PARAMETER`, `INVALID_UTF8`, `INTERNAL`.
///
/// # Safety
/// `client` live; `cookie` points at `cookie_len` bytes; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_client_logout(
    client: *const wechat_oauth_client,
    cookie: *const c_char,
    cookie_len: usize,
    out: *mut *mut wechat_oauth_decision,
) -> wechat_oauth_result {
    boundary(AssertUnwindSafe(|| {
        non_null!(client, out);
        let cookie = try_str!(cookie, cookie_len);
        let client = &*client;
        let mut decision = decision_from(client.gate.logout(Some(cookie)));
        let result = client.complete(&mut decision);
        if result != wechat_oauth_result::Ok {
            return result;
        }
        *out = Box::into_raw(decision);
        wechat_oauth_result::Ok
    }))
}

/// The identity of the valid session in `cookie` (a `Cookie` header), as an
/// owned handle to release with [`wechat_oauth_identity_free`].
///
/// Errors: `NO_SESSION` when there is none (or it expired, or was forged),
/// `NULL_PARAMETER`, `INVALID_UTF8`.
///
/// # Safety
/// `client` live; `cookie` points at `cookie_len` bytes; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_client_session_identity(
    client: *const wechat_oauth_client,
    cookie: *const c_char,
    cookie_len: usize,
    out: *mut *mut wechat_oauth_identity,
) -> wechat_oauth_result {
    boundary(AssertUnwindSafe(|| {
        non_null!(client, out);
        let cookie = try_str!(cookie, cookie_len);
        match (*client).gate.session_identity(cookie) {
            Some(identity) => {
                *out = Box::into_raw(wechat_oauth_identity::new(identity));
                wechat_oauth_result::Ok
            }
            None => fail(
                wechat_oauth_result::NoSession,
                "no valid session in these cookies",
            ),
        }
    }))
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
    boundary(AssertUnwindSafe(|| {
        non_null!(decision, out);
        *out = match (*decision).state {
            DecisionState::Pass { .. } => wechat_oauth_decision_kind::Pass,
            DecisionState::Respond(_) => wechat_oauth_decision_kind::Respond,
            DecisionState::NeedsIo(_) => wechat_oauth_decision_kind::NeedsIo,
            DecisionState::NeedsBody(_) => wechat_oauth_decision_kind::NeedsBody,
        };
        wechat_oauth_result::Ok
    }))
}

fn reply_of(decision: &wechat_oauth_decision) -> Result<&Reply, wechat_oauth_result> {
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
    boundary(AssertUnwindSafe(|| {
        non_null!(decision, out);
        match reply_of(&*decision) {
            Ok(r) => {
                *out = r.status;
                wechat_oauth_result::Ok
            }
            Err(e) => e,
        }
    }))
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
    boundary(AssertUnwindSafe(|| {
        non_null!(decision, out);
        match reply_of(&*decision) {
            Ok(r) => {
                *out = wechat_oauth_str::of(&r.body);
                wechat_oauth_result::Ok
            }
            Err(e) => e,
        }
    }))
}

fn headers_of(decision: &wechat_oauth_decision) -> Vec<(&str, &str)> {
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
    boundary(AssertUnwindSafe(|| {
        non_null!(decision, out);
        *out = headers_of(&*decision).len();
        wechat_oauth_result::Ok
    }))
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
    boundary(AssertUnwindSafe(|| {
        non_null!(decision, name, value);
        let headers = headers_of(&*decision);
        write_header(headers.get(index).copied(), name, value)
    }))
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
    boundary(AssertUnwindSafe(|| {
        non_null!(decision, out);
        *out = match &(*decision).state {
            DecisionState::Respond(r) => r.errcode.unwrap_or(0),
            _ => 0,
        };
        wechat_oauth_result::Ok
    }))
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
    boundary(AssertUnwindSafe(|| {
        non_null!(decision, out);
        match &(*decision).state {
            DecisionState::Pass {
                identity: Some(id), ..
            } => {
                *out = &**id;
                wechat_oauth_result::Ok
            }
            _ => fail(
                wechat_oauth_result::NoSession,
                "this decision carries no identity",
            ),
        }
    }))
}

/// Writes a `PASS` decision's optional string to `out` (NULL `data` when
/// absent); `WRONG_STATE` for other kinds.
///
/// # Safety
/// `out` writable.
unsafe fn pass_field(
    decision: &wechat_oauth_decision,
    out: *mut wechat_oauth_str,
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
    boundary(AssertUnwindSafe(|| {
        non_null!(decision, out);
        pass_field(
            &*decision,
            out,
            |pass| pass.upstream_cookie.as_deref(),
            "an upstream cookie",
        )
    }))
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
    boundary(AssertUnwindSafe(|| {
        non_null!(decision, out);
        pass_field(
            &*decision,
            out,
            |pass| pass.upstream_path.as_deref(),
            "an upstream path",
        )
    }))
}

/// Whether a request header named `name` (any bytes, any case) is one of
/// the gate's identity headers, which a host must remove before the
/// application sees the request: lower-cased with `_` read as `-`, it
/// starts with `x-wechat-` (so `X_WeChat_OpenID`, which CGI and PHP read as
/// `HTTP_X_WECHAT_OPENID`, is one too). `*out` is set to it.
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
    boundary(AssertUnwindSafe(|| {
        non_null!(out);
        *out = !name.data.is_null()
            && core_lib::session::is_identity_header(std::slice::from_raw_parts(
                name.data.cast::<u8>(),
                name.len,
            ));
        wechat_oauth_result::Ok
    }))
}

/// Releases a decision. NULL does nothing.
///
/// # Safety
/// `decision` must come from this library and not be freed twice.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_decision_free(decision: *mut wechat_oauth_decision) {
    release(decision.is_null(), || drop(Box::from_raw(decision)));
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
    boundary(AssertUnwindSafe(|| {
        non_null!(identity, out);
        let id = &(*identity).identity;
        use wechat_oauth_identity_field as F;
        let value = match field {
            f if f == F::Openid as u32 => Some(id.openid.as_str()),
            f if f == F::Unionid as u32 => id.unionid.as_deref(),
            f if f == F::Scope as u32 => Some(id.scope.as_str()),
            f if f == F::Nickname as u32 => id.nickname.as_deref(),
            f if f == F::Headimgurl as u32 => id.headimgurl.as_deref(),
            _ => {
                return fail(
                    wechat_oauth_result::InvalidArgument,
                    "unknown identity field",
                )
            }
        };
        *out = value.map_or(wechat_oauth_str::ABSENT, wechat_oauth_str::of);
        wechat_oauth_result::Ok
    }))
}

/// How many identity headers an application behind a proxy gets
/// (`X-WeChat-OpenID`, `X-WeChat-Scope`, and when known
/// `X-WeChat-UnionID`, `X-WeChat-Nickname`, `X-WeChat-Snapshot`).
///
/// # Safety
/// `identity` live; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_identity_header_count(
    identity: *const wechat_oauth_identity,
    out: *mut usize,
) -> wechat_oauth_result {
    boundary(AssertUnwindSafe(|| {
        non_null!(identity, out);
        *out = (*identity).headers.len();
        wechat_oauth_result::Ok
    }))
}

/// Identity header number `index`: name and value exactly as the gateway
/// sends them (the nickname percent-encoded UTF-8). Before adding them,
/// remove every `X-WeChat-*` header the client sent.
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
    boundary(AssertUnwindSafe(|| {
        non_null!(identity, name, value);
        let header = (&(*identity).headers).get(index);
        write_header(header.map(|(n, v)| (*n, v.as_str())), name, value)
    }))
}

/// Releases an identity from [`wechat_oauth_client_session_identity`]. NULL
/// does nothing. Never pass one borrowed from a decision.
///
/// # Safety
/// `identity` must be owned (from `_session_identity`) and not freed twice.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_identity_free(identity: *mut wechat_oauth_identity) {
    release(identity.is_null(), || drop(Box::from_raw(identity)));
}
