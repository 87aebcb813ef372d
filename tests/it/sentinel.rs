//! Redis Sentinel: one primary, one replica, three sentinels. The app connects through
//! the sentinels (`redis-sentinel://` URL) and follows the promotion when the primary is
//! SIGKILLed under load.

use std::{sync::Arc, time::Duration};

use crate::support::{
    load::{self, record},
    sentinel::{SentinelGroup, DOWN_AFTER_MS},
    TestApp,
};

const TIMEOUT: Duration = Duration::from_secs(1);

#[tokio::test]
async fn sessions_work_through_sentinel() {
    let group = Arc::new(
        tokio::task::spawn_blocking(SentinelGroup::start)
            .await
            .unwrap(),
    );
    let app = TestApp::new(&*group).await;
    let id = app.login().await;
    assert_eq!(app.post("/incr/n", Some(&id)).await.body, "1");
    let rotated = app.post("/rotate", Some(&id)).await.new_id().unwrap();
    assert_eq!(
        app.get("/read/username", Some(&rotated)).await.body,
        "ferris"
    );
    assert_eq!(app.get("/read/username", Some(&id)).await.body, "");
    app.check_keyspace().await;
}

/// 2,000 increments over 5 s across 200 sessions; 1 s in, the primary is SIGKILLed; the
/// sentinels (down after 1 s, quorum 2) promote the replica and the app follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_follows_a_sentinel_promotion_and_no_acknowledged_increment_is_lost() {
    let group = Arc::new(
        tokio::task::spawn_blocking(SentinelGroup::start)
            .await
            .unwrap(),
    );
    let app = Arc::new(TestApp::with(&*group, |b| b.command_timeout(TIMEOUT)).await);
    let sessions = Arc::new(load::start_sessions(&app, 200).await);
    let [primary, replica] = group.servers()[..] else {
        unreachable!()
    };
    assert_eq!(group.primary(), Some(primary));
    // The replica has everything written so far.
    let offset = |port, field| {
        crate::support::resp::info_field(port, "replication", field)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let target = offset(primary, "master_repl_offset");
    assert!(crate::support::resp::wait_until(
        Duration::from_secs(10),
        || offset(replica, "slave_repl_offset") >= target
    ));

    let (g1, g2) = (Arc::clone(&group), Arc::clone(&group));
    let failover = load::kill_under_load(
        Arc::clone(&app),
        Arc::clone(&sessions),
        move || g1.kill(primary),
        move || {
            g2.primary() == Some(replica)
                && crate::support::resp::info_field(replica, "replication", "role").as_deref()
                    == Some("master")
        },
    )
    .await;
    let report = &failover.report;
    record(
        "sentinel-failover",
        &format!(
            "1 primary + 1 replica + 3 sentinels (quorum 2, down-after {DOWN_AFTER_MS} ms), command timeout {TIMEOUT:?}\n\
             load: {report}\n\
             killed {:?} in; replica promoted {:?} after the kill; every request succeeds again {:?} after the kill\n\
             audit: {}\n\
             sessions lost to the killed primary's last second: {}",
            failover.killed_at,
            failover.promoted_after,
            failover.recovery,
            failover.audit,
            failover.audit.lost().len(),
        ),
    );
    failover.assert_kept_promises(TIMEOUT, |_| true);
    assert!(
        failover.recovery < Duration::from_secs(20),
        "recovered {:?} after the kill; the sentinels said:\n{}",
        failover.recovery,
        group.log()
    );
    app.check_keyspace().await;
}
