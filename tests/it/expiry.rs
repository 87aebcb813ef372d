//! Idle and absolute expiry, decided on Redis's clock.

use std::time::Duration;

use crate::support::{TestApp, Topology};

async fn idle_session_expires_and_the_next_request_says_so(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::new(&redis).await;
    let id = app.login().await;
    app.post("/ttl/1", Some(&id)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let res = app.get("/whoami", Some(&id)).await;
    assert!(
        res.body.contains("loaded=false expired=true"),
        "{}",
        res.body
    );
    assert!(res.clears_cookie());
    app.check_keyspace().await;
}

async fn absolute_lifetime_ends_a_session_that_is_active_every_second(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::with(&redis, |b| {
        b.idle_ttl(Duration::from_secs(60))
            .absolute_lifetime(Duration::from_secs(3))
    })
    .await;
    let id = app.login().await;
    let hash = app.hash(&id).await;
    assert!(hash.contains_key("absolute_expires_at"));
    let mut alive_for = 0;
    for _ in 0..8 {
        let res = app.get("/read/username", Some(&id)).await;
        if res.body != "ferris" {
            assert!(res.clears_cookie());
            break;
        }
        alive_for += 1;
        let ttl = app.pttl(&id).await;
        assert!(
            ttl <= 3_000,
            "key TTL {ttl} ms exceeds what is left of the lifetime"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        (4..=7).contains(&alive_for),
        "alive for {alive_for} half-seconds"
    );
    assert!(app.hash(&id).await.is_empty(), "the key is gone");
    app.check_keyspace().await;
}

async fn ttl_change_never_reaches_past_the_absolute_lifetime(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::with(&redis, |b| b.absolute_lifetime(Duration::from_secs(20))).await;
    let id = app.login().await;
    app.post("/ttl/3600", Some(&id)).await;
    let ttl = app.pttl(&id).await;
    assert!(ttl <= 20_000, "{ttl}");
    assert_eq!(app.hash(&id).await["session_ttl"], "3600");
    app.check_keyspace().await;
}

async fn expiry_uses_redis_clock_not_the_app_clock(topology: Topology) {
    // The deadline is stored on Redis's clock; a session with a deadline already in the
    // past by Redis's clock is gone, whatever the app server's clock says.
    let redis = topology.start().await;
    let app = TestApp::new(&redis).await;
    let id = app.login().await;
    let _: () = fred::interfaces::HashesInterface::hset(
        &app.client,
        app.key(&id),
        ("absolute_expires_at", "2000-01-01T00:00:00+00:00"),
    )
    .await
    .unwrap();
    let res = app.get("/read/username", Some(&id)).await;
    assert_eq!(res.body, "");
    assert!(app.hash(&id).await.is_empty());
}

session_tests! {
    idle_session_expires_and_the_next_request_says_so,
    absolute_lifetime_ends_a_session_that_is_active_every_second,
    ttl_change_never_reaches_past_the_absolute_lifetime,
    expiry_uses_redis_clock_not_the_app_clock,
}
