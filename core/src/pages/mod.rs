//! The gate's answers to people: small HTML pages (Chinese first, then
//! English), never carrying a secret, code or token. `notices.rs` holds
//! every short page by what happened; the QR and confirmation pages are
//! here. JSON answers are [`crate::api`]'s.

mod notices;

pub(crate) use notices::{confirm_message, no_frames};
pub(crate) use notices::{CallbackProblem, Notice};

use html_escape::{encode_double_quoted_attribute, encode_text};

use crate::config::Language;

/// A complete HTTP answer the host writes back as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Headers in order; `Set-Cookie` may appear several times.
    pub headers: Vec<(&'static str, String)>,
    /// The body (UTF-8 HTML, JSON or text).
    pub body: String,
    /// The WeChat `errcode` behind this answer, when WeChat refused something.
    pub errcode: Option<i64>,
}

impl Reply {
    pub(crate) fn new(status: u16, content_type: &str, body: String) -> Reply {
        Reply {
            status,
            headers: vec![
                ("Content-Type", content_type.to_owned()),
                ("Cache-Control", "no-store".to_owned()),
            ],
            body,
            errcode: None,
        }
    }

    /// A JSON answer.
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply::new(status, "application/json; charset=utf-8", value.to_string())
    }

    /// A plain-text answer.
    pub fn text(status: u16, body: &str) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", body.to_owned())
    }

    /// A `302 Found` to `location` with an empty body.
    pub fn redirect(location: String) -> Reply {
        let mut reply = Reply::new(302, "text/plain; charset=utf-8", String::new());
        reply.headers.push(("Location", location));
        reply
    }

    /// Records the WeChat errcode behind this answer.
    pub fn with_errcode(mut self, errcode: Option<i64>) -> Reply {
        self.errcode = errcode;
        self
    }

    /// Adds a header (e.g. `Set-Cookie`).
    pub fn with_header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header (e.g. each `Set-Cookie`), by case-insensitive name.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// The language of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Chinese (simplified).
    Zh,
    /// English.
    En,
}

impl Lang {
    /// The page language for a request: the configured one, or with
    /// [`Language::Auto`] the first of `zh`/`en` in `Accept-Language` by
    /// preference (`q`), Chinese when neither appears.
    pub fn choose(configured: Language, accept_language: Option<&str>) -> Lang {
        match configured {
            Language::Zh => Lang::Zh,
            Language::En => Lang::En,
            Language::Auto => {
                let mut tags: Vec<(f32, &str)> = accept_language
                    .unwrap_or("")
                    .split(',')
                    .take(16)
                    .filter_map(|item| {
                        let mut parts = item.split(';');
                        let tag = parts.next()?.trim();
                        let q = parts
                            .find_map(|p| p.trim().strip_prefix("q="))
                            .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())?;
                        Some((q, tag))
                    })
                    .collect();
                tags.sort_by(|a, b| b.0.total_cmp(&a.0));
                tags.iter()
                    .filter(|(q, _)| *q > 0.0)
                    .find_map(|(_, tag)| {
                        let primary = tag.split('-').next()?.to_ascii_lowercase();
                        match primary.as_str() {
                            "zh" => Some(Lang::Zh),
                            "en" => Some(Lang::En),
                            _ => None,
                        }
                    })
                    .unwrap_or(Lang::Zh)
            }
        }
    }

    fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }
}

/// One user-facing message in both languages.
#[derive(Clone, Copy)]
struct Text {
    zh: &'static str,
    en: &'static str,
}

impl Text {
    fn get(&self, lang: Lang) -> &'static str {
        match lang {
            Lang::Zh => self.zh,
            Lang::En => self.en,
        }
    }
}

/// The site's own look for the gate's pages (`[gateway] site_name`,
/// `logo_url`, `templates_dir`): read once when the gate is built.
#[derive(Debug, Clone, Default)]
pub struct Branding {
    site_name: Option<String>,
    logo_url: Option<String>,
    /// `templates_dir/page.html`, when there is one.
    template: Option<String>,
    /// `templates_dir/qr.html`, when there is one.
    qr_template: Option<String>,
}

/// The file in `[gateway] templates_dir` that replaces the built-in page
/// shell. Its variables, each replaced once: `{{lang}}`, `{{title}}`,
/// `{{message}}`, `{{detail}}`, `{{site_name}}`, `{{logo_url}}` (text,
/// always HTML-escaped), and `{{figure}}`, `{{button}}` (markup the gate
/// makes, empty when the page has none).
pub const PAGE_TEMPLATE: &str = "page.html";

/// The file in `[gateway] templates_dir` (optional) that replaces the QR
/// login page's shell. Its variables: `{{lang}}`, `{{title}}`,
/// `{{site_name}}`, `{{logo_url}}` (escaped), and `{{qr}}` (the code and
/// its status line) and `{{script}}` (the gate's polling script), which it
/// must both hold.
pub const QR_TEMPLATE: &str = "qr.html";

impl Branding {
    /// The branding of `[gateway]`.
    ///
    /// Errors: a message naming `templates_dir/page.html` when the
    /// directory is set and that file can't be read.
    pub fn new(
        site_name: Option<String>,
        logo_url: Option<String>,
        templates_dir: Option<&std::path::Path>,
    ) -> Result<Branding, String> {
        let (template, qr_template) = match templates_dir {
            Some(dir) => {
                let path = dir.join(PAGE_TEMPLATE);
                let page = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let path = dir.join(QR_TEMPLATE);
                let qr = match std::fs::read_to_string(&path) {
                    Ok(qr) if qr.contains("{{qr}}") && qr.contains("{{script}}") => Some(qr),
                    Ok(_) => {
                        return Err(format!(
                            "{}: must hold {{{{qr}}}} and {{{{script}}}}",
                            path.display()
                        ))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(format!("{}: {e}", path.display())),
                };
                (Some(page), qr)
            }
            None => (None, None),
        };
        Ok(Branding {
            site_name,
            logo_url,
            template,
            qr_template,
        })
    }

    /// The built-in pages' header: the logo and the site's name, escaped;
    /// empty without either.
    fn header(&self) -> String {
        let logo = self
            .logo_url
            .as_deref()
            .map(|url| {
                format!(
                    "<img class=\"logo\" alt=\"\" src=\"{}\">",
                    encode_double_quoted_attribute(url)
                )
            })
            .unwrap_or_default();
        let site = self
            .site_name
            .as_deref()
            .map(|name| format!("<span class=\"site\">{}</span>", encode_text(name)))
            .unwrap_or_default();
        if logo.is_empty() && site.is_empty() {
            String::new()
        } else {
            format!("<header>{logo}{site}</header>")
        }
    }

    /// `template` with the branding's own variables replaced, escaped.
    fn fill(&self, template: &str, lang: Lang, title: &str) -> String {
        template
            .replace("{{lang}}", lang.code())
            .replace("{{title}}", &encode_text(title))
            .replace(
                "{{site_name}}",
                &encode_text(self.site_name.as_deref().unwrap_or("")),
            )
            .replace(
                "{{logo_url}}",
                &encode_double_quoted_attribute(self.logo_url.as_deref().unwrap_or("")),
            )
    }
}

/// An HTML page in `lang`: a title, a message, an optional detail line
/// (escaped), an optional figure (markup the gate made, with its caption)
/// and an optional button linking to `action`, in the site's branding.
#[allow(clippy::too_many_arguments)]
fn page(
    brand: &Branding,
    lang: Lang,
    status: u16,
    title: Text,
    message: Text,
    detail: Option<&str>,
    figure: Option<(&str, Text)>,
    action: Option<(&str, Text)>,
) -> Reply {
    let figure = figure
        .map(|(markup, caption)| {
            format!(
                "<figure>{markup}<figcaption>{}</figcaption></figure>",
                caption.get(lang)
            )
        })
        .unwrap_or_default();
    let button = action
        .map(|(href, label)| {
            format!(
                "<p><a class=\"button\" href=\"{}\">{}</a></p>",
                encode_double_quoted_attribute(href),
                label.get(lang),
            )
        })
        .unwrap_or_default();
    if let Some(template) = &brand.template {
        let body = brand
            .fill(template, lang, title.get(lang))
            .replace("{{message}}", &encode_text(message.get(lang)))
            .replace("{{detail}}", &encode_text(detail.unwrap_or("")))
            .replace("{{figure}}", &figure)
            .replace("{{button}}", &button);
        return Reply::new(status, "text/html; charset=utf-8", body);
    }
    let detail = detail
        .map(|d| format!("<p class=\"detail\">{}</p>", encode_text(d)))
        .unwrap_or_default();
    let header = brand.header();
    let body = format!(
        "<!doctype html>\n<html lang=\"{code}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:32em;margin:3em auto;padding:0 1em;color:#222}}\
h1{{font-size:1.4em}}.detail{{color:#888;font-size:.9em;word-break:break-all}}\
header{{display:flex;align-items:center;gap:.6em;color:#555}}.logo{{height:2em}}\
.button{{display:inline-block;background:#07c160;color:#fff;padding:.6em 1.4em;border-radius:4px;text-decoration:none}}</style></head>\
<body>{header}<h1>{title}</h1><p>{message}</p>{detail}{figure}{button}</body></html>\n",
        code = lang.code(),
        title = title.get(lang),
        message = message.get(lang),
    );
    Reply::new(status, "text/html; charset=utf-8", body)
}

/// The desktop login page of `desktop_login = "scene_qr"`: the Official
/// Account's QR code for this browser (`prefix/qr/new`), polled
/// (`prefix/qr/status`, long-poll; the image from `prefix/qr/image`, so
/// the page needs nothing from another origin) until a scan logs it in, then on to
/// `return_to`. One inline script, no external one. Status 401.
pub(crate) fn scene_qr_page(lang: Lang, prefix: &str, return_to: &str, brand: &Branding) -> Reply {
    use crate::flow::Route;
    // JSON string literals, safe inside <script>.
    let js = |s: &str| {
        serde_json::to_string(s)
            .unwrap_or_default()
            .replace("</", "<\\/")
    };
    let (title, scan, expired, failed, scanned, refused) = match lang {
        Lang::Zh => (
            "微信扫码登录",
            "请用微信扫描二维码登录",
            "二维码已过期，正在刷新…",
            "网络错误，正在重试…",
            "已扫码，请在手机上确认登录",
            "登录已在手机上被拒绝。刷新页面可重新扫码。",
        ),
        Lang::En => (
            "Log in with WeChat",
            "Scan the QR code with WeChat to log in",
            "The QR code expired; refreshing…",
            "Network error; retrying…",
            "Scanned: confirm the login on the phone",
            "The login was refused on the phone. Reload the page to scan again.",
        ),
    };
    let qr = format!(
        "<p><img id=\"qr\" alt=\"QR\"></p><p id=\"status\">{scan}</p>\
<noscript><p>JavaScript is needed to show the QR code.</p></noscript>"
    );
    let script = format!(
        "<script>(function(){{var qrNew={qr_new},qrStatus={qr_status},qrImage={qr_image},rd={rd},st=document.getElementById(\"status\");\
function fresh(){{fetch(qrNew+\"?rd=\"+encodeURIComponent(rd),{{credentials:\"same-origin\"}})\
.then(function(r){{if(!r.ok)throw r;return r.json()}}).then(function(q){{document.getElementById(\"qr\").src=qrImage+\"?scene=\"+encodeURIComponent(q.scene);\
st.textContent={scan_js};poll(q.scene)}}).catch(function(){{st.textContent={failed_js};setTimeout(fresh,3000)}})}}\
function poll(scene){{fetch(qrStatus+\"?scene=\"+encodeURIComponent(scene),{{credentials:\"same-origin\"}})\
.then(function(r){{return r.json()}}).then(function(s){{if(s.status===\"confirmed\"){{location.href=s.redirect}}\
else if(s.status===\"pending\"){{poll(scene)}}else if(s.status===\"scanned\"){{st.textContent={scanned_js};poll(scene)}}\
else if(s.status===\"refused\"){{document.getElementById(\"qr\").removeAttribute(\"src\");st.textContent={refused_js}}}\
else{{st.textContent={expired_js};fresh()}}}})\
.catch(function(){{st.textContent={failed_js};setTimeout(function(){{poll(scene)}},1000)}})}}\
fresh()}})();</script>",
        qr_new = js(&Route::QrNew.path(prefix)),
        qr_status = js(&Route::QrStatus.path(prefix)),
        qr_image = js(&Route::QrImage.path(prefix)),
        rd = js(return_to),
        scan_js = js(scan),
        expired_js = js(expired),
        failed_js = js(failed),
        scanned_js = js(scanned),
        refused_js = js(refused),
    );
    if let Some(template) = &brand.qr_template {
        let body = brand
            .fill(template, lang, title)
            .replace("{{qr}}", &qr)
            .replace("{{script}}", &script);
        return Reply::new(401, "text/html; charset=utf-8", body);
    }
    let body = format!(
        "<!doctype html>\n<html lang=\"{code}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{title}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:32em;margin:3em auto;padding:0 1em;color:#222;text-align:center}}\
header{{display:flex;align-items:center;justify-content:center;gap:.6em;color:#555}}.logo{{height:2em}}\
#qr{{width:240px;height:240px;border:1px solid #eee;image-rendering:pixelated}}</style></head>\
<body>{header}<h1>{title}</h1>{qr}{script}</body></html>\n",
        code = lang.code(),
        header = brand.header(),
    );
    Reply::new(401, "text/html; charset=utf-8", body)
}

/// The phone's confirmation page of `scene_confirm` (docs/security.md):
/// who asks to log in to `site` (the desktop browser's `User-Agent`,
/// client address and time, from `requester`), and two buttons that post
/// `answer=confirm` or `answer=refuse` to `action` (the page's own path
/// and token). Status 200; all values escaped.
pub(crate) fn scene_confirm_page(
    lang: Lang,
    site: &str,
    requester: Option<&crate::qr::SceneRequester>,
    action: &str,
    brand: &Branding,
) -> Reply {
    let t = |zh: &'static str, en: &'static str| Text { zh, en }.get(lang);
    let unknown = t("未知", "unknown");
    let (browser, client, at) = match requester {
        Some(r) => (
            r.browser.as_str(),
            r.client.as_deref().unwrap_or(unknown),
            utc_time(r.at),
        ),
        None => (unknown, unknown, unknown.to_owned()),
    };
    let form = |answer: &str, class: &str, label: &str| {
        format!(
            "<form method=\"post\" action=\"{}&amp;answer={answer}\"><button class=\"{class}\">{label}</button></form>",
            encode_double_quoted_attribute(action)
        )
    };
    let body = format!(
        "<!doctype html>\n<html lang=\"{code}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{title}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:32em;margin:2em auto;padding:0 1em;color:#222}}\
h1{{font-size:1.4em}}dt{{color:#888;font-size:.9em}}dd{{margin:0 0 .8em;word-break:break-all}}\
button{{font-size:1.05em;width:100%;padding:.8em;margin:.3em 0;border:0;border-radius:4px}}\
.confirm{{background:#07c160;color:#fff}}.refuse{{background:#eee;color:#c00}}</style></head>\
<body>{header}<h1>{title}</h1><p>{ask} <b>{site}</b></p>\
<dl><dt>{browser_l}</dt><dd>{browser}</dd><dt>{client_l}</dt><dd>{client}</dd><dt>{at_l}</dt><dd>{at}</dd></dl>\
<p>{warn}</p>{confirm}{refuse}</body></html>\n",
        code = lang.code(),
        header = brand.header(),
        title = t("确认网页登录", "Confirm the login"),
        ask = t("有浏览器请求以你的微信登录", "A browser asks to log in as you to"),
        site = encode_text(site),
        browser_l = t("浏览器", "Browser"),
        browser = encode_text(browser),
        client_l = t("地址", "Address"),
        client = encode_text(client),
        at_l = t("时间", "Time"),
        at = encode_text(&at),
        warn = t(
            "只有当这是你本人正在使用的电脑时才确认。如果有人给你看了二维码让你扫，请拒绝。",
            "Confirm only if this is your own computer, right now. If someone showed you this QR code to scan, refuse."
        ),
        confirm = form("confirm", "confirm", t("确认登录", "Confirm")),
        refuse = form("refuse", "refuse", t("拒绝", "Refuse")),
    );
    Reply::new(200, "text/html; charset=utf-8", body)
}

/// `YYYY-MM-DD HH:MM:SS UTC` for unix seconds.
fn utc_time(unix: u64) -> String {
    let t = i64::try_from(unix)
        .ok()
        .and_then(|s| cookie::time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(cookie::time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_qr_page_escapes_its_values_for_the_script() {
        let r = scene_qr_page(
            Lang::Zh,
            "/_wechat",
            "/a?b=</script><script>alert(1)</script>",
            &Branding::default(),
        );
        assert_eq!(r.status, 401);
        assert!(!r.body.contains("</script><script>alert"));
        assert!(
            r.body.contains("微信扫码登录")
                && r.body.contains("/qr/new")
                && r.body.contains("/qr/status")
        );
    }

    #[test]
    fn the_confirmation_page_shows_the_requester_escaped_and_posts_both_answers() {
        let by = crate::qr::SceneRequester {
            client: Some("203.0.113.9".into()),
            browser: "Evil <script>alert(1)</script>".into(),
            at: 1_800_000_000,
        };
        let r = scene_confirm_page(
            Lang::En,
            "app.example.com",
            Some(&by),
            "/_wechat/qr/confirm?t=a%2Bb",
            &Branding::default(),
        );
        assert_eq!(r.status, 200);
        assert!(!r.body.contains("<script>"), "{}", r.body);
        assert!(
            r.body.contains("203.0.113.9") && r.body.contains("2027-01-15 08:00:00 UTC"),
            "{}",
            r.body
        );
        assert!(r
            .body
            .contains("action=\"/_wechat/qr/confirm?t=a%2Bb&amp;answer=confirm\""));
        assert!(r
            .body
            .contains("action=\"/_wechat/qr/confirm?t=a%2Bb&amp;answer=refuse\""));
        let unknown = scene_confirm_page(Lang::Zh, "x", None, "/c?t=1", &Branding::default());
        assert!(unknown.body.contains("未知") && unknown.body.contains("确认登录"));
    }

    #[test]
    fn language_follows_accept_language_else_chinese() {
        let auto = |h| Lang::choose(Language::Auto, h);
        assert_eq!(auto(None), Lang::Zh);
        assert_eq!(auto(Some("en-US,en;q=0.9")), Lang::En);
        assert_eq!(auto(Some("zh-CN,zh;q=0.9,en;q=0.8")), Lang::Zh);
        assert_eq!(auto(Some("fr, en;q=0.5, zh;q=0.4")), Lang::En);
        assert_eq!(auto(Some("zh;q=0.2, en;q=0.9")), Lang::En);
        assert_eq!(auto(Some("en;q=0, de")), Lang::Zh);
        assert_eq!(auto(Some("\u{0}garbage;q=x")), Lang::Zh);
        assert_eq!(Lang::choose(Language::En, Some("zh-CN")), Lang::En);
    }

    #[test]
    fn pages_escape_detail_and_links() {
        let r = page(
            &Branding::default(),
            Lang::En,
            400,
            Text {
                zh: "标题",
                en: "Title",
            },
            Text {
                zh: "消息",
                en: "Message",
            },
            Some("<script>x</script>"),
            None,
            Some((
                "/a?b=\"c\"&d",
                Text {
                    zh: "重试",
                    en: "Retry",
                },
            )),
        );
        assert_eq!(r.status, 400);
        assert!(!r.body.contains("<script>"));
        assert!(r.body.contains("href=\"/a?b=&quot;c&quot;&amp;d\""));
        assert!(r.body.contains("Retry") && !r.body.contains("重试"));
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    }
}
