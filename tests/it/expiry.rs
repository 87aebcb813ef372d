//! Idle and absolute expiry, decided on Redis's clock.

use std::time::Duration;

use fred::prelude::*;

use crate::support::{TestApp, Topology};

async fn idle_session_expires_and_the_next_request_says_so(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::new(&redis).await;
    let id = app.login().await;
    app.post("/ttl/1", Some(&id)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let res = app.get("/whoami", Some(&id)).await;
    assert!(
        res.body.contains("loaded=false expired=true"),
        "{}",
        res.body
    );
    assert!(res.clears_cookie());
    app.check_keyspace().await;
}

/// Redis's clock in ms.
pub(crate) async fn redis_now_ms(app: &TestApp) -> u64 {
    let (secs, micros): (String, String) = app
        .client
        .custom(
            fred::types::CustomCommand::new_static("TIME", fred::types::ClusterHash::Random, false),
            Vec::<String>::new(),
        )
        .await
        .unwrap();
    secs.parse::<u64>().unwrap() * 1000 + micros.parse::<u64>().unwrap() / 1000
}

/// The session's deadline in ms, as stored.
async fn deadline_ms(app: &TestApp, id: &str) -> u64 {
    parse_ms(&app.hash(id).await["absolute_expires_at"])
}

/// `2026-04-02T12:34:56.789+00:00` -> Unix ms (UTC with a 3-digit fraction only: what
/// the layer writes).
fn parse_ms(text: &str) -> u64 {
    let t = text.strip_suffix("+00:00").unwrap();
    let (hms, frac) = t.split_once('.').unwrap();
    let secs = std::process::Command::new("date")
        .args(["-u", "-d", &format!("{hms}Z"), "+%s"])
        .output()
        .unwrap();
    let secs: u64 = String::from_utf8(secs.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    secs * 1000 + frac.parse::<u64>().unwrap()
}

async fn absolute_lifetime_ends_a_session_that_is_active_to_the_millisecond(topology: Topology) {
    let redis = topology.start().await;
    let lifetime = 3_000;
    let app = TestApp::with(&redis, |b| {
        b.idle_ttl(Duration::from_secs(60))
            .absolute_lifetime(Duration::from_millis(lifetime))
    })
    .await;
    let before = redis_now_ms(&app).await;
    let id = app.login().await;
    let after = redis_now_ms(&app).await;
    let deadline = deadline_ms(&app, &id).await;
    // Counted from the creation, by Redis's clock, to the millisecond.
    assert!(
        deadline >= before + lifetime && deadline <= after + lifetime,
        "deadline {deadline} not {lifetime} ms after a creation in [{before}, {after}]"
    );
    // The key expires exactly at the deadline, not a millisecond later.
    let expire_at: i64 = app
        .client
        .custom(
            fred::types::CustomCommand::new_static(
                "PEXPIRETIME",
                fred::types::ClusterHash::FirstKey,
                false,
            ),
            vec![app.key(&id)],
        )
        .await
        .unwrap();
    assert_eq!(expire_at as u64, deadline);
    // Served while the deadline is ahead, by Redis's clock; never once it has passed.
    loop {
        let now = redis_now_ms(&app).await;
        let res = app.get("/read/username", Some(&id)).await;
        let served = res.body == "ferris";
        let after = redis_now_ms(&app).await;
        if after + 20 < deadline {
            assert!(served, "not served at {now}, deadline {deadline}");
            let ttl = app.pttl(&id).await;
            assert!(
                ttl as u64 <= deadline - now,
                "key TTL {ttl} ms past the deadline"
            );
        }
        if now >= deadline {
            assert!(!served, "served at {now}, past the deadline {deadline}");
            assert!(res.clears_cookie());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!app.is_live(&id).await, "the key is gone");
    app.check_keyspace().await;
}

async fn a_session_without_a_stored_deadline_ends_at_created_at_plus_the_lifetime(
    topology: Topology,
) {
    let redis = topology.start().await;
    let app = TestApp::with(&redis, |b| {
        b.idle_ttl(Duration::from_secs(60))
            .absolute_lifetime(Duration::from_secs(5))
    })
    .await;
    let plant = |id: String, created_ago: u64| {
        let app = &app;
        async move {
            let created = redis_now_ms(app).await / 1000 - created_ago;
            let created = std::process::Command::new("date")
                .args([
                    "-u",
                    "-d",
                    &format!("@{created}"),
                    "+%Y-%m-%dT%H:%M:%S+00:00",
                ])
                .output()
                .unwrap();
            let created = String::from_utf8(created.stdout).unwrap().trim().to_owned();
            let _: () = app
                .client
                .hset(
                    app.key(&id),
                    [
                        ("created_at", created.as_str()),
                        ("last_accessed_at", created.as_str()),
                        ("session_ttl", "60"),
                        ("username", "legacy"),
                    ],
                )
                .await
                .unwrap();
            let _: () = app.client.expire(app.key(&id), 60, None).await.unwrap();
        }
    };
    // Created 10 s ago, lifetime 5 s: over, on load, on save and on rotation alike.
    let old = tower_redis_session::SessionId::generate().to_string();
    plant(old.clone(), 10).await;
    assert_eq!(app.get("/read/username", Some(&old)).await.body, "");
    assert!(!app.is_live(&old).await);
    // Created 2 s ago: served, and its key's TTL stops at created_at + 5 s.
    let young = tower_redis_session::SessionId::generate().to_string();
    plant(young.clone(), 2).await;
    assert_eq!(app.get("/read/username", Some(&young)).await.body, "legacy");
    assert!(app.pttl(&young).await <= 4_000);
    let res = app.post("/rotate", Some(&young)).await;
    let new = res.new_id().unwrap();
    let deadline = deadline_ms(&app, &new).await;
    let created = app.hash(&new).await["created_at"].clone();
    let created = parse_ms(&created.replace("+00:00", ".000+00:00"));
    assert_eq!(
        deadline,
        created + 5_000,
        "rotation carries created_at + lifetime"
    );
    app.check_keyspace().await;
}

async fn ttl_change_never_reaches_past_the_absolute_lifetime(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::with(&redis, |b| b.absolute_lifetime(Duration::from_secs(20))).await;
    let id = app.login().await;
    app.post("/ttl/3600", Some(&id)).await;
    let ttl = app.pttl(&id).await;
    assert!(ttl <= 20_000, "{ttl}");
    assert_eq!(app.hash(&id).await["session_ttl"], "3600");
    app.check_keyspace().await;
}

/// A stored deadline that has passed ends the session at its next load, and the key
/// goes. (Whose clock decides cannot be told apart here: Redis and the app share this
/// machine's clock, and libfaketime cannot shift a jemalloc-built `redis-server`. The
/// scripts take every time from Redis's `TIME`; the layer never reads the app's clock
/// for expiry.)
async fn a_stored_deadline_that_has_passed_ends_the_session_at_its_next_load(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::with(&redis, |b| b.absolute_lifetime(None)).await;
    let id = app.login().await;
    let _: () = app
        .client
        .hset(
            app.key(&id),
            ("absolute_expires_at", "2026-01-01T00:00:00.5+02:00"),
        )
        .await
        .unwrap();
    let res = app.get("/read/username", Some(&id)).await;
    assert_eq!(res.body, "");
    assert!(res.clears_cookie());
    assert!(!app.is_live(&id).await, "the key is gone");
}

async fn a_load_refreshes_last_accessed_at_and_the_ttl(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::with(&redis, |b| b.idle_ttl(Duration::from_secs(600))).await;
    let id = app.login().await;
    let _: () = app
        .client
        .hset(
            app.key(&id),
            ("last_accessed_at", "2026-01-01T00:00:00+00:00"),
        )
        .await
        .unwrap();
    let _: () = app.client.pexpire(app.key(&id), 5_000, None).await.unwrap();
    assert_eq!(app.get("/read/username", Some(&id)).await.body, "ferris");
    let stamp = app.hash(&id).await["last_accessed_at"].clone();
    assert_ne!(stamp, "2026-01-01T00:00:00+00:00", "the stamp moved");
    let ttl = app.pttl(&id).await;
    assert!(ttl > 590_000, "the TTL moved back to the idle TTL: {ttl}");
}

/// The timestamp grammar's table, run through the scripts' own parser against Redis.
async fn the_scripts_read_timestamps_with_the_same_grammar_as_the_rust_side(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::new(&redis).await;
    let prelude = tower_redis_session::__private::script_source("lua/common.lua").unwrap();
    let script = format!("{prelude}\nlocal t = parse_time(ARGV[1])\nif t then return tostring(t) end\nreturn false\n");
    for (text, expected) in tower_redis_session::__private::TIMESTAMP_CASES {
        let got: Option<String> = app
            .client
            .eval(
                script.as_str(),
                app.key(&tower_redis_session::SessionId::generate().to_string()),
                vec![*text],
            )
            .await
            .unwrap();
        let got = got.map(|ms| ms.parse::<f64>().unwrap() as u64);
        assert_eq!(got, *expected, "{text:?}");
    }
}

/// The scripts' own writer (`rfc3339`) writes every stamp of the shared table as the
/// Rust side does: to the millisecond for deadlines, in whole seconds for the others.
async fn the_scripts_write_timestamps_as_the_rust_side_does(topology: Topology) {
    let redis = topology.start().await;
    let app = TestApp::new(&redis).await;
    let prelude = tower_redis_session::__private::script_source("lua/common.lua").unwrap();
    let script = format!(
        "{prelude}\nlocal ms = tonumber(ARGV[1])\nreturn {{rfc3339(ms, true), rfc3339(ms)}}\n"
    );
    for (ms, text) in tower_redis_session::__private::STAMP_CASES {
        let got: Vec<String> = app
            .client
            .eval(
                script.as_str(),
                app.key(&tower_redis_session::SessionId::generate().to_string()),
                vec![ms.to_string()],
            )
            .await
            .unwrap();
        let whole_seconds = format!("{}+00:00", &text[..19]);
        assert_eq!(got, [text.to_string(), whole_seconds], "{ms}");
    }
}

session_tests! {
    idle_session_expires_and_the_next_request_says_so,
    absolute_lifetime_ends_a_session_that_is_active_to_the_millisecond,
    a_session_without_a_stored_deadline_ends_at_created_at_plus_the_lifetime,
    ttl_change_never_reaches_past_the_absolute_lifetime,
    a_load_refreshes_last_accessed_at_and_the_ttl,
    a_stored_deadline_that_has_passed_ends_the_session_at_its_next_load,
    the_scripts_read_timestamps_with_the_same_grammar_as_the_rust_side,
    the_scripts_write_timestamps_as_the_rust_side_does,
}
