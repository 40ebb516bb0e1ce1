//! One contract, run against the in-process implementations (memory and
//! the state file); Redis runs the same flows in the scale tests.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::qr::{SceneRequester, SceneStatus};
use crate::secret::AccessToken;

fn scratch() -> PathBuf {
    std::env::temp_dir().join(format!(
        "wechat-coordination-{}-{}.redb",
        std::process::id(),
        crate::state::new_state()
    ))
}

async fn contract(c: &dyn Coordination) {
    // A state goes with one code, a code with one state.
    assert_eq!(c.claim_login("s1", "c1").await, Ok(LoginClaim::Claimed));
    assert_eq!(c.claim_login("s1", "c1").await, Ok(LoginClaim::Claimed));
    assert_eq!(c.claim_login("s1", "c2").await, Ok(LoginClaim::StateUsed));
    assert_eq!(c.claim_login("s2", "c1").await, Ok(LoginClaim::CodeBound));

    // One process: the caller's own single-flight is the lock.
    let hold = Duration::from_secs(1);
    assert_eq!(c.begin_exchange("c1", hold).await, Ok(Turn::Mine));
    c.finish_exchange("c1", None).await;
    let stale = AccessToken::new("AT");
    assert_eq!(c.begin_refresh("sid", &stale, hold).await, Ok(Turn::Mine));
    c.finish_refresh("sid").await;

    // A scene: pending → awaiting → scanned, claimed once.
    let by = SceneRequester::new(None, Some("Mozilla"), 5);
    let until = super::now_unix() + 60;
    c.create_scene("sc", until, Some(&by)).await.unwrap();
    assert_eq!(c.scene_status("sc").await, Ok(SceneStatus::Pending));
    assert_eq!(c.scene_requester("sc").await, Ok(Some(by)));
    let awaiting = SceneStatus::Awaiting("oA".into());
    let pending = SceneStatus::Pending;
    assert_eq!(c.scene_step("sc", &pending, &awaiting).await, Ok(true));
    assert_eq!(c.scene_step("sc", &pending, &awaiting).await, Ok(false));
    let waited = std::time::Instant::now();
    assert_eq!(
        c.watch_scene("sc", Duration::from_millis(300)).await,
        Ok(awaiting.clone()),
        "nothing changes: the watch ends at its limit"
    );
    assert!(waited.elapsed() >= Duration::from_millis(250));
    let scanned = SceneStatus::Scanned("oA".into());
    assert_eq!(c.scene_step("sc", &awaiting, &scanned).await, Ok(true));
    assert_eq!(c.watch_scene("sc", hold).await, Ok(scanned));
    assert_eq!(c.watch_scene("sc", hold).await, Ok(SceneStatus::Expired));
    assert_eq!(c.scene_status("nope").await, Ok(SceneStatus::Expired));
    assert_eq!(c.scene_requester("nope").await, Ok(None));

    // Pushes: a nonce pair goes with one body; a push key is new once.
    let window = Duration::from_secs(60);
    assert_eq!(c.bind_push_nonce("1 n", "b1", window).await, Ok(true));
    assert_eq!(c.bind_push_nonce("1 n", "b1", window).await, Ok(true));
    assert_eq!(c.bind_push_nonce("1 n", "b2", window).await, Ok(false));
    assert_eq!(c.first_push("k", window).await, Ok(true));
    assert_eq!(c.first_push("k", window).await, Ok(false));
    c.forget_push("k").await;
    assert_eq!(c.first_push("k", window).await, Ok(true));
    assert_eq!(c.ping().await, Ok(()));
    assert!(!c.is_shared());
}

#[tokio::test]
async fn memory_keeps_the_contract() {
    let memory = MemoryCoordination::default();
    contract(&memory).await;
    // Logouts are this process's own: nothing to tell.
    let logout = Logout {
        sid: "s".into(),
        until: u64::MAX,
        at_ms: 5,
    };
    memory.publish_logout(&logout).await.unwrap();
    assert_eq!(memory.logouts_after(0).await, Ok(vec![]));
}

#[tokio::test]
async fn the_state_file_keeps_the_contract_and_its_state_outlives_a_reopen() {
    let path = scratch();
    {
        let file = FileStore::open(&path).unwrap();
        contract(&file).await;
        for (sid, at_ms) in [("a", 10), ("b", 20)] {
            let logout = Logout {
                sid: sid.into(),
                until: u64::MAX,
                at_ms,
            };
            file.publish_logout(&logout).await.unwrap();
        }
        // A code's outcome is kept for its 300 s.
        assert_eq!(
            file.begin_exchange("c9", Duration::from_secs(1)).await,
            Ok(Turn::Mine)
        );
        file.finish_exchange("c9", Some("s")).await;
        let token = AccessToken::new("BT");
        assert_eq!(
            file.begin_shared_token(SharedToken::BasicToken, 0, Duration::from_secs(1))
                .await,
            Ok(Turn::Mine)
        );
        let end = super::now_unix() + 7200;
        file.finish_shared_token(SharedToken::BasicToken, Some((&token, end)))
            .await
            .unwrap();
        // Follow states are kept until their own end, for every instance.
        let now = super::now_unix();
        file.keep_follow_status("oFan", true, now + 600)
            .await
            .unwrap();
        file.keep_follow_status("oNot", false, now + 10)
            .await
            .unwrap();
        assert_eq!(file.follow_status("oUnknown").await, Ok(None));
    }
    let file = FileStore::open(&path).unwrap();
    assert_eq!(
        file.claim_login("s1", "c2").await,
        Ok(LoginClaim::StateUsed),
        "a used state stays used across a restart"
    );
    let logouts = file.logouts_after_now(10).unwrap();
    assert_eq!(logouts.len(), 1);
    assert_eq!((logouts[0].sid.as_str(), logouts[0].at_ms), ("b", 20));
    let now = super::now_unix();
    assert!(
        matches!(file.follow_status("oFan").await, Ok(Some((true, until))) if until >= now + 590)
    );
    assert!(
        matches!(file.follow_status("oNot").await, Ok(Some((false, until))) if until <= now + 10)
    );
    file.forget_logouts_before(15).await.unwrap();
    assert_eq!(file.logouts_after(0).await.unwrap().len(), 1);
    assert_eq!(
        file.begin_exchange("c9", Duration::from_secs(1)).await,
        Ok(Turn::Done("s".into()))
    );
    let now = super::now_unix();
    match file
        .begin_shared_token(SharedToken::BasicToken, now, Duration::from_secs(1))
        .await
    {
        Ok(Turn::Done((token, _))) => assert_eq!(token.expose(), "BT"),
        other => panic!("the kept token, got {other:?}"),
    }
    assert!(matches!(
        file.begin_shared_token(SharedToken::BasicToken, now + 8000, Duration::from_secs(1))
            .await,
        Ok(Turn::Mine)
    ));
    file.forget_shared_token(SharedToken::BasicToken, &AccessToken::new("BT"))
        .await;
    assert!(matches!(
        file.begin_shared_token(SharedToken::BasicToken, now, Duration::from_secs(1))
            .await,
        Ok(Turn::Mine)
    ));
    drop(file);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn errors_never_carry_a_value() {
    for e in [
        CoordinationError::Unreachable,
        CoordinationError::Stalled("code exchange"),
        CoordinationError::Unreadable("login outcome"),
    ] {
        assert!(!e.to_string().is_empty());
    }
}
