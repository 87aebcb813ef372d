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
//! # How it works
//!
//! | request | Redis round trips | what happens |
//! |---|---|---|
//! | no cookie, handler does not write | 0 | no `Set-Cookie` |
//! | no cookie, handler writes | 1 | new ID; hash and TTL created only if the key does not exist; `Set-Cookie` |
//! | valid cookie, handler only reads | 1 | one script loads the hash, checks the absolute lifetime, sets `last_accessed_at`, refreshes the TTL |
//! | valid cookie, handler writes | 2 | the load, then one script applying the changes, only if the session still exists |
//! | cookie for a missing or expired session | 1 | a fresh, empty session; the client's ID is never adopted; the stale cookie is cleared if nothing is written |
//!
//! Handlers read synchronously from the loaded copy and record changes
//! ([`Session::insert`], [`Session::remove`], [`Session::increment`],
//! [`Session::set_ttl`], [`Session::rotate_id`], [`Session::destroy`]). Nothing touches
//! Redis until the handler has returned. Every script touches exactly one key, so all of
//! this works on Redis Cluster unchanged.
//!
//! Without axum, the session is in the request extensions:
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
//!   and a write gives it a new server-made ID.
//! - **No resurrection.** Writes to an existing session apply only if its key still
//!   exists, so a request in flight while another logs out, rotates or expires the session
//!   cannot bring it back. Its response clears the cookie and a warning is logged.
//! - **No lost updates between fields.** Changes are field-level; increments are
//!   `HINCRBY`, so N concurrent increments add exactly N.
//! - **Every session key has a TTL**, and it never reaches past the absolute lifetime.
//! - **Time comes from Redis** (`TIME` inside the scripts), so app servers with drifting
//!   clocks agree on expiry.
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
//! still land later. The scripts make that harmless (they never recreate a deleted
//! session), and increments are at least once under faults.
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
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod client;
mod config;
mod cookie;
#[cfg(feature = "encryption")]
#[cfg_attr(docsrs, doc(cfg(feature = "encryption")))]
mod crypto;
mod error;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
mod extract;
mod future;
mod id;
mod layer;
mod manager;
mod service;
mod session;
mod store;
mod time;

#[cfg(feature = "encryption")]
#[cfg_attr(docsrs, doc(cfg(feature = "encryption")))]
pub use crate::crypto::{DecryptFailure, KeyRing};
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use crate::extract::MissingSessionLayer;
pub use crate::{
    body::ResponseBody,
    client::{client_builder, connect, connect_lazy},
    error::{ConfigError, Error, ErrorKind, SessionError},
    future::ResponseFuture,
    id::{IdFormat, SessionId},
    layer::{RedisSessionLayer, RedisSessionLayerBuilder},
    manager::{SessionHandle, SessionInfo, SessionManager, SessionStats},
    service::RedisSession,
    session::{Session, RESERVED_FIELDS},
    store::Redis,
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
        session::{Change, Plan},
        Session, SessionId,
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

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
