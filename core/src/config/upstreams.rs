//! `[upstreams.NAME]`: the gateway's named upstreams, which `[[route]]`
//! entries send requests to (README "Upstreams"). Only the gateway proxies;
//! other hosts read and ignore them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::keys::validate_host_port;
use super::{invalid, ConfigError, RouteConfig};

/// An `[upstreams.NAME]` table as written in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    servers: Vec<String>,
    tls: Option<bool>,
    sni: Option<String>,
    ca_file: Option<PathBuf>,
    resolve_secs: Option<u64>,
    health_check_secs: Option<u64>,
}

/// A named upstream: servers load-balanced round robin, each checked by a
/// TCP connect, names resolved again on a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// `servers`: `host:port` of each server (a DNS name stands for every
    /// address it resolves to).
    pub servers: Vec<String>,
    /// `tls`: HTTPS to the servers, the certificate verified against
    /// `ca_file` (else the system's roots) and `sni` (default false).
    pub tls: bool,
    /// `sni`: the name sent in TLS and checked in the certificate; default
    /// the host of the first server.
    pub sni: String,
    /// `ca_file`: PEM certificates trusted for the servers instead of the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// `resolve_secs`: how often the servers' names are resolved again
    /// (default 30 s; an address that stops resolving leaves the set, a
    /// failed lookup of every name keeps the last set).
    pub resolve_every: Duration,
    /// `health_check_secs`: how often each address gets a TCP connect; one
    /// that fails gets no requests until one succeeds (default 5 s; 0: no
    /// checks).
    pub health_check_every: Option<Duration>,
}

/// Reads the `[upstreams.NAME]` tables and checks that every route's
/// `upstream` names one of them.
///
/// Errors: [`ConfigError::Invalid`] for a table without servers, a server
/// that is not `host:port`, a bad name, an unreadable `ca_file`, a zero
/// `resolve_secs`, or a route naming an upstream that does not exist.
pub(super) fn upstreams(
    raw: BTreeMap<String, RawUpstream>,
    routes: &[RouteConfig],
) -> Result<BTreeMap<String, UpstreamConfig>, ConfigError> {
    let mut upstreams = BTreeMap::new();
    for (name, u) in raw {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        {
            return Err(invalid(
                "[upstreams] name",
                format!("{name:?}: letters, digits, '-' and '_'"),
            ));
        }
        if u.servers.is_empty() {
            return Err(invalid(
                "[upstreams] servers",
                format!("{name}: at least one host:port"),
            ));
        }
        for server in &u.servers {
            validate_host_port(server)
                .map_err(|p| invalid("[upstreams] servers", format!("{name}: {server:?} {p}")))?;
        }
        if let Some(ca) = &u.ca_file {
            std::fs::metadata(ca).map_err(|e| {
                invalid(
                    "[upstreams] ca_file",
                    format!("{name}: cannot read {}: {e}", ca.display()),
                )
            })?;
        }
        let resolve_secs = u.resolve_secs.unwrap_or(30);
        if resolve_secs == 0 {
            return Err(invalid(
                "[upstreams] resolve_secs",
                format!("{name}: at least 1"),
            ));
        }
        let first_host = u.servers[0]
            .rsplit_once(':')
            .map_or("", |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        upstreams.insert(
            name,
            UpstreamConfig {
                tls: u.tls.unwrap_or(false),
                sni: u.sni.unwrap_or(first_host),
                ca_file: u.ca_file,
                resolve_every: Duration::from_secs(resolve_secs),
                health_check_every: match u.health_check_secs.unwrap_or(5) {
                    0 => None,
                    secs => Some(Duration::from_secs(secs)),
                },
                servers: u.servers,
            },
        );
    }
    for route in routes {
        if let Some(name) = &route.upstream {
            if !upstreams.contains_key(name) {
                return Err(invalid(
                    "[[route]] upstream",
                    format!("{name:?} is not an [upstreams.{name}] table"),
                ));
            }
        }
    }
    Ok(upstreams)
}

#[cfg(test)]
mod tests {
    use crate::Config;

    const BASE: &str = "[wechat]\nappid = \"wx1234567890abcdef\"\nsecret = \"s\"\n\
        [gateway]\npublic_url = \"https://app.example.com\"\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\n";

    #[test]
    fn named_upstreams_are_read_and_routes_must_name_one() {
        let c = Config::from_toml(
            &format!(
                "{BASE}[upstreams.api]\nservers = [\"api.internal:8443\", \"10.0.0.2:8443\"]\ntls = true\n\
                 [[route]]\nprefix = \"/api/\"\nupstream = \"api\"\n"
            ),
            |_| None,
        )
        .unwrap();
        let api = &c.upstreams["api"];
        assert!(api.tls);
        assert_eq!(api.sni, "api.internal", "the first server's host");
        assert_eq!(api.resolve_every.as_secs(), 30);
        assert_eq!(api.health_check_every.map(|d| d.as_secs()), Some(5));
        assert_eq!(c.routes[0].upstream.as_deref(), Some("api"));

        for (extra, key) in [
            (
                "[[route]]\nprefix = \"/api/\"\nupstream = \"apii\"\n",
                "[[route]] upstream",
            ),
            ("[upstreams.api]\nservers = []\n", "[upstreams] servers"),
            (
                "[upstreams.api]\nservers = [\"http://x:80\"]\n",
                "[upstreams] servers",
            ),
            (
                "[upstreams.api]\nservers = [\"x\"]\n",
                "[upstreams] servers",
            ),
            (
                "[upstreams.\"a b\"]\nservers = [\"x:80\"]\n",
                "[upstreams] name",
            ),
            (
                "[upstreams.api]\nservers = [\"x:80\"]\nca_file = \"/nonexistent/ca.pem\"\n",
                "[upstreams] ca_file",
            ),
            (
                "[upstreams.api]\nservers = [\"x:80\"]\nresolve_secs = 0\n",
                "[upstreams] resolve_secs",
            ),
            (
                "[upstreams.api]\nservers = [\"x:80\"]\nweight = 2\n",
                "weight",
            ),
        ] {
            let err = Config::from_toml(&format!("{BASE}{extra}"), |_| None).unwrap_err();
            assert!(err.to_string().contains(key), "{extra}: {err}");
        }
    }
}
