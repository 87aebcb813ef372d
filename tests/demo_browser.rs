//! The demo (`examples/demo`), driven in headless Chromium through chromedriver, the
//! way a person uses it (alone, and as one user in two independent browsers ending each
//! other's sessions); plus its refusals of cross-site and token-less POSTs, over plain
//! HTTP.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/install-browser`). Each test
//! starts its own `redis-server`, demo and chromedriver on free 127.0.0.1 ports and kills
//! them when it ends. Screenshots of the logged-in page land in
//! `target/tmp/demo/logged-in.png`, and the "your other sessions" section (two listed)
//! in `target/tmp/demo/other-sessions.png`.

#[path = "support/mod.rs"]
mod support;

#[path = "support/process.rs"]
mod process;

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use fantoccini::{elements::Element, Client as Browser, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use process::{build_examples, free_port, request, scratch_dir, Process};
use support::RedisServer;
use tower_redis_session::{
    fred::prelude::*, RedisSessionLayer, SessionHandle, SessionId, SessionManager,
};

/// How long the whole browser scenario may take (it waits out two 3 s TTLs).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the two-browser scenario may take (no TTL runs out in it).
const TWO_BROWSERS_TIMEOUT: Duration = Duration::from_secs(90);

/// How long one step may wait for the page to show what it should.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The demo, running against its own Redis.
struct Demo {
    /// The demo's own `redis-server`.
    redis: RedisServer,
    /// A client of that server, to check what the demo left in it.
    client: Client,
    /// A session manager over the same Redis and key prefix as the demo's, to name keys
    /// and handles and list a user's sessions as the demo does.
    manager: SessionManager,
    /// `http://127.0.0.1:PORT`.
    base: String,
    /// The demo process.
    process: Process,
}

impl Demo {
    /// Starts a `redis-server` and the demo against it, and waits until the demo listens.
    async fn start() -> Self {
        let redis = RedisServer::start();
        let client = redis.client().await;
        let examples = build_examples(&["demo"]);
        let port = free_port();
        let port_text = port.to_string();
        let url = redis.url();
        // Each demo its own log file: the tests of this binary run at once.
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let mut process = Process::start(
            &format!("demo-{n}"),
            &examples.join("demo"),
            &[],
            &[
                ("REDIS_URL", url.as_str()),
                ("BIND", "127.0.0.1"),
                ("PORT", port_text.as_str()),
                ("RUST_LOG", "info"),
            ],
        );
        process.wait_for_port(port, Duration::from_secs(30));
        // The demo's key prefix (the crate's default, which the demo sets explicitly).
        let manager = RedisSessionLayer::builder(client.clone())
            .key_prefix("session:")
            .build()
            .expect("the demo's layer settings")
            .manager();
        Self {
            redis,
            client,
            manager,
            base: format!("http://127.0.0.1:{port}"),
            process,
        }
    }

    /// The Redis key of a session ID (a cookie's value), as the demo names it.
    fn key(&self, id: &str) -> String {
        let id = SessionId::parse(id).expect("the cookie holds a well-formed session ID");
        self.manager.redis_key(&id)
    }

    /// The handle of a session ID (a cookie's value), as the demo's pages show it.
    fn handle(&self, id: &str) -> SessionHandle {
        let id = SessionId::parse(id).expect("the cookie holds a well-formed session ID");
        self.manager.handle(&id)
    }

    /// The handles of the user's live sessions, as the session manager lists them.
    async fn sessions_of(&self, user_id: &str) -> Vec<SessionHandle> {
        let mut handles: Vec<_> = self
            .manager
            .list(user_id)
            .await
            .unwrap()
            .into_iter()
            .map(|info| info.handle)
            .collect();
        handles.sort();
        handles
    }

    /// `true` if `key` exists in Redis.
    async fn exists(&self, key: &str) -> bool {
        let n: i64 = self.client.exists(key).await.unwrap();
        n == 1
    }

    /// One field of a session hash, as stored.
    async fn field(&self, key: &str, field: &str) -> Option<String> {
        self.client.hget(key, field).await.unwrap()
    }

    /// The key's remaining TTL in milliseconds, as Redis reports it.
    async fn pttl(&self, key: &str) -> i64 {
        self.client.pttl(key).await.unwrap()
    }
}

/// The first of `names` found on `PATH`.
fn find_on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Chromium and chromedriver, or a failure saying how to get them.
fn browser_tools() -> (PathBuf, PathBuf) {
    let chromium = find_on_path(&["chromium", "chromium-browser"]);
    let driver = find_on_path(&["chromedriver"]);
    match (chromium, driver) {
        (Some(chromium), Some(driver)) => (chromium, driver),
        _ => panic!(
            "chromium and chromedriver are needed for the demo's browser test: run scripts/install-browser (apt-get install -y chromium chromium-driver)"
        ),
    }
}

/// Starts chromedriver and a headless Chromium session with a fresh profile of its own
/// (in the returned directory, named after `name`).
async fn start_browser(chromium: &Path, driver: &Path, name: &str) -> (Process, Browser, PathBuf) {
    let port = free_port();
    let mut chromedriver = Process::start(
        &format!("chromedriver-{name}"),
        driver,
        &[&format!("--port={port}"), "--allowed-ips=127.0.0.1"],
        &[],
    );
    chromedriver.wait_for_port(port, Duration::from_secs(30));

    let profile = scratch_dir(&format!("chromium-profile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let args = serde_json::json!([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        "--window-size=1100,1300",
        format!("--user-data-dir={}", profile.display()),
    ]);
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), "chrome".into());
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "binary": chromium, "args": args }),
    );
    let browser = ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot start headless Chromium through chromedriver: {e}; chromedriver said:\n{}",
                chromedriver.output()
            )
        });
    (chromedriver, browser, profile)
}

/// The page's visible text, for failure messages.
async fn page_text(browser: &Browser) -> String {
    match browser.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(e) => format!("(no page: {e})"),
    }
}

/// Waits until the element at `css` exists and its text satisfies `ok`; returns the text.
async fn wait_text(browser: &Browser, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut last = None;
    loop {
        if let Ok(el) = browser.find(Locator::Css(css)).await {
            if let Ok(text) = el.text().await {
                if ok(&text) {
                    return text;
                }
                last = Some(text);
            }
        }
        if Instant::now() > deadline {
            panic!(
                "`{css}` did not show what was expected within {STEP_TIMEOUT:?} (last: {last:?}); the page says:\n{}",
                page_text(browser).await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the element at `css`, failing with the page's text if it does not come.
async fn find(browser: &Browser, css: &str) -> Element {
    match browser
        .wait()
        .at_most(STEP_TIMEOUT)
        .for_element(Locator::Css(css))
        .await
    {
        Ok(el) => el,
        Err(e) => panic!(
            "no `{css}` on the page ({e}); the page says:\n{}",
            page_text(browser).await
        ),
    }
}

/// Clicks the element at `css` (a form button: the browser submits and loads the next
/// page before the click returns).
async fn click(browser: &Browser, css: &str) {
    find(browser, css).await.click().await.unwrap();
}

/// The `sid` cookie the browser holds, if any.
async fn sid(browser: &Browser) -> Option<String> {
    browser
        .get_all_cookies()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name() == "sid")
        .map(|c| c.value().to_owned())
}

/// Fills in the login form and submits it.
async fn log_in(browser: &Browser, base: &str, name: &str, ttl: &str) {
    browser.goto(base).await.unwrap();
    find(browser, "#username-input")
        .await
        .send_keys(name)
        .await
        .unwrap();
    find(browser, "#ttl-select")
        .await
        .select_by_value(ttl)
        .await
        .unwrap();
    click(browser, "#login-button").await;
    find(browser, "#countdown").await;
}

/// The counter as the page shows it (the hash's `counter` field).
async fn shown_counter(browser: &Browser, expected: &str) {
    wait_text(browser, "#field-counter .value", |t| t == expected).await;
}

/// The issue's scenario, step by step, checking the page and Redis at each step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_can_log_in_count_change_ttl_rotate_log_out_and_watch_expiry() {
    let (chromium, driver) = browser_tools();
    let demo = Demo::start().await;
    let (chromedriver, browser, profile) = start_browser(&chromium, &driver, "solo").await;

    let outcome = tokio::time::timeout(SCENARIO_TIMEOUT, scenario(&demo, &browser)).await;
    let _ = browser.close().await;
    drop(chromedriver);
    let _ = std::fs::remove_dir_all(profile);
    if outcome.is_err() {
        panic!(
            "the browser scenario took longer than {SCENARIO_TIMEOUT:?}; the demo said:\n{}",
            demo.process.output()
        );
    }
}

/// The steps of [`a_person_can_log_in_count_change_ttl_rotate_log_out_and_watch_expiry`].
async fn scenario(demo: &Demo, browser: &Browser) {
    let base = demo.base.as_str();

    // Log in with a 3 s TTL. The name is shown as text, not markup.
    let name = "Ferris & <b>friends</b>";
    log_in(browser, base, name, "3").await;
    wait_text(browser, "#username", |t| t == name).await;
    assert!(
        browser.find(Locator::Css("#username b")).await.is_err(),
        "the username was rendered as HTML"
    );
    wait_text(browser, "#idle-ttl", |t| t == "3").await;
    shown_counter(browser, "0").await;
    let first_id = sid(browser)
        .await
        .expect("the browser keeps the Secure session cookie from http://127.0.0.1");
    let key = demo.key(&first_id);
    wait_text(browser, "#session-key", |t| t == key).await;
    assert_eq!(demo.field(&key, "username").await.as_deref(), Some(name));
    assert_eq!(demo.field(&key, "session_ttl").await.as_deref(), Some("3"));
    let pttl = demo.pttl(&key).await;
    assert!((1..=3000).contains(&pttl), "PTTL {pttl} for a 3 s session");
    // Internal fields are shown, and marked.
    let created = wait_text(browser, "#field-created_at .value", |t| !t.is_empty()).await;
    assert_eq!(
        demo.field(&key, "created_at").await.as_deref(),
        Some(created.as_str())
    );
    find(browser, "tr.internal#field-session_ttl").await;
    find(browser, "tr.user#field-username").await;

    // Counter up twice: in the page and in Redis.
    click(browser, "#increment").await;
    shown_counter(browser, "1").await;
    click(browser, "#increment").await;
    shown_counter(browser, "2").await;
    assert_eq!(demo.field(&key, "counter").await.as_deref(), Some("2"));

    // Change the TTL to a minute: Redis's TTL follows at once.
    find(browser, "#new-ttl")
        .await
        .select_by_value("60")
        .await
        .unwrap();
    click(browser, "#change-ttl").await;
    wait_text(browser, "#idle-ttl", |t| t == "60").await;
    assert_eq!(demo.field(&key, "session_ttl").await.as_deref(), Some("60"));
    let pttl = demo.pttl(&key).await;
    assert!(
        (3001..=60_000).contains(&pttl),
        "PTTL {pttl} after the TTL change"
    );
    let shown: i64 = wait_text(browser, "#pttl", |t| t.parse::<i64>().is_ok())
        .await
        .parse()
        .unwrap();
    assert!(
        (50_000..=60_000).contains(&shown),
        "the page shows PTTL {shown} ms"
    );

    // The screenshot of the logged-in page, kept under target/ (out of git).
    let png = browser.screenshot().await.unwrap();
    let shot = scratch_dir("demo").join("logged-in.png");
    std::fs::write(&shot, png).unwrap();

    // Rotate the ID: the cookie and the key change, the data stays, the old key is gone.
    click(browser, "#rotate").await;
    wait_text(browser, "#notice", |t| t.contains("rotated")).await;
    let second_id = sid(browser).await.expect("a session cookie after rotation");
    assert_ne!(second_id, first_id, "the cookie value changes on rotation");
    let new_key = demo.key(&second_id);
    wait_text(browser, "#session-key", |t| t == new_key).await;
    shown_counter(browser, "2").await;
    assert!(
        !demo.exists(&key).await,
        "the old key is gone after rotation"
    );
    assert_eq!(demo.field(&new_key, "counter").await.as_deref(), Some("2"));
    assert_eq!(
        demo.field(&new_key, "username").await.as_deref(),
        Some(name)
    );
    assert_eq!(
        demo.field(&new_key, "session_ttl").await.as_deref(),
        Some("60")
    );

    // Log out: the key is deleted and the cookie cleared.
    click(browser, "#logout").await;
    wait_text(browser, "#notice", |t| t.contains("Logged out")).await;
    find(browser, "#login-form").await;
    assert!(!demo.exists(&new_key).await, "the key is gone after logout");
    assert_eq!(sid(browser).await, None, "the cookie is cleared on logout");

    // A fresh 3 s session, left alone: the page counts down, goes back to `/` by itself
    // once Redis has deleted the key, and says the session expired.
    log_in(browser, base, "idle", "3").await;
    let idle_id = sid(browser).await.expect("a session cookie");
    let idle_key = demo.key(&idle_id);
    assert!(demo.exists(&idle_key).await);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(15);
    loop {
        let text = page_text(browser).await;
        if text.contains("Your session expired") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page did not say the session expired within 15 s; it says:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "the page reported expiry after only {:?}",
        started.elapsed()
    );
    find(browser, "#login-form").await;
    assert!(!demo.exists(&idle_key).await, "Redis expired the key");
    assert_eq!(
        sid(browser).await,
        None,
        "the stale cookie is cleared once the session is gone"
    );
    // The expired session's entry in its user's index is pruned when listed, and the
    // index, left empty, deleted.
    assert!(demo.sessions_of("idle").await.is_empty());
    let keys: Vec<String> = demo
        .client
        .custom(tower_redis_session::fred::cmd!("KEYS"), vec!["*"])
        .await
        .unwrap();
    assert!(keys.is_empty(), "keys left in Redis: {keys:?}");
    assert!(demo.redis.port() > 0);
}

/// Logs in over plain HTTP and returns the cookie and the page.
async fn http_login(base: &str) -> (String, String) {
    let res = request(
        "POST",
        &format!("{base}/login"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", base),
        ],
        "username=ferris&ttl=60",
    )
    .await;
    assert_eq!(res.status, 303, "{}", res.body);
    let sid = res.cookie("sid").expect("login sets the cookie");
    let page = request(
        "GET",
        &format!("{base}/"),
        &[("cookie", &format!("sid={sid}"))],
        "",
    )
    .await;
    assert_eq!(page.status, 200);
    (sid, page.body)
}

/// The CSRF defences and the escaping, checked with a plain HTTP client.
#[tokio::test]
async fn the_demo_refuses_cross_site_and_token_less_posts() {
    let demo = Demo::start().await;
    let base = demo.base.as_str();
    let form = ("content-type", "application/x-www-form-urlencoded");

    // A login posted from another site is refused, and starts no session.
    let res = request(
        "POST",
        &format!("{base}/login"),
        &[form, ("origin", "http://evil.example")],
        "username=mallory&ttl=60",
    )
    .await;
    assert_eq!(res.status, 403, "{}", res.body);
    assert_eq!(res.cookie("sid"), None);

    let (sid, page) = http_login(base).await;
    let cookie = format!("sid={sid}");
    let key = demo.key(&sid);
    let token = demo.field(&key, "csrf_token").await.expect("a CSRF token");
    assert!(page.contains(&token), "the forms carry the session's token");

    // Without the token, with a wrong one, or from another site: refused, nothing changes.
    for (body, origin) in [
        ("csrf=".to_owned(), base),
        ("csrf=not-the-token".to_owned(), base),
        (format!("csrf={token}"), "http://evil.example"),
    ] {
        let res = request(
            "POST",
            &format!("{base}/counter"),
            &[form, ("origin", origin), ("cookie", &cookie)],
            &body,
        )
        .await;
        assert_eq!(res.status, 403, "{body} from {origin}: {}", res.body);
    }
    assert_eq!(demo.field(&key, "counter").await.as_deref(), Some("0"));

    // With it, from this site: counted.
    let res = request(
        "POST",
        &format!("{base}/counter"),
        &[form, ("origin", base), ("cookie", &cookie)],
        &format!("csrf={token}"),
    )
    .await;
    assert_eq!(res.status, 303, "{}", res.body);
    assert_eq!(demo.field(&key, "counter").await.as_deref(), Some("1"));

    // Markup in a username is escaped.
    let res = request(
        "POST",
        &format!("{base}/login"),
        &[form, ("origin", base)],
        "username=%3Cscript%3Ealert(1)%3C%2Fscript%3E&ttl=60",
    )
    .await;
    let sid = res.cookie("sid").expect("login sets the cookie");
    let page = request(
        "GET",
        &format!("{base}/"),
        &[("cookie", &format!("sid={sid}"))],
        "",
    )
    .await;
    assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!page.body.contains("<script>alert"));
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("script-src 'self'"), "CSP: {csp:?}");
}

/// Without Redis, the demo prints one line and exits non-zero.
#[tokio::test]
async fn the_demo_says_so_in_one_line_when_redis_is_unreachable() {
    let examples = build_examples(&["demo"]);
    // A port nothing listens on.
    let port = free_port().to_string();
    let url = format!("redis://127.0.0.1:{}", free_port());
    let mut demo = Process::start(
        "demo-no-redis",
        &examples.join("demo"),
        &[],
        &[("REDIS_URL", url.as_str()), ("PORT", port.as_str())],
    );
    let (ok, output) = demo.wait_exit(Duration::from_secs(20));
    assert!(!ok, "the demo exits non-zero without Redis");
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got:\n{output}");
    assert!(
        lines[0].contains("cannot reach Redis") && lines[0].contains("redis-server"),
        "{output}"
    );
}

/// Two independent browsers (each with its own chromedriver, WebDriver session and
/// profile, so their own cookie jar) log in as the same user: the first sees the second
/// among "your other sessions" and ends it, and the second's next page is the login form;
/// then, from a fresh pair, "log out everywhere else" and "log out everywhere". The new
/// forms' CSRF checks and their refusal of other users' sessions are checked over plain
/// HTTP on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_in_two_browsers_ends_the_other_session_then_logs_out_everywhere() {
    let (chromium, driver) = browser_tools();
    let demo = Demo::start().await;
    let ((driver_a, a, profile_a), (driver_b, b, profile_b)) = tokio::join!(
        start_browser(&chromium, &driver, "a"),
        start_browser(&chromium, &driver, "b"),
    );

    let outcome = tokio::time::timeout(TWO_BROWSERS_TIMEOUT, two_browsers(&demo, &a, &b)).await;
    let _ = tokio::join!(a.close(), b.close());
    drop((driver_a, driver_b));
    let _ = std::fs::remove_dir_all(profile_a);
    let _ = std::fs::remove_dir_all(profile_b);
    if outcome.is_err() {
        panic!(
            "the two-browser scenario took longer than {TWO_BROWSERS_TIMEOUT:?}; the demo said:\n{}",
            demo.process.output()
        );
    }
}

/// The CSS selector of a session's row in "your other sessions".
fn other_row(handle: &SessionHandle) -> String {
    format!(r#"#others tr.other-session[data-handle="{handle}"]"#)
}

/// Percent-encodes a form value (`application/x-www-form-urlencoded`).
fn form_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                char::from(b).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Logs in as `username` (5 min TTL) over plain HTTP and returns the session cookie.
async fn http_login_as(base: &str, username: &str) -> String {
    let res = request(
        "POST",
        &format!("{base}/login"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", base),
        ],
        &format!("username={}&ttl=300", form_value(username)),
    )
    .await;
    assert_eq!(res.status, 303, "{}", res.body);
    res.cookie("sid").expect("login sets the cookie")
}

/// POSTs a form to `path` as the session `sid`, from `origin`.
async fn post_form(base: &str, path: &str, sid: &str, origin: &str, body: &str) -> process::Reply {
    request(
        "POST",
        &format!("{base}{path}"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", origin),
            ("cookie", &format!("sid={sid}")),
        ],
        body,
    )
    .await
}

/// Waits until the browser's next page (after `goto` or a click) is the login form
/// saying that its session is gone, and checks that the stale cookie was cleared.
async fn lands_on_login_form_with_session_gone(browser: &Browser, name: &str) {
    wait_text(browser, "#notice", |t| {
        t.contains("Your session expired or was ended")
    })
    .await;
    find(browser, "#login-form").await;
    assert_eq!(
        sid(browser).await,
        None,
        "{name}'s stale cookie is cleared once its session is gone"
    );
}

/// The steps of [`one_user_in_two_browsers_ends_the_other_session_then_logs_out_everywhere`].
async fn two_browsers(demo: &Demo, a: &Browser, b: &Browser) {
    let base = demo.base.as_str();
    // The username is the user id; markup in it stays text.
    let user = "Ada & <i>Lovelace</i>";

    // Both browsers log in as the same user: two sessions, both tied to the user.
    log_in(a, base, user, "300").await;
    log_in(b, base, user, "300").await;
    let sid_a = sid(a).await.expect("browser A holds a session cookie");
    let sid_b = sid(b).await.expect("browser B holds a session cookie");
    assert_ne!(sid_a, sid_b, "two profiles, two sessions");
    let (key_a, key_b) = (demo.key(&sid_a), demo.key(&sid_b));
    let (handle_a, handle_b) = (demo.handle(&sid_a), demo.handle(&sid_b));
    assert_eq!(demo.field(&key_a, "user_id").await.as_deref(), Some(user));
    assert_eq!(demo.field(&key_b, "user_id").await.as_deref(), Some(user));
    let mut both = vec![handle_a.clone(), handle_b.clone()];
    both.sort();
    assert_eq!(demo.sessions_of(user).await, both);

    // A (reloaded) lists B among its other sessions, and not itself; so does B list A.
    click(a, "#reload").await;
    let row_b = other_row(&handle_b);
    find(a, &row_b).await;
    wait_text(a, "#other-count", |t| t == "(1)").await;
    assert!(
        a.find(Locator::Css(&other_row(&handle_a))).await.is_err(),
        "A lists itself among its other sessions"
    );
    assert!(
        a.find(Locator::Css("#other-sessions i")).await.is_err(),
        "the user id was rendered as HTML"
    );
    wait_text(a, &format!("{row_b} .age"), |t| t.ends_with(" s ago")).await;
    wait_text(a, &format!("{row_b} .last-used"), |t| t.ends_with(" ago")).await;
    wait_text(a, &format!("{row_b} .expires-in"), |t| t.contains(" min ")).await;
    wait_text(a, &format!("{row_b} .counter"), |t| t == "0").await;
    click(b, "#reload").await;
    find(b, &other_row(&handle_a)).await;

    // A ends B's session: B's key is deleted, A's stays, the index holds A alone.
    click(a, &format!("{row_b} button.end-session")).await;
    wait_text(a, "#notice", |t| {
        t.contains("ended") && t.contains(&handle_b.as_str()[..12])
    })
    .await;
    find(a, "#no-other-sessions").await;
    wait_text(a, "#other-count", |t| t == "(0)").await;
    assert!(
        !demo.exists(&key_b).await,
        "B's key is gone once A ended it"
    );
    assert!(demo.exists(&key_a).await, "A's own session stays");
    assert_eq!(demo.sessions_of(user).await, vec![handle_a.clone()]);

    // B's next page load finds no session: the login form, saying so. Its request did
    // not bring the key back.
    click(b, "#reload").await;
    lands_on_login_form_with_session_gone(b, "B").await;
    assert!(
        !demo.exists(&key_b).await,
        "B's request brought its key back"
    );

    // Over plain HTTP, a third session of the user (C) and one of someone else (D): the
    // new forms want the CSRF token and a same-site origin, take only well-formed
    // handles, never this session's own, and never another user's session.
    let other_user = "someone else";
    let sid_c = http_login_as(base, user).await;
    let sid_d = http_login_as(base, other_user).await;
    let (key_c, key_d) = (demo.key(&sid_c), demo.key(&sid_d));
    let handle_d = demo.handle(&sid_d);
    let token_c = demo
        .field(&key_c, "csrf_token")
        .await
        .expect("C's CSRF token");
    for (path, body, origin, status) in [
        (
            "/sessions/end",
            format!("csrf=&handle={handle_a}"),
            base,
            403,
        ),
        (
            "/sessions/end",
            format!("csrf={token_c}&handle={handle_a}"),
            "http://evil.example",
            403,
        ),
        ("/sessions/end-others", "csrf=nope".to_owned(), base, 403),
        ("/sessions/end-all", "csrf=".to_owned(), base, 403),
        (
            "/sessions/end",
            format!("csrf={token_c}&handle=..%2F..%2Fsession%3Ax"),
            base,
            400,
        ),
        (
            "/sessions/end",
            format!("csrf={token_c}&handle={}", demo.handle(&sid_c)),
            base,
            400,
        ),
    ] {
        let res = post_form(base, path, &sid_c, origin, &body).await;
        assert_eq!(
            res.status, status,
            "{path} {body} from {origin}: {}",
            res.body
        );
    }
    let res = post_form(
        base,
        "/sessions/end",
        &sid_c,
        base,
        &format!("csrf={token_c}&handle={handle_d}"),
    )
    .await;
    assert_eq!(res.status, 303, "{}", res.body);
    assert_eq!(res.header("location"), Some("/?notice=not-ended"));
    for key in [&key_a, &key_c, &key_d] {
        assert!(demo.exists(key).await, "a refused POST ended a session");
    }

    // A fresh pair: A logs out and in again, B logs in again. A sees B and C.
    click(a, "#logout").await;
    find(a, "#login-form").await;
    assert!(!demo.exists(&key_a).await, "A's key is gone after logout");
    log_in(a, base, user, "300").await;
    log_in(b, base, user, "300").await;
    let sid_a = sid(a).await.expect("browser A holds a session cookie");
    let sid_b = sid(b).await.expect("browser B holds a session cookie");
    let (key_a, key_b) = (demo.key(&sid_a), demo.key(&sid_b));
    let (handle_b, handle_c) = (demo.handle(&sid_b), demo.handle(&sid_c));
    click(a, "#reload").await;
    wait_text(a, "#other-count", |t| t == "(2)").await;
    find(a, &other_row(&handle_b)).await;
    find(a, &other_row(&handle_c)).await;
    let png = find(a, "#other-sessions").await.screenshot().await.unwrap();
    std::fs::write(scratch_dir("demo").join("other-sessions.png"), png).unwrap();

    // B logs out everywhere else: A and C end, B stays, D is untouched.
    click(b, "#end-others").await;
    wait_text(b, "#notice", |t| t.contains("2 other sessions ended")).await;
    find(b, "#no-other-sessions").await;
    assert!(!demo.exists(&key_a).await, "A's key is gone");
    assert!(!demo.exists(&key_c).await, "C's key is gone");
    assert!(demo.exists(&key_b).await, "B's own session stays");
    assert!(demo.exists(&key_d).await, "another user's session stays");
    assert_eq!(demo.sessions_of(user).await, vec![handle_b.clone()]);
    click(a, "#reload").await;
    lands_on_login_form_with_session_gone(a, "A").await;

    // A logs in once more; B logs out everywhere, itself included: both keys go, B is
    // back at the login form, and the user has no session left. D is untouched.
    log_in(a, base, user, "300").await;
    let sid_a = sid(a).await.expect("browser A holds a session cookie");
    let key_a = demo.key(&sid_a);
    click(b, "#reload").await;
    find(b, &other_row(&demo.handle(&sid_a))).await;
    click(b, "#end-all").await;
    wait_text(b, "#notice", |t| {
        t.contains("Logged out everywhere: 2 sessions ended")
    })
    .await;
    find(b, "#login-form").await;
    assert_eq!(sid(b).await, None, "B's cookie is cleared");
    assert!(!demo.exists(&key_a).await, "A's key is gone");
    assert!(!demo.exists(&key_b).await, "B's key is gone");
    assert!(demo.sessions_of(user).await.is_empty());
    assert_eq!(demo.sessions_of(other_user).await, vec![handle_d]);
    click(a, "#reload").await;
    lands_on_login_form_with_session_gone(a, "A").await;

    // Nothing in Redis is tied to the user any more; D's session is all that is left.
    let keys: Vec<String> = demo
        .client
        .custom(tower_redis_session::fred::cmd!("KEYS"), vec!["*"])
        .await
        .unwrap();
    assert!(keys.contains(&key_d), "keys left: {keys:?}");
    for key in &keys {
        let kind: String = demo
            .client
            .custom(tower_redis_session::fred::cmd!("TYPE"), vec![key.as_str()])
            .await
            .unwrap();
        if kind == "hash" {
            assert_ne!(
                demo.field(key, "user_id").await.as_deref(),
                Some(user),
                "{key} is still a session of the user"
            );
        }
    }
}
