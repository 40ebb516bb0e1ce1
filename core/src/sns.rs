//! Typed client for WeChat's web-authorization APIs: `sns/oauth2/access_token`
//! and `sns/userinfo` (docs/protocol.md §1 steps 2 and 4).
//!
//! The parsers are pure (bytes in, values out). Errors arrive as HTTP 200
//! with `{"errcode":N,"errmsg":"…"}`, often as `text/plain`, so the body is
//! always read as JSON whatever the content type says.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::config::WechatConfig;
use crate::errcode::ErrCode;
use crate::secret::{AccessToken, AuthorizationCode, RefreshToken, Secret};

/// Largest answer body read from WeChat, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why a WeChat API call failed. Messages never contain the secret, a code or a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SnsError {
    /// WeChat answered with a non-zero `errcode`.
    #[error("WeChat answered {code}")]
    WeChat {
        /// The code.
        code: ErrCode,
        /// WeChat's `errmsg`, for the operator's log (at most 200 bytes).
        errmsg: String,
    },
    /// WeChat could not be reached or did not answer in time.
    #[error("WeChat could not be reached: {0}")]
    Transport(String),
    /// WeChat answered with an HTTP server error (5xx): it is unavailable
    /// for a moment.
    #[error("WeChat is unavailable: HTTP status {0}")]
    Unavailable(u16),
    /// WeChat's answer was not the JSON this API returns.
    #[error("WeChat sent an unreadable answer: {0}")]
    Malformed(String),
}

impl SnsError {
    /// The errcode, when WeChat sent one.
    pub fn errcode(&self) -> Option<ErrCode> {
        match self {
            SnsError::WeChat { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether WeChat is out of reach or unavailable for a moment (no
    /// answer, or an HTTP 5xx): worth trying again later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, SnsError::Transport(_) | SnsError::Unavailable(_))
    }

    fn is_retryable(&self) -> bool {
        matches!(
            self,
            SnsError::Transport(_)
                | SnsError::Unavailable(_)
                | SnsError::WeChat {
                    code: ErrCode::SystemBusy,
                    ..
                }
        )
    }
}

/// The answer of `sns/oauth2/access_token` (and `refresh_token`).
#[derive(Debug, Clone)]
pub struct TokenResponse {
    /// The web-authorization access token.
    pub access_token: AccessToken,
    /// Lifetime of `access_token`, in seconds (7200).
    pub expires_in: u64,
    /// The refresh token (30 days).
    pub refresh_token: RefreshToken,
    /// The user's openid.
    pub openid: String,
    /// Granted scopes, comma-separated.
    pub scope: String,
    /// The unionid, when the account is bound to an Open Platform account.
    pub unionid: Option<String>,
    /// `is_snapshotuser: 1`: a snapshot-page virtual user, not really logged in.
    pub is_snapshot_user: bool,
}

/// The answer of `sns/userinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The user's openid.
    pub openid: String,
    /// Nickname, arbitrary UTF-8.
    pub nickname: String,
    /// 1 male, 2 female, 0 unknown (WeChat sends a number or a string).
    pub sex: u8,
    /// Province.
    pub province: String,
    /// City.
    pub city: String,
    /// Country.
    pub country: String,
    /// Avatar URL; `None` when the user has none.
    pub headimgurl: Option<String>,
    /// Privileges.
    pub privilege: Vec<String>,
    /// The unionid, when bound to an Open Platform account.
    pub unionid: Option<String>,
}

#[derive(Deserialize)]
struct ErrorFields {
    #[serde(default)]
    errcode: Option<i64>,
    #[serde(default)]
    errmsg: Option<String>,
}

pub(crate) fn check_errcode(body: &[u8]) -> Result<(), SnsError> {
    let fields: ErrorFields =
        serde_json::from_slice(body).map_err(|e| SnsError::Malformed(format!("not JSON ({e})")))?;
    match fields.errcode {
        Some(code) if code != 0 => {
            let mut errmsg = fields.errmsg.unwrap_or_default();
            if errmsg.len() > 200 {
                let mut cut = 200;
                while !errmsg.is_char_boundary(cut) {
                    cut -= 1;
                }
                errmsg.truncate(cut);
            }
            Err(SnsError::WeChat {
                code: ErrCode::from_code(code),
                errmsg,
            })
        }
        _ => Ok(()),
    }
}

/// Parses an `sns/oauth2/access_token` or `refresh_token` answer.
///
/// Errors: [`SnsError::WeChat`] for a non-zero errcode, [`SnsError::Malformed`]
/// for anything that is not the documented JSON.
pub fn parse_token_response(body: &[u8]) -> Result<TokenResponse, SnsError> {
    check_errcode(body)?;
    #[derive(Deserialize)]
    struct Raw {
        access_token: String,
        expires_in: u64,
        refresh_token: String,
        openid: String,
        #[serde(default)]
        scope: String,
        #[serde(default)]
        unionid: Option<String>,
        #[serde(default)]
        is_snapshotuser: Option<i64>,
    }
    let raw: Raw = serde_json::from_slice(body)
        .map_err(|e| SnsError::Malformed(format!("token answer: {}", json_problem(&e))))?;
    Ok(TokenResponse {
        access_token: AccessToken::new(raw.access_token),
        expires_in: raw.expires_in,
        refresh_token: RefreshToken::new(raw.refresh_token),
        openid: raw.openid,
        scope: raw.scope,
        unionid: raw.unionid.filter(|u| !u.is_empty()),
        is_snapshot_user: raw.is_snapshotuser == Some(1),
    })
}

/// Parses an `sns/userinfo` answer; `sex` may be a number or a string.
///
/// Errors: as [`parse_token_response`].
pub fn parse_userinfo(body: &[u8]) -> Result<UserInfo, SnsError> {
    check_errcode(body)?;
    #[derive(Deserialize)]
    struct Raw {
        openid: String,
        #[serde(default)]
        nickname: String,
        #[serde(default)]
        sex: serde_json::Value,
        #[serde(default)]
        province: String,
        #[serde(default)]
        city: String,
        #[serde(default)]
        country: String,
        #[serde(default)]
        headimgurl: String,
        #[serde(default)]
        privilege: Vec<String>,
        #[serde(default)]
        unionid: Option<String>,
    }
    let raw: Raw = serde_json::from_slice(body)
        .map_err(|e| SnsError::Malformed(format!("userinfo answer: {}", json_problem(&e))))?;
    let sex = match &raw.sex {
        serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
        serde_json::Value::String(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    };
    Ok(UserInfo {
        openid: raw.openid,
        nickname: raw.nickname,
        sex: u8::try_from(sex).ok().filter(|s| *s <= 2).unwrap_or(0),
        province: raw.province,
        city: raw.city,
        country: raw.country,
        headimgurl: Some(raw.headimgurl).filter(|h| !h.is_empty()),
        privilege: raw.privilege,
        unionid: raw.unionid.filter(|u| !u.is_empty()),
    })
}

/// serde_json's problem without the input values it may echo (they could be tokens).
pub(crate) fn json_problem(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.find(" at line") {
        Some(i) if text.starts_with("missing field") => text[..i].to_owned(),
        _ => format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ),
    }
}

/// The `sns/oauth2/access_token` URL for exchanging `code`. It carries the
/// secret: send it to WeChat, never log or show it.
pub fn access_token_url(
    api_base: &Url,
    appid: &str,
    secret: &Secret,
    code: &AuthorizationCode,
) -> Url {
    let mut url = api_url(api_base, "sns/oauth2/access_token");
    url.query_pairs_mut()
        .append_pair("appid", appid)
        .append_pair("secret", secret.expose())
        .append_pair("code", code.expose())
        .append_pair("grant_type", "authorization_code");
    url
}

/// The `sns/oauth2/refresh_token` URL (docs/protocol.md §1 step 3). It carries
/// the refresh token: never log or show it.
pub fn refresh_token_url(api_base: &Url, appid: &str, refresh: &RefreshToken) -> Url {
    let mut url = api_url(api_base, "sns/oauth2/refresh_token");
    url.query_pairs_mut()
        .append_pair("appid", appid)
        .append_pair("grant_type", "refresh_token")
        .append_pair("refresh_token", refresh.expose());
    url
}

/// The `sns/auth` URL (docs/protocol.md §1 step 5). It carries the access token.
pub fn auth_url(api_base: &Url, token: &AccessToken, openid: &str) -> Url {
    let mut url = api_url(api_base, "sns/auth");
    url.query_pairs_mut()
        .append_pair("access_token", token.expose())
        .append_pair("openid", openid);
    url
}

/// Parses an `sns/auth` answer: `Ok` for `{"errcode":0,...}`.
///
/// Errors: [`SnsError::WeChat`] (e.g. 40003 invalid openid), [`SnsError::Malformed`].
pub fn parse_auth(body: &[u8]) -> Result<(), SnsError> {
    check_errcode(body)?;
    let fields: ErrorFields = serde_json::from_slice(body)
        .map_err(|e| SnsError::Malformed(format!("auth answer: {}", json_problem(&e))))?;
    match fields.errcode {
        Some(0) => Ok(()),
        _ => Err(SnsError::Malformed("auth answer without errcode".into())),
    }
}

/// The `sns/userinfo` URL. It carries the access token: never log or show it.
pub fn userinfo_url(api_base: &Url, token: &AccessToken, openid: &str, lang: &str) -> Url {
    let mut url = api_url(api_base, "sns/userinfo");
    url.query_pairs_mut()
        .append_pair("access_token", token.expose())
        .append_pair("openid", openid)
        .append_pair("lang", lang);
    url
}

pub(crate) fn api_url(api_base: &Url, path: &str) -> Url {
    let mut url = api_base.clone();
    let base = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{base}/{path}"));
    url
}

/// A QR code ticket from `cgi-bin/qrcode/create` (docs/protocol.md §3 step 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrTicket {
    /// The ticket (public: it goes in the image URL).
    pub ticket: String,
    /// Lifetime, seconds.
    pub expire_seconds: u64,
    /// The URL the QR code encodes.
    pub url: String,
}

/// Parses a `cgi-bin/token` answer: the basic-support token and its lifetime (seconds).
///
/// Errors: as [`parse_token_response`].
pub fn parse_basic_token(body: &[u8]) -> Result<(AccessToken, u64), SnsError> {
    check_errcode(body)?;
    #[derive(Deserialize)]
    struct Raw {
        access_token: String,
        expires_in: u64,
    }
    let raw: Raw = serde_json::from_slice(body)
        .map_err(|e| SnsError::Malformed(format!("token answer: {}", json_problem(&e))))?;
    Ok((AccessToken::new(raw.access_token), raw.expires_in))
}

/// Parses a `cgi-bin/ticket/getticket?type=jsapi` answer
/// (`{"errcode":0,"errmsg":"ok","ticket":"…","expires_in":7200}`): the
/// ticket (kept as a secret) and its lifetime in seconds.
///
/// Errors: as [`parse_token_response`]; 40001/42001 for a stale basic token.
pub fn parse_jsapi_ticket(body: &[u8]) -> Result<(AccessToken, u64), SnsError> {
    check_errcode(body)?;
    #[derive(Deserialize)]
    struct Raw {
        ticket: String,
        expires_in: u64,
    }
    let raw: Raw = serde_json::from_slice(body)
        .map_err(|e| SnsError::Malformed(format!("ticket answer: {}", json_problem(&e))))?;
    if raw.ticket.is_empty() {
        return Err(SnsError::Malformed("ticket answer: an empty ticket".into()));
    }
    Ok((AccessToken::new(raw.ticket), raw.expires_in))
}

/// A user's relation to the Official Account, from `cgi-bin/user/info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follower {
    /// `subscribe` = 1: the user follows the account.
    pub subscribed: bool,
    /// `unionid`, when the account is bound to an Open Platform account
    /// (followers only).
    pub unionid: Option<String>,
}

/// Parses a `cgi-bin/user/info` answer (WeChat's "获取用户基本信息").
///
/// Errors: as [`parse_token_response`]; 40001/42001 for a stale basic
/// token, 40003 for an openid that is not the account's.
pub fn parse_follower(body: &[u8]) -> Result<Follower, SnsError> {
    check_errcode(body)?;
    #[derive(Deserialize)]
    struct Raw {
        subscribe: u8,
        #[serde(default)]
        unionid: Option<String>,
    }
    let raw: Raw = serde_json::from_slice(body)
        .map_err(|e| SnsError::Malformed(format!("user/info answer: {}", json_problem(&e))))?;
    Ok(Follower {
        subscribed: raw.subscribe == 1,
        unionid: raw.unionid.filter(|u| !u.is_empty()),
    })
}

/// Parses a `cgi-bin/qrcode/create` answer.
///
/// Errors: as [`parse_token_response`]; 40001/42001 for a stale basic token.
pub fn parse_qr_ticket(body: &[u8]) -> Result<QrTicket, SnsError> {
    check_errcode(body)?;
    #[derive(Deserialize)]
    struct Raw {
        ticket: String,
        #[serde(default)]
        expire_seconds: u64,
        #[serde(default)]
        url: String,
    }
    let raw: Raw = serde_json::from_slice(body)
        .map_err(|e| SnsError::Malformed(format!("qrcode answer: {}", json_problem(&e))))?;
    Ok(QrTicket {
        ticket: raw.ticket,
        expire_seconds: raw.expire_seconds,
        url: raw.url,
    })
}

/// An async client for the sns APIs over reqwest, with per-call timeouts and
/// bounded retries (errcode `-1`, connection failures, timeouts).
#[derive(Debug, Clone)]
pub struct SnsClient {
    http: reqwest::Client,
    api_base: Url,
    appid: String,
    secret: Secret,
    retries: u32,
    /// `[wechat] userinfo_lang`, for `sns/userinfo` and `cgi-bin/user/info`.
    lang: &'static str,
}

impl SnsClient {
    /// A client for the `[wechat]` settings.
    ///
    /// Errors: [`SnsError::Transport`] when the HTTP client can't be built (TLS set-up).
    pub fn new(cfg: &WechatConfig) -> Result<SnsClient, SnsError> {
        Self::for_app(cfg, &cfg.appid, &cfg.secret)
    }

    /// A client for another app (the Open Platform website app of
    /// `[wechat.open]`) with the `[wechat]` endpoints and timeouts.
    ///
    /// Errors: as [`SnsClient::new`].
    pub fn for_app(
        cfg: &WechatConfig,
        appid: &str,
        secret: &Secret,
    ) -> Result<SnsClient, SnsError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("wechat-oauth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SnsError::Transport(e.without_url().to_string()))?;
        Ok(SnsClient {
            http,
            api_base: cfg.api_base.clone(),
            appid: appid.to_owned(),
            secret: secret.clone(),
            retries: cfg.retries,
            lang: cfg.userinfo_lang.as_str(),
        })
    }

    /// This client's HTTP set-up (timeouts, retries) for another API host
    /// and app: WeCom's (`[wecom]`).
    pub(crate) fn for_api(&self, api_base: Url, appid: &str, secret: &Secret) -> SnsClient {
        SnsClient {
            http: self.http.clone(),
            api_base,
            appid: appid.to_owned(),
            secret: secret.clone(),
            retries: self.retries,
            lang: self.lang,
        }
    }

    /// The API host this client calls.
    pub(crate) fn api_base(&self) -> &Url {
        &self.api_base
    }

    /// The app's secret.
    pub(crate) fn secret(&self) -> &Secret {
        &self.secret
    }

    /// The HTTP client, for a POST.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Exchanges an authorization code (`sns/oauth2/access_token`).
    ///
    /// Errors: [`SnsError`]; `-1` and transport failures are retried first.
    pub async fn exchange_code(&self, code: &AuthorizationCode) -> Result<TokenResponse, SnsError> {
        const ENDPOINT: &str = "sns/oauth2/access_token";
        let url = access_token_url(&self.api_base, &self.appid, &self.secret, code);
        self.with_retries(ENDPOINT, || async {
            parse_token_response(&self.get(url.clone()).await?)
        })
        .await
    }

    /// Fetches the profile (`sns/userinfo`, `lang` = `[wechat] userinfo_lang`).
    ///
    /// Errors: [`SnsError`]; 48001 when the token's scope is `snsapi_base`.
    pub async fn userinfo(&self, token: &AccessToken, openid: &str) -> Result<UserInfo, SnsError> {
        const ENDPOINT: &str = "sns/userinfo";
        let url = userinfo_url(&self.api_base, token, openid, self.lang);
        self.with_retries(ENDPOINT, || async {
            parse_userinfo(&self.get(url.clone()).await?)
        })
        .await
    }

    /// Refreshes an access token (`sns/oauth2/refresh_token`).
    ///
    /// Errors: [`SnsError`]; 40030/42002 when the refresh token is invalid or expired.
    pub async fn refresh(&self, refresh: &RefreshToken) -> Result<TokenResponse, SnsError> {
        const ENDPOINT: &str = "sns/oauth2/refresh_token";
        let url = refresh_token_url(&self.api_base, &self.appid, refresh);
        self.with_retries(ENDPOINT, || async {
            parse_token_response(&self.get(url.clone()).await?)
        })
        .await
    }

    /// Checks an access token against an openid (`sns/auth`).
    ///
    /// Errors: [`SnsError`]; 40003/40001/42001 when they no longer match.
    pub async fn auth(&self, token: &AccessToken, openid: &str) -> Result<(), SnsError> {
        const ENDPOINT: &str = "sns/auth";
        let url = auth_url(&self.api_base, token, openid);
        self.with_retries(ENDPOINT, || async {
            parse_auth(&self.get(url.clone()).await?)
        })
        .await
    }

    /// The basic-support token from `cgi-bin/stable_token` (POST, the secret
    /// in the body): the same token for every caller until near its end,
    /// so it coexists with the account's other backends; `force_refresh`
    /// asks for a new one (WeChat limits how often). The token and its
    /// remaining lifetime in seconds.
    ///
    /// Errors: [`SnsError`]; 45011 when forced refreshes come too often.
    pub async fn stable_token(&self, force_refresh: bool) -> Result<(AccessToken, u64), SnsError> {
        const ENDPOINT: &str = "cgi-bin/stable_token";
        let url = api_url(&self.api_base, ENDPOINT);
        let body = serde_json::json!({
            "grant_type": "client_credential",
            "appid": self.appid,
            "secret": self.secret.expose(),
            "force_refresh": force_refresh,
        })
        .to_string();
        self.with_retries(ENDPOINT, || async {
            let request = self
                .http
                .post(url.clone())
                .header("Content-Type", "application/json")
                .body(body.clone());
            parse_basic_token(&self.send(request).await?)
        })
        .await
    }

    /// A token answer `{access_token, expires_in}` (or WeChat's error JSON)
    /// from a site's own token service at `url` (`[wechat] token_source =
    /// "url"`): the token and its remaining lifetime in seconds.
    ///
    /// Errors: [`SnsError`] (the service's transport, status or JSON).
    pub async fn token_from_url(&self, url: &Url) -> Result<(AccessToken, u64), SnsError> {
        self.with_retries("token_url", || async {
            parse_basic_token(&self.get(url.clone()).await?)
        })
        .await
    }

    /// A new basic-support token (`cgi-bin/token`): the token and its lifetime in seconds.
    ///
    /// Errors: [`SnsError`].
    pub async fn basic_token(&self) -> Result<(AccessToken, u64), SnsError> {
        const ENDPOINT: &str = "cgi-bin/token";
        let mut url = api_url(&self.api_base, "cgi-bin/token");
        url.query_pairs_mut()
            .append_pair("grant_type", "client_credential")
            .append_pair("appid", &self.appid)
            .append_pair("secret", self.secret.expose());
        self.with_retries(ENDPOINT, || async {
            parse_basic_token(&self.get(url.clone()).await?)
        })
        .await
    }

    /// The JS-SDK's `jsapi_ticket` (`cgi-bin/ticket/getticket?type=jsapi`)
    /// and its lifetime in seconds, fetched with the basic `token`.
    ///
    /// Errors: [`SnsError`]; 40001/42001 when `token` is no longer valid.
    pub async fn jsapi_ticket(&self, token: &AccessToken) -> Result<(AccessToken, u64), SnsError> {
        const ENDPOINT: &str = "cgi-bin/ticket/getticket";
        let mut url = api_url(&self.api_base, ENDPOINT);
        url.query_pairs_mut()
            .append_pair("access_token", token.expose())
            .append_pair("type", "jsapi");
        self.with_retries(ENDPOINT, || async {
            parse_jsapi_ticket(&self.get(url.clone()).await?)
        })
        .await
    }

    /// Whether `openid` follows the Official Account (`cgi-bin/user/info`,
    /// `lang` = `[wechat] userinfo_lang`).
    ///
    /// Errors: [`SnsError`]; 40001/42001 when `token` is no longer valid.
    pub async fn follower(&self, token: &AccessToken, openid: &str) -> Result<Follower, SnsError> {
        const ENDPOINT: &str = "cgi-bin/user/info";
        let mut url = api_url(&self.api_base, ENDPOINT);
        url.query_pairs_mut()
            .append_pair("access_token", token.expose())
            .append_pair("openid", openid)
            .append_pair("lang", self.lang);
        self.with_retries(ENDPOINT, || async {
            parse_follower(&self.get(url.clone()).await?)
        })
        .await
    }

    /// Creates a temporary `QR_STR_SCENE` QR code (`cgi-bin/qrcode/create`).
    ///
    /// Errors: [`SnsError`]; 40001/42001 when `token` is no longer valid.
    pub async fn create_qr_scene(
        &self,
        token: &AccessToken,
        scene: &str,
        expire_seconds: u64,
    ) -> Result<QrTicket, SnsError> {
        const ENDPOINT: &str = "cgi-bin/qrcode/create";
        let mut url = api_url(&self.api_base, "cgi-bin/qrcode/create");
        url.query_pairs_mut()
            .append_pair("access_token", token.expose());
        let body = serde_json::json!({
            "expire_seconds": expire_seconds,
            "action_name": "QR_STR_SCENE",
            "action_info": {"scene": {"scene_str": scene}},
        })
        .to_string();
        self.with_retries(ENDPOINT, || async {
            let request = self.http.post(url.clone()).body(body.clone());
            parse_qr_ticket(&self.send(request).await?)
        })
        .await
    }

    /// Runs `call` with bounded retries, counting each attempt (by
    /// `endpoint` and errcode), its latency and the retries.
    pub(crate) async fn with_retries<T, F, Fut>(
        &self,
        endpoint: &'static str,
        mut call: F,
    ) -> Result<T, SnsError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SnsError>>,
    {
        let mut attempt = 0;
        loop {
            let started = std::time::Instant::now();
            let result = call().await;
            crate::metrics::WECHAT_SECONDS
                .with_label_values(&[endpoint])
                .observe(started.elapsed().as_secs_f64());
            let errcode = match &result {
                Ok(_) => "0".to_owned(),
                Err(SnsError::WeChat { code, .. }) => code.code().to_string(),
                Err(SnsError::Transport(_)) => "transport".to_owned(),
                Err(SnsError::Unavailable(_)) => "http_5xx".to_owned(),
                Err(_) => "malformed".to_owned(),
            };
            crate::metrics::WECHAT_CALLS
                .with_label_values(&[endpoint, errcode.as_str()])
                .inc();
            match result {
                Err(e) if e.is_retryable() && attempt < self.retries => {
                    crate::metrics::WECHAT_RETRIES
                        .with_label_values(&[endpoint])
                        .inc();
                    let base = 100u64 << attempt.min(5);
                    let jitter = rand::random_range(0..=base / 2);
                    tracing::debug!(attempt, error = %e, "retrying WeChat API call");
                    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    pub(crate) async fn get(&self, url: Url) -> Result<Vec<u8>, SnsError> {
        self.send(self.http.get(url)).await
    }

    pub(crate) async fn send(&self, request: reqwest::RequestBuilder) -> Result<Vec<u8>, SnsError> {
        // `without_url`: reqwest's errors otherwise print the URL, which holds the secret.
        let transport = |e: reqwest::Error| SnsError::Transport(e.without_url().to_string());
        let mut response = request.send().await.map_err(transport)?;
        if response.status().is_server_error() {
            return Err(SnsError::Unavailable(response.status().as_u16()));
        }
        if !response.status().is_success() {
            return Err(SnsError::Malformed(format!(
                "HTTP status {}",
                response.status()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(SnsError::Malformed("answer larger than 64 KiB".into()));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_answer_parses() {
        let t = parse_token_response(
            br#"{"access_token":"AT","expires_in":7200,"refresh_token":"RT","openid":"OID","scope":"snsapi_userinfo","is_snapshotuser":1,"unionid":"UID"}"#,
        )
        .unwrap();
        assert_eq!(t.access_token.expose(), "AT");
        assert_eq!(t.openid, "OID");
        assert_eq!(t.unionid.as_deref(), Some("UID"));
        assert!(t.is_snapshot_user);
        assert!(!format!("{t:?}").contains("\"AT\""));
    }

    #[test]
    fn errcode_answers_become_errors() {
        let e = parse_token_response(br#"{"errcode":40163,"errmsg":"code been used, rid: 1"}"#)
            .unwrap_err();
        assert_eq!(e.errcode(), Some(ErrCode::CodeBeenUsed));
        let e = parse_userinfo(br#"{"errcode":48001,"errmsg":"api unauthorized"}"#).unwrap_err();
        assert_eq!(e.errcode(), Some(ErrCode::ApiUnauthorized));
        assert!(parse_token_response(br#"{"errcode":0,"errmsg":"ok"}"#).is_err());
    }

    #[test]
    fn malformed_answers_never_echo_values() {
        let e = parse_token_response(br#"{"access_token":"SECRET_TOKEN","expires_in":"x"}"#)
            .unwrap_err();
        assert!(matches!(e, SnsError::Malformed(_)));
        assert!(!e.to_string().contains("SECRET_TOKEN"), "{e}");
        let e = parse_token_response(b"<html>502 Bad Gateway</html>").unwrap_err();
        assert!(matches!(e, SnsError::Malformed(_)));
    }

    #[test]
    fn userinfo_sex_as_number_or_string_and_utf8_nickname() {
        let u = parse_userinfo(
            "{\"openid\":\"o1\",\"nickname\":\"微信用户🐼\",\"sex\":\"2\",\"headimgurl\":\"\",\"privilege\":[]}".as_bytes(),
        )
        .unwrap();
        assert_eq!(u.sex, 2);
        assert_eq!(u.nickname, "微信用户🐼");
        assert_eq!(u.headimgurl, None);
        assert_eq!(
            parse_userinfo(br#"{"openid":"o1","sex":1}"#).unwrap().sex,
            1
        );
    }

    #[test]
    fn refresh_and_auth_urls_carry_the_documented_parameters() {
        let base = Url::parse("https://api.weixin.qq.com").unwrap();
        assert_eq!(
            refresh_token_url(&base, "wx1", &RefreshToken::new("R")).as_str(),
            "https://api.weixin.qq.com/sns/oauth2/refresh_token?appid=wx1&grant_type=refresh_token&refresh_token=R"
        );
        assert_eq!(
            auth_url(&base, &AccessToken::new("T"), "o").as_str(),
            "https://api.weixin.qq.com/sns/auth?access_token=T&openid=o"
        );
    }

    #[test]
    fn auth_answers_parse() {
        assert!(parse_auth(br#"{"errcode":0,"errmsg":"ok"}"#).is_ok());
        let e = parse_auth(br#"{"errcode":40003,"errmsg":"invalid openid"}"#).unwrap_err();
        assert_eq!(e.errcode(), Some(ErrCode::InvalidOpenid));
        assert!(parse_auth(b"{}").is_err());
    }

    #[test]
    fn urls_carry_the_documented_parameters() {
        let base = Url::parse("http://127.0.0.1:9/wx").unwrap();
        let url = access_token_url(
            &base,
            "wx1",
            &Secret::new("S"),
            &AuthorizationCode::new("C"),
        );
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/wx/sns/oauth2/access_token?appid=wx1&secret=S&code=C&grant_type=authorization_code"
        );
        let url = userinfo_url(
            &Url::parse("https://api.weixin.qq.com").unwrap(),
            &AccessToken::new("T"),
            "o",
            "zh_CN",
        );
        assert_eq!(
            url.as_str(),
            "https://api.weixin.qq.com/sns/userinfo?access_token=T&openid=o&lang=zh_CN"
        );
    }
}
