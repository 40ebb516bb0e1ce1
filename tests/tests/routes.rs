//! Routes and policies through the gateway over real HTTP: a public page,
//! an allow-listed admin area whose list file is changed and reloaded
//! (SIGHUP) while the gateway runs, a route that needs the user's profile,
//! CORS preflights to the application without a session, and WeChat's
//! domain verification file served without one.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use wechat_e2e::{raw_get, Browser, ScratchDir, Stack, DESKTOP_UA, WECHAT_UA};

/// A stack whose gateway has three routes with different policies; the
/// admin list is `allow_file`.
async fn routed_stack(allow_file: &Path) -> Stack {
    Stack::start_with(
        "scope = \"snsapi_base\"",
        &format!(
            r#"verify_files = {{ "MP_verify_Ab12Cd34.txt" = "Ab12Cd34" }}
[[route]]
exact = "/echo/about"
policy = "public"
[[route]]
prefix = "/echo/admin/"
policy = "allow"
allow_file = {:?}
[[route]]
prefix = "/echo/profile/"
policy = "userinfo"
[[route]]
prefix = "/echo/strict/"
preflight = "login"
"#,
            allow_file.display().to_string()
        ),
    )
    .await
}

/// The emulator's phone now belongs to the person `key`: their openid.
async fn person(stack: &Stack, key: &str) -> String {
    stack.control("user", json!({ "key": key })).await;
    stack.emulator("user").await["openid"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn logged_in(stack: &Stack, key: &str) -> (Browser, String) {
    let openid = person(stack, key).await;
    let mut browser = Browser::new(WECHAT_UA);
    let back = stack.wechat_login(&mut browser, "/echo").await;
    assert_eq!(back.status, 302, "{}", back.body);
    (browser, openid)
}

async fn reload(stack: &Stack) {
    let before = stack
        .gateway_log()
        .matches("configuration reloaded")
        .count();
    stack.gateway().signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stack
        .gateway_log()
        .matches("configuration reloaded")
        .count()
        == before
    {
        assert!(Instant::now() < deadline, "{}", stack.gateway_log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_allow_list_lets_in_its_users_only_and_is_reloaded_while_running() {
    let scratch = ScratchDir::new("routes");
    let list = scratch.join("admins.txt");
    std::fs::write(&list, "# nobody yet\n").unwrap();
    let stack = routed_stack(&list).await;
    let (mut alice, alice_openid) = logged_in(&stack, "alice").await;

    // Logged in, not listed: 403 naming the user, with a logout link.
    let refused = alice.get(&stack.url("/echo/admin/users")).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains(&alice_openid), "{}", refused.body);
    assert!(refused.body.contains("/_wechat/logout"), "{}", refused.body);
    let xhr = alice
        .get_with(
            &stack.url("/echo/admin/users"),
            &[("X-Requested-With", "XMLHttpRequest")],
        )
        .await;
    assert_eq!(xhr.status, 403);
    assert_eq!(xhr.json()["error"], "access_denied");
    // Other spellings of the path are the same route.
    for path in [
        "/echo/admin/%75sers",
        "/echo/x/../admin/users",
        "/echo//admin/users",
        "/echo/./admin/",
    ] {
        let (status, _) = raw_get(
            &stack.gateway_url,
            path,
            &format!(
                "Cookie: {}\r\nUser-Agent: {WECHAT_UA}\r\n",
                alice.cookie_header()
            ),
        );
        assert!(matches!(status, 403 | 400), "{path}: {status}");
    }
    // A spoofed identity header gets nobody in.
    let spoofed = Browser::new(WECHAT_UA)
        .get_with(
            &stack.url("/echo/admin/users"),
            &[("X-WeChat-OpenID", &alice_openid)],
        )
        .await;
    assert_eq!(spoofed.status, 302, "a login, not a pass");

    // The list gains alice: a reload lets her in, without a restart.
    let pid = stack.gateway_pid();
    std::fs::write(&list, format!("# admins\n{alice_openid}  # alice\n")).unwrap();
    reload(&stack).await;
    assert_eq!(stack.gateway_pid(), pid);
    let echo = alice.get(&stack.url("/echo/admin/users")).await;
    assert_eq!(echo.status, 200, "{}", echo.body);
    assert_eq!(echo.json()["headers"]["x-wechat-openid"][0], alice_openid);

    // Bob, logged in on another phone, is still kept out.
    let (mut bob, _) = logged_in(&stack, "bob").await;
    assert_eq!(bob.get(&stack.url("/echo/admin/users")).await.status, 403);
    assert_eq!(bob.get(&stack.url("/echo/orders")).await.status, 200);

    // Alice leaves the list: kept out again at once.
    std::fs::write(&list, "\n").unwrap();
    reload(&stack).await;
    assert_eq!(alice.get(&stack.url("/echo/admin/users")).await.status, 403);
}

#[tokio::test]
async fn public_and_userinfo_routes_and_the_verification_file() {
    let scratch = ScratchDir::new("routes");
    let list = scratch.join("admins.txt");
    std::fs::write(&list, "").unwrap();
    let stack = routed_stack(&list).await;
    let user = person(&stack, "carol").await;

    // The public page: no login, no identity.
    let mut anonymous = Browser::new(WECHAT_UA);
    let about = anonymous.get(&stack.url("/echo/about")).await;
    assert_eq!(about.status, 200, "{}", about.body);
    assert!(about.json()["headers"].get("x-wechat-openid").is_none());
    // exact: the page below it needs a login.
    assert_eq!(
        anonymous.get(&stack.url("/echo/about/more")).await.status,
        302
    );

    // The verification file, as WeChat's console fetches it.
    let desktop = reqwest::Client::builder().no_proxy().build().unwrap();
    let file = desktop
        .get(stack.url("/MP_verify_Ab12Cd34.txt"))
        .header("User-Agent", DESKTOP_UA)
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 200);
    assert!(file.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(file.text().await.unwrap(), "Ab12Cd34");
    for other in [
        "/MP_verify_Ab12Cd34.txt/",
        "/mp_verify_ab12cd34.txt",
        "/MP_verify_Ab12Cd34.txt.bak",
        "/echo/MP_verify_Ab12Cd34.txt",
    ] {
        let (status, body) = raw_get(
            &stack.gateway_url,
            other,
            &format!("User-Agent: {DESKTOP_UA}\r\n"),
        );
        assert_eq!(status, 401, "{other}: {status}");
        assert_ne!(body, "Ab12Cd34", "{other}: the login page, not the file");
    }

    // A snsapi_base session on the userinfo route: authorize again with
    // snsapi_userinfo, same openid, the profile then passes.
    let mut browser = Browser::new(WECHAT_UA);
    stack.wechat_login(&mut browser, "/echo").await;
    let upgrade = browser.get(&stack.url("/echo/profile/me")).await;
    assert_eq!(upgrade.status, 302);
    assert!(upgrade.location().contains("&scope=snsapi_userinfo&"));
    let consent = browser.get(upgrade.location()).await;
    let back = browser.get(consent.location()).await;
    assert_eq!(back.location(), "/echo/profile/me");
    let echo = browser.get(&stack.url("/echo/profile/me")).await.json();
    assert_eq!(echo["headers"]["x-wechat-openid"][0], user.as_str());
    assert_eq!(echo["headers"]["x-wechat-scope"][0], "snsapi_userinfo");
}

#[tokio::test]
async fn cors_preflights_reach_the_application_without_a_session() {
    let scratch = ScratchDir::new("routes");
    let list = scratch.join("admins.txt");
    std::fs::write(&list, "").unwrap();
    let stack = routed_stack(&list).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let options = |path: &str, headers: &[(&str, &str)]| {
        let mut req = client
            .request(reqwest::Method::OPTIONS, stack.url(path))
            .header("User-Agent", DESKTOP_UA);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.send()
    };
    let cors = [
        ("Origin", "https://shop.example"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "content-type"),
    ];
    let answer = options("/echo/orders", &cors).await.unwrap();
    assert_eq!(answer.status(), 200);
    let echo: serde_json::Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    assert_eq!(echo["method"], "OPTIONS");
    assert_eq!(echo["headers"]["origin"][0], "https://shop.example");
    assert!(echo["headers"].get("x-wechat-openid").is_none());
    // Also on the allow route: a preflight carries no user to refuse.
    assert_eq!(options("/echo/admin/x", &cors).await.unwrap().status(), 200);
    // A forged identity header is stripped on a preflight too.
    let forged = options(
        "/echo/orders",
        &[cors[0], cors[1], ("X-WeChat-OpenID", "oForged")],
    )
    .await
    .unwrap();
    let echo: serde_json::Value = serde_json::from_str(&forged.text().await.unwrap()).unwrap();
    assert!(echo["headers"].get("x-wechat-openid").is_none(), "{echo}");
    // preflight = "login": the route's own rule.
    assert_eq!(
        options("/echo/strict/x", &cors).await.unwrap().status(),
        401
    );
    // Only a real preflight: OPTIONS without both headers needs a login.
    for partial in [&cors[..1], &cors[1..2], &[][..]] {
        assert_eq!(
            options("/echo/orders", partial).await.unwrap().status(),
            401,
            "{partial:?}"
        );
    }
    let (status, _) = raw_get(
        &stack.gateway_url,
        "/echo/orders",
        "Origin: https://shop.example\r\nAccess-Control-Request-Method: POST\r\n",
    );
    assert_eq!(status, 401, "a GET with the headers is no preflight");
}

#[tokio::test]
async fn a_followers_route_lets_in_followers_and_asks_wechat_once_per_window() {
    let stack = Stack::start_with(
        "",
        "[[route]]\nprefix = \"/echo/fans/\"\npolicy = \"followers\"\n",
    )
    .await;
    // Bob follows the Official Account.
    let (mut bob, bob_openid) = logged_in(&stack, "bob").await;
    stack.control("user", json!({ "subscribed": true })).await;
    let first = bob.get(&stack.url("/echo/fans/feed?page=2")).await;
    assert_eq!(first.status, 307, "{}", first.body);
    assert_eq!(first.location(), "/echo/fans/feed?page=2");
    let echo = bob.get(&stack.url("/echo/fans/feed?page=2")).await;
    assert_eq!(echo.status, 200, "{}", echo.body);
    assert_eq!(echo.json()["headers"]["x-wechat-openid"][0], bob_openid);
    assert_eq!(stack.calls("user_info").await, 1);
    // Known for followers_cache_secs: no more calls, even once he leaves.
    stack.control("user", json!({ "subscribed": false })).await;
    for _ in 0..5 {
        assert_eq!(bob.get(&stack.url("/echo/fans/x")).await.status, 200);
    }
    assert_eq!(stack.calls("user_info").await, 1);

    // Alice does not follow: 403 naming her, "try again" back to the page.
    let (mut alice, alice_openid) = logged_in(&stack, "alice").await;
    let refused = alice.follow(&stack.url("/echo/fans/x")).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains(&alice_openid), "{}", refused.body);
    assert!(refused.body.contains("/echo/fans/x"), "{}", refused.body);
    let xhr = alice
        .get_with(
            &stack.url("/echo/fans/x"),
            &[("X-Requested-With", "XMLHttpRequest")],
        )
        .await;
    assert_eq!(xhr.status, 403);
    assert_eq!(xhr.json()["error"], "access_denied");
    assert_eq!(stack.calls("user_info").await, 2, "the refusal is kept too");
    // She follows; after the short re-check window she is let in.
    stack.control("user", json!({ "subscribed": true })).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = alice.follow(&stack.url("/echo/fans/x")).await;
        if answer.status == 200 {
            break;
        }
        assert_eq!(answer.status, 403);
        assert!(
            Instant::now() < deadline,
            "still refused after following ({} user_info calls): {}\n{}",
            stack.calls("user_info").await,
            answer.body,
            stack.gateway_log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // nginx auth_request asks the auth route: 202 with the identity, or
    // 403 once WeChat says a user does not follow.
    let auth = alice
        .get_with(
            &stack.url("/_wechat/auth"),
            &[("X-Original-URI", "/echo/fans/x")],
        )
        .await;
    assert_eq!(auth.status, 202, "{}", auth.body);
    assert_eq!(auth.header("x-wechat-openid"), Some(alice_openid.as_str()));
    let (mut dave, _) = logged_in(&stack, "dave").await;
    let calls = stack.calls("user_info").await;
    let auth = dave
        .get_with(
            &stack.url("/_wechat/auth"),
            &[("X-Original-URI", "/echo/fans/x")],
        )
        .await;
    assert_eq!(auth.status, 403, "{}", auth.body);
    assert_eq!(auth.header("x-wechat-openid"), None);
    assert_eq!(stack.calls("user_info").await, calls + 1);

    // A forged identity header or another browser's state gets no one in.
    let stranger = Browser::new(WECHAT_UA)
        .get_with(
            &stack.url("/echo/fans/x"),
            &[("X-WeChat-OpenID", &bob_openid)],
        )
        .await;
    assert_eq!(stranger.status, 302, "a login, not a pass");
    // WeChat down for a user not known yet: a clear 503, not a pass.
    let (mut carol, _) = logged_in(&stack, "carol").await;
    stack
        .control(
            "faults",
            json!({"endpoint": "user_info", "count": 10, "http_status": 503}),
        )
        .await;
    let down = carol.get(&stack.url("/echo/fans/x")).await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert!(!down.body.contains("served_by"));
}
