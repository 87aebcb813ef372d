//! The behaviour tests of tower-sessions (its shared route tests and the tests of its
//! service), asked of this crate: the same requests and the same promises, against real
//! Redis on both topologies.
//!
//! Only what the API forces is adapted. Where this crate deliberately behaves otherwise,
//! the test says so and why. The main differences:
//! - a client's ID is never adopted, and a cookie that is not exactly an ID's shape is no
//!   cookie at all (tower-sessions' "bogus" nil UUID is malformed here);
//! - `flush` is [`Session::destroy`], `cycle_id` is [`Session::rotate_id`];
//! - an emptied session stays a session (its creation time and deadline live on);
//! - the cookie is a browser-session cookie unless `persistent_cookie(true)`, and then its
//!   `Max-Age` is what is left of the key's TTL, as with tower-sessions'
//!   `Expiry::OnInactivity` (idle TTL) and `Expiry::AtDateTime` (absolute lifetime).
//!
//! The cookie is named `id` here (tower-sessions' default) instead of `__Host-sid`, so that
//! every other attribute can be turned off.

use std::time::Duration;

use axum::{
    body::Body,
    routing::{get, post},
    Router,
};
use http::{header, HeaderValue, Request, StatusCode};
use tower_redis_session::{
    fred::prelude::*, RedisSessionLayer, RedisSessionLayerBuilder, SameSite, Session, SessionError,
    SessionId,
};

use crate::support::{Backend, Target, TestApp, TestResponse, Topology};

/// tower-sessions' routes, on this crate's session: one field `foo`, written as `42`.
fn routes() -> Router {
    async fn insert(session: Session) -> Result<&'static str, SessionError> {
        session.insert("foo", "42")?;
        Ok("ok")
    }
    async fn remove(session: Session) -> Result<String, SessionError> {
        Ok(format!("{:?}", session.remove("foo")?))
    }
    async fn cycle_id(session: Session) -> &'static str {
        session.rotate_id();
        "ok"
    }
    async fn flush(session: Session) -> &'static str {
        session.destroy();
        "ok"
    }
    async fn state(session: Session) -> String {
        format!(
            "loaded={} foo={:?}",
            session.is_loaded(),
            session.get("foo")
        )
    }
    Router::new()
        .route("/", get(|_: Session| async { "Hello, world!" }))
        .route("/insert", post(insert))
        .route(
            "/get",
            get(|s: Session| async move { format!("{:?}", s.get("foo")) }),
        )
        .route("/state", get(state))
        .route("/remove", post(remove))
        .route("/cycle_id", post(cycle_id))
        .route("/flush", post(flush))
}

/// A [`TestApp`] (its prefix, client and keyspace checks) serving [`routes`] behind a
/// layer with the cookie named `cookie` and the settings of `configure`.
struct Peer {
    app: TestApp,
    cookie: &'static str,
}

impl Peer {
    /// Redis for `topology` (keep it alive as long as the app) and the app on it.
    async fn on(
        topology: Topology,
        configure: impl Fn(RedisSessionLayerBuilder) -> RedisSessionLayerBuilder,
    ) -> (Backend, Self) {
        let redis = topology.start().await;
        let peer = Self::start(&redis, configure).await;
        (redis, peer)
    }

    async fn start(
        target: &impl Target,
        configure: impl Fn(RedisSessionLayerBuilder) -> RedisSessionLayerBuilder,
    ) -> Self {
        Self::named(target, "id", configure).await
    }

    async fn named(
        target: &impl Target,
        cookie: &'static str,
        configure: impl Fn(RedisSessionLayerBuilder) -> RedisSessionLayerBuilder,
    ) -> Self {
        let configure = |b: RedisSessionLayerBuilder| configure(b.cookie_name(cookie));
        let mut app = TestApp::with(target, configure).await;
        let layer = configure(
            RedisSessionLayer::builder(app.client.clone())
                .key_prefix(&app.prefix)
                .script_mode(crate::support::script_mode()),
        )
        .build()
        .unwrap();
        app.router = routes().layer(layer);
        Self { app, cookie }
    }

    /// Sends a request carrying `cookie` as the whole `Cookie` header, if any.
    async fn send_raw(&self, method: &str, path: &str, cookie: Option<&[u8]>) -> TestResponse {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(cookie) = cookie {
            req = req.header(header::COOKIE, HeaderValue::from_bytes(cookie).unwrap());
        }
        self.app
            .send_request(req.body(Body::empty()).unwrap())
            .await
    }

    /// Sends a request with the session cookie set to `id`, if any.
    async fn send(&self, method: &str, path: &str, id: Option<&str>) -> TestResponse {
        let cookie = id.map(|id| format!("{}={id}", self.cookie));
        self.send_raw(method, path, cookie.as_deref().map(str::as_bytes))
            .await
    }

    async fn get(&self, path: &str, id: Option<&str>) -> TestResponse {
        self.send("GET", path, id).await
    }

    async fn post(&self, path: &str, id: Option<&str>) -> TestResponse {
        self.send("POST", path, id).await
    }

    /// Starts a session holding `foo = 42`; returns its ID.
    async fn insert(&self) -> String {
        let res = self.post("/insert", None).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.body);
        res.new_id().expect("a first write sets the cookie")
    }
}

/// One `Set-Cookie` header, taken apart.
#[derive(Debug)]
struct SetCookie {
    name: String,
    value: String,
    /// Attributes as sent (`HttpOnly`, `Path=/`, ...), in order.
    attributes: Vec<String>,
}

impl SetCookie {
    /// The response's single `Set-Cookie` (fails if there is none).
    fn of(res: &TestResponse) -> Self {
        let text = res.set_cookie().expect("a Set-Cookie header");
        let mut parts = text.split("; ");
        let (name, value) = parts.next().unwrap().split_once('=').unwrap();
        Self {
            name: name.to_owned(),
            value: value.to_owned(),
            attributes: parts.map(str::to_owned).collect(),
        }
    }

    fn has(&self, attribute: &str) -> bool {
        self.attributes.iter().any(|a| a == attribute)
    }

    /// The value of `name=value` attribute `name`.
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find_map(|a| a.strip_prefix(name)?.strip_prefix('='))
    }

    fn max_age(&self) -> Option<i64> {
        self.attribute("Max-Age").map(|v| v.parse().unwrap())
    }

    /// Every attribute but `Max-Age` and `Expires`: what a removal must repeat.
    fn scope(&self) -> Vec<&str> {
        let mut scope: Vec<&str> = self
            .attributes
            .iter()
            .map(String::as_str)
            .filter(|a| !a.starts_with("Max-Age=") && !a.starts_with("Expires="))
            .collect();
        scope.sort_unstable();
        scope
    }

    fn is_removal(&self) -> bool {
        self.value.is_empty() && self.max_age() == Some(0)
    }
}

/// Asserts that `res` sets the cookie of `id` with a `Max-Age` equal to what is left of
/// the key's TTL (read right after the response, so it can only be a little lower; the
/// cookie's whole seconds may be rounded either way).
async fn assert_max_age_is_what_is_left(
    peer: &Peer,
    after: &str,
    res: &TestResponse,
    id: &str,
    at_most: i64,
) {
    let cookie = SetCookie::of(res);
    assert_eq!(cookie.value, id, "after {after}");
    let max_age = cookie.max_age().expect("a persistent cookie has Max-Age");
    let left_ms = peer.app.pttl(id).await;
    assert!(
        left_ms > 0,
        "after {after}: the session is gone ({left_ms})"
    );
    assert!(
        max_age <= at_most,
        "after {after}: Max-Age={max_age} outlives the session, which has {left_ms} ms left"
    );
    assert!(
        (left_ms - 1_000..=left_ms + 1_500).contains(&(max_age * 1_000)),
        "after {after}: Max-Age={max_age} but the key has {left_ms} ms left"
    );
}

// ---- tower-sessions' route tests ----

async fn a_request_that_leaves_the_session_alone_sets_no_cookie(topology: Topology) {
    let (_redis, peer) = Peer::on(topology, |b| b).await;
    let res = peer.get("/", None).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.set_cookie(), None);
    assert_eq!(peer.app.keys().await, Vec::<String>::new());
    peer.app.check_keyspace().await;
}

async fn a_well_formed_unknown_id_is_never_adopted(topology: Topology) {
    // tower-sessions plants a nil UUID; here that is not an ID's shape at all (see the
    // malformed test), so the "bogus" cookie is a well-formed ID nobody issued.
    let (_redis, peer) = Peer::on(topology, |b| b).await;
    let bogus = SessionId::generate().to_string();
    let res = peer.post("/insert", Some(&bogus)).await;
    assert_eq!(res.status, StatusCode::OK);
    let new = res.new_id().expect("the write sets a cookie");
    assert_ne!(new, bogus, "the client's ID is adopted");
    assert!(SessionId::parse(&new).is_some());
    assert!(
        peer.app.hash(&bogus).await.is_empty(),
        "a key under the bogus ID"
    );
    assert_eq!(peer.get("/get", Some(&new)).await.body, r#"Some("42")"#);
    assert_eq!(peer.get("/get", Some(&bogus)).await.body, "None");
    peer.app.check_keyspace().await;
}

async fn a_malformed_cookie_is_no_session_and_is_never_echoed(topology: Topology) {
    // tower-sessions answers a malformed cookie with a removal; here it is no cookie at all
    // (a Redis key is never built from it): whether a removal is sent is left open, but
    // nothing may carry the value back or build on it.
    let (_redis, peer) = Peer::on(topology, |b| b).await;
    let live = peer.insert().await;
    for value in [
        "malformed",
        "00000000-0000-0000-0000-000000000000",
        &live[..live.len() - 1],
        &format!("{live}A"),
    ] {
        let cookie = format!("id={value}");
        let res = peer
            .send_raw("GET", "/state", Some(cookie.as_bytes()))
            .await;
        assert_eq!(res.status, StatusCode::OK, "{value}");
        assert_eq!(res.body, "loaded=false foo=None", "{value}");
        if res.set_cookie().is_some() {
            assert!(SetCookie::of(&res).is_removal(), "{value}: {res:?}");
        }

        let res = peer
            .send_raw("POST", "/insert", Some(cookie.as_bytes()))
            .await;
        assert_eq!(res.status, StatusCode::OK, "{value}");
        let new = res.new_id().expect("a write sets a fresh cookie");
        assert_ne!(new, value);
        assert!(SessionId::parse(&new).is_some(), "{new}");
    }
    assert_eq!(peer.get("/get", Some(&live)).await.body, r#"Some("42")"#);
    peer.app.check_keyspace().await;
}

async fn a_first_insert_sets_the_cookie_with_the_configured_attributes(topology: Topology) {
    // tower-sessions' route tests run with `Expiry::OnInactivity(1 h)` and its defaults
    // (`SameSite=Strict`, `Secure`, `HttpOnly`); here that is a persistent cookie with a
    // one-hour idle TTL and `SameSite=Strict` asked for (the default is `Lax`).
    let (_redis, peer) = Peer::on(topology, |b| {
        b.persistent_cookie(true)
            .idle_ttl(Duration::from_secs(3600))
            .same_site(SameSite::Strict)
    })
    .await;
    let res = peer.post("/insert", None).await;
    let cookie = SetCookie::of(&res);
    assert_eq!(cookie.name, "id");
    assert!(SessionId::parse(&cookie.value).is_some());
    assert!(cookie.has("HttpOnly"), "{cookie:?}");
    assert!(cookie.has("SameSite=Strict"), "{cookie:?}");
    assert!(cookie.has("Secure"), "{cookie:?}");
    assert!(cookie.has("Path=/"), "{cookie:?}");
    let max_age = cookie.max_age().unwrap();
    assert!((3_599..=3_600).contains(&max_age), "Max-Age={max_age}");
    peer.app.check_keyspace().await;
}

async fn the_cookie_is_a_browser_session_cookie_unless_persistence_is_asked(topology: Topology) {
    // tower-sessions' `Expiry::OnSessionEnd`: no `Max-Age`, no `Expires`. It is this
    // crate's default, whatever the idle TTL.
    let (_redis, peer) = Peer::on(topology, |b| b.idle_ttl(Duration::from_secs(3600))).await;
    let res = peer.post("/insert", None).await;
    let cookie = SetCookie::of(&res);
    assert_eq!(cookie.max_age(), None, "{cookie:?}");
    assert_eq!(cookie.attribute("Expires"), None, "{cookie:?}");
    peer.app.check_keyspace().await;
}

async fn an_inserted_value_is_read_back_by_the_next_request(topology: Topology) {
    let (_redis, peer) = Peer::on(topology, |b| b).await;
    let id = peer.insert().await;
    let res = peer.get("/get", Some(&id)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body, r#"Some("42")"#);
    assert_eq!(res.set_cookie(), None, "a read sets no session cookie");
    assert_eq!(peer.app.hash(&id).await["foo"], "42");
    peer.app.check_keyspace().await;
}

async fn a_missing_value_reads_as_none(topology: Topology) {
    let (_redis, peer) = Peer::on(topology, |b| b).await;
    let res = peer.get("/get", None).await;
    assert_eq!(res.body, "None");
    assert_eq!(res.set_cookie(), None);
    let id = peer.insert().await;
    let res = peer.post("/remove", Some(&id)).await;
    assert_eq!(
        res.body, r#"Some("42")"#,
        "remove returns the value it removed"
    );
    let res = peer.post("/remove", Some(&id)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body, "None", "removing it again finds nothing");
    peer.app.check_keyspace().await;
}

async fn removing_the_last_value_leaves_an_empty_session_under_the_same_id(topology: Topology) {
    // tower-sessions deletes a session once it is empty and removes its cookie. Here an
    // emptied session stays: its creation time and absolute deadline (and its user, if
    // tied) live in the hash, and deleting it would let a client restart the absolute
    // lifetime just by emptying its session.
    let (_redis, peer) = Peer::on(topology, |b| b).await;
    let id = peer.insert().await;
    let res = peer.post("/remove", Some(&id)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        res.set_cookie(),
        None,
        "the cookie is neither reset nor removed"
    );
    let res = peer.get("/state", Some(&id)).await;
    assert_eq!(res.body, "loaded=true foo=None");
    let hash = peer.app.hash(&id).await;
    assert!(!hash.contains_key("foo"), "{hash:?}");
    assert!(hash.contains_key("created_at"), "{hash:?}");
    assert!(peer.app.pttl(&id).await > 0);
    peer.app.check_keyspace().await;
}

async fn cycling_the_id_moves_the_data_and_retires_the_old_id(topology: Topology) {
    let (_redis, peer) = Peer::on(topology, |b| b).await;
    let first = peer.insert().await;
    let res = peer.post("/cycle_id", Some(&first)).await;
    assert_eq!(res.status, StatusCode::OK);
    let second = res.new_id().expect("the new ID is set");
    assert_ne!(first, second);
    assert_eq!(peer.get("/get", Some(&second)).await.body, r#"Some("42")"#);
    // What the response to the old cookie does with it is this crate's own (a late
    // request must not wipe the new cookie); the old ID just grants nothing.
    assert_eq!(
        peer.get("/state", Some(&first)).await.body,
        "loaded=false foo=None"
    );
    peer.app.check_keyspace().await;
}

async fn flushing_ends_the_session_and_expires_the_cookie(topology: Topology) {
    // tower-sessions' `flush` is `destroy` here (logout).
    let (_redis, peer) = Peer::on(topology, |b| b).await;
    let id = peer.insert().await;
    let res = peer.post("/flush", Some(&id)).await;
    assert_eq!(res.status, StatusCode::OK);
    let cookie = SetCookie::of(&res);
    assert_eq!(cookie.name, "id");
    assert_eq!(cookie.value, "");
    assert_eq!(cookie.max_age(), Some(0));
    assert!(!peer.app.hash(&id).await.contains_key("foo"));
    assert_eq!(
        peer.get("/state", Some(&id)).await.body,
        "loaded=false foo=None"
    );
    peer.app.check_keyspace().await;
}

async fn an_expired_session_reads_as_none_and_a_write_gets_a_new_id(topology: Topology) {
    let (_redis, peer) = Peer::on(topology, |b| b.idle_ttl(Duration::from_secs(1))).await;
    let id = peer.insert().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let res = peer.get("/state", Some(&id)).await;
    assert_eq!(res.body, "loaded=false foo=None");
    assert!(
        SetCookie::of(&res).is_removal(),
        "the stale cookie is cleared"
    );
    let res = peer.post("/insert", Some(&id)).await;
    let new = res.new_id().expect("a write starts a new session");
    assert_ne!(new, id, "the expired ID is never reused");
    peer.app.check_keyspace().await;
}

// ---- tower-sessions' service tests ----

async fn same_site_none_lax_and_strict_are_sent_as_configured(topology: Topology) {
    for (same_site, text) in [
        (SameSite::None, "SameSite=None"),
        (SameSite::Lax, "SameSite=Lax"),
        (SameSite::Strict, "SameSite=Strict"),
    ] {
        // A server per case: a logout leaves a marker under the case's own prefix.
        let redis = topology.start().await;
        let peer = Peer::start(&redis, |b| b.same_site(same_site)).await;
        let res = peer.post("/insert", None).await;
        let cookie = SetCookie::of(&res);
        assert!(cookie.has(text), "{text}: {cookie:?}");
        // `SameSite=None` is sent only with `Secure`, or browsers drop the cookie.
        assert!(cookie.has("Secure"), "{text}: {cookie:?}");
        let res = peer.post("/flush", Some(&cookie.value)).await;
        assert!(SetCookie::of(&res).has(text), "{text}: removal");
        peer.app.check_keyspace().await;
    }
}

#[tokio::test]
async fn same_site_none_without_secure_is_refused_when_the_layer_is_built() {
    // tower-sessions sends it; browsers then drop the cookie, so here it is a
    // configuration error.
    let client = Builder::default_centralized().build().unwrap();
    let built = RedisSessionLayer::builder(client)
        .cookie_name("id")
        .same_site(SameSite::None)
        .secure(false)
        .build();
    assert!(built.is_err(), "SameSite=None without Secure was accepted");
}

async fn cookie_name_path_and_domain_are_sent_as_configured(topology: Topology) {
    let redis = topology.start().await;
    let peer = Peer::named(&redis, "my.sid", |b| {
        b.path("/foo/bar").domain("example.com")
    })
    .await;
    let res = peer.post("/insert", None).await;
    let cookie = SetCookie::of(&res);
    assert_eq!(cookie.name, "my.sid");
    assert_eq!(cookie.attribute("Path"), Some("/foo/bar"));
    assert_eq!(cookie.attribute("Domain"), Some("example.com"));
    let id = cookie.value;
    assert_eq!(peer.get("/get", Some(&id)).await.body, r#"Some("42")"#);
    peer.app.check_keyspace().await;
}

async fn a_removal_repeats_the_cookie_attributes_with_http_only_and_secure_off(topology: Topology) {
    // A removal that differs from the cookie in scope leaves the cookie in the browser.
    // Both removals are checked: logout, and a stale cookie for a session that is gone.
    for (http_only, secure) in [(true, true), (false, true), (true, false), (false, false)] {
        let redis = topology.start().await;
        let peer = Peer::start(&redis, |b| {
            b.http_only(http_only)
                .secure(secure)
                .path("/app")
                .domain("example.com")
        })
        .await;
        let case = format!("http_only({http_only}) secure({secure})");
        let set = SetCookie::of(&peer.post("/insert", None).await);
        assert_eq!(set.has("HttpOnly"), http_only, "{case}: {set:?}");
        assert_eq!(set.has("Secure"), secure, "{case}: {set:?}");

        let logout = SetCookie::of(&peer.post("/flush", Some(&set.value)).await);
        let stale = SessionId::generate().to_string();
        let stale = SetCookie::of(&peer.get("/state", Some(&stale)).await);
        for (what, removal) in [("logout", logout), ("stale cookie", stale)] {
            assert!(removal.is_removal(), "{case}, {what}: {removal:?}");
            assert_eq!(removal.name, set.name, "{case}, {what}");
            assert_eq!(removal.scope(), set.scope(), "{case}, {what}");
        }
        peer.app.check_keyspace().await;
    }
}

async fn persistent_max_age_is_the_idle_ttl(topology: Topology) {
    // tower-sessions' `Expiry::OnInactivity(2 h)`.
    let (_redis, peer) = Peer::on(topology, |b| {
        b.persistent_cookie(true)
            .idle_ttl(Duration::from_secs(2 * 3600))
            .absolute_lifetime(Duration::from_secs(24 * 3600))
    })
    .await;
    let res = peer.post("/insert", None).await;
    let id = res.new_id().unwrap();
    assert_max_age_is_what_is_left(&peer, "a create", &res, &id, 7_200).await;
    assert!(SetCookie::of(&res).max_age().unwrap() >= 7_199);
    peer.app.check_keyspace().await;
}

async fn persistent_cookie_on_a_read_keeps_the_id_and_pushes_the_expiry(topology: Topology) {
    // tower-sessions' `with_always_save(true)` with `Expiry::OnInactivity`: the same ID,
    // a later expiry. Here every load pushes the key's TTL anyway; the persistent mode
    // sends the cookie again so the browser's copy is pushed too.
    let (_redis, peer) = Peer::on(topology, |b| {
        b.persistent_cookie(true)
            .idle_ttl(Duration::from_secs(2 * 3600))
    })
    .await;
    let id = peer.insert().await;
    let _: () = peer
        .app
        .client
        .pexpire(peer.app.key(&id), 100_000, None)
        .await
        .unwrap();
    let res = peer.get("/get", Some(&id)).await;
    assert_eq!(res.body, r#"Some("42")"#);
    assert_max_age_is_what_is_left(&peer, "a read", &res, &id, 7_200).await;
    assert!(
        peer.app.pttl(&id).await > 7_190_000,
        "the key's TTL was pushed"
    );
    peer.app.check_keyspace().await;
}

async fn session_cookie_on_a_read_sets_nothing_but_the_expiry_is_pushed(topology: Topology) {
    // tower-sessions' `with_always_save(true)` with `Expiry::OnSessionEnd` sends the
    // cookie again on every response. A browser-session cookie has nothing to refresh,
    // so here a read sends none; the sliding expiry lives in Redis.
    let (_redis, peer) = Peer::on(topology, |b| b.idle_ttl(Duration::from_secs(600))).await;
    let id = peer.insert().await;
    let _: () = peer
        .app
        .client
        .pexpire(peer.app.key(&id), 100_000, None)
        .await
        .unwrap();
    let res = peer.get("/get", Some(&id)).await;
    assert_eq!(res.body, r#"Some("42")"#);
    assert_eq!(res.set_cookie(), None);
    assert!(
        peer.app.pttl(&id).await > 590_000,
        "the key's TTL was pushed"
    );
    peer.app.check_keyspace().await;
}

/// A persistent cookie on a session whose absolute lifetime (5 s) ends long before its
/// idle TTL (60 s): tower-sessions' `Expiry::AtDateTime`.
async fn short_lived(topology: Topology) -> (Backend, Peer) {
    Peer::on(topology, |b| {
        b.persistent_cookie(true)
            .idle_ttl(Duration::from_secs(60))
            .absolute_lifetime(Duration::from_secs(5))
    })
    .await
}

async fn persistent_max_age_after_a_create_is_what_is_left_of_the_absolute_lifetime(
    topology: Topology,
) {
    let (_redis, peer) = short_lived(topology).await;
    let res = peer.post("/insert", None).await;
    let id = res.new_id().unwrap();
    assert_max_age_is_what_is_left(&peer, "a create", &res, &id, 5).await;
    peer.app.check_keyspace().await;
}

async fn persistent_max_age_after_a_write_is_what_is_left_of_the_absolute_lifetime(
    topology: Topology,
) {
    let (_redis, peer) = short_lived(topology).await;
    let id = peer.insert().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // A read is capped by the deadline...
    let res = peer.get("/get", Some(&id)).await;
    assert_max_age_is_what_is_left(&peer, "a read", &res, &id, 4).await;
    // ...and so must a write be.
    let res = peer.post("/insert", Some(&id)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_max_age_is_what_is_left(&peer, "a write", &res, &id, 4).await;
    peer.app.check_keyspace().await;
}

async fn persistent_max_age_after_a_rotation_is_what_is_left_of_the_absolute_lifetime(
    topology: Topology,
) {
    let (_redis, peer) = short_lived(topology).await;
    let old = peer.insert().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let res = peer.post("/cycle_id", Some(&old)).await;
    let new = res.new_id().expect("the new ID is set");
    assert_ne!(new, old);
    assert_max_age_is_what_is_left(&peer, "a rotation", &res, &new, 4).await;
    peer.app.check_keyspace().await;
}

async fn rewriting_an_unchanged_value_keeps_the_session_and_its_cookie(topology: Topology) {
    // tower-sessions does not count an insert of the value already there as a change.
    // Here it is written back (another request may have changed the field meanwhile, and
    // this one's write must win), but it is no new session: same ID, no cookie.
    let (_redis, peer) = Peer::on(topology, |b| b).await;
    let id = peer.insert().await;
    let res = peer.post("/insert", Some(&id)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.set_cookie(), None);
    assert_eq!(peer.get("/get", Some(&id)).await.body, r#"Some("42")"#);
    assert_eq!(peer.app.keys().await, vec![peer.app.key(&id)]);
    peer.app.check_keyspace().await;
}

async fn removing_a_value_without_a_session_creates_no_session(topology: Topology) {
    // A logout handler that calls `remove("user")` on an anonymous request: removing a
    // field that is not there is not a change.
    let (_redis, peer) = Peer::on(topology, |b| b).await;
    let res = peer.post("/remove", None).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body, "None");
    assert_eq!(res.set_cookie(), None, "no session, no cookie");
    assert_eq!(peer.app.keys().await, Vec::<String>::new(), "no key");
    peer.app.check_keyspace().await;
}

session_tests! {
    a_request_that_leaves_the_session_alone_sets_no_cookie,
    a_well_formed_unknown_id_is_never_adopted,
    a_malformed_cookie_is_no_session_and_is_never_echoed,
    a_first_insert_sets_the_cookie_with_the_configured_attributes,
    the_cookie_is_a_browser_session_cookie_unless_persistence_is_asked,
    an_inserted_value_is_read_back_by_the_next_request,
    a_missing_value_reads_as_none,
    removing_the_last_value_leaves_an_empty_session_under_the_same_id,
    cycling_the_id_moves_the_data_and_retires_the_old_id,
    flushing_ends_the_session_and_expires_the_cookie,
    an_expired_session_reads_as_none_and_a_write_gets_a_new_id,
    same_site_none_lax_and_strict_are_sent_as_configured,
    cookie_name_path_and_domain_are_sent_as_configured,
    a_removal_repeats_the_cookie_attributes_with_http_only_and_secure_off,
    persistent_max_age_is_the_idle_ttl,
    persistent_cookie_on_a_read_keeps_the_id_and_pushes_the_expiry,
    session_cookie_on_a_read_sets_nothing_but_the_expiry_is_pushed,
    persistent_max_age_after_a_create_is_what_is_left_of_the_absolute_lifetime,
    persistent_max_age_after_a_write_is_what_is_left_of_the_absolute_lifetime,
    persistent_max_age_after_a_rotation_is_what_is_left_of_the_absolute_lifetime,
    rewriting_an_unchanged_value_keeps_the_session_and_its_cookie,
    removing_a_value_without_a_session_creates_no_session,
}
