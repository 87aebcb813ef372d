//! Support for the hardening tests (`tests/hostile.rs`, `tests/faults.rs`): a
//! `redis-server` of the test's own that the test signals by its PID (SIGKILL, SIGSTOP,
//! SIGCONT) and restarts on the same port and directory (so its AOF survives), a blocking
//! RESP connection independent of fred for admin commands (it keeps working while fred
//! reconnects), the ACL user of `docs/operations.md`, and a small app behind the layer.
//!
//! Every server is killed by its own PID when dropped, and by the watchdog of
//! `support/reaper.rs` when the test binary exits however it exits.
#![allow(dead_code, unreachable_pub)]

use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
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
use tokio::sync::Notify;
use tower::ServiceExt as _;
use tower_redis_session::{fred::prelude::*, Session, SessionError};

// ---------------------------------------------------------------------------------------
// redis-server

/// A free TCP port on 127.0.0.1 (free when asked).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// A `redis-server` on 127.0.0.1 of this test's own, with RDB snapshots off and
/// `appendonly no` unless the extra arguments say otherwise.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl Redis {
    /// Starts a server with extra `redis-server` arguments and waits until it answers.
    pub fn start(args: &[&str]) -> Self {
        let mut redis = Self::reserve(args);
        redis.spawn();
        redis
    }

    /// A port and directory for a server that is not started yet ([`spawn`](Self::spawn)
    /// starts it): for an app that starts while Redis is down.
    pub fn reserve(args: &[&str]) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "trs-hardening-{}-{port}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        Self {
            child: None,
            port,
            dir,
            args: args.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// Starts (or restarts) the server on its port and directory, so an AOF written
    /// there is loaded, and waits until it answers `PING` (not `LOADING`).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): `apt-get install -y redis-server`")
            });
        crate::reaper::kill_on_exit(child.id());
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Reply::Status(s)) = self.try_cmd(&["PING"]) {
                if s == "PONG" {
                    return;
                }
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| !matches!(c.try_wait(), Ok(None)));
            assert!(
                !exited && Instant::now() < deadline,
                "redis-server did not come up: {}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The PID of the running server.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// SIGKILL to the server's own PID; waits until it is gone. Its directory stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            crate::reaper::forget(child.id());
        }
    }

    /// SIGSTOP: the server keeps its connections open and answers nothing.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// One command on a fresh connection; panics if the server cannot be reached.
    pub fn cmd<A: AsRef<[u8]>>(&self, args: &[A]) -> Reply {
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("redis on port {}: {e}", self.port))
    }

    /// One command on a fresh connection.
    pub fn try_cmd<A: AsRef<[u8]>>(&self, args: &[A]) -> io::Result<Reply> {
        Conn::open(self.port)?.cmd(args)
    }

    /// A connection of its own (e.g. to hold a client slot).
    pub fn conn(&self) -> Conn {
        Conn::open(self.port).expect("connect to redis")
    }

    /// `INFO section` as text.
    pub fn info(&self, section: &str) -> String {
        self.cmd(&["INFO", section]).text().unwrap_or_default()
    }

    /// One field of `INFO section` (e.g. `used_memory`).
    pub fn info_field(&self, section: &str, field: &str) -> String {
        let info = self.info(section);
        info.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// Calls per command since the last `CONFIG RESETSTAT`, per `INFO commandstats`.
    pub fn command_calls(&self) -> Vec<(String, u64)> {
        self.info("commandstats")
            .lines()
            .filter_map(|line| {
                let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
                Some((name.to_owned(), calls.parse().ok()?))
            })
            .collect()
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<_> = log.lines().rev().take(15).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

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
        format!("redis://{user}:{password}@127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
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
// A blocking RESP2 connection

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Self>>),
}

impl Reply {
    /// A status or bulk reply as text.
    pub fn text(&self) -> Option<String> {
        match self {
            Self::Status(s) => Some(s.clone()),
            Self::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Self::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn items(&self) -> &[Self] {
        match self {
            Self::Array(Some(items)) => items,
            _ => &[],
        }
    }

    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }
}

/// A blocking connection to one server, for admin commands (5 s timeouts).
pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(port: u16) -> io::Result<Self> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    /// Sends one command and reads its reply. A Redis error is `Ok(Reply::Error(..))`.
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<Reply> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            let arg = arg.as_ref();
            buf.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            buf.extend_from_slice(arg);
            buf.extend_from_slice(b"\r\n");
        }
        self.reader.get_mut().write_all(&buf)?;
        self.read_reply()
    }

    fn read_line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line)?;
        if !line.ends_with(b"\r\n") {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        line.truncate(line.len() - 2);
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    fn read_reply(&mut self) -> io::Result<Reply> {
        let line = self.read_line()?;
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad RESP");
        let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
        Ok(match kind {
            "+" => Reply::Status(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Int(rest.parse().map_err(|_| bad())?),
            "$" => {
                let len: i64 = rest.parse().map_err(|_| bad())?;
                if len < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut data = vec![0; usize::try_from(len).map_err(|_| bad())? + 2];
                    self.reader.read_exact(&mut data)?;
                    data.truncate(data.len() - 2);
                    Reply::Bulk(Some(data))
                }
            }
            "*" => {
                let len: i64 = rest.parse().map_err(|_| bad())?;
                if len < 0 {
                    Reply::Array(None)
                } else {
                    let mut items = Vec::new();
                    for _ in 0..len {
                        items.push(self.read_reply()?);
                    }
                    Reply::Array(Some(items))
                }
            }
            _ => return Err(bad()),
        })
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

/// Lets a test hold a request between its load and its change.
#[derive(Default)]
pub struct Gate {
    pub arrived: Notify,
    pub release: Notify,
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
