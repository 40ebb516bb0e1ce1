//! Property tests of the security-relevant pieces: sealed cookies, return
//! paths, authorize URLs and push signatures.

use proptest::prelude::*;
use wechat_oauth::authorize::authorize_url;
use wechat_oauth::push;
use wechat_oauth::seal::Sealer;
use wechat_oauth::secret::Secret;
use wechat_oauth::state::safe_return_path;
use wechat_oauth::Scope;

const ORIGIN: &str = "https://app.example.com";

fn sealer() -> Sealer {
    Sealer::new(&Secret::new("property-cookie-secret-0123456789abcdef")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any single byte changed anywhere in a sealed value makes it unreadable.
    #[test]
    fn any_flipped_byte_of_a_sealed_cookie_is_rejected(
        plaintext in ".{0,200}",
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let s = sealer();
        let sealed = s.seal("wechat_session", &plaintext);
        let opened = s.open("wechat_session", &sealed);
        prop_assert_eq!(opened.as_deref(), Some(plaintext.as_str()));
        let mut bytes = sealed.into_bytes();
        let i = position.index(bytes.len());
        bytes[i] ^= flip;
        let tampered = String::from_utf8_lossy(&bytes);
        prop_assert_eq!(s.open("wechat_session", &tampered), None);
    }

    /// A return path is either refused or a path on our own origin, outside the gate's prefix.
    #[test]
    fn a_return_path_stays_on_the_origin_or_is_refused(
        rd in prop_oneof![
            any::<String>(),
            "[/\\\\a-z:.@%?#&=\t -]{0,40}",
            "(https?:)?//[a-z.@:]{0,20}(/[a-z]{0,5})?",
            "https://app\\.example\\.com[./@:a-z]{0,20}",
        ],
    ) {
        if let Some(path) = safe_return_path(&rd, ORIGIN, "/_wechat") {
            let base = url::Url::parse(ORIGIN).unwrap();
            let joined = base.join(&path).unwrap();
            prop_assert_eq!(joined.origin(), base.origin(), "{:?} → {}", rd, joined);
            prop_assert!(path.starts_with('/') && !path.starts_with("//"));
            prop_assert!(!path.starts_with("/_wechat/") && path != "/_wechat");
        }
    }

    /// The authorize URL keeps WeChat's parameter order and gives back
    /// every input unchanged when parsed.
    #[test]
    fn authorize_urls_keep_the_order_and_round_trip(
        appid in "wx[0-9a-f]{16}",
        redirect_path in any::<String>(),
        state in "[A-Za-z0-9]{1,128}",
        userinfo in any::<bool>(),
        force_popup in any::<bool>(),
        connect_redirect in any::<bool>(),
    ) {
        let scope = if userinfo { Scope::Userinfo } else { Scope::Base };
        let redirect_uri = format!("https://app.example.com/_wechat/callback?x={redirect_path}");
        let options = wechat_oauth::authorize::AuthorizeOptions { force_popup, connect_redirect };
        let built = authorize_url("https://open.weixin.qq.com", &appid, &redirect_uri, scope, &state, options);
        prop_assert!(built.starts_with("https://open.weixin.qq.com/connect/oauth2/authorize?appid="));
        prop_assert!(built.ends_with("#wechat_redirect"));
        let url = url::Url::parse(&built).unwrap();
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let names: Vec<&str> = pairs.iter().map(|(n, _)| n.as_str()).collect();
        let mut expected = vec!["appid", "redirect_uri", "response_type", "scope", "state"];
        if force_popup {
            expected.push("forcePopup");
        }
        if connect_redirect {
            expected.push("connect_redirect");
        }
        prop_assert_eq!(names, expected);
        prop_assert_eq!(&pairs[0].1, &appid);
        prop_assert_eq!(&pairs[1].1, &redirect_uri);
        prop_assert_eq!(pairs[2].1.as_str(), "code");
        prop_assert_eq!(pairs[3].1.as_str(), scope.as_str());
        prop_assert_eq!(&pairs[4].1, &state);
    }

    /// Push signatures: the right one is accepted (either hex case), any
    /// other string is refused.
    #[test]
    fn push_signature_check_accepts_exactly_the_valid_signature(
        token in "[A-Za-z0-9]{3,32}",
        nonce in "[A-Za-z0-9]{0,32}",
        offset in -250i64..250,
        other in "[0-9a-fA-F]{0,41}",
        position in any::<prop::sample::Index>(),
    ) {
        let now = 1_800_000_000u64;
        let timestamp = (now as i64 + offset).to_string();
        let secret = Secret::new(token.clone());
        let valid = push::signature(&[&token, &timestamp, &nonce]);
        let in_window = offset.unsigned_abs() <= push::TIMESTAMP_WINDOW_SECS;
        prop_assert_eq!(push::verify(&secret, &timestamp, &nonce, &valid, now).is_ok(), in_window);
        prop_assert_eq!(
            push::verify(&secret, &timestamp, &nonce, &valid.to_ascii_uppercase(), now).is_ok(),
            in_window
        );
        if other.to_ascii_lowercase() != valid {
            prop_assert!(push::verify(&secret, &timestamp, &nonce, &other, now).is_err());
        }
        let mut bytes = valid.clone().into_bytes();
        let i = position.index(bytes.len());
        bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
        let near_miss = String::from_utf8(bytes).unwrap();
        prop_assert!(push::verify(&secret, &timestamp, &nonce, &near_miss, now).is_err());
    }
}
