//! A session's web-authorization tokens: the profile refresh and check,
//! token refresh once per session, and ending a session WeChat no longer
//! honours (docs/protocol.md §1 steps 3 to 5).

use super::*;

pub(super) fn stored_tokens(token: &TokenResponse, now: u64) -> StoredTokens {
    StoredTokens {
        access_token: token.access_token.clone(),
        access_expires_at: now + token.expires_in,
        refresh_token: token.refresh_token.clone(),
        refresh_expires_at: now + REFRESH_TOKEN_LIFETIME_SECS,
    }
}

impl Gate {
    /// `userinfo?refresh=1` (profile from `sns/userinfo`) and `userinfo?check=1`
    /// (`sns/auth`), with the access token refreshed first when near expiry.
    pub(super) async fn complete_profile(&self, mut session: Session, call: ProfileCall) -> Reply {
        let check = call == ProfileCall::Check;
        if session.sid.starts_with(SCENE_SID_PREFIX) {
            // A scene QR login has no web-authorization tokens: nothing to
            // refresh or check with WeChat; the session stays as it is.
            return api::identity(&session.identity, check.then_some(false));
        }
        let now = now_unix();
        let tokens = match self.usable_tokens(&session, now).await {
            Ok(t) => t,
            Err(reply) => return reply,
        };
        if check {
            return match self
                .sns
                .auth(&tokens.access_token, &session.identity.openid)
                .await
            {
                Ok(()) => api::identity(&session.identity, Some(true)),
                Err(e) => self.token_failure(&session, &e.into()).await,
            };
        }
        match self
            .sns
            .userinfo(&tokens.access_token, &session.identity.openid)
            .await
        {
            Ok(info) => {
                let mut identity = Identity::clone(&session.identity);
                identity.nickname = Some(info.nickname).filter(|n| !n.is_empty());
                identity.headimgurl = info.headimgurl;
                identity.unionid = identity.unionid.take().or(info.unionid);
                session.identity = Arc::new(identity.bounded());
                session.seen_at = now;
                api::identity(&session.identity, None)
                    .with_header("Set-Cookie", self.session_cookie(&session, now))
            }
            Err(e) => self.token_failure(&session, &e.into()).await,
        }
    }

    /// The session's tokens, refreshed (once per session at a time) when the
    /// access token is within [`REFRESH_MARGIN_SECS`] of expiry. A missing,
    /// invalid or expired refresh token ends the session.
    pub(super) async fn usable_tokens(
        &self,
        session: &Session,
        now: u64,
    ) -> Result<StoredTokens, Reply> {
        let stored = match self.store.get(&session.sid, now).await {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Err(self
                    .end_session(session, "no tokens for this session")
                    .await)
            }
            Err(e) => {
                tracing::warn!(error = %e, "token store unavailable");
                return Err(service_unavailable_json());
            }
        };
        if stored.access_expires_at > now + REFRESH_MARGIN_SECS {
            return Ok(stored);
        }
        let (refreshed, _) = self
            .refreshes
            .run(&session.sid, || {
                self.refresh_once(&session.sid, &stored, now)
            })
            .await;
        match refreshed {
            Ok(t) => Ok(t),
            Err(e) => Err(self.token_failure(session, &e).await),
        }
    }

    pub(super) async fn refresh(
        &self,
        sid: &str,
        stored: &StoredTokens,
        now: u64,
    ) -> Result<StoredTokens, CallError> {
        let answer = self.sns.refresh(&stored.refresh_token).await?;
        let mut fresh = stored_tokens(&answer, now);
        // WeChat's refresh keeps the refresh token's 30 days from the login.
        fresh.refresh_expires_at = stored.refresh_expires_at;
        if let Err(e) = self.store.put(sid, fresh.clone()).await {
            tracing::warn!(error = %e, "could not store refreshed tokens");
        }
        Ok(fresh)
    }

    /// A refresh once across instances, so two never send the same refresh
    /// token: the tokens another instance refreshed meanwhile, or this
    /// one's refresh.
    pub(super) async fn refresh_once(
        &self,
        sid: &str,
        stored: &StoredTokens,
        now: u64,
    ) -> Result<StoredTokens, CallError> {
        let attempts = self.config.wechat.retries + 1;
        let hold = self.config.wechat.timeout * attempts + Duration::from_secs(1);
        match self
            .coordination
            .begin_refresh(sid, &stored.access_token, hold)
            .await?
        {
            Turn::Done(renewed) => Ok(renewed),
            Turn::Mine => {
                let result = self.refresh(sid, stored, now).await;
                self.coordination.finish_refresh(sid).await;
                result
            }
        }
    }

    /// Maps a failed token call: WeChat no longer honours the tokens → the
    /// session ends (cookie and tokens removed, 401 with a login URL); WeChat
    /// unreachable or failing → 503/502 JSON, session kept.
    pub(super) async fn token_failure(&self, session: &Session, e: &CallError) -> Reply {
        let reply = self.token_failure_reply(session, e).await;
        reply.with_errcode(e.errcode().map(ErrCode::code))
    }

    pub(super) async fn token_failure_reply(&self, session: &Session, e: &CallError) -> Reply {
        match e.errcode() {
            Some(
                ErrCode::InvalidRefreshToken
                | ErrCode::RefreshTokenExpired
                | ErrCode::InvalidCredential
                | ErrCode::InvalidAccessToken
                | ErrCode::AccessTokenExpired
                | ErrCode::InvalidOpenid
                | ErrCode::PasswordChanged
                | ErrCode::UserNotAuthorized,
            ) => self.end_session(session, &e.to_string()).await,
            Some(ErrCode::ApiUnauthorized) => ApiError::new(403, ErrorName::InsufficientScope)
                .with_description("the session's scope lacks snsapi_userinfo")
                .with_login_url(self.login_url("/", Scope::Userinfo, LinkForm::Absolute))
                .reply(),
            _ => {
                tracing::warn!(error = %e, "WeChat token call failed");
                match e {
                    CallError::Coordination(_) => service_unavailable_json(),
                    CallError::WeChat(sns) if sns.is_unavailable() => service_unavailable_json(),
                    _ => ApiError::new(502, ErrorName::ServerError)
                        .with_description("WeChat refused the call")
                        .with_errcode(e.errcode().map(ErrCode::code))
                        .reply(),
                }
            }
        }
    }

    pub(super) async fn end_session(&self, session: &Session, why: &str) -> Reply {
        tracing::info!(openid = %self.log_id(&session.identity.openid), reason = why, "session ended; a new login is needed");
        if let Err(e) = self.store.remove(&session.sid).await {
            tracing::warn!(error = %e, "could not delete the session's tokens");
        }
        login_required_json(&self.login_url("/", self.config.wechat.scope, LinkForm::Absolute))
            .with_header(
                "Set-Cookie",
                self.remove_cookie(&self.config.gateway.session_cookie_name),
            )
    }
}
