//! The one in-memory map behind everything a gate remembers for a while
//! (used states and codes, push nonces, scenes, logouts, single-flight
//! outcomes, the memory token store): each entry lives until its own end
//! (a time in the caller's unit: unix seconds, or ms), and the map holds
//! at most its capacity. Past it, the entries nearest their end go first
//! (ended ones before live ones), a tenth at a time, so memory stays bounded
//! under any flood and a binding just made (a state's code, a push's
//! nonce) is never the one dropped.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;

/// A bounded map whose entries expire, safe to share between threads.
/// Every call is atomic for its key.
pub struct ExpiringMap<K, V> {
    map: RwLock<HashMap<K, (u64, V)>>,
    capacity: usize,
}

impl<K, V> std::fmt::Debug for ExpiringMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpiringMap")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone, V: Clone> ExpiringMap<K, V> {
    /// A map holding at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        ExpiringMap {
            map: RwLock::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<K, (u64, V)>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<K, (u64, V)>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes room for one more entry: the tenth nearest its end goes.
    fn make_room(map: &mut HashMap<K, (u64, V)>, capacity: usize) {
        if map.len() < capacity {
            return;
        }
        let mut ends: Vec<u64> = map.values().map(|(end, _)| *end).collect();
        let cut = (map.len() / 10).max(1).min(ends.len() - 1);
        let (_, threshold, _) = ends.select_nth_unstable(cut);
        let threshold = *threshold;
        map.retain(|_, (end, _)| *end > threshold);
    }

    /// The value at `key` if it has not ended at `now`.
    pub fn get<Q>(&self, key: &Q, now: u64) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.read()
            .get(key)
            .filter(|(end, _)| *end > now)
            .map(|(_, v)| v.clone())
    }

    /// Sets `key` to `value` until `until`.
    pub fn insert(&self, key: K, value: V, until: u64) {
        let mut map = self.write();
        if !map.contains_key(&key) {
            Self::make_room(&mut map, self.capacity);
        }
        map.insert(key, (until, value));
    }

    /// Forgets `key`.
    pub fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.write().remove(key);
    }

    /// The live value at `key`, or, when there is none, `value` stored
    /// until `until` and `None` returned: one caller wins a first use.
    pub fn get_or_insert<Q>(&self, key: &Q, value: V, now: u64, until: u64) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut map = self.write();
        if let Some((end, found)) = map.get(key) {
            if *end > now {
                return Some(found.clone());
            }
        } else {
            Self::make_room(&mut map, self.capacity);
        }
        map.insert(key.to_owned(), (until, value));
        None
    }

    /// Runs `change` on the live value at `key` (its end kept); `None`
    /// when there is none.
    pub fn update<Q, T>(&self, key: &Q, now: u64, change: impl FnOnce(&mut V) -> T) -> Option<T>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut map = self.write();
        match map.get_mut(key) {
            Some((end, v)) if *end > now => Some(change(v)),
            _ => None,
        }
    }

    /// How many entries are held (ended ones included until pushed out).
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
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
        assert!(map.len() <= 1_000, "{}", map.len());
    }

    #[test]
    fn a_full_map_drops_the_entries_nearest_their_end_never_the_newest() {
        let map: ExpiringMap<u64, u64> = ExpiringMap::new(100);
        for i in 0..100 {
            map.insert(i, i, 1_000 + i);
        }
        // Full: the new entry stays, the soonest-ending go.
        assert_eq!(map.get_or_insert(&500, 7, 0, 5_000), None);
        assert_eq!(map.get_or_insert(&500, 8, 0, 5_000), Some(7));
        assert_eq!(map.get(&0, 0), None, "the nearest its end went");
        assert_eq!(map.get(&99, 0), Some(99));
        for i in 1_000..50_000 {
            assert_eq!(map.get_or_insert(&i, i, 0, u64::MAX), None);
            assert_eq!(map.get_or_insert(&i, 0, 0, u64::MAX), Some(i), "kept right after");
        }
    }
}
