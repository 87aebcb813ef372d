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
    let held = {
        let (app, id) = (Arc::clone(&app), id.clone());
        tokio::spawn(async move { app.post("/gated/incr/a", Some(&id)).await })
    };
    app.gate.arrived.notified().await;
    assert_eq!(app.post("/set/b/2", Some(&id)).await.status, StatusCode::OK);
    app.gate.release.notify_one();
    assert_eq!(held.await.unwrap().status, StatusCode::OK);
    let hash = app.hash(&id).await;
    assert_eq!(hash["a"], "1");
    assert_eq!(hash["b"], "2");
    assert_eq!(hash["username"], "ferris");
    app.check_keyspace().await;
}

/// A request in flight while another logs out cannot bring the session back: 1,000
/// rounds, each held deterministically between its load and its save.
async fn logout_racing_an_in_flight_write_never_resurrects_the_session(topology: Topology) {
    let redis = topology.start().await;
    let app = Arc::new(TestApp::new(&redis).await);
    let mut resurrections = 0;
    for _ in 0..1000 {
        let id = app.login().await;
        let held = {
            let (app, id) = (Arc::clone(&app), id.clone());
            tokio::spawn(async move { app.post("/gated/incr/n", Some(&id)).await })
        };
        app.gate.arrived.notified().await;
        assert!(app.post("/logout", Some(&id)).await.clears_cookie());
        app.gate.release.notify_one();
        let res = held.await.unwrap();
        assert!(
            res.clears_cookie(),
            "the late writer's response clears the cookie"
        );
        if !app.hash(&id).await.is_empty() {
            resurrections += 1;
        }
    }
    assert_eq!(resurrections, 0);
    app.check_keyspace().await;
}

async fn rotation_racing_an_in_flight_write_leaves_one_live_session(topology: Topology) {
    let redis = topology.start().await;
    let app = Arc::new(TestApp::new(&redis).await);
    for _ in 0..200 {
        let id = app.login().await;
        let held = {
            let (app, id) = (Arc::clone(&app), id.clone());
            tokio::spawn(async move { app.post("/gated/incr/n", Some(&id)).await })
        };
        app.gate.arrived.notified().await;
        let new = app.post("/rotate", Some(&id)).await.new_id().unwrap();
        app.gate.release.notify_one();
        let res = held.await.unwrap();
        assert!(res.clears_cookie());
        assert!(app.hash(&id).await.is_empty(), "the old ID stays dead");
        assert_eq!(app.hash(&new).await["username"], "ferris");
    }
    app.check_keyspace().await;
}

async fn logout_racing_a_rotation_leaves_no_session(topology: Topology) {
    let redis = topology.start().await;
    let app = Arc::new(TestApp::new(&redis).await);
    for _ in 0..200 {
        let id = app.login().await;
        let held = {
            let (app, id) = (Arc::clone(&app), id.clone());
            tokio::spawn(async move { app.post("/gated/rotate", Some(&id)).await })
        };
        app.gate.arrived.notified().await;
        app.post("/logout", Some(&id)).await;
        app.gate.release.notify_one();
        let res = held.await.unwrap();
        assert!(res.clears_cookie(), "{:?}", res.set_cookie());
        let keys = app.keys().await;
        assert!(keys.is_empty(), "left behind: {keys:?}");
    }
    app.check_keyspace().await;
}

session_tests! {
    fifty_concurrent_increments_add_exactly_fifty,
    concurrent_writes_to_different_fields_both_persist,
    logout_racing_an_in_flight_write_never_resurrects_the_session,
    rotation_racing_an_in_flight_write_leaves_one_live_session,
    logout_racing_a_rotation_leaves_no_session,
}
