//! WeCom (企业微信): the login of a company's members through its
//! self-built app (docs/wecom.md). The in-app browser's web authorization
//! and the desktop web QR login both end in a code, exchanged with
//! `cgi-bin/auth/getuserinfo` under the corp `access_token`
//! (`cgi-bin/gettoken`, one per app, shared like WeChat's basic token).

use std::sync::Arc;

use serde::Deserialize;
use url::form_urlencoded;

use crate::config::{WecomConfig, WecomScope};
use crate::coordination::{Coordination, SharedToken};
use crate::errcode::ErrCode;
use crate::flow::CallError;
use crate::qr::SharedSecret;
use crate::secret::{AccessToken, AuthorizationCode, UserTicket};
use crate::sns::{api_url, check_errcode, json_problem, parse_basic_token, SnsClient, SnsError};

/// The in-app browser's authorize URL:
/// `{open_base}/connect/oauth2/authorize?appid=CORPID&redirect_uri=…&response_type=code&scope=…&state=…&agentid=…#wechat_redirect`,
/// values form-urlencoded, in the order of WeCom's documentation.
///
/// Source: docs/wecom.md §1 (构造网页授权链接).
pub fn authorize_url(
    cfg: &WecomConfig,
    redirect_uri: &str,
    scope: WecomScope,
    state: &str,
) -> String {
    let mut query = form_urlencoded::Serializer::new(String::with_capacity(256));
    query
        .append_pair("appid", &cfg.corpid)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("response_type", "code")
        .append_pair("scope", scope.as_str())
        .append_pair("state", state)
        .append_pair("agentid", &cfg.agentid);
    format!(
        "{}/connect/oauth2/authorize?{}#wechat_redirect",
        cfg.open_base.as_str().trim_end_matches('/'),
        query.finish()
    )
}

/// The web QR login URL for desktop browsers:
/// `{login_base}/wwlogin/sso/login?login_type=CorpApp&appid=CORPID&agentid=…&redirect_uri=…&state=…`.
///
/// Source: docs/wecom.md §2 (构造扫码登录链接).
pub fn web_login_url(cfg: &WecomConfig, redirect_uri: &str, state: &str) -> String {
    let mut query = form_urlencoded::Serializer::new(String::with_capacity(256));
    query
        .append_pair("login_type", "CorpApp")
        .append_pair("appid", &cfg.corpid)
        .append_pair("agentid", &cfg.agentid)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("state", state);
    format!(
        "{}/wwlogin/sso/login?{}",
        cfg.login_base.as_str().trim_end_matches('/'),
        query.finish()
    )
}

/// Who a code belongs to (`cgi-bin/auth/getuserinfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visitor {
    /// A member of the company.
    Member {
        /// The member's `userid` in the company.
        userid: String,
        /// With `snsapi_privateinfo`: reads the member's details.
        user_ticket: Option<UserTicket>,
    },
    /// A WeCom or WeChat user outside the company.
    NonMember {
        /// Their `openid` for this company.
        openid: String,
    },
}

/// Parses a `cgi-bin/auth/getuserinfo` answer: `{"userid", "user_ticket"?}`
/// for a member, `{"openid", "external_userid"?}` for anyone else.
///
/// Errors: [`SnsError::WeChat`] for a non-zero errcode (40029: the code is
/// invalid or used), [`SnsError::Malformed`] for any other shape.
pub fn parse_visitor(body: &[u8]) -> Result<Visitor, SnsError> {
    check_errcode(body)?;
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default, alias = "UserId")]
        userid: Option<String>,
        #[serde(default)]
        user_ticket: Option<String>,
        #[serde(default, alias = "OpenId")]
        openid: Option<String>,
    }
    let raw: Raw = serde_json::from_slice(body)
        .map_err(|e| SnsError::Malformed(format!("getuserinfo answer: {}", json_problem(&e))))?;
    match (raw.userid.filter(|u| !u.is_empty()), raw.openid) {
        (Some(userid), _) => Ok(Visitor::Member {
            userid,
            user_ticket: raw
                .user_ticket
                .filter(|t| !t.is_empty())
                .map(UserTicket::new),
        }),
        (None, Some(openid)) if !openid.is_empty() => Ok(Visitor::NonMember { openid }),
        _ => Err(SnsError::Malformed(
            "getuserinfo answer: neither userid nor openid".into(),
        )),
    }
}

/// A member's name and departments (`cgi-bin/user/get`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberRecord {
    /// The member's name, when the app may read it.
    pub name: Option<String>,
    /// The ids of the member's departments.
    pub departments: Vec<u64>,
}

/// Parses a `cgi-bin/user/get` answer (`{"userid", "name", "department": [ids]}`).
///
/// Errors: as [`parse_visitor`]; 60011 when the member is outside the
/// app's visible range, 60111 for an unknown userid.
pub fn parse_member(body: &[u8]) -> Result<MemberRecord, SnsError> {
    check_errcode(body)?;
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        department: Vec<u64>,
    }
    let raw: Raw = serde_json::from_slice(body)
        .map_err(|e| SnsError::Malformed(format!("user/get answer: {}", json_problem(&e))))?;
    Ok(MemberRecord {
        name: raw.name.filter(|n| !n.is_empty()),
        departments: raw.department,
    })
}

/// What `cgi-bin/auth/getuserdetail` tells of a member who granted
/// `snsapi_privateinfo`; the gate carries the avatar only (mobile and
/// email stay with WeCom).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberDetail {
    /// The avatar URL.
    pub avatar: Option<String>,
}

/// Parses a `cgi-bin/auth/getuserdetail` answer.
///
/// Errors: as [`parse_visitor`].
pub fn parse_member_detail(body: &[u8]) -> Result<MemberDetail, SnsError> {
    check_errcode(body)?;
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        avatar: Option<String>,
    }
    let raw: Raw = serde_json::from_slice(body)
        .map_err(|e| SnsError::Malformed(format!("getuserdetail answer: {}", json_problem(&e))))?;
    Ok(MemberDetail {
        avatar: raw.avatar.filter(|a| !a.is_empty()),
    })
}

/// Whether a WeCom `userid` (or a non-member's `openid`) is safe in a
/// header: 1 to 64 bytes of letters, digits and `_-@.` (WeCom's rule for
/// userids).
pub fn is_valid_userid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'@' | b'.'))
}

/// The WeCom API client of one app: its corp token, shared through the
/// coordination (one `gettoken` per window across instances), and the
/// calls a login makes with it.
#[derive(Debug)]
pub struct WecomClient {
    api: SnsClient,
    corpid: String,
    token: SharedSecret,
}

impl WecomClient {
    /// A client for `cfg`, with `sns`'s timeouts and retries.
    pub fn new(cfg: &WecomConfig, sns: &SnsClient, coordination: Arc<dyn Coordination>) -> Self {
        WecomClient {
            api: sns.for_api(cfg.api_base.clone(), &cfg.corpid, &cfg.secret),
            corpid: cfg.corpid.clone(),
            token: SharedSecret::new(SharedToken::CorpToken, coordination),
        }
    }

    /// `cgi-bin/gettoken?corpid=&corpsecret=`: a new corp token and its
    /// lifetime in seconds.
    async fn fetch_token(&self) -> Result<(AccessToken, u64), CallError> {
        const ENDPOINT: &str = "wecom/gettoken";
        let mut url = api_url(self.api.api_base(), "cgi-bin/gettoken");
        url.query_pairs_mut()
            .append_pair("corpid", &self.corpid)
            .append_pair("corpsecret", self.api.secret().expose());
        Ok(self
            .api
            .with_retries(ENDPOINT, || async {
                parse_basic_token(&self.api.get(url.clone()).await?)
            })
            .await?)
    }

    /// Runs `call` with the corp token; when WeCom says the token is no
    /// longer valid (40014, 42001), forgets it and runs `call` once more
    /// with a new one.
    async fn with_token<T, F, Fut>(&self, now: u64, call: F) -> Result<T, CallError>
    where
        F: Fn(AccessToken) -> Fut,
        Fut: std::future::Future<Output = Result<T, SnsError>>,
    {
        let token = self.token.get(now, || self.fetch_token()).await?;
        match call(token.clone()).await {
            Err(e)
                if matches!(
                    e.errcode(),
                    Some(ErrCode::InvalidAccessToken | ErrCode::AccessTokenExpired)
                ) =>
            {
                self.token.invalidate(&token).await;
                let fresh = self.token.get(now, || self.fetch_token()).await?;
                Ok(call(fresh).await?)
            }
            other => Ok(other?),
        }
    }

    /// Who `code` belongs to (`cgi-bin/auth/getuserinfo`).
    ///
    /// Errors: [`CallError`]; 40029 for an invalid or used code.
    pub async fn visitor(&self, code: &AuthorizationCode, now: u64) -> Result<Visitor, CallError> {
        const ENDPOINT: &str = "wecom/auth/getuserinfo";
        self.with_token(now, |token| async move {
            let mut url = api_url(self.api.api_base(), "cgi-bin/auth/getuserinfo");
            url.query_pairs_mut()
                .append_pair("access_token", token.expose())
                .append_pair("code", code.expose());
            self.api
                .with_retries(ENDPOINT, || async {
                    parse_visitor(&self.api.get(url.clone()).await?)
                })
                .await
        })
        .await
    }

    /// A member's details (`POST cgi-bin/auth/getuserdetail`, body
    /// `{"user_ticket"}`).
    ///
    /// Errors: [`CallError`].
    pub async fn member_detail(
        &self,
        ticket: &UserTicket,
        now: u64,
    ) -> Result<MemberDetail, CallError> {
        const ENDPOINT: &str = "wecom/auth/getuserdetail";
        let body = serde_json::json!({ "user_ticket": ticket.expose() }).to_string();
        self.with_token(now, |token| {
            let body = body.clone();
            async move {
                let mut url = api_url(self.api.api_base(), "cgi-bin/auth/getuserdetail");
                url.query_pairs_mut()
                    .append_pair("access_token", token.expose());
                self.api
                    .with_retries(ENDPOINT, || async {
                        let request = self.api.http().post(url.clone()).body(body.clone());
                        parse_member_detail(&self.api.send(request).await?)
                    })
                    .await
            }
        })
        .await
    }

    /// A member's name and departments (`cgi-bin/user/get`).
    ///
    /// Errors: [`CallError`]; 60011 outside the app's visible range.
    pub async fn member(&self, userid: &str, now: u64) -> Result<MemberRecord, CallError> {
        const ENDPOINT: &str = "wecom/user/get";
        self.with_token(now, |token| async move {
            let mut url = api_url(self.api.api_base(), "cgi-bin/user/get");
            url.query_pairs_mut()
                .append_pair("access_token", token.expose())
                .append_pair("userid", userid);
            self.api
                .with_retries(ENDPOINT, || async {
                    parse_member(&self.api.get(url.clone()).await?)
                })
                .await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use url::Url;

    fn config() -> WecomConfig {
        WecomConfig {
            corpid: "ww1234567890abcdef".into(),
            agentid: "1000002".into(),
            secret: crate::secret::Secret::new("corp-secret"),
            scope: WecomScope::Base,
            open_base: Url::parse("https://open.weixin.qq.com").unwrap(),
            api_base: Url::parse("https://qyapi.weixin.qq.com").unwrap(),
            login_base: Url::parse("https://login.work.weixin.qq.com").unwrap(),
            allow_non_members: false,
        }
    }

    #[test]
    fn urls_carry_the_documented_parameters_in_order() {
        let cfg = config();
        assert_eq!(
            authorize_url(
                &cfg,
                "https://app.example.com/_wechat/callback",
                WecomScope::PrivateInfo,
                "S1"
            ),
            "https://open.weixin.qq.com/connect/oauth2/authorize?appid=ww1234567890abcdef\
             &redirect_uri=https%3A%2F%2Fapp.example.com%2F_wechat%2Fcallback&response_type=code\
             &scope=snsapi_privateinfo&state=S1&agentid=1000002#wechat_redirect"
        );
        assert_eq!(
            web_login_url(&cfg, "https://app.example.com/_wechat/callback", "S2"),
            "https://login.work.weixin.qq.com/wwlogin/sso/login?login_type=CorpApp\
             &appid=ww1234567890abcdef&agentid=1000002\
             &redirect_uri=https%3A%2F%2Fapp.example.com%2F_wechat%2Fcallback&state=S2"
        );
    }

    #[test]
    fn members_and_non_members_are_told_apart() {
        assert_eq!(
            parse_visitor(br#"{"errcode":0,"errmsg":"ok","userid":"zhangsan","user_ticket":"UT"}"#)
                .unwrap(),
            Visitor::Member {
                userid: "zhangsan".into(),
                user_ticket: Some(UserTicket::new("UT")),
            }
        );
        assert_eq!(
            parse_visitor(br#"{"errcode":0,"errmsg":"ok","openid":"oX1","external_userid":"wmE"}"#)
                .unwrap(),
            Visitor::NonMember {
                openid: "oX1".into()
            }
        );
        let used = parse_visitor(br#"{"errcode":40029,"errmsg":"invalid code"}"#).unwrap_err();
        assert_eq!(used.errcode(), Some(ErrCode::InvalidCode));
        assert!(parse_visitor(br#"{"errcode":0,"errmsg":"ok"}"#).is_err());
        let odd = parse_visitor(br#"{"userid":["x"]}"#)
            .unwrap_err()
            .to_string();
        assert!(!odd.contains('x'), "{odd}");
    }

    #[test]
    fn member_records_and_details_parse() {
        assert_eq!(
            parse_member(
                r#"{"errcode":0,"userid":"zhangsan","name":"张三","department":[1,2]}"#.as_bytes()
            )
            .unwrap(),
            MemberRecord {
                name: Some("张三".into()),
                departments: vec![1, 2],
            }
        );
        assert_eq!(
            parse_member(br#"{"errcode":60011,"errmsg":"no privilege"}"#)
                .unwrap_err()
                .errcode(),
            Some(ErrCode::WecomNoPrivilege)
        );
        assert_eq!(
            parse_member_detail(br#"{"errcode":0,"userid":"zhangsan","avatar":"https://wework.qpic.cn/a/0","mobile":"13800000000"}"#)
                .unwrap()
                .avatar
                .as_deref(),
            Some("https://wework.qpic.cn/a/0")
        );
    }

    #[test]
    fn userids_are_checked_header_safe() {
        for ok in ["zhangsan", "li.si@corp", "wang_wu-2"] {
            assert!(is_valid_userid(ok), "{ok}");
        }
        for bad in ["", "a b", "x\r\nSet-Cookie: y", &"a".repeat(65), "张三"] {
            assert!(!is_valid_userid(bad), "{bad}");
        }
    }
}
