//! Probes, tenth round: the size check against the stored session reading values that
//! look encrypted at rest. Each probe runs against a `redis-server` of its own.
//!
//! A probe that shows a broken promise is `#[ignore]`d with what it shows; run it with
//! `--ignored`.

use std::sync::Arc;

use http::StatusCode;

use crate::support::{
    gates::{gated_routes, hold, release, Gates},
    RedisServer, TestApp,
};

/// Promise (`max_session_size`: "parallel requests may each fit, but not together: the
/// later ones answer 409"), with no encryption at rest: a handler's plain value that
/// happens to start with `enc:v1:` counts at its own length.
///
/// Steps: limit 20,000 bytes, no encryption; a session with `u` = `1`. Requests A and B,
/// loaded at the same time, each set a field to 13,000 bytes of text starting with
/// `enc:v1:k:` (13,003 bytes as each sees the session). Together 26,006 bytes: the later
/// save must answer 409. It answers 200: the check reads each value as a ciphertext,
/// at about 3/4 of its length less 40 (9,703 bytes). The session, past what a load
/// accepts, is then lost: the next request finds no session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_saves_of_plain_values_that_look_encrypted_never_pass_the_size_limit() {
    let redis = RedisServer::start();
    let gates = Gates::default();
    let app = Arc::new(
        TestApp::with(&redis, |b| b.max_session_size(20_000).max_fields(4))
            .await
            .with_routes(gated_routes(gates.clone())),
    );
    let id = app.post("/set/u/1", None).await.new_id().unwrap();
    let (a, b) = gates
        .both(&app, &id, "/g/a/enc/x/13000", "/g/b/enc/y/13000")
        .await;
    let stored = user_bytes(&app, &id).await;
    let read = app.get("/read/u", Some(&id)).await;
    assert_eq!(
        b.status,
        StatusCode::CONFLICT,
        "A answered {}, B answered {}: the stored session holds {stored} bytes of user \
         fields for a limit of 20,000; the next read of `u` answers {} {:?} (new cookie: \
         {:?})",
        a.status,
        b.status,
        read.status,
        read.body,
        read.new_id().is_some(),
    );
}

/// Promise (guide, "The size limits hold for the stored session too": changes that fit
/// their request's copy but, with changes other requests saved meanwhile, would take the
/// stored session past them are refused with `409`), for a rotation (a login).
///
/// Steps: limit 1,000 bytes, 4 fields; a session with `u` = `1`. Request A (which sets
/// `x` to 500 bytes and rotates the ID) and request B (which sets `y` to 500 bytes) load
/// the session at the same time; B is saved first. A's copy would hold 1,004 bytes: its
/// rotation must answer 409. It answers 200: the rotation's check allows 20 bytes a field
/// (counted over the field limit plus 16) past the limit, here 400, for counters, whatever
/// the fields hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_that_with_a_parallel_save_passes_the_size_limit_answers_409() {
    let redis = RedisServer::start();
    let gates = Gates::default();
    let app = Arc::new(
        TestApp::with(&redis, |b| b.max_session_size(1_000).max_fields(4))
            .await
            .with_routes(gated_routes(gates.clone())),
    );
    let id = app.post("/set/u/1", None).await.new_id().unwrap();
    let a = hold(&app, &gates.a, "/g/a/rotate/x/500", &id).await;
    let b = hold(&app, &gates.b, "/g/b/fill/y/500", &id).await;
    let b = release(&gates.b, b).await;
    let a = release(&gates.a, a).await;
    let stored = match a.new_id() {
        Some(new) => user_bytes(&app, &new).await,
        None => user_bytes(&app, &id).await,
    };
    assert_eq!(
        a.status,
        StatusCode::CONFLICT,
        "B answered {}, A (the rotation) answered {} (new ID: {}); the stored session \
         holds {stored} bytes of user fields for a limit of 1,000",
        b.status,
        a.status,
        a.new_id().is_some(),
    );
}

/// Bytes of user field names and values in a session's hash, as stored.
async fn user_bytes(app: &TestApp, id: &str) -> usize {
    app.hash(id)
        .await
        .iter()
        .filter(|(name, _)| !tower_redis_session::RESERVED_FIELDS.contains(&name.as_str()))
        .map(|(name, value)| name.len() + value.len())
        .sum()
}
