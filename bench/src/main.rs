//! `wechat-bench` (run by `bench/run`): on loopback, one upstream (nginx
//! `return 200`), then with `wrk`, the same connections, threads and
//! duration for every row, interleaved rounds, medians:
//!
//! - upstream direct; bare Pingora; `wechat-gateway` with a session; the
//!   gateway's 302 for an unauthenticated WeChat request;
//! - bare nginx proxy; nginx + the native module with a session; nginx
//!   `auth_request` → the gateway with a session;
//!
//! then logins per second, the gateway's memory idle and per stored
//! session, and its start-up time. Prints the table and writes
//! `bench/RESULTS.md`.
//!
//! Expects the release build (`bench/run` makes it): target/release's
//! binaries and the nginx module built by examples/nginx/module/build.sh.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WECHAT_UA: &str = "Mozilla/5.0 (Linux; Android 14) MicroMessenger/8.0.47";
const APPID: &str = "wx1234567890abcdef";

struct Options {
    duration: u64,
    connections: u32,
    threads: u32,
    rounds: usize,
    sessions: usize,
    micro: Option<PathBuf>,
}

fn options() -> Options {
    let mut o = Options {
        duration: 5,
        connections: 64,
        threads: side_cpus(Side::Load) as u32,
        rounds: 3,
        sessions: 100_000,
        micro: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--duration" => o.duration = value.parse().expect("--duration SECONDS"),
            "--connections" => o.connections = value.parse().expect("--connections N"),
            "--threads" => o.threads = value.parse().expect("--threads N"),
            "--rounds" => o.rounds = value.parse().expect("--rounds N"),
            "--sessions" => o.sessions = value.parse().expect("--sessions N"),
            "--micro" => o.micro = Some(PathBuf::from(value)),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    o
}

use wechat_e2e::Proc;

/// Where processes run: with 2 or more CPUs, the proxy under test gets CPU 0
/// to itself and the load side (wrk, the upstream, the emulator) the others,
/// so each row measures the proxy's own cost per request, not the scheduler's
/// mix of four busy processes on shared cores.
#[derive(Clone, Copy)]
enum Side {
    Proxy,
    Load,
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `taskset` arguments for a side; none on a single-CPU machine.
fn cpu_list(side: Side) -> Option<String> {
    let n = cpus();
    (n >= 2).then(|| match side {
        Side::Proxy => "0".to_owned(),
        Side::Load if n == 2 => "1".to_owned(),
        Side::Load => format!("1-{}", n - 1),
    })
}

/// CPUs a side has (the proxy side's processes run one worker per CPU).
fn side_cpus(side: Side) -> usize {
    match (side, cpus()) {
        (_, n) if n < 2 => n,
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
fn wrk(o: &Options, url: &str, headers: &[String], proxies: &[u32]) -> Sample {
    let mut cmd = command_on(Side::Load, Path::new("wrk"));
    cmd.args([
        format!("-t{}", o.threads),
        format!("-c{}", o.connections),
        format!("-d{}s", o.duration),
        "--latency".to_owned(),
    ]);
    for h in headers {
        cmd.arg("-H").arg(h);
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
    let page = client
        .get(format!("{gateway}/"))
        .header("User-Agent", WECHAT_UA)
        .header("Cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "the first page after the login");
    session
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location ({})", r.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

fn cookie_of(r: &reqwest::Response, prefix: &str) -> String {
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

    let (up, np, mp, ap, bp, gw, emu) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let gateway_url = format!("http://127.0.0.1:{gw}");
    let emulator_url = format!("http://127.0.0.1:{emu}");
    let app_secret = "bench-app-secret";
    let cookie_secret = "bench-cookie-secret-0123456789abcdef-0123456789";
    let toml = format!(
        "[wechat]\nappid = \"{APPID}\"\nsecret = \"{app_secret}\"\nscope = \"snsapi_userinfo\"\n\
         open_base = \"{emulator_url}\"\napi_base = \"{emulator_url}\"\n\n\
         [gateway]\nlisten = \"127.0.0.1:{gw}\"\nupstream = \"127.0.0.1:{up}\"\npublic_url = \"{gateway_url}\"\n\
         cookie_secret = \"{cookie_secret}\"\n\n\
         [limits]\nlogins_per_minute = 0\n\n[store]\nurl = \"memory\"\n"
    );
    let config = dir.join("gateway.toml");
    std::fs::write(&config, &toml).unwrap();

    // nginx twice: the upstream on the load side; the bare proxy, the module
    // and auth_request → gateway on the proxy side.
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
        nginx_head("upstream", side_cpus(Side::Load))
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
    let _upstream = nginx(Side::Load, "upstream", &upstream_conf);
    let proxy_nginx = nginx(Side::Proxy, "proxy", &nginx_conf);
    let _emulator = spawn(
        Side::Load,
        &release.join("wechat-emulator"),
        &[
            "--listen",
            &format!("127.0.0.1:{emu}"),
            "--callback-host",
            "127.0.0.1",
            "--appid",
            APPID,
        ],
        &[("WECHAT_APP_SECRET", app_secret)],
        &dir.join("emulator.log"),
    );
    let bare = spawn(
        Side::Proxy,
        &release.join("bare-pingora"),
        &[&format!("127.0.0.1:{bp}"), &format!("127.0.0.1:{up}")],
        &[],
        &dir.join("bare.log"),
    );
    let gateway = spawn(
        Side::Proxy,
        &release.join("wechat-gateway"),
        &["--config", &config.to_string_lossy()],
        &[],
        &dir.join("gateway.log"),
    );
    wait_ready(&format!("http://127.0.0.1:{up}/")).await;
    wait_ready(&format!("{emulator_url}/_emulator/calls")).await;
    wait_ready(&format!("http://127.0.0.1:{bp}/")).await;
    wait_ready(&format!("{gateway_url}/_wechat/healthz")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = rss_kib(gateway.pid());

    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let session = login(&client, &gateway_url).await;
    let with_session = vec![
        format!("Cookie: {session}"),
        format!("User-Agent: {WECHAT_UA}"),
    ];
    let wechat_only = vec![format!("User-Agent: {WECHAT_UA}")];

    struct Row {
        name: &'static str,
        url: String,
        headers: Vec<String>,
        baseline: Option<usize>,
        /// The proxy side's processes: their CPU time is counted.
        proxies: Vec<u32>,
        samples: Vec<Sample>,
    }
    let (bare_pid, gateway_pid, nginx_pid) = (bare.pid(), gateway.pid(), proxy_nginx.pid());
    let mut rows = vec![
        Row {
            name: "upstream direct (nginx return 200)",
            url: format!("http://127.0.0.1:{up}/"),
            headers: with_session.clone(),
            baseline: None,
            proxies: vec![],
            samples: vec![],
        },
        Row {
            name: "bare Pingora proxy",
            url: format!("http://127.0.0.1:{bp}/"),
            headers: with_session.clone(),
            baseline: None,
            proxies: vec![bare_pid],
            samples: vec![],
        },
        Row {
            name: "wechat-gateway, valid session",
            url: format!("{gateway_url}/"),
            headers: with_session.clone(),
            baseline: Some(1),
            proxies: vec![gateway_pid],
            samples: vec![],
        },
        Row {
            name: "wechat-gateway, unauthenticated (302)",
            url: format!("{gateway_url}/"),
            headers: wechat_only,
            baseline: Some(1),
            proxies: vec![gateway_pid],
            samples: vec![],
        },
        Row {
            name: "bare nginx proxy",
            url: format!("http://127.0.0.1:{np}/"),
            headers: with_session.clone(),
            baseline: None,
            proxies: vec![nginx_pid],
            samples: vec![],
        },
        Row {
            name: "nginx + module, valid session",
            url: format!("http://127.0.0.1:{mp}/"),
            headers: with_session.clone(),
            baseline: Some(4),
            proxies: vec![nginx_pid],
            samples: vec![],
        },
        Row {
            name: "nginx auth_request → gateway, valid session",
            url: format!("http://127.0.0.1:{ap}/"),
            headers: with_session,
            baseline: Some(4),
            proxies: vec![nginx_pid, gateway_pid],
            samples: vec![],
        },
    ];
    eprintln!(
        "wrk: {} threads, {} connections, {} s per run, {} interleaved rounds",
        o.threads, o.connections, o.duration, o.rounds
    );
    for round in 0..o.rounds {
        for row in rows.iter_mut() {
            let s = wrk(&o, &row.url, &row.headers, &row.proxies);
            eprintln!(
                "round {}: {:<46} {:>10.0} req/s  p50 {:>7.0} us  p99 {:>7.0} us  proxy CPU {:>5.1} us/req ({:.2} CPUs)",
                round + 1,
                row.name,
                s.rps,
                s.p50_us,
                s.p99_us,
                s.cpu_us,
                s.cpu_busy
            );
            row.samples.push(s);
        }
    }
    let med: Vec<Sample> = rows
        .iter()
        .map(|r| Sample {
            rps: median(r.samples.iter().map(|s| s.rps).collect()),
            p50_us: median(r.samples.iter().map(|s| s.p50_us).collect()),
            p99_us: median(r.samples.iter().map(|s| s.p99_us).collect()),
            cpu_us: median(r.samples.iter().map(|s| s.cpu_us).collect()),
            cpu_busy: median(r.samples.iter().map(|s| s.cpu_busy).collect()),
        })
        .collect();

    // Logins, memory per stored session, start-up.
    let warm_logins = 2_000.min(o.sessions);
    let logins_per_s = logins(&gateway_url, warm_logins, 32).await;
    let before_sessions = rss_kib(gateway.pid());
    let rest = o.sessions.saturating_sub(warm_logins);
    if rest > 0 {
        logins(&gateway_url, rest, 64).await;
    }
    let after_sessions = rss_kib(gateway.pid());
    let per_session_bytes =
        (after_sessions.saturating_sub(before_sessions) * 1024) as f64 / rest.max(1) as f64;
    drop(gateway);
    let start_port = free_port();
    let start_toml = toml.replace(
        &format!("listen = \"127.0.0.1:{gw}\""),
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
    let startup_ms = median(startups);

    // The report.
    let mut table = String::new();
    writeln!(
        table,
        "| setup | req/s | p50 | p99 | ratio to its baseline | proxy CPU per request (CPUs busy) |"
    )
    .unwrap();
    writeln!(table, "|---|---:|---:|---:|---|---:|").unwrap();
    // Ratios are medians over rounds of each row against its baseline run
    // just before it: the machine's drift between rounds cancels out.
    let paired = |row: usize, base: usize, f: &dyn Fn(&Sample, &Sample) -> f64| {
        median(
            rows[row]
                .samples
                .iter()
                .zip(&rows[base].samples)
                .map(|(a, b)| f(a, b))
                .collect(),
        )
    };
    let ratio_of = |row: usize, base: usize| paired(row, base, &|a, b| a.rps / b.rps);
    let added_p99 = |row: usize, base: usize| paired(row, base, &|a, b| a.p99_us - b.p99_us);
    for (i, (row, m)) in rows.iter().zip(&med).enumerate() {
        let ratio = row.baseline.map_or("baseline".to_owned(), |b| {
            format!(
                "{:.2}× {} ({:+.0} µs p99)",
                ratio_of(i, b),
                rows[b].name,
                added_p99(i, b)
            )
        });
        let cpu = match (row.proxies.is_empty(), row.baseline) {
            (true, _) => "–".to_owned(),
            (false, None) => format!("{:.1} µs ({:.2})", m.cpu_us, m.cpu_busy),
            (false, Some(b)) => format!(
                "{:.1} µs, {:+.1} µs ({:.2})",
                m.cpu_us,
                paired(i, b, &|a, b| a.cpu_us - b.cpu_us),
                m.cpu_busy
            ),
        };
        writeln!(
            table,
            "| {} | {:.0} | {:.0} µs | {:.0} µs | {} | {} |",
            row.name, m.rps, m.p50_us, m.p99_us, ratio, cpu
        )
        .unwrap();
    }
    let module_vs_auth = ratio_of(5, 6);
    writeln!(
        table,
        "\nnginx + module ÷ nginx auth_request: **{module_vs_auth:.2}×**"
    )
    .unwrap();
    let mut targets = String::new();
    let mut target = |name: &str, ok: bool, value: String| {
        writeln!(
            targets,
            "| {name} | {value} | {} |",
            if ok { "met" } else { "**missed**" }
        )
        .unwrap();
    };
    let gw_ratio = ratio_of(2, 1);
    target(
        "gateway ≥ 0.95× bare Pingora",
        gw_ratio >= 0.95,
        format!("{gw_ratio:.2}×"),
    );
    let added = added_p99(2, 1);
    target(
        "gateway adds ≤ 100 µs p99",
        added <= 100.0,
        format!("{added:+.0} µs"),
    );
    let mod_ratio = ratio_of(5, 4);
    target(
        "module ≥ 0.95× bare nginx",
        mod_ratio >= 0.95,
        format!("{mod_ratio:.2}×"),
    );
    target(
        "module ≥ 2× auth_request",
        module_vs_auth >= 2.0,
        format!("{module_vs_auth:.2}×"),
    );
    target(
        "≥ 2,000 logins/s",
        logins_per_s >= 2000.0,
        format!("{logins_per_s:.0}/s"),
    );
    target(
        "≤ 1 KiB per stored session",
        per_session_bytes <= 1024.0,
        format!("{per_session_bytes:.0} B ({} sessions)", rest),
    );
    target(
        "idle RSS ≤ 30 MiB",
        idle_rss <= 30 * 1024,
        format!("{:.1} MiB", idle_rss as f64 / 1024.0),
    );
    target(
        "start-up ≤ 100 ms",
        startup_ms <= 100.0,
        format!("{startup_ms:.0} ms"),
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
    let report = format!(
        "# Benchmark results\n\n{date} · {cpu} · {cores} cores · {rustc} · Pingora 0.9.1 · {nginx} · {wrk}\n\n\
`bench/run`: wrk -t{t} -c{c} -d{dur}s, {rounds} interleaved rounds; req/s and latencies are medians over rounds, \
ratios the median over rounds of each row against its baseline measured just before it. Every row sends the same request \
(the session cookie and a WeChat User-Agent). Everything runs on loopback on this one machine: {placement}\n\n\
## Requests\n\n{table}\n## Logins and memory\n\n\
| measure | value |\n|---|---:|\n| logins/s (redirect, authorize, callback, first page; 32 at a time) | {logins_per_s:.0} |\n\
| gateway RSS idle | {idle:.1} MiB |\n| gateway RSS after {n} more stored sessions | {after:.1} MiB ({per_session_bytes:.0} B each) |\n\
| start-up to first served request | {startup_ms:.0} ms |\n\n## Targets\n\n| target | measured | |\n|---|---|---|\n{targets}\n{micro}",
        cores = cpus(),
        placement = match cpu_list(Side::Load) {
            Some(load) => format!(
                "the proxy under test (bare Pingora, the gateway, or nginx with one worker; for auth_request nginx and the gateway) \
runs alone on CPU 0 with one worker thread, wrk, the upstream nginx and the emulator on CPU {load}, so each ratio is the \
proxy's own cost per request against its baseline's."
            ),
            None => "one CPU shared by wrk, the upstream and the proxies, so the numbers are noisy.".to_owned(),
        },
        rustc = version_of("rustc", &["--version"]),
        nginx = version_of("nginx", &["-v"]),
        wrk = version_of("wrk", &["-v"]).split(" [").next().unwrap_or("").to_owned(),
        t = o.threads,
        c = o.connections,
        dur = o.duration,
        rounds = o.rounds,
        idle = idle_rss as f64 / 1024.0,
        n = rest,
        after = after_sessions as f64 / 1024.0,
    );
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
