//! The Debian package of the gateway, as an operator uses it: built with
//! `cargo deb` from the binary the test run built, installed with
//! `dpkg -i`, its unit checked by `systemd-analyze`, the installed binary
//! run as the installed user with the installed configuration (pointed at
//! the emulator by the environment) logging a user in, and `dpkg --purge`
//! leaving nothing behind.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use wechat_e2e::{
    free_port, random, wait_ready, workspace_root, Browser, Proc, ScratchDir, WECHAT_UA,
};

const PACKAGE: &str = "wechat-gateway";

/// Runs `program` with `args`; its stdout, or a panic with its output.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Purges the package when the test ends, whatever happened.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", PACKAGE]).output();
    }
}

fn user_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["passwd", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn the_gateway_package_installs_runs_as_its_user_logs_a_user_in_and_purges_cleanly() {
    let out = ScratchDir::new("deb");
    let root = workspace_root();
    // The binary this run built: packaging builds nothing again.
    let built = Command::new("cargo")
        .args([
            "deb",
            "-p",
            PACKAGE,
            "--no-build",
            "--profile",
            "dev",
            "--no-strip",
            "-o",
        ])
        .arg(&*out)
        .current_dir(&root)
        .output()
        .expect("cargo deb (scripts/install-deps installs it)");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = std::fs::read_dir(&*out)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb");
    let _ = Command::new("dpkg").args(["--purge", PACKAGE]).output();
    let _installed = Installed;
    run("dpkg", &["-i", deb.to_str().unwrap()]);

    // Its user, its configuration readable by that user only, its state directory.
    assert!(user_exists(PACKAGE));
    let conf = std::fs::metadata("/etc/wechat-gateway/gateway.toml").unwrap();
    assert_eq!(conf.permissions().mode() & 0o777, 0o640);
    assert_eq!(conf.uid(), 0);
    let group = run("getent", &["group", PACKAGE]);
    let gid: u32 = group.split(':').nth(2).unwrap().parse().unwrap();
    assert_eq!(conf.gid(), gid);
    let state = std::fs::metadata("/var/lib/wechat-gateway").unwrap();
    assert_eq!(state.permissions().mode() & 0o777, 0o750);
    let conffiles = run("dpkg-query", &["-W", "-f=${Conffiles}", PACKAGE]);
    assert!(
        conffiles.contains("/etc/wechat-gateway/gateway.toml"),
        "{conffiles}"
    );

    // The unit is valid and well hardened.
    let unit = "/usr/lib/systemd/system/wechat-gateway.service";
    run("systemd-analyze", &["verify", unit]);
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", unit])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout).into_owned();
    let exposure: f64 = report
        .split("Overall exposure level for wechat-gateway.service:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level: {report}"));
    assert!(exposure <= 2.0, "exposure {exposure}: {report}");
    let text = std::fs::read_to_string(unit).unwrap();
    assert!(text.contains("User=wechat-gateway") && !text.contains("DynamicUser"));

    // The installed binary, as the installed user, with the installed config.
    let dir = ScratchDir::new("deb-run");
    let (emulator_port, app_port, port) = (free_port(), free_port(), free_port());
    let (appid, secret) = ("wx0123456789abcdef", format!("appsecret{}", random(16)));
    let _emulator = Proc::start_emulator(&dir, emulator_port, appid, &secret);
    let _app = Proc::start_demo_app(&dir, app_port);
    let emulator = format!("http://127.0.0.1:{emulator_port}");
    let public = format!("http://127.0.0.1:{port}");
    let cookie_secret = random(48);
    let mut gateway = Proc::start_program(
        &dir,
        "installed",
        Path::new("runuser"),
        &[
            "-u",
            PACKAGE,
            "--",
            "/usr/bin/wechat-gateway",
            "--config",
            "/etc/wechat-gateway/gateway.toml",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream",
            &format!("127.0.0.1:{app_port}"),
            "--public-url",
            &public,
        ],
        &[
            ("WECHAT_APPID", appid),
            ("WECHAT_APP_SECRET", &secret),
            ("WECHAT_COOKIE_SECRET", &cookie_secret),
            ("WECHAT_GATEWAY__WECHAT__OPEN_BASE", &emulator),
            ("WECHAT_GATEWAY__WECHAT__API_BASE", &emulator),
        ],
    );
    let ready = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        wait_ready(&format!("{public}/_wechat/healthz")),
    )
    .await;
    assert!(ready.is_ok(), "{}", gateway.log_text());
    let mut browser = Browser::new(WECHAT_UA);
    let start = browser.get(&format!("{public}/echo")).await;
    assert_eq!(start.status, 302, "{}", start.body);
    let consent = browser.get(start.location()).await;
    assert_eq!(consent.status, 302, "{}", consent.body);
    let back = browser.get(consent.location()).await;
    assert_eq!(back.status, 302, "{}", back.body);
    let echo = browser.get(&format!("{public}/echo")).await;
    assert_eq!(echo.status, 200, "{}", echo.body);
    assert!(echo.json()["headers"]["x-wechat-openid"][0].is_string());
    let store = std::fs::metadata("/var/lib/wechat-gateway/store.redb").expect("the state file");
    let uid: u32 = run("id", &["-u", PACKAGE]).trim().parse().unwrap();
    assert_eq!(store.uid(), uid, "the state file is the service user's");
    gateway.stop();

    // Purged: no user, no configuration, no state.
    run("dpkg", &["--purge", PACKAGE]);
    assert!(!user_exists(PACKAGE));
    assert!(!Path::new("/etc/wechat-gateway").exists());
    assert!(!Path::new("/var/lib/wechat-gateway").exists());
    assert!(!Path::new("/usr/bin/wechat-gateway").exists());
}
