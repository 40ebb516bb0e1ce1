//! Two sites on one gateway over real HTTP: `127.0.0.1` and `localhost`,
//! each with its own Official Account (two emulators), upstream and
//! routes, one state file. A session of one site never passes on the
//! other; a host no site serves gets 421; the access log and the metrics
//! name the site.

use std::time::{Duration, Instant};

use wechat_e2e::{
    free_port, query_param, raw_request, raw_status, Browser, Proc, ScratchDir, WECHAT_UA,
};

struct Account {
    appid: &'static str,
    secret: String,
    emulator: String,
    app: String,
}

async fn account(
    dir: &ScratchDir,
    label: &str,
    appid: &'static str,
    host: &str,
) -> (Account, Proc, Proc) {
    let secret = format!("secret{}", wechat_e2e::random(20));
    let (emu_port, app_port) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{emu_port}");
    let emulator = Proc::start(
        dir,
        &format!("emulator-{label}"),
        "wechat-emulator",
        &[
            "--listen",
            &listen,
            "--callback-host",
            host,
            "--appid",
            appid,
        ],
        &[("WECHAT_APP_SECRET", &secret)],
    );
    let app_listen = format!("127.0.0.1:{app_port}");
    let app = Proc::start(
        dir,
        &format!("app-{label}"),
        "wechat-demo-app",
        &["--listen", &app_listen],
        &[],
    );
    wechat_e2e::wait_ready(&format!("http://{listen}/_emulator/calls")).await;
    wechat_e2e::wait_ready(&format!("http://{app_listen}/echo")).await;
    let account = Account {
        appid,
        secret,
        emulator: format!("http://{listen}"),
        app: app_listen,
    };
    (account, emulator, app)
}

fn site_table(name: &str, origin: &str, a: &Account, extra: &str) -> String {
    let e = &a.emulator;
    format!(
        r#"
[[site]]
name = "{name}"
[site.wechat]
appid = "{appid}"
secret = "{secret}"
scope = "snsapi_base"
open_base = "{e}"
api_base = "{e}"
mp_base = "{e}"
[site.gateway]
public_url = "{origin}"
upstream = "{app}"
{extra}
"#,
        appid = a.appid,
        secret = a.secret,
        app = a.app,
    )
}

/// Logs `browser` in on `origin` and returns the echo of `/echo`.
async fn login(browser: &mut Browser, origin: &str, appid: &str) -> serde_json::Value {
    let first = browser.get(&format!("{origin}/echo")).await;
    assert_eq!(first.status, 302, "{}", first.body);
    assert_eq!(
        query_param(first.location(), "appid"),
        appid,
        "{}",
        first.location()
    );
    let authorize = browser.get(first.location()).await;
    assert_eq!(authorize.status, 302, "{}", authorize.body);
    assert!(authorize
        .location()
        .starts_with(&format!("{origin}/_wechat/callback?")));
    let back = browser.get(authorize.location()).await;
    assert_eq!(back.status, 302, "{}", back.body);
    let echo = browser.get(&format!("{origin}/echo")).await;
    assert_eq!(echo.status, 200, "{}", echo.body);
    echo.json()
}

#[tokio::test]
async fn two_sites_with_two_accounts_on_one_gateway_never_share_a_session() {
    let dir = ScratchDir::new("sites");
    let port = free_port();
    let (shop, blog) = (
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
    );
    let (a, _emu_a, _app_a) = account(&dir, "a", "wx1111111111111111", "127.0.0.1").await;
    let (b, _emu_b, _app_b) = account(&dir, "b", "wx2222222222222222", "localhost").await;
    let metrics = free_port();
    let config_path = dir.join("gateway.toml");
    let access = dir.join("access.log");
    let text = format!(
        r#"[gateway]
listen = "127.0.0.1:{port}"
metrics_listen = "127.0.0.1:{metrics}"
access_log = "{access}"
cookie_secret = "{cookie}"

[store]
url = "file:{store}"

[limits]
logins_per_minute = 0
{site_a}{site_b}
[[site.route]]
prefix = "/echo/open"
policy = "public"
"#,
        access = access.display(),
        cookie = wechat_e2e::random(40),
        store = dir.join("store.redb").display(),
        site_a = site_table("shop", &shop, &a, "site_name = \"The shop\""),
        site_b = site_table("blog", &blog, &b, ""),
    );
    std::fs::write(&config_path, &text).unwrap();
    let mut gateway = Proc::start(
        &dir,
        "gateway",
        "wechat-gateway",
        &["--config", config_path.to_str().unwrap()],
        &[("RUST_LOG", "info")],
    );
    wechat_e2e::wait_ready(&format!("{shop}/_wechat/healthz")).await;

    // Each site logs in with its own account and reaches its own upstream.
    let mut alice = Browser::new(WECHAT_UA);
    let echo = login(&mut alice, &shop, a.appid).await;
    assert_eq!(echo["served_by"], a.app.as_str(), "{echo}");
    let shop_openid = echo["headers"]["x-wechat-openid"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let mut bob = Browser::new(WECHAT_UA);
    let echo = login(&mut bob, &blog, b.appid).await;
    assert_eq!(echo["served_by"], b.app.as_str(), "{echo}");

    // Alice's shop cookies on the blog: not a session there (a login with
    // the blog's account starts), whatever the cookie's name.
    let replay = alice.get(&format!("{blog}/echo")).await;
    assert_eq!(replay.status, 302, "{}", replay.body);
    assert_eq!(query_param(replay.location(), "appid"), b.appid);
    let as_json = alice
        .get_with(&format!("{blog}/echo"), &[("Accept", "application/json")])
        .await;
    assert_eq!(as_json.status, 401, "{}", as_json.body);
    // Still a session on the shop, with the same user.
    let echo = alice.get(&format!("{shop}/echo")).await.json();
    assert_eq!(echo["headers"]["x-wechat-openid"][0], shop_openid.as_str());
    // The blog's public route is the blog's only.
    let mut nobody = Browser::new(WECHAT_UA);
    assert_eq!(nobody.get(&format!("{blog}/echo/open")).await.status, 200);
    assert_eq!(nobody.get(&format!("{shop}/echo/open")).await.status, 302);

    // Hosts no site serves, in any spelling, are misdirected.
    let base = format!("http://127.0.0.1:{port}");
    let status_for = |hosts: &[&str]| {
        let hosts: String = hosts.iter().map(|h| format!("Host: {h}\r\n")).collect();
        let request = format!(
            "GET /echo HTTP/1.1\r\n{hosts}User-Agent: {WECHAT_UA}\r\nConnection: close\r\n\r\n"
        );
        raw_status(&raw_request(&base, &request).0)
    };
    for host in [
        "evil.example",
        "127.0.0.2",
        "shop.localhost",
        "localhost.evil",
        "localhost:x",
    ] {
        assert_eq!(status_for(&[host]), 421, "{host}");
    }
    assert_eq!(
        status_for(&["LOCALHOST."]),
        302,
        "the blog, spelt otherwise"
    );
    assert_eq!(status_for(&[&format!("localhost:{port}")]), 302);
    assert_eq!(
        status_for(&["localhost", "127.0.0.1"]) / 100,
        4,
        "two Host headers"
    );

    // The access log and the metrics name the site.
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = std::fs::read_to_string(&access).unwrap_or_default();
        if log.contains("misdirected") || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        log.contains(r#""site":"shop""#) && log.contains(r#""site":"blog""#),
        "{log}"
    );
    assert!(log.contains(r#""outcome":"misdirected""#), "{log}");
    let scraped = reqwest::get(format!("http://127.0.0.1:{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for site in ["shop", "blog"] {
        assert!(
            scraped
                .lines()
                .any(|l| l.starts_with("wechat_gateway_site_requests_total")
                    && l.contains(&format!("site=\"{site}\""))
                    && l.contains("outcome=\"pass\"")),
            "{scraped}"
        );
    }

    // A reload applies a site's own key; one that changes the sites is refused.
    std::fs::write(&config_path, text.replace("The shop", "The new shop")).unwrap();
    gateway.signal(libc::SIGHUP);
    wait_log(&gateway, "configuration reloaded").await;
    let page = nobody.get(&format!("{shop}/echo")).await;
    assert_eq!(page.status, 302);
    std::fs::write(
        &config_path,
        text.replace("name = \"blog\"", "name = \"journal\""),
    )
    .unwrap();
    gateway.signal(libc::SIGHUP);
    wait_log(&gateway, "needs a restart").await;
    let echo = bob.get(&format!("{blog}/echo")).await;
    assert_eq!(echo.status, 200, "the running sites stay");
    gateway.stop();
}

async fn wait_log(process: &Proc, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !process.log_text().contains(text) {
        assert!(
            Instant::now() < deadline,
            "{text:?} not in\n{}",
            process.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
