//! Probes, seventh round: encryption at rest where a counter or a rotation meets it, CSRF
//! tokens stored by another program, and the cookie and cache headers of the layer's
//! own answers. Each probe runs against a `redis-server` of its own.
//!
//! A probe that shows a broken promise is `#[ignore]`d with what it shows; run it with
//! `--ignored`.

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::Query,
    routing::{get, post},
    Router,
};
use fred::prelude::*;
use http::StatusCode;
use tower_redis_session::{KeyRing, Session, SessionError};

use crate::support::{assert_none, TestApp, Topology};

const K1: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE";

/// The shared test app, encrypting under `K1`.
async fn encrypted_app(client: Client) -> TestApp {
    TestApp::with_client(client, true, |b| b.encryption(KeyRing::parse(K1).unwrap())).await
}

// ---------------------------------------------------------------------------------------
// Encryption at rest and counters

/// "Counter fields stay plaintext integers so HINCRBY keeps working" and "fields written
/// by `increment` are plaintext integers": a counter a session starts with (the quick
/// start's page-view counter), and every counter a login carries to the new ID, must
/// be stored as a plaintext integer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_encryption_every_counter_is_stored_as_a_plaintext_integer() {
    let redis = Topology::Single.start().await;
    let app = encrypted_app(redis.client().await).await;
    let mut problems = Vec::new();

    let res = app.post("/incr/views", None).await;
    assert_eq!((res.status, res.body.as_str()), (StatusCode::OK, "1"));
    let id = res.new_id().unwrap();
    let stored = app.hash(&id).await["views"].clone();
    if stored != "1" {
        problems.push(format!("a new session's counter is stored as {stored:?}"));
    }
    app.post("/incr/views", Some(&id)).await;
    let res = app.post("/login/ferris", Some(&id)).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let new = res.new_id().unwrap();
    let stored = app.hash(&new).await["views"].clone();
    if stored != "2" {
        problems.push(format!(
            "a counter carried by a login is stored as {stored:?}"
        ));
    }
    assert_none(&problems);
}

/// "N concurrent increments add exactly N" holds with encryption too, the guide says
/// counters stay plaintext for that. Two increments of one session, the first loaded
/// before the second saves: on a session just started by an increment, and right after
/// a login, both must count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_encryption_concurrent_increments_after_creation_or_login_all_count() {
    let redis = Topology::Single.start().await;
    let app = Arc::new(encrypted_app(redis.client().await).await);
    let mut problems = Vec::new();

    let id = app.post("/incr/n", None).await.new_id().unwrap();
    let held = app.hold("POST", "/gated/incr/n", &id).await;
    assert_eq!(app.post("/incr/n", Some(&id)).await.status, StatusCode::OK);
    assert_eq!(app.release(held).await.status, StatusCode::OK);
    let n = app.get("/read/n", Some(&id)).await.body;
    if n != "3" {
        problems.push(format!(
            "after creation: 1 + two concurrent increments reads {n}"
        ));
    }

    let res = app.post("/login/ferris", Some(&id)).await;
    let id = res.new_id().unwrap();
    let before: i64 = app.get("/read/n", Some(&id)).await.body.parse().unwrap();
    let held = app.hold("POST", "/gated/incr/n", &id).await;
    assert_eq!(app.post("/incr/n", Some(&id)).await.status, StatusCode::OK);
    assert_eq!(app.release(held).await.status, StatusCode::OK);
    let after: i64 = app.get("/read/n", Some(&id)).await.body.parse().unwrap();
    if after != before + 2 {
        problems.push(format!(
            "after a login: {before} + two concurrent increments reads {after}"
        ));
    }
    assert_none(&problems);
}

// ---------------------------------------------------------------------------------------
// CSRF tokens

async fn csrf(session: Session) -> Result<String, SessionError> {
    session.csrf_token()
}

async fn verify(session: Session, Query(q): Query<HashMap<String, String>>) -> String {
    let token = q.get("csrf").map_or("", String::as_str);
    session.verify_csrf_token(token).to_string()
}

async fn csrf_app(client: Client) -> TestApp {
    TestApp::with_client(client, true, |b| b)
        .await
        .with_routes(|_| {
            Router::new()
                .route("/csrf", get(csrf))
                .route("/verify", post(verify))
        })
}

/// `verify_csrf_token` is "`false` for a session without one", and the stored token is
/// "43 characters of URL-safe base64". A session whose `csrf_token` another program
/// left empty has no token: a form posted without one (or with an empty one) must not
/// verify, and the page must be given a real token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_stored_csrf_token_never_verifies_a_missing_one() {
    let redis = Topology::Single.start().await;
    let app = csrf_app(redis.client().await).await;
    let id = app.login().await;
    let _: () = app
        .client
        .hset(app.key(&id), ("csrf_token", ""))
        .await
        .unwrap();
    let mut problems = Vec::new();
    for path in ["/verify", "/verify?csrf="] {
        let verdict = app.post(path, Some(&id)).await.body;
        if verdict != "false" {
            problems.push(format!("{path} verifies: {verdict}"));
        }
    }
    let token = app.get("/csrf", Some(&id)).await.body;
    if token.len() != 43 {
        problems.push(format!("the page is given the token {token:?}"));
    }
    assert_none(&problems);
}

// ---------------------------------------------------------------------------------------
// Session limits under concurrent requests

/// The limits hold for the stored session, not only for each request's copy: requests
/// of one session that each add a field within the limits, all loaded before any saves
/// (a single-page app's parallel requests), would together pass them. The first save
/// that fits is applied; the others answer 409 and write nothing; the session lives on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_changes_within_the_limits_never_lose_the_session() {
    use axum::extract::{Path, State};
    use tokio::sync::Barrier;
    const PARALLEL: usize = 16;
    async fn add(
        State(barrier): State<Arc<Barrier>>,
        session: Session,
        Path(field): Path<String>,
    ) -> Result<&'static str, SessionError> {
        barrier.wait().await;
        session.insert(&field, "x".repeat(90))?;
        Ok("ok")
    }
    let redis = Topology::Single.start().await;
    let barrier = Arc::new(Barrier::new(PARALLEL));
    let app = Arc::new(
        TestApp::with_client(redis.client().await, true, |b| {
            b.max_session_size(100).max_value_size(100)
        })
        .await
        .with_routes(move |_| {
            Router::new()
                .route("/add/{field}", post(add))
                .with_state(barrier)
        }),
    );
    let id = app.post("/set/a/1", None).await.new_id().unwrap();
    let tasks: Vec<_> = (0..PARALLEL)
        .map(|n| {
            let (app, id) = (Arc::clone(&app), id.clone());
            tokio::spawn(async move { app.post(&format!("/add/f{n}"), Some(&id)).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap().status);
    }
    let accepted = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!(
        (accepted, refused),
        (1, PARALLEL - 1),
        "one 90-byte field fits in 100 bytes: {statuses:?}"
    );
    let res = app.get("/read/a", Some(&id)).await;
    assert!(
        res.body == "1" && !res.clears_cookie(),
        "{accepted} of {PARALLEL} changes accepted ({statuses:?}); then the session reads {:?} and the response sends {:?}",
        res.body,
        res.set_cookie()
    );
}

/// The same for a rotation: a login that adds a field within the limits, while another
/// request of the session grew it meanwhile, would copy a session past them (and past
/// the room a load leaves for counters that grew). It answers 409 and changes nothing;
/// the session, with the other request's change, lives on under its ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_never_copies_a_session_past_the_limits() {
    use axum::extract::{Path, State};
    async fn add_and_rotate(
        State(gate): State<Arc<crate::support::Gate>>,
        session: Session,
        Path(field): Path<String>,
    ) -> Result<&'static str, SessionError> {
        gate.pass().await;
        session.insert(&field, "r".repeat(499))?;
        session.rotate_id();
        Ok("ok")
    }
    let redis = Topology::Single.start().await;
    let gate = Arc::new(crate::support::Gate::default());
    let app = {
        let gate = Arc::clone(&gate);
        Arc::new(
            TestApp::with_client(redis.client().await, true, |b| {
                b.max_session_size(1000).max_fields(4)
            })
            .await
            .with_routes(move |_| {
                Router::new()
                    .route("/add-rotate/{field}", post(add_and_rotate))
                    .with_state(gate)
            }),
        )
    };
    // 500 bytes stored; the login sees 500 and adds 500.
    let id = app
        .post(&format!("/set/x/{}", "v".repeat(499)), None)
        .await
        .new_id()
        .unwrap();
    let login = {
        let (app, id) = (Arc::clone(&app), id.clone());
        tokio::spawn(async move { app.post("/add-rotate/r", Some(&id)).await })
    };
    gate.arrived.notified().await;
    // Meanwhile another request adds 500: 1000 stored, within the limit.
    let grown = app
        .post(&format!("/set/y/{}", "w".repeat(499)), Some(&id))
        .await;
    assert_eq!(grown.status, StatusCode::OK);
    gate.release.notify_one();
    let login = login.await.unwrap();
    assert_eq!(
        login.status,
        StatusCode::CONFLICT,
        "1500 bytes would pass 1000 (and the room a load leaves for counters)"
    );
    assert!(login.set_cookie().is_none(), "{:?}", login.set_cookie());
    assert_eq!(app.get("/read/y", Some(&id)).await.body, "w".repeat(499));
    assert_eq!(app.get("/read/r", Some(&id)).await.body, "");
}
