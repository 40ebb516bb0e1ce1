//! The JS-SDK's `wx.config` for a page on the site (docs/protocol.md §6):
//! the page URL a signature may be made for, and the signature itself.

use sha1::{Digest, Sha1};

/// The longest page URL signed, in bytes.
pub const MAX_PAGE_URL_BYTES: usize = 2048;

/// `sha1("jsapi_ticket=…&noncestr=…&timestamp=…&url=…")` in lower-case
/// hex: the `signature` of `wx.config` (the JS-SDK's signature algorithm,
/// its keys in ASCII order, the values as they are, not encoded).
/// `timestamp` in unix seconds.
pub fn signature(jsapi_ticket: &str, nonce_str: &str, timestamp: u64, url: &str) -> String {
    let text =
        format!("jsapi_ticket={jsapi_ticket}&noncestr={nonce_str}&timestamp={timestamp}&url={url}");
    let digest = Sha1::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The URL to sign for the page `url`: the page's address up to its `#`
/// (what the page reads as `location.href.split('#')[0]`), unchanged,
/// when it is an absolute `http`/`https` URL on `origin` (`public_url`'s
/// `scheme://host[:port]`).
///
/// Errors: a sentence for the developer: empty, longer than
/// [`MAX_PAGE_URL_BYTES`], spaces or control characters, not a URL, or on
/// another origin.
pub fn page_url<'a>(url: &'a str, origin: &url::Origin) -> Result<&'a str, &'static str> {
    let page = url.split('#').next().unwrap_or_default();
    if page.is_empty() {
        return Err("url: the page's address is missing (location.href.split('#')[0])");
    }
    if page.len() > MAX_PAGE_URL_BYTES {
        return Err("url: longer than 2048 bytes");
    }
    if page.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("url: spaces or control characters");
    }
    let parsed = url::Url::parse(page).map_err(|_| "url: not an absolute URL")?;
    if !matches!(parsed.scheme(), "http" | "https") || &parsed.origin() != origin {
        return Err("url: a page of this site only (public_url's origin)");
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_js_sdks_own_example() {
        assert_eq!(
            signature(
                "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg",
                "Wm3WZYTPz0wzccnW",
                1414587457,
                "http://mp.weixin.qq.com?params=value"
            ),
            "0f9de62fce790f9a083d5c99e95740ceb90c27ed"
        );
    }

    #[test]
    fn only_pages_of_the_sites_origin_are_signed_without_their_fragment() {
        let origin = url::Url::parse("https://app.example.com").unwrap().origin();
        assert_eq!(
            page_url("https://app.example.com/p?a=1&b=%E4#/route?x", &origin),
            Ok("https://app.example.com/p?a=1&b=%E4")
        );
        assert_eq!(
            page_url("https://APP.example.com:443/", &origin),
            Ok("https://APP.example.com:443/")
        );
        for other in [
            "",
            "#x",
            "/relative",
            "https://app.example.com.evil.example/",
            "https://evil.example/?https://app.example.com/",
            "http://app.example.com/",
            "https://app.example.com:8443/",
            "https://user@evil.example/",
            "javascript:alert(1)//https://app.example.com/",
            "https://app.example.com/a b",
            "https://app.example.com/\n",
        ] {
            assert!(page_url(other, &origin).is_err(), "{other:?}");
        }
        let long = format!("https://app.example.com/{}", "a".repeat(MAX_PAGE_URL_BYTES));
        assert!(page_url(&long, &origin).is_err());
    }
}
