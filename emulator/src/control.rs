//! The control routes under `/_emulator/`: tests look inside (`calls`,
//! `user`, `issued`) and script WeChat's misbehaviour (`faults`,
//! `settings`).

use super::*;

/// `router` with the control routes.
pub(crate) fn routes(router: Router<App>) -> Router<App> {
    router
        .route("/_emulator/calls", get(calls))
        .route("/_emulator/seen", get(seen))
        .route("/_emulator/user", get(user).post(set_user))
        .route("/_emulator/issued", get(issued))
        .route(
            "/_emulator/faults",
            axum::routing::post(add_fault).delete(clear_faults),
        )
        .route("/_emulator/settings", axum::routing::post(settings))
}

/// Every endpoint the emulator counts and can script a fault for.
const ENDPOINTS: [&str; 18] = [
    "authorize",
    "access_token",
    "refresh_token",
    "userinfo",
    "auth",
    "qrconnect",
    "token",
    "qrcode_create",
    "showqrcode",
    "user_info",
    "ticket",
    "stable_token",
    "wecom_authorize",
    "wecom_sso",
    "wecom_gettoken",
    "wecom_getuserinfo",
    "wecom_getuserdetail",
    "wecom_user_get",
];

async fn calls(State(app): State<App>) -> Response {
    let world = app.world.lock().unwrap();
    let mut body: serde_json::Value = ENDPOINTS
        .iter()
        .map(|e| (e.to_string(), 0.into()))
        .collect::<serde_json::Map<_, _>>()
        .into();
    for (k, v) in &world.calls {
        body[*k] = (*v).into();
    }
    axum::Json(body).into_response()
}

/// `GET /_emulator/seen`: what the last requests asked for (see `World::seen`).
async fn seen(State(app): State<App>) -> Response {
    axum::Json(app.world.lock().unwrap().seen.clone()).into_response()
}

async fn user(State(app): State<App>) -> Response {
    let world = app.world.lock().unwrap();
    let p = &world.profile;
    axum::Json(serde_json::json!({
        "appid": app.cfg.appid,
        "key": p.key,
        "openid": openid_of(&app.cfg.appid, p),
        "unionid": unionid_of(p),
        "nickname": p.nickname,
        "headimgurl": p.headimgurl,
        "subscribed": world.followers.contains_key(&openid_of(&app.cfg.appid, p)),
    }))
    .into_response()
}

async fn issued(State(app): State<App>) -> Response {
    let world = app.world.lock().unwrap();
    let keys = |m: &HashMap<String, _>| m.keys().cloned().collect::<Vec<String>>();
    let mut body = serde_json::json!({
        "codes": world.codes.keys().cloned().collect::<Vec<_>>(),
        "access_tokens": keys(&world.access_tokens),
        "refresh_tokens": keys(&world.refresh_tokens),
        "basic_tokens": world.basic_tokens.keys().cloned().collect::<Vec<_>>(),
        "jsapi_tickets": world.jsapi_tickets.keys().cloned().collect::<Vec<_>>(),
        // What each scene QR code encodes, by ticket (what a phone reads from the image).
        "qr_urls": world.tickets.iter().map(|(t, v)| (t.clone(), v.url.clone())).collect::<HashMap<_, _>>(),
    });
    if let (Some(all), serde_json::Value::Object(wecom)) =
        (body.as_object_mut(), wecom::issued(&world))
    {
        all.extend(wecom);
    }
    axum::Json(body).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserUpdate {
    key: Option<String>,
    nickname: Option<String>,
    sex: Option<u8>,
    headimgurl: Option<String>,
    snapshot: Option<bool>,
    /// Whether this user follows the Official Account (`cgi-bin/user/info`).
    subscribed: Option<bool>,
}

/// `POST /_emulator/user`: change the user behind the phone (any subset of fields).
async fn set_user(State(app): State<App>, axum::Json(u): axum::Json<UserUpdate>) -> Response {
    {
        let mut world = app.world.lock().unwrap();
        let p = &mut world.profile;
        if let Some(v) = u.key {
            p.key = v;
        }
        if let Some(v) = u.nickname {
            p.nickname = v;
        }
        if let Some(v) = u.sex {
            p.sex = v;
        }
        if let Some(v) = u.headimgurl {
            p.headimgurl = v;
        }
        if let Some(v) = u.snapshot {
            p.snapshot = v;
        }
        if let Some(follows) = u.subscribed {
            let openid = openid_of(&app.cfg.appid, &world.profile);
            if follows {
                let unionid = unionid_of(&world.profile);
                world.followers.insert(openid, unionid);
            } else {
                world.followers.remove(&openid);
            }
        }
    }
    user(State(app)).await
}

/// `POST /_emulator/faults`: queue a [`Fault`].
async fn add_fault(State(app): State<App>, axum::Json(fault): axum::Json<Fault>) -> Response {
    if !ENDPOINTS.contains(&fault.endpoint.as_str()) || fault.count == 0 {
        return (StatusCode::BAD_REQUEST, "unknown endpoint or count 0\n").into_response();
    }
    app.world.lock().unwrap().faults.push(fault);
    StatusCode::NO_CONTENT.into_response()
}

/// `DELETE /_emulator/faults`: WeChat behaves again.
async fn clear_faults(State(app): State<App>) -> Response {
    app.world.lock().unwrap().faults.clear();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    consent: Option<String>,
    basic_token_ttl_secs: Option<u64>,
    plain_token_grace_secs: Option<u64>,
    open_platform_bound: Option<bool>,
    code_ttl_ms: Option<u64>,
    token_ttl_secs: Option<u64>,
}

/// `POST /_emulator/settings`: `{"consent":"auto"|"page"|"deny", "code_ttl_ms":N, "token_ttl_secs":N}`.
async fn settings(State(app): State<App>, axum::Json(s): axum::Json<Settings>) -> Response {
    let mut world = app.world.lock().unwrap();
    if let Some(c) = s.consent {
        world.consent = match c.as_str() {
            "auto" => Consent::Auto,
            "page" => Consent::Page,
            "deny" => Consent::Deny,
            _ => return (StatusCode::BAD_REQUEST, "consent: auto, page or deny\n").into_response(),
        };
    }
    if let Some(ms) = s.code_ttl_ms {
        world.code_ttl = Duration::from_millis(ms);
    }
    if let Some(secs) = s.basic_token_ttl_secs {
        world.basic_token_ttl = Duration::from_secs(secs);
    }
    if let Some(bound) = s.open_platform_bound {
        world.open_platform_bound = bound;
    }
    if let Some(secs) = s.plain_token_grace_secs {
        world.plain_token_grace = Duration::from_secs(secs);
    }
    if let Some(secs) = s.token_ttl_secs {
        world.token_ttl = Duration::from_secs(secs);
    }
    StatusCode::NO_CONTENT.into_response()
}
