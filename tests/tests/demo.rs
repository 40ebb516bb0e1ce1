//! `wechat-gateway --demo`: the product as a new user first runs it.

use std::time::Duration;

use wechat_e2e::{absolute, free_port, wait_ready, Browser, Proc, DESKTOP_UA};

#[tokio::test]
async fn the_demo_logs_a_desktop_browser_in_through_the_emulators_consent_page() {
    let dir = wechat_e2e::ScratchDir::new("demo");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut demo = Proc::start(
        &dir,
        "demo",
        "wechat-gateway",
        &["--demo", "--listen", &listen],
        &[],
    );
    let base = format!("http://{listen}");
    wait_ready(&format!("{base}/_wechat/healthz")).await;
    assert!(
        demo.log_text().contains(&format!("Open  {base}/")),
        "{}",
        demo.log_text()
    );

    // A desktop browser gets the QR login; the emulator's phone page scans it.
    let log = demo.log_text();
    let phone = log
        .split_whitespace()
        .find(|w| w.ends_with("/_emulator/phone"))
        .expect("the banner names the phone page")
        .to_owned();
    let emulator = phone.trim_end_matches("/_emulator/phone").to_owned();
    let mut desktop = Browser::new(DESKTOP_UA);
    let first = desktop.get(&format!("{base}/")).await;
    assert_eq!(first.status, 401);
    assert!(first.body.contains("/qr/new"), "{}", first.body);
    let qr = desktop
        .get(&format!("{base}/_wechat/qr/new?rd=%2F"))
        .await
        .json();
    let phone_page = desktop.get(&phone).await;
    assert!(phone_page.body.contains(qr["ticket"].as_str().unwrap()));
    let scanned = desktop
        .post_json(
            &format!("{emulator}/_emulator/scan"),
            &serde_json::json!({"ticket": qr["ticket"]}),
        )
        .await;
    assert_eq!(scanned.status, 200, "{}", scanned.body);
    // The demo confirms each scan on the phone: its message links to the page.
    let phone_page = desktop.get(&phone).await;
    let link = scanned.json()["reply"]["links"][0]
        .as_str()
        .expect("the account's message")
        .to_owned();
    assert!(
        phone_page.body.contains("/_wechat/qr/confirm?t="),
        "the phone shows the message's link: {}",
        phone_page.body
    );
    let mut phone_browser = Browser::new(wechat_e2e::WECHAT_UA);
    let tapped = phone_browser.follow(&link).await;
    let confirm_page = if tapped.body.contains("name=\"query\"") {
        // The demo's emulator shows its consent page for every login.
        let allowed = allow(&mut phone_browser, &tapped).await;
        phone_browser
            .follow(&absolute(&allowed.url, allowed.location()))
            .await
    } else {
        tapped
    };
    assert_eq!(confirm_page.status, 200, "{}", confirm_page.body);
    let confirmed = phone_browser
        .post_form(&format!("{link}&answer=confirm"), &[])
        .await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    let status = desktop
        .get(&format!(
            "{base}/_wechat/qr/status?scene={}",
            qr["scene"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status.json()["status"], "confirmed");
    let page = desktop.get(&format!("{base}/")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("x-wechat-openid"));

    // The login link takes any browser through the emulator's consent page.
    let mut browser = Browser::new(DESKTOP_UA);
    let start = browser.get(&format!("{base}/_wechat/login?rd=%2F")).await;
    assert_eq!(start.status, 302);
    let consent = browser.get(start.location()).await;
    assert_eq!(consent.status, 200, "the demo shows a consent page");
    let allowed = allow(&mut browser, &consent).await;
    assert_eq!(allowed.status, 302);
    let back = browser.get(allowed.location()).await;
    assert_eq!(back.status, 302, "{}", back.body);
    assert_eq!(back.location(), "/");
    let page = browser.get(&format!("{base}/")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("微信用户 🐼 Zoë"), "{}", page.body);
    assert!(page.body.contains("x-wechat-openid"));

    demo.interrupt();
    assert!(
        demo.wait_exit(Duration::from_secs(10)).is_some(),
        "Ctrl-C stops the demo"
    );
}

/// Presses "allow" on the emulator's consent page `consent`.
async fn allow(browser: &mut Browser, consent: &wechat_e2e::Answer) -> wechat_e2e::Answer {
    let query = consent
        .body
        .split("name=\"query\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("consent form")
        .replace("&amp;", "&");
    let action = absolute(&consent.url, "/connect/oauth2/authorize");
    browser
        .post_form(&action, &[("query", &query), ("decision", "allow")])
        .await
}
