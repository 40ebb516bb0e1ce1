//! The soak (not in the test command; `scripts/soak [SECONDS]`, default
//! 1200): one desktop-enabled stack under a mixed, bounded load for the
//! whole time: WeChat logins, authenticated requests, scene-QR logins, and
//! every 10 s a burst of WeChat faults (errcode -1, a timeout, a 5xx).
//! The gateway's RSS and open file descriptors are sampled every 30 s and
//! printed; after the warm-up (the first 55% of the run, at least the 600 s
//! a login's single-use state record lives) they must stay flat (RSS within
//! 10% + 8 MiB, descriptors within 16 of the first sample after warm-up).
//! Each WeChat user logs out at the end, so stored sessions stay level.

use std::time::{Duration, Instant};

use serde_json::json;
use wechat_e2e::{Browser, Stack, DESKTOP_UA, WECHAT_UA};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

async fn wechat_round(stack: &Stack) {
    let mut browser = Browser::new(WECHAT_UA);
    let back = stack.wechat_login(&mut browser, "/orders").await;
    if back.status != 302 {
        return; // a fault window: the page was a clear 5xx retry page
    }
    for _ in 0..20 {
        let page = browser.get(&stack.url("/echo")).await;
        assert_eq!(page.status, 200);
        browser.seen.clear();
    }
    // Users log out, so the stored sessions stay level rather than pile up
    // for their 30 days.
    let out = browser.get(&stack.url("/_wechat/logout")).await;
    assert_eq!(out.status, 302);
}

async fn qr_round(stack: &Stack) {
    let mut browser = Browser::new(DESKTOP_UA);
    let answer = browser
        .get_with(
            &stack.url("/_wechat/qr/new?rd=%2Forders"),
            &[("Accept", "application/json")],
        )
        .await;
    if answer.status != 200 {
        return;
    }
    let q = answer.json();
    let (scene, ticket) = (q["scene"].as_str().unwrap(), q["ticket"].as_str().unwrap());
    stack.control("scan", json!({ "ticket": ticket })).await;
    let status = browser
        .get(&stack.url(&format!("/_wechat/qr/status?scene={scene}&wait=0")))
        .await;
    assert_eq!(status.status, 200, "{}", status.body);
}

#[tokio::test]
#[ignore = "the soak runs for minutes: scripts/soak"]
async fn soak() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1200);
    let stack = Stack::start_desktop("scene_qr").await;
    let pid = stack.gateway_pid();
    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    // Per-login records live up to 600 s (a state's single use): RSS is
    // level only after that.
    let warm_up = Duration::from_secs((secs * 11 / 20).max(secs.min(660)));
    let mut samples: Vec<(u64, u64, usize)> = Vec::new();
    let (mut next_sample, mut next_fault) = (started, started + Duration::from_secs(10));
    let (mut logins, mut qr_logins) = (0u64, 0u64);
    println!(
        "{:>6} {:>10} {:>5} {:>8} {:>8}",
        "secs", "RSS KiB", "fds", "logins", "QR"
    );
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_sample {
            let sample = (started.elapsed().as_secs(), rss_kib(pid), fds(pid));
            println!(
                "{:>6} {:>10} {:>5} {:>8} {:>8}",
                sample.0, sample.1, sample.2, logins, qr_logins
            );
            samples.push(sample);
            next_sample += Duration::from_secs(30);
        }
        if now >= next_fault {
            for fault in [
                json!({"endpoint": "access_token", "errcode": -1, "count": 3}),
                json!({"endpoint": "access_token", "delay_ms": 4000, "count": 1}),
                json!({"endpoint": "access_token", "http_status": 502, "count": 2}),
            ] {
                stack.control("faults", fault).await;
            }
            next_fault += Duration::from_secs(10);
        }
        let mut round = Vec::new();
        for i in 0..16 {
            let stack = &stack;
            round.push(async move {
                if i % 4 == 0 {
                    qr_round(stack).await;
                    (0, 1)
                } else {
                    wechat_round(stack).await;
                    (1, 0)
                }
            });
        }
        for (l, q) in futures_util::future::join_all(round).await {
            logins += l;
            qr_logins += q;
        }
    }
    let last = (started.elapsed().as_secs(), rss_kib(pid), fds(pid));
    println!(
        "{:>6} {:>10} {:>5} {:>8} {:>8}",
        last.0, last.1, last.2, logins, qr_logins
    );
    samples.push(last);
    let after_warm_up: Vec<_> = samples
        .iter()
        .filter(|s| s.0 >= warm_up.as_secs())
        .collect();
    let base = after_warm_up.first().expect("samples after the warm-up");
    for s in &after_warm_up {
        assert!(
            s.1 <= base.1 + base.1 / 10 + 8 * 1024,
            "RSS grew after the warm-up: {} KiB at {} s, {} KiB at {} s",
            base.1,
            base.0,
            s.1,
            s.0
        );
        assert!(
            s.2 <= base.2 + 16,
            "descriptors grew: {} → {} at {} s",
            base.2,
            s.2,
            s.0
        );
    }
}
