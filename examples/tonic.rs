//! A tonic gRPC service behind the session layer: the client carries the session cookie
//! in its metadata, and a counter in the session goes up across calls.
//!
//! Run with
//!
//! ```not_rust
//! REDIS_URL=redis://127.0.0.1:6379 PORT=50051 cargo run --example tonic
//! ```
//!
//! and, in another terminal, the client mode of the same example, which makes three
//! calls and prints what each returned:
//!
//! ```not_rust
//! cargo run --example tonic -- client http://127.0.0.1:50051
//! ```
//!
//! No protobuf code generation: the two messages are written by hand with prost's
//! derive, and the service and the client calls with tonic's own building blocks, as
//! `tonic-build` would generate them from this proto:
//!
//! ```proto
//! syntax = "proto3";
//! package counter;
//! service Counter { rpc Hit (HitRequest) returns (HitReply); }
//! message HitRequest { int64 by = 1; }
//! message HitReply { int64 count = 1; bool new_session = 2; }
//! ```

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::uri::PathAndQuery;
use tonic::{
    body::Body,
    codec::ProstCodec,
    metadata::MetadataValue,
    server::NamedService,
    transport::{Channel, Server},
    Status,
};
use tower::{service_fn, Service};
use tower_redis_session::{RedisSessionLayer, Session};

/// The request of `counter.Counter/Hit`: how much to add.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HitRequest {
    /// Added to the session's counter.
    #[prost(int64, tag = "1")]
    pub by: i64,
}

/// The reply of `counter.Counter/Hit`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HitReply {
    /// The session's counter after this call.
    #[prost(int64, tag = "1")]
    pub count: i64,
    /// `true` if the call carried no live session, so this call started one.
    #[prost(bool, tag = "2")]
    pub new_session: bool,
}

/// The gRPC path of the one method.
const HIT: &str = "/counter.Counter/Hit";

/// The method itself: the session is in the request extensions, as for any tower service.
async fn hit(req: tonic::Request<HitRequest>) -> Result<tonic::Response<HitReply>, Status> {
    let session = req
        .extensions()
        .get::<Session>()
        .cloned()
        .ok_or_else(|| Status::internal("no session layer"))?;
    let new_session = !session.is_loaded();
    let count = session
        .increment("calls", req.get_ref().by)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(tonic::Response::new(HitReply { count, new_session }))
}

/// The `counter.Counter` service: routes `Hit` to [`hit`] through tonic's unary
/// handling (decoding, encoding, status codes), and answers `UNIMPLEMENTED` otherwise.
#[derive(Clone, Debug, Default)]
pub struct CounterServer;

impl NamedService for CounterServer {
    const NAME: &'static str = "counter.Counter";
}

impl Service<http::Request<Body>> for CounterServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() == HIT {
            Box::pin(async move {
                let mut grpc =
                    tonic::server::Grpc::new(ProstCodec::<HitReply, HitRequest>::default());
                Ok(grpc.unary(service_fn(hit), req).await)
            })
        } else {
            Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) })
        }
    }
}

/// Serves `counter.Counter` behind the session layer on `port`.
async fn serve(url: &str, port: u16) -> Result<(), Box<dyn std::error::Error>> {
    let pool = tower_redis_session::connect(url).await?;
    let layer = RedisSessionLayer::new(pool);
    layer.load_scripts().await?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    println!("listening on http://{addr} (gRPC)");
    Server::builder()
        .layer(layer)
        .add_service(CounterServer)
        .serve(addr)
        .await?;
    Ok(())
}

/// Calls `Hit` three times, sending back the session cookie the first reply set.
async fn client(endpoint: String) -> Result<(), Box<dyn std::error::Error>> {
    let channel = Channel::from_shared(endpoint)?.connect().await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    let mut cookie: Option<String> = None;
    for call in 1..=3 {
        let mut req = tonic::Request::new(HitRequest { by: 1 });
        if let Some(cookie) = &cookie {
            // Metadata is HTTP/2 headers: the cookie goes as it would from a browser.
            req.metadata_mut()
                .insert("cookie", MetadataValue::try_from(cookie.as_str())?);
        }
        grpc.ready().await?;
        let res: tonic::Response<HitReply> = grpc
            .unary(req, PathAndQuery::from_static(HIT), ProstCodec::default())
            .await?;
        if let Some(set_cookie) = res.metadata().get("set-cookie") {
            // Keep `name=value`, drop the attributes.
            let pair = set_cookie.to_str()?.split(';').next().unwrap_or_default();
            cookie = Some(pair.to_owned());
        }
        let reply = res.into_inner();
        println!(
            "call {call}: count={} new_session={}",
            reply.count, reply.new_session
        );
    }
    Ok(())
}

/// `tonic` serves; `tonic client [URL]` calls the server.
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("client") {
        let endpoint = args
            .next()
            .unwrap_or_else(|| "http://127.0.0.1:50051".into());
        return client(endpoint).await;
    }
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let port: u16 = std::env::var("PORT").map_or(Ok(50051), |p| p.parse())?;
    serve(&url, port).await
}
