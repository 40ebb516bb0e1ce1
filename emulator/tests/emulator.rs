//! The emulator over real HTTP: it must hold the protocol as strictly as WeChat.

use std::time::Duration;

use wechat_emulator::{spawn, EmulatorConfig, Running};

const APPID: &str = "wx1234567890abcdef";
const SECRET: &str = "the-app-secret";

async fn start(cfg: EmulatorConfig) -> (Running, reqwest::Client) {
    let running = spawn(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    (running, client)
}

fn authorize_query(redirect: &str, scope: &str) -> String {
    let enc: String = url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect();
    format!("appid={APPID}&redirect_uri={enc}&response_type=code&scope={scope}&state=abc123")
}

struct Answer {
    status: u16,
    location: Option<String>,
    content_type: String,
    body: String,
}

async fn get(client: &reqwest::Client, url: String) -> Answer {
    let r = client.get(url).send().await.unwrap();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    Answer {
        status: r.status().as_u16(),
        location: header("location"),
        content_type: header("content-type").unwrap_or_default(),
        body: r.text().await.unwrap(),
    }
}

async fn code(em: &Running, client: &reqwest::Client, scope: &str) -> String {
    let q = authorize_query("https://app.example.com/cb?x=1", scope);
    let a = get(
        client,
        format!("{}/connect/oauth2/authorize?{q}", em.base_url()),
    )
    .await;
    assert_eq!(a.status, 302, "{}", a.body);
    let location = url::Url::parse(&a.location.unwrap()).unwrap();
    assert_eq!(location.host_str(), Some("app.example.com"));
    let pairs: Vec<(String, String)> = location.query_pairs().into_owned().collect();
    assert_eq!(pairs[0], ("x".into(), "1".into()));
    assert_eq!(pairs[1].0, "code");
    assert_eq!(pairs[2], ("state".into(), "abc123".into()));
    pairs[1].1.clone()
}

fn token_url(em: &Running, code: &str, secret: &str) -> String {
    format!(
        "{}/sns/oauth2/access_token?appid={APPID}&secret={secret}&code={code}&grant_type=authorization_code",
        em.base_url()
    )
}

fn userinfo_url(em: &Running, token: &serde_json::Value, openid: &str) -> String {
    format!(
        "{}/sns/userinfo?access_token={}&openid={openid}&lang=zh_CN",
        em.base_url(),
        token["access_token"].as_str().unwrap()
    )
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap()
}

#[tokio::test]
async fn authorize_checks_order_encoding_and_callback_host() {
    let (em, client) = start(EmulatorConfig::new(APPID, SECRET, "app.example.com")).await;
    let base = format!("{}/connect/oauth2/authorize", em.base_url());
    let good = authorize_query("https://app.example.com/cb", "snsapi_base");
    let a = get(&client, format!("{base}?{good}")).await;
    assert_eq!(a.status, 302);
    assert!(a
        .location
        .unwrap()
        .starts_with("https://app.example.com/cb?code="));

    let refused = [
        // scope before response_type
        good.replace(
            "response_type=code&scope=snsapi_base",
            "scope=snsapi_base&response_type=code",
        ),
        // redirect_uri not percent-encoded
        format!("appid={APPID}&redirect_uri=https://app.example.com/cb&response_type=code&scope=snsapi_base&state=abc123"),
        // an unknown trailing parameter
        format!("{good}&extra=1"),
        // connect_redirect before forcePopup, or with another value
        format!("{good}&connect_redirect=1&forcePopup=true"),
        format!("{good}&connect_redirect=true"),
        format!("{good}&connect_redirect=1&connect_redirect=1"),
    ];
    for q in refused {
        let a = get(&client, format!("{base}?{q}")).await;
        assert_eq!((a.status, a.location), (200, None), "{q}");
        assert!(a.body.contains("errcode"), "{}", a.body);
    }
    let other_host = authorize_query("https://pay.app.example.com/cb", "snsapi_base");
    assert!(get(&client, format!("{base}?{other_host}"))
        .await
        .body
        .contains("errcode: 10003"));
    let no_state = good.replace("state=abc123", "state=");
    assert!(get(&client, format!("{base}?{no_state}"))
        .await
        .body
        .contains("errcode: 10013"));
    let other_app = good.replace(APPID, "wxother");
    assert!(get(&client, format!("{base}?{other_app}"))
        .await
        .body
        .contains("errcode: 40013"));
    for q in [
        format!("{good}&connect_redirect=1"),
        format!("{good}&forcePopup=true&connect_redirect=1"),
    ] {
        let a = get(&client, format!("{base}?{q}")).await;
        assert!(!a.body.contains("errcode"), "{q}: {}", a.body);
    }
    let popup = get(&client, format!("{base}?{good}&forcePopup=true")).await;
    assert_eq!(popup.status, 200);
    assert!(
        popup.body.contains("name=\"decision\""),
        "forcePopup shows the consent page"
    );
}

#[tokio::test]
async fn codes_are_single_use_and_errors_come_as_http_200_text_plain_json() {
    let (em, client) = start(EmulatorConfig::new(APPID, SECRET, "app.example.com")).await;
    let code = code(&em, &client, "snsapi_userinfo").await;

    let wrong_secret = get(&client, token_url(&em, &code, "wrong")).await;
    assert_eq!(wrong_secret.status, 200);
    assert_eq!(wrong_secret.content_type, "text/plain");
    assert_eq!(json(&wrong_secret.body)["errcode"], 40125);

    let token = json(&get(&client, token_url(&em, &code, SECRET)).await.body);
    assert_eq!(token["expires_in"], 7200);
    assert_eq!(token["scope"], "snsapi_userinfo");
    assert!(token["unionid"].is_string());
    let reused = get(&client, token_url(&em, &code, SECRET)).await;
    assert_eq!(json(&reused.body)["errcode"], 40163);
    let unknown = get(&client, token_url(&em, "nonsense", SECRET)).await;
    assert_eq!(json(&unknown.body)["errcode"], 40029);

    let openid = token["openid"].as_str().unwrap();
    let user = json(&get(&client, userinfo_url(&em, &token, openid)).await.body);
    assert!(user["nickname"].as_str().unwrap().contains('🐼'));
    assert_eq!(user["openid"], token["openid"]);
    let other = get(&client, userinfo_url(&em, &token, "someone-else")).await;
    assert_eq!(json(&other.body)["errcode"], 40003);

    // snsapi_base tokens can't read the profile.
    let base_code = self::code(&em, &client, "snsapi_base").await;
    let base = json(&get(&client, token_url(&em, &base_code, SECRET)).await.body);
    assert!(base.get("unionid").is_none());
    let denied = get(
        &client,
        userinfo_url(&em, &base, base["openid"].as_str().unwrap()),
    )
    .await;
    assert_eq!(json(&denied.body)["errcode"], 48001);
}

#[tokio::test]
async fn codes_expire() {
    let mut cfg = EmulatorConfig::new(APPID, SECRET, "app.example.com");
    cfg.code_ttl = Duration::from_millis(50);
    let (em, client) = start(cfg).await;
    let code = code(&em, &client, "snsapi_base").await;
    tokio::time::sleep(Duration::from_millis(80)).await;
    let expired = get(&client, token_url(&em, &code, SECRET)).await;
    assert_eq!(json(&expired.body)["errcode"], 42003);
}
