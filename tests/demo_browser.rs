//! The demo (`examples/demo`), driven in headless Chromium through chromedriver, the
//! way a person uses it; plus its refusals of cross-site and token-less POSTs, over
//! plain HTTP.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/install-browser`). Each test
//! starts its own `redis-server`, demo and chromedriver on free 127.0.0.1 ports and kills
//! them when it ends. The screenshot of the logged-in page lands in
//! `target/tmp/demo/logged-in.png`.

#[path = "support/mod.rs"]
mod support;

#[path = "support/process.rs"]
mod process;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use fantoccini::{elements::Element, Client as Browser, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use process::{build_examples, free_port, request, scratch_dir, Process};
use support::RedisServer;
use tower_redis_session::{fred::prelude::*, SessionId};

/// How long the whole browser scenario may take (it waits out two 3 s TTLs).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(120);

/// How long one step may wait for the page to show what it should.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The demo, running against its own Redis.
struct Demo {
    /// The demo's own `redis-server`.
    redis: RedisServer,
    /// A client of that server, to check what the demo left in it.
    client: Client,
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
        let mut process = Process::start(
            "demo",
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
        Self {
            redis,
            client,
            base: format!("http://127.0.0.1:{port}"),
            process,
        }
    }

    /// The Redis key of a session ID, as the demo names it.
    fn key(id: &str) -> String {
        let id = SessionId::parse(id).expect("the cookie holds a well-formed session ID");
        format!("session:{}", id.digest())
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

/// Starts chromedriver and a headless Chromium session with a fresh profile (in the
/// returned directory).
async fn start_browser(chromium: &Path, driver: &Path) -> (Process, Browser, PathBuf) {
    let port = free_port();
    let mut chromedriver = Process::start(
        "chromedriver",
        driver,
        &[&format!("--port={port}"), "--allowed-ips=127.0.0.1"],
        &[],
    );
    chromedriver.wait_for_port(port, Duration::from_secs(30));

    let profile = scratch_dir(&format!("chromium-profile-{}", std::process::id()));
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

/// The scenario, step by step, checking the page and Redis at each step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_can_log_in_count_change_ttl_rotate_log_out_and_watch_expiry() {
    let (chromium, driver) = browser_tools();
    let demo = Demo::start().await;
    let (chromedriver, browser, profile) = start_browser(&chromium, &driver).await;

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
    let key = Demo::key(&first_id);
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
    let new_key = Demo::key(&second_id);
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
    let idle_key = Demo::key(&idle_id);
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
    let key = Demo::key(&sid);
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
