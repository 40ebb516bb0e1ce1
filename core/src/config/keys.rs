//! The helpers of reading a configuration: values checked one key at a
//! time, secrets from the environment or a file, and the lines of a TOML
//! text that `check` points at.

use std::path::PathBuf;

use url::Url;

use super::*;
use crate::secret::Secret;

/// The prefix of the environment variables that set any key:
/// `WECHAT_GATEWAY__<TABLE>__<KEY>`, e.g. `WECHAT_GATEWAY__GATEWAY__LISTEN`,
/// `WECHAT_GATEWAY__WECHAT__OPEN__APPID` for `[wechat.open] appid`.
pub const ENV_PREFIX: &str = "WECHAT_GATEWAY__";

/// `text` with the keys the `WECHAT_GATEWAY__…` variables among `vars` set
/// (later ones win; other variables are ignored). A value is read as a
/// TOML value when it is one (`10`, `true`, `["/a", "/b"]`, `"quoted"`),
/// else as a string; the text is unchanged when no variable applies.
///
/// Errors: [`ConfigError::Invalid`] naming the variable when its name has
/// no key, or the text is not TOML (reported as [`ConfigError::Syntax`]
/// by the parse that follows, so it is left as it is).
pub(super) fn with_env_keys(
    text: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<String, ConfigError> {
    let sets: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    if sets.is_empty() {
        return Ok(text.to_owned());
    }
    let Ok(mut doc) = text.parse::<toml::Table>() else {
        return Ok(text.to_owned());
    };
    for (name, value) in sets {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.len() < 2 || path.iter().any(String::is_empty) {
            return Err(ConfigError::Invalid {
                key: "environment",
                problem: format!(
                    "{name}: name a table and a key, e.g. {ENV_PREFIX}GATEWAY__LISTEN"
                ),
            });
        }
        let value = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value));
        let (key, tables) = path.split_last().expect("two parts at least");
        let mut table = &mut doc;
        for part in tables {
            let entry = table
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(inner) = entry else {
                return Err(ConfigError::Invalid {
                    key: "environment",
                    problem: format!("{name}: {part} is a key, not a table"),
                });
            };
            table = inner;
        }
        table.insert(key.clone(), value);
    }
    Ok(toml::to_string(&doc).expect("a parsed table renders"))
}

/// A TOML error's message; for an unknown key, with the closest known one
/// (`unknown field `listn`, expected one of … — did you mean `listen`?`).
pub(super) fn with_suggestion(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_owned();
    };
    let Some((unknown, known)) = rest.split_once('`') else {
        return message.to_owned();
    };
    let closest = known
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|k| (strsim::levenshtein(unknown, k), k))
        .filter(|(distance, k)| *distance <= 2.max(k.len() / 3))
        .min();
    match closest {
        Some((_, key)) => format!("{message} — did you mean `{key}`?"),
        None => message.to_owned(),
    }
}

/// The environment variable that overrides a key, if any.
pub(super) fn env_override_of(key: &str) -> Option<&'static str> {
    Some(match key {
        "[wechat] appid" => "WECHAT_APPID",
        "[wechat] secret" => "WECHAT_APP_SECRET",
        "[wechat] push_token" => "WECHAT_PUSH_TOKEN",
        "[wechat] encoding_aes_key" => "WECHAT_ENCODING_AES_KEY",
        "[wechat.open] appid" => "WECHAT_OPEN_APPID",
        "[wechat.open] secret" => "WECHAT_OPEN_SECRET",
        "[wecom] corpid" => "WECOM_CORPID",
        "[wecom] agentid" => "WECOM_AGENTID",
        "[wecom] secret" => "WECOM_SECRET",
        "[gateway] cookie_secret" | "[gateway] cookie_secrets" => "WECHAT_COOKIE_SECRET",
        "[store] url" => "WECHAT_STORE_URL",
        _ => return None,
    })
}

/// Sets a problem key aside for [`Config::check`]: a valid stand-in for a
/// required key, else removed (its default applies). `false` when nothing
/// could be changed.
pub(super) fn repair_key(doc: &mut toml::Table, key: &str) -> bool {
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
        ("wecom", "corpid") => set(doc, &path, name, stand_in("ww0000000000000000")),
        ("wecom", "agentid") => set(doc, &path, name, stand_in("1000000")),
        ("wecom", "secret") => {
            remove_key(doc, "wecom", "secret_file");
            set(doc, &["wecom"], "secret", stand_in("stand-in-secret"));
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
pub(super) fn remove_key(doc: &mut toml::Table, table: &str, key: &str) -> bool {
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
pub(super) fn key_at_line(text: &str, line: usize) -> Option<(String, String)> {
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
pub(super) fn line_of_key(text: &str, table: &str, key: &str) -> Option<usize> {
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

pub(super) fn redis_url_parses(url: &str) -> bool {
    use redis::IntoConnectionInfo;
    url.into_connection_info().is_ok()
}

/// Picks a secret: the environment, then the `*_file`, then the inline value.
pub(super) fn secret_value(
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

pub(super) fn check_appid(key: &'static str, appid: &str) -> Result<(), ConfigError> {
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

pub(super) fn path_list(
    key: &'static str,
    paths: Option<Vec<String>>,
) -> Result<Vec<String>, ConfigError> {
    let paths = paths.unwrap_or_default();
    match paths.iter().find(|p| !p.starts_with('/')) {
        Some(bad) => Err(invalid(
            key,
            format!("every entry must start with '/', got {bad:?}"),
        )),
        None => Ok(paths),
    }
}

pub(super) fn base_url(
    key: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<Url, ConfigError> {
    let text = value.unwrap_or_else(|| default.to_owned());
    let url = Url::parse(text.trim_end_matches('/'))
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .filter(|u| u.query().is_none() && u.fragment().is_none())
        .ok_or_else(|| invalid(key, format!("must be an http(s) URL, e.g. \"{default}\"")))?;
    Ok(url)
}

pub(super) fn validate_host_port(value: &str) -> Result<(), &'static str> {
    let (host, port) = value.rsplit_once(':').ok_or("must be host:port")?;
    if host.is_empty() || host.contains('/') {
        return Err("must be host:port");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err("the port must be 1 to 65535"),
    }
}
