//! Hostile input on stdio: the real binary fed what no MCP
//! client sends: invalid UTF-8, a 50 MB line, JSON nested a million deep, a
//! flood of requests whose answers nobody reads. Each time memory stays
//! bounded (measured from /proc) and the server keeps serving; where it
//! drops something it says so on stderr.
//!
//! `BIGID_MCP_SOAK=N` makes the flood N times longer.

mod common;

use std::{
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, ChildStdout},
    task::JoinHandle,
};

/// The binary on raw pipes: bytes in, JSON-RPC lines out, stderr collected.
struct Raw {
    child: Child,
    pid: u32,
    stdin: Option<ChildStdin>,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
    stderr: JoinHandle<String>,
}

impl Raw {
    /// Starts `--demo` and completes the MCP handshake.
    async fn start() -> anyhow::Result<Self> {
        let mut child = binary(&["--demo"], &[])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let pid = child.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("stdout"))?;
        let mut stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("stderr"))?;
        let stderr = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf).await;
            String::from_utf8_lossy(&buf).into_owned()
        });
        let mut raw = Self {
            child,
            pid,
            stdin,
            stdout: BufReader::new(stdout).lines(),
            stderr,
        };
        raw.send(
            format!(
                "{}\n{}\n",
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "garbage", "version": "0"}}}),
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
            )
            .as_bytes(),
        )
        .await?;
        assert_eq!(raw.next().await?["id"], 0);
        Ok(raw)
    }

    fn stdin(&mut self) -> anyhow::Result<&mut ChildStdin> {
        self.stdin
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("stdin closed"))
    }

    async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let stdin = self.stdin()?;
        tokio::time::timeout(WAIT, async {
            stdin.write_all(bytes).await?;
            stdin.flush().await
        })
        .await??;
        Ok(())
    }

    /// The next line on stdout, which must be a JSON-RPC message.
    async fn next(&mut self) -> anyhow::Result<Value> {
        next_message(&mut self.stdout).await
    }

    /// Messages up to and including the answer to `id`, in order.
    async fn until(&mut self, id: u64) -> anyhow::Result<Vec<Value>> {
        let mut seen = Vec::new();
        for _ in 0..100 {
            let message = self.next().await?;
            let done = message["id"] == id;
            seen.push(message);
            if done {
                return Ok(seen);
            }
        }
        anyhow::bail!("no answer to id {id} within 100 messages: {seen:?}")
    }

    /// Sends a `ping` and waits for its answer: the server still serves.
    /// Returns what came before it.
    async fn still_serves(&mut self, id: u64) -> anyhow::Result<Vec<Value>> {
        self.send(format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"ping\"}}\n").as_bytes())
            .await?;
        let mut seen = self.until(id).await?;
        let reply = seen.pop().unwrap_or_default();
        assert!(reply.get("result").is_some(), "{reply}");
        Ok(seen)
    }

    fn rss_kb(&self) -> u64 {
        proc_status_kb(self.pid, "VmRSS").unwrap_or(0)
    }

    fn peak_kb(&self) -> u64 {
        proc_status_kb(self.pid, "VmHWM").unwrap_or(0)
    }

    /// Closes stdin and expects a clean exit; returns stderr.
    async fn finish(mut self) -> anyhow::Result<String> {
        drop(self.stdin.take());
        let status = tokio::time::timeout(WAIT, self.child.wait()).await??;
        assert!(status.success(), "exits 0 on stdin EOF: {status}");
        Ok(tokio::time::timeout(WAIT, self.stderr).await??)
    }
}

#[tokio::test]
async fn invalid_utf8_control_bytes_and_odd_framing_are_survived() -> anyhow::Result<()> {
    let mut raw = Raw::start().await?;
    // Invalid UTF-8 alone, inside a JSON string, as a key; NUL bytes; a
    // lone surrogate escape; CRLF framing; blank lines; a BOM.
    raw.send(b"\xff\xfe\xfd\n").await?;
    raw.send(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"x\":\"\xc3\x28\"}\n")
        .await?;
    raw.send(b"{\"jsonrpc\":\"2.0\",\"\xff\":1}\n\0\0\0\n\r\n\n")
        .await?;
    raw.send(b"\xef\xbb\xbf{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}\n")
        .await?;
    let before = raw.still_serves(3).await?;
    // Garbage gets no answer or a JSON-RPC error without an id, never a result.
    for message in &before {
        assert!(
            message["id"] == 2 || (message["error"].is_object() && message["id"].is_null()),
            "{message}"
        );
    }
    let args = r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"create_session","arguments":{"username":"\ud800","password":"x\u0000y"}}}"#;
    raw.send(format!("{args}\r\n").as_bytes()).await?;
    // serde_json refuses the lone surrogate, so the line is dropped unanswered
    // (as unparsable input is, to avoid error storms); nothing else breaks.
    let before = raw.still_serves(5).await?;
    assert!(before.iter().all(|m| m["result"].is_null()), "{before:?}");
    let named = r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"create_session","arguments":{"username":"demo","password":"x\u0000y\u001b[2J"}}}"#;
    raw.send(format!("{named}\n").as_bytes()).await?;
    let reply = raw.until(6).await?.pop().unwrap_or_default();
    assert_eq!(reply["result"]["isError"], true, "{reply}");
    let stderr = raw.finish().await?;
    assert!(!stderr.contains("panicked"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn a_50_mb_line_is_dropped_with_a_message_and_memory_stays_bounded() -> anyhow::Result<()> {
    let mut raw = Raw::start().await?;
    raw.still_serves(1).await?;
    let baseline = raw.rss_kb();
    // 50 MB that would be a valid request if it were read whole: a
    // `tools/call` whose username is enormous.
    let head = br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"create_session","arguments":{"username":""#;
    raw.send(head).await?;
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..50 {
        raw.send(&chunk).await?;
    }
    raw.send(b"\"}}}\n").await?;
    raw.still_serves(3).await?;
    let peak = raw.peak_kb();
    let stderr = raw.finish().await?;
    assert!(
        stderr.contains("exceeded the maximum line length"),
        "says on stderr that it dropped the line: {stderr}"
    );
    // rmcp caps a line at 16 MiB (its buffer may double to 32 MiB); reading
    // the whole 50 MB line and parsing it would need well over 100 MB.
    let growth_mb = peak.saturating_sub(baseline) / 1024;
    assert!(
        growth_mb < 45,
        "peak RSS grew by {growth_mb} MB over {} MB for one oversized line",
        baseline / 1024
    );
    Ok(())
}

#[tokio::test]
async fn deeply_nested_json_is_refused_without_overflowing_the_stack() -> anyhow::Result<()> {
    let mut raw = Raw::start().await?;
    let depth = 1_000_000;
    let arrays = format!("{}{}\n", "[".repeat(depth), "]".repeat(depth));
    raw.send(arrays.as_bytes()).await?;
    let objects = format!("{}1{}\n", "{\"a\":".repeat(depth), "}".repeat(depth));
    raw.send(objects.as_bytes()).await?;
    // A real request whose argument is nested deep: within serde_json's
    // recursion limit it is a wrong-type argument, past it an unreadable line.
    for (id, depth) in [(10, 100), (11, 100_000)] {
        let username = format!("{}\"x\"{}", "[".repeat(depth), "]".repeat(depth));
        let line = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":{{\"name\":\"create_session\",\"arguments\":{{\"username\":{username}}}}}}}\n"
        );
        raw.send(line.as_bytes()).await?;
    }
    let before = raw.still_serves(12).await?;
    // Within the limit: a tool error naming the argument. Past it: no
    // answer, or a JSON-RPC error without an id.
    let within = before.iter().find(|m| m["id"] == 10);
    assert_eq!(
        within.map(|m| m["result"]["content"][0]["text"].clone()),
        Some(json!("invalid argument `username`: expected a string")),
        "{before:?}"
    );
    assert!(
        before.iter().all(|m| m["id"] == 10 || m["id"].is_null()),
        "{before:?}"
    );
    let stderr = raw.finish().await?;
    assert!(!stderr.contains("overflow"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    Ok(())
}

/// A client that writes requests and never reads the answers must not make
/// the server buffer those answers without end: once stdout is full the
/// server stops reading stdin, and the writer is the one that waits. When the
/// client starts reading, every request is answered, none lost.
#[tokio::test]
async fn a_flood_of_unread_requests_keeps_memory_bounded_and_loses_nothing() -> anyhow::Result<()> {
    let mut raw = Raw::start().await?;
    raw.still_serves(1).await?;
    let baseline = raw.rss_kb();
    // tools/list: ~60 bytes in, several KB out, the worst amplification.
    // Unbounded, 6000 unread answers cost ~28 MB; bounded, about nothing.
    let total: usize = 6_000 * soak() as usize;
    let written = Arc::new(AtomicUsize::new(0));
    let mut stdin = raw.stdin.take().ok_or_else(|| anyhow::anyhow!("stdin"))?;
    let writer = tokio::spawn({
        let written = written.clone();
        async move {
            for id in 0..total {
                let line = format!(
                    "{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"tools/list\"}}\n",
                    id + 100
                );
                stdin.write_all(line.as_bytes()).await?;
                written.fetch_add(1, Ordering::Relaxed);
            }
            stdin.flush().await?;
            anyhow::Ok(stdin)
        }
    });

    // Nobody reads stdout now. Watch memory until the writer is done or
    // stuck (no progress for a second: the server pushes back).
    let mut peak = baseline;
    let mut last = (0, Instant::now());
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !writer.is_finished() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak = peak.max(raw.rss_kb());
        let now = written.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(1) {
            break;
        }
    }
    let unread_phase_written = written.load(Ordering::Relaxed);

    // Now read: every request gets its answer.
    let mut ids = Vec::with_capacity(total);
    while ids.len() < total {
        let reply = raw.next().await?;
        assert!(reply["result"]["tools"].is_array(), "{reply:.300}");
        ids.push(reply["id"].as_u64().unwrap_or_default());
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total, "every request answered exactly once");
    raw.stdin = Some(tokio::time::timeout(WAIT, writer).await???);
    raw.still_serves(2).await?;
    raw.finish().await?;

    let growth_mb = peak.saturating_sub(baseline) / 1024;
    eprintln!(
        "flood: {unread_phase_written}/{total} requests written before the server pushed back; \
         RSS {} MB -> peak {} MB",
        baseline / 1024,
        peak / 1024
    );
    assert!(
        growth_mb < 16,
        "RSS grew by {growth_mb} MB while {unread_phase_written} answers went unread"
    );
    Ok(())
}

/// rmcp never answers a cancelled request, so its slot must be freed by the
/// cancel itself; otherwise every cancel would leak one slot for good and a
/// session that cancels often would stop reading its input.
#[tokio::test]
async fn a_cancelled_request_frees_its_slot() -> anyhow::Result<()> {
    use bigid_auth_mcp::{
        bigid,
        config::Defaults,
        demo::{FakeBigId, Fault},
        server::BigIdServer,
        transport::bounded::Bounded,
    };
    use rmcp::{ServiceExt, transport::async_rw::AsyncRwTransport};

    let fake = FakeBigId::start().await?;
    fake.set_fault(Fault::Slow(Duration::from_secs(15)));
    let mut config = bigid_config(fake.url());
    config.timeout = Duration::from_secs(30);
    let server = BigIdServer::new(
        bigid::Client::new(fake.url(), &config)?,
        Defaults::default(),
        false,
    );
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let (server_read, server_write) = tokio::io::split(server_io);
    let serving = tokio::spawn(async move {
        let transport =
            Bounded::with_cap(AsyncRwTransport::new_server(server_read, server_write), 2);
        if let Ok(running) = server.serve(transport).await {
            let _ = running.waiting().await;
        }
    });
    let (client_read, mut client_write) = tokio::io::split(client_io);
    let mut lines = BufReader::new(client_read).lines();
    let mut send = async |message: Value| {
        client_write
            .write_all(format!("{message}\n").as_bytes())
            .await
    };
    send(
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "cancel", "version": "0"}}}),
    )
    .await?;
    let init = tokio::time::timeout(WAIT, lines.next_line()).await??;
    assert!(init.is_some_and(|l| l.contains("\"id\":0")));
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await?;
    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "create_session", "arguments": {"username": "a", "password": "b"}}}),
    )
    .await?;
    send(
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 1, "reason": "changed my mind"}}),
    )
    .await?;
    send(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "create_session", "arguments": {"username": "a", "password": "b"}}}),
    )
    .await?;
    send(json!({"jsonrpc": "2.0", "id": 3, "method": "ping"})).await?;
    // Two slots: request 2 holds one. Had the cancelled request 1 kept the
    // other, the ping would wait 15 s for request 2.
    let reply = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .map_err(|_| anyhow::anyhow!("the ping waited behind a cancelled request"))??
        .unwrap_or_default();
    let reply: Value = serde_json::from_str(&reply)?;
    assert_eq!(reply["id"], 3, "{reply}");
    serving.abort();
    Ok(())
}
