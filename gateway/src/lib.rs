//! `wechat-gateway`: the WeChat login gate as a complete reverse proxy
//! (binary `wechat-gateway`, `--config FILE` or `--demo`), and the small
//! demo application it is shown with (binary `wechat-demo-app`). The gate
//! itself is the library `wechat-oauth-pingora`.

pub mod access;
pub mod demo_app;
pub mod logging;
mod server;
mod sites;
mod tls;
mod upstreams;

pub use server::{
    build_server, build_server_from_file, build_server_from_file_with, load_config,
    load_config_with, load_sites_with, GatewayProxy, Listeners, StartError, DEFAULT_SITE,
    DEFAULT_STATE_DIR,
};
