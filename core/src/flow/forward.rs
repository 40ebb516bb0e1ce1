//! The Official Account's one push URL, shared with the application
//! (`[wechat] push_forward`, README "The push URL, shared"): a push the
//! gate does not consume goes to the application as WeChat sent it (query
//! and body, still encrypted in safe mode), and its answer goes back.

use super::*;

/// The most bytes of the application's answer passed back to WeChat.
const MAX_FORWARD_ANSWER_BYTES: usize = 64 * 1024;

/// Forwards pushes to the application and keeps each one's answer for
/// WeChat's retries.
#[derive(Debug)]
pub(super) struct PushForwarder {
    url: url::Url,
    http: reqwest::Client,
    timeout: Duration,
    /// The application's answer per push (its de-duplication key), for a
    /// retry of WeChat's: `(content type, body)`.
    answered: crate::expiring::ExpiringMap<String, (String, String)>,
}

impl PushForwarder {
    /// A forwarder to `url`, answering `success` after `timeout`; `None`
    /// when the HTTP client can't be built (TLS set-up).
    pub(super) fn new(url: url::Url, timeout: Duration) -> Option<PushForwarder> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .build()
            .ok()?;
        Some(PushForwarder {
            url,
            http,
            timeout,
            answered: crate::expiring::ExpiringMap::new(10_000),
        })
    }
}

impl Gate {
    /// Forwards a verified push (`query` and `body` as WeChat sent them,
    /// `dedup` its retries' shared key) and answers with the application's
    /// answer: a passive reply, `success`, or an empty body. `success` when
    /// the application is slower than `push_forward_timeout_ms`, fails, or
    /// the push is a retry another instance forwarded.
    pub(super) async fn forward_push(
        &self,
        query: Option<&str>,
        body: &[u8],
        dedup: &str,
    ) -> Reply {
        let Some(forwarder) = &self.push_forwarder else {
            return api::push(PushAnswer::Success);
        };
        let now = now_unix();
        if let Some((kind, text)) = forwarder.answered.get(dedup, now) {
            return Reply::new(200, &kind, text);
        }
        let key = format!("forward|{dedup}");
        let ttl = Duration::from_secs(crate::qr::PUSH_DEDUP_SECS);
        match self.coordination.first_push(&key, ttl).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!("a forwarded push WeChat retried; already forwarded");
                crate::metrics::count_push_forward("repeat");
                return api::push(PushAnswer::Success);
            }
            Err(_) => return api::push(PushAnswer::StoreDown),
        }
        let mut url = forwarder.url.clone();
        url.set_query(query.filter(|q| !q.is_empty()));
        let request = forwarder
            .http
            .post(url)
            .header("Content-Type", "text/xml")
            .body(body.to_vec())
            .send();
        let read = async {
            let response = request.await.map_err(|e| e.without_url().to_string())?;
            let status = response.status();
            let kind = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("text/plain; charset=utf-8")
                .to_owned();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| e.without_url().to_string())?;
            if !status.is_success() {
                return Err(format!("HTTP status {status}"));
            }
            if bytes.len() > MAX_FORWARD_ANSWER_BYTES {
                return Err("an answer larger than 64 KiB".into());
            }
            let text = String::from_utf8(bytes.to_vec())
                .map_err(|_| "an answer that is not UTF-8".to_owned())?;
            Ok((kind, text))
        };
        match tokio::time::timeout(forwarder.timeout, read).await {
            Ok(Ok((kind, text))) => {
                crate::metrics::count_push_forward("answered");
                forwarder.answered.insert(
                    dedup.to_owned(),
                    (kind.clone(), text.clone()),
                    now + crate::qr::PUSH_DEDUP_SECS,
                );
                Reply::new(200, &kind, text)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the application's push handler failed: answered success for it");
                crate::metrics::count_push_forward("failed");
                api::push(PushAnswer::Success)
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = forwarder.timeout.as_millis() as u64,
                    "the application's push handler was too slow: answered success for it"
                );
                crate::metrics::count_push_forward("timeout");
                api::push(PushAnswer::Success)
            }
        }
    }
}
