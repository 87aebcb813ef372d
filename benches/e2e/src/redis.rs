//! What the bench asks of its `redis-server` (the server itself is the test suite's,
//! `tests/support/server.rs`).

use std::{collections::BTreeMap, time::Duration};

use fred::{
    clients::Client,
    interfaces::{ClientLike as _, KeysInterface as _, LuaInterface as _, ServerInterface as _},
    types::{InfoKind, Value},
};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The bench's own connection, for stats, checks and clean-up.
pub async fn control(url: &str) -> Res<Client> {
    let client = tower_redis_session::client_builder(url)?
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(60))
        .build()?;
    client.init().await?;
    Ok(client)
}

/// Calls and microseconds of one command, from `INFO commandstats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    pub calls: u64,
    /// Time Redis spent executing the command (for a script, everything it ran).
    pub usec: u64,
}

/// `INFO commandstats` as command → calls, without the bench's own INFO.
pub async fn commandstats(client: &Client) -> Res<BTreeMap<String, Calls>> {
    let info: String = client.info(Some(InfoKind::CommandStats)).await?;
    let mut out = BTreeMap::new();
    for line in info.lines() {
        let Some((name, stats)) = line
            .strip_prefix("cmdstat_")
            .and_then(|r| r.split_once(':'))
        else {
            continue;
        };
        if name == "info" {
            continue;
        }
        let field = |f: &str| {
            stats
                .split(',')
                .find_map(|kv| kv.strip_prefix(f)?.strip_prefix('='))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0)
        };
        out.insert(
            name.to_owned(),
            Calls {
                calls: field("calls"),
                usec: field("usec"),
            },
        );
    }
    Ok(out)
}

/// Calls per command between two `commandstats` snapshots.
pub fn delta(
    before: &BTreeMap<String, Calls>,
    after: &BTreeMap<String, Calls>,
) -> BTreeMap<String, Calls> {
    after
        .iter()
        .map(|(k, v)| {
            let b = before.get(k).copied().unwrap_or_default();
            (
                k.clone(),
                Calls {
                    calls: v.calls - b.calls,
                    usec: v.usec - b.usec,
                },
            )
        })
        .filter(|(_, v)| v.calls > 0)
        .collect()
}

pub async fn info_field(client: &Client, kind: InfoKind, field: &str) -> Res<u64> {
    let info: String = client.info(Some(kind)).await?;
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no {field} in INFO").into())
}

pub async fn dbsize(client: &Client) -> Res<u64> {
    Ok(client.dbsize().await?)
}

/// How many of `keys` exist.
pub async fn count_existing(client: &Client, keys: &[String]) -> Res<u64> {
    let mut n = 0;
    for chunk in keys.chunks(1000) {
        let c: u64 = client.exists(chunk.to_vec()).await?;
        n += c;
    }
    Ok(n)
}

pub async fn delete(client: &Client, keys: &[String]) -> Res<()> {
    for chunk in keys.chunks(1000) {
        let _: u64 = client.del(chunk.to_vec()).await?;
    }
    Ok(())
}

/// `MEMORY USAGE key SAMPLES 0` (exact) for each key; their sum.
pub async fn memory_usage(client: &Client, keys: &[String]) -> Res<u64> {
    let mut total = 0;
    for chunk in keys.chunks(500) {
        let mut tasks = tokio::task::JoinSet::new();
        for key in chunk {
            let client = client.clone();
            let key = key.clone();
            tasks.spawn(async move {
                client
                    .custom::<Value, _>(
                        fred::cmd!("MEMORY"),
                        vec![Value::from("USAGE"), key.into(), "SAMPLES".into(), 0.into()],
                    )
                    .await
            });
        }
        while let Some(done) = tasks.join_next().await {
            total += done?.map(|v| v.as_u64().unwrap_or(0))?;
        }
    }
    Ok(total)
}

/// Adds `count` session-shaped hashes (`session:fill…`, same key length as real session
/// keys, the five fields of a small session, a 1 h TTL), in Lua batches of 20,000.
pub async fn populate_filler(client: &Client, count: u64) -> Res<()> {
    const BATCH: u64 = 20_000;
    let lua = "
local from, n = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = from, from + n - 1 do
  local k = string.format('session:fill%039d', i)
  redis.call('HSET', k, 'username', 'user' .. i, 'page_views', '0',
    'created_at', '2026-01-01T00:00:00+00:00', 'last_accessed_at', '2026-01-01T00:00:00+00:00',
    'session_ttl', '1800')
  redis.call('EXPIRE', k, 3600)
end
return n";
    let mut from = 0;
    while from < count {
        let n = BATCH.min(count - from);
        let _: i64 = client
            .eval(lua, Vec::<String>::new(), vec![from as i64, n as i64])
            .await?;
        from += n;
    }
    Ok(())
}

/// Commands Redis executed while `requests` requests ran, seen through `MONITOR`: those
/// sent by clients (one per round trip) and those run inside scripts (`[0 lua]`).
#[derive(Debug, Default, Clone)]
pub struct Census {
    pub requests: u64,
    pub top_level: BTreeMap<String, u64>,
    pub in_scripts: BTreeMap<String, u64>,
}

impl Census {
    pub fn top_per_request(&self) -> f64 {
        self.top_level.values().sum::<u64>() as f64 / self.requests.max(1) as f64
    }

    pub fn scripted_per_request(&self) -> f64 {
        self.in_scripts.values().sum::<u64>() as f64 / self.requests.max(1) as f64
    }

    /// E.g. `EVALSHA` or `GET + SET`, with a count where it is not one per request.
    pub fn top_names(&self) -> String {
        if self.top_level.is_empty() {
            return "none".to_owned();
        }
        self.top_level
            .iter()
            .map(|(name, n)| {
                let per = *n as f64 / self.requests.max(1) as f64;
                if (per - 1.0).abs() < 1e-9 {
                    name.to_uppercase()
                } else {
                    format!("{per:.2}×{}", name.to_uppercase())
                }
            })
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

/// `MONITOR` on the bench's server while the census requests run.
pub struct Monitor(crate::monitor::Monitor);

impl Monitor {
    pub fn start(port: u16) -> Res<Self> {
        Ok(Self(crate::monitor::Monitor::start(port)?))
    }

    /// Stops the monitor once it has seen everything run so far, and counts it.
    pub fn finish(self, requests: u64) -> Census {
        let mut census = Census {
            requests,
            ..Census::default()
        };
        for seen in self.0.finish() {
            // `PING` is the read cache's barrier on its own connection, a few times a
            // second whatever the load: no request's round trip.
            if seen.command == "info" || seen.command == "ping" || seen.command.is_empty() {
                continue;
            }
            let map = if seen.in_script {
                &mut census.in_scripts
            } else {
                &mut census.top_level
            };
            *map.entry(seen.command).or_default() += 1;
        }
        census
    }
}
