//! Desktop login on WeChat's side: the Open Platform QR page
//! (`connect/qrconnect`), the basic-support token (`cgi-bin/token`), scene
//! QR codes (`cgi-bin/qrcode/create`, `cgi-bin/showqrcode` as a real PNG),
//! and the phone that scans one: a signed push of the `SCAN`/`subscribe`
//! event to the account's server URL, plain or in safe mode, and the
//! account's passive reply (a text message, checked and decrypted in safe
//! mode) shown on the phone with its links to tap.

use super::*;

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use axum::body::Bytes;

/// A message the account sent the phone in reply to a push.
#[derive(Clone, serde::Serialize)]
pub(crate) struct PhoneMessage {
    openid: String,
    content: String,
    /// The `href`s of the message's links, unescaped: what a tap opens.
    links: Vec<String>,
}

/// Most messages the phone keeps.
const MAX_MESSAGES: usize = 50;

/// A scene QR code handed out.
pub(crate) struct Ticket {
    scene: String,
    pub(crate) url: String,
    expires: Instant,
}

pub(crate) fn routes(router: Router<App>) -> Router<App> {
    router
        .route("/connect/qrconnect", get(qrconnect).post(qrconnect_confirm))
        .route("/cgi-bin/token", get(basic_token))
        .route("/cgi-bin/stable_token", axum::routing::post(stable_token))
        .route("/cgi-bin/qrcode/create", axum::routing::post(qrcode_create))
        .route("/cgi-bin/showqrcode", get(showqrcode))
        .route("/cgi-bin/user/info", get(user_info))
        .route("/_emulator/scan", axum::routing::post(scan))
        .route("/_emulator/phone", get(phone))
}

fn open_appid(app: &App) -> &str {
    app.cfg.open_app.as_ref().map_or("", |(a, _)| a.as_str())
}

/// The website app's QR login page: a QR code and, since no phone is at
/// hand, a button that plays "scanned and confirmed".
async fn qrconnect(State(app): State<App>, RawQuery(raw): RawQuery) -> Response {
    if let Some(answer) = app.call("qrconnect").await {
        return answer;
    }
    let raw = raw.unwrap_or_default();
    if let Err(page) = check_authorize_for(&app.cfg, &raw, open_appid(&app), &["snsapi_login"]) {
        return page;
    }
    let raw_attr = html_escape::encode_double_quoted_attribute(&raw);
    Html(format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>微信登录 (WeChat emulator)</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:28em;margin:3em auto;text-align:center}}\
button{{font-size:1em;padding:.6em 1.4em;border:0;border-radius:4px;background:#07c160;color:#fff}}</style></head>\
<body><p><small>WeChat emulator · 本地模拟的微信</small></p><h2>微信登录</h2><p>请使用微信扫描二维码登录</p>\
<form method=\"post\" action=\"/connect/qrconnect\"><input type=\"hidden\" name=\"query\" value=\"{raw_attr}\">\
<button name=\"decision\" value=\"allow\">模拟扫码并确认 · Simulate scan and confirm</button></form></body></html>"
    ))
    .into_response()
}

async fn qrconnect_confirm(State(app): State<App>, Form(form): Form<ConfirmForm>) -> Response {
    let req = match check_authorize_for(&app.cfg, &form.query, open_appid(&app), &["snsapi_login"])
    {
        Ok(r) => r,
        Err(page) => return page,
    };
    if form.decision != "allow" {
        return back_to(req.redirect_uri, None, &req.state);
    }
    let appid = open_appid(&app).to_owned();
    let code = issue_code_for(&app, &appid, "snsapi_login");
    back_to(req.redirect_uri, Some(&code), &req.state)
}

async fn basic_token(State(app): State<App>, Query(q): Params) -> Response {
    if let Some(answer) = app.call("token").await {
        return answer;
    }
    if q.get("grant_type").map(String::as_str) != Some("client_credential") {
        return wechat_error(40002, "invalid grant_type");
    }
    if q.get("appid") != Some(&app.cfg.appid) {
        return wechat_error(40013, "invalid appid");
    }
    if q.get("secret") != Some(&app.cfg.secret) {
        return wechat_error(40125, "invalid appsecret");
    }
    let token = random_token(64);
    let mut world = app.world.lock().unwrap();
    let ttl = world.basic_token_ttl;
    // A new plain token ends the ones before it after the grace period:
    // two backends calling cgi-bin/token invalidate each other's.
    let ends = Instant::now() + world.plain_token_grace;
    let older = std::mem::take(&mut world.plain_tokens);
    for old in &older {
        if world.plain_token_grace.is_zero() {
            // No longer the latest: 40001 from now on.
            world.basic_tokens.remove(old);
        } else if let Some(expires) = world.basic_tokens.get_mut(old) {
            *expires = (*expires).min(ends);
        }
    }
    world.plain_tokens.push(token.clone());
    world
        .basic_tokens
        .insert(token.clone(), Instant::now() + ttl);
    wechat_json(serde_json::json!({"access_token": token, "expires_in": ttl.as_secs()}))
}

#[derive(Deserialize)]
struct StableTokenRequest {
    grant_type: String,
    appid: String,
    secret: String,
    #[serde(default)]
    force_refresh: bool,
}

/// The part of a stable token's life in which a normal call gets a new one.
const STABLE_RENEW_WINDOW: Duration = Duration::from_secs(300);
/// The least time between two forced refreshes, and how many a day.
const FORCE_REFRESH_GAP: Duration = Duration::from_secs(30);
const FORCE_REFRESHES_PER_DAY: usize = 20;

/// `POST /cgi-bin/stable_token` `{grant_type, appid, secret, force_refresh}`:
/// the same token for every caller until its last 5 minutes (then a new
/// one; the old one lives out its time), unaffected by `cgi-bin/token`;
/// `force_refresh: true` ends it at once for a new one, at most once per
/// 30 s and 20 times a day (45011, 45009).
async fn stable_token(State(app): State<App>, body: Bytes) -> Response {
    if let Some(answer) = app.call("stable_token").await {
        return answer;
    }
    let Ok(r) = serde_json::from_slice::<StableTokenRequest>(&body) else {
        return wechat_error(47001, "data format error");
    };
    if r.grant_type != "client_credential" {
        return wechat_error(40002, "invalid grant_type");
    }
    if r.appid != app.cfg.appid {
        return wechat_error(40013, "invalid appid");
    }
    if r.secret != app.cfg.secret {
        return wechat_error(40125, "invalid appsecret");
    }
    let mut world = app.world.lock().unwrap();
    let now = Instant::now();
    if r.force_refresh {
        let day = Duration::from_secs(86_400);
        world
            .forced_refreshes
            .retain(|at| now.duration_since(*at) < day);
        if world
            .forced_refreshes
            .last()
            .is_some_and(|at| now.duration_since(*at) < FORCE_REFRESH_GAP)
        {
            return wechat_error(45011, "api minute-quota reach limit");
        }
        if world.forced_refreshes.len() >= FORCE_REFRESHES_PER_DAY {
            return wechat_error(45009, "reach max api daily quota limit");
        }
        world.forced_refreshes.push(now);
        if let Some((old, _)) = world.stable_token.take() {
            world.basic_tokens.remove(&old);
        }
    }
    if let Some((token, expires)) = &world.stable_token {
        if *expires > now + STABLE_RENEW_WINDOW {
            let left = expires.duration_since(now).as_secs();
            return wechat_json(serde_json::json!({"access_token": token, "expires_in": left}));
        }
    }
    let token = random_token(64);
    let ttl = world.basic_token_ttl;
    world.basic_tokens.insert(token.clone(), now + ttl);
    world.stable_token = Some((token.clone(), now + ttl));
    wechat_json(serde_json::json!({"access_token": token, "expires_in": ttl.as_secs()}))
}

#[derive(Deserialize)]
struct QrCreate {
    #[serde(default)]
    expire_seconds: Option<u64>,
    action_name: String,
    action_info: QrActionInfo,
}

#[derive(Deserialize)]
struct QrActionInfo {
    scene: QrScene,
}

#[derive(Deserialize)]
struct QrScene {
    #[serde(default)]
    scene_id: Option<u64>,
    #[serde(default)]
    scene_str: Option<String>,
}

/// The error WeChat answers for a basic-support token that is missing,
/// unknown or expired; `None` when it is valid.
pub(crate) fn basic_token_error(world: &World, token: Option<&String>) -> Option<Response> {
    let Some(token) = token else {
        return Some(wechat_error(41001, "access_token missing"));
    };
    match world.basic_tokens.get(token.as_str()) {
        None => Some(wechat_error(
            40001,
            "invalid credential, access_token is invalid or not latest",
        )),
        Some(expires) if *expires <= Instant::now() => {
            Some(wechat_error(42001, "access_token expired"))
        }
        Some(_) => None,
    }
}

/// `GET /cgi-bin/user/info?access_token=&openid=&lang=`: whether the user
/// follows the Official Account (`subscribe` 1 with the follower's fields,
/// else `subscribe` 0 and the openid alone).
async fn user_info(State(app): State<App>, Query(q): Params) -> Response {
    if let Some(answer) = app.call("user_info").await {
        return answer;
    }
    let world = app.world.lock().unwrap();
    if let Some(error) = basic_token_error(&world, q.get("access_token")) {
        return error;
    }
    let Some(openid) = q
        .get("openid")
        .filter(|o| o.len() == 28 && o.starts_with('o'))
    else {
        return wechat_error(40003, "invalid openid");
    };
    let lang = q.get("lang").map_or("zh_CN", String::as_str);
    if !matches!(lang, "zh_CN" | "zh_TW" | "en") {
        return wechat_error(40005, "invalid lang");
    }
    drop(world);
    app.saw("user_info_lang", lang.into());
    let world = app.world.lock().unwrap();
    match world.followers.get(openid.as_str()) {
        Some(unionid) => wechat_json(serde_json::json!({
            "subscribe": 1,
            "openid": openid,
            "language": lang,
            "subscribe_time": now_secs(),
            "unionid": if world.open_platform_bound { Some(unionid.as_str()) } else { None },
            "remark": "",
            "groupid": 0,
            "tagid_list": [],
            "subscribe_scene": "ADD_SCENE_QR_CODE",
            "qr_scene": 0,
            "qr_scene_str": "",
        })),
        None => wechat_json(serde_json::json!({"subscribe": 0, "openid": openid})),
    }
}

async fn qrcode_create(State(app): State<App>, Query(q): Params, body: Bytes) -> Response {
    if let Some(answer) = app.call("qrcode_create").await {
        return answer;
    }
    if let Some(error) = basic_token_error(&app.world.lock().unwrap(), q.get("access_token")) {
        return error;
    }
    let Ok(req) = serde_json::from_slice::<QrCreate>(&body) else {
        return wechat_error(47001, "data format error");
    };
    let scene = match (req.action_name.as_str(), req.action_info.scene) {
        (
            "QR_STR_SCENE",
            QrScene {
                scene_str: Some(s), ..
            },
        ) if !s.is_empty() && s.len() <= 64 => s,
        (
            "QR_SCENE",
            QrScene {
                scene_id: Some(id), ..
            },
        ) => id.to_string(),
        _ => return wechat_error(40053, "invalid action info"),
    };
    let expire_seconds = req.expire_seconds.unwrap_or(60).clamp(60, 2_592_000);
    let ticket = format!("gQ{}", random_token(60));
    let url = format!("http://weixin.qq.com/q/{}", random_token(22));
    app.world.lock().unwrap().tickets.insert(
        ticket.clone(),
        Ticket {
            scene,
            url: url.clone(),
            expires: Instant::now() + Duration::from_secs(expire_seconds),
        },
    );
    wechat_json(serde_json::json!({"ticket": ticket, "expire_seconds": expire_seconds, "url": url}))
}

/// The ticket's QR code as a PNG (8 pixels a module, a 4-module margin).
async fn showqrcode(State(app): State<App>, Query(q): Params) -> Response {
    if let Some(answer) = app.call("showqrcode").await {
        return answer;
    }
    let url = {
        let world = app.world.lock().unwrap();
        match q.get("ticket").and_then(|t| world.tickets.get(t.as_str())) {
            Some(t) => t.url.clone(),
            None => return (StatusCode::NOT_FOUND, "unknown ticket\n").into_response(),
        }
    };
    match qr_png(&url) {
        Some(png) => ([(header::CONTENT_TYPE, "image/png")], png).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn qr_png(text: &str) -> Option<Vec<u8>> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let width = code.width();
    let colors = code.to_colors();
    let (scale, margin) = (8usize, 4usize);
    let size = (width + 2 * margin) * scale;
    let mut pixels = vec![255u8; size * size];
    for (i, color) in colors.iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let (x, y) = (i % width + margin, i / width + margin);
            for dy in 0..scale {
                let row = (y * scale + dy) * size;
                pixels[row + x * scale..row + x * scale + scale].fill(0);
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, size as u32, size as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().ok()?;
        writer.write_image_data(&pixels).ok()?;
    }
    Some(out)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ScanRequest {
    /// The ticket scanned (or `url`, or `scene`).
    ticket: Option<String>,
    /// What the phone read from the QR code: the ticket's URL.
    url: Option<String>,
    /// The scene scanned, when no ticket is given.
    scene: Option<String>,
    /// The user follows the account by this scan: `subscribe` with `qrscene_`.
    #[serde(default)]
    subscribe: bool,
    /// Push in safe mode (encrypted).
    #[serde(default)]
    safe_mode: bool,
    /// Tests: sign with a wrong token.
    #[serde(default)]
    bad_signature: bool,
    /// Tests: a timestamp this many seconds in the past.
    #[serde(default)]
    age_secs: u64,
    /// Tests: the appid sealed into a safe-mode body.
    appid: Option<String>,
    /// Tests: the event's CreateTime (a retry repeats it).
    create_time: Option<u64>,
    /// Tests: a raw body instead of the event.
    raw_body: Option<String>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn sha1_hex(parts: &[&str]) -> String {
    let mut sorted = parts.to_vec();
    sorted.sort_unstable();
    Sha1::digest(sorted.concat().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `POST /_emulator/scan`: the user scans a ticket; WeChat pushes the event.
/// Answers `{"status": N, "body": "..."}` with the server's answer.
async fn scan(State(app): State<App>, axum::Json(req): axum::Json<ScanRequest>) -> Response {
    let Some(target) = app.cfg.push.clone() else {
        return (
            StatusCode::BAD_REQUEST,
            "no push URL configured (--push-url)\n",
        )
            .into_response();
    };
    let (scene, ticket, openid, account) = {
        let world = app.world.lock().unwrap();
        let by_url = req.url.as_deref().and_then(|u| {
            world
                .tickets
                .iter()
                .find(|(_, entry)| entry.url == u)
                .map(|(t, _)| t.clone())
        });
        if req.url.is_some() && by_url.is_none() {
            return (StatusCode::NOT_FOUND, "no QR code encodes this URL\n").into_response();
        }
        let (scene, ticket) = match (req.ticket.as_ref().or(by_url.as_ref()), &req.scene) {
            (Some(t), _) => match world.tickets.get(t.as_str()) {
                Some(entry) if entry.expires > Instant::now() => (entry.scene.clone(), t.clone()),
                Some(_) => return (StatusCode::GONE, "ticket expired\n").into_response(),
                None => return (StatusCode::NOT_FOUND, "unknown ticket\n").into_response(),
            },
            (None, Some(s)) => (s.clone(), String::new()),
            (None, None) => return (StatusCode::BAD_REQUEST, "ticket or scene\n").into_response(),
        };
        (
            scene,
            ticket,
            openid_of(&app.cfg.appid, &world.profile),
            format!("gh_{}", &app.cfg.appid),
        )
    };
    if req.subscribe {
        let mut world = app.world.lock().unwrap();
        let unionid = unionid_of(&world.profile);
        world.followers.insert(openid.clone(), unionid);
    }
    let (event, key) = if req.subscribe {
        ("subscribe", format!("qrscene_{scene}"))
    } else {
        ("SCAN", scene)
    };
    let now = now_secs();
    let create_time = req.create_time.unwrap_or(now);
    let xml = req.raw_body.clone().unwrap_or_else(|| {
        format!(
            "<xml><ToUserName><![CDATA[{account}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>\
<CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{event}]]></Event>\
<EventKey><![CDATA[{key}]]></EventKey><Ticket><![CDATA[{ticket}]]></Ticket></xml>"
        )
    });
    let timestamp = (now - req.age_secs).to_string();
    let nonce = random_token(10);
    let token = if req.bad_signature {
        "not-the-token".to_owned()
    } else {
        target.token.clone()
    };
    let mut url = match url::Url::parse(&target.url) {
        Ok(u) => u,
        Err(_) => return (StatusCode::BAD_REQUEST, "bad push URL\n").into_response(),
    };
    let body = if req.safe_mode {
        let Some(key) = &target.encoding_aes_key else {
            return (
                StatusCode::BAD_REQUEST,
                "no EncodingAESKey (--encoding-aes-key)\n",
            )
                .into_response();
        };
        let appid = req.appid.clone().unwrap_or_else(|| app.cfg.appid.clone());
        let Some(encrypted) = encrypt(&xml, key, &appid) else {
            return (StatusCode::BAD_REQUEST, "bad EncodingAESKey\n").into_response();
        };
        url.query_pairs_mut()
            .append_pair("signature", &sha1_hex(&[&token, &timestamp, &nonce]))
            .append_pair("timestamp", &timestamp)
            .append_pair("nonce", &nonce)
            .append_pair("openid", &openid)
            .append_pair("encrypt_type", "aes")
            .append_pair(
                "msg_signature",
                &sha1_hex(&[&token, &timestamp, &nonce, &encrypted]),
            );
        format!("<xml><ToUserName><![CDATA[{account}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>")
    } else {
        url.query_pairs_mut()
            .append_pair("signature", &sha1_hex(&[&token, &timestamp, &nonce]))
            .append_pair("timestamp", &timestamp)
            .append_pair("nonce", &nonce)
            .append_pair("openid", &openid);
        xml
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client");
    // WeChat waits 5 s for an answer, then sends the same push again: three
    // attempts in all.
    let started = Instant::now();
    let mut attempts = 0;
    let sent = loop {
        attempts += 1;
        let sent = client
            .post(url.clone())
            .header("Content-Type", "text/xml")
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) => break Ok(r),
            Err(e) if attempts >= 3 => break Err(e),
            Err(_) => continue,
        }
    };
    match sent {
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            let mut answer = serde_json::json!({
                "status": status, "body": text, "attempts": attempts,
                "elapsed_ms": started.elapsed().as_millis() as u64,
            });
            if status == 200 && text.trim_start().starts_with("<xml") {
                match read_reply(&text, req.safe_mode, &target, &app.cfg.appid, &openid) {
                    Ok(message) => {
                        answer["reply"] = serde_json::to_value(&message).unwrap_or_default();
                        let mut world = app.world.lock().unwrap();
                        world.messages.push(message);
                        let over = world.messages.len().saturating_sub(MAX_MESSAGES);
                        world.messages.drain(..over);
                    }
                    Err(why) => answer["reply_error"] = why.into(),
                }
            }
            axum::Json(answer).into_response()
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("push failed: {}\n", e.without_url()),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct ReplyXml {
    #[serde(rename = "ToUserName", default)]
    to_user: String,
    #[serde(rename = "MsgType", default)]
    msg_type: String,
    #[serde(rename = "Content", default)]
    content: String,
    #[serde(rename = "Encrypt", default)]
    encrypt: Option<String>,
    #[serde(rename = "MsgSignature", default)]
    msg_signature: String,
    #[serde(rename = "TimeStamp", default)]
    timestamp: String,
    #[serde(rename = "Nonce", default)]
    nonce: String,
}

/// Reads the server's reply to a push as WeChat does: a safe-mode push
/// needs an encrypted reply whose `MsgSignature` holds and whose appid is
/// the account's; the message must be a text to the user who scanned.
fn read_reply(
    body: &str,
    safe_mode: bool,
    target: &PushTarget,
    appid: &str,
    openid: &str,
) -> Result<PhoneMessage, String> {
    let outer: ReplyXml = quick_xml::de::from_str(body).map_err(|e| format!("reply XML: {e}"))?;
    let inner = match (&outer.encrypt, safe_mode) {
        (Some(encrypted), true) => {
            let signed = sha1_hex(&[&target.token, &outer.timestamp, &outer.nonce, encrypted]);
            if signed != outer.msg_signature.to_ascii_lowercase() {
                return Err("the reply's MsgSignature is wrong".into());
            }
            let key = target.encoding_aes_key.as_deref().unwrap_or_default();
            let xml = decrypt(encrypted, key, appid).ok_or("the reply does not decrypt")?;
            quick_xml::de::from_str::<ReplyXml>(&xml).map_err(|e| format!("reply XML: {e}"))?
        }
        (None, true) => return Err("a safe-mode push got a plaintext reply".into()),
        (Some(_), false) => return Err("a plaintext push got an encrypted reply".into()),
        (None, false) => outer,
    };
    if inner.msg_type != "text" || inner.to_user != openid {
        return Err(format!(
            "the reply is a {:?} message to {:?}, not a text to the scanner",
            inner.msg_type, inner.to_user
        ));
    }
    let links = inner
        .content
        .split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|href| html_escape::decode_html_entities(href).into_owned())
        .collect();
    Ok(PhoneMessage {
        openid: inner.to_user,
        content: inner.content,
        links,
    })
}

/// The AES-256 key of a 43-character EncodingAESKey: base64 of it + "="
/// (its last character may carry trailing bits).
fn aes_key(key43: &str) -> Option<Vec<u8>> {
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    )
    .decode(format!("{key43}="))
    .ok()
    .filter(|k| k.len() == 32)
}

/// The inverse of [`encrypt`]: the XML, when the appid sealed in is `appid`.
fn decrypt(encrypted: &str, key43: &str, appid: &str) -> Option<String> {
    let key = aes_key(key43)?;
    let mut data = base64::engine::general_purpose::STANDARD
        .decode(encrypted.trim())
        .ok()?;
    let plain = cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &key[..16])
        .ok()?
        .decrypt_padded_mut::<NoPadding>(&mut data)
        .ok()?;
    let pad = *plain.last()? as usize;
    let plain = plain.get(..plain.len().checked_sub(pad)?)?;
    let len = u32::from_be_bytes(plain.get(16..20)?.try_into().ok()?) as usize;
    let xml = plain.get(20..20 + len)?;
    (plain.get(20 + len..)? == appid.as_bytes()).then(|| String::from_utf8(xml.to_vec()).ok())?
}

/// Safe mode: 16 random bytes ‖ 4-byte BE length ‖ XML ‖ appid, PKCS#7 to
/// 32-byte blocks, AES-256-CBC with key = base64(EncodingAESKey + "="), IV = key[..16].
fn encrypt(xml: &str, key43: &str, appid: &str) -> Option<String> {
    let key = aes_key(key43)?;
    let mut plain: Vec<u8> = (0..16).map(|_| rand::random::<u8>()).collect();
    plain.extend_from_slice(&(xml.len() as u32).to_be_bytes());
    plain.extend_from_slice(xml.as_bytes());
    plain.extend_from_slice(appid.as_bytes());
    let pad = 32 - plain.len() % 32;
    plain.extend(std::iter::repeat_n(pad as u8, pad));
    let len = plain.len();
    let out = cbc::Encryptor::<aes::Aes256>::new_from_slices(&key, &key[..16])
        .ok()?
        .encrypt_padded_mut::<NoPadding>(&mut plain, len)
        .ok()?
        .to_vec();
    Some(base64::engine::general_purpose::STANDARD.encode(out))
}

/// `GET /_emulator/phone`: the demo's stand-in for a phone: every live scene
/// QR code with a button that scans it.
async fn phone(State(app): State<App>) -> Response {
    let (tickets, messages): (Vec<String>, Vec<PhoneMessage>) = {
        let world = app.world.lock().unwrap();
        let now = Instant::now();
        let tickets = world
            .tickets
            .iter()
            .filter(|(_, t)| t.expires > now)
            .map(|(k, _)| k.clone())
            .collect();
        (
            tickets,
            world.messages.iter().rev().take(5).cloned().collect(),
        )
    };
    let inbox: String = messages
        .iter()
        .map(|m| {
            let taps: String = m
                .links
                .iter()
                .map(|href| {
                    format!(
                        " <a href=\"{}\">打开 · Open</a>",
                        html_escape::encode_double_quoted_attribute(href)
                    )
                })
                .collect();
            format!(
                "<li class=\"msg\">{}{taps}</li>",
                html_escape::encode_text(&m.content)
            )
        })
        .collect();
    let rows: String = tickets
        .iter()
        .map(|t| {
            let t_js = serde_json::to_string(t).unwrap_or_default();
            format!(
                "<li><img src=\"/cgi-bin/showqrcode?ticket={}\" width=\"96\"> \
<button onclick='scan({})'>扫码 · Scan</button></li>",
                html_escape::encode_double_quoted_attribute(t),
                html_escape::encode_single_quoted_attribute(&t_js)
            )
        })
        .collect();
    Html(format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>Phone (WeChat emulator)</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:32em;margin:2em auto}}li{{list-style:none;margin:1em 0}}</style></head>\
<body><h2>手机 · The phone</h2><p>Login QR codes waiting for a scan:</p><ul>{rows}</ul>\
<p>Messages from the account (newest first):</p><ul>{inbox}</ul>\
<p id=\"out\"></p><script>function scan(t){{fetch('/_emulator/scan',{{method:'POST',headers:{{'Content-Type':'application/json'}},\
body:JSON.stringify({{ticket:t}})}}).then(function(r){{return r.text()}}).then(function(x){{document.getElementById('out').textContent=x;\
try{{if(JSON.parse(x).reply)location.reload()}}catch(e){{}}}})}}</script>\
<p><a href=\"/_emulator/phone\">refresh</a></p></body></html>"
    ))
    .into_response()
}
