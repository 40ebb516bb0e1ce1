//! The embedded, persistent store of a single gateway or host (`[store] url
//! = "file:PATH"`, the binary's default): one `redb` database file holding
//! what must outlive the process — logged-out sessions, each session's
//! tokens, pending logins and scenes, used states and push nonces. A
//! restart loses no login, no token and no logout (docs/security.md).
//!
//! The file is opened by one process at a time (redb locks it); several
//! processes or machines share Redis instead. Every write is committed
//! durably before the call returns.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::kv::KeyValue;
use super::{CoordinationError, Logout};

/// Key → (expiry, unix ms; value).
const VALUES: TableDefinition<&str, (u64, &str)> = TableDefinition::new("values");
/// (sorted set, score, member) → ().
const SORTED: TableDefinition<(&str, u64, &str), ()> = TableDefinition::new("sorted");

/// Expired values are swept every this many writes.
const SWEEP_EVERY: u64 = 1024;

/// A store in one database file. `Debug` shows the path only.
pub struct FileStore {
    db: Database,
    path: PathBuf,
    writes: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn failed(e: impl std::fmt::Display) -> CoordinationError {
    crate::metrics::STORE_ERRORS.inc();
    CoordinationError::File(e.to_string())
}

impl FileStore {
    /// Opens (or creates) the database at `path`, creating its directory.
    ///
    /// Errors: a message naming the path when the directory or the file
    /// can't be created or written, the file is not a store (corrupt or
    /// another format), or another process has it open.
    pub fn open(path: &Path) -> Result<FileStore, CoordinationError> {
        let named =
            |e: &dyn std::fmt::Display| CoordinationError::File(format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| named(&e))?;
        }
        let db = Database::create(path).map_err(|e| named(&e))?;
        let tx = db.begin_write().map_err(|e| named(&e))?;
        tx.open_table(VALUES).map_err(|e| named(&e))?;
        tx.open_table(SORTED).map_err(|e| named(&e))?;
        tx.commit().map_err(|e| named(&e))?;
        Ok(FileStore {
            db,
            path: path.to_owned(),
            writes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The logouts recorded after `after_ms` (unix ms), read without a
    /// runtime (at start-up, before the first request).
    ///
    /// Errors: [`CoordinationError`] when the file can't be read.
    pub fn logouts_after_now(&self, after_ms: u64) -> Result<Vec<Logout>, CoordinationError> {
        self.logouts_under(super::kv::keys::LOGOUTS, after_ms)
    }

    /// The logouts of the sorted set `key` after `after_ms` (a site's, under its prefix).
    pub(super) fn logouts_under(
        &self,
        key: &str,
        after_ms: u64,
    ) -> Result<Vec<Logout>, CoordinationError> {
        let members = self.sorted_after(key, after_ms)?;
        Ok(super::kv::logouts_from(members))
    }

    fn sorted_after(&self, key: &str, after: u64) -> Result<Vec<(String, u64)>, CoordinationError> {
        let read = || -> Result<Vec<(String, u64)>, redb::Error> {
            let tx = self.db.begin_read()?;
            let table = tx.open_table(SORTED)?;
            let mut out = Vec::new();
            for entry in table.range((key, after.saturating_add(1), "")..)? {
                let (k, _) = entry?;
                let (set, score, member) = k.value();
                if set != key || out.len() >= 10_000 {
                    break;
                }
                out.push((member.to_owned(), score));
            }
            Ok(out)
        };
        read().map_err(failed)
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `change` on the values table in one durable write transaction.
    fn write<T>(
        &self,
        change: impl FnOnce(&mut redb::Table<&str, (u64, &str)>, u64) -> Result<T, redb::Error>,
    ) -> Result<T, CoordinationError> {
        let now = now_ms();
        let run = || -> Result<T, redb::Error> {
            let tx = self.db.begin_write()?;
            let answer = {
                let mut table = tx.open_table(VALUES)?;
                let answer = change(&mut table, now)?;
                let writes = self
                    .writes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if writes % SWEEP_EVERY == SWEEP_EVERY - 1 {
                    table.retain(|_, (expires, _)| expires > now)?;
                }
                answer
            };
            tx.commit()?;
            Ok(answer)
        };
        run().map_err(failed)
    }

    /// The live value at `key` inside a write transaction.
    fn live(
        table: &redb::Table<&str, (u64, &str)>,
        key: &str,
        now: u64,
    ) -> Result<Option<(u64, String)>, redb::Error> {
        Ok(table.get(key)?.and_then(|guard| {
            let (expires, value) = guard.value();
            (expires > now).then(|| (expires, value.to_owned()))
        }))
    }
}

fn expiry(now: u64, ttl: Duration) -> u64 {
    now + (ttl.as_millis() as u64).max(1)
}

#[async_trait]
impl KeyValue for FileStore {
    async fn kv_get(&self, key: &str) -> Result<Option<String>, CoordinationError> {
        let read = || -> Result<Option<String>, redb::Error> {
            let tx = self.db.begin_read()?;
            let table = tx.open_table(VALUES)?;
            let now = now_ms();
            Ok(table.get(key)?.and_then(|guard| {
                let (expires, value) = guard.value();
                (expires > now).then(|| value.to_owned())
            }))
        };
        read().map_err(failed)
    }

    async fn kv_set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), CoordinationError> {
        self.write(|table, now| {
            table.insert(key, (expiry(now, ttl), value))?;
            Ok(())
        })
    }

    async fn kv_set_nx(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, CoordinationError> {
        self.write(|table, now| {
            if Self::live(table, key, now)?.is_some() {
                return Ok(false);
            }
            table.insert(key, (expiry(now, ttl), value))?;
            Ok(true)
        })
    }

    async fn kv_cas(
        &self,
        key: &str,
        expected: &str,
        new: &str,
    ) -> Result<bool, CoordinationError> {
        self.write(|table, now| match Self::live(table, key, now)? {
            Some((expires, value)) if value == expected => {
                table.insert(key, (expires, new))?;
                Ok(true)
            }
            _ => Ok(false),
        })
    }

    async fn kv_claim_scanned(&self, key: &str) -> Result<Option<String>, CoordinationError> {
        // Pending scenes are polled every 100 ms: read, and write only to claim.
        let seen = self.kv_get(key).await?;
        if !seen.as_deref().is_some_and(|v| v.starts_with("s:")) {
            return Ok(seen);
        }
        self.write(|table, now| {
            let found = Self::live(table, key, now)?;
            if let Some((expires, value)) = &found {
                if value.starts_with("s:") {
                    table.insert(key, (*expires, "c"))?;
                }
            }
            Ok(found.map(|(_, value)| value))
        })
    }

    async fn kv_zadd(&self, key: &str, score: u64, member: &str) -> Result<(), CoordinationError> {
        let run = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            tx.open_table(SORTED)?.insert((key, score, member), ())?;
            tx.commit()?;
            Ok(())
        };
        run().map_err(failed)
    }

    async fn kv_zrange_after(
        &self,
        key: &str,
        after: u64,
    ) -> Result<Vec<(String, u64)>, CoordinationError> {
        self.sorted_after(key, after)
    }

    async fn kv_zremove_before(&self, key: &str, before: u64) -> Result<(), CoordinationError> {
        let run = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            {
                let mut table = tx.open_table(SORTED)?;
                table.retain_in((key, 0, "")..(key, before, ""), |_, _| false)?;
            }
            tx.commit()?;
            Ok(())
        };
        run().map_err(failed)
    }

    async fn kv_ping(&self) -> Result<(), CoordinationError> {
        self.db.begin_read().map(|_| ()).map_err(failed)
    }

    async fn kv_delete(&self, key: &str) -> Result<(), CoordinationError> {
        self.write(|table, _| {
            table.remove(key)?;
            Ok(())
        })
    }

    fn is_multi_process(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const SCENE_PENDING: &str = "p";

    fn scratch() -> PathBuf {
        std::env::temp_dir().join(format!(
            "wechat-file-store-{}-{}.redb",
            std::process::id(),
            crate::state::new_state()
        ))
    }

    #[tokio::test]
    async fn values_scenes_and_sorted_sets_survive_a_reopen() {
        let path = scratch();
        {
            let store = FileStore::open(&path).unwrap();
            let long = Duration::from_secs(60);
            store.kv_set("a", "1", long).await.unwrap();
            assert!(store.kv_set_nx("b", "x", long).await.unwrap());
            assert!(!store.kv_set_nx("b", "y", long).await.unwrap());
            store
                .kv_set("gone", "1", Duration::from_millis(1))
                .await
                .unwrap();
            store.kv_set("scene:s", SCENE_PENDING, long).await.unwrap();
            assert!(store
                .kv_cas("scene:s", SCENE_PENDING, "s:oUser")
                .await
                .unwrap());
            assert!(!store
                .kv_cas("scene:s", SCENE_PENDING, "s:oOther")
                .await
                .unwrap());
            store.kv_zadd("revoked", 10, "sid1 99").await.unwrap();
            store.kv_zadd("revoked", 20, "sid2 99").await.unwrap();
            store.kv_zadd("other", 30, "x").await.unwrap();
        }
        let store = FileStore::open(&path).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(store.kv_get("a").await.unwrap().as_deref(), Some("1"));
        assert_eq!(store.kv_get("b").await.unwrap().as_deref(), Some("x"));
        assert_eq!(store.kv_get("gone").await.unwrap(), None);
        assert!(store
            .kv_set_nx("gone", "again", Duration::from_secs(1))
            .await
            .unwrap());
        assert_eq!(
            store.kv_claim_scanned("scene:s").await.unwrap().as_deref(),
            Some("s:oUser")
        );
        assert_eq!(
            store.kv_claim_scanned("scene:s").await.unwrap().as_deref(),
            Some("c")
        );
        assert_eq!(
            store.kv_zrange_after("revoked", 10).await.unwrap(),
            vec![("sid2 99".to_owned(), 20)]
        );
        store.kv_zremove_before("revoked", 15).await.unwrap();
        assert_eq!(store.kv_zrange_after("revoked", 0).await.unwrap().len(), 1);
        assert_eq!(store.kv_zrange_after("other", 0).await.unwrap().len(), 1);
        drop(store);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_corrupt_or_unwritable_file_is_an_error_naming_it() {
        let path = scratch();
        std::fs::write(&path, b"this is not a database, just some text on disk").unwrap();
        let e = FileStore::open(&path).unwrap_err();
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        std::fs::remove_file(&path).unwrap();
        let e = FileStore::open(Path::new("/proc/no-such-dir/store.redb")).unwrap_err();
        assert!(
            e.to_string().contains("/proc/no-such-dir/store.redb"),
            "{e}"
        );
    }
}
