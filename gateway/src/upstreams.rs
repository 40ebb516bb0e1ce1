//! The named upstreams (`[upstreams.NAME]`, README "Upstreams"): each a
//! Pingora load balancer (round robin) over the addresses its servers'
//! names resolve to, resolved again every `resolve_secs`, each address
//! checked by a TCP connect every `health_check_secs`; HTTPS with SNI and
//! certificate verification against a CA file or the system's roots.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::ToSocketAddrs;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::health_check::TcpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::protocols::l4::socket::SocketAddr;
use pingora::services::background::{background_service, GenBackgroundService};
use pingora::tls::x509::X509;
use pingora::upstreams::peer::HttpPeer;
use wechat_oauth::config::UpstreamConfig;

/// One named upstream, ready to pick a server for a request.
struct Named {
    name: String,
    balancer: Arc<LoadBalancer<RoundRobin>>,
    tls: bool,
    sni: String,
    ca: Option<Arc<Box<[X509]>>>,
}

/// The gateway's named upstreams, indexed in name order.
#[derive(Default)]
pub(crate) struct Upstreams {
    named: Vec<Named>,
}

/// The background services that keep the upstreams' addresses and health
/// current (added to the server).
pub(crate) type UpstreamServices = Vec<GenBackgroundService<LoadBalancer<RoundRobin>>>;

impl Upstreams {
    /// Builds every upstream of `config`, each resolved once now.
    ///
    /// Errors: a line naming the upstream whose servers do not resolve or
    /// whose `ca_file` holds no PEM certificate.
    pub(crate) fn build(
        config: &BTreeMap<String, UpstreamConfig>,
    ) -> Result<(Upstreams, UpstreamServices), String> {
        let mut upstreams = Upstreams::default();
        let mut services = Vec::new();
        for (name, upstream) in config {
            let ca = match &upstream.ca_file {
                Some(path) => {
                    let pem = std::fs::read(path)
                        .map_err(|e| format!("{name}: ca_file {}: {e}", path.display()))?;
                    let certs = X509::stack_from_pem(&pem)
                        .map_err(|e| format!("{name}: ca_file {}: {e}", path.display()))?;
                    if certs.is_empty() {
                        return Err(format!(
                            "{name}: ca_file {}: no PEM certificate",
                            path.display()
                        ));
                    }
                    Some(Arc::new(certs.into_boxed_slice()))
                }
                None => None,
            };
            let mut balancer =
                LoadBalancer::<RoundRobin>::from_backends(Backends::new(Box::new(Resolving {
                    upstream: name.clone(),
                    servers: upstream.servers.clone(),
                })));
            // The first resolution, before any request: resolving blocks,
            // so the update completes at its first poll.
            use futures_util::FutureExt;
            balancer
                .update()
                .now_or_never()
                .ok_or_else(|| format!("{name}: resolving did not complete"))?
                .map_err(|e| format!("{name}: {e}"))?;
            balancer.update_frequency = Some(upstream.resolve_every);
            if let Some(every) = upstream.health_check_every {
                balancer.set_health_check(TcpHealthCheck::new());
                balancer.health_check_frequency = Some(every);
                balancer.parallel_health_check = true;
            }
            let service = background_service(&format!("wechat upstream {name}"), balancer);
            upstreams.named.push(Named {
                name: name.clone(),
                balancer: service.task(),
                tls: upstream.tls,
                sni: upstream.sni.clone(),
                ca,
            });
            services.push(service);
        }
        Ok((upstreams, services))
    }

    /// The index of the upstream called `name`.
    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.named.iter().position(|n| n.name == name)
    }

    /// Whether every name is one of these upstreams.
    pub(crate) fn has_all<'a>(&self, mut names: impl Iterator<Item = &'a str>) -> bool {
        names.all(|name| self.index_of(name).is_some())
    }

    /// A peer for the next request to upstream `index`: the next healthy
    /// address, round robin.
    ///
    /// Errors: `ConnectNoRoute` when no address is healthy (the client
    /// gets the gate's 502 page).
    pub(crate) fn peer(&self, index: usize) -> pingora::Result<HttpPeer> {
        let named = self.named.get(index).ok_or_else(|| {
            pingora::Error::explain(pingora::ErrorType::ConnectNoRoute, "no such upstream")
        })?;
        let backend = named.balancer.select(b"", 256).ok_or_else(|| {
            pingora::Error::explain(
                pingora::ErrorType::ConnectNoRoute,
                format!("upstream {}: no healthy server", named.name),
            )
        })?;
        let addr = backend.addr.as_inet().copied().ok_or_else(|| {
            pingora::Error::explain(pingora::ErrorType::ConnectNoRoute, "not an IP address")
        })?;
        let mut peer = HttpPeer::new(addr, named.tls, named.sni.clone());
        peer.options.ca = named.ca.clone();
        // Pooled connections are this upstream's own: one verified with
        // another upstream's CA is never reused here.
        peer.group_key = index as u64 + 1;
        Ok(peer)
    }
}

/// Service discovery by DNS: every address each server's name resolves to.
struct Resolving {
    upstream: String,
    servers: Vec<String>,
}

#[async_trait]
impl ServiceDiscovery for Resolving {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut backends = BTreeSet::new();
        for server in &self.servers {
            // Blocking, like Pingora's own static discovery: this runs on
            // the upstream's background thread, never on a request's.
            match server.to_socket_addrs() {
                Ok(addrs) => backends.extend(addrs.map(|addr| Backend {
                    addr: SocketAddr::Inet(addr),
                    weight: 1,
                    ext: http::Extensions::new(),
                })),
                Err(e) => tracing::warn!(
                    upstream = %self.upstream,
                    server = %server,
                    "cannot resolve: {e}"
                ),
            }
        }
        if backends.is_empty() {
            // The balancer keeps the addresses it has.
            return Err(pingora::Error::explain(
                pingora::ErrorType::ConnectNoRoute,
                format!("no server of upstream {} resolves", self.upstream),
            ));
        }
        Ok((backends, HashMap::new()))
    }
}
