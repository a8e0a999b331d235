//! Whole-process benchmark of bigid-auth-mcp: the real release binary against
//! the fake BigID, next to the floor (the fake called directly), in one run.
//!
//! Run: `cargo bench --bench whole_process` (prints a Markdown report on
//! stdout, progress on stderr). Scale with the `BENCH_*` variables in
//! [`Settings::from_env`]; docs/performance.md explains the phases.
//! `BENCH_PHASES=callgrind` counts instructions per call instead
//! (benches/callgrind.sh).

mod callgrind;
mod fake;
mod floor;
mod http;
mod load;
mod process;
mod report;
mod stats;
mod stdio;

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{
    fake::Fake,
    floor::{Endpoint, Floor},
    process::Memory,
    stats::{Samples, Summary},
    stdio::StdioServer,
};

/// Knobs, from `BENCH_*` environment variables.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Rounds of every phase, for the spread (`BENCH_ROUNDS`, 3).
    pub rounds: usize,
    /// Spawns per round for spawn → initialize (`BENCH_SPAWNS`, 20).
    pub spawns: usize,
    /// Timed sequential calls per stdio phase and round (`BENCH_CALLS`, 2000).
    pub calls: usize,
    /// Untimed calls before each sequential phase (`BENCH_WARMUP_CALLS`, 200).
    pub warmup_calls: usize,
    /// Timed seconds per HTTP phase, floor and server each (`BENCH_HTTP_SECS`, 2).
    pub http_time: Duration,
    /// Untimed seconds before each HTTP phase (`BENCH_HTTP_WARMUP_SECS`, 0.5).
    pub http_warmup: Duration,
    /// Concurrent sessions of the HTTP phases (`BENCH_CONCURRENCY`, "1,16,64").
    pub concurrency: Vec<usize>,
    /// Phases to run (`BENCH_PHASES`, "spawn,stdio,http"; `callgrind` on
    /// request); `BENCH_HTTP=0` drops `http`.
    pub phases: Vec<String>,
    /// Runtime threads of the fake BigID (`BENCH_FAKE_THREADS`, 1).
    pub fake_threads: usize,
    /// Runtime threads of the load generator (`BENCH_CLIENT_THREADS`, 1).
    pub client_threads: usize,
    /// The whole run is killed after this long (`BENCH_DEADLINE_SECS`, 900).
    pub deadline: Duration,
}

/// The phase groups `BENCH_PHASES` selects from; the first three by default.
const PHASES: [&str; 4] = ["spawn", "stdio", "http", "callgrind"];

impl Settings {
    /// True when the phase group `name` is to run.
    pub fn runs(&self, name: &str) -> bool {
        self.phases.iter().any(|p| p == name)
    }

    fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            rounds: var("BENCH_ROUNDS", 3)?.max(1),
            spawns: var("BENCH_SPAWNS", 20)?.max(1),
            calls: var("BENCH_CALLS", 2000)?.max(1),
            warmup_calls: var("BENCH_WARMUP_CALLS", 200)?,
            http_time: Duration::try_from_secs_f64(var("BENCH_HTTP_SECS", 2.0)?)?,
            http_warmup: Duration::try_from_secs_f64(var("BENCH_HTTP_WARMUP_SECS", 0.5)?)?,
            concurrency: match std::env::var("BENCH_CONCURRENCY") {
                Ok(list) => list
                    .split(',')
                    .map(|n| n.trim().parse::<usize>().map(|n| n.max(1)))
                    .collect::<Result<_, _>>()
                    .context("BENCH_CONCURRENCY: comma-separated session counts")?,
                Err(_) => vec![1, 16, 64],
            },
            phases: {
                let list = std::env::var("BENCH_PHASES").unwrap_or_else(|_| PHASES[..3].join(","));
                let mut phases: Vec<String> =
                    list.split(',').map(|p| p.trim().to_owned()).collect();
                if let Some(unknown) = phases.iter().find(|p| !PHASES.contains(&p.as_str())) {
                    bail!("BENCH_PHASES: unknown phase `{unknown}` (known: {PHASES:?})");
                }
                if var("BENCH_HTTP", 1u8)? == 0 {
                    phases.retain(|p| p != "http");
                }
                phases
            },
            fake_threads: var("BENCH_FAKE_THREADS", 1)?,
            client_threads: var("BENCH_CLIENT_THREADS", 1)?,
            deadline: Duration::from_secs(var("BENCH_DEADLINE_SECS", 900)?),
        })
    }
}

fn var<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v} is not a valid value")),
        Err(_) => Ok(default),
    }
}

/// One sequential stdio phase: a fresh server process, one tool, one floor.
#[derive(Debug, Clone, Copy)]
pub struct StdioPhase {
    /// Row label.
    pub label: &'static str,
    tool: &'static str,
    arguments: &'static str,
    server_args: &'static [&'static str],
    /// The upstream endpoint the same call would hit.
    pub floor: Endpoint,
    /// True when the calls must be answered from the token cache.
    pub cached: bool,
}

/// The stdio phases, in run order.
pub const STDIO_PHASES: [StdioPhase; 3] = [
    StdioPhase {
        label: "`create_session`",
        tool: "create_session",
        arguments: r#"{"username":"demo","password":"demo"}"#,
        server_args: &[],
        floor: Endpoint::Sessions,
        cached: false,
    },
    StdioPhase {
        label: "`refresh_access_token`, `--no-token-cache`",
        tool: "refresh_access_token",
        arguments: r#"{"user_token":"demo-user-token"}"#,
        server_args: &["--no-token-cache"],
        floor: Endpoint::Refresh,
        cached: false,
    },
    StdioPhase {
        label: "`refresh_access_token`, cache hit",
        tool: "refresh_access_token",
        arguments: r#"{"user_token":"demo-user-token"}"#,
        server_args: &[],
        floor: Endpoint::Refresh,
        cached: true,
    },
];

/// What one phase measured in one round.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measured {
    /// Latencies and throughput.
    pub summary: Summary,
    /// TCP connections the server opened to the fake in its lifetime.
    pub upstream_connections: usize,
    /// The server's memory at the end of the phase.
    pub memory: Memory,
    /// The server's CPU time (all threads) per timed call.
    pub cpu_per_call: Duration,
}

/// Everything one round measured.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// Every spawn → initialize time of the round.
    pub spawns: Vec<Duration>,
    /// Every spawn → echo time of `cat`, the spawn floor.
    pub spawn_floor: Vec<Duration>,
    /// Idle memory after each spawn's initialize.
    pub idle: Vec<Memory>,
    /// The floor for `POST /sessions`, sequential.
    pub floor_sessions: Summary,
    /// The floor for `GET /refresh-access-token`, sequential.
    pub floor_refresh: Summary,
    /// One entry per [`STDIO_PHASES`] element.
    pub stdio: Vec<Measured>,
    /// Per HTTP concurrency level: (floor, server).
    pub http: Vec<(usize, Summary, Measured)>,
    /// The same with `--stateless` (no sessions, plain JSON answers).
    pub http_stateless: Vec<(usize, Summary, Measured)>,
}

/// How long a fresh server sits after `initialize` before its idle memory is read.
const IDLE_SETTLE: Duration = Duration::from_millis(50);

fn main() -> ExitCode {
    if let Some(code) = callgrind::floor_child() {
        return code;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("whole_process: {e:#}");
            process::kill_all();
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut settings = Settings::from_env()?;
    process::start_watchdog(settings.deadline);
    // reqwest is built without a default TLS crypto provider, as in the server.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let binary = process::binary();
    if !binary.exists() {
        bail!("no server binary at {}", binary.display());
    }
    let machine = report::Machine::read(&binary);
    let fake = Fake::start(settings.fake_threads)?;
    let runtime = match settings.client_threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    if settings.runs("callgrind") {
        eprintln!(
            "callgrind, {} and {} calls per run",
            settings.calls,
            2 * settings.calls
        );
        let started = Instant::now();
        let counts = callgrind::run(&fake, &runtime, settings.calls)?;
        let machine = machine.clone().finish(started.elapsed());
        print!("{}", callgrind::render(&counts, &machine.describe()));
        settings.phases.retain(|p| p != "callgrind");
        if settings.phases.is_empty() {
            return Ok(());
        }
    }
    let floor = Floor::new(fake.url())?;
    let started = Instant::now();
    let mut rounds = Vec::with_capacity(settings.rounds);
    for r in 1..=settings.rounds {
        eprintln!("round {r}/{}", settings.rounds);
        rounds.push(round(&mut settings, &fake, &runtime, &floor)?);
    }
    let machine = machine.finish(started.elapsed());
    print!("{}", report::render(&settings, &machine, &rounds));
    Ok(())
}

fn round(
    settings: &mut Settings,
    fake: &Fake,
    runtime: &tokio::runtime::Runtime,
    floor: &Floor,
) -> anyhow::Result<Round> {
    let mut round = Round::default();
    let (warmup, calls) = (settings.warmup_calls, settings.calls);

    if settings.runs("stdio") {
        eprintln!("  floor, sequential");
        round.floor_sessions = runtime
            .block_on(floor.sequential(Endpoint::Sessions, warmup, calls))?
            .summary();
        round.floor_refresh = runtime
            .block_on(floor.sequential(Endpoint::Refresh, warmup, calls))?
            .summary();
    }

    if settings.runs("spawn") {
        eprintln!("  spawn → initialize ×{}", settings.spawns);
        let url = fake.url().as_str();
        for _ in 0..settings.spawns {
            let (server, elapsed) = StdioServer::spawn_and_initialize(&["--bigid-url", url])?;
            std::thread::sleep(IDLE_SETTLE);
            round.idle.push(process::memory(server.pid()));
            round.spawns.push(elapsed);
            round.spawn_floor.push(stdio::spawn_floor()?);
        }
    }

    if settings.runs("stdio") {
        for phase in STDIO_PHASES {
            eprintln!("  stdio {}", phase.label);
            round.stdio.push(stdio_phase(settings, fake, &phase)?);
        }
    }

    if settings.runs("http") {
        for &sessions in &settings.concurrency.clone() {
            eprintln!("  http ×{sessions}");
            let floor = runtime
                .block_on(floor.concurrent(sessions, settings.http_warmup, settings.http_time))?
                .summary();
            let stateful = runtime.block_on(http_phase(settings, fake, sessions, false));
            let stateless = runtime.block_on(http_phase(settings, fake, sessions, true));
            match stateful.and_then(|a| stateless.map(|b| (a, b))) {
                Ok((stateful, stateless)) => {
                    round.http.push((sessions, floor, stateful));
                    round.http_stateless.push((sessions, floor, stateless));
                }
                Err(e) => {
                    eprintln!("  HTTP phases skipped: {e:#}");
                    settings.phases.retain(|p| p != "http");
                    break;
                }
            }
        }
    }
    Ok(round)
}

fn stdio_phase(settings: &Settings, fake: &Fake, phase: &StdioPhase) -> anyhow::Result<Measured> {
    let before = fake.connections();
    let mut args = vec!["--bigid-url", fake.url().as_str()];
    args.extend_from_slice(phase.server_args);
    let (mut server, _) = StdioServer::spawn_and_initialize(&args)?;

    // The first answer is checked in full; it also opens the upstream connection.
    let first = server.call(phase.tool, phase.arguments)?.to_owned();
    stdio::check_success(&first, phase.tool)?;
    for _ in 0..settings.warmup_calls {
        server.call(phase.tool, phase.arguments)?;
    }
    let cached = server.call(phase.tool, phase.arguments)?;
    let is_cached = stdio::check_success(cached, phase.tool)?
        .get("cached")
        .and_then(serde_json::Value::as_bool)
        == Some(true);
    if phase.cached != is_cached {
        bail!("{}: expected cached = {}", phase.label, phase.cached);
    }

    let mut samples = Samples::with_capacity(settings.calls);
    let cpu_before = process::cpu_time(server.pid());
    let start = Instant::now();
    for _ in 0..settings.calls {
        let t = Instant::now();
        let line = server.call(phase.tool, phase.arguments)?;
        samples.push(t.elapsed());
        if !stdio::looks_successful(line) {
            bail!("{}: a call failed: {line}", phase.label);
        }
    }
    samples.wall = start.elapsed();
    let cpu = process::cpu_time(server.pid()).saturating_sub(cpu_before);
    let memory = process::memory(server.pid());
    drop(server);
    Ok(Measured {
        cpu_per_call: per_call(cpu, samples.len()),
        summary: samples.summary(),
        upstream_connections: fake.connections() - before,
        memory,
    })
}

async fn http_phase(
    settings: &Settings,
    fake: &Fake,
    sessions: usize,
    stateless: bool,
) -> anyhow::Result<Measured> {
    let before = fake.connections();
    // Every call goes upstream: the cache would answer all but the first.
    let args: &[&str] = if stateless {
        &["--no-token-cache", "--stateless"]
    } else {
        &["--no-token-cache"]
    };
    let server = http::HttpServer::start(fake.url(), args).await?;
    let (mut samples, cpu) =
        http::load(&server, sessions, settings.http_warmup, settings.http_time).await?;
    let memory = process::memory(server.pid());
    drop(server);
    Ok(Measured {
        cpu_per_call: per_call(cpu, samples.len()),
        summary: samples.summary(),
        upstream_connections: fake.connections() - before,
        memory,
    })
}

fn per_call(cpu: Duration, calls: usize) -> Duration {
    cpu / u32::try_from(calls.max(1)).unwrap_or(u32::MAX)
}
