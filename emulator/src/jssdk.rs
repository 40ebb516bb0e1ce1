//! The JS-SDK as WeChat serves it: `cgi-bin/ticket/getticket?type=jsapi`
//! (a `jsapi_ticket` for a valid basic token), and the check `wx.config`
//! makes in the WeChat browser (`/_emulator/jssdk/verify`, and a stand-in
//! `jweixin.js` whose `wx.config` asks it).

use super::*;
use axum::body::Bytes;
use sha1::{Digest, Sha1};

pub(crate) fn routes(router: Router<App>) -> Router<App> {
    router
        .route("/cgi-bin/ticket/getticket", get(getticket))
        .route("/_emulator/jssdk/verify", axum::routing::post(verify))
        .route("/_emulator/jweixin.js", get(jweixin))
}

/// How long a `jsapi_ticket` lives (WeChat: 7200 s).
const TICKET_TTL: Duration = Duration::from_secs(7200);

async fn getticket(State(app): State<App>, Query(q): Params) -> Response {
    if let Some(answer) = app.call("ticket").await {
        return answer;
    }
    let mut world = app.world.lock().unwrap();
    if let Some(error) = desktop::basic_token_error(&world, q.get("access_token")) {
        return error;
    }
    if q.get("type").map(String::as_str) != Some("jsapi") {
        return wechat_error(40097, "invalid args: type");
    }
    let ticket = random_token(86);
    world
        .jsapi_tickets
        .insert(ticket.clone(), Instant::now() + TICKET_TTL);
    wechat_json(serde_json::json!({
        "errcode": 0, "errmsg": "ok", "ticket": ticket, "expires_in": TICKET_TTL.as_secs()
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Config {
    app_id: String,
    timestamp: serde_json::Value,
    nonce_str: String,
    signature: String,
    /// The page's `location.href.split('#')[0]`.
    url: String,
}

/// `POST /_emulator/jssdk/verify` `{appId, timestamp, nonceStr, signature,
/// url}`: what `wx.config` answers in WeChat, `{"errMsg": "config:ok"}` or
/// `{"errMsg": "config:invalid signature"}` (also for a ticket never
/// issued or expired, another appid, a page off the JS-SDK domain).
///
/// The body is read as JSON whatever its type, and the answer allows any
/// origin: the page's script posts it as `text/plain` (no preflight).
async fn verify(State(app): State<App>, body: Bytes) -> Response {
    let cors = [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")];
    let Ok(c) = serde_json::from_slice::<Config>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            cors,
            axum::Json(serde_json::json!({ "errMsg": "config:invalid arguments" })),
        )
            .into_response();
    };
    let world = app.world.lock().unwrap();
    let timestamp = match &c.timestamp {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.clone(),
        _ => String::new(),
    };
    let page_host = url::Url::parse(&c.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned));
    let expected_host = app.cfg.callback_host.split(':').next().unwrap_or_default();
    let errmsg = if c.app_id != app.cfg.appid {
        "config:invalid appid"
    } else if page_host.as_deref() != Some(expected_host) {
        "config:invalid url domain"
    } else if world.jsapi_tickets.iter().any(|(ticket, expires)| {
        *expires > Instant::now() && sign(ticket, &c.nonce_str, &timestamp, &c.url) == c.signature
    }) {
        "config:ok"
    } else {
        "config:invalid signature"
    };
    (cors, axum::Json(serde_json::json!({ "errMsg": errmsg }))).into_response()
}

/// The JS-SDK's signature, as WeChat's page computes it.
fn sign(ticket: &str, nonce_str: &str, timestamp: &str, url: &str) -> String {
    let text =
        format!("jsapi_ticket={ticket}&noncestr={nonce_str}&timestamp={timestamp}&url={url}");
    Sha1::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A stand-in for WeChat's `jweixin-1.6.0.js`: `wx.config` sends its
/// fields and the page's URL to `/_emulator/jssdk/verify`, then calls the
/// `wx.ready` or `wx.error` callbacks.
async fn jweixin() -> Response {
    const SCRIPT: &str = r##"(function () {
  var base = document.currentScript ? new URL(document.currentScript.src).origin : "";
  var ready = [], errors = [], state = null;
  function settle(result) {
    state = result;
    (result.errMsg === "config:ok" ? ready : errors).forEach(function (f) { f(result); });
  }
  window.wx = {
    config: function (c) {
      fetch(base + "/_emulator/jssdk/verify", {
        method: "POST", headers: { "Content-Type": "text/plain" },
        body: JSON.stringify({ appId: c.appId, timestamp: c.timestamp, nonceStr: c.nonceStr,
                               signature: c.signature, url: location.href.split("#")[0] })
      }).then(function (r) { return r.json(); }).then(settle, function () { settle({ errMsg: "config:fail" }); });
    },
    ready: function (f) { if (state && state.errMsg === "config:ok") f(); else ready.push(f); },
    error: function (f) { if (state && state.errMsg !== "config:ok") f(state); else errors.push(f); }
  };
})();
"##;
    (
        [(
            header::CONTENT_TYPE,
            "application/javascript; charset=utf-8",
        )],
        SCRIPT,
    )
        .into_response()
}
