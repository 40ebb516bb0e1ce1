//! The C ABI: the header compiles alone in C and C++, every exported symbol
//! is prefixed, the C unit test of every function runs clean plain, under
//! AddressSanitizer/UBSan and under valgrind, and the C host runs the full
//! WeChat login against the emulator in each of those three ways.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use wechat_e2e::{
    compile_c, free_port, random, target_dir, wait_ready, workspace_root, Browser, Proc,
    ScratchDir, TestConfig, WECHAT_UA,
};

/// Must match COOKIE_SECRET in ffi/tests/c/unit.c.
const UNIT_COOKIE_SECRET: &str = "c-unit-test-cookie-secret-0123456789abcdef";
const SANITIZERS: [&str; 3] = [
    "-fsanitize=address,undefined",
    "-fno-omit-frame-pointer",
    "-fno-sanitize-recover=all",
];
/// valgrind's arguments: every leak kind is an error, but for the metrics'
/// process-wide statics (ffi/tests/c/valgrind.supp).
fn valgrind_args() -> Vec<String> {
    vec![
        "--error-exitcode=1".into(),
        "--leak-check=full".into(),
        "--errors-for-leak-kinds=definite,indirect,possible".into(),
        format!(
            "--suppressions={}",
            workspace_root().join("ffi/tests/c/valgrind.supp").display()
        ),
        "--quiet".into(),
    ]
}

fn temp_dir(label: &str) -> ScratchDir {
    ScratchDir::new(&format!("c-{label}"))
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_header_compiles_alone_in_c99_and_cpp() {
    let header = workspace_root().join("include/wechat_oauth.h");
    let (ok, out) = run(Command::new("cc")
        .args([
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fsyntax-only",
            "-x",
            "c",
        ])
        .arg(&header));
    assert!(ok, "cc: {out}");
    let (ok, out) = run(Command::new("c++")
        .args(["-Wall", "-Werror", "-fsyntax-only", "-x", "c++"])
        .arg(&header));
    assert!(ok, "c++ (apt-get install g++): {out}");
}

#[test]
fn every_exported_symbol_starts_with_wechat_oauth() {
    let lib = target_dir().join("libwechat_oauth.so");
    let (ok, out) = run(Command::new("nm").args(["-D", "--defined-only"]).arg(&lib));
    assert!(ok, "nm: {out}");
    let symbols: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert!(symbols.len() >= 20, "{out}");
    for s in &symbols {
        assert!(s.starts_with("wechat_oauth_"), "exported symbol {s}");
    }
}

fn unit_session() -> String {
    let sealer =
        wechat_oauth::seal::Sealer::new(&wechat_oauth::secret::Secret::new(UNIT_COOKIE_SECRET))
            .unwrap();
    let identity = wechat_oauth::Identity {
        openid: "oUnitTestOpenid".into(),
        scope: "snsapi_userinfo".into(),
        nickname: Some("测试 🐼".into()),
        ..Default::default()
    };
    let session = wechat_oauth::Session::starting_now(
        identity.into(),
        "unit-test-sid".into(),
        Duration::from_secs(3600),
    );
    wechat_oauth::session::seal_session(&sealer, &session)
}

fn assert_unit_output(label: &str, ok: bool, out: &str) {
    assert!(ok, "{label}:\n{out}");
    let summary = out.lines().find(|l| l.ends_with(" failed")).unwrap_or("");
    assert!(
        summary.ends_with(", 0 failed") && !summary.starts_with("0 passed"),
        "{label}: {out}"
    );
}

#[test]
fn the_c_unit_test_runs_clean_plain_under_sanitizers_and_under_valgrind() {
    let dir = temp_dir("unit");
    let source = workspace_root().join("ffi/tests/c/unit.c");
    let plain = dir.join("unit");
    let sanitized = dir.join("unit-asan");
    compile_c(&plain, std::slice::from_ref(&source), &[]);
    compile_c(&sanitized, std::slice::from_ref(&source), &SANITIZERS);
    let session = unit_session();

    let (ok, out) = run(Command::new(&plain).env("WECHAT_TEST_SESSION", &session));
    assert_unit_output("plain", ok, &out);
    let (ok, out) = run(Command::new(&sanitized)
        .env("WECHAT_TEST_SESSION", &session)
        .env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
        .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1"));
    assert_unit_output("ASan/UBSan", ok, &out);
    assert!(
        !out.contains("ERROR: AddressSanitizer") && !out.contains("runtime error"),
        "{out}"
    );
    let (ok, out) = run(Command::new("valgrind")
        .args(valgrind_args())
        .arg(&plain)
        .env("WECHAT_TEST_SESSION", &session));
    assert_unit_output("valgrind (apt-get install valgrind)", ok, &out);
}

/// The C host and an emulator, with the config the README documents.
struct Host {
    _emulator: Proc,
    host: Proc,
    url: String,
    emulator_url: String,
    /// Last, so the processes stop before their logs are removed.
    _dir: ScratchDir,
}

async fn start_host(program: &Path, wrapper: Option<&[&str]>, label: &str) -> Host {
    start_host_with(
        program,
        wrapper,
        label,
        |config_path, emulator_url, url, secret| {
            TestConfig::new("wx1234567890abcdef", emulator_url, url)
                .set("gateway.cookie_secret", random(40))
                .write(config_path);
            vec![("WECHAT_APP_SECRET".into(), secret.into())]
        },
    )
    .await
}

/// A host with the configuration `write_config(path, emulator_url,
/// host_url, app_secret)` writes, and the environment it returns.
async fn start_host_with(
    program: &Path,
    wrapper: Option<&[&str]>,
    label: &str,
    write_config: impl FnOnce(&Path, &str, &str, &str) -> Vec<(String, String)>,
) -> Host {
    let dir = temp_dir(label);
    let (emu_port, host_port) = (free_port(), free_port());
    let secret = format!("appsecret{}", random(20));
    let emulator = Proc::start_emulator(&dir, emu_port, "wx1234567890abcdef", &secret);
    let url = format!("http://127.0.0.1:{host_port}");
    let config_path = dir.join("config.toml");
    let emulator_url = format!("http://127.0.0.1:{emu_port}");
    let own_env = write_config(&config_path, &emulator_url, &url, &secret);
    let port = host_port.to_string();
    let mut env = vec![
        ("WECHAT_OAUTH_CONFIG", config_path.to_str().unwrap()),
        ("PORT", port.as_str()),
        ("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1"),
        ("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1"),
    ];
    env.extend(own_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let host = match wrapper {
        None => Proc::start_program(&dir, "host", program, &[], &env),
        Some([wrapper, args @ ..]) => {
            let mut args = args.to_vec();
            args.push(program.to_str().unwrap());
            Proc::start_program(&dir, "host", Path::new(wrapper), &args, &env)
        }
        Some([]) => unreachable!(),
    };
    wait_ready(&format!("{emulator_url}/_emulator/calls")).await;
    wait_ready(&format!("{url}/_wechat/healthz")).await;
    Host {
        _dir: dir,
        _emulator: emulator,
        host,
        url,
        emulator_url,
    }
}

/// Plays the whole login through the host and checks what it shows.
async fn login_through(host: &Host) {
    let user: serde_json::Value = serde_json::from_str(
        &reqwest::get(format!("{}/_emulator/user", host.emulator_url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let mut browser = Browser::new(WECHAT_UA);
    let xhr = browser
        .get_with(
            &format!("{}/", host.url),
            &[("X-Requested-With", "XMLHttpRequest")],
        )
        .await;
    assert_eq!(xhr.status, 401);
    assert_eq!(xhr.json()["error"], "login_required");

    let first = browser.get(&format!("{}/", host.url)).await;
    assert_eq!(first.status, 302, "{}", first.body);
    assert!(first.location().starts_with(&host.emulator_url));
    let consent = browser.get(first.location()).await;
    assert_eq!(consent.status, 302, "{}", consent.body);
    let back = browser.get(consent.location()).await;
    assert_eq!(back.status, 302, "{}", back.body);
    assert_eq!(back.location(), "/");
    // The code, leaked, in another browser with a fresh state of its own.
    let mut attacker = Browser::new(WECHAT_UA);
    let own = attacker.get(&format!("{}/", host.url)).await;
    let state = wechat_e2e::query_param(own.location(), "state");
    let code = wechat_e2e::query_param(consent.location(), "code");
    let tried = attacker
        .get(&format!(
            "{}/_wechat/callback?code={code}&state={state}",
            host.url
        ))
        .await;
    assert_eq!(tried.status, 400, "{}", tried.body);
    assert!(!attacker.cookies.contains_key("wechat_session"));
    let page = browser.get(&format!("{}/", host.url)).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(user["openid"].as_str().unwrap()),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(user["nickname"].as_str().unwrap()),
        "{}",
        page.body
    );
    let info = browser.get(&format!("{}/_wechat/userinfo", host.url)).await;
    assert_eq!(info.json()["openid"], user["openid"]);
    let out = browser.get(&format!("{}/_wechat/logout", host.url)).await;
    assert_eq!(out.status, 302);
    assert!(!browser.cookies.contains_key("wechat_session"));
    // A replayed callback: the code is used; no crash, a clear answer.
    let replay = Browser::new(WECHAT_UA).get(consent.location()).await;
    assert_eq!(replay.status, 400);
}

impl Host {
    /// Stops the host with SIGTERM and returns its exit code and log.
    fn stop(mut self) -> (Option<i32>, String) {
        self.host.signal(libc::SIGTERM);
        let code = self.host.wait_exit(Duration::from_secs(60));
        (code, self.host.log_text())
    }
}

fn build_host(dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let out = dir.join(name);
    compile_c(&out, &[workspace_root().join("examples/c/host.c")], flags);
    out
}

#[tokio::test]
async fn the_c_host_runs_the_full_login() {
    let dir = temp_dir("build");
    let program = build_host(&dir, "host", &[]);
    let host = start_host(&program, None, "plain").await;
    login_through(&host).await;
    let (code, log) = host.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[tokio::test]
async fn a_c_host_serves_the_site_it_names_in_a_file_of_several() {
    let dir = temp_dir("build-site");
    let program = build_host(&dir, "host", &[]);
    let sites = |config_path: &Path, emulator_url: &str, url: &str, secret: &str| {
        let text = format!(
            r#"[gateway]
cookie_secret = "{cookie}"
[limits]
logins_per_minute = 0

[[site]]
name = "shop"
[site.wechat]
appid = "wx9999999999999999"
secret = "not-this-one"
api_base = "http://127.0.0.1:9"
[site.gateway]
public_url = "https://shop.example.com"

[[site]]
name = "blog"
[site.wechat]
appid = "wx1234567890abcdef"
scope = "snsapi_userinfo"
open_base = "{emulator_url}"
api_base = "{emulator_url}"
mp_base = "{emulator_url}"
[site.gateway]
public_url = "{url}"
"#,
            cookie = random(40)
        );
        std::fs::write(config_path, text).unwrap();
        vec![
            ("WECHAT_OAUTH_SITE".to_owned(), "blog".to_owned()),
            ("WECHAT_SITE_BLOG_APP_SECRET".to_owned(), secret.to_owned()),
        ]
    };
    let host = start_host_with(&program, None, "site", sites).await;
    login_through(&host).await;
    let (code, log) = host.stop();
    assert_eq!(code, Some(0), "{log}");

    // Without a site named, the host refuses to start and says how to name one.
    let scratch = temp_dir("site-unnamed");
    let config_path = scratch.join("config.toml");
    sites(
        &config_path,
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
        "s",
    );
    let mut unnamed = Proc::start_program(
        &scratch,
        "host",
        &program,
        &[],
        &[
            ("WECHAT_OAUTH_CONFIG", config_path.to_str().unwrap()),
            ("PORT", &free_port().to_string()),
            ("WECHAT_SITE_BLOG_APP_SECRET", "s"),
        ],
    );
    let code = unnamed.wait_exit(Duration::from_secs(30));
    assert_ne!(code, Some(0));
    let log = unnamed.log_text();
    assert!(
        log.contains("WECHAT_OAUTH_SITE") && log.contains("shop, blog"),
        "{log}"
    );
}

#[tokio::test]
async fn the_c_host_runs_clean_under_sanitizers() {
    let dir = temp_dir("build-asan");
    let program = build_host(&dir, "host-asan", &SANITIZERS);
    let host = start_host(&program, None, "asan").await;
    login_through(&host).await;
    let (code, log) = host.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        !log.contains("AddressSanitizer") && !log.contains("runtime error"),
        "{log}"
    );
}

#[tokio::test]
async fn the_c_host_runs_clean_under_valgrind() {
    let dir = temp_dir("build-vg");
    let program = build_host(&dir, "host", &[]);
    let args = valgrind_args();
    let mut wrapper = vec!["valgrind"];
    wrapper.extend(args.iter().map(String::as_str));
    let host = start_host(&program, Some(&wrapper), "valgrind").await;
    login_through(&host).await;
    let (code, log) = host.stop();
    assert_eq!(code, Some(0), "valgrind found errors or leaks:\n{log}");
}

#[tokio::test]
async fn a_c_host_on_a_state_file_refuses_a_logged_out_cookie_after_a_restart() {
    let dir = temp_dir("state-file");
    let program = build_host(&dir, "host", &[]);
    let (emu_port, host_port) = (free_port(), free_port());
    let secret = format!("appsecret{}", random(20));
    let _emulator = Proc::start_emulator(&dir, emu_port, "wx1234567890abcdef", &secret);
    let url = format!("http://127.0.0.1:{host_port}");
    let state = dir.join("host-state.redb");
    let config_path = dir.join("config.toml");
    TestConfig::new(
        "wx1234567890abcdef",
        &format!("http://127.0.0.1:{emu_port}"),
        &url,
    )
    .set("gateway.cookie_secret", random(40))
    .set("store.url", format!("file:{}", state.display()))
    .write(&config_path);
    let port = host_port.to_string();
    let env = [
        ("WECHAT_OAUTH_CONFIG", config_path.to_str().unwrap()),
        ("PORT", port.as_str()),
        ("WECHAT_APP_SECRET", secret.as_str()),
    ];
    let start = || Proc::start_program(&dir, "host", &program, &[], &env);
    wait_ready(&format!("http://127.0.0.1:{emu_port}/_emulator/calls")).await;
    let mut host = start();
    wait_ready(&format!("{url}/_wechat/healthz")).await;

    let mut browser = Browser::new(WECHAT_UA);
    let first = browser.get(&format!("{url}/")).await;
    let consent = browser.get(first.location()).await;
    let back = browser.get(consent.location()).await;
    assert_eq!(back.status, 302, "{}", back.body);
    let copy = browser.cookie_header();
    assert_eq!(browser.get(&format!("{url}/")).await.status, 200);
    let out = browser.get(&format!("{url}/_wechat/logout")).await;
    assert_eq!(out.status, 302);
    assert!(
        state.is_file(),
        "the host keeps its state in {}",
        state.display()
    );

    host.signal(libc::SIGTERM);
    assert_eq!(
        host.wait_exit(Duration::from_secs(60)),
        Some(0),
        "{}",
        host.log_text()
    );
    let _restarted = start();
    wait_ready(&format!("{url}/_wechat/healthz")).await;
    let replayed = Browser::new(WECHAT_UA)
        .get_with(
            &format!("{url}/"),
            &[("Cookie", &copy), ("X-Requested-With", "XMLHttpRequest")],
        )
        .await;
    assert_eq!(
        replayed.status, 401,
        "the logout outlived the restart: {}",
        replayed.body
    );
}
