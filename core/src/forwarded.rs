//! Who the client is, and what the application is told about it: the
//! `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded`
//! and `X-Real-IP` headers (docs/security.md "Trusted proxies").
//!
//! From a peer outside `[gateway] trusted_proxies` every one of them is the
//! gate's own: whatever the client sent is replaced. From a trusted front
//! the chain is kept and the peer appended, and the client is the nearest
//! address in `X-Forwarded-For` that is not itself a trusted proxy.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderValue;
use ipnet::IpNet;

/// The forwarding headers an application gets, each a (name, value).
pub const FORWARDING_HEADERS: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
];

/// Whether a request header named `name` is a forwarding header in some
/// spelling (any case, `_` read as `-`: CGI and PHP read
/// `X_Forwarded_For` as `HTTP_X_FORWARDED_FOR`). The gateway removes every
/// one before writing [`upstream_headers`].
pub fn is_forwarding_header(name: &[u8]) -> bool {
    FORWARDING_HEADERS.iter().any(|h| {
        h.len() == name.len()
            && h.bytes().zip(name).all(|(want, &b)| {
                let b = if b == b'_' {
                    b'-'
                } else {
                    b.to_ascii_lowercase()
                };
                b == want
            })
    })
}

/// Whether `peer` is one of the `trusted` proxies.
pub fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    let peer = canonical_ip(peer);
    trusted.iter().any(|net| net.contains(&peer))
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address: `peer` itself, unless `peer` is trusted; then the
/// nearest (rightmost) address of `x_forwarded_for` that is not trusted
/// (the first one when all are; `peer` when none parses).
pub fn client_address(peer: IpAddr, x_forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical_ip(peer);
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let chain: Vec<IpAddr> = x_forwarded_for
        .unwrap_or("")
        .split(',')
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .map(canonical_ip)
        .collect();
    chain
        .iter()
        .rev()
        .find(|a| !is_trusted(**a, trusted))
        .or(chain.first())
        .copied()
        .unwrap_or(peer)
}

/// The client's forwarding headers as sent (lower-case name → value).
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent<'a> {
    /// `X-Forwarded-For`.
    pub x_forwarded_for: Option<&'a str>,
    /// `X-Forwarded-Proto`.
    pub x_forwarded_proto: Option<&'a str>,
    /// `X-Forwarded-Host`.
    pub x_forwarded_host: Option<&'a str>,
    /// `Forwarded`.
    pub forwarded: Option<&'a str>,
    /// `X-Real-IP`.
    pub x_real_ip: Option<&'a str>,
}

/// The forwarding headers the application gets, in
/// [`FORWARDING_HEADERS`] order: `peer` is the connection's address,
/// `scheme` (`http`/`https`) and `host` (the `Host` header) what the
/// gate itself received. Every header the client sent is replaced unless
/// `peer` is trusted; then the chain is kept and `peer` appended.
pub fn upstream_headers(
    peer: IpAddr,
    scheme: &str,
    host: Option<&str>,
    sent: &Sent<'_>,
    trusted: &[IpNet],
) -> Vec<(&'static str, String)> {
    let peer = canonical_ip(peer);
    let node = match peer {
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
        v4 => v4.to_string(),
    };
    let own_forwarded = {
        let mut f = format!("for={node};proto={scheme}");
        if let Some(host) = host.filter(|h| is_token_like(h)) {
            f.push_str(";host=");
            f.push_str(host);
        }
        f
    };
    fn clean(v: Option<&str>) -> Option<&str> {
        v.map(str::trim)
            .filter(|v| !v.is_empty() && is_header_safe(v))
    }
    let mut out = Vec::with_capacity(5);
    if is_trusted(peer, trusted) {
        let append = |chain: Option<&str>, own: &str| match clean(chain) {
            Some(chain) => format!("{chain}, {own}"),
            None => own.to_owned(),
        };
        out.push((
            "x-forwarded-for",
            append(sent.x_forwarded_for, &peer.to_string()),
        ));
        out.push((
            "x-forwarded-proto",
            clean(sent.x_forwarded_proto).unwrap_or(scheme).to_owned(),
        ));
        if let Some(h) = clean(sent.x_forwarded_host).or(host) {
            out.push(("x-forwarded-host", h.to_owned()));
        }
        out.push(("forwarded", append(sent.forwarded, &format!("for={node}"))));
        let client = client_address(peer, sent.x_forwarded_for, trusted);
        out.push((
            "x-real-ip",
            clean(sent.x_real_ip).map_or_else(|| client.to_string(), str::to_owned),
        ));
    } else {
        out.push(("x-forwarded-for", peer.to_string()));
        out.push(("x-forwarded-proto", scheme.to_owned()));
        if let Some(h) = host.filter(|h| is_token_like(h)) {
            out.push(("x-forwarded-host", h.to_owned()));
        }
        out.push(("forwarded", own_forwarded));
        out.push(("x-real-ip", peer.to_string()));
    }
    out
}

/// Forwarding headers ready for the upstream: `(name, value)` in
/// [`FORWARDING_HEADERS`] order.
pub type ForwardingValues = Arc<[(&'static str, HeaderValue)]>;

/// How many (peer, `Host`) pairs [`ForwardingCache`] keeps: a few hundred
/// bytes each.
pub const FORWARDING_CACHE_CAPACITY: usize = 4096;

/// The forwarding headers of peers that are not trusted proxies, built once
/// per (peer address, `Host`): for such a peer they depend on nothing else
/// ([`upstream_headers`] ignores what it sent), so each of its requests
/// writes them by reference count, with no allocation. Bounded to
/// [`FORWARDING_CACHE_CAPACITY`] pairs; a miss builds them again.
pub struct ForwardingCache {
    scheme: &'static str,
    cache: quick_cache::sync::Cache<ForwardKey, ForwardingValues>,
}

#[derive(PartialEq, Eq)]
struct ForwardKey {
    peer: IpAddr,
    host: Option<Box<str>>,
}

impl Hash for ForwardKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        ForwardKeyRef {
            peer: self.peer,
            host: self.host.as_deref(),
        }
        .hash(state)
    }
}

/// [`ForwardKey`] borrowed, for a lookup that copies nothing.
#[derive(Hash)]
struct ForwardKeyRef<'a> {
    peer: IpAddr,
    host: Option<&'a str>,
}

impl quick_cache::Equivalent<ForwardKey> for ForwardKeyRef<'_> {
    fn equivalent(&self, key: &ForwardKey) -> bool {
        self.peer == key.peer && self.host == key.host.as_deref()
    }
}

impl ForwardingCache {
    /// A cache for a gate whose clients reach it over `scheme` (`http` or
    /// `https`).
    pub fn new(scheme: &'static str) -> Self {
        ForwardingCache {
            scheme,
            cache: quick_cache::sync::Cache::new(FORWARDING_CACHE_CAPACITY),
        }
    }

    /// [`upstream_headers`] for `peer`, which must not be a trusted proxy
    /// ([`is_trusted`]), with `host` its `Host` header.
    pub fn untrusted(&self, peer: IpAddr, host: Option<&str>) -> ForwardingValues {
        let peer = canonical_ip(peer);
        if let Some(values) = self.cache.get(&ForwardKeyRef { peer, host }) {
            return values;
        }
        let values = header_values(upstream_headers(
            peer,
            self.scheme,
            host,
            &Sent::default(),
            &[],
        ));
        self.cache.insert(
            ForwardKey {
                peer,
                host: host.map(Into::into),
            },
            values.clone(),
        );
        values
    }
}

/// [`upstream_headers`]'s answer as header values (every value it makes is
/// header-safe; one that were not would be left out).
pub fn header_values(headers: Vec<(&'static str, String)>) -> ForwardingValues {
    headers
        .into_iter()
        .filter_map(|(name, value)| {
            let value = HeaderValue::try_from(value).ok()?;
            // Cloned once here: `Bytes` then shares instead of copying.
            drop(value.clone());
            Some((name, value))
        })
        .collect()
}

fn is_header_safe(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// A `Host` value safe to repeat: host characters and a port only.
fn is_token_like(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn an_untrusted_peer_gets_its_own_values_only() {
        let sent = Sent {
            x_forwarded_for: Some("6.6.6.6"),
            x_forwarded_proto: Some("https"),
            x_forwarded_host: Some("evil.example"),
            forwarded: Some("for=6.6.6.6"),
            x_real_ip: Some("6.6.6.6"),
        };
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        let got = upstream_headers(
            peer,
            "http",
            Some("app.example"),
            &sent,
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(
            got,
            vec![
                ("x-forwarded-for", "203.0.113.9".to_owned()),
                ("x-forwarded-proto", "http".to_owned()),
                ("x-forwarded-host", "app.example".to_owned()),
                (
                    "forwarded",
                    "for=203.0.113.9;proto=http;host=app.example".to_owned()
                ),
                ("x-real-ip", "203.0.113.9".to_owned()),
            ]
        );
        assert_eq!(
            client_address(peer, sent.x_forwarded_for, &nets(&["10.0.0.0/8"])),
            peer
        );
    }

    #[test]
    fn the_cache_answers_as_upstream_headers_per_peer_and_host() {
        let cache = ForwardingCache::new("https");
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        let other: IpAddr = "::ffff:198.51.100.1".parse().unwrap();
        for (peer, host) in [
            (peer, Some("app.example")),
            (peer, Some("app.example")),
            (peer, Some("other.example")),
            (peer, None),
            (other, Some("app.example")),
            (other, Some("app.example")),
        ] {
            let want = header_values(upstream_headers(peer, "https", host, &Sent::default(), &[]));
            assert_eq!(cache.untrusted(peer, host), want, "{peer} {host:?}");
        }
        assert_eq!(cache.cache.len(), 4);
    }

    #[test]
    fn forwarding_headers_are_known_in_every_spelling() {
        for name in [
            "X-Forwarded-For",
            "x_forwarded_for",
            "X_REAL_IP",
            "Forwarded",
            "x-forwarded_host",
        ] {
            assert!(is_forwarding_header(name.as_bytes()), "{name}");
        }
        for name in [
            "X-Forwarded",
            "X-Forwarded-For2",
            "Forwarded-For",
            "X-Real-IP ",
        ] {
            assert!(!is_forwarding_header(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn a_trusted_front_keeps_the_chain_and_names_the_client() {
        let trusted = nets(&["10.0.0.0/8", "::1/128"]);
        let sent = Sent {
            x_forwarded_for: Some("198.51.100.7, 10.1.1.1"),
            x_forwarded_proto: Some("https"),
            ..Sent::default()
        };
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let got = upstream_headers(peer, "http", Some("app.example"), &sent, &trusted);
        assert_eq!(got[0].1, "198.51.100.7, 10.1.1.1, 10.0.0.2");
        assert_eq!(got[1].1, "https");
        assert_eq!(got[4].1, "198.51.100.7");
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        assert!(is_trusted(mapped, &trusted));
        assert_eq!(
            client_address(peer, Some("garbage, 10.2.2.2"), &trusted),
            "10.2.2.2".parse::<IpAddr>().unwrap(),
            "all trusted: the first"
        );
        assert_eq!(client_address(peer, None, &trusted), peer);
    }
}
