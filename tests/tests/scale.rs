//! Several gateways sharing one Redis (`[store] url`): each login's
//! requests spread over three instances, duplicate callbacks exchanged once
//! across all of them, a state used once across all of them, tokens
//! shared, and Redis going down and coming back while they run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use wechat_e2e::{
    assert_no_secret_in_logs, compile_c, free_port, issued_secrets, random, wait_ready,
    workspace_root, Browser, Proc, TestConfig, DESKTOP_UA, PUSH_TOKEN, WECHAT_UA,
};

const APPID: &str = "wx1234567890abcdef";

/// What the gateways' `[store]` points at.
enum Backend {
    /// One Redis (`url = "redis://…"`).
    Single,
    /// A three-master Redis Cluster (`cluster_nodes`).
    Cluster,
    /// The single Redis behind a Sentinel (`url = "redis+sentinel://…"`).
    Sentinel,
}

/// One Redis, the emulator, the demo app and three gateways on loopback.
/// Browsers see one origin (the first gateway's, as behind a load
/// balancer); tests send each request to the instance they choose.
struct Cluster {
    dir: PathBuf,
    redis_port: u16,
    redis: Option<Proc>,
    /// Redis Cluster nodes or a Sentinel, by [`Cluster::start_on`].
    extra_redis: Vec<Proc>,
    emulator_url: String,
    gateways: Vec<(String, Proc)>,
    /// Each gateway's metrics URL.
    metrics: Vec<String>,
    others: Vec<Proc>,
    app_secret: String,
    cookie_secret: String,
}

impl Cluster {
    async fn start() -> Cluster {
        Self::start_on(Backend::Single).await
    }

    async fn start_on(backend: Backend) -> Cluster {
        Self::start_with(backend, "").await
    }

    /// As [`Cluster::start_on`], with extra `[gateway]` lines.
    async fn start_with(backend: Backend, gateway_extra: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!("wechat-scale-{}", random(10)));
        std::fs::create_dir_all(&dir).unwrap();
        let (redis_port, emu_port, app_port) = (free_port(), free_port(), free_port());
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let app_secret = format!("appsecret{}", random(24));
        let cookie_secret = format!("cookiesecret{}", random(36));
        // WeChat pushes every scan to the first instance.
        let emulator = Proc::start_emulator_with(
            &dir,
            emu_port,
            APPID,
            &app_secret,
            &[
                "--push-token".to_owned(),
                PUSH_TOKEN.to_owned(),
                "--push-url".to_owned(),
                format!("http://127.0.0.1:{}/_wechat/events", ports[0]),
            ],
        );
        let app = Proc::start_demo_app(&dir, app_port);
        let mut cluster = Cluster {
            dir,
            redis_port,
            redis: None,
            extra_redis: Vec::new(),
            emulator_url: format!("http://127.0.0.1:{emu_port}"),
            gateways: Vec::new(),
            metrics: Vec::new(),
            others: vec![emulator, app],
            app_secret,
            cookie_secret,
        };
        cluster.start_redis().await;
        let store = match backend {
            Backend::Single => format!("url = \"redis://127.0.0.1:{redis_port}/\""),
            Backend::Cluster => {
                let nodes = cluster.start_redis_cluster().await;
                format!("cluster_nodes = [{nodes}]")
            }
            Backend::Sentinel => {
                let sentinel = cluster.start_sentinel().await;
                format!("url = \"redis+sentinel://127.0.0.1:{sentinel}/themaster/2\"")
            }
        };
        wait_ready(&format!("{}/_emulator/calls", cluster.emulator_url)).await;
        let origin = format!("http://127.0.0.1:{}", ports[0]);
        for (i, port) in ports.iter().enumerate() {
            let metrics_port = free_port();
            cluster
                .metrics
                .push(format!("http://127.0.0.1:{metrics_port}/metrics"));
            let path = cluster.dir.join(format!("gateway-{i}.toml"));
            TestConfig::new(APPID, &cluster.emulator_url, &origin)
                .set("wechat.timeout_ms", 2000)
                .set("wechat.push_token", PUSH_TOKEN)
                .set("gateway.desktop_login", "scene_qr")
                .set("gateway.listen", format!("127.0.0.1:{port}"))
                .set("gateway.upstream", format!("127.0.0.1:{app_port}"))
                .set(
                    "gateway.metrics_listen",
                    format!("127.0.0.1:{metrics_port}"),
                )
                .merge("gateway", gateway_extra)
                .merge(
                    "store",
                    &format!("{store}\nkey_prefix = \"test:\"\ntimeout_ms = 300\n"),
                )
                .write(&path);
            let gateway = Proc::start(
                &cluster.dir,
                &format!("gateway-{i}"),
                "wechat-gateway",
                &["--config", path.to_str().unwrap()],
                &[
                    ("WECHAT_APP_SECRET", &cluster.app_secret),
                    ("WECHAT_COOKIE_SECRET", &cluster.cookie_secret),
                    ("RUST_LOG", "trace"),
                ],
            );
            let url = format!("http://127.0.0.1:{port}");
            wait_ready(&format!("{url}/_wechat/healthz")).await;
            cluster.gateways.push((url, gateway));
        }
        cluster
    }

    async fn start_redis(&mut self) {
        let n = std::fs::read_dir(&self.dir).unwrap().count();
        self.redis =
            Some(wechat_e2e::start_redis(&self.dir, &format!("redis-{n}"), self.redis_port).await);
    }

    fn redis_server(&self, label: &str, args: &[&str]) -> Proc {
        Proc::start_program(&self.dir, label, &PathBuf::from("redis-server"), args, &[])
    }

    async fn wait_port(port: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis on {port} did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Three Redis Cluster masters (`redis-cli --cluster create`); their
    /// URLs as a TOML list.
    async fn start_redis_cluster(&mut self) -> String {
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        for port in &ports {
            let p = port.to_string();
            // Its own bus port: the default (port + 10000) may fall in the
            // ephemeral range, where an outgoing connection can hold it.
            let bus = free_port().to_string();
            let conf = self.dir.join(format!("nodes-{port}.conf"));
            let proc = self.redis_server(
                &format!("redis-cluster-{port}"),
                &[
                    "--port",
                    &p,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus,
                    "--cluster-config-file",
                    conf.to_str().unwrap(),
                    "--dir",
                    self.dir.to_str().unwrap(),
                ],
            );
            self.extra_redis.push(proc);
            Self::wait_port(*port).await;
        }
        let mut args = vec!["--cluster".to_owned(), "create".to_owned()];
        args.extend(ports.iter().map(|p| format!("127.0.0.1:{p}")));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        let out = std::process::Command::new("redis-cli")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        // Until every node agrees the cluster is up.
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in &ports {
            loop {
                if wechat_e2e::redis_cli(*port, &["cluster", "info"]).contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the Redis Cluster did not come up"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        ports
            .iter()
            .map(|p| format!("\"redis://127.0.0.1:{p}/\""))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A Sentinel monitoring the single Redis as `themaster`; its port.
    async fn start_sentinel(&mut self) -> u16 {
        let port = free_port();
        let conf = self.dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nsentinel monitor themaster 127.0.0.1 {} 1\n",
                self.redis_port
            ),
        )
        .unwrap();
        let proc = self.redis_server("sentinel", &[conf.to_str().unwrap(), "--sentinel"]);
        self.extra_redis.push(proc);
        Self::wait_port(port).await;
        port
    }

    fn stop_redis(&mut self) {
        self.redis = None;
    }

    /// `url` (on the shared origin) sent to gateway `i`.
    fn on(&self, i: usize, url: &str) -> String {
        let origin = &self.gateways[0].0;
        match url.strip_prefix(origin.as_str()) {
            Some(rest) => format!("{}{rest}", self.gateways[i % 3].0),
            None if url.starts_with('/') => format!("{}{url}", self.gateways[i % 3].0),
            None => url.to_owned(),
        }
    }

    async fn control(&self, path: &str, body: serde_json::Value) {
        wechat_e2e::emulator_control(&self.emulator_url, path, body).await;
    }

    async fn calls(&self, endpoint: &str) -> u64 {
        wechat_e2e::emulator_json(&self.emulator_url, "calls").await[endpoint]
            .as_u64()
            .unwrap_or(0)
    }

    /// A login whose redirect, callback and first page go to instances
    /// `first`, `first + 1` and `first + 2`. Returns the browser, logged in.
    async fn login_round_robin(&self, first: usize) -> Browser {
        let mut browser = Browser::new(WECHAT_UA);
        let start = browser.get(&self.on(first, "/orders")).await;
        assert_eq!(start.status, 302, "{}", start.body);
        let consent = browser.get(start.location()).await;
        assert_eq!(consent.status, 302, "{}", consent.body);
        let back = browser.get(&self.on(first + 1, consent.location())).await;
        assert_eq!(
            back.status,
            302,
            "callback on instance {}: {}",
            (first + 1) % 3,
            back.body
        );
        assert_eq!(back.location(), "/orders");
        let page = browser.get(&self.on(first + 2, "/echo")).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.json()["headers"]["x-wechat-openid"][0].is_string());
        browser
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let mut secrets = issued_secrets(&self.emulator_url);
            secrets.push(self.app_secret.clone());
            secrets.push(self.cookie_secret.clone());
            self.gateways.clear();
            self.others.clear();
            self.redis = None;
            self.extra_redis.clear();
            assert_no_secret_in_logs(&self.dir, &secrets);
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("logs kept in {}", self.dir.display());
        }
    }
}

#[tokio::test]
async fn logins_spread_over_three_gateways_all_succeed_and_share_tokens() {
    let cluster = Cluster::start().await;
    for first in 0..9 {
        let mut browser = cluster.login_round_robin(first).await;
        // The tokens stored by the instance that exchanged the code serve
        // a profile refresh on another.
        let refreshed = browser
            .get_with(
                &cluster.on(first + 2, "/_wechat/userinfo?refresh=1"),
                &[("Accept", "application/json")],
            )
            .await;
        assert_eq!(refreshed.status, 200, "{}", refreshed.body);
        assert!(refreshed.json()["openid"].is_string());
    }
    assert_eq!(cluster.calls("access_token").await, 9);
}

/// One login's callback sent `n` times at once, spread over the instances,
/// each with the browser's state cookie: every copy must come back to
/// `/orders` with a session.
async fn duplicate_callbacks(cluster: &Arc<Cluster>, n: usize) {
    let mut browser = Browser::new(WECHAT_UA);
    browser.store_cookies = true;
    let start = browser.get(&cluster.on(0, "/orders")).await;
    let consent = browser.get(start.location()).await;
    let callback = consent.location().to_owned();
    let cookies = browser.cookie_header();
    let mut tasks = Vec::new();
    for i in 0..n {
        let (cluster, callback, cookies) = (cluster.clone(), callback.clone(), cookies.clone());
        tasks.push(tokio::spawn(async move {
            let mut b = Browser::new(WECHAT_UA);
            let answer = b
                .get_with(&cluster.on(i, &callback), &[("Cookie", &cookies)])
                .await;
            assert_eq!(answer.status, 302, "{}", answer.body);
            assert_eq!(answer.location(), "/orders");
            answer
                .headers_named("set-cookie")
                .into_iter()
                .any(|c| c.starts_with("wechat_session=") && !c.contains("Max-Age=0"))
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap(), "every duplicate is logged in");
    }
}

#[tokio::test]
async fn three_hundred_duplicate_callbacks_over_three_gateways_make_one_exchange() {
    let cluster = Arc::new(Cluster::start().await);
    duplicate_callbacks(&cluster, 300).await;
    assert_eq!(cluster.calls("access_token").await, 1);
}

#[tokio::test]
async fn a_hundred_jssdk_configs_over_three_gateways_fetch_one_ticket_and_all_verify() {
    let cluster = Arc::new(Cluster::start().await);
    let page = format!("{}/shop/item?id=7&from=%E5%BE%AE", cluster.gateways[0].0);
    let query: String =
        url::form_urlencoded::byte_serialize(format!("{page}#/tab").as_bytes()).collect();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (client, url) = (
            client.clone(),
            cluster.on(i, &format!("/_wechat/jssdk-config?url={query}")),
        );
        tasks.push(tokio::spawn(async move {
            let r = client.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["cache-control"], "no-store");
            serde_json::from_str::<serde_json::Value>(&r.text().await.unwrap()).unwrap()
        }));
    }
    let mut nonces = std::collections::HashSet::new();
    for t in tasks {
        let config = t.await.unwrap();
        assert_eq!(config["appId"], APPID);
        assert!(config["timestamp"].is_u64(), "{config}");
        assert!(nonces.insert(config["nonceStr"].as_str().unwrap().to_owned()));
        // What wx.config does in WeChat, for the page without its fragment.
        let mut asked = config.clone();
        asked["url"] = page.clone().into();
        let verdict =
            wechat_e2e::emulator_post(&cluster.emulator_url, "jssdk/verify", asked.clone()).await;
        assert_eq!(verdict["errMsg"], "config:ok", "{config}");
        // Another page, or a changed signature, does not verify.
        asked["url"] = format!("{page}&x=1").into();
        let other =
            wechat_e2e::emulator_post(&cluster.emulator_url, "jssdk/verify", asked.clone()).await;
        assert_eq!(other["errMsg"], "config:invalid signature");
    }
    assert_eq!(
        cluster.calls("ticket").await,
        1,
        "one ticket for every instance"
    );
    assert_eq!(cluster.calls("stable_token").await, 1);

    // Pages of other origins, no page, or one given twice: 400, no signature.
    for bad in [
        "url=https%3A%2F%2Fevil.example%2F".to_owned(),
        format!(
            "url={}",
            url::form_urlencoded::byte_serialize(
                format!("{}.evil.example/", cluster.gateways[0].0).as_bytes()
            )
            .collect::<String>()
        ),
        String::new(),
        format!("url={query}&url={query}"),
        "url=%2Fshop".to_owned(),
    ] {
        let r = client
            .get(cluster.on(1, &format!("/_wechat/jssdk-config?{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(body["error"], "invalid_request", "{bad}");
        assert!(body.get("signature").is_none());
    }
    let post = client
        .post(cluster.on(2, &format!("/_wechat/jssdk-config?url={query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    // The ticket is never in a response or a log line.
    let ticket = wechat_e2e::emulator_json(&cluster.emulator_url, "issued").await["jsapi_tickets"]
        [0]
    .as_str()
    .unwrap()
    .to_owned();
    for (_, gateway) in &cluster.gateways {
        assert!(!gateway.log_text().contains(&ticket));
    }
}

#[tokio::test]
async fn a_state_used_on_one_gateway_cannot_carry_another_code_on_another() {
    let cluster = Cluster::start().await;
    let mut victim = Browser::new(WECHAT_UA);
    victim.store_cookies = true;
    let start = victim.get(&cluster.on(0, "/orders")).await;
    let consent = victim.get(start.location()).await;
    let callback = consent.location().to_owned();
    let kept = victim.cookies.clone();
    assert_eq!(victim.get(&cluster.on(1, &callback)).await.status, 302);
    let mut other = Browser::new(WECHAT_UA);
    let own = other.get(&cluster.on(0, "/x")).await;
    let own_callback = other.get(own.location()).await.location().to_owned();
    let code = |u: &str| wechat_e2e::query_param(u, "code");
    let forged = callback.replace(&code(&callback), &code(&own_callback));
    let mut replay = Browser::new(WECHAT_UA);
    replay.cookies = kept;
    let answer = replay.get(&cluster.on(2, &forged)).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
}

#[tokio::test]
async fn with_redis_down_users_keep_passing_logins_get_503_and_recover_by_themselves() {
    let mut cluster = Cluster::start().await;
    let mut user = cluster.login_round_robin(0).await;
    cluster.stop_redis();
    for i in 0..6 {
        let page = user.get(&cluster.on(i, "/echo")).await;
        assert_eq!(page.status, 200, "a signed-in user passes on instance {i}");
    }
    for i in 0..6 {
        let mut browser = Browser::new(WECHAT_UA);
        let start = browser.get(&cluster.on(i, "/orders")).await;
        let consent = browser.get(start.location()).await;
        let started = Instant::now();
        let back = browser.get(&cluster.on(i + 1, consent.location())).await;
        assert_eq!(back.status, 503, "{}", back.body);
        assert!(
            back.body.contains("/_wechat/login?rd=%2Forders"),
            "{}",
            back.body
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    // Each instance says it is not ready, and counted the store's failures.
    for i in 0..3 {
        let ready = Browser::new(WECHAT_UA)
            .get(&cluster.on(i, "/_wechat/ready"))
            .await;
        assert_eq!(ready.status, 503, "{}", ready.body);
        assert_eq!(ready.json()["store"], "unreachable");
    }
    let mut store_errors = 0.0;
    for url in &cluster.metrics {
        let text = reqwest::get(url).await.unwrap().text().await.unwrap();
        store_errors += text
            .lines()
            .find_map(|l| l.strip_prefix("wechat_gateway_store_errors_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    assert!(store_errors >= 6.0, "store errors counted: {store_errors}");
    cluster.start_redis().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        Browser::new(WECHAT_UA)
            .get(&cluster.on(0, "/_wechat/ready"))
            .await
            .status,
        200
    );
    for first in 0..3 {
        cluster.login_round_robin(first).await;
    }
    // One line when the outage starts and one when it ends, per instance.
    for (i, (_, gateway)) in cluster.gateways.iter().enumerate() {
        let log = gateway.log_text();
        assert_eq!(
            log.matches("Redis ([store] url) is unreachable").count(),
            1,
            "instance {i}:\n{log}"
        );
        assert_eq!(log.matches("reachable again").count(), 1, "instance {i}");
    }
}

#[tokio::test]
async fn a_login_started_on_a_gateway_that_dies_finishes_on_another() {
    let cluster = Cluster::start().await;
    let mut browser = Browser::new(WECHAT_UA);
    let start = browser.get(&cluster.on(0, "/orders")).await;
    let consent = browser.get(start.location()).await;
    cluster.gateways[0].1.interrupt();
    let back = browser.get(&cluster.on(1, consent.location())).await;
    assert_eq!(back.status, 302, "{}", back.body);
    assert_eq!(back.location(), "/orders");
    let page = browser.get(&cluster.on(2, "/echo")).await;
    assert_eq!(page.status, 200);
}

/// A desktop browser's scene QR login: the QR from instance `i`, the scan
/// pushed by WeChat to instance 0, the long poll on instance `i + 1`.
async fn qr_login(cluster: &Cluster, i: usize) {
    let mut browser = Browser::new(DESKTOP_UA);
    let created = browser
        .get_with(
            &cluster.on(i, "/_wechat/qr/new?rd=%2Forders"),
            &[("Accept", "application/json")],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let q = created.json();
    let (scene, ticket) = (
        q["scene"].as_str().unwrap().to_owned(),
        q["ticket"].as_str().unwrap().to_owned(),
    );
    let cookie = browser.cookie_header();
    let poll_url = cluster.on(i + 1, &format!("/_wechat/qr/status?scene={scene}"));
    let poll = tokio::spawn(async move {
        let mut b = Browser::new(DESKTOP_UA);
        b.get_with(&poll_url, &[("Cookie", &cookie)]).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pushed = Instant::now();
    cluster.control("scan", json!({ "ticket": ticket })).await;
    let answer = poll.await.unwrap();
    assert!(
        pushed.elapsed() < Duration::from_millis(1500),
        "the poll on another instance learned of the scan in {:?}",
        pushed.elapsed()
    );
    assert_eq!(
        answer.json(),
        json!({"status": "confirmed", "redirect": "/orders"}),
        "QR login {i}"
    );
    assert!(answer
        .headers_named("set-cookie")
        .iter()
        .any(|c| c.starts_with("wechat_session=") && !c.contains("Max-Age=0")));
}

#[tokio::test]
async fn a_hundred_qr_logins_whose_scans_land_on_another_instance_all_confirm() {
    let cluster = Arc::new(Cluster::start().await);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let cluster = cluster.clone();
        tasks.push(tokio::spawn(async move { qr_login(&cluster, i).await }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        cluster.calls("stable_token").await,
        1,
        "one basic token for all three"
    );
}

#[tokio::test]
async fn fifty_qr_codes_over_three_instances_after_the_token_expired_fetch_it_once() {
    let cluster = Arc::new(Cluster::start().await);
    // Tokens that expire (past the 300 s margin) 3 s after they are issued:
    // long enough for fifty requests on a loaded machine.
    cluster
        .control("settings", json!({"basic_token_ttl_secs": 303}))
        .await;
    for i in 0..3 {
        let answer = Browser::new(DESKTOP_UA)
            .get(&cluster.on(i, "/_wechat/qr/new"))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(
        cluster.calls("stable_token").await,
        1,
        "the first instance's token serves all three"
    );
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let url = cluster.on(i, "/_wechat/qr/new");
        tasks.push(tokio::spawn(async move {
            Browser::new(DESKTOP_UA).get(&url).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(
        cluster.calls("stable_token").await,
        2,
        "one refresh for all fifty on three instances"
    );
}

#[tokio::test]
async fn a_logout_on_one_instance_is_refused_by_every_instance() {
    let cluster = Cluster::start().await;
    let mut user = cluster.login_round_robin(0).await;
    let copied = user.cookie_header();
    for i in 0..3 {
        let page = user.get(&cluster.on(i, "/echo")).await;
        assert_eq!(page.status, 200);
    }
    let out = user.get(&cluster.on(0, "/_wechat/logout")).await;
    assert_eq!(out.status, 302);
    // Each instance reads logouts every 500 ms.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for i in 0..3 {
        let mut replay = Browser::new(WECHAT_UA);
        let page = replay
            .get_with(
                &cluster.on(i, "/echo"),
                &[("Cookie", &copied), ("X-Requested-With", "XMLHttpRequest")],
            )
            .await;
        assert_eq!(
            page.status, 401,
            "instance {i} refuses the logged-out session"
        );
    }
    // A new login of the same user is a new session, and passes everywhere.
    let mut again = cluster.login_round_robin(1).await;
    for i in 0..3 {
        assert_eq!(again.get(&cluster.on(i, "/echo")).await.status, 200);
    }
}

#[tokio::test]
async fn two_c_hosts_share_logins_and_logouts_through_redis() {
    let cluster = Cluster::start().await;
    let program = cluster.dir.join("c-host");
    compile_c(&program, &[workspace_root().join("examples/c/host.c")], &[]);
    let ports = [free_port(), free_port()];
    let origin = format!("http://127.0.0.1:{}", ports[0]);
    let path = cluster.dir.join("c-host.toml");
    TestConfig::new(APPID, &cluster.emulator_url, &origin)
        .set(
            "store.url",
            format!("redis://127.0.0.1:{}/", cluster.redis_port),
        )
        .set("store.key_prefix", "test:")
        .write(&path);
    let mut hosts = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        hosts.push(Proc::start_program(
            &cluster.dir,
            &format!("c-host-{i}"),
            &program,
            &[],
            &[
                ("WECHAT_OAUTH_CONFIG", path.to_str().unwrap()),
                ("PORT", &port.to_string()),
                ("WECHAT_APP_SECRET", &cluster.app_secret),
                ("WECHAT_COOKIE_SECRET", &cluster.cookie_secret),
            ],
        ));
        wait_ready(&format!("http://127.0.0.1:{port}/_wechat/healthz")).await;
    }
    let on = |i: usize, url: &str| {
        let base = format!("http://127.0.0.1:{}", ports[i % 2]);
        match url.strip_prefix(origin.as_str()) {
            Some(rest) => format!("{base}{rest}"),
            None if url.starts_with('/') => format!("{base}{url}"),
            None => url.to_owned(),
        }
    };
    let before = cluster.calls("access_token").await;
    let mut browser = Browser::new(WECHAT_UA);
    browser.store_cookies = true;
    let first = browser.get(&on(0, "/")).await;
    assert_eq!(first.status, 302, "{}", first.body);
    let consent = browser.get(first.location()).await;
    let callback = consent.location().to_owned();
    let kept = browser.cookie_header();
    let back = browser.get(&on(1, &callback)).await;
    assert_eq!(
        back.status, 302,
        "the callback on the other host: {}",
        back.body
    );
    // WeChat's duplicate callback on the first host: the same login, no new exchange.
    let mut duplicate = Browser::new(WECHAT_UA);
    let dup = duplicate
        .get_with(&on(0, &callback), &[("Cookie", &kept)])
        .await;
    assert_eq!(dup.status, 302, "{}", dup.body);
    assert_eq!(dup.location(), "/");
    assert_eq!(cluster.calls("access_token").await, before + 1);
    for i in 0..2 {
        let page = browser.get(&on(i, "/")).await;
        assert_eq!(page.status, 200, "host {i}: {}", page.body);
    }
    let copied = browser.cookie_header();
    let out = browser.get(&on(0, "/_wechat/logout")).await;
    assert_eq!(out.status, 302);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut replay = Browser::new(WECHAT_UA);
    let refused = replay
        .get_with(
            &on(1, "/"),
            &[("Cookie", &copied), ("X-Requested-With", "XMLHttpRequest")],
        )
        .await;
    assert_eq!(
        refused.status, 401,
        "the other host refuses the logged-out session"
    );
    drop(hosts);
}

/// Round-robin logins and 100 duplicate callbacks on a store backend.
async fn logins_and_duplicates_work_on(backend: Backend) {
    let cluster = Arc::new(Cluster::start_on(backend).await);
    for first in 0..3 {
        cluster.login_round_robin(first).await;
    }
    duplicate_callbacks(&cluster, 100).await;
    assert_eq!(cluster.calls("access_token").await, 4);
    qr_login(&cluster, 1).await;
}

#[tokio::test]
async fn a_redis_cluster_store_shares_logins_across_instances() {
    logins_and_duplicates_work_on(Backend::Cluster).await;
}

#[tokio::test]
async fn a_sentinel_named_store_shares_logins_across_instances() {
    logins_and_duplicates_work_on(Backend::Sentinel).await;
}

#[tokio::test]
async fn concurrent_refreshes_of_one_session_on_three_instances_send_its_refresh_token_once() {
    let cluster = Arc::new(Cluster::start().await);
    // Access tokens always within the refresh margin, and a slow refresh, so
    // every request below finds the token due while the first refresh runs.
    cluster
        .control("settings", json!({"token_ttl_secs": 60}))
        .await;
    let browser = cluster.login_round_robin(0).await;
    cluster
        .control(
            "faults",
            json!({"endpoint": "refresh_token", "delay_ms": 600}),
        )
        .await;
    let cookie = browser.cookie_header();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (cluster, cookie) = (cluster.clone(), cookie.clone());
        tasks.push(tokio::spawn(async move {
            let mut b = Browser::new(WECHAT_UA);
            b.get_with(
                &cluster.on(i, "/_wechat/userinfo?refresh=1"),
                &[("Cookie", &cookie), ("Accept", "application/json")],
            )
            .await
            .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(cluster.calls("refresh_token").await, 1);
}

#[tokio::test]
async fn a_code_used_on_one_gateway_logs_no_other_browser_in_on_another() {
    let cluster = Cluster::start().await;
    let mut victim = Browser::new(WECHAT_UA);
    let start = victim.get(&cluster.on(0, "/orders")).await;
    let consent = victim.get(start.location()).await;
    let callback = consent.location().to_owned();
    assert_eq!(victim.get(&cluster.on(1, &callback)).await.status, 302);
    let code = wechat_e2e::query_param(&callback, "code");
    for i in [1, 2] {
        let mut attacker = Browser::new(WECHAT_UA);
        let own = attacker.get(&cluster.on(i, "/x")).await;
        let state = wechat_e2e::query_param(own.location(), "state");
        let tried = attacker
            .get(&cluster.on(i, &format!("/_wechat/callback?code={code}&state={state}")))
            .await;
        assert_eq!(tried.status, 400, "instance {i}: {}", tried.body);
        assert!(
            tried
                .headers_named("set-cookie")
                .iter()
                .all(|c| !c.starts_with("wechat_session=")),
            "instance {i}: no session"
        );
    }
    assert_eq!(cluster.calls("access_token").await, 1);
}

#[tokio::test]
async fn a_captured_push_url_replayed_on_another_instance_is_refused() {
    let cluster = Cluster::start().await;
    let mut browser = Browser::new(DESKTOP_UA);
    let created = browser.qr_new(&cluster.on(0, "/_wechat/qr/new")).await;
    let scene = created["scene"].as_str().unwrap().to_owned();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let push = |i: usize, body: String| {
        let url = cluster.on(i, "/_wechat/events");
        let ts = ts.clone();
        async move { wechat_e2e::signed_push(&url, &ts, "sharedNonce1", "", body).await }
    };
    assert_eq!(
        push(0, wechat_e2e::scan_xml("oSomeone", "other", 1)).await,
        200
    );
    for i in [0, 1, 2] {
        let forged = push(i, wechat_e2e::scan_xml("oAttacker", &scene, 2)).await;
        assert_eq!(forged, 401, "instance {i}");
    }
    let status = browser
        .get(&cluster.on(1, &format!("/_wechat/qr/status?scene={scene}&wait=0")))
        .await;
    assert_eq!(status.json()["status"], "pending", "{}", status.body);
}

#[tokio::test]
async fn a_scan_confirmed_on_another_instance_logs_in_the_browser_polling_a_third_once() {
    let cluster = Cluster::start_with(Backend::Single, "scene_confirm = true\n").await;
    let mut desktop = Browser::new(DESKTOP_UA);
    let q = desktop
        .qr_new(&cluster.on(1, "/_wechat/qr/new?rd=%2Forders"))
        .await;
    // WeChat pushes the scan to instance 0, which answers with the message.
    let scanned = Browser::new(WECHAT_UA)
        .post_json(
            &format!("{}/_emulator/scan", cluster.emulator_url),
            &json!({"ticket": q["ticket"]}),
        )
        .await
        .json();
    assert!(scanned["reply_error"].is_null(), "{scanned}");
    let link = scanned["reply"]["links"][0].as_str().unwrap().to_owned();
    let scene = q["scene"].as_str().unwrap();
    let status = cluster.on(1, &format!("/_wechat/qr/status?scene={scene}&wait=0"));
    let polled = desktop.get(&status).await;
    assert_eq!(polled.json()["status"], "scanned", "{}", polled.body);

    // The phone opens the link on instance 2 and confirms twice at once, on 1 and 2.
    let mut phone = Browser::new(WECHAT_UA);
    let page = phone.follow(&cluster.on(2, &link)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("answer=confirm"), "{}", page.body);
    let answers = futures_util::future::join_all((1..3).map(|i| {
        let mut phone_tab = Browser::new(WECHAT_UA);
        phone_tab.cookies = phone.cookies.clone();
        let url = cluster.on(i, &format!("{link}&answer=confirm"));
        async move { phone_tab.post_form(&url, &[]).await.status }
    }))
    .await;
    let mut sorted = answers.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        vec![200, 409],
        "one confirmation counts: {answers:?}"
    );
    let polled = desktop
        .get(&cluster.on(0, &format!("/_wechat/qr/status?scene={scene}&wait=0")))
        .await;
    assert_eq!(polled.json()["status"], "confirmed", "{}", polled.body);
    let again = desktop.get(&status).await;
    assert_eq!(
        again.status, 403,
        "the scene cookie is gone after the login"
    );
}

/// A scene QR login on `cluster`: the QR from instance 0, the scan (by a
/// follower) pushed by WeChat to instance 0, one poll on instance 1 after
/// it. Returns the browser, logged in.
async fn scanned_then_polled(cluster: &Cluster) -> Browser {
    let mut browser = Browser::new(DESKTOP_UA);
    let q = browser
        .qr_new(&cluster.on(0, "/_wechat/qr/new?rd=%2Forders"))
        .await;
    let scene = q["scene"].as_str().unwrap().to_owned();
    cluster
        .control("scan", json!({ "ticket": q["ticket"], "subscribe": true }))
        .await;
    let polled = browser
        .get(&cluster.on(1, &format!("/_wechat/qr/status?scene={scene}&wait=0")))
        .await;
    assert_eq!(polled.json()["status"], "confirmed", "{}", polled.body);
    browser
}

#[tokio::test]
async fn a_scene_qr_login_costs_redis_at_most_eight_commands_and_a_retried_scan_changes_nothing() {
    let cluster = Cluster::start().await;
    // The first QR code fetches the basic token: not a per-login cost.
    scanned_then_polled(&cluster).await;
    wechat_e2e::redis_cli(cluster.redis_port, &["CONFIG", "RESETSTAT"]);
    let mut browser = scanned_then_polled(&cluster).await;
    let mut commands = wechat_e2e::redis_commands_since_reset(cluster.redis_port);
    commands.retain(|name, _| !wechat_e2e::REDIS_SYNC_COMMANDS.contains(&name.as_str()));
    let total: u64 = commands.values().sum();
    assert!(
        total <= 8,
        "{total} Redis commands for one scene QR login: {commands:?}"
    );
    // No followers route: nobody reads a follow state, none is written.
    assert_eq!(
        wechat_e2e::redis_cli(cluster.redis_port, &["KEYS", "test:follower:*"]).trim(),
        ""
    );
    let page = browser.get(&cluster.on(2, "/echo")).await;
    assert_eq!(page.status, 200, "{}", page.body);

    // WeChat's retry of a scan (same signed URL, same body), then another
    // person's scan of the claimed scene: each acknowledged, neither logs
    // anyone in again.
    let mut desktop = Browser::new(DESKTOP_UA);
    let q = desktop.qr_new(&cluster.on(0, "/_wechat/qr/new")).await;
    let scene = q["scene"].as_str().unwrap().to_owned();
    // A copy of the browser that keeps the scene cookie past the login.
    let mut kept = Browser::new(DESKTOP_UA);
    kept.cookies = desktop.cookies.clone();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let push = |i: usize, nonce: &'static str, body: String| {
        let url = cluster.on(i, "/_wechat/events");
        let ts = ts.clone();
        async move { wechat_e2e::signed_push(&url, &ts, nonce, "", body).await }
    };
    let scan = wechat_e2e::scan_xml("oFirstScanner", &scene, 7);
    assert_eq!(push(0, "retryNonce1", scan.clone()).await, 200);
    assert_eq!(push(1, "retryNonce1", scan).await, 200, "WeChat's retry");
    let status = cluster.on(2, &format!("/_wechat/qr/status?scene={scene}&wait=0"));
    let polled = desktop.get(&status).await;
    assert_eq!(polled.json()["status"], "confirmed", "{}", polled.body);
    let page = desktop.get(&cluster.on(0, "/echo")).await;
    assert_eq!(
        page.json()["headers"]["x-wechat-openid"][0],
        "oFirstScanner"
    );
    let again = wechat_e2e::scan_xml("oSecondScanner", &scene, 8);
    assert_eq!(push(0, "retryNonce2", again).await, 200);
    let later = kept.get(&status).await;
    assert_eq!(later.json()["status"], "expired", "{}", later.body);
    assert!(!later
        .headers_named("set-cookie")
        .iter()
        .any(|c| c.starts_with("wechat_session=") && !c.contains("Max-Age=0")));
    assert_eq!(
        desktop.get(&cluster.on(1, "/echo")).await.json()["headers"]["x-wechat-openid"][0],
        "oFirstScanner"
    );
}

#[tokio::test]
async fn with_a_followers_route_a_scanners_follow_state_reaches_every_instance() {
    let cluster = Cluster::start_with(
        Backend::Single,
        "[[route]]\nprefix = \"/echo/fans/\"\npolicy = \"followers\"\n",
    )
    .await;
    let mut browser = scanned_then_polled(&cluster).await;
    let checks = cluster.calls("user_info").await;
    // Instance 2 never saw this user: the store tells it he follows (its
    // check answers 307 back to the page, then the page).
    let fans = browser.follow(&cluster.on(2, "/echo/fans/")).await;
    assert_eq!(fans.status, 200, "{}", fans.body);
    assert_eq!(
        cluster.calls("user_info").await,
        checks,
        "no second cgi-bin/user/info"
    );
}
