//! `wechat-emulator`: serve a local WeChat for demos and tests.

use std::net::SocketAddr;

use clap::Parser;
use wechat_emulator::{Consent, EmulatorConfig};

/// A local stand-in for WeChat's web authorization (authorize page and sns APIs).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:9000.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// The console's authorization callback domain: the host that redirect_uri
    /// must have (host, or host:port to check the port too).
    #[arg(long)]
    callback_host: String,
    /// The Official Account's appid.
    #[arg(long, env = "WECHAT_APPID", default_value = "wx0e1a2b3c4d5e6f70")]
    appid: String,
    /// The app secret the token endpoint accepts.
    #[arg(
        long,
        env = "WECHAT_APP_SECRET",
        hide_env_values = true,
        default_value = "emulator-app-secret"
    )]
    secret: String,
    /// Consent at once (auto) or show a consent page with allow/deny (page).
    #[arg(long, value_enum, default_value = "auto")]
    consent: Consent,
    /// An Open Platform website app's appid, for connect/qrconnect.
    #[arg(long, env = "WECHAT_OPEN_APPID")]
    open_appid: Option<String>,
    /// That website app's secret.
    #[arg(
        long,
        env = "WECHAT_OPEN_SECRET",
        hide_env_values = true,
        default_value = "emulator-open-secret"
    )]
    open_secret: String,
    /// The account's server URL: where scans are pushed.
    #[arg(long)]
    push_url: Option<String>,
    /// The server URL token that signs pushes.
    #[arg(
        long,
        env = "WECHAT_PUSH_TOKEN",
        hide_env_values = true,
        default_value = "emulatortoken"
    )]
    push_token: String,
    /// The EncodingAESKey (43 characters) for safe-mode pushes.
    #[arg(long, env = "WECHAT_ENCODING_AES_KEY", hide_env_values = true)]
    encoding_aes_key: Option<String>,
    /// A WeCom company's corpid: the emulator plays WeCom too.
    #[arg(long, env = "WECOM_CORPID")]
    wecom_corpid: Option<String>,
    /// The WeCom self-built app's AgentId.
    #[arg(long, env = "WECOM_AGENTID", default_value = "1000002")]
    wecom_agentid: String,
    /// The WeCom app's secret `cgi-bin/gettoken` accepts.
    #[arg(
        long,
        env = "WECOM_SECRET",
        hide_env_values = true,
        default_value = "emulator-wecom-secret"
    )]
    wecom_secret: String,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut cfg = EmulatorConfig::new(&args.appid, &args.secret, &args.callback_host);
    cfg.consent = args.consent;
    cfg.open_app = args.open_appid.map(|appid| (appid, args.open_secret));
    cfg.push = args.push_url.map(|url| wechat_emulator::PushTarget {
        url,
        token: args.push_token,
        encoding_aes_key: args.encoding_aes_key,
    });
    cfg.wecom = args.wecom_corpid.map(|corpid| wechat_emulator::WecomApp {
        corpid,
        agentid: args.wecom_agentid,
        secret: args.wecom_secret,
    });
    let running = match wechat_emulator::spawn(cfg, args.listen).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wechat-emulator: cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    println!("wechat-emulator listening on {}", running.base_url());
    let _ = tokio::signal::ctrl_c().await;
}
