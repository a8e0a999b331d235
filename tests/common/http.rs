//! HTTP-side helpers for the end-to-end HTTP tests: the binary serving
//! `--transport http`, rmcp's Streamable HTTP client, the legacy SSE
//! client, and reading a token's user back out of its JWT.

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
        Self::start_at("127.0.0.1:0", bigid_url, extra_args, env).await
    }

    /// [`HttpServer::start`] on a given address, e.g. to restart an
    /// instance on the port a load balancer knows it by.
    pub async fn start_at(
        bind: &str,
        bigid_url: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut args = vec!["--bigid-url", bigid_url, "--transport", "http"];
        // A test that must know its port up front (a public URL) binds it itself.
        if !extra_args.contains(&"--bind") {
            args.extend_from_slice(&["--bind", bind]);
        }
        args.extend_from_slice(extra_args);
        let mut all_env = vec![("MCP_AUTH_TOKEN", MCP_TOKEN), ("RUST_LOG", "trace")];
        all_env.extend_from_slice(env);
        Self::spawn(&args, &all_env).await
    }

    /// Starts the binary with exactly `args` and `env` (on a clean contract
    /// environment) and waits for its ready line; for tests that need
    /// another token, no token, or `--demo`.
    pub async fn spawn(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut child = binary(args, env)
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
    streamable_with(base, Some(MCP_TOKEN)).await
}

/// rmcp's Streamable HTTP client, initialized, with `token` as bearer if any.
pub async fn streamable_with(base: &str, token: Option<&str>) -> anyhow::Result<Client> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp"));
    if let Some(token) = token {
        config = config.auth_header(token);
    }
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
    token: Option<String>,
    response: reqwest::Response,
    buffer: String,
    comments: usize,
    next_id: u64,
    /// `/message?sessionId=…`.
    pub endpoint: String,
}

impl Legacy {
    /// Opens the stream with [`MCP_TOKEN`], reads `endpoint`, and does the
    /// handshake (as request id 0).
    pub async fn connect(base: &str) -> anyhow::Result<Self> {
        let mut legacy = Self::open(base, Some(MCP_TOKEN)).await?;
        legacy.handshake(0, "reliability").await?;
        Ok(legacy)
    }

    /// Opens the stream (with `token` as bearer, if any) and reads the
    /// `endpoint` event, which must come first; no handshake.
    pub async fn open(base: &str, token: Option<&str>) -> anyhow::Result<Self> {
        // First: building it installs the crypto provider the stream's client needs.
        let http = http_client();
        // No whole-request timeout on the stream: it lives as long as the
        // session. Each read of it is bounded in `next_event` instead.
        let stream_client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(WAIT)
            .build()?;
        let mut request = stream_client.get(format!("{base}/sse"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = timeout(WAIT, request.send()).await??;
        ensure!(response.status() == 200, "GET /sse: {}", response.status());
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        ensure!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        let mut legacy = Self {
            http,
            base: base.to_owned(),
            token: token.map(str::to_owned),
            response,
            buffer: String::new(),
            comments: 0,
            next_id: 0,
            endpoint: String::new(),
        };
        let (event, data) = legacy
            .next_event()
            .await?
            .context("stream ended before `endpoint`")?;
        ensure!(event == "endpoint", "first event {event}: {data}");
        ensure!(data.starts_with("/message?sessionId="), "{data}");
        legacy.endpoint = data;
        Ok(legacy)
    }

    /// The 2024-11-05 handshake, as the next request id; returns the answer.
    pub async fn initialize(&mut self) -> anyhow::Result<Value> {
        self.next_id += 1;
        self.handshake(self.next_id, "legacy-sse-test").await
    }

    async fn handshake(&mut self, id: u64, client: &str) -> anyhow::Result<Value> {
        let init = json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
            "protocolVersion": "2024-11-05", "capabilities": {},
            "clientInfo": {"name": client, "version": "0"}}});
        self.post(&init).await?;
        let answer = self.answer(id).await?;
        ensure!(answer.get("result").is_some(), "{answer}");
        self.notify("notifications/initialized").await?;
        Ok(answer)
    }

    /// The next SSE event (name, data), or `None` at the end of the stream.
    /// Each read is bounded by [`WAIT`]; comment lines are counted.
    pub async fn next_event(&mut self) -> anyhow::Result<Option<(String, String)>> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut data) = (None, Vec::new());
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(v) = line.strip_prefix("event:") {
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

    /// SSE comment lines (keep-alives) read so far.
    pub fn comments(&self) -> usize {
        self.comments
    }

    /// POSTs one message; expects 202 with the body `Accepted`.
    pub async fn post(&self, message: &Value) -> anyhow::Result<()> {
        let response = self.post_raw(message.to_string()).await?;
        let status = response.status();
        let body = response.text().await?;
        ensure!(status == 202, "POST /message: {status}: {body}");
        ensure!(body == "Accepted", "POST /message: 202 with {body:?}");
        Ok(())
    }

    /// This session's `/message?sessionId=…` URL.
    pub fn message_url(&self) -> String {
        format!("{}{}", self.base, self.endpoint)
    }

    /// POSTs a raw body to this session's endpoint.
    pub async fn post_raw(&self, body: String) -> anyhow::Result<reqwest::Response> {
        let mut request = self
            .http
            .post(self.message_url())
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        Ok(request.send().await?)
    }

    /// Sends a notification; expects 202.
    pub async fn notify(&self, method: &str) -> anyhow::Result<()> {
        self.post(&json!({"jsonrpc": "2.0", "method": method}))
            .await
            .with_context(|| format!("notification {method}"))
    }

    /// Posts a request with the next id (expects 202) and reads events
    /// until its answer.
    pub async fn request(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await
            .with_context(|| format!("request {method}"))?;
        self.answer(id).await
    }

    /// Calls a tool; returns the JSON-RPC result object, which must not be an error.
    pub async fn call_tool(&mut self, name: &str, arguments: Value) -> anyhow::Result<Value> {
        let answer = self
            .request("tools/call", json!({"name": name, "arguments": arguments}))
            .await?;
        let result = answer.get("result").context("no result")?.clone();
        ensure!(result["isError"] != json!(true), "tool failed: {result}");
        Ok(result)
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
