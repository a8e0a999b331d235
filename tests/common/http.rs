//! HTTP-side helpers for the load, chaos, resource and shutdown tests: the
//! binary serving `--transport http`, rmcp's Streamable HTTP client, a small
//! legacy SSE client, and reading a token's user back out of its JWT.

use std::{process::Stdio, time::Duration};

use anyhow::{Context, bail, ensure};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rmcp::{
    ServiceExt,
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Child,
    sync::mpsc,
    task::JoinHandle,
    time::timeout,
};

use super::{Client, WAIT, binary, client_config};

/// The bearer token the HTTP tests set as `MCP_AUTH_TOKEN`: a secret too.
pub const MCP_TOKEN: &str = "mcp-auth-token-reliability-8d41c7";

/// A plain HTTP client for loopback (no proxy, bounded).
pub fn http_client() -> reqwest::Client {
    // reqwest is built without a default crypto provider (see bigid.rs).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .build()
        .expect("a plain HTTP client builds")
}

/// The binary serving HTTP on an ephemeral loopback port.
pub struct HttpServer {
    /// The process.
    pub child: Child,
    /// Its pid, for /proc.
    pub pid: u32,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Every stderr line, as it comes (the ready line included).
    lines: mpsc::UnboundedReceiver<String>,
    reader: JoinHandle<()>,
    seen: Vec<String>,
}

impl HttpServer {
    /// Starts the binary against `bigid_url` with `MCP_AUTH_TOKEN` set and
    /// trace logging on (every scenario doubles as a secrets check), plus `env`.
    pub async fn start(
        bigid_url: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut args = vec!["--bigid-url", bigid_url, "--transport", "http"];
        // A test that must know its port up front (a public URL) binds it itself.
        if !extra_args.contains(&"--bind") {
            args.extend_from_slice(&["--bind", "127.0.0.1:0"]);
        }
        args.extend_from_slice(extra_args);
        let mut all_env = vec![("MCP_AUTH_TOKEN", MCP_TOKEN), ("RUST_LOG", "trace")];
        all_env.extend_from_slice(env);
        let mut child = binary(&args, &all_env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let pid = child.id().context("no pid")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, mut lines) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut stderr = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = stderr.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let base = timeout(WAIT, async {
            while let Some(line) = lines.recv().await {
                let url = line
                    .split("ready on ")
                    .nth(1)
                    .and_then(|rest| rest.split("/mcp").next())
                    .map(str::to_owned);
                seen.push(line);
                if let Some(url) = url {
                    return Ok(url);
                }
            }
            bail!(
                "the server exited before it was ready:\n{}",
                seen.join("\n")
            )
        })
        .await
        .context("no ready line")??;
        Ok(Self {
            child,
            pid,
            base,
            lines,
            reader,
            seen,
        })
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything on stderr so far.
    pub fn stderr_so_far(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) -> anyhow::Result<()> {
        // SAFETY: sending a signal to our own child process.
        let sent = unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        ensure!(sent == 0, "kill failed");
        Ok(())
    }

    /// Waits (bounded) for the exit; returns the status and all of stderr.
    pub async fn wait(mut self) -> anyhow::Result<(std::process::ExitStatus, String)> {
        let status = timeout(WAIT, self.child.wait()).await??;
        // The pipe closes with the process: the reader ends by itself.
        timeout(WAIT, &mut self.reader).await??;
        let stderr = self.stderr_so_far();
        Ok((status, stderr))
    }

    /// Open file descriptors of the process.
    pub fn fds(&self) -> usize {
        super::open_fds(self.pid).unwrap_or(0)
    }

    /// Open file descriptors, sorted: connections of clients, connections
    /// to BigID at `upstream_port`, the rest.
    pub fn fds_by_kind(&self, upstream_port: u16) -> super::Fds {
        let port = self
            .base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        super::classify_fds(self.pid, port, upstream_port)
    }

    /// Resident memory, kB.
    pub fn rss_kb(&self) -> u64 {
        super::proc_status_kb(self.pid, "VmRSS").unwrap_or(0)
    }

    /// OS threads of the process.
    pub fn threads(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid));
        status
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim().parse().ok()))
            })
            .flatten()
            .unwrap_or(0)
    }
}

/// rmcp's Streamable HTTP client, initialized, with the bearer token.
pub async fn streamable(base: &str) -> anyhow::Result<Client> {
    let config =
        StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp")).auth_header(MCP_TOKEN);
    let transport = StreamableHttpClientTransport::with_client(http_client(), config);
    Ok(timeout(WAIT, client_config().serve(transport)).await??)
}

/// The `sub` claim of a JWT-shaped token: whose token it is.
pub fn jwt_sub(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("sub")?.as_str().map(str::to_owned)
}

/// The token in a successful tool result and the user it was issued to.
pub fn token_and_user(structured: &Value) -> Option<(String, String)> {
    let token = structured
        .get("auth_token")
        .or_else(|| structured.get("systemToken"))?
        .as_str()?
        .to_owned();
    let user = jwt_sub(&token)?;
    Some((token, user))
}

/// A legacy (2024-11-05) HTTP+SSE client: GET /sse, POST /message.
pub struct Legacy {
    http: reqwest::Client,
    base: String,
    response: reqwest::Response,
    buffer: String,
    /// The bearer token sent with every request.
    token: String,
    /// `/message?sessionId=…`.
    pub endpoint: String,
}

impl Legacy {
    /// Opens the stream, reads `endpoint`, and does the handshake.
    pub async fn connect(base: &str) -> anyhow::Result<Self> {
        Self::connect_as(base, MCP_TOKEN).await
    }

    /// [`Legacy::connect`] with another bearer token.
    pub async fn connect_as(base: &str, token: &str) -> anyhow::Result<Self> {
        let http = http_client();
        // No whole-request timeout on the stream: it lives as long as the
        // session. Each read of it is bounded in `next_event` instead.
        let stream_client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(WAIT)
            .build()?;
        let response = stream_client
            .get(format!("{base}/sse"))
            .bearer_auth(token)
            .send()
            .await?;
        ensure!(response.status() == 200, "GET /sse: {}", response.status());
        let mut legacy = Self {
            http,
            base: base.to_owned(),
            response,
            buffer: String::new(),
            token: token.to_owned(),
            endpoint: String::new(),
        };
        let (event, data) = legacy.next_event().await?.context("no endpoint event")?;
        ensure!(event == "endpoint", "first event {event}: {data}");
        legacy.endpoint = data;
        legacy
            .post(
                &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2024-11-05", "capabilities": {},
                "clientInfo": {"name": "reliability", "version": "0"}}}),
            )
            .await?;
        let init = legacy.answer(0).await?;
        ensure!(init.get("result").is_some(), "{init}");
        legacy
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        Ok(legacy)
    }

    /// The next SSE event (name, data), or `None` at the end of the stream.
    pub async fn next_event(&mut self) -> anyhow::Result<Option<(String, String)>> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut data) = (None, Vec::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if event.is_some() || !data.is_empty() {
                    let event = event.unwrap_or_else(|| "message".into());
                    return Ok(Some((event, data.join("\n"))));
                }
            }
            match timeout(WAIT, self.response.chunk()).await?? {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => return Ok(None),
            }
        }
    }

    /// POSTs one message; expects 202.
    pub async fn post(&self, message: &Value) -> anyhow::Result<()> {
        let response = self.post_raw(message.to_string()).await?;
        let status = response.status();
        ensure!(
            status == 202,
            "POST /message: {status}: {}",
            response.text().await?
        );
        Ok(())
    }

    /// POSTs a raw body to this session's endpoint.
    pub async fn post_raw(&self, body: String) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .post(format!("{}{}", self.base, self.endpoint))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?)
    }

    /// Reads events until the answer to request `id`.
    pub async fn answer(&mut self, id: u64) -> anyhow::Result<Value> {
        loop {
            let (event, data) = self.next_event().await?.context("stream ended")?;
            ensure!(event == "message", "unexpected event {event}");
            let message: Value = serde_json::from_str(&data)?;
            if message["id"] == json!(id) {
                return Ok(message);
            }
        }
    }

    /// Reads the answers to all of `ids`, in whatever order they come.
    pub async fn answers(&mut self, ids: &[u64]) -> anyhow::Result<Vec<Value>> {
        let mut found: Vec<Option<Value>> = vec![None; ids.len()];
        while found.iter().any(Option::is_none) {
            let (event, data) = self.next_event().await?.context("stream ended")?;
            ensure!(event == "message", "unexpected event {event}");
            let message: Value = serde_json::from_str(&data)?;
            let slot = ids.iter().position(|id| message["id"] == json!(id));
            match slot {
                Some(i) if found[i].is_none() => found[i] = Some(message),
                _ => bail!("an answer nobody here asked for: {message}"),
            }
        }
        Ok(found.into_iter().flatten().collect())
    }
}

/// A tools/call request.
pub fn tool_call(id: u64, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": arguments}})
}

/// How long to wait for something that should be quick even on a loaded CI box.
pub const QUICK: Duration = Duration::from_secs(5);
