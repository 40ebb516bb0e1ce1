//! Several sites in one gateway (`[[site]]`): each request is answered by
//! the site its `Host` names (and, over TLS, the name the client asked for
//! in its handshake, SNI); a host no site serves gets `421 Misdirected
//! Request`, never another site's login.

use std::net::SocketAddr;
use std::sync::Arc;

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use prometheus::IntCounter;
use wechat_oauth_pingora::WechatGate;

/// The TLS server name (SNI) a client asked for, lowercase: set by the
/// handshake callback, read per request.
pub struct ServerName(pub String);

/// One site: its name, hosts, gate and default upstream.
pub struct Site {
    /// `[[site]] name`; `default` for a file without `[[site]]`.
    pub name: String,
    /// The host names it answers (empty: every host, a file without `[[site]]`).
    pub hosts: Vec<String>,
    /// Its gate (swapped on a reload).
    pub gate: WechatGate,
    /// Its `[gateway] upstream`, resolved at the start.
    pub upstream: SocketAddr,
    /// `wechat_gateway_site_requests_total{site, outcome}`: pass, gate,
    /// upstream_error.
    requests: [IntCounter; 3],
}

static SITE_REQUESTS: std::sync::LazyLock<prometheus::IntCounterVec> =
    std::sync::LazyLock::new(|| {
        prometheus::register_int_counter_vec!(
            "wechat_gateway_site_requests_total",
            "Requests answered, by site and by what the gate did (pass, gate, upstream_error)",
            &["site", "outcome"]
        )
        .expect("metric registers once")
    });

/// The access log's and the metrics' names of what the gate did with a request.
pub const OUTCOMES: [&str; 3] = ["pass", "gate", "upstream_error"];

impl Site {
    /// A site named `name` answering `hosts` (every host when empty).
    pub fn new(name: String, hosts: Vec<String>, gate: WechatGate, upstream: SocketAddr) -> Site {
        let requests = OUTCOMES.map(|o| SITE_REQUESTS.with_label_values(&[name.as_str(), o]));
        Site {
            name,
            hosts,
            gate,
            upstream,
            requests,
        }
    }

    /// Counts a request with its outcome (one of [`OUTCOMES`]).
    pub fn count(&self, outcome: &str) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.requests[i].inc();
        }
    }
}

/// A request's host name: the `Host` header (or, in HTTP/2, the
/// `:authority`), lowercase, without its port or a trailing dot; `None`
/// for two `Host` headers, a host that differs from the absolute URI's, or
/// one that is not a host name or address.
pub fn request_host(req: &RequestHeader) -> Option<String> {
    let mut headers = req.headers.get_all(http::header::HOST).iter();
    let from_header = match (headers.next(), headers.next()) {
        (Some(h), None) => Some(h.to_str().ok()?),
        (None, _) => None,
        _ => return None,
    };
    let from_uri = req.uri.authority().map(|a| a.as_str());
    let host = match (from_header, from_uri) {
        (Some(h), Some(u)) if !h.eq_ignore_ascii_case(u) => return None,
        (Some(h), _) | (None, Some(h)) => h,
        (None, None) => return None,
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => {
            let (address, port) = rest.split_once(']')?;
            if !(port.is_empty() || port.strip_prefix(':').is_some_and(is_port)) {
                return None;
            }
            return address
                .parse::<std::net::Ipv6Addr>()
                .ok()
                .map(|a| a.to_string());
        }
        None => match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return None,
            None => host,
        },
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then_some(name)
}

fn is_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

/// The index of the site that answers `session`, or `None`: no site
/// serves its host, or its TLS server name belongs to another site than
/// its `Host`.
pub fn site_of(sites: &[Site], session: &Session) -> Option<usize> {
    if let [only] = sites {
        if only.hosts.is_empty() {
            return Some(0);
        }
    }
    let host = request_host(session.req_header())?;
    let index = sites.iter().position(|s| s.hosts.contains(&host))?;
    let server_name = session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|tls| tls.extension.get::<ServerName>());
    match server_name {
        Some(ServerName(name)) if !sites[index].hosts.contains(name) => None,
        _ => Some(index),
    }
}

/// Answers a request for a host no site serves: `421 Misdirected
/// Request`, text or JSON (by `Accept`), the connection closed after it.
///
/// Errors: when writing to the client fails.
pub async fn misdirected(session: &mut Session) -> pingora::Result<()> {
    let json = session
        .req_header()
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    let (body, kind): (&[u8], _) = if json {
        (
            br#"{"error":"misdirected","message":"no site of this gateway answers for this host"}"#,
            "application/json",
        )
    } else {
        (
            b"421 Misdirected Request: no site of this gateway answers for this host.\n",
            "text/plain; charset=utf-8",
        )
    };
    let mut head = ResponseHeader::build(421, Some(4))?;
    head.insert_header(http::header::CONTENT_TYPE, kind)?;
    head.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    head.insert_header("x-content-type-options", "nosniff")?;
    head.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    session.set_keepalive(None);
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(head), head_only)
        .await?;
    if !head_only {
        session
            .write_response_body(Some(bytes::Bytes::from_static(body)), true)
            .await?;
    }
    Ok(())
}

/// Shared by the proxy, the reload and the graceful stop.
pub type SiteList = Arc<Vec<Site>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(host: &[&str], uri: &str) -> Option<String> {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.set_uri(uri.parse().unwrap());
        for h in host {
            req.append_header("Host", *h).unwrap();
        }
        request_host(&req)
    }

    #[test]
    fn the_host_is_read_strictly() {
        assert_eq!(
            host_of(&["Shop.Example.COM:8443"], "/"),
            Some("shop.example.com".into())
        );
        assert_eq!(
            host_of(&["shop.example.com."], "/"),
            Some("shop.example.com".into())
        );
        assert_eq!(host_of(&["[::1]:80"], "/"), Some("::1".into()));
        assert_eq!(host_of(&["127.0.0.1"], "/"), Some("127.0.0.1".into()));
        assert_eq!(
            host_of(&[], "http://blog.example.com/x"),
            Some("blog.example.com".into())
        );
        // Two Host headers, a Host that is not the absolute URI's, junk: none.
        assert_eq!(host_of(&["a.example", "b.example"], "/"), None);
        assert_eq!(host_of(&["a.example"], "http://b.example/"), None);
        for junk in [
            "a.example:x",
            "user@a.example",
            "a_b.example",
            "a example",
            "",
            "[::1",
        ] {
            assert_eq!(host_of(&[junk], "/"), None, "{junk:?}");
        }
    }
}
