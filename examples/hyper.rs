//! The session layer around a plain hyper 1 service, no axum: the session comes from the
//! request extensions.
//!
//! Run with
//!
//! ```not_rust
//! REDIS_URL=redis://127.0.0.1:6379 PORT=3001 cargo run --example hyper
//! ```
//!
//! then try it with curl, keeping the cookie in a jar:
//!
//! ```not_rust
//! curl -c jar -b jar http://127.0.0.1:3001/              # visit 1
//! curl -c jar -b jar http://127.0.0.1:3001/              # visit 2
//! curl -c jar -b jar -d ferris http://127.0.0.1:3001/name
//! curl -c jar -b jar http://127.0.0.1:3001/              # visit 3, ferris
//! curl -c jar -b jar -X POST http://127.0.0.1:3001/logout
//! ```

use std::convert::Infallible;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use tower::{service_fn, ServiceBuilder};
use tower_redis_session::{RedisSessionLayer, Session};

/// The longest name `POST /name` accepts, in bytes.
const MAX_NAME: usize = 64;

/// The app: a visit counter and a name, kept in the session.
///
/// - `GET /`: counts the visit and greets by name;
/// - `POST /name` (the body is the name): remembers the name;
/// - `POST /logout`: ends the session (key deleted, cookie expired).
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // The layer put the session in the extensions; `Session` is a cheap handle.
    let Some(session) = req.extensions().get::<Session>().cloned() else {
        return Ok(text(StatusCode::INTERNAL_SERVER_ERROR, "no session layer"));
    };
    let res = match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => match session.increment("visits", 1) {
            Ok(visits) => {
                let name = session.get("name").unwrap_or_else(|| "stranger".into());
                text(StatusCode::OK, &format!("hello {name}, visit {visits}\n"))
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        (&Method::POST, "/name") => {
            let body = match req.into_body().collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => return Ok(text(StatusCode::BAD_REQUEST, "unreadable body\n")),
            };
            match std::str::from_utf8(&body).map(str::trim) {
                Ok(name) if !name.is_empty() && name.len() <= MAX_NAME => {
                    match session.insert("name", name) {
                        Ok(()) => text(StatusCode::OK, "name saved\n"),
                        Err(e) => text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
                    }
                }
                _ => text(
                    StatusCode::BAD_REQUEST,
                    "send a name of 1 to 64 bytes of UTF-8\n",
                ),
            }
        }
        (&Method::POST, "/logout") => {
            session.destroy();
            text(StatusCode::OK, "logged out\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(res)
}

/// A plain-text response.
fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body.to_owned())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// Connects to Redis, wraps [`handle`] in the layer and serves it with hyper's HTTP/1.
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let port: u16 = std::env::var("PORT").map_or(Ok(3001), |p| p.parse())?;

    let pool = tower_redis_session::connect(&url).await?;
    let layer = RedisSessionLayer::new(pool);
    layer.load_scripts().await?;
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(handle));

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://127.0.0.1:{port}");
    loop {
        let (stream, _) = listener.accept().await?;
        // hyper calls services by `&self`; the adapter clones the tower service per call.
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection error: {e}");
            }
        });
    }
}
