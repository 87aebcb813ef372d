//! Server-side sessions in Redis for any tower-based HTTP stack (axum, hyper, tonic),
//! through the [`fred`] client.
//!
//! The browser holds only an opaque random ID in a cookie; the data lives in a Redis
//! hash. A request costs at most one Redis round trip to read its session and one to
//! write it, and concurrent requests to one session never undo each other's changes.
//!
//! ```rust,no_run
//! use axum::{routing::get, Router};
//! use tower_redis_session::{RedisSessionLayer, Session, SessionError};
//!
//! async fn counter(session: Session) -> Result<String, SessionError> {
//!     let views = session.increment("page_views", 1)?;
//!     Ok(format!("{views} views"))
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let pool = tower_redis_session::connect("redis://127.0.0.1:6379").await?;
//!     let app = Router::new()
//!         .route("/", get(counter))
//!         .layer(RedisSessionLayer::new(pool));
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! With these defaults the cookie is `__Host-sid` (`Secure`, `HttpOnly`, `SameSite=Lax`,
//! `Path=/`, no `Domain`), a session lives 30 minutes without a request and 12 hours at
//! most however active, and [`Session::set_user_id`] gives the session a new ID. Every
//! setting is on [`RedisSessionLayer::builder`]; the [guide] tours the API and the
//! settings.
//!
//! # How it works
//!
//! | request | Redis round trips | what happens |
//! |---|---|---|
//! | no cookie, handler does not write | 0 | no `Set-Cookie` |
//! | no cookie, handler writes | 1 | new ID; hash and TTL created only if the key does not exist (a collision never overwrites); `Set-Cookie` |
//! | valid cookie, handler only reads | 1 | one script loads the hash, checks the absolute deadline, sets `last_accessed_at`, refreshes the TTL |
//! | valid cookie, handler writes | 2 | the load, then one script applying the changes, only if the session still exists and is not being rotated; otherwise `409 Conflict` |
//! | cookie for a missing, expired or terminated session | 1 | a fresh, empty session; the client's ID is never adopted; the stale cookie is cleared if nothing is written |
//! | cookie for a session rotated away or logged out | 1 | an empty session; the response never touches the cookie (the browser may hold a newer one); a write is refused with `409 Conflict` |
//! | logout ([`Session::destroy`]) | 2 | the load, then the key is replaced by a marker; the cookie is expired |
//! | ID rotation ([`Session::rotate_id`], or [`Session::set_user_id`]) | 4 | the load; one script marks the old key and reads it; the new key is created (only if it does not exist) from those contents plus this request's changes; the old key becomes a marker |
//!
//! A session tied to a user ([`Session::set_user_id`]) costs one more round trip for each
//! change to the user's index: a rotation adds the new ID (a login of a session not tied
//! yet: 5) and, for a session tied already, removes the old one (a rotation or a new
//! login: 6); a logout removes the session's entry (3).
//!
//! With a [persistent cookie](RedisSessionLayerBuilder::persistent_cookie), a read whose load renewed the
//! key's TTL (every read; with a touch interval, about once per interval) costs one more
//! round trip (2): a small script checks that the session is still live and not being
//! rotated away, and reads what is left of its TTL for the cookie's `Max-Age`. The cookie
//! goes out again only then, so a read that loaded a session another request has since
//! rotated or logged out never puts the old ID back in the browser. Reads that renewed
//! nothing, and every read with the default browser-session cookie, stay at 1.
//!
//! A marker is a small hash (`ended` = `rotated`, `destroyed` or `terminated`) that lives
//! 60 seconds and grants nothing; the [data model] describes every key and field.
//!
//! The load happens on the way in, for every request that carries a session cookie. In
//! lazy mode ([`RedisSessionLayerBuilder::lazy_load`]) it happens only when something
//! asks for the session (the axum extractor, or [`Session::load`]): a request that never
//! does costs 0 round trips and leaves the TTL and the cookie alone, and one that does
//! pays exactly the round trips above.
//!
//! With the opt-in read cache ([`RedisSessionLayerBuilder::read_cache`]) and a touch
//! interval, a read of a session this app loaded within the interval costs 0 round
//! trips: it is served from memory, kept coherent with Redis by client tracking, until
//! the interval ends, the key expires, or anything changes it. Writes pay the round trips
//! above.
//!
//! Handlers read synchronously from the loaded copy and record changes
//! ([`Session::insert`], [`Session::remove`], [`Session::increment`],
//! [`Session::set_ttl`], [`Session::set_user_id`], [`Session::rotate_id`],
//! [`Session::destroy`]). Nothing touches Redis until the handler has returned. Every
//! script touches exactly one key, so all of this works on Redis Cluster unchanged. What
//! this costs in time and memory, against hand-written fred calls and tower-sessions:
//! [performance].
//!
//! Without axum, the session is in the request extensions (in lazy mode, call
//! [`Session::load`] before using it):
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tower_redis_session::Session;
//!
//! async fn handle(req: Request<String>) -> Result<Response<String>, Infallible> {
//!     let session = req.extensions().get::<Session>().expect("behind RedisSessionLayer");
//!     let name = session.get("username").unwrap_or_else(|| "stranger".into());
//!     Ok(Response::new(format!("hello, {name}")))
//! }
//! # let mut req = Request::new(String::new());
//! # req.extensions_mut().insert(Session::detached());
//! # let res = tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(handle(req)).unwrap();
//! # assert_eq!(res.body(), "hello, stranger");
//! ```
//!
//! # Guarantees
//!
//! - **No fixation.** A cookie is accepted only if it is exactly the shape of an ID this
//!   crate makes and names a live session. Otherwise the request gets a new, empty session,
//!   and a write gives it a new server-made ID. Tying a session to a user rotates its ID.
//! - **No resurrection, no false success.** Writes to an existing session apply only if
//!   it still exists, so a request in flight while another logs out, rotates, terminates
//!   or expires the session cannot bring it back; its response is `409 Conflict`, sends
//!   no `Set-Cookie`, and a warning is logged.
//! - **No lost updates.** Changes are field-level; increments are `HINCRBY`, so N
//!   concurrent increments add exactly N; no change acknowledged on an old ID is lost by a
//!   rotation.
//! - **No wiped cookies.** A late request carrying the ID of a session that was rotated
//!   away or logged out never touches the cookie, even one that loaded the session
//!   before; duplicate session cookies mean no session, and no removal is sent.
//! - **Every session key has a TTL**, and it never reaches past the absolute deadline,
//!   which is kept to the millisecond and not moved by a rotation.
//! - **Time comes from Redis** (`TIME` inside the scripts), so app servers with drifting
//!   clocks agree on expiry.
//!
//! Rotation at login, logout, refused changes and managing a user's sessions
//! ([`SessionManager`]) are explained in the [guide]. With the `encryption` feature, user
//! field values are encrypted and authenticated; counters, `user_id` and the internal
//! fields are not (the [guide's encryption section][encryption] says exactly what is).
//!
//! # When Redis fails
//!
//! Every command has a timeout (2 s by default). If the session cannot be loaded, the
//! request gets `503 Service Unavailable` with `Retry-After` and never reaches the
//! handler; if the changes cannot be saved, the handler's response is replaced by the
//! same 503, so the client is never told a change succeeded that may not have. The
//! [`Error`] is put in the error response's extensions and logged through `tracing`.
//! The client reconnects by itself when Redis is back (with [`connect`] or
//! [`client_builder`]).
//!
//! A timeout means "outcome unknown", not "not applied": a write-back that timed out may
//! still land later. The scripts make that harmless (they never recreate an ended
//! session), and increments are at least once under faults.
//!
//! The production checklist (Redis settings, an ACL user, TLS, cookie settings, timeouts
//! by risk), monitoring, measured failure behaviour, Redis Cluster and Sentinel, and a
//! known issue of fred 10.1 on Cluster are in [operations].
//!
//! # Scripts or Redis Functions
//!
//! By default the layer runs each step's Lua with `EVALSHA`, and loads a script itself
//! when Redis lacks it (after a restart or failover), so its Redis user may load and run
//! any Lua. On Redis 7.0 or later, [`ScriptMode::Functions`]
//! ([`RedisSessionLayerBuilder::script_mode`]) calls the same Lua as a Redis Functions
//! library ([`functions_library`]), loaded once per deployment by a more privileged user
//! with [`load_functions`]: the app's user then needs `FCALL`, and can neither load nor
//! run Lua of its own. Replies, round trips and behaviour are the same in both modes (out
//! of memory aside: [operations] has the two differences); a
//! missing library is an error saying what to run, never a fallback to `EVALSHA`. The
//! ACL users of each mode, and what each costs, are in [operations].
//!
//! # Feature flags
//!
//! | Name | Description | Default |
//! |---|---|---|
//! | `axum` | [`Session`] as an axum extractor (`Session` and `Option<Session>`) | yes |
//! | `serde` | [`Session::get_json`] and [`Session::insert_json`] for serde types | no |
//! | `encryption` | encrypt user field values at rest with a key ring ([`KeyRing`], `RedisSessionLayerBuilder::encryption`) | no |
//! | `enable-rustls` | fred's rustls TLS, for `rediss://` | no |
//! | `enable-native-tls` | fred's native-tls TLS, for `rediss://` | no |
//! | `metrics` | counters of loads, creations, rotations, logouts, refused changes, store errors and error responses, and a histogram of Redis time per script, through the [`metrics`](https://docs.rs/metrics) facade (`describe_metrics`; every name and label: [operations][metrics]) | no |
//!
//! [guide]: https://docs.rs/crate/tower-redis-session/latest/source/docs/guide.md
//! [encryption]: https://docs.rs/crate/tower-redis-session/latest/source/docs/guide.md#encryption-at-rest
//! [data model]: https://docs.rs/crate/tower-redis-session/latest/source/docs/data-model.md
//! [operations]: https://docs.rs/crate/tower-redis-session/latest/source/docs/operations.md
//! [performance]: https://docs.rs/crate/tower-redis-session/latest/source/docs/performance.md
//! [metrics]: https://docs.rs/crate/tower-redis-session/latest/source/docs/operations.md#metrics
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod cache_control;
mod client;
mod config;
mod cookie;
#[cfg(feature = "encryption")]
#[cfg_attr(docsrs, doc(cfg(feature = "encryption")))]
mod crypto;
mod error;
mod exchange;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
mod extract;
mod future;
mod id;
mod layer;
mod manager;
mod metrics;
mod model;
mod service;
mod session;
mod shared;
mod store;
mod time;

#[cfg(feature = "encryption")]
#[cfg_attr(docsrs, doc(cfg(feature = "encryption")))]
pub use crate::crypto::{DecryptFailure, KeyRing};
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use crate::extract::{LoadFailed, MissingSessionLayer, SessionRejection};
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use crate::metrics::describe_metrics;
pub use crate::{
    body::ResponseBody,
    client::{client_builder, connect, connect_lazy, Redis},
    config::{ReadCache, ScriptMode},
    error::{ConfigError, Error, ErrorKind, SessionError},
    future::ResponseFuture,
    id::{IdFormat, SessionId},
    layer::{RedisSessionLayer, RedisSessionLayerBuilder},
    manager::{SessionHandle, SessionInfo, SessionManager, SessionStats},
    model::RESERVED_FIELDS,
    service::RedisSession,
    session::Session,
    store::{
        cache::CacheStats,
        scripts::{functions_library, functions_library_name, load_functions},
    },
};
pub use ::cookie::SameSite;
pub use fred;

/// Entry points for the fuzz targets in `fuzz/` (built with `--cfg fuzzing` by
/// cargo-fuzz); not part of the API.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    use std::time::Duration;

    use crate::{
        exchange::{Change, Plan},
        id::SessionId,
        session::Session,
    };

    /// The session ID the layer would read from these headers, if any.
    pub fn session_cookie(headers: &http::HeaderMap, name: &str) -> Option<SessionId> {
        match crate::cookie::find(headers, name, None) {
            crate::cookie::Incoming::Id(id) => Some(id),
            _ => None,
        }
    }

    /// The save script's ARGV for a session's recorded changes (as a fresh session with
    /// no Redis behind it would send them), as strings.
    pub fn save_args(session: &Session) -> Option<Vec<String>> {
        let changes = match session.plan() {
            Plan::Save { changes, .. } => changes,
            Plan::Create { fields, .. } => fields
                .into_iter()
                .map(|(k, v)| (k, Change::Set(v)))
                .collect(),
            _ => return None,
        };
        let client = fred::clients::Client::default();
        let store = crate::store::Store::new(client.into(), &crate::config::Config::default());
        let args = store.save_args("member", Some(Duration::from_secs(1)), changes);
        Some(
            args.into_iter()
                .map(|v| v.as_string().unwrap_or_default())
                .collect(),
        )
    }
}

/// What the crate's own tests and benchmarks need to see inside it; not part of the API,
/// and may change in any release.
#[doc(hidden)]
pub mod __private {
    /// The text of a session script by its file name (`lua/load.lua`, ...), exactly as
    /// the layer sends it to Redis.
    #[must_use]
    pub fn script_source(name: &str) -> Option<String> {
        crate::store::scripts::source(name)
    }

    /// The timestamp grammar's cases: the text, and the Unix time in ms it means, or
    /// `None` where both the Rust and the Lua side must refuse it.
    pub const TIMESTAMP_CASES: &[(&str, Option<u64>)] = crate::time::TIMESTAMP_CASES;

    /// How stamps are written: a Unix time in ms and its text to the millisecond, for
    /// the Rust and the Lua writer alike.
    pub const STAMP_CASES: &[(u64, &str)] = crate::time::STAMP_CASES;
}

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
