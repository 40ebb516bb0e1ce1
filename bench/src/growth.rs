//! The cost as the work grows: requests/s and CPU per request with 1k,
//! 100k and 1M live sessions (each request a random one of them, so the
//! verified-cookie cache's hit rate falls as they outnumber it), and the
//! Redis store's commands per login and per authenticated request, with
//! logins/s for 1 and 3 instances on one Redis.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wechat_e2e::redis_cli;
use wechat_oauth::seal::Sealer;
use wechat_oauth::session::seal_session;
use wechat_oauth::{Config, Identity, Session};

use crate::{free_port, login, logins, spawn, wait_ready, wrk_script, Options, Side};

/// One row of the sessions table.
pub struct SessionsRow {
    pub sessions: usize,
    pub rps: f64,
    pub cpu_us: f64,
    pub hit_rate: f64,
}

/// The Redis store's costs.
pub struct RedisCosts {
    pub per_login: f64,
    /// Per completed scene-QR login: the QR code, the scan's push, the
    /// status poll that sets the session.
    pub per_qr_login: f64,
    pub per_request: f64,
    pub background_per_s: f64,
    pub logins_one: f64,
    pub logins_three: f64,
}

/// `count` session cookies (`name=value` lines) sealed with the gateway's
/// keys, as its logins would have set them.
fn mint(toml: &str, count: usize, path: &Path) {
    let config = Config::from_toml(toml, |_| None).unwrap();
    let sealer = Sealer::with_rotation(&config.gateway.cookie_secrets).unwrap();
    let day = std::time::Duration::from_secs(86_400);
    let mut out = String::with_capacity(count * 300);
    for i in 0..count {
        let identity = Identity {
            openid: format!("oBench{i:022}"),
            scope: "snsapi_base".into(),
            ..Default::default()
        };
        let session = Session::starting_now(Arc::new(identity), format!("bench-sid-{i:022}"), day);
        writeln!(
            out,
            "{}={}",
            config.gateway.session_cookie_name,
            seal_session(&sealer, &session)
        )
        .unwrap();
    }
    std::fs::write(path, out).unwrap();
}

/// The `hit` and `miss` counts of the gateway's session cache.
async fn cache_counts(metrics: &str) -> (f64, f64) {
    let text = reqwest::get(metrics).await.unwrap().text().await.unwrap();
    let count = |result: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("wechat_gateway_session_cache_lookups_total")
                    && l.contains(&format!("result=\"{result}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    (count("hit"), count("miss"))
}

/// Requests/s, CPU per request and the cache's hit rate at each count of
/// live sessions, on the gateway at `url` (pid `pid`) whose metrics are at
/// `metrics`.
pub async fn sessions(
    o: &Options,
    toml: &str,
    dir: &Path,
    url: &str,
    pid: u32,
    metrics: &str,
) -> Vec<SessionsRow> {
    let script = dir.join("sessions.lua");
    std::fs::write(
        &script,
        format!(
            "local cookies = {{}}\nfor line in io.lines(\"{}\") do cookies[#cookies + 1] = line end\n\
             local n = #cookies\nmath.randomseed(os.time() + tonumber(tostring({{}}):sub(8), 16))\n\
             request = function()\n  return wrk.format(\"GET\", \"/\", {{[\"Cookie\"] = cookies[math.random(n)], \
             [\"User-Agent\"] = \"{}\"}})\nend\n",
            dir.join("cookies.txt").display(),
            crate::WECHAT_UA
        ),
    )
    .unwrap();
    let mut rows = Vec::new();
    for count in [1_000, 100_000, 1_000_000] {
        mint(toml, count, &dir.join("cookies.txt"));
        // A warm-up run fills the cache as a steady load would.
        wrk_script(o, 32, url, &script, &[pid], 1);
        let before = cache_counts(metrics).await;
        let s = wrk_script(o, 32, url, &script, &[pid], o.duration);
        let after = cache_counts(metrics).await;
        let (hits, misses) = (after.0 - before.0, after.1 - before.1);
        eprintln!(
            "{count} live sessions: {:.0} req/s, {:.1} us/req, hit rate {:.3}",
            s.rps,
            s.cpu_us,
            hits / (hits + misses).max(1.0)
        );
        rows.push(SessionsRow {
            sessions: count,
            rps: s.rps,
            cpu_us: s.cpu_us,
            hit_rate: hits / (hits + misses).max(1.0),
        });
    }
    let _ = std::fs::remove_file(dir.join("cookies.txt"));
    rows
}

/// Commands Redis ran since its last `CONFIG RESETSTAT` (those a script
/// ran count too, as `INFO commandstats` counts them): the logout sync's
/// (`background`) or every other one.
fn commands_since_reset(port: u16, background: bool) -> f64 {
    wechat_e2e::redis_commands_since_reset(port)
        .into_iter()
        .filter(|(name, _)| wechat_e2e::REDIS_SYNC_COMMANDS.contains(&name.as_str()) == background)
        .map(|(_, calls)| calls as f64)
        .sum()
}

const DESKTOP_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0";
const PUSH_TOKEN: &str = "benchpushtoken";

/// One scene-QR login on `gateway` by a desktop browser, the scan done by
/// the emulator at `emulator` (which pushes the event to the gateway).
async fn qr_login(client: &reqwest::Client, gateway: &str, emulator: &str) {
    let created = client
        .get(format!("{gateway}/_wechat/qr/new?rd=%2F"))
        .header("User-Agent", DESKTOP_UA)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200, "qr/new");
    let scene_cookie = crate::cookie_of(&created, "wechat_scene");
    let q: serde_json::Value = serde_json::from_slice(&created.bytes().await.unwrap()).unwrap();
    let scan = client
        .post(format!("{emulator}/_emulator/scan"))
        .header("Content-Type", "application/json")
        .body(serde_json::json!({"ticket": q["ticket"]}).to_string())
        .send()
        .await
        .unwrap();
    let scanned: serde_json::Value = serde_json::from_slice(&scan.bytes().await.unwrap()).unwrap();
    assert_eq!(scanned["status"], 200, "the scan's push: {scanned}");
    let status = client
        .get(format!(
            "{gateway}/_wechat/qr/status?scene={}&wait=0",
            q["scene"].as_str().unwrap()
        ))
        .header("User-Agent", DESKTOP_UA)
        .header("Cookie", &scene_cookie)
        .send()
        .await
        .unwrap();
    crate::cookie_of(&status, "wechat_session=");
}

/// The Redis store's commands per login, per scene-QR login, per
/// authenticated request and in the background, and logins/s with 1 and 3
/// gateways on one Redis (with an emulator of their own, which pushes the
/// scans to the first gateway).
pub async fn redis(o: &Options, dir: &Path, release: &Path, config: &Path) -> RedisCosts {
    let port = free_port();
    let _redis = spawn(
        Side::Load,
        Path::new("redis-server"),
        &[
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        &[],
        &dir.join("redis.log"),
    );
    let started = Instant::now();
    while !redis_cli(port, &["PING"]).contains("PONG") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis-server did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listens = [free_port(), free_port(), free_port()];
    let emulator_port = free_port();
    let emulator = format!("http://127.0.0.1:{emulator_port}");
    let _emulator = spawn(
        Side::Load,
        &release.join("wechat-emulator"),
        &[
            "--listen",
            &format!("127.0.0.1:{emulator_port}"),
            "--callback-host",
            "127.0.0.1",
            "--appid",
            crate::APPID,
            "--push-token",
            PUSH_TOKEN,
            "--push-url",
            &format!("http://127.0.0.1:{}/_wechat/events", listens[0]),
        ],
        &[("WECHAT_APP_SECRET", crate::APP_SECRET)],
        &dir.join("emulator-redis.log"),
    );
    wait_ready(&format!("{emulator}/_emulator/calls")).await;
    let store = format!("redis://127.0.0.1:{port}");
    let config_arg = config.to_string_lossy();
    let gateways: Vec<(wechat_e2e::Proc, String)> = listens
        .iter()
        .enumerate()
        .map(|(i, &listen)| {
            let p = spawn(
                Side::Proxy,
                &release.join("wechat-gateway"),
                &[
                    "--config",
                    &config_arg,
                    "--listen",
                    &format!("127.0.0.1:{listen}"),
                    "--public-url",
                    &format!("http://127.0.0.1:{listen}"),
                ],
                &[
                    ("WECHAT_GATEWAY__STORE__URL", store.as_str()),
                    ("WECHAT_GATEWAY__WECHAT__API_BASE", emulator.as_str()),
                    ("WECHAT_GATEWAY__WECHAT__OPEN_BASE", emulator.as_str()),
                    ("WECHAT_GATEWAY__WECHAT__PUSH_TOKEN", PUSH_TOKEN),
                    ("WECHAT_GATEWAY__GATEWAY__DESKTOP_LOGIN", "scene_qr"),
                ],
                &dir.join(format!("gateway-redis-{i}.log")),
            );
            (p, format!("http://127.0.0.1:{listen}"))
        })
        .collect();
    for (_, url) in &gateways {
        wait_ready(&format!("{url}/_wechat/healthz")).await;
    }
    let first = &gateways[0].1;
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Background: the logout sync every 500 ms, per instance.
    redis_cli(port, &["CONFIG", "RESETSTAT"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let background_per_s = commands_since_reset(port, true) / 2.0;
    let count = 300;
    redis_cli(port, &["CONFIG", "RESETSTAT"]);
    logins(first, count, 8).await;
    let in_logins = commands_since_reset(port, false);
    let per_login = in_logins / count as f64;
    // The first QR code fetches the basic token (once, under the lock): not
    // a per-login cost.
    qr_login(&client, first, &emulator).await;
    let qr_count = 100;
    redis_cli(port, &["CONFIG", "RESETSTAT"]);
    for _ in 0..qr_count {
        qr_login(&client, first, &emulator).await;
    }
    let in_qr = commands_since_reset(port, false);
    let per_qr_login = in_qr / qr_count as f64;
    let session = login(&client, first).await;
    let headers = vec![
        format!("Cookie: {session}"),
        format!("User-Agent: {}", crate::WECHAT_UA),
    ];
    redis_cli(port, &["CONFIG", "RESETSTAT"]);
    let s = crate::wrk(
        o,
        32,
        &format!("{first}/"),
        &headers,
        &[gateways[0].0.pid()],
    );
    let in_requests = commands_since_reset(port, false);
    let per_request = (in_requests / (s.rps * o.duration as f64).max(1.0)).max(0.0);
    let logins_one = logins(first, 2_000, 32).await;
    let t = Instant::now();
    let all: Vec<_> = gateways
        .iter()
        .map(|(_, url)| {
            let url = url.clone();
            tokio::spawn(async move { logins(&url, 667, 11).await })
        })
        .collect();
    for task in all {
        task.await.unwrap();
    }
    let logins_three = 3.0 * 667.0 / t.elapsed().as_secs_f64();
    eprintln!(
        "Redis: {per_login:.1} commands per login, {per_qr_login:.1} per scene-QR login, {per_request:.3} per request, \
         {background_per_s:.1}/s in the background; logins/s {logins_one:.0} (1 instance), {logins_three:.0} (3)"
    );
    RedisCosts {
        per_login,
        per_qr_login,
        per_request,
        background_per_s,
        logins_one,
        logins_three,
    }
}
