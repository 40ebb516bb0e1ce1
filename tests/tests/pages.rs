//! Every failure page as a person sees it: rendered by Chromium in Chinese
//! and in English, each saved as a screenshot (`target/…/screenshots/`),
//! its words checked in the rendered page.

use serde_json::json;
use wechat_e2e::{Stack, WECHAT_UA};

/// Loads `url` in the browser; its rendered text once it holds `words`.
async fn shows(client: &fantoccini::Client, url: &str, words: &str) -> String {
    client.goto(url).await.unwrap();
    wechat_e2e::rendered_text(client, words).await
}

#[tokio::test]
async fn every_failure_page_renders_in_chinese_and_english() {
    let mut stack = Stack::start().await;
    let (_driver, client) = wechat_e2e::chromium(WECHAT_UA).await;
    let shots = wechat_e2e::target_dir().join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    // Logged in (the emulator consents at once), for the pages behind the gate.
    shows(&client, &stack.url("/echo"), "x-wechat-openid").await;
    for (lang, words) in [
        (
            "zh",
            [
                "登录链接无效或已过期",
                "微信暂时不可用",
                "网站暂时无法访问",
                "页面不存在",
            ],
        ),
        (
            "en",
            [
                "This login link is invalid or has expired",
                "WeChat is unavailable",
                "The site is not answering",
                "Not found",
            ],
        ),
    ] {
        stack
            .gateway_env
            .retain(|(k, _)| k != "WECHAT_GATEWAY__GATEWAY__LANGUAGE");
        stack
            .gateway_env
            .push(("WECHAT_GATEWAY__GATEWAY__LANGUAGE".into(), lang.into()));
        stack.restart_gateway().await;
        let pages = [
            (
                "bad-callback",
                stack.url("/_wechat/callback?code=x&state=a&state=b"),
            ),
            ("wechat-unavailable", stack.url("/_wechat/login?rd=%2Fecho")),
            ("upstream-down", stack.url("/echo")),
            ("not-found", stack.url("/_wechat/nope")),
        ];
        for ((name, url), words) in pages.iter().zip(words) {
            match *name {
                "wechat-unavailable" => {
                    stack
                        .control(
                            "faults",
                            json!({"endpoint": "access_token", "http_status": 503, "count": 100}),
                        )
                        .await
                }
                "upstream-down" => stack.app_proc.stop(),
                _ => {}
            }
            shows(&client, url, words).await;
            std::fs::write(
                shots.join(format!("page-{name}-{lang}.png")),
                client.screenshot().await.unwrap(),
            )
            .unwrap();
            if *name == "wechat-unavailable" {
                stack.clear_faults().await;
            }
        }
        // The application back for the next language.
        let app_port: u16 = stack.app_url.rsplit(':').next().unwrap().parse().unwrap();
        stack.app_proc = wechat_e2e::Proc::start_demo_app(&stack.dir, app_port);
        wechat_e2e::wait_ready(&format!("{}/echo", stack.app_url)).await;
    }
    let _ = client.close().await;
}
