//! The contenders: one axum app each, with the same routes and the same answers.
//!
//! | route | what the handler does |
//! |---|---|
//! | `/anon` | ignores the session, answers `ok` (sent with and without a session cookie) |
//! | `/read` | answers the session's `username` |
//! | `/incr` | increments `page_views`, answers the new value |
//! | `/login` | creates a session with `username` and `role`, answers `ok` |
//! | `/setup?user=K&fields=N` | creates a session with N user fields (`username`, `page_views`, `f002`..): bench setup |
//! | `/peek` | answers `page_views` without changing it: the bench's correctness check |

use std::{collections::HashMap, net::SocketAddr, sync::LazyLock, time::Duration};

use axum::{
    extract::{RawQuery, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use fred::{clients::Pool, interfaces::ClientLike as _, types::scripts::Script, types::Value};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use tower_redis_session::{ReadCache, RedisSessionLayer, ScriptMode, Session, SessionError};

/// Idle TTL of every contender's sessions.
pub const IDLE_TTL_SECS: u64 = 30 * 60;

/// Most user fields per session, raised from the default 256 for the 500-field runs.
pub const MAX_FIELDS: usize = 1000;

/// Which app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Contender {
    /// This crate.
    Ours,
    /// tower-sessions 0.14 + tower-sessions-redis-store 0.16, as their docs show.
    TowerSessions,
    /// Hand-written fred calls: the fewest round trips, minimal Lua (the floor).
    Floor,
    /// Hand-written fred calls running this crate's own Lua scripts (diagnostic: splits
    /// the gap to the floor into Lua-side and Rust-side cost).
    CrateLua,
    /// No session layer at all (`anon` and `untouched` only): the framework's ceiling.
    NoSession,
    /// tower-sessions with `with_always_save(true)` (`read` only, diagnostic): it then
    /// refreshes the session's expiry on every read, as this crate does.
    TsAlwaysSave,
    /// This crate with `lazy_load(true)` (`untouched` and `read`): the session is loaded
    /// only when the handler asks for it.
    OursLazy,
    /// This crate with a touch interval of [`TOUCH_INTERVAL`] and the read cache on
    /// (`read`, `incr`, and the fields curve). Its keys have a prefix of their own
    /// ([`CACHED_PREFIX`]), so its tracking connection hears only of its own sessions,
    /// not of the writes the other contenders make.
    OursCached,
    /// This crate with the same touch interval and no cache (`read`, diagnostic): splits
    /// what the cache saves from what the touch interval alone saves.
    OursTouch,
    /// This crate with `ScriptMode::Functions` (`read`, `incr`, `login`): the same scripts
    /// as one Redis Functions library, called with `FCALL`.
    OursFunctions,
}

/// The touch interval of the cached contender and its no-cache twin.
pub const TOUCH_INTERVAL: Duration = Duration::from_secs(5);

/// Key prefix of the cached contender.
pub const CACHED_PREFIX: &str = "cached:";

impl Contender {
    pub const ALL: [Self; 10] = [
        Self::Ours,
        Self::TowerSessions,
        Self::Floor,
        Self::CrateLua,
        Self::NoSession,
        Self::TsAlwaysSave,
        Self::OursLazy,
        Self::OursCached,
        Self::OursTouch,
        Self::OursFunctions,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Ours => "tower-redis-session",
            Self::TowerSessions => "tower-sessions",
            Self::Floor => "fred floor",
            Self::CrateLua => "fred + crate Lua",
            Self::NoSession => "no session",
            Self::TsAlwaysSave => "tower-sessions always_save",
            Self::OursLazy => "tower-redis-session lazy",
            Self::OursCached => "tower-redis-session + read cache",
            Self::OursTouch => "tower-redis-session touch 5 s",
            Self::OursFunctions => "tower-redis-session Functions",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::TowerSessions => "ts",
            Self::Floor => "floor",
            Self::CrateLua => "cratelua",
            Self::NoSession => "none",
            Self::TsAlwaysSave => "tsalways",
            Self::OursLazy => "lazy",
            Self::OursCached => "cache",
            Self::OursTouch => "touch",
            Self::OursFunctions => "functions",
        }
    }

    pub fn from_short(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.short() == s)
    }

    /// The Redis key of the session behind cookie value `id`.
    pub fn key_of(self, id: &str) -> String {
        match self {
            Self::TowerSessions | Self::TsAlwaysSave => id.to_owned(),
            Self::OursCached => format!("{CACHED_PREFIX}{}", digest(id)),
            _ => format!("session:{}", digest(id)),
        }
    }

    /// Whether its sessions live in a Redis hash (so the load script reads them).
    pub fn has_sessions(self) -> bool {
        self != Self::NoSession
    }
}

fn digest(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(id.as_bytes()))
}

/// `user=K&fields=N` → (K, N).
fn setup_query(q: Option<&str>) -> (u64, usize) {
    let mut user = 0;
    let mut fields = 2;
    for pair in q.unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("user", v)) => user = v.parse().unwrap_or(0),
            Some(("fields", v)) => fields = v.parse().unwrap_or(2),
            _ => {}
        }
    }
    (user, fields)
}

/// The user fields of a setup session: `username`, `page_views` (0), then `f002`.. with
/// 16-byte values, `fields` in all.
pub fn setup_fields(user: u64, fields: usize) -> Vec<(String, String)> {
    let mut out = vec![
        ("username".to_owned(), format!("user{user}")),
        ("page_views".to_owned(), "0".to_owned()),
    ];
    for i in 2..fields.max(1) {
        out.push((format!("f{i:03}"), format!("v{user:07}-{i:08}")));
    }
    out.truncate(fields.max(1));
    out
}

/// The running contenders.
pub struct Apps {
    pub addrs: HashMap<Contender, SocketAddr>,
    /// The cached contender's layer, for its [`cache_stats`](RedisSessionLayer::cache_stats).
    pub cached: RedisSessionLayer,
}

/// How a contender of this crate is set up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Default,
    Lazy,
    Touch,
    Cached,
    Functions,
}

/// Starts every contender on its own 127.0.0.1 port; each gets its own fred pool of
/// `pool_size` clients made by this crate's `client_builder` (timeouts, reconnect,
/// `TCP_NODELAY`), so that the Redis client is the same for all.
pub async fn start(url: &str, pool_size: usize) -> Result<Apps, Box<dyn std::error::Error>> {
    let mut addrs = HashMap::new();
    let mut cached = None;
    for contender in Contender::ALL {
        let router = match contender {
            Contender::Ours => ours(pool(url, pool_size).await?, Variant::Default).await?.0,
            Contender::OursLazy => ours(pool(url, pool_size).await?, Variant::Lazy).await?.0,
            Contender::OursTouch => ours(pool(url, pool_size).await?, Variant::Touch).await?.0,
            Contender::OursFunctions => {
                let pool = pool(url, pool_size).await?;
                tower_redis_session::load_functions(pool.clone()).await?;
                ours(pool, Variant::Functions).await?.0
            }
            Contender::OursCached => {
                let (router, layer) = ours(pool(url, pool_size).await?, Variant::Cached).await?;
                cached = Some(layer);
                router
            }
            Contender::TowerSessions => tower_sessions_app(pool(url, pool_size).await?, false),
            Contender::TsAlwaysSave => tower_sessions_app(pool(url, pool_size).await?, true),
            Contender::Floor => floor(pool(url, pool_size).await?, false).await?,
            Contender::CrateLua => floor(pool(url, pool_size).await?, true).await?,
            Contender::NoSession => Router::new().route("/anon", get(anon)),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addrs.insert(contender, listener.local_addr()?);
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, router).await {
                eprintln!("e2e-bench: {} server stopped: {err}", contender.name());
            }
        });
    }
    Ok(Apps {
        addrs,
        cached: cached.expect("the cached contender is started"),
    })
}

async fn pool(url: &str, size: usize) -> Result<Pool, fred::error::Error> {
    let pool = tower_redis_session::client_builder(url)?.build_pool(size)?;
    pool.init().await?;
    Ok(pool)
}

async fn anon() -> &'static str {
    "ok"
}

// ---------------------------------------------------------------------------------------
// This crate.

async fn ours(
    pool: Pool,
    variant: Variant,
) -> Result<(Router, RedisSessionLayer), Box<dyn std::error::Error>> {
    let mut builder = RedisSessionLayer::builder(pool)
        .max_fields(MAX_FIELDS)
        .lazy_load(variant == Variant::Lazy);
    if matches!(variant, Variant::Touch | Variant::Cached) {
        builder = builder.touch_interval(TOUCH_INTERVAL);
    }
    if variant == Variant::Functions {
        builder = builder.script_mode(ScriptMode::Functions);
    }
    if variant == Variant::Cached {
        builder = builder
            .key_prefix(CACHED_PREFIX)
            .read_cache(ReadCache::new());
    }
    let layer = builder.build()?;
    layer.load_scripts().await?;
    let router = Router::new()
        .route("/anon", get(anon))
        .route("/read", get(ours_read))
        .route("/incr", get(ours_incr))
        .route("/login", get(ours_login))
        .route("/setup", get(ours_setup))
        .route("/peek", get(ours_peek))
        .layer(layer.clone());
    Ok((router, layer))
}

async fn ours_read(session: Session) -> String {
    session.get("username").unwrap_or_default()
}

async fn ours_incr(session: Session) -> Result<String, SessionError> {
    Ok(session.increment("page_views", 1)?.to_string())
}

async fn ours_login(session: Session) -> Result<&'static str, SessionError> {
    session.insert("username", "alice")?;
    session.insert("role", "member")?;
    Ok("ok")
}

async fn ours_setup(session: Session, RawQuery(q): RawQuery) -> Result<&'static str, SessionError> {
    let (user, fields) = setup_query(q.as_deref());
    for (name, value) in setup_fields(user, fields) {
        session.insert(&name, value)?;
    }
    Ok("ok")
}

async fn ours_peek(session: Session) -> String {
    session.get("page_views").unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// tower-sessions + tower-sessions-redis-store, set up as their docs show.

fn tower_sessions_app(pool: Pool, always_save: bool) -> Router {
    use tower_sessions::{cookie::time, Expiry, SessionManagerLayer};
    use tower_sessions_redis_store::RedisStore;

    let layer = SessionManagerLayer::new(RedisStore::new(pool))
        .with_expiry(Expiry::OnInactivity(time::Duration::seconds(
            IDLE_TTL_SECS as i64,
        )))
        .with_always_save(always_save);
    Router::new()
        .route("/anon", get(anon))
        .route("/read", get(ts_read))
        .route("/incr", get(ts_incr))
        .route("/login", get(ts_login))
        .route("/setup", get(ts_setup))
        .route("/peek", get(ts_peek))
        .layer(layer)
}

type TsResult<T> = Result<T, (StatusCode, String)>;

fn ts_err(err: tower_sessions::session::Error) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
}

async fn ts_read(session: tower_sessions::Session) -> TsResult<String> {
    let name: Option<String> = session.get("username").await.map_err(ts_err)?;
    Ok(name.unwrap_or_default())
}

async fn ts_incr(session: tower_sessions::Session) -> TsResult<String> {
    let views: i64 = session
        .get("page_views")
        .await
        .map_err(ts_err)?
        .unwrap_or(0)
        + 1;
    session.insert("page_views", views).await.map_err(ts_err)?;
    Ok(views.to_string())
}

async fn ts_login(session: tower_sessions::Session) -> TsResult<&'static str> {
    session.insert("username", "alice").await.map_err(ts_err)?;
    session.insert("role", "member").await.map_err(ts_err)?;
    Ok("ok")
}

async fn ts_setup(
    session: tower_sessions::Session,
    RawQuery(q): RawQuery,
) -> TsResult<&'static str> {
    let (user, fields) = setup_query(q.as_deref());
    for (name, value) in setup_fields(user, fields) {
        if name == "page_views" {
            session.insert(&name, 0_i64).await.map_err(ts_err)?;
        } else {
            session.insert(&name, value).await.map_err(ts_err)?;
        }
    }
    Ok("ok")
}

async fn ts_peek(session: tower_sessions::Session) -> TsResult<String> {
    let views: Option<i64> = session.get("page_views").await.map_err(ts_err)?;
    Ok(views.map(|v| v.to_string()).unwrap_or_default())
}

// ---------------------------------------------------------------------------------------
// Hand-written fred calls. The cookie is found and checked by hand, the key is the same
// `session:` + base64url(SHA-256(id)), and each step is one EVALSHA on one key, as in
// The crate's per-request table: read = 1, incr = 2 (load, then a guarded HINCRBY), login = 1.

/// RFC 3339 from Redis's clock, as the crate's scripts write it.
const FLOOR_TIME: &str = r"
local function stamp()
  local secs = tonumber(redis.call('TIME')[1])
  local days = math.floor(secs / 86400)
  local rem = secs - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d+00:00',
    y, m, d, math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60)
end
";

/// Load: HGETALL, then refresh `last_accessed_at` and the TTL. ARGV[1] = TTL in ms.
static FLOOR_LOAD: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(format!(
        "{FLOOR_TIME}
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return h end
redis.call('HSET', KEYS[1], 'last_accessed_at', stamp())
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return h"
    ))
});

/// Increment if the session still exists. ARGV = field, by, TTL in ms.
static FLOOR_INCR: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return n",
    )
});

/// Create unless the key exists. ARGV = TTL in s, TTL in ms, field, value, ...
static FLOOR_CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(format!(
        "{FLOOR_TIME}
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local now = stamp()
redis.call('HSET', KEYS[1], 'created_at', now, 'last_accessed_at', now, 'session_ttl', ARGV[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1"
    ))
});

// The crate's own scripts, exactly the text the layer sends (same SHA1), with the
// layer's arguments: every reply is `{result, KEYS[1]}`, as the layer receives it.
fn crate_script(name: &str) -> Script {
    Script::from_lua(
        tower_redis_session::__private::script_source(name).expect("a script of the crate"),
    )
}
static CRATE_LOAD: LazyLock<Script> = LazyLock::new(|| crate_script("lua/load.lua"));
static CRATE_SAVE: LazyLock<Script> = LazyLock::new(|| crate_script("lua/save.lua"));
static CRATE_CREATE: LazyLock<Script> = LazyLock::new(|| crate_script("lua/create.lua"));
/// The layer's default absolute lifetime (12 h), in ms, as its scripts get it.
const CRATE_LIFETIME_MS: i64 = 12 * 3600 * 1000;

/// The result of a crate script's `{result, key}` reply, if the key is `key`.
fn crate_result(reply: Value, key: &str) -> Option<Value> {
    let Value::Array(mut items) = reply else {
        return None;
    };
    if items.len() != 2 || items.pop()?.as_str().as_deref() != Some(key) {
        return None;
    }
    items.pop()
}

/// The status of a crate script's `{{status, ...}, key}` reply (0 if unreadable).
fn crate_status(reply: Value, key: &str) -> i64 {
    match crate_result(reply, key) {
        Some(Value::Array(items)) => items.first().and_then(Value::as_i64).unwrap_or(0),
        _ => 0,
    }
}

#[derive(Clone)]
struct Floor {
    pool: Pool,
    /// Run the crate's Lua scripts instead of the minimal ones.
    crate_lua: bool,
}

async fn floor(pool: Pool, crate_lua: bool) -> Result<Router, fred::error::Error> {
    for script in [
        &*FLOOR_LOAD,
        &*FLOOR_INCR,
        &*FLOOR_CREATE,
        &*CRATE_LOAD,
        &*CRATE_SAVE,
        &*CRATE_CREATE,
    ] {
        script.load(pool.next()).await?;
    }
    Ok(Router::new()
        .route("/anon", get(anon))
        .route("/read", get(floor_read))
        .route("/incr", get(floor_incr))
        .route("/login", get(floor_login))
        .route("/setup", get(floor_setup))
        .route("/peek", get(floor_peek))
        .with_state(Floor { pool, crate_lua }))
}

const TTL_MS: i64 = IDLE_TTL_SECS as i64 * 1000;

/// The `sid` cookie's value, if it is exactly one well-formed ID (43 characters of
/// base64url decoding to 32 bytes), as the crate requires.
fn floor_cookie(headers: &HeaderMap) -> Option<String> {
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            if let Some(v) = pair.strip_prefix(b"sid=") {
                if found.is_some() {
                    return None;
                }
                found = Some(v);
            }
        }
    }
    let value = found?;
    let mut bytes = [0u8; 32];
    if value.len() != 43 || URL_SAFE_NO_PAD.decode_slice(value, &mut bytes) != Ok(32) {
        return None;
    }
    String::from_utf8(value.to_vec()).ok()
}

fn unavailable(err: fred::error::Error) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response()
}

impl Floor {
    /// One round trip: the session's fields, or `None` if there is none.
    async fn load(
        &self,
        key: String,
    ) -> Result<Option<HashMap<String, String>>, fred::error::Error> {
        if self.crate_lua {
            let args: Vec<Value> = vec![
                0.into(),
                ((MAX_FIELDS + 16) as i64).into(),
                ((256 * 1024 + 1024) as i64).into(),
                CRATE_LIFETIME_MS.into(),
            ];
            let reply: Value = CRATE_LOAD
                .evalsha_with_reload(self.pool.next(), key.as_str(), args)
                .await?;
            // The load replies `{name, value, .., ttl, status}` (status last).
            let Some(Value::Array(mut flat)) = crate_result(reply, &key) else {
                return Ok(None);
            };
            if flat.pop().and_then(|v| v.as_i64()) != Some(1) || flat.pop().is_none() {
                return Ok(None);
            }
            return Ok(Some(Value::Array(flat).convert()?));
        }
        let fields: HashMap<String, String> = FLOOR_LOAD
            .evalsha_with_reload(self.pool.next(), key, TTL_MS)
            .await?;
        Ok((!fields.is_empty()).then_some(fields))
    }

    /// One round trip: a new session with `fields`; its cookie value.
    async fn create(&self, fields: &[(String, String)]) -> Result<String, fred::error::Error> {
        loop {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let id = URL_SAFE_NO_PAD.encode(bytes);
            let key = format!("session:{}", digest(&id));
            let mut args: Vec<Value> = Vec::with_capacity(2 + fields.len() * 2);
            args.push((IDLE_TTL_SECS as i64).into());
            args.push(
                if self.crate_lua {
                    CRATE_LIFETIME_MS
                } else {
                    TTL_MS
                }
                .into(),
            );
            for (name, value) in fields {
                args.push(name.as_str().into());
                args.push(value.as_str().into());
            }
            let created = if self.crate_lua {
                let reply: Value = CRATE_CREATE
                    .evalsha_with_reload(self.pool.next(), key.as_str(), args)
                    .await?;
                crate_status(reply, &key)
            } else {
                FLOOR_CREATE
                    .evalsha_with_reload::<i64, _, _>(self.pool.next(), key, args)
                    .await?
            };
            if created == 1 {
                return Ok(id);
            }
        }
    }
}

fn with_cookie(id: &str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        HeaderValue::try_from(format!("sid={id}; HttpOnly; SameSite=Lax; Secure; Path=/"))
            .expect("base64url is a valid header value"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn floor_read(State(floor): State<Floor>, headers: HeaderMap) -> Response {
    let Some(id) = floor_cookie(&headers) else {
        return String::new().into_response();
    };
    match floor.load(format!("session:{}", digest(&id))).await {
        Ok(fields) => fields
            .and_then(|mut f| f.remove("username"))
            .unwrap_or_default()
            .into_response(),
        Err(err) => unavailable(err),
    }
}

async fn floor_peek(State(floor): State<Floor>, headers: HeaderMap) -> Response {
    let Some(id) = floor_cookie(&headers) else {
        return String::new().into_response();
    };
    match floor.load(format!("session:{}", digest(&id))).await {
        Ok(fields) => fields
            .and_then(|mut f| f.remove("page_views"))
            .unwrap_or_default()
            .into_response(),
        Err(err) => unavailable(err),
    }
}

async fn floor_incr(State(floor): State<Floor>, headers: HeaderMap) -> Response {
    let Some(id) = floor_cookie(&headers) else {
        return (StatusCode::BAD_REQUEST, "no session").into_response();
    };
    let key = format!("session:{}", digest(&id));
    let fields = match floor.load(key.clone()).await {
        Ok(Some(fields)) => fields,
        Ok(None) => return (StatusCode::BAD_REQUEST, "no session").into_response(),
        Err(err) => return unavailable(err),
    };
    let seen: i64 = fields
        .get("page_views")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let result: Result<Option<i64>, _> = if floor.crate_lua {
        let args: Vec<Value> = vec![
            "".into(),
            CRATE_LIFETIME_MS.into(),
            "i".into(),
            "page_views".into(),
            1.into(),
        ];
        CRATE_SAVE
            .evalsha_with_reload::<Value, _, _>(floor.pool.next(), key.as_str(), args)
            .await
            .map(|reply| (crate_status(reply, &key) == 1).then_some(seen + 1))
    } else {
        let args: Vec<Value> = vec!["page_views".into(), 1.into(), TTL_MS.into()];
        FLOOR_INCR
            .evalsha_with_reload(floor.pool.next(), key, args)
            .await
    };
    match result {
        Ok(Some(n)) => n.to_string().into_response(),
        Ok(None) => (StatusCode::CONFLICT, "session gone").into_response(),
        Err(err) => unavailable(err),
    }
}

async fn floor_login(State(floor): State<Floor>) -> Response {
    let fields = [
        ("username".to_owned(), "alice".to_owned()),
        ("role".to_owned(), "member".to_owned()),
    ];
    match floor.create(&fields).await {
        Ok(id) => with_cookie(&id, "ok"),
        Err(err) => unavailable(err),
    }
}

async fn floor_setup(State(floor): State<Floor>, RawQuery(q): RawQuery) -> Response {
    let (user, fields) = setup_query(q.as_deref());
    match floor.create(&setup_fields(user, fields)).await {
        Ok(id) => with_cookie(&id, "ok"),
        Err(err) => unavailable(err),
    }
}

/// How long the bench waits for one HTTP answer before calling it an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
