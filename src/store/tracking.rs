//! The read cache's own connections to Redis: told of every change to a key under the
//! layer's prefix (`CLIENT TRACKING ... BCAST PREFIX`), and proving every few moments
//! that they have been told everything so far.
//!
//! One connection per server that holds sessions: the server itself, the primary a
//! Sentinel names, or every primary of a Cluster (each tells only of its own keys). Each
//! is a RESP2 connection that subscribes to `__redis__:invalidate` and redirects its own
//! tracking there, so a `FLUSHALL` or `FLUSHDB` arrives as well (fred drops the empty
//! invalidation RESP3 sends for it). A connection is never reconnected in place: fred
//! would bring it back without tracking, and every change made meanwhile would go
//! untold. Instead any failure on any of them, or a change in the Cluster's primaries,
//! flushes the cache and a new set is set up.
//!
//! A barrier is a `PING` on a connection: Redis answers it after every invalidation it
//! sent the connection before, and fred hands those over before the answer, so once the
//! answer is in and the invalidations received are applied, that server's changes up to
//! when the `PING` was sent are known. The cache is trusted for `max_staleness` from the
//! oldest of the servers' latest barriers.

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};

use fred::{
    clients::Client,
    interfaces::{
        ClientInterface, ClientLike, ClusterInterface, EventInterface, PubsubInterface,
        TrackingInterface,
    },
    types::{
        client::Invalidation,
        config::{Server, ServerConfig},
        Builder, RespVersion, Value,
    },
};
use tokio::{
    sync::broadcast::{self, error::TryRecvError},
    task::JoinSet,
    time::Instant,
};

use super::cache::Cache;
use crate::client::Redis;

/// The channel Redis sends invalidations on to a RESP2 connection.
const INVALIDATIONS: &str = "__redis__:invalidate";

/// Invalidations fred may hold for a connection; beyond that it falls behind and the
/// cache is flushed.
const QUEUE: usize = 65_536;

type FredResult<T> = Result<T, fred::error::Error>;

/// Starts the task that keeps `cache` coherent. It ends when the cache is dropped.
pub(crate) fn spawn(cache: &Arc<Cache>, redis: &Redis, prefix: &str) {
    let weak = Arc::downgrade(cache);
    let redis = redis.clone();
    let prefix = prefix.to_owned();
    tokio::spawn(async move {
        // However the task ends (the cache dropped, or the runtime shut down), the next
        // load may start another.
        let _ended = Ended(weak.clone());
        let mut backoff = Duration::from_millis(50);
        // Whether this outage was logged: once at `warn`, then quietly until back.
        let mut logged = false;
        loop {
            let trusted = Arc::new(AtomicBool::new(false));
            let result = track_all(&weak, &redis, &prefix, &trusted).await;
            let Some(cache) = weak.upgrade() else { return };
            cache.flush();
            drop(cache);
            let err = match result {
                Ok(()) => return,
                Err(err) => err,
            };
            if trusted.load(Ordering::Relaxed) {
                logged = false;
                backoff = Duration::from_millis(50);
            }
            if logged {
                tracing::debug!(error = %err, "read cache still off");
            } else {
                tracing::warn!(error = %err, "read cache off: its tracking connection failed; every load goes to Redis until it is back");
                logged = true;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            if weak.strong_count() == 0 {
                return;
            }
        }
    });
}

/// Tells the cache its tracking task ended, when dropped.
struct Ended(Weak<Cache>);

impl Drop for Ended {
    fn drop(&mut self) {
        if let Some(cache) = self.0.upgrade() {
            cache.tracking_ended();
        }
    }
}

/// The latest barrier of each tracking connection; the cache is trusted from the oldest.
struct Barriers {
    latest: Mutex<Vec<Option<Instant>>>,
    trusted: Arc<AtomicBool>,
}

impl Barriers {
    /// Connection `node` passed a barrier sent at `sent`.
    fn passed(&self, cache: &Cache, node: usize, sent: Instant) {
        let oldest = {
            let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
            latest[node] = Some(sent);
            latest.iter().copied().min().flatten()
        };
        if let Some(oldest) = oldest {
            cache.trust(oldest);
            self.trusted.store(true, Ordering::Relaxed);
        }
    }
}

/// One set of tracking connections, from setup to the first failure or change of
/// primaries (`Err`), or the cache's end (`Ok`).
async fn track_all(
    weak: &Weak<Cache>,
    redis: &Redis,
    prefix: &str,
    trusted: &Arc<AtomicBool>,
) -> FredResult<()> {
    let Some(staleness) = weak.upgrade().map(|c| c.settings().max_staleness) else {
        return Ok(());
    };
    let base = redis.client();
    let primaries = primaries(redis);
    let clients = match &primaries {
        Some(nodes) if nodes.is_empty() => return Err(error("no known Cluster primaries")),
        Some(nodes) => nodes
            .iter()
            .map(|node| tracking_client(base, Some(node)))
            .collect::<FredResult<Vec<_>>>()?,
        None => vec![tracking_client(base, None)?],
    };
    let barriers = Arc::new(Barriers {
        latest: Mutex::new(vec![None; clients.len()]),
        trusted: Arc::clone(trusted),
    });
    let mut tasks = JoinSet::new();
    for (node, client) in clients.iter().enumerate() {
        let (weak, client, prefix) = (weak.clone(), client.clone(), prefix.to_owned());
        let barriers = Arc::clone(&barriers);
        tasks.spawn(async move {
            track(&weak, &client, &prefix, staleness, |cache, sent| {
                barriers.passed(cache, node, sent);
            })
            .await
        });
    }
    let mut topology = tokio::time::interval(staleness / 3);
    let result = loop {
        tokio::select! {
            ended = tasks.join_next() => {
                break match ended {
                    Some(Ok(result)) => result,
                    Some(Err(_)) | None => Err(error("a tracking task ended")),
                };
            }
            _ = topology.tick(), if primaries.is_some() => {
                if weak.strong_count() == 0 {
                    break Ok(());
                }
                // A primary added, replaced or removed: its keys would go untold.
                if self::primaries(redis) != primaries {
                    break Err(error("the Cluster's primaries changed"));
                }
            }
        }
    };
    tasks.abort_all();
    for client in &clients {
        let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
    }
    result
}

/// A Cluster's primaries, as every client of the layer's handle knows them (a pool's
/// clients learn of a moved slot separately); `None` for a single server or Sentinel.
fn primaries(redis: &Redis) -> Option<BTreeSet<Server>> {
    let clients: Vec<&Client> = match redis {
        Redis::Client(client) => vec![client],
        Redis::Pool(pool) => pool.clients().iter().collect(),
    };
    if !clients.first()?.is_clustered() {
        return None;
    }
    Some(
        clients
            .iter()
            .filter_map(|c| c.cached_cluster_state())
            .flat_map(|state| state.unique_primary_nodes())
            .collect(),
    )
}

/// One tracking connection, from setup to failure (`Err`) or the cache's end (`Ok`);
/// `passed` is called after each barrier.
async fn track(
    weak: &Weak<Cache>,
    client: &Client,
    prefix: &str,
    staleness: Duration,
    passed: impl Fn(&Cache, Instant),
) -> FredResult<()> {
    let mut invalidations = client.invalidation_rx();
    let mut errors = client.error_rx();
    let setup = async {
        client.init().await?;
        let id: i64 = client.client_id().await?;
        client
            .client_tracking::<(), _, _>("ON", Some(id), prefix, true, false, false, false)
            .await?;
        client.subscribe(INVALIDATIONS).await
    };
    match tokio::time::timeout(staleness.max(Duration::from_secs(2)), setup).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Err(err),
        Err(_) => return Err(timed_out()),
    }
    let events = Events {
        invalidations: &mut invalidations,
        errors: &mut errors,
    };
    watch(weak, client, events, staleness, passed).await
}

/// What a tracking connection tells, besides answers.
struct Events<'a> {
    invalidations: &'a mut broadcast::Receiver<Invalidation>,
    /// The connection closed or failed: fred says so at once, before any `PING` would.
    errors: &'a mut broadcast::Receiver<(fred::error::Error, Option<Server>)>,
}

/// Applies invalidations as they come, and starts a barrier every third of
/// `staleness` (invalidations keep being applied while its `PING` is out). Returns at
/// the first sign of trouble on the connection.
async fn watch(
    weak: &Weak<Cache>,
    client: &Client,
    events: Events<'_>,
    staleness: Duration,
    passed: impl Fn(&Cache, Instant),
) -> FredResult<()> {
    let Events {
        invalidations,
        errors,
    } = events;
    let mut tick = tokio::time::interval(staleness / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut barrier = std::pin::pin!(None);
    loop {
        tokio::select! {
            received = invalidations.recv() => {
                let Some(cache) = weak.upgrade() else { return Ok(()) };
                match received {
                    Ok(invalidation) => apply(&cache, &invalidation),
                    Err(_) => return Err(behind()),
                }
            }
            error = errors.recv() => {
                return Err(match error {
                    Ok((err, _)) => err,
                    Err(_) => behind(),
                });
            }
            _ = tick.tick(), if barrier.is_none() => {
                let sent = Instant::now();
                barrier.set(Some(async move {
                    let answer = tokio::time::timeout(staleness, client.ping::<Value>(None)).await;
                    (sent, answer)
                }));
            }
            (sent, answer) = async { barrier.as_mut().as_pin_mut().expect("guarded").await }, if barrier.is_some() => {
                barrier.set(None);
                match answer {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => return Err(err),
                    Err(_) => return Err(timed_out()),
                }
                let Some(cache) = weak.upgrade() else { return Ok(()) };
                // Invalidations sent before the answer are queued by now; apply them
                // before trusting.
                loop {
                    match invalidations.try_recv() {
                        Ok(invalidation) => apply(&cache, &invalidation),
                        Err(TryRecvError::Empty) => break,
                        Err(_) => return Err(behind()),
                    }
                }
                passed(&cache, sent);
            }
        }
    }
}

fn apply(cache: &Cache, invalidation: &Invalidation) {
    // No keys: the database was flushed.
    if invalidation.keys.is_empty() {
        cache.flush();
        return;
    }
    for key in &invalidation.keys {
        cache.invalidate(key.as_bytes());
    }
}

/// A client like the layer's (same credentials, TLS, Sentinel settings), on RESP2, with
/// no reconnection, and room for a burst of invalidations; to `node` if given (a Cluster
/// primary), else to the layer's server.
fn tracking_client(base: &Client, node: Option<&Server>) -> FredResult<Client> {
    let mut config = base.client_config();
    config.version = RespVersion::RESP2;
    config.fail_fast = true;
    if let Some(node) = node {
        config.server = ServerConfig::Centralized {
            server: node.clone(),
        };
    }
    let mut perf = base.perf_config();
    perf.broadcast_channel_capacity = QUEUE;
    let connection = base.connection_config().clone();
    Builder::from_config(config)
        .set_performance_config(perf)
        .set_connection_config(connection)
        .build()
}

fn error(why: &'static str) -> fred::error::Error {
    fred::error::Error::new(fred::error::ErrorKind::Unknown, why)
}

fn timed_out() -> fred::error::Error {
    fred::error::Error::new(fred::error::ErrorKind::Timeout, "no answer in time")
}

fn behind() -> fred::error::Error {
    error("fell behind the invalidations")
}
