//! Named upstreams over real HTTP: routes send requests to their own
//! upstream; two servers share the load and a stopped one is left out by
//! the health check; an HTTPS upstream is reached with the certificate
//! checked against a test CA (and refused without it, or under another
//! name); a DNS name that moves to another address is followed.

use std::path::Path;
use std::time::{Duration, Instant};

use wechat_e2e::{free_port, Browser, Proc, Stack, WECHAT_UA};

/// A demo app on `ip:port` (its echo's `served_by` says which one answered).
async fn demo_app(dir: &Path, label: &str, addr: &str) -> Proc {
    let app = Proc::start(dir, label, "wechat-demo-app", &["--listen", addr], &[]);
    wechat_e2e::wait_ready(&format!("http://{addr}/echo")).await;
    app
}

async fn logged_in(stack: &Stack) -> Browser {
    let mut browser = Browser::new(WECHAT_UA);
    let back = stack.wechat_login(&mut browser, "/echo").await;
    assert_eq!(back.status, 302, "{}", back.body);
    browser
}

/// Who answered `path`, with its status.
async fn served_by(browser: &mut Browser, stack: &Stack, path: &str) -> (u16, String) {
    let answer = browser.get(&stack.url(path)).await;
    if answer.status != 200 {
        return (answer.status, answer.body);
    }
    let echo = answer.json();
    (200, echo["served_by"].as_str().unwrap_or("").to_owned())
}

#[tokio::test]
async fn routes_reach_their_upstream_round_robin_and_a_stopped_server_is_left_out() {
    let scratch = wechat_e2e::ScratchDir::new("upstreams");
    let (a, b) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let _app_a = demo_app(&scratch, "app-a", &a).await;
    let mut app_b = demo_app(&scratch, "app-b", &b).await;
    let stack = Stack::start_with(
        "",
        &format!(
            r#"[[route]]
prefix = "/echo/pages/"
upstream = "pages"
[upstreams.pages]
servers = ["{a}", "{b}"]
health_check_secs = 1
"#
        ),
    )
    .await;
    let mut browser = logged_in(&stack).await;
    // Paths no route names go to [gateway] upstream.
    let default_app = stack.app_url.trim_start_matches("http://").to_owned();
    assert_eq!(
        served_by(&mut browser, &stack, "/echo/orders").await,
        (200, default_app.clone())
    );
    // The route's upstream: both servers, in turn, with the identity.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let (status, by) = served_by(&mut browser, &stack, "/echo/pages/x").await;
        assert_eq!(status, 200, "{by}");
        seen.insert(by);
    }
    assert_eq!(seen, [a.clone(), b.clone()].into_iter().collect());
    let echo = browser.get(&stack.url("/echo/pages/x")).await.json();
    assert!(echo["headers"]["x-wechat-openid"][0].is_string(), "{echo}");
    // The same spelled otherwise is the same route.
    let (_, by) = served_by(&mut browser, &stack, "/echo/x/../pages/%78").await;
    assert_ne!(by, default_app);

    // A reload that brings a new upstream is refused (it needs a restart):
    // the new route must not fall back to [gateway] upstream.
    let mut text = std::fs::read_to_string(&stack.gateway_config).unwrap();
    text.push_str(
        "\n[[route]]\nprefix = \"/echo/fresh/\"\nupstream = \"fresh\"\n\
         [upstreams.fresh]\nservers = [\"127.0.0.1:9\"]\n",
    );
    std::fs::write(&stack.gateway_config, text).unwrap();
    stack.gateway().signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stack.gateway_log().contains("reload failed") {
        assert!(Instant::now() < deadline, "{}", stack.gateway_log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        stack.gateway_log().contains("need a restart"),
        "{}",
        stack.gateway_log()
    );
    assert_eq!(
        served_by(&mut browser, &stack, "/echo/pages/x").await.0,
        200,
        "the running configuration stays"
    );

    // B stops: once the health check has seen it, every request goes to A.
    app_b.stop();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for _ in 0..10 {
        assert_eq!(
            served_by(&mut browser, &stack, "/echo/pages/x").await,
            (200, a.clone())
        );
    }
}

#[tokio::test]
async fn an_https_upstream_is_verified_against_its_ca_and_name() {
    let scratch = wechat_e2e::ScratchDir::new("upstreams-tls");
    let (cert, key) = (
        scratch.join("upstream-cert.pem"),
        scratch.join("upstream-key.pem"),
    );
    wechat_e2e::self_signed(&cert, &key, "localhost");
    // The HTTPS upstream: a second gateway serving TLS in front of a demo
    // app, with nothing behind a login.
    let app = format!("127.0.0.1:{}", free_port());
    let _app = demo_app(&scratch, "app-tls", &app).await;
    let tls_port = free_port();
    let inner_config = scratch.join("inner.toml");
    wechat_e2e::TestConfig::new(
        "wx1234567890abcdef",
        "http://127.0.0.1:9",
        "https://localhost",
    )
    .set("gateway.listen", format!("127.0.0.1:{tls_port}"))
    .set("gateway.upstream", app.as_str())
    .set("gateway.public_paths", vec!["/"])
    .set("gateway.tls_cert", cert.display().to_string())
    .set("gateway.tls_key", key.display().to_string())
    .set("store.url", "memory")
    .write(&inner_config);
    let _inner = Proc::start(
        &scratch,
        "gateway-inner",
        "wechat-gateway",
        &["--config", inner_config.to_str().unwrap()],
        &[
            ("WECHAT_APP_SECRET", "inner-secret"),
            (
                "WECHAT_COOKIE_SECRET",
                "inner-cookie-secret-0123456789abcdef",
            ),
        ],
    );
    // An address, not `localhost`: the DNS test beside this one rewrites
    // /etc/hosts. The name to check comes from `sni`.
    let server = format!("127.0.0.1:{tls_port}");
    let stack = Stack::start_with(
        "",
        &format!(
            r#"[[route]]
prefix = "/echo/secure/"
upstream = "secure"
[[route]]
prefix = "/echo/untrusted/"
upstream = "untrusted"
[[route]]
prefix = "/echo/misnamed/"
upstream = "misnamed"
[upstreams.secure]
servers = ["{server}"]
tls = true
sni = "localhost"
ca_file = {ca:?}
[upstreams.untrusted]
servers = ["{server}"]
tls = true
sni = "localhost"
[upstreams.misnamed]
servers = ["{server}"]
tls = true
sni = "other.example"
ca_file = {ca:?}
"#,
            ca = cert.display().to_string()
        ),
    )
    .await;
    let mut browser = logged_in(&stack).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let echo = loop {
        let answer = browser.get(&stack.url("/echo/secure/x")).await;
        if answer.status == 200 {
            break answer.json();
        }
        assert!(
            Instant::now() < deadline,
            "{}: {}",
            answer.status,
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(echo["served_by"], app.as_str());
    assert_eq!(echo["path"], "/echo/secure/x");
    // The inner gateway saw TLS.
    assert_eq!(echo["headers"]["x-forwarded-proto"][0], "https", "{echo}");
    // Not trusted by the system's roots, or not the certificate's name:
    // no request reaches it, the user gets the gate's 502 page.
    for refused in ["/echo/untrusted/x", "/echo/misnamed/x"] {
        let answer = browser.get(&stack.url(refused)).await;
        assert_eq!(answer.status, 502, "{refused}: {}", answer.body);
        // The connection ends after it, and the answer says so.
        assert_eq!(answer.header("connection"), Some("close"), "{refused}");
        assert!(!answer.body.contains("served_by"), "{refused}");
    }
}

const MOVING_NAME: &str = "wechat-e2e-moving.test";

/// `/etc/hosts` with a line for [`MOVING_NAME`], restored when dropped.
struct HostsEntry {
    original: String,
}

impl HostsEntry {
    fn point_at(ip: &str) -> HostsEntry {
        let original = std::fs::read_to_string("/etc/hosts").unwrap();
        let entry = HostsEntry { original };
        entry.set(ip);
        entry
    }

    fn set(&self, ip: &str) {
        // Written in place: /etc/hosts may be a mount of its own.
        std::fs::write(
            "/etc/hosts",
            format!("{}\n{ip} {MOVING_NAME}\n", self.original.trim_end()),
        )
        .unwrap();
    }
}

impl Drop for HostsEntry {
    fn drop(&mut self) {
        let _ = std::fs::write("/etc/hosts", &self.original);
    }
}

#[tokio::test]
async fn an_upstream_whose_dns_name_moves_is_followed() {
    let scratch = wechat_e2e::ScratchDir::new("upstreams-dns");
    let port = free_port();
    let (first, second) = (format!("127.0.0.1:{port}"), format!("127.0.0.2:{port}"));
    let _first = demo_app(&scratch, "app-first", &first).await;
    let _second = demo_app(&scratch, "app-second", &second).await;
    let hosts = HostsEntry::point_at("127.0.0.1");
    let stack = Stack::start_with(
        "",
        &format!(
            r#"[[route]]
prefix = "/echo/moving/"
upstream = "moving"
[upstreams.moving]
servers = ["{MOVING_NAME}:{port}"]
resolve_secs = 1
"#
        ),
    )
    .await;
    let mut browser = logged_in(&stack).await;
    assert_eq!(
        served_by(&mut browser, &stack, "/echo/moving/x").await,
        (200, first.clone())
    );
    hosts.set("127.0.0.2");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, by) = served_by(&mut browser, &stack, "/echo/moving/x").await;
        assert_eq!(status, 200, "{by}");
        if by == second {
            break;
        }
        assert!(Instant::now() < deadline, "still {by} after the move");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The name stops resolving: the last addresses stay in use.
    drop(hosts);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        served_by(&mut browser, &stack, "/echo/moving/x").await,
        (200, second)
    );
}
