//! The coordination seam in Redis (`[store] url = "redis://…"`, Sentinel
//! or Cluster), shared by several gateways and hosts: the session tokens,
//! each code's exchange (one per code across every instance, its outcome
//! kept for the code's 300 s), each state's single use, scenes, pushes,
//! logouts and the basic-support token. Its commands and Lua scripts live
//! here only; the key layout is [`super::kv`]'s. The decision for a request that carries a session
//! never touches Redis, so signed-in users keep passing while it is down;
//! logins then get a clear 503 page until it is back.
//!
//! Keys start with `[store] key_prefix`; codes and states appear in keys
//! only as SHA-1 hashes, tokens only in values.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::kv::KeyValue;
use super::CoordinationError;
use crate::config::StoreConfig;
use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue};

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
    /// Errors: [`CoordinationError`] when the URL can't be used (checked at config
    /// load already, so only for a hand-built config).
    pub fn from_config(config: &StoreConfig) -> Result<Option<RedisStore>, CoordinationError> {
        let unusable = CoordinationError::Config;
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

    async fn connection(&self) -> Result<Connection, CoordinationError> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let since_failure = (self.started.elapsed().as_millis() as u64)
            .saturating_sub(self.failed_at_ms.load(Ordering::Relaxed));
        if self.down.load(Ordering::Relaxed) && since_failure < RECONNECT_PAUSE.as_millis() as u64 {
            crate::metrics::STORE_ERRORS.inc();
            return Err(CoordinationError::Unreachable);
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

    fn failed(&self, e: &redis::RedisError) -> CoordinationError {
        crate::metrics::STORE_ERRORS.inc();
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::error!(
                kind = ?e.kind(),
                "Redis ([store] url) is unreachable: new logins get a 503 page until it is back; \
                 signed-in users keep passing"
            );
        }
        CoordinationError::Unreachable
    }

    async fn run<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CoordinationError> {
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

/// Sets `KEYS[1]` to `ARGV[2]` (expiry kept) when it holds `ARGV[1]`; `1` when it did.
const REPLACE_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL') return '1' end return '0'";
/// A scene's value; a scanned one is claimed (set to `c`) in the same step.
const CLAIM_SCRIPT: &str = "local v = redis.call('GET', KEYS[1]) \
    if v and string.sub(v, 1, 2) == 's:' then redis.call('SET', KEYS[1], 'c', 'KEEPTTL') end return v";

#[async_trait]
impl KeyValue for RedisStore {
    async fn kv_get(&self, key: &str) -> Result<Option<String>, CoordinationError> {
        self.run(redis::cmd("GET").arg(self.key(key))).await
    }

    async fn kv_set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), CoordinationError> {
        self.run::<()>(
            redis::cmd("SET")
                .arg(self.key(key))
                .arg(value)
                .arg("PX")
                .arg(ttl.as_millis().max(1) as u64),
        )
        .await
    }

    async fn kv_set_nx(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, CoordinationError> {
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

    async fn kv_cas(
        &self,
        key: &str,
        expected: &str,
        new: &str,
    ) -> Result<bool, CoordinationError> {
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

    async fn kv_claim_scanned(&self, key: &str) -> Result<Option<String>, CoordinationError> {
        self.run(
            redis::cmd("EVAL")
                .arg(CLAIM_SCRIPT)
                .arg(1)
                .arg(self.key(key)),
        )
        .await
    }

    async fn kv_zadd(&self, key: &str, score: u64, member: &str) -> Result<(), CoordinationError> {
        self.run::<()>(redis::cmd("ZADD").arg(self.key(key)).arg(score).arg(member))
            .await
    }

    async fn kv_zrange_after(
        &self,
        key: &str,
        after: u64,
    ) -> Result<Vec<(String, u64)>, CoordinationError> {
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

    async fn kv_zremove_before(&self, key: &str, before: u64) -> Result<(), CoordinationError> {
        self.run::<()>(
            redis::cmd("ZREMRANGEBYSCORE")
                .arg(self.key(key))
                .arg("-inf")
                .arg(format!("({before}")),
        )
        .await
    }

    async fn kv_ping(&self) -> Result<(), CoordinationError> {
        self.run::<String>(&redis::cmd("PING")).await.map(|_| ())
    }

    async fn kv_delete(&self, key: &str) -> Result<(), CoordinationError> {
        self.run::<()>(redis::cmd("DEL").arg(self.key(key))).await
    }

    fn is_multi_process(&self) -> bool {
        true
    }
}
