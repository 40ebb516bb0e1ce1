//! The scan confirmed on the phone (`[gateway] scene_confirm`,
//! docs/security.md): the reply message with its link, the confirmation
//! page behind a silent `snsapi_base` login, and the phone's answer.

use url::form_urlencoded;

use super::*;
use crate::coordination::CoordinationError;
use crate::qr::SceneStatus;

/// What the confirmation link's sealed token is bound to (its associated
/// data): a token sealed for anything else does not open as one.
pub(super) const CONFIRM_TOKEN: &str = "wechat_scene_confirm";

/// The confirmation link's sealed token: the scene and the openid that
/// scanned it, until `exp` (unix seconds).
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct ConfirmPayload {
    sc: String,
    o: String,
    exp: u64,
}

impl Gate {
    /// `scene_confirm`: a scan moves its pending scene to "awaiting the
    /// phone" and is answered with the message linking to the confirmation
    /// page. WeChat's retry of the same scan (the scene awaits the same
    /// openid) gets the message again; anything else gets `None` (`success`).
    ///
    /// Errors: [`CoordinationError`] when the store is down.
    pub(super) async fn scan_to_confirm(
        &self,
        event: &push::PushEvent,
        now: u64,
    ) -> Result<Option<String>, CoordinationError> {
        let Some(scene) = event.scanned_scene() else {
            return Ok(None);
        };
        let awaiting = SceneStatus::Awaiting(event.from_user.clone());
        if self
            .scene_step(scene, &SceneStatus::Pending, awaiting.clone())
            .await?
        {
            tracing::info!(openid = %self.log_id(&event.from_user), "login scene scanned; waiting for the phone to confirm");
        } else if self.scene_status(scene).await? != awaiting {
            tracing::info!("a scan of an unknown or used scene; ignored");
            return Ok(None);
        }
        let token = self.sealer.seal(
            CONFIRM_TOKEN,
            &serde_json::to_string(&ConfirmPayload {
                sc: scene.to_owned(),
                o: event.from_user.clone(),
                exp: now + crate::qr::SCENE_LIFETIME_SECS,
            })
            .expect("serializes"),
        );
        let link = format!(
            "{}{}",
            self.config.gateway.origin(),
            self.confirm_link(&token)
        );
        Ok(Some(push::text_reply(
            &event.from_user,
            &event.to_user,
            now,
            &crate::pages::confirm_message(&link),
        )))
    }

    /// The confirmation page's path with its sealed `token`, e.g.
    /// `/_wechat/qr/confirm?t=…`: the link in the message, the return path
    /// of the phone's login and the forms' action.
    fn confirm_link(&self, token: &str) -> String {
        let token: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
        format!(
            "{}?t={token}",
            Route::QrConfirm.path(&self.config.gateway.prefix)
        )
    }

    /// `qr/confirm?t=…`: the phone's page for a scan (`GET`) and its answer
    /// (`POST …&answer=confirm|refuse`). Only the WeChat user who scanned
    /// may see or answer it: without a session the phone logs in first
    /// (silent `snsapi_base`, back to this page); a session of another
    /// openid gets `403`.
    pub(super) fn confirm_route(
        &self,
        req: &RequestParts<'_>,
        cookies: &GateCookies<'_>,
        session: Option<Session>,
        now: u64,
        lang: Lang,
    ) -> Decision {
        let raw_token = query_param(req.query, "t").unwrap_or_default();
        let payload = self
            .sealer
            .open(CONFIRM_TOKEN, &raw_token)
            .and_then(|json| serde_json::from_str::<ConfirmPayload>(&json).ok())
            .filter(|p| p.exp > now);
        let Some(payload) = payload else {
            return Decision::Reply(Notice::ConfirmLinkInvalid.reply(lang, &self.branding));
        };
        let answer = match (req.method, query_param(req.query, "answer").as_deref()) {
            ("POST", Some("confirm")) => Some(PhoneAnswer::Confirm),
            ("POST", Some("refuse")) => Some(PhoneAnswer::Refuse),
            ("POST", _) => {
                return Decision::Reply(
                    ApiError::new(400, ErrorName::InvalidRequest)
                        .with_description("answer must be \"confirm\" or \"refuse\"")
                        .reply(),
                )
            }
            _ => None,
        };
        match session {
            Some(s) if s.identity.openid == payload.o => Decision::Call(Call {
                kind: CallKind::QrConfirm {
                    scene: payload.sc,
                    openid: payload.o,
                    token: crate::secret::Secret::new(raw_token),
                    answer,
                },
                lang,
            }),
            Some(s) => {
                tracing::warn!(
                    openid = %self.log_id(&s.identity.openid),
                    "refused a scan confirmation by another WeChat user"
                );
                crate::metrics::count_refused("confirm_other_user");
                Decision::Reply(Notice::ConfirmNotYours.reply(lang, &self.branding))
            }
            // A POST needs the session already: the form is on the page.
            None if answer.is_some() => {
                Decision::Reply(Notice::ConfirmOpenFirst.reply(lang, &self.branding))
            }
            None => {
                let back = self.confirm_link(&raw_token);
                Decision::Reply(self.start_login(&back, Scope::Base, cookies, now))
            }
        }
    }

    /// The confirmation page (`answer` `None`) or the phone's answer, for
    /// a scene and the openid that scanned it (checked by the caller).
    pub(super) async fn qr_confirm(
        &self,
        scene: &str,
        openid: &str,
        token: &str,
        answer: Option<PhoneAnswer>,
        lang: Lang,
    ) -> Reply {
        let awaiting = SceneStatus::Awaiting(openid.to_owned());
        let stepped = match answer {
            None => Ok(false),
            Some(PhoneAnswer::Confirm) => {
                let scanned = SceneStatus::Scanned(openid.to_owned());
                self.scene_step(scene, &awaiting, scanned).await
            }
            Some(PhoneAnswer::Refuse) => {
                self.scene_step(scene, &awaiting, SceneStatus::Refused)
                    .await
            }
        };
        let status = match stepped {
            Ok(true) => {
                let outcome = if answer == Some(PhoneAnswer::Confirm) {
                    "confirmed"
                } else {
                    "refused"
                };
                tracing::info!(openid = %self.log_id(openid), outcome, "scan answered on the phone");
                return if answer == Some(PhoneAnswer::Confirm) {
                    Notice::Confirmed.reply(lang, &self.branding)
                } else {
                    Notice::Refused.reply(lang, &self.branding)
                };
            }
            Ok(false) => self.scene_status(scene).await,
            Err(e) => Err(e),
        };
        match status {
            Ok(s) if s == awaiting => {
                let requester = match self.scene_requester(scene).await {
                    Ok(r) => r,
                    Err(_) => return service_unavailable_json(),
                };
                let action = self.confirm_link(token);
                crate::pages::no_frames(crate::pages::scene_confirm_page(
                    lang,
                    self.config.gateway.public_url.host_str().unwrap_or(""),
                    requester.as_ref(),
                    &action,
                    &self.branding,
                ))
            }
            Ok(SceneStatus::Refused) => Notice::RefusedAlready.reply(lang, &self.branding),
            Ok(SceneStatus::Scanned(_)) => Notice::ConfirmedAlready.reply(lang, &self.branding),
            Ok(_) => Notice::ConfirmOver.reply(lang, &self.branding),
            Err(_) => service_unavailable_json(),
        }
    }
}
