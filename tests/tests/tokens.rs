//! The basic-support token as the account's other backends see it: the
//! gate's `stable_token` and theirs never invalidate each other, and a
//! site's own token service (`token_source = "url"` or `"redis"`) is used
//! instead of WeChat, with no token call at all.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::json;
use wechat_e2e::{free_port, Browser, Proc, Stack, TestConfig, WECHAT_UA};

const FANS: &str = "[[route]]\nprefix = \"/echo/fans/\"\npolicy = \"followers\"\n";

/// A gateway of its own (own port and state file) on the stack's emulator
/// and application, with `wechat_extra` lines in `[wechat]`.
async fn another_gateway(stack: &Stack, label: &str, wechat_extra: &str) -> (Proc, String) {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let path = stack.dir.join(format!("{label}.toml"));
    TestConfig::new(&stack.appid, &stack.emulator_url, &url)
        .set("gateway.listen", format!("127.0.0.1:{port}"))
        .set(
            "gateway.upstream",
            stack.app_url.trim_start_matches("http://"),
        )
        .set("store.state_dir", format!("{label}-state"))
        .merge("wechat", wechat_extra)
        .merge("gateway", FANS)
        .write(&path);
    let gateway = Proc::start(
        &stack.dir,
        label,
        "wechat-gateway",
        &["--config", path.to_str().unwrap()],
        &[
            ("WECHAT_APP_SECRET", stack.app_secret.as_str()),
            ("WECHAT_COOKIE_SECRET", &wechat_e2e::random(40)),
            ("RUST_LOG", "info"),
        ],
    );
    wechat_e2e::wait_ready(&format!("{url}/_wechat/healthz")).await;
    (gateway, url)
}

/// A new person on the phone, who follows the account, logs in on the
/// gateway at `base` and opens the followers-only page: its status.
async fn a_follower_opens_the_fans_page(stack: &Stack, base: &str) -> u16 {
    stack
        .control("user", json!({ "key": wechat_e2e::random(12) }))
        .await;
    stack.control("user", json!({ "subscribed": true })).await;
    let mut browser = Browser::new(WECHAT_UA);
    let first = browser.get(&format!("{base}/echo/fans/")).await;
    assert_eq!(first.status, 302, "{}", first.body);
    let consent = browser.get(first.location()).await;
    let back = browser.get(consent.location()).await;
    assert_eq!(back.status, 302, "{}", back.body);
    browser.follow(&format!("{base}/echo/fans/x")).await.status
}

/// The account's other backend: `cgi-bin/token` (plain).
async fn plain_token(stack: &Stack) -> String {
    wechat_e2e::get_json(&format!(
        "{}/cgi-bin/token?grant_type=client_credential&appid={}&secret={}",
        stack.emulator_url, stack.appid, stack.app_secret
    ))
    .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `cgi-bin/stable_token` as another backend calls it.
async fn stable_token(stack: &Stack, force_refresh: bool) -> serde_json::Value {
    let text = reqwest::Client::new()
        .post(format!("{}/cgi-bin/stable_token", stack.emulator_url))
        .body(
            json!({"grant_type": "client_credential", "appid": stack.appid,
                   "secret": stack.app_secret, "force_refresh": force_refresh})
            .to_string(),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `cgi-bin/user/info` with `token`: WeChat's errcode (0: accepted).
async fn user_info_errcode(stack: &Stack, token: &str) -> i64 {
    let openid = stack.emulator("user").await["openid"]
        .as_str()
        .unwrap()
        .to_owned();
    wechat_e2e::get_json(&format!(
        "{}/cgi-bin/user/info?access_token={token}&openid={openid}&lang=zh_CN",
        stack.emulator_url
    ))
    .await["errcode"]
        .as_i64()
        .unwrap_or(0)
}

#[tokio::test]
async fn two_gateways_and_another_backend_never_invalidate_each_others_tokens() {
    let stack = Stack::start_with("", FANS).await;
    // cgi-bin/token ends the earlier plain tokens at once (WeChat: 5 min).
    stack
        .control("settings", json!({ "plain_token_grace_secs": 0 }))
        .await;
    assert_eq!(
        a_follower_opens_the_fans_page(&stack, &stack.gateway_url).await,
        200
    );
    let (_b, b_url) = another_gateway(&stack, "gateway-b", "").await;
    assert_eq!(a_follower_opens_the_fans_page(&stack, &b_url).await, 200);
    assert_eq!(stack.calls("stable_token").await, 2, "one each");

    // The other backend: plain tokens invalidate each other...
    let first = plain_token(&stack).await;
    let second = plain_token(&stack).await;
    assert_eq!(user_info_errcode(&stack, &first).await, 40001);
    assert_eq!(user_info_errcode(&stack, &second).await, 0);
    // ...but never the gates' stable token, which it shares.
    let shared = stable_token(&stack, false).await;
    assert_eq!(
        user_info_errcode(&stack, shared["access_token"].as_str().unwrap()).await,
        0
    );
    let checks = stack.calls("user_info").await;
    assert_eq!(
        a_follower_opens_the_fans_page(&stack, &stack.gateway_url).await,
        200
    );
    assert_eq!(a_follower_opens_the_fans_page(&stack, &b_url).await, 200);
    assert_eq!(
        stack.calls("user_info").await,
        checks + 2,
        "no 40001, no retry"
    );
    assert_eq!(
        stack.calls("stable_token").await,
        3,
        "no new token for the gates"
    );

    // The other backend forces a new stable token: the gates' is then
    // refused once, and they take the new one (normal mode: no second force).
    let forced = stable_token(&stack, true).await;
    assert!(forced["access_token"].is_string(), "{forced}");
    assert_eq!(
        a_follower_opens_the_fans_page(&stack, &stack.gateway_url).await,
        200
    );
    assert_eq!(a_follower_opens_the_fans_page(&stack, &b_url).await, 200);
    let log = stack.gateway_log();
    assert!(!log.contains(forced["access_token"].as_str().unwrap()));
    // Forced refreshes are limited: another within 30 s is refused.
    assert_eq!(stable_token(&stack, true).await["errcode"], 45011);
}

/// A token service answering `{access_token, expires_in}` with `token` to
/// every request on a loopback port, for at most `limit` requests; its URL.
fn token_service(token: String, limit: usize) -> (String, std::thread::JoinHandle<usize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    listener.set_nonblocking(false).unwrap();
    let served = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut served = 0;
        for stream in listener.incoming().take(limit) {
            let Ok(mut stream) = stream else { break };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let body = json!({"access_token": token, "expires_in": 7000}).to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            served += 1;
            if Instant::now() > deadline {
                break;
            }
        }
        served
    });
    (url, served)
}

#[tokio::test]
async fn a_sites_own_token_service_is_used_with_no_token_call_to_wechat() {
    let stack = Stack::start_with("", FANS).await;
    // The site's token service holds a token it got from WeChat itself.
    let token = stable_token(&stack, false).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (url, served) = token_service(token.clone(), 1);
    let (gateway, base) = another_gateway(
        &stack,
        "gateway-url",
        &format!("token_source = \"url\"\ntoken_url = {url:?}"),
    )
    .await;
    let before = (
        stack.calls("stable_token").await,
        stack.calls("token").await,
    );
    for _ in 0..3 {
        assert_eq!(a_follower_opens_the_fans_page(&stack, &base).await, 200);
    }
    assert_eq!(
        (
            stack.calls("stable_token").await,
            stack.calls("token").await
        ),
        before,
        "no token call to WeChat"
    );
    assert!(!gateway.log_text().contains(&token));
    drop(gateway);
    assert_eq!(served.join().unwrap(), 1, "read once, then kept");

    // token_source = "redis": the value of a key, its end the key's TTL.
    let redis_port = free_port();
    let _redis = wechat_e2e::start_redis(&stack.dir, "redis", redis_port).await;
    let set = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis_port.to_string(),
            "SET",
            "site:wechat:token",
            &token,
            "EX",
            "7000",
        ])
        .output()
        .unwrap();
    assert!(set.status.success());
    let (_gateway, base) = another_gateway(
        &stack,
        "gateway-redis",
        &format!(
            "token_source = \"redis\"\ntoken_redis_url = \"redis://127.0.0.1:{redis_port}/\"\ntoken_redis_key = \"site:wechat:token\""
        ),
    )
    .await;
    assert_eq!(a_follower_opens_the_fans_page(&stack, &base).await, 200);
    assert_eq!(
        (
            stack.calls("stable_token").await,
            stack.calls("token").await
        ),
        before
    );
}
