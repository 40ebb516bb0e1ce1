//! The configuration shared by the gateway and every host: a TOML file with
//! `[wechat]` and `[gateway]` tables, secrets overridable from the
//! environment (README.md "Configuration" lists every key).
//!
//! Every problem is reported as one [`ConfigError`] line that names the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::authorize::Scope;
use crate::secret::Secret;

/// Default browser-facing WeChat host (authorize pages).
pub const DEFAULT_OPEN_BASE: &str = "https://open.weixin.qq.com";
/// Default server-to-server WeChat API host.
pub const DEFAULT_API_BASE: &str = "https://api.weixin.qq.com";
/// Default host of `showqrcode`.
pub const DEFAULT_MP_BASE: &str = "https://mp.weixin.qq.com";

/// Minimum length of each cookie key (`[gateway] cookie_secret`, `cookie_secrets`), in bytes.
pub const MIN_COOKIE_SECRET_BYTES: usize = 32;

/// A configuration problem, one line, naming the key to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file (or a `*_file` secret) could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The path as given.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// The TOML is malformed or has an unknown key.
    #[error("config line {line}: {message}")]
    Syntax {
        /// 1-based line of the problem.
        line: usize,
        /// The parser's message, e.g. "unknown field `listn`".
        message: String,
    },
    /// A key is missing or has a bad value.
    #[error("config {key}: {problem}")]
    Invalid {
        /// The key, as `[table] key`.
        key: &'static str,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[wechat]`: the Official Account and WeChat's endpoints.
    pub wechat: WechatConfig,
    /// `[gateway]`: where the gate listens, what it protects, its cookies.
    pub gateway: GatewayConfig,
    /// `[store]`: where login state lives (this process, or Redis shared by
    /// several gateways and hosts).
    pub store: StoreConfig,
    /// `[limits]`: abuse limits per client address.
    pub limits: LimitsConfig,
}

/// `[limits]` settings: requests without a session that make WeChat API
/// calls (`callback`, `exchange`, `qr/new`) per client address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// `logins_per_minute`: the sustained rate per client address
    /// (default 60; 0 turns the limit off).
    pub logins_per_minute: u32,
    /// `login_burst`: how many may come at once before the rate applies
    /// (default 20).
    pub login_burst: u32,
}

/// `[store]` settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `url` (env `WECHAT_STORE_URL`): `memory` (the default: this process
    /// only) or a Redis URL, `redis://[user:password@]host:port[/db]`,
    /// `rediss://…` (TLS) or `redis+sentinel://host:port[,host:port…]/master[/db]`.
    /// Kept as a secret: it may hold a password.
    pub url: Option<Secret>,
    /// `cluster_nodes`: a Redis Cluster's node URLs
    /// (`["redis://10.0.0.1:6379", …]`), instead of `url`.
    pub cluster_nodes: Vec<Secret>,
    /// `key_prefix`: the start of every Redis key (default `wechat:`), so
    /// several sites can share one Redis.
    pub key_prefix: String,
    /// `timeout_ms`: the longest one Redis command may take (default 500).
    pub timeout: Duration,
    /// `url = "file:PATH"`: the embedded database file of a single gateway
    /// or host ([`crate::coordination::FileStore`]): logins, tokens and logouts survive
    /// a restart.
    pub file: Option<PathBuf>,
    /// `state_dir`: where the default database file goes
    /// (`STATE_DIR/store.redb`) when `url` is not given. Without either,
    /// a library host keeps state in memory; the `wechat-gateway` binary
    /// defaults to `./wechat-gateway-state` ([`StoreConfig::default_to_file`]).
    pub state_dir: Option<PathBuf>,
    /// `url = "memory"` was said: this process only, nothing persists.
    pub memory: bool,
}

/// The database file's name inside `[store] state_dir`.
pub const STATE_FILE_NAME: &str = "store.redb";

impl StoreConfig {
    /// When no store is named (no `url`, `cluster_nodes` or `state_dir`),
    /// the file `default_dir/store.redb`; with `state_dir` only, the file
    /// in it. `url = "memory"`, a Redis URL or a file URL stay as they are.
    pub fn default_to_file(&mut self, default_dir: &Path) {
        let named = self.url.is_some() || !self.cluster_nodes.is_empty() || self.memory;
        if self.file.is_none() && !named {
            let dir = self.state_dir.as_deref().unwrap_or(default_dir);
            self.file = Some(dir.join(STATE_FILE_NAME));
        }
    }
}

/// `[wechat]` settings.
#[derive(Debug, Clone)]
pub struct WechatConfig {
    /// `appid` (env `WECHAT_APPID`).
    pub appid: String,
    /// `secret` (env `WECHAT_APP_SECRET`, or `secret_file`). Never printed.
    pub secret: Secret,
    /// `scope`: `snsapi_base` (default) or `snsapi_userinfo`.
    pub scope: Scope,
    /// `open_base`: browser-facing authorize host, default [`DEFAULT_OPEN_BASE`].
    pub open_base: Url,
    /// `api_base`: JSON API host, default [`DEFAULT_API_BASE`].
    pub api_base: Url,
    /// `timeout_ms`: per-call timeout for WeChat API calls (default 5000 ms).
    pub timeout: Duration,
    /// `retries`: further attempts after a `-1` or a connection failure (default 2).
    pub retries: u32,
    /// `mp_base`: host of `cgi-bin/showqrcode`, default [`DEFAULT_MP_BASE`].
    pub mp_base: Url,
    /// `push_token` (env `WECHAT_PUSH_TOKEN`): the server URL token that
    /// signs WeChat's pushes (docs/protocol.md §3). Never printed.
    pub push_token: Option<Secret>,
    /// `encoding_aes_key` (env `WECHAT_ENCODING_AES_KEY`): 43 characters, for
    /// safe-mode (encrypted) pushes. Never printed.
    pub encoding_aes_key: Option<Secret>,
    /// `[wechat.open]`: the Open Platform website app, for qrconnect.
    pub open: Option<OpenAppConfig>,
}

/// `[wechat.open]`: an Open Platform *website application* (docs/protocol.md §2).
#[derive(Debug, Clone)]
pub struct OpenAppConfig {
    /// `appid` (env `WECHAT_OPEN_APPID`).
    pub appid: String,
    /// `secret` (env `WECHAT_OPEN_SECRET`, or `secret_file`). Never printed.
    pub secret: Secret,
}

/// The default of `[gateway] header_timeout_secs`, in seconds.
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;

/// How desktop browsers log in (`[gateway] desktop_login`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DesktopLogin {
    /// A page asking to open the link in WeChat (the default).
    Notice,
    /// Open Platform QR login (`connect/qrconnect`, `[wechat.open]`).
    Qrconnect,
    /// Official Account scene QR code + signed scan push (`push_token`).
    SceneQr,
}

/// `[gateway]` settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `listen`: address the gateway binds, default `0.0.0.0:8080`.
    pub listen: String,
    /// `upstream`: `host:port` of the protected application (gateway only).
    pub upstream: Option<String>,
    /// `public_url`: the site's origin as browsers see it (scheme, host, port).
    pub public_url: Url,
    /// `prefix`: path under which the gate's routes live, default `/_wechat`.
    pub prefix: String,
    /// The cookie keys, each at least [`MIN_COOKIE_SECRET_BYTES`] bytes: the
    /// first seals, every one opens (key rotation). From `cookie_secret` (env
    /// `WECHAT_COOKIE_SECRET`, or `cookie_secret_file`) and/or the list
    /// `cookie_secrets`; the environment's comes first. Never printed.
    pub cookie_secrets: Vec<Secret>,
    /// `public_paths`: path prefixes that need no login.
    pub public_paths: Vec<String>,
    /// `userinfo_paths`: path prefixes that need `snsapi_userinfo`; a
    /// `snsapi_base` session there is sent to authorize again with it.
    pub userinfo_paths: Vec<String>,
    /// `session_lifetime_secs`: absolute lifetime of a login (default 7 days).
    pub session_lifetime: Duration,
    /// `session_idle_secs`: a session unused this long ends (default 0: never).
    pub session_idle: Option<Duration>,
    /// `logout_redirect`: where `logout` sends the browser without `rd` (default `/`).
    pub logout_redirect: String,
    /// `cookie_name`: the session cookie's name. Default
    /// `__Host-wechat_session` on an https `public_url` (Secure, `Path=/`,
    /// no `Domain`: a sibling subdomain can't set or toss it), else
    /// `wechat_session`.
    pub session_cookie_name: String,
    /// `allow_snapshot_users`: let snapshot-page users (`is_snapshotuser: 1`)
    /// through, marked `X-WeChat-Snapshot: 1` (default false: refused).
    pub allow_snapshot_users: bool,
    /// `language`: pages in `zh`, `en`, or `auto` (by `Accept-Language`, else zh; the default).
    pub language: Language,
    /// `desktop_login`: `notice` (default), `qrconnect` or `scene_qr`.
    pub desktop_login: DesktopLogin,
    /// `scene_confirm`: a scene QR scan logs the desktop in only after the
    /// phone confirms it (default false). The scan's push is answered with
    /// a message linking to a confirmation page that shows where the login
    /// happens (docs/security.md, "The scan confirmed on the phone"):
    /// a victim shown an attacker's QR code (QRLJacking) sees someone
    /// else's browser and address, and refuses. Needs `desktop_login = "scene_qr"`.
    pub scene_confirm: bool,
    /// `push_path`: where WeChat pushes events (default `<prefix>/events`).
    pub push_path: String,
    /// `metrics_listen`: where the gateway serves Prometheus metrics
    /// (`GET /metrics`), e.g. `127.0.0.1:9102`; none by default.
    pub metrics_listen: Option<String>,
    /// `trusted_proxies`: CIDR blocks (`["10.0.0.0/8", "::1/128"]`) of the
    /// fronts whose `X-Forwarded-*`, `Forwarded` and `X-Real-IP` headers
    /// are kept and appended to; from any other peer they are replaced
    /// (default: none trusted). See [`crate::forwarded`].
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `log_openid`: `plain` (default) or `hash`: log lines show each
    /// openid as `sha1:` + 16 hex digits of its SHA-1.
    pub log_openid_hashed: bool,
    /// `header_timeout_secs`: each request's header block must arrive in
    /// full within this many seconds (from the connection's start, or the
    /// request's first byte on a kept-alive connection), else the gateway
    /// closes the connection: a client trickling its headers (slowloris)
    /// holds nothing for long. Default 10, at least 1.
    pub header_timeout: Duration,
    /// `tls_cert` and `tls_key`: PEM files; with both, the gateway serves
    /// HTTPS on `listen` (TLS by Pingora).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// The language of the gate's pages (`[gateway] language`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// Chosen per request from `Accept-Language`; Chinese unless English comes first.
    Auto,
    /// Always Chinese.
    Zh,
    /// Always English.
    En,
}

impl GatewayConfig {
    /// The `redirect_uri` WeChat sends the browser back to: `public_url + prefix + "/callback"`.
    pub fn callback_url(&self) -> String {
        format!(
            "{}{}",
            self.origin(),
            crate::flow::Route::Callback.path(&self.prefix)
        )
    }

    /// `public_url` without a trailing slash, e.g. `https://app.example.com`.
    pub fn origin(&self) -> String {
        self.public_url.as_str().trim_end_matches('/').to_owned()
    }

    /// Whether cookies get the `Secure` attribute (`public_url` is https).
    pub fn secure_cookies(&self) -> bool {
        self.public_url.scheme() == "https"
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    wechat: RawWechat,
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    logins_per_minute: Option<u32>,
    login_burst: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
    state_dir: Option<PathBuf>,
    cluster_nodes: Option<Vec<String>>,
    key_prefix: Option<String>,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWechat {
    appid: Option<String>,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    scope: Option<String>,
    open_base: Option<String>,
    api_base: Option<String>,
    timeout_ms: Option<u64>,
    retries: Option<u32>,
    mp_base: Option<String>,
    push_token: Option<String>,
    encoding_aes_key: Option<String>,
    open: Option<RawOpen>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOpen {
    appid: Option<String>,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    listen: Option<String>,
    upstream: Option<String>,
    public_url: Option<String>,
    prefix: Option<String>,
    cookie_secret: Option<String>,
    cookie_secret_file: Option<PathBuf>,
    cookie_secrets: Option<Vec<String>>,
    public_paths: Option<Vec<String>>,
    userinfo_paths: Option<Vec<String>>,
    session_lifetime_secs: Option<u64>,
    session_idle_secs: Option<u64>,
    logout_redirect: Option<String>,
    cookie_name: Option<String>,
    allow_snapshot_users: Option<bool>,
    language: Option<String>,
    desktop_login: Option<String>,
    scene_confirm: Option<bool>,
    push_path: Option<String>,
    metrics_listen: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    log_openid: Option<String>,
    header_timeout_secs: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

impl Config {
    /// Loads a TOML file, with overrides from the process environment.
    ///
    /// Errors: [`ConfigError::Read`] when the file can't be read, else as
    /// [`Config::from_toml`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_toml(&text, |name| std::env::var(name).ok())
    }

    /// Every problem of a configuration, one [`ConfigError`] each (empty
    /// when it loads): each problem found is set aside (its key given a
    /// valid value, or removed when it has a default) and the check runs
    /// again, so one bad key does not hide the next. `env` as for
    /// [`Config::from_toml`]; a bad environment override is reported and
    /// then ignored.
    pub fn check(text: &str, env: impl Fn(&str) -> Option<String>) -> Vec<ConfigError> {
        let mut doc: toml::Table = match text.parse() {
            Ok(doc) => doc,
            Err(e) => {
                let e: toml::de::Error = e;
                return vec![ConfigError::Syntax {
                    line: e
                        .span()
                        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                        .unwrap_or(1),
                    message: e.message().trim().to_owned(),
                }];
            }
        };
        let mut ignored_env: Vec<&'static str> = Vec::new();
        let mut problems: Vec<ConfigError> = Vec::new();
        for _ in 0..64 {
            let rendered = toml::to_string(&doc).expect("a parsed table renders");
            let err = match Config::from_toml(&rendered, |k| {
                if ignored_env.contains(&k) {
                    None
                } else {
                    env(k)
                }
            }) {
                Ok(_) => break,
                Err(e) => e,
            };
            let repaired = match &err {
                ConfigError::Invalid { key, .. } => {
                    if let Some(var) = env_override_of(key).filter(|v| env(v).is_some()) {
                        ignored_env.push(var);
                    }
                    repair_key(&mut doc, key)
                }
                ConfigError::Syntax { line, .. } => match key_at_line(&rendered, *line) {
                    Some((table, key)) => {
                        let removed = remove_key(&mut doc, &table, &key);
                        problems.push(ConfigError::Syntax {
                            line: line_of_key(text, &table, &key).unwrap_or(1),
                            message: match &err {
                                ConfigError::Syntax { message, .. } => message.clone(),
                                _ => unreachable!(),
                            },
                        });
                        if removed {
                            continue;
                        }
                        break;
                    }
                    None => false,
                },
                ConfigError::Read { .. } => false,
            };
            let repeated = problems.iter().any(|p| p.to_string() == err.to_string());
            if !repeated {
                problems.push(err);
            }
            if !repaired || repeated {
                break;
            }
        }
        problems
    }

    /// Parses and validates TOML text; `env` looks up environment overrides
    /// (`WECHAT_APPID`, `WECHAT_APP_SECRET`, `WECHAT_COOKIE_SECRET`), which
    /// win over the file.
    ///
    /// Errors: [`ConfigError::Syntax`] for malformed TOML or an unknown key,
    /// [`ConfigError::Invalid`] naming the first missing or bad key.
    pub fn from_toml(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            line: e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1),
            message: e.message().trim().to_owned(),
        })?;
        let env = |name: &str| env(name).filter(|v| !v.is_empty());

        let w = raw.wechat;
        let appid = env("WECHAT_APPID")
            .or(w.appid)
            .ok_or_else(|| invalid("[wechat] appid", "missing (set it, or env WECHAT_APPID)"))?;
        check_appid("[wechat] appid", &appid)?;
        let secret = secret_value(
            env("WECHAT_APP_SECRET"),
            w.secret_file,
            w.secret,
            "[wechat] secret",
            "set secret, secret_file, or env WECHAT_APP_SECRET",
        )?;
        let scope = match w.scope.as_deref() {
            None => Scope::Base,
            Some(s) => Scope::parse(s).ok_or_else(|| {
                invalid(
                    "[wechat] scope",
                    "must be \"snsapi_base\" or \"snsapi_userinfo\"",
                )
            })?,
        };
        let open_base = base_url("[wechat] open_base", w.open_base, DEFAULT_OPEN_BASE)?;
        let api_base = base_url("[wechat] api_base", w.api_base, DEFAULT_API_BASE)?;
        let timeout_ms = w.timeout_ms.unwrap_or(5000);
        if !(1..=120_000).contains(&timeout_ms) {
            return Err(invalid(
                "[wechat] timeout_ms",
                "must be 1 to 120000 (milliseconds)",
            ));
        }
        let retries = w.retries.unwrap_or(2);
        if retries > 10 {
            return Err(invalid("[wechat] retries", "must be 0 to 10"));
        }

        let mp_base = base_url("[wechat] mp_base", w.mp_base, DEFAULT_MP_BASE)?;
        let push_token = env("WECHAT_PUSH_TOKEN")
            .or(w.push_token)
            .filter(|t| !t.is_empty());
        if let Some(t) = &push_token {
            if t.len() < 3 || t.len() > 32 || !t.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(invalid(
                    "[wechat] push_token",
                    "must be 3 to 32 letters or digits, as in the WeChat console",
                ));
            }
        }
        let encoding_aes_key = env("WECHAT_ENCODING_AES_KEY")
            .or(w.encoding_aes_key)
            .filter(|k| !k.is_empty());
        if let Some(k) = &encoding_aes_key {
            if k.len() != 43 || !k.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(invalid(
                    "[wechat] encoding_aes_key",
                    "must be the 43 letters and digits of the console's EncodingAESKey",
                ));
            }
        }
        let open = match w.open {
            None if env("WECHAT_OPEN_APPID").is_none() => None,
            raw_open => {
                let o = raw_open.unwrap_or_default();
                let appid = env("WECHAT_OPEN_APPID").or(o.appid).ok_or_else(|| {
                    invalid(
                        "[wechat.open] appid",
                        "missing (set it, or env WECHAT_OPEN_APPID)",
                    )
                })?;
                check_appid("[wechat.open] appid", &appid)?;
                let secret = secret_value(
                    env("WECHAT_OPEN_SECRET"),
                    o.secret_file,
                    o.secret,
                    "[wechat.open] secret",
                    "set secret, secret_file, or env WECHAT_OPEN_SECRET",
                )?;
                Some(OpenAppConfig { appid, secret })
            }
        };

        let g = raw.gateway;
        let listen = g.listen.unwrap_or_else(|| "0.0.0.0:8080".to_owned());
        if listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "[gateway] listen",
                "must be an IP:port, e.g. \"0.0.0.0:8080\"",
            ));
        }
        if let Some(up) = &g.upstream {
            validate_host_port(up).map_err(|p| {
                invalid(
                    "[gateway] upstream",
                    format!("{p}, e.g. \"127.0.0.1:3000\""),
                )
            })?;
        }
        let public_url_text = g.public_url.ok_or_else(|| {
            invalid(
                "[gateway] public_url",
                "missing (the site's origin as browsers see it, e.g. \"https://app.example.com\")",
            )
        })?;
        let public_url = Url::parse(&public_url_text)
            .ok()
            .filter(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.path() == "/"
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && u.username().is_empty()
            })
            .ok_or_else(|| {
                invalid(
                    "[gateway] public_url",
                    "must be an http(s) origin with no path, e.g. \"https://app.example.com\"",
                )
            })?;
        let prefix = g.prefix.unwrap_or_else(|| "/_wechat".to_owned());
        if !prefix.starts_with('/')
            || prefix.len() < 2
            || prefix.ends_with('/')
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_-.".contains(&b))
        {
            return Err(invalid(
                "[gateway] prefix",
                "must start with '/', not end with '/', and use only letters, digits, '/', '_', '-', '.'",
            ));
        }
        let mut cookie_secrets = Vec::new();
        let single = env("WECHAT_COOKIE_SECRET").is_some()
            || g.cookie_secret_file.is_some()
            || g.cookie_secret.is_some();
        if single || g.cookie_secrets.is_none() {
            cookie_secrets.push(secret_value(
                env("WECHAT_COOKIE_SECRET"),
                g.cookie_secret_file,
                g.cookie_secret,
                "[gateway] cookie_secret",
                "set cookie_secret, cookie_secrets, cookie_secret_file, or env WECHAT_COOKIE_SECRET",
            )?);
        }
        for value in g.cookie_secrets.unwrap_or_default() {
            if !cookie_secrets.iter().any(|s| s.expose() == value) {
                cookie_secrets.push(Secret::new(value));
            }
        }
        if cookie_secrets
            .iter()
            .any(|s| s.expose().len() < MIN_COOKIE_SECRET_BYTES)
        {
            let key = if single && cookie_secrets[0].expose().len() < MIN_COOKIE_SECRET_BYTES {
                "[gateway] cookie_secret"
            } else {
                "[gateway] cookie_secrets"
            };
            return Err(invalid(
                key,
                format!(
                    "every key must be at least {MIN_COOKIE_SECRET_BYTES} bytes (e.g. the output of `openssl rand -base64 48`)"
                ),
            ));
        }
        let public_paths = path_list("[gateway] public_paths", g.public_paths)?;
        let userinfo_paths = path_list("[gateway] userinfo_paths", g.userinfo_paths)?;
        let lifetime = g.session_lifetime_secs.unwrap_or(7 * 24 * 3600);
        if !(60..=366 * 24 * 3600).contains(&lifetime) {
            return Err(invalid(
                "[gateway] session_lifetime_secs",
                "must be 60 to 31622400 (seconds)",
            ));
        }
        let session_idle = match g.session_idle_secs.unwrap_or(0) {
            0 => None,
            n if (60..=lifetime).contains(&n) => Some(Duration::from_secs(n)),
            _ => {
                return Err(invalid(
                    "[gateway] session_idle_secs",
                    "must be 0 (off) or 60 up to session_lifetime_secs (seconds)",
                ))
            }
        };
        let logout_redirect = g.logout_redirect.unwrap_or_else(|| "/".to_owned());
        let logout_ok = (logout_redirect.starts_with('/') && !logout_redirect.starts_with("//"))
            || Url::parse(&logout_redirect).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !logout_ok || logout_redirect.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
            return Err(invalid(
                "[gateway] logout_redirect",
                "must be a path like \"/\" or an http(s) URL",
            ));
        }
        let session_cookie_name = match g.cookie_name {
            Some(name) => {
                let token = !name.is_empty()
                    && name.len() <= 64
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if !token || (name.starts_with("__Host-") && public_url.scheme() != "https") {
                    return Err(invalid(
                        "[gateway] cookie_name",
                        "letters, digits, - _ . (at most 64); __Host- names need an https public_url",
                    ));
                }
                name
            }
            None if public_url.scheme() == "https" => "__Host-wechat_session".to_owned(),
            None => crate::session::SESSION_COOKIE.to_owned(),
        };
        let mut trusted_proxies = Vec::new();
        for block in g.trusted_proxies.unwrap_or_default() {
            let parsed = block
                .parse::<ipnet::IpNet>()
                .or_else(|_| block.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => trusted_proxies.push(net.trunc()),
                Err(_) => {
                    return Err(invalid(
                        "[gateway] trusted_proxies",
                        format!("{block:?} is not a CIDR block or an IP address"),
                    ))
                }
            }
        }
        let language = match g.language.as_deref().unwrap_or("auto") {
            "auto" => Language::Auto,
            "zh" => Language::Zh,
            "en" => Language::En,
            _ => {
                return Err(invalid(
                    "[gateway] language",
                    "must be \"auto\", \"zh\" or \"en\"",
                ))
            }
        };

        let desktop_login = match g.desktop_login.as_deref().unwrap_or("notice") {
            "notice" => DesktopLogin::Notice,
            "qrconnect" => DesktopLogin::Qrconnect,
            "scene_qr" => DesktopLogin::SceneQr,
            _ => {
                return Err(invalid(
                    "[gateway] desktop_login",
                    "must be \"notice\", \"qrconnect\" or \"scene_qr\"",
                ))
            }
        };
        if desktop_login == DesktopLogin::Qrconnect && open.is_none() {
            return Err(invalid(
                "[wechat.open] appid",
                "desktop_login = \"qrconnect\" needs the Open Platform website app ([wechat.open] appid and secret)",
            ));
        }
        if desktop_login == DesktopLogin::SceneQr && push_token.is_none() {
            return Err(invalid(
                "[wechat] push_token",
                "desktop_login = \"scene_qr\" needs the server URL token (push_token, or env WECHAT_PUSH_TOKEN)",
            ));
        }
        let scene_confirm = g.scene_confirm.unwrap_or(false);
        if scene_confirm && desktop_login != DesktopLogin::SceneQr {
            return Err(invalid(
                "[gateway] scene_confirm",
                "confirms scene QR scans: it needs desktop_login = \"scene_qr\"",
            ));
        }
        let push_path = g
            .push_path
            .unwrap_or_else(|| crate::flow::Route::Push.path(&prefix));
        if !push_path.starts_with('/')
            || push_path
                .bytes()
                .any(|b| !(0x21..0x7f).contains(&b) || b == b'?')
        {
            return Err(invalid(
                "[gateway] push_path",
                "must be a path starting with '/'",
            ));
        }

        let log_openid_hashed = match g.log_openid.as_deref() {
            None | Some("plain") => false,
            Some("hash") => true,
            Some(_) => return Err(invalid("[gateway] log_openid", "\"plain\" or \"hash\"")),
        };
        let header_timeout = match g.header_timeout_secs.unwrap_or(DEFAULT_HEADER_TIMEOUT_SECS) {
            0 => {
                return Err(invalid(
                    "[gateway] header_timeout_secs",
                    "must be at least 1 (seconds)",
                ))
            }
            secs => Duration::from_secs(secs),
        };
        let tls = match (g.tls_cert, g.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                for (path, name) in [(&cert, "[gateway] tls_cert"), (&key, "[gateway] tls_key")] {
                    if !path.is_file() {
                        return Err(invalid(
                            name,
                            format!("{} is not a readable file", path.display()),
                        ));
                    }
                }
                Some((cert, key))
            }
            (Some(_), None) => {
                return Err(invalid("[gateway] tls_key", "tls_cert needs tls_key (PEM)"))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "[gateway] tls_cert",
                    "tls_key needs tls_cert (PEM)",
                ))
            }
        };
        let s = raw.store;
        let store_url = env("WECHAT_STORE_URL").or(s.url);
        let memory = store_url.as_deref() == Some("memory");
        let mut file = None;
        let store_url = match store_url.as_deref() {
            None | Some("memory") => None,
            Some(u) if u.starts_with("file:") => {
                let path = u.trim_start_matches("file:");
                if path.is_empty() {
                    return Err(invalid(
                        "[store] url",
                        "file: needs a path, e.g. \"file:/var/lib/wechat-gateway/store.redb\"",
                    ));
                }
                file = Some(PathBuf::from(path));
                None
            }
            Some(u) if u.starts_with("redis+sentinel://") => {
                if crate::coordination::sentinel_url_parses(u) {
                    Some(Secret::new(u))
                } else {
                    return Err(invalid(
                        "[store] url",
                        "a Sentinel URL is redis+sentinel://host:port[,host:port…]/master[/db]",
                    ));
                }
            }
            Some(u) if u.starts_with("redis://") || u.starts_with("rediss://") => {
                if redis_url_parses(u) {
                    Some(Secret::new(u))
                } else {
                    return Err(invalid(
                        "[store] url",
                        "not a valid Redis URL (redis://host:port/db or rediss://…)",
                    ));
                }
            }
            Some(_) => {
                return Err(invalid(
                    "[store] url",
                    "must be \"memory\", \"file:PATH\" or a redis://, rediss:// or redis+sentinel:// URL",
                ))
            }
        };
        let cluster_nodes = s.cluster_nodes.unwrap_or_default();
        if !cluster_nodes.is_empty() && (store_url.is_some() || file.is_some()) {
            return Err(invalid(
                "[store] cluster_nodes",
                "give either url or cluster_nodes, not both",
            ));
        }
        if let Some(bad) = cluster_nodes.iter().find(|n| !redis_url_parses(n)) {
            let shown = bad.split('@').next_back().unwrap_or_default().to_owned();
            return Err(invalid(
                "[store] cluster_nodes",
                format!("{shown:?} is not a redis:// URL"),
            ));
        }
        let key_prefix = s.key_prefix.unwrap_or_else(|| "wechat:".into());
        if key_prefix.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(invalid(
                "[store] key_prefix",
                "visible ASCII only, e.g. \"wechat:\"",
            ));
        }
        let store_timeout_ms = s.timeout_ms.unwrap_or(500);
        if !(1..=60_000).contains(&store_timeout_ms) {
            return Err(invalid("[store] timeout_ms", "between 1 and 60000"));
        }

        let logins_per_minute = raw.limits.logins_per_minute.unwrap_or(60);
        let login_burst = raw.limits.login_burst.unwrap_or(20);
        if login_burst == 0 || login_burst > 100_000 || logins_per_minute > 1_000_000 {
            return Err(invalid(
                "[limits] login_burst",
                "login_burst between 1 and 100000, logins_per_minute at most 1000000 (0: off)",
            ));
        }
        Ok(Config {
            limits: LimitsConfig {
                logins_per_minute,
                login_burst,
            },
            store: StoreConfig {
                url: store_url,
                cluster_nodes: cluster_nodes.into_iter().map(Secret::new).collect(),
                key_prefix,
                timeout: Duration::from_millis(store_timeout_ms),
                file,
                state_dir: s.state_dir,
                memory,
            },
            wechat: WechatConfig {
                appid,
                secret,
                scope,
                open_base,
                api_base,
                timeout: Duration::from_millis(timeout_ms),
                retries,
                mp_base,
                push_token: push_token.map(Secret::new),
                encoding_aes_key: encoding_aes_key.map(Secret::new),
                open,
            },
            gateway: GatewayConfig {
                listen,
                upstream: g.upstream,
                public_url,
                prefix,
                cookie_secrets,
                public_paths,
                userinfo_paths,
                session_lifetime: Duration::from_secs(lifetime),
                session_idle,
                logout_redirect,
                session_cookie_name,
                allow_snapshot_users: g.allow_snapshot_users.unwrap_or(false),
                language,
                desktop_login,
                scene_confirm,
                push_path,
                metrics_listen: g.metrics_listen,
                trusted_proxies,
                log_openid_hashed,
                header_timeout,
                tls,
            },
        })
    }
}

/// The environment variable that overrides a key, if any.
fn env_override_of(key: &str) -> Option<&'static str> {
    Some(match key {
        "[wechat] appid" => "WECHAT_APPID",
        "[wechat] secret" => "WECHAT_APP_SECRET",
        "[wechat] push_token" => "WECHAT_PUSH_TOKEN",
        "[wechat] encoding_aes_key" => "WECHAT_ENCODING_AES_KEY",
        "[wechat.open] appid" => "WECHAT_OPEN_APPID",
        "[wechat.open] secret" => "WECHAT_OPEN_SECRET",
        "[gateway] cookie_secret" | "[gateway] cookie_secrets" => "WECHAT_COOKIE_SECRET",
        "[store] url" => "WECHAT_STORE_URL",
        _ => return None,
    })
}

/// Sets a problem key aside for [`Config::check`]: a valid stand-in for a
/// required key, else removed (its default applies). `false` when nothing
/// could be changed.
fn repair_key(doc: &mut toml::Table, key: &str) -> bool {
    use toml::Value;
    let Some((table, name)) = key.strip_prefix('[').and_then(|k| k.split_once("] ")) else {
        return false;
    };
    let path: Vec<&str> = table.split('.').collect();
    let stand_in = |v: &str| Value::String(v.to_owned());
    let set = |doc: &mut toml::Table, path: &[&str], name: &str, value: Value| {
        let mut t = doc;
        for part in path {
            let slot = t
                .entry(part.to_string())
                .or_insert_with(|| Value::Table(toml::Table::new()));
            if !slot.is_table() {
                *slot = Value::Table(toml::Table::new());
            }
            t = slot.as_table_mut().expect("made a table");
        }
        t.insert(name.to_owned(), value);
    };
    let secret = "c".repeat(MIN_COOKIE_SECRET_BYTES);
    match (table, name) {
        ("wechat", "appid") => set(doc, &path, name, stand_in("wx0000000000000000")),
        ("wechat", "secret") => {
            remove_key(doc, "wechat", "secret_file");
            set(doc, &["wechat"], "secret", stand_in("stand-in-secret"));
        }
        ("wechat", "push_token") => set(doc, &path, name, stand_in("standintoken")),
        ("wechat", "encoding_aes_key") => set(doc, &path, name, stand_in(&"a".repeat(43))),
        ("wechat.open", _) => {
            remove_key(doc, "wechat.open", "secret_file");
            set(
                doc,
                &["wechat", "open"],
                "appid",
                stand_in("wx0000000000000001"),
            );
            set(
                doc,
                &["wechat", "open"],
                "secret",
                stand_in("stand-in-secret"),
            );
        }
        ("gateway", "public_url") => set(doc, &path, name, stand_in("https://example.invalid")),
        ("gateway", "cookie_secret" | "cookie_secrets") => {
            remove_key(doc, "gateway", "cookie_secret_file");
            remove_key(doc, "gateway", "cookie_secrets");
            set(doc, &["gateway"], "cookie_secret", stand_in(&secret));
        }
        _ => return remove_key(doc, table, name),
    }
    true
}

/// Removes `key` from `[table]` (dotted for nested tables); whether it was there.
fn remove_key(doc: &mut toml::Table, table: &str, key: &str) -> bool {
    let mut t = doc;
    if !table.is_empty() {
        for part in table.split('.') {
            t = match t.get_mut(part) {
                Some(toml::Value::Table(inner)) => inner,
                _ => return false,
            };
        }
    }
    t.remove(key).is_some()
}

/// The `(table, key)` defined at 1-based `line` of rendered TOML.
fn key_at_line(text: &str, line: usize) -> Option<(String, String)> {
    let mut table = String::new();
    for (n, l) in text.lines().enumerate() {
        let l = l.trim();
        if let Some(h) = l.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            table = h.trim().to_owned();
            if n + 1 == line {
                // An unknown table: its name, at the top level.
                let (parent, name) = table.rsplit_once('.').unwrap_or(("", &table));
                return Some((parent.to_owned(), name.to_owned()));
            }
            continue;
        }
        if n + 1 == line {
            let key = l.split('=').next()?.trim().trim_matches('"').to_owned();
            return (!key.is_empty()).then_some((table, key));
        }
    }
    None
}

/// The 1-based line of the original text where `[table] key` is set.
fn line_of_key(text: &str, table: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (n, l) in text.lines().enumerate() {
        let l = l.trim();
        if let Some(h) = l.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            current = h.trim().to_owned();
            let full = if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            };
            if current == full {
                return Some(n + 1);
            }
            continue;
        }
        if current == table && l.split('=').next().map(str::trim) == Some(key) {
            return Some(n + 1);
        }
    }
    None
}

fn redis_url_parses(url: &str) -> bool {
    use redis::IntoConnectionInfo;
    url.into_connection_info().is_ok()
}

/// Picks a secret: the environment, then the `*_file`, then the inline value.
fn secret_value(
    from_env: Option<String>,
    file: Option<PathBuf>,
    inline: Option<String>,
    key: &'static str,
    how: &str,
) -> Result<Secret, ConfigError> {
    if let Some(v) = from_env {
        return Ok(Secret::new(v));
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Read {
            path: path.clone(),
            reason: format!("{e} (the file named by {key}_file)"),
        })?;
        let text = text.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            return Err(invalid(
                key,
                format!("the file {} is empty", path.display()),
            ));
        }
        return Ok(Secret::new(text));
    }
    match inline {
        Some(v) if !v.is_empty() => Ok(Secret::new(v)),
        _ => Err(invalid(key, format!("missing ({how})"))),
    }
}

fn check_appid(key: &'static str, appid: &str) -> Result<(), ConfigError> {
    let ok = !appid.is_empty()
        && appid.len() <= 64
        && appid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            "must be 1 to 64 letters, digits or '_' (e.g. wx1234567890abcdef)",
        ))
    }
}

fn path_list(key: &'static str, paths: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    let paths = paths.unwrap_or_default();
    match paths.iter().find(|p| !p.starts_with('/')) {
        Some(bad) => Err(invalid(
            key,
            format!("every entry must start with '/', got {bad:?}"),
        )),
        None => Ok(paths),
    }
}

fn base_url(key: &'static str, value: Option<String>, default: &str) -> Result<Url, ConfigError> {
    let text = value.unwrap_or_else(|| default.to_owned());
    let url = Url::parse(text.trim_end_matches('/'))
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .filter(|u| u.query().is_none() && u.fragment().is_none())
        .ok_or_else(|| invalid(key, format!("must be an http(s) URL, e.g. \"{default}\"")))?;
    Ok(url)
}

fn validate_host_port(value: &str) -> Result<(), &'static str> {
    let (host, port) = value.rsplit_once(':').ok_or("must be host:port")?;
    if host.is_empty() || host.contains('/') {
        return Err("must be host:port");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err("the port must be 1 to 65535"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_reports_every_problem_of_a_broken_config_each_naming_its_key() {
        let broken = r#"
[wechat]
scope = "snsapi_everything"
timeout_ms = 0
open_base = "ftp://open.example"

[gateway]
public_url = "not a url"
cookie_secret = "short"
prefix = "no-slash"
language = "fr"
desktop_login = "maybe"
listn = "0.0.0.0:80"

[store]
url = "mysql://db"
timeout_ms = 0
"#;
        let problems: Vec<String> = Config::check(broken, |_| None)
            .iter()
            .map(ToString::to_string)
            .collect();
        for key in [
            "[wechat] appid",
            "[wechat] secret",
            "[wechat] scope",
            "[wechat] timeout_ms",
            "[wechat] open_base",
            "[gateway] public_url",
            "[gateway] cookie_secret",
            "[gateway] prefix",
            "[gateway] language",
            "[gateway] desktop_login",
            "[store] url",
            "[store] timeout_ms",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(key)),
                "{key} not reported:\n{}",
                problems.join("\n")
            );
        }
        assert!(
            problems
                .iter()
                .any(|p| p.contains("line 13") && p.contains("listn")),
            "the unknown key, at its line:\n{}",
            problems.join("\n")
        );
        assert_eq!(problems.len(), 13, "{}", problems.join("\n"));
        // A good config has none; a bad environment override is reported.
        let good = "[wechat]\nappid = \"wx1234567890abcdef\"\nsecret = \"s\"\n[gateway]\npublic_url = \"https://a.example\"\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\n";
        assert!(Config::check(good, |_| None).is_empty());
        let env = |k: &str| (k == "WECHAT_COOKIE_SECRET").then(|| "short".to_owned());
        let problems = Config::check(good, env);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].to_string().contains("[gateway] cookie_secret"));
        // Malformed TOML: one line, where it is.
        let problems = Config::check("[wechat\nappid = 1", |_| None);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].to_string().starts_with("config line 1"));
    }

    const GOOD: &str = r#"
[wechat]
appid = "wx1234567890abcdef"
secret = "app-secret-value"
scope = "snsapi_userinfo"

[gateway]
listen = "127.0.0.1:8080"
upstream = "127.0.0.1:3000"
public_url = "https://app.example.com"
cookie_secret = "0123456789abcdef0123456789abcdef"
public_paths = ["/static/"]
"#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn err(text: &str) -> String {
        Config::from_toml(text, no_env).unwrap_err().to_string()
    }

    #[test]
    fn a_good_file_loads_with_defaults() {
        let c = Config::from_toml(GOOD, no_env).unwrap();
        assert_eq!(c.wechat.scope, Scope::Userinfo);
        assert_eq!(c.wechat.open_base.as_str(), "https://open.weixin.qq.com/");
        assert_eq!(c.gateway.prefix, "/_wechat");
        assert_eq!(
            c.gateway.callback_url(),
            "https://app.example.com/_wechat/callback"
        );
        assert!(c.gateway.secure_cookies());
        assert!(!format!("{c:?}").contains("app-secret-value"));
        assert!(!format!("{c:?}").contains("0123456789abcdef0123"));
    }

    #[test]
    fn environment_wins_over_the_file() {
        let c = Config::from_toml(GOOD, |k| match k {
            "WECHAT_APP_SECRET" => Some("from-env".into()),
            "WECHAT_APPID" => Some("wxfromenv".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.wechat.secret.expose(), "from-env");
        assert_eq!(c.wechat.appid, "wxfromenv");
    }

    #[test]
    fn each_problem_names_its_key() {
        assert!(err(&GOOD.replace("appid = \"wx1234567890abcdef\"", "")).contains("[wechat] appid"));
        assert!(err(&GOOD.replace("secret = \"app-secret-value\"", "")).contains("[wechat] secret"));
        let short = GOOD.replace("0123456789abcdef0123456789abcdef", "short");
        let e = err(&short);
        assert!(
            e.contains("[gateway] cookie_secret") && e.contains("32"),
            "{e}"
        );
        assert!(!e.contains("short"));
        assert!(
            err(&GOOD.replace("https://app.example.com", "app.example.com"))
                .contains("[gateway] public_url")
        );
        assert!(err(&GOOD.replace("snsapi_userinfo", "snsapi_all")).contains("[wechat] scope"));
        assert!(err(&GOOD.replace("127.0.0.1:3000", "nowhere")).contains("[gateway] upstream"));
        let e = err(&GOOD.replace("listen =", "listn ="));
        assert!(e.contains("line 8") && e.contains("listn"), "{e}");
        assert_eq!(e.lines().count(), 1);
    }

    #[test]
    fn cookie_secrets_rotate_with_the_environment_first() {
        let old = "old-key-0123456789abcdef0123456789";
        let text = GOOD.replace(
            "cookie_secret = \"0123456789abcdef0123456789abcdef\"",
            &format!("cookie_secrets = [\"new-key-0123456789abcdef0123456789\", \"{old}\"]"),
        );
        let c = Config::from_toml(&text, no_env).unwrap();
        let keys: Vec<&str> = c
            .gateway
            .cookie_secrets
            .iter()
            .map(|s| s.expose())
            .collect();
        assert_eq!(keys, ["new-key-0123456789abcdef0123456789", old]);
        let c = Config::from_toml(&text, |k| {
            (k == "WECHAT_COOKIE_SECRET").then(|| "env-key-0123456789abcdef0123456789".into())
        })
        .unwrap();
        assert_eq!(c.gateway.cookie_secrets.len(), 3);
        assert_eq!(
            c.gateway.cookie_secrets[0].expose(),
            "env-key-0123456789abcdef0123456789"
        );
        let short = text.replace(old, "short");
        assert!(err(&short).contains("[gateway] cookie_secrets"));
    }

    #[test]
    fn session_and_page_settings() {
        let c = Config::from_toml(GOOD, no_env).unwrap();
        assert_eq!(c.gateway.session_idle, None);
        assert_eq!(c.gateway.language, Language::Auto);
        assert!(!c.gateway.allow_snapshot_users);
        let text = format!("{GOOD}session_idle_secs = 600\nlanguage = \"en\"\nuserinfo_paths = [\"/profile/\"]\nlogout_redirect = \"/bye\"\n");
        let c = Config::from_toml(&text, no_env).unwrap();
        assert_eq!(c.gateway.session_idle, Some(Duration::from_secs(600)));
        assert_eq!(c.gateway.language, Language::En);
        assert_eq!(c.gateway.userinfo_paths, ["/profile/"]);
        assert_eq!(c.gateway.logout_redirect, "/bye");
        assert!(err(&format!("{GOOD}session_idle_secs = 5\n")).contains("session_idle_secs"));
        assert!(err(&format!("{GOOD}language = \"fr\"\n")).contains("[gateway] language"));
        assert!(err(&format!("{GOOD}logout_redirect = \"//evil\"\n")).contains("logout_redirect"));
        assert!(err(&format!("{GOOD}userinfo_paths = [\"profile\"]\n")).contains("userinfo_paths"));
    }

    #[test]
    fn desktop_login_settings() {
        let c = Config::from_toml(GOOD, no_env).unwrap();
        assert_eq!(c.gateway.desktop_login, DesktopLogin::Notice);
        assert_eq!(c.gateway.push_path, "/_wechat/events");
        assert_eq!(c.wechat.mp_base.as_str(), "https://mp.weixin.qq.com/");
        let qr = format!("{GOOD}desktop_login = \"scene_qr\"\n");
        assert!(err(&qr).contains("[wechat] push_token"));
        let with_open = GOOD.replace(
            "[gateway]",
            "push_token = \"Tok3n\"\nencoding_aes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\n\n[wechat.open]\nappid = \"wxopen\"\nsecret = \"open-secret\"\n\n[gateway]",
        );
        let c = Config::from_toml(
            &format!("{with_open}desktop_login = \"qrconnect\"\n"),
            no_env,
        )
        .unwrap();
        assert_eq!(c.gateway.desktop_login, DesktopLogin::Qrconnect);
        assert_eq!(c.wechat.open.as_ref().unwrap().appid, "wxopen");
        assert!(!format!("{c:?}").contains("open-secret") && !format!("{c:?}").contains("Tok3n"));
        assert!(
            err(&format!("{GOOD}desktop_login = \"qrconnect\"\n")).contains("[wechat.open] appid")
        );
        assert!(err(&with_open.replace("ABCDEFG", "ABC")).contains("encoding_aes_key"));
        assert!(err(&format!("{GOOD}desktop_login = \"sms\"\n")).contains("desktop_login"));
    }

    #[test]
    fn secret_file_is_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("wechat-oauth-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, "file-secret\n").unwrap();
        let text = GOOD.replace(
            "secret = \"app-secret-value\"",
            &format!("secret_file = {:?}", path.display().to_string()),
        );
        let c = Config::from_toml(&text, no_env).unwrap();
        assert_eq!(c.wechat.secret.expose(), "file-secret");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
