//! Probes: interleavings and stored data aimed at the promises of rotation, logout,
//! termination, the user index, persistent cookies, shared caches and CSRF tokens.
//!
//! Every probe drives real requests through the layer against a `redis-server` of its
//! own. Where a step of the layer must be caught halfway (a login between its index
//! entry and its save), that step is run by hand with the layer's own script, in the
//! order the layer runs it. A probe that shows a broken promise is `#[ignore]`d with
//! what it shows; run it with `--ignored`.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Path, State},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use fred::prelude::*;
use http::{header, Request, StatusCode};
use tower::ServiceExt as _;
use tower_redis_session::{RedisSessionLayerBuilder, Session, SessionError, SessionManager};

use crate::support::{self, assert_none, Gate, Logs, TestApp, Topology};

/// Cache-Control values an app may put on a page: each marks it storable by shared
/// caches (`public`), whatever else it says.
const PUBLIC_CACHE_CONTROL: &[&str] = &[
    // Stored, and revalidated before each reuse: a 304 hands out the stored headers.
    "public, no-cache",
    // Only `x-user` is private; the rest of the response may be stored and shared.
    "public, max-age=60, private=\"x-user\"",
];

async fn tie(session: Session, Path(user): Path<String>) -> Result<&'static str, SessionError> {
    session.set_user_id(user)?;
    Ok("ok")
}

async fn csrf(session: Session) -> Result<String, SessionError> {
    session.csrf_token()
}

async fn verify(session: Session, Path(token): Path<String>) -> String {
    session.verify_csrf_token(&token).to_string()
}

/// Reads only, after the gate: a page whose load happened before what the test does
/// while it waits.
async fn gated_read(State(gate): State<Arc<Gate>>, session: Session) -> String {
    gate.pass().await;
    session.get("username").unwrap_or_default()
}

async fn gated_incr_rotate(
    State(gate): State<Arc<Gate>>,
    session: Session,
    Path(field): Path<String>,
) -> Result<String, SessionError> {
    gate.pass().await;
    let n = session.increment(&field, 1)?;
    session.rotate_id();
    Ok(n.to_string())
}

async fn gated_csrf(
    State(gate): State<Arc<Gate>>,
    session: Session,
) -> Result<String, SessionError> {
    gate.pass().await;
    session.csrf_token()
}

/// A page with the `n`th of [`PUBLIC_CACHE_CONTROL`], reading the session only.
async fn cached_read(session: Session, Path(n): Path<usize>) -> Response {
    let name = session.get("username").unwrap_or_default();
    ([(header::CACHE_CONTROL, PUBLIC_CACHE_CONTROL[n])], name).into_response()
}

/// A page with the `n`th of [`PUBLIC_CACHE_CONTROL`], writing to the session.
async fn cached_write(session: Session, Path(n): Path<usize>) -> Response {
    session.insert("seen", "1").unwrap();
    ([(header::CACHE_CONTROL, PUBLIC_CACHE_CONTROL[n])], "ok").into_response()
}

/// The shared test app on `client`, with this file's routes as well.
async fn probe_app(
    client: Client,
    configure: impl FnOnce(RedisSessionLayerBuilder) -> RedisSessionLayerBuilder,
) -> TestApp {
    TestApp::with_client(client, true, configure)
        .await
        .with_routes(|gate| {
            Router::new()
                .route("/tie/{user}", post(tie))
                .route("/csrf", get(csrf))
                .route("/verify/{token}", post(verify))
                .route("/gated/read", get(gated_read))
                .route("/gated/incr_rotate/{field}", post(gated_incr_rotate))
                .route("/gated/csrf", get(gated_csrf))
                .route("/cached/read/{n}", get(cached_read))
                .route("/cached/write/{n}", post(cached_write))
                .with_state(gate)
        })
}

/// The layer's default absolute lifetime and the index's grace, in ms, as the layer
/// passes them to `index_add`.
const LIFETIME_MS: &str = "43200000";
const GRACE_MS: &str = "60000";

/// Runs one of the layer's scripts by hand; the status of its result.
async fn script(app: &TestApp, file: &str, key: String, args: Vec<String>) -> i64 {
    let reply: Vec<Value> = app.eval_script(file, key, args).await.convert().unwrap();
    match &reply[0] {
        Value::Array(items) => items[0].as_i64().unwrap(),
        other => other.as_i64().unwrap(),
    }
}

/// `Max-Age` of a `Set-Cookie`, in seconds.
fn max_age(cookie: &str) -> Option<u64> {
    cookie
        .split(';')
        .find_map(|part| part.trim().strip_prefix("Max-Age="))
        .and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------------------
// Persistent cookies and late responses

/// A page that loaded the session before a parallel request rotated it (a login in
/// another tab, a single-page app's parallel requests) answers after the browser stored
/// the new cookie. In persistent mode every read re-sends the cookie to refresh its
/// `Max-Age`; the late read must not send the rotated-away ID back, which would replace
/// the new cookie and log the user out right after their login. The same for a page
/// that loaded before a logout: the browser dropped the cookie, and a dead ID must not
/// come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_read_never_puts_a_rotated_or_logged_out_id_back_in_the_browser() {
    let redis = Topology::Single.start().await;
    let app = Arc::new(probe_app(redis.client().await, |b| b.persistent_cookie(true)).await);
    let mut problems = Vec::new();
    for ending in ["/rotate", "/logout"] {
        let old = app.login().await;
        let late = app.hold("GET", "/gated/read", &old).await;
        let ended = app.post(ending, Some(&old)).await;
        assert_eq!(ended.status, StatusCode::OK, "{}", ended.body);
        let browser_now = ended.set_cookie().unwrap();
        let late = app.release(late).await;
        assert_eq!(late.status, StatusCode::OK);
        assert!(!app.loaded(&old).await, "the old ID is dead after {ending}");
        if let Some(cookie) = late.set_cookie() {
            if cookie.starts_with(&format!("sid={old};")) {
                problems.push(format!(
                    "after {ending} set {browser_now:?}, the late read sent the dead ID back: {cookie:?}"
                ));
            }
        }
    }
    assert_none(&problems);
}

/// A persistent cookie's `Max-Age` is what is left of the key's TTL. A page that loaded
/// the session before a parallel request raised its idle TTL (the demo's "change TTL")
/// answers afterwards with the `Max-Age` of its load: the browser then drops the cookie
/// long before the session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_read_never_sends_a_max_age_short_of_the_key_ttl() {
    let redis = Topology::Single.start().await;
    let app = Arc::new(probe_app(redis.client().await, |b| b.persistent_cookie(true)).await);
    let id = app.login().await;
    assert_eq!(app.post("/ttl/60", Some(&id)).await.status, StatusCode::OK);
    let late = app.hold("GET", "/gated/read", &id).await;
    let raised = app.post("/ttl/3600", Some(&id)).await;
    assert_eq!(raised.status, StatusCode::OK);
    assert_eq!(max_age(&raised.set_cookie().unwrap()), Some(3600));
    let late = app.release(late).await;
    let pttl: i64 = app.client.pttl(app.key(&id)).await.unwrap();
    if let Some(cookie) = late.set_cookie() {
        let secs = max_age(&cookie).unwrap();
        assert!(
            secs * 1000 + 1000 >= u64::try_from(pttl).unwrap(),
            "the late read set Max-Age={secs} on a key with {pttl} ms left: the browser drops \
             the cookie {} s before the session ends",
            pttl / 1000 - i64::try_from(secs).unwrap()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Shared caches

/// A response the app marked as storable by shared caches (`public`) never carries the
/// session cookie, whatever other directives come with it: `no-cache` still lets a CDN
/// store it (and replay its headers after a 304), and `private="x-user"` keeps only that
/// header out of the shared copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_marked_public_never_carries_the_session_cookie_whatever_else_it_says() {
    let redis = Topology::Single.start().await;
    let app = probe_app(redis.client().await, |b| b.persistent_cookie(true)).await;
    let id = app.login().await;
    let mut problems = Vec::new();
    for (n, cc) in PUBLIC_CACHE_CONTROL.iter().enumerate() {
        for (what, res) in [
            (
                "a read (Max-Age refresh)",
                app.get(&format!("/cached/read/{n}"), Some(&id)).await,
            ),
            (
                "a first write (new ID)",
                app.post(&format!("/cached/write/{n}"), None).await,
            ),
        ] {
            assert_eq!(res.status, StatusCode::OK, "{}", res.body);
            let Some(cookie) = res.set_cookie() else {
                continue;
            };
            let sent: Vec<_> = res
                .headers
                .get_all(header::CACHE_CONTROL)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect();
            if !sent.iter().any(|v| v.contains("no-store")) {
                problems.push(format!(
                    "{what} with Cache-Control {cc:?} sent {sent:?} and {cookie:?}"
                ));
            }
        }
    }
    assert_none(&problems);
}

// ---------------------------------------------------------------------------------------
// Log out everywhere and the user index

/// "Log out everywhere" ends every session the user has when it is called. A session
/// that rotates its ID while the call runs (a privilege change, a re-login) must not
/// survive it under its new ID. The user has many index entries here (dead ones are
/// fine), so that the call is still going through them when the rotation finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_out_everywhere_ends_a_session_that_rotates_while_it_runs() {
    let redis = Topology::Single.start().await;
    let app = Arc::new(probe_app(redis.client().await, |b| b).await);
    let first = app.login().await;
    let alice = app
        .post("/login/alice", Some(&first))
        .await
        .new_id()
        .unwrap();
    assert!(app.loaded(&alice).await);

    // Entries older than alice's session, which "log out everywhere" goes through first.
    let index = app.index_key("alice");
    let fillers: Vec<(f64, String)> = (1..=3000)
        .map(|i| (f64::from(i), format!("old{i}")))
        .collect();
    let _: i64 = app
        .client
        .zadd(&index, None, None, false, false, fillers)
        .await
        .unwrap();

    let everywhere = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { app.manager.terminate_all("alice", None).await.unwrap() })
    };
    // Once it has read the index and started ending sessions, the session rotates.
    let first_marker = format!("{}old1", app.prefix);
    while app.client.exists::<i64, _>(&first_marker).await.unwrap() == 0 {
        tokio::task::yield_now().await;
    }
    let rotated = app.post("/rotate", Some(&alice)).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let new = rotated.new_id().unwrap();
    let still_running = app
        .client
        .exists::<i64, _>(format!("{}old3000", app.prefix))
        .await
        .unwrap()
        == 0;
    let ended = everywhere.await.unwrap();
    assert!(
        still_running,
        "setup: the rotation finished after terminate_all"
    );
    assert!(
        !app.loaded(&new).await,
        "terminate_all returned {ended}, and alice's session lives on under its new ID"
    );
}

/// A login that ties a session without rotating its ID (`rotate_on_user_change(false)`)
/// adds the index entry first, then ties the session. "Log out everywhere" running in
/// between finds the session not yet tied to the user, leaves it alone (right), and drops
/// its index entry (wrong): the login then ties it, and the session is tied to the user
/// and missing from the index, so no later "log out everywhere" can end it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_out_everywhere_never_drops_the_index_entry_of_a_tie_in_flight() {
    let redis = Topology::Single.start().await;
    let app = probe_app(redis.client().await, |b| b.rotate_on_user_change(false)).await;
    let id = app.login().await;
    let member = tower_redis_session::SessionId::parse(&id)
        .unwrap()
        .digest()
        .to_owned();

    // The login's first step (the layer's own script): the index entry.
    script(
        &app,
        "lua/index_add.lua",
        app.index_key("alice"),
        vec![member.clone(), LIFETIME_MS.to_owned(), GRACE_MS.to_owned()],
    )
    .await;
    // Meanwhile, on another app server: "log out everywhere".
    let ended = app.manager.terminate_all("alice", None).await.unwrap();
    assert_eq!(ended, 0, "the session was not tied yet: nothing to end");
    // The login's second step: the save that ties the session.
    let saved = script(
        &app,
        "lua/save.lua",
        app.key(&id),
        [
            "", "43200000", "256", "262144", "0", "s", "user_id", "alice",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert_eq!(saved, 1, "the tie was applied");

    let listed = app.manager.list("alice").await.unwrap();
    let ended = app.manager.terminate_all("alice", None).await.unwrap();
    assert!(
        !app.loaded(&id).await,
        "a live session tied to alice that her index does not know: list saw {} sessions, \
         terminate_all ended {ended}",
        listed.len()
    );
}

// ---------------------------------------------------------------------------------------
// Rotation meeting a conflict

/// A rotating request incremented a counter that another request meanwhile set to text:
/// a conflict like any other (the save path answers `409` for it). The rotation must not
/// answer `500`, and must not leave the session refusing every write for seconds after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_meeting_a_counter_turned_to_text_is_a_conflict_and_leaves_the_session_usable() {
    let redis = Topology::Single.start().await;
    let app = Arc::new(probe_app(redis.client().await, |b| b).await);
    let logs = Logs::capture(tracing::Level::WARN);
    let id = app.login().await;
    assert_eq!(app.post("/set/n/5", Some(&id)).await.status, StatusCode::OK);
    let rotating = {
        let (app, id, logs) = (Arc::clone(&app), id.clone(), logs.clone());
        tokio::spawn(async move {
            logs.during(app.post("/gated/incr_rotate/n", Some(&id)))
                .await
        })
    };
    app.gate.arrived.notified().await;
    assert_eq!(
        app.post("/set/n/abc", Some(&id)).await.status,
        StatusCode::OK
    );
    let res = app.release(rotating).await;
    let next = logs.during(app.post("/set/x/1", Some(&id))).await;

    let mut problems = Vec::new();
    if res.status != StatusCode::CONFLICT {
        problems.push(format!(
            "the rotation answered {} {:?} (error {:?}), not 409",
            res.status, res.body, res.error
        ));
    }
    if next.status != StatusCode::OK {
        problems.push(format!(
            "a write right after it answered {} {:?}: the session is stuck behind the rotation's mark",
            next.status, next.body
        ));
    }
    for text in [&res.body, &next.body] {
        assert!(
            !text.contains(&id) && !text.contains(&app.key(&id)),
            "{text}"
        );
    }
    logs.assert_no_raw_ids(&[&id]);
    assert_none(&problems);
}

// ---------------------------------------------------------------------------------------
// CSRF tokens

/// Two pages of one session that ask for its CSRF token at once (two tabs opened
/// together): the token is made with the session and kept with it, so the forms of both
/// pages must verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_asking_for_the_csrf_token_at_once_both_verify() {
    let redis = Topology::Single.start().await;
    let app = Arc::new(probe_app(redis.client().await, |b| b).await);
    let id = app.login().await;
    let first = app.hold("GET", "/gated/csrf", &id).await;
    let second = app.get("/csrf", Some(&id)).await;
    let first = app.release(first).await;
    assert_eq!(
        (first.status, second.status),
        (StatusCode::OK, StatusCode::OK)
    );
    let mut problems = Vec::new();
    for (page, token) in [("first", &first.body), ("second", &second.body)] {
        let verdict = app.post(&format!("/verify/{token}"), Some(&id)).await.body;
        if verdict != "true" {
            problems.push(format!("the {page} page's token is refused"));
        }
    }
    assert_none(&problems);
}

/// The CSRF token is "replaced at every rotation": a token made for the old ID, by a
/// request that ran while the rotating one was in its handler, must not verify on the
/// new ID. The session is stored without a token (as another program writes it), so the
/// first request that asks makes one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csrf_token_made_while_a_rotation_ran_does_not_survive_it() {
    let redis = Topology::Single.start().await;
    let app = Arc::new(probe_app(redis.client().await, |b| b).await);
    let id = app.login().await;
    let _: i64 = app.client.hdel(app.key(&id), "csrf_token").await.unwrap();
    let rotating = app.hold("POST", "/gated/rotate", &id).await;
    let token = app.get("/csrf", Some(&id)).await;
    assert_eq!(token.status, StatusCode::OK);
    let rotated = app.release(rotating).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let new = rotated.new_id().unwrap();
    let verdict = app
        .post(&format!("/verify/{}", token.body), Some(&new))
        .await
        .body;
    assert_eq!(
        verdict, "false",
        "the token made for the old ID verifies on the new one"
    );
}

/// Held: a CSRF token made on a new session is stored with it and verifies on the next
/// request; one made before a rotation in the same request's session is replaced; a
/// forged token or one of another session never verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_tokens_are_kept_with_the_session_and_replaced_at_rotation() {
    let redis = Topology::Single.start().await;
    let app = probe_app(redis.client().await, |b| b).await;
    let res = app.get("/csrf", None).await;
    assert_eq!(res.status, StatusCode::OK);
    let id = res.new_id().expect("first use stores the session");
    let token = res.body;
    assert_eq!(
        app.post(&format!("/verify/{token}"), Some(&id)).await.body,
        "true"
    );
    assert_eq!(app.get("/csrf", Some(&id)).await.body, token, "kept");
    let other = app.get("/csrf", None).await;
    assert_eq!(
        app.post(&format!("/verify/{}", other.body), Some(&id))
            .await
            .body,
        "false"
    );
    let new = app.post("/rotate", Some(&id)).await.new_id().unwrap();
    assert_eq!(
        app.post(&format!("/verify/{token}"), Some(&new)).await.body,
        "false"
    );
    let fresh = app.get("/csrf", Some(&new)).await.body;
    assert_ne!(fresh, token);
    assert_eq!(
        app.post(&format!("/verify/{fresh}"), Some(&new)).await.body,
        "true"
    );
}

// ---------------------------------------------------------------------------------------
// Round trips against the table in the crate docs

/// The crate docs' table and its note: rotation costs 4 round trips; for a session tied
/// to a user, adding the new ID to the index costs one more, and removing the old one
/// (a session tied already) or the logged-out one one more again. Counted with MONITOR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_of_tied_sessions_match_the_table() {
    let redis = Topology::Single.start().await;
    let app = probe_app(redis.client().await, |b| b).await;
    let mut problems = Vec::new();
    // Each row: what the table says, and the request; each request carries the ID the
    // one before it set.
    let rows = [
        ("login (tie + rotation)", 4 + 1, "POST", "/login/alice"),
        ("rotate_id of a tied session", 4 + 1 + 1, "POST", "/rotate"),
        (
            "re-login of the same user",
            4 + 1 + 1,
            "POST",
            "/login/alice",
        ),
        ("logout of a tied session", 2 + 1, "POST", "/logout"),
    ];
    app.count_round_trips(app.login().await, &rows, &mut problems)
        .await;

    // The guide's manager table: terminate_all is one read of the index, one round trip
    // per session, one to drop their entries.
    for _ in 0..3 {
        let first = app.login().await;
        app.post("/login/carol", Some(&first))
            .await
            .new_id()
            .unwrap();
    }
    support::reset_stats(&app.client).await;
    assert_eq!(app.manager.terminate_all("carol", None).await.unwrap(), 3);
    let observed = support::round_trips(&app.client).await;
    if observed != 1 + 3 + 1 {
        problems.push(format!(
            "terminate_all of 3 sessions: guide 5, observed {observed}"
        ));
    }
    assert_none(&problems);
}

// ---------------------------------------------------------------------------------------
// Hashes another program wrote

/// A session's `last_accessed_at` in the future (written by another program with its own
/// clock ahead of Redis's) must not stop the sliding refresh: with a touch interval, an
/// active session must not expire while requests keep coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_access_stamped_in_the_future_does_not_stop_the_sliding_refresh() {
    let redis = Topology::Single.start().await;
    let app = probe_app(redis.client().await, |b| {
        b.idle_ttl(Duration::from_secs(3))
            .touch_interval(Duration::from_secs(2))
    })
    .await;
    let id = app.login().await;
    let _: i64 = app
        .client
        .hset(
            app.key(&id),
            ("last_accessed_at", "2030-01-01T00:00:00+00:00"),
        )
        .await
        .unwrap();
    for i in 0..7 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            app.loaded(&id).await,
            "an active session (a request every 0.7 s, idle TTL 3 s) expired after {:.1} s",
            f64::from(i + 1) * 0.7
        );
    }
}

/// Held: hashes another program planted under session keys (unreadable internal fields,
/// a `rotating` mark from a dead rotation, a marker with extra fields, a wrong type, a
/// key without a TTL) never panic, never leak, and never grant a session; the ones that
/// hold a readable session keep working and get a TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_hashes_never_grant_a_session_nor_panic() {
    let redis = Topology::Single.start().await;
    // No absolute lifetime: the planted sessions were created long ago.
    let app = probe_app(redis.client().await, |b| b.absolute_lifetime(None)).await;
    let now = "2026-01-01T00:00:00+00:00";
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "session_ttl 0",
            vec![("session_ttl", "0".into()), ("created_at", now.into())],
        ),
        (
            "session_ttl huge",
            vec![
                ("session_ttl", "99999999999".into()),
                ("created_at", now.into()),
            ],
        ),
        ("no created_at", vec![("session_ttl", "60".into())]),
        (
            "created_at garbage",
            vec![
                ("session_ttl", "60".into()),
                ("created_at", "yesterday".into()),
            ],
        ),
        (
            "deadline unreadable",
            vec![
                ("session_ttl", "60".into()),
                ("created_at", now.into()),
                ("absolute_expires_at", "soon".into()),
            ],
        ),
        (
            "marker plus a field",
            vec![("ended", "rotated".into()), ("username", "x".into())],
        ),
    ];
    for (what, fields) in &cases {
        let id = tower_redis_session::SessionId::generate();
        let key = app.key(id.as_str());
        let _: i64 = app.client.hset(&key, fields.clone()).await.unwrap();
        let res = app.get("/whoami", Some(id.as_str())).await;
        assert!(res.body.starts_with("loaded=false"), "{what}");
        assert!(!res.body.contains(id.as_str()));
        let res = app.post("/set/a/1", Some(id.as_str())).await;
        assert!(
            res.status == StatusCode::OK || res.status == StatusCode::CONFLICT,
            "{what}: {}",
            res.status
        );
        if let Some(new) = res.new_id() {
            assert_ne!(new, id.as_str(), "{what}: the planted ID was adopted");
        }
    }
    // A live session stamped by another program: offsets and fractions, a stale mark
    // of a rotation that died, and no TTL at all.
    let id = tower_redis_session::SessionId::generate();
    let key = app.key(id.as_str());
    let _: i64 = app
        .client
        .hset(
            &key,
            vec![
                ("session_ttl", "60".to_owned()),
                ("created_at", "2026-04-02T14:34:56.5+02:00".to_owned()),
                (
                    "last_accessed_at",
                    "2026-04-02T07:04:56.123456789-05:30".to_owned(),
                ),
                ("rotating", "1:dead".to_owned()),
                ("username", "php".to_owned()),
            ],
        )
        .await
        .unwrap();
    let res = app.get("/read/username", Some(id.as_str())).await;
    assert_eq!(res.body, "php");
    let pttl: i64 = app.client.pttl(&key).await.unwrap();
    assert!(pttl > 0 && pttl <= 60_000, "{pttl}");
    assert_eq!(
        app.post("/set/a/1", Some(id.as_str())).await.status,
        StatusCode::OK
    );
    let mark: Option<String> = app.client.hget(&key, "rotating").await.unwrap();
    assert_eq!(mark, None, "the dead mark was cleared");
    // A wrong type under a session key.
    let id = tower_redis_session::SessionId::generate();
    let _: Value = app
        .client
        .set(app.key(id.as_str()), "x", None, None, false)
        .await
        .unwrap();
    assert!(app
        .get("/whoami", Some(id.as_str()))
        .await
        .body
        .starts_with("loaded=false"));
}

// ---------------------------------------------------------------------------------------
// Held promises around logout, termination and cookies

/// Held: a request in flight while the session is logged out, terminated or rotated
/// cannot bring it back, is answered 409 without Set-Cookie, and the old key holds only
/// a marker with a TTL; a terminated session's next request clears the cookie, a
/// rotated-away one's does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_in_flight_across_every_ending_are_refused_and_resurrect_nothing() {
    let redis = Topology::Single.start().await;
    let app = Arc::new(probe_app(redis.client().await, |b| b).await);
    for ending in ["logout", "terminate", "rotate"] {
        let first = app.login().await;
        let id = app.post("/login/bob", Some(&first)).await.new_id().unwrap();
        let held = app.hold("POST", "/gated/incr_rotate/n", &id).await;
        match ending {
            "logout" => assert!(app.post("/logout", Some(&id)).await.clears_cookie()),
            "terminate" => assert_eq!(app.manager.terminate_all("bob", None).await.unwrap(), 1),
            _ => assert!(app.post("/rotate", Some(&id)).await.new_id().is_some()),
        }
        let res = app.release(held).await;
        assert_eq!(res.status, StatusCode::CONFLICT, "{ending}: {}", res.body);
        assert_eq!(res.set_cookie(), None, "{ending}");
        let hash: std::collections::HashMap<String, String> =
            app.client.hgetall(app.key(&id)).await.unwrap();
        assert_eq!(hash.len(), 1, "{ending}: {hash:?}");
        assert!(hash.contains_key("ended"), "{ending}: {hash:?}");
        let pttl: i64 = app.client.pttl(app.key(&id)).await.unwrap();
        assert!(pttl > 0, "{ending}: marker without TTL");
        let next = app.get("/whoami", Some(&id)).await;
        assert!(next.body.starts_with("loaded=false"));
        assert_eq!(next.clears_cookie(), ending == "terminate", "{ending}");
    }
    // Every key has a TTL, but the index.
    let keys: Vec<String> = support::keys_matching(&app.client, &format!("{}*", app.prefix)).await;
    for key in keys {
        if key.contains(":user:") {
            continue;
        }
        let pttl: i64 = app.client.pttl(&key).await.unwrap();
        assert!(pttl > 0, "{key} has no TTL");
    }
}

/// Held: duplicate session cookies (one planted for a parent domain) mean no session,
/// and the response never removes a cookie, for reads, writes, logouts and rotations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_cookies_mean_no_session_and_no_removal_whatever_the_handler_does() {
    let redis = Topology::Single.start().await;
    let app = probe_app(redis.client().await, |b| b).await;
    let ours = app.login().await;
    let planted = app.login().await;
    for (method, path) in [
        ("GET", "/whoami"),
        ("POST", "/logout"),
        ("POST", "/rotate"),
        ("POST", "/set/a/1"),
        ("GET", "/csrf"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::COOKIE, format!("sid={ours}"))
            .header(header::COOKIE, format!("sid={planted}"))
            .body(Body::empty())
            .unwrap();
        let res = app.router.clone().oneshot(req).await.unwrap();
        let cookies: Vec<_> = res.headers().get_all(header::SET_COOKIE).iter().collect();
        for c in &cookies {
            let c = c.to_str().unwrap();
            assert!(!c.contains("Max-Age=0"), "{path}: a removal {c}");
            assert!(!c.contains(&ours) && !c.contains(&planted), "{path}: {c}");
        }
    }
    assert!(app.loaded(&ours).await && app.loaded(&planted).await);
}

// ---------------------------------------------------------------------------------------
// The guide's recipe for a password change

/// The guide's recipe for a password change, word for word.
const PASSWORD_CHANGE_RECIPE: &str = r#"let user = session.user_id().expect("a logged-in session");
let here = manager.handle(&session.id().expect("a stored session"));
manager.terminate_all(&user, Some(&here)).await?;
session.rotate_id();"#;

/// A handler's failure to end the other sessions, as a `500`.
struct Failed;

impl From<tower_redis_session::Error> for Failed {
    fn from(_: tower_redis_session::Error) -> Self {
        Self
    }
}

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    }
}

/// The guide: on a password change, end the user's other sessions and rotate the ID, with
/// the code it gives. A handler running just that code must keep the user logged in on
/// this device (under a new ID) and end the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_password_change_recipe_keeps_this_device_and_ends_the_others() {
    async fn change_password(
        State(manager): State<SessionManager>,
        session: Session,
    ) -> Result<&'static str, Failed> {
        let user = session.user_id().expect("a logged-in session");
        let here = manager.handle(&session.id().expect("a stored session"));
        manager.terminate_all(&user, Some(&here)).await?;
        session.rotate_id();
        Ok("password changed")
    }
    assert!(
        include_str!("../../docs/guide.md").contains(PASSWORD_CHANGE_RECIPE),
        "the guide gives the recipe this test runs"
    );

    let redis = Topology::Single.start().await;
    let client = redis.client().await;
    let app = probe_app(client.clone(), |b| b).await;
    let layer = support::layer(client)
        .key_prefix(&app.prefix)
        .build()
        .unwrap();
    let manager = layer.manager();
    let router = Router::new()
        .route("/password", post(change_password))
        .with_state(manager)
        .layer(layer);

    let here = app
        .post("/login/dora", Some(&app.login().await))
        .await
        .new_id()
        .unwrap();
    let elsewhere = app
        .post("/login/dora", Some(&app.login().await))
        .await
        .new_id()
        .unwrap();
    let res = router
        .oneshot(
            Request::post("/password")
                .header(header::COOKIE, format!("sid={here}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = res.status();
    let new = res.headers().get(header::SET_COOKIE).and_then(|c| {
        let value = c.to_str().ok()?.strip_prefix("sid=")?.split(';').next()?;
        (!value.is_empty()).then(|| value.to_owned())
    });
    let mut problems = Vec::new();
    if status != StatusCode::OK {
        problems.push(format!("the password change answered {status}"));
    }
    match &new {
        Some(new) if app.loaded(new).await => {}
        _ => problems.push(format!("this device is logged out (new cookie {new:?})")),
    }
    if app.loaded(&elsewhere).await {
        problems.push("the other device is still logged in".to_owned());
    }
    assert_none(&problems);
}

// ---------------------------------------------------------------------------------------
// Absolute deadline and persistent cookies across a rotation

/// Held: a rotation close to the absolute deadline gives the new key what is left of the
/// deadline (not a fresh idle TTL), and the persistent cookie's `Max-Age` is that, rounded
/// up; the deadline in the new hash is the old one to the millisecond.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_near_the_deadline_carries_it_into_the_ttl_and_max_age() {
    let redis = Topology::Single.start().await;
    let app = probe_app(redis.client().await, |b| {
        b.persistent_cookie(true)
            .absolute_lifetime(Duration::from_millis(4500))
    })
    .await;
    let id = app.login().await;
    let deadline: String = app
        .client
        .hget(app.key(&id), "absolute_expires_at")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let res = app.post("/rotate", Some(&id)).await;
    assert_eq!(res.status, StatusCode::OK);
    let new = res.new_id().unwrap();
    let pttl: i64 = app.client.pttl(app.key(&new)).await.unwrap();
    assert!(pttl > 0 && pttl <= 2600, "{pttl}");
    let secs = i64::try_from(max_age(&res.set_cookie().unwrap()).unwrap()).unwrap();
    assert!(
        secs * 1000 >= pttl && secs * 1000 <= pttl + 1100,
        "Max-Age {secs}, PTTL {pttl}"
    );
    let moved: String = app
        .client
        .hget(app.key(&new), "absolute_expires_at")
        .await
        .unwrap();
    assert_eq!(moved, deadline);
    tokio::time::sleep(Duration::from_millis(u64::try_from(pttl).unwrap() + 100)).await;
    assert!(!app.loaded(&new).await, "past the deadline");
}

/// Held: a stale index entry (the session was tied to another user since) ends nobody
/// else's session: `terminate` and `terminate_all` of the first user leave it alone. A
/// young entry stays (it may be a tie in flight); one older than the grace is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_index_entry_never_ends_another_users_session() {
    let redis = Topology::Single.start().await;
    let app = probe_app(redis.client().await, |b| b.rotate_on_user_change(false)).await;
    let id = app.login().await;
    assert_eq!(
        app.post("/tie/alice", Some(&id)).await.status,
        StatusCode::OK
    );
    assert_eq!(app.post("/tie/bob", Some(&id)).await.status, StatusCode::OK);
    let member = tower_redis_session::SessionId::parse(&id)
        .unwrap()
        .digest()
        .to_owned();
    // An entry in alice's index that the re-tie failed to remove.
    script(
        &app,
        "lua/index_add.lua",
        app.index_key("alice"),
        vec![member.clone(), LIFETIME_MS.to_owned(), GRACE_MS.to_owned()],
    )
    .await;
    let handle = app
        .manager
        .handle(&tower_redis_session::SessionId::parse(&id).unwrap());
    assert!(!app.manager.terminate("alice", &handle).await.unwrap());
    let young: Option<f64> = app
        .client
        .zscore(app.index_key("alice"), &member)
        .await
        .unwrap();
    assert!(
        young.is_some(),
        "a young entry may be a tie in flight: kept"
    );
    // The same entry, left behind long ago.
    let _: i64 = app
        .client
        .zadd(
            app.index_key("alice"),
            None,
            None,
            false,
            false,
            (1.0, member),
        )
        .await
        .unwrap();
    assert_eq!(app.manager.terminate_all("alice", None).await.unwrap(), 0);
    assert!(app.loaded(&id).await, "bob's session lives on");
    assert_eq!(app.manager.list("bob").await.unwrap().len(), 1);
    let left: i64 = app.client.zcard(app.index_key("alice")).await.unwrap();
    assert_eq!(left, 0);
}
