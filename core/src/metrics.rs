//! The gate's Prometheus metrics (`wechat_gateway_*`), in the process's
//! default registry: every host of the gate counts the same events. The
//! gateway serves them on `[gateway] metrics_listen`; [`render`] gives the
//! text format to any other host.

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, HistogramVec,
    IntCounter, IntCounterVec,
};

/// Requests by what the gate did: `pass`, `redirect` (a login or a return),
/// `unauthorized` (401 JSON), `route` (the gate's own 2xx answers),
/// `client_error` (other 4xx pages), `server_error` (5xx pages).
pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "wechat_gateway_requests_total",
        "Requests by the gate's outcome",
        &["outcome"]
    )
    .expect("metric registers once")
});

/// `REQUESTS{outcome="pass"}`, resolved once: it counts every proxied
/// request, and a label lookup per request would cost a hash and a lock.
pub static REQUESTS_PASSED: LazyLock<IntCounter> =
    LazyLock::new(|| REQUESTS.with_label_values(&["pass"]));

/// Session cookies looked up in the verified-cookie cache
/// ([`crate::session::VerifiedSessions`]), by `result`: `hit` (opened
/// before) or `miss` (opened now, or refused).
pub static SESSION_CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "wechat_gateway_session_cache_lookups_total",
        "Session cookies looked up in the verified-cookie cache, by result",
        &["result"]
    )
    .expect("metric registers once")
});

/// `SESSION_CACHE{result="hit"}`, resolved once (every passing request).
pub static SESSION_CACHE_HITS: LazyLock<IntCounter> =
    LazyLock::new(|| SESSION_CACHE.with_label_values(&["hit"]));

/// `SESSION_CACHE{result="miss"}`, resolved once.
pub static SESSION_CACHE_MISSES: LazyLock<IntCounter> =
    LazyLock::new(|| SESSION_CACHE.with_label_values(&["miss"]));

/// Logins sent to WeChat's authorize page (or handed an authorize URL),
/// by site ([`crate::Config::site_label`]).
pub static LOGINS_STARTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "wechat_gateway_logins_started_total",
        "Logins sent to WeChat's authorize page, by site",
        &["site"]
    )
    .expect("metric registers once")
});

/// Code exchanges that ended in a session, by site.
pub static LOGINS_COMPLETED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "wechat_gateway_logins_completed_total",
        "Code exchanges that ended in a session, by site",
        &["site"]
    )
    .expect("metric registers once")
});

/// Code exchanges that failed, by site and WeChat's errcode (`transport`,
/// `store`, `malformed` or `snapshot` when there is none).
pub static LOGINS_FAILED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "wechat_gateway_logins_failed_total",
        "Code exchanges that failed, by site and errcode",
        &["site", "errcode"]
    )
    .expect("metric registers once")
});

/// WeChat API calls (each attempt) by endpoint and errcode (`0` for a
/// success, `transport` or `malformed` when WeChat gave none).
pub static WECHAT_CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "wechat_gateway_wechat_api_calls_total",
        "WeChat API calls by endpoint and errcode",
        &["endpoint", "errcode"]
    )
    .expect("metric registers once")
});

/// WeChat API call latency (each attempt), seconds, by endpoint.
pub static WECHAT_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "wechat_gateway_wechat_api_duration_seconds",
        "WeChat API call latency by endpoint",
        &["endpoint"],
        vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .expect("metric registers once")
});

/// Retries of WeChat API calls (errcode -1, connection failures), by endpoint.
pub static WECHAT_RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "wechat_gateway_wechat_api_retries_total",
        "Retries of WeChat API calls by endpoint",
        &["endpoint"]
    )
    .expect("metric registers once")
});

/// Callbacks answered by joining another's exchange of the same code.
pub static EXCHANGE_JOINS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "wechat_gateway_code_exchange_joins_total",
        "Callbacks that joined the exchange of their code instead of sending it again"
    )
    .expect("metric registers once")
});

/// Scene QR codes by what became of them: `created`, `confirmed`, `expired`.
pub static QR_SCENES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "wechat_gateway_qr_scenes_total",
        "Scene QR codes by status",
        &["status"]
    )
    .expect("metric registers once")
});

/// Failed commands of the shared store (Redis).
pub static STORE_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "wechat_gateway_store_errors_total",
        "Failed commands of the shared store (Redis)"
    )
    .expect("metric registers once")
});

/// Attacks and misuse the gate refused, by `reason`: `code_other_state` (a
/// code presented with a state other than the one it came with),
/// `push_replay`, `push_plaintext`, `bad_path`, `rate_limited`.
pub static REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "wechat_gateway_refused_total",
        "Requests the gate refused as an attack or misuse, by reason",
        &["reason"]
    )
    .expect("metric registers once")
});

/// Counts a refusal of [`REFUSED`].
pub fn count_refused(reason: &'static str) {
    REFUSED.with_label_values(&[reason]).inc();
}

/// Counts a request the gate answered itself, by its status.
pub fn count_reply(status: u16) {
    let outcome = match status {
        301..=303 | 307 | 308 => "redirect",
        401 => "unauthorized",
        200..=299 => "route",
        400..=499 => "client_error",
        _ => "server_error",
    };
    REQUESTS.with_label_values(&[outcome]).inc();
}

/// Responses of the application behind the gateway, by status class
/// (`1xx` … `5xx`).
pub static UPSTREAM_RESPONSES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "wechat_gateway_upstream_responses_total",
        "Responses of the application, by status class",
        &["class"]
    )
    .expect("metric registers once")
});

/// Time from sending a request to the application to its response
/// header, in seconds.
pub static UPSTREAM_SECONDS: LazyLock<prometheus::Histogram> = LazyLock::new(|| {
    prometheus::register_histogram!(
        "wechat_gateway_upstream_duration_seconds",
        "Time to the application's response header",
        vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .expect("metric registers once")
});

/// Counts one response of the application: its status class and how long
/// its header took.
pub fn count_upstream(status: u16, elapsed: std::time::Duration) {
    let class = match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    UPSTREAM_RESPONSES.with_label_values(&[class]).inc();
    UPSTREAM_SECONDS.observe(elapsed.as_secs_f64());
}

/// `wechat_gateway_build_info{version, commit} 1`: which build runs.
pub fn set_build_info(version: &str, commit: &str) {
    static BUILD_INFO: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
        prometheus::register_int_gauge_vec!(
            "wechat_gateway_build_info",
            "The running build: its version and commit",
            &["version", "commit"]
        )
        .expect("metric registers once")
    });
    BUILD_INFO.with_label_values(&[version, commit]).set(1);
}

/// Registers every family in the default registry now (they register on
/// first use), so a scrape shows each from the start. A host that serves
/// the default registry itself (the gateway: Pingora's Prometheus service)
/// calls this once.
pub fn register() {
    for family in [&*EXCHANGE_JOINS, &*STORE_ERRORS] {
        let _ = family.get();
    }
    let _ = (
        &*REQUESTS,
        &*LOGINS_FAILED,
        &*WECHAT_CALLS,
        &*WECHAT_SECONDS,
    );
    let _ = (
        &*WECHAT_RETRIES,
        &*QR_SCENES,
        &*UPSTREAM_RESPONSES,
        &*UPSTREAM_SECONDS,
    );
}

/// Shows the login series of the site `site` ([`crate::Config::site_label`])
/// at zero from the start, as [`register`] does for the families.
pub fn register_site(site: &str) {
    let _ = LOGINS_STARTED.with_label_values(&[site]).get();
    let _ = LOGINS_COMPLETED.with_label_values(&[site]).get();
}

/// Pushes forwarded to the application (`[wechat] push_forward`), by
/// outcome: `answered`, `timeout`, `failed` (each of those two answered
/// `success` for it), `repeat` (a retry forwarded before).
pub static PUSH_FORWARDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "wechat_gateway_push_forwards_total",
        "Pushes forwarded to the application, by outcome",
        &["outcome"]
    )
    .expect("metric registers once")
});

/// Counts a forwarded push's outcome.
pub fn count_push_forward(outcome: &'static str) {
    PUSH_FORWARDS.with_label_values(&[outcome]).inc();
}

/// Every metric of the process, in Prometheus' text format (version 0.0.4).
pub fn render() -> String {
    use prometheus::Encoder;
    register();
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&prometheus::gather(), &mut out)
        .expect("text encoding never fails");
    String::from_utf8(out).expect("the text format is UTF-8")
}
