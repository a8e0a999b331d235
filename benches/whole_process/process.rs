//! The server under test as a child process: how it is started, how its
//! memory is read, and the watchdog that bounds every wait on it.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

// Environment variables that steer the binary, cleared so the host's never leak in.
use bigid_auth_mcp::config::ENVIRONMENT as CONTRACT_ENV;

/// Pids of live children, killed by the watchdog if the harness overruns.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// The binary under test: `BENCH_BIN`, or the one cargo built for this bench
/// (the `bench` profile inherits `release`).
pub fn binary() -> PathBuf {
    std::env::var_os("BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_bigid-auth-mcp")))
}

/// The server command with a clean contract environment and default logging
/// (what a user gets), its logs discarded.
pub fn command(args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for name in CONTRACT_ENV {
        command.env_remove(name);
    }
    command
}

/// Remembers a child for the watchdog.
pub fn register(child: &Child) {
    lock().push(child.id());
}

/// Forgets a child that has been waited for.
pub fn unregister(pid: u32) {
    lock().retain(|&p| p != pid);
}

fn lock() -> std::sync::MutexGuard<'static, Vec<u32>> {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Ends the whole harness, children included, once `budget` has passed: a
/// hung server must not hang the benchmark (every wait is bounded).
pub fn start_watchdog(budget: Duration) {
    let deadline = Instant::now() + budget;
    let spawned = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            while Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(250));
            }
            eprintln!(
                "whole_process: still running after {budget:?} (BENCH_DEADLINE_SECS); giving up"
            );
            kill_all();
            std::process::exit(3);
        });
    if let Err(e) = spawned {
        eprintln!("whole_process: no watchdog ({e}); running unguarded");
    }
}

/// SIGKILLs every registered child.
pub fn kill_all() {
    for pid in lock().drain(..) {
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: kill(2) with a pid we spawned and have not reaped; no memory is touched.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Waits for a child to exit, killing it after `grace`.
pub fn reap(mut child: Child, grace: Duration) {
    let pid = child.id();
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    unregister(pid);
}

/// Resident memory of a process, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// VmRSS: resident now, in KiB.
    pub rss_kib: u64,
    /// VmHWM: the peak resident size so far, in KiB.
    pub hwm_kib: u64,
}

/// Reads VmRSS and VmHWM of `pid` (zeros if the process is gone).
pub fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    }
}

/// CPU time a process has used so far, all threads together, from the
/// scheduler's nanosecond counters in `/proc/PID/task/*/schedstat`. Unlike
/// wall-clock figures it hardly moves when other work shares the machine.
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}
