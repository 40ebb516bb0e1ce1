//! The baseline: a bare Pingora reverse proxy with the same Pingora version
//! and thread count as `wechat-gateway` (one per CPU, or THREADS), and
//! nothing else.
//!   bare-pingora LISTEN UPSTREAM [THREADS]

use std::net::{SocketAddr, ToSocketAddrs};

use async_trait::async_trait;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;

struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare-pingora LISTEN UPSTREAM [THREADS]");
        std::process::exit(2);
    };
    let upstream = upstream
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .expect("upstream address");
    let mut conf = ServerConf::new().expect("Pingora's default configuration");
    conf.threads = match args.next() {
        Some(threads) => threads.parse().expect("THREADS: a number"),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, Bare { upstream });
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever();
}
