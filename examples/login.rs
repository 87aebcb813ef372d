//! Login with ID rotation, a protected route and logout: the pattern for real apps.
//!
//! Run with
//!
//! ```not_rust
//! REDIS_URL=redis://127.0.0.1:6379 PORT=3002 cargo run --example login
//! ```
//!
//! then, keeping the cookie in a jar:
//!
//! ```not_rust
//! curl -c jar -b jar http://127.0.0.1:3002/me                                  # 401
//! curl -c jar -b jar -d 'username=ferris&password=crab' http://127.0.0.1:3002/login
//! curl -c jar -b jar http://127.0.0.1:3002/me                                  # hello, ferris
//! curl -c jar -b jar -X POST http://127.0.0.1:3002/logout
//! ```
//!
//! - `POST /login` checks the password, then calls [`Session::rotate_id`] before it
//!   stores the user: the session moves to a new ID, so an ID an attacker planted or saw
//!   before the login is worth nothing after it (session fixation).
//! - [`User`] is an extractor that only lets logged-in requests through: a protected
//!   handler takes it as an argument and cannot forget the check.
//! - `POST /logout` calls [`Session::destroy`]: the key is deleted and the cookie expired.
//!
//! The session cookie is `SameSite=Lax`, so browsers do not send it with cross-site
//! POSTs; an app with forms should still check a CSRF token or the `Origin` header, as
//! the demo does.

use axum::{
    extract::FromRequestParts,
    http::{request::Parts, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Form, Router,
};
use serde::Deserialize;
use tower_redis_session::{RedisSessionLayer, Session, SessionError};

/// The session field that holds the logged-in user's name.
const USER: &str = "user";

/// The users of this example with their passwords. A real app keeps password hashes
/// (argon2, scrypt) in a database.
const USERS: &[(&str, &str)] = &[("ferris", "crab"), ("corro", "unsafe")];

/// The logged-in user: extracting it fails with `401 Unauthorized` when the session has
/// no user, so handlers that take a `User` are protected.
#[derive(Debug, Clone)]
pub struct User {
    /// The user's name, as stored at login.
    pub name: String,
}

impl<S: Send + Sync> FromRequestParts<S> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        match session.get(USER) {
            Some(name) => Ok(Self { name }),
            None if session.cookie_expired() => Err((
                StatusCode::UNAUTHORIZED,
                "your session expired; log in again\n",
            )
                .into_response()),
            None => Err((StatusCode::UNAUTHORIZED, "log in first\n").into_response()),
        }
    }
}

/// `GET /`: public; counts visits in the session, logged in or not (like a cart, it is
/// there before the login and survives it).
async fn home(session: Session) -> Result<String, SessionError> {
    let visits = session.increment("visits", 1)?;
    Ok(match session.get(USER) {
        Some(user) => format!("visit {visits}, logged in as {user}\n"),
        None => format!("visit {visits}, not logged in\n"),
    })
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
struct Credentials {
    /// One of [`USERS`].
    username: String,
    /// Its password.
    password: String,
}

/// `POST /login`: checks the password; on success rotates the session ID, stores the user
/// and redirects to the protected page.
async fn login(session: Session, Form(creds): Form<Credentials>) -> Result<Response, SessionError> {
    let known = USERS.iter().any(|(user, password)| {
        *user == creds.username && constant_time_eq(password.as_bytes(), creds.password.as_bytes())
    });
    if !known {
        return Ok((StatusCode::UNAUTHORIZED, "wrong username or password\n").into_response());
    }
    // A new ID at every privilege change: the one from before the login stops working.
    session.rotate_id();
    session.insert(USER, creds.username)?;
    Ok(Redirect::to("/me").into_response())
}

/// `GET /me`: protected; only a logged-in user gets here.
async fn me(user: User, session: Session) -> String {
    let visits = session.get("visits").unwrap_or_else(|| "0".into());
    format!("hello, {} ({visits} visits so far)\n", user.name)
}

/// `POST /logout`: ends the session.
async fn logout(session: Session) -> Redirect {
    session.destroy();
    Redirect::to("/")
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Connects to Redis and serves the app on `PORT` (default 3002).
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let port: u16 = std::env::var("PORT").map_or(Ok(3002), |p| p.parse())?;
    let pool = tower_redis_session::connect(&url).await?;
    let layer = RedisSessionLayer::new(pool);
    layer.load_scripts().await?;

    let app = Router::new()
        .route("/", get(home))
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/logout", post(logout))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://127.0.0.1:{port}");
    axum::serve(listener, app).await?;
    Ok(())
}
