//! End-to-end: emulator, demo app and gateway as separate processes, driven
//! over loopback HTTP as a WeChat browser, a desktop browser and scripts would.

use std::time::Duration;

use wechat_e2e::{absolute, Browser, Proc, Stack, DESKTOP_UA, WECHAT_UA};

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .unwrap()
        .into_owned()
}

#[tokio::test]
async fn wechat_browser_logs_in_and_the_upstream_gets_the_verified_identity() {
    let stack = Stack::start().await;
    let user = stack.emulator("user").await;
    let mut browser = Browser::new(WECHAT_UA);

    // 1. An unauthenticated WeChat browser is sent to the authorize page.
    let first = browser.get(&stack.url("/echo?order=42&x=%E4%B8%AD")).await;
    assert_eq!(first.status, 302);
    let authorize = first.location().to_owned();
    let expected_prefix = format!(
        "{}/connect/oauth2/authorize?appid={}&redirect_uri={}&response_type=code&scope=snsapi_userinfo&state=",
        stack.emulator_url,
        stack.appid,
        url::form_urlencoded::byte_serialize(stack.url("/_wechat/callback").as_bytes()).collect::<String>(),
    );
    assert!(authorize.starts_with(&expected_prefix), "{authorize}");
    assert!(authorize.ends_with("#wechat_redirect"), "{authorize}");
    let state_cookie = first.header("set-cookie").unwrap();
    assert!(state_cookie.starts_with("wechat_state_"), "{state_cookie}");
    assert!(state_cookie.contains("HttpOnly") && state_cookie.contains("SameSite=Lax"));
    assert!(!state_cookie.contains("Secure"), "public_url is http");

    // 2. WeChat (the emulator) consents and sends the browser to the callback.
    let consent = browser.get(&authorize).await;
    assert_eq!(consent.status, 302, "{}", consent.body);
    let callback = consent.location().to_owned();
    assert!(callback.contains("code=") && callback.contains("state="));

    // 3. The callback exchanges the code, sets the session and goes back.
    let back = browser.get(&callback).await;
    assert_eq!(back.status, 302, "{}", back.body);
    assert_eq!(back.location(), "/echo?order=42&x=%E4%B8%AD");
    let set = back.headers_named("set-cookie");
    assert!(
        set.iter()
            .any(|c| c.starts_with("wechat_session=") && c.contains("HttpOnly")),
        "{set:?}"
    );
    assert!(
        set.iter()
            .any(|c| c.starts_with("wechat_state_") && c.contains("Max-Age=0")),
        "{set:?}"
    );
    assert!(browser.cookies.contains_key("wechat_session"));
    assert!(!browser
        .cookies
        .keys()
        .any(|k| k.starts_with("wechat_state_")));
    assert_eq!(stack.calls("access_token").await, 1);
    assert_eq!(stack.calls("userinfo").await, 1);

    // 4. The original page reaches the upstream with the identity.
    browser.cookies.insert("app_pref".into(), "dark".into());
    let page = browser.get(&absolute(&back.url, back.location())).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let echo = page.json();
    assert_eq!(echo["path"], "/echo");
    assert_eq!(echo["query"], "order=42&x=%E4%B8%AD");
    let h = &echo["headers"];
    assert_eq!(h["x-wechat-openid"][0], user["openid"]);
    assert_eq!(h["x-wechat-unionid"][0], user["unionid"]);
    assert_eq!(h["x-wechat-scope"][0], "snsapi_userinfo");
    let nickname = h["x-wechat-nickname"][0].as_str().unwrap();
    assert!(nickname.is_ascii());
    assert_eq!(decode(nickname), user["nickname"].as_str().unwrap());
    assert_eq!(echo["nickname"], user["nickname"]);
    assert!(user["nickname"].as_str().unwrap().contains('🐼'));
    // The gate's own cookies stay at the gate; the application's reach it.
    assert_eq!(h["cookie"][0], "app_pref=dark");

    // 5. The userinfo route shows the session identity.
    let info = browser.get(&stack.url("/_wechat/userinfo")).await;
    assert_eq!(info.status, 200);
    let info = info.json();
    assert_eq!(info["openid"], user["openid"]);
    assert_eq!(info["nickname"], user["nickname"]);
    assert_eq!(info["unionid"], user["unionid"]);

    // 6. Logout removes the session.
    let out = browser.get(&stack.url("/_wechat/logout")).await;
    assert_eq!(out.status, 302);
    assert_eq!(out.location(), "/");
    assert!(!browser.cookies.contains_key("wechat_session"));
    let after = browser
        .get_with(
            &stack.url("/echo"),
            &[("X-Requested-With", "XMLHttpRequest")],
        )
        .await;
    assert_eq!(after.status, 401);
}

#[tokio::test]
async fn client_sent_identity_headers_never_reach_the_upstream() {
    let stack = Stack::start().await;
    let user = stack.emulator("user").await;
    let forged = [
        ("X-WeChat-OpenID", "forged-openid"),
        ("x-wechat-unionid", "forged-unionid"),
        ("X-WECHAT-NICKNAME", "admin"),
        ("X-WeChat-Admin", "1"),
    ];
    // Without a session, on a public path: no identity header at all.
    let mut anonymous = Browser::new(DESKTOP_UA);
    let public = anonymous
        .get_with(&stack.url("/echo/public"), &forged)
        .await;
    assert_eq!(public.status, 200, "{}", public.body);
    let headers = public.json()["headers"].clone();
    let names: Vec<&String> = headers.as_object().unwrap().keys().collect();
    assert!(
        !names.iter().any(|n| n.starts_with("x-wechat-")),
        "{names:?}"
    );

    // With a session: only the verified values.
    let mut browser = Browser::new(WECHAT_UA);
    let back = stack.wechat_login(&mut browser, "/echo").await;
    assert_eq!(back.status, 302);
    let echo = browser.get_with(&stack.url("/echo"), &forged).await.json();
    let h = &echo["headers"];
    assert_eq!(h["x-wechat-openid"], serde_json::json!([user["openid"]]));
    assert_eq!(h["x-wechat-unionid"], serde_json::json!([user["unionid"]]));
    assert_ne!(h["x-wechat-nickname"][0], "admin");
    assert!(h.get("x-wechat-admin").is_none());
    // Spoofing without a session from a script gets no further than the gate.
    let mut script = Browser::new("curl/8");
    let refused = script
        .get_with(
            &stack.url("/echo"),
            &[("X-WeChat-OpenID", "x"), ("Accept", "application/json")],
        )
        .await;
    assert_eq!(refused.status, 401);
}

#[tokio::test]
async fn callbacks_with_a_missing_or_wrong_state_get_400_and_no_token_call() {
    let stack = Stack::start().await;
    let mut browser = Browser::new(WECHAT_UA);
    let first = browser.get(&stack.url("/echo")).await;
    let consent = browser.get(first.location()).await;
    let callback = url::Url::parse(consent.location()).unwrap();
    let pairs: std::collections::HashMap<String, String> =
        callback.query_pairs().into_owned().collect();
    let (code, state) = (&pairs["code"], &pairs["state"]);
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();

    let long_state = "a".repeat(129);
    let bad = [
        format!("/_wechat/callback?code={}", enc(code)),
        format!("/_wechat/callback?code={}&state=", enc(code)),
        format!("/_wechat/callback?code={}&state=WrongState123", enc(code)),
        format!("/_wechat/callback?code={}&state={long_state}", enc(code)),
        format!("/_wechat/callback?code={}&state=a%2Db", enc(code)),
        format!(
            "/_wechat/callback?code={}&state={state}&state={state}",
            enc(code)
        ),
    ];
    for path in &bad {
        let answer = browser.get(&stack.url(path)).await;
        assert_eq!(answer.status, 400, "{path}: {}", answer.body);
        assert!(answer
            .header("content-type")
            .unwrap()
            .starts_with("text/html"));
        assert!(
            answer.body.contains("/_wechat/login"),
            "offers a fresh login"
        );
    }
    // The right state from another browser (no state cookie) is refused too.
    let mut other = Browser::new(WECHAT_UA);
    let stolen = other.get(callback.as_str()).await;
    assert_eq!(stolen.status, 400);
    // A state cookie sealed for another state does not fit.
    let (name, value) = browser
        .cookies
        .iter()
        .find(|(k, _)| k.starts_with("wechat_state_"))
        .unwrap();
    let mut forger = Browser::new(WECHAT_UA);
    forger
        .cookies
        .insert("wechat_state_WrongState123".into(), value.clone());
    let answer = forger
        .get(&stack.url(&format!(
            "/_wechat/callback?code={}&state=WrongState123",
            enc(code)
        )))
        .await;
    assert_eq!(answer.status, 400);
    assert!(name.ends_with(state.as_str()));
    assert_eq!(
        stack.calls("access_token").await,
        0,
        "no token call for a bad state"
    );

    // The genuine callback still works, and is the only token call.
    let good = browser.get(callback.as_str()).await;
    assert_eq!(good.status, 302, "{}", good.body);
    assert_eq!(stack.calls("access_token").await, 1);
}

#[tokio::test]
async fn a_declined_authorization_gets_a_page_to_try_again_and_no_token_call() {
    let stack = Stack::start().await;
    let mut browser = Browser::new(WECHAT_UA);
    let first = browser.get(&stack.url("/orders")).await;
    // The emulator's consent page, answered with "deny".
    let with_popup = first
        .location()
        .replace("#wechat_redirect", "")
        .replace("&connect_redirect=1", "&forcePopup=true&connect_redirect=1");
    let query = with_popup.split_once('?').unwrap().1.to_owned();
    assert!(
        query.ends_with("&forcePopup=true&connect_redirect=1"),
        "{query}"
    );
    let page = browser
        .get(&format!(
            "{}/connect/oauth2/authorize?{query}",
            stack.emulator_url
        ))
        .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("decision"), "{}", page.body);
    let denied = stack.answer_wechat(&mut browser, &with_popup, "deny").await;
    let callback = denied.location().to_owned();
    assert!(!callback.contains("code="));
    let answer = browser.get(&callback).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(
        answer.body.contains("/_wechat/login?rd=%2Forders"),
        "{}",
        answer.body
    );
    assert_eq!(stack.calls("access_token").await, 0);
}

#[tokio::test]
async fn force_popup_connect_redirect_and_the_profile_language_reach_wechat() {
    let stack = Stack::start_with(
        "userinfo_lang = \"en\"",
        "[[route]]\nprefix = \"/echo/pay/\"\nforce_popup = true\n[[route]]\nprefix = \"/echo/fans/\"\npolicy = \"followers\"\n",
    )
    .await;
    let seen = || stack.emulator("seen");
    // A route without force_popup: silent consent, connect_redirect=1.
    let mut browser = Browser::new(WECHAT_UA);
    let first = browser.get(&stack.url("/echo/x")).await;
    assert!(
        first
            .location()
            .ends_with("&connect_redirect=1#wechat_redirect"),
        "{}",
        first.location()
    );
    let silent = browser.get(first.location()).await;
    assert_eq!(silent.status, 302, "consented at once: {}", silent.body);
    assert_eq!(seen().await["authorize_force_popup"], false);
    assert_eq!(seen().await["authorize_connect_redirect"], true);

    // The pay route: WeChat asks the user (the emulator's consent page).
    let mut payer = Browser::new(WECHAT_UA);
    let first = payer.get(&stack.url("/echo/pay/order?id=7")).await;
    assert!(first
        .location()
        .contains("&forcePopup=true&connect_redirect=1#"));
    let page = payer.get(first.location()).await;
    assert_eq!(page.status, 200, "the consent page: {}", page.body);
    assert_eq!(seen().await["authorize_force_popup"], true);
    let allowed = stack
        .answer_wechat(&mut payer, first.location(), "allow")
        .await;
    let back = payer.get(allowed.location()).await;
    assert_eq!(back.location(), "/echo/pay/order?id=7");
    // The profile was asked for in English, and so is the follow state.
    assert_eq!(seen().await["userinfo_lang"], "en");
    stack
        .control("user", serde_json::json!({ "subscribed": true }))
        .await;
    let fans = payer.follow(&stack.url("/echo/fans/")).await;
    assert_eq!(fans.status, 200, "{}", fans.body);
    assert_eq!(seen().await["user_info_lang"], "en");
}

#[tokio::test]
async fn tampered_or_foreign_session_cookies_count_as_no_session() {
    let stack = Stack::start().await;
    let mut browser = Browser::new(WECHAT_UA);
    assert_eq!(stack.wechat_login(&mut browser, "/echo").await.status, 302);
    let genuine = browser.cookies["wechat_session"].clone();
    let xhr = [("X-Requested-With", "XMLHttpRequest")];
    assert_eq!(
        browser.get_with(&stack.url("/echo"), &xhr).await.status,
        200
    );

    // Sealed with another gateway's key, for the same identity.
    let foreign_key = wechat_oauth::seal::Sealer::new(&wechat_oauth::secret::Secret::new(
        "a-different-gateway-cookie-secret-0123456789",
    ))
    .unwrap();
    let identity = wechat_oauth::Identity {
        openid: "oAttackerChosenOpenid".into(),
        unionid: None,
        scope: "snsapi_base".into(),
        ..Default::default()
    };
    let session = wechat_oauth::Session::starting_now(
        identity.into(),
        "attacker".into(),
        Duration::from_secs(3600),
    );
    let foreign = wechat_oauth::session::seal_session(&foreign_key, &session);

    let mut flipped = genuine.clone().into_bytes();
    let mid = flipped.len() / 2;
    flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
    let candidates = [
        String::from_utf8(flipped).unwrap(),
        genuine[..genuine.len() - 4].to_owned(),
        foreign,
        "eyJvcGVuaWQiOiJhZG1pbiJ9".to_owned(),
        "x".repeat(5000),
    ];
    for value in candidates {
        let mut b = Browser::new(WECHAT_UA);
        b.cookies.insert("wechat_session".into(), value.clone());
        let answer = b.get_with(&stack.url("/echo"), &xhr).await;
        assert_eq!(answer.status, 401, "{value:.40}");
        let answer = b.get(&stack.url("/echo")).await;
        assert_eq!(answer.status, 302, "a WeChat browser is sent to log in");
        assert!(!answer.body.contains("oAttacker"));
    }
}

#[tokio::test]
async fn scripts_without_a_session_get_401_json_and_other_browsers_a_page() {
    let stack = Stack::start().await;
    let mut browser = Browser::new(WECHAT_UA);
    for extra in [
        vec![("X-Requested-With", "XMLHttpRequest")],
        vec![("Accept", "application/json")],
    ] {
        let answer = browser
            .get_with(&stack.url("/api/orders?page=2"), &extra)
            .await;
        assert_eq!(answer.status, 401, "{extra:?}");
        assert!(answer
            .header("content-type")
            .unwrap()
            .starts_with("application/json"));
        let body = answer.json();
        assert_eq!(body["error"], "login_required");
        assert_eq!(
            body["login_url"],
            stack.url("/_wechat/login?rd=%2Fapi%2Forders%3Fpage%3D2")
        );
        assert!(
            answer.header("set-cookie").is_none(),
            "no state cookie for XHR"
        );
    }
    let mut desktop = Browser::new(DESKTOP_UA);
    let page = desktop.get(&stack.url("/orders")).await;
    assert_eq!(page.status, 401);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.body.contains("请在微信中打开"), "Chinese by default");
    let english = desktop
        .get_with(
            &stack.url("/orders"),
            &[("Accept-Language", "en-US,en;q=0.9")],
        )
        .await;
    assert!(
        english.body.contains("Open this page in WeChat")
            && !english.body.contains("请在微信中打开")
    );
    assert!(page.body.contains("/_wechat/login?rd=%2Forders"));
    // That login link takes a browser through WeChat back to /orders.
    let start = desktop.get(&stack.url("/_wechat/login?rd=%2Forders")).await;
    assert_eq!(start.status, 302);
    let consent = desktop.get(start.location()).await;
    let back = desktop.get(consent.location()).await;
    assert_eq!(back.location(), "/orders");
    // Public paths need no login.
    let asset = Browser::new(DESKTOP_UA)
        .get(&stack.url("/static/app.css"))
        .await;
    assert_eq!(asset.status, 200);
}

#[tokio::test]
async fn return_paths_never_leave_the_site() {
    let stack = Stack::start().await;
    let cases = [
        ("https%3A%2F%2Fevil.example%2F", "/"),
        ("%2F%2Fevil.example%2F", "/"),
        ("%2F%5Cevil.example", "/"),
        ("https%3A%2F%2Fevil.example%2F%40127.0.0.1", "/"),
        ("%2Fok%0D%0ASet-Cookie%3A%20x%3D1", "/"),
        ("javascript%3Aalert(1)", "/"),
        ("%2Forders%3Fid%3D7", "/orders?id=7"),
    ];
    for (rd, expected) in cases {
        let mut browser = Browser::new(WECHAT_UA);
        let back = stack
            .wechat_login(&mut browser, &format!("/_wechat/login?rd={rd}"))
            .await;
        assert_eq!(back.status, 302, "{rd}");
        assert_eq!(back.location(), expected, "rd={rd}");
        let logout = browser
            .get(&stack.url(&format!("/_wechat/logout?rd={rd}")))
            .await;
        assert_eq!(logout.location(), expected, "logout rd={rd}");
    }
    let own = format!(
        "/_wechat/login?rd={}",
        url::form_urlencoded::byte_serialize(stack.url("/mine").as_bytes()).collect::<String>()
    );
    let back = stack.wechat_login(&mut Browser::new(WECHAT_UA), &own).await;
    assert_eq!(back.location(), "/mine");
}

#[tokio::test]
async fn secrets_codes_and_tokens_appear_in_no_response_and_no_log_line() {
    let stack = Stack::start().await;
    let mut browser = Browser::new(WECHAT_UA);
    // A login, then the same callback replayed by a browser that kept the
    // state cookie (WeChat does this): WeChat answers 40163.
    browser.store_cookies = true;
    let first = browser.get(&stack.url("/echo")).await;
    let consent = browser.get(first.location()).await;
    let callback = consent.location().to_owned();
    let kept = browser.cookies.clone();
    let back = browser.get(&callback).await;
    assert_eq!(back.status, 302);
    let mut replay = Browser::new(WECHAT_UA);
    replay.cookies = kept;
    let replayed = replay.get(&callback).await;
    assert!(
        replayed.status == 302 || replayed.status == 400,
        "a replayed callback is a redirect or a 'log in again' page, got {}",
        replayed.status
    );
    assert!(!replayed.body.contains("40163") || replayed.status != 500);
    browser.get(&stack.url("/echo")).await;
    browser.get(&stack.url("/_wechat/userinfo")).await;
    browser.get(&stack.url("/_wechat/logout")).await;

    let issued = stack.emulator("issued").await;
    let mut secrets: Vec<String> = vec![stack.app_secret.clone(), stack.cookie_secret.clone()];
    for key in ["codes", "access_tokens", "refresh_tokens"] {
        for v in issued[key].as_array().unwrap() {
            secrets.push(v.as_str().unwrap().to_owned());
        }
    }
    assert!(secrets.len() >= 5, "{issued}");
    let gateway_answers: String = browser
        .seen
        .iter()
        .chain(replay.seen.iter())
        .filter(|a| a.url.starts_with(&stack.gateway_url))
        .map(|a| a.all_text())
        .collect();
    let logs = stack.logs();
    assert!(
        logs.contains("login completed"),
        "the gateway logs logins:\n{logs}"
    );
    for secret in &secrets {
        assert!(
            !gateway_answers.contains(secret.as_str()),
            "a gateway answer carries a secret"
        );
        assert!(
            !logs.contains(secret.as_str()),
            "a log line carries a secret:\n{logs}"
        );
    }
}

#[test]
fn config_problems_stop_start_up_with_one_line_naming_the_key() {
    let dir = wechat_e2e::ScratchDir::new("e2e-cfg");
    let good = "[wechat]\nappid = \"wx1234567890abcdef\"\nsecret = \"s3cr3t-value\"\n\n[gateway]\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\npublic_url = \"https://app.example.com\"\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\n";
    let cases = [
        (
            good.replace("appid = \"wx1234567890abcdef\"\n", ""),
            "[wechat] appid",
        ),
        (
            good.replace("secret = \"s3cr3t-value\"\n", ""),
            "[wechat] secret",
        ),
        (
            good.replace("0123456789abcdef0123456789abcdef", "too-short"),
            "[gateway] cookie_secret",
        ),
        (
            good.replace("upstream = \"127.0.0.1:2\"\n", ""),
            "[gateway] upstream",
        ),
        (
            good.replace("public_url = \"https://app.example.com\"\n", ""),
            "[gateway] public_url",
        ),
        (good.replace("listen =", "lisen ="), "lisen"),
        (good.replace("[gateway]", "[gateway"), "line"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.join(format!("c{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let mut p = Proc::start(
            &dir,
            &format!("c{i}"),
            "wechat-gateway",
            &["--config", path.to_str().unwrap()],
            &[],
        );
        assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(1), "{key}");
        let out = p.log_text();
        assert!(out.contains(key), "{key}: {out}");
        assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
        assert!(
            !out.contains("panicked") && !out.contains("too-short") && !out.contains("s3cr3t"),
            "{out}"
        );
    }
    let mut p = Proc::start(
        &dir,
        "missing",
        "wechat-gateway",
        &["--config", "/nonexistent.toml"],
        &[],
    );
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(1));
    assert!(p.log_text().contains("/nonexistent.toml"));
}

#[tokio::test]
async fn a_users_own_pingora_proxy_puts_the_gate_in_front_with_a_few_dozen_lines() {
    let dir = wechat_e2e::ScratchDir::new("own-proxy");
    let (emu_port, app_port, port) = (
        wechat_e2e::free_port(),
        wechat_e2e::free_port(),
        wechat_e2e::free_port(),
    );
    let secret = format!("appsecret{}", wechat_e2e::random(20));
    let _emulator = Proc::start_emulator(&dir, emu_port, "wx1234567890abcdef", &secret);
    let _app = Proc::start_demo_app(&dir, app_port);
    let url = format!("http://127.0.0.1:{port}");
    let config_path = dir.join("own.toml");
    wechat_e2e::TestConfig::new(
        "wx1234567890abcdef",
        &format!("http://127.0.0.1:{emu_port}"),
        &url,
    )
    .set("gateway.listen", format!("127.0.0.1:{port}"))
    .set("gateway.upstream", format!("127.0.0.1:{app_port}"))
    .set("gateway.cookie_secret", wechat_e2e::random(40))
    .set("store.url", "memory")
    .write(&config_path);
    let program = wechat_e2e::target_dir().join("examples/own_proxy");
    let _proxy = Proc::start_program(
        &dir,
        "own-proxy",
        &program,
        &[config_path.to_str().unwrap()],
        &[("WECHAT_APP_SECRET", &secret)],
    );
    wechat_e2e::wait_ready(&format!("http://127.0.0.1:{emu_port}/_emulator/calls")).await;
    wechat_e2e::wait_ready(&format!("{url}/_wechat/healthz")).await;

    let mut browser = Browser::new(WECHAT_UA);
    let first = browser.get(&format!("{url}/echo")).await;
    assert_eq!(first.status, 302, "{}", first.body);
    let consent = browser.get(first.location()).await;
    let back = browser.get(consent.location()).await;
    assert_eq!((back.status, back.location()), (302, "/echo"));
    let echo = browser
        .get_with(&format!("{url}/echo"), &[("X-WeChat-OpenID", "forged")])
        .await;
    assert_eq!(echo.status, 200, "{}", echo.body);
    let user = wechat_e2e::emulator_json(&format!("http://127.0.0.1:{emu_port}"), "user").await;
    assert_eq!(echo.json()["headers"]["x-wechat-openid"][0], user["openid"]);
    assert_eq!(
        echo.json()["headers"]["x-wechat-openid"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
