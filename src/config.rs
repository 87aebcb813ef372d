//! Settings of the layer, with their defaults in one place.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use cookie::SameSite;

use crate::error::Error;

/// Default idle TTL: 30 minutes (OWASP's upper end for low-risk apps).
pub(crate) const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(30 * 60);
/// Default absolute lifetime: 12 hours, ASVS 4.0 level 2's re-authentication period: a
/// working day, after which even an active session logs in again.
pub(crate) const DEFAULT_ABSOLUTE_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Default per-command timeout.
pub(crate) const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Builds the response sent when the store fails; see
/// [`RedisSessionLayerBuilder::error_response`](crate::RedisSessionLayerBuilder::error_response).
pub(crate) type ErrorResponseFn = Arc<dyn Fn(&Error) -> http::Response<Bytes> + Send + Sync>;

/// Everything the middleware needs to know, fixed when the layer is built.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) key_prefix: String,
    pub(crate) plain_keys: bool,
    /// Incoming IDs of this format are accepted besides the crate's own.
    pub(crate) id_format: Option<crate::IdFormat>,
    pub(crate) idle_ttl: Duration,
    pub(crate) absolute_lifetime: Option<Duration>,
    pub(crate) touch_interval: Option<Duration>,
    pub(crate) command_timeout: Duration,
    /// Tying a session to a (new) user rotates its ID.
    pub(crate) rotate_on_user_change: bool,
    /// Load a request's session only when something asks for it.
    pub(crate) lazy_load: bool,
    pub(crate) limits: Limits,
    pub(crate) cookie: CookieConfig,
    pub(crate) error_response: Option<ErrorResponseFn>,
    pub(crate) script_mode: ScriptMode,
    pub(crate) read_cache: Option<ReadCache>,
    #[cfg(feature = "encryption")]
    pub(crate) encryption: Option<Arc<crate::crypto::KeyRing>>,
    #[cfg(feature = "encryption")]
    pub(crate) decrypt_failure: crate::crypto::DecryptFailure,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            key_prefix: "session:".to_owned(),
            plain_keys: false,
            id_format: None,
            idle_ttl: DEFAULT_IDLE_TTL,
            absolute_lifetime: Some(DEFAULT_ABSOLUTE_LIFETIME),
            touch_interval: None,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            rotate_on_user_change: true,
            lazy_load: false,
            limits: Limits::default(),
            cookie: CookieConfig::default(),
            error_response: None,
            script_mode: ScriptMode::default(),
            read_cache: None,
            #[cfg(feature = "encryption")]
            encryption: None,
            #[cfg(feature = "encryption")]
            decrypt_failure: crate::crypto::DecryptFailure::default(),
        }
    }
}

/// How the layer runs its Lua scripts in Redis; set with
/// [`RedisSessionLayerBuilder::script_mode`](crate::RedisSessionLayerBuilder::script_mode).
///
/// Both modes run the same Lua (generated from the same files), with the same replies,
/// round trips and behaviour (out of memory aside, as the operations guide says); they
/// differ in what the Redis user must be allowed, and in who loads the code. The ACL users for each, and what each costs in Redis CPU, are in
/// the operations guide (`docs/operations.md`, "a Redis user with only the commands the
/// crate needs").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScriptMode {
    /// `EVALSHA`, loading a script with `SCRIPT LOAD` when Redis answers `NOSCRIPT`
    /// (after a restart, a failover or `SCRIPT FLUSH`): nothing to deploy, any Redis. The
    /// app's Redis user needs `EVALSHA` and `SCRIPT LOAD`, and with them it can run any
    /// Lua it likes. The default.
    #[default]
    Evalsha,
    /// `FCALL` of the functions in [`functions_library`](crate::functions_library),
    /// loaded once per deployment with [`load_functions`](crate::load_functions) (or
    /// `FUNCTION LOAD REPLACE`) by a more privileged user, on every primary. Needs Redis
    /// 7.0 or later. The app's user needs `FCALL` and no way to load or run code of its
    /// own: no `EVAL`, `EVALSHA`, `SCRIPT` or `FUNCTION LOAD`.
    ///
    /// The layer never falls back to `EVALSHA`: if the library of its version is not
    /// loaded, every call fails (the request gets a `500`, and the log says what to run),
    /// and [`RedisSessionLayer::load_scripts`](crate::RedisSessionLayer::load_scripts)
    /// fails at start with the same message.
    Functions,
}

/// Settings of the opt-in read cache, which serves a session this app loaded a moment
/// ago from memory, with no round trip; turn it on with
/// [`RedisSessionLayerBuilder::read_cache`](crate::RedisSessionLayerBuilder::read_cache).
///
/// ```
/// use std::time::Duration;
/// use tower_redis_session::ReadCache;
///
/// let cache = ReadCache::new()
///     .max_entries(50_000)
///     .max_bytes(64 * 1024 * 1024)
///     .max_staleness(Duration::from_millis(250));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadCache {
    pub(crate) max_entries: usize,
    pub(crate) max_bytes: usize,
    pub(crate) max_staleness: Duration,
}

impl Default for ReadCache {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_bytes: 32 * 1024 * 1024,
            max_staleness: Duration::from_millis(250),
        }
    }
}

impl ReadCache {
    /// The defaults: 10,000 sessions, 32 MiB, 250 ms of staleness at most.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Most sessions held; the oldest make room for new ones. Default 10,000.
    #[must_use]
    pub fn max_entries(mut self, entries: usize) -> Self {
        self.max_entries = entries;
        self
    }

    /// Most bytes held (keys, field names and values, and a fixed overhead per entry and
    /// per field); the oldest entries make room for new ones. Default 32 MiB.
    #[must_use]
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// How far behind Redis a read served from the cache may be, should invalidations
    /// stop arriving (a stalled network, a Redis that hangs): the cache's connection
    /// proves it has been told of every change at least this often (a `PING` every third
    /// of it), or nothing is served from the cache. Normally an entry is dropped as soon
    /// as the change's invalidation arrives, well within a millisecond on one network.
    /// Default 250 ms.
    #[must_use]
    pub fn max_staleness(mut self, staleness: Duration) -> Self {
        self.max_staleness = staleness;
        self
    }
}

/// How big a session may grow. Checked where a change is made, so a handler gets a
/// clear [`SessionError`](crate::SessionError); against the stored session when a save
/// or rotation grows it, so parallel requests cannot pass them together; and when a
/// session is loaded (with room for counters to grow), so a hash grown by someone else
/// is refused rather than read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most user fields.
    pub(crate) max_fields: usize,
    /// Most bytes in one field name, and in one value.
    pub(crate) max_value_size: usize,
    /// Most bytes of user field names and values together.
    pub(crate) max_session_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_fields: 256,
            max_value_size: 64 * 1024,
            max_session_size: 256 * 1024,
        }
    }
}

/// Attributes of the session cookie.
#[derive(Debug, Clone)]
pub(crate) struct CookieConfig {
    pub(crate) name: String,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    /// `Max-Age` follows the session's TTL instead of ending with the browser session.
    pub(crate) persistent: bool,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            name: "__Host-sid".to_owned(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            path: "/".to_owned(),
            domain: None,
            persistent: false,
        }
    }
}
