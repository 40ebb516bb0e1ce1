//! Login state shared by several gateways and hosts, in Redis (`[store] url
//! = "redis://…"`): the session tokens, each code's exchange (one per code
//! across every instance, its outcome kept for the code's 300 s), and each
//! state's single use. The decision for a request that carries a session
//! never touches Redis, so signed-in users keep passing while it is down;
//! logins then get a clear 503 page until it is back.
//!
//! Keys start with `[store] key_prefix`; codes and states appear in keys
//! only as SHA-1 hashes, tokens only in values.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue};
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::config::StoreConfig;
use crate::secret::{AccessToken, RefreshToken};
use crate::store::{StoreError, StoredTokens, TokenStore};

/// After a failed connection, the next attempt waits this long, so a Redis
/// outage costs each login one fast failure, not a connect timeout.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// A Redis connection with the gate's key prefix and timeouts. It connects
/// on first use and again after any failure; an outage is logged once when
/// it starts and once when it ends, never per request.
pub struct RedisStore {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    prefix: String,
    timeout: Duration,
    down: AtomicBool,
    /// When the last connection attempt failed, in ms since `started`.
    failed_at_ms: AtomicU64,
    started: Instant,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for `[store]`; `None` when it says `memory`.
    ///
    /// Errors: [`StoreError`] when the URL can't be used (checked at config
    /// load already, so only for a hand-built config).
    pub fn from_config(config: &StoreConfig) -> Result<Option<RedisStore>, StoreError> {
        let Some(url) = &config.url else {
            return Ok(None);
        };
        let client = redis::Client::open(url.expose())
            .map_err(|_| StoreError("[store] url is not a usable Redis URL".into()))?;
        Ok(Some(RedisStore {
            client,
            connection: tokio::sync::Mutex::new(None),
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            down: AtomicBool::new(false),
            failed_at_ms: AtomicU64::new(0),
            started: Instant::now(),
        }))
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let since_failure = (self.started.elapsed().as_millis() as u64)
            .saturating_sub(self.failed_at_ms.load(Ordering::Relaxed));
        if self.down.load(Ordering::Relaxed) && since_failure < RECONNECT_PAUSE.as_millis() as u64 {
            return Err(StoreError("Redis is unreachable".into()));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        match self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(c) => {
                *slot = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                self.failed_at_ms
                    .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
                Err(self.failed(&e))
            }
        }
    }

    fn failed(&self, e: &redis::RedisError) -> StoreError {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::error!(
                kind = ?e.kind(),
                "Redis ([store] url) is unreachable: new logins get a 503 page until it is back; \
                 signed-in users keep passing"
            );
        }
        StoreError("Redis is unreachable".into())
    }

    async fn run<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut c = self.connection().await?;
        match cmd.query_async::<T>(&mut c).await {
            Ok(v) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::warn!("Redis ([store] url) is reachable again");
                }
                Ok(v)
            }
            Err(e) => {
                *self.connection.lock().await = None;
                self.failed_at_ms
                    .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
                Err(self.failed(&e))
            }
        }
    }

    /// The value at `key`, if any.
    ///
    /// Errors: [`StoreError`] when Redis can't be reached in time.
    pub async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.run(redis::cmd("GET").arg(self.key(key))).await
    }

    /// Sets `key` to `value` for `ttl` (whole milliseconds).
    ///
    /// Errors: [`StoreError`].
    pub async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        self.run::<()>(
            redis::cmd("SET")
                .arg(self.key(key))
                .arg(value)
                .arg("PX")
                .arg(ttl.as_millis().max(1) as u64),
        )
        .await
    }

    /// Sets `key` to `value` for `ttl` only when it is absent; `true` when
    /// this call set it (a lock taken, a first use claimed).
    ///
    /// Errors: [`StoreError`].
    pub async fn set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let set: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(self.key(key))
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis().max(1) as u64),
            )
            .await?;
        Ok(set.is_some())
    }

    /// Runs a Lua `script` on one `key` with one argument; its string
    /// answer (Redis runs it atomically).
    ///
    /// Errors: [`StoreError`].
    pub async fn eval(
        &self,
        script: &str,
        key: &str,
        arg: &str,
    ) -> Result<Option<String>, StoreError> {
        self.run(
            redis::cmd("EVAL")
                .arg(script)
                .arg(1)
                .arg(self.key(key))
                .arg(arg),
        )
        .await
    }

    /// Adds `member` to the sorted set `key` with `score`.
    ///
    /// Errors: [`StoreError`].
    pub async fn zadd(&self, key: &str, score: u64, member: &str) -> Result<(), StoreError> {
        self.run::<()>(redis::cmd("ZADD").arg(self.key(key)).arg(score).arg(member))
            .await
    }

    /// The members of the sorted set `key` scored above `after`, with
    /// their scores, lowest first (at most 10,000).
    ///
    /// Errors: [`StoreError`].
    pub async fn zrange_after(
        &self,
        key: &str,
        after: u64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.run(
            redis::cmd("ZRANGE")
                .arg(self.key(key))
                .arg(format!("({after}"))
                .arg("+inf")
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(0)
                .arg(10_000)
                .arg("WITHSCORES"),
        )
        .await
    }

    /// Removes the members of the sorted set `key` scored below `before`.
    ///
    /// Errors: [`StoreError`].
    pub async fn zremove_before(&self, key: &str, before: u64) -> Result<(), StoreError> {
        self.run::<()>(
            redis::cmd("ZREMRANGEBYSCORE")
                .arg(self.key(key))
                .arg("-inf")
                .arg(format!("({before}")),
        )
        .await
    }

    /// Deletes `key`.
    ///
    /// Errors: [`StoreError`].
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.run::<()>(redis::cmd("DEL").arg(self.key(key))).await
    }
}

/// A value that must not appear in a Redis key (a code, a state) as a key
/// part: its SHA-1, hex.
pub fn key_hash(value: &str) -> String {
    Sha1::digest(value.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Serialize, Deserialize)]
struct TokensRecord {
    a: String,
    ae: u64,
    r: String,
    re: u64,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[async_trait]
impl TokenStore for RedisStore {
    async fn put(&self, sid: &str, tokens: StoredTokens) -> Result<(), StoreError> {
        let ttl = tokens.refresh_expires_at.saturating_sub(now_unix()).max(1);
        let record = TokensRecord {
            a: tokens.access_token.expose().to_owned(),
            ae: tokens.access_expires_at,
            r: tokens.refresh_token.expose().to_owned(),
            re: tokens.refresh_expires_at,
        };
        let json = serde_json::to_string(&record).expect("tokens serialize");
        self.set(&format!("tokens:{sid}"), &json, Duration::from_secs(ttl))
            .await
    }

    async fn get(&self, sid: &str, now: u64) -> Result<Option<StoredTokens>, StoreError> {
        let Some(json) = RedisStore::get(self, &format!("tokens:{sid}")).await? else {
            return Ok(None);
        };
        let Ok(r) = serde_json::from_str::<TokensRecord>(&json) else {
            return Ok(None);
        };
        Ok((r.re > now).then(|| StoredTokens {
            access_token: AccessToken::new(r.a),
            access_expires_at: r.ae,
            refresh_token: RefreshToken::new(r.r),
            refresh_expires_at: r.re,
        }))
    }

    async fn remove(&self, sid: &str) -> Result<(), StoreError> {
        self.delete(&format!("tokens:{sid}")).await
    }
}
