//! Managing sessions: the per-user index, listing, terminating, counting.

use std::{sync::Arc, time::Duration};

use fred::prelude::*;
use http::StatusCode;
use tower_redis_session::SessionHandle;

use crate::support::{RedisServer, TestApp, Topology};

fn handle(app: &TestApp, id: &str) -> SessionHandle {
    app.manager
        .handle(&tower_redis_session::SessionId::parse(id).unwrap())
}

async fn list_end_one_and_log_out_everywhere_but_current(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::new(&redis).await;
    let alice: Vec<String> = [
        app.login_as("alice").await,
        app.login_as("alice").await,
        app.login_as("alice").await,
    ]
    .into();
    let bob = app.login_as("bob").await;
    app.post("/set/theme/dark", Some(&alice[0])).await;

    let list = app.manager.list("alice").await.unwrap();
    assert_eq!(list.len(), 3);
    let mut handles: Vec<_> = list.iter().map(|i| i.handle.clone()).collect();
    handles.sort();
    let mut expected: Vec<_> = alice.iter().map(|id| handle(&app, id)).collect();
    expected.sort();
    assert_eq!(handles, expected);
    for info in &list {
        assert!(info.expires_in > Duration::from_secs(1700));
        assert!(info.created_at.is_some() && info.last_accessed_at.is_some());
        assert!(info.fields.contains(&("username".into(), "alice".into())));
        assert!(info
            .fields
            .iter()
            .all(|(k, _)| k != "user_id" && k != "created_at"));
    }
    let first = list
        .iter()
        .find(|i| i.handle == handle(&app, &alice[0]))
        .unwrap();
    assert!(first.fields.contains(&("theme".into(), "dark".into())));

    // End one.
    assert!(app
        .manager
        .terminate("alice", &handle(&app, &alice[1]))
        .await
        .unwrap());
    assert_eq!(app.get("/read/username", Some(&alice[1])).await.body, "");
    // Alice cannot end Bob's session with his handle.
    assert!(!app
        .manager
        .terminate("alice", &handle(&app, &bob))
        .await
        .unwrap());
    assert_eq!(app.get("/read/username", Some(&bob)).await.body, "bob");

    // Log out everywhere but the current one.
    let ended = app
        .manager
        .terminate_all("alice", Some(&handle(&app, &alice[0])))
        .await
        .unwrap();
    assert_eq!(ended, 1);
    assert_eq!(app.get("/read/username", Some(&alice[2])).await.body, "");
    assert_eq!(
        app.get("/read/username", Some(&alice[0])).await.body,
        "alice"
    );
    assert_eq!(app.manager.list("alice").await.unwrap().len(), 1);
    assert_eq!(
        app.manager.list("bob").await.unwrap().len(),
        1,
        "other user untouched"
    );

    // Log out everywhere.
    assert_eq!(app.manager.terminate_all("alice", None).await.unwrap(), 1);
    assert!(app.manager.list("alice").await.unwrap().is_empty());
    app.check_keyspace_with_indexes().await;
}

async fn expired_sessions_vanish_from_the_listing_and_old_dead_entries_from_the_index(
    topology: Topology,
) {
    let redis = topology.start().await;
    let app = TestApp::new(&redis).await;
    let short = app.login_as("carol").await;
    let long = app.login_as("carol").await;
    app.post("/ttl/1", Some(&short)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let list = app.manager.list("carol").await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].handle, handle(&app, &long));
    // The expired session's entry is younger than the grace, so it stays for now (it
    // could be a session being created right now). Make it a minute and a half old:
    // then it goes.
    let index = app.index_key("carol");
    app.age_index_entry("carol", &handle(&app, &short).to_string(), 90_000)
        .await;
    assert_eq!(app.manager.list("carol").await.unwrap().len(), 1);
    let members: Vec<String> = app
        .client
        .zrange(&index, 0, -1, None, false, None, false)
        .await
        .unwrap();
    assert_eq!(members, vec![handle(&app, &long).to_string()]);
    // Once the last one ends, the index key is gone too.
    app.post("/logout", Some(&long)).await;
    assert!(app.manager.list("carol").await.unwrap().is_empty());
    assert_eq!(app.live_keys().await, Vec::<String>::new());
}

/// An entry whose session is being created right now looks like a dead one; a listing
/// between the two steps must not drop it, or "log out everywhere" would miss the
/// session for good.
async fn a_listing_during_a_login_never_unindexes_the_session(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::new(&redis).await;
    let id = tower_redis_session::SessionId::generate();
    let index = app.index_key("gina");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    // Step one of a login: the entry, before its session exists.
    let _: i64 = app
        .client
        .zadd(&index, None, None, false, false, (now, id.digest()))
        .await
        .unwrap();
    assert!(app.manager.list("gina").await.unwrap().is_empty());
    assert_eq!(app.manager.terminate_all("gina", None).await.unwrap(), 0);
    // Had the listing pruned it, a session created now would be unindexed. It was not,
    // and "log out everywhere" left a marker that the late creation cannot replace.
    let score: Option<f64> = app.client.zscore(&index, id.digest()).await.unwrap();
    assert!(score.is_none() || app.marker(id.as_str()).await.is_some());
    assert_eq!(app.marker(id.as_str()).await.as_deref(), Some("terminated"));
}

/// Tying again re-adds a lost index entry.
async fn every_tie_reindexes_the_session(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::with(&redis, |b| b.rotate_on_user_change(false)).await;
    let id = app.login_as("hana").await;
    let index = app.index_key("hana");
    let _: i64 = app.client.del(&index).await.unwrap();
    assert!(app.manager.list("hana").await.unwrap().is_empty());
    let res = app.post("/login/hana", Some(&id)).await;
    assert_eq!(res.status, StatusCode::OK);
    let id = res.new_id().unwrap_or(id);
    let list = app.manager.list("hana").await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].handle, handle(&app, &id));
}

async fn rotation_and_destroy_keep_the_index_right(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::new(&redis).await;
    let id = app.login_as("dave").await;
    let rotated = app.post("/rotate", Some(&id)).await.new_id().unwrap();
    let list = app.manager.list("dave").await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].handle, handle(&app, &rotated));
    // The tie moves with the rotation: the new session still belongs to dave.
    assert_eq!(app.hash(&rotated).await["user_id"], "dave");

    app.post("/logout", Some(&rotated)).await;
    assert!(app.manager.list("dave").await.unwrap().is_empty());
    assert_eq!(app.live_keys().await, Vec::<String>::new(), "index deleted");
}

async fn a_session_terminated_while_a_request_is_in_flight_stays_terminated(topology: Topology) {
    let redis = topology.start().await;
    let app = Arc::new(TestApp::new(&redis).await);
    for _ in 0..100 {
        let id = app.login_as("erin").await;
        let held = app.hold("POST", "/gated/incr/n", &id).await;
        assert_eq!(app.manager.terminate_all("erin", None).await.unwrap(), 1);
        let res = app.release(held).await;
        assert_eq!(
            res.status,
            StatusCode::CONFLICT,
            "the change was not applied"
        );
        assert_eq!(res.set_cookie(), None);
        assert_eq!(app.marker(&id).await.as_deref(), Some("terminated"));
        // The next request finds no session and clears the stale cookie.
        assert!(app.get("/read/n", Some(&id)).await.clears_cookie());
    }
    assert_eq!(app.live_keys().await, Vec::<String>::new());
}

async fn stats_count_sessions_indexes_and_memory(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::new(&redis).await;
    for _ in 0..5 {
        app.login().await;
    }
    app.login_as("frank").await;
    let stats = app.manager.stats().await.unwrap();
    assert_eq!(stats.sessions, 6);
    assert_eq!(stats.user_indexes, 1);
    assert!(stats.session_bytes > 6 * 50, "{stats:?}");
}

async fn terminate_all_by_scan_ends_sessions_the_index_lost(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::new(&redis).await;
    let a = app.login_as("grace").await;
    let b = app.login_as("grace").await;
    let other = app.login_as("heidi").await;
    // The index is lost (e.g. evicted under an allkeys-* policy).
    let _: () = fred::interfaces::KeysInterface::del(&app.client, app.index_key("grace"))
        .await
        .unwrap();
    assert_eq!(app.manager.terminate_all("grace", None).await.unwrap(), 0);
    assert_eq!(app.manager.terminate_all_by_scan("grace").await.unwrap(), 2);
    assert_eq!(app.get("/read/username", Some(&a)).await.body, "");
    assert_eq!(app.get("/read/username", Some(&b)).await.body, "");
    assert_eq!(app.get("/read/username", Some(&other)).await.body, "heidi");
}

/// Under `volatile-lru`, memory pressure evicts session keys (they have TTLs) but never
/// the user index (it has none), so "log out everywhere" still finds every survivor.
#[tokio::test]
async fn volatile_lru_evicts_sessions_but_never_the_index() {
    let server =
        RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "volatile-lru"]);
    let app = TestApp::new(&server).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(app.login_as("ivan").await);
    }
    // Fill memory with other sessions carrying TTLs until Redis must evict.
    let filler = "x".repeat(60_000);
    for i in 0..200 {
        let res = app.post(&format!("/set/f/{filler}{i}"), None).await;
        assert!(res.status == StatusCode::OK || res.status.is_server_error());
    }
    let info: String =
        fred::interfaces::ClientLike::info(&app.client, Some(fred::types::InfoKind::Stats))
            .await
            .unwrap();
    let evicted: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("evicted_keys:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(evicted > 0, "the test must actually cause eviction");
    let index_exists: bool =
        fred::interfaces::KeysInterface::exists(&app.client, app.index_key("ivan"))
            .await
            .unwrap();
    assert!(index_exists, "the index survived eviction");
    // Stop evicting, so that nothing vanishes between the listing and the termination.
    fred::interfaces::ClientLike::custom::<(), _>(
        &app.client,
        fred::cmd!("CONFIG"),
        vec!["SET", "maxmemory", "0"],
    )
    .await
    .unwrap();
    let alive_before = app.manager.list("ivan").await.unwrap().len();
    let ended = app.manager.terminate_all("ivan", None).await.unwrap();
    assert_eq!(ended, alive_before);
    for id in &ids {
        assert!(!app.is_live(id).await);
    }
}

session_tests! {
    list_end_one_and_log_out_everywhere_but_current,
    expired_sessions_vanish_from_the_listing_and_old_dead_entries_from_the_index,
    a_listing_during_a_login_never_unindexes_the_session,
    every_tie_reindexes_the_session,
    rotation_and_destroy_keep_the_index_right,
    a_session_terminated_while_a_request_is_in_flight_stays_terminated,
    stats_count_sessions_indexes_and_memory,
    terminate_all_by_scan_ends_sessions_the_index_lost,
}

/// A scan that cannot reach every primary is never reported as complete: on a cluster
/// the client has not reached (so it knows none of its primaries), `stats` is an error,
/// never "no sessions", and so is `terminate_all_by_scan`, never "0 ended". (The latter
/// fails already at its index read, made before the scan through the same client: with
/// no cluster state known, no command reaches the cluster. The check in the scan itself,
/// which both share, is what `stats` meets.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_of_a_cluster_whose_primaries_are_unknown_is_an_error_never_nothing() {
    use tower_redis_session::ErrorKind;
    // Nothing listens there yet: the pool keeps trying in the background.
    let url = format!("redis-cluster://127.0.0.1:{}", crate::support::free_port());
    let pool = tower_redis_session::connect_lazy(&url).await.unwrap();
    assert!(pool.next().is_clustered());
    assert!(pool.next().cached_cluster_state().is_none());
    let manager = crate::support::layer(pool)
        .command_timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap()
        .manager();

    let stats = manager.stats().await;
    assert!(
        matches!(&stats, Err(e) if e.kind() == ErrorKind::Unavailable),
        "{stats:?}"
    );
    let ended = manager.terminate_all_by_scan("bob").await;
    assert!(
        matches!(&ended, Err(e) if matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout)),
        "{ended:?}"
    );
}
