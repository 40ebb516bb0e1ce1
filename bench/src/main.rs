//! `wechat-bench` (run by `bench/run`): on loopback, one upstream (nginx
//! `return 200`), then with `wrk`, the same duration for every row,
//! interleaved rounds, medians, at each connection count (32 and 256) and
//! in two placements (sharing every CPU; the proxy pinned alone):
//!
//! - upstream direct; bare Pingora and `wechat-gateway` with a session, at
//!   1 and 2 threads; the gateway's 302 for an unauthenticated request;
//! - bare nginx proxy; nginx + the native module with a session; nginx
//!   `auth_request` → the gateway with a session;
//! - Apache as a proxy, and behind mod_auth_openidc with a session
//!   (`apache.rs`, logged in against the bench's OpenID provider, `oidc.rs`);
//!
//! then logins per second, the gateway's memory idle and per stored
//! session, and its start-up time. Prints the tables and writes
//! `bench/RESULTS.md`.
//!
//! Expects the release build (`bench/run` makes it): target/release's
//! binaries and the nginx module built by examples/nginx/module/build.sh.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod apache;
mod growth;
mod oidc;

const WECHAT_UA: &str = "Mozilla/5.0 (Linux; Android 14) MicroMessenger/8.0.47";
pub(crate) const APPID: &str = "wx1234567890abcdef";

struct Options {
    /// Seconds per wrk run.
    duration: u64,
    /// The connection counts each table is measured at.
    connections: Vec<u32>,
    /// wrk threads; default: the load side's CPUs.
    threads: Option<u32>,
    rounds: usize,
    sessions: usize,
    placements: Vec<Placement>,
    micro: Option<PathBuf>,
}

fn options() -> Options {
    let mut o = Options {
        duration: 3,
        connections: vec![32, 256],
        threads: None,
        rounds: 5,
        sessions: 100_000,
        placements: vec![Placement::Shared, Placement::Pinned],
        micro: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--duration" => o.duration = value.parse().expect("--duration SECONDS"),
            "--connections" => {
                o.connections = value
                    .split(',')
                    .map(|n| n.parse().expect("--connections N[,N…]"))
                    .collect()
            }
            "--threads" => o.threads = Some(value.parse().expect("--threads N")),
            "--rounds" => o.rounds = value.parse().expect("--rounds N"),
            "--sessions" => o.sessions = value.parse().expect("--sessions N"),
            "--placement" => {
                o.placements = match value.as_str() {
                    "shared" => vec![Placement::Shared],
                    "pinned" => vec![Placement::Pinned],
                    "both" => vec![Placement::Shared, Placement::Pinned],
                    _ => panic!("--placement shared|pinned|both"),
                }
            }
            "--micro" => o.micro = Some(PathBuf::from(value)),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    o
}

use wechat_e2e::Proc;

/// How the run places its processes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Placement {
    /// Everything shares every CPU, as on a user's box; proxies run one
    /// worker per CPU by default.
    Shared,
    /// With 2 or more CPUs, the proxy under test gets CPU 0 to itself and
    /// the load side (wrk, the upstream, the emulator) the others, so a row
    /// measures the proxy's own cost per request.
    Pinned,
}

impl Placement {
    fn title(self) -> &'static str {
        match self {
            Placement::Shared => "sharing every CPU",
            Placement::Pinned => "proxy pinned alone to CPU 0",
        }
    }
}

/// The placement being measured (set by `main` before it starts a stack).
static PINNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

fn pinned() -> bool {
    PINNED.load(std::sync::atomic::Ordering::Relaxed) && cpus() >= 2
}

/// Which side of the run a process is on.
#[derive(Clone, Copy)]
enum Side {
    Proxy,
    Load,
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `taskset` arguments for a side; none when sharing or on one CPU.
fn cpu_list(side: Side) -> Option<String> {
    let n = cpus();
    pinned().then(|| match side {
        Side::Proxy => "0".to_owned(),
        Side::Load if n == 2 => "1".to_owned(),
        Side::Load => format!("1-{}", n - 1),
    })
}

/// CPUs a side has (the proxy side's processes run one worker per CPU).
fn side_cpus(side: Side) -> usize {
    match (side, cpus()) {
        _ if !pinned() => cpus(),
        (Side::Proxy, _) => 1,
        (Side::Load, n) => n - 1,
    }
}

fn command_on(side: Side, program: &Path) -> Command {
    match cpu_list(side) {
        Some(list) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(list).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// Starts `program` on `side`'s CPUs with the test harness's process
/// helper (its own process group, stopped with its workers), logging to `log`.
fn spawn(side: Side, program: &Path, args: &[&str], env: &[(&str, &str)], log: &Path) -> Proc {
    let dir = log.parent().expect("a log in a directory");
    let label = log
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("a log file name");
    let mut env = env.to_vec();
    env.push(("RUST_LOG", "warn"));
    match cpu_list(side) {
        Some(list) => {
            let program = program.to_str().expect("a UTF-8 path");
            let mut taskset_args = vec!["-c", list.as_str(), program];
            taskset_args.extend_from_slice(args);
            Proc::start_program(dir, label, Path::new("taskset"), &taskset_args, &env)
        }
        None => Proc::start_program(dir, label, program, args, &env),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_ready(url: &str) -> Duration {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return started.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("{url} did not answer within 30 s");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One wrk measurement.
#[derive(Clone, Copy, Debug)]
struct Sample {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    /// CPU time the proxy side's processes spent per request, µs.
    cpu_us: f64,
    /// Their CPU use during the run, in CPUs (1.0: one CPU all the time).
    cpu_busy: f64,
}

/// CPU time (user + system) of `pid` and all its descendants, in seconds,
/// from /proc (clock ticks of 1/100 s, Linux's USER_HZ).
fn cpu_seconds(pid: u32) -> f64 {
    let own = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name: state is the first, utime the 12th.
            let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split(' ').collect();
            Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
        })
        .unwrap_or(0.0)
        / 100.0;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten();
    let children: f64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .map(cpu_seconds)
        .sum();
    own + children
}

fn parse_latency(text: &str) -> f64 {
    let (number, unit) = text.split_at(
        text.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(text.len()),
    );
    let n: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        _ => f64::NAN,
    }
}

/// Runs wrk against `url`, counting the CPU time of `proxies` (pids, with
/// their children) meanwhile.
fn wrk(o: &Options, connections: u32, url: &str, headers: &[String], proxies: &[u32]) -> Sample {
    wrk_with(o, connections, o.duration, url, headers, None, proxies)
}

/// [`wrk`] with a Lua `script` making each request, for `duration` seconds.
fn wrk_script(
    o: &Options,
    connections: u32,
    url: &str,
    script: &Path,
    proxies: &[u32],
    duration: u64,
) -> Sample {
    wrk_with(o, connections, duration, url, &[], Some(script), proxies)
}

fn wrk_with(
    o: &Options,
    connections: u32,
    duration: u64,
    url: &str,
    headers: &[String],
    script: Option<&Path>,
    proxies: &[u32],
) -> Sample {
    let threads = o.threads.unwrap_or(side_cpus(Side::Load) as u32);
    let mut cmd = command_on(Side::Load, Path::new("wrk"));
    cmd.args([
        format!("-t{}", threads.min(connections)),
        format!("-c{connections}"),
        format!("-d{duration}s"),
        "--latency".to_owned(),
    ]);
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    if let Some(script) = script {
        cmd.arg("-s").arg(script);
    }
    let cpu = || proxies.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    let (cpu_before, started) = (cpu(), Instant::now());
    let out = cmd
        .arg(url)
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let (cpu_used, elapsed) = (cpu() - cpu_before, started.elapsed().as_secs_f64());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("Non-2xx or 3xx responses"),
        "{url} answered errors:\n{text}"
    );
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {prefix} in wrk's output:\n{text}"))
    };
    let requests: f64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk's output:\n{text}"));
    Sample {
        rps: field("Requests/sec:").parse().unwrap(),
        p50_us: parse_latency(&field("50%")),
        p99_us: parse_latency(&field("99%")),
        cpu_us: cpu_used * 1e6 / requests.max(1.0),
        cpu_busy: cpu_used / elapsed,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Logs in through the gateway as a WeChat browser; returns the session cookie.
async fn login(client: &reqwest::Client, gateway: &str) -> String {
    let first = client
        .get(format!("{gateway}/"))
        .header("User-Agent", WECHAT_UA)
        .send()
        .await
        .unwrap();
    let state_cookie = cookie_of(&first, "wechat_state_");
    let authorize = location(&first);
    let consent = client
        .get(authorize.split('#').next().unwrap())
        .send()
        .await
        .unwrap();
    let callback = location(&consent);
    let back = client
        .get(&callback)
        .header("User-Agent", WECHAT_UA)
        .header("Cookie", &state_cookie)
        .send()
        .await
        .unwrap();
    let session = cookie_of(&back, "wechat_session=");
    first_page(client, gateway, &session).await;
    session
}

/// The page at `base`/ with the `session` cookie a login just set: 200.
async fn first_page(client: &reqwest::Client, base: &str, session: &str) {
    let page = client
        .get(format!("{base}/"))
        .header("User-Agent", WECHAT_UA)
        .header("Cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "the first page after the login");
}

pub(crate) fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location ({})", r.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

pub(crate) fn cookie_of(r: &reqwest::Response, prefix: &str) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} cookie"))
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// `count` logins, `parallel` at a time; logins per second.
async fn logins(gateway: &str, count: usize, parallel: usize) -> f64 {
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(parallel)
        .build()
        .unwrap();
    let permits = Arc::new(tokio::sync::Semaphore::new(parallel));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let (client, gateway) = (client.clone(), gateway.to_owned());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            login(&client, &gateway).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    count as f64 / started.elapsed().as_secs_f64()
}

fn version_of(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|_| "not found".into())
}

#[tokio::main]
async fn main() {
    let o = options();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let release = root.join("target/release");
    let module = release.join("nginx-module/ngx_http_wechat_oauth_module.so");
    for needed in ["wechat-gateway", "wechat-emulator", "bare-pingora"] {
        assert!(release.join(needed).exists(), "build first: bench/run");
    }
    assert!(module.exists(), "build the nginx module first: bench/run");
    let dir = std::env::temp_dir().join(format!("wechat-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ports = Ports::new();
    let provider = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let provider_url = format!("http://{}", provider.local_addr().unwrap());
    oidc::serve(provider, provider_url.clone());
    let toml = ports.gateway_toml();
    let config = dir.join("gateway.toml");
    std::fs::write(&config, &toml).unwrap();

    let mut tables = Vec::new();
    let mut extras = None;
    for &placement in &o.placements {
        PINNED.store(
            placement == Placement::Pinned,
            std::sync::atomic::Ordering::Relaxed,
        );
        let stack = Stack::start(&ports, &dir, &release, &module, &config, &provider_url).await;
        let rows = stack.rows(&ports).await;
        for &connections in &o.connections {
            eprintln!(
                "{}, {connections} connections: {} s per run, {} interleaved rounds",
                placement.title(),
                o.duration,
                o.rounds
            );
            let mut rows = rows.clone();
            for round in 0..o.rounds {
                for row in rows.iter_mut() {
                    let s = wrk(&o, connections, &row.url, &row.headers, &row.proxies);
                    eprintln!(
                        "round {}: {:<46} {:>10.0} req/s  p50 {:>7.0} us  p99 {:>7.0} us  proxy CPU {:>5.1} us/req ({:.2} CPUs)",
                        round + 1, row.name, s.rps, s.p50_us, s.p99_us, s.cpu_us, s.cpu_busy
                    );
                    row.samples.push(s);
                }
            }
            tables.push(Table {
                placement,
                connections,
                rows,
            });
        }
        if placement == *o.placements.last().unwrap() {
            let sessions = growth::sessions(
                &o,
                &toml,
                &dir,
                &format!("{}/", ports.gateway_url()),
                stack.gateway.pid(),
                &format!("http://127.0.0.1:{}/metrics", ports.metrics),
            )
            .await;
            let redis = growth::redis(&o, &dir, &release, &config).await;
            let mut x = stack
                .logins_memory_startup(&o, &ports, &dir, &release, &toml)
                .await;
            x.sessions_rows = sessions;
            x.redis = Some(redis);
            x.placement = placement;
            extras = Some(x);
        }
    }
    let extras = extras.unwrap();
    let report = report(&o, &tables, &extras);
    println!("{report}");
    let out = root.join("bench/RESULTS.md");
    let notes = std::fs::read_to_string(&out)
        .ok()
        .and_then(|old| {
            old.split_once("\n## Findings")
                .map(|(_, f)| format!("\n## Findings{f}"))
        })
        .unwrap_or_default();
    std::fs::write(&out, format!("{report}{notes}")).unwrap();
    eprintln!("written to {}", out.display());
    let _ = std::fs::remove_dir_all(&dir);
}

pub(crate) const APP_SECRET: &str = "bench-app-secret";

/// Every listening port of a run.
struct Ports {
    upstream: u16,
    nginx: u16,
    module: u16,
    auth_request: u16,
    bare_one: u16,
    bare_two: u16,
    gateway_one: u16,
    /// The configured one: two threads, behind auth_request too.
    gateway: u16,
    apache: u16,
    apache_oidc: u16,
    emulator: u16,
    /// The configured gateway's Prometheus metrics.
    metrics: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            upstream: free_port(),
            nginx: free_port(),
            module: free_port(),
            auth_request: free_port(),
            bare_one: free_port(),
            bare_two: free_port(),
            gateway_one: free_port(),
            gateway: free_port(),
            apache: free_port(),
            apache_oidc: free_port(),
            emulator: free_port(),
            metrics: free_port(),
        }
    }

    fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway)
    }

    fn gateway_toml(&self) -> String {
        let emulator_url = format!("http://127.0.0.1:{}", self.emulator);
        format!(
            "[wechat]\nappid = \"{APPID}\"\nsecret = \"{APP_SECRET}\"\nscope = \"snsapi_userinfo\"\n\
             open_base = \"{emulator_url}\"\napi_base = \"{emulator_url}\"\n\n\
             [gateway]\nlisten = \"127.0.0.1:{gw}\"\nupstream = \"127.0.0.1:{up}\"\npublic_url = \"{url}\"\n\
             cookie_secret = \"bench-cookie-secret-0123456789abcdef-0123456789\"\nthreads = 2\n\
             access_log = \"off\"\n\n\
             [limits]\nlogins_per_minute = 0\n\n[store]\nurl = \"memory\"\n",
            gw = self.gateway,
            up = self.upstream,
            url = self.gateway_url(),
        )
    }
}

/// The processes of one placement.
struct Stack {
    _upstream: Proc,
    nginx: Proc,
    _emulator: Proc,
    bare_one: Proc,
    bare_two: Proc,
    gateway_one: Proc,
    gateway: Proc,
    apache: Proc,
    /// The configured gateway's RSS once started, before any load.
    idle_rss_kib: u64,
}

/// One row of a table: what wrk loads, and against which baseline.
#[derive(Clone)]
struct Row {
    name: &'static str,
    url: String,
    headers: Vec<String>,
    baseline: Option<usize>,
    /// The proxy side's processes: their CPU time is counted.
    proxies: Vec<u32>,
    samples: Vec<Sample>,
}

/// The rows, by index, that the targets compare.
const BARE_ONE: usize = 1;
const GATEWAY_ONE: usize = 2;
const BARE_TWO: usize = 4;
const GATEWAY_TWO: usize = 5;
const NGINX: usize = 6;
const MODULE: usize = 7;
const AUTH_REQUEST: usize = 8;
const APACHE_OIDC: usize = 10;

struct Table {
    placement: Placement,
    connections: u32,
    rows: Vec<Row>,
}

/// Logins per second, memory and start-up, measured once.
struct Extras {
    logins_per_s: f64,
    idle_rss_kib: u64,
    after_sessions_kib: u64,
    sessions: usize,
    per_session_bytes: f64,
    startup_ms: f64,
    /// Where the rows below ran.
    placement: Placement,
    sessions_rows: Vec<growth::SessionsRow>,
    redis: Option<growth::RedisCosts>,
}

impl Stack {
    async fn start(
        ports: &Ports,
        dir: &Path,
        release: &Path,
        module: &Path,
        config: &Path,
        provider_url: &str,
    ) -> Stack {
        let d = dir.display();
        let nginx_head = |name: &str, workers: usize| {
            format!(
                "daemon off;\nuser root;\nworker_processes {workers};\npid {d}/{name}.pid;\nerror_log {d}/{name}-error.log warn;\n\
events {{ worker_connections 4096; }}\n\
http {{\n  access_log off;\n  client_body_temp_path {d}/{name}-body; proxy_temp_path {d}/{name}-proxy; fastcgi_temp_path {d}/{name}-fcgi; \
uwsgi_temp_path {d}/{name}-uwsgi; scgi_temp_path {d}/{name}-scgi;\n"
            )
        };
        let upstream_conf = format!(
            "{}  server {{ listen 127.0.0.1:{up}; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n",
            nginx_head("upstream", side_cpus(Side::Load)),
            up = ports.upstream,
        );
        let nginx_conf = format!(
            "load_module {module};\n{head}\
  upstream app {{ server 127.0.0.1:{up}; keepalive 128; }}\n\
  upstream gateway {{ server 127.0.0.1:{gw}; keepalive 128; }}\n\
  proxy_http_version 1.1;\n  proxy_set_header Connection \"\";\n\
  server {{ listen 127.0.0.1:{np}; location / {{ proxy_pass http://app; }} }}\n\
  server {{ listen 127.0.0.1:{mp}; wechat_oauth_config {config}; wechat_oauth on;\n\
    location / {{ proxy_set_header X-WeChat-OpenID $wechat_openid; proxy_set_header X-WeChat-Nickname $wechat_nickname;\n\
      proxy_set_header Connection \"\"; proxy_pass http://app; }} }}\n\
  server {{ listen 127.0.0.1:{ap};\n\
    location = /_wechat/auth {{ internal; proxy_pass http://gateway; proxy_pass_request_body off; proxy_set_header Content-Length \"\";\n\
      proxy_set_header X-Original-URI $request_uri; proxy_set_header X-Original-Method $request_method; proxy_set_header Connection \"\"; }}\n\
    location / {{ auth_request /_wechat/auth; auth_request_set $gateway_openid $upstream_http_x_wechat_openid;\n\
      proxy_set_header X-WeChat-OpenID $gateway_openid; proxy_set_header Connection \"\"; proxy_pass http://app; }} }}\n\
}}\n",
            module = module.display(),
            head = nginx_head("proxy", side_cpus(Side::Proxy)),
            config = config.display(),
            up = ports.upstream,
            gw = ports.gateway,
            np = ports.nginx,
            mp = ports.module,
            ap = ports.auth_request,
        );
        let nginx = |side: Side, name: &str, conf: &str| {
            let path = dir.join(format!("{name}.conf"));
            std::fs::write(&path, conf).unwrap();
            spawn(
                side,
                Path::new("nginx"),
                &[
                    "-p",
                    &dir.to_string_lossy(),
                    "-c",
                    &path.to_string_lossy(),
                    "-e",
                    &format!("{d}/{name}-error.log"),
                ],
                &[],
                &dir.join(format!("{name}.log")),
            )
        };
        let upstream = nginx(Side::Load, "upstream", &upstream_conf);
        let proxy_nginx = nginx(Side::Proxy, "proxy", &nginx_conf);
        let emulator = spawn(
            Side::Load,
            &release.join("wechat-emulator"),
            &[
                "--listen",
                &format!("127.0.0.1:{}", ports.emulator),
                "--callback-host",
                "127.0.0.1",
                "--appid",
                APPID,
            ],
            &[("WECHAT_APP_SECRET", APP_SECRET)],
            &dir.join("emulator.log"),
        );
        let bare = |port: u16, threads: &str| {
            spawn(
                Side::Proxy,
                &release.join("bare-pingora"),
                &[
                    &format!("127.0.0.1:{port}"),
                    &format!("127.0.0.1:{}", ports.upstream),
                    threads,
                ],
                &[],
                &dir.join(format!("bare-{threads}.log")),
            )
        };
        let config_arg = config.to_string_lossy();
        let metrics = format!("127.0.0.1:{}", ports.metrics);
        let gateway = |port: u16, threads: &str| {
            let mut env = vec![("WECHAT_GATEWAY__GATEWAY__THREADS", threads)];
            if port == ports.gateway {
                env.push(("WECHAT_GATEWAY__GATEWAY__METRICS_LISTEN", metrics.as_str()));
            }
            spawn(
                Side::Proxy,
                &release.join("wechat-gateway"),
                &[
                    "--config",
                    &config_arg,
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                ],
                &env,
                &dir.join(format!("gateway-{threads}.log")),
            )
        };
        let apache_conf = dir.join("apache.conf");
        std::fs::write(
            &apache_conf,
            apache::config(
                dir,
                ports.apache,
                ports.apache_oidc,
                ports.upstream,
                provider_url,
            ),
        )
        .unwrap();
        let stack = Stack {
            _upstream: upstream,
            nginx: proxy_nginx,
            _emulator: emulator,
            bare_one: bare(ports.bare_one, "1"),
            bare_two: bare(ports.bare_two, "2"),
            gateway_one: gateway(ports.gateway_one, "1"),
            gateway: gateway(ports.gateway, "2"),
            apache: spawn(
                Side::Proxy,
                Path::new("apache2"),
                &["-f", &apache_conf.to_string_lossy(), "-DFOREGROUND"],
                &[],
                &dir.join("apache.log"),
            ),
            idle_rss_kib: 0,
        };
        for url in [
            format!("http://127.0.0.1:{}/", ports.upstream),
            format!("http://127.0.0.1:{}/_emulator/calls", ports.emulator),
            format!("http://127.0.0.1:{}/", ports.bare_one),
            format!("http://127.0.0.1:{}/", ports.bare_two),
            format!("http://127.0.0.1:{}/_wechat/healthz", ports.gateway_one),
            format!("{}/_wechat/healthz", ports.gateway_url()),
            format!("http://127.0.0.1:{}/", ports.apache),
        ] {
            wait_ready(&url).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        Stack {
            idle_rss_kib: rss_kib(stack.gateway.pid()),
            ..stack
        }
    }

    /// The rows, each logged in where it needs a session.
    async fn rows(&self, ports: &Ports) -> Vec<Row> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let session = login(&client, &ports.gateway_url()).await;
        let apache_session =
            apache::login(&client, &format!("http://127.0.0.1:{}", ports.apache_oidc)).await;
        let with = |cookie: &str| {
            vec![
                format!("Cookie: {cookie}"),
                format!("User-Agent: {WECHAT_UA}"),
            ]
        };
        let row = |name, port: u16, headers: Vec<String>, baseline, proxies: Vec<u32>| Row {
            name,
            url: format!("http://127.0.0.1:{port}/"),
            headers,
            baseline,
            proxies,
            samples: vec![],
        };
        let s = || with(&session);
        let (bare_one, bare_two) = (self.bare_one.pid(), self.bare_two.pid());
        let (gw_one, gw) = (self.gateway_one.pid(), self.gateway.pid());
        let (nginx, apache) = (self.nginx.pid(), self.apache.pid());
        vec![
            row(
                "upstream direct (nginx return 200)",
                ports.upstream,
                s(),
                None,
                vec![],
            ),
            row(
                "bare Pingora, 1 thread",
                ports.bare_one,
                s(),
                None,
                vec![bare_one],
            ),
            row(
                "wechat-gateway, 1 thread, valid session",
                ports.gateway_one,
                s(),
                Some(BARE_ONE),
                vec![gw_one],
            ),
            row(
                "wechat-gateway, 1 thread, unauthenticated (302)",
                ports.gateway_one,
                vec![format!("User-Agent: {WECHAT_UA}")],
                Some(BARE_ONE),
                vec![gw_one],
            ),
            row(
                "bare Pingora, 2 threads",
                ports.bare_two,
                s(),
                None,
                vec![bare_two],
            ),
            row(
                "wechat-gateway, 2 threads, valid session",
                ports.gateway,
                s(),
                Some(BARE_TWO),
                vec![gw],
            ),
            row("bare nginx proxy", ports.nginx, s(), None, vec![nginx]),
            row(
                "nginx + module, valid session",
                ports.module,
                s(),
                Some(NGINX),
                vec![nginx],
            ),
            row(
                "nginx auth_request → gateway, valid session",
                ports.auth_request,
                s(),
                Some(NGINX),
                vec![nginx, gw],
            ),
            row("Apache proxy", ports.apache, s(), None, vec![apache]),
            row(
                "Apache + mod_auth_openidc, valid session",
                ports.apache_oidc,
                with(&apache_session),
                Some(APACHE_OIDC - 1),
                vec![apache],
            ),
        ]
    }

    /// Logins per second, memory per stored session and start-up, on the
    /// configured gateway; stops this stack's gateways.
    async fn logins_memory_startup(
        self,
        o: &Options,
        ports: &Ports,
        dir: &Path,
        release: &Path,
        toml: &str,
    ) -> Extras {
        let gateway_url = ports.gateway_url();
        let idle_rss_kib = self.idle_rss_kib;
        let warm_logins = 2_000.min(o.sessions);
        let logins_per_s = logins(&gateway_url, warm_logins, 32).await;
        let before = rss_kib(self.gateway.pid());
        let rest = o.sessions.saturating_sub(warm_logins);
        if rest > 0 {
            logins(&gateway_url, rest, 64).await;
        }
        let after_sessions_kib = rss_kib(self.gateway.pid());
        let per_session_bytes =
            (after_sessions_kib.saturating_sub(before) * 1024) as f64 / rest.max(1) as f64;
        drop(self);
        let start_port = free_port();
        let start_toml = toml.replace(
            &format!("listen = \"127.0.0.1:{}\"", ports.gateway),
            &format!("listen = \"127.0.0.1:{start_port}\""),
        );
        let start_config = dir.join("start.toml");
        std::fs::write(&start_config, start_toml).unwrap();
        let mut startups = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let p = spawn(
                Side::Proxy,
                &release.join("wechat-gateway"),
                &["--config", &start_config.to_string_lossy()],
                &[],
                &dir.join("start.log"),
            );
            wait_ready(&format!("http://127.0.0.1:{start_port}/_wechat/healthz")).await;
            startups.push(started.elapsed().as_secs_f64() * 1e3);
            drop(p);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Extras {
            logins_per_s,
            idle_rss_kib,
            after_sessions_kib,
            sessions: rest,
            per_session_bytes,
            startup_ms: median(startups),
            placement: Placement::Pinned,
            sessions_rows: Vec::new(),
            redis: None,
        }
    }
}

impl Table {
    /// The median over rounds of `f(row's sample, base's sample)`: each
    /// round's pair was measured back to back, so drift cancels out.
    fn paired(&self, row: usize, base: usize, f: &dyn Fn(&Sample, &Sample) -> f64) -> f64 {
        median(
            self.rows[row]
                .samples
                .iter()
                .zip(&self.rows[base].samples)
                .map(|(a, b)| f(a, b))
                .collect(),
        )
    }

    fn ratio(&self, row: usize, base: usize) -> f64 {
        self.paired(row, base, &|a, b| a.rps / b.rps)
    }

    fn added_p99(&self, row: usize, base: usize) -> f64 {
        self.paired(row, base, &|a, b| a.p99_us - b.p99_us)
    }

    fn markdown(&self) -> String {
        let mut table = format!(
            "### {}, {} connections\n\n| setup | req/s | p50 | p99 | ratio to its baseline (added p99) | proxy CPU per request (CPUs busy) |\n|---|---:|---:|---:|---|---:|\n",
            self.placement.title(),
            self.connections
        );
        for (i, row) in self.rows.iter().enumerate() {
            let m = |f: fn(&Sample) -> f64| median(row.samples.iter().map(f).collect());
            let ratio = row.baseline.map_or("baseline".to_owned(), |b| {
                format!(
                    "{:.2}× {} ({:+.0} µs)",
                    self.ratio(i, b),
                    self.rows[b].name,
                    self.added_p99(i, b)
                )
            });
            let cpu = match (row.proxies.is_empty(), row.baseline) {
                (true, _) => "–".to_owned(),
                (false, None) => format!("{:.1} µs ({:.2})", m(|s| s.cpu_us), m(|s| s.cpu_busy)),
                (false, Some(b)) => format!(
                    "{:.1} µs, {:+.1} µs ({:.2})",
                    m(|s| s.cpu_us),
                    self.paired(i, b, &|a, b| a.cpu_us - b.cpu_us),
                    m(|s| s.cpu_busy)
                ),
            };
            writeln!(
                table,
                "| {} | {:.0} | {:.0} µs | {:.0} µs | {} | {} |",
                row.name,
                m(|s| s.rps),
                m(|s| s.p50_us),
                m(|s| s.p99_us),
                ratio,
                cpu
            )
            .unwrap();
        }
        writeln!(
            table,
            "\nwechat-gateway (2 threads) ÷ Apache + mod_auth_openidc: **{:.2}×** · nginx + module ÷ nginx auth_request: **{:.2}×**\n",
            self.ratio(GATEWAY_TWO, APACHE_OIDC),
            self.ratio(MODULE, AUTH_REQUEST),
        )
        .unwrap();
        table
    }
}

fn report(o: &Options, tables: &[Table], x: &Extras) -> String {
    let mut targets = String::new();
    let mut target = |name: String, ok: bool, value: String| {
        writeln!(
            targets,
            "| {name} | {value} | {} |",
            if ok { "met" } else { "**missed**" }
        )
        .unwrap();
    };
    for t in tables {
        let at = format!("{}, {} conns", t.placement.title(), t.connections);
        for (row, base, name, at_least, p99) in [
            (
                GATEWAY_ONE,
                BARE_ONE,
                "gateway ≥ 0.95× bare Pingora (1 thread",
                0.95,
                true,
            ),
            (
                GATEWAY_TWO,
                BARE_TWO,
                "gateway ≥ 0.95× bare Pingora (2 threads",
                0.95,
                true,
            ),
            (
                GATEWAY_TWO,
                APACHE_OIDC,
                "gateway ≥ 2× Apache + mod_auth_openidc (",
                2.0,
                false,
            ),
            (MODULE, NGINX, "module ≥ 0.95× bare nginx (", 0.95, true),
            (
                MODULE,
                AUTH_REQUEST,
                "module ≥ 2× nginx auth_request → gateway (",
                2.0,
                false,
            ),
        ] {
            let r = t.ratio(row, base);
            let p99 = if p99 {
                format!(" ({:+.0} µs p99)", t.added_p99(row, base))
            } else {
                String::new()
            };
            let sep = if name.ends_with('(') { "" } else { "; " };
            target(
                format!("{name}{sep}{at})"),
                r >= at_least,
                format!("{r:.2}×{p99}"),
            );
        }
    }
    if let Some(r) = &x.redis {
        target(
            "0 Redis commands per authenticated request".into(),
            r.per_request < 0.01,
            format!("{:.3}", r.per_request),
        );
        target(
            "≤ 8 Redis commands per completed login".into(),
            r.per_login <= 8.0,
            format!("{:.1}", r.per_login),
        );
        target(
            "≤ 8 Redis commands per completed scene-QR login".into(),
            r.per_qr_login <= 8.0,
            format!("{:.1}", r.per_qr_login),
        );
    }
    target(
        "≥ 2,000 logins/s".into(),
        x.logins_per_s >= 2000.0,
        format!("{:.0}/s", x.logins_per_s),
    );
    target(
        "≤ 1 KiB per stored session".into(),
        x.per_session_bytes <= 1024.0,
        format!("{:.0} B ({} sessions)", x.per_session_bytes, x.sessions),
    );
    target(
        "idle RSS ≤ 30 MiB".into(),
        x.idle_rss_kib <= 30 * 1024,
        format!("{:.1} MiB", x.idle_rss_kib as f64 / 1024.0),
    );
    target(
        "start-up ≤ 100 ms".into(),
        x.startup_ms <= 100.0,
        format!("{:.0} ms", x.startup_ms),
    );
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let date = version_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let micro = o
        .micro
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|text| micro_table(&text))
        .unwrap_or_default();
    let tables: String = tables.iter().map(Table::markdown).collect();
    let mut growth = format!(
        "## As the work grows\n\n{}, 32 connections, the gateway with 2 threads; each request carries a random one of N live \
session cookies (sealed with the gateway's keys as its logins set them), so the verified-cookie cache (2,048 cookies) \
misses more as N outnumbers it.\n\n| live sessions | req/s | proxy CPU per request | cache hit rate |\n|---:|---:|---:|---:|\n",
        x.placement.title()
    );
    for r in &x.sessions_rows {
        writeln!(
            growth,
            "| {} | {:.0} | {:.1} µs | {:.1}% |",
            r.sessions,
            r.rps,
            r.cpu_us,
            r.hit_rate * 100.0
        )
        .unwrap();
    }
    if let Some(r) = &x.redis {
        write!(
            growth,
            "\nWith `[store] url = \"redis://…\"` (`INFO commandstats`, every command a script runs counted too; the logout sync's `ZRANGE` and `ZREMRANGEBYSCORE` counted apart as the background): \
**{:.1} commands per completed login** (WeChat browser: redirect, authorize, callback, first page), **{:.1} per completed \
scene-QR login** (desktop browser: QR code, the phone's scan pushed by the emulator, the status poll that sets the session), \
**{:.3} per authenticated request**, and {:.1} per second in the background \
(each instance reads the other instances' logouts every 500 ms). Logins/s: {:.0} with one instance, {:.0} with three on \
the same Redis (on this machine's cores they contend rather than scale; N instances' capacity follows from the per-login \
cost: at about 100k simple commands/s per Redis core, one Redis core serves about {:.0} logins/s).\n\n",
            r.per_login,
            r.per_qr_login,
            r.per_request,
            r.background_per_s,
            r.logins_one,
            r.logins_three,
            100_000.0 / r.per_login.max(1.0),
        )
        .unwrap();
    }
    format!(
        "# Benchmark results\n\n{date} · {cpu} · {cores} cores · {rustc} · Pingora 0.9.1 · {nginx} · {apache} · {wrk}\n\n\
`bench/run`: wrk for {dur} s per run, {rounds} interleaved rounds, at each connection count; req/s and latencies are medians \
over rounds, ratios and added p99 the median over rounds of each row against its baseline measured just before it. Every row \
sends the same request (its proxy's session cookie and a WeChat User-Agent), to the same nginx `return 200` upstream; every \
proxy runs with its default settings except where a row names its threads, and with no access log (nginx `access_log off`, Apache without `CustomLog`, the gateway `access_log = \"off\"`). Two placements: **sharing every CPU** (wrk with one \
thread per CPU, every proxy with one worker per CPU, as on a user's box) and **the proxy pinned alone to CPU 0** (its worker \
processes and threads there, wrk, the upstream and the emulator on the other CPUs), where a ratio is the proxy's own cost per \
request against its baseline's. Apache is Debian's event MPM; mod_auth_openidc logs in once against a small OpenID provider the \
bench runs (authorization code, HS256 ID token), then checks its session cookie against its server-side cache on every request.\n\n\
## Requests\n\n{tables}{growth}## Logins and memory\n\n\
| measure | value |\n|---|---:|\n| logins/s (redirect, authorize, callback, first page; 32 at a time) | {logins:.0} |\n\
| gateway RSS idle | {idle:.1} MiB |\n| gateway RSS after {n} more stored sessions | {after:.1} MiB ({per:.0} B each) |\n\
| start-up to first served request | {startup:.0} ms |\n\n## Targets\n\n| target | measured | |\n|---|---|---|\n{targets}\n{micro}",
        cores = cpus(),
        rustc = version_of("rustc", &["--version"]),
        nginx = version_of("nginx", &["-v"]),
        apache = version_of("apache2", &["-v"]).trim_start_matches("Server version: ").to_owned(),
        wrk = version_of("wrk", &["-v"]).split(" [").next().unwrap_or("").to_owned(),
        dur = o.duration,
        rounds = o.rounds,
        logins = x.logins_per_s,
        idle = x.idle_rss_kib as f64 / 1024.0,
        n = x.sessions,
        after = x.after_sessions_kib as f64 / 1024.0,
        per = x.per_session_bytes,
        startup = x.startup_ms,
    )
}

/// The micro-benchmarks' `time: [low mid high]` lines as a table.
fn micro_table(text: &str) -> String {
    let mut out = String::from("## Core micro-benchmarks (`cargo bench -p wechat-oauth`)\n\n| benchmark | median |\n|---|---:|\n");
    let mut name = String::new();
    for line in text.lines() {
        if let Some((n, rest)) = line.split_once("time:") {
            if !n.trim().is_empty() {
                name = n.trim().to_owned();
            }
            let mid: Vec<&str> = rest
                .trim()
                .trim_matches(['[', ']'])
                .split_whitespace()
                .collect();
            if mid.len() >= 4 {
                writeln!(out, "| {name} | {} {} |", mid[2], mid[3]).unwrap();
            }
        } else if !line.starts_with(' ')
            && !line.trim().is_empty()
            && ![
                "Found ",
                "Benchmarking",
                "Gnuplot",
                "Running",
                "Warning",
                "change",
                "No change",
                "Performance",
                "Change",
            ]
            .iter()
            .any(|p| line.starts_with(p))
        {
            name = line.trim().to_owned();
        }
    }
    out
}
