//! What clients send to a server, seen through `MONITOR`: every command a client sent
//! is one line, and every command a script ran is tagged `lua`, so a round-trip count
//! is what the client sent, whatever the command.
#![allow(dead_code, unreachable_pub)]

use std::{
    io,
    net::Shutdown,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::resp::{Conn, Reply};

/// One command `MONITOR` showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The command's name, lower-case (`evalsha`, `hgetall`, `script`, ...).
    pub command: String,
    /// Run inside a script (`[0 lua]`) rather than sent by a client.
    pub in_script: bool,
    /// The whole line, for failure messages.
    pub line: String,
}

/// A `MONITOR` connection to one server, read by a thread of its own.
pub struct Monitor {
    port: u16,
    conn: std::net::TcpStream,
    seen: Arc<Mutex<Vec<Seen>>>,
    reader: Option<JoinHandle<()>>,
}

/// The argument of the harness's own `ECHO`, which marks "everything before this is seen".
const MARK: &str = "trs-monitor-mark-";

impl Monitor {
    /// Starts watching `127.0.0.1:port`; returns once the server streams to it.
    pub fn start(port: u16) -> io::Result<Self> {
        let mut conn = Conn::open(port)?;
        let reply = conn.cmd(&["MONITOR"])?;
        if reply != Reply::Status("OK".into()) {
            return Err(io::Error::other(format!("MONITOR: {reply:?}")));
        }
        conn.stream().set_read_timeout(None)?;
        let handle = conn.stream().try_clone()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                while let Ok(reply) = conn.read() {
                    let Reply::Status(line) = reply else { continue };
                    if let Some(cmd) = parse(&line) {
                        seen.lock().unwrap_or_else(|e| e.into_inner()).push(cmd);
                    }
                }
            })
        };
        Ok(Self {
            port,
            conn: handle,
            seen,
            reader: Some(reader),
        })
    }

    /// Every command run since the last call (or the start), once the server has shown
    /// everything it ran before this call: it sends a marker on a connection of its own
    /// and waits for it to come through. The marker itself is left out.
    pub fn take(&self) -> Vec<Seen> {
        static N: AtomicU64 = AtomicU64::new(0);
        let mark = format!(
            "{MARK}{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let reply = Conn::open(self.port).and_then(|mut c| c.cmd(&["ECHO", &mark]));
        assert!(
            matches!(reply, Ok(Reply::Bulk(_))),
            "ECHO to port {}: {reply:?}",
            self.port
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            {
                let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(at) = seen.iter().position(|s| s.line.contains(&mark)) {
                    let mut out: Vec<Seen> = seen.drain(..=at).collect();
                    out.pop();
                    out.retain(|s| !(s.command == "echo" && s.line.contains(MARK)));
                    return out;
                }
            }
            assert!(
                Instant::now() < deadline,
                "MONITOR on port {} did not show the marker within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// [`take`](Self::take), then stops watching.
    pub fn finish(mut self) -> Vec<Seen> {
        let out = self.take();
        self.stop();
        out
    }

    fn stop(&mut self) {
        let _ = self.conn.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `1795439244.670562 [0 127.0.0.1:36516] "evalsha" "..." "0"`, or `[0 lua]` for a
/// command a script ran.
fn parse(line: &str) -> Option<Seen> {
    let (_, rest) = line.split_once(" [")?;
    let (source, args) = rest.split_once("] ")?;
    let command = args
        .strip_prefix('"')?
        .split('"')
        .next()?
        .to_ascii_lowercase();
    Some(Seen {
        command,
        in_script: source.ends_with(" lua"),
        line: line.to_owned(),
    })
}

/// The commands clients sent, leaving out those scripts ran and those named in
/// `harness` (the test's own `INFO`s, replicas' `REPLCONF`, ...).
pub fn sent_by_clients<'a>(
    seen: &'a [Seen],
    harness: &'a [&str],
) -> impl Iterator<Item = &'a Seen> {
    seen.iter()
        .filter(move |s| !s.in_script && !harness.contains(&s.command.as_str()))
}
