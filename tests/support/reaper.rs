//! Servers outlive nothing: every process the harness starts is registered with a
//! watchdog that kills it (by PID, or its whole process group) when the test binary
//! exits, however it exits. The one watchdog of every test binary: `support/mod.rs`,
//! `support/process.rs` and `support/hardening.rs` all register here.
//!
//! A `static` (the shared cluster) is never dropped, and a binary killed by a signal runs
//! no destructor, so `Drop` alone would leave `redis-server`s behind. The watchdog is a
//! `sh` reading PIDs and directories from a pipe whose only writer is this process: when
//! the test binary ends, normally, by panic or by SIGKILL, the kernel closes the pipe,
//! `read` sees end-of-file, and the watchdog kills what is still registered and removes
//! the directories. It ignores SIGINT/SIGHUP/SIGTERM so that a Ctrl-C to the process
//! group does not take it down before it has done its job. Processes stopped by the
//! tests themselves are unregistered first, so a recycled PID is never killed.

#![allow(dead_code, unreachable_pub)]

use std::{
    io::Write as _,
    path::Path,
    process::{ChildStdin, Command, Stdio},
    sync::{Mutex, OnceLock},
};

const SCRIPT: &str = r#"
trap '' INT HUP TERM
pids=' '
groups=' '
dirs=''
while read -r op arg; do
  case "$op" in
    pid) pids="$pids$arg " ;;
    unpid) pids=$(printf '%s' "$pids" | sed "s/ $arg / /g") ;;
    group) groups="$groups$arg " ;;
    ungroup) groups=$(printf '%s' "$groups" | sed "s/ $arg / /g") ;;
    dir) dirs="$dirs $arg" ;;
  esac
done
for g in $groups; do kill -9 "-$g" 2>/dev/null; done
for p in $pids; do kill -9 "$p" 2>/dev/null; done
sleep 0.2
for d in $dirs; do rm -rf "$d"; done
"#;

fn watchdog() -> &'static Mutex<Option<ChildStdin>> {
    static WATCHDOG: OnceLock<Mutex<Option<ChildStdin>>> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        // The pipe's write end is close-on-exec (std creates it so), so no server started
        // later inherits it and keeps the watchdog waiting.
        let stdin = Command::new("sh")
            .args(["-c", SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
            .and_then(|mut child| child.stdin.take());
        Mutex::new(stdin)
    })
}

fn send(line: &str) {
    let mut guard = watchdog().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(stdin) = guard.as_mut() {
        let _ = writeln!(stdin, "{line}");
    }
}

/// Kill `pid` when the test binary exits, unless [`forget`] is called first.
pub fn kill_on_exit(pid: u32) {
    send(&format!("pid {pid}"));
}

/// The process is gone (stopped by the test): never kill that PID.
pub fn forget(pid: u32) {
    send(&format!("unpid {pid}"));
}

/// Kill the process group `pgid` (e.g. chromedriver and the browsers it starts) when the
/// test binary exits, unless [`forget_group`] is called first.
pub fn kill_group_on_exit(pgid: u32) {
    send(&format!("group {pgid}"));
}

/// The process group is gone (stopped by the test): never kill it.
pub fn forget_group(pgid: u32) {
    send(&format!("ungroup {pgid}"));
}

/// Remove `dir` (a scratch directory without spaces) when the test binary exits.
pub fn remove_on_exit(dir: &Path) {
    let dir = dir.display().to_string();
    assert!(
        !dir.contains(char::is_whitespace),
        "scratch directory with a space: {dir:?}"
    );
    send(&format!("dir {dir}"));
}

/// A server process started by the harness: registered with the watchdog, killed (SIGKILL
/// to its own PID) by [`kill`](Self::kill) or when dropped.
pub struct Daemon {
    child: Option<std::process::Child>,
    what: String,
}

impl Daemon {
    /// Starts `program args...` with its output discarded (servers log to a file of their
    /// own), or panics with one line saying what to install.
    pub fn spawn(program: &str, args: &[String]) -> Self {
        let child = match Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "{program} not found: install it with `apt-get install -y redis-server redis-sentinel redis-tools` (or run scripts/test)"
            ),
            Err(e) => panic!("cannot start {program}: {e}"),
        };
        kill_on_exit(child.id());
        Self {
            what: format!("{program} {}", args.join(" ")),
            child: Some(child),
        }
    }

    /// The process's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// `true` once the process has exited (e.g. it could not bind its port).
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// SIGKILL to the process's own PID; waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            forget(child.id());
        }
    }

    /// The command line, for failure messages.
    pub fn describe(&self) -> &str {
        &self.what
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}
