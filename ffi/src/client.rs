//! The client handle: creation from a config, the decisions for requests,
//! and the blocking IO step.

use std::ffi::c_char;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use core_lib::{Config, Decision, Gate, RequestParts};

use crate::decision::*;
use crate::identity::*;
use crate::result::*;
use crate::runtime;
use crate::strings::*;

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
    /// The `Origin` header (a CORS preflight has one).
    pub origin: wechat_oauth_str,
    /// The `Access-Control-Request-Method` header (a CORS preflight has one).
    pub access_control_request_method: wechat_oauth_str,
}

/// A client: the configuration, cookie keys, WeChat API client and token
/// store. Thread-safe. Create with [`wechat_oauth_client_new_from_toml`] or
/// [`wechat_oauth_client_new_from_file`], release with [`wechat_oauth_client_free`].
pub struct wechat_oauth_client {
    /// Shared with the logout sync task of a `[store]`-shared client, which
    /// holds it weakly.
    pub(crate) gate: Arc<Gate>,
    /// The policy every request of this client gets, whatever its path
    /// ([`wechat_oauth_client_with_policy`]); `None`: the path's route.
    pub(crate) policy: Option<core_lib::flow::NamedPolicy>,
    // Declared after `gate` so that it is dropped after it.
    pub(crate) runtime: OnceLock<Arc<tokio::runtime::Runtime>>,
}

/// The longest a `qr/status` long poll waits in a library host, in
/// seconds: the example hosts serve one request at a time, and a push
/// must not wait behind a poll (the QR page polls again at once).
pub(crate) const HOST_LONG_POLL_SECS: u64 = 2;

pub(crate) fn new_client(
    config: Result<Config, core_lib::ConfigError>,
    out: &mut *const wechat_oauth_client,
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
        policy: None,
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
    *out = Arc::into_raw(client);
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
    ffi_boundary!({
        let out = try_mut!(out);
        let text = try_str!(toml, toml_len);
        let site = std::env::var(SITE_VAR).ok();
        new_client(
            Config::site_from_toml(text, site.as_deref(), |k| std::env::var(k).ok()),
            out,
        )
    })
}

/// The environment variable naming the `[[site]]` a host serves, when its
/// configuration file has several (README.md "Several sites in one gateway").
const SITE_VAR: &str = "WECHAT_OAUTH_SITE";

/// The file's configuration, or its `[[site]]` named in [`SITE_VAR`].
fn load_file(path: &str) -> Result<Config, core_lib::ConfigError> {
    Config::load_site(Path::new(path), std::env::var(SITE_VAR).ok().as_deref())
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
    ffi_boundary!({
        let out = try_mut!(out);
        let path = try_str!(path, path_len);
        new_client(load_file(path), out)
    })
}

/// Creates a client for the `[[site]]` called `site` (`site_len` bytes) of
/// the TOML file at `path`, whatever `WECHAT_OAUTH_SITE` says: for a host
/// that names the site in its own configuration (nginx's
/// `wechat_oauth_config FILE SITE`). A file without `[[site]]` tables has
/// no site to name (`CONFIG_INVALID`).
///
/// Errors: `CONFIG_UNREADABLE`, `CONFIG_INVALID` (no such site: the
/// detail lists the file's sites), `NULL_PARAMETER`, `INVALID_UTF8`.
///
/// # Safety
/// `path` and `site` point at `path_len` and `site_len` readable bytes;
/// `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_client_new_for_site(
    path: *const c_char,
    path_len: usize,
    site: *const c_char,
    site_len: usize,
    out: *mut *const wechat_oauth_client,
) -> wechat_oauth_result {
    ffi_boundary!({
        let out = try_mut!(out);
        let path = try_str!(path, path_len);
        let site = try_str!(site, site_len);
        new_client(Config::load_site(Path::new(path), Some(site)), out)
    })
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
    ffi_boundary!({
        let out = try_mut!(out);
        let path = try_str!(path, path_len);
        let mut shared = SHARED_CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, client)) = shared.iter().find(|(p, _)| p == path) {
            *out = Arc::into_raw(client.clone());
            return fail(wechat_oauth_result::Ok, "");
        }
        let mut created: *const wechat_oauth_client = std::ptr::null();
        let result = new_client(load_file(path), &mut created);
        if result != wechat_oauth_result::Ok {
            return result;
        }
        if shared.is_empty() {
            runtime::keep_library_loaded();
            // SAFETY: registers a plain function that only locks and clears a static.
            unsafe { libc::atexit(release_shared_clients) };
        }
        // One reference stays in the registry for the life of the process.
        // SAFETY: `created` came from `Arc::into_raw` in `new_client` just now
        // and is live; the registry takes one more reference of it.
        let registered = unsafe {
            Arc::increment_strong_count(created);
            Arc::from_raw(created)
        };
        shared.push((path.to_owned(), registered));
        *out = created;
        wechat_oauth_result::Ok
    })
}

/// The clients of [`wechat_oauth_client_shared_from_file`], by path.
pub(crate) static SHARED_CLIENTS: Mutex<Vec<(String, Arc<wechat_oauth_client>)>> =
    Mutex::new(Vec::new());

/// At exit, drops the registry's references, so the process ends with
/// nothing allocated by it (memory checkers stay quiet).
pub(crate) extern "C" fn release_shared_clients() {
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
    // SAFETY: the caller passes a client from a `_new` function, once.
    release(client.is_null(), || drop(unsafe { Arc::from_raw(client) }));
}

/// Runs a `_free` function's `drop` unless its pointer is NULL, inside the panic boundary.
pub(crate) fn release(is_null: bool, drop_it: impl FnOnce()) {
    let _ = ffi_boundary!({
        if !is_null {
            drop_it();
        }
        wechat_oauth_result::Ok
    });
}

/// A client that decides every request with the policy called `name`
/// (`name_len` bytes, UTF-8), whatever its path: `public`, `login`,
/// `userinfo`, `followers`, or the `name` of a `[[route]]` in the
/// configuration (an `allow` list is a named route). For a host whose own
/// routing picks the policy: an nginx `location` with `wechat_oauth_policy`,
/// a PHP controller for an admin area. It shares everything else with
/// `client` (sessions, single-flight, store); `client` stays as it was.
/// `*out` gets a client to release with [`wechat_oauth_client_free`].
///
/// Errors: `CONFIG_INVALID` when there is no such policy (the detail lists
/// the names there are), `NULL_PARAMETER`, `INVALID_UTF8`.
///
/// # Safety
/// `client` live; `name` points at `name_len` readable bytes; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_client_with_policy(
    client: *const wechat_oauth_client,
    name: *const c_char,
    name_len: usize,
    out: *mut *const wechat_oauth_client,
) -> wechat_oauth_result {
    ffi_boundary!({
        let client = try_ref!(client);
        let out = try_mut!(out);
        let name = try_str!(name, name_len);
        let policy = match client.gate.named_policy(name) {
            Ok(p) => p,
            Err(e) => return fail(wechat_oauth_result::ConfigInvalid, e),
        };
        *out = Arc::into_raw(Arc::new(wechat_oauth_client {
            gate: client.gate.clone(),
            policy: Some(policy),
            runtime: std::sync::OnceLock::new(),
        }));
        fail(wechat_oauth_result::Ok, "")
    })
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
    ffi_boundary!({
        let client = try_ref!(client);
        let out = try_mut!(out);
        *out = wechat_oauth_str::of(&client.gate.config().gateway.prefix);
        wechat_oauth_result::Ok
    })
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
    ffi_boundary!({
        let client = try_ref!(client);
        let request = try_ref!(request);
        let out = try_mut!(out);
        let r = *request;
        // SAFETY: the caller promises readable bytes behind every non-NULL field.
        let parts = match unsafe { request_parts(client, &r) } {
            Ok(p) => p,
            Err(e) => return e,
        };
        *out = Box::into_raw(decision_from(client.gate.decide(&parts), parts.cookie));
        wechat_oauth_result::Ok
    })
}

/// Decides like [`wechat_oauth_client_decide`], into `decision`: a handle
/// the host already holds (from any earlier decide), whose previous
/// contents, and every string borrowed from them, are gone. A host that
/// keeps its handles for the next request (nginx: one spare per worker)
/// makes no allocation for a passing request with a known session cookie:
/// the handle, its identity and its `Cookie` buffer are reused, and the
/// identity's header values are the session's, built once.
///
/// Errors: as [`wechat_oauth_client_decide`] (the handle then holds its
/// previous decision).
///
/// # Safety
/// `client` live; `request` as for [`wechat_oauth_client_decide`];
/// `decision` live, owned by the caller, not in use by
/// [`wechat_oauth_client_complete`] on another thread.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_client_decide_into(
    client: *const wechat_oauth_client,
    request: *const wechat_oauth_request,
    decision: *mut wechat_oauth_decision,
) -> wechat_oauth_result {
    ffi_boundary!({
        let client = try_ref!(client);
        let request = try_ref!(request);
        let decision = try_mut!(decision);
        let r = *request;
        // SAFETY: the caller promises readable bytes behind every non-NULL field.
        let parts = match unsafe { request_parts(client, &r) } {
            Ok(p) => p,
            Err(e) => return e,
        };
        decision.set(client.gate.decide(&parts), parts.cookie);
        wechat_oauth_result::Ok
    })
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
    ffi_boundary!({
        let client = try_ref!(client);
        let request = try_ref!(request);
        let out = try_mut!(out);
        if body.is_null() && body_len > 0 {
            return fail(
                wechat_oauth_result::NullParameter,
                "body is NULL but body_len is not 0",
            );
        }
        let r = *request;
        // SAFETY: the caller promises readable bytes behind every non-NULL field.
        let parts = match unsafe { request_parts(client, &r) } {
            Ok(p) => p,
            Err(e) => return e,
        };
        let body: &[u8] = if body_len == 0 {
            &[]
        } else {
            // SAFETY: the caller gives `body_len` readable bytes at `body`.
            unsafe { std::slice::from_raw_parts(body, body_len) }
        };
        let decision = client.gate.decide_with_body(&parts, body);
        *out = Box::into_raw(decision_from(decision, parts.cookie));
        wechat_oauth_result::Ok
    })
}

/// The core's view of a C request (strings borrowed from it).
///
/// # Safety
/// Every non-NULL `data` in `r` points at `len` readable bytes.
pub(crate) unsafe fn request_parts<'a>(
    client: &wechat_oauth_client,
    r: &wechat_oauth_request,
) -> Result<RequestParts<'a>, wechat_oauth_result> {
    // SAFETY: the caller promises readable bytes behind every non-NULL field.
    let field = |s: wechat_oauth_str| unsafe { s.read() };
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
            origin: field(r.origin)?,
            access_control_request_method: field(r.access_control_request_method)?,
            policy: client.policy,
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
    ffi_boundary!({
        let client = try_ref!(client);
        let out = try_mut!(out);
        let rd = try_str!(return_path, return_path_len);
        let reply = client.gate.start_login_for(rd, None);
        *out = Box::into_raw(decision_from(Decision::Reply(reply), None));
        wechat_oauth_result::Ok
    })
}

impl wechat_oauth_client {
    pub(crate) fn runtime(&self) -> Result<&Arc<tokio::runtime::Runtime>, wechat_oauth_result> {
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

    pub(crate) fn complete(&self, decision: &mut wechat_oauth_decision) -> wechat_oauth_result {
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
    ffi_boundary!({
        let client = try_ref!(client);
        let decision = try_mut!(decision);
        client.complete(decision)
    })
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
    ffi_boundary!({
        let client = try_ref!(client);
        let out = try_mut!(out);
        let cookie = try_str!(cookie, cookie_len);
        let mut decision = decision_from(client.gate.logout(Some(cookie)), None);
        let result = client.complete(&mut decision);
        if result != wechat_oauth_result::Ok {
            return result;
        }
        *out = Box::into_raw(decision);
        wechat_oauth_result::Ok
    })
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
    ffi_boundary!({
        let client = try_ref!(client);
        let out = try_mut!(out);
        let cookie = try_str!(cookie, cookie_len);
        match client.gate.session_identity(cookie) {
            Some(identity) => {
                *out = Box::into_raw(wechat_oauth_identity::new(std::sync::Arc::new(identity)));
                wechat_oauth_result::Ok
            }
            None => fail(
                wechat_oauth_result::NoSession,
                "no valid session in these cookies",
            ),
        }
    })
}
