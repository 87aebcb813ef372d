//! Cookies on the wire, and hostile cookies.

use std::time::Duration;

use axum::body::Body;
use http::{header, HeaderValue, Request, StatusCode};
use tower_redis_session::{fred::prelude::*, RedisSessionLayer, SameSite};

use crate::support::{reset_stats, round_trips, TestApp, Topology};

async fn cookie_attributes_follow_the_configuration(topology: Topology) {
    let cases: Vec<(&str, fn(_) -> _, &str)> = vec![
        (
            "plain name",
            |b| b,
            "sid=ID; HttpOnly; SameSite=Lax; Secure; Path=/",
        ),
        (
            "host prefix, strict",
            |b: tower_redis_session::RedisSessionLayerBuilder| {
                b.cookie_name("__Host-sid").same_site(SameSite::Strict)
            },
            "__Host-sid=ID; HttpOnly; SameSite=Strict; Secure; Path=/",
        ),
        (
            "domain and path, not secure, script-readable",
            |b: tower_redis_session::RedisSessionLayerBuilder| {
                b.domain("example.com")
                    .path("/app")
                    .secure(false)
                    .http_only(false)
            },
            "sid=ID; SameSite=Lax; Path=/app; Domain=example.com",
        ),
        (
            "persistent",
            |b: tower_redis_session::RedisSessionLayerBuilder| {
                b.persistent_cookie(true).idle_ttl(Duration::from_secs(600))
            },
            "sid=ID; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=600",
        ),
    ];
    for (name, configure, expected) in cases {
        // A server per case: the marker a logout leaves is under the case's own prefix.
        let redis = topology.start().await;
        let app = TestApp::with(&redis, configure).await;
        let cookie_name = expected.split('=').next().unwrap();
        let req = Request::post("/set/a/1").body(Body::empty()).unwrap();
        let res = app.send_request(req).await;
        let set = res
            .set_cookie()
            .unwrap_or_else(|| panic!("{name}: no Set-Cookie"));
        let id = set
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_owned();
        assert_eq!(set, expected.replace("ID", &id), "{name}");
        assert_eq!(res.headers["cache-control"], "no-store", "{name}");
        assert!(set.len() < 4096);

        // Logout clears it with the same attributes, or the browser would keep it.
        let req = Request::post("/logout")
            .header(header::COOKIE, format!("{cookie_name}={id}"))
            .body(Body::empty())
            .unwrap();
        let res = app.send_request(req).await;
        let removal = res.set_cookie().unwrap();
        let attrs: Vec<_> = expected
            .split("; ")
            .skip(1)
            .filter(|a| !a.starts_with("Max-Age"))
            .collect();
        assert!(
            removal.starts_with(&format!("{cookie_name}=;")),
            "{name}: {removal}"
        );
        assert!(removal.contains("Max-Age=0"), "{name}: {removal}");
        for attr in attrs {
            assert!(removal.contains(attr), "{name}: {removal} lacks {attr}");
        }
        app.check_keyspace().await;
    }
}

async fn persistent_cookie_is_refreshed_on_every_response_of_a_live_session(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::with(&redis, |b| {
        b.persistent_cookie(true).idle_ttl(Duration::from_secs(600))
    })
    .await;
    let id = app.login().await;
    let res = app.get("/read/username", Some(&id)).await;
    let set = res.set_cookie().expect("Max-Age refreshed");
    assert!(set.starts_with(&format!("sid={id};")));
    assert!(
        set.ends_with("Max-Age=600") || set.ends_with("Max-Age=599"),
        "{set}"
    );
    // After a per-session TTL change, every later write sets that session's TTL as
    // Max-Age, not the layer's default.
    app.post("/ttl/120", Some(&id)).await;
    let set = app.post("/set/a/1", Some(&id)).await.set_cookie().unwrap();
    assert!(set.ends_with("Max-Age=120"), "{set}");
    app.check_keyspace().await;
}

async fn app_cache_control_is_left_alone(topology: Topology) {
    let redis = topology.start().await;
    let client = redis.client().await;
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::post(|s: tower_redis_session::Session| async move {
                s.insert("a", "1").unwrap();
                ([(header::CACHE_CONTROL, "private, max-age=0")], "ok")
            }),
        )
        .layer(
            crate::support::layer(client)
                .key_prefix(crate::support::fresh_prefix())
                .build()
                .unwrap(),
        );
    let res = tower::ServiceExt::oneshot(app, Request::post("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert!(res.headers().contains_key(header::SET_COOKIE));
    let cc: Vec<_> = res
        .headers()
        .get_all(header::CACHE_CONTROL)
        .iter()
        .collect();
    assert_eq!(cc, vec![HeaderValue::from_static("private, max-age=0")]);
}

async fn bad_cookies_give_no_session_no_panic_and_touch_no_key_outside_the_prefix(
    topology: Topology,
) {
    let redis = topology.start_exclusive().await;
    let app = TestApp::new(&redis).await;
    let live = app.login().await;
    let big = "A".repeat(8 * 1024);
    let values: Vec<Vec<u8>> = vec![
        b"sid=garbage".to_vec(),
        format!("sid={big}").into_bytes(),
        format!("sid={live}; sid={live}").into_bytes(),
        b"sid=*".to_vec(),
        b"sid=../x".to_vec(),
        b"sid={a}b".to_vec(),
        b"sid=session:x".to_vec(),
        b"sid=\xff\xfe\xfd".to_vec(),
        [b"sid=\xff".as_slice(), &live.as_bytes()[1..]].concat(),
        format!("sid={}", &live[..42]).into_bytes(),
        format!("sid={live}=").into_bytes(),
        b"sid=".to_vec(),
        b";;;=;sid".to_vec(),
    ];
    reset_stats(&app.client).await;
    for value in values {
        let req = Request::get("/whoami")
            .header(header::COOKIE, HeaderValue::from_bytes(&value).unwrap())
            .body(Body::empty())
            .unwrap();
        let res = app.send_request(req).await;
        assert_eq!(res.status, StatusCode::OK, "{value:?}");
        assert!(
            res.body.starts_with("loaded=false"),
            "{value:?}: {}",
            res.body
        );
    }
    // Duplicate cookies in two headers are refused too.
    let req = Request::get("/whoami")
        .header(header::COOKIE, format!("sid={live}"))
        .header(header::COOKIE, format!("sid={live}"))
        .body(Body::empty())
        .unwrap();
    assert!(app.send_request(req).await.body.starts_with("loaded=false"));
    assert_eq!(
        round_trips(&app.client).await,
        0,
        "no bad cookie reached Redis"
    );
    let keys = app.keys().await;
    assert_eq!(keys, vec![app.key(&live)]);
    app.check_keyspace().await;
}

#[tokio::test]
async fn host_prefix_misconfiguration_is_refused_when_the_layer_is_built() {
    let client = Builder::default_centralized().build().unwrap();
    for (name, builder) in [
        (
            "not secure",
            RedisSessionLayer::builder(client.clone())
                .cookie_name("__Host-sid")
                .secure(false),
        ),
        (
            "path",
            RedisSessionLayer::builder(client.clone())
                .cookie_name("__Host-sid")
                .path("/app"),
        ),
        (
            "domain",
            RedisSessionLayer::builder(client)
                .cookie_name("__Host-sid")
                .domain("example.com"),
        ),
    ] {
        let err = builder.build().unwrap_err();
        assert!(err.to_string().contains("__Host-"), "{name}: {err}");
    }
}

async fn plain_keys_store_the_id_in_the_key_as_a_php_application_does(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::with(&redis, |b| b.plain_keys(true)).await;
    let id = app.post("/set/a/1", None).await.new_id().unwrap();
    let keys = app.keys().await;
    assert_eq!(keys, vec![format!("{}{id}", app.prefix)]);
    assert_eq!(app.get("/read/a", Some(&id)).await.body, "1");
}

/// Cookie tossing: a page on a sibling or parent subdomain plants `sid` for the parent
/// domain, so the browser sends two. Neither is trusted, and no removal is sent: a
/// host-only removal could only delete the real cookie and keep the planted one. With
/// the default `__Host-sid`, a planted `sid` is just another cookie, ignored.
async fn a_tossed_cookie_gives_no_session_and_never_removes_ours(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::new(&redis).await;
    let ours = app.login().await;
    let planted = app.login().await; // the attacker's own live session
    for write in [false, true] {
        let req = Request::builder()
            .method(if write { "POST" } else { "GET" })
            .uri(if write { "/set/a/1" } else { "/whoami" })
            // Host-only first, then the parent-domain one: the order browsers send them.
            .header(header::COOKIE, format!("sid={ours}; sid={planted}"))
            .body(Body::empty())
            .unwrap();
        let res = app.send_request(req).await;
        assert!(!res.clears_cookie(), "no removal for duplicates");
        if !write {
            assert!(res.body.starts_with("loaded=false"), "{}", res.body);
            assert_eq!(res.set_cookie(), None);
        }
    }
    assert!(app.is_live(&ours).await, "our session is untouched");
    app.check_keyspace().await;
    // Let go of the cluster before taking it again: a test waiting for it exclusively
    // would otherwise wait for this one, and this one for it.
    drop((app, redis));

    // After: the default name is one browsers protect; a planted `sid` is ignored.
    let redis = topology.start().await;
    let app = TestApp::with(&redis, |b| b.cookie_name("__Host-sid")).await;
    let res = app
        .send_request(
            Request::post("/set/username/ferris")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let set = res.set_cookie().unwrap();
    let ours = set
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("__Host-sid=");
    let req = Request::get("/whoami")
        .header(header::COOKIE, format!("__Host-sid={ours}; sid={planted}"))
        .body(Body::empty())
        .unwrap();
    let res = app.send_request(req).await;
    assert!(res.body.starts_with("loaded=true"), "{}", res.body);
}

session_tests! {
    a_tossed_cookie_gives_no_session_and_never_removes_ours,
    cookie_attributes_follow_the_configuration,
    persistent_cookie_is_refreshed_on_every_response_of_a_live_session,
    app_cache_control_is_left_alone,
    bad_cookies_give_no_session_no_panic_and_touch_no_key_outside_the_prefix,
    plain_keys_store_the_id_in_the_key_as_a_php_application_does,
}
