//! The examples, run as their own processes against a test `redis-server`, and answered
//! with real requests, so they cannot rot: `examples/hyper.rs`, `examples/tonic.rs`
//! (server and client modes) and `examples/login.rs`.

#[path = "support/mod.rs"]
mod support;

#[path = "support/process.rs"]
mod process;

use std::{collections::HashMap, time::Duration};

use process::{build_examples, free_port, request, Process};
use support::RedisServer;
use tower_redis_session::{fred::prelude::*, SessionId};

/// An example server running against its own Redis.
struct Running {
    /// The example's own `redis-server`.
    _redis: RedisServer,
    /// A client of that server, to check what the example left in it.
    client: Client,
    /// `http://127.0.0.1:PORT`.
    base: String,
    /// Where the example binaries are.
    examples: std::path::PathBuf,
    /// The example process.
    _process: Process,
}

impl Running {
    /// Builds the examples, starts `name` with `REDIS_URL` and `PORT`, and waits until it
    /// listens.
    async fn start(name: &str) -> Self {
        let redis = RedisServer::start();
        let client = redis.client().await;
        let examples = build_examples(&["hyper", "tonic", "login"]);
        // A port taken meanwhile by another program makes the example exit at start:
        // then it starts again on another.
        let mut attempts = 0;
        let (port, process) = loop {
            attempts += 1;
            let port = free_port();
            let port_text = port.to_string();
            let url = redis.url();
            let mut process = Process::start(
                name,
                &examples.join(name),
                &[],
                &[("REDIS_URL", url.as_str()), ("PORT", port_text.as_str())],
            );
            process.wait_for_port(port, Duration::from_secs(30));
            match process.wait_for_output(&format!("127.0.0.1:{port}"), Duration::from_secs(10)) {
                Ok(()) => break (port, process),
                Err(why) if attempts < 3 => eprintln!("starting again: {why}"),
                Err(why) => panic!("{why}"),
            }
        };
        Self {
            _redis: redis,
            client,
            base: format!("http://127.0.0.1:{port}"),
            examples,
            _process: process,
        }
    }

    /// The URL of `path` on the example.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The hash of a session, by its ID (the examples use the default key prefix).
    async fn hash(&self, id: &str) -> HashMap<String, String> {
        let id = SessionId::parse(id).expect("a well-formed session ID in the cookie");
        self.client
            .hgetall(format!("session:{}", id.digest()))
            .await
            .unwrap()
    }

    /// Every key in the example's Redis.
    async fn keys(&self) -> Vec<String> {
        self.client
            .custom(tower_redis_session::fred::cmd!("KEYS"), vec!["*"])
            .await
            .unwrap()
    }
}

/// A `Cookie` header value carrying the session ID.
fn cookie_header(sid: &str) -> String {
    format!("__Host-sid={sid}")
}

/// `examples/hyper.rs`: visits counted, a name kept, logout deletes the session.
#[tokio::test]
async fn hyper_example_counts_visits_remembers_a_name_and_logs_out() {
    let app = Running::start("hyper").await;

    let res = request("GET", &app.url("/"), &[], "").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body, "hello stranger, visit 1\n");
    let sid = res
        .cookie("__Host-sid")
        .expect("the first write sets the cookie");
    let cookie = cookie_header(&sid);
    let with_cookie = [("cookie", cookie.as_str())];

    let res = request("GET", &app.url("/"), &with_cookie, "").await;
    assert_eq!(res.body, "hello stranger, visit 2\n");
    assert_eq!(
        res.cookie("__Host-sid"),
        None,
        "a live session sets no new cookie"
    );

    let res = request("POST", &app.url("/name"), &with_cookie, "ferris").await;
    assert_eq!((res.status, res.body.as_str()), (200, "name saved\n"));
    let res = request("GET", &app.url("/"), &with_cookie, "").await;
    assert_eq!(res.body, "hello ferris, visit 3\n");

    let hash = app.hash(&sid).await;
    assert_eq!(hash.get("visits").map(String::as_str), Some("3"));
    assert_eq!(hash.get("name").map(String::as_str), Some("ferris"));

    let res = request("POST", &app.url("/logout"), &with_cookie, "").await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.cookie("__Host-sid").as_deref(),
        Some(""),
        "the cookie is cleared"
    );
    assert_eq!(
        app.hash(&sid).await.get("ended").map(String::as_str),
        Some("destroyed"),
        "the session is replaced by a marker"
    );

    // A late request still carrying the old cookie (one sent before the logout landed)
    // gets nothing, changes nothing, and leaves the cookie alone: the browser may have
    // logged in again meanwhile.
    let res = request("GET", &app.url("/"), &with_cookie, "").await;
    assert_eq!(res.status, 409, "{}", res.body);
    assert_eq!(res.cookie("__Host-sid"), None);
    assert_eq!(app.keys().await.len(), 1, "nothing but the marker");
}

/// `examples/tonic.rs`: its client mode calls its server three times, sending the cookie
/// back in metadata; the counter goes 1, 2, 3 in one session.
#[tokio::test]
async fn tonic_example_counts_calls_with_the_session_cookie_in_metadata() {
    let app = Running::start("tonic").await;

    let mut client = Process::start(
        "tonic-client",
        &app.examples.join("tonic"),
        &["client", &app.base],
        &[],
    );
    let (ok, output) = client.wait_exit(Duration::from_secs(30));
    assert!(ok, "the tonic client failed:\n{output}");
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(
        lines,
        [
            "call 1: count=1 new_session=true",
            "call 2: count=2 new_session=false",
            "call 3: count=3 new_session=false",
        ],
        "{output}"
    );

    // One session in Redis, counted three times.
    let keys = app.keys().await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let calls: Option<String> = app.client.hget(&keys[0], "calls").await.unwrap();
    assert_eq!(calls.as_deref(), Some("3"));
}

/// `examples/login.rs`: a new ID at login, `/me` protected, logout ends the session.
#[tokio::test]
async fn login_example_rotates_the_id_at_login_protects_me_and_logs_out() {
    let app = Running::start("login").await;
    let form = ("content-type", "application/x-www-form-urlencoded");

    let res = request("GET", &app.url("/me"), &[], "").await;
    assert_eq!((res.status, res.body.as_str()), (401, "log in first\n"));

    // A session from before the login (a visit counter, like a cart).
    let res = request("GET", &app.url("/"), &[], "").await;
    assert_eq!(res.body, "visit 1, not logged in\n");
    let before = res
        .cookie("__Host-sid")
        .expect("the visit starts a session");
    let before_cookie = cookie_header(&before);

    // A wrong password changes nothing.
    let res = request(
        "POST",
        &app.url("/login"),
        &[form, ("cookie", &before_cookie)],
        "username=ferris&password=shrimp",
    )
    .await;
    assert_eq!(res.status, 401);
    assert_eq!(res.cookie("__Host-sid"), None);

    // The right one moves the session to a new ID.
    let res = request(
        "POST",
        &app.url("/login"),
        &[form, ("cookie", &before_cookie)],
        "username=ferris&password=crab",
    )
    .await;
    assert_eq!(res.status, 303, "{}", res.body);
    assert_eq!(res.header("location"), Some("/me"));
    let after = res
        .cookie("__Host-sid")
        .expect("login sets the rotated cookie");
    assert!(!after.is_empty() && after != before, "a new ID at login");
    assert_eq!(
        app.hash(&before).await.get("ended").map(String::as_str),
        Some("rotated"),
        "the old ID's key is only a marker"
    );
    let hash = app.hash(&after).await;
    assert_eq!(hash.get("user").map(String::as_str), Some("ferris"));
    assert_eq!(
        hash.get("visits").map(String::as_str),
        Some("1"),
        "data from before the login moves with the session"
    );

    // The pre-login ID no longer opens anything; the new one does.
    let res = request("GET", &app.url("/me"), &[("cookie", &before_cookie)], "").await;
    assert_eq!(res.status, 401);
    let after_cookie = cookie_header(&after);
    let res = request("GET", &app.url("/me"), &[("cookie", &after_cookie)], "").await;
    assert_eq!(
        (res.status, res.body.as_str()),
        (200, "hello, ferris (1 visits so far)\n")
    );

    // Logout deletes the session; its cookie is then refused.
    let res = request(
        "POST",
        &app.url("/logout"),
        &[("cookie", &after_cookie)],
        "",
    )
    .await;
    assert_eq!(res.status, 303);
    assert_eq!(
        res.cookie("__Host-sid").as_deref(),
        Some(""),
        "the cookie is cleared"
    );
    assert_eq!(
        app.hash(&after).await.get("ended").map(String::as_str),
        Some("destroyed"),
        "the session is replaced by a marker"
    );
    let res = request("GET", &app.url("/me"), &[("cookie", &after_cookie)], "").await;
    assert_eq!(
        (res.status, res.body.as_str()),
        (401, "your session expired; log in again\n")
    );
}
