//! What concurrent requests to one session leave behind.

use std::sync::Arc;

use http::StatusCode;

use crate::support::{TestApp, Topology};

async fn fifty_concurrent_increments_add_exactly_fifty(topology: Topology) {
    let redis = topology.start().await;
    let app = Arc::new(TestApp::new(&redis).await);
    let id = app.login().await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (app, id) = (Arc::clone(&app), id.clone());
            tokio::spawn(async move { app.post("/incr/n", Some(&id)).await.status })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(app.hash(&id).await["n"], "50");
    app.check_keyspace().await;
}

async fn concurrent_writes_to_different_fields_both_persist(topology: Topology) {
    let redis = topology.start().await;
    let app = Arc::new(TestApp::new(&redis).await);
    let id = app.login().await;
    // Hold one writer between its load and its save while the other completes.
    let held = app.hold("POST", "/gated/incr/a", &id).await;
    assert_eq!(app.post("/set/b/2", Some(&id)).await.status, StatusCode::OK);
    assert_eq!(app.release(held).await.status, StatusCode::OK);
    let hash = app.hash(&id).await;
    assert_eq!(hash["a"], "1");
    assert_eq!(hash["b"], "2");
    assert_eq!(hash["username"], "ferris");
    app.check_keyspace().await;
}

/// A request in flight while another logs out cannot bring the session back: 1,000
/// rounds, each held deterministically between its load and its save. Its change was
/// not applied, so it is answered 409, and it leaves the cookie alone (the browser may
/// have logged in again meanwhile).
async fn logout_racing_an_in_flight_write_never_resurrects_the_session(topology: Topology) {
    let redis = topology.start().await;
    let app = Arc::new(TestApp::new(&redis).await);
    let mut resurrections = 0;
    for _ in 0..1000 {
        let id = app.login().await;
        let held = app.hold("POST", "/gated/incr/n", &id).await;
        assert!(app.post("/logout", Some(&id)).await.clears_cookie());
        let res = app.release(held).await;
        assert_eq!(
            res.status,
            StatusCode::CONFLICT,
            "the change was not applied"
        );
        assert_eq!(
            res.set_cookie(),
            None,
            "a refused change leaves the cookie alone"
        );
        if app.is_live(&id).await {
            resurrections += 1;
        }
    }
    assert_eq!(resurrections, 0);
    app.check_keyspace().await;
}

/// A write held across a rotation is either in the new session or refused with 409,
/// never acknowledged and lost; the late response never clears the new cookie.
async fn a_write_held_across_a_rotation_is_refused_never_lost(topology: Topology) {
    let redis = topology.start().await;
    let app = Arc::new(TestApp::new(&redis).await);
    for _ in 0..200 {
        let id = app.login().await;
        let held = app.hold("POST", "/gated/incr/n", &id).await;
        let new = app.post("/rotate", Some(&id)).await.new_id().unwrap();
        let res = app.release(held).await;
        let hash = app.hash(&new).await;
        match res.status {
            StatusCode::OK => assert_eq!(hash.get("n").map(String::as_str), Some("1")),
            StatusCode::CONFLICT => assert_eq!(hash.get("n"), None),
            other => panic!("unexpected {other}"),
        }
        assert_eq!(res.set_cookie(), None, "the new cookie is not cleared");
        assert!(!app.is_live(&id).await, "the old ID stays dead");
        assert_eq!(hash["username"], "ferris");
    }
    app.check_keyspace().await;
}

/// Increments acknowledged on the old ID while a rotation is between its load and its
/// write-back are all in the new session.
async fn a_rotation_carries_every_change_acknowledged_while_it_ran(topology: Topology) {
    let redis = topology.start().await;
    let app = Arc::new(TestApp::new(&redis).await);
    for _ in 0..100 {
        let id = app.login().await;
        let held = app.hold("POST", "/gated/rotate", &id).await;
        for _ in 0..3 {
            assert_eq!(app.post("/incr/n", Some(&id)).await.status, StatusCode::OK);
        }
        let res = app.release(held).await;
        assert_eq!(res.status, StatusCode::OK);
        let new = res.new_id().unwrap();
        assert_eq!(
            app.hash(&new).await["n"],
            "3",
            "no acknowledged increment lost"
        );
    }
    app.check_keyspace().await;
}

/// A double-submitted login: the second rotation finds the session moved on, is refused
/// and leaves the cookie alone; the first one's session stands.
async fn two_logins_racing_from_one_browser_leave_the_winner_logged_in(topology: Topology) {
    let redis = topology.start().await;
    let app = Arc::new(TestApp::new(&redis).await);
    for _ in 0..100 {
        let id = app.login().await;
        let loser = app.hold("POST", "/gated/rotate", &id).await;
        let winner = app.post("/login/alice", Some(&id)).await;
        assert_eq!(winner.status, StatusCode::OK);
        let new = winner.new_id().unwrap();
        let loser = app.release(loser).await;
        assert_eq!(loser.status, StatusCode::CONFLICT);
        assert_eq!(
            loser.set_cookie(),
            None,
            "the winner's cookie is not touched"
        );
        assert_eq!(app.get("/read/username", Some(&new)).await.body, "alice");
    }
    app.check_keyspace_with_indexes().await;
}

async fn logout_racing_a_rotation_leaves_no_session(topology: Topology) {
    let redis = topology.start().await;
    let app = Arc::new(TestApp::new(&redis).await);
    for _ in 0..200 {
        let id = app.login().await;
        let held = app.hold("POST", "/gated/rotate", &id).await;
        app.post("/logout", Some(&id)).await;
        let res = app.release(held).await;
        assert_eq!(res.status, StatusCode::CONFLICT);
        assert_eq!(res.set_cookie(), None, "{:?}", res.set_cookie());
        let keys = app.live_keys().await;
        assert!(keys.is_empty(), "left behind: {keys:?}");
    }
    app.check_keyspace().await;
}

/// A change that was dropped is logged as a warning that names the session by a digest,
/// and no log line at any level holds a raw session ID.
async fn a_dropped_change_is_logged_as_a_warning_without_the_raw_id(topology: Topology) {
    let redis = topology.start().await;
    let mut app = TestApp::new(&redis).await;
    let logs = app.capture_logs(tracing::Level::TRACE);
    let app = Arc::new(app);
    let id = app.login().await;
    let held = app.hold("POST", "/gated/incr/n", &id).await;
    app.post("/logout", Some(&id)).await;
    assert_eq!(app.release(held).await.status, StatusCode::CONFLICT);
    let warnings = logs.lines_at("WARN");
    let digest = tower_redis_session::SessionId::parse(&id).unwrap().digest()[..12].to_owned();
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("not applied") && l.contains(&digest)),
        "no warning for the dropped change: {}",
        logs.text()
    );
    logs.assert_no_raw_ids(&app.issued_ids());
}

session_tests! {
    a_dropped_change_is_logged_as_a_warning_without_the_raw_id,
    fifty_concurrent_increments_add_exactly_fifty,
    concurrent_writes_to_different_fields_both_persist,
    logout_racing_an_in_flight_write_never_resurrects_the_session,
    a_write_held_across_a_rotation_is_refused_never_lost,
    a_rotation_carries_every_change_acknowledged_while_it_ran,
    two_logins_racing_from_one_browser_leave_the_winner_logged_in,
    logout_racing_a_rotation_leaves_no_session,
}
