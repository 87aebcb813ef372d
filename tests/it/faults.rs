//! Faults under load, on 127.0.0.1 only, each against a `redis-server` of its own: SIGKILL
//! with an AOF, SIGSTOP, Redis down at start, connection churn, two app instances on one
//! Redis, a connection limit, out of memory, and the ACL user of `docs/operations.md`.
//!
//! Every test prints its figures (`cargo test --test faults -- --nocapture`). Counts are
//! kept small (100 sessions, a few hundred requests per fault) so the whole file runs in
//! well under two minutes on two cores.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::Router;
use http::StatusCode;
use tokio::task::JoinHandle;
use tower_redis_session::{fred::prelude::*, RedisSessionLayer, RedisSessionLayerBuilder};

use crate::support::{
    hardening::{self, key, pool, routes, send, Gate},
    layer,
    resp::Reply,
    Logs, RedisServer,
};

/// The layer's command timeout in these tests.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a request may take: a load and a save, each bounded by the timeout.
const MAX_LATENCY: Duration = Duration::from_millis(2 * 1000 + 700);
const PREFIX: &str = "session:";
/// How late past the timeout a 503 may arrive (scheduling on a busy machine).
const STOP_MARGIN: Duration = Duration::from_millis(700);
/// How long the SIGSTOP test keeps the server stopped.
const PAUSE: Duration = Duration::from_secs(4);

fn app_on(redis: impl Into<tower_redis_session::Redis>) -> (Router, RedisSessionLayer) {
    app_with(redis, |b| b)
}

fn app_with(
    redis: impl Into<tower_redis_session::Redis>,
    configure: impl FnOnce(RedisSessionLayerBuilder) -> RedisSessionLayerBuilder,
) -> (Router, RedisSessionLayer) {
    let layer = configure(layer(redis).command_timeout(TIMEOUT))
        .build()
        .unwrap();
    (
        routes(Arc::new(Gate::default())).layer(layer.clone()),
        layer,
    )
}

/// Starts `n` sessions (one field each) and returns their IDs.
async fn start_sessions(app: &Router, n: usize) -> Arc<Vec<String>> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let res = send(app, "POST", "/set/username/ferris", None).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.body);
        ids.push(res.new_id().unwrap());
    }
    Arc::new(ids)
}

/// One request of a load run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    session: usize,
    status: StatusCode,
    start: Instant,
    end: Instant,
}

impl Sample {
    fn ok(&self) -> bool {
        self.status == StatusCode::OK
    }
}

/// `POST /incr` on the sessions from `workers` tasks, one request per worker every
/// `pace`, until `stop`.
struct Load {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(app: &Router, ids: &Arc<Vec<String>>, workers: usize, pace: Duration) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..workers)
            .map(|w| {
                let (app, ids, samples, stop) = (
                    app.clone(),
                    Arc::clone(ids),
                    Arc::clone(&samples),
                    Arc::clone(&stop),
                );
                tokio::spawn(async move {
                    let mut i = w;
                    while !stop.load(Ordering::Relaxed) {
                        let session = i % ids.len();
                        i += workers;
                        let start = Instant::now();
                        let res = send(&app, "POST", "/incr", Some(&ids[session])).await;
                        samples.lock().unwrap().push(Sample {
                            session,
                            status: res.status,
                            start,
                            end: Instant::now(),
                        });
                        tokio::time::sleep(pace).await;
                    }
                })
            })
            .collect();
        Self {
            samples,
            stop,
            tasks,
        }
    }

    fn snapshot(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// Waits until a request that started after `since` succeeds; returns how long after
    /// `since` it ended.
    async fn recovery_after(&self, since: Instant, limit: Duration) -> Duration {
        loop {
            if let Some(first) = self
                .snapshot()
                .iter()
                .filter(|s| s.start >= since && s.ok())
                .map(|s| s.end)
                .min()
            {
                return first - since;
            }
            assert!(
                since.elapsed() < limit,
                "no successful request within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let samples = self.samples.lock().unwrap().clone();
        samples
    }
}

/// Counts by status, and the longest request.
fn summary(samples: &[Sample]) -> (usize, usize, Duration) {
    let ok = samples.iter().filter(|s| s.ok()).count();
    let unavailable = samples
        .iter()
        .filter(|s| s.status == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    let others: Vec<_> = samples
        .iter()
        .filter(|s| !s.ok() && s.status != StatusCode::SERVICE_UNAVAILABLE)
        .map(|s| s.status)
        .collect();
    assert!(
        others.is_empty(),
        "statuses other than 200 and 503: {others:?}"
    );
    let max = samples
        .iter()
        .map(|s| s.end - s.start)
        .max()
        .unwrap_or_default();
    assert!(
        max <= MAX_LATENCY,
        "a request took {max:?}, past the command timeouts"
    );
    (ok, unavailable, max)
}

/// The stored counter of every session (0 where the field or session is missing).
fn stored_counts(redis: &RedisServer, ids: &[String]) -> Vec<i64> {
    ids.iter()
        .map(|id| {
            redis
                .cmd(&["HGET", &key(PREFIX, id), "n"])
                .text()
                .map_or(0, |n| n.parse().unwrap())
        })
        .collect()
}

/// Acknowledged increments per session among `samples` that match `pick`.
fn acked(samples: &[Sample], n: usize, pick: impl Fn(&Sample) -> bool) -> Vec<i64> {
    let mut counts = vec![0; n];
    for s in samples.iter().filter(|s| s.ok() && pick(s)) {
        counts[s.session] += 1;
    }
    counts
}

/// Fails if an acknowledged increment is not stored; how many were stored without an
/// acknowledgement.
fn none_lost(redis: &RedisServer, ids: &[String], samples: &[Sample]) -> i64 {
    let n = ids.len();
    let stored = stored_counts(redis, ids);
    let all = acked(samples, n, |_| true);
    for i in 0..n {
        assert!(
            stored[i] >= all[i],
            "session {i}: acknowledged increments lost"
        );
    }
    (0..n).map(|i| stored[i] - all[i]).sum()
}

/// Every key under the prefix is a session hash with its internal fields and a TTL, a
/// marker an ended session left (one `ended` field, a TTL), or (with `indexes`) a user
/// index. Returns how many are live sessions.
/// A key's PTTL, its `created_at` and `session_ttl`, its number of fields, and whether it
/// has `ended`, read at one instant.
const KEY_STATE: &str = "return {redis.call('PTTL', KEYS[1]), \
    redis.call('HMGET', KEYS[1], 'created_at', 'session_ttl'), \
    redis.call('HLEN', KEYS[1]), redis.call('HEXISTS', KEYS[1], 'ended')}";

fn check_keyspace(redis: &RedisServer, indexes: bool) -> usize {
    let keys = redis.cmd(&["KEYS", "*"]);
    let mut sessions = 0;
    for k in keys.items() {
        let k = k.text().unwrap();
        assert!(k.starts_with(PREFIX), "key outside the prefix: {k}");
        if indexes && k.starts_with("session:user:") {
            continue;
        }
        // In one script, so that an eviction or expiry cannot fall between the reads.
        let seen = redis.cmd(&["EVAL", KEY_STATE, "1", &k]);
        let [ttl, fields, len, ended] = seen.items() else {
            panic!("unexpected reply for {k}: {seen:?}");
        };
        let ttl = ttl.int().unwrap();
        assert!(
            ttl > 0 || ttl == -2,
            "session key without a TTL: {k} ({ttl})"
        );
        let marker = len.int() == Some(1) && ended.int() == Some(1);
        if ttl > 0 && !marker {
            assert!(
                fields.items().iter().all(|f| f.text().is_some()),
                "half-made session hash {k}: {fields:?}"
            );
            sessions += 1;
        }
    }
    sessions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_then_aof_restart_keeps_every_increment_acknowledged_a_second_before() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    let (app, _) = app_on(pool(&redis.url()).await);
    let ids = start_sessions(&app, 100).await;

    let load = Load::start(&app, &ids, 4, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = Instant::now();
    redis.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restart_began = Instant::now();
    let redis = tokio::task::spawn_blocking(move || {
        redis.spawn();
        redis
    })
    .await
    .unwrap();
    let back_at = Instant::now();
    let recovery = load.recovery_after(back_at, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let samples = load.finish().await;

    let (ok, unavailable, max) = summary(&samples);
    // While Redis was down, nothing succeeded.
    let while_down: Vec<_> = samples
        .iter()
        .filter(|s| s.start > killed_at && s.end < restart_began)
        .collect();
    assert!(!while_down.is_empty());
    assert!(
        while_down.iter().all(|s| !s.ok()),
        "a 200 while Redis was down"
    );

    let n = ids.len();
    let stored = stored_counts(&redis, &ids);
    let cutoff = killed_at - Duration::from_secs(1);
    let before = acked(&samples, n, |s| s.end < cutoff);
    let after = acked(&samples, n, |s| s.start > back_at);
    let all = acked(&samples, n, |_| true);
    for i in 0..n {
        assert!(
            stored[i] >= before[i] + after[i],
            "session {i}: {} stored, {} acknowledged more than 1 s before the kill and {} after the restart",
            stored[i],
            before[i],
            after[i]
        );
    }
    let lost: i64 = (0..n).map(|i| (all[i] - stored[i]).max(0)).sum();
    let extra: i64 = (0..n).map(|i| (stored[i] - all[i]).max(0)).sum();
    println!(
        "SIGKILL + AOF everysec: {} requests, {ok} acknowledged ({} more than 1 s before the kill), \
         {} stored after restart, {lost} acknowledged but lost, {extra} applied without an acknowledgement, \
         {unavailable} answered 503 ({} while down), recovery {recovery:?} after Redis was back, \
         longest request {max:?}",
        samples.len(),
        before.iter().sum::<i64>(),
        stored.iter().sum::<i64>(),
        while_down.len(),
    );
    assert_eq!(check_keyspace(&redis, false), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_longer_than_the_timeout_gives_bounded_503s_then_recovers() {
    let redis = RedisServer::start_with(&[]);
    let (app, _) = app_on(pool(&redis.url()).await);
    let ids = start_sessions(&app, 100).await;

    let load = Load::start(&app, &ids, 4, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The pause, from before SIGSTOP is sent until SIGCONT has been (the window a 503
    // may fall in), and from when SIGSTOP has surely landed until SIGCONT is sent (the
    // window nothing may succeed in).
    let paused_at = Instant::now();
    redis.pause();
    let stopped = Instant::now();
    // Long enough that requests start in it and time out well before SIGCONT.
    tokio::time::sleep(PAUSE).await;
    let continued = Instant::now();
    redis.resume();
    let resumed_at = Instant::now();
    let recovery = load
        .recovery_after(resumed_at, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let samples = load.finish().await;

    let (ok, unavailable, max) = summary(&samples);
    // Per request: a 503 comes from a command timing out on the stopped server, so it
    // overlaps the pause and arrives within the timeout (plus a margin) of the later of
    // its start and the pause; a request started well inside the pause cannot succeed
    // (the server answers nothing), so it is a 503; nothing succeeds while the server is
    // stopped.
    let bound = TIMEOUT + STOP_MARGIN;
    let mut wrong = Vec::new();
    let mut inside = 0;
    for s in &samples {
        let (from, to) = (
            s.start.saturating_duration_since(paused_at),
            s.end.saturating_duration_since(paused_at),
        );
        let what = format!(
            "request {from:?}..{to:?} after SIGSTOP ({}, SIGCONT at {:?})",
            s.status,
            resumed_at - paused_at
        );
        if !s.ok() {
            if s.end <= paused_at || s.start >= resumed_at {
                wrong.push(format!("{what}: a 503 outside the pause"));
            } else if s.end > s.start.max(paused_at) + bound {
                wrong.push(format!("{what}: a 503 later than {bound:?}"));
            }
        } else if s.end > stopped + Duration::from_millis(50) && s.end < continued {
            wrong.push(format!("{what}: answered while the server was stopped"));
        }
        if s.start >= stopped && s.start + bound < continued {
            inside += 1;
            if s.ok() {
                wrong.push(format!("{what}: started in the pause, yet no 503"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(inside > 0, "no request started during the pause");
    let during = samples
        .iter()
        .filter(|s| s.end > paused_at && s.start < resumed_at)
        .count();

    // Nothing acknowledged is lost; timed-out writes may have landed after all.
    let n = ids.len();
    let extra = none_lost(&redis, &ids, &samples);
    println!(
        "SIGSTOP {PAUSE:?} (timeout {TIMEOUT:?}): {} requests, {ok} acknowledged, none lost, \
         {extra} timed out but applied anyway, {unavailable} answered 503 (of {during} in flight \
         during the pause, each within {:?} of its start or the pause), recovery {recovery:?} after SIGCONT, longest request {max:?}",
        samples.len(),
        bound,
    );
    assert_eq!(check_keyspace(&redis, false), n);
}

/// A pool that starts without waiting for Redis ([`connect_lazy`]): a first connection
/// that fails is retried with the reconnect policy.
async fn lazy_pool(url: &str) -> Pool {
    tower_redis_session::connect_lazy(url).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_starting_while_redis_is_down_answers_503_then_serves_without_restart() {
    start_while_down().await;
}

async fn start_while_down() {
    let mut redis = RedisServer::reserve(&[]);
    let (app, _) = app_on(lazy_pool(&redis.url()).await);

    let res = send(&app, "POST", "/set/a/1", None).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE, "{}", res.body);
    assert!(res.elapsed <= MAX_LATENCY, "{:?}", res.elapsed);
    assert!(res.new_id().is_none());
    assert_eq!(
        send(&app, "GET", "/none", None).await.status,
        StatusCode::OK,
        "requests without a session are served"
    );

    let app2 = app.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let probe = tokio::spawn(async move {
        let mut seen = Vec::new();
        while !stop2.load(Ordering::Relaxed) {
            let res = send(&app2, "POST", "/set/a/1", None).await;
            seen.push((Instant::now(), res.status, res.elapsed));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let redis = tokio::task::spawn_blocking(move || {
        redis.spawn();
        redis
    })
    .await
    .unwrap();
    let up_at = Instant::now();
    let deadline = up_at + Duration::from_secs(15);
    let recovery = loop {
        let res = send(&app, "POST", "/set/a/1", None).await;
        if res.status == StatusCode::OK {
            break up_at.elapsed();
        }
        assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            Instant::now() < deadline,
            "no recovery within 15 s: {}",
            res.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(true, Ordering::Relaxed);
    let seen = probe.await.unwrap();
    let down: Vec<_> = seen.iter().filter(|(t, _, _)| *t < up_at).collect();
    assert!(down
        .iter()
        .all(|(_, status, _)| *status == StatusCode::SERVICE_UNAVAILABLE));
    let longest = seen.iter().map(|(_, _, e)| *e).max().unwrap();
    assert!(longest <= MAX_LATENCY, "{longest:?}");
    let id = send(&app, "POST", "/set/b/2", None).await.new_id().unwrap();
    assert_eq!(send(&app, "GET", "/read/b", Some(&id)).await.body, "2");
    println!(
        "Redis down at start, up 5 s later: {} requests while down, all 503 (longest {longest:?}); \
         first 200 {recovery:?} after Redis was up, no app restart",
        down.len()
    );
    check_keyspace(&redis, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_churn_gives_bounded_errors_and_loses_nothing_acknowledged() {
    let redis = RedisServer::start_with(&[]);
    let (app, _) = app_on(pool(&redis.url()).await);
    let ids = start_sessions(&app, 100).await;

    let load = Load::start(&app, &ids, 4, Duration::from_millis(25));
    let mut killed = 0;
    let churn_started = Instant::now();
    while churn_started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // SKIPME yes (the default): the admin connection itself is spared.
        killed += redis
            .cmd(&["CLIENT", "KILL", "TYPE", "normal"])
            .int()
            .unwrap();
    }
    let churn_ended = Instant::now();
    let recovery = load
        .recovery_after(churn_ended, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let samples = load.finish().await;

    let (ok, unavailable, max) = summary(&samples);
    assert!(
        unavailable * 5 <= samples.len(),
        "{unavailable} of {} requests failed",
        samples.len()
    );
    let n = ids.len();
    let extra = none_lost(&redis, &ids, &samples);
    println!(
        "connection churn (CLIENT KILL TYPE normal every 500 ms for 10 s, {killed} connections \
         killed): {} requests, {ok} acknowledged, none lost, {extra} applied without an \
         acknowledgement, {unavailable} answered 503, first 200 {recovery:?} after the churn, \
         longest request {max:?}",
        samples.len()
    );
    assert_eq!(check_keyspace(&redis, false), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_app_instances_on_one_redis_keep_every_promise() {
    let redis = RedisServer::start_with(&[]);
    let gate = Arc::new(Gate::default());
    let layer_a = layer(pool(&redis.url()).await).build().unwrap();
    let layer_b = layer(pool(&redis.url()).await).build().unwrap();
    let a = routes(Arc::clone(&gate)).layer(layer_a);
    let b = routes(Arc::new(Gate::default())).layer(layer_b);
    let apps = [a.clone(), b.clone()];

    // A session made on one is the same session on the other.
    let id = send(&a, "POST", "/set/username/ferris", None)
        .await
        .new_id()
        .unwrap();
    assert_eq!(
        send(&b, "GET", "/read/username", Some(&id)).await.body,
        "ferris"
    );

    // 100 concurrent increments alternating between them add exactly 100.
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let app = apps[i % 2].clone();
            let id = id.clone();
            tokio::spawn(async move { send(&app, "POST", "/incr", Some(&id)).await.status })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(send(&a, "GET", "/read/n", Some(&id)).await.body, "100");

    // Concurrent writes to different fields through different instances both persist.
    let (x, y) = tokio::join!(
        send(&a, "POST", "/set/x/1", Some(&id)),
        send(&b, "POST", "/set/y/2", Some(&id))
    );
    assert_eq!((x.status, y.status), (StatusCode::OK, StatusCode::OK));
    let stored = redis.cmd(&["HMGET", &key(PREFIX, &id), "x", "y"]);
    assert_eq!(
        stored.items().iter().map(Reply::text).collect::<Vec<_>>(),
        vec![Some("1".into()), Some("2".into())]
    );

    // Logout on B while a write on A is in flight: no resurrection.
    let held = {
        let a = a.clone();
        let id = id.clone();
        tokio::spawn(async move { send(&a, "POST", "/gated/incr", Some(&id)).await })
    };
    gate.arrived.notified().await;
    assert_eq!(
        send(&b, "POST", "/logout", Some(&id)).await.status,
        StatusCode::OK
    );
    gate.release.notify_one();
    let res = held.await.unwrap();
    assert_eq!(
        res.status,
        StatusCode::CONFLICT,
        "the change was not applied"
    );
    assert!(
        res.headers.get("set-cookie").is_none(),
        "a refused change leaves the cookie alone"
    );
    assert_eq!(
        redis
            .cmd(&["HEXISTS", &key(PREFIX, &id), "session_ttl"])
            .int(),
        Some(0),
        "resurrected"
    );
    assert!(send(&a, "GET", "/whoami", Some(&id))
        .await
        .body
        .starts_with("loaded=false"));

    // Rotation on A: the old ID is dead on B at once, the new one works there.
    let id = send(&a, "POST", "/set/username/ferris", None)
        .await
        .new_id()
        .unwrap();
    let rotated = send(&a, "POST", "/rotate", Some(&id))
        .await
        .new_id()
        .unwrap();
    assert!(send(&b, "GET", "/whoami", Some(&id))
        .await
        .body
        .starts_with("loaded=false"));
    assert_eq!(
        send(&b, "GET", "/read/username", Some(&rotated)).await.body,
        "ferris"
    );
    println!("two app instances, one Redis: 100/100 alternating increments, field-level writes, no resurrection, rotation seen by both");
    check_keyspace(&redis, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxclients_reached_gives_a_clear_error_and_no_panic_then_recovers() {
    let redis = RedisServer::start_with(&["--maxclients", "1"]);
    // This connection takes the only slot.
    let mut hog = redis.conn();
    assert_eq!(hog.cmd(&["PING"]).unwrap(), Reply::Status("PONG".into()));

    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        tower_redis_session::connect(&redis.url()),
    )
    .await
    .expect("connect() gives up by itself")
    .expect_err("no connection slot is free");
    let connect_took = started.elapsed();
    assert!(
        err.to_string().contains("max number of clients"),
        "unclear error: {err}"
    );

    // An app that started anyway answers 503 within the timeouts, then recovers.
    let (app, _) = app_on(lazy_pool(&redis.url()).await);
    let res = send(&app, "POST", "/set/a/1", None).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE, "{}", res.body);
    assert!(res.elapsed <= MAX_LATENCY, "{:?}", res.elapsed);

    assert_eq!(
        hog.cmd(&["CONFIG", "SET", "maxclients", "100"]).unwrap(),
        Reply::Status("OK".into())
    );
    let raised = Instant::now();
    let recovery = loop {
        let res = send(&app, "POST", "/set/a/1", None).await;
        if res.status == StatusCode::OK {
            break raised.elapsed();
        }
        assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            raised.elapsed() < Duration::from_secs(15),
            "no recovery: {}",
            res.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "maxclients reached: connect() failed in {connect_took:?} with \"{err}\"; an app started \
         anyway answered 503 in {:?}; first 200 {recovery:?} after the limit was raised",
        res.elapsed
    );
}

// current_thread: the layer's log events are emitted on the test's thread, where the
// capturing subscriber is the default.
#[tokio::test(flavor = "current_thread")]
async fn out_of_memory_under_noeviction_gives_503_and_a_log_event_and_corrupts_nothing() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    let (app, _) = app_on(pool(&redis.url()).await);
    let ids = start_sessions(&app, 20).await;
    let used: u64 = redis.info_field("memory", "used_memory").parse().unwrap();
    let limit = (used + 1_500_000).to_string();
    redis.cmd(&["CONFIG", "SET", "maxmemory", &limit]);

    let logs = Logs::capture(tracing::Level::WARN);
    let _guard = logs.on_this_thread();
    let value = "v".repeat(8 * 1024);
    let mut created = 0;
    let refused = loop {
        let res = send(&app, "POST", &format!("/set/blob/{value}"), None).await;
        if res.status != StatusCode::OK {
            break res;
        }
        created += 1;
        assert!(created < 2000, "maxmemory never reached");
    };
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        refused.new_id().is_none(),
        "no cookie for an unsaved session"
    );
    assert!(refused.body.contains("session store unavailable"));
    let err = refused
        .body
        .clone()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    // A write to an existing session, and a read (whose refresh write Redis refuses).
    let write = send(&app, "POST", "/incr", Some(&ids[0])).await;
    let read = send(&app, "GET", "/read/username", Some(&ids[1])).await;
    let log = logs.text();
    assert!(
        log.contains("ERROR") && log.contains("OOM"),
        "no error event naming OOM: {log}"
    );
    println!(
        "maxmemory + noeviction: {created} sessions of 8 KiB fit; then a new session got {} ({err:?}), \
         a write to an existing one {}, a read {}; logged: {}",
        refused.status,
        write.status,
        read.status,
        log.lines().find(|l| l.contains("OOM")).unwrap_or_default()
    );
    assert_eq!(write.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        read.status,
        StatusCode::OK,
        "reads are served without their refresh"
    );
    assert_eq!(read.body, "ferris");

    // Nothing half-written, and everything works again once memory is there.
    let sessions = check_keyspace(&redis, false);
    assert_eq!(sessions, ids.len() + created);
    let counts = stored_counts(&redis, &ids[..1]);
    assert_eq!(counts, vec![0], "the refused increment left no trace");
    redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(
        send(&app, "POST", "/incr", Some(&ids[0])).await.status,
        StatusCode::OK
    );
}

/// With `persistent_cookie(true)`, a read while Redis refuses every write (out of memory,
/// `noeviction`) is served, still pushes the key's TTL (PEXPIRE allocates nothing) and
/// sends the cookie a `Max-Age` of that TTL: never `Max-Age=0`, which would log the user
/// out while the session lives on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_a_read_with_a_persistent_cookie_sends_a_positive_max_age_and_keeps_the_session(
) {
    const IDLE: u64 = 600;
    let redis = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    let app = crate::support::TestApp::with(&redis, |b| {
        b.persistent_cookie(true)
            .idle_ttl(Duration::from_secs(IDLE))
    })
    .await;
    let id = app.login().await;
    let key = app.key(&id);
    // Most of the idle TTL gone, as for a session last used minutes ago.
    redis.cmd(&["PEXPIRE", &key, "30000"]);
    let before = app.hash(&id).await;

    redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    let write = app.post("/set/note/x", Some(&id)).await;
    let read = app.get("/read/username", Some(&id)).await;
    let pttl = app.pttl(&id).await;
    let after = app.hash(&id).await;
    redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);

    assert_eq!(
        write.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "Redis refuses writes"
    );
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body, "ferris");
    let cookie = read
        .set_cookie()
        .expect("the persistent cookie is refreshed");
    assert!(
        cookie.starts_with(&format!("sid={id};")),
        "the same ID: {cookie}"
    );
    let max_age: u64 = cookie
        .split("Max-Age=")
        .nth(1)
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Max-Age: {cookie}"));
    assert!(
        max_age > IDLE - 10 && max_age <= IDLE,
        "Max-Age is the refreshed TTL: {cookie}"
    );
    assert!(
        pttl > (IDLE as i64 - 10) * 1000,
        "the TTL was pushed: {pttl} ms"
    );
    assert_eq!(after, before, "the session survives, whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_under_volatile_lru_evicts_whole_sessions_never_indexes() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "volatile-lru"]);
    let (app, layer) = app_on(pool(&redis.url()).await);
    // A user with sessions: their index key has no TTL, so it is never evicted.
    let mut alice = Vec::new();
    for _ in 0..3 {
        let first = send(&app, "POST", "/set/visited/1", None)
            .await
            .new_id()
            .unwrap();
        let res = send(&app, "POST", "/login/alice", Some(&first)).await;
        alice.push(res.new_id().unwrap());
    }
    let used: u64 = redis.info_field("memory", "used_memory").parse().unwrap();
    redis.cmd(&[
        "CONFIG",
        "SET",
        "maxmemory",
        &(used + 1_000_000).to_string(),
    ]);

    let value = "v".repeat(8 * 1024);
    let mut statuses: HashMap<StatusCode, usize> = HashMap::new();
    for _ in 0..400 {
        let res = send(&app, "POST", &format!("/set/blob/{value}"), None).await;
        *statuses.entry(res.status).or_default() += 1;
    }
    let evicted: u64 = redis.info_field("stats", "evicted_keys").parse().unwrap();
    assert!(evicted > 0, "maxmemory never reached");
    assert_eq!(statuses.get(&StatusCode::OK), Some(&400), "{statuses:?}");
    let index = redis.cmd(&["KEYS", "session:user:*"]);
    assert_eq!(index.items().len(), 1, "the user index survived eviction");
    // Whatever is left is whole; the index still lists alice's live sessions.
    let sessions = check_keyspace(&redis, true);
    let listed = layer.manager().list("alice").await.unwrap();
    let alive = alice
        .iter()
        .filter(|id| redis.cmd(&["EXISTS", &key(PREFIX, id)]).int() == Some(1))
        .count();
    assert_eq!(listed.len(), alive);
    println!(
        "maxmemory + volatile-lru: 400/400 new sessions of 8 KiB saved, {evicted} session keys \
         evicted, {sessions} whole sessions left, the user index kept ({alive} of alice's 3 sessions live and listed)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_acl_user_runs_every_feature_and_nothing_else() {
    let redis = RedisServer::start_with(&[]);
    let url = redis.create_documented_acl_user("test-password-1");
    redis.cmd(&["CONFIG", "RESETSTAT"]);
    let layer = layer(pool(&url).await).build().unwrap();
    layer.load_scripts().await.unwrap();
    let manager = layer.manager();
    let app = routes(Arc::new(Gate::default())).layer(layer);

    // Create, read, write, log in (tie to a user + rotate), rotate, log out; the
    // manager: list, terminate one, stats, terminate all (index and scan).
    hardening::run_every_feature(&app, &manager, &manager).await;
    // After a script cache flush (a restart or failover) the scripts are loaded again,
    // and after the connections are killed the clients log in again.
    hardening::survive_a_script_flush_and_killed_connections(&redis, &app).await;

    // Nothing was refused along the way.
    let denied = hardening::acl_log(&redis);
    assert!(denied.is_empty(), "the ACL refused something: {denied:#?}");
    let used = hardening::commands_used(&redis, &[]);
    println!(
        "documented ACL user: every feature ran, nothing refused; commands seen (the app's, \
         its scripts', and the admin's SCRIPT FLUSH/CLIENT KILL): {}",
        used.join(" ")
    );

    // And it can do nothing else.
    let user = hardening::documented_acl_line()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_owned();
    let forbidden = [
        vec!["GET", "other:key"],
        vec!["HGETALL", "other:session"],
        vec!["KEYS", "*"],
        vec!["FLUSHALL"],
        vec!["CONFIG", "GET", "*"],
        vec!["EVAL", "return 1", "0"],
        vec!["SCRIPT", "FLUSH"],
        vec!["CLIENT", "LIST"],
        vec!["MONITOR"],
        vec!["SUBSCRIBE", "x"],
        vec!["PING"],
    ];
    hardening::assert_refused(&redis, &user, "test-password-1", &forbidden);
    check_keyspace(&redis, true);
}
