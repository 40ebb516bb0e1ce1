//! The demo application behind the gateway: it shows the identity headers
//! it receives. `/echo` and `/echo/…` answer JSON of the whole request
//! (tests read it; `?delay_ms=N` answers N ms late),
//! `/static/…` is a public path in the demo config, every other path shows an
//! HTML page with the identity.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use html_escape::encode_text;

fn decoded_nickname(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get("x-wechat-nickname")?.to_str().ok()?;
    Some(
        percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

async fn echo(request: Request) -> Response {
    // `?delay_ms=N` (at most 10 s): a slow answer, for tests of a stop
    // with requests in flight.
    let delay = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("delay_ms="))
        .and_then(|ms| ms.parse::<u64>().ok())
        .map_or(0, |ms| ms.min(10_000));
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in request.headers() {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    Json(serde_json::json!({
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "query": request.uri().query(),
        "headers": headers,
        "nickname": decoded_nickname(request.headers()),
        // Which instance answered (tests of load-balanced upstreams).
        "served_by": request.extensions().get::<ServedAt>().map(|at| at.0.to_string()),
    }))
    .into_response()
}

async fn public_asset() -> &'static str {
    "a public file: no login needed\n"
}

/// The JS-SDK script the page loads (`--jssdk-script`), if any: WeChat's
/// `jweixin-1.6.0.js`, or the emulator's stand-in in the demo.
#[derive(Clone, Default)]
struct JssdkScript(Option<String>);

/// The page's JS-SDK block: `wx.config` with what the gate's
/// `jssdk-config` signs for this page, then `wx.ready` or `wx.error`.
fn jssdk_block(script: &str) -> String {
    format!(
        "<p id=\"jssdk\">JS-SDK: …</p><script src=\"{}\"></script><script>\
fetch(\"/_wechat/jssdk-config?url=\"+encodeURIComponent(location.href.split(\"#\")[0]))\
.then(function(r){{return r.json();}}).then(function(c){{\
var show=function(t){{document.getElementById(\"jssdk\").textContent=\"JS-SDK: \"+t;}};\
wx.ready(function(){{show(\"config:ok\");}});wx.error(function(e){{show(e.errMsg);}});\
wx.config({{debug:false,appId:c.appId,timestamp:c.timestamp,nonceStr:c.nonceStr,signature:c.signature,jsApiList:[\"updateAppMessageShareData\"]}});}});\
</script>",
        encode_text(script)
    )
}

async fn page(request: Request) -> Response {
    let jssdk = request
        .extensions()
        .get::<JssdkScript>()
        .and_then(|s| s.0.as_deref())
        .map(jssdk_block)
        .unwrap_or_default();
    let headers = request.headers();
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let nickname = decoded_nickname(headers).unwrap_or_default();
    let rows: String = [
        "x-wechat-openid",
        "x-wechat-unionid",
        "x-wechat-scope",
        "x-wechat-nickname",
    ]
    .iter()
    .map(|n| {
        format!(
            "<tr><th>{n}</th><td><code>{}</code></td></tr>",
            encode_text(get(n))
        )
    })
    .collect();
    Html(format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>Demo app</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 1em}}\
th{{text-align:left;padding-right:1em}}td code{{word-break:break-all}}</style></head><body>\
<h1>你好，{} · Hello</h1><p>This application sits behind <code>wechat-gateway</code>. \
It received the verified WeChat identity below on <code>{}</code>:</p><table>{rows}</table>\
<p>Nickname (decoded): <b>{}</b></p>\
<p><a href=\"/_wechat/userinfo\">/_wechat/userinfo</a> · <a href=\"/echo\">/echo</a> · \
<a href=\"/static/hello.txt\">/static/hello.txt</a> (public) · <a href=\"/_wechat/logout\">log out</a></p>\
{jssdk}</body></html>",
        encode_text(&nickname),
        encode_text(request.uri().path()),
        encode_text(&nickname),
    ))
    .into_response()
}

/// `examples/spa/index.html`: a single-page app that is its own
/// redirect_uri and hands the code to the gateway (`/_wechat/exchange`).
async fn spa() -> Response {
    axum::response::Html(include_str!("../../examples/spa/index.html")).into_response()
}

/// The demo application's routes.
pub fn router() -> Router {
    Router::new()
        .route("/echo", any(echo))
        .route("/echo/{*rest}", any(echo))
        .route("/static/{*file}", get(public_asset))
        .route("/spa/", get(spa))
        .fallback(page)
}

/// The address a demo app instance listens on, for its echo's `served_by`.
#[derive(Clone, Copy)]
struct ServedAt(SocketAddr);

/// Binds `addr` (port 0 picks one) and serves the demo app on the current runtime.
///
/// Errors: the bind error.
pub async fn spawn(addr: SocketAddr) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    spawn_with(addr, None).await
}

/// [`spawn`], the page loading the JS-SDK from `jssdk_script` (a URL) and
/// calling `wx.config` with the gate's `jssdk-config`.
///
/// Errors: the bind error.
pub async fn spawn_with(
    addr: SocketAddr,
    jssdk_script: Option<String>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let app = router()
            .layer(axum::Extension(ServedAt(addr)))
            .layer(axum::Extension(JssdkScript(jssdk_script)));
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, task))
}
