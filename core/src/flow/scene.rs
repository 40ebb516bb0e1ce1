//! Desktop login by the Official Account's scene QR code (docs/protocol.md §3)
//! and its confirmation on the phone (docs/security.md, "The scan confirmed
//! on the phone"): the QR code for one browser (`qr/new`), its long poll
//! (`qr/status`), the pushes WeChat sends for a scan (`push_path`), and,
//! with `[gateway] scene_confirm`, the page where the phone confirms or
//! refuses (`qr/confirm`).
//!
//! A scene goes `pending ──scan──▶ scanned ──poll──▶ claimed` (one login),
//! or with `scene_confirm`
//! `pending ──scan──▶ awaiting ──confirm──▶ scanned ──poll──▶ claimed`,
//! `awaiting ──refuse──▶ refused` ([`SceneStatus`]). Each step is a
//! compare-and-set in memory, the state file or Redis, so a step happens
//! once whichever instance serves it.

use std::sync::Arc;
use std::time::Duration;

use url::form_urlencoded;

use super::{
    key_hash, new_sid, now_unix, query_param, service_unavailable_json, AnswerAs, Call, CallError,
    CallKind, Decision, Gate, GateCookies, RequestParts, Route,
};
use crate::api::{self, ApiError, ErrorName, PushAnswer, SceneAnswer};
use crate::authorize::Scope;
use crate::config::DesktopLogin;
use crate::coordination::CoordinationError;
use crate::errcode::ErrCode;
use crate::pages::{Lang, Reply};
use crate::push::{self, PushError};
use crate::qr::{SceneRequester, SceneStatus};
use crate::session::{Identity, Session};

/// Session ids of scene QR logins start with this: they have no tokens.
pub(super) const SCENE_SID_PREFIX: &str = "qr-";

/// The cookie binding a login QR scene to the browser that asked for it.
pub const SCENE_COOKIE: &str = "wechat_scene";
/// The longest a `qr/status` request waits for a change, in seconds.
pub const QR_LONG_POLL_SECS: u64 = 25;

/// The scene cookie's sealed content.
#[derive(serde::Serialize, serde::Deserialize)]
struct ScenePayload {
    sc: String,
    rd: String,
    exp: u64,
    /// The URL the scene's QR code encodes (WeChat's ticket URL).
    #[serde(default)]
    u: String,
}

impl Gate {
    /// The scene routes: `qr/new`, `qr/status`, `qr/confirm` (methods
    /// already checked).
    pub(super) fn scene_route(
        &self,
        route: Route,
        req: &RequestParts<'_>,
        cookies: &GateCookies<'_>,
        session: Option<Session>,
        now: u64,
        lang: Lang,
    ) -> Decision {
        let reply = if self.config.gateway.desktop_login != DesktopLogin::SceneQr
            || (route == Route::QrConfirm && !self.config.gateway.scene_confirm)
        {
            ApiError::new(404, ErrorName::InvalidRequest)
                .with_description("scene QR login is not enabled on this site")
                .reply()
        } else if route == Route::QrNew {
            if let Some(limited) = self.login_limited(req, AnswerAs::Json, lang) {
                return Decision::Reply(limited);
            }
            let return_to = self.return_param(req.query).unwrap_or_else(|| "/".into());
            let requester = self
                .config
                .gateway
                .scene_confirm
                .then(|| SceneRequester::new(req.client_addr, req.user_agent, now));
            let kind = CallKind::QrNew {
                return_to,
                requester,
            };
            return Decision::Call(Call { kind, lang });
        } else if route == Route::QrStatus || route == Route::QrImage {
            let asked = query_param(req.query, "scene").unwrap_or_default();
            let mine = cookies
                .scene
                .and_then(|v| self.sealer.open(SCENE_COOKIE, v))
                .and_then(|json| {
                    serde_json::from_str::<ScenePayload>(&json)
                        .ok()
                        .filter(|p| p.exp > now)
                });
            match mine {
                Some(p) if !asked.is_empty() && p.sc == asked && route == Route::QrImage => {
                    api::qr_image(&p.u)
                }
                Some(p) if !asked.is_empty() && p.sc == asked => {
                    let limit = self.long_poll_limit;
                    let wait = query_param(req.query, "wait")
                        .and_then(|w| w.parse::<u64>().ok())
                        .map_or(limit, |w| Duration::from_secs(w).min(limit));
                    let kind = CallKind::QrStatus {
                        scene: p.sc,
                        return_to: p.rd,
                        wait,
                    };
                    return Decision::Call(Call { kind, lang });
                }
                _ => ApiError::new(403, ErrorName::AccessDenied)
                    .with_description("this scene belongs to another browser")
                    .reply(),
            }
        } else {
            return self.confirm_route(req, cookies, session, now, lang);
        };
        Decision::Reply(reply)
    }

    /// `qr/new`: a new scene QR code for this browser, bound to it by the
    /// sealed scene cookie; with `scene_confirm`, who asked for it is kept
    /// beside it for the phone's confirmation page.
    pub(super) async fn qr_new(
        &self,
        return_to: String,
        requester: Option<SceneRequester>,
    ) -> Reply {
        let now = now_unix();
        let scene = new_sid();
        match self.basic_token.create_qr_scene(&scene, now).await {
            Ok(ticket) => {
                let expires_in = if ticket.expire_seconds == 0 {
                    crate::qr::SCENE_LIFETIME_SECS
                } else {
                    ticket.expire_seconds
                };
                let created = self
                    .coordination
                    .create_scene(&scene, now + expires_in, requester.as_ref())
                    .await;
                if created.is_err() {
                    return service_unavailable_json();
                }
                crate::metrics::QR_SCENES
                    .with_label_values(&["created"])
                    .inc();
                let ticket_q: String =
                    form_urlencoded::byte_serialize(ticket.ticket.as_bytes()).collect();
                let image = format!(
                    "{}/cgi-bin/showqrcode?ticket={ticket_q}",
                    self.config.wechat.mp_base.as_str().trim_end_matches('/')
                );
                let payload = ScenePayload {
                    sc: scene.clone(),
                    rd: return_to,
                    exp: now + expires_in,
                    u: ticket.url.clone(),
                };
                let sealed = self.sealer.seal(
                    SCENE_COOKIE,
                    &serde_json::to_string(&payload).expect("serializes"),
                );
                api::qr_created(&scene, &ticket.ticket, &image, expires_in).with_header(
                    "Set-Cookie",
                    self.set_cookie(SCENE_COOKIE, sealed, expires_in),
                )
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not create a scene QR code");
                call_failed_json(&e, "WeChat refused the QR code")
            }
        }
    }

    /// `jssdk-config`: `{appId, timestamp, nonceStr, signature}` for the
    /// page `url` (checked already), signed with the `jsapi_ticket`.
    pub(super) async fn jssdk_config(&self, url: &str) -> Reply {
        let now = now_unix();
        match self.basic_token.jsapi_ticket(now).await {
            Ok(ticket) => {
                let nonce_str = new_sid();
                let signature = crate::jssdk::signature(ticket.expose(), &nonce_str, now, url);
                api::jssdk_config(&self.config.wechat.appid, now, &nonce_str, &signature)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not get the jsapi_ticket");
                call_failed_json(&e, "WeChat refused the jsapi_ticket")
            }
        }
    }

    /// A scene's status.
    ///
    /// Errors: [`CoordinationError`] when the store is down.
    pub(super) async fn scene_status(&self, scene: &str) -> Result<SceneStatus, CoordinationError> {
        self.coordination.scene_status(scene).await
    }

    /// One step of a scene (`from` → `to`), made once across instances;
    /// `true` when this call made it.
    ///
    /// Errors: [`CoordinationError`] when the store is down.
    pub(super) async fn scene_step(
        &self,
        scene: &str,
        from: &SceneStatus,
        to: SceneStatus,
    ) -> Result<bool, CoordinationError> {
        self.coordination.scene_step(scene, from, &to).await
    }

    /// Who asked for a live scene (kept with `scene_confirm` only).
    ///
    /// Errors: [`CoordinationError`] when the store is down.
    pub(super) async fn scene_requester(
        &self,
        scene: &str,
    ) -> Result<Option<SceneRequester>, CoordinationError> {
        self.coordination.scene_requester(scene).await
    }

    /// `qr/status`: long-polls the scene; once scanned (and confirmed on
    /// the phone, with `scene_confirm`), logs this browser in (once).
    /// Answers `{"status": "pending" | "scanned" | "confirmed" | "refused"
    /// | "expired"}`; `scanned` is a scan waiting for the phone's confirmation.
    pub(super) async fn qr_status(&self, scene: &str, return_to: &str, wait: Duration) -> Reply {
        let wait = if self.stopping.is_set() {
            Duration::ZERO
        } else {
            wait
        };
        let watched = tokio::select! {
            status = self.coordination.watch_scene(scene, wait) => status,
            // Stopping: answer now (and claim a scan that just landed).
            () = self.stopping.wait() => self.coordination.watch_scene(scene, Duration::ZERO).await,
        };
        let Ok(status) = watched else {
            return service_unavailable_json();
        };
        let now = now_unix();
        let counted = match &status {
            SceneStatus::Scanned(_) => Some("confirmed"),
            SceneStatus::Expired => Some("expired"),
            SceneStatus::Refused => Some("refused"),
            SceneStatus::Pending | SceneStatus::Awaiting(_) => None,
        };
        if let Some(label) = counted {
            crate::metrics::QR_SCENES.with_label_values(&[label]).inc();
        }
        match status {
            SceneStatus::Pending => api::scene(&SceneAnswer::Pending),
            SceneStatus::Awaiting(_) => api::scene(&SceneAnswer::Scanned),
            SceneStatus::Scanned(openid) => {
                // A scan gives the openid only: cgi-bin/user/info gives the
                // unionid (and whether the scanner follows the account).
                let unionid = match self.basic_token.follower(&openid, now).await {
                    Ok(follower) => {
                        self.remember_follower(&openid, follower.subscribed, now)
                            .await;
                        follower.unionid
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "no unionid for a scene QR login: cgi-bin/user/info failed");
                        None
                    }
                };
                if self.config.gateway.require_unionid && unionid.is_none() {
                    tracing::warn!(openid = %self.log_id(&openid), "login refused: no unionid (require_unionid)");
                    return self
                        .login_failure(
                            super::failure::LoginFailure::NoUnionid,
                            return_to,
                            AnswerAs::Json,
                            Lang::En,
                        )
                        .with_header("Set-Cookie", self.remove_cookie(SCENE_COOKIE));
                }
                tracing::info!(outcome = "completed", site = self.config.site_label(), openid = %self.log_id(&openid), "login completed by scene QR scan");
                let identity = Identity {
                    openid,
                    unionid,
                    scope: Scope::Base.as_str().to_owned(),
                    ..Default::default()
                };
                let session = Session::starting_at(
                    Arc::new(identity),
                    format!("{SCENE_SID_PREFIX}{}", new_sid()),
                    now,
                    self.config.gateway.session_lifetime,
                );
                api::scene(&SceneAnswer::Confirmed {
                    redirect: return_to,
                })
                .with_header("Set-Cookie", self.session_cookie(&session, now))
                .with_header("Set-Cookie", self.remove_cookie(SCENE_COOKIE))
            }
            SceneStatus::Refused => api::scene(&SceneAnswer::Refused)
                .with_header("Set-Cookie", self.remove_cookie(SCENE_COOKIE)),
            SceneStatus::Expired => api::scene(&SceneAnswer::Expired)
                .with_header("Set-Cookie", self.remove_cookie(SCENE_COOKIE)),
        }
    }

    /// The server URL check (`GET push_path?signature&timestamp&nonce&echostr`):
    /// `echostr` back when the signature holds, else 401.
    pub(super) fn push_check(&self, query: Option<&str>, now: u64) -> Reply {
        let Some(token) = &self.config.wechat.push_token else {
            return api::push(PushAnswer::Off);
        };
        let p = |name| query_param(query, name).unwrap_or_default();
        match push::verify(token, &p("timestamp"), &p("nonce"), &p("signature"), now) {
            Ok(()) => api::push(PushAnswer::Echo(&p("echostr"))),
            Err(e) => {
                tracing::info!(reason = %e, "refused a server URL check");
                api::push(PushAnswer::BadSignature)
            }
        }
    }

    /// Handles a pushed event (`POST push_path?signature&timestamp&nonce[&encrypt_type=aes&msg_signature]`
    /// with its XML `body`): verifies it, decrypts safe mode, and records a
    /// scan of a login scene. `200 success` for every valid push (WeChat
    /// stops retrying); with `scene_confirm`, a scan is answered with a
    /// text message (encrypted in safe mode) linking to the confirmation
    /// page. `401` for a forged, stale or replayed push, `400` for a
    /// malformed one; neither changes anything. With a shared store the
    /// scan and the de-duplication go through it (`503` when it is down:
    /// WeChat retries).
    pub async fn handle_push(&self, query: Option<&str>, body: &[u8]) -> Reply {
        let now = now_unix();
        let Some(token) = &self.config.wechat.push_token else {
            return api::push(PushAnswer::Off);
        };
        let p = |name| query_param(query, name).unwrap_or_default();
        let (timestamp, nonce) = (p("timestamp"), p("nonce"));
        let safe_mode = self.config.wechat.encoding_aes_key.is_some();
        if safe_mode && p("encrypt_type") != "aes" {
            // The plain signature covers no body: with a key, only safe mode.
            tracing::info!("refused a plaintext push: safe mode is configured");
            crate::metrics::count_refused("push_plaintext");
            return api::push(PushAnswer::PlaintextRefused);
        }
        let xml = if p("encrypt_type") == "aes" {
            let Some(key) = &self.config.wechat.encoding_aes_key else {
                return api::push(PushAnswer::SafeModeOff);
            };
            push::open_safe_mode(
                body,
                token,
                key,
                &self.config.wechat.appid,
                &timestamp,
                &nonce,
                &p("msg_signature"),
                now,
            )
        } else {
            push::verify(token, &timestamp, &nonce, &p("signature"), now).map(|()| body.to_vec())
        };
        let xml = match xml {
            Ok(xml) => match self.claim_push_nonce(&timestamp, &nonce, body).await {
                Ok(true) => Ok(xml),
                Ok(false) => {
                    tracing::warn!("refused a push that reused a signed timestamp and nonce");
                    crate::metrics::count_refused("push_replay");
                    return api::push(PushAnswer::Refused);
                }
                Err(_) => return api::push(PushAnswer::StoreDown),
            },
            Err(e) => Err(e),
        };
        let event = xml.and_then(|x| push::parse_event(&x));
        match event {
            Ok(event) => {
                let forwarding = self.push_forwarder.is_some();
                let own = match event.scanned_scene() {
                    Some(scene) if forwarding => !matches!(
                        self.coordination.scene_status(scene).await,
                        Ok(SceneStatus::Expired)
                    ),
                    Some(_) => true,
                    None => false,
                };
                if forwarding && !own {
                    // Not the gate's: the application's push handler answers.
                    return self.forward_push(query, body, &event.dedup_key()).await;
                }
                let recorded = if self.config.gateway.scene_confirm {
                    self.scan_to_confirm(&event, now).await
                } else {
                    self.record_scan(&event).await.map(|()| None)
                };
                match recorded {
                    // The gate's own scan, forwarded too: the application's
                    // answer (its welcome reply) goes back.
                    Ok(None) if forwarding && self.config.wechat.push_forward_own => {
                        self.forward_push(query, body, &event.dedup_key()).await
                    }
                    Ok(None) => api::push(PushAnswer::Success),
                    Ok(Some(message)) => self.passive_reply(&message, now),
                    Err(_) => api::push(PushAnswer::StoreDown),
                }
            }
            Err(e @ (PushError::Signature | PushError::Timestamp | PushError::Decrypt(_))) => {
                tracing::info!(reason = %e, "refused a push");
                api::push(PushAnswer::Refused)
            }
            Err(e) => {
                tracing::info!(reason = %e, "refused a malformed push");
                api::push(PushAnswer::Malformed)
            }
        }
    }

    /// A reply message as WeChat takes it: the XML itself, or sealed for
    /// safe mode when the account has an EncodingAESKey.
    fn passive_reply(&self, message: &str, now: u64) -> Reply {
        let wechat = &self.config.wechat;
        let (Some(key), Some(token)) = (&wechat.encoding_aes_key, &wechat.push_token) else {
            return api::push(PushAnswer::Message(message.to_owned()));
        };
        match push::seal_safe_mode(message, token, key, &wechat.appid, now, &new_sid()) {
            Ok(sealed) => api::push(PushAnswer::Message(sealed)),
            Err(e) => {
                // The key was checked at start-up; answer as a plain push would.
                tracing::warn!(reason = %e, "could not seal a reply message");
                api::push(PushAnswer::Success)
            }
        }
    }

    /// Claims a signed push's (timestamp, nonce) for its body, for the
    /// timestamp window on either side: `false` when the pair already came
    /// with another body (a captured URL reused with a forged body). The
    /// same body again is WeChat's retry, answered as the first was.
    /// Across instances with a shared store.
    ///
    /// Errors: [`CoordinationError`] when the store is down.
    async fn claim_push_nonce(
        &self,
        timestamp: &str,
        nonce: &str,
        body: &[u8],
    ) -> Result<bool, CoordinationError> {
        let pair = format!("{timestamp} {nonce}");
        let window = Duration::from_secs(2 * push::TIMESTAMP_WINDOW_SECS);
        self.coordination
            .bind_push_nonce(&pair, &key_hash(body), window)
            .await
    }

    /// A scan marks its scene scanned for whichever instance the browser
    /// polls, once across instances: the step from pending is its own
    /// de-duplication, so WeChat's retry of the push finds the scene
    /// scanned (or claimed) and changes nothing.
    ///
    /// Errors: [`CoordinationError`] when the store is down (nothing is
    /// kept, so WeChat's retry is handled).
    async fn record_scan(&self, event: &push::PushEvent) -> Result<(), CoordinationError> {
        let Some(scene) = event.scanned_scene() else {
            return Ok(());
        };
        let scanned = SceneStatus::Scanned(event.from_user.clone());
        if self
            .coordination
            .scene_step(scene, &SceneStatus::Pending, &scanned)
            .await?
        {
            tracing::info!(openid = %self.log_id(&event.from_user), "login scene scanned");
        } else {
            tracing::info!(
                "a scan of an unknown or used scene (or WeChat's retry of one); ignored"
            );
        }
        Ok(())
    }
}

/// The JSON answer to a `cgi-bin` call that failed: `503` when WeChat or
/// the store is out of reach, else `502` with `refused` and WeChat's
/// errcode; the errcode is on the reply either way (for the access log).
fn call_failed_json(e: &CallError, refused: &'static str) -> Reply {
    let reply = match e {
        CallError::Coordination(_) => service_unavailable_json(),
        CallError::WeChat(sns) if sns.is_unavailable() => service_unavailable_json(),
        _ => ApiError::new(502, ErrorName::ServerError)
            .with_description(refused)
            .with_errcode(e.errcode().map(ErrCode::code))
            .reply(),
    };
    reply.with_errcode(e.errcode().map(ErrCode::code))
}
