//! Encryption at rest (feature `encryption`) against a real redis-server.
use std::{collections::HashMap, sync::Arc};

use crate::support::{layer, request, RedisServer};
use axum::{
    extract::Path,
    routing::{get, post},
    Router,
};
use fred::prelude::*;
use http::{header, StatusCode};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;
use tower_redis_session::{DecryptFailure, KeyRing, Session, SessionError, SessionId};

const K1: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE";
const K2: &str = "k2:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI";

struct App {
    router: Router,
    client: Client,
}

async fn app(server: &RedisServer, ring: &str, policy: DecryptFailure) -> App {
    let client = server.client().await;
    let layer = layer(client.clone())
        .encryption(KeyRing::parse(ring).unwrap())
        .on_decrypt_failure(policy)
        .build()
        .unwrap();
    layer.load_scripts().await.unwrap();
    let router = Router::new()
        .route(
            "/set/{field}/{value}",
            post(
                |s: Session, Path((f, v)): Path<(String, String)>| async move {
                    s.insert(&f, v)?;
                    Ok::<_, SessionError>("ok")
                },
            ),
        )
        .route(
            "/incr/{field}",
            post(|s: Session, Path(f): Path<String>| async move {
                Ok::<_, SessionError>(s.increment(&f, 1)?.to_string())
            }),
        )
        .route(
            "/all",
            get(|s: Session| async move { format!("{}|{:?}", s.is_loaded(), s.fields()) }),
        )
        .layer(layer);
    App { router, client }
}

impl App {
    async fn send(
        &self,
        method: &str,
        path: &str,
        sid: Option<&str>,
    ) -> (StatusCode, String, Option<String>) {
        let res = self
            .router
            .clone()
            .oneshot(request(method, path, sid))
            .await
            .unwrap();
        let status = res.status();
        let cookie = res
            .headers()
            .get(header::SET_COOKIE)
            .map(|v| v.to_str().unwrap().split(';').next().unwrap()["sid=".len()..].to_owned());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned(), cookie)
    }

    fn key(id: &str) -> String {
        format!("session:{}", SessionId::parse(id).unwrap().digest())
    }

    async fn hash(&self, id: &str) -> HashMap<String, String> {
        self.client.hgetall(Self::key(id)).await.unwrap()
    }

    async fn hset(&self, id: &str, field: &str, value: &str) {
        let _: () = self
            .client
            .hset(Self::key(id), (field, value))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn values_are_unreadable_in_redis_and_intact_for_the_handler() {
    let server = RedisServer::start();
    let app = app(&server, K1, DecryptFailure::DropField).await;
    let (_, _, id) = app.send("POST", "/set/secret/hunter2-password", None).await;
    let id = id.unwrap();
    app.send("POST", "/set/note/second-value", Some(&id)).await;
    let hash = app.hash(&id).await;
    for (field, plain) in [("secret", "hunter2-password"), ("note", "second-value")] {
        assert!(hash[field].starts_with("enc:v1:k1:"), "{}", hash[field]);
        assert!(!hash[field].contains(plain));
    }
    assert!(hash.values().all(|v| !v.contains("hunter2")));
    let (_, body, _) = app.send("GET", "/all", Some(&id)).await;
    assert!(body.contains(r#"("secret", "hunter2-password")"#), "{body}");
    assert!(body.contains(r#"("note", "second-value")"#), "{body}");
}

#[tokio::test]
async fn key_rotation_logs_nobody_out() {
    let server = RedisServer::start();
    let old = app(&server, K1, DecryptFailure::DropField).await;
    let (_, _, id) = old.send("POST", "/set/a/alpha", None).await;
    let id = id.unwrap();
    old.send("POST", "/set/b/beta", Some(&id)).await;

    // Step 1: the new key first, the old one still decrypts.
    let both = app(&server, &format!("{K2},{K1}"), DecryptFailure::DropField).await;
    let (_, body, _) = both.send("GET", "/all", Some(&id)).await;
    assert!(body.contains("alpha") && body.contains("beta"), "{body}");
    // A write re-encrypts that field under the newest key.
    both.send("POST", "/set/a/alpha2", Some(&id)).await;
    let hash = both.hash(&id).await;
    assert!(hash["a"].starts_with("enc:v1:k2:"));
    assert!(hash["b"].starts_with("enc:v1:k1:"));

    // Step 3 too early: a field never rewritten is dropped (policy DropField)...
    let new_only = app(&server, K2, DecryptFailure::DropField).await;
    let (status, body, _) = new_only.send("GET", "/all", Some(&id)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.starts_with("true|") && body.contains("alpha2") && !body.contains("beta"),
        "{body}"
    );
    // ...or invalidates the session (policy RejectSession).
    let strict = app(&server, K2, DecryptFailure::RejectSession).await;
    let (status, body, cookie) = strict.send("GET", "/all", Some(&id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "false|[]");
    assert_eq!(cookie.as_deref(), Some(""), "cookie cleared");
}

#[tokio::test]
async fn tampered_swapped_or_moved_values_are_rejected_without_panic() {
    let server = RedisServer::start();
    let app = app(&server, K1, DecryptFailure::DropField).await;
    let (_, _, a) = app.send("POST", "/set/x/value-x", None).await;
    let a = a.unwrap();
    app.send("POST", "/set/y/value-y", Some(&a)).await;
    let (_, _, b) = app.send("POST", "/set/x/other-session", None).await;
    let b = b.unwrap();
    let ha = app.hash(&a).await;
    let hb = app.hash(&b).await;

    // Swap two fields of one session: both fail.
    app.hset(&a, "x", &ha["y"]).await;
    app.hset(&a, "y", &ha["x"]).await;
    let (status, body, _) = app.send("GET", "/all", Some(&a)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "true|[]"));

    // Move a value to another session: fails.
    app.hset(&b, "x", &ha["x"]).await;
    let (_, body, _) = app.send("GET", "/all", Some(&b)).await;
    assert_eq!(body, "true|[]");

    // Flip one byte anywhere in the ciphertext, truncate, or store plaintext: fails.
    let original = hb["x"].clone();
    let mut cases: Vec<String> = (7..original.len())
        .step_by(5)
        .map(|i| {
            let mut bytes = original.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            String::from_utf8(bytes).unwrap()
        })
        .collect();
    cases.push(original[..original.len() - 3].to_owned());
    cases.push("plaintext planted by a third party".to_owned());
    cases.push("enc:v1:k9:AAAA".to_owned());
    for case in cases {
        app.hset(&b, "x", &case).await;
        let (status, body, _) = app.send("GET", "/all", Some(&b)).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "true|[]"),
            "{case}"
        );
    }
    app.hset(&b, "x", &original).await;
    let (_, body, _) = app.send("GET", "/all", Some(&b)).await;
    assert!(body.contains("other-session"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_stay_plaintext_integers_and_atomic() {
    let server = RedisServer::start();
    let app = Arc::new(app(&server, K1, DecryptFailure::DropField).await);
    let (_, _, id) = app.send("POST", "/set/n/41", None).await;
    let id = id.unwrap();
    assert!(app.hash(&id).await["n"].starts_with("enc:"));
    // Incrementing a field stored encrypted turns it into a plaintext counter.
    let (_, body, _) = app.send("POST", "/incr/n", Some(&id)).await;
    assert_eq!(body, "42");
    assert_eq!(app.hash(&id).await["n"], "42");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (app, id) = (Arc::clone(&app), id.clone());
            tokio::spawn(async move { app.send("POST", "/incr/n", Some(&id)).await.0 })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(app.hash(&id).await["n"], "62");
}

#[tokio::test]
async fn round_trips_are_unchanged_with_encryption() {
    let server = RedisServer::start();
    let app = app(&server, K1, DecryptFailure::DropField).await;
    let (_, _, id) = app.send("POST", "/set/a/1x", None).await;
    let id = id.unwrap();
    let evalsha = |client: Client| async move {
        let info: String = client
            .info(Some(fred::types::InfoKind::CommandStats))
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
            .and_then(|rest| rest.split(',').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = evalsha(app.client.clone()).await;
    app.send("GET", "/all", Some(&id)).await;
    assert_eq!(
        evalsha(app.client.clone()).await - before,
        1,
        "read: one script"
    );
    app.send("POST", "/set/b/2y", Some(&id)).await;
    assert_eq!(
        evalsha(app.client.clone()).await - before,
        3,
        "write: two more"
    );
}
