//! A user's own Pingora proxy with the WeChat gate in front: the gate
//! answers logins and its routes in `request_filter`, and hands the
//! verified identity to the upstream in `upstream_request_filter`.
//!
//! `cargo run -p wechat-oauth-pingora --example own_proxy -- gateway.toml`
//! (the gateway's TOML: `[wechat]`, `[gateway] listen`, `upstream`, …).

use std::sync::Arc;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::upstreams::peer::HttpPeer;
use wechat_oauth::{Config, Gate};
use wechat_oauth_pingora::{GateCtx, SharedStateSync, WechatGate};

/// The user's proxy: one upstream, and the gate.
struct MyProxy {
    gate: WechatGate,
    upstream: String,
}

#[async_trait]
impl ProxyHttp for MyProxy {
    type CTX = GateCtx;

    fn new_ctx(&self) -> GateCtx {
        GateCtx::default()
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut GateCtx,
    ) -> pingora::Result<bool> {
        // `true`: the gate answered (a login redirect, a 401, its own routes).
        self.gate.request_filter(session, ctx).await
    }

    async fn upstream_peer(
        &self,
        _: &mut Session,
        _: &mut GateCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        request: &mut RequestHeader,
        ctx: &mut GateCtx,
    ) -> pingora::Result<()> {
        // The verified X-WeChat-* identity; anything the client sent is gone.
        self.gate.upstream_request_filter(session, request, ctx)
    }

    async fn response_filter(
        &self,
        _: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut GateCtx,
    ) -> pingora::Result<()> {
        self.gate.response_filter(response, ctx)
    }

    // The gate's 502 page when the upstream fails, and error lines
    // without the query (a callback's code and state).
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &pingora::Error,
        _: &mut GateCtx,
    ) -> pingora::proxy::FailToProxy {
        self.gate.fail_to_proxy(session, e).await
    }

    fn request_summary(&self, session: &Session, _: &GateCtx) -> String {
        self.gate.request_summary(session)
    }
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: own_proxy CONFIG.toml");
    let config = Config::load(std::path::Path::new(&path)).unwrap_or_else(|e| panic!("{e}"));
    let (listen, upstream) = (
        config.gateway.listen.clone(),
        config.gateway.upstream.clone(),
    );
    let gate = WechatGate::new(Arc::new(
        Gate::new(config).unwrap_or_else(|e| panic!("{e}")),
    ));
    let mut server = Server::new(None).expect("a Pingora server");
    server.bootstrap();
    let proxy = MyProxy {
        gate: gate.clone(),
        upstream: upstream.expect("[gateway] upstream"),
    };
    let mut service = http_proxy_service(&server.configuration, proxy);
    service.add_tcp(&listen);
    server.add_service(service);
    if gate.gate().is_shared() {
        server.add_service(background_service(
            "wechat sync",
            SharedStateSync::new(gate),
        ));
    }
    server.run_forever();
}
