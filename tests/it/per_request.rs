//! The crate's per-request table (crate docs, "How it works"), row by row, with the Redis round trips counted.

use std::time::Duration;

use http::StatusCode;

use crate::support::{reset_stats, round_trips, TestApp, TestResponse, Topology};

/// A read of a new session's `username`, after its key's TTL was set to `pttl_ms`: the
/// session's ID, the response, and the round trips the read cost.
async fn read_after_ttl(app: &TestApp, pttl_ms: i64) -> (String, TestResponse, u64) {
    let id = app.login().await;
    let _: () = fred::interfaces::KeysInterface::pexpire(&app.client, app.key(&id), pttl_ms, None)
        .await
        .unwrap();
    reset_stats(&app.client).await;
    let res = app.get("/read/username", Some(&id)).await;
    assert_eq!(res.body, "ferris");
    (id, res, round_trips(&app.client).await)
}

async fn no_cookie_and_no_write_costs_nothing_and_sets_no_cookie(topology: Topology) {
    let redis = topology.start_exclusive().await;
    let app = TestApp::new(&redis).await;
    reset_stats(&app.client).await;
    let res = app.get("/none", None).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.set_cookie(), None);
    // A handler that reads an empty session costs nothing either.
    let res = app.get("/read/username", None).await;
    assert_eq!(res.body, "");
    assert_eq!(res.set_cookie(), None);
    assert_eq!(round_trips(&app.client).await, 0);
    app.check_keyspace().await;
}

async fn first_write_creates_the_session_in_one_round_trip(topology: Topology) {
    let redis = topology.start_exclusive().await;
    let app = TestApp::new(&redis).await;
    reset_stats(&app.client).await;
    let res = app.post("/set/username/ferris", None).await;
    assert_eq!(round_trips(&app.client).await, 1);
    let id = res.new_id().expect("Set-Cookie with the new ID");
    assert_eq!(res.headers["cache-control"], "no-store");

    let hash = app.hash(&id).await;
    assert_eq!(hash["username"], "ferris");
    assert_eq!(hash["session_ttl"], "1800");
    assert!(
        hash["created_at"].ends_with("+00:00"),
        "{}",
        hash["created_at"]
    );
    assert_eq!(hash["created_at"].len(), "2026-04-02T12:34:56+00:00".len());
    assert_eq!(hash["last_accessed_at"], hash["created_at"]);
    let ttl = app.pttl(&id).await;
    assert!(ttl > 1_790_000 && ttl <= 1_800_000, "{ttl}");
    app.check_keyspace().await;
}

async fn reading_a_live_session_is_one_round_trip_and_refreshes_the_ttl(topology: Topology) {
    let redis = topology.start_exclusive().await;
    let app = TestApp::with(&redis, |b| b.idle_ttl(Duration::from_secs(100))).await;
    let (id, res, trips) = read_after_ttl(&app, 50_000).await;
    assert_eq!(res.set_cookie(), None, "a read sets no cookie");
    assert_eq!(trips, 1);
    let ttl = app.pttl(&id).await;
    assert!(
        ttl > 99_000,
        "sliding TTL pushed back to the idle TTL, got {ttl}"
    );
    app.check_keyspace().await;
}

async fn read_then_write_is_two_round_trips(topology: Topology) {
    let redis = topology.start_exclusive().await;
    let app = TestApp::new(&redis).await;
    let id = app.login().await;
    reset_stats(&app.client).await;
    let res = app.post("/incr/page_views", Some(&id)).await;
    assert_eq!(res.body, "1");
    assert_eq!(res.set_cookie(), None);
    assert_eq!(round_trips(&app.client).await, 2);
    assert_eq!(app.hash(&id).await["page_views"], "1");
    app.check_keyspace().await;
}

async fn unknown_id_is_never_adopted_and_its_cookie_is_cleared(topology: Topology) {
    let redis = topology.start_exclusive().await;
    let app = TestApp::new(&redis).await;
    let unknown = tower_redis_session::SessionId::generate().to_string();

    reset_stats(&app.client).await;
    let res = app.get("/whoami", Some(&unknown)).await;
    assert_eq!(round_trips(&app.client).await, 1);
    assert!(
        res.body.contains("loaded=false expired=true"),
        "{}",
        res.body
    );
    assert!(res.clears_cookie(), "{:?}", res.set_cookie());
    assert_eq!(res.headers["cache-control"], "no-store");

    let res = app.post("/set/a/1", Some(&unknown)).await;
    let new = res.new_id().expect("a write gets a new ID");
    assert_ne!(new, unknown, "the client's ID is never adopted");
    let exists: bool = fred::interfaces::KeysInterface::exists(&app.client, app.key(&unknown))
        .await
        .unwrap();
    assert!(!exists);
    app.check_keyspace().await;
}

async fn changes_are_field_level_and_removals_and_ttl_changes_persist(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::new(&redis).await;
    let id = app.login().await;
    app.post("/set/color/blue", Some(&id)).await;
    let res = app.post("/remove/color", Some(&id)).await;
    assert_eq!(res.body, "blue");
    let res = app.post("/ttl/60", Some(&id)).await;
    assert_eq!(res.status, StatusCode::OK);
    let hash = app.hash(&id).await;
    assert!(!hash.contains_key("color"));
    assert_eq!(hash["session_ttl"], "60");
    assert!(app.pttl(&id).await <= 60_000);
    // The new TTL sticks: the next load refreshes to 60 s, not the default.
    let res = app.get("/whoami", Some(&id)).await;
    assert!(res.body.contains("ttl=60"), "{}", res.body);
    assert!(app.pttl(&id).await <= 60_000);
    app.check_keyspace().await;
}

async fn reserved_fields_are_refused_with_a_clear_error(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::new(&redis).await;
    let id = app.login().await;
    let res = app.post("/set/session_ttl/999999", Some(&id)).await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(res.body.contains("reserved"), "{}", res.body);
    assert_eq!(app.hash(&id).await["session_ttl"], "1800");
    app.check_keyspace().await;
}

async fn logout_deletes_the_key_and_expires_the_cookie(topology: Topology) {
    let redis = topology.start_exclusive().await;
    let app = TestApp::new(&redis).await;
    let id = app.login().await;
    reset_stats(&app.client).await;
    let res = app.post("/logout", Some(&id)).await;
    assert_eq!(round_trips(&app.client).await, 2, "load + end");
    assert!(res.clears_cookie());
    assert_eq!(res.headers["cache-control"], "no-store");
    assert_eq!(app.marker(&id).await.as_deref(), Some("destroyed"));
    // The old cookie is dead.
    let res = app.get("/read/username", Some(&id)).await;
    assert_eq!(res.body, "");
    app.check_keyspace().await;
}

async fn touch_interval_skips_the_refresh_write_but_still_loads_in_one_round_trip(
    topology: Topology,
) {
    let redis = topology.start_exclusive().await;
    let app = TestApp::with(&redis, |b| {
        b.idle_ttl(Duration::from_secs(100))
            .touch_interval(Duration::from_secs(30))
    })
    .await;
    let (id, _, trips) = read_after_ttl(&app, 90_000).await;
    assert_eq!(trips, 1);
    let ttl = app.pttl(&id).await;
    assert!(
        ttl <= 90_000,
        "refresh skipped within the touch interval, got {ttl}"
    );
    let hash = app.hash(&id).await;
    assert_eq!(hash["last_accessed_at"], hash["created_at"], "not stamped");
    app.check_keyspace().await;
}

/// With a persistent cookie, a read whose load renewed the key's TTL checks the session
/// once more before it sends the cookie again (the crate docs' note under the table): 2
/// round trips, and `Max-Age` what is left of the TTL.
async fn a_persistent_cookie_read_checks_the_session_before_sending_the_cookie_again(
    topology: Topology,
) {
    let redis = topology.start_exclusive().await;
    let app = TestApp::with(&redis, |b| {
        b.persistent_cookie(true).idle_ttl(Duration::from_secs(100))
    })
    .await;
    let (id, res, trips) = read_after_ttl(&app, 50_000).await;
    assert_eq!(trips, 2, "load + check");
    let cookie = res.set_cookie().expect("the cookie is sent again");
    assert!(cookie.starts_with(&format!("sid={id};")), "{cookie}");
    assert!(cookie.contains("Max-Age=100"), "{cookie}");
    app.check_keyspace().await;
}

/// With a persistent cookie and a touch interval, a read within the interval renews
/// nothing, so it sends no cookie and costs its one round trip.
async fn a_persistent_cookie_read_within_the_touch_interval_is_one_round_trip_and_sends_no_cookie(
    topology: Topology,
) {
    let redis = topology.start_exclusive().await;
    let app = TestApp::with(&redis, |b| {
        b.persistent_cookie(true)
            .idle_ttl(Duration::from_secs(100))
            .touch_interval(Duration::from_secs(30))
    })
    .await;
    let (_, res, trips) = read_after_ttl(&app, 90_000).await;
    assert_eq!(trips, 1, "the load renewed nothing");
    assert_eq!(res.set_cookie(), None);
    app.check_keyspace().await;
}

/// The creation script, run as the layer sends it on a key that is taken (an ID
/// collision), writes nothing: the session there stays as it was. On a marker it refuses
/// too, with its own status, so an ended session is never replaced.
async fn creation_never_overwrites_a_key_that_is_taken(topology: Topology) {
    use fred::prelude::*;
    let redis = topology.start().await;
    let app = TestApp::new(&redis).await;
    let id = app.login().await;
    let before = app.hash(&id).await;
    let pttl = app.pttl(&id).await;
    let source = tower_redis_session::__private::script_source("lua/create.lua").unwrap();
    let create = |key: String| {
        let (client, source) = (app.client.clone(), source.clone());
        async move {
            let reply: Vec<Value> = client
                .eval(
                    source,
                    vec![key],
                    vec!["60", "0", "username", "mallory", "role", "admin"],
                )
                .await
                .unwrap();
            match &reply[0] {
                Value::Array(items) => items[0].as_i64().unwrap(),
                other => panic!("create replied {other:?}"),
            }
        }
    };
    assert_eq!(create(app.key(&id)).await, 0, "a taken key is reported");
    assert_eq!(app.hash(&id).await, before, "and left as it was");
    assert!(app.pttl(&id).await <= pttl);
    assert_eq!(app.post("/logout", Some(&id)).await.status, StatusCode::OK);
    assert_eq!(create(app.key(&id)).await, -2, "a marker is never replaced");
    assert_eq!(app.marker(&id).await.as_deref(), Some("destroyed"));
}

session_tests! {
    creation_never_overwrites_a_key_that_is_taken,
    no_cookie_and_no_write_costs_nothing_and_sets_no_cookie,
    first_write_creates_the_session_in_one_round_trip,
    reading_a_live_session_is_one_round_trip_and_refreshes_the_ttl,
    read_then_write_is_two_round_trips,
    unknown_id_is_never_adopted_and_its_cookie_is_cleared,
    changes_are_field_level_and_removals_and_ttl_changes_persist,
    reserved_fields_are_refused_with_a_clear_error,
    logout_deletes_the_key_and_expires_the_cookie,
    touch_interval_skips_the_refresh_write_but_still_loads_in_one_round_trip,
    a_persistent_cookie_read_checks_the_session_before_sending_the_cookie_again,
    a_persistent_cookie_read_within_the_touch_interval_is_one_round_trip_and_sends_no_cookie,
}
