//! A `redis-server` of the caller's own on 127.0.0.1: started on a free port, checked to
//! be the process it started before use, signalled by its own PID (SIGKILL, SIGSTOP,
//! SIGCONT), restarted on the same port and directory (so an AOF there survives), and
//! killed when dropped or when the binary exits ([`reaper`](super::reaper)).
//!
//! std only, so the end-to-end bench shares it (with `resp.rs` and `reaper.rs`).
#![allow(dead_code, unreachable_pub)]

use std::{
    io,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use super::{
    reaper::{self, Daemon},
    resp::{self, free_port, Conn, NotReady, Reply},
};

/// A `redis-server` on 127.0.0.1 with RDB snapshots and the AOF off unless the extra
/// arguments say otherwise.
pub struct RedisServer {
    daemon: Option<Daemon>,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl RedisServer {
    /// Starts a server and waits until it is ready.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments (e.g. `["--maxmemory", "1mb"]`)
    /// and waits until it is ready. A server that loses the race for its port is started
    /// again on another one.
    pub fn start_with(args: &[&str]) -> Self {
        let mut server = Self::reserve(args);
        for _ in 0..5 {
            match server.try_spawn() {
                Ok(()) => return server,
                Err(NotReady::Exited | NotReady::Impostor(_)) => {
                    server.kill();
                    server.port = free_port();
                }
                Err(NotReady::Timeout) => break,
            }
        }
        panic!(
            "redis-server did not come up on port {}: {}",
            server.port,
            server.log_tail()
        );
    }

    /// A port and directory for a server that is not started yet ([`spawn`](Self::spawn)
    /// starts it): for an app that starts while Redis is down.
    pub fn reserve(args: &[&str]) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "trs-redis-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        reaper::remove_on_exit(&dir);
        Self {
            daemon: None,
            port,
            dir,
            args: args.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// Starts (or restarts) the server on its port and directory, so an AOF written
    /// there is loaded, and waits until it is ready: it answers `PING` (not `LOADING`)
    /// and is the process started here.
    pub fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!(
                "redis-server on port {} is not ready ({e:?}): {}",
                self.port,
                self.log_tail()
            );
        }
    }

    fn try_spawn(&mut self) -> Result<(), NotReady> {
        assert!(self.daemon.is_none(), "the server is running");
        let mut args = server_args(
            self.port,
            &self.dir,
            "redis.log",
            &["--protected-mode", "yes"],
        );
        args.extend(self.args.iter().cloned());
        let daemon = Daemon::spawn("redis-server", &args);
        let pid = daemon.pid().expect("just started");
        let daemon = self.daemon.insert(daemon);
        resp::wait_ready(self.port, pid, Duration::from_secs(20), || {
            daemon.has_exited()
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The PID of the running server.
    pub fn pid(&self) -> u32 {
        self.daemon
            .as_ref()
            .and_then(Daemon::pid)
            .expect("the server is running")
    }

    /// SIGKILL to the server's own PID; waits until it is gone. Its directory stays.
    pub fn kill(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.kill();
        }
    }

    /// [`kill`](Self::kill).
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Kills the server and starts it again on the same port and directory (an empty
    /// dataset unless the AOF is on).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGSTOP: the server keeps its connections open and answers nothing.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// One command on a fresh connection; panics if the server cannot be reached.
    pub fn cmd<A: AsRef<[u8]>>(&self, args: &[A]) -> Reply {
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("redis on port {}: {e}", self.port))
    }

    /// One command on a fresh connection.
    pub fn try_cmd<A: AsRef<[u8]>>(&self, args: &[A]) -> io::Result<Reply> {
        resp::command(self.port, args)
    }

    /// A connection of its own (e.g. to hold a client slot).
    pub fn conn(&self) -> Conn {
        Conn::open(self.port).expect("connect to redis")
    }

    /// `INFO section` as text.
    pub fn info(&self, section: &str) -> String {
        self.cmd(&["INFO", section]).text().unwrap_or_default()
    }

    /// One field of `INFO section` (e.g. `used_memory`).
    pub fn info_field(&self, section: &str, field: &str) -> String {
        resp::info_field(self.port, section, field).unwrap_or_default()
    }

    /// Calls per command since the last `CONFIG RESETSTAT`, per `INFO commandstats`
    /// (commands scripts ran included).
    pub fn command_calls(&self) -> Vec<(String, u64)> {
        self.info("commandstats")
            .lines()
            .filter_map(|line| {
                let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
                Some((name.to_owned(), calls.parse().ok()?))
            })
            .collect()
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<_> = log.lines().rev().take(15).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The arguments of a test's `redis-server`: on `port` at 127.0.0.1, nothing saved to
/// disk, working in `dir` and logging to `log` there; then `extra`.
pub fn server_args(port: u16, dir: &std::path::Path, log: &str, extra: &[&str]) -> Vec<String> {
    let (port, dir) = (port.to_string(), dir.display().to_string());
    let logfile = format!("{dir}/{log}");
    let base = [
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir,
        "--logfile",
        &logfile,
    ];
    base.iter().chain(extra).map(|s| (*s).to_owned()).collect()
}
