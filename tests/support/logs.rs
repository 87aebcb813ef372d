//! The `tracing` output of one test, captured as text: [`Logs::during`] runs a future
//! (a request) with the capturing subscriber as its dispatcher, on whichever worker
//! thread polls it; [`Logs::on_this_thread`] makes it this thread's default (for a
//! `current_thread` runtime). Other tests' events never land in it.
#![allow(dead_code, unreachable_pub)]

use std::{
    future::Future,
    sync::{Arc, Mutex},
};

use tracing::{instrument::WithSubscriber as _, subscriber::DefaultGuard, Dispatch, Level};

/// Captured log lines of one test (`fmt` format, no colours: `... WARN target: message
/// field=value`).
#[derive(Clone)]
pub struct Logs {
    buf: Arc<Mutex<Vec<u8>>>,
    dispatch: Dispatch,
}

#[derive(Clone)]
struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Captures events at `level` and above (`Level::TRACE` for everything).
    pub fn capture(level: Level) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Writer(Arc::clone(&buf));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        Self {
            buf,
            dispatch: Dispatch::new(subscriber),
        }
    }

    /// Runs `fut` with the capture as its dispatcher (wherever it is polled).
    pub async fn during<F: Future>(&self, fut: F) -> F::Output {
        fut.with_subscriber(self.dispatch.clone()).await
    }

    /// Makes the capture this thread's default until the guard is dropped.
    pub fn on_this_thread(&self) -> DefaultGuard {
        tracing::dispatcher::set_default(&self.dispatch)
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// The captured lines at `level` (`"WARN"`, `"ERROR"`, ...).
    pub fn lines_at(&self, level: &str) -> Vec<String> {
        let tag = format!(" {level} ");
        self.text()
            .lines()
            .filter(|l| l.contains(&tag))
            .map(str::to_owned)
            .collect()
    }

    /// Fails if any captured line holds one of `ids` (raw session IDs: the logs may name
    /// a session only by a digest).
    pub fn assert_no_raw_ids<S: AsRef<str>>(&self, ids: &[S]) {
        let text = self.text();
        for line in text.lines() {
            for id in ids {
                assert!(
                    !line.contains(id.as_ref()),
                    "raw session ID in a log line: {line}"
                );
            }
        }
    }

    /// Forgets what was captured so far.
    pub fn clear(&self) {
        self.buf.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
