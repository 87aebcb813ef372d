//! Test support: real Redis on 127.0.0.1 (a `redis-server` per test, a shared local
//! cluster, clusters and Sentinel groups of their own for fault tests, TLS servers), an
//! app behind the layer, and checks of what the layer leaves in Redis.
//!
//! Every process started here is killed by its own PID when its owner is dropped, and by
//! a watchdog when the test binary exits however it exits ([`reaper`]).
#![allow(dead_code, unreachable_pub)]

pub mod cluster;
pub mod gates;
pub mod hardening;
pub mod load;
pub mod logs;
pub mod monitor;
pub mod proxy;
pub mod reaper;
pub mod resp;
pub mod sentinel;
pub mod server;
pub mod tls;

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Path, State},
    routing::{get, post},
    Router,
};
use fred::prelude::*;
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use tokio::sync::{Notify, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tower::ServiceExt as _;
use tower_redis_session::{
    client_builder, RedisSessionLayer, RedisSessionLayerBuilder, ScriptMode, Session, SessionError,
    SessionManager,
};

pub use cluster::RedisCluster;
pub use logs::Logs;
#[allow(unused_imports)]
pub use resp::free_port;
pub use server::RedisServer;

impl RedisServer {
    /// A well-configured fred client for this server, connected.
    pub async fn client(&self) -> Client {
        connect_client(&self.url()).await
    }
}

/// The primaries of a cluster client (none for a single server), as fred last saw them.
fn cluster_primaries(client: &Client) -> Vec<fred::types::config::Server> {
    if client.is_clustered() {
        client
            .cached_cluster_state()
            .map(|state| state.unique_primary_nodes())
            .unwrap_or_default()
    } else {
        Vec::new()
    }
}

/// Runs `cmd args` on the server, or on every primary of a cluster.
async fn on_every_primary<R: FromValue>(
    client: &Client,
    cmd: &'static str,
    args: Vec<&str>,
) -> Vec<R> {
    use fred::types::{ClusterHash, CustomCommand};
    let command = || CustomCommand::new_static(cmd, ClusterHash::FirstKey, false);
    let nodes = cluster_primaries(client);
    if nodes.is_empty() {
        return vec![client.custom(command(), args).await.unwrap()];
    }
    let mut out = Vec::with_capacity(nodes.len());
    for node in nodes {
        let reply = client
            .with_cluster_node(node)
            .custom(command(), args.clone())
            .await
            .unwrap();
        out.push(reply);
    }
    out
}

/// The ports of the server, or of every primary of a cluster, a client talks to.
fn primary_ports(client: &Client) -> Vec<u16> {
    use fred::types::config::ServerConfig;
    let nodes = cluster_primaries(client);
    if !nodes.is_empty() {
        return nodes.iter().map(|s| s.port).collect();
    }
    match &client.client_config().server {
        ServerConfig::Centralized { server } => vec![server.port],
        other => panic!("no single server to watch: {other:?}"),
    }
}

/// The `MONITOR`s [`reset_stats`] started, by the name of the client they watch for.
static MONITORS: std::sync::Mutex<Vec<(String, Vec<monitor::Monitor>)>> =
    std::sync::Mutex::new(Vec::new());

/// Starts counting the round trips made to the server (every primary of a cluster) of
/// `client`: [`round_trips`] tells how many there were since. On a cluster, take
/// [`Topology::start_exclusive`] first, or other tests' commands are counted too.
pub async fn reset_stats(client: &Client) {
    let ports = primary_ports(client);
    let monitors = tokio::task::spawn_blocking(move || {
        ports
            .into_iter()
            .map(|port| monitor::Monitor::start(port).expect("start MONITOR"))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let mut all = MONITORS.lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|(id, _)| id != client.id());
    all.push((client.id().to_owned(), monitors));
}

/// The commands clients sent since [`reset_stats`] (summed over every primary of a
/// cluster), seen through `MONITOR`: one per round trip (EVALSHA, DEL, SCRIPT LOAD, or
/// an HGETALL if a client sent one); what scripts ran inside is tagged `lua` there and
/// left out, and so are the harness's own commands. Stops counting.
pub async fn round_trips(client: &Client) -> u64 {
    round_trips_counted(client, &[]).await
}

async fn round_trips_counted(client: &Client, ignored: &'static [&'static str]) -> u64 {
    // The harness's own commands, and replicas acknowledging the replication stream.
    const HARNESS: &[&str] = &["info", "config", "replconf"];
    let monitors = {
        let mut all = MONITORS.lock().unwrap_or_else(|e| e.into_inner());
        let at = all
            .iter()
            .position(|(id, _)| id == client.id())
            .expect("reset_stats before round_trips");
        all.remove(at).1
    };
    // Scripts run only the way the test's mode says: `FCALL` never mixes with `EVALSHA`.
    let (used, other) = match script_mode() {
        ScriptMode::Functions => ("fcall", ["evalsha", "script"]),
        _ => ("evalsha", ["fcall", "fcall_ro"]),
    };
    tokio::task::spawn_blocking(move || {
        monitors
            .into_iter()
            .map(|m| {
                let seen = m.finish();
                let sent: Vec<_> = monitor::sent_by_clients(&seen, HARNESS)
                    .filter(|s| !ignored.contains(&s.command.as_str()))
                    .collect();
                assert!(
                    sent.iter().all(|s| !other.contains(&s.command.as_str())),
                    "a script was sent otherwise than by {used}: {sent:#?}"
                );
                sent.len() as u64
            })
            .sum()
    })
    .await
    .unwrap()
}

/// [`round_trips`], leaving out the commands named in `ignored` as well (e.g. the read
/// cache's own `PING`, `CLIENT` and `SUBSCRIBE`). Stops counting.
pub async fn round_trips_but(client: &Client, ignored: &'static [&'static str]) -> u64 {
    round_trips_counted(client, ignored).await
}

/// `SCRIPT FLUSH` on the server, or on every primary of a cluster: the script cache is
/// lost as in a restart.
pub async fn flush_scripts(client: &Client) {
    let _: Vec<Value> = on_every_primary(client, "SCRIPT", vec!["FLUSH"]).await;
}

/// Every key in the database (every primary of a cluster).
pub async fn all_keys(client: &Client) -> Vec<String> {
    keys_matching(client, "*").await
}

/// Every key matching a `KEYS` pattern, on the server or every primary of a cluster.
pub async fn keys_matching(client: &Client, pattern: &str) -> Vec<String> {
    let pages: Vec<Vec<String>> = on_every_primary(client, "KEYS", vec![pattern]).await;
    let mut keys: Vec<String> = pages.into_iter().flatten().collect();
    keys.sort();
    keys
}

tokio::task_local! {
    /// The script mode of the behaviour test running in this task ([`in_script_mode`]).
    static SCRIPT_MODE: ScriptMode;
}

/// Runs `test` in `mode`: the layers [`layer`] builds use it, and with
/// [`ScriptMode::Functions`] [`Topology::start`] loads the library into the topology
/// (`session_tests!` runs every behaviour test in each mode this way).
pub async fn in_script_mode<F: std::future::Future>(mode: ScriptMode, test: F) -> F::Output {
    SCRIPT_MODE.scope(mode, test).await
}

/// The script mode of the running test: the one [`in_script_mode`] set, or the default.
pub fn script_mode() -> ScriptMode {
    SCRIPT_MODE.try_with(|mode| *mode).unwrap_or_default()
}

/// Loads the functions library into the Redis at `url` (every primary of a cluster).
pub async fn load_functions(url: &str) {
    let client = connect_client(url).await;
    tower_redis_session::load_functions(client.clone())
        .await
        .unwrap_or_else(|e| panic!("load the functions library into {url}: {e:?}"));
    let _ = client.quit().await;
}

/// Where a test's Redis runs. The behaviour suite is stamped onto each of them (see
/// `session_tests!` in `tests/it/main.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// A `redis-server` of the test's own.
    Single,
    /// The binary's shared 3-master + 3-replica cluster ([`RedisCluster::shared`]); the
    /// test keeps to its own key prefix.
    Cluster,
}

/// Tests on the shared cluster hold this lock: shared by the behaviour tests, exclusive
/// for a test that reads or resets server-wide state (`INFO commandstats`, the script
/// cache), so nothing else runs on the cluster meanwhile.
static CLUSTER_LOCK: RwLock<()> = RwLock::const_new(());

enum Hold {
    None,
    Shared(RwLockReadGuard<'static, ()>),
    Exclusive(RwLockWriteGuard<'static, ()>),
}

/// A test's Redis, for its topology: a server of its own, or the shared cluster.
pub struct Backend {
    topology: Topology,
    server: Option<RedisServer>,
    cluster: Option<&'static RedisCluster>,
    _hold: Hold,
}

impl Topology {
    /// Redis for a test that looks only at its own keys.
    pub async fn start(self) -> Backend {
        self.start_with(false).await
    }

    /// Redis for a test that counts commands (`INFO commandstats`) or flushes the script
    /// cache: on a cluster, no other test runs on it meanwhile.
    pub async fn start_exclusive(self) -> Backend {
        self.start_with(true).await
    }

    async fn start_with(self, exclusive: bool) -> Backend {
        let backend = self.start_topology(exclusive).await;
        if script_mode() == ScriptMode::Functions {
            load_functions(&backend.redis_url()).await;
        }
        backend
    }

    async fn start_topology(self, exclusive: bool) -> Backend {
        match self {
            Self::Single => Backend {
                topology: self,
                server: Some(RedisServer::start()),
                cluster: None,
                _hold: Hold::None,
            },
            Self::Cluster => {
                let hold = if exclusive {
                    Hold::Exclusive(CLUSTER_LOCK.write().await)
                } else {
                    Hold::Shared(CLUSTER_LOCK.read().await)
                };
                let cluster = tokio::task::spawn_blocking(RedisCluster::shared)
                    .await
                    .expect("start the shared cluster");
                Backend {
                    topology: self,
                    server: None,
                    cluster: Some(cluster),
                    _hold: hold,
                }
            }
        }
    }
}

/// Every test on the shared cluster keeps to a prefix of its own ([`fresh_prefix`]): when
/// a test's hold on it ends, a key outside every such prefix fails the test (and is
/// removed, so the next test does not fail for it).
impl Drop for Backend {
    fn drop(&mut self) {
        let Some(cluster) = self.cluster else { return };
        if std::thread::panicking() {
            return;
        }
        let mut strays = Vec::new();
        for port in cluster.primaries() {
            let Ok(keys) = resp::command(port, &["KEYS", "*"]) else {
                continue;
            };
            for key in keys.items().iter().filter_map(resp::Reply::text) {
                if !is_test_prefixed(&key) {
                    let _ = resp::command(port, &["DEL", &key]);
                    strays.push(key);
                }
            }
        }
        assert!(
            strays.is_empty(),
            "keys outside any test's prefix on the shared cluster (removed): {strays:?}"
        );
    }
}

/// `true` for a key under a prefix from [`fresh_prefix`] (`test<n>:`).
fn is_test_prefixed(key: &str) -> bool {
    key.strip_prefix("test")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The digest the layer names a user's index by (URL-safe base64 of SHA-256).
pub fn digest(s: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(s.as_bytes()))
}

/// Fails with every problem found, one a line.
pub fn assert_none(problems: &[String]) {
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// A key prefix no other test of the binary uses (`test<n>:session:`).
pub fn fresh_prefix() -> String {
    let n = PREFIX_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("test{n}:session:")
}

impl Backend {
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// The test's own server (single topology only).
    pub fn server(&mut self) -> &mut RedisServer {
        self.server.as_mut().expect("a single-server topology")
    }

    /// A well-configured fred client, connected.
    pub async fn client(&self) -> Client {
        connect_client(&self.redis_url()).await
    }
}

/// What a test app can be pointed at: a server or a [`Backend`].
pub trait Target {
    /// A URL fred reads.
    fn redis_url(&self) -> String;
    /// `true` if every key in Redis belongs to this test (a server of its own), so the
    /// keyspace checks may look at all of them.
    fn owns_keyspace(&self) -> bool;
}

impl Target for RedisServer {
    fn redis_url(&self) -> String {
        self.url()
    }
    fn owns_keyspace(&self) -> bool {
        true
    }
}

impl Target for Backend {
    fn redis_url(&self) -> String {
        match (&self.server, self.cluster) {
            (Some(server), _) => server.url(),
            (None, Some(cluster)) => cluster.url(),
            (None, None) => unreachable!(),
        }
    }
    fn owns_keyspace(&self) -> bool {
        self.server.is_some()
    }
}

/// A cluster of the test's own: all its keys are the test's.
impl Target for RedisCluster {
    fn redis_url(&self) -> String {
        self.url()
    }
    fn owns_keyspace(&self) -> bool {
        true
    }
}

/// A Sentinel group of the test's own: the client follows the sentinels to the primary.
impl Target for sentinel::SentinelGroup {
    fn redis_url(&self) -> String {
        self.url()
    }
    fn owns_keyspace(&self) -> bool {
        true
    }
}

/// The layer's builder as the tests use it: the cookie is called `sid`, and scripts run
/// in the test's [`script_mode`].
pub fn layer(redis: impl Into<tower_redis_session::Redis>) -> RedisSessionLayerBuilder {
    RedisSessionLayer::builder(redis)
        .cookie_name("sid")
        .script_mode(script_mode())
}

/// A client from `client_builder(url)`, connected (panics with the error otherwise).
pub async fn connect_client(url: &str) -> Client {
    let client = client_builder(url).unwrap().build().unwrap();
    client
        .init()
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    client
}

/// A response, read whole.
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
    /// The store error the layer put in the response's extensions, if any, as text.
    pub error: Option<String>,
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

/// A request with no body and an optional `sid` cookie.
pub fn request(method: &str, path: &str, sid: Option<&str>) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(sid) = sid {
        req = req.header(header::COOKIE, format!("sid={sid}"));
    }
    req.body(Body::empty()).unwrap()
}

/// Lets a test hold a request between its load and its save.
#[derive(Default)]
pub struct Gate {
    pub arrived: Notify,
    pub release: Notify,
}

impl Gate {
    /// In a handler: says it is at the gate, then waits until the test opens it.
    pub async fn pass(&self) {
        self.arrived.notify_one();
        self.release.notified().await;
    }
}

/// An axum app behind the layer, driven in-process, with the server it talks to.
pub struct TestApp {
    pub router: Router,
    pub client: Client,
    pub prefix: String,
    pub gate: Arc<Gate>,
    pub manager: SessionManager,
    /// The layer the router was built with.
    pub layer: RedisSessionLayer,
    /// Every key in Redis is this test's (a server of its own), not just those under
    /// the prefix.
    owns_keyspace: bool,
    /// Every session ID any response set, to check that none appears in a key.
    issued: std::sync::Mutex<Vec<String>>,
    /// Where requests log to, if the test captures it ([`TestApp::capture_logs`]).
    logs: Option<Logs>,
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

/// Sets a field and rotates the ID in one handler.
async fn set_and_rotate(
    session: Session,
    Path((field, value)): Path<(String, String)>,
) -> Result<&'static str, SessionError> {
    session.insert(&field, value)?;
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
    gate.pass().await;
    Ok(session.increment(&field, 1)?.to_string())
}

async fn gated_rotate(State(gate): State<Arc<Gate>>, session: Session) -> &'static str {
    gate.pass().await;
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
        .route("/set_and_rotate/{field}/{value}", post(set_and_rotate))
        .route("/login/{user}", post(login_as))
        .route("/logout", post(logout))
        .route("/gated/incr/{field}", post(gated_incr))
        .route("/gated/rotate", post(gated_rotate))
        .with_state(gate)
}

static PREFIX_COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl TestApp {
    /// The test app with the default settings.
    pub async fn new(target: &impl Target) -> Self {
        Self::with(target, |b| b).await
    }

    /// The test app with settings changed by `configure` (the key prefix is set here,
    /// unique in the test binary).
    pub async fn with(
        target: &impl Target,
        configure: impl FnOnce(RedisSessionLayerBuilder) -> RedisSessionLayerBuilder,
    ) -> Self {
        let client = connect_client(&target.redis_url()).await;
        Self::with_client(client, target.owns_keyspace(), configure).await
    }

    /// The test app on a client the test built (a `Pool`'s clients, TLS, Sentinel, ...).
    pub async fn with_client(
        client: Client,
        owns_keyspace: bool,
        configure: impl FnOnce(RedisSessionLayerBuilder) -> RedisSessionLayerBuilder,
    ) -> Self {
        Self::with_client_and_prefix(client, owns_keyspace, fresh_prefix(), configure).await
    }

    /// Another instance of this app: a layer of its own on a client of its own (a second
    /// process, as far as Redis can tell), with the same key prefix, built by `configure`.
    pub async fn another_instance(
        &self,
        target: &impl Target,
        configure: impl FnOnce(RedisSessionLayerBuilder) -> RedisSessionLayerBuilder,
    ) -> Self {
        let client = connect_client(&target.redis_url()).await;
        Self::with_client_and_prefix(client, self.owns_keyspace, self.prefix.clone(), configure)
            .await
    }

    /// The test app on `client`, with the key prefix `prefix`. In Functions mode the
    /// library is loaded through `client` unless it is there already.
    pub async fn with_client_and_prefix(
        client: Client,
        owns_keyspace: bool,
        prefix: String,
        configure: impl FnOnce(RedisSessionLayerBuilder) -> RedisSessionLayerBuilder,
    ) -> Self {
        let layer = configure(layer(client.clone()).key_prefix(&prefix))
            .build()
            .unwrap();
        if let Err(e) = layer.load_scripts().await {
            // In Functions mode, on a server without the library: load it, then retry.
            tower_redis_session::load_functions(client.clone())
                .await
                .unwrap_or_else(|_| panic!("load the scripts: {e:?}"));
            layer.load_scripts().await.unwrap();
        }
        let gate = Arc::new(Gate::default());
        let manager = layer.manager();
        Self {
            manager,
            router: routes(Arc::clone(&gate)).layer(layer.clone()),
            layer,
            client,
            prefix,
            gate,
            owns_keyspace,
            issued: std::sync::Mutex::new(Vec::new()),
            logs: None,
        }
    }

    /// This app with `extra` routes (built on its gate) beside the shared ones, behind the
    /// same layer.
    pub fn with_routes(mut self, extra: impl FnOnce(Arc<Gate>) -> Router) -> Self {
        self.router = routes(Arc::clone(&self.gate))
            .merge(extra(Arc::clone(&self.gate)))
            .layer(self.layer.clone());
        self
    }

    /// Sends a request to a gated route and waits until its handler is at the gate (its
    /// session loaded); [`release`](Self::release) lets it go on.
    pub async fn hold(
        self: &Arc<Self>,
        method: &'static str,
        path: &str,
        sid: &str,
    ) -> tokio::task::JoinHandle<TestResponse> {
        let (app, path, sid) = (Arc::clone(self), path.to_owned(), sid.to_owned());
        let held = tokio::spawn(async move { app.send(method, &path, Some(&sid)).await });
        self.gate.arrived.notified().await;
        held
    }

    /// Opens the gate for the request [`hold`](Self::hold) holds; its response.
    pub async fn release(&self, held: tokio::task::JoinHandle<TestResponse>) -> TestResponse {
        self.gate.release.notify_one();
        held.await.unwrap()
    }

    /// Captures the `tracing` output of every request sent through this app from now on
    /// (at `level` and above).
    pub fn capture_logs(&mut self, level: tracing::Level) -> Logs {
        let logs = Logs::capture(level);
        self.logs = Some(logs.clone());
        logs
    }

    /// Every session ID a response of this app set so far.
    pub fn issued_ids(&self) -> Vec<String> {
        self.issued.lock().unwrap().clone()
    }

    /// Sends a request with an optional `sid` cookie.
    pub async fn send(&self, method: &str, path: &str, sid: Option<&str>) -> TestResponse {
        self.send_request(request(method, path, sid)).await
    }

    pub async fn get(&self, path: &str, sid: Option<&str>) -> TestResponse {
        self.send("GET", path, sid).await
    }

    pub async fn post(&self, path: &str, sid: Option<&str>) -> TestResponse {
        self.send("POST", path, sid).await
    }

    pub async fn send_request(&self, req: Request<Body>) -> TestResponse {
        let call = self.router.clone().oneshot(req);
        let res: Response<_> = match &self.logs {
            Some(logs) => logs.during(call).await,
            None => call.await,
        }
        .unwrap();
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let res = TestResponse {
            error: parts
                .extensions
                .get::<tower_redis_session::Error>()
                .map(ToString::to_string),
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

    /// Sends the request of each row `(row, table, method, path)` in turn, each with the
    /// ID the one before it set (the first with `id`), and counts its round trips: a line
    /// in `problems` for each row whose count is not `table`. The ID the last one left.
    pub async fn count_round_trips(
        &self,
        mut id: String,
        rows: &[(&str, u64, &str, &str)],
        problems: &mut Vec<String>,
    ) -> String {
        for &(row, table, method, path) in rows {
            reset_stats(&self.client).await;
            let res = self.send(method, path, Some(&id)).await;
            let observed = round_trips(&self.client).await;
            assert_eq!(res.status, StatusCode::OK, "{row}");
            if observed != table {
                problems.push(format!("{row}: table {table}, observed {observed}"));
            }
            id = res.new_id().unwrap_or(id);
        }
        id
    }

    /// The read cache's hits so far (fails if the cache is off).
    pub fn cache_hits(&self) -> u64 {
        self.layer.cache_stats().expect("the cache is on").hits
    }

    /// Reads `field` until a read is served from memory (the first load starts the read
    /// cache's connection, and its first barrier lets the cache serve); fails after 10 s.
    pub async fn warm(&self, sid: &str, field: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let hits = self.cache_hits();
            self.get(&format!("/read/{field}"), Some(sid)).await;
            if self.cache_hits() > hits {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "no read was served from memory: {:?}",
            self.layer.cache_stats()
        );
    }

    /// The key of `user`'s index.
    pub fn index_key(&self, user: &str) -> String {
        format!("{}user:{}", self.prefix, digest(user))
    }

    /// Scores `member` of `user`'s index `ago` ms before now, as if it had been added
    /// then.
    pub async fn age_index_entry(&self, user: &str, member: &str, ago: u64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let score = now.saturating_sub(ago) as f64;
        let _: i64 = self
            .client
            .zadd(
                self.index_key(user),
                None,
                None,
                false,
                false,
                (score, member),
            )
            .await
            .unwrap();
    }

    /// `true` if a request with this ID finds its session.
    pub async fn loaded(&self, id: &str) -> bool {
        self.get("/whoami", Some(id))
            .await
            .body
            .starts_with("loaded=true")
    }

    /// Runs one of the layer's scripts by hand with `EVAL`; its raw result.
    pub async fn eval_script(&self, file: &str, key: String, args: Vec<String>) -> Value {
        let source = tower_redis_session::__private::script_source(file).unwrap();
        self.client.eval(source, vec![key], args).await.unwrap()
    }

    pub async fn hash(&self, id: &str) -> HashMap<String, String> {
        self.client.hgetall(self.key(id)).await.unwrap()
    }

    /// Keys of live sessions and user indexes: everything but the markers ended sessions
    /// leave for a minute.
    pub async fn live_keys(&self) -> Vec<String> {
        let mut live = Vec::new();
        for key in self.keys().await {
            let hash: HashMap<String, String> = self.client.hgetall(&key).await.unwrap_or_default();
            if !(hash.len() == 1 && hash.contains_key("ended")) {
                live.push(key);
            }
        }
        live
    }

    pub async fn pttl(&self, id: &str) -> i64 {
        self.client.pttl(self.key(id)).await.unwrap()
    }

    /// `true` if the session's key exists and holds a session (a `session_ttl` field).
    pub async fn is_live(&self, id: &str) -> bool {
        let ttl: Result<Option<String>, _> = self.client.hget(self.key(id), "session_ttl").await;
        matches!(ttl, Ok(Some(_)))
    }

    /// What a marker left under the session's key says (its `ended` field: `rotated`,
    /// `destroyed`, `terminated`), if the key is a marker hash and not a session.
    pub async fn marker(&self, id: &str) -> Option<String> {
        let hash: HashMap<String, String> = self.client.hgetall(self.key(id)).await.ok()?;
        if hash.contains_key("session_ttl") {
            return None;
        }
        hash.get("ended").cloned()
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

    /// The keys this test can see: all of them on a server of its own, those under its
    /// prefix (on every primary) on a shared cluster.
    pub async fn keys(&self) -> Vec<String> {
        if self.owns_keyspace {
            all_keys(&self.client).await
        } else {
            keys_matching(&self.client, &format!("{}*", self.prefix)).await
        }
    }

    async fn check_keys(&self, indexes_allowed: bool) {
        let keys = self.keys().await;
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
