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

/// Where the connection comes from: one Redis, the master a set of
/// Sentinels names, or a Redis Cluster.
enum Source {
    Single(redis::Client),
    Sentinel {
        sentinels: tokio::sync::Mutex<redis::sentinel::Sentinel>,
        service: String,
        db: i64,
    },
    Cluster(redis::cluster::ClusterClient),
}

#[derive(Clone)]
enum Connection {
    Single(MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Connection {
    async fn query<T: FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Connection::Single(c) => cmd.query_async(c).await,
            Connection::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

/// A `redis+sentinel://host:port[,host:port…]/service[/db]` URL: the
/// Sentinels' URLs, the monitored master's name and the database.
fn parse_sentinel_url(url: &str) -> Option<(Vec<String>, String, i64)> {
    let rest = url.strip_prefix("redis+sentinel://")?;
    let (hosts, path) = rest.split_once('/')?;
    let (service, db) = match path.split_once('/') {
        Some((s, db)) => (s, db.parse().ok()?),
        None => (path, 0),
    };
    let sentinels: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("redis://{h}"))
        .collect();
    (!sentinels.is_empty() && !service.is_empty()).then(|| (sentinels, service.to_owned(), db))
}

/// Whether `url` is a `redis+sentinel://` URL this store can use.
pub fn sentinel_url_parses(url: &str) -> bool {
    parse_sentinel_url(url).is_some()
}

/// A Redis connection with the gate's key prefix and timeouts. It connects
/// on first use and again after any failure; an outage is logged once when
/// it starts and once when it ends, never per request.
pub struct RedisStore {
    source: Source,
    connection: tokio::sync::Mutex<Option<Connection>>,
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
        let unusable = |what: &str| StoreError(format!("{what} is not usable"));
        let source = if !config.cluster_nodes.is_empty() {
            let nodes: Vec<&str> = config.cluster_nodes.iter().map(|n| n.expose()).collect();
            Source::Cluster(
                redis::cluster::ClusterClient::builder(nodes)
                    .connection_timeout(config.timeout)
                    .response_timeout(config.timeout)
                    .build()
                    .map_err(|_| unusable("[store] cluster_nodes"))?,
            )
        } else {
            let Some(url) = &config.url else {
                return Ok(None);
            };
            match parse_sentinel_url(url.expose()) {
                Some((sentinels, service, db)) => Source::Sentinel {
                    sentinels: tokio::sync::Mutex::new(
                        redis::sentinel::Sentinel::build(sentinels)
                            .map_err(|_| unusable("[store] url"))?,
                    ),
                    service,
                    db,
                },
                None => Source::Single(
                    redis::Client::open(url.expose()).map_err(|_| unusable("[store] url"))?,
                ),
            }
        };
        Ok(Some(RedisStore {
            source,
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

    async fn connect(&self) -> redis::RedisResult<Connection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        match &self.source {
            Source::Single(client) => Ok(Connection::Single(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            )),
            Source::Sentinel {
                sentinels,
                service,
                db,
            } => {
                let master = sentinels
                    .lock()
                    .await
                    .async_master_for(service, None)
                    .await?;
                let mut c = master
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                if *db != 0 {
                    redis::cmd("SELECT")
                        .arg(*db)
                        .query_async::<()>(&mut c)
                        .await?;
                }
                Ok(Connection::Single(c))
            }
            Source::Cluster(client) => {
                Ok(Connection::Cluster(client.get_async_connection().await?))
            }
        }
    }

    async fn connection(&self) -> Result<Connection, StoreError> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let since_failure = (self.started.elapsed().as_millis() as u64)
            .saturating_sub(self.failed_at_ms.load(Ordering::Relaxed));
        if self.down.load(Ordering::Relaxed) && since_failure < RECONNECT_PAUSE.as_millis() as u64 {
            crate::metrics::STORE_ERRORS.inc();
            return Err(StoreError("Redis is unreachable".into()));
        }
        let connected = tokio::time::timeout(self.timeout * 4, self.connect())
            .await
            .unwrap_or_else(|_| {
                Err(redis::RedisError::from(std::io::Error::from(
                    std::io::ErrorKind::TimedOut,
                )))
            });
        match connected {
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
        crate::metrics::STORE_ERRORS.inc();
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
        let answer = tokio::time::timeout(self.timeout, c.query::<T>(cmd))
            .await
            .unwrap_or_else(|_| {
                Err(redis::RedisError::from(std::io::Error::from(
                    std::io::ErrorKind::TimedOut,
                )))
            });
        match answer {
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
}

/// The operations the gate needs from a store that outlives one process
/// or is shared by several: Redis ([`RedisStore`]) or an embedded file
/// ([`crate::file_store::FileStore`]). Values are strings; every key
/// expires after its `ttl`. Each call is atomic.
#[async_trait]
pub trait SharedStore: TokenStore + std::fmt::Debug {
    /// The value at `key`, if any.
    ///
    /// Errors: [`StoreError`] when the store can't be reached in time.
    async fn value(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Sets `key` to `value` for `ttl` (whole milliseconds).
    ///
    /// Errors: [`StoreError`].
    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError>;
    /// Sets `key` to `value` for `ttl` only when it is absent; `true` when
    /// this call set it (a lock taken, a first use claimed).
    ///
    /// Errors: [`StoreError`].
    async fn set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Sets `key` to `new` (expiry kept) only while it holds `expected`:
    /// a login scene's step (pending → scanned, awaiting → confirmed or
    /// refused, [`crate::qr::SceneStatus`]); `true` when this call made it.
    ///
    /// Errors: [`StoreError`].
    async fn replace_value(&self, key: &str, expected: &str, new: &str)
        -> Result<bool, StoreError>;
    /// A login scene's value; a scanned one (`s:…`) is claimed (set to `c`,
    /// expiry kept) in the same step, so only one poll logs its browser in.
    ///
    /// Errors: [`StoreError`].
    async fn claim_scene(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Adds `member` to the sorted set `key` with `score`.
    ///
    /// Errors: [`StoreError`].
    async fn zadd(&self, key: &str, score: u64, member: &str) -> Result<(), StoreError>;
    /// The members of the sorted set `key` scored above `after`, with
    /// their scores, lowest first (at most 10,000).
    ///
    /// Errors: [`StoreError`].
    async fn zrange_after(&self, key: &str, after: u64) -> Result<Vec<(String, u64)>, StoreError>;
    /// Removes the members of the sorted set `key` scored below `before`.
    ///
    /// Errors: [`StoreError`].
    async fn zremove_before(&self, key: &str, before: u64) -> Result<(), StoreError>;
    /// Checks that the store answers.
    ///
    /// Errors: [`StoreError`].
    async fn ping(&self) -> Result<(), StoreError>;
    /// Deletes `key`.
    ///
    /// Errors: [`StoreError`].
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Whether other processes use the store at the same time (Redis). A
    /// state file is one process's own: that process's single-flight is the
    /// only lock a code's exchange needs there.
    fn is_multi_process(&self) -> bool {
        true
    }
}

/// A scene's value while pending.
pub const SCENE_PENDING: &str = "p";
/// Sets `KEYS[1]` to `ARGV[2]` (expiry kept) when it holds `ARGV[1]`; `1` when it did.
const REPLACE_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL') return '1' end return '0'";
/// A scene's value; a scanned one is claimed (set to `c`) in the same step.
const CLAIM_SCRIPT: &str = "local v = redis.call('GET', KEYS[1]) \
    if v and string.sub(v, 1, 2) == 's:' then redis.call('SET', KEYS[1], 'c', 'KEEPTTL') end return v";

#[async_trait]
impl SharedStore for RedisStore {
    async fn value(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.run(redis::cmd("GET").arg(self.key(key))).await
    }

    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        self.run::<()>(
            redis::cmd("SET")
                .arg(self.key(key))
                .arg(value)
                .arg("PX")
                .arg(ttl.as_millis().max(1) as u64),
        )
        .await
    }

    async fn set_if_absent(
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

    async fn replace_value(
        &self,
        key: &str,
        expected: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        let answer: Option<String> = self
            .run(
                redis::cmd("EVAL")
                    .arg(REPLACE_SCRIPT)
                    .arg(1)
                    .arg(self.key(key))
                    .arg(expected)
                    .arg(new),
            )
            .await?;
        Ok(answer.as_deref() == Some("1"))
    }

    async fn claim_scene(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.run(
            redis::cmd("EVAL")
                .arg(CLAIM_SCRIPT)
                .arg(1)
                .arg(self.key(key)),
        )
        .await
    }

    async fn zadd(&self, key: &str, score: u64, member: &str) -> Result<(), StoreError> {
        self.run::<()>(redis::cmd("ZADD").arg(self.key(key)).arg(score).arg(member))
            .await
    }

    async fn zrange_after(&self, key: &str, after: u64) -> Result<Vec<(String, u64)>, StoreError> {
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

    async fn zremove_before(&self, key: &str, before: u64) -> Result<(), StoreError> {
        self.run::<()>(
            redis::cmd("ZREMRANGEBYSCORE")
                .arg(self.key(key))
                .arg("-inf")
                .arg(format!("({before}")),
        )
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run::<String>(&redis::cmd("PING")).await.map(|_| ())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.run::<()>(redis::cmd("DEL").arg(self.key(key))).await
    }
}

/// A value that must not appear in a Redis key (a code, a state) as a key
/// part: its SHA-1, hex.
pub fn key_hash(value: impl AsRef<[u8]>) -> String {
    Sha1::digest(value.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A session's tokens as either store keeps them: compact JSON.
#[derive(Serialize, Deserialize)]
struct TokensRecord {
    a: String,
    ae: u64,
    r: String,
    re: u64,
}

/// `tokens` as the stored JSON, and its time to live (seconds, at least 1).
pub(crate) fn encode_tokens(tokens: &StoredTokens) -> (String, Duration) {
    let ttl = tokens.refresh_expires_at.saturating_sub(now_unix()).max(1);
    let record = TokensRecord {
        a: tokens.access_token.expose().to_owned(),
        ae: tokens.access_expires_at,
        r: tokens.refresh_token.expose().to_owned(),
        re: tokens.refresh_expires_at,
    };
    let json = serde_json::to_string(&record).expect("tokens serialize");
    (json, Duration::from_secs(ttl))
}

/// Stored JSON as tokens, if well-formed and not past their refresh
/// token's end at `now` (unix seconds).
pub(crate) fn decode_tokens(json: &str, now: u64) -> Option<StoredTokens> {
    let r = serde_json::from_str::<TokensRecord>(json).ok()?;
    (r.re > now).then(|| StoredTokens {
        access_token: AccessToken::new(r.a),
        access_expires_at: r.ae,
        refresh_token: RefreshToken::new(r.r),
        refresh_expires_at: r.re,
    })
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[async_trait]
impl TokenStore for RedisStore {
    async fn put(&self, sid: &str, tokens: StoredTokens) -> Result<(), StoreError> {
        let (json, ttl) = encode_tokens(&tokens);
        self.set(&format!("tokens:{sid}"), &json, ttl).await
    }

    async fn get(&self, sid: &str, now: u64) -> Result<Option<StoredTokens>, StoreError> {
        let json = self.value(&format!("tokens:{sid}")).await?;
        Ok(json.and_then(|json| decode_tokens(&json, now)))
    }

    async fn remove(&self, sid: &str) -> Result<(), StoreError> {
        self.delete(&format!("tokens:{sid}")).await
    }
}
