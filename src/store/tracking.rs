//! The read cache's own connection to Redis: told of every change to a key under the
//! layer's prefix (`CLIENT TRACKING ... BCAST PREFIX`), and proving every few moments
//! that it has been told everything so far.
//!
//! One RESP2 connection subscribes to `__redis__:invalidate` and redirects its own
//! tracking there, so a `FLUSHALL` or `FLUSHDB` arrives as well (fred drops the empty
//! invalidation RESP3 sends for it). The connection is never reconnected in place: fred
//! would bring it back without tracking, and every change made meanwhile would go
//! untold. Instead any failure flushes the cache and a new connection is set up.
//!
//! A barrier is a `PING` on that connection: Redis answers it after every invalidation
//! it sent the connection before, and fred hands those over before the answer, so once
//! the answer is in and the invalidations received are applied, the cache is trusted
//! for `max_staleness` from when the `PING` was sent.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use fred::{
    clients::Client,
    interfaces::{ClientInterface, ClientLike, EventInterface, PubsubInterface, TrackingInterface},
    types::{client::Invalidation, Builder, RespVersion, Value},
};
use tokio::{
    sync::broadcast::{self, error::TryRecvError},
    time::Instant,
};

use super::cache::Cache;

/// The channel Redis sends invalidations on to a RESP2 connection.
const INVALIDATIONS: &str = "__redis__:invalidate";

/// Invalidations fred may hold for the task; beyond that it falls behind and the cache is
/// flushed.
const QUEUE: usize = 65_536;

/// Starts the task that keeps `cache` coherent. It ends when the cache is dropped.
pub(crate) fn spawn(cache: &Arc<Cache>, base: &Client, prefix: &str) {
    let weak = Arc::downgrade(cache);
    let base = base.clone();
    let prefix = prefix.to_owned();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(50);
        // Whether this outage was logged: once at `warn`, then quietly until back.
        let mut logged = false;
        loop {
            let mut trusted = false;
            let result = track(&weak, &base, &prefix, &mut trusted).await;
            let Some(cache) = weak.upgrade() else { return };
            cache.flush();
            drop(cache);
            let err = match result {
                Ok(()) => return,
                Err(err) => err,
            };
            if trusted {
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

/// One tracking connection, from setup to failure (`Err`) or the cache's end (`Ok`).
/// `trusted` is set once a barrier has passed on it.
async fn track(
    weak: &Weak<Cache>,
    base: &Client,
    prefix: &str,
    trusted: &mut bool,
) -> Result<(), fred::error::Error> {
    let Some(staleness) = weak.upgrade().map(|c| c.settings().max_staleness) else {
        return Ok(());
    };
    let client = tracking_client(base)?;
    let setup = async {
        client.init().await?;
        let id: i64 = client.client_id().await?;
        client
            .client_tracking::<(), _, _>("ON", Some(id), prefix, true, false, false, false)
            .await?;
        client.subscribe(INVALIDATIONS).await
    };
    let mut invalidations = client.invalidation_rx();
    let mut errors = client.error_rx();
    let result = match tokio::time::timeout(staleness.max(Duration::from_secs(2)), setup).await {
        Ok(Ok(())) => {
            let events = Events {
                invalidations: &mut invalidations,
                errors: &mut errors,
            };
            watch(weak, &client, events, staleness, trusted).await
        }
        Ok(Err(err)) => Err(err),
        Err(_) => Err(timed_out()),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
    result
}

/// What the tracking connection tells, besides answers.
struct Events<'a> {
    invalidations: &'a mut broadcast::Receiver<Invalidation>,
    /// The connection closed or failed: fred says so at once, before any `PING` would.
    errors: &'a mut broadcast::Receiver<(fred::error::Error, Option<fred::types::config::Server>)>,
}

/// Applies invalidations as they come, and starts a barrier every third of
/// `staleness` (invalidations keep being applied while its `PING` is out). Returns at
/// the first sign of trouble on the connection.
async fn watch(
    weak: &Weak<Cache>,
    client: &Client,
    events: Events<'_>,
    staleness: Duration,
    trusted: &mut bool,
) -> Result<(), fred::error::Error> {
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
                cache.trust(sent);
                *trusted = true;
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

/// A client like the layer's (same servers, credentials, TLS), on RESP2, with no
/// reconnection, and room for a burst of invalidations.
fn tracking_client(base: &Client) -> Result<Client, fred::error::Error> {
    let mut config = base.client_config();
    config.version = RespVersion::RESP2;
    config.fail_fast = true;
    let mut perf = base.perf_config();
    perf.broadcast_channel_capacity = QUEUE;
    let connection = base.connection_config().clone();
    Builder::from_config(config)
        .set_performance_config(perf)
        .set_connection_config(connection)
        .build()
}

fn timed_out() -> fred::error::Error {
    fred::error::Error::new(fred::error::ErrorKind::Timeout, "no answer in time")
}

fn behind() -> fred::error::Error {
    fred::error::Error::new(
        fred::error::ErrorKind::Unknown,
        "fell behind the invalidations",
    )
}
