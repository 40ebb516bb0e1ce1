//! The same login through every front: the gateway, and the C, PHP and
//! Java hosts on the C ABI. One table of cases runs against each; every
//! host must answer exactly as the gateway does. Then bounded load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wechat_e2e::{
    nginx_module, query_param, rss_kib, target_dir, wecom_callback, Answer, Browser, Front, Site,
    SiteLogin, DESKTOP_UA, WECHAT_UA, WECOM_CORPID, WECOM_TEST_SECRET, WECOM_UA,
};

/// What one case saw, with the site's own URLs and random values replaced,
/// so that different fronts can be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    case: &'static str,
    status: u16,
    content_type: String,
    location: Option<String>,
    json: Option<serde_json::Value>,
    sets_session: bool,
}

fn normalize(site: &Site, text: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let mut out = text
        .replace(&enc(&site.url), "%SITE%")
        .replace(&site.url, "SITE")
        .replace(&site.emulator_url, "EMULATOR");
    if let Some(i) = out.find("state=") {
        let end = out[i..].find(['&', '#']).map_or(out.len(), |e| i + e);
        out.replace_range(i..end, "state=STATE");
    }
    out
}

fn seen(site: &Site, case: &'static str, a: &Answer) -> Seen {
    let content_type = a.header("content-type").unwrap_or("").to_ascii_lowercase();
    Seen {
        case,
        status: a.status,
        content_type: content_type.clone(),
        location: a.header("location").map(|l| normalize(site, l)),
        json: content_type
            .starts_with("application/json")
            .then(|| serde_json::from_str(&normalize(site, &a.body)).unwrap()),
        sets_session: a
            .headers_named("set-cookie")
            .iter()
            .any(|c| c.starts_with("wechat_session=") && !c.contains("Max-Age=0")),
    }
}

/// An XHR `GET target` sent byte for byte, as an [`Answer`].
fn raw_answer(site: &Site, target: &str) -> Answer {
    raw_answer_with(site, target, "")
}

/// [`raw_answer`] with more header lines (`Name: value\r\n` each).
fn raw_answer_with(site: &Site, target: &str, extra_headers: &str) -> Answer {
    let (head, body) = wechat_e2e::raw_request(
        &site.url,
        &format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nX-Requested-With: XMLHttpRequest\r\n{extra_headers}Connection: close\r\n\r\n",
            site.url.trim_start_matches("http://")
        ),
    );
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        url: format!("{}{target}", site.url),
        status: wechat_e2e::raw_status(&head),
        headers,
        body,
    }
}

/// The table: every case, in order, against one site.
async fn run_cases(site: &Site) -> Vec<Seen> {
    let user = site.emulator("user").await;
    let mut out = Vec::new();
    let xhr = [("X-Requested-With", "XMLHttpRequest")];

    let mut b = Browser::new(WECHAT_UA);
    out.push(seen(
        site,
        "wechat browser, no session",
        &b.get(&format!("{}/?a=1", site.url)).await,
    ));
    out.push(seen(
        site,
        "xhr, no session",
        &b.get_with(&format!("{}/api/x", site.url), &xhr).await,
    ));
    let json = [("Accept", "application/json")];
    out.push(seen(
        site,
        "json client, no session",
        &b.get_with(&format!("{}/api/y?z=1", site.url), &json).await,
    ));
    out.push(seen(
        site,
        "desktop browser, no session",
        &Browser::new(DESKTOP_UA)
            .get(&format!("{}/", site.url))
            .await,
    ));
    out.push(seen(
        site,
        "callback, wrong state",
        &b.get(&format!("{}/_wechat/callback?code=x&state=Wrong", site.url))
            .await,
    ));
    out.push(seen(
        site,
        "callback, no state",
        &b.get(&format!("{}/_wechat/callback?code=x", site.url))
            .await,
    ));
    out.push(seen(
        site,
        "healthz",
        &b.get(&format!("{}/_wechat/healthz", site.url)).await,
    ));
    out.push(seen(
        site,
        "userinfo, no session",
        &b.get(&format!("{}/_wechat/userinfo", site.url)).await,
    ));
    out.push(seen(
        site,
        "login route",
        &b.get(&format!("{}/_wechat/login?rd=%2Fp%3Fq%3D1", site.url))
            .await,
    ));
    out.push(seen(
        site,
        "login route, off-site rd",
        &b.get(&format!(
            "{}/_wechat/login?rd=https%3A%2F%2Fevil.example%2F",
            site.url
        ))
        .await,
    ));

    // Paths that leave the public /static/ by dot segments, sent raw (no
    // client normalises them): each front decides on the one canonical path.
    for (case, target) in [
        ("dot segments past a public path", "/static/../api/x"),
        (
            "encoded dot segments past a public path",
            "/static/%2e%2E/api/x",
        ),
        ("an encoded slash", "/static/..%2Fapi/x"),
        ("a dot segment with a parameter", "/static/..;/api/x"),
    ] {
        out.push(seen(site, case, &raw_answer(site, target)));
    }

    // The full login.
    let mut browser = Browser::new(WECHAT_UA);
    let first = browser.get(&format!("{}/", site.url)).await;
    let consent = browser.get(first.location()).await;
    let callback = consent.location().to_owned();
    let kept = browser.cookies.clone();
    let back = browser.get(&callback).await;
    out.push(seen(site, "callback", &back));
    let page = browser.get(&format!("{}/", site.url)).await;
    assert_eq!(page.status, 200, "{:?}: {}", site.front, page.body);
    assert!(
        page.body.contains(user["openid"].as_str().unwrap()),
        "{:?}: {}",
        site.front,
        page.body
    );
    assert!(
        page.body.contains(user["nickname"].as_str().unwrap()),
        "{:?}: {}",
        site.front,
        page.body
    );

    // The same callback again (WeChat's double hit): the same outcome.
    let mut duplicate = Browser::new(WECHAT_UA);
    duplicate.cookies = kept;
    out.push(seen(
        site,
        "duplicate callback",
        &duplicate.get(&callback).await,
    ));
    let calls = site.emulator("calls").await;
    assert_eq!(calls["access_token"], 1, "{:?}: one exchange", site.front);
    assert!(!duplicate.seen.last().unwrap().body.contains("40163"));

    out.push(seen(
        site,
        "userinfo",
        &browser.get(&format!("{}/_wechat/userinfo", site.url)).await,
    ));
    out.push(seen(
        site,
        "xhr with session",
        &browser
            .get_with(&format!("{}/_wechat/userinfo", site.url), &xhr)
            .await,
    ));

    // The routes every site has (wechat_e2e::SITE_ROUTES): an allow-list
    // without this user, a public page, the verification file, preflights.
    out.push(seen(
        site,
        "allow route, not listed",
        &browser.get(&format!("{}/admin/users", site.url)).await,
    ));
    out.push(seen(
        site,
        "allow route, not listed, xhr",
        &browser
            .get_with(&format!("{}/admin/users", site.url), &xhr)
            .await,
    ));
    out.push(seen(
        site,
        "allow route, dot segments",
        &raw_answer_with(
            site,
            "/about/../admin/users",
            &format!("Cookie: {}\r\n", browser.cookie_header()),
        ),
    ));
    let public = Browser::new(WECHAT_UA)
        .get(&format!("{}/about", site.url))
        .await;
    // The application's answer (a host's own app may not have the page).
    assert!(
        !matches!(public.status, 302 | 401 | 403),
        "{:?}: {} {}",
        site.front,
        public.status,
        public.body
    );
    out.push(seen(
        site,
        "below the exact public page",
        &Browser::new(WECHAT_UA)
            .get_with(&format!("{}/about/x", site.url), &xhr)
            .await,
    ));
    out.push(seen(
        site,
        "verification file",
        &Browser::new(DESKTOP_UA)
            .get(&format!("{}/MP_verify_Hosts123.txt", site.url))
            .await,
    ));
    assert_eq!(
        Browser::new(DESKTOP_UA)
            .get(&format!("{}/MP_verify_Hosts123.txt", site.url))
            .await
            .body,
        "Hosts123",
        "{:?}",
        site.front
    );
    let preflight = |headers: &'static [(&'static str, &'static str)]| {
        let mut request = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .request(reqwest::Method::OPTIONS, format!("{}/api/x", site.url))
            .header("User-Agent", DESKTOP_UA);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let passed = preflight(&[
        ("Origin", "https://shop.example"),
        ("Access-Control-Request-Method", "POST"),
    ])
    .await;
    assert!(
        passed != 401 && passed != 302,
        "{:?}: a preflight goes to the application, got {passed}",
        site.front
    );
    assert_eq!(
        preflight(&[("Origin", "https://shop.example")]).await,
        401,
        "{:?}: OPTIONS without Access-Control-Request-Method is no preflight",
        site.front
    );

    // The JS-SDK's wx.config for a page of this site, checked by the
    // emulator as WeChat's browser checks it; another origin gets 400.
    let page = format!("{}/orders?id=1", site.url);
    let enc = |u: &str| url::form_urlencoded::byte_serialize(u.as_bytes()).collect::<String>();
    let config = browser
        .get(&format!(
            "{}/_wechat/jssdk-config?url={}",
            site.url,
            enc(&format!("{page}#x"))
        ))
        .await;
    assert_eq!(config.status, 200, "{:?}: {}", site.front, config.body);
    let mut asked = config.json();
    asked["url"] = page.clone().into();
    let verdict = wechat_e2e::emulator_post(&site.emulator_url, "jssdk/verify", asked).await;
    assert_eq!(verdict["errMsg"], "config:ok", "{:?}", site.front);
    out.push(seen(
        site,
        "jssdk-config, another origin",
        &browser
            .get(&format!(
                "{}/_wechat/jssdk-config?url={}",
                site.url,
                enc("https://evil.example/")
            ))
            .await,
    ));

    // A followers route, for this user who does not follow the Official
    // Account: a 307 back once WeChat was asked (nginx auth_request: the
    // answer at once), then 403 naming them.
    out.push(seen(
        site,
        "followers route, not following",
        &browser.follow(&format!("{}/fans/x?y=1", site.url)).await,
    ));
    out.push(seen(
        site,
        "followers route, not following, xhr",
        &browser
            .get_with(&format!("{}/fans/x", site.url), &xhr)
            .await,
    ));

    let mut tampered = Browser::new(WECHAT_UA);
    let mut value = browser.cookies["wechat_session"].clone().into_bytes();
    let mid = value.len() / 2;
    value[mid] = if value[mid] == b'A' { b'B' } else { b'A' };
    tampered
        .cookies
        .insert("wechat_session".into(), String::from_utf8(value).unwrap());
    out.push(seen(
        site,
        "tampered cookie, xhr",
        &tampered
            .get_with(&format!("{}/api/x", site.url), &xhr)
            .await,
    ));
    out.push(seen(
        site,
        "tampered cookie, wechat browser",
        &tampered.get(&format!("{}/", site.url)).await,
    ));

    out.push(seen(
        site,
        "logout",
        &browser.get(&format!("{}/_wechat/logout", site.url)).await,
    ));
    assert!(!browser.cookies.contains_key("wechat_session"));
    out.push(seen(
        site,
        "after logout, xhr",
        &browser.get_with(&format!("{}/api/x", site.url), &xhr).await,
    ));

    // Another person, who follows: the followers route lets them in.
    wechat_e2e::emulator_control(
        &site.emulator_url,
        "user",
        serde_json::json!({ "key": "fan", "subscribed": true }),
    )
    .await;
    let fan = site.emulator("user").await;
    let mut follower = Browser::new(WECHAT_UA);
    let first = follower.get(&format!("{}/fans/", site.url)).await;
    let consent = follower.get(first.location()).await;
    follower.get(consent.location()).await;
    let inside = follower.follow(&format!("{}/fans/x", site.url)).await;
    assert!(
        !matches!(inside.status, 302 | 401 | 403),
        "{:?}: a follower passes: {} {}",
        site.front,
        inside.status,
        inside.body
    );
    assert_ne!(fan["openid"], user["openid"]);
    out
}

#[tokio::test]
async fn every_front_answers_exactly_as_the_gateway() {
    let gateway = Site::start(Front::Gateway).await;
    let expected = run_cases(&gateway).await;
    // Spot-check the reference itself.
    let by_case = |case: &str| expected.iter().find(|s| s.case == case).unwrap().clone();
    assert_eq!(by_case("xhr, no session").status, 401);
    assert_eq!(
        by_case("xhr, no session").json.unwrap()["login_url"],
        "SITE/_wechat/login?rd=%2Fapi%2Fx"
    );
    assert!(by_case("wechat browser, no session").location.unwrap().starts_with(
        "EMULATOR/connect/oauth2/authorize?appid=wx1234567890abcdef&redirect_uri=%SITE%%2F_wechat%2Fcallback&response_type=code&scope=snsapi_userinfo&state=STATE"
    ));
    let callback = by_case("callback");
    assert_eq!(
        (
            callback.status,
            callback.location.as_deref(),
            callback.sets_session
        ),
        (302, Some("/"), true)
    );
    assert_eq!(
        by_case("duplicate callback"),
        Seen {
            case: "duplicate callback",
            ..callback
        }
    );
    assert_eq!(by_case("tampered cookie, xhr").status, 401);
    assert_eq!(by_case("callback, wrong state").status, 400);
    assert_eq!(by_case("dot segments past a public path").status, 401);
    assert_eq!(
        by_case("encoded dot segments past a public path").status,
        401
    );
    assert_eq!(by_case("an encoded slash").status, 400);
    assert_eq!(by_case("a dot segment with a parameter").status, 400);
    assert_eq!(by_case("allow route, not listed").status, 403);
    assert_eq!(
        by_case("allow route, not listed, xhr").json.unwrap()["error"],
        "access_denied"
    );
    assert_eq!(by_case("allow route, dot segments").status, 403);
    assert_eq!(by_case("below the exact public page").status, 401);
    assert_eq!(by_case("followers route, not following").status, 403);
    assert_eq!(by_case("jssdk-config, another origin").status, 400);
    assert_eq!(
        by_case("followers route, not following, xhr").json.unwrap()["error"],
        "access_denied"
    );
    let file = by_case("verification file");
    assert_eq!(
        (file.status, file.content_type.as_str()),
        (200, "text/plain; charset=utf-8")
    );

    for front in [
        Front::C,
        Front::Php,
        Front::Java,
        Front::NginxAuthRequest,
        Front::NginxModule,
    ] {
        let site = Site::start(front).await;
        let got = run_cases(&site).await;
        for (want, got) in expected.iter().zip(&got) {
            assert_eq!(
                want, got,
                "{front:?} differs from the gateway on {:?}",
                want.case
            );
        }
        assert_eq!(expected.len(), got.len());
    }
}

/// Logs in once, then sends `total` requests with at most `in_flight` at a
/// time from `workers` client tasks (each its own connection pool): the
/// protected page with the session, and unauthenticated XHRs. Returns the
/// statuses seen that were not the expected ones.
async fn load(site: &Site, total: usize, in_flight: usize, workers: usize) -> Vec<u16> {
    let mut browser = Browser::new(WECHAT_UA);
    let first = browser.get(&format!("{}/", site.url)).await;
    let consent = browser.get(first.location()).await;
    browser.get(consent.location()).await;
    let cookie = Arc::new(browser.cookie_header());
    let clients: Vec<reqwest::Client> = (0..workers)
        .map(|_| {
            reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap()
        })
        .collect();
    let permits = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let client = clients[i % workers].clone();
        let (url, cookie) = (site.url.clone(), cookie.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let (req, want) = if i % 4 == 3 {
                (
                    client
                        .get(format!("{url}/api/x"))
                        .header("X-Requested-With", "XMLHttpRequest"),
                    401,
                )
            } else {
                (
                    client
                        .get(format!("{url}/"))
                        .header("Cookie", cookie.as_str()),
                    200,
                )
            };
            match req.send().await {
                Ok(r) if r.status().as_u16() == want => {
                    let _ = r.bytes().await;
                    None
                }
                Ok(r) => Some(r.status().as_u16()),
                Err(e) => {
                    eprintln!("request failed: {e:?}");
                    Some(0)
                }
            }
        }));
    }
    let mut bad = Vec::new();
    for t in tasks {
        if let Some(status) = t.await.unwrap() {
            bad.push(status);
        }
    }
    bad
}

#[tokio::test]
async fn the_java_host_holds_200_concurrent_requests_with_flat_memory() {
    let mut site = Site::start(Front::Java).await;
    let started = Instant::now();
    let bad = load(&site, 5_000, 200, 8).await;
    assert!(
        bad.is_empty(),
        "unexpected answers: {:?}",
        &bad[..bad.len().min(20)]
    );
    let warm = rss_kib(site.pid());
    let bad = load(&site, 15_000, 200, 8).await;
    assert!(
        bad.is_empty(),
        "unexpected answers: {:?}",
        &bad[..bad.len().min(20)]
    );
    let end = rss_kib(site.pid());
    assert!(site.alive(), "{}", site.log());
    eprintln!(
        "java host: RSS {warm} KiB after 5k requests, {end} KiB after 20k ({:?})",
        started.elapsed()
    );
    assert!(warm > 0 && end > 0);
    assert!(
        end <= warm + warm / 4 + 16 * 1024,
        "RSS grew from {warm} KiB to {end} KiB over 15k requests"
    );
}

#[tokio::test]
async fn the_php_host_survives_bounded_concurrent_load() {
    let mut site = Site::start(Front::Php).await;
    let bad = load(&site, 2_000, 200, 8).await;
    assert!(
        bad.is_empty(),
        "unexpected answers: {:?}",
        &bad[..bad.len().min(20)]
    );
    assert!(site.alive(), "{}", site.log());
    let mut browser = Browser::new(WECHAT_UA);
    assert_eq!(
        browser.get(&format!("{}/", site.url)).await.status,
        302,
        "still serving"
    );
}

#[tokio::test]
async fn nginx_passes_the_identity_upstream_and_never_a_spoofed_header() {
    for front in [Front::NginxAuthRequest, Front::NginxModule] {
        let site = Site::start(front).await;
        let user = site.emulator("user").await;
        let forged = [
            ("X-WeChat-OpenID", "forged"),
            ("X-WeChat-Nickname", "admin"),
            ("X-WeChat-UnionID", "forged"),
            ("X-WeChat-Snapshot", "1"),
            // CGI spellings: PHP and CGI read them as HTTP_X_WECHAT_OPENID.
            ("X_WeChat_OpenID", "forged"),
            ("X-WeChat_UnionID", "forged"),
            ("x_wechat_scope", "snsapi_userinfo"),
            // A WeCom member's headers, on a WeChat site.
            ("X-WeCom-UserID", "boss"),
            ("x-wecom-corpid", "wwforged"),
            ("X_WeCom_Department", "1"),
        ];
        let identity_like = |name: &String| {
            let name = name.to_ascii_lowercase().replace('_', "-");
            name.starts_with("x-wechat-") || name.starts_with("x-wecom-")
        };
        // Public path without a session: nothing claims an identity.
        let public = Browser::new(DESKTOP_UA)
            .get_with(&format!("{}/echo/public", site.url), &forged)
            .await;
        assert_eq!(public.status, 200, "{front:?}: {}", public.body);
        let names: Vec<String> = public.json()["headers"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert!(!names.iter().any(identity_like), "{front:?}: {names:?}");

        let mut browser = Browser::new(WECHAT_UA);
        let first = browser.get(&format!("{}/echo", site.url)).await;
        let consent = browser.get(first.location()).await;
        let back = browser.get(consent.location()).await;
        assert_eq!((back.status, back.location()), (302, "/echo"), "{front:?}");
        browser.cookies.insert("theme".into(), "dark".into());
        let echo = browser
            .get_with(&format!("{}/echo", site.url), &forged)
            .await
            .json();
        let h = &echo["headers"];
        assert_eq!(
            h["x-wechat-openid"],
            serde_json::json!([user["openid"]]),
            "{front:?}"
        );
        assert_eq!(
            h["x-wechat-unionid"],
            serde_json::json!([user["unionid"]]),
            "{front:?}"
        );
        assert_eq!(echo["nickname"], user["nickname"], "{front:?}");
        assert!(h.get("x-wechat-snapshot").is_none(), "{front:?}");
        for wecom in ["x-wecom-userid", "x-wecom-corpid", "x-wecom-department"] {
            assert!(h.get(wecom).is_none(), "{front:?}: {h}");
        }
        let spellings: Vec<&String> = h
            .as_object()
            .unwrap()
            .keys()
            .filter(|n| identity_like(n) && n.contains('_'))
            .collect();
        assert!(spellings.is_empty(), "{front:?}: {spellings:?}");
        assert_eq!(
            h["x-wechat-scope"],
            serde_json::json!(["snsapi_userinfo"]),
            "{front:?}: the gate's own scope, once"
        );
        if front == Front::NginxModule {
            let extra = browser
                .get_with(&format!("{}/echo", site.url), &[("X-WeChat-Admin", "1")])
                .await
                .json();
            assert!(
                extra["headers"].get("x-wechat-admin").is_none(),
                "the module drops every X-WeChat-* header"
            );
            assert_eq!(
                extra["headers"]["cookie"][0], "theme=dark",
                "and the gate's cookies"
            );
        }
        let log = site.nginx_error_log();
        assert!(
            !log.contains("[alert]") && !log.contains("[emerg]"),
            "{front:?}: {log}"
        );
    }
}

/// `nginx -t` of a configuration loading the module, with `server` as the
/// inside of its one `server` block: whether it passed, and its stderr.
fn nginx_t(dir: &std::path::Path, server: &str) -> (bool, String) {
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "load_module {};\nevents {{}}\nhttp {{ server {{ listen 127.0.0.1:1; {server} }} }}\n",
            nginx_module().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new("nginx")
        .args(["-t", "-p"])
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .env_remove("WECHAT_OAUTH_SITE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn nginx_t_stops_on_a_broken_config_file_with_the_librarys_message() {
    let dir = wechat_e2e::ScratchDir::new("nginx-t");
    let toml = dir.join("wechat.toml");
    let load = format!("wechat_oauth_config {}; wechat_oauth on;", toml.display());
    std::fs::write(&toml, "[wechat]\nappid = \"wx1\"\nsecret = \"s\"\n[gateway]\npublic_url = \"https://a.example\"\ncookie_secret = \"short\"\n").unwrap();
    let (ok, text) = nginx_t(&dir, &load);
    assert!(!ok, "{text}");
    assert!(
        text.contains("[gateway] cookie_secret") && text.contains("32 bytes"),
        "{text}"
    );
    assert!(!text.contains("short"), "the secret is not printed: {text}");

    // A policy no config file has stops it too, naming the ones there are.
    std::fs::write(&toml, "[wechat]\nappid = \"wx1\"\nsecret = \"s\"\n[gateway]\npublic_url = \"https://a.example\"\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\n[[route]]\nname = \"staff\"\npolicy = \"allow\"\nallow = [\"oStaff1\"]\n").unwrap();
    for (policy, passes) in [
        ("admins", false),
        ("Public", false),
        ("staff", true),
        ("public", true),
    ] {
        let (ok, text) = nginx_t(
            &dir,
            &format!("{load} location /x/ {{ wechat_oauth_policy {policy}; }}"),
        );
        assert_eq!(ok, passes, "{policy}: {text}");
        if !ok {
            assert!(
                text.contains(&format!("wechat_oauth_policy \"{policy}\""))
                    && text
                        .contains("public, login, userinfo, followers or a [[route]] name: staff"),
                "{text}"
            );
        }
    }

    // A file of several sites: the directive's second argument names one,
    // and that one is what is loaded (only blog has the route "writers").
    std::fs::write(&toml, "[gateway]\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\n\
        [[site]]\nname = \"shop\"\nhosts = [\"shop.example\"]\n[site.wechat]\nappid = \"wx1\"\nsecret = \"s\"\n[site.gateway]\npublic_url = \"https://shop.example\"\n\
        [[site]]\nname = \"blog\"\nhosts = [\"blog.example\"]\n[site.wechat]\nappid = \"wx2\"\nsecret = \"s\"\n[site.gateway]\npublic_url = \"https://blog.example\"\n[[site.route]]\nname = \"writers\"\npolicy = \"allow\"\nallow = [\"oWriter1\"]\n").unwrap();
    let writers = "location /x/ { wechat_oauth_policy writers; }";
    for (site, location, problem) in [
        ("blog", writers, None),
        ("shop", writers, Some("no policy \"writers\"")),
        ("shop", "", None),
        ("news", "", Some("one of shop, blog")),
        ("", "", Some("one of shop, blog")),
    ] {
        let (ok, text) = nginx_t(
            &dir,
            &format!(
                "wechat_oauth_config {} {site}; wechat_oauth on; {location}",
                toml.display()
            ),
        );
        assert_eq!(ok, problem.is_none(), "{site}: {text}");
        if let Some(problem) = problem {
            assert!(text.contains(problem), "{site}: {text}");
        }
    }
    let _ = target_dir();
}

/// Logs `browser` in on `site` (a WeChat browser), starting at `path`.
async fn log_in(site: &Site, browser: &mut Browser, path: &str) {
    let first = browser.get(&format!("{}{path}", site.url)).await;
    assert_eq!(first.status, 302, "{:?}: {}", site.front, first.body);
    let consent = browser.get(first.location()).await;
    let back = browser.get(consent.location()).await;
    assert_eq!(back.status, 302, "{:?}: {}", site.front, back.body);
    assert!(browser.cookies.contains_key("wechat_session"));
}

#[tokio::test]
async fn an_nginx_location_decides_by_the_policy_it_names() {
    let site = Site::start(Front::NginxModule).await;
    let openid = site.emulator("user").await["openid"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = |path: &str| format!("{}{path}", site.url);

    // `wechat_oauth_policy public`: no login, where the path's route wants one.
    let mut anonymous = Browser::new(WECHAT_UA);
    let open = anonymous
        .get_with(&page("/echo/open/x"), &[("X-WeChat-OpenID", "oForged")])
        .await;
    assert_eq!(open.status, 200, "{}", open.body);
    assert!(
        open.json()["headers"].get("x-wechat-openid").is_none(),
        "{}",
        open.body
    );
    assert_eq!(anonymous.get(&page("/echo/x")).await.status, 302);

    // `wechat_oauth_policy staff` (a named allow route, this user not on
    // it): 403 for the logged-in user who passes everywhere else.
    let mut user = Browser::new(WECHAT_UA);
    log_in(&site, &mut user, "/echo/x").await;
    assert_eq!(user.get(&page("/echo/x")).await.status, 200);
    let refused = user.get(&page("/echo/staff/report")).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains(&openid), "{}", refused.body);
    let xhr = user
        .get_with(
            &page("/echo/staff/report"),
            &[("X-Requested-With", "XMLHttpRequest")],
        )
        .await;
    assert_eq!(
        (xhr.status, xhr.json()["error"].clone()),
        (403, "access_denied".into())
    );
    assert_eq!(
        anonymous.get(&page("/echo/staff/report")).await.status,
        302,
        "a login first"
    );
    // The public location still carries a logged-in user's identity.
    let open = user.get(&page("/echo/open/x")).await;
    assert_eq!(open.json()["headers"]["x-wechat-openid"][0], openid);

    // Other spellings reach the location nginx picks, and its policy.
    for path in [
        "/echo/open/../staff/report",
        "/echo/open/%2e%2e/staff/report",
        "/echo//staff/report",
        "/echo/./staff/report",
        "/echo/%73taff/report",
    ] {
        let (status, _) = wechat_e2e::raw_get(
            &site.url,
            path,
            &format!(
                "Cookie: {}\r\nUser-Agent: {WECHAT_UA}\r\n",
                user.cookie_header()
            ),
        );
        assert!(matches!(status, 403 | 400), "{path}: {status}");
    }
    for path in ["/echo/staff/../open/x", "/echo/staff/%2e%2e/open/x"] {
        let (status, body) =
            wechat_e2e::raw_get(&site.url, path, &format!("User-Agent: {WECHAT_UA}\r\n"));
        assert!(matches!(status, 200 | 400), "{path}: {status} {body}");
    }
}

#[tokio::test]
async fn the_nginx_module_holds_100k_requests_and_2k_logins_with_flat_worker_memory() {
    let site = Site::start(Front::NginxModule).await;
    let started = Instant::now();
    let bad = load(&site, 10_000, 64, 4).await;
    assert!(
        bad.is_empty(),
        "unexpected answers: {:?}",
        &bad[..bad.len().min(20)]
    );
    let workers = site.nginx_workers();
    assert_eq!(workers.len(), 1);

    // 2k logins, 16 at a time: each a redirect, the emulator, a callback
    // whose code exchange runs in nginx's thread pool.
    let permits = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for _ in 0..2_000 {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let url = site.url.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let mut b = Browser::new(WECHAT_UA);
            let first = b.get(&format!("{url}/")).await;
            let consent = b.get(first.location()).await;
            b.get(consent.location()).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 302);
    }
    assert_eq!(site.emulator("calls").await["access_token"], 2_000 + 1);
    // Measured once the exchange runtime and the thread pool are up.
    let warm = rss_kib(workers[0]);

    let bad = load(&site, 90_000, 64, 4).await;
    assert!(
        bad.is_empty(),
        "unexpected answers: {:?}",
        &bad[..bad.len().min(20)]
    );
    assert_eq!(site.nginx_workers(), workers, "the worker never crashed");
    let end = rss_kib(workers[0]);
    eprintln!("nginx worker: RSS {warm} KiB after 10k requests and 2k logins, {end} KiB after 90k more ({:?})", started.elapsed());
    assert!(
        end <= warm + warm / 5 + 8 * 1024,
        "worker RSS grew from {warm} KiB to {end} KiB"
    );
    let log = site.nginx_error_log();
    assert!(
        !log.contains("[alert]") && !log.contains("[emerg]") && !log.contains("[crit]"),
        "{log}"
    );
}

/// A desktop browser's scene QR login on `site`, the phone's push signed
/// (in safe mode: encrypted) and sent to the site itself.
async fn scene_qr_login(site: &Site, safe_mode: bool) {
    let front = site.front;
    let mut desktop = Browser::new(DESKTOP_UA);
    let page = desktop.get(&format!("{}/", site.url)).await;
    assert_eq!(page.status, 401, "{front:?}: {}", page.body);
    assert!(
        page.body.contains("/_wechat/qr/new"),
        "{front:?}: {}",
        page.body
    );
    let qr = desktop
        .qr_new(&format!("{}/_wechat/qr/new?rd=%2F", site.url))
        .await;
    let pending = desktop
        .get(&format!(
            "{}/_wechat/qr/status?scene={}&wait=0",
            site.url,
            qr["scene"].as_str().unwrap()
        ))
        .await;
    assert_eq!(pending.json()["status"], "pending", "{front:?}");
    // The phone scans the image this front drew.
    let image = desktop
        .get(&format!(
            "{}/_wechat/qr/image?scene={}",
            site.url,
            qr["scene"].as_str().unwrap()
        ))
        .await;
    assert_eq!(image.status, 200, "{front:?}: {}", image.body);
    assert_eq!(
        image.header("content-type"),
        Some("image/svg+xml"),
        "{front:?}"
    );
    let url = wechat_e2e::read_qr_image(&site.emulator_url, &image.body).await;
    let scanned = Browser::new(WECHAT_UA)
        .post_json(
            &format!("{}/_emulator/scan", site.emulator_url),
            &serde_json::json!({"url": url, "safe_mode": safe_mode}),
        )
        .await
        .json();
    assert_eq!(
        (scanned["status"].as_u64(), scanned["body"].as_str()),
        (Some(200), Some("success")),
        "{front:?} safe_mode={safe_mode}: {scanned}"
    );
    let confirmed = desktop
        .get(&format!(
            "{}/_wechat/qr/status?scene={}",
            site.url,
            qr["scene"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        confirmed.json(),
        serde_json::json!({"status": "confirmed", "redirect": "/"}),
        "{front:?}"
    );
    let page = desktop.get(&format!("{}/", site.url)).await;
    assert_eq!(page.status, 200, "{front:?}: {}", page.body);
}

/// The SPA hand-off on `site`: the front end's own page is the
/// redirect_uri, and it posts the code and state it got to `exchange`.
async fn spa_hand_off(site: &Site) {
    let front = site.front;
    let user = site.emulator("user").await;
    let mut spa = Browser::new(WECHAT_UA);
    let started = spa
        .get_with(
            &format!("{}/_wechat/authorize-url?rd=%2Fspa%2F", site.url),
            &[("Accept", "application/json")],
        )
        .await;
    assert_eq!(started.status, 200, "{front:?}: {}", started.body);
    let authorize = started.json()["url"].as_str().unwrap().to_owned();
    let back = spa.get(&authorize).await;
    assert_eq!(back.status, 302, "{front:?}: {}", back.body);
    let page = back.location().to_owned();
    assert!(
        page.starts_with(&format!("{}/spa/?", site.url)),
        "{front:?}: {page}"
    );
    let (code, state) = (query_param(&page, "code"), query_param(&page, "state"));
    let exchanged = spa
        .post_json(
            &format!("{}/_wechat/exchange", site.url),
            &serde_json::json!({"code": code, "state": state}),
        )
        .await;
    assert_eq!(exchanged.status, 200, "{front:?}: {}", exchanged.body);
    assert_eq!(exchanged.json()["openid"], user["openid"], "{front:?}");
    assert!(
        spa.cookies.keys().any(|k| k.ends_with("wechat_session")),
        "{front:?}"
    );
    let oversize = spa
        .post_json(
            &format!("{}/_wechat/exchange", site.url),
            &serde_json::json!({"code": "x".repeat(5000), "state": state}),
        )
        .await;
    assert_eq!(oversize.status, 413, "{front:?}: {}", oversize.body);
    let home = spa.get(&format!("{}/", site.url)).await;
    assert_eq!(home.status, 200, "{front:?}: {}", home.body);
}

/// Pushes that try to get past a front's push URL: a captured (timestamp,
/// nonce) with another body, an oversized body, and, in safe mode, a
/// plaintext push; none is taken.
async fn forged_pushes_are_refused(site: &Site, safe_mode: bool) {
    let front = site.front;
    let push_url = format!("{}/_wechat/events", site.url);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (ts, nonce) = (now.to_string(), wechat_e2e::random(12));
    let plain = wechat_e2e::signed_push(
        &push_url,
        &ts,
        &nonce,
        "",
        wechat_e2e::scan_xml("oSomeone", "no-such-scene", now),
    )
    .await;
    if safe_mode {
        assert_eq!(plain, 401, "{front:?}: a plaintext push in safe mode");
        return;
    }
    assert_eq!(plain, 200, "{front:?}");
    let replayed = wechat_e2e::signed_push(
        &push_url,
        &ts,
        &nonce,
        "",
        wechat_e2e::scan_xml("oAttacker", "other-scene", now),
    )
    .await;
    assert_eq!(
        replayed, 401,
        "{front:?}: a captured push URL with another body"
    );
    let nonce = wechat_e2e::random(12);
    let oversized = "x".repeat(wechat_oauth::push::MAX_PUSH_BYTES + 1);
    let big = wechat_e2e::signed_push(&push_url, &ts, &nonce, "", oversized).await;
    assert_eq!(big, 413, "{front:?}: a push over 64 KiB");
}

#[tokio::test]
async fn every_front_logs_in_by_scene_qr_with_plain_and_safe_pushes_and_by_the_spa_hand_off() {
    for front in [
        Front::Gateway,
        Front::C,
        Front::Php,
        Front::Java,
        Front::NginxAuthRequest,
        Front::NginxModule,
    ] {
        let site = Site::start_with(front, SiteLogin::SceneQr).await;
        scene_qr_login(&site, false).await;
        forged_pushes_are_refused(&site, false).await;
        spa_hand_off(&site).await;
        drop(site);
        let site = Site::start_with(front, SiteLogin::SceneQrSafe).await;
        scene_qr_login(&site, true).await;
        forged_pushes_are_refused(&site, true).await;
    }
}

#[tokio::test]
async fn the_nginx_modules_access_log_in_the_examples_format_holds_no_code_state_or_token() {
    let site = Site::start(Front::NginxModule).await;
    let user = site.emulator("user").await;
    let mut browser = Browser::new(WECHAT_UA);
    let start = browser.get(&format!("{}/echo", site.url)).await;
    assert_eq!(start.status, 302, "{}", start.body);
    let consent = browser.get(start.location()).await;
    assert_eq!(consent.status, 302, "{}", consent.body);
    let callback = consent.location().to_owned();
    let (code, state) = (
        wechat_e2e::query_param(&callback, "code"),
        wechat_e2e::query_param(&callback, "state"),
    );
    let back = browser.get(&callback).await;
    assert_eq!(back.status, 302, "{}", back.body);
    let echo = browser.get(&format!("{}/echo", site.url)).await;
    assert_eq!(echo.status, 200, "{}", echo.body);
    // nginx writes a line once its request is over.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let log = loop {
        let log = site.nginx_access_log();
        if log.lines().filter(|l| l.contains("\"GET /echo ")).count() >= 2
            && log.contains("/_wechat/callback")
        {
            break log;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let issued = site.emulator("issued").await;
    let mut secrets: Vec<String> = ["access_tokens", "refresh_tokens"]
        .iter()
        .flat_map(|k| issued[k].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    secrets.extend([code, state, browser.cookies["wechat_session"].clone()]);
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "the access log holds {secret}: {log}"
        );
    }
    assert!(!log.contains("code=") && !log.contains("state="), "{log}");
    let passed = log
        .lines()
        .rfind(|l| l.contains("\"GET /echo ") && l.contains(" 200 "))
        .unwrap_or_else(|| panic!("{log}"));
    let openid = user["openid"].as_str().unwrap();
    assert!(passed.ends_with(&format!("openid={openid}")), "{passed}");
}

/// A WeCom member's login on `site` (`login`: its scope), in WeCom's browser and by the web QR
/// login on a desktop, then a non-member refused: what every front answers.
async fn wecom_logins(site: &Site, login: SiteLogin) {
    let front = site.front;
    let mut phone = Browser::new(WECOM_UA);
    let page = format!("{}/", site.url);
    let callback = wecom_callback(&mut phone, &page, &site.emulator_url).await;
    let kept = phone.cookies.clone();
    let back = phone.get(&callback).await;
    assert_eq!(back.status, 302, "{front:?}: {}", back.body);
    // WeCom's duplicate callback: the same session, no second exchange.
    let mut duplicate = Browser::new(WECOM_UA);
    duplicate.cookies = kept;
    let again = duplicate.get(&callback).await;
    assert_eq!(again.status, 302, "{front:?}: {}", again.body);
    let calls = wechat_e2e::emulator_json(&site.emulator_url, "calls").await;
    assert_eq!(calls["wecom_getuserinfo"], 1, "{front:?}: {calls}");
    // The routes' WeCom rules: by userid (lisi only), by department (1).
    let ops = phone.get(&format!("{}/ops/deploy", site.url)).await;
    assert_eq!(ops.status, 403, "{front:?}: {}", ops.body);
    let dept = phone.get(&format!("{}/dept/report", site.url)).await;
    assert!(
        ![302, 401, 403].contains(&dept.status),
        "{front:?}: {} {}",
        dept.status,
        dept.body
    );
    let me = phone.get(&format!("{}/_wechat/userinfo", site.url)).await;
    assert_eq!(me.status, 200, "{front:?}: {}", me.body);
    assert_eq!(me.json()["wecom"]["userid"], "zhangsan", "{front:?}");
    assert_eq!(me.json()["wecom"]["corpid"], WECOM_CORPID, "{front:?}");
    // With snsapi_privateinfo the member's details come once, for the avatar.
    let scope = login.wecom_scope().unwrap();
    assert_eq!(me.json()["scope"], scope, "{front:?}");
    let private = scope == "snsapi_privateinfo";
    assert_eq!(
        calls["wecom_getuserdetail"],
        u64::from(private),
        "{front:?}: {calls}"
    );
    assert_eq!(
        me.json()["headimgurl"].is_string(),
        private,
        "{front:?}: {}",
        me.body
    );
    match front {
        // A proxy: the application behind gets the headers, never a client's own.
        Front::Gateway | Front::NginxModule | Front::NginxAuthRequest => {
            let echo = phone
                .get_with(
                    &format!("{}/echo", site.url),
                    &[("X-WeCom-UserID", "boss"), ("X-WeChat-OpenID", "oBoss")],
                )
                .await;
            assert_eq!(echo.status, 200, "{front:?}: {}", echo.body);
            let headers = &echo.json()["headers"];
            assert_eq!(
                headers["x-wecom-userid"],
                serde_json::json!(["zhangsan"]),
                "{front:?}: {headers}"
            );
            assert_eq!(
                headers["x-wecom-department"],
                serde_json::json!(["1,2"]),
                "{front:?}"
            );
            assert_eq!(
                headers["x-wecom-name"],
                serde_json::json!(["%E5%BC%A0%E4%B8%89"]),
                "{front:?}"
            );
            assert!(
                headers.get("x-wechat-openid").is_none(),
                "{front:?}: {headers}"
            );
        }
        // A host is the application: its page names the member.
        _ => {
            let page = phone.get(&format!("{}/", site.url)).await;
            assert_eq!(page.status, 200, "{front:?}: {}", page.body);
            assert!(page.body.contains("zhangsan"), "{front:?}: {}", page.body);
        }
    }

    let mut desktop = Browser::new(DESKTOP_UA);
    let callback = wecom_callback(&mut desktop, &page, &site.emulator_url).await;
    let back = desktop.get(&callback).await;
    assert_eq!(back.status, 302, "{front:?}: {}", back.body);
    let me = desktop.get(&format!("{}/_wechat/userinfo", site.url)).await;
    assert_eq!(me.json()["wecom"]["userid"], "zhangsan", "{front:?}");

    wechat_e2e::emulator_control(
        &site.emulator_url,
        "wecom/member",
        serde_json::json!({"non_member": true}),
    )
    .await;
    let mut guest = Browser::new(WECOM_UA);
    let callback = wecom_callback(&mut guest, &page, &site.emulator_url).await;
    let refused = guest.get(&callback).await;
    assert_eq!(refused.status, 403, "{front:?}: {}", refused.body);
    assert!(
        refused.body.contains("此网站仅限企业成员"),
        "{front:?}: {}",
        refused.body
    );
    // WeCom refuses a code (40029): the login-expired page.
    wechat_e2e::emulator_control(
        &site.emulator_url,
        "faults",
        serde_json::json!({"endpoint": "wecom_getuserinfo", "errcode": 40029}),
    )
    .await;
    let mut late = Browser::new(WECOM_UA);
    let callback = wecom_callback(&mut late, &page, &site.emulator_url).await;
    let expired = late.get(&callback).await;
    assert_eq!(expired.status, 400, "{front:?}: {}", expired.body);
    let issued = wechat_e2e::issued_secrets(&site.emulator_url);
    for answer in phone
        .seen
        .iter()
        .chain(&desktop.seen)
        .chain(&guest.seen)
        .chain(&late.seen)
    {
        if !answer.url.starts_with(&site.url) {
            continue;
        }
        let text = answer.all_text();
        for secret in issued.iter().map(String::as_str).chain([WECOM_TEST_SECRET]) {
            assert!(
                !text.contains(secret),
                "{front:?}: {} shows a secret",
                answer.url
            );
        }
    }
}

#[tokio::test]
async fn every_front_logs_a_wecom_member_in_through_the_same_calls() {
    for front in [
        Front::Gateway,
        Front::C,
        Front::Php,
        Front::Java,
        Front::NginxModule,
        Front::NginxAuthRequest,
    ] {
        for login in [SiteLogin::Wecom, SiteLogin::WecomPrivateinfo] {
            let site = Site::start_with(front, login).await;
            wecom_logins(&site, login).await;
            // No corp secret, corp token, code or user_ticket in any log of the front.
            let mut secrets = wechat_e2e::issued_secrets(&site.emulator_url);
            assert!(secrets.len() >= 4, "{front:?}: {secrets:?}");
            secrets.push(WECOM_TEST_SECRET.to_owned());
            wechat_e2e::assert_no_secret_in_logs(&site.dir, &secrets);
        }
    }
}
