//! Probes, tenth round: the size check against the stored session reading values that
//! look encrypted at rest. Each probe runs against a `redis-server` of its own.
//!
//! A probe that shows a broken promise is `#[ignore]`d with what it shows; run it with
//! `--ignored`.

use std::{sync::Arc, time::Duration};

use axum::{extract::Path, routing::post, Router};
use http::StatusCode;
use tower_redis_session::{Session, SessionError};

use crate::support::{Gate, RedisServer, TestApp, TestResponse};

/// Two gates, `a` and `b`, so that two requests can be held between their load and their
/// change at once.
#[derive(Clone, Default)]
struct Gates {
    a: Arc<Gate>,
    b: Arc<Gate>,
}

impl Gates {
    fn of(&self, name: &str) -> Arc<Gate> {
        Arc::clone(if name == "a" { &self.a } else { &self.b })
    }
}

/// `POST /g/{gate}/{field}/{len}`: waits at gate `a` or `b`, then sets `field` to a text
/// of `len` bytes that starts with `enc:v1:k:` (text a handler may well store, e.g. one
/// a user typed).
fn gated_routes(gates: Gates) -> impl FnOnce(Arc<Gate>) -> Router {
    move |_| {
        Router::new().route(
            "/g/{gate}/{field}/{len}",
            post(
                move |session: Session, Path((gate, field, len)): Path<(String, String, usize)>| {
                    let gates = gates.clone();
                    async move {
                        gates.of(&gate).pass().await;
                        session.insert(&field, enc_like(len))?;
                        Ok::<_, SessionError>("ok")
                    }
                },
            ),
        )
    }
}

/// Plain text of `len` bytes that starts like a value encrypted at rest.
fn enc_like(len: usize) -> String {
    let head = "enc:v1:k:";
    format!("{head}{}", "A".repeat(len - head.len()))
}

async fn hold(
    app: &Arc<TestApp>,
    gate: &Arc<Gate>,
    path: &str,
    sid: &str,
) -> tokio::task::JoinHandle<TestResponse> {
    let (a, path, sid) = (Arc::clone(app), path.to_owned(), sid.to_owned());
    let held = tokio::spawn(async move { a.post(&path, Some(&sid)).await });
    tokio::time::timeout(Duration::from_secs(5), gate.arrived.notified())
        .await
        .expect("the held request loaded its session");
    held
}

async fn release(gate: &Arc<Gate>, held: tokio::task::JoinHandle<TestResponse>) -> TestResponse {
    gate.release.notify_one();
    held.await.unwrap()
}

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
#[ignore = "shows: without encryption, plain values starting with `enc:v1:` count at ~3/4 of their length, so parallel saves take a session past the limit and it is lost"]
async fn parallel_saves_of_plain_values_that_look_encrypted_never_pass_the_size_limit() {
    let redis = RedisServer::start();
    let gates = Gates::default();
    let app = Arc::new(
        TestApp::with(&redis, |b| b.max_session_size(20_000).max_fields(4))
            .await
            .with_routes(gated_routes(gates.clone())),
    );
    let id = app.post("/set/u/1", None).await.new_id().unwrap();
    let a = hold(&app, &gates.a, "/g/a/x/13000", &id).await;
    let b = hold(&app, &gates.b, "/g/b/y/13000", &id).await;
    let a = release(&gates.a, a).await;
    let b = release(&gates.b, b).await;
    let stored: usize = app
        .hash(&id)
        .await
        .iter()
        .filter(|(name, _)| !tower_redis_session::RESERVED_FIELDS.contains(&name.as_str()))
        .map(|(name, value)| name.len() + value.len())
        .sum();
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
