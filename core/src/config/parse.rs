//! Reading a configuration: the TOML file's shape (every key optional, no
//! unknown one), the environment's overrides and secret files, and the
//! checks that name the key of every problem.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::*;
use crate::authorize::Scope;
use crate::secret::Secret;

use super::keys::*;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    wechat: RawWechat,
    wecom: Option<RawWecom>,
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    route: Vec<super::routes::RawRoute>,
    #[serde(default)]
    upstreams: std::collections::BTreeMap<String, super::upstreams::RawUpstream>,
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
    force_popup: Option<bool>,
    connect_redirect: Option<bool>,
    userinfo_lang: Option<String>,
    token_source: Option<String>,
    push_forward: Option<String>,
    push_forward_own: Option<bool>,
    push_forward_timeout_ms: Option<u64>,
    token_url: Option<String>,
    token_redis_url: Option<String>,
    token_redis_key: Option<String>,
    open: Option<RawOpen>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWecom {
    corpid: Option<String>,
    agentid: Option<toml::Value>,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    scope: Option<String>,
    open_base: Option<String>,
    api_base: Option<String>,
    login_base: Option<String>,
    allow_non_members: Option<bool>,
}

/// `[wecom]`, when it is set (or `WECOM_CORPID` is).
fn wecom(
    raw: Option<RawWecom>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<WecomConfig>, ConfigError> {
    let raw = match raw {
        None if env("WECOM_CORPID").is_none() => return Ok(None),
        raw => raw.unwrap_or_default(),
    };
    let corpid = env("WECOM_CORPID")
        .or(raw.corpid)
        .ok_or_else(|| invalid("[wecom] corpid", "missing (set it, or env WECOM_CORPID)"))?;
    check_appid("[wecom] corpid", &corpid)?;
    let agentid = match (env("WECOM_AGENTID"), raw.agentid) {
        (Some(a), _) => a,
        (None, Some(toml::Value::Integer(n))) => n.to_string(),
        (None, Some(toml::Value::String(s))) => s,
        (None, Some(_)) => return Err(invalid("[wecom] agentid", "the app's AgentId, digits")),
        (None, None) => {
            return Err(invalid(
                "[wecom] agentid",
                "missing (the app's AgentId; or env WECOM_AGENTID)",
            ))
        }
    };
    if agentid.is_empty() || agentid.len() > 20 || !agentid.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("[wecom] agentid", "the app's AgentId, digits"));
    }
    let secret = secret_value(
        env("WECOM_SECRET"),
        raw.secret_file,
        raw.secret,
        "[wecom] secret",
        "set secret, secret_file, or env WECOM_SECRET",
    )?;
    let scope = match raw.scope.as_deref().unwrap_or("snsapi_base") {
        "snsapi_base" => WecomScope::Base,
        "snsapi_privateinfo" => WecomScope::PrivateInfo,
        _ => {
            return Err(invalid(
                "[wecom] scope",
                "must be \"snsapi_base\" or \"snsapi_privateinfo\"",
            ))
        }
    };
    Ok(Some(WecomConfig {
        corpid,
        agentid,
        secret,
        scope,
        open_base: base_url("[wecom] open_base", raw.open_base, DEFAULT_OPEN_BASE)?,
        api_base: base_url("[wecom] api_base", raw.api_base, DEFAULT_WECOM_API_BASE)?,
        login_base: base_url(
            "[wecom] login_base",
            raw.login_base,
            DEFAULT_WECOM_LOGIN_BASE,
        )?,
        allow_non_members: raw.allow_non_members.unwrap_or(false),
    }))
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
    followers_cache_secs: Option<u64>,
    logout_redirect: Option<String>,
    cookie_name: Option<String>,
    allow_snapshot_users: Option<bool>,
    require_unionid: Option<bool>,
    language: Option<String>,
    desktop_login: Option<String>,
    scene_confirm: Option<bool>,
    push_path: Option<String>,
    metrics_listen: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    log_openid: Option<String>,
    header_timeout_secs: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    threads: Option<u64>,
    access_log: Option<String>,
    upgrade_sock: Option<PathBuf>,
    site_name: Option<String>,
    logo_url: Option<String>,
    templates_dir: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    verify_files: Option<super::routes::RawVerifyFiles>,
}

/// The file at `path` with the keys of the environment's
/// `WECHAT_GATEWAY__…` variables and then of `overrides` set in it.
fn read_with_env(
    path: &Path,
    overrides: impl IntoIterator<Item = (String, String)>,
) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    with_env_keys(&text, std::env::vars().chain(overrides))
}

impl Config {
    /// Loads a TOML file, with overrides from the process environment.
    ///
    /// Errors: [`ConfigError::Read`] when the file can't be read, else as
    /// [`Config::from_toml`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with(path, std::iter::empty())
    }

    /// [`Config::load`], with every key also settable from the environment
    /// (`WECHAT_GATEWAY__<TABLE>__<KEY>`, see [`ENV_PREFIX`]) and then from
    /// `overrides` (the same names: a host's command-line flags), which win.
    ///
    /// Errors: as [`Config::load`], and [`ConfigError::Invalid`] for a
    /// variable that names no key.
    pub fn load_with(
        path: &Path,
        overrides: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = read_with_env(path, overrides)?;
        Self::from_toml(&text, |name| std::env::var(name).ok())
    }

    /// The sites of the file at `path` when it has `[[site]]` tables
    /// ([`Config::sites_from_toml`]), else `None`; the environment and
    /// `overrides` as for [`Config::load_with`].
    ///
    /// Errors: as [`Config::load_with`] and [`Config::sites_from_toml`].
    pub fn load_sites_with(
        path: &Path,
        overrides: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Option<Vec<SiteConfig>>, ConfigError> {
        let text = read_with_env(path, overrides)?;
        Self::sites_from_toml(&text, |name| std::env::var(name).ok())
    }

    /// The configuration a host that serves one site reads from the file
    /// at `path`: with `[[site]]` tables, the site named `site` (a C ABI
    /// host names it in `WECHAT_OAUTH_SITE`); without, the file as
    /// [`Config::load`] reads it.
    ///
    /// Errors: as [`Config::load`]; [`ConfigError::Site`] when the file has
    /// sites and `site` is none of them (or not given), or `site` is given
    /// and the file has none.
    pub fn load_site(path: &Path, site: Option<&str>) -> Result<Config, ConfigError> {
        let text = read_with_env(path, std::iter::empty())?;
        Self::site_from_toml(&text, site, |name| std::env::var(name).ok())
    }

    /// [`Config::load_site`] for TOML text; `env` as for [`Config::from_toml`].
    ///
    /// Errors: as [`Config::load_site`].
    pub fn site_from_toml(
        text: &str,
        site: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let site = site.filter(|s| !s.is_empty());
        match (Self::sites_from_toml(text, &env)?, site) {
            (None, None) => Self::from_toml(text, env),
            (None, Some(name)) => Err(ConfigError::Site {
                site: name.to_owned(),
                problem: "the file has no [[site]] tables: name no site".into(),
            }),
            (Some(sites), name) => {
                let names: Vec<&str> = sites.iter().map(|s| s.name.as_str()).collect();
                let problem = format!(
                    "name the site this host serves (WECHAT_OAUTH_SITE): one of {}",
                    names.join(", ")
                );
                let wanted = name.unwrap_or("");
                sites
                    .into_iter()
                    .find(|s| s.name == wanted)
                    .map(|s| s.config)
                    .ok_or(ConfigError::Site {
                        site: wanted.to_owned(),
                        problem,
                    })
            }
        }
    }

    /// `text` with the `WECHAT_GATEWAY__…` keys of the environment and of
    /// `overrides` set in it, as [`Config::load_with`] reads it (for a
    /// host's `--check-config`).
    ///
    /// Errors: [`ConfigError::Invalid`] for a variable that names no key.
    pub fn with_environment(
        text: &str,
        overrides: impl IntoIterator<Item = (String, String)>,
    ) -> Result<String, ConfigError> {
        with_env_keys(text, std::env::vars().chain(overrides))
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
                    message: with_suggestion(e.message().trim()),
                }];
            }
        };
        if doc.contains_key("site") {
            // Several sites: the first problem, naming its site.
            return Config::sites_from_toml(text, env)
                .err()
                .into_iter()
                .collect();
        }
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
                ConfigError::Read { .. } | ConfigError::Site { .. } => false,
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
            message: with_suggestion(e.message().trim()),
        })?;
        let env = |name: &str| env(name).filter(|v| !v.is_empty());

        let w = raw.wechat;
        let wecom = wecom(raw.wecom, &env)?;
        let appid = env("WECHAT_APPID").or(w.appid.clone());
        // A WeCom-only site: no Official Account, no login through WeChat.
        let wecom_only = appid.is_none() && wecom.is_some();
        let appid = match appid {
            Some(appid) => appid,
            None if wecom_only => String::new(),
            None => {
                return Err(invalid(
                    "[wechat] appid",
                    "missing (set it, or env WECHAT_APPID; or log in through [wecom] only)",
                ))
            }
        };
        if !wecom_only {
            check_appid("[wechat] appid", &appid)?;
        }
        let secret = if wecom_only {
            Secret::new(String::new())
        } else {
            secret_value(
                env("WECHAT_APP_SECRET"),
                w.secret_file,
                w.secret,
                "[wechat] secret",
                "set secret, secret_file, or env WECHAT_APP_SECRET",
            )?
        };
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

        let userinfo_lang = match w.userinfo_lang.as_deref() {
            None => UserinfoLang::ZhCn,
            Some(lang) => UserinfoLang::parse(lang).ok_or_else(|| {
                invalid(
                    "[wechat] userinfo_lang",
                    "must be \"zh_CN\", \"zh_TW\" or \"en\"",
                )
            })?,
        };
        let token_redis_url = env("WECHAT_TOKEN_REDIS_URL").or(w.token_redis_url);
        let token_source = match w.token_source.as_deref().unwrap_or("wechat") {
            "wechat" => TokenSource::Wechat,
            "url" => {
                let text = w.token_url.ok_or_else(|| {
                    invalid(
                        "[wechat] token_url",
                        "token_source = \"url\" needs token_url, e.g. \"http://127.0.0.1:9000/token\"",
                    )
                })?;
                let url = Url::parse(&text)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                    .ok_or_else(|| invalid("[wechat] token_url", "must be an http(s) URL"))?;
                TokenSource::Url(url)
            }
            "redis" => {
                let url = token_redis_url.ok_or_else(|| {
                    invalid(
                        "[wechat] token_redis_url",
                        "token_source = \"redis\" needs token_redis_url (env WECHAT_TOKEN_REDIS_URL), e.g. \"redis://127.0.0.1:6379/\"",
                    )
                })?;
                if redis::Client::open(url.as_str()).is_err() {
                    return Err(invalid("[wechat] token_redis_url", "not a redis:// URL"));
                }
                let key = w
                    .token_redis_key
                    .unwrap_or_else(|| "wechat:access_token".into());
                if key.is_empty() || key.len() > 256 {
                    return Err(invalid(
                        "[wechat] token_redis_key",
                        "a key of 1 to 256 bytes",
                    ));
                }
                TokenSource::Redis {
                    url: Secret::new(url),
                    key,
                }
            }
            other => {
                return Err(invalid(
                    "[wechat] token_source",
                    format!("{other:?}: use \"wechat\", \"url\" or \"redis\""),
                ))
            }
        };
        let push_forward = match w.push_forward {
            None => None,
            Some(text) => Some(
                Url::parse(&text)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                    .filter(|u| u.query().is_none() && u.fragment().is_none())
                    .ok_or_else(|| {
                        invalid(
                            "[wechat] push_forward",
                            "an http(s) URL without a query, e.g. \"http://127.0.0.1:3000/wechat\"",
                        )
                    })?,
            ),
        };
        let push_forward_timeout_ms = w.push_forward_timeout_ms.unwrap_or(4000);
        if !(100..=4500).contains(&push_forward_timeout_ms) {
            return Err(invalid(
                "[wechat] push_forward_timeout_ms",
                "100 to 4500 (milliseconds): WeChat waits 5 s for the answer",
            ));
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

        let routes = super::routes::routes(raw.route)?;
        let upstreams = super::upstreams::upstreams(raw.upstreams, &routes)?;
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
        let verify_files = super::routes::verify_files(g.verify_files)?;
        let followers_cache = match g.followers_cache_secs.unwrap_or(600) {
            secs @ 1..=86_400 => Duration::from_secs(secs),
            _ => {
                return Err(invalid(
                    "[gateway] followers_cache_secs",
                    "1 to 86400 seconds",
                ))
            }
        };
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

        let default_desktop = if wecom.is_some() {
            "wecom_qr"
        } else {
            "notice"
        };
        let desktop_login = match g.desktop_login.as_deref().unwrap_or(default_desktop) {
            "notice" => DesktopLogin::Notice,
            "qrconnect" => DesktopLogin::Qrconnect,
            "scene_qr" => DesktopLogin::SceneQr,
            "wecom_qr" => DesktopLogin::WecomQr,
            _ => {
                return Err(invalid(
                    "[gateway] desktop_login",
                    "must be \"notice\", \"qrconnect\", \"scene_qr\" or \"wecom_qr\"",
                ))
            }
        };
        if desktop_login == DesktopLogin::WecomQr && wecom.is_none() {
            return Err(invalid(
                "[gateway] desktop_login",
                "desktop_login = \"wecom_qr\" needs the WeCom app ([wecom] corpid, agentid and secret)",
            ));
        }
        if wecom_only && !matches!(desktop_login, DesktopLogin::WecomQr | DesktopLogin::Notice) {
            return Err(invalid(
                "[gateway] desktop_login",
                "a WeCom-only site (no [wechat] appid) logs desktops in by \"wecom_qr\"",
            ));
        }
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
        let threads = match g.threads {
            None => None,
            Some(n @ 1..=1024) => Some(n as usize),
            Some(_) => return Err(invalid("[gateway] threads", "must be 1 to 1024")),
        };
        let shutdown_grace = match g.shutdown_grace_secs.unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECS) {
            secs @ 0..=600 => Duration::from_secs(secs),
            _ => {
                return Err(invalid(
                    "[gateway] shutdown_grace_secs",
                    "must be at most 600 (seconds)",
                ))
            }
        };
        let access_log = match g.access_log.as_deref() {
            None | Some("stderr") => AccessLog::Stderr,
            Some("off") => AccessLog::Off,
            Some("") => {
                return Err(invalid(
                    "[gateway] access_log",
                    "\"stderr\", \"off\" or a file path",
                ))
            }
            Some(path) => AccessLog::File(PathBuf::from(path)),
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
            site: None,
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
                force_popup: w.force_popup.unwrap_or(false),
                connect_redirect: w.connect_redirect.unwrap_or(true),
                userinfo_lang,
                token_source,
                push_forward,
                push_forward_own: w.push_forward_own.unwrap_or(false),
                push_forward_timeout: Duration::from_millis(push_forward_timeout_ms),
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
                require_unionid: g.require_unionid.unwrap_or(false),
                language,
                desktop_login,
                scene_confirm,
                push_path,
                metrics_listen: g.metrics_listen,
                trusted_proxies,
                log_openid_hashed,
                header_timeout,
                shutdown_grace,
                threads,
                access_log,
                site_name: g.site_name.filter(|n| !n.is_empty()),
                logo_url: g.logo_url.filter(|u| !u.is_empty()),
                templates_dir: g.templates_dir,
                upgrade_sock: g
                    .upgrade_sock
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_UPGRADE_SOCK)),
                tls,
                verify_files,
                followers_cache,
            },
            wecom,
            routes,
            upstreams,
        })
    }
}
