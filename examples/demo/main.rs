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
//! key's PTTL with a live countdown) and buttons to change it. The page stays live: a
//! small script polls `GET /live`, a JSON view of the same hash read straight from Redis
//! (without loading the session, so polling never pushes the expiry back), and updates
//! the tables in place. Every state-changing request is a POST form, checked twice
//! against cross-site requests: the `Origin` header must be this server's, and (for a
//! live session) the form must carry the session's CSRF token, a random value stored in
//! the session itself and renewed whenever the session ID changes.
//!
//! Login ties the session to its username ([`Session::set_user_id`]), so the page can
//! list the user's other live sessions through the layer's [`SessionManager`] and end
//! one of them, all the others, or all of them. Notices after an action are one-time
//! flash messages kept in the session itself.

use std::{
    collections::HashMap,
    net::IpAddr,
    process::ExitCode,
    sync::OnceLock,
    time::{Duration, SystemTime},
};

use axum::{
    extract::{rejection::FormRejection, FromRequest, FromRequestParts, Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    middleware::{self, Next},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
    Form, Json, Router,
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tower_redis_session::{
    fred::prelude::*, ErrorKind, Redis, RedisSessionLayer, Session, SessionError, SessionHandle,
    SessionId, SessionInfo, SessionManager, RESERVED_FIELDS,
};

/// The Redis key prefix of the demo's sessions (the crate's default, set explicitly
/// because the page reads the keys itself).
const KEY_PREFIX: &str = "session:";

/// The session cookie's name when the demo is served on a loopback address: the
/// crate's default. Set explicitly all the same, because `GET /live` runs outside the
/// session layer and reads the cookie itself, so it must know the name. Browsers accept
/// a `__Host-` cookie (which must be `Secure`) from `http://127.0.0.1` and
/// `http://localhost`, which they count as secure contexts.
const COOKIE_NAME: &str = "__Host-sid";

/// The session cookie's name when the demo is served over plain HTTP on any other
/// address: the cookie must then go without `Secure` (or the browser would drop it),
/// and a `__Host-` cookie cannot.
const PLAIN_HTTP_COOKIE_NAME: &str = "sid";

/// The cookie that carries the one notice that cannot live in the session: the one
/// after logging out, when the session is gone.
const NOTICE_COOKIE: &str = "demo_notice";

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

/// How long the page's own Redis reads (the hash, the listing) may take before the page
/// says Redis is not answering.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The session field holding the username given at login.
const USERNAME: &str = "username";
/// The session field holding the counter.
const COUNTER: &str = "counter";
/// The session field holding the CSRF token that the forms must send back.
const CSRF_TOKEN: &str = "csrf_token";
/// The session field holding a one-time notice for the next page.
const FLASH: &str = "flash";

/// The Redis URL (without its password), shown in every page's header.
static REDIS_LABEL: OnceLock<String> = OnceLock::new();

/// What every handler shares: the Redis handle the layer uses (to show the hash as it is
/// stored), the layer's session manager (to list and end a user's sessions) and the
/// session cookie's name.
#[derive(Clone)]
struct App {
    /// The layer's fred handle.
    redis: Redis,
    /// The layer's session manager.
    manager: SessionManager,
    /// The session cookie's name.
    cookie_name: &'static str,
    /// Whether cookies the demo sets itself go with `Secure`.
    secure: bool,
}

/// Entry point: reads the settings, connects to Redis (one clear line and exit code 1
/// if it cannot), and serves the demo.
#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // fred warns about its own cleanup when the first connection fails
                // ("Failed to send QUIT ..."); the demo says that in its one line.
                .unwrap_or_else(|_| "info,tower_redis_session=debug,fred=error".into()),
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
    let _ = REDIS_LABEL.set(redis_label.clone());

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
    let cookie_name = if secure {
        COOKIE_NAME
    } else {
        println!(
            "demo: serving plain HTTP on {bind}, so the session cookie goes without `Secure` (as `{PLAIN_HTTP_COOKIE_NAME}`); use HTTPS for anything real"
        );
        PLAIN_HTTP_COOKIE_NAME
    };
    let layer = RedisSessionLayer::builder(pool)
        .key_prefix(KEY_PREFIX)
        .cookie_name(cookie_name)
        .idle_ttl(Duration::from_secs(DEFAULT_TTL))
        .secure(secure)
        // When Redis fails while the layer loads or saves the session, the person sees
        // the demo's own page, not a line of plain text.
        .error_response(store_failure_response)
        .build()
        .map_err(|e| format!("bad session settings: {e}"))?;
    layer
        .load_scripts()
        .await
        .map_err(|e| unreachable(e.to_string()))?;

    let app = App {
        redis: layer.redis().clone(),
        manager: layer.manager(),
        cookie_name,
        secure,
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
        .method_not_allowed_fallback(method_not_allowed)
        .layer(layer);
    // Static files and the live view stay outside the session layer: fetching them
    // neither loads the session nor pushes its expiry back.
    let router = pages
        .route("/live", get(live))
        .route("/assets/style.css", get(style))
        .route("/assets/live.js", get(script))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(app)
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

/// `GET /`: the session page, or the login form.
async fn index(
    State(app): State<App>,
    session: Session,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, AppError> {
    let Some(username) = session.get(USERNAME) else {
        // The notice after logging out comes in a cookie of its own (the session is
        // gone), read once and cleared here.
        let notice = if session.cookie_expired() {
            Some(expired_notice())
        } else if let Some(value) = cookie(&headers, NOTICE_COOKIE) {
            logged_out_notice(&value)
        } else if uri.query() == Some("after=login") {
            Some(cookie_blocked_notice())
        } else {
            None
        };
        let mut res = login_page(notice.as_deref(), None, StatusCode::OK);
        if cookie(&headers, NOTICE_COOKIE).is_some() {
            res.headers_mut()
                .append(header::SET_COOKIE, notice_cookie(&app, "", 0));
        }
        return Ok(res);
    };
    let Some(id) = session.id() else {
        return Err(AppError::Internal("a loaded session without an ID"));
    };
    // The page that shows a flash notice removes it from the session: it shows once.
    let flash = session.remove(FLASH)?;
    let view = live_view(&app, &id).await?;
    let LiveView::Live(view) = view else {
        // Ended between the layer's load and this read.
        return Ok(Redirect::to("/").into_response());
    };
    let body = session_page(
        &session,
        &username,
        &id,
        &view,
        flash.as_deref(),
        app.cookie_name,
    );
    Ok(page("Your session", &body, StatusCode::OK))
}

/// The login form's fields, as text: a value the page never offers (a TTL that is not
/// a number) gets the form back with a word on what to fix, not a deserialization error.
#[derive(Debug, Deserialize)]
struct LoginForm {
    /// Shown on the page (escaped) and stored in the session.
    #[serde(default)]
    username: String,
    /// The idle TTL in seconds, one of [`TTL_CHOICES`].
    #[serde(default)]
    ttl: String,
}

/// `POST /login`: starts a session (or, if one exists, moves it to a new ID first, as
/// every login must) tied to the username as its user id, with the username, a counter at
/// 0 and a fresh CSRF token.
async fn login(
    session: Session,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Result<Response, AppError> {
    check_origin(&headers)?;
    let Form(form) = form?;
    let username = form.username.trim();
    let ttl = parse_ttl(&form.ttl);
    let problem = if username.is_empty() {
        Some("Pick a username.")
    } else if username.chars().count() > MAX_USERNAME {
        Some("That username is too long (32 characters at most).")
    } else if username.chars().any(char::is_control) {
        Some("Usernames cannot contain control characters.")
    } else if ttl.is_none() {
        Some("Pick one of the TTLs offered.")
    } else {
        None
    };
    let (None, Some(ttl)) = (problem, ttl) else {
        return Ok(login_page(
            None,
            Some((problem.unwrap_or_default(), username, ttl)),
            StatusCode::UNPROCESSABLE_ENTITY,
        ));
    };
    // A login is a privilege change: never keep the ID the browser had before it.
    // (`set_user_id` below moves the session to a new ID as well; asking twice is
    // harmless.)
    if session.is_loaded() {
        session.rotate_id();
    }
    // The user id is what "your other sessions" and "log out everywhere" go by.
    session.set_user_id(username)?;
    session.insert(USERNAME, username)?;
    session.insert(COUNTER, "0")?;
    session.csrf_token()?;
    session.insert(FLASH, "login")?;
    session.set_ttl(Duration::from_secs(ttl))?;
    // `?after=login` only matters if the browser did not send the cookie back: the
    // login form then says why there is no session to show.
    Ok(Redirect::to("/?after=login").into_response())
}

/// The fields of the forms shown to a live session, as text (see [`LoginForm`]).
#[derive(Debug, Deserialize)]
struct ActionForm {
    /// The session's CSRF token, from the form's hidden field.
    #[serde(default)]
    csrf: String,
    /// The new idle TTL in seconds (`POST /ttl` only).
    ttl: Option<String>,
    /// The handle of the session to end (`POST /sessions/end` only).
    handle: Option<String>,
}

/// `POST /counter`: adds one to the counter (an atomic `HINCRBY` in Redis).
async fn increment(session: Session, _: Action) -> Result<Response, AppError> {
    session.increment(COUNTER, 1)?;
    Ok(Redirect::to("/").into_response())
}

/// `POST /ttl`: changes the session's idle TTL; the key's TTL in Redis follows at once.
async fn change_ttl(session: Session, Action(form): Action) -> Result<Response, AppError> {
    let ttl = form
        .ttl
        .as_deref()
        .and_then(parse_ttl)
        .ok_or(AppError::BadRequest("That TTL is not one the page offers."))?;
    session.set_ttl(Duration::from_secs(ttl))?;
    session.insert(FLASH, "ttl")?;
    Ok(Redirect::to("/").into_response())
}

/// `POST /rotate`: moves the session to a new ID; the data and TTL stay, the CSRF token
/// is renewed (a token is good for one session ID).
async fn rotate(State(app): State<App>, session: Session, _: Action) -> Result<Response, AppError> {
    let from = short_handle_of(&app.manager, &session);
    // Rotation gives the session a new CSRF token too: pages made for the old ID stop
    // working.
    session.rotate_id();
    session.insert(FLASH, format!("rotated:{from}"))?;
    Ok(Redirect::to("/").into_response())
}

/// `POST /logout`: deletes the session's key and clears the cookie.
async fn logout(State(app): State<App>, session: Session, _: Action) -> Result<Response, AppError> {
    let from = short_handle_of(&app.manager, &session);
    session.destroy();
    Ok(logged_out_redirect(&app, &format!("logged-out:{from}")))
}

/// `POST /sessions/end`: ends one of the user's other sessions (its key is deleted, so
/// its next request finds no session). The manager refuses a handle that is not one of
/// this user's sessions.
async fn end_session(
    State(app): State<App>,
    session: Session,
    Action(form): Action,
) -> Result<Response, AppError> {
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
    let flash = if app.manager.terminate(&user_id, &handle).await? {
        format!("ended:{}", short_handle(&handle))
    } else {
        "not-ended".to_owned()
    };
    session.insert(FLASH, flash)?;
    Ok(Redirect::to("/").into_response())
}

/// `POST /sessions/end-others`: "log out everywhere else", ending all of the user's
/// sessions but this one.
async fn end_other_sessions(
    State(app): State<App>,
    session: Session,
    _: Action,
) -> Result<Response, AppError> {
    let (user_id, this) = user_of(&app.manager, &session)?;
    let ended = app.manager.terminate_all(&user_id, Some(&this)).await?;
    session.insert(FLASH, format!("ended-others:{ended}"))?;
    Ok(Redirect::to("/").into_response())
}

/// `POST /sessions/end-all`: "log out everywhere", ending all of the user's sessions,
/// this one included; then the cookie is cleared and the login form comes back.
async fn end_all_sessions(
    State(app): State<App>,
    session: Session,
    _: Action,
) -> Result<Response, AppError> {
    let (user_id, _) = user_of(&app.manager, &session)?;
    let ended = app.manager.terminate_all(&user_id, None).await?;
    // This session's key is gone already; destroying it clears the cookie too.
    session.destroy();
    Ok(logged_out_redirect(&app, &format!("ended-all:{ended}")))
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

/// The redirect to the login form after the session ended, with the notice for it in
/// a short-lived cookie of its own (there is no session left to keep it in).
fn logged_out_redirect(app: &App, notice: &str) -> Response {
    let mut res = Redirect::to("/").into_response();
    res.headers_mut()
        .append(header::SET_COOKIE, notice_cookie(app, notice, 60));
    res
}

/// The `Set-Cookie` value of the notice cookie (`max_age` 0 clears it).
fn notice_cookie(app: &App, value: &str, max_age: u32) -> HeaderValue {
    let secure = if app.secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{NOTICE_COOKIE}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("demo_notice=; Max-Age=0; Path=/"))
}

// ---------------------------------------------------------------------------------------
// The live view
// ---------------------------------------------------------------------------------------

/// What `GET /live` and the page show of the session: the hash and its PTTL as Redis
/// holds them, and the user's other sessions.
#[derive(Debug, Serialize)]
struct Live {
    /// The session's Redis key.
    key: String,
    /// The start of the session ID (the rest stays in the cookie).
    id_start: String,
    /// The key's PTTL, in milliseconds.
    pttl_ms: i64,
    /// The idle TTL (`session_ttl`), in seconds.
    ttl: u64,
    /// Every field of the hash: internal ones first, in the layer's order, then the
    /// user's, sorted.
    fields: Vec<LiveField>,
    /// The user's other live sessions; `None` for a session not tied to a user.
    others: Option<Vec<OtherSession>>,
    /// The session's CSRF token, so that the forms follow a rotation made in another tab.
    csrf: String,
}

/// One field of the hash.
#[derive(Debug, Serialize)]
struct LiveField {
    /// The field name.
    name: String,
    /// Its value, as stored.
    value: String,
    /// `true` for the layer's own fields.
    internal: bool,
    /// What the field is for.
    what: &'static str,
}

/// One of the user's other sessions.
#[derive(Debug, Serialize)]
struct OtherSession {
    /// Its handle.
    handle: String,
    /// The start of its handle.
    short: String,
    /// How long ago it started, in words.
    age: String,
    /// How long ago a request last loaded it, in words.
    last_used: String,
    /// Its key's PTTL, in milliseconds.
    expires_in_ms: u128,
    /// The same, in words.
    expires_in: String,
    /// Its counter.
    counter: String,
}

/// The session as [`live_view`] found it.
enum LiveView {
    /// Live.
    Live(Live),
    /// No longer in Redis (expired, ended), or only a marker left where it was.
    Gone,
}

/// Reads the session's hash and PTTL with plain `HGETALL` and `PTTL`, and lists the
/// user's other sessions with the manager. None of these loads the session, so none of
/// them pushes its expiry back or touches `last_accessed_at`: the page can poll this as
/// often as it likes and still show the TTL running out.
async fn live_view(app: &App, id: &SessionId) -> Result<LiveView, AppError> {
    let key = app.manager.redis_key(id);
    let client = app.redis.client();
    let read = async {
        let hash: HashMap<String, String> = client.hgetall(&key).await?;
        let pttl: i64 = client.pttl(&key).await?;
        Ok::<_, tower_redis_session::fred::error::Error>((hash, pttl))
    };
    let (hash, pttl) = tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .map_err(|_| AppError::Timeout)??;
    // A key left as a marker after a rotation or logout has no `created_at`.
    if pttl < 0 || !hash.contains_key("created_at") {
        return Ok(LiveView::Gone);
    }
    let others = match hash.get("user_id") {
        Some(user_id) => {
            let this = app.manager.handle(id);
            let mut sessions = tokio::time::timeout(READ_TIMEOUT, app.manager.list(user_id))
                .await
                .map_err(|_| AppError::Timeout)??;
            sessions.retain(|info| info.handle != this);
            let now = SystemTime::now();
            Some(
                sessions
                    .iter()
                    .map(|info| other_session(info, now))
                    .collect(),
            )
        }
        None => None,
    };
    let mut fields: Vec<LiveField> = RESERVED_FIELDS
        .iter()
        .filter_map(|name| {
            hash.get(*name).map(|value| LiveField {
                name: (*name).to_owned(),
                value: value.clone(),
                internal: true,
                what: describe_internal(name),
            })
        })
        .collect();
    let mut user: Vec<_> = hash
        .iter()
        .filter(|(name, _)| !RESERVED_FIELDS.contains(&name.as_str()))
        .collect();
    user.sort();
    fields.extend(user.into_iter().map(|(name, value)| LiveField {
        name: name.clone(),
        value: value.clone(),
        internal: false,
        what: describe_user(name),
    }));
    Ok(LiveView::Live(Live {
        key,
        id_start: id.as_str()[..6].to_owned(),
        pttl_ms: pttl,
        ttl: hash
            .get("session_ttl")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
        fields,
        others,
        csrf: hash.get(CSRF_TOKEN).cloned().unwrap_or_default(),
    }))
}

/// One of the user's other sessions, as the page shows it.
fn other_session(info: &SessionInfo, now: SystemTime) -> OtherSession {
    let ago = |at: Option<SystemTime>| match at {
        Some(at) => format!("{} ago", human(now.duration_since(at).unwrap_or_default())),
        None => "unknown".to_owned(),
    };
    let counter = info
        .fields
        .iter()
        .find(|(name, _)| name == COUNTER)
        .map_or("", |(_, value)| value.as_str());
    OtherSession {
        handle: info.handle.as_str().to_owned(),
        short: short_handle(&info.handle),
        age: ago(info.created_at),
        last_used: ago(info.last_accessed_at),
        expires_in_ms: info.expires_in.as_millis(),
        expires_in: human(info.expires_in),
        counter: counter.to_owned(),
    }
}

/// `GET /live`: the session as JSON, for the page's script to poll.
///
/// This route is deliberately outside the session layer: going through it would load
/// the session, and every load pushes the key's expiry back to the full idle TTL, so a
/// page polling every second would keep its session alive forever and never show the
/// TTL running out. Instead it takes the session ID from the cookie itself (strictly:
/// exactly one cookie of that name, holding a well-formed ID), names the key with
/// [`SessionManager::redis_key`], and reads it with plain `HGETALL` and `PTTL`, which
/// leave the TTL alone. It never sets a cookie.
async fn live(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some(id) = cookie(&headers, app.cookie_name).and_then(|v| SessionId::parse(&v)) else {
        return Json(serde_json::json!({ "state": "gone" })).into_response();
    };
    match live_view(&app, &id).await {
        Ok(LiveView::Live(view)) => {
            Json(serde_json::json!({ "state": "live", "session": view })).into_response()
        }
        Ok(LiveView::Gone) => Json(serde_json::json!({ "state": "gone" })).into_response(),
        Err(e) => {
            tracing::warn!(error = ?e, "the live view could not read Redis");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "state": "unavailable" })),
            )
                .into_response()
        }
    }
}

/// The value of the request's one cookie named `name`; `None` if there is none, or more
/// than one (then no one can tell which is meant).
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned());
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// `GET /assets/style.css`.
async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("style.css"),
    )
}

/// `GET /assets/live.js`.
async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("live.js"),
    )
}

/// Any path the demo does not serve.
async fn not_found(uri: Uri) -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "Page not found",
        &format!("There is no page at {} in this demo.", uri.path()),
        "Go to the start page, where everything the demo does is one button away.",
    )
}

/// A known path asked with a method it does not take: most often `GET /login` (Enter in
/// the address bar after a form was sent) or any other form's address.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let text = if method == Method::GET {
        format!(
            "{path} is where the demo's forms are sent (with a button, as a POST); it is not a page to open or reload."
        )
    } else {
        format!("{path} does not take a {method} request.")
    };
    error_page(
        StatusCode::METHOD_NOT_ALLOWED,
        "Not a page to open",
        &text,
        "Go to the start page to log in or see your session.",
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
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
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

/// Checks a POST from a live session's page: the form can be read, the `Origin` header,
/// a live session (else a page saying the change was not made), and the session's CSRF
/// token. Returns the form.
fn check_action(
    session: &Session,
    headers: &HeaderMap,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Result<ActionForm, AppError> {
    check_origin(headers)?;
    let Form(form) = form?;
    if !session.is_loaded() {
        return Err(AppError::NoSession {
            had_cookie: session.cookie_expired(),
        });
    }
    if session.verify_csrf_token(&form.csrf) {
        Ok(form)
    } else {
        Err(AppError::Forbidden(
            "The form's CSRF token does not match this session's: the page was made for an earlier session ID (before a rotation or a new login).",
        ))
    }
}

/// The form of an action (every POST but the login), through [`check_action`]: a handler
/// that takes it runs only for a request from this site with the session's CSRF token.
struct Action(ActionForm);

impl<S: Send + Sync> FromRequest<S> for Action {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let headers = parts.headers.clone();
        let form = Form::from_request(Request::from_parts(parts, body), state).await;
        check_action(&session, &headers, form)
            .map(Action)
            .map_err(IntoResponse::into_response)
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

/// One of the TTLs the page offers, from a form's text; `None` for anything else.
fn parse_ttl(text: &str) -> Option<u64> {
    let ttl = text.trim().parse().ok()?;
    TTL_CHOICES
        .iter()
        .any(|&(secs, _)| secs == ttl)
        .then_some(ttl)
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

/// `true` for the shape [`short_handle`] makes (URL-safe base64, 12 characters), so a
/// value read back can be shown as it is.
fn is_short_handle(s: &str) -> bool {
    s.len() == 12
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
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
    /// Redis did not answer the page's own reads in time.
    Timeout,
    /// A form that cannot be read at all (not a form, or not one of the demo's).
    Form(FormRejection),
    /// A POST for a session that is not there.
    NoSession {
        /// The request carried a cookie for a session that is gone (expired, ended
        /// elsewhere, or moved to another ID).
        had_cookie: bool,
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

impl From<FormRejection> for AppError {
    fn from(e: FormRejection) -> Self {
        Self::Form(e)
    }
}

/// What to do when a page says Redis is not answering.
const TRY_AGAIN: &str = "Try again in a moment (reload this page). If it keeps happening, check that redis-server is running.";

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            Self::Session(e) => error_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Change refused",
                &format!("The session refused the change: {e}."),
                "Go back to the start page and try something else.",
            ),
            Self::NoSession { had_cookie: false } => Redirect::to("/").into_response(),
            // Nothing was changed: the session the form was made for is not there any
            // more. Said with the status the session layer uses for a refused change.
            Self::NoSession { had_cookie: true } => error_page(
                StatusCode::CONFLICT,
                "Not applied: your session is gone",
                "Nothing was changed: the session this form was made for expired or was ended (perhaps from another browser, with \"End\" or \"Log out everywhere\") before the request arrived.",
                "Start a new session from the start page.",
            ),
            Self::Redis(e) => {
                tracing::error!(error = %e, "reading the session hash failed");
                unavailable_page(StatusCode::SERVICE_UNAVAILABLE)
            }
            Self::Store(e) => {
                tracing::error!(error = %e, "listing or ending sessions failed");
                unavailable_page(StatusCode::SERVICE_UNAVAILABLE)
            }
            Self::Timeout => {
                tracing::error!("Redis did not answer the page's reads in time");
                unavailable_page(StatusCode::SERVICE_UNAVAILABLE)
            }
            Self::Form(e) => {
                tracing::debug!(error = %e.body_text(), "unreadable form");
                error_page(
                    StatusCode::BAD_REQUEST,
                    "The form could not be read",
                    "The request did not carry one of the demo's forms as the page sends it.",
                    "Go to the start page and use the buttons there.",
                )
            }
            Self::Forbidden(text) => error_page(
                StatusCode::FORBIDDEN,
                "Refused",
                text,
                "Go to the start page (which makes fresh forms) and try again from there.",
            ),
            Self::BadRequest(text) => error_page(
                StatusCode::BAD_REQUEST,
                "Not something the page offers",
                text,
                "Go back to the start page and pick from what it offers.",
            ),
            Self::Internal(text) => {
                tracing::error!(text, "demo bug");
                error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The demo ran into a bug of its own.",
                    "Go to the start page and try again.",
                )
            }
        }
    }
}

/// What happened when Redis does not answer.
fn redis_down() -> String {
    format!(
        "The demo keeps its sessions in Redis at {}, and Redis did not answer in time, so your session could not be read or saved.",
        redis_label()
    )
}

/// The page for "Redis is not answering", with `Retry-After`.
fn unavailable_page(status: StatusCode) -> Response {
    let mut res = error_page(status, "Redis is not answering", &redis_down(), TRY_AGAIN);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

/// The session layer's response when the store fails while it loads or saves a session
/// (set with `error_response`): the same styled page as the demo's own.
fn store_failure_response(err: &tower_redis_session::Error) -> http::Response<Bytes> {
    if err.kind() == ErrorKind::Conflict {
        // Not a failure: the layer refused this request's changes because the session
        // ended or moved to a new ID (another tab, another browser) while it ran.
        let status = StatusCode::CONFLICT;
        let page = error_html(
            status,
            "Not applied: your session changed meanwhile",
            "Nothing was changed: while this request ran, the session it was made for ended or moved to a new ID (a login, a rotation or a logout in another tab or browser).",
            "Reload the start page and try again.",
        );
        let mut res = http::Response::new(Bytes::from(page));
        *res.status_mut() = status;
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return res;
    }
    tracing::error!(error = %err, "the session store failed");
    let status = match err.kind() {
        ErrorKind::Protocol => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let (title, text) = match err.kind() {
        ErrorKind::Protocol => (
            "Redis answered something unexpected",
            format!(
                "Redis at {} sent a reply the session layer cannot read.",
                redis_label()
            ),
        ),
        _ => ("Redis is not answering", redis_down()),
    };
    let mut res = http::Response::new(Bytes::from(error_html(status, title, &text, TRY_AGAIN)));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A styled error page: what happened (`title`, `text`) and what to do (`next`, shown
/// with a link to the start page).
fn error_page(status: StatusCode, title: &str, text: &str, next: &str) -> Response {
    (status, Html(error_html(status, title, text, next))).into_response()
}

/// The HTML of [`error_page`].
fn error_html(status: StatusCode, title: &str, text: &str, next: &str) -> String {
    let body = format!(
        r#"<section class="card error-card" id="error-page" data-status="{code}">
  <p class="status">HTTP {code} {reason}</p>
  <h2 id="error-title">{title}</h2>
  <p id="error">{text}</p>
  <p id="error-next">{next} <a href="/" id="start-page">Go to the start page</a></p>
</section>"#,
        code = status.as_u16(),
        reason = status.canonical_reason().unwrap_or_default(),
        title = escape(title),
        text = escape(text),
        next = escape(next),
    );
    page_html(title, &body)
}

// ---------------------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------------------

/// The Redis URL shown in the header.
fn redis_label() -> &'static str {
    REDIS_LABEL.get().map_or("(not configured)", String::as_str)
}

/// A whole HTML page around `main`.
fn page_html(title: &str, main: &str) -> String {
    include_str!("page.html")
        .replace("{{title}}", &escape(title))
        .replace("{{redis}}", &escape(redis_label()))
        .replace("{{main}}", main)
}

/// [`page_html`] as a response.
fn page(title: &str, main: &str, status: StatusCode) -> Response {
    (status, Html(page_html(title, main))).into_response()
}

/// The login form, with a notice above it, or with a problem in what was submitted
/// (the problem, the username and the TTL given).
fn login_page(
    notice: Option<&str>,
    problem: Option<(&str, &str, Option<u64>)>,
    status: StatusCode,
) -> Response {
    let (notice, username, ttl) = match problem {
        Some((problem, username, ttl)) => (
            Some(format!(
                r#"<p class="notice warn" id="notice">{}</p>"#,
                escape(problem)
            )),
            username,
            ttl.unwrap_or(DEFAULT_TTL),
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
    page("Start a session", &body, status)
}

/// The notice for a session that is gone. The layer only sees that the cookie's session
/// is no longer in Redis, not why.
fn expired_notice() -> String {
    r#"<p class="notice warn" id="notice">Your session expired or was ended: either no request came within its idle TTL, so Redis deleted its key, or it was ended from another of your sessions. Start a new one below.</p>"#.to_owned()
}

/// The notice when the browser did not send the cookie back after a login.
fn cookie_blocked_notice() -> String {
    r#"<p class="notice warn" id="notice">Your browser did not send the session cookie back, so there is no session to show. Is it blocking cookies for this site? (Served on an address other than localhost over plain HTTP, start the demo with BIND set to that address so the cookie goes without <code>Secure</code>.)</p>"#.to_owned()
}

/// The notice after logging out, from the notice cookie: `logged-out:<short handle>` or
/// `ended-all:<count>`. Anything else shows nothing.
fn logged_out_notice(value: &str) -> Option<String> {
    let text = match value.split_once(':')? {
        ("logged-out", from) if is_short_handle(from) => format!(
            "Logged out: the key <code>{KEY_PREFIX}{from}…</code> now holds only a one-minute marker (<code>ended: destroyed</code>) and the cookie was cleared."
        ),
        ("ended-all", n) => format!(
            "Logged out everywhere: {} ended, this one included; their keys now hold only one-minute markers.",
            sessions(n.parse().ok()?, false)
        ),
        _ => return None,
    };
    Some(format!(r#"<p class="notice info" id="notice">{text}</p>"#))
}

/// The page's notice for a flash message read from the session.
fn flash_notice(flash: &str, ttl: u64) -> Option<String> {
    let (kind, arg) = flash.split_once(':').unwrap_or((flash, ""));
    let from = Some(arg).filter(|a| is_short_handle(a));
    let text = match kind {
        "login" => format!("Session started with an idle TTL of {ttl} s."),
        "ttl" => format!("Idle TTL changed to {ttl} s: the key's TTL in Redis follows at once."),
        "rotated" => format!(
            "Session ID rotated: the data moved from <code>{KEY_PREFIX}{}…</code> to the key below, \
             the old ID no longer works, and the forms got a new CSRF token.",
            from?
        ),
        "ended" => format!(
            "Session <code>{}…</code> ended: its key now holds only a one-minute marker, so its next request finds no session.",
            from?
        ),
        "not-ended" => {
            "That session was already gone (it expired or was ended), so there was nothing to end."
                .to_owned()
        }
        "ended-others" => format!(
            "Logged out everywhere else: {} ended; this one stays.",
            sessions(arg.parse().ok()?, true)
        ),
        _ => return None,
    };
    Some(format!(
        r#"<p class="notice info" id="notice">{text} <small>(A one-time notice: it was kept in the session's <code>{FLASH}</code> field, which this page removed.)</small></p>"#
    ))
}

/// How many sessions a notice speaks of, in words: `1 session`, `2 other sessions`.
fn sessions(n: usize, other: bool) -> String {
    let other = if other { "other " } else { "" };
    let plural = if n == 1 { "" } else { "s" };
    format!("{n} {other}session{plural}")
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
        "last_accessed_at" => {
            "when a request last loaded the session (this page's polling does not)"
        }
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
        CSRF_TOKEN => {
            "random token the forms must send back (CSRF protection), renewed with the ID"
        }
        FLASH => "one-time notice for the next page, which removes it",
        _ => "",
    }
}

/// Text with a break opportunity (`<wbr>`) after each `:` and before each `T` that
/// starts a time, so that keys and timestamps wrap there rather than mid-word.
fn breakable(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut prev = ' ';
    for c in text.chars() {
        if c == 'T' && prev.is_ascii_digit() {
            out.push_str("<wbr>");
        }
        out.push_str(&escape(c.encode_utf8(&mut [0; 4])));
        if c == ':' || c == '/' {
            out.push_str("<wbr>");
        }
        prev = c;
    }
    out
}

/// The rows of the hash table.
fn field_rows(fields: &[LiveField]) -> String {
    fields
        .iter()
        .map(|field| {
            let name = escape(&field.name);
            let (class, badge) = if field.internal {
                ("internal", "internal")
            } else {
                ("user", "user")
            };
            format!(
                r#"<tr class="{class}" id="field-{name}" data-field="{name}"><td class="name"><code>{name}</code></td><td class="value"><code>{value}</code></td><td class="what"><span class="badge">{badge}</span> {what}</td></tr>"#,
                value = breakable(&field.value),
                what = escape(field.what),
            )
        })
        .collect()
}

/// The page of a live session.
fn session_page(
    session: &Session,
    username: &str,
    id: &SessionId,
    view: &Live,
    flash: Option<&str>,
    cookie_name: &str,
) -> String {
    let ttl = session.ttl().as_secs();
    let csrf = escape(&session.csrf_token().unwrap_or_default());
    let notice = flash.and_then(|f| flash_notice(f, ttl)).unwrap_or_default();
    let pttl = view.pttl_ms;
    let pttl_text = format!("{:.1} s", pttl.max(0) as f64 / 1000.0);
    format!(
        r#"{notice}
<section class="card" id="session-card">
  <h2>Signed in as <strong id="username">{username}</strong></h2>
  <dl class="facts">
    <dt>Expires in</dt>
    <dd><span id="countdown" data-pttl-ms="{pttl}">{pttl_text}</span>
      <progress id="ttl-bar" max="{ttl_ms}" value="{pttl_value}"></progress>
      <small>Redis reported <code>PTTL</code> <span id="pttl">{pttl}</span> ms <span id="pttl-when">when it made this page</span>. Idle TTL <span id="idle-ttl">{ttl}</span> s: any request pushes the expiry back to it; none, and Redis deletes the key.</small>
      <small id="live-status" class="live-status">This page reads the hash from Redis every second without loading the session, so watching it does not push the expiry back.</small></dd>
    <dt>Redis key</dt>
    <dd><code id="session-key">{key}</code><br><small>The key holds the SHA-256 digest of the session ID, so whoever reads Redis cannot take the session over.</small></dd>
    <dt>Session ID</dt>
    <dd><code id="session-id">{id_start}…</code><br><small>Only in the <code>{cookie}</code> cookie (HttpOnly: no script on this page can read it). Rotating it changes the key too.</small></dd>
  </dl>
</section>
<section class="card actions">
  <h2>Change it</h2>
  <form method="post" action="/counter" class="inline"><input type="hidden" name="csrf" value="{csrf}"><button id="increment">Increment counter</button></form>
  <form method="post" action="/ttl" class="inline"><input type="hidden" name="csrf" value="{csrf}"><select name="ttl" id="new-ttl" aria-label="New idle TTL">{options}</select><button id="change-ttl">Change TTL</button></form>
  <form method="post" action="/rotate" class="inline"><input type="hidden" name="csrf" value="{csrf}"><button id="rotate">Rotate session ID</button></form>
  <form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" value="{csrf}"><button id="logout" class="danger">Log out</button></form>
  <a href="/" id="reload">Reload</a>
</section>
<section class="card">
  <h2>The hash in Redis</h2>
  <p><code id="hgetall">HGETALL {key}</code></p>
  <table id="fields"><thead><tr><th>field</th><th>value</th><th>what</th></tr></thead><tbody id="fields-body">
{rows}
  </tbody></table>
</section>
{other_sessions}"#,
        username = escape(username),
        key = breakable(&view.key),
        id_start = &id.as_str()[..6],
        cookie = escape(cookie_name),
        ttl_ms = ttl * 1000,
        pttl_value = pttl.max(0),
        options = ttl_options(ttl),
        rows = field_rows(&view.fields),
        other_sessions = other_sessions(session, view.others.as_deref()),
    )
}

/// "Your other sessions": the live sessions of the user this one is tied to, other than
/// this one (from [`SessionManager::list`]), each with its age, last use, remaining TTL
/// and a button to end it; then "log out everywhere else" (only when there is someone
/// else) and "log out everywhere". The ending buttons ask for confirmation first.
fn other_sessions(session: &Session, others: Option<&[OtherSession]>) -> String {
    let (Some(user_id), Some(others)) = (session.user_id(), others) else {
        return r#"<section class="card" id="other-sessions">
  <h2>Your other sessions</h2>
  <p>This session is not tied to a user, so there is nothing to list. Log out and in again.</p>
</section>"#
            .to_owned();
    };
    let csrf = escape(&session.csrf_token().unwrap_or_default());
    let user = escape(&user_id);
    let rows: String = others
        .iter()
        .map(|other| other_session_row(other, &csrf))
        .collect();
    let count = others.len();
    let none_hidden = if others.is_empty() { "" } else { " hidden" };
    let some_hidden = if others.is_empty() { " hidden" } else { "" };
    format!(
        r#"<section class="card" id="other-sessions">
  <h2>Your other sessions <small id="other-count">({count})</small></h2>
  <p>Every session <strong>{user}</strong> has in other browsers, as <code>SessionManager::list</code> reads them from the user's index in Redis (a sorted set of session handles), this one left out. A handle is the digest the session's key ends with: it names the session without being usable as its cookie.</p>
  <p id="no-other-sessions"{none_hidden}>No other live sessions. Log in as <strong>{user}</strong> in another browser (or a private window) to see it appear here.</p>
  <table id="others"{some_hidden}><thead><tr><th>session</th><th>started</th><th>last used</th><th>expires in</th><th>counter</th><th><span class="visually-hidden">end</span></th></tr></thead><tbody id="others-body">
{rows}
  </tbody></table>
  <div class="everywhere">
    <form method="post" action="/sessions/end-others" class="inline" id="end-others-form" data-confirm="End all your other sessions? This one stays."{some_hidden}><input type="hidden" name="csrf" value="{csrf}"><button id="end-others">Log out everywhere else</button></form>
    <form method="post" action="/sessions/end-all" class="inline" id="end-all-form" data-confirm="End every one of your sessions, this one included?"><input type="hidden" name="csrf" value="{csrf}"><button id="end-all" class="danger">Log out everywhere</button></form>
  </div>
  <p class="hint">Ending a session deletes its key: its very next request finds no session, even one already on its way. "Log out everywhere" ends this session too.</p>
</section>"#
    )
}

/// One row of "your other sessions" (the page's script makes the same).
fn other_session_row(other: &OtherSession, csrf: &str) -> String {
    let handle = escape(&other.handle);
    format!(
        r#"<tr class="other-session" data-handle="{handle}"><td class="session" data-label="session"><code>{short}…</code></td><td class="age" data-label="started">{age}</td><td class="last-used" data-label="last used">{last}</td><td class="expires-in" data-label="expires in" data-pttl-ms="{ttl_ms}">{ttl}</td><td class="counter" data-label="counter">{counter}</td><td class="end"><form method="post" action="/sessions/end" data-confirm="End session {short}…? Its browser will find itself logged out."><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="handle" value="{handle}"><button class="end-session danger">End</button></form></td></tr>"#,
        short = escape(&other.short),
        age = escape(&other.age),
        last = escape(&other.last_used),
        ttl_ms = other.expires_in_ms,
        ttl = escape(&other.expires_in),
        counter = escape(&other.counter),
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
