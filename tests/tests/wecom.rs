//! WeCom (企业微信): a company's members log in through its self-built
//! app, in WeCom's own browser (web authorization, `snsapi_base` or
//! `snsapi_privateinfo`) and on a desktop (WeCom's web QR login), against
//! the emulator playing WeCom; the application gets `X-WeCom-*` headers
//! and nothing a client sent under those names.

use serde_json::json;
use wechat_e2e::{
    random, rendered_text, wecom_callback, Answer, Browser, Stack, DESKTOP_UA, WECHAT_UA,
    WECOM_CORPID, WECOM_UA,
};

/// The identity headers the application got on `/echo`, with extra request headers.
async fn echo(stack: &Stack, browser: &mut Browser, extra: &[(&str, &str)]) -> serde_json::Value {
    let answer = browser.get_with(&stack.url("/echo"), extra).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()["headers"].clone()
}

async fn calls(stack: &Stack, endpoint: &str) -> u64 {
    stack.calls(endpoint).await
}

async fn member(stack: &Stack, body: serde_json::Value) {
    stack.control("wecom/member", body).await;
}

/// A login in WeCom's browser (or by the web QR login elsewhere) from
/// `/echo`: the gateway's answer to the callback.
async fn in_wecom(stack: &Stack, browser: &mut Browser) -> Answer {
    let callback = wecom_callback(browser, &stack.url("/echo"), &stack.emulator_url).await;
    assert!(
        callback.starts_with(&stack.url("/_wechat/callback?")),
        "{callback}"
    );
    browser.get(&callback).await
}

fn corp_secret() -> String {
    format!("corpsecret{}", random(20))
}

#[tokio::test]
async fn a_member_logs_in_silently_in_wecom_and_the_app_gets_the_wecom_headers() {
    let secret = corp_secret();
    let stack = Stack::start_wecom(&secret, "", "").await;
    let mut browser = Browser::new(WECOM_UA);
    let back = in_wecom(&stack, &mut browser).await;
    assert_eq!(back.status, 302, "{}", back.body);
    assert_eq!(back.location(), "/echo");
    // A client's own X-WeCom-* headers, in any spelling, never reach the app.
    let headers = echo(
        &stack,
        &mut browser,
        &[
            ("X-WeCom-UserID", "boss"),
            ("x_wecom_userid", "boss"),
            ("X-WECOM-DEPARTMENT", "1"),
        ],
    )
    .await;
    assert_eq!(headers["x-wecom-userid"], json!(["zhangsan"]));
    assert_eq!(headers["x-wecom-corpid"], json!([WECOM_CORPID]));
    assert_eq!(headers["x-wecom-name"], json!(["%E5%BC%A0%E4%B8%89"]));
    assert_eq!(headers["x-wecom-department"], json!(["1,2"]));
    assert!(headers.get("x_wecom_userid").is_none(), "{headers}");
    assert!(headers.get("x-wechat-openid").is_none(), "{headers}");
    assert!(headers.get("x-wecom-openid").is_none(), "{headers}");
    // One corp token for the login (user/get used it too), no user_ticket.
    assert_eq!(calls(&stack, "wecom_gettoken").await, 1);
    assert_eq!(calls(&stack, "wecom_getuserinfo").await, 1);
    assert_eq!(calls(&stack, "wecom_getuserdetail").await, 0);
    assert_eq!(
        stack.emulator("seen").await["wecom_authorize_scope"],
        "snsapi_base"
    );
    // A second member's login reuses the token.
    member(&stack, json!({"userid": "lisi"})).await;
    let mut other = Browser::new(WECOM_UA);
    assert_eq!(in_wecom(&stack, &mut other).await.status, 302);
    assert_eq!(
        echo(&stack, &mut other, &[]).await["x-wecom-userid"],
        json!(["lisi"])
    );
    assert_eq!(calls(&stack, "wecom_gettoken").await, 1);
    wechat_e2e::assert_no_secret_in_logs(&stack.dir, &[secret]);
}

#[tokio::test]
async fn snsapi_privateinfo_reads_the_members_details_once_and_keeps_no_ticket() {
    let secret = corp_secret();
    let stack = Stack::start_wecom(&secret, "scope = \"snsapi_privateinfo\"", "").await;
    let mut browser = Browser::new(WECOM_UA);
    let back = in_wecom(&stack, &mut browser).await;
    assert_eq!(back.status, 302, "{}", back.body);
    assert_eq!(
        stack.emulator("seen").await["wecom_authorize_scope"],
        "snsapi_privateinfo"
    );
    assert_eq!(calls(&stack, "wecom_getuserdetail").await, 1);
    let me = browser.get(&stack.url("/_wechat/userinfo")).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["scope"], "snsapi_privateinfo");
    assert_eq!(
        me.json()["headimgurl"],
        "https://wework.qpic.cn/emulator/zhangsan/0"
    );
    assert_eq!(
        me.json()["wecom"],
        json!({"corpid": WECOM_CORPID, "userid": "zhangsan", "name": "张三", "department": [1, 2]})
    );
    // The user_ticket, the code and the token are in no answer of the gate.
    let issued = wechat_e2e::issued_secrets(&stack.emulator_url);
    assert!(!issued.is_empty());
    for answer in browser
        .seen
        .iter()
        .filter(|a| a.url.starts_with(&stack.gateway_url))
    {
        let text = answer.all_text();
        for s in issued.iter().chain([&secret]) {
            assert!(!text.contains(s.as_str()), "{} shows a secret", answer.url);
        }
    }
    // Another browser can't use this member's callback: a replay of it with
    // no state cookie is refused.
    let callback = browser
        .seen
        .iter()
        .find(|a| a.url.contains("/_wechat/callback?"))
        .unwrap()
        .url
        .clone();
    let replay = Browser::new(WECOM_UA).get(&callback).await;
    assert_eq!(replay.status, 400, "{}", replay.body);
}

#[tokio::test]
async fn a_desktop_logs_in_by_wecom_qr_and_a_duplicate_callback_is_one_exchange() {
    let secret = corp_secret();
    let stack = Stack::start_wecom(&secret, "", "").await;
    let mut browser = Browser::new(DESKTOP_UA);
    let back = in_wecom(&stack, &mut browser).await;
    assert_eq!(back.status, 302, "{}", back.body);
    assert_eq!(
        echo(&stack, &mut browser, &[]).await["x-wecom-userid"],
        json!(["zhangsan"])
    );
    assert_eq!(calls(&stack, "wecom_getuserinfo").await, 1);

    // The same callback twice at once (a double click, a proxy's retry):
    // one exchange, both browsers' copies get the session.
    let mut second = Browser::new(DESKTOP_UA);
    let first = second.get(&stack.url("/echo")).await;
    let login = first.location().to_owned();
    let callback = second.post_form(&login, &[]).await.location().to_owned();
    let cookie = second.cookie_header();
    let (a, b) = tokio::join!(
        async {
            Browser::new(DESKTOP_UA)
                .get_with(&callback, &[("Cookie", &cookie)])
                .await
        },
        async {
            Browser::new(DESKTOP_UA)
                .get_with(&callback, &[("Cookie", &cookie)])
                .await
        }
    );
    assert_eq!((a.status, b.status), (302, 302), "{} / {}", a.body, b.body);
    assert!(a
        .header("set-cookie")
        .is_some_and(|c| c.contains("wechat_session=")));
    assert_eq!(calls(&stack, "wecom_getuserinfo").await, 2);
    wechat_e2e::assert_no_secret_in_logs(&stack.dir, &[secret]);
}

#[tokio::test]
async fn non_members_are_refused_unless_allowed_and_members_outside_the_visible_range_too() {
    let secret = corp_secret();
    let stack = Stack::start_wecom(&secret, "", "").await;
    member(&stack, json!({"non_member": true})).await;
    let mut browser = Browser::new(WECOM_UA);
    let refused = in_wecom(&stack, &mut browser).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("此网站仅限企业成员"),
        "{}",
        refused.body
    );
    assert!(!browser.cookies.contains_key("wechat_session"));

    // 王五 is a member outside the app's visible range: WeCom says 60011.
    member(&stack, json!({"userid": "wangwu"})).await;
    let mut hidden = Browser::new(WECOM_UA);
    let page = in_wecom(&stack, &mut hidden).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(
        page.body.contains("60011") && page.body.contains("可见范围"),
        "{}",
        page.body
    );
    assert!(!hidden.cookies.contains_key("wechat_session"));

    // allow_non_members: the non-member gets in, with X-WeCom-OpenID.
    let open = Stack::start_wecom(&corp_secret(), "allow_non_members = true", "").await;
    member(&open, json!({"non_member": true})).await;
    let mut guest = Browser::new(WECOM_UA);
    assert_eq!(in_wecom(&open, &mut guest).await.status, 302);
    let headers = echo(&open, &mut guest, &[]).await;
    let who = open.emulator("wecom/member").await;
    assert_eq!(headers["x-wecom-openid"], json!([who["non_member_openid"]]));
    assert!(headers.get("x-wecom-userid").is_none(), "{headers}");
}

#[tokio::test]
async fn wecom_errcodes_get_their_pages_and_a_stale_corp_token_one_refresh() {
    let secret = corp_secret();
    let stack = Stack::start_wecom(&secret, "", "").await;
    let fault = |endpoint: &str, errcode: i64| json!({"endpoint": endpoint, "errcode": errcode});

    // The corp token WeCom no longer accepts: one new token, the login goes on.
    let mut first = Browser::new(WECOM_UA);
    assert_eq!(in_wecom(&stack, &mut first).await.status, 302);
    assert_eq!(calls(&stack, "wecom_gettoken").await, 1);
    stack
        .control("faults", fault("wecom_getuserinfo", 42001))
        .await;
    let mut again = Browser::new(WECOM_UA);
    let back = in_wecom(&stack, &mut again).await;
    assert_eq!(back.status, 302, "{}", back.body);
    assert_eq!(calls(&stack, "wecom_gettoken").await, 2);

    // An invalid code: the login-expired page with a way to start again.
    stack
        .control("faults", fault("wecom_getuserinfo", 40029))
        .await;
    let expired = in_wecom(&stack, &mut Browser::new(WECOM_UA)).await;
    assert_eq!(expired.status, 400, "{}", expired.body);
    assert!(expired.body.contains("/_wechat/login"), "{}", expired.body);

    // WeCom's frequency limit: 503 with Retry-After.
    stack
        .control("faults", fault("wecom_getuserinfo", 45009))
        .await;
    let busy = in_wecom(&stack, &mut Browser::new(WECOM_UA)).await;
    assert_eq!(busy.status, 503, "{}", busy.body);
    assert!(busy.header("retry-after").is_some());

    // A wrong corp secret: the site's misconfiguration, named by its errcode.
    let wrong = Stack::start_wecom(&secret, "", "").await;
    let mut wrong = wrong;
    let text = std::fs::read_to_string(&wrong.gateway_config)
        .unwrap()
        .replace(&secret, "not-the-secret");
    std::fs::write(&wrong.gateway_config, text).unwrap();
    wrong.restart_gateway().await;
    let misconfigured = in_wecom(&wrong, &mut Browser::new(WECOM_UA)).await;
    assert_eq!(misconfigured.status, 500, "{}", misconfigured.body);
    assert!(
        misconfigured.body.contains("40001"),
        "{}",
        misconfigured.body
    );
    assert!(
        wrong.gateway_log().contains("check the secret"),
        "the log says what to fix"
    );
}

#[tokio::test]
async fn a_wecom_only_site_logs_every_browser_in_through_wecom() {
    let secret = corp_secret();
    let mut stack = Stack::start_wecom(&secret, "", "").await;
    // The same site without [wechat]: WeCom is its only login.
    let text = std::fs::read_to_string(&stack.gateway_config).unwrap();
    let mut config: toml::Table = text.parse().unwrap();
    config.remove("wechat");
    std::fs::write(&stack.gateway_config, toml::to_string(&config).unwrap()).unwrap();
    stack.restart_gateway().await;

    // WeChat's browser is not WeCom's, and a phone can't scan its own
    // screen: a page to open the link in WeCom, and WeCom's web login
    // behind its button.
    let mut wechat = Browser::new(WECHAT_UA);
    let first = wechat.get(&stack.url("/echo")).await;
    assert_eq!(first.status, 401, "{}", first.body);
    assert!(first.body.contains("请在企业微信中打开"), "{}", first.body);
    assert!(first.body.contains(&stack.url("/echo")), "{}", first.body);
    let start = wechat
        .get(&stack.url("/_wechat/login?rd=%2Fecho&app=wecom"))
        .await;
    assert!(
        start.location().contains("/wwlogin/sso/login?"),
        "{}",
        start.location()
    );
    assert!(
        first
            .body
            .contains("/_wechat/login?rd=%2Fecho&amp;app=wecom"),
        "{}",
        first.body
    );
    // A script is told where to log in: the WeCom login.
    let script = Browser::new(DESKTOP_UA)
        .get_with(&stack.url("/echo"), &[("Accept", "application/json")])
        .await;
    assert_eq!(script.status, 401);
    let login_url = script.json()["login_url"].as_str().unwrap().to_owned();
    assert!(login_url.contains("app=wecom"), "{login_url}");
    let mut desktop = Browser::new(DESKTOP_UA);
    let start = desktop.get(&login_url).await;
    assert!(
        start.location().contains("/wwlogin/sso/login?"),
        "{}",
        start.location()
    );
    // And WeCom's browser logs in as before.
    let mut phone = Browser::new(WECOM_UA);
    assert_eq!(in_wecom(&stack, &mut phone).await.status, 302);
    assert_eq!(
        echo(&stack, &mut phone, &[]).await["x-wecom-userid"],
        json!(["zhangsan"])
    );
}

#[tokio::test]
async fn a_route_lets_in_wecom_members_by_userid_or_department_only() {
    let secret = corp_secret();
    let routes = "[[route]]\nprefix = \"/echo/ops/\"\npolicy = \"allow\"\n\
                  wecom_userids = [\"lisi\"]\nwecom_departments = [1]\n";
    let stack = Stack::start_wecom(&secret, "", routes).await;
    member(&stack, json!({"hidden": []})).await;
    for (userid, allowed) in [("zhangsan", true), ("lisi", true), ("wangwu", false)] {
        member(&stack, json!({"userid": userid})).await;
        let mut browser = Browser::new(WECOM_UA);
        assert_eq!(in_wecom(&stack, &mut browser).await.status, 302, "{userid}");
        let ops = browser.get(&stack.url("/echo/ops/deploy")).await;
        if allowed {
            assert_eq!(ops.status, 200, "{userid}: {}", ops.body);
            assert_eq!(ops.json()["headers"]["x-wecom-userid"], json!([userid]));
        } else {
            assert_eq!(ops.status, 403, "{userid}: {}", ops.body);
            assert!(
                ops.body.contains(userid),
                "the page names who is refused: {}",
                ops.body
            );
        }
        // Elsewhere every member is in.
        assert_eq!(
            browser.get(&stack.url("/echo")).await.status,
            200,
            "{userid}"
        );
    }
}

#[tokio::test]
async fn a_desktop_chromium_logs_in_by_wecom_qr_and_sees_pages_in_english_too() {
    let secret = corp_secret();
    let stack = Stack::start_wecom(&secret, "", "").await;
    let (_driver, client) = wechat_e2e::chromium(DESKTOP_UA).await;
    // The gate sends the page to WeCom's web login; the phone scans it.
    client.goto(&stack.url("/echo")).await.unwrap();
    rendered_text(&client, "企业微信扫码登录").await;
    client
        .find(fantoccini::Locator::Css("#scan"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Back through the callback to the page first asked for.
    let text = rendered_text(&client, "x-wecom-userid").await;
    assert!(text.contains("zhangsan"), "{text}");
    assert!(client
        .current_url()
        .await
        .unwrap()
        .as_str()
        .ends_with("/echo"));
    client.close().await.unwrap();

    // A non-member's page, in the browser's language.
    member(&stack, json!({"non_member": true})).await;
    let mut guest = Browser::new(WECOM_UA);
    let first = guest.get(&stack.url("/echo")).await;
    let consent = guest.get(first.location()).await;
    let refused = guest
        .get_with(consent.location(), &[("Accept-Language", "en-US,en;q=0.9")])
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused
            .body
            .contains("This site is for the company's members"),
        "{}",
        refused.body
    );
}
