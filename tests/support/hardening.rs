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
use tower_redis_session::{fred::prelude::*, Session, SessionError, SessionManager};

pub use super::Gate;
use super::{login_as, read, resp::Reply, set, RedisServer};

// ---------------------------------------------------------------------------------------
// The ACL user of the production checklist

impl RedisServer {
    /// Creates the ACL user of `docs/operations.md` for the default script mode
    /// (`sessions`, its `ACL SETUSER` line as written there, with `password`) and returns
    /// a URL that logs in as it.
    pub fn create_documented_acl_user(&self, password: &str) -> String {
        self.create_documented_acl_user_named("sessions", password)
    }

    /// Creates the documented ACL user `user` (its `ACL SETUSER` line in
    /// `docs/operations.md` as written there, with `password`) and returns a URL that
    /// logs in as it.
    pub fn create_documented_acl_user_named(&self, user: &str, password: &str) -> String {
        let line = documented_acl_line_of(user);
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
        let reply = self.cmd(&args);
        assert_eq!(reply, Reply::Status("OK".into()), "{line}");
        format!("redis://{user}:{password}@127.0.0.1:{}", self.port())
    }
}

/// The `ACL SETUSER` line of `docs/operations.md` (the production checklist) for the
/// default script mode, as written there.
pub fn documented_acl_line() -> String {
    documented_acl_line_of("sessions")
}

/// The one `ACL SETUSER` line of `docs/operations.md` that creates `user` (`ACL SETUSER
/// <user> on ...`), as written there.
pub fn documented_acl_line_of(user: &str) -> String {
    let doc = include_str!("../../docs/operations.md");
    let lines: Vec<&str> = doc
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.split_whitespace()
                .take(4)
                .eq(["ACL", "SETUSER", user, "on"])
        })
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "docs/operations.md must hold exactly one ACL SETUSER line for {user}"
    );
    lines[0].to_owned()
}

/// The `ACL SETUSER` lines of `docs/operations.md` that add to `user` what the read
/// cache needs (`ACL SETUSER <user> +...`, not `on`), as written there.
pub fn documented_read_cache_acl_lines_of(user: &str) -> Vec<String> {
    let doc = include_str!("../../docs/operations.md");
    doc.lines()
        .map(str::trim)
        .filter(|l| {
            let words: Vec<&str> = l.split_whitespace().take(4).collect();
            words.len() == 4 && words[..3] == ["ACL", "SETUSER", user] && words[3] != "on"
        })
        .map(str::to_owned)
        .collect()
}

/// Every refusal `ACL LOG` holds, one line each.
pub fn acl_log(redis: &RedisServer) -> Vec<String> {
    redis
        .cmd(&["ACL", "LOG"])
        .items()
        .iter()
        .map(|entry| {
            let fields: Vec<_> = entry.items().iter().filter_map(Reply::text).collect();
            fields.join(" ")
        })
        .collect()
}

/// `name=calls` for every command run since `CONFIG RESETSTAT` (inside scripts too),
/// sorted, but for the harness's own (`INFO`, `CONFIG RESETSTAT`, `ACL SETUSER`, and
/// `also_ignored`).
pub fn commands_used(redis: &RedisServer, also_ignored: &[&str]) -> Vec<String> {
    let mut used: Vec<String> = redis
        .command_calls()
        .into_iter()
        .filter(|(name, _)| {
            !["info", "config|resetstat", "acl|setuser"].contains(&name.as_str())
                && !also_ignored.contains(&name.as_str())
        })
        .map(|(name, calls)| format!("{name}={calls}"))
        .collect();
    used.sort();
    used
}

/// Logs in on a fresh connection as `user` and checks that each command is refused
/// with `NOPERM`.
pub fn assert_refused<A: AsRef<str>>(
    redis: &RedisServer,
    user: &str,
    password: &str,
    commands: &[Vec<A>],
) {
    let mut conn = redis.conn();
    assert_eq!(
        conn.cmd(&["AUTH", user, password]).unwrap(),
        Reply::Status("OK".into())
    );
    for command in commands {
        let args: Vec<&str> = command.iter().map(AsRef::as_ref).collect();
        match conn.cmd(&args).unwrap() {
            Reply::Error(e) if e.starts_with("NOPERM") => {}
            other => panic!("{user}: {args:?} was allowed: {other:?}"),
        }
    }
}

fn ok(res: Res) -> Res {
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    res
}

/// Runs every feature of the layer behind `app` ([`routes`]): create, read, increment,
/// remove, log in (a user tie and a rotation), rotate, log out; then through `manager`
/// `list`, `terminate` and `terminate_all`, and through `scans` `stats` and
/// `terminate_all_by_scan`; and checks that the sessions ended are gone.
pub async fn run_every_feature(app: &Router, manager: &SessionManager, scans: &SessionManager) {
    let new_id = |res: Res| ok(res).new_id().expect("a new session ID");
    let id = new_id(send(app, "POST", "/set/a/1", None).await);
    assert_eq!(ok(send(app, "GET", "/read/a", Some(&id)).await).body, "1");
    ok(send(app, "POST", "/incr", Some(&id)).await);
    assert_eq!(
        ok(send(app, "POST", "/remove/a", Some(&id)).await).body,
        "1"
    );
    let alice1 = new_id(send(app, "POST", "/login/alice", Some(&id)).await);
    let other = new_id(send(app, "POST", "/set/a/1", None).await);
    let alice2 = new_id(send(app, "POST", "/login/alice", Some(&other)).await);
    let rotated = new_id(send(app, "POST", "/rotate", Some(&alice2)).await);
    let spare = new_id(send(app, "POST", "/set/a/1", None).await);
    ok(send(app, "POST", "/logout", Some(&spare)).await);

    let listed = manager.list("alice").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(manager.terminate("alice", &listed[0].handle).await.unwrap());
    let stats = scans.stats().await.unwrap();
    assert_eq!(stats.user_indexes, 1);
    assert_eq!(stats.sessions, 1, "alice's one live session left");
    assert_eq!(manager.terminate_all("alice", None).await.unwrap(), 1);
    let first = new_id(send(app, "POST", "/set/a/1", None).await);
    let bob = new_id(send(app, "POST", "/login/bob", Some(&first)).await);
    assert_eq!(scans.terminate_all_by_scan("bob").await.unwrap(), 1);
    assert!(manager.list("bob").await.unwrap().is_empty());
    for dead in [&alice1, &rotated, &bob] {
        assert!(ok(send(app, "GET", "/whoami", Some(dead)).await)
            .body
            .starts_with("loaded=false"));
    }
}

/// After a script cache flush (a restart or failover) and with every connection killed
/// by the server, a session is created and written again within 10 s.
pub async fn survive_a_script_flush_and_killed_connections(redis: &RedisServer, app: &Router) {
    redis.cmd(&["SCRIPT", "FLUSH"]);
    let id = ok(send(app, "POST", "/set/a/1", None).await)
        .new_id()
        .unwrap();
    redis.cmd(&["CLIENT", "KILL", "TYPE", "normal"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = send(app, "POST", "/incr", Some(&id)).await;
        if res.status == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "{}", res.body);
    }
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

async fn gated_incr(
    State(gate): State<Arc<Gate>>,
    session: Session,
) -> Result<String, SessionError> {
    gate.pass().await;
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
        .route("/login/{user}", post(login_as))
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
    send_request(app, super::request(method, path, sid)).await
}

/// The Redis key of a session ID under `prefix` (digest form, the default).
pub fn key(prefix: &str, id: &str) -> String {
    let id = tower_redis_session::SessionId::parse(id).expect("a session ID");
    format!("{prefix}{}", id.digest())
}
