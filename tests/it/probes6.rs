//! A reply the Redis client hands to the wrong command is never acted on: every script
//! replies `{result, KEYS[1]}`, exactly two elements, and the layer checks both the shape
//! and the key. Here real Redis is made to shift the replies of the layer's connection
//! (`CLIENT REPLY SKIP`), and the reply that arrives is built to look like the one
//! expected.

use std::{sync::Arc, time::Duration};

use axum::{routing::get, Router};
use fred::{prelude::*, types::CustomCommand};
use tower_redis_session::Session;

use crate::support::{Gate, RedisServer, TestApp};

/// Shifts the replies of `client`'s connection: `CLIENT REPLY SKIP` has no reply of its
/// own and silences the next command's, so from here on fred hands each command the
/// reply of the command sent two after it (a client that mismatches replies and
/// commands, which the layer's key check exists for).
fn shift_replies(client: &Client) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    tokio::spawn(async move {
        let _: Result<Value, _> = client
            .custom(
                CustomCommand::new_static("CLIENT", fred::types::ClusterHash::Random, false),
                vec!["REPLY", "SKIP"],
            )
            .await;
    })
}

/// A reply meant for another command is never acted on, and never shows another
/// session's data, even when it happens to end with the key the script was sent for:
/// here the `HGETALL` of another session (whose fields, written as given, end with a
/// TTL-like value, a field `1` and the victim's key) reaches the victim's load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_meant_for_another_command_is_never_shown_even_if_it_ends_with_the_key() {
    let redis = RedisServer::start();
    let app = Arc::new(TestApp::new(&redis).await);
    let alice = app
        .post("/set/username/alice", None)
        .await
        .new_id()
        .unwrap();
    let mallory = app
        .post("/set/username/mallory", None)
        .await
        .new_id()
        .unwrap();
    let (alice_key, mallory_key) = (app.key(&alice), app.key(&mallory));
    // Mallory's own session: user fields, written as given.
    assert_eq!(app.post("/set/t/1800000", Some(&mallory)).await.body, "ok");
    let res = app
        .post(&format!("/set/1/{alice_key}"), Some(&mallory))
        .await;
    assert_eq!(res.body, "ok");
    // The hash as Redis sends it (in the order its fields were written).
    let flat: Vec<String> = redis
        .cmd(&["HGETALL", mallory_key.as_str()])
        .items()
        .iter()
        .filter_map(|r| r.text())
        .collect();
    assert_eq!(flat[flat.len() - 3..], ["1800000", "1", alice_key.as_str()]);
    assert_eq!(app.get("/read/username", Some(&alice)).await.body, "alice");

    // On the layer's own connection: CLIENT REPLY SKIP, alice's load, a PING, then the
    // HGETALL of mallory's session, in this order. Alice's load is handed the HGETALL's
    // reply.
    let skip = shift_replies(&app.client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let read = {
        let (app, alice) = (Arc::clone(&app), alice.clone());
        tokio::spawn(async move { app.get("/read/username", Some(&alice)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ping = {
        let client = app.client.clone();
        tokio::spawn(async move { client.ping::<Value>(None).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let listing = {
        let (client, key) = (app.client.clone(), mallory_key.clone());
        tokio::spawn(async move { client.hgetall::<Value, _>(key).await })
    };
    let res = read.await.unwrap();
    let _ = (skip.await, ping.await, listing.await);
    assert_ne!(
        res.body, "mallory",
        "alice's request was served mallory's session: {res:?}"
    );
    assert!(
        res.status.is_server_error(),
        "a reply meant for another command is not acted on: {res:?}"
    );
}

/// A persistent cookie's `Max-Age` is what is left of the key's TTL, and a reply meant
/// for another command is never acted on: here the check before a read's persistent
/// cookie goes out again (`live_ttl`) is handed the reply of a save on the same session
/// (`{{1, ttl}, key}`), whose status must never be read as a TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_reply_handed_to_the_cookie_check_never_expires_a_live_sessions_cookie() {
    let redis = RedisServer::start();
    let read_gate = Arc::new(Gate::default());
    let app = {
        let gate = Arc::clone(&read_gate);
        TestApp::with(&redis, |b| b.persistent_cookie(true))
            .await
            .with_routes(move |_| {
                Router::new().route(
                    "/held/read",
                    get(move |session: Session| {
                        let gate = Arc::clone(&gate);
                        async move {
                            gate.pass().await;
                            session.get("username").unwrap_or_default()
                        }
                    }),
                )
            })
    };
    let app = Arc::new(app);
    let alice = app.login().await;
    let key = app.key(&alice);

    // A write on alice's session, loaded and held before its save.
    let writer = app.hold("POST", "/gated/incr/n", &alice).await;
    // A read on alice's session, loaded (TTL renewed) and held before its cookie check.
    let reader = {
        let (app, alice) = (Arc::clone(&app), alice.clone());
        tokio::spawn(async move { app.get("/held/read", Some(&alice)).await })
    };
    read_gate.arrived.notified().await;
    // On the layer's connection: CLIENT REPLY SKIP, the read's live_ttl, a PING, then the
    // write's save. The live_ttl is handed the save's reply.
    let skip = shift_replies(&app.client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    read_gate.release.notify_one();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ping = {
        let client = app.client.clone();
        tokio::spawn(async move { client.ping::<Value>(None).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.gate.release.notify_one();
    let read = reader.await.unwrap();
    let _ = (writer.await, skip.await, ping.await);

    assert_eq!(read.body, "ferris");
    let pttl = redis.cmd(&["PTTL", key.as_str()]).int().unwrap();
    assert!(pttl > 60_000, "the session is live: PTTL {pttl}");
    // No cookie at all is fine (the check's answer was unreadable); one that goes out
    // carries what is left of the key's TTL.
    if let Some(cookie) = read.set_cookie() {
        let max_age: i64 = cookie
            .split("Max-Age=")
            .nth(1)
            .and_then(|v| v.split(';').next())
            .and_then(|v| v.trim().parse().ok())
            .expect("a persistent cookie has a Max-Age");
        assert!(
            (max_age - pttl / 1000).abs() <= 5,
            "a live session's cookie went out with Max-Age={max_age} (key PTTL {pttl} ms): {cookie}"
        );
    }
}
