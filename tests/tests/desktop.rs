//! Desktop login: the Official Account's scene QR code with signed pushes,
//! and the Open Platform website app's qrconnect, over real HTTP; then the
//! whole thing in headless Chromium.

use std::time::{Duration, Instant};

use serde_json::json;
use wechat_e2e::{Browser, Stack, DESKTOP_UA, OPEN_APPID};

async fn post_json(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Plays the phone: scans `ticket` (with extra fields), returns the gateway's answer to the push.
async fn scan(stack: &Stack, mut body: serde_json::Value, ticket: &str) -> (u16, String) {
    body["ticket"] = ticket.into();
    let (status, answer) = post_json(&format!("{}/_emulator/scan", stack.emulator_url), body).await;
    assert_eq!(status, 200, "{answer}");
    (
        answer["status"].as_u64().unwrap() as u16,
        answer["body"].as_str().unwrap().to_owned(),
    )
}

async fn new_qr(stack: &Stack, browser: &mut Browser, rd: &str) -> (String, String) {
    let answer = browser
        .get_with(
            &stack.url(&format!("/_wechat/qr/new?rd={rd}")),
            &[("Accept", "application/json")],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let q = answer.json();
    assert!(browser.cookies.contains_key("wechat_scene"));
    assert!(q["expires_in"].as_u64().unwrap() > 0);
    (
        q["scene"].as_str().unwrap().to_owned(),
        q["ticket"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn the_gate_draws_each_scene_qr_code_for_its_own_browser_only() {
    let stack = Stack::start_desktop("scene_qr").await;
    let mut browser = Browser::new(DESKTOP_UA);
    let (scene, ticket) = new_qr(&stack, &mut browser, "%2F").await;
    let path = format!("/_wechat/qr/image?scene={scene}");
    let image = browser.get(&stack.url(&path)).await;
    assert_eq!(image.status, 200, "{}", image.body);
    assert_eq!(image.header("content-type"), Some("image/svg+xml"));
    // The image encodes exactly what WeChat's QR code for this ticket does.
    let issued = stack.emulator("issued").await;
    let url = issued["qr_urls"][&ticket]
        .as_str()
        .expect("the ticket's URL");
    let expected = qrcode::QrCode::new(url.as_bytes())
        .unwrap()
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .build();
    assert_eq!(image.body, expected);

    // Another browser, none, a forged cookie, another scene's name, case
    // and encoding games: nothing drawn.
    let mut other = Browser::new(DESKTOP_UA);
    let (their_scene, _) = new_qr(&stack, &mut other, "%2F").await;
    let theirs = other.get(&stack.url(&path)).await;
    assert_eq!(theirs.status, 403, "{}", theirs.body);
    assert_eq!(theirs.json()["error"], "access_denied");
    let nobody = Browser::new(DESKTOP_UA).get(&stack.url(&path)).await;
    assert_eq!(nobody.status, 403);
    let mut forged = Browser::new(DESKTOP_UA);
    forged
        .cookies
        .insert("wechat_scene".into(), format!("{scene}.AAAA"));
    assert_eq!(forged.get(&stack.url(&path)).await.status, 403);
    let wrong = format!("/_wechat/qr/image?scene={their_scene}");
    assert_eq!(browser.get(&stack.url(&wrong)).await.status, 403);
    for variant in [
        format!("/_wechat/qr/image?scene={}", scene.to_uppercase()),
        format!("/_wechat/qr/image?scene={scene}&scene={scene}"),
        "/_wechat/qr/image".to_owned(),
    ] {
        let answer = browser.get(&stack.url(&variant)).await;
        assert_eq!(answer.status, 403, "{variant}: {}", answer.body);
    }
    let posted = browser.post_json(&stack.url(&path), &json!({})).await;
    assert_eq!(posted.status, 405);
    // The page draws its code from the gate, not from WeChat.
    let page = Browser::new(DESKTOP_UA).get(&stack.url("/")).await;
    assert!(page.body.contains("/_wechat/qr/image"), "{}", page.body);
}

#[tokio::test]
async fn a_desktop_browser_logs_in_by_scene_qr_scan() {
    let stack = Stack::start_desktop("scene_qr").await;
    let user = stack.emulator("user").await;
    let mut browser = Browser::new(DESKTOP_UA);
    let page = browser.get(&stack.url("/orders?id=1")).await;
    assert_eq!(page.status, 401);
    assert!(
        page.body.contains("/qr/new") && page.body.contains("微信扫码登录"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script src"), "no external script");

    let answer = browser
        .get(&stack.url("/_wechat/qr/new?rd=%2Forders%3Fid%3D1"))
        .await;
    let q = answer.json();
    let image = q["qr_image_url"].as_str().unwrap();
    assert!(
        image.starts_with(&format!(
            "{}/cgi-bin/showqrcode?ticket=",
            stack.emulator_url
        )),
        "{image}"
    );
    let png = reqwest::get(image).await.unwrap();
    assert_eq!(png.headers()["content-type"], "image/png");
    assert!(png.bytes().await.unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));
    let (scene, ticket) = (
        q["scene"].as_str().unwrap().to_owned(),
        q["ticket"].as_str().unwrap().to_owned(),
    );

    // Nothing yet.
    let status = browser
        .get(&stack.url(&format!("/_wechat/qr/status?scene={scene}&wait=0")))
        .await;
    assert_eq!(status.json()["status"], "pending");

    // A long poll, answered within a second of the scan.
    let cookie = browser.cookie_header();
    let url = stack.url(&format!("/_wechat/qr/status?scene={scene}"));
    let poll = tokio::spawn(async move {
        let mut b = Browser::new(DESKTOP_UA);
        let answer = b.get_with(&url, &[("Cookie", &cookie)]).await;
        (answer, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pushed = Instant::now();
    assert_eq!(
        scan(&stack, json!({}), &ticket).await,
        (200, "success".to_owned())
    );
    let (answer, answered) = poll.await.unwrap();
    assert!(
        answered.duration_since(pushed) < Duration::from_secs(1),
        "{:?}",
        answered.duration_since(pushed)
    );
    assert_eq!(
        answer.json(),
        json!({"status": "confirmed", "redirect": "/orders?id=1"})
    );
    let session = answer
        .headers_named("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("wechat_session="))
        .expect("the session")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let echo = Browser::new(DESKTOP_UA)
        .get_with(&stack.url("/echo"), &[("Cookie", &session)])
        .await;
    assert_eq!(echo.json()["headers"]["x-wechat-openid"][0], user["openid"]);
    // Such a session has no tokens: a profile refresh keeps it as it is.
    let mut logged_in = Browser::new(DESKTOP_UA);
    let refreshed = logged_in
        .get_with(
            &stack.url("/_wechat/userinfo?refresh=1"),
            &[("Cookie", &session)],
        )
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_eq!(refreshed.json()["openid"], user["openid"]);
    assert!(
        refreshed.header("set-cookie").is_none(),
        "the session is not ended"
    );
    let checked = logged_in
        .get_with(
            &stack.url("/_wechat/userinfo?check=1"),
            &[("Cookie", &session)],
        )
        .await;
    assert_eq!(checked.status, 200);
    assert_eq!(checked.json()["checked"], false);

    // Single use: the same scene can't log in again.
    let again = browser
        .get(&stack.url(&format!("/_wechat/qr/status?scene={scene}&wait=0")))
        .await;
    assert_eq!(again.json()["status"], "expired");
}

#[tokio::test]
async fn forged_stale_replayed_or_foreign_pushes_and_polls_change_nothing() {
    let stack = Stack::start_desktop_safe("scene_qr").await;
    let mut browser = Browser::new(DESKTOP_UA);
    let (scene, ticket) = new_qr(&stack, &mut browser, "%2F").await;
    let status = |b: &mut Browser| {
        let url = stack.url(&format!("/_wechat/qr/status?scene={scene}&wait=0"));
        let mut b2 = Browser::new(DESKTOP_UA);
        b2.cookies = b.cookies.clone();
        async move { b2.get(&url).await.json()["status"].clone() }
    };

    assert_eq!(
        scan(
            &stack,
            json!({"safe_mode": true, "bad_signature": true}),
            &ticket
        )
        .await
        .0,
        401
    );
    assert_eq!(
        scan(
            &stack,
            json!({"safe_mode": true, "age_secs": 1000}),
            &ticket
        )
        .await
        .0,
        401
    );
    assert_eq!(
        scan(
            &stack,
            json!({"safe_mode": true, "appid": "wxsomeoneelse"}),
            &ticket
        )
        .await
        .0,
        401
    );
    assert_eq!(
        scan(
            &stack,
            json!({"safe_mode": true, "raw_body": "<xml><FromUserName>"}),
            &ticket
        )
        .await
        .0,
        400
    );
    assert_eq!(
        scan(
            &stack,
            json!({"safe_mode": true, "raw_body": "not xml"}),
            &ticket
        )
        .await
        .0,
        400
    );
    let (_, unknown) = post_json(
        &format!("{}/_emulator/scan", stack.emulator_url),
        json!({"scene": "no-such-scene", "safe_mode": true}),
    )
    .await;
    assert_eq!(
        unknown["status"], 200,
        "unknown scenes are acknowledged and ignored"
    );
    assert_eq!(
        status(&mut browser).await,
        "pending",
        "none of those changed the scene"
    );

    // A second browser polling someone else's scene is refused.
    let mut other = Browser::new(DESKTOP_UA);
    new_qr(&stack, &mut other, "%2F").await;
    let theirs = other
        .get(&stack.url(&format!("/_wechat/qr/status?scene={scene}&wait=0")))
        .await;
    assert_eq!(theirs.status, 403);
    let nobody = Browser::new(DESKTOP_UA)
        .get(&stack.url(&format!("/_wechat/qr/status?scene={scene}&wait=0")))
        .await;
    assert_eq!(nobody.status, 403);

    // A real scan in safe mode, then WeChat's retry of the same push.
    let first = scan(
        &stack,
        json!({"safe_mode": true, "create_time": 1_800_000_000u64}),
        &ticket,
    )
    .await;
    assert_eq!(first, (200, "success".to_owned()));
    let retry = scan(
        &stack,
        json!({"safe_mode": true, "create_time": 1_800_000_000u64}),
        &ticket,
    )
    .await;
    assert_eq!(
        retry,
        (200, "success".to_owned()),
        "a retry is acknowledged"
    );
    assert_eq!(status(&mut browser).await, "confirmed");
    assert_eq!(status(&mut browser).await, "expired", "used once");
    assert_eq!(theirs.json()["error"], "access_denied");

    // The server URL check WeChat makes when the URL is configured.
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let mut sorted = [wechat_e2e::PUSH_TOKEN, ts.as_str(), "n0nce"];
    sorted.sort_unstable();
    let sig = wechat_oauth::push::signature(&sorted);
    let ok = Browser::new(DESKTOP_UA)
        .get(&stack.url(&format!(
            "/_wechat/events?signature={sig}&timestamp={ts}&nonce=n0nce&echostr=hello42"
        )))
        .await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "hello42"));
    let bad = Browser::new(DESKTOP_UA)
        .get(&stack.url(&format!(
            "/_wechat/events?signature=00{}&timestamp={ts}&nonce=n0nce&echostr=hello42",
            &sig[2..]
        )))
        .await;
    assert_eq!(bad.status, 401);
    assert!(!bad.body.contains("hello42"));
    let logs = stack.logs();
    assert!(!logs.contains(wechat_e2e::PUSH_TOKEN) && !logs.contains(wechat_e2e::ENCODING_AES_KEY));
}

#[tokio::test]
async fn fifty_concurrent_qr_codes_after_the_basic_token_expired_fetch_it_once() {
    let stack = Stack::start_desktop("scene_qr").await;
    // Tokens that expire (past the 300 s margin) 3 s after they are issued:
    // long enough for fifty requests on a loaded machine.
    stack
        .control("settings", json!({"basic_token_ttl_secs": 303}))
        .await;
    let mut first = Browser::new(DESKTOP_UA);
    new_qr(&stack, &mut first, "%2F").await;
    assert_eq!(stack.calls("stable_token").await, 1);
    tokio::time::sleep(Duration::from_millis(3200)).await;

    let mut tasks = Vec::new();
    for _ in 0..50 {
        let url = stack.url("/_wechat/qr/new");
        tasks.push(tokio::spawn(async move {
            Browser::new(DESKTOP_UA).get(&url).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(
        stack.calls("stable_token").await,
        2,
        "one refresh for all fifty"
    );
    assert_eq!(stack.calls("qrcode_create").await, 51);

    // WeChat says the token is no longer valid: one refresh, one retry.
    stack
        .control("settings", json!({"basic_token_ttl_secs": 7200}))
        .await;
    stack
        .control(
            "faults",
            json!({"endpoint": "qrcode_create", "errcode": 40001}),
        )
        .await;
    let answer = Browser::new(DESKTOP_UA)
        .get(&stack.url("/_wechat/qr/new"))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // A normal read gives the same (refused) token: then one forced refresh.
    assert_eq!(stack.calls("stable_token").await, 4);
    // WeChat refuses it again at once: no second forced refresh in the window.
    stack
        .control(
            "faults",
            json!({"endpoint": "qrcode_create", "errcode": 40001, "count": 2}),
        )
        .await;
    let refused = Browser::new(DESKTOP_UA)
        .get(&stack.url("/_wechat/qr/new"))
        .await;
    assert_eq!(refused.status, 502, "{}", refused.body);
    assert_eq!(stack.calls("stable_token").await, 5, "a normal read only");
}

#[tokio::test]
async fn qrconnect_logs_in_with_the_website_apps_credentials() {
    let stack = Stack::start_desktop("qrconnect").await;
    let user = stack.emulator("user").await;
    let mut browser = Browser::new(DESKTOP_UA);
    let page = browser.get(&stack.url("/orders")).await;
    assert_eq!(page.status, 401);
    assert!(
        page.body
            .contains("/_wechat/login?rd=%2Forders&amp;app=open"),
        "{}",
        page.body
    );
    let start = browser
        .get(&stack.url("/_wechat/login?rd=%2Forders&app=open"))
        .await;
    let location = start.location().to_owned();
    assert!(
        location.starts_with(&format!(
            "{}/connect/qrconnect?appid={OPEN_APPID}&redirect_uri=",
            stack.emulator_url
        )) && location.contains("&response_type=code&scope=snsapi_login&state=")
            && location.ends_with("#wechat_redirect"),
        "{location}"
    );
    let qr_page = browser.get(&location).await;
    assert_eq!(qr_page.status, 200);
    let back = stack.confirm_qrconnect(&mut browser, &location).await;
    assert_eq!(
        (back.status, back.location()),
        (302, "/orders"),
        "{}",
        back.body
    );
    let echo = browser.get(&stack.url("/echo")).await.json();
    let h = &echo["headers"];
    assert_eq!(
        h["x-wechat-unionid"][0], user["unionid"],
        "the unionid ties the website app to the account"
    );
    assert_ne!(
        h["x-wechat-openid"][0], user["openid"],
        "an openid of the website app, not the account's"
    );
    assert_eq!(h["x-wechat-scope"][0], "snsapi_login");
    assert_eq!(echo["nickname"], user["nickname"]);
    assert_eq!(stack.calls("access_token").await, 1);
}

#[tokio::test]
async fn headless_chromium_logs_in_by_scanning_the_qr_code() {
    let stack = Stack::start_desktop("scene_qr").await;
    let user = stack.emulator("user").await;
    let (_driver, client) = wechat_e2e::chromium(DESKTOP_UA).await;

    client.goto(&stack.url("/")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let src = loop {
        let src = client
            .execute("var i=document.getElementById('qr');return i&&i.complete&&i.naturalWidth>0?i.src:null;", vec![])
            .await
            .unwrap();
        if let Some(s) = src.as_str() {
            break s.to_owned();
        }
        assert!(Instant::now() < deadline, "the QR image never showed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let shots = wechat_e2e::target_dir().join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    std::fs::write(
        shots.join("desktop-login.png"),
        client.screenshot().await.unwrap(),
    )
    .unwrap();

    // The phone reads the code the page shows: the SVG the browser drew,
    // matched against what each issued QR code encodes.
    assert!(src.contains("/_wechat/qr/image?scene="), "{src}");
    let svg = client
        .execute(
            "return await (await fetch(arguments[0], {credentials: 'same-origin'})).text();",
            vec![json!(src)],
        )
        .await
        .unwrap();
    let svg = svg.as_str().expect("the image's SVG");
    let url = wechat_e2e::read_qr_image(&stack.emulator_url, svg).await;
    let pushed = Instant::now();
    let (status, answer) = post_json(
        &format!("{}/_emulator/scan", stack.emulator_url),
        json!({ "url": url }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["body"], "success");
    let openid = user["openid"].as_str().unwrap();
    loop {
        let source = client.source().await.unwrap_or_default();
        if source.contains(openid) {
            break;
        }
        assert!(
            pushed.elapsed() < Duration::from_secs(2),
            "not logged in within 2 s of the push:\n{source}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let landed = pushed.elapsed();
    assert_eq!(client.current_url().await.unwrap().path(), "/");
    std::fs::write(
        shots.join("desktop-logged-in.png"),
        client.screenshot().await.unwrap(),
    )
    .unwrap();
    eprintln!(
        "logged in {landed:?} after the push; screenshots in {}",
        shots.display()
    );
    client.close().await.unwrap();
}

/// A push signed with [`wechat_e2e::PUSH_TOKEN`] to the stack's push path.
async fn signed_push(
    stack: &Stack,
    timestamp: &str,
    nonce: &str,
    extra: &str,
    body: String,
) -> u16 {
    wechat_e2e::signed_push(&stack.url("/_wechat/events"), timestamp, nonce, extra, body).await
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_captured_push_url_cannot_carry_a_forged_scan() {
    let stack = Stack::start_desktop("scene_qr").await;
    let mut browser = Browser::new(DESKTOP_UA);
    let (scene, _) = new_qr(&stack, &mut browser, "%2F").await;
    let ts = now_secs().to_string();
    let push = |openid: &'static str, scene: String, created: u64| {
        let body = wechat_e2e::scan_xml(openid, &scene, created);
        let (stack, ts) = (&stack, ts.clone());
        async move { signed_push(stack, &ts, "n0nce1", "", body).await }
    };
    // WeChat's push of some other event, seen in an access log.
    assert_eq!(push("oSomeone", "unrelated".into(), 1).await, 200);
    // The same signed URL with the attacker's body: refused, the scene untouched.
    assert_eq!(push("oAttacker", scene.clone(), 2).await, 401);
    // WeChat's own retry of the first push (same URL, same body) is fine.
    assert_eq!(push("oSomeone", "unrelated".into(), 1).await, 200);
    let status = browser
        .get(&stack.url(&format!("/_wechat/qr/status?scene={scene}&wait=0")))
        .await;
    assert_eq!(status.json()["status"], "pending", "{}", status.body);
    assert!(stack
        .gateway_log()
        .contains("refused a push that reused a signed timestamp and nonce"));
}

#[tokio::test]
async fn with_a_key_only_safe_mode_pushes_are_accepted() {
    let stack = Stack::start_desktop_safe("scene_qr").await;
    let mut browser = Browser::new(DESKTOP_UA);
    let (scene, ticket) = new_qr(&stack, &mut browser, "%2F").await;
    let ts = now_secs().to_string();
    // A correctly signed plaintext push, and one claiming another mode.
    for extra in [
        "",
        "&encrypt_type=raw",
        "&encrypt_type=AES",
        "&encrypt_type=",
    ] {
        let status = signed_push(
            &stack,
            &ts,
            &format!("n{}", extra.len()),
            extra,
            wechat_e2e::scan_xml("oAttacker", &scene, 3),
        )
        .await;
        assert_eq!(status, 401, "plaintext push {extra:?}");
    }
    let plain = scan(&stack, json!({}), &ticket).await;
    assert_eq!(plain.0, 401, "the emulator's plaintext push");
    let status = |b: &mut Browser| {
        let url = stack.url(&format!("/_wechat/qr/status?scene={scene}&wait=0"));
        let mut b2 = Browser::new(DESKTOP_UA);
        b2.cookies = b.cookies.clone();
        async move { b2.get(&url).await.json()["status"].clone() }
    };
    assert_eq!(status(&mut browser).await, "pending");
    let safe = scan(&stack, json!({"safe_mode": true}), &ticket).await;
    assert_eq!(safe, (200, "success".to_owned()));
    assert_eq!(status(&mut browser).await, "confirmed");
    assert!(stack
        .gateway_log()
        .contains("refused a plaintext push: safe mode is configured"));
}

#[tokio::test]
async fn a_phone_browser_outside_wechat_is_told_to_open_the_page_in_wechat_not_shown_a_qr_code() {
    let stack = Stack::start_desktop("scene_qr").await;
    for ua in [
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36",
    ] {
        let page = Browser::new(ua)
            .get_with(&stack.url("/orders?id=7"), &[("Accept-Language", "en")])
            .await;
        assert_eq!(page.status, 401, "{}", page.body);
        assert!(page.body.contains("Open this page in WeChat"), "{ua}: {}", page.body);
        assert!(!page.body.contains("/qr/new"), "no QR code it can't scan: {}", page.body);
        // The address as a code for another phone's WeChat to scan.
        assert!(page.body.contains("<svg"), "{}", page.body);
        assert!(
            page.body.contains(&stack.url("/orders?id=7").replace('&', "&amp;")),
            "the address to copy: {}",
            page.body
        );
    }
    // A desktop browser still gets the QR code.
    let desktop = Browser::new(DESKTOP_UA).get(&stack.url("/orders")).await;
    assert!(desktop.body.contains("/qr/new"));
}

#[tokio::test]
async fn the_qr_page_carries_the_sites_branding_and_a_qr_template_replaces_its_shell() {
    let mut stack = Stack::start_desktop_with("scene_qr", false, "site_name = \"<Shop>\"").await;
    let page = Browser::new(DESKTOP_UA).get(&stack.url("/orders")).await;
    assert_eq!(page.status, 401);
    assert!(
        page.body
            .contains("<span class=\"site\">&lt;Shop&gt;</span>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("/_wechat/qr/image"));

    let templates = wechat_e2e::ScratchDir::new("qr-templates");
    std::fs::write(templates.join("page.html"), "<p>{{title}}</p>").unwrap();
    std::fs::write(
        templates.join("qr.html"),
        "<html lang=\"{{lang}}\"><body class=\"ours\"><b>{{site_name}}</b><h1>{{title}}</h1>{{qr}}{{script}}</body></html>",
    )
    .unwrap();
    let templates_dir = format!("{:?}", templates.display().to_string());
    stack
        .restart_gateway_with(&[("WECHAT_GATEWAY__GATEWAY__TEMPLATES_DIR", &templates_dir)])
        .await;
    let page = Browser::new(DESKTOP_UA)
        .get_with(&stack.url("/orders"), &[("Accept-Language", "en")])
        .await;
    assert_eq!(page.status, 401);
    assert!(
        page.body.starts_with(
            "<html lang=\"en\"><body class=\"ours\"><b>&lt;Shop&gt;</b><h1>Log in with WeChat</h1>"
        ),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("<img id=\"qr\"") && page.body.contains("/_wechat/qr/status"),
        "{}",
        page.body
    );

    // A qr.html without the script would be a dead page: refused at start.
    std::fs::write(templates.join("qr.html"), "<h1>{{title}}</h1>{{qr}}").unwrap();
    stack
        .gateway_env
        .push(("WECHAT_GATEWAY__STORE__URL".into(), "memory".into()));
    let mut broken = stack.spawn_gateway("broken-qr-template", &[]);
    assert_eq!(broken.wait_exit(Duration::from_secs(10)), Some(1));
    let said = broken.log_text();
    assert!(
        said.contains("qr.html") && said.contains("{{script}}"),
        "{said}"
    );
}
