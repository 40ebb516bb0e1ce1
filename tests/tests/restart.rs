//! The gateway's default store is a file in its state directory: a
//! restart loses no login, no token, no logout and no pending QR login.

use serde_json::json;
use wechat_e2e::{Browser, Stack, DESKTOP_UA, WECHAT_UA};

#[tokio::test]
async fn a_logout_tokens_and_a_pending_qr_login_survive_a_restart() {
    let mut stack = Stack::start_desktop("scene_qr").await;
    assert!(
        stack.dir.join("wechat-gateway-state/store.redb").exists(),
        "the default store is a file in the state directory"
    );
    let xhr = [("X-Requested-With", "XMLHttpRequest")];

    // One user logs in and out, keeping a copy of the cookie.
    let mut leaving = Browser::new(WECHAT_UA);
    stack.wechat_login(&mut leaving, "/echo").await;
    let copied = leaving.cookie_header();
    assert_eq!(leaving.get(&stack.url("/_wechat/logout")).await.status, 302);
    // Another stays logged in.
    let mut staying = Browser::new(WECHAT_UA);
    stack.wechat_login(&mut staying, "/echo").await;
    // A desktop browser has a QR code on screen, not yet scanned.
    let mut desktop = Browser::new(DESKTOP_UA);
    let q = desktop.qr_new(&stack.url("/_wechat/qr/new")).await;

    stack.restart_gateway().await;

    let replay = Browser::new(WECHAT_UA)
        .get_with(&stack.url("/echo"), &[("Cookie", copied.as_str()), xhr[0]])
        .await;
    assert_eq!(replay.status, 401, "the logged-out copy: {}", replay.body);
    let page = staying.get(&stack.url("/echo")).await;
    assert_eq!(page.status, 200, "the session lives on: {}", page.body);
    let refreshed = staying.get(&stack.url("/_wechat/userinfo?refresh=1")).await;
    assert_eq!(
        refreshed.status, 200,
        "its tokens survived: {}",
        refreshed.body
    );
    assert!(refreshed.json()["openid"].is_string(), "{}", refreshed.body);

    stack.control("scan", json!({"ticket": q["ticket"]})).await;
    let scene = q["scene"].as_str().unwrap();
    let status = desktop
        .get(&stack.url(&format!("/_wechat/qr/status?scene={scene}&wait=5")))
        .await;
    assert_eq!(status.json()["status"], "confirmed", "{}", status.body);
}

#[tokio::test]
async fn a_corrupt_state_file_stops_start_up_naming_it() {
    let stack = Stack::start().await;
    let state = stack.dir.join("broken-state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("store.redb"), b"not a database, only text").unwrap();
    let config = std::fs::read_to_string(&stack.gateway_config)
        .unwrap()
        .replace(
            &format!(
                "listen = \"{}\"",
                stack.gateway_url.trim_start_matches("http://")
            ),
            &format!("listen = \"127.0.0.1:{}\"", wechat_e2e::free_port()),
        )
        + &format!("\n[store]\nstate_dir = \"{}\"\n", state.display());
    let path = stack.dir.join("broken.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(wechat_e2e::bin("wechat-gateway"))
        .args(["--config", path.to_str().unwrap()])
        .env("WECHAT_APP_SECRET", &stack.app_secret)
        .env("WECHAT_COOKIE_SECRET", &stack.cookie_secret)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&state.join("store.redb").display().to_string()),
        "{stderr}"
    );
}
