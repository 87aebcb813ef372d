//! A blocking RESP2 client of a few dozen lines, for the harness's own admin commands
//! (`CLUSTER NODES`, `INFO replication`, `CLUSTER FAILOVER`, ...) on one node by port:
//! independent of fred, so the harness can watch a topology that fred is struggling with.

use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Option<Vec<Self>>),
}

impl Reply {
    /// The reply as text (status or bulk string); `None` for anything else.
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Status(s) | Self::Bulk(Some(s)) => Some(s),
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
}

/// A port nothing listens on right now, on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// Sends one command to `127.0.0.1:port` on a fresh connection and reads the reply
/// (2 s timeouts). A Redis error reply is `Ok(Reply::Error(..))`.
pub fn command(port: u16, args: &[&str]) -> io::Result<Reply> {
    let addr = ("127.0.0.1", port);
    let stream = TcpStream::connect_timeout(
        &std::net::ToSocketAddrs::to_socket_addrs(&addr)?
            .next()
            .expect("an address"),
        Duration::from_secs(2),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    (&stream).write_all(&out)?;
    read_reply(&mut BufReader::new(stream))
}

/// [`command`], panicking on an I/O or Redis error with the command in the message.
pub fn must(port: u16, args: &[&str]) -> Reply {
    match command(port, args) {
        Ok(Reply::Error(e)) => panic!("{args:?} on port {port}: {e}"),
        Ok(reply) => reply,
        Err(e) => panic!("{args:?} on port {port}: {e}"),
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

fn read_reply(r: &mut BufReader<TcpStream>) -> io::Result<Reply> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']);
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
                let mut buf = vec![0; usize::try_from(len).map_err(|_| bad())? + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(buf.len() - 2);
                Reply::Bulk(Some(String::from_utf8_lossy(&buf).into_owned()))
            }
        }
        "*" => {
            let len: i64 = rest.parse().map_err(|_| bad())?;
            if len < 0 {
                Reply::Array(None)
            } else {
                let mut items = Vec::new();
                for _ in 0..len {
                    items.push(read_reply(r)?);
                }
                Reply::Array(Some(items))
            }
        }
        _ => return Err(bad()),
    })
}
