//! Security tests that try to break in: session fixation, state replay,
//! CRLF and header injection through every value a user controls, and the
//! cookie flags. (The log scan for secrets runs in every stack's `Drop`.)

use serde_json::json;
use wechat_e2e::{Browser, Stack, DESKTOP_UA, WECHAT_UA};

fn set_cookies<'a>(answer: &'a wechat_e2e::Answer, prefix: &str) -> Vec<&'a str> {
    answer
        .headers_named("set-cookie")
        .into_iter()
        .filter(|c| c.starts_with(prefix))
        .collect()
}

fn session_of(answer: &wechat_e2e::Answer) -> String {
    set_cookies(answer, "wechat_session=")
        .into_iter()
        .find(|c| !c.contains("Max-Age=0"))
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_session_cookie_from_before_the_login_is_never_promoted() {
    let stack = Stack::start().await;
    let mut browser = Browser::new(WECHAT_UA);
    let first_login = stack.wechat_login(&mut browser, "/orders").await;
    let before = session_of(&first_login);
    // The same browser (or one an attacker planted a cookie in) logs in again.
    browser.cookies.insert("wechat_planted".into(), "x".into());
    let login = browser.get(&stack.url("/_wechat/login?rd=%2Forders")).await;
    assert_eq!(login.status, 302);
    let consent = browser.get(login.location()).await;
    let back = browser.get(consent.location()).await;
    assert_eq!(back.status, 302, "{}", back.body);
    let after = session_of(&back);
    assert_ne!(after, before, "a fresh session cookie is issued");
    let sealer = wechat_oauth::seal::Sealer::new(&wechat_oauth::secret::Secret::new(
        stack.cookie_secret.clone(),
    ))
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let open = |c: &str| {
        wechat_oauth::session::open_session(&sealer, c.split_once('=').unwrap().1, now)
            .expect("a session the gateway sealed")
    };
    assert_ne!(open(&before).sid, open(&after).sid, "a new session id");

    // A planted session value that is not ours never passes, and a login replaces it.
    let mut victim = Browser::new(WECHAT_UA);
    victim
        .cookies
        .insert("wechat_session".into(), "attacker-chosen-value".into());
    let page = victim.get(&stack.url("/orders")).await;
    assert_eq!(page.status, 302, "the planted value is no session");
    let consent = victim.get(page.location()).await;
    let back = victim.get(consent.location()).await;
    assert_ne!(session_of(&back), "wechat_session=attacker-chosen-value");
}

#[tokio::test]
async fn a_used_state_cookie_cannot_carry_another_code() {
    let stack = Stack::start().await;
    let mut victim = Browser::new(WECHAT_UA);
    victim.store_cookies = true;
    let first = victim.get(&stack.url("/orders")).await;
    let consent = victim.get(first.location()).await;
    let callback = consent.location().to_owned();
    let leaked_cookies = victim.cookies.clone();
    let back = victim.get(&callback).await;
    assert_eq!(back.status, 302, "{}", back.body);

    // Someone holding the used state cookie brings a code of their own.
    let mut attacker = Browser::new(WECHAT_UA);
    let own = attacker.get(&stack.url("/elsewhere")).await;
    let own_consent = attacker.get(own.location()).await;
    let own_code = wechat_e2e::query_param(own_consent.location(), "code");
    let state = wechat_e2e::query_param(&callback, "state");
    let mut replay = Browser::new(WECHAT_UA);
    replay.cookies = leaked_cookies.clone();
    let replayed = replay
        .get(&stack.url(&format!("/_wechat/callback?code={own_code}&state={state}")))
        .await;
    assert_eq!(replayed.status, 400, "{}", replayed.body);
    assert!(set_cookies(&replayed, "wechat_session=")
        .iter()
        .all(|c| c.contains("Max-Age=0")));
    assert!(
        replayed.body.contains("/_wechat/login"),
        "a way to log in again"
    );

    // The victim's own duplicate callback (same state, same code) still ends logged in.
    let mut duplicate = Browser::new(WECHAT_UA);
    duplicate.cookies = leaked_cookies;
    let again = duplicate.get(&callback).await;
    assert_eq!(again.status, 302, "{}", again.body);
    assert_eq!(again.location(), "/orders");
}

/// The raw response head of a request sent byte for byte.
fn raw_head(gateway_url: &str, request: &str) -> String {
    wechat_e2e::raw_request(gateway_url, request).0
}

#[tokio::test]
async fn crlf_in_any_user_value_never_makes_a_header() {
    let stack = Stack::start().await;
    const EVIL: &str = "%0D%0AX-Injected:%201%0D%0ASet-Cookie:%20injected=1";
    let targets = [
        format!("/_wechat/login?rd=%2Fa{EVIL}"),
        format!("/_wechat/login?rd=%2Fa&scope=snsapi_userinfo{EVIL}"),
        format!("/_wechat/login?rd=%2Fa&app=open{EVIL}"),
        format!("/a{EVIL}"),
        format!("/orders?x={EVIL}"),
        format!("/_wechat/callback?code=a{EVIL}&state=abc"),
        format!("/_wechat/callback?code=abc&state=s{EVIL}"),
        format!("/_wechat/logout?rd={EVIL}"),
        format!("/_wechat/qr/status?scene={EVIL}"),
        format!("/_wechat/userinfo?refresh=1{EVIL}"),
    ];
    let extra_headers = [
        String::new(),
        format!("Cookie: wechat_state_abc{EVIL}=1; wechat_session={EVIL}\r\n"),
        format!("X-Original-URI: /p{EVIL}\r\nX-Original-Method: GET{EVIL}\r\n"),
    ];
    for target in &targets {
        for extra in &extra_headers {
            for path in [target.clone(), "/_wechat/auth".to_owned()] {
                let head = raw_head(
                    &stack.gateway_url,
                    &format!(
                        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {WECHAT_UA}\r\n{extra}Connection: close\r\n\r\n"
                    ),
                );
                assert!(head.starts_with("HTTP/1.1 "), "{path}: {head}");
                let status: u16 = head[9..12].parse().unwrap();
                assert!(status < 500, "{path} {extra:?}: {head}");
                for line in head.lines().skip(1) {
                    let lower = line.to_ascii_lowercase();
                    assert!(
                        !lower.starts_with("x-injected")
                            && !lower.starts_with("set-cookie: injected"),
                        "{path} {extra:?} injected a header:\n{head}"
                    );
                }
            }
        }
    }

    // A nickname with CR/LF from WeChat reaches the application percent-encoded.
    stack
        .control("user", json!({"nickname": "evil\r\nX-Injected: 1"}))
        .await;
    let mut browser = Browser::new(WECHAT_UA);
    let back = stack.wechat_login(&mut browser, "/echo").await;
    assert_eq!(back.status, 302, "{}", back.body);
    let echo = browser.get(&stack.url("/echo")).await.json();
    assert!(echo["headers"].get("x-injected").is_none(), "{echo}");
    assert_eq!(
        echo["headers"]["x-wechat-nickname"],
        json!(["evil%0D%0AX-Injected%3A%201"])
    );
}

fn assert_flags(cookie: &str, secure: bool) {
    let lower = cookie.to_ascii_lowercase();
    assert!(lower.contains("; httponly"), "{cookie}");
    assert!(lower.contains("; samesite=lax"), "{cookie}");
    assert!(lower.contains("; path=/"), "{cookie}");
    assert_eq!(lower.contains("; secure"), secure, "{cookie}");
}

#[tokio::test]
async fn every_gate_cookie_is_httponly_samesite_lax_and_secure_behind_https() {
    let stack = Stack::start().await;
    let mut browser = Browser::new(WECHAT_UA);
    let first = browser.get(&stack.url("/orders")).await;
    let consent = browser.get(first.location()).await;
    let back = browser.get(consent.location()).await;
    let logout = browser.get(&stack.url("/_wechat/logout")).await;
    let mut seen = 0;
    for answer in [&first, &back, &logout] {
        for cookie in set_cookies(answer, "wechat_") {
            assert_flags(cookie, false);
            seen += 1;
        }
    }
    assert!(seen >= 3, "state, session and its removal: {seen}");

    let behind = Stack::start_behind("https://app.example.test").await;
    let mut browser = Browser::new(WECHAT_UA);
    let first = browser.get(&behind.url("/orders")).await;
    assert_eq!(first.status, 302);
    browser
        .cookies
        .insert("__Host-wechat_session".into(), "x".into());
    let logout = browser.get(&behind.url("/_wechat/logout")).await;
    let removal = set_cookies(&logout, "__Host-wechat_session=");
    assert_eq!(removal.len(), 1, "{:?}", logout.headers);
    assert!(!removal[0].to_ascii_lowercase().contains("domain="));
    let cookies: Vec<&str> = set_cookies(&first, "wechat_")
        .into_iter()
        .chain(removal)
        .collect();
    assert!(cookies.len() >= 2, "{cookies:?}");
    for cookie in cookies {
        assert_flags(cookie, true);
    }
}

#[tokio::test]
async fn a_copy_of_a_logged_out_session_cookie_no_longer_passes() {
    let stack = Stack::start().await;
    let mut browser = Browser::new(WECHAT_UA);
    let back = stack.wechat_login(&mut browser, "/echo").await;
    assert_eq!(back.status, 302);
    let copied = browser.cookie_header();
    assert_eq!(browser.get(&stack.url("/echo")).await.status, 200);
    let out = browser.get(&stack.url("/_wechat/logout")).await;
    assert_eq!(out.status, 302);
    let mut replay = Browser::new(WECHAT_UA);
    let page = replay
        .get_with(
            &stack.url("/echo"),
            &[("Cookie", &copied), ("X-Requested-With", "XMLHttpRequest")],
        )
        .await;
    assert_eq!(page.status, 401, "{}", page.body);
}

/// A browser of the attacker's with a fresh login of its own started: its
/// state cookie, and the state WeChat would send back with it.
async fn attacker_with_own_state(stack: &Stack) -> (Browser, String) {
    let mut attacker = Browser::new(WECHAT_UA);
    let start = attacker.get(&stack.url("/elsewhere")).await;
    assert_eq!(start.status, 302, "{}", start.body);
    let state = wechat_e2e::query_param(start.location(), "state");
    (attacker, state)
}

#[tokio::test]
async fn a_leaked_code_never_logs_a_second_browser_in() {
    let stack = Stack::start().await;
    let mut victim = Browser::new(WECHAT_UA);
    let back = stack.wechat_login(&mut victim, "/orders").await;
    assert_eq!(back.status, 302, "{}", back.body);
    let leaked = back.url.clone();
    let code = wechat_e2e::query_param(&leaked, "code");

    // Through the gateway's callback, with the attacker's own fresh state.
    let (mut attacker, state) = attacker_with_own_state(&stack).await;
    let tried = attacker
        .get(&stack.url(&format!("/_wechat/callback?code={code}&state={state}")))
        .await;
    assert_eq!(tried.status, 400, "{}", tried.body);
    assert!(set_cookies(&tried, "wechat_session=").is_empty());
    assert!(tried.body.contains("/_wechat/login"), "a fresh login start");
    let page = attacker
        .get_with(
            &stack.url("/echo"),
            &[("X-Requested-With", "XMLHttpRequest")],
        )
        .await;
    assert_eq!(page.status, 401, "the attacker is not logged in");

    // Through the front end's hand-off: JSON, nothing of the login.
    let (mut attacker, state) = attacker_with_own_state(&stack).await;
    let tried = attacker
        .post_json(
            &stack.url("/_wechat/exchange"),
            &json!({"code": code, "state": state}),
        )
        .await;
    assert_eq!(tried.status, 400, "{}", tried.body);
    assert_eq!(tried.json()["error"], "invalid_grant", "{}", tried.body);
    assert!(tried.json().get("openid").is_none());
    assert!(set_cookies(&tried, "wechat_session=").is_empty());

    assert_eq!(
        stack.calls("access_token").await,
        1,
        "no exchange for the replays"
    );
    assert!(stack
        .gateway_log()
        .contains("refused a code that came back with another browser's state"));
}

/// Paths that climb out of the public `/static/` to the protected `/echo`.
const PAST_PUBLIC: [&str; 7] = [
    "/static/../echo",
    "/static/%2e%2e/echo",
    "/static/%2E%2e/echo",
    "/static/.%2e/echo",
    "/static//../echo",
    "/%73tatic/../echo",
    "/static/./../echo",
];

/// Paths with no safe canonical form.
const NO_CANONICAL_FORM: [&str; 7] = [
    "/static/..%2fecho",
    "/static/..%2Fecho",
    "/static/..%5cecho",
    "/static/..;/echo",
    "/static%00/x",
    "/..",
    "/static/../../echo",
];

#[tokio::test]
async fn dot_segments_never_walk_past_a_public_path() {
    let stack = Stack::start().await;
    let xhr = "X-Requested-With: XMLHttpRequest\r\n";
    for target in PAST_PUBLIC {
        let (status, body) = wechat_e2e::raw_get(&stack.gateway_url, target, xhr);
        assert_eq!(status, 401, "{target} needs a login: {body}");
    }
    for target in NO_CANONICAL_FORM {
        let (status, body) = wechat_e2e::raw_get(&stack.gateway_url, target, xhr);
        assert_eq!(status, 400, "{target}: {body}");
    }
    let (status, body) = wechat_e2e::raw_get(&stack.gateway_url, "/static\\..\\echo", xhr);
    assert_eq!(status, 400, "a backslash: {body}");
    // A public path still passes, and what the application gets is the
    // canonical path the gate decided on.
    let (status, body) = wechat_e2e::raw_get(&stack.gateway_url, "/echo/x/../public?q=1", "");
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (echo["path"].as_str(), echo["query"].as_str()),
        (Some("/echo/public"), Some("q=1"))
    );

    // With a session, the application sees the canonical path too.
    let mut browser = Browser::new(WECHAT_UA);
    stack.wechat_login(&mut browser, "/echo").await;
    let cookie = format!("Cookie: {}\r\n", browser.cookie_header());
    let (status, body) =
        wechat_e2e::raw_get(&stack.gateway_url, "/static/%2e%2e/echo/%7eme", &cookie);
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["path"], "/echo/~me");

    // The auth route (X-Original-URI is nginx's raw $request_uri).
    let auth = |uri: &str| {
        wechat_e2e::raw_get(
            &stack.gateway_url,
            "/_wechat/auth",
            &format!("X-Original-URI: {uri}\r\nX-Original-Method: GET\r\n"),
        )
        .0
    };
    for target in PAST_PUBLIC {
        assert_eq!(auth(target), 401, "auth route, {target}");
    }
    for target in NO_CANONICAL_FORM {
        assert_eq!(auth(target), 403, "auth route, {target}");
    }
    assert_eq!(auth("/static/app.js"), 202, "a public path passes");
}

#[tokio::test]
async fn dot_segments_never_skip_a_userinfo_path() {
    let stack = Stack::start_with(
        "scope = \"snsapi_base\"\n",
        "userinfo_paths = [\"/echo/profile\"]\n",
    )
    .await;
    let mut browser = Browser::new(WECHAT_UA);
    stack.wechat_login(&mut browser, "/echo").await;
    let cookie = format!(
        "Cookie: {}\r\nUser-Agent: {WECHAT_UA}\r\n",
        browser.cookie_header()
    );
    for target in [
        "/echo/profile",
        "/echo/x/../profile",
        "/echo/%70rofile",
        "/echo//profile",
    ] {
        let (head, _) = wechat_e2e::raw_request(
            &stack.gateway_url,
            &format!(
                "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{cookie}Connection: close\r\n\r\n"
            ),
        );
        assert_eq!(wechat_e2e::raw_status(&head), 302, "{target}: {head}");
        assert!(head.contains("scope=snsapi_userinfo"), "{target}: {head}");
    }
}

#[tokio::test]
async fn identity_headers_in_any_spelling_never_reach_the_application() {
    // snsapi_base: the session has no unionid.
    let stack = Stack::start_with("scope = \"snsapi_base\"\n", "").await;
    let spoofed = "X-WeChat-OpenID: oForged\r\nX_WeChat_OpenID: oForged\r\nx_wechat_unionid: uForged\r\n\
                   X-WeChat_UnionID: uForged\r\nX_WECHAT-SCOPE: snsapi_userinfo\r\nx-WECHAT-nickname: forged\r\n\
                   X_Wechat_Anything: forged\r\nX-WeChat-User: uForged\r\nx_wechat_user: uForged\r\n";
    // A public path: no identity, and none of the client's.
    let (status, body) = wechat_e2e::raw_get(&stack.gateway_url, "/echo/public", spoofed);
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.contains("Forged") && !body.contains("forged"),
        "{body}"
    );
    // A session without a unionid: the client's unionid does not stand in.
    let mut browser = Browser::new(WECHAT_UA);
    stack.wechat_login(&mut browser, "/echo").await;
    let headers = format!("Cookie: {}\r\n{spoofed}", browser.cookie_header());
    let (status, body) = wechat_e2e::raw_get(&stack.gateway_url, "/echo", &headers);
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        !body.contains("Forged") && !body.contains("forged"),
        "{body}"
    );
    let names: Vec<&String> = echo["headers"].as_object().unwrap().keys().collect();
    assert!(
        names
            .iter()
            .all(|n| !n.replace('_', "-").starts_with("x-wechat-")
                || ["x-wechat-openid", "x-wechat-scope", "x-wechat-user"].contains(&n.as_str())),
        "{names:?}"
    );
    assert!(echo["headers"].get("x-wechat-unionid").is_none(), "{echo}");
    // Without a unionid the user key is the openid, never the client's.
    assert_eq!(
        echo["headers"]["x-wechat-user"], echo["headers"]["x-wechat-openid"],
        "{echo}"
    );
}

#[tokio::test]
async fn a_sibling_domains_cookie_is_no_session_and_gate_cookies_never_reach_the_app() {
    // On https, the session cookie is __Host-wechat_session: a cookie named
    // wechat_session (which a sibling subdomain could set) is not read.
    let behind = Stack::start_behind("https://app.example.test").await;
    let mut planted = Browser::new(WECHAT_UA);
    planted
        .cookies
        .insert("wechat_session".into(), "sibling-set".into());
    let answer = planted
        .get_with(
            &behind.url("/echo"),
            &[("X-Requested-With", "XMLHttpRequest")],
        )
        .await;
    assert_eq!(answer.status, 401);

    // Every spelling of the gate's cookies is removed before the application.
    let stack = Stack::start().await;
    let mut browser = Browser::new(WECHAT_UA);
    stack.wechat_login(&mut browser, "/echo").await;
    let cookie = format!(
        "{}; WECHAT_SESSION=a; __Host-wechat_session=b; __Secure-Wechat_Scene=c; Wechat_State_abc=d; keep=1",
        browser.cookie_header()
    );
    let echo = Browser::new(WECHAT_UA)
        .get_with(&stack.url("/echo"), &[("Cookie", cookie.as_str())])
        .await;
    assert_eq!(echo.status, 200, "{}", echo.body);
    assert_eq!(
        echo.json()["headers"]["cookie"],
        json!(["keep=1"]),
        "{}",
        echo.body
    );
}

const FORGED_FORWARDING: &str = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\
    X-Forwarded-Host: evil.example\r\nForwarded: for=6.6.6.6;host=evil.example\r\nX-Real-IP: 6.6.6.6\r\n\
    x-forwarded-for: 7.7.7.7\r\nX_Forwarded_For: 8.8.8.8\r\nX_Real_IP: 8.8.8.8\r\nx_forwarded_proto: https\r\n";

fn forwarding_seen(body: &str) -> serde_json::Value {
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    let h = &echo["headers"];
    for name in h.as_object().unwrap().keys() {
        assert!(
            !name.contains('_'),
            "a `_` spelling reached the application: {name}"
        );
    }
    assert!(!body.contains("8.8.8.8"), "{body}");
    json!([
        h["x-forwarded-for"],
        h["x-forwarded-proto"],
        h["x-forwarded-host"],
        h["forwarded"],
        h["x-real-ip"]
    ])
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_client_are_replaced() {
    let stack = Stack::start().await;
    let (status, body) = wechat_e2e::raw_get(&stack.gateway_url, "/echo/public", FORGED_FORWARDING);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        forwarding_seen(&body),
        json!([
            ["127.0.0.1"],
            ["http"],
            ["127.0.0.1"],
            ["for=127.0.0.1;proto=http;host=127.0.0.1"],
            ["127.0.0.1"]
        ])
    );
}

#[tokio::test]
async fn a_trusted_front_keeps_its_forwarding_chain() {
    let stack = Stack::start_with("", "trusted_proxies = [\"127.0.0.0/8\"]\n").await;
    let (status, body) = wechat_e2e::raw_get(&stack.gateway_url, "/echo/public", FORGED_FORWARDING);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        forwarding_seen(&body),
        json!([
            ["6.6.6.6, 7.7.7.7, 127.0.0.1"],
            ["https"],
            ["evil.example"],
            ["for=6.6.6.6;host=evil.example, for=127.0.0.1"],
            ["6.6.6.6"]
        ])
    );
}

#[tokio::test]
async fn logins_are_limited_per_client_address_and_a_forged_address_does_not_escape() {
    let stack = Stack::start_with("", "\n[limits]\nlogins_per_minute = 1\nlogin_burst = 3\n").await;
    let mut browser = Browser::new(WECHAT_UA);
    stack.wechat_login(&mut browser, "/echo").await; // one callback of the three
    let callback = |extra: &str| {
        wechat_e2e::raw_get(
            &stack.gateway_url,
            "/_wechat/callback?code=c&state=abcdefghijklmnopqrstuvwxyz012345",
            extra,
        )
    };
    assert_eq!(callback("").0, 400);
    // A client-chosen X-Forwarded-For is no other client.
    assert_eq!(callback("X-Forwarded-For: 198.51.100.1\r\n").0, 400);
    let (head, body) = wechat_e2e::raw_request(
        &stack.gateway_url,
        "GET /_wechat/callback?code=c&state=abcdefghijklmnopqrstuvwxyz012345 HTTP/1.1\r\n\
         Host: 127.0.0.1\r\nX-Forwarded-For: 198.51.100.2\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(wechat_e2e::raw_status(&head), 429, "{head}\n{body}");
    let retry: u64 = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("Retry-After: ")
                .or(l.strip_prefix("retry-after: "))
        })
        .expect("Retry-After")
        .trim()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // The hand-off answers JSON; a signed-in user still passes.
    let limited = browser
        .post_json(
            &stack.url("/_wechat/exchange"),
            &json!({"code": "c", "state": "s"}),
        )
        .await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.json()["error"], "temporarily_unavailable");
    assert_eq!(browser.get(&stack.url("/echo")).await.status, 200);
}

#[tokio::test]
async fn behind_a_trusted_front_each_forwarded_client_has_its_own_limit() {
    let stack = Stack::start_with(
        "",
        "trusted_proxies = [\"127.0.0.1\"]\n\n[limits]\nlogins_per_minute = 1\nlogin_burst = 2\n",
    )
    .await;
    let callback = |client: &str| {
        wechat_e2e::raw_get(
            &stack.gateway_url,
            "/_wechat/callback?code=c&state=abcdefghijklmnopqrstuvwxyz012345",
            &format!("X-Forwarded-For: {client}\r\n"),
        )
        .0
    };
    assert_eq!(
        [callback("198.51.100.1"), callback("198.51.100.1")],
        [400, 400]
    );
    assert_eq!(callback("198.51.100.1"), 429);
    assert_eq!(callback("198.51.100.2"), 400, "another client");
}

/// The phone scans `ticket` (in safe mode or not): the emulator's answer,
/// with the reply message it read (`reply.links`) or why it refused it
/// (`reply_error`).
async fn phone_scans(stack: &Stack, ticket: &str, safe_mode: bool) -> serde_json::Value {
    let scanned = Browser::new(WECHAT_UA)
        .post_json(
            &format!("{}/_emulator/scan", stack.emulator_url),
            &json!({"ticket": ticket, "safe_mode": safe_mode}),
        )
        .await;
    assert_eq!(scanned.status, 200, "{}", scanned.body);
    scanned.json()
}

fn qr_status(stack: &Stack, scene: &str, wait: u64) -> String {
    stack.url(&format!("/_wechat/qr/status?scene={scene}&wait={wait}"))
}

/// A desktop browser's new QR login and the confirmation link the phone
/// gets when it scans it.
async fn scanned_for_confirmation(
    stack: &Stack,
    desktop: &mut Browser,
    safe_mode: bool,
) -> (String, String) {
    let qr = desktop
        .qr_new(&stack.url("/_wechat/qr/new?rd=%2Forders"))
        .await;
    let scanned = phone_scans(stack, qr["ticket"].as_str().unwrap(), safe_mode).await;
    assert_eq!(scanned["status"], 200, "{scanned}");
    assert!(scanned["reply_error"].is_null(), "{scanned}");
    let body = scanned["body"].as_str().unwrap();
    assert_eq!(
        body.contains("qr/confirm"),
        !safe_mode,
        "in safe mode the reply is encrypted: {body}"
    );
    let link = scanned["reply"]["links"][0].as_str().unwrap().to_owned();
    assert!(
        link.starts_with(&stack.url("/_wechat/qr/confirm?t=")),
        "{link}"
    );
    (qr["scene"].as_str().unwrap().to_owned(), link)
}

#[tokio::test]
async fn a_shown_qr_code_logs_nobody_in_until_the_scanner_confirms_on_the_phone() {
    for safe_mode in [false, true] {
        let stack = Stack::start_scene_confirm(safe_mode, "").await;
        let victim = stack.emulator("user").await;
        // The attacker's desktop shows its QR code to the victim, who scans it.
        let mut attacker = Browser::new(DESKTOP_UA);
        let (scene, link) = scanned_for_confirmation(&stack, &mut attacker, safe_mode).await;
        let polled = attacker.get(&qr_status(&stack, &scene, 0)).await;
        assert_eq!(polled.json()["status"], "scanned", "{}", polled.body);
        assert!(
            polled.header("set-cookie").is_none(),
            "no session before the phone confirms"
        );

        // Nobody but the scanner may answer: no session, another user, a forged token.
        let confirm = format!("{link}&answer=confirm");
        let mut stranger = Browser::new(WECHAT_UA);
        assert_eq!(stranger.post_form(&confirm, &[]).await.status, 403);
        let forged = link.replace("t=", "t=A");
        assert_eq!(stranger.get(&forged).await.status, 400);
        let other = stack.url("/_wechat/qr/confirm?t=bm90IGEgdG9rZW4%3D");
        assert_eq!(stranger.get(&other).await.status, 400);
        stack.control("user", json!({"key": "someone-else"})).await;
        let elsewhere = stranger.follow(&link).await;
        assert_eq!(elsewhere.status, 403, "{}", elsewhere.body);
        assert_eq!(stranger.post_form(&confirm, &[]).await.status, 403);
        stack
            .control("user", json!({"key": victim["key"].as_str().unwrap()}))
            .await;

        // The victim's tap: a silent snsapi_base login, then the page.
        let mut phone = Browser::new(WECHAT_UA);
        let start = phone.get(&link).await;
        assert_eq!(start.status, 302, "{}", start.body);
        assert!(
            start.location().contains("scope=snsapi_base"),
            "{}",
            start.location()
        );
        let page = phone.follow(&link).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.url.starts_with(&link), "{}", page.url);
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
        assert!(
            page.body.contains("127.0.0.1") && page.body.contains("X11; Linux x86_64"),
            "the page shows where the login happens: {}",
            page.body
        );
        assert!(page.body.contains("answer=refuse"), "{}", page.body);
        assert_eq!(
            phone
                .post_form(&format!("{link}&answer=maybe"), &[])
                .await
                .status,
            400
        );
        // Still nothing for the desktop.
        assert_eq!(
            attacker.get(&qr_status(&stack, &scene, 0)).await.json()["status"],
            "scanned"
        );

        let poll_url = qr_status(&stack, &scene, 10);
        let cookie = attacker.cookie_header();
        let poll = tokio::spawn(async move {
            Browser::new(DESKTOP_UA)
                .get_with(&poll_url, &[("Cookie", &cookie)])
                .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let confirmed = phone.post_form(&confirm, &[]).await;
        assert_eq!(confirmed.status, 200, "{}", confirmed.body);
        let polled = poll.await.unwrap();
        assert_eq!(polled.json()["status"], "confirmed", "{}", polled.body);
        let session = session_of(&polled);
        let echo = Browser::new(DESKTOP_UA)
            .get_with(&stack.url("/echo"), &[("Cookie", &session)])
            .await;
        assert_eq!(
            echo.json()["headers"]["x-wechat-openid"][0],
            victim["openid"]
        );

        // One answer per scan: a second confirmation or a late refusal changes nothing.
        assert_eq!(phone.post_form(&confirm, &[]).await.status, 410);
        assert_eq!(
            phone
                .post_form(&format!("{link}&answer=refuse"), &[])
                .await
                .status,
            410
        );
        assert_eq!(
            attacker.get(&qr_status(&stack, &scene, 0)).await.json()["status"],
            "expired"
        );
    }
}

#[tokio::test]
async fn a_scan_refused_on_the_phone_ends_the_scene_and_logs_nobody_in() {
    // The in-memory store and the state file both carry the three steps.
    for store in ["\n[store]\nurl = \"memory\"\n", ""] {
        let stack = Stack::start_scene_confirm(false, store).await;
        let mut attacker = Browser::new(DESKTOP_UA);
        let (scene, link) = scanned_for_confirmation(&stack, &mut attacker, false).await;
        let mut phone = Browser::new(WECHAT_UA);
        assert_eq!(phone.follow(&link).await.status, 200);
        let refused = phone.post_form(&format!("{link}&answer=refuse"), &[]).await;
        assert_eq!(refused.status, 200, "{}", refused.body);
        assert!(refused.body.contains("拒绝") || refused.body.contains("refused"));
        let polled = attacker.get(&qr_status(&stack, &scene, 0)).await;
        assert_eq!(polled.json()["status"], "refused", "{}", polled.body);
        assert!(set_cookies(&polled, "wechat_session=").is_empty());
        // A refusal is final.
        assert_eq!(
            phone
                .post_form(&format!("{link}&answer=confirm"), &[])
                .await
                .status,
            409
        );
        let page = phone.get(&link).await;
        assert_eq!(page.status, 409, "{}", page.body);
        assert!(!page.body.contains("answer=confirm"));
        let desktop_page = attacker.get(&stack.url("/orders")).await;
        assert_eq!(desktop_page.status, 401, "still logged out");
        assert!(stack.gateway_log().contains("scan answered on the phone"));
    }
}

/// Writes `head` to a new connection to `base_url`, then `trickle` one byte
/// every 200 ms (at most 50 bytes); returns how many trickled bytes were
/// written before the gateway closed the connection, and what it answered.
fn trickle(base_url: &str, head: &[u8], trickle: &[u8]) -> (usize, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(base_url.trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    stream.write_all(head).unwrap();
    let mut answer = Vec::new();
    for (sent, byte) in trickle.iter().take(50).enumerate() {
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => return (sent, String::from_utf8_lossy(&answer).into_owned()),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (sent, String::from_utf8_lossy(&answer).into_owned()),
        }
        if stream.write_all(&[*byte]).is_err() {
            return (sent, String::from_utf8_lossy(&answer).into_owned());
        }
    }
    (
        trickle.len().min(50),
        String::from_utf8_lossy(&answer).into_owned(),
    )
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off_at_the_header_deadline() {
    let stack = Stack::start_scene_confirm(false, "header_timeout_secs = 1\n").await;
    let url = stack.gateway_url.clone();
    let slow_header =
        b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec();
    // The first request of a connection, and a later one on a kept-alive connection.
    let (cut_first, _) = tokio::task::spawn_blocking({
        let (url, slow) = (url.clone(), slow_header.clone());
        move || trickle(&url, b"GET /_wechat/healthz HTTP/1.1\r\nHost: x\r\n", &slow)
    })
    .await
    .unwrap();
    assert!(
        cut_first < 15,
        "closed after {cut_first} trickled bytes (~{} ms)",
        cut_first * 200
    );
    let (cut_later, answered) = tokio::task::spawn_blocking({
        let (url, slow) = (url.clone(), slow_header.clone());
        move || {
            trickle(
                &url,
                b"GET /_wechat/healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /_wechat/healthz HTTP/1.1\r\n",
                &slow,
            )
        }
    })
    .await
    .unwrap();
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    assert!(cut_later < 15, "closed after {cut_later} trickled bytes");

    // Whole headers in time pass; a slow body and a long poll are not headers.
    let (_, whole) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            trickle(
                &url,
                b"GET /_wechat/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                b" ",
            )
        }
    })
    .await
    .unwrap();
    assert!(whole.starts_with("HTTP/1.1 200"), "{whole}");
    let (_, slow_body) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            trickle(
                &url,
                b"POST /_wechat/exchange HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 12\r\nConnection: close\r\n\r\n",
                b"{\"code\":\"\"}\n          ",
            )
        }
    })
    .await
    .unwrap();
    assert!(
        slow_body.starts_with("HTTP/1.1 400"),
        "the body came in 2.4 s: {slow_body}"
    );
    let mut desktop = Browser::new(DESKTOP_UA);
    let qr = desktop.qr_new(&stack.url("/_wechat/qr/new?rd=%2F")).await;
    let polled = desktop
        .get(&qr_status(&stack, qr["scene"].as_str().unwrap(), 2))
        .await;
    assert_eq!(
        polled.json()["status"],
        "pending",
        "a 2 s long poll is answered"
    );
}
