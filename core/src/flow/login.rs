//! The login: a callback's (or the SPA hand-off's) code checked against its
//! state, exchanged once per code (in this process or across instances), and
//! its outcome turned into a session or a clear page (docs/protocol.md §1).

use super::*;

#[derive(Debug)]
pub(super) struct PendingLogin {
    pub(super) code: AuthorizationCode,
    pub(super) return_to: String,
    pub(super) state_cookie: String,
    /// Exchange with the Open Platform website app (a qrconnect login).
    pub(super) app: LoginApp,
    /// Answer in JSON (`POST <prefix>/exchange`, a front end's own
    /// redirect_uri) instead of redirecting.
    pub(super) answer: AnswerAs,
}

/// What a code exchange produced; shared by every duplicate of its callback.
#[derive(Debug)]
pub(super) enum LoginOutcome {
    /// A user, packed: kept for the code's 300 s, once per login.
    User(PackedLogin),
    /// A snapshot-page virtual user, refused by configuration.
    SnapshotRefused,
    /// A WeCom user outside the company, refused by configuration.
    NotMember,
}

/// A completed login: the identity, the session id its tokens are under,
/// when, and where the user goes back to.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct LoginRecord {
    pub(super) identity: Identity,
    pub(super) sid: String,
    pub(super) issued_at: u64,
    pub(super) return_to: String,
}

/// A [`LoginRecord`] as one JSON allocation instead of eight strings: the
/// duplicate-callback cache holds one per login for 300 s. `Debug` shows
/// nothing of it (it holds the session id).
pub(super) struct PackedLogin(Box<str>);

impl std::fmt::Debug for PackedLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PackedLogin(..)")
    }
}

impl PackedLogin {
    pub(super) fn pack(record: &LoginRecord) -> PackedLogin {
        PackedLogin(
            serde_json::to_string(record)
                .expect("a login record serializes")
                .into_boxed_str(),
        )
    }

    pub(super) fn unpack(&self) -> LoginRecord {
        serde_json::from_str(&self.0).expect("a record this process packed")
    }
}

pub(super) type LoginResult = Arc<Result<LoginOutcome, CallError>>;

/// A code's outcome as the instances keep it: `u` + the packed login, `s`
/// (a refused snapshot user) or `e` + WeChat's errcode. Transport failures
/// are not shared: another instance may still succeed.
pub(super) fn encode_outcome(result: &Result<LoginOutcome, CallError>) -> Option<String> {
    match result {
        Ok(LoginOutcome::User(packed)) => Some(format!("u{}", packed.0)),
        Ok(LoginOutcome::SnapshotRefused) => Some("s".into()),
        Ok(LoginOutcome::NotMember) => Some("n".into()),
        Err(CallError::WeChat(SnsError::WeChat { code, .. })) => Some(format!("e{}", code.code())),
        Err(_) => None,
    }
}

pub(super) fn decode_outcome(encoded: &str) -> Result<LoginOutcome, CallError> {
    let unreadable = || CallError::Coordination(CoordinationError::Unreadable("login outcome"));
    match encoded.split_at_checked(1).ok_or_else(unreadable)? {
        ("u", packed) => {
            serde_json::from_str::<LoginRecord>(packed).map_err(|_| unreadable())?;
            Ok(LoginOutcome::User(PackedLogin(packed.into())))
        }
        ("s", _) => Ok(LoginOutcome::SnapshotRefused),
        ("n", _) => Ok(LoginOutcome::NotMember),
        ("e", code) => Err(CallError::WeChat(SnsError::WeChat {
            code: ErrCode::from_code(code.parse().map_err(|_| unreadable())?),
            errmsg: "answered to another instance".into(),
        })),
        _ => Err(unreadable()),
    }
}

/// One log line per exchange: the outcome, who logged in (the openid, or
/// its hash with `[gateway] log_openid = "hash"`), WeChat's errcode and the
/// latency; never the code or a token. A store outage is logged once by the
/// store, so its failed logins log at debug.
pub(super) fn log_login(
    result: &Result<LoginOutcome, CallError>,
    elapsed: Duration,
    hash_openid: bool,
    site: &str,
) {
    let elapsed_ms = elapsed.as_millis() as u64;
    match result {
        Ok(LoginOutcome::User(_)) => crate::metrics::LOGINS_COMPLETED
            .with_label_values(&[site])
            .inc(),
        Ok(LoginOutcome::SnapshotRefused) => crate::metrics::LOGINS_FAILED
            .with_label_values(&[site, "snapshot"])
            .inc(),
        Ok(LoginOutcome::NotMember) => crate::metrics::LOGINS_FAILED
            .with_label_values(&[site, "not_member"])
            .inc(),
        Err(e) => {
            let errcode = match e {
                CallError::WeChat(SnsError::WeChat { code, .. }) => code.code().to_string(),
                CallError::WeChat(SnsError::Transport(_)) => "transport".into(),
                CallError::WeChat(SnsError::Unavailable(_)) => "http_5xx".into(),
                CallError::WeChat(SnsError::Malformed(_)) => "malformed".into(),
                CallError::Coordination(_) => "store".into(),
            };
            crate::metrics::LOGINS_FAILED
                .with_label_values(&[site, errcode.as_str()])
                .inc();
        }
    }
    match result {
        Ok(LoginOutcome::User(packed)) => {
            let identity = packed.unpack().identity;
            tracing::info!(
                outcome = "completed",
                site,
                openid = %log_id(&identity.openid, hash_openid),
                scope = %identity.scope,
                elapsed_ms,
                "login completed"
            )
        }
        Ok(LoginOutcome::SnapshotRefused) => {
            tracing::info!(
                outcome = "refused",
                site,
                elapsed_ms,
                "login refused: snapshot user"
            )
        }
        Ok(LoginOutcome::NotMember) => {
            tracing::info!(
                outcome = "refused",
                site,
                elapsed_ms,
                "login refused: not a member of the WeCom company (allow_non_members = false)"
            )
        }
        Err(e @ CallError::Coordination(_)) => {
            tracing::debug!(outcome = "failed", site, error = %e, elapsed_ms, "login failed")
        }
        Err(e) => {
            let errmsg = match e {
                CallError::WeChat(SnsError::WeChat { errmsg, .. }) => errmsg.as_str(),
                _ => "",
            };
            tracing::warn!(outcome = "failed", site, errcode = e.errcode().map(ErrCode::code), errmsg, error = %e, elapsed_ms, "login failed");
            let fix = match e.errcode() {
                Some(ErrCode::InvalidAppid) => Some("check [wechat] appid"),
                Some(ErrCode::InvalidAppSecret) => {
                    Some("check [wechat] secret (env WECHAT_APP_SECRET)")
                }
                Some(ErrCode::IpNotWhitelisted) => Some(
                    "add this server's IP address to the account's IP whitelist in the WeChat console",
                ),
                Some(ErrCode::InvalidGrantType) => Some("check [wechat] api_base"),
                Some(ErrCode::InvalidCredential) => {
                    Some("check the secret ([wechat] secret, or [wecom] secret / env WECOM_SECRET)")
                }
                Some(ErrCode::WecomInvalidAgentid) => Some("check [wecom] agentid"),
                Some(ErrCode::WecomIpNotAllowed) => Some(
                    "add this server's IP address to the WeCom app's trusted IPs (企业可信IP)",
                ),
                _ => None,
            };
            if let Some(fix) = fix {
                tracing::error!(
                    errcode = e.errcode().map(ErrCode::code),
                    "WeChat refused this gateway's credentials: {fix}"
                );
            }
        }
    }
}

/// `openid`, or with `hash` the first 16 hex digits of its SHA-1 (the same
/// user gives the same value in every line, the openid itself appears in none).
pub(super) fn log_id(openid: &str, hash: bool) -> std::borrow::Cow<'_, str> {
    if hash {
        std::borrow::Cow::Owned(format!("sha1:{}", &key_hash(openid)[..16]))
    } else {
        std::borrow::Cow::Borrowed(openid)
    }
}

/// Why a callback (or a hand-off) is not a login to complete.
#[derive(Debug)]
pub(super) enum CallbackRefusal {
    /// A repeat of a callback that already logged this browser in: go on
    /// to `to`, change nothing.
    AlreadyIn { to: String, identity: Identity },
    /// Its state or code can't be used; `why` for the developer.
    Unusable { why: CallbackProblem },
    /// The user declined: no code. The state cookie goes; `return_to` is
    /// where a new login would lead.
    Declined {
        return_to: String,
        state_cookie: String,
    },
}

impl Gate {
    /// Validates a callback's query against its state cookie.
    ///
    /// Errors: [`CallbackRefusal`] when it is not a login to complete.
    pub(super) fn check_callback(
        &self,
        query: Option<&str>,
        cookies: &GateCookies<'_>,
        session: Option<Session>,
        now: u64,
        answer: AnswerAs,
    ) -> Result<PendingLogin, CallbackRefusal> {
        let unusable = |why| CallbackRefusal::Unusable { why };
        let mut code = None;
        let mut state = None;
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match key.as_ref() {
                "code" => &mut code,
                "state" => &mut state,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(unusable(CallbackProblem::DuplicateParameter));
            }
        }
        let state = state
            .filter(|s| is_valid_state(s))
            .ok_or_else(|| unusable(CallbackProblem::MissingState))?;
        let name = state_cookie_name(&state);
        let opened = cookies
            .states
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| open_state(&self.sealer, &state, v, now));
        let app = opened.as_ref().map_or(LoginApp::OfficialAccount, |o| o.app);
        let return_to = opened.map(|o| o.return_to);
        let Some(return_to) = return_to else {
            // A repeat of a callback that already logged this browser in
            // (refresh, back button, WeChat's double hit): its state cookie is
            // gone but its session is here. Send it on; change nothing.
            if let Some(session) = session {
                let to = code
                    .and_then(|c| self.logins.peek(&c))
                    .and_then(|r| match r.as_ref() {
                        Ok(LoginOutcome::User(packed)) => Some(packed.unpack())
                            .filter(|r| r.identity.openid == session.identity.openid)
                            .map(|r| r.return_to),
                        _ => None,
                    })
                    .unwrap_or_else(|| "/".to_owned());
                return Err(CallbackRefusal::AlreadyIn {
                    to,
                    identity: Arc::unwrap_or_clone(session.identity),
                });
            }
            return Err(unusable(CallbackProblem::StateMismatch));
        };
        let Some(code) = code else {
            tracing::info!("login declined by the user");
            return Err(CallbackRefusal::Declined {
                return_to,
                state_cookie: name,
            });
        };
        if code.is_empty()
            || code.len() > MAX_CODE_LEN
            || !code.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(unusable(CallbackProblem::MalformedCode));
        }
        Ok(PendingLogin {
            code: AuthorizationCode::new(code.into_owned()),
            return_to,
            state_cookie: name,
            app,
            answer,
        })
    }

    pub(super) fn log_login(&self, result: &Result<LoginOutcome, CallError>, elapsed: Duration) {
        log_login(
            result,
            elapsed,
            self.config.gateway.log_openid_hashed,
            self.config.site_label(),
        );
    }

    /// An openid as log lines show it: itself, or with `[gateway]
    /// log_openid = "hash"` `sha1:` and 16 hex digits of its SHA-1.
    pub fn log_id<'a>(&self, openid: &'a str) -> std::borrow::Cow<'a, str> {
        log_id(openid, self.config.gateway.log_openid_hashed)
    }

    /// The front end's code hand-off (`POST <prefix>/exchange`, docs/protocol.md
    /// seed 003): a page that is itself the redirect_uri (from
    /// `GET <prefix>/authorize-url?rd=`) posts `{"code": …, "state": …}`
    /// (JSON, at most 4 KiB). The state is checked against this browser's
    /// state cookie and the code exchanged once (the same single-flight as
    /// the callback); the answer is a [`Decision::Call`] whose reply is the
    /// identity JSON with the session cookie, or `{"error", "errcode",
    /// "login_url"}`. A bad body, state or code is a 4xx JSON answer.
    pub fn decide_exchange(&self, req: &RequestParts<'_>, body: &[u8]) -> Decision {
        #[derive(serde::Deserialize)]
        struct Handoff {
            code: String,
            state: String,
        }
        let now = now_unix();
        let lang = Lang::choose(self.config.gateway.language, req.accept_language);
        let cookies = GateCookies::parse(req.cookie, &self.config.gateway.session_cookie_name);
        let session = self.live_session(&cookies, now);
        let login_url = self.login_url("/", self.config.wechat.scope, LinkForm::Absolute);
        let handoff = (body.len() <= MAX_EXCHANGE_BODY_BYTES)
            .then(|| serde_json::from_slice::<Handoff>(body).ok())
            .flatten();
        let Some(handoff) = handoff else {
            return Decision::Reply(
                ApiError::new(400, ErrorName::InvalidRequest)
                    .with_description("POST {\"code\": …, \"state\": …} as JSON")
                    .with_login_url(login_url)
                    .reply(),
            );
        };
        if let Some(limited) = self.login_limited(req, AnswerAs::Json, lang) {
            return Decision::Reply(limited);
        }
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("code", &handoff.code)
            .append_pair("state", &handoff.state)
            .finish();
        match self.check_callback(
            Some(&query),
            &cookies,
            session.map(Arc::unwrap_or_clone),
            now,
            AnswerAs::Json,
        ) {
            Ok(pending) => Decision::Call(Call {
                kind: CallKind::Login(pending),
                lang,
            }),
            // A repeat of a hand-off that already logged this browser in.
            Err(CallbackRefusal::AlreadyIn { identity, .. }) => {
                Decision::Reply(api::identity(&identity, None))
            }
            Err(CallbackRefusal::Unusable { why }) => {
                tracing::info!(reason = why.en(), "refused a login hand-off");
                Decision::Reply(
                    ApiError::new(400, ErrorName::InvalidRequest)
                        .with_description(why.en())
                        .with_login_url(login_url)
                        .reply(),
                )
            }
            Err(CallbackRefusal::Declined { state_cookie, .. }) => Decision::Reply(
                ApiError::new(403, ErrorName::AccessDenied)
                    .with_description("the user declined the authorization")
                    .with_login_url(login_url)
                    .reply()
                    .with_header("Set-Cookie", self.remove_cookie(&state_cookie)),
            ),
        }
    }

    /// The answer to a callback that is not a login to complete.
    pub(super) fn callback_refused(&self, refusal: CallbackRefusal, lang: Lang) -> Reply {
        match refusal {
            CallbackRefusal::AlreadyIn { to, .. } => Reply::redirect(to),
            CallbackRefusal::Unusable { why } => self.bad_callback(why, lang),
            CallbackRefusal::Declined {
                return_to,
                state_cookie,
            } => Notice::Declined {
                retry: &self.login_url(&return_to, self.config.wechat.scope, LinkForm::Path),
            }
            .reply(lang, &self.branding)
            .with_header("Set-Cookie", self.remove_cookie(&state_cookie)),
        }
    }

    pub(super) async fn complete_login(&self, pending: PendingLogin, lang: Lang) -> Reply {
        let started = Instant::now();
        let claim = self
            .coordination
            .claim_login(&pending.state_cookie, pending.code.expose())
            .await;
        match claim {
            Ok(LoginClaim::Claimed) => {}
            Ok(LoginClaim::StateUsed) => {
                return self
                    .login_failure(
                        LoginFailure::StateUsed,
                        &pending.return_to,
                        pending.answer,
                        lang,
                    )
                    .with_header("Set-Cookie", self.remove_cookie(&pending.state_cookie))
            }
            Ok(LoginClaim::CodeBound) => {
                return self
                    .login_failure(
                        LoginFailure::CodeOtherBrowser,
                        &pending.return_to,
                        pending.answer,
                        lang,
                    )
                    .with_header("Set-Cookie", self.remove_cookie(&pending.state_cookie));
            }
            Err(e) => {
                let failed = Err(e.into());
                self.log_login(&failed, started.elapsed());
                return self.login_reply(&pending, &failed, now_unix(), lang);
            }
        }
        let (result, ran) = self
            .logins
            .run(pending.code.expose(), || async {
                let result = self.exchange_once(&pending, started).await;
                Arc::new(result)
            })
            .await;
        if !ran {
            crate::metrics::EXCHANGE_JOINS.inc();
            tracing::debug!("duplicate callback answered from its code's first exchange");
        }
        self.login_reply(&pending, &result, now_unix(), lang)
    }

    /// The code's exchange, once across instances: the outcome another
    /// instance kept (for the code's 300 s), or this one's exchange, kept
    /// for the others. Logs the exchange.
    async fn exchange_once(
        &self,
        pending: &PendingLogin,
        started: Instant,
    ) -> Result<LoginOutcome, CallError> {
        let code = pending.code.expose();
        let attempts = self.config.wechat.retries + 1;
        let hold = self.config.wechat.timeout * attempts + Duration::from_secs(1);
        let turn = self.coordination.begin_exchange(code, hold).await;
        let result = match turn {
            Ok(Turn::Done(kept)) => {
                tracing::debug!("code exchanged by another instance: its outcome is shared");
                return decode_outcome(&kept);
            }
            Ok(Turn::Mine) => {
                let result = self.exchange(pending).await;
                let kept = encode_outcome(&result);
                self.coordination
                    .finish_exchange(code, kept.as_deref())
                    .await;
                result
            }
            Err(e) => Err(e.into()),
        };
        self.log_login(&result, started.elapsed());
        result
    }

    /// Exchanges the code (and fetches the profile when `snsapi_userinfo` was
    /// granted), then stores the tokens under a new session id.
    pub(super) async fn exchange(&self, pending: &PendingLogin) -> Result<LoginOutcome, CallError> {
        if matches!(pending.app, LoginApp::WeCom | LoginApp::WecomWeb) {
            return self.exchange_wecom(pending).await;
        }
        let sns = match (&self.open_sns, pending.app) {
            (Some(open), LoginApp::Website) => open,
            _ => &self.sns,
        };
        let token = sns.exchange_code(&pending.code).await?;
        if token.is_snapshot_user && !self.config.gateway.allow_snapshot_users {
            return Ok(LoginOutcome::SnapshotRefused);
        }
        let scope = if token.scope.is_empty() {
            self.config.wechat.scope.as_str().to_owned()
        } else {
            token.scope.clone()
        };
        let mut identity = Identity {
            openid: token.openid.clone(),
            unionid: token.unionid.clone(),
            scope,
            nickname: None,
            headimgurl: None,
            snapshot: token.is_snapshot_user,
            ..Default::default()
        };
        if Scope::granted_includes_userinfo(&identity.scope) {
            match sns.userinfo(&token.access_token, &token.openid).await {
                Ok(info) => {
                    identity.nickname = Some(info.nickname).filter(|n| !n.is_empty());
                    identity.headimgurl = info.headimgurl;
                    identity.unionid = identity.unionid.or(info.unionid);
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "sns/userinfo failed; the session carries the openid only"
                ),
            }
        }
        if !is_valid_wechat_id(&identity.openid)
            || identity
                .unionid
                .as_deref()
                .is_some_and(|u| !is_valid_wechat_id(u))
            || !is_valid_scope(&identity.scope)
        {
            return Err(SnsError::Malformed(
                "openid, unionid or scope has unexpected characters".into(),
            )
            .into());
        }
        let now = now_unix();
        let sid = new_sid();
        if let Err(e) = self.store.put(&sid, stored_tokens(&token, now)).await {
            tracing::warn!(error = %e, "could not store the session's tokens; profile refresh will need a new login");
        }
        Ok(LoginOutcome::User(PackedLogin::pack(&LoginRecord {
            identity: identity.bounded(),
            sid,
            issued_at: now,
            return_to: pending.return_to.clone(),
        })))
    }

    /// A WeCom login's exchange (docs/wecom.md §2): who the code belongs
    /// to (`cgi-bin/auth/getuserinfo`), then for a member their name and
    /// departments (`cgi-bin/user/get`) and, with `snsapi_privateinfo`,
    /// their details (`cgi-bin/auth/getuserdetail`). The `user_ticket` is
    /// used here and dropped; a WeCom session keeps no token.
    async fn exchange_wecom(&self, pending: &PendingLogin) -> Result<LoginOutcome, CallError> {
        let (Some(client), Some(cfg)) = (&self.wecom, &self.config.wecom) else {
            return Err(
                SnsError::Malformed("a WeCom login on a site without [wecom]".into()).into(),
            );
        };
        let now = now_unix();
        let identity = match client.visitor(&pending.code, now).await? {
            crate::wecom::Visitor::NonMember { .. } if !cfg.allow_non_members => {
                return Ok(LoginOutcome::NotMember)
            }
            crate::wecom::Visitor::NonMember { openid } => Identity {
                openid,
                scope: WecomScope::Base.as_str().to_owned(),
                wecom: Some(crate::session::WecomMember {
                    corpid: cfg.corpid.clone(),
                    member: false,
                    ..Default::default()
                }),
                ..Default::default()
            },
            crate::wecom::Visitor::Member {
                userid,
                user_ticket,
            } => {
                let record = match client.member(&userid, now).await {
                    Ok(record) => record,
                    Err(e) if e.errcode() == Some(ErrCode::WecomNoPrivilege) => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "WeCom user/get failed; the session carries the userid only");
                        crate::wecom::MemberRecord::default()
                    }
                };
                let mut headimgurl = None;
                if let Some(ticket) = &user_ticket {
                    match client.member_detail(ticket, now).await {
                        Ok(detail) => headimgurl = detail.avatar,
                        Err(e) => tracing::warn!(error = %e, "WeCom getuserdetail failed"),
                    }
                }
                let scope = if user_ticket.is_some() {
                    WecomScope::PrivateInfo
                } else {
                    WecomScope::Base
                };
                Identity {
                    openid: userid,
                    scope: scope.as_str().to_owned(),
                    headimgurl,
                    wecom: Some(crate::session::WecomMember {
                        corpid: cfg.corpid.clone(),
                        member: true,
                        name: record.name,
                        departments: record.departments,
                    }),
                    ..Default::default()
                }
            }
        };
        if !crate::wecom::is_valid_userid(&identity.openid) {
            return Err(SnsError::Malformed("userid has unexpected characters".into()).into());
        }
        Ok(LoginOutcome::User(PackedLogin::pack(&LoginRecord {
            identity: identity.bounded(),
            sid: new_sid(),
            issued_at: now,
            return_to: pending.return_to.clone(),
        })))
    }

    /// The answer to a finished exchange: the session and the way back
    /// (a `302`, or the identity as JSON for a front end's hand-off), or
    /// the failure as a page or JSON. The state cookie goes either way.
    pub(super) fn login_reply(
        &self,
        pending: &PendingLogin,
        result: &Result<LoginOutcome, CallError>,
        now: u64,
        lang: Lang,
    ) -> Reply {
        let failure = match result {
            Ok(LoginOutcome::User(packed)) => {
                let LoginRecord {
                    identity,
                    sid,
                    issued_at,
                    ..
                } = packed.unpack();
                if self.config.gateway.require_unionid
                    && identity.unionid.is_none()
                    && identity.wecom.is_none()
                {
                    tracing::warn!(openid = %self.log_id(&identity.openid), "login refused: no unionid (require_unionid)");
                    return self
                        .login_failure(
                            LoginFailure::NoUnionid,
                            &pending.return_to,
                            pending.answer,
                            lang,
                        )
                        .with_header("Set-Cookie", self.remove_cookie(&pending.state_cookie));
                }
                let session = Session {
                    identity: Arc::new(identity),
                    sid,
                    issued_at,
                    expires_at: issued_at + self.config.gateway.session_lifetime.as_secs(),
                    seen_at: now,
                };
                let answer = match pending.answer {
                    AnswerAs::Page => Reply::redirect(pending.return_to.clone()),
                    AnswerAs::Json => api::identity(&session.identity, None),
                };
                return answer
                    .with_header("Set-Cookie", self.session_cookie(&session, now))
                    .with_header("Set-Cookie", self.remove_cookie(&pending.state_cookie));
            }
            Ok(LoginOutcome::SnapshotRefused) => LoginFailure::SnapshotUser,
            Ok(LoginOutcome::NotMember) => LoginFailure::NotMember,
            Err(e) => LoginFailure::of(e),
        };
        self.login_failure(failure, &pending.return_to, pending.answer, lang)
            .with_header("Set-Cookie", self.remove_cookie(&pending.state_cookie))
    }
}
