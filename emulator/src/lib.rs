//! `wechat-emulator`: a local stand-in for WeChat's web authorization
//! servers (`open.weixin.qq.com` authorize pages and the `api.weixin.qq.com`
//! sns APIs), written from docs/protocol.md §1 independently of the `wechat-oauth`
//! crate, so that a misunderstanding of the protocol can't hide in both.
//!
//! What it checks, as WeChat does: the authorize parameters' exact order,
//! that `redirect_uri` is percent-encoded and its host equals the configured
//! callback host (else errcode 10003), single-use codes living 300 s (40163
//! on reuse, 40029 unknown, 42003 expired), appid/secret (40013/40125),
//! token scope for `sns/userinfo` (48001). Errors come as HTTP 200 JSON
//! `{"errcode","errmsg"}` with `Content-Type: text/plain`, as WeChat sends them.
//!
//! Control routes under `/_emulator/` let tests look inside and script
//! WeChat's misbehaviour: `GET calls` (count per endpoint), `GET|POST user`
//! (the user behind the phone: ids, nickname, snapshot), `GET issued` (every
//! code and token handed out, to prove none leaks), `POST|DELETE faults`
//! (the next N calls of an endpoint answer an errcode, an HTTP status or a
//! body, or are delayed), `POST settings` (consent auto/page/deny, code and
//! token lifetimes).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Form, Query, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use rand::distr::{Alphanumeric, SampleString};
use serde::Deserialize;
use sha1::{Digest, Sha1};

mod control;
mod desktop;
mod jssdk;
mod wecom;
use desktop::Ticket;
pub use wecom::WecomApp;

/// How the authorize page treats a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Consent {
    /// Consent at once (as a user who authorized before); `forcePopup=true` still shows the page.
    Auto,
    /// Always show a consent page with "allow" and "deny".
    Page,
    /// The user refuses at once: back to the callback with no code.
    Deny,
}

/// The emulator's settings.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The Official Account's appid.
    pub appid: String,
    /// The app secret `sns/oauth2/access_token` checks.
    pub secret: String,
    /// The authorization callback domain of the console: a host name, or
    /// `host:port` to also check the port.
    pub callback_host: String,
    /// Consent behaviour.
    pub consent: Consent,
    /// How long a code lives (WeChat: 300 s).
    pub code_ttl: Duration,
    /// How long an access token lives (WeChat: 7200 s).
    pub token_ttl: Duration,
    /// An Open Platform website app `(appid, secret)`, for `connect/qrconnect`.
    pub open_app: Option<(String, String)>,
    /// Where and how the account's events are pushed (the server URL configuration).
    pub push: Option<PushTarget>,
    /// A WeCom company's self-built app, to play WeCom too.
    pub wecom: Option<WecomApp>,
}

/// The account's server URL configuration: where WeChat pushes events.
#[derive(Debug, Clone)]
pub struct PushTarget {
    /// The server URL.
    pub url: String,
    /// The token that signs pushes.
    pub token: String,
    /// The 43-character EncodingAESKey, for safe-mode pushes.
    pub encoding_aes_key: Option<String>,
}

impl EmulatorConfig {
    /// Settings with WeChat's lifetimes and auto-consent.
    pub fn new(appid: &str, secret: &str, callback_host: &str) -> Self {
        EmulatorConfig {
            appid: appid.to_owned(),
            secret: secret.to_owned(),
            callback_host: callback_host.to_owned(),
            consent: Consent::Auto,
            code_ttl: Duration::from_secs(300),
            token_ttl: Duration::from_secs(7200),
            open_app: None,
            push: None,
            wecom: None,
        }
    }
}

/// The simulated user behind the phone.
#[derive(Debug, Clone)]
pub struct Profile {
    /// A stable key the openid and unionid are derived from.
    pub key: String,
    /// Nickname (CJK and emoji by default).
    pub nickname: String,
    /// 1 male, 2 female, 0 unknown.
    pub sex: u8,
    /// Province.
    pub province: String,
    /// City.
    pub city: String,
    /// Country.
    pub country: String,
    /// Avatar URL.
    pub headimgurl: String,
    /// A snapshot-page virtual user: tokens carry `is_snapshotuser: 1`.
    pub snapshot: bool,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            key: "user-1".into(),
            nickname: "微信用户 🐼 Zoë".into(),
            sex: 2,
            province: "广东".into(),
            city: "深圳".into(),
            country: "中国".into(),
            headimgurl: "https://thirdwx.qlogo.cn/mmopen/emulator/132".into(),
            snapshot: false,
        }
    }
}

struct CodeEntry {
    appid: String,
    openid: String,
    scope: String,
    issued: Instant,
    used: bool,
}

struct TokenEntry {
    openid: String,
    scope: String,
    expires: Instant,
}

/// A scripted misbehaviour for the next calls of one endpoint
/// (`POST /_emulator/faults`). The delay comes first; then `errcode`,
/// `drop_connection`, `http_status` or `body`, if set, answer instead of the
/// real endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// `authorize`, `access_token`, `refresh_token`, `userinfo`, `auth`,
    /// `qrconnect`, `token`, `stable_token`, `qrcode_create`, `showqrcode`,
    /// `user_info`, `ticket`, or WeCom's `wecom_authorize`, `wecom_sso`,
    /// `wecom_gettoken`, `wecom_getuserinfo`, `wecom_getuserdetail`,
    /// `wecom_user_get`.
    pub endpoint: String,
    /// How many calls it applies to (default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// Wait this long before answering, in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// Answer HTTP 200 `{"errcode":N,"errmsg":…}`.
    pub errcode: Option<i64>,
    /// Answer this HTTP status (with `body`, or an HTML error page).
    pub http_status: Option<u16>,
    /// Answer this body (HTTP 200 unless `http_status`).
    pub body: Option<String>,
    /// Send the status line and headers, then drop the connection mid-body.
    #[serde(default)]
    pub drop_connection: bool,
}

fn one() -> u32 {
    1
}

struct World {
    basic_tokens: HashMap<String, Instant>,
    basic_token_ttl: Duration,
    /// `jsapi_ticket`s handed out, until when.
    jsapi_tickets: HashMap<String, Instant>,
    /// The tokens `cgi-bin/token` handed out, oldest first: a new one ends
    /// the others `plain_token_grace` later (WeChat: 5 minutes).
    plain_tokens: Vec<String>,
    plain_token_grace: Duration,
    /// Whether the account's apps are bound to one Open Platform account:
    /// only then do WeChat's answers carry a `unionid`.
    open_platform_bound: bool,
    /// `cgi-bin/stable_token`'s token, until when.
    stable_token: Option<(String, Instant)>,
    /// The `force_refresh` calls of `stable_token`, when.
    forced_refreshes: Vec<Instant>,
    tickets: HashMap<String, Ticket>,
    /// The account's reply messages to the phone, newest last.
    messages: Vec<desktop::PhoneMessage>,
    codes: HashMap<String, CodeEntry>,
    access_tokens: HashMap<String, TokenEntry>,
    refresh_tokens: HashMap<String, TokenEntry>,
    calls: HashMap<&'static str, u64>,
    /// What the last requests asked for (`/_emulator/seen`): `forcePopup`
    /// and `connect_redirect` of the last authorize, the `lang` of the
    /// last `sns/userinfo` and `cgi-bin/user/info`.
    seen: serde_json::Map<String, serde_json::Value>,
    profile: Profile,
    /// The Official Account's followers: openid → unionid.
    followers: HashMap<String, String>,
    faults: Vec<Fault>,
    consent: Consent,
    code_ttl: Duration,
    token_ttl: Duration,
    /// WeCom's side (`EmulatorConfig::wecom`).
    wecom: wecom::WecomWorld,
}

struct Shared {
    cfg: EmulatorConfig,
    world: Mutex<World>,
}

impl Shared {
    /// Notes what a request asked for, for `/_emulator/seen`.
    fn saw(&self, what: &str, value: serde_json::Value) {
        self.world
            .lock()
            .unwrap()
            .seen
            .insert(what.to_owned(), value);
    }

    /// Counts a call and applies the next fault for `endpoint`, if any:
    /// `Some(answer)` when the fault answers instead of the endpoint.
    async fn call(&self, endpoint: &'static str) -> Option<Response> {
        let fault = {
            let mut world = self.world.lock().unwrap();
            *world.calls.entry(endpoint).or_default() += 1;
            let i = world.faults.iter().position(|f| f.endpoint == endpoint)?;
            let fault = world.faults[i].clone();
            world.faults[i].count -= 1;
            if world.faults[i].count == 0 {
                world.faults.remove(i);
            }
            fault
        };
        if fault.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
        }
        if let Some(code) = fault.errcode {
            return Some(wechat_error(code, "injected by the emulator"));
        }
        if fault.drop_connection {
            let broken = futures_util::stream::once(async {
                Err::<axum::body::Bytes, _>(std::io::Error::other("connection dropped by a fault"))
            });
            return Some(axum::body::Body::from_stream(broken).into_response());
        }
        if fault.http_status.is_none() && fault.body.is_none() {
            return None;
        }
        let status =
            StatusCode::from_u16(fault.http_status.unwrap_or(200)).unwrap_or(StatusCode::OK);
        let body = fault
            .body
            .unwrap_or_else(|| format!("<html><body><h1>{status}</h1></body></html>"));
        Some((status, body).into_response())
    }
}

type App = Arc<Shared>;

/// The emulator's routes, for serving with axum.
pub fn router(cfg: EmulatorConfig) -> Router {
    let world = World {
        basic_tokens: HashMap::new(),
        basic_token_ttl: Duration::from_secs(7200),
        jsapi_tickets: HashMap::new(),
        plain_tokens: Vec::new(),
        plain_token_grace: Duration::from_secs(300),
        open_platform_bound: true,
        stable_token: None,
        forced_refreshes: Vec::new(),
        tickets: HashMap::new(),
        messages: Vec::new(),
        codes: HashMap::new(),
        access_tokens: HashMap::new(),
        refresh_tokens: HashMap::new(),
        calls: HashMap::new(),
        seen: serde_json::Map::new(),
        profile: Profile::default(),
        followers: HashMap::new(),
        faults: Vec::new(),
        consent: cfg.consent,
        code_ttl: cfg.code_ttl,
        token_ttl: cfg.token_ttl,
        wecom: wecom::WecomWorld::default(),
    };
    let shared = Arc::new(Shared {
        cfg,
        world: Mutex::new(world),
    });
    let router = Router::new()
        .route("/connect/oauth2/authorize", get(authorize).post(confirm))
        .route("/sns/oauth2/access_token", get(access_token))
        .route("/sns/oauth2/refresh_token", get(refresh_token))
        .route("/sns/userinfo", get(userinfo))
        .route("/sns/auth", get(auth));
    wecom::routes(jssdk::routes(desktop::routes(control::routes(router)))).with_state(shared)
}

/// A running emulator.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// `http://ADDR`, usable as both `open_base` and `api_base`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` (port 0 picks a free port) and serves on the current tokio runtime.
///
/// Errors: the bind error.
pub async fn spawn(cfg: EmulatorConfig, addr: SocketAddr) -> std::io::Result<Running> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = router(cfg);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "emulator stopped");
        }
    });
    Ok(Running { addr, task })
}

fn random_token(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

fn derived_id(seed: &str) -> String {
    let digest = Sha1::digest(seed.as_bytes());
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
    format!("o{}", &b64[..27])
}

fn openid_of(appid: &str, profile: &Profile) -> String {
    derived_id(&format!("openid:{appid}:{}", profile.key))
}

fn unionid_of(profile: &Profile) -> String {
    derived_id(&format!("unionid:{}", profile.key))
}

/// A JSON API answer as WeChat sends it: HTTP 200, `text/plain`.
fn wechat_json(value: serde_json::Value) -> Response {
    let mut r = value.to_string().into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn wechat_error(code: i64, msg: &str) -> Response {
    let rid = random_token(8);
    wechat_json(serde_json::json!({"errcode": code, "errmsg": format!("{msg}, rid: {rid}")}))
}

/// WeChat's authorize error page: HTTP 200, the code on the page.
fn error_page(code: i64, msg: &str) -> Response {
    Html(format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>微信</title></head>\
<body><h2>Oops! Something went wrong:(</h2><p>errcode: {code}</p><p class=\"msg\">{}</p></body></html>",
        html_escape::encode_text(msg)
    ))
    .into_response()
}

/// The validated parameters of an authorize request.
struct AuthorizeRequest {
    redirect_uri: url::Url,
    scope: String,
    state: String,
    force_popup: bool,
    connect_redirect: bool,
}

const AUTHORIZE_ORDER: [&str; 5] = ["appid", "redirect_uri", "response_type", "scope", "state"];

/// Checks an authorize query exactly as WeChat's page does.
fn check_authorize(cfg: &EmulatorConfig, raw: &str) -> Result<AuthorizeRequest, Response> {
    check_authorize_for(cfg, raw, &cfg.appid, &["snsapi_base", "snsapi_userinfo"])
}

/// Checks an authorize or qrconnect query for `appid` and the allowed scopes.
fn check_authorize_for(
    cfg: &EmulatorConfig,
    raw: &str,
    appid: &str,
    scopes: &[&str],
) -> Result<AuthorizeRequest, Response> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let value = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    match value("appid") {
        None | Some("") => return Err(error_page(10012, "appid 参数为空 (appid empty)")),
        Some(a) if a != appid => return Err(error_page(40013, "invalid appid")),
        _ => {}
    }
    if value("redirect_uri").is_none_or(str::is_empty) {
        return Err(error_page(
            10011,
            "redirect_uri 参数为空 (redirect_uri empty)",
        ));
    }
    if value("scope").is_none_or(str::is_empty) {
        return Err(error_page(10010, "scope 参数为空 (scope empty)"));
    }
    if value("state").is_none_or(str::is_empty) {
        return Err(error_page(10013, "state 参数为空 (state empty)"));
    }
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    // After the five: forcePopup, then connect_redirect, each optional.
    let optional_ok = |rest: &[&str]| {
        matches!(
            rest,
            [] | ["forcePopup"] | ["connect_redirect"] | ["forcePopup", "connect_redirect"]
        )
    };
    let order_ok = keys.len() >= 5 && keys[..5] == AUTHORIZE_ORDER && optional_ok(&keys[5..]);
    if !order_ok {
        return Err(error_page(
            -1,
            "参数错误：参数顺序必须为 appid, redirect_uri, response_type, scope, state[, forcePopup][, connect_redirect] (wrong parameter order)",
        ));
    }
    let connect_redirect = match value("connect_redirect") {
        None => false,
        Some("1") => true,
        Some(_) => return Err(error_page(-1, "connect_redirect 参数错误")),
    };
    if value("response_type") != Some("code") {
        return Err(error_page(-1, "response_type 必须为 code"));
    }
    let scope = value("scope").unwrap_or_default().to_owned();
    if !scopes.contains(&scope.as_str()) {
        return Err(error_page(
            10005,
            "此公众号并没有这些 scope 的权限 (no permission for this scope)",
        ));
    }
    let state = value("state").unwrap_or_default().to_owned();
    if state.len() > 128 || !state.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(error_page(
            -1,
            "state 参数错误：只能为 a-zA-Z0-9，最长 128 字节",
        ));
    }
    let force_popup = match value("forcePopup") {
        None => false,
        Some("true") => true,
        Some(_) => return Err(error_page(-1, "forcePopup 参数错误")),
    };
    // The value must arrive percent-encoded: a raw ':' or '/' means it was not.
    let raw_redirect = raw
        .split('&')
        .find_map(|p| p.strip_prefix("redirect_uri="))
        .unwrap_or_default();
    if raw_redirect.contains(':') || raw_redirect.contains('/') {
        return Err(error_page(
            -1,
            "redirect_uri 参数错误：必须经过 urlEncode (redirect_uri not url-encoded)",
        ));
    }
    let redirect_uri = url::Url::parse(value("redirect_uri").unwrap_or_default())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| error_page(-1, "redirect_uri 参数错误"))?;
    if !on_callback_host(cfg, &redirect_uri) {
        return Err(error_page(
            10003,
            "redirect_uri 域名与后台配置不一致 (redirect_uri domain differs from the console's)",
        ));
    }
    Ok(AuthorizeRequest {
        redirect_uri,
        scope,
        state,
        force_popup,
        connect_redirect,
    })
}

/// Whether `url` is on the console's callback domain (WeCom: a trusted
/// domain): its host, or `host:port` when the setting names a port.
fn on_callback_host(cfg: &EmulatorConfig, url: &url::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let expected = &cfg.callback_host;
    match url.port() {
        Some(p) if expected.contains(':') => format!("{host}:{p}") == *expected,
        _ if expected.contains(':') => false,
        _ => host == expected,
    }
}

fn back_to(mut redirect_uri: url::Url, code: Option<&str>, state: &str) -> Response {
    {
        let mut q = redirect_uri.query_pairs_mut();
        if let Some(code) = code {
            q.append_pair("code", code);
        }
        q.append_pair("state", state);
    }
    // WeChat answers 302 Found.
    (
        StatusCode::FOUND,
        [(header::LOCATION, redirect_uri.as_str())],
    )
        .into_response()
}

fn issue_code(app: &App, scope: &str) -> String {
    issue_code_for(app, &app.cfg.appid, scope)
}

fn issue_code_for(app: &App, appid: &str, scope: &str) -> String {
    let code = random_token(32);
    let mut world = app.world.lock().unwrap();
    let openid = openid_of(appid, &world.profile);
    world.codes.insert(
        code.clone(),
        CodeEntry {
            appid: appid.to_owned(),
            openid,
            scope: scope.to_owned(),
            issued: Instant::now(),
            used: false,
        },
    );
    code
}

async fn authorize(State(app): State<App>, RawQuery(raw): RawQuery) -> Response {
    let raw = raw.unwrap_or_default();
    if wecom::is_wecom_authorize(&app, &raw) {
        return wecom::authorize(app, raw).await;
    }
    if let Some(answer) = app.call("authorize").await {
        return answer;
    }
    let req = match check_authorize(&app.cfg, &raw) {
        Ok(r) => r,
        Err(page) => return page,
    };
    app.saw("authorize_force_popup", req.force_popup.into());
    app.saw("authorize_connect_redirect", req.connect_redirect.into());
    let consent = app.world.lock().unwrap().consent;
    if consent == Consent::Deny {
        return back_to(req.redirect_uri, None, &req.state);
    }
    if consent == Consent::Page || req.force_popup {
        return consent_page(&app, &raw, &req);
    }
    let code = issue_code(&app, &req.scope);
    back_to(req.redirect_uri, Some(&code), &req.state)
}

fn consent_page(app: &App, raw: &str, req: &AuthorizeRequest) -> Response {
    let nickname = app.world.lock().unwrap().profile.nickname.clone();
    let what = if req.scope == "snsapi_userinfo" {
        "获取你的昵称、头像 (your nickname and avatar)"
    } else {
        "获取你的身份标识 (your identity)"
    };
    let raw = html_escape::encode_double_quoted_attribute(raw);
    Html(format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>微信授权 (WeChat emulator)</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:28em;margin:3em auto;padding:0 1em}}\
button{{font-size:1em;padding:.6em 1.4em;margin:.3em;border:0;border-radius:4px}}.allow{{background:#07c160;color:#fff}}</style></head>\
<body><p><small>WeChat emulator · 本地模拟的微信</small></p><h2>网页授权 · Authorize</h2>\
<p>该网页申请{what}</p><p>当前用户 (user): <b>{}</b></p>\
<form method=\"post\" action=\"/connect/oauth2/authorize\"><input type=\"hidden\" name=\"query\" value=\"{raw}\">\
<button class=\"allow\" name=\"decision\" value=\"allow\">允许 Allow</button>\
<button name=\"decision\" value=\"deny\">拒绝 Deny</button></form></body></html>",
        html_escape::encode_text(&nickname)
    ))
    .into_response()
}

#[derive(Deserialize)]
struct ConfirmForm {
    query: String,
    decision: String,
}

async fn confirm(State(app): State<App>, Form(form): Form<ConfirmForm>) -> Response {
    let req = match check_authorize(&app.cfg, &form.query) {
        Ok(r) => r,
        Err(page) => return page,
    };
    if form.decision == "allow" {
        let code = issue_code(&app, &req.scope);
        back_to(req.redirect_uri, Some(&code), &req.state)
    } else {
        back_to(req.redirect_uri, None, &req.state)
    }
}

type Params = Query<HashMap<String, String>>;

fn token_answer(world: &mut World, openid: String, scope: String) -> Response {
    let access = random_token(64);
    let refresh = random_token(64);
    let expires = Instant::now() + world.token_ttl;
    world.access_tokens.insert(
        access.clone(),
        TokenEntry {
            openid: openid.clone(),
            scope: scope.clone(),
            expires,
        },
    );
    world.refresh_tokens.insert(
        refresh.clone(),
        TokenEntry {
            openid: openid.clone(),
            scope: scope.clone(),
            expires: Instant::now() + Duration::from_secs(30 * 24 * 3600),
        },
    );
    let mut body = serde_json::json!({
        "access_token": access,
        "expires_in": world.token_ttl.as_secs(),
        "refresh_token": refresh,
        "openid": openid,
        "scope": scope,
    });
    if (scope.contains("snsapi_userinfo") || scope.contains("snsapi_login"))
        && world.open_platform_bound
    {
        body["unionid"] = unionid_of(&world.profile).into();
    }
    if world.profile.snapshot {
        body["is_snapshotuser"] = 1.into();
    }
    wechat_json(body)
}

fn check_app(app: &App, q: &HashMap<String, String>, grant_type: &str) -> Result<(), Response> {
    let appid = q.get("appid").filter(|v| !v.is_empty());
    let Some(appid) = appid else {
        return Err(wechat_error(41002, "appid missing"));
    };
    let open_appid = app.cfg.open_app.as_ref().map(|(a, _)| a.as_str());
    if appid != &app.cfg.appid && Some(appid.as_str()) != open_appid {
        return Err(wechat_error(40013, "invalid appid"));
    }
    if q.get("grant_type").map(String::as_str) != Some(grant_type) {
        return Err(wechat_error(40002, "invalid grant_type"));
    }
    Ok(())
}

async fn access_token(State(app): State<App>, Query(q): Params) -> Response {
    if let Some(answer) = app.call("access_token").await {
        return answer;
    }
    if let Err(e) = check_app(&app, &q, "authorization_code") {
        return e;
    }
    let appid = q.get("appid").cloned().unwrap_or_default();
    let expected_secret = match &app.cfg.open_app {
        Some((open, secret)) if *open == appid => secret.as_str(),
        _ => app.cfg.secret.as_str(),
    };
    match q.get("secret").filter(|v| !v.is_empty()) {
        None => return wechat_error(41004, "appsecret missing"),
        Some(s) if s != expected_secret => return wechat_error(40125, "invalid appsecret"),
        _ => {}
    }
    let Some(code) = q.get("code").filter(|v| !v.is_empty()) else {
        return wechat_error(41008, "missing code");
    };
    let mut world = app.world.lock().unwrap();
    let code_ttl = world.code_ttl;
    let (openid, scope) = match world.codes.get_mut(code.as_str()) {
        None => return wechat_error(40029, "invalid code"),
        Some(c) if c.appid != appid => return wechat_error(40029, "invalid code"),
        Some(c) if c.used => return wechat_error(40163, "code been used"),
        Some(c) if c.issued.elapsed() >= code_ttl => return wechat_error(42003, "code expired"),
        Some(c) => {
            c.used = true;
            (c.openid.clone(), c.scope.clone())
        }
    };
    token_answer(&mut world, openid, scope)
}

async fn refresh_token(State(app): State<App>, Query(q): Params) -> Response {
    if let Some(answer) = app.call("refresh_token").await {
        return answer;
    }
    if let Err(e) = check_app(&app, &q, "refresh_token") {
        return e;
    }
    let Some(refresh) = q.get("refresh_token").filter(|v| !v.is_empty()) else {
        return wechat_error(41003, "refresh_token missing");
    };
    let mut world = app.world.lock().unwrap();
    let (openid, scope) = match world.refresh_tokens.get(refresh.as_str()) {
        None => return wechat_error(40030, "invalid refresh_token"),
        Some(t) if t.expires <= Instant::now() => {
            return wechat_error(42002, "refresh_token expired")
        }
        Some(t) => (t.openid.clone(), t.scope.clone()),
    };
    world.refresh_tokens.remove(refresh.as_str());
    token_answer(&mut world, openid, scope)
}

/// Looks up an access token for `openid`: `Ok(scope)` or the errcode answer.
fn check_token(app: &App, q: &HashMap<String, String>) -> Result<(String, String), Response> {
    let Some(token) = q.get("access_token").filter(|v| !v.is_empty()) else {
        return Err(wechat_error(41001, "access_token missing"));
    };
    let world = app.world.lock().unwrap();
    let entry = world.access_tokens.get(token.as_str()).ok_or_else(|| {
        wechat_error(
            40001,
            "invalid credential, access_token is invalid or not latest",
        )
    })?;
    if entry.expires <= Instant::now() {
        return Err(wechat_error(42001, "access_token expired"));
    }
    if q.get("openid") != Some(&entry.openid) {
        return Err(wechat_error(40003, "invalid openid"));
    }
    Ok((entry.scope.clone(), entry.openid.clone()))
}

async fn userinfo(State(app): State<App>, Query(q): Params) -> Response {
    if let Some(answer) = app.call("userinfo").await {
        return answer;
    }
    let (scope, openid) = match check_token(&app, &q) {
        Ok(s) => s,
        Err(e) => return e,
    };
    if !scope.contains("snsapi_userinfo") && !scope.contains("snsapi_login") {
        return wechat_error(48001, "api unauthorized");
    }
    let lang = q.get("lang").map_or("zh_CN", String::as_str);
    if !matches!(lang, "zh_CN" | "zh_TW" | "en") {
        return wechat_error(40005, "invalid lang");
    }
    app.saw("userinfo_lang", lang.into());
    let world = app.world.lock().unwrap();
    let p = &world.profile;
    let mut body = serde_json::json!({
        "openid": openid,
        "nickname": p.nickname,
        "sex": p.sex,
        "province": place_in(&p.province, lang),
        "city": place_in(&p.city, lang),
        "country": place_in(&p.country, lang),
        "headimgurl": p.headimgurl,
        "privilege": [],
    });
    if world.open_platform_bound {
        body["unionid"] = unionid_of(p).into();
    }
    wechat_json(body)
}

/// A place name of the default profile in WeChat's `lang`; others as they are.
fn place_in(name: &str, lang: &str) -> String {
    const PLACES: [[&str; 3]; 3] = [
        ["中国", "中國", "China"],
        ["广东", "廣東", "Guangdong"],
        ["深圳", "深圳", "Shenzhen"],
    ];
    let column = match lang {
        "zh_TW" => 1,
        "en" => 2,
        _ => 0,
    };
    PLACES
        .iter()
        .find(|p| p[0] == name)
        .map_or(name, |p| p[column])
        .to_owned()
}

async fn auth(State(app): State<App>, Query(q): Params) -> Response {
    if let Some(answer) = app.call("auth").await {
        return answer;
    }
    match check_token(&app, &q) {
        Ok(_) => wechat_json(serde_json::json!({"errcode": 0, "errmsg": "ok"})),
        Err(e) => e,
    }
}
