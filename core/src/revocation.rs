//! Logged-out sessions. A session cookie is sealed, not looked up, so a
//! copy of it would pass after its logout; each gate keeps the session ids
//! logged out before their cookie's end and refuses them. With a shared
//! store the logouts of every instance reach every other through Redis
//! (a sorted set scored by the logout time in ms, read every 500 ms by
//! [`crate::Gate::sync_revocations`]), never on the request path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

/// Most logged-out sessions remembered; past it those nearest their end go.
pub const REVOCATIONS_CAPACITY: usize = 100_000;

/// Session ids logged out, each until its cookie's end (unix seconds),
/// kept as keyed 64-bit hashes (about 30 bytes per logout).
#[derive(Debug, Default)]
pub struct Revocations {
    hasher: std::hash::RandomState,
    until: RwLock<HashMap<u64, u64>>,
    /// Lets the request path skip the lock while nobody has logged out.
    count: AtomicUsize,
}

impl Revocations {
    /// Refuses `sid` until `until` (unix seconds).
    pub fn revoke(&self, sid: &str, until: u64, now: u64) {
        if until <= now {
            return;
        }
        let sid = std::hash::BuildHasher::hash_one(&self.hasher, sid);
        let mut map = self.until.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= REVOCATIONS_CAPACITY {
            map.retain(|_, end| *end > now);
            while map.len() >= REVOCATIONS_CAPACITY {
                let soonest = map
                    .iter()
                    .min_by_key(|(_, end)| **end)
                    .map(|(k, _)| *k)
                    .expect("non-empty");
                map.remove(&soonest);
            }
        }
        map.insert(sid, until);
        self.count.store(map.len(), Ordering::Relaxed);
    }

    /// Whether `sid` was logged out and its cookie has not ended at `now`.
    pub fn is_revoked(&self, sid: &str, now: u64) -> bool {
        if self.count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let sid = std::hash::BuildHasher::hash_one(&self.hasher, sid);
        let map = self.until.read().unwrap_or_else(|e| e.into_inner());
        map.get(&sid).is_some_and(|end| *end > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_session_is_refused_until_its_end() {
        let r = Revocations::default();
        assert!(!r.is_revoked("a", 100));
        r.revoke("a", 200, 100);
        assert!(r.is_revoked("a", 150));
        assert!(!r.is_revoked("a", 200));
        assert!(!r.is_revoked("b", 150));
        r.revoke("c", 50, 100);
        assert!(!r.is_revoked("c", 100), "already ended");
    }
}
