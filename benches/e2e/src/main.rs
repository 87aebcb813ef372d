//! End-to-end load bench: tower-redis-session side by side with tower-sessions +
//! tower-sessions-redis-store, hand-written fred calls (the floor), and no session at all.
//!
//! ```text
//! cargo run --release -p e2e-bench -- [--quick] [--rounds N] [--duration SECS] ...
//! ```
//!
//! Starts its own `redis-server` on a free 127.0.0.1 port (killed by PID at the end),
//! one axum app per contender, and a hyper load generator in the same process (its own
//! single-threaded runtime; the apps run on a 2-worker runtime). Contenders are run
//! interleaved over several rounds, so drift shows in the per-round figures. See
//! benches/README.md for what each table means.

mod apps;
mod cpu;
mod load;
mod redis;

// The test suite's own support for a `redis-server` of one's own, shared by path: the
// server (checked to be the process started, killed by PID), a RESP client, `MONITOR`,
// and the watchdog that kills the server however the bench exits.
#[path = "../../../tests/support/monitor.rs"]
mod monitor;
#[path = "../../../tests/support/reaper.rs"]
mod reaper;
#[path = "../../../tests/support/resp.rs"]
mod resp;
#[path = "../../../tests/support/server.rs"]
mod server;

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    net::SocketAddr,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use apps::Contender;
use fred::{clients::Client, interfaces::ClientLike as _, types::InfoKind};
use load::{Scenario, SessionRef};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "\
usage: e2e-bench [options]
  --quick               a ~1 minute smoke run (short cells, fewer rounds, 100k filler keys)
  --rounds N            interleaved rounds of the main table (default 3; quick 2)
  --duration SECS       measured seconds per cell (default 3; quick 1)
  --warmup SECS         unmeasured seconds before each cell (default 0.5; quick 0.25)
  --concurrency N       connections of the load generator (default 32)
  --pool N              fred clients per contender's pool (default 2, as connect())
  --server-threads N    worker threads of the apps' runtime (default 2)
  --sessions N          live sessions per contender for read/incr (default 1000)
  --big N               filler sessions for the 'many live sessions' run (default 1000000; quick 100000)
  --memory-sessions N   sessions per contender measured with MEMORY USAGE (default 10000; quick 1000)
  --size-sessions N     sessions per contender and size for the fields curve (default 256; quick 64)
  --phases LIST         of main,sizes,memory,scale (default all)
  --contenders LIST     of ours,ts,floor,cratelua,none,tsalways,lazy,cache,touch,functions (default all)
  --scenarios LIST      of anon,read,incr,login,untouched, for the main table (default all)
  --out FILE            also write the report (Markdown) to FILE";

#[derive(Debug, Clone)]
struct Args {
    quick: bool,
    rounds: usize,
    duration: Duration,
    warmup: Duration,
    concurrency: usize,
    pool: usize,
    server_threads: usize,
    sessions: usize,
    big: u64,
    memory_sessions: usize,
    size_sessions: usize,
    size_rounds: usize,
    phases: Vec<String>,
    contenders: Vec<Contender>,
    scenarios: Vec<Scenario>,
    out: Option<String>,
}

impl Args {
    fn parse() -> Result<Self, String> {
        let raw: Vec<String> = std::env::args().skip(1).collect();
        let quick = raw.iter().any(|a| a == "--quick");
        let mut args = Self {
            quick,
            rounds: if quick { 2 } else { 3 },
            duration: Duration::from_secs(if quick { 1 } else { 3 }),
            warmup: Duration::from_millis(if quick { 250 } else { 500 }),
            concurrency: 32,
            pool: 2,
            server_threads: 2,
            sessions: 1000,
            big: if quick { 100_000 } else { 1_000_000 },
            memory_sessions: if quick { 1000 } else { 10_000 },
            size_sessions: if quick { 64 } else { 256 },
            size_rounds: if quick { 1 } else { 2 },
            phases: ["main", "sizes", "memory", "scale"]
                .map(String::from)
                .to_vec(),
            contenders: Contender::ALL.to_vec(),
            scenarios: Scenario::ALL.to_vec(),
            out: None,
        };
        let mut it = raw.into_iter();
        while let Some(flag) = it.next() {
            if flag == "--quick" {
                continue;
            }
            if flag == "-h" || flag == "--help" {
                return Err(USAGE.to_owned());
            }
            let value = it
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            let num = || {
                value
                    .parse::<f64>()
                    .map_err(|_| format!("{flag}: not a number: {value}"))
            };
            match flag.as_str() {
                "--rounds" => args.rounds = num()? as usize,
                "--duration" => args.duration = Duration::from_secs_f64(num()?),
                "--warmup" => args.warmup = Duration::from_secs_f64(num()?),
                "--concurrency" => args.concurrency = num()? as usize,
                "--pool" => args.pool = num()? as usize,
                "--server-threads" => args.server_threads = num()? as usize,
                "--sessions" => args.sessions = num()? as usize,
                "--big" => args.big = num()? as u64,
                "--memory-sessions" => args.memory_sessions = num()? as usize,
                "--size-sessions" => args.size_sessions = num()? as usize,
                "--phases" => args.phases = value.split(',').map(String::from).collect(),
                "--contenders" => {
                    args.contenders = value
                        .split(',')
                        .map(|s| {
                            Contender::from_short(s).ok_or_else(|| format!("unknown contender {s}"))
                        })
                        .collect::<Result<_, _>>()?;
                }
                "--scenarios" => {
                    args.scenarios = value
                        .split(',')
                        .map(|s| {
                            Scenario::ALL
                                .into_iter()
                                .find(|x| x.name() == s)
                                .ok_or_else(|| format!("unknown scenario {s}"))
                        })
                        .collect::<Result<_, _>>()?;
                }
                "--out" => args.out = Some(value),
                _ => return Err(format!("unknown option {flag}\n{USAGE}")),
            }
        }
        if args.rounds == 0 || args.concurrency == 0 || args.pool == 0 {
            return Err("--rounds, --concurrency and --pool must be at least 1".to_owned());
        }
        Ok(args)
    }

    fn phase(&self, name: &str) -> bool {
        self.phases.iter().any(|p| p == name)
    }

    fn main_scenarios(&self) -> Vec<Scenario> {
        Scenario::ALL
            .into_iter()
            .filter(|s| self.scenarios.contains(s))
            .collect()
    }

    fn has(&self, c: Contender) -> bool {
        self.contenders.contains(&c)
    }
}

fn main() -> ExitCode {
    // The crate's own warnings (say, a read cache that lost its tracking connection)
    // show on stderr beside the bench's progress; `RUST_LOG` overrides.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match Args::parse() {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("e2e-bench: some correctness checks FAILED (see the tables)");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("e2e-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Res<bool> {
    let server = server::RedisServer::start();
    eprintln!(
        "e2e-bench: redis-server pid {} on 127.0.0.1:{}",
        server.pid(),
        server.port()
    );
    let url = server.url();
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads)
        .thread_name("app")
        .enable_all()
        .build()?;
    let apps = server_rt.block_on(apps::start(&url, args.pool))?;
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = client_rt.block_on(bench(args, &server, &apps));
    drop(client_rt);
    server_rt.shutdown_timeout(Duration::from_secs(2));
    drop(server);
    let (report, ok) = result?;
    println!("{report}");
    if let Some(path) = &args.out {
        std::fs::write(path, &report)?;
        eprintln!("e2e-bench: report written to {path}");
    }
    Ok(ok)
}

/// Aggregated results of one scenario × contender over the rounds.
#[derive(Default)]
struct Cells {
    rps: Vec<f64>,
    latencies_us: Vec<u32>,
    total: u64,
    commands: BTreeMap<String, redis::Calls>,
    cpu: cpu::Cpu,
    bad: u64,
    failures: Vec<String>,
    /// The read cache's counters, summed over the cells (cached contender only).
    cache: Option<CacheCell>,
}

impl Cells {
    fn add(&mut self, cell: &Cell) {
        let out = &cell.out;
        self.rps.push(out.rps());
        self.latencies_us.extend(&out.latencies_us);
        self.total += out.total;
        for (k, v) in &cell.commands {
            let e = self.commands.entry(k.clone()).or_default();
            e.calls += v.calls;
            e.usec += v.usec;
        }
        self.cpu.add(cell.cpu);
        if let Some(c) = cell.cache {
            let sum = self.cache.get_or_insert_with(CacheCell::default);
            sum.hits += c.hits;
            sum.misses += c.misses;
            sum.hits_all += c.hits_all;
            sum.misses_all += c.misses_all;
            sum.entries = c.entries;
            sum.bytes = c.bytes;
        }
        self.bad += out.bad;
        for e in &out.bad_examples {
            if self.failures.len() < 3 {
                self.failures.push(e.clone());
            }
        }
    }

    fn median_rps(&self) -> f64 {
        median(&self.rps)
    }

    fn per_request(&self, x: u64) -> f64 {
        x as f64 / self.total.max(1) as f64
    }

    fn commands_per_request(&self) -> f64 {
        self.per_request(self.commands.values().map(|c| c.calls).sum())
    }

    fn breakdown(&self) -> String {
        self.commands
            .iter()
            .map(|(k, v)| format!("{k} {:.2}", self.per_request(v.calls)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Microseconds Redis spent executing the commands clients sent (a script's time
    /// includes what it ran), per request.
    fn redis_usec_per_request(&self, census: &redis::Census) -> f64 {
        self.per_request(
            self.commands
                .iter()
                .filter(|(k, _)| census.top_level.contains_key(*k))
                .map(|(_, v)| v.usec)
                .sum(),
        )
    }

    /// CPU microseconds per request spent serving it: apps + Redis.
    fn server_cpu_us(&self) -> f64 {
        let (app, redis, _) = self.cpu_us();
        app + redis
    }

    /// CPU microseconds per request: apps, Redis, load generator.
    fn cpu_us(&self) -> (f64, f64, f64) {
        let us = |ns: u64| self.per_request(ns) / 1000.0;
        (us(self.cpu.app), us(self.cpu.redis), us(self.cpu.client))
    }

    fn percentiles(&mut self) -> (f64, f64) {
        self.latencies_us.sort_unstable();
        (
            load::percentile_ms(&self.latencies_us, 50.0),
            load::percentile_ms(&self.latencies_us, 99.0),
        )
    }
}

/// What the read cache did during a cell.
#[derive(Clone, Copy, Debug, Default)]
struct CacheCell {
    /// Loads served from memory, measured phase only.
    hits: u64,
    /// Loads that went to Redis, measured phase only.
    misses: u64,
    /// Hits and misses over the whole cell, warm-up included (where entries that
    /// outlived their touch interval between cells are refilled).
    hits_all: u64,
    misses_all: u64,
    /// Sessions held, and the bytes they take, at the end of the cell.
    entries: usize,
    bytes: usize,
}

impl CacheCell {
    fn hit_rate(&self) -> f64 {
        self.hits as f64 / (self.hits + self.misses).max(1) as f64
    }

    fn hit_rate_all(&self) -> f64 {
        self.hits_all as f64 / (self.hits_all + self.misses_all).max(1) as f64
    }

    fn bytes_per_entry(&self) -> f64 {
        if self.entries == 0 {
            f64::NAN
        } else {
            self.bytes as f64 / self.entries as f64
        }
    }
}

fn fmt_bytes(b: f64) -> String {
    if b.is_finite() {
        format!("{b:.0}")
    } else {
        "–".to_owned()
    }
}

fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median over rounds of the per-round ratio a / b (paired, so drift between rounds
/// cancels out).
fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    let ratios: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    median(&ratios)
}

fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}×")
    } else {
        "–".to_owned()
    }
}

/// Rotates `list` by `round`, so that no contender always runs first.
fn rotated<T: Clone>(list: &[T], round: usize) -> Vec<T> {
    let mut v = list.to_vec();
    if !v.is_empty() {
        let k = round % v.len();
        v.rotate_left(k);
    }
    v
}

fn contenders_for(args: &Args, scenario: Scenario) -> Vec<Contender> {
    let wanted: &[Contender] = match scenario {
        Scenario::Anon => &[
            Contender::Ours,
            Contender::TowerSessions,
            Contender::Floor,
            Contender::NoSession,
        ],
        Scenario::Read => &[
            Contender::Ours,
            Contender::TowerSessions,
            Contender::Floor,
            Contender::CrateLua,
            Contender::TsAlwaysSave,
            Contender::OursLazy,
            Contender::OursTouch,
            Contender::OursCached,
            Contender::OursFunctions,
        ],
        Scenario::Incr => &[
            Contender::Ours,
            Contender::TowerSessions,
            Contender::Floor,
            Contender::CrateLua,
            Contender::OursCached,
            Contender::OursFunctions,
        ],
        // A request with a live session's cookie whose handler never uses it.
        Scenario::Untouched => &[
            Contender::Ours,
            Contender::OursLazy,
            Contender::TowerSessions,
            Contender::NoSession,
        ],
        Scenario::Login => &[
            Contender::Ours,
            Contender::TowerSessions,
            Contender::Floor,
            Contender::CrateLua,
            Contender::OursFunctions,
        ],
    };
    wanted.iter().copied().filter(|c| args.has(*c)).collect()
}

/// Creates `count` sessions through the contender's own `/setup` route.
async fn setup(
    addr: SocketAddr,
    count: usize,
    fields: usize,
    user_base: u64,
) -> Res<Vec<SessionRef>> {
    let jobs = (0..count as u64)
        .map(|i| {
            (
                format!("/setup?user={}&fields={fields}", user_base + i),
                None,
            )
        })
        .collect();
    let answers = load::drive(addr, jobs, 32).await?;
    answers
        .into_iter()
        .enumerate()
        .map(|(i, a)| match (a.status.as_u16(), a.set_cookie) {
            (200, Some(cookie)) => Ok(SessionRef {
                cookie,
                username: format!("user{}", user_base + i as u64),
            }),
            (status, _) => {
                Err(format!("setup: {status} {}", String::from_utf8_lossy(&a.body)).into())
            }
        })
        .collect()
}

/// Σ `page_views` over `sessions`, read through the contender's own `/peek`.
async fn peek_sum(addr: SocketAddr, sessions: &[SessionRef]) -> Res<i64> {
    let jobs = sessions
        .iter()
        .map(|s| ("/peek".to_owned(), Some(s.cookie.clone())))
        .collect();
    let mut sum = 0;
    for a in load::drive(addr, jobs, 32).await? {
        let body = std::str::from_utf8(&a.body).unwrap_or("");
        if a.status != 200 {
            return Err(format!("peek: {} {body}", a.status).into());
        }
        sum += body.parse::<i64>().unwrap_or(0);
    }
    Ok(sum)
}

/// Redis keys of sessions whose cookies are `name=value`.
fn keys_of(contender: Contender, cookies: &[String]) -> Vec<String> {
    cookies
        .iter()
        .map(|c| contender.key_of(c.split_once('=').map_or(c.as_str(), |(_, v)| v)))
        .collect()
}

struct Ctx<'a> {
    args: &'a Args,
    server: &'a server::RedisServer,
    addrs: &'a HashMap<Contender, SocketAddr>,
    /// The cached contender's layer, for its cache's counters.
    cached: &'a tower_redis_session::RedisSessionLayer,
    control: Client,
    ok: bool,
    notes: Vec<String>,
}

impl Ctx<'_> {
    fn fail(&mut self, what: String) {
        eprintln!("e2e-bench: CHECK FAILED: {what}");
        self.notes.push(format!("**check failed**: {what}"));
        self.ok = false;
    }

    /// One timed cell, with its checks.
    async fn cell(
        &mut self,
        contender: Contender,
        scenario: Scenario,
        sessions: &Arc<Vec<SessionRef>>,
    ) -> Res<Cell> {
        let addr = self.addrs[&contender];
        let before_sum = if scenario == Scenario::Incr {
            Some(peek_sum(addr, sessions).await?)
        } else {
            None
        };
        let before = redis::commandstats(&self.control).await?;
        let cpu_before = cpu::Cpu::now(self.server.pid());
        let cached = (contender == Contender::OursCached).then_some(self.cached);
        let stats_before = cached.and_then(|l| l.cache_stats());
        let run = load::run(
            addr,
            scenario,
            Arc::clone(sessions),
            self.args.concurrency,
            self.args.warmup,
            self.args.duration,
        );
        // The cache's counters when the measured phase starts (the load generator's
        // runtime is single-threaded: this wakes within a scheduling slice of it).
        let at_measure = async {
            tokio::time::sleep(self.args.warmup).await;
            cached.and_then(|l| l.cache_stats())
        };
        let (out, stats_start) = tokio::join!(run, at_measure);
        let cpu = cpu::Cpu::now(self.server.pid()).since(cpu_before);
        let stats_end = cached.and_then(|l| l.cache_stats());
        let after = redis::commandstats(&self.control).await?;
        let commands = redis::delta(&before, &after);
        let cache = match (stats_before, stats_start, stats_end) {
            (Some(z), Some(a), Some(b)) => Some(CacheCell {
                hits: b.hits - a.hits,
                misses: b.misses - a.misses,
                hits_all: b.hits - z.hits,
                misses_all: b.misses - z.misses,
                entries: b.entries,
                bytes: b.bytes,
            }),
            _ => None,
        };
        if let Some(before_sum) = before_sum {
            let after_sum = peek_sum(addr, sessions).await?;
            if after_sum - before_sum != out.ok as i64 {
                self.fail(format!(
                    "{} incr: counters rose by {} but {} requests answered 200",
                    contender.name(),
                    after_sum - before_sum,
                    out.ok
                ));
            }
            if let Some(layer) = cached {
                // Read every counter again: now from memory, and it must say the same.
                let hits_before = layer.cache_stats().map_or(0, |s| s.hits);
                let again = peek_sum(addr, sessions).await?;
                let hits = layer.cache_stats().map_or(0, |s| s.hits) - hits_before;
                if again != after_sum {
                    self.fail(format!(
                        "{} incr: counters read again ({hits} from the cache) sum to {again}, not {after_sum}",
                        contender.name(),
                    ));
                }
            }
        }
        if scenario == Scenario::Login {
            let keys = keys_of(contender, &out.created);
            let existing = redis::count_existing(&self.control, &keys).await?;
            if existing != out.ok {
                self.fail(format!(
                    "{} login: {} sessions created but {existing} keys found",
                    contender.name(),
                    out.ok
                ));
            }
            redis::delete(&self.control, &keys).await?;
        }
        if out.bad > 0 {
            self.fail(format!(
                "{} {}: {} bad answers, e.g. {:?}",
                contender.name(),
                scenario.name(),
                out.bad,
                out.bad_examples
            ));
        }
        eprintln!(
            "  {:<6} {:<20} {:>8.0} req/s  ({} answers, {} bad)",
            scenario.name(),
            contender.name(),
            out.rps(),
            out.total,
            out.bad
        );
        Ok(Cell {
            out,
            commands,
            cpu,
            cache,
        })
    }
}

/// One timed run of one scenario against one contender.
struct Cell {
    out: load::CellOut,
    commands: BTreeMap<String, redis::Calls>,
    cpu: cpu::Cpu,
    cache: Option<CacheCell>,
}

async fn bench(
    args: &Args,
    server: &server::RedisServer,
    apps: &apps::Apps,
) -> Res<(String, bool)> {
    let control = redis::control(&server.url()).await?;
    let mut ctx = Ctx {
        args,
        server,
        addrs: &apps.addrs,
        cached: &apps.cached,
        control,
        ok: true,
        notes: Vec::new(),
    };
    let mut report = String::new();
    let started = Instant::now();
    let redis_version: String = {
        let info: String = ctx.control.info(Some(InfoKind::Server)).await?;
        info.lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("?")
            .trim()
            .to_owned()
    };
    writeln!(
        report,
        "Run: {} mode; {} rounds × {:.1} s measured (+{:.2} s warm-up) per cell; {} connections; \
         fred pool of {} per contender; app runtime {} worker threads; load generator 1 thread; \
         Redis {redis_version}; {} CPUs seen by the process.\n",
        if args.quick { "quick" } else { "full" },
        args.rounds,
        args.duration.as_secs_f64(),
        args.warmup.as_secs_f64(),
        args.concurrency,
        args.pool,
        args.server_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    )?;

    if args.phase("main") {
        main_table(&mut ctx, &mut report).await?;
    }
    if args.phase("sizes") {
        sizes(&mut ctx, &mut report).await?;
    }
    if args.phase("memory") {
        memory(&mut ctx, &mut report).await?;
    }
    if args.phase("scale") {
        scale(&mut ctx, &mut report).await?;
    }
    if !ctx.notes.is_empty() {
        writeln!(report, "\n{}", ctx.notes.join("\n"))?;
    }
    writeln!(
        report,
        "\nWhole run: {:.0} s.",
        started.elapsed().as_secs_f64()
    )?;
    Ok((report, ctx.ok))
}

/// The main table: every scenario × contender, interleaved rounds, with the MONITOR
/// census of commands per request.
async fn main_table(ctx: &mut Ctx<'_>, report: &mut String) -> Res<()> {
    let args = ctx.args;
    eprintln!(
        "e2e-bench: creating {} sessions per contender",
        args.sessions
    );
    let mut pools: HashMap<Contender, Arc<Vec<SessionRef>>> = HashMap::new();
    for (i, c) in Contender::ALL.into_iter().enumerate() {
        if c.has_sessions() && args.has(c) {
            let sessions = setup(ctx.addrs[&c], args.sessions, 2, i as u64 * 1_000_000).await?;
            pools.insert(c, Arc::new(sessions));
        }
    }
    if let Some(sessions) = pools.get(&Contender::OursCached) {
        wait_for_cache(ctx, &sessions[0]).await?;
    }
    let empty = Arc::new(Vec::new());
    let pool_of = |c: Contender, s: Scenario| {
        if !s.uses_sessions() {
            Arc::clone(&empty)
        } else if let Some(sessions) = pools.get(&c) {
            Arc::clone(sessions)
        } else {
            // No session layer (`untouched`): this crate's cookies, which it ignores.
            pools
                .get(&Contender::Ours)
                .map_or_else(|| Arc::clone(&empty), Arc::clone)
        }
    };

    // Census: 50 sequential requests per scenario × contender under MONITOR, after the
    // same 50 sent twice unmonitored (so a read cache is filled, as in steady use).
    eprintln!("e2e-bench: counting commands per request (MONITOR)");
    let mut census: HashMap<(&'static str, Contender), redis::Census> = HashMap::new();
    const CENSUS_REQUESTS: usize = 50;
    for scenario in args.main_scenarios() {
        for c in contenders_for(args, scenario) {
            let sessions = pool_of(c, scenario);
            let jobs: Vec<_> = (0..CENSUS_REQUESTS)
                .map(|i| {
                    let cookie =
                        (!sessions.is_empty()).then(|| sessions[i % sessions.len()].cookie.clone());
                    (scenario.path().to_owned(), cookie)
                })
                .collect();
            if scenario.uses_sessions() {
                // Twice: a session last refreshed over a touch interval ago is refreshed
                // by the first load and cached by the second.
                for _ in 0..2 {
                    load::drive(ctx.addrs[&c], jobs.clone(), 1).await?;
                }
            }
            let monitor = redis::Monitor::start(ctx.server.port())?;
            let answers = load::drive(ctx.addrs[&c], jobs, 1).await?;
            let n = census_requests(&answers);
            census.insert((scenario.name(), c), monitor.finish(n));
            if scenario == Scenario::Login {
                let created: Vec<String> =
                    answers.into_iter().filter_map(|a| a.set_cookie).collect();
                redis::delete(&ctx.control, &keys_of(c, &created)).await?;
            }
        }
    }

    eprintln!("e2e-bench: main table, {} rounds", args.rounds);
    let mut cells: BTreeMap<(usize, Contender), Cells> = BTreeMap::new();
    for round in 0..args.rounds {
        eprintln!("round {}/{}", round + 1, args.rounds);
        for (si, scenario) in args.main_scenarios().into_iter().enumerate() {
            for c in rotated(&contenders_for(args, scenario), round) {
                let sessions = pool_of(c, scenario);
                let cell = ctx.cell(c, scenario, &sessions).await?;
                cells.entry((si, c)).or_default().add(&cell);
            }
        }
    }

    writeln!(
        report,
        "### Throughput and latency ({} live sessions per contender, {} connections)\n",
        args.sessions, args.concurrency
    )?;
    writeln!(
        report,
        "| scenario | contender | req/s (median) | req/s per round | p50 ms | p99 ms | round trips/req (top-level commands) | Redis commands/req incl. in-script | CPU µs/req app + Redis | vs floor | vs tower-sessions | checks |"
    )?;
    writeln!(
        report,
        "|---|---|---:|---|---:|---:|---|---:|---:|---:|---:|---|"
    )?;
    let mut details = String::new();
    for (si, scenario) in args.main_scenarios().into_iter().enumerate() {
        let rps_of = |c: Contender| cells.get(&(si, c)).map(|x| x.rps.clone());
        let floor = rps_of(Contender::Floor);
        let ts = rps_of(Contender::TowerSessions);
        for c in contenders_for(args, scenario) {
            let Some(cell) = cells.get_mut(&(si, c)) else {
                continue;
            };
            let (p50, p99) = cell.percentiles();
            let cen = census
                .get(&(scenario.name(), c))
                .cloned()
                .unwrap_or_default();
            let vs = |other: &Option<Vec<f64>>| {
                other
                    .as_ref()
                    .map_or(f64::NAN, |o| paired_ratio(&cell.rps, o))
            };
            let checks = if cell.bad == 0 {
                match scenario {
                    Scenario::Incr => "ok (counter = 200s)".to_owned(),
                    Scenario::Login => "ok (every key exists)".to_owned(),
                    Scenario::Read => "ok (username matches)".to_owned(),
                    Scenario::Anon => "ok".to_owned(),
                    Scenario::Untouched => "ok (no Set-Cookie)".to_owned(),
                }
            } else {
                format!("**{} bad**", cell.bad)
            };
            writeln!(
                report,
                "| {} | {} | {:.0} | {} | {:.2} | {:.2} | {:.2} ({}) | {:.2} | {:.1} | {} | {} | {} |",
                scenario.name(),
                c.name(),
                cell.median_rps(),
                cell.rps
                    .iter()
                    .map(|r| format!("{r:.0}"))
                    .collect::<Vec<_>>()
                    .join(" / "),
                p50,
                p99,
                cen.top_per_request(),
                cen.top_names(),
                cell.commands_per_request(),
                cell.server_cpu_us(),
                if c == Contender::Floor {
                    "1.00×".to_owned()
                } else {
                    fmt_ratio(vs(&floor))
                },
                if c == Contender::TowerSessions {
                    "1.00×".to_owned()
                } else {
                    fmt_ratio(vs(&ts))
                },
                checks,
            )?;
            let (app_us, redis_us, client_us) = cell.cpu_us();
            writeln!(
                details,
                "| {} | {} | {} | {:.2} | {} | {:.1} | {app_us:.1} / {redis_us:.1} / {client_us:.1} | {:.2} |",
                scenario.name(),
                c.name(),
                cen.top_names(),
                cen.scripted_per_request(),
                cell.breakdown(),
                cell.redis_usec_per_request(&cen),
                cell.per_request(cell.cpu.app_switches),
            )?;
        }
    }
    writeln!(
        report,
        "\nCommands per request, in detail (MONITOR census of {CENSUS_REQUESTS} sequential requests; commandstats over the timed cells):\n"
    )?;
    writeln!(
        report,
        "| scenario | contender | sent by the app | run inside scripts /req | commandstats per request (all) | Redis µs/req executing them | CPU µs/req: apps / redis-server / load generator | app context switches/req |"
    )?;
    writeln!(report, "|---|---|---|---:|---|---:|---|---:|")?;
    report.push_str(&details);
    cache_table(args, &census, &mut cells, report)?;
    Ok(())
}

/// The read cache beside this crate without it, its touch-interval twin and the floor.
fn cache_table(
    args: &Args,
    census: &HashMap<(&'static str, Contender), redis::Census>,
    cells: &mut BTreeMap<(usize, Contender), Cells>,
    report: &mut String,
) -> Res<()> {
    if !args.has(Contender::OursCached) {
        return Ok(());
    }
    writeln!(
        report,
        "\n### Read cache (touch interval {} s; hit rate over the measured phases; bytes as the cache counts them)\n",
        apps::TOUCH_INTERVAL.as_secs()
    )?;
    writeln!(
        report,
        "| scenario | contender | req/s (median) | p50 ms | p99 ms | round trips/req | Redis CPU µs/req | app CPU µs/req | vs floor (req/s) | Redis CPU vs floor | cache hit rate, measured (whole cell) | hits / misses, measured | sessions cached | bytes per cached session |"
    )?;
    writeln!(
        report,
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---:|"
    )?;
    for (si, scenario) in args.main_scenarios().into_iter().enumerate() {
        if !contenders_for(args, scenario).contains(&Contender::OursCached) {
            continue;
        }
        let floor = cells
            .get(&(si, Contender::Floor))
            .map(|f| (f.rps.clone(), f.cpu_us().1));
        for c in [
            Contender::Floor,
            Contender::Ours,
            Contender::OursTouch,
            Contender::OursCached,
        ] {
            if !contenders_for(args, scenario).contains(&c) {
                continue;
            }
            let Some(cell) = cells.get_mut(&(si, c)) else {
                continue;
            };
            let (p50, p99) = cell.percentiles();
            let (app_us, redis_us, _) = cell.cpu_us();
            let cen = census
                .get(&(scenario.name(), c))
                .cloned()
                .unwrap_or_default();
            let (vs_rps, vs_redis) = match &floor {
                Some((rps, redis)) => (paired_ratio(&cell.rps, rps), redis_us / redis),
                None => (f64::NAN, f64::NAN),
            };
            let cache = match cell.cache {
                Some(k) => format!(
                    "{:.1}% ({:.1}%) | {} / {} | {} | {}",
                    100.0 * k.hit_rate(),
                    100.0 * k.hit_rate_all(),
                    k.hits,
                    k.misses,
                    k.entries,
                    fmt_bytes(k.bytes_per_entry())
                ),
                None => "– | – | – | –".to_owned(),
            };
            writeln!(
                report,
                "| {} | {} | {:.0} | {p50:.2} | {p99:.2} | {:.2} ({}) | {redis_us:.1} | {app_us:.1} | {} | {} | {cache} |",
                scenario.name(),
                c.name(),
                cell.median_rps(),
                cen.top_per_request(),
                cen.top_names(),
                fmt_ratio(vs_rps),
                fmt_ratio(vs_redis),
            )?;
        }
    }
    Ok(())
}

/// The read cache starts its tracking connection on its first load and serves nothing
/// until that connection has proved it is current: reads one session until a read is
/// served from memory, so that the census and the cells see the cache at work.
async fn wait_for_cache(ctx: &mut Ctx<'_>, session: &SessionRef) -> Res<()> {
    let addr = ctx.addrs[&Contender::OursCached];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        load::drive(
            addr,
            vec![("/read".to_owned(), Some(session.cookie.clone())); 2],
            1,
        )
        .await?;
        if ctx.cached.cache_stats().is_some_and(|s| s.hits > 0) {
            eprintln!(
                "e2e-bench: read cache serving after {} ms",
                started.elapsed().as_millis()
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ctx.fail("the read cache served no read within 10 s of its first load".to_owned());
    Ok(())
}

/// Requests of a census that were answered 200.
fn census_requests(answers: &[load::Answer]) -> u64 {
    answers.iter().filter(|a| a.status == 200).count() as u64
}

/// `read` throughput as sessions grow from 5 to 50 to 500 user fields.
async fn sizes(ctx: &mut Ctx<'_>, report: &mut String) -> Res<()> {
    let args = ctx.args;
    let contenders: Vec<Contender> = [
        Contender::Ours,
        Contender::TowerSessions,
        Contender::Floor,
        Contender::OursCached,
    ]
    .into_iter()
    .filter(|c| args.has(*c))
    .collect();
    const SIZES: [usize; 3] = [5, 50, 500];
    eprintln!(
        "e2e-bench: fields curve, {} sessions per contender and size",
        args.size_sessions
    );
    let mut pools: HashMap<(usize, Contender), Arc<Vec<SessionRef>>> = HashMap::new();
    for (zi, size) in SIZES.into_iter().enumerate() {
        for (ci, c) in contenders.iter().enumerate() {
            let base = 10_000_000 + (zi * 10 + ci) as u64 * 100_000;
            let sessions = setup(ctx.addrs[c], args.size_sessions, size, base).await?;
            pools.insert((size, *c), Arc::new(sessions));
        }
    }
    let mut cells: BTreeMap<(usize, Contender), Cells> = BTreeMap::new();
    // Bytes per cached session of each size: what the cache grew by over the first
    // cell of that size (sessions of other sizes stay in it meanwhile).
    let mut cache_growth: HashMap<usize, (usize, usize)> = HashMap::new();
    for round in 0..args.size_rounds {
        for size in SIZES {
            for c in rotated(&contenders, round) {
                let before = ctx.cached.cache_stats();
                let cell = ctx.cell(c, Scenario::Read, &pools[&(size, c)]).await?;
                if round == 0 && c == Contender::OursCached {
                    if let (Some(a), Some(b)) = (before, ctx.cached.cache_stats()) {
                        cache_growth.insert(
                            size,
                            (
                                b.entries.saturating_sub(a.entries),
                                b.bytes.saturating_sub(a.bytes),
                            ),
                        );
                    }
                }
                cells.entry((size, c)).or_default().add(&cell);
            }
        }
    }
    writeln!(
        report,
        "\n### `read` as sessions grow ({} sessions per contender and size, {} rounds)\n",
        args.size_sessions, args.size_rounds
    )?;
    writeln!(
        report,
        "| user fields | contender | req/s (median) | p50 ms | p99 ms | CPU µs/req app + Redis (app / Redis) | vs floor | vs tower-sessions | cache hit rate | bytes per cached session (sessions added) |"
    )?;
    writeln!(report, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for size in SIZES {
        let floor = cells.get(&(size, Contender::Floor)).map(|c| c.rps.clone());
        let ts = cells
            .get(&(size, Contender::TowerSessions))
            .map(|c| c.rps.clone());
        for c in &contenders {
            let Some(cell) = cells.get_mut(&(size, *c)) else {
                continue;
            };
            let (p50, p99) = cell.percentiles();
            let vs =
                |o: &Option<Vec<f64>>| o.as_ref().map_or(f64::NAN, |o| paired_ratio(&cell.rps, o));
            let (hit_rate, per_session) = match (cell.cache, cache_growth.get(&size)) {
                (Some(k), Some(&(entries, bytes))) => (
                    format!("{:.1}%", 100.0 * k.hit_rate()),
                    if entries == 0 {
                        "–".to_owned()
                    } else {
                        format!("{} ({entries})", fmt_bytes(bytes as f64 / entries as f64))
                    },
                ),
                _ => ("–".to_owned(), "–".to_owned()),
            };
            writeln!(
                report,
                "| {size} | {} | {:.0} | {p50:.2} | {p99:.2} | {:.1} ({:.1} / {:.1}) | {} | {} | {hit_rate} | {per_session} |",
                c.name(),
                cell.median_rps(),
                cell.server_cpu_us(),
                cell.cpu_us().0,
                cell.cpu_us().1,
                fmt_ratio(vs(&floor)),
                fmt_ratio(vs(&ts)),
            )?;
        }
    }
    Ok(())
}

/// Redis memory per session, this crate vs tower-sessions.
async fn memory(ctx: &mut Ctx<'_>, report: &mut String) -> Res<()> {
    let args = ctx.args;
    let n = args.memory_sessions;
    writeln!(
        report,
        "\n### Redis memory per session ({n} sessions each, `MEMORY USAGE key SAMPLES 0` averaged)\n"
    )?;
    writeln!(
        report,
        "| session | contender | what is stored | MEMORY USAGE avg (bytes) | used_memory growth / session (bytes) |"
    )?;
    writeln!(report, "|---|---|---|---:|---:|")?;
    for (fields, label) in [(2, "username + page_views"), (5, "five user fields")] {
        for c in [Contender::Ours, Contender::TowerSessions] {
            if !args.has(c) {
                continue;
            }
            eprintln!("e2e-bench: memory, {} × {label}, {}", n, c.name());
            let used_before =
                redis::info_field(&ctx.control, InfoKind::Memory, "used_memory").await?;
            let sessions = setup(ctx.addrs[&c], n, fields, 50_000_000).await?;
            let used_after =
                redis::info_field(&ctx.control, InfoKind::Memory, "used_memory").await?;
            let cookies: Vec<String> = sessions.iter().map(|s| s.cookie.clone()).collect();
            let keys = keys_of(c, &cookies);
            let total = redis::memory_usage(&ctx.control, &keys).await?;
            let what = match c {
                Contender::TowerSessions => format!(
                    "one string: MessagePack record (id, {fields} user values as JSON values, expiry)"
                ),
                _ => format!(
                    "one hash: {fields} user + 5 internal fields (created_at, last_accessed_at, session_ttl, absolute_expires_at, csrf_token)"
                ),
            };
            writeln!(
                report,
                "| {label} | {} | {what} | {:.0} | {:.0} |",
                c.name(),
                total as f64 / n as f64,
                used_after.saturating_sub(used_before) as f64 / n as f64,
            )?;
            redis::delete(&ctx.control, &keys).await?;
        }
    }
    Ok(())
}

/// `read` with the base keyspace, then with `--big` more live sessions.
async fn scale(ctx: &mut Ctx<'_>, report: &mut String) -> Res<()> {
    let args = ctx.args;
    let contenders: Vec<Contender> = [Contender::Ours, Contender::TowerSessions, Contender::Floor]
        .into_iter()
        .filter(|c| args.has(*c))
        .collect();
    // Start from an empty keyspace: 1,000 sessions per contender to read from, then the
    // filler. (The script cache survives FLUSHALL.)
    let _: () = ctx
        .control
        .custom(fred::cmd!("FLUSHALL"), Vec::<String>::new())
        .await?;
    let mut pools = HashMap::new();
    for (i, c) in contenders.iter().enumerate() {
        let sessions = setup(ctx.addrs[c], 1000, 2, 60_000_000 + i as u64 * 100_000).await?;
        pools.insert(*c, Arc::new(sessions));
    }
    let mut small: BTreeMap<Contender, Cells> = BTreeMap::new();
    let mut big: BTreeMap<Contender, Cells> = BTreeMap::new();
    let keys_small = redis::dbsize(&ctx.control).await?;
    eprintln!("e2e-bench: read with {keys_small} keys");
    for round in 0..args.size_rounds {
        for c in rotated(&contenders, round) {
            let cell = ctx.cell(c, Scenario::Read, &pools[&c]).await?;
            small.entry(c).or_default().add(&cell);
        }
    }
    let mem_before = redis::info_field(&ctx.control, InfoKind::Memory, "used_memory").await?;
    let t = Instant::now();
    eprintln!("e2e-bench: adding {} filler sessions", args.big);
    redis::populate_filler(&ctx.control, args.big).await?;
    let fill_secs = t.elapsed().as_secs_f64();
    let mem_after = redis::info_field(&ctx.control, InfoKind::Memory, "used_memory").await?;
    let keys_big = redis::dbsize(&ctx.control).await?;
    eprintln!("e2e-bench: read with {keys_big} keys");
    for round in 0..args.size_rounds {
        for c in rotated(&contenders, round) {
            let cell = ctx.cell(c, Scenario::Read, &pools[&c]).await?;
            big.entry(c).or_default().add(&cell);
        }
    }
    writeln!(
        report,
        "\n### `read` with few vs many live sessions ({keys_small} vs {keys_big} keys in Redis; the {} filler sessions took {fill_secs:.1} s to add in Lua batches and {} MB)\n",
        args.big,
        mem_after.saturating_sub(mem_before) / 1_000_000
    )?;
    writeln!(
        report,
        "| contender | req/s, {keys_small} keys | p99 ms | CPU µs/req | req/s, {keys_big} keys | p99 ms | CPU µs/req | many / few (req/s) |"
    )?;
    writeln!(report, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
    for c in &contenders {
        let (Some(s), Some(b)) = (small.get_mut(c), big.get_mut(c)) else {
            continue;
        };
        let (_, s99) = s.percentiles();
        let (_, b99) = b.percentiles();
        writeln!(
            report,
            "| {} | {:.0} | {s99:.2} | {:.1} | {:.0} | {b99:.2} | {:.1} | {} |",
            c.name(),
            s.median_rps(),
            s.server_cpu_us(),
            b.median_rps(),
            b.server_cpu_us(),
            fmt_ratio(b.median_rps() / s.median_rps()),
        )?;
    }
    Ok(())
}
