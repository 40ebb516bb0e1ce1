//! `wechat-gateway`: a reverse proxy that puts WeChat login in front of a web
//! application. `--config FILE` runs it; `--demo` runs it with a local WeChat
//! emulator and a demo application, no WeChat account needed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;

use clap::Parser;
use rand::distr::{Alphanumeric, SampleString};
use wechat_emulator::{Consent, EmulatorConfig};
use wechat_oauth::Config;

/// WeChat login gateway (Pingora reverse proxy).
#[derive(Parser)]
#[command(version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("WECHAT_GATEWAY_COMMIT"), ")"))]
struct Args {
    /// The TOML configuration (README.md lists every key); SIGHUP reloads it.
    #[arg(long, required_unless_present_any = ["demo", "check_config", "print_config"], conflicts_with = "demo")]
    config: Option<PathBuf>,
    /// Check a configuration file: every problem on its own line naming the
    /// key; exit 0 when it is valid, 1 when not.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["demo", "config"])]
    check_config: Option<PathBuf>,
    /// Log lines as text or JSON (one object per line).
    #[arg(long, value_enum, default_value = "text", env = "WECHAT_LOG_FORMAT")]
    log_format: wechat_gateway::logging::Format,
    /// Run the demo: gateway + local WeChat emulator + demo app on loopback.
    #[arg(long)]
    demo: bool,
    /// Where the gateway listens (`[gateway] listen`; with --demo, default
    /// 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The application's host:port (`[gateway] upstream`).
    #[arg(long, conflicts_with = "demo")]
    upstream: Option<String>,
    /// The site's public URL (`[gateway] public_url`).
    #[arg(long, conflicts_with = "demo")]
    public_url: Option<String>,
    /// Take the listening sockets over from the running gateway (then send
    /// it SIGQUIT): an upgrade without a dropped connection.
    #[arg(long, requires = "config")]
    upgrade: bool,
    /// Print a configuration with every key, commented, and exit.
    #[arg(long, exclusive = true)]
    print_config: bool,
}

/// Every key with its default, commented (the package's
/// /etc/wechat-gateway/gateway.toml).
const EXAMPLE_CONFIG: &str = include_str!("../../../packaging/gateway/gateway.toml");

impl Args {
    /// The flags that set config keys, as `WECHAT_GATEWAY__…` overrides
    /// (they win over the file and the environment).
    fn overrides(&self) -> Vec<(String, String)> {
        let quoted = |v: &str| toml::Value::String(v.to_owned()).to_string();
        let mut set = Vec::new();
        if let Some(listen) = self.listen {
            set.push((
                "WECHAT_GATEWAY__GATEWAY__LISTEN".into(),
                quoted(&listen.to_string()),
            ));
        }
        if let Some(upstream) = &self.upstream {
            set.push(("WECHAT_GATEWAY__GATEWAY__UPSTREAM".into(), quoted(upstream)));
        }
        if let Some(url) = &self.public_url {
            set.push(("WECHAT_GATEWAY__GATEWAY__PUBLIC_URL".into(), quoted(url)));
        }
        set
    }
}

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("wechat-gateway: {message}");
    std::process::exit(1);
}

fn main() {
    let args = Args::parse();
    if args.print_config {
        print!("{EXAMPLE_CONFIG}");
        return;
    }
    if let Some(path) = &args.check_config {
        std::process::exit(check_config(path, args.overrides()));
    }
    wechat_gateway::logging::init(args.log_format);
    let server = match &args.config {
        Some(path) => {
            let listeners = if args.upgrade {
                wechat_gateway::Listeners::TakeOver
            } else {
                wechat_gateway::Listeners::Bind
            };
            wechat_gateway::build_server_from_file_with(path, args.overrides(), listeners)
        }
        None => wechat_gateway::build_server(demo_config(
            args.listen
                .unwrap_or_else(|| "127.0.0.1:8080".parse().expect("an address")),
        )),
    }
    .unwrap_or_else(|e| fail(e));
    server.run_forever();
}

/// `--check-config FILE`: each problem on its own line; the exit code.
fn check_config(path: &std::path::Path, overrides: Vec<(String, String)>) -> i32 {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("wechat-gateway: cannot read {}: {e}", path.display());
            return 1;
        }
    };
    // The keys the environment and the flags set, as a start would read them.
    let text = match Config::with_environment(&text, overrides) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("wechat-gateway: {e}");
            return 1;
        }
    };
    let mut problems: Vec<String> = Config::check(&text, |name| std::env::var(name).ok())
        .iter()
        .map(ToString::to_string)
        .collect();
    if problems.is_empty() {
        let env = |name: &str| std::env::var(name).ok();
        let configs: Vec<(String, Config)> = match Config::sites_from_toml(&text, env) {
            Ok(Some(sites)) => sites
                .into_iter()
                .map(|s| (format!("site {:?} ", s.name), s.config))
                .collect(),
            Ok(None) => Config::from_toml(&text, env)
                .map(|c| (String::new(), c))
                .into_iter()
                .collect(),
            Err(_) => Vec::new(),
        };
        for (site, config) in &configs {
            match &config.gateway.upstream {
                None => problems.push(format!(
                    "config {site}[gateway] upstream: missing (host:port of the application)"
                )),
                // Not an error: the name may resolve where the gateway runs.
                Some(upstream)
                    if std::net::ToSocketAddrs::to_socket_addrs(upstream.as_str()).is_err() =>
                {
                    eprintln!(
                        "wechat-gateway: warning: config {site}[gateway] upstream: {upstream:?} does not resolve here"
                    );
                }
                Some(_) => {}
            }
        }
        if let Some((_, config)) = configs.first() {
            for (name, upstream) in &config.upstreams {
                for server in &upstream.servers {
                    if std::net::ToSocketAddrs::to_socket_addrs(server.as_str()).is_err() {
                        eprintln!(
                            "wechat-gateway: warning: config [upstreams.{name}] servers: {server:?} does not resolve here"
                        );
                    }
                }
            }
        }
    }
    for p in &problems {
        eprintln!("wechat-gateway: {p}");
    }
    if problems.is_empty() {
        println!("{}: ok", path.display());
        0
    } else {
        1
    }
}

/// Starts the emulator and the demo app on their own runtime thread and
/// returns the gateway configuration that points at them.
fn demo_config(listen: SocketAddr) -> Config {
    // Held until the helpers have their ports, so neither can be given this one.
    let reservation = std::net::TcpListener::bind(listen).unwrap_or_else(|e| {
        fail(format!(
            "--demo: cannot listen on {listen} ({e}); pick another with --listen 127.0.0.1:PORT"
        ))
    });
    let appid = "wxd3e0f1a2b3c4d5e6";
    let secret = Alphanumeric.sample_string(&mut rand::rng(), 32);
    let cookie_secret = Alphanumeric.sample_string(&mut rand::rng(), 48);
    let push_token = Alphanumeric.sample_string(&mut rand::rng(), 24);
    let mut emulator = EmulatorConfig::new(appid, &secret, &listen.to_string());
    emulator.consent = Consent::Page;
    emulator.push = Some(wechat_emulator::PushTarget {
        url: format!("http://{listen}/_wechat/events"),
        token: push_token.clone(),
        encoding_aes_key: None,
    });

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        runtime.block_on(async move {
            let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
            let started = async {
                let emulator = wechat_emulator::spawn(emulator, loopback).await?;
                // The page calls wx.config with the emulator's JS-SDK stand-in.
                let script = format!("{}/_emulator/jweixin.js", emulator.base_url());
                let (app, _task) =
                    wechat_gateway::demo_app::spawn_with(loopback, Some(script)).await?;
                Ok::<_, std::io::Error>((emulator, app))
            };
            match started.await {
                Ok((emulator, app)) => {
                    let _ = tx.send(Ok((emulator.base_url(), app)));
                    std::future::pending::<()>().await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    });
    let (emulator_url, app) = match rx.recv() {
        Ok(Ok(started)) => started,
        Ok(Err(e)) => fail(format!("--demo: cannot start: {e}")),
        Err(_) => fail("--demo: the demo services stopped"),
    };
    drop(reservation);
    let toml = format!(
        r#"
[wechat]
appid = "{appid}"
secret = "{secret}"
scope = "snsapi_userinfo"
open_base = "{emulator_url}"
api_base = "{emulator_url}"
mp_base = "{emulator_url}"
push_token = "{push_token}"

[gateway]
listen = "{listen}"
upstream = "{app}"
public_url = "http://{listen}"
cookie_secret = "{cookie_secret}"
public_paths = ["/static/", "/spa/"]
desktop_login = "scene_qr"
scene_confirm = true

[store]
# Fresh keys every run: nothing worth keeping.
url = "memory"
"#
    );
    let config = Config::from_toml(&toml, |_| None).unwrap_or_else(|e| fail(e));
    println!(
        "\nwechat-gateway demo\n\
         \n  Open  http://{listen}/  in a browser.\n\
         \n  A desktop browser shows a QR code to scan. The phone is simulated: open\n  \
         {emulator_url}/_emulator/phone  and press \"Scan\", then open the account's\n  \
         message and confirm the login; the QR page logs in by itself.\n  \
         A WeChat browser (User-Agent containing MicroMessenger) goes through the\n  \
         local WeChat emulator's consent page instead.\n\
         \n  Demo app (upstream): http://{app}   Stop: Ctrl-C\n"
    );
    config
}
