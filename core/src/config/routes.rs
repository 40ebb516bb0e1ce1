//! `[[route]]` entries (who may enter which path) and `[gateway]
//! verify_files` (WeChat's domain verification files), read and checked.
//! The decision that uses them is `flow/policy.rs`; README
//! "Routes and policies" documents every key.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{invalid, ConfigError};

/// A `[[route]]` as written in the file.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    name: Option<String>,
    prefix: Option<String>,
    exact: Option<String>,
    methods: Option<Vec<String>>,
    policy: Option<String>,
    allow: Option<Vec<String>>,
    allow_file: Option<PathBuf>,
    wecom_userids: Option<Vec<String>>,
    wecom_departments: Option<Vec<u64>>,
    preflight: Option<String>,
    upstream: Option<String>,
    force_popup: Option<bool>,
}

/// `[gateway] verify_files` as written: names and contents, or a directory.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawVerifyFiles {
    Inline(BTreeMap<String, String>),
    Directory(PathBuf),
}

/// Which paths a route covers, matched on the canonical path
/// (docs/security.md "Paths").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// `prefix = "/api/"`: every path that starts with it.
    Prefix(String),
    /// `exact = "/about"`: that path only.
    Exact(String),
}

impl PathMatch {
    /// Whether the canonical `path` is covered.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Prefix(prefix) => path.starts_with(prefix.as_str()),
            PathMatch::Exact(exact) => path == exact,
        }
    }
}

/// Who may enter a route (`policy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// `public`: no login needed; a logged-in user's identity still goes up.
    Public,
    /// `login` (the default): any logged-in WeChat user.
    Login,
    /// `userinfo`: a login with `snsapi_userinfo`; a `snsapi_base` session
    /// is sent to authorize again with it.
    Userinfo,
    /// `allow`: only the listed users (their `openid` or `unionid`; WeCom
    /// members by `wecom_userids` or `wecom_departments`); anyone else
    /// logged in gets `403`.
    Allow(AllowList),
    /// `followers`: users who follow the Official Account
    /// (`cgi-bin/user/info` `subscribe` = 1, kept for `[gateway]
    /// followers_cache_secs`); anyone else logged in gets `403`.
    Followers,
}

/// The users of an `allow` policy: WeChat `openid`s and `unionid`s from
/// the inline `allow` list and the `allow_file` (one per line, `#`
/// comments), and WeCom members by `userid` (`wecom_userids`) or by a
/// department they are directly in (`wecom_departments`, the ids of
/// `cgi-bin/user/get`), read when the configuration is loaded (so again on
/// every reload). The two kinds never mix: a WeCom userid never matches a
/// WeChat id, nor the other way round.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllowList {
    ids: HashSet<String>,
    wecom_userids: HashSet<String>,
    wecom_departments: HashSet<u64>,
}

impl AllowList {
    /// Whether `identity` is listed: a WeChat user by openid or unionid, a
    /// WeCom member by userid or department (a WeCom non-member never).
    pub fn allows(&self, identity: &crate::session::Identity) -> bool {
        match &identity.wecom {
            None => {
                self.ids.contains(&identity.openid)
                    || identity
                        .unionid
                        .as_deref()
                        .is_some_and(|u| self.ids.contains(u))
            }
            Some(w) if w.member => {
                self.wecom_userids.contains(&identity.openid)
                    || w.departments
                        .iter()
                        .any(|d| self.wecom_departments.contains(d))
            }
            Some(_) => false,
        }
    }

    /// How many ids are listed (WeChat ids, WeCom userids and departments).
    pub fn len(&self) -> usize {
        self.ids.len() + self.wecom_userids.len() + self.wecom_departments.len()
    }

    /// Whether no id is listed (then nobody may enter).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a CORS preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`) on a route gets (`preflight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preflight {
    /// `pass` (the default): to the application, without a session (a
    /// browser never sends cookies on a preflight).
    Pass,
    /// `login`: like any other request of the route.
    Login,
}

/// A `[[route]]`: a path (and optionally methods) with its policy and,
/// in the gateway, its upstream. The first route that matches a request
/// decides it; a request no route matches gets the default route
/// (`[gateway] public_paths` → public, `userinfo_paths` → userinfo, else
/// login).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// `name`: how a host's own routing picks this route for a request
    /// whatever its path (the nginx module's `wechat_oauth_policy NAME`, the
    /// C ABI's `wechat_oauth_client_with_policy`): lower-case letters,
    /// digits, `-` and `_`, unique, none of the policy names.
    pub name: Option<String>,
    /// `prefix` or `exact`: a canonical path (it starts with `/`, no `.`
    /// or `..` segments, no `//`, no percent-encoding the gate would decode).
    /// `None` (a named route only): no request falls under it by its path.
    pub path: Option<PathMatch>,
    /// `methods`: upper-case methods the route covers; empty: every one.
    pub methods: Vec<String>,
    /// `policy`: `public`, `login` (default), `userinfo`, `allow` or
    /// `followers`.
    pub policy: Policy,
    /// `preflight`: `pass` (default) or `login`.
    pub preflight: Preflight,
    /// `upstream`: the name of an upstream of the gateway; `None`: its
    /// default upstream (`[gateway] upstream`). Other hosts ignore it.
    pub upstream: Option<String>,
    /// `force_popup`: whether a login that returns to this route's paths
    /// asks the user to confirm (`forcePopup=true`); `None`: `[wechat]
    /// force_popup`.
    pub force_popup: Option<bool>,
}

impl RouteConfig {
    /// Whether the route covers a request with this canonical path and method.
    pub fn matches(&self, path: &str, method: &str) -> bool {
        self.path.as_ref().is_some_and(|p| p.matches(path))
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
    }
}

/// The most ids an `allow` list may hold (inline and file together).
const MAX_ALLOW_IDS: usize = 100_000;

/// Reads the `[[route]]` entries, in order.
///
/// Errors: [`ConfigError::Invalid`] naming the key of the first bad value
/// (two paths, or none on a route without a name, a path that is not
/// canonical, a name used twice or spelled otherwise, an unknown policy or
/// preflight, `allow` ids on another policy, an unreadable `allow_file`,
/// an id that is not a WeChat id).
pub(super) fn routes(raw: Vec<RawRoute>) -> Result<Vec<RouteConfig>, ConfigError> {
    let routes = raw.into_iter().map(route).collect::<Result<Vec<_>, _>>()?;
    let mut names = HashSet::new();
    for name in routes.iter().filter_map(|r| r.name.as_deref()) {
        if !names.insert(name) {
            return Err(invalid(
                "[[route]] name",
                format!("{name:?} names two routes"),
            ));
        }
    }
    Ok(routes)
}

/// The policy names a route's `name` may not take: they pick the policy
/// itself (README "Routes and policies").
pub const POLICY_NAMES: [&str; 5] = ["public", "login", "userinfo", "allow", "followers"];

fn route(r: RawRoute) -> Result<RouteConfig, ConfigError> {
    if let Some(name) = &r.name {
        let plain = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
        if !plain || POLICY_NAMES.contains(&name.as_str()) {
            return Err(invalid(
                "[[route]] name",
                format!(
                    "{name:?}: lower-case letters, digits, '-' and '_' (at most 64), not one of the policy names"
                ),
            ));
        }
    }
    let path = match (r.prefix, r.exact) {
        (Some(p), None) => Some(PathMatch::Prefix(canonical("[[route]] prefix", p)?)),
        (None, Some(p)) => Some(PathMatch::Exact(canonical("[[route]] exact", p)?)),
        (None, None) if r.name.is_some() => None,
        _ => {
            return Err(invalid(
                "[[route]] prefix",
                "each route needs exactly one of prefix = \"/api/\" or exact = \"/about\" (or only a name, for a host's own routing)",
            ))
        }
    };
    let mut methods = Vec::new();
    for method in r.methods.unwrap_or_default() {
        let upper = method.to_ascii_uppercase();
        if upper.is_empty() || !upper.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid(
                "[[route]] methods",
                format!("{method:?} is not an HTTP method (e.g. \"GET\")"),
            ));
        }
        methods.push(upper);
    }
    let listed = r.allow.is_some()
        || r.allow_file.is_some()
        || r.wecom_userids.is_some()
        || r.wecom_departments.is_some();
    let policy = match r.policy.as_deref().unwrap_or("login") {
        "public" => Policy::Public,
        "login" => Policy::Login,
        "userinfo" => Policy::Userinfo,
        "allow" => {
            let mut list = allow_list(r.allow.unwrap_or_default(), r.allow_file)?;
            for userid in r.wecom_userids.unwrap_or_default() {
                if !crate::wecom::is_valid_userid(&userid) {
                    return Err(invalid(
                        "[[route]] wecom_userids",
                        format!("{userid:?} is not a WeCom userid (1 to 64 letters, digits, '_', '-', '@', '.')"),
                    ));
                }
                list.wecom_userids.insert(userid);
            }
            list.wecom_departments
                .extend(r.wecom_departments.unwrap_or_default());
            if list.len() > MAX_ALLOW_IDS {
                return Err(invalid(
                    "[[route]] allow",
                    format!("at most {MAX_ALLOW_IDS} ids"),
                ));
            }
            Policy::Allow(list)
        }
        "followers" => Policy::Followers,
        other => {
            return Err(invalid(
                "[[route]] policy",
                format!(
                    "{other:?}: use \"public\", \"login\", \"userinfo\", \"allow\" or \"followers\""
                ),
            ))
        }
    };
    if listed && !matches!(policy, Policy::Allow(_)) {
        return Err(invalid(
            "[[route]] allow",
            "allow, allow_file, wecom_userids and wecom_departments belong to policy = \"allow\"",
        ));
    }
    let preflight = match r.preflight.as_deref().unwrap_or("pass") {
        "pass" => Preflight::Pass,
        "login" => Preflight::Login,
        other => {
            return Err(invalid(
                "[[route]] preflight",
                format!("{other:?}: use \"pass\" or \"login\""),
            ))
        }
    };
    if r.upstream.as_deref() == Some("") {
        return Err(invalid(
            "[[route]] upstream",
            "name an upstream, or leave it out",
        ));
    }
    Ok(RouteConfig {
        name: r.name,
        path,
        methods,
        policy,
        preflight,
        upstream: r.upstream,
        force_popup: r.force_popup,
    })
}

/// `path` when it is the canonical form of itself: a route's path is
/// compared with requests' canonical paths only.
fn canonical(key: &'static str, path: String) -> Result<String, ConfigError> {
    match crate::path::canonical_path(&path) {
        Ok(c) if path.starts_with('/') && c == path.as_str() => Ok(path),
        _ => Err(invalid(
            key,
            format!(
                "{path:?} is not a canonical path: start with '/', no '.' or '..' segments, no '//', no percent-encoded characters"
            ),
        )),
    }
}

fn allow_list(inline: Vec<String>, file: Option<PathBuf>) -> Result<AllowList, ConfigError> {
    let mut ids = HashSet::new();
    let mut add = |id: &str, key: &'static str| {
        if !crate::session::is_valid_wechat_id(id) {
            return Err(invalid(
                key,
                format!("{id:?} is not an openid or unionid (letters, digits, '-' and '_')"),
            ));
        }
        ids.insert(id.to_owned());
        Ok(())
    };
    for id in &inline {
        add(id.trim(), "[[route]] allow")?;
    }
    if let Some(path) = file {
        let text = read("[[route]] allow_file", &path)?;
        for line in text.lines() {
            let id = line.split('#').next().unwrap_or("").trim();
            if !id.is_empty() {
                add(id, "[[route]] allow_file")?;
            }
        }
    }
    if ids.len() > MAX_ALLOW_IDS {
        return Err(invalid(
            "[[route]] allow",
            format!("at most {MAX_ALLOW_IDS} ids"),
        ));
    }
    Ok(AllowList {
        ids,
        ..Default::default()
    })
}

fn read(key: &'static str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))
}

/// The most bytes a verification file may hold: WeChat's are a few dozen.
const MAX_VERIFY_FILE_BYTES: usize = 1024;

/// Reads `[gateway] verify_files`: `name → content` pairs, inline or from
/// the files of a directory whose names look like verification files
/// (`MP_verify_*.txt`, and any other `*.txt` a console asks for). Each is
/// served at `/<name>` without a session.
///
/// Errors: [`ConfigError::Invalid`] for a name with a `/` or that is not
/// a plain `*.txt` file name, content over 1 KiB, or an unreadable
/// directory.
pub(super) fn verify_files(
    raw: Option<RawVerifyFiles>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    const KEY: &str = "[gateway] verify_files";
    let files = match raw {
        None => BTreeMap::new(),
        Some(RawVerifyFiles::Inline(files)) => files,
        Some(RawVerifyFiles::Directory(dir)) => {
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| invalid(KEY, format!("cannot read {}: {e}", dir.display())))?;
            let mut files = BTreeMap::new();
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".txt") && entry.path().is_file() {
                    files.insert(name, read(KEY, &entry.path())?);
                }
            }
            files
        }
    };
    for (name, content) in &files {
        let plain = name.len() > 4
            && name.ends_with(".txt")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            && !name.starts_with('.');
        if !plain {
            return Err(invalid(
                KEY,
                format!("{name:?}: a file name like \"MP_verify_abc123.txt\""),
            ));
        }
        if content.len() > MAX_VERIFY_FILE_BYTES {
            return Err(invalid(
                KEY,
                format!("{name:?}: at most {MAX_VERIFY_FILE_BYTES} bytes"),
            ));
        }
    }
    Ok(files)
}
