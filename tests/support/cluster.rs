//! A local Redis Cluster on 127.0.0.1: `redis-server --cluster-enabled yes` per node,
//! joined with `redis-cli --cluster create --cluster-replicas N --cluster-yes`.
//!
//! [`RedisCluster::shared`] is one 3-master + 3-replica cluster per test binary, for the
//! behaviour suite (each test keeps to its own key prefix). Tests that break things start
//! their own with [`RedisCluster::start`]; it is killed when dropped. Either way every
//! node is registered with the watchdog ([`super::reaper`]), so none outlives the binary.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::Command,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use super::{
    reaper::{self, Daemon},
    resp::{self, free_port, Reply},
};

/// How a cluster is laid out and how fast it gives up on a node.
#[derive(Debug, Clone, Copy)]
pub struct ClusterOptions {
    pub masters: usize,
    /// Replicas per master.
    pub replicas: usize,
    /// `cluster-node-timeout`: how long a node may be unreachable before it is failed
    /// over.
    pub node_timeout_ms: u64,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            masters: 3,
            replicas: 1,
            node_timeout_ms: 5_000,
        }
    }
}

/// One node's process and ports.
pub struct ClusterNode {
    pub port: u16,
    bus_port: u16,
    daemon: Mutex<Option<Daemon>>,
}

/// A node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: String,
    pub port: u16,
    pub master: bool,
    /// The master's ID, for a replica.
    pub master_id: Option<String>,
    /// Flagged `fail` or `fail?` by the node asked.
    pub failing: bool,
    /// Slot ranges served, inclusive.
    pub slots: Vec<(u16, u16)>,
}

impl NodeInfo {
    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }

    pub fn slot_count(&self) -> usize {
        self.slots
            .iter()
            .map(|&(a, b)| usize::from(b - a) + 1)
            .sum()
    }
}

pub struct RedisCluster {
    dir: PathBuf,
    options: ClusterOptions,
    nodes: Vec<ClusterNode>,
}

static NEXT_DIR: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl RedisCluster {
    /// The cluster shared by the behaviour suite in this test binary: 3 masters, 3
    /// replicas, started on first use.
    pub fn shared() -> &'static Self {
        static SHARED: OnceLock<RedisCluster> = OnceLock::new();
        SHARED.get_or_init(|| Self::start(ClusterOptions::default()))
    }

    /// Starts a cluster of its own (blocking: a few seconds), waits until every node
    /// agrees on the slots and every replica is in sync.
    pub fn start(options: ClusterOptions) -> Self {
        let n = NEXT_DIR.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("trs-cluster-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the cluster's directory");
        reaper::remove_on_exit(&dir);
        let count = options.masters * (1 + options.replicas);
        let mut cluster = Self {
            dir,
            options,
            nodes: Vec::with_capacity(count),
        };
        // Two ports per node (clients, cluster bus), all distinct.
        let mut ports = std::collections::BTreeSet::new();
        while ports.len() < 2 * count {
            ports.insert(free_port());
        }
        let mut ports = ports.into_iter();
        for _ in 0..count {
            let node = ClusterNode {
                port: ports.next().unwrap(),
                bus_port: ports.next().unwrap(),
                daemon: Mutex::new(None),
            };
            cluster.nodes.push(node);
        }
        for i in 0..count {
            cluster.spawn(i);
        }
        for i in 0..count {
            cluster.wait_ready(i);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        create
            .args(["--cluster-replicas", &options.replicas.to_string()])
            .arg("--cluster-yes");
        let out = create.output().unwrap_or_else(|e| {
            panic!("redis-cli not found ({e}): apt-get install -y redis-tools")
        });
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    fn spawn(&self, i: usize) {
        let node = &self.nodes[i];
        let args = super::server::server_args(
            node.port,
            &self.dir,
            &format!("node-{}.log", node.port),
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &node.bus_port.to_string(),
                "--cluster-config-file",
                &format!("nodes-{}.conf", node.port),
                "--cluster-node-timeout",
                &self.options.node_timeout_ms.to_string(),
                "--repl-diskless-sync-delay",
                "0",
            ],
        );
        *node.daemon.lock().unwrap() = Some(Daemon::spawn("redis-server", &args));
    }

    fn wait_ready(&self, i: usize) {
        let port = self.nodes[i].port;
        let mut daemon = self.nodes[i].daemon.lock().unwrap();
        let daemon = daemon.as_mut().expect("the node was started");
        let pid = daemon.pid().expect("the node runs");
        if let Err(e) = resp::wait_ready(port, pid, Duration::from_secs(10), || daemon.has_exited())
        {
            panic!(
                "cluster node on port {port} is not ready ({e:?}); its log:\n{}",
                self.log(port)
            );
        }
    }

    /// The tail of a node's log file.
    pub fn log(&self, port: u16) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("node-{port}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&...`: every node, so a client can
    /// start whichever nodes are down.
    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port);
        for (i, node) in self.nodes.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{}", node.port));
        }
        url
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    fn node(&self, port: u16) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
    }

    pub fn is_running(&self, port: u16) -> bool {
        let mut daemon = self.node(port).daemon.lock().unwrap();
        daemon.as_mut().is_some_and(|d| !d.has_exited())
    }

    /// SIGKILL to the node's own PID.
    pub fn kill(&self, port: u16) {
        if let Some(mut daemon) = self.node(port).daemon.lock().unwrap().take() {
            daemon.kill();
        }
    }

    /// Starts a killed node again with its `nodes.conf` (it rejoins, as a replica if it
    /// was failed over) and an empty dataset.
    pub fn restart(&self, port: u16) {
        self.kill(port);
        let i = self.nodes.iter().position(|n| n.port == port).unwrap();
        self.spawn(i);
        self.wait_ready(i);
    }

    /// `CLUSTER NODES` as seen by the first running node that answers.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        for node in &self.nodes {
            if let Ok(reply @ Reply::Bulk(Some(_))) =
                resp::command(node.port, &["CLUSTER", "NODES"])
            {
                return parse_nodes(&reply.text().unwrap_or_default());
            }
        }
        panic!("no cluster node answers CLUSTER NODES");
    }

    /// `CLUSTER NODES` as seen by the node on `port`.
    pub fn nodes_seen_by(&self, port: u16) -> Option<Vec<NodeInfo>> {
        match resp::command(port, &["CLUSTER", "NODES"]) {
            Ok(reply @ Reply::Bulk(Some(_))) => Some(parse_nodes(&reply.text()?)),
            _ => None,
        }
    }

    /// Ports of the masters that serve slots.
    pub fn primaries(&self) -> Vec<u16> {
        self.nodes()
            .into_iter()
            .filter(|n| n.master && !n.slots.is_empty() && !n.failing)
            .map(|n| n.port)
            .collect()
    }

    /// The port of the master serving `slot`.
    pub fn primary_for_slot(&self, slot: u16) -> u16 {
        self.nodes()
            .into_iter()
            .find(|n| n.master && !n.failing && n.serves(slot))
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// The ports of the replicas of the master on `port`.
    pub fn replicas_of(&self, port: u16) -> Vec<u16> {
        let nodes = self.nodes();
        let id = nodes.iter().find(|n| n.port == port).unwrap().id.clone();
        nodes
            .into_iter()
            .filter(|n| n.master_id.as_deref() == Some(id.as_str()))
            .map(|n| n.port)
            .collect()
    }

    pub fn id_of(&self, port: u16) -> String {
        resp::must(port, &["CLUSTER", "MYID"]).text().unwrap()
    }

    /// `true` when every running node says `cluster_state:ok`, they all agree on who
    /// serves which slots, all slots are served, the expected number of replicas are
    /// attached, and every replica has finished its sync.
    pub fn is_healthy(&self) -> bool {
        let mut views = Vec::new();
        for node in &self.nodes {
            if !self.is_running(node.port) {
                continue;
            }
            if cluster_state(node.port).as_deref() != Some("ok") {
                return false;
            }
            let Some(view) = self.nodes_seen_by(node.port) else {
                return false;
            };
            let running: Vec<u16> = self
                .nodes
                .iter()
                .filter(|n| self.is_running(n.port))
                .map(|n| n.port)
                .collect();
            let mut map = BTreeMap::new();
            let mut replicas = 0;
            for n in &view {
                if n.failing && running.contains(&n.port) {
                    return false;
                }
                if n.master && !n.slots.is_empty() {
                    map.insert(n.port, n.slots.clone());
                }
                if !n.master && running.contains(&n.port) {
                    replicas += 1;
                }
            }
            let served: usize = view
                .iter()
                .filter(|n| n.master)
                .map(NodeInfo::slot_count)
                .sum();
            if served != 16384 || replicas < self.expected_replicas(&running) {
                return false;
            }
            views.push(map);
        }
        if views.windows(2).any(|w| w[0] != w[1]) {
            return false;
        }
        // Replicas in sync with their master.
        self.nodes
            .iter()
            .filter(|n| self.is_running(n.port))
            .all(|n| {
                let info = resp::info(n.port, "replication").unwrap_or_default();
                let get = |k: &str| info.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
                get("role") != Some("slave")
                    || (get("master_link_status") == Some("up")
                        && get("master_sync_in_progress") == Some("0"))
            })
    }

    fn expected_replicas(&self, running: &[u16]) -> usize {
        // Every running node that is not one of the masters serving slots is a replica.
        running
            .len()
            .saturating_sub(self.options.masters)
            .min(self.options.masters * self.options.replicas)
    }

    /// Waits until [`is_healthy`](Self::is_healthy), or panics after `timeout`.
    pub fn wait_healthy(&self, timeout: Duration) {
        let started = Instant::now();
        if !resp::wait_until(timeout, || self.is_healthy()) {
            let views: Vec<String> = self
                .nodes
                .iter()
                .map(|n| {
                    format!(
                        "{}: {:?}",
                        n.port,
                        resp::command(n.port, &["CLUSTER", "NODES"]).ok()
                    )
                })
                .collect();
            panic!(
                "the cluster did not settle within {:?}:\n{}",
                started.elapsed(),
                views.join("\n")
            );
        }
    }

    /// Waits until every replica of the master on `port` has applied all it wrote so far.
    pub fn wait_replicated(&self, port: u16, timeout: Duration) -> bool {
        let target: u64 = resp::info_field(port, "replication", "master_repl_offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let replicas = self.replicas_of(port);
        resp::wait_until(timeout, || {
            replicas.iter().all(|&r| {
                resp::info_field(r, "replication", "slave_repl_offset")
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|o| o >= target)
            })
        })
    }

    /// The node's role per `INFO replication`: `master` or `slave`.
    pub fn role(&self, port: u16) -> Option<String> {
        resp::info_field(port, "replication", "role")
    }

    /// Moves `slots` slots from the master on `from` to the master on `to`, keys and all,
    /// with `redis-cli --cluster reshard`. Returns how long it took.
    pub fn reshard(&self, from: u16, to: u16, slots: usize) -> Duration {
        let started = Instant::now();
        let out = Command::new("redis-cli")
            .args(["--cluster", "reshard", &format!("127.0.0.1:{from}")])
            .args(["--cluster-from", &self.id_of(from)])
            .args(["--cluster-to", &self.id_of(to)])
            .args(["--cluster-slots", &slots.to_string()])
            .arg("--cluster-yes")
            .output()
            .expect("run redis-cli --cluster reshard");
        assert!(
            out.status.success(),
            "redis-cli --cluster reshard failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        started.elapsed()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            if let Some(mut daemon) = node.daemon.lock().unwrap().take() {
                daemon.kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `cluster_state` from `CLUSTER INFO` of the node on `port`: `ok` or `fail`.
pub fn cluster_state(port: u16) -> Option<String> {
    let reply = resp::command(port, &["CLUSTER", "INFO"]).ok()?;
    reply
        .text()?
        .lines()
        .find_map(|l| l.strip_prefix("cluster_state:"))
        .map(|s| s.trim().to_owned())
}

fn parse_nodes(text: &str) -> Vec<NodeInfo> {
    text.lines()
        .filter_map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() < 8 {
                return None;
            }
            let port = parts[1]
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let flags = parts[2];
            let slots = parts[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => {
                        let a = s.parse().ok()?;
                        Some((a, a))
                    }
                })
                .collect();
            Some(NodeInfo {
                id: parts[0].to_owned(),
                port,
                master: flags.contains("master"),
                master_id: (parts[3] != "-").then(|| parts[3].to_owned()),
                failing: flags.contains("fail"),
                slots,
            })
        })
        .collect()
}

/// The cluster slot of a key (CRC16/XMODEM of the key, or of its `{hash tag}`, mod 16384).
pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match key.find('{') {
        Some(open) => match key[open + 1..].find('}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    let mut crc: u16 = 0;
    for &b in hashed {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}
