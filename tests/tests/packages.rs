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

/// dpkg takes one package operation at a time: the tests here take turns.
static DPKG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn dpkg_turn() -> std::sync::MutexGuard<'static, ()> {
    DPKG.lock().unwrap_or_else(|e| e.into_inner())
}

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
struct Installed(&'static str);

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", self.0]).output();
    }
}

/// `cargo deb -p crate_name` from the binaries this run built (nothing
/// is built again); the `.deb`'s path in `out`.
fn cargo_deb(crate_name: &str, out: &Path) -> std::path::PathBuf {
    let built = Command::new("cargo")
        .args([
            "deb",
            "-p",
            crate_name,
            "--no-build",
            "--profile",
            "dev",
            "--no-strip",
            "-o",
        ])
        .arg(out)
        .current_dir(workspace_root())
        .output()
        .expect("cargo deb (scripts/install-deps installs it)");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    String::from_utf8_lossy(&built.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&built.stderr).lines())
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(std::path::PathBuf::from)
        .expect("cargo deb names its .deb")
}

fn user_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["passwd", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn the_gateway_package_installs_runs_as_its_user_logs_a_user_in_and_purges_cleanly() {
    let _turn = dpkg_turn();
    let out = ScratchDir::new("deb");
    // The binary this run built: packaging builds nothing again.
    let deb = cargo_deb(PACKAGE, &out);
    let _ = Command::new("dpkg").args(["--purge", PACKAGE]).output();
    let _installed = Installed(PACKAGE);
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

#[test]
fn the_library_package_installs_a_library_a_c_program_links_through_pkg_config() {
    const LIB: &str = "libwechat-oauth";
    let _turn = dpkg_turn();
    let out = ScratchDir::new("deb-lib");
    let deb = cargo_deb("wechat-oauth-ffi", &out);
    let _ = Command::new("dpkg").args(["--purge", LIB]).output();
    let _installed = Installed(LIB);
    run("dpkg", &["-i", deb.to_str().unwrap()]);
    assert!(Path::new("/usr/include/wechat_oauth.h").exists());
    let flags = run("pkg-config", &["--cflags", "--libs", "wechat-oauth"]);
    assert!(flags.contains("-lwechat_oauth"), "{flags}");
    let program = out.join("version.c");
    std::fs::write(
        &program,
        "#include <stdio.h>\n#include <wechat_oauth.h>\n\
         int main(void) { wechat_oauth_str v = wechat_oauth_version();\n\
         printf(\"%.*s\\n\", (int)v.len, v.data); return 0; }\n",
    )
    .unwrap();
    let binary = out.join("version");
    let mut args = vec![program.to_str().unwrap(), "-o", binary.to_str().unwrap()];
    args.extend(flags.split_whitespace());
    run("cc", &args);
    let printed = run(binary.to_str().unwrap(), &[]);
    assert_eq!(printed.trim(), env!("CARGO_PKG_VERSION"));
    run("dpkg", &["--purge", LIB]);
    assert!(!Path::new("/usr/include/wechat_oauth.h").exists());
    assert!(!Path::new("/usr/lib/libwechat_oauth.so").exists());
}

#[test]
fn the_nginx_module_package_depends_on_the_nginx_abi_it_was_built_for_and_enables_itself() {
    const MODULE: &str = "libnginx-mod-http-wechat-oauth";
    let _turn = dpkg_turn();
    let out = ScratchDir::new("deb-nginx");
    let module = wechat_e2e::nginx_module();
    let script = workspace_root().join("packaging/nginx/build-deb.sh");
    let deb = run(
        script.to_str().unwrap(),
        &[module.to_str().unwrap(), out.to_str().unwrap()],
    );
    let deb = deb.trim();
    let abi = run("dpkg-query", &["-W", "-f=${Provides}", "nginx"]);
    let abi = abi
        .split(',')
        .map(str::trim)
        .find(|p| p.starts_with("nginx-abi-"))
        .expect("Debian's nginx provides its module ABI")
        .to_owned();
    let depends = run("dpkg-deb", &["-f", deb, "Depends"]);
    assert!(depends.contains(&abi), "{depends} lacks {abi}");
    let _ = Command::new("dpkg").args(["--purge", MODULE]).output();
    let _installed = Installed(MODULE);
    run("dpkg", &["-i", deb]);
    let enabled = Path::new("/etc/nginx/modules-enabled/50-mod-http-wechat-oauth.conf");
    assert!(enabled.exists());
    // nginx loads it with Debian's own configuration.
    let dump = Command::new("nginx").arg("-T").output().unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(String::from_utf8_lossy(&dump.stdout)
        .contains("load_module modules/ngx_http_wechat_oauth_module.so;"));
    run("dpkg", &["--purge", MODULE]);
    assert!(!enabled.exists());
    assert!(!Path::new("/usr/lib/nginx/modules/ngx_http_wechat_oauth_module.so").exists());
}
