//! The opt-in read cache (`read_cache`): a load within the touch interval is served
//! again from memory, with no round trip, until anything changes the session. Each test
//! checks one of its promises from outside: responses and cookies, keys and TTLs in
//! Redis, `cache_stats`, and the commands Redis receives.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use fred::interfaces::HashesInterface as _;
use http::StatusCode;
use tower_redis_session::{
    ConfigError, ReadCache, RedisSessionLayer, RedisSessionLayerBuilder, SessionId,
};

use crate::support::{
    connect_client, hardening, reset_stats,
    resp::{self, Reply},
    round_trips_but,
    sentinel::SentinelGroup,
    RedisServer, TestApp,
};

/// The commands the cache's own connection sends (its setup and its barriers): left out
/// of round-trip counts, which are about what requests cost.
const CACHE_OWN: &[&str] = &["ping", "client", "subscribe", "quit"];

const STALENESS: Duration = Duration::from_millis(250);

fn cached(b: RedisSessionLayerBuilder) -> RedisSessionLayerBuilder {
    b.touch_interval(Duration::from_secs(30))
        .read_cache(ReadCache::new().max_staleness(STALENESS))
}

/// Reads `/read/username` on `app` until it answers `expected`; fails if a read sent
/// `bound` or more after `since` still answers otherwise. Returns how long it took.
async fn seen_within(
    app: &TestApp,
    sid: &str,
    expected: &str,
    since: Instant,
    bound: Duration,
) -> Duration {
    loop {
        let sent = Instant::now();
        let res = app.get("/read/username", Some(sid)).await;
        if res.body == expected {
            return sent.duration_since(since);
        }
        assert!(
            sent.duration_since(since) < bound,
            "a read sent {:?} after the change still answered {:?} (not {expected:?}); {:?}",
            sent.duration_since(since),
            res.body,
            app.layer.cache_stats()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// An app on its own server with the cache on, a session logged in as `alice` (username
/// `alice`), and reads of it served from memory.
async fn warmed(server: &RedisServer) -> (TestApp, String) {
    let app = TestApp::with(server, cached).await;
    let sid = app.login_as("alice").await;
    app.warm(&sid, "username").await;
    (app, sid)
}

fn program(server: &RedisServer, args: &[&str]) -> Reply {
    server.cmd(args)
}

/// The ID of the connection with client tracking on (`t` in its flags).
fn tracking_connection(port: u16) -> Option<String> {
    let list = resp::must(port, &["CLIENT", "LIST"]).text()?;
    list.lines().find_map(|line| {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name).map(str::to_owned))
        };
        field("flags=")
            .filter(|flags| flags.contains('t'))
            .and_then(|_| field("id="))
    })
}

// ---------------------------------------------------------------------------------------
// Hits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_within_the_touch_interval_is_served_from_memory_with_no_round_trip_and_no_cookie() {
    let server = RedisServer::start();
    // A generous staleness: a barrier delayed on a busy machine must not turn a hit into
    // a miss here.
    let app = TestApp::with(&server, |b| {
        b.touch_interval(Duration::from_secs(30))
            .read_cache(ReadCache::new().max_staleness(Duration::from_secs(3)))
    })
    .await;
    let sid = app.login().await;
    app.warm(&sid, "username").await;
    let before = app.layer.cache_stats().unwrap();
    let pttl = app.pttl(&sid).await;
    reset_stats(&app.client).await;
    for _ in 0..20 {
        let res = app.get("/read/username", Some(&sid)).await;
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(res.body, "ferris");
        assert_eq!(res.set_cookie(), None, "a read from memory sets no cookie");
    }
    let trips = round_trips_but(&app.client, CACHE_OWN).await;
    assert_eq!(trips, 0, "reads served from memory send nothing to Redis");
    let after = app.layer.cache_stats().unwrap();
    assert_eq!(after.hits - before.hits, 20, "{after:?}");
    assert_eq!(after.misses, before.misses, "{after:?}");
    assert_eq!(after.entries, 1);
    assert!(after.bytes > 0);
    // Nothing was written: the TTL only ran down.
    assert!(app.pttl(&sid).await <= pttl);
    app.check_keyspace().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_is_off_unless_asked_for() {
    let server = RedisServer::start();
    let app = TestApp::with(&server, |b| b.touch_interval(Duration::from_secs(30))).await;
    assert_eq!(app.layer.cache_stats(), None);
}

// ---------------------------------------------------------------------------------------
// This app's own writes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_apps_own_save_is_read_back_at_once_on_the_same_instance() {
    let server = RedisServer::start();
    let (app, sid) = warmed(&server).await;
    for i in 0..30 {
        let value = format!("v{i}");
        let res = app
            .post(&format!("/set/username/{value}"), Some(&sid))
            .await;
        assert_eq!(res.status, StatusCode::OK);
        // No waiting: the save dropped the entry before it was answered.
        assert_eq!(app.get("/read/username", Some(&sid)).await.body, value);
        assert_eq!(
            app.post("/incr/n", Some(&sid)).await.body,
            (i + 1).to_string()
        );
        assert_eq!(
            app.get("/read/n", Some(&sid)).await.body,
            (i + 1).to_string()
        );
        // And a read from memory, when one comes, is of the new value too.
        assert_eq!(app.get("/read/username", Some(&sid)).await.body, value);
    }
    let stats = app.layer.cache_stats().unwrap();
    assert!(stats.hits > 30, "the cache served in between: {stats:?}");
    // The same after a logout on this instance: no read finds the session.
    assert!(app.post("/logout", Some(&sid)).await.clears_cookie());
    assert_eq!(app.get("/read/username", Some(&sid)).await.body, "");
    app.check_keyspace_with_indexes().await;
}

// ---------------------------------------------------------------------------------------
// Changes made elsewhere

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_on_another_instance_is_seen_within_max_staleness() {
    let server = RedisServer::start();
    let (app, sid) = warmed(&server).await;
    let other = app.another_instance(&server, cached).await;
    for i in 0..10 {
        app.warm(&sid, "username").await;
        let value = format!("bob{i}");
        let res = other
            .post(&format!("/set/username/{value}"), Some(&sid))
            .await;
        assert_eq!(res.status, StatusCode::OK);
        let took = seen_within(&app, &sid, &value, Instant::now(), STALENESS).await;
        eprintln!("save on another instance seen after {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_another_instance_is_seen_within_max_staleness() {
    let server = RedisServer::start();
    let (app, sid) = warmed(&server).await;
    let other = app.another_instance(&server, cached).await;
    assert!(other.post("/logout", Some(&sid)).await.clears_cookie());
    seen_within(&app, &sid, "", Instant::now(), STALENESS).await;
    assert_eq!(app.marker(&sid).await.as_deref(), Some("destroyed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_on_another_instance_is_seen_within_max_staleness() {
    let server = RedisServer::start();
    let (app, sid) = warmed(&server).await;
    let other = app.another_instance(&server, cached).await;
    let handle = other.manager.handle(&SessionId::parse(&sid).unwrap());
    assert!(other.manager.terminate("alice", &handle).await.unwrap());
    seen_within(&app, &sid, "", Instant::now(), STALENESS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_all_on_another_instance_is_seen_within_max_staleness() {
    let server = RedisServer::start();
    let app = TestApp::with(&server, cached).await;
    let sids = [app.login_as("alice").await, app.login_as("alice").await];
    for sid in &sids {
        app.warm(sid, "username").await;
    }
    let other = app.another_instance(&server, cached).await;
    assert_eq!(other.manager.terminate_all("alice", None).await.unwrap(), 2);
    let since = Instant::now();
    for sid in &sids {
        seen_within(&app, sid, "", since, STALENESS).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_del_by_another_program_is_seen_within_max_staleness() {
    let server = RedisServer::start();
    let (app, sid) = warmed(&server).await;
    assert_eq!(program(&server, &["DEL", &app.key(&sid)]), Reply::Int(1));
    seen_within(&app, &sid, "", Instant::now(), STALENESS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hset_by_another_program_is_seen_within_max_staleness() {
    let server = RedisServer::start();
    let (app, sid) = warmed(&server).await;
    for i in 0..10 {
        app.warm(&sid, "username").await;
        let value = format!("carol{i}");
        program(&server, &["HSET", &app.key(&sid), "username", &value]);
        seen_within(&app, &sid, &value, Instant::now(), STALENESS).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushall_is_seen_within_max_staleness() {
    let server = RedisServer::start();
    let (app, sid) = warmed(&server).await;
    assert_eq!(program(&server, &["FLUSHALL"]), Reply::Status("OK".into()));
    seen_within(&app, &sid, "", Instant::now(), STALENESS).await;
    // And the cache serves again afterwards.
    let sid = app.login().await;
    app.warm(&sid, "username").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_in_redis_is_seen_within_max_staleness() {
    let server = RedisServer::start();
    let (app, sid) = warmed(&server).await;
    // Another program shortens the TTL (itself a change), then the key expires.
    program(&server, &["PEXPIRE", &app.key(&sid), "300"]);
    let since = Instant::now() + Duration::from_millis(300);
    // Until then it may be served (from memory or not); from then on it must not be.
    tokio::time::sleep(Duration::from_millis(300)).await;
    seen_within(&app, &sid, "", since, STALENESS).await;
}

// ---------------------------------------------------------------------------------------
// The tracking connection

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_tracking_connection_is_killed_a_change_is_seen_within_max_staleness_and_the_cache_comes_back(
) {
    let server = RedisServer::start();
    let (app, sid) = warmed(&server).await;
    for round in 0..3 {
        app.warm(&sid, "username").await;
        let id = tracking_connection(server.port()).expect("a connection with tracking on");
        assert_eq!(
            program(&server, &["CLIENT", "KILL", "ID", &id]),
            Reply::Int(1)
        );
        // Changed while nobody listens for this app.
        let value = format!("dave{round}");
        program(&server, &["HSET", &app.key(&sid), "username", &value]);
        let took = seen_within(&app, &sid, &value, Instant::now(), STALENESS).await;
        eprintln!("round {round}: change made with tracking down seen after {took:?}");
        // The cache comes back on a new connection, and serves again.
        app.warm(&sid, "username").await;
        let new = tracking_connection(server.port()).expect("tracking back on");
        assert_ne!(new, id);
    }
}

/// A drop the cache's connection is told of (the server closed it) empties the cache at
/// once, not only when `max_staleness` runs out: a change made just after the drop is
/// read at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_tracking_connection_flushes_the_cache_before_it_serves_again() {
    let server = RedisServer::start();
    let app = TestApp::with(&server, |b| {
        b.touch_interval(Duration::from_secs(30))
            .read_cache(ReadCache::new().max_staleness(Duration::from_secs(3)))
    })
    .await;
    let sid = app.login_as("alice").await;
    app.warm(&sid, "username").await;
    let id = tracking_connection(server.port()).expect("a connection with tracking on");
    program(&server, &["CLIENT", "KILL", "ID", &id]);
    let killed = Instant::now();
    program(&server, &["HSET", &app.key(&sid), "username", "heidi"]);
    // Within 100 ms (far below the 3 s of staleness allowed), the change is read.
    let took = seen_within(&app, &sid, "heidi", killed, Duration::from_millis(100)).await;
    eprintln!("change made after the drop seen after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_stops_answering_nothing_is_served_from_memory_after_max_staleness() {
    let server = RedisServer::start();
    let (app, sid) = warmed(&server).await;
    // Redis hangs (SIGSTOP): no barrier is answered. Reads from memory stop within
    // max_staleness; afterwards a read goes to Redis, which times out.
    let app = TestApp::with_client_and_prefix(app.client.clone(), true, app.prefix.clone(), |b| {
        cached(b).command_timeout(Duration::from_millis(300))
    })
    .await;
    app.warm(&sid, "username").await;
    server.pause();
    let paused = Instant::now();
    let mut last_hit = None;
    loop {
        let sent = Instant::now();
        let hits = app.cache_hits();
        let res = app.get("/read/username", Some(&sid)).await;
        if app.cache_hits() > hits {
            assert_eq!(res.body, "alice");
            last_hit = Some(sent.duration_since(paused));
        } else {
            break;
        }
        assert!(
            sent.duration_since(paused) < STALENESS,
            "served from memory {:?} after Redis stopped answering",
            sent.duration_since(paused)
        );
    }
    server.resume();
    eprintln!("last read from memory {last_hit:?} after Redis hung");
    app.warm(&sid, "username").await;
}

// ---------------------------------------------------------------------------------------
// Writes stay guarded

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_on_a_session_deleted_elsewhere_while_cached_is_refused_and_nothing_is_resurrected()
{
    let server = RedisServer::start();
    let (app, sid) = warmed(&server).await;
    let app = Arc::new(app);
    for round in 0..10 {
        let sid = if round == 0 {
            sid.clone()
        } else {
            let sid = app.login_as("alice").await;
            app.warm(&sid, "username").await;
            sid
        };
        let key = app.key(&sid);
        let hits = app.cache_hits();
        // Loaded from memory, then held before its change.
        let held = app.hold("POST", "/gated/incr/n", &sid).await;
        assert!(
            app.cache_hits() > hits,
            "the held request was served from memory"
        );
        if round % 2 == 0 {
            assert_eq!(program(&server, &["DEL", &key]), Reply::Int(1));
        } else {
            app.another_instance(&server, cached)
                .await
                .post("/logout", Some(&sid))
                .await;
        }
        let res = app.release(held).await;
        assert_eq!(res.status, StatusCode::CONFLICT, "{}", res.body);
        assert_eq!(
            res.set_cookie(),
            None,
            "a refused change leaves the cookie alone"
        );
        assert!(!app.is_live(&sid).await, "the session was brought back");
        let hash = app.hash(&sid).await;
        assert!(
            !hash.contains_key("n") && !hash.contains_key("username"),
            "{hash:?}"
        );
    }
    // Without holding: a save sent at once after the delete either finds no session
    // (and starts a new one) or is refused; the old key never comes back.
    for _ in 0..20 {
        let sid = app.login_as("alice").await;
        app.warm(&sid, "username").await;
        program(&server, &["DEL", &app.key(&sid)]);
        let res = app.post("/incr/n", Some(&sid)).await;
        match res.status {
            StatusCode::CONFLICT => assert_eq!(res.set_cookie(), None),
            StatusCode::OK => assert_ne!(res.new_id().as_deref(), Some(sid.as_str())),
            other => panic!("{other}: {}", res.body),
        }
        assert!(!app.is_live(&sid).await, "the session was brought back");
    }
    app.check_keyspace_with_indexes().await;
}

// ---------------------------------------------------------------------------------------
// Expiry by the cache's own clock

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_absolute_lifetime_is_honoured_from_memory() {
    let server = RedisServer::start();
    let lifetime = Duration::from_secs(2);
    let app = TestApp::with(&server, |b| {
        b.touch_interval(Duration::from_secs(1))
            .absolute_lifetime(lifetime)
            .read_cache(ReadCache::new().max_staleness(Duration::from_secs(5)))
    })
    .await;
    let sid = app.login().await;
    // The session was created (on Redis's clock) before the login's response came back,
    // so its deadline is no later than this.
    let deadline = Instant::now() + lifetime;
    // Reads in a tight loop until well past the deadline: none sent after it finds the
    // session.
    let mut served_from_memory = 0;
    let mut last_served = None;
    while Instant::now() < deadline + Duration::from_millis(500) {
        let hits = app.cache_hits();
        let sent = Instant::now();
        let res = app.get("/read/username", Some(&sid)).await;
        if res.body == "ferris" {
            assert!(
                sent < deadline,
                "served {:?} past the absolute deadline",
                sent - deadline
            );
            last_served = Some(deadline.saturating_duration_since(sent));
            served_from_memory += app.cache_hits() - hits;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("{served_from_memory} reads from memory; the last read served {last_served:?} before the deadline");
    assert!(
        served_from_memory > 10,
        "the cache served before the deadline"
    );
    assert_eq!(app.hash(&sid).await.len(), 0, "the key is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_expiry_is_honoured_from_memory() {
    let server = RedisServer::start();
    let app = TestApp::with(&server, |b| {
        b.touch_interval(Duration::from_secs(1))
            .idle_ttl(Duration::from_secs(2))
            .read_cache(ReadCache::new().max_staleness(Duration::from_secs(5)))
    })
    .await;
    let sid = app.login().await;
    app.warm(&sid, "username").await;
    // Reads from memory renew nothing, but one a touch interval reaches Redis and
    // renews the idle TTL: a session read all along stays.
    let until = Instant::now() + Duration::from_secs(4);
    let mut hits = 0;
    while Instant::now() < until {
        let before = app.cache_hits();
        assert_eq!(app.get("/read/username", Some(&sid)).await.body, "ferris");
        hits += app.cache_hits() - before;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(hits > 20, "{hits} reads from memory");
    // Reads stopped: a read after the TTL ran out finds no session, key gone or not.
    let sid = app.login().await;
    app.warm(&sid, "username").await;
    // PTTL is whole ms, rounded down: a few ms more is past the TTL for certain.
    let pttl = u64::try_from(app.pttl(&sid).await).unwrap();
    tokio::time::sleep(Duration::from_millis(pttl + 5)).await;
    let res = app.get("/read/username", Some(&sid)).await;
    assert_eq!(res.body, "", "served after its idle TTL ran out");
}

// ---------------------------------------------------------------------------------------
// Settings and bounds

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_cache_needs_a_touch_interval() {
    let server = RedisServer::start();
    let client = connect_client(&server.url()).await;
    let err = RedisSessionLayer::builder(client)
        .read_cache(ReadCache::new())
        .build()
        .unwrap_err();
    assert_eq!(err, ConfigError::ReadCacheWithoutTouchInterval);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_never_holds_more_entries_or_bytes_than_its_limits() {
    let server = RedisServer::start();
    let app = TestApp::with(&server, |b| {
        b.touch_interval(Duration::from_secs(30))
            .read_cache(ReadCache::new().max_entries(3))
    })
    .await;
    let sids: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..8 {
            v.push(app.login().await);
        }
        v
    };
    app.warm(&sids[0], "username").await;
    for _ in 0..3 {
        for sid in &sids {
            assert_eq!(app.get("/read/username", Some(sid)).await.body, "ferris");
            let stats = app.layer.cache_stats().unwrap();
            assert!(stats.entries <= 3, "{stats:?}");
            assert!(stats.entries > 0, "{stats:?}");
            assert!(stats.bytes > 0, "{stats:?}");
        }
    }
    // The three newest are held, and served.
    let hits = app.cache_hits();
    for sid in &sids[5..] {
        app.get("/read/username", Some(sid)).await;
    }
    assert_eq!(app.cache_hits(), hits + 3);

    // A byte limit: room for about two sessions of this size.
    let app = TestApp::with(&server, |b| {
        b.touch_interval(Duration::from_secs(30))
            .read_cache(ReadCache::new().max_bytes(1200))
    })
    .await;
    let big = "x".repeat(300);
    let mut sids = Vec::new();
    for _ in 0..6 {
        let res = app.post(&format!("/set/username/{big}"), None).await;
        sids.push(res.new_id().unwrap());
    }
    app.warm(&sids[0], "username").await;
    for _ in 0..3 {
        for sid in &sids {
            assert_eq!(app.get("/read/username", Some(sid)).await.body, big);
            let stats = app.layer.cache_stats().unwrap();
            assert!(stats.bytes <= 1200, "{stats:?}");
            assert!(stats.entries >= 1 && stats.entries < 6, "{stats:?}");
        }
    }
    // A session larger than the whole cache is never held, and still read.
    let huge = "y".repeat(2000);
    let sid = app
        .post(&format!("/set/username/{huge}"), None)
        .await
        .new_id()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(app.get("/read/username", Some(&sid)).await.body, huge);
        assert!(app.layer.cache_stats().unwrap().bytes <= 1200);
    }
}

// ---------------------------------------------------------------------------------------
// Sentinel

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_sentinel_reads_are_served_from_memory_and_a_failover_flushes_the_cache() {
    let group = Arc::new(
        tokio::task::spawn_blocking(SentinelGroup::start)
            .await
            .unwrap(),
    );
    let app = TestApp::with(&*group, |b| {
        cached(b).command_timeout(Duration::from_secs(1))
    })
    .await;
    let sid = app.login_as("alice").await;
    app.warm(&sid, "username").await;
    let [primary, replica] = group.servers()[..] else {
        unreachable!()
    };
    // The replica has the session before the primary goes.
    assert_eq!(resp::must(primary, &["WAIT", "1", "5000"]), Reply::Int(1));
    group.kill(primary);
    let g = Arc::clone(&group);
    let promoted = tokio::task::spawn_blocking(move || {
        resp::wait_until(Duration::from_secs(30), || {
            g.primary() == Some(replica)
                && resp::info_field(replica, "replication", "role").as_deref() == Some("master")
        })
    })
    .await
    .unwrap();
    assert!(
        promoted,
        "no promotion; the sentinels said:\n{}",
        group.log()
    );
    // Changed on the new primary by another program: the first read that succeeds sees
    // it (the cache was flushed when its connection to the old primary failed).
    let key = app.key(&sid);
    resp::must(replica, &["HSET", &key, "username", "erin"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let res = app.get("/read/username", Some(&sid)).await;
        if res.status == StatusCode::OK {
            assert_eq!(res.body, "erin", "the first read served after the failover");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no read served after the failover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the cache serves again, kept coherent on the new primary.
    app.warm(&sid, "username").await;
    resp::must(replica, &["HSET", &key, "username", "frank"]);
    seen_within(&app, &sid, "frank", Instant::now(), STALENESS).await;
}

// ---------------------------------------------------------------------------------------
// ACL

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_cache_works_as_the_documented_acl_user() {
    let server = RedisServer::start();
    let url = server.create_documented_acl_user("pw-cache");
    let additions = hardening::documented_read_cache_acl_lines_of("sessions");
    assert_eq!(additions.len(), 1, "{additions:?}");
    for line in &additions {
        let args: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(server.cmd(&args), Reply::Status("OK".into()), "{line}");
    }
    let client = connect_client(&url).await;
    let app = TestApp::with_client_and_prefix(client, true, "session:".to_owned(), cached).await;
    let sid = app.login_as("alice").await;
    app.warm(&sid, "username").await;
    program(&server, &["HSET", &app.key(&sid), "username", "grace"]);
    seen_within(&app, &sid, "grace", Instant::now(), STALENESS).await;
    // The tracking connection comes back after a kill, under the same user.
    let id = tracking_connection(server.port()).expect("tracking on");
    program(&server, &["CLIENT", "KILL", "ID", &id]);
    app.warm(&sid, "username").await;
    let refusals = hardening::acl_log(&server);
    assert!(refusals.is_empty(), "ACL LOG: {refusals:#?}");
}

// ---------------------------------------------------------------------------------------
// Redis Cluster

/// On a Cluster, sessions on every shard are served from memory, and a change another
/// program makes to any of them (on whichever primary holds it) is seen within
/// `max_staleness`: the cache tracks every primary, not one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_every_shard_is_tracked() {
    let cluster = crate::support::Topology::Cluster.start().await;
    let app = TestApp::with(&cluster, cached).await;
    let other = cluster.client().await;
    let mut sids = Vec::new();
    let mut primaries = std::collections::BTreeSet::new();
    let shared = crate::support::cluster::RedisCluster::shared();
    while primaries.len() < 3 && sids.len() < 40 {
        let sid = app.login_as("alice").await;
        primaries.insert(shared.primary_for_slot(crate::support::cluster::slot(&app.key(&sid))));
        sids.push(sid);
    }
    assert_eq!(primaries.len(), 3, "sessions on every primary");
    for (i, sid) in sids.iter().enumerate() {
        app.warm(sid, "username").await;
        let value = format!("bob{i}");
        let _: () = other
            .hset(app.key(sid), ("username", value.as_str()))
            .await
            .unwrap();
        let took = seen_within(&app, sid, &value, Instant::now(), STALENESS).await;
        assert!(took < STALENESS);
    }
}

/// A Cluster primary killed and its replica promoted: the tracking connections are set
/// up again on the new primaries, nothing stale is served meanwhile, and a change on the
/// promoted primary is seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_failover_sets_the_tracking_up_again_on_the_new_primary() {
    use crate::support::cluster::{slot, ClusterOptions, RedisCluster};
    let cluster = Arc::new(
        tokio::task::spawn_blocking(|| RedisCluster::start(ClusterOptions::default()))
            .await
            .unwrap(),
    );
    let app = TestApp::with(&*cluster, |b| {
        cached(b).command_timeout(Duration::from_millis(500))
    })
    .await;
    let sid = app.login_as("alice").await;
    app.warm(&sid, "username").await;
    let primary = cluster.primary_for_slot(slot(&app.key(&sid)));
    let replica = cluster.replicas_of(primary)[0];
    let c = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || {
        assert!(c.wait_replicated(primary, Duration::from_secs(5)));
        c.kill(primary);
        assert!(
            resp::wait_until(Duration::from_secs(20), || c.role(replica).as_deref()
                == Some("master")),
            "the replica was not promoted"
        );
    })
    .await
    .unwrap();
    let killed = Instant::now();
    // The session lives on the promoted replica (it was replicated before the kill, or
    // the read answers empty: either way, never a hit from before the failover's
    // change below).
    let new_primary = crate::support::connect_client(&format!("redis://127.0.0.1:{replica}")).await;
    let _: () = new_primary
        .hset(app.key(&sid), ("username", "heidi"))
        .await
        .unwrap();
    let deadline = killed + Duration::from_secs(20);
    loop {
        let hits = app.cache_hits();
        let res = app.get("/read/username", Some(&sid)).await;
        if app.cache_hits() > hits {
            assert_eq!(res.body, "heidi", "a read from memory after the change");
        }
        if res.body == "heidi" && app.cache_hits() > hits {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cache did not serve again after the failover: {:?}",
            app.layer.cache_stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
