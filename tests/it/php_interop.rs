//! A PHP app and the layer sharing sessions in one Redis: the PHP session store of
//! `examples/php-interop/` (run with `php`, on Predis) against an axum app behind the
//! layer configured for sharing (`plain_keys`, cookie `sid`, hex IDs accepted).
//!
//! Skipped, with one line, where `php` or Predis is missing (`scripts/test` installs
//! them when it can: Debian's `php-cli` and `php-nrk-predis`).

use std::{
    collections::HashMap,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Once, OnceLock},
    time::Duration,
};

use http::StatusCode;
use tokio::process::Command;
use tower_redis_session::{fred::prelude::*, IdFormat, RedisSessionLayerBuilder};

use crate::support::{RedisServer, TestApp};

/// The PHP store, pointed at a test's Redis and key prefix.
struct Php {
    dir: PathBuf,
    redis_url: String,
    prefix: String,
}

/// What `php` answered.
struct Output {
    ok: bool,
    stdout: String,
}

/// `true` (after one line on stderr, once per test binary) if `php` or Predis is missing.
fn php_missing() -> bool {
    static MISSING: OnceLock<Option<&'static str>> = OnceLock::new();
    static TOLD: Once = Once::new();
    let missing = MISSING.get_or_init(|| {
        let cli = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/php-interop/cli.php");
        match std::process::Command::new("php")
            .arg(cli)
            .arg("check")
            .output()
        {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("`php` not found"),
            Err(e) => panic!("cannot run php: {e}"),
            Ok(out) if out.status.code() == Some(2) => Some("Predis not found"),
            Ok(out) => {
                assert!(out.status.success(), "php cli.php check: {out:?}");
                None
            }
        }
    });
    if let Some(missing) = missing {
        // Straight to stderr: the test harness captures `eprintln!` of passing tests.
        TOLD.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "skipping the PHP interop tests: {missing} (apt-get install php-cli php-nrk-predis, or run scripts/test as root)"
            );
        });
    }
    missing.is_some()
}

impl Php {
    /// The store for `app`'s Redis and prefix.
    fn new(redis: &RedisServer, app: &TestApp) -> Self {
        Self {
            dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/php-interop"),
            redis_url: redis.url(),
            prefix: app.prefix.clone(),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("php");
        cmd.arg(self.dir.join("cli.php"))
            .env("REDIS_URL", &self.redis_url)
            .env("SESSION_PREFIX", &self.prefix)
            .env("ABSOLUTE_LIFETIME", "43200")
            .kill_on_drop(true);
        cmd
    }

    /// Runs `php cli.php args...`.
    async fn try_run(&self, args: &[&str]) -> Output {
        let out = self.command().args(args).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.is_empty(), "php {args:?} wrote to stderr: {stderr}");
        Output {
            ok: out.status.success(),
            stdout: String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        }
    }

    /// Runs `php cli.php args...`, which must succeed, and returns what it printed.
    async fn run(&self, args: &[&str]) -> String {
        let out = self.try_run(args).await;
        assert!(out.ok, "php {args:?} failed: {}", out.stdout);
        out.stdout
    }

    /// The user fields PHP sees in session `id`, or `None` if it sees no session.
    async fn load(&self, id: &str) -> Option<HashMap<String, String>> {
        let json: serde_json::Value = serde_json::from_str(&self.run(&["load", id]).await).unwrap();
        if json.is_null() {
            return None;
        }
        serde_json::from_value(json["fields"].clone()).unwrap()
    }

    /// Runs PHP code with Predis loaded and `$r` a client for the test's Redis: another
    /// program writing the same hashes, with no store in between.
    async fn raw(&self, code: &str, env: &[(&str, &str)]) {
        let bootstrap = self.dir.join("bootstrap.php");
        let script = format!(
            "require {bootstrap:?}; load_predis() or exit(2); \
             $r = new Predis\\Client(getenv('REDIS_URL')); {code}"
        );
        let out = Command::new("php")
            .arg("-r")
            .arg(script)
            .env("REDIS_URL", &self.redis_url)
            .envs(env.iter().copied())
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "php -r: {out:?}");
    }
}

/// The test app, configured as an app sharing sessions with the PHP store does.
async fn sharing_app(
    redis: &RedisServer,
    configure: impl FnOnce(RedisSessionLayerBuilder) -> RedisSessionLayerBuilder,
) -> TestApp {
    TestApp::with(redis, |b| {
        configure(
            b.plain_keys(true)
                .cookie_name("sid")
                .id_format(IdFormat::Hex { bytes: 16 }),
        )
    })
    .await
}

/// Every key under the test's prefix has a TTL, and whatever is left under `gone` holds
/// no session (it is deleted, or a marker without `session_ttl`).
async fn check_keys(app: &TestApp, gone: &[&str]) {
    let keys: Vec<String> = app.keys().await;
    for key in &keys {
        let ttl: i64 = app.client.pttl(key).await.unwrap();
        assert!(ttl > 0, "key without a TTL: {key} ({ttl})");
    }
    for id in gone {
        let hash: HashMap<String, String> = app
            .client
            .hgetall(format!("{}{id}", app.prefix))
            .await
            .unwrap();
        assert!(
            !hash.contains_key("session_ttl"),
            "{id} still holds a session: {hash:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_creates_rust_reads_increments_and_rotates_php_follows() {
    if php_missing() {
        return;
    }
    let redis = RedisServer::start();
    let app = sharing_app(&redis, |b| b).await;
    let php = Php::new(&redis, &app);

    let old = php.run(&["create", "username=ferris", "n=5"]).await;
    assert_eq!(old.len(), 32, "bin2hex(random_bytes(16)): {old}");

    // Rust reads the PHP session under its hex ID, and leaves the cookie alone.
    let res = app.get("/read/username", Some(&old)).await;
    assert_eq!((res.status, res.body.as_str()), (StatusCode::OK, "ferris"));
    assert_eq!(res.set_cookie(), None);
    assert_eq!(app.post("/incr/n", Some(&old)).await.body, "6");
    // Each side sees the other's increments (HINCRBY on both).
    assert_eq!(php.run(&["incr", &old, "n"]).await, "7");
    assert_eq!(app.get("/read/n", Some(&old)).await.body, "7");

    // Rust rotates: the new ID is the layer's own format, which PHP accepts.
    let res = app.post("/rotate", Some(&old)).await;
    assert_eq!(res.status, StatusCode::OK);
    let new = res.new_id().expect("rotation sets the new cookie");
    assert_eq!(new.len(), 43);
    let fields = php.load(&new).await.expect("PHP finds the rotated session");
    assert_eq!(fields["username"], "ferris");
    assert_eq!(fields["n"], "7");
    assert_eq!(php.run(&["incr", &new, "n"]).await, "8");
    assert_eq!(app.get("/read/n", Some(&new)).await.body, "8");

    // The old ID is dead for both sides, and PHP cannot bring it back.
    assert_eq!(php.load(&old).await, None);
    assert_eq!(php.run(&["incr", &old, "n"]).await, "gone");
    assert_eq!(php.run(&["set", &old, "x", "1"]).await, "gone");
    assert_eq!(app.get("/read/n", Some(&old)).await.body, "");
    check_keys(&app, &[&old]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_creates_php_reads_and_increments_rust_reads() {
    if php_missing() {
        return;
    }
    let redis = RedisServer::start();
    let app = sharing_app(&redis, |b| b).await;
    let php = Php::new(&redis, &app);

    let id = app.login().await;
    assert_eq!(app.post("/incr/n", Some(&id)).await.body, "1");

    let fields = php.load(&id).await.expect("PHP reads the Rust session");
    assert_eq!(fields["username"], "ferris");
    assert_eq!(fields["n"], "1");
    assert_eq!(php.run(&["incr", &id, "n", "10"]).await, "11");
    assert_eq!(php.run(&["set", &id, "lang", "fr"]).await, "ok");
    assert_eq!(php.run(&["ttl", &id, "600"]).await, "ok");

    assert_eq!(app.get("/read/n", Some(&id)).await.body, "11");
    assert_eq!(app.get("/read/lang", Some(&id)).await.body, "fr");
    let whoami = app.get("/whoami", Some(&id)).await.body;
    assert!(whoami.contains("ttl=600"), "{whoami}");
    let pttl: i64 = app
        .client
        .pttl(format!("{}{id}", app.prefix))
        .await
        .unwrap();
    assert!(pttl > 590_000 && pttl <= 600_000, "{pttl}");

    // Rust logs out: PHP sees no session and cannot write one back.
    let res = app.post("/logout", Some(&id)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(php.load(&id).await, None);
    assert_eq!(php.run(&["set", &id, "lang", "de"]).await, "gone");
    check_keys(&app, &[&id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_never_writes_or_shows_the_layers_internal_fields() {
    if php_missing() {
        return;
    }
    let redis = RedisServer::start();
    let app = sharing_app(&redis, |b| b).await;
    let php = Php::new(&redis, &app);
    let id = app.login_as("ferris").await;
    let key = format!("{}{id}", app.prefix);
    let before: HashMap<String, String> = app.client.hgetall(&key).await.unwrap();
    assert_eq!(before["user_id"], "ferris");

    let fields = php.load(&id).await.unwrap();
    for internal in [
        "user_id",
        "absolute_expires_at",
        "created_at",
        "session_ttl",
    ] {
        assert!(
            !fields.contains_key(internal),
            "{internal} shown as user data"
        );
    }
    for reserved in [
        "user_id",
        "absolute_expires_at",
        "rotating",
        "ended",
        "session_ttl",
    ] {
        let out = php.try_run(&["set", &id, reserved, "x"]).await;
        assert!(
            !out.ok && out.stdout.starts_with("refused:"),
            "{reserved}: {}",
            out.stdout
        );
    }
    let after: HashMap<String, String> = app.client.hgetall(&key).await.unwrap();
    assert_eq!(after["user_id"], "ferris");
    assert_eq!(
        after.get("absolute_expires_at"),
        before.get("absolute_expires_at")
    );
}

/// `now` shifted by `offset_secs`, written by PHP in the given zone with microseconds.
const STAMP: &str = "function stamp(int $offset, string $zone): string {
    $t = (new DateTimeImmutable('now', new DateTimeZone('UTC')))->modify(\"$offset seconds\");
    return $t->setTimezone(new DateTimeZone($zone))->format('Y-m-d\\TH:i:s.uP');
}";

/// PHP code for another program writing a session hash at `KEY`, field by field (Predis
/// 1.1's HSET takes one field), with timestamps as PHP's DateTime writes them
/// (`2026-04-02T12:34:56.123456+00:00`): `created_at` `CREATED` seconds from now in zone
/// `ZONE`, and `absolute_expires_at` `DEADLINE` seconds from now if that is set.
fn other_writer() -> String {
    format!(
        "{STAMP}
        $key = getenv('KEY');
        $r->hset($key, 'created_at', stamp((int) getenv('CREATED'), getenv('ZONE')));
        $r->hset($key, 'last_accessed_at', stamp(0, '+02:00'));
        if (getenv('DEADLINE') !== false) {{
            $r->hset($key, 'absolute_expires_at', stamp((int) getenv('DEADLINE'), '+00:00'));
        }}
        $r->hset($key, 'session_ttl', '600');
        $r->hset($key, 'username', 'ferris');
        $r->expire($key, 600);"
    )
}

/// A sharing app with an absolute lifetime of 12 h, the PHP store for it, and
/// [`other_writer`].
async fn twelve_hour_app(redis: &RedisServer) -> (TestApp, Php, String) {
    let app = sharing_app(redis, |b| {
        b.absolute_lifetime(Duration::from_secs(12 * 3600))
    })
    .await;
    let php = Php::new(redis, &app);
    (app, php, other_writer())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_hash_with_fractional_seconds_and_offsets_is_a_session() {
    if php_missing() {
        return;
    }
    let redis = RedisServer::start();
    let (app, php, write) = twelve_hour_app(&redis).await;
    let fresh = "00112233445566778899aabbccddeeff";
    let key = format!("{}{fresh}", app.prefix);
    let env = [
        ("KEY", key.as_str()),
        ("CREATED", "-300"),
        ("ZONE", "+00:00"),
    ];
    php.raw(&write, &env).await;
    let created: String = app.client.hget(&key, "created_at").await.unwrap();
    assert!(
        created.len() == "2026-04-02T12:34:56.123456+00:00".len() && created.ends_with("+00:00"),
        "{created}"
    );
    let res = app.get("/read/username", Some(fresh)).await;
    assert_eq!(
        (res.status, res.body.as_str()),
        (StatusCode::OK, "ferris"),
        "a PHP hash with fractional seconds and a +02:00 offset is a session"
    );
    assert_eq!(app.post("/incr/n", Some(fresh)).await.body, "1");
    assert_eq!(php.load(fresh).await.unwrap()["n"], "1");

    // Created 12 h 30 min ago, written in +02:00: past the 12 h absolute lifetime only if
    // the offset is read (as UTC wall time it would look 10 h 30 min old).
    let old = "ffeeddccbbaa99887766554433221100";
    let key = format!("{}{old}", app.prefix);
    let created = (-(12 * 3600 + 1800)).to_string();
    let env = [
        ("KEY", key.as_str()),
        ("CREATED", &created),
        ("ZONE", "+02:00"),
    ];
    php.raw(&write, &env).await;
    assert_eq!(php.load(old).await, None, "the PHP store reads the offset");
    let res = app.get("/read/username", Some(old)).await;
    assert_eq!(
        (res.status, res.body.as_str()),
        (StatusCode::OK, ""),
        "a session created more than the absolute lifetime ago is over"
    );
    check_keys(&app, &[old]).await;
}

/// The PHP store and the layer agree on when another writer's session is over: a
/// `created_at` more than 5 minutes ahead is no session for either, and an
/// `absolute_expires_at` later than `created_at` + the lifetime does not stretch it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_and_the_layer_agree_that_a_stretched_lifetime_is_over() {
    if php_missing() {
        return;
    }
    let redis = RedisServer::start();
    let (app, php, write) = twelve_hour_app(&redis).await;
    let cases = [
        // (id, created_at from now, absolute_expires_at from now, a session?)
        ("0123456789abcdef0123456789abcdef", "-60", "3600", true),
        ("1123456789abcdef0123456789abcdef", "3600", "7200", false),
        ("2123456789abcdef0123456789abcdef", "-45000", "3600", false),
    ];
    for (id, created, deadline, live) in cases {
        let key = format!("{}{id}", app.prefix);
        let env = [
            ("KEY", key.as_str()),
            ("CREATED", created),
            ("ZONE", "+00:00"),
            ("DEADLINE", deadline),
        ];
        php.raw(&write, &env).await;
        let by_php = php.load(id).await.is_some();
        let by_rust = app.get("/read/username", Some(id)).await.body == "ferris";
        assert_eq!(
            (by_php, by_rust),
            (live, live),
            "created_at {created} s and absolute_expires_at {deadline} s from now: (PHP, layer)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_php_writer_refreshing_the_ttl_past_the_deadline_does_not_extend_the_session() {
    if php_missing() {
        return;
    }
    let redis = RedisServer::start();
    let app = sharing_app(&redis, |b| b.absolute_lifetime(Duration::from_secs(1))).await;
    let php = Php::new(&redis, &app);
    let id = app.login().await;
    let key = format!("{}{id}", app.prefix);
    let pttl: i64 = app.client.pttl(&key).await.unwrap();
    assert!(pttl > 0 && pttl <= 1000, "capped by the deadline: {pttl}");

    // A writer that knows nothing of `absolute_expires_at` keeps the key alive for an hour.
    let touch = "$key = getenv('KEY');
        $r->hset($key, 'last_accessed_at', gmdate('Y-m-d\\TH:i:s') . '+00:00');
        $r->expire($key, 3600);";
    php.raw(touch, &[("KEY", key.as_str())]).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let exists: bool = app.client.exists(&key).await.unwrap();
    assert!(exists, "the other writer kept the key past the deadline");

    // The layer still ends the session at its next load, and PHP sees it over too.
    let res = app.get("/whoami", Some(&id)).await;
    assert!(res.body.starts_with("loaded=false"), "{}", res.body);
    assert_eq!(app.get("/read/username", Some(&id)).await.body, "");
    assert_eq!(php.load(&id).await, None);
    check_keys(&app, &[&id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_outside_the_accepted_formats_are_not_cookies() {
    if php_missing() {
        return;
    }
    let redis = RedisServer::start();
    let app = sharing_app(&redis, |b| b).await;
    let php = Php::new(&redis, &app);
    let id = php.run(&["create", "username=ferris"]).await;
    let upper = id.to_uppercase();
    let short = &id[1..];
    let glob = format!("{}*", &id[1..]);
    for bad in [upper.as_str(), short, glob.as_str()] {
        let res = app.get("/read/username", Some(bad)).await;
        assert_eq!(
            (res.status, res.body.as_str()),
            (StatusCode::OK, ""),
            "{bad}"
        );
        assert_eq!(php.load(bad).await, None, "{bad}");
    }
    // A write under a refused cookie starts a new session with the layer's own ID and
    // leaves the PHP one alone.
    let res = app.post("/set/a/1", Some(&upper)).await;
    let new = res.new_id().unwrap();
    assert_eq!(new.len(), 43);
    assert_eq!(php.load(&id).await.unwrap()["username"], "ferris");
}
