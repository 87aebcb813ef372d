//! Test support for the tests that run the examples as real processes: build them, start
//! them on a free 127.0.0.1 port, wait until they listen, kill them (by their own PID)
//! when dropped, and talk HTTP to them.
//!
//! Like `support::reaper` does for the servers, a watchdog kills what is still running
//! when the test binary exits, however it exits; here it kills whole process groups, so
//! that the browser chromedriver started goes too.
#![allow(dead_code, unreachable_pub)]

use std::{
    fs::File,
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

pub use crate::support::free_port;

/// Scratch space under `target/` (never in git): logs, browser profiles, screenshots.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).expect("create a directory under target/tmp");
    dir
}

/// Builds the named examples with the features this test binary was built with (so the
/// library is not rebuilt with other ones) and returns the directory holding them.
///
/// `cargo test` builds the examples already, so this is usually a no-op that takes a
/// moment; it matters when a single test target runs (`cargo test --test examples`).
pub fn build_examples(names: &[&str]) -> PathBuf {
    // One build at a time: two tests in one binary building at once only wait on
    // cargo's lock anyway.
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());

    check_features_known();
    let features: Vec<&str> = FEATURES
        .iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "--no-default-features"])
        .arg("--features")
        .arg(features.join(","));
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    for name in names {
        cmd.args(["--example", name]);
    }
    let status = cmd.status().expect("run cargo to build the examples");
    assert!(status.success(), "building the examples {names:?} failed");

    // This test runs from target/<profile>/deps/; the examples are in
    // target/<profile>/examples/.
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    profile_dir.join("examples")
}

/// Every feature of the crate, and whether this test binary was built with it: the
/// examples are built with the same set, so the library is not rebuilt with another.
const FEATURES: &[(&str, bool)] = &[
    ("axum", cfg!(feature = "axum")),
    ("serde", cfg!(feature = "serde")),
    ("encryption", cfg!(feature = "encryption")),
    ("enable-rustls", cfg!(feature = "enable-rustls")),
    ("enable-native-tls", cfg!(feature = "enable-native-tls")),
    ("metrics", cfg!(feature = "metrics")),
];

/// Fails, naming it, if `Cargo.toml` declares a feature that [`FEATURES`] lacks (the
/// examples would be built without it, and the library rebuilt twice per test run).
fn check_features_known() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("read Cargo.toml");
    let declared = manifest
        .split("\n[features]\n")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap_or_default();
    for line in declared.lines() {
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        let name = name.trim();
        assert!(
            name == "default" || name.starts_with('#') || FEATURES.iter().any(|(f, _)| *f == name),
            "feature `{name}` is missing from FEATURES in tests/support/process.rs: add it there"
        );
    }
}

/// A child process, killed and reaped when dropped. Its stdout and stderr go to a log
/// file, shown when something about it fails.
///
/// It runs in a process group of its own (whose ID is its PID), and dropping it sends
/// SIGKILL to that group: a browser that chromedriver started goes with it, even when
/// the test fails before closing the WebDriver session.
pub struct Process {
    /// For messages and the log file's name.
    name: String,
    /// `None` once it has exited and been reaped.
    child: Option<Child>,
    /// Where its stdout and stderr go.
    log: PathBuf,
}

impl Process {
    /// Starts `program` with `args` and the extra environment `env`.
    pub fn start(name: &str, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = scratch_dir("logs").join(format!("{name}-{}.log", std::process::id()));
        let out = File::create(&log).expect("create the process log");
        let err = out.try_clone().expect("clone the log handle");
        let mut cmd = Command::new(program);
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        crate::support::reaper::kill_group_on_exit(child.id());
        Self {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    /// The process's output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the process has printed `needle` (e.g. its own "listening on" line:
    /// a port that answers may be another process's, when a parallel test or program
    /// took it first). `Err` with its output if it exits first or `timeout` passes.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while !self.output().contains(needle) {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                return Err(format!(
                    "{} did not print {needle:?} ({}); its output:\n{}",
                    self.name,
                    exited.map_or("timed out".to_owned(), |s| format!("exited, {s}")),
                    self.output()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Waits until something accepts connections on `127.0.0.1:port`, failing (with the
    /// process's output) if the process exits or `timeout` passes first.
    pub fn wait_for_port(&mut self, port: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} exited ({status}) before listening on port {port}; its output:\n{}",
                    self.name,
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on port {port} within {timeout:?}; its output:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit by itself (within `timeout`) and returns whether it
    /// succeeded, with its output.
    pub fn wait_exit(&mut self, timeout: Duration) -> (bool, String) {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("the process was started");
        loop {
            if let Some(status) = child.try_wait().expect("poll the process") {
                crate::support::reaper::forget_group(child.id());
                self.child = None;
                return (status.success(), self.output());
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {timeout:?}; its output:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The group first (while the PID is still ours, as the child is unreaped),
            // then the child itself in case the group kill could not run.
            #[cfg(unix)]
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
            crate::support::reaper::forget_group(child.id());
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: http::HeaderMap,
    /// The body, as (lossy) UTF-8.
    pub body: String,
}

impl Reply {
    /// The value of `name`'s cookie in this response's `Set-Cookie`, if it sets one
    /// (`Some("")` for a removal).
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| {
                let (n, v) = c.split(';').next()?.split_once('=')?;
                (n.trim() == name).then(|| v.trim().to_owned())
            })
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one HTTP/1.1 request to `url` with `headers` and `body`, and reads the whole
/// response. Fails the test after 10 s.
pub async fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("a well-formed request");
    let send = async {
        let res = client
            .request(req)
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let (parts, body) = res.into_parts();
        let body = body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: reading the body: {e}"))
            .to_bytes();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), send)
        .await
        .unwrap_or_else(|_| panic!("{method} {url}: no answer within 10 s"))
}
