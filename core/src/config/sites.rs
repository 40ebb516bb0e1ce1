//! Several sites in one gateway (`[[site]]`, README.md "Several sites"):
//! each site's tables are laid over the file's top-level ones, so a site
//! names only what is its own (its `[wechat]` account, `public_url`,
//! upstream, routes, pages, and its own TLS certificate if it has one); the
//! process keys (listeners, logs, `[store]`, `[upstreams]`) stay at the top.

use super::*;

/// One `[[site]]` of a configuration file, ready to run.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// `name`: letters, digits and `-` (at most 32): in logs, metrics, the
    /// store's keys (`[store] key_prefix` + name + `:`) and the
    /// environment variables of its secrets (`WECHAT_SITE_<NAME>_…`).
    pub name: String,
    /// `hosts`: the host names (lowercase, no port) whose requests this
    /// site answers; default: `public_url`'s host.
    pub hosts: Vec<String>,
    /// The site's whole configuration: the top-level tables with the
    /// site's own laid over them. Its `gateway.tls` is the site's own
    /// certificate (`[site.gateway] tls_cert`/`tls_key`), else the
    /// listener's.
    pub config: Config,
    /// The top level's `[gateway] tls_cert`/`tls_key` (the same in every
    /// site): the listener is HTTPS with it, and it is the certificate for
    /// a TLS name that no site with its own certificate has in `hosts`.
    pub listener_tls: Option<(PathBuf, PathBuf)>,
}

/// The `[gateway]` keys of the process, not of one site.
const PROCESS_KEYS: &[&str] = &[
    "listen",
    "metrics_listen",
    "trusted_proxies",
    "log_openid",
    "header_timeout_secs",
    "shutdown_grace_secs",
    "threads",
    "access_log",
    "upgrade_sock",
];

/// The environment variables of an account's secrets: in a site they are
/// read as `WECHAT_SITE_<NAME>_<REST>`, never shared between sites.
const ACCOUNT_VARS: &[&str] = &[
    "WECHAT_APPID",
    "WECHAT_APP_SECRET",
    "WECHAT_OPEN_APPID",
    "WECHAT_OPEN_SECRET",
    "WECHAT_PUSH_TOKEN",
    "WECHAT_ENCODING_AES_KEY",
];

const COOKIE_SECRET_VAR: &str = "WECHAT_COOKIE_SECRET";

fn site_error(site: &str, problem: impl std::fmt::Display) -> ConfigError {
    ConfigError::Site {
        site: site.to_owned(),
        problem: problem.to_string(),
    }
}

/// The name a site's copy of the environment variable `var` has: site
/// `shop-a`, `WECHAT_APP_SECRET` → `WECHAT_SITE_SHOP_A_APP_SECRET`.
pub fn site_env_var(site: &str, var: &str) -> String {
    let rest = var.strip_prefix("WECHAT_").unwrap_or(var);
    format!(
        "WECHAT_SITE_{}_{rest}",
        site.to_ascii_uppercase().replace('-', "_")
    )
}

/// `over`'s keys set in `base`, tables merged key by key.
fn lay_over(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(value)) => lay_over(inner, value),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

impl Config {
    /// The sites of a configuration with `[[site]]` tables, in file order;
    /// `None` when it has none (then [`Config::from_toml`] reads it).
    /// `env` as for [`Config::from_toml`], except that a site's account
    /// secrets come only from its own variables ([`site_env_var`]), and a
    /// site without cookie keys of its own gets keys derived from the
    /// top-level ones and its name (a cookie of one site never opens on
    /// another).
    ///
    /// Errors: [`ConfigError::Syntax`] for malformed TOML,
    /// [`ConfigError::Site`] naming the site and the key of its problem
    /// (a process key inside a site, a name or host used twice, any of
    /// [`Config::from_toml`]'s problems).
    pub fn sites_from_toml(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Vec<SiteConfig>>, ConfigError> {
        let mut doc: toml::Table = match text.parse() {
            Ok(doc) => doc,
            // The single-site parse reports it, with its line.
            Err(_) => return Config::from_toml(text, env).map(|_| None),
        };
        let Some(sites) = doc.remove("site") else {
            return Ok(None);
        };
        let toml::Value::Array(sites) = sites else {
            return Err(site_error("?", "write each site as a [[site]] table"));
        };
        if sites.is_empty() {
            return Err(site_error("?", "[[site]] lists no site"));
        }
        let base_prefix = doc
            .get("store")
            .and_then(|s| s.get("key_prefix"))
            .and_then(|p| p.as_str())
            .unwrap_or("wechat:")
            .to_owned();
        let top_gateway = doc.get("gateway").and_then(|g| g.as_table());
        let top_path = |key: &str| {
            top_gateway
                .and_then(|g| g.get(key))
                .and_then(|v| v.as_str())
                .map(PathBuf::from)
        };
        let listener_tls = top_path("tls_cert").zip(top_path("tls_key"));
        let mut out: Vec<SiteConfig> = Vec::new();
        for (index, site) in sites.into_iter().enumerate() {
            let toml::Value::Table(mut site) = site else {
                return Err(site_error("?", "write each site as a [[site]] table"));
            };
            let name = match site.remove("name") {
                Some(toml::Value::String(name)) => name,
                _ => {
                    return Err(site_error(
                        &format!("#{}", index + 1),
                        "name: missing (letters, digits and '-')",
                    ))
                }
            };
            let name_ok = !name.is_empty()
                && name.len() <= 32
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !name_ok {
                return Err(site_error(
                    &name,
                    "name: letters, digits and '-', at most 32",
                ));
            }
            if out.iter().any(|s| s.name.eq_ignore_ascii_case(&name)) {
                return Err(site_error(&name, "name: two sites have this name"));
            }
            let hosts = match site.remove("hosts") {
                None => None,
                Some(toml::Value::Array(hosts)) => {
                    let mut names = Vec::new();
                    for host in hosts {
                        let host = host
                            .as_str()
                            .map(str::to_ascii_lowercase)
                            .filter(|h| url::Host::parse(h).is_ok() && !h.contains(':'))
                            .ok_or_else(|| {
                                site_error(
                                    &name,
                                    "hosts: host names without a port, e.g. [\"shop.example.com\"]",
                                )
                            })?;
                        names.push(host);
                    }
                    Some(names)
                }
                Some(_) => return Err(site_error(&name, "hosts: a list of host names")),
            };
            for key in site.keys() {
                if !matches!(
                    key.as_str(),
                    "wechat" | "wecom" | "gateway" | "limits" | "route"
                ) {
                    return Err(site_error(
                        &name,
                        format!("{key}: not a site's key (a site has name, hosts, [site.wechat], [site.wecom], [site.gateway], [site.limits] and [[site.route]]; [store] and [upstreams] are the process's)"),
                    ));
                }
            }
            let own_gateway = site.get("gateway").and_then(|g| g.as_table());
            if let Some(key) =
                own_gateway.and_then(|g| PROCESS_KEYS.iter().find(|k| g.contains_key(**k)))
            {
                return Err(site_error(
                    &name,
                    format!("[gateway] {key}: the process's key, set it at the top level"),
                ));
            }
            let own_tls =
                ["tls_cert", "tls_key"].map(|k| own_gateway.is_some_and(|g| g.contains_key(k)));
            if own_tls.contains(&true) {
                if own_tls != [true, true] {
                    return Err(site_error(
                        &name,
                        "[gateway] tls_cert, tls_key: a site's own certificate needs both (PEM)",
                    ));
                }
                if listener_tls.is_none() {
                    return Err(site_error(
                        &name,
                        "[gateway] tls_cert: a site's own certificate needs [gateway] tls_cert and tls_key at the top level too (the listener's, for every other name)",
                    ));
                }
            }
            let own_cookie_keys = own_gateway.is_some_and(|g| {
                ["cookie_secret", "cookie_secrets", "cookie_secret_file"]
                    .iter()
                    .any(|k| g.contains_key(*k))
            }) || env(&site_env_var(&name, COOKIE_SECRET_VAR))
                .is_some_and(|v| !v.is_empty());

            let mut merged = doc.clone();
            if let Some(routes) = site.remove("route") {
                merged.insert("route".into(), routes);
            }
            lay_over(&mut merged, site);
            let store = merged
                .entry("store")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(store) = store {
                store.insert(
                    "key_prefix".into(),
                    toml::Value::String(format!("{base_prefix}{name}:")),
                );
            }
            let rendered = toml::to_string(&merged).expect("a parsed table renders");
            let site_env = |var: &str| {
                if ACCOUNT_VARS.contains(&var) {
                    env(&site_env_var(&name, var))
                } else if var == COOKIE_SECRET_VAR {
                    env(&site_env_var(&name, var))
                        .filter(|v| !v.is_empty())
                        .or_else(|| env(var))
                } else {
                    env(var)
                }
            };
            let mut config = Config::from_toml(&rendered, site_env).map_err(|e| {
                let mut problem = match e {
                    ConfigError::Syntax { message, .. } => message,
                    other => other.to_string(),
                };
                // The single-site message names the variables a site does not read.
                for var in ACCOUNT_VARS.iter().chain([&COOKIE_SECRET_VAR]) {
                    problem = problem.replace(
                        &format!("env {var}"),
                        &format!("env {}", site_env_var(&name, var)),
                    );
                }
                site_error(&name, problem)
            })?;
            config.site = Some(name.clone());
            if !own_cookie_keys {
                config.gateway.cookie_secrets = config
                    .gateway
                    .cookie_secrets
                    .iter()
                    .map(|key| Secret::new(format!("{}/site/{name}", key.expose())))
                    .collect();
            }
            let hosts = hosts.unwrap_or_else(|| {
                vec![config
                    .gateway
                    .public_url
                    .host_str()
                    .unwrap_or_default()
                    .to_ascii_lowercase()]
            });
            for host in &hosts {
                if let Some(other) = out.iter().find(|s| s.hosts.contains(host)) {
                    return Err(site_error(
                        &name,
                        format!("hosts: {host} is site {:?}'s already", other.name),
                    ));
                }
            }
            out.push(SiteConfig {
                name,
                hosts,
                config,
                listener_tls: listener_tls.clone(),
            });
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_SITES: &str = r#"
[wechat]
timeout_ms = 3000

[gateway]
listen = "127.0.0.1:8080"
cookie_secret = "top-level-key-0123456789abcdef0123"
upstream = "127.0.0.1:3000"

[store]
key_prefix = "gw:"

[[site]]
name = "shop"
hosts = ["Shop.Example.com", "www.shop.example.com"]
[site.wechat]
appid = "wx1111111111111111"
secret = "shop-secret"
[site.gateway]
public_url = "https://shop.example.com"
site_name = "The shop"
[[site.route]]
prefix = "/admin/"
policy = "allow"
allow = ["o-admin"]

[[site]]
name = "blog"
[site.wechat]
appid = "wx2222222222222222"
[site.gateway]
public_url = "https://blog.example.com"
upstream = "127.0.0.1:3001"
cookie_secret = "blog-own-key-0123456789abcdef01234"
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "WECHAT_SITE_BLOG_APP_SECRET" => Some("blog-secret".into()),
            "WECHAT_APP_SECRET" => Some("never-a-site-secret".into()),
            _ => None,
        }
    }

    #[test]
    fn each_site_lays_its_tables_over_the_top_level_ones() {
        let sites = Config::sites_from_toml(TWO_SITES, env).unwrap().unwrap();
        let [shop, blog] = &sites[..] else {
            panic!("two sites: {sites:?}")
        };
        assert_eq!(shop.name, "shop");
        assert_eq!(shop.hosts, ["shop.example.com", "www.shop.example.com"]);
        assert_eq!(shop.config.wechat.appid, "wx1111111111111111");
        assert_eq!(shop.config.wechat.secret.expose(), "shop-secret");
        assert_eq!(shop.config.wechat.timeout, Duration::from_secs(3));
        assert_eq!(
            shop.config.gateway.upstream.as_deref(),
            Some("127.0.0.1:3000")
        );
        assert_eq!(shop.config.gateway.site_name.as_deref(), Some("The shop"));
        assert_eq!(shop.config.routes.len(), 1);
        assert_eq!(shop.config.store.key_prefix, "gw:shop:");

        assert_eq!(blog.hosts, ["blog.example.com"], "public_url's host");
        assert_eq!(blog.config.wechat.secret.expose(), "blog-secret");
        assert_eq!(
            blog.config.gateway.upstream.as_deref(),
            Some("127.0.0.1:3001")
        );
        assert!(blog.config.routes.is_empty());
        assert_eq!(blog.config.store.key_prefix, "gw:blog:");

        // Derived keys differ per site; a site's own keys are kept.
        let shop_key = shop.config.gateway.cookie_secrets[0].expose();
        assert_ne!(shop_key, "top-level-key-0123456789abcdef0123");
        assert_eq!(
            blog.config.gateway.cookie_secrets[0].expose(),
            "blog-own-key-0123456789abcdef01234"
        );
        assert!(!format!("{sites:?}").contains("shop-secret"));
        assert!(Config::sites_from_toml(GOOD_SINGLE, |_| None)
            .unwrap()
            .is_none());
    }

    const GOOD_SINGLE: &str = "[wechat]\nappid = \"wx1234567890abcdef\"\nsecret = \"s\"\n[gateway]\npublic_url = \"https://a.example\"\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\n";

    fn site_err(text: &str) -> String {
        Config::sites_from_toml(text, env).unwrap_err().to_string()
    }

    #[test]
    fn a_site_problem_names_the_site_and_its_key() {
        let e = site_err(&TWO_SITES.replace("secret = \"shop-secret\"", ""));
        assert!(
            e.contains("site \"shop\"") && e.contains("[wechat] secret"),
            "{e}"
        );
        assert!(!e.contains("never-a-site-secret"));
        assert!(
            e.contains("env WECHAT_SITE_SHOP_APP_SECRET") && !e.contains("env WECHAT_APP_SECRET"),
            "{e}"
        );
        let e = site_err(&TWO_SITES.replace("site_name = \"The shop\"", "listen = \"0.0.0.0:1\""));
        assert!(e.contains("site \"shop\"") && e.contains("listen"), "{e}");
        let e = site_err(&TWO_SITES.replace("name = \"blog\"", "name = \"shop\""));
        assert!(e.contains("two sites"), "{e}");
        let e = site_err(&TWO_SITES.replace("blog.example.com", "shop.example.com"));
        assert!(e.contains("hosts") && e.contains("shop.example.com"), "{e}");
        let e = site_err(&TWO_SITES.replace(
            "name = \"blog\"",
            "name = \"blog\"\n[site.store]\nurl = \"memory\"",
        ));
        assert!(e.contains("store"), "{e}");
        let e = site_err(&TWO_SITES.replace("name = \"blog\"", "name = \"bl og\""));
        assert!(e.contains("name"), "{e}");
        let e = site_err(&TWO_SITES.replace("site_name", "site_nam"));
        assert!(e.contains("site \"shop\"") && e.contains("site_nam"), "{e}");
        // The single-site reader refuses [[site]] tables.
        let e = Config::from_toml(TWO_SITES, env).unwrap_err().to_string();
        assert!(e.contains("site"), "{e}");
        assert_eq!(
            site_env_var("shop-a", "WECHAT_APP_SECRET"),
            "WECHAT_SITE_SHOP_A_APP_SECRET"
        );
    }

    #[test]
    fn a_site_may_have_its_own_certificate_beside_the_listeners() {
        let dir = std::env::temp_dir().join(format!("wechat-site-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str| {
            let path = dir.join(name);
            std::fs::write(&path, "PEM").unwrap();
            path.display().to_string()
        };
        let (top_cert, top_key, shop_cert, shop_key) = (
            file("top.crt"),
            file("top.key"),
            file("shop.crt"),
            file("shop.key"),
        );
        let listener = format!("tls_cert = {top_cert:?}\ntls_key = {top_key:?}\n");
        let with = |top: &str, shop: &str| {
            TWO_SITES
                .replace(
                    "upstream = \"127.0.0.1:3000\"\n",
                    &format!("upstream = \"127.0.0.1:3000\"\n{top}"),
                )
                .replace(
                    "site_name = \"The shop\"",
                    &format!("site_name = \"The shop\"\n{shop}"),
                )
        };
        let own = format!("tls_cert = {shop_cert:?}\ntls_key = {shop_key:?}");
        let sites = Config::sites_from_toml(&with(&listener, &own), env)
            .unwrap()
            .unwrap();
        let listener_files = Some((PathBuf::from(&top_cert), PathBuf::from(&top_key)));
        assert_eq!(
            sites[0].config.gateway.tls,
            Some((PathBuf::from(&shop_cert), PathBuf::from(&shop_key)))
        );
        assert_eq!(
            sites[1].config.gateway.tls, listener_files,
            "the listener's"
        );
        assert!(sites.iter().all(|s| s.listener_tls == listener_files));

        // Half a certificate, or one without the listener's, is refused.
        let e = site_err(&with(&listener, &format!("tls_cert = {shop_cert:?}")));
        assert!(
            e.contains("site \"shop\"") && e.contains("needs both"),
            "{e}"
        );
        let e = site_err(&with("", &own));
        assert!(
            e.contains("site \"shop\"") && e.contains("top level"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_host_serving_one_site_names_it() {
        let blog = Config::site_from_toml(TWO_SITES, Some("blog"), env).unwrap();
        assert_eq!(blog.wechat.appid, "wx2222222222222222");
        assert_eq!(
            blog.store.key_prefix, "gw:blog:",
            "the gateway's keys of the site"
        );
        for wrong in [None, Some("journal"), Some("")] {
            let e = Config::site_from_toml(TWO_SITES, wrong, env)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("WECHAT_OAUTH_SITE") && e.contains("shop, blog"),
                "{e}"
            );
        }
        let single = Config::site_from_toml(GOOD_SINGLE, None, |_| None).unwrap();
        assert_eq!(single.wechat.appid, "wx1234567890abcdef");
        let e = Config::site_from_toml(GOOD_SINGLE, Some("shop"), |_| None).unwrap_err();
        assert!(e.to_string().contains("no [[site]]"), "{e}");
    }
}
