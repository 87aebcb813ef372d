//! The `metrics` feature: what real requests against a real Redis record, read back
//! from a recorder, step by step.
//!
//! The recorder is installed for this test's thread only (`set_default_local_recorder`
//! on a current-thread runtime, where the layer's futures are polled), so the other
//! tests of this binary, running in parallel, never count into it.

use std::{collections::BTreeMap, time::Duration};

use http::StatusCode;
use metrics_util::{
    debugging::{DebugValue, DebuggingRecorder, Snapshotter},
    MetricKind,
};

use crate::support::{RedisServer, TestApp};

/// What was recorded since the last look, by `name{label=value,...}`: a counter's
/// increase, or a histogram's number of samples. Metrics that did not move are left out.
fn take(snapshotter: &Snapshotter) -> BTreeMap<String, u64> {
    let mut seen = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = key
            .key()
            .name()
            .strip_prefix("tower_redis_session_")
            .expect("every metric is under the crate's prefix")
            .to_owned();
        let name = if labels.is_empty() {
            name
        } else {
            format!("{name}{{{}}}", labels.join(","))
        };
        let n = match value {
            DebugValue::Counter(n) => n,
            DebugValue::Histogram(samples) => {
                assert!(
                    samples.iter().all(|s| s.0 >= 0.0 && s.0 < 5.0),
                    "{name}: {samples:?}"
                );
                samples.len() as u64
            }
            DebugValue::Gauge(_) => panic!("no gauges: {name}"),
        };
        if n > 0 {
            seen.insert(name, n);
        }
    }
    seen
}

fn counts(expected: &[(&str, u64)]) -> BTreeMap<String, u64> {
    expected
        .iter()
        .map(|(k, n)| ((*k).to_owned(), *n))
        .collect()
}

#[tokio::test]
async fn requests_are_counted_and_script_times_recorded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    tower_redis_session::describe_metrics();

    let mut server = RedisServer::start();
    let app = TestApp::with(&server, |b| b.command_timeout(Duration::from_millis(500))).await;
    assert_eq!(take(&snapshotter), counts(&[]), "building the layer");

    // No cookie, no write: no Redis, nothing counted.
    assert_eq!(app.get("/none", None).await.status, StatusCode::OK);
    assert_eq!(take(&snapshotter), counts(&[]));

    // A first write creates a session.
    let id = app.login().await;
    assert_eq!(
        take(&snapshotter),
        counts(&[
            ("created_total", 1),
            ("redis_duration_seconds{script=create}", 1)
        ])
    );

    // A read loads it.
    assert_eq!(app.get("/read/username", Some(&id)).await.body, "ferris");
    assert_eq!(
        take(&snapshotter),
        counts(&[
            ("loaded_total", 1),
            ("redis_duration_seconds{script=load}", 1)
        ])
    );

    // A write saves to it.
    assert_eq!(app.post("/incr/n", Some(&id)).await.status, StatusCode::OK);
    assert_eq!(
        take(&snapshotter),
        counts(&[
            ("loaded_total", 1),
            ("redis_duration_seconds{script=load}", 1),
            ("redis_duration_seconds{script=save}", 1),
        ])
    );

    // A rotation: the load, then its three scripts.
    let rotated = app.post("/rotate", Some(&id)).await.new_id().unwrap();
    assert_eq!(
        take(&snapshotter),
        counts(&[
            ("loaded_total", 1),
            ("rotated_total", 1),
            ("redis_duration_seconds{script=load}", 1),
            ("redis_duration_seconds{script=begin_rotate}", 1),
            ("redis_duration_seconds{script=create}", 1),
            ("redis_duration_seconds{script=finish_rotate}", 1),
        ])
    );

    // The old ID names a marker: a miss, and a write with it is refused (409).
    assert_eq!(app.get("/read/n", Some(&id)).await.status, StatusCode::OK);
    assert_eq!(
        take(&snapshotter),
        counts(&[
            ("load_misses_total{reason=rotated}", 1),
            ("redis_duration_seconds{script=load}", 1)
        ])
    );
    let res = app.post("/incr/n", Some(&id)).await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert_eq!(
        take(&snapshotter),
        counts(&[
            ("load_misses_total{reason=rotated}", 1),
            ("refused_total", 1),
            ("error_responses_total{status=409}", 1),
            ("redis_duration_seconds{script=load}", 1),
        ])
    );

    // A write in flight while another request logs out: the guard refuses it (409).
    let held = app.post("/gated/incr/n", Some(&rotated));
    let logout = async {
        app.gate.arrived.notified().await;
        let res = app.post("/logout", Some(&rotated)).await;
        app.gate.release.notify_one();
        res
    };
    let (held, logout) = tokio::join!(held, logout);
    assert!(logout.clears_cookie());
    assert_eq!(held.status, StatusCode::CONFLICT);
    assert_eq!(
        take(&snapshotter),
        counts(&[
            ("loaded_total", 2),
            ("destroyed_total", 1),
            ("refused_total", 1),
            ("error_responses_total{status=409}", 1),
            ("redis_duration_seconds{script=load}", 2),
            ("redis_duration_seconds{script=end}", 1),
            ("redis_duration_seconds{script=save}", 1),
        ])
    );
    app.get("/read/n", Some(&rotated)).await;
    assert_eq!(
        take(&snapshotter),
        counts(&[
            ("load_misses_total{reason=destroyed}", 1),
            ("redis_duration_seconds{script=load}", 1)
        ])
    );

    // An ID nobody made, and a key that holds no session.
    let unknown = tower_redis_session::SessionId::generate().to_string();
    app.get("/read/n", Some(&unknown)).await;
    let _: () = fred::interfaces::KeysInterface::set(
        &app.client,
        app.key(&unknown),
        "not a hash",
        None,
        None,
        false,
    )
    .await
    .unwrap();
    app.get("/read/n", Some(&unknown)).await;
    assert_eq!(
        take(&snapshotter),
        counts(&[
            ("load_misses_total{reason=missing}", 1),
            ("load_misses_total{reason=unusable}", 1),
            ("redis_duration_seconds{script=load}", 2),
        ])
    );

    // Sessions ended by the manager.
    let ann = app.login_as("ann").await;
    take(&snapshotter);
    assert_eq!(app.manager.terminate_all("ann", None).await.unwrap(), 1);
    app.get("/read/n", Some(&ann)).await;
    assert_eq!(
        take(&snapshotter),
        counts(&[
            ("terminated_total", 1),
            ("load_misses_total{reason=terminated}", 1),
            ("redis_duration_seconds{script=end}", 1),
            ("redis_duration_seconds{script=load}", 1),
        ])
    );

    // Redis down: a store error and a 503.
    server.stop();
    let res = app.get("/read/n", Some(&ann)).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    let seen = take(&snapshotter);
    let kind = ["timeout", "unavailable"]
        .into_iter()
        .find(|k| seen.contains_key(&format!("store_errors_total{{kind={k}}}")))
        .unwrap_or_else(|| panic!("a store error by kind: {seen:?}"));
    assert_eq!(
        seen,
        counts(&[
            (&format!("store_errors_total{{kind={kind}}}"), 1),
            ("error_responses_total{status=503}", 1),
            ("redis_duration_seconds{script=load}", 1),
        ])
    );
}

#[tokio::test]
async fn descriptions_and_units_are_given() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    tower_redis_session::describe_metrics();

    let server = RedisServer::start();
    let app = TestApp::new(&server).await;
    app.login().await;
    let snapshot = snapshotter.snapshot().into_vec();
    let described: BTreeMap<_, _> = snapshot
        .iter()
        .map(|(key, unit, description, _)| {
            (
                (key.kind(), key.key().name().to_owned()),
                (*unit, description.is_some()),
            )
        })
        .collect();
    assert_eq!(
        described,
        BTreeMap::from([
            (
                (
                    MetricKind::Counter,
                    "tower_redis_session_created_total".to_owned()
                ),
                (None, true)
            ),
            (
                (
                    MetricKind::Histogram,
                    "tower_redis_session_redis_duration_seconds".to_owned()
                ),
                (Some(metrics::Unit::Seconds), true)
            ),
        ])
    );
}
