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

/// Fails if an error response's body shows any of `secrets` (Redis's error text, a key,
/// an ID, a stored value).
fn assert_body_reveals_none(what: &str, body: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !body.contains(secret),
            "{what}: the body shows {secret:?}: {body:?}"
        );
    }
}

/// What the layer answers instead of the handler (503, 500, 409) says that the store
/// failed or the change was refused, and nothing of what it knows: Redis's error text,
/// the session's key, its ID or a value stay in the logs and the error in the response's
/// extensions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_error_bodies_show_no_redis_error_text_key_id_or_value() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    let mut app = TestApp::new(&redis).await;
    let logs = app.capture_logs(tracing::Level::WARN);
    let id = app.login().await;
    let key = app.key(&id);
    let digest = key[app.prefix.len()..].to_owned();
    let secret = "hunter2-in-the-session";
    assert_eq!(
        app.post(&format!("/set/password/{secret}"), Some(&id))
            .await
            .status,
        StatusCode::OK
    );
    let everything = |extra: &[&'static str]| {
        let mut all = vec![
            id.as_str(),
            key.as_str(),
            &digest[..12],
            app.prefix.as_str(),
            secret,
            "ferris",
        ];
        all.extend_from_slice(extra);
        all
    };

    // 503: Redis out of memory refuses the write.
    redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    let res = app.post("/set/note/more", Some(&id)).await;
    redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        logs.text().contains("OOM"),
        "Redis said OOM, and the log says so"
    );
    let oom = ["OOM", "maxmemory", "used memory", "script", "ERR"];
    assert_body_reveals_none("503", &res.body, &everything(&oom));

    // 500: Redis refuses the command (a user whose ACL does not cover the key prefix).
    redis.cmd(&["ACL", "SETUSER", "narrow", "on", ">pw", "~other:*", "+@all"]);
    let narrow =
        crate::support::connect_client(&format!("redis://narrow:pw@127.0.0.1:{}", redis.port()))
            .await;
    let prefix = app.prefix.clone();
    let mut other = TestApp::with_client(narrow, true, |b| b.key_prefix(prefix)).await;
    let other_logs = other.capture_logs(tracing::Level::WARN);
    let res = other.get("/read/password", Some(&id)).await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        other_logs.text().contains("NOPERM"),
        "Redis said NOPERM, and the log says so: {}",
        other_logs.text()
    );
    let noperm = ["NOPERM", "permission", "ACL", "narrow", "ERR", "evalsha"];
    assert_body_reveals_none("500", &res.body, &everything(&noperm));

    // 409: the session ended while the handler ran.
    let gated = {
        let router = app.router.clone();
        let cookie = format!("sid={id}");
        tokio::spawn(async move {
            let req = http::Request::post("/gated/incr/tally")
                .header(http::header::COOKIE, cookie)
                .body(axum::body::Body::empty())
                .unwrap();
            let res = tower::ServiceExt::oneshot(router, req).await.unwrap();
            let status = res.status();
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        })
    };
    app.gate.arrived.notified().await;
    assert_eq!(app.post("/logout", Some(&id)).await.status, StatusCode::OK);
    app.gate.release.notify_one();
    let (status, body) = gated.await.unwrap();
    assert_eq!(status, StatusCode::CONFLICT);
    assert_body_reveals_none("409", &body, &everything(&["destroyed", "tally"]));
}

/// Handlers that break each rule with a value they do not show.
fn refusing_routes() -> axum::Router {
    use axum::{extract::Path, routing::post};
    use tower_redis_session::{Session, SessionError};
    async fn refuse(session: Session, Path(rule): Path<String>) -> Result<String, SessionError> {
        const SECRET: &str = "hunter2-in-the-session";
        match rule.as_str() {
            // JSON text, so that serde's messages would quote it.
            "store" => session.insert("note", format!("{SECRET:?}"))?,
            "too_large" => session.insert("note", SECRET.repeat(100))?,
            "too_many" => {
                for i in 0..10 {
                    session.insert(&format!("f{i}"), SECRET)?;
                }
            }
            "session_too_large" => {
                for i in 0..3 {
                    session.insert(&format!("g{i}"), SECRET.repeat(2))?;
                }
            }
            "not_an_integer" => {
                session.increment("note", 1)?;
            }
            "reserved" => session.insert("user_id", SECRET)?,
            "empty_name" => session.insert("", SECRET)?,
            "user_id" => session.set_user_id(SECRET.repeat(20))?,
            "after_destroy" => {
                session.destroy();
                session.insert("note", SECRET)?;
            }
            #[cfg(feature = "serde")]
            "json" => {
                let _: Option<u64> = session.get_json("note")?;
            }
            other => panic!("no rule {other}"),
        }
        Ok("ok".into())
    }
    axum::Router::new().route("/refuse/{rule}", post(refuse))
}

/// A `SessionError` returned from a handler becomes a 400 or 500 whose body names the
/// rule, and at most the field the handler named: never the value, the ID or the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_error_bodies_show_no_value_id_or_key() {
    let redis = RedisServer::start();
    let client = crate::support::connect_client(&redis.url()).await;
    let layer = crate::support::layer(client)
        .max_fields(4)
        .max_value_size(64)
        .max_session_size(100)
        .build()
        .unwrap();
    let app = refusing_routes().layer(layer);
    let send = |rule: &str, sid: Option<&str>| {
        let mut req = http::Request::post(format!("/refuse/{rule}"));
        if let Some(sid) = sid {
            req = req.header(http::header::COOKIE, format!("sid={sid}"));
        }
        let req = req.body(axum::body::Body::empty()).unwrap();
        let app = app.clone();
        async move {
            let res = tower::ServiceExt::oneshot(app, req).await.unwrap();
            let status = res.status();
            let cookie = res.headers().get(http::header::SET_COOKIE).cloned();
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, cookie, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (status, cookie, _) = send("store", None).await;
    assert_eq!(status, StatusCode::OK);
    let cookie = cookie.unwrap();
    let id = cookie.to_str().unwrap()[4..47].to_owned();
    let key = format!(
        "session:{}",
        tower_redis_session::SessionId::parse(&id).unwrap().digest()
    );

    let mut rules = vec![
        ("too_large", StatusCode::BAD_REQUEST),
        ("too_many", StatusCode::BAD_REQUEST),
        ("session_too_large", StatusCode::BAD_REQUEST),
        ("not_an_integer", StatusCode::INTERNAL_SERVER_ERROR),
        ("reserved", StatusCode::INTERNAL_SERVER_ERROR),
        ("empty_name", StatusCode::INTERNAL_SERVER_ERROR),
        ("user_id", StatusCode::INTERNAL_SERVER_ERROR),
    ];
    if cfg!(feature = "serde") {
        rules.push(("json", StatusCode::INTERNAL_SERVER_ERROR));
    }
    // Last: the request ends the session.
    rules.push(("after_destroy", StatusCode::INTERNAL_SERVER_ERROR));
    for (rule, expected) in rules {
        let (status, _, body) = send(rule, Some(&id)).await;
        assert_eq!(status, expected, "{rule}: {body}");
        assert!(!body.is_empty(), "{rule}: the body says what was refused");
        assert_body_reveals_none(rule, &body, &["hunter2", &id, &key, &key[8..20]]);
    }
}
