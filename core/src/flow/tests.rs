use super::*;
use crate::config::Policy;
use crate::session::HEADER_OPENID;

const NOW: u64 = 1_800_000_000;
/// The session cookie's name on the tests' https public_url.
const HTTPS_SESSION_COOKIE: &str = "__Host-wechat_session";
const WECHAT: &str = "Mozilla/5.0 MicroMessenger/8.0.47";

fn gate() -> Gate {
    let toml = r#"
[wechat]
appid = "wx1234567890abcdef"
secret = "app-secret"
scope = "snsapi_userinfo"
open_base = "https://open.example"
[gateway]
upstream = "127.0.0.1:3000"
public_url = "https://app.example.com"
cookie_secret = "0123456789abcdef0123456789abcdef"
public_paths = ["/static/"]
session_lifetime_secs = 3600
"#;
    Gate::new(Config::from_toml(toml, |_| None).unwrap()).unwrap()
}

fn req<'a>(path: &'a str, query: Option<&'a str>, cookie: Option<&'a str>) -> RequestParts<'a> {
    RequestParts {
        method: "GET",
        path,
        query,
        cookie,
        user_agent: Some(WECHAT),
        accept: Some("text/html"),
        x_requested_with: None,
        accept_language: None,
        client_addr: None,
        original_uri: None,
        original_method: None,
        origin: None,
        access_control_request_method: None,
        policy: None,
    }
}

fn gate_with(extra: &str) -> Gate {
    let toml = format!(
        "[wechat]\nappid = \"wx1234567890abcdef\"\nsecret = \"app-secret\"\nopen_base = \"https://open.example\"\n\
         [gateway]\npublic_url = \"https://app.example.com\"\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\n{extra}"
    );
    Gate::new(Config::from_toml(&toml, |_| None).unwrap()).unwrap()
}

fn pending(d: Decision) -> PendingLogin {
    match d {
        Decision::Call(Call {
            kind: CallKind::Login(p),
            ..
        }) => p,
        other => panic!("expected a login call, got {other:?}"),
    }
}

fn user(identity: Identity, return_to: &str) -> Result<LoginOutcome, CallError> {
    Ok(LoginOutcome::User(PackedLogin::pack(&LoginRecord {
        identity,
        sid: "sid".into(),
        issued_at: NOW,
        return_to: return_to.into(),
    })))
}

fn reply(d: Decision) -> Reply {
    match d {
        Decision::Reply(r) => r,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn identity() -> Identity {
    Identity {
        openid: "oOpenid123".into(),
        unionid: None,
        scope: "snsapi_userinfo".into(),
        nickname: Some("昵称".into()),
        headimgurl: None,
        snapshot: false,
        ..Default::default()
    }
}

/// `name=value` of the first Set-Cookie starting with `prefix`.
fn cookie_from(reply: &Reply, prefix: &str) -> String {
    reply
        .headers
        .iter()
        .filter(|(n, _)| *n == "Set-Cookie")
        .map(|(_, v)| v.split(';').next().unwrap().to_owned())
        .find(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} cookie in {:?}", reply.headers))
}

/// Starts a login at `path` and returns (state, state cookie).
fn start(g: &Gate, path: &str) -> (String, String) {
    let r = reply(g.decide_at(&req(path, None, None), NOW));
    assert_eq!(r.status, 302);
    let loc = url::Url::parse(r.header("Location").unwrap()).unwrap();
    let state = loc
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    (state, cookie_from(&r, STATE_COOKIE_PREFIX))
}

fn login_as(g: &Gate, identity: Identity) -> String {
    let (state, cookie) = start(g, "/x");
    // A code of its own: a code is good for one state.
    let q = format!("code=CODE{}&state={state}", new_sid());
    let p = pending(g.decide_at(&req("/_wechat/callback", Some(&q), Some(&cookie)), NOW));
    let r = g.login_reply(&p, &user(identity, "/x"), NOW, Lang::Zh);
    cookie_from(&r, HTTPS_SESSION_COOKIE)
}

fn logged_in_cookie(g: &Gate) -> String {
    login_as(g, identity())
}

#[test]
fn unauthenticated_requests_get_redirect_401_json_or_page_by_client() {
    let g = gate();
    let r = reply(g.decide_at(&req("/orders", Some("id=1"), None), NOW));
    assert_eq!(r.status, 302);
    let location = r.header("Location").unwrap();
    assert!(location.starts_with("https://open.example/connect/oauth2/authorize?appid=wx1234567890abcdef&redirect_uri=https%3A%2F%2Fapp.example.com%2F_wechat%2Fcallback&response_type=code&scope=snsapi_userinfo&state="));
    assert!(cookie_from(&r, STATE_COOKIE_PREFIX).len() > 40);
    assert!(r.header("Set-Cookie").unwrap().contains("Secure"));

    let mut xhr = req("/api", None, None);
    xhr.x_requested_with = Some("XMLHttpRequest");
    let r = reply(g.decide_at(&xhr, NOW));
    assert_eq!(r.status, 401);
    assert_eq!(
        r.body,
        r#"{"error":"login_required","login_url":"https://app.example.com/_wechat/login?rd=%2Fapi"}"#
    );
    let mut json = req("/api", None, None);
    json.user_agent = None;
    json.accept = Some("application/json");
    assert_eq!(reply(g.decide_at(&json, NOW)).status, 401);

    let mut desktop = req("/orders", None, None);
    desktop.user_agent = Some("Mozilla/5.0 Chrome/126");
    let r = reply(g.decide_at(&desktop, NOW));
    assert_eq!(r.status, 401);
    assert!(r.body.contains("/_wechat/login?rd=%2Forders"));
    assert!(r.header("Set-Cookie").is_none());
}

#[test]
fn public_paths_pass_without_identity_and_without_gate_cookies() {
    let g = gate();
    let d = g.decide_at(
        &req(
            "/static/a.css",
            None,
            Some("theme=dark; wechat_state_abc=x; wechat_session=y"),
        ),
        NOW,
    );
    let Decision::Pass(pass) = d else {
        panic!("{d:?}")
    };
    assert_eq!(pass.identity, None);
    assert_eq!(
        pass.upstream_cookie,
        UpstreamCookie::Rewritten("theme=dark".into())
    );
}

#[test]
fn a_full_login_passes_with_identity_until_the_session_expires() {
    let g = gate();
    let session = logged_in_cookie(&g);
    let header = format!("a=1; {session}");
    let Decision::Pass(pass) = g.decide_at(&req("/orders", None, Some(&header)), NOW + 10) else {
        panic!()
    };
    assert_eq!(pass.identity.as_deref(), Some(&identity()));
    assert_eq!(
        pass.upstream_cookie,
        UpstreamCookie::Rewritten("a=1".into())
    );
    // Only the session cookie: the header goes; no gate cookie: it stays as sent.
    let Decision::Pass(pass) = g.decide_at(&req("/orders", None, Some(&session)), NOW + 10) else {
        panic!()
    };
    assert_eq!(pass.upstream_cookie, UpstreamCookie::Remove);
    let Decision::Pass(pass) = g.decide_at(&req("/static/a.css", None, Some("a=1;  b=2")), NOW)
    else {
        panic!()
    };
    assert_eq!(pass.upstream_cookie, UpstreamCookie::Unchanged);
    assert_eq!(
        pass.upstream_cookie.value(Some("a=1;  b=2")),
        Some("a=1;  b=2")
    );
    assert!(identity()
        .upstream_headers()
        .any(|(n, v)| n == HEADER_OPENID && v == "oOpenid123"));
    assert_eq!(
        reply(g.decide_at(&req("/orders", None, Some(&header)), NOW + 3600)).status,
        302
    );
}

#[test]
fn callback_transitions() {
    let g = gate();
    let (state, cookie) = start(&g, "/orders?id=1");
    let cb = |q: &str, c: Option<&str>| g.decide_at(&req("/_wechat/callback", Some(q), c), NOW + 5);

    let p = pending(cb(&format!("code=C0DE&state={state}"), Some(&cookie)));
    assert_eq!(p.return_to, "/orders?id=1");
    assert_eq!(p.code.expose(), "C0DE");
    assert!(!format!("{p:?}").contains("C0DE"));

    let status = |d: Decision| reply(d).status;
    assert_eq!(
        status(cb(&format!("state={state}"), Some(&cookie))),
        403,
        "declined"
    );
    assert_eq!(status(cb("code=C", Some(&cookie))), 400, "no state");
    assert_eq!(
        status(cb(&format!("code=C&state={state}"), None)),
        400,
        "no cookie"
    );
    assert_eq!(
        status(cb(&format!("code=C&state={state}x"), Some(&cookie))),
        400,
        "other state"
    );
    assert_eq!(
        status(cb(&format!("code=C&code=D&state={state}"), Some(&cookie))),
        400,
        "duplicate"
    );
    let long = "c".repeat(MAX_CODE_LEN + 1);
    assert_eq!(
        status(cb(&format!("code={long}&state={state}"), Some(&cookie))),
        400,
        "long code"
    );
    assert_eq!(
        status(cb(&format!("code=%0A&state={state}"), Some(&cookie))),
        400,
        "control char"
    );
    let late = g.decide_at(
        &req(
            "/_wechat/callback",
            Some(&format!("code=C&state={state}")),
            Some(&cookie),
        ),
        NOW + STATE_LIFETIME_SECS,
    );
    assert_eq!(reply(late).status, 400, "state cookie expired");
    let mut post = req("/_wechat/callback", Some("code=C"), Some(&cookie));
    post.method = "POST";
    assert_eq!(reply(g.decide_at(&post, NOW)).status, 405);
}

#[test]
fn exchange_outcomes_map_to_pages() {
    let g = gate();
    let (state, cookie) = start(&g, "/p");
    let q = format!("code=C&state={state}");
    let pending = || pending(g.decide_at(&req("/_wechat/callback", Some(&q), Some(&cookie)), NOW));
    let wechat = |n: i64| {
        Err(CallError::WeChat(SnsError::WeChat {
            code: ErrCode::from_code(n),
            errmsg: "m".into(),
        }))
    };
    let cases: Vec<(Result<LoginOutcome, CallError>, u16)> = vec![
        (user(identity(), "/p"), 302),
        (Ok(LoginOutcome::SnapshotRefused), 403),
        (wechat(40029), 400),
        (wechat(42003), 400),
        (wechat(40163), 302),
        (wechat(40125), 500),
        (wechat(40013), 500),
        (wechat(40164), 500),
        (wechat(45009), 503),
        (wechat(45011), 503),
        (wechat(-1), 502),
        (wechat(12345), 502),
        (Err(SnsError::Transport("refused".into()).into()), 503),
        (Err(SnsError::Malformed("html".into()).into()), 502),
        (Err(SnsError::Unavailable(503).into()), 503),
        (Err(CoordinationError::Unreachable.into()), 503),
        (Err(CoordinationError::Stalled("code exchange").into()), 503),
    ];
    for (outcome, status) in cases {
        let label = format!("{outcome:?}");
        let r = g.login_reply(&pending(), &outcome, NOW, Lang::Zh);
        assert_eq!(r.status, status, "{label}");
        let removed = r.headers.iter().any(|(n, v)| {
            *n == "Set-Cookie"
                && v.starts_with(&format!("wechat_state_{state}=;"))
                && v.contains("Max-Age=0")
        });
        assert!(removed, "{label}: state cookie removed");
        if status == 302 && label.contains("CodeBeenUsed") {
            assert_eq!(
                r.header("Location"),
                Some("/_wechat/login?rd=%2Fp"),
                "restarts the login"
            );
        } else if status == 302 {
            assert_eq!(r.header("Location"), Some("/p"));
        }
        if status == 503 {
            assert!(r.header("Retry-After").is_some());
        }
        if (400..500).contains(&status) || status == 502 || status == 503 {
            assert!(
                r.body.contains("/_wechat/login?rd=%2Fp"),
                "{label}: offers a fresh login"
            );
        }
    }
}

#[test]
fn state_cookies_are_capped() {
    let g = gate();
    let mut cookies = Vec::new();
    for i in 0..(MAX_STATE_COOKIES + 2) {
        let (_, c) = start(&g, &format!("/tab{i}"));
        cookies.push(c);
    }
    cookies.push("wechat_state_forged=garbage".into());
    let header = cookies.join("; ");
    let r = reply(g.decide_at(&req("/again", None, Some(&header)), NOW));
    let removals = r
        .headers
        .iter()
        .filter(|(n, v)| *n == "Set-Cookie" && v.contains("Max-Age=0"))
        .count();
    // 7 live + 1 new must drop to 5: remove 3 live ones, and the forged one.
    assert_eq!(
        removals,
        (MAX_STATE_COOKIES + 2) - (MAX_STATE_COOKIES - 1) + 1
    );
}

#[test]
fn gate_routes() {
    let g = gate();
    assert_eq!(
        reply(g.decide_at(&req("/_wechat/healthz", None, None), NOW)).status,
        200
    );
    assert_eq!(
        reply(g.decide_at(&req("/_wechat/nope", None, None), NOW)).status,
        404
    );
    assert_eq!(
        reply(g.decide_at(&req("/_wechat/userinfo", None, None), NOW)).status,
        401
    );
    let session = logged_in_cookie(&g);
    let r = reply(g.decide_at(&req("/_wechat/userinfo", None, Some(&session)), NOW));
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["openid"], "oOpenid123");
    assert_eq!(v["nickname"], "昵称");
    let r = reply(g.decide_at(&req("/_wechat/logout", Some("rd=%2Fbye"), None), NOW));
    assert_eq!(r.header("Location"), Some("/bye"));
    assert!(r
        .header("Set-Cookie")
        .unwrap()
        .starts_with("__Host-wechat_session=;"));
    let r = reply(g.decide_at(
        &req(
            "/_wechat/login",
            Some("rd=https%3A%2F%2Fevil.example%2F"),
            None,
        ),
        NOW,
    ));
    assert_eq!(r.status, 302);
    // The start path is sealed in the state cookie: open it to check it is "/".
    let state_cookie = cookie_from(&r, STATE_COOKIE_PREFIX);
    let (name, value) = state_cookie.split_once('=').unwrap();
    let state = &name[STATE_COOKIE_PREFIX.len()..];
    assert_eq!(
        open_state(&g.sealer, state, value, NOW).unwrap().return_to,
        "/"
    );
    // A path that merely starts like the prefix is an application path.
    assert_eq!(
        reply(g.decide_at(&req("/_wechatx", None, None), NOW)).status,
        302
    );
}

#[test]
fn a_repeated_callback_with_a_session_goes_on_without_an_error() {
    let g = gate();
    let (state, cookie) = start(&g, "/orders");
    let q = format!("code=C&state={state}");
    let p = pending(g.decide_at(&req("/_wechat/callback", Some(&q), Some(&cookie)), NOW));
    let r = g.login_reply(&p, &user(identity(), "/orders"), NOW, Lang::Zh);
    let session = cookie_from(&r, HTTPS_SESSION_COOKIE);
    // The browser lost the state cookie (the first answer removed it) but has its session.
    let again = reply(g.decide_at(&req("/_wechat/callback", Some(&q), Some(&session)), NOW + 1));
    assert_eq!((again.status, again.header("Location")), (302, Some("/")));
    assert!(
        again.header("Set-Cookie").is_none(),
        "the session is not changed"
    );
    // Without a session it stays a 400.
    assert_eq!(
        reply(g.decide_at(&req("/_wechat/callback", Some(&q), None), NOW + 1)).status,
        400
    );
}

#[test]
fn idle_sessions_end_and_active_ones_are_resealed() {
    let g = gate_with("session_idle_secs = 600\n");
    let session = logged_in_cookie(&g);
    let at = |t: u64| g.decide_at(&req("/a", None, Some(&session)), t);
    let Decision::Pass(p) = at(NOW + 10) else {
        panic!()
    };
    assert_eq!(p.set_cookie, None, "fresh: no re-seal");
    let Decision::Pass(p) = at(NOW + 200) else {
        panic!()
    };
    let resealed = p
        .set_cookie
        .expect("re-sealed after a quarter of the idle time");
    let resealed = resealed.split(';').next().unwrap().to_owned();
    assert_eq!(
        reply(at(NOW + 600)).status,
        302,
        "idle too long: a new login"
    );
    let later = g.decide_at(&req("/a", None, Some(&resealed)), NOW + 700);
    assert!(
        matches!(later, Decision::Pass(_)),
        "the re-sealed session lives on"
    );
}

#[test]
fn userinfo_paths_send_base_sessions_to_authorize_with_userinfo() {
    let g = gate_with("userinfo_paths = [\"/profile/\"]\n");
    let mut base = identity();
    base.scope = "snsapi_base".into();
    base.nickname = None;
    let session = login_as(&g, base);
    assert!(matches!(
        g.decide_at(&req("/orders", None, Some(&session)), NOW),
        Decision::Pass(_)
    ));
    let r = reply(g.decide_at(&req("/profile/me", None, Some(&session)), NOW));
    assert_eq!(r.status, 302);
    assert!(r
        .header("Location")
        .unwrap()
        .contains("&scope=snsapi_userinfo&state="));
    let mut xhr = req("/profile/me", None, Some(&session));
    xhr.accept = Some("application/json");
    let r = reply(g.decide_at(&xhr, NOW));
    assert!(
        r.body
            .contains("login?rd=%2Fprofile%2Fme&scope=snsapi_userinfo"),
        "{}",
        r.body
    );
    let full = login_as(&g, identity());
    assert!(matches!(
        g.decide_at(&req("/profile/me", None, Some(&full)), NOW),
        Decision::Pass(_)
    ));
    let r = reply(g.decide_at(
        &req(
            "/_wechat/login",
            Some("rd=%2Fp&scope=snsapi_userinfo"),
            None,
        ),
        NOW,
    ));
    assert!(r
        .header("Location")
        .unwrap()
        .contains("scope=snsapi_userinfo"));
}

#[test]
fn pages_follow_the_language() {
    let g = gate();
    let mut r = req("/_wechat/nope", None, None);
    assert!(reply(g.decide_at(&r, NOW)).body.contains("页面不存在"));
    r.accept_language = Some("en-GB,en;q=0.9");
    let body = reply(g.decide_at(&r, NOW)).body;
    assert!(body.contains("Not found") && !body.contains("页面不存在"));
    let g = gate_with("language = \"en\"\n");
    assert!(reply(g.decide_at(&req("/_wechat/nope", None, None), NOW))
        .body
        .contains("Not found"));
}

#[test]
fn logout_and_profile_refresh_are_calls_needing_io() {
    let g = gate();
    let session = logged_in_cookie(&g);
    let d = g.decide_at(&req("/_wechat/logout", None, Some(&session)), NOW);
    assert!(
        matches!(
            d,
            Decision::Call(Call {
                kind: CallKind::Logout { .. },
                ..
            })
        ),
        "{d:?}"
    );
    // The logout ended that session at once, on this gate.
    assert!(matches!(
        g.decide_at(
            &req("/_wechat/userinfo", Some("refresh=1"), Some(&session)),
            NOW
        ),
        Decision::Reply(_)
    ));
    let g = gate();
    let d = g.decide_at(
        &req("/_wechat/userinfo", Some("refresh=1"), Some(&session)),
        NOW,
    );
    assert!(matches!(
        d,
        Decision::Call(Call {
            kind: CallKind::Profile {
                call: ProfileCall::Refresh,
                ..
            },
            ..
        })
    ));
    let d = g.decide_at(
        &req("/_wechat/userinfo", Some("check=1"), Some(&session)),
        NOW,
    );
    assert!(matches!(
        d,
        Decision::Call(Call {
            kind: CallKind::Profile {
                call: ProfileCall::Check,
                ..
            },
            ..
        })
    ));
    let r = reply(g.decide_at(&req("/_wechat/logout", None, None), NOW));
    assert_eq!(r.header("Location"), Some("/"));
    let g = gate_with("logout_redirect = \"/goodbye\"\n");
    assert_eq!(
        reply(g.decide_at(&req("/_wechat/logout", None, None), NOW)).header("Location"),
        Some("/goodbye")
    );
}

#[test]
fn the_auth_route_answers_202_with_identity_or_401() {
    let g = gate();
    let session = logged_in_cookie(&g);
    let r = g.decide_auth(&req("/orders", Some("id=1"), Some(&session)));
    assert_eq!(r.status, 202);
    assert_eq!(r.header("X-WeChat-OpenID"), Some("oOpenid123"));
    assert_eq!(r.header("X-WeChat-Nickname"), Some("%E6%98%B5%E7%A7%B0"));
    let r = g.decide_auth(&req("/orders", None, None));
    assert_eq!(r.status, 401);
    assert!(
        r.header("Set-Cookie").is_none(),
        "no state cookie from a subrequest"
    );
    let r = g.decide_auth(&req("/static/a.css", None, None));
    assert_eq!((r.status, r.header("X-WeChat-OpenID")), (202, None));
    assert_eq!(
        g.decide_auth(&req("/_wechat/userinfo", None, Some(&session)))
            .status,
        401
    );
}

#[test]
fn the_auth_route_decides_for_the_original_request_whatever_the_subrequests_method() {
    let g = gate();
    let session = logged_in_cookie(&g);
    let reply = |method, original_uri, original_method, cookie| {
        let mut r = req("/_wechat/auth", None, cookie);
        r.method = method;
        r.original_uri = original_uri;
        r.original_method = original_method;
        match g.decide_at(&r, NOW + 1) {
            Decision::Reply(reply) => reply,
            other => panic!("the auth route answers at once: {other:?}"),
        }
    };
    // nginx sends the subrequest with the original method (a POST form).
    let posted = reply(
        "POST",
        Some("/orders?id=1"),
        Some("POST"),
        Some(session.as_str()),
    );
    assert_eq!(posted.status, 202);
    assert_eq!(posted.header("X-WeChat-OpenID"), Some("oOpenid123"));
    assert_eq!(
        reply("DELETE", Some("/orders"), Some("DELETE"), None).status,
        401
    );
    // The original URI is canonical-path checked like any request.
    assert_eq!(
        reply("GET", Some("/static/../orders"), None, None).status,
        401
    );
    assert_eq!(
        reply("GET", Some("/static/%2e%2e/orders"), None, None).status,
        401
    );
    assert_eq!(
        reply("GET", Some("/static/..%2forders"), None, None).status,
        403
    );
    // No X-Original-URI: the site's root, which needs a login.
    assert_eq!(reply("GET", None, None, None).status, 401);
    // The gate's own routes are never auth-requested.
    let own = reply(
        "GET",
        Some("/_wechat/userinfo"),
        None,
        Some(session.as_str()),
    );
    assert_eq!(own.status, 401);
}

#[test]
fn strip_gate_cookies_keeps_others_byte_for_byte() {
    assert_eq!(
        strip_gate_cookies(None, SESSION_COOKIE),
        UpstreamCookie::Unchanged
    );
    assert_eq!(
        strip_gate_cookies(Some("a=1;b=2; c"), SESSION_COOKIE),
        UpstreamCookie::Unchanged
    );
    assert_eq!(
        strip_gate_cookies(Some("wechat_session=a"), SESSION_COOKIE),
        UpstreamCookie::Remove
    );
    for spelling in [
        "__Host-wechat_session=a",
        "WeChat_Session=a",
        "__secure-wechat_scene=b",
        "Wechat_State_x=c",
        "my_sid=d",
    ] {
        assert_eq!(
            strip_gate_cookies(Some(spelling), "my_sid"),
            UpstreamCookie::Remove,
            "{spelling}"
        );
    }
    assert_eq!(
        strip_gate_cookies(Some("a=1;b=\"x y\"; wechat_state_q=z;c="), SESSION_COOKIE),
        UpstreamCookie::Rewritten("a=1; b=\"x y\"; c=".into())
    );
}

/// A gate with three routes of different policies (the allow-list by
/// openid and unionid) before the default route.
fn routed_gate() -> Gate {
    gate_with(
        r#"public_paths = ["/static/"]
verify_files = { "MP_verify_abc123.txt" = "abc123" }
[[route]]
exact = "/about"
policy = "public"
[[route]]
prefix = "/admin/"
policy = "allow"
allow = ["oAdmin1", "uUnion9"]
[[route]]
prefix = "/api/"
methods = ["post", "PUT"]
policy = "userinfo"
[[route]]
prefix = "/strict/"
preflight = "login"
"#,
    )
}

fn passes(d: Decision) -> Pass {
    match d {
        Decision::Pass(pass) => pass,
        other => panic!("expected a pass, got {other:?}"),
    }
}

fn with_ids(openid: &str, unionid: Option<&str>) -> Identity {
    Identity {
        openid: openid.into(),
        unionid: unionid.map(Into::into),
        ..identity()
    }
}

#[test]
fn routes_match_in_order_on_the_canonical_path_and_method() {
    let g = routed_gate();
    // exact: only that path.
    let about = passes(g.decide_at(&req("/about", None, None), NOW));
    assert_eq!((about.route, about.identity), (Some(0), None));
    for other in ["/about/", "/about/x", "/aboutx", "/About"] {
        assert_eq!(
            reply(g.decide_at(&req(other, None, None), NOW)).status,
            302,
            "{other}"
        );
    }
    // A dot segment or an encoded one resolves before matching.
    let dotted = passes(g.decide_at(&req("/static/../about", None, None), NOW));
    assert_eq!(dotted.route, Some(0));
    assert_eq!(dotted.upstream_path.as_deref(), Some("/about"));
    assert_eq!(
        reply(g.decide_at(&req("/about/../admin/", None, None), NOW)).status,
        302,
        "/admin/ after the dot segment, not the public /about"
    );
    // methods: upper-cased at load; a GET on /api/ is the default route.
    let session = logged_in_cookie(&g);
    let get = passes(g.decide_at(&req("/api/x", None, Some(&session)), NOW));
    assert_eq!(get.route, None);
    let mut post = req("/api/x", None, Some(&session));
    post.method = "POST";
    assert_eq!(passes(g.decide_at(&post, NOW)).route, Some(2));
    // The default route keeps public_paths.
    let css = passes(g.decide_at(&req("/static/a.css", None, None), NOW));
    assert_eq!((css.route, css.identity), (None, None));
}

#[test]
fn a_public_route_still_sends_a_logged_in_users_identity() {
    let g = routed_gate();
    let session = logged_in_cookie(&g);
    let pass = passes(g.decide_at(&req("/about", None, Some(&session)), NOW));
    assert_eq!(pass.identity.unwrap().openid, "oOpenid123");
}

#[test]
fn an_allow_route_lets_in_listed_openids_and_unionids_only() {
    let g = routed_gate();
    let admin = login_as(&g, with_ids("oAdmin1", None));
    let pass = passes(g.decide_at(&req("/admin/users", None, Some(&admin)), NOW));
    assert_eq!(
        (pass.route, pass.identity.unwrap().openid.as_str()),
        (Some(1), "oAdmin1")
    );
    let by_union = login_as(&g, with_ids("oOther", Some("uUnion9")));
    assert!(matches!(
        g.decide_at(&req("/admin/", None, Some(&by_union)), NOW),
        Decision::Pass(_)
    ));
    // Anyone else logged in: 403 naming them, with a logout link.
    let someone = logged_in_cookie(&g);
    let page = reply(g.decide_at(&req("/admin/users", None, Some(&someone)), NOW));
    assert_eq!(page.status, 403);
    assert!(page.body.contains("oOpenid123"), "{}", page.body);
    assert!(page.body.contains("/_wechat/logout"), "{}", page.body);
    let mut xhr = req("/admin/users", None, Some(&someone));
    xhr.x_requested_with = Some("XMLHttpRequest");
    let json = reply(g.decide_at(&xhr, NOW));
    assert_eq!(json.status, 403);
    assert!(
        json.body.contains(r#""error":"access_denied""#),
        "{}",
        json.body
    );
    // An id that only looks like a listed one.
    for near in ["oadmin1", "oAdmin1 ", "oAdmin", "oAdmin11"] {
        let cookie = login_as(&g, with_ids(near.trim_end(), None));
        let d = g.decide_at(&req("/admin/", None, Some(&cookie)), NOW);
        if near.trim_end() == "oAdmin1" {
            assert!(matches!(d, Decision::Pass(_)));
        } else {
            assert_eq!(reply(d).status, 403, "{near:?}");
        }
    }
    // Not logged in: the login, not a 403.
    assert_eq!(
        reply(g.decide_at(&req("/admin/", None, None), NOW)).status,
        302
    );
    // A forged cookie is no session at all.
    let forged = format!("{HTTPS_SESSION_COOKIE}=AAAA{}", &admin[admin.len() - 20..]);
    assert_eq!(
        reply(g.decide_at(&req("/admin/", None, Some(&forged)), NOW)).status,
        302
    );
}

#[test]
fn the_auth_route_answers_403_for_a_user_the_policy_keeps_out() {
    let g = routed_gate();
    let someone = logged_in_cookie(&g);
    let refused = g.decide_auth(&req("/admin/users", None, Some(&someone)));
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("access_denied"));
    assert_eq!(refused.header("X-WeChat-OpenID"), None);
    let admin = login_as(&g, with_ids("oAdmin1", None));
    let allowed = g.decide_auth(&req("/admin/users", None, Some(&admin)));
    assert_eq!(allowed.status, 202);
    assert_eq!(allowed.header("X-WeChat-OpenID"), Some("oAdmin1"));
    assert_eq!(g.decide_auth(&req("/admin/users", None, None)).status, 401);
}

#[test]
fn a_userinfo_route_sends_a_base_session_to_authorize_again() {
    let g = routed_gate();
    let base = login_as(
        &g,
        Identity {
            scope: "snsapi_base".into(),
            ..identity()
        },
    );
    let mut post = req("/api/x", None, Some(&base));
    post.method = "POST";
    post.x_requested_with = Some("XMLHttpRequest");
    assert_eq!(reply(g.decide_at(&post, NOW)).status, 401);
    let full = logged_in_cookie(&g);
    let mut post = req("/api/x", None, Some(&full));
    post.method = "POST";
    assert!(matches!(g.decide_at(&post, NOW), Decision::Pass(_)));
}

fn preflight<'a>(path: &'a str, cookie: Option<&'a str>) -> RequestParts<'a> {
    RequestParts {
        method: "OPTIONS",
        origin: Some("https://other.example"),
        access_control_request_method: Some("POST"),
        user_agent: Some("Mozilla/5.0 Chrome/126"),
        accept: Some("*/*"),
        ..req(path, None, cookie)
    }
}

#[test]
fn a_cors_preflight_passes_without_a_session_unless_the_route_says_login() {
    let g = routed_gate();
    let pass = passes(g.decide_at(
        &preflight("/orders", Some("wechat_state_x=1; theme=dark")),
        NOW,
    ));
    assert_eq!(pass.identity, None);
    assert_eq!(
        pass.upstream_cookie,
        UpstreamCookie::Rewritten("theme=dark".into())
    );
    // Even on an allow route: a preflight carries no user to refuse.
    assert!(matches!(
        g.decide_at(&preflight("/admin/", None), NOW),
        Decision::Pass(Pass { identity: None, .. })
    ));
    // A preflight never carries the identity, even with a session cookie.
    let session = logged_in_cookie(&g);
    let pass = passes(g.decide_at(&preflight("/orders", Some(&session)), NOW));
    assert_eq!(pass.identity, None);
    // preflight = "login": like any request of the route.
    assert_eq!(
        reply(g.decide_at(&preflight("/strict/x", None), NOW)).status,
        401
    );
    // Requests that only look like a preflight need a login.
    let lookalikes = [
        RequestParts {
            access_control_request_method: None,
            ..preflight("/orders", None)
        },
        RequestParts {
            origin: None,
            ..preflight("/orders", None)
        },
        RequestParts {
            origin: Some(""),
            ..preflight("/orders", None)
        },
        RequestParts {
            access_control_request_method: Some(""),
            ..preflight("/orders", None)
        },
        RequestParts {
            method: "options",
            ..preflight("/orders", None)
        },
        RequestParts {
            method: "GET",
            ..preflight("/orders", None)
        },
    ];
    for lookalike in &lookalikes {
        assert_eq!(
            reply(g.decide_at(lookalike, NOW)).status,
            401,
            "{:?} {:?} {:?}",
            lookalike.method,
            lookalike.origin,
            lookalike.access_control_request_method
        );
    }
}

#[test]
fn verification_files_are_served_by_exact_name_without_a_session() {
    let g = routed_gate();
    let file = reply(g.decide_at(&req("/MP_verify_abc123.txt", None, None), NOW));
    assert_eq!(file.status, 200);
    assert_eq!(file.body, "abc123");
    assert_eq!(
        file.header("Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    let mut head = req("/MP_verify_abc123.txt", None, None);
    head.method = "HEAD";
    assert_eq!(reply(g.decide_at(&head, NOW)).status, 200);
    // Through the canonical path, an encoded name is the same file.
    assert_eq!(
        reply(g.decide_at(&req("/x/../MP_verify_abc123.txt", None, None), NOW)).status,
        200
    );
    // Anything else is an ordinary request (here: a login).
    for other in [
        "/MP_verify_abc123.txt/",
        "/mp_verify_abc123.txt",
        "/MP_verify_abc123.txtx",
        "/x/MP_verify_abc123.txt",
        "/MP_verify_other.txt",
    ] {
        assert_eq!(
            reply(g.decide_at(&req(other, None, None), NOW)).status,
            302,
            "{other}"
        );
    }
    let mut post = req("/MP_verify_abc123.txt", None, None);
    post.method = "POST";
    assert_eq!(reply(g.decide_at(&post, NOW)).status, 302);
}

#[test]
fn bad_routes_and_verification_files_are_refused_at_load() {
    let base = "[wechat]\nappid = \"wx1234567890abcdef\"\nsecret = \"s\"\n\
                [gateway]\npublic_url = \"https://app.example.com\"\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\n";
    let cases = [
        ("[[route]]\npolicy = \"public\"\n", "[[route]] prefix"),
        (
            "[[route]]\nprefix = \"/a/\"\nexact = \"/a\"\n",
            "[[route]] prefix",
        ),
        ("[[route]]\nprefix = \"a/\"\n", "[[route]] prefix"),
        ("[[route]]\nprefix = \"/a/../b/\"\n", "[[route]] prefix"),
        ("[[route]]\nexact = \"/a%2Fb\"\n", "[[route]] exact"),
        ("[[route]]\nexact = \"//a\"\n", "[[route]] exact"),
        (
            "[[route]]\nprefix = \"/a/\"\npolicy = \"admin\"\n",
            "[[route]] policy",
        ),
        (
            "[[route]]\nprefix = \"/a/\"\nallow = [\"oX\"]\n",
            "[[route]] allow",
        ),
        (
            "[[route]]\nprefix = \"/a/\"\npolicy = \"allow\"\nallow = [\"o X\"]\n",
            "[[route]] allow",
        ),
        (
            "[[route]]\nprefix = \"/a/\"\npolicy = \"allow\"\nallow_file = \"/nonexistent/allow.txt\"\n",
            "[[route]] allow_file",
        ),
        (
            "[[route]]\nprefix = \"/a/\"\npreflight = \"skip\"\n",
            "[[route]] preflight",
        ),
        (
            "[[route]]\nprefix = \"/a/\"\nmethods = [\"GE T\"]\n",
            "[[route]] methods",
        ),
        (
            "[gateway.verify_files]\n\"../etc/passwd.txt\" = \"x\"\n",
            "[gateway] verify_files",
        ),
        (
            "[gateway.verify_files]\n\"MP_verify_a.html\" = \"x\"\n",
            "[gateway] verify_files",
        ),
    ];
    for (extra, key) in cases {
        // `[gateway.verify_files]` is a table of [gateway]: no other
        // [gateway] key may follow it, so the cases put it last.
        let err = Config::from_toml(&format!("{base}{extra}"), |_| None).unwrap_err();
        assert!(err.to_string().contains(key), "{extra}: {err}");
    }
    let big = format!(
        "{base}verify_files = {{ \"MP_verify_a.txt\" = \"{}\" }}\n",
        "x".repeat(1025)
    );
    let err = Config::from_toml(&big, |_| None).unwrap_err();
    assert!(err.to_string().contains("1024 bytes"), "{err}");
}

#[test]
fn an_allow_file_is_read_with_comments_and_blank_lines() {
    let path = std::env::temp_dir().join(format!("wechat-allow-{}.txt", new_sid()));
    std::fs::write(&path, "# admins\noFromFile1\n\n  uUnionFile  # the boss\n").unwrap();
    let g = gate_with(&format!(
        "[[route]]\nprefix = \"/admin/\"\npolicy = \"allow\"\nallow_file = {:?}\n",
        path.display().to_string()
    ));
    let Policy::Allow(list) = &g.config.routes[0].policy else {
        panic!("{:?}", g.config.routes[0].policy)
    };
    let who = |openid: &str, unionid: Option<&str>| Identity {
        openid: openid.into(),
        unionid: unionid.map(Into::into),
        scope: "snsapi_base".into(),
        ..Default::default()
    };
    assert_eq!(list.len(), 2);
    assert!(list.allows(&who("oFromFile1", None)));
    assert!(list.allows(&who("oSomeone", Some("uUnionFile"))));
    assert!(!list.allows(&who("# admins", None)));
    assert!(!list.allows(&who("oSomeone", None)));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn wecom_members_are_allowed_by_userid_or_department_and_never_by_a_wechat_id() {
    let g = gate_with(
        "[[route]]\nprefix = \"/ops/\"\npolicy = \"allow\"\nallow = [\"zhangsan\"]\n\
         wecom_userids = [\"lisi\"]\nwecom_departments = [7]\n",
    );
    let Policy::Allow(list) = &g.config.routes[0].policy else {
        panic!("{:?}", g.config.routes[0].policy)
    };
    let member = |userid: &str, departments: Vec<u64>, member: bool| Identity {
        openid: userid.into(),
        scope: "snsapi_base".into(),
        wecom: Some(crate::session::WecomMember {
            corpid: "ww0123456789abcdef".into(),
            member,
            name: None,
            departments,
        }),
        ..Default::default()
    };
    assert!(list.allows(&member("lisi", vec![1], true)));
    assert!(list.allows(&member("wangwu", vec![3, 7], true)));
    assert!(!list.allows(&member("wangwu", vec![3], true)));
    // `allow` lists WeChat ids: a member whose userid spells one is not in.
    assert!(!list.allows(&member("zhangsan", vec![], true)));
    // A non-member is never in, whatever its WeCom openid.
    assert!(!list.allows(&member("lisi", vec![7], false)));
    // And a WeChat user whose openid spells a listed userid is not either.
    let wechat = Identity {
        openid: "lisi".into(),
        scope: "snsapi_base".into(),
        ..Default::default()
    };
    assert!(!list.allows(&wechat));
    for bad in ["wecom_userids = [\"a b\"]", "wecom_departments = [\"x\"]"] {
        let text = format!(
            "[wechat]\nappid = \"wx1234567890abcdef\"\nsecret = \"s\"\n[gateway]\npublic_url = \"https://a.example\"\n\
             cookie_secret = \"0123456789abcdef0123456789abcdef\"\n[[route]]\nprefix = \"/x/\"\npolicy = \"allow\"\n{bad}\n"
        );
        assert!(Config::from_toml(&text, |_| None).is_err(), "{bad}");
    }
}

#[test]
fn the_403_page_escapes_the_users_nickname() {
    let g = routed_gate();
    let cookie = login_as(
        &g,
        Identity {
            nickname: Some("<img src=x onerror=alert(1)>".into()),
            ..identity()
        },
    );
    let page = reply(g.decide_at(&req("/admin/", None, Some(&cookie)), NOW));
    assert_eq!(page.status, 403);
    assert!(!page.body.contains("<img src=x"), "{}", page.body);
    assert!(page.body.contains("&lt;img"), "{}", page.body);
}

#[test]
fn a_named_policy_decides_whatever_the_path() {
    let g = gate_with(
        r#"public_paths = ["/static/"]
[[route]]
name = "admins"
policy = "allow"
allow = ["oAdmin1"]
[[route]]
name = "strict-api"
prefix = "/api/"
preflight = "login"
"#,
    );
    let named = |name: &str| g.named_policy(name).unwrap();
    let at = |path: &'static str, cookie: Option<&'static str>, policy: &str| RequestParts {
        policy: Some(named(policy)),
        ..req(path, None, cookie)
    };
    let someone: &'static str = Box::leak(logged_in_cookie(&g).into_boxed_str());
    let admin: &'static str = Box::leak(login_as(&g, with_ids("oAdmin1", None)).into_boxed_str());

    // A route with a name and no path: no request falls under it by path.
    assert!(matches!(
        g.decide_at(&req("/anything", None, Some(someone)), NOW),
        Decision::Pass(Pass { route: None, .. })
    ));
    // Picked by name, its allow-list holds on any path, public ones too.
    for path in ["/anything", "/static/a.css", "/api/x"] {
        assert_eq!(
            reply(g.decide_at(&at(path, Some(someone), "admins"), NOW)).status,
            403,
            "{path}"
        );
        assert_eq!(
            passes(g.decide_at(&at(path, Some(admin), "admins"), NOW)).route,
            Some(0),
            "{path}"
        );
        assert_eq!(
            reply(g.decide_at(&at(path, None, "admins"), NOW)).status,
            302,
            "{path}: a login first"
        );
    }
    // The built-in names.
    assert_eq!(
        passes(g.decide_at(&at("/orders", None, "public"), NOW)).identity,
        None
    );
    assert_eq!(
        reply(g.decide_at(&at("/static/a.css", None, "login"), NOW)).status,
        302,
        "login overrides public_paths"
    );
    assert_eq!(
        follow_check(g.decide_at(&at("/x", Some(someone), "followers"), NOW)),
        ("/x".into(), false, false)
    );
    // The route's preflight setting comes with its name.
    let preflight = |policy: &str| RequestParts {
        method: "OPTIONS",
        origin: Some("https://other.example"),
        access_control_request_method: Some("POST"),
        policy: Some(named(policy)),
        ..req("/x", None, None)
    };
    assert_eq!(
        reply(g.decide_at(&preflight("strict-api"), NOW)).status,
        302
    );
    assert!(matches!(
        g.decide_at(&preflight("admins"), NOW),
        Decision::Pass(_)
    ));
    // The gate's own routes stay the gate's.
    assert!(matches!(
        g.decide_at(&at("/_wechat/healthz", None, "admins"), NOW),
        Decision::Reply(Reply { status: 200, .. })
    ));

    // Unknown names, and spellings of known ones, are refused with the list.
    for wrong in ["allow", "Admins", "admins ", "", "PUBLIC", "strict_api"] {
        let err = g.named_policy(wrong).unwrap_err();
        assert!(err.contains("admins, strict-api"), "{wrong:?}: {err}");
    }
    assert!(g
        .named_policy("allow")
        .unwrap_err()
        .contains("a [[route]] with a name"));
}

#[test]
fn route_names_are_plain_unique_and_not_a_policy() {
    let base = "[wechat]\nappid = \"wx1234567890abcdef\"\nsecret = \"s\"\n\
        [gateway]\npublic_url = \"https://app.example.com\"\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\n";
    for extra in [
        "[[route]]\nname = \"a\"\n[[route]]\nname = \"a\"\nprefix = \"/a/\"\n",
        "[[route]]\nname = \"public\"\n",
        "[[route]]\nname = \"Admins\"\n",
        "[[route]]\nname = \"a b\"\n",
        "[[route]]\nname = \"\"\n",
    ] {
        let err = Config::from_toml(&format!("{base}{extra}"), |_| None).unwrap_err();
        assert!(err.to_string().contains("[[route]] name"), "{extra}: {err}");
    }
}

#[test]
fn authorize_options_come_from_the_config_and_the_route_of_the_return_path() {
    let location = |g: &Gate, path: &'static str| {
        reply(g.decide_at(&req(path, None, None), NOW))
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("location"))
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let routes = "[[route]]\nprefix = \"/pay/\"\nforce_popup = true\n[[route]]\nprefix = \"/quiet/\"\nforce_popup = false\n";
    let g = gate_with(routes);
    // connect_redirect=1 by default, forcePopup only on the route that asks.
    let plain = location(&g, "/orders");
    assert!(
        plain.contains("&connect_redirect=1#wechat_redirect"),
        "{plain}"
    );
    assert!(!plain.contains("forcePopup"), "{plain}");
    let pay = location(&g, "/pay/checkout");
    assert!(
        pay.contains("&forcePopup=true&connect_redirect=1#wechat_redirect"),
        "{pay}"
    );
    // The route is that of the canonical path.
    assert!(!location(&g, "/pay/../orders").contains("forcePopup"));
    // The login route decides on its rd's path.
    let login = reply(g.decide_at(
        &req("/_wechat/login", Some("rd=%2Fpay%2Fx%3Fa%3D1"), None),
        NOW,
    ));
    let to = login
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("location"))
        .unwrap()
        .1
        .clone();
    assert!(to.contains("forcePopup=true"), "{to}");

    // [wechat] force_popup for every login; a route may turn it off.
    let toml = format!(
        "[wechat]\nappid = \"wx1234567890abcdef\"\nsecret = \"s\"\nforce_popup = true\nconnect_redirect = false\n\
         [gateway]\npublic_url = \"https://app.example.com\"\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\n{routes}"
    );
    let g = Gate::new(Config::from_toml(&toml, |_| None).unwrap()).unwrap();
    let every = location(&g, "/orders");
    assert!(
        every.contains("&forcePopup=true#wechat_redirect"),
        "{every}"
    );
    assert!(!location(&g, "/quiet/x").contains("forcePopup"));
    assert!(!every.contains("connect_redirect"));
}

#[test]
fn userinfo_lang_is_one_of_wechats_three() {
    for (lang, ok) in [
        ("zh_CN", true),
        ("zh_TW", true),
        ("en", true),
        ("EN", false),
        ("zh-CN", false),
        ("", false),
    ] {
        let toml = format!(
            "[wechat]\nappid = \"wx1234567890abcdef\"\nsecret = \"s\"\nuserinfo_lang = {lang:?}\n\
             [gateway]\npublic_url = \"https://app.example.com\"\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\n"
        );
        match Config::from_toml(&toml, |_| None) {
            Ok(c) => {
                assert!(ok, "{lang}");
                assert_eq!(c.wechat.userinfo_lang.as_str(), lang);
            }
            Err(e) => {
                assert!(!ok, "{lang}: {e}");
                assert!(e.to_string().contains("[wechat] userinfo_lang"), "{e}");
            }
        }
    }
}

fn followers_gate() -> Gate {
    gate_with("[[route]]\nprefix = \"/fans/\"\npolicy = \"followers\"\n")
}

fn follow_check(d: Decision) -> (String, bool, bool) {
    match d {
        Decision::Call(Call {
            kind: CallKind::FollowCheck {
                again, json, auth, ..
            },
            ..
        }) => (again, json, auth),
        other => panic!("expected a follow check, got {other:?}"),
    }
}

#[test]
fn a_followers_route_asks_once_then_decides_from_what_it_knows() {
    let g = followers_gate();
    let session = logged_in_cookie(&g);
    // Unknown: a call, to come back to the same request.
    let d = g.decide_at(&req("/fans/x", Some("y=1"), Some(&session)), NOW);
    assert_eq!(follow_check(d), ("/fans/x?y=1".into(), false, false));
    let mut xhr = req("/fans/../fans/api", None, Some(&session));
    xhr.x_requested_with = Some("XMLHttpRequest");
    assert_eq!(
        follow_check(g.decide_at(&xhr, NOW)),
        ("/fans/api".into(), true, false)
    );
    // Known to follow: passes, until the entry ends.
    g.followers.insert("oOpenid123".into(), true, NOW + 600);
    assert!(matches!(
        g.decide_at(&req("/fans/x", None, Some(&session)), NOW),
        Decision::Pass(_)
    ));
    follow_check(g.decide_at(&req("/fans/x", None, Some(&session)), NOW + 600));
    // Known not to follow: 403, a page with "try again" or JSON.
    g.followers.insert("oOpenid123".into(), false, NOW + 10);
    let page = reply(g.decide_at(&req("/fans/x", Some("y=1"), Some(&session)), NOW));
    assert_eq!(page.status, 403);
    assert!(page.body.contains("/fans/x?y=1"), "{}", page.body);
    assert!(page.body.contains("oOpenid123"), "{}", page.body);
    let json = reply(g.decide_at(&xhr, NOW));
    assert_eq!(json.status, 403);
    assert!(json.body.contains("access_denied"));
    // Another user is not this one.
    let other = login_as(&g, with_ids("oSomeoneElse", None));
    follow_check(g.decide_at(&req("/fans/x", None, Some(&other)), NOW));
    // No session: the login first.
    assert_eq!(
        reply(g.decide_at(&req("/fans/x", None, None), NOW)).status,
        302
    );
    // Elsewhere the follow state does not matter.
    assert!(matches!(
        g.decide_at(&req("/orders", None, Some(&session)), NOW),
        Decision::Pass(_)
    ));
}

#[test]
fn the_auth_route_checks_followers_too() {
    let g = followers_gate();
    let session = logged_in_cookie(&g);
    let mut auth = req("/_wechat/auth", None, Some(&session));
    auth.original_uri = Some("/fans/x");
    let (_, _, for_auth) = follow_check(g.decide_at(&auth, NOW));
    assert!(for_auth, "answered 202 or 403 once known");
    // The pure auth decision can't ask: try again.
    assert_eq!(
        g.decide_auth(&req("/fans/x", None, Some(&session))).status,
        503
    );
    g.followers.insert("oOpenid123".into(), false, NOW + 10);
    assert_eq!(reply(g.decide_at(&auth, NOW)).status, 403);
    g.followers.insert("oOpenid123".into(), true, NOW + 10);
    let passed = reply(g.decide_at(&auth, NOW));
    assert_eq!(passed.status, 202);
    assert_eq!(passed.header("X-WeChat-OpenID"), Some("oOpenid123"));
}

#[tokio::test]
async fn a_scanners_follow_state_is_shared_only_where_a_followers_policy_is_in_use() {
    let now = now_unix();
    let dir = std::env::temp_dir().join(format!("wechat-follow-{}", new_sid()));
    std::fs::create_dir_all(&dir).unwrap();
    // A gate whose store (a state file) keeps follow states for others.
    let filed = |name: &str, extra: &str| {
        gate_with(&format!(
            "{extra}\n[store]\nurl = \"file:{}\"\n",
            dir.join(name).display()
        ))
    };
    let shared = |g: &Gate, openid: &'static str| {
        let coordination = g.coordination.clone();
        async move { coordination.follow_status(openid).await.unwrap() }
    };
    // No followers route: kept in this instance's memory, not written.
    let g = filed("a.db", "");
    g.remember_follower("oScanner1", true, now).await;
    assert_eq!(g.followers.get("oScanner1", now), Some(true));
    assert_eq!(shared(&g, "oScanner1").await, None);
    // A host names the followers policy: from then on it is shared, and a
    // reloaded gate keeps sharing it.
    g.named_policy("followers").unwrap();
    g.remember_follower("oScanner2", true, now).await;
    let kept = shared(&g, "oScanner2").await;
    assert!(
        matches!(kept, Some((true, until)) if until > now),
        "{kept:?}"
    );
    let reloaded = g.reload(g.config.clone()).unwrap();
    reloaded.remember_follower("oScanner3", false, now).await;
    assert!(matches!(
        shared(&reloaded, "oScanner3").await,
        Some((false, _))
    ));
    drop((g, reloaded));
    // A followers route: shared from the start.
    let routed = filed(
        "b.db",
        "[[route]]\nprefix = \"/fans/\"\npolicy = \"followers\"\n",
    );
    routed.remember_follower("oScanner4", true, now).await;
    assert!(matches!(
        shared(&routed, "oScanner4").await,
        Some((true, _))
    ));
    drop(routed);
    // Other named policies change nothing.
    let other = filed("c.db", "");
    other.named_policy("userinfo").unwrap();
    other.remember_follower("oScanner5", true, now).await;
    assert_eq!(shared(&other, "oScanner5").await, None);
    drop(other);
    std::fs::remove_dir_all(&dir).unwrap();
}
