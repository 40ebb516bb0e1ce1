//! The Official Account's one push URL shared with the application
//! (`[wechat] push_forward`), over real HTTP in plain and safe mode: a text
//! message and a menu click reach the application as WeChat sent them and
//! its reply reaches WeChat (the emulator checks it), a login scan stays
//! the gate's, a slow application still gets WeChat an answer within 5 s,
//! and WeChat's retries are forwarded once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wechat_e2e::{Browser, Stack, DESKTOP_UA};

/// What the application's push handler got: (query, body).
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// The application's push handler on a loopback port: records each push,
/// waits `delay` (shared, changeable), and answers a text reply to
/// `openid`, sealed for safe mode when `safe_mode` (as an application
/// with the account's EncodingAESKey does). Its URL.
async fn app_handler(
    delay: Arc<Mutex<Duration>>,
    openid: String,
    safe_mode: bool,
) -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/wechat", listener.local_addr().unwrap());
    let received: Received = Arc::default();
    let seen = received.clone();
    tokio::spawn(async move {
        for _ in 0..200 {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let (seen, delay, openid) = (seen.clone(), *delay.lock().unwrap(), openid.clone());
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&raw);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            break;
                        }
                    }
                }
                let text = String::from_utf8_lossy(&raw).into_owned();
                let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
                let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let query = target
                    .split_once('?')
                    .map(|(_, q)| q.to_owned())
                    .unwrap_or_default();
                seen.lock().unwrap().push((query, body.to_owned()));
                tokio::time::sleep(delay).await;
                let reply = format!(
                    "<xml><ToUserName><![CDATA[{openid}]]></ToUserName><FromUserName><![CDATA[gh_app]]></FromUserName>\
<CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[the app says hello]]></Content></xml>"
                );
                let answer = if safe_mode {
                    use wechat_oauth::secret::Secret;
                    wechat_oauth::push::seal_safe_mode(
                        &reply,
                        &Secret::new(wechat_e2e::PUSH_TOKEN.to_owned()),
                        &Secret::new(wechat_e2e::ENCODING_AES_KEY.to_owned()),
                        "wx1234567890abcdef",
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_secs(),
                        "appnonce1",
                    )
                    .unwrap()
                } else {
                    reply
                };
                let _ = stream
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                            answer.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (url, received)
}

/// The emulator pushes `xml` to the gateway as WeChat would (signed,
/// encrypted in safe mode): its report (`status`, `body`, `reply`,
/// `attempts`, `elapsed_ms`).
async fn push(stack: &Stack, xml: &str, safe_mode: bool) -> serde_json::Value {
    let body = json!({"scene": "none", "raw_body": xml, "safe_mode": safe_mode});
    wechat_e2e::emulator_post(&stack.emulator_url, "scan", body).await
}

fn message(openid: &str, create_time: u64, inner: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_wx1234567890abcdef]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>\
<CreateTime>{create_time}</CreateTime>{inner}</xml>"
    )
}

#[tokio::test]
async fn one_push_url_serves_the_application_and_the_gate_in_plain_and_safe_mode() {
    for safe_mode in [false, true] {
        let mut stack = Stack::start_desktop_with("scene_qr", safe_mode, "").await;
        let openid = stack.emulator("user").await["openid"]
            .as_str()
            .unwrap()
            .to_owned();
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let (url, received) = app_handler(delay.clone(), openid.clone(), safe_mode).await;
        stack.set_gateway_env("WECHAT_GATEWAY__WECHAT__PUSH_FORWARD", url.as_str());
        stack.restart_gateway().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();

        // A text message: to the application, its reply to WeChat.
        let text = message(
            &openid,
            now,
            "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hello-from-the-phone]]></Content><MsgId>1001</MsgId>",
        );
        let answer = push(&stack, &text, safe_mode).await;
        assert_eq!(answer["status"], 200, "{answer}");
        let (query, body) = received.lock().unwrap().last().unwrap().clone();
        assert!(
            query.contains("signature=") && query.contains("nonce="),
            "{query}"
        );
        if safe_mode {
            assert!(
                query.contains("encrypt_type=aes") && query.contains("msg_signature="),
                "{query}"
            );
            assert!(
                body.contains("<Encrypt>") && !body.contains("hello-from-the-phone"),
                "still encrypted: {body}"
            );
        } else {
            assert!(
                body.contains("<Content><![CDATA[hello-from-the-phone]]></Content>"),
                "{body}"
            );
        }
        // The application's reply, checked (decrypted in safe mode) by WeChat.
        assert_eq!(answer["reply"]["content"], "the app says hello", "{answer}");
        // A forged push (wrong signature) is refused and never forwarded.
        let forged = json!({"scene": "none", "raw_body": text, "safe_mode": safe_mode, "bad_signature": true});
        let refused = wechat_e2e::emulator_post(&stack.emulator_url, "scan", forged).await;
        assert_eq!(refused["status"], 401, "{refused}");
        assert_eq!(received.lock().unwrap().len(), 1, "not forwarded");
        // A menu click: to the application too.
        let click = message(
            &openid,
            now + 1,
            "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[CLICK]]></Event><EventKey><![CDATA[MENU_ORDERS]]></EventKey>",
        );
        assert_eq!(push(&stack, &click, safe_mode).await["status"], 200);
        assert_eq!(received.lock().unwrap().len(), 2);
        if !safe_mode {
            assert!(received.lock().unwrap()[1].1.contains("MENU_ORDERS"));
        }

        // WeChat's retry of the text (the same message again): forwarded once,
        // answered as the first.
        let again = push(&stack, &text, safe_mode).await;
        assert_eq!(again["status"], 200);
        assert_eq!(
            received.lock().unwrap().len(),
            2,
            "a retry is not forwarded again"
        );
        assert_eq!(again["body"], answer["body"]);

        // A login scan: the gate's, not forwarded; the browser logs in.
        let mut browser = Browser::new(DESKTOP_UA);
        let created = browser
            .get_with(
                &stack.url("/_wechat/qr/new?rd=%2Fecho"),
                &[("Accept", "application/json")],
            )
            .await;
        let q = created.json();
        let body = json!({"ticket": q["ticket"], "safe_mode": safe_mode});
        let scanned = wechat_e2e::emulator_post(&stack.emulator_url, "scan", body).await;
        assert_eq!(scanned["status"], 200, "{scanned}");
        assert_eq!(
            received.lock().unwrap().len(),
            2,
            "the gate's own scan stays the gate's"
        );
        let status = browser
            .get(&stack.url(&format!(
                "/_wechat/qr/status?scene={}",
                q["scene"].as_str().unwrap()
            )))
            .await;
        assert_eq!(status.json()["status"], "confirmed", "{}", status.body);

        // A slow application: WeChat still gets `success` within 5 s, once.
        *delay.lock().unwrap() = Duration::from_millis(4600);
        let slow = message(
            &openid,
            now + 2,
            "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[slow]]></Content><MsgId>1002</MsgId>",
        );
        let answer = push(&stack, &slow, safe_mode).await;
        assert_eq!(
            (answer["status"].clone(), answer["body"].clone()),
            (json!(200), json!("success")),
            "{answer}"
        );
        assert_eq!(answer["attempts"], 1, "{answer}");
        assert!(answer["elapsed_ms"].as_u64().unwrap() < 5000, "{answer}");
        assert!(stack.gateway_log().contains("too slow"), "logged");
        *delay.lock().unwrap() = Duration::ZERO;
    }
}
