//! Fuzz target bodies: one function per input the gate takes from the
//! network or a user. Each takes arbitrary bytes, must never panic, and
//! asserts the invariants that make the input safe (no 5xx for bad input,
//! header-safe values, return paths on our origin, no panic across the C
//! ABI). The libFuzzer binaries in `fuzz/libfuzzer` call them, and
//! `tests/replay.rs` runs every committed corpus and regression input
//! through them in the normal test command.
//!
//! Inputs with several fields are split on the byte `0xFF`, which never
//! occurs in UTF-8, so a field boundary is never mistaken for text.

use std::borrow::Cow;
use std::sync::LazyLock;

use base64::Engine as _;
use wechat_oauth::flow::SCENE_COOKIE;
use wechat_oauth::push;
use wechat_oauth::seal::Sealer;
use wechat_oauth::secret::Secret;
use wechat_oauth::session::{open_session, SESSION_COOKIE};
use wechat_oauth::state::{
    open_state, safe_return_path, seal_state, LoginApp, STATE_COOKIE_PREFIX,
};
use wechat_oauth::{sns, Config, Decision, Gate, RequestParts};

/// Every target by name: the directory names under `corpus/` and
/// `regressions/`, and the libFuzzer binaries' names.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("request", request),
    ("return_path", return_path),
    ("cookies", cookies),
    ("push", push_event),
    ("safe_mode", safe_mode),
    ("sns_json", sns_json),
    ("config", config),
    ("c_abi", c_abi),
    ("canonical_path", canonical_path),
];

/// The gate's configuration in every target.
pub const CONFIG: &str = r#"
[wechat]
appid = "wx1234567890abcdef"
secret = "fuzz-app-secret"
scope = "snsapi_base"
open_base = "http://127.0.0.1:9"
api_base = "http://127.0.0.1:9"
# Plaintext mode, so a signed push reaches the XML parser and the replay
# check; safe mode's decryption has its own target.
push_token = "fuzzpushtoken"

[gateway]
public_url = "https://app.example.com"
cookie_secret = "fuzz-cookie-secret-0123456789abcdef-0123456789"
userinfo_paths = ["/profile"]
public_paths = ["/static/"]
session_idle_secs = 3600
desktop_login = "scene_qr"
"#;

const ORIGIN: &str = "https://app.example.com";
const OPEN_BASE: &str = "http://127.0.0.1:9";
const NOW: u64 = 1_800_000_000;

static GATE: LazyLock<Gate> =
    LazyLock::new(|| Gate::new(Config::from_toml(CONFIG, |_| None).unwrap()).unwrap());
static SEALER: LazyLock<Sealer> = LazyLock::new(|| {
    Sealer::new(&Secret::new(
        "fuzz-cookie-secret-0123456789abcdef-0123456789",
    ))
    .unwrap()
});

/// `data` split on `0xFF` into exactly `n` fields (missing ones empty).
fn raw_fields(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut fields: Vec<&[u8]> = data.splitn(n, |b| *b == 0xFF).collect();
    fields.resize(n, &[]);
    fields
}

fn fields(data: &[u8], n: usize) -> Vec<Cow<'_, str>> {
    raw_fields(data, n)
        .into_iter()
        .map(String::from_utf8_lossy)
        .collect()
}

fn opt(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// A value the gate puts in a response or upstream header must be one
/// `http` accepts: no CR, LF or NUL, so no header injection.
fn assert_header_safe(name: &str, value: &str) {
    assert!(
        http::HeaderName::from_bytes(name.as_bytes()).is_ok(),
        "header name {name:?}"
    );
    assert!(
        http::HeaderValue::from_str(value).is_ok(),
        "header {name} value {value:?}"
    );
}

fn assert_on_origin(path: &str) {
    let base = url::Url::parse(ORIGIN).unwrap();
    let joined = base.join(path).expect("a return path is a URL reference");
    assert_eq!(joined.origin(), base.origin(), "{path:?} leaves the origin");
    assert!(path.starts_with('/') && !path.starts_with("//"), "{path:?}");
}

/// Checks a decision: bad input never gets a 5xx, every header the gate
/// makes is safe (the Cookie it passes on is as safe as the one it got),
/// redirects go to our origin or WeChat's authorize page.
fn check_decision(decision: Decision, cookie_in: &str) {
    match decision {
        Decision::Pass(pass) => {
            if let Some(identity) = &pass.identity {
                for (name, value) in identity.upstream_headers() {
                    assert_header_safe(name, &value);
                }
                // The header values the proxies write: the same, all built.
                let values = identity.upstream_header_values();
                assert_eq!(values.len(), identity.upstream_headers().count());
            }
            if let Some(cookie) = pass.upstream_cookie.value(Some(cookie_in)) {
                if http::HeaderValue::from_str(cookie_in).is_ok() {
                    assert_header_safe("cookie", cookie);
                }
            }
            if let Some(cookie) = &pass.set_cookie {
                assert_header_safe("set-cookie", cookie);
            }
        }
        Decision::Reply(reply) => {
            assert!(reply.status < 500, "status {} for bad input", reply.status);
            for (name, value) in &reply.headers {
                assert_header_safe(name, value);
                if name.eq_ignore_ascii_case("location") {
                    let local = value
                        .strip_prefix(ORIGIN)
                        .filter(|rest| rest.starts_with('/'));
                    match local {
                        Some(path) => assert_on_origin(path),
                        None if value.starts_with('/') => assert_on_origin(value),
                        None => assert!(value.starts_with(OPEN_BASE), "Location {value:?}"),
                    }
                }
            }
        }
        Decision::Call(_) | Decision::NeedsBody { .. } => {}
    }
}

/// A request as the gate sees it: method, path, query, Cookie,
/// User-Agent, Accept, X-Requested-With, Accept-Language, then two fields
/// that are sealed with the gate's key into a session cookie (a JSON
/// payload) and a state cookie (its return path) for the query's `state`,
/// so the decision's paths past the decryption are reached too; then
/// Origin and Access-Control-Request-Method (CORS preflights).
pub fn request(data: &[u8]) {
    let f = fields(data, 12);
    let mut cookie = f[3].to_string();
    if !f[8].is_empty() {
        cookie = format!(
            "{cookie}; {SESSION_COOKIE}={}",
            SEALER.seal(SESSION_COOKIE, &f[8])
        );
    }
    if !f[9].is_empty() {
        let state = f[2]
            .split('&')
            .find_map(|p| p.strip_prefix("state="))
            .unwrap_or("");
        if wechat_oauth::state::is_valid_state(state) {
            let sealed = seal_state(&SEALER, state, &f[9], LoginApp::OfficialAccount, NOW + 60);
            cookie = format!("{cookie}; {STATE_COOKIE_PREFIX}{state}={sealed}");
        }
    }
    let parts = RequestParts {
        method: if f[0].is_empty() { "GET" } else { &f[0] },
        path: if f[1].is_empty() { "/" } else { &f[1] },
        query: opt(&f[2]),
        cookie: opt(&cookie),
        user_agent: opt(&f[4]),
        accept: opt(&f[5]),
        x_requested_with: opt(&f[6]),
        accept_language: opt(&f[7]),
        client_addr: None,
        original_uri: None,
        original_method: None,
        origin: opt(&f[10]),
        access_control_request_method: opt(&f[11]),
        policy: None,
    };
    check_decision(GATE.decide_at(&parts, NOW), &cookie);
    let _ = GATE.decide_auth(&parts);
}

/// A `rd` return path: it stays on our origin or is refused.
pub fn return_path(data: &[u8]) {
    let rd = String::from_utf8_lossy(data);
    for prefix in ["/_wechat", "/auth"] {
        if let Some(path) = safe_return_path(&rd, ORIGIN, prefix) {
            assert_on_origin(&path);
            assert!(!path.chars().any(char::is_control), "{path:?}");
            assert!(
                path.strip_prefix(prefix)
                    .is_none_or(|rest| !rest.is_empty() && !rest.starts_with(['/', '?', '#'])),
                "{path:?} goes back into the gate"
            );
        }
    }
}

/// Cookie values: a raw value opened as session, state and scene cookie;
/// a payload sealed with the gate's key and then opened (what a session
/// holds must be header-safe); a whole Cookie header.
pub fn cookies(data: &[u8]) {
    let f = fields(data, 3);
    let (state, value, payload) = (&f[0], &f[1], &f[2]);
    let _ = open_session(&SEALER, value, NOW);
    let _ = open_state(&SEALER, state, value, NOW);
    let _ = SEALER.open(SCENE_COOKIE, value);
    if let Some(session) = open_session(&SEALER, &SEALER.seal(SESSION_COOKIE, payload), NOW) {
        for (name, value) in session.identity.upstream_headers() {
            assert_header_safe(name, &value);
        }
    }
    if wechat_oauth::state::is_valid_state(state) {
        let sealed = seal_state(&SEALER, state, payload, LoginApp::OfficialAccount, NOW + 60);
        if let Some(opened) = open_state(&SEALER, state, &sealed, NOW) {
            assert_eq!(opened.return_to, **payload);
        }
    }
    let header = String::from_utf8_lossy(data);
    let _ = GATE.session_identity(&header);
}

/// A push: the raw query and body as WeChat's server would send them,
/// then the body again under a valid signature so the XML parser sees it.
pub fn push_event(data: &[u8]) {
    let f = raw_fields(data, 3);
    let query = String::from_utf8_lossy(f[0]);
    let reply = handle_push(opt(&query), f[1]);
    assert!(reply.status < 500, "push answered {}", reply.status);
    let _ = push::parse_event(f[1]);
    let nonce = String::from_utf8_lossy(f[2]);
    // A pair of its own per run: an earlier input may have bound the same
    // (timestamp, nonce) to this input's forged body, and that body again
    // is WeChat's retry, rightly accepted.
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nonce: String = nonce
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .chain(run.to_string().chars())
        .collect();
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .to_string();
    let signature = push::signature(&["fuzzpushtoken", &timestamp, &nonce]);
    let query = format!("signature={signature}&timestamp={timestamp}&nonce={nonce}");
    let reply = handle_push(Some(&query), f[1]);
    assert!(reply.status < 500, "signed push answered {}", reply.status);
    // The same signed (timestamp, nonce) with another body is a replay.
    let mut forged = f[1].to_vec();
    forged.push(b'x');
    let replayed = handle_push(Some(&query), &forged);
    assert_eq!(
        replayed.status, 401,
        "a replayed push answered {}",
        replayed.status
    );
}

/// A request path: its canonical form is canonical (idempotent, no dot or
/// empty segment), and the gate's verdict depends on that form only.
pub fn canonical_path(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let Ok(canonical) = wechat_oauth::path::canonical_path(&raw) else {
        let parts = RequestParts {
            method: "GET",
            path: &raw,
            ..RequestParts::default()
        };
        if let Decision::Pass(_) = GATE.decide_at(&parts, NOW) {
            panic!("{raw:?} has no canonical form but passed");
        }
        return;
    };
    let again = wechat_oauth::path::canonical_path(&canonical).expect("canonical stays valid");
    assert_eq!(again, canonical, "not idempotent for {raw:?}");
    assert!(matches!(again, std::borrow::Cow::Borrowed(_)));
    assert!(
        canonical.split('/').skip(1).all(|s| s != "." && s != ".."),
        "{canonical:?} has a dot segment"
    );
    assert!(!canonical.contains("//"), "{canonical:?}");
    let verdict = |path: &str| {
        let parts = RequestParts {
            method: "GET",
            path,
            x_requested_with: Some("XMLHttpRequest"),
            ..RequestParts::default()
        };
        match GATE.decide_at(&parts, NOW) {
            Decision::Pass(pass) => (0, pass.identity.is_some()),
            Decision::Reply(reply) => (reply.status, false),
            Decision::Call(_) => (1, false),
            Decision::NeedsBody { .. } => (2, false),
        }
    };
    assert_eq!(
        verdict(&raw),
        verdict(&canonical),
        "{raw:?} vs {canonical:?}"
    );
}

/// The gate's push handling; with the in-memory store it never waits.
fn handle_push(query: Option<&str>, body: &[u8]) -> wechat_oauth::Reply {
    futures_util::FutureExt::now_or_never(GATE.handle_push(query, body))
        .expect("an in-memory gate answers a push without IO")
}

/// Safe-mode decryption: arbitrary ciphertext (base64 of the input) under
/// a valid `msg_signature`, so the AES-CBC, padding and length checks see
/// it; the raw input as a whole envelope; and a reply message of the input
/// sealed and opened again.
pub fn safe_mode(data: &[u8]) {
    let token = Secret::new("fuzzpushtoken");
    let key = Secret::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG");
    let encrypt = base64::engine::general_purpose::STANDARD.encode(data);
    let body = format!("<xml><ToUserName>gh_1</ToUserName><Encrypt>{encrypt}</Encrypt></xml>");
    let ts = NOW.to_string();
    let signature = push::signature(&["fuzzpushtoken", &ts, "n", &encrypt]);
    let _ = push::open_safe_mode(
        body.as_bytes(),
        &token,
        &key,
        "wx1234567890abcdef",
        &ts,
        "n",
        &signature,
        NOW,
    );
    let _ = push::open_safe_mode(data, &token, &key, "wx1234567890abcdef", &ts, "n", "x", NOW);
    // A reply sealed from any text opens back to exactly that text.
    let text = String::from_utf8_lossy(data);
    let reply = push::text_reply("oUser", "gh_1", NOW, &text);
    let sealed = push::seal_safe_mode(&reply, &token, &key, "wx1234567890abcdef", NOW, "n")
        .expect("a valid key seals");
    let signed = sealed
        .split("<MsgSignature><![CDATA[")
        .nth(1)
        .and_then(|rest| rest.split("]]>").next())
        .expect("the reply is signed");
    let opened = push::open_safe_mode(
        sealed.as_bytes(),
        &token,
        &key,
        "wx1234567890abcdef",
        &ts,
        "n",
        signed,
        NOW,
    );
    assert_eq!(
        opened.as_deref(),
        Ok(reply.as_bytes()),
        "a sealed reply reopens"
    );
}

/// Every answer parser of the WeChat APIs.
pub fn sns_json(data: &[u8]) {
    let _ = sns::parse_token_response(data);
    let _ = sns::parse_userinfo(data);
    let _ = sns::parse_auth(data);
    let _ = sns::parse_basic_token(data);
    let _ = sns::parse_qr_ticket(data);
}

/// The TOML configuration, alone and with environment overrides.
pub fn config(data: &[u8]) {
    let f = fields(data, 2);
    let _ = Config::from_toml(&f[0], |_| None);
    let _ = Config::from_toml(&f[0], |name| {
        (name == "WECHAT_COOKIE_SECRET" || name == "WECHAT_APPID").then(|| f[1].to_string())
    });
    if let Ok(cfg) = Config::from_toml(&String::from_utf8_lossy(data), |_| None) {
        let _ = Gate::new(cfg);
    }
}

struct Client(*const ffi::wechat_oauth_client);
// The client is immutable and thread-safe behind the C ABI.
unsafe impl Send for Client {}
unsafe impl Sync for Client {}

static CLIENT: LazyLock<Client> = LazyLock::new(|| {
    let mut client = std::ptr::null();
    let result = unsafe {
        ffi::wechat_oauth_client_new_from_toml(CONFIG.as_ptr().cast(), CONFIG.len(), &mut client)
    };
    assert_eq!(result, ffi::wechat_oauth_result::Ok);
    Client(client)
});

fn c_str(bytes: &[u8], absent: bool) -> ffi::wechat_oauth_str {
    ffi::wechat_oauth_str {
        data: if absent {
            std::ptr::null()
        } else {
            bytes.as_ptr().cast()
        },
        len: if absent { 0 } else { bytes.len() },
    }
}

fn not_a_panic(result: ffi::wechat_oauth_result) -> ffi::wechat_oauth_result {
    assert_ne!(
        result,
        ffi::wechat_oauth_result::Panic,
        "a panic reached the C ABI"
    );
    assert_ne!(result, ffi::wechat_oauth_result::Internal);
    result
}

/// The C ABI's inputs as raw bytes (invalid UTF-8 included): a request's
/// fields (an empty field is passed as absent when the first byte's
/// bit for it is set), a login's return path, a Cookie header; then every
/// getter on the decision and identity it returns.
pub fn c_abi(data: &[u8]) {
    use ffi::*;
    let (mask, rest) = data.split_first().map_or((0, data), |(m, r)| (*m, r));
    let f = raw_fields(rest, 14);
    let field = |i: usize| c_str(f[i], f[i].is_empty() && mask & (1 << (i % 8)) != 0);
    let request = wechat_oauth_request {
        method: field(0),
        path: field(1),
        query: field(2),
        cookie: field(3),
        user_agent: field(4),
        accept: field(5),
        x_requested_with: field(6),
        accept_language: field(7),
        client_address: field(8),
        x_forwarded_for: field(9),
        x_original_uri: field(10),
        x_original_method: field(11),
        origin: field(12),
        access_control_request_method: field(13),
    };
    let client = CLIENT.0;
    unsafe {
        let mut decision = std::ptr::null_mut();
        if not_a_panic(wechat_oauth_client_decide(client, &request, &mut decision))
            == wechat_oauth_result::Ok
        {
            inspect(decision);
        }
        let mut login = std::ptr::null_mut();
        if not_a_panic(wechat_oauth_client_login(
            client,
            f[1].as_ptr().cast(),
            f[1].len(),
            &mut login,
        )) == wechat_oauth_result::Ok
        {
            // The login's handle decided again in place: what it held is
            // replaced, whatever kind either decision is.
            not_a_panic(wechat_oauth_client_decide_into(client, &request, login));
            inspect(login);
        }
        let mut identity = std::ptr::null_mut();
        if not_a_panic(wechat_oauth_client_session_identity(
            client,
            f[3].as_ptr().cast(),
            f[3].len(),
            &mut identity,
        )) == wechat_oauth_result::Ok
        {
            inspect_identity(identity);
            wechat_oauth_identity_free(identity);
        }
    }
}

unsafe fn inspect(decision: *mut ffi::wechat_oauth_decision) {
    use ffi::*;
    let mut kind = wechat_oauth_decision_kind::Pass;
    not_a_panic(wechat_oauth_decision_get_kind(decision, &mut kind));
    let mut status = 0u16;
    if not_a_panic(wechat_oauth_decision_status(decision, &mut status)) == wechat_oauth_result::Ok {
        assert!(status < 500, "status {status} for bad input");
    }
    let mut body = c_str(&[], true);
    not_a_panic(wechat_oauth_decision_body(decision, &mut body));
    let mut count = 0usize;
    not_a_panic(wechat_oauth_decision_header_count(decision, &mut count));
    for i in 0..=count {
        let (mut name, mut value) = (c_str(&[], true), c_str(&[], true));
        let result = not_a_panic(wechat_oauth_decision_header(
            decision, i, &mut name, &mut value,
        ));
        assert_eq!(result == wechat_oauth_result::Ok, i < count);
        if i < count {
            assert_header_safe(&text(name), &text(value));
        }
    }
    let mut errcode = 0i64;
    not_a_panic(wechat_oauth_decision_errcode(decision, &mut errcode));
    let mut cookie = c_str(&[], true);
    not_a_panic(wechat_oauth_decision_upstream_cookie(decision, &mut cookie));
    let mut identity = std::ptr::null();
    if not_a_panic(wechat_oauth_decision_identity(decision, &mut identity))
        == wechat_oauth_result::Ok
        && !identity.is_null()
    {
        inspect_identity(identity);
    }
    wechat_oauth_decision_free(decision);
}

unsafe fn inspect_identity(identity: *const ffi::wechat_oauth_identity) {
    use ffi::*;
    for field in 0..8 {
        let mut out = c_str(&[], true);
        not_a_panic(wechat_oauth_identity_get(identity, field, &mut out));
    }
    let mut count = 0usize;
    not_a_panic(wechat_oauth_identity_header_count(identity, &mut count));
    for i in 0..count {
        let (mut name, mut value) = (c_str(&[], true), c_str(&[], true));
        not_a_panic(wechat_oauth_identity_header(
            identity, i, &mut name, &mut value,
        ));
        assert_header_safe(&text(name), &text(value));
    }
}

unsafe fn text(s: ffi::wechat_oauth_str) -> String {
    if s.data.is_null() {
        return String::new();
    }
    String::from_utf8(std::slice::from_raw_parts(s.data.cast::<u8>(), s.len).to_vec())
        .expect("the C ABI hands out UTF-8")
}
