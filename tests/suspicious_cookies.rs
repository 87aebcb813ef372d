//! Suspicious session cookies (malformed, duplicated, naming no session) are logged as a
//! warning an operator sees, at most one a second, with how many were left out.
//!
//! A test binary of its own: the rate limit is one per process, so another test sending
//! bad cookies in the same second would take this test's warning.
#![cfg(feature = "axum")]

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use http::{header, Request, StatusCode};
use tower_redis_session::SessionId;

use support::{RedisServer, TestApp};

fn unix_second() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Sleeps until just after the wall clock's next second begins.
async fn next_second() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into = Duration::from_nanos(u64::from(now.subsec_nanos()));
    tokio::time::sleep(Duration::from_secs(1) - into + Duration::from_millis(20)).await;
}

/// The number after `suppressed=` in a log line.
fn suppressed(line: &str) -> u64 {
    line.split_once("suppressed=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no suppressed count in {line:?}"))
}

#[tokio::test(flavor = "current_thread")]
async fn a_flood_of_suspicious_cookies_gives_one_warning_a_second_with_the_count_left_out() {
    const FLOOD: usize = 60;
    let redis = RedisServer::start();
    let mut app = TestApp::new(&redis).await;
    let live = app.login().await;
    let logs = app.capture_logs(tracing::Level::TRACE);

    // Each kind of bad cookie, with values that must never reach a log line.
    let unknown = SessionId::generate().to_string();
    let tossed = SessionId::generate().to_string();
    let malformed = format!("{}*", &SessionId::generate().as_str()[..30]);
    let kinds = [
        ("malformed", format!("sid={malformed}")),
        ("more than one", format!("sid={live}; sid={tossed}")),
        ("unknown", format!("sid={unknown}")),
    ];
    let send = |cookie: String| {
        let app = &app;
        async move {
            let req = Request::get("/whoami")
                .header(header::COOKIE, cookie)
                .body(Body::empty())
                .unwrap();
            let res = app.send_request(req).await;
            assert_eq!(res.status, StatusCode::OK);
            assert!(res.body.starts_with("loaded=false"), "{}", res.body);
        }
    };

    // The whole flood within one second of the clock the limit counts by.
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(attempts <= 5, "no flood fit in one second");
        next_second().await;
        logs.clear();
        let second = unix_second();
        for i in 0..FLOOD {
            send(kinds[i % kinds.len()].1.clone()).await;
        }
        if unix_second() == second {
            break;
        }
    }
    let warnings = logs.lines_at("WARN");
    assert_eq!(
        warnings.len(),
        1,
        "{FLOOD} bad cookies in one second: one warning, got {warnings:#?}"
    );
    assert!(
        warnings[0].contains("suspicious"),
        "the warning says why: {}",
        warnings[0]
    );
    let left_out = logs.lines_at("DEBUG");
    assert_eq!(
        left_out
            .iter()
            .filter(|l| l.contains("ignoring a session cookie"))
            .count(),
        FLOOD - 1,
        "the others are left out of the warnings (and logged at debug)"
    );
    for (kind, _) in &kinds {
        assert!(
            logs.text().lines().any(|l| l.contains(kind)),
            "the {kind} cookie is named in the logs"
        );
    }

    // The next one, a second later, is a warning again and says how many were left out.
    next_second().await;
    send(kinds[0].1.clone()).await;
    let warnings = logs.lines_at("WARN");
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert_eq!(
        suppressed(&warnings[1]),
        FLOOD as u64 - 1,
        "{}",
        warnings[1]
    );

    logs.assert_no_raw_ids(&[live.as_str(), &unknown, &tossed, &malformed]);
    assert!(
        !logs.text().contains(&malformed[..20]),
        "no part of a raw cookie value"
    );
    assert!(app.is_live(&live).await, "the live session is untouched");
    app.check_keyspace().await;
}
