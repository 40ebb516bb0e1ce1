//! The `wechat-gateway` server: a Pingora reverse proxy to one upstream
//! with the WeChat gate in front, its configuration file reloaded on
//! SIGHUP, and its metrics on their own address.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::upstreams::peer::HttpPeer;
use wechat_oauth::{Config, Gate, SiteConfig};
use wechat_oauth_pingora::{GateCtx, HeaderDeadlineApp, SharedStateSync, WechatGate};

use crate::access::{AccessLogger, Entry};
use crate::sites::{misdirected, site_of, Site, SiteList};
use crate::tls::Certificates;
use crate::upstreams::Upstreams;

/// A reverse proxy to the application's upstream (and the named upstreams
/// routes send requests to) with the WeChat gate in front; with
/// `[[site]]` tables, one gate and upstream per site, chosen by `Host`.
pub struct GatewayProxy {
    sites: SiteList,
    named: Arc<Upstreams>,
    in_flight: Arc<AtomicUsize>,
    access: Arc<AccessLogger>,
}

impl GatewayProxy {
    /// A proxy to `upstream` guarded by `gate`.
    pub fn new(gate: WechatGate, upstream: SocketAddr) -> Self {
        let site = Site::new(DEFAULT_SITE.to_owned(), Vec::new(), gate, upstream);
        Self::with_sites(Arc::new(vec![site]), Arc::default())
    }

    fn with_sites(sites: SiteList, named: Arc<Upstreams>) -> Self {
        let access = Arc::new(AccessLogger::new(
            &sites[0].gate.gate().config().gateway.access_log,
        ));
        GatewayProxy {
            sites,
            named,
            in_flight: Arc::default(),
            access,
        }
    }

    /// The access log, for reopening it on a signal.
    pub fn access_log(&self) -> Arc<AccessLogger> {
        self.access.clone()
    }

    /// How many requests are being answered right now (shared with the
    /// graceful stop, which waits for it to reach 0).
    pub fn in_flight(&self) -> Arc<AtomicUsize> {
        self.in_flight.clone()
    }
}

/// One request being answered: counted from its context's creation to its
/// drop, whatever way the request ends.
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(count: &Arc<AtomicUsize>) -> InFlight {
        count.fetch_add(1, Ordering::SeqCst);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts each connection from its accept to its end in the in-flight
/// count too, so a stop never exits while a connection is read; and keeps
/// the kept-alive connections that wait for their next request open a
/// while after a stop ([`idle_linger`]).
struct Counted<A> {
    inner: Arc<A>,
    count: Arc<AtomicUsize>,
    grace: std::time::Duration,
}

/// Set on SIGQUIT: the listeners go to a new binary (an upgrade).
static UPGRADING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How long kept-alive connections waiting for their next request stay
/// open once the server stops, before Pingora closes them. A client may be
/// sending on one at that instant, and would see it closed instead of
/// answered: on an upgrade they stay for the whole grace period (each next
/// request is answered with `Connection: close`, so clients move to the new
/// binary; the old one exits once they have); on SIGTERM one second, for
/// requests already on their way.
fn idle_linger(grace: std::time::Duration) -> std::time::Duration {
    if UPGRADING.load(Ordering::SeqCst) {
        grace
    } else {
        grace.min(std::time::Duration::from_secs(1))
    }
}

#[async_trait]
impl<A: pingora::apps::ServerApp + Send + Sync + 'static> pingora::apps::ServerApp for Counted<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: pingora::protocols::Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<pingora::protocols::Stream> {
        let _counted = InFlight::new(&self.count);
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        tokio::time::sleep(idle_linger(self.grace)).await;
        self.inner.cleanup().await
    }
}

/// A request's context: the gate's, and its place in the in-flight count.
pub struct GatewayCtx {
    gate: GateCtx,
    _in_flight: InFlight,
    started: std::time::Instant,
    upstream_ms: Option<u64>,
    /// The named upstream of the request's route (its index in
    /// [`Upstreams`]); `None`: `[gateway] upstream`.
    named_upstream: Option<usize>,
    /// The index of the request's site; `None`: no site serves its host.
    site: Option<usize>,
}

impl GatewayProxy {
    fn site(&self, ctx: &GatewayCtx) -> &Site {
        &self.sites[ctx.site.unwrap_or(0)]
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = GatewayCtx;

    fn new_ctx(&self) -> GatewayCtx {
        GatewayCtx {
            gate: GateCtx::default(),
            _in_flight: InFlight::new(&self.in_flight),
            started: std::time::Instant::now(),
            upstream_ms: None,
            named_upstream: None,
            site: None,
        }
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut GatewayCtx,
    ) -> pingora::Result<bool> {
        let Some(index) = site_of(&self.sites, session) else {
            misdirected(session).await?;
            return Ok(true);
        };
        ctx.site = Some(index);
        let site = &self.sites[index];
        let answered = if self.sites.len() > 1 {
            // The gate's log lines name the site (one site: nothing to tell).
            use tracing::Instrument;
            let span = tracing::info_span!("site", site = %site.name);
            site.gate
                .request_filter(session, &mut ctx.gate)
                .instrument(span)
                .await?
        } else {
            site.gate.request_filter(session, &mut ctx.gate).await?
        };
        if let Some(route) = ctx.gate.route().filter(|_| !answered) {
            let gate = site.gate.gate();
            if let Some(name) = gate
                .config()
                .routes
                .get(route)
                .and_then(|r| r.upstream.as_deref())
            {
                // A reload never brings a route whose upstream is not running.
                ctx.named_upstream = self.named.index_of(name);
            }
        }
        Ok(answered)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut GatewayCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        match ctx.named_upstream {
            Some(index) => Ok(Box::new(self.named.peer(index)?)),
            None => Ok(Box::new(HttpPeer::new(
                self.site(ctx).upstream,
                false,
                String::new(),
            ))),
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut GatewayCtx,
    ) -> pingora::Result<()> {
        self.site(ctx)
            .gate
            .upstream_request_filter(session, upstream_request, &mut ctx.gate)?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut GatewayCtx,
    ) -> pingora::Result<()> {
        ctx.upstream_ms = ctx
            .gate
            .upstream_sent()
            .map(|sent| sent.elapsed().as_millis() as u64);
        self.site(ctx)
            .gate
            .response_filter(upstream_response, &ctx.gate)
    }

    async fn logging(
        &self,
        session: &mut Session,
        e: Option<&pingora::Error>,
        ctx: &mut GatewayCtx,
    ) {
        let req = session.req_header();
        let site = self.site(ctx);
        let gate = site.gate.gate();
        let outcome = match (ctx.gate.passed(), e) {
            _ if ctx.site.is_none() => "misdirected",
            (true, Some(e)) if e.esource() == &pingora::ErrorSource::Upstream => "upstream_error",
            (true, _) => "pass",
            (false, _) => "gate",
        };
        if ctx.site.is_some() {
            site.count(outcome);
        }
        if !self.access.is_on() {
            // No line: no time to format, no address or log id to build.
            return;
        }
        let several = !site.hosts.is_empty();
        let entry = Entry {
            site: ctx.site.filter(|_| several).map(|_| site.name.as_str()),
            time: crate::access::now(),
            client: wechat_oauth_pingora::client_of(session, &gate).map(|ip| ip.to_string()),
            method: req.method.as_str(),
            path: req.uri.path(),
            status: session.response_written().map_or(0, |r| r.status.as_u16()),
            bytes: session.body_bytes_sent(),
            duration_ms: ctx.started.elapsed().as_millis() as u64,
            upstream_ms: ctx.upstream_ms,
            openid: ctx
                .gate
                .identity()
                .map(|i| gate.log_id(&i.openid).into_owned()),
            outcome,
        };
        self.access.write(&entry);
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &pingora::Error,
        ctx: &mut GatewayCtx,
    ) -> pingora::proxy::FailToProxy {
        self.site(ctx).gate.fail_to_proxy(session, e).await
    }

    fn request_summary(&self, session: &Session, ctx: &GatewayCtx) -> String {
        self.site(ctx).gate.request_summary(session)
    }
}

/// The graceful stop on SIGTERM (or after an upgrade on SIGQUIT): Pingora
/// stops accepting, long polls are told to end ("poll again"), and the
/// process exits as soon as no request is in flight, at the latest after
/// `[gateway] shutdown_grace_secs` (Pingora's own grace period, set to the
/// same).
struct GracefulStop {
    sites: SiteList,
    in_flight: Arc<AtomicUsize>,
    grace: std::time::Duration,
}

#[async_trait]
impl BackgroundService for GracefulStop {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Pingora broadcasts its graceful shutdown on SIGTERM (and after
        // handing the listeners to a new binary on SIGQUIT).
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut quit) = signal(SignalKind::quit()) {
            tokio::spawn(async move {
                if quit.recv().await.is_some() {
                    UPGRADING.store(true, Ordering::SeqCst);
                }
            });
        }
        if shutdown.changed().await.is_err() || !*shutdown.borrow() {
            return;
        }
        let deadline = std::time::Instant::now() + self.grace;
        for site in self.sites.iter() {
            site.gate.gate().begin_shutdown();
        }
        tracing::info!(
            in_flight = self.in_flight.load(Ordering::SeqCst),
            grace_secs = self.grace.as_secs(),
            "stopping: no new connections; exiting once the requests in flight are answered"
        );
        let in_flight = self.in_flight.clone();
        // A thread of its own: the runtimes are being shut down around it.
        std::thread::spawn(move || {
            // Pingora closes the listeners first. A connection accepted just
            // before is counted once its task starts, an idle kept-alive one
            // until its linger ends: nothing in flight for 300 ms running
            // means nothing is left.
            std::thread::sleep(std::time::Duration::from_millis(200));
            let mut quiet_since = None;
            while std::time::Instant::now() < deadline {
                if in_flight.load(Ordering::SeqCst) > 0 {
                    quiet_since = None;
                } else if quiet_since
                    .get_or_insert_with(std::time::Instant::now)
                    .elapsed()
                    >= std::time::Duration::from_millis(300)
                {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let left = in_flight.load(Ordering::SeqCst);
            if left > 0 {
                tracing::warn!(left, "grace period over: exiting with requests in flight");
            } else {
                tracing::info!("no request in flight: stopped");
            }
            std::process::exit(0);
        });
    }
}

/// Where a new server's listening sockets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Listeners {
    /// It binds `listen` itself.
    #[default]
    Bind,
    /// It takes them over from the running gateway at `[gateway]
    /// upgrade_sock` (`--upgrade`): start the new binary so, then send the
    /// old one SIGQUIT; the old one hands the sockets over, serves on for
    /// 5 s, then stops gracefully.
    TakeOver,
}

/// The commit this gateway is built from (`unknown` outside a checkout).
pub const COMMIT: &str = env!("WECHAT_GATEWAY_COMMIT");

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
    /// An `[upstreams.NAME]` can't be used (no server resolves, a bad CA file).
    #[error("config [upstreams] {0}")]
    Upstreams(String),
    /// `[gateway] tls_cert`/`tls_key` can't be used.
    #[error("config [gateway] tls_cert/tls_key: {0}")]
    Tls(String),
}

/// Builds the `wechat-gateway` Pingora server for `config`: one proxy
/// service on `[gateway] listen` with one worker thread per CPU.
///
/// Errors: [`StartError`] for a missing upstream or an unusable config.
pub fn build_server(config: Config) -> Result<Server, StartError> {
    build_server_inner(vec![single_site(config)], None, Listeners::Bind)
}

/// The name of the one site of a file without `[[site]]` tables.
pub const DEFAULT_SITE: &str = "default";

fn single_site(config: Config) -> SiteConfig {
    SiteConfig {
        name: DEFAULT_SITE.to_owned(),
        hosts: Vec::new(),
        listener_tls: config.gateway.tls.clone(),
        config,
    }
}

/// [`build_server`] for the configuration file at `path`, reloaded on
/// SIGHUP: cookie keys, `[wechat]`, `[gateway]` routes and paths, and
/// `[store]` change without dropping connections or sessions (`listen`,
/// `upstream` and `metrics_listen` need a restart). A reload that fails
/// keeps the running configuration and logs why.
///
/// Errors: [`StartError`].
pub fn build_server_from_file(path: &std::path::Path) -> Result<Server, StartError> {
    build_server_from_file_with(path, Vec::new(), Listeners::Bind)
}

/// [`build_server_from_file`] with `overrides` (`WECHAT_GATEWAY__…` names
/// and values: the command line's flags), which win over the file and the
/// environment, at the start and at every reload, and its listening
/// sockets from `listeners`.
///
/// Errors: [`StartError`].
pub fn build_server_from_file_with(
    path: &std::path::Path,
    overrides: Vec<(String, String)>,
    listeners: Listeners,
) -> Result<Server, StartError> {
    let sites = load_sites_with(path, &overrides)?;
    build_server_inner(sites, Some((path.to_owned(), overrides)), listeners)
}

/// The sites of the configuration file at `path` (`[[site]]` tables, in
/// order; a file without them is one site, [`DEFAULT_SITE`], answering
/// every host), each with the gateway's default store as
/// [`load_config_with`].
///
/// Errors: as [`Config::load_with`] and [`Config::sites_from_toml`].
pub fn load_sites_with(
    path: &std::path::Path,
    overrides: &[(String, String)],
) -> Result<Vec<SiteConfig>, wechat_oauth::ConfigError> {
    let Some(mut sites) = Config::load_sites_with(path, overrides.iter().cloned())? else {
        return Ok(vec![single_site(load_config_with(path, overrides)?)]);
    };
    for site in &mut sites {
        site.config
            .store
            .default_to_file(std::path::Path::new(DEFAULT_STATE_DIR));
    }
    Ok(sites)
}

/// Where the gateway keeps its state file when `[store]` names none
/// (`[store] state_dir` overrides it; `url = "memory"` keeps nothing).
pub const DEFAULT_STATE_DIR: &str = "./wechat-gateway-state";

/// The configuration file at `path`, with the gateway's default store: the
/// file `store.redb` in [`DEFAULT_STATE_DIR`] when `[store]` names none.
///
/// Errors: [`wechat_oauth::ConfigError`] as [`Config::load`].
pub fn load_config(path: &std::path::Path) -> Result<Config, wechat_oauth::ConfigError> {
    load_config_with(path, &[])
}

/// [`load_config`] with every key also from the environment
/// (`WECHAT_GATEWAY__<TABLE>__<KEY>`) and then from `overrides`.
///
/// Errors: as [`Config::load_with`].
pub fn load_config_with(
    path: &std::path::Path,
    overrides: &[(String, String)],
) -> Result<Config, wechat_oauth::ConfigError> {
    let mut config = Config::load_with(path, overrides.iter().cloned())?;
    config
        .store
        .default_to_file(std::path::Path::new(DEFAULT_STATE_DIR));
    Ok(config)
}

/// `[gateway] upstream` of a site, resolved.
fn site_upstream(site: &SiteConfig) -> Result<SocketAddr, StartError> {
    let named = |problem: String| {
        StartError::Upstream(if site.hosts.is_empty() {
            problem
        } else {
            format!("site {:?}: {problem}", site.name)
        })
    };
    let upstream_text = site
        .config
        .gateway
        .upstream
        .clone()
        .ok_or_else(|| named("missing (host:port of the application)".into()))?;
    upstream_text
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| named(format!("cannot resolve {upstream_text:?}")))
}

fn build_server_inner(
    sites: Vec<SiteConfig>,
    reload_from: Option<(std::path::PathBuf, Vec<(String, String)>)>,
    listeners: Listeners,
) -> Result<Server, StartError> {
    let upstreams = sites
        .iter()
        .map(site_upstream)
        .collect::<Result<Vec<_>, _>>()?;
    // The process's keys are the top level's: the same in every site.
    let config = sites[0].config.clone();
    let listen = config.gateway.listen.clone();
    let metrics_listen = config.gateway.metrics_listen.clone();
    let tls = sites[0].listener_tls.clone();
    let site_certificates: Vec<(Vec<String>, (std::path::PathBuf, std::path::PathBuf))> = sites
        .iter()
        .filter_map(|s| Some((s.hosts.clone(), s.config.gateway.tls.clone()?)))
        .collect();
    let threads = config.gateway.threads;
    let header_timeout = config.gateway.header_timeout;
    let grace = config.gateway.shutdown_grace;
    let upgrade_sock = config.gateway.upgrade_sock.clone();
    let (named, upstream_services) =
        Upstreams::build(&config.upstreams).map_err(StartError::Upstreams)?;
    let named = Arc::new(named);
    let (names, configs): (Vec<_>, Vec<_>) = sites
        .into_iter()
        .map(|s| ((s.name, s.hosts), s.config))
        .unzip();
    let gates = Gate::for_sites(configs)?;
    let shared = gates[0].is_shared();
    let sites: SiteList = Arc::new(
        names
            .into_iter()
            .zip(gates)
            .zip(upstreams)
            .map(|(((name, hosts), gate), upstream)| {
                Site::new(name, hosts, WechatGate::new(Arc::new(gate)), upstream)
            })
            .collect(),
    );

    let mut conf = ServerConf::new().expect("Pingora's default configuration");
    conf.threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // SIGTERM: Pingora stops accepting and waits this long at most (the
    // graceful stop exits earlier once nothing is in flight).
    conf.grace_period_seconds = Some(grace.as_secs());
    conf.graceful_shutdown_timeout_seconds = Some(1);
    conf.upgrade_sock = upgrade_sock.to_string_lossy().into_owned();
    let opt = pingora::server::configuration::Opt {
        upgrade: listeners == Listeners::TakeOver,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();
    let gateway_proxy = GatewayProxy::with_sites(sites.clone(), named.clone());
    let in_flight = gateway_proxy.in_flight();
    let access = gateway_proxy.access_log();
    let proxy = pingora::proxy::http_proxy(&server.configuration, gateway_proxy);
    let mut service = pingora::services::listening::Service::new(
        "wechat gateway".to_owned(),
        Counted {
            inner: Arc::new(HeaderDeadlineApp::new(proxy, header_timeout)),
            count: in_flight.clone(),
            grace,
        },
    );
    let certificate = match &tls {
        Some(listener) => {
            let certificates =
                Certificates::load(listener, &site_certificates).map_err(StartError::Tls)?;
            let settings = pingora::listeners::tls::TlsSettings::with_callbacks(Box::new(
                certificates.clone(),
            ))
            .map_err(|e| StartError::Tls(e.to_string()))?;
            service.add_tls_with_settings(&listen, None, settings);
            Some(certificates)
        }
        None => {
            service.add_tcp(&listen);
            None
        }
    };
    server.add_service(service);
    for upstream in upstream_services {
        server.add_service(upstream);
    }
    if let Some(addr) = &metrics_listen {
        // Pingora's own Prometheus service, on the default registry.
        wechat_oauth::metrics::register();
        for site in sites.iter() {
            wechat_oauth::metrics::register_site(&site.name);
        }
        wechat_oauth::metrics::set_build_info(env!("CARGO_PKG_VERSION"), COMMIT);
        // CPU, memory and open files of this process.
        let process = prometheus::process_collector::ProcessCollector::for_self();
        let _ = prometheus::register(Box::new(process));
        let mut metrics = pingora_prometheus::prometheus_http_service();
        metrics.add_tcp(addr);
        server.add_service(metrics);
    }
    server.add_service(background_service(
        "wechat graceful stop",
        GracefulStop {
            sites: sites.clone(),
            in_flight,
            grace,
        },
    ));
    if shared {
        for site in sites.iter() {
            server.add_service(background_service(
                "wechat shared-state sync",
                SharedStateSync::new(site.gate.clone()),
            ));
        }
    }
    server.add_service(background_service(
        "wechat access log reopen on SIGUSR1",
        ReopenOnUser1(access.clone()),
    ));
    if let Some((path, overrides)) = reload_from {
        server.add_service(background_service(
            "wechat reload on SIGHUP",
            ReloadOnHangup {
                sites,
                path,
                overrides,
                access,
                certificate,
                named,
            },
        ));
    }
    Ok(server)
}

/// Reloads the configuration file on SIGHUP (see [`build_server_from_file`]).
struct ReloadOnHangup {
    sites: SiteList,
    path: std::path::PathBuf,
    overrides: Vec<(String, String)>,
    access: Arc<AccessLogger>,
    /// The TLS certificates, read again with the configuration.
    certificate: Option<Certificates>,
    /// The named upstreams running (built at the start).
    named: Arc<Upstreams>,
}

/// The `[gateway]` keys that differ between `running` and `loaded` and
/// take effect only at a start: the listeners, the upstream, the metrics
/// address, TLS, the upgrade socket, the access log, the deadlines.
fn needs_restart(
    running: &wechat_oauth::config::GatewayConfig,
    loaded: &wechat_oauth::config::GatewayConfig,
) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |key, differs: bool| {
        if differs {
            changed.push(key);
        }
    };
    check("listen", running.listen != loaded.listen);
    check("upstream", running.upstream != loaded.upstream);
    check(
        "metrics_listen",
        running.metrics_listen != loaded.metrics_listen,
    );
    // The files are read again on every reload; their paths are not.
    check("tls_cert/tls_key", running.tls != loaded.tls);
    check("upgrade_sock", running.upgrade_sock != loaded.upgrade_sock);
    check("access_log", running.access_log != loaded.access_log);
    check(
        "header_timeout_secs",
        running.header_timeout != loaded.header_timeout,
    );
    check(
        "shutdown_grace_secs",
        running.shutdown_grace != loaded.shutdown_grace,
    );
    check("threads", running.threads != loaded.threads);
    changed
}

/// Reopens the access log file on SIGUSR1 (logrotate's `postrotate`).
struct ReopenOnUser1(Arc<AccessLogger>);

#[async_trait]
impl BackgroundService for ReopenOnUser1 {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut signals) = signal(SignalKind::user_defined1()) else {
            return;
        };
        loop {
            tokio::select! {
                _ = signals.recv() => self.0.reopen(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl ReloadOnHangup {
    /// Loads the file again and swaps every site's gate, or none: the
    /// keys that changed but need a restart, or why nothing changed.
    fn reload(&self) -> Result<Vec<String>, String> {
        let loaded = load_sites_with(&self.path, &self.overrides).map_err(|e| e.to_string())?;
        let same_sites = loaded.len() == self.sites.len()
            && loaded
                .iter()
                .zip(self.sites.iter())
                .all(|(l, r)| l.name == r.name && l.hosts == r.hosts);
        if !same_sites {
            return Err(
                "the sites ([[site]] names and hosts) changed: that needs a restart".into(),
            );
        }
        let mut gates = Vec::with_capacity(loaded.len());
        let mut waiting: Vec<String> = Vec::new();
        for (site, loaded) in self.sites.iter().zip(loaded) {
            let running = site.gate.gate();
            let gate = running.reload(loaded.config).map_err(|e| e.to_string())?;
            let routed = gate
                .config()
                .routes
                .iter()
                .filter_map(|r| r.upstream.as_deref());
            if !self.named.has_all(routed) {
                return Err("a [[route]] names an upstream that is not running: new [upstreams] need a restart".into());
            }
            let mut changed: Vec<String> =
                needs_restart(&running.config().gateway, &gate.config().gateway)
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
            if running.config().upstreams != gate.config().upstreams {
                changed.push("[upstreams]".into());
            }
            for key in changed {
                if !waiting.contains(&key) {
                    waiting.push(key);
                }
            }
            gates.push(gate);
        }
        for (site, gate) in self.sites.iter().zip(gates) {
            site.gate.replace(gate);
        }
        Ok(waiting)
    }
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
                _ = hangups.recv() => self.access.reopen(),
                _ = shutdown.changed() => return,
            }
            if let Some(certificate) = &self.certificate {
                match certificate.reload() {
                    Ok(()) => tracing::info!("TLS certificate reloaded"),
                    Err(e) => {
                        tracing::error!("TLS certificate reload failed, the running one stays: {e}")
                    }
                }
            }
            match self.reload() {
                Ok(waiting) if waiting.is_empty() => {
                    tracing::info!(config = %self.path.display(), "configuration reloaded")
                }
                Ok(waiting) => tracing::warn!(
                    config = %self.path.display(),
                    restart_needed = %waiting.join(", "),
                    "configuration reloaded; these [gateway] keys changed and apply after a restart"
                ),
                Err(e) => tracing::error!(
                    config = %self.path.display(),
                    "reload failed, the running configuration stays: {e}"
                ),
            }
        }
    }
}
