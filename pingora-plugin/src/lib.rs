//! `wechat-oauth-pingora`: WeChat login in front of any web application, on
//! Pingora.
//!
//! - [`WechatGate`]: the reusable gate component. Call
//!   [`WechatGate::request_filter`] from your `ProxyHttp::request_filter`
//!   (it answers login redirects, 401s and the gate's routes itself and
//!   returns `Ok(true)`), [`WechatGate::upstream_request_filter`] from
//!   `upstream_request_filter` (it strips client-sent `X-WeChat-*` headers and
//!   the gate's cookies, then adds the verified identity), and
//!   [`WechatGate::response_filter`] from `response_filter` (session refresh).
//! - [`SharedStateSync`]: the background service to add when the store is
//!   shared by several instances; [`HeaderDeadlineApp`]: the header deadline
//!   (`[gateway] header_timeout_secs`) around a proxy service.
//!
//! `examples/own_proxy.rs` is a user's own Pingora proxy with the gate in
//! front, in a few dozen lines; the `wechat-gateway` binary (crate
//! `wechat-gateway`) is the complete one.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tracing::Instrument;
use wechat_oauth::session::is_identity_header;
use wechat_oauth::{Decision, Gate, Pass, Reply, RequestParts, UpstreamCookie};

mod header_deadline;
#[cfg(test)]
mod pass_allocations;

pub use header_deadline::HeaderDeadlineApp;

/// The gate component: the `wechat-oauth` flow wired to Pingora's phases.
/// Clones share one gate, which [`WechatGate::replace`] swaps (a reload).
#[derive(Clone)]
pub struct WechatGate {
    gate: Arc<std::sync::RwLock<Arc<Gate>>>,
}

/// Per-request state of the gate, kept in the proxy's `CTX`.
#[derive(Debug, Default)]
pub struct GateCtx {
    pass: Option<Pass>,
    /// When the request went to the upstream, for its latency metric.
    upstream_sent: Option<std::time::Instant>,
}

impl GateCtx {
    /// The verified identity of a request that passed the gate, if any.
    pub fn identity(&self) -> Option<&wechat_oauth::Identity> {
        self.pass.as_ref()?.identity.as_deref()
    }

    /// Whether the gate let the request through to the upstream.
    pub fn passed(&self) -> bool {
        self.pass.is_some()
    }

    /// The index in `Config::routes` of the `[[route]]` the request passed
    /// under; `None`: the default route, or it did not pass.
    pub fn route(&self) -> Option<usize> {
        self.pass.as_ref()?.route
    }

    /// When the request went to the upstream, if it did.
    pub fn upstream_sent(&self) -> Option<std::time::Instant> {
        self.upstream_sent
    }
}

impl WechatGate {
    /// A gate for a [`Gate`] built from the configuration.
    pub fn new(gate: Arc<Gate>) -> Self {
        WechatGate {
            gate: Arc::new(std::sync::RwLock::new(gate)),
        }
    }

    /// The current core gate.
    pub fn gate(&self) -> Arc<Gate> {
        self.gate.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Swaps in a new core gate (a reloaded configuration); requests under
    /// way finish with the one they started with.
    pub fn replace(&self, gate: Gate) {
        *self.gate.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(gate);
    }

    /// Runs the gate on a request. `Ok(true)`: the gate answered (a redirect,
    /// a 401, a page or one of its routes) and the request must not be
    /// proxied; `Ok(false)`: it may go on, with its identity kept in `ctx`.
    ///
    /// Errors: only when writing the answer to the client fails.
    pub async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut GateCtx,
    ) -> pingora::Result<bool> {
        let gate = self.gate();
        let req = session.req_header();
        let cookie = joined_cookie_header(req);
        let client_addr = client_of(session, &gate);
        let head = req.method == http::Method::HEAD;
        let decision = match gate.decide(&request_parts(req, cookie.as_deref(), client_addr)) {
            Decision::NeedsBody { max_bytes } => {
                // Reading the body needs the session: decide again on a copy of the head.
                let (req, cookie) = (req.clone(), cookie.map(Cow::into_owned));
                let body = read_body(session, max_bytes).await;
                gate.decide_with_body(&request_parts(&req, cookie.as_deref(), client_addr), &body)
            }
            other => other,
        };
        let reply = match decision {
            Decision::Pass(pass) => {
                ctx.pass = Some(pass);
                return Ok(false);
            }
            Decision::Reply(reply) => reply,
            Decision::Call(call) => {
                gate.complete(call)
                    .instrument(client_span(client_addr))
                    .await
            }
            Decision::NeedsBody { .. } => Reply::text(500, "the body was read already\n"),
        };
        write_reply(session, reply, head).await?;
        Ok(true)
    }

    /// Prepares a passing request for the upstream: removes every
    /// `X-WeChat-*` header the client sent (in any spelling) and the gate's
    /// own cookies, sets the canonical path, adds `X-WeChat-OpenID`,
    /// `X-WeChat-UnionID` (when known), `X-WeChat-Scope` and
    /// `X-WeChat-Nickname` (percent-encoded UTF-8), and writes the
    /// forwarding headers (`X-Forwarded-For`/`-Proto`/`-Host`, `Forwarded`,
    /// `X-Real-IP`) by the `trusted_proxies` rule.
    ///
    /// Errors: only if Pingora refuses a header (never for values the gate made).
    pub fn upstream_request_filter(
        &self,
        session: &Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut GateCtx,
    ) -> pingora::Result<()> {
        ctx.upstream_sent = Some(std::time::Instant::now());
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        self.prepare_upstream_request(peer, upstream_request, ctx)
    }

    /// [`Self::upstream_request_filter`]'s work on the request head, `peer`
    /// being the connection's address. For a passing request with a cached
    /// session cookie it allocates nothing of its own: the header values
    /// are the session's and the peer's, built once and shared; what is
    /// left is Pingora's (`append_header` parses each custom header name
    /// into a new `HeaderName`, and the map may grow).
    fn prepare_upstream_request(
        &self,
        peer: Option<std::net::IpAddr>,
        upstream_request: &mut RequestHeader,
        ctx: &GateCtx,
    ) -> pingora::Result<()> {
        self.identity_headers(upstream_request, ctx)?;
        match peer {
            Some(peer) => self.forwarding_headers(peer, upstream_request),
            None => Ok(()),
        }
    }

    fn identity_headers(
        &self,
        upstream_request: &mut RequestHeader,
        ctx: &GateCtx,
    ) -> pingora::Result<()> {
        remove_headers(upstream_request, is_identity_header);
        let Some(pass) = &ctx.pass else {
            return Ok(());
        };
        if let Some(path) = &pass.upstream_path {
            // The application gets the path the gate decided on.
            let uri = match upstream_request.uri.query() {
                Some(query) => format!("{path}?{query}"),
                None => path.clone(),
            };
            let uri = http::Uri::try_from(uri).map_err(|e| {
                pingora::Error::because(pingora::ErrorType::InvalidHTTPHeader, "canonical path", e)
            })?;
            upstream_request.set_uri(uri);
        }
        match &pass.upstream_cookie {
            UpstreamCookie::Unchanged => {}
            UpstreamCookie::Remove => {
                upstream_request.remove_header(&http::header::COOKIE);
            }
            UpstreamCookie::Rewritten(cookie) => {
                // A `&'static str` name: Pingora keeps its case without a copy.
                upstream_request.insert_header("Cookie", cookie.as_str())?;
            }
        }
        if let Some(identity) = &pass.identity {
            // Appended: every client-sent X-WeChat-* header is gone by now.
            for (name, value) in identity.upstream_header_values() {
                upstream_request.append_header(*name, value.clone())?;
            }
        }
        Ok(())
    }

    /// The forwarding headers for the upstream: the client's own replaced
    /// with the gate's, unless the peer is a trusted proxy (then its chain
    /// is kept and appended to: `wechat_oauth::forwarded`).
    fn forwarding_headers(
        &self,
        peer: std::net::IpAddr,
        upstream_request: &mut RequestHeader,
    ) -> pingora::Result<()> {
        let gate = self.gate();
        let host = single_header_value(upstream_request, "host");
        let values = match gate.untrusted_forwarding(peer, host) {
            Some(values) => values,
            None => {
                // A trusted front: its chain counts. Repeated headers are
                // one list (RFC 9110 §5.3).
                let joined = |name: &str| -> Option<String> {
                    let values: Vec<&str> = upstream_request
                        .headers
                        .get_all(name)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .collect();
                    (!values.is_empty()).then(|| values.join(", "))
                };
                let (xff, proto, xfh, forwarded, real_ip) = (
                    joined("x-forwarded-for"),
                    joined("x-forwarded-proto"),
                    joined("x-forwarded-host"),
                    joined("forwarded"),
                    joined("x-real-ip"),
                );
                let sent = wechat_oauth::forwarded::Sent {
                    x_forwarded_for: xff.as_deref(),
                    x_forwarded_proto: proto.as_deref(),
                    x_forwarded_host: xfh.as_deref(),
                    forwarded: forwarded.as_deref(),
                    x_real_ip: real_ip.as_deref(),
                };
                let scheme = if gate.config().gateway.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                wechat_oauth::forwarded::header_values(wechat_oauth::forwarded::upstream_headers(
                    peer,
                    scheme,
                    host,
                    &sent,
                    &gate.config().gateway.trusted_proxies,
                ))
            }
        };
        remove_headers(
            upstream_request,
            wechat_oauth::forwarded::is_forwarding_header,
        );
        for (name, value) in values.iter() {
            upstream_request.insert_header(*name, value.clone())?;
        }
        Ok(())
    }
}

/// Removes every header whose name `matches` (a request's own spelling).
/// Nothing is collected unless one is there: most requests have none.
fn remove_headers(request: &mut RequestHeader, matches: fn(&[u8]) -> bool) {
    let found = |name: &http::HeaderName| matches(name.as_str().as_bytes());
    if request.headers.keys().any(found) {
        let names: Vec<http::HeaderName> = request
            .headers
            .keys()
            .filter(|n| found(n))
            .cloned()
            .collect();
        for name in names {
            request.remove_header(&name);
        }
    }
}

/// The value of header `name` when the request has exactly one, as text.
fn single_header_value<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    let mut values = req.headers.get_all(name).iter();
    let first = values.next()?;
    values
        .next()
        .is_none()
        .then(|| first.to_str().ok())
        .flatten()
}

impl WechatGate {
    /// Adds the gate's `Set-Cookie` (a re-sealed session) to the
    /// application's response, and counts the response
    /// (`wechat_gateway_upstream_responses_total{class}`,
    /// `…_upstream_duration_seconds`). Call it from `response_filter`.
    ///
    /// Errors: only if Pingora refuses the header.
    pub fn response_filter(
        &self,
        upstream_response: &mut ResponseHeader,
        ctx: &GateCtx,
    ) -> pingora::Result<()> {
        if let Some(sent) = ctx.upstream_sent {
            wechat_oauth::metrics::count_upstream(
                upstream_response.status.as_u16(),
                sent.elapsed(),
            );
        }
        if let Some(cookie) = ctx.pass.as_ref().and_then(|p| p.set_cookie.as_deref()) {
            upstream_response.append_header(http::header::SET_COOKIE, cookie)?;
        }
        Ok(())
    }
}

impl WechatGate {
    /// What Pingora's error lines say of a request: the method, the path
    /// and the host, never the query (a callback's `code` and `state`, a
    /// token an application put there). Return it from `request_summary`.
    pub fn request_summary(&self, session: &Session) -> String {
        let req = session.req_header();
        let host = header_value(req, "host").unwrap_or("");
        format!("{} {}, Host: {host}", req.method.as_str(), req.uri.path())
    }

    /// The answer when proxying to the application fails: for a failure of
    /// the upstream (refused, reset, timed out) the gate's `502` page or
    /// JSON with `Retry-After` ([`Gate::upstream_failed`]) instead of
    /// Pingora's empty one; anything else as Pingora answers it. Call it
    /// from `fail_to_proxy`.
    pub async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &pingora::Error,
    ) -> pingora::proxy::FailToProxy {
        use pingora::{ErrorSource, ErrorType};
        let code = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(code)) => *code,
            (ErrorSource::Upstream, _) => 502,
            (
                ErrorSource::Downstream,
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
            ) => 0,
            (ErrorSource::Downstream, _) => 400,
            _ => 500,
        };
        // The connection is not reused after the answer: say so in it
        // (`Connection: close`), so a client never sends its next request
        // on a connection being closed.
        session.set_keepalive(None);
        if code == 502 && e.esource() == &ErrorSource::Upstream {
            tracing::warn!(error = e.etype().as_str(), "the upstream failed");
            let head = session.req_header().method == http::Method::HEAD;
            let reply = {
                let req = session.req_header();
                let cookie = joined_cookie_header(req);
                let parts = request_parts(req, cookie.as_deref(), None);
                self.gate().upstream_failed(&parts)
            };
            if let Err(e) = write_reply(session, reply, head).await {
                tracing::debug!(error = %e, "could not answer the upstream failure");
            }
        } else if code > 0 {
            let _ = session.respond_error(code).await;
        }
        pingora::proxy::FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

/// The request's client address: the peer, or the address a trusted proxy
/// forwarded (`[gateway] trusted_proxies`,
/// [`wechat_oauth::forwarded::client_address`]).
pub fn client_of(session: &Session, gate: &Gate) -> Option<std::net::IpAddr> {
    let peer = session.client_addr()?.as_inet()?.ip();
    Some(wechat_oauth::forwarded::client_address(
        peer,
        header_value(session.req_header(), "x-forwarded-for"),
        &gate.config().gateway.trusted_proxies,
    ))
}

/// The span a request's IO runs in: its log lines (a login, a refusal)
/// name the client address ([`wechat_oauth::forwarded::client_address`]).
fn client_span(client: Option<std::net::IpAddr>) -> tracing::Span {
    match client {
        Some(ip) => tracing::info_span!("request", client = %ip),
        None => tracing::info_span!("request"),
    }
}

/// All `Cookie` headers of a request as one value (HTTP/2 may split them).
fn joined_cookie_header(req: &RequestHeader) -> Option<Cow<'_, str>> {
    let mut values = req
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let first = values.next()?;
    match values.next() {
        None => Some(Cow::Borrowed(first)),
        Some(second) => {
            let mut all = format!("{first}; {second}");
            for v in values {
                all.push_str("; ");
                all.push_str(v);
            }
            Some(Cow::Owned(all))
        }
    }
}

/// The request body, up to `limit` bytes plus one: a longer body is cut
/// there, so the gate sees that it is too large and answers `413`.
async fn read_body(session: &mut Session, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = session.read_request_body().await {
        let room = (limit + 1).saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() > limit {
            break;
        }
    }
    body
}

/// The first value of header `name`, if it is text.
fn header_value<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// What the gate sees of a request: its head, the joined `Cookie` header
/// and the client address.
fn request_parts<'a>(
    req: &'a RequestHeader,
    cookie: Option<&'a str>,
    client_addr: Option<std::net::IpAddr>,
) -> RequestParts<'a> {
    let header = |name| header_value(req, name);
    RequestParts {
        method: req.method.as_str(),
        path: req.uri.path(),
        query: req.uri.query(),
        cookie,
        user_agent: header("user-agent"),
        accept: header("accept"),
        x_requested_with: header("x-requested-with"),
        accept_language: header("accept-language"),
        client_addr,
        original_uri: header("x-original-uri"),
        original_method: header("x-original-method"),
        origin: header("origin"),
        access_control_request_method: header("access-control-request-method"),
        policy: None,
    }
}

async fn write_reply(session: &mut Session, reply: Reply, head: bool) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(reply.status, Some(reply.headers.len() + 1))?;
    for (name, value) in reply.headers {
        resp.append_header(name, value)?;
    }
    resp.insert_header(http::header::CONTENT_LENGTH, reply.body.len())?;
    if head || reply.body.is_empty() {
        session.write_response_header(Box::new(resp), true).await
    } else {
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(Bytes::from(reply.body)), true)
            .await
    }
}

/// The background service an embedder adds when the gate's store is
/// shared (`Gate::is_shared`): it reads the other instances' logouts every
/// 500 ms. `server.add_service(background_service("wechat shared-state
/// sync", SharedStateSync::new(gate.clone())))`.
pub struct SharedStateSync(WechatGate);

impl SharedStateSync {
    /// The service for `gate`.
    pub fn new(gate: WechatGate) -> Self {
        SharedStateSync(gate)
    }
}

#[async_trait]
impl BackgroundService for SharedStateSync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            // Failures are logged once per outage by the store.
            let _ = self.0.gate().sync_revocations().await;
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
