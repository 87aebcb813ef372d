//! A fred builder with the settings a web tier needs, which fred 10 leaves off.

use std::time::Duration;

use fred::{
    clients::{Client, Pool},
    error::Error as FredError,
    interfaces::ClientLike as _,
    types::{
        config::{Config, ReconnectPolicy, TcpConfig, UnresponsiveConfig},
        Builder,
    },
};

/// A fred [`Builder`] for `url`, set up for serving sessions:
///
/// - a command timeout of 2 s (fred's default is none: requests would hang while Redis
///   is down);
/// - reconnection forever with exponential backoff from 100 ms to 2 s (fred's default is
///   no reconnection at all: one dropped connection would need an app restart);
/// - a connection timeout of 2 s, and connections that stop answering for 10 s are
///   closed and reopened;
/// - `TCP_NODELAY` (fred leaves Nagle's algorithm on);
/// - on Redis Cluster, fred follows no `MOVED` or `ASK` redirection itself
///   (`max_redirections = 0`): on `MOVED` it refreshes its slot map and the layer
///   retries the script once, on the slot's new owner. fred 10.1.0's own `ASK` handling
///   hands replies to the wrong commands (another session's data) and can stop the
///   client for good, so it must never run. Keep this setting if you change others.
///
/// `url` is any URL fred reads: `redis://`, `rediss://` (TLS, with a TLS feature),
/// `redis-cluster://host:port?node=host2:port2`, or
/// `redis-sentinel://host:port?sentinelServiceName=name&node=host2:port2`. Change
/// anything further on the builder before building.
///
/// ```no_run
/// # async fn run() -> Result<(), tower_redis_session::fred::error::Error> {
/// use tower_redis_session::{client_builder, fred::prelude::*};
///
/// let pool = client_builder("redis://127.0.0.1:6379")?
///     .with_performance_config(|p| p.default_command_timeout = std::time::Duration::from_secs(1))
///     .build_pool(4)?;
/// pool.init().await?; // fails if Redis cannot be reached now
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// The URL is not one fred can read.
pub fn client_builder(url: &str) -> Result<Builder, FredError> {
    let config = Config::from_url(url)?;
    let mut builder = Builder::from_config(config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
            c.tcp = TcpConfig {
                nodelay: Some(true),
                ..TcpConfig::default()
            };
            // fred 10.1.0 answers an ASK by sending ASKING on the target's pipelined
            // connection and taking the next reply as its own (replies then shift onto
            // other commands: another session's data), re-sends the command to the old
            // owner, and ends its router task for good when that has failed three times.
            // With 0 it follows no redirection: see `Store::run` and tests/it/cluster_faults.rs.
            c.max_redirections = 0;
            c.unresponsive = UnresponsiveConfig {
                max_timeout: Some(Duration::from_secs(10)),
                interval: Duration::from_secs(1),
            };
        })
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(2))
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    Ok(builder)
}

/// Connects a pool of two clients built by [`client_builder`] and waits until it is
/// connected: the short way to a ready [`Pool`] for [`RedisSessionLayer`](crate::RedisSessionLayer).
///
/// ```no_run
/// # async fn run() -> Result<(), tower_redis_session::fred::error::Error> {
/// let pool = tower_redis_session::connect("redis://127.0.0.1:6379").await?;
/// # Ok(()) }
/// ```
///
/// To start while Redis may still be down (requests get 503 until it is up), use
/// [`connect_lazy`] instead.
///
/// # Errors
///
/// The URL is not one fred can read, or Redis cannot be reached now.
pub async fn connect(url: &str) -> Result<Pool, FredError> {
    let pool = client_builder(url)?.build_pool(2)?;
    pool.init().await?;
    Ok(pool)
}

/// Like [`connect`], but returns at once, without waiting for Redis: the pool keeps
/// trying to connect in the background (fred's `fail_fast` is turned off, or its first
/// failed connection would end the connection task for good). Until Redis answers,
/// requests that need their session get 503; then they are served, with no restart.
/// Call it from within a Tokio runtime.
///
/// ```no_run
/// # async fn run() -> Result<(), tower_redis_session::fred::error::Error> {
/// let pool = tower_redis_session::connect_lazy("redis://127.0.0.1:6379").await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// The URL is not one fred can read.
pub async fn connect_lazy(url: &str) -> Result<Pool, FredError> {
    let mut builder = client_builder(url)?;
    builder.with_config(|config| config.fail_fast = false);
    let pool = builder.build_pool(2)?;
    // The connection task runs until the pool is dropped or quits.
    let _connection_task = pool.connect();
    Ok(pool)
}

/// The fred handle the layer sends its commands through: a [`Client`] (one multiplexed
/// connection per server) or a [`Pool`] of them. Build either with [`client_builder`]
/// to get timeouts, reconnection and `TCP_NODELAY` right; both convert with `into()`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Redis {
    /// One fred client.
    Client(Client),
    /// A round-robin pool of fred clients.
    Pool(Pool),
}

impl Redis {
    /// The client for the next command: the client itself, or the pool's next one.
    #[must_use]
    pub fn client(&self) -> &Client {
        match self {
            Self::Client(client) => client,
            Self::Pool(pool) => pool.next(),
        }
    }
}

impl From<Client> for Redis {
    fn from(client: Client) -> Self {
        Self::Client(client)
    }
}

impl From<Pool> for Redis {
    fn from(pool: Pool) -> Self {
        Self::Pool(pool)
    }
}
