//! Redis Cluster under faults, each test on a cluster of its own: a master SIGKILLed
//! under load, the empty script cache of a promoted replica, resharding under load, and
//! a slot caught mid-migration (`ASK`).
//!
//! The figures (successes, 5xx, recovery time, sessions lost) are printed (run with
//! `--nocapture` to see them) and written to `target/tmp/fault-figures/`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use http::StatusCode;

use crate::support::{
    cluster::{slot, ClusterOptions, RedisCluster},
    load::{self, record, Load},
    resp, TestApp,
};

const SESSIONS: usize = 200;

/// The layer's command timeout in these tests: how long a request may wait for Redis
/// before it gets a 503.
const TIMEOUT: Duration = Duration::from_secs(1);

/// Three masters and no replica, for slots to move between (no failover).
const THREE_MASTERS: ClusterOptions = ClusterOptions {
    masters: 3,
    replicas: 0,
    node_timeout_ms: 5_000,
};

async fn start_cluster(options: ClusterOptions) -> Arc<RedisCluster> {
    Arc::new(
        tokio::task::spawn_blocking(move || RedisCluster::start(options))
            .await
            .expect("start a cluster"),
    )
}

/// Runs blocking harness work (admin commands, waiting on the cluster) off the runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("harness task")
}

/// The test app on `client_builder(cluster url)` as a user would build it, with the
/// command timeout at [`TIMEOUT`]. `TRS_MAX_REDIRECTIONS=n` overrides fred's
/// `max_redirections`, to compare settings.
async fn cluster_app(cluster: &RedisCluster) -> TestApp {
    let mut builder = tower_redis_session::client_builder(&cluster.url()).unwrap();
    if let Some(n) = std::env::var("TRS_MAX_REDIRECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        builder.with_connection_config(|c| c.max_redirections = n);
    }
    let client = builder.build().unwrap();
    fred::interfaces::ClientLike::init(&client)
        .await
        .expect("connect to the cluster");
    TestApp::with_client(client, true, |b| b.command_timeout(TIMEOUT)).await
}

/// `errorstat_NOSCRIPT` of a node: how many EVALSHAs it answered with NOSCRIPT.
fn noscript_errors(port: u16) -> u64 {
    resp::info_field(port, "errorstats", "errorstat_NOSCRIPT")
        .and_then(|v| v.strip_prefix("count=")?.parse().ok())
        .unwrap_or(0)
}

/// `number_of_cached_scripts` of a node.
fn cached_scripts(port: u16) -> u64 {
    resp::info_field(port, "memory", "number_of_cached_scripts")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// 2,000 increments over 5 s across 200 sessions; 1 s in, the master serving a third of
/// them is SIGKILLed and the cluster (node timeout 1 s) promotes its replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_fails_over_and_no_acknowledged_increment_is_lost() {
    let cluster = start_cluster(ClusterOptions {
        node_timeout_ms: 1_000,
        ..ClusterOptions::default()
    })
    .await;
    let app = Arc::new(cluster_app(&cluster).await);
    let sessions = Arc::new(load::start_sessions(&app, SESSIONS).await);
    let nodes = cluster.nodes();
    let owner = |id: &String| {
        let slot = slot(&app.key(id));
        nodes
            .iter()
            .find(|n| n.master && n.serves(slot))
            .unwrap()
            .port
    };
    let victim = owner(&sessions[0]);
    let on_victim: Vec<bool> = sessions.iter().map(|id| owner(id) == victim).collect();
    let replica = cluster.replicas_of(victim)[0];
    let c = Arc::clone(&cluster);
    assert!(
        blocking(move || c.wait_replicated(victim, Duration::from_secs(10))).await,
        "the replica caught up before the kill"
    );

    let (c1, c2) = (Arc::clone(&cluster), Arc::clone(&cluster));
    let failover = load::kill_under_load(
        Arc::clone(&app),
        Arc::clone(&sessions),
        move || c1.kill(victim),
        move || c2.role(replica).as_deref() == Some("master"),
    )
    .await;
    let report = &failover.report;
    let victim_failures = report
        .outcomes
        .iter()
        .filter(|o| o.status != StatusCode::OK && on_victim[o.session])
        .count();
    let noscript = noscript_errors(replica);
    let figures = format!(
        "cluster 3 masters + 3 replicas, cluster-node-timeout 1000 ms, command timeout {TIMEOUT:?}\n\
         load: {report}\n\
         5xx on sessions of the killed master: {victim_failures}; on the other masters: {}\n\
         killed {:?} in; replica promoted {:?} after the kill; every request succeeds again {:?} after the kill\n\
         sessions on the killed master: {}; audit: {}\n\
         sessions lost to the killed master's last second: {}\n\
         NOSCRIPT answers from the promoted replica (script cache not replicated): {noscript}",
        report.server_errors() - victim_failures,
        failover.killed_at,
        failover.promoted_after,
        failover.recovery,
        on_victim.iter().filter(|&&v| v).count(),
        failover.audit,
        failover.audit.lost().len(),
    );
    record("cluster-failover", &figures);

    failover.assert_kept_promises(TIMEOUT, |i| on_victim[i]);
    assert!(
        failover.recovery < Duration::from_secs(15),
        "recovered {:?} after the kill",
        failover.recovery
    );
    assert!(
        noscript >= 1,
        "the promoted replica had to load the scripts"
    );
    app.check_keyspace().await;
}

/// A replica promoted by `CLUSTER FAILOVER` (no data loss) has an empty script cache:
/// the first request on a session it now serves gets NOSCRIPT, loads the scripts and
/// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_the_first_write_back_reloads_the_scripts_and_succeeds() {
    let cluster = start_cluster(ClusterOptions::default()).await;
    let app = TestApp::new(&*cluster).await;
    let id = app.login().await;
    let primary = cluster.primary_for_slot(slot(&app.key(&id)));
    let replica = cluster.replicas_of(primary)[0];
    assert!(
        cached_scripts(primary) >= 3,
        "load_scripts warmed the primary"
    );
    assert_eq!(cached_scripts(replica), 0, "scripts are not replicated");

    let c = Arc::clone(&cluster);
    blocking(move || {
        // A manual failover gives up after 5 s (e.g. on a busy machine): then force it,
        // and at last take over without the other masters' votes.
        let promoted = [None, Some("FORCE"), Some("TAKEOVER")]
            .into_iter()
            .any(|mode| {
                let mut args = vec!["CLUSTER", "FAILOVER"];
                args.extend(mode);
                resp::must(replica, &args);
                resp::wait_until(Duration::from_secs(10), || {
                    c.role(replica).as_deref() == Some("master")
                })
            });
        assert!(
            promoted,
            "the replica was not promoted; its log:\n{}",
            c.log(replica)
        );
        c.wait_healthy(Duration::from_secs(20));
    })
    .await;
    assert_eq!(noscript_errors(replica), 0);

    let res = app.post("/incr/n", Some(&id)).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(res.body, "1");
    assert_eq!(app.hash(&id).await["n"], "1");
    assert_eq!(app.hash(&id).await["username"], "ferris");
    assert!(
        noscript_errors(replica) >= 1,
        "the new primary answered NOSCRIPT first"
    );
    assert!(cached_scripts(replica) >= 2, "and then had the scripts");
    app.check_keyspace().await;
}

/// Three reshards of 2,000 slots each (`redis-cli --cluster reshard`) while 200 sessions
/// are incremented 200 times a second: few errors, nothing acknowledged lost, and every
/// request succeeds again within a few seconds of each reshard's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_under_load_loses_nothing_and_recovers_within_seconds() {
    /// After a reshard ends, requests must all succeed from this long on.
    const RECOVERY_DEADLINE: Duration = Duration::from_secs(3);
    /// How long the load runs on after each reshard.
    const SETTLE: Duration = Duration::from_secs(5);
    let cluster = start_cluster(THREE_MASTERS).await;
    let app = Arc::new(cluster_app(&cluster).await);
    let sessions = Arc::new(load::start_sessions(&app, SESSIONS).await);
    let masters = cluster.primaries();

    let t0 = Instant::now();
    let load = Load::start(Arc::clone(&app), Arc::clone(&sessions), 200, usize::MAX, t0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut windows = Vec::new();
    for (from, to) in [
        (masters[0], masters[1]),
        (masters[1], masters[2]),
        (masters[2], masters[0]),
    ] {
        let began = t0.elapsed();
        let c = Arc::clone(&cluster);
        blocking(move || c.reshard(from, to, 2_000)).await;
        let ended = t0.elapsed();
        windows.push((began, ended));
        tokio::time::sleep(SETTLE).await;
    }
    let report = load.stop().await;

    let mut lines = vec![format!(
        "cluster 3 masters, no replicas; 3 reshards of 2000 slots; 200 sessions, 200 increments/s; command timeout {TIMEOUT:?}"
    )];
    let mut late_failures = 0;
    let mut recoveries = Vec::new();
    for (n, &(began, ended)) in windows.iter().enumerate() {
        let until = ended + SETTLE;
        let during = report.failures_between(began, ended);
        let after = report.failures_between(ended, until);
        let late = report.failures_between(ended + RECOVERY_DEADLINE, until);
        late_failures += late;
        let last_failed = report
            .outcomes
            .iter()
            .filter(|o| o.status != StatusCode::OK && o.started >= began && o.started < until)
            .map(|o| o.finished)
            .max();
        let recovery = last_failed.map_or(Duration::ZERO, |t| t.saturating_sub(ended));
        recoveries.push(recovery);
        lines.push(format!(
            "reshard {}: took {:?}, {} requests during it, {during} failed; {after} failed in the {SETTLE:?} after it ({late} after {RECOVERY_DEADLINE:?}); last failure answered {recovery:?} after the reshard ended",
            n + 1,
            ended - began,
            report.sent_between(began, ended),
        ));
    }
    let stored = load::stored_counters(&app, &sessions).await;
    let audit = report.audit(&stored);
    lines.push(format!("load: {report}"));
    lines.push(format!("audit: {audit}"));
    record("cluster-reshard", &lines.join("\n"));

    assert!(report.others().is_empty(), "{:?}", report.others());
    assert!(
        audit.lost().is_empty() && audit.impossible.is_empty(),
        "{audit:?}"
    );
    assert_eq!(report.new_sessions(), 0, "no session was lost");
    assert!(
        report.server_errors() * 50 <= report.sent(),
        "at most 2% of requests fail: {report}"
    );
    assert_eq!(
        late_failures, 0,
        "every request succeeds from {RECOVERY_DEADLINE:?} after a reshard on: {recoveries:?}"
    );
    app.check_keyspace().await;
}

/// A slot caught half-way through a migration: its session's key already moved to the
/// target node, the slot still assigned to the source, which answers `ASK`. While that
/// lasts, requests on other sessions of the target node (in flight at the same time) must
/// each get their own session's data, never another's; once the migration is done, every
/// session is served again, with no app restart.
///
/// fred 10.1.0 fails both unless `max_redirections` is 0: it sends `ASKING` on the
/// target's pipelined connection and takes the next reply as ASKING's (so replies shift
/// by one, to the wrong requests), re-sends the redirected command to the source (so it
/// never succeeds), and once the command's attempts run out its router task ends for
/// good (`Max attempts reached.`): every later command times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrating_slot_never_mixes_up_sessions_and_the_client_survives_it() {
    let cluster = start_cluster(THREE_MASTERS).await;
    let app = Arc::new(cluster_app(&cluster).await);
    let moving = app.login().await;
    let key = app.key(&moving);
    let slot = slot(&key);
    let source = cluster.primary_for_slot(slot);
    let target = *cluster.primaries().iter().find(|&&p| p != source).unwrap();
    // Sessions that live on the target node, each with its own username.
    let mut neighbours = Vec::new();
    let mut n = 0;
    while neighbours.len() < 20 {
        let name = format!("user{n}");
        n += 1;
        let id = app
            .post(&format!("/set/username/{name}"), None)
            .await
            .new_id()
            .unwrap();
        if cluster.primary_for_slot(crate::support::cluster::slot(&app.key(&id))) == target {
            neighbours.push((id, name));
        }
    }
    let (source_id, target_id) = (cluster.id_of(source), cluster.id_of(target));
    let slot_text = slot.to_string();
    resp::must(
        target,
        &["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &source_id],
    );
    resp::must(
        source,
        &["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &target_id],
    );
    resp::must(
        source,
        &[
            "MIGRATE",
            "127.0.0.1",
            &target.to_string(),
            &key,
            "0",
            "5000",
        ],
    );

    // 10 rounds: an increment on the moving session, reads on its 20 neighbours.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (app2, id) = (Arc::clone(&app), moving.clone());
        tasks.push(tokio::spawn(async move {
            let res = app2.post("/incr/n", Some(&id)).await;
            (None, res)
        }));
        for (id, name) in &neighbours {
            let (app2, id, name) = (Arc::clone(&app), id.clone(), name.clone());
            tasks.push(tokio::spawn(async move {
                let res = app2.get("/read/username", Some(&id)).await;
                (Some(name), res)
            }));
        }
    }
    let (mut mixed_up, mut neighbour_errors, mut moving_acked, mut moving_errors) =
        (Vec::new(), 0, 0, 0);
    for task in tasks {
        match task.await.unwrap() {
            (Some(name), res) if res.status == StatusCode::OK => {
                if res.body != name {
                    mixed_up.push(format!("{name} was served {:?}'s session", res.body));
                }
            }
            (Some(_), _) => neighbour_errors += 1,
            (None, res) if res.status == StatusCode::OK => moving_acked += 1,
            (None, _) => moving_errors += 1,
        }
    }

    // Finish the migration; then every session must be served again, within seconds.
    for port in cluster.primaries() {
        resp::must(
            port,
            &["CLUSTER", "SETSLOT", &slot_text, "NODE", &target_id],
        );
    }
    let finished = Instant::now();
    let mut all: Vec<String> = neighbours.iter().map(|(id, _)| id.clone()).collect();
    all.push(moving.clone());
    let recovered = load::wait_all_succeed(&app, &all, finished + Duration::from_secs(10))
        .await
        .map(|t| t - finished);
    // Read with the harness's own client: fred's may be dead.
    let stored: u64 = resp::must(target, &["HGET", &key, "n"])
        .text()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    record(
        "cluster-ask",
        &format!(
            "during the migration: {} neighbour reads served another session's data, {neighbour_errors} failed; \
             the moving session's increments: {moving_acked} ok, {moving_errors} failed ({stored} in Redis)\n\
             after the migration: every session served again after {recovered:?}",
            mixed_up.len()
        ),
    );
    assert!(mixed_up.is_empty(), "{mixed_up:#?}");
    // The neighbours' slots are not moving: every one of their reads is served.
    assert_eq!(
        neighbour_errors, 0,
        "neighbour reads failed during the migration"
    );
    assert!(
        recovered.is_some(),
        "the client never recovered after the migration"
    );
    assert!(stored >= moving_acked, "acknowledged increments are stored");
    app.check_keyspace().await;
}
