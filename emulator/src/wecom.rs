//! WeCom (企业微信), played from its public documentation: the in-app
//! browser's web authorization (`connect/oauth2/authorize` with the
//! corpid as appid and an `agentid`), the web QR login page
//! (`wwlogin/sso/login`, with a simulated phone scan), the corp token
//! (`cgi-bin/gettoken`), who a code belongs to (`cgi-bin/auth/getuserinfo`),
//! a member's details (`cgi-bin/auth/getuserdetail`) and record
//! (`cgi-bin/user/get`). Members, departments and a non-member are
//! fixed; `POST /_emulator/wecom/member` picks who is behind the WeCom app.
//!
//! Errors follow WeCom's: 40013 invalid corpid, 40001 invalid secret,
//! 40014 invalid token, 42001 expired token, 40029 invalid (used,
//! unknown, expired) code, 40056 invalid agentid, 60011 a member outside
//! the app's visible range, 60111 unknown userid; authorize-page errors
//! are pages with the code (50001: redirect_uri not on a trusted domain).

use super::*;

/// The emulated WeCom app (`--wecom-corpid`, `--wecom-agentid`, `--wecom-secret`).
#[derive(Debug, Clone)]
pub struct WecomApp {
    /// The company's corpid.
    pub corpid: String,
    /// The self-built app's AgentId.
    pub agentid: String,
    /// The app's secret, which `gettoken` checks.
    pub secret: String,
}

/// A member of the emulated company.
struct Member {
    userid: &'static str,
    name: &'static str,
    departments: &'static [u64],
}

/// The company: 张三 in departments 1 and 2, 李四 in 2, 王五 in 3 (outside
/// the app's visible range unless `hidden` says otherwise).
const MEMBERS: [Member; 3] = [
    Member {
        userid: "zhangsan",
        name: "张三",
        departments: &[1, 2],
    },
    Member {
        userid: "lisi",
        name: "李四",
        departments: &[2],
    },
    Member {
        userid: "wangwu",
        name: "王五",
        departments: &[3],
    },
];

/// The openid WeCom gives the emulated non-member.
const NON_MEMBER_OPENID: &str = "oWeComNonMember0000000001";

fn member(userid: &str) -> Option<&'static Member> {
    MEMBERS.iter().find(|m| m.userid == userid)
}

/// Who is behind the WeCom app, the codes, tokens and tickets WeCom handed out.
pub(crate) struct WecomWorld {
    /// The userid of the member using WeCom; `None`: the non-member.
    current: Option<String>,
    /// Userids outside the app's visible range (default: wangwu).
    hidden: Vec<String>,
    codes: HashMap<String, WecomCode>,
    tokens: HashMap<String, Instant>,
    token_ttl: Duration,
    user_tickets: HashMap<String, (String, Instant)>,
}

impl Default for WecomWorld {
    fn default() -> Self {
        WecomWorld {
            current: Some("zhangsan".into()),
            hidden: vec!["wangwu".into()],
            codes: HashMap::new(),
            tokens: HashMap::new(),
            token_ttl: Duration::from_secs(7200),
            user_tickets: HashMap::new(),
        }
    }
}

struct WecomCode {
    userid: Option<String>,
    scope: String,
    issued: Instant,
    used: bool,
}

pub(crate) fn routes(router: Router<App>) -> Router<App> {
    router
        .route("/wwlogin/sso/login", get(sso_login).post(sso_scan))
        .route("/cgi-bin/gettoken", get(gettoken))
        .route("/cgi-bin/auth/getuserinfo", get(getuserinfo))
        .route(
            "/cgi-bin/auth/getuserdetail",
            axum::routing::post(getuserdetail),
        )
        .route("/cgi-bin/user/get", get(user_get))
        .route("/_emulator/wecom/member", get(current).post(set_current))
}

/// Whether an authorize query is WeCom's (its appid is the corpid).
pub(crate) fn is_wecom_authorize(app: &App, raw: &str) -> bool {
    let Some(wecom) = &app.cfg.wecom else {
        return false;
    };
    url::form_urlencoded::parse(raw.as_bytes()).any(|(k, v)| k == "appid" && v == wecom.corpid)
}

fn pairs(raw: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The redirect_uri of `raw`, checked percent-encoded and on the trusted
/// domain (可信域名: the callback host).
fn trusted_redirect(app: &App, raw: &str, value: Option<&str>) -> Result<url::Url, Response> {
    let raw_redirect = raw
        .split('&')
        .find_map(|p| p.strip_prefix("redirect_uri="))
        .unwrap_or_default();
    if raw_redirect.contains(':') || raw_redirect.contains('/') {
        return Err(error_page(-1, "redirect_uri 参数错误：必须经过 urlencode"));
    }
    let url = value
        .and_then(|v| url::Url::parse(v).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| error_page(-1, "redirect_uri 参数错误"))?;
    if !on_callback_host(&app.cfg, &url) {
        return Err(error_page(
            50001,
            "redirect_uri 需使用应用可信域名 (redirect_uri is not on the app's trusted domain)",
        ));
    }
    Ok(url)
}

fn issue(app: &App, scope: &str) -> String {
    let code = random_token(43);
    let mut world = app.world.lock().unwrap();
    let userid = world.wecom.current.clone();
    world.wecom.codes.insert(
        code.clone(),
        WecomCode {
            userid,
            scope: scope.to_owned(),
            issued: Instant::now(),
            used: false,
        },
    );
    code
}

/// `GET /connect/oauth2/authorize` with the corpid: the in-app browser's
/// authorization. Parameters in the documented order: appid,
/// redirect_uri, response_type, scope, state, agentid.
pub(crate) async fn authorize(app: App, raw: String) -> Response {
    if let Some(answer) = app.call("wecom_authorize").await {
        return answer;
    }
    let wecom = app
        .cfg
        .wecom
        .clone()
        .expect("checked by is_wecom_authorize");
    let pairs = pairs(&raw);
    let value = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    let order = [
        "appid",
        "redirect_uri",
        "response_type",
        "scope",
        "state",
        "agentid",
    ];
    if keys != order {
        return error_page(
            -1,
            "参数错误：appid, redirect_uri, response_type, scope, state, agentid (wrong parameters or order)",
        );
    }
    if value("agentid") != Some(wecom.agentid.as_str()) {
        return error_page(40056, "不合法的agentid (invalid agentid)");
    }
    if value("response_type") != Some("code") {
        return error_page(-1, "response_type 必须为 code");
    }
    let scope = value("scope").unwrap_or_default().to_owned();
    if !matches!(scope.as_str(), "snsapi_base" | "snsapi_privateinfo") {
        return error_page(-1, "scope 参数错误 (snsapi_base or snsapi_privateinfo)");
    }
    let state = value("state").unwrap_or_default().to_owned();
    if state.len() > 128 || !state.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return error_page(-1, "state 参数错误：只能为 a-zA-Z0-9，最长 128 字节");
    }
    let redirect = match trusted_redirect(&app, &raw, value("redirect_uri")) {
        Ok(u) => u,
        Err(page) => return page,
    };
    app.saw("wecom_authorize_scope", scope.clone().into());
    let code = issue(&app, &scope);
    back_to(redirect, Some(&code), &state)
}

/// `GET /wwlogin/sso/login?login_type=CorpApp&appid=&agentid=&redirect_uri=&state=`:
/// the web login page with its QR code; its button plays the phone's scan
/// and confirmation (a POST of the same query).
async fn sso_login(State(app): State<App>, RawQuery(raw): RawQuery) -> Response {
    if let Some(answer) = app.call("wecom_sso").await {
        return answer;
    }
    let raw = raw.unwrap_or_default();
    if let Err(page) = check_sso(&app, &raw) {
        return page;
    }
    let who = app
        .world
        .lock()
        .unwrap()
        .wecom
        .current
        .clone()
        .unwrap_or_else(|| "(non-member)".into());
    Html(format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>企业微信登录 (WeCom emulator)</title></head>\
<body><p><small>WeCom emulator · 本地模拟的企业微信</small></p><h2>企业微信扫码登录</h2>\
<div id=\"qr\">[QR]</div><p>手机上的企业微信用户 (phone's user): <b>{}</b></p>\
<form method=\"post\" action=\"/wwlogin/sso/login?{}\"><button id=\"scan\" type=\"submit\">模拟扫码并确认 (scan and confirm)</button></form>\
</body></html>",
        html_escape::encode_text(&who),
        html_escape::encode_double_quoted_attribute(&raw)
    ))
    .into_response()
}

fn check_sso(app: &App, raw: &str) -> Result<(url::Url, String), Response> {
    let Some(wecom) = &app.cfg.wecom else {
        return Err(error_page(
            40013,
            "invalid corpid: the emulator plays no WeCom app",
        ));
    };
    let pairs = pairs(raw);
    let value = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if value("login_type") != Some("CorpApp") {
        return Err(error_page(-1, "login_type 参数错误 (CorpApp)"));
    }
    if value("appid") != Some(wecom.corpid.as_str()) {
        return Err(error_page(40013, "不合法的CorpID (invalid corpid)"));
    }
    if value("agentid") != Some(wecom.agentid.as_str()) {
        return Err(error_page(40056, "不合法的agentid (invalid agentid)"));
    }
    let state = value("state").unwrap_or_default().to_owned();
    if state.is_empty() || state.len() > 128 || !state.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(error_page(-1, "state 参数错误"));
    }
    Ok((trusted_redirect(app, raw, value("redirect_uri"))?, state))
}

/// `POST /wwlogin/sso/login?…`: the phone scanned and confirmed: back to
/// `redirect_uri?code=&state=&appid=`.
async fn sso_scan(State(app): State<App>, RawQuery(raw): RawQuery) -> Response {
    let raw = raw.unwrap_or_default();
    let (mut redirect, state) = match check_sso(&app, &raw) {
        Ok(checked) => checked,
        Err(page) => return page,
    };
    let code = issue(&app, "snsapi_base");
    let corpid = app
        .cfg
        .wecom
        .as_ref()
        .map(|w| w.corpid.clone())
        .unwrap_or_default();
    redirect
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &state)
        .append_pair("appid", &corpid);
    (
        StatusCode::FOUND,
        [(header::LOCATION, redirect.to_string())],
    )
        .into_response()
}

/// The corp token's problem, if any: 40014 unknown, 42001 expired.
fn check_token(app: &App, token: Option<&String>) -> Result<(), Response> {
    let world = app.world.lock().unwrap();
    match token.and_then(|t| world.wecom.tokens.get(t)) {
        None => Err(wechat_error(40014, "invalid access_token")),
        Some(expires) if *expires <= Instant::now() => {
            Err(wechat_error(42001, "access_token expired"))
        }
        Some(_) => Ok(()),
    }
}

/// `GET /cgi-bin/gettoken?corpid=&corpsecret=`.
async fn gettoken(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Some(answer) = app.call("wecom_gettoken").await {
        return answer;
    }
    let Some(wecom) = &app.cfg.wecom else {
        return wechat_error(40013, "invalid corpid");
    };
    if q.get("corpid") != Some(&wecom.corpid) {
        return wechat_error(40013, "invalid corpid");
    }
    if q.get("corpsecret") != Some(&wecom.secret) {
        return wechat_error(40001, "invalid secret");
    }
    let token = random_token(64);
    let mut world = app.world.lock().unwrap();
    let ttl = world.wecom.token_ttl;
    world
        .wecom
        .tokens
        .insert(token.clone(), Instant::now() + ttl);
    wechat_json(serde_json::json!({
        "errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": ttl.as_secs()
    }))
}

/// `GET /cgi-bin/auth/getuserinfo?access_token=&code=`.
async fn getuserinfo(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Some(answer) = app.call("wecom_getuserinfo").await {
        return answer;
    }
    if let Err(e) = check_token(&app, q.get("access_token")) {
        return e;
    }
    let code_ttl = app.world.lock().unwrap().code_ttl;
    let mut world = app.world.lock().unwrap();
    let Some(entry) = q.get("code").and_then(|c| world.wecom.codes.get_mut(c)) else {
        return wechat_error(40029, "invalid code");
    };
    if entry.used || entry.issued.elapsed() >= code_ttl {
        return wechat_error(40029, "invalid code");
    }
    entry.used = true;
    match entry.userid.clone() {
        None => wechat_json(serde_json::json!({
            "errcode": 0, "errmsg": "ok", "openid": NON_MEMBER_OPENID, "external_userid": "wmEmulatorExternal01"
        })),
        Some(userid) if entry.scope == "snsapi_privateinfo" => {
            let ticket = random_token(48);
            world.wecom.user_tickets.insert(
                ticket.clone(),
                (userid.clone(), Instant::now() + Duration::from_secs(1800)),
            );
            wechat_json(serde_json::json!({
                "errcode": 0, "errmsg": "ok", "userid": userid, "user_ticket": ticket, "expires_in": 1800
            }))
        }
        Some(userid) => {
            wechat_json(serde_json::json!({"errcode": 0, "errmsg": "ok", "userid": userid}))
        }
    }
}

#[derive(Deserialize)]
struct DetailRequest {
    user_ticket: String,
}

/// `POST /cgi-bin/auth/getuserdetail?access_token=` with `{"user_ticket"}`.
async fn getuserdetail(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(answer) = app.call("wecom_getuserdetail").await {
        return answer;
    }
    if let Err(e) = check_token(&app, q.get("access_token")) {
        return e;
    }
    let Ok(req) = serde_json::from_slice::<DetailRequest>(&body) else {
        return wechat_error(47001, "data format error");
    };
    let world = app.world.lock().unwrap();
    match world.wecom.user_tickets.get(&req.user_ticket) {
        Some((userid, until)) if *until > Instant::now() => wechat_json(serde_json::json!({
            "errcode": 0, "errmsg": "ok", "userid": userid, "gender": "1",
            "avatar": format!("https://wework.qpic.cn/emulator/{userid}/0"),
            "qr_code": "https://open.work.weixin.qq.com/wwopen/userQRCode?vcode=emulator",
            "mobile": "13800000000", "email": format!("{userid}@example.com"),
            "biz_mail": format!("{userid}@corp.example.com"), "address": "广州市海珠区"
        })),
        _ => wechat_error(40098, "invalid user_ticket"),
    }
}

/// `GET /cgi-bin/user/get?access_token=&userid=`.
async fn user_get(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Some(answer) = app.call("wecom_user_get").await {
        return answer;
    }
    if let Err(e) = check_token(&app, q.get("access_token")) {
        return e;
    }
    let userid = q.get("userid").cloned().unwrap_or_default();
    let Some(m) = member(&userid) else {
        return wechat_error(60111, "userid not found");
    };
    let hidden = app.world.lock().unwrap().wecom.hidden.contains(&userid);
    if hidden {
        return wechat_error(60011, "no privilege to access/modify contact/party/agent");
    }
    wechat_json(serde_json::json!({
        "errcode": 0, "errmsg": "ok", "userid": m.userid, "name": m.name,
        "department": m.departments, "status": 1
    }))
}

/// `GET /_emulator/wecom/member`: who is behind the WeCom app, and the company.
async fn current(State(app): State<App>) -> Response {
    let world = app.world.lock().unwrap();
    axum::Json(serde_json::json!({
        "corpid": app.cfg.wecom.as_ref().map(|w| w.corpid.clone()),
        "userid": world.wecom.current,
        "non_member_openid": NON_MEMBER_OPENID,
        "hidden": world.wecom.hidden,
        "members": MEMBERS.iter().map(|m| serde_json::json!({
            "userid": m.userid, "name": m.name, "department": m.departments
        })).collect::<Vec<_>>(),
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CurrentUpdate {
    /// A member's userid; absent with `non_member`.
    userid: Option<String>,
    /// The user is not a member of the company.
    #[serde(default)]
    non_member: bool,
    /// Userids outside the app's visible range.
    hidden: Option<Vec<String>>,
}

/// `POST /_emulator/wecom/member` `{"userid"}` or `{"non_member": true}`,
/// and/or `{"hidden": [userids]}`.
async fn set_current(State(app): State<App>, axum::Json(u): axum::Json<CurrentUpdate>) -> Response {
    let mut world = app.world.lock().unwrap();
    if u.non_member {
        world.wecom.current = None;
    } else if let Some(userid) = u.userid {
        if member(&userid).is_none() {
            return (StatusCode::BAD_REQUEST, "no such member\n").into_response();
        }
        world.wecom.current = Some(userid);
    }
    if let Some(hidden) = u.hidden {
        world.wecom.hidden = hidden;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The codes, tokens and tickets handed out, for `/_emulator/issued`.
pub(crate) fn issued(world: &World) -> serde_json::Value {
    serde_json::json!({
        "wecom_codes": world.wecom.codes.keys().cloned().collect::<Vec<_>>(),
        "wecom_tokens": world.wecom.tokens.keys().cloned().collect::<Vec<_>>(),
        "wecom_user_tickets": world.wecom.user_tickets.keys().cloned().collect::<Vec<_>>(),
    })
}
