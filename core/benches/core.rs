//! Micro-benchmarks of the per-request work (`cargo bench -p wechat-oauth`).
//! Targets: cookie open + verify ≤ 2 µs, authenticated decision ≤ 3 µs,
//! authorize URL ≤ 1 µs, push verify + parse ≤ 10 µs.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use wechat_oauth::authorize::{authorize_url, Scope};
use wechat_oauth::seal::Sealer;
use wechat_oauth::secret::Secret;
use wechat_oauth::session::{open_session, seal_session, Identity, Session};
use wechat_oauth::{Config, Decision, Gate, RequestParts};

const NOW: u64 = 1_800_000_000;
const KEY43: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

fn session(nickname: &str) -> Session {
    Session {
        identity: Identity {
            openid: "oLVPpjqs9BhvzwPj5A-vTYAX3GLc".into(),
            unionid: Some("o6_bmasdasdsad6_2sgVt7hMZOPfL".into()),
            scope: "snsapi_userinfo".into(),
            nickname: Some(nickname.into()),
            headimgurl: Some("https://thirdwx.qlogo.cn/mmopen/vi_32/abcdefghijklmnop/132".into()),
            snapshot: false,
            ..Default::default()
        }
        .bounded()
        .into(),
        sid: "s".repeat(32),
        issued_at: NOW,
        expires_at: NOW + 7 * 86400,
        seen_at: NOW,
    }
}

fn gate() -> Gate {
    let toml = format!(
        "[wechat]\nappid = \"wx1234567890abcdef\"\nsecret = \"bench-secret\"\nscope = \"snsapi_userinfo\"\n\
         push_token = \"Tok3n\"\nencoding_aes_key = \"{KEY43}\"\n\
         [gateway]\npublic_url = \"https://app.example.com\"\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\n"
    );
    Gate::new(Config::from_toml(&toml, |_| None).unwrap()).unwrap()
}

fn cookies(c: &mut Criterion) {
    let sealer = Sealer::new(&Secret::new("0123456789abcdef0123456789abcdef")).unwrap();
    for (label, nickname) in [
        ("typical", "微信用户 🐼"),
        ("longest", &"🐼微信".repeat(40)[..]),
    ] {
        let s = session(nickname);
        let sealed = seal_session(&sealer, &s);
        c.bench_function(&format!("session cookie seal ({label} nickname)"), |b| {
            b.iter(|| seal_session(&sealer, black_box(&s)))
        });
        c.bench_function(
            &format!("session cookie open + verify ({label} nickname)"),
            |b| b.iter(|| open_session(&sealer, black_box(&sealed), NOW)),
        );
    }
}

fn decisions(c: &mut Criterion) {
    let g = gate();
    let sealer = Sealer::new(&Secret::new("0123456789abcdef0123456789abcdef")).unwrap();
    let cookie = format!(
        "theme=dark; __Host-wechat_session={}",
        seal_session(&sealer, &session("微信用户 🐼"))
    );
    let req = |cookie: Option<&'static str>| RequestParts {
        method: "GET",
        path: "/orders/42",
        query: Some("tab=1"),
        cookie,
        user_agent: Some("Mozilla/5.0 (Linux; Android 14) MicroMessenger/8.0.47"),
        accept: Some("text/html"),
        x_requested_with: None,
        accept_language: Some("zh-CN,zh;q=0.9"),
        client_addr: None,
        original_uri: None,
        original_method: None,
        origin: None,
        access_control_request_method: None,
        policy: None,
    };
    let cookie: &'static str = Box::leak(cookie.into_boxed_str());
    let authed = req(Some(cookie));
    assert!(matches!(g.decide_at(&authed, NOW), Decision::Pass(_)));
    c.bench_function("decision: authenticated request", |b| {
        b.iter(|| g.decide_at(black_box(&authed), NOW))
    });
    let anonymous = req(None);
    c.bench_function(
        "decision: unauthenticated WeChat request (authorize URL + state cookie)",
        |b| b.iter(|| g.decide_at(black_box(&anonymous), NOW)),
    );
    c.bench_function("authorize URL", |b| {
        b.iter(|| {
            authorize_url(
                "https://open.weixin.qq.com",
                "wx1234567890abcdef",
                black_box("https://app.example.com/_wechat/callback"),
                Scope::Userinfo,
                "aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gH",
                Default::default(),
            )
        })
    });
}

fn pushes(c: &mut Criterion) {
    use wechat_oauth::push;
    let token = Secret::new("Tok3n");
    let xml = "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oLVPpjqs9BhvzwPj5A-vTYAX3GLc]]></FromUserName>\
<CreateTime>1800000000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[SCAN]]></Event>\
<EventKey><![CDATA[aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gH]]></EventKey><Ticket><![CDATA[gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2taZ2Z3TVRtNzJXV1Brb3ZhYmJJAAIEZ23sUwMEmm3sUw==]]></Ticket></xml>";
    let sig = push::signature(&["Tok3n", "1800000000", "n0nce"]);
    c.bench_function("push: signature check + XML parse", |b| {
        b.iter(|| {
            push::verify(&token, "1800000000", "n0nce", black_box(&sig), NOW).unwrap();
            push::parse_event(black_box(xml.as_bytes())).unwrap()
        })
    });
    let encrypted = push_encrypted(xml);
    let body = format!("<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>");
    let msg_sig = push::signature(&["Tok3n", "1800000000", "n0nce", &encrypted]);
    let key = Secret::new(KEY43);
    c.bench_function("push: safe-mode verify + AES decrypt", |b| {
        b.iter(|| {
            push::open_safe_mode(
                black_box(body.as_bytes()),
                &token,
                &key,
                "wxAPP",
                "1800000000",
                "n0nce",
                &msg_sig,
                NOW,
            )
            .unwrap()
        })
    });
}

/// A safe-mode body as WeChat makes it (the emulator's way), for the benchmark.
fn push_encrypted(xml: &str) -> String {
    use aes::cipher::{block_padding::NoPadding, BlockEncryptMut, KeyIvInit};
    use base64::Engine;
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    let key = lenient.decode(format!("{KEY43}=")).unwrap();
    let mut plain = vec![7u8; 16];
    plain.extend_from_slice(&(xml.len() as u32).to_be_bytes());
    plain.extend_from_slice(xml.as_bytes());
    plain.extend_from_slice(b"wxAPP");
    let pad = 32 - plain.len() % 32;
    plain.extend(std::iter::repeat_n(pad as u8, pad));
    let n = plain.len();
    let out = cbc::Encryptor::<aes::Aes256>::new_from_slices(&key, &key[..16])
        .unwrap()
        .encrypt_padded_mut::<NoPadding>(&mut plain, n)
        .unwrap()
        .to_vec();
    base64::engine::general_purpose::STANDARD.encode(out)
}

fn parsing(c: &mut Criterion) {
    let ok = br#"{"access_token":"ACCESS_TOKEN_0123456789","expires_in":7200,"refresh_token":"REFRESH_TOKEN_0123456789","openid":"oLVPpjqs9BhvzwPj5A-vTYAX3GLc","scope":"snsapi_userinfo","unionid":"o6_bmasdasdsad6_2sgVt7hMZOPfL"}"#;
    let err = br#"{"errcode":40029,"errmsg":"invalid code, rid: 6543210-abcdef"}"#;
    c.bench_function("sns: token answer parse", |b| {
        b.iter(|| wechat_oauth::sns::parse_token_response(black_box(ok)).unwrap())
    });
    c.bench_function("sns: errcode answer parse", |b| {
        b.iter(|| wechat_oauth::sns::parse_token_response(black_box(err)).unwrap_err())
    });
}

criterion_group!(benches, cookies, decisions, pushes, parsing);
criterion_main!(benches);
