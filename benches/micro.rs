//! Micro benches of the pure pieces, no Redis needed: ID generation and validation,
//! cookie parsing through the layer, building a write-back, and the layer's overhead on
//! a request whose session is not touched.
//!
//! ```text
//! cargo bench --bench micro
//! ```
//!
//! Before criterion runs, it prints heap allocations per operation, counted with an
//! instrumented global allocator (which every bench below also pays for, bare service
//! included).

use std::{alloc::System, convert::Infallible, hint::black_box};

use criterion::{BatchSize, Criterion};
use http::{header, Request, Response};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::{Layer as _, Service, ServiceExt as _};
use tower_redis_session::{fred::prelude::Builder, RedisSessionLayer, Session, SessionId};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// A `Cookie` header as browsers send it to a site with analytics and a CSRF token, but
/// without our cookie.
const OTHER_COOKIES: &str = "_ga=GA1.1.1234567890.1700000000; theme=dark; \
    csrftoken=Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5; _gid=GA1.1.987654321.1700000000; lang=en";

fn request(cookie: Option<&str>) -> Request<String> {
    let mut req = Request::new(String::new());
    if let Some(cookie) = cookie {
        req.headers_mut()
            .insert(header::COOKIE, cookie.parse().expect("valid header"));
    }
    req
}

/// The trivial inner service: answers `ok` without looking at the request.
fn inner() -> impl Service<
    Request<String>,
    Response = Response<String>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<String>, Infallible>>,
> + Clone {
    tower::service_fn(|_req: Request<String>| std::future::ready(Ok(Response::new("ok".into()))))
}

/// The layer, with a fred client that is never connected: none of these paths touch
/// Redis.
fn layer() -> RedisSessionLayer {
    let client = Builder::default_centralized()
        .build()
        .expect("a client can be built without connecting");
    RedisSessionLayer::new(client)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
}

/// Heap allocations (count, bytes) made by `f`.
fn allocations(mut f: impl FnMut()) -> (usize, usize) {
    f(); // warm up thread-locals and lazies
    let region = Region::new(GLOBAL);
    const N: usize = 1000;
    for _ in 0..N {
        f();
    }
    let stats = region.change();
    (stats.allocations / N, stats.bytes_allocated / N)
}

fn print_allocations() {
    let rt = runtime();
    let mut bare = inner();
    let mut layered = layer().layer(inner());
    let bad = format!("sid={}", "*".repeat(43));
    let rows: Vec<(&str, (usize, usize))> = vec![
        (
            "bare service_fn, no cookie",
            allocations(|| {
                let res = rt.block_on(bare.ready().await_call(request(None)));
                black_box(res);
            }),
        ),
        (
            "layer, no cookie (session untouched)",
            allocations(|| {
                let res = rt.block_on(layered.ready().await_call(request(None)));
                black_box(res);
            }),
        ),
        (
            "bare service_fn, other cookies",
            allocations(|| {
                let res = rt.block_on(bare.ready().await_call(request(Some(OTHER_COOKIES))));
                black_box(res);
            }),
        ),
        (
            "layer, other cookies only",
            allocations(|| {
                let res = rt.block_on(layered.ready().await_call(request(Some(OTHER_COOKIES))));
                black_box(res);
            }),
        ),
        (
            "bare service_fn, malformed sid cookie",
            allocations(|| {
                let res = rt.block_on(bare.ready().await_call(request(Some(&bad))));
                black_box(res);
            }),
        ),
        (
            "layer, malformed sid cookie",
            allocations(|| {
                let res = rt.block_on(layered.ready().await_call(request(Some(&bad))));
                black_box(res);
            }),
        ),
        (
            "Session::detached()",
            allocations(|| {
                black_box(Session::detached());
            }),
        ),
        (
            "detached + insert 2 fields (login)",
            allocations(|| {
                let s = Session::detached();
                s.insert("username", "alice").expect("allowed");
                s.insert("role", "member").expect("allowed");
                black_box(s);
            }),
        ),
        (
            "detached + increment",
            allocations(|| {
                let s = Session::detached();
                black_box(s.increment("page_views", 1).expect("allowed"));
            }),
        ),
        (
            "SessionId::generate",
            allocations(|| {
                black_box(SessionId::generate());
            }),
        ),
        (
            "SessionId::parse (valid)",
            allocations(|| {
                black_box(SessionId::parse(black_box(
                    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG",
                )));
            }),
        ),
    ];
    eprintln!("\nheap allocations per operation (bytes in parentheses; building the request is included):");
    for (name, (count, bytes)) in rows {
        eprintln!("  {name:<40} {count:>3} ({bytes} B)");
    }
    eprintln!();
}

/// `ready()` then `call()`, as a server does for each request.
trait AwaitCall<S: Service<Request<String>>> {
    fn await_call(self, req: Request<String>) -> impl std::future::Future<Output = S::Response>;
}

impl<'a, S> AwaitCall<S> for tower::util::Ready<'a, S, Request<String>>
where
    S: Service<Request<String>>,
    S::Error: std::fmt::Debug,
{
    async fn await_call(self, req: Request<String>) -> S::Response {
        let svc = self.await.expect("ready");
        svc.call(req).await.expect("infallible")
    }
}

fn ids(c: &mut Criterion) {
    let mut g = c.benchmark_group("id");
    let id = SessionId::generate();
    let valid = id.as_str().to_owned();
    let bad_char = format!("{}*", &valid[..42]);
    g.bench_function("generate", |b| b.iter(SessionId::generate));
    g.bench_function("parse valid", |b| {
        b.iter(|| SessionId::parse(black_box(&valid)))
    });
    g.bench_function("parse bad last char", |b| {
        b.iter(|| SessionId::parse(black_box(&bad_char)))
    });
    g.bench_function("parse 8 KB", |b| {
        let long = "A".repeat(8192);
        b.iter(|| SessionId::parse(black_box(&long)))
    });
    g.bench_function("digest (Redis key)", |b| b.iter(|| black_box(&id).digest()));
    g.finish();
}

fn bench_service<S>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    mut svc: S,
    cookie: Option<&str>,
) where
    S: Service<Request<String>>,
    S::Error: std::fmt::Debug,
{
    g.bench_function(name, |b| {
        b.iter_batched(
            || request(cookie),
            |req| rt.block_on(svc.ready().await_call(req)),
            BatchSize::SmallInput,
        )
    });
}

fn layer_overhead(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("layer");
    let bad = format!("sid={}", "*".repeat(43));
    let layer = layer();
    bench_service(&mut g, &rt, "bare service_fn, no cookie", inner(), None);
    bench_service(&mut g, &rt, "layer, no cookie", layer.layer(inner()), None);
    bench_service(
        &mut g,
        &rt,
        "bare service_fn, other cookies",
        inner(),
        Some(OTHER_COOKIES),
    );
    bench_service(
        &mut g,
        &rt,
        "layer, other cookies",
        layer.layer(inner()),
        Some(OTHER_COOKIES),
    );
    bench_service(
        &mut g,
        &rt,
        "layer, malformed sid cookie",
        layer.layer(inner()),
        Some(&bad),
    );
    g.finish();
}

fn write_back(c: &mut Criterion) {
    let mut g = c.benchmark_group("session");
    g.bench_function("detached", |b| b.iter(Session::detached));
    g.bench_function("detached + insert 2 fields", |b| {
        b.iter(|| {
            let s = Session::detached();
            s.insert("username", "alice").expect("allowed");
            s.insert("role", "member").expect("allowed");
            s
        })
    });
    g.bench_function("detached + increment", |b| {
        b.iter(|| {
            let s = Session::detached();
            s.increment("page_views", 1).expect("allowed");
            s
        })
    });
    g.bench_function("get (hit)", |b| {
        let s = Session::detached();
        s.insert("username", "alice").expect("allowed");
        b.iter(|| s.get(black_box("username")))
    });
    g.finish();
}

fn main() {
    print_allocations();
    let mut c = Criterion::default().configure_from_args();
    ids(&mut c);
    layer_overhead(&mut c);
    write_back(&mut c);
    c.final_summary();
}
