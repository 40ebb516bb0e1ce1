//! Logged-out sessions. A session cookie is sealed, not looked up, so a
//! copy of it would pass after its logout; each gate keeps the session ids
//! logged out before their cookie's end and refuses them. With a shared
//! store the logouts of every instance reach every other through Redis
//! (a sorted set scored by the logout time in ms, read every 500 ms by
//! [`crate::Gate::sync_revocations`]), never on the request path.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::expiring::ExpiringMap;

/// Most logged-out sessions remembered; past it the least used go.
pub const REVOCATIONS_CAPACITY: usize = 100_000;

/// Session ids logged out, each until its cookie's end (unix seconds),
/// kept as keyed 64-bit hashes.
#[derive(Debug)]
pub struct Revocations {
    hasher: std::hash::RandomState,
    until: ExpiringMap<u64, ()>,
    /// Lets the request path skip the map while nobody has logged out.
    any: AtomicBool,
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations {
            hasher: std::hash::RandomState::new(),
            until: ExpiringMap::new(REVOCATIONS_CAPACITY),
            any: AtomicBool::new(false),
        }
    }
}

impl Revocations {
    /// Refuses `sid` until `until` (unix seconds).
    pub fn revoke(&self, sid: &str, until: u64, now: u64) {
        if until <= now {
            return;
        }
        let sid = std::hash::BuildHasher::hash_one(&self.hasher, sid);
        self.until.insert(sid, (), until);
        self.any.store(true, Ordering::Relaxed);
    }

    /// Whether `sid` was logged out and its cookie has not ended at `now`.
    pub fn is_revoked(&self, sid: &str, now: u64) -> bool {
        if !self.any.load(Ordering::Relaxed) {
            return false;
        }
        let sid = std::hash::BuildHasher::hash_one(&self.hasher, sid);
        self.until.get(&sid, now).is_some()
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
