//! The single-page-app hand-off (seed 003): the front end's own page is the
//! redirect_uri; it gets WeChat's authorize URL from
//! `GET /_wechat/authorize-url?rd=` and hands the code and state it finds in
//! `location` to `POST /_wechat/exchange`. Over plain HTTP, then through
//! `examples/spa/index.html` in headless Chromium.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use wechat_e2e::{Browser, Stack, WECHAT_UA};

/// The front end's first steps: the authorize URL (and state cookie), then
/// WeChat's redirect back to the page; the code and state it carries.
async fn to_the_page(stack: &Stack, browser: &mut Browser) -> (String, String) {
    let answer = browser
        .get(&stack.url("/_wechat/authorize-url?rd=%2Fspa%2F"))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let url = answer.json()["url"].as_str().unwrap().to_owned();
    let redirect_uri = wechat_e2e::query_param(&url, "redirect_uri");
    assert_eq!(
        redirect_uri,
        stack.url("/spa/"),
        "the page is its own redirect_uri"
    );
    let back = browser.get(&url).await;
    assert_eq!(back.status, 302, "{}", back.body);
    let page = back.location();
    assert_eq!(url::Url::parse(page).unwrap().path(), "/spa/");
    (
        wechat_e2e::query_param(page, "code"),
        wechat_e2e::query_param(page, "state"),
    )
}

#[tokio::test]
async fn a_front_end_hands_over_code_and_state_and_gets_the_identity_and_session() {
    let stack = Stack::start().await;
    let user = stack.emulator("user").await;
    let mut browser = Browser::new(WECHAT_UA);
    let (code, state) = to_the_page(&stack, &mut browser).await;
    let answer = browser
        .post_json(
            &stack.url("/_wechat/exchange"),
            &json!({"code": code, "state": state}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["openid"], user["openid"]);
    assert!(browser.cookies.contains_key("wechat_session"));
    let echo = browser.get(&stack.url("/echo")).await;
    assert_eq!(echo.status, 200);
    assert_eq!(echo.json()["headers"]["x-wechat-openid"][0], user["openid"]);

    // The page posted twice (a reload): the same login, no second exchange.
    let again = browser
        .post_json(
            &stack.url("/_wechat/exchange"),
            &json!({"code": code, "state": state}),
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["openid"], user["openid"]);
    assert_eq!(stack.calls("access_token").await, 1);
}

#[tokio::test]
async fn concurrent_hand_offs_of_one_code_exchange_it_once() {
    let stack = Arc::new(Stack::start().await);
    let mut browser = Browser::new(WECHAT_UA);
    let (code, state) = to_the_page(&stack, &mut browser).await;
    let cookie = browser.cookie_header();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (stack, cookie, body) = (
            stack.clone(),
            cookie.clone(),
            json!({"code": code, "state": state}),
        );
        tasks.push(tokio::spawn(async move {
            let mut b = Browser::new(WECHAT_UA);
            b.cookies.extend(
                cookie
                    .split("; ")
                    .filter_map(|c| c.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned())),
            );
            b.post_json(&stack.url("/_wechat/exchange"), &body)
                .await
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(stack.calls("access_token").await, 1);
}

#[tokio::test]
async fn bad_hand_offs_get_json_errors_with_a_login_url() {
    let stack = Stack::start().await;
    let mut browser = Browser::new(WECHAT_UA);
    let (code, state) = to_the_page(&stack, &mut browser).await;

    // Another browser, without the state cookie.
    let mut other = Browser::new(WECHAT_UA);
    let stolen = other
        .post_json(
            &stack.url("/_wechat/exchange"),
            &json!({"code": code, "state": state}),
        )
        .await;
    assert_eq!(stolen.status, 400, "{}", stolen.body);
    assert_eq!(stolen.json()["error"], "invalid_request");
    assert!(stolen.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("state"));
    assert!(stolen.json()["login_url"]
        .as_str()
        .unwrap()
        .contains("/_wechat/login"));

    // Not JSON, or without the fields.
    for body in [json!("code=1"), json!({"code": "x"}), json!([1, 2])] {
        let bad = browser
            .post_json(&stack.url("/_wechat/exchange"), &body)
            .await;
        assert_eq!(bad.status, 400, "{body}: {}", bad.body);
        assert_eq!(bad.json()["error"], "invalid_request");
    }
    let get = browser.get(&stack.url("/_wechat/exchange")).await;
    assert_eq!(get.status, 405);

    // WeChat refuses the code: the errcode and a way to log in again.
    stack
        .control(
            "faults",
            json!({"endpoint": "access_token", "errcode": 40029}),
        )
        .await;
    let refused = browser
        .post_json(
            &stack.url("/_wechat/exchange"),
            &json!({"code": code, "state": state}),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    let body = refused.json();
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["errcode"], 40029, "{body}");
    assert!(
        body["login_url"].as_str().unwrap().contains("rd=%2Fspa%2F"),
        "{body}"
    );
}

#[tokio::test]
async fn headless_chromium_logs_in_through_the_example_single_page_app() {
    let stack = Stack::start().await;
    let user = stack.emulator("user").await;
    let openid = user["openid"].as_str().unwrap().to_owned();
    let (_driver, client) = wechat_e2e::chromium(WECHAT_UA).await;
    client.goto(&stack.url("/spa/")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let button = loop {
        if let Ok(b) = client.find(fantoccini::Locator::Id("login")).await {
            if b.is_displayed().await.unwrap_or(false) {
                break b;
            }
        }
        assert!(Instant::now() < deadline, "the login button never showed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    button.click().await.unwrap();
    loop {
        let source = client.source().await.unwrap_or_default();
        if source.contains(&openid) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed the identity:\n{source}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = client.current_url().await.unwrap();
    assert_eq!(url.path(), "/spa/");
    assert_eq!(
        url.query(),
        None,
        "the code does not stay in the address bar"
    );
    let shots = wechat_e2e::target_dir().join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    std::fs::write(
        shots.join("spa-logged-in.png"),
        client.screenshot().await.unwrap(),
    )
    .unwrap();
    // The session cookie the hand-off set works for the application too.
    client.goto(&stack.url("/echo")).await.unwrap();
    assert!(client.source().await.unwrap().contains(&openid));
    client.close().await.unwrap();
}

#[tokio::test]
async fn the_demo_page_configures_the_js_sdk_with_the_gates_signature_in_headless_chromium() {
    let stack = Stack::start().await;
    let (_driver, client) = wechat_e2e::chromium(WECHAT_UA).await;
    // A WeChat browser: the login runs through the redirects, then the
    // page calls jssdk-config and wx.config (checked by the emulator).
    client.goto(&stack.url("/orders?id=7#tab")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let shown = match client.find(fantoccini::Locator::Id("jssdk")).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if shown == "JS-SDK: config:ok" {
            break;
        }
        assert!(
            Instant::now() < deadline && !shown.contains("invalid"),
            "wx.config: {shown:?}\n{}",
            client.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stack.calls("ticket").await, 1);
    client.close().await.unwrap();
}
