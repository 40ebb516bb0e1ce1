//! The configuration shared by the gateway and every host: a TOML file with
//! `[wechat]` and `[gateway]` tables, secrets overridable from the
//! environment (README.md "Configuration" lists every key).
//!
//! Every problem is reported as one [`ConfigError`] line that names the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::authorize::Scope;
use crate::secret::Secret;

mod keys;
mod parse;
mod routes;
mod sites;
mod upstreams;

pub use keys::ENV_PREFIX;
pub use routes::{AllowList, PathMatch, Policy, Preflight, RouteConfig};
pub use sites::{site_env_var, SiteConfig};
pub use upstreams::UpstreamConfig;

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
    /// A problem of one `[[site]]`: its name and the problem, naming the key.
    #[error("config site {site:?}: {problem}")]
    Site {
        /// The site's `name` (or `#N`, its place, when it has none).
        site: String,
        /// What is wrong, as the single-site message says it.
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
    /// `[wechat]`: the Official Account and WeChat's endpoints. A site with
    /// `[wecom]` may leave it out: its `appid` is then empty
    /// ([`Config::has_wechat`]) and no login goes through WeChat.
    pub wechat: WechatConfig,
    /// `[wecom]`: the WeCom (企业微信) app a company's members log in
    /// through (docs/wecom.md); `None` without one.
    pub wecom: Option<WecomConfig>,
    /// `[gateway]`: where the gate listens, what it protects, its cookies.
    pub gateway: GatewayConfig,
    /// `[store]`: where login state lives (this process, or Redis shared by
    /// several gateways and hosts).
    pub store: StoreConfig,
    /// `[limits]`: abuse limits per client address.
    pub limits: LimitsConfig,
    /// `[[route]]`: paths with their own policy (and, in the gateway,
    /// upstream), in order; the first that matches decides.
    pub routes: Vec<RouteConfig>,
    /// `[upstreams.NAME]`: the gateway's named upstreams, by name (routes
    /// send requests to them; other hosts ignore them).
    pub upstreams: std::collections::BTreeMap<String, UpstreamConfig>,
    /// The `name` of the `[[site]]` this is ([`Config::sites_from_toml`]);
    /// `None` for a file without sites. In the `site` label of the login
    /// metrics and the `site` field of the login log lines.
    pub site: Option<String>,
}

impl Config {
    /// Whether the site logs users in through WeChat (`[wechat]` is set);
    /// `false` for a WeCom-only site.
    pub fn has_wechat(&self) -> bool {
        !self.wechat.appid.is_empty()
    }

    /// The site's name for metrics and logs: [`Config::site`], or
    /// `default` for a file without sites (the gateway's name for it too).
    pub fn site_label(&self) -> &str {
        self.site.as_deref().unwrap_or("default")
    }
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
    /// `force_popup`: every web authorization asks the user to confirm
    /// (`forcePopup=true`, docs/protocol.md §1 step 1), even where WeChat
    /// would authorize silently; a route's `force_popup` overrides it for
    /// logins returning to its paths. Default false.
    pub force_popup: bool,
    /// `connect_redirect`: `connect_redirect=1` on the web authorization URL,
    /// WeChat's remedy for a second callback of one consent (the gate copes
    /// with one either way: one exchange per code). Default true.
    pub connect_redirect: bool,
    /// `userinfo_lang`: the `lang` of `sns/userinfo` and `cgi-bin/user/info`
    /// (the language of country, province and city). Default `zh_CN`.
    pub userinfo_lang: UserinfoLang,
    /// `token_source`: where the basic-support token comes from.
    pub token_source: TokenSource,
    /// `push_forward`: the application's own handler of the account's
    /// pushes (the account has one server URL): every push the gate does
    /// not consume goes there with its query and body as WeChat sent them,
    /// and the application's answer goes back to WeChat.
    pub push_forward: Option<Url>,
    /// `push_forward_own`: the gate's own scene scans are forwarded too
    /// (so the application's welcome reply still goes out). Default false.
    pub push_forward_own: bool,
    /// `push_forward_timeout_ms`: an application slower than this gets
    /// `success` answered for it (WeChat waits 5 s). Default 4000 ms.
    pub push_forward_timeout: Duration,
    /// `[wechat.open]`: the Open Platform website app, for qrconnect.
    pub open: Option<OpenAppConfig>,
}

/// Where the basic-support token comes from (`[wechat] token_source`,
/// README "The basic-support token").
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// `wechat` (the default): `cgi-bin/stable_token`, shared by the
    /// account's every backend without invalidating theirs.
    Wechat,
    /// `url`: `token_url` answers `{"access_token", "expires_in"}` (a
    /// site's own token service); the gate never asks WeChat for one.
    Url(Url),
    /// `redis`: the token is the value of `token_redis_key` (default
    /// `wechat:access_token`) in the Redis at `token_redis_url` (env
    /// `WECHAT_TOKEN_REDIS_URL`; never printed), its end the key's TTL.
    Redis {
        /// The Redis URL (it may hold a password).
        url: Secret,
        /// The key holding the token.
        key: String,
    },
}

/// The `lang` WeChat answers profiles in (`sns/userinfo`,
/// `cgi-bin/user/info`; docs/protocol.md §1 step 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserinfoLang {
    /// `zh_CN`: simplified Chinese (WeChat's default).
    ZhCn,
    /// `zh_TW`: traditional Chinese.
    ZhTw,
    /// `en`: English.
    En,
}

impl UserinfoLang {
    /// The wire value: `zh_CN`, `zh_TW` or `en`.
    pub fn as_str(self) -> &'static str {
        match self {
            UserinfoLang::ZhCn => "zh_CN",
            UserinfoLang::ZhTw => "zh_TW",
            UserinfoLang::En => "en",
        }
    }

    /// Parses a wire value (exactly as WeChat spells it); `None` otherwise.
    pub fn parse(lang: &str) -> Option<UserinfoLang> {
        match lang {
            "zh_CN" => Some(UserinfoLang::ZhCn),
            "zh_TW" => Some(UserinfoLang::ZhTw),
            "en" => Some(UserinfoLang::En),
            _ => None,
        }
    }
}

/// `[wechat.open]`: an Open Platform *website application* (docs/protocol.md §2).
#[derive(Debug, Clone)]
pub struct OpenAppConfig {
    /// `appid` (env `WECHAT_OPEN_APPID`).
    pub appid: String,
    /// `secret` (env `WECHAT_OPEN_SECRET`, or `secret_file`). Never printed.
    pub secret: Secret,
}

/// `[wecom]`: a WeCom self-built app (自建应用) whose members log in
/// (docs/wecom.md). Timeouts and retries are `[wechat]`'s `timeout_ms`
/// and `retries`.
#[derive(Debug, Clone)]
pub struct WecomConfig {
    /// `corpid` (env `WECOM_CORPID`): the company's id, `ww…` or `wx…`.
    pub corpid: String,
    /// `agentid` (env `WECOM_AGENTID`): the app's id, digits.
    pub agentid: String,
    /// `secret` (env `WECOM_SECRET`, or `secret_file`): the app's secret.
    /// Never printed.
    pub secret: Secret,
    /// `scope`: `snsapi_base` (default, silent) or `snsapi_privateinfo`
    /// (the member confirms; their details come too).
    pub scope: WecomScope,
    /// `open_base`: the in-app browser's authorize host, default
    /// [`DEFAULT_OPEN_BASE`].
    pub open_base: Url,
    /// `api_base`: WeCom's API host, default [`DEFAULT_WECOM_API_BASE`].
    pub api_base: Url,
    /// `login_base`: the web QR login host, default
    /// [`DEFAULT_WECOM_LOGIN_BASE`].
    pub login_base: Url,
    /// `allow_non_members`: let in a WeCom user who is not a member of the
    /// company (WeCom answers an `openid` instead of a `userid`). Default
    /// false: such a user gets a page saying the site is for members.
    pub allow_non_members: bool,
}

/// WeCom's default API host.
pub const DEFAULT_WECOM_API_BASE: &str = "https://qyapi.weixin.qq.com";
/// WeCom's default web login (QR) host.
pub const DEFAULT_WECOM_LOGIN_BASE: &str = "https://login.work.weixin.qq.com";

/// The scope of a WeCom login (`[wecom] scope`, docs/wecom.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WecomScope {
    /// `snsapi_base`: silent; the member's `userid`.
    Base,
    /// `snsapi_privateinfo`: the member confirms; also their details
    /// (`cgi-bin/auth/getuserdetail`). In the in-app browser only: the web
    /// QR login is always base.
    PrivateInfo,
}

impl WecomScope {
    /// The scope as WeCom spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            WecomScope::Base => "snsapi_base",
            WecomScope::PrivateInfo => "snsapi_privateinfo",
        }
    }
}

/// The default of `[gateway] header_timeout_secs`, in seconds.
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
/// The default of `[gateway] upgrade_sock`.
pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/wechat-gateway-upgrade.sock";
/// The default of `[gateway] shutdown_grace_secs`, in seconds.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;

/// Where the gateway's access log goes (`[gateway] access_log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    /// Nowhere.
    Off,
    /// Into the process's log (stderr), target `access`.
    Stderr,
    /// JSON lines appended to this file.
    File(PathBuf),
}

/// How desktop browsers log in (`[gateway] desktop_login`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DesktopLogin {
    /// A page asking to open the link in WeChat (the default).
    Notice,
    /// Open Platform QR login (`connect/qrconnect`, `[wechat.open]`).
    Qrconnect,
    /// Official Account scene QR code + signed scan push (`push_token`).
    SceneQr,
    /// WeCom's web QR login (`[wecom]`), scanned with the WeCom app; the
    /// default when `[wecom]` is set.
    WecomQr,
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
    /// `require_unionid`: refuse a login WeChat gives no `unionid` for (a
    /// `403` page on the Open Platform binding), so that every session
    /// carries the one id the account's apps share. Default false.
    pub require_unionid: bool,
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
    /// `site_name`: the site's name, shown at the top of the gate's pages.
    pub site_name: Option<String>,
    /// `logo_url`: the site's logo (an absolute URL or a path), shown
    /// beside its name.
    pub logo_url: Option<String>,
    /// `templates_dir`: a directory whose `page.html` replaces the gate's
    /// page shell ([`crate::pages::PAGE_TEMPLATE`] lists its variables).
    pub templates_dir: Option<PathBuf>,
    /// `upgrade_sock`: where a new gateway binary started with `--upgrade`
    /// takes the listening sockets over from the running one (sent
    /// SIGQUIT), so an upgrade drops no connection. Default
    /// [`DEFAULT_UPGRADE_SOCK`].
    pub upgrade_sock: PathBuf,
    /// `access_log`: one line per request (`"stderr"`, the default: in the
    /// process's log, text or JSON as it is; `"off"`; or a file path: JSON
    /// lines appended there, the file reopened on SIGUSR1 and SIGHUP).
    pub access_log: AccessLog,
    /// `shutdown_grace_secs`: after SIGTERM the gateway stops accepting,
    /// ends long polls with a "poll again" answer, lets requests in flight
    /// finish, and exits as soon as none is left, at the latest after this
    /// many seconds. Default 10, at most 600.
    pub shutdown_grace: Duration,
    /// `threads`: the gateway's worker threads (Pingora's `threads`), 1 to
    /// 1024; `None` (the default): one per CPU core the process may use.
    pub threads: Option<usize>,
    /// `tls_cert` and `tls_key`: PEM files; with both, the gateway serves
    /// HTTPS on `listen` (TLS by Pingora).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `verify_files`: WeChat's domain verification files (`MP_verify_….txt`),
    /// served at `/<name>` without a session; name → content, from an
    /// inline table or a directory.
    pub verify_files: std::collections::BTreeMap<String, String>,
    /// `followers_cache_secs`: how long a user found to follow the
    /// Official Account passes `followers` routes before it is asked again
    /// (default 600 s); one found not to follow is asked again after at
    /// most 10 s, so following then works at once.
    pub followers_cache: Duration,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_can_come_from_the_environment() {
        let text = "[wechat]\nappid = \"wx0123456789abcdef\"\nsecret = \"s\"\n\n[gateway]\npublic_url = \"https://a.example\"\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\nlisten = \"127.0.0.1:1\"\n";
        let vars = [
            ("WECHAT_GATEWAY__GATEWAY__LISTEN", "127.0.0.1:9999"),
            ("WECHAT_GATEWAY__GATEWAY__LANGUAGE", "en"),
            (
                "WECHAT_GATEWAY__GATEWAY__PUBLIC_PATHS",
                r#"["/static/", "/health"]"#,
            ),
            ("WECHAT_GATEWAY__WECHAT__RETRIES", "4"),
            ("WECHAT_GATEWAY__GATEWAY__SCENE_CONFIRM", "false"),
            ("WECHAT_GATEWAY__WECHAT__OPEN__APPID", "wxabcdef0123456789"),
            ("WECHAT_GATEWAY__WECHAT__OPEN__SECRET", r#""123456""#),
            ("UNRELATED", "x"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let merged = keys::with_env_keys(text, vars).unwrap();
        let c = Config::from_toml(&merged, |_| None).unwrap();
        assert_eq!(c.gateway.listen, "127.0.0.1:9999");
        assert_eq!(c.gateway.public_paths, vec!["/static/", "/health"]);
        assert_eq!(c.wechat.retries, 4);
        let open = c.wechat.open.expect("[wechat.open] from the environment");
        assert_eq!(open.appid, "wxabcdef0123456789");
        assert_eq!(
            open.secret.expose(),
            "123456",
            "a quoted value stays a string"
        );
        // A misspelt key is named as the file's would be; a name without a key is refused.
        let typo = [("WECHAT_GATEWAY__GATEWAY__LISTN".to_owned(), "x".to_owned())];
        let merged = keys::with_env_keys(text, typo).unwrap();
        let e = Config::from_toml(&merged, |_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("listn"), "{e}");
        let bare = [("WECHAT_GATEWAY__LISTEN".to_owned(), "x".to_owned())];
        let e = keys::with_env_keys(text, bare).unwrap_err().to_string();
        assert!(e.contains("WECHAT_GATEWAY__LISTEN"), "{e}");
        assert_eq!(keys::with_env_keys(text, []).unwrap(), text);
    }

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

    #[test]
    fn wecom_is_read_checked_and_may_stand_alone() {
        let site = "[gateway]\npublic_url = \"https://ops.example.com\"\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\n";
        let wecom_only = format!(
            "{site}[wecom]\ncorpid = \"ww0123456789abcdef\"\nagentid = 1000002\nsecret = \"s\"\n"
        );
        let c = Config::from_toml(&wecom_only, |_| None).unwrap();
        assert!(!c.has_wechat());
        let w = c.wecom.as_ref().unwrap();
        assert_eq!((w.agentid.as_str(), w.scope), ("1000002", WecomScope::Base));
        assert_eq!(w.api_base.as_str(), "https://qyapi.weixin.qq.com/");
        assert_eq!(c.gateway.desktop_login, DesktopLogin::WecomQr);
        assert!(!format!("{c:?}").contains("secret = \"s\""));
        // The secret from the environment; a WeCom-only site can't use WeChat's desktop logins.
        let env = |k: &str| (k == "WECOM_SECRET").then(|| "from-env".to_owned());
        let no_secret = wecom_only.replace("secret = \"s\"\n", "");
        assert_eq!(
            Config::from_toml(&no_secret, env)
                .unwrap()
                .wecom
                .unwrap()
                .secret
                .expose(),
            "from-env"
        );
        let problems: Vec<String> = Config::check(
            &format!("{site}desktop_login = \"scene_qr\"\n[wecom]\ncorpid = \"no spaces\"\nagentid = \"abc\"\nscope = \"snsapi_userinfo\"\n"),
            |_| None,
        )
        .iter()
        .map(ToString::to_string)
        .collect();
        for key in [
            "[wecom] corpid",
            "[wecom] agentid",
            "[wecom] secret",
            "[wecom] scope",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(key)),
                "{key}:\n{}",
                problems.join("\n")
            );
        }
        // Without [wecom] and without [wechat]: the appid is missing.
        let none = Config::from_toml(site, |_| None).unwrap_err().to_string();
        assert!(none.contains("[wechat] appid"), "{none}");
        let wrong = format!("{site}desktop_login = \"wecom_qr\"\n[wechat]\nappid = \"wx1234567890abcdef\"\nsecret = \"s\"\n");
        assert!(Config::from_toml(&wrong, |_| None)
            .unwrap_err()
            .to_string()
            .contains("[wecom]"));
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
