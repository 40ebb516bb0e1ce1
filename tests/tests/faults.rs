//! Fault injection: WeChat misbehaving in every way the emulator can
//! script (errcode -1 storms, timeouts, refused and dropped connections,
//! malformed JSON, HTML error pages, 5xx, a token endpoint that answers
//! after the gateway gave up). Each time the user gets a clear page within
//! timeout × attempts + 1 s, nothing hangs or panics, and logins work again
//! as soon as WeChat recovers. 10k failed logins leave the gateway's file
//! descriptors and threads where they were.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wechat_e2e::{Browser, Stack, WECHAT_UA};

const TIMEOUT_MS: u64 = 400;
/// `retries = 1`: two attempts per WeChat call.
const ATTEMPTS: u64 = 2;

async fn faulty_stack() -> Stack {
    Stack::start_with(&format!("timeout_ms = {TIMEOUT_MS}\nretries = 1"), "").await
}

fn bound() -> Duration {
    Duration::from_millis(TIMEOUT_MS * ATTEMPTS + 1000)
}

/// Starts a login at `/orders`: the browser (with its state cookie) and the
/// callback URL WeChat sends it to.
async fn to_callback(stack: &Stack) -> (Browser, String) {
    let mut browser = Browser::new(WECHAT_UA);
    let first = browser.get(&stack.url("/orders")).await;
    assert_eq!(first.status, 302, "{}", first.body);
    let consent = browser.get(first.location()).await;
    assert_eq!(consent.status, 302, "{}", consent.body);
    (browser, consent.location().to_owned())
}

/// The callback under the fault: a clear page with a way to try again, in time.
async fn fails_clearly(stack: &Stack, what: &str) {
    let (mut browser, callback) = to_callback(stack).await;
    let started = Instant::now();
    let answer = browser.get(&callback).await;
    let took = started.elapsed();
    assert!(
        matches!(answer.status, 502 | 503),
        "{what}: status {}: {}",
        answer.status,
        answer.body
    );
    assert!(
        answer.body.contains("/_wechat/login?rd=%2Forders"),
        "{what}: the page offers to try again: {}",
        answer.body
    );
    assert!(took < bound(), "{what}: answered after {took:?}");
}

/// A fresh login right after WeChat recovered.
async fn logs_in(stack: &Stack, what: &str) {
    let mut browser = Browser::new(WECHAT_UA);
    let answer = stack.wechat_login(&mut browser, "/orders").await;
    assert_eq!(
        answer.status, 302,
        "{what}: after recovery: {}",
        answer.body
    );
    assert_eq!(answer.location(), "/orders", "{what}");
    let page = browser.get(&stack.url("/orders")).await;
    assert_eq!(page.status, 200, "{what}: the first page after recovery");
}

fn fault(extra: Value) -> Value {
    let mut f = json!({"endpoint": "access_token", "count": 1000});
    f.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    f
}

#[tokio::test]
async fn every_wechat_fault_gets_a_clear_page_in_time_and_logins_recover() {
    let stack = faulty_stack().await;
    let cases = [
        ("errcode -1 storm", fault(json!({"errcode": -1}))),
        ("past the timeout", fault(json!({"delay_ms": 3000}))),
        ("HTTP 500", fault(json!({"http_status": 500}))),
        ("HTTP 503 with HTML", fault(json!({"http_status": 503}))),
        (
            "an HTML page instead of JSON",
            fault(json!({"body": "<html><body><h1>502 Bad Gateway</h1></body></html>"})),
        ),
        (
            "malformed JSON",
            fault(json!({"body": "{\"access_token\": \"abc\", \"expires_in\": "})),
        ),
        (
            "connection dropped",
            fault(json!({"drop_connection": true})),
        ),
    ];
    for (what, f) in cases {
        let http_5xx = f["http_status"].is_u64();
        stack.control("faults", f).await;
        if http_5xx {
            // WeChat answering 5xx is WeChat unavailable, not a failed login.
            let (mut browser, callback) = to_callback(&stack).await;
            let answer = browser
                .get_with(&callback, &[("Accept-Language", "en")])
                .await;
            assert_eq!(answer.status, 503, "{what}: {}", answer.body);
            assert_eq!(answer.header("retry-after"), Some("5"), "{what}");
            assert!(
                answer.body.contains("WeChat is unavailable"),
                "{what}: {}",
                answer.body
            );
        }
        fails_clearly(&stack, what).await;
        stack.clear_faults().await;
        logs_in(&stack, what).await;
    }
    let log = stack.gateway_log();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn refused_connections_get_a_clear_page_and_logins_recover_when_wechat_is_back() {
    let mut stack = faulty_stack().await;
    stack.stop_emulator();
    // The authorize step is the browser's own; only the callback needs WeChat.
    let mut browser = Browser::new(WECHAT_UA);
    let first = browser.get(&stack.url("/orders")).await;
    let state = wechat_e2e::query_param(first.location(), "state");
    let started = Instant::now();
    let answer = browser
        .get(&stack.url(&format!("/_wechat/callback?code=refused1&state={state}")))
        .await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(answer.body.contains("/_wechat/login?rd=%2Forders"));
    assert!(started.elapsed() < bound(), "{:?}", started.elapsed());
    stack.restart_emulator().await;
    logs_in(&stack, "after WeChat came back").await;
}

#[tokio::test]
async fn a_token_answer_after_the_gateway_gave_up_never_shows_code_been_used() {
    let stack = faulty_stack().await;
    // Both attempts time out; WeChat still uses the code, 1.5 s later.
    stack
        .control(
            "faults",
            json!({"endpoint": "access_token", "count": 2, "delay_ms": 1500}),
        )
        .await;
    let (mut browser, callback) = to_callback(&stack).await;
    let started = Instant::now();
    let answer = browser.get(&callback).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(started.elapsed() < bound());
    tokio::time::sleep(Duration::from_millis(1700)).await;
    // The user reloads the callback: a page that leads to a new login,
    // never WeChat's 40163, never a 500.
    let again = browser.get(&callback).await;
    assert!(
        matches!(again.status, 302 | 400 | 503),
        "{}: {}",
        again.status,
        again.body
    );
    assert!(!again.body.contains("40163") && !again.body.contains("code been used"));
    if again.status == 302 {
        assert!(
            again.location().starts_with("/_wechat/login"),
            "{}",
            again.location()
        );
    } else {
        assert!(again.body.contains("/_wechat/login?rd="), "{}", again.body);
    }
    // Then "try again" logs in.
    let retry = browser.get(&stack.url("/_wechat/login?rd=%2Forders")).await;
    assert_eq!(retry.status, 302);
    let consent = browser.get(retry.location()).await;
    let back = browser.get(consent.location()).await;
    assert_eq!(back.status, 302, "{}", back.body);
    assert_eq!(back.location(), "/orders");
}

fn count_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `n` logins whose code WeChat refuses (40029), `parallel` at a time; codes
/// are `refused-{batch}-{i}` (each new, so each is sent to WeChat).
async fn failed_logins(stack: &Stack, batch: &str, n: usize, parallel: usize) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let permits = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let (client, base, batch) = (client.clone(), stack.url(""), batch.to_owned());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let first = client
                .get(format!("{base}/orders"))
                .header("User-Agent", WECHAT_UA)
                .send()
                .await
                .unwrap();
            let location = first.headers()["location"].to_str().unwrap().to_owned();
            let state = wechat_e2e::query_param(&location, "state");
            let cookie = first
                .headers()
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
                .find(|c| c.starts_with("wechat_state_"))
                .unwrap();
            let answer = client
                .get(format!(
                    "{base}/_wechat/callback?code=refused-{batch}-{i}&state={state}"
                ))
                .header("User-Agent", WECHAT_UA)
                .header("Cookie", cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 400, "a refused code gets its page");
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for t in tasks {
        tokio::time::timeout_at(deadline.into(), t)
            .await
            .expect("10k failed logins within 120 s")
            .unwrap();
    }
}

#[tokio::test]
async fn ten_thousand_failed_logins_leave_descriptors_and_threads_flat() {
    // The default timeout and no retry: a call slowed by the load is still
    // one call, so the count below is exact.
    let stack = Stack::start_with("retries = 0", "").await;
    let pid = stack.gateway_pid();
    failed_logins(&stack, "warm", 1_000, 32).await;
    let (fds, thr) = (count_fds(pid), threads(pid));
    failed_logins(&stack, "load", 9_000, 32).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fds_after, thr_after) = (count_fds(pid), threads(pid));
    assert!(
        fds_after <= fds + 8,
        "file descriptors grew from {fds} to {fds_after}"
    );
    assert_eq!(thr_after, thr, "threads grew from {thr} to {thr_after}");
    logs_in(&stack, "after 10k failed logins").await;
    assert_eq!(stack.calls("access_token").await, 10_001);
}
