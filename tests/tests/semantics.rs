//! Complete login semantics over real HTTP: every WeChat answer handled,
//! tokens on the server, sessions that rotate, hostile input. WeChat's
//! misbehaviour is scripted through the emulator's control routes.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::json;
use wechat_e2e::{absolute, Answer, Browser, Stack, WECHAT_UA};

/// Starts a login at `path` and returns the browser (holding the state
/// cookie) and the callback URL the emulator sends it to.
async fn to_callback(stack: &Stack, path: &str) -> (Browser, String) {
    let mut browser = Browser::new(WECHAT_UA);
    let first = browser.get(&stack.url(path)).await;
    assert_eq!(first.status, 302, "{}", first.body);
    let consent = browser.get(first.location()).await;
    assert_eq!(consent.status, 302, "{}", consent.body);
    (browser, consent.location().to_owned())
}

fn session_cookie(answer: &Answer) -> Option<String> {
    answer
        .headers_named("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("wechat_session=") && !c.contains("Max-Age=0"))
        .map(|c| c.split(';').next().unwrap().to_owned())
}

async fn echo_with(stack: &Stack, cookie: &str) -> Answer {
    let mut b = Browser::new(WECHAT_UA);
    b.get_with(
        &stack.url("/echo"),
        &[("Cookie", cookie), ("X-Requested-With", "XMLHttpRequest")],
    )
    .await
}

#[tokio::test]
async fn two_hundred_identical_callbacks_make_one_exchange_and_all_log_in() {
    let stack = Stack::start().await;
    let user = stack.emulator("user").await;
    // A slow WeChat makes sure the duplicates arrive while the exchange runs.
    stack
        .control(
            "faults",
            json!({"endpoint": "access_token", "delay_ms": 300}),
        )
        .await;
    let (browser, callback) = to_callback(&stack, "/echo?tab=1").await;
    let cookie = browser.cookie_header();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (client, callback, cookie) = (client.clone(), callback.clone(), cookie.clone());
        tasks.push(tokio::spawn(async move {
            let r = client
                .get(&callback)
                .header("Cookie", cookie)
                .header("User-Agent", WECHAT_UA)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let location = r
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned());
            let session = r
                .headers()
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .find(|c| c.starts_with("wechat_session="))
                .map(|c| c.split(';').next().unwrap().to_owned());
            (status, location, session)
        }));
    }
    let mut sessions = Vec::new();
    for t in tasks {
        let (status, location, session) = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("bounded")
            .unwrap();
        assert_eq!(status, 302);
        assert_eq!(location.as_deref(), Some("/echo?tab=1"));
        sessions.push(session.expect("every duplicate gets a session"));
    }
    assert_eq!(stack.calls("access_token").await, 1, "exactly one exchange");
    for session in sessions.iter().step_by(20) {
        let echo = echo_with(&stack, session).await;
        assert_eq!(echo.status, 200);
        assert_eq!(echo.json()["headers"]["x-wechat-openid"][0], user["openid"]);
    }
    // A later duplicate from a browser that still has the state cookie: same outcome.
    let mut late = Browser::new(WECHAT_UA);
    late.cookies = browser.cookies.clone();
    let again = late.get(&callback).await;
    assert_eq!(again.status, 302);
    assert!(session_cookie(&again).is_some());
    // A refresh of the callback page after the login: no error page.
    let mut refreshed = Browser::new(WECHAT_UA);
    refreshed.cookies.insert(
        "wechat_session".into(),
        sessions[0]["wechat_session=".len()..].to_owned(),
    );
    let page = refreshed.get(&callback).await;
    assert_eq!((page.status, page.location()), (302, "/echo?tab=1"));
    assert_eq!(stack.calls("access_token").await, 1);
}

#[tokio::test]
async fn system_busy_is_retried_and_an_answered_code_is_never_sent_again() {
    let stack = Stack::start().await;
    stack
        .control(
            "faults",
            json!({"endpoint": "access_token", "errcode": -1, "count": 2}),
        )
        .await;
    let (mut browser, callback) = to_callback(&stack, "/echo").await;
    let back = browser.get(&callback).await;
    assert_eq!(back.status, 302, "{}", back.body);
    assert_eq!(stack.calls("access_token").await, 3, "two retries after -1");

    stack
        .control(
            "faults",
            json!({"endpoint": "access_token", "errcode": 40029}),
        )
        .await;
    let (mut browser, callback) = to_callback(&stack, "/echo").await;
    let answer = browser.get(&callback).await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        stack.calls("access_token").await,
        4,
        "an answered code is not retried"
    );
}

#[tokio::test]
async fn a_slow_or_down_wechat_gets_a_retry_page_in_bounded_time() {
    let mut stack = Stack::start_with("timeout_ms = 400\nretries = 1", "").await;
    stack
        .control(
            "faults",
            json!({"endpoint": "access_token", "delay_ms": 5000, "count": 5}),
        )
        .await;
    let (mut browser, callback) = to_callback(&stack, "/orders").await;
    let started = Instant::now();
    let answer = browser.get(&callback).await;
    let took = started.elapsed();
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(
        answer.body.contains("/_wechat/login?rd=%2Forders"),
        "retry link"
    );
    assert!(answer.header("retry-after").is_some());
    // timeout × attempts + backoff + 1 s
    assert!(
        took < Duration::from_millis(400 * 2 + 200 + 1000),
        "{took:?}"
    );

    let (mut browser, callback) = to_callback(&stack, "/orders").await;
    stack.stop_emulator();
    let started = Instant::now();
    let answer = browser.get(&callback).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(answer.body.contains("/_wechat/login?rd=%2Forders"));
}

#[tokio::test]
async fn wechat_errcodes_become_the_right_pages_and_log_lines() {
    let stack = Stack::start().await;
    let cases: [(i64, u16, &str); 9] = [
        (40029, 400, "/_wechat/login?rd=%2Fp"),
        (42003, 400, "/_wechat/login?rd=%2Fp"),
        (40163, 302, ""),
        (40125, 500, "[wechat] secret"),
        (40013, 500, "[wechat] appid"),
        (40164, 500, "IP whitelist"),
        (45009, 503, "/_wechat/login?rd=%2Fp"),
        (45011, 503, "/_wechat/login?rd=%2Fp"),
        (99999, 502, "错误码 99999"),
    ];
    for (errcode, status, expect) in cases {
        stack
            .control(
                "faults",
                json!({"endpoint": "access_token", "errcode": errcode}),
            )
            .await;
        let (mut browser, callback) = to_callback(&stack, "/p").await;
        let answer = browser.get(&callback).await;
        assert_eq!(answer.status, status, "{errcode}: {}", answer.body);
        match status {
            302 => assert_eq!(
                answer.location(),
                "/_wechat/login?rd=%2Fp",
                "40163 restarts the login"
            ),
            500 => {
                assert!(
                    !answer.body.contains("secret"),
                    "the page names nothing internal"
                );
                let log = stack.gateway_log();
                let line = log
                    .lines()
                    .find(|l| l.contains(expect) && l.contains("ERROR"));
                assert!(
                    line.is_some(),
                    "{errcode}: one error line naming {expect}:\n{log}"
                );
            }
            503 => {
                assert_eq!(answer.header("retry-after"), Some("60"));
                assert!(answer.body.contains(expect));
            }
            _ => assert!(answer.body.contains(expect), "{errcode}: {}", answer.body),
        }
        assert!(
            !answer.body.contains("injected"),
            "WeChat's errmsg is not shown to users"
        );
    }
}

#[tokio::test]
async fn snapshot_users_are_refused_unless_allowed_and_then_marked() {
    let stack = Stack::start().await;
    stack.control("user", json!({"snapshot": true})).await;
    let (mut browser, callback) = to_callback(&stack, "/echo").await;
    let answer = browser.get(&callback).await;
    assert_eq!(answer.status, 403);
    assert!(session_cookie(&answer).is_none());

    let allowed = Stack::start_with("", "allow_snapshot_users = true").await;
    allowed.control("user", json!({"snapshot": true})).await;
    let (mut browser, callback) = to_callback(&allowed, "/echo").await;
    let back = browser.get(&callback).await;
    assert_eq!(back.status, 302);
    let echo = browser.get(&allowed.url("/echo")).await.json();
    assert_eq!(echo["headers"]["x-wechat-snapshot"][0], "1");
    let mut normal = Browser::new(WECHAT_UA);
    allowed
        .control("user", json!({"snapshot": false, "key": "user-2"}))
        .await;
    allowed.wechat_login(&mut normal, "/echo").await;
    let echo = normal.get(&allowed.url("/echo")).await.json();
    assert!(echo["headers"].get("x-wechat-snapshot").is_none());
}

#[tokio::test]
async fn userinfo_paths_upgrade_a_base_session_and_keep_the_openid() {
    let stack = Stack::start_with(
        "scope = \"snsapi_base\"",
        "userinfo_paths = [\"/echo/profile\"]",
    )
    .await;
    let user = stack.emulator("user").await;
    let mut browser = Browser::new(WECHAT_UA);
    let first = browser.get(&stack.url("/echo")).await;
    assert!(first.location().contains("&scope=snsapi_base&"));
    let consent = browser.get(first.location()).await;
    browser.get(consent.location()).await;
    let echo = browser.get(&stack.url("/echo")).await.json();
    assert_eq!(echo["headers"]["x-wechat-openid"][0], user["openid"]);
    assert_eq!(echo["headers"]["x-wechat-scope"][0], "snsapi_base");
    assert!(echo["headers"].get("x-wechat-nickname").is_none());
    assert_eq!(stack.calls("userinfo").await, 0);

    let upgrade = browser.get(&stack.url("/echo/profile")).await;
    assert_eq!(upgrade.status, 302);
    assert!(
        upgrade.location().contains("&scope=snsapi_userinfo&"),
        "{}",
        upgrade.location()
    );
    let consent = browser.get(upgrade.location()).await;
    let back = browser.get(consent.location()).await;
    assert_eq!(back.location(), "/echo/profile");
    let echo = browser.get(&stack.url("/echo/profile")).await.json();
    assert_eq!(
        echo["headers"]["x-wechat-openid"][0], user["openid"],
        "same openid"
    );
    assert_eq!(echo["nickname"], user["nickname"]);
    let info = browser.get(&stack.url("/_wechat/userinfo")).await.json();
    assert_eq!(info["nickname"], user["nickname"]);
}

#[tokio::test]
async fn tokens_stay_on_the_server_refresh_when_needed_and_their_end_ends_the_session() {
    let stack = Stack::start().await;
    // Access tokens that are always within the refresh margin.
    stack
        .control("settings", json!({"token_ttl_secs": 60}))
        .await;
    let mut browser = Browser::new(WECHAT_UA);
    stack.wechat_login(&mut browser, "/echo").await;
    let cookie = browser.cookies["wechat_session"].clone();
    let issued = stack.emulator("issued").await;
    for token in issued["access_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .chain(issued["refresh_tokens"].as_array().unwrap())
    {
        assert!(!cookie.contains(token.as_str().unwrap()));
    }

    stack
        .control("user", json!({"nickname": "新昵称 ✨"}))
        .await;
    let refreshed = browser.get(&stack.url("/_wechat/userinfo?refresh=1")).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_eq!(refreshed.json()["nickname"], "新昵称 ✨");
    assert_eq!(
        stack.calls("refresh_token").await,
        1,
        "refreshed before use"
    );
    let echo = browser.get(&stack.url("/echo")).await.json();
    assert_eq!(
        echo["nickname"], "新昵称 ✨",
        "the session carries the new profile"
    );

    let checked = browser.get(&stack.url("/_wechat/userinfo?check=1")).await;
    assert_eq!(checked.status, 200, "{}", checked.body);
    assert_eq!(checked.json()["checked"], true);
    assert_eq!(stack.calls("auth").await, 1);

    for errcode in [40030, 42002] {
        let mut browser = Browser::new(WECHAT_UA);
        stack.wechat_login(&mut browser, "/echo").await;
        stack
            .control(
                "faults",
                json!({"endpoint": "refresh_token", "errcode": errcode}),
            )
            .await;
        let ended = browser.get(&stack.url("/_wechat/userinfo?refresh=1")).await;
        assert_eq!(ended.status, 401, "{errcode}: {}", ended.body);
        assert_eq!(ended.json()["error"], "login_required");
        assert!(
            !browser.cookies.contains_key("wechat_session"),
            "session cookie removed"
        );
        let page = browser.get(&stack.url("/echo")).await;
        assert_eq!(page.status, 302, "a new login starts");
    }
}

#[tokio::test]
async fn keys_rotate_without_logging_anyone_out_and_logout_forgets_tokens() {
    let old = format!("old-cookie-key-{}", wechat_e2e::random(24));
    let new = format!("new-cookie-key-{}", wechat_e2e::random(24));
    let mut stack = Stack::start().await;
    stack
        .start_gateway("", &format!("cookie_secrets = [\"{old}\"]"), "")
        .await;
    let mut before = Browser::new(WECHAT_UA);
    stack.wechat_login(&mut before, "/echo").await;
    let old_session = before.cookie_header();

    stack
        .start_gateway("", &format!("cookie_secrets = [\"{new}\", \"{old}\"]"), "")
        .await;
    assert_eq!(
        echo_with(&stack, &old_session).await.status,
        200,
        "old sessions still open"
    );
    let mut after = Browser::new(WECHAT_UA);
    stack.wechat_login(&mut after, "/echo").await;
    let new_session = after.cookie_header();

    stack
        .start_gateway("", &format!("cookie_secrets = [\"{new}\"]"), "")
        .await;
    assert_eq!(
        echo_with(&stack, &new_session).await.status,
        200,
        "sealed with the new key"
    );
    assert_eq!(
        echo_with(&stack, &old_session).await.status,
        401,
        "the old key is retired"
    );

    // Logout deletes the cookie and the stored tokens.
    let out = after.get(&stack.url("/_wechat/logout")).await;
    assert_eq!((out.status, out.location()), (302, "/"));
    assert!(!after.cookies.contains_key("wechat_session"));
    let mut replay = Browser::new(WECHAT_UA);
    replay
        .get_with(
            &stack.url("/_wechat/userinfo?refresh=1"),
            &[("Cookie", &new_session)],
        )
        .await;
    let answer = replay.seen.last().unwrap();
    assert_eq!(
        answer.status, 401,
        "no tokens are left for the logged-out session"
    );

    let mut bye = Stack::start_with("", "logout_redirect = \"/goodbye\"").await;
    let mut browser = Browser::new(WECHAT_UA);
    bye.wechat_login(&mut browser, "/echo").await;
    assert_eq!(
        browser.get(&bye.url("/_wechat/logout")).await.location(),
        "/goodbye"
    );
    bye.stop_emulator();
}

#[tokio::test]
async fn the_longest_nickname_keeps_the_session_cookie_under_4_kib() {
    let stack = Stack::start().await;
    let longest = "🐼微信用户".repeat(60);
    stack.control("user", json!({"nickname": longest})).await;
    let mut browser = Browser::new(WECHAT_UA);
    let back = stack.wechat_login(&mut browser, "/echo").await;
    let set = back
        .headers_named("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("wechat_session="))
        .unwrap()
        .to_owned();
    assert!(set.len() < 4096, "{} bytes", set.len());
    let echo = browser.get(&stack.url("/echo")).await.json();
    let nickname = echo["nickname"].as_str().unwrap();
    assert!(longest.starts_with(nickname) && nickname.len() > 200);
}

#[tokio::test]
async fn parallel_logins_in_several_tabs_all_succeed_and_state_cookies_stay_few() {
    let stack = Stack::start().await;
    let mut browser = Browser::new(WECHAT_UA);
    let tab1 = browser.get(&stack.url("/echo?tab=1")).await;
    let tab2 = browser.get(&stack.url("/echo?tab=2")).await;
    let consent2 = browser.get(tab2.location()).await;
    let consent1 = browser.get(tab1.location()).await;
    let back2 = browser.get(consent2.location()).await;
    assert_eq!(back2.location(), "/echo?tab=2");
    let back1 = browser.get(consent1.location()).await;
    assert_eq!(back1.location(), "/echo?tab=1", "{}", back1.body);
    assert_eq!(stack.calls("access_token").await, 2);

    let mut many = Browser::new(WECHAT_UA);
    for i in 0..8 {
        many.get(&stack.url(&format!("/tab{i}"))).await;
        let states = many
            .cookies
            .keys()
            .filter(|k| k.starts_with("wechat_state_"))
            .count();
        assert!(
            states <= 5,
            "{states} state cookies after {i} logins started"
        );
    }
    let header = many.cookie_header();
    assert!(header.len() < 4096, "{}", header.len());
}

/// Sends raw bytes to the gateway and returns the status code it answers.
fn raw_status(stack: &Stack, request: &[u8]) -> u16 {
    let addr = stack.gateway_url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head);
    line.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn hostile_input_gets_a_clear_4xx_never_a_500() {
    let stack = Stack::start().await;
    let (mut browser, callback) = to_callback(&stack, "/echo").await;
    let state = wechat_e2e::query_param(&callback, "state");
    let long = "C".repeat(8000);
    for query in [
        format!("code={long}&state={state}"),
        format!("code=%FF%FE%00&state={state}"),
        format!("code=a%0D%0Ab&state={state}"),
        format!("code=x&state={}", "a".repeat(129)),
        format!("code=x&state={state}%FF"),
        format!("code=x&code=y&state={state}"),
        "state=%E4%B8%AD".to_owned(),
    ] {
        let answer = browser
            .get(&stack.url(&format!("/_wechat/callback?{query}")))
            .await;
        assert_eq!(answer.status, 400, "{query:.60}: {}", answer.body);
    }
    assert_eq!(stack.calls("access_token").await, 0);

    for rd in [
        "%0D%0ALocation:%20https://evil.example",
        "//evil.example",
        "%2F%2Fevil",
        "%FF%FE",
    ] {
        let answer = browser
            .get(&stack.url(&format!("/_wechat/login?rd={rd}")))
            .await;
        assert_eq!(answer.status, 302);
        assert!(answer.location().starts_with(&stack.emulator_url));
    }

    // A 10 KiB Cookie header of junk, and one with a valid session inside.
    let junk = format!("junk={}", "x".repeat(10 * 1024));
    let answer = browser
        .get_with(&stack.url("/echo"), &[("Cookie", &junk)])
        .await;
    assert!(
        answer.status == 302 || answer.status == 431 || answer.status == 400,
        "{}",
        answer.status
    );
    let mut user = Browser::new(WECHAT_UA);
    stack.wechat_login(&mut user, "/echo").await;
    let big = format!("{}; pad={}", user.cookie_header(), "y".repeat(6 * 1024));
    let answer = echo_with(&stack, &big).await;
    assert_eq!(
        answer.status, 200,
        "a big but valid Cookie header still works"
    );

    let gw = &stack;
    for request in [
        b"GET /echo HTTP/1.1\r\nHost: x\r\nCookie: wechat_session=\xff\xfe\xfd\r\nUser-Agent: MicroMessenger\r\n\r\n".to_vec(),
        b"GET /_wechat/callback?code=\xff&state=abc HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"GET /echo HTTP/1.1\r\nHost: x\r\nAccept-Language: \xff\r\nX-Requested-With: \xc3\r\n\r\n".to_vec(),
        b"GET /\xe4\xb8\xad HTTP/1.1\r\nHost: x\r\nUser-Agent: MicroMessenger\r\n\r\n".to_vec(),
    ] {
        let status = raw_status(gw, &request);
        assert!((300..500).contains(&status), "{status} for {:?}", String::from_utf8_lossy(&request));
    }
    // Still serving afterwards.
    let mut again = Browser::new(WECHAT_UA);
    assert_eq!(stack.wechat_login(&mut again, "/echo").await.status, 302);
    let logs = stack.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(!logs.contains(&stack.app_secret));
    let _ = absolute;
}
