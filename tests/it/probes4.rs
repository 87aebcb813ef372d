//! Probes, fourth round: the lean scripts' timestamps (other programs' stamps, clocks
//! ahead, offsets, fractions), the touch interval against a session's own idle TTL, the
//! shared-cache rules for the session cookie (quoted strings with escapes, targeted CDN
//! headers), lazy mode with a body that reads its session while it streams, and a
//! rotation whose request is cancelled half-way (a client that goes away).
//!
//! Every probe drives real requests through the layer against a `redis-server` of its
//! own. A probe that shows a broken promise is `#[ignore]`d with what it shows; run it
//! with `--ignored`.

use crate::support::proxy::{holding_proxy, script_trigger};
use std::{
    collections::HashMap,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Body,
    extract::{Path, Request},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use bytes::Bytes;
use fred::prelude::*;
use http::{HeaderName, HeaderValue, StatusCode};
use tokio::sync::Notify;
use tower_redis_session::{RedisSessionLayerBuilder, Session, SessionError, SessionId};

use crate::support::{self, hardening, RedisServer};

// ---------------------------------------------------------------------------------------
// The app

/// An app of this file's own: a prefix of its own, the cookie `sid`.
struct App {
    router: Router,
    client: Client,
    prefix: String,
    manager: tower_redis_session::SessionManager,
}

impl App {
    async fn new(
        redis: &RedisServer,
        configure: impl FnOnce(RedisSessionLayerBuilder) -> RedisSessionLayerBuilder,
    ) -> Self {
        Self::on(redis.client().await, support::fresh_prefix(), configure).await
    }

    async fn on(
        client: Client,
        prefix: String,
        configure: impl FnOnce(RedisSessionLayerBuilder) -> RedisSessionLayerBuilder,
    ) -> Self {
        let layer = configure(support::layer(client.clone()).key_prefix(&prefix))
            .build()
            .unwrap();
        layer.load_scripts().await.unwrap();
        let manager = layer.manager();
        let router = Router::new()
            .route("/start/{ttl}", post(start))
            .route("/read", get(read))
            .route("/set/{value}", post(set))
            .route("/rotate", post(rotate))
            .route("/login/{user}", post(login))
            .route("/stream", get(stream))
            .route("/cc/{n}", post(with_cache_headers))
            .layer(layer);
        Self {
            router,
            client,
            prefix,
            manager,
        }
    }

    async fn send(&self, method: &str, path: &str, sid: Option<&str>) -> hardening::Res {
        hardening::send(&self.router, method, path, sid).await
    }

    fn key(&self, id: &str) -> String {
        hardening::key(&self.prefix, id)
    }

    /// Plants a session as another program would write it; returns its ID.
    async fn plant(&self, fields: &[(&str, String)], ttl_ms: i64) -> String {
        let id = SessionId::generate();
        let key = self.key(id.as_str());
        let values: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let _: () = self.client.hset(&key, values).await.unwrap();
        let _: () = self.client.pexpire(&key, ttl_ms, None).await.unwrap();
        id.as_str().to_owned()
    }
}

/// Starts a session with `username`; with a TTL above 0, gives it that idle TTL.
async fn start(session: Session, Path(ttl): Path<u64>) -> Result<&'static str, SessionError> {
    session.insert("username", "ferris")?;
    if ttl > 0 {
        session.set_ttl(Duration::from_secs(ttl))?;
    }
    Ok("ok")
}

async fn read(session: Session) -> String {
    session.get("username").unwrap_or_default()
}

async fn set(session: Session, Path(value): Path<String>) -> Result<&'static str, SessionError> {
    session.insert("note", value)?;
    Ok("ok")
}

async fn rotate(session: Session) -> &'static str {
    session.rotate_id();
    "ok"
}

async fn login(session: Session, Path(user): Path<String>) -> Result<&'static str, SessionError> {
    session.set_user_id(user)?;
    Ok("ok")
}

/// A page whose body reads the session while it streams (a server-sent-events or
/// templating pattern), from the handle in the request extensions.
async fn stream(req: Request) -> Response {
    let session = req
        .extensions()
        .get::<Session>()
        .cloned()
        .expect("behind the layer");
    Body::new(ReadsSessionWhileStreaming(Some(session))).into_response()
}

/// A body whose one frame is the session's `username`, read when the body is polled.
struct ReadsSessionWhileStreaming(Option<Session>);

impl http_body::Body for ReadsSessionWhileStreaming {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.take().map(|session| {
            let name = session.get("username").unwrap_or_else(|| "<none>".into());
            Ok(http_body::Frame::data(Bytes::from(format!("user={name}"))))
        }))
    }
}

/// Response header sets, by case number.
const CACHE_CASES: &[&[(&str, &str)]] = &[
    // 0: a quoted string with an escaped quote (RFC 9110 §5.6.4 quoted-pair): the
    // directives are `public`, `max-age=600` and `x-note` with the string
    // `a", private, b`: nothing keeps the response out of shared caches.
    &[(
        "cache-control",
        "public, max-age=600, x-note=\"a\\\", private, b\"",
    )],
    // 1: the same with `no-store` inside the string.
    &[(
        "cache-control",
        "public, max-age=600, x-note=\"a\\\", no-store, b\"",
    )],
    // 2: `Surrogate-Control` (Edge Architecture 1.0; Fastly, Akamai) governs the CDN in
    // place of `Cache-Control`, which the CDN ignores.
    &[
        ("cache-control", "private"),
        ("surrogate-control", "max-age=600"),
    ],
    // 3: a targeted field for one CDN (RFC 9213 §2: `Cloudflare-CDN-Cache-Control`
    // is obeyed by that CDN in place of `CDN-Cache-Control` and `Cache-Control`).
    &[
        ("cache-control", "private"),
        ("cloudflare-cdn-cache-control", "max-age=600"),
    ],
];

/// Starts a session (a write with no cookie: a `Set-Cookie` for a new ID) on a page
/// with the headers of case `n`.
async fn with_cache_headers(
    session: Session,
    Path(n): Path<usize>,
) -> Result<Response, SessionError> {
    session.insert("username", "ferris")?;
    let mut res = "ok".into_response();
    for (name, value) in CACHE_CASES[n] {
        res.headers_mut().append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    Ok(res)
}

// ---------------------------------------------------------------------------------------
// Helpers

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Unix ms as RFC 3339 in the local time of `offset_min` (written `Z` when `zulu`), with
/// `frac` as the digits after the seconds (`""` for none; padded with the ms first).
fn stamp(ms: i64, offset_min: i64, frac_digits: usize, zulu: bool) -> String {
    let local = ms + offset_min * 60_000;
    // `date` writes the calendar fields; the fraction and the offset are added here.
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{}", local.div_euclid(1000))])
        .arg("+%Y-%m-%dT%H:%M:%S")
        .output()
        .expect("run date");
    let mut s = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    if frac_digits > 0 {
        let digits = format!("{:03}{}", local.rem_euclid(1000), "9".repeat(frac_digits));
        s.push('.');
        s.push_str(&digits[..frac_digits]);
    }
    if zulu {
        s.push('Z');
    } else {
        let sign = if offset_min < 0 { '-' } else { '+' };
        let a = offset_min.abs();
        s.push_str(&format!("{sign}{:02}:{:02}", a / 60, a % 60));
    }
    s
}

/// The directives of `Cache-Control`-like values as RFC 9110 reads them (tokens, and
/// quoted strings with `\`-escapes), lower-cased: `(name, argument)`.
fn directives<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for value in values {
        let text = value.to_str().unwrap();
        let (mut cur, mut quoted, mut escaped) = (String::new(), false, false);
        let mut items = Vec::new();
        for c in text.chars() {
            if escaped {
                escaped = false;
                cur.push(c);
                continue;
            }
            match c {
                '\\' if quoted => {
                    escaped = true;
                    cur.push(c);
                }
                '"' => {
                    quoted = !quoted;
                    cur.push(c);
                }
                ',' if !quoted => items.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        items.push(cur);
        for item in items {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            out.push(match item.split_once('=') {
                Some((n, a)) => (n.trim().to_ascii_lowercase(), Some(a.trim().to_owned())),
                None => (item.to_ascii_lowercase(), None),
            });
        }
    }
    out
}

/// Whether some shared cache may store this 200 response, and which header lets it: a
/// CDN that obeys a targeted header (`Surrogate-Control`, `*-CDN-Cache-Control`,
/// `CDN-Cache-Control`) reads that one alone; any other shared cache reads
/// `Cache-Control`.
fn storable_by(headers: &http::HeaderMap) -> Vec<String> {
    let keeps_out = |d: &[(String, Option<String>)]| {
        d.iter()
            .any(|(n, a)| a.is_none() && (n == "private" || n == "no-store"))
    };
    let mut out = Vec::new();
    for name in headers.keys() {
        let n = name.as_str();
        let targeted = n == "surrogate-control" || n.ends_with("cdn-cache-control");
        if targeted && !keeps_out(&directives(headers.get_all(name).iter())) {
            out.push(n.to_owned());
        }
    }
    if !keeps_out(&directives(headers.get_all("cache-control").iter())) {
        out.push("cache-control".to_owned());
    }
    out
}

// ---------------------------------------------------------------------------------------
// Sliding expiry and the touch interval

/// Held: every request that loads the session pushes the TTL to the session's idle
/// TTL; the touch interval only skips a refresh for a session whose idle TTL is longer
/// than the interval. A session given a shorter one of its own (`Session::set_ttl`,
/// which is not checked against the interval) is refreshed on every load, so it never
/// dies in use.
///
/// Steps: a layer with `touch_interval(5 s)` (idle TTL 30 min); a request starts a
/// session and calls `set_ttl(2 s)`; the same browser then reads every 400 ms for 2.4 s,
/// past the 2 s TTL, and every read gets the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_in_use_never_expires_when_its_idle_ttl_is_below_the_touch_interval() {
    let redis = RedisServer::start();
    let app = App::new(&redis, |b| b.touch_interval(Duration::from_secs(5))).await;
    let id = app
        .send("POST", "/start/2", None)
        .await
        .new_id()
        .expect("a new session");
    let mut lost = Vec::new();
    for i in 1..=6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let res = app.send("GET", "/read", Some(&id)).await;
        if res.body != "ferris" {
            lost.push(format!("read {i} at {} ms: {:?}", i * 400, res.body));
        }
    }
    assert!(
        lost.is_empty(),
        "an active session (a read every 400 ms, idle TTL 2 s) was lost: {lost:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Timestamps written by other programs

/// Held: an absolute lifetime bounds every session however active, and a session
/// without `absolute_expires_at` ends at `created_at` + the lifetime; a `created_at`
/// another program wrote ahead of Redis's clock (a clock ahead, or local time written
/// with a `Z`) stretches that by at most 5 minutes. Further ahead, the session is not
/// usable at all: never served, and its cookie can log in afresh.
///
/// Steps: a layer with `absolute_lifetime(1 s)`. Sessions with no `absolute_expires_at`
/// are planted with `created_at` 0.5 s ahead (tolerated), 10 hours ahead and in the year
/// 9999. The first is served at once and gone 1.8 s later; the other two are never
/// served; a login with the year-9999 cookie succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_at_ahead_of_the_clock_never_stretches_the_absolute_lifetime() {
    let redis = RedisServer::start();
    let app = App::new(&redis, |b| b.absolute_lifetime(Duration::from_secs(1))).await;
    let now = now_ms();
    let planted = |created: String| {
        vec![
            ("username", "ferris".to_owned()),
            ("session_ttl", "60".to_owned()),
            ("created_at", created),
            ("last_accessed_at", stamp(now, 0, 0, false)),
        ]
    };
    let near = app
        .plant(&planted(stamp(now + 500, 0, 3, true)), 60_000)
        .await;
    let ahead = app
        .plant(&planted(stamp(now + 10 * 3_600_000, 0, 0, true)), 60_000)
        .await;
    let far = app
        .plant(&planted("9999-12-31T23:59:59+00:00".to_owned()), 60_000)
        .await;
    let mut problems = Vec::new();
    let first = app.send("GET", "/read", Some(&near)).await;
    assert_eq!(first.body, "ferris", "0.5 s ahead: tolerated, served");
    for (what, id) in [("10 h ahead", &ahead), ("year 9999", &far)] {
        let res = app.send("GET", "/read", Some(id)).await;
        if res.body == "ferris" {
            problems.push(format!("{what}: served"));
        }
    }
    tokio::time::sleep(Duration::from_millis(1800)).await;
    for (what, id) in [
        ("0.5 s ahead", &near),
        ("10 h ahead", &ahead),
        ("year 9999", &far),
    ] {
        let later = app.send("GET", "/read", Some(id)).await;
        if later.body == "ferris" {
            problems.push(format!(
                "{what}: still served 1.8 s after it was planted, lifetime 1 s (key TTL {} ms)",
                app.client.pttl::<i64, _>(app.key(id)).await.unwrap()
            ));
        }
    }
    let login = app.send("POST", "/login/ada", Some(&far)).await;
    if login.status != StatusCode::OK {
        problems.push(format!(
            "year 9999: login answered {} {:?}",
            login.status, login.body
        ));
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Held: a deadline another program wrote in any offset, with a fraction of any length
/// up to nine digits (`+05:30`, `-08:00`, `Z`), or the stamps of a leap second, is read
/// to the millisecond by the scripts: the session is served before it and is gone after
/// it, the key's TTL never reaches past it, and no script fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_written_in_any_offset_and_fraction_ends_the_session_on_time() {
    let redis = RedisServer::start();
    let app = App::new(&redis, |b| b.absolute_lifetime(Duration::from_secs(3600))).await;
    let now = now_ms();
    let deadline = now + 1500;
    let mut ids = Vec::new();
    for (offset, frac, zulu) in [
        (330, 7, false),
        (-480, 9, false),
        (0, 1, true),
        (0, 0, false),
    ] {
        let fields = vec![
            ("username", "ferris".to_owned()),
            ("session_ttl", "60".to_owned()),
            ("created_at", stamp(now - 1000, offset, frac, zulu)),
            ("last_accessed_at", "2016-12-31T23:59:60Z".to_owned()),
            ("absolute_expires_at", stamp(deadline, offset, frac, zulu)),
        ];
        let id = app.plant(&fields, 60_000).await;
        ids.push((stamp(deadline, offset, frac, zulu), id));
    }
    for (text, id) in &ids {
        let res = app.send("GET", "/read", Some(id)).await;
        assert_eq!(res.status, StatusCode::OK, "{text}: {}", res.body);
        assert_eq!(res.body, "ferris", "{text}: served before its deadline");
        let before = now_ms();
        let pttl: i64 = app.client.pttl(app.key(id)).await.unwrap();
        assert!(
            pttl <= deadline - before + 2,
            "{text}: the key's TTL ({pttl} ms) reaches past the deadline"
        );
    }
    tokio::time::sleep(Duration::from_millis(1600)).await;
    for (text, id) in &ids {
        let res = app.send("GET", "/read", Some(id)).await;
        assert_eq!(res.status, StatusCode::OK, "{text}: {}", res.body);
        assert_eq!(res.body, "", "{text}: gone after its deadline");
    }
}

/// Held: timestamps are RFC 3339 with or without fractional seconds, and RFC 3339's
/// `time-secfrac` is `"." 1*DIGIT`, of any length; §5.6 allows a lower-case `t` and `z`.
/// A session another program wrote with a 10- or 18-digit fraction, or a lower-case
/// `t` or `z`, in its `created_at` is served, not logged out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_rfc3339_stamp_of_another_program_never_loses_the_session() {
    let redis = RedisServer::start();
    let app = App::new(&redis, |b| b).await;
    let now = now_ms();
    let mut lost = Vec::new();
    let base = stamp(now - 1000, 0, 0, true);
    let cases = [
        format!("{}.1234567891Z", &base[..19]),
        format!("{}.123456789012345678Z", &base[..19]),
        base.replace('T', "t"),
        base.replace('Z', "z"),
    ];
    for created in cases {
        let fields = vec![
            ("username", "ferris".to_owned()),
            ("session_ttl", "60".to_owned()),
            ("created_at", created.clone()),
            ("last_accessed_at", stamp(now, 0, 0, false)),
        ];
        let id = app.plant(&fields, 60_000).await;
        let res = app.send("GET", "/read", Some(&id)).await;
        if res.body != "ferris" {
            lost.push(format!(
                "created_at {created:?}: {} {:?}, cookie cleared: {}",
                res.status,
                res.body,
                res.clears_cookie()
            ));
        }
    }
    assert!(lost.is_empty(), "{lost:#?}");
}

// ---------------------------------------------------------------------------------------
// Shared caches

/// Sends a first write (a new session cookie) on pages with the headers of `cases`;
/// returns every response that carries the cookie and that a shared cache may store.
async fn cookie_on_storable(cases: std::ops::Range<usize>) -> Vec<String> {
    let redis = RedisServer::start();
    let app = App::new(&redis, |b| b).await;
    let mut problems = Vec::new();
    for n in cases {
        let res = app.send("POST", &format!("/cc/{n}"), None).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.body);
        if res.new_id().is_none() {
            continue;
        }
        let storable = storable_by(&res.headers);
        if !storable.is_empty() {
            let sent: Vec<String> = res
                .headers
                .iter()
                .filter(|(name, _)| name.as_str().ends_with("control"))
                .map(|(name, v)| format!("{name}: {}", v.to_str().unwrap()))
                .collect();
            problems.push(format!(
                "case {n}: the session cookie rides {sent:?}, storable per {storable:?}"
            ));
        }
    }
    problems
}

/// Promise: no session cookie reaches a shared cache; "quoted lists" are read right.
///
/// Steps: a handler starts a session on a page with
/// `Cache-Control: public, max-age=600, x-note="a\", private, b"`. RFC 9110 §5.6.4: `\"`
/// inside a quoted string is an escaped quote, so the string runs to the last `"` and
/// the directives are `public`, `max-age=600`, `x-note`: storable by any shared cache.
/// A layer that took `\"` for the string's end would find a bare `private` (or
/// `no-store`), leave the header as it is, and send the new session's `Set-Cookie` on a
/// response a shared cache may store and hand to others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escaped_quote_in_cache_control_never_lets_the_cookie_onto_a_storable_page() {
    let problems = cookie_on_storable(0..2).await;
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Promise: no session cookie reaches a shared cache, `CDN-Cache-Control` included.
///
/// Steps: a handler starts a session on a page with `Cache-Control: private` and
/// `Surrogate-Control: max-age=600` (obeyed by Fastly and Akamai in place of
/// `Cache-Control`), or a targeted `Cloudflare-CDN-Cache-Control: max-age=600`
/// (RFC 9213 §2). A layer that read only `Cache-Control` and `CDN-Cache-Control` would
/// see `private` and send the cookie with both headers as they are; whether the CDN then
/// stored it would depend on its own Set-Cookie rule (Fastly and Cloudflare refuse by
/// default; a configuration that strips or ignores it does not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_a_cdn_may_store_by_a_targeted_header_never_carries_the_cookie() {
    let problems = cookie_on_storable(2..4).await;
    assert!(problems.is_empty(), "{problems:#?}");
}

// ---------------------------------------------------------------------------------------
// Lazy mode

/// Promise (lazy mode): "a handler that forgot the load can never answer as if a live
/// session were empty" — a session used before its load turns the response into a 500.
///
/// Steps: a lazy layer; a live session with `username = ferris`; a handler that takes
/// the session from the request extensions (no extractor, no `load`) and returns a body
/// that reads `username` as it streams (server-sent events, a streamed template). The
/// layer looks at the session when the handler returns, before the body is polled, sees
/// no use, and sends the 200; the body then reads the unloaded session as empty:
/// `user=<none>`. The default mode serves `user=ferris` for the same handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_session_read_by_a_streaming_body_never_reads_as_empty() {
    let redis = RedisServer::start();
    let eager = App::new(&redis, |b| b).await;
    let id = eager.send("POST", "/start/0", None).await.new_id().unwrap();
    let control = eager.send("GET", "/stream", Some(&id)).await;
    assert_eq!(control.body, "user=ferris", "the default mode");
    let lazy = App::on(eager.client.clone(), eager.prefix.clone(), |b| {
        b.lazy_load(true)
    })
    .await;
    let res = lazy.send("GET", "/stream", Some(&id)).await;
    assert!(
        res.status != StatusCode::OK || res.body == "user=ferris",
        "lazy mode answered {} {:?} for a live session",
        res.status,
        res.body
    );
}

// ---------------------------------------------------------------------------------------
// A rotation cancelled half-way

/// Promise: a rotation whose client goes away still runs to its end, so the old key is
/// never left marked (refusing every save until the mark lapses).
///
/// Steps: a layer (command timeout 1 s) whose connection to Redis goes through a proxy
/// that holds the `create` script. A request rotates a live session; its write-back runs
/// `begin_rotate` (the old key is marked) and sends `create`, which the proxy holds. The
/// client goes away (hyper drops the response future; here the task is aborted), then
/// the proxy lets `create` through: the rotation finishes on its own, and the old key
/// becomes a `rotated` marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_whose_client_went_away_still_runs_to_its_end() {
    let redis = RedisServer::start();
    let direct = App::new(&redis, |b| b.command_timeout(Duration::from_secs(1))).await;
    let id = direct
        .send("POST", "/start/0", None)
        .await
        .new_id()
        .unwrap();
    let trigger = script_trigger("create");
    let release = Arc::new(Notify::new());
    let (port, seen) = holding_proxy(redis.port(), trigger, 1, Some(Arc::clone(&release))).await;
    let proxied = App::on(
        support::connect_client(&format!("redis://127.0.0.1:{port}")).await,
        direct.prefix.clone(),
        |b| b.command_timeout(Duration::from_secs(1)),
    )
    .await;
    let router = proxied.router.clone();
    let sid = id.clone();
    let rotation =
        tokio::spawn(async move { hardening::send(&router, "POST", "/rotate", Some(&sid)).await });
    tokio::time::timeout(Duration::from_secs(5), seen.notified())
        .await
        .expect("the rotation reached its create step");
    rotation.abort();
    let _ = rotation.await;
    // The client is gone; Redis answers again (within the command timeout).
    release.notify_one();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (ended, rotating): (Option<String>, Option<String>) = direct
            .client
            .hmget(direct.key(&id), vec!["ended", "rotating"])
            .await
            .unwrap();
        if ended.as_deref() == Some("rotated") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rotation did not finish after its client went away (rotating mark: {rotating:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Finished, not abandoned: the session lives on under a new ID, with its data.
    let mut live = 0;
    for key in support::keys_matching(&direct.client, &format!("{}*", direct.prefix)).await {
        let is_live: bool = direct.client.hexists(&key, "session_ttl").await.unwrap();
        live += usize::from(is_live);
    }
    assert_eq!(live, 1, "one live session after the rotation");
}

/// Held: after a rotation, a late request with the old ID (a read, a write) never sends
/// a `Set-Cookie` (not even a persistent cookie's refresh), never brings the old ID back,
/// and a write is a 409 while the new session keeps its data; in lazy mode as in the
/// default mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_requests_with_a_rotated_id_change_nothing_in_either_load_mode() {
    let redis = RedisServer::start();
    for lazy in [false, true] {
        let app = App::new(&redis, |b| b.lazy_load(lazy).persistent_cookie(true)).await;
        let old = app.send("POST", "/start/0", None).await.new_id().unwrap();
        let new = app
            .send("POST", "/rotate", Some(&old))
            .await
            .new_id()
            .expect("rotation sets the new ID");
        for (method, path, status) in [
            ("GET", "/read", StatusCode::OK),
            ("POST", "/set/late", StatusCode::CONFLICT),
        ] {
            let res = app.send(method, path, Some(&old)).await;
            assert_eq!(
                res.status, status,
                "lazy={lazy} {method} {path}: {}",
                res.body
            );
            let cookies: Vec<_> = res
                .headers
                .get_all(http::header::SET_COOKIE)
                .iter()
                .collect();
            assert!(
                cookies.is_empty(),
                "lazy={lazy} {method} {path}: {cookies:?}"
            );
            if method == "GET" {
                assert_eq!(res.body, "", "lazy={lazy}: the old ID grants nothing");
            }
        }
        let fields: HashMap<String, String> = app.client.hgetall(app.key(&new)).await.unwrap();
        assert_eq!(fields.get("username").map(String::as_str), Some("ferris"));
        assert!(!fields.contains_key("note"), "lazy={lazy}: {fields:?}");
        assert_eq!(app.send("GET", "/read", Some(&new)).await.body, "ferris");
    }
}

// ---------------------------------------------------------------------------------------
// Log out everywhere but here

/// The key of `user`'s index under `prefix`.
fn index_key(prefix: &str, user: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(user));
    format!("{prefix}user:{digest}")
}

/// Promise: "log out everywhere but here" (`terminate_all(user, Some(here))`) never ends
/// the session it spares; when the spared one rotates meanwhile, the answer is
/// `ErrorKind::Conflict`, never a success that ended it.
///
/// Steps: user `ada` has sessions A and K (K is "here"). A rotated a moment ago (A0 ->
/// A1), and the termination's first read of the index still lists A0 (re-added here by
/// hand, as a read made just before A's rotation removed it). The manager's Redis
/// connection goes through a proxy that holds its second `ZRANGE` (the re-read of the
/// index). `terminate_all("ada", Some(K))` ends A0 (a `rotated` marker: it must follow
/// the rotation) and A1, checks that K has not rotated away (it has not, yet), and
/// re-reads the index, held. Meanwhile K rotates to K2 (a request from this device, a
/// re-login or a privilege change). The re-read is released: it lists K2, which is not
/// the spared handle, so it is ended, and `terminate_all` returns `Ok`: the device that
/// asked to keep its session is logged out, and no conflict is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_out_everywhere_but_here_never_ends_here_when_it_rotates_during_the_reread() {
    let redis = RedisServer::start();
    let app = App::new(&redis, |b| b).await;
    let login = |sid: String| {
        let app = &app;
        async move {
            let res = app.send("POST", "/login/ada", Some(&sid)).await;
            assert_eq!(res.status, StatusCode::OK, "{}", res.body);
            res.new_id().expect("login rotates")
        }
    };
    let a0 = login(app.send("POST", "/start/0", None).await.new_id().unwrap()).await;
    let k = login(app.send("POST", "/start/0", None).await.new_id().unwrap()).await;
    let a1 = app
        .send("POST", "/rotate", Some(&a0))
        .await
        .new_id()
        .unwrap();
    let a0_member = SessionId::parse(&a0).unwrap().digest().to_owned();
    let _: i64 = app
        .client
        .zadd(
            index_key(&app.prefix, "ada"),
            None,
            None,
            false,
            false,
            (1.0, a0_member),
        )
        .await
        .unwrap();

    let release = Arc::new(Notify::new());
    let (port, seen) = holding_proxy(
        redis.port(),
        b"ZRANGE".to_vec(),
        2,
        Some(Arc::clone(&release)),
    )
    .await;
    let manager = app
        .manager
        .with_redis(support::connect_client(&format!("redis://127.0.0.1:{port}")).await);
    let here = manager.handle(&SessionId::parse(&k).unwrap());
    let terminate = tokio::spawn(async move { manager.terminate_all("ada", Some(&here)).await });
    tokio::time::timeout(Duration::from_secs(5), seen.notified())
        .await
        .expect("the termination re-reads the index");
    let k2 = app
        .send("POST", "/rotate", Some(&k))
        .await
        .new_id()
        .expect("here rotates");
    release.notify_one();
    let outcome = terminate.await.unwrap();
    let a1_live = app.send("GET", "/read", Some(&a1)).await.body == "ferris";
    let k2_live = app.send("GET", "/read", Some(&k2)).await.body == "ferris";
    assert!(!a1_live, "the other session was ended");
    assert!(
        k2_live
            || outcome
                .as_ref()
                .is_err_and(|e| e.kind() == tower_redis_session::ErrorKind::Conflict),
        "terminate_all(ada, here) answered {outcome:?} and ended here (now K2): live={k2_live}"
    );
}
