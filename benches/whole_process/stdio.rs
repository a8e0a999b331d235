//! A bare JSON-RPC-over-stdio client: blocking writes and line reads on the
//! child's pipes, so that what is timed is the server, not a client library.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, ChildStdout, Command},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::process;

/// The protocol version the harness speaks (one with an `initialize`).
pub const PROTOCOL_VERSION: &str = "2025-06-18";

/// The `initialize` request, as a client sends it first thing.
pub fn initialize_line() -> String {
    initialize_line_for(PROTOCOL_VERSION)
}

/// The `initialize` request naming protocol `version`.
pub fn initialize_line_for(version: &str) -> String {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{{\
         \"protocolVersion\":\"{version}\",\"capabilities\":{{}},\
         \"clientInfo\":{{\"name\":\"bigid-auth-mcp-bench\",\"version\":\"0\"}}}}}}\n"
    )
}

/// The spawn floor: `cat` started the same way, echoing the `initialize`
/// line back. What any process costs to start and answer through pipes.
pub fn spawn_floor() -> anyhow::Result<Duration> {
    let init = initialize_line();
    let start = Instant::now();
    let mut child = std::process::Command::new("cat")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot start cat")?;
    process::register(&child);
    let mut stdin = child.stdin.take().context("no stdin pipe")?;
    let mut stdout = BufReader::new(child.stdout.take().context("no stdout pipe")?);
    stdin.write_all(init.as_bytes())?;
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    let elapsed = start.elapsed();
    drop(stdin);
    process::reap(child, Duration::from_secs(5));
    if line != init {
        bail!("cat did not echo the line");
    }
    Ok(elapsed)
}

/// A running server on stdio.
pub struct StdioServer {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    line: String,
    next_id: u64,
}

impl StdioServer {
    /// Spawns the server with `args`, writes `initialize` at once (as a
    /// client does) and returns with the time from spawn to its answer.
    pub fn spawn_and_initialize(args: &[&str]) -> anyhow::Result<(Self, Duration)> {
        Self::start_and_initialize(process::command(args))
    }

    /// The same for a prepared command (e.g. the server under valgrind).
    pub fn start_and_initialize(mut command: Command) -> anyhow::Result<(Self, Duration)> {
        let init = initialize_line();
        let start = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {:?}", command.get_program()))?;
        process::register(&child);
        let stdin = child.stdin.take().context("no stdin pipe")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut server = Self {
            child: Some(child),
            stdin: Some(stdin),
            stdout: BufReader::with_capacity(64 * 1024, stdout),
            line: String::with_capacity(64 * 1024),
            next_id: 1,
        };
        server.write(init.as_bytes())?;
        server.read_line()?;
        let elapsed = start.elapsed();
        let answer: Value = serde_json::from_str(&server.line).context("initialize answer")?;
        if answer
            .pointer("/result/serverInfo/name")
            .and_then(Value::as_str)
            != Some("bigid-auth-mcp")
        {
            bail!("unexpected initialize answer: {}", server.line.trim_end());
        }
        server.write(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")?;
        Ok((server, elapsed))
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends one `tools/call` and returns the raw answer line.
    pub fn call(&mut self, tool: &str, arguments: &str) -> anyhow::Result<&str> {
        let id = self.next_id;
        self.next_id += 1;
        let request = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":\
             {{\"name\":\"{tool}\",\"arguments\":{arguments}}}}}\n"
        );
        self.write(request.as_bytes())?;
        self.read_line()?;
        Ok(&self.line)
    }

    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        stdin.write_all(bytes).context("writing to the server")?;
        Ok(())
    }

    fn read_line(&mut self) -> anyhow::Result<()> {
        self.line.clear();
        // Bounded by the harness watchdog, which kills the child (EOF here).
        let n = self
            .stdout
            .read_line(&mut self.line)
            .context("reading from the server")?;
        if n == 0 {
            bail!("the server closed stdout");
        }
        Ok(())
    }
}

impl StdioServer {
    /// Closes stdin and waits up to `grace` for the server to exit by itself.
    pub fn finish(mut self, grace: Duration) -> anyhow::Result<()> {
        self.stdin = None;
        let mut child = self.child.take().context("already finished")?;
        let pid = child.id();
        let deadline = Instant::now() + grace;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                process::reap(child, Duration::ZERO);
                bail!("the server did not exit within {grace:?} of stdin closing");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        process::unregister(pid);
        if !status.success() {
            bail!("the server exited with {status}");
        }
        Ok(())
    }
}

impl Drop for StdioServer {
    /// Closes stdin (the server exits on EOF) and reaps the process.
    fn drop(&mut self) {
        self.stdin = None;
        if let Some(child) = self.child.take() {
            process::reap(child, Duration::from_secs(5));
        }
    }
}

/// Checks a `tools/call` answer in full: a success with structured content.
pub fn check_success(line: &str, tool: &str) -> anyhow::Result<Value> {
    let answer: Value = serde_json::from_str(line).context("answer is not JSON")?;
    let result = answer
        .get("result")
        .with_context(|| format!("{tool}: no result in {line}"))?;
    if result.get("isError").and_then(Value::as_bool) == Some(true) {
        bail!("{tool} failed: {line}");
    }
    result
        .get("structuredContent")
        .cloned()
        .with_context(|| format!("{tool}: no structuredContent"))
}

/// The cheap check made on every timed answer.
pub fn looks_successful(line: &str) -> bool {
    line.contains("\"structuredContent\"") && !line.contains("\"isError\":true")
}
