//! Harness for the end-to-end tests: the built binaries (`wechat-emulator`,
//! `wechat-demo-app`, `wechat-gateway`) run as real processes on loopback
//! ports, and a scripted browser drives them over real HTTP.
//!
//! The binaries must be built first (`cargo build --workspace --bins`, as the
//! README's test command does); they are found next to the test executable.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use rand::distr::{Alphanumeric, SampleString};

/// A short random string of `[A-Za-z0-9]`.
pub fn random(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// A fresh directory under the system temp dir for one test's builds and
/// logs (`wechat-<label>-<random>`). Removed when dropped, unless the test is
/// failing: then it is kept and its path printed, so the logs can be read.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates the directory. Panics if the temp dir is not writable.
    pub fn new(label: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!("wechat-{label}-{}", random(8)));
        std::fs::create_dir_all(&dir).unwrap();
        ScratchDir(dir)
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for ScratchDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A self-signed certificate for `name` (its own CA; the name also as
/// its subjectAltName, an IP address or a DNS name) and its key, as PEM
/// files (openssl).
pub fn self_signed(cert: &Path, key: &Path, name: &str) {
    openssl_certificate(cert, key, name, &[]);
}

/// A certificate for `name` signed by its own key but marked as no CA, for
/// a server (so a strict client such as rustls may trust it as it is), and
/// its key, as PEM files (openssl).
pub fn leaf_certificate(cert: &Path, key: &Path, name: &str) {
    openssl_certificate(
        cert,
        key,
        name,
        &[
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ],
    );
}

fn openssl_certificate(cert: &Path, key: &Path, name: &str, extra: &[&str]) {
    let san = if name.parse::<std::net::IpAddr>().is_ok() {
        format!("subjectAltName=IP:{name}")
    } else {
        format!("subjectAltName=DNS:{name}")
    };
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
        ])
        .arg(format!("/CN={name}"))
        .args(["-addext", &san])
        .args(extra)
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
}

/// The value of query parameter `name` in `url` (percent-decoded). Panics
/// when the URL does not parse or has no such parameter.
pub fn query_param(url: &str, name: &str) -> String {
    url::Url::parse(url)
        .unwrap_or_else(|e| panic!("not a URL ({e}): {url}"))
        .query_pairs()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} in {url}"))
        .1
        .into_owned()
}

/// The SVG the gate draws for a QR code encoding `url` (`qr/image`).
pub fn qr_svg(url: &str) -> String {
    qrcode::QrCode::new(url.as_bytes())
        .expect("a URL fits a QR code")
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .build()
}

/// What a phone reads from a QR image the gate drew: the URL, among the
/// ones the emulator at `emulator_url` issued, that `svg` encodes.
/// Panics when it encodes none of them.
pub async fn read_qr_image(emulator_url: &str, svg: &str) -> String {
    let issued = emulator_json(emulator_url, "issued").await;
    issued["qr_urls"]
        .as_object()
        .expect("qr_urls")
        .values()
        .filter_map(|u| u.as_str())
        .find(|u| qr_svg(u) == svg)
        .unwrap_or_else(|| panic!("the image encodes no issued QR code: {svg:.200}"))
        .to_owned()
}

/// Path of a workspace binary in the same target directory as this test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// POSTs JSON to a control route of the emulator at `base` (`faults`,
/// `user`, `settings`, `scan`); panics unless it succeeds.
pub async fn emulator_control(base: &str, path: &str, body: serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/_emulator/{path}"))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "emulator control {path}: {}",
        r.status()
    );
}

/// `redis-cli -p PORT ARGS…` against the Redis on loopback `port`: its
/// standard output.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs (apt-get install redis-server)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The commands each gateway's logout sync sends Redis every 500 ms
/// (`Gate::sync_revocations`): background, apart from a login's work.
pub const REDIS_SYNC_COMMANDS: [&str; 2] = ["zrange", "zremrangebyscore"];

/// The Redis on loopback `port`'s command counts since its last `CONFIG
/// RESETSTAT`, by lower-case name (`INFO commandstats`: the commands a
/// script ran count too), less the `INFO`, `CONFIG` and `KEYS` calls
/// tests and the bench make to look.
pub fn redis_commands_since_reset(port: u16) -> BTreeMap<String, u64> {
    redis_cli(port, &["INFO", "commandstats"])
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .filter(|(name, _)| name != "info" && name != "keys" && !name.starts_with("config"))
        .collect()
}

/// Starts `redis-server` on loopback `port` (no persistence), logging to
/// `dir/{label}.log`, and waits until it accepts connections.
pub async fn start_redis(dir: &Path, label: &str, port: u16) -> Proc {
    let port_text = port.to_string();
    let redis = Proc::start_program(
        dir,
        label,
        Path::new("redis-server"),
        &[
            "--port",
            &port_text,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis
}

/// POSTs JSON to `/_emulator/{path}` of the emulator at `base` (`scan`,
/// `jssdk/verify`) and returns its answer as JSON; panics on a non-JSON one.
pub async fn emulator_post(base: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let text = reqwest::Client::new()
        .post(format!("{base}/_emulator/{path}"))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("emulator {path}: {text}"))
}

/// GET `/_emulator/{path}` of the emulator at `base` as JSON.
pub async fn emulator_json(base: &str, path: &str) -> serde_json::Value {
    get_json(&format!("{base}/_emulator/{path}")).await
}

/// GET `url` as JSON (the emulator's own WeChat APIs, a control route).
pub async fn get_json(url: &str) -> serde_json::Value {
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {text}"))
}

/// The website app's appid in [`Stack::start_desktop`].
pub const OPEN_APPID: &str = "wxopen1234567890ab";
/// The server URL token in [`Stack::start_desktop`].
pub const PUSH_TOKEN: &str = "pushToken42";
/// The EncodingAESKey in [`Stack::start_desktop`].
pub const ENCODING_AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The target directory the binaries and libraries were built into.
pub fn target_dir() -> PathBuf {
    bin("wechat-gateway").parent().unwrap().to_owned()
}

/// Compiles C `sources` into `out` against `include/` and the static
/// library, with `flags` (e.g. sanitizers). Panics with the compiler's output.
pub fn compile_c(out: &Path, sources: &[PathBuf], flags: &[&str]) {
    let lib = target_dir().join("libwechat_oauth.a");
    assert!(
        lib.exists(),
        "{} is missing: cargo build --workspace",
        lib.display()
    );
    let output = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g"])
        .args(flags)
        .arg("-I")
        .arg(workspace_root().join("include"))
        .arg("-o")
        .arg(out)
        .args(sources)
        .arg(&lib)
        .args([
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
        ])
        .output()
        .expect("cc runs (apt-get install gcc)");
    assert!(
        output.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A free loopback port below the kernel's ephemeral range (32768 and up),
/// so that no outgoing connection or `bind(:0)` can take it before the
/// process that was given it binds it; never the same one twice per run.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = 15_000 + (std::process::id() % 8_000) as u16;
    let _ = NEXT.compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(port < 32_000, "no free port left below the ephemeral range");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A child process stopped on drop (with its whole process group); its
/// stdout and stderr go to a log file.
pub struct Proc {
    child: Child,
    /// The combined stdout/stderr log.
    pub log: PathBuf,
    /// How the program stops at once: SIGINT for Pingora servers (their
    /// SIGTERM is a graceful stop that waits for connections), else SIGTERM.
    stop_signal: libc::c_int,
    /// Stopped and reaped: its group id may belong to someone else now.
    stopped: bool,
}

impl Proc {
    /// Starts the workspace binary `name` with `args` and `env`, logging to `dir/<label>.log`.
    pub fn start(dir: &Path, label: &str, name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        Self::start_program(dir, label, &bin(name), args, env)
    }

    /// Starts `wechat-emulator` on `127.0.0.1:port` for `appid` and `secret`,
    /// accepting callbacks to 127.0.0.1 on any port.
    pub fn start_emulator(dir: &Path, port: u16, appid: &str, secret: &str) -> Proc {
        Self::start_emulator_with(dir, port, appid, secret, &[])
    }

    /// [`Proc::start_emulator`] with more arguments (open app, push target).
    pub fn start_emulator_with(
        dir: &Path,
        port: u16,
        appid: &str,
        secret: &str,
        extra: &[String],
    ) -> Proc {
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec![
            "--listen",
            &listen,
            "--callback-host",
            "127.0.0.1",
            "--appid",
            appid,
        ];
        args.extend(extra.iter().map(String::as_str));
        Proc::start(
            dir,
            "emulator",
            "wechat-emulator",
            &args,
            &[("WECHAT_APP_SECRET", secret)],
        )
    }

    /// Starts the demo application (the upstream) on `port`, logging to `dir/app.log`.
    pub fn start_demo_app(dir: &Path, port: u16) -> Proc {
        Self::start_demo_app_with(dir, port, &[])
    }

    /// [`Proc::start_demo_app`] with more arguments (`--jssdk-script URL`).
    pub fn start_demo_app_with(dir: &Path, port: u16, extra: &[&str]) -> Proc {
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["--listen", listen.as_str()];
        args.extend_from_slice(extra);
        Proc::start(dir, "app", "wechat-demo-app", &args, &[])
    }

    /// Starts any program, as [`Proc::start`].
    pub fn start_program(
        dir: &Path,
        label: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        let name = program.display().to_string();
        let log = dir.join(format!("{label}.log"));
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        // Its own process group: a stop reaches its children too (nginx's
        // workers, the JVM under a script).
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.env_remove("RUST_LOG");
        if program.file_name().is_some_and(|n| n == "wechat-gateway") {
            // Its default state file (./wechat-gateway-state) lands in the
            // test's own directory, kept across the test's restarts.
            cmd.current_dir(dir);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        // The program itself, or the one a wrapper (taskset) runs.
        let pingora = std::iter::once(program)
            .chain(args.iter().map(Path::new))
            .filter_map(Path::file_name)
            .any(|n| n == "wechat-gateway" || n == "own_proxy" || n == "bare-pingora");
        let stop_signal = if pingora { libc::SIGINT } else { libc::SIGTERM };
        Proc {
            child,
            log,
            stop_signal,
            stopped: false,
        }
    }

    /// Waits (at most `limit`) for the process to exit without blocking the
    /// test's runtime, so tasks it spawned (a load) keep running meanwhile;
    /// its exit code.
    pub async fn exited(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Waits (at most `limit`) for the process to exit, blocking the thread;
    /// its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends SIGINT, as Ctrl-C in a terminal does.
    pub fn interrupt(&self) {
        self.signal(libc::SIGINT);
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// The log so far.
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Proc {
    /// Sends `signal` to the process's whole group (itself and its children).
    fn signal_group(&self, signal: libc::c_int) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's process group has no memory effects.
            unsafe { libc::kill(-pid, signal) };
        }
    }
}

impl Proc {
    /// Stops the process as its program expects (SIGINT for Pingora's fast
    /// shutdown, SIGTERM for nginx's and the hosts'), waits at most 5 s,
    /// then SIGKILLs whatever of its group is left, so no worker outlives
    /// it. Once; its log stays.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal_group(self.stop_signal);
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
            }
        }
        // The group id is still ours until the leader is reaped below.
        self.signal_group(libc::SIGKILL);
        let _ = self.child.wait();
        self.stopped = true;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `url` until it answers 200, at most `limit`; whether it did.
async fn poll_until_ok(url: &str, limit: Duration) -> bool {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(r) = client.get(url).send().await {
            if r.status() == 200 {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Polls `url` until it answers 200, at most 20 s.
pub async fn wait_ready(url: &str) {
    if poll_until_ok(url, Duration::from_secs(20)).await {
        return;
    }
    panic!("{url} did not become ready within 20 s");
}

/// One HTTP answer as the scripted browser saw it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The URL requested.
    pub url: String,
    /// Status code.
    pub status: u16,
    /// Headers, lower-case names, in order.
    pub headers: Vec<(String, String)>,
    /// Body text.
    pub body: String,
}

impl Answer {
    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `Location` header, panicking when absent.
    pub fn location(&self) -> &str {
        self.header("location").unwrap_or_else(|| {
            panic!(
                "no Location from {} ({}): {}",
                self.url, self.status, self.body
            )
        })
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON from {}: {e}: {}", self.url, self.body))
    }

    /// Status, headers and body as one text (not the request URL), for leak checks.
    pub fn all_text(&self) -> String {
        let mut s = format!("{}\n", self.status);
        for (n, v) in &self.headers {
            s.push_str(&format!("{n}: {v}\n"));
        }
        s.push_str(&self.body);
        s
    }
}

/// A scripted browser: its own cookie jar, a User-Agent, no automatic redirects.
pub struct Browser {
    client: reqwest::Client,
    /// Cookies by name (host-agnostic: everything runs on 127.0.0.1).
    pub cookies: BTreeMap<String, String>,
    /// User-Agent sent with every request.
    pub user_agent: String,
    /// Whether Set-Cookie headers are applied.
    pub store_cookies: bool,
    /// Every answer seen, in order.
    pub seen: Vec<Answer>,
}

/// A WeChat in-app browser's User-Agent.
pub const WECHAT_UA: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36 XWEB/1160065 MMWEBSDK/20231202 MicroMessenger/8.0.47.2560(0x28002F35) WeChat/arm64 Weixin NetType/WIFI Language/zh_CN ABI/arm64";
/// WeCom's in-app browser's User-Agent (it says `wxwork` and `MicroMessenger`).
pub const WECOM_UA: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36 wxwork/4.1.22 MicroMessenger/7.0.1 NetType/WIFI Language/zh ColorScheme/Light";
/// The emulated WeCom company's corpid.
pub const WECOM_CORPID: &str = "ww0123456789abcdef";
/// The emulated WeCom app's AgentId.
pub const WECOM_AGENTID: &str = "1000002";
/// A desktop browser's User-Agent.
pub const DESKTOP_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";

impl Browser {
    /// A browser with this User-Agent.
    pub fn new(user_agent: &str) -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
            user_agent: user_agent.to_owned(),
            store_cookies: true,
            seen: Vec::new(),
        }
    }

    /// The Cookie header this browser sends.
    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// GET `url` (any fragment dropped, as browsers do) with extra headers.
    pub async fn get_with(&mut self, url: &str, extra: &[(&str, &str)]) -> Answer {
        let url = url.split('#').next().unwrap().to_owned();
        let mut req = self.client.get(&url).header("User-Agent", &self.user_agent);
        if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("accept")) {
            req = req.header(
                "Accept",
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            );
        }
        if !self.cookies.is_empty() {
            req = req.header("Cookie", self.cookie_header());
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let answer = self.record(url, req.send().await.expect("request")).await;
        answer
    }

    /// A new scene QR login (`GET url`, a `…/qr/new`, as JSON): its
    /// `scene`, `ticket` and `qr_image_url`; asserts a 200.
    pub async fn qr_new(&mut self, url: &str) -> serde_json::Value {
        let created = self.get_with(url, &[("Accept", "application/json")]).await;
        assert_eq!(created.status, 200, "{}", created.body);
        created.json()
    }

    /// GET `url`.
    pub async fn get(&mut self, url: &str) -> Answer {
        self.get_with(url, &[]).await
    }

    /// POST JSON to `url`.
    pub async fn post_json(&mut self, url: &str, body: &serde_json::Value) -> Answer {
        let mut req = self
            .client
            .post(url)
            .header("User-Agent", &self.user_agent)
            .header("Content-Type", "application/json")
            .body(body.to_string());
        if !self.cookies.is_empty() {
            req = req.header("Cookie", self.cookie_header());
        }
        self.record(url.to_owned(), req.send().await.expect("request"))
            .await
    }

    /// POST a form to `url`.
    pub async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> Answer {
        let mut req = self
            .client
            .post(url)
            .header("User-Agent", &self.user_agent)
            .form(form);
        if !self.cookies.is_empty() {
            req = req.header("Cookie", self.cookie_header());
        }
        self.record(url.to_owned(), req.send().await.expect("request"))
            .await
    }

    async fn record(&mut self, url: String, resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp.text().await.unwrap_or_default();
        let answer = Answer {
            url,
            status,
            headers,
            body,
        };
        if self.store_cookies {
            for set in answer.headers_named("set-cookie") {
                let c = cookie::Cookie::parse(set.to_owned()).expect("valid Set-Cookie");
                let removed = c.max_age().is_some_and(|a| a.is_zero() || a.is_negative());
                if removed {
                    self.cookies.remove(c.name());
                } else {
                    self.cookies
                        .insert(c.name().to_owned(), c.value().to_owned());
                }
            }
        }
        self.seen.push(answer.clone());
        answer
    }

    /// Follows redirects from `url` (at most 10 hops) and returns the last answer.
    pub async fn follow(&mut self, url: &str) -> Answer {
        let mut next = url.to_owned();
        for _ in 0..10 {
            let answer = self.get(&next).await;
            if !(300..400).contains(&answer.status) {
                return answer;
            }
            next = absolute(&answer.url, answer.location());
        }
        panic!("more than 10 redirects from {url}");
    }
}

/// Sends `request` byte for byte to the `http://host:port` of `base_url`
/// (no client normalises its path) and returns the raw response: the head
/// (status line and headers) and the body, split at the blank line.
pub fn raw_request(base_url: &str, request: &str) -> (String, String) {
    use std::io::{Read, Write};
    let addr = base_url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) => (head.to_owned(), body.to_owned()),
        None => (text, String::new()),
    }
}

/// The status of a raw response head (`HTTP/1.1 200 OK` → 200).
pub fn raw_status(head: &str) -> u16 {
    head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A `GET target` with the extra header lines (each ending `\r\n`), sent
/// raw: the status and the body.
pub fn raw_get(base_url: &str, target: &str, extra_headers: &str) -> (u16, String) {
    let (head, body) = raw_request(
        base_url,
        &format!(
            "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra_headers}Connection: close\r\n\r\n"
        ),
    );
    (raw_status(&head), body)
}

/// A push signed as WeChat signs it in plain mode (token, timestamp,
/// nonce: [`PUSH_TOKEN`]) posted to `push_url` with `extra` query
/// parameters; the answer's status.
pub async fn signed_push(
    push_url: &str,
    timestamp: &str,
    nonce: &str,
    extra: &str,
    body: String,
) -> u16 {
    let mut sorted = [PUSH_TOKEN, timestamp, nonce];
    sorted.sort_unstable();
    let signature = wechat_oauth::push::signature(&sorted);
    reqwest::Client::new()
        .post(format!(
            "{push_url}?signature={signature}&timestamp={timestamp}&nonce={nonce}{extra}"
        ))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A `SCAN` event's XML: `openid` scanned `scene` at `create_time`.
pub fn scan_xml(openid: &str, scene: &str, create_time: u64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_x]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>\
         <CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[SCAN]]></Event>\
         <EventKey><![CDATA[{scene}]]></EventKey></xml>"
    )
}

/// Resolves a Location against the URL it came from.
pub fn absolute(base: &str, location: &str) -> String {
    url::Url::parse(base)
        .unwrap()
        .join(location)
        .unwrap()
        .to_string()
}

/// A gateway's or host's configuration as TOML values, written with the
/// `toml` crate: the base every test site starts from, then the test's own
/// keys and tables on top (a later value replaces an earlier one).
#[derive(Debug, Clone)]
pub struct TestConfig(toml::Table);

impl TestConfig {
    /// The base: the emulator at `emulator_url` as WeChat (every base URL),
    /// `snsapi_userinfo`, 3 s per WeChat call, the site at `public_url`
    /// with the prefix `/_wechat`, and no login limit (every test client
    /// is 127.0.0.1).
    pub fn new(appid: &str, emulator_url: &str, public_url: &str) -> TestConfig {
        let mut config = TestConfig(toml::Table::new());
        for (key, value) in [
            ("wechat.appid", appid),
            ("wechat.scope", "snsapi_userinfo"),
            ("wechat.open_base", emulator_url),
            ("wechat.api_base", emulator_url),
            ("wechat.mp_base", emulator_url),
            ("gateway.public_url", public_url),
            ("gateway.prefix", "/_wechat"),
        ] {
            config = config.set(key, value);
        }
        config
            .set("wechat.timeout_ms", 3000)
            .set("limits.logins_per_minute", 0)
    }

    /// Sets `key` (dotted: `gateway.listen`, `store.url`) to `value`.
    pub fn set(mut self, key: &str, value: impl Into<toml::Value>) -> TestConfig {
        let (path, last) = key.rsplit_once('.').unwrap_or(("", key));
        let mut table = &mut self.0;
        for part in path.split('.').filter(|p| !p.is_empty()) {
            table = table
                .entry(part)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .expect("a table");
        }
        table.insert(last.to_owned(), value.into());
        self
    }

    /// Adds a test's own TOML `lines` to `[section]` (they may open further
    /// tables, e.g. `[store]`), replacing what they repeat.
    pub fn merge(mut self, section: &str, lines: &str) -> TestConfig {
        let text = format!("[{section}]\n{lines}");
        let extra: toml::Table = text
            .parse()
            .unwrap_or_else(|e| panic!("test config lines for [{section}]: {e}\n{lines}"));
        merge_tables(&mut self.0, extra);
        self
    }

    /// The configuration as TOML text.
    pub fn text(&self) -> String {
        toml::to_string(&self.0).expect("TOML values serialize")
    }

    /// Writes the configuration to `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.text()).unwrap();
    }
}

fn merge_tables(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge_tables(a, b),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// Emulator + demo app + gateway as three processes with a generated config.
pub struct Stack {
    /// Temporary directory with the config and the logs.
    pub dir: PathBuf,
    /// `http://127.0.0.1:PORT` of the gateway.
    pub gateway_url: String,
    /// `http://127.0.0.1:PORT` of the emulator.
    pub emulator_url: String,
    /// `http://127.0.0.1:PORT` of the demo app (the upstream).
    pub app_url: String,
    /// The app secret (emulator and gateway share it).
    pub app_secret: String,
    /// The cookie secret.
    pub cookie_secret: String,
    /// The appid.
    pub appid: String,
    /// The emulator (WeChat).
    pub emulator_proc: Proc,
    /// The demo app (the upstream).
    pub app_proc: Proc,
    /// The gateway, while it runs.
    pub gateway_proc: Option<Proc>,
    /// The origin browsers use, when not the gateway's own (a front before it).
    pub public_url: Option<String>,
    /// Extra environment of the gateway process (e.g. `WECHAT_LOG_FORMAT`).
    pub gateway_env: Vec<(String, String)>,
    /// The current gateway's configuration file.
    pub gateway_config: PathBuf,
    /// The current gateway's `WECHAT_COOKIE_SECRET` (empty: not set).
    pub gateway_cookie_secret: String,
}

impl Stack {
    /// Starts the three processes and waits until each answers.
    pub async fn start() -> Stack {
        Self::start_with("", "").await
    }

    /// As [`Stack::start`], with extra lines for the `[wechat]` and
    /// `[gateway]` tables of the gateway's config (later keys win over the
    /// defaults only where TOML allows: don't repeat a default key).
    pub async fn start_with(wechat_extra: &str, gateway_extra: &str) -> Stack {
        Self::start_inner(wechat_extra, gateway_extra, None, &[]).await
    }

    /// A stack for desktop login (`desktop_login` = `mode`): the emulator
    /// knows the website app [`OPEN_APPID`] and pushes scans to the
    /// gateway's `/_wechat/events`, signed with [`PUSH_TOKEN`]; the gateway
    /// takes plaintext pushes (no `encoding_aes_key`).
    pub async fn start_desktop(mode: &str) -> Stack {
        Self::start_desktop_with(mode, false, "").await
    }

    /// As [`Stack::start_desktop`], the gateway in safe mode
    /// (`encoding_aes_key` = [`ENCODING_AES_KEY`]): only encrypted pushes.
    pub async fn start_desktop_safe(mode: &str) -> Stack {
        Self::start_desktop_with(mode, true, "").await
    }

    /// Scene QR login with `scene_confirm = true` (the phone confirms each
    /// scan), in safe mode or not, with `gateway_extra` lines.
    pub async fn start_scene_confirm(safe_mode: bool, gateway_extra: &str) -> Stack {
        let extra = format!("scene_confirm = true\n{gateway_extra}");
        Self::start_desktop_with("scene_qr", safe_mode, &extra).await
    }

    /// A desktop-login stack (as [`Stack::start_desktop`]) in safe mode or
    /// not, with `gateway_extra` lines in `[gateway]`.
    pub async fn start_desktop_with(mode: &str, safe_mode: bool, gateway_extra: &str) -> Stack {
        let open_secret = format!("opensecret{}", random(16));
        let key = if safe_mode {
            format!("encoding_aes_key = \"{ENCODING_AES_KEY}\"\n")
        } else {
            String::new()
        };
        let wechat_extra = format!(
            "push_token = \"{PUSH_TOKEN}\"\n{key}\n\
             [wechat.open]\nappid = \"{OPEN_APPID}\"\nsecret = \"{open_secret}\"\n"
        );
        let gateway_extra = format!("desktop_login = \"{mode}\"\n{gateway_extra}");
        let emulator_extra = vec![
            "--open-appid".to_owned(),
            OPEN_APPID.to_owned(),
            "--open-secret".to_owned(),
            open_secret,
            "--push-token".to_owned(),
            PUSH_TOKEN.to_owned(),
            "--encoding-aes-key".to_owned(),
            ENCODING_AES_KEY.to_owned(),
        ];
        Self::start_inner(&wechat_extra, &gateway_extra, None, &emulator_extra).await
    }

    /// A stack whose emulator plays WeCom too ([`WECOM_CORPID`],
    /// [`WECOM_AGENTID`], secret `corp_secret`) and whose gateway has
    /// `[wecom]` with it plus `wecom_extra` lines, and `gateway_extra` in
    /// `[gateway]`; the emulator's push target is the gateway.
    pub async fn start_wecom(corp_secret: &str, wecom_extra: &str, gateway_extra: &str) -> Stack {
        let emulator_extra = [
            "--wecom-corpid",
            WECOM_CORPID,
            "--wecom-agentid",
            WECOM_AGENTID,
            "--wecom-secret",
            corp_secret,
        ]
        .map(str::to_owned);
        let mut stack = Self::start_inner("", "", None, &emulator_extra).await;
        let emulator_url = stack.emulator_url.clone();
        let gateway_extra = format!(
            "{gateway_extra}\n[wecom]\ncorpid = \"{WECOM_CORPID}\"\nagentid = {WECOM_AGENTID}\n\
             secret = \"{corp_secret}\"\nopen_base = \"{emulator_url}\"\n\
             api_base = \"{emulator_url}\"\nlogin_base = \"{emulator_url}\"\n{wecom_extra}\n"
        );
        let cookie_secret = stack.cookie_secret.clone();
        stack
            .start_gateway("", &gateway_extra, &cookie_secret)
            .await;
        stack
    }

    /// As [`Stack::start`], for a gateway behind a front (nginx) that
    /// browsers reach at `public_url`.
    pub async fn start_behind(public_url: &str) -> Stack {
        Self::start_inner("", "", Some(public_url.to_owned()), &[]).await
    }

    pub(crate) async fn start_inner(
        wechat_extra: &str,
        gateway_extra: &str,
        public_url: Option<String>,
        emulator_extra: &[String],
    ) -> Stack {
        let dir = std::env::temp_dir().join(format!("wechat-e2e-{}", random(10)));
        std::fs::create_dir_all(&dir).unwrap();
        let (gw_port, emu_port, app_port) = (free_port(), free_port(), free_port());
        let appid = "wx1234567890abcdef".to_owned();
        let app_secret = format!("appsecret{}", random(24));
        let mut emulator_args = emulator_extra.to_vec();
        if !emulator_extra.is_empty() && !emulator_extra.iter().any(|a| a == "--push-url") {
            emulator_args.push("--push-url".to_owned());
            emulator_args.push(format!("http://127.0.0.1:{gw_port}/_wechat/events"));
        }
        let emulator =
            Proc::start_emulator_with(&dir, emu_port, &appid, &app_secret, &emulator_args);
        // Its page calls wx.config with the emulator's JS-SDK stand-in.
        let jssdk = format!("http://127.0.0.1:{emu_port}/_emulator/jweixin.js");
        let app = Proc::start_demo_app_with(&dir, app_port, &["--jssdk-script", &jssdk]);
        let mut stack = Stack {
            dir,
            gateway_url: format!("http://127.0.0.1:{gw_port}"),
            emulator_url: format!("http://127.0.0.1:{emu_port}"),
            app_url: format!("http://127.0.0.1:{app_port}"),
            app_secret,
            cookie_secret: format!("cookiesecret{}", random(36)),
            appid,
            emulator_proc: emulator,
            app_proc: app,
            gateway_proc: None,
            public_url,
            gateway_env: Vec::new(),
            gateway_config: PathBuf::new(),
            gateway_cookie_secret: String::new(),
        };
        wait_ready(&format!("{}/_emulator/calls", stack.emulator_url)).await;
        wait_ready(&format!("{}/echo", stack.app_url)).await;
        let cookie_secret = stack.cookie_secret.clone();
        stack
            .start_gateway(wechat_extra, gateway_extra, &cookie_secret)
            .await;
        stack
    }

    /// (Re)starts the gateway process with a config built from the defaults
    /// plus the extra lines, and `cookie_secret` in `WECHAT_COOKIE_SECRET`
    /// (empty: not set, e.g. when `cookie_secrets` is among the extra lines).
    pub async fn start_gateway(
        &mut self,
        wechat_extra: &str,
        gateway_extra: &str,
        cookie_secret: &str,
    ) {
        self.gateway_proc = None;
        let port = self.gateway_url.rsplit(':').next().unwrap().to_owned();
        let public_url = self.public_url.as_deref().unwrap_or(&self.gateway_url);
        let config = TestConfig::new(&self.appid, &self.emulator_url, public_url)
            .set("gateway.listen", format!("127.0.0.1:{port}"))
            .set(
                "gateway.upstream",
                self.app_url.trim_start_matches("http://"),
            )
            .set(
                "gateway.public_paths",
                vec!["/static/", "/echo/public", "/spa/"],
            )
            .merge("wechat", wechat_extra)
            .merge("gateway", gateway_extra)
            .text();
        let n = std::fs::read_dir(&self.dir).unwrap().count();
        let config_path = self.dir.join(format!("gateway-{n}.toml"));
        std::fs::write(&config_path, config).unwrap();
        self.gateway_config = config_path;
        self.gateway_cookie_secret = cookie_secret.to_owned();
        self.restart_gateway().await;
    }

    /// Sets `key` in the environment of the gateways started from now on,
    /// replacing an earlier value.
    pub fn set_gateway_env(&mut self, key: &str, value: impl Into<String>) {
        self.gateway_env.retain(|(k, _)| k != key);
        self.gateway_env.push((key.to_owned(), value.into()));
    }

    /// [`Stack::set_gateway_env`] for each of `env`, then
    /// [`Stack::restart_gateway`].
    pub async fn restart_gateway_with(&mut self, env: &[(&str, &str)]) {
        for (key, value) in env {
            self.set_gateway_env(key, *value);
        }
        self.restart_gateway().await;
    }

    /// Stops the gateway and starts it again with the same configuration
    /// file and environment (its state file in the stack's directory).
    pub async fn restart_gateway(&mut self) {
        self.gateway_proc = None;
        let n = std::fs::read_dir(&self.dir).unwrap().count();
        let gateway = self.spawn_gateway(&format!("gateway-{n}"), &[]);
        self.gateway_proc = Some(gateway);
        wait_ready(&self.url("/_wechat/healthz")).await;
    }

    /// Another gateway process with this stack's configuration file and
    /// environment, and `extra` arguments (e.g. `--upgrade`); not waited for.
    pub fn spawn_gateway(&self, label: &str, extra: &[&str]) -> Proc {
        let mut env = vec![
            ("WECHAT_APP_SECRET", self.app_secret.as_str()),
            ("RUST_LOG", "trace"),
        ];
        if !self.gateway_cookie_secret.is_empty() {
            env.push(("WECHAT_COOKIE_SECRET", &self.gateway_cookie_secret));
        }
        env.extend(
            self.gateway_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let mut args = vec!["--config", self.gateway_config.to_str().unwrap()];
        args.extend_from_slice(extra);
        Proc::start(&self.dir, label, "wechat-gateway", &args, &env)
    }

    /// POSTs JSON to a control route of the emulator (`faults`, `user`, `settings`).
    pub async fn control(&self, path: &str, body: serde_json::Value) {
        emulator_control(&self.emulator_url, path, body).await;
    }

    /// A URL on the gateway.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway_url)
    }

    /// The user answers the emulator's consent page (`connect/oauth2/authorize`)
    /// or its website-app QR page (`connect/qrconnect`) that the gateway
    /// sent `browser` to at `location`, with `decision` (`allow` or
    /// `deny`): the emulator's redirect back to the callback.
    pub async fn answer_wechat(
        &self,
        browser: &mut Browser,
        location: &str,
        decision: &str,
    ) -> Answer {
        let (page, query) = location.split_once('?').expect("a WeChat URL with a query");
        let query = query.trim_end_matches("#wechat_redirect");
        browser
            .post_form(page, &[("query", query), ("decision", decision)])
            .await
    }

    /// The phone allows the website app's QR login (`connect/qrconnect`)
    /// at `location`; the browser follows the emulator's redirect to the
    /// callback: the gateway's answer.
    pub async fn confirm_qrconnect(&self, browser: &mut Browser, location: &str) -> Answer {
        let confirmed = self.answer_wechat(browser, location, "allow").await;
        browser.get(confirmed.location()).await
    }

    /// GET a control route of the emulator as JSON.
    pub async fn emulator(&self, path: &str) -> serde_json::Value {
        emulator_json(&self.emulator_url, path).await
    }

    /// How many times the emulator's `endpoint` was called.
    pub async fn calls(&self, endpoint: &str) -> u64 {
        self.emulator("calls").await[endpoint].as_u64().unwrap()
    }

    /// Every log line of every process this stack ran (all gateway restarts too).
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(&self.dir).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
                all.push('\n');
            }
        }
        all
    }

    /// The current gateway's process id.
    pub fn gateway_pid(&self) -> u32 {
        self.gateway().child.id()
    }

    /// The running gateway process.
    pub fn gateway(&self) -> &Proc {
        self.gateway_proc.as_ref().expect("the gateway runs")
    }

    /// The current gateway's log.
    pub fn gateway_log(&self) -> String {
        self.gateway_proc
            .as_ref()
            .map(Proc::log_text)
            .unwrap_or_default()
    }

    /// Starts the emulator again on its port (WeChat back), with its own log.
    pub async fn restart_emulator(&mut self) {
        let port: u16 = self
            .emulator_url
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let n = std::fs::read_dir(&self.dir).unwrap().count();
        self.emulator_proc = Proc::start(
            &self.dir,
            &format!("emulator-{n}"),
            "wechat-emulator",
            &[
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--callback-host",
                "127.0.0.1",
                "--appid",
                &self.appid,
            ],
            &[("WECHAT_APP_SECRET", &self.app_secret)],
        );
        wait_ready(&format!("{}/_emulator/calls", self.emulator_url)).await;
    }

    /// Clears every queued emulator fault (WeChat recovers).
    pub async fn clear_faults(&self) {
        let r = reqwest::Client::new()
            .delete(format!("{}/_emulator/faults", self.emulator_url))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "clearing faults: {}", r.status());
    }

    /// Stops the emulator (WeChat down).
    pub fn stop_emulator(&mut self) {
        let emulator = &mut self.emulator_proc;
        let _ = emulator.child.kill();
        let _ = emulator.child.wait();
    }

    /// Plays a WeChat browser's login from `path`: 302 → authorize → callback.
    /// Returns the callback's answer (a 302 back to `path` on success).
    pub async fn wechat_login(&self, browser: &mut Browser, path: &str) -> Answer {
        let first = browser.get(&self.url(path)).await;
        assert_eq!(first.status, 302, "{}: {}", first.url, first.body);
        let authorize = browser.get(first.location()).await;
        assert_eq!(authorize.status, 302, "emulator: {}", authorize.body);
        let callback = authorize.location().to_owned();
        assert!(
            callback.starts_with(&self.url("/_wechat/callback?")),
            "{callback}"
        );
        browser.get(&callback).await
    }
}

/// Every code and token the emulator at `emulator_url` handed out (a plain
/// blocking HTTP/1.0 GET, usable from `Drop`); empty when it is down.
pub fn issued_secrets(emulator_url: &str) -> Vec<String> {
    use std::io::{Read, Write};
    let addr = emulator_url.trim_start_matches("http://");
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return Vec::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.write_all(b"GET /_emulator/issued HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut raw = String::new();
    let _ = stream.read_to_string(&mut raw);
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let issued: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let mut found = Vec::new();
    if let Some(map) = issued.as_object() {
        for values in map.values() {
            for v in values.as_array().into_iter().flatten() {
                if let Some(s) = v.as_str().filter(|s| s.len() >= 8) {
                    found.push(s.to_owned());
                }
            }
        }
    }
    found
}

/// Panics when a log in `dir` (the emulator's aside: it is WeChat) holds
/// any of `secrets`. Every stack runs this when dropped, with its gateway
/// at `RUST_LOG=trace`, so the whole suite's logs are scanned.
pub fn assert_no_secret_in_logs(dir: &Path, secrets: &[String]) {
    // Secrets, codes and tokens are runs of [A-Za-z0-9_-]: every such run of
    // every line is looked up, so the scan stays linear in the log's size
    // however many codes a long run issued.
    let is_part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let wanted: std::collections::HashSet<&str> = secrets
        .iter()
        .map(String::as_str)
        .filter(|s| s.chars().all(is_part))
        .collect();
    let other: Vec<&str> = secrets
        .iter()
        .map(String::as_str)
        .filter(|s| !s.chars().all(is_part))
        .collect();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".log") || name.starts_with("emulator") {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
        let leaked = text
            .split(|c: char| !is_part(c))
            .any(|run| wanted.contains(run))
            || other.iter().any(|s| text.contains(s));
        assert!(
            !leaked,
            "{} carries a secret, code or token",
            path.display()
        );
    }
}

impl Stack {
    /// Stops the gateway, the app and the emulator (their logs stay).
    fn stop_all(&mut self) {
        self.gateway_proc = None;
        self.app_proc.stop();
        self.emulator_proc.stop();
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let mut secrets = issued_secrets(&self.emulator_url);
            secrets.push(self.app_secret.clone());
            secrets.push(self.cookie_secret.clone());
            self.stop_all();
            assert_no_secret_in_logs(&self.dir, &secrets);
        }
        self.stop_all();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("logs kept in {}", self.dir.display());
        }
    }
}

/// The ways to put the login in front of a page: the gateway, and the C,
/// PHP and Java hosts on the C ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// `wechat-gateway` before the demo app.
    Gateway,
    /// `examples/c` (compiled here).
    C,
    /// `examples/php/serve`.
    Php,
    /// `examples/java/serve`.
    Java,
    /// Stock nginx with `examples/nginx/auth_request.conf` before the gateway.
    NginxAuthRequest,
    /// nginx with the native module, `examples/nginx/module.conf`.
    NginxModule,
}

/// A running site behind one [`Front`], with its own emulator.
pub struct Site {
    /// Which front.
    pub front: Front,
    /// `http://127.0.0.1:PORT` the browser talks to.
    pub url: String,
    /// The emulator's base URL.
    pub emulator_url: String,
    /// Temporary directory with configs and logs.
    pub dir: PathBuf,
    /// The emulator, when the site runs its own (else the stack's).
    emulator_proc: Option<Proc>,
    /// The demo app behind nginx with the module.
    app_proc: Option<Proc>,
    /// The front's own process (a host, nginx's master); `None` for the
    /// gateway, which is the stack's.
    front_proc: Option<Proc>,
    stack: Option<Stack>,
}

/// How a [`Site`]'s desktop browsers log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SiteLogin {
    /// The default: a page asking to open the link in WeChat.
    #[default]
    Notice,
    /// Scene QR login, WeChat pushing plain signed events to the front.
    SceneQr,
    /// Scene QR login in safe mode (`encoding_aes_key`): encrypted pushes.
    SceneQrSafe,
    /// WeCom beside WeChat (`[wecom]` with the emulator playing WeCom,
    /// secret [`WECOM_TEST_SECRET`]): WeCom's browser logs in through
    /// WeCom, desktops by WeCom's web QR login.
    Wecom,
    /// As [`SiteLogin::Wecom`], with `[wecom] scope = "snsapi_privateinfo"`.
    WecomPrivateinfo,
}

/// A WeCom login from `page` with `browser`, up to the gate's callback:
/// the page redirects to the emulator at `emulator_url` (WeCom's browser:
/// the web authorization, with the corpid, the agentid and
/// `#wechat_redirect`; any other: the web QR page, whose scan is played);
/// WeCom sends the browser back. Returns the callback URL, not yet visited.
pub async fn wecom_callback(browser: &mut Browser, page: &str, emulator_url: &str) -> String {
    let first = browser.get(page).await;
    assert_eq!(first.status, 302, "{page}: {}", first.body);
    let to = first.location().to_owned();
    let back = if to.starts_with(&format!("{emulator_url}/connect/oauth2/authorize?")) {
        assert!(
            to.starts_with(&format!(
                "{emulator_url}/connect/oauth2/authorize?appid={WECOM_CORPID}&redirect_uri="
            )),
            "{to}"
        );
        assert!(to.ends_with("#wechat_redirect"), "{to}");
        assert_eq!(query_param(&to, "agentid"), WECOM_AGENTID);
        browser.get(&to).await
    } else {
        assert!(
            to.starts_with(&format!(
                "{emulator_url}/wwlogin/sso/login?login_type=CorpApp&appid={WECOM_CORPID}&agentid={WECOM_AGENTID}&redirect_uri="
            )),
            "{to}"
        );
        let qr = browser.get(&to).await;
        assert_eq!(qr.status, 200, "{}", qr.body);
        assert!(qr.body.contains("企业微信扫码登录"), "{}", qr.body);
        // The phone scans and confirms.
        browser.post_form(&to, &[]).await
    };
    assert_eq!(back.status, 302, "emulator: {}", back.body);
    let callback = back.location().to_owned();
    assert!(callback.contains("/_wechat/callback?"), "{callback}");
    callback
}

/// The rendered text of the page `client` shows, once it holds `words`
/// (within 10 s).
pub async fn rendered_text(client: &fantoccini::Client, words: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = match client.find(fantoccini::Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(words) {
            return text;
        }
        assert!(Instant::now() < deadline, "not {words:?} but {text:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The corp secret of [`SiteLogin::Wecom`] sites.
pub const WECOM_TEST_SECRET: &str = "wecomsecret8c1f2e9a7b3d";

/// The `[gateway]` lines every [`Site`] has, whatever its front: a
/// verification file, an `allow` route that lists nobody and a `public`
/// page (the policies hold the same in every host).
pub const SITE_ROUTES: &str = r#"verify_files = { "MP_verify_Hosts123.txt" = "Hosts123" }
[[route]]
prefix = "/admin/"
policy = "allow"
allow = ["oNobodyIsListed"]
[[route]]
exact = "/about"
policy = "public"
[[route]]
prefix = "/fans/"
policy = "followers"
[[route]]
name = "staff"
policy = "allow"
allow = ["oNobodyIsListed"]
[[route]]
prefix = "/ops/"
policy = "allow"
wecom_userids = ["lisi"]
[[route]]
prefix = "/dept/"
policy = "allow"
wecom_departments = [1]
"#;

/// The module front's extra `location`s, each with the policy it names
/// (`wechat_oauth_policy`), whatever the paths' routes say.
const NGINX_POLICY_LOCATIONS: &str = "    location /echo/staff/ {
        wechat_oauth_policy staff;
        proxy_set_header X-WeChat-OpenID $wechat_openid;
        proxy_pass http://wechat_app;
    }
    location /echo/open/ {
        wechat_oauth_policy public;
        proxy_set_header X-WeChat-OpenID $wechat_openid;
        proxy_pass http://wechat_app;
    }
";

impl SiteLogin {
    /// The `[wecom] scope` of a WeCom site.
    pub fn wecom_scope(self) -> Option<&'static str> {
        match self {
            SiteLogin::Wecom => Some("snsapi_base"),
            SiteLogin::WecomPrivateinfo => Some("snsapi_privateinfo"),
            _ => None,
        }
    }

    /// The `[wechat]` lines, the `[gateway]` lines (with [`SITE_ROUTES`])
    /// and the emulator's arguments (pushing to `front_url`) of this login.
    fn setup(self, emulator_url: &str, front_url: &str) -> (String, String, Vec<String>) {
        if self == SiteLogin::Notice {
            return (String::new(), SITE_ROUTES.to_owned(), Vec::new());
        }
        if let Some(scope) = self.wecom_scope() {
            let gateway = format!(
                "{SITE_ROUTES}\n[wecom]\ncorpid = \"{WECOM_CORPID}\"\nagentid = {WECOM_AGENTID}\n\
                 secret = \"{WECOM_TEST_SECRET}\"\nopen_base = \"{emulator_url}\"\n\
                 api_base = \"{emulator_url}\"\nlogin_base = \"{emulator_url}\"\nscope = \"{scope}\"\n"
            );
            let emulator = [
                "--wecom-corpid",
                WECOM_CORPID,
                "--wecom-agentid",
                WECOM_AGENTID,
                "--wecom-secret",
                WECOM_TEST_SECRET,
            ]
            .map(str::to_owned)
            .to_vec();
            return (String::new(), gateway, emulator);
        }
        let key = if self == SiteLogin::SceneQrSafe {
            format!("encoding_aes_key = \"{ENCODING_AES_KEY}\"\n")
        } else {
            String::new()
        };
        let wechat = format!("mp_base = \"{emulator_url}\"\npush_token = \"{PUSH_TOKEN}\"\n{key}");
        let emulator = [
            "--push-token",
            PUSH_TOKEN,
            "--encoding-aes-key",
            ENCODING_AES_KEY,
            "--push-url",
            &format!("{front_url}/_wechat/events"),
        ]
        .map(str::to_owned)
        .to_vec();
        (
            wechat,
            format!("desktop_login = \"scene_qr\"\n{SITE_ROUTES}"),
            emulator,
        )
    }
}

impl Site {
    /// Starts the emulator and the front, and waits until both answer.
    pub async fn start(front: Front) -> Site {
        Self::start_with(front, SiteLogin::Notice).await
    }

    /// As [`Site::start`], desktop browsers logging in by `login`.
    pub async fn start_with(front: Front, login: SiteLogin) -> Site {
        if matches!(front, Front::NginxAuthRequest | Front::NginxModule) {
            return Self::start_nginx(front, login).await;
        }
        if front == Front::Gateway {
            let stack = match login {
                SiteLogin::Notice => Stack::start_with("", SITE_ROUTES).await,
                SiteLogin::SceneQr => {
                    Stack::start_desktop_with("scene_qr", false, SITE_ROUTES).await
                }
                SiteLogin::SceneQrSafe => {
                    Stack::start_desktop_with("scene_qr", true, SITE_ROUTES).await
                }
                SiteLogin::Wecom | SiteLogin::WecomPrivateinfo => {
                    let scope = format!("scope = \"{}\"", login.wecom_scope().unwrap());
                    Stack::start_wecom(WECOM_TEST_SECRET, &scope, SITE_ROUTES).await
                }
            };
            return Site {
                front,
                url: stack.gateway_url.clone(),
                emulator_url: stack.emulator_url.clone(),
                dir: stack.dir.clone(),
                emulator_proc: None,
                app_proc: None,
                front_proc: None,
                stack: Some(stack),
            };
        }
        let dir = std::env::temp_dir().join(format!("wechat-site-{front:?}-{}", random(8)));
        std::fs::create_dir_all(&dir).unwrap();
        let (emu_port, port) = (free_port(), free_port());
        let secret = format!("appsecret{}", random(20));
        let url = format!("http://127.0.0.1:{port}");
        let emulator_url = format!("http://127.0.0.1:{emu_port}");
        let (wechat_extra, gateway_extra, emulator_args) = login.setup(&emulator_url, &url);
        let emulator = Proc::start_emulator_with(
            &dir,
            emu_port,
            "wx1234567890abcdef",
            &secret,
            &emulator_args,
        );
        let config_path = dir.join("config.toml");
        TestConfig::new("wx1234567890abcdef", &emulator_url, &url)
            .set("gateway.cookie_secret", random(40))
            .merge("wechat", &wechat_extra)
            .merge("gateway", &gateway_extra)
            .write(&config_path);
        let library = target_dir().join("libwechat_oauth.so");
        let java_build = dir.join("java-build");
        let port_text = port.to_string();
        let env = [
            ("WECHAT_OAUTH_CONFIG", config_path.to_str().unwrap()),
            ("PORT", port_text.as_str()),
            ("WECHAT_APP_SECRET", secret.as_str()),
            ("WECHAT_OAUTH_LIBRARY", library.to_str().unwrap()),
            ("WECHAT_JAVA_BUILD", java_build.to_str().unwrap()),
            ("JAVA_OPTS", "-Xmx128m"),
        ];
        let root = workspace_root();
        let host = match front {
            Front::C => {
                let program = dir.join("c-host");
                compile_c(&program, &[root.join("examples/c/host.c")], &[]);
                Proc::start_program(&dir, "host", &program, &[], &env)
            }
            Front::Php => {
                Proc::start_program(&dir, "host", &root.join("examples/php/serve"), &[], &env)
            }
            Front::Java => {
                Proc::start_program(&dir, "host", &root.join("examples/java/serve"), &[], &env)
            }
            Front::Gateway | Front::NginxAuthRequest | Front::NginxModule => unreachable!(),
        };
        let site = Site {
            front,
            url,
            emulator_url,
            dir,
            emulator_proc: Some(emulator),
            app_proc: None,
            front_proc: Some(host),
            stack: None,
        };
        wait_ready(&format!("{}/_emulator/calls", site.emulator_url)).await;
        wait_ready_or_log(&format!("{}/_wechat/healthz", site.url), site.front()).await;
        site
    }

    async fn start_nginx(front: Front, login: SiteLogin) -> Site {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let example = std::fs::read_to_string(workspace_root().join(match front {
            Front::NginxAuthRequest => "examples/nginx/auth_request.conf",
            _ => "examples/nginx/module.conf",
        }))
        .unwrap();
        let mut site_conf = example.replace("127.0.0.1:8000", &format!("127.0.0.1:{port}"));
        let (mut emulator_proc, mut app_proc) = (None, None);
        let mut stack = None;
        let dir;
        let emulator_url;
        let mut load_module = String::new();
        if front == Front::NginxAuthRequest {
            // WeChat pushes to the site, which hands /_wechat/ to the gateway.
            let (wechat_extra, gateway_extra, emulator_args) = login.setup("", &url);
            // The stack's config names the emulator as mp_base already.
            let wechat_extra: String = wechat_extra
                .lines()
                .filter(|l| !l.starts_with("mp_base"))
                .map(|l| format!("{l}\n"))
                .collect();
            let wecom = login.wecom_scope().is_some();
            let mut s = Stack::start_inner(
                &wechat_extra,
                if wecom { "" } else { &gateway_extra },
                Some(url.clone()),
                &emulator_args,
            )
            .await;
            if wecom {
                // [wecom] names the emulator's URL, known once it runs.
                let (_, gateway_extra, _) = login.setup(&s.emulator_url, &url);
                let cookie_secret = s.cookie_secret.clone();
                s.start_gateway(&wechat_extra, &gateway_extra, &cookie_secret)
                    .await;
            }
            site_conf = site_conf
                .replace(
                    "127.0.0.1:8080",
                    s.gateway_url.trim_start_matches("http://"),
                )
                .replace("127.0.0.1:3000", s.app_url.trim_start_matches("http://"));
            dir = s.dir.clone();
            emulator_url = s.emulator_url.clone();
            stack = Some(s);
        } else {
            dir = std::env::temp_dir().join(format!("wechat-site-{front:?}-{}", random(8)));
            std::fs::create_dir_all(&dir).unwrap();
            let (emu_port, app_port) = (free_port(), free_port());
            let secret = format!("appsecret{}", random(20));
            let (wechat_extra, gateway_extra, emulator_args) =
                login.setup(&format!("http://127.0.0.1:{emu_port}"), &url);
            emulator_proc = Some(Proc::start_emulator_with(
                &dir,
                emu_port,
                "wx1234567890abcdef",
                &secret,
                &emulator_args,
            ));
            app_proc = Some(Proc::start_demo_app(&dir, app_port));
            emulator_url = format!("http://127.0.0.1:{emu_port}");
            let config_path = dir.join("wechat.toml");
            TestConfig::new("wx1234567890abcdef", &emulator_url, &url)
                .set("wechat.secret", secret.as_str())
                .set("gateway.cookie_secret", random(40))
                .set("gateway.public_paths", vec!["/static/", "/echo/public"])
                .merge("wechat", &wechat_extra)
                .merge("gateway", &gateway_extra)
                .write(&config_path);
            site_conf = site_conf
                .replace("127.0.0.1:3000", &format!("127.0.0.1:{app_port}"))
                .replace("/etc/nginx/wechat.toml", config_path.to_str().unwrap())
                // A site that lets `_` header names through (legacy apps do):
                // the module itself must drop X_WeChat_* spellings.
                .replace(
                    "    wechat_oauth on;\n",
                    "    wechat_oauth on;\n    underscores_in_headers on;\n",
                )
                .replacen(
                    "    location / {\n",
                    &format!("{NGINX_POLICY_LOCATIONS}    location / {{\n"),
                    1,
                );
            load_module = format!("load_module {};\n", nginx_module().display());
            wait_ready(&format!("{emulator_url}/_emulator/calls")).await;
            wait_ready(&format!("http://127.0.0.1:{app_port}/echo")).await;
        }
        let nginx_dir = dir.join("nginx");
        std::fs::create_dir_all(&nginx_dir).unwrap();
        let site_conf = site_conf.replace(
            "/var/log/nginx/wechat-access.log",
            nginx_dir.join("access.log").to_str().unwrap(),
        );
        std::fs::write(nginx_dir.join("site.conf"), site_conf).unwrap();
        let d = nginx_dir.display();
        let main_conf = format!(
            "{load_module}daemon off;\nmaster_process on;\nuser root;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\nevents {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             include {d}/site.conf;\n}}\n"
        );
        let conf_path = nginx_dir.join("nginx.conf");
        std::fs::write(&conf_path, main_conf).unwrap();
        let nginx = Proc::start_program(
            &dir,
            "nginx",
            Path::new("nginx"),
            &[
                "-p",
                nginx_dir.to_str().unwrap(),
                "-c",
                conf_path.to_str().unwrap(),
                "-e",
                nginx_dir.join("error.log").to_str().unwrap(),
            ],
            &[],
        );
        let site = Site {
            front,
            url,
            emulator_url,
            dir,
            emulator_proc,
            app_proc,
            front_proc: Some(nginx),
            stack,
        };
        wait_ready_or_log(&format!("{}/_wechat/healthz", site.url), site.front()).await;
        site
    }

    /// nginx's access log in the examples' `wechat_gate` format (the module front).
    pub fn nginx_access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nginx/access.log")).unwrap_or_default()
    }

    /// nginx's error log (nginx fronts only).
    pub fn nginx_error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nginx/error.log")).unwrap_or_default()
    }

    /// The pids of nginx's worker processes (children of the master).
    pub fn nginx_workers(&self) -> Vec<u32> {
        let master = self.front().child.id();
        std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// GET a control route of the emulator as JSON.
    pub async fn emulator(&self, path: &str) -> serde_json::Value {
        emulator_json(&self.emulator_url, path).await
    }

    /// The front's process: the host, nginx's master, or the gateway.
    pub fn front(&self) -> &Proc {
        match (&self.front_proc, &self.stack) {
            (Some(front), _) => front,
            (None, Some(stack)) => stack.gateway(),
            (None, None) => unreachable!("every site has a front"),
        }
    }

    /// The pid of the front's process (the gateway's, or the host's, or nginx's master).
    pub fn pid(&self) -> u32 {
        self.front().child.id()
    }

    /// The front's log.
    pub fn log(&self) -> String {
        self.front().log_text()
    }

    /// Whether the front's process is still running.
    pub fn alive(&mut self) -> bool {
        let proc = match (&mut self.front_proc, &mut self.stack) {
            (Some(front), _) => front,
            (None, Some(stack)) => stack.gateway_proc.as_mut().expect("the gateway runs"),
            (None, None) => unreachable!("every site has a front"),
        };
        proc.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        // The front first: nginx before the app and emulator behind it.
        self.front_proc = None;
        self.app_proc = None;
        self.emulator_proc = None;
        if self.stack.is_none() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The nginx module, built once per test process with
/// `examples/nginx/module/build.sh` against this build's static library and
/// moved into the target directory (an atomic rename, so test processes
/// building it at once never see half a file).
pub fn nginx_module() -> PathBuf {
    static MODULE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MODULE
        .get_or_init(|| {
            let out = ScratchDir::new("nginx-module");
            let profile = target_dir()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            let output = Command::new(workspace_root().join("examples/nginx/module/build.sh"))
                .env("PROFILE", &profile)
                .env("OUT_DIR", &out)
                .output()
                .expect("build.sh runs");
            assert!(
                output.status.success(),
                "build.sh failed (apt-get install nginx nginx-dev):\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            let module = target_dir().join("ngx_http_wechat_oauth_module.so");
            std::fs::rename(out.join("ngx_http_wechat_oauth_module.so"), &module).unwrap();
            module
        })
        .clone()
}

/// Like [`wait_ready`], showing the process's log if it never answers.
async fn wait_ready_or_log(url: &str, proc: &Proc) {
    if poll_until_ok(url, Duration::from_secs(60)).await {
        return;
    }
    panic!(
        "{url} did not become ready within 60 s:\n{}",
        proc.log_text()
    );
}

/// Resident memory of a process, in KiB (from /proc).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A running chromedriver and its scratch directory (fields drop in order:
/// the process is killed before its profile is removed).
pub struct ChromeDriver {
    _process: Proc,
    _dir: ScratchDir,
}

/// Headless Chromium driven over WebDriver (chromedriver on a free port,
/// plain HTTP on loopback), with `user_agent` and a fresh profile. Keep the
/// returned driver: chromedriver is killed and its profile removed when it is
/// dropped.
pub async fn chromium(user_agent: &str) -> (ChromeDriver, fantoccini::Client) {
    let port = free_port();
    let dir = ScratchDir::new("chrome");
    let driver = Proc::start_program(
        &dir,
        "chromedriver",
        Path::new("chromedriver"),
        &[&format!("--port={port}")],
        &[],
    );
    let profile = dir.join("profile");
    let caps: serde_json::Map<String, serde_json::Value> =
        serde_json::from_value(serde_json::json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=900,760",
                    format!("--user-data-dir={}", profile.display()),
                    format!("--user-agent={user_agent}"),
                ]
            }
        }))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match fantoccini::ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => {
                let driver = ChromeDriver {
                    _process: driver,
                    _dir: dir,
                };
                return (driver, client);
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("chromedriver (apt-get install chromium chromium-driver): {e}"),
        }
    }
}
