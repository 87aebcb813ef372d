//! The interactive demo: start a session with a short TTL, watch it in Redis, rotate its
//! ID, see and end your other sessions, log out (here or everywhere), or let it expire.
//!
//! Run with
//!
//! ```not_rust
//! scripts/demo
//! ```
//!
//! (which starts a `redis-server` if none answers), or, with Redis already running,
//!
//! ```not_rust
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example demo
//! ```
//!
//! then open <http://127.0.0.1:8080>. Settings come from the environment: `REDIS_URL`
//! (default `redis://127.0.0.1:6379`), `BIND` (default `127.0.0.1`) and `PORT` (default
//! `8080`).
//!
//! One page, rendered on the server, with no front-end build: the login form, or the
//! session as Redis stores it (every field of the hash, internal ones marked, and the
//! key's PTTL with a live countdown) and buttons to change it. Every state-changing
//! request is a POST form, checked twice against cross-site requests: the `Origin`
//! header must be this server's, and (for a live session) the form must carry the
//! session's CSRF token, a random value stored in the session itself.
//!
//! Login ties the session to its username ([`Session::set_user_id`]), so the page can
//! list the user's other live sessions through the layer's [`SessionManager`] and end
//! one of them, all the others, or all of them.

use std::{
    collections::HashMap,
    net::IpAddr,
    process::ExitCode,
    time::{Duration, SystemTime},
};

use axum::{
    extract::{Query, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
    Form, Router,
};
use serde::Deserialize;
use tower_redis_session::{
    fred::prelude::*, Redis, RedisSessionLayer, Session, SessionError, SessionHandle, SessionId,
    SessionInfo, SessionManager, RESERVED_FIELDS,
};

/// The Redis key prefix of the demo's sessions (the crate's default, set explicitly
/// because the page reads the keys itself).
const KEY_PREFIX: &str = "session:";

/// The idle TTLs offered on the page, in seconds, with their labels.
const TTL_CHOICES: &[(u64, &str)] = &[
    (3, "3 s"),
    (15, "15 s"),
    (60, "1 min"),
    (300, "5 min"),
    (1800, "30 min"),
];

/// The TTL selected on the login form.
const DEFAULT_TTL: u64 = 15;

/// The longest username accepted, in characters.
const MAX_USERNAME: usize = 32;

/// The session field holding the username given at login.
const USERNAME: &str = "username";
/// The session field holding the counter.
const COUNTER: &str = "counter";
/// The session field holding the CSRF token that the forms must send back.
const CSRF_TOKEN: &str = "csrf_token";

/// What every handler shares: the Redis handle the layer uses (to show the hash as it is
/// stored), the layer's session manager (to list and end a user's sessions) and the Redis
/// URL to show on the page.
#[derive(Clone)]
struct App {
    /// The layer's fred handle.
    redis: Redis,
    /// The layer's session manager.
    manager: SessionManager,
    /// `REDIS_URL` without its password.
    redis_label: String,
}

/// Entry point: reads the settings, connects to Redis (one clear line and exit code 1
/// if it cannot), and serves the demo.
#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_redis_session=debug".into()),
        )
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(line) => {
            eprintln!("demo: {line}");
            ExitCode::FAILURE
        }
    }
}

/// The whole demo; an error is the one line to print before exiting.
async fn run() -> Result<(), String> {
    let url = env_or("REDIS_URL", "redis://127.0.0.1:6379");
    let bind: IpAddr = env_or("BIND", "127.0.0.1")
        .parse()
        .map_err(|e| format!("BIND is not an IP address ({e}); try BIND=127.0.0.1"))?;
    let port: u16 = env_or("PORT", "8080")
        .parse()
        .map_err(|e| format!("PORT is not a port number ({e}); try PORT=8080"))?;
    let redis_label = redact(&url);

    let unreachable = |why: String| {
        format!(
            "cannot reach Redis at {redis_label} ({why}); start one with `redis-server` \
             (or run scripts/demo, which does), or point REDIS_URL at yours"
        )
    };
    let pool = match tokio::time::timeout(
        Duration::from_secs(5),
        tower_redis_session::connect(&url),
    )
    .await
    {
        Ok(Ok(pool)) => pool,
        Ok(Err(e)) => return Err(unreachable(describe(&e))),
        Err(_) => return Err(unreachable("no answer within 5 s".into())),
    };

    // Browsers keep `Secure` cookies from plain-HTTP pages only on loopback hosts
    // (`localhost`, `127.0.0.1`), which they count as secure contexts. Served on any
    // other address over plain HTTP, the cookie must go without `Secure` or the browser
    // would drop it; a real deployment serves HTTPS and keeps the default.
    let secure = bind.is_loopback();
    if !secure {
        println!(
            "demo: serving plain HTTP on {bind}, so the session cookie goes without `Secure`; use HTTPS for anything real"
        );
    }
    let layer = RedisSessionLayer::builder(pool)
        .key_prefix(KEY_PREFIX)
        .idle_ttl(Duration::from_secs(DEFAULT_TTL))
        .secure(secure)
        .build()
        .map_err(|e| format!("bad session settings: {e}"))?;
    layer
        .load_scripts()
        .await
        .map_err(|e| unreachable(e.to_string()))?;

    let app = App {
        redis: layer.redis().clone(),
        manager: layer.manager(),
        redis_label: redis_label.clone(),
    };
    let pages = Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/counter", post(increment))
        .route("/ttl", post(change_ttl))
        .route("/rotate", post(rotate))
        .route("/logout", post(logout))
        .route("/sessions/end", post(end_session))
        .route("/sessions/end-others", post(end_other_sessions))
        .route("/sessions/end-all", post(end_all_sessions))
        .layer(layer)
        .with_state(app);
    // Static files stay outside the session layer: fetching them neither loads the
    // session nor pushes its expiry back.
    let router = pages
        .route("/assets/style.css", get(style))
        .route("/assets/countdown.js", get(script))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .layer(middleware::from_fn(security_headers));

    let addr = std::net::SocketAddr::new(bind, port);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        format!("cannot listen on {addr} ({e}); set PORT (and BIND) to a free address")
    })?;
    println!("demo: listening on http://{addr} (sessions in Redis at {redis_label})");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| format!("server error: {e}"))
}

/// A fred error in a few words: an I/O error's message (fred keeps the error's `Debug`
/// text), or fred's own details.
fn describe(e: &tower_redis_session::fred::error::Error) -> String {
    let details = e.details();
    let message = details
        .split_once("message: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(message, _)| message);
    message.unwrap_or(details).to_lowercase()
}

/// An environment variable, or `default` when it is unset or empty.
fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The URL without its password, to print and show.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------

/// Query parameters of `/`: which notice to show after a redirect.
#[derive(Debug, Default, Deserialize)]
struct Notice {
    /// `login`, `ttl`, `rotated`, `logged-out`, `expired`, `ended`, `not-ended`,
    /// `ended-others` or `ended-all`.
    notice: Option<String>,
    /// The start of a session's handle (see [`short_handle`]): the previous key's for
    /// `rotated` and `logged-out`, the ended session's for `ended`.
    from: Option<String>,
    /// How many sessions were ended, for `ended-others` and `ended-all` (kept as text so
    /// that a garbled value shows no notice rather than an error).
    n: Option<String>,
}

/// `GET /`: the session page, or the login form.
async fn index(
    State(app): State<App>,
    session: Session,
    Query(notice): Query<Notice>,
) -> Result<Response, AppError> {
    let Some(username) = session.get(USERNAME) else {
        let message = if session.cookie_expired() {
            Some(expired_notice())
        } else {
            login_notice(&notice)
        };
        return Ok(login_page(
            &app.redis_label,
            message.as_deref(),
            None,
            StatusCode::OK,
        ));
    };
    let Some(id) = session.id() else {
        return Err(AppError::Internal("a loaded session without an ID"));
    };
    let key = app.manager.redis_key(&id);
    let client = app.redis.client();
    let hash: HashMap<String, String> = client.hgetall(&key).await?;
    let pttl: i64 = client.pttl(&key).await?;
    let others = match session.user_id() {
        Some(user_id) => {
            let this = app.manager.handle(&id);
            let mut sessions = app.manager.list(&user_id).await?;
            sessions.retain(|info| info.handle != this);
            Some((user_id, sessions))
        }
        None => None,
    };
    let others = other_sessions(&session, others.as_ref(), SystemTime::now());
    let body = session_page(
        &session, &username, &id, &key, &hash, pttl, &notice, &others,
    );
    Ok(page(
        "Your session",
        &app.redis_label,
        &body,
        StatusCode::OK,
    ))
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
struct LoginForm {
    /// Shown on the page (escaped) and stored in the session.
    username: String,
    /// The idle TTL in seconds, one of [`TTL_CHOICES`].
    ttl: u64,
}

/// `POST /login`: starts a session (or, if one exists, moves it to a new ID first, as
/// every login must) tied to the username as its user id, with the username, a counter at
/// 0 and a fresh CSRF token.
async fn login(
    State(app): State<App>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, AppError> {
    check_origin(&headers)?;
    let username = form.username.trim();
    let problem = if username.is_empty() {
        Some("Pick a username.")
    } else if username.chars().count() > MAX_USERNAME {
        Some("That username is too long (32 characters at most).")
    } else if username.chars().any(char::is_control) {
        Some("Usernames cannot contain control characters.")
    } else if !valid_ttl(form.ttl) {
        Some("Pick one of the TTLs offered.")
    } else {
        None
    };
    if let Some(problem) = problem {
        return Ok(login_page(
            &app.redis_label,
            None,
            Some((problem, username, form.ttl)),
            StatusCode::UNPROCESSABLE_ENTITY,
        ));
    }
    // A login is a privilege change: never keep the ID the browser had before it.
    if session.is_loaded() {
        session.rotate_id();
    }
    // The user id is what "your other sessions" and "log out everywhere" go by.
    session.set_user_id(username)?;
    session.insert(USERNAME, username)?;
    session.insert(COUNTER, "0")?;
    session.insert(CSRF_TOKEN, SessionId::generate().as_str())?;
    session.set_ttl(Duration::from_secs(form.ttl))?;
    Ok(Redirect::to("/?notice=login").into_response())
}

/// The fields of the forms shown to a live session.
#[derive(Debug, Deserialize)]
struct ActionForm {
    /// The session's CSRF token, from the form's hidden field.
    csrf: String,
    /// The new idle TTL in seconds (`POST /ttl` only).
    ttl: Option<u64>,
    /// The handle of the session to end (`POST /sessions/end` only).
    handle: Option<String>,
}

/// `POST /counter`: adds one to the counter (an atomic `HINCRBY` in Redis).
async fn increment(
    session: Session,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, AppError> {
    check_action(&session, &headers, &form)?;
    session.increment(COUNTER, 1)?;
    Ok(Redirect::to("/").into_response())
}

/// `POST /ttl`: changes the session's idle TTL; the key's TTL in Redis follows at once.
async fn change_ttl(
    session: Session,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, AppError> {
    check_action(&session, &headers, &form)?;
    let ttl = form
        .ttl
        .filter(|&ttl| valid_ttl(ttl))
        .ok_or(AppError::BadRequest("Pick one of the TTLs offered."))?;
    session.set_ttl(Duration::from_secs(ttl))?;
    Ok(Redirect::to("/?notice=ttl").into_response())
}

/// `POST /rotate`: moves the session to a new ID; the data and TTL stay.
async fn rotate(
    State(app): State<App>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, AppError> {
    check_action(&session, &headers, &form)?;
    let from = short_handle_of(&app.manager, &session);
    session.rotate_id();
    Ok(Redirect::to(&format!("/?notice=rotated&from={from}")).into_response())
}

/// `POST /logout`: deletes the session's key and clears the cookie.
async fn logout(
    State(app): State<App>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, AppError> {
    check_action(&session, &headers, &form)?;
    let from = short_handle_of(&app.manager, &session);
    session.destroy();
    Ok(Redirect::to(&format!("/?notice=logged-out&from={from}")).into_response())
}

/// `POST /sessions/end`: ends one of the user's other sessions (its key is deleted, so
/// its next request finds no session). The manager refuses a handle that is not one of
/// this user's sessions.
async fn end_session(
    State(app): State<App>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, AppError> {
    check_action(&session, &headers, &form)?;
    let (user_id, this) = user_of(&app.manager, &session)?;
    let handle = form
        .handle
        .as_deref()
        .and_then(SessionHandle::parse)
        .ok_or(AppError::BadRequest("That is not a session handle."))?;
    if handle == this {
        return Err(AppError::BadRequest(
            "That is this session: use Log out to end it.",
        ));
    }
    let notice = if app.manager.terminate(&user_id, &handle).await? {
        format!("ended&from={}", short_handle(&handle))
    } else {
        "not-ended".to_owned()
    };
    Ok(Redirect::to(&format!("/?notice={notice}")).into_response())
}

/// `POST /sessions/end-others`: "log out everywhere else", ending all of the user's
/// sessions but this one.
async fn end_other_sessions(
    State(app): State<App>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, AppError> {
    check_action(&session, &headers, &form)?;
    let (user_id, this) = user_of(&app.manager, &session)?;
    let ended = app.manager.terminate_all(&user_id, Some(&this)).await?;
    Ok(Redirect::to(&format!("/?notice=ended-others&n={ended}")).into_response())
}

/// `POST /sessions/end-all`: "log out everywhere", ending all of the user's sessions,
/// this one included; then the cookie is cleared and the login form comes back.
async fn end_all_sessions(
    State(app): State<App>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, AppError> {
    check_action(&session, &headers, &form)?;
    let (user_id, _) = user_of(&app.manager, &session)?;
    let ended = app.manager.terminate_all(&user_id, None).await?;
    // This session's key is gone already; destroying it clears the cookie too.
    session.destroy();
    Ok(Redirect::to(&format!("/?notice=ended-all&n={ended}")).into_response())
}

/// The user the session is tied to, and the session's own handle.
fn user_of(
    manager: &SessionManager,
    session: &Session,
) -> Result<(String, SessionHandle), AppError> {
    match (session.user_id(), session.id()) {
        (Some(user_id), Some(id)) => Ok((user_id, manager.handle(&id))),
        _ => Err(AppError::BadRequest(
            "This session is not tied to a user: log out and in again.",
        )),
    }
}

/// `GET /assets/style.css`.
async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("style.css"),
    )
}

/// `GET /assets/countdown.js`.
async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("countdown.js"),
    )
}

/// Headers for every response: a strict Content Security Policy (no inline script or
/// style at all), no framing, no sniffing, and no caching of pages that show a session.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

/// Checks a POST from a live session's page: a live session (else back to the login
/// form, saying why), the `Origin` header, and the session's CSRF token.
fn check_action(session: &Session, headers: &HeaderMap, form: &ActionForm) -> Result<(), AppError> {
    check_origin(headers)?;
    let Some(expected) = session.get(CSRF_TOKEN) else {
        return Err(AppError::NoSession {
            expired: session.cookie_expired(),
        });
    };
    if constant_time_eq(expected.as_bytes(), form.csrf.as_bytes()) {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "The form's CSRF token does not match this session's. Reload the page and try again.",
        ))
    }
}

/// Refuses a request that a browser marks as coming from another site: an `Origin`
/// header naming another origin than this server's (`Host`), or `Sec-Fetch-Site:
/// cross-site`. Browsers send `Origin` with every POST, which covers the login form
/// (no session, so no token yet). Clients that send neither (curl) pass.
fn check_origin(headers: &HeaderMap) -> Result<(), AppError> {
    const REFUSED: &str = "This request came from another site, so it was refused.";
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return Err(AppError::Forbidden(REFUSED));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let same = origin
        .to_str()
        .ok()
        .and_then(|o| {
            o.strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
        })
        .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host));
    if same {
        Ok(())
    } else {
        Err(AppError::Forbidden(REFUSED))
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `true` for the TTLs the page offers.
fn valid_ttl(ttl: u64) -> bool {
    TTL_CHOICES.iter().any(|&(secs, _)| secs == ttl)
}

/// The first characters of a session's handle (the SHA-256 digest of its ID, which its
/// Redis key ends with), enough to tell two sessions apart.
fn short_handle(handle: &SessionHandle) -> String {
    handle.as_str().chars().take(12).collect()
}

/// [`short_handle`] of the request's session (empty without one).
fn short_handle_of(manager: &SessionManager, session: &Session) -> String {
    session
        .id()
        .map(|id| short_handle(&manager.handle(&id)))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// What a handler can fail with, each shown as a page.
#[derive(Debug)]
enum AppError {
    /// A refused session change (see [`SessionError`]'s own response).
    Session(SessionError),
    /// Redis failed while the page read the hash.
    Redis(tower_redis_session::fred::error::Error),
    /// The session manager's store failed.
    Store(tower_redis_session::Error),
    /// A POST for a session that is not there (expired, or never started).
    NoSession {
        /// The request carried a cookie for a session that is gone.
        expired: bool,
    },
    /// A cross-site request or a bad CSRF token.
    Forbidden(&'static str),
    /// A form value the page never offers.
    BadRequest(&'static str),
    /// A bug in this demo.
    Internal(&'static str),
}

impl From<SessionError> for AppError {
    fn from(e: SessionError) -> Self {
        Self::Session(e)
    }
}

impl From<tower_redis_session::Error> for AppError {
    fn from(e: tower_redis_session::Error) -> Self {
        Self::Store(e)
    }
}

impl From<tower_redis_session::fred::error::Error> for AppError {
    fn from(e: tower_redis_session::fred::error::Error) -> Self {
        Self::Redis(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, text) = match self {
            Self::Session(e) => return e.into_response(),
            Self::NoSession { expired: true } => {
                return Redirect::to("/?notice=expired").into_response()
            }
            Self::NoSession { expired: false } => return Redirect::to("/").into_response(),
            Self::Redis(e) => {
                tracing::error!(error = %e, "reading the session hash failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Redis did not answer; try again in a moment.",
                )
            }
            Self::Store(e) => {
                tracing::error!(error = %e, "listing or ending sessions failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Redis did not answer while listing or ending sessions; try again in a moment.",
                )
            }
            Self::Forbidden(text) => (StatusCode::FORBIDDEN, text),
            Self::BadRequest(text) => (StatusCode::BAD_REQUEST, text),
            Self::Internal(text) => {
                tracing::error!(text, "demo bug");
                (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong.")
            }
        };
        let body = format!(
            r#"<section class="card"><h2>{status}</h2><p id="error">{}</p><p><a href="/">Back to the demo</a></p></section>"#,
            escape(text)
        );
        page("Error", "", &body, status)
    }
}

// ---------------------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------------------

/// A whole HTML page around `main`.
fn page(title: &str, redis: &str, main: &str, status: StatusCode) -> Response {
    let html = include_str!("page.html")
        .replace("{{title}}", &escape(title))
        .replace("{{redis}}", &escape(redis))
        .replace("{{main}}", main);
    (status, Html(html)).into_response()
}

/// The login form, with a notice above it, or with a problem in what was submitted.
fn login_page(
    redis_label: &str,
    notice: Option<&str>,
    problem: Option<(&str, &str, u64)>,
    status: StatusCode,
) -> Response {
    let (notice, username, ttl) = match problem {
        Some((problem, username, ttl)) => (
            Some(format!(
                r#"<p class="notice warn" id="notice">{}</p>"#,
                escape(problem)
            )),
            username,
            ttl,
        ),
        None => (notice.map(str::to_owned), "", DEFAULT_TTL),
    };
    let body = format!(
        r#"{notice}
<section class="card">
  <h2>Start a session</h2>
  <form method="post" action="/login" id="login-form">
    <label>Username <input name="username" id="username-input" value="{username}" required maxlength="{MAX_USERNAME}" autocomplete="username" autofocus></label>
    <label>Idle TTL <select name="ttl" id="ttl-select">{options}</select></label>
    <button id="login-button">Start session</button>
  </form>
  <p class="hint">The idle TTL is how long the session lives without a request. Pick 3 s or 15 s and keep your hands off the page to watch Redis expire it.</p>
</section>"#,
        notice = notice.unwrap_or_default(),
        username = escape(username),
        options = ttl_options(ttl),
    );
    page("Start a session", redis_label, &body, status)
}

/// The notice for a session that is gone. The layer only sees that the cookie's session
/// is no longer in Redis, not why.
fn expired_notice() -> String {
    r#"<p class="notice warn" id="notice">Your session expired or was ended: either no request came within its idle TTL, so Redis deleted its key, or it was ended from another of your sessions. Start a new one below.</p>"#.to_owned()
}

/// The notice on the login form after a redirect, if any.
fn login_notice(notice: &Notice) -> Option<String> {
    let from = notice.from.as_deref().filter(|f| is_short_handle(f));
    let text = match notice.notice.as_deref()? {
        "expired" => return Some(expired_notice()),
        "logged-out" => format!(
            "Logged out: the key <code>{KEY_PREFIX}{}…</code> was deleted from Redis and the cookie cleared.",
            from.unwrap_or("")
        ),
        "ended-all" => format!(
            "Logged out everywhere: {} ended, this one included; their keys were deleted from Redis.",
            sessions(notice, false)
        ),
        "login" => "Your browser did not send the session cookie back, so there is no session to show. \
                    Is it blocking cookies for this site? (Served on an address other than localhost over \
                    plain HTTP, start the demo with BIND set to that address so the cookie goes without `Secure`.)"
            .to_owned(),
        _ => return None,
    };
    Some(format!(r#"<p class="notice info" id="notice">{text}</p>"#))
}

/// How many sessions a notice speaks of (`?n=`, digits only), in words: `1 session`,
/// `2 other sessions`.
fn sessions(notice: &Notice, other: bool) -> String {
    let n = notice
        .n
        .as_deref()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    let other = if other { "other " } else { "" };
    let plural = if n == 1 { "" } else { "s" };
    format!("{n} {other}session{plural}")
}

/// `true` for the shape [`short_handle`] makes (URL-safe base64, 12 characters), so a
/// query parameter can be shown as it is.
fn is_short_handle(s: &str) -> bool {
    s.len() == 12
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `<option>`s for the TTL choices, with `selected` on one.
fn ttl_options(selected: u64) -> String {
    TTL_CHOICES
        .iter()
        .map(|&(secs, label)| {
            let sel = if secs == selected { " selected" } else { "" };
            format!(r#"<option value="{secs}"{sel}>{label}</option>"#)
        })
        .collect()
}

/// What each internal field of the hash means, for the table.
fn describe_internal(field: &str) -> &'static str {
    match field {
        "created_at" => "when the session was created, by Redis's clock",
        "last_accessed_at" => "when a request last loaded the session (this page did)",
        "session_ttl" => "idle TTL in seconds: every request pushes the key's expiry back to it",
        "absolute_expires_at" => "hard deadline, however active the session is",
        "user_id" => "ties the session to a user, for listing and ending their sessions",
        _ => "kept by the session layer",
    }
}

/// What each of the demo's own fields is for.
fn describe_user(field: &str) -> &'static str {
    match field {
        USERNAME => "set at login",
        COUNTER => "the counter (incremented in Redis with HINCRBY)",
        CSRF_TOKEN => "random token the forms must send back (CSRF protection)",
        _ => "",
    }
}

/// The page of a live session.
#[allow(clippy::too_many_arguments)]
fn session_page(
    session: &Session,
    username: &str,
    id: &SessionId,
    key: &str,
    hash: &HashMap<String, String>,
    pttl: i64,
    notice: &Notice,
    other_sessions: &str,
) -> String {
    let ttl = session.ttl().as_secs();
    let csrf = escape(&session.get(CSRF_TOKEN).unwrap_or_default());

    let from = notice.from.as_deref().filter(|f| is_short_handle(f));
    let notice = match notice.notice.as_deref() {
        Some("login") => format!("Session started with an idle TTL of {ttl} s."),
        Some("ttl") => format!("Idle TTL changed to {ttl} s: the key's TTL in Redis follows at once."),
        Some("rotated") => format!(
            "Session ID rotated: the data moved from <code>{KEY_PREFIX}{}…</code> to the key below, \
             and the old ID no longer works.",
            from.unwrap_or("")
        ),
        Some("ended") => format!(
            "Session <code>{}…</code> ended: its key was deleted from Redis, so its next request finds no session.",
            from.unwrap_or("")
        ),
        Some("not-ended") => {
            "That session was already gone (it expired or was ended), so there was nothing to end."
                .to_owned()
        }
        Some("ended-others") => format!(
            "Logged out everywhere else: {} ended; this one stays.",
            sessions(notice, true)
        ),
        _ => String::new(),
    };
    let notice = if notice.is_empty() {
        notice
    } else {
        format!(r#"<p class="notice info" id="notice">{notice}</p>"#)
    };

    // Internal fields first, in the layer's order, then the user's, sorted.
    let mut rows = String::new();
    for field in RESERVED_FIELDS {
        if let Some(value) = hash.get(*field) {
            rows.push_str(&format!(
                r#"<tr class="internal" id="field-{field}"><td><code>{field}</code></td><td class="value"><code>{}</code></td><td><span class="badge">internal</span>{}</td></tr>"#,
                escape(value),
                describe_internal(field),
            ));
        }
    }
    let mut user: Vec<_> = hash
        .iter()
        .filter(|(name, _)| !RESERVED_FIELDS.contains(&name.as_str()))
        .collect();
    user.sort();
    for (name, value) in user {
        let name = escape(name);
        rows.push_str(&format!(
            r#"<tr class="user" id="field-{name}"><td><code>{name}</code></td><td class="value"><code>{}</code></td><td><span class="badge">user</span>{}</td></tr>"#,
            escape(value),
            describe_user(&name),
        ));
    }

    let pttl_text = if pttl >= 0 {
        format!("{:.1} s", pttl as f64 / 1000.0)
    } else {
        "gone".to_owned()
    };
    format!(
        r#"{notice}
<section class="card">
  <h2>Signed in as <strong id="username">{username}</strong></h2>
  <dl class="facts">
    <dt>Expires in</dt>
    <dd><span id="countdown" data-pttl-ms="{pttl}">{pttl_text}</span>
      <progress id="ttl-bar" max="{ttl_ms}" value="{pttl_value}"></progress>
      <small>Redis reported <code>PTTL</code> <span id="pttl">{pttl}</span> ms when it made this page. Idle TTL <span id="idle-ttl">{ttl}</span> s: any request pushes the expiry back to it; none, and Redis deletes the key.</small></dd>
    <dt>Redis key</dt>
    <dd><code id="session-key">{key}</code><br><small>The key holds the SHA-256 digest of the session ID, so whoever reads Redis cannot take the session over.</small></dd>
    <dt>Session ID</dt>
    <dd><code id="session-id">{id_start}…</code><br><small>Only in the <code>sid</code> cookie (HttpOnly: no script on this page can read it). Rotating it changes the key too.</small></dd>
  </dl>
</section>
<section class="card actions">
  <h2>Change it</h2>
  <form method="post" action="/counter" class="inline"><input type="hidden" name="csrf" value="{csrf}"><button id="increment">Increment counter</button></form>
  <form method="post" action="/ttl" class="inline"><input type="hidden" name="csrf" value="{csrf}"><select name="ttl" id="new-ttl">{options}</select><button id="change-ttl">Change TTL</button></form>
  <form method="post" action="/rotate" class="inline"><input type="hidden" name="csrf" value="{csrf}"><button id="rotate">Rotate session ID</button></form>
  <form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" value="{csrf}"><button id="logout" class="danger">Log out</button></form>
  <a href="/" id="reload">Reload</a>
</section>
<section class="card">
  <h2>The hash in Redis</h2>
  <p><code>HGETALL {key}</code></p>
  <table id="fields"><thead><tr><th>field</th><th>value</th><th>what</th></tr></thead><tbody>
{rows}
  </tbody></table>
</section>
{other_sessions}"#,
        username = escape(username),
        key = escape(key),
        id_start = &id.as_str()[..6],
        ttl_ms = ttl * 1000,
        pttl_value = pttl.max(0),
        options = ttl_options(ttl),
    )
}

/// "Your other sessions": the live sessions of the user this one is tied to, other than
/// this one (`others`, from [`SessionManager::list`]), each with its age, last use,
/// remaining TTL and a button to end it; then "log out everywhere else" and "log out
/// everywhere". `now` is when the page was made.
fn other_sessions(
    session: &Session,
    others: Option<&(String, Vec<SessionInfo>)>,
    now: SystemTime,
) -> String {
    let Some((user_id, others)) = others else {
        return r#"<section class="card" id="other-sessions">
  <h2>Your other sessions</h2>
  <p>This session is not tied to a user, so there is nothing to list. Log out and in again.</p>
</section>"#
            .to_owned();
    };
    let csrf = escape(&session.get(CSRF_TOKEN).unwrap_or_default());
    let user = escape(user_id);
    let listing = if others.is_empty() {
        format!(
            r#"<p id="no-other-sessions">No other live sessions. Log in as <strong>{user}</strong> in another browser (or a private window) and reload this page to see it here.</p>"#
        )
    } else {
        let rows: String = others
            .iter()
            .map(|info| other_session_row(info, &csrf, now))
            .collect();
        format!(
            r#"<table id="others"><thead><tr><th>session</th><th>started</th><th>last used</th><th>expires in</th><th>counter</th><th></th></tr></thead><tbody>
{rows}
  </tbody></table>"#
        )
    };
    let count = others.len();
    format!(
        r#"<section class="card" id="other-sessions">
  <h2>Your other sessions <small id="other-count">({count})</small></h2>
  <p>Every session <strong>{user}</strong> has in other browsers, as <code>SessionManager::list</code> reads them from the user's index in Redis (a sorted set of session handles), this one left out. A handle is the digest the session's key ends with: it names the session without being usable as its cookie.</p>
  {listing}
  <div class="everywhere">
    <form method="post" action="/sessions/end-others" class="inline"><input type="hidden" name="csrf" value="{csrf}"><button id="end-others">Log out everywhere else</button></form>
    <form method="post" action="/sessions/end-all" class="inline"><input type="hidden" name="csrf" value="{csrf}"><button id="end-all" class="danger">Log out everywhere</button></form>
  </div>
  <p class="hint">Ending a session deletes its key: its very next request finds no session, even one already on its way. "Log out everywhere" ends this session too.</p>
</section>"#
    )
}

/// One row of "your other sessions".
fn other_session_row(info: &SessionInfo, csrf: &str, now: SystemTime) -> String {
    let handle = escape(info.handle.as_str());
    let ago = |at: Option<SystemTime>| match at {
        Some(at) => format!("{} ago", human(now.duration_since(at).unwrap_or_default())),
        None => "unknown".to_owned(),
    };
    let counter = info
        .fields
        .iter()
        .find(|(name, _)| name == COUNTER)
        .map_or("", |(_, value)| value.as_str());
    let ttl_ms = info.expires_in.as_millis();
    format!(
        r#"<tr class="other-session" data-handle="{handle}"><td><code>{short}…</code></td><td class="age">{age}</td><td class="last-used">{last}</td><td class="expires-in" data-pttl-ms="{ttl_ms}">{ttl}</td><td class="counter">{counter}</td><td><form method="post" action="/sessions/end"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="handle" value="{handle}"><button class="end-session danger">End</button></form></td></tr>"#,
        short = escape(&short_handle(&info.handle)),
        age = ago(info.created_at),
        last = ago(info.last_accessed_at),
        ttl = human(info.expires_in),
        counter = escape(counter),
    )
}

/// A duration in words, to the second: `42 s`, `3 min 5 s`, `2 h 10 min`.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

/// Escapes text for HTML element content and quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}
