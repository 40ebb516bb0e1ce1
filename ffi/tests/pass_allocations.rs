//! A host that reuses its decision handle (`wechat_oauth_client_decide_into`)
//! makes no allocation in the library for a passing request with a known
//! session cookie, through every call the nginx module makes for a pass.

use std::sync::Arc;

use core_lib::counting_allocator::{allocations, CountingAllocator};
use core_lib::seal::Sealer;
use core_lib::session::seal_session;
use core_lib::{Config, Identity, Session};
use wechat_oauth::*;

#[global_allocator]
static COUNTING: CountingAllocator = CountingAllocator;

const TOML: &str = r#"
[wechat]
appid = "wx1234567890abcdef"
secret = "app-secret"
[gateway]
public_url = "http://app.example"
public_paths = ["/static/"]
cookie_secret = "0123456789abcdef0123456789abcdef"
"#;

fn s(text: &str) -> wechat_oauth_str {
    wechat_oauth_str {
        data: text.as_ptr().cast(),
        len: text.len(),
    }
}

const NONE: wechat_oauth_str = wechat_oauth_str {
    data: std::ptr::null(),
    len: 0,
};

fn session_cookie() -> String {
    let config = Config::from_toml(TOML, |_| None).unwrap();
    let sealer = Sealer::with_rotation(&config.gateway.cookie_secrets).unwrap();
    let identity = Identity {
        openid: "oLVPpjqs9BhvzwPj5A-vTYAX3GLc".into(),
        unionid: Some("o6_bmasdasdsad6_2sgVt7hMZOPfL".into()),
        scope: "snsapi_userinfo".into(),
        nickname: Some("张三 Zoë".into()),
        ..Default::default()
    };
    let session = Session::starting_now(
        Arc::new(identity),
        "sid-ffi-allocations".into(),
        std::time::Duration::from_secs(3600),
    );
    format!(
        "{}={}",
        config.gateway.session_cookie_name,
        seal_session(&sealer, &session)
    )
}

/// The bytes behind `v`, if any.
unsafe fn bytes<'a>(v: wechat_oauth_str) -> Option<&'a [u8]> {
    (!v.data.is_null()).then(|| std::slice::from_raw_parts(v.data.cast::<u8>(), v.len))
}

/// What the nginx module reads of a pass: kind, identity fields, identity
/// headers, the `Cookie` to forward and the response headers. Returns the
/// openid and the cookie, borrowed from the decision.
unsafe fn read_pass(
    decision: *const wechat_oauth_decision,
) -> (wechat_oauth_str, wechat_oauth_str) {
    let mut kind = wechat_oauth_decision_kind::Respond;
    assert_eq!(
        wechat_oauth_decision_get_kind(decision, &mut kind),
        wechat_oauth_result::Ok
    );
    assert_eq!(kind, wechat_oauth_decision_kind::Pass);
    let mut id: *const wechat_oauth_identity = std::ptr::null();
    assert_eq!(
        wechat_oauth_decision_identity(decision, &mut id),
        wechat_oauth_result::Ok
    );
    let mut openid = NONE;
    for field in [
        wechat_oauth_identity_field::Openid,
        wechat_oauth_identity_field::Unionid,
        wechat_oauth_identity_field::Scope,
        wechat_oauth_identity_field::User,
    ] {
        let mut v = NONE;
        assert_eq!(
            wechat_oauth_identity_get(id, field as u32, &mut v),
            wechat_oauth_result::Ok
        );
        if field == wechat_oauth_identity_field::Openid {
            openid = v;
        }
    }
    let mut count = 0;
    assert_eq!(
        wechat_oauth_identity_header_count(id, &mut count),
        wechat_oauth_result::Ok
    );
    assert_eq!(count, 5, "openid, user, scope, unionid, nickname");
    for i in 0..count {
        let (mut name, mut value) = (NONE, NONE);
        assert_eq!(
            wechat_oauth_identity_header(id, i, &mut name, &mut value),
            wechat_oauth_result::Ok
        );
    }
    let mut cookie = NONE;
    assert_eq!(
        wechat_oauth_decision_upstream_cookie(decision, &mut cookie),
        wechat_oauth_result::Ok
    );
    let mut headers = 0;
    assert_eq!(
        wechat_oauth_decision_header_count(decision, &mut headers),
        wechat_oauth_result::Ok
    );
    (openid, cookie)
}

#[test]
fn a_reused_decision_passes_a_known_session_with_no_allocation() {
    let session = session_cookie();
    let with_app_cookie = format!("theme=dark; {session}");
    let mut client: *const wechat_oauth_client = std::ptr::null();
    unsafe {
        assert_eq!(
            wechat_oauth_client_new_from_toml(TOML.as_ptr().cast(), TOML.len(), &mut client),
            wechat_oauth_result::Ok
        );
    }
    let request = |cookie: &str| wechat_oauth_request {
        method: s("GET"),
        path: s("/orders"),
        query: s("id=1"),
        cookie: s(cookie),
        user_agent: s("Mozilla/5.0 (X11; Linux x86_64)"),
        accept: s("*/*"),
        x_requested_with: NONE,
        accept_language: NONE,
        client_address: s("203.0.113.9"),
        x_forwarded_for: NONE,
        x_original_uri: NONE,
        x_original_method: NONE,
        origin: NONE,
        access_control_request_method: NONE,
    };
    let only_session = request(&session);
    let beside_app_cookie = request(&with_app_cookie);
    let mut decision: *mut wechat_oauth_decision = std::ptr::null_mut();
    unsafe {
        // The first request opens the cookie and makes the handle.
        assert_eq!(
            wechat_oauth_client_decide(client, &beside_app_cookie, &mut decision),
            wechat_oauth_result::Ok
        );
        read_pass(decision);
        for (req, want_cookie, gate_builds) in [
            (&only_session, None, 0),
            // The rewritten `Cookie` value: the one string the gate must build.
            (&beside_app_cookie, Some(&b"theme=dark"[..]), 1),
            (&only_session, None, 0),
        ] {
            let ((openid, cookie), n) = allocations(|| {
                assert_eq!(
                    wechat_oauth_client_decide_into(client, req, decision),
                    wechat_oauth_result::Ok
                );
                read_pass(decision)
            });
            assert_eq!(bytes(openid), Some(&b"oLVPpjqs9BhvzwPj5A-vTYAX3GLc"[..]));
            assert_eq!(bytes(cookie), want_cookie);
            assert_eq!(
                n, gate_builds,
                "allocations for a pass through a reused handle"
            );
        }
        // A public path with the application's cookies only: they are
        // forwarded as sent, copied into the handle's kept buffer.
        let mut public = request("theme=dark; lang=zh");
        public.path = s("/static/app.css");
        for round in 0..2 {
            let (cookie, n) = allocations(|| {
                assert_eq!(
                    wechat_oauth_client_decide_into(client, &public, decision),
                    wechat_oauth_result::Ok
                );
                let mut cookie = NONE;
                assert_eq!(
                    wechat_oauth_decision_upstream_cookie(decision, &mut cookie),
                    wechat_oauth_result::Ok
                );
                cookie
            });
            assert_eq!(bytes(cookie), Some(&b"theme=dark; lang=zh"[..]));
            if round == 1 {
                assert_eq!(n, 0, "the buffer is kept");
            }
        }
        // A fresh handle per request costs the handle itself.
        let (_, n) = allocations(|| {
            let mut fresh: *mut wechat_oauth_decision = std::ptr::null_mut();
            assert_eq!(
                wechat_oauth_client_decide(client, &only_session, &mut fresh),
                wechat_oauth_result::Ok
            );
            wechat_oauth_decision_free(fresh);
        });
        assert_eq!(n, 1, "one handle");
        wechat_oauth_decision_free(decision);
        wechat_oauth_client_free(client);
    }
}
