//! The opt-in read cache (`read_cache`): a load within the touch interval is served
//! again from memory, with no round trip, until anything changes the session.

use std::time::Duration;

use fred::prelude::*;
use tower_redis_session::ReadCache;

use crate::support::{RedisServer, TestApp};

fn cached(
    b: tower_redis_session::RedisSessionLayerBuilder,
) -> tower_redis_session::RedisSessionLayerBuilder {
    b.touch_interval(Duration::from_secs(30))
        .read_cache(ReadCache::new())
}

/// Reads until a read is served from memory (the first load starts the cache's
/// connection, and its first barrier lets the cache serve).
async fn warm(app: &TestApp, sid: &str) {
    for _ in 0..100 {
        let hits = app.layer.cache_stats().unwrap().hits;
        app.get("/read/username", Some(sid)).await;
        if app.layer.cache_stats().unwrap().hits > hits {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "no read was served from memory: {:?}",
        app.layer.cache_stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_within_the_touch_interval_is_served_from_memory_until_another_program_changes_it() {
    let server = RedisServer::start();
    let app = TestApp::with(&server, cached).await;
    let sid = app.login_as("alice").await;
    warm(&app, &sid).await;
    let before = app.layer.cache_stats();
    eprintln!("{before:?}");
    let other = server_client(&server).await;
    let _: () = other
        .hset(app.key(&sid), ("username", "bob"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(app.get("/read/username", Some(&sid)).await.body, "bob");
}

async fn server_client(server: &RedisServer) -> Client {
    crate::support::connect_client(&server.url()).await
}
