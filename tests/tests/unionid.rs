//! One person across the account's apps: the same WeChat user logs in on
//! the phone (Official Account), on a desktop by qrconnect (website app)
//! and by scene QR scan, and the application sees one `X-WeChat-User`;
//! `require_unionid` refuses a login WeChat gives no unionid for.

use serde_json::json;
use wechat_e2e::{Browser, Stack, DESKTOP_UA, OPEN_APPID, WECHAT_UA};

/// The identity headers the application got on `/echo`.
async fn echo(stack: &Stack, browser: &mut Browser) -> serde_json::Value {
    let answer = browser.get(&stack.url("/echo")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()["headers"].clone()
}

async fn on_the_phone(stack: &Stack) -> Browser {
    let mut browser = Browser::new(WECHAT_UA);
    let back = stack.wechat_login(&mut browser, "/echo").await;
    assert_eq!(back.status, 302, "{}", back.body);
    browser
}

/// A desktop login by the website app's QR code (`connect/qrconnect`):
/// the gateway's answer to the callback.
async fn by_qrconnect(stack: &Stack, browser: &mut Browser) -> wechat_e2e::Answer {
    let start = browser
        .get(&stack.url("/_wechat/login?rd=%2Fecho&app=open"))
        .await;
    let location = start.location().to_owned();
    assert!(
        location.contains(&format!("appid={OPEN_APPID}")),
        "{location}"
    );
    stack.confirm_qrconnect(browser, &location).await
}

/// A desktop login by the Official Account's scene QR code, scanned by a
/// phone that follows the account: `qr/status`'s answer.
async fn by_scene_qr(stack: &Stack, browser: &mut Browser) -> wechat_e2e::Answer {
    let created = browser
        .get_with(
            &stack.url("/_wechat/qr/new?rd=%2Fecho"),
            &[("Accept", "application/json")],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let q = created.json();
    let body = json!({"ticket": q["ticket"], "subscribe": true});
    let scan = wechat_e2e::emulator_post(&stack.emulator_url, "scan", body).await;
    assert_eq!(scan["status"], 200, "{scan}");
    let scene = q["scene"].as_str().unwrap();
    browser
        .get(&stack.url(&format!("/_wechat/qr/status?scene={scene}")))
        .await
}

#[tokio::test]
async fn one_person_on_the_phone_by_qrconnect_and_by_scene_qr_is_one_user() {
    let stack = Stack::start_desktop("scene_qr").await;
    let person = stack.emulator("user").await;
    let unionid = person["unionid"].as_str().unwrap().to_owned();

    let mut phone = on_the_phone(&stack).await;
    let on_phone = echo(&stack, &mut phone).await;
    let mut desktop = Browser::new(DESKTOP_UA);
    assert_eq!(by_qrconnect(&stack, &mut desktop).await.status, 302);
    let on_desktop = echo(&stack, &mut desktop).await;
    let mut scanner = Browser::new(DESKTOP_UA);
    let confirmed = by_scene_qr(&stack, &mut scanner).await;
    assert_eq!(
        confirmed.json()["status"],
        "confirmed",
        "{}",
        confirmed.body
    );
    let by_scan = echo(&stack, &mut scanner).await;

    // Each app has its own openid for the person; the unionid is one.
    assert_ne!(on_phone["x-wechat-openid"], on_desktop["x-wechat-openid"]);
    assert_eq!(
        on_phone["x-wechat-openid"], by_scan["x-wechat-openid"],
        "both the account's"
    );
    for seen in [&on_phone, &on_desktop, &by_scan] {
        assert_eq!(seen["x-wechat-user"][0], unionid.as_str(), "{seen}");
        assert_eq!(seen["x-wechat-unionid"][0], unionid.as_str(), "{seen}");
    }
    // The scan asked WeChat who the scanner is, once.
    assert_eq!(stack.calls("user_info").await, 1);
}

#[tokio::test]
async fn require_unionid_refuses_a_login_without_one_with_a_page_on_the_binding() {
    let stack = Stack::start_desktop_with("scene_qr", false, "require_unionid = true").await;
    // Bound: the login passes.
    let mut phone = on_the_phone(&stack).await;
    assert!(echo(&stack, &mut phone).await["x-wechat-user"][0]
        .as_str()
        .is_some());

    // Not bound to an Open Platform account: no unionid anywhere.
    stack
        .control("settings", json!({ "open_platform_bound": false }))
        .await;
    stack
        .control("user", json!({ "key": "someone-else" }))
        .await;
    let mut refused = Browser::new(WECHAT_UA);
    let back = stack.wechat_login(&mut refused, "/echo").await;
    assert_eq!(back.status, 403, "{}", back.body);
    assert!(back.body.contains("open.weixin.qq.com"), "{}", back.body);
    assert!(!refused.cookies.contains_key("wechat_session"));
    let mut desktop = Browser::new(DESKTOP_UA);
    let answer = by_qrconnect(&stack, &mut desktop).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    let mut scanner = Browser::new(DESKTOP_UA);
    let answer = by_scene_qr(&stack, &mut scanner).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.json()["error"], "access_denied");
    assert!(!scanner.cookies.contains_key("wechat_session"));
    // Without require_unionid the same person gets in, keyed on the openid.
    let stack = Stack::start_desktop("scene_qr").await;
    stack
        .control("settings", json!({ "open_platform_bound": false }))
        .await;
    let mut phone = on_the_phone(&stack).await;
    let seen = echo(&stack, &mut phone).await;
    assert!(seen.get("x-wechat-unionid").is_none(), "{seen}");
    assert_eq!(seen["x-wechat-user"], seen["x-wechat-openid"]);
}
