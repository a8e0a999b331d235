//! The Markdown report: medians across rounds with their spread, ratios to
//! the floor, and the performance targets checked against the medians.

use std::{fmt::Write as _, path::Path, time::Duration};

use crate::{
    Round, STDIO_PHASES, Settings,
    floor::Endpoint,
    stats::{Spread, Summary, median_duration, spread},
};

/// What the numbers were taken on.
#[derive(Debug, Clone)]
pub struct Machine {
    cpu: String,
    cores: usize,
    kernel: String,
    load_before: String,
    load_after: String,
    binary_bytes: u64,
    elapsed: Duration,
}

impl Machine {
    /// Reads the CPU, kernel, load average and binary size at the start.
    pub fn read(binary: &Path) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self {
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
                .unwrap_or_else(|| "unknown CPU".into()),
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            load_before: load_average(),
            load_after: String::new(),
            binary_bytes: std::fs::metadata(binary).map_or(0, |m| m.len()),
            elapsed: Duration::ZERO,
        }
    }

    /// Adds the load average at the end and the run time.
    pub fn finish(mut self, elapsed: Duration) -> Self {
        self.load_after = load_average();
        self.elapsed = elapsed;
        self
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The 1-, 5- and 15-minute load averages.
fn load_average() -> String {
    read_trimmed("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The performance targets (docs/performance.md).
const SPAWN_TARGET: Duration = Duration::from_millis(5);
const IDLE_RSS_TARGET_KIB: f64 = 10.0 * 1024.0;
const PEAK_RSS_TARGET_KIB: f64 = 40.0 * 1024.0;
const STDIO_OVER_FLOOR_US: f64 = 40.0;
const STDIO_P99_US: f64 = 250.0;
const HTTP1_OVER_FLOOR_US: f64 = 60.0;
const HTTP_LOAD_SESSIONS: usize = 64;
const HTTP_LOAD_SHARE: f64 = 0.40;
const HTTP_LOAD_P99_US: f64 = 10_000.0;

/// The whole report.
pub fn render(settings: &Settings, machine: &Machine, rounds: &[Round]) -> String {
    let mut out = String::new();
    let mut targets = Vec::new();
    header(&mut out, settings, machine);
    startup(&mut out, &mut targets, rounds, machine);
    sequential(&mut out, &mut targets, rounds);
    http(&mut out, &mut targets, rounds, false);
    http(&mut out, &mut targets, rounds, true);
    verdicts(&mut out, &targets);
    out
}

/// One target: what it is, what was measured, whether it holds.
struct Target {
    what: String,
    measured: String,
    met: bool,
}

fn target(targets: &mut Vec<Target>, what: impl Into<String>, measured: String, met: bool) {
    targets.push(Target {
        what: what.into(),
        measured,
        met,
    });
}

impl Machine {
    /// One line: CPU, kernel, load, run time and binary size.
    pub fn describe(&self) -> String {
        format!(
            "Machine: {} ({} cores), Linux {}. Load average (1/5/15 min) {} before, {} after; \
             run took {:.0} s. Binary {} ({} bytes).",
            self.cpu,
            self.cores,
            self.kernel,
            self.load_before,
            self.load_after,
            self.elapsed.as_secs_f64(),
            mib(self.binary_bytes as f64 / 1024.0),
            self.binary_bytes,
        )
    }
}

fn header(out: &mut String, settings: &Settings, machine: &Machine) {
    let _ = writeln!(out, "## bigid-auth-mcp whole-process benchmark\n");
    let _ = writeln!(out, "{}\n", machine.describe());
    let _ = writeln!(
        out,
        "Settings: {} rounds; {} spawns per round; {} timed sequential calls per stdio phase \
         (after {} untimed); HTTP phases {} s each after {} s of warm-up, sessions {:?}; fake \
         BigID on {} runtime thread(s), load generator on {}. Cells read `median (min–max)` \
         over the rounds; p50/p99 are per round.\n",
        settings.rounds,
        settings.spawns,
        settings.calls,
        settings.warmup_calls,
        settings.http_time.as_secs_f64(),
        settings.http_warmup.as_secs_f64(),
        settings.concurrency,
        settings.fake_threads.max(1),
        settings.client_threads.max(1),
    );
}

fn startup(out: &mut String, targets: &mut Vec<Target>, rounds: &[Round], machine: &Machine) {
    let all: Vec<Duration> = rounds.iter().flat_map(|r| r.spawns.clone()).collect();
    let count = all.len();
    let _ = writeln!(out, "### Start-up and memory\n");
    if count == 0 {
        let _ = writeln!(out, "Not measured in this run.\n");
        return;
    }
    let median = median_duration(all);
    let per_round = spread(rounds.iter().map(|r| us(median_duration(r.spawns.clone()))));
    let floor_all: Vec<Duration> = rounds.iter().flat_map(|r| r.spawn_floor.clone()).collect();
    let floor_median = median_duration(floor_all);
    let floor_rounds = spread(
        rounds
            .iter()
            .map(|r| us(median_duration(r.spawn_floor.clone()))),
    );
    let rss: Vec<f64> = rounds
        .iter()
        .flat_map(|r| r.idle.iter().map(|m| m.rss_kib as f64))
        .collect();
    let rss_all = spread(rss.iter().copied());
    let rss_rounds = spread(
        rounds
            .iter()
            .map(|r| spread(r.idle.iter().map(|m| m.rss_kib as f64)).median),
    );

    let _ = writeln!(out, "| measure | median | per-round medians |");
    let _ = writeln!(out, "|---|---:|---:|");
    let _ = writeln!(
        out,
        "| spawn → `initialize` answered ({count} spawns) | {} | {}–{} |",
        dur(median),
        fmt_us(per_round.min),
        fmt_us(per_round.max)
    );
    let _ = writeln!(
        out,
        "| spawn floor: `cat` echoing the same line, same pipes | {} | {}–{} |",
        dur(floor_median),
        fmt_us(floor_rounds.min),
        fmt_us(floor_rounds.max)
    );
    let _ = writeln!(
        out,
        "| idle RSS after `initialize` (VmRSS) | {} | {}–{} |",
        mib(rss_all.median),
        mib(rss_rounds.min),
        mib(rss_rounds.max)
    );
    let _ = writeln!(
        out,
        "| binary size (stripped) | {} | |\n",
        mib(machine.binary_bytes as f64 / 1024.0)
    );
    target(
        targets,
        "spawn → `initialize` ≤ 5 ms median",
        dur(median),
        median <= SPAWN_TARGET,
    );
    target(
        targets,
        "idle RSS ≤ 10 MiB",
        mib(rss_all.median),
        rss_all.median <= IDLE_RSS_TARGET_KIB,
    );
}

fn sequential(out: &mut String, targets: &mut Vec<Target>, rounds: &[Round]) {
    let _ = writeln!(
        out,
        "### Sequential `tools/call` over stdio (one client, one call at a time)\n"
    );
    if rounds.iter().all(|r| r.stdio.is_empty()) {
        let _ = writeln!(out, "Not measured in this run.\n");
        return;
    }
    let _ = writeln!(
        out,
        "Floor: the same request sent straight to the fake BigID with a keep-alive reqwest \
         client, in the same round.\n"
    );
    let _ = writeln!(
        out,
        "| phase | p50 | p99 | calls/s | floor p50 | floor p99 | floor calls/s | p50 − floor | \
         calls/s ÷ floor | server CPU/call | upstream conns | RSS after |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (i, phase) in STDIO_PHASES.iter().enumerate() {
        let pairs: Vec<(Summary, Summary)> = rounds
            .iter()
            .filter_map(|r| {
                let floor = match phase.floor {
                    Endpoint::Sessions => r.floor_sessions,
                    Endpoint::Refresh => r.floor_refresh,
                };
                r.stdio.get(i).map(|m| (m.summary, floor))
            })
            .collect();
        let row = Row::new(&pairs);
        let conns = rounds
            .iter()
            .filter_map(|r| r.stdio.get(i).map(|m| m.upstream_connections))
            .max()
            .unwrap_or(0);
        let rss = spread(
            rounds
                .iter()
                .filter_map(|r| r.stdio.get(i).map(|m| m.memory.rss_kib as f64)),
        );
        let cpu = spread(
            rounds
                .iter()
                .filter_map(|r| r.stdio.get(i).map(|m| us(m.cpu_per_call))),
        );
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            phase.label,
            span_us(row.p50),
            span_us(row.p99),
            span_rate(row.rate),
            span_us(row.floor_p50),
            span_us(row.floor_p99),
            span_rate(row.floor_rate),
            span_signed_us(row.over_floor),
            span_ratio(row.ratio),
            span_us(cpu),
            conns,
            mib(rss.median),
        );
        if phase.cached {
            target(
                targets,
                format!("{}: calls/s ≥ floor's", phase.label),
                format!("{} = {:.2}× floor", rate(row.rate.median), row.ratio.median),
                row.ratio.median >= 1.0,
            );
        } else {
            target(
                targets,
                format!("{}: p50 ≤ floor + 40 µs", phase.label),
                format!("floor + {}", fmt_us(row.over_floor.median)),
                row.over_floor.median <= STDIO_OVER_FLOOR_US,
            );
            target(
                targets,
                format!("{}: p99 ≤ 250 µs", phase.label),
                fmt_us(row.p99.median),
                row.p99.median <= STDIO_P99_US,
            );
        }
        target(
            targets,
            format!("{}: one upstream connection, reused", phase.label),
            conns.to_string(),
            conns <= 1,
        );
    }
    out.push('\n');
}

/// The HTTP table; the targets are judged on the default (stateful) mode only.
fn http(out: &mut String, targets: &mut Vec<Target>, rounds: &[Round], stateless: bool) {
    let phase = |r: &Round| -> Vec<(usize, Summary, crate::Measured)> {
        if stateless {
            r.http_stateless.clone()
        } else {
            r.http.clone()
        }
    };
    let levels: Vec<usize> = rounds
        .first()
        .map(|r| phase(r).iter().map(|(n, _, _)| *n).collect())
        .unwrap_or_default();
    if stateless {
        let _ = writeln!(
            out,
            "### The same with `--stateless` (no MCP sessions, plain JSON answers)\n"
        );
    } else {
        let _ = writeln!(
            out,
            "### Streamable HTTP, concurrent sessions calling in a loop\n"
        );
    }
    if levels.is_empty() {
        let _ = writeln!(out, "Not measured in this run.\n");
        return;
    }
    if !stateless {
        let _ = writeln!(
            out,
            "Each session calls `refresh_access_token` with its own user token on a server \
             started with `--no-token-cache`, so every call goes upstream. Floor: the fake called \
             directly with the same number of keep-alive workers.\n"
        );
    }
    let _ = writeln!(
        out,
        "| sessions | calls/s | p50 | p99 | floor calls/s | floor p50 | floor p99 | calls/s ÷ \
         floor | p50 − floor | server CPU/call | upstream conns | peak RSS (VmHWM) |"
    );
    let _ = writeln!(
        out,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for level in levels {
        let pairs: Vec<(Summary, Summary)> = rounds
            .iter()
            .filter_map(|r| {
                phase(r)
                    .iter()
                    .find(|(n, _, _)| *n == level)
                    .map(|(_, floor, m)| (m.summary, *floor))
            })
            .collect();
        let measured = || {
            rounds.iter().filter_map(move |r| {
                phase(r)
                    .iter()
                    .find(|(n, _, _)| *n == level)
                    .map(|(_, _, m)| *m)
            })
        };
        let row = Row::new(&pairs);
        let conns = measured()
            .map(|m| m.upstream_connections)
            .max()
            .unwrap_or(0);
        let peak = measured()
            .map(|m| m.memory.hwm_kib as f64)
            .fold(0.0, f64::max);
        let cpu = spread(measured().map(|m| us(m.cpu_per_call)));
        let _ = writeln!(
            out,
            "| {level} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            span_rate(row.rate),
            span_us(row.p50),
            span_us(row.p99),
            span_rate(row.floor_rate),
            span_us(row.floor_p50),
            span_us(row.floor_p99),
            span_ratio(row.ratio),
            span_signed_us(row.over_floor),
            span_us(cpu),
            conns,
            mib(peak),
        );
        if stateless {
            continue;
        }
        target(
            targets,
            format!("HTTP, {level} sessions: upstream connections ≤ sessions"),
            conns.to_string(),
            conns <= level,
        );
        if level == 1 {
            target(
                targets,
                "HTTP, 1 session: p50 ≤ floor + 60 µs",
                format!("floor + {}", fmt_us(row.over_floor.median)),
                row.over_floor.median <= HTTP1_OVER_FLOOR_US,
            );
        }
        if level == HTTP_LOAD_SESSIONS {
            target(
                targets,
                "HTTP, 64 sessions: calls/s ≥ 40 % of floor",
                format!("{:.0} %", row.ratio.median * 100.0),
                row.ratio.median >= HTTP_LOAD_SHARE,
            );
            target(
                targets,
                "HTTP, 64 sessions: p99 ≤ 10 ms",
                fmt_us(row.p99.median),
                row.p99.median <= HTTP_LOAD_P99_US,
            );
            target(
                targets,
                "HTTP, 64 sessions: peak RSS ≤ 40 MiB",
                mib(peak),
                peak <= PEAK_RSS_TARGET_KIB,
            );
        }
    }
    out.push('\n');
}

fn verdicts(out: &mut String, targets: &[Target]) {
    let _ = writeln!(out, "### Targets, judged on the medians\n");
    let _ = writeln!(out, "| target | measured | |");
    let _ = writeln!(out, "|---|---:|---|");
    for t in targets {
        let verdict = if t.met { "met" } else { "**missed**" };
        let _ = writeln!(out, "| {} | {} | {verdict} |", t.what, t.measured);
    }
    out.push('\n');
}

/// The per-round values of one table row, each with its spread.
struct Row {
    p50: Spread,
    p99: Spread,
    rate: Spread,
    floor_p50: Spread,
    floor_p99: Spread,
    floor_rate: Spread,
    over_floor: Spread,
    ratio: Spread,
}

impl Row {
    fn new(pairs: &[(Summary, Summary)]) -> Self {
        let of = |f: &dyn Fn(&(Summary, Summary)) -> f64| spread(pairs.iter().map(f));
        Self {
            p50: of(&|(s, _)| us(s.p50)),
            p99: of(&|(s, _)| us(s.p99)),
            rate: of(&|(s, _)| s.calls_per_sec),
            floor_p50: of(&|(_, f)| us(f.p50)),
            floor_p99: of(&|(_, f)| us(f.p99)),
            floor_rate: of(&|(_, f)| f.calls_per_sec),
            over_floor: of(&|(s, f)| us(s.p50) - us(f.p50)),
            ratio: of(&|(s, f)| {
                if f.calls_per_sec > 0.0 {
                    s.calls_per_sec / f.calls_per_sec
                } else {
                    0.0
                }
            }),
        }
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn dur(d: Duration) -> String {
    fmt_us(us(d))
}

/// Microseconds, or milliseconds from 1 ms on.
fn fmt_us(micros: f64) -> String {
    if micros.abs() >= 1000.0 {
        format!("{:.2} ms", micros / 1000.0)
    } else {
        format!("{micros:.1} µs")
    }
}

fn fmt_signed_us(micros: f64) -> String {
    let sign = if micros >= 0.0 { "+" } else { "−" };
    format!("{sign}{}", fmt_us(micros.abs()))
}

fn span_us(s: Spread) -> String {
    // The range drops the unit when it is the median's.
    let bare = |v: f64| {
        if s.max < 1000.0 {
            format!("{v:.1}")
        } else {
            fmt_us(v)
        }
    };
    format!("{} ({}–{})", fmt_us(s.median), bare(s.min), bare(s.max))
}

fn span_signed_us(s: Spread) -> String {
    format!(
        "{} ({}…{})",
        fmt_signed_us(s.median),
        fmt_signed_us(s.min),
        fmt_signed_us(s.max)
    )
}

fn rate(per_sec: f64) -> String {
    let n = per_sec.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn span_rate(s: Spread) -> String {
    format!("{} ({}–{})", rate(s.median), rate(s.min), rate(s.max))
}

fn span_ratio(s: Spread) -> String {
    format!("{:.2}× ({:.2}–{:.2})", s.median, s.min, s.max)
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}
