//! `ScriptMode::Functions`: the promises of the mode itself and of its documented ACL
//! users. (The behaviour suite runs in this mode too: `::functions_single::` and
//! `::functions_cluster::`, stamped by `session_tests!`.)
//!
//! - the users of `docs/operations.md` run every feature, and the app's user cannot run
//!   Lua of its own, scan, or touch a key outside the prefix;
//! - the documented URL forms (with and without a database number) work with them;
//! - a missing or outdated library is a clear error, at start and on use, and nothing
//!   falls back to `EVALSHA`;
//! - out of memory, requests answer as they do with `EVALSHA`;
//! - on a cluster the library is on every primary and reaches the replicas.

use std::{error::Error as _, sync::Arc, time::Duration};

use axum::Router;
use http::StatusCode;
use tower_redis_session::{
    functions_library, functions_library_name, load_functions, RedisSessionLayer, ScriptMode,
};

use crate::support::{
    hardening::{self, pool, routes, send, Gate, Res},
    layer, monitor,
    resp::{self, Reply},
    Logs, RedisCluster, RedisServer,
};

/// A layer in `mode` on `redis`, behind the hardening routes.
fn app(
    redis: impl Into<tower_redis_session::Redis>,
    mode: ScriptMode,
) -> (Router, RedisSessionLayer) {
    let layer = layer(redis)
        .script_mode(mode)
        .command_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    (
        routes(Arc::new(Gate::default())).layer(layer.clone()),
        layer,
    )
}

fn ok(res: Res) -> Res {
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    res
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_functions_users_run_every_feature_and_nothing_else() {
    let redis = RedisServer::start_with(&[]);
    let app_url = redis.create_documented_acl_user_named("sessions-fcall", "app-password");
    let ops_url = redis.create_documented_acl_user_named("sessions-ops", "ops-password");
    let deploy_url = redis.create_documented_acl_user_named("sessions-deploy", "deploy-password");
    redis.cmd(&["SET", "other:key", "not a session"]);
    redis.cmd(&["CONFIG", "RESETSTAT"]);

    // Deploy: the library of this version, loaded by the deploy user.
    let deploy = pool(&deploy_url).await;
    load_functions(deploy.clone()).await.unwrap();
    load_functions(deploy).await.unwrap(); // again: nothing changes

    // The app, as its own user.
    let (app, layer) = app(pool(&app_url).await, ScriptMode::Functions);
    layer.load_scripts().await.unwrap();
    let manager = layer.manager();
    let ops = manager.with_redis(pool(&ops_url).await);

    // Every feature: the requests and the manager's index work as the app's user, the
    // full scans as the ops user; a script cache flush changes nothing in this mode.
    hardening::run_every_feature(&app, &manager, &ops).await;
    hardening::survive_a_script_flush_and_killed_connections(&redis, &app).await;

    // Nothing was refused along the way, and no script was ever sent.
    let denied = hardening::acl_log(&redis);
    assert!(denied.is_empty(), "the ACL refused something: {denied:#?}");
    let used = hardening::commands_used(&redis, &["set"]);
    assert!(
        !used
            .iter()
            .any(|u| u.starts_with("eval") || u.starts_with("script|load")),
        "{used:?}"
    );
    println!(
        "documented Functions-mode users: every feature ran, nothing refused; commands seen \
         (the deploy user's, the app's, its functions', the ops user's, and the admin's \
         SCRIPT FLUSH/CLIENT KILL): {}",
        used.join(" ")
    );

    // The app's user cannot load or run Lua of its own, list keys, or reach a key
    // outside the prefix, not even through a function.
    let lib = functions_library_name();
    let load_sha = fred::util::sha1_hash("return(1)");
    let refused: Vec<Vec<String>> = [
        "EVAL return(1) 0",
        "EVAL_RO return(1) 0",
        &format!("EVALSHA {load_sha} 0"),
        "SCRIPT LOAD return(1)",
        "SCRIPT FLUSH",
        "FUNCTION FLUSH",
        &format!("FUNCTION DELETE {lib}"),
        "FUNCTION LIST",
        "SCAN 0",
        "KEYS *",
        "RANDOMKEY",
        "GET other:key",
        "HGETALL other:key",
        &format!("FCALL {lib}_load 1 other:key 0 300 300000 0"),
        &format!("FCALL {lib}_end 1 other:key terminated 1000 x"),
        "FLUSHALL",
        "CONFIG GET *",
        "CLIENT LIST",
        "MONITOR",
        "SUBSCRIBE x",
    ]
    .iter()
    .map(|c| words(c))
    .collect();
    let mut with_code = vec![
        "FUNCTION".to_owned(),
        "LOAD".to_owned(),
        "REPLACE".to_owned(),
    ];
    with_code.push(functions_library().to_owned());
    let mut app_refused = refused.clone();
    app_refused.push(with_code.clone());
    hardening::assert_refused(&redis, "sessions-fcall", "app-password", &app_refused);
    // The ops user neither loads code nor reaches other keys; it can scan, and SCAN is not
    // bound by the key pattern: it lists every key name.
    let ops_refused: Vec<Vec<String>> = refused
        .iter()
        .filter(|c| c[0] != "SCAN")
        .cloned()
        .chain([with_code])
        .collect();
    hardening::assert_refused(&redis, "sessions-ops", "ops-password", &ops_refused);
    let mut conn = redis.conn();
    conn.cmd(&["AUTH", "sessions-ops", "ops-password"]).unwrap();
    let page = conn.cmd(&["SCAN", "0", "COUNT", "1000"]).unwrap();
    let names: Vec<String> = page.items()[1]
        .items()
        .iter()
        .filter_map(Reply::text)
        .collect();
    assert!(
        names.contains(&"other:key".to_owned()),
        "SCAN listed only {names:?}"
    );
    // The deploy user loads code and nothing else: it cannot call it, nor read sessions.
    let mut deploy_refused = refused.clone();
    deploy_refused.push(words(&format!("FCALL {lib}_version 0")));
    deploy_refused.push(words("HGETALL session:x"));
    hardening::assert_refused(
        &redis,
        "sessions-deploy",
        "deploy-password",
        &deploy_refused,
    );

    // Without `SCAN`, the app's user gets the error Redis sent for the full scans.
    let err = manager.stats().await.unwrap_err();
    let cause = err.source().map(ToString::to_string).unwrap_or_default();
    assert!(cause.contains("NOPERM"), "{err}: {cause}");
    let err = load_functions(layer.redis().clone()).await.unwrap_err();
    let cause = err.source().map(ToString::to_string).unwrap_or_default();
    assert!(cause.contains("NOPERM"), "{err}: {cause}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_url_forms_work_with_the_documented_users() {
    let redis = RedisServer::start_with(&[]);
    let evalsha = redis.create_documented_acl_user("evalsha-password");
    let functions = redis.create_documented_acl_user_named("sessions-fcall", "fcall-password");
    load_functions(redis.client().await).await.unwrap();
    for (base, mode) in [
        (evalsha, ScriptMode::Evalsha),
        (functions, ScriptMode::Functions),
    ] {
        // As in the docs: `redis://user:PASSWORD@host:port`, and with a database number.
        for url in [base.clone(), format!("{base}/0"), format!("{base}/2")] {
            let pool = tower_redis_session::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            let (app, layer) = app(pool, mode);
            layer.load_scripts().await.unwrap();
            let id = ok(send(&app, "POST", "/set/a/1", None).await)
                .new_id()
                .unwrap();
            assert_eq!(ok(send(&app, "GET", "/read/a", Some(&id)).await).body, "1");
            ok(send(&app, "POST", "/logout", Some(&id)).await);
        }
    }
    let db2 = redis.cmd(&["INFO", "keyspace"]).text().unwrap_or_default();
    assert!(
        db2.contains("db2:"),
        "the /2 URL wrote to database 2: {db2}"
    );
    let denied = hardening::acl_log(&redis);
    assert!(denied.is_empty(), "the ACL refused something: {denied:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_outdated_library_is_a_clear_error_never_a_fallback_to_evalsha() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let (app, layer) = app(client.clone(), ScriptMode::Functions);
    let lib = functions_library_name();
    let says_what_to_run = |text: &str| {
        text.contains(lib) && text.contains("load_functions") && text.contains("FUNCTION LOAD")
    };

    // At start: `load_scripts` checks, and says what to run.
    let err = layer.load_scripts().await.unwrap_err();
    let cause = err.source().map(ToString::to_string).unwrap_or_default();
    assert!(says_what_to_run(&cause), "{err}: {cause}");

    // On use: a 500, logged with what to run; no script is sent, ever.
    let watch = monitor::Monitor::start(redis.port()).unwrap();
    let logs = Logs::capture(tracing::Level::ERROR);
    let res = logs.during(send(&app, "POST", "/set/a/1", None)).await;
    assert_eq!(
        res.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        res.body
    );
    assert_eq!(res.new_id(), None);
    let id = tower_redis_session::SessionId::generate().to_string();
    let res = logs.during(send(&app, "GET", "/read/a", Some(&id))).await;
    assert_eq!(
        res.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        res.body
    );
    let errors = logs.lines_at("ERROR");
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors.iter().all(|l| says_what_to_run(l)), "{errors:#?}");

    // The library of another version (same functions, another digest) does not do.
    let outdated = functions_library().replace(lib, "tower_redis_session_000000000000");
    assert_eq!(
        redis.cmd(&["FUNCTION", "LOAD", &outdated]),
        Reply::Bulk(Some(b"tower_redis_session_000000000000".to_vec()))
    );
    assert!(layer.load_scripts().await.is_err());
    let res = send(&app, "POST", "/set/a/1", None).await;
    assert_eq!(
        res.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        res.body
    );

    let seen = tokio::task::spawn_blocking(move || watch.finish())
        .await
        .unwrap();
    let sent: Vec<&str> = seen
        .iter()
        .filter(|s| !s.in_script)
        .map(|s| s.command.as_str())
        .collect();
    assert!(
        sent.iter()
            .all(|c| !c.starts_with("eval") && *c != "script"),
        "a script was sent: {sent:?}"
    );
    assert!(sent.contains(&"fcall"), "{sent:?}");

    // Loading this version's library fixes it at once, without a restart.
    load_functions(client).await.unwrap();
    layer.load_scripts().await.unwrap();
    let id = ok(send(&app, "POST", "/set/a/1", None).await)
        .new_id()
        .unwrap();
    assert_eq!(ok(send(&app, "GET", "/read/a", Some(&id)).await).body, "1");
}

/// What a request got out of memory, by what it did.
async fn under_out_of_memory(mode: ScriptMode) -> Vec<(&'static str, StatusCode)> {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    let client = redis.client().await;
    load_functions(client.clone()).await.unwrap();
    let (app, layer) = app(client, mode);
    layer.load_scripts().await.unwrap();
    let a = ok(send(&app, "POST", "/set/a/1", None).await)
        .new_id()
        .unwrap();
    let b = ok(send(&app, "POST", "/set/a/1", None).await)
        .new_id()
        .unwrap();
    let c = ok(send(&app, "POST", "/set/a/1", None).await)
        .new_id()
        .unwrap();
    let d = ok(send(&app, "POST", "/login/dora", Some(&c)).await)
        .new_id()
        .unwrap();
    let stamp = |id: &str| {
        redis
            .cmd(&["HGET", &hardening::key("session:", id), "last_accessed_at"])
            .text()
    };
    let before = stamp(&a);

    redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    tokio::time::sleep(Duration::from_millis(1100)).await; // a new second for the stamp
    let mut got = Vec::new();
    got.push(("read", send(&app, "GET", "/read/a", Some(&a)).await.status));
    got.push((
        "increment",
        send(&app, "POST", "/incr", Some(&a)).await.status,
    ));
    got.push((
        "new session",
        send(&app, "POST", "/set/a/1", None).await.status,
    ));
    got.push((
        "rotate",
        send(&app, "POST", "/rotate", Some(&b)).await.status,
    ));
    got.push((
        "logout",
        send(&app, "POST", "/logout", Some(&b)).await.status,
    ));
    got.push((
        "log out everywhere",
        match layer.manager().terminate_all("dora", None).await {
            Ok(1) => StatusCode::OK,
            other => panic!("{other:?}"),
        },
    ));
    let after = stamp(&a);
    redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(ok(send(&app, "GET", "/read/a", Some(&a)).await).body, "1");
    assert_eq!(
        send(&app, "GET", "/whoami", Some(&d))
            .await
            .body
            .split(' ')
            .next(),
        Some("loaded=false")
    );
    println!(
        "{mode:?}: out of memory, last_accessed_at {} by the read",
        if before == after { "kept" } else { "rewritten" }
    );
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_requests_answer_as_they_do_with_evalsha() {
    let evalsha = under_out_of_memory(ScriptMode::Evalsha).await;
    let functions = under_out_of_memory(ScriptMode::Functions).await;
    println!("out of memory (noeviction), EVALSHA: {evalsha:?}");
    assert_eq!(evalsha, functions);
    let expected = [
        ("read", StatusCode::OK),
        ("increment", StatusCode::SERVICE_UNAVAILABLE),
        ("new session", StatusCode::SERVICE_UNAVAILABLE),
        ("rotate", StatusCode::SERVICE_UNAVAILABLE),
        ("logout", StatusCode::OK),
        ("log out everywhere", StatusCode::OK),
    ];
    assert_eq!(functions, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_library_is_on_every_primary_and_reaches_the_replicas() {
    let backend = crate::support::Topology::Cluster.start().await;
    let cluster = tokio::task::spawn_blocking(RedisCluster::shared)
        .await
        .unwrap();
    let client = backend.client().await;
    load_functions(client).await.unwrap();
    let lib = functions_library_name();
    for primary in cluster.primaries() {
        let listed = resp::must(primary, &["FUNCTION", "LIST", "LIBRARYNAME", lib]);
        assert_eq!(listed.items().len(), 1, "primary {primary}: {listed:?}");
        for replica in cluster.replicas_of(primary) {
            assert!(
                resp::wait_until(Duration::from_secs(10), || {
                    resp::command(replica, &["FUNCTION", "LIST", "LIBRARYNAME", lib])
                        .is_ok_and(|r| r.items().len() == 1)
                }),
                "replica {replica} of {primary} did not get the library"
            );
        }
    }
}

/// The `INFO commandstats` line of `command`: (calls, usec).
fn command_stats(redis: &RedisServer, command: &str) -> (u64, u64) {
    let info = redis.info("commandstats");
    let prefix = format!("cmdstat_{command}:");
    let Some(line) = info.lines().find(|l| l.starts_with(&prefix)) else {
        return (0, 0);
    };
    let field = |name: &str| {
        line[prefix.len()..]
            .split(',')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("calls"), field("usec"))
}

/// CPU time (user + system) the process has used, in µs.
fn process_cpu_us(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks * 1_000_000 / 100
}

/// Redis CPU per call of `load` and `save`, `EVALSHA` against `FCALL`, with the exact
/// text, arguments and key the layer sends, on one session of 5 fields (username, a
/// counter, 3 internal ones + the deadline): `redis-benchmark` sends each command from 4
/// connections, in rounds that alternate the two modes. Prints the medians and their
/// ratio for `docs/operations.md`. Run with `--ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it by name with --ignored --nocapture"]
async fn redis_cpu_per_call_evalsha_against_fcall() {
    const CALLS: u64 = 20_000;
    const ROUNDS: usize = 7;
    let redis = RedisServer::start();
    let client = redis.client().await;
    load_functions(client.clone()).await.unwrap();
    let (app, layer) = app(client, ScriptMode::Evalsha);
    layer.load_scripts().await.unwrap();
    let id = ok(send(&app, "POST", "/set/username/ferris", None).await)
        .new_id()
        .unwrap();
    ok(send(&app, "POST", "/incr", Some(&id)).await);
    let key = hardening::key("session:", &id);
    let lib = functions_library_name();
    let sha = |file: &str| {
        fred::util::sha1_hash(&tower_redis_session::__private::script_source(file).unwrap())
    };
    // The layer's arguments with the default settings: no touch interval, 256 + 16
    // fields, 256 KiB + 1 KiB + 20 bytes per field, a 12 h lifetime; the save (whose
    // limits are 256 user fields of 256 KiB) sets one field.
    let load_args = ["0", "272", "268608", "43200000"];
    let save_args = [
        "", "43200000", "256", "262144", "0", "s", "username", "ferris",
    ];
    let cases = [
        ("load", sha("lua/load.lua"), &load_args[..]),
        ("save", sha("lua/save.lua"), &save_args[..]),
    ];
    let mut results = Vec::new();
    for (script, sha, args) in cases {
        // Each call does the work it does for a request: status 1, on this session.
        for (command, name) in [
            ("EVALSHA", sha.clone()),
            ("FCALL", format!("{lib}_{script}")),
        ] {
            let mut call = vec![command, name.as_str(), "1", key.as_str()];
            call.extend(args);
            let reply = redis.cmd(&call);
            assert_eq!(
                reply.items()[0].items()[0].int(),
                Some(1),
                "{call:?}: {reply:?}"
            );
            assert_eq!(reply.items()[1].text().as_deref(), Some(key.as_str()));
        }
        let mut per_mode: [(Vec<f64>, Vec<f64>); 2] = Default::default();
        for _ in 0..ROUNDS {
            for (m, (command, name)) in [
                ("evalsha", sha.clone()),
                ("fcall", format!("{lib}_{script}")),
            ]
            .into_iter()
            .enumerate()
            {
                redis.cmd(&["CONFIG", "RESETSTAT"]);
                let cpu_before = process_cpu_us(redis.pid());
                let mut bench = std::process::Command::new("redis-benchmark");
                bench.args([
                    "-p",
                    &redis.port().to_string(),
                    "-c",
                    "4",
                    "-n",
                    &CALLS.to_string(),
                    "-q",
                ]);
                bench.args([
                    command.to_uppercase().as_str(),
                    name.as_str(),
                    "1",
                    key.as_str(),
                ]);
                bench.args(args);
                let out = bench.output().expect("redis-benchmark");
                assert!(out.status.success(), "{out:?}");
                let cpu = process_cpu_us(redis.pid()) - cpu_before;
                let (calls, usec) = command_stats(&redis, command);
                assert!(calls >= CALLS, "{command}: {calls} calls: {out:?}");
                per_mode[m].0.push(usec as f64 / calls as f64);
                per_mode[m].1.push(cpu as f64 / calls as f64);
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let [(mut e_cmd, mut e_cpu), (mut f_cmd, mut f_cpu)] = per_mode;
        let (e_cmd, e_cpu, f_cmd, f_cpu) = (
            median(&mut e_cmd),
            median(&mut e_cpu),
            median(&mut f_cmd),
            median(&mut f_cpu),
        );
        results.push(format!(
            "| `{script}` | {e_cmd:.1} | {f_cmd:.1} | {:.2} | {e_cpu:.1} | {f_cpu:.1} | {:.2} |",
            f_cmd / e_cmd,
            f_cpu / e_cpu
        ));
    }
    println!(
        "| script | EVALSHA µs/call (commandstats) | FCALL µs/call | FCALL/EVALSHA | EVALSHA redis-server CPU µs/call | FCALL | FCALL/EVALSHA |\n|---|---|---|---|---|---|---|\n{}",
        results.join("\n")
    );
    // The session is intact after it all.
    assert_eq!(
        ok(send(&app, "GET", "/read/username", Some(&id)).await).body,
        "ferris"
    );
}
