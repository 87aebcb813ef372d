//! Promises under attack: interleavings and stored data that the contract covers and
//! that each test below drives into a state the contract rules out.

use std::{collections::HashMap, sync::Arc};

use axum::body::Body;
use axum::{extract::State, routing::post, Router};
use fred::prelude::*;
use http::{header, Request, StatusCode};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;
use tower_redis_session::{
    IdFormat, RedisSessionLayer, RedisSessionLayerBuilder, Session, SessionError, SessionId,
    SessionManager,
};

use crate::support::{Gate, TestApp, Topology};

/// An app of this file's own: a few handlers the shared test app does not have.
struct App {
    router: Router,
    manager: SessionManager,
    gate: Arc<Gate>,
    prefix: String,
}

async fn gated_logout(State(gate): State<Arc<Gate>>, session: Session) -> &'static str {
    gate.pass().await;
    session.destroy();
    "logged out"
}

async fn start(session: Session) -> Result<&'static str, SessionError> {
    session.insert("username", "ferris")?;
    Ok("ok")
}

/// Ties the session to a user and nothing else (with `rotate_on_user_change(false)` it
/// keeps its ID).
async fn tie(
    session: Session,
    axum::extract::Path(user): axum::extract::Path<String>,
) -> Result<&'static str, SessionError> {
    session.set_user_id(user)?;
    Ok("ok")
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl App {
    async fn new(
        client: Client,
        configure: impl FnOnce(RedisSessionLayerBuilder) -> RedisSessionLayerBuilder,
    ) -> Self {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("review{n}:session:");
        let layer = configure(
            RedisSessionLayer::builder(client)
                .key_prefix(&prefix)
                .cookie_name("sid"),
        )
        .build()
        .unwrap();
        let gate = Arc::new(Gate::default());
        let manager = layer.manager();
        // The shared test app's routes (`/rotate`, `/logout`, ...), and this file's own.
        let router = crate::support::routes(Arc::clone(&gate))
            .merge(
                Router::new()
                    .route("/start", post(start))
                    .route("/gated/logout", post(gated_logout))
                    .route("/tie/{user}", post(tie))
                    .with_state(Arc::clone(&gate)),
            )
            .layer(layer);
        Self {
            router,
            manager,
            gate,
            prefix,
        }
    }

    async fn post(&self, path: &str, sid: Option<&str>) -> (StatusCode, Vec<String>) {
        let res = self
            .router
            .clone()
            .oneshot(crate::support::request("POST", path, sid))
            .await
            .unwrap();
        let cookies = res
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let status = res.status();
        let _ = res.into_body().collect().await;
        (status, cookies)
    }
}

fn id_in(cookies: &[String]) -> Option<String> {
    cookies.iter().find_map(|c| {
        let value = c.strip_prefix("sid=")?.split(';').next()?;
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// A logout that loaded the session before a parallel request rotated it (a login in
/// another tab, a single-page app's parallel requests) ends nothing: the session lives
/// on under the new ID. Its response must not report success, and must not clear the
/// cookie, which the browser may have replaced with the new one by now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_that_lost_a_race_with_a_rotation_neither_reports_success_nor_clears_the_new_cookie(
) {
    let redis = Topology::Single.start().await;
    let client = redis.client().await;
    let app = Arc::new(App::new(client.clone(), |b| b).await);
    let (_, cookies) = app.post("/start", None).await;
    let old = id_in(&cookies).expect("a session");

    let logout = {
        let app = Arc::clone(&app);
        let old = old.clone();
        tokio::spawn(async move { app.post("/gated/logout", Some(&old)).await })
    };
    app.gate.arrived.notified().await;
    let (status, cookies) = app.post("/rotate", Some(&old)).await;
    assert_eq!(status, StatusCode::OK);
    let new = id_in(&cookies).expect("rotation sets the new cookie");
    app.gate.release.notify_one();
    let (status, cookies) = logout.await.unwrap();

    let new_key = format!("{}{}", app.prefix, SessionId::parse(&new).unwrap().digest());
    let still_live: bool = client.hexists(&new_key, "session_ttl").await.unwrap();
    assert!(
        !(still_live && status.is_success()),
        "logout answered {status} while the session lives on under its new ID"
    );
    assert!(
        cookies.is_empty(),
        "the late logout sent {cookies:?}: it wipes the new cookie the browser just stored"
    );
}

/// The same with a logout that arrives after the rotation: its cookie names the rotated
/// session, so it ends nothing, while the session lives on under the new ID. Telling the
/// user "logged out" (2xx) would be a refused change reported as done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_carrying_a_rotated_id_is_not_reported_done_while_the_session_lives_on() {
    let redis = Topology::Single.start().await;
    let client = redis.client().await;
    let app = App::new(client.clone(), |b| b).await;
    let (_, cookies) = app.post("/start", None).await;
    let old = id_in(&cookies).expect("a session");
    let (_, cookies) = app.post("/rotate", Some(&old)).await;
    let new = id_in(&cookies).expect("rotation sets the new cookie");

    let (status, cookies) = app.post("/logout", Some(&old)).await;
    assert!(
        cookies.is_empty(),
        "the cookie may have been replaced: {cookies:?}"
    );
    let new_key = format!("{}{}", app.prefix, SessionId::parse(&new).unwrap().digest());
    let still_live: bool = client.hexists(&new_key, "session_ttl").await.unwrap();
    assert!(
        !(still_live && status.is_success()),
        "logout answered {status} while the session lives on under its new ID"
    );
}

/// Stored timestamps another program wrote are read, never trusted: an odd value is
/// ignored, never a panic (here a non-ASCII character straddling the seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_timestamp_in_a_stored_session_never_panics() {
    let redis = Topology::Single.start().await;
    let app = Arc::new(TestApp::new(&redis).await);
    let id = app.login_as("alice").await;
    let hostile = "2026-04-02T12:34:5\u{e9}Z";
    let _: () = app
        .client
        .hset(app.key(&id), ("last_accessed_at", hostile))
        .await
        .unwrap();

    let request = {
        let app = Arc::clone(&app);
        let id = id.clone();
        tokio::spawn(async move { app.get("/read/username", Some(&id)).await })
    };
    let res = request.await;
    assert!(
        res.is_ok(),
        "a request on a session with last_accessed_at = {hostile:?} panicked"
    );

    // The load above rewrote the stamp; plant it again for the manager.
    let _: () = app
        .client
        .hset(app.key(&id), ("last_accessed_at", hostile))
        .await
        .unwrap();
    let manager = app.manager.clone();
    let listed = tokio::spawn(async move { manager.list("alice").await }).await;
    assert!(
        listed.is_ok(),
        "SessionManager::list on a session with last_accessed_at = {hostile:?} panicked"
    );
}

/// Runs the create script by hand: the second step of a login, after its index entry
/// was written. Returns the script's status.
async fn create_by_hand(client: &Client, key: &str, user: &str) -> i64 {
    let source = tower_redis_session::__private::script_source("lua/create.lua").unwrap();
    let reply: Vec<Value> = client
        .eval(
            source,
            vec![key.to_owned()],
            vec![
                "3600".to_owned(),
                "43200000".to_owned(),
                "user_id".to_owned(),
                user.to_owned(),
                "username".to_owned(),
                user.to_owned(),
            ],
        )
        .await
        .unwrap();
    match &reply[0] {
        Value::Array(items) => items[0].as_i64().unwrap(),
        other => panic!("create replied {other:?}"),
    }
}

/// The key of `user`'s index, found through a login of that user.
async fn index_key(app: &TestApp) -> String {
    let keys = crate::support::keys_matching(&app.client, &format!("{}user:*", app.prefix)).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    keys[0].clone()
}

fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64
}

/// A login in flight has written its index entry and not yet its session when "log out
/// everywhere" (by scan) runs: afterwards the session is tied, live, and missing from
/// its user's index, so the next "log out everywhere" cannot end it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_all_by_scan_never_drops_the_index_entry_of_a_login_in_flight() {
    let redis = Topology::Single.start().await;
    let app = TestApp::new(&redis).await;
    app.login_as("alice").await;
    let index = index_key(&app).await;

    // Step 1 of a login on another app server: the index entry.
    let id = SessionId::generate();
    let _: i64 = app
        .client
        .zadd(&index, None, None, false, false, (now_ms(), id.digest()))
        .await
        .unwrap();
    // Meanwhile, "log out everywhere" by scan.
    app.manager.terminate_all_by_scan("alice").await.unwrap();
    // Step 2 of the login: the session (refused, -2, if a marker now holds its key).
    let created = create_by_hand(&app.client, &app.key(id.as_str()), "alice").await;
    assert!(created == 1 || created == -2, "{created}");

    app.manager.terminate_all("alice", None).await.unwrap();
    assert!(
        !app.is_live(id.as_str()).await,
        "a session tied to alice outlived \"log out everywhere\": its index entry was deleted"
    );
}

/// Index entries must be aged by one clock: were they scored with the clock of the app
/// server that wrote them and pruned by the clock of the one that lists, app servers two
/// minutes apart would let a login in flight lose its entry to a `list` on another
/// server, and "log out everywhere" could not end the session it creates. A login adds
/// its entry with the layer's own script, whatever its app server's clock says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_never_drops_the_entry_of_a_login_in_flight_whatever_the_app_clocks() {
    let redis = Topology::Single.start().await;
    let app = TestApp::new(&redis).await;
    app.login_as("alice").await;
    let index = index_key(&app).await;

    // Step 1 of a login on any app server, whatever its clock: the layer's own script.
    let id = SessionId::generate();
    let source = tower_redis_session::__private::script_source("lua/index_add.lua").unwrap();
    let _: Value = app
        .client
        .eval(
            source,
            vec![index.clone()],
            vec![
                id.digest().to_owned(),
                "43200000".to_owned(),
                "60000".to_owned(),
            ],
        )
        .await
        .unwrap();
    // Meanwhile another server lists alice's sessions (and prunes).
    app.manager.list("alice").await.unwrap();
    // Step 2 of the login.
    assert_eq!(
        create_by_hand(&app.client, &app.key(id.as_str()), "alice").await,
        1
    );
    let _ = now_ms;

    app.manager.terminate_all("alice", None).await.unwrap();
    assert!(
        !app.is_live(id.as_str()).await,
        "a session tied to alice outlived \"log out everywhere\": its entry was pruned while it was being created"
    );
}

/// With `plain_keys` and IDs of another program's format, a session handle must still
/// be a digest of the ID, never the working ID itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_handle_is_never_a_working_id_with_plain_keys_and_another_id_format() {
    let redis = Topology::Single.start().await;
    let client = redis.client().await;
    let format = IdFormat::Hex { bytes: 16 };
    let app = App::new(client.clone(), |b| {
        b.plain_keys(true)
            .id_format(format)
            .rotate_on_user_change(false)
    })
    .await;
    // A session another program (PHP) started, under its own ID.
    let php_id = "0123456789abcdef0123456789abcdef";
    let key = format!("{}{php_id}", app.prefix);
    let fields: HashMap<&str, &str> = [("session_ttl", "3600"), ("username", "alice")].into();
    let stamp = httpdate_rfc3339(std::time::SystemTime::now());
    let mut fields = fields;
    fields.insert("created_at", &stamp);
    fields.insert("last_accessed_at", &stamp);
    let _: () = client.hset(&key, fields).await.unwrap();
    let _: () = client.expire(&key, 3600, None).await.unwrap();

    let (status, _) = app.post("/tie/alice", Some(php_id)).await;
    assert_eq!(status, StatusCode::OK);
    let list = app.manager.list("alice").await.unwrap();
    assert_eq!(list.len(), 1);
    let handle = list[0].handle.as_str().to_owned();
    assert_ne!(
        handle, php_id,
        "the handle shown to users is the working session ID"
    );
    assert_eq!(
        handle,
        SessionId::parse_as(php_id, format).unwrap().digest(),
        "the handle is the ID's digest"
    );
}

/// `YYYY-MM-DDTHH:MM:SS+00:00` of a time (whole seconds).
pub(crate) fn httpdate_rfc3339(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A persistent cookie is re-sent on reads to refresh its `Max-Age`; a response that a
/// shared cache may store must never carry it. `Cache-Control: max-age=300` without
/// `private` is such a response (RFC 9111, 3 and 5.2.2): a CDN may store it, and hand
/// this user's session cookie to everyone who asks for the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_a_shared_cache_may_store_never_carries_the_session_cookie() {
    let redis = Topology::Single.start().await;
    let client = redis.client().await;
    let layer = RedisSessionLayer::builder(client)
        .key_prefix("review-cache:session:")
        .cookie_name("sid")
        .persistent_cookie(true)
        .build()
        .unwrap();
    let router = Router::new()
        .route("/start", post(start))
        .route(
            "/page",
            axum::routing::get(|session: Session| async move {
                let name = session.get("username").unwrap_or_default();
                ([(header::CACHE_CONTROL, "max-age=300")], name)
            }),
        )
        .layer(layer);
    let res = router
        .clone()
        .oneshot(Request::post("/start").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let cookies: Vec<String> = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let id = id_in(&cookies).unwrap();

    let res = router
        .oneshot(
            Request::get("/page")
                .header(header::COOKIE, format!("sid={id}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let cc: Vec<_> = res
        .headers()
        .get_all(header::CACHE_CONTROL)
        .iter()
        .collect();
    assert!(
        !res.headers().contains_key(header::SET_COOKIE),
        "a response with Cache-Control {cc:?} (storable by a shared cache) carries {:?}",
        res.headers().get(header::SET_COOKIE)
    );
}
