//! The one in-memory map behind everything a gate remembers for a while
//! (used states and codes, push nonces, scenes, logouts, single-flight
//! outcomes, the memory token store): each entry lives until its own end
//! (unix seconds), and the map holds at most its capacity, past which
//! quick_cache's S3-FIFO eviction drops the entries least used first, so
//! memory stays bounded under any flood.

use std::hash::Hash;

use quick_cache::sync::{Cache, EntryAction, EntryResult};
use quick_cache::Equivalent;

/// A bounded map whose entries expire, safe to share between threads.
/// Every call is atomic for its key.
pub struct ExpiringMap<K, V> {
    cache: Cache<K, (u64, V)>,
}

impl<K: Eq + Hash + Clone, V: Clone> std::fmt::Debug for ExpiringMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpiringMap")
            .field("len", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone, V: Clone> ExpiringMap<K, V> {
    /// A map holding at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        ExpiringMap {
            cache: Cache::new(capacity.max(1)),
        }
    }

    /// The value at `key` if it has not ended at `now`.
    pub fn get<Q>(&self, key: &Q, now: u64) -> Option<V>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.cache
            .get(key)
            .and_then(|(until, v)| (until > now).then_some(v))
    }

    /// Sets `key` to `value` until `until` (unix seconds).
    pub fn insert(&self, key: K, value: V, until: u64) {
        self.cache.insert(key, (until, value));
    }

    /// Forgets `key`.
    pub fn remove<Q>(&self, key: &Q)
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.cache.remove(key);
    }

    /// The live value at `key`, or, when there is none, `value` stored
    /// until `until` and `None` returned: one caller wins a first use.
    pub fn get_or_insert<Q>(&self, key: &Q, value: V, now: u64, until: u64) -> Option<V>
    where
        Q: Hash + Equivalent<K> + ToOwned<Owned = K> + ?Sized,
    {
        let found = self.cache.entry(key, None, |_, (end, v)| {
            if *end > now {
                EntryAction::Retain(v.clone())
            } else {
                EntryAction::ReplaceWithGuard
            }
        });
        match found {
            EntryResult::Retained(v) => Some(v),
            EntryResult::Vacant(guard) | EntryResult::Replaced(guard, _) => {
                let _ = guard.insert((until, value));
                None
            }
            EntryResult::Removed(..) | EntryResult::Timeout => None,
        }
    }

    /// Runs `change` on the live value at `key` (its end kept); `None`
    /// when there is none.
    pub fn update<Q, T>(&self, key: &Q, now: u64, change: impl FnOnce(&mut V) -> T) -> Option<T>
    where
        Q: Hash + Equivalent<K> + ToOwned<Owned = K> + ?Sized,
    {
        let found = self.cache.entry(key, None, |_, (end, v)| {
            if *end > now {
                EntryAction::Retain(Some(change(v)))
            } else {
                EntryAction::Retain(None)
            }
        });
        match found {
            EntryResult::Retained(t) => t,
            // Nothing was there: leave nothing behind.
            EntryResult::Vacant(_) | EntryResult::Replaced(..) => None,
            EntryResult::Removed(..) | EntryResult::Timeout => None,
        }
    }

    /// How many entries are held (ended ones included until evicted).
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_until_their_end_and_first_use_wins_once() {
        let map: ExpiringMap<String, u32> = ExpiringMap::new(100);
        assert_eq!(map.get_or_insert("a", 1, 10, 20), None);
        assert_eq!(map.get_or_insert("a", 2, 11, 20), Some(1));
        assert_eq!(map.get("a", 19), Some(1));
        assert_eq!(map.get("a", 20), None);
        assert_eq!(map.get_or_insert("a", 3, 20, 30), None, "after its end");
        assert_eq!(map.update("a", 21, |v| std::mem::replace(v, 4)), Some(3));
        assert_eq!(map.get("a", 22), Some(4));
        assert_eq!(map.update("b", 21, |v| *v), None);
        assert_eq!(map.get("b", 21), None, "an update adds nothing");
        map.remove("a");
        assert_eq!(map.get("a", 22), None);
    }

    #[test]
    fn a_flood_stays_within_the_capacity() {
        let map: ExpiringMap<u64, u64> = ExpiringMap::new(1_000);
        for i in 0..50_000 {
            map.insert(i, i, u64::MAX);
        }
        assert!(map.len() <= 1_100, "{}", map.len());
    }
}
