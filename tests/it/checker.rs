//! A randomized, seeded, model-based concurrency checker.
//!
//! Two app instances (two layers on two fred clients, one key prefix, one Redis) serve
//! browsers that each keep a cookie jar, apply `Set-Cookie` in the order responses
//! arrive, and keep 2–4 requests in flight, sent at random to either instance. An
//! operator lists and ends sessions through `SessionManager`; some runs kill Redis
//! connections and pause Redis past the command timeout. Handlers sleep between the load
//! and the change, so requests overlap. Every request and operator call is recorded;
//! after quiescence an oracle checks the history and what is left in Redis against what
//! each response promised.
//!
//! Every run prints its seed. Environment:
//!
//! - `CHECK_SEED=<n>`: replay a seed (the same choices: operations, delays, instances,
//!   faults, settings);
//! - `CHECK_DURATION=<secs>`: length of a run (default 12);
//! - `CHECK_SEEDS=<k>`: run k seeds in a row (`CHECK_SEED`, `CHECK_SEED + 1`, ...);
//! - `CHECK_BROWSERS=<n>` (default 12), `CHECK_FAULTS=0|1` (default: the random seed of the run decides).
//!
//! `checker::single_read_cache` runs the same with a read cache on both instances.
//!
//! A long run: `CHECK_DURATION=60 CHECK_SEEDS=6 cargo test --all-features --test it --
//! checker::single --nocapture`.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::Path,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use fred::{
    interfaces::{HashesInterface as _, KeysInterface as _, SortedSetsInterface as _},
    prelude::Client,
};
use http::{header, HeaderMap, Request, StatusCode};
use http_body_util::BodyExt as _;
use rand::{rngs::StdRng, Rng as _, SeedableRng as _};
use tokio::task::JoinSet;
use tower::ServiceExt as _;
use tower_redis_session::{RedisSessionLayer, Session, SessionId, SessionManager};

use crate::support::{
    all_keys, connect_client, digest, keys_matching, resp, RedisCluster, Target as _, Topology,
};

/// The idle TTL of new sessions; `set_ttl` picks from `SET_TTL_SECS`. Both far above the
/// time a session is left unused while its browser still holds it, and the oracle allows
/// idle expiry only after `MIN_IDLE`.
const IDLE_TTL: Duration = Duration::from_secs(600);
const SET_TTL_SECS: std::ops::Range<u64> = 300..900;
const MIN_IDLE: Duration = Duration::from_secs(300);
/// Timing slack between our clock and Redis's (both the machine's clock).
const SLACK: Duration = Duration::from_millis(100);
/// A request or operator call that takes this long is a hang.
const HANG: Duration = Duration::from_secs(15);
/// Marker hashes live this long.
const MARKER_TTL_MS: i64 = 60_000;
const USERS: usize = 4;

// ---------------------------------------------------------------------------------------
// The app: one route per operation, a random delay between the load and the change.

async fn handler(Path(op): Path<String>, headers: HeaderMap, session: Session) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let delay: u64 = header("x-delay-us").parse().unwrap_or(0);
    let arg = header("x-arg");
    // What the request saw at its load, before anything else could change it.
    let body = format!(
        "loaded={} user={} n={} exp={}",
        u8::from(session.is_loaded()),
        session.user_id().unwrap_or_else(|| "-".into()),
        session.get("n").unwrap_or_else(|| "0".into()),
        session
            .expires_in()
            .map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    );
    tokio::time::sleep(Duration::from_micros(delay)).await;
    let done = match op.as_str() {
        "read" => Ok(()),
        "write" => session.insert(&arg, "1"),
        "incr" => session.increment("n", 1).map(drop),
        "ttl" => session.set_ttl(Duration::from_secs(arg.parse().unwrap_or(600))),
        "rotate" => {
            session.rotate_id();
            Ok(())
        }
        "login" => session
            .insert("username", &arg)
            .and_then(|()| session.set_user_id(arg.clone()))
            .map(|()| session.rotate_id()),
        "logout" => {
            session.destroy();
            Ok(())
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    match done {
        Ok(()) => body.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("handler: {e}")).into_response(),
    }
}

fn app(layer: RedisSessionLayer) -> Router {
    Router::new()
        .route("/{op}", get(handler).post(handler))
        .layer(layer)
}

// ---------------------------------------------------------------------------------------
// Settings, drawn from the random seed of the run.

#[derive(Debug, Clone)]
struct Settings {
    seed: u64,
    duration: Duration,
    browsers: usize,
    faults: bool,
    lifetime: Option<Duration>,
    command_timeout: Duration,
    /// Both instances serve reads from a read cache (touch interval 1 s).
    read_cache: bool,
}

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

impl Settings {
    fn new(seed: u64) -> Self {
        let duration = Duration::from_secs(env("CHECK_DURATION").unwrap_or(12));
        let mut rng = StdRng::seed_from_u64(seed);
        let faults = match env::<u8>("CHECK_FAULTS") {
            Some(f) => f != 0,
            None => rng.random_bool(0.4),
        };
        // A lifetime short enough to end sessions within the run (whole seconds).
        let secs = duration.as_secs();
        let lo = (secs / 3).max(3);
        let hi = (secs * 2 / 3).clamp(lo + 1, 40.max(lo + 1));
        let lifetime = rng
            .random_bool(0.5)
            .then(|| Duration::from_secs(rng.random_range(lo..=hi)));
        Self {
            seed,
            duration,
            browsers: env("CHECK_BROWSERS").unwrap_or(12),
            faults,
            lifetime,
            command_timeout: if faults {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(2)
            },
            read_cache: false,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The history.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Read,
    Write,
    Incr,
    SetTtl,
    Rotate,
    Login,
    Logout,
}

impl Op {
    fn path(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Incr => "incr",
            Self::SetTtl => "ttl",
            Self::Rotate => "rotate",
            Self::Login => "login",
            Self::Logout => "logout",
        }
    }

    /// Operations that end the session their cookie names, when they succeed.
    fn ends(self) -> bool {
        matches!(self, Self::Rotate | Self::Login | Self::Logout)
    }

    /// Operations that change the session (and so must create one when there is none).
    fn writes(self) -> bool {
        matches!(self, Self::Write | Self::Incr | Self::SetTtl | Self::Login)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CookieChange {
    None,
    Set(String),
    Clear,
    Several(Vec<String>),
}

#[derive(Debug, Clone)]
struct Req {
    browser: usize,
    instance: usize,
    op: Op,
    arg: String,
    /// The cookie the request carried.
    sent: Option<String>,
    start: Duration,
    /// When the browser applied the response (its arrival, as the browser sees it).
    end: Duration,
    /// 0: no response within `HANG`.
    status: u16,
    change: CookieChange,
    /// The jar when the response arrived, before it was applied.
    jar_before: Option<String>,
    loaded: Option<bool>,
    exp_ms: Option<i64>,
    body: String,
}

impl Req {
    fn acked(&self) -> bool {
        self.status == 200
    }
    fn refused(&self) -> bool {
        self.status == 409
    }
    /// The argument in parentheses, if there is one.
    fn arg_label(&self) -> String {
        if self.arg.is_empty() {
            String::new()
        } else {
            format!("({})", self.arg)
        }
    }
    /// Outcome unknown: it may or may not have been applied.
    fn unknown(&self) -> bool {
        !self.acked() && !self.refused()
    }
}

#[derive(Debug, Clone)]
enum Manage {
    List(String),
    Terminate(String, String),
    TerminateAll(String, Option<String>),
}

#[derive(Debug, Clone)]
struct OpEvent {
    what: Manage,
    start: Duration,
    end: Duration,
    /// `Err` for a store error or a hang.
    result: Result<OpResult, String>,
}

#[derive(Debug, Clone)]
enum OpResult {
    Listed(Vec<String>),
    Terminated(bool),
    Ended(usize),
}

#[derive(Debug, Clone)]
struct FaultEvent {
    what: String,
    start: Duration,
    end: Duration,
}

/// Shared by the tasks of one run.
struct Run {
    settings: Settings,
    t0: Instant,
    stop: AtomicBool,
    apps: Vec<Router>,
    managers: Vec<SessionManager>,
}

impl Run {
    fn now(&self) -> Duration {
        self.t0.elapsed()
    }
}

fn parse_set_cookies(headers: &HeaderMap) -> CookieChange {
    let values: Vec<String> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.starts_with("sid="))
        .map(str::to_owned)
        .collect();
    match values.as_slice() {
        [] => CookieChange::None,
        [one] => {
            let value = one["sid=".len()..].split(';').next().unwrap_or("").trim();
            let expired = one
                .split(';')
                .any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
            if value.is_empty() || expired {
                CookieChange::Clear
            } else {
                CookieChange::Set(value.to_owned())
            }
        }
        _ => CookieChange::Several(values),
    }
}

fn field<T: std::str::FromStr>(body: &str, name: &str) -> Option<T> {
    body.split(' ')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------------------
// The actors.

struct Sent {
    instance: usize,
    op: Op,
    arg: String,
    sent: Option<String>,
    start: Duration,
    status: u16,
    headers: HeaderMap,
    body: String,
}

async fn send(
    run: Arc<Run>,
    instance: usize,
    op: Op,
    arg: String,
    sent: Option<String>,
    delay: u64,
) -> Sent {
    let mut req = Request::builder()
        .method(if op == Op::Read { "GET" } else { "POST" })
        .uri(format!("/{}", op.path()))
        .header("x-delay-us", delay.to_string())
        .header("x-arg", &arg);
    if let Some(id) = &sent {
        req = req.header(header::COOKIE, format!("sid={id}"));
    }
    let req = req.body(Body::empty()).unwrap();
    let start = run.now();
    let router = run.apps[instance].clone();
    let reply = tokio::time::timeout(HANG, async move {
        let res = router.oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (
            parts.status.as_u16(),
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    })
    .await;
    let (status, headers, body) = reply.unwrap_or((0, HeaderMap::new(), String::new()));
    Sent {
        instance,
        op,
        arg,
        sent,
        start,
        status,
        headers,
        body,
    }
}

fn pick_op(rng: &mut StdRng) -> Op {
    match rng.random_range(0..100) {
        0..25 => Op::Read,
        25..40 => Op::Write,
        40..65 => Op::Incr,
        65..70 => Op::SetTtl,
        70..78 => Op::Rotate,
        78..92 => Op::Login,
        _ => Op::Logout,
    }
}

fn delay_us(rng: &mut StdRng) -> u64 {
    match rng.random_range(0..100) {
        0..30 => 0,
        30..95 => rng.random_range(0..8_000),
        _ => rng.random_range(20_000..60_000),
    }
}

async fn browser(run: Arc<Run>, index: usize) -> Vec<Req> {
    let mut rng = StdRng::seed_from_u64(
        run.settings
            .seed
            .wrapping_add((index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
    );
    let mut jar: Option<String> = None;
    let mut history = Vec::new();
    let mut in_flight = JoinSet::new();
    let mut seq = 0u64;
    let mut width = rng.random_range(2..=4);
    loop {
        let stopping = run.stop.load(Ordering::Relaxed);
        while !stopping && in_flight.len() < width {
            let op = pick_op(&mut rng);
            seq += 1;
            let arg = match op {
                Op::Write => format!("w{index}_{seq}"),
                Op::SetTtl => rng.random_range(SET_TTL_SECS).to_string(),
                Op::Login => format!("user{}", rng.random_range(0..USERS)),
                _ => String::new(),
            };
            let instance = rng.random_range(0..run.apps.len());
            let delay = delay_us(&mut rng);
            in_flight.spawn(send(
                Arc::clone(&run),
                instance,
                op,
                arg,
                jar.clone(),
                delay,
            ));
        }
        let Some(done) = in_flight.join_next().await else {
            break;
        };
        let done = done.expect("a request task panicked");
        let change = parse_set_cookies(&done.headers);
        let jar_before = jar.clone();
        match &change {
            CookieChange::Set(id) => jar = Some(id.clone()),
            CookieChange::Clear => jar = None,
            CookieChange::None | CookieChange::Several(_) => {}
        }
        history.push(Req {
            browser: index,
            instance: done.instance,
            op: done.op,
            arg: done.arg,
            sent: done.sent,
            start: done.start,
            end: run.now(),
            status: done.status,
            change,
            jar_before,
            loaded: field::<u8>(&done.body, "loaded").map(|l| l == 1),
            exp_ms: field(&done.body, "exp"),
            body: done.body.chars().take(80).collect(),
        });
        if rng.random_range(0..10) == 0 {
            width = rng.random_range(2..=4);
        }
        let think = rng.random_range(0..2_000);
        tokio::time::sleep(Duration::from_micros(think)).await;
    }
    history
}

async fn operator(run: Arc<Run>) -> Vec<OpEvent> {
    let mut rng = StdRng::seed_from_u64(run.settings.seed ^ 0x0123_4567_89AB_CDEF);
    let mut history = Vec::new();
    while !run.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(30..150))).await;
        let manager = &run.managers[rng.random_range(0..run.managers.len())];
        let user = format!("user{}", rng.random_range(0..USERS));
        let kind = rng.random_range(0..100);
        // Every action starts from the user's "your sessions" page, as in an app.
        let start = run.now();
        let listed = tokio::time::timeout(HANG, manager.list(&user)).await;
        let listed = match listed {
            Ok(Ok(list)) => Ok(list
                .into_iter()
                .map(|i| i.handle.as_str().to_owned())
                .collect::<Vec<_>>()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("hung".to_owned()),
        };
        history.push(OpEvent {
            what: Manage::List(user.clone()),
            start,
            end: run.now(),
            result: listed.clone().map(OpResult::Listed),
        });
        let listed = listed.unwrap_or_default();
        let pick = |rng: &mut StdRng| {
            (!listed.is_empty()).then(|| listed[rng.random_range(0..listed.len())].clone())
        };
        let start = run.now();
        let (what, result) = match kind {
            0..40 => continue,
            40..65 => {
                let Some(handle) = pick(&mut rng) else {
                    continue;
                };
                let parsed = tower_redis_session::SessionHandle::parse(&handle).unwrap();
                let r = tokio::time::timeout(HANG, manager.terminate(&user, &parsed)).await;
                (
                    Manage::Terminate(user, handle),
                    flatten(r).map(OpResult::Terminated),
                )
            }
            _ => {
                let except = if kind < 80 { None } else { pick(&mut rng) };
                let parsed = except
                    .as_deref()
                    .map(|h| tower_redis_session::SessionHandle::parse(h).unwrap());
                let r =
                    tokio::time::timeout(HANG, manager.terminate_all(&user, parsed.as_ref())).await;
                (
                    Manage::TerminateAll(user, except),
                    flatten(r).map(OpResult::Ended),
                )
            }
        };
        history.push(OpEvent {
            what,
            start,
            end: run.now(),
            result,
        });
    }
    history
}

/// An operator call that answered [`ErrorKind::Conflict`](tower_redis_session::ErrorKind):
/// documented, so no violation.
const CONFLICT: &str = "conflict";

fn flatten<T>(
    r: Result<Result<T, tower_redis_session::Error>, tokio::time::error::Elapsed>,
) -> Result<T, String> {
    match r {
        Ok(Ok(v)) => Ok(v),
        // "Log out everywhere" answers a conflict when a session it follows keeps moving,
        // or the one it spares moved too; the model counts what it found as maybe ended.
        Ok(Err(e)) if e.kind() == tower_redis_session::ErrorKind::Conflict => {
            Err(CONFLICT.to_owned())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("hung".to_owned()),
    }
}

/// Kills every normal connection, or pauses Redis past the command timeout, now and then.
/// Returns when the last fault is over.
async fn faults(run: Arc<Run>, ports: Vec<u16>) -> Vec<FaultEvent> {
    let mut rng = StdRng::seed_from_u64(run.settings.seed ^ 0xFEDC_BA98_7654_3210);
    let mut history = Vec::new();
    let mut over = Duration::ZERO;
    loop {
        tokio::time::sleep(Duration::from_millis(rng.random_range(700..2_000))).await;
        if run.stop.load(Ordering::Relaxed) {
            break;
        }
        let port = ports[rng.random_range(0..ports.len())];
        let start = run.now();
        let (args, what, lasts) = if rng.random_bool(0.5) {
            (
                vec![
                    "CLIENT".to_owned(),
                    "KILL".into(),
                    "TYPE".into(),
                    "normal".into(),
                ],
                format!("CLIENT KILL TYPE normal on :{port}"),
                Duration::ZERO,
            )
        } else {
            let ms = run.settings.command_timeout.as_millis() as u64 + rng.random_range(200..800);
            (
                vec![
                    "CLIENT".to_owned(),
                    "PAUSE".into(),
                    ms.to_string(),
                    "ALL".into(),
                ],
                format!("CLIENT PAUSE {ms} ALL on :{port}"),
                Duration::from_millis(ms),
            )
        };
        let reply = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            resp::command(port, &args)
        })
        .await
        .unwrap();
        assert!(
            matches!(reply, Ok(ref r) if r.text().is_some() || r.int().is_some()),
            "{what}: {reply:?}"
        );
        history.push(FaultEvent {
            what,
            start,
            end: start + lasts,
        });
        over = over.max(start + lasts);
    }
    let now = run.now();
    if over > now {
        tokio::time::sleep(over - now).await;
    }
    history
}

// ---------------------------------------------------------------------------------------
// What is left in Redis.

#[derive(Debug, Clone)]
enum Stored {
    Missing,
    Marker(String, i64),
    Live(HashMap<String, String>, i64),
    Other(HashMap<String, String>, i64),
}

struct Snapshot {
    /// When the key listing came back: a key not in it was missing by then.
    listed_at: Duration,
    /// Per key: just before its TTL was read, and just after its contents were.
    read_at: HashMap<String, (Duration, Duration)>,
    keys: Vec<String>,
    /// Key → contents, for session keys (not user indexes).
    sessions: HashMap<String, Stored>,
    pttl: HashMap<String, i64>,
    indexes: HashMap<String, BTreeSet<String>>,
}

async fn snapshot(client: &Client, prefix: &str, owns_keyspace: bool, t0: Instant) -> Snapshot {
    let keys = if owns_keyspace {
        all_keys(client).await
    } else {
        keys_matching(client, &format!("{prefix}*")).await
    };
    let listed_at = t0.elapsed();
    let mut read_at = HashMap::new();
    let mut sessions = HashMap::new();
    let mut pttl = HashMap::new();
    let mut indexes = HashMap::new();
    for key in &keys {
        let before = t0.elapsed();
        let ttl: i64 = client.pttl(key).await.unwrap();
        pttl.insert(key.clone(), ttl);
        let Some(suffix) = key.strip_prefix(prefix) else {
            continue;
        };
        if suffix.starts_with("user:") {
            let members: Vec<String> = client
                .zrange(key, 0, -1, None, false, None, false)
                .await
                .unwrap_or_default();
            indexes.insert(key.clone(), members.into_iter().collect());
            continue;
        }
        let hash: HashMap<String, String> = client.hgetall(key).await.unwrap_or_default();
        read_at.insert(key.clone(), (before, t0.elapsed()));
        let stored = if hash.len() == 1 && hash.contains_key("ended") {
            Stored::Marker(hash["ended"].clone(), ttl)
        } else if hash.contains_key("created_at") && !hash.contains_key("ended") {
            Stored::Live(hash, ttl)
        } else if hash.is_empty() {
            Stored::Missing
        } else {
            Stored::Other(hash, ttl)
        };
        sessions.insert(key.clone(), stored);
    }
    Snapshot {
        listed_at,
        read_at,
        keys,
        sessions,
        pttl,
        indexes,
    }
}

// ---------------------------------------------------------------------------------------
// The model and the oracle.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Rotated,
    Destroyed,
    Terminated,
}

#[derive(Debug)]
struct IdInfo {
    label: String,
    handle: String,
    key: String,
    parent: Option<String>,
    children: Vec<String>,
    lineage: usize,
    /// The request whose response issued it.
    issued_by: usize,
    issue_start: Duration,
    issued_at: Duration,
    user: Option<String>,
    /// The earliest acknowledged end.
    ended: Option<(Duration, End)>,
    last_seen: Duration,
}

#[derive(Debug)]
struct Lineage {
    created_start: Duration,
    created_end: Duration,
    users: BTreeSet<String>,
    depth: usize,
}

/// Check → what broke it, each with the session ID it is about.
type Violations = BTreeMap<&'static str, Vec<(String, Option<String>)>>;

struct Oracle<'a> {
    settings: &'a Settings,
    reqs: Vec<Req>,
    ops: Vec<OpEvent>,
    ids: HashMap<String, IdInfo>,
    by_handle: HashMap<String, String>,
    lineages: Vec<Lineage>,
    violations: RefCell<Violations>,
    /// Increments counted more often than sent (allowed under faults: at-least-once).
    applied_twice: std::cell::Cell<usize>,
    /// Requests (indices) by the cookie they carried.
    by_sent: HashMap<String, Vec<usize>>,
}

impl<'a> Oracle<'a> {
    fn new(
        settings: &'a Settings,
        mut reqs: Vec<Req>,
        ops: Vec<OpEvent>,
        manager: &SessionManager,
    ) -> Self {
        reqs.sort_by_key(|r| r.end);
        let mut oracle = Self {
            settings,
            reqs,
            ops,
            ids: HashMap::new(),
            by_handle: HashMap::new(),
            lineages: Vec::new(),
            violations: RefCell::new(BTreeMap::new()),
            applied_twice: std::cell::Cell::new(0),
            by_sent: HashMap::new(),
        };
        oracle.build(manager);
        oracle
    }

    fn violation(&self, check: &'static str, what: String, id: Option<&str>) {
        self.violations
            .borrow_mut()
            .entry(check)
            .or_default()
            .push((what, id.map(str::to_owned)));
    }

    fn label(&self, id: Option<&str>) -> String {
        match id {
            None => "none".into(),
            Some(id) => self.ids.get(id).map_or_else(
                || format!("?{}", &id[..6.min(id.len())]),
                |i| i.label.clone(),
            ),
        }
    }

    /// Lineages (a session and the IDs it rotated through), ends, and who is tied to whom.
    fn build(&mut self, manager: &SessionManager) {
        for (i, r) in self.reqs.iter().enumerate() {
            let CookieChange::Set(new) = &r.change else {
                continue;
            };
            if self.ids.contains_key(new) {
                continue;
            }
            let parent = r
                .sent
                .as_ref()
                .filter(|s| {
                    r.acked() && r.loaded == Some(true) && r.op.ends() && self.ids.contains_key(*s)
                })
                .cloned();
            let (lineage, user, depth) = match &parent {
                Some(p) => {
                    let info = &self.ids[p];
                    let user = if r.op == Op::Login {
                        Some(r.arg.clone())
                    } else {
                        info.user.clone()
                    };
                    self.lineages[info.lineage].depth += 1;
                    (info.lineage, user, self.lineages[info.lineage].depth)
                }
                None => {
                    self.lineages.push(Lineage {
                        created_start: r.start,
                        created_end: r.end,
                        users: BTreeSet::new(),
                        depth: 0,
                    });
                    let user = (r.op == Op::Login).then(|| r.arg.clone());
                    (self.lineages.len() - 1, user, 0)
                }
            };
            if let Some(u) = &user {
                self.lineages[lineage].users.insert(u.clone());
            }
            let sid = SessionId::parse(new).expect("an issued ID has the ID shape");
            let handle = manager.handle(&sid).as_str().to_owned();
            self.by_handle.insert(handle.clone(), new.clone());
            if let Some(p) = &parent {
                let p = self.ids.get_mut(p).unwrap();
                p.children.push(new.clone());
                if p.ended.map_or(true, |(t, _)| r.end < t) {
                    p.ended = Some((r.end, End::Rotated));
                }
            }
            self.ids.insert(
                new.clone(),
                IdInfo {
                    label: format!("L{lineage}.{depth}"),
                    handle,
                    key: manager.redis_key(&sid),
                    parent,
                    children: Vec::new(),
                    lineage,
                    issued_by: i,
                    issue_start: r.start,
                    issued_at: r.end,
                    user,
                    ended: None,
                    last_seen: r.start,
                },
            );
        }
        for (i, r) in self.reqs.iter().enumerate() {
            if let Some(sent) = &r.sent {
                self.by_sent.entry(sent.clone()).or_default().push(i);
            }
            let Some(info) = r.sent.as_ref().and_then(|s| self.ids.get_mut(s)) else {
                continue;
            };
            info.last_seen = info.last_seen.max(r.start);
            let lineage = info.lineage;
            if r.op == Op::Logout
                && r.acked()
                && r.loaded == Some(true)
                && info.ended.map_or(true, |(t, _)| r.end < t)
            {
                info.ended = Some((r.end, End::Destroyed));
            }
            if r.op == Op::Login {
                self.lineages[lineage].users.insert(r.arg.clone());
            }
        }
        for op in &self.ops {
            let ended: Vec<String> = match (&op.what, &op.result) {
                (Manage::Terminate(_, handle), Ok(OpResult::Terminated(true))) => {
                    self.by_handle.get(handle).cloned().into_iter().collect()
                }
                (Manage::TerminateAll(user, except), Ok(OpResult::Ended(_))) => self
                    .ids
                    .iter()
                    .filter(|(_, i)| {
                        i.user.as_ref() == Some(user)
                            && i.issued_at < op.start
                            && self.reqs[i.issued_by].acked()
                            && except.as_ref() != Some(&i.handle)
                    })
                    .map(|(id, _)| id.clone())
                    .collect(),
                _ => Vec::new(),
            };
            for id in ended {
                let info = self.ids.get_mut(&id).unwrap();
                if info.ended.map_or(true, |(t, _)| op.end < t) {
                    info.ended = Some((op.end, End::Terminated));
                }
            }
        }
    }

    fn requests_with<'s>(&'s self, id: &str) -> impl Iterator<Item = &'s Req> + 's {
        self.by_sent
            .get(id)
            .into_iter()
            .flatten()
            .map(|&i| &self.reqs[i])
    }

    fn ended_by(&self, id: &str, t: Duration) -> Option<End> {
        self.ids[id]
            .ended
            .filter(|(at, _)| *at <= t)
            .map(|(_, e)| e)
    }

    /// `id` may be gone from Redis by `t` without the model knowing it for sure, the way a
    /// session is gone that the app must treat as missing (stale cookie cleared, a write
    /// starts a new session): an operator call that may have reached it, its absolute
    /// deadline, idle expiry.
    fn may_be_gone(&self, id: &str, t: Duration) -> bool {
        let info = &self.ids[id];
        let lineage = &self.lineages[info.lineage];
        let touched = self.ops.iter().any(|op| {
            op.start <= t
                && op.end >= info.issue_start
                && match &op.what {
                    Manage::List(_) => false,
                    Manage::Terminate(_, handle) => *handle == info.handle,
                    Manage::TerminateAll(user, except) => {
                        (lineage.users.contains(user) || info.user.as_ref() == Some(user))
                            && except.as_ref() != Some(&info.handle)
                    }
                }
        });
        let deadline = self
            .settings
            .lifetime
            .is_some_and(|l| t + SLACK >= lineage.created_start + l);
        let idle = t >= info.last_seen + MIN_IDLE;
        touched || deadline || idle
    }

    /// A request may have ended `id` by `t` without the model knowing it for sure: a
    /// logout in flight (it ends the session in Redis before its response arrives), a
    /// rotation, login or logout whose outcome is unknown. (An acknowledged rotation ends
    /// the old ID when its response arrives: until then the session lives on, moved or
    /// not.)
    fn may_be_ending(&self, id: &str, t: Duration) -> bool {
        self.requests_with(id).any(|r| {
            r.op.ends()
                && r.start <= t
                && !r.refused()
                && (r.op == Op::Logout || r.unknown() || !self.rotates(r, id))
        })
    }

    /// `r` (carrying `id`) rotated it: its response set a child of `id`.
    fn rotates(&self, r: &Req, id: &str) -> bool {
        matches!(&r.change, CookieChange::Set(n)
            if self.ids.get(n).is_some_and(|c| c.parent.as_deref() == Some(id)))
    }

    /// At `t`, the absolute deadline of `id`'s session is less than a second away (a
    /// deadline kept in whole seconds would have passed).
    fn in_last_second(&self, id: &str, t: Duration) -> bool {
        let created = self.lineages[self.ids[id].lineage].created_start;
        self.settings
            .lifetime
            .is_some_and(|l| t + Duration::from_secs(1) + SLACK >= created + l)
    }

    /// The session `id` certainly lives at `t`.
    fn lives(&self, id: &str, t: Duration) -> bool {
        self.ended_by(id, t).is_none() && !self.may_be_gone(id, t) && !self.may_be_ending(id, t)
    }

    /// What the cookie the request carried allows its response to do to the browser's
    /// cookie: set a new session when it carried none; set the rotated ID or clear at its
    /// own logout; clear or start over when its session is missing (terminated, expired).
    /// A request whose session was rotated away or destroyed by another request, or
    /// lives, leaves the cookie alone.
    fn may_replace_cookie(&self, r: &Req) -> bool {
        match (r.sent.as_deref(), &r.change) {
            (None, CookieChange::Set(_)) => true,
            (None, _) => false,
            (Some(sent), change) => {
                if !self.ids.contains_key(sent) {
                    return true;
                }
                let own_logout = r.op == Op::Logout && r.acked() && r.loaded == Some(true);
                self.rotates(r, sent)
                    || (own_logout && *change == CookieChange::Clear)
                    || self.ended_by(sent, r.end) == Some(End::Terminated)
                    || self.may_be_gone(sent, r.end)
            }
        }
    }

    fn check_history(&self) {
        let faults = self.settings.faults;
        for r in &self.reqs {
            let who = format!(
                "b{} {:?}{} sent {} at {:?}..{:?} (instance {}): {} {:?} body {:?}",
                r.browser,
                r.op,
                r.arg_label(),
                self.label(r.sent.as_deref()),
                r.start,
                r.end,
                r.instance,
                r.status,
                self.change_label(&r.change),
                r.body
            );
            match r.status {
                200 | 409 => {}
                503 if faults => {}
                503 => self.violation(
                    "503 without an injected fault (a command timed out)",
                    who.clone(),
                    r.sent.as_deref(),
                ),
                0 => self.violation("request hung", who.clone(), r.sent.as_deref()),
                _ => self.violation("unexpected status", who.clone(), r.sent.as_deref()),
            }
            if r.refused() && r.change != CookieChange::None {
                self.violation("refusal touches the cookie", who.clone(), r.sent.as_deref());
            }
            if let CookieChange::Several(_) = r.change {
                self.violation(
                    "several session cookies in one response",
                    who.clone(),
                    r.sent.as_deref(),
                );
            }
            if r.acked()
                && r.op.writes()
                && r.loaded == Some(false)
                && !matches!(r.change, CookieChange::Set(_))
            {
                self.violation(
                    "acknowledged write on no session and no new cookie",
                    who.clone(),
                    r.sent.as_deref(),
                );
            }
            let known = r.sent.as_deref().filter(|s| self.ids.contains_key(*s));
            if let (Some(id), Some(true)) = (known, r.loaded) {
                let info = &self.ids[id];
                if let Some((at, end)) = info.ended.filter(|(at, _)| *at < r.start) {
                    let check = match end {
                        End::Rotated => "rotated-away session served afterwards",
                        End::Destroyed => "logged-out session served afterwards",
                        End::Terminated => "terminated session served afterwards",
                    };
                    self.violation(check, format!("{who}; ended at {at:?}"), Some(id));
                }
                if let Some(lifetime) = self.settings.lifetime {
                    let deadline = self.lineages[info.lineage].created_end + lifetime + SLACK;
                    if r.start > deadline {
                        self.violation(
                            "session served past its absolute deadline",
                            format!("{who}; deadline at most {deadline:?}"),
                            Some(id),
                        );
                    }
                    if let Some(exp) = r.exp_ms.filter(|e| *e >= 0) {
                        let expires = r.start + Duration::from_millis(exp as u64);
                        if expires > deadline {
                            self.violation(
                                "key TTL past the absolute deadline",
                                format!("{who}; key expires at least at {expires:?}, deadline at most {deadline:?}"),
                                Some(id),
                            );
                        }
                    }
                }
            }
            // The browser's cookie, as the browser applies it.
            if let Some(held) = r
                .jar_before
                .as_deref()
                .filter(|h| self.ids.contains_key(*h))
            {
                let check = match &r.change {
                    CookieChange::Clear => Some("cookie cleared while its session lives"),
                    CookieChange::Set(new)
                        if new != held && self.ids[new].parent.as_deref() != Some(held) =>
                    {
                        Some("cookie replaced by an unrelated session while its session lives")
                    }
                    _ => None,
                };
                if let Some(mut check) = check {
                    if self.lives(held, r.end) && !self.may_replace_cookie(r) {
                        // It found its own session missing a little before its deadline.
                        if self.in_last_second(held, r.end)
                            && r.sent.as_deref() == Some(held)
                            && r.loaded == Some(false)
                        {
                            check =
                                "session ended before its absolute deadline (in its last second)";
                        }
                        let what = format!("{who}; the jar held {}", self.label(Some(held)));
                        self.violation(check, what, Some(held));
                    }
                }
            }
        }
        let forks: Vec<(String, usize)> = self
            .ids
            .iter()
            .filter(|(_, i)| i.children.len() > 1)
            .map(|(id, i)| (id.clone(), i.children.len()))
            .collect();
        for (id, n) in forks {
            let what = format!("{} rotated into {n} live IDs", self.label(Some(&id)));
            self.violation("one session rotated into several", what, Some(&id));
        }
        for op in &self.ops {
            if let Err(e) = &op.result {
                let documented = e == CONFLICT && matches!(op.what, Manage::TerminateAll(..));
                if (!faults || e == "hung") && !documented {
                    self.violation("operator call failed", format!("{op:?}"), None);
                }
            }
            if let Ok(OpResult::Listed(handles)) = &op.result {
                for h in handles {
                    let Some(id) = self.by_handle.get(h).cloned() else {
                        continue;
                    };
                    if let Some((at, end)) = self.ids[&id].ended.filter(|(at, _)| *at < op.start) {
                        let what = format!(
                            "{:?} at {:?} listed {} ({end:?} at {at:?})",
                            op.what,
                            op.start,
                            self.label(Some(&id))
                        );
                        self.violation("ended session listed", what, Some(&id));
                    }
                }
            }
        }
    }

    fn change_label(&self, change: &CookieChange) -> String {
        match change {
            CookieChange::None => "-".into(),
            CookieChange::Clear => "clear".into(),
            CookieChange::Set(id) => format!("set {}", self.label(Some(id))),
            CookieChange::Several(v) => format!("{} cookies", v.len()),
        }
    }

    fn chain(&self, id: &str) -> Vec<String> {
        let mut chain = vec![id.to_owned()];
        while let Some(p) = self.ids[chain.last().unwrap()].parent.clone() {
            chain.push(p);
        }
        chain
    }

    fn check_redis(&self, snap: &Snapshot, prefix: &str, owns_keyspace: bool) {
        let lengths: BTreeSet<usize> = self.ids.keys().map(String::len).collect();
        let raw_id_in = |key: &str| {
            lengths.iter().any(|&len| {
                key.as_bytes()
                    .windows(len)
                    .any(|w| std::str::from_utf8(w).is_ok_and(|w| self.ids.contains_key(w)))
            })
        };
        for key in &snap.keys {
            if !key.starts_with(prefix) {
                if owns_keyspace {
                    self.violation("key outside the prefix", key.clone(), None);
                }
                continue;
            }
            let ttl = snap.pttl[key];
            if !key[prefix.len()..].starts_with("user:") && ttl < 0 && ttl != -2 {
                self.violation("key without a TTL", format!("{key} ({ttl})"), None);
            }
            if raw_id_in(key) {
                self.violation("raw session ID in a key", key.clone(), None);
            }
        }
        for (key, stored) in &snap.sessions {
            match stored {
                Stored::Marker(kind, ttl) => {
                    if !["rotated", "destroyed", "terminated"].contains(&kind.as_str())
                        || *ttl <= 0
                        || *ttl > MARKER_TTL_MS
                    {
                        self.violation(
                            "malformed marker",
                            format!("{key}: {kind} ttl {ttl}"),
                            None,
                        );
                    }
                }
                Stored::Other(hash, ttl) => {
                    let mut fields: Vec<&String> = hash.keys().collect();
                    fields.sort();
                    self.violation(
                        "session key holds neither a session nor a marker",
                        format!("{key}: fields {fields:?} ttl {ttl}"),
                        None,
                    );
                }
                Stored::Live(hash, _) => {
                    if let Some(user) = hash.get("user_id") {
                        let index = format!("{prefix}user:{}", digest(user));
                        let member = &key[prefix.len()..];
                        if !snap.indexes.get(&index).is_some_and(|m| m.contains(member)) {
                            let id = self.by_handle.get(member).cloned();
                            let what = format!(
                                "{} tied to {user} is not in {index}",
                                self.label(id.as_deref())
                            );
                            self.violation(
                                "tied session missing from its user's index",
                                what,
                                id.as_deref(),
                            );
                        }
                    }
                }
                Stored::Missing => {}
            }
        }
        let mut ids: Vec<String> = self.ids.keys().cloned().collect();
        ids.sort_by_key(|id| self.ids[id].issued_at);
        for id in ids {
            let info = &self.ids[&id];
            let stored = snap
                .sessions
                .get(&info.key)
                .cloned()
                .unwrap_or(Stored::Missing);
            let label = info.label.clone();
            let live = matches!(stored, Stored::Live(..));
            let (before, seen) = snap
                .read_at
                .get(&info.key)
                .copied()
                .unwrap_or((snap.listed_at, snap.listed_at));
            if let Some((at, end)) = info.ended {
                if live {
                    let check = match end {
                        End::Rotated => "rotated-away session alive at the end",
                        End::Destroyed => "logged-out session alive at the end",
                        End::Terminated => "terminated session alive at the end",
                    };
                    self.violation(check, format!("{label} ({end:?} at {at:?})"), Some(&id));
                }
                continue;
            }
            if !live {
                if !self.may_be_gone(&id, seen)
                    && !self.may_be_ending(&id, seen)
                    && self.reqs[info.issued_by].acked()
                {
                    let lineage = &self.lineages[info.lineage];
                    let what = format!(
                        "{label} ({stored:?}), created at {:?}..{:?}, looked at {:?}",
                        lineage.created_start, lineage.created_end, seen
                    );
                    let check = if self.in_last_second(&id, seen) {
                        "session ended before its absolute deadline (in its last second)"
                    } else {
                        "live session lost"
                    };
                    self.violation(check, what, Some(&id));
                }
                continue;
            }
            let Stored::Live(hash, ttl) = stored else {
                unreachable!()
            };
            if let Some(lifetime) = self.settings.lifetime {
                let deadline = self.lineages[info.lineage].created_end + lifetime + SLACK;
                let expires = before + Duration::from_millis(ttl.max(0) as u64);
                if expires > deadline {
                    self.violation(
                        "key TTL past the absolute deadline",
                        format!("{label} at the end: expires at least at {expires:?}, deadline at most {deadline:?}"),
                        Some(&id),
                    );
                }
            }
            self.check_counts(&id, &hash);
        }
    }

    /// Every acknowledged change on the session's IDs is in it, none refused is.
    fn check_counts(&self, id: &str, hash: &HashMap<String, String>) {
        let chain = self.chain(id);
        let root = &self.reqs[self.ids[chain.last().unwrap()].issued_by];
        let (mut acked, mut unknown, mut refused) = (0i64, 0i64, 0i64);
        let mut lost_writes = Vec::new();
        let mut applied_refusals = Vec::new();
        if root.acked() && root.loaded == Some(false) {
            if root.op == Op::Incr {
                acked += 1;
            }
            if root.op == Op::Write && !hash.contains_key(&root.arg) {
                lost_writes.push(root.arg.clone());
            }
        }
        for r in chain.iter().flat_map(|id| self.requests_with(id)) {
            match (r.op, r.status, r.loaded) {
                (Op::Incr, 200, Some(true)) => acked += 1,
                (Op::Incr, 200, _) => {}
                (Op::Incr, 409, _) => refused += 1,
                (Op::Incr, _, _) => unknown += 1,
                (Op::Write, 200, Some(true)) if !hash.contains_key(&r.arg) => {
                    lost_writes.push(r.arg.clone());
                }
                (Op::Write, 409, _) if hash.contains_key(&r.arg) => {
                    applied_refusals.push(r.arg.clone());
                }
                _ => {}
            }
        }
        let n: i64 = hash.get("n").and_then(|v| v.parse().ok()).unwrap_or(0);
        let label = self.label(Some(id));
        if n < acked {
            self.violation(
                "acknowledged increment lost",
                format!(
                    "{label}: counter {n}, {acked} increments acknowledged on its IDs ({} lost)",
                    acked - n
                ),
                Some(id),
            );
        }
        // Under faults a write is at-least-once: a command re-sent after a killed
        // connection may land twice, so only a refused write is checked (by its field).
        if n > acked + unknown && self.settings.faults {
            self.applied_twice
                .set(self.applied_twice.get() + (n - acked - unknown) as usize);
        } else if n > acked + unknown {
            self.violation(
                "increment counted though not acknowledged",
                format!("{label}: counter {n}, {acked} acknowledged, {unknown} unknown, {refused} refused"),
                Some(id),
            );
        }
        if !lost_writes.is_empty() {
            self.violation(
                "acknowledged write lost",
                format!(
                    "{label}: {} acknowledged writes missing: {lost_writes:?}",
                    lost_writes.len()
                ),
                Some(id),
            );
        }
        if !applied_refusals.is_empty() {
            self.violation(
                "refused write applied",
                format!("{label}: {applied_refusals:?}"),
                Some(id),
            );
        }
    }

    /// The requests and operator calls around one session, for a report.
    fn story(&self, id: &str) -> String {
        let info = &self.ids[id];
        let lineage = info.lineage;
        let users = &self.lineages[lineage].users;
        let in_lineage = |s: &Option<String>| {
            s.as_ref()
                .and_then(|s| self.ids.get(s))
                .is_some_and(|i| i.lineage == lineage)
        };
        let mut lines: Vec<(Duration, String)> = Vec::new();
        for r in &self.reqs {
            let issued = matches!(&r.change, CookieChange::Set(n) if in_lineage(&Some(n.clone())));
            let held = in_lineage(&r.jar_before);
            if !(in_lineage(&r.sent) || issued || held) {
                continue;
            }
            lines.push((
                r.start,
                format!(
                    "  {:>9.3}..{:>9.3} b{} i{} {:?}{} cookie={} -> {} {} jar {}->{} [{}]",
                    r.start.as_secs_f64(),
                    r.end.as_secs_f64(),
                    r.browser,
                    r.instance,
                    r.op,
                    r.arg_label(),
                    self.label(r.sent.as_deref()),
                    r.status,
                    self.change_label(&r.change),
                    self.label(r.jar_before.as_deref()),
                    match &r.change {
                        CookieChange::Set(n) => self.label(Some(n)),
                        CookieChange::Clear => "none".into(),
                        _ => self.label(r.jar_before.as_deref()),
                    },
                    r.body
                ),
            ));
        }
        for op in &self.ops {
            let user = match &op.what {
                Manage::List(u) | Manage::Terminate(u, _) | Manage::TerminateAll(u, _) => u,
            };
            if !users.contains(user) || matches!(op.what, Manage::List(_)) {
                continue;
            }
            let show = |h: &String| {
                self.by_handle
                    .get(h)
                    .map_or_else(|| "?".to_owned(), |id| self.label(Some(id)))
            };
            let what = match &op.what {
                Manage::List(u) => format!("list({u})"),
                Manage::Terminate(u, h) => format!("terminate({u}, {})", show(h)),
                Manage::TerminateAll(u, e) => {
                    format!(
                        "terminate_all({u}, except {})",
                        e.as_ref().map_or("none".into(), show)
                    )
                }
            };
            lines.push((
                op.start,
                format!(
                    "  {:>9.3}..{:>9.3} operator {what} -> {:?}",
                    op.start.as_secs_f64(),
                    op.end.as_secs_f64(),
                    op.result
                ),
            ));
        }
        lines.sort_by_key(|(t, _)| *t);
        let total = lines.len();
        let mut out = String::new();
        // The end of the story matters most: show the last 30 lines.
        if total > 30 {
            let _ = writeln!(out, "  ... {} earlier events", total - 30);
        }
        for (_, line) in lines.into_iter().skip(total.saturating_sub(30)) {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// A run.

/// One seeded run; returns its report and whether every check held.
async fn run_once(topology: Topology, settings: Settings) -> (String, bool) {
    // Faults reach every client of the server: on the shared cluster, nobody else runs.
    let mut backend = if settings.faults && topology == Topology::Cluster {
        topology.start_exclusive().await
    } else {
        topology.start().await
    };
    let ports = match topology {
        Topology::Single => vec![backend.server().port()],
        Topology::Cluster => tokio::task::spawn_blocking(|| RedisCluster::shared().primaries())
            .await
            .unwrap(),
    };
    let url = backend.redis_url();
    let owns_keyspace = backend.owns_keyspace();
    // A prefix of the test's own, as every test on the shared cluster keeps to.
    let prefix = crate::support::fresh_prefix();
    let mut apps = Vec::new();
    let mut managers = Vec::new();
    let mut layers = Vec::new();
    for _ in 0..2 {
        let client = connect_client(&url).await;
        let mut builder = RedisSessionLayer::builder(client)
            .script_mode(crate::support::script_mode())
            .key_prefix(&prefix)
            .cookie_name("sid")
            .idle_ttl(IDLE_TTL)
            .max_fields(100_000)
            .command_timeout(settings.command_timeout);
        if let Some(lifetime) = settings.lifetime {
            builder = builder.absolute_lifetime(lifetime);
        }
        if settings.read_cache {
            builder = builder
                .touch_interval(Duration::from_secs(1))
                .read_cache(tower_redis_session::ReadCache::new());
        }
        let layer = builder.build().unwrap();
        layer.load_scripts().await.unwrap();
        managers.push(layer.manager());
        layers.push(layer.clone());
        apps.push(app(layer));
    }
    let run = Arc::new(Run {
        settings: settings.clone(),
        t0: Instant::now(),
        stop: AtomicBool::new(false),
        apps,
        managers,
    });
    let browsers: Vec<_> = (0..settings.browsers)
        .map(|i| tokio::spawn(browser(Arc::clone(&run), i)))
        .collect();
    let operator = tokio::spawn(operator(Arc::clone(&run)));
    let fault_task = settings
        .faults
        .then(|| tokio::spawn(faults(Arc::clone(&run), ports)));
    tokio::time::sleep(settings.duration).await;
    run.stop.store(true, Ordering::Relaxed);
    let mut reqs = Vec::new();
    for b in browsers {
        reqs.extend(b.await.expect("a browser panicked"));
    }
    let ops = operator.await.expect("the operator panicked");
    let fault_events = match fault_task {
        Some(t) => t.await.expect("the fault task panicked"),
        None => Vec::new(),
    };
    let active = run.now();
    if settings.faults {
        // A write that timed out may still land: let it, before looking.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    let client = connect_client(&url).await;
    let snap = snapshot(&client, &prefix, owns_keyspace, run.t0).await;

    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for r in &reqs {
        *statuses.entry(r.status).or_default() += 1;
    }
    let requests = reqs.len();
    let oracle = Oracle::new(&settings, reqs, ops, &run.managers[0]);
    oracle.check_history();
    oracle.check_redis(&snap, &prefix, owns_keyspace);

    let mut report = String::new();
    let _ = writeln!(
        report,
        "checker seed={} topology={topology:?} duration={:?} browsers={} faults={} absolute_lifetime={:?} read_cache={}",
        settings.seed, settings.duration, settings.browsers, settings.faults, settings.lifetime, settings.read_cache
    );
    for (i, layer) in layers.iter().enumerate() {
        if let Some(stats) = layer.cache_stats() {
            let _ = writeln!(
                report,
                "  instance {i} read cache: {} hits, {} misses, {} entries at the end",
                stats.hits, stats.misses, stats.entries
            );
        }
    }
    let ops = oracle.ops.len();
    let ended_by_operator: usize = oracle
        .ops
        .iter()
        .map(|op| match op.result {
            Ok(OpResult::Ended(n)) => n,
            Ok(OpResult::Terminated(true)) => 1,
            _ => 0,
        })
        .sum();
    let _ = writeln!(
        report,
        "  {requests} requests + {ops} operator calls in {:.1} s = {:.0} operations/s; statuses {statuses:?}; {} session IDs in {} sessions; {ended_by_operator} sessions ended by the operator; {} faults; {} keys left",
        active.as_secs_f64(),
        (requests + ops) as f64 / active.as_secs_f64(),
        oracle.ids.len(),
        oracle.lineages.len(),
        fault_events.len(),
        snap.keys.len(),
    );
    if oracle.applied_twice.get() > 0 {
        let _ = writeln!(
            report,
            "  {} increments counted more than once (at-least-once under faults)",
            oracle.applied_twice.get()
        );
    }
    for f in &fault_events {
        let _ = writeln!(
            report,
            "  fault {:.3}..{:.3} {}",
            f.start.as_secs_f64(),
            f.end.as_secs_f64(),
            f.what
        );
    }
    let ok = oracle.violations.borrow().is_empty();
    for (check, found) in oracle.violations.borrow().iter() {
        let _ = writeln!(report, "  VIOLATION {check}: {} times", found.len());
        for (what, id) in found.iter().take(2) {
            let _ = writeln!(report, "    e.g. {what}");
            if let Some(id) = id.as_deref().filter(|id| oracle.ids.contains_key(*id)) {
                report.push_str(&oracle.story(id));
            }
        }
    }
    if !ok {
        let _ = writeln!(
            report,
            "  replay with CHECK_SEED={} CHECK_DURATION={} CHECK_BROWSERS={}{}",
            settings.seed,
            settings.duration.as_secs(),
            settings.browsers,
            if settings.read_cache {
                " (checker::single_read_cache)"
            } else {
                ""
            }
        );
    }
    (report, ok)
}

async fn randomized_browsers_and_an_operator_get_what_each_response_promised(topology: Topology) {
    check_seeds(topology, false).await;
}

async fn check_seeds(topology: Topology, read_cache: bool) {
    let first = env("CHECK_SEED").unwrap_or_else(|| rand::rng().random_range(0..1_000_000u64));
    let seeds: u64 = env("CHECK_SEEDS").unwrap_or(1);
    let mut failed = Vec::new();
    for seed in first..first + seeds {
        let settings = Settings {
            read_cache,
            ..Settings::new(seed)
        };
        let (report, ok) = run_once(topology, settings).await;
        if ok {
            eprint!("{report}");
        } else {
            failed.push(report);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {seeds} seeds failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

session_tests! {
    randomized_browsers_and_an_operator_get_what_each_response_promised,
}

/// The same checks with a read cache on both instances (a short touch interval, so
/// entries are filled and dropped all along): a read from memory must promise nothing a
/// load from Redis would not. Not on the cluster, where the cache is refused.
mod single_read_cache {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn randomized_browsers_and_an_operator_get_what_each_response_promised() {
        super::check_seeds(crate::support::Topology::Single, true).await;
    }
}
