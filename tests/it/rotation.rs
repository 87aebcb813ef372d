//! ID rotation: old ID dead, data, TTL and deadline carried over, new cookie set.

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
        4,
        "load, mark and read the old key, create the new one, leave the marker"
    );
    let new = res.new_id().expect("new cookie set");
    assert_ne!(new, old);
    assert_eq!(res.headers["cache-control"], "no-store");

    assert_eq!(app.marker(&old).await.as_deref(), Some("rotated"));
    let marker_ttl = app.pttl(&old).await;
    assert!(marker_ttl > 0 && marker_ttl <= 60_000, "{marker_ttl}");
    let after = app.hash(&new).await;
    for field in [
        "username",
        "n",
        "session_ttl",
        "created_at",
        "absolute_expires_at",
    ] {
        assert_eq!(after[field], before[field], "{field} carried over");
    }
    assert!(!after.contains_key("rotating"), "no mark on the new key");
    let ttl = app.pttl(&new).await;
    assert!(ttl > 100_000 && ttl <= 120_000, "{ttl}");

    // A request with the old ID gets no session and leaves the cookie alone: the
    // browser may hold the new one by now.
    let res = app.get("/read/username", Some(&old)).await;
    assert_eq!(res.body, "", "old ID no longer works");
    assert_eq!(res.set_cookie(), None, "the new cookie is not cleared");
    assert_eq!(app.get("/read/n", Some(&new)).await.body, "1");
    app.check_keyspace().await;
}

async fn rotation_with_changes_in_the_same_request_keeps_them(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::new(&redis).await;
    let old = app.login().await;
    let res = app.post("/set_and_rotate/role/admin", Some(&old)).await;
    assert_eq!(res.status, StatusCode::OK);
    let new = res.new_id().unwrap();
    let hash = app.hash(&new).await;
    assert_eq!(hash["role"], "admin");
    assert_eq!(hash["username"], "ferris");
    assert!(!app.is_live(&old).await);
    app.check_keyspace().await;
}

async fn rotation_keeps_the_absolute_deadline_to_the_millisecond(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::with(&redis, |b| {
        b.absolute_lifetime(std::time::Duration::from_secs(3600))
    })
    .await;
    let mut id = app.login().await;
    let deadline = app.hash(&id).await["absolute_expires_at"].clone();
    assert!(
        deadline.contains('.') && deadline.ends_with("+00:00"),
        "{deadline}"
    );
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        id = app.post("/rotate", Some(&id)).await.new_id().unwrap();
        assert_eq!(app.hash(&id).await["absolute_expires_at"], deadline);
    }
    app.check_keyspace().await;
}

/// Runs one of the layer's scripts by hand, as a rotating request would, and returns the
/// status of its result.
async fn run_script(app: &TestApp, file: &str, key: String, args: Vec<String>) -> i64 {
    use fred::prelude::*;
    let source = tower_redis_session::__private::script_source(file).unwrap();
    let reply: Vec<Value> = app.client.eval(source, vec![key], args).await.unwrap();
    match &reply[0] {
        Value::Array(items) => items[0].as_i64().unwrap(),
        other => other.as_i64().unwrap(),
    }
}

/// A rotation that dies after marking the old key (step 1) refuses saves only while its
/// mark holds; once the mark lapses the session takes saves again, with nothing lost. One
/// that dies after creating the new key (step 2) leaves a copy nobody has the ID of,
/// which expires, while the session lives on under its old ID.
async fn a_rotation_that_dies_between_its_steps_loses_nothing(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::new(&redis).await;
    let id = app.login().await;
    let args = |hold_ms: &str, token: &str| {
        ["512", "300000", "0", hold_ms, token]
            .map(str::to_owned)
            .to_vec()
    };

    // Step 1, then the rotating request dies: saves are refused while the mark holds.
    let marked = run_script(
        &app,
        "lua/begin_rotate.lua",
        app.key(&id),
        args("700", "t1"),
    )
    .await;
    assert_eq!(marked, 1);
    assert!(app.hash(&id).await.contains_key("rotating"));
    let res = app.post("/incr/n", Some(&id)).await;
    assert_eq!(
        res.status,
        StatusCode::CONFLICT,
        "a save during the move is refused"
    );
    assert_eq!(res.set_cookie(), None);
    // Once the mark lapses, the session is whole and takes saves again.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(app.post("/incr/n", Some(&id)).await.status, StatusCode::OK);
    let hash = app.hash(&id).await;
    assert_eq!(hash["n"], "1");
    assert_eq!(hash["username"], "ferris");
    assert!(!hash.contains_key("rotating"), "the lapsed mark is cleared");
    // The dead rotation's last step can no longer win: its mark is gone.
    let finished = run_script(
        &app,
        "lua/finish_rotate.lua",
        app.key(&id),
        vec!["t1".into(), "60000".into()],
    )
    .await;
    assert_eq!(finished, 0);
    assert!(app.is_live(&id).await);

    // Steps 1 and 2, then death: the copy has a TTL and no one has its ID; the session
    // lives on under the old one once the mark lapses.
    assert_eq!(
        run_script(
            &app,
            "lua/begin_rotate.lua",
            app.key(&id),
            args("300", "t2")
        )
        .await,
        1
    );
    let orphan = tower_redis_session::SessionId::generate().to_string();
    let created = run_script(
        &app,
        "lua/create.lua",
        app.key(&orphan),
        ["60", "0", "username", "ferris"]
            .map(str::to_owned)
            .to_vec(),
    )
    .await;
    assert_eq!(created, 1);
    assert!(
        app.pttl(&orphan).await > 0,
        "the orphan copy expires by itself"
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(app.post("/incr/n", Some(&id)).await.status, StatusCode::OK);
    assert_eq!(app.hash(&id).await["n"], "2");
    app.check_keyspace().await;
}

/// A `rotating` mark says until when its rotation holds the session. No rotation holds
/// it for more than a few command timeouts, so a mark that claims to hold it for more
/// than 5 minutes (planted, or written by a clock gone wrong) is abandoned at once: saves
/// succeed and clear it. One within 5 minutes is honoured: saves are refused meanwhile.
async fn a_rotating_mark_more_than_5_minutes_ahead_counts_as_abandoned(topology: Topology) {
    use fred::prelude::*;
    let redis = topology.start().await;
    let app = TestApp::new(&redis).await;
    let id = app.login().await;
    let plant = |ahead_ms: u64| {
        let app = &app;
        let id = &id;
        async move {
            let until = crate::expiry::redis_now_ms(app).await + ahead_ms;
            let _: i64 = app
                .client
                .hset(app.key(id), ("rotating", format!("{until}:planted")))
                .await
                .unwrap();
        }
    };

    // 6 minutes ahead: abandoned. The save lands, and the mark is gone.
    plant(6 * 60_000).await;
    let res = app.post("/incr/n", Some(&id)).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let hash = app.hash(&id).await;
    assert_eq!(hash["n"], "1");
    assert!(!hash.contains_key("rotating"), "the mark is cleared");

    // 4 minutes ahead: a rotation may still hold it. The save is refused, nothing lost.
    plant(4 * 60_000).await;
    let res = app.post("/incr/n", Some(&id)).await;
    assert_eq!(res.status, StatusCode::CONFLICT, "{}", res.body);
    let hash = app.hash(&id).await;
    assert_eq!(hash["n"], "1");
    assert!(hash.contains_key("rotating"));
    app.check_keyspace().await;
}

session_tests! {
    a_rotating_mark_more_than_5_minutes_ahead_counts_as_abandoned,
    a_rotation_that_dies_between_its_steps_loses_nothing,
    rotation_moves_data_and_ttl_and_kills_the_old_id,
    rotation_with_changes_in_the_same_request_keeps_them,
    rotation_keeps_the_absolute_deadline_to_the_millisecond,
}
