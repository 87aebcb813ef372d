//! The Rust half of a PHP + Rust app sharing sessions in one Redis, as during a migration
//! route by route. The PHP half is `index.php` next to this file, on the small session
//! store in `SessionStore.php`; see this folder's README.
//!
//! Run with
//!
//! ```not_rust
//! REDIS_URL=redis://127.0.0.1:6379 PORT=3000 cargo run --example php-interop
//! REDIS_URL=redis://127.0.0.1:6379 php -S 127.0.0.1:8000 examples/php-interop/index.php
//! ```
//!
//! then open <http://localhost:3000> and <http://localhost:8000>: both count their visits
//! in the same session and show every field, whichever side wrote it.
//!
//! What sharing takes on the Rust side:
//! - [`plain_keys(true)`](tower_redis_session::RedisSessionLayerBuilder::plain_keys): the
//!   key is `session:{id}`, as the PHP store names it, instead of a digest of the ID;
//! - the cookie name both use, `sid` (browsers send a cookie to every port of a host);
//! - [`id_format`](tower_redis_session::RedisSessionLayerBuilder::id_format): the PHP
//!   store makes IDs with `bin2hex(random_bytes(16))`, which the layer accepts only when
//!   told. The layer still makes its own IDs (43 characters of URL-safe base64) for new
//!   sessions and at every rotation, so the PHP store accepts those too.

use axum::{
    response::{Html, Redirect},
    routing::{get, post},
    Router,
};
use tower_redis_session::{IdFormat, RedisSessionLayer, Session, SessionError};

/// `GET /`: counts this side's visits and shows every user field of the session.
async fn home(session: Session) -> Result<Html<String>, SessionError> {
    session.increment("rust_visits", 1)?;
    let php = std::env::var("PHP_URL").unwrap_or_else(|_| "http://localhost:8000/".into());
    let rows: String = session
        .fields()
        .iter()
        .map(|(field, value)| {
            format!(
                "<tr><td>{}</td><td>{}</td></tr>",
                escape(field),
                escape(value)
            )
        })
        .collect();
    Ok(Html(format!(
        "<!doctype html><meta charset=\"utf-8\"><title>Rust side</title>\
         <h1>Rust side</h1><p>Idle TTL {} s.\
         <table><tr><th>field</th><th>value</th></tr>{rows}</table>\
         <p><a href=\"{}\">PHP side</a>\
         <form method=\"post\" action=\"/rotate\"><button>New session ID</button></form>\
         <form method=\"post\" action=\"/logout\"><button>Log out</button></form>",
        session.ttl().as_secs(),
        escape(&php),
    )))
}

/// `POST /rotate`: moves the session to a new ID, as at a login; the PHP side follows the
/// new cookie and finds nothing under the old ID.
async fn rotate(session: Session) -> Redirect {
    session.rotate_id();
    Redirect::to("/")
}

/// `POST /logout`: ends the session for both sides. (The cookie is `SameSite=Lax`, so
/// cross-site POSTs do not carry it; a real app also checks a CSRF token.)
async fn logout(session: Session) -> Redirect {
    session.destroy();
    Redirect::to("/")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let port: u16 = std::env::var("PORT").map_or(Ok(3000), |p| p.parse())?;
    let pool = tower_redis_session::connect(&url).await?;
    let layer = RedisSessionLayer::builder(pool)
        .key_prefix("session:")
        .plain_keys(true)
        .cookie_name("sid")
        .id_format(IdFormat::Hex { bytes: 16 })
        .build()?;
    layer.load_scripts().await?;

    let app = Router::new()
        .route("/", get(home))
        .route("/rotate", post(rotate))
        .route("/logout", post(logout))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://localhost:{port}");
    axum::serve(listener, app).await?;
    Ok(())
}
