//! `RedisSessionLayer` and its builder: every setting, checked once, up front.

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use cookie::SameSite;
use tower_layer::Layer;

use crate::{
    client::Redis,
    config::{Config, ErrorResponseFn, ReadCache, ScriptMode},
    error::{ConfigError, Error},
    manager::SessionManager,
    service::RedisSession,
    shared::Shared,
    store::{cache::CacheStats, Store},
};

/// A [`Layer`] that gives every request a [`Session`](crate::Session) stored in Redis.
///
/// ```no_run
/// use tower_redis_session::RedisSessionLayer;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = tower_redis_session::connect("redis://127.0.0.1:6379").await?;
/// let layer = RedisSessionLayer::builder(pool)
///     .cookie_name("__Host-sid")
///     .idle_ttl(std::time::Duration::from_secs(15 * 60))
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisSessionLayer {
    shared: Arc<Shared>,
}

impl RedisSessionLayer {
    /// A layer with every setting at its default.
    pub fn new(redis: impl Into<Redis>) -> Self {
        Self::builder(redis)
            .build()
            .expect("the default configuration is valid")
    }

    /// Starts a builder; see [`RedisSessionLayerBuilder`] for the settings and their
    /// defaults.
    pub fn builder(redis: impl Into<Redis>) -> RedisSessionLayerBuilder {
        RedisSessionLayerBuilder {
            redis: redis.into(),
            config: Config::default(),
        }
    }

    /// Loads the session scripts into Redis now (into every primary of a cluster), so
    /// that the first requests do not each pay a `NOSCRIPT` round trip. Optional: the
    /// layer loads a script on first use, and again after a restart or failover.
    ///
    /// With [`ScriptMode::Functions`](crate::ScriptMode::Functions) it loads nothing (the
    /// app's user may not): it checks that the [`functions_library`](crate::functions_library)
    /// of this version of the crate is loaded on the server (every primary of a
    /// cluster), so a missing one is found at start rather than by the first request.
    ///
    /// # Errors
    ///
    /// Redis is unreachable or refused the scripts; with `ScriptMode::Functions`, the
    /// library is not loaded (the error's source says what to run).
    pub async fn load_scripts(&self) -> Result<(), Error> {
        self.shared.store.load_scripts().await
    }

    /// A handle to list, count and end the sessions this layer stores.
    #[must_use]
    pub fn manager(&self) -> SessionManager {
        SessionManager::new(Arc::clone(&self.shared))
    }

    /// The fred handle the layer uses.
    #[must_use]
    pub fn redis(&self) -> &Redis {
        self.shared.store.redis()
    }

    /// Hits, misses and size of the [read cache](RedisSessionLayerBuilder::read_cache);
    /// `None` when it is off.
    #[must_use]
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.shared.store.cache_stats()
    }
}

impl<S> Layer<S> for RedisSessionLayer {
    type Service = RedisSession<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RedisSession::new(inner, Arc::clone(&self.shared))
    }
}

impl fmt::Debug for RedisSessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSessionLayer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("key_prefix", &self.key_prefix)
            .field("plain_keys", &self.plain_keys)
            .field("id_format", &self.id_format)
            .field("idle_ttl", &self.idle_ttl)
            .field("absolute_lifetime", &self.absolute_lifetime)
            .field("touch_interval", &self.touch_interval)
            .field("command_timeout", &self.command_timeout)
            .field("script_mode", &self.script_mode)
            .field("lazy_load", &self.lazy_load)
            .field("limits", &self.limits)
            .field("cookie", &self.cookie)
            .field(
                "error_response",
                &self.error_response.as_ref().map(|_| ".."),
            )
            .finish()
    }
}

/// Builds a [`RedisSessionLayer`]; [`build`](Self::build) checks the settings.
///
/// Every setting has a default that suits most apps:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use tower_redis_session::{fred::prelude::*, RedisSessionLayer, SameSite};
///
/// let client = Builder::default_centralized().build().unwrap(); // not connected: fine here
/// let layer = RedisSessionLayer::builder(client)
///     .key_prefix("myapp:session:")
///     .idle_ttl(Duration::from_secs(30 * 60))
///     .absolute_lifetime(Duration::from_secs(12 * 3600))
///     .touch_interval(Duration::from_secs(60))
///     .cookie_name("__Host-sid")
///     .same_site(SameSite::Strict)
///     .build();
/// assert!(layer.is_ok());
/// # }
/// ```
#[must_use]
pub struct RedisSessionLayerBuilder {
    redis: Redis,
    config: Config,
}

impl fmt::Debug for RedisSessionLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSessionLayerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisSessionLayerBuilder {
    /// Prefix of every session key. Default `session:`. Must not hold `{` or `}`: a hash
    /// tag would put every session in one Redis Cluster slot.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.key_prefix = prefix.into();
        self
    }

    /// Store `prefix + ID` as the key, as a PHP application sharing the sessions does, instead of
    /// `prefix + SHA-256(ID)`. Default `false`: with digests, someone who can read Redis
    /// (a dump, `MONITOR`, a replica) cannot take over live sessions with what they see.
    pub fn plain_keys(mut self, plain: bool) -> Self {
        self.config.plain_keys = plain;
        self
    }

    /// With `plain_keys`, also accept session cookies holding IDs of this format, as
    /// another program sharing the sessions makes them (see [`IdFormat`](crate::IdFormat);
    /// PHP's `bin2hex(random_bytes(16))` is `IdFormat::Hex { bytes: 16 }`). Default: only
    /// the crate's own IDs. New IDs are still made in the crate's own format, which the
    /// other program must accept too. [`build`](Self::build) refuses a format without
    /// `plain_keys`, under 16 bytes (128 bits) or over 64 bytes.
    ///
    /// ```
    /// # use tower_redis_session::{fred::prelude::*, ConfigError, IdFormat, RedisSessionLayer};
    /// # let client = Builder::default_centralized().build().unwrap();
    /// let layer = RedisSessionLayer::builder(client.clone())
    ///     .plain_keys(true)
    ///     .cookie_name("sid")
    ///     .id_format(IdFormat::Hex { bytes: 16 })
    ///     .build();
    /// assert!(layer.is_ok());
    ///
    /// let err = RedisSessionLayer::builder(client)
    ///     .id_format(IdFormat::Hex { bytes: 16 })
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err, ConfigError::IdFormatWithoutPlainKeys);
    /// ```
    pub fn id_format(mut self, format: crate::IdFormat) -> Self {
        self.config.id_format = Some(format);
        self
    }

    /// How long a session lives without a request (sliding expiry), for new sessions;
    /// a handler can change it per session with
    /// [`Session::set_ttl`](crate::Session::set_ttl). Default 30 minutes. Whole seconds.
    pub fn idle_ttl(mut self, ttl: Duration) -> Self {
        self.config.idle_ttl = ttl;
        self
    }

    /// How long a session may live at most, however active: it ends this long after it
    /// was created (to the millisecond, by Redis's clock), its key's TTL never reaches
    /// past that, and a rotation carries the deadline over unchanged. A session stored
    /// without a deadline (created before this was set, or by another program) ends at
    /// its `created_at` plus this lifetime.
    ///
    /// Default 12 hours: ASVS 4.0 (3.3.2) asks for periodic re-authentication, and a
    /// working day is its level 2 figure. `None` turns it off (an active session then
    /// lives as long as it is used).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_redis_session::{fred::prelude::*, RedisSessionLayer};
    /// # let client = Builder::default_centralized().build().unwrap();
    /// let layer = RedisSessionLayer::builder(client.clone())
    ///     .absolute_lifetime(Duration::from_secs(8 * 3600))
    ///     .build()?;
    /// let unlimited = RedisSessionLayer::builder(client).absolute_lifetime(None).build()?;
    /// # Ok::<(), tower_redis_session::ConfigError>(())
    /// ```
    pub fn absolute_lifetime(mut self, lifetime: impl Into<Option<Duration>>) -> Self {
        self.config.absolute_lifetime = lifetime.into();
        self
    }

    /// Whether [`Session::set_user_id`](crate::Session::set_user_id) rotates the ID.
    /// Default `true`: tying a session to a user is a login or a change of identity, and
    /// a new ID then keeps anyone who knew the old one (a fixation attack) out. Turn it
    /// off only if the app rotates by itself ([`Session::rotate_id`](crate::Session::rotate_id))
    /// wherever it ties a user.
    pub fn rotate_on_user_change(mut self, rotate: bool) -> Self {
        self.config.rotate_on_user_change = rotate;
        self
    }

    /// Skip the sliding-expiry write on load when the last one is more recent than
    /// this: fewer writes to replicate and persist, at the cost of a session expiring up
    /// to this much earlier than its idle TTL after its last request. Still one round
    /// trip. Default: refresh on every load. Must be shorter than the idle TTL.
    ///
    /// Only sessions whose idle TTL is longer than the interval skip refreshes: one given
    /// a shorter or equal TTL of its own ([`Session::set_ttl`](crate::Session::set_ttl))
    /// is refreshed on every load, as without a touch interval, so it never expires while
    /// in use.
    pub fn touch_interval(mut self, interval: Duration) -> Self {
        self.config.touch_interval = Some(interval);
        self
    }

    /// Load a request's session only when something asks for it: the axum
    /// [`Session`](crate::Session) extractor, or [`Session::load`](crate::Session::load)
    /// without axum. Default `false`: every request that carries a session cookie loads
    /// its session on the way in, which is what refreshes the sliding TTL.
    ///
    /// With `true`, a request whose handler never asks for its session (a health check,
    /// a static file, `/favicon.ico`) costs no Redis round trip, and leaves the key's
    /// TTL and the cookie as they were: it does not count as activity for the idle
    /// expiry. A request that asks for it pays the same round trips, reads and writes
    /// the same way and gets the same responses (`503` if the load fails) as in the
    /// default mode. Without axum, a session that is not loaded refuses changes with
    /// [`SessionError::NotLoaded`](crate::SessionError::NotLoaded), and one read before
    /// its load turns the response into a `500`; see [lazy mode](crate::Session#lazy-mode).
    ///
    /// ```
    /// # use tower_redis_session::{fred::prelude::*, RedisSessionLayer};
    /// # let client = Builder::default_centralized().build().unwrap();
    /// let layer = RedisSessionLayer::builder(client).lazy_load(true).build();
    /// assert!(layer.is_ok());
    /// ```
    pub fn lazy_load(mut self, lazy: bool) -> Self {
        self.config.lazy_load = lazy;
        self
    }

    /// How long to wait for Redis per command before answering 503. Default 2 seconds.
    /// A timed-out write may still land later; the scripts make that harmless.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.config.command_timeout = timeout;
        self
    }

    /// How the layer runs its Lua scripts in Redis. Default [`ScriptMode::Evalsha`]:
    /// `EVALSHA`, loading the scripts itself when Redis lacks them.
    ///
    /// [`ScriptMode::Functions`] calls a Redis Functions library instead (Redis 7.0 or
    /// later), loaded once per deployment with [`load_functions`](crate::load_functions),
    /// so the app's Redis user needs `FCALL` and cannot load or run Lua of its own.
    /// Replies, round trips and behaviour are the same, out of memory aside (the
    /// operations guide has the two differences).
    ///
    /// ```no_run
    /// use tower_redis_session::{load_functions, RedisSessionLayer, ScriptMode};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// // At deploy time, as a user allowed `FUNCTION LOAD`:
    /// load_functions(tower_redis_session::connect("redis://deployer:PASSWORD@127.0.0.1:6379").await?).await?;
    ///
    /// // In the app, as a user allowed `FCALL` (and no scripts):
    /// let pool = tower_redis_session::connect("redis://sessions:PASSWORD@127.0.0.1:6379").await?;
    /// let layer = RedisSessionLayer::builder(pool)
    ///     .script_mode(ScriptMode::Functions)
    ///     .build()?;
    /// layer.load_scripts().await?; // checks the library is there
    /// # Ok(()) }
    /// ```
    pub fn script_mode(mut self, mode: ScriptMode) -> Self {
        self.config.script_mode = mode;
        self
    }

    /// Serves a session this app loaded within the [touch interval](Self::touch_interval)
    /// again from memory, with no round trip to Redis, until the interval ends, the key
    /// expires, or anything changes it. Off by default; needs a touch interval.
    ///
    /// The cache stays coherent through Redis's client tracking: a connection of its own
    /// to each server that holds sessions (the server, the primary a Sentinel names, or
    /// every primary of a Cluster), with `CLIENT TRACKING ON BCAST PREFIX <key prefix>`
    /// redirected to itself and subscribed to `__redis__:invalidate`, hears of every
    /// change to a key under the prefix, by any program, and of expiries, evictions and
    /// flushes. This app's own
    /// writes drop their entry before they are sent and again once answered. If that
    /// connection fails or falls behind, the cache is emptied and every load goes to
    /// Redis until it is back; it must prove it is current at least every
    /// [`max_staleness`](ReadCache::max_staleness), or nothing is served from memory.
    ///
    /// A read served from the cache is what a load a moment earlier would have returned:
    /// a change made on another app instance shows up here once its invalidation arrives
    /// (normally well under a millisecond, at most `max_staleness`). Writes are never
    /// served from memory: a save still checks in Redis that the session lives.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tower_redis_session::{ReadCache, RedisSessionLayer};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = tower_redis_session::connect("redis://127.0.0.1:6379").await?;
    /// let layer = RedisSessionLayer::builder(pool)
    ///     .touch_interval(Duration::from_secs(5))
    ///     .read_cache(ReadCache::new())
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn read_cache(mut self, cache: ReadCache) -> Self {
        self.config.read_cache = Some(cache);
        self
    }

    /// Most user fields per session. Default 256.
    pub fn max_fields(mut self, limit: usize) -> Self {
        self.config.limits.max_fields = limit;
        self
    }

    /// Most bytes in one field name, and in one value. Default 64 KiB.
    pub fn max_value_size(mut self, limit: usize) -> Self {
        self.config.limits.max_value_size = limit;
        self
    }

    /// Most bytes of user field names and values together. Default 256 KiB. Checked
    /// where a change is made, and again against the stored session when changes that
    /// grow it are saved (parallel requests may each fit, but not together: the later
    /// ones answer 409). A stored session well over this (written by someone else) is
    /// treated as no session.
    pub fn max_session_size(mut self, limit: usize) -> Self {
        self.config.limits.max_session_size = limit;
        self
    }

    /// Name of the session cookie. Default `__Host-sid`: browsers refuse a cookie of that
    /// name from a sibling or parent domain, and insist it be `Secure`, host-only and for
    /// `Path=/`, so no other site can plant one (cookie tossing). A `__Host-` name
    /// requires `Secure`, `Path=/` and no `Domain`; a `__Secure-` name requires `Secure`.
    ///
    /// A plain name such as `sid` is for sharing the cookie with another program (or a
    /// `Domain`); it costs that protection: a page on any subdomain can then plant a
    /// cookie of that name for the parent domain.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.config.cookie.name = name.into();
        self
    }

    /// The cookie's `Secure` attribute. Default `true`; browsers accept `Secure` cookies
    /// from `http://localhost`, so leave it on in development too.
    pub fn secure(mut self, secure: bool) -> Self {
        self.config.cookie.secure = secure;
        self
    }

    /// The cookie's `HttpOnly` attribute. Default `true`.
    pub fn http_only(mut self, http_only: bool) -> Self {
        self.config.cookie.http_only = http_only;
        self
    }

    /// The cookie's `SameSite` attribute. Default [`SameSite::Lax`].
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.config.cookie.same_site = same_site;
        self
    }

    /// The cookie's `Path`. Default `/`.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.config.cookie.path = path.into();
        self
    }

    /// The cookie's `Domain`. Default: none (the cookie goes to the exact host only).
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.config.cookie.domain = Some(domain.into());
        self
    }

    /// Make the cookie persistent: `Max-Age` follows the session's remaining TTL and is
    /// refreshed on every response that writes to a live session, and on every read whose
    /// load renewed the key's TTL (with a [touch interval](Self::touch_interval), about once
    /// per interval). Such a read first checks, in one more round trip, that the session is
    /// still live and what is left of its TTL, so a read that raced a rotation or a logout
    /// never sends the old ID back. Default `false`: a session cookie, gone when the browser
    /// closes.
    pub fn persistent_cookie(mut self, persistent: bool) -> Self {
        self.config.cookie.persistent = persistent;
        self
    }

    /// Builds the response sent instead of the handler's when the session store fails,
    /// or when the request's changes were refused because its session ended or moved on
    /// meanwhile ([`ErrorKind::Conflict`](crate::ErrorKind::Conflict)). Defaults: `503`
    /// with `Retry-After: 1` for an unavailable store, `409 Conflict` for refused
    /// changes, `500` for an unexpected reply, each with a one-line text body. The
    /// [`Error`] is also put in the response's extensions. A `409` never carries a
    /// `Set-Cookie`: the browser may already hold a newer cookie.
    ///
    /// ```
    /// # use tower_redis_session::{fred::prelude::*, RedisSessionLayer};
    /// # let client = Builder::default_centralized().build().unwrap();
    /// let layer = RedisSessionLayer::builder(client)
    ///     .error_response(|_err| {
    ///         http::Response::builder()
    ///             .status(503)
    ///             .header("retry-after", "5")
    ///             .header("content-type", "text/html")
    ///             .body("<h1>Please try again in a moment</h1>".into())
    ///             .unwrap()
    ///     })
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn error_response<F>(mut self, f: F) -> Self
    where
        F: Fn(&Error) -> http::Response<Bytes> + Send + Sync + 'static,
    {
        self.config.error_response = Some(Arc::new(f) as ErrorResponseFn);
        self
    }

    /// Encrypts user field values at rest with `ring`'s newest key (XChaCha20-Poly1305,
    /// bound to the session and the field name); every key in the ring decrypts. Default:
    /// values are stored as given.
    ///
    /// Field names stay plaintext (field-level writes need them), and so do counters
    /// written by [`Session::increment`](crate::Session::increment): `HINCRBY` needs a
    /// plaintext integer. Internal fields stay plaintext too.
    #[cfg(feature = "encryption")]
    #[cfg_attr(docsrs, doc(cfg(feature = "encryption")))]
    pub fn encryption(mut self, ring: crate::crypto::KeyRing) -> Self {
        self.config.encryption = Some(Arc::new(ring));
        self
    }

    /// What to do with a stored value that fails to decrypt. Default
    /// [`DecryptFailure::DropField`](crate::crypto::DecryptFailure::DropField).
    #[cfg(feature = "encryption")]
    #[cfg_attr(docsrs, doc(cfg(feature = "encryption")))]
    pub fn on_decrypt_failure(mut self, policy: crate::crypto::DecryptFailure) -> Self {
        self.config.decrypt_failure = policy;
        self
    }

    /// Checks the settings and builds the layer.
    ///
    /// ```
    /// # use tower_redis_session::{fred::prelude::*, ConfigError, RedisSessionLayer};
    /// # let client = Builder::default_centralized().build().unwrap();
    /// let err = RedisSessionLayer::builder(client)
    ///     .cookie_name("__Host-sid")
    ///     .domain("example.com")
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err, ConfigError::HostPrefixWithDomain);
    /// ```
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first setting that is out of range or breaks a
    /// cookie-prefix rule.
    pub fn build(self) -> Result<RedisSessionLayer, ConfigError> {
        validate(&self.config)?;
        let store = Store::new(self.redis, &self.config);
        Ok(RedisSessionLayer {
            shared: Arc::new(Shared {
                config: self.config,
                store,
            }),
        })
    }
}

/// Largest TTL or lifetime accepted, in seconds: 68 years (see `model::MAX_TTL_SECS`).
const MAX_SECS: u64 = crate::model::MAX_TTL_SECS;

fn validate(config: &Config) -> Result<(), ConfigError> {
    let cookie = &config.cookie;
    let is_token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if cookie.name.is_empty() || !cookie.name.bytes().all(is_token) {
        return Err(ConfigError::InvalidCookieName {
            name: cookie.name.clone(),
        });
    }
    let is_attr = |s: &str| s.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b';');
    if !cookie.path.starts_with('/') || !is_attr(&cookie.path) {
        return Err(ConfigError::InvalidCookieAttribute { name: "path" });
    }
    if cookie
        .domain
        .as_deref()
        .is_some_and(|d| d.is_empty() || !is_attr(d))
    {
        return Err(ConfigError::InvalidCookieAttribute { name: "domain" });
    }
    // Browsers match the prefixes case-insensitively, so the rules apply to `__HOST-` too.
    let lower_name = cookie.name.to_ascii_lowercase();
    if lower_name.starts_with("__host-") {
        if !cookie.secure {
            return Err(ConfigError::HostPrefixNotSecure);
        }
        if cookie.path != "/" {
            return Err(ConfigError::HostPrefixPathNotRoot);
        }
        if cookie.domain.is_some() {
            return Err(ConfigError::HostPrefixWithDomain);
        }
    }
    if lower_name.starts_with("__secure-") && !cookie.secure {
        return Err(ConfigError::SecurePrefix);
    }
    // Browsers drop a `SameSite=None` cookie that is not `Secure`.
    if cookie.same_site == SameSite::None && !cookie.secure {
        return Err(ConfigError::SameSiteNoneNotSecure);
    }
    if let Some(format) = config.id_format {
        crate::id::check_format(format, config.plain_keys)?;
    }
    // Name, ID, attributes and `Max-Age` must stay under the 4096 bytes browsers keep.
    let longest_cookie = cookie.name.len()
        + cookie.path.len()
        + cookie.domain.as_ref().map_or(0, String::len)
        + crate::id::longest(config.id_format)
        + 96;
    if longest_cookie > 4096 {
        return Err(ConfigError::CookieTooLong);
    }
    if config.key_prefix.contains(['{', '}']) {
        return Err(ConfigError::KeyPrefixHashTag {
            prefix: config.key_prefix.clone(),
        });
    }
    let secs = |setting, d: Duration| {
        if d.as_secs() == 0 || d.as_secs() > MAX_SECS {
            Err(ConfigError::DurationOutOfRange { setting })
        } else {
            Ok(())
        }
    };
    secs("idle_ttl", config.idle_ttl)?;
    if let Some(lifetime) = config.absolute_lifetime {
        if lifetime < Duration::from_secs(1) || lifetime.as_secs() > MAX_SECS {
            return Err(ConfigError::DurationOutOfRange {
                setting: "absolute_lifetime",
            });
        }
    }
    if let Some(touch) = config.touch_interval {
        if touch >= config.idle_ttl {
            return Err(ConfigError::TouchIntervalNotShorterThanIdleTtl);
        }
    }
    if config.command_timeout.is_zero() {
        return Err(ConfigError::ZeroCommandTimeout);
    }
    if let Some(cache) = &config.read_cache {
        if config.touch_interval.is_none() {
            return Err(ConfigError::ReadCacheWithoutTouchInterval);
        }
        if cache.max_staleness < Duration::from_millis(3) || cache.max_staleness.as_secs() > 60 {
            return Err(ConfigError::DurationOutOfRange {
                setting: "max_staleness",
            });
        }
        for (setting, value) in [
            ("read_cache.max_entries", cache.max_entries),
            ("read_cache.max_bytes", cache.max_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::InvalidLimit { setting });
            }
        }
    }
    let limits = &config.limits;
    for (setting, value) in [
        ("max_fields", limits.max_fields),
        ("max_value_size", limits.max_value_size),
        ("max_session_size", limits.max_session_size),
    ] {
        if value == 0 {
            return Err(ConfigError::InvalidLimit { setting });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Edit = fn(&mut Config);
    type Case = (&'static str, Edit);

    fn check(f: impl FnOnce(&mut Config)) -> Result<(), ConfigError> {
        let mut config = Config::default();
        f(&mut config);
        validate(&config)
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(check(|_| {}), Ok(()));
    }

    #[test]
    fn defaults_are_safe_with_the_shortest_setup() {
        let config = Config::default();
        assert_eq!(config.cookie.name, "__Host-sid");
        assert!(config.cookie.secure && config.cookie.http_only);
        assert_eq!(config.cookie.path, "/");
        assert_eq!(config.cookie.domain, None);
        assert_eq!(
            config.absolute_lifetime,
            Some(Duration::from_secs(12 * 3600))
        );
        assert!(config.rotate_on_user_change);
    }

    #[test]
    fn same_site_none_needs_secure() {
        assert_eq!(
            check(|c| {
                c.cookie.name = "sid".into();
                c.cookie.same_site = SameSite::None;
                c.cookie.secure = false;
            }),
            Err(ConfigError::SameSiteNoneNotSecure)
        );
        assert_eq!(check(|c| c.cookie.same_site = SameSite::None), Ok(()));
    }

    #[test]
    fn host_prefix_rules_are_enforced() {
        let host = |c: &mut Config| c.cookie.name = "__Host-sid".into();
        let plain = |c: &mut Config| c.cookie.name = "sid".into();
        assert_eq!(check(plain), Ok(()));
        assert_eq!(check(host), Ok(()));
        let cases: [(Edit, ConfigError); 3] = [
            (
                |c| c.cookie.secure = false,
                ConfigError::HostPrefixNotSecure,
            ),
            (
                |c| c.cookie.path = "/app".into(),
                ConfigError::HostPrefixPathNotRoot,
            ),
            (
                |c| c.cookie.domain = Some("example.com".into()),
                ConfigError::HostPrefixWithDomain,
            ),
        ];
        for (f, expected) in cases {
            let result = check(|c| {
                host(c);
                f(c);
            });
            assert_eq!(result, Err(expected));
        }
        assert_eq!(
            check(|c| {
                c.cookie.name = "__Secure-sid".into();
                c.cookie.secure = false;
            }),
            Err(ConfigError::SecurePrefix)
        );
    }

    #[test]
    fn bad_values_are_refused() {
        let cases: [Case; 11] = [
            ("lower-case host prefix, not secure", |c| {
                c.cookie.name = "__host-sid".into();
                c.cookie.secure = false;
            }),
            ("cookie over 4096 bytes", |c| {
                c.cookie.path = format!("/{}", "a".repeat(4000))
            }),
            ("empty name", |c| c.cookie.name = String::new()),
            ("name with space", |c| c.cookie.name = "s id".into()),
            ("name with equals", |c| c.cookie.name = "s=id".into()),
            ("relative path", |c| c.cookie.path = "app".into()),
            ("path with semicolon", |c| c.cookie.path = "/a;b".into()),
            ("hash tag prefix", |c| c.key_prefix = "{s}:".into()),
            ("zero ttl", |c| c.idle_ttl = Duration::ZERO),
            ("touch >= ttl", |c| c.touch_interval = Some(c.idle_ttl)),
            ("zero limit", |c| c.limits.max_fields = 0),
        ];
        for (name, f) in cases {
            assert!(check(f).is_err(), "{name}");
        }
    }
}
