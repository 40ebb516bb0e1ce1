//! Single-flight: concurrent calls with the same key share one execution,
//! and its result is kept for later calls for a while.
//!
//! Used for the code exchange, keyed by the code: a callback hit twice (WeChat
//! on Android, double clicks, refresh) is exchanged once and every duplicate
//! gets the same outcome, so 40163 "code been used" never reaches a user
//! (docs/protocol.md §1, pain points).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::expiring::ExpiringMap;

/// Keyed single-flight with a result cache of `ttl`, holding at most
/// `capacity` keys ([`ExpiringMap`]'s bound).
#[derive(Debug)]
pub struct SingleFlight<V> {
    /// Each key's run, until its end in ms since `started`.
    slots: ExpiringMap<String, Arc<OnceCell<V>>>,
    ttl: Duration,
    started: Instant,
}

impl<V: Clone> SingleFlight<V> {
    /// A single-flight whose results are kept `ttl` after the first call.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        SingleFlight {
            slots: ExpiringMap::new(capacity),
            ttl,
            started: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Runs `work` for `key` unless a run for it is under way (then waits for
    /// it) or finished within `ttl` (then reuses it). Returns the value and
    /// whether this call ran `work` itself. If the running caller is dropped,
    /// a waiting one takes over.
    pub async fn run<F, Fut>(&self, key: &str, work: F) -> (V, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let now = self.now_ms();
        let fresh = Arc::new(OnceCell::new());
        let until = now + self.ttl.as_millis() as u64;
        let cell = self
            .slots
            .get_or_insert(key, fresh.clone(), now, until)
            .unwrap_or(fresh);
        let mut ran = false;
        let value = cell
            .get_or_init(|| {
                ran = true;
                work()
            })
            .await
            .clone();
        (value, ran)
    }

    /// The finished result for `key`, if one is kept.
    pub fn peek(&self, key: &str) -> Option<V> {
        self.slots
            .get(key, self.now_ms())
            .and_then(|cell| cell.get().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_and_later_calls_share_one_run() {
        let flight = Arc::new(SingleFlight::new(Duration::from_secs(60), 10));
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (flight, runs) = (flight.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                flight
                    .run("code", || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        42
                    })
                    .await
            }));
        }
        let mut ran = 0;
        for t in tasks {
            let (v, r) = t.await.unwrap();
            assert_eq!(v, 42);
            ran += usize::from(r);
        }
        assert_eq!((runs.load(Ordering::SeqCst), ran), (1, 1));
        assert_eq!(flight.run("code", || async { 7 }).await, (42, false));
        assert_eq!(flight.peek("code"), Some(42));
        assert_eq!(flight.run("other", || async { 7 }).await, (7, true));
    }

    #[tokio::test]
    async fn results_expire_and_capacity_is_bounded() {
        let flight = SingleFlight::new(Duration::from_millis(30), 2);
        assert_eq!(flight.run("a", || async { 1 }).await, (1, true));
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(flight.peek("a"), None);
        assert_eq!(flight.run("a", || async { 2 }).await, (2, true));
        flight.run("b", || async { 3 }).await;
        flight.run("c", || async { 4 }).await;
        assert!(flight.slots.len() <= 3);
    }

    #[tokio::test]
    async fn a_dropped_runner_hands_over_to_a_waiter() {
        let flight = Arc::new(SingleFlight::new(Duration::from_secs(60), 10));
        let f1 = flight.clone();
        let first = tokio::spawn(async move {
            f1.run("k", || async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                1
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        first.abort();
        let v = tokio::time::timeout(Duration::from_secs(5), flight.run("k", || async { 2 })).await;
        assert_eq!(v.unwrap(), (2, true));
    }
}
