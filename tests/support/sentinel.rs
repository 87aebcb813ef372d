//! A local Sentinel group: one primary, one replica and three sentinels on 127.0.0.1,
//! monitoring the primary as `mymaster` (quorum 2, down after 1 s).

use std::{
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::{
    reaper::{self, Daemon},
    resp::{self, free_port, Reply},
};

pub const SERVICE: &str = "mymaster";

/// How long a sentinel waits before it calls an unreachable primary down.
pub const DOWN_AFTER_MS: u64 = 1_000;

pub struct SentinelGroup {
    dir: PathBuf,
    /// The data nodes (`redis-server`), primary first, by port.
    servers: Vec<(u16, Mutex<Option<Daemon>>)>,
    pub sentinels: Vec<u16>,
    sentinel_daemons: Vec<Daemon>,
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl SentinelGroup {
    /// Starts the primary and its replica, waits for the replica's sync, starts the
    /// sentinels and waits until each knows the primary, the replica and the other two
    /// (blocking: a few seconds).
    pub fn start() -> Self {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("trs-sentinel-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the group's directory");
        reaper::remove_on_exit(&dir);
        let mut ports = std::collections::BTreeSet::new();
        while ports.len() < 5 {
            ports.insert(free_port());
        }
        let ports: Vec<u16> = ports.into_iter().collect();
        let (primary, replica) = (ports[0], ports[1]);
        let mut group = Self {
            dir,
            servers: vec![(primary, Mutex::new(None)), (replica, Mutex::new(None))],
            sentinels: ports[2..].to_vec(),
            sentinel_daemons: Vec::new(),
        };
        group.spawn_server(primary, None);
        group.spawn_server(replica, Some(primary));
        let synced = resp::wait_until(Duration::from_secs(10), || {
            resp::info_field(replica, "replication", "master_link_status").as_deref() == Some("up")
        });
        assert!(synced, "the replica did not sync within 10 s");
        for i in 0..3 {
            let port = group.sentinels[i];
            let conf = group.dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel-{port}.log\n\
                     sentinel resolve-hostnames no\n\
                     sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n\
                     sentinel failover-timeout {SERVICE} 5000\n\
                     sentinel parallel-syncs {SERVICE} 1\n",
                    dir = group.dir.display()
                ),
            )
            .expect("write a sentinel configuration");
            group.sentinel_daemons.push(Daemon::spawn(
                "redis-sentinel",
                &[conf.display().to_string()],
            ));
        }
        let started = Instant::now();
        let ready = resp::wait_until(Duration::from_secs(30), || {
            group.sentinels.iter().all(|&s| {
                let replicas = resp::command(s, &["SENTINEL", "REPLICAS", SERVICE]);
                let peers = resp::command(s, &["SENTINEL", "SENTINELS", SERVICE]);
                matches!((replicas, peers), (Ok(r), Ok(p)) if r.items().len() == 1 && p.items().len() == 2)
            })
        });
        assert!(
            ready,
            "the sentinels did not find the replica and each other within {:?}",
            started.elapsed()
        );
        group
    }

    fn spawn_server(&self, port: u16, replica_of: Option<u16>) {
        let mut args = super::server::server_args(
            port,
            &self.dir,
            &format!("redis-{port}.log"),
            &["--repl-diskless-sync-delay", "0"],
        );
        if let Some(primary) = replica_of {
            args.extend([
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary.to_string(),
            ]);
        }
        let mut daemon = Daemon::spawn("redis-server", &args);
        let pid = daemon.pid().expect("just started");
        let ready = resp::wait_ready(port, pid, Duration::from_secs(10), || daemon.has_exited());
        assert!(
            ready.is_ok(),
            "redis-server on port {port} is not ready: {ready:?}"
        );
        let slot = &self.servers.iter().find(|(p, _)| *p == port).unwrap().1;
        *slot.lock().unwrap() = Some(daemon);
    }

    /// `redis-sentinel://127.0.0.1:S1/0?sentinelServiceName=mymaster&node=...&node=...`
    pub fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName={SERVICE}&node=127.0.0.1:{}&node=127.0.0.1:{}",
            self.sentinels[0], self.sentinels[1], self.sentinels[2]
        )
    }

    /// The data nodes' ports, the first primary first.
    pub fn servers(&self) -> Vec<u16> {
        self.servers.iter().map(|(p, _)| *p).collect()
    }

    /// The primary's port as the first sentinel that answers reports it.
    pub fn primary(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|&s| {
            let reply = resp::command(s, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE]).ok()?;
            match reply {
                Reply::Array(Some(items)) if items.len() == 2 => items[1].text()?.parse().ok(),
                _ => None,
            }
        })
    }

    /// SIGKILL to a data node's own PID.
    pub fn kill(&self, port: u16) {
        let slot = &self.servers.iter().find(|(p, _)| *p == port).unwrap().1;
        if let Some(mut daemon) = slot.lock().unwrap().take() {
            daemon.kill();
        }
    }

    /// The tail of the first sentinel's log, for failure messages.
    pub fn log(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("sentinel-{}.log", self.sentinels[0])))
                .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        for daemon in &mut self.sentinel_daemons {
            daemon.kill();
        }
        for (_, slot) in &self.servers {
            if let Some(mut daemon) = slot.lock().unwrap().take() {
                daemon.kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
