//! ID rotation: old ID dead, data and TTL carried over, new cookie set.

use http::StatusCode;

use crate::support::{reset_stats, round_trips, TestApp, Topology};

async fn rotation_moves_data_and_ttl_and_kills_the_old_id(topology: Topology) {
    let redis = topology.start_exclusive().await;
    let app = TestApp::new(&redis).await;
    let old = app.login().await;
    app.post("/incr/n", Some(&old)).await;
    app.post("/ttl/120", Some(&old)).await;
    let before = app.hash(&old).await;

    reset_stats(&app.client).await;
    let res = app.post("/rotate", Some(&old)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        round_trips(&app.client).await,
        3,
        "load, create new, delete old"
    );
    let new = res.new_id().expect("new cookie set");
    assert_ne!(new, old);
    assert_eq!(res.headers["cache-control"], "no-store");

    assert!(app.hash(&old).await.is_empty(), "old key deleted");
    let after = app.hash(&new).await;
    for field in ["username", "n", "session_ttl", "created_at"] {
        assert_eq!(after[field], before[field], "{field} carried over");
    }
    let ttl = app.pttl(&new).await;
    assert!(ttl > 100_000 && ttl <= 120_000, "{ttl}");

    let res = app.get("/read/username", Some(&old)).await;
    assert_eq!(res.body, "", "old ID no longer works");
    assert_eq!(app.get("/read/n", Some(&new)).await.body, "1");
    app.check_keyspace().await;
}

async fn rotation_with_changes_in_the_same_request_keeps_them(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::new(&redis).await;
    let old = app.login().await;
    let res = app.post("/rotate", Some(&old)).await;
    let new = res.new_id().unwrap();
    let res = app.post("/set/role/admin", Some(&new)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(app.hash(&new).await["role"], "admin");
    app.check_keyspace().await;
}

session_tests! {
    rotation_moves_data_and_ttl_and_kills_the_old_id,
    rotation_with_changes_in_the_same_request_keeps_them,
}
