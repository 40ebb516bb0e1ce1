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
//! - [`GatewayProxy`]: a complete `ProxyHttp` that protects one upstream.
//! - [`build_server`]: the `wechat-gateway` server for a [`Config`].

use std::borrow::Cow;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::upstreams::peer::HttpPeer;
use tracing::Instrument;
use wechat_oauth::session::is_identity_header;
use wechat_oauth::{Config, Decision, Gate, Pass, Reply, RequestParts};

pub mod demo_app;
mod header_deadline;
pub mod logging;

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
}

impl GateCtx {
    /// The verified identity of a request that passed the gate, if any.
    pub fn identity(&self) -> Option<&wechat_oauth::Identity> {
        self.pass.as_ref()?.identity.as_ref()
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
        let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
        let cookie = joined_cookie_header(req);
        let client_addr = session.client_addr().and_then(|a| a.as_inet()).map(|peer| {
            wechat_oauth::forwarded::client_address(
                peer.ip(),
                header("x-forwarded-for"),
                &gate.config().gateway.trusted_proxies,
            )
        });
        let parts = RequestParts {
            method: req.method.as_str(),
            path: req.uri.path(),
            query: req.uri.query(),
            cookie: cookie.as_deref(),
            user_agent: header("user-agent"),
            accept: header("accept"),
            x_requested_with: header("x-requested-with"),
            accept_language: header("accept-language"),
            client_addr,
            original_uri: header("x-original-uri"),
            original_method: header("x-original-method"),
        };
        let head = req.method == http::Method::HEAD;
        let decision = match gate.decide(&parts) {
            Decision::NeedsBody { max_bytes } => {
                // The request's strings outlive the body read, which needs the session.
                let owned = OwnedParts::of(&parts);
                let body = read_body(session, max_bytes).await;
                gate.decide_with_body(&owned.parts(client_addr), &body)
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
    /// `X-WeChat-*` header the client sent and the gate's own cookies, then
    /// adds `X-WeChat-OpenID`, `X-WeChat-UnionID` (when known),
    /// `X-WeChat-Scope` and `X-WeChat-Nickname` (percent-encoded UTF-8).
    ///
    /// Errors: only if Pingora refuses a header (never for values the gate made).
    pub fn upstream_request_filter(
        &self,
        upstream_request: &mut RequestHeader,
        ctx: &GateCtx,
    ) -> pingora::Result<()> {
        let spoofed = |name: &http::HeaderName| is_identity_header(name.as_str().as_bytes());
        if upstream_request.headers.keys().any(spoofed) {
            let names: Vec<http::HeaderName> = upstream_request
                .headers
                .keys()
                .filter(|n| spoofed(n))
                .cloned()
                .collect();
            for name in names {
                upstream_request.remove_header(&name);
            }
        }
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
            Some(cookie) => {
                upstream_request.insert_header(http::header::COOKIE, cookie.as_str())?;
            }
            None => {
                upstream_request.remove_header(&http::header::COOKIE);
            }
        }
        if let Some(identity) = &pass.identity {
            // Appended: every client-sent X-WeChat-* header is gone by now.
            for (name, value) in identity.upstream_headers() {
                upstream_request.append_header(name, value.as_ref())?;
            }
        }
        Ok(())
    }
}

impl WechatGate {
    /// Adds the gate's `Set-Cookie` (a re-sealed session) to the
    /// application's response. Call it from `response_filter`.
    ///
    /// Errors: only if Pingora refuses the header.
    pub fn response_filter(
        &self,
        upstream_response: &mut ResponseHeader,
        ctx: &GateCtx,
    ) -> pingora::Result<()> {
        if let Some(cookie) = ctx.pass.as_ref().and_then(|p| p.set_cookie.as_deref()) {
            upstream_response.append_header(http::header::SET_COOKIE, cookie)?;
        }
        Ok(())
    }
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

/// The request body, at most `limit` bytes; `None` when larger.
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

/// A request's parts, owned, for deciding again after its body is read.
struct OwnedParts {
    strings: [Option<String>; 10],
}

impl OwnedParts {
    fn of(p: &RequestParts<'_>) -> Self {
        let own = |s: Option<&str>| s.map(str::to_owned);
        OwnedParts {
            strings: [
                Some(p.method.to_owned()),
                Some(p.path.to_owned()),
                own(p.query),
                own(p.cookie),
                own(p.user_agent),
                own(p.accept),
                own(p.x_requested_with),
                own(p.accept_language),
                own(p.original_uri),
                own(p.original_method),
            ],
        }
    }

    fn parts(&self, client_addr: Option<std::net::IpAddr>) -> RequestParts<'_> {
        let s = |i: usize| self.strings[i].as_deref();
        RequestParts {
            method: s(0).unwrap_or("POST"),
            path: s(1).unwrap_or("/"),
            query: s(2),
            cookie: s(3),
            user_agent: s(4),
            accept: s(5),
            x_requested_with: s(6),
            accept_language: s(7),
            client_addr,
            original_uri: s(8),
            original_method: s(9),
        }
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

/// A reverse proxy to one upstream with the WeChat gate in front.
pub struct GatewayProxy {
    gate: WechatGate,
    upstream: SocketAddr,
}

impl GatewayProxy {
    /// A proxy to `upstream` guarded by `gate`.
    pub fn new(gate: WechatGate, upstream: SocketAddr) -> Self {
        GatewayProxy { gate, upstream }
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = GateCtx;

    fn new_ctx(&self) -> GateCtx {
        GateCtx::default()
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut GateCtx,
    ) -> pingora::Result<bool> {
        self.gate.request_filter(session, ctx).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut GateCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut GateCtx,
    ) -> pingora::Result<()> {
        self.gate.upstream_request_filter(upstream_request, ctx)?;
        if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()) {
            let gate = self.gate.gate();
            // Repeated headers are one list (RFC 9110 §5.3).
            let header = |name: &str| -> Option<String> {
                let values: Vec<&str> = upstream_request
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                (!values.is_empty()).then(|| values.join(", "))
            };
            let (xff, proto, xfh, forwarded, real_ip, host) = (
                header("x-forwarded-for"),
                header("x-forwarded-proto"),
                header("x-forwarded-host"),
                header("forwarded"),
                header("x-real-ip"),
                header("host"),
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
            let headers = wechat_oauth::forwarded::upstream_headers(
                addr.ip(),
                scheme,
                host.as_deref(),
                &sent,
                &gate.config().gateway.trusted_proxies,
            );
            let forwarding: Vec<http::HeaderName> = upstream_request
                .headers
                .keys()
                .filter(|n| wechat_oauth::forwarded::is_forwarding_header(n.as_str().as_bytes()))
                .cloned()
                .collect();
            for name in forwarding {
                upstream_request.remove_header(&name);
            }
            for (name, value) in headers {
                upstream_request.insert_header(name, value)?;
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut GateCtx,
    ) -> pingora::Result<()> {
        self.gate.response_filter(upstream_response, ctx)
    }
}

/// Why the gateway can't start; each message is one line naming what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration problem.
    #[error(transparent)]
    Config(#[from] wechat_oauth::ConfigError),
    /// The gate could not be built.
    #[error(transparent)]
    Gate(#[from] wechat_oauth::GateError),
    /// `[gateway] upstream` is missing or does not resolve.
    #[error("config [gateway] upstream: {0}")]
    Upstream(String),
    /// `[gateway] tls_cert`/`tls_key` can't be used.
    #[error("config [gateway] tls_cert/tls_key: {0}")]
    Tls(String),
}

/// Builds the `wechat-gateway` Pingora server for `config`: one proxy
/// service on `[gateway] listen` with one worker thread per CPU.
///
/// Errors: [`StartError`] for a missing upstream or an unusable config.
pub fn build_server(config: Config) -> Result<Server, StartError> {
    build_server_inner(config, None)
}

/// [`build_server`] for the configuration file at `path`, reloaded on
/// SIGHUP: cookie keys, `[wechat]`, `[gateway]` routes and paths, and
/// `[store]` change without dropping connections or sessions (`listen`,
/// `upstream` and `metrics_listen` need a restart). A reload that fails
/// keeps the running configuration and logs why.
///
/// Errors: [`StartError`].
pub fn build_server_from_file(path: &std::path::Path) -> Result<Server, StartError> {
    let config = load_config(path)?;
    build_server_inner(config, Some(path.to_owned()))
}

/// Where the gateway keeps its state file when `[store]` names none
/// (`[store] state_dir` overrides it; `url = "memory"` keeps nothing).
pub const DEFAULT_STATE_DIR: &str = "./wechat-gateway-state";

/// The configuration file at `path`, with the gateway's default store: the
/// file `store.redb` in [`DEFAULT_STATE_DIR`] when `[store]` names none.
///
/// Errors: [`wechat_oauth::ConfigError`] as [`Config::load`].
pub fn load_config(path: &std::path::Path) -> Result<Config, wechat_oauth::ConfigError> {
    let mut config = Config::load(path)?;
    config
        .store
        .default_to_file(std::path::Path::new(DEFAULT_STATE_DIR));
    Ok(config)
}

fn build_server_inner(
    config: Config,
    reload_from: Option<std::path::PathBuf>,
) -> Result<Server, StartError> {
    let upstream_text = config
        .gateway
        .upstream
        .clone()
        .ok_or_else(|| StartError::Upstream("missing (host:port of the application)".into()))?;
    let upstream = upstream_text
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| StartError::Upstream(format!("cannot resolve {upstream_text:?}")))?;
    let listen = config.gateway.listen.clone();
    let metrics_listen = config.gateway.metrics_listen.clone();
    let tls = config.gateway.tls.clone();
    let header_timeout = config.gateway.header_timeout;
    let core_gate = Arc::new(Gate::new(config)?);
    let shared = core_gate.is_shared();
    let gate = WechatGate::new(core_gate);

    let mut conf = ServerConf::new().expect("Pingora's default configuration");
    conf.threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let proxy = pingora::proxy::http_proxy(
        &server.configuration,
        GatewayProxy::new(gate.clone(), upstream),
    );
    let mut service = pingora::services::listening::Service::new(
        "wechat gateway".to_owned(),
        header_deadline::HeaderDeadlineApp::new(proxy, header_timeout),
    );
    match &tls {
        Some((cert, key)) => service
            .add_tls(&listen, &cert.to_string_lossy(), &key.to_string_lossy())
            .map_err(|e| StartError::Tls(e.to_string()))?,
        None => service.add_tcp(&listen),
    }
    server.add_service(service);
    if let Some(addr) = &metrics_listen {
        let mut metrics =
            pingora::services::listening::Service::new("wechat metrics".to_owned(), MetricsApp);
        metrics.add_tcp(addr);
        server.add_service(metrics);
    }
    if shared {
        server.add_service(background_service(
            "wechat shared-state sync",
            SharedStateSync(gate.clone()),
        ));
    }
    if let Some(path) = reload_from {
        server.add_service(background_service(
            "wechat reload on SIGHUP",
            ReloadOnHangup { gate, path },
        ));
    }
    Ok(server)
}

/// Reloads the configuration file on SIGHUP (see [`build_server_from_file`]).
struct ReloadOnHangup {
    gate: WechatGate,
    path: std::path::PathBuf,
}

#[async_trait]
impl BackgroundService for ReloadOnHangup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: reloading is off");
            return;
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => {}
                _ = shutdown.changed() => return,
            }
            let reloaded = load_config(&self.path)
                .map_err(|e| e.to_string())
                .and_then(|config| self.gate.gate().reload(config).map_err(|e| e.to_string()));
            match reloaded {
                Ok(gate) => {
                    self.gate.replace(gate);
                    tracing::info!(config = %self.path.display(), "configuration reloaded");
                }
                Err(e) => tracing::error!(
                    config = %self.path.display(),
                    "reload failed, the running configuration stays: {e}"
                ),
            }
        }
    }
}

/// Serves the process's metrics (Prometheus text format) on
/// `[gateway] metrics_listen`, at `/metrics` (any other path: 404).
struct MetricsApp;

#[async_trait]
impl pingora::apps::http_app::ServeHttp for MetricsApp {
    async fn response(
        &self,
        session: &mut pingora::protocols::http::ServerSession,
    ) -> http::Response<Vec<u8>> {
        let (status, body) = if session.req_header().uri.path() == "/metrics" {
            (200, wechat_oauth::metrics::render().into_bytes())
        } else {
            (404, b"metrics are at /metrics\n".to_vec())
        };
        http::Response::builder()
            .status(status)
            .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            .header("Content-Length", body.len())
            .body(body)
            .expect("a valid response")
    }
}

/// Reads the logouts of the other instances every 500 ms (`[store]` shared).
struct SharedStateSync(WechatGate);

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
