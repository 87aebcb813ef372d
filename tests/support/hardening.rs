//! Support for the hardening tests (`hostile`, `faults`): the ACL user of
//! `docs/operations.md`, and a small app behind the layer driven in-process, whose
//! responses say how long they took.
#![allow(dead_code, unreachable_pub)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{Path, State},
    routing::{get, post},
    Router,
};
use http::{header, Request, StatusCode};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;
use tower_redis_session::{fred::prelude::*, Session, SessionError};

pub use super::Gate;
use super::{resp::Reply, RedisServer};

// ---------------------------------------------------------------------------------------
// The ACL user of the production checklist

impl RedisServer {
    /// Creates the ACL user of `docs/operations.md` (its `ACL SETUSER` line as written
    /// there, with `password`) and returns a URL that logs in as it.
    pub fn create_documented_acl_user(&self, password: &str) -> String {
        let line = documented_acl_line();
        let args: Vec<String> = line
            .split_whitespace()
            .map(|arg| {
                if arg.starts_with('>') {
                    format!(">{password}")
                } else {
                    arg.to_owned()
                }
            })
            .collect();
        let user = args[2].clone();
        let reply = self.cmd(&args);
        assert_eq!(reply, Reply::Status("OK".into()), "{line}");
        format!("redis://{user}:{password}@127.0.0.1:{}", self.port())
    }
}

/// The one `ACL SETUSER` line of `docs/operations.md` (the production checklist), as
/// written there.
pub fn documented_acl_line() -> String {
    let doc = include_str!("../../docs/operations.md");
    let lines: Vec<&str> = doc
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("ACL SETUSER "))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "docs/operations.md must hold exactly one ACL SETUSER line"
    );
    lines[0].to_owned()
}

// ---------------------------------------------------------------------------------------
// The app

/// A pool of two clients from `client_builder(url)`, connected.
pub async fn pool(url: &str) -> Pool {
    let pool = tower_redis_session::client_builder(url)
        .unwrap()
        .build_pool(2)
        .unwrap();
    pool.init()
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    pool
}

async fn whoami(session: Session) -> String {
    format!(
        "loaded={} id={}",
        session.is_loaded(),
        session.id().map(|id| id.to_string()).unwrap_or_default()
    )
}

async fn incr(session: Session) -> Result<String, SessionError> {
    Ok(session.increment("n", 1)?.to_string())
}

async fn read(session: Session, Path(field): Path<String>) -> String {
    session.get(&field).unwrap_or_default()
}

async fn set(
    session: Session,
    Path((field, value)): Path<(String, String)>,
) -> Result<&'static str, SessionError> {
    session.insert(&field, value)?;
    Ok("ok")
}

async fn login(session: Session, Path(user): Path<String>) -> Result<&'static str, SessionError> {
    session.insert("username", &user)?;
    session.set_user_id(user)?;
    session.rotate_id();
    Ok("ok")
}

async fn gated_incr(
    State(gate): State<Arc<Gate>>,
    session: Session,
) -> Result<String, SessionError> {
    gate.arrived.notify_one();
    gate.release.notified().await;
    Ok(session.increment("n", 1)?.to_string())
}

/// The routes every hardening test uses; the caller adds the layer.
pub fn routes(gate: Arc<Gate>) -> Router {
    Router::new()
        .route("/none", get(|| async { "no session used" }))
        .route("/whoami", get(whoami))
        .route("/incr", post(incr))
        .route("/read/{field}", get(read))
        .route("/set/{field}/{value}", post(set))
        .route(
            "/remove/{field}",
            post(|s: Session, Path(field): Path<String>| async move {
                s.remove(&field).map(Option::unwrap_or_default)
            }),
        )
        .route("/login/{user}", post(login))
        .route(
            "/rotate",
            post(|s: Session| async move {
                s.rotate_id();
                "ok"
            }),
        )
        .route(
            "/logout",
            post(|s: Session| async move {
                s.destroy();
                "ok"
            }),
        )
        .route("/gated/incr", post(gated_incr))
        .with_state(gate)
}

/// A response, read whole, with how long it took.
#[derive(Debug)]
pub struct Res {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
    pub elapsed: Duration,
}

impl Res {
    /// The session ID this response sets, if it sets one (not a removal).
    pub fn new_id(&self) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|c| c.split(';').next()?.strip_prefix("sid="))
            .find(|v| !v.is_empty())
            .map(str::to_owned)
    }

    /// `true` if the response removes the cookie.
    pub fn clears_cookie(&self) -> bool {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|c| c.starts_with("sid=;") && c.contains("Max-Age=0"))
    }
}

/// Sends a request through the app in-process.
pub async fn send_request(app: &Router, req: Request<Body>) -> Res {
    let started = Instant::now();
    let res = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Res {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// Sends `method path` with an optional `sid` cookie.
pub async fn send(app: &Router, method: &str, path: &str, sid: Option<&str>) -> Res {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(sid) = sid {
        req = req.header(header::COOKIE, format!("sid={sid}"));
    }
    send_request(app, req.body(Body::empty()).unwrap()).await
}

/// The Redis key of a session ID under `prefix` (digest form, the default).
pub fn key(prefix: &str, id: &str) -> String {
    let id = tower_redis_session::SessionId::parse(id).expect("a session ID");
    format!("{prefix}{}", id.digest())
}
