//! CPU time used by the apps' threads, the load generator and `redis-server`, from
//! `/proc/<pid>/task/<tid>/schedstat` (nanoseconds on CPU). On a shared 2-core machine
//! throughput moves with whatever else runs; CPU time per request moves much less.

use std::fs;

/// Nanoseconds on CPU so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// The apps' runtime threads (named `app`).
    pub app: u64,
    /// Everything else in this process: the load generator's thread above all.
    pub client: u64,
    /// Every thread of `redis-server`.
    pub redis: u64,
    /// Context switches (voluntary + involuntary) of the apps' threads.
    pub app_switches: u64,
}

impl Cpu {
    pub fn now(redis_pid: u32) -> Self {
        let mut cpu = Self::default();
        for (comm, ns, switches) in tasks("self") {
            if comm == "app" {
                cpu.app += ns;
                cpu.app_switches += switches;
            } else {
                cpu.client += ns;
            }
        }
        cpu.redis = tasks(&redis_pid.to_string())
            .iter()
            .map(|(_, ns, _)| ns)
            .sum();
        cpu
    }

    pub fn since(self, before: Self) -> Self {
        Self {
            app: self.app.saturating_sub(before.app),
            client: self.client.saturating_sub(before.client),
            redis: self.redis.saturating_sub(before.redis),
            app_switches: self.app_switches.saturating_sub(before.app_switches),
        }
    }

    pub fn add(&mut self, other: Self) {
        self.app += other.app;
        self.client += other.client;
        self.redis += other.redis;
        self.app_switches += other.app_switches;
    }
}

/// (thread name, ns on CPU, context switches) of every thread of a process.
fn tasks(pid: &str) -> Vec<(String, u64, u64)> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let path = entry.ok()?.path();
        let comm = fs::read_to_string(path.join("comm")).ok()?;
        let stat = fs::read_to_string(path.join("schedstat")).ok()?;
        let ns = stat.split_whitespace().next()?.parse().ok()?;
        let status = fs::read_to_string(path.join("status")).unwrap_or_default();
        let switches = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
            .sum();
        Some((comm.trim().to_owned(), ns, switches))
    })
    .collect()
}
