//! The README's quick start: a page-view counter kept in a Redis session.
//!
//! Run with
//!
//! ```not_rust
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example axum
//! ```
//!
//! then open <http://localhost:3000> and reload a few times.

use axum::{routing::get, Router};
use tower_redis_session::{RedisSessionLayer, Session, SessionError};

async fn counter(session: Session) -> Result<String, SessionError> {
    let views = session.increment("page_views", 1)?;
    Ok(format!("You have seen this page {views} times.\n"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let pool = tower_redis_session::connect(&url).await?;
    let app = Router::new()
        .route("/", get(counter))
        .layer(RedisSessionLayer::new(pool));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://localhost:3000");
    axum::serve(listener, app).await?;
    Ok(())
}
