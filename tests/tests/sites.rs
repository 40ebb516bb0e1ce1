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
        site_a = site_table(
            "shop",
            &shop,
            &a,
            "site_name = \"The shop\"\n[[site.route]]\nprefix = \"/echo/staff/\"\npolicy = \"allow\"\nallow = [\"oNobodyIsListed\"]"
        ),
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
    // The shop's allow route is the shop's only; its refusal's log line
    // names the site.
    assert_eq!(alice.get(&format!("{shop}/echo/staff/x")).await.status, 403);
    assert_eq!(bob.get(&format!("{blog}/echo/staff/x")).await.status, 200);
    wait_log(&gateway, "refused by the route's policy").await;
    assert!(
        gateway
            .log_text()
            .lines()
            .any(|l| l.contains("refused by the route's policy") && l.contains("site=shop")),
        "{}",
        gateway.log_text()
    );
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
                .any(|l| l == format!("wechat_gateway_logins_completed_total{{site=\"{site}\"}} 1")),
            "{scraped}"
        );
        assert!(
            gateway
                .log_text()
                .lines()
                .any(|l| l.contains("login completed") && l.contains(site)),
            "{}",
            gateway.log_text()
        );
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

/// A client that trusts only the certificate in `ca` and sends `name` to
/// the gateway on `port` (SNI and `Host`).
fn client_trusting(ca: &std::path::Path, name: &str, port: u16) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .resolve(name, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn each_site_gets_its_own_certificate_by_sni_and_the_listeners_for_other_names() {
    let dir = ScratchDir::new("sites-tls");
    let port = free_port();
    let pem = |name: &str| {
        (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        )
    };
    for name in ["shop.test", "blog.test", "default.test"] {
        let (cert, key) = pem(name);
        wechat_e2e::leaf_certificate(&cert, &key, name);
    }
    let unused = |appid| Account {
        appid,
        secret: wechat_e2e::random(20),
        emulator: "http://127.0.0.1:9".into(),
        app: "127.0.0.1:9".into(),
    };
    let own = |name: &str| {
        let (cert, key) = pem(name);
        format!(
            "tls_cert = {:?}\ntls_key = {:?}",
            cert.display().to_string(),
            key.display().to_string()
        )
    };
    let (listener_cert, listener_key) = pem("default.test");
    let text = format!(
        "[gateway]\nlisten = \"127.0.0.1:{port}\"\ncookie_secret = \"{cookie}\"\ntls_cert = {:?}\ntls_key = {:?}\n{shop}{blog}",
        listener_cert.display().to_string(),
        listener_key.display().to_string(),
        cookie = wechat_e2e::random(40),
        shop = site_table(
            "shop",
            &format!("https://shop.test:{port}"),
            &unused("wx1111111111111111"),
            &own("shop.test")
        ),
        blog = site_table(
            "blog",
            &format!("https://blog.test:{port}"),
            &unused("wx2222222222222222"),
            &own("blog.test")
        ),
    );
    let config_path = dir.join("gateway.toml");
    std::fs::write(&config_path, &text).unwrap();
    let mut gateway = Proc::start(
        &dir,
        "gateway",
        "wechat-gateway",
        &["--config", config_path.to_str().unwrap()],
        &[("RUST_LOG", "info")],
    );
    let healthz = |name: &str| format!("https://{name}:{port}/_wechat/healthz");
    let shop = client_trusting(&pem("shop.test").0, "shop.test", port);
    let deadline = Instant::now() + Duration::from_secs(20);
    while shop.get(healthz("shop.test")).send().await.is_err() {
        assert!(Instant::now() < deadline, "{}", gateway.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Each name gets its site's certificate: trusted by its own CA only.
    let blog = client_trusting(&pem("blog.test").0, "blog.test", port);
    assert_eq!(
        blog.get(healthz("blog.test"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let shop_for_blog = client_trusting(&pem("shop.test").0, "blog.test", port);
    assert!(
        shop_for_blog
            .get(healthz("blog.test"))
            .send()
            .await
            .is_err(),
        "the blog's name must not get the shop's certificate"
    );
    // Another name: the listener's certificate, and no site answers it.
    let other = client_trusting(&pem("default.test").0, "default.test", port);
    let misdirected = other.get(healthz("default.test")).send().await.unwrap();
    assert_eq!(misdirected.status(), 421);
    // The shop's TLS name with the blog's Host: misdirected, not the blog.
    let crossed = shop
        .get(healthz("shop.test"))
        .header("Host", format!("blog.test:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(crossed.status(), 421);

    // A renewed shop certificate is served after SIGHUP, the blog's stays.
    let (cert, key) = pem("shop.test");
    let old = std::fs::read(&cert).unwrap();
    let (new_cert, new_key) = (dir.join("renewed.crt"), dir.join("renewed.key"));
    wechat_e2e::leaf_certificate(&new_cert, &new_key, "shop.test");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    assert_ne!(old, std::fs::read(&cert).unwrap());
    gateway.signal(libc::SIGHUP);
    wait_log(&gateway, "TLS certificate reloaded").await;
    let renewed = client_trusting(&new_cert, "shop.test", port);
    assert_eq!(
        renewed
            .get(healthz("shop.test"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let fresh_blog = client_trusting(&pem("blog.test").0, "blog.test", port);
    assert_eq!(
        fresh_blog
            .get(healthz("blog.test"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    gateway.stop();
}
