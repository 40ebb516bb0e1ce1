//! Operations: Prometheus metrics scraped over HTTP move with the events
//! that should move them; `ready` fails when the upstream is down.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use wechat_e2e::{free_port, Browser, Stack, DESKTOP_UA, WECHAT_UA};

/// Every sample of a scrape, keyed by its series (`name{labels}`).
async fn scrape(url: &str) -> HashMap<String, f64> {
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

struct Metrics {
    url: String,
    before: HashMap<String, f64>,
}

impl Metrics {
    async fn start(url: String) -> Metrics {
        let before = scrape(&url).await;
        Metrics { url, before }
    }

    /// How much each series moved since the last look.
    async fn delta(&mut self) -> HashMap<String, f64> {
        let now = scrape(&self.url).await;
        let moved = now
            .iter()
            .map(|(k, v)| (k.clone(), v - self.before.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, d)| *d != 0.0)
            .collect();
        self.before = now;
        moved
    }
}

/// Asserts that `series` moved by exactly `by` in `delta` (a series that is
/// absent did not move).
#[track_caller]
fn assert_moved(delta: &HashMap<String, f64>, series: &str, by: f64) {
    let moved = delta.get(series).copied().unwrap_or(0.0);
    assert_eq!(moved, by, "{series} moved by {moved}, not {by}: {delta:?}");
}

#[tokio::test]
async fn metrics_move_with_logins_requests_wechat_calls_and_failures() {
    let port = free_port();
    let stack = Stack::start_with(
        "retries = 1",
        &format!("metrics_listen = \"127.0.0.1:{port}\""),
    )
    .await;
    let mut m = Metrics::start(format!("http://127.0.0.1:{port}/metrics")).await;
    // Pingora's Prometheus service, in the text format.
    let served = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    let kind = served.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(kind.starts_with("text/plain"), "{kind}");
    assert!(served
        .text()
        .await
        .unwrap()
        .contains("# TYPE wechat_gateway_logins_started_total counter"));

    // A login: the redirect, the exchange, the profile, the first page.
    let mut browser = Browser::new(WECHAT_UA);
    browser.store_cookies = true;
    let first = browser.get(&stack.url("/echo")).await;
    let consent = browser.get(first.location()).await;
    let callback = consent.location().to_owned();
    let kept = browser.cookies.clone();
    browser.get(&callback).await;
    browser.get(&stack.url("/echo")).await;
    let d = m.delta().await;
    assert_moved(
        &d,
        r#"wechat_gateway_logins_started_total{site="default"}"#,
        1.0,
    );
    assert_moved(
        &d,
        r#"wechat_gateway_logins_completed_total{site="default"}"#,
        1.0,
    );
    assert_moved(
        &d,
        r#"wechat_gateway_requests_total{outcome="redirect"}"#,
        2.0,
    );
    assert_moved(&d, r#"wechat_gateway_requests_total{outcome="pass"}"#, 1.0);
    assert_moved(
        &d,
        r#"wechat_gateway_wechat_api_calls_total{endpoint="sns/oauth2/access_token",errcode="0"}"#,
        1.0,
    );
    assert_moved(
        &d,
        r#"wechat_gateway_wechat_api_calls_total{endpoint="sns/userinfo",errcode="0"}"#,
        1.0,
    );
    assert_moved(
        &d,
        r#"wechat_gateway_wechat_api_duration_seconds_count{endpoint="sns/oauth2/access_token"}"#,
        1.0,
    );

    // WeChat's duplicate callback joins the first exchange.
    let mut duplicate = Browser::new(WECHAT_UA);
    duplicate.cookies = kept;
    duplicate.get(&callback).await;
    let d = m.delta().await;
    assert_moved(&d, "wechat_gateway_code_exchange_joins_total", 1.0);

    // An API call without a session: a 401.
    Browser::new(WECHAT_UA)
        .get_with(
            &stack.url("/echo"),
            &[("X-Requested-With", "XMLHttpRequest")],
        )
        .await;
    let d = m.delta().await;
    assert_moved(
        &d,
        r#"wechat_gateway_requests_total{outcome="unauthorized"}"#,
        1.0,
    );

    // A busy WeChat, retried, then a refused code: a failed login by errcode.
    stack
        .control("faults", json!({"endpoint": "access_token", "errcode": -1}))
        .await;
    stack
        .control(
            "faults",
            json!({"endpoint": "access_token", "errcode": 40029, "count": 1}),
        )
        .await;
    let mut failing = Browser::new(WECHAT_UA);
    let back = stack.wechat_login(&mut failing, "/echo").await;
    assert_eq!(back.status, 400, "{}", back.body);
    let d = m.delta().await;
    assert_moved(
        &d,
        r#"wechat_gateway_wechat_api_retries_total{endpoint="sns/oauth2/access_token"}"#,
        1.0,
    );
    assert_moved(
        &d,
        r#"wechat_gateway_logins_failed_total{errcode="40029",site="default"}"#,
        1.0,
    );
    assert_moved(
        &d,
        r#"wechat_gateway_wechat_api_calls_total{endpoint="sns/oauth2/access_token",errcode="-1"}"#,
        1.0,
    );
    assert_moved(
        &d,
        r#"wechat_gateway_requests_total{outcome="client_error"}"#,
        1.0,
    );
}

#[tokio::test]
async fn qr_scene_metrics_count_created_confirmed_and_expired() {
    let mut stack = Stack::start_desktop("scene_qr").await;
    let port = free_port();
    let cookie_secret = stack.cookie_secret.clone();
    let wechat_extra = format!(
        "push_token = \"{}\"\n\n[wechat.open]\nappid = \"{}\"\nsecret = \"unused-open-secret\"\n",
        wechat_e2e::PUSH_TOKEN,
        wechat_e2e::OPEN_APPID,
    );
    stack
        .start_gateway(
            &wechat_extra,
            &format!("desktop_login = \"scene_qr\"\nmetrics_listen = \"127.0.0.1:{port}\""),
            &cookie_secret,
        )
        .await;
    let mut m = Metrics::start(format!("http://127.0.0.1:{port}/metrics")).await;
    let mut browser = Browser::new(DESKTOP_UA);
    let q = browser.qr_new(&stack.url("/_wechat/qr/new")).await;
    stack.control("scan", json!({"ticket": q["ticket"]})).await;
    let scene = q["scene"].as_str().unwrap();
    let status_url = stack.url(&format!("/_wechat/qr/status?scene={scene}&wait=0"));
    assert_eq!(browser.get(&status_url).await.json()["status"], "confirmed");
    let d = m.delta().await;
    assert_moved(
        &d,
        r#"wechat_gateway_qr_scenes_total{status="created"}"#,
        1.0,
    );
    assert_moved(
        &d,
        r#"wechat_gateway_qr_scenes_total{status="confirmed"}"#,
        1.0,
    );
    assert_moved(
        &d,
        r#"wechat_gateway_wechat_api_calls_total{endpoint="cgi-bin/stable_token",errcode="0"}"#,
        1.0,
    );
    assert_moved(
        &d,
        r#"wechat_gateway_wechat_api_calls_total{endpoint="cgi-bin/qrcode/create",errcode="0"}"#,
        1.0,
    );
}

#[tokio::test]
async fn ready_fails_while_the_upstream_is_down_and_healthz_does_not() {
    let mut stack = Stack::start().await;
    let ready = Browser::new(WECHAT_UA)
        .get(&stack.url("/_wechat/ready"))
        .await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["ready"], true);
    // The application (the upstream) stops.
    stack.app_proc = wechat_e2e::Proc::start_program(
        &stack.dir,
        "sleeper",
        std::path::Path::new("sleep"),
        &["60"],
        &[],
    );
    let down = Browser::new(WECHAT_UA)
        .get(&stack.url("/_wechat/ready"))
        .await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert_eq!(down.json()["upstream"], "unreachable");
    assert_eq!(down.json()["store"], "ok");
    let alive = Browser::new(WECHAT_UA)
        .get(&stack.url("/_wechat/healthz"))
        .await;
    assert_eq!(alive.status, 200);
}

/// A login through the stack; the session cookie (`name=value`).
async fn login(stack: &Stack) -> String {
    let mut browser = Browser::new(WECHAT_UA);
    let back = stack.wechat_login(&mut browser, "/echo").await;
    assert_eq!(back.status, 302, "{}", back.body);
    format!("wechat_session={}", browser.cookies["wechat_session"])
}

async fn passes(stack: &Stack, cookie: &str) -> bool {
    Browser::new(WECHAT_UA)
        .get_with(
            &stack.url("/echo"),
            &[("Cookie", cookie), ("X-Requested-With", "XMLHttpRequest")],
        )
        .await
        .status
        == 200
}

fn opens_with(secret: &str, cookie: &str) -> bool {
    let sealer =
        wechat_oauth::seal::Sealer::new(&wechat_oauth::secret::Secret::new(secret)).unwrap();
    sealer
        .open("wechat_session", cookie.split_once('=').unwrap().1)
        .is_some()
}

#[tokio::test]
async fn sighup_reloads_cookie_keys_without_ending_sessions_or_the_process() {
    let old = format!("old-cookie-key-{}", wechat_e2e::random(32));
    let new = format!("new-cookie-key-{}", wechat_e2e::random(32));
    let mut stack = Stack::start().await;
    stack
        .start_gateway("", &format!("cookie_secrets = [\"{old}\"]"), "")
        .await;
    let pid = stack.gateway_pid();
    let before = login(&stack).await;
    assert!(opens_with(&old, &before));

    let config = std::fs::read_to_string(&stack.gateway_config).unwrap();
    let rotated = config.replace(
        &format!("cookie_secrets = [\"{old}\"]"),
        &format!("cookie_secrets = [\"{new}\", \"{old}\"]"),
    );
    assert_ne!(config, rotated);
    std::fs::write(&stack.gateway_config, rotated).unwrap();
    stack.gateway().signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !stack.gateway_log().contains("configuration reloaded") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            stack.gateway_log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(stack.gateway_pid(), pid, "the same process");
    assert!(
        passes(&stack, &before).await,
        "a session from before the reload"
    );
    let after = login(&stack).await;
    assert!(opens_with(&new, &after), "sealed with the new key");
    assert!(!opens_with(&old, &after));
    assert!(passes(&stack, &after).await);

    // A file that does not load: logged, the running configuration stays.
    std::fs::write(
        &stack.gateway_config,
        "[gateway]\ncookie_secret = \"short\"\n",
    )
    .unwrap();
    stack.gateway().signal(libc::SIGHUP);
    while !stack.gateway_log().contains("reload failed") {
        assert!(std::time::Instant::now() < deadline + std::time::Duration::from_secs(5));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(passes(&stack, &after).await);
    assert!(passes(&stack, &login(&stack).await).await);
}

#[test]
fn check_config_lists_every_problem_and_passes_a_good_file() {
    let dir = wechat_e2e::ScratchDir::new("check");
    let broken = dir.join("broken.toml");
    std::fs::write(
        &broken,
        "[wechat]\nscope = \"everything\"\nretries = 99\n\n[gateway]\nupstream = \"127.0.0.1:3000\"\npublic_url = \"ftp://x\"\n\
         cookie_secret = \"short\"\nlanguage = \"fr\"\nlistn = \"x\"\n\n[store]\nurl = \"mysql://db\"\n",
    )
    .unwrap();
    let run = |path: &std::path::Path| {
        std::process::Command::new(wechat_e2e::bin("wechat-gateway"))
            .arg("--check-config")
            .arg(path)
            .env_remove("WECHAT_APP_SECRET")
            .env_remove("WECHAT_COOKIE_SECRET")
            .output()
            .unwrap()
    };
    let out = run(&broken);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text.lines().collect();
    for key in [
        "[wechat] appid",
        "[wechat] secret",
        "[wechat] scope",
        "[wechat] retries",
        "[gateway] public_url",
        "[gateway] cookie_secret",
        "[gateway] language",
        "[store] url",
        "line 10",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("wechat-gateway: config") && l.contains(key)),
            "{key} missing:\n{text}"
        );
    }
    assert_eq!(lines.len(), 9, "one line per problem:\n{text}");

    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[wechat]\nappid = \"wx1234567890abcdef\"\nsecret = \"s\"\n\n[gateway]\nupstream = \"127.0.0.1:3000\"\n\
         public_url = \"https://app.example.com\"\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\n",
    )
    .unwrap();
    let out = run(&good);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[tokio::test]
async fn json_logs_carry_one_line_per_login_with_a_hashed_openid() {
    let mut stack = Stack::start().await;
    stack.gateway_env = vec![("WECHAT_LOG_FORMAT".into(), "json".into())];
    let secret = stack.cookie_secret.clone();
    stack
        .start_gateway("", "log_openid = \"hash\"", &secret)
        .await;
    let user = stack.emulator("user").await;
    let openid = user["openid"].as_str().unwrap();
    login(&stack).await;
    let log = stack.gateway_log();
    let mut logins = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if entry["fields"]["message"] == "login completed" {
            logins.push(entry);
        }
    }
    assert_eq!(logins.len(), 1, "{log}");
    let fields = &logins[0]["fields"];
    assert_eq!(fields["outcome"], "completed");
    assert_eq!(
        logins[0]["spans"][0]["client"], "127.0.0.1",
        "the client address: {}",
        logins[0]
    );
    assert!(fields["elapsed_ms"].is_u64());
    assert!(
        fields["openid"].as_str().unwrap().starts_with("sha1:"),
        "{fields}"
    );
    assert!(!log.contains(openid), "the plain openid is in no line");
}

#[tokio::test]
async fn the_gateway_serves_https_itself_with_tls_cert_and_key() {
    let stack = Stack::start().await;
    let dir = stack.dir.clone();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    wechat_e2e::self_signed(&cert, &key, "127.0.0.1");
    let port = free_port();
    let origin = format!("https://127.0.0.1:{port}");
    let path = dir.join("tls.toml");
    wechat_e2e::TestConfig::new(&stack.appid, &stack.emulator_url, &origin)
        .set("gateway.listen", format!("127.0.0.1:{port}"))
        .set(
            "gateway.upstream",
            stack.app_url.trim_start_matches("http://"),
        )
        .set("gateway.public_paths", vec!["/echo/public"])
        .set("gateway.tls_cert", cert.display().to_string())
        .set("gateway.tls_key", key.display().to_string())
        .set("store.state_dir", "tls-state")
        .write(&path);
    let gateway = wechat_e2e::Proc::start(
        &dir,
        "gateway-tls",
        "wechat-gateway",
        &["--config", path.to_str().unwrap()],
        &[
            ("WECHAT_APP_SECRET", stack.app_secret.as_str()),
            ("WECHAT_COOKIE_SECRET", stack.cookie_secret.as_str()),
            ("RUST_LOG", "info"),
        ],
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let health = loop {
        match client.get(format!("{origin}/_wechat/healthz")).send().await {
            Ok(r) => break r,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "no HTTPS answer: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(health.status(), 200);
    let proxied = client
        .get(format!("{origin}/echo/public"))
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 200, "the application behind HTTPS");
    let login = client
        .get(format!("{origin}/orders"))
        .header("User-Agent", WECHAT_UA)
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 302);
    let state_cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("wechat_state_"))
        .unwrap();
    assert!(state_cookie.contains("; Secure"), "{state_cookie}");
    // Plain HTTP on the TLS port is refused.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/_wechat/healthz"))
            .await
            .map_or(true, |r| r.status() != 200)
    );

    // A renewed certificate is served after SIGHUP, without a restart; a
    // broken one keeps the running certificate.
    let subject = || {
        let shown = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -subject"
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&shown.stdout).into_owned()
    };
    assert!(subject().contains("CN = 127.0.0.1"), "{}", subject());
    wechat_e2e::self_signed(&cert, &key, "renewed.example");
    gateway.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !subject().contains("CN = renewed.example") {
        assert!(std::time::Instant::now() < deadline, "{}", subject());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    std::fs::write(&cert, "not a certificate").unwrap();
    gateway.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !gateway.log_text().contains("TLS certificate reload failed") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            gateway.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        subject().contains("CN = renewed.example"),
        "the running certificate stays"
    );
}

#[tokio::test]
async fn sigterm_ends_long_polls_lets_requests_in_flight_finish_and_exits_within_the_grace_period()
{
    let mut stack = Stack::start_desktop_with("scene_qr", false, "shutdown_grace_secs = 5").await;
    let cookie = login(&stack).await;
    let mut desktop = Browser::new(DESKTOP_UA);
    let created = desktop
        .get_with(
            &stack.url("/_wechat/qr/new?rd=%2F"),
            &[("Accept", "application/json")],
        )
        .await;
    let scene = created.json()["scene"].as_str().unwrap().to_owned();
    let (poll_url, scene_cookie) = (
        stack.url(&format!("/_wechat/qr/status?scene={scene}")),
        desktop.cookie_header(),
    );
    let poll = tokio::spawn(async move {
        let answer = Browser::new(DESKTOP_UA)
            .get_with(&poll_url, &[("Cookie", &scene_cookie)])
            .await;
        (
            answer.status,
            answer.json()["status"].clone(),
            Instant::now(),
        )
    });
    let slow_url = stack.url("/echo?delay_ms=2000");
    let slow = tokio::spawn(async move {
        let answer = Browser::new(WECHAT_UA)
            .get_with(&slow_url, &[("Cookie", &cookie)])
            .await;
        (answer.status, answer.json()["path"].clone())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = Instant::now();
    stack.gateway().signal(libc::SIGTERM);

    // The long poll (25 s otherwise) answers at once: poll again elsewhere.
    let (status, scene_status, answered) = poll.await.unwrap();
    assert_eq!((status, scene_status), (200, json!("pending")));
    assert!(
        answered.duration_since(stopped) < Duration::from_secs(2),
        "{:?}",
        answered.duration_since(stopped)
    );
    // No new connection is taken.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let late = tokio::time::timeout(
        Duration::from_secs(2),
        reqwest::get(stack.url("/_wechat/healthz")),
    )
    .await;
    assert!(
        !matches!(&late, Ok(Ok(r)) if r.status() == 200),
        "a new request was answered after SIGTERM"
    );
    // The request in flight is answered whole.
    assert_eq!(slow.await.unwrap(), (200, json!("/echo")));
    let gateway = stack.gateway_proc.as_mut().unwrap();
    assert_eq!(gateway.wait_exit(Duration::from_secs(6)), Some(0));
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "exited after {:?}, past the 5 s grace",
        stopped.elapsed()
    );
    assert!(
        gateway.log_text().contains("no request in flight: stopped"),
        "{}",
        gateway.log_text()
    );

    // Idle, it stops at once.
    stack.restart_gateway().await;
    let stopped = Instant::now();
    stack.gateway().signal(libc::SIGTERM);
    let gateway = stack.gateway_proc.as_mut().unwrap();
    assert_eq!(gateway.wait_exit(Duration::from_secs(6)), Some(0));
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "{:?}",
        stopped.elapsed()
    );
}

#[tokio::test]
async fn a_down_upstream_gets_the_gates_502_page_or_json_and_every_upstream_answer_is_counted() {
    let port = free_port();
    let mut stack = Stack::start_with("", &format!("metrics_listen = \"127.0.0.1:{port}\"")).await;
    let cookie = login(&stack).await;
    let mut m = Metrics::start(format!("http://127.0.0.1:{port}/metrics")).await;
    assert!(passes(&stack, &cookie).await);
    let d = m.delta().await;
    assert_moved(
        &d,
        r#"wechat_gateway_upstream_responses_total{class="2xx"}"#,
        1.0,
    );
    assert_moved(&d, "wechat_gateway_upstream_duration_seconds_count", 1.0);
    let all = scrape(&m.url).await;
    // `--version` names the commit, as the metric does.
    let version = std::process::Command::new(wechat_e2e::bin("wechat-gateway"))
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8(version.stdout).unwrap();
    let commit = version
        .split("(commit ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no commit in {version:?}"))
        .to_owned();
    assert!(!commit.is_empty() && commit != "unknown", "{version}");
    assert!(
        all.keys()
            .any(|k| k.starts_with("wechat_gateway_build_info{")
                && k.contains(&format!("commit=\"{commit}\""))
                && k.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))),
        "{all:?}"
    );
    assert!(all.contains_key("process_cpu_seconds_total"), "{all:?}");
    assert!(all.contains_key("process_resident_memory_bytes"));
    assert!(all.contains_key("process_open_fds"));

    // The application stops (its port taken by nothing).
    stack.app_proc.stop();
    let secret_query = "/echo/x?code=CODE0SECRET&state=STATE0SECRET";
    for (lang, words) in [
        ("en", "The site is not answering"),
        ("zh-CN", "网站暂时无法访问"),
    ] {
        let page = Browser::new(WECHAT_UA)
            .get_with(
                &stack.url(secret_query),
                &[("Cookie", &cookie), ("Accept-Language", lang)],
            )
            .await;
        assert_eq!(page.status, 502, "{}", page.body);
        assert_eq!(page.header("retry-after"), Some("5"));
        assert!(page.body.contains(words), "{lang}: {}", page.body);
        assert!(!page.body.contains("CODE0SECRET"));
    }
    let xhr = Browser::new(WECHAT_UA)
        .get_with(
            &stack.url("/echo"),
            &[("Cookie", &cookie), ("X-Requested-With", "XMLHttpRequest")],
        )
        .await;
    assert_eq!(xhr.status, 502);
    assert_eq!(xhr.json()["error"], "temporarily_unavailable");
    let d = m.delta().await;
    assert_moved(
        &d,
        r#"wechat_gateway_requests_total{outcome="upstream_error"}"#,
        3.0,
    );
    // No log line carries the request's code or state.
    let logs = stack.logs();
    assert!(
        !logs.contains("CODE0SECRET") && !logs.contains("STATE0SECRET"),
        "{logs}"
    );
}

#[tokio::test]
async fn the_access_log_has_a_line_per_request_without_codes_states_tokens_or_secrets_and_reopens_on_sigusr1(
) {
    let scratch = wechat_e2e::ScratchDir::new("access-log");
    let path = scratch.join("access.log");
    let stack = Stack::start_with(
        "",
        &format!("access_log = {:?}", path.display().to_string()),
    )
    .await;
    let user = stack.emulator("user").await;
    let cookie = login(&stack).await;
    assert!(passes(&stack, &cookie).await);
    // A line is written once its request is over, just after the answer.
    let text = lines_once(&path, |t| {
        t.lines().any(|l| l.contains("\"outcome\":\"pass\""))
    })
    .await;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    // The last line of a path (`/echo` is first the login's start, a 302).
    let find = |path: &str| {
        lines
            .iter()
            .rfind(|l| l["path"] == path)
            .unwrap_or_else(|| panic!("no line for {path}: {text}"))
            .clone()
    };
    let callback = find("/_wechat/callback");
    assert_eq!(
        (callback["status"].as_u64(), callback["outcome"].as_str()),
        (Some(302), Some("gate"))
    );
    let echo = find("/echo");
    assert_eq!(echo["status"], 200);
    assert_eq!(echo["outcome"], "pass");
    assert_eq!(echo["openid"], user["openid"]);
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["client"], "127.0.0.1");
    assert!(echo["bytes"].as_u64().unwrap() > 0);
    assert!(echo["upstream_ms"].is_u64() && echo["duration_ms"].is_u64());
    assert!(echo["time"].as_str().unwrap().ends_with('Z'));
    // Nothing a thief could use: no code, state, token, secret or session.
    let issued = stack.emulator("issued").await;
    let mut secrets: Vec<String> = ["codes", "access_tokens", "refresh_tokens"]
        .iter()
        .flat_map(|k| issued[k].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    secrets.push(stack.app_secret.clone());
    secrets.push(stack.cookie_secret.clone());
    secrets.push(cookie.split_once('=').unwrap().1.to_owned());
    assert!(secrets.len() >= 5, "{secrets:?}");
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "the access log holds {secret}: {text}"
        );
    }
    assert!(
        !text.contains("code=") && !text.contains("state="),
        "{text}"
    );

    // logrotate: the file is moved, SIGUSR1, and the next line is in a new file.
    let rotated = scratch.join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    stack.gateway().signal(libc::SIGUSR1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !path.exists() {
        assert!(Instant::now() < deadline, "the access log was not reopened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(passes(&stack, &cookie).await);
    let fresh = lines_once(&path, |t| !t.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fresh_now = std::fs::read_to_string(&path).unwrap();
    assert_eq!(fresh_now, fresh, "one request, one line");
    assert_eq!(fresh.lines().count(), 1, "{fresh}");
    assert_eq!(std::fs::read_to_string(&rotated).unwrap(), text);
}

/// The file's text once `ready` holds for it (at most 5 s).
async fn lines_once(path: &std::path::Path, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if ready(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{}: {text}", path.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_key_comes_from_the_environment_and_the_common_ones_from_flags() {
    let mut stack = Stack::start().await;
    let page = |stack: &Stack| {
        let url = stack.url("/orders");
        async move {
            Browser::new(DESKTOP_UA)
                .get_with(&url, &[("Accept-Language", "zh-CN")])
                .await
        }
    };
    assert!(page(&stack).await.body.contains("请在微信中打开"));
    stack
        .restart_gateway_with(&[
            ("WECHAT_GATEWAY__GATEWAY__LANGUAGE", "en"),
            ("WECHAT_GATEWAY__GATEWAY__PUBLIC_PATHS", r#"["/orders"]"#),
        ])
        .await;
    let en = Browser::new(DESKTOP_UA)
        .get_with(&stack.url("/elsewhere"), &[("Accept-Language", "zh-CN")])
        .await;
    assert!(en.body.contains("Open this page in WeChat"), "{}", en.body);
    assert_eq!(
        page(&stack).await.status,
        200,
        "a public path from the environment"
    );

    // A misspelt variable is named by --check-config, like a misspelt key.
    let config = stack.gateway_config.to_str().unwrap().to_owned();
    let checked = std::process::Command::new(wechat_e2e::bin("wechat-gateway"))
        .args(["--check-config", &config])
        .env("WECHAT_APP_SECRET", &stack.app_secret)
        .env("WECHAT_COOKIE_SECRET", &stack.cookie_secret)
        .env("WECHAT_GATEWAY__GATEWAY__LISTN", "x")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&checked.stderr).into_owned();
    assert_eq!(checked.status.code(), Some(1), "{said}");
    assert!(said.contains("listn"), "{said}");

    // --listen and --public-url win over the file and the environment.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let public = format!("http://{listen}");
    let mut flagged = wechat_e2e::Proc::start(
        &stack.dir,
        "flagged",
        "wechat-gateway",
        &[
            "--config",
            &config,
            "--listen",
            &listen,
            "--public-url",
            &public,
        ],
        &[
            ("WECHAT_APP_SECRET", &stack.app_secret),
            ("WECHAT_COOKIE_SECRET", &stack.cookie_secret),
            ("WECHAT_GATEWAY__GATEWAY__LISTEN", "\"127.0.0.1:1\""),
            // The first gateway holds the state file.
            ("WECHAT_GATEWAY__STORE__URL", "memory"),
        ],
    );
    let ready = tokio::time::timeout(
        Duration::from_secs(20),
        wechat_e2e::wait_ready(&format!("{public}/_wechat/healthz")),
    )
    .await;
    assert!(ready.is_ok(), "{}", flagged.log_text());
    let start = Browser::new(WECHAT_UA).get(&format!("{public}/echo")).await;
    assert_eq!(start.status, 302);
    let redirect_uri = wechat_e2e::query_param(start.location(), "redirect_uri");
    assert_eq!(redirect_uri, format!("{public}/_wechat/callback"));
    flagged.stop();
}

#[tokio::test]
async fn an_upgrade_hands_the_listener_to_a_new_binary_without_a_failed_request() {
    let sock = wechat_e2e::ScratchDir::new("upgrade");
    let sock = sock.join("upgrade.sock");
    let mut stack = Stack::start().await;
    for (key, value) in [
        (
            "WECHAT_GATEWAY__GATEWAY__UPGRADE_SOCK",
            format!("{:?}", sock.display().to_string()),
        ),
        // The state file is one process's; an upgrade runs on memory or Redis.
        ("WECHAT_GATEWAY__STORE__URL", "memory".to_owned()),
    ] {
        stack.set_gateway_env(key, value);
    }
    stack.restart_gateway().await;
    let cookie = login(&stack).await;

    // A bounded load across the upgrade: one client opens a new connection
    // per request, one keeps its connections alive. Each counts the answers
    // after the old binary has exited too, so the load spans the hand-over.
    let old_gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = |keep_alive: bool| {
        let url = stack.url("/echo");
        let cookie = cookie.clone();
        let old_gone = old_gone.clone();
        tokio::spawn(async move {
            let mut client = reqwest::Client::builder();
            if !keep_alive {
                client = client.pool_max_idle_per_host(0);
            }
            let client = client.build().unwrap();
            let started = Instant::now();
            let deadline = started + Duration::from_secs(10);
            let (mut ok, mut failed, mut by_new_alone) = (0u32, Vec::new(), 0u32);
            // Until 200 answers after the hand-over (bounded in time and
            // count however fast the machine is).
            while Instant::now() < deadline
                && ok as usize + failed.len() < 40_000
                && by_new_alone < 200
            {
                let sent = client
                    .get(&url)
                    .header("Cookie", &cookie)
                    .header("User-Agent", WECHAT_UA)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => {
                        ok += 1;
                        by_new_alone += u32::from(old_gone.load(Ordering::SeqCst));
                    }
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(format!("{e:?} after {:?}", started.elapsed())),
                }
            }
            (ok, failed, by_new_alone)
        })
    };
    let loads = [load(false), load(true)];
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut new = stack.spawn_gateway("upgraded", &["--upgrade"]);
    // The new binary waits at the upgrade socket; the old one hands over.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !new.log_text().contains("Bootstrap starting") {
        assert!(Instant::now() < deadline, "{}", new.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.gateway().signal(libc::SIGQUIT);
    let old = stack.gateway_proc.as_mut().unwrap();
    // Awaited: a blocking wait would stall the loads on this runtime's one
    // thread, leaving their requests half sent.
    assert_eq!(
        old.exited(Duration::from_secs(20)).await,
        Some(0),
        "{}",
        old.log_text()
    );
    old_gone.store(true, Ordering::SeqCst);
    let old_log = old.log_text();
    for (load, kind) in loads.into_iter().zip(["new connections", "kept alive"]) {
        let (ok, failed, by_new_alone) = load.await.unwrap();
        // Neither kind loses a request.
        assert!(
            failed.is_empty(),
            "{kind}: {} failed of {}: {failed:?}\nold: {old_log}\nnew: {}",
            failed.len(),
            ok as usize + failed.len(),
            new.log_text()
        );
        assert!(ok > 50, "{kind}: {ok} requests");
        assert!(
            by_new_alone > 10,
            "{kind}: {by_new_alone} answers after the old binary exited"
        );
    }
    // The new binary serves on the same address, the session still good.
    assert!(passes(&stack, &login(&stack).await).await);
    assert!(
        new.log_text().contains("Server starting"),
        "{}",
        new.log_text()
    );
    new.stop();
}

#[tokio::test]
async fn a_reload_names_the_keys_that_need_a_restart_and_print_config_lists_every_key() {
    let stack = Stack::start().await;
    let path = stack.gateway_config.clone();
    let text = std::fs::read_to_string(&path).unwrap();
    let listen = text
        .lines()
        .find(|l| l.starts_with("listen = "))
        .expect("the config names listen")
        .to_owned();
    let moved = text.replace(&listen, &format!("listen = \"127.0.0.1:{}\"", free_port()));
    std::fs::write(&path, moved).unwrap();
    stack.gateway().signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !stack.gateway_log().contains("apply after a restart") {
        assert!(Instant::now() < deadline, "{}", stack.gateway_log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = stack.gateway_log();
    let line = log
        .lines()
        .find(|l| l.contains("apply after a restart"))
        .unwrap();
    assert!(line.contains("restart_needed=listen"), "{line}");
    // It still serves where it listens.
    let alive = Browser::new(WECHAT_UA)
        .get(&stack.url("/_wechat/healthz"))
        .await;
    assert_eq!(alive.status, 200);

    // --print-config: every key, commented; it parses, and the keys a site
    // must set are marked.
    let printed = std::process::Command::new(wechat_e2e::bin("wechat-gateway"))
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(printed.status.success());
    let printed = String::from_utf8(printed.stdout).unwrap();
    assert!(printed.parse::<toml::Table>().is_ok());
    for key in [
        "appid",
        "secret_file",
        "public_url",
        "upstream",
        "listen",
        "cookie_secret_file",
        "public_paths",
        "desktop_login",
        "scene_confirm",
        "shutdown_grace_secs",
        "access_log",
        "upgrade_sock",
        "state_dir",
        "logins_per_minute",
        "metrics_listen",
        "trusted_proxies",
    ] {
        assert!(
            printed.contains(&format!("# {key} = ")) || printed.contains(&format!("{key} = ")),
            "{key}"
        );
    }
    // appid, the secret, public_url, upstream, the cookie key.
    let required = printed
        .lines()
        .filter(|l| l.starts_with("# REQUIRED"))
        .count();
    assert_eq!(required, 5, "{printed}");

    // --check-config warns of an upstream that does not resolve, and passes.
    let dir = wechat_e2e::ScratchDir::new("check-upstream");
    let file = dir.join("gateway.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &format!(
            "upstream = \"{}\"",
            stack.app_url.trim_start_matches("http://")
        ),
        "upstream = \"app.invalid:3000\"",
    );
    std::fs::write(&file, text).unwrap();
    let checked = std::process::Command::new(wechat_e2e::bin("wechat-gateway"))
        .args(["--check-config", file.to_str().unwrap()])
        .env("WECHAT_APP_SECRET", &stack.app_secret)
        .env("WECHAT_COOKIE_SECRET", &stack.cookie_secret)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(0), "{said}");
    assert!(
        said.contains("warning: config [gateway] upstream") && said.contains("app.invalid"),
        "{said}"
    );
}

#[tokio::test]
async fn pages_carry_the_sites_name_and_logo_and_a_templates_dir_replaces_their_shell() {
    let mut stack = Stack::start_with(
        "",
        "site_name = \"<Shop & Co>\"\nlogo_url = \"/static/logo.png?a=1&b=\\\"2\\\"\"",
    )
    .await;
    let page = Browser::new(DESKTOP_UA)
        .get_with(&stack.url("/orders"), &[("Accept-Language", "en")])
        .await;
    assert_eq!(page.status, 401);
    assert!(page.body.contains("&lt;Shop &amp; Co&gt;"), "{}", page.body);
    assert!(!page.body.contains("<Shop"), "{}", page.body);
    assert!(
        page.body
            .contains("src=\"/static/logo.png?a=1&amp;b=&quot;2&quot;\""),
        "{}",
        page.body
    );

    // A page.html of the site's own, every variable escaped.
    let templates = wechat_e2e::ScratchDir::new("templates");
    std::fs::write(
        templates.join("page.html"),
        "<html lang=\"{{lang}}\"><body class=\"ours\"><img src=\"{{logo_url}}\"><b>{{site_name}}</b>\
         <h1>{{title}}</h1><p>{{message}}</p><i>{{detail}}</i>{{figure}}{{button}}</body></html>",
    )
    .unwrap();
    let templates_dir = format!("{:?}", templates.display().to_string());
    stack
        .restart_gateway_with(&[("WECHAT_GATEWAY__GATEWAY__TEMPLATES_DIR", &templates_dir)])
        .await;
    let page = Browser::new(DESKTOP_UA)
        .get_with(&stack.url("/orders?x=1"), &[("Accept-Language", "zh-CN")])
        .await;
    assert_eq!(page.status, 401);
    assert!(
        page.body
            .starts_with("<html lang=\"zh-CN\"><body class=\"ours\">"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("<b>&lt;Shop &amp; Co&gt;</b>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("<h1>请在微信中打开</h1>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("<i>") && page.body.contains("/orders?x=1</i>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("<svg") && page.body.contains("class=\"button\""),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("{{"),
        "every variable replaced: {}",
        page.body
    );

    // A templates_dir without page.html stops the start, naming the file.
    let empty = wechat_e2e::ScratchDir::new("no-templates");
    stack.set_gateway_env(
        "WECHAT_GATEWAY__GATEWAY__TEMPLATES_DIR",
        format!("{:?}", empty.display().to_string()),
    );
    // (The running gateway holds the state file.)
    stack.set_gateway_env("WECHAT_GATEWAY__STORE__URL", "memory");
    let mut broken = stack.spawn_gateway("broken-templates", &[]);
    assert_eq!(broken.wait_exit(Duration::from_secs(10)), Some(1));
    let said = broken.log_text();
    assert!(
        said.contains("templates_dir") && said.contains("page.html"),
        "{said}"
    );
}

/// The worker threads of a gateway process: Pingora names them after the
/// service ("wechat gateway").
fn worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == "wechat gateway")
        .count()
}

/// Waits until the gateway has exactly `n` threads named after its
/// service: a `spawn_blocking` thread of its runtime has the workers' name
/// and stays up to 10 s after its task, so a count above `n` may fall back;
/// one below `n` never may.
async fn worker_threads_settle_at(pid: u32, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let now = worker_threads(pid);
        assert!(now >= n, "{now} worker threads, fewer than {n}");
        if now == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{now} worker threads, not {n}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn threads_sets_the_worker_threads_and_a_bad_value_is_refused() {
    let mut stack = Stack::start().await;
    let default = std::thread::available_parallelism().map_or(1, |n| n.get());
    worker_threads_settle_at(stack.gateway().pid(), default).await;
    for threads in [1usize, 3] {
        stack
            .restart_gateway_with(&[("WECHAT_GATEWAY__GATEWAY__THREADS", &threads.to_string())])
            .await;
        worker_threads_settle_at(stack.gateway().pid(), threads).await;
        let cookie = login(&stack).await;
        assert!(passes(&stack, &cookie).await, "{threads} threads serve");
    }
    for (bad, says) in [
        ("0", "threads"),
        ("1025", "threads"),
        ("\"two\"", "invalid type"),
    ] {
        let checked = std::process::Command::new(wechat_e2e::bin("wechat-gateway"))
            .arg("--check-config")
            .arg(&stack.gateway_config)
            .env("WECHAT_GATEWAY__GATEWAY__THREADS", bad)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&checked.stdout).to_string()
            + &String::from_utf8_lossy(&checked.stderr);
        assert!(!checked.status.success(), "threads = {bad}: {said}");
        assert!(said.contains(says), "threads = {bad}: {said}");
    }
}
