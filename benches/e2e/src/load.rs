//! The load generator: hyper HTTP/1.1 clients, one keep-alive connection per worker.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::apps::REQUEST_TIMEOUT;

/// One session a worker may use: the `Cookie` header to send and the `username` it holds.
#[derive(Clone, Debug)]
pub struct SessionRef {
    pub cookie: String,
    pub username: String,
}

/// The request a scenario sends, and how its answer is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    Anon,
    Read,
    Incr,
    Login,
    /// `/anon` with a live session's cookie: a handler that never uses its session.
    Untouched,
}

impl Scenario {
    pub const ALL: [Self; 5] = [
        Self::Anon,
        Self::Read,
        Self::Incr,
        Self::Login,
        Self::Untouched,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Anon => "anon",
            Self::Read => "read",
            Self::Incr => "incr",
            Self::Login => "login",
            Self::Untouched => "untouched",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Self::Anon => "/anon",
            Self::Read => "/read",
            Self::Incr => "/incr",
            Self::Login => "/login",
            Self::Untouched => "/anon",
        }
    }

    pub fn uses_sessions(self) -> bool {
        matches!(self, Self::Read | Self::Incr | Self::Untouched)
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: SendRequest<Empty<Bytes>>,
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// `name=value` of the first `Set-Cookie`, if any.
    pub set_cookie: Option<String>,
    pub body: Bytes,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender })
    }

    pub async fn get(&mut self, path: &str, cookie: Option<&str>) -> Result<Answer, String> {
        let fut = async {
            let mut req = Request::get(path).header(header::HOST, "127.0.0.1");
            if let Some(cookie) = cookie {
                req = req.header(header::COOKIE, cookie);
            }
            let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
            self.sender.ready().await.map_err(|e| e.to_string())?;
            let res = self
                .sender
                .send_request(req)
                .await
                .map_err(|e| e.to_string())?;
            let status = res.status();
            let set_cookie = res
                .headers()
                .get(header::SET_COOKIE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or("").trim().to_owned());
            let body = res
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok(Answer {
                status,
                set_cookie,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| "timed out".to_owned())?
    }
}

/// Sends each of `jobs` (path, cookie) once, `concurrency` at a time; answers in order.
pub async fn drive(
    addr: SocketAddr,
    jobs: Vec<(String, Option<String>)>,
    concurrency: usize,
) -> Result<Vec<Answer>, String> {
    let jobs = Arc::new(jobs);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let jobs = Arc::clone(&jobs);
        let next = Arc::clone(&next);
        tasks.spawn(async move {
            let mut conn = Conn::open(addr).await.map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((path, cookie)) = jobs.get(i) else {
                    break;
                };
                out.push((i, conn.get(path, cookie.as_deref()).await?));
            }
            Ok::<_, String>(out)
        });
    }
    let mut all = Vec::with_capacity(jobs.len());
    while let Some(done) = tasks.join_next().await {
        all.extend(done.map_err(|e| e.to_string())??);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, a)| a).collect())
}

/// What one timed run of one scenario against one contender gave.
#[derive(Debug, Default)]
pub struct CellOut {
    /// Answers completed inside the measured window.
    pub measured: u64,
    pub window: Duration,
    /// Latencies of the measured answers, in microseconds.
    pub latencies_us: Vec<u32>,
    /// Every answer, warm-up included (for commands per request and the counter check).
    pub total: u64,
    /// Answers that passed the scenario's check (200 and the expected body), warm-up
    /// included.
    pub ok: u64,
    /// Answers that failed it, with the first few reasons.
    pub bad: u64,
    pub bad_examples: Vec<String>,
    /// `name=value` of every session a `login` created.
    pub created: Vec<String>,
}

impl CellOut {
    pub fn rps(&self) -> f64 {
        self.measured as f64 / self.window.as_secs_f64()
    }
}

/// `concurrency` workers, each on its own keep-alive connection, send `scenario`'s
/// request back to back for `warmup + duration`; only answers completed after the
/// warm-up count toward throughput and latency. For `read` and `incr`, worker `w` uses
/// the sessions `w, w + concurrency, ...` of `sessions`, so no two requests of one
/// session are ever in flight together.
pub async fn run(
    addr: SocketAddr,
    scenario: Scenario,
    sessions: Arc<Vec<SessionRef>>,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> CellOut {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let sessions = Arc::clone(&sessions);
        tasks.spawn(async move {
            let mut out = CellOut::default();
            let mine: Vec<&SessionRef> = if scenario.uses_sessions() {
                sessions.iter().skip(w).step_by(concurrency).collect()
            } else {
                Vec::new()
            };
            if scenario.uses_sessions() && mine.is_empty() {
                return out;
            }
            let mut conn = None;
            let mut i = 0usize;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                if conn.is_none() {
                    match Conn::open(addr).await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            out.bad += 1;
                            push_example(&mut out, format!("connect: {e}"));
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let session = (!mine.is_empty()).then(|| mine[i % mine.len()]);
                i += 1;
                let answer = conn
                    .as_mut()
                    .expect("connected above")
                    .get(scenario.path(), session.map(|s| s.cookie.as_str()))
                    .await;
                let done = Instant::now();
                out.total += 1;
                match answer.and_then(|a| check(scenario, session, a)) {
                    Ok(created) => {
                        out.ok += 1;
                        if let Some(created) = created {
                            out.created.push(created);
                        }
                    }
                    Err(why) => {
                        out.bad += 1;
                        push_example(&mut out, why);
                        conn = None;
                    }
                }
                if sent >= measure_from && done <= end {
                    out.measured += 1;
                    let us = done.duration_since(sent).as_micros();
                    out.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
            out
        });
    }
    let mut all = CellOut {
        window: duration,
        ..CellOut::default()
    };
    while let Some(done) = tasks.join_next().await {
        let Ok(out) = done else { continue };
        all.measured += out.measured;
        all.latencies_us.extend(out.latencies_us);
        all.total += out.total;
        all.ok += out.ok;
        all.bad += out.bad;
        for e in out.bad_examples {
            push_example(&mut all, e);
        }
        all.created.extend(out.created);
    }
    all
}

fn push_example(out: &mut CellOut, why: String) {
    if out.bad_examples.len() < 3 {
        out.bad_examples.push(why);
    }
}

/// Checks an answer; for `login`, returns the session it created.
fn check(
    scenario: Scenario,
    session: Option<&SessionRef>,
    answer: Answer,
) -> Result<Option<String>, String> {
    if answer.status != StatusCode::OK {
        return Err(format!(
            "{} {}: {}",
            scenario.name(),
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ));
    }
    let body = std::str::from_utf8(&answer.body).unwrap_or("");
    match scenario {
        Scenario::Anon if body == "ok" => Ok(None),
        Scenario::Untouched if body == "ok" => match answer.set_cookie {
            None => Ok(None),
            Some(cookie) => Err(format!("untouched: Set-Cookie {cookie}")),
        },
        Scenario::Read if session.is_some_and(|s| s.username == body) => Ok(None),
        Scenario::Incr if body.parse::<i64>().is_ok_and(|n| n > 0) => Ok(None),
        Scenario::Login if body == "ok" => match answer.set_cookie {
            Some(cookie) => Ok(Some(cookie)),
            None => Err("login: no Set-Cookie".to_owned()),
        },
        _ => Err(format!("{}: unexpected body {body:?}", scenario.name())),
    }
}

/// The p-th percentile (0..=100) of sorted latencies, in milliseconds.
pub fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted_us.len() - 1) as f64).round() as usize;
    f64::from(sorted_us[rank.min(sorted_us.len() - 1)]) / 1000.0
}
