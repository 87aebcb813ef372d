//! Probes, ninth round: the size limits checked against the stored session (parallel
//! saves, counters, encryption at rest), increments of encrypted fields, and the user
//! index's pruning at login and its drop at a tie to another user. Each probe runs
//! against a `redis-server` of its own.
//!
//! A probe that shows a broken promise is `#[ignore]`d with what it shows; run it with
//! `--ignored`.

use std::{sync::Arc, time::Duration};

use fred::prelude::*;
use http::StatusCode;
use tower_redis_session::KeyRing;

use crate::{
    probes8::tied_to_alice,
    review::httpdate_rfc3339,
    support::gates::{gated_routes, Gates},
    support::{RedisServer, TestApp},
};

const K1: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE";

/// Bytes of user field names and values in a session's hash, as stored.
async fn stored_user_bytes(app: &TestApp, id: &str) -> usize {
    app.hash(id)
        .await
        .iter()
        .filter(|(name, _)| !tower_redis_session::RESERVED_FIELDS.contains(&name.as_str()))
        .map(|(name, value)| name.len() + value.len())
        .sum()
}

// ---------------------------------------------------------------------------------------
// Size limits against the stored session

/// Parallel increments of an existing counter, each within the limit as its request saw
/// the session, may together pass it by a few digits (they are not checked against what
/// is stored); the session stays usable: it loads, and it rotates, as a login does.
///
/// Steps: limit 64 bytes; a session of 63 (`p` = 60 × `x`, `c` = `9`). Request A adds 1,
/// request B, loaded at the same time, adds 90. Both are saved: `c` = `100`, 65 bytes.
/// The session reads `100` and rotates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_increments_past_the_limit_leave_a_session_that_loads_and_rotates() {
    let redis = RedisServer::start();
    let gates = Gates::default();
    let app = Arc::new(
        TestApp::with(&redis, |b| b.max_session_size(64))
            .await
            .with_routes(gated_routes(gates.clone())),
    );
    let id = app
        .post(&format!("/set/p/{}", "x".repeat(60)), None)
        .await
        .new_id()
        .unwrap();
    assert_eq!(app.post("/set/c/9", Some(&id)).await.status, StatusCode::OK);
    assert_eq!(stored_user_bytes(&app, &id).await, 63);
    let (a, b) = gates
        .both(&app, &id, "/g/a/incr/c/1", "/g/b/incr/c/90")
        .await;
    let stored = stored_user_bytes(&app, &id).await;
    let read = app.get("/read/c", Some(&id)).await.body;
    let rotated = app.post("/rotate", Some(&id)).await;
    // Increments of an existing counter are not checked against what is stored (they
    // grow it by a few digits at most): the session may pass the limit by that much,
    // and stays usable, loads and rotates.
    assert!(
        stored <= 64 + 20 && read == "100" && rotated.status == StatusCode::OK,
        "A answered {}, B answered {}; the stored session holds {stored} bytes of user \
         fields (limit 64), loads (c = {read}), and its rotation answers {}",
        a.status,
        b.status,
        rotated.status
    );
}

/// Promise (`max_session_size`: "parallel requests may each fit, but not together: the
/// later ones answer 409"), with encryption at rest: the check against the stored
/// session must hold the limit on the values the handlers see, not on a bound of their
/// ciphertexts.
///
/// Steps: limit 256 bytes, encryption on; a session with `u` = `1`. Requests A and B,
/// loaded at the same time, each set a field of 150 bytes (153 bytes as each sees the
/// session). Together 304 bytes: the later save must answer 409. It answers 200 (the
/// stored check allows 4/3 of the limit plus 96 bytes a field, for ciphertexts), and the
/// session, over its limit, then refuses every rotation (login) with 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_encryption_parallel_saves_never_take_a_session_past_its_size_limit() {
    let redis = RedisServer::start();
    let gates = Gates::default();
    let app = Arc::new(
        TestApp::with(&redis, |b| {
            b.max_session_size(256)
                .encryption(KeyRing::parse(K1).unwrap())
        })
        .await
        .with_routes(gated_routes(gates.clone())),
    );
    let id = app.post("/set/u/1", None).await.new_id().unwrap();
    let (a, b) = gates
        .both(&app, &id, "/g/a/fill/x/150", "/g/b/fill/y/150")
        .await;
    let x = app.get("/read/x", Some(&id)).await.body.len();
    let y = app.get("/read/y", Some(&id)).await.body.len();
    let rotated = app.post("/rotate", Some(&id)).await;
    assert_eq!(
        b.status,
        StatusCode::CONFLICT,
        "A answered {}, B answered {}: the session now holds x ({x} bytes) and y ({y} \
         bytes), {} bytes of user fields for a limit of 256; its rotation answers {}",
        a.status,
        b.status,
        2 + 1 + x + 1 + y,
        rotated.status
    );
}

// ---------------------------------------------------------------------------------------
// Increments with encryption at rest

/// Promise ("N concurrent increments add exactly N"), with encryption at rest: a field
/// first written with `insert` (so stored encrypted), then incremented by two requests
/// at once, ends 2 higher.
///
/// Steps: `n` = `0` set by `insert` (stored as a ciphertext). Requests A and B load the
/// session at the same time and each increment `n` by 1. Each sees an encrypted field,
/// so each writes its own result (`1`) in place of an `HINCRBY`: `n` ends at 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "shows: with encryption, two concurrent first increments of a field set by insert write 1 each (a plain overwrite, not HINCRBY): one increment lost"]
async fn with_encryption_concurrent_increments_of_an_inserted_field_add_up() {
    let redis = RedisServer::start();
    let gates = Gates::default();
    let app = Arc::new(
        TestApp::with(&redis, |b| b.encryption(KeyRing::parse(K1).unwrap()))
            .await
            .with_routes(gated_routes(gates.clone())),
    );
    let id = app.post("/set/n/0", None).await.new_id().unwrap();
    let (a, b) = gates
        .both(&app, &id, "/g/a/incr/n/1", "/g/b/incr/n/1")
        .await;
    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    let n = app.get("/read/n", Some(&id)).await.body;
    assert_eq!(n, "2", "two acknowledged increments of 0 left {n:?}");
}

// ---------------------------------------------------------------------------------------
// The user index

/// The pruning each login does never drops the entry of a session that is still live,
/// even one whose `created_at` is ahead of Redis's clock (tolerated up to 5 minutes, so
/// its deadline is that much later).
///
/// Steps: absolute lifetime 1 s. Another program writes a session whose `created_at` is
/// 200 s ahead of Redis's clock (its clock runs ahead; tolerated). The user logs in with
/// it: the rotated session keeps `created_at` and ends 201 s from now, and its index
/// entry is scored now. Two minutes later (the score moved back) the user logs in
/// elsewhere: that login keeps the live session's entry, and "log out everywhere" ends
/// both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logins_index_pruning_never_drops_a_live_session() {
    let redis = RedisServer::start();
    let app = TestApp::with(&redis, |b| b.absolute_lifetime(Duration::from_secs(1))).await;
    // Redis runs on this machine: its clock is this one.
    let now = std::time::SystemTime::now();
    let theirs = tower_redis_session::SessionId::generate();
    let key = app.key(theirs.as_str());
    let _: () = app
        .client
        .hset(
            &key,
            [
                ("session_ttl", "600".to_owned()),
                (
                    "created_at",
                    httpdate_rfc3339(now + Duration::from_secs(200)),
                ),
                ("last_accessed_at", httpdate_rfc3339(now)),
                ("cart", "3-items".to_owned()),
            ],
        )
        .await
        .unwrap();
    let _: () = app.client.expire(&key, 600, None).await.unwrap();
    let login = app.post("/login/ann", Some(theirs.as_str())).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let first = login.new_id().unwrap();
    // Two minutes later (the entry's score moved back, rather than waiting): past the
    // lifetime and a minute, but the session lives on, its created_at being ahead.
    let index = app.index_key("ann");
    let members: Vec<String> = app
        .client
        .zrange(&index, 0, -1, None, false, None, false)
        .await
        .unwrap();
    assert_eq!(members.len(), 1, "{members:?}");
    app.age_index_entry("ann", &members[0], 120_000).await;
    assert_eq!(app.get("/read/cart", Some(&first)).await.body, "3-items");
    let second = app.login_as("ann").await;
    let ended = app.manager.terminate_all("ann", None).await.unwrap();
    let after = app.get("/read/cart", Some(&first)).await.body;
    let ttl = app.pttl(&first).await;
    assert!(
        after.is_empty(),
        "log out everywhere ended {ended} session(s); the first one still reads {after:?} \
         (live {ttl} ms more), its index entry dropped by the login of {second}"
    );
}

/// Promise (every tie re-adds the session to the index first, "so 'log out everywhere'
/// cannot miss a tied session"), with `rotate_on_user_change(false)`: whatever order two
/// ties of one session land in, the user it ends up tied to has it in their index.
///
/// Steps: a session tied to alice. Request B ties it to alice again (a second login
/// form): it re-adds it to alice's index, and its save is slow to land. Meanwhile
/// request A ties it to bob: adds it to bob's index, saves `user_id = bob`, and drops
/// alice's entry, scored before its save. B's save lands: `user_id = alice`. The session
/// is alice's, and not in alice's index: `terminate_all("alice")` leaves it live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "shows: a tie's index_drop removes an entry re-added by a tie whose save lands after it; the session ends tied to alice and missing from alice's index"]
async fn a_session_ends_in_the_index_of_the_user_it_is_tied_to_whatever_order_ties_land_in() {
    let redis = RedisServer::start();
    let (direct, id, proxied, seen, release) = tied_to_alice(&redis, "save").await;
    let b = {
        let (proxied, id) = (Arc::clone(&proxied), id.clone());
        tokio::spawn(async move { proxied.post("/tie/alice", Some(&id)).await })
    };
    tokio::time::timeout(Duration::from_secs(5), seen.notified())
        .await
        .expect("request B re-added the session to alice's index and sent its save");
    let a = direct.post("/tie/bob", Some(&id)).await;
    release.notify_one();
    let b = b.await.unwrap();
    let owner: Option<String> = direct
        .client
        .hget(direct.key(&id), "user_id")
        .await
        .unwrap();
    let in_alice: Option<f64> = direct
        .client
        .zscore(
            direct.index_key("alice"),
            direct.key(&id).trim_start_matches(&direct.prefix),
        )
        .await
        .unwrap();
    let ended = direct.manager.terminate_all("alice", None).await.unwrap();
    let live = direct.is_live(&id).await;
    assert!(
        owner.as_deref() != Some("alice") || !live,
        "A (bob) answered {}, B (alice) answered {}; the session is tied to {owner:?}, \
         alice's index entry: {in_alice:?}; terminate_all(alice) ended {ended} and the \
         session is still live",
        a.status,
        b.status
    );
}
