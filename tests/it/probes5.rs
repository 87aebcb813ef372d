//! Probes, fifth round: the read cache where earlier rounds did not look (a manual
//! Cluster failover, a resharded slot, a `Pool`, encryption, lazy mode, nested prefixes,
//! tiny and overflowing limits, connections over time), the spawned rotation and the
//! late load, the timestamp grammar on both sides, and hostile caching headers. Each
//! probe runs against real Redis started by the test support code.
//!
//! A probe that shows a broken promise is `#[ignore]`d with what it shows; run it with
//! `--ignored`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::Request,
    http::{header, HeaderValue},
    routing::{get, post},
    Router,
};
use fred::prelude::*;
use http::StatusCode;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;
use tower_redis_session::{ReadCache, RedisSessionLayer, RedisSessionLayerBuilder, Session};

use crate::support::{
    cluster::{slot, ClusterOptions, RedisCluster},
    resp, RedisServer, TestApp,
};

const TOUCH: Duration = Duration::from_secs(30);
const STALENESS: Duration = Duration::from_millis(250);

fn cached(b: RedisSessionLayerBuilder) -> RedisSessionLayerBuilder {
    b.touch_interval(TOUCH)
        .read_cache(ReadCache::new().max_staleness(STALENESS))
}

fn hits_of(layer: &RedisSessionLayer) -> u64 {
    layer.cache_stats().expect("the cache is on").hits
}

/// Reads `/read/{field}` until one is served from memory.
async fn warm(app: &TestApp, sid: &str, field: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let before = hits_of(&app.layer);
        app.get(&format!("/read/{field}"), Some(sid)).await;
        if hits_of(&app.layer) > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no read served from memory: {:?}", app.layer.cache_stats());
}

/// Reads `/read/username` until it answers `expected`; fails if a read sent `bound` or
/// more after `since` still answers otherwise.
async fn seen_within(app: &TestApp, sid: &str, expected: &str, since: Instant, bound: Duration) {
    loop {
        let sent = Instant::now();
        let res = app.get("/read/username", Some(sid)).await;
        if res.body == expected {
            return;
        }
        assert!(
            sent.duration_since(since) < bound,
            "a read sent {:?} after the change still answered {:?} (status {}), not {expected:?}; {:?}",
            sent.duration_since(since),
            res.body,
            res.status,
            app.layer.cache_stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Connections with client tracking on (`t` in their flags) on `port`.
fn tracking_connections(port: u16) -> usize {
    resp::command(port, &["CLIENT", "LIST"])
        .ok()
        .and_then(|r| r.text())
        .unwrap_or_default()
        .lines()
        .filter(|line| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix("flags="))
                .is_some_and(|flags| flags.contains('t'))
        })
        .count()
}

fn connected_clients(port: u16) -> usize {
    resp::command(port, &["CLIENT", "LIST"])
        .ok()
        .and_then(|r| r.text())
        .unwrap_or_default()
        .lines()
        .count()
}

/// A router of the test's own behind `layer`: status, body, headers.
async fn call(
    router: &Router,
    method: &str,
    path: &str,
    sid: Option<&str>,
) -> (StatusCode, String, http::HeaderMap) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(sid) = sid {
        req = req.header(header::COOKIE, format!("sid={sid}"));
    }
    let res = router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        String::from_utf8_lossy(&body).into_owned(),
        parts.headers,
    )
}

fn new_id(headers: &http::HeaderMap) -> Option<String> {
    headers.get_all(header::SET_COOKIE).iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let value = v.strip_prefix("sid=")?.split(';').next()?;
        (!value.is_empty() && !v.contains("Max-Age=0")).then(|| value.to_owned())
    })
}

// ---------------------------------------------------------------------------------------
// Redis Cluster: a manual failover and a resharded slot

async fn own_cluster(options: ClusterOptions) -> Arc<RedisCluster> {
    Arc::new(
        tokio::task::spawn_blocking(move || RedisCluster::start(options))
            .await
            .unwrap(),
    )
}

/// Steps: a cluster of 3 primaries with a replica each; the app caches a session; a
/// manual `CLUSTER FAILOVER` on the replica of the session's primary (the old primary
/// stays up, as a replica, and the cache's connection to it stays open); once the
/// replica is primary, another program changes the session there. The app's next reads
/// show the change within `max_staleness`, and the cache serves again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_cluster_failover_never_hides_a_change_made_on_the_new_primary() {
    let cluster = own_cluster(ClusterOptions::default()).await;
    let app = TestApp::with(&*cluster, |b| {
        cached(b).command_timeout(Duration::from_millis(800))
    })
    .await;
    let sid = app.login_as("alice").await;
    warm(&app, &sid, "username").await;
    let key = app.key(&sid);
    let primary = cluster.primary_for_slot(slot(&key));
    let replica = cluster.replicas_of(primary)[0];
    let c = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || {
        assert!(c.wait_replicated(primary, Duration::from_secs(5)));
        resp::must(replica, &["CLUSTER", "FAILOVER"]);
        assert!(
            resp::wait_until(Duration::from_secs(20), || {
                c.role(replica).as_deref() == Some("master")
                    && c.role(primary).as_deref() == Some("slave")
            }),
            "no manual failover"
        );
    })
    .await
    .unwrap();
    // Reads right after the failover, before any change: served from memory or not,
    // they show alice.
    for _ in 0..5 {
        let res = app.get("/read/username", Some(&sid)).await;
        assert!(
            res.body == "alice" || res.status != StatusCode::OK,
            "{}",
            res.body
        );
    }
    resp::must(replica, &["HSET", &key, "username", "judy"]);
    seen_within(&app, &sid, "judy", Instant::now(), STALENESS).await;
    // Served from memory again, and coherent on the new primary.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let before = hits_of(&app.layer);
        let res = app.get("/read/username", Some(&sid)).await;
        if hits_of(&app.layer) > before {
            assert_eq!(res.body, "judy");
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", app.layer.cache_stats());
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    resp::must(replica, &["HSET", &key, "username", "kate"]);
    seen_within(&app, &sid, "kate", Instant::now(), STALENESS).await;
}

/// Steps: a cluster of 3 primaries; the app caches a session; its slot is moved to
/// another primary (`SETSLOT IMPORTING/MIGRATING`, `MIGRATE`, `SETSLOT NODE` on every
/// primary), keys and all, as `redis-cli --cluster reshard` does; another program then
/// changes the session on its new primary. The app's reads show the change within
/// `max_staleness`; the cache serves again and a second change is seen as fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_a_cached_sessions_slot_never_hides_a_change_on_its_new_primary() {
    let cluster = own_cluster(ClusterOptions {
        masters: 3,
        replicas: 0,
        node_timeout_ms: 5_000,
    })
    .await;
    let app = TestApp::with(&*cluster, |b| {
        cached(b).command_timeout(Duration::from_millis(800))
    })
    .await;
    let sid = app.login_as("alice").await;
    warm(&app, &sid, "username").await;
    let key = app.key(&sid);
    let slot = slot(&key);
    let source = cluster.primary_for_slot(slot);
    let target = *cluster.primaries().iter().find(|&&p| p != source).unwrap();
    let (source_id, target_id) = (cluster.id_of(source), cluster.id_of(target));
    let s = slot.to_string();
    resp::must(target, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &source_id]);
    resp::must(source, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &target_id]);
    resp::must(
        source,
        &[
            "MIGRATE",
            "127.0.0.1",
            &target.to_string(),
            &key,
            "0",
            "5000",
        ],
    );
    for port in cluster.primaries() {
        resp::must(port, &["CLUSTER", "SETSLOT", &s, "NODE", &target_id]);
    }
    resp::must(target, &["HSET", &key, "username", "lena"]);
    seen_within(&app, &sid, "lena", Instant::now(), STALENESS).await;
    warm(&app, &sid, "username").await;
    resp::must(target, &["HSET", &key, "username", "mona"]);
    seen_within(&app, &sid, "mona", Instant::now(), STALENESS).await;
    // Ended there by another program: never served again.
    resp::must(target, &["DEL", &key]);
    seen_within(&app, &sid, "", Instant::now(), STALENESS).await;
}

// ---------------------------------------------------------------------------------------
// A Pool, encryption, lazy mode

/// A `Pool` of 3 clients behind the layer: one tracking connection (not one per
/// client), reads served from memory, and a change by another program seen within
/// `max_staleness`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_clients_keeps_one_tracking_connection_and_sees_every_change() {
    let server = RedisServer::start();
    let pool = tower_redis_session::client_builder(&server.url())
        .unwrap()
        .build_pool(3)
        .unwrap();
    pool.init().await.unwrap();
    let layer = cached(crate::support::layer(pool.clone())).build().unwrap();
    let router = crate::support::routes(Arc::default()).layer(layer.clone());
    let (_, _, headers) = call(&router, "POST", "/set/username/alice", None).await;
    let sid = new_id(&headers).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = hits_of(&layer);
        call(&router, "GET", "/read/username", Some(&sid)).await;
        if hits_of(&layer) > before {
            break;
        }
        assert!(Instant::now() < deadline, "never served from memory");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(tracking_connections(server.port()), 1);
    for (i, name) in ["bob", "carol", "dave", "erin", "fay", "gus"]
        .iter()
        .enumerate()
    {
        let key = layer
            .manager()
            .redis_key(&tower_redis_session::SessionId::parse(&sid).unwrap());
        server.cmd(&["HSET", &key, "username", name]);
        let changed = Instant::now();
        loop {
            let sent = Instant::now();
            let (_, body, _) = call(&router, "GET", "/read/username", Some(&sid)).await;
            if body == *name {
                break;
            }
            assert!(
                sent.duration_since(changed) < STALENESS,
                "round {i}: {body:?} after {:?}",
                sent.duration_since(changed)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Encryption at rest with the cache: a read from memory shows the plaintext (never the
/// sealed text), and a change another instance with the same key ring writes is seen
/// within `max_staleness`.
#[cfg(feature = "encryption")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_encryption_reads_from_memory_show_plaintext_and_follow_changes() {
    use tower_redis_session::KeyRing;
    const K1: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE";
    let server = RedisServer::start();
    let ring = || KeyRing::parse(K1).unwrap();
    let app = TestApp::with(&server, |b| cached(b).encryption(ring())).await;
    let other = app
        .another_instance(&server, |b| b.encryption(ring()))
        .await;
    let sid = app.login_as("alice").await;
    warm(&app, &sid, "username").await;
    let stored = app.hash(&sid).await["username"].clone();
    assert_ne!(stored, "alice", "sealed in Redis");
    assert_eq!(app.get("/read/username", Some(&sid)).await.body, "alice");
    assert_eq!(
        other.post("/set/username/nina", Some(&sid)).await.status,
        StatusCode::OK
    );
    seen_within(&app, &sid, "nina", Instant::now(), STALENESS).await;
}

/// Lazy mode with the cache: the extractor's load is served from memory, a request that
/// never asks costs nothing, and a change by another program is seen within
/// `max_staleness`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_lazy_mode_the_cache_serves_the_extractor_and_follows_changes() {
    let server = RedisServer::start();
    let app = TestApp::with(&server, |b| cached(b).lazy_load(true)).await;
    let sid = app.login_as("alice").await;
    warm(&app, &sid, "username").await;
    assert_eq!(app.get("/none", Some(&sid)).await.status, StatusCode::OK);
    server.cmd(&["HSET", &app.key(&sid), "username", "olga"]);
    seen_within(&app, &sid, "olga", Instant::now(), STALENESS).await;
    server.cmd(&["DEL", &app.key(&sid)]);
    seen_within(&app, &sid, "", Instant::now(), STALENESS).await;
}

// ---------------------------------------------------------------------------------------
// Nested prefixes, tiny limits, a session larger than the cache

/// Two layers in one app on prefixes `s:` and `s:x:` (one a prefix of the other), both
/// with the cache: each has its own tracking connection, and a change by another program
/// to a session of either is seen through its layer within `max_staleness`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_key_prefixes_each_follow_their_own_sessions() {
    let server = RedisServer::start();
    let outer = TestApp::with_client_and_prefix(
        crate::support::connect_client(&server.url()).await,
        true,
        "s:".into(),
        cached,
    )
    .await;
    let inner = TestApp::with_client_and_prefix(
        crate::support::connect_client(&server.url()).await,
        true,
        "s:x:".into(),
        cached,
    )
    .await;
    let a = outer.login_as("alice").await;
    let b = inner.login_as("bob").await;
    warm(&outer, &a, "username").await;
    warm(&inner, &b, "username").await;
    assert_eq!(tracking_connections(server.port()), 2);
    server.cmd(&["HSET", &inner.key(&b), "username", "pia"]);
    seen_within(&inner, &b, "pia", Instant::now(), STALENESS).await;
    server.cmd(&["HSET", &outer.key(&a), "username", "quinn"]);
    seen_within(&outer, &a, "quinn", Instant::now(), STALENESS).await;
    // Neither layer reads the other's session with its own cookie.
    assert_eq!(outer.get("/read/username", Some(&b)).await.body, "");
    assert_eq!(inner.get("/read/username", Some(&a)).await.body, "");
}

/// `max_entries(1)`: two sessions read in turn, each changed by another program between
/// reads; every read shows its own session as changed, and the cache never holds more
/// than one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_room_for_one_session_every_read_shows_its_own_latest() {
    let server = RedisServer::start();
    let app = TestApp::with(&server, |b| {
        b.touch_interval(TOUCH)
            .read_cache(ReadCache::new().max_entries(1).max_staleness(STALENESS))
    })
    .await;
    let a = app.login_as("alice").await;
    let b = app.login_as("bob").await;
    warm(&app, &a, "username").await;
    for i in 0..40 {
        let (sid, name) = if i % 2 == 0 {
            (&a, "alice")
        } else {
            (&b, "bob")
        };
        let value = format!("{name}{i}");
        server.cmd(&["HSET", &app.key(sid), "username", &value]);
        seen_within(&app, sid, &value, Instant::now(), STALENESS).await;
        app.get("/read/username", Some(sid)).await;
        assert!(app.layer.cache_stats().unwrap().entries <= 1);
    }
    assert!(app.layer.cache_stats().unwrap().hits > 0);
}

/// A session larger than `max_bytes` is never kept: every read goes to Redis and a
/// change by another program is seen at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_larger_than_the_cache_is_always_read_from_redis() {
    let server = RedisServer::start();
    let app = TestApp::with(&server, |b| {
        b.touch_interval(TOUCH)
            .read_cache(ReadCache::new().max_bytes(2_000).max_staleness(STALENESS))
    })
    .await;
    let small = app.login_as("alice").await;
    warm(&app, &small, "username").await;
    let big = app.login_as("bob").await;
    let blob = "b".repeat(3_000);
    assert_eq!(
        app.post(&format!("/set/blob/{blob}"), Some(&big))
            .await
            .status,
        StatusCode::OK
    );
    for i in 0..20 {
        let before = hits_of(&app.layer);
        let value = format!("bob{i}");
        server.cmd(&["HSET", &app.key(&big), "username", &value]);
        assert_eq!(app.get("/read/username", Some(&big)).await.body, value);
        assert_eq!(
            hits_of(&app.layer),
            before,
            "a big session served from memory"
        );
        let stats = app.layer.cache_stats().unwrap();
        assert!(stats.bytes <= 2_000, "{stats:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Connections over time

/// Many app instances (10 layers, each on a client of its own, each warmed) come and go:
/// at most one tracking connection each while alive, none once dropped, and the count of
/// connections Redis sees returns to where it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_instances_that_come_and_go_leave_no_tracking_connection_behind() {
    let server = RedisServer::start();
    let baseline = connected_clients(server.port());
    for round in 0..2 {
        let mut apps = Vec::new();
        for _ in 0..10 {
            let app = TestApp::with_client_and_prefix(
                crate::support::connect_client(&server.url()).await,
                true,
                "shared:".into(),
                cached,
            )
            .await;
            let sid = app.login_as("alice").await;
            warm(&app, &sid, "username").await;
            apps.push(app);
        }
        assert_eq!(tracking_connections(server.port()), 10, "round {round}");
        for app in &apps {
            app.client.quit().await.unwrap();
        }
        drop(apps);
        let settled = resp::wait_until(Duration::from_secs(5), || {
            tracking_connections(server.port()) == 0 && connected_clients(server.port()) <= baseline
        });
        assert!(
            settled,
            "round {round}: {} tracking, {} connected (baseline {baseline})",
            tracking_connections(server.port()),
            connected_clients(server.port())
        );
    }
}

/// Redis stalled (SIGSTOP) for 8 s under a live layer with the cache: the tracking task
/// retries meanwhile; once Redis resumes, the connections it opened while Redis hung do
/// not pile up (one tracking connection, a bounded number of connections in all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_stall_leaves_no_pile_of_tracking_connections() {
    let server = RedisServer::start();
    let app = TestApp::with(&server, |b| {
        cached(b).command_timeout(Duration::from_millis(500))
    })
    .await;
    let sid = app.login_as("alice").await;
    warm(&app, &sid, "username").await;
    let before = connected_clients(server.port());
    server.pause();
    tokio::time::sleep(Duration::from_secs(8)).await;
    server.resume();
    warm(&app, &sid, "username").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (tracking, all) = (
        tracking_connections(server.port()),
        connected_clients(server.port()),
    );
    eprintln!("after the stall: {tracking} tracking, {all} connected (before: {before})");
    assert_eq!(tracking, 1);
    assert!(
        all <= before + 1,
        "{all} connections, {before} before the stall"
    );
}

// ---------------------------------------------------------------------------------------
// The spawned rotation, the late load

/// Steps: Redis stalled (SIGSTOP); a login (a rotation) whose client goes away after
/// 100 ms; Redis resumes 2 s later. The process does not panic, no session key is left
/// without a TTL, and the session the client still holds takes a save again within a
/// few command timeouts (the rotation's mark lapses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_whose_client_left_while_redis_hung_loses_nothing() {
    let server = RedisServer::start();
    let app =
        Arc::new(TestApp::with(&server, |b| b.command_timeout(Duration::from_millis(500))).await);
    let sid = app.login().await;
    server.pause();
    let a = Arc::clone(&app);
    let s = sid.clone();
    let gone = tokio::time::timeout(Duration::from_millis(100), async move {
        a.post("/login/alice", Some(&s)).await
    })
    .await;
    assert!(gone.is_err(), "answered while Redis hung");
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.resume();
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.check_keyspace().await;
    let started = Instant::now();
    loop {
        let res = app.post("/set/after/1", Some(&sid)).await;
        if res.status == StatusCode::OK {
            break;
        }
        // The rotation may have finished: the old ID is then a marker (409), and the
        // new key holds the session. Either way nothing is half-made.
        if res.status == StatusCode::CONFLICT && app.marker(&sid).await.is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the session refused saves for {:?}: {} {}",
            started.elapsed(),
            res.status,
            res.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.check_keyspace().await;
}

/// A lazy handler that never uses its session but hands a clone to a task that never
/// ends: the response still comes (the late load does not wait on the clone), with the
/// handler's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_clone_held_forever_never_holds_the_response() {
    let server = RedisServer::start();
    let client = crate::support::connect_client(&server.url()).await;
    let layer = crate::support::layer(client)
        .lazy_load(true)
        .build()
        .unwrap();
    let router = crate::support::routes(Arc::default())
        .route(
            "/hold",
            get(|req: Request| async move {
                let session = req.extensions().get::<Session>().cloned().unwrap();
                tokio::spawn(async move {
                    let _held = session;
                    std::future::pending::<()>().await;
                });
                "held"
            }),
        )
        .layer(layer);
    let (_, _, headers) = call(&router, "POST", "/set/username/alice", None).await;
    let sid = new_id(&headers).unwrap();
    let res = tokio::time::timeout(
        Duration::from_secs(3),
        call(&router, "GET", "/hold", Some(&sid)),
    )
    .await
    .expect("the response came");
    assert_eq!((res.0, res.1.as_str()), (StatusCode::OK, "held"));
}

/// Lazy mode with Redis down: a handler that takes no session is served, while one
/// that lets a clone of its session outlive it (a background task, a streaming body)
/// counts as using it: the layer loads it before the response goes out, so that what
/// reads it later never sees a live session as empty, and a failed load is answered
/// with the layer's error response (503), as in the default mode. (A documented choice:
/// the layer cannot tell whether the clone will be read.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_a_lazy_session_held_past_the_handler_is_answered_as_used() {
    let mut server = RedisServer::start();
    let client = crate::support::connect_client(&server.url()).await;
    let layer = crate::support::layer(client)
        .lazy_load(true)
        .command_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let router = crate::support::routes(Arc::default())
        .route(
            "/hold",
            get(|req: Request| async move {
                let session = req.extensions().get::<Session>().cloned().unwrap();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    drop(session);
                });
                "held"
            }),
        )
        .layer(layer);
    let (_, _, headers) = call(&router, "POST", "/set/username/alice", None).await;
    let sid = new_id(&headers).unwrap();
    server.kill();
    let (none, _, _) = call(&router, "GET", "/none", Some(&sid)).await;
    assert_eq!(none, StatusCode::OK, "a route that takes no clone");
    let (status, _, _) = call(&router, "GET", "/hold", Some(&sid)).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a held clone counts as use"
    );
}

// ---------------------------------------------------------------------------------------
// The timestamp grammar on both sides

/// Stamps at the edges of the grammar (fractions of up to 38 digits, which fill the 64
/// bytes; lower-case `t` and `z`; offsets up to ±23:59; the years 0000 and 1970;
/// leap seconds), planted as a tied session's `created_at`: the load script (Lua) keeps
/// the session exactly when the manager's listing (Rust) reads the stamp, to the same
/// millisecond.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_read_every_edge_of_the_timestamp_grammar_alike() {
    let server = RedisServer::start();
    let app = TestApp::with(&server, |b| b.absolute_lifetime(None)).await;
    let frac38 = format!("2025-01-02T03:04:05.{}+00:00", "9".repeat(38));
    let frac39 = format!("2025-01-02T03:04:05.{}+00:00", "9".repeat(39));
    let frac38z = format!("2025-01-02T03:04:05.{}z", "1".repeat(43));
    let stamps: Vec<String> = [
        "2025-01-02T03:04:05+00:00",
        "2025-01-02t03:04:05z",
        "2025-01-02T03:04:05.1Z",
        "2025-01-02T03:04:05.12345678901234567890123456789+23:59",
        "2025-01-02T03:04:05.5-23:59",
        "2025-01-02T03:04:60Z",
        "2025-02-31T03:04:05Z",
        "0000-01-01T00:00:00Z",
        "0000-03-01T00:00:00+23:59",
        "1970-01-01T00:00:00Z",
        "1970-01-01T00:00:00+00:01",
        "1970-01-01T00:00:00.999-00:00",
        "1969-12-31T23:59:59.999Z",
        "2025-01-02T03:04:05.Z",
        "2025-01-02T03:04:05+24:00",
        "2025-01-02T03:04:05+23:60",
        "2025-01-02T03:04:05+0000",
        "2025-01-02 03:04:05Z",
        "2025-01-02T03:04:05Z ",
        "2025-01-02T03:04:05\u{ff11}Z",
        "\u{ff12}025-01-02T03:04:05Z",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([frac38, frac39, frac38z])
    .collect();
    let mut disagreements = Vec::new();
    for stamp in &stamps {
        let sid = app.login_as("alice").await;
        let key = app.key(&sid);
        server.cmd(&["HSET", &key, "created_at", stamp.as_str()]);
        let lua = app.get("/read/username", Some(&sid)).await.body == "alice";
        let listed = app.manager.list("alice").await.unwrap();
        let handle = app
            .manager
            .handle(&tower_redis_session::SessionId::parse(&sid).unwrap());
        let rust = listed
            .iter()
            .find(|info| info.handle == handle)
            .and_then(|info| info.created_at)
            .map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis());
        if lua != rust.is_some() {
            disagreements.push(format!("{stamp:?}: Lua keeps={lua}, Rust reads {rust:?}"));
        }
        server.cmd(&["DEL", &key]);
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}

// ---------------------------------------------------------------------------------------
// Hostile caching headers

/// A handler that writes the session and answers with the `Cache-Control` (and targeted)
/// lines the request lists in `x-cc` / `x-cdn` / `x-surrogate` (each line a header).
fn header_router(layer: RedisSessionLayer) -> Router {
    Router::new()
        .route(
            "/write",
            post(|req: Request| async move {
                let session = req.extensions().get::<Session>().cloned().unwrap();
                session.insert("n", "1").unwrap();
                let mut res = axum::response::Response::new(Body::from("ok"));
                for (from, to) in [
                    ("x-cc", "cache-control"),
                    ("x-cdn", "cdn-cache-control"),
                    ("x-surrogate", "surrogate-control"),
                ] {
                    for value in req.headers().get_all(from) {
                        res.headers_mut()
                            .append(http::HeaderName::from_static(to), value.clone());
                    }
                }
                res
            }),
        )
        .layer(layer)
}

/// Hostile caching headers on a response that sets the cookie (very long, full of
/// quotes, non-ASCII, duplicated, targeted fields): the process never panics, and every
/// response that carries the cookie says `no-store` in `Cache-Control` and in every
/// targeted field (or keeps shared caches out with a bare `private` the app set and no
/// targeted field).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_caching_headers_never_let_the_cookie_reach_a_shared_cache() {
    let server = RedisServer::start();
    let client = crate::support::connect_client(&server.url()).await;
    let layer = crate::support::layer(client).build().unwrap();
    let router = header_router(layer);
    let long = format!("public, max-age=600{}", ", x=1".repeat(20_000));
    let quotes = format!("public, x=\"{}\"", "\\\"".repeat(20_000));
    let unbalanced = format!("private=\"{}", "\"\"".repeat(5_000));
    let cases: Vec<Vec<(&str, Vec<u8>)>> = vec![
        vec![("x-cc", long.clone().into_bytes())],
        vec![("x-cc", quotes.clone().into_bytes())],
        vec![("x-cc", unbalanced.clone().into_bytes())],
        vec![("x-cc", b"public, s-maxage=60, x=\"\xff\xfe\"".to_vec())],
        vec![("x-cc", b"pub\xc3\xa9lic, private".to_vec())],
        vec![("x-cc", b"private\xc2\xa0".to_vec())],
        vec![
            ("x-cc", b"no-store".to_vec()),
            ("x-cdn", b"public".to_vec()),
        ],
        vec![
            ("x-cc", b"no-store".to_vec()),
            ("x-surrogate", b"max-age=60".to_vec()),
        ],
        vec![
            ("x-cc", b"private".to_vec()),
            ("x-cdn", b"private, public".to_vec()),
        ],
        vec![
            ("x-cc", b"public".to_vec()),
            ("x-cc", b"no-store, must-understand".to_vec()),
        ],
        vec![("x-cc", b"\"private\"".to_vec())],
        vec![("x-cc", b"private=".to_vec())],
        vec![("x-cc", b"private=\"\"".to_vec())],
        vec![("x-cc", b"no-store;public".to_vec())],
        vec![("x-cc", b"no-store=\"\", public".to_vec())],
        vec![("x-cc", b",,,,   ,public,,".to_vec())],
        vec![("x-cc", b"".to_vec()), ("x-cc", b"s-maxage=1".to_vec())],
        vec![("x-cc", b"\tprivate\t".to_vec())],
        vec![("x-cc", b"PRIVATE, PUBLIC".to_vec())],
    ];
    for (i, case) in cases.iter().enumerate() {
        let mut req = Request::builder().method("POST").uri("/write");
        for (name, value) in case {
            req = req.header(*name, HeaderValue::from_bytes(value).unwrap());
        }
        let res = tokio::time::timeout(
            Duration::from_secs(5),
            router.clone().oneshot(req.body(Body::empty()).unwrap()),
        )
        .await
        .unwrap_or_else(|_| panic!("case {i}: no answer in 5 s"))
        .unwrap();
        let headers = res.headers();
        assert!(
            headers.get(header::SET_COOKIE).is_some(),
            "case {i}: a write sets the cookie"
        );
        let lines = |name: &str| -> Vec<String> {
            headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect()
        };
        let cc = lines("cache-control");
        let targeted: Vec<Vec<String>> = ["cdn-cache-control", "surrogate-control"]
            .iter()
            .map(|n| lines(n))
            .filter(|l| !l.is_empty())
            .collect();
        // A field keeps shared caches out if it is exactly `no-store` (as the layer
        // writes it) or has a bare `private` among its directives.
        let keeps_out = |field: &[String]| {
            field == ["no-store"]
                || field.iter().any(|l| {
                    l.split(',')
                        .any(|d| d.trim().eq_ignore_ascii_case("private"))
                })
        };
        let forbidden = keeps_out(&cc) && targeted.iter().all(|l| keeps_out(l));
        let private = forbidden;
        assert!(
            forbidden || private,
            "case {i}: a response with the cookie says Cache-Control {:?}, targeted {:?}",
            cc.iter()
                .map(|l| l.chars().take(60).collect::<String>())
                .collect::<Vec<_>>(),
            targeted
        );
    }
}
