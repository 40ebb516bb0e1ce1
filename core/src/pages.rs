//! The gate's own answers: small HTML pages (Chinese first, then English)
//! and JSON bodies. They never carry a secret, code or token.

use html_escape::{encode_double_quoted_attribute, encode_text};

/// A complete HTTP answer the host writes back as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Headers in order; `Set-Cookie` may appear several times.
    pub headers: Vec<(&'static str, String)>,
    /// The body (UTF-8 HTML, JSON or text).
    pub body: String,
}

impl Reply {
    fn new(status: u16, content_type: &str, body: String) -> Reply {
        Reply {
            status,
            headers: vec![
                ("Content-Type", content_type.to_owned()),
                ("Cache-Control", "no-store".to_owned()),
            ],
            body,
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
}

/// One user-facing message in both languages.
pub(crate) struct Text {
    pub zh: &'static str,
    pub en: &'static str,
}

/// An HTML page: a title, a message, an optional detail line (escaped) and
/// an optional button linking to `action`.
pub(crate) fn page(
    status: u16,
    title: Text,
    message: Text,
    detail: Option<&str>,
    action: Option<(&str, Text)>,
) -> Reply {
    let detail = detail
        .map(|d| format!("<p class=\"detail\">{}</p>", encode_text(d)))
        .unwrap_or_default();
    let button = action
        .map(|(href, label)| {
            format!(
                "<p><a class=\"button\" href=\"{}\">{} · {}</a></p>",
                encode_double_quoted_attribute(href),
                label.zh,
                label.en
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<!doctype html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{tz} · {te}</title><style>body{{font-family:system-ui,sans-serif;max-width:32em;margin:3em auto;padding:0 1em;color:#222}}\
h1{{font-size:1.4em}}.en{{color:#666}}.detail{{color:#888;font-size:.9em;word-break:break-all}}\
.button{{display:inline-block;background:#07c160;color:#fff;padding:.6em 1.4em;border-radius:4px;text-decoration:none}}</style></head>\
<body><h1>{tz}</h1><p>{mz}</p><h1 class=\"en\" lang=\"en\">{te}</h1><p class=\"en\" lang=\"en\">{me}</p>{detail}{button}</body></html>\n",
        tz = title.zh,
        te = title.en,
        mz = message.zh,
        me = message.en,
    );
    Reply::new(status, "text/html; charset=utf-8", body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_detail_and_links() {
        let r = page(
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
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    }
}
