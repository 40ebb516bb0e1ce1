//! `wechat-demo-app`: the small application the demo puts behind the gateway.

use std::net::SocketAddr;

use clap::Parser;

/// Serve the demo application (shows the X-WeChat-* identity headers it gets).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// The JS-SDK script the page loads to call `wx.config` through the
    /// gate's `jssdk-config` (e.g. https://res.wx.qq.com/open/js/jweixin-1.6.0.js).
    #[arg(long)]
    jssdk_script: Option<String>,
}

#[tokio::main]
async fn main() {
    wechat_gateway::logging::init(wechat_gateway::logging::Format::Text);
    let args = Args::parse();
    match wechat_gateway::demo_app::spawn_with(args.listen, args.jssdk_script).await {
        Ok((addr, _task)) => {
            println!("wechat-demo-app listening on http://{addr}");
            let _ = tokio::signal::ctrl_c().await;
        }
        Err(e) => {
            eprintln!("wechat-demo-app: cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    }
}
