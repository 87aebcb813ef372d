//! The demo (`examples/demo`), driven in headless Chromium through chromedriver, the
//! way a person uses it: alone (with the live page following changes made by another
//! client, and one-time notices), on a phone-width screen, meeting every error page a
//! person can reach, watching a short session expire, and as one user in two
//! independent browsers ending each other's sessions; plus its refusals of cross-site
//! and token-less POSTs and its live view's promises, over plain HTTP.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/install-browser`). Each test
//! starts its own `redis-server`, demo and chromedriver on free 127.0.0.1 ports and kills
//! them when it ends. Screenshots land in `target/tmp/demo/`: the logged-in page
//! (`logged-in.png`), the page at phone width (`phone*.png`), "your other sessions" with
//! two listed (`other-sessions.png`) and the page Redis being down gives
//! (`redis-down.png`).
//!
//! Steps that are not about expiry use TTLs of minutes, so that a slow step on a busy
//! machine cannot expire a session under the test; one test watches a 3 s TTL run out.

#[path = "support/mod.rs"]
mod support;

#[path = "support/process.rs"]
mod process;

use std::{
    collections::HashMap,
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

/// The demo's session cookie on 127.0.0.1: the `__Host-` name, which Chromium keeps from
/// `http://127.0.0.1` (a secure context) like from HTTPS.
const COOKIE: &str = "__Host-sid";

/// How long one browser scenario may take.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(120);

/// How long one step may wait for the page to show what it should.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The TTL (seconds) of every session whose expiry a test does not wait for.
const LONG_TTL: &str = "300";

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

    /// `true` if the session at `key` is live: its hash holds the layer's fields.
    async fn is_live(&self, key: &str) -> bool {
        self.field(key, "created_at").await.is_some()
    }

    /// `true` if no session lives at `key`: no key, or only the short-lived marker a
    /// session layer may leave where a session ended (a hash whose one field is `ended`).
    async fn is_over(&self, key: &str) -> bool {
        let hash: HashMap<String, String> = self.client.hgetall(key).await.unwrap();
        hash.is_empty() || (hash.len() == 1 && hash.contains_key("ended"))
    }

    /// One field of a session hash, as stored.
    async fn field(&self, key: &str, field: &str) -> Option<String> {
        self.client.hget(key, field).await.unwrap()
    }

    /// The key's remaining TTL in milliseconds, as Redis reports it.
    async fn pttl(&self, key: &str) -> i64 {
        self.client.pttl(key).await.unwrap()
    }

    /// Every key in the demo's Redis.
    async fn keys(&self) -> Vec<String> {
        self.client
            .custom(tower_redis_session::fred::cmd!("KEYS"), vec!["*"])
            .await
            .unwrap()
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

/// A headless Chromium with chromedriver and a fresh profile of its own.
struct Chromium {
    /// The WebDriver session.
    browser: Browser,
    /// Its chromedriver (killed when dropped).
    driver: Process,
    /// The profile directory.
    profile: PathBuf,
}

impl Chromium {
    /// Closes the browser and removes its profile.
    async fn close(self) {
        let _ = self.browser.close().await;
        drop(self.driver);
        let _ = std::fs::remove_dir_all(self.profile);
    }
}

/// Starts chromedriver and a headless Chromium session with a fresh profile of its own
/// (named after `name`), its window `width` CSS pixels wide.
async fn start_browser(name: &str, width: u32) -> Chromium {
    let (chromium, driver) = browser_tools();
    start_browser_with(&chromium, &driver, name, width).await
}

/// [`start_browser`] with the tools found.
async fn start_browser_with(chromium: &Path, driver: &Path, name: &str, width: u32) -> Chromium {
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
        "--hide-scrollbars",
        format!("--window-size={width},1300"),
        format!("--user-data-dir={}", profile.display()),
    ]);
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), "chrome".into());
    // Dialogs (the confirmations) stay open until the test answers them.
    caps.insert("unhandledPromptBehavior".into(), "ignore".into());
    let mut options = serde_json::json!({ "binary": chromium, "args": args });
    // Headless windows are at least 500 px wide: narrower screens are emulated, as the
    // browser's device toolbar does.
    if width < 500 {
        options["mobileEmulation"] = serde_json::json!({
            "deviceMetrics": { "width": width, "height": 844, "pixelRatio": 2.0, "touch": true },
        });
    }
    caps.insert("goog:chromeOptions".into(), options);
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
    Chromium {
        browser,
        driver: chromedriver,
        profile,
    }
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

/// Waits until `css` matches nothing displayed (absent, or hidden).
async fn wait_hidden(browser: &Browser, css: &str) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let shown = match browser.find(Locator::Css(css)).await {
            Ok(el) => el.is_displayed().await.unwrap_or(false),
            Err(_) => false,
        };
        if !shown {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{css}` is still shown after {STEP_TIMEOUT:?}; the page says:\n{}",
            page_text(browser).await
        );
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

/// Waits for the element at `css` to be displayed.
async fn find_shown(browser: &Browser, css: &str) -> Element {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let el = find(browser, css).await;
        if el.is_displayed().await.unwrap_or(false) {
            return el;
        }
        assert!(
            Instant::now() < deadline,
            "`{css}` is on the page but not shown after {STEP_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clicks the element at `css` (a form button: the browser submits and loads the next
/// page before the click returns).
async fn click(browser: &Browser, css: &str) {
    // The live view may replace the element between finding and clicking it (a poll
    // re-renders the page): find it again then.
    for _ in 0..5 {
        match find(browser, css).await.click().await {
            Ok(()) => return,
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("click on `{css}`: {e}"),
        }
    }
    panic!("`{css}` kept being replaced while it was clicked");
}

/// Waits for the confirmation dialog a click opened, checks its text, and accepts or
/// dismisses it.
async fn answer_confirmation(browser: &Browser, contains: &str, accept: bool) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    let text = loop {
        if let Ok(text) = browser.get_alert_text().await {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no confirmation dialog within {STEP_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(text.contains(contains), "the dialog says {text:?}");
    if accept {
        browser.accept_alert().await.unwrap();
    } else {
        browser.dismiss_alert().await.unwrap();
    }
}

/// The session cookie the browser holds, if any.
async fn sid(browser: &Browser) -> Option<String> {
    browser
        .get_all_cookies()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name() == COOKIE)
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

/// Waits until the page has polled `GET /live` once more: the PTTL it shows changes
/// with every poll. Returns right after a poll, with about a second before the next.
async fn next_poll(browser: &Browser) {
    let before = wait_text(browser, "#pttl", |_| true).await;
    wait_text(browser, "#pttl", |t| t != before).await;
}

/// Runs `scenario` within [`SCENARIO_TIMEOUT`], then closes the browsers; on a timeout,
/// fails with what the demo printed.
async fn run_scenario(demo: &Demo, browsers: Vec<Chromium>, scenario: impl std::future::Future) {
    let outcome = tokio::time::timeout(SCENARIO_TIMEOUT, scenario).await;
    for browser in browsers {
        browser.close().await;
    }
    if outcome.is_err() {
        panic!(
            "the browser scenario took longer than {SCENARIO_TIMEOUT:?}; the demo said:\n{}",
            demo.process.output()
        );
    }
}

/// Log in, count, see a change made by another client without reloading, change the
/// TTL, rotate the ID, log out; notices show once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_can_log_in_count_change_ttl_rotate_and_log_out_on_a_live_page() {
    let demo = Demo::start().await;
    let chromium = start_browser("solo", 1100).await;
    let browser = chromium.browser.clone();
    run_scenario(&demo, vec![chromium], solo(&demo, &browser)).await;
}

/// The steps of [`a_person_can_log_in_count_change_ttl_rotate_and_log_out_on_a_live_page`].
async fn solo(demo: &Demo, browser: &Browser) {
    let base = demo.base.as_str();

    // Log in. The name is shown as text, not markup; the notice says the session started.
    let name = "Ferris & <b>friends</b>";
    log_in(browser, base, name, LONG_TTL).await;
    wait_text(browser, "#username", |t| t == name).await;
    assert!(
        browser.find(Locator::Css("#username b")).await.is_err(),
        "the username was rendered as HTML"
    );
    wait_text(browser, "#notice", |t| {
        t.contains("Session started with an idle TTL of 300 s")
    })
    .await;
    wait_text(browser, "#idle-ttl", |t| t == LONG_TTL).await;
    shown_counter(browser, "0").await;
    let first_id = sid(browser)
        .await
        .expect("the browser keeps the __Host- session cookie from http://127.0.0.1");
    let key = demo.key(&first_id);
    wait_text(browser, "#session-key", |t| t == key).await;
    assert_eq!(demo.field(&key, "username").await.as_deref(), Some(name));
    assert_eq!(
        demo.field(&key, "session_ttl").await.as_deref(),
        Some("300")
    );
    // Internal fields are shown, and marked.
    let created = wait_text(browser, "#field-created_at .value", |t| !t.is_empty()).await;
    assert_eq!(
        demo.field(&key, "created_at").await.as_deref(),
        Some(created.as_str())
    );
    find(browser, "tr.internal#field-session_ttl").await;
    find(browser, "tr.user#field-username").await;

    // The notice was a one-time flash kept in the session: gone from the hash (the live
    // table follows) and not shown again on reload.
    wait_hidden(browser, "#field-flash").await;
    assert_eq!(demo.field(&key, "flash").await, None);
    click(browser, "#reload").await;
    find(browser, "#countdown").await;
    assert!(
        browser.find(Locator::Css("#notice")).await.is_err(),
        "the notice showed again on reload: {}",
        page_text(browser).await
    );

    // Counter up twice: in the page and in Redis.
    click(browser, "#increment").await;
    shown_counter(browser, "1").await;
    click(browser, "#increment").await;
    shown_counter(browser, "2").await;
    assert_eq!(demo.field(&key, "counter").await.as_deref(), Some("2"));

    // Live: another client (plain HTTP, same cookie) counts; the page follows without a
    // reload, and so does `last_accessed_at`, which that request moved.
    let token = demo.field(&key, "csrf_token").await.expect("a CSRF token");
    let shown_last = wait_text(browser, "#field-last_accessed_at .value", |_| true).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let res = post_form(base, "/counter", &first_id, base, &format!("csrf={token}")).await;
    assert_eq!(res.status, 303, "{}", res.body);
    shown_counter(browser, "3").await;
    let last_after = demo.field(&key, "last_accessed_at").await.unwrap();
    assert_ne!(
        last_after, shown_last,
        "the other client's request loaded it"
    );
    wait_text(browser, "#field-last_accessed_at .value", |t| {
        t == last_after
    })
    .await;

    // The polling itself does not push the expiry back: across three polls, Redis's PTTL
    // only falls, and `last_accessed_at` stays.
    let before = demo.pttl(&key).await;
    let started = Instant::now();
    for _ in 0..3 {
        next_poll(browser).await;
    }
    let after = demo.pttl(&key).await;
    let waited = i64::try_from(started.elapsed().as_millis()).unwrap();
    assert!(
        after <= before - waited + 50,
        "PTTL went from {before} to {after} ms over {waited} ms of polling"
    );
    assert_eq!(
        demo.field(&key, "last_accessed_at").await.as_deref(),
        Some(last_after.as_str()),
        "polling loaded the session"
    );
    wait_text(browser, "#pttl-when", |t| t == "at the last poll").await;

    // Change the TTL to a minute: Redis's TTL follows at once.
    find(browser, "#new-ttl")
        .await
        .select_by_value("60")
        .await
        .unwrap();
    click(browser, "#change-ttl").await;
    wait_text(browser, "#notice", |t| {
        t.contains("Idle TTL changed to 60 s")
    })
    .await;
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
        (40_000..=60_000).contains(&shown),
        "the page shows PTTL {shown} ms"
    );

    // The screenshot of the logged-in page, kept under target/ (out of git).
    let png = browser.screenshot().await.unwrap();
    std::fs::write(scratch_dir("demo").join("logged-in.png"), png).unwrap();

    // Rotate the ID: the cookie, the key and the CSRF token change, the data stays, the
    // old key holds no session.
    click(browser, "#rotate").await;
    wait_text(browser, "#notice", |t| t.contains("rotated")).await;
    let second_id = sid(browser).await.expect("a session cookie after rotation");
    assert_ne!(second_id, first_id, "the cookie value changes on rotation");
    let new_key = demo.key(&second_id);
    wait_text(browser, "#session-key", |t| t == new_key).await;
    shown_counter(browser, "3").await;
    assert!(demo.is_over(&key).await, "the old key holds no session");
    assert_eq!(demo.field(&new_key, "counter").await.as_deref(), Some("3"));
    assert_eq!(
        demo.field(&new_key, "username").await.as_deref(),
        Some(name)
    );
    assert_eq!(
        demo.field(&new_key, "session_ttl").await.as_deref(),
        Some("60")
    );
    let new_token = demo
        .field(&new_key, "csrf_token")
        .await
        .expect("a CSRF token after rotation");
    assert_ne!(new_token, token, "the CSRF token is renewed with the ID");
    let form_token = find(browser, "#increment")
        .await
        .find(Locator::XPath("../input[@name='csrf']"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap();
    assert_eq!(form_token.as_deref(), Some(new_token.as_str()));
    // The old token no longer works with the new ID.
    let res = post_form(base, "/counter", &second_id, base, &format!("csrf={token}")).await;
    assert_eq!(res.status, 403, "{}", res.body);

    // Log out: the session ends and the cookie is cleared; the notice shows once.
    click(browser, "#logout").await;
    wait_text(browser, "#notice", |t| t.contains("Logged out")).await;
    find(browser, "#login-form").await;
    assert!(demo.is_over(&new_key).await, "the session ended on logout");
    assert_eq!(sid(browser).await, None, "the cookie is cleared on logout");
    browser.refresh().await.unwrap();
    find(browser, "#login-form").await;
    assert!(
        browser.find(Locator::Css("#notice")).await.is_err(),
        "the logout notice showed again on reload"
    );
}

/// A 3 s session left alone: the page counts down, goes back to `/` by itself once Redis
/// has deleted the key, and says the session expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_left_alone_expires_and_the_page_says_so() {
    let demo = Demo::start().await;
    let chromium = start_browser("expiry", 1100).await;
    let browser = chromium.browser.clone();
    run_scenario(&demo, vec![chromium], expiry(&demo, &browser)).await;
}

/// The steps of [`a_session_left_alone_expires_and_the_page_says_so`].
async fn expiry(demo: &Demo, browser: &Browser) {
    log_in(browser, &demo.base, "idle", "3").await;
    let started = Instant::now();
    let idle_id = sid(browser).await.expect("a session cookie");
    let idle_key = demo.key(&idle_id);
    assert!(demo.is_live(&idle_key).await);
    let pttl = demo.pttl(&idle_key).await;
    assert!((1..=3000).contains(&pttl), "PTTL {pttl} for a 3 s session");
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
    assert!(!demo.is_live(&idle_key).await, "Redis expired the key");
    assert_eq!(
        sid(browser).await,
        None,
        "the stale cookie is cleared once the session is gone"
    );
    // The expired session is no longer listed. Its entry in its user's index stays for
    // a minute (an entry that young could be a login in flight), then is pruned.
    assert!(demo.sessions_of("idle").await.is_empty());
    let keys = demo.keys().await;
    assert!(
        keys.iter().all(|k| k.contains(":user:")),
        "keys left in Redis: {keys:?}"
    );
}

/// The page at 390 CSS pixels (a phone): nothing is wider than its card or the screen,
/// every "End" button is on screen, and values wrap between words, not inside one that
/// would fit on a line of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_fits_a_phone_screen() {
    let demo = Demo::start().await;
    let chromium = start_browser("phone", 390).await;
    let browser = chromium.browser.clone();
    run_scenario(&demo, vec![chromium], phone(&demo, &browser)).await;
}

/// Checks the page's layout in the browser; returns what is wrong, one line each.
const LAYOUT_CHECK: &str = r#"
const problems = [];
const viewport = document.documentElement.clientWidth;
if (document.documentElement.scrollWidth > viewport) {
  problems.push("the page scrolls sideways: " + document.documentElement.scrollWidth + " px in " + viewport);
}
const within = (inner, outer, what) => {
  const a = inner.getBoundingClientRect(), b = outer.getBoundingClientRect();
  if (a.width > 0 && (a.left < b.left - 0.5 || a.right > b.right + 0.5)) {
    problems.push(what + " spans " + a.left.toFixed(1) + ".." + a.right.toFixed(1) + ", outside " + b.left.toFixed(1) + ".." + b.right.toFixed(1));
  }
};
document.querySelectorAll(".card").forEach((card) => within(card, document.body, "a card"));
document.querySelectorAll("table").forEach((table) => {
  const card = table.closest(".card");
  within(table, card, "table #" + table.id);
  if (table.scrollWidth > table.clientWidth + 1) problems.push("table #" + table.id + " overflows itself");
  table.querySelectorAll("td, th, button, code").forEach((el) => within(el, card, el.tagName + " in #" + table.id));
});
document.querySelectorAll("button.end-session").forEach((button) => {
  const r = button.getBoundingClientRect();
  if (r.width === 0 || r.right > viewport || r.left < 0) problems.push("an End button is off screen");
  button.scrollIntoView({ block: "center" });
  const s = button.getBoundingClientRect();
  const top = document.elementFromPoint(s.left + s.width / 2, s.top + s.height / 2);
  if (top !== button && !button.contains(top)) problems.push("an End button is covered by " + (top && top.outerHTML.slice(0, 60)));
});
window.scrollTo(0, 0);
// A word (between spaces and the page's break opportunities) split over lines although
// it would fit on a line of its own.
const cells = document.querySelectorAll("td, dd, #notice, h2, p");
cells.forEach((cell) => {
  // The room for text: the cell's box less its padding and borders.
  const style = getComputedStyle(cell);
  const width = cell.getBoundingClientRect().width
    - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight)
    - parseFloat(style.borderLeftWidth) - parseFloat(style.borderRightWidth);
  const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const re = /\S+/g;
    let m;
    while ((m = re.exec(node.data))) {
      const range = document.createRange();
      range.setStart(node, m.index);
      range.setEnd(node, m.index + m[0].length);
      const lines = new Set(Array.from(range.getClientRects()).map((r) => Math.round(r.top)));
      if (lines.size < 2) continue;
      const probe = document.createElement("span");
      probe.style.whiteSpace = "nowrap";
      probe.textContent = m[0];
      node.parentNode.insertBefore(probe, node);
      const natural = probe.getBoundingClientRect().width;
      probe.remove();
      if (natural <= width - 1) problems.push("\"" + m[0] + "\" (" + natural.toFixed(0) + " px) breaks inside in a " + width.toFixed(0) + " px " + cell.tagName);
    }
  }
});
return problems;
"#;

/// The steps of [`the_page_fits_a_phone_screen`].
async fn phone(demo: &Demo, browser: &Browser) {
    let base = demo.base.as_str();
    let user = "Grace Hopper, Harvard Mark I";
    log_in(browser, base, user, LONG_TTL).await;
    let width = browser
        .execute("return window.innerWidth", vec![])
        .await
        .unwrap();
    assert_eq!(width.as_i64(), Some(390), "the window is 390 CSS px wide");
    // Two more sessions of the same user, so that "your other sessions" has rows; the
    // live page lists them without a reload.
    http_login_as(base, user).await;
    http_login_as(base, user).await;
    wait_text(browser, "#other-count", |t| t == "(2)").await;
    find_shown(browser, "#others button.end-session").await;
    // Let the fresh rows' texts settle (the flash field leaves the table, too).
    next_poll(browser).await;

    let problems = browser.execute(LAYOUT_CHECK, vec![]).await.unwrap();
    let problems: Vec<String> = serde_json::from_value(problems).unwrap();
    for (css, file) in [
        ("#session-card", "phone.png"),
        ("#fields", "phone-hash.png"),
        ("#other-sessions", "phone-others.png"),
    ] {
        let png = find(browser, css).await.screenshot().await.unwrap();
        std::fs::write(scratch_dir("demo").join(file), png).unwrap();
    }
    assert!(
        problems.is_empty(),
        "at 390 px (see target/tmp/demo/phone*.png):\n{}",
        problems.join("\n")
    );
    // The login form fits too.
    click(browser, "#logout").await;
    find(browser, "#login-form").await;
    // Give the new page a moment to settle (its stylesheet and notice) before judging it.
    let mut problems = Vec::new();
    for _ in 0..10 {
        let found = browser.execute(LAYOUT_CHECK, vec![]).await.unwrap();
        problems = serde_json::from_value::<Vec<String>>(found).unwrap();
        if problems.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        problems.is_empty(),
        "login form at 390 px:\n{}",
        problems.join("\n")
    );
}

/// Waits for the demo's styled error page with `status`, and checks it: the stylesheet
/// applies, it says what happened and what to do, links to the start page, and its
/// header names the Redis it uses. Returns what it says happened.
async fn styled_error_page(browser: &Browser, demo: &Demo, status: u16) -> String {
    find(browser, &format!(r#"#error-page[data-status="{status}"]"#)).await;
    let title = wait_text(browser, "#error-title", |t| !t.is_empty()).await;
    let text = wait_text(browser, "#error", |t| !t.is_empty()).await;
    wait_text(browser, "#error-next", |t| !t.is_empty()).await;
    find_shown(browser, "#start-page").await;
    let background = browser
        .execute(
            "return getComputedStyle(document.body).backgroundColor",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        background.as_str(),
        Some("rgb(246, 247, 249)"),
        "the stylesheet does not apply to the {status} page"
    );
    let redis = wait_text(browser, "header .sub", |_| true).await;
    assert!(
        redis.trim_end().ends_with(&demo.redis.url()),
        "the {status} page's header: {redis:?}"
    );
    let body = page_text(browser).await;
    assert!(!body.contains("Failed to"), "{body}");
    format!("{title}: {text}")
}

/// Every error a person can reach is the demo's own page, saying what happened and what
/// to do: an unknown address (404), a form's address opened (405), a TTL that is not a
/// number (the form again, saying what to fix), a change to a session ended meanwhile
/// (409), and Redis down (503, from the session layer's `error_response` hook).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_a_person_can_reach_is_a_styled_page() {
    let mut demo = Demo::start().await;
    let chromium = start_browser("errors", 1100).await;
    let browser = chromium.browser.clone();
    let outcome = tokio::time::timeout(SCENARIO_TIMEOUT, errors(&mut demo, &browser)).await;
    chromium.close().await;
    if outcome.is_err() {
        panic!(
            "the browser scenario took longer than {SCENARIO_TIMEOUT:?}; the demo said:\n{}",
            demo.process.output()
        );
    }
}

/// The steps of [`every_error_a_person_can_reach_is_a_styled_page`].
async fn errors(demo: &mut Demo, browser: &Browser) {
    let base = demo.base.clone();

    // An unknown address.
    browser.goto(&format!("{base}/no/such/page")).await.unwrap();
    let said = styled_error_page(browser, demo, 404).await;
    assert!(said.contains("/no/such/page"), "{said}");
    click(browser, "#start-page").await;
    find(browser, "#login-form").await;

    // The login form's address, opened (Enter in the address bar after a failed login).
    browser.goto(&format!("{base}/login")).await.unwrap();
    let said = styled_error_page(browser, demo, 405).await;
    assert!(said.contains("/login"), "{said}");

    // A TTL that is not a number: the form comes back, saying what to fix, with the
    // name kept.
    browser.goto(&base).await.unwrap();
    find(browser, "#username-input")
        .await
        .send_keys("typo")
        .await
        .unwrap();
    browser
        .execute(
            "document.querySelector('#ttl-select option:checked').value = 'ten'",
            vec![],
        )
        .await
        .unwrap();
    click(browser, "#login-button").await;
    wait_text(browser, "#notice", |t| t.contains("Pick one of the TTLs")).await;
    let kept = find(browser, "#username-input")
        .await
        .prop("value")
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some("typo"));
    assert_eq!(sid(browser).await, None, "no session from a refused login");

    // A change to a session ended meanwhile (here by the manager, as "log out
    // everywhere" in another browser does): not applied, and the page says so.
    log_in(browser, &base, "late", LONG_TTL).await;
    let key = demo.key(&sid(browser).await.unwrap());
    next_poll(browser).await;
    // Hold the page's polls from here on, so that it cannot notice the end and leave
    // the page before the click, however slow the machine is.
    browser
        .execute(
            "window.fetch = function () { return new Promise(function () {}); }",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(demo.manager.terminate_all("late", None).await.unwrap(), 1);
    click(browser, "#increment").await;
    let said = styled_error_page(browser, demo, 409).await;
    assert!(said.contains("Nothing was changed"), "{said}");
    assert!(
        demo.is_over(&key).await,
        "the change brought the session back"
    );
    click(browser, "#start-page").await;
    find(browser, "#login-form").await;

    // Redis down: the live page says so at its next poll; a request gets the layer's
    // response, which the demo styles like its own pages.
    log_in(browser, &base, "unlucky", LONG_TTL).await;
    demo.redis.stop();
    wait_text(browser, "#live-status", |t| {
        t.contains("Redis is not answering")
    })
    .await;
    click(browser, "#reload").await;
    let said = styled_error_page(browser, demo, 503).await;
    assert!(said.contains("Redis"), "{said}");
    let png = browser.screenshot().await.unwrap();
    std::fs::write(scratch_dir("demo").join("redis-down.png"), png).unwrap();
}

/// Logs in over plain HTTP and returns the cookie and the page.
async fn http_login(base: &str) -> (String, String) {
    let sid = http_login_as(base, "ferris").await;
    let page = get(base, "/", Some(&sid)).await;
    assert_eq!(page.status, 200);
    (sid, page.body)
}

/// `GET path`, with the session cookie `sid` if given.
async fn get(base: &str, path: &str, sid: Option<&str>) -> process::Reply {
    let cookie = sid.map(|sid| format!("{COOKIE}={sid}"));
    let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("cookie", c.as_str())).collect();
    request("GET", &format!("{base}{path}"), &headers, "").await
}

/// The CSRF defences, the escaping, and the HTTP side of the error pages and the live
/// view, checked with a plain HTTP client.
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
    assert_eq!(res.cookie(COOKIE), None);

    let (sid, page) = http_login(base).await;
    let key = demo.key(&sid);
    let token = demo.field(&key, "csrf_token").await.expect("a CSRF token");
    assert!(page.contains(&token), "the forms carry the session's token");

    // Without the token, with a wrong one, or from another site: refused, nothing changes.
    for (body, origin) in [
        ("csrf=".to_owned(), base),
        ("csrf=not-the-token".to_owned(), base),
        (format!("csrf={token}"), "http://evil.example"),
    ] {
        let res = post_form(base, "/counter", &sid, origin, &body).await;
        assert_eq!(res.status, 403, "{body} from {origin}: {}", res.body);
    }
    assert_eq!(demo.field(&key, "counter").await.as_deref(), Some("0"));

    // With it, from this site: counted.
    let res = post_form(base, "/counter", &sid, base, &format!("csrf={token}")).await;
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
    let other = res.cookie(COOKIE).expect("login sets the cookie");
    let page = get(base, "/", Some(&other)).await;
    assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!page.body.contains("<script>alert"));
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("script-src 'self'"), "CSP: {csp:?}");

    // The live view reads the hash without loading the session: the TTL only falls,
    // `last_accessed_at` stays, and it never sets a cookie.
    let last = demo.field(&key, "last_accessed_at").await;
    let before = demo.pttl(&key).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..3 {
        let res = get(base, "/live", Some(&sid)).await;
        assert_eq!(res.status, 200, "{}", res.body);
        assert!(res.headers.get("set-cookie").is_none());
        let json: serde_json::Value = serde_json::from_str(&res.body).unwrap();
        assert_eq!(json["state"], "live", "{json}");
        assert_eq!(json["session"]["key"], key.as_str());
        let counter = json["session"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "counter")
            .map(|f| f["value"].clone());
        assert_eq!(counter, Some("1".into()), "{json}");
    }
    let after = demo.pttl(&key).await;
    assert!(
        after <= before - 1000,
        "PTTL went from {before} to {after} ms"
    );
    assert_eq!(demo.field(&key, "last_accessed_at").await, last);
    // Only one well-formed cookie names a session there: no cookie, a malformed one or
    // two of them read nothing.
    for cookie in [
        String::new(),
        format!("{COOKIE}=not-an-id"),
        format!("{COOKIE}={sid}; {COOKIE}={other}"),
    ] {
        let res = request("GET", &format!("{base}/live"), &[("cookie", &cookie)], "").await;
        assert_eq!(res.status, 200);
        assert_eq!(res.body, r#"{"state":"gone"}"#, "with cookie {cookie:?}");
    }

    // The error pages' statuses (their look is the browser test's).
    let html = |res: &process::Reply| {
        assert!(
            res.header("content-type")
                .is_some_and(|t| t.starts_with("text/html")),
            "{res:?}"
        );
        assert!(res.body.contains("/assets/style.css"), "{}", res.body);
    };
    let res = get(base, "/nope", None).await;
    assert_eq!(res.status, 404);
    html(&res);
    let res = get(base, "/login", None).await;
    assert_eq!(res.status, 405);
    assert_eq!(res.header("allow"), Some("POST"));
    html(&res);
    let res = request(
        "POST",
        &format!("{base}/login"),
        &[form, ("origin", base)],
        "username=x&ttl=ten",
    )
    .await;
    assert_eq!(res.status, 422);
    html(&res);
    assert!(!res.body.contains("Failed to deserialize"));
    assert_eq!(res.cookie(COOKIE), None);
    let res = request(
        "POST",
        &format!("{base}/counter"),
        &[("content-type", "text/plain"), ("origin", base)],
        "csrf=x",
    )
    .await;
    assert_eq!(res.status, 400);
    html(&res);
    // A change for a session that has ended: 409, nothing written.
    demo.manager.terminate_all("ferris", None).await.unwrap();
    let res = post_form(base, "/counter", &sid, base, &format!("csrf={token}")).await;
    assert_eq!(res.status, 409, "{}", res.body);
    html(&res);
    assert!(demo.is_over(&key).await);
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
/// profile, so their own cookie jar) log in as the same user: each sees the other appear
/// among "your other sessions" without reloading, the first ends the second (after
/// confirming), and the second's page goes to the login form by itself; then, from a
/// fresh pair, "log out everywhere else" and "log out everywhere". The new forms' CSRF
/// checks and their refusal of other users' sessions are checked over plain HTTP on the
/// way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_in_two_browsers_ends_the_other_session_then_logs_out_everywhere() {
    let (chromium, driver) = browser_tools();
    let demo = Demo::start().await;
    let (a, b) = tokio::join!(
        start_browser_with(&chromium, &driver, "a", 1100),
        start_browser_with(&chromium, &driver, "b", 1100),
    );
    let (browser_a, browser_b) = (a.browser.clone(), b.browser.clone());
    run_scenario(
        &demo,
        vec![a, b],
        two_browsers(&demo, &browser_a, &browser_b),
    )
    .await;
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
        &format!("username={}&ttl={LONG_TTL}", form_value(username)),
    )
    .await;
    assert_eq!(res.status, 303, "{}", res.body);
    res.cookie(COOKIE).expect("login sets the cookie")
}

/// POSTs a form to `path` as the session `sid`, from `origin`.
async fn post_form(base: &str, path: &str, sid: &str, origin: &str, body: &str) -> process::Reply {
    request(
        "POST",
        &format!("{base}{path}"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", origin),
            ("cookie", &format!("{COOKIE}={sid}")),
        ],
        body,
    )
    .await
}

/// Waits until the browser's page is the login form saying that its session is gone,
/// and checks that the stale cookie was cleared.
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

    // A logs in alone: nobody else, so no "log out everywhere else".
    log_in(a, base, user, LONG_TTL).await;
    find(a, "#no-other-sessions").await;
    wait_hidden(a, "#end-others").await;
    find_shown(a, "#end-all").await;

    // B logs in as the same user: A's page lists B without a reload, and offers "log out
    // everywhere else" now.
    log_in(b, base, user, LONG_TTL).await;
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

    let row_b = other_row(&handle_b);
    find(a, &row_b).await;
    wait_text(a, "#other-count", |t| t == "(1)").await;
    wait_hidden(a, "#no-other-sessions").await;
    find_shown(a, "#end-others").await;
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
    // B counts: A sees B's counter change, still without a reload.
    click(b, "#increment").await;
    wait_text(a, &format!("{row_b} .counter"), |t| t == "1").await;
    find(b, &other_row(&handle_a)).await;

    // A asks to end B's session, and thinks better of it: nothing happens.
    click(a, &format!("{row_b} button.end-session")).await;
    answer_confirmation(a, &handle_b.as_str()[..12], false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(demo.is_live(&key_b).await, "B ended without confirmation");
    find(a, &row_b).await;

    // A ends B's session, confirmed: B's session is over, A's stays, the index holds A.
    click(a, &format!("{row_b} button.end-session")).await;
    answer_confirmation(a, "End session", true).await;
    wait_text(a, "#notice", |t| {
        t.contains("ended") && t.contains(&handle_b.as_str()[..12])
    })
    .await;
    find_shown(a, "#no-other-sessions").await;
    wait_text(a, "#other-count", |t| t == "(0)").await;
    wait_hidden(a, "#end-others").await;
    assert!(
        demo.is_over(&key_b).await,
        "B's session is over once A ended it"
    );
    assert!(demo.is_live(&key_a).await, "A's own session stays");
    assert_eq!(demo.sessions_of(user).await, vec![handle_a.clone()]);

    // B's page notices by itself (no click): the login form, saying the session is gone.
    // Its request did not bring the session back.
    lands_on_login_form_with_session_gone(b, "B").await;
    assert!(
        demo.is_over(&key_b).await,
        "B's request brought its session back"
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
    assert_eq!(
        demo.field(&key_c, "flash").await.as_deref(),
        Some("not-ended"),
        "the notice for the next page waits in the session"
    );
    for key in [&key_a, &key_c, &key_d] {
        assert!(demo.is_live(key).await, "a refused POST ended a session");
    }

    // A fresh pair: A logs out and in again, B logs in again. A sees B and C.
    click(a, "#logout").await;
    find(a, "#login-form").await;
    assert!(
        demo.is_over(&key_a).await,
        "A's session is over after logout"
    );
    log_in(a, base, user, LONG_TTL).await;
    log_in(b, base, user, LONG_TTL).await;
    let sid_a = sid(a).await.expect("browser A holds a session cookie");
    let sid_b = sid(b).await.expect("browser B holds a session cookie");
    let (key_a, key_b) = (demo.key(&sid_a), demo.key(&sid_b));
    let (handle_b, handle_c) = (demo.handle(&sid_b), demo.handle(&sid_c));
    wait_text(a, "#other-count", |t| t == "(2)").await;
    find(a, &other_row(&handle_b)).await;
    find(a, &other_row(&handle_c)).await;
    let png = find(a, "#other-sessions").await.screenshot().await.unwrap();
    std::fs::write(scratch_dir("demo").join("other-sessions.png"), png).unwrap();

    // B logs out everywhere else (no confirmation asked: B stays): A and C end, B stays,
    // D is untouched. A's page goes to the login form by itself.
    wait_text(b, "#other-count", |t| t == "(2)").await;
    click(b, "#end-others").await;
    answer_confirmation(b, "other sessions", true).await;
    wait_text(b, "#notice", |t| t.contains("2 other sessions ended")).await;
    find_shown(b, "#no-other-sessions").await;
    assert!(demo.is_over(&key_a).await, "A's session is over");
    assert!(demo.is_over(&key_c).await, "C's session is over");
    assert!(demo.is_live(&key_b).await, "B's own session stays");
    assert!(demo.is_live(&key_d).await, "another user's session stays");
    assert_eq!(demo.sessions_of(user).await, vec![handle_b.clone()]);
    lands_on_login_form_with_session_gone(a, "A").await;

    // A logs in once more; B logs out everywhere, itself included, after confirming: both
    // sessions end, B is back at the login form, and the user has no session left. D is
    // untouched.
    log_in(a, base, user, LONG_TTL).await;
    let sid_a = sid(a).await.expect("browser A holds a session cookie");
    let key_a = demo.key(&sid_a);
    find(b, &other_row(&demo.handle(&sid_a))).await;
    click(b, "#end-all").await;
    answer_confirmation(b, "this one included", false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        demo.is_live(&key_b).await,
        "logged out without confirmation"
    );
    click(b, "#end-all").await;
    answer_confirmation(b, "this one included", true).await;
    wait_text(b, "#notice", |t| {
        t.contains("Logged out everywhere: 2 sessions ended")
    })
    .await;
    find(b, "#login-form").await;
    assert_eq!(sid(b).await, None, "B's cookie is cleared");
    assert!(demo.is_over(&key_a).await, "A's session is over");
    assert!(demo.is_over(&key_b).await, "B's session is over");
    assert!(demo.sessions_of(user).await.is_empty());
    assert_eq!(demo.sessions_of(other_user).await, vec![handle_d]);
    lands_on_login_form_with_session_gone(a, "A").await;

    // Nothing in Redis is a session of the user any more; D's session is still there.
    let keys = demo.keys().await;
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
