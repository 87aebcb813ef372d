//! Lazy mode (`lazy_load(true)`): a request loads its session only when its handler asks
//! for it. One that never asks costs no round trip and leaves the TTL and the cookie
//! alone; one that asks pays the round trips of the crate's per-request table and gets
//! the responses of the default mode.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::{Path, Request},
    routing::{get, post},
    Router,
};
use fred::prelude::*;
use http::{header, Response, StatusCode};
use http_body_util::BodyExt as _;
use tower::{ServiceBuilder, ServiceExt as _};
use tower_redis_session::{RedisSessionLayerBuilder, Session, SessionError, SessionRejection};

use crate::support::{self, reset_stats, round_trips, RedisServer, Target, TestApp, Topology};

type Configure = fn(RedisSessionLayerBuilder) -> RedisSessionLayerBuilder;

/// The test app in lazy mode, with the routes below besides the usual ones.
async fn lazy_app(target: &impl Target, configure: Configure) -> TestApp {
    TestApp::with(target, |b| configure(b).lazy_load(true))
        .await
        .with_routes(|_| lazy_routes())
}

fn lazy_routes() -> Router {
    Router::new()
        .route("/lazy/two", get(two_extractors))
        .route("/lazy/optional", get(optional))
        .route("/lazy/join", get(join_loads))
        .route("/lazy/write-first/{field}/{value}", post(write_first))
        .route("/lazy/read-unloaded", get(read_unloaded))
        .route("/lazy/destroy-unloaded", post(destroy_unloaded))
        .route("/lazy/answer-anyway", get(answer_anyway))
        .route("/lazy/own-rejection", get(own_rejection))
        .route("/lazy/cacheable", get(cacheable))
}

async fn two_extractors(a: Session, b: Session) -> String {
    let (a, b) = (a.get("username"), b.get("username"));
    format!("{} {}", a.unwrap_or_default(), b.unwrap_or_default())
}

async fn optional(session: Option<Session>) -> String {
    session
        .and_then(|s| s.get("username"))
        .unwrap_or_else(|| "none".into())
}

fn session_of(req: &Request) -> Session {
    req.extensions()
        .get::<Session>()
        .cloned()
        .expect("behind the layer")
}

/// Two clones of the handle ask for the load at the same time.
async fn join_loads(req: Request) -> String {
    let a = session_of(&req);
    let b = a.clone();
    let (ra, rb) = tokio::join!(a.load(), b.load());
    format!(
        "{:?} {:?} {}",
        ra.is_ok(),
        rb.is_ok(),
        b.get("username").unwrap_or_default()
    )
}

/// Writes before loading, then loads and writes again; says what the first write got.
async fn write_first(
    Path((field, value)): Path<(String, String)>,
    req: Request,
) -> Result<String, SessionError> {
    let session = session_of(&req);
    let needed = session.needs_load();
    let first = match session.insert(&field, value.clone()) {
        Ok(()) => "accepted".to_owned(),
        Err(err) => format!("refused ({err})"),
    };
    let not_loaded = matches!(session.increment("n", 1), Err(SessionError::NotLoaded));
    session.load().await.expect("the store is up");
    session.insert(&field, value)?;
    Ok(format!(
        "needs_load={needed} first={first} increment_refused={not_loaded}"
    ))
}

async fn read_unloaded(req: Request) -> String {
    session_of(&req).get("username").unwrap_or_default()
}

async fn destroy_unloaded(req: Request) -> &'static str {
    session_of(&req).destroy();
    "logged out"
}

/// Ignores a failed load and answers 200: the layer must not let that through.
async fn answer_anyway(req: Request) -> &'static str {
    let _ = session_of(&req).load().await;
    "ok"
}

/// Takes the extractor's rejection and answers with its own response.
async fn own_rejection(session: Result<Session, SessionRejection>) -> (StatusCode, String) {
    match session {
        Ok(s) => (StatusCode::OK, s.get("username").unwrap_or_default()),
        Err(err) => (StatusCode::IM_A_TEAPOT, err.to_string()),
    }
}

/// A page a shared cache may store.
async fn cacheable(session: Session) -> ([(header::HeaderName, &'static str); 1], String) {
    let name = session.get("username").unwrap_or_default();
    ([(header::CACHE_CONTROL, "max-age=300")], name)
}

async fn last_accessed(app: &TestApp, id: &str) -> String {
    app.hash(id).await["last_accessed_at"].clone()
}

/// A live session (idle TTL 100 s) whose key has 50 s left and whose last access is
/// over a second old: its ID and `last_accessed_at`.
async fn aged_session(app: &TestApp) -> (String, String) {
    let id = app.login().await;
    let _: () = app
        .client
        .pexpire(app.key(&id), 50_000, None)
        .await
        .unwrap();
    let stamp = last_accessed(app, &id).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    (id, stamp)
}

async fn a_request_that_never_asks_for_its_session_costs_nothing_and_moves_nothing(
    topology: Topology,
) {
    let redis = topology.start_exclusive().await;
    let app = lazy_app(&redis, |b| b.idle_ttl(Duration::from_secs(100))).await;
    let (id, stamp) = aged_session(&app).await;

    reset_stats(&app.client).await;
    let res = app.get("/none", Some(&id)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.set_cookie(), None);
    assert_eq!(round_trips(&app.client).await, 0);
    let ttl = app.pttl(&id).await;
    assert!(ttl <= 50_000, "the TTL was not refreshed, got {ttl}");
    assert_eq!(last_accessed(&app, &id).await, stamp);

    // A cookie for no session is left alone too: nobody looked.
    let unknown = tower_redis_session::SessionId::generate().to_string();
    reset_stats(&app.client).await;
    let res = app.get("/none", Some(&unknown)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.set_cookie(), None);
    assert_eq!(round_trips(&app.client).await, 0);
    app.check_keyspace().await;
}

async fn a_read_through_the_extractor_is_one_round_trip_and_refreshes_the_ttl(topology: Topology) {
    let redis = topology.start_exclusive().await;
    let app = lazy_app(&redis, |b| b.idle_ttl(Duration::from_secs(100))).await;
    let (id, stamp) = aged_session(&app).await;

    reset_stats(&app.client).await;
    let res = app.get("/read/username", Some(&id)).await;
    assert_eq!(res.body, "ferris");
    assert_eq!(res.set_cookie(), None);
    assert_eq!(round_trips(&app.client).await, 1);
    let ttl = app.pttl(&id).await;
    assert!(ttl > 99_000, "sliding TTL pushed back, got {ttl}");
    assert_ne!(last_accessed(&app, &id).await, stamp);
    app.check_keyspace().await;
}

/// What a user sees of one request: status, body, what it does to the cookie, and the
/// round trips it cost.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: StatusCode,
    body: String,
    cookie: &'static str,
    round_trips: u64,
}

/// The cookie a request carries in a scenario.
#[derive(Debug, Clone, Copy)]
enum Carrying {
    Nothing,
    Live,
    Unknown,
    RotatedAway,
    LoggedOut,
}

async fn seen(app: &TestApp, method: &str, path: &str, carrying: Carrying) -> Seen {
    let sid = match carrying {
        Carrying::Nothing => None,
        Carrying::Live => Some(app.login().await),
        Carrying::Unknown => Some(tower_redis_session::SessionId::generate().to_string()),
        Carrying::RotatedAway => {
            let id = app.login().await;
            assert_eq!(app.post("/rotate", Some(&id)).await.status, StatusCode::OK);
            Some(id)
        }
        Carrying::LoggedOut => {
            let id = app.login().await;
            assert_eq!(app.post("/logout", Some(&id)).await.status, StatusCode::OK);
            Some(id)
        }
    };
    reset_stats(&app.client).await;
    let res = app.send(method, path, sid.as_deref()).await;
    let round_trips = round_trips(&app.client).await;
    let cookie = if res.set_cookie().is_none() {
        "untouched"
    } else if res.clears_cookie() {
        "cleared"
    } else if res.new_id().is_some_and(|new| Some(new) != sid) {
        "new ID"
    } else {
        "same ID"
    };
    Seen {
        status: res.status,
        body: res.body,
        cookie,
        round_trips,
    }
}

/// Every row of the per-request table, and the responses around it (409 on a refused
/// change, markers of rotated and logged-out sessions, reserved fields), in both modes
/// side by side.
async fn a_request_that_uses_its_session_sees_and_pays_what_the_default_mode_does(
    topology: Topology,
) {
    let redis = topology.start_exclusive().await;
    let eager = TestApp::new(&redis).await;
    let lazy = lazy_app(&redis, |b| b).await;
    let cases: &[(&str, &str, Carrying)] = &[
        ("GET", "/read/username", Carrying::Nothing),
        ("POST", "/set/username/ferris", Carrying::Nothing),
        ("GET", "/read/username", Carrying::Live),
        ("GET", "/whoami", Carrying::Live),
        ("POST", "/incr/n", Carrying::Live),
        ("POST", "/remove/username", Carrying::Live),
        ("POST", "/ttl/60", Carrying::Live),
        ("POST", "/set/session_ttl/9", Carrying::Live),
        ("POST", "/rotate", Carrying::Live),
        ("POST", "/set_and_rotate/a/1", Carrying::Live),
        ("POST", "/login/alice", Carrying::Live),
        ("POST", "/logout", Carrying::Live),
        ("GET", "/whoami", Carrying::Unknown),
        ("POST", "/set/a/1", Carrying::Unknown),
        ("GET", "/whoami", Carrying::RotatedAway),
        ("POST", "/set/a/1", Carrying::RotatedAway),
        ("POST", "/logout", Carrying::RotatedAway),
        ("GET", "/whoami", Carrying::LoggedOut),
        ("POST", "/incr/n", Carrying::LoggedOut),
    ];
    for &(method, path, carrying) in cases {
        let want = seen(&eager, method, path, carrying).await;
        let got = seen(&lazy, method, path, carrying).await;
        assert_eq!(got, want, "{method} {path} carrying {carrying:?}");
    }
}

async fn the_load_runs_once_however_many_extractors_and_clones_ask(topology: Topology) {
    let redis = topology.start_exclusive().await;
    let app = lazy_app(&redis, |b| b).await;
    let id = app.login().await;
    for (path, body) in [
        ("/lazy/two", "ferris ferris"),
        ("/lazy/join", "true true ferris"),
        ("/lazy/optional", "ferris"),
    ] {
        reset_stats(&app.client).await;
        let res = app.get(path, Some(&id)).await;
        assert_eq!(res.status, StatusCode::OK, "{path}");
        assert_eq!(res.body, body, "{path}");
        assert_eq!(round_trips(&app.client).await, 1, "{path}");
    }
    app.check_keyspace().await;
}

async fn a_request_without_a_cookie_writes_at_once(topology: Topology) {
    let redis = topology.start_exclusive().await;
    let app = lazy_app(&redis, |b| b).await;
    reset_stats(&app.client).await;
    let res = app.post("/lazy/write-first/username/ferris", None).await;
    assert_eq!(
        res.body,
        "needs_load=false first=accepted increment_refused=false"
    );
    assert_eq!(round_trips(&app.client).await, 1);
    let id = res.new_id().expect("the new session's cookie");
    assert_eq!(app.hash(&id).await["username"], "ferris");
    assert_eq!(app.hash(&id).await["n"], "1");
    // The usual login: a first request without a cookie, then a login that rotates.
    let id = app.login_as("alice").await;
    assert_eq!(app.get("/whoami", Some(&id)).await.status, StatusCode::OK);
    app.check_keyspace_with_indexes().await;
}

async fn a_change_before_the_load_is_refused_and_records_nothing(topology: Topology) {
    let redis = topology.start_exclusive().await;
    let app = lazy_app(&redis, |b| b).await;
    let id = app.login().await;
    reset_stats(&app.client).await;
    let res = app.post("/lazy/write-first/color/blue", Some(&id)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        res.body,
        "needs_load=true first=refused (the session is not loaded yet: call `Session::load` first) increment_refused=true"
    );
    assert_eq!(round_trips(&app.client).await, 2, "load + save");
    let hash = app.hash(&id).await;
    assert_eq!(hash["color"], "blue");
    assert!(
        !hash.contains_key("n"),
        "the refused increment left nothing"
    );
    app.check_keyspace().await;
}

/// A handler that reads (or logs out) without loading must not answer as if the session
/// were empty: the response is a 500, and nothing in Redis moves.
async fn a_session_used_before_its_load_answers_500_and_moves_nothing(topology: Topology) {
    let redis = topology.start_exclusive().await;
    let app = lazy_app(&redis, |b| b).await;
    let id = app.login().await;
    let ttl = app.pttl(&id).await;
    for (method, path) in [
        ("GET", "/lazy/read-unloaded"),
        ("POST", "/lazy/destroy-unloaded"),
    ] {
        reset_stats(&app.client).await;
        let res = app.send(method, path, Some(&id)).await;
        assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert_eq!(res.body, "session used before it was loaded\n");
        assert_eq!(res.set_cookie(), None, "{path}");
        assert_eq!(round_trips(&app.client).await, 0, "{path}");
    }
    assert!(app.is_live(&id).await, "the skipped logout did not happen");
    assert!(app.pttl(&id).await <= ttl);
    // Without a cookie there is nothing to load: reading is fine.
    let res = app.get("/lazy/read-unloaded", None).await;
    assert_eq!(res.status, StatusCode::OK);
    app.check_keyspace().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_lazy_load_answers_503_whatever_the_handler_does() {
    let mut server = RedisServer::start();
    let app = lazy_app(&server, |b| b.command_timeout(Duration::from_millis(500))).await;
    let id = app.login().await;
    server.stop();

    for path in [
        "/read/username",
        "/lazy/optional",
        "/lazy/answer-anyway",
        "/lazy/own-rejection",
    ] {
        let res = app.get(path, Some(&id)).await;
        assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(res.headers["retry-after"], "1", "{path}");
        assert_eq!(
            res.body, "session store unavailable, please retry\n",
            "{path}"
        );
        assert!(
            res.error.is_some(),
            "{path}: the error is in the extensions"
        );
        assert_eq!(res.set_cookie(), None, "{path}");
    }
    // A request that never asks for its session does not need Redis.
    let res = app.get("/none", Some(&id)).await;
    assert_eq!(res.status, StatusCode::OK);

    server.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let res = app.post("/set/a/1", None).await;
        if res.status == StatusCode::OK {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no recovery in 15 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_lazy_load_answers_with_the_configured_error_response() {
    let mut server = RedisServer::start();
    let app = lazy_app(&server, |b| {
        b.command_timeout(Duration::from_millis(300))
            .error_response(|err| {
                let mut res = http::Response::new("down for a moment".into());
                *res.status_mut() = StatusCode::BAD_GATEWAY;
                let kind = format!("{:?}", err.kind()).parse().unwrap();
                res.headers_mut().insert("x-store", kind);
                res
            })
    })
    .await;
    let id = app.login().await;
    server.stop();
    for path in ["/read/username", "/lazy/answer-anyway"] {
        let res = app.get(path, Some(&id)).await;
        assert_eq!(res.status, StatusCode::BAD_GATEWAY, "{path}");
        assert!(res.headers.contains_key("x-store"), "{path}");
        assert_eq!(res.body, "down for a moment", "{path}");
    }
}

/// A persistent cookie's `Max-Age` is refreshed by a request that loads its session, as
/// in the default mode; one that never loads it leaves the cookie (and the TTL) alone;
/// a response a shared cache may store never carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_cookie_follows_the_ttl_only_when_the_session_is_loaded() {
    let redis = Topology::Single.start().await;
    let app = lazy_app(&redis, |b| {
        b.persistent_cookie(true).idle_ttl(Duration::from_secs(600))
    })
    .await;
    let id = app.login().await;
    let res = app.get("/read/username", Some(&id)).await;
    let set = res.set_cookie().expect("Max-Age refreshed");
    assert!(
        set.ends_with("Max-Age=600") || set.ends_with("Max-Age=599"),
        "{set}"
    );
    assert_eq!(app.get("/none", Some(&id)).await.set_cookie(), None);
    let res = app.get("/lazy/cacheable", Some(&id)).await;
    assert_eq!(res.body, "ferris");
    assert_eq!(res.set_cookie(), None, "a shared cache may store this page");
}

/// Without axum: a plain tower service behind the layer loads its session with
/// `Session::load`.
async fn plain(req: http::Request<String>) -> Result<Response<String>, Infallible> {
    let session = req.extensions().get::<Session>().cloned().unwrap();
    let body = match req.uri().path() {
        "/none" => "nothing".to_owned(),
        "/read" => match session.load().await {
            Ok(()) => session.get("username").unwrap_or_default(),
            Err(err) => err.to_string(),
        },
        "/incr" => {
            let refused = session.increment("n", 1).unwrap_err();
            session.load().await.unwrap();
            format!("{refused}; then {}", session.increment("n", 1).unwrap())
        }
        "/login" => {
            session.load().await.unwrap();
            session.insert("username", "ferris").unwrap();
            "ok".to_owned()
        }
        _ => unreachable!(),
    };
    Ok(Response::new(body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tower_service_without_axum_loads_its_session_with_load() {
    let redis = Topology::Single.start_exclusive().await;
    let client = redis.client().await;
    let layer = support::layer(client.clone())
        .lazy_load(true)
        .build()
        .unwrap();
    layer.load_scripts().await.unwrap();
    let service = ServiceBuilder::new()
        .layer(layer)
        .service_fn(plain)
        .boxed_clone();
    let send = |path: &'static str, sid: Option<String>| {
        let service = service.clone();
        async move {
            let mut req = http::Request::get(path);
            if let Some(sid) = sid {
                req = req.header(header::COOKIE, format!("sid={sid}"));
            }
            let res = service.oneshot(req.body(String::new()).unwrap()).await;
            let (parts, body) = res.unwrap().into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let cookie = parts
                .headers
                .get(header::SET_COOKIE)
                .map(|v| v.to_str().unwrap().to_owned());
            (String::from_utf8(body.to_vec()).unwrap(), cookie)
        }
    };

    reset_stats(&client).await;
    let (body, cookie) = send("/login", None).await;
    assert_eq!(body, "ok");
    assert_eq!(round_trips(&client).await, 1);
    let cookie = cookie.expect("a new session");
    let id = cookie.split(';').next().unwrap()["sid=".len()..].to_owned();

    for (path, want, trips) in [
        ("/none", "nothing".to_owned(), 0),
        ("/read", "ferris".to_owned(), 1),
        ("/incr", format!("{}; then 1", SessionError::NotLoaded), 2),
    ] {
        reset_stats(&client).await;
        let (body, cookie) = send(path, Some(id.clone())).await;
        assert_eq!(body, want, "{path}");
        assert_eq!(cookie, None, "{path}");
        assert_eq!(round_trips(&client).await, trips, "{path}");
    }
}

/// The other way to spare requests that need no session (the guide's advice): keep the
/// layer off their routes with `route_layer` (routes added after it, and requests that
/// match no route, never see it) or by nesting the routes that need it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_kept_outside_the_layer_cost_nothing_in_the_default_mode() {
    let redis = Topology::Single.start_exclusive().await;
    let app = TestApp::new(&redis).await;
    let id = app.login().await;
    let layer = || {
        support::layer(app.client.clone())
            .key_prefix(&app.prefix)
            .build()
            .unwrap()
    };
    let health = || async { "ok" };
    let account = |session: Session| async move { session.get("username").unwrap_or_default() };
    let with_route_layer = Router::new()
        .route("/account", get(account))
        .route_layer(layer())
        .route("/health", get(health));
    let nested = Router::new()
        .nest(
            "/app",
            Router::new().route("/account", get(account)).layer(layer()),
        )
        .route("/health", get(health));
    for (name, router) in [("route_layer", with_route_layer), ("nest", nested)] {
        let send = |path: &str| {
            let req = http::Request::get(path)
                .header(header::COOKIE, format!("sid={id}"))
                .body(axum::body::Body::empty())
                .unwrap();
            router.clone().oneshot(req)
        };
        for (path, status, trips) in [
            ("/health", StatusCode::OK, 0),
            ("/nowhere", StatusCode::NOT_FOUND, 0),
            ("/account", StatusCode::OK, 1),
            ("/app/account", StatusCode::OK, 1),
        ] {
            reset_stats(&app.client).await;
            let res = send(path).await.unwrap();
            let trips_seen = round_trips(&app.client).await;
            let (want_status, want_trips) = match (name, path) {
                ("route_layer", "/app/account") | ("nest", "/account") => {
                    (StatusCode::NOT_FOUND, 0)
                }
                _ => (status, trips),
            };
            assert_eq!(res.status(), want_status, "{name} {path}");
            assert_eq!(trips_seen, want_trips, "{name} {path}");
            assert!(
                !res.headers().contains_key(header::SET_COOKIE),
                "{name} {path}"
            );
        }
    }
}

session_tests! {
    a_request_that_never_asks_for_its_session_costs_nothing_and_moves_nothing,
    a_read_through_the_extractor_is_one_round_trip_and_refreshes_the_ttl,
    a_request_that_uses_its_session_sees_and_pays_what_the_default_mode_does,
    the_load_runs_once_however_many_extractors_and_clones_ask,
    a_request_without_a_cookie_writes_at_once,
    a_change_before_the_load_is_refused_and_records_nothing,
    a_session_used_before_its_load_answers_500_and_moves_nothing,
}
