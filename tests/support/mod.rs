//! Test support: a real `redis-server` per test on 127.0.0.1, an app behind the layer,
//! and checks of what the layer leaves in Redis.
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{Path, State},
    routing::{get, post},
    Router,
};
use fred::prelude::*;
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use tokio::sync::Notify;
use tower::ServiceExt as _;
use tower_redis_session::{
    client_builder, RedisSessionLayer, RedisSessionLayerBuilder, Session, SessionError,
    SessionManager,
};

/// A `redis-server` started for one test, killed (by its own PID) when dropped.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments (e.g. `["--maxmemory", "1mb"]`).
    pub fn start_with(extra: &[&str]) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("trs-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let mut server = Self {
            child: None,
            port,
            dir,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server not found: install it with `apt-get install -y redis-server` (or run scripts/test)"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        self.wait_until_ready();
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let mut buf = [0u8; 16];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read(&mut buf)
                        .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not answer PING within 10 s",
            self.port
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL to its own PID) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (with an empty dataset).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// A well-configured fred client for this server, connected.
    pub async fn client(&self) -> Client {
        let client = client_builder(&self.url()).unwrap().build().unwrap();
        client
            .init()
            .await
            .expect("connect to the test redis-server");
        client
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Commands sent from clients since the last reset, per `INFO commandstats`. Commands run
/// inside scripts are counted there too, so the script-internal ones are left out:
/// what remains is one entry per round trip (EVALSHA, DEL, SCRIPT LOAD, ...).
pub async fn round_trips(client: &Client) -> u64 {
    const INSIDE_SCRIPTS: &[&str] = &[
        "hlen", "hgetall", "time", "pttl", "hset", "pexpire", "exists", "hget", "hincrby", "hdel",
    ];
    const HARNESS: &[&str] = &["info", "config|resetstat"];
    let info: String = client
        .info(Some(fred::types::InfoKind::CommandStats))
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("cmdstat_")?;
            let (name, stats) = rest.split_once(':')?;
            if INSIDE_SCRIPTS.contains(&name) || HARNESS.contains(&name) {
                return None;
            }
            let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            calls.parse::<u64>().ok()
        })
        .sum()
}

pub async fn reset_stats(client: &Client) {
    let _: () = client
        .custom(fred::cmd!("CONFIG"), vec!["RESETSTAT"])
        .await
        .unwrap();
}

/// Every key in the database.
pub async fn all_keys(client: &Client) -> Vec<String> {
    client.custom(fred::cmd!("KEYS"), vec!["*"]).await.unwrap()
}

/// A response, read whole.
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl TestResponse {
    /// The `Set-Cookie` headers.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// The single `Set-Cookie` header, if any (fails on several).
    pub fn set_cookie(&self) -> Option<String> {
        let all = self.set_cookies();
        assert!(all.len() <= 1, "more than one Set-Cookie: {all:?}");
        all.into_iter().next()
    }

    /// The session ID this response sets, if it sets one (not a removal).
    pub fn new_id(&self) -> Option<String> {
        let cookie = self.set_cookie()?;
        let value = cookie.split(';').next()?.split_once('=')?.1;
        (!value.is_empty()).then(|| value.to_owned())
    }

    /// `true` if the response removes the cookie.
    pub fn clears_cookie(&self) -> bool {
        self.set_cookie()
            .is_some_and(|c| c.starts_with("sid=;") && c.contains("Max-Age=0"))
    }
}

/// Lets a test hold a request between its load and its save.
#[derive(Default)]
pub struct Gate {
    pub arrived: Notify,
    pub release: Notify,
}

/// An axum app behind the layer, driven in-process, with the server it talks to.
pub struct TestApp {
    pub router: Router,
    pub client: Client,
    pub prefix: String,
    pub gate: Arc<Gate>,
    pub manager: SessionManager,
    /// Every session ID any response set, to check that none appears in a key.
    issued: std::sync::Mutex<Vec<String>>,
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

async fn incr(session: Session, Path(field): Path<String>) -> Result<String, SessionError> {
    Ok(session.increment(&field, 1)?.to_string())
}

async fn remove(session: Session, Path(field): Path<String>) -> Result<String, SessionError> {
    Ok(session.remove(&field)?.unwrap_or_default())
}

async fn set_ttl(session: Session, Path(secs): Path<u64>) -> Result<&'static str, SessionError> {
    session.set_ttl(Duration::from_secs(secs))?;
    Ok("ok")
}

/// Login: ties the session to a user and rotates its ID.
async fn login_as(
    session: Session,
    Path(user): Path<String>,
) -> Result<&'static str, SessionError> {
    session.insert("username", &user)?;
    session.set_user_id(user)?;
    session.rotate_id();
    Ok("ok")
}

async fn rotate(session: Session) -> &'static str {
    session.rotate_id();
    "ok"
}

async fn logout(session: Session) -> &'static str {
    session.destroy();
    "ok"
}

async fn whoami(session: Session) -> String {
    format!(
        "loaded={} expired={} ttl={} fields={:?}",
        session.is_loaded(),
        session.cookie_expired(),
        session.ttl().as_secs(),
        session.fields()
    )
}

/// Waits at the gate after the load and before the change, so a test can interleave
/// another request deterministically.
async fn gated_incr(
    State(gate): State<Arc<Gate>>,
    session: Session,
    Path(field): Path<String>,
) -> Result<String, SessionError> {
    gate.arrived.notify_one();
    gate.release.notified().await;
    Ok(session.increment(&field, 1)?.to_string())
}

async fn gated_rotate(State(gate): State<Arc<Gate>>, session: Session) -> &'static str {
    gate.arrived.notify_one();
    gate.release.notified().await;
    session.rotate_id();
    "ok"
}

pub fn routes(gate: Arc<Gate>) -> Router {
    Router::new()
        .route("/none", get(|| async { "no session used" }))
        .route("/read/{field}", get(read))
        .route("/whoami", get(whoami))
        .route("/set/{field}/{value}", post(set))
        .route("/incr/{field}", post(incr))
        .route("/remove/{field}", post(remove))
        .route("/ttl/{secs}", post(set_ttl))
        .route("/rotate", post(rotate))
        .route("/login/{user}", post(login_as))
        .route("/logout", post(logout))
        .route("/gated/incr/{field}", post(gated_incr))
        .route("/gated/rotate", post(gated_rotate))
        .with_state(gate)
}

static PREFIX_COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl TestApp {
    /// The test app with the default settings.
    pub async fn new(server: &RedisServer) -> Self {
        Self::with(server, |b| b).await
    }

    /// The test app with settings changed by `configure` (the key prefix is set here).
    pub async fn with(
        server: &RedisServer,
        configure: impl FnOnce(RedisSessionLayerBuilder) -> RedisSessionLayerBuilder,
    ) -> Self {
        let client = server.client().await;
        let n = PREFIX_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("test{n}:session:");
        let layer = configure(RedisSessionLayer::builder(client.clone()).key_prefix(&prefix))
            .build()
            .unwrap();
        layer.load_scripts().await.unwrap();
        let gate = Arc::new(Gate::default());
        let manager = layer.manager();
        Self {
            manager,
            router: routes(Arc::clone(&gate)).layer(layer),
            client,
            prefix,
            gate,
            issued: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Sends a request with an optional `sid` cookie.
    pub async fn send(&self, method: &str, path: &str, sid: Option<&str>) -> TestResponse {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(sid) = sid {
            req = req.header(header::COOKIE, format!("sid={sid}"));
        }
        self.send_request(req.body(Body::empty()).unwrap()).await
    }

    pub async fn get(&self, path: &str, sid: Option<&str>) -> TestResponse {
        self.send("GET", path, sid).await
    }

    pub async fn post(&self, path: &str, sid: Option<&str>) -> TestResponse {
        self.send("POST", path, sid).await
    }

    pub async fn send_request(&self, req: Request<Body>) -> TestResponse {
        let res: Response<_> = self.router.clone().oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let res = TestResponse {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        if let Some(id) = res.new_id() {
            self.issued.lock().unwrap().push(id);
        }
        res
    }

    /// Starts a session with one field and returns its ID.
    pub async fn login(&self) -> String {
        let res = self.post("/set/username/ferris", None).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.body);
        res.new_id().expect("a new session sets a cookie")
    }

    /// Starts a session tied to `user` (login pattern: a first request, then a login that
    /// rotates the ID) and returns its ID.
    pub async fn login_as(&self, user: &str) -> String {
        let first = self.post("/set/visited/1", None).await.new_id().unwrap();
        let res = self.post(&format!("/login/{user}"), Some(&first)).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.body);
        res.new_id().expect("login rotates the ID")
    }

    /// The Redis key of a session ID (digest form).
    pub fn key(&self, id: &str) -> String {
        let id = tower_redis_session::SessionId::parse(id).unwrap();
        format!("{}{}", self.prefix, id.digest())
    }

    pub async fn hash(&self, id: &str) -> HashMap<String, String> {
        self.client.hgetall(self.key(id)).await.unwrap()
    }

    pub async fn pttl(&self, id: &str) -> i64 {
        self.client.pttl(self.key(id)).await.unwrap()
    }

    /// [`check_keyspace`](Self::check_keyspace), allowing user index keys (which have
    /// no TTL by design).
    pub async fn check_keyspace_with_indexes(&self) {
        self.check_keys(true).await;
    }

    /// The checks every test ends with: no key outside the prefix, no session key without
    /// a TTL, no raw session ID in any key.
    pub async fn check_keyspace(&self) {
        self.check_keys(false).await;
    }

    async fn check_keys(&self, indexes_allowed: bool) {
        let keys = all_keys(&self.client).await;
        let issued = self.issued.lock().unwrap().clone();
        for key in keys {
            assert!(
                key.starts_with(&self.prefix),
                "key outside the prefix: {key:?}"
            );
            if indexes_allowed && key[self.prefix.len()..].starts_with("user:") {
                continue;
            }
            let ttl: i64 = self.client.pttl(&key).await.unwrap();
            assert!(
                ttl > 0 || ttl == -2,
                "session key without a TTL: {key:?} ({ttl})"
            );
            for id in &issued {
                assert!(!key.contains(id.as_str()), "raw session ID in key {key:?}");
            }
        }
    }
}
