//! `[limits]`: logins per client address (GCRA, `governor`).

use super::*;

/// Logins (requests that make WeChat API calls without a session) per
/// client address: a GCRA limiter from `governor`, its idle keys dropped
/// every 1024 checks so memory follows the recent clients.
pub(super) struct LoginLimiter {
    pub(super) limiter: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
    pub(super) checks: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for LoginLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginLimiter(..)")
    }
}

impl LoginLimiter {
    pub(super) fn new(limits: &crate::config::LimitsConfig) -> Option<LoginLimiter> {
        let rate = std::num::NonZeroU32::new(limits.logins_per_minute)?;
        let burst = std::num::NonZeroU32::new(limits.login_burst)?;
        let quota = governor::Quota::per_minute(rate).allow_burst(burst);
        Some(LoginLimiter {
            limiter: governor::RateLimiter::keyed(quota),
            checks: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// `None` when `client` may go on; else how long it must wait, whole
    /// seconds (at least 1).
    pub(super) fn wait(&self, client: std::net::IpAddr) -> Option<u64> {
        use governor::clock::Clock;
        let n = self
            .checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % 1024 == 1023 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&client)
            .err()
            .map(|not_until| {
                let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
            })
            .map(|secs| secs.max(1))
    }
}

/// `429` with `Retry-After` (seconds): a page, or JSON for scripts.
pub(super) fn too_many_logins(
    retry_after: u64,
    answer: AnswerAs,
    lang: Lang,
    brand: &Branding,
) -> Reply {
    let json = answer == AnswerAs::Json;
    tracing::info!(retry_after, "a client is over its login limit");
    crate::metrics::count_refused("rate_limited");
    if json {
        return ApiError::new(429, ErrorName::TemporarilyUnavailable)
            .with_description("too many logins from this client")
            .with_retry_after(retry_after)
            .reply();
    }
    Notice::TooManyLogins
        .reply(lang, brand)
        .with_header("Retry-After", retry_after.to_string())
}

impl Gate {
    /// `429` when the request's client is over `[limits]`; `None` when it
    /// may go on (or its address is unknown).
    pub(super) fn login_limited(
        &self,
        req: &RequestParts<'_>,
        answer: AnswerAs,
        lang: Lang,
    ) -> Option<Reply> {
        let wait = self.login_limiter.as_ref()?.wait(req.client_addr?)?;
        Some(too_many_logins(wait, answer, lang, &self.branding))
    }
}
