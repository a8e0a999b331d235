//! Instructions per call, counted by valgrind's callgrind: the figure to
//! compare builds by, because it does not move with whatever else runs on
//! the machine (wall-clock figures on a shared 2-vCPU VM do, by 100 %).
//!
//! Every figure is a difference of whole-process counts: the server (or the
//! floor client) runs once with N calls and once with 2N, and one call costs
//! (count with 2N − count with N) / N. Start-up, `initialize` and exit cancel
//! out; what is left is the steady-state call. The first call after start is
//! (count with 1 call − count with none).

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bigid_auth_mcp::config::ENVIRONMENT as CONTRACT_ENV;
use reqwest::Url;

use crate::{
    fake::Fake,
    floor::{Endpoint, Floor},
    http::{STATELESS_VERSION, Session, stateless_call},
    process,
    stdio::{StdioServer, looks_successful},
};

/// Set (to `ENDPOINT CALLS URL`) when the harness re-runs itself as the
/// floor client under callgrind.
const FLOOR_CHILD: &str = "BENCH_CALLGRIND_FLOOR";

/// How long one counted process may take; valgrind runs code ~50× slower.
const RUN_BUDGET: Duration = Duration::from_secs(300);

/// The session protocol the HTTP session row speaks.
const SESSION_VERSION: &str = "2025-11-25";

const CREATE: (&str, &str) = ("create_session", r#"{"username":"demo","password":"demo"}"#);
const REFRESH: (&str, &str) = (
    "refresh_access_token",
    r#"{"user_token":"demo-user-token"}"#,
);

/// When the harness was started as the floor client: runs the calls and
/// returns the exit code. `None` in a normal run.
pub fn floor_child() -> Option<ExitCode> {
    let spec = std::env::var(FLOOR_CHILD).ok()?;
    let result = (|| -> anyhow::Result<()> {
        let mut parts = spec.split_whitespace();
        let (Some(endpoint), Some(calls), Some(url)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("{FLOOR_CHILD}={spec}: expected `ENDPOINT CALLS URL`");
        };
        let endpoint = match endpoint {
            "sessions" => Endpoint::Sessions,
            _ => Endpoint::Refresh,
        };
        let calls: usize = calls.parse()?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        // The stdio server's runtime: one thread.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let floor = Floor::new(&Url::parse(url)?)?;
        runtime.block_on(async {
            for _ in 0..calls {
                floor.call(endpoint, "demo-user-token").await?;
            }
            anyhow::Ok(())
        })
    })();
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor client: {e:#}");
            ExitCode::FAILURE
        }
    })
}

/// Every count the mode takes.
pub struct Counts {
    calls: usize,
    dir: PathBuf,
    floor_sessions: f64,
    floor_refresh: f64,
    /// Per tool: (per steady-state call, first call, start-up with no call).
    stdio: Vec<(&'static str, f64, u64, u64)>,
    /// The first call's extra count against an `https://` BigID over an
    /// `http://` one (both refused): loading the TLS roots.
    https_roots: i64,
    http_stateless: f64,
    http_session: f64,
}

/// Runs every counted process; `calls` is N.
pub fn run(fake: &Fake, runtime: &tokio::runtime::Runtime, calls: usize) -> anyhow::Result<Counts> {
    let dir = std::env::var_os("BENCH_CALLGRIND_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("callgrind"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let which = Command::new("valgrind").arg("--version").output();
    if !which.is_ok_and(|o| o.status.success()) {
        bail!("valgrind is not installed (Debian: apt-get install valgrind)");
    }
    let counter = Counter { dir: dir.clone() };
    let url = fake.url().as_str();

    let floor = |endpoint: &str| -> anyhow::Result<f64> {
        eprintln!("  floor {endpoint}");
        let n = counter.floor(endpoint, calls, url)?;
        let n2 = counter.floor(endpoint, 2 * calls, url)?;
        Ok(per_call(n, n2, calls))
    };
    let floor_sessions = floor("sessions")?;
    let floor_refresh = floor("refresh")?;

    let mut stdio = Vec::new();
    for ((tool, arguments), extra) in [(CREATE, &[][..]), (REFRESH, &["--no-token-cache"][..])] {
        eprintln!("  stdio {tool}");
        let mut args = vec!["--bigid-url", url];
        args.extend_from_slice(extra);
        let run = |k: usize| counter.stdio(&args, tool, arguments, k, true);
        let (none, one, n, n2) = (run(0)?, run(1)?, run(calls)?, run(2 * calls)?);
        stdio.push((tool, per_call(n, n2, calls), one.saturating_sub(none), none));
    }

    eprintln!("  stdio, first call against an unreachable https:// and http:// BigID");
    let closed = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let refused = |scheme: &str| {
        let url = format!("{scheme}://127.0.0.1:{closed}/api/v1");
        counter.stdio(
            &["--bigid-url", &url, "--no-token-cache"],
            REFRESH.0,
            REFRESH.1,
            1,
            false,
        )
    };
    let https_roots = i64::try_from(refused("https")?)? - i64::try_from(refused("http")?)?;

    let http = |stateless: bool| -> anyhow::Result<f64> {
        eprintln!(
            "  http {}",
            if stateless {
                STATELESS_VERSION
            } else {
                SESSION_VERSION
            }
        );
        let n = counter.http(runtime, url, stateless, calls)?;
        let n2 = counter.http(runtime, url, stateless, 2 * calls)?;
        Ok(per_call(n, n2, calls))
    };
    let http_stateless = http(true)?;
    let http_session = http(false)?;

    Ok(Counts {
        calls,
        dir,
        floor_sessions,
        floor_refresh,
        stdio,
        https_roots,
        http_stateless,
        http_session,
    })
}

fn per_call(n: u64, n2: u64, calls: usize) -> f64 {
    (n2 as f64 - n as f64) / calls.max(1) as f64
}

/// Starts programs under callgrind and reads their totals.
struct Counter {
    dir: PathBuf,
}

impl Counter {
    fn command(&self, name: &str, program: &Path, args: &[&str]) -> (Command, PathBuf) {
        let out = self.dir.join(format!("{name}.out"));
        let _ = std::fs::remove_file(&out);
        let mut command = Command::new("valgrind");
        command
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(format!(
                "--log-file={}",
                self.dir.join(format!("{name}.log")).display()
            ))
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for name in CONTRACT_ENV {
            command.env_remove(name);
        }
        (command, out)
    }

    /// The floor client making `calls` requests to `endpoint`.
    fn floor(&self, endpoint: &str, calls: usize, url: &str) -> anyhow::Result<u64> {
        let harness = std::env::current_exe().context("cannot find the harness binary")?;
        let (mut command, out) = self.command(&format!("floor-{endpoint}-{calls}"), &harness, &[]);
        command
            .env(FLOOR_CHILD, format!("{endpoint} {calls} {url}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = command.spawn().context("cannot start valgrind")?;
        process::register(&child);
        wait(child, RUN_BUDGET)?;
        totals(&out)
    }

    /// The server on stdio: `initialize`, `calls` calls of `tool`, stdin closed.
    fn stdio(
        &self,
        args: &[&str],
        tool: &str,
        arguments: &str,
        calls: usize,
        must_succeed: bool,
    ) -> anyhow::Result<u64> {
        let refused = match args[1] {
            url if url.starts_with("https:") && !must_succeed => "refused-https-",
            _ if !must_succeed => "refused-http-",
            _ => "",
        };
        let name = format!("stdio-{refused}{tool}-{calls}");
        let (command, out) = self.command(&name, &process::binary(), args);
        let (mut server, _) = StdioServer::start_and_initialize(command)?;
        for _ in 0..calls {
            let line = server.call(tool, arguments)?;
            if must_succeed && !looks_successful(line) {
                bail!("{tool} failed under callgrind: {line}");
            }
        }
        server.finish(RUN_BUDGET)?;
        totals(&out)
    }

    /// The server on HTTP: `calls` refreshes, as 2026-07-28 stateless
    /// requests or in one 2025-11-25 session; then SIGTERM.
    fn http(
        &self,
        runtime: &tokio::runtime::Runtime,
        url: &str,
        stateless: bool,
        calls: usize,
    ) -> anyhow::Result<u64> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let bind = format!("127.0.0.1:{port}");
        let args = [
            "--transport",
            "http",
            "--bind",
            &bind,
            "--bigid-url",
            url,
            "--no-token-cache",
        ];
        let kind = if stateless { "stateless" } else { "session" };
        let (mut command, out) =
            self.command(&format!("http-{kind}-{calls}"), &process::binary(), &args);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().context("cannot start valgrind")?;
        process::register(&child);
        // Ready when it says so on stderr: polling /healthz would add a
        // varying number of requests to the count.
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("ready on http://")
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        if ready_rx.recv_timeout(RUN_BUDGET).is_err() {
            process::reap(child, Duration::ZERO);
            bail!("the HTTP server under callgrind never said it was ready");
        }
        let mcp = Url::parse(&format!("http://{bind}/mcp"))?;
        runtime.block_on(async {
            let http = crate::floor::http_client()?;
            let (tool, arguments) = REFRESH;
            if stateless {
                for id in 0..calls {
                    stateless_call(&http, &mcp, id as u64 + 1, tool, arguments).await?;
                }
            } else {
                let session = Session::open_with(http, mcp, SESSION_VERSION).await?;
                for _ in 0..calls {
                    session.call(tool, arguments).await?;
                }
            }
            anyhow::Ok(())
        })?;
        // The client is gone (its connections closed): the server has nothing to wait for.
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on our own unreaped child; asks for a graceful shutdown.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        wait(child, RUN_BUDGET)?;
        totals(&out)
    }
}

/// Waits (bounded) for a counted process to exit successfully.
fn wait(mut child: Child, budget: Duration) -> anyhow::Result<()> {
    let pid = child.id();
    let deadline = Instant::now() + budget;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            process::reap(child, Duration::ZERO);
            bail!("a process under callgrind did not finish within {budget:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    process::unregister(pid);
    if !status.success() {
        bail!("a process under callgrind exited with {status}");
    }
    Ok(())
}

/// The total instruction count callgrind wrote at exit.
fn totals(out: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(out)
        .with_context(|| format!("callgrind wrote no {}", out.display()))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no totals in {}", out.display()))
}

/// The Markdown report of the mode.
pub fn render(counts: &Counts, machine: &str) -> String {
    use std::fmt::Write as _;
    let k = |n: f64| format!("{:.1}k", n / 1000.0);
    let m = |n: f64| {
        if n.abs() < 1e6 {
            k(n)
        } else {
            format!("{:.2}M", n / 1e6)
        }
    };
    let mut out = String::new();
    let _ = writeln!(out, "## bigid-auth-mcp instruction counts (callgrind)\n");
    let _ = writeln!(out, "{machine}\n");
    let _ = writeln!(
        out,
        "Per call = (count with {} calls − count with {}) / {}, user-space instructions of the \
         whole process, against the fake BigID on loopback. Profiles: `{}`.\n",
        2 * counts.calls,
        counts.calls,
        counts.calls,
        counts.dir.display()
    );
    let _ = writeln!(out, "| measure | instructions | ÷ floor |");
    let _ = writeln!(out, "|---|---:|---:|");
    let _ = writeln!(
        out,
        "| floor: keep-alive reqwest `POST /sessions` | {} | 1.00× |",
        k(counts.floor_sessions)
    );
    let _ = writeln!(
        out,
        "| floor: keep-alive reqwest `GET /refresh-access-token` | {} | 1.00× |",
        k(counts.floor_refresh)
    );
    for (i, &(tool, per_call, first, start)) in counts.stdio.iter().enumerate() {
        let floor = if tool == CREATE.0 {
            counts.floor_sessions
        } else {
            counts.floor_refresh
        };
        let _ = writeln!(
            out,
            "| stdio `{tool}`, per call | {} | {:.2}× |",
            k(per_call),
            per_call / floor
        );
        let _ = writeln!(
            out,
            "| stdio `{tool}`, first call after start | {} | |",
            m(first as f64)
        );
        if i == 0 {
            let _ = writeln!(
                out,
                "| stdio start-up, `initialize` and exit, no call | {} | |",
                m(start as f64)
            );
        }
    }
    let _ = writeln!(
        out,
        "| first call to an `https://` BigID over an `http://` one (TLS roots) | {} | |",
        m(counts.https_roots as f64)
    );
    let _ = writeln!(
        out,
        "| Streamable HTTP {STATELESS_VERSION}, stateless `refresh_access_token`, per call | {} | {:.2}× |",
        k(counts.http_stateless),
        counts.http_stateless / counts.floor_refresh
    );
    let _ = writeln!(
        out,
        "| Streamable HTTP {SESSION_VERSION} session, `refresh_access_token`, per call | {} | {:.2}× |",
        k(counts.http_session),
        counts.http_session / counts.floor_refresh
    );
    out
}
