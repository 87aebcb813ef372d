//! Bounded load for the fault tests: increments (`POST /incr/n`) at a fixed rate across a
//! set of sessions, every request timed and its outcome kept, then a check that every
//! acknowledged increment is in Redis.

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use http::StatusCode;
use tokio::task::JoinHandle;

use super::TestApp;

/// Prints a fault test's figures and keeps them in
/// `target/tmp/fault-figures/<name>.txt`.
pub fn record(name: &str, figures: &str) {
    println!("--- {name}\n{figures}");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fault-figures");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{name}.txt")), format!("{figures}\n"));
}

/// What happened to one request.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Index of the session in the load's list.
    pub session: usize,
    /// When the request was sent and answered, since the load's `t0`.
    pub started: Duration,
    pub finished: Duration,
    pub status: StatusCode,
    /// The response set a new session cookie: the request found its session gone and
    /// started a fresh one, so its increment is not the old session's.
    pub new_session: bool,
    /// The store error behind a 5xx, as text.
    pub error: Option<String>,
}

impl Outcome {
    /// A `200` for the session the request was sent for: its increment was acknowledged.
    pub fn acked(&self) -> bool {
        self.status == StatusCode::OK && !self.new_session
    }
}

/// Requests in flight; [`Load::stop`] waits for them all.
pub struct Load {
    stop: Arc<AtomicBool>,
    sender: JoinHandle<Vec<JoinHandle<Outcome>>>,
    t0: Instant,
}

impl Load {
    /// Starts sending `per_second` increments a second, round-robin over `sessions`,
    /// each in its own task, until `max` are sent or [`stop`](Self::stop) is called. Times
    /// are measured from `t0`.
    pub fn start(
        app: Arc<TestApp>,
        sessions: Arc<Vec<String>>,
        per_second: u32,
        max: usize,
        t0: Instant,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let period = Duration::from_secs(1) / per_second;
        let sender = {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut tasks = Vec::new();
                let start = tokio::time::Instant::now();
                for i in 0..max {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    tokio::time::sleep_until(start + period * u32::try_from(i).unwrap()).await;
                    let session = i % sessions.len();
                    let (app, sid) = (Arc::clone(&app), sessions[session].clone());
                    tasks.push(tokio::spawn(async move {
                        let started = t0.elapsed();
                        let res = app.post("/incr/n", Some(&sid)).await;
                        Outcome {
                            session,
                            started,
                            finished: t0.elapsed(),
                            status: res.status,
                            new_session: res.new_id().is_some(),
                            error: res.error,
                        }
                    }));
                }
                tasks
            })
        };
        Self { stop, sender, t0 }
    }

    /// Waits until every request sent so far is answered.
    pub async fn finish(self) -> Report {
        let tasks = self.sender.await.expect("the load sender panicked");
        let mut outcomes = Vec::with_capacity(tasks.len());
        for task in tasks {
            outcomes.push(task.await.expect("a load request panicked"));
        }
        outcomes.sort_by_key(|o| o.started);
        Report {
            outcomes,
            t0: self.t0,
        }
    }

    /// Stops sending and waits until every request sent is answered.
    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        self.finish().await
    }
}

/// Every request's outcome, in the order they were sent.
pub struct Report {
    pub outcomes: Vec<Outcome>,
    pub t0: Instant,
}

impl Report {
    pub fn sent(&self) -> usize {
        self.outcomes.len()
    }

    pub fn ok(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.status == StatusCode::OK)
            .count()
    }

    pub fn server_errors(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.status.is_server_error())
            .count()
    }

    /// Statuses other than 200 and 5xx (there should be none).
    pub fn others(&self) -> Vec<StatusCode> {
        self.outcomes
            .iter()
            .map(|o| o.status)
            .filter(|s| *s != StatusCode::OK && !s.is_server_error())
            .collect()
    }

    /// Requests that found their session gone and started a new one.
    pub fn new_sessions(&self) -> usize {
        self.outcomes.iter().filter(|o| o.new_session).count()
    }

    /// The store errors behind the failures, most frequent first, with their counts.
    pub fn errors(&self) -> Vec<(String, usize)> {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for o in &self.outcomes {
            if let Some(e) = &o.error {
                *counts.entry(e.clone()).or_default() += 1;
            }
        }
        let mut out: Vec<_> = counts.into_iter().collect();
        out.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
        out
    }

    /// The slowest answer.
    pub fn max_latency(&self) -> Duration {
        self.outcomes
            .iter()
            .map(|o| o.finished - o.started)
            .max()
            .unwrap_or_default()
    }

    /// The last request that failed: when it was sent.
    pub fn last_failure(&self) -> Option<&Outcome> {
        self.outcomes
            .iter()
            .rev()
            .find(|o| o.status != StatusCode::OK)
    }

    /// Failed requests sent within `[from, to)` (times since `t0`).
    pub fn failures_between(&self, from: Duration, to: Duration) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.status != StatusCode::OK && o.started >= from && o.started < to)
            .count()
    }

    /// Requests sent within `[from, to)`.
    pub fn sent_between(&self, from: Duration, to: Duration) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.started >= from && o.started < to)
            .count()
    }

    /// How long after `since` the service recovered: the time from `since` to the first
    /// request after which every request sent succeeded. `None` if the last request
    /// failed. Zero if nothing failed after `since`.
    pub fn recovery_after(&self, since: Duration) -> Option<Duration> {
        let last_failed = self
            .outcomes
            .iter()
            .rposition(|o| o.status != StatusCode::OK && o.started >= since);
        match last_failed {
            None => Some(Duration::ZERO),
            Some(i) => self
                .outcomes
                .get(i + 1)
                .map(|o| o.started.saturating_sub(since)),
        }
    }

    /// Acknowledged increments per session.
    pub fn acked_per_session(&self, sessions: usize) -> Vec<u64> {
        let mut acked = vec![0; sessions];
        for o in self.outcomes.iter().filter(|o| o.acked()) {
            acked[o.session] += 1;
        }
        acked
    }

    /// Increments sent per session (acknowledged or not: a failed one may have landed).
    pub fn sent_per_session(&self, sessions: usize) -> Vec<u64> {
        let mut sent = vec![0; sessions];
        for o in &self.outcomes {
            sent[o.session] += 1;
        }
        sent
    }

    /// Compares Redis with what was acknowledged: `stored[i]` is session `i`'s counter in
    /// Redis (`None` if its key is gone).
    pub fn audit(&self, stored: &[Option<u64>]) -> Audit {
        let acked = self.acked_per_session(stored.len());
        let sent = self.sent_per_session(stored.len());
        let mut audit = Audit::default();
        for (i, value) in stored.iter().enumerate() {
            match *value {
                None => audit.lost_sessions.push(i),
                Some(n) if n < acked[i] => {
                    audit.short_sessions.push(i);
                    audit.lost_increments += acked[i] - n;
                }
                Some(n) if n > sent[i] => audit.impossible.push(i),
                Some(n) => audit.applied_unacked += n - acked[i],
            }
        }
        audit
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests: {} ok, {} 5xx, {} other; {} started a new session; slowest {:?}",
            self.sent(),
            self.ok(),
            self.server_errors(),
            self.others().len(),
            self.new_sessions(),
            self.max_latency()
        )?;
        for (error, count) in self.errors() {
            write!(f, "\n  {count} × {error}")?;
        }
        Ok(())
    }
}

/// What Redis holds against what was acknowledged.
#[derive(Debug, Default)]
pub struct Audit {
    /// Sessions whose key is gone.
    pub lost_sessions: Vec<usize>,
    /// Sessions whose counter is below their acknowledged increments.
    pub short_sessions: Vec<usize>,
    /// Acknowledged increments missing, summed.
    pub lost_increments: u64,
    /// Increments that failed (5xx, outcome unknown) but were applied anyway: the
    /// at-least-once side of a timeout.
    pub applied_unacked: u64,
    /// Sessions with more increments than were ever sent (a bug).
    pub impossible: Vec<usize>,
}

impl Audit {
    /// Sessions that lost anything acknowledged.
    pub fn lost(&self) -> Vec<usize> {
        let mut lost: Vec<usize> = self
            .lost_sessions
            .iter()
            .chain(&self.short_sessions)
            .copied()
            .collect();
        lost.sort_unstable();
        lost
    }
}

impl fmt::Display for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} sessions gone, {} sessions short of {} acknowledged increments, {} unacknowledged increments applied anyway",
            self.lost_sessions.len(),
            self.short_sessions.len(),
            self.lost_increments,
            self.applied_unacked
        )
    }
}

/// Starts `count` sessions (one request each), returning their IDs.
pub async fn start_sessions(app: &TestApp, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let res = app.post("/set/n/0", None).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.body);
        ids.push(res.new_id().expect("a new session"));
    }
    ids
}

/// Each session's counter as Redis holds it now (`None` if the key is gone).
pub async fn stored_counters(app: &TestApp, sessions: &[String]) -> Vec<Option<u64>> {
    let mut out = Vec::with_capacity(sessions.len());
    for id in sessions {
        let hash = app.hash(id).await;
        out.push(if hash.is_empty() {
            None
        } else {
            Some(hash.get("n").and_then(|n| n.parse().ok()).unwrap_or(0))
        });
    }
    out
}

/// Reads every session (`GET /read/n`, no change) in rounds until a whole round
/// succeeds, or `deadline` passes. Returns when the successful round started.
pub async fn wait_all_succeed(
    app: &TestApp,
    sessions: &[String],
    deadline: Instant,
) -> Option<Instant> {
    loop {
        let round = Instant::now();
        let mut all_ok = true;
        for id in sessions {
            let res = app.get("/read/n", Some(id)).await;
            if res.status != StatusCode::OK {
                all_ok = false;
                break;
            }
        }
        if all_ok {
            return Some(round);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What [`kill_under_load`] measured.
pub struct Failover {
    pub report: Report,
    /// When the primary was killed, since the load's start.
    pub killed_at: Duration,
    /// How long after the kill the topology had a new primary.
    pub promoted_after: Duration,
    /// How long after the kill every request succeeded again.
    pub recovery: Duration,
    /// Each session's counter in Redis afterwards.
    pub stored: Vec<Option<u64>>,
    pub audit: Audit,
}

impl Failover {
    /// Sessions that lost acknowledged increments other than ones the dead primary
    /// acknowledged in its last second (which async replication may not have carried to
    /// the replica), or that were not on the dead primary at all (`on_victim`).
    pub fn unexplained_losses(&self, on_victim: impl Fn(usize) -> bool) -> Vec<String> {
        let acked = self.report.acked_per_session(self.stored.len());
        let last_second = self.killed_at.saturating_sub(Duration::from_secs(1));
        let mut out = Vec::new();
        for i in self.audit.lost() {
            let missing = acked[i] - self.stored[i].unwrap_or(0);
            let recent = self
                .report
                .outcomes
                .iter()
                .filter(|o| o.session == i && o.acked())
                .filter(|o| o.finished >= last_second && o.started <= self.killed_at)
                .count() as u64;
            if !on_victim(i) || missing > recent {
                out.push(format!(
                    "session {i}: {missing} acknowledged increments missing, {recent} acknowledged in the primary's last second, on the killed primary: {}",
                    on_victim(i)
                ));
            }
        }
        out
    }

    /// The checks of every failover: no answer but 200 and 5xx, nothing impossible in
    /// Redis, no loss [`unexplained_losses`](Self::unexplained_losses) does not explain,
    /// and no request took longer than three command timeouts (`timeout`) and a half
    /// second.
    pub fn assert_kept_promises(&self, timeout: Duration, on_victim: impl Fn(usize) -> bool) {
        let report = &self.report;
        assert!(report.others().is_empty(), "{:?}", report.others());
        assert!(self.audit.impossible.is_empty(), "{:?}", self.audit);
        let unexplained = self.unexplained_losses(on_victim);
        assert!(unexplained.is_empty(), "{unexplained:#?}");
        assert!(
            report.max_latency() < timeout * 3 + Duration::from_millis(500),
            "requests fail fast: the slowest took {:?}",
            report.max_latency()
        );
    }
}

/// 2,000 increments over 5 s (400 a second) across `sessions`; 1 s in, `kill` runs (on a
/// blocking thread), then `promoted` is polled until a new primary serves (30 s at most).
/// Waits for every request, then until every session can be read again (30 s at most),
/// and audits Redis against what was acknowledged.
pub async fn kill_under_load(
    app: Arc<TestApp>,
    sessions: Arc<Vec<String>>,
    kill: impl FnOnce() + Send + 'static,
    mut promoted: impl FnMut() -> bool + Send + 'static,
) -> Failover {
    let t0 = Instant::now();
    let load = Load::start(Arc::clone(&app), Arc::clone(&sessions), 400, 2_000, t0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = t0.elapsed();
    let promoted_after = tokio::task::spawn_blocking(move || {
        kill();
        let killed = Instant::now();
        assert!(
            super::resp::wait_until(Duration::from_secs(30), &mut promoted),
            "no new primary within 30 s of the kill"
        );
        killed.elapsed()
    })
    .await
    .expect("the harness's kill and watch");
    let report = load.finish().await;
    let recovery = match report.recovery_after(killed_at) {
        Some(recovery) => recovery,
        // The load ended before the service came back: read until it has.
        None => {
            let deadline = Instant::now() + Duration::from_secs(30);
            let round = wait_all_succeed(&app, &sessions, deadline)
                .await
                .expect("every session readable again within 30 s of the load's end");
            round.duration_since(t0) - killed_at
        }
    };
    // Everything is served after the failover, with no app restart.
    assert!(
        wait_all_succeed(&app, &sessions, Instant::now() + Duration::from_secs(10))
            .await
            .is_some(),
        "every session is served after the failover"
    );
    let stored = stored_counters(&app, &sessions).await;
    let audit = report.audit(&stored);
    Failover {
        report,
        killed_at,
        promoted_after,
        recovery,
        stored,
        audit,
    }
}
