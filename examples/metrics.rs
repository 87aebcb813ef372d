//! The layer's metrics (cargo feature `metrics`) exposed to Prometheus on a `/metrics`
//! route, with `metrics-exporter-prometheus`.
//!
//! Run with
//!
//! ```not_rust
//! REDIS_URL=redis://127.0.0.1:6379 PORT=3003 cargo run --example metrics --features metrics
//! ```
//!
//! then make a few requests and look:
//!
//! ```not_rust
//! curl -c jar -b jar http://localhost:3003/            # creates a session, then loads it
//! curl -c jar -b jar http://localhost:3003/
//! curl -c jar -b jar -X POST http://localhost:3003/logout
//! curl http://localhost:3003/metrics
//! ```
//!
//! The app installs the recorder (here Prometheus's, rendered on a route of its own; any
//! recorder of the `metrics` ecosystem works the same), then calls
//! [`describe_metrics`](tower_redis_session::describe_metrics) so the page has a `# HELP`
//! line for each metric. Every name and label is listed in `docs/operations.md`, under
//! Monitoring.

use std::time::Duration;

use axum::{
    routing::{get, post},
    Router,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tower_redis_session::{RedisSessionLayer, Session, SessionError};

async fn counter(session: Session) -> Result<String, SessionError> {
    let views = session.increment("page_views", 1)?;
    Ok(format!("You have seen this page {views} times.\n"))
}

async fn logout(session: Session) -> &'static str {
    session.destroy();
    "logged out\n"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Redis time as a real histogram (buckets in seconds), which Prometheus can add up
    // across instances; without buckets the exporter renders a summary.
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("tower_redis_session_redis_duration_seconds".into()),
            &[
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ],
        )?
        .install_recorder()?;
    tower_redis_session::describe_metrics();
    // Without the exporter's own HTTP listener, its upkeep is the app's to run.
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });

    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "3003".into());
    let pool = tower_redis_session::connect(&url).await?;
    let app = Router::new()
        .route("/", get(counter))
        .route("/logout", post(logout))
        .layer(RedisSessionLayer::new(pool))
        // Outside the session layer: a scrape needs no session.
        .route(
            "/metrics",
            get(move || std::future::ready(prometheus.render())),
        );
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("listening on http://localhost:{port} (metrics on /metrics)");
    axum::serve(listener, app).await?;
    Ok(())
}
