//! A blocking RESP2 client of a few dozen lines, for the harness's own commands on one
//! node by port (`CLUSTER NODES`, `INFO`, planting hashes, `MONITOR`, ...): independent
//! of fred, so it keeps working while fred reconnects or struggles with a topology, and
//! of std only, so the end-to-end bench shares it.
#![allow(dead_code, unreachable_pub)]

use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Self>>),
}

impl Reply {
    /// A status or bulk reply as (lossy UTF-8) text; `None` for anything else.
    pub fn text(&self) -> Option<String> {
        match self {
            Self::Status(s) => Some(s.clone()),
            Self::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// The reply as an integer, if it is one.
    pub fn int(&self) -> Option<i64> {
        match self {
            Self::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The elements of an array reply (empty for anything else).
    pub fn items(&self) -> &[Self] {
        match self {
            Self::Array(Some(items)) => items,
            _ => &[],
        }
    }

    /// A bulk reply's bytes.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }
}

/// A port nothing listens on right now, on 127.0.0.1 (a server started on it may still
/// lose a race for it: [`wait_ready`] notices).
pub fn free_port() -> u16 {
    // The port is free only until someone binds it, and the OS may hand it out again as
    // soon as it is released: never give one twice in this test process, so two servers
    // started by parallel tests never race for the same port.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free port on 127.0.0.1");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A blocking connection to one server (2 s to connect, 5 s per read and write).
pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(port: u16) -> io::Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    /// Sends one command and reads its reply. A Redis error is `Ok(Reply::Error(..))`.
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<Reply> {
        self.send(args)?;
        self.read()
    }

    /// Sends one command without reading its reply.
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<()> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            let arg = arg.as_ref();
            buf.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            buf.extend_from_slice(arg);
            buf.extend_from_slice(b"\r\n");
        }
        self.reader.get_mut().write_all(&buf)
    }

    /// The underlying stream (to change its timeouts, or shut it down from elsewhere).
    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    fn read_line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line)?;
        if !line.ends_with(b"\r\n") {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        line.truncate(line.len() - 2);
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    /// Reads one reply.
    pub fn read(&mut self) -> io::Result<Reply> {
        let line = self.read_line()?;
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad RESP line {line:?}"),
            )
        };
        let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
        Ok(match kind {
            "+" => Reply::Status(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Int(rest.parse().map_err(|_| bad())?),
            "$" => {
                let len: i64 = rest.parse().map_err(|_| bad())?;
                if len < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut data = vec![0; usize::try_from(len).map_err(|_| bad())? + 2];
                    self.reader.read_exact(&mut data)?;
                    data.truncate(data.len() - 2);
                    Reply::Bulk(Some(data))
                }
            }
            "*" => {
                let len: i64 = rest.parse().map_err(|_| bad())?;
                if len < 0 {
                    Reply::Array(None)
                } else {
                    let mut items = Vec::new();
                    for _ in 0..len {
                        items.push(self.read()?);
                    }
                    Reply::Array(Some(items))
                }
            }
            _ => return Err(bad()),
        })
    }
}

/// Sends one command to `127.0.0.1:port` on a fresh connection and reads the reply. A
/// Redis error reply is `Ok(Reply::Error(..))`.
pub fn command<A: AsRef<[u8]>>(port: u16, args: &[A]) -> io::Result<Reply> {
    Conn::open(port)?.cmd(args)
}

/// [`command`], panicking on an I/O or Redis error with the command in the message.
pub fn must<A: AsRef<[u8]>>(port: u16, args: &[A]) -> Reply {
    let shown = || {
        args.iter()
            .map(|a| {
                String::from_utf8_lossy(a.as_ref())
                    .chars()
                    .take(80)
                    .collect()
            })
            .collect::<Vec<String>>()
    };
    match command(port, args) {
        Ok(Reply::Error(e)) => panic!("{:?} on port {port}: {e}", shown()),
        Ok(reply) => reply,
        Err(e) => panic!("{:?} on port {port}: {e}", shown()),
    }
}

/// `INFO <section>` of a node as `field → value` pairs.
pub fn info(port: u16, section: &str) -> io::Result<Vec<(String, String)>> {
    let reply = command(port, &["INFO", section])?;
    let text = reply.text().unwrap_or_default();
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect())
}

/// One field of `INFO <section>`.
pub fn info_field(port: u16, section: &str, field: &str) -> Option<String> {
    info(port, section)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == field)
        .map(|(_, v)| v)
}

/// Waits until `port` answers `PING` with `PONG`, or `timeout` passes.
pub fn wait_for_ping(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, || {
        command(port, &["PING"]).is_ok_and(|r| r == Reply::Status("PONG".into()))
    })
}

/// Why a server the harness started is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// The process exited (e.g. it lost the race for its port).
    Exited,
    /// Another process answers on the port (`INFO server`'s `process_id`).
    Impostor(u32),
    /// Nothing answered `PING` in time.
    Timeout,
}

/// Waits until the server the harness started as `pid` answers on `port`: `PING` gives
/// `PONG` (not `LOADING`) and `INFO server` names `pid` as its `process_id`, so a test
/// never talks to another test's server that holds the port. `exited` says whether the
/// process has exited (checked on every poll).
pub fn wait_ready(
    port: u16,
    pid: u32,
    timeout: Duration,
    mut exited: impl FnMut() -> bool,
) -> Result<(), NotReady> {
    let deadline = Instant::now() + timeout;
    loop {
        if exited() {
            return Err(NotReady::Exited);
        }
        if command(port, &["PING"]).is_ok_and(|r| r == Reply::Status("PONG".into())) {
            match info_field(port, "server", "process_id").and_then(|p| p.parse::<u32>().ok()) {
                Some(p) if p == pid => return Ok(()),
                // The process may still be binding, or have lost the port: look again.
                Some(other) if Instant::now() >= deadline => return Err(NotReady::Impostor(other)),
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            return Err(NotReady::Timeout);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `ok` every 20 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
