//! WeChat's event pushes to the account's server URL (docs/protocol.md §3,
//! "Verifying pushes"): signature check, safe-mode decryption, the event XML.
//! Pure functions: bytes in, values out.

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine;
use serde::Deserialize;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// Largest push body read, in bytes.
pub const MAX_PUSH_BYTES: usize = 64 * 1024;
/// How far a push's `timestamp` may be from now, in seconds.
pub const TIMESTAMP_WINDOW_SECS: u64 = 300;

/// Why a push is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// `signature`/`msg_signature` missing or wrong.
    #[error("bad signature")]
    Signature,
    /// `timestamp` missing, not a number, or outside the window.
    #[error("stale or missing timestamp")]
    Timestamp,
    /// The body is not the XML WeChat sends, or too large.
    #[error("malformed push: {0}")]
    Malformed(String),
    /// Safe mode: the body does not decrypt, or names another appid.
    #[error("safe-mode body refused: {0}")]
    Decrypt(&'static str),
}

/// `sha1(sort(parts).join(""))`, hex: WeChat's push signature.
pub fn signature(parts: &[&str]) -> String {
    let mut sorted = parts.to_vec();
    sorted.sort_unstable();
    let digest = Sha1::digest(sorted.concat().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks `signature` over `[token, timestamp, nonce]` (in constant time) and
/// that `timestamp` is within [`TIMESTAMP_WINDOW_SECS`] of `now`.
///
/// Errors: [`PushError::Signature`], [`PushError::Timestamp`].
pub fn verify(
    token: &Secret,
    timestamp: &str,
    nonce: &str,
    given: &str,
    now: u64,
) -> Result<(), PushError> {
    check_timestamp(timestamp, now)?;
    check_signature(&[token.expose(), timestamp, nonce], given)
}

fn check_timestamp(timestamp: &str, now: u64) -> Result<(), PushError> {
    let ts: u64 = timestamp.parse().map_err(|_| PushError::Timestamp)?;
    if ts.abs_diff(now) > TIMESTAMP_WINDOW_SECS {
        return Err(PushError::Timestamp);
    }
    Ok(())
}

fn check_signature(parts: &[&str], given: &str) -> Result<(), PushError> {
    let expected = signature(parts);
    let given = given.to_ascii_lowercase();
    if expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        Ok(())
    } else {
        Err(PushError::Signature)
    }
}

/// A pushed event (the fields this gate uses).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PushEvent {
    /// The account (`gh_…`).
    #[serde(rename = "ToUserName")]
    pub to_user: String,
    /// The user's openid.
    #[serde(rename = "FromUserName")]
    pub from_user: String,
    /// Unix seconds.
    #[serde(rename = "CreateTime")]
    pub create_time: String,
    /// `event` for events.
    #[serde(rename = "MsgType")]
    pub msg_type: String,
    /// `SCAN`, `subscribe`, …
    #[serde(rename = "Event", default)]
    pub event: String,
    /// The scene (`SCAN`) or `qrscene_` + scene (`subscribe` by a QR code).
    #[serde(rename = "EventKey", default)]
    pub event_key: String,
    /// The QR code's ticket.
    #[serde(rename = "Ticket", default)]
    pub ticket: String,
}

impl PushEvent {
    /// The QR scene this event is a scan of, if it is one: `SCAN` with the
    /// scene as `EventKey`, or `subscribe` with `qrscene_` + scene.
    pub fn scanned_scene(&self) -> Option<&str> {
        if !self.msg_type.eq_ignore_ascii_case("event") {
            return None;
        }
        match self.event.as_str() {
            "SCAN" => Some(self.event_key.as_str()).filter(|k| !k.is_empty()),
            "subscribe" => self
                .event_key
                .strip_prefix("qrscene_")
                .filter(|k| !k.is_empty()),
            _ => None,
        }
    }

    /// The key WeChat's retries of this push share (FromUserName + CreateTime + Event + EventKey).
    pub fn dedup_key(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.from_user, self.create_time, self.event, self.event_key
        )
    }
}

/// Parses an event's XML.
///
/// Errors: [`PushError::Malformed`].
pub fn parse_event(xml: &[u8]) -> Result<PushEvent, PushError> {
    if xml.len() > MAX_PUSH_BYTES {
        return Err(PushError::Malformed("larger than 64 KiB".into()));
    }
    let text = std::str::from_utf8(xml).map_err(|_| PushError::Malformed("not UTF-8".into()))?;
    quick_xml::de::from_str(text).map_err(|e| PushError::Malformed(format!("XML: {e}")))
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "Encrypt")]
    encrypt: String,
}

/// Opens a safe-mode push body (`<xml>…<Encrypt>BASE64</Encrypt></xml>`):
/// checks `msg_signature` over `[token, timestamp, nonce, Encrypt]` and the
/// timestamp, decrypts AES-256-CBC (key = base64(EncodingAESKey + "="),
/// IV = key[..16], PKCS#7 to 32-byte blocks), and checks that the trailing
/// appid is ours. Returns the inner XML.
///
/// Errors: [`PushError`].
#[allow(clippy::too_many_arguments)]
pub fn open_safe_mode(
    body: &[u8],
    token: &Secret,
    encoding_aes_key: &Secret,
    appid: &str,
    timestamp: &str,
    nonce: &str,
    msg_signature: &str,
    now: u64,
) -> Result<Vec<u8>, PushError> {
    if body.len() > MAX_PUSH_BYTES {
        return Err(PushError::Malformed("larger than 64 KiB".into()));
    }
    let text = std::str::from_utf8(body).map_err(|_| PushError::Malformed("not UTF-8".into()))?;
    let envelope: Envelope =
        quick_xml::de::from_str(text).map_err(|e| PushError::Malformed(format!("XML: {e}")))?;
    check_timestamp(timestamp, now)?;
    check_signature(
        &[token.expose(), timestamp, nonce, &envelope.encrypt],
        msg_signature,
    )?;
    decrypt(&envelope.encrypt, encoding_aes_key, appid)
}

/// Base64 as WeChat's EncodingAESKey uses it: its last character may carry
/// trailing bits that strict decoders refuse.
const LENIENT_B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

fn decrypt(encrypted: &str, encoding_aes_key: &Secret, appid: &str) -> Result<Vec<u8>, PushError> {
    let key = aes_key(encoding_aes_key)?;
    let mut data = LENIENT_B64
        .decode(encrypted.trim())
        .map_err(|_| PushError::Decrypt("not base64"))?;
    if data.is_empty() || data.len() % 16 != 0 {
        return Err(PushError::Decrypt("not whole AES blocks"));
    }
    let plain = cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &key[..16])
        .map_err(|_| PushError::Decrypt("bad key"))?
        .decrypt_padded_mut::<NoPadding>(&mut data)
        .map_err(|_| PushError::Decrypt("does not decrypt"))?;
    let pad = *plain.last().ok_or(PushError::Decrypt("empty"))? as usize;
    if pad == 0
        || pad > 32
        || pad > plain.len()
        || !plain[plain.len() - pad..]
            .iter()
            .all(|b| *b as usize == pad)
    {
        return Err(PushError::Decrypt("bad padding"));
    }
    let plain = &plain[..plain.len() - pad];
    if plain.len() < 20 {
        return Err(PushError::Decrypt("too short"));
    }
    let len = u32::from_be_bytes([plain[16], plain[17], plain[18], plain[19]]) as usize;
    let rest = &plain[20..];
    if len > rest.len() {
        return Err(PushError::Decrypt("bad length"));
    }
    let (xml, tail) = rest.split_at(len);
    if !bool::from(tail.ct_eq(appid.as_bytes())) {
        return Err(PushError::Decrypt("the appid is not this account's"));
    }
    Ok(xml.to_vec())
}

/// A passive reply to a push: a text message from the account
/// (`from_account`, the push's `ToUserName`) to the user (`to_openid`, its
/// `FromUserName`), sent at `create_time` (unix seconds). `content` may
/// hold `<a href="…">` links, which WeChat shows as tappable (at most
/// 2,048 bytes). WeChat's "被动回复用户消息" (docs/protocol.md §3); the XML is
/// written by `quick-xml`, each value a CDATA section.
pub fn text_reply(to_openid: &str, from_account: &str, create_time: u64, content: &str) -> String {
    let mut writer = quick_xml::Writer::new(Vec::new());
    let cdata = |w: &mut quick_xml::Writer<Vec<u8>>, name: &str, value: &str| {
        w.create_element(name).write_inner_content(|w| {
            for part in quick_xml::events::BytesCData::escaped(value) {
                w.write_event(quick_xml::events::Event::CData(part))?;
            }
            Ok(())
        })?;
        Ok::<(), std::io::Error>(())
    };
    writer
        .create_element("xml")
        .write_inner_content(|w| {
            cdata(w, "ToUserName", to_openid)?;
            cdata(w, "FromUserName", from_account)?;
            w.create_element("CreateTime")
                .write_text_content(quick_xml::events::BytesText::new(&create_time.to_string()))?;
            cdata(w, "MsgType", "text")?;
            cdata(w, "Content", content)
        })
        .expect("writing to a Vec does not fail");
    String::from_utf8(writer.into_inner()).expect("built from UTF-8")
}

/// Encrypts a reply for a safe-mode push: `<xml><Encrypt/><MsgSignature/>
/// <TimeStamp/><Nonce/></xml>`, the message sealed as [`open_safe_mode`]
/// opens it (16 random bytes ‖ 4-byte big-endian length ‖ XML ‖ appid,
/// AES-256-CBC) and signed over `[token, timestamp, nonce, Encrypt]`.
/// WeChat's "消息加解密" for replies (docs/protocol.md §3).
///
/// Errors: [`PushError::Decrypt`] for an EncodingAESKey that is not 43
/// base64 characters.
pub fn seal_safe_mode(
    xml: &str,
    token: &Secret,
    encoding_aes_key: &Secret,
    appid: &str,
    timestamp: u64,
    nonce: &str,
) -> Result<String, PushError> {
    let encrypted = encrypt(xml.as_bytes(), encoding_aes_key, appid)?;
    let timestamp = timestamp.to_string();
    let msg_signature = signature(&[token.expose(), &timestamp, nonce, &encrypted]);
    let mut writer = quick_xml::Writer::new(Vec::new());
    writer
        .create_element("xml")
        .write_inner_content(|w| {
            w.create_element("Encrypt")
                .write_cdata_content(quick_xml::events::BytesCData::new(&encrypted))?;
            w.create_element("MsgSignature")
                .write_cdata_content(quick_xml::events::BytesCData::new(&msg_signature))?;
            w.create_element("TimeStamp")
                .write_text_content(quick_xml::events::BytesText::new(&timestamp))?;
            w.create_element("Nonce")
                .write_text_content(quick_xml::events::BytesText::new(nonce))?;
            Ok(())
        })
        .expect("writing to a Vec does not fail");
    Ok(String::from_utf8(writer.into_inner()).expect("built from UTF-8"))
}

fn aes_key(encoding_aes_key: &Secret) -> Result<Vec<u8>, PushError> {
    LENIENT_B64
        .decode(format!("{}=", encoding_aes_key.expose()))
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or(PushError::Decrypt("bad EncodingAESKey"))
}

/// Safe mode's sealing, base64 out (the inverse of `decrypt`).
fn encrypt(xml: &[u8], encoding_aes_key: &Secret, appid: &str) -> Result<String, PushError> {
    let key = aes_key(encoding_aes_key)?;
    let mut plain = vec![0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut plain);
    plain.extend_from_slice(&(xml.len() as u32).to_be_bytes());
    plain.extend_from_slice(xml);
    plain.extend_from_slice(appid.as_bytes());
    let pad = 32 - plain.len() % 32;
    plain.extend(std::iter::repeat_n(pad as u8, pad));
    let len = plain.len();
    let sealed = cbc::Encryptor::<aes::Aes256>::new_from_slices(&key, &key[..16])
        .map_err(|_| PushError::Decrypt("bad key"))?
        .encrypt_padded_mut::<NoPadding>(&mut plain, len)
        .map_err(|_| PushError::Decrypt("bad padding"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(sealed))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn encrypt_for_test(xml: &str, key43: &str, appid: &str) -> String {
        encrypt(xml.as_bytes(), &Secret::new(key43), appid).unwrap()
    }

    const SCAN: &str = "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName><CreateTime>1800000000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[SCAN]]></Event><EventKey><![CDATA[scene42]]></EventKey><Ticket><![CDATA[T]]></Ticket></xml>";

    #[test]
    fn signatures_are_checked_in_sorted_order_with_a_timestamp_window() {
        let token = Secret::new("Tok3n");
        let sig = signature(&["Tok3n", "1800000000", "n0nce"]);
        assert_eq!(sig, signature(&["n0nce", "Tok3n", "1800000000"]));
        assert!(verify(&token, "1800000000", "n0nce", &sig, 1_800_000_100).is_ok());
        assert!(verify(
            &token,
            "1800000000",
            "n0nce",
            &sig.to_uppercase(),
            1_800_000_100
        )
        .is_ok());
        assert_eq!(
            verify(&token, "1800000000", "other", &sig, 1_800_000_100),
            Err(PushError::Signature)
        );
        assert_eq!(
            verify(&token, "1800000000", "n0nce", &sig, 1_800_001_000),
            Err(PushError::Timestamp)
        );
        assert_eq!(
            verify(&token, "x", "n0nce", &sig, 0),
            Err(PushError::Timestamp)
        );
        assert_eq!(
            verify(&token, "1800000000", "n0nce", "", 1_800_000_000),
            Err(PushError::Signature)
        );
    }

    #[test]
    fn events_parse_and_name_their_scene() {
        let e = parse_event(SCAN.as_bytes()).unwrap();
        assert_eq!(e.from_user, "oUser");
        assert_eq!(e.scanned_scene(), Some("scene42"));
        let sub = SCAN
            .replace("SCAN", "subscribe")
            .replace("scene42", "qrscene_scene42");
        assert_eq!(
            parse_event(sub.as_bytes()).unwrap().scanned_scene(),
            Some("scene42")
        );
        let plain_sub = SCAN.replace("SCAN", "subscribe").replace("scene42", "");
        assert_eq!(
            parse_event(plain_sub.as_bytes()).unwrap().scanned_scene(),
            None
        );
        assert!(parse_event(b"<xml><ToUserName>").is_err());
        assert!(parse_event(b"not xml at all").is_err());
        assert!(parse_event(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn safe_mode_decrypts_and_checks_the_appid() {
        let key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
        let token = Secret::new("Tok3n");
        let enc = encrypt_for_test(SCAN, key, "wxAPP");
        let body = format!("<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt><![CDATA[{enc}]]></Encrypt></xml>");
        let sig = signature(&["Tok3n", "1800000000", "n", &enc]);
        let open = |appid: &str, sig: &str| {
            open_safe_mode(
                body.as_bytes(),
                &token,
                &Secret::new(key),
                appid,
                "1800000000",
                "n",
                sig,
                1_800_000_000,
            )
        };
        assert_eq!(open("wxAPP", &sig).unwrap(), SCAN.as_bytes());
        assert_eq!(
            open("wxOTHER", &sig),
            Err(PushError::Decrypt("the appid is not this account's"))
        );
        assert_eq!(open("wxAPP", "00"), Err(PushError::Signature));
        // CBC has no integrity of its own: msg_signature is what refuses a changed body.
        let mut tampered = enc.clone().into_bytes();
        tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let body2 = body.replace(&enc, &tampered);
        let refused = open_safe_mode(
            body2.as_bytes(),
            &token,
            &Secret::new(key),
            "wxAPP",
            "1800000000",
            "n",
            &sig,
            1_800_000_000,
        );
        assert_eq!(refused, Err(PushError::Signature));
    }

    #[derive(Deserialize)]
    struct TextMessage {
        #[serde(rename = "ToUserName")]
        to: String,
        #[serde(rename = "FromUserName")]
        from: String,
        #[serde(rename = "CreateTime")]
        time: u64,
        #[serde(rename = "MsgType")]
        kind: String,
        #[serde(rename = "Content")]
        content: String,
    }

    #[test]
    fn a_text_reply_carries_any_content_intact() {
        let content = "登录请求 <a href=\"https://x.example/c?t=a+b&u=1\">确认</a> ]]> & done";
        let xml = text_reply("oUser", "gh_1", 1_800_000_000, content);
        assert!(
            xml.starts_with("<xml><ToUserName><![CDATA[oUser]]></ToUserName>"),
            "{xml}"
        );
        let m: TextMessage = quick_xml::de::from_str(&xml).unwrap();
        assert_eq!(
            (m.to.as_str(), m.from.as_str(), m.time, m.kind.as_str()),
            ("oUser", "gh_1", 1_800_000_000, "text")
        );
        assert_eq!(m.content, content);
    }

    #[derive(Deserialize)]
    struct SealedReply {
        #[serde(rename = "MsgSignature")]
        msg_signature: String,
        #[serde(rename = "TimeStamp")]
        timestamp: String,
        #[serde(rename = "Nonce")]
        nonce: String,
    }

    #[test]
    fn a_safe_mode_reply_opens_as_a_push_does_and_only_with_its_signature() {
        let key = Secret::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG");
        let token = Secret::new("Tok3n");
        let xml = text_reply("oUser", "gh_1", 1_800_000_000, "hello");
        let sealed = seal_safe_mode(&xml, &token, &key, "wxAPP", 1_800_000_000, "n0nce").unwrap();
        assert!(!sealed.contains("hello"), "{sealed}");
        let fields: SealedReply = quick_xml::de::from_str(&sealed).unwrap();
        assert_eq!(
            (fields.timestamp.as_str(), fields.nonce.as_str()),
            ("1800000000", "n0nce")
        );
        let open = |sig: &str| {
            open_safe_mode(
                sealed.as_bytes(),
                &token,
                &key,
                "wxAPP",
                &fields.timestamp,
                &fields.nonce,
                sig,
                1_800_000_000,
            )
        };
        assert_eq!(open(&fields.msg_signature).unwrap(), xml.as_bytes());
        assert_eq!(open("00"), Err(PushError::Signature));
        let again = seal_safe_mode(&xml, &token, &key, "wxAPP", 1_800_000_000, "n0nce").unwrap();
        assert_ne!(again, sealed, "16 random bytes lead every sealed message");
        assert_eq!(
            seal_safe_mode(&xml, &token, &Secret::new("short"), "wxAPP", 1, "n"),
            Err(PushError::Decrypt("bad EncodingAESKey"))
        );
    }
}
