//! Redis down, slow or back: 503 with Retry-After, then recovery on the same app.

use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::{flush_scripts, RedisServer, TestApp, Topology};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_gives_503_and_requests_recover_when_it_is_back() {
    let mut server = RedisServer::start();
    let app = TestApp::with(&server, |b| b.command_timeout(Duration::from_millis(500))).await;
    let id = app.login().await;

    server.stop();
    let started = Instant::now();
    let res = app.get("/read/username", Some(&id)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by the timeout"
    );
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers["retry-after"], "1");
    assert!(
        res.body.contains("session store unavailable"),
        "{}",
        res.body
    );

    // A write without a cookie needs Redis only after the handler: the save fails, and
    // the response must not claim success.
    let res = app.post("/set/a/1", None).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.set_cookie(), None);

    // A request that needs no session is served as usual.
    assert_eq!(app.get("/none", None).await.status, StatusCode::OK);

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    let id = loop {
        let res = app.post("/set/a/1", None).await;
        if res.status == StatusCode::OK {
            break res.new_id().unwrap();
        }
        assert!(Instant::now() < deadline, "no recovery within 15 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The restarted server lost its script cache: EVALSHA recovered from NOSCRIPT.
    assert_eq!(app.get("/read/a", Some(&id)).await.body, "1");
    app.check_keyspace().await;
}

#[tokio::test]
async fn error_response_carries_the_error_and_can_be_customised() {
    let mut server = RedisServer::start();
    let app = TestApp::with(&server, |b| {
        b.command_timeout(Duration::from_millis(300))
            .error_response(|err| {
                http::Response::builder()
                    .status(503)
                    .header("retry-after", "7")
                    .body(format!("custom: {:?}", err.kind()).into())
                    .unwrap()
            })
    })
    .await;
    let id = app.login().await;
    server.stop();
    let res = app.get("/read/username", Some(&id)).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers["retry-after"], "7");
    assert!(res.body.starts_with("custom: "), "{}", res.body);
}

async fn script_cache_loss_is_recovered_on_the_first_write(topology: Topology) {
    let redis = topology.start_exclusive().await;
    let app = TestApp::new(&redis).await;
    let id = app.login().await;
    flush_scripts(&app.client).await;
    let res = app.post("/incr/n", Some(&id)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(app.hash(&id).await["n"], "1");
    app.check_keyspace().await;
}

async fn a_key_that_is_not_a_session_is_treated_as_no_session(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::new(&redis).await;
    let id = tower_redis_session::SessionId::generate().to_string();
    let key = app.key(&id);
    // A string, a hash without the internal fields: neither is read as a session.
    let _: () = fred::interfaces::KeysInterface::set(
        &app.client,
        &key,
        "x",
        Some(fred::types::Expiration::EX(60)),
        None,
        false,
    )
    .await
    .unwrap();
    let res = app.get("/whoami", Some(&id)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(res.body.starts_with("loaded=false"), "{}", res.body);
    let _: () = fred::interfaces::KeysInterface::del(&app.client, &key)
        .await
        .unwrap();
    let _: () = fred::interfaces::HashesInterface::hset(&app.client, &key, ("username", "mallory"))
        .await
        .unwrap();
    let _: () = fred::interfaces::KeysInterface::expire(&app.client, &key, 60, None)
        .await
        .unwrap();
    let res = app.get("/read/username", Some(&id)).await;
    assert_eq!(res.body, "");
}

session_tests! {
    script_cache_loss_is_recovered_on_the_first_write,
    a_key_that_is_not_a_session_is_treated_as_no_session,
}
