//! The gate's share of a passing request allocates nothing: a counting
//! allocator compares the gate's work on a request head with a replay of
//! the same Pingora calls on an identical head, given the same values.

use std::net::IpAddr;
use std::sync::Arc;

use pingora::http::RequestHeader;
use wechat_oauth::counting_allocator::{allocations, CountingAllocator};
use wechat_oauth::seal::Sealer;
use wechat_oauth::session::seal_session;
use wechat_oauth::{Config, Decision, Gate, Identity, Session};

use super::{joined_cookie_header, request_parts, GateCtx, WechatGate};

#[global_allocator]
static COUNTING: CountingAllocator = CountingAllocator;

const PEER: &str = "203.0.113.9";

struct Fixture {
    gate: WechatGate,
    cookie: String,
}

impl Fixture {
    fn new() -> Fixture {
        let toml = r#"
[wechat]
appid = "wx1234567890abcdef"
secret = "app-secret"
[gateway]
upstream = "127.0.0.1:3000"
public_url = "http://app.example"
cookie_secret = "0123456789abcdef0123456789abcdef"
"#;
        let config = Config::from_toml(toml, |_| None).unwrap();
        let sealer = Sealer::with_rotation(&config.gateway.cookie_secrets).unwrap();
        let name = config.gateway.session_cookie_name.clone();
        let gate = WechatGate::new(Arc::new(Gate::new(config).unwrap()));
        let identity = Identity {
            openid: "oLVPpjqs9BhvzwPj5A-vTYAX3GLc".into(),
            unionid: Some("o6_bmasdasdsad6_2sgVt7hMZOPfL".into()),
            scope: "snsapi_userinfo".into(),
            nickname: Some("张三 Zoë".into()),
            ..Default::default()
        };
        let hour = std::time::Duration::from_secs(3600);
        let session = Session::starting_now(Arc::new(identity), "sid-allocations".into(), hour);
        let cookie = format!("{name}={}", seal_session(&sealer, &session));
        Fixture { gate, cookie }
    }

    /// A request head as Pingora parses it from the wire.
    fn request(&self, cookie: &str) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/orders?id=1", None).unwrap();
        for (name, value) in [
            ("Host", "app.example"),
            ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64)"),
            ("Accept", "*/*"),
            ("Cookie", cookie),
        ] {
            req.append_header(name, value).unwrap();
        }
        req
    }

    /// The gate's work on a request from `PEER`, as the proxy phases run
    /// it: the decision (`request_filter`), then the upstream request
    /// (`upstream_request_filter`), on the head itself.
    fn pass(&self, req: &mut RequestHeader) -> GateCtx {
        let gate = self.gate.gate();
        let peer: IpAddr = PEER.parse().unwrap();
        let decision = {
            let cookie = joined_cookie_header(req);
            let client = wechat_oauth::forwarded::client_address(
                peer,
                None,
                &gate.config().gateway.trusted_proxies,
            );
            gate.decide(&request_parts(req, cookie.as_deref(), Some(client)))
        };
        let mut ctx = GateCtx::default();
        match decision {
            Decision::Pass(pass) => ctx.pass = Some(pass),
            other => panic!("expected a pass, got {other:?}"),
        }
        self.gate
            .prepare_upstream_request(Some(peer), req, &ctx)
            .unwrap();
        ctx
    }

    /// The Pingora calls the gate makes for `ctx`'s pass, with values built
    /// beforehand: what writing these headers costs in Pingora itself.
    fn replay(&self, req: &mut RequestHeader, ctx: &GateCtx, cookie: Option<&str>) -> u64 {
        let identity: Vec<_> = ctx.identity().unwrap().upstream_header_values().to_vec();
        let peer: IpAddr = PEER.parse().unwrap();
        let forwarding = self
            .gate
            .gate()
            .untrusted_forwarding(peer, Some("app.example"))
            .unwrap();
        let ((), n) = allocations(|| {
            match cookie {
                Some(cookie) => req.insert_header("Cookie", cookie).unwrap(),
                None => drop(req.remove_header(&http::header::COOKIE)),
            }
            for (name, value) in &identity {
                req.append_header(*name, value.clone()).unwrap();
            }
            for (name, value) in forwarding.iter() {
                req.insert_header(*name, value.clone()).unwrap();
            }
        });
        n
    }
}

fn wire(req: &RequestHeader) -> String {
    let mut buf = Vec::new();
    req.header_to_h1_wire(&mut buf);
    String::from_utf8(buf).unwrap()
}

#[test]
fn deciding_a_passing_request_allocates_nothing() {
    let f = Fixture::new();
    let mut warm = f.request(&f.cookie);
    f.pass(&mut warm);
    let req = f.request(&f.cookie);
    let gate = f.gate.gate();
    let (decision, n) = allocations(|| {
        let cookie = joined_cookie_header(&req);
        gate.decide(&request_parts(&req, cookie.as_deref(), None))
    });
    assert!(matches!(decision, Decision::Pass(_)), "{decision:?}");
    assert_eq!(n, 0, "allocations in Gate::decide for a cached session");
}

#[test]
fn the_gates_share_of_a_passing_request_allocates_nothing() {
    let f = Fixture::new();
    let mut warm = f.request(&f.cookie);
    f.pass(&mut warm);

    let mut req = f.request(&f.cookie);
    let (ctx, gate_total) = allocations(|| f.pass(&mut req));
    let mut replayed = f.request(&f.cookie);
    let pingora = f.replay(&mut replayed, &ctx, None);
    assert_eq!(
        wire(&req),
        wire(&replayed),
        "the replay makes the same head"
    );
    assert!(wire(&req).contains("X-WeChat-OpenID: oLVPpjqs9BhvzwPj5A-vTYAX3GLc\r\n"));
    assert!(!wire(&req).contains("Cookie"), "{}", wire(&req));
    eprintln!(
        "a passing request: {gate_total} allocations, {pingora} of them in Pingora's header calls"
    );
    assert_eq!(
        gate_total,
        pingora,
        "the gate's own share: {} allocations",
        gate_total - pingora
    );
}

#[test]
fn an_application_cookie_beside_the_session_costs_one_allocation() {
    let f = Fixture::new();
    let both = format!("theme=dark; {}", f.cookie);
    let mut warm = f.request(&both);
    f.pass(&mut warm);

    let mut req = f.request(&both);
    let (ctx, gate_total) = allocations(|| f.pass(&mut req));
    let mut replayed = f.request(&both);
    let pingora = f.replay(&mut replayed, &ctx, Some("theme=dark"));
    assert_eq!(wire(&req), wire(&replayed));
    assert!(
        wire(&req).contains("Cookie: theme=dark\r\n"),
        "{}",
        wire(&req)
    );
    // The rewritten `Cookie` value: the one string the gate must build.
    assert_eq!(gate_total - pingora, 1);
}
