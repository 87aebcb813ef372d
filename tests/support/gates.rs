//! Two requests of one session held at once between their load and their change:
//! gates `a` and `b`, and a route that waits at one, then changes the session.

use std::{sync::Arc, time::Duration};

use axum::{extract::Path, routing::post, Router};
use tower_redis_session::{Session, SessionError};

use super::{Gate, TestApp, TestResponse};

/// Two gates, `a` and `b`, so that two requests can be held between their load and their
/// change at once.
#[derive(Clone, Default)]
pub struct Gates {
    pub a: Arc<Gate>,
    pub b: Arc<Gate>,
}

impl Gates {
    fn of(&self, name: &str) -> Arc<Gate> {
        Arc::clone(if name == "a" { &self.a } else { &self.b })
    }

    /// Two requests of session `sid` loaded at once: `a` (a gated route at gate `a`) and
    /// `b` (at gate `b`) are both held with their session loaded, then `a` is let go,
    /// then `b`. Their responses.
    pub async fn both(
        &self,
        app: &Arc<TestApp>,
        sid: &str,
        a: &str,
        b: &str,
    ) -> (TestResponse, TestResponse) {
        let held_a = hold(app, &self.a, a, sid).await;
        let held_b = hold(app, &self.b, b, sid).await;
        let a = release(&self.a, held_a).await;
        let b = release(&self.b, held_b).await;
        (a, b)
    }
}

/// `POST /g/{gate}/{op}/{field}/{arg}`: waits at gate `a` or `b`, then `incr` (by
/// `arg`), `set` (to `arg`), `fill` (to `arg` bytes of `x`), `enc` (to `arg` bytes of
/// plain text that starts like a value encrypted at rest: text a handler may well store,
/// e.g. one a user typed), or `rotate` (`fill`, then a new ID, as a login does).
pub fn gated_routes(gates: Gates) -> impl FnOnce(Arc<Gate>) -> Router {
    move |_| {
        Router::new().route(
            "/g/{gate}/{op}/{field}/{arg}",
            post(
                move |session: Session,
                      Path((gate, op, field, arg)): Path<(String, String, String, String)>| {
                    let gates = gates.clone();
                    async move {
                        gates.of(&gate).pass().await;
                        let len = || arg.parse::<usize>().unwrap();
                        match op.as_str() {
                            "incr" => {
                                session.increment(&field, arg.parse().unwrap())?;
                            }
                            "set" => session.insert(&field, arg.as_str())?,
                            "fill" => session.insert(&field, "x".repeat(len()))?,
                            "enc" => session.insert(&field, enc_like(len()))?,
                            "rotate" => {
                                session.insert(&field, "x".repeat(len()))?;
                                session.rotate_id();
                            }
                            _ => unreachable!(),
                        }
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

/// Sends `path` (a gated route at gate `gate`) with `sid`, and waits until its handler is
/// at the gate (its session loaded).
pub async fn hold(
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

/// Opens `gate` for the request [`hold`] holds there; its response.
pub async fn release(
    gate: &Arc<Gate>,
    held: tokio::task::JoinHandle<TestResponse>,
) -> TestResponse {
    gate.release.notify_one();
    held.await.unwrap()
}
